//! Parsing of the `Range` request header (blob reads) and the `Content-Range` header of chunked
//! upload `PATCH`es into `ByteRange` values (`oci::range`), which is all the layers below see.
//! Only single ranges are understood; anything else is reported as such and the caller decides
//! (a blob GET ignores a multi-range request and serves the whole blob). Pure and cheap to
//! fuzz (`fuzz/fuzz_targets/range.rs`).

pub use crate::oci::range::ByteRange;

/// What a `Range: bytes=...` header asks of a body of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// Serve this slice with 206.
    Partial(ByteRange),
    /// No satisfiable range: 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
    /// Not a single byte range we understand: serve the whole body with 200.
    Ignore,
}

/// Interpret a `Range` header against a body of `size` bytes (RFC 9110 section 14.1.2).
pub fn parse_range(header: &str, size: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Ignore;
    };
    if spec.contains(',') {
        return RangeRequest::Ignore;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Ignore;
    };
    let (first, last) = (first.trim(), last.trim());
    let num = |s: &str| {
        if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<u64>().ok()
        } else {
            None
        }
    };
    if first.is_empty() {
        // Suffix range: the last N bytes.
        return match num(last) {
            None => RangeRequest::Ignore,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial(ByteRange {
                start: size.saturating_sub(n),
                end: size - 1,
            }),
        };
    }
    let Some(start) = num(first) else {
        return RangeRequest::Ignore;
    };
    let end = if last.is_empty() {
        None
    } else {
        match num(last) {
            Some(e) if e >= start => Some(e),
            _ => return RangeRequest::Ignore,
        }
    };
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    let end = end.map_or(size - 1, |e| e.min(size - 1));
    RangeRequest::Partial(ByteRange { start, end })
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
        assert_eq!(parse_range("bytes=5-1", 100), RangeRequest::Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeRequest::Ignore);
        assert_eq!(parse_range("items=0-1", 100), RangeRequest::Ignore);
        assert_eq!(parse_range("bytes=x-1", 100), RangeRequest::Ignore);
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
