//! Side-by-side load benchmark: Berth against CNCF Distribution (the Debian `docker-registry`
//! package, started with filesystem storage, delete enabled, access log off), both on
//! 127.0.0.1, the same scenarios in the same run. Prints a table with both results and their
//! ratio, the server's and the load client's CPU seconds per GiB for bulk transfers (they
//! share the cores, so a bulk rate follows the two together), and each server's peak RSS.
//!
//! Run: `cargo bench --bench load` (release build; a few minutes on 2 cores). Sizes scale with
//! `LOAD_SCALE` (default 1.0; 0.1 for a quick look) and `LOAD_SECS` (hot-read duration,
//! default 15). The large pushes run `LOAD_PUSH_ROUNDS` rounds (default 3), the registries
//! taking turns, and report for each the median over its rounds of every figure. Both
//! registries run for the whole benchmark and keep what they were sent: about 12 GiB of
//! temporary files at the defaults, removed at the end.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::run_raw;
use common::{absolute, client, cpu_seconds, median, peak_rss_mib, put_manifest, sha256, upload, upload_as};

const MIB: usize = 1 << 20;

/// Rounds of the blob pull; the median round is reported, so the count is odd.
const PULL_ROUNDS: usize = 5;
const _: () = assert!(PULL_ROUNDS % 2 == 1);

/// Rounds of each large push (`LOAD_PUSH_ROUNDS`); each figure reported is the median over
/// the rounds (each taken on its own), so the count is odd. The targets take turns within each round (`PushRounds::run`).
const PUSH_ROUNDS: usize = 3;
const _: () = assert!(PUSH_ROUNDS % 2 == 1);

/// A registry under test.
struct Target {
    name: &'static str,
    base: String,
    pid: u32,
    _berth: Option<common::Server>,
    _distribution: Option<common::Distribution>,
}

/// Berth with its defaults; `LOAD_SENDFILE=false` turns `http.sendfile` off and
/// `LOAD_DIRECT_IO=false` turns `storage.direct_io` off.
fn start_berth() -> Target {
    let settings: Vec<(&str, String)> = [
        ("LOAD_SENDFILE", "BERTH_HTTP_SENDFILE"),
        ("LOAD_DIRECT_IO", "BERTH_STORAGE_DIRECT_IO"),
    ]
    .into_iter()
    .filter_map(|(load, berth)| std::env::var(load).ok().map(|v| (berth, v)))
    .collect();
    let env: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let server = common::Server::start(&env);
    Target {
        name: "berth",
        base: server.base.clone(),
        pid: server.pid(),
        _berth: Some(server),
        _distribution: None,
    }
}

/// Distribution with filesystem storage, delete enabled and the access log off.
fn start_distribution() -> Target {
    let d = common::Distribution::start("", false);
    Target {
        name: "distribution",
        base: d.base.clone(),
        pid: d.pid(),
        _berth: None,
        _distribution: Some(d),
    }
}

/// Write back and drop the clean page cache, so that each registry, and each large push, starts
/// from the same memory state. On this machine (a KVM guest) the second GiB written into the page
/// cache within a run costs up to twice the CPU of the first, in the kernel's copy, whichever
/// registry writes it; without this the chunked push (which follows the monolithic one) measured
/// 2.2-4.7 s/GiB for Berth against 1.7 when run alone. Needs root; otherwise says so once.
fn settle_page_cache() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let _ = std::process::Command::new("sync").status();
    if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "1")
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        eprintln!("note: cannot drop the page cache ({e}); push CPU figures may drift within the run");
    }
}

/// CPU seconds per GiB moved, for the server and for this load client, since `start`.
struct CpuMeter {
    pid: u32,
    server: f64,
    client: f64,
}

impl CpuMeter {
    fn start(pid: u32) -> Self {
        CpuMeter {
            pid,
            server: cpu_seconds(pid),
            client: cpu_seconds(std::process::id()),
        }
    }

    /// (server, client) CPU seconds per GiB for `bytes` moved.
    fn per_gib(&self, bytes: usize) -> (f64, f64) {
        (
            (cpu_seconds(self.pid) - self.server) / gib(bytes),
            (cpu_seconds(std::process::id()) - self.client) / gib(bytes),
        )
    }
}

fn scaled(n: usize, scale: f64) -> usize {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let v = (n as f64 * scale).round() as usize;
    v.max(1)
}

