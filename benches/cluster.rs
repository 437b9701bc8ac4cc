//! Several nodes: how Berth scales behind a load balancer, on one machine.
//!
//! - Manifest GETs per second through nginx with one, two and three Berth nodes sharing one
//!   PostgreSQL database and one Garage bucket, against a single redb node (directly, and
//!   behind the same nginx, which shows the balancer's own cost). With the server CPU per
//!   request: Berth's nodes, PostgreSQL's processes and nginx's, each measured from /proc.
//! - Push and pull MB/s of 16 MiB blobs (POST, PATCH, PUT, as docker pushes a layer; the
//!   balancer spreads each push's requests over the nodes) through nginx: Berth (PostgreSQL +
//!   Garage) against CNCF Distribution 2.8.2 with the same `s3` driver and Garage, and Redis
//!   as its blob-descriptor cache, one node each and three nodes each.
//!
//! Every process shares this machine's cores, so more nodes add no CPU: the figures show what
//! the nodes' coordination costs (round trips to PostgreSQL, the balancer's hop), not what a
//! cluster of machines would gain. docs/benchmarks.md keeps the results.
//!
//! Run: `cargo bench --bench cluster` (needs garage, docker-registry, nginx, redis-server and
//! PostgreSQL, which .ci/run and benches/run install). `CLUSTER_SECS` sets each GET
//! measurement's length (default 5), `CLUSTER_ROUNDS` the rounds (default 3; medians are
//! reported), `CLUSTER_BLOBS` the blobs pushed per push round (default 24).

// Rates and ratios of counts far below 2^52: float conversions lose nothing here.
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

mod common;
#[path = "../tests/it/garage.rs"]
mod garage;
#[path = "../tests/it/nginx.rs"]
mod nginx;
#[path = "../tests/it/postgres.rs"]
mod postgres;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{client, cpu_seconds, env_num, median, sha256};
use futures_util::StreamExt;
use garage::{ACCESS_KEY, BUCKET, Garage, REGION, SECRET_KEY};
use nginx::{Nginx, free_port};
use postgres::Postgres;

const MIB: usize = 1 << 20;
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Processes whose CPU a measurement charges to each side.
#[derive(Default, Clone)]
struct Cpu {
    registry: Vec<u32>,
    database: Vec<u32>,
    balancer: Vec<u32>,
}

/// CPU seconds of `pid` and every process below it.
fn tree_cpu(pid: u32) -> f64 {
    let mut total = cpu_seconds(pid);
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
        total += tree_cpu(child);
    }
    total
}

fn sum_cpu(pids: &[u32]) -> f64 {
    pids.iter().map(|&p| tree_cpu(p)).sum()
}

impl Cpu {
    fn sample(&self) -> [f64; 3] {
        [
            sum_cpu(&self.registry),
            sum_cpu(&self.database),
            sum_cpu(&self.balancer),
        ]
    }
}

/// Registry processes started for one measurement; killed on drop.
struct Nodes {
    children: Vec<Child>,
    bases: Vec<String>,
    dirs: Vec<tempfile::TempDir>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Nodes {
    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    fn addrs(&self) -> Vec<String> {
        self.bases
            .iter()
            .map(|b| b.trim_start_matches("http://").to_owned())
            .collect()
    }
}

/// `n` Berth nodes; with `shared`, on the PostgreSQL database and bucket prefix given, else
/// each alone on redb and files.
fn berth_nodes(n: usize, shared: Option<(&str, &Garage, &str)>) -> Nodes {
    let mut nodes = Nodes {
        children: Vec::new(),
        bases: Vec::new(),
        dirs: Vec::new(),
    };
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BERTH_")) {
            cmd.env_remove(k);
        }
        cmd.args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--root"])
            .arg(dir.path().join("data"))
            .env("BERTH_LOG_LEVEL", "warn");
        if let Some((database, garage, prefix)) = shared {
            cmd.env("BERTH_METADATA_POSTGRES_URL", database)
                .env("BERTH_STORAGE_S3_ENDPOINT", &garage.endpoint)
                .env("BERTH_STORAGE_S3_REGION", REGION)
                .env("BERTH_STORAGE_S3_BUCKET", BUCKET)
                .env("BERTH_STORAGE_S3_PREFIX", prefix)
                .env("BERTH_STORAGE_S3_ACCESS_KEY", ACCESS_KEY)
                .env("BERTH_STORAGE_S3_SECRET_KEY", SECRET_KEY)
                .env("BERTH_STORAGE_S3_PATH_STYLE", "true");
        }
        let child = cmd.stdout(Stdio::null()).spawn().unwrap();
        common::wait_for(port);
        nodes.children.push(child);
        nodes.bases.push(format!("http://127.0.0.1:{port}"));
        nodes.dirs.push(dir);
    }
    nodes
}

