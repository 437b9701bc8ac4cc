//! The blob endpoints over HTTP: `GET /v2/`, blob `GET`/`HEAD` with and without `Range`, blob
//! `DELETE` (and its refusal while a manifest of the repository references the blob), sha512
//! blobs, malformed digests (400 `DIGEST_INVALID`, never 500), per-repository isolation of
//! blobs, and repository names outside the grammar (400 `NAME_INVALID`), and 405 with `Allow`
//! for other methods. Every status, header and OCI error code is checked exactly.

use serde_json::Value;

use crate::harness::{
    Berth, client, error_codes, header, push_blob, push_image, random_bytes, raw_request, sha256, sha512,
};

#[tokio::test]
async fn base_endpoint_answers_200_with_the_api_version() {
    let berth = Berth::start();
    let c = client();
    for path in ["/v2/", "/v2"] {
        let resp = c.get(berth.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(header(&resp, "docker-distribution-api-version"), "registry/2.0");
        assert_eq!(header(&resp, "content-type"), "application/json");
        assert_eq!(resp.json::<Value>().await.unwrap(), serde_json::json!({}));
    }
    let resp = c.head(berth.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "docker-distribution-api-version"), "registry/2.0");
    assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");
    // Errors carry the version header too, so a client can tell it is talking to a registry.
    let resp = c.get(berth.url("/v2/nothing/here/at/all/x")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(header(&resp, "docker-distribution-api-version"), "registry/2.0");
}

#[tokio::test]
async fn blob_get_and_head_describe_the_blob() {
    let berth = Berth::start();
    let bytes = random_bytes(70_001, 1);
    let digest = push_blob(&berth, "blobs/get", &bytes).await;
    let url = berth.url(&format!("/v2/blobs/get/blobs/{digest}"));
    let c = client();

    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), "70001");
    assert_eq!(header(&resp, "content-type"), "application/octet-stream");
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "etag"), format!("\"{digest}\""));
    assert_eq!(header(&resp, "accept-ranges"), "bytes");
    let body = resp.bytes().await.unwrap();
    assert_eq!(sha256(&body), digest, "the body hashes to Docker-Content-Digest");
    assert_eq!(body.as_ref(), bytes.as_slice());

    let resp = c.head(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "content-length"),
        "70001",
        "HEAD reports the blob's length"
    );
    assert_eq!(header(&resp, "content-type"), "application/octet-stream");
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");
}

#[tokio::test]
async fn the_empty_blob_is_served_with_length_zero() {
    let berth = Berth::start();
    let digest = push_blob(&berth, "blobs/empty", b"").await;
    assert_eq!(
        digest,
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let url = berth.url(&format!("/v2/blobs/empty/blobs/{digest}"));
    let c = client();
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), "0");
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = c.head(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), "0");
    // No byte of an empty blob can be asked for.
    let resp = c.get(&url).header("range", "bytes=0-").send().await.unwrap();
    assert_eq!(resp.status(), 416);
    assert_eq!(header(&resp, "content-range"), "bytes */0");
}

#[tokio::test]
async fn range_requests_answer_206_with_the_slice() {
    let berth = Berth::start();
    let bytes = random_bytes(1000, 2);
    let digest = push_blob(&berth, "blobs/range", &bytes).await;
    let url = berth.url(&format!("/v2/blobs/range/blobs/{digest}"));
    let c = client();
    // (Range header, first byte, last byte)
    let cases: [(&str, usize, usize); 9] = [
        ("bytes=0-9", 0, 9),
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=999-999", 999, 999),
        ("bytes=990-5000", 990, 999), // the end is clamped to the blob
        ("bytes=900-", 900, 999),
        ("bytes=0-", 0, 999),
        ("bytes=-10", 990, 999),
        ("bytes=-5000", 0, 999), // a suffix longer than the blob is the whole blob
    ];
    for (range, first, last) in cases {
        let resp = c.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(resp.status(), 206, "{range}");
        assert_eq!(
            header(&resp, "content-range"),
            format!("bytes {first}-{last}/1000"),
            "{range}"
        );
        assert_eq!(
            header(&resp, "content-length"),
            (last - first + 1).to_string(),
            "{range}"
        );
        assert_eq!(header(&resp, "content-type"), "application/octet-stream", "{range}");
        assert_eq!(header(&resp, "docker-content-digest"), digest, "{range}");
        let body = resp.bytes().await.unwrap();
        assert_eq!(body.as_ref(), &bytes[first..=last], "{range}");
    }
    // HEAD ignores Range (RFC 9110 defines range handling for GET only).
    let resp = c.head(&url).header("range", "bytes=0-9").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), "1000");
    assert!(resp.headers().get("content-range").is_none());
    // A Range the server does not handle (several ranges, another unit, no unit) is ignored:
    // 200 with all.
    for range in ["bytes=0-1,5-6", "items=0-9", "0-9"] {
        let resp = c.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{range}");
        assert!(resp.headers().get("content-range").is_none(), "{range}");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), bytes.as_slice(), "{range}");
    }
}

