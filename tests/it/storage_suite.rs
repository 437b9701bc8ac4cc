//! One storage conformance suite for every blob-store backend, as Distribution's
//! `driver/testsuites`: the same checks run against the filesystem backend on a temporary
//! directory and against the S3 backend on a real Garage (a fresh prefix per test). Each
//! check drives the `BlobStore` and `Upload` traits directly, the way the registry does.

use std::sync::Arc;

use berth::blobs::fs::{FsStore, WriteOptions};
use berth::blobs::s3::S3Store;
use berth::blobs::{AppendError, AppendLimits, BlobStore, Body, Upload};
use berth::oci::{Algorithm, Digest};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::garage::{Garage, fresh_prefix};
use crate::harness::random_bytes;

/// A backend under test, and what keeps it alive.
struct Backend {
    store: Arc<dyn BlobStore>,
    /// Opens another store over the same storage, as a restarted process would.
    reopen: Box<dyn Fn() -> Arc<dyn BlobStore> + Send + Sync>,
    _dir: Option<tempfile::TempDir>,
}

fn filesystem() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let opts = WriteOptions {
        fsync: true,
        direct_io: true,
    };
    let open = move || Arc::new(FsStore::open(&root, opts).unwrap()) as Arc<dyn BlobStore>;
    Backend {
        store: open(),
        reopen: Box::new(open),
        _dir: Some(dir),
    }
}

fn s3() -> Backend {
    let opts = Garage::shared().options(&fresh_prefix());
    let open = move || Arc::new(S3Store::new(opts.clone())) as Arc<dyn BlobStore>;
    Backend {
        store: open(),
        reopen: Box::new(open),
        _dir: None,
    }
}

/// Run one check against both backends.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod filesystem {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                super::$name(super::filesystem()).await;
            })*
        }
        mod s3 {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                super::$name(super::s3()).await;
            })*
        }
    };
}

suite!(
    round_trip,
    ranges,
    resume_after_restart,
    a_session_hashes_and_resumes_with_its_algorithm,
    commit_of_a_present_digest,
    concurrent_commits_of_one_digest,
    delete_while_reading,
    enumerate,
    interrupted_upload_leaves_what_was_acknowledged,
    large_blob_spans_many_parts,
);

pub fn limits() -> AppendLimits {
    AppendLimits {
        max_len: u64::MAX,
        exact: None,
        idle: std::time::Duration::from_secs(30),
    }
}

/// `bytes` as a body of `chunk`-byte chunks, failing after `fail_after` chunks if set.
pub fn body(bytes: &[u8], chunk: usize, fail_after: Option<usize>) -> Body<'static> {
    let mut items: Vec<Result<Bytes, String>> = bytes.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    if let Some(n) = fail_after {
        items.truncate(n);
        items.push(Err("client went away".to_owned()));
    }
    Box::pin(futures_util::stream::iter(items))
}

fn digest(bytes: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, bytes)
}

async fn append(upload: Box<dyn Upload>, bytes: &[u8], chunk: usize) -> Box<dyn Upload> {
    let (upload, result) = upload.append(body(bytes, chunk, None), limits()).await;
    assert_eq!(result.unwrap(), bytes.len() as u64);
    upload
}

/// Upload `bytes` in one session and commit them.
async fn store(store: &dyn BlobStore, bytes: &[u8]) -> Digest {
    let upload = store
        .create_upload(uuid::Uuid::new_v4(), Algorithm::Sha256)
        .await
        .unwrap();
    let upload = append(upload, bytes, 64 << 10).await;
    let d = digest(bytes);
    assert_eq!(upload.digest(Algorithm::Sha256).await.unwrap(), d);
    upload.commit(&d).await.unwrap();
    d
}

async fn read(store: &dyn BlobStore, d: &Digest, size: u64, start: u64, end: u64) -> Option<Vec<u8>> {
    let reader = store.open(d, size).await.unwrap()?;
    let mut stream = reader.stream(start, end).await.unwrap()?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    Some(out)
}

