//! The hot path's short blocking calls (manifest and blob lookups) run on a fixed set of
//! threads, and a write waiting for its group commit holds no thread, so bursts of concurrent
//! GETs or PUTs do not grow tokio's blocking pool by a thread per request: each such thread
//! kept its stack and malloc cache, and under the load benchmark's 32 connections the pool
//! reached 75-149 threads and set the peak RSS.
//!
//! Each burst is a fixed number of requests, not a time: how fast they go is the memory
//! benchmark's business (`cargo bench --bench memory`, which also measures malloc's arenas and
//! the page faults per MiB pushed). The bound is generous: the fixed design measured no thread
//! more than before a burst. With the lookups put back on tokio's blocking pool the reads
//! burst measured 14-51 threads more in ten runs, and with the commit waited for on it the
//! commits burst 126 more (an earlier semaphore of two calls per core over the pool, 13-22).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::harness::{Berth, client, push_image, random_bytes, sha256};

/// Concurrent clients in a burst.
const CLIENTS: usize = 128;
/// Threads a burst may add without failing: none are expected, a thread per request adds
/// dozens.
const MARGIN: usize = 8;

fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The most threads `pid` had while `requests` ran (sampled every 5 ms), and the threads alive
/// right after it (tokio keeps an idle blocking-pool thread for 10 s, so one that a burst
/// started is still counted there, whatever the sampling missed).
async fn peak_threads<F: std::future::Future>(pid: u32, requests: F) -> (usize, F::Output) {
    let (stop, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(threads(pid), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let output = requests.await;
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed).max(threads(pid));
    (peak, output)
}

/// Run `CLIENTS` tasks, each sending `request(client, i, n)` for n in 0..`each`, back to back,
/// asserting each answer's status.
async fn burst<F>(each: usize, status: u16, request: F)
where
    F: Fn(&reqwest::Client, usize, usize) -> reqwest::RequestBuilder + Clone,
{
    let c = client();
    let tasks = (0..CLIENTS).map(|i| {
        let (c, request) = (c.clone(), request.clone());
        async move {
            for n in 0..each {
                let resp = request(&c, i, n).send().await.unwrap();
                assert_eq!(resp.status(), status);
            }
        }
    });
    futures_util::future::join_all(tasks).await;
}

#[tokio::test]
async fn a_burst_of_reads_does_not_grow_a_thread_per_request() {
    let berth = Berth::start();
    let layer = random_bytes(1000, 9);
    push_image(&berth, "mem/threads", "v1", &[&layer]).await;
    let layer_digest = sha256(&layer);
    let before = threads(berth.pid());
    let manifest = berth.url("/v2/mem/threads/manifests/v1");
    let blob = berth.url(&format!("/v2/mem/threads/blobs/{layer_digest}"));
    let (peak, ()) = peak_threads(
        berth.pid(),
        burst(32, 200, move |c, i, n| {
            if (i + n) % 2 == 0 {
                c.get(&manifest)
                    .header("accept", "application/vnd.oci.image.manifest.v1+json")
            } else {
                c.head(&blob)
            }
        }),
    )
    .await;
    eprintln!("threads: {before} before, {peak} at most under {CLIENTS} concurrent readers");
    // The hot path's blocking calls run on a fixed set of threads (`hot_pool`): measured no
    // thread more than before. With tokio's blocking pool under a semaphore of two calls per
    // core, 13-22 more on 2 cores; with no limit at all, 28-60 more.
    assert!(
        peak <= before + MARGIN,
        "{peak} threads under {CLIENTS} concurrent readers, {before} before"
    );
}

/// Each tag PUT waits for its group commit. That wait used to park a blocking-pool thread;
/// awaiting the commit instead (`meta::WriteOp::commit`) holds none.
#[tokio::test]
async fn a_burst_of_commits_does_not_park_a_thread_per_request() {
    let berth = Berth::start();
    let layer = random_bytes(1000, 10);
    let (_, manifest) = push_image(&berth, "mem/commits", "v0", &[&layer]).await;
    let before = threads(berth.pid());
    let base = berth.url("/v2/mem/commits/manifests");
    let (peak, ()) = peak_threads(
        berth.pid(),
        burst(4, 201, move |c, i, n| {
            c.put(format!("{base}/t{i}-{n}"))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(manifest.clone())
        }),
    )
    .await;
    eprintln!("threads: {before} before, {peak} at most under {CLIENTS} concurrent tag PUTs");
    assert!(
        peak <= before + MARGIN,
        "{peak} threads under {CLIENTS} concurrent tag PUTs, {before} before"
    );
}
