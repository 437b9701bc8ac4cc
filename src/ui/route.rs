//! The paths under `{ui.path}/r/`: a repository name has `/` in it, so axum's wildcard takes
//! the rest of the path and it is parsed here. `-` cannot be a component of a repository name,
//! so `/-/` ends the name:
//!
//! ```text
//! {ui.path}/r/<name>                       the repository
//! {ui.path}/r/<name>/-/m/<tag or digest>   a manifest
//! {ui.path}/r/<name>/-/delete/<tag or digest>   the confirmation (GET) and the deletion (POST)
//! ```
//!
//! Names, tags and digests are validated here, before anything reaches `registry`.

use crate::oci::{Reference, RepoName};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UiPath {
    Repository(RepoName),
    Manifest(RepoName, Reference),
    Delete(RepoName, Reference),
}

pub fn parse(rest: &str) -> Result<UiPath, String> {
    let (name, tail) = match rest.split_once("/-/") {
        Some((name, tail)) => (name, Some(tail)),
        None => (rest.trim_end_matches('/'), None),
    };
    let name = RepoName::parse(name).map_err(|e| e.to_string())?;
    let Some(tail) = tail else {
        return Ok(UiPath::Repository(name));
    };
    let (kind, reference) = tail.split_once('/').ok_or_else(|| format!("no such page: {tail}"))?;
    let reference = Reference::parse(reference).map_err(|e| e.to_string())?;
    match kind {
        "m" => Ok(UiPath::Manifest(name, reference)),
        "delete" => Ok(UiPath::Delete(name, reference)),
        other => Err(format!("no such page: {other}")),
    }
}

/// The path of a repository page, after `{ui.path}`.
pub fn repository(name: &str) -> String {
    format!("/r/{name}")
}

/// The path of a manifest page, after `{ui.path}`; `reference` is a tag or a digest.
pub fn manifest(name: &str, reference: &str) -> String {
    format!("/r/{name}/-/m/{reference}")
}

/// The path of a deletion's confirmation page, after `{ui.path}`.
pub fn delete(name: &str, reference: &str) -> String {
    format!("/r/{name}/-/delete/{reference}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn paths_parse_right_after_the_name() {
        let name = |n: &str| RepoName::parse(n).unwrap();
        assert_eq!(parse("team/app"), Ok(UiPath::Repository(name("team/app"))));
        assert_eq!(parse("team/app/"), Ok(UiPath::Repository(name("team/app"))));
        assert_eq!(
            parse(&format!("team/app/-/m/{D}")),
            Ok(UiPath::Manifest(name("team/app"), Reference::parse(D).unwrap()))
        );
        assert_eq!(
            parse("a/-/delete/v1"),
            Ok(UiPath::Delete(name("a"), Reference::parse("v1").unwrap()))
        );
        for bad in [
            "",
            "Team",
            "a/-/m/",
            "a/-/x/v1",
            "a/-/m/sha256:zz",
            "a/-/m/<script>",
            "../a",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse(&manifest("a/b", "v1")[3..]),
            Ok(UiPath::Manifest(name("a/b"), Reference::parse("v1").unwrap()))
        );
    }
}
