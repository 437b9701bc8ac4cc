//! The pull-through cache over plain HTTP, against real upstream registries on 127.0.0.1: a
//! second Berth with Basic auth, one with Bearer tokens, and CNCF Distribution. Each test tells
//! one of the stories that go wrong in other registries' mirrors: a blob fetched once per
//! client, a corrupt blob cached, a tag never revalidated, a cache that dies with its upstream,
//! an index whose unpulled platforms break GC or fsck.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    Berth, client, error_codes, header, push_blob_with, push_image, push_manifest_with, random_bytes, sha256, start_gc,
    wait_gc,
};

pub const USER: &str = "mirror";
pub const PASSWORD: &str = "mirror-secret-pw";

/// A directory holding the config files of a test's servers.
pub struct Site {
    pub dir: tempfile::TempDir,
}

impl Site {
    pub fn new() -> Site {
        Site {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// An upstream Berth that wants `USER`'s Basic credentials (or, with `token`, Bearer tokens
    /// it issues) for everything.
    pub fn upstream(&self, token: bool) -> Berth {
        let hash = bcrypt::hash_with_result(PASSWORD, 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let htpasswd = self.write("htpasswd", &format!("{USER}:{hash}\n"));
        let token = if token { "  token:\n    enabled: true\n" } else { "" };
        let name = if token.is_empty() {
            "upstream-basic.yml"
        } else {
            "upstream-token.yml"
        };
        let config = self.write(
            name,
            &format!("auth:\n  htpasswd:\n    path: {}\n{token}", htpasswd.display()),
        );
        // The upstream keeps its blobs in files, so a test can corrupt one (in the S3 run
        // too, where the mirror's cache lives in the bucket).
        Berth::builder()
            .filesystem()
            .arg("--config")
            .arg(config.to_str().unwrap())
            .start()
    }

    /// A Berth whose `proxy:` section is `entries` (YAML list items, indented by two).
    pub fn mirror(&self, entries: &str) -> Berth {
        self.mirror_with(entries, &[])
    }

    /// `mirror`, with environment variables (test hooks, garbage collection settings).
    pub fn mirror_with(&self, entries: &str, env: &[(&str, &str)]) -> Berth {
        let config = self.write("mirror.yml", &format!("proxy:\n{entries}"));
        let mut builder = Berth::builder().arg("--config").arg(config.to_str().unwrap());
        for (k, v) in env {
            builder = builder.env(k, v);
        }
        builder.start()
    }
}

/// A proxy entry for `upstream` under `prefix`, logging in as `USER`.
pub fn entry(prefix: &str, upstream: &Berth, more: &str) -> String {
    format!(
        "  - prefix: {prefix}\n    url: {}\n    username: {USER}\n    password: {PASSWORD}\n{more}",
        upstream.base
    )
}

/// A request with `USER`'s credentials, for pushing to an upstream.
fn upstream_client() -> reqwest::Client {
    use base64::Engine as _;
    use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
    let _ = client(); // installs the TLS provider reqwest needs here
    let mut headers = HeaderMap::new();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Basic {basic}")).unwrap());
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// Push a blob to an upstream that wants `USER`'s Basic credentials.
pub async fn upstream_blob(upstream: &Berth, repo: &str, bytes: &[u8]) -> String {
    push_blob_with(&upstream_client(), upstream, repo, bytes).await
}

/// Push a manifest to an upstream; its digest.
pub async fn upstream_manifest(upstream: &Berth, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
    push_manifest_with(&upstream_client(), upstream, repo, reference, media_type, body).await
}

/// An OCI image of `layers` pushed upstream under `reference`: (digest, manifest bytes, the
/// blobs' digests with their bytes).
pub async fn upstream_image(
    upstream: &Berth,
    repo: &str,
    reference: &str,
    layers: &[&[u8]],
) -> (String, Vec<u8>, Vec<(String, Vec<u8>)>) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","layers":{}}}"#, layers.len()).into_bytes();
    let mut blobs = vec![(upstream_blob(upstream, repo, &config).await, config.clone())];
    for layer in layers {
        blobs.push((upstream_blob(upstream, repo, layer).await, layer.to_vec()));
    }
    let layer_descs: Vec<Value> = blobs[1..]
        .iter()
        .map(|(d, b)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": b.len()}))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0].0, "size": config.len()},
        "layers": layer_descs,
    });
    let body = serde_json::to_vec_pretty(&manifest).unwrap();
    let digest = upstream_manifest(
        upstream,
        repo,
        reference,
        "application/vnd.oci.image.manifest.v1+json",
        &body,
    )
    .await;
    (digest, body, blobs)
}

/// Run `berth fsck` against the running server and assert it finds nothing wrong.
fn assert_fsck_clean(berth: &Berth) {
    let report = crate::harness::fsck_report(berth);
    assert_eq!(report["clean"], true, "fsck: {report}");
}

/// A metric's value on `berth` (summed over the series whose labels contain all of `labels`).
pub async fn metric(berth: &Berth, name: &str, labels: &[&str]) -> u64 {
    let text = client()
        .get(berth.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// How many requests `berth`'s access log shows answered 200 for `method` on `path` (a 401
/// that asks for a login is not a fetch).
pub fn access_count(berth: &Berth, method: &str, path: &str) -> usize {
    let (method, path) = (format!("method={method} "), format!("path={path} "));
    berth
        .log()
        .lines()
        .filter(|l| l.contains("berth::access") && l.contains(&method) && l.contains(&path) && l.contains("status=200"))
        .count()
}

async fn get(berth: &Berth, path: &str) -> reqwest::Response {
    client().get(berth.url(path)).send().await.unwrap()
}

#[tokio::test]
async fn pulls_through_an_upstream_with_basic_auth_and_serves_the_second_pull_locally() {
    let site = Site::new();
    let upstream = site.upstream(false);
    let layer = random_bytes(300_000, 1);
    let (digest, body, blobs) = upstream_image(&upstream, "team/app", "v1", &[&layer]).await;
    let mirror = site.mirror(&entry("up", &upstream, ""));

    // Cold: the manifest by tag, byte for byte with its media type, then each blob.
    let resp = get(&mirror, "/v2/up/team/app/manifests/v1").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(
        header(&resp, "content-type"),
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(resp.bytes().await.unwrap(), body);
    for (d, bytes) in &blobs {
        let head = client()
            .head(mirror.url(&format!("/v2/up/team/app/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(header(&head, "content-length"), bytes.len().to_string());
        let resp = get(&mirror, &format!("/v2/up/team/app/blobs/{d}")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "docker-content-digest"), *d);
        assert_eq!(resp.bytes().await.unwrap(), *bytes, "blob {d}");
    }
    // Warm: the same again, with no further upstream GET.
    let upstream_gets = |path: &str| access_count(&upstream, "GET", path);
    let layer_path = format!("/v2/team/app/blobs/{}", blobs[1].0);
    assert_eq!(upstream_gets(&layer_path), 1);
    let resp = get(&mirror, &format!("/v2/up/team/app/blobs/{}", blobs[1].0)).await;
    assert_eq!(resp.bytes().await.unwrap(), layer);
    let resp = get(&mirror, &format!("/v2/up/team/app/manifests/{digest}")).await;
    assert_eq!(resp.bytes().await.unwrap(), body);
    assert_eq!(upstream_gets(&layer_path), 1, "a warm pull went upstream");
    // The cold tag pull was a HEAD of the tag and a GET by the digest it named; no more since.
    assert_eq!(upstream_gets(&format!("/v2/team/app/manifests/{digest}")), 1);
    assert!(
        metric(
            &mirror,
            "berth_proxy_events_total",
            &["upstream=\"up\"", "event=\"hit\""]
        )
        .await
            >= 2
    );
    assert!(metric(&mirror, "berth_proxy_events_total", &["event=\"miss\""]).await >= 2);
    assert_eq!(
        metric(&mirror, "berth_proxy_upstream_bytes_total", &["upstream=\"up\""]).await,
        blobs.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
    // Everything the mirror stored is ordinary content: fsck finds it clean.
    assert_fsck_clean(&mirror);
    // The password never reaches the log.
    assert!(
        !mirror.log().contains(PASSWORD),
        "the upstream password reached the log"
    );
}

#[tokio::test]
async fn proxied_repositories_are_read_only_with_a_message_that_says_why() {
    let site = Site::new();
    let upstream = site.upstream(false);
    let mirror = site.mirror(&entry("up", &upstream, ""));
    let c = client();
    let checks = [
        c.post(mirror.url("/v2/up/team/app/blobs/uploads/")),
        c.put(mirror.url("/v2/up/team/app/manifests/v1"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body("{}"),
        c.delete(mirror.url("/v2/up/team/app/manifests/v1")),
        c.delete(mirror.url(&format!("/v2/up/team/app/blobs/{}", sha256(b"x")))),
    ];
    for request in checks {
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), 405);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
        let detail = body["errors"][0]["detail"].as_str().unwrap();
        assert!(
            detail.contains("pull-through cache") && detail.contains(&upstream.base),
            "{detail}"
        );
    }
    // Outside the prefix the mirror is an ordinary registry.
    let (digest, _) = push_image(&mirror, "local/app", "v1", &[b"local layer"]).await;
    let resp = get(&mirror, "/v2/local/app/manifests/v1").await;
    assert_eq!(header(&resp, "docker-content-digest"), digest);
}

#[tokio::test]
async fn a_token_upstream_is_logged_into_with_the_docker_bearer_flow() {
    let site = Site::new();
    let upstream = site.upstream(true);
    // Pushing to the token upstream: Basic is accepted beside tokens.
    let (digest, body, blobs) = upstream_image(&upstream, "lib/tool", "1.0", &[b"tool layer"]).await;
    let mirror = site.mirror(&entry("tok", &upstream, ""));
    let resp = get(&mirror, "/v2/tok/lib/tool/manifests/1.0").await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(resp.bytes().await.unwrap(), body);
    for (d, bytes) in &blobs {
        let resp = get(&mirror, &format!("/v2/tok/lib/tool/blobs/{d}")).await;
        assert_eq!(resp.bytes().await.unwrap(), *bytes);
    }
    assert!(
        access_count(&upstream, "GET", "/auth/token") >= 1,
        "no token was fetched"
    );

    // Wrong credentials: a 503 that says to check them, and never shows them.
    let wrong = site.write(
        "wrong.yml",
        &format!(
            "proxy:\n  - prefix: tok\n    url: {}\n    username: {USER}\n    password: not-the-password\n",
            upstream.base
        ),
    );
    let bad = Berth::builder().arg("--config").arg(wrong.to_str().unwrap()).start();
    let resp = get(&bad, "/v2/tok/lib/tool/manifests/1.0").await;
    assert_eq!(resp.status(), 503);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("UNAVAILABLE") && text.contains("username and password"),
        "{text}"
    );
    assert!(!text.contains("not-the-password") && !bad.log().contains("not-the-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_cold_pulls_fetch_the_blob_from_upstream_once() {
    let site = Site::new();
    let upstream = site.upstream(false);
    let layer = random_bytes(64 << 20, 7);
    let (_, _, blobs) = upstream_image(&upstream, "big/image", "latest", &[&layer]).await;
    let mirror = site.mirror(&entry("up", &upstream, ""));
    let digest = blobs[1].0.clone();
    let resp = get(&mirror, "/v2/up/big/image/manifests/latest").await;
    assert_eq!(resp.status(), 200);
    let path = format!("/v2/up/big/image/blobs/{digest}");
    let pulls = (0..16).map(|_| {
        let url = mirror.url(&path);
        tokio::spawn(async move {
            let resp = client().get(url).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            sha256(&resp.bytes().await.unwrap())
        })
    });
    for pull in futures_util::future::join_all(pulls).await {
        assert_eq!(pull.unwrap(), digest, "a client got wrong bytes");
    }
    assert_eq!(
        access_count(&upstream, "GET", &format!("/v2/big/image/blobs/{digest}")),
        1,
        "the upstream saw more than one GET of the layer"
    );
}

#[tokio::test]
async fn a_corrupt_upstream_blob_is_never_cached_nor_served_whole() {
    let site = Site::new();
    let upstream = site.upstream(false);
    let layer = random_bytes(2 << 20, 3);
    let (_, _, blobs) = upstream_image(&upstream, "team/bad", "v1", &[&layer]).await;
    let digest = blobs[1].0.clone();
    // Flip one byte in the upstream's file: it serves what it has without checking.
    let file = upstream.blob_file(&digest);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let mirror = site.mirror(&entry("up", &upstream, ""));
    let path = format!("/v2/up/team/bad/blobs/{digest}");

    // The first client's body breaks off before its end.
    let resp = get(&mirror, &path).await;
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await;
    assert!(
        body.is_err() || body.unwrap().len() < layer.len(),
        "a corrupt blob was served whole"
    );
    // Nothing was kept: a Range GET (which waits for the fetch) gets a clear error.
    let resp = client()
        .get(mirror.url(&path))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("hash to") && text.contains("nothing was cached"),
        "{text}"
    );
    assert!(!mirror.stored_blobs().await.contains(&digest));
    assert_eq!(
        client().head(mirror.url(&path)).send().await.unwrap().status(),
        200,
        "HEAD asks the upstream, which still lists the blob"
    );
}

#[tokio::test]
async fn with_the_upstream_down_cached_tags_are_served_stale_and_the_rest_fails_cleanly() {
    let site = Site::new();
    let mut upstream = site.upstream(false);
    let (digest, body, blobs) = upstream_image(&upstream, "team/app", "v1", &[b"layer one"]).await;
    let (other, _, _) = upstream_image(&upstream, "team/app", "v2", &[b"layer two"]).await;
    // tag_ttl 0s: every pull of a tag asks the upstream.
    let mirror = site.mirror(&entry("up", &upstream, "    tag_ttl: 0s\n"));
    assert_eq!(get(&mirror, "/v2/up/team/app/manifests/v1").await.status(), 200);
    for (d, _) in &blobs {
        assert_eq!(get(&mirror, &format!("/v2/up/team/app/blobs/{d}")).await.status(), 200);
    }
    // The tag list is the upstream's, v2 included though never pulled, paged as asked.
    let tags: Value = get(&mirror, "/v2/up/team/app/tags/list").await.json().await.unwrap();
    assert_eq!(tags["tags"], json!(["v1", "v2"]));
    let resp = get(&mirror, "/v2/up/team/app/tags/list?n=1").await;
    assert!(resp.headers().contains_key("link"), "no Link to the next page");
    assert_eq!(resp.json::<Value>().await.unwrap()["tags"], json!(["v1"]));
    upstream.stop();

    let resp = get(&mirror, "/v2/up/team/app/manifests/v1").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    let warning = header(&resp, "warning");
    assert!(
        warning.starts_with("299 - \"") && warning.contains("up/team/app:v1"),
        "{warning}"
    );
    assert_eq!(resp.bytes().await.unwrap(), body);
    for (d, bytes) in &blobs {
        let resp = get(&mirror, &format!("/v2/up/team/app/blobs/{d}")).await;
        assert_eq!(resp.bytes().await.unwrap(), *bytes);
    }
    // The tag list falls back to what the cache holds.
    let tags: Value = get(&mirror, "/v2/up/team/app/tags/list").await.json().await.unwrap();
    assert_eq!(tags["tags"], json!(["v1"]));
    // Never cached: 503 UNAVAILABLE naming the upstream.
    for path in [
        "/v2/up/team/app/manifests/v2".to_owned(),
        format!("/v2/up/team/app/manifests/{other}"),
        format!("/v2/up/team/app/blobs/{}", sha256(b"layer two")),
    ] {
        let resp = get(&mirror, &path).await;
        assert_eq!(resp.status(), 503, "{path}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("UNAVAILABLE") && text.contains(&upstream.base), "{text}");
    }
    assert!(metric(&mirror, "berth_proxy_events_total", &["event=\"stale\""]).await >= 1);

    // Without serve_stale, the cached tag fails too.
    let strict = site.mirror(&entry("up", &upstream, "    tag_ttl: 0s\n    serve_stale: false\n"));
    assert_eq!(get(&strict, "/v2/up/team/app/manifests/v1").await.status(), 503);
}

#[tokio::test]
async fn a_moved_tag_is_seen_after_tag_ttl_and_not_before() {
    let site = Site::new();
    let upstream = site.upstream(false);
    let (first, _, _) = upstream_image(&upstream, "team/app", "latest", &[b"first"]).await;
    let mirror = site.mirror(&entry("up", &upstream, "    tag_ttl: 1h\n"));
    let digest_of = |resp: &reqwest::Response| header(resp, "docker-content-digest");
    assert_eq!(
        digest_of(&get(&mirror, "/v2/up/team/app/manifests/latest").await),
        first
    );
    let (second, _, _) = upstream_image(&upstream, "team/app", "latest", &[b"second"]).await;
    let heads = || access_count(&upstream, "HEAD", "/v2/team/app/manifests/latest");
    let before = heads();
    // Within the TTL: the cached resolution, without asking.
    assert_eq!(
        digest_of(&get(&mirror, "/v2/up/team/app/manifests/latest").await),
        first
    );
    assert_eq!(heads(), before);
    // Past it: one HEAD sees the move, one GET fetches the new manifest.
    mirror.advance_clock(Duration::from_secs(3601)).await;
    assert_eq!(
        digest_of(&get(&mirror, "/v2/up/team/app/manifests/latest").await),
        second
    );
    assert_eq!(heads(), before + 1);
    // Past it again, unchanged: a HEAD, and no GET.
    mirror.advance_clock(Duration::from_secs(3601)).await;
    let gets = access_count(&upstream, "GET", &format!("/v2/team/app/manifests/{second}"));
    assert_eq!(
        digest_of(&get(&mirror, "/v2/up/team/app/manifests/latest").await),
        second
    );
    assert_eq!(heads(), before + 2);
    assert_eq!(
        access_count(&upstream, "GET", &format!("/v2/team/app/manifests/{second}")),
        gets
    );
    assert!(metric(&mirror, "berth_proxy_events_total", &["event=\"revalidated\""]).await >= 1);
    assert!(metric(&mirror, "berth_proxy_events_total", &["event=\"changed\""]).await >= 1);
}

#[tokio::test]
async fn an_index_is_kept_sparse_when_one_platform_is_pulled_and_gc_and_fsck_agree() {
    let site = Site::new();
    let upstream = site.upstream(false);
    let (amd, amd_body, amd_blobs) = upstream_image(&upstream, "multi/app", "amd", &[b"amd64 layer"]).await;
    let (arm, arm_body, _) = upstream_image(&upstream, "multi/app", "arm", &[b"arm64 layer"]).await;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": amd_body.len(),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": arm_body.len(),
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    });
    let index_body = serde_json::to_vec(&index).unwrap();
    let index_digest = upstream_manifest(
        &upstream,
        "multi/app",
        "v1",
        "application/vnd.oci.image.index.v1+json",
        &index_body,
    )
    .await;
    let mirror = site.mirror(&entry("up", &upstream, ""));

    // Pull the index and the amd64 image only.
    let resp = get(&mirror, "/v2/up/multi/app/manifests/v1").await;
    assert_eq!(header(&resp, "docker-content-digest"), index_digest);
    assert_eq!(header(&resp, "content-type"), "application/vnd.oci.image.index.v1+json");
    assert_eq!(resp.bytes().await.unwrap(), index_body);
    assert_eq!(
        get(&mirror, &format!("/v2/up/multi/app/manifests/{amd}"))
            .await
            .status(),
        200
    );
    for (d, _) in &amd_blobs {
        assert_eq!(get(&mirror, &format!("/v2/up/multi/app/blobs/{d}")).await.status(), 200);
    }
    // And an image pulled by digest alone: untagged here, yet cached until evicted.
    let (solo, solo_body, _) = upstream_image(&upstream, "multi/solo", "untagged-upstream", &[b"solo"]).await;
    assert_eq!(
        get(&mirror, &format!("/v2/up/multi/solo/manifests/{solo}"))
            .await
            .status(),
        200
    );
    // Collect garbage past the grace period, then check: nothing pulled is lost, fsck is clean.
    mirror.advance_clock(Duration::from_secs(7200)).await;
    let gc = crate::harness::run_gc(&mirror).await;
    assert_eq!(gc["manifests_deleted"], 0, "{gc}");
    assert_fsck_clean(&mirror);
    let mut upstream = upstream;
    upstream.stop();
    let resp = get(&mirror, &format!("/v2/up/multi/app/manifests/{index_digest}")).await;
    assert_eq!(resp.bytes().await.unwrap(), index_body);
    for (d, bytes) in &amd_blobs {
        let resp = get(&mirror, &format!("/v2/up/multi/app/blobs/{d}")).await;
        assert_eq!(resp.bytes().await.unwrap(), *bytes);
    }
    let resp = get(&mirror, &format!("/v2/up/multi/solo/manifests/{solo}")).await;
    assert_eq!(
        resp.bytes().await.unwrap(),
        solo_body,
        "a manifest cached by digest was collected"
    );
    // The platform never pulled is not here, and says so.
    assert_eq!(
        get(&mirror, &format!("/v2/up/multi/app/manifests/{arm}"))
            .await
            .status(),
        503
    );
}

#[tokio::test]
async fn the_ns_parameter_of_mirror_requests_selects_the_upstream() {
    let site = Site::new();
    let one = site.upstream(false);
    let (digest, body, _) = upstream_image(&one, "library/busybox", "1.36", &[b"busybox"]).await;
    let mirror = site.mirror(&format!("{}    namespace: one.example\n", entry("one", &one, "")));
    let resp = get(&mirror, "/v2/library/busybox/manifests/1.36?ns=one.example").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "oci-namespace"), "one.example");
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(resp.bytes().await.unwrap(), body);
    // An unknown namespace is served as an ordinary local request.
    let resp = get(&mirror, "/v2/library/busybox/manifests/1.36?ns=other.example").await;
    assert_eq!(resp.status(), 404);
    assert!(resp.headers().get("oci-namespace").is_none());
    assert_eq!(error_codes(resp).await, ["MANIFEST_UNKNOWN"]);
    // And a push with an ns that names a cache is refused like any push into the cache.
    let resp = client()
        .post(mirror.url("/v2/library/busybox/blobs/uploads/?ns=one.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}

/// Pull an image through `mirror` (manifest by tag, then every blob); its blobs' bytes, or the
/// first status that was not 200.
async fn pull(mirror: &Berth, repo: &str, tag: &str) -> Result<Vec<Vec<u8>>, u16> {
    let resp = get(mirror, &format!("/v2/{repo}/manifests/{tag}")).await;
    if resp.status() != 200 {
        return Err(resp.status().as_u16());
    }
    let manifest: Value = resp.json().await.unwrap();
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_owned()];
    digests.extend(
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned()),
    );
    let mut out = Vec::new();
    for d in digests {
        let resp = get(mirror, &format!("/v2/{repo}/blobs/{d}")).await;
        if resp.status() != 200 {
            return Err(resp.status().as_u16());
        }
        let bytes = resp.bytes().await.unwrap().to_vec();
        assert_eq!(sha256(&bytes), d, "wrong bytes for {d}");
        out.push(bytes);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_max_bytes_gc_evicts_the_least_recently_pulled_image_while_pulls_go_on() {
    let site = Site::new();
    let mut upstream = site.upstream(false);
    for (i, tag) in ["a", "b", "c"].iter().enumerate() {
        let layer = random_bytes(1 << 20, 100 + i as u64);
        upstream_image(&upstream, "team/app", tag, &[&layer]).await;
    }
    // Room for two of the three images (1 MiB and a config each), not three.
    let mirror = site.mirror_with(
        &entry("up", &upstream, "    max_bytes: 2600KiB\n"),
        &[("BERTH_TEST_PAUSE_AT", "gc.after_mark")],
    );
    let (local, _) = push_image(&mirror, "local/app", "v1", &[&random_bytes(3 << 20, 9)]).await;
    // Pulled in the order a, b, c, then a again: b is the least recently pulled.
    for tag in ["a", "b", "c", "a"] {
        pull(&mirror, "up/team/app", tag).await.unwrap();
        mirror.advance_clock(Duration::from_secs(1)).await;
    }
    let b_layer = sha256(&random_bytes(1 << 20, 101));
    let usage = crate::harness::get_json(mirror.url("/admin/usage")).await;
    assert_eq!(usage["caches"][0]["prefix"], "up");
    assert!(usage["caches"][0]["bytes"].as_u64().unwrap() > 3 << 20, "{usage}");
    // Past the grace period, so that the sweep may free what eviction released.
    mirror.advance_clock(Duration::from_secs(7200)).await;

    let id = start_gc(&mirror.base).await;
    mirror.wait_reached("gc.after_mark", 1).await;
    // Evicted, not yet swept: every pull still gets right bytes (b's manifest comes back from
    // the upstream, its layer from the local copy).
    for tag in ["a", "b", "c"] {
        pull(&mirror, "up/team/app", tag).await.unwrap();
    }
    mirror.resume("gc.after_mark").await;
    let report = wait_gc(&mirror.base, &id).await;
    assert_eq!(report["evicted"]["count"], 1, "{report}");
    assert!(report["evicted"]["bytes"].as_u64().unwrap() >= 1 << 20, "{report}");

    // The pull during the run put b's manifest back; collect again, and b goes for good.
    mirror.advance_clock(Duration::from_secs(7200)).await;
    pull(&mirror, "up/team/app", "a").await.unwrap();
    pull(&mirror, "up/team/app", "c").await.unwrap();
    mirror.advance_clock(Duration::from_secs(1)).await;
    let id = start_gc(&mirror.base).await;
    mirror.wait_reached("gc.after_mark", 2).await;
    mirror.resume("gc.after_mark").await;
    let report = wait_gc(&mirror.base, &id).await;
    assert_eq!(report["evicted"]["count"], 1, "{report}");
    let usage = crate::harness::get_json(mirror.url("/admin/usage")).await;
    assert!(usage["caches"][0]["bytes"].as_u64().unwrap() <= 2600 << 10, "{usage}");
    assert!(
        !mirror.stored_blobs().await.contains(&b_layer),
        "b's layer is still stored"
    );

    // With the upstream gone: a and c are whole from the cache, b is not there, and the
    // local repository was never touched.
    upstream.stop();
    for tag in ["a", "c"] {
        pull(&mirror, "up/team/app", tag).await.unwrap();
    }
    assert_eq!(pull(&mirror, "up/team/app", "b").await, Err(503));
    let resp = get(&mirror, "/v2/local/app/manifests/v1").await;
    assert_eq!(header(&resp, "docker-content-digest"), local);
}

/// After a restart: no blob `digest`, no staging leftovers. With shared metadata and blobs
/// (`BERTH_TEST_META=postgres` on S3) start-up leaves the shared staging area alone, since
/// other nodes' sessions live there: a leftover is garbage collection's to remove once the
/// grace period (by the storage's own clock) is over, so only the blob is checked then.
async fn assert_nothing_kept(mirror: &Berth, digest: &str) {
    assert!(!mirror.stored_blobs().await.contains(digest), "a blob was kept");
    if crate::postgres::postgres_mode() && mirror.on_s3() {
        return;
    }
    assert!(
        mirror.staging_entries().await.is_empty(),
        "staging leftovers after restart"
    );
}

/// GET `path` on `mirror` in the background; the body's length and digest, or the error that
/// broke it off.
fn pull_in_background(mirror: &Berth, path: &str) -> tokio::task::JoinHandle<Result<(usize, String), String>> {
    let url = mirror.url(path);
    tokio::spawn(async move {
        let resp = client().get(url).send().await.map_err(|e| e.to_string())?;
        assert_eq!(resp.status(), 200);
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        Ok((body.len(), sha256(&body)))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_in_the_middle_of_a_cold_pull_serves_nothing_partial() {
    let site = Site::new();
    let upstream = site.upstream(false);
    let layer = random_bytes(8 << 20, 11);
    let (_, _, blobs) = upstream_image(&upstream, "team/app", "v1", &[&layer]).await;
    let digest = blobs[1].0.clone();
    let mut mirror = site.mirror_with(
        &entry("up", &upstream, ""),
        &[("BERTH_TEST_PAUSE_AT", "proxy.streaming,proxy.before_commit")],
    );
    let path = format!("/v2/up/team/app/blobs/{digest}");

    // Killed while streaming: the client holds some bytes, never the whole blob.
    let first = pull_in_background(&mirror, &path);
    mirror.wait_reached("proxy.streaming", 1).await;
    mirror.kill();
    if let Ok((len, _)) = first.await.unwrap() {
        assert!(len < layer.len(), "the killed pull was served whole");
    }
    mirror.restart();
    assert_nothing_kept(&mirror, &digest).await;

    // Killed after the digest matched, before the commit: that client got every byte,
    // verified; nothing was kept.
    let second = pull_in_background(&mirror, &path);
    mirror.wait_reached("proxy.streaming", 1).await;
    mirror.resume("proxy.streaming").await;
    mirror.wait_reached("proxy.before_commit", 1).await;
    assert_eq!(second.await.unwrap(), Ok((layer.len(), digest.clone())));
    mirror.kill();
    mirror.restart();
    assert_nothing_kept(&mirror, &digest).await;

    // The next pull fetches again and completes, and the blob is kept.
    let third = pull_in_background(&mirror, &path);
    mirror.wait_reached("proxy.streaming", 1).await;
    mirror.resume("proxy.streaming").await;
    mirror.wait_reached("proxy.before_commit", 1).await;
    mirror.resume("proxy.before_commit").await;
    assert_eq!(third.await.unwrap(), Ok((layer.len(), digest.clone())));
    assert!(mirror.stored_blobs().await.contains(&digest));
}

/// Docker's `registry-mirrors` sends Docker Hub names with no prefix and no `ns`
/// (`/v2/library/busybox/manifests/latest`): the entry with `serve_unprefixed` answers what
/// the registry itself does not hold, and local repositories win.
#[tokio::test]
async fn names_under_no_prefix_come_from_the_unprefixed_cache_after_local_ones() {
    let site = Site::new();
    let upstream = site.upstream(false);
    let (digest, body, blobs) = upstream_image(&upstream, "library/busybox", "latest", &[b"busybox"]).await;
    upstream_image(&upstream, "team/shadowed", "v1", &[b"upstream copy"]).await;
    let mirror = site.mirror(&entry("hub", &upstream, "    serve_unprefixed: true\n"));
    let (local, _) = push_image(&mirror, "team/shadowed", "v1", &[b"local copy"]).await;

    let resp = get(&mirror, "/v2/library/busybox/manifests/latest").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(resp.bytes().await.unwrap(), body);
    for (d, bytes) in &blobs {
        let resp = get(&mirror, &format!("/v2/library/busybox/blobs/{d}")).await;
        assert_eq!(resp.bytes().await.unwrap(), *bytes);
    }
    // Cached under the prefix, as any pull through it.
    let resp = get(&mirror, &format!("/v2/hub/library/busybox/manifests/{digest}")).await;
    assert_eq!(resp.status(), 200);
    // The local repository answers for itself.
    let resp = get(&mirror, "/v2/team/shadowed/manifests/v1").await;
    assert_eq!(header(&resp, "docker-content-digest"), local);
    // Pushes under no prefix stay local.
    let (pushed, _) = push_image(&mirror, "team/new", "v1", &[b"new"]).await;
    assert_eq!(
        header(
            &get(&mirror, "/v2/team/new/manifests/v1").await,
            "docker-content-digest"
        ),
        pushed
    );
    // Unknown upstream too: the cache's 404.
    let resp = get(&mirror, "/v2/library/nothing/manifests/latest").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(error_codes(resp).await, ["MANIFEST_UNKNOWN"]);
}

/// Berth's own access rules apply to cached repositories like any other, whichever way the
/// request names them (by prefix, or by `ns`).
#[tokio::test]
async fn the_mirrors_own_access_rules_apply_to_cached_repositories() {
    let site = Site::new();
    let upstream = site.upstream(false);
    let (digest, _, _) = upstream_image(&upstream, "team/app", "v1", &[b"guarded"]).await;
    let hash = bcrypt::hash_with_result("reader-pw", 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    let htpasswd = site.write("mirror-htpasswd", &format!("reader:{hash}\n"));
    let config = site.write(
        "guarded.yml",
        &format!(
            "auth:\n  htpasswd:\n    path: {}\n  rules:\n    - repositories: [\"up/team/**\"]\n      users: [reader]\n      actions: [pull]\nproxy:\n{}    namespace: up.example\n",
            htpasswd.display(),
            entry("up", &upstream, "")
        ),
    );
    let mirror = Berth::builder().arg("--config").arg(config.to_str().unwrap()).start();
    for path in [
        "/v2/up/team/app/manifests/v1",
        "/v2/team/app/manifests/v1?ns=up.example",
    ] {
        assert_eq!(get(&mirror, path).await.status(), 401, "anonymous {path}");
        let resp = client()
            .get(mirror.url(path))
            .basic_auth("reader", Some("reader-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "reader {path}");
        assert_eq!(header(&resp, "docker-content-digest"), digest);
    }
    // Nothing was fetched for the anonymous requests: the first upstream GET is the reader's.
    assert_eq!(
        access_count(&upstream, "GET", &format!("/v2/team/app/manifests/{digest}")),
        1
    );
    // A repository the rules do not grant stays closed, cached or not.
    let resp = client()
        .get(mirror.url("/v2/up/other/app/manifests/v1"))
        .basic_auth("reader", Some("reader-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}
