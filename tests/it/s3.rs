//! Berth over S3 (a real Garage): what only the S3 backend does. Redirected pulls, the chunk
//! size it advertises, and what clients see when the object store fails in the middle of a
//! push and comes back. (The API, client, GC and crash suites run over S3 too: `.ci/run` runs
//! them again with `BERTH_TEST_STORAGE=s3`.)

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::clients::skopeo;
use crate::fsck::kinds;
use crate::garage::Garage;
use crate::harness::{Berth, client, error_codes, header, push_blob, push_image, random_bytes, sha256};

/// Pulls answered with 307 to a presigned URL reach the same bytes, ranges included, and a
/// real client (skopeo) follows them.
#[tokio::test]
async fn redirect_sends_blob_pulls_to_a_presigned_url() {
    let garage = Garage::shared();
    let berth = Berth::builder()
        .s3(garage)
        .env("BERTH_STORAGE_S3_REDIRECT", "true")
        .start();
    let layer = random_bytes(3 << 20, 5);
    let (_, _) = push_image(&berth, "redir/app", "v1", &[&layer]).await;
    let digest = sha256(&layer);
    let url = berth.url(&format!("/v2/redir/app/blobs/{digest}"));
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 307);
    let location = header(&resp, "location");
    assert!(location.starts_with(&garage.endpoint), "{location}");
    assert!(location.contains("X-Amz-Signature"), "{location}");
    let direct = client().get(&location).send().await.unwrap();
    assert_eq!(direct.status(), 200);
    assert_eq!(sha256(&direct.bytes().await.unwrap()), digest);
    let part = client()
        .get(&location)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(&part.bytes().await.unwrap()[..], &layer[10..20]);
    // A HEAD is answered by Berth, from the metadata.
    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length"), layer.len().to_string());
    // An unknown blob is still Berth's 404, not a redirect to nothing.
    let unknown = client()
        .get(berth.url(&format!("/v2/redir/app/blobs/{}", sha256(b"nope"))))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let dst = tempfile::tempdir().unwrap();
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{}/redir/app:v1", berth.host),
        &format!("oci:{}:v1", dst.path().display()),
    ]);
    let hex = digest.strip_prefix("sha256:").unwrap();
    assert_eq!(std::fs::read(dst.path().join("blobs/sha256").join(hex)).unwrap(), layer);
}

