//! The manifest endpoints over HTTP: `PUT` by tag and by digest of every accepted type (OCI image
//! manifest and index, Docker schema2 manifest and manifest list, artifacts with the empty
//! config), bytes stored verbatim, the media type taken from `Content-Type` or from the body,
//! `GET`/`HEAD` by tag, sha256 and sha512 digest, the checks a push must pass (digest, referenced
//! blobs and child manifests in this repository, foreign layers excepted, valid JSON, size limit),
//! `DELETE` by digest and by tag, and the referrers API (`OCI-Subject`, the referrers index, its
//! `artifactType` filter), and tag parameters on a push by digest (`?tag=`, one `OCI-Tag` per
//! tag, a limit answered 414). Every status, header and OCI error code is checked exactly.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha512};

use crate::api_fixtures::{
    DOCKER_LAYER, DOCKER_LIST, DOCKER_MANIFEST, EMPTY_DIGEST, EMPTY_TYPE, OCI_CONFIG, OCI_INDEX, OCI_LAYER,
    OCI_MANIFEST, assert_error, assert_error_code, blob_desc, desc, empty_config, header, image, index, put_manifest,
    to_bytes,
};
use crate::harness::{Berth, client, push_blob, sha256, tag_list};

#[tokio::test]
async fn an_oci_image_manifest_is_stored_by_tag_and_by_digest() {
    let berth = Berth::start();
    let body = image(&berth, "m/oci", OCI_MANIFEST, &[b"layer one", b"layer two"]).await;
    put_by_tag_and_by_digest(&berth, "m/oci", OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn an_oci_index_is_stored_by_tag_and_by_digest() {
    let berth = Berth::start();
    let amd = image(&berth, "m/index", OCI_MANIFEST, &[b"amd64 layer"]).await;
    let arm = image(&berth, "m/index", OCI_MANIFEST, &[b"arm64 layer"]).await;
    for child in [&amd, &arm] {
        let resp = put_manifest(&berth, "m/index", &sha256(child), Some(OCI_MANIFEST), child).await;
        assert_eq!(resp.status(), 201);
    }
    let body = index(OCI_INDEX, &[(OCI_MANIFEST, &amd), (OCI_MANIFEST, &arm)]);
    put_by_tag_and_by_digest(&berth, "m/index", OCI_INDEX, &body).await;
}

#[tokio::test]
async fn a_docker_schema2_manifest_is_stored_with_its_media_type() {
    let berth = Berth::start();
    let body = image(&berth, "m/docker", DOCKER_MANIFEST, &[b"docker layer"]).await;
    put_by_tag_and_by_digest(&berth, "m/docker", DOCKER_MANIFEST, &body).await;
}

#[tokio::test]
async fn a_docker_manifest_list_is_stored_with_its_media_type() {
    let berth = Berth::start();
    let child = image(&berth, "m/list", DOCKER_MANIFEST, &[b"docker layer"]).await;
    let resp = put_manifest(&berth, "m/list", "child", Some(DOCKER_MANIFEST), &child).await;
    assert_eq!(resp.status(), 201);
    let body = index(DOCKER_LIST, &[(DOCKER_MANIFEST, &child)]);
    put_by_tag_and_by_digest(&berth, "m/list", DOCKER_LIST, &body).await;
}

#[tokio::test]
async fn an_artifact_with_the_empty_config_and_no_layers_is_accepted() {
    let berth = Berth::start();
    let config = empty_config(&berth, "m/artifact").await;
    // No layers: `layers` empty...
    let empty_layers = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.thing.v1",
        "config": config,
        "layers": [],
    }));
    put_by_tag_and_by_digest(&berth, "m/artifact", OCI_MANIFEST, &empty_layers).await;
    // ... or absent altogether.
    let no_layers = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.other.v1",
        "config": config,
    }));
    put_by_tag_and_by_digest(&berth, "m/artifact", OCI_MANIFEST, &no_layers).await;
    // And the form the image-spec recommends for an artifact without content: the empty
    // descriptor as its one layer.
    let empty_layer = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.third.v1",
        "config": config,
        "layers": [desc(EMPTY_TYPE, EMPTY_DIGEST, 2)],
    }));
    put_by_tag_and_by_digest(&berth, "m/artifact", OCI_MANIFEST, &empty_layer).await;
}

#[tokio::test]
async fn the_empty_config_of_an_artifact_must_be_pushed_like_any_blob() {
    let berth = Berth::start();
    let body = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.thing.v1",
        "config": desc(EMPTY_TYPE, EMPTY_DIGEST, 2),
        "layers": [],
    }));
    let resp = put_manifest(&berth, "m/noempty", "v1", Some(OCI_MANIFEST), &body).await;
    let detail = format!("manifest references blob {EMPTY_DIGEST}, which is not in this repository");
    assert_error(resp, 400, "MANIFEST_BLOB_UNKNOWN", &detail).await;
}

#[tokio::test]
async fn bytes_are_stored_verbatim() {
    let berth = Berth::start();
    let config = blob_desc(&berth, "m/verbatim", OCI_CONFIG, b"{\"os\":\"linux\"}").await;
    // Odd whitespace (CRLF, tabs, spaces around `:` and `,`), keys out of the usual order,
    // escapes (`\u00e9`, `\/`, `\"`) and trailing newlines: all kept byte for byte.
    let body = format!(
        "\r\n  {{ \"layers\" :[ ] ,\n\t\"config\":{{\"size\":{size},   \"digest\":\"{digest}\",\"mediaType\":\"{OCI_CONFIG}\"}},\n\
         \"annotations\":{{\"note\":\"caf\\u00e9 \\/ \\\"quoted\\\"\"}},\"schemaVersion\" : 2 ,\
         \"mediaType\":\"{OCI_MANIFEST}\"    }}\n\n",
        size = config["size"],
        digest = config["digest"].as_str().unwrap(),
    );
    let body = body.into_bytes();
    let digest = sha256(&body);
    let resp = put_manifest(&berth, "m/verbatim", "odd", Some(OCI_MANIFEST), &body).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    for reference in ["odd", digest.as_str()] {
        let resp = get(&berth, "m/verbatim", reference).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "docker-content-digest"), digest);
        assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice(), "{reference}");
    }
}

