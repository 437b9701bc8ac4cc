//! Shared by the benchmarks: a release `berth` on 127.0.0.1 with a temporary root, CNCF
//! Distribution beside it, pushes, pulls (`raw`), concurrency, and the figures they print.

#![allow(dead_code)]

pub mod raw;

use std::io::BufRead;
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// An HTTP client (reqwest needs a TLS provider chosen before the first one is built).
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// The client the side-by-side benchmarks share: keep-alive, up to 64 idle connections.
pub fn client() -> reqwest::Client {
    http_client().pool_max_idle_per_host(64).build().unwrap()
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// This machine, for the header of a benchmark's output: "2 CPUs, <model name>".
pub fn machine() -> String {
    format!(
        "{} CPUs, {}",
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("")
            .trim()
    )
}

/// Deterministic pseudo-random bytes (the same generator as the tests' harness): incompressible.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

/// The middle value; with an even count, the mean of the two middle ones.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        f64::midpoint(v[mid - 1], v[mid])
    }
}

/// CPU seconds (user + system) the process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait (up to 10 s) until something listens on `port`.
pub fn wait_for(port: u16) {
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on {port}");
}

/// Start CNCF Distribution (`docker-registry serve`, the Debian package) on a free port with
/// the config `config(port)`, written to `dir/config.yml`; its stdout (where it writes the
/// access log, when that is on) goes to `stdout`. Returns once it listens.
pub fn spawn_distribution(
    dir: &std::path::Path,
    config: impl FnOnce(u16) -> String,
    stdout: std::process::Stdio,
) -> (std::process::Child, String) {
    let port = free_port();
    let path = dir.join("config.yml");
    std::fs::write(&path, config(port)).unwrap();
    let child = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&path)
        // Its s3 driver panics at start when AWS_CA_BUNDLE is set.
        .env_remove("AWS_CA_BUNDLE")
        .stdout(stdout)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("CNCF Distribution is required: apt-get install docker-registry");
    wait_for(port);
    (child, format!("http://127.0.0.1:{port}"))
}

