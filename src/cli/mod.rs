//! Subcommands beyond `serve`.

pub mod du;
pub mod fsck;
pub mod gc;
mod remote;

/// Refuse to run an offline job on a root that holds no store: a mistyped `--root` would
/// otherwise create an empty store there and report it clean.
pub fn require_store(root: &std::path::Path) -> anyhow::Result<()> {
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
