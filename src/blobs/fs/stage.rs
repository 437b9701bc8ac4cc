//! A staged upload: an open file plus the running hash of everything in it, with the algorithm
//! the upload was opened with (sha256 unless its session asked for another).
//!
//! Bytes arrive as a stream of chunks from the network. `append` hashes each chunk as it
//! arrives, on the task that just read it (so the bytes are still in that core's cache), and
//! hands it over a bounded channel to one blocking thread that writes ~256 KiB batches, so
//! writing overlaps with receiving and the body is never held whole in memory. A failed append
//! (client gone, size limit, I/O error) is rolled back to the previous length and hash state,
//! so a session is always exactly "the bytes acknowledged so far" plus nothing.
//!
//! An upload of `DIRECT_MIN` bytes or more is written with `O_DIRECT` (unless
//! `storage.direct_io` is off): the writer copies the chunks into one aligned buffer and the
//! disk reads them from there, so a push is not copied into the page cache, bar the odd bytes
//! after its last 4 KiB boundary (see `Direct`). Smaller uploads go through the page cache.
//! Only linux-gnu builds have `O_DIRECT`; others write every upload through the page cache.
//!
//! With fsync on, each successful append ends with `fdatasync`: an acknowledged chunk is
//! durable, and the final commit of a large upload only has the last chunk left to flush.
//! While a buffered body streams in, writeback of every 2 MiB written is started without
//! waiting, so the disk works while the rest arrives and that `fdatasync` finds little left.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tempfile::TempPath;
use tokio::sync::mpsc;

use super::WriteOptions;
use crate::blobs::{AppendError, AppendLimits, Body, Limited};
use crate::oci::{Algorithm, Digest, Hasher};

/// An upload's staging file and its running hash.
#[derive(Debug)]
pub struct Staged {
    file: File,
    path: PathBuf,
    hasher: HasherDebug,
    len: u64,
    temp: Option<TempPath>,
    opts: WriteOptions,
    /// Everything in the file has been `fdatasync`ed since it was last written.
    synced: bool,
}

/// `Hasher` with a placeholder `Debug`, so `Staged` can derive it.
#[derive(Clone)]
struct HasherDebug(Hasher);

impl std::fmt::Debug for HasherDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hasher")
    }
}

impl Staged {
    pub(super) fn new(file: File, path: PathBuf, temp: Option<TempPath>, opts: WriteOptions, alg: Algorithm) -> Self {
        Staged {
            file,
            path,
            hasher: HasherDebug(alg.hasher()),
            len: 0,
            temp,
            opts,
            synced: false,
        }
    }

    /// Rebuild the `alg` hash state of an existing staging file by reading it once.
    pub(super) fn resume(file: File, path: PathBuf, opts: WriteOptions, alg: Algorithm) -> io::Result<Self> {
        Self::hashed(file, path, None, opts, alg, &|_| {})
    }

