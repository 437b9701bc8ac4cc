//! Mapped windows of blob files, and the lookup that lets a connection send a window's bytes
//! with `sendfile(2)` instead of copying them out of the mapping.
//!
//! A served blob is a stream of read-only mapped windows (`Bytes` owning an `Mmap`). Each live
//! window is registered here by address; [`file_region`] answers whether a byte slice lies
//! inside one and, if so, which file and offset it stands for. The plain-TCP connection writer
//! uses that to hand the kernel the file itself: the bytes go from the page cache to the socket
//! without a userspace copy, and the mapping's pages are never touched (no page faults, nothing
//! resident). Any other writer (TLS) reads the same window as ordinary memory.
//!
//! Invariant: a window is registered only after its mapping exists and unregistered before the
//! mapping is removed, so a registered address range always maps exactly `file` from `offset`.
//! A caller holding a slice of a live window therefore gets the region of that very window.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, LazyLock, RwLock};

use bytes::Bytes;
use memmap2::Mmap;

/// Live windows by start address.
static WINDOWS: LazyLock<RwLock<BTreeMap<usize, Region>>> = LazyLock::new(RwLock::default);

#[derive(Clone)]
struct Region {
    end: usize,
    file: Arc<File>,
    offset: u64,
}

/// A slice's place in a blob file.
#[derive(Debug, Clone)]
pub struct FileRegion {
    pub file: Arc<File>,
    /// Offset in `file` of the slice's first byte.
    pub offset: u64,
}

/// Where `bytes` lies in a blob file, if it is (entirely) inside a live mapped window.
pub fn file_region(bytes: &[u8]) -> Option<FileRegion> {
    if bytes.is_empty() {
        return None;
    }
    let (start, end) = (bytes.as_ptr() as usize, bytes.as_ptr() as usize + bytes.len());
    let windows = WINDOWS.read().expect("window registry lock");
    let (&base, region) = windows.range(..=start).next_back()?;
    (end <= region.end).then(|| FileRegion {
        file: Arc::clone(&region.file),
        offset: region.offset + (start - base) as u64,
    })
}

/// A registered mapping; unregisters itself before the mapping goes away.
struct Window {
    map: Mmap,
}

impl AsRef<[u8]> for Window {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        let start = self.map.as_ptr() as usize;
        WINDOWS.write().expect("window registry lock").remove(&start);
        // `self.map` is unmapped after this body returns.
    }
}

/// Map `len` (> 0) bytes of a blob file at `offset`, read-only, as registered `Bytes`.
#[allow(unsafe_code)]
pub(super) fn map(file: &Arc<File>, offset: u64, len: usize) -> io::Result<Bytes> {
    // SAFETY: blob files are immutable once renamed into place (mode 0444, never opened for
    // writing again) and are only ever unlinked, which leaves an existing mapping valid. The
    // mapping therefore cannot change or shrink under us short of outside tampering, and the
    // caller checked the file's size before mapping within it.
    let map = unsafe { memmap2::MmapOptions::new().offset(offset).len(len).map(&**file)? };
    let _ = map.advise(memmap2::Advice::Sequential);
    let start = map.as_ptr() as usize;
    let region = Region {
        end: start + map.len(),
        file: Arc::clone(file),
        offset,
    };
    WINDOWS.write().expect("window registry lock").insert(start, region);
    Ok(Bytes::from_owner(Window { map }))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn slices_of_a_live_window_name_their_file_offset() {
        let mut tmp = tempfile::tempfile().unwrap();
        tmp.write_all(&vec![7u8; 3 * 4096]).unwrap();
        let file = Arc::new(tmp);
        let window = map(&file, 4096, 8192).unwrap();
        let region = file_region(&window[100..200]).expect("inside the window");
        assert_eq!(region.offset, 4096 + 100);
        assert!(Arc::ptr_eq(&region.file, &file));
        assert!(file_region(&window[..]).is_some());
        assert!(file_region(&window[..0]).is_none());
        let heap = vec![1u8; 64];
        assert!(file_region(&heap).is_none());
        let start = window.as_ptr() as usize;
        drop(window);
        assert!(!WINDOWS.read().unwrap().contains_key(&start), "unregistered on drop");
    }
}
