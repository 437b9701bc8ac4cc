//! Restarts: everything pushed before a clean stop is there, byte-identical, after a start on
//! the same root; and an upload session begun before the restart can be resumed after it (the
//! server re-hashes its staging file, with the algorithm the session was opened with).

use crate::harness::{Berth, client, push_image, random_bytes, sha256, sha512};

#[tokio::test]
async fn everything_survives_a_restart() {
    let mut berth = Berth::start();
    let mut images = Vec::new();
    for (repo, tag, seed) in [("r/one", "v1", 1), ("r/one", "v2", 2), ("r/two", "latest", 3)] {
        let layer = random_bytes(100_000, seed);
        let (digest, body) = push_image(&berth, repo, tag, &[&layer]).await;
        images.push((repo, tag, digest, body, layer));
    }
    assert_eq!(berth.stop().and_then(|s| s.code()), Some(0));
    berth.restart();
    let c = client();
    let catalog: serde_json::Value = c
        .get(berth.url("/v2/_catalog"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(catalog["repositories"], serde_json::json!(["r/one", "r/two"]));
    let tags: serde_json::Value = c
        .get(berth.url("/v2/r/one/tags/list"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1", "v2"]));
    for (repo, tag, digest, body, layer) in images {
        let resp = c
            .get(berth.url(&format!("/v2/{repo}/manifests/{tag}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(resp.bytes().await.unwrap(), body);
        let blob = c
            .get(berth.url(&format!("/v2/{repo}/blobs/{}", sha256(&layer))))
            .send()
            .await
            .unwrap();
        assert_eq!(blob.bytes().await.unwrap(), layer);
    }
}

#[tokio::test]
async fn an_upload_session_resumes_after_a_restart() {
    let mut berth = Berth::start();
    let c = client();
    let whole = random_bytes(3_000_000, 9);
    let (first, second) = whole.split_at(1_234_567);
    let resp = c.post(berth.url("/v2/resume/blobs/uploads/")).send().await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let resp = c.patch(berth.url(&location)).body(first.to_vec()).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    berth.stop();
    berth.restart();
    let status = c.get(berth.url(&location)).send().await.unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(status.headers()["range"], format!("0-{}", first.len() - 1).as_str());
    finish(&berth, &location, first.len(), second, &sha256(&whole)).await;
    let got = c
        .get(berth.url(&format!("/v2/resume/blobs/{}", sha256(&whole))))
        .send()
        .await
        .unwrap();
    assert_eq!(sha256(&got.bytes().await.unwrap()), sha256(&whole));
}

/// A session opened with `?digest-algorithm=sha512` remembers it across a restart (its row
/// does): the restart re-hashes the staged bytes with sha512, so the final PUT reads nothing
/// again (the `upload.digest_reread` hook of the new process stays at 0).
#[tokio::test]
async fn a_sha512_session_resumes_with_its_algorithm_after_a_restart() {
    let mut berth = Berth::start();
    let c = client();
    let whole = random_bytes(2_000_000, 10);
    let (first, second) = whole.split_at(765_432);
    let resp = c
        .post(berth.url("/v2/resume512/blobs/uploads/?digest-algorithm=sha512"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let resp = c.patch(berth.url(&location)).body(first.to_vec()).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    berth.stop();
    berth.restart();
    finish(&berth, &location, first.len(), second, &sha512(&whole)).await;
    assert_eq!(berth.reached("upload.digest_reread").await, 0);
    let got = c
        .get(berth.url(&format!("/v2/resume512/blobs/{}", sha512(&whole))))
        .send()
        .await
        .unwrap();
    assert_eq!(sha512(&got.bytes().await.unwrap()), sha512(&whole));
}

/// Send the rest of a resumed upload (`rest`, from `offset`) and finish it as `digest`.
async fn finish(berth: &Berth, location: &str, offset: usize, rest: &[u8], digest: &str) {
    let c = client();
    let range = format!("{}-{}", offset, offset + rest.len() - 1);
    let patched = c
        .patch(berth.url(location))
        .header("content-range", range)
        .body(rest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 202);
    let finished = c
        .put(berth.url(&format!("{location}?digest={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(finished.status(), 201, "{}", finished.text().await.unwrap());
}