    /// A file placed in the staging area whole (an imported blob, hard-linked there), hashed
    /// once with `alg`, telling `progress` each count of bytes read; `temp` removes it unless
    /// it is committed.
    pub(super) fn adopt(
        file: File,
        path: PathBuf,
        temp: TempPath,
        opts: WriteOptions,
        alg: Algorithm,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> io::Result<Self> {
        Self::hashed(file, path, Some(temp), opts, alg, progress)
    }

    fn hashed(
        mut file: File,
        path: PathBuf,
        temp: Option<TempPath>,
        opts: WriteOptions,
        alg: Algorithm,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> io::Result<Self> {
        let mut hasher = alg.hasher();
        let mut buf = vec![0u8; super::HASH_READ_BUFFER];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            progress(n as u64);
            len += n as u64;
        }
        Ok(Staged {
            file,
            path,
            hasher: HasherDebug(hasher),
            len,
            temp,
            opts,
            synced: false,
        })
    }

    /// Bytes staged so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The algorithm of the running hash.
    pub fn algorithm(&self) -> Algorithm {
        self.hasher.0.algorithm()
    }

    /// The digest of everything staged so far under `algorithm()`, without consuming the
    /// running state.
    pub fn digest(&self) -> Digest {
        self.hasher.0.clone().finish()
    }

    /// The file, its path, its temp-file guard (monolithic uploads) and whether all of it is
    /// already durable (`synced`).
    pub(super) fn into_parts(self) -> (File, PathBuf, Option<TempPath>, bool) {
        (self.file, self.path, self.temp, self.synced)
    }

    /// Stream `body` onto the end of the file within `limits`. Returns the staged file in
    /// every case, with the count of bytes appended or the error (after rolling back).
    pub async fn append(mut self, body: Body<'_>, limits: AppendLimits) -> (Self, Result<u64, AppendError>) {
        let (start_len, start_hash) = (self.len, self.hasher.clone());
        // Each chunk is hashed here, as it arrives, while the socket read has just brought it
        // into this core's cache; the writer thread only copies it into the page cache. A chunk
        // is at most one connection read (128 KiB, `server::listen`), so this holds the
        // runtime worker for under 100 µs at a time with SHA extensions (about 300 µs without).
        let mut hasher = self.hasher.clone();
        // One batch queued: enough to overlap receiving with writing, little held in memory.
        let (tx, rx) = mpsc::channel::<Vec<Bytes>>(1);
        let writer = tokio::task::spawn_blocking(move || {
            let written = self.write_from(rx);
            (self, written)
        });
        let mut body = Limited::new(body, limits, start_len);
        let mut batch = Batch::default();
        let outcome = loop {
            let chunk = match body.next().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    if !batch.chunks.is_empty() {
                        let _ = tx.send(batch.chunks).await;
                    }
                    break Ok(());
                }
                Err(e) => break Err(e),
            };
            hasher.0.update(&chunk);
            if let Some(full) = batch.push(chunk)
                && tx.send(full).await.is_err()
            {
                // The writer stopped on an I/O error (a full disk), which it reports; the body
                // was not read to its end, so its length says nothing.
                break Ok(());
            }
        };
        drop(tx);
        let (mut staged, written) = writer.await.expect("staging writer panicked");
        let result = outcome.and(written).map(|()| staged.len - start_len);
        if result.is_ok() {
            staged.hasher = hasher;
        } else if let Err(e) = staged.rollback(start_len, start_hash) {
            return (staged, Err(e.into()));
        }
        (staged, result)
    }

    /// Write batches as they come. With direct I/O on, an upload that reaches `DIRECT_MIN`
    /// bytes (a body that fills a whole batch, or any chunk of a session that already holds
    /// that much) is gathered into an aligned buffer and written around the page cache (see
    /// `Direct`); a smaller one is written through the page cache with as few vectored writes
    /// as it takes.
    fn write_from(&mut self, mut rx: mpsc::Receiver<Vec<Bytes>>) -> Result<(), AppendError> {
        self.synced = false;
        let mut unflushed_from = self.len;
        let mut try_direct = self.opts.direct_io && !DIRECT_UNSUPPORTED.load(Ordering::Relaxed);
        let mut direct: Option<Direct> = None;
        while let Some(chunks) = rx.blocking_recv() {
            let batch_len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
            // Large enough, and at least one whole block to write directly.
            if try_direct && self.len + batch_len >= DIRECT_MIN && batch_len >= DIRECT_ALIGN as u64 {
                try_direct = false;
                direct = Direct::open(self);
            }
            if let Some(d) = &mut direct {
                for chunk in &chunks {
                    d.write(self, chunk)?;
                }
            } else {
                write_all_vectored(&mut &self.file, &chunks)?;
                self.len += batch_len;
                if self.opts.fsync && self.len - unflushed_from >= EARLY_WRITEBACK {
                    start_writeback(&self.file, unflushed_from, self.len - unflushed_from);
                    unflushed_from = self.len;
                }
            }
        }
        if let Some(d) = direct {
            d.finish(self)?;
            // Direct writes are positional; leave the cursor where buffered writes continue.
            self.file.seek(SeekFrom::Start(self.len))?;
        }
        if self.opts.fsync {
            self.file.sync_data()?;
            self.synced = true;
        }
        Ok(())
    }

    /// Write `data` at the end of the staged bytes through the page cache. Positional, so it
    /// lands at `len` whatever the cursor says (with `O_APPEND` it lands at the end of the file,
    /// which is `len`).
    fn write_buffered_at(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, self.len)?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn rollback(&mut self, len: u64, hasher: HasherDebug) -> io::Result<()> {
        self.synced = false;
        self.file.set_len(len)?;
        self.file.seek(SeekFrom::Start(len))?;
        self.len = len;
        self.hasher = hasher;
        Ok(())
    }
}

