//! Subcommands beyond `serve`.

pub mod convert;
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