async fn round_trip(b: Backend) {
    for (len, seed) in [(0, 1), (1, 2), (70_000, 3), (300_000, 4)] {
        let bytes = random_bytes(len, seed);
        let d = store(&*b.store, &bytes).await;
        assert_eq!(b.store.stat(&d).await.unwrap(), Some(len as u64));
        if len > 0 {
            let back = read(&*b.store, &d, len as u64, 0, len as u64 - 1).await.unwrap();
            assert!(back == bytes, "{len} bytes did not round-trip");
        }
    }
    let absent = digest(b"never stored");
    assert_eq!(b.store.stat(&absent).await.unwrap(), None);
    let missing = match b.store.open(&absent, 12).await.unwrap() {
        None => true,
        Some(r) => r.stream(0, 11).await.unwrap().is_none(),
    };
    assert!(missing, "an absent blob opened");
}

async fn ranges(b: Backend) {
    let bytes = random_bytes(1 << 20, 7);
    let d = store(&*b.store, &bytes).await;
    for (start, end) in [
        (0usize, 0usize),
        (1, 10),
        (4095, 4096),
        (500_000, (1 << 20) - 1),
        (1 << 19, 1 << 19),
    ] {
        let got = read(&*b.store, &d, 1 << 20, start as u64, end as u64).await.unwrap();
        assert!(got == bytes[start..=end], "range {start}-{end}");
    }
    // A blob whose stored size is not the recorded one is never served.
    let wrong = match b.store.open(&d, (1 << 20) + 1).await.unwrap() {
        None => true,
        Some(r) => r.stream(0, 1 << 20).await.unwrap().is_none(),
    };
    assert!(wrong, "a blob of the wrong size was served");
}

async fn resume_after_restart(b: Backend) {
    let id = uuid::Uuid::new_v4();
    let first = random_bytes(6 << 20, 11);
    let second = random_bytes(1_234_567, 12);
    let upload = b.store.create_upload(id, Algorithm::Sha256).await.unwrap();
    let upload = append(upload, &first, 100_000).await;
    drop(upload);
    // A new process over the same storage: the session is found, re-hashed, and continues.
    let store = (b.reopen)();
    let upload = store
        .resume_upload(id, Algorithm::Sha256)
        .await
        .unwrap()
        .expect("the session survives a restart");
    assert_eq!(upload.len(), first.len() as u64);
    let upload = append(upload, &second, 65_536).await;
    let whole = [first, second].concat();
    let d = digest(&whole);
    assert_eq!(upload.digest(Algorithm::Sha256).await.unwrap(), d);
    assert_eq!(
        upload.digest(Algorithm::Sha512).await.unwrap(),
        Digest::of(Algorithm::Sha512, &whole)
    );
    upload.commit(&d).await.unwrap();
    assert!(
        read(&*store, &d, whole.len() as u64, 0, whole.len() as u64 - 1)
            .await
            .unwrap()
            == whole
    );
    assert!(
        store
            .resume_upload(uuid::Uuid::new_v4(), Algorithm::Sha256)
            .await
            .unwrap()
            .is_none(),
        "an unknown session resumed"
    );
}

async fn commit_of_a_present_digest(b: Backend) {
    let bytes = random_bytes(200_000, 21);
    let d = store(&*b.store, &bytes).await;
    let again = store(&*b.store, &bytes).await;
    assert_eq!(d, again);
    assert!(read(&*b.store, &d, 200_000, 0, 199_999).await.unwrap() == bytes);
    let listed = b.store.enumerate().await.unwrap();
    assert_eq!(listed.iter().filter(|e| e.digest.as_ref() == Some(&d)).count(), 1);
}

async fn concurrent_commits_of_one_digest(b: Backend) {
    let bytes = random_bytes(5_500_000, 31);
    let d = digest(&bytes);
    let mut uploads = Vec::new();
    for _ in 0..4 {
        let upload = b
            .store
            .create_upload(uuid::Uuid::new_v4(), Algorithm::Sha256)
            .await
            .unwrap();
        uploads.push(append(upload, &bytes, 1 << 20).await);
    }
    let commits = uploads.into_iter().map(|u| {
        let d = d.clone();
        tokio::spawn(async move { u.commit(&d).await })
    });
    for commit in futures_util::future::join_all(commits).await {
        commit.unwrap().unwrap();
    }
    assert_eq!(b.store.stat(&d).await.unwrap(), Some(bytes.len() as u64));
    assert!(
        read(&*b.store, &d, bytes.len() as u64, 0, bytes.len() as u64 - 1)
            .await
            .unwrap()
            == bytes
    );
}