#[tokio::test]
async fn the_media_type_comes_from_content_type_or_from_the_body() {
    let berth = Berth::start();
    let repo = "m/types";
    let oci = image(&berth, repo, OCI_MANIFEST, &[b"l1"]).await;
    let docker = image(&berth, repo, DOCKER_MANIFEST, &[b"l2"]).await;
    let strip = |body: &[u8]| {
        let mut v: Value = serde_json::from_slice(body).unwrap();
        v.as_object_mut().unwrap().remove("mediaType");
        to_bytes(&v)
    };
    let (oci_bare, docker_bare) = (strip(&oci), strip(&docker));
    // (tag, Content-Type sent, body, media type served)
    let cases: [(&str, Option<&str>, &[u8], &str); 7] = [
        ("no-header-docker", None, &docker, DOCKER_MANIFEST),
        ("generic-header", Some("application/json"), &docker, DOCKER_MANIFEST),
        ("octet-stream", Some("application/octet-stream"), &oci, OCI_MANIFEST),
        ("header-only-oci", Some(OCI_MANIFEST), &oci_bare, OCI_MANIFEST),
        (
            "header-only-docker",
            Some(DOCKER_MANIFEST),
            &docker_bare,
            DOCKER_MANIFEST,
        ),
        (
            "with-parameters",
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
            &oci,
            OCI_MANIFEST,
        ),
        ("neither", None, &oci_bare, OCI_MANIFEST),
    ];
    for (tag, content_type, body, served) in cases {
        let resp = put_manifest(&berth, repo, tag, content_type, body).await;
        assert_eq!(resp.status(), 201, "{tag}");
        let resp = get(&berth, repo, tag).await;
        assert_eq!(resp.status(), 200, "{tag}");
        assert_eq!(header(&resp, "content-type"), served, "{tag}");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), body, "{tag}");
    }
    // Without either, a `manifests` array makes an OCI index.
    let child = sha256(&oci);
    let resp = put_manifest(&berth, repo, &child, None, &oci).await;
    assert_eq!(resp.status(), 201);
    let bare_index = to_bytes(&json!({"schemaVersion": 2, "manifests": [desc(OCI_MANIFEST, &child, oci.len())]}));
    let resp = put_manifest(&berth, repo, "bare-index", None, &bare_index).await;
    assert_eq!(resp.status(), 201);
    let resp = get(&berth, repo, "bare-index").await;
    assert_eq!(header(&resp, "content-type"), OCI_INDEX);
    // A header naming one manifest type and a body naming another is refused.
    let resp = put_manifest(&berth, repo, "mismatch", Some(DOCKER_MANIFEST), &oci).await;
    let detail = format!(
        "manifest invalid: Content-Type {DOCKER_MANIFEST:?} does not match the manifest's mediaType {OCI_MANIFEST:?}"
    );
    assert_error(resp, 400, "MANIFEST_INVALID", &detail).await;
    assert_eq!(get(&berth, repo, "mismatch").await.status(), 404, "nothing stored");
}

#[tokio::test]
async fn get_and_head_by_tag_and_by_digest_describe_the_manifest() {
    let berth = Berth::start();
    let body = image(&berth, "m/get", DOCKER_MANIFEST, &[b"some layer"]).await;
    let digest = sha256(&body);
    assert_eq!(
        put_manifest(&berth, "m/get", "latest", Some(DOCKER_MANIFEST), &body)
            .await
            .status(),
        201
    );
    let c = client();
    for reference in ["latest", digest.as_str()] {
        let url = berth.url(&format!("/v2/m/get/manifests/{reference}"));
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{reference}");
        assert_eq!(header(&resp, "content-type"), DOCKER_MANIFEST);
        assert_eq!(header(&resp, "content-length"), body.len().to_string());
        assert_eq!(header(&resp, "docker-content-digest"), digest);
        assert_eq!(header(&resp, "etag"), format!("\"{digest}\""));
        assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());

        let resp = c.head(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "HEAD {reference}");
        assert_eq!(header(&resp, "content-type"), DOCKER_MANIFEST);
        assert_eq!(
            header(&resp, "content-length"),
            body.len().to_string(),
            "HEAD gives the manifest's length"
        );
        assert_eq!(header(&resp, "docker-content-digest"), digest);
        assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");
    }
}

#[tokio::test]
async fn a_manifest_is_pushed_and_read_by_its_sha512_digest() {
    let berth = Berth::start();
    let body = image(&berth, "m/sha512", OCI_MANIFEST, &[b"layer"]).await;
    let digest = format!("sha512:{}", hex::encode(Sha512::digest(&body)));
    let resp = put_manifest(&berth, "m/sha512", &digest, Some(OCI_MANIFEST), &body).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "location"), format!("/v2/m/sha512/manifests/{digest}"));
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    let c = client();
    let url = berth.url(&format!("/v2/m/sha512/manifests/{digest}"));
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "content-type"), OCI_MANIFEST);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());
    let resp = c.head(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    // A sha512 reference is verified like a sha256 one.
    let other = format!("sha512:{}", hex::encode(Sha512::digest(b"something else")));
    let resp = put_manifest(&berth, "m/sha512", &other, Some(OCI_MANIFEST), &body).await;
    let detail = format!("content does not match digest {other}: got {digest}");
    assert_error(resp, 400, "DIGEST_INVALID", &detail).await;
}

#[tokio::test]
async fn a_put_whose_body_does_not_match_its_digest_is_400_digest_invalid() {
    let berth = Berth::start();
    let body = image(&berth, "m/mismatch", OCI_MANIFEST, &[b"layer"]).await;
    let claimed = sha256(b"not the manifest");
    let resp = put_manifest(&berth, "m/mismatch", &claimed, Some(OCI_MANIFEST), &body).await;
    let detail = format!("content does not match digest {claimed}: got {}", sha256(&body));
    assert_error(resp, 400, "DIGEST_INVALID", &detail).await;
    for reference in [claimed.as_str(), sha256(&body).as_str()] {
        assert_eq!(
            get(&berth, "m/mismatch", reference).await.status(),
            404,
            "nothing stored"
        );
    }
}

