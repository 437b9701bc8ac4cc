//! Operations: health and readiness, graceful shutdown (readiness turns 503, an upload in
//! flight still completes, the process exits 0; a second signal exits at once), and
//! `berth config check`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Berth, client, get_json, random_bytes, sha256};

#[tokio::test]
async fn health_and_readiness() {
    let berth = Berth::start();
    for path in ["/healthz", "/readyz"] {
        let resp = client().get(berth.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn sigterm_lets_an_upload_in_flight_finish_then_exits_zero() {
    let mut berth = Berth::builder().env("BERTH_HTTP_SHUTDOWN_DELAY", "1500ms").start();
    let bytes = random_bytes(8 << 20, 11);
    let digest = sha256(&bytes);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let url = berth.url(&format!("/v2/drain/blobs/uploads/?digest={digest}"));
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let upload = tokio::spawn(async move { client().post(url).body(body).send().await.map(|r| r.status()) });
    let mut chunks = bytes.chunks(1 << 20);
    tx.send(Ok(chunks.next().unwrap().to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    berth.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = client().get(berth.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready once shutdown began");
    assert_eq!(
        client().get(berth.url("/healthz")).send().await.unwrap().status(),
        200,
        "still alive"
    );
    for chunk in chunks {
        tx.send(Ok(chunk.to_vec())).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(tx);
    assert_eq!(upload.await.unwrap().unwrap(), 201, "the upload in flight completed");
    let status = tokio::task::spawn_blocking(move || {
        let status = berth.wait_exit();
        (status, berth)
    })
    .await
    .unwrap();
    let (status, mut berth) = status;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "clean exit after draining");
    berth.restart();
    let got = client()
        .get(berth.url(&format!("/v2/drain/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(sha256(&got.bytes().await.unwrap()), digest);
}

/// A channel receiver as a stream, for streaming request bodies.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let mut berth = Berth::builder().env("BERTH_HTTP_SHUTDOWN_DELAY", "20s").start();
    berth.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    berth.signal("INT");
    let status = berth.wait_exit().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "did not wait for the 20 s delay"
    );
    assert_eq!(status.code(), Some(1));
}

fn berth_cli(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BERTH_")) {
        cmd.env_remove(k);
    }
    cmd.args(args).output().unwrap()
}

#[test]
fn config_check_prints_the_effective_configuration_or_names_the_bad_key() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yml");
    let ok = berth_cli(&["config", "check", "--config", example]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let text = String::from_utf8_lossy(&ok.stdout);
    for line in [
        "addr: 127.0.0.1:5000",
        "grace_period: 1h",
        "interval: off",
        "fsync: true",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "gc:\n  grace_period: soon\n").unwrap();
    let out = berth_cli(&["config", "check", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("grace_period"), "names the key: {err}");
    std::fs::write(&bad, "storage:\n  rooot: /x\n").unwrap();
    let out = berth_cli(&["config", "check", "--config", bad.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("rooot"));
}

/// Two repositories sharing one 1000-byte layer; every figure below was worked out by hand.
#[tokio::test]
async fn usage_matches_hand_computed_figures() {
    use crate::harness::{push_blob, push_manifest};
    let mut berth = Berth::start();
    let shared = random_bytes(1000, 21);
    let image = async |repo: &str, config: Vec<u8>, own: Vec<u8>, tags: &[&str]| {
        let c = push_blob(&berth, repo, &config).await;
        let s = push_blob(&berth, repo, &shared).await;
        let o = push_blob(&berth, repo, &own).await;
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": s, "size": 1000},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": o, "size": own.len()},
            ],
        }))
        .unwrap();
        for tag in tags {
            push_manifest(&berth, repo, tag, "application/vnd.oci.image.manifest.v1+json", &m).await;
        }
    };
    image("u/a", random_bytes(100, 22), random_bytes(2000, 23), &["v1", "v2"]).await;
    image("u/b", random_bytes(150, 24), random_bytes(3000, 25), &["latest"]).await;
    let expected = serde_json::json!({
        "repositories": [
            {"name": "u/a", "bytes": 3100, "exclusive_bytes": 2100, "blobs": 3, "manifests": 1, "tags": 2},
            {"name": "u/b", "bytes": 4150, "exclusive_bytes": 3150, "blobs": 3, "manifests": 1, "tags": 1},
        ],
        "logical_bytes": 7250,
        "stored_bytes": 6250,
        "blobs": 5,
    });
    let online: serde_json::Value = get_json(berth.url("/admin/usage")).await;
    assert_eq!(online, expected);
    let via_url = berth_cli(&["du", "--json", "--url", &berth.base]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&via_url.stdout).unwrap(),
        expected
    );
    berth.stop();
    let offline = berth_cli(&["du", "--json", "--root", berth.root.to_str().unwrap()]);
    assert!(offline.status.success(), "{}", String::from_utf8_lossy(&offline.stderr));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&offline.stdout).unwrap(),
        expected
    );
    let text = berth_cli(&["du", "--root", berth.root.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("deduplication 1.16x"));
}

/// The (integer) value of the metric line that starts with `prefix` (name and labels), or 0.
fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0, |v| v.parse().unwrap())
}