/// With fsync on, writeback of each this many freshly written bytes is started at once, so it
/// overlaps with receiving the rest and the fsync that ends the request has little left to do.
const EARLY_WRITEBACK: u64 = 2 << 20;

/// Ask the kernel to start writing `len` bytes at `offset` back to disk, without waiting.
/// `POSIX_FADV_DONTNEED` on dirty pages starts their writeback (`WB_SYNC_NONE`) and drops only
/// pages already clean, which freshly written ones are not; `PostgreSQL`'s `pg_flush_data` uses it
/// the same way where `sync_file_range` is not at hand. Advice only: a failure changes nothing.
fn start_writeback(file: &File, offset: u64, len: u64) {
    let _ = rustix::fs::fadvise(
        file,
        offset,
        std::num::NonZeroU64::new(len),
        rustix::fs::Advice::DontNeed,
    );
}

/// Direct-I/O writes are aligned to this in memory, in the file and in length: the logical
/// block size of any disk in use (512 or 4096 bytes). A file system that wants more refuses the
/// write, and staging falls back to the page cache.
const DIRECT_ALIGN: usize = 4096;

/// An upload at least this large is written with direct I/O: one full batch. Smaller bodies
/// (manifests, configs, small layers) go through the page cache in one write.
const DIRECT_MIN: u64 = Batch::TARGET as u64;

/// Bytes per direct write. Each upload's buffer (`DIRECT_BATCH + DIRECT_ALIGN`) comes from the
/// malloc arenas and goes back to them, so it is reused, not faulted in afresh: four concurrent
/// uploads free about 1 MiB, under what an arena keeps at its top before trimming
/// (`malloc::ARENA_KEEPS`; four 512 KiB buffers pass it, are trimmed, and come back as fresh
/// pages). Larger writes cost no less CPU (docs/benchmarks.md, ninth run).
const DIRECT_BATCH: usize = 256 << 10;
const _: () = assert!(4 * (DIRECT_BATCH + DIRECT_ALIGN) < crate::malloc::ARENA_KEEPS);

/// Set once a direct write or open was refused as invalid: this file system does not do direct
/// I/O (or not with this alignment), so later uploads do not try again.
static DIRECT_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// The `open(2)` flag for direct I/O. It comes from `libc`, which Cargo.toml builds only for
/// linux-gnu; elsewhere there is none, so no direct descriptor is opened and every upload goes
/// through the page cache.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const O_DIRECT: Option<i32> = Some(libc::O_DIRECT);
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const O_DIRECT: Option<i32> = None;

/// Whether `e` is `EINVAL`: how the kernel refuses a direct open or write.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn is_einval(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// Without `O_DIRECT` nothing is written directly, so nothing is refused as such.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn is_einval(_: &io::Error) -> bool {
    false
}

/// The large part of a body, written with `O_DIRECT`: the disk reads each batch straight out
/// of one aligned buffer that stays in the CPU cache, where a buffered write would first copy
/// it into page-cache pages that, freshly allocated, are cold (and on a VM that hands free
/// memory back to its host, first touched in the host too). Blobs are immutable and
/// content-addressed, so the page cache has nothing to gain from holding a push: the bytes are
/// read back, from disk, only when someone pulls them. Only whole aligned blocks go this way:
/// the block an earlier append ended in (after a chunk of odd length) is read back and written
/// again whole (`open`), and only the odd bytes after the append's last block boundary are
/// written through the page cache, so the file's bytes and length are exactly those of a
/// buffered write.
struct Direct {
    file: File,
    buf: Vec<u8>,
    /// Where the aligned window begins in `buf`.
    start: usize,
    /// The file offset of the window's first byte; block-aligned while direct writes succeed.
    at: u64,
    /// Bytes in the window. The first `staged.len - at` of them are already in the file.
    filled: usize,
    /// A write was refused as unaligned: the rest goes through the page cache.
    fallback: bool,
}

