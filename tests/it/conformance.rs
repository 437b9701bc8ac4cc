//! The optional categories of the OCI conformance suite (opencontainers/distribution-spec
//! `conformance/`, switched on by `OCI_VERSION=1.1+dev` and `OCI_DATA_SPARSE=1`), case by
//! case, in our own tests: the suite is written in Go and this machine has no Go module proxy.
//!
//! - **blob digest headers**: every blob push path (POST with the body, POST then PUT, chunked
//!   with and without the last chunk in the PUT, chunks out of order, streamed, mount from a
//!   repository, mount of a blob the source lacks, anonymous mount) answers with
//!   `Docker-Content-Digest` and a `Location` that serves the bytes; HEAD and GET carry the
//!   header too; a wrong digest is refused on every path; deletes are immediate. For sha256 and
//!   sha512, with the empty blob and `{}` among them.
//! - **upload cancel**: DELETE of an upload session answers 204, and the session is gone.
//! - **manifest digest headers**: PUT, GET and HEAD by tag and by digest carry
//!   `Docker-Content-Digest`, `Content-Type` and `Content-Length`, for sha256 and sha512.
//! - **the tag parameter**: `PUT /manifests/<digest>?tag=..` for every manifest of an index,
//!   two tags on the index itself, each echoed in `OCI-Tag`; sha256 and sha512.
//! - **sparse data**: an image missing a layer and an index missing a child, accepted with
//!   `validation.sparse: true`, pulled back byte for byte, and deleted.
//!
//! Each category runs twice: over plain HTTP with auth off, and over HTTPS with htpasswd users
//! and Bearer tokens Berth issues, fetched the way the suite's client does (answer a 401's
//! challenge, cache the token). The one deliberate difference between the two: an anonymous
//! mount (no `from`) with auth on falls back to an upload (202) instead of mounting, because
//! mounting a blob found anywhere would tell a caller which blobs other repositories hold.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::auth::entry;
use crate::harness::{Berth, client, error_codes, random_bytes, sha256, sha512};
use crate::pki::{Ca, https_client};
use crate::tls::Setup;

const REPO1: &str = "conformance/repo1";
const REPO2: &str = "conformance/repo2";
const USER: (&str, &str) = ("conformer", "conformer-pw");
const OCTETS: &str = "application/octet-stream";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    TlsAuth,
}

#[derive(Clone, Copy)]
enum Algo {
    Sha256,
    Sha512,
}

impl Algo {
    fn digest(self, bytes: &[u8]) -> String {
        match self {
            Algo::Sha256 => sha256(bytes),
            Algo::Sha512 => sha512(bytes),
        }
    }
}

/// A Berth to run the cases against, and a client that authenticates as the suite's does.
struct Target {
    berth: Berth,
    http: reqwest::Client,
    auth: bool,
    /// Bearer tokens by repository and kind of request, as the last challenge for them
    /// granted them (the suite's cache).
    tokens: Mutex<HashMap<String, String>>,
    _files: Option<Setup>,
}

impl Target {
    /// `extra` is extra top-level configuration (for example `validation:`).
    fn start(mode: Mode, extra: &str) -> Target {
        match mode {
            Mode::Plain => {
                let ca = Ca::new("unused");
                let files = Setup::new(&ca);
                let mut berth = Berth::builder();
                if !extra.is_empty() {
                    let path = files.write_file("config.yml", extra);
                    berth = berth.arg("--config").arg(path.to_str().unwrap());
                }
                Target::new(berth.start(), client(), false, Some(files))
            }
            Mode::TlsAuth => {
                let ca = Ca::new("conformance CA");
                let setup = Setup::new(&ca);
                let htpasswd = setup.write_file("htpasswd", &entry(USER.0, USER.1));
                let auth = format!(
                    "auth:\n  htpasswd:\n    path: {}\n  token:\n    enabled: true\n{extra}",
                    htpasswd.display()
                );
                let config = setup.config("", &auth);
                let berth = crate::tls::start_with(&config);
                assert!(berth.base.starts_with("https://"), "{}", berth.base);
                let http = https_client(&ca.pem, None, &[]);
                Target::new(berth, http, true, Some(setup))
            }
        }
    }

    fn new(berth: Berth, http: reqwest::Client, auth: bool, files: Option<Setup>) -> Target {
        Target {
            berth,
            http,
            auth,
            tokens: Mutex::new(HashMap::new()),
            _files: files,
        }
    }

    fn url(&self, path: &str) -> String {
        self.berth.url(path)
    }