/// `n` Distribution nodes on one bucket of `garage`, with one Redis as their blob-descriptor
/// cache, and the shared secret that lets any node continue another's upload.
fn distribution_nodes(n: usize, garage: &Garage, bucket: &str, redis: u16) -> Nodes {
    let mut nodes = Nodes {
        children: Vec::new(),
        bases: Vec::new(),
        dirs: Vec::new(),
    };
    let endpoint = garage.endpoint.clone();
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let config = |port| {
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  s3:\n    \
                 accesskey: {ACCESS_KEY}\n    secretkey: {SECRET_KEY}\n    region: {REGION}\n    \
                 regionendpoint: {endpoint}\n    bucket: {bucket}\n    secure: false\n    v4auth: true\n  \
                 cache:\n    blobdescriptor: redis\n  delete:\n    enabled: true\n  redirect:\n    disable: true\n\
                 redis:\n  addr: 127.0.0.1:{redis}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: berth-benchmark-secret\n"
            )
        };
        let (child, base) = common::spawn_distribution(dir.path(), config, Stdio::null());
        nodes.children.push(child);
        nodes.bases.push(base);
        nodes.dirs.push(dir);
    }
    nodes
}

/// A Redis server on a free port, without persistence; killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis() -> Redis {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is required: apt-get install redis-server");
    common::wait_for(port);
    Redis { child, port }
}

/// Push a config blob and a manifest naming it, so that `repo:v1` exists.
async fn seed_manifest(base: &str, repo: &str) {
    let c = client();
    let config = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}".to_vec();
    common::push_blob(&c, base, repo, config.clone()).await;
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [],
    });
    common::put_manifest(&c, base, repo, "v1", serde_json::to_vec(&manifest).unwrap()).await;
}

/// (requests per second, [registry, database, balancer] CPU microseconds per request) of
/// manifest GETs by tag with 32 in flight for `secs`.
async fn manifest_gets(base: &str, repo: &str, cpu: &Cpu, secs: u64) -> (f64, [f64; 3]) {
    let c = client();
    let url = format!("{base}/v2/{repo}/manifests/v1");
    let done = AtomicU64::new(0);
    let before = cpu.sample();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(secs);
    let workers = (0..32).map(|_| async {
        while Instant::now() < deadline {
            let r = c.get(&url).header("accept", MANIFEST).send().await.unwrap();
            assert_eq!(r.status(), 200, "manifest GET");
            let _ = r.bytes().await.unwrap();
            done.fetch_add(1, Ordering::Relaxed);
        }
    });
    futures_util::future::join_all(workers).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let after = cpu.sample();
    let n = done.into_inner() as f64;
    let per = |i: usize| (after[i] - before[i]) / n * 1e6;
    (n / elapsed, [per(0), per(1), per(2)])
}

fn blobs(n: usize, size: usize, seed: u64) -> Vec<(Bytes, String)> {
    (0..n)
        .map(|i| {
            let v = common::random_bytes(size, seed * 1_000_003 + i as u64);
            let digest = sha256(&v);
            (Bytes::from(v), digest)
        })
        .collect()
}