impl Direct {
    /// A second, direct descriptor on the staging file, with the window starting at the block
    /// the staged bytes end in; `None` where that is refused. That block's bytes are read into
    /// the window and written again with the new ones, so every byte an append adds reaches the
    /// disk by direct writes, in order: a power loss cannot keep a later block and lose an
    /// earlier one, and the file stays a prefix of what was sent.
    fn open(staged: &Staged) -> Option<Direct> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(O_DIRECT?)
            .open(&staged.path);
        let file = match file {
            Ok(file) => file,
            Err(e) => {
                note_refused(&e, true);
                return None;
            }
        };
        let mut buf = vec![0u8; DIRECT_BATCH + DIRECT_ALIGN];
        let start = buf.as_ptr().align_offset(DIRECT_ALIGN);
        if start >= DIRECT_ALIGN {
            return None; // `align_offset` may decline; the page cache still works
        }
        #[allow(clippy::cast_possible_truncation)] // below DIRECT_ALIGN
        let into_block = (staged.len % DIRECT_ALIGN as u64) as usize;
        let at = staged.len - into_block as u64;
        if let Err(e) = staged.file.read_exact_at(&mut buf[start..start + into_block], at) {
            tracing::warn!(error = %e, "staging: cannot read back the last block; this upload goes through the page cache");
            return None;
        }
        Some(Direct {
            file,
            buf,
            start,
            at,
            filled: into_block,
            fallback: false,
        })
    }

    fn write(&mut self, staged: &mut Staged, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.fallback {
                // Direct writes stopped after a full window, so the window is empty: it stays
                // at the end of the file, where `finish` finds nothing left to write.
                staged.write_buffered_at(data)?;
                self.at = staged.len;
                return Ok(());
            }
            let n = (DIRECT_BATCH - self.filled).min(data.len());
            let to = self.start + self.filled;
            self.buf[to..to + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == DIRECT_BATCH {
                self.flush(staged, DIRECT_BATCH)?;
            }
        }
        Ok(())
    }

    /// Write the first `len` (aligned) bytes of the window at `at`, and move the window on.
    fn flush(&mut self, staged: &mut Staged, len: usize) -> io::Result<()> {
        let window = &self.buf[self.start..self.start + len];
        let mut done = 0;
        while done < len {
            let written = match injected_short_write(staged, &window[done..], self.at + done as u64) {
                Some(injected) => injected,
                None => self.file.write_at(&window[done..], self.at + done as u64),
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    done += n;
                    staged.len = staged.len.max(self.at + done as u64);
                    #[cfg(test)]
                    tests::DIRECT_BYTES.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_einval(&e) => {
                    // Refused although aligned: this file system does not do direct I/O. After
                    // a short write the offset is unaligned, and only this upload falls back.
                    note_refused(&e, (self.at + done as u64).is_multiple_of(DIRECT_ALIGN as u64));
                    self.fallback = true;
                    #[allow(clippy::cast_possible_truncation)] // within the window
                    let in_file = (staged.len - self.at) as usize;
                    staged.write_buffered_at(&window[done.max(in_file)..])?;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        self.at += len as u64;
        self.buf
            .copy_within(self.start + len..self.start + self.filled, self.start);
        self.filled -= len;
        Ok(())
    }

    /// Write what is left: whole blocks directly, the last odd bytes through the page cache.
    fn finish(mut self, staged: &mut Staged) -> io::Result<()> {
        let blocks = self.filled - self.filled % DIRECT_ALIGN;
        if blocks > 0 && !self.fallback {
            self.flush(staged, blocks)?;
        }
        #[allow(clippy::cast_possible_truncation)] // within the window
        let in_file = (staged.len - self.at) as usize;
        staged.write_buffered_at(&self.buf[self.start + in_file..self.start + self.filled])
    }
}

/// A fault a test injected into the next direct write of `staged`; only tests inject any.
#[cfg(not(test))]
#[inline]
fn injected_short_write(_: &Staged, _: &[u8], _: u64) -> Option<io::Result<usize>> {
    None
}

#[cfg(test)]
use tests::injected_short_write;

/// A direct open or write was refused. With `unsupported` (an aligned request answered
/// `EINVAL`: this file system does not do direct I/O), later uploads go straight to the page
/// cache, and that is said once.
fn note_refused(e: &io::Error, unsupported: bool) {
    if unsupported && is_einval(e) {
        if !DIRECT_UNSUPPORTED.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "staging: direct I/O refused; uploads are written through the page cache");
        }
    } else {
        tracing::warn!(error = %e, "staging: direct I/O failed; this upload goes through the page cache");
    }
}

