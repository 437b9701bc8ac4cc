//! A disk that fills up in the middle of an upload. The staging write fails with ENOSPC, the
//! append is rolled back, and the registry drops the session's in-memory length and hash so
//! that the next request re-reads the staging file (an earlier version kept the hash from
//! before a failed append: harmless while the rollback worked, wrong when it did not). The
//! client then sees the session exactly as it was before the failed chunk, can finish it, and
//! what was stored before stays intact. Runs on a small tmpfs, so it needs root (as CI has).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Berth, client, header, push_blob, random_bytes, sha256};

/// A tmpfs of `size` mounted on `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_fails_the_chunk_and_keeps_the_session_and_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let _fs = Tmpfs::mount(&root, "12m");
    let mut berth = Berth::builder().root(&root).start();

    let stored = random_bytes(256 << 10, 1);
    let stored_digest = push_blob(&berth, "full/disk", &stored).await;

    let c = client();
    let resp = c.post(berth.url("/v2/full/disk/blobs/uploads/")).send().await.unwrap();
    assert_eq!(resp.status(), 202);
    let location = berth.url(&header(&resp, "location"));
    let blob = random_bytes(1 << 20, 2);
    let resp = c
        .patch(&location)
        .header("content-range", format!("0-{}", (512 << 10) - 1))
        .body(blob[..512 << 10].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    // 32 MiB cannot fit in 12 MiB: the write fails part-way.
    let too_big = random_bytes(32 << 20, 3);
    let resp = c
        .patch(&location)
        .header(
            "content-range",
            format!("{}-{}", 512 << 10, (512 << 10) + (32 << 20) - 1),
        )
        .body(too_big)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        500,
        "disk full is the server's failure, not the client's"
    );

    let resp = c.get(&location).send().await.unwrap();
    assert_eq!(resp.status(), 204, "the session survives");
    assert_eq!(
        header(&resp, "range"),
        format!("0-{}", (512 << 10) - 1),
        "as before the failed chunk"
    );
    let resp = c
        .patch(&location)
        .header("content-range", format!("{}-{}", 512 << 10, (1 << 20) - 1))
        .body(blob[512 << 10..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let digest = sha256(&blob);
    let sep = if location.contains('?') { '&' } else { '?' };
    let resp = c.put(format!("{location}{sep}digest={digest}")).send().await.unwrap();
    assert_eq!(resp.status(), 201, "the finished upload has the right digest");

    for (digest, bytes) in [(&stored_digest, &stored), (&digest, &blob)] {
        let resp = c
            .get(berth.url(&format!("/v2/full/disk/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.unwrap(), bytes[..], "{digest}");
    }
    berth.stop();
    let staging: Vec<_> = std::fs::read_dir(root.join("uploads")).unwrap().collect();
    assert!(staging.is_empty(), "no staging file left behind: {staging:?}");
}