/// (push MB/s, pull MB/s, registry CPU s/GiB pushed) of `set` through `base`, 4 at a time.
async fn push_pull(base: &str, repo: &str, set: &[(Bytes, String)], cpu: &Cpu) -> (f64, f64, f64) {
    let c = client();
    let bytes: usize = set.iter().map(|(b, _)| b.len()).sum();
    let before = cpu.sample();
    let t0 = Instant::now();
    common::run_concurrent(set.len(), 4, |i| {
        let (c, (b, d)) = (&c, &set[i]);
        async move { common::push_patch(c, base, repo, b.clone(), d).await }
    })
    .await;
    let push_rate = bytes as f64 / t0.elapsed().as_secs_f64() / 1e6;
    let cpu_per_gib = (cpu.sample()[0] - before[0]) / (bytes as f64 / f64::from(1u32 << 30));
    let t0 = Instant::now();
    common::run_concurrent(set.len(), 4, |i| {
        let (c, (b, d)) = (&c, &set[i]);
        async move {
            let r = c.get(format!("{base}/v2/{repo}/blobs/{d}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "blob GET");
            let mut got = 0;
            let mut body = r.bytes_stream();
            while let Some(chunk) = body.next().await {
                got += chunk.unwrap().len();
            }
            assert_eq!(got, b.len());
        }
    })
    .await;
    let pull_rate = bytes as f64 / t0.elapsed().as_secs_f64() / 1e6;
    (push_rate, pull_rate, cpu_per_gib)
}

fn database_pids(pg: &Postgres) -> Vec<u32> {
    pg.server_pid().into_iter().collect()
}

struct Row {
    name: String,
    rate: Vec<f64>,
    cpu: Vec<[f64; 3]>,
}

fn print_gets(rows: &[Row]) {
    println!("\nManifest GET by tag, 32 in flight (median of rounds):");
    println!(
        "{:<44} {:>10} {:>12} {:>12} {:>12} {:>10}",
        "setup", "req/s", "berth us/req", "pg us/req", "nginx us/req", "vs redb"
    );
    let base = median(rows[0].rate.clone());
    for r in rows {
        let rate = median(r.rate.clone());
        let cpu = |i: usize| median(r.cpu.iter().map(|c| c[i]).collect());
        println!(
            "{:<44} {:>10.0} {:>12.1} {:>12.1} {:>12.1} {:>10.2}",
            r.name,
            rate,
            cpu(0),
            cpu(1),
            cpu(2),
            rate / base
        );
    }
}

async fn bench_gets(garage: &Garage, pg: &Postgres, rounds: usize, secs: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    // One redb node, directly and behind nginx.
    let single = berth_nodes(1, None);
    seed_manifest(&single.bases[0], "bench/app").await;
    let lb = Nginx::start(&single.addrs());
    let mut direct = Row {
        name: "1 node, redb, direct".into(),
        rate: Vec::new(),
        cpu: Vec::new(),
    };
    let mut behind = Row {
        name: "1 node, redb, through nginx".into(),
        rate: Vec::new(),
        cpu: Vec::new(),
    };
    let cpu = Cpu {
        registry: single.pids(),
        database: Vec::new(),
        balancer: lb.pid().into_iter().collect(),
    };
    for _ in 0..rounds {
        let (rate, per) = manifest_gets(&single.bases[0], "bench/app", &cpu, secs).await;
        direct.rate.push(rate);
        direct.cpu.push(per);
        let (rate, per) = manifest_gets(&lb.base, "bench/app", &cpu, secs).await;
        behind.rate.push(rate);
        behind.cpu.push(per);
    }
    rows.extend([direct, behind]);
    drop((lb, single));
    for n in 1..=3 {
        let database = pg.fresh_url();
        let prefix = garage::fresh_prefix();
        let nodes = berth_nodes(n, Some((&database, garage, &prefix)));
        seed_manifest(&nodes.bases[0], "bench/app").await;
        let lb = Nginx::start(&nodes.addrs());
        let cpu = Cpu {
            registry: nodes.pids(),
            database: database_pids(pg),
            balancer: lb.pid().into_iter().collect(),
        };
        let mut row = Row {
            name: format!("{n} node(s), PostgreSQL + S3, through nginx"),
            rate: Vec::new(),
            cpu: Vec::new(),
        };
        for _ in 0..rounds {
            let (rate, per) = manifest_gets(&lb.base, "bench/app", &cpu, secs).await;
            row.rate.push(rate);
            row.cpu.push(per);
        }
        rows.push(row);
    }
    rows
}

async fn bench_transfers(garage: &Garage, pg: &Postgres, rounds: usize, count: usize) {
    println!(
        "\nPush (POST, PATCH, PUT) and pull of {count} x 16 MiB blobs through nginx, 4 at a time (median of rounds):"
    );
    println!(
        "{:<48} {:>10} {:>10} {:>14}",
        "setup", "push MB/s", "pull MB/s", "CPU s/GiB push"
    );
    let redis = redis();
    for n in [1, 3] {
        let database = pg.fresh_url();
        let prefix = garage::fresh_prefix();
        let berth = berth_nodes(n, Some((&database, garage, &prefix)));
        let bucket = format!("distribution-{n}");
        garage.create_bucket(&bucket);
        let distribution = distribution_nodes(n, garage, &bucket, redis.port);
        for (name, nodes) in [
            (format!("Berth, {n} node(s), PostgreSQL + S3"), &berth),
            (format!("Distribution, {n} node(s), S3 + Redis"), &distribution),
        ] {
            let lb = Nginx::start(&nodes.addrs());
            let cpu = Cpu {
                registry: nodes.pids(),
                ..Cpu::default()
            };
            let (mut push_rates, mut pull_rates, mut cpus) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..rounds {
                let set = blobs(count, 16 * MIB, (n * 10 + round) as u64);
                let (p, g, c) = push_pull(&lb.base, &format!("bench/r{round}"), &set, &cpu).await;
                push_rates.push(p);
                pull_rates.push(g);
                cpus.push(c);
            }
            println!(
                "{name:<48} {:>10.1} {:>10.1} {:>14.2}",
                median(push_rates),
                median(pull_rates),
                median(cpus)
            );
        }
    }
}

fn main() {
    let rounds = env_num("CLUSTER_ROUNDS", 3);
    let secs = env_num("CLUSTER_SECS", 5) as u64;
    let count = env_num("CLUSTER_BLOBS", 24);
    println!("{}", common::machine());
    let garage = Garage::start();
    let pg = Postgres::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let rows = bench_gets(&garage, &pg, rounds, secs).await;
        print_gets(&rows);
        bench_transfers(&garage, &pg, rounds, count).await;
    });
}
