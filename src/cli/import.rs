//! `berth import distribution`: adopt a CNCF Distribution filesystem store, offline, into the
//! store the configuration names, creating that store when there is none (the migration case).
//!
//! Exit codes: 0 everything imported or already present, 1 something was skipped (the report
//! names each thing and why), 2 the import could not run.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use berth::config::Config;
use berth::fsck::Progress;
use berth::import::source::Source;
use berth::import::{self, Counts, ImportError, Options, Report};
use berth::meta::{self, MetaError};
use berth::registry::Registry;
use berth::server::{ServeError, open_registry, open_registry_as_is};

#[derive(Debug, clap::Subcommand)]
pub enum ImportCommand {
    /// Adopt a CNCF Distribution (registry:2) filesystem store: repositories, manifests (Docker
    /// schema2 and OCI, images, indexes and artifacts), tags, layer links and blobs.
    ///
    /// Every blob is verified against its digest; a missing or corrupt one is reported, and
    /// the images that need it are skipped, never imported broken. Blobs are hard-linked when
    /// the source is on the same file system as a filesystem store, copied otherwise. Stop
    /// the Distribution registry first. A root with no store gets a new one. Running it again
    /// imports only what is new. Exit
    /// status: 0 all imported, 1 something skipped, 2 the import could not run.
    Distribution(DistributionArgs),
}

#[derive(Debug, clap::Args)]
pub struct DistributionArgs {
    /// The Distribution storage directory: its rootdirectory (/var/lib/registry in the
    /// registry:2 image) or the docker/registry/v2 directory inside it. Only read; a blob file
    /// hard-linked into the store becomes read-only (mode 0444), as Berth's blob files are.
    #[arg(value_name = "DIR")]
    source: PathBuf,
    /// The store to import into; created if it holds none.
    #[command(flatten)]
    store: super::StoreArgs,
    /// Read and verify everything and report what would be imported; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Run the import; returns the process exit code (0 all imported, 1 something skipped).
pub fn run(command: ImportCommand) -> anyhow::Result<u8> {
    let ImportCommand::Distribution(args) = command;
    let config = args.store.load()?;
    let source = Source::open(&args.source)?;
    refuse_overlap(&config.storage.root, source.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(import(&config, source, args.dry_run))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, &config.storage.root);
    }
    Ok(u8::from(!report.complete()))
}

/// Refuse a store root that is, holds or lies inside the source tree (say, storage.root set
/// from `REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY`): the import would write into the source.
fn refuse_overlap(root: &Path, v2: &Path) -> anyhow::Result<()> {
    let root = root
        .canonicalize()
        .or_else(|_| std::path::absolute(root))
        .with_context(|| format!("resolving {}", root.display()))?;
    let distribution_root = v2.ancestors().nth(3).unwrap_or(v2);
    if root.starts_with(distribution_root) || v2.starts_with(&root) {
        anyhow::bail!(
            "the store at {} overlaps the source {}: import into another --root (or storage.root)",
            root.display(),
            distribution_root.display()
        );
    }
    Ok(())
}

async fn import(config: &Config, source: Source, dry_run: bool) -> anyhow::Result<Report> {
    let root = &config.storage.root;
    let existed = root.join(meta::DB_FILE).exists();
    let registry = open(config, dry_run, existed).await?;
    let opts = Options {
        dry_run,
        manifest_max_bytes: config.limits.manifest_max_size,
    };
    let progress = Arc::new(Progress::default());
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| super::spawn_bar("import", Arc::clone(&progress)));
    let report = import::run(registry, source, opts, progress).await;
    if let Some(bar) = bar {
        bar.finish();
    }
    let mut report = report.map_err(|e| match e {
        e @ ImportError::Store(_) => anyhow::Error::new(e).context(
            "the import stopped; what it stored so far is complete and stays, and running it again carries on",
        ),
        e @ ImportError::Source(_) => e.into(),
    })?;
    report.created_store = !existed;
    Ok(report)
}

/// The store to import into: opened (created if absent), or for a dry run opened as it is,
/// or `None` for a dry run with no store yet. A store held by a running server is refused.
async fn open(config: &Config, dry_run: bool, existed: bool) -> anyhow::Result<Option<Arc<Registry>>> {
    let opened = match (dry_run, existed) {
        (true, false) => return Ok(None),
        (true, true) => open_registry_as_is(config).await,
        (false, _) => open_registry(config).await,
    };
    match opened {
        Ok(registry) => Ok(Some(registry)),
        Err(ServeError::Meta(MetaError::Locked(path))) => Err(anyhow::anyhow!(
            "{path} is held by a running berth server; stop it, run the import, then start it again \
             (the import writes to the store directly)"
        )),
        Err(e) => Err(e).context(format!("opening the store at {}", config.storage.root.display())),
    }
}

fn print_report(r: &Report, root: &Path) {
    let verb = if r.dry_run { "dry run of the import" } else { "import" };
    println!(
        "{verb} from {} into {} finished in {}",
        r.source,
        root.display(),
        super::human_ms(r.duration_ms)
    );
    match (r.created_store, r.dry_run) {
        (true, false) => println!("created a new store at {} (there was none)", root.display()),
        (true, true) => println!("no store at {} yet: the import would create it", root.display()),
        _ => {}
    }
    let new = if r.dry_run { "would import" } else { "imported" };
    println!("  {:<18} {new:>12} {:>16} {:>8}", "", "already present", "skipped");
    let row = |what: &str, c: Counts| {
        println!("  {what:<18} {:>12} {:>16} {:>8}", c.imported, c.present, c.skipped);
    };
    row("repositories", r.repositories);
    row("manifests", r.manifests);
    row("tags", r.tags);
    let b = r.blobs;
    row(
        "blobs",
        Counts {
            imported: b.imported,
            present: b.present,
            skipped: b.skipped,
        },
    );
    row("repository links", r.links);
    if b.imported > 0 {
        let bytes = bytesize::ByteSize(b.bytes_imported).display().iec();
        if r.dry_run {
            println!("blobs {new}: {bytes}, every one verified against its digest");
        } else {
            println!(
                "blobs {new}: {bytes} ({} hard-linked, {} copied), every one verified against its digest",
                b.hard_linked, b.copied
            );
        }
    }
    if !r.skipped.is_empty() {
        println!("skipped ({}):", r.skipped.len());
        for s in &r.skipped {
            let kind = serde_json::to_value(s.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            println!("  - {kind} {}: {}", s.subject, s.reason);
        }
    }
    if r.complete() {
        println!(
            "result: everything in the source is {}",
            if r.dry_run { "importable" } else { "here" }
        );
    } else {
        println!("result: {} skipped, see above", r.skipped.len());
    }
}
