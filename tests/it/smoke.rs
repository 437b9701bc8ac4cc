//! The walk-through of the README, end to end over HTTP.

use crate::harness::{Berth, client, push_image};

#[tokio::test]
async fn push_list_pull_delete() {
    let berth = Berth::start();
    let (digest, body) = push_image(&berth, "library/busybox", "latest", &[b"layer one", b"layer two"]).await;
    let c = client();
    let catalog: serde_json::Value = c
        .get(berth.url("/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!(["library/busybox"]));
    let resp = c
        .get(berth.url("/v2/library/busybox/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(resp.bytes().await.unwrap(), body);
    let resp = c
        .delete(berth.url(&format!("/v2/library/busybox/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let tags: serde_json::Value = c
        .get(berth.url("/v2/library/busybox/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!([]));
}
