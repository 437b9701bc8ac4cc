//! Content-addressed blob files and upload staging. Knows nothing of HTTP or of the metadata
//! store: it turns byte streams into verified, durable files and serves them back.
//!
//! On-disk layout under the storage root:
//!
//! ```text
//! <root>/
//! ├── meta.redb                         all metadata (owned by `meta`)
//! ├── blobs/
//! │   ├── sha256/<h0h1>/<h2h3>/<hex>    one immutable file per blob, mode 0444
//! │   └── sha512/<h0h1>/<h2h3>/<hex>
//! └── uploads/
//!     ├── <uuid>                        bytes of a resumable upload session
//!     └── .tmp-*                        monolithic uploads in flight (removed at start-up)
//! ```
//!
//! Commit ordering for a new blob: write and hash the staged file, then `fdatasync` it, rename it
//! to its final path, and `fsync` the directory. Only after that does the caller commit metadata,
//! so every blob record points at a complete, durable file. A crash before the rename leaves only a
//! staging file; a crash after it but before the metadata commit leaves an unreferenced file that
//! a later push of the same digest adopts and that `fsck` reports as an orphan.
//!
//! Invariant: a file under `blobs/` is only ever created by a rename of a fully written file
//! whose content hashed to its name, and is never written to again.

mod stage;
mod window;

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::oci::{Algorithm, Digest};

pub use stage::{AppendError, Staged};
pub use window::{FileRegion, file_region};

/// The blob file store rooted at one directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    opts: WriteOptions,
}

/// How staged bytes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// `fdatasync` every acknowledged append and every new blob; `fsync` its directory.
    pub fsync: bool,
    /// Write the bulk of a large body with `O_DIRECT`, around the page cache (`Staged`).
    pub direct_io: bool,
}