#[tokio::test]
async fn a_missing_config_or_layer_is_400_manifest_blob_unknown() {
    let berth = Berth::start();
    let repo = "m/blobs";
    let config = blob_desc(&berth, repo, OCI_CONFIG, b"{}").await;
    let layer = blob_desc(&berth, repo, OCI_LAYER, b"present").await;
    let absent = sha256(b"never pushed");
    // The blob exists, but only in another repository: not enough.
    let elsewhere = blob_desc(&berth, "m/other", OCI_LAYER, b"only in m/other").await;
    let cases = [
        (
            "config",
            desc(OCI_CONFIG, &absent, 12),
            vec![layer.clone()],
            absent.clone(),
        ),
        (
            "layer",
            config.clone(),
            vec![layer.clone(), desc(OCI_LAYER, &absent, 12)],
            absent.clone(),
        ),
        (
            "elsewhere",
            config.clone(),
            vec![elsewhere.clone()],
            elsewhere["digest"].as_str().unwrap().to_owned(),
        ),
    ];
    for (tag, config, layers, missing) in cases {
        let body =
            to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}));
        let resp = put_manifest(&berth, repo, tag, Some(OCI_MANIFEST), &body).await;
        let detail = format!("manifest references blob {missing}, which is not in this repository");
        assert_error(resp, 400, "MANIFEST_BLOB_UNKNOWN", &detail).await;
        assert_eq!(get(&berth, repo, tag).await.status(), 404, "{tag}: nothing stored");
        // The same manifest by digest is refused the same way.
        let resp = put_manifest(&berth, repo, &sha256(&body), Some(OCI_MANIFEST), &body).await;
        assert_error(resp, 400, "MANIFEST_BLOB_UNKNOWN", &detail).await;
    }
    // A Docker manifest is checked the same way.
    let body = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config,
        "layers": [desc(DOCKER_LAYER, &absent, 12)],
    }));
    let resp = put_manifest(&berth, repo, "docker", Some(DOCKER_MANIFEST), &body).await;
    assert_error_code(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn a_declared_size_that_differs_from_the_blob_is_400_manifest_invalid() {
    let berth = Berth::start();
    let config = blob_desc(&berth, "m/size", OCI_CONFIG, b"{}").await;
    let layer = push_blob(&berth, "m/size", b"seven b").await;
    let body = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [desc(OCI_LAYER, &layer, 8)],
    }));
    let resp = put_manifest(&berth, "m/size", "v1", Some(OCI_MANIFEST), &body).await;
    assert_error_code(resp, 400, "MANIFEST_INVALID").await;
    assert_eq!(get(&berth, "m/size", "v1").await.status(), 404);
}

#[tokio::test]
async fn an_index_whose_child_manifest_is_missing_is_400_manifest_unknown() {
    let berth = Berth::start();
    let child = image(&berth, "m/elsewhere", OCI_MANIFEST, &[b"child layer"]).await;
    let child_digest = sha256(&child);
    // Its blobs are here too; the child manifest exists, but in another repository only.
    assert_eq!(image(&berth, "m/parent", OCI_MANIFEST, &[b"child layer"]).await, child);
    let resp = put_manifest(&berth, "m/elsewhere", &child_digest, Some(OCI_MANIFEST), &child).await;
    assert_eq!(resp.status(), 201);
    for (media_type, child_type) in [(OCI_INDEX, OCI_MANIFEST), (DOCKER_LIST, DOCKER_MANIFEST)] {
        let body = index(media_type, &[(child_type, &child)]);
        let resp = put_manifest(&berth, "m/parent", "multi", Some(media_type), &body).await;
        let detail = format!("index references manifest {child_digest}, which is not in this repository");
        assert_error(resp, 400, "MANIFEST_UNKNOWN", &detail).await;
        assert_eq!(get(&berth, "m/parent", "multi").await.status(), 404, "nothing stored");
    }
    // Once the child is pushed here, the index is accepted.
    let resp = put_manifest(&berth, "m/parent", &child_digest, Some(OCI_MANIFEST), &child).await;
    assert_eq!(resp.status(), 201);
    let body = index(OCI_INDEX, &[(OCI_MANIFEST, &child)]);
    let resp = put_manifest(&berth, "m/parent", "multi", Some(OCI_INDEX), &body).await;
    assert_eq!(resp.status(), 201);
}

#[tokio::test]
async fn foreign_and_non_distributable_layers_need_not_exist() {
    let berth = Berth::start();
    let repo = "m/foreign";
    let config = blob_desc(&berth, repo, OCI_CONFIG, b"{}").await;
    let present = blob_desc(&berth, repo, OCI_LAYER, b"local layer").await;
    let mut foreign = desc(
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        &sha256(b"windows base layer"),
        1234,
    );
    foreign["urls"] = json!(["https://example.com/base.tar.gz"]);
    let mut nondistributable = desc(
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        &sha256(b"licensed layer"),
        99,
    );
    nondistributable["urls"] = json!(["https://example.com/licensed.tar.gz"]);
    let body = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [foreign, nondistributable, present],
    }));
    let resp = put_manifest(&berth, repo, "v1", Some(OCI_MANIFEST), &body).await;
    assert_eq!(resp.status(), 201);
    let resp = get(&berth, repo, "v1").await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());
    // The same layers in a Docker manifest.
    let docker_config = blob_desc(&berth, repo, "application/vnd.docker.container.image.v1+json", b"{ }").await;
    let body = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": docker_config,
        "layers": [foreign],
    }));
    let resp = put_manifest(&berth, repo, "docker", Some(DOCKER_MANIFEST), &body).await;
    assert_eq!(resp.status(), 201);
}

