//! Sparse manifests, opt-in (`validation.sparse`): a mirror or a platform-filtered copy pushes
//! an index with one platform's children, or an image whose layers come later. Off (the
//! default), such a push is refused and a manifest never dangles; on, it is stored, the absent
//! content is expected rather than damage, and a later push completes the image.

use std::time::Duration;

use serde_json::json;

use crate::harness::{
    Berth, client, error_codes, fsck_report, push_blob, push_image, push_manifest, random_bytes, run_gc, sha256,
};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";

/// An image manifest over a config and `layer`, neither pushed: (manifest bytes, config bytes).
fn image_of(layer: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","n":{}}}"#, layer.len()).into_bytes();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": IMAGE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": layer.len()}],
    });
    (serde_json::to_vec(&manifest).unwrap(), config)
}

async fn put(berth: &Berth, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> reqwest::Response {
    client()
        .put(berth.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn without_validation_sparse_a_manifest_needs_everything_it_references() {
    let berth = Berth::start();
    let layer = random_bytes(1000, 1);
    let (manifest, _) = image_of(&layer);
    let resp = put(&berth, "dense/app", "v1", IMAGE, &manifest).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["MANIFEST_BLOB_UNKNOWN"]);
    let (child, _) = push_image(&berth, "dense/app", "child", &[b"x"]).await;
    let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": IMAGE, "digest": child, "size": 1},
        {"mediaType": IMAGE, "digest": sha256(b"absent child"), "size": 1},
    ]});
    let resp = put(
        &berth,
        "dense/app",
        "multi",
        INDEX,
        &serde_json::to_vec(&index).unwrap(),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["MANIFEST_UNKNOWN"]);
}

#[tokio::test]
async fn with_validation_sparse_absent_content_is_expected_and_a_later_push_completes_the_image() {
    let berth = Berth::builder().env("BERTH_VALIDATION_SPARSE", "true").start();
    let (amd_layer, arm_layer) = (random_bytes(4000, 2), random_bytes(4000, 3));
    let (amd, amd_config) = image_of(&amd_layer);
    let (arm, _) = image_of(&arm_layer);
    // The index lists two platforms; only amd64's manifest is pushed, and before its blobs.
    let amd_digest = push_manifest(&berth, "mirror/app", &sha256(&amd), IMAGE, &amd).await;
    let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": IMAGE, "digest": amd_digest, "size": amd.len(), "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": IMAGE, "digest": sha256(&arm), "size": arm.len(), "platform": {"architecture": "arm64", "os": "linux"}},
    ]});
    let index_body = serde_json::to_vec(&index).unwrap();
    let index_digest = push_manifest(&berth, "mirror/app", "v1", INDEX, &index_body).await;
    let resp = client()
        .get(berth.url("/v2/mirror/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap(), index_body);
    // What is absent answers as absent.
    let layer_url = berth.url(&format!("/v2/mirror/app/blobs/{}", sha256(&amd_layer)));
    assert_eq!(client().get(&layer_url).send().await.unwrap().status(), 404);
    assert_eq!(
        client()
            .get(berth.url(&format!("/v2/mirror/app/manifests/{}", sha256(&arm))))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // fsck: clean, with the absent references counted apart (two blobs, one child).
    let report = fsck_report(&berth);
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["checked"]["sparse_references"], 3, "{report}");
    // Garbage collection past the grace period keeps all of it.
    berth.advance_clock(Duration::from_secs(7200)).await;
    let gc = run_gc(&berth).await;
    assert_eq!(gc["manifests_deleted"], 0, "{gc}");
    // The blobs arrive: the image is complete, fsck counts only the absent child.
    push_blob(&berth, "mirror/app", &amd_config).await;
    push_blob(&berth, "mirror/app", &amd_layer).await;
    let resp = client().get(&layer_url).send().await.unwrap();
    assert_eq!(resp.bytes().await.unwrap(), amd_layer);
    let report = fsck_report(&berth);
    assert_eq!(
        (report["clean"].clone(), report["checked"]["sparse_references"].clone()),
        (json!(true), json!(1))
    );
    // A blob still referenced may not be deleted; the index still anchors its child.
    berth.advance_clock(Duration::from_secs(7200)).await;
    let gc = run_gc(&berth).await;
    assert_eq!(
        (gc["manifests_deleted"].clone(), gc["blobs_deleted"].clone()),
        (json!(0), json!(0)),
        "{gc}"
    );
    assert_eq!(
        client()
            .get(berth.url(&format!("/v2/mirror/app/manifests/{index_digest}")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
