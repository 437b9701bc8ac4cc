//! OCI error bodies over HTTP. Each error code is provoked for real and its whole body
//! `{"errors":[{"code","message","detail"}]}` compared as a snapshot, with the status the spec
//! (and Distribution) gives the code, so a changed message shows up as a diff. Unknown routes,
//! methods an endpoint does not answer (on `/v2/` and elsewhere), malformed query strings and
//! headers, and undecodable path parameters all answer with the same JSON body. Repository
//! names and tags outside the spec's grammar are 400 `NAME_INVALID` before reaching storage,
//! and the edge cases the grammar allows work.

use serde_json::{Value, json};

use crate::api_fixtures::{
    OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, assert_error, blob_desc, desc, error_json, header, image, put_manifest,
    to_bytes,
};
use crate::harness::{Berth, client, get_json, push_blob, push_image, raw_request, sha256};

const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";
const NAME_RULE: &str = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*";
const TAG_RULE: &str = "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}";

#[tokio::test]
async fn blob_unknown_is_404() {
    let berth = Berth::start();
    push_blob(&berth, "e/blob", b"present").await;
    let absent = sha256(b"absent");
    let c = client();
    let resp = c
        .get(berth.url(&format!("/v2/e/blob/blobs/{absent}")))
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "BLOB_UNKNOWN", "blob unknown to registry").await;
    let resp = c
        .delete(berth.url(&format!("/v2/e/blob/blobs/{absent}")))
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "BLOB_UNKNOWN", "blob unknown to registry").await;
}

#[tokio::test]
async fn blob_upload_invalid_is_400() {
    let berth = Berth::start();
    let location = start_upload(&berth, "e/upload").await;
    for range in ["abc", "5-1", "-1", "1-", "bytes=x-y"] {
        let resp = client()
            .patch(&location)
            .header("content-range", range)
            .body(b"chunk".to_vec())
            .send()
            .await
            .unwrap();
        let detail = format!("malformed Content-Range {range:?}");
        assert_error(resp, 400, "BLOB_UPLOAD_INVALID", &detail).await;
    }
    // The session is still there, and empty.
    let resp = client().get(&location).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "range"), "0-0");
}