#[tokio::test]
async fn an_unsatisfiable_range_answers_416_and_its_headers_match_its_body() {
    let berth = Berth::start();
    let bytes = random_bytes(1000, 3);
    let digest = push_blob(&berth, "blobs/range416", &bytes).await;
    let url = berth.url(&format!("/v2/blobs/range416/blobs/{digest}"));
    let c = client();
    // Unsatisfiable ranges, and invalid byte ranges, which RFC 9110 lets a server ignore or
    // reject and the OCI conformance suite expects rejected (its `range 500-0`).
    let ranges = [
        "bytes=1000-",
        "bytes=1000-2000",
        "bytes=5000-",
        "bytes=-0",
        "bytes=500-0",
        "bytes=1-0",
        "bytes=x-1",
        "bytes=1-x",
        "bytes=5",
        "bytes=",
        "bytes=-",
    ];
    for range in ranges {
        let resp = c.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(resp.status(), 416, "{range}");
        assert_eq!(header(&resp, "content-range"), "bytes */1000", "{range}");
        // The body is an OCI error, and the headers describe that body, not the blob.
        assert_eq!(header(&resp, "content-type"), "application/json", "{range}");
        assert!(resp.headers().get("docker-content-digest").is_none(), "{range}");
        let declared: usize = header(&resp, "content-length").parse().unwrap();
        let body = resp.bytes().await.unwrap();
        assert_eq!(declared, body.len(), "{range}: Content-Length is the error body's");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "SIZE_INVALID", "{range}");
        assert_eq!(v["errors"].as_array().unwrap().len(), 1);
    }
}

/// The OCI conformance suite's range tests, as it sends them, on a 2048-byte blob: three
/// satisfiable ranges (one clamped to the end) answer 206 with the slice, and `500-0` and
/// `5000-10000` answer 416 with `Content-Range: bytes */2048` (a 200 with the whole blob would
/// count as a failure).
#[tokio::test]
async fn the_conformance_suites_range_requests() {
    let berth = Berth::start();
    let bytes = random_bytes(2048, 5);
    let digest = push_blob(&berth, "blobs/conformance", &bytes).await;
    let url = berth.url(&format!("/v2/blobs/conformance/blobs/{digest}"));
    let c = client();
    for (range, first, last) in [
        ("bytes=500-1499", 500, 1499),
        ("bytes=500-", 500, 2047),
        ("bytes=-500", 1548, 2047),
        ("bytes=2000-5000", 2000, 2047),
    ] {
        let resp = c.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(resp.status(), 206, "{range}");
        assert_eq!(
            header(&resp, "content-range"),
            format!("bytes {first}-{last}/2048"),
            "{range}"
        );
        assert_eq!(
            header(&resp, "content-length"),
            (last - first + 1).to_string(),
            "{range}"
        );
        assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[first..=last], "{range}");
    }
    for range in ["bytes=500-0", "bytes=5000-10000"] {
        let resp = c.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(resp.status(), 416, "{range}");
        assert_eq!(header(&resp, "content-range"), "bytes */2048", "{range}");
    }
}