#[tokio::test]
async fn uploads_advertise_the_part_size_as_the_chunk_minimum() {
    let berth = Berth::builder().s3(Garage::shared()).start();
    let resp = client()
        .post(berth.url("/v2/chunk/min/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "oci-chunk-min-length"), (5 << 20).to_string());
}

/// A chunked upload: start it and return its location URL.
async fn start_upload(berth: &Berth, repo: &str) -> String {
    let resp = client()
        .post(berth.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    berth.url(&header(&resp, "location"))
}

async fn patch(location: &str, from: usize, bytes: &[u8]) -> reqwest::Response {
    client()
        .patch(location)
        .header("content-range", format!("{from}-{}", from + bytes.len() - 1))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap()
}

/// The offset an upload session reports (`Range: 0-<last>`), 0 if empty.
async fn offset(location: &str) -> usize {
    let resp = client().get(location).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let range = header(&resp, "range");
    let last: usize = range.strip_prefix("0-").unwrap().parse().unwrap();
    last + 1
}

async fn assert_unavailable(resp: reqwest::Response, what: &str) {
    assert_eq!(resp.status(), 503, "{what}");
    assert_eq!(error_codes(resp).await, ["UNAVAILABLE"], "{what}");
}

/// Garage stops in the middle of a push and comes back: requests that need it get a clear 503
/// `UNAVAILABLE` (within the bounded retry time), requests that need only the metadata go on,
/// nothing acknowledged is lost, and the push resumes where the session says.
#[tokio::test(flavor = "multi_thread")]
async fn object_storage_down_mid_push_answers_503_and_the_push_resumes() {
    let mut garage = Garage::start();
    let mut berth = Berth::builder().s3(&garage).start();
    let stored = random_bytes(2 << 20, 1);
    let (manifest, _) = push_image(&berth, "fault/app", "v1", &[&stored]).await;

    // A chunked push: the first chunk is acknowledged, then the store goes away.
    let blob = random_bytes(13 << 20, 2);
    let location = start_upload(&berth, "fault/app").await;
    assert_eq!(patch(&location, 0, &blob[..6 << 20]).await.status(), 202);
    garage.stop();
    let started = Instant::now();
    assert_unavailable(patch(&location, 6 << 20, &blob[6 << 20..]).await, "PATCH").await;
    // Not a speed bound: the retries give up after about 1.4 s of backoff; without a bound
    // on them the request would hang, and 60 s tells the two apart on any machine.
    assert!(started.elapsed() < Duration::from_secs(60), "retries are bounded");
    let layer_url = berth.url(&format!("/v2/fault/app/blobs/{}", sha256(&stored)));
    assert_unavailable(client().get(&layer_url).send().await.unwrap(), "blob GET").await;
    let monolithic = client()
        .post(berth.url(&format!("/v2/fault/app/blobs/uploads/?digest={}", sha256(b"new"))))
        .body("new")
        .send()
        .await
        .unwrap();
    assert_unavailable(monolithic, "monolithic POST").await;
    // What the metadata alone answers goes on.
    let by_tag = client()
        .get(berth.url("/v2/fault/app/manifests/v1"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(by_tag.status(), 200);
    assert_eq!(header(&by_tag, "docker-content-digest"), manifest);
    let tags = client().get(berth.url("/v2/fault/app/tags/list")).send().await.unwrap();
    assert_eq!(tags.status(), 200);
    let catalog = client().get(berth.url("/v2/_catalog")).send().await.unwrap();
    assert_eq!(catalog.status(), 200, "the catalog comes from the metadata alone");
    let ready = client().get(berth.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready while the bucket is unreachable");
    // A restart while the bucket is down still starts, and serves what the metadata answers.
    berth.restart();
    let by_digest = client()
        .get(berth.url(&format!("/v2/fault/app/manifests/{manifest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_digest.status(),
        200,
        "metadata served after a restart without the bucket"
    );
    let location = berth.url(&location[location.find("/v2/").unwrap()..]);
    let layer_url = berth.url(&format!("/v2/fault/app/blobs/{}", sha256(&stored)));

    // Back: the session stands where it was acknowledged, and the push finishes.
    garage.restart();
    let ready = client().get(berth.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "ready again once the bucket is back");
    assert_eq!(offset(&location).await, 6 << 20);
    assert_eq!(patch(&location, 6 << 20, &blob[6 << 20..]).await.status(), 202);
    finish_and_read_back(&berth, &location, "fault/app", &blob).await;
    let old = client().get(&layer_url).send().await.unwrap();
    assert_eq!(
        sha256(&old.bytes().await.unwrap()),
        sha256(&stored),
        "acknowledged blob intact"
    );
}

/// The store dies while a PATCH body is still streaming in (the test holds the rest of the
/// body until Garage is down): the PATCH fails with 503, and once Garage is back the session
/// reports a prefix of what was sent, from which the client finishes the push.
#[tokio::test(flavor = "multi_thread")]
async fn object_storage_down_while_a_body_streams_leaves_a_resumable_prefix() {
    let mut garage = Garage::start();
    let berth = Berth::builder().s3(&garage).start();
    let blob = random_bytes(16 << 20, 3);
    let location = start_upload(&berth, "fault/stream").await;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let body = reqwest::Body::wrap_stream(tokio_stream_of(rx));
    let request = tokio::spawn(
        client()
            .patch(location.clone())
            .header("content-type", "application/octet-stream")
            .body(body)
            .send(),
    );
    // Six MiB in: at least one part is put (or being put) when Garage goes down.
    for chunk in blob[..6 << 20].chunks(1 << 20) {
        tx.send(Ok(Bytes::copy_from_slice(chunk))).await.unwrap();
    }
    garage.stop();
    for chunk in blob[6 << 20..].chunks(1 << 20) {
        if tx.send(Ok(Bytes::copy_from_slice(chunk))).await.is_err() {
            break; // the server gave up on the body
        }
    }
    drop(tx);
    let resp = request.await.unwrap().unwrap();
    assert_unavailable(resp, "PATCH while the store went down").await;

    garage.restart();
    let at = offset_or_zero(&location).await;
    assert!(at <= blob.len(), "the session holds more than was sent");
    assert_eq!(patch(&location, at, &blob[at..]).await.status(), 202);
    finish_and_read_back(&berth, &location, "fault/stream", &blob).await;
    // And a push of a new image works as ever.
    push_blob(&berth, "fault/stream", b"after the outage").await;
}

/// Finish the upload at `location` as `blob`'s digest, and pull the blob back.
async fn finish_and_read_back(berth: &Berth, location: &str, repo: &str, blob: &[u8]) {
    let digest = sha256(blob);
    let put = client()
        .put(format!("{location}?digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201, "{}", put.text().await.unwrap());
    let got = client()
        .get(berth.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        sha256(&got.bytes().await.unwrap()),
        digest,
        "the pushed blob reads back"
    );
}

/// The offset of a session, 0 for an empty one (`Range: 0-0` with nothing in it is not sent).
async fn offset_or_zero(location: &str) -> usize {
    let resp = client().get(location).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    match resp.headers().get("range").map(|v| v.to_str().unwrap().to_owned()) {
        Some(r) if r != "0-0" => r.strip_prefix("0-").unwrap().parse::<usize>().unwrap() + 1,
        _ => 0,
    }
}

fn tokio_stream_of(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `berth fsck` over S3 lists the bucket: it finds a deleted object, an object of the wrong
/// size, an object whose bytes changed (not with `--quick`), an orphan and a stray key;
/// `--repair` quarantines what is bad, and once the lost blobs are pushed again the store is
/// clean.
#[tokio::test(flavor = "multi_thread")]
async fn fsck_over_s3_finds_and_repairs_damaged_objects() {
    let garage = Garage::shared();
    let berth = Berth::builder().s3(garage).start();
    let prefix = berth.env_value("BERTH_STORAGE_S3_PREFIX").expect("an S3 prefix");
    let layers: Vec<Vec<u8>> = (0..4).map(|i| random_bytes(50_000 + i, 100 + i as u64)).collect();
    let refs: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
    push_image(&berth, "fsck/s3", "v1", &refs).await;
    let s3 = garage.client();
    let key = |bytes: &[u8]| {
        let d = sha256(bytes);
        let hex = d.strip_prefix("sha256:").unwrap().to_owned();
        format!("{prefix}/blobs/sha256/{}/{}/{hex}", &hex[..2], &hex[2..4])
    };
    let put = |k: String, body: Vec<u8>| {
        s3.put_object()
            .bucket(crate::garage::BUCKET)
            .key(k)
            .body(body.into())
            .send()
    };
    s3.delete_object()
        .bucket(crate::garage::BUCKET)
        .key(key(&layers[0]))
        .send()
        .await
        .unwrap();
    put(key(&layers[1]), random_bytes(layers[1].len(), 7)).await.unwrap();
    put(key(&layers[2]), layers[2][..100].to_vec()).await.unwrap();
    let orphan = random_bytes(1000, 8);
    put(key(&orphan), orphan.clone()).await.unwrap();
    put(format!("{prefix}/blobs/sha256/zz/stray"), b"stray".to_vec())
        .await
        .unwrap();
    // The wrong-sized object is never served.
    let url = berth.url(&format!("/v2/fsck/s3/blobs/{}", sha256(&layers[2])));
    assert_eq!(client().get(&url).send().await.unwrap().status(), 404);

    let sizes = [
        "blob_missing",
        "blob_size_mismatch",
        "orphan_blob_file",
        "stray_file",
        "manifest_blob_missing",
    ];
    let (code, report) = online_fsck(&berth, &["--quick"]);
    assert_eq!(code, 1);
    assert_eq!(kinds(&report), sizes.iter().map(|k| (*k).to_owned()).collect());
    let (_, report) = online_fsck(&berth, &[]);
    let mut all: std::collections::BTreeSet<String> = sizes.iter().map(|k| (*k).to_owned()).collect();
    all.insert("blob_corrupt".to_owned());
    assert_eq!(kinds(&report), all);

    let (code, report) = online_fsck(&berth, &["--repair"]);
    assert_eq!(code, 1, "the image stays damaged until its blobs come back: {report}");
    let corrupt = berth.url(&format!("/v2/fsck/s3/blobs/{}", sha256(&layers[1])));
    assert_eq!(
        client().get(&corrupt).send().await.unwrap().status(),
        404,
        "corrupt blob no longer served"
    );
    let quarantined = s3
        .list_objects_v2()
        .bucket(crate::garage::BUCKET)
        .prefix(format!("{prefix}/quarantine/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        quarantined.contents().len(),
        4,
        "corrupt, wrong-sized, orphan and stray objects kept"
    );
    for layer in &layers[..3] {
        push_blob(&berth, "fsck/s3", layer).await;
    }
    let (code, report) = online_fsck(&berth, &[]);
    assert_eq!(code, 0, "{report}");
    let got = client().get(&corrupt).send().await.unwrap();
    assert_eq!(sha256(&got.bytes().await.unwrap()), sha256(&layers[1]));
}

fn online_fsck(berth: &Berth, args: &[&str]) -> (i32, serde_json::Value) {
    let out = berth
        .cli()
        .args(["fsck", "--json", "--url", &berth.base])
        .args(args)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), report)
}