#[tokio::test]
async fn invalid_manifests_are_400_manifest_invalid() {
    let berth = Berth::start();
    let repo = "m/invalid";
    let config = blob_desc(&berth, repo, OCI_CONFIG, b"{}").await;
    let image_with = |extra: Value| {
        let mut v = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": []});
        for (k, x) in extra.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        to_bytes(&v)
    };
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("not JSON", b"this is not json".to_vec(), None),
        ("truncated", b"{\"schemaVersion\": 2, \"config\": {".to_vec(), None),
        ("empty", Vec::new(), None),
        ("an array", b"[]".to_vec(), None),
        (
            "schema1",
            image_with(json!({"schemaVersion": 1})),
            Some("manifest invalid: Docker schema1 manifests are not supported; push a schema2 or OCI manifest"),
        ),
        (
            "schemaVersion 3",
            image_with(json!({"schemaVersion": 3})),
            Some("manifest invalid: manifest schemaVersion must be 2"),
        ),
        (
            "no schemaVersion",
            image_with(json!({"schemaVersion": null})),
            Some("manifest invalid: manifest schemaVersion must be 2"),
        ),
        (
            "schemaVersion a string",
            image_with(json!({"schemaVersion": "2"})),
            None,
        ),
        (
            "no config",
            image_with(json!({"config": null})),
            Some("manifest invalid: an image manifest needs a config descriptor"),
        ),
        (
            "unknown mediaType",
            image_with(json!({"mediaType": "application/vnd.example.manifest"})),
            Some("manifest invalid: unsupported manifest media type \"application/vnd.example.manifest\""),
        ),
        (
            "malformed layer digest",
            image_with(json!({"layers": [desc(OCI_LAYER, "sha256:1234", 1)]})),
            None,
        ),
        (
            "negative size",
            image_with(json!({"layers": [{"mediaType": OCI_LAYER, "digest": sha256(b"x"), "size": -1}]})),
            None,
        ),
        (
            "index without manifests",
            to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX})),
            Some("manifest invalid: an index needs a manifests array"),
        ),
    ];
    for (what, body, detail) in cases {
        // No Content-Type: the body alone is judged.
        let resp = put_manifest(&berth, repo, "bad", None, &body).await;
        match detail {
            Some(detail) => assert_error(resp, 400, "MANIFEST_INVALID", detail).await,
            None => assert_error_code(resp, 400, "MANIFEST_INVALID").await,
        }
        assert_eq!(get(&berth, repo, "bad").await.status(), 404, "{what}: nothing stored");
    }
    // Schema1 is refused by its Content-Type as well.
    let resp = put_manifest(
        &berth,
        repo,
        "bad",
        Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
        &image_with(json!({})),
    )
    .await;
    assert_error_code(resp, 400, "MANIFEST_INVALID").await;
}

#[tokio::test]
async fn a_manifest_over_the_size_limit_is_413() {
    let berth = Berth::builder().env("BERTH_LIMITS_MANIFEST_MAX_SIZE", "1024").start();
    let repo = "m/limit";
    let base = image(&berth, repo, OCI_MANIFEST, &[b"layer"]).await;
    // Whitespace after the JSON pads a valid manifest to any length.
    let padded = |len: usize| {
        let mut body = base.clone();
        body.resize(len, b' ');
        body
    };
    let at_limit = padded(1024);
    let resp = put_manifest(&berth, repo, "at-limit", Some(OCI_MANIFEST), &at_limit).await;
    assert_eq!(resp.status(), 201, "exactly the limit is accepted");
    let over = padded(1025);
    let resp = put_manifest(&berth, repo, "over", Some(OCI_MANIFEST), &over).await;
    assert_error(
        resp,
        413,
        "MANIFEST_INVALID",
        "manifest exceeds the size limit of 1024 bytes",
    )
    .await;
    // Without a Content-Length (chunked), the limit holds as the body arrives.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = over.chunks(100).map(|c| Ok(c.to_vec())).collect();
    let resp = client()
        .put(berth.url(&format!("/v2/{repo}/manifests/chunked")))
        .header("content-type", OCI_MANIFEST)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_error(
        resp,
        413,
        "MANIFEST_INVALID",
        "manifest exceeds the size limit of 1024 bytes",
    )
    .await;
    for tag in ["over", "chunked"] {
        assert_eq!(get(&berth, repo, tag).await.status(), 404, "{tag}: nothing stored");
    }
}

#[tokio::test]
async fn unknown_manifests_are_404_manifest_unknown() {
    let berth = Berth::start();
    let (digest, _) = crate::harness::push_image(&berth, "m/known", "v1", &[b"layer"]).await;
    let unknown = sha256(b"no such manifest");
    let c = client();
    // Unknown tag, unknown digest, and (as in Distribution) any reference in an unknown
    // repository: the spec asks for a 404, and the manifest is what is unknown.
    for path in [
        "/v2/m/known/manifests/v2".to_owned(),
        format!("/v2/m/known/manifests/{unknown}"),
        "/v2/m/nowhere/manifests/v1".to_owned(),
        format!("/v2/m/nowhere/manifests/{digest}"),
    ] {
        let resp = c.get(berth.url(&path)).send().await.unwrap();
        assert_error(resp, 404, "MANIFEST_UNKNOWN", "manifest unknown to registry").await;
        let resp = c.head(berth.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "HEAD {path}");
        assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");
    }
}

