//! HTTPS with rustls: certificates made at test time, clients that trust them (reqwest,
//! skopeo, the Docker engine), plain HTTP on the TLS port, bad files at start-up, rotation
//! without a restart (file change and SIGHUP), and mutual TLS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::clients::{Layout, OCI_MANIFEST, docker_round_trip, skopeo};
use crate::harness::{Berth, random_bytes};
use crate::pki::{Ca, https_client, write_atomically};

/// A temporary directory holding a config file and the TLS files it names.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Setup {
    pub fn new(ca: &Ca) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = ca.write_server(dir.path(), "berth-test");
        Setup { dir, cert, key }
    }

    /// Write `config.yml` with the TLS section (plus `extra_http` under http, and `rest` after).
    pub fn config(&self, extra_http: &str, rest: &str) -> PathBuf {
        let path = self.dir.path().join("config.yml");
        let yaml = format!(
            "http:\n  tls:\n    certificate: {}\n    key: {}\n{extra_http}{rest}",
            self.cert.display(),
            self.key.display()
        );
        std::fs::write(&path, yaml).unwrap();
        path
    }

    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

pub fn start_with(config: &Path) -> Berth {
    Berth::builder().arg("--config").arg(config.to_str().unwrap()).start()
}

async fn base_ok(client: &reqwest::Client, berth: &Berth) -> Result<(), String> {
    let resp = client
        .get(berth.url("/v2/"))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    if resp.status() == 200 {
        Ok(())
    } else {
        Err(format!("status {}", resp.status()))
    }
}

