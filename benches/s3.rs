//! Side-by-side object-storage benchmark: Berth's S3 backend against CNCF Distribution 2.8.2's
//! `s3` driver (the Debian `docker-registry` package), both on the same single-node Garage on
//! 127.0.0.1, each with a bucket of its own. Scenarios: 16 MiB pushes (POST, one PATCH, PUT,
//! as docker pushes a layer), 4 KiB pushes, pulls streamed through the registry, pulls
//! redirected to presigned URLs (both registries restarted with redirects on), manifest GETs,
//! and a Berth garbage collection of 10 000 unreferenced blobs in the bucket.
//!
//! Prints the inputs, the machine, and a table with both results and their ratio; the server
//! CPU is the registry process's own (Garage's is shared and not counted).
//!
//! Run: `cargo bench --bench s3` (needs `garage`, see `.ci/run`, and `docker-registry`).
//! `S3_SCALE` scales the counts (default 1.0), `S3_ROUNDS` the rounds of each measured
//! scenario (default 3; the median is reported).

// Rates and ratios of counts that stay far below 2^52: float conversions lose nothing here.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

mod common;
#[path = "../tests/it/garage.rs"]
mod garage;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{client, cpu_seconds, median, sha256};
use futures_util::StreamExt;

use garage::{ACCESS_KEY, BUCKET, Garage, REGION, SECRET_KEY};

const MIB: usize = 1 << 20;

/// A registry under test, on S3.
struct Target {
    base: String,
    child: std::process::Child,
    start: Box<dyn Fn(bool) -> (std::process::Child, String)>,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Target {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Restart on the same storage, with or without redirected pulls.
    fn restart(&mut self, redirect: bool) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.child, self.base) = (self.start)(redirect);
    }
}

fn berth(garage: &Garage, root: std::path::PathBuf) -> Target {
    let endpoint = garage.endpoint.clone();
    let start = move |redirect: bool| {
        let port = common::free_port();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_berth"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BERTH_")) {
            cmd.env_remove(k);
        }
        let child = cmd
            .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--root"])
            .arg(&root)
            .env("BERTH_LOG_LEVEL", "warn")
            .env("BERTH_GC_GRACE_PERIOD", "0s")
            .env("BERTH_STORAGE_S3_ENDPOINT", &endpoint)
            .env("BERTH_STORAGE_S3_REGION", REGION)
            .env("BERTH_STORAGE_S3_BUCKET", BUCKET)
            .env("BERTH_STORAGE_S3_ACCESS_KEY", ACCESS_KEY)
            .env("BERTH_STORAGE_S3_SECRET_KEY", SECRET_KEY)
            .env("BERTH_STORAGE_S3_PATH_STYLE", "true")
            .env("BERTH_STORAGE_S3_REDIRECT", redirect.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        common::wait_for(port);
        (child, format!("http://127.0.0.1:{port}"))
    };
    let (child, base) = start(false);
    Target {
        base,
        child,
        start: Box::new(start),
    }
}

fn distribution(garage: &Garage, dir: std::path::PathBuf) -> Target {
    garage.create_bucket("distribution");
    let endpoint = garage.endpoint.clone();
    let start = move |redirect: bool| {
        let config = |port| {
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  s3:\n    \
                 accesskey: {ACCESS_KEY}\n    secretkey: {SECRET_KEY}\n    region: {REGION}\n    \
                 regionendpoint: {endpoint}\n    bucket: distribution\n    secure: false\n    v4auth: true\n  \
                 delete:\n    enabled: true\n  redirect:\n    disable: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                !redirect
            )
        };
        common::spawn_distribution(&dir, config, std::process::Stdio::null())
    };
    let (child, base) = start(false);
    Target {
        base,
        child,
        start: Box::new(start),
    }
}

fn blobs(n: usize, size: usize, seed: u64) -> Vec<(Bytes, String)> {
    (0..n)
        .map(|i| {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64 + 1);
            let mut v = vec![0u8; size];
            for chunk in v.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let b = x.to_le_bytes();
                chunk.copy_from_slice(&b[..chunk.len()]);
            }
            let digest = sha256(&v);
            (Bytes::from(v), digest)
        })
        .collect()
}

