//! Upload sessions: start, append chunks, report progress, finish, cancel, and the monolithic
//! single-request upload.
//!
//! A session is a row in the `uploads` table (so it survives a restart) plus a staging file.
//! While the server runs, each session's open file and running hash live in memory, so a
//! chunk is hashed once as it arrives and the final PUT never re-reads the file. The hash's
//! algorithm is chosen when the session opens (`?digest-algorithm=`, else sha256) and kept in
//! the session's row; a final digest of another algorithm still verifies, by reading the file
//! once. After a restart the first request to a session re-hashes its staging file once, with
//! the row's algorithm. Requests to the same session are serialised by the session's mutex.
//!
//! **Several nodes.** When the metadata is shared (`MetaStore::cluster`), the blob store is
//! too (S3), so the session's bytes are segment objects any node can resume from; each node
//! keeps its own cache of the staged upload and running hash. A request to a session then:
//! 1. takes the slot's mutex, then the session's advisory lock (`DigestLocks::lock_session`),
//!    so requests to one session are serialised across the nodes too;
//! 2. reads the session's row: gone, the session was closed (on another node) and is unknown
//!    here too; its `appended` equal to the cached length, this node saw every append and
//!    continues with its running hash; different, another node appended since, and this one
//!    drops its cache and resumes from the store, re-hashing the bytes. So hash state is
//!    recomputed on a node switch, and never on the hot path, when one node keeps the session;
//! 3. after a successful append, records the new length in the row (`set_upload_length`)
//!    before it answers.
//!
//! A failed row write leaves the row behind the store, which the next request sees as a
//! switch: the store's bytes are the truth. In one process none of this runs: no lock, no
//! extra row read or write.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use uuid::Uuid;

use super::{Error, Registry};
use crate::blobs::{AppendError, AppendLimits, Body, StoreError, Upload};
use crate::meta::{Held, now_ms};
use crate::oci::range::ByteRange;
use crate::oci::{Algorithm, Digest, RepoName};

/// When a client refused for holding `limits.upload_sessions_per_client` sessions may try
/// again: its own sessions end as it finishes them, so soon.
const RETRY_CLIENT_LIMIT: Duration = Duration::from_secs(5);
/// When a client refused because `limits.upload_sessions` are open in all may try again: other
/// clients' sessions end as they finish (or `gc.upload_max_age` purges them), so a little later.
const RETRY_SERVER_LIMIT: Duration = Duration::from_secs(10);

/// Where an upload session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadStatus {
    pub id: Uuid,
    /// Bytes received so far.
    pub offset: u64,
}

/// The in-memory side of the open upload sessions.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    map: Mutex<HashMap<Uuid, Arc<AsyncMutex<Slot>>>>,
    /// Open sessions per client address.
    clients: Mutex<HashMap<IpAddr, u64>>,
}

#[derive(Debug)]
struct Slot {
    repo: String,
    /// The algorithm of the session's running hash (its row's), for resuming it.
    algorithm: Algorithm,
    /// The client that opened the session, counted against its limit until the session ends.
    client: Option<IpAddr>,
    /// `None` until loaded after a restart, or while a request has it out.
    staged: Option<Box<dyn Upload>>,
    closed: bool,
    /// When a request last used the session (`now_ms`); 0 for one no request has used since
    /// start-up.
    active_ms: crate::meta::Millis,
}

impl Sessions {
    fn get_or_insert(&self, id: Uuid, repo: &str, algorithm: Algorithm) -> Arc<AsyncMutex<Slot>> {
        let mut map = self.map.lock().expect("sessions lock");
        let slot = map.entry(id).or_insert_with(|| {
            Arc::new(AsyncMutex::new(Slot {
                repo: repo.to_owned(),
                algorithm,
                client: None,
                staged: None,
                closed: false,
                active_ms: 0,
            }))
        });
        Arc::clone(slot)
    }

    /// Count a new session against `client`, unless it already has `limit` open.
    fn claim(&self, client: IpAddr, limit: u64) -> bool {
        let mut clients = self.clients.lock().expect("clients lock");
        let open = clients.entry(client).or_default();
        if *open >= limit {
            return false;
        }
        *open += 1;
        true
    }

