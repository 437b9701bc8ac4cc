//! `berth audit`: the audit log, newest first, offline from the metadata or through a running
//! server (`--url`, `GET /admin/audit`). A table, or `--json`.

use berth::meta::{Meta, MetaError, MetaStore};
use berth::registry::{AuditEntry, AuditListing};

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    store: super::StoreArgs,
    /// Ask the server at this URL instead of reading the store. With authentication on, as
    /// the admin user whose name and password are in BERTH_ADMIN_USER and
    /// BERTH_ADMIN_PASSWORD.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Only events of this repository.
    #[arg(long)]
    repository: Option<String>,
    /// Only events of this user.
    #[arg(long)]
    user: Option<String>,
    /// Only this action: push, manifest-delete, tag-delete, blob-delete, mount, login, gc,
    /// fsck, config-reload.
    #[arg(long)]
    action: Option<String>,
    /// Only events at or after this RFC 3339 time, or this long ago (24h).
    #[arg(long)]
    since: Option<String>,
    /// Only events at or before this RFC 3339 time, or this long ago.
    #[arg(long)]
    until: Option<String>,
    /// At most this many events (1 to 1000).
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// Only events older than the one with this id (the `next` of a previous page).
    #[arg(long)]
    before: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl AuditArgs {
    /// The filter as query parameters.
    fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![("limit", self.limit.to_string())];
        let opt = [
            ("repository", self.repository.clone()),
            ("user", self.user.clone()),
            ("action", self.action.clone()),
            ("since", self.since.clone()),
            ("until", self.until.clone()),
            ("before", self.before.map(|b| b.to_string())),
        ];
        p.extend(opt.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        p
    }
}

pub fn run(args: &AuditArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let params = args.params();
    let listing = if let Some(url) = &args.url {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        runtime.block_on(super::remote::get_admin::<AuditListing>(
            url,
            &format!("/admin/audit?{query}"),
        ))?
    } else {
        let config = args.store.load()?;
        let root = &config.storage.root;
        super::require_store(&config, "audit")?;
        let get = |k: &str| params.iter().find(|(key, _)| *key == k).map(|(_, v)| v.clone());
        let query = berth::registry::audit_query(get, berth::meta::now_ms()).map_err(anyhow::Error::msg)?;
        match Meta::open_with_cache(root, config.storage.meta_cache) {
            Ok(meta) => AuditListing::from(runtime.block_on(meta.audit(query))?),
            Err(MetaError::Locked(path)) => return Err(super::held_by_server(&path, "audit", &config)),
            Err(e) => return Err(e.into()),
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listing)?);
    } else {
        print_table(&listing.events);
        if let Some(next) = listing.next {
            println!("more: --before {next}");
        }
    }
    Ok(())
}

fn print_table(events: &[AuditEntry]) {
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    println!(
        "{:>6} {:<24} {:<12} {:<15} {:<15} {:<24} {:<20} RESULT",
        "ID", "TIME", "USER", "SOURCE", "ACTION", "REPOSITORY", "REFERENCE"
    );
    for e in events {
        let reference: String = dash(&e.reference).chars().take(20).collect();
        println!(
            "{:>6} {:<24} {:<12} {:<15} {:<15} {:<24} {:<20} {}",
            e.id,
            e.time,
            dash(&e.user),
            dash(&e.addr),
            e.action,
            dash(&e.repository),
            reference,
            e.result
        );
    }
}
