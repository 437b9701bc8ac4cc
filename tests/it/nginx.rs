//! Debian's nginx as a round-robin load balancer in front of Berth nodes (or any HTTP
//! servers), as the several-node tests and benchmarks use it: bodies stream both ways (no
//! buffering, HTTP/1.1 upstream, no size limit), and a request that could not reach a node
//! (refused connection) goes to the next one. A bash wrapper runs nginx and stops it when told
//! to, or when this process is gone.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's nginx, configured as a round-robin balancer over `nodes`.
pub struct Nginx {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

pub fn free_port() -> u16 {
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

    /// The wrapper's process id: nginx's master and worker run below it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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
