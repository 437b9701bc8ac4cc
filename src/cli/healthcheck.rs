//! `berth healthcheck`: GET a server's `/healthz` and exit 0 when it answers 200, 1 otherwise,
//! as a container's `HEALTHCHECK` wants (Docker reserves 2). A `FROM scratch` image has no
//! shell and no curl, so the binary probes its own server.
//!
//! Without `--url` the target comes from the configuration `serve` reads (the file, then the
//! `REGISTRY_*` and `BERTH_*` variables), so the probe follows the server wherever a guide's
//! `-e` lines move it: `http.debug_addr` when set (plain HTTP; no client certificate needed
//! there even with mutual TLS), else `http.addr`, over HTTPS when `http.tls` is on, with an
//! unspecified IP as 127.0.0.1.
//!
//! The server's certificate is not verified. The probe asks whether the server on this
//! address answers, not who it is, and sends nothing secret; a container's certificate names
//! its public host, which is rarely 127.0.0.1, and its CA is rarely in the image.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth::config::{self, Flags};

#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// YAML config file (the server's address and TLS come from it).
    #[arg(long, short, env = config::ENV_CONFIG_FILE, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Probe the server at this URL (http[s]://HOST:PORT) instead of the configuration's
    /// address. Its certificate is not verified either.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Give up after this long (connection, TLS handshake and answer together).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// The exit status: 0 healthy, 1 not (or the probe could not run).
pub fn run(args: &HealthcheckArgs) -> u8 {
    match probe(args) {
        Ok(url) => {
            println!("healthy: {url}");
            0
        }
        Err(e) => {
            eprintln!("berth healthcheck: {e:#}");
            1
        }
    }
}

/// GET `/healthz` of the target; its URL when it answered 200.
fn probe(args: &HealthcheckArgs) -> anyhow::Result<String> {
    let base = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => target(args.config.as_deref())?,
    };
    let url = format!("{base}/healthz");
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(args.timeout)
        .build()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let status = runtime.block_on(async { client.get(&url).send().await.map(|r| r.status()) })?;
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    Ok(url)
}

/// The base URL of the server the configuration starts, as seen from its own machine.
fn target(file: Option<&Path>) -> anyhow::Result<String> {
    let config = config::load(file, std::env::vars(), Flags::default())?;
    Ok(match config.http.debug_addr {
        Some(addr) => format!("http://{}", super::loopback(addr)),
        None => super::local_url(&config),
    })
}
