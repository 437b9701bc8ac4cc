//! Several Berth nodes behind a load balancer: three `berth serve` processes on fixed ports of
//! 127.0.0.1, sharing one PostgreSQL database (`postgres`) and one Garage bucket prefix
//! (`garage`), behind Debian's nginx as a round-robin balancer. The balancer streams bodies
//! both ways (no buffering, HTTP/1.1 upstream, no size limit), as a registry's must.
//!
//! With `BERTH_TEST_CLUSTER=3` in the environment, every server the harness starts is such a
//! cluster (`harness::Builder::start`), so whole suites run through the balancer; the tests
//! below drive a cluster by hand: node failures, rolling restarts and load.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Berth, Builder, client, push_image};

/// Debian's nginx, configured as a round-robin balancer over `nodes`.
pub struct Nginx {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Nginx {
    pub fn start(nodes: &[String]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let servers = nodes.iter().fold(String::new(), |mut out, n| {
            let _ = writeln!(out, "    server {n} max_fails=1 fail_timeout=2s;");
            out
        });
        let d = dir.path().display();
        // Connection errors (a node down) pass the request to the next node, for any method:
        // nginx retries only when nothing of the request reached the node.
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               upstream berth {{\n{servers}  }}\n\
               server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 0;\n\
                 proxy_http_version 1.1;\n    proxy_request_buffering off;\n    proxy_buffering off;\n\
                 proxy_set_header Host $http_host;\n    proxy_set_header Connection \"\";\n\
                 proxy_next_upstream error non_idempotent;\n    proxy_read_timeout 300s;\n\
                 location / {{ proxy_pass http://berth; }}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        // The wrapper stops nginx when told to, or when this test process is gone.
        let script = format!(
            "\"$0\" -e \"$2/error.log\" -c \"$1\" & g=$!\n\
             trap 'kill -QUIT $g 2>/dev/null; wait $g; exit 0' TERM INT\n\
             while [ -e /proc/{parent} ] && kill -0 $g 2>/dev/null; do sleep 0.5; done\n\
             kill -QUIT $g 2>/dev/null",
            parent = std::process::id()
        );
        let child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg(nginx_binary())
            .arg(&path)
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let nginx = Nginx {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        nginx.wait_listening(port);
        nginx
    }

    fn wait_listening(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not start; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

/// `nginx`, or a panic that says how to get it.
fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("nginx is not installed: the cluster tests need Debian's nginx (.ci/run installs it)")
        })
}

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
        let addrs: Vec<String> = (0..n).map(|_| format!("127.0.0.1:{}", free_port())).collect();
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

struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    retries: Arc<AtomicU64>,
    acked: Acknowledged,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(cluster: &Cluster, workers: u64) -> Load {
        let (stop, done, retries) = (Arc::default(), Arc::default(), Arc::default());
        let acked = Acknowledged::default();
        let workers = (0..workers)
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
        Load {
            stop,
            done,
            retries,
            acked,
            workers,
        }
    }

    async fn finish(self) -> (Acknowledged, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            w.await
                .expect("a push worker failed: a push did not succeed after its retries");
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
    let (acked, retries) = load.finish().await;
    eprintln!(
        "{} pushes acknowledged, {retries} retried attempts",
        acked.lock().unwrap().len()
    );
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