    /// Resolve a `Location` against the server.
    fn at(&self, location: &str) -> String {
        if location.starts_with("http") {
            location.to_owned()
        } else {
            self.url(location)
        }
    }

    fn request(&self, method: &str, url: &str) -> reqwest::RequestBuilder {
        self.http.request(method.parse().unwrap(), url)
    }

    /// Send `req` with the cached token for its repository; on a 401, fetch a token for the
    /// challenge's scope and send it again.
    async fn send(&self, req: reqwest::RequestBuilder) -> reqwest::Response {
        let (http, req) = req.build_split();
        let mut req = req.unwrap();
        if !self.auth {
            return http.execute(req).await.unwrap();
        }
        let repo = cache_key(&req);
        let retry = req.try_clone();
        if let Some(token) = self.tokens.lock().unwrap().get(&repo) {
            req.headers_mut().insert("authorization", bearer(token));
        }
        let resp = http.execute(req).await.unwrap();
        if resp.status() != 401 {
            return resp;
        }
        let challenge = crate::harness::header(&resp, "www-authenticate");
        let token = self.token_for(&challenge).await;
        let mut retry = retry.expect("a streamed body cannot be sent again: get a token first");
        retry.headers_mut().insert("authorization", bearer(&token));
        self.tokens.lock().unwrap().insert(repo, token);
        http.execute(retry).await.unwrap()
    }

    /// The token a `Bearer realm=..,service=..,scope=..` challenge asks for, as `USER`.
    async fn token_for(&self, challenge: &str) -> String {
        let params = challenge_params(challenge);
        let mut url = reqwest::Url::parse(&params["realm"]).unwrap();
        url.query_pairs_mut().append_pair("service", &params["service"]);
        for scope in params.get("scope").into_iter().flat_map(|s| s.split(' ')) {
            url.query_pairs_mut().append_pair("scope", scope);
        }
        let resp = self
            .http
            .get(url)
            .basic_auth(USER.0, Some(USER.1))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "token for {challenge}");
        let v: Value = resp.json().await.unwrap();
        v["token"].as_str().unwrap().to_owned()
    }

    async fn go(&self, method: &str, path: &str) -> reqwest::Response {
        self.send(self.request(method, &self.url(path))).await
    }
}

fn bearer(token: &str) -> reqwest::header::HeaderValue {
    format!("Bearer {token}").parse().unwrap()
}

/// `conformance/repo1:push` for `POST /v2/conformance/repo1/blobs/uploads/`: the suite caches
/// a token by repository and by pull (GET, HEAD), push (POST, PATCH, PUT) or DELETE.
fn cache_key(req: &reqwest::Request) -> String {
    let rest = req.url().path().trim_start_matches("/v2/");
    let repo = ["/blobs/", "/manifests/", "/tags/", "/referrers/"]
        .iter()
        .find_map(|m| rest.find(m).map(|i| &rest[..i]))
        .unwrap_or_default();
    let kind = match req.method().as_str() {
        "GET" | "HEAD" => "pull",
        "DELETE" => "delete",
        _ => "push",
    };
    format!("{repo}:{kind}")
}

