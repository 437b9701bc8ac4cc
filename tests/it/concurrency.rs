//! Concurrency: the same layer pushed by many clients into several repositories at the same
//! moment (monolithic and chunked) all succeed and the blob is stored once; concurrent
//! manifest pushes of different tags all land.

use std::sync::Arc;

use crate::harness::{Berth, client, get_json, push_blob, push_manifest, random_bytes, sha256};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_layer_from_sixteen_clients_into_four_repositories() {
    let berth = Arc::new(Berth::start());
    let layer = Arc::new(random_bytes(4 << 20, 77));
    let digest = sha256(&layer);
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (berth, layer, barrier, digest) = (
            Arc::clone(&berth),
            Arc::clone(&layer),
            Arc::clone(&barrier),
            digest.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let repo = format!("same/r{}", i % 4);
            let c = client();
            barrier.wait().await;
            if i % 2 == 0 {
                let url = berth.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"));
                c.post(url).body(layer.to_vec()).send().await.unwrap().status()
            } else {
                let resp = c
                    .post(berth.url(&format!("/v2/{repo}/blobs/uploads/")))
                    .send()
                    .await
                    .unwrap();
                let location = resp.headers()["location"].to_str().unwrap().to_owned();
                let (a, b) = layer.split_at(layer.len() / 3);
                let resp = c.patch(berth.url(&location)).body(a.to_vec()).send().await.unwrap();
                assert_eq!(resp.status(), 202);
                let url = berth.url(&format!("{location}?digest={digest}"));
                c.put(url).body(b.to_vec()).send().await.unwrap().status()
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    let stored: Vec<String> = berth.stored_blobs().await.into_iter().collect();
    assert_eq!(stored, std::slice::from_ref(&digest), "stored once");
    for r in 0..4 {
        let got = client()
            .get(berth.url(&format!("/v2/same/r{r}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(sha256(&got.bytes().await.unwrap()), digest);
    }
    assert_eq!(
        berth.staging_entries().await,
        Vec::<String>::new(),
        "no staging leftovers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_manifest_pushes_of_different_tags() {
    let berth = Arc::new(Berth::start());
    let config = push_blob(&berth, "tags/app", b"{}").await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (berth, config) = (Arc::clone(&berth), config.clone());
        tasks.push(tokio::spawn(async move {
            let layer = push_blob(&berth, "tags/app", format!("layer {i}").as_bytes()).await;
            let m = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": format!("layer {i}").len()}],
            }))
            .unwrap();
            push_manifest(&berth, "tags/app", &format!("t{i:02}"), "application/vnd.oci.image.manifest.v1+json", &m).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let tags: serde_json::Value = get_json(berth.url("/v2/tags/app/tags/list")).await;
    let want: Vec<String> = (0..24).map(|i| format!("t{i:02}")).collect();
    assert_eq!(tags["tags"], serde_json::json!(want));
}
