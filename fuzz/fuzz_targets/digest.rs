//! The digest parser: never panics, and a parsed digest round-trips exactly and has the
//! length its algorithm needs, in lowercase hex.
#![no_main]

use berth::oci::Digest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let Ok(d) = Digest::parse(s) else { return };
    assert_eq!(d.as_str(), s);
    assert_eq!(d.to_string(), s);
    assert_eq!(d.hex().len(), d.algorithm().hex_len());
    assert!(d.hex().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(Digest::parse(d.as_str()), Ok(d.clone()));
});
