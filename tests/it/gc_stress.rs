//! Garbage collection under load: several clients push images with shared layers, pull them,
//! move tags and delete manifests for a fixed time while collections run back to back with a
//! two-second grace period. Afterwards every tagged image pulls completely with the right
//! digests, no client saw a 5xx or a corrupt body, and once the grace period has passed the
//! blob files on disk are exactly the blobs that the remaining manifests reference.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Berth, client, push_blob, random_bytes, run_gc_at, sha256};

const WORKERS: u64 = 4;
const RUN_FOR: Duration = Duration::from_secs(8);
const GRACE: Duration = Duration::from_secs(2);
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A tiny deterministic generator, one per worker.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What a worker expects a tag to hold.
#[derive(Clone)]
struct Image {
    digest: String,
    blobs: Vec<String>,
}

struct Worker {
    berth_base: String,
    id: u64,
    rng: Rng,
    tags: HashMap<String, Image>,
    serial: u64,
    failures: Arc<AtomicU64>,
}

impl Worker {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.berth_base)
    }

    fn repo(&self) -> String {
        format!("stress/r{}", self.id % 2)
    }

    fn fail(&self, what: &str) {
        eprintln!("worker {}: {what}", self.id);
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    async fn push_blob(&self, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let url = self.url(&format!("/v2/{}/blobs/uploads/?digest={digest}", self.repo()));
        let resp = client().post(url).body(bytes.to_vec()).send().await.unwrap();
        if resp.status() != 201 {
            self.fail(&format!("blob push answered {}", resp.status()));
        }
        digest
    }

    /// Push an image (one of four shared layers plus a unique one) under one of the worker's
    /// three tags, moving the tag if it existed.
    async fn push(&mut self) {
        self.serial += 1;
        let shared = random_bytes(64 * 1024, self.rng.below(4));
        let unique = random_bytes(2048, 1000 + self.id * 1_000_000 + self.serial);
        let config = format!(r#"{{"worker":{},"serial":{}}}"#, self.id, self.serial);
        let mut blobs = vec![self.push_blob(config.as_bytes()).await];
        blobs.push(self.push_blob(&shared).await);
        blobs.push(self.push_blob(&unique).await);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[0], "size": config.len()},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blobs[1], "size": shared.len()},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blobs[2], "size": unique.len()},
            ],
        }))
        .unwrap();
        let tag = format!("w{}-{}", self.id, self.rng.below(3));
        let url = self.url(&format!("/v2/{}/manifests/{tag}", self.repo()));
        let resp = client()
            .put(url)
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await
            .unwrap();
        if resp.status() == 201 {
            self.tags.insert(
                tag,
                Image {
                    digest: sha256(&manifest),
                    blobs,
                },
            );
        } else {
            self.fail(&format!(
                "manifest push answered {}: {}",
                resp.status(),
                resp.text().await.unwrap()
            ));
        }
    }

    /// Pull one of the worker's tags completely and check every digest.
    async fn pull(&mut self) {
        let Some((tag, image)) = self.pick() else { return };
        if let Err(e) = pull_image(&self.berth_base, &self.repo(), &tag, &image).await {
            self.fail(&e);
        }
    }

    async fn delete(&mut self) {
        let Some((tag, image)) = self.pick() else { return };
        let url = self.url(&format!("/v2/{}/manifests/{}", self.repo(), image.digest));
        let resp = client().delete(url).send().await.unwrap();
        // Another of this worker's tags may have pointed at the same manifest: both go.
        self.tags.retain(|_, i| i.digest != image.digest);
        if resp.status() != 202 {
            self.fail(&format!("delete of {tag} answered {}", resp.status()));
        }
    }

    fn pick(&mut self) -> Option<(String, Image)> {
        let mut tags: Vec<_> = self.tags.iter().map(|(t, i)| (t.clone(), i.clone())).collect();
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        let n = tags.len() as u64;
        (n > 0).then(|| tags.swap_remove(usize::try_from(self.rng.below(n)).unwrap()))
    }
}

