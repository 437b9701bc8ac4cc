//! The pull-through cache side by side with CNCF Distribution 2.8.2's proxy mode (the Debian
//! `docker-registry` with `proxy: remoteurl:`), both caching THE SAME upstream: a plain
//! Distribution 2.8.2 registry. Distribution as the upstream is the neutral choice: neither
//! cache talks to its own kind, both pay the same upstream per request, and its access log
//! (Apache combined format, one line per request with method and URI) counts what each cache
//! asked for. Everything on 127.0.0.1; each cache runs with its defaults (Berth: `tag_ttl: 5m`,
//! `storage.fsync: true`; Distribution never fsyncs).
//!
//! The image: `PROXY_LAYERS` layers (default 4) of `PROXY_LAYER_MIB` MiB (default 64) of
//! incompressible bytes, and a config. A pull is what a client does: the manifest by tag, then
//! the config and the layers, 4 at once, each on a lean keep-alive connection (`common::raw`)
//! that counts the body and drops it.
//!
//! 1. **Cold pull** through each cache (a fresh one for every round), beside the same pull
//!    straight from the upstream; with each process's CPU seconds.
//! 2. **Warm pull** through each cache (the last cold round's, after two untimed pulls), beside
//!    a pull from a Berth that has the image pushed locally, each run the mean of 4 pulls back
//!    to back. All three read from the page cache.
//! 3. **Manifest GET by tag** on a cache hit: `PROXY_GETS` (default 2000) one after another,
//!    then 8 clients for `PROXY_SECS` (default 3) seconds; p50, p99, and requests per second;
//!    with the upstream requests each GET caused.
//! 4. **16 concurrent cold pulls of one layer** (after one manifest GET) through a fresh
//!    cache: the blob GETs the upstream saw, and how long the 16 took.
//!
//! Each figure is the median over `PROXY_ROUNDS` rounds (default 5 for pulls, 3 for the
//! others), the contenders taking turns in an order that rotates each round. `sync` runs
//! before every timed pull, so none inherits another's page cache writeback. Prints the
//! inputs, the machine, and a table of values and ratios; asserts only correctness.
//!
//! Run: `cargo bench --bench proxy` (release build; about 1.5 minutes on 2 cores after the
//! build, and up to 1 GiB of temporary files at a time).

// Figures for a report, of counts far below 2^52.
#![allow(clippy::cast_precision_loss)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::run_raw;
use common::{Distribution, OCI_MANIFEST, Server, cpu_seconds, env_num, median, put_manifest, sha256, upload_as};

const MIB: usize = 1 << 20;
/// The image's repository upstream and its tag.
const REPO: &str = "bench/image";
const TAG: &str = "latest";
/// Blobs fetched at once by a pull (docker pulls 3 layers at once by default, containerd more).
const PULL_CONCURRENCY: usize = 4;
/// Clients of the concurrent manifest GETs and of the single-flight measure.
const MANIFEST_CLIENTS: usize = 8;
const COLD_CLIENTS: usize = 16;
/// A warm pull takes some 50 ms here: each timed run is this many pulls back to back.
const WARM_PULLS: usize = 4;

/// An image pushed upstream: its manifest and blobs (config first).
struct Image {
    manifest: Vec<u8>,
    digest: String,
    blobs: Vec<(String, Bytes)>,
}

impl Image {
    fn new(layers: usize, size: usize) -> Image {
        let config = Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"layers":{layers}}}"#
        ));
        let mut blobs = vec![(sha256(&config), config)];
        for i in 0..layers {
            let layer = Bytes::from(common::random_bytes(size, 1000 + i as u64));
            blobs.push((sha256(&layer), layer));
        }
        let descriptor = |media_type: &str, (digest, bytes): &(String, Bytes)| serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()});
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &blobs[0]),
            "layers": blobs[1..].iter().map(|b| descriptor("application/vnd.oci.image.layer.v1.tar", b)).collect::<Vec<_>>(),
        }))
        .unwrap();
        Image {
            digest: sha256(&manifest),
            manifest,
            blobs,
        }
    }

    fn bytes(&self) -> usize {
        self.blobs.iter().map(|(_, b)| b.len()).sum()
    }

    async fn push(&self, base: &str) {
        let c = common::client();
        for (digest, bytes) in &self.blobs {
            upload_as(&c, base, REPO, bytes.clone(), digest.clone(), None).await;
        }
        put_manifest(&c, base, REPO, TAG, self.manifest.clone()).await;
    }
}