/// The `key="value"` pairs of an authentication challenge.
fn challenge_params(challenge: &str) -> HashMap<String, String> {
    let rest = challenge.strip_prefix("Bearer ").expect("a Bearer challenge");
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while let Some((key, after)) = rest.split_once("=\"") {
        let (value, after) = after.split_once('"').unwrap();
        params.insert(key.trim_start_matches(',').trim().to_owned(), value.to_owned());
        rest = after;
    }
    params
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

/// Assert the response carries `Docker-Content-Digest: digest`.
fn assert_digest_header(resp: &reqwest::Response, digest: &str, what: &str) {
    assert_eq!(
        header(resp, "docker-content-digest"),
        Some(digest),
        "{what}: {:?}",
        resp.headers()
    );
}

/// Two generated repository contents never share a blob: each case gets its own seed.
fn blob(len: usize, seed: u64) -> Vec<u8> {
    random_bytes(len, seed)
}

// ---------------------------------------------------------------------------------------
// Blobs

/// The ways the suite pushes one blob.
#[derive(Clone, Copy, Debug)]
enum Push {
    PostOnly,
    PostPut,
    Chunked { put_last: bool, out_of_order: bool },
    Stream,
}

const PUSHES: [Push; 7] = [
    Push::PostOnly,
    Push::PostPut,
    Push::Chunked {
        put_last: false,
        out_of_order: false,
    },
    Push::Chunked {
        put_last: true,
        out_of_order: false,
    },
    Push::Chunked {
        put_last: false,
        out_of_order: true,
    },
    Push::Chunked {
        put_last: true,
        out_of_order: true,
    },
    Push::Stream,
];

/// Push `bytes` as `digest` into `repo` one of the suite's ways. With `bad`, `digest` does not
/// match the bytes: the completing request must answer 400 `DIGEST_INVALID`. Otherwise the
/// completing request answers 201 with the digest header and a `Location` serving the bytes.
async fn push_blob(t: &Target, repo: &str, bytes: &[u8], digest: &str, how: Push, bad: bool) {
    let uploads = format!("/v2/{repo}/blobs/uploads/");
    let done = match how {
        Push::PostOnly => {
            let url = t.url(&format!("{uploads}?digest={digest}"));
            t.send(
                t.request("POST", &url)
                    .header("content-type", OCTETS)
                    .body(bytes.to_vec()),
            )
            .await
        }
        Push::PostPut => {
            let loc = start_upload(t, &uploads).await;
            let url = with_digest(&t.at(&loc), digest);
            t.send(
                t.request("PUT", &url)
                    .header("content-type", OCTETS)
                    .body(bytes.to_vec()),
            )
            .await
        }
        Push::Chunked { put_last, out_of_order } => {
            push_chunks(t, &uploads, bytes, digest, put_last, out_of_order).await
        }
        Push::Stream => {
            let loc = start_upload(t, &uploads).await;
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(300).map(|c| Ok(c.to_vec())).collect();
            let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
            let resp = t
                .send(
                    t.request("PATCH", &t.at(&loc))
                        .header("content-type", OCTETS)
                        .body(body),
                )
                .await;
            assert_eq!(resp.status(), 202, "streamed PATCH");
            let loc = header(&resp, "location").unwrap().to_owned();
            t.send(
                t.request("PUT", &with_digest(&t.at(&loc), digest))
                    .header("content-length", "0"),
            )
            .await
        }
    };
    if bad {
        assert_eq!(done.status(), 400, "{how:?} with a wrong digest");
        assert_eq!(error_codes(done).await, ["DIGEST_INVALID"], "{how:?}");
    } else {
        assert_created_blob(t, done, bytes, digest, &format!("{how:?}")).await;
    }
}

async fn assert_created_blob(t: &Target, resp: reqwest::Response, bytes: &[u8], digest: &str, what: &str) {
    assert_eq!(resp.status(), 201, "{what}: {:?}", resp.headers());
    assert_digest_header(&resp, digest, what);
    let loc = header(&resp, "location").expect("Location").to_owned();
    let got = t.send(t.request("GET", &t.at(&loc))).await;
    assert_eq!(got.status(), 200, "{what}: GET {loc}");
    assert_eq!(
        got.bytes().await.unwrap().as_ref(),
        bytes,
        "{what}: the Location serves the blob"
    );
}

/// The smallest chunk the server takes (`OCI-Chunk-Min-Length`), at least 1024 bytes.
async fn chunk_min(t: &Target) -> usize {
    let uploads = t.url(&format!("/v2/{REPO1}/blobs/uploads/"));
    let resp = t.send(t.request("POST", &uploads).header("content-length", "0")).await;
    assert_eq!(resp.status(), 202);
    let min = header(&resp, "oci-chunk-min-length").map_or(0, |m| m.parse().unwrap());
    let loc = header(&resp, "location").unwrap().to_owned();
    assert_eq!(t.send(t.request("DELETE", &t.at(&loc))).await.status(), 204);
    min.max(1024)
}

/// POST an upload session; its `Location`.
async fn start_upload(t: &Target, uploads: &str) -> String {
    let resp = t
        .send(t.request("POST", &t.url(uploads)).header("content-length", "0"))
        .await;
    assert_eq!(resp.status(), 202, "POST {uploads}");
    header(&resp, "location").expect("Location").to_owned()
}

fn with_digest(url: &str, digest: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}digest={digest}")
}

