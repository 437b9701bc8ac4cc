//! Hostile input: slow clients, lying headers, abusive manifests and path tricks. Each gets a
//! clear answer; what is stored does not change, and nothing outside the root is touched.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::harness::{Berth, client, error_codes, get_json, push_blob, push_image, raw_request, sha256};

/// Read until the server closes the connection; how long that took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(limit, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("the server kept a slow client's connection open past {limit:?}"));
        if matches!(read, Ok(0) | Err(_)) {
            return start.elapsed();
        }
    }
}

#[tokio::test]
async fn slow_clients_are_cut_off_after_the_header_timeout() {
    let berth = Berth::builder().env("BERTH_HTTP_HEADER_TIMEOUT", "1s").start();
    // Headers that never end.
    let mut slow = TcpStream::connect(&berth.host).await.unwrap();
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // A connection that never says anything.
    let mut silent = TcpStream::connect(&berth.host).await.unwrap();
    // Meanwhile everyone else is served.
    let resp = client().get(berth.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let took = closed_within(&mut slow, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(700), "closed too early: {took:?}");
    closed_within(&mut silent, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_stores_nothing() {
    let berth = Berth::start();
    let body = vec![7u8; 1000];
    let digest = sha256(&body);
    let mut stream = TcpStream::connect(&berth.host).await.unwrap();
    let head =
        format!("POST /v2/liar/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..400]).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let resp = client()
        .head(berth.url(&format!("/v2/liar/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "a truncated body must not become a blob");
    // The server is fine, and the whole body, sent honestly, is stored.
    assert_eq!(push_blob(&berth, "liar", &body).await, digest);
}

/// PUT `body` as a manifest of `repo`; the response.
async fn put_manifest(berth: &Berth, repo: &str, reference: &str, body: Vec<u8>) -> reqwest::Response {
    client()
        .put(berth.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn abusive_manifests_are_refused_and_change_nothing() {
    let berth = Berth::builder().env("BERTH_LIMITS_MANIFEST_MAX_SIZE", "1MiB").start();
    let (digest, body) = push_image(&berth, "victim", "latest", &[b"precious layer"]).await;
    let layer = sha256(b"precious layer");
    let config: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let cfg = config["config"].clone();

    // Deeply nested JSON.
    let depth = 100_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let resp = put_manifest(&berth, "victim", "latest", nested.into_bytes()).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["MANIFEST_INVALID"]);
    // Thousands of descriptors, none of them pushed.
    let layers: Vec<_> = (0..5000u32)
        .map(|i| {
            let d = sha256(&i.to_le_bytes());
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": 4})
        })
        .collect();
    let many = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": cfg, "layers": layers});
    let resp = put_manifest(&berth, "victim", "latest", serde_json::to_vec(&many).unwrap()).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["MANIFEST_BLOB_UNKNOWN"]);
    // A descriptor that lies about its blob's size.
    let liar = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": cfg,
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 3}]});
    let resp = put_manifest(&berth, "victim", "latest", serde_json::to_vec(&liar).unwrap()).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["MANIFEST_INVALID"]);
    // A huge one.
    let resp = put_manifest(&berth, "victim", "latest", vec![b' '; 2 << 20]).await;
    assert_eq!(resp.status(), 413);
    // A negative or absurd size.
    let absurd = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": cfg,
                        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": -1}]});
    let resp = put_manifest(&berth, "victim", "latest", serde_json::to_vec(&absurd).unwrap()).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["MANIFEST_INVALID"]);

    // Nothing changed: the tag still names the original, byte for byte.
    let resp = client()
        .get(berth.url("/v2/victim/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(resp.bytes().await.unwrap(), body);
    let tags: serde_json::Value = get_json(berth.url("/v2/victim/tags/list")).await;
    assert_eq!(tags["tags"], json!(["latest"]));
}

#[tokio::test]
async fn path_tricks_never_reach_the_filesystem() {
    let berth = Berth::start();
    push_image(&berth, "inside", "v1", &[b"layer"]).await;
    let outside = berth.root.parent().unwrap().to_owned();
    let before: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let digest = sha256(b"layer");
    let tricks = [
        format!("/v2/../../etc/blobs/{digest}"),
        format!("/v2/%2e%2e/%2e%2e/etc/blobs/{digest}"),
        format!("/v2/inside%2f..%2f..%2fescape/blobs/{digest}"),
        format!("/v2/in%00side/blobs/{digest}"),
        format!("/v2/Inside/blobs/{digest}"),
        format!("/v2/{}/blobs/{digest}", "a".repeat(256)),
        "/v2/inside/blobs/sha256:../../../../etc/passwd".to_owned(),
        "/v2/inside/blobs/md5:d41d8cd98f00b204e9800998ecf8427e".to_owned(),
        "/v2/inside/manifests/..%2f..%2fx".to_owned(),
        "/v2/inside/manifests/.hidden".to_owned(),
        "/v2/inside/blobs/uploads/..%2f..%2fx".to_owned(),
    ];
    for path in &tricks {
        for method in ["GET", "PUT", "DELETE", "PATCH"] {
            let (status, body) = raw_request(&berth, method, path).await;
            assert!((400..500).contains(&status), "{method} {path}: {status} {body}");
            let v: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{method} {path}: not an OCI error body ({e}): {body}"));
            assert!(v["errors"][0]["code"].is_string(), "{method} {path}: {body}");
        }
    }
    let after: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "something was created beside the root");
    // And the real repository is untouched.
    let resp = client().get(berth.url("/v2/inside/manifests/v1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// A client that goes away while its upload session is being opened (after the staging file,
/// before the session's row) leaves no staging orphan: the opening finishes without it, and
/// the store stays consistent for fsck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_while_its_session_opens_leaves_no_orphan() {
    let berth = Berth::builder()
        .env("BERTH_TEST_PAUSE_AT", "upload.after_create_file")
        .start();
    let mut tcp = TcpStream::connect(&berth.host).await.unwrap();
    let request = format!(
        "POST /v2/orphan/blobs/uploads/ HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
        berth.host
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    berth.wait_reached("upload.after_create_file", 1).await;
    drop(tcp);
    berth.resume("upload.after_create_file").await;
    // The session's row follows its file even though nobody waits for it any more.
    berth.wait_reached("upload.opened", 1).await;
    let report = crate::harness::fsck_report(&berth);
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(
        berth.staging_entries().await.len(),
        1,
        "the session exists, with its file"
    );
}
