//! The upload endpoints over HTTP: starting a session (`POST`), monolithic uploads (single
//! `POST ?digest=`, and `POST` then `PUT`), streamed and chunked `PATCH`es with `Content-Range`
//! (out-of-order and overlapping chunks answer 416), session status (`GET`), completion
//! (`PUT ?digest=`, with or without a last chunk), digest mismatches that store nothing,
//! cancellation (`DELETE`), unknown sessions, cross-repository mounts with and without `from`,
//! sha512 uploads (hashed as they arrive when the session asked for sha512 with
//! `?digest-algorithm=`), 20 MiB uploads, and 405 with `Allow` for other methods. Every
//! `Location` is followed as given, never rebuilt.

use futures_util::stream;

use crate::harness::{Berth, client, error_codes, header, push_blob, random_bytes, sha256, sha512};

const MIB: usize = 1 << 20;

#[tokio::test]
async fn post_opens_a_session() {
    let berth = Berth::start();
    let c = client();
    for path in ["/v2/up/start/blobs/uploads/", "/v2/up/start/blobs/uploads"] {
        let resp = c.post(berth.url(path)).body(Vec::new()).send().await.unwrap();
        assert_eq!(resp.status(), 202, "{path}");
        let location = header(&resp, "location");
        let uuid = header(&resp, "docker-upload-uuid");
        assert!(!uuid.is_empty());
        assert_eq!(location, format!("/v2/up/start/blobs/uploads/{uuid}"), "{path}");
        // Nothing received yet: "0-0", as CNCF Distribution reports an empty session.
        assert_eq!(header(&resp, "range"), "0-0");
        assert_eq!(header(&resp, "content-length"), "0");
        assert!(resp.bytes().await.unwrap().is_empty());

        let resp = c.get(resolve(&berth, &location)).send().await.unwrap();
        assert_eq!(resp.status(), 204, "the new session is live");
        assert_eq!(header(&resp, "range"), "0-0");
    }
    // Two sessions are two different sessions.
    let a = start(&berth, "up/start").await;
    let b = start(&berth, "up/start").await;
    assert_ne!(a, b);
}

#[tokio::test]
async fn a_single_post_with_digest_stores_the_blob() {
    let berth = Berth::start();
    let bytes = random_bytes(123_456, 1);
    let digest = sha256(&bytes);
    let c = client();
    let resp = c
        .post(berth.url(&format!("/v2/up/mono/blobs/uploads/?digest={digest}")))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "location"), format!("/v2/up/mono/blobs/{digest}"));
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "content-length"), "0");
    let location = header(&resp, "location");
    assert_blob(&resolve(&berth, &location), &bytes).await;

    // A percent-encoded digest parameter is the same digest, and a repeated push is fine.
    let encoded = digest.replace(':', "%3A");
    let resp = c
        .post(berth.url(&format!("/v2/up/mono/blobs/uploads/?digest={encoded}")))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);

    // The empty blob.
    let empty = sha256(b"");
    let resp = c
        .post(berth.url(&format!("/v2/up/mono/blobs/uploads/?digest={empty}")))
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_blob(&berth.url(&format!("/v2/up/mono/blobs/{empty}")), b"").await;
}

#[tokio::test]
async fn a_single_post_with_the_wrong_digest_stores_nothing() {
    let berth = Berth::start();
    let bytes = random_bytes(10_000, 2);
    let claimed = sha256(b"something else entirely");
    let c = client();
    let resp = c
        .post(berth.url(&format!("/v2/up/monobad/blobs/uploads/?digest={claimed}")))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["DIGEST_INVALID"]);
    assert_stored_nowhere(&berth, "up/monobad", &claimed).await;
    assert_stored_nowhere(&berth, "up/monobad", &sha256(&bytes)).await;

    // A malformed digest parameter is refused the same way.
    let resp = c
        .post(berth.url("/v2/up/monobad/blobs/uploads/?digest=sha256:nothex"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["DIGEST_INVALID"]);
}

#[tokio::test]
async fn post_then_put_uploads_monolithically() {
    let berth = Berth::start();
    let bytes = random_bytes(65_537, 3);
    let digest = sha256(&bytes);
    let location = start(&berth, "up/postput").await;
    let resp = client()
        .put(with_digest(&location, &digest))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "location"), format!("/v2/up/postput/blobs/{digest}"));
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "content-length"), "0");
    assert_blob(&resolve(&berth, &header(&resp, "location")), &bytes).await;
    // The session is over.
    let resp = client().get(&location).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(error_codes(resp).await, ["BLOB_UPLOAD_UNKNOWN"]);
}