/// One row of results: a value (and, for bulk transfers, server CPU per GiB) per target.
struct Row {
    scenario: String,
    unit: &'static str,
    /// Higher is better unless `lower_better`.
    lower_better: bool,
    values: [Option<f64>; 2],
    cpu_per_gib: [Option<f64>; 2],
    /// The load client's own CPU per GiB: the two share the machine's cores, so a bulk
    /// transfer's rate follows the sum of the two.
    client_cpu_per_gib: [Option<f64>; 2],
}

/// Which scenarios and targets to run: `LOAD_ONLY` (comma-separated scenario keys: mono,
/// chunked, small, pull, range, manifest, hot, tags, catalog) and `LOAD_TARGETS` (berth,
/// distribution); both default to everything.
struct Selection {
    only: Option<Vec<String>>,
    targets: Vec<String>,
}

impl Selection {
    fn from_env() -> Self {
        let list = |key: &str| {
            std::env::var(key).ok().map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
        };
        Selection {
            only: list("LOAD_ONLY"),
            targets: list("LOAD_TARGETS").unwrap_or_else(|| vec!["berth".into(), "distribution".into()]),
        }
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.iter().any(|s| s == scenario))
    }

    fn wants_target(&self, name: &str) -> bool {
        self.targets.iter().any(|t| t == name)
    }
}

#[allow(clippy::cast_precision_loss)]
fn count(n: usize) -> f64 {
    n as f64
}

#[allow(clippy::cast_precision_loss)]
fn gib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[allow(clippy::cast_precision_loss)]
fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

/// `n` distinct blobs of `size` bytes (at least 16), distinct again for each `seed` and `round`.
fn big_blobs(n: usize, size: usize, seed: u8, round: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let mut v = vec![seed; size];
            v[..8].copy_from_slice(&(i as u64).to_le_bytes());
            v[8..16].copy_from_slice(&(round as u64).to_le_bytes());
            v[size - 1] = seed.wrapping_add(1);
            Bytes::from(v)
        })
        .collect()
}

/// A large push scenario, repeated in rounds. Each round pushes a fresh set of blobs (the same
/// set to every target) into `repo`; round `r`'s blobs are `big_blobs(n, size, seed, r)`.
struct PushRounds {
    n: usize,
    size: usize,
    chunk: Option<usize>,
    seed: u8,
    repo: &'static str,
}

/// One push: MB/s and the server's and the client's CPU seconds per GiB.
type Pushed = (f64, (f64, f64));

/// Per round, each target's column and its push.
type PushResults = Vec<Vec<(usize, Pushed)>>;

impl PushRounds {
    /// The targets push in turn, the first of one round going last in the next, so that a
    /// drift in this machine's speed over the run (a KVM guest on a shared host: pushes in one
    /// run have measured up to 1.5x apart) reaches both alike, and the medians over the rounds
    /// discard an outlier.
    async fn run(&self, targets: &[(usize, Target)], rounds: usize, disk: &mut Vec<f64>) -> PushResults {
        let mut results = Vec::with_capacity(rounds);
        for round in 0..rounds {
            settle_page_cache();
            let (probe, how) = probe_disk(&std::env::temp_dir());
            eprintln!(
                "   {} round {round}: the disk makes {probe:.1} MB/s durable ({how})",
                self.repo
            );
            disk.push(probe);
            let blobs = big_blobs(self.n, self.size, self.seed, round);
            let mut order: Vec<&(usize, Target)> = targets.iter().collect();
            if round % 2 == 1 {
                order.reverse();
            }
            let mut this_round = Vec::with_capacity(order.len());
            for (k, t) in order {
                settle_page_cache();
                let result = bench_push(t, &blobs, self.chunk, self.repo).await;
                eprintln!(
                    "   {} round {round}: {} {:.1} MB/s, {:.2} s/GiB",
                    self.repo, t.name, result.0, result.1.0
                );
                this_round.push((*k, result));
            }
            results.push(this_round);
        }
        results
    }
}

/// MB/s of writing 1 GiB to a new file in `dir` in 1 MiB `O_DIRECT` writes, then
/// `fdatasync`, and how it was written: a reference for how fast this disk makes data durable,
/// which a push with fsync on (Berth's) waits for and one without (Distribution's) does not.
/// One writer with one write in flight, so not a strict ceiling for four concurrent uploads.
/// Both registries keep their data under the same temporary directory. Where direct I/O is
/// refused the whole probe runs again through the page cache, and says so.
fn probe_disk(dir: &std::path::Path) -> (f64, &'static str) {
    let path = dir.join(format!("berth-disk-probe-{}", std::process::id()));
    let result = probe_write(&path, libc::O_DIRECT)
        .map(|rate| (rate, "O_DIRECT"))
        .or_else(|_| probe_write(&path, 0).map(|rate| (rate, "buffered")));
    let _ = std::fs::remove_file(&path);
    result.expect("disk probe")
}

