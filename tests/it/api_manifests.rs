//! The manifest endpoints, on their success and failure paths: every accepted type stored
//! verbatim under a tag and a digest (sha256 and sha512), media types, reference checks,
//! deletion by digest and by tag, and referrers with their filter.

use serde_json::{Value, json};

use crate::harness::{Berth, client, error_codes, get_json, push_blob, random_bytes, sha256, sha512};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// A descriptor of `bytes` with `media_type`.
fn desc(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

/// Push a config and one layer into `repo`; their descriptors (OCI media types).
async fn blobs(berth: &Berth, repo: &str, seed: u64) -> (Value, Value) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let layer = random_bytes(3000, seed);
    push_blob(berth, repo, &config).await;
    push_blob(berth, repo, &layer).await;
    (
        desc("application/vnd.oci.image.config.v1+json", &config),
        desc("application/vnd.oci.image.layer.v1.tar+gzip", &layer),
    )
}

async fn put(berth: &Berth, repo: &str, reference: &str, content_type: Option<&str>, body: &[u8]) -> reqwest::Response {
    let mut req = client().put(berth.url(&format!("/v2/{repo}/manifests/{reference}")));
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.body(body.to_vec()).send().await.unwrap()
}

/// PUT, expect 201 with the spec's headers; the digest.
async fn put_ok(berth: &Berth, repo: &str, reference: &str, content_type: Option<&str>, body: &[u8]) -> String {
    let resp = put(berth, repo, reference, content_type, body).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    assert_eq!(status, 201, "{}", resp.text().await.unwrap());
    let digest = headers["docker-content-digest"].to_str().unwrap().to_owned();
    assert_eq!(headers["location"], format!("/v2/{repo}/manifests/{digest}").as_str());
    digest
}

/// GET and HEAD `reference`: both answer the same headers; GET the exact bytes.
async fn assert_served(berth: &Berth, repo: &str, reference: &str, media_type: &str, body: &[u8], digest: &str) {
    let url = berth.url(&format!("/v2/{repo}/manifests/{reference}"));
    let get = client().get(&url).send().await.unwrap();
    assert_eq!(get.status(), 200, "GET {reference}");
    assert_eq!(get.headers()["content-type"], media_type);
    assert_eq!(get.headers()["docker-content-digest"], digest);
    assert_eq!(get.headers()["content-length"], body.len().to_string().as_str());
    assert_eq!(get.bytes().await.unwrap(), body, "bytes stored verbatim");
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], media_type);
    assert_eq!(head.headers()["docker-content-digest"], digest);
    assert_eq!(head.headers()["content-length"], body.len().to_string().as_str());
    assert!(head.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn every_accepted_type_is_stored_verbatim_under_its_tag_and_digest() {
    let berth = Berth::start();
    let repo = "types/all";
    let (config, layer) = blobs(&berth, repo, 1).await;
    // An OCI image manifest with odd whitespace and key order: stored as sent.
    let oci = format!(
        "{{\n  \"layers\": [ {layer} ],\n\t\"config\":{config}, \"mediaType\": \"{OCI_MANIFEST}\",  \"schemaVersion\": 2 }}\n"
    )
    .into_bytes();
    // A Docker schema2 manifest of the same blobs.
    let docker = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config["digest"], "size": config["size"]},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer["digest"], "size": layer["size"]}],
    }))
    .unwrap();
    // An artifact: artifactType, the empty config, no layers.
    push_blob(&berth, repo, b"{}").await;
    let artifact = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sbom",
        "config": desc(EMPTY, b"{}"), "layers": [],
    }))
    .unwrap();
    let mut pushed = Vec::new();
    for (tag, media_type, body) in [
        ("oci", OCI_MANIFEST, &oci),
        ("docker", DOCKER_MANIFEST, &docker),
        ("artifact", OCI_MANIFEST, &artifact),
    ] {
        let digest = put_ok(&berth, repo, tag, Some(media_type), body).await;
        assert_eq!(digest, sha256(body));
        assert_served(&berth, repo, tag, media_type, body, &digest).await;
        assert_served(&berth, repo, &digest, media_type, body, &digest).await;
        pushed.push((digest, body.len()));
    }
    // An OCI index and a Docker manifest list of them.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": pushed[0].0, "size": pushed[0].1,
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": pushed[1].0, "size": pushed[1].1,
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    for (tag, media_type, body) in [("index", OCI_INDEX, &index), ("list", DOCKER_LIST, &list)] {
        let digest = put_ok(&berth, repo, tag, Some(media_type), body).await;
        assert_served(&berth, repo, tag, media_type, body, &digest).await;
    }
    // By digest alone: no tag appears.
    let (config2, layer2) = blobs(&berth, repo, 2).await;
    let untagged = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config2, "layers": [layer2]}),
    )
    .unwrap();
    let digest = put_ok(&berth, repo, &sha256(&untagged), Some(OCI_MANIFEST), &untagged).await;
    assert_served(&berth, repo, &digest, OCI_MANIFEST, &untagged, &digest).await;
    let tags: Value = get_json(berth.url(&format!("/v2/{repo}/tags/list"))).await;
    assert_eq!(tags["tags"], json!(["artifact", "docker", "index", "list", "oci"]));
}

