//! Every failure carries the OCI error body `{"errors":[{"code","message","detail"}]}` as
//! JSON. A snapshot per code pins the exact status and body, so a changed message shows up
//! here as a diff; unknown routes and bad query values get the same treatment; names and tags
//! follow the spec's grammar.

use serde_json::{Value, json};

use crate::harness::{Berth, client, get_json, push_image, raw_request};

const ZERO: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// The status, Content-Type and JSON body of a response.
async fn answer(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    (status, ct, resp.json().await.unwrap())
}

fn body(code: &str, message: &str, detail: &str) -> Value {
    json!({"errors": [{"code": code, "message": message, "detail": detail}]})
}

/// One request per code (`location`: an open upload of repository `r`), with the status and
/// body it must get.
#[allow(clippy::too_many_lines)] // one table of cases, one per code
fn cases(berth: &Berth, c: &reqwest::Client, location: &str) -> Vec<(reqwest::RequestBuilder, u16, Value)> {
    let url = |p: &str| berth.url(p);
    let manifest_missing_blob = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": ZERO, "size": 1}, "layers": []});
    vec![
        (
            c.get(url(&format!("/v2/r/blobs/{ZERO}"))),
            404,
            body("BLOB_UNKNOWN", "blob unknown to registry", "blob unknown to registry"),
        ),
        (
            c.patch(url(location)).header("content-range", "5-7").body("abc"),
            416,
            body(
                "BLOB_UPLOAD_INVALID",
                "blob upload invalid",
                "chunk out of order: the upload is at offset 0",
            ),
        ),
        (
            c.get(url("/v2/r/blobs/uploads/00000000-0000-0000-0000-000000000000")),
            404,
            body(
                "BLOB_UPLOAD_UNKNOWN",
                "blob upload unknown to registry",
                "blob upload unknown to registry",
            ),
        ),
        (
            c.get(url("/v2/r/blobs/sha256:zz")),
            400,
            body(
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
                "invalid digest: sha256 digest must be 64 lowercase hex characters",
            ),
        ),
        (
            c.put(url("/v2/r/manifests/latest"))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(manifest_missing_blob.to_string()),
            400,
            body(
                "MANIFEST_BLOB_UNKNOWN",
                "manifest references a blob unknown to registry",
                &format!("manifest references blob {ZERO}, which is not in this repository"),
            ),
        ),
        (
            c.put(url("/v2/r/manifests/latest"))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body("nope"),
            400,
            body(
                "MANIFEST_INVALID",
                "manifest invalid",
                "manifest invalid: manifest is not valid JSON: expected ident at line 1 column 2",
            ),
        ),
        (
            c.get(url("/v2/r/manifests/nope")),
            404,
            body(
                "MANIFEST_UNKNOWN",
                "manifest unknown to registry",
                "manifest unknown to registry",
            ),
        ),
        (
            c.get(url("/v2/UP/tags/list")),
            400,
            body(
                "NAME_INVALID",
                "invalid repository name",
                "invalid repository name or tag: repository name component \"UP\" does not match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*",
            ),
        ),
        (
            c.get(url("/v2/nobody/tags/list")),
            404,
            body(
                "NAME_UNKNOWN",
                "repository name not known to registry",
                "repository nobody is not known",
            ),
        ),
        (
            c.patch(url(location)).header("content-range", "0-9").body("abc"),
            400,
            body(
                "SIZE_INVALID",
                "provided length did not match content length",
                "chunk length invalid: body was 3 bytes but 10 were declared",
            ),
        ),
        (
            c.post(url("/v2/r/tags/list")),
            405,
            body(
                "UNSUPPORTED",
                "the operation is unsupported",
                "method not allowed on this endpoint",
            ),
        ),
        (
            c.get(url("/v2/_catalog?n=abc")),
            400,
            body(
                "PAGINATION_NUMBER_INVALID",
                "invalid number of results requested",
                "n=\"abc\" is not a number",
            ),
        ),
    ]
}

#[tokio::test]
async fn each_error_code_has_its_status_and_exact_body() {
    let berth = Berth::start();
    push_image(&berth, "r", "v1", &[b"layer"]).await;
    let c = client();
    let upload = c.post(berth.url("/v2/r/blobs/uploads/")).send().await.unwrap();
    let location = upload.headers()["location"].to_str().unwrap().to_owned();
    for (request, status, expected) in cases(&berth, &c, &location) {
        let request = request.build().unwrap();
        let what = format!("{} {}", request.method(), request.url().path());
        let (got_status, ct, got) = answer(c.execute(request).await.unwrap()).await;
        assert_eq!((got_status, got), (status, expected), "{what}");
        assert_eq!(ct, "application/json", "{what}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_oci_errors() {
    let berth = Berth::start();
    let not_found = body("UNSUPPORTED", "the operation is unsupported", "no such endpoint");
    for path in [
        "/v2/foo/bar",
        "/nonexistent",
        "/v2/foo/blobs",
        "/v2/foo/manifests/",
        "/v2/foo/blobs/uploads/a/b",
    ] {
        let (status, ct, v) = answer(client().get(berth.url(path)).send().await.unwrap()).await;
        assert_eq!((status, v), (404, not_found.clone()), "{path}");
        assert_eq!(ct, "application/json");
    }
    let resp = client().put(berth.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(answer(resp).await.2["errors"][0]["code"], "UNSUPPORTED");
}

#[tokio::test]
async fn names_and_tags_follow_the_spec_grammar() {
    let berth = Berth::start();
    // Valid edge cases work end to end.
    for repo in ["a/b/c/d/e/f/g", "a__b", "a.b-c", "a--b", "0/9"] {
        push_image(&berth, repo, "t", &[b"x"]).await;
    }
    for tag in ["A", "_", "v1.0-rc_1", &"t".repeat(128)] {
        push_image(&berth, "tags/ok", tag, &[b"x"]).await;
    }
    // Invalid names: 400 NAME_INVALID, before anything is stored.
    let long = "a".repeat(256);
    let bad_names = [
        "A/b",
        "a___b",
        "a/",
        "/a",
        "a//b",
        "-a",
        "a-",
        ".a",
        "a..b",
        "a/../b",
        "%2e%2e/b",
        "a%00b",
        long.as_str(),
    ];
    for name in bad_names {
        let (status, body) = raw_request(&berth, "GET", &format!("/v2/{name}/tags/list")).await;
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{name}: {body}"));
        // `a/`, `/a` and `a//b` may fail as routes rather than names; any of those is a 4xx
        // OCI error that never reaches storage.
        if status == 404 {
            assert_eq!(v["errors"][0]["code"], "UNSUPPORTED", "{name}: {body}");
        } else {
            assert_eq!(
                (status, v["errors"][0]["code"].clone()),
                (400, json!("NAME_INVALID")),
                "{name}: {body}"
            );
        }
    }
    // Invalid tags.
    let long_tag = "t".repeat(129);
    for tag in [".t", "-t", "t+x", "t%00", long_tag.as_str()] {
        let (status, body) = raw_request(&berth, "PUT", &format!("/v2/tags/ok/manifests/{tag}")).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status, v["errors"][0]["code"].clone()),
            (400, json!("NAME_INVALID")),
            "{tag}: {body}"
        );
    }
    let catalog: Value = get_json(berth.url("/v2/_catalog")).await;
    assert_eq!(catalog["repositories"].as_array().unwrap().len(), 6, "{catalog}");
}