/// Bytes handed to the writer thread together: about 256 KiB, so that the thread wakes once per
/// quarter megabyte rather than once per network read, without copying anything. With a channel
/// of one batch, an upload holds at most about three batches (under 1 MiB): the load benchmark's
/// peak RSS fell from 45-50 MiB (1 MiB batches, four queued) to 24 MiB at the same push rate.
#[derive(Default)]
struct Batch {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Batch {
    const TARGET: usize = 256 << 10;

    /// Add a chunk; returns the batch when it is full.
    fn push(&mut self, chunk: Bytes) -> Option<Vec<Bytes>> {
        self.len += chunk.len();
        self.chunks.push(chunk);
        (self.len >= Self::TARGET).then(|| {
            self.len = 0;
            std::mem::take(&mut self.chunks)
        })
    }
}

/// Write every chunk, in order, with `writev`, resuming after short writes.
fn write_all_vectored(out: &mut impl Write, chunks: &[Bytes]) -> io::Result<()> {
    let (mut index, mut offset) = (0, 0);
    while index < chunks.len() {
        let slices: Vec<io::IoSlice<'_>> = std::iter::once(&chunks[index][offset..])
            .chain(chunks[index + 1..].iter().map(|c| &c[..]))
            .take(1024)
            .map(io::IoSlice::new)
            .collect();
        let mut written = match out.write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        while written > 0 {
            let left = chunks[index].len() - offset;
            if written >= left {
                written -= left;
                (index, offset) = (index + 1, 0);
            } else {
                offset += written;
                written = 0;
            }
        }
        while index < chunks.len() && chunks[index].len() == offset {
            (index, offset) = (index + 1, 0);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most 7 bytes per call, to exercise short writes.
    struct Trickle(Vec<u8>);

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(7);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Bytes written with direct I/O, by any test.
    pub(super) static DIRECT_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    /// Staging files whose next direct write is cut short to this many bytes (written through
    /// the page cache instead, as a device that wrote only part of the request would leave it).
    static SHORT_WRITES: std::sync::Mutex<Vec<(PathBuf, usize)>> = std::sync::Mutex::new(Vec::new());

    pub(super) fn injected_short_write(staged: &Staged, data: &[u8], offset: u64) -> Option<io::Result<usize>> {
        let mut armed = SHORT_WRITES.lock().unwrap();
        let i = armed.iter().position(|(path, _)| path == &staged.path)?;
        let (_, n) = armed.swap_remove(i);
        Some(staged.file.write_all_at(&data[..n], offset).map(|()| n))
    }

    /// A fresh staging file like `BlobStore::create_upload` makes (`O_APPEND`), or, without
    /// `append`, like `BlobStore::temp_upload` (written at the cursor).
    fn staging(dir: &Path, direct_io: bool, append: bool) -> Staged {
        let path = dir.join(format!("direct-{direct_io}-append-{append}"));
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .append(append)
            .open(&path)
            .unwrap();
        Staged::new(
            file,
            path,
            None,
            WriteOptions { fsync: true, direct_io },
            Algorithm::Sha256,
        )
    }

    /// A body of `len` bytes (from `seed`) in chunks of `chunk` bytes, failing after `fail_at`.
    fn body(bytes: &[u8], chunk: usize, fail_at: Option<usize>) -> Body<'static> {
        let mut items: Vec<Result<Bytes, &'static str>> =
            bytes.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        if let Some(at) = fail_at {
            items.truncate(at / chunk);
            items.push(Err("client went away"));
        }
        Box::pin(futures_util::StreamExt::map(futures_util::stream::iter(items), |r| {
            r.map_err(str::to_owned)
        }))
    }

    fn unlimited(idle: std::time::Duration) -> AppendLimits {
        AppendLimits {
            max_len: u64::MAX,
            exact: None,
            idle,
        }
    }

    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect()
    }

    /// Appends of odd lengths, so that direct writes start after unaligned ends, a failed
    /// append in the middle, and bodies both under and over `DIRECT_BATCH`: the file and its
    /// hash are exactly those of the same appends written through the page cache.
    #[tokio::test]
    async fn direct_writes_store_exactly_what_buffered_writes_store() {
        let dir = tempfile::tempdir().unwrap();
        // (length, chunk size, fails after)
        let appends: [(usize, usize, Option<usize>); 6] = [
            (DIRECT_BATCH + 1, 100_000, None),
            (3 * DIRECT_BATCH + 777, 131_072, None),
            (5 * DIRECT_BATCH, 65_536, Some(3 * DIRECT_BATCH + 65_536)),
            (10, 3, None),
            (2 * DIRECT_BATCH + DIRECT_ALIGN, 4099, None),
            (DIRECT_BATCH - 1, 8192, None),
        ];
        let mut expected = Vec::new();
        let mut results = Vec::new();
        for (direct_io, append) in [(false, true), (true, true), (true, false)] {
            let direct_before = DIRECT_BYTES.load(Ordering::Relaxed);
            let mut staged = staging(dir.path(), direct_io, append);
            for (i, &(len, chunk, fail_at)) in appends.iter().enumerate() {
                let bytes = pattern(len, i as u64);
                let before = staged.len();
                let (s, result) = staged
                    .append(
                        body(&bytes, chunk, fail_at),
                        unlimited(std::time::Duration::from_secs(5)),
                    )
                    .await;
                staged = s;
                if fail_at.is_some() {
                    assert!(matches!(result, Err(AppendError::Body(_))), "{result:?}");
                    assert_eq!(staged.len(), before, "a failed append is rolled back");
                } else {
                    assert_eq!(result.unwrap(), len as u64);
                    if results.is_empty() {
                        expected.extend_from_slice(&bytes);
                    }
                }
            }
            // Ten batches' worth of blocks (three of them rolled back) go direct.
            let direct = DIRECT_BYTES.load(Ordering::Relaxed) - direct_before;
            if direct_io && O_DIRECT.is_some() {
                assert!(
                    direct > 9 * DIRECT_BATCH as u64,
                    "only {direct} bytes were written directly"
                );
            }
            let on_disk = std::fs::read(staged.path()).unwrap();
            assert_eq!(staged.len(), on_disk.len() as u64);
            results.push((on_disk, staged.digest()));
        }
        assert!(
            !DIRECT_UNSUPPORTED.load(Ordering::Relaxed),
            "the test's file system refused direct I/O"
        );
        assert_eq!(results[0].0.len(), expected.len());
        assert!(results[0].0 == expected, "buffered bytes differ from what was sent");
        assert!(
            results[1].0 == expected,
            "direct bytes (O_APPEND) differ from what was sent"
        );
        assert!(
            results[2].0 == expected,
            "direct bytes (cursor) differ from what was sent"
        );
        assert_eq!(results[0].1, results[1].1);
        assert_eq!(results[0].1, results[2].1);
    }

    /// A direct write that stops short leaves the next one unaligned, which the kernel refuses
    /// (`EINVAL`). The rest of that upload goes through the page cache, the file is exactly
    /// what was sent, and later uploads still go direct.
    #[cfg(all(target_os = "linux", target_env = "gnu"))] // `O_DIRECT`
    #[tokio::test]
    async fn a_short_direct_write_falls_back_for_that_upload_only() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = pattern(4 * DIRECT_BATCH + 5000, 7);
        let mut staged = staging(dir.path(), true, true);
        SHORT_WRITES.lock().unwrap().push((staged.path().to_owned(), 1000));
        let append = |staged: Staged, bytes: Vec<u8>| async move {
            staged
                .append(body(&bytes, 65_536, None), unlimited(std::time::Duration::from_secs(5)))
                .await
        };
        let (s, result) = append(staged, bytes.clone()).await;
        staged = s;
        assert_eq!(result.unwrap(), bytes.len() as u64);
        assert!(
            SHORT_WRITES.lock().unwrap().is_empty(),
            "the short write was never injected"
        );
        assert!(
            !DIRECT_UNSUPPORTED.load(Ordering::Relaxed),
            "an unaligned refusal must not turn direct I/O off for every upload"
        );
        let more = pattern(2 * DIRECT_BATCH, 8);
        let direct_before = DIRECT_BYTES.load(Ordering::Relaxed);
        let (s, result) = append(staged, more.clone()).await;
        staged = s;
        assert_eq!(result.unwrap(), more.len() as u64);
        assert!(
            DIRECT_BYTES.load(Ordering::Relaxed) - direct_before >= DIRECT_BATCH as u64,
            "the next upload did not go direct"
        );
        let expected = [bytes, more].concat();
        let on_disk = std::fs::read(staged.path()).unwrap();
        assert!(on_disk == expected, "the file differs from what was sent");
        let mut hasher = Algorithm::Sha256.hasher();
        hasher.update(&expected);
        assert_eq!(staged.digest(), hasher.finish());
    }