#[tokio::test]
async fn the_media_type_comes_from_content_type_or_from_the_body() {
    let berth = Berth::start();
    let (config, layer) = blobs(&berth, "mt/repo", 3).await;
    let body = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}),
    )
    .unwrap();
    // No Content-Type: the body's mediaType.
    let digest = put_ok(&berth, "mt/repo", "a", None, &body).await;
    assert_served(&berth, "mt/repo", "a", OCI_MANIFEST, &body, &digest).await;
    // A Content-Type that contradicts the body's mediaType.
    let resp = put(&berth, "mt/repo", "b", Some(DOCKER_MANIFEST), &body).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["MANIFEST_INVALID"]);
}

#[tokio::test]
async fn sha512_digests_name_manifests() {
    let berth = Berth::start();
    let (config, layer) = blobs(&berth, "five/twelve", 4).await;
    let body = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}),
    )
    .unwrap();
    let digest = sha512(&body);
    let got = put_ok(&berth, "five/twelve", &digest, Some(OCI_MANIFEST), &body).await;
    assert_eq!(got, digest);
    assert_served(&berth, "five/twelve", &digest, OCI_MANIFEST, &body, &digest).await;
    // A reference digest that is not the body's.
    let resp = put(
        &berth,
        "five/twelve",
        &sha512(b"something else"),
        Some(OCI_MANIFEST),
        &body,
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["DIGEST_INVALID"]);
    let resp = put(
        &berth,
        "five/twelve",
        &sha256(b"something else"),
        Some(OCI_MANIFEST),
        &body,
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["DIGEST_INVALID"]);
}

#[tokio::test]
async fn references_must_exist_in_the_repository_except_foreign_layers() {
    let berth = Berth::start();
    let (config, layer) = blobs(&berth, "refs/here", 5).await;
    let missing = desc("application/vnd.oci.image.layer.v1.tar", b"never pushed");
    let image = |layers: Vec<Value>| {
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}))
            .unwrap()
    };
    let resp = put(
        &berth,
        "refs/here",
        "x",
        Some(OCI_MANIFEST),
        &image(vec![layer.clone(), missing]),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["MANIFEST_BLOB_UNKNOWN"]);
    // A blob of another repository does not count.
    let (_, elsewhere) = blobs(&berth, "refs/elsewhere", 6).await;
    let resp = put(&berth, "refs/here", "x", Some(OCI_MANIFEST), &image(vec![elsewhere])).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["MANIFEST_BLOB_UNKNOWN"]);
    // A foreign layer (with urls) need not exist.
    let foreign = json!({"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "digest": sha256(b"windows base layer"), "size": 18, "urls": ["https://example.com/layer"]});
    put_ok(
        &berth,
        "refs/here",
        "foreign",
        Some(OCI_MANIFEST),
        &image(vec![layer, foreign]),
    )
    .await;
    // An index whose child manifest is not in the repository.
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [desc(OCI_MANIFEST, b"not a pushed manifest")]}))
    .unwrap();
    let resp = put(&berth, "refs/here", "idx", Some(OCI_INDEX), &index).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["MANIFEST_UNKNOWN"]);
}