#[tokio::test]
async fn blob_upload_unknown_is_404() {
    let berth = Berth::start();
    push_blob(&berth, "e/session", b"x").await;
    let c = client();
    for id in [NIL_UUID, "not-a-session"] {
        let url = berth.url(&format!("/v2/e/session/blobs/uploads/{id}"));
        let resp = c.get(&url).send().await.unwrap();
        assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry").await;
        let resp = c.patch(&url).body(b"x".to_vec()).send().await.unwrap();
        assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry").await;
        let resp = c.delete(&url).send().await.unwrap();
        assert_error(resp, 404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry").await;
    }
}

#[tokio::test]
async fn digest_invalid_is_400() {
    let berth = Berth::start();
    let body = image(&berth, "e/digest", OCI_MANIFEST, &[b"layer"]).await;
    // A digest that does not match the content.
    let claimed = sha256(b"claimed");
    let resp = put_manifest(&berth, "e/digest", &claimed, Some(OCI_MANIFEST), &body).await;
    let detail = format!("content does not match digest {claimed}: got {}", sha256(&body));
    assert_error(resp, 400, "DIGEST_INVALID", &detail).await;
    // Malformed digests: as a manifest reference, a blob, and an upload's `?digest=`.
    let c = client();
    let cases = [
        (
            "/v2/e/digest/manifests/sha256:abc",
            "invalid digest: sha256 digest must be 64 lowercase hex characters",
        ),
        (
            "/v2/e/digest/manifests/bad:tag",
            "invalid digest: unsupported digest algorithm \"bad\" (supported: sha256, sha512)",
        ),
        (
            "/v2/e/digest/blobs/sha256:abc",
            "invalid digest: sha256 digest must be 64 lowercase hex characters",
        ),
        (
            "/v2/e/digest/blobs/nocolon",
            "invalid digest: digest has no algorithm separator ':'",
        ),
    ];
    for (path, detail) in cases {
        let resp = c.get(berth.url(path)).send().await.unwrap();
        assert_error(resp, 400, "DIGEST_INVALID", detail).await;
    }
    let resp = c
        .post(berth.url("/v2/e/digest/blobs/uploads/?digest=nonsense"))
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_error(
        resp,
        400,
        "DIGEST_INVALID",
        "invalid digest: digest has no algorithm separator ':'",
    )
    .await;
    let location = start_upload(&berth, "e/digest").await;
    let resp = c.put(&location).body(b"x".to_vec()).send().await.unwrap();
    assert_error(resp, 400, "DIGEST_INVALID", "the digest parameter is required").await;
    // An upload session for an algorithm Berth does not store.
    for alg in ["md5", "SHA256", "", "blake3"] {
        let resp = c
            .post(berth.url(&format!("/v2/e/digest/blobs/uploads/?digest-algorithm={alg}")))
            .send()
            .await
            .unwrap();
        let detail = format!("digest-algorithm {alg:?} is not supported; use sha256 or sha512");
        assert_error(resp, 400, "DIGEST_INVALID", &detail).await;
    }
}

#[tokio::test]
async fn manifest_blob_unknown_is_400() {
    let berth = Berth::start();
    let config = blob_desc(&berth, "e/mbu", OCI_CONFIG, b"{}").await;
    let absent = sha256(b"absent layer");
    let body = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [desc(OCI_LAYER, &absent, 12)],
    }));
    let resp = put_manifest(&berth, "e/mbu", "v1", Some(OCI_MANIFEST), &body).await;
    let detail = format!("manifest references blob {absent}, which is not in this repository");
    assert_error(resp, 400, "MANIFEST_BLOB_UNKNOWN", &detail).await;
}