    fn release(&self, client: IpAddr) {
        let mut clients = self.clients.lock().expect("clients lock");
        if let Some(open) = clients.get_mut(&client) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                clients.remove(&client);
            }
        }
    }

    fn get(&self, id: Uuid) -> Option<Arc<AsyncMutex<Slot>>> {
        self.map.lock().expect("sessions lock").get(&id).cloned()
    }

    fn remove(&self, id: Uuid) {
        self.map.lock().expect("sessions lock").remove(&id);
    }

    /// Sessions with state in memory.
    pub(super) fn len(&self) -> usize {
        self.map.lock().expect("sessions lock").len()
    }
}

type SlotGuard = OwnedMutexGuard<Slot>;

impl Registry {
    /// Open a new upload session in `repo` for `client`, hashing with `algorithm`, within the
    /// session limits.
    pub async fn start_upload(
        self: &Arc<Self>,
        repo: &RepoName,
        client: Option<IpAddr>,
        algorithm: Algorithm,
    ) -> Result<UploadStatus, Error> {
        self.refuse_cached(repo)?;
        let mut open = self.meta.upload_count().await?;
        if open >= self.limits.upload_sessions {
            self.close_idle_sessions(None).await?;
            open = self.meta.upload_count().await?;
        }
        if open >= self.limits.upload_sessions {
            return Err(Error::TooManyRequests {
                reason: format!("{open} upload sessions are open, the limit; finish or cancel one first"),
                retry_after: RETRY_SERVER_LIMIT,
            });
        }
        if let Some(ip) = client
            && !self.uploads.claim(ip, self.limits.upload_sessions_per_client)
            && (self.close_idle_sessions(Some(ip)).await? == 0
                || !self.uploads.claim(ip, self.limits.upload_sessions_per_client))
        {
            let limit = self.limits.upload_sessions_per_client;
            return Err(Error::TooManyRequests {
                reason: format!("{ip} has {limit} upload sessions open, the limit; finish or cancel one first"),
                retry_after: RETRY_CLIENT_LIMIT,
            });
        }
        // Detached from the request: a client that goes away between the staging file's
        // creation and its row's commit would otherwise leave the file an orphan (and its
        // claim counted). The session it opens is then an ordinary abandoned one.
        let registry = Arc::clone(self);
        let repo = repo.clone();
        let opening = tokio::spawn(async move {
            let started = registry.open_new_session(&repo, client, algorithm).await;
            if let (Err(_), Some(ip)) = (&started, client) {
                registry.uploads.release(ip);
            }
            started
        });
        opening
            .await
            .unwrap_or_else(|e| Err(Error::Internal(format!("opening an upload session: {e}"))))
    }

    async fn open_new_session(
        &self,
        repo: &RepoName,
        client: Option<IpAddr>,
        algorithm: Algorithm,
    ) -> Result<UploadStatus, Error> {
        let id = Uuid::new_v4();
        let staged = self.blobs.create_upload(id, algorithm).await?;
        crate::crashpoint::hit("upload.after_create_file");
        crate::testhook::pause("upload.after_create_file", || {}).await;
        self.meta_write(|m| m.create_upload(id, repo, algorithm, now_ms()))
            .await?;
        let slot = self.uploads.get_or_insert(id, repo.as_str(), algorithm);
        let mut slot = slot.lock().await;
        slot.staged = Some(staged);
        slot.client = client;
        slot.active_ms = now_ms();
        crate::testhook::reached("upload.opened");
        Ok(UploadStatus { id, offset: 0 })
    }

    /// Progress of a session (GET on its location).
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> Result<UploadStatus, Error> {
        let (id, slot, _held) = self.open_session(repo, id).await?;
        Ok(UploadStatus {
            id,
            offset: slot.staged.as_ref().map_or(0, |s| s.len()),
        })
    }

