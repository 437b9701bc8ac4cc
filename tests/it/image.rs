//! The container image (`contrib/image/Dockerfile`, built as `berth:dev` by
//! `bash contrib/image/build`, which `.ci/run` runs first), run by the Docker engine the way
//! users run it: published port, named volume, non-root user, a restart and a new container on
//! the same volume; the `docker run ... registry:2` line of Distribution's TLS and htpasswd
//! guide with only the image name changed, up to the HEALTHCHECK reporting healthy; and the
//! pull-through cache reaching an HTTPS upstream by host name, through Docker's DNS and through
//! `/etc/hosts`, which a static glibc binary in a scratch image must do without NSS modules.
//! The image's probe, `berth healthcheck`, is also checked outside a container.
//! Each test names its containers, volumes and networks uniquely and removes them when it ends,
//! passed or failed. A missing image fails the test with the command that builds it.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::clients::{
    Layout, OCI_MANIFEST, digest_after, digests_of, docker, docker_build_and_push, same_blobs, skopeo,
};
use crate::harness::{client, random_bytes, sha256};
use crate::pki::{Ca, https_client};

/// The tag `contrib/image/build` gives the image.
const IMAGE: &str = "berth:dev";
/// The user the image runs as.
const USER: &str = "65532:65532";
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// A name no other test, and no other run, uses.
fn unique(what: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("berth-it-{what}-{}-{nanos}-{n}", std::process::id())
}

/// Fail, saying how to build it, unless the image is there.
fn require_image() {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", IMAGE])
        .output()
        .expect("the Docker engine must be installed and running (CI machines have it)");
    assert!(
        out.status.success(),
        "the image {IMAGE} is missing: build it with `bash contrib/image/build` (.ci/run does this first)"
    );
}

/// `docker <kind> rm` of a named object when dropped, whatever the test's outcome.
struct Removed {
    kind: &'static str,
    name: String,
}

impl Drop for Removed {
    fn drop(&mut self) {
        let args: &[&str] = match self.kind {
            // -v: the anonymous volume the image's VOLUME gave it, too.
            "container" => &["rm", "-f", "-v"],
            "volume" => &["volume", "rm", "-f"],
            _ => &["network", "rm"],
        };
        let _ = Command::new("docker").args(args).arg(&self.name).output();
    }
}

fn volume() -> Removed {
    let name = unique("vol");
    docker(&["volume", "create", &name]);
    Removed { kind: "volume", name }
}

fn network() -> Removed {
    let name = unique("net");
    docker(&["network", "create", &name]);
    Removed { kind: "network", name }
}

/// A container to be started by the caller's own `docker run` line, under this name.
fn container() -> Removed {
    require_image();
    Removed {
        kind: "container",
        name: unique("c"),
    }
}

