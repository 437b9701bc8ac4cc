//! The `berth` command line: a thin layer over the library.

// Doc comments here are clap's help text, read in a terminal, where backticks would show.
#![allow(clippy::doc_markdown)]

use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

use anyhow::Context;
use berth::config::{self, Config, Flags, LogFormat};
use clap::{Parser, Subcommand};

/// Berth: a self-hosted OCI / Docker container registry.
///
/// Metadata lives in one redb file and blobs in content-addressed files, both under the
/// storage root (default ./data). `berth serve` with no configuration serves ./data on
/// 127.0.0.1:5000, ready for `docker push 127.0.0.1:5000/IMAGE`. Coming from CNCF
/// Distribution (registry:2)? `berth import distribution /var/lib/registry --root DIR` adopts
/// its store.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the registry.
    ///
    /// Settings come from the config file, then BERTH_* environment variables (for example
    /// BERTH_HTTP_ADDR, BERTH_STORAGE_ROOT), then these flags; each overrides the one before.
    /// See config.example.yml for every key and its default.
    Serve(ServeArgs),
    /// Collect garbage: untagged unreachable manifests, unused blobs and stale uploads.
    ///
    /// Runs directly on the store when no server holds it; while a server runs, pass --url
    /// to run it through that server's admin API (or POST /admin/gc). Prints a report.
    Gc(cli::gc::GcArgs),
    /// Apply the retention rules (retention: in the config file) now: remove the tags and
    /// untagged manifests they doom, listing each with the reason (--dry-run: only list).
    ///
    /// Garbage collection applies them first on every run too. Runs directly on the store
    /// when no server holds it; while a server runs, pass --url (or POST /admin/retention).
    Retention(cli::retention::RetentionArgs),
    /// Verify the store: every blob against its digest, every manifest's references, the
    /// reference counts, indexes, orphans and upload sessions.
    ///
    /// Runs directly on the store when no server holds it (and then also runs redb's own
    /// integrity check); while a server runs, pass --url. With --repair it fixes what it can
    /// (corrupt and stray files go to <root>/quarantine, never deleted) and lists every action.
    /// Exit status: 0 clean, 1 problems found (or left after --repair), 2 fsck could not run.
    Fsck(cli::fsck::FsckArgs),
    /// Import another registry's store, offline: `berth import distribution DIR` adopts a
    /// CNCF Distribution (registry:2) filesystem store, verifying every blob.
    #[command(subcommand)]
    Import(cli::import::ImportCommand),
    /// Storage usage per repository (bytes, bytes only it uses, blobs, manifests, tags) and
    /// in total, from the metadata: instant, it does not walk the disk.
    Du(cli::du::DuArgs),
    /// The audit log, newest first: pushes, deletes, mounts, logins, admin runs and reloads,
    /// with their user, source address and result. Offline on a store no server holds, or
    /// through a running server with --url. A table, or --json.
    Audit(cli::audit::AuditArgs),
    /// Probe a running server's /healthz: exit 0 when it answers 200, 1 otherwise (for a
    /// container's HEALTHCHECK).
    ///
    /// Without --url the address and scheme come from the configuration serve reads (the
    /// file, REGISTRY_* and BERTH_* variables): http.debug_addr when set, else http.addr
    /// (HTTPS when TLS is on; 0.0.0.0 probed as 127.0.0.1). The server's certificate is not
    /// verified: the probe checks that the server answers, not who it is, and sends no
    /// credentials.
    Healthcheck(cli::healthcheck::HealthcheckArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load the configuration (file, BERTH_* variables) and print the effective settings,
    /// every key with its value, or the exact error naming the bad key. Exit status 0 or 2.
    Check {
        /// YAML config file.
        #[arg(long, short, env = config::ENV_CONFIG_FILE, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Turn a CNCF Distribution (registry:2) config.yml into a Berth configuration: addr,
    /// TLS, htpasswd and token auth, storage root, S3, upload purging, a proxy mirror. Prints
    /// it (or writes --output), then lists every setting it could not translate and why.
    /// Exit status 0, 1 if the result does not load yet (the reason is printed), 2 on error.
    Convert(cli::convert::ConvertArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// YAML config file (keys and defaults: config.example.yml).
    #[arg(long, short, env = config::ENV_CONFIG_FILE, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address, IP:PORT (overrides http.addr; default 127.0.0.1:5000).
    #[arg(long, value_name = "ADDR")]
    addr: Option<String>,
    /// Storage root holding meta.redb, blobs/ and uploads/ (overrides storage.root; default ./data).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS implementation for the whole process: rustls on ring (the HTTPS listener, and
    // `--url https://...` clients).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Serve(args) => serve(args).map(|()| 0),
        Command::Gc(args) => cli::gc::run(&args).map(|()| 0),
        Command::Retention(args) => cli::retention::run(&args).map(|()| 0),
        Command::Fsck(args) => cli::fsck::run(&args),
        Command::Du(args) => cli::du::run(&args).map(|()| 0),
        Command::Audit(args) => cli::audit::run(&args).map(|()| 0),
        Command::Import(command) => cli::import::run(command),
        Command::Healthcheck(args) => Ok(cli::healthcheck::run(&args)),
        Command::Config(ConfigCommand::Check { config }) => config_check(config.as_deref()).map(|()| 0),
        Command::Config(ConfigCommand::Convert(args)) => cli::convert::run(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Before any thread starts (see the module).
    berth::malloc::tune_malloc();
    let flags = Flags {
        addr: args.addr,
        root: args.root,
    };
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = config::load(args.config.as_deref(), env.iter().cloned(), flags.clone())?;
    init_logging(&config);
    for (var, what) in config::distribution_env(&env)? {
        tracing::info!(var, "CNCF Distribution variable: {what}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let file = args.config.clone();
    let reload: berth::server::Reload =
        Box::new(move || config::load(file.as_deref(), std::env::vars(), flags.clone()));
    runtime.block_on(berth::server::serve(config, Some(reload)))?;
    Ok(())
}

fn config_check(file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let config = config::load(file, std::env::vars(), Flags::default())?;
    print!("{}", config.to_yaml());
    Ok(())
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log.level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
