//! A staged upload: an open file plus the running sha256 of everything in it.
//!
//! Bytes arrive as a stream of chunks from the network. `append` hashes each chunk as it
//! arrives, on the task that just read it (so the bytes are still in that core's cache), and
//! hands it over a bounded channel to one blocking thread that writes ~256 KiB batches, so
//! writing overlaps with receiving and the body is never held whole in memory. A failed append
//! (client gone, size limit, I/O error) is rolled back to the previous length and hash state,
//! so a session is always exactly "the bytes acknowledged so far" plus nothing.
//!
//! With fsync on, each successful append ends with `fdatasync`: an acknowledged chunk is
//! durable, and the final commit of a large upload only has the last chunk left to flush.
//! While a body streams in, writeback of every 2 MiB written is started without waiting, so
//! the disk works while the rest arrives and that `fdatasync` finds little left to do.

use std::fmt::Display;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tempfile::TempPath;
use tokio::sync::mpsc;

use crate::oci::{Algorithm, Digest, Hasher};

/// Why an append stopped. The staged file has been rolled back when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("request body failed: {0}")]
    Body(String),
    #[error("upload would exceed the size limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("body was {got} bytes but {expected} were declared")]
    LengthMismatch { expected: u64, got: u64 },
    #[error("no body data for {secs} s")]
    Idle { secs: u64 },
    #[error("staging I/O: {0}")]
    Io(#[from] io::Error),
}

/// An upload's staging file and its running hash.
#[derive(Debug)]
pub struct Staged {
    file: File,
    path: PathBuf,
    hasher: HasherDebug,
    len: u64,
    temp: Option<TempPath>,
    sync: bool,
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
    pub(super) fn new(file: File, path: PathBuf, temp: Option<TempPath>, sync: bool) -> Self {
        Staged {
            file,
            path,
            hasher: HasherDebug(Algorithm::Sha256.hasher()),
            len: 0,
            temp,
            sync,
        }
    }

    /// Rebuild the hash state of an existing staging file by reading it once.
    pub(super) fn resume(mut file: File, path: PathBuf, sync: bool) -> io::Result<Self> {
        let mut hasher = Algorithm::Sha256.hasher();
        let mut buf = vec![0u8; super::HASH_READ_BUFFER];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok(Staged {
            file,
            path,
            hasher: HasherDebug(hasher),
            len,
            temp: None,
            sync,
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

    /// The sha256 of everything staged so far, without consuming the running state.
    pub fn sha256(&self) -> Digest {
        self.hasher.0.clone().finish()
    }

    pub(super) fn into_parts(self) -> (File, PathBuf, Option<TempPath>) {
        (self.file, self.path, self.temp)
    }

    /// Stream `body` onto the end of the file, refusing to grow it past `max_len` bytes, and,
    /// with `exact`, refusing a body of any other length, and giving up when nothing arrives
    /// for `idle`. Returns the staged file in every case,
    /// with the count of bytes appended or the error (after rolling back).
    pub async fn append<S, E>(
        mut self,
        mut body: S,
        max_len: u64,
        exact: Option<u64>,
        idle: std::time::Duration,
    ) -> (Self, Result<u64, AppendError>)
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Display,
    {
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
        let mut received = 0u64;
        let mut outcome = Ok(());
        let mut writer_stopped = false;
        let mut batch = Batch::default();
        loop {
            let Ok(next) = tokio::time::timeout(idle, body.next()).await else {
                outcome = Err(AppendError::Idle { secs: idle.as_secs() });
                break;
            };
            let Some(item) = next else { break };
            let chunk = match item {
                Ok(chunk) => chunk,
                Err(e) => {
                    outcome = Err(AppendError::Body(e.to_string()));
                    break;
                }
            };
            received += chunk.len() as u64;
            if start_len + received > max_len {
                outcome = Err(AppendError::TooLarge { limit: max_len });
                break;
            }
            if let Some(expected) = exact.filter(|&e| received > e) {
                outcome = Err(AppendError::LengthMismatch {
                    expected,
                    got: received,
                });
                break;
            }
            hasher.0.update(&chunk);
            if let Some(full) = batch.push(chunk)
                && tx.send(full).await.is_err()
            {
                // The writer stopped on an I/O error (a full disk), which it reports; the body
                // was not read to its end, so its length says nothing.
                writer_stopped = true;
                break;
            }
        }
        if outcome.is_ok() && !batch.chunks.is_empty() {
            let _ = tx.send(batch.chunks).await;
        }
        drop(tx);
        if let Some(expected) = exact.filter(|&e| outcome.is_ok() && !writer_stopped && received != e) {
            outcome = Err(AppendError::LengthMismatch {
                expected,
                got: received,
            });
        }
        let (mut staged, written) = writer.await.expect("staging writer panicked");
        let result = outcome.and(written).map(|()| staged.len - start_len);
        if result.is_ok() {
            staged.hasher = hasher;
        } else if let Err(e) = staged.rollback(start_len, start_hash) {
            return (staged, Err(e.into()));
        }
        (staged, result)
    }

    /// Write batches as they come, each with as few vectored writes as it takes.
    fn write_from(&mut self, mut rx: mpsc::Receiver<Vec<Bytes>>) -> Result<(), AppendError> {
        let mut unflushed_from = self.len;
        while let Some(chunks) = rx.blocking_recv() {
            write_all_vectored(&mut &self.file, &chunks)?;
            self.len += chunks.iter().map(|c| c.len() as u64).sum::<u64>();
            if self.sync && self.len - unflushed_from >= EARLY_WRITEBACK {
                start_writeback(&self.file, unflushed_from, self.len - unflushed_from);
                unflushed_from = self.len;
            }
        }
        if self.sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn rollback(&mut self, len: u64, hasher: HasherDebug) -> io::Result<()> {
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