/// Who serves a pull.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Source {
    /// The upstream itself (cold pull) or a Berth with the image pushed (warm pull).
    Reference,
    Berth,
    Distribution,
}

/// A pull-through cache of the upstream, killed on drop.
struct Cache {
    base: String,
    /// The image's repository through this cache.
    repo: String,
    pid: u32,
    _berth: Option<Server>,
    _distribution: Option<Distribution>,
}

impl Cache {
    fn berth(upstream: &str) -> Cache {
        let yaml = format!("proxy:\n  - prefix: up\n    url: {upstream}\n    tag_ttl: 5m\n");
        let server = Server::start_with_config(&yaml, &[]);
        Cache {
            base: server.base.clone(),
            repo: format!("up/{REPO}"),
            pid: server.pid(),
            _berth: Some(server),
            _distribution: None,
        }
    }

    fn distribution(upstream: &str) -> Cache {
        let d = Distribution::start(&format!("proxy:\n  remoteurl: {upstream}\n"), false);
        Cache {
            base: d.base.clone(),
            repo: REPO.to_owned(),
            pid: d.pid(),
            _berth: None,
            _distribution: Some(d),
        }
    }

    fn start(source: Source, upstream: &str) -> Cache {
        match source {
            Source::Berth => Cache::berth(upstream),
            Source::Distribution => Cache::distribution(upstream),
            Source::Reference => unreachable!("the reference is no cache"),
        }
    }
}

/// Write back dirty pages, so that a timed pull does not pay for the last one's writes.
fn sync() {
    let _ = std::process::Command::new("sync").status();
}

/// `sources` in the order of round `round`: rotated by one each round.
fn turn<T: Clone>(sources: &[T], round: usize) -> Vec<T> {
    let mut v = sources.to_vec();
    v.rotate_left(round % sources.len());
    v
}

async fn get_manifest(c: &reqwest::Client, base: &str, repo: &str) -> Bytes {
    let r = c
        .get(format!("{base}/v2/{repo}/manifests/{TAG}"))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET manifest {base}/v2/{repo}:{TAG}");
    r.bytes().await.unwrap()
}

/// One pull of `repo:TAG` as a client makes it: the manifest by tag, then the config and
/// layers it lists, `PULL_CONCURRENCY` at once. Returns seconds.
async fn pull(base: &str, repo: &str, image: &Image) -> f64 {
    let c = common::client();
    let t0 = Instant::now();
    let body = get_manifest(&c, base, repo).await;
    assert_eq!(sha256(&body), image.digest, "manifest through {base}");
    let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let jobs: Vec<(String, usize)> = std::iter::once(&m["config"])
        .chain(m["layers"].as_array().unwrap())
        .map(|d| {
            let size = usize::try_from(d["size"].as_u64().unwrap()).unwrap();
            (format!("/v2/{repo}/blobs/{}", d["digest"].as_str().unwrap()), size)
        })
        .collect();
    let jobs = Arc::new(jobs);
    let n = jobs.len();
    run_raw(base, n, PULL_CONCURRENCY, move |i| {
        (jobs[i].0.clone(), None, 200, jobs[i].1)
    })
    .await;
    t0.elapsed().as_secs_f64()
}

/// Requests in the upstream's access log: all, manifests (any method), and blob GETs and
/// HEADs of `digest` (any blob if `None`).
#[derive(Clone, Copy, Default, Debug)]
struct Seen {
    all: usize,
    manifests: usize,
    blob_gets: usize,
    blob_heads: usize,
}

impl std::ops::Sub for Seen {
    type Output = Seen;
    fn sub(self, o: Seen) -> Seen {
        Seen {
            all: self.all - o.all,
            manifests: self.manifests - o.manifests,
            blob_gets: self.blob_gets - o.blob_gets,
            blob_heads: self.blob_heads - o.blob_heads,
        }
    }
}

fn seen(upstream: &Distribution, digest: Option<&str>) -> Seen {
    let log = upstream.access_log();
    let blob = format!("/v2/{REPO}/blobs/{}", digest.unwrap_or(""));
    let mut s = Seen::default();
    // `127.0.0.1 - - [date] "GET /v2/... HTTP/1.1" 200 ...`
    for request in log.lines().filter_map(|l| l.split('"').nth(1)) {
        s.all += 1;
        let mut words = request.split(' ');
        let (method, uri) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if uri.contains("/manifests/") {
            s.manifests += 1;
        }
        if uri.starts_with(&blob) {
            s.blob_gets += usize::from(method == "GET");
            s.blob_heads += usize::from(method == "HEAD");
        }
    }
    s
}