#[tokio::test]
async fn delete_by_digest_removes_the_manifest_and_every_tag_on_it() {
    let berth = Berth::start();
    let repo = "m/del";
    let body = image(&berth, repo, OCI_MANIFEST, &[b"layer"]).await;
    let digest = sha256(&body);
    for tag in ["a", "b"] {
        assert_eq!(
            put_manifest(&berth, repo, tag, Some(OCI_MANIFEST), &body)
                .await
                .status(),
            201
        );
    }
    let other = image(&berth, repo, OCI_MANIFEST, &[b"other layer"]).await;
    assert_eq!(
        put_manifest(&berth, repo, "c", Some(OCI_MANIFEST), &other)
            .await
            .status(),
        201
    );
    assert_eq!(tag_list(&berth, repo).await, json!(["a", "b", "c"]));

    let resp = delete(&berth, repo, &digest).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "content-length"), "0");
    assert_eq!(
        tag_list(&berth, repo).await,
        json!(["c"]),
        "its tags are gone, others stay"
    );
    for reference in ["a", "b", digest.as_str()] {
        let resp = get(&berth, repo, reference).await;
        assert_error(resp, 404, "MANIFEST_UNKNOWN", "manifest unknown to registry").await;
    }
    assert_eq!(get(&berth, repo, "c").await.status(), 200);
    let resp = delete(&berth, repo, &digest).await;
    assert_error(resp, 404, "MANIFEST_UNKNOWN", "manifest unknown to registry").await;
    // Pushed again, it is whole again.
    assert_eq!(
        put_manifest(&berth, repo, "a", Some(OCI_MANIFEST), &body)
            .await
            .status(),
        201
    );
    assert_eq!(
        get(&berth, repo, &digest).await.bytes().await.unwrap().as_ref(),
        body.as_slice()
    );
}

#[tokio::test]
async fn delete_by_tag_removes_only_the_tag() {
    let berth = Berth::start();
    let repo = "m/deltag";
    let body = image(&berth, repo, OCI_MANIFEST, &[b"layer"]).await;
    let digest = sha256(&body);
    for tag in ["keep", "drop"] {
        assert_eq!(
            put_manifest(&berth, repo, tag, Some(OCI_MANIFEST), &body)
                .await
                .status(),
            201
        );
    }
    let resp = delete(&berth, repo, "drop").await;
    assert_eq!(resp.status(), 202);
    assert_eq!(tag_list(&berth, repo).await, json!(["keep"]));
    let resp = get(&berth, repo, "drop").await;
    assert_error(resp, 404, "MANIFEST_UNKNOWN", "manifest unknown to registry").await;
    for reference in ["keep", digest.as_str()] {
        let resp = get(&berth, repo, reference).await;
        assert_eq!(resp.status(), 200, "{reference}");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());
    }
    // The last tag too: the manifest stays, untagged.
    assert_eq!(delete(&berth, repo, "keep").await.status(), 202);
    assert_eq!(tag_list(&berth, repo).await, json!([]));
    assert_eq!(get(&berth, repo, &digest).await.status(), 200);
    let resp = delete(&berth, repo, "keep").await;
    assert_error(resp, 404, "MANIFEST_UNKNOWN", "manifest unknown to registry").await;
}

#[tokio::test]
async fn deleting_what_does_not_exist_is_404() {
    let berth = Berth::start();
    crate::harness::push_image(&berth, "m/exists", "v1", &[b"layer"]).await;
    let unknown = sha256(b"never pushed");
    for (repo, reference) in [
        ("m/exists", "v2"),
        ("m/exists", unknown.as_str()),
        ("m/nowhere", "v1"),
        ("m/nowhere", unknown.as_str()),
    ] {
        let resp = delete(&berth, repo, reference).await;
        assert_error(resp, 404, "MANIFEST_UNKNOWN", "manifest unknown to registry").await;
    }
    assert_eq!(tag_list(&berth, "m/exists").await, json!(["v1"]));
}

#[tokio::test]
async fn a_manifest_with_a_subject_is_answered_with_oci_subject() {
    let berth = Berth::start();
    let repo = "m/subject";
    let config = empty_config(&berth, repo).await;
    // The subject does not exist yet: the push is accepted all the same.
    let subject = sha256(b"a manifest pushed later");
    let body = artifact(&config, "application/vnd.example.sig", &subject, json!({}));
    let resp = put_manifest(&berth, repo, &sha256(&body), Some(OCI_MANIFEST), &body).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "oci-subject"), subject);
    assert_eq!(header(&resp, "docker-content-digest"), sha256(&body));
    // By tag as well, and for an index with a subject.
    let resp = put_manifest(&berth, repo, "sig", Some(OCI_MANIFEST), &body).await;
    assert_eq!(header(&resp, "oci-subject"), subject);
    let index_body = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [desc(OCI_MANIFEST, &sha256(&body), body.len())],
        "subject": desc(OCI_MANIFEST, &subject, 100),
    }));
    let resp = put_manifest(&berth, repo, "index", Some(OCI_INDEX), &index_body).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "oci-subject"), subject);
    // No subject, no header.
    let plain = image(&berth, repo, OCI_MANIFEST, &[b"layer"]).await;
    let resp = put_manifest(&berth, repo, "plain", Some(OCI_MANIFEST), &plain).await;
    assert_eq!(resp.status(), 201);
    assert!(resp.headers().get("oci-subject").is_none());
}