#[tokio::test]
async fn an_unknown_blob_is_404_blob_unknown() {
    let berth = Berth::start();
    push_blob(&berth, "blobs/unknown", b"something else").await;
    let missing = sha256(b"never pushed");
    let c = client();
    for repo in ["blobs/unknown", "no/such/repo"] {
        let url = berth.url(&format!("/v2/{repo}/blobs/{missing}"));
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{repo}");
        assert_eq!(header(&resp, "content-type"), "application/json");
        assert_eq!(error_codes(resp).await, ["BLOB_UNKNOWN"], "{repo}");

        let resp = c.head(&url).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{repo}");
        assert!(resp.headers().get("docker-content-digest").is_none());
        assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");

        let resp = c.get(&url).header("range", "bytes=0-9").send().await.unwrap();
        assert_eq!(resp.status(), 404, "{repo}: a range of an unknown blob");
        assert_eq!(error_codes(resp).await, ["BLOB_UNKNOWN"]);

        let resp = c.delete(&url).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{repo}");
        assert_eq!(error_codes(resp).await, ["BLOB_UNKNOWN"], "{repo}");
    }
}

#[tokio::test]
async fn malformed_digests_are_400_digest_invalid() {
    let berth = Berth::start();
    let good_hex = sha256(b"x").strip_prefix("sha256:").unwrap().to_owned();
    let bad = [
        format!("sha256:{}", "z".repeat(64)),               // not hex
        format!("sha256:{}g", &good_hex[..63]),             // one non-hex character
        "sha256:abc".to_owned(),                            // too short
        format!("sha256:{}", &good_hex[..63]),              // one short
        format!("sha256:{good_hex}0"),                      // one long
        format!("sha512:{good_hex}"),                       // sha256 length for sha512
        format!("sha256:{}", good_hex.to_uppercase()),      // uppercase hex
        format!("SHA256:{good_hex}"),                       // uppercase algorithm
        "md5:d41d8cd98f00b204e9800998ecf8427e".to_owned(),  // unknown algorithm
        format!("sha384:{}", "a".repeat(96)),               // unsupported algorithm
        format!("sha256+b64:{good_hex}"),                   // algorithm with a component
        good_hex.clone(),                                   // no algorithm
        "sha256".to_owned(),                                // no encoded part
        "sha256:".to_owned(),                               // empty encoded part
        ":abc".to_owned(),                                  // empty algorithm
        "sha256:%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_owned(), // an escape attempt
        format!("sha256:{}", "a".repeat(5000)),             // very long
    ];
    push_blob(&berth, "blobs/digests", b"x").await;
    let c = client();
    for d in &bad {
        let url = berth.url(&format!("/v2/blobs/digests/blobs/{d}"));
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 400, "GET {d}");
        assert_eq!(error_codes(resp).await, ["DIGEST_INVALID"], "GET {d}");

        let resp = c.head(&url).send().await.unwrap();
        assert_eq!(resp.status(), 400, "HEAD {d}");
        assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");

        let resp = c.delete(&url).send().await.unwrap();
        assert_eq!(resp.status(), 400, "DELETE {d}");
        assert_eq!(error_codes(resp).await, ["DIGEST_INVALID"], "DELETE {d}");
    }
    // The good digest still reads: none of the above disturbed anything.
    let resp = c
        .get(berth.url(&format!("/v2/blobs/digests/blobs/sha256:{good_hex}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn sha512_blobs_push_and_read() {
    let berth = Berth::start();
    let bytes = random_bytes(300_000, 4);
    let digest = sha512(&bytes);
    let c = client();
    let resp = c
        .post(berth.url(&format!("/v2/blobs/sha512/blobs/uploads/?digest={digest}")))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "location"), format!("/v2/blobs/sha512/blobs/{digest}"));

    let url = berth.url(&format!("/v2/blobs/sha512/blobs/{digest}"));
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "content-length"), "300000");
    assert_eq!(header(&resp, "content-type"), "application/octet-stream");
    let body = resp.bytes().await.unwrap();
    assert_eq!(sha512(&body), digest);

    let resp = c.head(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), "300000");
    assert_eq!(header(&resp, "docker-content-digest"), digest);

    let resp = c.get(&url).header("range", "bytes=-100").send().await.unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(header(&resp, "content-range"), "bytes 299900-299999/300000");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[299_900..]);

    // The same bytes under their sha256 digest are a different, unknown blob.
    let resp = c
        .get(berth.url(&format!("/v2/blobs/sha512/blobs/{}", sha256(&bytes))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(error_codes(resp).await, ["BLOB_UNKNOWN"]);

    // A sha512 blob deletes like any other.
    let resp = c.delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(c.get(&url).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn blob_delete_answers_202_then_the_blob_is_gone() {
    let berth = Berth::start();
    let bytes = random_bytes(5000, 5);
    let digest = push_blob(&berth, "blobs/del", &bytes).await;
    let url = berth.url(&format!("/v2/blobs/del/blobs/{digest}"));
    let c = client();
    let resp = c.delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "content-length"), "0");
    assert!(resp.bytes().await.unwrap().is_empty());

    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(error_codes(resp).await, ["BLOB_UNKNOWN"]);
    let resp = c.head(&url).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = c.delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), 404, "a second DELETE");
    assert_eq!(error_codes(resp).await, ["BLOB_UNKNOWN"]);

    // Pushing it again brings it back.
    push_blob(&berth, "blobs/del", &bytes).await;
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), bytes.as_slice());
}

