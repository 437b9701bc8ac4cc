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

/// The store is held by a running server: say how to run `job` through it, at the address the
/// configuration gives (the server's own, when it was started with the same configuration).
pub fn held_by_server(path: &str, job: &str, config: &berth::config::Config) -> anyhow::Error {
    let addr = config.http.addr;
    let host = if addr.ip().is_unspecified() {
        std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    let scheme = if config.http.tls.is_some() { "https" } else { "http" };
    anyhow::anyhow!(
        "{path} is held by a running berth server; run {job} through it with \
         `berth {job} --url {scheme}://{host}` (the address in this configuration; use the server's own if it differs)"
    )
}
