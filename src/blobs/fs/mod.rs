//! The filesystem backend: content-addressed blob files and upload staging under the storage
//! root. Everything that knows blobs are files is here: `O_DIRECT` staging, the `fdatasync` and
//! rename ordering, mapped windows and the `sendfile` capability (`file_region`), quarantine.
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
use std::sync::Arc;

use bytes::Bytes;

use crate::oci::{Algorithm, Digest};

pub use stage::Staged;
pub use window::{FileRegion, file_region};

use super::{AppendError, AppendLimits, Body, ByteStream, Entry, Progress, StoreError};
use crate::hot_pool::HotPool;

/// The blob file store rooted at one directory.
#[derive(Debug, Clone)]
pub struct FsStore {
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

impl FsStore {
    /// Open (creating if needed) the blob and staging directories under `root`.
    pub fn open(root: &Path, opts: WriteOptions) -> io::Result<Self> {
        for dir in ["blobs/sha256", "blobs/sha512", "uploads"] {
            fs::create_dir_all(root.join(dir))?;
        }
        Ok(FsStore {
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

    fn staging_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// The staging file of an upload session. Safe to join: the id is a parsed UUID.
    fn upload_path(&self, id: uuid::Uuid) -> PathBuf {
        self.staging_dir().join(id.hyphenated().to_string())
    }

    /// Create the empty staging file of a new upload session hashing with `alg`.
    fn create_upload(&self, id: uuid::Uuid, alg: Algorithm) -> io::Result<Staged> {
        let path = self.upload_path(id);
        let file = fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)?;
        Ok(Staged::new(file, path, None, self.opts, alg))
    }

    /// Reopen a session's staging file after a restart, re-hashing what it already holds with
    /// `alg`.
    fn reopen_upload(&self, id: uuid::Uuid, alg: Algorithm) -> io::Result<Staged> {
        let path = self.upload_path(id);
        let file = fs::OpenOptions::new().read(true).append(true).open(&path)?;
        Staged::resume(file, path, self.opts, alg)
    }

    /// A staging file for a monolithic upload hashing with `alg`, removed on drop unless
    /// committed.
    fn temp_upload(&self, alg: Algorithm) -> io::Result<Staged> {
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(self.staging_dir())?;
        let (file, path) = tmp.into_parts();
        Ok(Staged::new(file, path.to_path_buf(), Some(path), self.opts, alg))
    }

    /// Hard-link the file `src` into the staging area and hash it with `alg`: an imported
    /// blob then shares the source's bytes on disk and costs no copy. `None` when the file
    /// system refuses the link (another file system, `fs.protected_hardlinks` for a file of
    /// another owner, too many links): the caller copies instead.
    ///
    /// The commit then makes the shared inode read-only (mode 0444, as every blob file) and
    /// renames this link into `blobs/`; the source keeps its own name. Registries write a blob
    /// file once and only ever unlink it, so sharing the inode is safe.
    fn link_upload(
        &self,
        src: &Path,
        alg: Algorithm,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> io::Result<Option<Staged>> {
        let path = self
            .staging_dir()
            .join(format!(".tmp-import-{}", uuid::Uuid::new_v4().simple()));
        if let Err(e) = fs::hard_link(src, &path) {
            tracing::debug!(src = %src.display(), error = %e, "cannot hard-link an imported blob; copying it");
            return Ok(None);
        }
        // From here on the link is removed on drop unless it is committed (and by start-up if
        // the process dies first: it is a `.tmp-` entry).
        let temp = match tempfile::TempPath::try_from_path(&path) {
            Ok(temp) => temp,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        // A link refused here is removed when `temp` drops.
        if let Some(file) = open_own_link(&path)? {
            Staged::adopt(file, path, temp, self.opts, alg, progress).map(Some)
        } else {
            tracing::debug!(src = %src.display(), "the imported blob is not a regular file of ours; copying it");
            Ok(None)
        }
    }

    fn remove_upload(&self, id: uuid::Uuid) -> io::Result<()> {
        ignore_not_found(fs::remove_file(self.upload_path(id)))
    }

    /// Make a verified staged file the blob `digest`: fdatasync (unless the append that
    /// wrote it last just did), rename into place, fsync the directory. Each flush waits for
    /// the disk, so none is repeated.
    fn commit(&self, staged: Staged, digest: &Digest) -> io::Result<()> {
        let dest = self.blob_path(digest);
        let (file, path, guard, synced) = staged.into_parts();
        if self.opts.fsync && !synced {
            // The data and the size: the timestamps do not matter to a blob.
            file.sync_data()?;
        }
        // Through the open file, never the path (which someone could have swapped).
        file.set_permissions(fs::Permissions::from_mode(0o444))?;
        drop(file);
        let dir = dest.parent().expect("blob path has a parent");
        self.create_shard_dirs(dir)?;
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
    fn stat(&self, digest: &Digest) -> io::Result<Option<u64>> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Open a blob for serving; `None` if the file is missing or is not `expected_size` bytes
    /// long (then the caller answers 404 rather than send a wrong body).
    fn open_blob(&self, digest: &Digest, expected_size: u64) -> io::Result<Option<FileReader>> {
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
        Ok(Some(FileReader {
            file: std::sync::Arc::new(file),
            size: len,
        }))
    }

    /// Hash a file from the start (an upload finished with another algorithm than its own).
    fn hash_file(path: &Path, alg: Algorithm) -> io::Result<Digest> {
        Self::hash_file_with(path, alg, &|_| {})
    }

    /// Hash a file from the start, telling `progress` each count of bytes read.
    pub(crate) fn hash_file_with(
        path: &Path,
        alg: Algorithm,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> io::Result<Digest> {
        let mut file = File::open(path)?;
        let mut hasher = alg.hasher();
        let mut buf = vec![0u8; HASH_READ_BUFFER];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(hasher.finish());
            }
            hasher.update(&buf[..n]);
            progress(n as u64);
        }
    }

    /// Unlink a blob file (after its record was tombstoned and committed).
    fn remove(&self, digest: &Digest) -> io::Result<()> {
        ignore_not_found(fs::remove_file(self.blob_path(digest)))
    }

    /// The files in the staging area (session ids and temp files) and their mtimes. One
    /// removed between the listing and its stat (a session completing) is left out.
    fn staging_entries(&self) -> io::Result<Vec<super::StagingEntry>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.staging_dir())? {
            let entry = entry?;
            let modified = match entry.metadata() {
                Ok(meta) => meta.modified()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            out.push(super::StagingEntry { name, modified });
        }
        Ok(out)
    }

    /// Remove one staging file by name (start-up reconciliation of leftovers).
    fn remove_staging_entry(&self, name: &str) -> io::Result<()> {
        debug_assert!(!name.contains('/'));
        ignore_not_found(fs::remove_file(self.staging_dir().join(name)))
    }
}

/// Open a hard link just made into the staging area, if it is safe to adopt: a regular file
/// (not a symlink swapped in for the source), owned by this process's user (a file another
/// account owns could be made writable and changed after it was verified), and the very inode
/// the open descriptor reads. `None`: copy instead.
fn open_own_link(path: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::MetadataExt as _;
    let linked = fs::symlink_metadata(path)?;
    if !linked.file_type().is_file() || linked.uid() != rustix::process::geteuid().as_raw() {
        return Ok(None);
    }
    let flags = rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC;
    let file = File::from(rustix::fs::open(path, flags, rustix::fs::Mode::empty())?);
    let opened = file.metadata()?;
    Ok((opened.dev() == linked.dev() && opened.ino() == linked.ino()).then_some(file))
}

/// Bytes of a blob mapped at a time while it is served: large enough to amortise the mapping,
/// small enough that a transfer keeps only a window or two resident.
pub const SERVE_WINDOW: u64 = 4 << 20;

/// The read buffer for hashing a whole file (verification, fsck, a resumed upload): large
/// enough that reads cost little against hashing, and below the size from which malloc maps a
/// block on its own (`malloc::REUSED_BELOW`), so it is reused, not faulted in afresh for
/// every file.
pub const HASH_READ_BUFFER: usize = 512 << 10;
const _: () = assert!(HASH_READ_BUFFER < crate::malloc::REUSED_BELOW);

/// An open, size-checked blob file, served in mapped windows.
#[derive(Debug, Clone)]
pub struct FileReader {
    file: std::sync::Arc<File>,
    size: u64,
}

impl FileReader {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The bytes `start..=end` as a stream of mapped windows of at most `SERVE_WINDOW` bytes:
    /// no copy through a userspace buffer, and memory bounded whatever the blob's size. A plain
    /// TCP connection sends each window with `sendfile` (see `window`), never touching its pages.
    fn windows(self, start: u64, end: u64) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Send + 'static {
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

impl FsStore {
    /// Throw away a staged upload that is not needed (its blob already exists).
    fn discard(staged: Staged) -> io::Result<()> {
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
struct BlobFile {
    pub path: PathBuf,
    pub size: u64,
    /// The digest its path names, if the path is a well-formed blob path.
    pub digest: Option<Digest>,
}

impl FsStore {
    /// Every file under `blobs/` (fsck only: this walks the whole tree).
    fn walk(&self) -> io::Result<Vec<BlobFile>> {
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
    fn quarantine(&self, path: &Path) -> io::Result<PathBuf> {
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

/// Run blocking file work on the blocking pool and wait for it.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking file task panicked")
}

#[async_trait::async_trait]
impl super::BlobStore for FsStore {
    // stat and open are the hot path's: they run on the fixed hot-path threads, so a burst of
    // pulls does not grow a blocking thread per request.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let (store, digest) = (self.clone(), digest.clone());
        Ok(HotPool::global().run(move || store.stat(&digest)).await?)
    }

    async fn open(
        &self,
        digest: &Digest,
        expected_size: u64,
    ) -> Result<Option<Box<dyn super::BlobReader>>, StoreError> {
        let (store, digest) = (self.clone(), digest.clone());
        let reader = HotPool::global()
            .run(move || store.open_blob(&digest, expected_size))
            .await?;
        Ok(reader.map(|r| Box::new(r) as Box<dyn super::BlobReader>))
    }

    async fn delete(&self, digest: &Digest) -> Result<(), StoreError> {
        let (store, digest) = (self.clone(), digest.clone());
        Ok(blocking(move || store.remove(&digest)).await?)
    }

    async fn create_upload(&self, id: uuid::Uuid, alg: Algorithm) -> Result<Box<dyn super::Upload>, StoreError> {
        let store = self.clone();
        let staged = blocking(move || store.create_upload(id, alg)).await?;
        Ok(self.upload(staged))
    }

    async fn resume_upload(
        &self,
        id: uuid::Uuid,
        alg: Algorithm,
    ) -> Result<Option<Box<dyn super::Upload>>, StoreError> {
        let store = self.clone();
        match blocking(move || store.reopen_upload(id, alg)).await {
            Ok(staged) => Ok(Some(self.upload(staged))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn temp_upload(&self, alg: Algorithm) -> Result<Box<dyn super::Upload>, StoreError> {
        let store = self.clone();
        let staged = blocking(move || store.temp_upload(alg)).await?;
        Ok(self.upload(staged))
    }

    async fn remove_upload(&self, id: uuid::Uuid) -> Result<(), StoreError> {
        let store = self.clone();
        Ok(blocking(move || store.remove_upload(id)).await?)
    }

    async fn staging_entries(&self) -> Result<Vec<super::StagingEntry>, StoreError> {
        let store = self.clone();
        Ok(blocking(move || store.staging_entries()).await?)
    }

    async fn remove_staging_entry(&self, name: &str) -> Result<(), StoreError> {
        if name.contains('/') || name.starts_with("..") || name.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a staging entry name").into());
        }
        let (store, name) = (self.clone(), name.to_owned());
        Ok(blocking(move || store.remove_staging_entry(&name)).await?)
    }

    async fn enumerate(&self) -> Result<Vec<Entry>, StoreError> {
        let store = self.clone();
        let files = blocking(move || store.walk()).await?;
        let entries = files
            .into_iter()
            .map(|f| Entry {
                key: self.key_of(&f.path),
                size: f.size,
                digest: f.digest,
            })
            .collect();
        Ok(entries)
    }

    async fn hash(&self, digest: &Digest, progress: Progress) -> Result<Option<Digest>, StoreError> {
        let path = self.blob_path(digest);
        let alg = digest.algorithm();
        let hashed = blocking(move || FsStore::hash_file_with(&path, alg, &*progress)).await;
        match hashed {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn quarantine(&self, key: &str) -> Result<String, StoreError> {
        let rel = Path::new(key);
        let inside = rel.starts_with("blobs") && rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{key} is not in the blob area")).into());
        }
        let (store, path) = (self.clone(), self.root.join(rel));
        let dest = blocking(move || store.quarantine(&path)).await?;
        Ok(dest.display().to_string())
    }

    async fn check_writable(&self) -> Result<(), StoreError> {
        let store = self.clone();
        Ok(blocking(move || store.temp_upload(Algorithm::Sha256).map(drop)).await?)
    }

    fn describe(&self) -> String {
        format!("filesystem {}", self.root.display())
    }

    async fn import_file(
        &self,
        path: &Path,
        alg: Algorithm,
        progress: Progress,
    ) -> Result<(Box<dyn super::Upload>, super::Adopted), StoreError> {
        let (store, src, hashed) = (self.clone(), path.to_owned(), Arc::clone(&progress));
        if let Some(staged) = blocking(move || store.link_upload(&src, alg, &*hashed)).await? {
            return Ok((self.upload(staged), super::Adopted::Linked));
        }
        let upload = super::BlobStore::temp_upload(self, alg).await?;
        Ok((super::copy_file(upload, path, progress).await?, super::Adopted::Copied))
    }
}

impl FsStore {
    fn upload(&self, staged: Staged) -> Box<dyn super::Upload> {
        Box::new(FsUpload {
            staged,
            store: self.clone(),
        })
    }

    /// A path under the root as the store-relative key `blobs/...`.
    fn key_of(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).display().to_string()
    }
}

/// An upload staged in a file under `uploads/`.
#[derive(Debug)]
struct FsUpload {
    staged: Staged,
    store: FsStore,
}

#[async_trait::async_trait]
impl super::Upload for FsUpload {
    fn len(&self) -> u64 {
        self.staged.len()
    }

    async fn append(
        self: Box<Self>,
        body: Body<'_>,
        limits: AppendLimits,
    ) -> (Box<dyn super::Upload>, Result<u64, AppendError>) {
        let FsUpload { staged, store } = *self;
        let (staged, result) = staged.append(body, limits).await;
        (Box::new(FsUpload { staged, store }), result)
    }

    async fn digest(&self, alg: Algorithm) -> Result<Digest, StoreError> {
        if alg == self.staged.algorithm() {
            return Ok(self.staged.digest());
        }
        // Not the running hash's algorithm: read the staged file once.
        crate::testhook::reached(super::DIGEST_REREAD);
        let path = self.staged.path().to_owned();
        Ok(blocking(move || FsStore::hash_file(&path, alg)).await?)
    }

    async fn commit(self: Box<Self>, digest: &Digest) -> Result<(), StoreError> {
        let FsUpload { staged, store } = *self;
        let digest = digest.clone();
        Ok(blocking(move || store.commit(staged, &digest)).await?)
    }

    async fn discard(self: Box<Self>) -> Result<(), StoreError> {
        let FsUpload { staged, .. } = *self;
        Ok(blocking(move || FsStore::discard(staged)).await?)
    }
}

#[async_trait::async_trait]
impl super::BlobReader for FileReader {
    async fn stream(self: Box<Self>, start: u64, end: u64) -> Result<Option<ByteStream>, StoreError> {
        Ok(Some(Box::pin(self.windows(start, end))))
    }
}