#[tokio::test]
async fn referrers_list_every_manifest_whose_subject_is_the_digest() {
    let berth = Berth::start();
    let repo = "m/referrers";
    let subject_body = image(&berth, repo, OCI_MANIFEST, &[b"the image"]).await;
    let subject = sha256(&subject_body);
    assert_eq!(
        put_manifest(&berth, repo, "latest", Some(OCI_MANIFEST), &subject_body)
            .await
            .status(),
        201
    );
    let config = empty_config(&berth, repo).await;
    let sig = artifact(
        &config,
        "application/vnd.example.sig.v1",
        &subject,
        json!({"org.example.signer": "alice", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"}),
    );
    let sbom = artifact(&config, "application/vnd.example.sbom.v1", &subject, json!({}));
    // No artifactType (or an empty one): the config's media type stands in for it.
    let sbom_config = blob_desc(
        &berth,
        repo,
        "application/vnd.example.sbom.config.v1+json",
        b"{\"v\":1}",
    )
    .await;
    let untyped = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": sbom_config,
        "layers": [],
        "subject": desc(OCI_MANIFEST, &subject, subject_body.len()),
    }));
    let empty_typed = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "",
        "config": sbom_config,
        "layers": [desc(EMPTY_TYPE, EMPTY_DIGEST, 2)],
        "subject": desc(OCI_MANIFEST, &subject, subject_body.len()),
    }));
    // An index referring to the subject has no artifact type unless it declares one.
    for body in [&sig, &sbom, &untyped, &empty_typed] {
        let resp = put_manifest(&berth, repo, &sha256(body), Some(OCI_MANIFEST), body).await;
        assert_eq!(resp.status(), 201);
        assert_eq!(header(&resp, "oci-subject"), subject);
    }
    let index_body = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [desc(OCI_MANIFEST, &sha256(&sbom), sbom.len())],
        "subject": desc(OCI_MANIFEST, &subject, subject_body.len()),
        "annotations": {"org.example.kind": "bundle"},
    }));
    let resp = put_manifest(&berth, repo, "bundle", Some(OCI_INDEX), &index_body).await;
    assert_eq!(resp.status(), 201);
    // A referrer of the same subject in another repository is not listed here.
    let other_config = empty_config(&berth, "m/unrelated").await;
    let foreign = artifact(&other_config, "application/vnd.example.sig.v1", &subject, json!({}));
    assert_eq!(
        put_manifest(&berth, "m/unrelated", "sig", Some(OCI_MANIFEST), &foreign)
            .await
            .status(),
        201
    );

    let resp = referrers(&berth, repo, &subject, None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), OCI_INDEX);
    assert!(resp.headers().get("oci-filters-applied").is_none(), "no filter asked");
    let sbom_type = "application/vnd.example.sbom.config.v1+json";
    let mut expected = vec![
        referrer(&sig, OCI_MANIFEST, Some("application/vnd.example.sig.v1")),
        referrer(&sbom, OCI_MANIFEST, Some("application/vnd.example.sbom.v1")),
        referrer(&untyped, OCI_MANIFEST, Some(sbom_type)),
        referrer(&empty_typed, OCI_MANIFEST, Some(sbom_type)),
        referrer(&index_body, OCI_INDEX, None),
    ];
    expected.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": expected})
    );
    // The subject itself refers to nothing.
    let resp = referrers(&berth, repo, &sha256(&sig), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["manifests"], json!([]));
}

#[tokio::test]
async fn referrers_are_filtered_by_artifact_type() {
    let berth = Berth::start();
    let repo = "m/filter";
    let subject = sha256(b"some subject");
    let config = empty_config(&berth, repo).await;
    let sig_a = artifact(&config, "application/vnd.example.sig.v1", &subject, json!({"n": "1"}));
    let sig_b = artifact(&config, "application/vnd.example.sig.v1", &subject, json!({"n": "2"}));
    let sbom = artifact(&config, "application/vnd.example.sbom.v1", &subject, json!({}));
    for body in [&sig_a, &sig_b, &sbom] {
        assert_eq!(
            put_manifest(&berth, repo, &sha256(body), Some(OCI_MANIFEST), body)
                .await
                .status(),
            201
        );
    }
    let resp = referrers(&berth, repo, &subject, Some("application/vnd.example.sig.v1")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-type"), OCI_INDEX);
    assert_eq!(header(&resp, "oci-filters-applied"), "artifactType");
    let mut expected = vec![
        referrer(&sig_a, OCI_MANIFEST, Some("application/vnd.example.sig.v1")),
        referrer(&sig_b, OCI_MANIFEST, Some("application/vnd.example.sig.v1")),
    ];
    expected.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": expected})
    );
    let resp = referrers(&berth, repo, &subject, Some("application/vnd.example.sbom.v1")).await;
    assert_eq!(header(&resp, "oci-filters-applied"), "artifactType");
    let listed = resp.json::<Value>().await.unwrap()["manifests"].clone();
    assert_eq!(
        listed,
        json!([referrer(&sbom, OCI_MANIFEST, Some("application/vnd.example.sbom.v1"))])
    );
    // A filter nothing matches: an empty index, the filter still reported.
    let resp = referrers(&berth, repo, &subject, Some("application/vnd.example.none")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "oci-filters-applied"), "artifactType");
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
    );
    // Unfiltered, all three.
    let resp = referrers(&berth, repo, &subject, None).await;
    assert!(resp.headers().get("oci-filters-applied").is_none());
    assert_eq!(
        resp.json::<Value>().await.unwrap()["manifests"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn referrers_of_a_digest_nothing_refers_to_are_an_empty_index() {
    let berth = Berth::start();
    let (digest, _) = crate::harness::push_image(&berth, "m/lonely", "v1", &[b"layer"]).await;
    // A known manifest, an unknown digest, and a repository that does not exist: the spec
    // forbids a 404 from a registry that supports the API.
    for (repo, subject) in [
        ("m/lonely", digest.clone()),
        ("m/lonely", sha256(b"unknown")),
        ("m/nowhere", digest.clone()),
    ] {
        let resp = referrers(&berth, repo, &subject, None).await;
        assert_eq!(resp.status(), 200, "{repo} {subject}");
        assert_eq!(header(&resp, "content-type"), OCI_INDEX);
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
        );
    }
}

#[tokio::test]
async fn a_referrer_pushed_before_its_subject_is_listed_and_deleting_it_unlists_it() {
    let berth = Berth::start();
    let repo = "m/order";
    let subject_body = image(&berth, repo, OCI_MANIFEST, &[b"layer"]).await;
    let subject = sha256(&subject_body);
    let config = empty_config(&berth, repo).await;
    let sig = artifact(&config, "application/vnd.example.sig.v1", &subject, json!({}));
    let sig_digest = sha256(&sig);
    let resp = put_manifest(&berth, repo, &sig_digest, Some(OCI_MANIFEST), &sig).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "oci-subject"), subject);
    let listed = |resp: reqwest::Response| async move {
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(referrers(&berth, repo, &subject, None).await).await,
        [sig_digest.as_str()]
    );
    // The subject arrives; the referrer is still listed.
    assert_eq!(
        put_manifest(&berth, repo, "latest", Some(OCI_MANIFEST), &subject_body)
            .await
            .status(),
        201
    );
    assert_eq!(
        listed(referrers(&berth, repo, &subject, None).await).await,
        [sig_digest.as_str()]
    );
    // Deleting the referrer's tag leaves it listed; deleting the referrer unlists it.
    assert_eq!(
        put_manifest(&berth, repo, "sig", Some(OCI_MANIFEST), &sig)
            .await
            .status(),
        201
    );
    assert_eq!(delete(&berth, repo, "sig").await.status(), 202);
    assert_eq!(
        listed(referrers(&berth, repo, &subject, None).await).await,
        [sig_digest.as_str()]
    );
    assert_eq!(delete(&berth, repo, &sig_digest).await.status(), 202);
    assert!(listed(referrers(&berth, repo, &subject, None).await).await.is_empty());
    // The subject is untouched.
    assert_eq!(get(&berth, repo, "latest").await.status(), 200);
}

