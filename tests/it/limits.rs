//! Limits against hostile or careless clients: upload sessions per client and in total
//! (429 `TOOMANYREQUESTS` with `Retry-After`), a stalled upload body (408, session rolled
//! back), and oversized bodies (413).

use std::time::Duration;

use crate::api_fixtures::assert_error;
use crate::harness::{Berth, client, error_codes, header, sha256};

#[tokio::test]
async fn upload_sessions_are_limited_per_client_and_in_total() {
    let berth = Berth::builder()
        .env("BERTH_LIMITS_UPLOAD_SESSIONS_PER_CLIENT", "2")
        .env("BERTH_LIMITS_UPLOAD_SESSIONS", "3")
        .start();
    let c = client();
    let mut locations = Vec::new();
    for _ in 0..2 {
        let resp = c.post(berth.url("/v2/l/blobs/uploads/")).send().await.unwrap();
        assert_eq!(resp.status(), 202);
        locations.push(resp.headers()["location"].to_str().unwrap().to_owned());
    }
    let resp = c.post(berth.url("/v2/l/blobs/uploads/")).send().await.unwrap();
    assert_eq!(header(&resp, "retry-after"), "5", "the client's own sessions end soon");
    let detail = "too many requests: 127.0.0.1 has 2 upload sessions open, the limit; finish or cancel one first";
    assert_error(resp, 429, "TOOMANYREQUESTS", detail).await;
    // Finishing or cancelling a session frees its slot.
    let resp = c.delete(berth.url(&locations[0])).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let resp = c.post(berth.url("/v2/l/blobs/uploads/")).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let done = b"finished";
    let loc = resp.headers()["location"].to_str().unwrap().to_owned();
    let resp = c
        .put(berth.url(&format!("{loc}?digest={}", sha256(done))))
        .body(done.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = c.post(berth.url("/v2/l/blobs/uploads/")).send().await.unwrap();
    assert_eq!(resp.status(), 202, "the finished session freed its slot");
    // The server-wide limit, reached before the client's own.
    let berth = Berth::builder()
        .env("BERTH_LIMITS_UPLOAD_SESSIONS_PER_CLIENT", "10")
        .env("BERTH_LIMITS_UPLOAD_SESSIONS", "1")
        .start();
    let resp = c.post(berth.url("/v2/l/blobs/uploads/")).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let resp = c.post(berth.url("/v2/l/blobs/uploads/")).send().await.unwrap();
    assert_eq!(header(&resp, "retry-after"), "10", "other clients' sessions end later");
    let detail = "too many requests: 1 upload sessions are open, the limit; finish or cancel one first";
    assert_error(resp, 429, "TOOMANYREQUESTS", detail).await;
}

#[tokio::test]
async fn a_stalled_upload_body_is_cut_off_and_rolled_back() {
    let berth = Berth::builder().env("BERTH_LIMITS_BODY_IDLE_TIMEOUT", "1s").start();
    let c = client();
    let resp = c.post(berth.url("/v2/slow/blobs/uploads/")).send().await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let url = berth.url(&location);
    let patch = tokio::spawn(async move { client().patch(url).body(body).send().await });
    tx.send(Ok(b"some bytes".to_vec())).await.unwrap();
    // Then nothing: the server gives up after a second.
    let outcome = tokio::time::timeout(Duration::from_secs(10), patch)
        .await
        .expect("cut off")
        .unwrap();
    if let Ok(resp) = outcome {
        assert_eq!(resp.status(), 408);
    }
    drop(tx);
    let resp = c.get(berth.url(&location)).send().await.unwrap();
    assert_eq!(resp.status(), 204, "the session survives");
    assert_eq!(
        resp.headers()["range"],
        "0-0",
        "rolled back to before the stalled request"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let berth = Berth::builder()
        .env("BERTH_LIMITS_BLOB_MAX_SIZE", "1KiB")
        .env("BERTH_LIMITS_MANIFEST_MAX_SIZE", "512")
        .start();
    let big = vec![7u8; 2048];
    let url = berth.url(&format!("/v2/big/blobs/uploads/?digest={}", sha256(&big)));
    let resp = client().post(url).body(big).send().await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(error_codes(resp).await, ["SIZE_INVALID"]);
    let resp = client()
        .put(berth.url("/v2/big/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(vec![b' '; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        berth.staging_entries().await,
        Vec::<String>::new(),
        "nothing left staged"
    );
}

/// A client that opens sessions and walks away does not lock out pushes until
/// `gc.upload_max_age`: at a limit, sessions idle past `limits.upload_idle_timeout` are closed
/// to make room; one still in use is not.
#[tokio::test]
async fn at_a_session_limit_sessions_idle_past_the_timeout_make_room() {
    let berth = Berth::builder()
        .env("BERTH_LIMITS_UPLOAD_SESSIONS_PER_CLIENT", "2")
        .env("BERTH_LIMITS_UPLOAD_SESSIONS", "3")
        .env("BERTH_LIMITS_UPLOAD_IDLE_TIMEOUT", "1m")
        .start();
    let c = client();
    let open = || async {
        let resp = c.post(berth.url("/v2/idle/blobs/uploads/")).send().await.unwrap();
        let status = resp.status().as_u16();
        (
            status,
            resp.headers().get("location").map(|l| l.to_str().unwrap().to_owned()),
        )
    };
    let (_, active) = open().await;
    let (_, abandoned) = open().await;
    let (active, abandoned) = (active.unwrap(), abandoned.unwrap());
    assert_eq!(open().await.0, 429, "within the idle timeout, the limit holds");
    berth.advance_clock(std::time::Duration::from_secs(120)).await;
    // One session is used again; the other was walked away from.
    let patch = |loc: String| c.patch(berth.url(&loc)).body(b"more".to_vec()).send();
    assert_eq!(patch(active.clone()).await.unwrap().status(), 202);
    let (status, _) = open().await;
    assert_eq!(status, 202, "the idle session made room");
    assert_eq!(
        patch(abandoned).await.unwrap().status(),
        404,
        "the idle session was closed"
    );
    assert_eq!(patch(active).await.unwrap().status(), 202, "the active one was kept");
    // The server-wide limit makes room the same way.
    let berth = Berth::builder()
        .env("BERTH_LIMITS_UPLOAD_SESSIONS_PER_CLIENT", "10")
        .env("BERTH_LIMITS_UPLOAD_SESSIONS", "2")
        .env("BERTH_LIMITS_UPLOAD_IDLE_TIMEOUT", "1m")
        .start();
    let post = || c.post(berth.url("/v2/idle/blobs/uploads/")).send();
    for _ in 0..2 {
        assert_eq!(post().await.unwrap().status(), 202);
    }
    assert_eq!(post().await.unwrap().status(), 429);
    berth.advance_clock(std::time::Duration::from_secs(120)).await;
    assert_eq!(
        post().await.unwrap().status(),
        202,
        "idle sessions made room under the server-wide limit"
    );
}
