//! The command line: `--version`, helpful `--help`, configuration errors that name the bad key
//! or variable, the precedence file < `BERTH_*` < flags, and the no-configuration default of
//! serving `./data` on 127.0.0.1:5000.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn berth() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BERTH_")) {
        cmd.env_remove(k);
    }
    cmd
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn version_and_help() {
    let out = berth().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("berth {}", env!("CARGO_PKG_VERSION"))
    );
    let help = text(&berth().arg("--help").output().unwrap());
    for word in ["serve", "gc", "fsck", "du", "config"] {
        assert!(help.contains(word), "--help mentions {word}:\n{help}");
    }
    let serve = text(&berth().args(["serve", "--help"]).output().unwrap());
    for word in [
        "--config",
        "--addr",
        "--root",
        "BERTH_HTTP_ADDR",
        "config.example.yml",
        "127.0.0.1:5000",
    ] {
        assert!(serve.contains(word), "serve --help mentions {word}:\n{serve}");
    }
    // The jobs that can run through a server say how they authenticate there.
    for job in ["gc", "fsck", "du"] {
        let help = text(&berth().args([job, "--help"]).output().unwrap());
        for word in ["--url", "BERTH_ADMIN_USER", "BERTH_ADMIN_PASSWORD"] {
            assert!(help.contains(word), "{job} --help mentions {word}:\n{help}");
        }
    }
}

fn serve_with(config: &str, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.yml");
    std::fs::write(&file, config).unwrap();
    let mut cmd = berth();
    cmd.arg("serve")
        .arg("--config")
        .arg(&file)
        .arg("--root")
        .arg(dir.path().join("data"))
        .args(args);
    cmd.envs(env.iter().copied()).output().unwrap()
}

#[test]
fn configuration_errors_name_the_key() {
    let out = serve_with("http:\n  adr: 127.0.0.1:1\n", &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("adr"), "{}", text(&out));
    let out = serve_with("http:\n  addr: nope\n", &[], &[]);
    assert!(text(&out).contains("http.addr"), "{}", text(&out));
    let out = serve_with("", &[("BERTH_HTTP_ADR", "x")], &[]);
    assert!(text(&out).contains("BERTH_HTTP_ADR"), "{}", text(&out));
    let out = serve_with("gc:\n  grace_period: forever\n", &[], &[]);
    assert!(text(&out).contains("grace_period"), "{}", text(&out));
}

/// Start `berth serve` and return the address it announces, then stop it.
fn announced(config: &str, env: &[(&str, &str)], args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.yml");
    std::fs::write(&file, config).unwrap();
    let mut cmd = berth();
    cmd.arg("serve")
        .arg("--config")
        .arg(&file)
        .arg("--root")
        .arg(dir.path().join("data"))
        .args(args);
    let mut child = cmd
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    line.trim().rsplit("http://").next().unwrap().to_owned()
}

#[test]
fn flags_override_the_environment_which_overrides_the_file() {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string()
    };
    let (file_addr, env_addr, flag_addr) = (free(), free(), free());
    let config = format!("http:\n  addr: {file_addr}\n");
    assert_eq!(announced(&config, &[], &[]), file_addr);
    assert_eq!(announced(&config, &[("BERTH_HTTP_ADDR", &env_addr)], &[]), env_addr);
    assert_eq!(
        announced(&config, &[("BERTH_HTTP_ADDR", &env_addr)], &["--addr", &flag_addr]),
        flag_addr
    );
}

#[test]
fn with_no_configuration_it_serves_data_on_port_5000() {
    let cwd = tempfile::tempdir().unwrap();
    let mut child = berth()
        .arg("serve")
        .current_dir(cwd.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.is_empty() {
        // Port 5000 is taken on this machine: the error must say which address failed.
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("127.0.0.1:5000"),
            "a bind failure names the address: {err}"
        );
        assert_eq!(out.status.code(), Some(2));
        return;
    }
    assert_eq!(line.trim(), "berth listening on http://127.0.0.1:5000");
    assert!(cwd.path().join("data/meta.redb").exists(), "./data was created");
    assert!(cwd.path().join("data/blobs").is_dir());
    let _ = child.kill();
    let _ = child.wait();
}