#[tokio::test]
async fn referrers_of_a_malformed_digest_are_400_digest_invalid() {
    let berth = Berth::start();
    crate::harness::push_image(&berth, "m/bad", "v1", &[b"layer"]).await;
    let c = client();
    for (digest, detail) in [
        (
            "sha256:abc",
            "invalid digest: sha256 digest must be 64 lowercase hex characters",
        ),
        ("latest", "invalid digest: digest has no algorithm separator ':'"),
        (
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "invalid digest: unsupported digest algorithm \"md5\" (supported: sha256, sha512)",
        ),
    ] {
        let resp = c
            .get(berth.url(&format!("/v2/m/bad/referrers/{digest}")))
            .send()
            .await
            .unwrap();
        assert_error(resp, 400, "DIGEST_INVALID", detail).await;
    }
    let upper = sha256(b"x").to_uppercase().replace("SHA256", "sha256");
    let resp = c
        .get(berth.url(&format!("/v2/m/bad/referrers/{upper}")))
        .send()
        .await
        .unwrap();
    assert_error(
        resp,
        400,
        "DIGEST_INVALID",
        "invalid digest: sha256 digest must be 64 lowercase hex characters",
    )
    .await;
}

#[tokio::test]
async fn tag_parameters_on_a_push_by_digest_set_every_tag_at_once() {
    let berth = Berth::start();
    let repo = "m/tagparams";
    let body = image(&berth, repo, OCI_MANIFEST, &[b"tagged layer"]).await;
    let digest = sha256(&body);
    // Twelve tags (the spec asks for at least ten), one of them twice, and one already on
    // another manifest, which moves.
    let other = image(&berth, repo, OCI_MANIFEST, &[b"older layer"]).await;
    assert_eq!(
        put_manifest(&berth, repo, "v1", Some(OCI_MANIFEST), &other)
            .await
            .status(),
        201
    );
    let names: Vec<String> = std::iter::once("v1".to_owned())
        .chain((2..=12).map(|i| format!("t{i}")))
        .collect();
    let mut sent: Vec<&str> = names.iter().map(String::as_str).collect();
    sent.push("t2");
    let resp = put_with_tags(&berth, repo, &digest, &sent, &body).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "location"), format!("/v2/{repo}/manifests/{digest}"));
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "content-length"), "0");
    let oci_tags: Vec<&str> = resp
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        oci_tags, names,
        "one OCI-Tag per tag set, each once, in the order given"
    );
    for name in &names {
        let resp = get(&berth, repo, name).await;
        assert_eq!(resp.status(), 200, "GET {name}");
        assert_eq!(header(&resp, "docker-content-digest"), digest, "{name}");
    }
    let mut listed: Vec<String> = serde_json::from_value(tag_list(&berth, repo).await).unwrap();
    listed.sort_unstable();
    let mut want = names.clone();
    want.sort_unstable();
    assert_eq!(listed, want, "v1 moved; nothing else is tagged");
}

/// What the conformance suite's "tag-param-sha512" data does: a manifest of another algorithm
/// than the canonical one can only be tagged through the parameter, since a push by tag hashes
/// with sha256.
#[tokio::test]
async fn tag_parameters_tag_a_manifest_pushed_by_its_sha512_digest() {
    let berth = Berth::start();
    let repo = "m/tagparam512";
    let body = image(&berth, repo, OCI_MANIFEST, &[b"layer"]).await;
    let digest = format!("sha512:{}", hex::encode(Sha512::digest(&body)));
    let resp = put_with_tags(&berth, repo, &digest, &["latest", "v2"], &body).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    let oci_tags: Vec<&str> = resp
        .headers()
        .get_all("oci-tag")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(oci_tags, ["latest", "v2"]);
    for name in ["latest", "v2"] {
        let resp = get(&berth, repo, name).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "docker-content-digest"), digest);
        assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());
    }
}

#[tokio::test]
async fn more_tag_parameters_than_the_limit_are_414_and_set_nothing() {
    let berth = Berth::start();
    let repo = "m/toomanytags";
    let body = image(&berth, repo, OCI_MANIFEST, &[b"layer"]).await;
    let digest = sha256(&body);
    let names: Vec<String> = (0..65).map(|i| format!("t{i:03}")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let resp = put_with_tags(&berth, repo, &digest, &all, &body).await;
    assert!(resp.headers().get("oci-tag").is_none());
    let detail = "65 tag parameters; at most 64 may be given in one push: push the rest with further requests";
    assert_error(resp, 414, "UNSUPPORTED", detail).await;
    assert_eq!(
        get(&berth, repo, &digest).await.status(),
        404,
        "the manifest was not stored"
    );
    assert_eq!(get(&berth, repo, "t000").await.status(), 404);
    // Repeats count as sent: the limit is on the request, not on the distinct tags.
    let repeated = vec!["same"; 65];
    let resp = put_with_tags(&berth, repo, &digest, &repeated, &body).await;
    assert_eq!(resp.status(), 414);
    // At the limit, every tag is set.
    let resp = put_with_tags(&berth, repo, &digest, &all[..64], &body).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers().get_all("oci-tag").iter().count(), 64);
    assert_eq!(tag_list(&berth, repo).await.as_array().unwrap().len(), 64);
}

