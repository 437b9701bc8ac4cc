//! How uploads reach the disk. With `storage.direct_io` (the default) the bulk of a large
//! upload is written with `O_DIRECT`, so a push does not fill the page cache; with it off,
//! every byte goes through the page cache. Either way the stored blob is exactly the bytes
//! pushed, whatever the chunk sizes (odd ones leave direct writes to start mid-block).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Berth, client, header, random_bytes, sha256};

/// Bytes of `path` in the page cache, by util-linux `fincore`.
fn resident_bytes(path: &Path) -> u64 {
    let out = Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("run fincore (util-linux)");
    assert!(
        out.status.success(),
        "fincore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

fn blob_path(root: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    root.join("blobs/sha256").join(&hex[..2]).join(&hex[2..4]).join(hex)
}

/// Push `bytes` as PATCH chunks of the given sizes (the rest in the final PUT); returns how
/// much of the stored blob is in the page cache straight after, then checks a pull of it.
async fn push_in_chunks(berth: &Berth, bytes: &[u8], chunks: &[usize]) -> u64 {
    let c = client();
    let digest = sha256(bytes);
    let resp = c.post(berth.url("/v2/stage/blobs/uploads/")).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let mut location = header(&resp, "location");
    let mut offset = 0;
    for &len in chunks {
        let url = if location.starts_with('/') {
            berth.url(&location)
        } else {
            location.clone()
        };
        let resp = c
            .patch(url)
            .header("content-range", format!("{offset}-{}", offset + len - 1))
            .header("content-type", "application/octet-stream")
            .body(bytes[offset..offset + len].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "PATCH at {offset}: {}", resp.text().await.unwrap());
        location = header(&resp, "location");
        offset += len;
    }
    let url = if location.starts_with('/') {
        berth.url(&location)
    } else {
        location.clone()
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let resp = c
        .put(format!("{url}{sep}digest={digest}"))
        .body(bytes[offset..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "PUT: {}", resp.text().await.unwrap());
    let path = blob_path(&berth.root, &digest);
    let resident = resident_bytes(&path);
    let pulled = c
        .get(berth.url(&format!("/v2/stage/blobs/{digest}")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(pulled == bytes, "the pulled blob differs from the pushed one");
    assert!(
        std::fs::read(&path).unwrap() == bytes,
        "the stored file differs from the pushed blob"
    );
    resident
}

#[tokio::test]
async fn large_pushes_go_around_the_page_cache_and_store_every_byte() {
    const MIB: usize = 1 << 20;
    let bytes = random_bytes(16 * MIB + 12_345, 71);
    // Odd chunk lengths: each later chunk starts mid-block.
    let chunks = [MIB + 1, 5 * MIB - 3, 333, 6 * MIB + 4097];
    let direct = push_in_chunks(&Berth::start(), &bytes, &chunks).await;
    let buffered = push_in_chunks(
        &Berth::builder().env("BERTH_STORAGE_DIRECT_IO", "false").start(),
        &bytes,
        &chunks,
    )
    .await;
    // The control: written through the page cache, the blob is still there.
    assert!(
        buffered > 15 * MIB as u64,
        "control: a buffered push should leave the blob in the page cache ({buffered} of {} bytes)",
        bytes.len()
    );
    // Direct: only the blocks that chunks start or end in, and the last odd bytes, go through
    // the page cache.
    assert!(
        direct < (MIB as u64),
        "{direct} of {} bytes were left in the page cache by a direct push (buffered: {buffered})",
        bytes.len()
    );
}