/// Three chunks with `Content-Range`, optionally the last in the PUT, optionally preceded
/// each time by a chunk out of order (416, then a GET of the session to learn the offset).
async fn push_chunks(
    t: &Target,
    uploads: &str,
    bytes: &[u8],
    digest: &str,
    put_last: bool,
    out_of_order: bool,
) -> reqwest::Response {
    let resp = t
        .send(t.request("POST", &t.url(uploads)).header("content-length", "0"))
        .await;
    assert_eq!(resp.status(), 202);
    let min: usize = header(&resp, "oci-chunk-min-length").map_or(0, |m| m.parse().unwrap());
    let mut loc = header(&resp, "location").unwrap().to_owned();
    let chunk = (bytes.len() / 3 + 1).max(min).max(1024).min(bytes.len());
    let mut start = 0;
    loop {
        if out_of_order {
            loc = out_of_order_chunk(t, &loc, bytes, start, chunk).await;
        }
        let end = (start + chunk).min(bytes.len());
        let last = end == bytes.len();
        let range = format!("{start}-{}", end - 1);
        let url = t.at(&loc);
        let part = bytes[start..end].to_vec();
        if last && put_last {
            let req = t
                .request("PUT", &with_digest(&url, digest))
                .header("content-range", range);
            return t.send(req.header("content-type", OCTETS).body(part)).await;
        }
        let req = t.request("PATCH", &url).header("content-range", &range);
        let resp = t.send(req.header("content-type", OCTETS).body(part)).await;
        assert_eq!(resp.status(), 202, "PATCH {range}");
        assert_eq!(header(&resp, "range"), Some(format!("0-{}", end - 1).as_str()));
        loc = header(&resp, "location").unwrap().to_owned();
        start = end;
        if last {
            let req = t.request("PUT", &with_digest(&t.at(&loc), digest));
            return t.send(req.header("content-length", "0")).await;
        }
    }
}

/// Send the chunk after the next one (or the first, at the end): 416. Then GET the session:
/// 204 with the offset reached so far. Returns the session's `Location`.
async fn out_of_order_chunk(t: &Target, loc: &str, bytes: &[u8], start: usize, chunk: usize) -> String {
    let bad_start = if start + chunk >= bytes.len() { 0 } else { start + chunk };
    let bad_end = (bad_start + chunk).min(bytes.len());
    let req = t
        .request("PATCH", &t.at(loc))
        .header("content-range", format!("{bad_start}-{}", bad_end - 1))
        .header("content-type", OCTETS)
        .body(bytes[bad_start..bad_end].to_vec());
    let resp = t.send(req).await;
    assert_eq!(
        resp.status(),
        416,
        "a chunk out of order at {bad_start} (offset {start})"
    );
    let status = t.send(t.request("GET", &t.at(loc))).await;
    assert_eq!(status.status(), 204, "upload status");
    let range = header(&status, "range").expect("Range on upload status").to_owned();
    let reached = range.strip_prefix("0-").expect("Range starts with 0-");
    if start > 0 {
        assert_eq!(reached, (start - 1).to_string(), "offset after the refused chunk");
    }
    header(&status, "location").expect("Location").to_owned()
}

async fn head_and_get_blob(t: &Target, repo: &str, bytes: &[u8], digest: &str) {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let head = t.go("HEAD", &path).await;
    assert_eq!(head.status(), 200, "HEAD {path}");
    assert_digest_header(&head, digest, "blob HEAD");
    assert_eq!(header(&head, "content-length"), Some(bytes.len().to_string().as_str()));
    assert!(head.bytes().await.unwrap().is_empty(), "HEAD has no body");
    let get = t.go("GET", &path).await;
    assert_eq!(get.status(), 200, "GET {path}");
    assert_digest_header(&get, digest, "blob GET");
    assert_eq!(header(&get, "content-length"), Some(bytes.len().to_string().as_str()));
    assert_eq!(get.bytes().await.unwrap().as_ref(), bytes);
}

async fn delete_blob(t: &Target, repo: &str, digest: &str) {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let resp = t.go("DELETE", &path).await;
    assert_eq!(resp.status(), 202, "DELETE {path}");
    assert_eq!(t.go("HEAD", &path).await.status(), 404, "deleted at once: {path}");
}

/// POST `?mount=` (and `from=` if given); the response.
async fn mount(t: &Target, repo: &str, digest: &str, from: Option<&str>) -> reqwest::Response {
    let from = from.map(|f| format!("&from={f}")).unwrap_or_default();
    let url = t.url(&format!("/v2/{repo}/blobs/uploads/?mount={digest}{from}"));
    t.send(t.request("POST", &url).header("content-length", "0")).await
}

/// Finish a mount that fell back to an upload (202) with a `PUT` of the bytes.
async fn finish_fallback(t: &Target, resp: reqwest::Response, bytes: &[u8], digest: &str, what: &str) {
    assert_eq!(resp.status(), 202, "{what} falls back to an upload");
    let loc = header(&resp, "location").expect("Location").to_owned();
    let req = t.request("PUT", &with_digest(&t.at(&loc), digest)).body(bytes.to_vec());
    let done = t.send(req.header("content-type", OCTETS)).await;
    assert_created_blob(t, done, bytes, digest, what).await;
}