async fn scrape(url: String) -> String {
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

#[tokio::test]
async fn metrics_move_with_pushes_pulls_and_gc() {
    use crate::harness::{push_blob, push_image};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let debug = format!("127.0.0.1:{port}");
    let berth = Berth::builder()
        .env("BERTH_GC_GRACE_PERIOD", "0s")
        .env("BERTH_HTTP_DEBUG_ADDR", &debug)
        .start();
    let before = scrape(berth.url("/metrics")).await;
    assert_eq!(metric(&before, "berth_blobs "), 0);
    let (_, manifest) = push_image(&berth, "m/app", "v1", &[b"metrics layer one", b"metrics layer two"]).await;
    push_blob(&berth, "m/app", b"garbage for the collector").await;
    let got = client().get(berth.url("/v2/m/app/manifests/v1")).send().await.unwrap();
    assert_eq!(got.bytes().await.unwrap(), manifest);
    let after_push = scrape(berth.url("/metrics")).await;
    assert_eq!(
        metric(
            &after_push,
            r#"berth_http_requests_total{group="manifests",method="PUT",status="201"}"#
        ),
        1
    );
    assert_eq!(
        metric(
            &after_push,
            r#"berth_http_requests_total{group="manifests",method="GET",status="200"}"#
        ),
        1
    );
    assert_eq!(
        metric(
            &after_push,
            r#"berth_http_requests_total{group="uploads",method="POST",status="201"}"#
        ),
        4
    );
    assert_eq!(metric(&after_push, "berth_blobs "), 4, "config, two layers, one orphan");
    assert_eq!(metric(&after_push, "berth_manifests "), 1);
    assert_eq!(metric(&after_push, "berth_tags "), 1);
    assert_eq!(metric(&after_push, "berth_repositories "), 1);
    assert!(metric(&after_push, "berth_http_response_bytes_total") >= manifest.len() as u64);
    assert!(metric(&after_push, "berth_meta_commit_seconds_count") >= 5);
    tokio::time::sleep(Duration::from_millis(20)).await;
    crate::harness::run_gc(&berth).await;
    let after_gc = scrape(format!("http://{debug}/metrics")).await;
    assert_eq!(metric(&after_gc, r#"berth_gc_runs_total{result="done"}"#), 1);
    assert_eq!(
        metric(&after_gc, "berth_gc_freed_bytes_total"),
        25,
        "the 25-byte orphan"
    );
    assert_eq!(metric(&after_gc, "berth_blobs "), 3);
    assert!(metric(&after_gc, "berth_gc_last_success_timestamp_seconds") > 1_700_000_000);
}

#[tokio::test]
async fn request_ids_and_locations_behind_a_proxy() {
    let berth = Berth::start();
    let resp = client()
        .get(berth.url("/v2/"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["x-request-id"],
        "trace-me-42",
        "a sane incoming id is kept"
    );
    let resp = client()
        .get(berth.url("/v2/"))
        .header("x-request-id", "has space")
        .send()
        .await
        .unwrap();
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32, "an unusable id is replaced: {generated}");
    assert!(berth.log().contains("trace-me-42"), "the access log carries the id");
    // Without forwarding headers, Location is a path, valid behind any proxy.
    let resp = client().post(berth.url("/v2/p/blobs/uploads/")).send().await.unwrap();
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/v2/p/blobs/uploads/")
    );
    // With them, it is the URL the client used.
    let resp = client()
        .post(berth.url("/v2/p/blobs/uploads/"))
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "registry.example.com")
        .send()
        .await
        .unwrap();
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://registry.example.com/v2/p/blobs/uploads/"),
        "{location}"
    );
    let resp = client()
        .post(berth.url("/v2/p/blobs/uploads/"))
        .header("x-forwarded-host", "evil.example/\"><x")
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["location"].to_str().unwrap().starts_with('/'),
        "a malformed host is ignored"
    );
}