/// CNCF Distribution on a fresh temporary directory with filesystem storage and delete enabled;
/// killed on drop.
pub struct Distribution {
    child: std::process::Child,
    pub base: String,
    dir: tempfile::TempDir,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Distribution {
    /// With `access_log`, each request is logged (Apache combined format) to a file that
    /// `access_log()` reads; `extra` is more top-level YAML (such as a `proxy:` section).
    pub fn start(extra: &str, access_log: bool) -> Distribution {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let stdout = if access_log {
            std::fs::File::create(dir.path().join("access.log")).unwrap().into()
        } else {
            std::process::Stdio::null()
        };
        let config = |port| {
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: {}\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                !access_log,
                root.display()
            )
        };
        let (child, base) = spawn_distribution(dir.path(), config, stdout);
        Distribution { child, base, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The access log so far (empty unless started with it).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

/// A running server; killed on drop.
pub struct Server {
    child: std::process::Child,
    pub base: String,
    pub root: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Server {
    /// Start on a fresh root with extra `BERTH_*` settings.
    pub fn start(env: &[(&str, &str)]) -> Server {
        Self::start_with_config("", env)
    }

    /// Start on a fresh root with the config file `yaml` (for sections that have no `BERTH_*`
    /// variables, such as `proxy:`) and extra `BERTH_*` settings.
    pub fn start_with_config(yaml: &str, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_berth"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BERTH_")) {
            cmd.env_remove(k);
        }
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--root"])
            .arg(&root)
            .env("BERTH_LOG_LEVEL", "warn");
        if !yaml.is_empty() {
            let config = dir.path().join("config.yml");
            std::fs::write(&config, yaml).unwrap();
            cmd.arg("--config").arg(config);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line.trim().rsplit(' ').next().unwrap().to_owned();
        Server {
            child,
            base,
            root,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait, so that the store can be opened offline.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Peak resident set size of `pid` in MiB (`VmHWM`).
pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// POST a blob in one request.
pub async fn push_blob(c: &reqwest::Client, base: &str, repo: &str, bytes: Vec<u8>) -> String {
    let d = sha256(&bytes);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    d
}

/// Upload one blob as most clients do: POST, then PUT with the whole body (or PATCH chunks,
/// then PUT). Works on Distribution 2.8.2 too, which answers a single-request POST (`push_blob`)
/// with 202. Bodies are `Bytes` handed to reqwest by reference count: the client copies nothing.
pub async fn upload(c: &reqwest::Client, base: &str, repo: &str, bytes: Bytes, chunk: Option<usize>) -> String {
    let digest = sha256(&bytes);
    upload_as(c, base, repo, bytes, digest, chunk).await
}

/// `upload` with the digest already known, so that a timed push does not hash in the client.
pub async fn upload_as(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    bytes: Bytes,
    digest: String,
    chunk: Option<usize>,
) -> String {
    let r = c.post(format!("{base}/v2/{repo}/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), 202, "POST upload");
    let mut location = absolute(base, r.headers()["location"].to_str().unwrap());
    let body = match chunk {
        None => bytes,
        Some(size) => {
            for start in (0..bytes.len()).step_by(size) {
                let part = bytes.slice(start..(start + size).min(bytes.len()));
                let r = c
                    .patch(&location)
                    .header("content-type", "application/octet-stream")
                    .header("content-range", format!("{start}-{}", start + part.len() - 1))
                    .body(part)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202, "PATCH chunk");
                location = absolute(base, r.headers()["location"].to_str().unwrap());
            }
            Bytes::new()
        }
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{location}{sep}digest={digest}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "PUT upload");
    digest
}

/// A `Location` header made absolute.
pub fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

/// PUT an OCI image manifest as `repo:reference`; it must be accepted (201).
pub async fn put_manifest(c: &reqwest::Client, base: &str, repo: &str, reference: &str, body: Vec<u8>) {
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("content-type", OCI_MANIFEST)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "PUT manifest {repo}:{reference}");
}

/// Run `n` jobs with `concurrency` in flight.
pub async fn run_concurrent<F, Fut>(n: usize, concurrency: usize, job: F)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures_util::StreamExt;
    let mut pending = futures_util::stream::FuturesUnordered::new();
    let mut next = 0;
    while next < n || !pending.is_empty() {
        while next < n && pending.len() < concurrency {
            pending.push(job(next));
            next += 1;
        }
        pending.next().await;
    }
}

/// Start a garbage collection through the admin API and wait for it; returns its report.
/// Panics if the run fails.
pub async fn run_gc(c: &reqwest::Client, base: &str) -> serde_json::Value {
    let job: serde_json::Value = c
        .post(format!("{base}/admin/gc"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    loop {
        let job: serde_json::Value = c
            .get(format!("{base}/admin/gc/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match job["state"].as_str() {
            Some("running") => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            Some("failed") => panic!("gc failed: {job}"),
            _ => return job["report"].clone(),
        }
    }
}

/// Push a blob as docker does: POST, one PATCH with the whole body, PUT with the digest.
pub async fn push_patch(c: &reqwest::Client, base: &str, repo: &str, bytes: Bytes, digest: &str) {
    let r = c.post(format!("{base}/v2/{repo}/blobs/uploads/")).send().await.unwrap();
    assert_eq!(r.status(), 202, "POST");
    let location = absolute(base, r.headers()["location"].to_str().unwrap());
    let r = c
        .patch(&location)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "PATCH");
    let location = absolute(base, r.headers()["location"].to_str().unwrap());
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = c.put(format!("{location}{sep}digest={digest}")).send().await.unwrap();
    assert_eq!(r.status(), 201, "PUT: {}", r.text().await.unwrap_or_default());
}