async fn blob_pushes_answer_with_digest_headers(mode: Mode, algo: Algo) {
    let t = Target::start(mode, "");
    let seed = match algo {
        Algo::Sha256 => 1000,
        Algo::Sha512 => 2000,
    };
    // As the suite does: chunked blobs span three chunks of at least 1024 bytes, or of the
    // server's OCI-Chunk-Min-Length (object storage's part size), whichever is larger.
    let chunked_len = 3 * chunk_min(&t).await - 5;
    for (i, how) in PUSHES.into_iter().enumerate() {
        let len = if matches!(how, Push::Chunked { .. }) {
            chunked_len
        } else {
            512
        };
        let bytes = blob(len, seed + i as u64);
        let digest = algo.digest(&bytes);
        push_blob(&t, REPO1, &bytes, &digest, how, false).await;
        head_and_get_blob(&t, REPO1, &bytes, &digest).await;
        delete_blob(&t, REPO1, &digest).await;
    }
    // Well-known contents: the empty blob and the empty JSON object.
    for bytes in [&b""[..], b"{}"] {
        let digest = algo.digest(bytes);
        push_blob(&t, REPO1, bytes, &digest, Push::PostPut, false).await;
        head_and_get_blob(&t, REPO1, bytes, &digest).await;
        delete_blob(&t, REPO1, &digest).await;
    }
    // A digest that does not match the bytes, on every path.
    for (i, how) in PUSHES.into_iter().enumerate() {
        let mut bytes = blob(chunked_len, seed + 100 + i as u64);
        let digest = algo.digest(&bytes);
        bytes.extend_from_slice(b"oh no");
        push_blob(&t, REPO1, &bytes, &digest, how, true).await;
        assert_eq!(t.go("HEAD", &format!("/v2/{REPO1}/blobs/{digest}")).await.status(), 404);
    }
    mounts_answer_with_digest_headers(&t, algo, seed + 200).await;
}

async fn mounts_answer_with_digest_headers(t: &Target, algo: Algo, seed: u64) {
    // From a repository that holds the blob: 201, mounted.
    let bytes = blob(512, seed);
    let digest = algo.digest(&bytes);
    push_blob(t, REPO2, &bytes, &digest, Push::PostPut, false).await;
    let resp = mount(t, REPO1, &digest, Some(REPO2)).await;
    assert_created_blob(t, resp, &bytes, &digest, "mount from repo2").await;
    head_and_get_blob(t, REPO1, &bytes, &digest).await;
    delete_blob(t, REPO1, &digest).await;
    delete_blob(t, REPO2, &digest).await;

    // From a repository that lacks it: an upload session instead.
    let bytes = blob(512, seed + 1);
    let digest = algo.digest(&bytes);
    let resp = mount(t, REPO1, &digest, Some(REPO2)).await;
    finish_fallback(t, resp, &bytes, &digest, "mount of a blob repo2 lacks").await;
    delete_blob(t, REPO1, &digest).await;

    // Without `from`: mounted when auth is off; an upload when it is on (see the module).
    let bytes = blob(512, seed + 2);
    let digest = algo.digest(&bytes);
    push_blob(t, REPO2, &bytes, &digest, Push::PostPut, false).await;
    let resp = mount(t, REPO1, &digest, None).await;
    if t.auth {
        finish_fallback(t, resp, &bytes, &digest, "anonymous mount with auth on").await;
    } else {
        assert_created_blob(t, resp, &bytes, &digest, "anonymous mount").await;
    }
    head_and_get_blob(t, REPO1, &bytes, &digest).await;
    delete_blob(t, REPO1, &digest).await;
    delete_blob(t, REPO2, &digest).await;
}

