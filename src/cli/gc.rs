//! `berth gc`: garbage collection offline on a store no server holds, or through a running
//! server's admin API with `--url`.

use std::io::IsTerminal;
use std::sync::Arc;

use berth::config::Config;
use berth::gc::{self, Phase, Report};

pub type GcArgs = super::JobArgs;

pub fn run(args: &GcArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = if let Some(url) = &args.url {
        runtime.block_on(remote(url, args.dry_run))?
    } else {
        let config = args.store.load()?;
        runtime.block_on(offline(&config, args.dry_run))?
    };
    super::emit(&report, args.json, print_report)
}

async fn offline(config: &Config, dry_run: bool) -> anyhow::Result<Report> {
    let registry = super::open_offline(config, "gc").await?;
    let opts = gc::Options::from_config(&config.gc)
        .with_audit_max_age(config.audit.max_age)
        .with_dry_run(dry_run);
    let show = std::io::stderr().is_terminal();
    let progress = move |phase: Phase| {
        if show {
            eprintln!("gc: {}", phase_name(phase));
        }
    };
    Ok(gc::run(&Arc::clone(&registry), &opts, &progress).await?)
}

async fn remote(url: &str, dry_run: bool) -> anyhow::Result<Report> {
    super::remote::run_job(url, "gc", &format!("dry_run={dry_run}")).await
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Starting => "starting",
        Phase::Retention => "applying the retention rules",
        Phase::Evict => "evicting from pull-through caches over max_bytes",
        Phase::Mark => "marking what is reachable",
        Phase::SweepManifests => "sweeping manifests",
        Phase::SweepLinks => "sweeping repository links",
        Phase::SweepBlobs => "sweeping blobs",
        Phase::SweepRepositories => "removing empty repositories",
        Phase::Paused => "paused",
        Phase::PurgeUploads => "purging stale uploads",
        Phase::Done => "done",
    }
}

fn print_report(r: &Report) {
    let verb = if r.dry_run { "would be " } else { "" };
    println!(
        "garbage collection {} in {}",
        if r.dry_run { "dry run finished" } else { "finished" },
        super::human_ms(r.duration_ms)
    );
    let line = |what: String, value: String| println!("  {what:<36} {value}");
    line(format!("manifests {verb}deleted"), r.manifests_deleted.to_string());
    line(format!("links {verb}removed"), r.links_removed.to_string());
    line(
        format!("blobs {verb}deleted"),
        format!("{} ({} {verb}freed)", r.blobs_deleted, human_bytes(r.bytes_freed)),
    );
    line(format!("uploads {verb}purged"), r.uploads_purged.to_string());
    if r.staging_orphans_removed > 0 {
        line(
            format!("upload leftovers {verb}removed"),
            r.staging_orphans_removed.to_string(),
        );
    }
    line(
        format!("empty repositories {verb}removed"),
        r.repositories_removed.to_string(),
    );
    if r.evicted.count > 0 {
        line(
            format!("cached manifests {verb}evicted"),
            format!("{} ({})", r.evicted.count, human_bytes(r.evicted.bytes)),
        );
    }
    line(
        "kept by the grace period".to_owned(),
        format!(
            "{} ({})",
            super::count(r.kept_by_grace.count, "blob", "blobs"),
            human_bytes(r.kept_by_grace.bytes)
        ),
    );
}

fn human_bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}