/// A failed start says why once (not `error: error`), and a busy port creates no store.
#[tokio::test]
async fn a_busy_port_fails_once_clearly_and_creates_no_store() {
    let berth = crate::harness::Berth::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let out = berth_cli(&["serve", "--addr", &berth.host, "--root", root.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot listen on {}", berth.host)), "{stderr}");
    assert_eq!(stderr.matches("Address already in use").count(), 1, "{stderr}");
    assert!(!root.exists(), "a failed start created {}", root.display());
}

/// The access-log line of the first request whose line contains every one of `parts`, once the
/// server has written it (polled, bounded).
async fn access_line(berth: &Berth, parts: &[&str]) -> String {
    for _ in 0..500 {
        let found = berth
            .log()
            .lines()
            .find(|l| l.contains("berth::access") && parts.iter().all(|p| l.contains(p)))
            .map(str::to_owned);
        if let Some(line) = found {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no access-log line with {parts:?}:\n{}", berth.log());
}

/// The access log and the request metrics count what crossed the wire: a chunked upload's
/// bytes (it declares no length), a download to its end, and one a client abandoned, logged
/// as incomplete with the bytes it got.
#[tokio::test]
async fn the_access_log_counts_bytes_really_read_and_sent_to_the_end_of_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let berth = Berth::start();
    let c = client();
    let session = c.post(berth.url("/v2/log/blob/blobs/uploads/")).send().await.unwrap();
    let location = crate::harness::header(&session, "location");
    let chunk = random_bytes(300_000, 5);
    let chunks = vec![
        Ok::<_, std::io::Error>(chunk[..100_000].to_vec()),
        Ok(chunk[100_000..].to_vec()),
    ];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = c.patch(berth.url(&location)).body(body).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let line = access_line(&berth, &["method=PATCH", "status=202"]).await;
    assert!(line.contains("bytes_in=300000"), "{line}");

    let big = random_bytes(8 << 20, 6);
    let digest = crate::harness::push_blob(&berth, "log/big", &big).await;
    let path = format!("/v2/log/big/blobs/{digest}");
    let got = c.get(berth.url(&path)).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(got.len(), big.len());
    let line = access_line(&berth, &["method=GET", &format!("path={path} "), "complete=true"]).await;
    assert!(line.contains(&format!("bytes_out={}", big.len())), "{line}");

    // A client that reads the headers and a little, then hangs up.
    let mut tcp = tokio::net::TcpStream::connect(&berth.host).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        berth.host
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut first = vec![0; 64 << 10];
    let n = tcp.read(&mut first).await.unwrap();
    assert!(n > 0 && first.starts_with(b"HTTP/1.1 200"));
    drop(tcp);
    let line = access_line(&berth, &["method=GET", &format!("path={path} "), "complete=false"]).await;
    let sent: u64 = line
        .split("bytes_out=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no bytes_out in {line}"));
    assert!(sent < big.len() as u64, "{line}");
}