    /// Append a chunk (PATCH). With a `Content-Range`, it must start where the session stands.
    pub async fn append_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        range: Option<ByteRange>,
        body: S,
    ) -> Result<UploadStatus, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Display,
    {
        let (id, mut slot, held) = self.open_session(repo, id).await?;
        self.append_to(&mut slot, range, body).await?;
        let offset = slot.staged.as_ref().map_or(0, |s| s.len());
        if held.is_some() {
            self.meta_write(|m| m.set_upload_length(id, offset)).await?;
        }
        Ok(UploadStatus { id, offset })
    }

    /// Finish a session (PUT `?digest=`), with an optional last chunk in the body.
    pub async fn finish_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        digest: &Digest,
        range: Option<ByteRange>,
        body: S,
    ) -> Result<(), Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Display,
    {
        let (id, mut slot, mut held) = self.open_session(repo, id).await?;
        self.append_to(&mut slot, range, body).await?;
        let staged = slot.staged.take().expect("open session has its staged file");
        let staged = match verify(staged, digest).await? {
            Ok(staged) => staged,
            Err((staged, mismatch)) => {
                drop(staged);
                self.close_session(id, &mut slot).await?;
                return Err(mismatch);
            }
        };
        self.commit_staged(repo, staged, digest, Some(id), held.as_mut())
            .await?;
        slot.closed = true;
        self.uploads.remove(id);
        if let Some(ip) = slot.client.take() {
            self.uploads.release(ip);
        }
        Ok(())
    }

    /// Cancel a session (DELETE on its location).
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<(), Error> {
        let (id, mut slot, _held) = self.open_session(repo, id).await?;
        self.close_session(id, &mut slot).await
    }

    /// A whole blob in one request (POST `?digest=`).
    pub async fn monolithic_upload<S, E>(&self, repo: &RepoName, digest: &Digest, body: S) -> Result<(), Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Display,
    {
        self.refuse_cached(repo)?;
        let staged = self.blobs.temp_upload(digest.algorithm()).await?;
        let (staged, appended) = staged.append(boxed(body), self.append_limits(None)).await;
        if let Err(e) = appended {
            discard_quietly(staged).await;
            return Err(Error::from_append(e));
        }
        match verify(staged, digest).await? {
            Ok(staged) => self.commit_staged(repo, staged, digest, None, None).await,
            Err((staged, mismatch)) => {
                discard_quietly(staged).await;
                Err(mismatch)
            }
        }
    }

    async fn append_to<S, E>(&self, slot: &mut SlotGuard, range: Option<ByteRange>, body: S) -> Result<(), Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: Display,
    {
        let staged = slot.staged.take().expect("open session has its staged file");
        if let Some(range) = range.filter(|r| r.start != staged.len()) {
            let offset = staged.len();
            slot.staged = Some(staged);
            tracing::debug!(?range, offset, "out-of-order chunk");
            drain(body, self.limits.body_idle_timeout).await;
            return Err(Error::UploadRangeInvalid { offset });
        }
        let (staged, appended) = staged
            .append(boxed(body), self.append_limits(range.map(ByteRange::size)))
            .await;
        // After an I/O error the file may not match the in-memory length and hash (its rollback
        // can fail too): forget them, so the next request re-reads the file (`open_session`).
        // A session's staging file is not a temp file, so dropping `staged` keeps it.
        if !matches!(appended, Err(AppendError::Store(_))) {
            slot.staged = Some(staged);
        }
        appended.map(drop).map_err(Error::from_append)
    }

    /// Find a session of `repo` and lock it (with shared metadata, across the nodes too, until
    /// the returned lock drops), loading its staging file after a restart or a node switch.
    async fn open_session(&self, repo: &RepoName, id: &str) -> Result<(Uuid, SlotGuard, Option<Held>), Error> {
        let id = Uuid::parse_str(id).map_err(|_| Error::BlobUploadUnknown)?;
        let slot = if let Some(slot) = self.uploads.get(id) {
            slot
        } else {
            let row = self.meta.upload(id).await?.ok_or(Error::BlobUploadUnknown)?;
            self.uploads.get_or_insert(id, &row.repo, row.algorithm)
        };
        let mut slot = slot.lock_owned().await;
        if slot.closed || slot.repo != repo.as_str() {
            return Err(Error::BlobUploadUnknown);
        }
        let held = self.locks.lock_session(id).await?;
        if held.is_some() {
            self.sync_with_row(id, &mut slot).await?;
        }
        slot.active_ms = now_ms();
        if slot.staged.is_none() {
            let Some(staged) = self.blobs.resume_upload(id, slot.algorithm).await? else {
                self.close_session(id, &mut slot).await?;
                return Err(Error::BlobUploadUnknown);
            };
            slot.staged = Some(staged);
        }
        Ok((id, slot, held))
    }

    /// With shared metadata, under the session's lock: drop this node's cache of the session
    /// if another node appended since (the row's length differs), so that it is resumed from
    /// the store; forget the session if another node closed it.
    async fn sync_with_row(&self, id: Uuid, slot: &mut SlotGuard) -> Result<(), Error> {
        let Some(row) = self.meta.upload(id).await? else {
            self.forget_session(id, slot);
            return Err(Error::BlobUploadUnknown);
        };
        if slot.staged.as_ref().is_some_and(|s| s.len() != row.appended) {
            crate::testhook::reached("upload.node_switch");
            slot.staged = None;
        }
        Ok(())
    }

    /// Forget this node's side of a session that is closed (its in-memory slot, its client's
    /// claim), leaving the row and the staging entry to whoever closed it.
    fn forget_session(&self, id: Uuid, slot: &mut SlotGuard) {
        slot.closed = true;
        slot.staged = None;
        if let Some(ip) = slot.client.take() {
            self.uploads.release(ip);
        }
        self.uploads.remove(id);
    }

    /// Forget a session: its row, its staging file and its in-memory slot.
    async fn close_session(&self, id: Uuid, slot: &mut SlotGuard) -> Result<(), Error> {
        self.forget_session(id, slot);
        self.meta_write(|m| m.delete_upload(id)).await?;
        Ok(self.blobs.remove_upload(id).await?)
    }

    /// At a session limit: close the sessions (of `client`, if given) that no request has used
    /// for `limits.upload_idle_timeout`, so that clients that walked away do not lock out the
    /// rest. Returns how many were closed.
    async fn close_idle_sessions(&self, client: Option<IpAddr>) -> Result<u64, Error> {
        let idle = u64::try_from(self.limits.upload_idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms().saturating_sub(idle);
        let mut closed = 0;
        for id in self.meta.stale_uploads(cutoff).await? {
            let slot = self.uploads.get_or_insert(id, "", Algorithm::Sha256);
            let Ok(mut slot) = slot.try_lock_owned() else { continue };
            let Some(_held) = self.locks.try_lock_session(id).await? else {
                continue;
            };
            let theirs = client.is_none_or(|ip| slot.client == Some(ip));
            if slot.closed || slot.active_ms >= cutoff || !theirs {
                continue;
            }
            self.close_session(id, &mut slot).await?;
            closed += 1;
        }
        if closed > 0 {
            tracing::info!(closed, client = ?client, "closed upload sessions idle past limits.upload_idle_timeout to make room");
        }
        Ok(closed)
    }

    /// Close the sessions created before `before_ms` that no request is using right now.
    /// Returns how many were closed.
    pub(crate) async fn purge_uploads(&self, before_ms: crate::meta::Millis) -> Result<u64, Error> {
        let stale = self.meta.stale_uploads(before_ms).await?;
        let mut purged = 0;
        for id in stale {
            let slot = self.uploads.get_or_insert(id, "", Algorithm::Sha256);
            let Ok(mut slot) = slot.try_lock_owned() else { continue };
            let Some(_held) = self.locks.try_lock_session(id).await? else {
                continue;
            };
            self.close_session(id, &mut slot).await?;
            purged += 1;
        }
        Ok(purged)
    }

    /// Remove the staging entries no upload session owns that have not changed since
    /// `before` (GC's grace cutoff), or with `dry_run` count them. A session's entry is
    /// created before its row commits, so one seen without a row may be a session opening
    /// right now: only age tells a leftover apart, and the grace period is far longer than any
    /// opening. The entries are listed before the sessions are read, so a session whose row
    /// commits in between is seen as owned.
    pub(crate) async fn purge_staging_orphans(
        &self,
        before: std::time::SystemTime,
        dry_run: bool,
    ) -> Result<u64, Error> {
        let entries = self.blobs.staging_entries().await?;
        let sessions: HashSet<String> = self.meta.upload_ids().await?.iter().map(Uuid::to_string).collect();
        let mut removed = 0;
        for entry in entries
            .iter()
            .filter(|e| !sessions.contains(&e.name) && e.modified < before)
        {
            if !dry_run {
                self.blobs.remove_staging_entry(&entry.name).await?;
                tracing::info!(entry = %entry.name, "removed a staging leftover no upload session owns");
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// The names of the staging area's entries.
    pub(super) async fn staging_names(&self) -> Result<Vec<String>, Error> {
        let entries = self.blobs.staging_entries().await?;
        Ok(entries.into_iter().map(|e| e.name).collect())
    }

    /// Start-up: remove staging files no session owns and sessions whose file is gone. This
    /// touches only the staging directory, never the blob tree. With shared metadata over a
    /// shared store it does nothing: other nodes are opening sessions meanwhile, each staging
    /// entry before its row, so neither half tells a leftover apart; garbage collection removes
    /// entries without a session past its grace period (`purge_staging_orphans`) and sessions
    /// past `gc.upload_max_age`.
    pub(super) async fn reconcile_staging(&self) -> Result<(), Error> {
        if self.locks.shared().is_some() && self.blobs.shared() {
            return Ok(());
        }
        let files = self.staging_names().await?;
        let sessions = self.meta.upload_ids().await?;
        // Staging entries are named by the hyphenated id (`BlobStore::staging_entries`).
        let names: HashSet<String> = sessions.iter().map(Uuid::to_string).collect();
        let mut removed_files = 0;
        for name in files.iter().filter(|f| !names.contains(*f)) {
            self.blobs.remove_staging_entry(name).await?;
            removed_files += 1;
        }
        let stale: Vec<Uuid> = sessions
            .into_iter()
            .filter(|s| !files.contains(&s.to_string()))
            .collect();
        for &id in &stale {
            self.meta_write(|m| m.delete_upload(id)).await?;
        }
        if removed_files + stale.len() > 0 {
            tracing::info!(
                removed_files,
                removed_sessions = stale.len(),
                "reconciled upload staging area"
            );
        }
        Ok(())
    }
}

/// The most of a refused chunk read and thrown away before answering (see `drain`).
const DRAIN_LIMIT: u64 = 64 << 20;

/// Read and discard what a client whose chunk is refused is still sending (up to
/// `DRAIN_LIMIT`, each read within `idle`), so that the 416 reaches clients that write the
/// whole body before they read the answer; answered unread, they would see the connection
/// reset instead (hyper-based clients report a broken pipe).
async fn drain<S, E>(mut body: S, idle: std::time::Duration)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    use futures_util::StreamExt as _;
    let mut read = 0u64;
    while read < DRAIN_LIMIT {
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(Ok(chunk))) => read += chunk.len() as u64,
            _ => return,
        }
    }
}