async fn delete_while_reading(b: Backend) {
    let bytes = random_bytes(6 << 20, 41);
    let size = bytes.len() as u64;
    let d = store(&*b.store, &bytes).await;
    let reader = b.store.open(&d, size).await.unwrap().unwrap();
    let mut stream = reader.stream(0, size - 1).await.unwrap().unwrap();
    let mut got = stream.next().await.unwrap().unwrap().to_vec();
    b.store.delete(&d).await.unwrap();
    // The read in progress either finishes with the right bytes or fails: never wrong bytes.
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            failed = true;
            break;
        };
        got.extend_from_slice(&chunk);
    }
    assert!(failed || got == bytes, "a read racing a delete returned wrong bytes");
    assert_eq!(b.store.stat(&d).await.unwrap(), None);
    assert!(
        read(&*b.store, &d, size, 0, size - 1).await.is_none(),
        "a deleted blob was served"
    );
    b.store
        .delete(&d)
        .await
        .expect("deleting an absent blob is not an error");
}

async fn enumerate(b: Backend) {
    let mut stored = Vec::new();
    for i in 0..5 {
        let bytes = random_bytes(1000 + i, 50 + i as u64);
        stored.push((store(&*b.store, &bytes).await, bytes.len() as u64));
    }
    let listed = b.store.enumerate().await.unwrap();
    for (d, size) in &stored {
        let entry = listed.iter().find(|e| e.digest.as_ref() == Some(d)).expect("listed");
        assert_eq!(entry.size, *size);
        assert_eq!(
            entry.key,
            format!("blobs/sha256/{}/{}/{}", &d.hex()[..2], &d.hex()[2..4], d.hex())
        );
    }
    assert_eq!(listed.len(), stored.len(), "{listed:?}");
    // What fsck does with a blob it distrusts: it moves out of the blob area, kept.
    let moved = b.store.quarantine(&listed[0].key).await.unwrap();
    assert!(!moved.is_empty());
    assert_eq!(b.store.enumerate().await.unwrap().len(), stored.len() - 1);
    assert!(
        b.store.quarantine("uploads/../blobs").await.is_err(),
        "quarantine left the blob area"
    );
    let d = &stored[1].0;
    let hashed = b.store.hash(d, Arc::new(|_| {})).await.unwrap();
    assert_eq!(hashed.as_ref(), Some(d));
}

/// A session opened for sha512 keeps a running sha512, across a restart too (resumed with the
/// algorithm its caller remembers), and still answers for another algorithm by reading its
/// bytes; a single-request upload hashes with the algorithm it is given.
async fn a_session_hashes_and_resumes_with_its_algorithm(b: Backend) {
    let id = uuid::Uuid::new_v4();
    let first = random_bytes(6 << 20, 13);
    let second = random_bytes(777_777, 14);
    let upload = b.store.create_upload(id, Algorithm::Sha512).await.unwrap();
    let upload = append(upload, &first, 100_000).await;
    let sha512 = |bytes: &[u8]| Digest::of(Algorithm::Sha512, bytes);
    assert_eq!(upload.digest(Algorithm::Sha512).await.unwrap(), sha512(&first));
    drop(upload);
    let store = (b.reopen)();
    let upload = store.resume_upload(id, Algorithm::Sha512).await.unwrap().unwrap();
    let upload = append(upload, &second, 65_536).await;
    let whole = [first, second].concat();
    assert_eq!(upload.digest(Algorithm::Sha512).await.unwrap(), sha512(&whole));
    assert_eq!(upload.digest(Algorithm::Sha256).await.unwrap(), digest(&whole));
    upload.commit(&sha512(&whole)).await.unwrap();
    let size = whole.len() as u64;
    assert!(read(&*store, &sha512(&whole), size, 0, size - 1).await.unwrap() == whole);
    let small = random_bytes(1000, 15);
    let temp = store.temp_upload(Algorithm::Sha512).await.unwrap();
    let temp = append(temp, &small, 300).await;
    assert_eq!(temp.digest(Algorithm::Sha512).await.unwrap(), sha512(&small));
    temp.discard().await.unwrap();
}