async fn an_upload_can_be_cancelled(mode: Mode) {
    let t = Target::start(mode, "");
    let bytes = blob(512, 3000);
    let digest = sha256(&bytes);
    // Nothing yet: GET of the blob is 404.
    assert_eq!(t.go("GET", &format!("/v2/{REPO1}/blobs/{digest}")).await.status(), 404);
    for sent in [0, 1] {
        let loc = start_upload(&t, &format!("/v2/{REPO1}/blobs/uploads/")).await;
        if sent == 1 {
            let req = t.request("PATCH", &t.at(&loc)).header("content-range", "0-99");
            let resp = t
                .send(req.header("content-type", OCTETS).body(bytes[..100].to_vec()))
                .await;
            assert_eq!(resp.status(), 202);
        }
        let resp = t
            .send(t.request("DELETE", &t.at(&loc)).header("content-length", "0"))
            .await;
        assert_eq!(resp.status(), 204, "cancel after {sent} chunks");
        let gone = t.send(t.request("GET", &t.at(&loc))).await;
        assert_eq!(gone.status(), 404, "a cancelled session is gone");
        assert_eq!(error_codes(gone).await, ["BLOB_UPLOAD_UNKNOWN"]);
        let put = t.request("PUT", &with_digest(&t.at(&loc), &digest)).body(bytes.clone());
        let put = t.send(put.header("content-type", OCTETS)).await;
        assert_eq!(put.status(), 404, "a cancelled session cannot complete");
        let again = t.send(t.request("DELETE", &t.at(&loc))).await;
        assert_eq!(again.status(), 404, "cancel twice");
    }
    assert_eq!(t.go("GET", &format!("/v2/{REPO1}/blobs/{digest}")).await.status(), 404);
}

// ---------------------------------------------------------------------------------------
// Manifests

/// Generated content, in the order it must be pushed.
#[derive(Default)]
struct Content {
    blobs: Vec<Vec<u8>>,
    /// (bytes, media type), children before parents.
    manifests: Vec<(Vec<u8>, &'static str)>,
    /// tag -> index into `manifests`.
    tags: Vec<(String, usize)>,
}

impl Content {
    fn blob(&mut self, algo: Algo, bytes: Vec<u8>, media_type: &str) -> Value {
        let d = json!({"mediaType": media_type, "digest": algo.digest(&bytes), "size": bytes.len()});
        self.blobs.push(bytes);
        d
    }

    /// An image with `layers` layers; its descriptor.
    fn image(&mut self, algo: Algo, seed: u64, layers: usize, platform: Option<(&str, &str)>) -> Value {
        let config = json!({"architecture": platform.map_or("amd64", |p| p.1), "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []}, "seed": seed});
        let config = self.blob(
            algo,
            serde_json::to_vec(&config).unwrap(),
            "application/vnd.oci.image.config.v1+json",
        );
        let layers: Vec<Value> = (0..layers)
            .map(|i| {
                let bytes = blob(700, seed * 10 + i as u64);
                self.blob(algo, bytes, "application/vnd.oci.image.layer.v1.tar")
            })
            .collect();
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers});
        let mut desc = self.manifest(algo, &manifest, OCI_MANIFEST);
        if let Some((os, arch)) = platform {
            desc["platform"] = json!({"os": os, "architecture": arch});
        }
        desc
    }

    fn manifest(&mut self, algo: Algo, manifest: &Value, media_type: &'static str) -> Value {
        let bytes = serde_json::to_vec(manifest).unwrap();
        let desc = json!({"mediaType": media_type, "digest": algo.digest(&bytes), "size": bytes.len()});
        self.manifests.push((bytes, media_type));
        desc
    }

    /// An index of two platform images; its descriptor.
    fn index(&mut self, algo: Algo, seed: u64) -> Value {
        let children = vec![
            self.image(algo, seed, 2, Some(("linux", "amd64"))),
            self.image(algo, seed + 1, 2, Some(("linux", "arm64"))),
        ];
        self.index_of(algo, &children)
    }

    fn index_of(&mut self, algo: Algo, children: &[Value]) -> Value {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children});
        self.manifest(algo, &index, OCI_INDEX)
    }

    fn digest_of(&self, algo: Algo, i: usize) -> String {
        algo.digest(&self.manifests[i].0)
    }

    fn last(&self) -> usize {
        self.manifests.len() - 1
    }
}

async fn push_all_blobs(t: &Target, repo: &str, algo: Algo, content: &Content) {
    for bytes in &content.blobs {
        let digest = algo.digest(bytes);
        push_blob(t, repo, bytes, &digest, Push::PostPut, false).await;
    }
}

