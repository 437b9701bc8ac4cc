//! The route parser: never panics, and whatever it accepts re-validates and re-renders.
#![no_main]

use berth::api::route::{Endpoint, parse};
use berth::oci::{Digest, RepoName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    let Ok(endpoint) = parse(path) else { return };
    let name_ok = |n: &RepoName| RepoName::parse(n.as_str()).as_ref() == Ok(n) && !n.as_str().contains("..");
    let digest_ok = |d: &Digest| Digest::parse(d.as_str()).as_ref() == Ok(d);
    match &endpoint {
        Endpoint::Base | Endpoint::Catalog | Endpoint::Ping | Endpoint::Search => {}
        Endpoint::Tags { name } | Endpoint::UploadStart { name } => assert!(name_ok(name)),
        Endpoint::Manifest { name, reference } => {
            assert!(name_ok(name));
            assert!(path.ends_with(&reference.to_string()));
        }
        Endpoint::Blob { name, digest } | Endpoint::Referrers { name, digest } => {
            assert!(name_ok(name) && digest_ok(digest));
        }
        Endpoint::Upload { name, id } => {
            assert!(name_ok(name));
            assert!(!id.is_empty() && !id.contains('/') && !id.contains(".."), "{id:?}");
        }
    }
    // Anything routed names only characters that are safe in a file path.
    assert!(!path.contains('\0'));
});