impl BlobStore {
    /// Open (creating if needed) the blob and staging directories under `root`.
    pub fn open(root: &Path, opts: WriteOptions) -> io::Result<Self> {
        for dir in ["blobs/sha256", "blobs/sha512", "uploads"] {
            fs::create_dir_all(root.join(dir))?;
        }
        Ok(BlobStore {
            root: root.to_owned(),
            opts,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `blobs/<alg>/<h0h1>/<h2h3>/<hex>`. Safe to join: a `Digest`'s hex is validated.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[0..2])
            .join(&hex[2..4])
            .join(hex)
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// The staging file of an upload session. Safe to join: the id is a parsed UUID.
    pub fn upload_path(&self, id: uuid::Uuid) -> PathBuf {
        self.staging_dir().join(id.hyphenated().to_string())
    }

    /// Create the empty staging file of a new upload session.
    pub fn create_upload(&self, id: uuid::Uuid) -> io::Result<Staged> {
        let path = self.upload_path(id);
        let file = fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)?;
        Ok(Staged::new(file, path, None, self.opts))
    }

    /// Reopen a session's staging file after a restart, re-hashing what it already holds.
    pub fn reopen_upload(&self, id: uuid::Uuid) -> io::Result<Staged> {
        let path = self.upload_path(id);
        let file = fs::OpenOptions::new().read(true).append(true).open(&path)?;
        Staged::resume(file, path, self.opts)
    }

    /// A staging file for a monolithic upload, removed on drop unless committed.
    pub fn temp_upload(&self) -> io::Result<Staged> {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(self.staging_dir())?;
        let (file, path) = tmp.into_parts();
        Ok(Staged::new(file, path.to_path_buf(), Some(path), self.opts))
    }

    pub fn remove_upload(&self, id: uuid::Uuid) -> io::Result<()> {
        ignore_not_found(fs::remove_file(self.upload_path(id)))
    }

    /// Make a verified staged file the blob `digest`: fdatasync (unless the append that
    /// wrote it last just did), rename into place, fsync the directory. Each flush waits for
    /// the disk, so none is repeated.
    pub fn commit(&self, staged: Staged, digest: &Digest) -> io::Result<()> {
        let dest = self.blob_path(digest);
        let (file, path, guard, synced) = staged.into_parts();
        if self.opts.fsync && !synced {
            // The data and the size: the timestamps do not matter to a blob.
            file.sync_data()?;
        }
        drop(file);
        let dir = dest.parent().expect("blob path has a parent");
        self.create_shard_dirs(dir)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o444))?;
        crate::crashpoint::hit("blob.before_rename");
        fs::rename(&path, &dest)?;
        if let Some(temp) = guard {
            // Renamed away: keep the guard from deleting whatever now has its old name.
            let _ = temp.keep();
        }
        if self.opts.fsync {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Create the two shard levels, fsyncing each parent that gained an entry.
    fn create_shard_dirs(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let parent = dir.parent().expect("shard dir has a parent");
        if !parent.is_dir() {
            ignore_exists(fs::create_dir(parent))?;
            self.sync_dir(parent.parent().expect("alg dir"))?;
        }
        ignore_exists(fs::create_dir(dir))?;
        self.sync_dir(parent)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.opts.fsync {
            File::open(dir)?.sync_all()
        } else {
            Ok(())
        }
    }

    /// Size of the blob file, `None` if it is missing.
    pub fn stat(&self, digest: &Digest) -> io::Result<Option<u64>> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Open a blob for serving; `None` if the file is missing or is not `expected_size` bytes
    /// long (then the caller answers 404 rather than send a wrong body).
    pub fn open_blob(&self, digest: &Digest, expected_size: u64) -> io::Result<Option<BlobReader>> {
        let file = match File::open(self.blob_path(digest)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len != expected_size {
            tracing::error!(%digest, expected_size, actual = len, "blob file has the wrong size; refusing to serve it");
            return Ok(None);
        }
        Ok(Some(BlobReader {
            file: std::sync::Arc::new(file),
            size: len,
        }))
    }

    /// Hash a file from the start (used for sha512 finalisation and by verification).
    pub fn hash_file(path: &Path, alg: Algorithm) -> io::Result<Digest> {
        let mut file = File::open(path)?;
        let mut hasher = alg.hasher();
        let mut buf = vec![0u8; HASH_READ_BUFFER];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(hasher.finish());
            }
            hasher.update(&buf[..n]);
        }
    }

    /// Unlink a blob file (after its record was tombstoned and committed).
    pub fn remove(&self, digest: &Digest) -> io::Result<()> {
        ignore_not_found(fs::remove_file(self.blob_path(digest)))
    }

    /// Names of the files in the staging area (session ids and temp files).
    pub fn staging_entries(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.staging_dir())? {
            out.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    /// Remove one staging file by name (start-up reconciliation of leftovers).
    pub fn remove_staging_entry(&self, name: &str) -> io::Result<()> {
        debug_assert!(!name.contains('/'));
        ignore_not_found(fs::remove_file(self.staging_dir().join(name)))
    }
}

/// Bytes of a blob mapped at a time while it is served: large enough to amortise the mapping,
/// small enough that a transfer keeps only a window or two resident.
pub const SERVE_WINDOW: u64 = 4 << 20;

/// The read buffer for hashing a whole file (verification, fsck, a resumed upload): large
/// enough that reads cost little against hashing, and below the 1 MiB from which the server
/// has malloc map a block on its own (`server::tune_malloc`), so it is reused, not faulted in
/// afresh for every file.
pub const HASH_READ_BUFFER: usize = 512 << 10;

/// An open, size-checked blob file, served in mapped windows.
#[derive(Debug, Clone)]
pub struct BlobReader {
    file: std::sync::Arc<File>,
    size: u64,
}

impl BlobReader {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The bytes `start..=end` as a stream of mapped windows of at most `SERVE_WINDOW` bytes:
    /// no copy through a userspace buffer, and memory bounded whatever the blob's size. A plain
    /// TCP connection sends each window with `sendfile` (see `window`), never touching its pages.
    pub fn stream(self, start: u64, end: u64) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold((self, start), move |(reader, pos)| async move {
            if pos > end || reader.size == 0 {
                return None;
            }
            let len = (end - pos + 1).min(SERVE_WINDOW);
            #[allow(clippy::cast_possible_truncation)] // at most SERVE_WINDOW
            let window = window::map(&reader.file, pos, len as usize);
            Some((window, (reader, pos + len)))
        })
    }
}

fn ignore_not_found(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn ignore_exists(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

impl BlobStore {
    /// Throw away a staged upload that is not needed (its blob already exists).
    pub fn discard(staged: Staged) -> io::Result<()> {
        let (file, path, temp, _) = staged.into_parts();
        drop(file);
        match temp {
            Some(temp) => temp.close(),
            None => ignore_not_found(fs::remove_file(path)),
        }
    }
}

/// A file found under `blobs/`.
#[derive(Debug, Clone)]
pub struct BlobFile {
    pub path: PathBuf,
    pub size: u64,
    /// The digest its path names, if the path is a well-formed blob path.
    pub digest: Option<Digest>,
}

impl BlobStore {
    /// Every file under `blobs/` (fsck only: this walks the whole tree).
    pub fn walk(&self) -> io::Result<Vec<BlobFile>> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.join("blobs")];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                if meta.is_dir() {
                    stack.push(entry.path());
                } else {
                    let path = entry.path();
                    let digest = self.digest_of_path(&path);
                    out.push(BlobFile {
                        path,
                        size: meta.len(),
                        digest,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The digest a path names, if it is exactly where that digest's blob belongs.
    fn digest_of_path(&self, path: &Path) -> Option<Digest> {
        let rel = path.strip_prefix(self.root.join("blobs")).ok()?;
        let parts: Vec<&str> = rel.iter().map(|p| p.to_str()).collect::<Option<_>>()?;
        let [alg, _, _, hex] = parts.as_slice() else {
            return None;
        };
        let digest = Digest::parse(&format!("{alg}:{hex}")).ok()?;
        (self.blob_path(&digest) == path).then_some(digest)
    }

    /// Move a file out of the blob tree into `quarantine/`, keeping its path below `blobs/`
    /// (or its name, for anything else). Nothing is ever deleted outright.
    pub fn quarantine(&self, path: &Path) -> io::Result<PathBuf> {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        let flat: String = rel.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>().join("_");
        let dir = self.root.join("quarantine");
        fs::create_dir_all(&dir)?;
        let mut dest = dir.join(&flat);
        let mut n = 1;
        while dest.exists() {
            dest = dir.join(format!("{flat}.{n}"));
            n += 1;
        }
        fs::rename(path, &dest)?;
        Ok(dest)
    }
}
