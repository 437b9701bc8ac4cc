//! Subcommands beyond `serve`.

pub mod audit;
pub mod convert;
pub mod du;
pub mod fsck;
pub mod gc;
pub mod healthcheck;
pub mod import;
mod remote;
pub mod retention;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use berth::fsck::Progress;

/// Where an offline job finds the store: the configuration file and `--root`.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// YAML config file (its storage settings, and the job's own section, are used).
    #[arg(long, short, env = berth::config::ENV_CONFIG_FILE, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Storage root (overrides storage.root).
    #[arg(long, value_name = "DIR")]
    root: Option<std::path::PathBuf>,
}

impl StoreArgs {
    /// The configuration: the file, then the environment, then `--root`.
    pub fn load(&self) -> anyhow::Result<berth::config::Config> {
        let flags = berth::config::Flags {
            addr: None,
            root: self.root.clone(),
        };
        Ok(berth::config::load(self.config.as_deref(), std::env::vars(), flags)?)
    }
}

/// The arguments of a maintenance job (`gc`, `retention`) that runs offline or through a server.
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Report what would be removed, remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Run through the server at this URL (for example http://127.0.0.1:5000) instead of
    /// opening the store directly; needed while a server holds the store. With authentication
    /// on, as the admin user whose name and password are in BERTH_ADMIN_USER and
    /// BERTH_ADMIN_PASSWORD.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Open the store for the offline job `job`: refused when the root holds no store, and when a
/// server holds it (saying how to run the job through that server).
pub async fn open_offline(config: &berth::config::Config, job: &str) -> anyhow::Result<Arc<berth::registry::Registry>> {
    require_store(config, job)?;
    match berth::server::open_registry(config).await {
        Ok(registry) => Ok(registry),
        Err(berth::server::ServeError::Meta(berth::meta::MetaError::Locked(path))) => {
            Err(held_by_server(&path, job, config))
        }
        Err(e) => Err(e.into()),
    }
}

/// Print a job's report: as JSON with `json`, else with `print`.
pub fn emit<R: serde::Serialize>(report: &R, json: bool, print: impl Fn(&R)) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print(report);
    }
    Ok(())
}

/// Refuse to run an offline job on a root that holds no store: a mistyped `--root` would
/// otherwise create an empty store there and report it clean. With `metadata.postgres` there
/// is no offline: the store is the one the running nodes share, so the job goes through one of
/// them (`--url`), which keeps the cluster's locks and runs one job at a time.
pub fn require_store(config: &berth::config::Config, job: &str) -> anyhow::Result<()> {
    let root = &config.storage.root;
    if config.metadata.is_some() {
        anyhow::bail!(
            "the metadata is in PostgreSQL (metadata.postgres), shared with the running nodes: \
             run this through one of them, `berth {job} --url http://NODE:PORT`"
        );
    }
    if root.join(berth::meta::DB_FILE).exists() {
        Ok(())
    } else {
        anyhow::bail!(
            "no store at {} (no {} there): check --root or storage.root",
            root.display(),
            berth::meta::DB_FILE
        )
    }
}

/// The store is held by a running server: say how to run `job` through it, at the address the
/// configuration gives (the server's own, when it was started with the same configuration).
pub fn held_by_server(path: &str, job: &str, config: &berth::config::Config) -> anyhow::Error {
    let url = local_url(config);
    anyhow::anyhow!(
        "{path} is held by a running berth server; run {job} through it with \
         `berth {job} --url {url}` (the address in this configuration; use the server's own if it differs)"
    )
}

/// The URL of the server this configuration starts, from the same machine: its scheme, and
/// its address with an unspecified IP (`0.0.0.0`, `[::]`) as 127.0.0.1, which it also listens on.
pub fn local_url(config: &berth::config::Config) -> String {
    let scheme = if config.http.tls.is_some() { "https" } else { "http" };
    format!("{scheme}://{}", loopback(config.http.addr))
}

/// `addr`, with an unspecified IP replaced by 127.0.0.1.
pub fn loopback(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

/// A progress bar drawn on a thread from a job's counters until `finish`.
pub struct Bar {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Bar {
    /// Stop drawing and clear the bar.
    pub fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Draw a progress bar (bytes, rate, ETA, files) labelled `job` from the counters.
pub fn spawn_bar(job: &str, progress: Arc<Progress>) -> Bar {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&stop);
    let template =
        format!("{job} {{bar:30}} {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} eta {{eta}} ({{msg}} files)");
    let thread = std::thread::spawn(move || {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(indicatif::ProgressStyle::with_template(&template).expect("valid template"));
        while !done.load(Ordering::Relaxed) {
            bar.set_length(progress.bytes_total.load(Ordering::Relaxed));
            bar.set_position(progress.bytes_done.load(Ordering::Relaxed));
            let files = (
                progress.files_done.load(Ordering::Relaxed),
                progress.files_total.load(Ordering::Relaxed),
            );
            bar.set_message(format!("{}/{}", files.0, files.1));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bar.finish_and_clear();
    });
    Bar { stop, thread }
}

/// `1 blob`, `2 blobs`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// A duration for people: `850 ms`, `7.0 s`, `2 min 5 s`.
pub fn human_ms(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{}.{} s", ms / 1000, ms % 1000 / 100),
        _ => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn people_read_durations_and_counts() {
        assert_eq!(super::human_ms(850), "850 ms");
        assert_eq!(super::human_ms(7027), "7.0 s");
        assert_eq!(super::human_ms(125_400), "2 min 5 s");
        assert_eq!(super::count(1, "tag", "tags"), "1 tag");
        assert_eq!(super::count(0, "tag", "tags"), "0 tags");
    }
}