#[tokio::test]
async fn blob_delete_is_refused_while_a_manifest_of_the_repository_references_it() {
    let berth = Berth::start();
    let layer = random_bytes(4096, 6);
    let (manifest, body) = push_image(&berth, "blobs/inuse", "v1", &[&layer]).await;
    let parsed: Value = serde_json::from_slice(&body).unwrap();
    let config = parsed["config"]["digest"].as_str().unwrap().to_owned();
    let layer_digest = sha256(&layer);
    // The same layer, unreferenced, in another repository.
    push_blob(&berth, "blobs/free", &layer).await;
    let c = client();

    for d in [&layer_digest, &config] {
        let resp = c
            .delete(berth.url(&format!("/v2/blobs/inuse/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{d} is referenced by {manifest}");
        assert_eq!(
            header(&resp, "allow"),
            "GET, HEAD",
            "for now the blob only answers reads"
        );
        assert_eq!(error_codes(resp).await, ["UNSUPPORTED"]);
        let resp = c
            .get(berth.url(&format!("/v2/blobs/inuse/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{d} is still there");
    }
    // A manifest in one repository does not pin the blob's link in another.
    let resp = c
        .delete(berth.url(&format!("/v2/blobs/free/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let resp = c
        .get(berth.url(&format!("/v2/blobs/inuse/blobs/{layer_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), layer.as_slice());

    // Once the manifest is gone, so is the refusal.
    let resp = c
        .delete(berth.url(&format!("/v2/blobs/inuse/manifests/{manifest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    for d in [&layer_digest, &config] {
        let url = berth.url(&format!("/v2/blobs/inuse/blobs/{d}"));
        let resp = c.delete(&url).send().await.unwrap();
        assert_eq!(resp.status(), 202, "{d}");
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{d}");
        assert_eq!(error_codes(resp).await, ["BLOB_UNKNOWN"]);
    }
}

#[tokio::test]
async fn a_blob_is_readable_only_from_repositories_it_was_pushed_or_mounted_to() {
    let berth = Berth::start();
    let bytes = random_bytes(2048, 7);
    let digest = push_blob(&berth, "iso/a", &bytes).await;
    let c = client();
    let blob_url = |repo: &str| berth.url(&format!("/v2/{repo}/blobs/{digest}"));

    // Other repositories, including ones whose names are prefixes or extensions of "iso/a".
    for repo in ["iso/b", "iso", "iso/a/sub", "iso/aa", "a"] {
        let resp = c.get(blob_url(repo)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "GET in {repo}");
        assert_eq!(error_codes(resp).await, ["BLOB_UNKNOWN"], "{repo}");
        let resp = c.head(blob_url(repo)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "HEAD in {repo}");
        let resp = c.get(blob_url(repo)).header("range", "bytes=0-9").send().await.unwrap();
        assert_eq!(resp.status(), 404, "range GET in {repo}");
        let resp = c.delete(blob_url(repo)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "DELETE in {repo}");
        assert_eq!(error_codes(resp).await, ["BLOB_UNKNOWN"]);
    }
    assert_eq!(c.get(blob_url("iso/a")).send().await.unwrap().status(), 200);

    // Pushed into b: now readable there.
    push_blob(&berth, "iso/b", &bytes).await;
    let resp = c.get(blob_url("iso/b")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), bytes.as_slice());

    // Mounted into c: now readable there.
    let resp = c
        .post(berth.url(&format!("/v2/iso/c/blobs/uploads/?mount={digest}&from=iso/a")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = c.get(blob_url("iso/c")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), bytes.as_slice());

    // Deleting from a leaves b and c alone.
    assert_eq!(c.delete(blob_url("iso/a")).send().await.unwrap().status(), 202);
    assert_eq!(c.get(blob_url("iso/a")).send().await.unwrap().status(), 404);
    assert_eq!(c.get(blob_url("iso/b")).send().await.unwrap().status(), 200);
    assert_eq!(c.head(blob_url("iso/c")).send().await.unwrap().status(), 200);
    // Still unknown where it never went.
    assert_eq!(c.head(blob_url("iso")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn repository_names_outside_the_grammar_are_400_name_invalid() {
    let berth = Berth::start();
    let digest = push_blob(&berth, "names/ok", b"named").await;
    let c = client();
    let too_long = format!("{}/{}", "a".repeat(200), "b".repeat(55)); // 256 characters
    assert_eq!(too_long.len(), 256);
    let very_long = "x".repeat(300);
    let invalid = [
        "Upper",
        "names/Ok",
        "UPPER/case",
        "trailing/",
        "names/ok/",
        "/leading",
        "double//slash",
        "a..b",
        "-dash",
        "dash-",
        "_under",
        "a___b",
        "a.-b",
        "sp%20ace",
        "a%2fb",
        too_long.as_str(),
        very_long.as_str(),
    ];
    for name in invalid {
        let resp = c
            .get(berth.url(&format!("/v2/{name}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "GET blob in {name:?}");
        assert_eq!(error_codes(resp).await, ["NAME_INVALID"], "{name:?}");

        let resp = c
            .head(berth.url(&format!("/v2/{name}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "HEAD blob in {name:?}");

        let resp = c
            .delete(berth.url(&format!("/v2/{name}/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "DELETE blob in {name:?}");
        assert_eq!(error_codes(resp).await, ["NAME_INVALID"], "{name:?}");

        let resp = c
            .post(berth.url(&format!("/v2/{name}/blobs/uploads/?digest={digest}")))
            .body(b"named".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "POST upload in {name:?}");
        assert_eq!(error_codes(resp).await, ["NAME_INVALID"], "{name:?}");
    }

    // Dot segments never reach the server through an HTTP client that normalises URLs, so
    // send them as raw requests.
    for name in [
        "names/../names/ok",
        "..",
        "names/./ok",
        "%2e%2e/names/ok",
        "names/%2E%2E/ok",
        ".",
    ] {
        let (status, body) = raw_request(&berth, "GET", &format!("/v2/{name}/blobs/{digest}")).await;
        assert_eq!(status, 400, "raw GET blob in {name:?}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "NAME_INVALID", "{name:?}");
        let (status, body) = raw_request(&berth, "POST", &format!("/v2/{name}/blobs/uploads/")).await;
        assert_eq!(status, 400, "raw POST upload in {name:?}: {body}");
    }

    // The longest name allowed (255 characters, several components) is accepted.
    let longest = format!("{}/{}", "a".repeat(200), "b".repeat(54));
    assert_eq!(longest.len(), 255);
    let d = push_blob(&berth, &longest, b"long name").await;
    let resp = c
        .get(berth.url(&format!("/v2/{longest}/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"long name");
    // As are the separators the grammar allows.
    for name in ["a.b", "a_b", "a__b", "a-b", "a---b", "a/b/c/d/e/f", "0/9"] {
        push_blob(&berth, name, b"separators").await;
    }
}

#[tokio::test]
async fn other_methods_on_a_blob_are_405_with_allow() {
    let berth = Berth::start();
    let digest = push_blob(&berth, "blobs/methods", b"methods").await;
    let url = berth.url(&format!("/v2/blobs/methods/blobs/{digest}"));
    let c = client();
    for method in ["PUT", "POST", "PATCH"] {
        let resp = c
            .request(method.parse().unwrap(), &url)
            .body(b"methods".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method}");
        assert_eq!(header(&resp, "allow"), "GET, HEAD, DELETE", "{method}");
        assert_eq!(error_codes(resp).await, ["UNSUPPORTED"], "{method}");
    }
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"methods");
    for method in ["POST", "PUT", "DELETE"] {
        let resp = c
            .request(method.parse().unwrap(), berth.url("/v2/"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} /v2/");
        assert_eq!(header(&resp, "allow"), "GET, HEAD", "{method} /v2/");
    }
}

/// Blob bodies on plain connections go out with `sendfile` from mapped windows of 4 MiB
/// (`http.sendfile`, on by default), or are copied from the windows when it is off. Either way
/// a blob spanning several windows, ranges across a window boundary and inside the last
/// window, and the requests that follow on the same keep-alive connection must be exact.
#[tokio::test]
async fn multi_window_blobs_and_ranges_are_exact_with_and_without_sendfile() {
    const WINDOW: usize = 4 << 20;
    let bytes = random_bytes(2 * WINDOW + 12_345, 7);
    for sendfile in ["true", "false"] {
        let berth = Berth::builder().env("BERTH_HTTP_SENDFILE", sendfile).start();
        let digest = push_blob(&berth, "blobs/windows", &bytes).await;
        let url = berth.url(&format!("/v2/blobs/windows/blobs/{digest}"));
        // One client, so the requests share a connection where reqwest can reuse it.
        let c = client();
        // sendfile(2) counts what it sends as read by the process (`rchar`); reading a mapped
        // window does not. So this tells whether the body really went out with sendfile.
        let read_before = rchar(berth.pid());
        for _ in 0..2 {
            let resp = c.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 200, "sendfile {sendfile}");
            assert_eq!(header(&resp, "content-length"), bytes.len().to_string());
            let body = resp.bytes().await.unwrap();
            assert!(
                body.as_ref() == bytes.as_slice(),
                "sendfile {sendfile}: whole body differs"
            );
        }
        let read = rchar(berth.pid()) - read_before;
        if berth.on_s3() {
            // Bytes from object storage are copied from its responses; sendfile is the
            // filesystem backend's capability.
        } else if sendfile == "true" {
            assert!(
                read >= 2 * bytes.len() as u64,
                "sent with sendfile: rchar grew by {read}"
            );
        } else {
            assert!(
                read < bytes.len() as u64,
                "copied from the mapping: rchar grew by {read}"
            );
        }
        let ranges = [
            (WINDOW - 10, WINDOW + 9),
            (0, 0),
            (2 * WINDOW + 5, bytes.len() - 1),
            (1, 3 * WINDOW / 2),
        ];
        for (start, end) in ranges {
            let resp = c
                .get(&url)
                .header("range", format!("bytes={start}-{end}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 206, "sendfile {sendfile}: {start}-{end}");
            assert_eq!(
                header(&resp, "content-range"),
                format!("bytes {start}-{end}/{}", bytes.len())
            );
            let body = resp.bytes().await.unwrap();
            assert!(
                body.as_ref() == &bytes[start..=end],
                "sendfile {sendfile}: range {start}-{end} differs"
            );
        }
        // The connection is still in step: a JSON answer after the blob bodies.
        let resp = c.get(berth.url("/v2/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "{}");
    }
}

/// Bytes the process has read through system calls (`rchar` in `/proc/<pid>/io`).
fn rchar(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/<pid>/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("an rchar line")
}