async fn pull_image(base: &str, repo: &str, tag: &str, image: &Image) -> Result<(), String> {
    let resp = client()
        .get(format!("{base}/v2/{repo}/manifests/{tag}"))
        .send()
        .await
        .unwrap();
    if resp.status() != 200 {
        return Err(format!("pull of {repo}:{tag} answered {}", resp.status()));
    }
    let body = resp.bytes().await.unwrap();
    if sha256(&body) != image.digest {
        return Err(format!(
            "{repo}:{tag} has digest {} instead of {}",
            sha256(&body),
            image.digest
        ));
    }
    for blob in &image.blobs {
        let resp = client()
            .get(format!("{base}/v2/{repo}/blobs/{blob}"))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("blob {blob} body cut off: {e}"))?;
        if status != 200 || sha256(&bytes) != *blob {
            return Err(format!(
                "blob {blob} of {repo}:{tag}: status {status}, digest {}",
                sha256(&bytes)
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_loop_under_concurrent_pushes_pulls_tag_moves_and_deletes() {
    let berth = Berth::builder()
        .env("BERTH_GC_GRACE_PERIOD", &format!("{}ms", GRACE.as_millis()))
        .start();
    let failures = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + RUN_FOR;
    let mut workers = Vec::new();
    for id in 0..WORKERS {
        let mut w = Worker {
            berth_base: berth.base.clone(),
            id,
            rng: Rng(0x9e37_79b9_7f4a_7c15 ^ (id + 1)),
            tags: HashMap::new(),
            serial: 0,
            failures: Arc::clone(&failures),
        };
        workers.push(tokio::spawn(async move {
            let mut ops = 0u32;
            while Instant::now() < deadline && ops < 2000 {
                match w.rng.below(10) {
                    0..=3 => w.push().await,
                    4..=7 => w.pull().await,
                    _ => w.delete().await,
                }
                ops += 1;
            }
            w
        }));
    }
    let gc_loop = {
        let (base, stop) = (berth.base.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut runs, mut deleted) = (0, 0);
            while !stop.load(Ordering::Relaxed) && runs < 500 {
                let report = run_gc_at(&base).await;
                deleted += report["manifests_deleted"].as_u64().unwrap() + report["blobs_deleted"].as_u64().unwrap();
                runs += 1;
            }
            (runs, deleted)
        })
    };
    let mut finished = Vec::new();
    for w in workers {
        finished.push(w.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let (runs, deleted) = gc_loop.await.unwrap();
    assert!(runs >= 2, "garbage collection ran only {runs} times during the load");
    assert!(
        deleted > 0,
        "garbage collection deleted nothing during the load: the test proved nothing"
    );
    eprintln!("{runs} collections during the load deleted {deleted} manifests and blobs");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "clients saw failures (details above)"
    );
    let log = berth.log();
    assert!(log.contains(" status=200"), "the access log is readable");
    assert!(!log.contains(" status=5"), "the server answered 5xx");

    // Everything still tagged pulls completely.
    let mut expected_blobs = BTreeSet::new();
    for w in &finished {
        for (tag, image) in &w.tags {
            pull_image(&berth.base, &w.repo(), tag, image).await.unwrap();
            expected_blobs.extend(image.blobs.iter().cloned());
        }
    }
    // Garbage younger than the grace period, which the load's last moments may or may not
    // have left: a blob that nothing references, pushed just now.
    push_blob(&berth, "stress/r0", &random_bytes(4096, 7)).await;
    // Once the grace period has passed (the server's clock moved past it, and past the
    // millisecond of the last push), collection leaves exactly what is reachable.
    berth.advance_clock(GRACE + Duration::from_millis(1)).await;
    run_gc_at(&berth.base).await;
    let report = run_gc_at(&berth.base).await;
    assert_eq!(
        report["blobs_deleted"], 0,
        "the first pass after the load left nothing: {report}"
    );
    assert_eq!(
        berth.stored_blobs().await,
        expected_blobs,
        "blob files on disk vs blobs of tagged manifests"
    );
    for w in &finished {
        for (tag, image) in &w.tags {
            pull_image(&berth.base, &w.repo(), tag, image).await.unwrap();
        }
    }
}