#[tokio::test]
async fn a_streamed_patch_then_put_completes() {
    let berth = Berth::start();
    let bytes = random_bytes(200_000, 4);
    let digest = sha256(&bytes);
    let c = client();
    let location = start(&berth, "up/stream").await;
    // No Content-Range: the body is appended as it comes. Two such PATCHes in a row.
    let resp = c.patch(&location).body(bytes[..150_000].to_vec()).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "range"), "0-149999");
    assert_eq!(header(&resp, "content-length"), "0");
    let location = follow(&berth, &resp, &location);
    let resp = c.patch(&location).body(bytes[150_000..].to_vec()).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "range"), "0-199999");
    let location = follow(&berth, &resp, &location);
    let resp = c.put(with_digest(&location, &digest)).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "location"), format!("/v2/up/stream/blobs/{digest}"));
    assert_blob(&resolve(&berth, &header(&resp, "location")), &bytes).await;
}

#[tokio::test]
async fn three_chunks_with_content_range_then_put() {
    let berth = Berth::start();
    let bytes = random_bytes(30_001, 5);
    let digest = sha256(&bytes);
    let location = start(&berth, "up/chunks").await;
    let uuid = location.rsplit('/').next().unwrap().to_owned();
    let mut location = location;
    for (first, last) in [(0, 9_999), (10_000, 19_999), (20_000, 30_000)] {
        let resp = patch_chunk(&location, &bytes, first, last).await;
        assert_eq!(resp.status(), 202, "chunk {first}-{last}");
        assert_eq!(header(&resp, "range"), format!("0-{last}"));
        assert_eq!(header(&resp, "docker-upload-uuid"), uuid);
        assert_eq!(header(&resp, "content-length"), "0");
        location = follow(&berth, &resp, &location);
        assert!(location.ends_with(&format!("/v2/up/chunks/blobs/uploads/{uuid}")));
    }
    let resp = client().put(with_digest(&location, &digest)).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "location"), format!("/v2/up/chunks/blobs/{digest}"));
    assert_blob(&resolve(&berth, &header(&resp, "location")), &bytes).await;
}

/// A large refused chunk: the server read (and threw away) what the client was sending
/// before answering, so a client that writes its whole body first gets the 416 rather than a
/// connection reset (hyper, and so reqwest, reported a broken pipe: seen on S3, whose chunks
/// are 5 MiB and more).
#[tokio::test]
async fn a_large_out_of_order_chunk_gets_its_416() {
    let berth = Berth::start();
    let location = start(&berth, "up/large").await;
    let chunk = random_bytes(8 << 20, 9);
    for _ in 0..2 {
        let resp = client()
            .patch(&location)
            .header("content-range", format!("1-{}", chunk.len()))
            .body(chunk.clone())
            .send()
            .await
            .expect("an answer, not a reset connection");
        assert_eq!(resp.status(), 416);
        assert_eq!(header(&resp, "range"), "0-0");
    }
}

#[tokio::test]
async fn out_of_order_and_overlapping_chunks_answer_416_and_the_session_survives() {
    let berth = Berth::start();
    let bytes = random_bytes(3000, 6);
    let digest = sha256(&bytes);
    let location = start(&berth, "up/order").await;

    // The first chunk must start at 0.
    let resp = patch_chunk(&location, &bytes, 1, 999).await;
    assert_eq!(resp.status(), 416, "first chunk not at 0");
    assert_eq!(header(&resp, "range"), "0-0");
    assert_eq!(error_codes(resp).await, ["BLOB_UPLOAD_INVALID"]);

    let resp = patch_chunk(&location, &bytes, 0, 999).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "range"), "0-999");
    let location = follow(&berth, &resp, &location);

    // (first, last, what is wrong with it)
    for (first, last, why) in [
        (1001, 1999, "a gap of one byte"),
        (2000, 2999, "skips a whole chunk"),
        (999, 1999, "overlaps the last byte received"),
        (0, 999, "the same chunk again"),
        (500, 1500, "overlaps half a chunk"),
        (0, 2999, "starts over"),
    ] {
        let resp = patch_chunk(&location, &bytes, first, last).await;
        assert_eq!(resp.status(), 416, "{first}-{last}: {why}");
        // The 416 tells where the session stands, and its body is an OCI error.
        assert_eq!(header(&resp, "range"), "0-999", "{why}");
        assert_eq!(header(&resp, "content-type"), "application/json");
        assert_eq!(error_codes(resp).await, ["BLOB_UPLOAD_INVALID"], "{why}");
        // The refused chunk changed nothing.
        let resp = client().get(&location).send().await.unwrap();
        assert_eq!(resp.status(), 204, "{why}");
        assert_eq!(header(&resp, "range"), "0-999", "{why}");
    }
    // An out-of-order last chunk on the closing PUT is refused the same way.
    let resp = client()
        .put(with_digest(&location, &digest))
        .header("content-range", "2000-2999")
        .body(bytes[2000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 416);
    assert_eq!(header(&resp, "range"), "0-999");
    assert_eq!(error_codes(resp).await, ["BLOB_UPLOAD_INVALID"]);
    assert_stored_nowhere(&berth, "up/order", &digest).await;

    // The client resumes from the reported offset and finishes.
    let resp = patch_chunk(&location, &bytes, 1000, 1999).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "range"), "0-1999");
    let location = follow(&berth, &resp, &location);
    let resp = patch_chunk(&location, &bytes, 2000, 2999).await;
    assert_eq!(resp.status(), 202);
    let resp = client().put(with_digest(&location, &digest)).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_blob(&berth.url(&format!("/v2/up/order/blobs/{digest}")), &bytes).await;
}

