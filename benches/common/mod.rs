//! Shared by the benchmarks: a release `berth` on 127.0.0.1 with a temporary root.

#![allow(dead_code)]

use std::io::BufRead;

use sha2::{Digest as _, Sha256};

/// An HTTP client (reqwest needs a TLS provider chosen before the first one is built).
pub fn http_client() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
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
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_berth"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BERTH_")) {
            cmd.env_remove(k);
        }
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--root"])
            .arg(&root)
            .env("BERTH_LOG_LEVEL", "warn");
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
