//! The ORAS project's Python client (`PyPI` `oras`, pinned in `.ci/run`) as a referrers client:
//! it pushes an artifact, attaches an SBOM and a signature to it through its `Subject`, lists
//! the referrers and filters them by artifactType, with authentication off and with Basic
//! credentials. (Its token backend keeps one token for every scope, so it cannot push after a
//! pull-scoped token from any registry: a limit of the client, not exercised here.) The client
//! runs `oras_referrers.py` beside this file; a machine without it fails here, loudly.

use std::process::Command;

use serde_json::Value;

use crate::harness::Berth;

const SCRIPT: &str = include_str!("oras_referrers.py");

/// Run the script against `berth` (with credentials, if given); its JSON.
fn run(berth: &Berth, login: Option<(&str, &str)>) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("oras_referrers.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg(&berth.host).arg(dir.path());
    if let Some((user, password)) = login {
        cmd.args([user, password]);
    }
    let out = cmd.output().expect("python3 must be installed to run the ORAS client");
    assert!(
        out.status.success(),
        "the ORAS client failed (is `pip install oras` done? .ci/run does it):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"))
}

fn check(v: &Value) {
    let digests = |index: &Value| -> Vec<String> {
        let mut d: Vec<String> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap().to_owned())
            .collect();
        d.sort();
        d
    };
    let mut both = vec![
        v["sbom"].as_str().unwrap().to_owned(),
        v["sig"].as_str().unwrap().to_owned(),
    ];
    both.sort();
    assert_eq!(digests(&v["all"]), both, "{v}");
    let types: Vec<&str> = v["all"]["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["artifactType"].as_str().unwrap_or_default())
        .collect();
    assert!(types.contains(&"application/vnd.example.sbom.v1+json"), "{types:?}");
    assert_eq!(digests(&v["sigs"]), [v["sig"].as_str().unwrap()], "{v}");
    assert_eq!(v["filters"], "artifactType");
    assert_eq!(v["pulled"], serde_json::json!(["a signature\n"]));
}

#[test]
fn the_oras_python_client_attaches_lists_and_filters_referrers() {
    let berth = Berth::start();
    check(&run(&berth, None));
}

#[test]
fn the_oras_python_client_works_with_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash_with_result("oras-pw", 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, format!("oras:{hash}\n")).unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!("auth:\n  htpasswd:\n    path: {}\n", htpasswd.display()),
    )
    .unwrap();
    let berth = Berth::builder().arg("--config").arg(config.to_str().unwrap()).start();
    check(&run(&berth, Some(("oras", "oras-pw"))));
}
