//! Manifest parsing: never panics on any bytes or Content-Type, and what it accepts has
//! schemaVersion 2, valid descriptor digests, and the shape its kind needs.
#![no_main]

use berth::oci::Digest;
use berth::oci::manifest::{ManifestKind, parse};
use libfuzzer_sys::fuzz_target;

const TYPES: &[Option<&str>] = &[
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/json"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let content_type = TYPES[usize::from(selector) % TYPES.len()];
    let Ok(m) = parse(body, content_type) else { return };
    let v: serde_json::Value = serde_json::from_slice(body).expect("accepted manifests are JSON");
    assert_eq!(v["schemaVersion"], 2);
    for d in m.config.iter().chain(&m.layers).chain(&m.manifests).chain(&m.subject) {
        assert_eq!(Digest::parse(d.digest.as_str()).as_ref(), Ok(&d.digest));
    }
    match m.kind {
        ManifestKind::Image => assert!(m.config.is_some()),
        ManifestKind::Index => assert!(m.config.is_none() || !m.manifests.is_empty() || v["manifests"].is_array()),
    }
});