#[tokio::test]
async fn a_malformed_or_short_chunk_is_refused_and_rolled_back() {
    let berth = Berth::start();
    let bytes = random_bytes(2000, 7);
    let digest = sha256(&bytes);
    let c = client();
    let location = start(&berth, "up/badrange").await;
    let resp = patch_chunk(&location, &bytes, 0, 999).await;
    assert_eq!(resp.status(), 202);

    for range in ["1000-", "abc", "1000-999", "-1999", "1000:1999"] {
        let resp = c
            .patch(&location)
            .header("content-range", range)
            .body(bytes[1000..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "Content-Range {range:?}");
        assert_eq!(error_codes(resp).await, ["BLOB_UPLOAD_INVALID"], "{range:?}");
    }
    // A body that is not as long as its Content-Range says: SIZE_INVALID ("provided length did
    // not match content length"), and nothing of it kept.
    for (range, body) in [("1000-1999", &bytes[1000..1500]), ("1000-1499", &bytes[1000..2000])] {
        let resp = c
            .patch(&location)
            .header("content-range", range)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{range} with {} bytes", body.len());
        assert_eq!(error_codes(resp).await, ["SIZE_INVALID"]);
        let resp = c.get(&location).send().await.unwrap();
        assert_eq!(resp.status(), 204);
        assert_eq!(header(&resp, "range"), "0-999", "rolled back to where it was");
    }
    let resp = patch_chunk(&location, &bytes, 1000, 1999).await;
    assert_eq!(resp.status(), 202);
    let resp = c.put(with_digest(&location, &digest)).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_blob(&berth.url(&format!("/v2/up/badrange/blobs/{digest}")), &bytes).await;
}

#[tokio::test]
async fn get_on_the_upload_location_reports_progress() {
    let berth = Berth::start();
    let bytes = random_bytes(4096, 8);
    let location = start(&berth, "up/status").await;
    let uuid = location.rsplit('/').next().unwrap().to_owned();
    let c = client();
    for (first, last) in [(0, 0), (1, 1023), (1024, 4095)] {
        let resp = patch_chunk(&location, &bytes, first, last).await;
        assert_eq!(resp.status(), 202);
        let resp = c.get(&location).send().await.unwrap();
        assert_eq!(resp.status(), 204);
        assert_eq!(header(&resp, "range"), format!("0-{last}"));
        assert_eq!(header(&resp, "docker-upload-uuid"), uuid);
        assert_eq!(
            resolve(&berth, &header(&resp, "location")),
            location,
            "the status names the same session"
        );
        assert!(resp.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn put_may_carry_the_last_chunk() {
    let berth = Berth::start();
    let c = client();

    // After a ranged PATCH, a ranged last chunk.
    let bytes = random_bytes(5000, 9);
    let digest = sha256(&bytes);
    let location = start(&berth, "up/lastchunk").await;
    let resp = patch_chunk(&location, &bytes, 0, 2999).await;
    let location = follow(&berth, &resp, &location);
    let resp = c
        .put(with_digest(&location, &digest))
        .header("content-type", "application/octet-stream")
        .header("content-range", "3000-4999")
        .body(bytes[3000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "location"), format!("/v2/up/lastchunk/blobs/{digest}"));
    assert_blob(&resolve(&berth, &header(&resp, "location")), &bytes).await;

    // After a streamed PATCH, an unranged last chunk.
    let bytes = random_bytes(7000, 10);
    let digest = sha256(&bytes);
    let location = start(&berth, "up/lastchunk").await;
    let resp = c.patch(&location).body(bytes[..1].to_vec()).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "range"), "0-0");
    let location = follow(&berth, &resp, &location);
    let resp = c
        .put(with_digest(&location, &digest))
        .body(bytes[1..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_blob(&berth.url(&format!("/v2/up/lastchunk/blobs/{digest}")), &bytes).await;
}

#[tokio::test]
async fn put_with_the_wrong_digest_stores_nothing() {
    let berth = Berth::start();
    let c = client();
    let bytes = random_bytes(9000, 11);
    let wrong = sha256(b"not these bytes");

    // Wrong digest on the closing PUT of a chunked upload.
    let location = start(&berth, "up/putbad").await;
    let resp = patch_chunk(&location, &bytes, 0, 8999).await;
    assert_eq!(resp.status(), 202);
    let resp = c.put(with_digest(&location, &wrong)).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["DIGEST_INVALID"]);
    assert_stored_nowhere(&berth, "up/putbad", &wrong).await;
    assert_stored_nowhere(&berth, "up/putbad", &sha256(&bytes)).await;

    // Wrong digest on a PUT carrying the whole blob; also a sha512 digest of other bytes.
    for wrong in [wrong.clone(), sha512(b"not these bytes")] {
        let location = start(&berth, "up/putbad").await;
        let resp = c
            .put(with_digest(&location, &wrong))
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{wrong}");
        assert_eq!(error_codes(resp).await, ["DIGEST_INVALID"]);
        assert_stored_nowhere(&berth, "up/putbad", &wrong).await;
    }
    assert_stored_nowhere(&berth, "up/putbad", &sha256(&bytes)).await;
    assert_stored_nowhere(&berth, "up/putbad", &sha512(&bytes)).await;
}

#[tokio::test]
async fn put_without_a_valid_digest_is_400_and_leaves_the_session_open() {
    let berth = Berth::start();
    let c = client();
    let bytes = random_bytes(1000, 12);
    let digest = sha256(&bytes);
    let location = start(&berth, "up/nodigest").await;
    let resp = patch_chunk(&location, &bytes, 0, 499).await;
    assert_eq!(resp.status(), 202);

    let resp = c.put(&location).send().await.unwrap();
    assert_eq!(resp.status(), 400, "no digest parameter");
    assert_eq!(error_codes(resp).await, ["DIGEST_INVALID"]);
    for bad in [
        "",
        "sha256:abc",
        "sha256:XYZ",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "latest",
    ] {
        let resp = c.put(with_digest(&location, bad)).send().await.unwrap();
        assert_eq!(resp.status(), 400, "digest={bad:?}");
        assert_eq!(error_codes(resp).await, ["DIGEST_INVALID"], "digest={bad:?}");
    }
    // The upload was not considered complete, nor spoilt: it goes on.
    let resp = c.get(&location).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "range"), "0-499");
    let resp = c
        .put(with_digest(&location, &digest))
        .header("content-range", "500-999")
        .body(bytes[500..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_blob(&berth.url(&format!("/v2/up/nodigest/blobs/{digest}")), &bytes).await;
}

#[tokio::test]
async fn delete_cancels_an_upload() {
    let berth = Berth::start();
    let c = client();
    let bytes = random_bytes(1000, 13);
    let location = start(&berth, "up/cancel").await;
    let resp = patch_chunk(&location, &bytes, 0, 999).await;
    assert_eq!(resp.status(), 202);

    let resp = c.delete(&location).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.bytes().await.unwrap().is_empty());

    let resp = c.get(&location).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(error_codes(resp).await, ["BLOB_UPLOAD_UNKNOWN"]);
    let resp = patch_chunk(&location, &bytes, 0, 999).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(error_codes(resp).await, ["BLOB_UPLOAD_UNKNOWN"]);
    let resp = c
        .put(with_digest(&location, &sha256(&bytes)))
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(error_codes(resp).await, ["BLOB_UPLOAD_UNKNOWN"]);
    let resp = c.delete(&location).send().await.unwrap();
    assert_eq!(resp.status(), 404, "a second DELETE");
    assert_eq!(error_codes(resp).await, ["BLOB_UPLOAD_UNKNOWN"]);
    assert_stored_nowhere(&berth, "up/cancel", &sha256(&bytes)).await;
}

#[tokio::test]
async fn unknown_upload_sessions_are_404_blob_upload_unknown() {
    let berth = Berth::start();
    let c = client();
    let digest = sha256(b"x");
    // A session of another repository, and one that has been completed.
    let other = start(&berth, "up/other").await;
    let other_id = other.rsplit('/').next().unwrap().to_owned();
    let done = start(&berth, "up/unknown").await;
    let resp = c
        .put(with_digest(&done, &digest))
        .body(b"x".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let done_id = done.rsplit('/').next().unwrap().to_owned();
    let long = "f".repeat(200);

    for id in [
        "00000000-0000-4000-8000-000000000000",
        "9b2e4c3a-5f4e-4a57-8d2b-1f2c3d4e5f60",
        "not-a-uuid",
        "0",
        long.as_str(),
        other_id.as_str(),
        done_id.as_str(),
    ] {
        let url = berth.url(&format!("/v2/up/unknown/blobs/uploads/{id}"));
        let resp = c.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 404, "GET {id}");
        assert_eq!(error_codes(resp).await, ["BLOB_UPLOAD_UNKNOWN"], "GET {id}");
        let resp = c.patch(&url).body(b"x".to_vec()).send().await.unwrap();
        assert_eq!(resp.status(), 404, "PATCH {id}");
        assert_eq!(error_codes(resp).await, ["BLOB_UPLOAD_UNKNOWN"], "PATCH {id}");
        let resp = c
            .patch(&url)
            .header("content-range", "0-0")
            .body(b"x".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "ranged PATCH {id}");
        assert_eq!(error_codes(resp).await, ["BLOB_UPLOAD_UNKNOWN"]);
        let resp = c
            .put(with_digest(&url, &digest))
            .body(b"x".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "PUT {id}");
        assert_eq!(error_codes(resp).await, ["BLOB_UPLOAD_UNKNOWN"], "PUT {id}");
        let resp = c.delete(&url).send().await.unwrap();
        assert_eq!(resp.status(), 404, "DELETE {id}");
        assert_eq!(error_codes(resp).await, ["BLOB_UPLOAD_UNKNOWN"], "DELETE {id}");
    }
    // The other repository's session was not touched by any of that.
    let resp = c.get(&other).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(header(&resp, "range"), "0-0");
    assert_not_in(&berth, "up/other", &digest).await;
}

#[tokio::test]
async fn a_mount_from_a_repository_holding_the_blob_answers_201() {
    let berth = Berth::start();
    let bytes = random_bytes(3333, 14);
    let digest = push_blob(&berth, "mount/src", &bytes).await;
    let c = client();
    let resp = c
        .post(berth.url(&format!("/v2/mount/dst/blobs/uploads/?mount={digest}&from=mount/src")))
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "location"), format!("/v2/mount/dst/blobs/{digest}"));
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "content-length"), "0");
    assert!(
        resp.headers().get("docker-upload-uuid").is_none(),
        "no session was opened"
    );
    assert_blob(&resolve(&berth, &header(&resp, "location")), &bytes).await;
    // Mounting what is already there is a success too.
    let resp = c
        .post(berth.url(&format!("/v2/mount/dst/blobs/uploads/?mount={digest}&from=mount/src")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // The mount is a link of its own: the source may drop the blob, the target keeps it.
    let resp = c
        .delete(berth.url(&format!("/v2/mount/src/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_blob(&berth.url(&format!("/v2/mount/dst/blobs/{digest}")), &bytes).await;
    // A sha512 blob mounts the same way.
    let big = random_bytes(1000, 15);
    let d512 = sha512(&big);
    let resp = c
        .post(berth.url(&format!("/v2/mount/src/blobs/uploads/?digest={d512}")))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = c
        .post(berth.url(&format!("/v2/mount/dst/blobs/uploads/?mount={d512}&from=mount/src")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "docker-content-digest"), d512);
    let resp = c
        .get(berth.url(&format!("/v2/mount/dst/blobs/{d512}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), big.as_slice());
}

#[tokio::test]
async fn a_mount_that_cannot_be_served_falls_back_to_an_upload_session() {
    let berth = Berth::start();
    let bytes = random_bytes(2222, 16);
    let digest = push_blob(&berth, "fall/holder", &bytes).await;
    push_blob(&berth, "fall/empty", b"something else").await;
    let unknown = sha256(b"nobody has this");
    let c = client();
    // (digest, from): the blob exists but not in `from`; `from` does not exist; nobody has it.
    // A repository that had the blob and dropped it.
    push_blob(&berth, "fall/dropped", &bytes).await;
    let resp = c
        .delete(berth.url(&format!("/v2/fall/dropped/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // (digest, from): the blob exists but not in `from`; `from` does not exist; `from` dropped
    // it; nobody has it.
    for (d, from) in [
        (&digest, "fall/empty"),
        (&digest, "fall/nonexistent"),
        (&digest, "fall/dropped"),
        (&unknown, "fall/holder"),
    ] {
        let resp = c
            .post(berth.url(&format!("/v2/fall/dst/blobs/uploads/?mount={d}&from={from}")))
            .body(Vec::new())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "mount {d} from {from}");
        assert!(resp.headers().get("docker-content-digest").is_none());
        let uuid = header(&resp, "docker-upload-uuid");
        let location = header(&resp, "location");
        assert_eq!(location, format!("/v2/fall/dst/blobs/uploads/{uuid}"));
        assert_eq!(header(&resp, "range"), "0-0");
        assert_eq!(header(&resp, "content-length"), "0");
        // Nothing was linked into the target.
        let resp = c
            .head(berth.url(&format!("/v2/fall/dst/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{d} not mounted from {from}");
        // The fallback session is a real one: the client uploads through it.
        if *d == digest {
            let resp = c
                .put(with_digest(&resolve(&berth, &location), d))
                .body(bytes.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 201);
            assert_blob(&berth.url(&format!("/v2/fall/dst/blobs/{d}")), &bytes).await;
            let resp = c
                .delete(berth.url(&format!("/v2/fall/dst/blobs/{d}")))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 202);
        } else {
            let resp = c.delete(resolve(&berth, &location)).send().await.unwrap();
            assert_eq!(resp.status(), 204);
        }
    }
}

#[tokio::test]
async fn a_mount_without_from_finds_the_blob_in_any_repository() {
    let berth = Berth::start();
    let bytes = random_bytes(1111, 17);
    let digest = push_blob(&berth, "anon/src", &bytes).await;
    let c = client();
    let resp = c
        .post(berth.url(&format!("/v2/anon/dst/blobs/uploads/?mount={digest}")))
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "location"), format!("/v2/anon/dst/blobs/{digest}"));
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_blob(&resolve(&berth, &header(&resp, "location")), &bytes).await;

    // A blob that exists nowhere: a fallback session.
    let unknown = sha256(b"unknown to all");
    let resp = c
        .post(berth.url(&format!("/v2/anon/dst/blobs/uploads/?mount={unknown}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "range"), "0-0");
    assert!(header(&resp, "location").starts_with("/v2/anon/dst/blobs/uploads/"));
    assert_stored_nowhere(&berth, "anon/dst", &unknown).await;
}

#[tokio::test]
async fn a_mount_with_malformed_arguments_is_refused() {
    let berth = Berth::start();
    let digest = push_blob(&berth, "badmount/src", b"mount me").await;
    let c = client();
    for bad in [
        "sha256:abc",
        "sha256:XYZ",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "nothing",
    ] {
        let resp = c
            .post(berth.url(&format!(
                "/v2/badmount/dst/blobs/uploads/?mount={bad}&from=badmount/src"
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "mount={bad}");
        assert_eq!(error_codes(resp).await, ["DIGEST_INVALID"], "mount={bad}");
    }
    for bad in ["BadMount/src", "badmount/src/", "..", "a..b"] {
        let resp = c
            .post(berth.url(&format!("/v2/badmount/dst/blobs/uploads/?mount={digest}&from={bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "from={bad}");
        assert_eq!(error_codes(resp).await, ["NAME_INVALID"], "from={bad}");
    }
    assert_not_in(&berth, "badmount/dst", &digest).await;
}

#[tokio::test]
async fn sha512_uploads_monolithic_and_chunked() {
    let berth = Berth::start();
    let c = client();

    // POST then PUT with the whole body.
    let bytes = random_bytes(50_000, 18);
    let digest = sha512(&bytes);
    let location = start(&berth, "up/sha512").await;
    let resp = c
        .put(with_digest(&location, &digest))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "location"), format!("/v2/up/sha512/blobs/{digest}"));
    assert_blob512(&resolve(&berth, &header(&resp, "location")), &bytes).await;

    // Chunked, closed by PUT ?digest=sha512:...
    let bytes = random_bytes(90_000, 19);
    let digest = sha512(&bytes);
    let mut location = start(&berth, "up/sha512").await;
    for (first, last) in [(0, 29_999), (30_000, 59_999), (60_000, 89_999)] {
        let resp = patch_chunk(&location, &bytes, first, last).await;
        assert_eq!(resp.status(), 202);
        assert_eq!(header(&resp, "range"), format!("0-{last}"));
        location = follow(&berth, &resp, &location);
    }
    let resp = c.put(with_digest(&location, &digest)).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_blob512(&berth.url(&format!("/v2/up/sha512/blobs/{digest}")), &bytes).await;
    // Only under the digest it was pushed with.
    assert_stored_nowhere(&berth, "up/sha512", &sha256(&bytes)).await;

    // A sha512 digest of other bytes is a mismatch like any other.
    let location = start(&berth, "up/sha512").await;
    let resp = c
        .put(with_digest(&location, &sha512(b"other")))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["DIGEST_INVALID"]);
}

/// `?digest-algorithm=sha512` makes the session hash with sha512 as its bytes arrive, so the
/// final `PUT ?digest=sha512:...` reads nothing again; the server's `upload.digest_reread`
/// test hook counts every re-read, and a session opened without the parameter (sha256) shows
/// that the counter does count.
#[tokio::test]
async fn a_session_opened_for_sha512_is_verified_without_reading_it_again() {
    let berth = Berth::start();
    let c = client();
    let rereads = || berth.reached("upload.digest_reread");
    let bytes = random_bytes(90_000, 21);
    let digest = sha512(&bytes);
    let mut location = start_with(&berth, "up/alg", "?digest-algorithm=sha512").await;
    for (first, last) in [(0, 44_999), (45_000, 89_999)] {
        let resp = patch_chunk(&location, &bytes, first, last).await;
        assert_eq!(resp.status(), 202);
        location = follow(&berth, &resp, &location);
    }
    let resp = c.put(with_digest(&location, &digest)).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(header(&resp, "location"), format!("/v2/up/alg/blobs/{digest}"));
    assert_blob512(&resolve(&berth, &header(&resp, "location")), &bytes).await;
    assert_eq!(rereads().await, 0, "the running sha512 verified the blob");

    // A mismatch is still caught from the running hash.
    let location = start_with(&berth, "up/alg", "?digest-algorithm=sha512").await;
    let resp = c
        .put(with_digest(&location, &sha512(b"other bytes")))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["DIGEST_INVALID"]);
    assert_eq!(rereads().await, 0);

    // A single POST with a sha512 digest hashes with sha512 from the start too.
    let single = random_bytes(10_000, 22);
    let url = berth.url(&format!("/v2/up/alg/blobs/uploads/?digest={}", sha512(&single)));
    assert_eq!(c.post(url).body(single.clone()).send().await.unwrap().status(), 201);
    assert_eq!(rereads().await, 0);

    // Without the parameter the session hashes with sha256: a sha512 digest is still verified,
    // by reading the bytes once.
    let other = random_bytes(30_000, 23);
    let location = start(&berth, "up/alg").await;
    let resp = c
        .put(with_digest(&location, &sha512(&other)))
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(rereads().await, 1, "a sha256 session re-reads for a sha512 digest");
    // And the other way round: a sha512 session finished with a sha256 digest.
    let location = start_with(&berth, "up/alg", "?digest-algorithm=sha512").await;
    let resp = c
        .put(with_digest(&location, &sha256(&other)))
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(rereads().await, 2);
    assert_blob(&berth.url(&format!("/v2/up/alg/blobs/{}", sha256(&other))), &other).await;
}

/// A mount that falls back to a session opens it with the mount digest's algorithm (the digest
/// the client will most likely finish with), unless `digest-algorithm` says otherwise.
#[tokio::test]
async fn a_mount_fallback_session_hashes_with_the_mount_digests_algorithm() {
    let berth = Berth::start();
    let c = client();
    let bytes = random_bytes(20_000, 24);
    let digest = sha512(&bytes);
    let location = start_with(&berth, "up/mountalg", &format!("?mount={digest}&from=up/elsewhere")).await;
    let resp = c
        .put(with_digest(&location, &digest))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(berth.reached("upload.digest_reread").await, 0);
    let location = start_with(
        &berth,
        "up/mountalg",
        &format!("?mount={digest}&from=up/nowhere&digest-algorithm=sha256"),
    )
    .await;
    let other = random_bytes(20_000, 25);
    let resp = c
        .put(with_digest(&location, &sha512(&other)))
        .body(other.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(berth.reached("upload.digest_reread").await, 1, "digest-algorithm wins");
}

#[tokio::test]
async fn twenty_mib_streamed_in_one_patch() {
    let berth = Berth::start();
    let bytes = random_bytes(20 * MIB, 20);
    let digest = sha256(&bytes);
    let location = start(&berth, "up/big").await;
    // A streamed body of unknown length (chunked transfer encoding), as docker sends it.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = bytes.chunks(MIB).map(|p| Ok(p.to_vec())).collect();
    let resp = client()
        .patch(&location)
        .header("content-type", "application/octet-stream")
        .body(reqwest::Body::wrap_stream(stream::iter(pieces)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "range"), format!("0-{}", 20 * MIB - 1));
    let location = follow(&berth, &resp, &location);
    let resp = client().put(with_digest(&location, &digest)).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_big_blob(&resolve(&berth, &header(&resp, "location")), &digest, bytes.len()).await;
}

#[tokio::test]
async fn twenty_mib_in_three_chunks() {
    let berth = Berth::start();
    let bytes = random_bytes(20 * MIB, 21);
    let digest = sha256(&bytes);
    let mut location = start(&berth, "up/big3").await;
    let bounds = [(0, 7 * MIB - 1), (7 * MIB, 14 * MIB - 1), (14 * MIB, 20 * MIB - 1)];
    for (first, last) in bounds {
        let resp = patch_chunk(&location, &bytes, first, last).await;
        assert_eq!(resp.status(), 202, "chunk {first}-{last}");
        assert_eq!(header(&resp, "range"), format!("0-{last}"));
        location = follow(&berth, &resp, &location);
    }
    let resp = client().put(with_digest(&location, &digest)).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_big_blob(&resolve(&berth, &header(&resp, "location")), &digest, bytes.len()).await;
}

#[tokio::test]
async fn absolute_locations_behind_a_proxy_are_followed_as_given() {
    let berth = Berth::start();
    let bytes = random_bytes(12_345, 22);
    let digest = sha256(&bytes);
    let c = client();
    // A proxy that says where clients reach it turns every Location absolute.
    let proxied = |rb: reqwest::RequestBuilder| rb.header("x-forwarded-host", &berth.host);
    let resp = proxied(c.post(berth.url("/v2/up/proxy/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let uuid = header(&resp, "docker-upload-uuid");
    let location = header(&resp, "location");
    assert_eq!(
        location,
        format!("http://{}/v2/up/proxy/blobs/uploads/{uuid}", berth.host)
    );
    let resp = proxied(c.patch(&location))
        .header("content-range", "0-5999")
        .body(bytes[..6000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = header(&resp, "location");
    assert!(location.starts_with("http://"), "{location}");
    let resp = proxied(c.put(with_digest(&location, &digest)))
        .header("content-range", "6000-12344")
        .body(bytes[6000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let location = header(&resp, "location");
    assert_eq!(location, format!("http://{}/v2/up/proxy/blobs/{digest}", berth.host));
    assert_blob(&location, &bytes).await;
}

#[tokio::test]
async fn other_methods_on_upload_endpoints_are_405_with_allow() {
    let berth = Berth::start();
    let c = client();
    let location = start(&berth, "up/methods").await;
    let start_url = berth.url("/v2/up/methods/blobs/uploads/");
    for method in ["GET", "HEAD", "PUT", "PATCH", "DELETE"] {
        let resp = c.request(method.parse().unwrap(), &start_url).send().await.unwrap();
        assert_eq!(resp.status(), 405, "{method} on the uploads collection");
        assert_eq!(header(&resp, "allow"), "POST", "{method}");
        if method != "HEAD" {
            assert_eq!(error_codes(resp).await, ["UNSUPPORTED"], "{method}");
        }
    }
    for method in ["POST", "HEAD"] {
        let resp = c.request(method.parse().unwrap(), &location).send().await.unwrap();
        assert_eq!(resp.status(), 405, "{method} on a session");
        assert_eq!(header(&resp, "allow"), "GET, PATCH, PUT, DELETE", "{method}");
    }
    // None of that disturbed the session.
    let resp = c.get(&location).send().await.unwrap();
    assert_eq!(resp.status(), 204);
}

/// Open an upload session in `repo`; returns its location as an absolute URL.
async fn start(berth: &Berth, repo: &str) -> String {
    start_with(berth, repo, "").await
}

/// `start` with a query string (`?digest-algorithm=...`) on the `POST`.
async fn start_with(berth: &Berth, repo: &str, query: &str) -> String {
    let resp = client()
        .post(berth.url(&format!("/v2/{repo}/blobs/uploads/{query}")))
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "start an upload in {repo}");
    resolve(berth, &header(&resp, "location"))
}

/// PATCH `bytes[first..=last]` to `location` with its `Content-Range`.
async fn patch_chunk(location: &str, bytes: &[u8], first: usize, last: usize) -> reqwest::Response {
    client()
        .patch(location)
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{first}-{last}"))
        .body(bytes[first..=last].to_vec())
        .send()
        .await
        .unwrap()
}

/// A `Location` header made absolute against the server, as a client follows it (RFC 7231:
/// either absolute or relative to the request).
fn resolve(berth: &Berth, location: &str) -> String {
    reqwest::Url::parse(&berth.base)
        .unwrap()
        .join(location)
        .unwrap()
        .to_string()
}

/// The session location a response names, checked to be the same session as `previous`.
fn follow(berth: &Berth, resp: &reqwest::Response, previous: &str) -> String {
    let next = resolve(berth, &header(resp, "location"));
    assert_eq!(next, previous, "the session keeps its location");
    next
}

/// `location` with a `digest` query parameter added, keeping any parameters it already has.
fn with_digest(location: &str, digest: &str) -> String {
    let mut url = reqwest::Url::parse(location).unwrap();
    url.query_pairs_mut().append_pair("digest", digest);
    url.to_string()
}

/// GET `url` answers 200 with exactly `bytes`, and their sha256 digest.
async fn assert_blob(url: &str, bytes: &[u8]) {
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    assert_eq!(header(&resp, "content-length"), bytes.len().to_string());
    assert_eq!(header(&resp, "docker-content-digest"), sha256(bytes));
    let body = resp.bytes().await.unwrap();
    assert_eq!(sha256(&body), sha256(bytes), "GET {url}");
    assert_eq!(body.len(), bytes.len());
}

/// GET `url` answers 200 with exactly `bytes`, under their sha512 digest.
async fn assert_blob512(url: &str, bytes: &[u8]) {
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    assert_eq!(header(&resp, "content-length"), bytes.len().to_string());
    assert_eq!(header(&resp, "docker-content-digest"), sha512(bytes));
    let body = resp.bytes().await.unwrap();
    assert_eq!(sha512(&body), sha512(bytes), "GET {url}");
}

/// GET `url` answers 200 with `len` bytes hashing to `digest`.
async fn assert_big_blob(url: &str, digest: &str, len: usize) {
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    assert_eq!(header(&resp, "content-length"), len.to_string());
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), len);
    assert_eq!(sha256(&body), digest, "the bytes read back hash to the digest pushed");
}

/// `digest` is not readable in `repo`: 404 `BLOB_UNKNOWN`.
async fn assert_not_in(berth: &Berth, repo: &str, digest: &str) {
    let resp = client()
        .get(berth.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "{digest} must not be readable in {repo}");
    assert_eq!(error_codes(resp).await, ["BLOB_UNKNOWN"]);
}

/// `digest` is neither readable in `repo` nor known anywhere in the registry: a mount without
/// `from` (which links any existing blob) falls back to a new session instead of answering 201.
async fn assert_stored_nowhere(berth: &Berth, repo: &str, digest: &str) {
    assert_not_in(berth, repo, digest).await;
    let c = client();
    let resp = c
        .post(berth.url(&format!("/v2/probe/nowhere/blobs/uploads/?mount={digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{digest} must not be stored anywhere");
    let resp = c
        .delete(resolve(berth, &header(&resp, "location")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
}
