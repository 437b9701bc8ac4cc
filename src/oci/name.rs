//! Repository names, tags and manifest references, validated against the distribution-spec
//! grammar:
//!
//! ```text
//! name      = component ("/" component)*          (at most 255 characters)
//! component = [a-z0-9]+ (separator [a-z0-9]+)*
//! separator = "." | "_" | "__" | "-"+
//! tag       = [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
//! ```
//!
//! Invariant: a `RepoName` contains no `..`, no empty component, no `%` and no byte outside
//! `[a-z0-9._/-]`, so it can never escape a directory it is joined to.

use std::fmt;

use super::digest::{Digest, DigestError};

pub const MAX_NAME_LEN: usize = 255;
pub const MAX_TAG_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name must be 1 to {MAX_NAME_LEN} characters")]
    NameLength,
    #[error("repository name component {0:?} does not match [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*")]
    NameComponent(String),
    #[error("tag {0:?} does not match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    Tag(String),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A validated repository name such as `library/busybox`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(NameError::NameLength);
        }
        for component in s.split('/') {
            if !valid_component(component) {
                return Err(NameError::NameComponent(component.chars().take(64).collect()));
            }
        }
        Ok(RepoName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*` where a separator is `.`, `_`, `__` or `-`+.
fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false; // empty run: leading, trailing or doubled separator
        }
        if i == bytes.len() {
            return true;
        }
        let sep_start = i;
        while i < bytes.len() && matches!(bytes[i], b'.' | b'_' | b'-') {
            i += 1;
        }
        let sep = &c[sep_start..i];
        let ok = matches!(sep, "." | "_" | "__") || (!sep.is_empty() && sep.bytes().all(|b| b == b'-'));
        if !ok {
            return false;
        }
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let bytes = s.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= MAX_TAG_LEN
            && word(bytes[0])
            && bytes[1..].iter().all(|&b| word(b) || b == b'.' || b == b'-');
        if ok {
            Ok(Tag(s.to_owned()))
        } else {
            Err(NameError::Tag(s.chars().take(64).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What follows `/manifests/`: a tag or a digest. A `:` means digest, since tags cannot hold one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.contains(':') {
            Ok(Reference::Digest(Digest::parse(s)?))
        } else {
            Ok(Reference::Tag(Tag::parse(s)?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "library/busybox", "a/b/c/d/e", "a.b_c__d---e", "0x/y9"] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(256);
        for bad in [
            "", "A", "a/", "/a", "a//b", "..", "a/../b", "a/%2e%2e", "a.", "a___b", "a\0", "a b", &long,
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tags() {
        assert!(Tag::parse("latest").is_ok());
        assert!(Tag::parse("_v1.0-rc.1").is_ok());
        assert!(Tag::parse(&"a".repeat(128)).is_ok());
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(Tag::parse(bad).is_err(), "{bad:?}");
        }
    }
}
