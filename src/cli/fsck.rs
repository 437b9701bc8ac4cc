//! `berth fsck`: verify (and with `--repair`, repair) a store, offline on a store no server
//! holds, or through a running server's admin API with `--url`.
//!
//! Exit codes: 0 clean (or everything repaired), 1 problems found (or left after repair),
//! 2 fsck itself could not run.

use std::io::IsTerminal;
use std::sync::Arc;

use berth::config;
use berth::fsck::{self, Progress, Report};
use berth::meta::{self, MetaError};
use berth::server::{ServeError, open_registry_as_is};

#[derive(Debug, clap::Args)]
pub struct FsckArgs {
    #[command(flatten)]
    store: super::StoreArgs,
    /// Repair what can be repaired; every action is listed in the report.
    #[arg(long)]
    repair: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Check blob sizes only; do not hash their contents.
    #[arg(long)]
    quick: bool,
    /// Run through the server at this URL (for example http://127.0.0.1:5000) instead of
    /// opening the store directly; needed while a server holds the store. With authentication
    /// on, as the admin user whose name and password are in BERTH_ADMIN_USER and
    /// BERTH_ADMIN_PASSWORD.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
}

/// Run fsck; returns the process exit code (0 clean, 1 problems).
pub fn run(args: &FsckArgs) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let opts = fsck::Options {
        quick: args.quick,
        repair: args.repair,
    };
    let report = if let Some(url) = &args.url {
        runtime.block_on(remote(url, opts))?
    } else {
        let config = args.store.load()?;
        runtime.block_on(offline(&config, opts))?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(u8::from(!report.clean))
}

async fn offline(config: &config::Config, opts: fsck::Options) -> anyhow::Result<Report> {
    let root = config.storage.root.clone();
    super::require_store(config, "fsck")?;
    let database_ok = match meta::check_integrity(&root) {
        Ok(ok) => ok,
        Err(MetaError::Locked(path)) => return Err(super::held_by_server(&path, "fsck", config)),
        Err(e) => return Err(e.into()),
    };
    let registry = match open_registry_as_is(config).await {
        Ok(registry) => registry,
        Err(ServeError::Meta(MetaError::Locked(path))) => return Err(super::held_by_server(&path, "fsck", config)),
        Err(e) => return Err(e.into()),
    };
    let progress = Arc::new(Progress::default());
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| super::spawn_bar("fsck", Arc::clone(&progress)));
    let report = fsck::run(&registry, opts, progress, database_ok).await;
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok(report?)
}

async fn remote(url: &str, opts: fsck::Options) -> anyhow::Result<Report> {
    super::remote::run_job(url, "fsck", &format!("repair={}&quick={}", opts.repair, opts.quick)).await
}

fn print_report(r: &Report) {
    let c = &r.checked;
    println!(
        "fsck checked {}, {}, {}, {} ({}; {} hashed{}), {} in {}",
        super::count(c.repositories, "repository", "repositories"),
        super::count(c.manifests, "manifest", "manifests"),
        super::count(c.tags, "tag", "tags"),
        super::count(c.blobs, "blob", "blobs"),
        bytes(c.blob_bytes),
        bytes(c.bytes_hashed),
        if r.quick { ", quick: sizes only" } else { "" },
        super::count(c.uploads, "upload", "uploads"),
        super::human_ms(r.duration_ms)
    );
    if c.sparse_references > 0 {
        println!(
            "sparse manifests: {} references to blobs or manifests not pushed yet (by design, not damage)",
            c.sparse_references
        );
    }
    match r.database_ok {
        Some(true) => println!("database: redb integrity check passed"),
        Some(false) => println!("database: redb integrity check FAILED"),
        None => println!("database: not checked (online)"),
    }
    println!("problems found: {}", r.problems.len());
    for (kind, n) in &r.counts {
        println!(
            "  {:<24} {n}",
            serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        );
    }
    for p in &r.problems {
        let kind = serde_json::to_value(p.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!("  - {kind} {}: {}", p.subject, p.detail);
    }
    if !r.damaged_images.is_empty() {
        println!("damaged images (push them again, or delete them):");
        for image in &r.damaged_images {
            println!("  {image}");
        }
    }
    if r.repair {
        println!("repairs made: {}", r.repairs.len());
        for line in &r.repairs {
            println!("  {line}");
        }
    }
    if r.clean {
        println!("result: clean");
    } else {
        println!(
            "result: {} problem(s) {}",
            r.unrepaired,
            if r.repair { "could not be repaired" } else { "found" }
        );
    }
}

fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}