#[tokio::test]
async fn invalid_manifests_are_400_manifest_invalid_and_oversized_413() {
    let berth = Berth::builder().env("BERTH_LIMITS_MANIFEST_MAX_SIZE", "64KiB").start();
    let (config, _) = blobs(&berth, "bad/m", 7).await;
    let cases: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"[]".to_vec(),
        serde_json::to_vec(&json!({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []})).unwrap(),
        serde_json::to_vec(&json!({"schemaVersion": 3, "mediaType": OCI_MANIFEST, "config": config})).unwrap(),
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []})).unwrap(),
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {"mediaType": "x", "digest": "sha256:nothex", "size": 1}})).unwrap(),
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX})).unwrap(),
    ];
    for body in cases {
        let resp = put(&berth, "bad/m", "t", Some(OCI_MANIFEST), &body).await;
        assert_eq!(resp.status(), 400, "{}", String::from_utf8_lossy(&body));
        assert_eq!(
            error_codes(resp).await,
            ["MANIFEST_INVALID"],
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    let resp = put(&berth, "bad/m", "t", Some(OCI_MANIFEST), &vec![b' '; 65 * 1024]).await;
    assert_eq!(resp.status(), 413);
    assert_eq!(error_codes(resp).await, ["MANIFEST_INVALID"]);
    let resp = client().get(berth.url("/v2/bad/m/manifests/t")).send().await.unwrap();
    assert_eq!(resp.status(), 404, "nothing was stored");
}

#[tokio::test]
async fn unknown_manifests_are_404() {
    let berth = Berth::start();
    let (config, layer) = blobs(&berth, "known/repo", 8).await;
    let body = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}),
    )
    .unwrap();
    put_ok(&berth, "known/repo", "v1", Some(OCI_MANIFEST), &body).await;
    for path in [
        "/v2/known/repo/manifests/v2".to_owned(),
        format!("/v2/known/repo/manifests/{}", sha256(b"nothing")),
        "/v2/unknown/repo/manifests/v1".to_owned(),
    ] {
        let resp = client().get(berth.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert_eq!(error_codes(resp).await, ["MANIFEST_UNKNOWN"], "{path}");
        let head = client().head(berth.url(&path)).send().await.unwrap();
        assert_eq!(head.status(), 404, "HEAD {path}");
    }
}