fn probe_write(path: &std::path::Path, flags: i32) -> std::io::Result<f64> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    const BLOCK: usize = MIB;
    const TOTAL: usize = 1024 * MIB;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(flags)
        .open(path)?;
    let mut buf = vec![0x5au8; BLOCK + 4096];
    let at = buf.as_ptr().align_offset(4096);
    let block = &mut buf[at..at + BLOCK];
    let start = Instant::now();
    for i in 0..TOTAL / BLOCK {
        block[..8].copy_from_slice(&(i as u64).to_le_bytes());
        file.write_all(block)?;
    }
    file.sync_data()?;
    Ok(mb(TOTAL) / start.elapsed().as_secs_f64())
}

/// Put each target's medians over the rounds in `row`: rate, server CPU and client CPU, each
/// the median of its own (so they may come from different rounds).
fn record_push(row: &mut Row, results: &PushResults) {
    for k in 0..2 {
        let mine: Vec<Pushed> = results
            .iter()
            .flat_map(|round| round.iter().filter(|(t, _)| *t == k).map(|(_, r)| *r))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let of = |f: fn(&Pushed) -> f64| median(mine.iter().map(f).collect());
        row.values[k] = Some(of(|r| r.0));
        row.cpu_per_gib[k] = Some(of(|r| r.1.0));
        row.client_cpu_per_gib[k] = Some(of(|r| r.1.1));
    }
}

/// Returns MB/s and the server's and the client's CPU seconds per GiB.
async fn bench_push(t: &Target, blobs: &[Bytes], chunk: Option<usize>, repo: &str) -> Pushed {
    let c = client();
    // Digests first: a client pushing a built image knows them already.
    let digests: Vec<String> = blobs.iter().map(|b| sha256(b)).collect();
    let cpu = CpuMeter::start(t.pid);
    let start = Instant::now();
    common::run_concurrent(blobs.len(), 4, |i| {
        let (c, b, d) = (c.clone(), blobs[i].clone(), digests[i].clone());
        async move {
            upload_as(&c, &t.base, repo, b, d, chunk).await;
        }
    })
    .await;
    let secs = start.elapsed().as_secs_f64();
    let bytes: usize = blobs.iter().map(Bytes::len).sum();
    (mb(bytes) / secs, cpu.per_gib(bytes))
}

/// Every blob pulled once per round; returns the median round's MB/s (one round is about a
/// second on this noisy machine, so a single figure swings) and the server's and the client's
/// CPU per GiB over all rounds.
async fn bench_pull(t: &Target, digests: &[String], size: usize, rounds: usize) -> (f64, (f64, f64)) {
    let cpu = CpuMeter::start(t.pid);
    let paths: Arc<Vec<String>> = Arc::new(digests.iter().map(|d| format!("/v2/load/big/blobs/{d}")).collect());
    let mut rates = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let round = paths.clone();
        run_raw(&t.base, paths.len(), 4, move |i| (round[i].clone(), None, 200, size)).await;
        rates.push(mb(paths.len() * size) / start.elapsed().as_secs_f64());
    }
    let bytes = digests.len() * rounds * size;
    (median(rates), cpu.per_gib(bytes))
}

async fn bench_ranges(t: &Target, digests: &[String], size: usize, count: usize) -> f64 {
    let start = Instant::now();
    let paths: Vec<String> = digests.iter().map(|d| format!("/v2/load/big/blobs/{d}")).collect();
    run_raw(&t.base, count, 4, move |i| {
        let offset = (i * 7919 * MIB) % (size - MIB);
        let range = format!("bytes={offset}-{}", offset + MIB - 1);
        (paths[i % paths.len()].clone(), Some(range), 206, MIB)
    })
    .await;
    mb(count * MIB) / start.elapsed().as_secs_f64()
}

async fn bench_small(t: &Target, n: usize) -> f64 {
    let c = client();
    let start = Instant::now();
    common::run_concurrent(n, 16, |i| {
        let c = c.clone();
        async move {
            let mut v = vec![0u8; 4096];
            v[..8].copy_from_slice(&(i as u64).to_le_bytes());
            upload(&c, &t.base, "load/small", Bytes::from(v), None).await;
        }
    })
    .await;
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / start.elapsed().as_secs_f64();
    rate
}

