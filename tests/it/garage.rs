//! A real S3 server for the tests: a single-node Garage on 127.0.0.1, started from a generated
//! configuration with its layout, key and bucket made at start-up (`garage server
//! --single-node --default-bucket`). Tests share one instance (`Garage::shared`) and each
//! Berth gets a fresh key prefix in its bucket; a test that stops Garage starts its own.
//!
//! `garage` must be on the PATH or in `~/.cargo/bin` (`.ci/run` installs it with
//! `cargo install garage --locked`); without it the S3 tests fail and say so.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "GK0123456789abcdef01234567";
pub const SECRET_KEY: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";
pub const BUCKET: &str = "berth-tests";
pub const REGION: &str = "garage";

/// A running Garage server.
pub struct Garage {
    /// The wrapper process: it runs Garage and kills it when it ends, or when this test
    /// process does.
    child: Option<Child>,
    dir: PathBuf,
    config: PathBuf,
    /// `http://127.0.0.1:PORT`, the S3 API.
    pub endpoint: String,
    _tmp: Option<tempfile::TempDir>,
}

/// The `garage` binary, or a panic that says how to get it.
pub fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("garage")).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_bin = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/garage"));
    on_path
        .into_iter()
        .chain(cargo_bin)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("garage is not installed: the S3 tests need it (`cargo install garage --locked`, as .ci/run does)")
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Garage {
    /// The instance the tests share, started on first use.
    pub fn shared() -> &'static Garage {
        static SHARED: OnceLock<Garage> = OnceLock::new();
        SHARED.get_or_init(Garage::start)
    }

    /// A private instance (for tests that stop and restart it).
    pub fn start() -> Garage {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_owned();
        let (s3, rpc) = (free_port(), free_port());
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"lmdb\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n",
                meta = dir.join("meta").display(),
                data = dir.join("data").display(),
                secret = "1799bccfd7411eddcf9ebd316bc1f5287ad12a68094e1c6ac6abde7e6feae1ec",
            ),
        )
        .unwrap();
        let mut garage = Garage {
            child: None,
            dir,
            config,
            endpoint: format!("http://127.0.0.1:{s3}"),
            _tmp: Some(tmp),
        };
        garage.run();
        garage
    }

    /// Start the server on this instance's configuration and data, and wait until it answers.
    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("garage.log"))
            .unwrap();
        // The wrapper kills Garage when it is told to stop, and when this test process is gone
        // (a watchdog, so no Garage outlives the test run).
        let script = format!(
            "\"$0\" -c \"$1\" server --single-node --default-bucket & g=$!\n\
             trap 'kill -9 $g 2>/dev/null; exit 0' TERM INT EXIT\n\
             while kill -0 {parent} 2>/dev/null && kill -0 $g 2>/dev/null; do sleep 0.5; done",
            parent = std::process::id()
        );
        let child = Command::new("bash")
            .arg("-c")
            .arg(script)
            .arg(binary())
            .arg(&self.config)
            .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", SECRET_KEY)
            .env("GARAGE_DEFAULT_BUCKET", BUCKET)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn garage");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Poll until the S3 API answers a request for the bucket (403 without credentials: it
    /// is up and knows the bucket's layout), for at most 60 s.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = self.endpoint.trim_start_matches("http://").to_owned();
        loop {
            let answered = status_line(&addr, &format!("/{BUCKET}")).is_some_and(|l| l.contains(" 403 "));
            if answered {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("garage exited ({status}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "garage did not start in 60 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The Garage server's process id (the wrapper's child), for CPU accounting.
    pub fn server_pid(&self) -> Option<u32> {
        let wrapper = self.child.as_ref()?.id();
        let children = std::fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("garage.log")).unwrap_or_default()
    }

    /// Kill Garage (SIGKILL, as a crash or an outage would) and wait until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Start Garage again on the same data and port.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// Create another bucket the test key may read and write (benchmarks give each registry
    /// its own).
    pub fn create_bucket(&self, name: &str) {
        for args in [
            vec!["bucket", "create", name],
            vec![
                "bucket", "allow", "--read", "--write", "--owner", name, "--key", ACCESS_KEY,
            ],
        ] {
            let out = Command::new(binary())
                .arg("-c")
                .arg(&self.config)
                .args(&args)
                .output()
                .expect("run garage");
            assert!(
                out.status.success(),
                "garage {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// The `BERTH_*` variables that put a Berth's blobs in this Garage under `prefix`.
    pub fn berth_env(&self, prefix: &str) -> Vec<(String, String)> {
        [
            ("BERTH_STORAGE_S3_ENDPOINT", self.endpoint.as_str()),
            ("BERTH_STORAGE_S3_REGION", REGION),
            ("BERTH_STORAGE_S3_BUCKET", BUCKET),
            ("BERTH_STORAGE_S3_PREFIX", prefix),
            ("BERTH_STORAGE_S3_ACCESS_KEY", ACCESS_KEY),
            ("BERTH_STORAGE_S3_SECRET_KEY", SECRET_KEY),
            ("BERTH_STORAGE_S3_PATH_STYLE", "true"),
            // The smallest part S3 allows, so modest test blobs span several segments.
            ("BERTH_STORAGE_S3_PART_SIZE", "5MiB"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// An S3 client with the test key, for tests that reach behind Berth's back.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let credentials = aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .credentials_provider(credentials)
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// The blob store options for a prefix, for tests that drive the backend directly.
    pub fn options(&self, prefix: &str) -> berth::blobs::s3::Options {
        berth::blobs::s3::Options {
            endpoint: Some(self.endpoint.clone()),
            region: REGION.to_owned(),
            bucket: BUCKET.to_owned(),
            prefix: prefix.to_owned(),
            access_key: ACCESS_KEY.to_owned(),
            secret_key: SECRET_KEY.to_owned(),
            path_style: true,
            redirect: false,
            part_size: berth::blobs::s3::MIN_PART,
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The status line of a plain GET of `path`, if anything answered within 2 s.
fn status_line(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    Some(String::from_utf8_lossy(&head[..n]).lines().next()?.to_owned())
}

/// A fresh key prefix: every test gets its own corner of the bucket.
pub fn fresh_prefix() -> String {
    format!("t-{}", uuid::Uuid::new_v4().simple())
}

/// Whether this test run puts Berth's blobs in Garage (`BERTH_TEST_STORAGE=s3`).
pub fn s3_mode() -> bool {
    std::env::var("BERTH_TEST_STORAGE").is_ok_and(|v| v == "s3")
}