#[tokio::test]
async fn delete_by_digest_removes_tags_and_delete_by_tag_keeps_the_manifest() {
    let berth = Berth::start();
    let repo = "del/repo";
    let (config, layer) = blobs(&berth, repo, 9).await;
    let one = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}),
    )
    .unwrap();
    let two =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []}))
            .unwrap();
    let d1 = put_ok(&berth, repo, "a", Some(OCI_MANIFEST), &one).await;
    put_ok(&berth, repo, "b", Some(OCI_MANIFEST), &one).await;
    let d2 = put_ok(&berth, repo, "c", Some(OCI_MANIFEST), &two).await;
    let tags = || async {
        let v: Value = get_json(berth.url(&format!("/v2/{repo}/tags/list"))).await;
        v["tags"].clone()
    };
    let del = |reference: String| {
        client()
            .delete(berth.url(&format!("/v2/{repo}/manifests/{reference}")))
            .send()
    };
    // By digest: the manifest and both its tags go.
    let resp = del(d1.clone()).await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(tags().await, json!(["c"]));
    let resp = client()
        .get(berth.url(&format!("/v2/{repo}/manifests/{d1}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // By tag: the tag goes, the manifest stays.
    assert_eq!(del("c".into()).await.unwrap().status(), 202);
    assert_eq!(tags().await, json!([]));
    let resp = client()
        .get(berth.url(&format!("/v2/{repo}/manifests/{d2}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Unknown ones.
    let resp = del(d1).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(error_codes(resp).await, ["MANIFEST_UNKNOWN"]);
    let resp = del("nope".into()).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(error_codes(resp).await, ["MANIFEST_UNKNOWN"]);
}

async fn referrers(berth: &Berth, repo: &str, subject: &str, query: &str) -> reqwest::Response {
    client()
        .get(berth.url(&format!("/v2/{repo}/referrers/{subject}{query}")))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn referrers_list_manifests_by_subject_with_an_artifact_type_filter() {
    let berth = Berth::start();
    let repo = "ref/app";
    let (config, layer) = blobs(&berth, repo, 10).await;
    let image = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}),
    )
    .unwrap();
    let subject = put_ok(&berth, repo, "v1", Some(OCI_MANIFEST), &image).await;
    push_blob(&berth, repo, b"{}").await;
    let artifact = |kind: &str, note: &str| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": kind,
            "config": desc(EMPTY, b"{}"), "layers": [],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": image.len()},
            "annotations": {"note": note},
        }))
        .unwrap()
    };
    let sbom = artifact("application/vnd.example.sbom", "sbom");
    let sig = artifact("application/vnd.example.signature", "sig");
    let mut digests = Vec::new();
    for body in [&sbom, &sig] {
        let resp = put(&berth, repo, &sha256(body), Some(OCI_MANIFEST), body).await;
        assert_eq!(resp.status(), 201);
        assert_eq!(resp.headers()["oci-subject"], subject.as_str());
        digests.push(sha256(body));
    }
    let resp = referrers(&berth, repo, &subject, "").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], OCI_INDEX);
    assert!(!resp.headers().contains_key("oci-filters-applied"));
    let index: Value = resp.json().await.unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], OCI_INDEX);
    let mut listed = index["manifests"].as_array().unwrap().clone();
    listed.sort_by_key(|d| d["annotations"]["note"].as_str().unwrap().to_owned());
    assert_eq!(
        listed,
        vec![
            json!({"mediaType": OCI_MANIFEST, "digest": digests[0], "size": sbom.len(),
                   "artifactType": "application/vnd.example.sbom", "annotations": {"note": "sbom"}}),
            json!({"mediaType": OCI_MANIFEST, "digest": digests[1], "size": sig.len(),
                   "artifactType": "application/vnd.example.signature", "annotations": {"note": "sig"}}),
        ]
    );
    // Filtered.
    let resp = referrers(
        &berth,
        repo,
        &subject,
        "?artifactType=application/vnd.example.signature",
    )
    .await;
    assert_eq!(resp.headers()["oci-filters-applied"], "artifactType");
    let index: Value = resp.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(index["manifests"][0]["digest"], digests[1].as_str());
    // Nothing refers to it: an empty index, 200.
    let resp = referrers(&berth, repo, &sha256(b"lonely"), "").await;
    assert_eq!(resp.status(), 200);
    let index: Value = resp.json().await.unwrap();
    assert_eq!(index["manifests"], json!([]));
    // A referrer may arrive before its subject.
    let early = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sbom",
        "config": desc(EMPTY, b"{}"), "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": sha256(b"future image"), "size": 12},
    }))
    .unwrap();
    let resp = put(&berth, repo, "early", Some(OCI_MANIFEST), &early).await;
    assert_eq!(resp.status(), 201);
    let index: Value = referrers(&berth, repo, &sha256(b"future image"), "")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(index["manifests"][0]["digest"], sha256(&early).as_str());
    // Deleting a referrer removes it from the list.
    let resp = client()
        .delete(berth.url(&format!("/v2/{repo}/manifests/{}", digests[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let index: Value = referrers(&berth, repo, &subject, "").await.json().await.unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    // A malformed subject digest.
    let resp = referrers(&berth, repo, "sha256:xyz", "").await;
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["DIGEST_INVALID"]);
}