#[tokio::test]
async fn manifest_invalid_is_400() {
    let berth = Berth::start();
    let resp = put_manifest(&berth, "e/mi", "v1", Some(OCI_MANIFEST), br#"{"schemaVersion":3}"#).await;
    assert_error(
        resp,
        400,
        "MANIFEST_INVALID",
        "manifest invalid: manifest schemaVersion must be 2",
    )
    .await;
    let resp = put_manifest(&berth, "e/mi", "v1", Some(OCI_MANIFEST), b"{").await;
    assert_error(
        resp,
        400,
        "MANIFEST_INVALID",
        "manifest invalid: manifest is not valid JSON: EOF while parsing an object at line 1 column 1",
    )
    .await;
}

#[tokio::test]
async fn manifest_unknown_is_404() {
    let berth = Berth::start();
    push_image(&berth, "e/mu", "v1", &[b"layer"]).await;
    let resp = client().get(berth.url("/v2/e/mu/manifests/v2")).send().await.unwrap();
    assert_error(resp, 404, "MANIFEST_UNKNOWN", "manifest unknown to registry").await;
}

#[tokio::test]
async fn name_invalid_is_400() {
    let berth = Berth::start();
    let resp = client().get(berth.url("/v2/Up/tags/list")).send().await.unwrap();
    let detail = format!("invalid repository name or tag: repository name component \"Up\" does not match {NAME_RULE}");
    assert_error(resp, 400, "NAME_INVALID", &detail).await;
    let resp = client().get(berth.url("/v2/e/manifests/.tag")).send().await.unwrap();
    let detail = format!("invalid repository name or tag: tag \".tag\" does not match {TAG_RULE}");
    assert_error(resp, 400, "NAME_INVALID", &detail).await;
}

#[tokio::test]
async fn name_unknown_is_404() {
    let berth = Berth::start();
    let resp = client().get(berth.url("/v2/nope/tags/list")).send().await.unwrap();
    assert_error(resp, 404, "NAME_UNKNOWN", "repository nope is not known").await;
}

#[tokio::test]
async fn size_invalid_is_400() {
    let berth = Berth::start();
    let location = start_upload(&berth, "e/size").await;
    // Content-Range promises ten bytes; the body has four.
    let resp = client()
        .patch(&location)
        .header("content-range", "0-9")
        .body(b"four".to_vec())
        .send()
        .await
        .unwrap();
    assert_error(
        resp,
        400,
        "SIZE_INVALID",
        "chunk length invalid: body was 4 bytes but 10 were declared",
    )
    .await;
}

#[tokio::test]
async fn unsupported_is_405_with_allow() {
    let berth = Berth::start();
    let resp = client().put(berth.url("/v2/_catalog")).send().await.unwrap();
    assert_eq!(header(&resp, "allow"), "GET");
    assert_error(resp, 405, "UNSUPPORTED", "method not allowed on this endpoint").await;
}

#[tokio::test]
async fn unknown_routes_are_404_with_an_oci_body() {
    let berth = Berth::start();
    let c = client();
    let digest = sha256(b"x");
    // `/` redirects to the web UI (tests/it/ui.rs; with `ui.enabled: false` it is 404 too).
    let paths = [
        "/nonexistent".to_owned(),
        "/v1/users".to_owned(),
        "/v1/_ping/".to_owned(),
        "/v1/search/x".to_owned(),
        "/v2foo".to_owned(),
        "/v2/foo".to_owned(),
        "/v2/foo/bar".to_owned(),
        "/v2/foo/bar/baz".to_owned(),
        "/v2/foo/manifests/".to_owned(),
        "/v2/foo/blobs/".to_owned(),
        "/v2/foo/referrers/".to_owned(),
        "/v2/tags/list".to_owned(),
        format!("/v2/manifests/{digest}"),
        "/v2/_catalog/extra".to_owned(),
        "/admin".to_owned(),
        "/admin/nothing".to_owned(),
    ];
    for path in &paths {
        for method in ["GET", "PUT", "DELETE"] {
            let resp = c
                .request(method.parse().unwrap(), berth.url(path))
                .send()
                .await
                .unwrap();
            assert_eq!(header(&resp, "docker-distribution-api-version"), "registry/2.0");
            assert_error(resp, 404, "UNSUPPORTED", "no such endpoint").await;
        }
    }
}

#[tokio::test]
async fn methods_an_endpoint_does_not_answer_are_405_with_allow_and_an_oci_body() {
    let berth = Berth::start();
    let digest = sha256(b"x");
    let cases = [
        ("POST", "/v2/".to_owned(), "GET, HEAD"),
        ("POST", "/v2/_catalog".to_owned(), "GET"),
        ("PUT", "/v1/_ping".to_owned(), "GET, HEAD"),
        ("POST", "/v1/search".to_owned(), "GET"),
        ("DELETE", "/v2/e/tags/list".to_owned(), "GET"),
        ("POST", "/v2/e/manifests/v1".to_owned(), "GET, HEAD, PUT, DELETE"),
        ("PATCH", format!("/v2/e/manifests/{digest}"), "GET, HEAD, PUT, DELETE"),
        ("PUT", format!("/v2/e/blobs/{digest}"), "GET, HEAD, DELETE"),
        ("DELETE", format!("/v2/e/referrers/{digest}"), "GET"),
        ("GET", "/v2/e/blobs/uploads/".to_owned(), "POST"),
        (
            "POST",
            format!("/v2/e/blobs/uploads/{NIL_UUID}"),
            "GET, PATCH, PUT, DELETE",
        ),
        // Outside `/v2/`, axum writes `Allow` its own way; the body is the same OCI error.
        ("POST", "/healthz".to_owned(), "GET,HEAD"),
        ("DELETE", "/metrics".to_owned(), "GET,HEAD"),
        ("PUT", "/readyz".to_owned(), "GET,HEAD"),
        ("DELETE", "/admin/gc".to_owned(), "POST,GET,HEAD"),
        ("POST", "/admin/usage".to_owned(), "GET,HEAD"),
    ];
    let c = client();
    for (method, path, allow) in cases {
        let resp = c
            .request(method.parse().unwrap(), berth.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        assert_eq!(header(&resp, "allow"), allow, "{method} {path}");
        assert_error(resp, 405, "UNSUPPORTED", "method not allowed on this endpoint").await;
    }
}

#[tokio::test]
async fn malformed_queries_headers_and_path_parameters_answer_an_oci_body() {
    let berth = Berth::start();
    push_image(&berth, "e/query", "v1", &[b"layer"]).await;
    let c = client();
    for (path, n) in [
        ("/v2/e/query/tags/list?n=abc", "abc"),
        ("/v2/e/query/tags/list?n=%zz", "%zz"),
        ("/v2/_catalog?n=-1", "-1"),
        ("/v2/_catalog?last=a&n=1e3", "1e3"),
    ] {
        let resp = c.get(berth.url(path)).send().await.unwrap();
        let detail = format!("n={n:?} is not a number");
        assert_error(resp, 400, "PAGINATION_NUMBER_INVALID", &detail).await;
    }
    // A bad Content-Range on the closing PUT of an upload.
    let location = start_upload(&berth, "e/query").await;
    let resp = c
        .put(format!("{location}?digest={}", sha256(b"x")))
        .header("content-range", "x-1")
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_error(resp, 400, "BLOB_UPLOAD_INVALID", "malformed Content-Range \"x-1\"").await;
    // A path parameter that does not decode (axum's own extractor) on the admin API.
    for kind in ["gc", "fsck"] {
        let resp = c.get(berth.url(&format!("/admin/{kind}/%ff"))).send().await.unwrap();
        assert_error(resp, 404, "NOT_FOUND", "Invalid URL: Invalid UTF-8 in `id`").await;
    }
}

#[tokio::test]
async fn repository_names_outside_the_grammar_are_400_name_invalid() {
    let berth = Berth::start();
    let digest = sha256(b"x");
    let too_long = format!("{}/{}", "a".repeat(128), "b".repeat(127));
    assert_eq!(too_long.len(), 256);
    let names = [
        "Library/busybox",
        "library/BusyBox",
        "a/../b",
        "..",
        ".",
        "a/.",
        "%2e%2e",
        "a/%2e%2e/b",
        "%2E%2E/x",
        "a%00b",
        "%00",
        "-a",
        "a-",
        "_a",
        "a_",
        ".a",
        "a.",
        "a/-b",
        "a/b.",
        "/a",
        "a/",
        "a//b",
        "a___b",
        "a..b",
        "a._b",
        "a%2fb",
        "a%20b",
        "a:b",
        "caf%C3%A9",
        too_long.as_str(),
    ];
    for name in names {
        for (method, path) in [
            ("GET", format!("/v2/{name}/tags/list")),
            ("GET", format!("/v2/{name}/manifests/v1")),
            ("PUT", format!("/v2/{name}/manifests/v1")),
            ("DELETE", format!("/v2/{name}/manifests/{digest}")),
            ("GET", format!("/v2/{name}/referrers/{digest}")),
            ("POST", format!("/v2/{name}/blobs/uploads/")),
        ] {
            let (status, body) = raw_request(&berth, method, &path).await;
            assert_eq!(status, 400, "{method} {path}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}"));
            assert_eq!(v["errors"][0]["code"], "NAME_INVALID", "{method} {path}: {body}");
            assert_eq!(v["errors"][0]["message"], "invalid repository name");
        }
    }
    // The details say what is wrong.
    let (_, body) = raw_request(&berth, "GET", &format!("/v2/{too_long}/tags/list")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        error_json(
            "NAME_INVALID",
            "invalid repository name or tag: repository name must be 1 to 255 characters"
        )
    );
    let (_, body) = raw_request(&berth, "GET", "/v2/a/%2e%2e/b/tags/list").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        error_json(
            "NAME_INVALID",
            &format!("invalid repository name or tag: repository name component \"%2e%2e\" does not match {NAME_RULE}")
        )
    );
    // Nothing was created by any of it.
    let catalog: Value = get_json(berth.url("/v2/_catalog")).await;
    assert_eq!(catalog, json!({"repositories": []}));
}

