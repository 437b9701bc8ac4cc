//! fsck throughput: a store of `FSCKBENCH_BLOBS` blobs (default 10 000) of `FSCKBENCH_KIB` KiB
//! each (default 100, so about 1 GiB), checked by `berth fsck` (hashing every byte) and by
//! `berth fsck --quick` (sizes only), beside this machine's raw sha256 speed.
//!
//! Run: `cargo bench --bench fsck` (a release build). The files were just written, so they are
//! hashed from the page cache: this measures fsck, not the disk.

mod common;

use std::time::Instant;

use common::{Server, env_num, push_blob, sha256};
use sha2::{Digest as _, Sha256};

fn fsck(root: &std::path::Path, quick: bool) -> (f64, serde_json::Value) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("fsck").arg("--json").arg("--root").arg(root);
    if quick {
        cmd.arg("--quick");
    }
    let t = Instant::now();
    let out = cmd.output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (secs, serde_json::from_slice(&out.stdout).unwrap())
}

/// Single-core sha256 speed in GB/s over `mib` MiB in memory.
fn sha256_speed(mib: usize) -> f64 {
    let buf = vec![7u8; 1 << 20];
    let t = Instant::now();
    let mut h = Sha256::new();
    for _ in 0..mib {
        h.update(&buf);
    }
    std::hint::black_box(h.finalize());
    #[allow(clippy::cast_precision_loss)]
    let bytes = (mib << 20) as f64;
    bytes / t.elapsed().as_secs_f64() / 1e9
}

#[tokio::main]
async fn main() {
    let (blobs, kib) = (env_num("FSCKBENCH_BLOBS", 10_000), env_num("FSCKBENCH_KIB", 100));
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    println!("fsck benchmark: {blobs} blobs of {kib} KiB; machine: {cpus} CPUs");
    let mut server = Server::start(&[]);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let base = server.base.clone();
        tasks.push(tokio::spawn(async move {
            let c = common::http_client().build().unwrap();
            for i in (w..blobs).step_by(8) {
                let mut bytes = vec![0u8; kib << 10];
                bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
                push_blob(&c, &base, "fsck/bench", bytes).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!("populated in {:.1} s", t.elapsed().as_secs_f64());
    server.stop();
    let _ = sha256(b"warm up");
    let (full_s, full) = fsck(&server.root, false);
    let (quick_s, quick) = fsck(&server.root, true);
    assert_eq!(full["clean"], true);
    let hashed = full["checked"]["bytes_hashed"].as_f64().unwrap();
    let files = quick["checked"]["blobs"].as_f64().unwrap();
    let core = sha256_speed(512);
    let ideal = core * f64::from(u32::try_from(cpus).unwrap_or(1));
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| fsck (hash everything) | {full_s:.2} s, {:.2} GB/s |",
        hashed / full_s / 1e9
    );
    println!("| fsck --quick | {quick_s:.2} s, {:.0} files/s |", files / quick_s);
    println!("| sha256 on one core (sha2, in memory) | {core:.2} GB/s |");
    println!("| sha256 on all {cpus} cores, ideal | {ideal:.2} GB/s |");
    println!("| fsck hashing / ideal | {:.2} |", hashed / full_s / 1e9 / ideal);
}
