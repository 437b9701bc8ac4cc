//! `Range` and `Content-Range` parsing: never panic; a partial range always lies inside the
//! body, and an upload range is ordered.
#![no_main]

use berth::api::range::{RangeRequest, parse_content_range, parse_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (size, header) = data.split_at(8);
    let size = u64::from_le_bytes(size.try_into().unwrap()) % (1 << 40);
    let Ok(header) = std::str::from_utf8(header) else { return };
    if let RangeRequest::Partial(r) = parse_range(header, size) {
        assert!(r.start <= r.end && r.end < size, "{header:?} {size} -> {r:?}");
        assert!(r.size() <= size);
    }
    if let Some(r) = parse_content_range(header) {
        assert!(r.start <= r.end);
        assert!(r.size() >= 1);
    }
});
