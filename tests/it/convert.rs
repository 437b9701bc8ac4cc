//! `berth config convert`: CNCF Distribution configurations become Berth ones that load and
//! serve. Inputs: the config.yml Debian's `docker-registry` package ships, and one written the
//! way registry guides write it (TLS, htpasswd, upload purging, notifications), which then
//! serves an HTTPS push with Basic auth as converted.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::auth::entry;
use crate::harness::{Berth, random_bytes, sha256};
use crate::pki::{Ca, https_client};

fn berth(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BERTH_")) {
        cmd.env_remove(k);
    }
    cmd.args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn debians_shipped_distribution_config_converts_to_one_that_loads() {
    let shipped = Path::new("/etc/docker/registry/config.yml");
    assert!(
        shipped.exists(),
        "{} is missing: install CNCF Distribution with `apt-get install docker-registry`",
        shipped.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let converted = dir.path().join("berth.yml");
    let out = berth(&[
        "config",
        "convert",
        shipped.to_str().unwrap(),
        "--output",
        converted.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let notes = stderr(&out);
    assert!(
        notes.contains("NOT TRANSLATED: http.headers.X-Content-Type-Options"),
        "{notes}"
    );
    assert!(notes.contains("not needed: storage.cache.blobdescriptor"), "{notes}");
    let check = berth(&["config", "check", "--config", converted.to_str().unwrap()]);
    assert!(check.status.success(), "{}", stderr(&check));
    let effective = stdout(&check);
    assert!(effective.contains("  addr: 0.0.0.0:5000\n"), "{effective}");
    assert!(effective.contains("  root: /var/lib/docker-registry\n"), "{effective}");
}

/// A guide's Distribution config with TLS and htpasswd, converted, serves HTTPS with Basic auth
/// from the same root; what Berth cannot do (notifications, a prefix) is listed, not dropped.
#[tokio::test]
async fn a_guides_distribution_config_converts_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("convert CA");
    let (cert, key) = ca.write_server(dir.path(), "registry");
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, entry("guide", "guide-pw")).unwrap();
    let root = dir.path().join("registry-data");
    let distribution = format!(
        "version: 0.1\nlog:\n  level: info\n  formatter: json\n  fields:\n    service: registry\n\
         storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: true\n      age: 72h\n      interval: 24h\n      dryrun: false\n\
         http:\n  addr: :5000\n  secret: asecretforlocaldevelopment\n  prefix: /registry/\n  tls:\n    \
         certificate: {cert}\n    key: {key}\n\
         auth:\n  htpasswd:\n    realm: Registry Realm\n    path: {htpasswd}\n\
         notifications:\n  endpoints:\n    - name: ci\n      url: https://ci.example/hook\n      timeout: 1s\n",
        root = root.display(),
        cert = cert.display(),
        key = key.display(),
        htpasswd = htpasswd.display(),
    );
    let source = dir.path().join("config.yml");
    std::fs::write(&source, distribution).unwrap();

    let json = berth(&["config", "convert", source.to_str().unwrap(), "--json"]);
    assert!(json.status.success(), "{}", stderr(&json));
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    let outcome = |key: &str| {
        v["notes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["key"].as_str().unwrap().starts_with(key))
            .unwrap_or_else(|| panic!("no note for {key}: {v}"))["outcome"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(outcome("http.tls.certificate"), "translated");
    assert_eq!(outcome("storage.maintenance.uploadpurging.age"), "translated");
    assert_eq!(outcome("http.secret"), "not_needed");
    assert_eq!(outcome("http.prefix"), "not_translated");
    assert_eq!(outcome("notifications.endpoints"), "not_translated");
    let yaml = v["config"].as_str().unwrap();
    assert!(yaml.contains("upload_max_age: \"72h\""), "{yaml}");
    assert!(yaml.contains("format: \"json\""), "{yaml}");

    let converted = dir.path().join("berth.yml");
    std::fs::write(&converted, yaml).unwrap();
    let berth = Berth::builder()
        .root(&root)
        .arg("--config")
        .arg(converted.to_str().unwrap())
        .start();
    assert!(berth.base.starts_with("https://"), "{}", berth.base);
    let c = https_client(&ca.pem, None, &[]);
    let resp = c.get(berth.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"Registry Realm\"");
    let blob = random_bytes(1000, 9);
    let digest = sha256(&blob);
    let url = berth.url(&format!("/v2/guide/app/blobs/uploads/?digest={digest}"));
    let resp = c
        .post(url)
        .basic_auth("guide", Some("guide-pw"))
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let got = c
        .get(berth.url(&format!("/v2/guide/app/blobs/{digest}")))
        .basic_auth("guide", Some("guide-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap().as_ref(), blob.as_slice());
    assert!(root.join("meta.redb").exists(), "the converted root holds the store");
}

#[test]
fn a_file_that_is_not_yaml_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("config.yml");
    std::fs::write(&bad, "http: [unclosed\n").unwrap();
    let out = berth(&["config", "convert", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("config.yml is not YAML"), "{}", stderr(&out));
}

/// A result that does not load as it is (here: client CAs without a certificate) is still
/// written, with the reason last and exit status 1.
#[test]
fn a_result_that_does_not_load_yet_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("config.yml");
    std::fs::write(&source, "http:\n  addr: :5000\n  tls:\n    clientcas: [/etc/ca.pem]\n").unwrap();
    let out = berth(&["config", "convert", source.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stdout(&out).contains("client_ca: \"/etc/ca.pem\""), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("does not load yet: config key http.tls.client_ca"),
        "{}",
        stderr(&out)
    );
}

/// A read-only Distribution mirror does not become a writable one that serves every name:
/// the mirror stays under its prefix and the note says what to do; deletes Distribution
/// refused by default are named; the written file holds secrets and is private.
#[test]
fn a_mirror_stays_read_only_and_the_written_file_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("config.yml");
    std::fs::write(
        &source,
        "version: 0.1\nproxy:\n  remoteurl: https://registry-1.docker.io\n  username: u\n  password: secret-pw\nhttp:\n  addr: :5000\n",
    )
    .unwrap();
    let out_file = dir.path().join("berth.yml");
    let out = berth(&[
        "config",
        "convert",
        source.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let yaml = std::fs::read_to_string(&out_file).unwrap();
    assert!(yaml.contains("serve_unprefixed: false"), "{yaml}");
    let notes = stderr(&out);
    assert!(notes.contains("NOT TRANSLATED: proxy (read-only mirror)"), "{notes}");
    assert!(
        notes.contains("NOT TRANSLATED: storage.delete.enabled (unset)"),
        "{notes}"
    );
    let mode = std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the converted file holds the proxy password");
}
