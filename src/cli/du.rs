//! `berth du`: storage usage per repository and in total, offline from the metadata or
//! through a running server (`--url`, `GET /admin/usage`).

use berth::meta::usage::Usage;
use berth::meta::{Meta, MetaError, MetaStore};
use berth::registry::CacheUsage;

#[derive(Debug, clap::Args)]
pub struct DuArgs {
    #[command(flatten)]
    store: super::StoreArgs,
    /// Ask the server at this URL instead of reading the store. With authentication on, as
    /// the admin user whose name and password are in BERTH_ADMIN_USER and
    /// BERTH_ADMIN_PASSWORD.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &DuArgs) -> anyhow::Result<()> {
    let usage = if let Some(url) = &args.url {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(super::remote::get_admin::<Report>(url, "/admin/usage"))?
    } else {
        let config = args.store.load()?;
        let root = &config.storage.root;
        super::require_store(&config, "du")?;
        match Meta::open_with_cache(root, config.storage.meta_cache) {
            Ok(meta) => {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                Report {
                    usage: runtime.block_on(meta.usage())?,
                    caches: Vec::new(),
                }
            }
            Err(MetaError::Locked(path)) => {
                return Err(super::held_by_server(&path, "du", &config));
            }
            Err(e) => return Err(e.into()),
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&usage)?);
    } else {
        print_usage(&usage.usage);
        print_caches(&usage.caches);
    }
    Ok(())
}

/// What `/admin/usage` answers: the store's usage, and each pull-through cache's (a server
/// knows its caches; the store alone does not).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Report {
    #[serde(flatten)]
    usage: Usage,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    caches: Vec<CacheUsage>,
}

fn print_caches(caches: &[CacheUsage]) {
    let b = |n: u64| bytesize::ByteSize(n).display().iec().to_string();
    for c in caches {
        let bound = c
            .max_bytes
            .map_or_else(|| "no bound".to_owned(), |m| format!("of {}", b(m)));
        println!(
            "pull-through cache {}/ ({}): {} {bound} in {} blobs, {} manifests, {} repositories",
            c.prefix,
            c.upstream,
            b(c.bytes),
            c.blobs,
            c.manifests,
            c.repositories
        );
    }
}

fn print_usage(u: &Usage) {
    let b = |n: u64| bytesize::ByteSize(n).display().iec().to_string();
    println!(
        "{:<40} {:>12} {:>12} {:>7} {:>9} {:>6}",
        "REPOSITORY", "SIZE", "EXCLUSIVE", "BLOBS", "MANIFESTS", "TAGS"
    );
    for r in &u.repositories {
        println!(
            "{:<40} {:>12} {:>12} {:>7} {:>9} {:>6}",
            r.name,
            b(r.bytes),
            b(r.exclusive_bytes),
            r.blobs,
            r.manifests,
            r.tags
        );
    }
    #[allow(clippy::cast_precision_loss)] // a display ratio
    let ratio = if u.stored_bytes == 0 {
        1.0
    } else {
        u.logical_bytes as f64 / u.stored_bytes as f64
    };
    println!(
        "total: {} across repositories, {} stored once in {} blobs (deduplication {ratio:.2}x)",
        b(u.logical_bytes),
        b(u.stored_bytes),
        u.blobs
    );
}
