//! What `berth serve`'s malloc settings (src/malloc.rs) and its fixed hot-path threads
//! buy, each beside a control run that undoes it. These were assertions in tests/it/memory.rs,
//! whose timing and resource bounds could fail on a loaded machine; here they are measured and
//! printed. The test keeps only the thread bounds, with a margin no machine's noise reaches.
//! - **Malloc arenas** after 48 concurrent 512 KiB uploads, each written by its own blocking
//!   thread, counted in /proc/<pid>/maps: with Berth's cap (one per core), and with
//!   `MALLOC_ARENA_MAX=64`, where every thread that allocates may take an arena of its own.
//! - **Page faults per MiB pushed** (minor faults, /proc/<pid>/stat): through the page cache
//!   (`storage.direct_io: false`), with direct I/O (the default), and a control with glibc's
//!   starting thresholds (128 KiB) fixed, where every connection read buffer is mapped and
//!   faulted in afresh (a MiB is 256 pages). Each figure is the fewest of its rounds, all
//!   rounds printed.
//! - **Threads** at peak (sampled every 5 ms) under 128 concurrent readers (manifest GETs and
//!   blob HEADs) and 128 concurrent tag PUTs, each for `MEMBENCH_BURST_MS` (default 1500), with
//!   the requests each burst completed.
//!
//! Run: `cargo bench --bench memory` (a release build; under a minute on 2 cores). The client
//! runs on one thread, as the tests did; `storage.fsync` is off, as in the tests.

#![allow(clippy::cast_precision_loss)] // figures for a report

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{OCI_MANIFEST, Server, env_num, push_blob, random_bytes, sha256};

fn start(env: &[(&str, &str)]) -> Server {
    let mut all = vec![("BERTH_STORAGE_FSYNC", "false")];
    all.extend_from_slice(env);
    Server::start(&all)
}

/// glibc's non-main arena heaps: 64 MiB-aligned anonymous reservations whose used part
/// (rw-p) is followed at once by the rest of the reservation (---p), 64 MiB together.
fn arena_heaps(pid: u32) -> usize {
    const HEAP: u64 = 64 << 20;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let regions: Vec<(u64, u64, String)> = maps
        .lines()
        .map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next().unwrap().split_once('-').unwrap();
            let perms = fields.next().unwrap().to_owned();
            let anonymous = fields.nth(3).is_none();
            let perms = if anonymous { perms } else { String::new() };
            (
                u64::from_str_radix(start, 16).unwrap(),
                u64::from_str_radix(end, 16).unwrap(),
                perms,
            )
        })
        .collect();
    regions
        .windows(2)
        .filter(|w| {
            let ((start, end, perms), (next_start, next_end, next_perms)) = (&w[0], &w[1]);
            start % HEAP == 0
                && perms == "rw-p"
                && next_perms == "---p"
                && end == next_start
                && next_end - start == HEAP
        })
        .count()
}

/// Arena heaps after 48 concurrent 512 KiB uploads.
async fn arenas_after_load(server: &Server) -> usize {
    let c = common::http_client().build().unwrap();
    let pushes = (0..48u64).map(|i| push_blob(&c, &server.base, "mem/arenas", random_bytes(512 << 10, i)));
    futures_util::future::join_all(pushes).await;
    arena_heaps(server.pid())
}

/// Minor page faults the process has taken.
fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    fields[7].parse().unwrap()
}

/// Page faults per MiB of `waves` waves of concurrent uploads of `blobs`, after concurrent
/// warm-up pushes of `warm_up`, for each of `rounds` rounds. A blob pushed again is streamed,
/// hashed and staged all the same, then discarded.
async fn upload_faults_per_mib(
    server: &Server,
    (blobs, waves): (&[Vec<u8>], usize),
    warm_up: &[Vec<u8>],
    rounds: usize,
) -> Vec<f64> {
    let c = common::http_client().build().unwrap();
    let base = &server.base;
    futures_util::future::join_all(warm_up.iter().map(|b| push_blob(&c, base, "mem/faults", b.clone()))).await;
    let mib = (waves * blobs.iter().map(Vec::len).sum::<usize>()) >> 20;
    let mut per_mib = Vec::new();
    for _ in 0..rounds {
        let before = minor_faults(server.pid());
        for _ in 0..waves {
            futures_util::future::join_all(blobs.iter().map(|b| push_blob(&c, base, "mem/faults", b.clone()))).await;
        }
        per_mib.push((minor_faults(server.pid()) - before) as f64 / mib as f64);
    }
    per_mib
}

