//! Start-up with many blob records: fill a store's metadata with `BERTH_BENCH_BLOBS` blob
//! records (default 1 000 000, linked into 100 repositories; metadata only, through the same
//! group-committed transactions a push uses), then time `berth serve` from exec to its
//! "listening" line and to its first answered `GET /v2/`, over several runs.
//!
//! `cargo bench --bench startup`

#![allow(clippy::cast_precision_loss)] // figures for a report

mod common;

use std::io::{BufRead, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::meta::MetaStore;
use berth::oci::{Digest, RepoName};
use common::env_num;

fn main() {
    let blobs = env_num("BERTH_BENCH_BLOBS", 1_000_000);
    let runs = env_num("BERTH_BENCH_RUNS", 7);
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    println!("start-up with {blobs} blob records, {runs} runs, {cpus} CPUs");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(&root).unwrap();
    let filled = fill(&root, blobs);
    let size = std::fs::metadata(root.join("meta.redb")).map_or(0, |m| m.len());
    println!(
        "filled in {:.1} s ({:.0} records/s); meta.redb {:.1} MiB",
        filled.as_secs_f64(),
        blobs as f64 / filled.as_secs_f64(),
        size as f64 / f64::from(1 << 20)
    );
    let mut listening = Vec::new();
    let mut serving = Vec::new();
    for _ in 0..runs {
        let (l, s) = start_once(&root);
        listening.push(l);
        serving.push(s);
    }
    listening.sort();
    serving.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| measure | min | median | max |");
    println!("|---|---|---|---|");
    for (name, v) in [
        ("exec to listening", &listening),
        ("exec to first GET /v2/ answered", &serving),
    ] {
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms |",
            ms(v[0]),
            ms(v[v.len() / 2]),
            ms(v[v.len() - 1])
        );
    }
}

/// Record `n` blobs from 64 threads, so that the writer's group commit batches them.
fn fill(root: &std::path::Path, n: usize) -> Duration {
    let meta = Arc::new(berth::meta::Meta::open(root).unwrap());
    let start = Instant::now();
    let threads: Vec<_> = (0..64)
        .map(|t| {
            let meta = Arc::clone(&meta);
            std::thread::spawn(move || {
                for i in (t..n).step_by(64) {
                    let digest = Digest::parse(&format!("sha256:{i:064x}")).unwrap();
                    let repo = RepoName::parse(&format!("bench/repo{}", i % 100)).unwrap();
                    meta.commit_blob(&repo, &digest, 1000 + i as u64, None, 0)
                        .wait()
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    start.elapsed()
}

/// One start: (exec to the listening line, exec to the first 200 on `GET /v2/`).
fn start_once(root: &std::path::Path) -> (Duration, Duration) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_berth"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BERTH_")) {
        cmd.env_remove(k);
    }
    let start = Instant::now();
    let mut child = cmd
        .args(["serve", "--addr", "127.0.0.1:0", "--root"])
        .arg(root)
        .env("BERTH_LOG_LEVEL", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let listening = start.elapsed();
    let addr = line.trim().rsplit("://").next().unwrap().to_owned();
    assert!(addr.contains(':'), "berth did not start: {line:?}");
    loop {
        assert!(start.elapsed() < Duration::from_secs(30), "berth never answered");
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = [0u8; 12];
            if s.read_exact(&mut buf).is_ok() && &buf == b"HTTP/1.1 200" {
                break;
            }
        }
    }
    let serving = start.elapsed();
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    (listening, serving)
}
