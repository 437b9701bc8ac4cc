//! A real PostgreSQL for the tests: a throwaway cluster from Debian's packages
//! (`/usr/lib/postgresql/<version>/bin`), made with `initdb` in a temporary folder and run on
//! a free port of 127.0.0.1. Tests share one cluster (`Postgres::shared`), each with a fresh
//! database (`fresh_url`); a test that stops PostgreSQL starts its own.
//!
//! `initdb` and `postgres` refuse to run as root, and CI runs as root: the cluster is then
//! made and run as the `postgres` user (which Debian's package creates), in a folder that user
//! can reach. A bash wrapper runs the server and stops it (immediate shutdown, as a crash
//! would) when told to, or when this test process is gone, so no cluster outlives a run.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The user every test database belongs to (trust authentication on 127.0.0.1).
const USER: &str = "berth";

/// A running PostgreSQL cluster.
pub struct Postgres {
    child: Option<Child>,
    dir: PathBuf,
    pub port: u16,
    _tmp: tempfile::TempDir,
}

/// The folder of Debian's PostgreSQL binaries (the newest version installed), or a panic that
/// says how to get them.
pub fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    let Some((_, bin)) = versions.pop() else {
        panic!(
            "PostgreSQL is not installed: the PostgreSQL tests need Debian's postgresql package (.ci/run installs it)"
        )
    };
    bin
}

/// The uid and gid of `postgres` when this process is root (`initdb` refuses root); `None`
/// otherwise: the cluster then runs as this user.
fn run_as() -> Option<(u32, u32)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))?
        .split_whitespace()
        .nth(2)?;
    if uid != "0" {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .expect("running as root, PostgreSQL needs the postgres user (Debian's postgresql package makes it)");
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

fn as_cluster_user(command: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = run_as() {
        command.uid(uid).gid(gid);
    }
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Postgres {
    /// The cluster the tests share, started on first use.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(Postgres::start)
    }

    /// A private cluster (for tests that stop and restart it).
    pub fn start() -> Postgres {
        let tmp = tempfile::Builder::new().prefix("berth-pg").tempdir().expect("tempdir");
        // The temporary folder is 0700 and root's: open it for traversal, and give the
        // cluster a folder of its own user inside.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = tmp.path().join("pg");
        std::fs::create_dir(&dir).unwrap();
        if let Some((uid, gid)) = run_as() {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let out = as_cluster_user(&mut Command::new(bin_dir().join("initdb")))
            .args([
                "--no-sync",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "-U",
                USER,
                "-D",
            ])
            .arg(dir.join("data"))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Postgres {
            child: None,
            dir,
            port: free_port(),
            _tmp: tmp,
        };
        pg.run();
        pg
    }

    /// Start the server on this cluster's data and port, and wait until it accepts queries.
    fn run(&mut self) {
        let log = self.dir.join("postgres.log");
        // Durable commits as in production (`synchronous_commit` stays on); `fsync` off, since
        // the tests crash processes, never the machine.
        let script = format!(
            "\"$0\" -D \"$1\" -p {port} -k \"$2\" -c listen_addresses=127.0.0.1 -c fsync=off \
             -c full_page_writes=off -c max_connections=300 >>\"$2/postgres.log\" 2>&1 & g=$!\n\
             trap 'kill -QUIT $g 2>/dev/null; wait $g; exit 0' TERM INT\n\
             while [ -e /proc/{parent} ] && kill -0 $g 2>/dev/null; do sleep 0.5; done\n\
             kill -QUIT $g 2>/dev/null; wait $g",
            port = self.port,
            parent = std::process::id()
        );
        let child = as_cluster_user(&mut Command::new("bash"))
            .arg("-c")
            .arg(script)
            .arg(bin_dir().join("postgres"))
            .arg(self.dir.join("data"))
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.ready() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("postgres exited ({status}); log:\n{}", read(&log));
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start in 60 s; log:\n{}",
                read(&log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn ready(&self) -> bool {
        Command::new(bin_dir().join("pg_isready"))
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                "postgres",
            ])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stop the server at once (an immediate shutdown: what is committed stays, nothing is
    /// flushed first, as after a crash) and wait until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }

    /// Start the server again on the same data and port.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// `psql` on database `db`, failing the test if it fails; answers its output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(bin_dir().join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                USER,
            ])
            .args(["-p", &self.port.to_string(), "-d", db, "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A new, empty database, as a connection URL.
    pub fn fresh_url(&self) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!("t{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// The connection URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The wrapper's process id: the server and its backends run below it.
    pub fn server_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        read(&self.dir.join("postgres.log"))
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether this test run keeps Berth's metadata in PostgreSQL (`BERTH_TEST_META=postgres`).
pub fn postgres_mode() -> bool {
    std::env::var("BERTH_TEST_META").is_ok_and(|v| v == "postgres")
}