#[tokio::test]
async fn https_with_a_trusted_certificate_and_plain_http_refused_cleanly() {
    let ca = Ca::new("Berth test CA");
    let setup = Setup::new(&ca);
    let berth = start_with(&setup.config("", ""));
    assert!(berth.base.starts_with("https://"), "{}", berth.base);
    for versions in [&[&rustls::version::TLS13][..], &[&rustls::version::TLS12][..]] {
        let c = https_client(&ca.pem, None, versions);
        let resp = c.get(berth.url("/v2/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["docker-distribution-api-version"], "registry/2.0");
    }
    // A client that does not trust the CA refuses the server.
    let other = Ca::new("Another CA");
    assert!(base_ok(&https_client(&other.pem, None, &[]), &berth).await.is_err());
    // The server says so in its log at info level (rate-limited), not only at debug.
    let reported = || {
        berth
            .log()
            .lines()
            .any(|l| l.contains(" INFO ") && l.contains("TLS handshakes failed"))
    };
    for _ in 0..500 {
        if reported() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(reported(), "no info line for the failed handshake:\n{}", berth.log());
    // Plain HTTP to the TLS port: a clear 400, not a hang or garbage.
    let plain = berth.url("/v2/").replace("https://", "http://");
    let resp = crate::harness::client().get(plain).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.text().await.unwrap(),
        "Client sent an HTTP request to an HTTPS server.\n"
    );
    // And the port still serves TLS afterwards.
    base_ok(&https_client(&ca.pem, None, &[]), &berth).await.unwrap();
}

/// `berth serve` with `config`: it must fail, and its error must name `needle`.
fn fails_naming(config: &Path, root: &Path, needle: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--addr", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--root")
        .arg(root)
        .env_remove("BERTH_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with a bad TLS file: {stderr}");
    assert!(stderr.contains(needle), "error does not name {needle}: {stderr}");
}

#[test]
fn bad_or_missing_tls_files_stop_startup_with_an_error_naming_the_file() {
    let ca = Ca::new("Berth test CA");
    let setup = Setup::new(&ca);
    let root = setup.dir.path().join("data");
    let good_cert = std::fs::read_to_string(&setup.cert).unwrap();
    // Missing key file.
    std::fs::remove_file(&setup.key).unwrap();
    let config = setup.config("", "");
    fails_naming(&config, &root, setup.key.to_str().unwrap());
    // A key that is not PEM.
    std::fs::write(&setup.key, "not a key\n").unwrap();
    fails_naming(&config, &root, setup.key.to_str().unwrap());
    // A key that does not belong to the certificate.
    let (_, other_key) = ca.issue("someone-else");
    std::fs::write(&setup.key, other_key).unwrap();
    fails_naming(&config, &root, setup.key.to_str().unwrap());
    // A certificate file with no certificate in it.
    std::fs::write(&setup.cert, "").unwrap();
    fails_naming(&config, &root, setup.cert.to_str().unwrap());
    std::fs::write(&setup.cert, good_cert).unwrap();
    // A client CA that is missing.
    let config = setup.config("    client_ca: /nonexistent/ca.pem\n", "");
    fails_naming(&config, &root, "/nonexistent/ca.pem");
}

async fn eventually_ok(client: &reqwest::Client, berth: &Berth, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match base_ok(client, berth).await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("not serving the new certificate: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test]
async fn certificates_reload_when_their_files_change_and_on_sighup() {
    let (old_ca, new_ca) = (Ca::new("Old CA"), Ca::new("New CA"));
    let trusts_old = https_client(&old_ca.pem, None, &[]);
    let trusts_new = https_client(&new_ca.pem, None, &[]);

    // 1. Watched: the files change, the server notices within its reload interval.
    let setup = Setup::new(&old_ca);
    let berth = start_with(&setup.config("    reload_interval: 200ms\n", ""));
    base_ok(&trusts_old, &berth).await.unwrap();
    assert!(base_ok(&trusts_new, &berth).await.is_err());
    // A broken rotation (a key that does not fit) keeps the old certificate in service.
    let (_, wrong_key) = new_ca.issue("wrong");
    write_atomically(&setup.key, &wrong_key);
    tokio::time::sleep(Duration::from_millis(800)).await;
    base_ok(&trusts_old, &berth).await.unwrap();
    assert!(berth.log().contains("TLS reload failed"), "{}", berth.log());
    // The real rotation.
    new_ca.write_server(setup.dir.path(), "berth-test");
    eventually_ok(&trusts_new, &berth, Duration::from_secs(10)).await;
    assert!(base_ok(&trusts_old, &berth).await.is_err());

    // 2. Not watched (an hour between checks): SIGHUP reloads at once.
    let setup = Setup::new(&old_ca);
    let berth = start_with(&setup.config("    reload_interval: 1h\n", ""));
    new_ca.write_server(setup.dir.path(), "berth-test");
    tokio::time::sleep(Duration::from_millis(500)).await;
    base_ok(&trusts_old, &berth).await.unwrap();
    berth.signal("HUP");
    eventually_ok(&trusts_new, &berth, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_and_its_subject_is_the_user() {
    let ca = Ca::new("Berth test CA");
    let clients_ca = Ca::new("Clients CA");
    let setup = Setup::new(&ca);
    let ca_path = setup.write_file("clients-ca.pem", &clients_ca.pem);
    let rules =
        "auth:\n  rules:\n    - repositories: [\"alice/**\"]\n      users: [alice]\n      actions: [pull, push]\n";
    let berth = start_with(&setup.config(&format!("    client_ca: {}\n", ca_path.display()), rules));
    // No certificate: the handshake fails.
    assert!(base_ok(&https_client(&ca.pem, None, &[]), &berth).await.is_err());
    // A certificate from another CA: refused too.
    let (cert, key) = ca.issue("alice");
    assert!(
        base_ok(&https_client(&ca.pem, Some((&cert, &key)), &[]), &berth)
            .await
            .is_err()
    );
    // alice, by her certificate, may push to alice/** and nowhere else.
    let (cert, key) = clients_ca.issue("alice");
    let alice = https_client(&ca.pem, Some((&cert, &key)), &[]);
    base_ok(&alice, &berth).await.unwrap();
    let blob = random_bytes(1000, 7);
    let digest = crate::harness::sha256(&blob);
    let push = |repo: &str| {
        alice
            .post(berth.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .body(blob.clone())
            .send()
    };
    assert_eq!(push("alice/app").await.unwrap().status(), 201);
    let resp = push("bob/app").await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(crate::harness::error_codes(resp).await, ["DENIED"]);
    let log = berth.log();
    assert!(
        log.contains("user=\"alice\"") || log.contains("user=alice"),
        "the access log names the user: {log}"
    );
}

/// The Docker engine trusts a registry's CA from /etc/docker/certs.d/<host>/ca.crt; removed
/// again when dropped.
pub struct DockerTrust(PathBuf);

impl DockerTrust {
    pub fn new(host: &str, ca_pem: &str) -> DockerTrust {
        let dir = Path::new("/etc/docker/certs.d").join(host);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot write {} for the Docker engine: {e}", dir.display()));
        std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
        DockerTrust(dir)
    }
}

impl Drop for DockerTrust {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn skopeo_and_docker_push_and_pull_over_tls() {
    let ca = Ca::new("Berth test CA");
    let setup = Setup::new(&ca);
    let berth = start_with(&setup.config("", ""));
    // skopeo, trusting the CA through --cert-dir.
    let certs = tempfile::tempdir().unwrap();
    std::fs::write(certs.path().join("ca.crt"), &ca.pem).unwrap();
    let certs = certs.path().to_str().unwrap();
    let src = tempfile::tempdir().unwrap();
    let layout = Layout { dir: src.path() };
    let manifest = layout.image("amd64", &[random_bytes(100_000, 1), random_bytes(5_000, 2)]);
    layout.index(OCI_MANIFEST, &manifest, "v1");
    let target = format!("docker://{}/tls/skopeo:v1", berth.host);
    let src_ref = format!("oci:{}:v1", src.path().display());
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-cert-dir",
        certs,
        &src_ref,
        &target,
    ]);
    let raw = skopeo(&["inspect", "--raw", "--cert-dir", certs, &target]);
    assert_eq!(raw.stdout, manifest);
    // Without the CA, skopeo refuses the server.
    let refused = Command::new("skopeo")
        .args(["inspect", "--raw", &target])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    // The Docker engine, trusting the CA through certs.d.
    let _trust = DockerTrust::new(&berth.host, &ca.pem);
    docker_round_trip(&format!("{}/tls/docker:v1", berth.host), &[]);
    assert!(berth.log().contains("PUT"), "docker pushed over TLS");
}

/// A `docker run ... registry:2` guide's variables, as they are: Berth honours them (TLS,
/// htpasswd and its realm), says so in its log, and serves HTTPS with Basic auth.
#[tokio::test]
async fn distributions_environment_variables_from_a_guide_work_as_they_are() {
    let ca = Ca::new("Berth test CA");
    let setup = Setup::new(&ca);
    let hash = bcrypt::hash_with_result("guide-pw", 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    let htpasswd = setup.write_file("htpasswd", &format!("guide:{hash}\n"));
    let berth = Berth::builder()
        .env("REGISTRY_AUTH", "htpasswd")
        .env("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm")
        .env("REGISTRY_AUTH_HTPASSWD_PATH", htpasswd.to_str().unwrap())
        .env("REGISTRY_HTTP_TLS_CERTIFICATE", setup.cert.to_str().unwrap())
        .env("REGISTRY_HTTP_TLS_KEY", setup.key.to_str().unwrap())
        .start();
    assert!(berth.base.starts_with("https://"), "{}", berth.base);
    let c = https_client(&ca.pem, None, &[]);
    let resp = c.get(berth.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"Registry Realm\"");
    let resp = c
        .get(berth.url("/v2/"))
        .basic_auth("guide", Some("guide-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let log = berth.log();
    for var in [
        "REGISTRY_HTTP_TLS_CERTIFICATE",
        "REGISTRY_AUTH_HTPASSWD_PATH",
        "REGISTRY_AUTH\"",
    ] {
        let var = var.trim_end_matches('"');
        assert!(
            log.lines()
                .any(|l| l.contains("CNCF Distribution variable") && l.contains(var)),
            "{var} not logged:\n{log}"
        );
    }
}

/// `berth du --url` (like gc and fsck) against a server whose certificate the machine does not
/// trust: the error says how to trust a private CA.
#[tokio::test]
async fn an_untrusted_server_certificate_tells_the_cli_user_about_ssl_cert_file() {
    let ca = Ca::new("Berth test CA");
    let setup = Setup::new(&ca);
    let berth = start_with(&setup.config("", ""));
    let out = berth
        .cli()
        .env_remove("SSL_CERT_FILE")
        .args(["du", "--url", &berth.base])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SSL_CERT_FILE") && stderr.contains("private CA"),
        "{stderr}"
    );
    // And that advice works.
    let ca_file = setup.write_file("ca.pem", &ca.pem);
    let out = berth
        .cli()
        .env("SSL_CERT_FILE", &ca_file)
        .args(["du", "--json", "--url", &berth.base])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