/// PUT manifest `i` of `content` under `reference` (with `?tag=` for each of `tags`): 201 with
/// `Location` serving it, the digest header, and one `OCI-Tag` per tag.
async fn put_manifest(t: &Target, content: &Content, algo: Algo, i: usize, reference: &str, tags: &[String]) {
    let (bytes, media_type) = &content.manifests[i];
    let digest = algo.digest(bytes);
    let query: Vec<String> = tags.iter().map(|tag| format!("tag={tag}")).collect();
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    let url = t.url(&format!("/v2/{REPO1}/manifests/{reference}{query}"));
    let req = t.request("PUT", &url).header("content-type", *media_type);
    let resp = t.send(req.body(bytes.clone())).await;
    assert_eq!(resp.status(), 201, "PUT {url}");
    assert_digest_header(&resp, &digest, "manifest PUT");
    let echoed: Vec<String> = resp
        .headers()
        .get_all("oci-tag")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(',').map(|s| s.trim().to_owned()))
        .collect();
    assert_eq!(&echoed, tags, "OCI-Tag echoes each tag parameter");
    let loc = header(&resp, "location").expect("Location").to_owned();
    let got = t.send(accepting(t.request("GET", &t.at(&loc)))).await;
    assert_manifest(got, bytes, media_type, &digest, "the Location of a PUT").await;
}

fn accepting(req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    req.header("accept", OCI_INDEX).header("accept", OCI_MANIFEST)
}

async fn assert_manifest(resp: reqwest::Response, bytes: &[u8], media_type: &str, digest: &str, what: &str) {
    assert_eq!(resp.status(), 200, "{what}");
    assert_digest_header(&resp, digest, what);
    assert_eq!(header(&resp, "content-type"), Some(media_type), "{what}");
    assert_eq!(
        header(&resp, "content-length"),
        Some(bytes.len().to_string().as_str()),
        "{what}"
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), bytes, "{what}");
}

/// GET and HEAD each manifest by digest and each tag: headers and bytes.
async fn pull_manifests(t: &Target, content: &Content, algo: Algo) {
    let mut refs: Vec<(String, usize)> = (0..content.manifests.len())
        .map(|i| (content.digest_of(algo, i), i))
        .collect();
    refs.extend(content.tags.iter().cloned());
    for (reference, i) in refs {
        let (bytes, media_type) = &content.manifests[i];
        let digest = content.digest_of(algo, i);
        let url = t.url(&format!("/v2/{REPO1}/manifests/{reference}"));
        let get = t.send(accepting(t.request("GET", &url))).await;
        assert_manifest(get, bytes, media_type, &digest, &format!("GET {reference}")).await;
        let head = t.send(accepting(t.request("HEAD", &url))).await;
        assert_eq!(head.status(), 200, "HEAD {reference}");
        assert_digest_header(&head, &digest, "manifest HEAD");
        assert_eq!(header(&head, "content-type"), Some(*media_type));
        assert_eq!(header(&head, "content-length"), Some(bytes.len().to_string().as_str()));
        assert!(head.bytes().await.unwrap().is_empty());
    }
}

async fn list_has_tags(t: &Target, content: &Content) {
    let resp = t.go("GET", &format!("/v2/{REPO1}/tags/list")).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let listed: Vec<&str> = v["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for (tag, _) in &content.tags {
        assert!(listed.contains(&tag.as_str()), "{tag} in {listed:?}");
    }
}

/// Delete every tag, then every manifest parents first: 202 each, gone at once.
async fn delete_content(t: &Target, content: &Content, algo: Algo) {
    for (tag, _) in &content.tags {
        let path = format!("/v2/{REPO1}/manifests/{tag}");
        assert_eq!(t.go("DELETE", &path).await.status(), 202, "DELETE {path}");
        assert_eq!(t.go("HEAD", &path).await.status(), 404, "tag deleted at once");
    }
    for i in (0..content.manifests.len()).rev() {
        let path = format!("/v2/{REPO1}/manifests/{}", content.digest_of(algo, i));
        assert_eq!(t.go("DELETE", &path).await.status(), 202, "DELETE {path}");
        assert_eq!(t.go("HEAD", &path).await.status(), 404, "manifest deleted at once");
    }
}

async fn manifests_answer_with_digest_headers(mode: Mode, algo: Algo) {
    let t = Target::start(mode, "");
    let seed = match algo {
        Algo::Sha256 => 4000,
        Algo::Sha512 => 5000,
    };
    let mut content = Content::default();
    content.image(algo, seed, 2, None);
    content.index(algo, seed + 10);
    push_all_blobs(&t, REPO1, algo, &content).await;
    for i in 0..content.manifests.len() {
        let digest = content.digest_of(algo, i);
        put_manifest(&t, &content, algo, i, &digest, &[]).await;
    }
    // sha512 manifests are tagged with the tag parameter (a PUT by tag names no digest, so it
    // is always sha256); sha256 ones by a PUT by tag.
    for (i, tag) in [(0, "image"), (content.last(), "index")] {
        match algo {
            Algo::Sha256 => put_manifest(&t, &content, algo, i, tag, &[]).await,
            Algo::Sha512 => {
                let digest = content.digest_of(algo, i);
                put_manifest(&t, &content, algo, i, &digest, &[tag.to_owned()]).await;
            }
        }
        content.tags.push((tag.to_owned(), i));
    }
    pull_manifests(&t, &content, algo).await;
    list_has_tags(&t, &content).await;
    delete_content(&t, &content, algo).await;
}