async fn interrupted_upload_leaves_what_was_acknowledged(b: Backend) {
    let id = uuid::Uuid::new_v4();
    let acked = random_bytes(5_300_000, 61);
    let upload = b.store.create_upload(id, Algorithm::Sha256).await.unwrap();
    let upload = append(upload, &acked, 1 << 20).await;
    // A PATCH that breaks off after sending more than a part: rolled back to what was acked.
    let more = random_bytes(12 << 20, 62);
    let (upload, result) = upload.append(body(&more, 1 << 20, Some(11)), limits()).await;
    assert!(matches!(result, Err(AppendError::Body(_))), "{result:?}");
    assert_eq!(upload.len(), acked.len() as u64);
    assert_eq!(upload.digest(Algorithm::Sha256).await.unwrap(), digest(&acked));
    // Too large: refused and rolled back too.
    let capped = AppendLimits {
        max_len: acked.len() as u64 + 10,
        ..limits()
    };
    let (upload, result) = upload.append(body(&more, 4096, None), capped).await;
    assert!(matches!(result, Err(AppendError::TooLarge { .. })), "{result:?}");
    assert_eq!(upload.len(), acked.len() as u64);
    drop(upload);
    // After a restart the session holds exactly the acknowledged bytes.
    let store = (b.reopen)();
    let upload = store.resume_upload(id, Algorithm::Sha256).await.unwrap().unwrap();
    assert_eq!(upload.len(), acked.len() as u64);
    assert_eq!(upload.digest(Algorithm::Sha256).await.unwrap(), digest(&acked));
    drop(upload);
    let entries = store.staging_entries().await.unwrap();
    let entry = entries.iter().find(|e| e.name == id.hyphenated().to_string()).unwrap();
    let age = std::time::SystemTime::now()
        .duration_since(entry.modified)
        .unwrap_or_default();
    assert!(age < std::time::Duration::from_secs(300), "{entry:?} changed just now");
    store.remove_upload(id).await.unwrap();
    assert!(store.resume_upload(id, Algorithm::Sha256).await.unwrap().is_none());
    // A single-request upload that is thrown away leaves nothing in the staging area.
    let temp = store.temp_upload(Algorithm::Sha256).await.unwrap();
    let temp = append(temp, &random_bytes(9 << 20, 63), 1 << 20).await;
    temp.discard().await.unwrap();
    assert_eq!(store.staging_entries().await.unwrap(), Vec::new());
}

async fn large_blob_spans_many_parts(b: Backend) {
    // Several parts in one append and across appends, and a tail continued by the next append.
    let bytes = random_bytes(23 << 20, 71);
    let upload = b
        .store
        .create_upload(uuid::Uuid::new_v4(), Algorithm::Sha256)
        .await
        .unwrap();
    let upload = append(upload, &bytes[..3 << 20], 128 << 10).await;
    let upload = append(upload, &bytes[3 << 20..17 << 20], 128 << 10).await;
    let upload = append(upload, &bytes[17 << 20..], 1000).await;
    let d = digest(&bytes);
    upload.commit(&d).await.unwrap();
    let size = bytes.len() as u64;
    assert!(read(&*b.store, &d, size, 0, size - 1).await.unwrap() == bytes);
    // The same through a single-request upload.
    let temp = b.store.temp_upload(Algorithm::Sha256).await.unwrap();
    let temp = append(temp, &bytes, 256 << 10).await;
    let other = random_bytes(100, 72);
    temp.commit(&d).await.unwrap();
    let small = b.store.temp_upload(Algorithm::Sha256).await.unwrap();
    let small = append(small, &other, 7).await;
    small.commit(&digest(&other)).await.unwrap();
    assert!(read(&*b.store, &digest(&other), 100, 0, 99).await.unwrap() == other);
}
