//! Repository names, tags and references: never panic; what parses re-parses to itself,
//! keeps to the spec's length limits and holds nothing a path could misuse.
#![no_main]

use berth::oci::{Reference, RepoName, Tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(name) = RepoName::parse(s) {
        assert_eq!(name.as_str(), s);
        assert!(s.len() <= 255);
        assert!(!s.starts_with('/') && !s.ends_with('/') && !s.contains("//"));
        assert!(!s.split('/').any(|c| c == "." || c == ".."));
        assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b)));
    }
    if let Ok(tag) = Tag::parse(s) {
        assert_eq!(tag.as_str(), s);
        assert!(!s.is_empty() && s.len() <= 128 && !s.starts_with('.') && !s.starts_with('-'));
    }
    if let Ok(r) = Reference::parse(s) {
        assert_eq!(r.to_string(), s);
        assert_eq!(Reference::parse(&r.to_string()), Ok(r));
    }
});