fn manifest(config: &str, layers: &[String]) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": 4096}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": layers,
    }))
    .unwrap()
}

/// Push `n` manifests (3 layers each, distinct) to `repo` tagged t0..; returns manifests/s.
async fn bench_manifests(t: &Target, repo: &str, n: usize) -> f64 {
    let c = client();
    let config = upload(&c, &t.base, repo, Bytes::from_static(b"{}"), None).await;
    let layers: Vec<String> = {
        let mut out = Vec::new();
        for i in 0..(n + 2) {
            let mut v = vec![1u8; 4096];
            v[..8].copy_from_slice(&(i as u64).to_le_bytes());
            out.push(upload(&c, &t.base, repo, Bytes::from(v), None).await);
        }
        out
    };
    let start = Instant::now();
    common::run_concurrent(n, 8, |i| {
        let (c, body) = (c.clone(), manifest(&config, &layers[i..i + 3]));
        async move { put_manifest(&c, &t.base, repo, &format!("t{i}"), body).await }
    })
    .await;
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / start.elapsed().as_secs_f64();
    rate
}

/// Manifest GET by tag and blob HEAD at concurrency 32 for `secs`: (req/s, p50 ms, p99 ms).
async fn bench_hot(t: &Target, tags: usize, blob: &str, secs: u64) -> (f64, f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..32usize {
        let (base, blob, stop, count) = (t.base.clone(), blob.to_owned(), Arc::clone(&stop), Arc::clone(&count));
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut lat = Vec::new();
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let r = if i % 2 == 0 {
                    c.get(format!("{base}/v2/load/manifests/manifests/t{}", i % tags))
                        .header("accept", "application/vnd.oci.image.manifest.v1+json")
                        .send()
                        .await
                } else {
                    c.head(format!("{base}/v2/load/big/blobs/{blob}")).send().await
                };
                let r = r.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                lat.push(t0.elapsed());
                count.fetch_add(1, Ordering::Relaxed);
                i += 32;
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    let pct = |p: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((all.len() as f64 - 1.0) * p) as usize;
        all[i].as_secs_f64() * 1000.0
    };
    #[allow(clippy::cast_precision_loss)]
    let rate = count.load(Ordering::Relaxed) as f64 / secs as f64;
    (rate, pct(0.5), pct(0.99))
}

/// Walk a paginated listing by following `Link`; returns (seconds, entries, pages).
async fn walk(base: &str, first: &str, key: &str) -> (f64, usize, usize) {
    let c = client();
    let start = Instant::now();
    let mut url = format!("{base}{first}");
    let (mut total, mut pages) = (0, 0);
    loop {
        pages += 1;
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let next = r.headers().get("link").map(|l| l.to_str().unwrap().to_owned());
        let v: serde_json::Value = r.json().await.unwrap();
        total += v[key].as_array().map_or(0, Vec::len);
        match next {
            Some(link) => {
                let path = link.trim_start_matches('<').split('>').next().unwrap().to_owned();
                url = absolute(base, &path);
            }
            None => break,
        }
    }
    (start.elapsed().as_secs_f64(), total, pages)
}