fn fewest(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The most threads `pid` had while `requests` ran (sampled every 5 ms).
async fn peak_threads<F: std::future::Future>(pid: u32, requests: F) -> (usize, F::Output) {
    let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(threads(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let output = requests.await;
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    (peak.load(Ordering::Relaxed), output)
}

/// Run `clients` tasks, each sending `request(client, i, n)` back to back for `for_ms`,
/// asserting each answer's status; returns the requests sent.
async fn burst<F>(clients: usize, for_ms: u64, status: u16, request: F) -> usize
where
    F: Fn(&reqwest::Client, usize, usize) -> reqwest::RequestBuilder + Clone,
{
    let c = common::http_client().build().unwrap();
    let deadline = Instant::now() + Duration::from_millis(for_ms);
    let tasks = (0..clients).map(|i| {
        let (c, request) = (c.clone(), request.clone());
        async move {
            let mut n = 0;
            while Instant::now() < deadline {
                let resp = request(&c, i, n).send().await.unwrap();
                assert_eq!(resp.status(), status);
                n += 1;
            }
            n
        }
    });
    futures_util::future::join_all(tasks).await.into_iter().sum()
}

/// Push a one-layer image tagged `tag`; returns the manifest.
async fn push_image(server: &Server, repo: &str, tag: &str, layer: Vec<u8>) -> Vec<u8> {
    let c = common::http_client().build().unwrap();
    let config = br#"{"os":"linux"}"#.to_vec();
    let (config_len, layer_len) = (config.len(), layer.len());
    let config_digest = push_blob(&c, &server.base, repo, config).await;
    let layer_digest = push_blob(&c, &server.base, repo, layer).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_len}],
    }))
    .unwrap();
    let resp = c
        .put(format!("{}/v2/{repo}/manifests/{tag}", server.base))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    manifest
}

async fn arenas(cores: usize) {
    let capped = arenas_after_load(&start(&[])).await;
    let uncapped = arenas_after_load(&start(&[("MALLOC_ARENA_MAX", "64")])).await;
    println!(
        "| arena heaps after 48 concurrent uploads | {capped} (cap: {} besides the main arena) | {uncapped} with MALLOC_ARENA_MAX=64 |",
        cores - 1
    );
}

async fn faults() {
    let big: Vec<Vec<u8>> = (0..5u64).map(|i| random_bytes(24 << 20, 100 + i)).collect();
    let small: Vec<Vec<u8>> = (0..4u64).map(|i| random_bytes(8 << 20, 200 + i)).collect();
    // Through the page cache, in the same steady state as the direct case: three waves of
    // four 8 MiB uploads per round, after four 24 MiB warm-up pushes.
    let buffered = upload_faults_per_mib(
        &start(&[("BERTH_STORAGE_DIRECT_IO", "false")]),
        (&small, 3),
        &big[..4],
        3,
    )
    .await;
    let fixed_small = start(&[
        ("BERTH_STORAGE_DIRECT_IO", "false"),
        ("MALLOC_MMAP_THRESHOLD_", "131072"),
        ("MALLOC_TRIM_THRESHOLD_", "131072"),
    ]);
    let control = upload_faults_per_mib(&fixed_small, (&big[..4], 1), &big[4..], 1).await;
    let direct = upload_faults_per_mib(&start(&[]), (&small, 3), &big[..4], 3).await;
    for (name, rounds) in [
        ("page faults per MiB pushed, buffered", &buffered),
        ("page faults per MiB pushed, direct I/O", &direct),
        ("page faults per MiB pushed, control: 128 KiB thresholds", &control),
    ] {
        println!("| {name} | {:.1} | rounds: {rounds:.1?} |", fewest(rounds));
    }
}

async fn thread_bursts(burst_ms: u64) {
    let server = start(&[]);
    let layer = random_bytes(1000, 9);
    let layer_digest = sha256(&layer);
    push_image(&server, "mem/threads", "v1", layer).await;
    let before = threads(server.pid());
    let manifest = format!("{}/v2/mem/threads/manifests/v1", server.base);
    let blob = format!("{}/v2/mem/threads/blobs/{layer_digest}", server.base);
    let (peak, requests) = peak_threads(
        server.pid(),
        burst(128, burst_ms, 200, move |c, i, n| {
            if (i + n) % 2 == 0 {
                c.get(&manifest).header("accept", OCI_MANIFEST)
            } else {
                c.head(&blob)
            }
        }),
    )
    .await;
    println!(
        "| threads under 128 concurrent readers | {peak} at peak, {before} before | {requests} requests in {burst_ms} ms |"
    );

    let server = start(&[]);
    let manifest = push_image(&server, "mem/commits", "v0", random_bytes(1000, 10)).await;
    let before = threads(server.pid());
    let base = format!("{}/v2/mem/commits/manifests", server.base);
    let (peak, committed) = peak_threads(
        server.pid(),
        burst(128, burst_ms, 201, move |c, i, n| {
            c.put(format!("{base}/t{i}-{n}"))
                .header("content-type", OCI_MANIFEST)
                .body(manifest.clone())
        }),
    )
    .await;
    println!(
        "| threads under 128 concurrent tag PUTs | {peak} at peak, {before} before | {committed} committed in {burst_ms} ms |"
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cores = std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .max(2);
    let burst_ms = u64::try_from(env_num("MEMBENCH_BURST_MS", 1500)).unwrap_or(1500);
    println!("memory benchmark: {cores} CPUs, storage.fsync off, client on one thread");
    println!("| measure | berth | control or detail |");
    println!("|---|---|---|");
    arenas(cores).await;
    faults().await;
    thread_bursts(burst_ms).await;
}
