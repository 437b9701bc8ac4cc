//! CNCF Distribution (Debian's `docker-registry`, 2.8.2) run as a real registry for the tests
//! that need one: an upstream of the pull-through cache, and a store to import. Plain HTTP, no
//! auth, filesystem storage in a temporary directory, deletes enabled. A missing binary fails
//! the test with the install command.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{client, header, sha256};

/// A running (or stopped) Distribution registry; killed on drop.
pub struct Distribution {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    dir: tempfile::TempDir,
}

impl Distribution {
    /// A fresh registry on an empty storage directory.
    pub fn start() -> Distribution {
        let dir = tempfile::tempdir().unwrap();
        let (child, base) = spawn(&dir);
        Distribution {
            child: Some(child),
            base,
            dir,
        }
    }

    /// Its storage `rootdirectory` (what `/var/lib/registry` is in the registry:2 image).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Kill it and wait for it to exit; its storage stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same storage (after `stop`), on a new port.
    pub fn restart(&mut self) {
        self.stop();
        let (child, base) = spawn(&self.dir);
        self.child = Some(child);
        self.base = base;
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// How many `GET <path>` its access log shows answered 200.
    pub fn gets(&self, path: &str) -> usize {
        let line = format!("\"GET {path} HTTP/1.1\" 200 ");
        self.log("access.log").lines().filter(|l| l.contains(&line)).count()
    }

    /// Push a blob into `repo` (POST, then PUT with the digest, as docker does); its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let c = client();
        let digest = sha256(bytes);
        let resp = c
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "start an upload");
        let location = header(&resp, "location");
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = c
            .put(format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "push {digest}: {}", resp.text().await.unwrap());
        digest
    }

    /// Push a manifest as `repo:reference`; the digest Distribution answers with.
    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
        let resp = client()
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "push the manifest: {}", resp.text().await.unwrap());
        header(&resp, "docker-content-digest")
    }

    /// Delete a manifest by digest (it answers 202).
    pub async fn delete_manifest(&self, repo: &str, digest: &str) {
        let resp = client()
            .delete(format!("{}/v2/{repo}/manifests/{digest}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "delete {digest}: {}", resp.text().await.unwrap());
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Run `docker-registry serve` on `dir` (config and logs there, storage in `dir/root`) on a
/// free port; its child and base URL.
fn spawn(dir: &tempfile::TempDir) -> (Child, String) {
    // A free port, picked by the kernel and released for the registry; if something else
    // takes it meanwhile the registry exits, and the next attempt picks another.
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("root").display()
            ),
        )
        .unwrap();
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.path().join(name))
                .unwrap()
        };
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log("access.log"))
            .stderr(log("registry.log"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "CNCF Distribution is required for this test and could not run ({e}); \
                     install it with `apt-get install docker-registry` (/usr/bin/docker-registry)"
                )
            });
        // Poll until it accepts connections, or has exited; at most 10 s.
        let addr = format!("127.0.0.1:{port}");
        let mut ready = None;
        for _ in 0..400 {
            if let Ok(Some(_)) = child.try_wait() {
                ready = Some(false);
                break;
            }
            if std::net::TcpStream::connect(&addr).is_ok() {
                ready = Some(true);
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let log = std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default();
        match ready {
            Some(true) => return (child, format!("http://{addr}")),
            Some(false) => eprintln!("docker-registry exited at start-up, trying another port:\n{log}"),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("docker-registry did not listen on {addr} within 10 s:\n{log}");
            }
        }
    }
    panic!("docker-registry did not start in three attempts");
}