#[tokio::test]
async fn an_invalid_tag_parameter_is_400_name_invalid_and_sets_nothing() {
    let berth = Berth::start();
    let repo = "m/badtagparam";
    let body = image(&berth, repo, OCI_MANIFEST, &[b"layer"]).await;
    let digest = sha256(&body);
    for bad in ["-dash", "has:colon", "", &"x".repeat(129)] {
        let resp = put_with_tags(&berth, repo, &digest, &["good", bad], &body).await;
        let shown: String = bad.chars().take(64).collect();
        let detail =
            format!("invalid repository name or tag: tag {shown:?} does not match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}");
        assert_error(resp, 400, "NAME_INVALID", &detail).await;
    }
    assert_eq!(get(&berth, repo, &digest).await.status(), 404, "nothing stored");
    assert_eq!(get(&berth, repo, "good").await.status(), 404, "no tag set");
}

/// The spec defines `tag` parameters for a push by digest; with a tag in the path the request
/// is refused rather than guessed at.
#[tokio::test]
async fn tag_parameters_on_a_push_by_tag_are_400_unsupported() {
    let berth = Berth::start();
    let repo = "m/tagontag";
    let body = image(&berth, repo, OCI_MANIFEST, &[b"layer"]).await;
    let resp = put_with_tags(&berth, repo, "v1", &["v2"], &body).await;
    let detail = "tag parameters go with a push by digest; this push names tag \"v1\" in its path: \
                  push by digest with every tag as a parameter, or push each tag on its own";
    assert_error(resp, 400, "UNSUPPORTED", detail).await;
    for reference in ["v1", "v2", sha256(&body).as_str()] {
        assert_eq!(get(&berth, repo, reference).await.status(), 404, "{reference}");
    }
}

/// PUT `body` by tag, then by digest: both 201 with the manifest's `Location` and digest; then it
/// is served by tag and by digest, byte for byte, with `media_type`.
async fn put_by_tag_and_by_digest(berth: &Berth, repo: &str, media_type: &str, body: &[u8]) {
    let digest = sha256(body);
    let tag = format!("t{}", &digest[7..15]);
    for reference in [tag.as_str(), digest.as_str()] {
        let resp = put_manifest(berth, repo, reference, Some(media_type), body).await;
        assert_eq!(resp.status(), 201, "PUT {reference}");
        assert_eq!(header(&resp, "location"), format!("/v2/{repo}/manifests/{digest}"));
        assert_eq!(header(&resp, "docker-content-digest"), digest);
        assert_eq!(header(&resp, "content-length"), "0");
        assert!(resp.headers().get("oci-subject").is_none());
        assert!(resp.headers().get("oci-tag").is_none(), "no tag parameters, no OCI-Tag");
    }
    for reference in [tag.as_str(), digest.as_str()] {
        let resp = get(berth, repo, reference).await;
        assert_eq!(resp.status(), 200, "GET {reference}");
        assert_eq!(header(&resp, "content-type"), media_type);
        assert_eq!(header(&resp, "docker-content-digest"), digest);
        assert_eq!(header(&resp, "content-length"), body.len().to_string());
        assert_eq!(resp.bytes().await.unwrap().as_ref(), body);
    }
    let listed = tag_list(berth, repo).await;
    assert!(listed.as_array().unwrap().contains(&json!(tag)), "{listed}");
}

/// An artifact manifest of `artifact_type` with the empty config, the empty descriptor as its one
/// layer, `annotations` (plus a nonce) and a subject.
fn artifact(config: &Value, artifact_type: &str, subject: &str, annotations: Value) -> Vec<u8> {
    static NONCE: AtomicU64 = AtomicU64::new(1);
    let mut v = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config,
        "layers": [desc(EMPTY_TYPE, EMPTY_DIGEST, 2)],
        "subject": desc(OCI_MANIFEST, subject, 1234),
    });
    v["annotations"] = annotations;
    // A nonce keeps manifests with equal fields distinct.
    v["annotations"]["org.example.nonce"] = json!(NONCE.fetch_add(1, Ordering::Relaxed).to_string());
    to_bytes(&v)
}

/// The descriptor a referrers list gives `body`: its media type, digest and size, the artifact
/// type if any, and every annotation of the manifest.
fn referrer(body: &[u8], media_type: &str, artifact_type: Option<&str>) -> Value {
    let manifest: Value = serde_json::from_slice(body).unwrap();
    let mut d = desc(media_type, &sha256(body), body.len());
    if let Some(t) = artifact_type {
        d["artifactType"] = json!(t);
    }
    if let Some(a) = manifest.get("annotations") {
        d["annotations"] = a.clone();
    }
    d
}

/// PUT `body` (an OCI image manifest) to `reference` with a `tag` parameter for each of `tags`.
async fn put_with_tags(berth: &Berth, repo: &str, reference: &str, tags: &[&str], body: &[u8]) -> reqwest::Response {
    let mut url = reqwest::Url::parse(&berth.url(&format!("/v2/{repo}/manifests/{reference}"))).unwrap();
    for tag in tags {
        url.query_pairs_mut().append_pair("tag", tag);
    }
    client()
        .put(url)
        .header("content-type", OCI_MANIFEST)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

async fn get(berth: &Berth, repo: &str, reference: &str) -> reqwest::Response {
    client()
        .get(berth.url(&format!("/v2/{repo}/manifests/{reference}")))
        .send()
        .await
        .unwrap()
}

pub(crate) async fn delete(berth: &Berth, repo: &str, reference: &str) -> reqwest::Response {
    client()
        .delete(berth.url(&format!("/v2/{repo}/manifests/{reference}")))
        .send()
        .await
        .unwrap()
}

async fn referrers(berth: &Berth, repo: &str, subject: &str, artifact_type: Option<&str>) -> reqwest::Response {
    let mut url = berth.url(&format!("/v2/{repo}/referrers/{subject}"));
    if let Some(t) = artifact_type {
        url = format!("{url}?artifactType={}", form_urlencode(t));
    }
    client().get(url).send().await.unwrap()
}

fn form_urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
