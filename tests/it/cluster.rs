//! Several Berth nodes behind a load balancer: three `berth serve` processes on fixed ports of
//! 127.0.0.1, sharing one PostgreSQL database (`postgres`) and one Garage bucket prefix
//! (`garage`), behind Debian's nginx as a round-robin balancer. The balancer streams bodies
//! both ways (no buffering, HTTP/1.1 upstream, no size limit), as a registry's must.
//!
//! With `BERTH_TEST_CLUSTER=3` in the environment, every server the harness starts is such a
//! cluster (`harness::Builder::start`), so whole suites run through the balancer; the tests
//! below drive a cluster by hand: node failures, rolling restarts and load.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Berth, Builder, client, push_image};
use crate::nginx::Nginx;

/// Nodes sharing a database and a bucket prefix, behind a balancer.
pub struct Cluster {
    pub nodes: Vec<Berth>,
    pub lb: Nginx,
    /// The shared database's URL.
    pub database: String,
    /// The shared bucket prefix.
    pub prefix: String,
}

impl Cluster {
    /// `n` fresh nodes, each started by `node` (a harness builder, which this completes with
    /// the shared database, bucket prefix and a fixed address).
    pub fn start(n: usize, node: impl Fn(usize) -> Builder) -> Cluster {
        let database = crate::postgres::Postgres::shared().fresh_url();
        let prefix = crate::garage::fresh_prefix();
        let garage = crate::garage::Garage::shared();
        let addrs: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", crate::nginx::free_port()))
            .collect();
        let nodes: Vec<Berth> = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                node(i)
                    .postgres(&database)
                    .s3_prefix(garage, &prefix)
                    .addr(addr)
                    .start()
            })
            .collect();
        let lb = Nginx::start(&addrs);
        Cluster {
            nodes,
            lb,
            database,
            prefix,
        }
    }

    /// Three default nodes.
    pub fn three() -> Cluster {
        Cluster::start(3, |_| Builder::node())
    }

    /// The balancer, as a server handle for the push helpers.
    pub fn front(&self) -> Berth {
        let mut front = Berth::at(&self.lb.base);
        front.share_storage(&self.nodes[0]);
        front
    }
}

/// Whether every server of this test run is a cluster (`BERTH_TEST_CLUSTER=N`), and how many
/// nodes.
pub fn cluster_mode() -> Option<usize> {
    std::env::var("BERTH_TEST_CLUSTER")
        .ok()?
        .parse()
        .ok()
        .filter(|&n| n > 0)
}