/// (rate per second of `unit`s, server CPU s/GiB) of pushing `set` with `concurrency`.
async fn bench_push(t: &Target, set: &[(Bytes, String)], concurrency: usize, repo: &str) -> (f64, f64) {
    let c = client();
    let (cpu0, t0) = (cpu_seconds(t.pid()), Instant::now());
    common::run_concurrent(set.len(), concurrency, |i| {
        let (c, base, (bytes, digest)) = (&c, &t.base, &set[i]);
        async move { common::push_patch(c, base, repo, bytes.clone(), digest).await }
    })
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let bytes: usize = set.iter().map(|(b, _)| b.len()).sum();
    (bytes as f64 / secs / 1e6, (cpu_seconds(t.pid()) - cpu0) / gib(bytes))
}

/// (MB/s, server CPU s/GiB) of pulling `set` (following redirects).
async fn bench_pull(t: &Target, set: &[(Bytes, String)], repo: &str) -> (f64, f64) {
    let c = client();
    let (cpu0, t0) = (cpu_seconds(t.pid()), Instant::now());
    common::run_concurrent(set.len(), 4, |i| {
        let (c, base, (bytes, digest)) = (&c, &t.base, &set[i]);
        async move {
            let r = c.get(format!("{base}/v2/{repo}/blobs/{digest}")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let mut got = 0;
            let mut body = r.bytes_stream();
            while let Some(chunk) = body.next().await {
                got += chunk.unwrap().len();
            }
            assert_eq!(got, bytes.len());
        }
    })
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let bytes: usize = set.iter().map(|(b, _)| b.len()).sum();
    (bytes as f64 / secs / 1e6, (cpu_seconds(t.pid()) - cpu0) / gib(bytes))
}

/// Manifest GETs per second by tag, 16 in flight, for `secs`.
async fn bench_manifests(t: &Target, repo: &str, config: &(Bytes, String), secs: u64) -> f64 {
    let c = client();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.1, "size": config.0.len()},
        "layers": [],
    });
    let r = c
        .put(format!("{}/v2/{repo}/manifests/v1", t.base))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "manifest PUT");
    let url = format!("{}/v2/{repo}/manifests/v1", t.base);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let t0 = Instant::now();
    let done = std::sync::atomic::AtomicU64::new(0);
    let workers = (0..16).map(|_| async {
        while Instant::now() < deadline {
            let r = c
                .get(&url)
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let _ = r.bytes().await.unwrap();
            done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    futures_util::future::join_all(workers).await;
    done.into_inner() as f64 / t0.elapsed().as_secs_f64()
}

/// Push `n` unreferenced 1 KiB blobs, then time a collection that deletes them all.
async fn bench_gc(t: &Target, n: usize) -> (f64, u64) {
    let c = client();
    let set = blobs(n, 1024, 99);
    common::run_concurrent(n, 16, |i| {
        let (c, base, (bytes, digest)) = (&c, &t.base, &set[i]);
        async move {
            let r = c
                .post(format!("{base}/v2/gc/junk/blobs/uploads/?digest={digest}"))
                .body(bytes.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
    })
    .await;
    // Links are kept for the grace period after their upload (0 s here, but in milliseconds).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = common::run_gc(&c, &t.base).await;
    let ms = report["duration_ms"].as_u64().unwrap();
    (ms as f64 / 1000.0, report["blobs_deleted"].as_u64().unwrap())
}

fn gib(bytes: usize) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

fn scaled(n: usize) -> usize {
    let scale: f64 = std::env::var("S3_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * scale).round() as usize).max(1)
}

struct Row {
    scenario: String,
    unit: &'static str,
    values: [f64; 2],
    lower_better: bool,
}

/// Pulls of every pushed set, streamed and then redirected (each registry restarted for it).
async fn bench_pulls(targets: &mut [Target; 2], big_sets: &[Vec<(Bytes, String)>], rows: &mut Vec<Row>) {
    let med = |v: &[Vec<f64>; 2]| [median(v[0].clone()), median(v[1].clone())];
    for redirect in [false, true] {
        let (mut rate, mut cpu) = ([vec![], vec![]], [vec![], vec![]]);
        for (i, t) in targets.iter_mut().enumerate() {
            t.restart(redirect);
            for set in big_sets {
                let (r, c) = bench_pull(t, set, "bench/big").await;
                rate[i].push(r);
                cpu[i].push(c);
            }
        }
        let how = if redirect { "redirected" } else { "streamed" };
        rows.push(Row {
            scenario: format!("16 MiB pull, {how}"),
            unit: "MB/s",
            values: med(&rate),
            lower_better: false,
        });
        rows.push(Row {
            scenario: "  server CPU".into(),
            unit: "s/GiB",
            values: med(&cpu),
            lower_better: true,
        });
    }
}

fn print_rows(rows: &[Row]) {
    println!();
    println!("| scenario | unit | berth | distribution | berth / distribution |");
    println!("|---|---|---|---|---|");
    for row in rows {
        let [b, d] = row.values;
        let ratio = if row.lower_better {
            format!("{:.2}x less", d / b)
        } else {
            format!("{:.2}x", b / d)
        };
        println!("| {} | {} | {b:.2} | {d:.2} | {ratio} |", row.scenario, row.unit);
    }
}

#[tokio::main]
async fn main() {
    let rounds = common::env_num("S3_ROUNDS", 3) | 1;
    let (n_big, n_small, n_gc) = (scaled(16), scaled(400), scaled(10_000));
    println!(
        "s3 bench: {}; {rounds} rounds; {n_big} x 16 MiB and {n_small} x 4 KiB pushes per round, \
         gc over {n_gc} blobs; Garage {}",
        common::machine(),
        String::from_utf8_lossy(
            &std::process::Command::new(garage::binary())
                .arg("--version")
                .output()
                .unwrap()
                .stdout
        )
        .lines()
        .next()
        .unwrap_or("")
    );
    let garage = Garage::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut targets = [
        berth(&garage, tmp.path().join("berth")),
        distribution(&garage, tmp.path().to_owned()),
    ];
    let mut rows: Vec<Row> = Vec::new();
    let mut big_sets = Vec::new();
    let (mut push_rate, mut push_cpu, mut small_rate) = ([vec![], vec![]], [vec![], vec![]], [vec![], vec![]]);
    let mut garage_cpu = [vec![], vec![]];
    let garage_pid = garage.server_pid().expect("garage's pid");
    for round in 0..rounds {
        let big = blobs(n_big, 16 * MIB, 10 + round as u64);
        let small = blobs(n_small, 4096, 1000 + round as u64);
        // The registries take turns within a round.
        for (i, t) in targets.iter().enumerate() {
            let garage_before = cpu_seconds(garage_pid);
            let (rate, cpu) = bench_push(t, &big, 4, "bench/big").await;
            let bytes: usize = big.iter().map(|(b, _)| b.len()).sum();
            garage_cpu[i].push((cpu_seconds(garage_pid) - garage_before) / gib(bytes));
            push_rate[i].push(rate);
            push_cpu[i].push(cpu);
            let (rate, _) = bench_push(t, &small, 16, "bench/small").await;
            small_rate[i].push(rate * 1e6 / 4096.0);
        }
        big_sets.push(big);
    }
    let med = |v: &[Vec<f64>; 2]| [median(v[0].clone()), median(v[1].clone())];
    rows.push(Row {
        scenario: "16 MiB push, 4 at once".into(),
        unit: "MB/s",
        values: med(&push_rate),
        lower_better: false,
    });
    rows.push(Row {
        scenario: "  server CPU".into(),
        unit: "s/GiB",
        values: med(&push_cpu),
        lower_better: true,
    });
    rows.push(Row {
        scenario: "  Garage CPU (not in the ratio's favour or against it)".into(),
        unit: "s/GiB",
        values: med(&garage_cpu),
        lower_better: true,
    });
    rows.push(Row {
        scenario: "4 KiB push, 16 at once".into(),
        unit: "blobs/s",
        values: med(&small_rate),
        lower_better: false,
    });
    bench_pulls(&mut targets, &big_sets, &mut rows).await;
    let config = blobs(1, 512, 7).remove(0);
    let mut gets = [0.0; 2];
    for (i, t) in targets.iter().enumerate() {
        // POST, PATCH, PUT: Distribution 2.8.2 answers a single-request POST with 202.
        common::push_patch(&client(), &t.base, "bench/meta", config.0.clone(), &config.1).await;
        gets[i] = bench_manifests(t, "bench/meta", &config, 10).await;
    }
    rows.push(Row {
        scenario: "manifest GET by tag, 16 at once".into(),
        unit: "req/s",
        values: gets,
        lower_better: false,
    });
    print_rows(&rows);
    let (secs, deleted) = bench_gc(&targets[0], n_gc).await;
    println!();
    println!("berth gc on S3: {deleted} unreferenced blobs deleted in {secs:.1} s");
}