#[allow(clippy::too_many_lines)]
#[tokio::main]
async fn main() {
    let scale: f64 = std::env::var("LOAD_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let secs: u64 = std::env::var("LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let (n_big, big) = (scaled(64, scale), 16 * MIB);
    let (n_small, n_manifests, n_tags, n_repos) = (
        scaled(2000, scale),
        scaled(500, scale),
        scaled(10_000, scale),
        scaled(1000, scale),
    );
    println!("load benchmark: scale {scale}, {cpus} CPUs, hot reads {secs} s");
    println!("berth vs CNCF Distribution 2.8.2 (Debian docker-registry)");
    let sel = Selection::from_env();
    // Odd, so the median is one round's figure.
    let rounds = common::env_num("LOAD_PUSH_ROUNDS", PUSH_ROUNDS) | 1;
    let mut rows: Vec<Row> = Vec::new();
    let mut push_row = |scenario: String, unit, lower_better| {
        rows.push(Row {
            scenario,
            unit,
            lower_better,
            values: [None; 2],
            cpu_per_gib: [None; 2],
            client_cpu_per_gib: [None; 2],
        });
        rows.len() - 1
    };
    let r_mono = push_row(
        format!("blob push {n_big} x 16 MiB, c=4, monolithic, median of {rounds} rounds"),
        "MB/s",
        false,
    );
    let r_chunk = push_row(
        format!("blob push {n_big} x 16 MiB, c=4, 5 MiB chunks, median of {rounds} rounds"),
        "MB/s",
        false,
    );
    let r_small = push_row(format!("small blob push {n_small} x 4 KiB, c=16"), "blobs/s", false);
    let r_pull = push_row(
        format!("blob pull {n_big} x 16 MiB, median of {PULL_ROUNDS} rounds, c=4"),
        "MB/s",
        false,
    );
    let r_range = push_row("ranged pulls, 1 MiB ranges, c=4".into(), "MB/s", false);
    let r_man = push_row(
        format!("manifest push {n_manifests} x 3 layers, c=8"),
        "manifests/s",
        false,
    );
    let r_hot = push_row("manifest GET + blob HEAD, c=32".into(), "req/s", false);
    let r_p50 = push_row("  p50 latency".into(), "ms", true);
    let r_p99 = push_row("  p99 latency".into(), "ms", true);
    let r_tags = push_row(format!("tag list of {n_tags} tags, n=100 pages"), "ms", true);
    let r_tag_pages = push_row("  pages answered".into(), "pages", true);
    let r_tag_all = push_row(
        format!("tag list of {n_tags} tags, one request (median of 9)"),
        "ms",
        true,
    );
    let r_cat = push_row(format!("catalog of {n_repos} repositories, n=100 pages"), "ms", true);
    let r_cat_pages = push_row("  pages answered".into(), "pages", true);
    let r_rss = push_row("server peak RSS".into(), "MiB", true);

    let makers = [start_berth as fn() -> Target, start_distribution];
    let targets: Vec<(usize, Target)> = makers
        .into_iter()
        .enumerate()
        .filter(|(k, _)| sel.wants_target(["berth", "distribution"][*k]))
        .map(|(k, make)| {
            let t = make();
            eprintln!("-- {} (pid {})", t.name, t.pid);
            (k, t)
        })
        .collect();
    // The pulls read the first round's monolithic blobs, so that round runs whenever they do.
    let push_mono = sel.wants("mono") || sel.wants("pull") || sel.wants("range") || sel.wants("hot");
    let digests: Vec<String> = big_blobs(n_big, big, 3, 0).iter().map(|b| sha256(b)).collect();
    let mut disk = Vec::new();
    if push_mono {
        let n_rounds = if sel.wants("mono") { rounds } else { 1 };
        let push = PushRounds {
            n: n_big,
            size: big,
            chunk: None,
            seed: 3,
            repo: "load/big",
        };
        let results = push.run(&targets, n_rounds, &mut disk).await;
        if sel.wants("mono") {
            record_push(&mut rows[r_mono], &results);
        }
    }
    if sel.wants("chunked") {
        let chunk = Some(common::env_num("LOAD_CHUNK_MIB", 5) * MIB);
        let push = PushRounds {
            n: n_big,
            size: big,
            chunk,
            seed: 9,
            repo: "load/chunked",
        };
        record_push(&mut rows[r_chunk], &push.run(&targets, rounds, &mut disk).await);
    }
    for (k, t) in &targets {
        let k = *k;
        eprintln!("-- {}: the other scenarios", t.name);
        if sel.wants("small") {
            rows[r_small].values[k] = Some(bench_small(t, n_small).await);
        }
        if sel.wants("pull") {
            settle_page_cache();
            let (rate, cpu) = bench_pull(t, &digests, big, PULL_ROUNDS).await;
            rows[r_pull].values[k] = Some(rate);
            rows[r_pull].cpu_per_gib[k] = Some(cpu.0);
            rows[r_pull].client_cpu_per_gib[k] = Some(cpu.1);
        }
        if sel.wants("range") {
            rows[r_range].values[k] = Some(bench_ranges(t, &digests, big, scaled(512, scale)).await);
        }
        if sel.wants("manifest") || sel.wants("hot") {
            let rate = bench_manifests(t, "load/manifests", n_manifests).await;
            rows[r_man].values[k] = sel.wants("manifest").then_some(rate);
        }
        if sel.wants("hot") {
            let (rate, p50, p99) = bench_hot(t, n_manifests, &digests[0], secs).await;
            rows[r_hot].values[k] = Some(rate);
            rows[r_p50].values[k] = Some(p50);
            rows[r_p99].values[k] = Some(p99);
        }
        if sel.wants("tags") {
            let (ms, pages, all) = bench_tags(t, n_tags).await;
            rows[r_tags].values[k] = Some(ms);
            rows[r_tag_all].values[k] = Some(all);
            rows[r_tag_pages].values[k] = Some(count(pages));
        }
        if sel.wants("catalog") {
            let (ms, pages) = bench_catalog(t, n_repos).await;
            rows[r_cat].values[k] = Some(ms);
            rows[r_cat_pages].values[k] = Some(count(pages));
        }
        rows[r_rss].values[k] = Some(peak_rss_mib(t.pid));
    }
    print_table(&rows);
    if !disk.is_empty() {
        disk.sort_by(f64::total_cmp);
        let median = median(disk.clone());
        println!(
            "\ndisk, durable sequential write (1 GiB in 1 MiB writes, then fdatasync; see the rounds \
             for O_DIRECT or buffered), before each push round: median {median:.0} MB/s, \
             {:.0}-{:.0} over {} rounds",
            disk[0],
            disk[disk.len() - 1],
            disk.len()
        );
    }
}

/// Many tags on one manifest, then the paginated tag list walked; returns milliseconds and the
/// pages it took (Distribution 2.8 ignores `n` for tags and answers them all at once), then
/// the whole list in one request (no `n`), in milliseconds.
async fn bench_tags(t: &Target, n_tags: usize) -> (f64, usize, f64) {
    let c = client();
    let body = manifest(
        &upload(&c, &t.base, "load/tags", Bytes::from_static(b"{}"), None).await,
        &[],
    );
    common::run_concurrent(n_tags, 16, |i| {
        let (c, body, base) = (c.clone(), body.clone(), t.base.clone());
        async move { put_manifest(&c, &base, "load/tags", &format!("tag{i:06}"), body).await }
    })
    .await;
    let (s, n, pages) = walk(&t.base, "/v2/load/tags/tags/list?n=100", "tags").await;
    assert_eq!(n, n_tags);
    // One request is a single ~10 ms sample on a noisy machine: take the median of nine.
    let mut all = Vec::new();
    for _ in 0..9 {
        let (secs, n, _) = walk(&t.base, "/v2/load/tags/tags/list", "tags").await;
        assert_eq!(n, n_tags);
        all.push(secs);
    }
    all.sort_by(f64::total_cmp);
    (s * 1000.0, pages, all[4] * 1000.0)
}

/// One blob in each of `n_repos` repositories, then the paginated catalog walked; returns
/// milliseconds and pages.
async fn bench_catalog(t: &Target, n_repos: usize) -> (f64, usize) {
    let c = client();
    common::run_concurrent(n_repos, 16, |i| {
        let c = c.clone();
        let base = t.base.clone();
        async move {
            upload(&c, &base, &format!("cat/r{i:05}"), Bytes::from_static(b"x"), None).await;
        }
    })
    .await;
    let (s, n, pages) = walk(&t.base, "/v2/_catalog?n=100", "repositories").await;
    assert!(n >= n_repos, "catalog listed {n}");
    (s * 1000.0, pages)
}

fn print_table(rows: &[Row]) {
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    println!();
    println!("| scenario | unit | berth | distribution | berth / distribution |");
    println!("|---|---|---|---|---|");
    for row in rows {
        let [b, d] = row.values;
        let ratio = match (b, d) {
            (Some(b), Some(d)) if row.lower_better => format!("{:.2}x (lower is better)", d / b),
            (Some(b), Some(d)) => format!("{:.2}x", b / d),
            _ => "-".to_owned(),
        };
        println!(
            "| {} | {} | {} | {} | {ratio} |",
            row.scenario,
            row.unit,
            cell(b),
            cell(d)
        );
        if let [Some(bc), Some(dc)] = row.cpu_per_gib {
            println!("|   server CPU | s/GiB | {bc:.2} | {dc:.2} | {:.2}x less |", dc / bc);
        } else if row.cpu_per_gib.iter().any(Option::is_some) {
            let [bc, dc] = row.cpu_per_gib;
            println!("|   server CPU | s/GiB | {} | {} | - |", cell(bc), cell(dc));
        }
        if row.client_cpu_per_gib.iter().any(Option::is_some) {
            let [bc, dc] = row.client_cpu_per_gib;
            println!("|   load client CPU | s/GiB | {} | {} | - |", cell(bc), cell(dc));
        }
    }
}
