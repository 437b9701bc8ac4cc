//! Parsing of the `Range` request header (blob reads) and the `Content-Range` header of chunked
//! upload `PATCH`es into `ByteRange` values (`oci::range`), which is all the layers below see.
//! Pure and cheap to fuzz (`fuzz/fuzz_targets/range.rs`).
//!
//! What a blob `GET` does with `Range` (RFC 9110 14.1.2 and 14.2, and what the OCI conformance
//! suite checks):
//! - one satisfiable byte range (`bytes=500-1499`, `bytes=500-`, `bytes=-500`, an end past the
//!   blob clamped to it): 206 with that slice;
//! - one byte range that is unsatisfiable (starts at or past the end, `bytes=-0`, anything of
//!   an empty blob) or invalid (`bytes=500-0`, whose last byte precedes its first; `bytes=x-1`,
//!   `bytes=5`, `bytes=`): 416 with `Content-Range: bytes */<size>`. RFC 9110 lets a server
//!   ignore or reject an invalid range; the conformance suite expects the rejection
//!   (`bytes=500-0`, a fallback to 200 counts as a failure), so every invalid one is rejected
//!   alike;
//! - another unit (`items=0-9`): ignored, 200 with the whole blob, as RFC 9110 requires of a
//!   unit the server does not understand;
//! - several ranges (`bytes=0-1,5-6`): ignored, 200 with the whole blob (RFC 9110 lets a server
//!   ignore a Range; Berth sends no `multipart/byteranges`).

pub use crate::oci::range::ByteRange;

/// What a `Range` header asks of a body of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// Serve this slice with 206.
    Partial(ByteRange),
    /// One byte range that is invalid or that no byte of the body satisfies: 416 with
    /// `Content-Range: bytes */size`.
    Unsatisfiable,
    /// Not a single byte range (another unit, several ranges): serve the whole body with 200.
    Ignore,
}

/// Interpret a `Range` header against a body of `size` bytes (see the module's list).
pub fn parse_range(header: &str, size: u64) -> RangeRequest {
    let Some((unit, spec)) = header.trim().split_once('=') else {
        return RangeRequest::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeRequest::Ignore;
    }
    single_range(spec.trim(), size).map_or(RangeRequest::Unsatisfiable, RangeRequest::Partial)
}

/// One `first-last`, `first-` or `-suffix` byte range of a body of `size` bytes; `None` when it
/// is invalid or unsatisfiable.
fn single_range(spec: &str, size: u64) -> Option<ByteRange> {
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let num = |s: &str| {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            // Digits past `u64::MAX` name a position no body reaches.
            Some(s.parse::<u64>().unwrap_or(u64::MAX))
        } else {
            None
        }
    };
    if first.is_empty() {
        // Suffix range: the last N bytes.
        let n = num(last).filter(|&n| n > 0 && size > 0)?;
        return Some(ByteRange {
            start: size.saturating_sub(n),
            end: size - 1,
        });
    }
    let start = num(first)?;
    let end = if last.is_empty() { None } else { Some(num(last)?) };
    if end.is_some_and(|e| e < start) || start >= size {
        return None;
    }
    let end = end.map_or(size - 1, |e| e.min(size - 1));
    Some(ByteRange { start, end })
}

/// Parse an upload `Content-Range: <start>-<end>` (the distribution-spec form, without the
/// `bytes ` unit; a leading `bytes ` or `bytes=` is tolerated). `None` when malformed.
pub fn parse_content_range(header: &str) -> Option<ByteRange> {
    let s = header.trim();
    let s = s
        .strip_prefix("bytes ")
        .or_else(|| s.strip_prefix("bytes="))
        .unwrap_or(s);
    let s = s.split('/').next()?;
    let (a, b) = s.split_once('-')?;
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return None;
    }
    let (start, end): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    // `end` is inclusive, so `u64::MAX` would make a range one byte longer than a `u64` can
    // count; no body is that large anyway.
    (end >= start && end < u64::MAX).then_some(ByteRange { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let p = |s, e| RangeRequest::Partial(ByteRange { start: s, end: e });
        assert_eq!(parse_range("bytes=0-9", 100), p(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), p(90, 99));
        assert_eq!(parse_range("bytes=90-500", 100), p(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), p(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), p(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), RangeRequest::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeRequest::Ignore);
        assert_eq!(parse_range("items=0-1", 100), RangeRequest::Ignore);
        assert_eq!(parse_range("0-1", 100), RangeRequest::Ignore);
        assert_eq!(parse_range("Bytes=0-9", 100), p(0, 9), "the unit is case-insensitive");
        assert_eq!(
            parse_range("bytes=99999999999999999999-", 100),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=0-99999999999999999999", 100), p(0, 99));
    }

    /// The OCI conformance suite's `range 500-0`: an end before the start is invalid, and
    /// answered 416 rather than with the whole blob, like every other invalid byte range.
    #[test]
    fn invalid_byte_ranges_are_unsatisfiable() {
        for bad in [
            "bytes=500-0",
            "bytes=5-1",
            "bytes=x-1",
            "bytes=1-x",
            "bytes=5",
            "bytes=",
            "bytes=-",
            "bytes=--1",
            "bytes=-x",
        ] {
            assert_eq!(parse_range(bad, 2048), RangeRequest::Unsatisfiable, "{bad:?}");
        }
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some(ByteRange { start: 0, end: 99 }));
        assert_eq!(
            parse_content_range("bytes 100-199/*"),
            Some(ByteRange { start: 100, end: 199 })
        );
        assert_eq!(parse_content_range("5-1"), None);
        assert_eq!(parse_content_range("-1"), None);
        assert_eq!(parse_content_range("a-b"), None);
    }

    /// Found by the `range` fuzz target: `Content-Range: 0-18446744073709551615` parsed, and
    /// the range's size (`end - start + 1`) overflowed: a panic in a debug build, a size of 0
    /// in a release one. Such a range is now malformed, and `size` cannot overflow.
    #[test]
    fn a_content_range_ending_at_u64_max_is_malformed() {
        assert_eq!(parse_content_range("0-18446744073709551615"), None);
        assert_eq!(parse_content_range("bytes=0-00018446744073709551615/1"), None);
        let r = parse_content_range("0-18446744073709551614").unwrap();
        assert_eq!(r.size(), u64::MAX);
        assert_eq!(
            ByteRange {
                start: 0,
                end: u64::MAX
            }
            .size(),
            u64::MAX
        );
    }
}