/// Check an upload against `digest`. The outer error is local failure; the inner one is the
/// client's content not matching, with the upload handed back.
pub(super) async fn verify(
    staged: Box<dyn Upload>,
    digest: &Digest,
) -> Result<Result<Box<dyn Upload>, (Box<dyn Upload>, Error)>, StoreError> {
    let actual = staged.digest(digest.algorithm()).await?;
    if &actual == digest {
        Ok(Ok(staged))
    } else {
        let mismatch = Error::DigestMismatch {
            expected: digest.to_string(),
            actual: actual.to_string(),
        };
        Ok(Err((staged, mismatch)))
    }
}

/// Throw away a temporary upload that failed; what a failed discard leaves is removed at the
/// next start-up, so the client hears about its own error, not this one.
pub(super) async fn discard_quietly(staged: Box<dyn Upload>) {
    if let Err(e) = staged.discard().await {
        tracing::warn!(error = %e, "could not remove a failed temporary upload");
    }
}

/// A request body as the blob store takes it.
fn boxed<'a, S, E>(body: S) -> Body<'a>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin + Send + 'a,
    E: Display,
{
    use futures_util::StreamExt;
    Box::pin(body.map(|r| r.map_err(|e| e.to_string())))
}

impl Registry {
    fn append_limits(&self, exact: Option<u64>) -> AppendLimits {
        AppendLimits {
            max_len: self.limits.blob_max_bytes,
            exact,
            idle: self.limits.body_idle_timeout,
        }
    }
}