impl Removed {
    /// `docker inspect --format <format>`, trimmed.
    fn inspect(&self, format: &str) -> String {
        let out = docker(&["inspect", "--format", format, &self.name]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `127.0.0.1:PORT`, where the container's port 5000 is published (new after a restart).
    fn host(&self) -> String {
        let out = docker(&["port", &self.name, "5000/tcp"]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().next().expect("port 5000 is published").trim().to_owned()
    }

    fn logs(&self) -> String {
        let out = Command::new("docker").args(["logs", &self.name]).output().unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Poll `scheme://host/v2/` until the server answers at all (401 included); its host.
    async fn wait_answering(&self, client: &reqwest::Client, scheme: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let host = self.host();
            if client.get(format!("{scheme}://{host}/v2/")).send().await.is_ok() {
                return host;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer in 30 s; state {}; logs:\n{}",
                self.name,
                self.inspect("{{.State.Status}}"),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Poll until Docker reports the HEALTHCHECK healthy (its first probe runs one interval,
    /// 10 s, after the start).
    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.inspect("{{.State.Health.Status}}") != "healthy" {
            assert!(
                Instant::now() < deadline,
                "{} not healthy in 60 s; health: {}; logs:\n{}",
                self.name,
                self.inspect("{{json .State.Health}}"),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The manifest of `repo:tag` at `base`, then each blob it names, as bytes.
async fn pull_bytes(client: &reqwest::Client, base: &str, repo: &str, tag: &str) -> Vec<Vec<u8>> {
    let resp = client
        .get(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("accept", MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "{repo}:{tag} at {base}: {}",
        resp.text().await.unwrap()
    );
    let manifest = resp.bytes().await.unwrap().to_vec();
    let mut out = vec![manifest.clone()];
    for digest in digests_of(&manifest) {
        let url = format!("{base}/v2/{repo}/blobs/{digest}");
        let blob = client.get(url).send().await.unwrap().bytes().await.unwrap().to_vec();
        assert_eq!(sha256(&blob), digest);
        out.push(blob);
    }
    out
}

/// The numeric uid the container's main process runs as, as the host sees it.
fn process_uid(c: &Removed) -> String {
    let out = docker(&["top", &c.name, "-o", "pid,uid,comm"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.trim_end().ends_with("berth"))
        .unwrap_or_else(|| panic!("no berth process in:\n{text}"));
    line.split_whitespace().nth(1).unwrap().to_owned()
}

/// The image with its defaults, port 5000 published on a free loopback port, `mount` (`-v`).
fn run_on(mount: &str) -> Removed {
    let c = container();
    docker(&[
        "run",
        "-d",
        "--name",
        &c.name,
        "-p",
        "127.0.0.1::5000",
        "-v",
        mount,
        IMAGE,
    ]);
    c
}

#[tokio::test]
async fn the_image_runs_as_non_root_on_a_named_volume_and_keeps_pushes_across_restarts() {
    let volume = volume();
    let mount = format!("{}:/var/lib/berth", volume.name);
    let c = run_on(&mount);
    let http = client();
    let host = c.wait_answering(&http, "http").await;
    assert_eq!(c.inspect("{{.Config.User}}"), USER);
    assert_eq!(process_uid(&c), "65532", "the server runs as the image's user");

    // The Docker engine pushes (the non-root user writes the volume) and pulls it back.
    let pushed = docker_build_and_push(&format!("{host}/image/app:v1"), &[]);
    let before = pull_bytes(&http, &format!("http://{host}"), "image/app", "v1").await;
    assert_eq!(sha256(&before[0]), pushed);

    docker(&["restart", &c.name]);
    let host = c.wait_answering(&http, "http").await;
    let after = pull_bytes(&http, &format!("http://{host}"), "image/app", "v1").await;
    assert!(before == after, "different bytes after a restart");

    // An upgrade: a new container on the same volume serves the same bytes, to Docker too.
    drop(c);
    let c = run_on(&mount);
    let host = c.wait_answering(&http, "http").await;
    let again = pull_bytes(&http, &format!("http://{host}"), "image/app", "v1").await;
    assert!(before == again, "different bytes in a new container on the volume");
    let tag = format!("{host}/image/app:v1");
    let pulled = docker(&["pull", &tag]);
    assert_eq!(
        digest_after(&String::from_utf8_lossy(&pulled.stdout), "Digest: "),
        pushed
    );
    docker(&["rmi", "-f", &tag]);
}

/// The files a registry:2 guide prepares: `certs/domain.crt`, `certs/domain.key` and
/// `auth/htpasswd`, readable by the image's user (see README: a 0600 key is not).
fn guide_files(dir: &Path, ca: &Ca) {
    let (cert, key) = ca.issue("registry");
    let hash = bcrypt::hash_with_result("testpassword", 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    for (file, text) in [
        ("certs/domain.crt", cert),
        ("certs/domain.key", key),
        ("auth/htpasswd", format!("testuser:{hash}\n")),
    ] {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

#[tokio::test]
async fn a_registry_2_guides_tls_and_htpasswd_line_runs_with_only_the_image_changed() {
    let ca = Ca::new("Berth image test CA");
    let dir = tempfile::tempdir().unwrap();
    guide_files(dir.path(), &ca);
    let certs = format!("{}/certs:/certs", dir.path().display());
    let auth = format!("{}/auth:/auth", dir.path().display());
    let c = container();
    // The guide's line, with a free loopback port and a unique name instead of 5000 and
    // `registry`, and this image instead of registry:2.
    #[rustfmt::skip]
    docker(&[
        "run", "-d", "-p", "127.0.0.1::5000", "--restart=always", "--name", &c.name,
        "-v", &certs, "-v", &auth,
        "-e", "REGISTRY_AUTH=htpasswd",
        "-e", "REGISTRY_AUTH_HTPASSWD_REALM=Registry Realm",
        "-e", "REGISTRY_AUTH_HTPASSWD_PATH=/auth/htpasswd",
        "-e", "REGISTRY_HTTP_TLS_CERTIFICATE=/certs/domain.crt",
        "-e", "REGISTRY_HTTP_TLS_KEY=/certs/domain.key",
        IMAGE,
    ]);
    let https = https_client(&ca.pem, None, &[]);
    let host = c.wait_answering(&https, "https").await;
    let resp = https.get(format!("https://{host}/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"Registry Realm\"");

    // skopeo verifies the certificate against the CA (Docker would not: 127.0.0.1 is insecure
    // to it) and logs in.
    let (src, dst, ca_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    std::fs::write(ca_dir.path().join("ca.crt"), &ca.pem).unwrap();
    let layout = Layout { dir: src.path() };
    let manifest = layout.image("amd64", &[random_bytes(400_000, 22), random_bytes(3_000, 23)]);
    layout.index(OCI_MANIFEST, &manifest, "v1");
    let target = format!("docker://{host}/guide/app:v1");
    let cert_dir = ca_dir.path().to_str().unwrap();
    let (src_ref, dst_ref) = (
        format!("oci:{}:v1", src.path().display()),
        format!("oci:{}:v1", dst.path().display()),
    );
    #[rustfmt::skip]
    skopeo(&["copy", "--preserve-digests", "--dest-cert-dir", cert_dir, "--dest-creds", "testuser:testpassword", &src_ref, &target]);
    #[rustfmt::skip]
    skopeo(&["copy", "--preserve-digests", "--src-cert-dir", cert_dir, "--src-creds", "testuser:testpassword", &target, &dst_ref]);
    same_blobs(src.path(), dst.path(), &digests_of(&manifest));

    // The HEALTHCHECK probes over HTTPS, at the address REGISTRY_* gave.
    c.wait_healthy().await;
}

/// A Berth mirror in a container reaches its upstream, another container serving HTTPS with a
/// private CA, by two host names: one from Docker's DNS (a network alias, through
/// /etc/resolv.conf) and one from /etc/hosts (`--add-host`). The mirror trusts the CA through
/// `SSL_CERT_FILE` on a mounted file, and its config file replaces the image's.
#[tokio::test]
async fn a_mirror_in_the_image_resolves_its_upstream_by_dns_and_hosts_and_trusts_a_mounted_ca() {
    let ca = Ca::new("Berth image upstream CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.issue_for("upstream", &["upstream.test", "upstream-hosts.test", "127.0.0.1"]);
    let site = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (cert, key, ca_file) = (site("up.crt", &cert), site("up.key", &key), site("ca.crt", &ca.pem));
    let config = site(
        "mirror.yml",
        "http:\n  addr: 0.0.0.0:5000\nstorage:\n  root: /var/lib/berth\nproxy:\n  \
         - prefix: dns\n    url: https://upstream.test:5000\n  \
         - prefix: hosts\n    url: https://upstream-hosts.test:5000\n",
    );
    let net = network();
    let up = container();
    #[rustfmt::skip]
    docker(&[
        "run", "-d", "--name", &up.name, "--network", &net.name, "--network-alias", "upstream.test",
        "-p", "127.0.0.1::5000", "-v", &format!("{cert}:/certs/up.crt:ro"), "-v", &format!("{key}:/certs/up.key:ro"),
        "-e", "REGISTRY_HTTP_TLS_CERTIFICATE=/certs/up.crt", "-e", "REGISTRY_HTTP_TLS_KEY=/certs/up.key",
        IMAGE,
    ]);
    let https = https_client(&ca.pem, None, &[]);
    let up_host = up.wait_answering(&https, "https").await;
    let pushed = docker_build_and_push(&format!("{up_host}/lib/app:v1"), &[]);
    let up_ip = up.inspect("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");

    let mirror = container();
    #[rustfmt::skip]
    docker(&[
        "run", "-d", "--name", &mirror.name, "--network", &net.name,
        "--add-host", &format!("upstream-hosts.test:{up_ip}"),
        "-p", "127.0.0.1::5000", "-v", &format!("{config}:/etc/berth/config.yml:ro"),
        "-v", &format!("{ca_file}:/certs/ca.crt:ro"), "-e", "SSL_CERT_FILE=/certs/ca.crt",
        IMAGE,
    ]);
    let http = client();
    let host = mirror.wait_answering(&http, "http").await;
    let upstream = pull_bytes(&https, &format!("https://{up_host}"), "lib/app", "v1").await;
    for prefix in ["dns", "hosts"] {
        let through = pull_bytes(&http, &format!("http://{host}"), &format!("{prefix}/lib/app"), "v1").await;
        assert_eq!(sha256(&through[0]), pushed, "{prefix}: {}", mirror.logs());
        assert!(through == upstream, "{prefix}: different bytes through the mirror");
    }
}

/// `berth healthcheck`, the image's probe, outside a container: from a TLS configuration it
/// probes over HTTPS without the CA and exits 0; with the server gone it exits 1 (Docker
/// reserves 2), saying why.
#[tokio::test]
async fn berth_healthcheck_follows_the_configuration_to_https_and_exits_1_when_down() {
    let ca = Ca::new("Berth healthcheck CA");
    let setup = crate::tls::Setup::new(&ca);
    let config = setup.config("", "");
    let mut berth = crate::tls::start_with(&config);
    let probe = |berth: &crate::harness::Berth, addr: &str| {
        berth
            .cli()
            .env("BERTH_HTTP_ADDR", addr)
            .args(["healthcheck", "--config", config.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let addr = berth.host.clone();
    let out = probe(&berth, &addr);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(said.trim(), format!("healthy: https://{addr}/healthz"));
    berth.stop();
    let out = probe(&berth, &addr);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("berth healthcheck:"));
}

/// contrib/docker-compose.yml is a valid Compose file, as `docker-compose` reads it (the
/// machine's Compose: Debian's docker-compose, which comes with the Docker engine here), and
/// runs the image with TLS, htpasswd and a named volume.
#[test]
fn the_compose_file_parses() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/docker-compose.yml");
    let out = Command::new("docker-compose")
        .args(["-f", file, "config"])
        .output()
        .expect("docker-compose must be installed (Debian package docker-compose)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for needle in [
        "image: berth:dev",
        "BERTH_HTTP_TLS_CERTIFICATE",
        "BERTH_AUTH_HTPASSWD_PATH",
        "/var/lib/berth",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
}
