//! Shared by the `api_manifests`, `api_listing` and `api_errors` tests: manifest builders (OCI
//! and Docker images, indexes, artifacts with the empty config), a manifest `PUT` that leaves the
//! `Content-Type` to the caller, and assertions on headers and on OCI error bodies.

use serde_json::{Value, json};

use crate::harness::{Berth, client, push_blob};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The empty descriptor's media type (image-spec, "Guidance for an Empty Descriptor").
pub const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The digest of `{}`, the empty descriptor's content.
pub const EMPTY_DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// A descriptor.
pub fn desc(media_type: &str, digest: &str, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// Push `bytes` as a blob of `repo`; its descriptor with `media_type`.
pub async fn blob_desc(berth: &Berth, repo: &str, media_type: &str, bytes: &[u8]) -> Value {
    let digest = push_blob(berth, repo, bytes).await;
    desc(media_type, &digest, bytes.len())
}

/// Push the empty config `{}` to `repo`; its descriptor.
pub async fn empty_config(berth: &Berth, repo: &str) -> Value {
    let d = blob_desc(berth, repo, EMPTY_TYPE, b"{}").await;
    assert_eq!(d["digest"], EMPTY_DIGEST);
    d
}

/// An image manifest of `media_type` (OCI or Docker schema2) whose config and `layers` are
/// pushed to `repo` first; the manifest bytes (not pushed).
pub async fn image(berth: &Berth, repo: &str, media_type: &str, layers: &[&[u8]]) -> Vec<u8> {
    let (config_type, layer_type) = if media_type == DOCKER_MANIFEST {
        (DOCKER_CONFIG, DOCKER_LAYER)
    } else {
        (OCI_CONFIG, OCI_LAYER)
    };
    let config = format!(r#"{{"architecture":"amd64","os":"linux","layers":{}}}"#, layers.len());
    let config = blob_desc(berth, repo, config_type, config.as_bytes()).await;
    let mut descs = Vec::new();
    for layer in layers {
        descs.push(blob_desc(berth, repo, layer_type, layer).await);
    }
    to_bytes(&json!({"schemaVersion": 2, "mediaType": media_type, "config": config, "layers": descs}))
}

/// An index (OCI index or Docker manifest list, by `media_type`) of `children`, each a
/// (media type, manifest bytes) pair.
pub fn index(media_type: &str, children: &[(&str, &[u8])]) -> Vec<u8> {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(mt, body)| {
            let mut d = desc(mt, &crate::harness::sha256(body), body.len());
            d["platform"] = json!({"architecture": "amd64", "os": "linux"});
            d
        })
        .collect();
    to_bytes(&json!({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}))
}

pub fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// `PUT /v2/<repo>/manifests/<reference>` with `content_type` (none at all when `None`).
pub async fn put_manifest(
    berth: &Berth,
    repo: &str,
    reference: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> reqwest::Response {
    let mut req = client()
        .put(berth.url(&format!("/v2/{repo}/manifests/{reference}")))
        .body(body.to_vec());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.send().await.unwrap()
}

pub use crate::harness::header;

/// The message Berth gives each OCI error code (the spec's descriptions).
pub fn message(code: &str) -> &'static str {
    match code {
        "BLOB_UNKNOWN" => "blob unknown to registry",
        "BLOB_UPLOAD_INVALID" => "blob upload invalid",
        "BLOB_UPLOAD_UNKNOWN" => "blob upload unknown to registry",
        "DIGEST_INVALID" => "provided digest did not match uploaded content",
        "MANIFEST_BLOB_UNKNOWN" => "manifest references a blob unknown to registry",
        "MANIFEST_INVALID" => "manifest invalid",
        "MANIFEST_UNKNOWN" => "manifest unknown to registry",
        "NAME_INVALID" => "invalid repository name",
        "NAME_UNKNOWN" => "repository name not known to registry",
        "SIZE_INVALID" => "provided length did not match content length",
        "UNSUPPORTED" => "the operation is unsupported",
        "PAGINATION_NUMBER_INVALID" => "invalid number of results requested",
        "NOT_FOUND" => "not found",
        "UNAUTHORIZED" => "authentication required",
        "TOOMANYREQUESTS" => "too many requests",
        other => panic!("no message known for {other}"),
    }
}

/// The whole OCI error body of one error.
pub fn error_json(code: &str, detail: &str) -> Value {
    json!({"errors": [{"code": code, "message": message(code), "detail": detail}]})
}

/// The response is `status` with `Content-Type: application/json` and exactly the body of one
/// `code` error with `detail`.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str, detail: &str) {
    let body = error_body(resp, status).await;
    assert_eq!(body, error_json(code, detail));
}

/// As `assert_error` without pinning the detail (which must still be a non-empty string).
pub async fn assert_error_code(resp: reqwest::Response, status: u16, code: &str) {
    let body = error_body(resp, status).await;
    let detail = body["errors"][0]["detail"].as_str().unwrap_or_default().to_owned();
    assert!(!detail.is_empty(), "{code} without a detail: {body}");
    assert_eq!(body, error_json(code, &detail));
}

/// Check `status` and the JSON content type; the parsed body.
async fn error_body(resp: reqwest::Response, status: u16) -> Value {
    let (url, got) = (resp.url().clone(), resp.status());
    let content_type = resp.headers().get("content-type").cloned();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{url}: {text}");
    assert_eq!(
        content_type.as_ref().map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{url}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: body {text:?} is not JSON: {e}"))
}
