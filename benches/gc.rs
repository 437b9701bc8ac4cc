//! Garbage collection benchmark: a store of `GCBENCH_MANIFESTS` manifests (default 10 000),
//! each with a config and `GCBENCH_LAYERS` unique layers (default 9, so 100 000 blobs), half of
//! them tagged and half garbage. Reports how long one collection takes, and the p50/p99 latency of manifest GETs
//! by tag while it runs against the same load without it.
//!
//! Run: `cargo bench --bench gc` (a release build; about a minute on 2 cores).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::{Server, env_num, push_blob, sha256};

/// Push manifest `i` with `layers` unique small layers; tagged `t<i>` if `tagged`.
async fn push_image(c: &reqwest::Client, base: &str, i: usize, layers: usize, tagged: bool) {
    let mut descs = Vec::new();
    let config = format!(r#"{{"image":{i}}}"#);
    let mut blobs: Vec<Vec<u8>> = vec![config.clone().into_bytes()];
    for l in 0..layers {
        blobs.push(format!("layer {l} of image {i}").into_bytes());
    }
    for b in &blobs {
        let d = push_blob(c, base, "bench", b.clone()).await;
        descs.push(
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": b.len()}),
        );
    }
    let config_desc = descs.remove(0);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_desc["digest"], "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let reference = if tagged { format!("t{i}") } else { sha256(&manifest) };
    let r = c
        .put(format!("{base}/v2/bench/manifests/{reference}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// GET manifests by tag from `readers` tasks until `stop`; returns sorted latencies.
async fn read_load(base: String, tagged: usize, readers: usize, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for r in 0..readers {
        let (base, stop) = (base.clone(), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let c = common::http_client().build().unwrap();
            let mut lat = Vec::new();
            let mut i = r;
            while !stop.load(Ordering::Relaxed) && lat.len() < 200_000 {
                let t = Instant::now();
                let resp = c
                    .get(format!("{base}/v2/bench/manifests/t{}", 2 * (i % tagged)))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                resp.bytes().await.unwrap();
                lat.push(t.elapsed());
                i += readers;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let manifests = env_num("GCBENCH_MANIFESTS", 10_000);
    let layers = env_num("GCBENCH_LAYERS", 9);
    let concurrency = 16;
    // `GC_META_CACHE` sets `storage.meta_cache` (for example 1GiB, redb's own default).
    let cache = std::env::var("GC_META_CACHE").ok();
    let mut env = vec![("BERTH_GC_GRACE_PERIOD", "0s")];
    if let Some(cache) = &cache {
        env.push(("BERTH_STORAGE_META_CACHE", cache.as_str()));
    }
    let server = Server::start(&env);
    let base = server.base.clone();
    println!(
        "gc benchmark: {manifests} manifests x ({layers} layers + config) = {} blobs, half garbage",
        manifests * (layers + 1)
    );
    println!(
        "machine: {} CPUs",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );

    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let c = common::http_client().build().unwrap();
            for i in (w..manifests).step_by(concurrency) {
                push_image(&c, &base, i, layers, i % 2 == 0).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!("populated in {:.1} s", t.elapsed().as_secs_f64());
    let tagged = manifests / 2;

    let idle_stop = Arc::new(AtomicBool::new(false));
    let idle = tokio::spawn(read_load(base.clone(), tagged, 8, Arc::clone(&idle_stop)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    idle_stop.store(true, Ordering::Relaxed);
    let idle = idle.await.unwrap();

    let c = common::http_client().build().unwrap();
    let gc_stop = Arc::new(AtomicBool::new(false));
    let during = tokio::spawn(read_load(base.clone(), tagged, 8, Arc::clone(&gc_stop)));
    let report = common::run_gc(&c, &base).await;
    gc_stop.store(true, Ordering::Relaxed);
    let during = during.await.unwrap();

    println!("gc report: {report}");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| gc duration | {} ms |", report["duration_ms"]);
    println!("| manifests deleted | {} |", report["manifests_deleted"]);
    println!("| blobs deleted | {} |", report["blobs_deleted"]);
    println!(
        "| manifest GET p50 / p99, idle | {:.2} / {:.2} ms ({} requests) |",
        pct(&idle, 0.5),
        pct(&idle, 0.99),
        idle.len()
    );
    println!(
        "| manifest GET p50 / p99, during gc | {:.2} / {:.2} ms ({} requests) |",
        pct(&during, 0.5),
        pct(&during, 0.99),
        during.len()
    );
    println!(
        "| p99 ratio during gc / idle | {:.2} |",
        pct(&during, 0.99) / pct(&idle, 0.99)
    );
    println!(
        "| server peak RSS (population, gc, reads; meta_cache {}) | {:.1} MiB |",
        cache.as_deref().unwrap_or("default"),
        common::peak_rss_mib(server.pid())
    );
}