/// The upstream's log once it has stopped growing (a cache may still be fetching for itself
/// after its clients are served): no new line for half a second, or 20 s.
async fn settled(upstream: &Distribution, digest: Option<&str>) -> Seen {
    let mut last = seen(upstream, digest).all;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = seen(upstream, digest).all;
        if now == last {
            break;
        }
        last = now;
    }
    seen(upstream, digest)
}

/// p50 and p99 of latencies, in milliseconds.
fn percentiles(mut lat: Vec<Duration>) -> (f64, f64) {
    lat.sort();
    let at = |p: f64| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99))
}

/// Manifest GETs by tag: (sequential p50, p99, req/s), then (concurrent p50, p99, req/s), and
/// how many GETs were made in all.
async fn manifest_gets(base: &str, repo: &str, n: usize, secs: u64) -> [f64; 7] {
    let c = common::client();
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        get_manifest(&c, base, repo).await;
        lat.push(t.elapsed());
    }
    let seq_rate = n as f64 / t0.elapsed().as_secs_f64();
    let (seq_p50, seq_p99) = percentiles(lat);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let t0 = Instant::now();
    let clients = (0..MANIFEST_CLIENTS).map(|_| {
        let (base, repo) = (base.to_owned(), repo.to_owned());
        tokio::spawn(async move {
            let c = common::client();
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                get_manifest(&c, &base, &repo).await;
                lat.push(t.elapsed());
            }
            lat
        })
    });
    let mut lat = Vec::new();
    for l in futures_util::future::join_all(clients).await {
        lat.extend(l.unwrap());
    }
    let made = (n + lat.len()) as f64;
    let rate = lat.len() as f64 / t0.elapsed().as_secs_f64();
    let (p50, p99) = percentiles(lat);
    [seq_p50, seq_p99, seq_rate, p50, p99, rate, made]
}

/// A row of the table: a value for each cache and, where there is one, for the reference.
struct Row {
    measure: String,
    unit: &'static str,
    berth: f64,
    distribution: f64,
    /// The reference's name and value (direct pull, local pull).
    reference: Option<(&'static str, f64)>,
    lower_better: bool,
    target: &'static str,
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| measure | unit | berth cache | distribution cache | reference | berth / reference | \
         distribution / reference | berth against distribution | target |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let fmt = |v: f64| {
        if v.fract() == 0.0 || v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.3}")
        }
    };
    for r in rows {
        let (reference, vs_b, vs_d) = r.reference.map_or_else(
            || ("-".to_owned(), "-".to_owned(), "-".to_owned()),
            |(name, v)| {
                (
                    format!("{name} {}", fmt(v)),
                    format!("{:.2}x", r.berth / v),
                    format!("{:.2}x", r.distribution / v),
                )
            },
        );
        let against = if r.berth == 0.0 || r.distribution == 0.0 {
            "-".to_owned()
        } else if r.lower_better {
            format!("{:.2}x less", r.distribution / r.berth)
        } else {
            format!("{:.2}x", r.berth / r.distribution)
        };
        println!(
            "| {} | {} | {} | {} | {reference} | {vs_b} | {vs_d} | {against} | {} |",
            r.measure,
            r.unit,
            fmt(r.berth),
            fmt(r.distribution),
            r.target
        );
    }
}

/// Per source, the figures of every round.
#[derive(Default)]
struct Samples {
    by: Vec<(Source, &'static str, f64)>,
}

impl Samples {
    fn add(&mut self, source: Source, what: &'static str, v: f64) {
        self.by.push((source, what, v));
    }

    fn median(&self, source: Source, what: &str) -> f64 {
        let v: Vec<f64> = self
            .by
            .iter()
            .filter(|(s, w, _)| *s == source && *w == what)
            .map(|(_, _, v)| *v)
            .collect();
        assert!(!v.is_empty(), "no samples of {what} for {source:?}");
        median(v)
    }

