//! Test harness: runs the real `berth` binary on 127.0.0.1 with an OS-assigned port and a
//! temporary storage root, and offers a few push helpers built on plain HTTP. Every server runs
//! with its test hooks on (`BERTH_TEST_HOOKS=1`, src/testhook.rs): `Berth::resume`,
//! `Berth::reached` and `Berth::advance_clock` drive them.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// A running Berth server.
pub struct Berth {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`, or `https://` with TLS on.
    pub base: String,
    /// `127.0.0.1:PORT`, as clients such as docker and skopeo name the registry.
    pub host: String,
    pub root: PathBuf,
    /// What `--addr` the server listens on: `127.0.0.1:0` (a new port each start) unless fixed.
    addr: String,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
    /// With `BERTH_TEST_CLUSTER`, the nodes and balancer this handle fronts.
    cluster: Option<Box<crate::cluster::Cluster>>,
}

impl Berth {
    /// A fresh server on an empty temporary root.
    pub fn start() -> Berth {
        Self::builder().start()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Start `berth serve`; returns the child and its base URL (`http://` or `https://`).
    fn spawn(root: &Path, addr: &str, extra_args: &[String], env: &[(String, String)]) -> (Child, String) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.with_extension("log"))
            .expect("open server log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("serve")
            .arg("--addr")
            .arg(addr)
            .arg("--root")
            .arg(root)
            .args(extra_args);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BERTH_")) {
            cmd.env_remove(k);
        }
        cmd.env("BERTH_LOG_LEVEL", "berth=debug,info")
            .env("BERTH_STORAGE_FSYNC", "false")
            .env("BERTH_TEST_HOOKS", "1");
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = cmd.stdout(Stdio::piped()).stderr(log).spawn().expect("spawn berth");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read listening line");
        let base = line
            .trim()
            .strip_prefix("berth listening on ")
            .filter(|a| a.starts_with("http://") || a.starts_with("https://"))
            .unwrap_or_else(|| {
                let log = std::fs::read_to_string(root.with_extension("log")).unwrap_or_default();
                panic!("berth did not start (stdout {line:?}); log:\n{log}")
            });
        (child, base.to_owned())
    }

    /// The path of blob `digest`'s file under this server's root (filesystem storage).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.root
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(&hex[2..4])
            .join(hex)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The server's log so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.with_extension("log")).unwrap_or_default()
    }

    /// SIGKILL the server, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM the server and wait for it to exit; returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        child.wait().ok()
    }

    /// A handle on a server this harness did not start (a load balancer in front of nodes):
    /// its URL, for the push helpers, and no process.
    pub fn at(base: &str) -> Berth {
        Berth {
            child: None,
            host: host_of(base),
            base: base.to_owned(),
            root: PathBuf::new(),
            addr: String::new(),
            extra_args: Vec::new(),
            env: Vec::new(),
            _dir: None,
            cluster: None,
        }
    }

    /// Another handle on the same server, without its process: for tasks that push to it.
    pub fn clone_handle(&self) -> Berth {
        let mut handle = Berth::at(&self.base);
        handle.share_storage(self);
        handle
    }

    /// Read storage (`stored_blobs`, `staging_entries`, the root) as `node` does: a handle in
    /// front of nodes sees what they store.
    pub fn share_storage(&mut self, node: &Berth) {
        self.root.clone_from(&node.root);
        self.env.clone_from(&node.env);
    }

    /// Start again on the same root (after `kill` or `stop`), on a new port unless the port
    /// is fixed (`Builder::addr`).
    pub fn restart(&mut self) {
        self.kill();
        let (child, base) = Self::spawn(&self.root, &self.addr, &self.extra_args, &self.env);
        self.child = Some(child);
        self.host = host_of(&base);
        self.base = base;
    }

    /// A `berth` command (for `fsck`, `gc`, `du`) with the server's storage settings.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BERTH_")) {
            cmd.env_remove(k);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Start without variable `key` from the next `restart` on.
    pub fn unset_env(&mut self, key: &str) {
        self.env.retain(|(k, _)| k != key);
    }

    /// The value of a variable the server was started with.
    pub fn env_value(&self, key: &str) -> Option<String> {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    /// Whether this server keeps its blobs in S3.
    pub fn on_s3(&self) -> bool {
        self.env.iter().any(|(k, _)| k == "BERTH_STORAGE_S3_BUCKET")
    }

    /// The entries of the server's staging area (upload sessions and leftovers), read from
    /// storage directly.
    pub async fn staging_entries(&self) -> Vec<String> {
        let entries = self.blob_store().staging_entries().await.unwrap();
        entries.into_iter().map(|e| e.name).collect()
    }

    /// Leave an entry in the staging area that no upload session owns, as a crash between a
    /// session's staging file and its row leaves one; its name.
    pub async fn make_staging_leftover(&self) -> String {
        let id = uuid::Uuid::new_v4();
        let store = self.blob_store();
        let upload = store.create_upload(id, berth::oci::Algorithm::Sha256).await.unwrap();
        let bytes = crate::storage_suite::body(b"a leftover", 4, None);
        let (upload, appended) = upload.append(bytes, crate::storage_suite::limits()).await;
        appended.unwrap();
        drop(upload);
        id.hyphenated().to_string()
    }

    /// The server's blob store, opened beside it (no server-side state).
    fn blob_store(&self) -> Box<dyn berth::blobs::BlobStore> {
        if self.on_s3() {
            let prefix = self
                .env
                .iter()
                .find(|(k, _)| k == "BERTH_STORAGE_S3_PREFIX")
                .map(|(_, v)| v.clone())
                .unwrap();
            Box::new(berth::blobs::s3::S3Store::new(
                crate::garage::Garage::shared().options(&prefix),
            ))
        } else {
            let opts = berth::blobs::fs::WriteOptions {
                fsync: false,
                direct_io: false,
            };
            Box::new(berth::blobs::fs::FsStore::open(&self.root, opts).unwrap())
        }
    }

    /// The digests of every blob in the server's blob store (files under `blobs/`, or
    /// objects in its bucket prefix), read from storage directly.
    pub async fn stored_blobs(&self) -> std::collections::BTreeSet<String> {
        let store = self.blob_store();
        let entries = store.enumerate().await.unwrap();
        entries
            .into_iter()
            .filter_map(|e| e.digest)
            .map(|d| d.to_string())
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Release the server from its pause at `point` (it must be paused there: see
    /// `BERTH_TEST_PAUSE_AT` in src/testhook.rs).
    pub async fn resume(&self, point: &str) {
        let url = self.url(&format!("/admin/test/resume?point={point}"));
        let resp = client().post(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "resume {point}: {}", resp.text().await.unwrap());
    }

    /// How many times the server reached test hook `point`.
    pub async fn reached(&self, point: &str) -> u64 {
        let v = get_json(self.url(&format!("/admin/test/reached?point={point}"))).await;
        v["count"].as_u64().expect("a count")
    }

    /// Move the server's clock `by` ahead (its timestamps and garbage collection's cutoffs; see
    /// src/testhook.rs), as if that much time had passed.
    pub async fn advance_clock(&self, by: std::time::Duration) {
        let url = self.url(&format!("/admin/test/clock?advance_ms={}", by.as_millis()));
        let resp = client().post(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "advance the clock: {}", resp.text().await.unwrap());
    }

    /// Poll until the server has reached test hook `point` `n` times (panics after 30 s).
    pub async fn wait_reached(&self, point: &str, n: u64) {
        for _ in 0..3000 {
            if self.reached(point).await >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the server did not reach {point} {n} times in 30 s");
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Options for starting a server. With `BERTH_TEST_STORAGE=s3` in the test's environment,
/// every server keeps its blobs in the shared Garage (`garage`) under a fresh prefix; with
/// `BERTH_TEST_META=postgres`, its metadata in a database of the shared PostgreSQL cluster
/// (`postgres`), one per storage root, so that a restart on the same root finds it again.
pub struct Builder {
    /// A node of a cluster the harness is assembling: never a cluster itself.
    node: bool,
    root: Option<PathBuf>,
    addr: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Default for Builder {
    fn default() -> Self {
        let builder = Builder {
            node: false,
            root: None,
            addr: None,
            args: Vec::new(),
            env: Vec::new(),
        };
        if crate::garage::s3_mode() {
            builder.s3(crate::garage::Garage::shared())
        } else {
            builder
        }
    }
}

impl Builder {
    /// A single server, even with `BERTH_TEST_CLUSTER` (a cluster's node).
    pub fn node() -> Builder {
        Builder {
            node: true,
            ..Builder::default()
        }
    }

    /// Keep the blobs in `garage`, under a fresh prefix of its bucket.
    pub fn s3(mut self, garage: &crate::garage::Garage) -> Self {
        self.env.retain(|(k, _)| !k.starts_with("BERTH_STORAGE_S3_"));
        self.env.extend(garage.berth_env(&crate::garage::fresh_prefix()));
        self
    }

    /// Keep the blobs in `garage` under `prefix`: nodes of one cluster share it.
    pub fn s3_prefix(mut self, garage: &crate::garage::Garage, prefix: &str) -> Self {
        self.env.retain(|(k, _)| !k.starts_with("BERTH_STORAGE_S3_"));
        self.env.extend(garage.berth_env(prefix));
        self
    }

    /// Keep the metadata in the PostgreSQL database `url` (`Postgres::fresh_url`): nodes of one
    /// cluster share it.
    pub fn postgres(mut self, url: &str) -> Self {
        self.env.retain(|(k, _)| k != "BERTH_METADATA_POSTGRES_URL");
        self.env.push(("BERTH_METADATA_POSTGRES_URL".into(), url.to_owned()));
        self
    }

    /// Keep the blobs in files under the root, even with `BERTH_TEST_STORAGE=s3`.
    pub fn filesystem(mut self) -> Self {
        self.env.retain(|(k, _)| !k.starts_with("BERTH_STORAGE_S3_"));
        self
    }

    /// Use this storage root instead of a fresh temporary one.
    pub fn root(mut self, root: &Path) -> Self {
        self.root = Some(root.to_owned());
        self
    }

    /// Listen on `addr` (`127.0.0.1:PORT`), on every start: nodes behind a load balancer keep
    /// their address across restarts.
    pub fn addr(mut self, addr: &str) -> Self {
        self.addr = Some(addr.to_owned());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn start(self) -> Berth {
        if let (false, Some(n)) = (self.node, crate::cluster::cluster_mode()) {
            return self.start_cluster(n);
        }
        let (dir, root) = if let Some(root) = self.root {
            (None, root)
        } else {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path().join("data");
            (Some(dir), root)
        };
        let mut env = self.env;
        if crate::postgres::postgres_mode() && !env.iter().any(|(k, _)| k == "BERTH_METADATA_POSTGRES_URL") {
            env.push(("BERTH_METADATA_POSTGRES_URL".into(), database_of(&root)));
        }
        let addr = self.addr.unwrap_or_else(|| "127.0.0.1:0".into());
        let (child, base) = Berth::spawn(&root, &addr, &self.args, &env);
        Berth {
            child: Some(child),
            host: host_of(&base),
            base,
            root,
            addr,
            extra_args: self.args,
            env,
            _dir: dir,
            cluster: None,
        }
    }

    /// `BERTH_TEST_CLUSTER=n`: `n` nodes with these options behind a balancer, and a handle
    /// on the balancer.
    fn start_cluster(self, n: usize) -> Berth {
        assert!(self.root.is_none(), "a cluster's nodes each have their own root");
        let (args, env) = (self.args, self.env);
        let cluster = crate::cluster::Cluster::start(n, |_| {
            let mut node = Builder::node();
            node.args.clone_from(&args);
            node.env.clone_from(&env);
            node
        });
        let mut front = cluster.front();
        front.cluster = Some(Box::new(cluster));
        front
    }
}

/// `127.0.0.1:PORT` of `http(s)://127.0.0.1:PORT`.
fn host_of(base: &str) -> String {
    base.split_once("://").map_or(base, |(_, host)| host).to_owned()
}

/// Wait until the wall clock's millisecond has moved on, so that everything the server (or a
/// `berth` command) stamped before the call is strictly older than whatever it stamps next.
pub async fn next_millisecond() {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    let start = now();
    while now() <= start {
        tokio::time::sleep(std::time::Duration::from_micros(100)).await;
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An HTTP client that does not follow redirects.
pub fn client() -> reqwest::Client {
    // reqwest's TLS has no provider of its own here: choose ring, as the server does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// GET `url` and decode its JSON body.
pub async fn get_json(url: impl reqwest::IntoUrl) -> Value {
    client().get(url).send().await.unwrap().json().await.unwrap()
}

/// The value of response header `name`, which must be present.
pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", resp.headers()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// `sha512:<hex>` of `bytes`.
pub fn sha512(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
}

/// Push `bytes` as a blob of `repo` in one request; returns its digest.
pub async fn push_blob(berth: &Berth, repo: &str, bytes: &[u8]) -> String {
    push_blob_with(&client(), berth, repo, bytes).await
}

/// `push_blob` with `client` (which may carry credentials).
pub async fn push_blob_with(client: &reqwest::Client, berth: &Berth, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let url = berth.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"));
    let resp = client.post(url).body(bytes.to_vec()).send().await.unwrap();
    assert_eq!(resp.status(), 201, "push blob: {}", resp.text().await.unwrap());
    digest
}

/// Push an OCI image manifest with `layers` (each pushed as a blob) under `reference`;
/// returns (manifest digest, manifest bytes).
pub async fn push_image(berth: &Berth, repo: &str, reference: &str, layers: &[&[u8]]) -> (String, Vec<u8>) {
    let body = image_manifest(berth, repo, layers).await;
    let digest = push_manifest(
        berth,
        repo,
        reference,
        "application/vnd.oci.image.manifest.v1+json",
        &body,
    )
    .await;
    (digest, body)
}

/// The OCI image manifest `push_image` puts, its config and `layers` pushed as blobs; the
/// manifest itself is not put.
pub async fn image_manifest(berth: &Berth, repo: &str, layers: &[&[u8]]) -> Vec<u8> {
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"n":{}}}"#,
        layers.len()
    );
    let config_digest = push_blob(berth, repo, config.as_bytes()).await;
    let mut descs = Vec::new();
    for layer in layers {
        let d = push_blob(berth, repo, layer).await;
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": layer.len()}));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descs,
    });
    serde_json::to_vec(&manifest).unwrap()
}

/// PUT a manifest and assert 201; returns the digest the server reports.
pub async fn push_manifest(berth: &Berth, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
    push_manifest_with(&client(), berth, repo, reference, media_type, body).await
}

/// `push_manifest` with `client` (which may carry credentials).
pub async fn push_manifest_with(
    client: &reqwest::Client,
    berth: &Berth,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    let url = berth.url(&format!("/v2/{repo}/manifests/{reference}"));
    let resp = client
        .put(url)
        .header("content-type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let digest = resp
        .headers()
        .get("docker-content-digest")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(status, 201, "push manifest: {}", resp.text().await.unwrap());
    let digest = digest.expect("Docker-Content-Digest");
    assert_eq!(digest, sha256(body));
    digest
}

/// The OCI error codes of an error response body.
pub async fn error_codes(resp: reqwest::Response) -> Vec<String> {
    let v: Value = resp.json().await.expect("OCI error body is JSON");
    v["errors"]
        .as_array()
        .expect("errors array")
        .iter()
        .map(|e| e["code"].as_str().unwrap().to_owned())
        .collect()
}

/// Deterministic pseudo-random bytes.
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

impl Berth {
    /// Wait for the server to exit on its own (after a signal sent with `signal`).
    pub fn wait_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.take()?.wait().ok()
    }

    /// Send a signal (`TERM`, `INT`) without waiting.
    pub fn signal(&self, name: &str) {
        let pid = self.pid().to_string();
        let status = Command::new("kill").arg(format!("-{name}")).arg(pid).status().unwrap();
        assert!(status.success());
    }
}

/// Send one HTTP/1.1 request with the path exactly as given (no normalisation of `.`, `..` or
/// percent escapes); returns the status and the body.
pub async fn raw_request(berth: &Berth, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(&berth.host).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        berth.host
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a complete response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Run a garbage collection through the admin API and wait for its report.
pub async fn run_gc(berth: &Berth) -> Value {
    run_gc_at(&berth.base).await
}

/// `run_gc` for the server at `base` (`http://127.0.0.1:PORT`).
pub async fn run_gc_at(base: &str) -> Value {
    let id = start_gc(base).await;
    wait_gc(base, &id).await
}

/// Start a garbage collection through the admin API; its run id.
pub async fn start_gc(base: &str) -> String {
    let job: Value = client()
        .post(format!("{base}/admin/gc"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    job["id"].as_str().expect("a job id").to_owned()
}

/// Wait for garbage collection run `id` to finish (panics if it fails); its report.
pub async fn wait_gc(base: &str, id: &str) -> Value {
    for _ in 0..2400 {
        let job = get_json(format!("{base}/admin/gc/{id}")).await;
        match job["state"].as_str() {
            Some("done") => return job["report"].clone(),
            Some("failed") => panic!("gc failed: {job}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    panic!("gc did not finish");
}

/// The `tags` array of `repo`'s tag list (which must answer 200).
pub async fn tag_list(berth: &Berth, repo: &str) -> Value {
    let resp = client()
        .get(berth.url(&format!("/v2/{repo}/tags/list")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["tags"].clone()
}

/// The manifest, config and layer media types of an image: Docker schema2 (`docker`) or OCI.
pub fn image_media_types(docker: bool) -> (&'static str, &'static str, &'static str) {
    if docker {
        (
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
    } else {
        (
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
    }
}

/// Run `berth fsck --json` against the running server; its report.
pub fn fsck_report(berth: &Berth) -> Value {
    let out = berth
        .cli()
        .args(["fsck", "--url", &berth.base, "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "fsck printed no report: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The PostgreSQL database of the server on `root` (`BERTH_TEST_META=postgres`): made on first
/// use, and remembered beside the root (not in it: the root is the store's).
fn database_of(root: &Path) -> String {
    let remembered = root.with_extension("postgres-url");
    if let Ok(url) = std::fs::read_to_string(&remembered) {
        return url;
    }
    let url = crate::postgres::Postgres::shared().fresh_url();
    std::fs::write(&remembered, &url).expect("remember the test database");
    url
}