#[tokio::test]
async fn tags_outside_the_grammar_are_400_name_invalid() {
    let berth = Berth::start();
    let (_, body) = push_image(&berth, "e/tags", "v1", &[b"layer"]).await;
    let too_long = "t".repeat(129);
    let tags = [
        ".hidden",
        "-dash",
        "..",
        "%2e%2e",
        "a%2Fb",
        "a+b",
        "a@b",
        "a%20b",
        "tag%00",
        "caf%C3%A9",
        too_long.as_str(),
    ];
    for tag in tags {
        for method in ["GET", "PUT", "DELETE"] {
            let path = format!("/v2/e/tags/manifests/{tag}");
            let (status, resp) = raw_request(&berth, method, &path).await;
            assert_eq!(status, 400, "{method} {path}: {resp}");
            let shown: String = tag.chars().take(64).collect();
            assert_eq!(
                serde_json::from_str::<Value>(&resp).unwrap(),
                error_json(
                    "NAME_INVALID",
                    &format!("invalid repository name or tag: tag {shown:?} does not match {TAG_RULE}")
                ),
                "{method} {path}"
            );
        }
    }
    // Tags at the edges of the grammar are fine: 128 characters, a leading `_`, uppercase.
    let longest = "T".repeat(128);
    let valid = ["_x", "X", "0", "a.b-c_D", "V1.0-RC_1", "a..b", "a--b", longest.as_str()];
    for tag in valid {
        let resp = put_manifest(&berth, "e/tags", tag, Some(OCI_MANIFEST), &body).await;
        assert_eq!(resp.status(), 201, "{tag}");
        let resp = client()
            .get(berth.url(&format!("/v2/e/tags/manifests/{tag}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{tag}");
    }
    let listed: Value = get_json(berth.url("/v2/e/tags/tags/list")).await;
    let mut expected: Vec<&str> = valid.to_vec();
    expected.push("v1");
    expected.sort_unstable();
    assert_eq!(listed, json!({"name": "e/tags", "tags": expected}));
}

#[tokio::test]
async fn names_at_the_edges_of_the_grammar_work() {
    let berth = Berth::start();
    let names = [
        "a/b/c/d/e",
        "a__b",
        "a.b-c",
        "a--b",
        "a_b",
        "0",
        "a/b_c/d.e/f-g",
        "x0.y1/z2",
        "a-----b",
    ];
    for name in names {
        let (digest, body) = push_image(&berth, name, "v1", &[name.as_bytes()]).await;
        for reference in ["v1", digest.as_str()] {
            let resp = client()
                .get(berth.url(&format!("/v2/{name}/manifests/{reference}")))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{name} {reference}");
            assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());
        }
        let tags: Value = get_json(berth.url(&format!("/v2/{name}/tags/list"))).await;
        assert_eq!(tags, json!({"name": name, "tags": ["v1"]}));
    }
    let catalog: Value = get_json(berth.url("/v2/_catalog")).await;
    let mut expected = names.to_vec();
    expected.sort_unstable();
    assert_eq!(catalog, json!({"repositories": expected}));
}

/// Open an upload session in `repo`; its location as an absolute URL.
async fn start_upload(berth: &Berth, repo: &str) -> String {
    let resp = client()
        .post(berth.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    berth.url(&header(&resp, "location"))
}
