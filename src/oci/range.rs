//! Byte ranges of a blob or an upload, as plain values. The HTTP headers that carry them
//! (`Range`, `Content-Range`) are parsed in `api::range`.

/// An inclusive byte range `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range (never zero: both ends are inclusive).
    pub fn size(self) -> u64 {
        (self.end - self.start).saturating_add(1)
    }
}
