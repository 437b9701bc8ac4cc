//! `berth retention`: apply the retention rules (`retention:`) now, without the rest of a
//! collection, offline on a store no server holds or through a running server with `--url`;
//! print every tag and manifest removed (or, with `--dry-run`, that would be) and why.

use std::io::IsTerminal;

use berth::config::Config;
use berth::gc::retention::{self, Report};

pub type RetentionArgs = super::JobArgs;

pub fn run(args: &RetentionArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if std::io::stderr().is_terminal() {
        eprintln!(
            "retention: applying the rules{}",
            if args.dry_run { " (dry run)" } else { "" }
        );
    }
    let report = if let Some(url) = &args.url {
        let path = format!("/admin/retention?dry_run={}", args.dry_run);
        runtime.block_on(super::remote::post_admin(url, &path))?
    } else {
        let config = args.store.load()?;
        runtime.block_on(offline(&config, args.dry_run))?
    };
    super::emit(&report, args.json, print_report)
}

async fn offline(config: &Config, dry_run: bool) -> anyhow::Result<Report> {
    if config.retention.is_empty() {
        anyhow::bail!(
            "no retention rules in the configuration (retention: in the config file; see config.example.yml)"
        );
    }
    let registry = super::open_offline(config, "retention").await?;
    Ok(retention::run(&registry, dry_run, config.gc.grace_period).await?)
}

fn print_report(r: &Report) {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    for t in &r.tags {
        println!(
            "  tag       {}:{}  ({})  {}",
            t.repository,
            t.tag.as_deref().unwrap_or_default(),
            short(&t.digest),
            t.reason
        );
    }
    for m in &r.manifests {
        println!("  manifest  {}@{}  {}", m.repository, short(&m.digest), m.reason);
    }
    println!(
        "retention {verb} {} and {}",
        super::count(r.tags.len() as u64, "tag", "tags"),
        super::count(r.manifests.len() as u64, "untagged manifest", "untagged manifests")
    );
}

/// `sha256:0123456789ab`: enough of a digest to recognise it.
fn short(digest: &str) -> &str {
    let end = digest.find(':').map_or(digest.len(), |i| (i + 13).min(digest.len()));
    &digest[..end]
}