    /// `FsStore::commit` skips its own `fdatasync` when the staged file says it is synced,
    /// so that must hold only right after an append that ended with one.
    #[tokio::test]
    async fn only_a_completed_append_with_fsync_counts_as_synced() {
        let dir = tempfile::tempdir().unwrap();
        let idle = std::time::Duration::from_secs(5);
        let bytes = pattern(DIRECT_BATCH + 100, 3);
        let staged = staging(dir.path(), true, true);
        assert!(!staged.synced, "a new staging file");
        let (staged, result) = staged.append(body(&bytes, 4096, None), unlimited(idle)).await;
        result.unwrap();
        assert!(staged.synced, "after an append that ended with fdatasync");
        let (staged, result) = staged.append(body(&bytes, 4096, Some(8192)), unlimited(idle)).await;
        assert!(result.is_err());
        assert!(!staged.synced, "after a failed, rolled-back append");
        let (file, path, _, _) = staged.into_parts();
        drop(file);
        let file = std::fs::OpenOptions::new().read(true).append(true).open(&path).unwrap();
        let opts = WriteOptions {
            fsync: true,
            direct_io: true,
        };
        let resumed = Staged::resume(file, path.clone(), opts, Algorithm::Sha256).unwrap();
        assert!(!resumed.synced, "a file reopened after a restart");
        let (resumed, result) = resumed.append(body(&[], 1, None), unlimited(idle)).await;
        result.unwrap();
        assert!(resumed.synced, "an empty append still ends with fdatasync");
        let file = std::fs::OpenOptions::new().read(true).append(true).open(&path).unwrap();
        let unsynced = Staged::resume(
            file,
            path,
            WriteOptions {
                fsync: false,
                direct_io: true,
            },
            Algorithm::Sha256,
        )
        .unwrap();
        let (unsynced, result) = unsynced.append(body(&bytes, 4096, None), unlimited(idle)).await;
        result.unwrap();
        assert!(!unsynced.synced, "with fsync off nothing was synced");
    }

    #[test]
    fn vectored_writes_survive_short_writes_and_empty_chunks() {
        let chunks: Vec<Bytes> = ["hello ", "", "vectored ", "world", ""]
            .iter()
            .map(|s| Bytes::from(*s))
            .collect();
        let mut out = Trickle(Vec::new());
        write_all_vectored(&mut out, &chunks).unwrap();
        assert_eq!(out.0, b"hello vectored world");
    }
}