    fn all(&self, source: Source, what: &str) -> Vec<f64> {
        self.by
            .iter()
            .filter(|(s, w, _)| *s == source && *w == what)
            .map(|(_, _, v)| *v)
            .collect()
    }
}

#[allow(clippy::too_many_lines)]
#[tokio::main]
async fn main() {
    let pull_rounds = env_num("PROXY_ROUNDS", 5);
    let other_rounds = env_num("PROXY_ROUNDS", 3);
    let (layers, layer_mib) = (env_num("PROXY_LAYERS", 4), env_num("PROXY_LAYER_MIB", 64));
    let (gets, secs) = (env_num("PROXY_GETS", 2000), env_num("PROXY_SECS", 3) as u64);
    let version = std::process::Command::new("docker-registry")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!("proxy benchmark: {}", common::machine());
    println!(
        "pull-through caches: berth (tag_ttl 5m, defaults otherwise) and {version} with proxy.remoteurl, \
         both of one upstream: {version}, plain, access log on"
    );
    let image = Image::new(layers, layer_mib * MIB);
    let mib = image.bytes() as f64 / MIB as f64;
    println!(
        "image: {layers} layers x {layer_mib} MiB incompressible + config = {mib:.1} MiB; pulls fetch \
         {PULL_CONCURRENCY} blobs at once; {pull_rounds} rounds of pulls, {other_rounds} of the rest; \
         {gets} sequential manifest GETs and {MANIFEST_CLIENTS} clients for {secs} s; {COLD_CLIENTS} \
         concurrent cold pulls of one {layer_mib} MiB layer"
    );
    let upstream = Distribution::start("", true);
    image.push(&upstream.base).await;
    let caches = [Source::Berth, Source::Distribution];

    // 1. Cold pulls, beside the direct pull.
    eprintln!("-- cold pulls");
    let mut s = Samples::default();
    let mut last: Vec<(Source, Cache)> = Vec::new();
    for round in 0..pull_rounds {
        for source in turn(&[Source::Reference, Source::Berth, Source::Distribution], round) {
            let cache = (source != Source::Reference).then(|| Cache::start(source, &upstream.base));
            let (base, repo) = cache
                .as_ref()
                .map_or((upstream.base.as_str(), REPO), |c| (c.base.as_str(), c.repo.as_str()));
            sync();
            let cache_cpu = || cache.as_ref().map_or(0.0, |c| cpu_seconds(c.pid));
            let (cpu_before, upstream_before) = (cache_cpu(), cpu_seconds(upstream.pid()));
            let secs = pull(base, repo, &image).await;
            s.add(source, "secs", secs);
            s.add(source, "cpu", cache_cpu() - cpu_before);
            s.add(source, "upstream cpu", cpu_seconds(upstream.pid()) - upstream_before);
            eprintln!(
                "   round {round}: {source:?} {secs:.3} s ({:.0} MB/s)",
                image.bytes() as f64 / secs / 1e6
            );
            if let Some(cache) = cache {
                last.retain(|(s, _)| *s != source);
                last.push((source, cache));
            }
        }
    }
    let direct = s.median(Source::Reference, "secs");
    let mut rows = vec![
        Row {
            measure: format!("cold pull, {mib:.0} MiB image, median of {pull_rounds}"),
            unit: "s",
            berth: s.median(Source::Berth, "secs"),
            distribution: s.median(Source::Distribution, "secs"),
            reference: Some(("direct", direct)),
            lower_better: true,
            target: "berth ≤ 1.1x direct",
        },
        Row {
            measure: "  cache CPU during it".into(),
            unit: "s",
            berth: s.median(Source::Berth, "cpu"),
            distribution: s.median(Source::Distribution, "cpu"),
            reference: None,
            lower_better: true,
            target: "",
        },
        Row {
            measure: "  upstream CPU during it".into(),
            unit: "s",
            berth: s.median(Source::Berth, "upstream cpu"),
            distribution: s.median(Source::Distribution, "upstream cpu"),
            reference: Some(("direct", s.median(Source::Reference, "upstream cpu"))),
            lower_better: true,
            target: "",
        },
    ];
    let cold_rounds = [Source::Berth, Source::Distribution].map(|k| s.all(k, "secs"));

    // 2. Warm pulls (the last cold round's caches), beside a local pull from a Berth.
    eprintln!("-- warm pulls");
    let local = Server::start(&[]);
    image.push(&local.base).await;
    let warm: Vec<(Source, String, String, u32)> = last
        .iter()
        .map(|(k, c)| (*k, c.base.clone(), c.repo.clone(), c.pid))
        .chain(std::iter::once((
            Source::Reference,
            local.base.clone(),
            REPO.to_owned(),
            local.pid(),
        )))
        .collect();
    // One untimed pull each, then wait for Distribution's background fetches to land.
    for (_, base, repo, _) in &warm {
        pull(base, repo, &image).await;
    }
    settled(&upstream, None).await;
    for (_, base, repo, _) in &warm {
        pull(base, repo, &image).await;
    }
    let mut upstream_during = [Seen::default(); 3];
    for round in 0..pull_rounds {
        for (k, base, repo, pid) in turn(&warm, round) {
            sync();
            let me = std::process::id();
            let (before, cpu_before, client_before) = (seen(&upstream, None), cpu_seconds(pid), cpu_seconds(me));
            let mut secs = 0.0;
            for _ in 0..WARM_PULLS {
                secs += pull(&base, &repo, &image).await / WARM_PULLS as f64;
            }
            let after = seen(&upstream, None) - before;
            let i = [Source::Berth, Source::Distribution, Source::Reference]
                .iter()
                .position(|s| *s == k)
                .unwrap();
            upstream_during[i].all += after.all;
            upstream_during[i].blob_gets += after.blob_gets;
            s.add(k, "warm", secs);
            s.add(k, "warm cpu", (cpu_seconds(pid) - cpu_before) / WARM_PULLS as f64);
            s.add(
                k,
                "warm client cpu",
                (cpu_seconds(me) - client_before) / WARM_PULLS as f64,
            );
            eprintln!(
                "   round {round}: {k:?} {secs:.3} s ({:.0} MB/s)",
                image.bytes() as f64 / secs / 1e6
            );
        }
    }
    rows.push(Row {
        measure: format!("warm pull, median of {pull_rounds} (each the mean of {WARM_PULLS} pulls)"),
        unit: "s",
        berth: s.median(Source::Berth, "warm"),
        distribution: s.median(Source::Distribution, "warm"),
        reference: Some(("berth local", s.median(Source::Reference, "warm"))),
        lower_better: true,
        target: "berth ≈ local; ≥ 2x faster than distribution",
    });
    rows.push(Row {
        measure: "  cache CPU per warm pull".into(),
        unit: "s",
        berth: s.median(Source::Berth, "warm cpu"),
        distribution: s.median(Source::Distribution, "warm cpu"),
        reference: Some(("berth local", s.median(Source::Reference, "warm cpu"))),
        lower_better: true,
        target: "",
    });
    rows.push(Row {
        measure: "  this client's CPU per warm pull".into(),
        unit: "s",
        berth: s.median(Source::Berth, "warm client cpu"),
        distribution: s.median(Source::Distribution, "warm client cpu"),
        reference: Some(("berth local", s.median(Source::Reference, "warm client cpu"))),
        lower_better: true,
        target: "",
    });
    rows.push(Row {
        measure: "  upstream requests per warm pull".into(),
        unit: "requests",
        berth: upstream_during[0].all as f64 / (pull_rounds * WARM_PULLS) as f64,
        distribution: upstream_during[1].all as f64 / (pull_rounds * WARM_PULLS) as f64,
        reference: None,
        lower_better: true,
        target: "",
    });
    println!(
        "\nupstream blob GETs during the {} warm pulls: berth {}, distribution {}",
        pull_rounds * WARM_PULLS,
        upstream_during[0].blob_gets,
        upstream_during[1].blob_gets
    );

    // 3. Manifest GETs by tag on a cache hit.
    eprintln!("-- manifest GETs");
    // Per cache: upstream requests per GET, and manifest requests among them.
    let mut requests_per_get = [(0.0, 0.0); 2];
    for round in 0..other_rounds {
        for k in turn(&caches, round) {
            let cache = &last.iter().find(|(s, _)| *s == k).unwrap().1;
            let before = seen(&upstream, None);
            let [seq_p50, seq_p99, seq_rate, p50, p99, rate, made] =
                manifest_gets(&cache.base, &cache.repo, gets, secs).await;
            let caused = seen(&upstream, None) - before;
            let i = usize::from(k == Source::Distribution);
            requests_per_get[i].0 += caused.all as f64 / made / other_rounds as f64;
            requests_per_get[i].1 += caused.manifests as f64 / made / other_rounds as f64;
            for (what, v) in [
                ("seq p50", seq_p50),
                ("seq p99", seq_p99),
                ("seq rate", seq_rate),
                ("p50", p50),
                ("p99", p99),
                ("rate", rate),
            ] {
                s.add(k, what, v);
            }
            eprintln!("   round {round}: {k:?} sequential {seq_rate:.0}/s, {MANIFEST_CLIENTS} clients {rate:.0}/s");
        }
    }
    for (what, measure, unit, lower_better, target) in [
        (
            "seq rate",
            format!("manifest GET by tag, hit, {gets} sequential"),
            "req/s",
            false,
            "berth ≥ 10x",
        ),
        ("seq p50", "  p50".to_owned(), "ms", true, ""),
        ("seq p99", "  p99".to_owned(), "ms", true, ""),
        (
            "rate",
            format!("manifest GET by tag, hit, {MANIFEST_CLIENTS} clients for {secs} s"),
            "req/s",
            false,
            "berth ≥ 10x",
        ),
        ("p50", "  p50".to_owned(), "ms", true, ""),
        ("p99", "  p99".to_owned(), "ms", true, ""),
    ] {
        rows.push(Row {
            measure: format!("{measure}{}", if unit == "req/s" { ", median of rounds" } else { "" }),
            unit,
            berth: s.median(Source::Berth, what),
            distribution: s.median(Source::Distribution, what),
            reference: None,
            lower_better,
            target,
        });
    }
    rows.push(Row {
        measure: "  upstream requests per manifest GET".into(),
        unit: "requests",
        berth: requests_per_get[0].0,
        distribution: requests_per_get[1].0,
        reference: None,
        lower_better: true,
        target: "",
    });
    rows.push(Row {
        measure: "  of which manifest requests".into(),
        unit: "requests",
        berth: requests_per_get[0].1,
        distribution: requests_per_get[1].1,
        reference: None,
        lower_better: true,
        target: "",
    });
    drop(last);

    // 4. 16 concurrent cold pulls of one layer.
    eprintln!("-- {COLD_CLIENTS} concurrent cold pulls of one layer");
    let (layer, layer_bytes) = (&image.blobs[1].0, image.blobs[1].1.len());
    for round in 0..other_rounds {
        for k in turn(&caches, round) {
            let cache = Cache::start(k, &upstream.base);
            get_manifest(&common::client(), &cache.base, &cache.repo).await;
            let before = settled(&upstream, Some(layer)).await;
            sync();
            let path = format!("/v2/{}/blobs/{layer}", cache.repo);
            let t0 = Instant::now();
            run_raw(&cache.base, COLD_CLIENTS, COLD_CLIENTS, move |_| {
                (path.clone(), None, 200, layer_bytes)
            })
            .await;
            let secs = t0.elapsed().as_secs_f64();
            let after = settled(&upstream, Some(layer)).await - before;
            s.add(k, "flight gets", after.blob_gets as f64);
            s.add(k, "flight heads", after.blob_heads as f64);
            s.add(k, "flight secs", secs);
            eprintln!(
                "   round {round}: {k:?} {secs:.3} s, upstream saw {} GETs and {} HEADs of the layer",
                after.blob_gets, after.blob_heads
            );
        }
    }
    rows.push(Row {
        measure: format!("{COLD_CLIENTS} concurrent cold pulls of one {layer_mib} MiB layer: upstream blob GETs"),
        unit: "GETs",
        berth: s.median(Source::Berth, "flight gets"),
        distribution: s.median(Source::Distribution, "flight gets"),
        reference: None,
        lower_better: true,
        target: "berth 1",
    });
    rows.push(Row {
        measure: "  upstream blob HEADs".into(),
        unit: "HEADs",
        berth: s.median(Source::Berth, "flight heads"),
        distribution: s.median(Source::Distribution, "flight heads"),
        reference: None,
        lower_better: true,
        target: "",
    });
    rows.push(Row {
        measure: format!("  time until all {COLD_CLIENTS} have the layer"),
        unit: "s",
        berth: s.median(Source::Berth, "flight secs"),
        distribution: s.median(Source::Distribution, "flight secs"),
        reference: None,
        lower_better: true,
        target: "",
    });
    print_table(&rows);
    let round_list = |v: &[f64]| v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ");
    println!(
        "\ncold pull rounds (s): direct {}; berth {}; distribution {}",
        round_list(&s.all(Source::Reference, "secs")),
        round_list(&cold_rounds[0]),
        round_list(&cold_rounds[1])
    );
    println!(
        "upstream blob GETs for {COLD_CLIENTS} cold pulls, each round: berth {:?}, distribution {:?}",
        s.all(Source::Berth, "flight gets"),
        s.all(Source::Distribution, "flight gets")
    );
}