/// GET `path` from `base`, retrying (as a client behind a balancer does) on connection errors
/// and 5xx answers for up to 60 s; answers the final status and body.
async fn get_retrying(base: &str, path: &str) -> (u16, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let result = client().get(format!("{base}{path}")).send().await;
        if let Ok(resp) = result {
            let status = resp.status().as_u16();
            if status < 500 || Instant::now() > deadline {
                return (status, resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default());
            }
        }
        assert!(Instant::now() < deadline, "GET {path} failed for 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Push a blob as docker does: open a session (POST), then send the bytes and the digest
/// (PUT), two requests the balancer may send to two nodes.
async fn push_blob_session(base: &str, repo: &str, bytes: &[u8]) -> Result<String, String> {
    let digest = crate::harness::sha256(bytes);
    let resp = client()
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != 202 {
        return Err(format!("POST upload: {}", resp.status()));
    }
    let location = crate::harness::header(&resp, "location");
    let location = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let resp = client()
        .put(format!("{location}{sep}digest={digest}"))
        .body(bytes.to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != 201 {
        return Err(format!("PUT upload: {}", resp.status()));
    }
    Ok(digest)
}

/// Push an image (config, layers, manifest) through `base`; answers the manifest.
async fn push_image_sessions(base: &str, repo: &str, tag: &str, layers: &[&[u8]]) -> Result<Vec<u8>, String> {
    let config =
        format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"tag":"{tag}"}}"#);
    let config_digest = push_blob_session(base, repo, config.as_bytes()).await?;
    let mut descs = Vec::new();
    for layer in layers {
        let d = push_blob_session(base, repo, layer).await?;
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": layer.len()}));
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::clients::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let resp = client()
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", crate::clients::OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.status() != 201 {
        return Err(format!("PUT manifest: {}", resp.status()));
    }
    Ok(manifest)
}

/// Push an image through `front` with up to `attempts` tries (a push that fails is simply
/// pushed again, as docker and skopeo do); answers the manifest and how many tries it took.
async fn push_retrying(front: &Berth, repo: &str, tag: &str, layers: &[&[u8]], attempts: u32) -> (Vec<u8>, u32) {
    let mut errors = Vec::new();
    for attempt in 1..=attempts {
        match push_image_sessions(&front.base, repo, tag, layers).await {
            Ok(manifest) => return (manifest, attempt),
            Err(e) => errors.push(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pushing {repo}:{tag} failed {attempts} times: {errors:?}");
}

/// What a load of pushes acknowledged: (repository, tag, manifest bytes, layers).
type Acknowledged = Arc<std::sync::Mutex<Vec<(String, String, Vec<u8>, Vec<Vec<u8>>)>>>;

/// Push images through `front` until `stop`, each retried until it succeeds; counts them in
/// `done`; the failed attempts in `retries`.
async fn push_loop(
    front: Berth,
    worker: u64,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    retries: Arc<AtomicU64>,
    acked: Acknowledged,
) {
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let layer = crate::harness::random_bytes(
            40_000 + usize::from(u8::try_from(i % 7).unwrap()) * 1000,
            worker * 1_000_000 + i,
        );
        let shared = b"a layer every image of the load shares".to_vec();
        let (repo, tag) = (format!("load/w{worker}"), format!("t{i}"));
        let (manifest, attempts) = push_retrying(&front, &repo, &tag, &[&shared, &layer], 20).await;
        retries.fetch_add(u64::from(attempts - 1), Ordering::SeqCst);
        acked.lock().unwrap().push((repo, tag, manifest, vec![shared, layer]));
        done.fetch_add(1, Ordering::SeqCst);
        i += 1;
    }
}

/// Wait until `counter` reaches `n` (the load has made that much progress), for at most 120 s.
async fn wait_count(counter: &AtomicU64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while counter.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "the load stalled at {}",
            counter.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every acknowledged push reads back, manifest and layers, from every node.
async fn all_readable(cluster: &Cluster, acked: &Acknowledged) {
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    for node in &cluster.nodes {
        for (repo, tag, manifest, layers) in &acked {
            let (status, body) = get_retrying(&node.base, &format!("/v2/{repo}/manifests/{tag}")).await;
            assert_eq!(status, 200, "{repo}:{tag} on {}", node.base);
            assert_eq!(&body, manifest, "{repo}:{tag} on {}", node.base);
            for layer in layers {
                let digest = crate::harness::sha256(layer);
                let (status, body) = get_retrying(&node.base, &format!("/v2/{repo}/blobs/{digest}")).await;
                assert_eq!(
                    (status, body.len()),
                    (200, layer.len()),
                    "{repo} {digest} on {}",
                    node.base
                );
                assert!(body == *layer, "{repo} {digest} on {} differs", node.base);
            }
        }
    }
}

/// Pull what the pushes acknowledged, through `front`, until `stop`: each pull retried (as a
/// client behind a balancer does) and checked byte for byte; counts them in `pulled`.
async fn pull_loop(front: Berth, stop: Arc<AtomicBool>, pulled: Arc<AtomicU64>, acked: Acknowledged) {
    let mut i = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let entry = {
            let acked = acked.lock().unwrap();
            (!acked.is_empty()).then(|| acked[i % acked.len()].clone())
        };
        let Some((repo, tag, manifest, layers)) = entry else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (status, body) = get_retrying(&front.base, &format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!((status, &body), (200, &manifest), "pull {repo}:{tag}");
        let layer = &layers[i % layers.len()];
        let digest = crate::harness::sha256(layer);
        let (status, body) = get_retrying(&front.base, &format!("/v2/{repo}/blobs/{digest}")).await;
        assert!(status == 200 && body == *layer, "pull {repo} {digest}: {status}");
        pulled.fetch_add(1, Ordering::SeqCst);
        i += 1;
    }
}

struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    pulled: Arc<AtomicU64>,
    retries: Arc<AtomicU64>,
    acked: Acknowledged,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(cluster: &Cluster, workers: u64) -> Load {
        let (stop, done, retries) = (Arc::default(), Arc::default(), Arc::default());
        let pulled = Arc::default();
        let acked = Acknowledged::default();
        let mut pullers: Vec<_> = (0..2)
            .map(|_| {
                tokio::spawn(pull_loop(
                    cluster.front(),
                    Arc::clone(&stop),
                    Arc::clone(&pulled),
                    Arc::clone(&acked),
                ))
            })
            .collect();
        let mut workers: Vec<_> = (0..workers)
            .map(|w| {
                tokio::spawn(push_loop(
                    cluster.front(),
                    w,
                    Arc::clone(&stop),
                    Arc::clone(&done),
                    Arc::clone(&retries),
                    Arc::clone(&acked),
                ))
            })
            .collect();
        workers.append(&mut pullers);
        Load {
            stop,
            done,
            pulled,
            retries,
            acked,
            workers,
        }
    }

    async fn finish(self) -> (Acknowledged, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            w.await
                .expect("a worker failed: a push or pull did not succeed after its retries");
        }
        (self.acked, self.retries.load(Ordering::SeqCst))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_pushed_through_one_node_is_pulled_through_every_node() {
    let cluster = Cluster::three();
    let layer = crate::harness::random_bytes(100_000, 7);
    let (digest, manifest) = push_image(&cluster.nodes[0], "across/app", "v1", &[&layer]).await;
    for node in &cluster.nodes[1..] {
        let resp = client()
            .get(node.url("/v2/across/app/manifests/v1"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "read-your-writes across nodes");
        assert_eq!(resp.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(resp.bytes().await.unwrap(), manifest);
    }
    // Through the balancer, every request lands on some node; all agree.
    let front = cluster.front();
    for _ in 0..6 {
        let resp = client()
            .get(front.url("/v2/across/app/tags/list"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let tags: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_and_docker_round_trip_through_the_balancer() {
    let cluster = Cluster::three();
    let front = cluster.front();
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let layout = crate::clients::Layout { dir: src.path() };
    let layers = vec![
        crate::harness::random_bytes(6_000_000, 11),
        crate::harness::random_bytes(300_000, 12),
    ];
    let manifest = layout.image("amd64", &layers);
    layout.index(crate::clients::OCI_MANIFEST, &manifest, "v1");
    let target = format!("docker://{}/lb/skopeo:v1", front.host);
    let src_ref = format!("oci:{}:v1", src.path().display());
    let dst_ref = format!("oci:{}:v1", dst.path().display());
    crate::clients::skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &src_ref,
        &target,
    ]);
    crate::clients::skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &target,
        &dst_ref,
    ]);
    crate::clients::same_blobs(src.path(), dst.path(), &crate::clients::digests_of(&manifest));
    let tag = format!("{}/lb/docker:v1", front.host);
    crate::clients::docker_round_trip(&tag, &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_under_load_loses_no_acknowledged_push() {
    // Node 1 holds every upload it starts (a pause point), so that the kill lands on pushes
    // in flight.
    let mut cluster = Cluster::start(3, |i| {
        let node = Builder::node();
        if i == 1 {
            node.env("BERTH_TEST_PAUSE_AT", "upload.after_create_file")
        } else {
            node
        }
    });
    let load = Load::start(&cluster, 4);
    cluster.nodes[1].wait_reached("upload.after_create_file", 2).await;
    cluster.nodes[1].kill();
    cluster.nodes[1].unset_env("BERTH_TEST_PAUSE_AT");
    let at_kill = load.done.load(Ordering::SeqCst);
    // The load goes on through the two other nodes, then the third comes back.
    wait_count(&load.done, at_kill + 10).await;
    cluster.nodes[1].restart();
    let at_restart = load.done.load(Ordering::SeqCst);
    wait_count(&load.done, at_restart + 10).await;
    let pulled = Arc::clone(&load.pulled);
    let (acked, retries) = load.finish().await;
    eprintln!(
        "{} pushes acknowledged, {} pulls, {retries} retried attempts",
        acked.lock().unwrap().len(),
        pulled.load(Ordering::SeqCst)
    );
    assert!(pulled.load(Ordering::SeqCst) > 0, "pulls ran alongside the pushes");
    // The requests the kill cut off were passed to another node by the balancer (nothing of
    // them had reached the node's answer) or retried by their client; either way every worker
    // finished its push.
    all_readable(&cluster, &acked).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_fails_no_push_after_retry() {
    let mut cluster = Cluster::three();
    let load = Load::start(&cluster, 3);
    wait_count(&load.done, 5).await;
    for i in 0..cluster.nodes.len() {
        // A graceful stop (SIGTERM: drain, then exit), and a start on the same address.
        cluster.nodes[i].stop();
        let at_stop = load.done.load(Ordering::SeqCst);
        wait_count(&load.done, at_stop + 3).await;
        cluster.nodes[i].restart();
        let at_start = load.done.load(Ordering::SeqCst);
        wait_count(&load.done, at_start + 3).await;
    }
    let (acked, retries) = load.finish().await;
    eprintln!(
        "{} pushes acknowledged across a rolling restart, {retries} retried attempts",
        acked.lock().unwrap().len()
    );
    all_readable(&cluster, &acked).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn online_gc_across_nodes_under_load_collects_garbage_and_loses_nothing() {
    let cluster = Cluster::three();
    let front = cluster.front();
    // Garbage, pushed through every node: layers no manifest references, and an untagged
    // image whose manifest and layers go with it.
    let mut garbage = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let junk = crate::harness::random_bytes(30_000, 900 + i as u64);
        garbage.push(crate::harness::push_blob(node, "junk/layers", &junk).await);
    }
    let orphan_layer = crate::harness::random_bytes(50_000, 999);
    let (orphan, _) = push_image(&cluster.nodes[1], "junk/untagged", "keep-for-now", &[&orphan_layer]).await;
    let resp = client()
        .delete(cluster.nodes[2].url("/v2/junk/untagged/manifests/keep-for-now"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "untag");
    garbage.push(crate::harness::sha256(&orphan_layer));
    let stored = front.stored_blobs().await;
    assert!(garbage.iter().all(|d| stored.contains(d)), "the garbage is stored");
    // Past the grace period on every node, then pushes and pulls while GC runs.
    for node in &cluster.nodes {
        node.advance_clock(Duration::from_secs(2 * 3600)).await;
    }
    let load = Load::start(&cluster, 3);
    wait_count(&load.done, 5).await;
    let report = crate::harness::run_gc_at(&front.base).await;
    let after_gc = load.done.load(Ordering::SeqCst);
    wait_count(&load.done, after_gc + 5).await;
    let (acked, _) = load.finish().await;
    all_readable(&cluster, &acked).await;
    let stored = front.stored_blobs().await;
    for d in &garbage {
        assert!(!stored.contains(d), "garbage {d} collected: {report}");
    }
    let resp = client()
        .get(front.url(&format!("/v2/junk/untagged/manifests/{orphan}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "the untagged manifest is collected");
}