async fn the_tag_parameter_tags_in_the_same_put(mode: Mode, algo: Algo) {
    let t = Target::start(mode, "");
    let (name, seed) = match algo {
        Algo::Sha256 => ("tag-param-sha256", 6000),
        Algo::Sha512 => ("tag-param-sha512", 7000),
    };
    let mut content = Content::default();
    content.index(algo, seed);
    for i in 0..content.manifests.len() {
        content.tags.push((format!("{name}-{i}"), i));
    }
    // The top-level index carries two tags.
    content.tags.push((name.to_owned(), content.last()));
    push_all_blobs(&t, REPO1, algo, &content).await;
    for i in 0..content.manifests.len() {
        let tags: Vec<String> = content
            .tags
            .iter()
            .filter(|(_, m)| *m == i)
            .map(|(tag, _)| tag.clone())
            .collect();
        put_manifest(&t, &content, algo, i, &content.digest_of(algo, i), &tags).await;
    }
    list_has_tags(&t, &content).await;
    pull_manifests(&t, &content, algo).await;
    delete_content(&t, &content, algo).await;
}

async fn sparse_manifests_are_accepted_pulled_and_deleted(mode: Mode) {
    let t = Target::start(mode, "validation:\n  sparse: true\n");
    let algo = Algo::Sha256;
    // An image whose first layer is never pushed.
    let mut content = Content::default();
    content.image(algo, 8000, 2, None);
    let missing = content.blobs.remove(1);
    content.tags.push(("sparse-image".to_owned(), 0));
    // An index of a pushed image and a child that does not exist.
    let image = content.image(algo, 8100, 1, Some(("linux", "amd64")));
    let absent = json!({"mediaType": OCI_MANIFEST, "digest": sha256(&blob(1024, 8200)), "size": 1024,
        "platform": {"os": "linux", "architecture": "arm64"}});
    content.index_of(algo, &[image, absent]);
    content.tags.push(("sparse-index".to_owned(), content.last()));
    push_all_blobs(&t, REPO1, algo, &content).await;
    for i in 0..content.manifests.len() {
        put_manifest(&t, &content, algo, i, &content.digest_of(algo, i), &[]).await;
    }
    for (tag, i) in content.tags.clone() {
        put_manifest(&t, &content, algo, i, &tag, &[]).await;
    }
    pull_manifests(&t, &content, algo).await;
    for bytes in &content.blobs {
        head_and_get_blob(&t, REPO1, bytes, &algo.digest(bytes)).await;
    }
    let absent_layer = format!("/v2/{REPO1}/blobs/{}", sha256(&missing));
    assert_eq!(t.go("GET", &absent_layer).await.status(), 404, "the layer never pushed");
    list_has_tags(&t, &content).await;
    delete_content(&t, &content, algo).await;
    for bytes in &content.blobs {
        delete_blob(&t, REPO1, &algo.digest(bytes)).await;
    }
}

/// One test per mode for each case.
macro_rules! in_both_modes {
    ($($name:ident => $case:expr;)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test]
            async fn plain_http() {
                let case = $case;
                case(Mode::Plain).await;
            }
            #[tokio::test]
            async fn tls_with_token_auth() {
                let case = $case;
                case(Mode::TlsAuth).await;
            }
        }
    )*};
}

in_both_modes! {
    blob_digest_headers_sha256 => |m| blob_pushes_answer_with_digest_headers(m, Algo::Sha256);
    blob_digest_headers_sha512 => |m| blob_pushes_answer_with_digest_headers(m, Algo::Sha512);
    upload_cancel => an_upload_can_be_cancelled;
    manifest_digest_headers_sha256 => |m| manifests_answer_with_digest_headers(m, Algo::Sha256);
    manifest_digest_headers_sha512 => |m| manifests_answer_with_digest_headers(m, Algo::Sha512);
    tag_parameter_sha256 => |m| the_tag_parameter_tags_in_the_same_put(m, Algo::Sha256);
    tag_parameter_sha512 => |m| the_tag_parameter_tags_in_the_same_put(m, Algo::Sha512);
    sparse => sparse_manifests_are_accepted_pulled_and_deleted;
}
