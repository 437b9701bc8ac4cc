//! `berth import distribution`: adopt a CNCF Distribution filesystem store (repositories,
//! manifests of every media type Berth accepts, tags, layer links and blobs) into this store.
//! A use case over `registry` (its import seams, `registry/import.rs`), like `gc` and `fsck`;
//! the source is read by [`source`].
//!
//! The run, in order:
//! 1. Scan the source's repositories, then read every manifest, check its bytes against its
//!    digest and parse it (bodies are not kept: a manifest is read again when it is stored).
//! 2. Blobs, each digest once: already stored intact here, it is only linked; otherwise its
//!    source file is staged (hard-linked or copied), verified and committed, then linked into
//!    every repository that holds or needs it. A missing or corrupt blob is reported.
//! 3. Manifests, per repository, children before the indexes that list them, each stored with
//!    its exact bytes and its tags in one commit. A manifest whose blob or child could not be
//!    imported is skipped with the reason, and so is every tag and index that needs it: no
//!    image is imported broken. The source's current tag wins over a tag already here.
//!
//! Everything already here is counted as present and not written again, so a rerun imports
//! only what is new. A dry run reads and verifies everything (hashing every blob not already
//! stored here) and writes nothing. The import never deletes anything in this store.

pub mod source;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use crate::blobs::Adopted;
use crate::fsck::Progress;
use crate::oci::manifest::{self, ManifestKind};
use crate::oci::{Digest, RepoName, Tag};
use crate::registry::{self, Presence, Registry};
use source::{Problem, Repository, Source, SourceError};

/// What a run does.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Read and verify, write nothing.
    pub dry_run: bool,
    /// Manifests larger than this are skipped (`limits.manifest_max_size`).
    pub manifest_max_bytes: u64,
}

/// Why an import could not run to its end. What it committed before stays, and a rerun
/// carries on from there.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("writing to this store: {0}")]
    Store(#[from] registry::Error),
}

/// What a run imported (or, dry, would import), found already present, and skipped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The `docker/registry/v2` directory read.
    pub source: String,
    pub dry_run: bool,
    /// There was no store here and the import created it (a dry run: would create it).
    pub created_store: bool,
    pub repositories: Counts,
    pub manifests: Counts,
    pub tags: Counts,
    pub blobs: BlobCounts,
    /// Blobs linked into repositories.
    pub links: Counts,
    /// Everything skipped, with the reason.
    pub skipped: Vec<Skipped>,
    pub duration_ms: u64,
}

/// Counts of one kind of thing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// New here (a dry run: would be).
    pub imported: u64,
    /// Here already, the same.
    pub present: u64,
    pub skipped: u64,
}

/// Counts of blobs, each digest once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BlobCounts {
    pub imported: u64,
    pub present: u64,
    pub skipped: u64,
    /// Of those imported: shared with the source by a hard link, or copied.
    pub hard_linked: u64,
    pub copied: u64,
    pub bytes_imported: u64,
}

/// One thing not imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub kind: Kind,
    /// `repo`, `repo@digest`, `repo:tag`, a digest, or a path below the source.
    pub subject: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Repository,
    Manifest,
    Tag,
    Blob,
    /// A part of the source that could not be read (a link, a directory).
    Source,
}

impl Report {
    /// Whether everything in the source was imported or already present.
    pub fn complete(&self) -> bool {
        self.skipped.is_empty()
    }

    fn skip(&mut self, kind: Kind, subject: String, reason: String) {
        match kind {
            Kind::Repository => self.repositories.skipped += 1,
            Kind::Manifest => self.manifests.skipped += 1,
            Kind::Tag => self.tags.skipped += 1,
            Kind::Blob => self.blobs.skipped += 1,
            Kind::Source => {}
        }
        self.skipped.push(Skipped { kind, subject, reason });
    }
}

/// What a manifest of the source needs, read from its bytes.
#[derive(Debug, Clone)]
struct Needs {
    blobs: Vec<(Digest, u64)>,
    children: Vec<Digest>,
}

/// A repository with its manifests read: each one's needs, or why it cannot be imported.
struct Planned {
    repo: Repository,
    manifests: BTreeMap<Digest, Result<Needs, String>>,
}

/// Import `source` into `registry` (`None`: a dry run with no store here yet), telling
/// `progress` of the blobs checked.
pub async fn run(
    registry: Option<Arc<Registry>>,
    source: Source,
    opts: Options,
    progress: Arc<Progress>,
) -> Result<Report, ImportError> {
    let started = Instant::now();
    let mut job = Job {
        registry,
        source: Arc::new(source),
        opts,
        progress,
        report: Report {
            source: String::new(),
            dry_run: opts.dry_run,
            ..Report::default()
        },
        blobs: HashMap::new(),
        linked_into: BTreeSet::new(),
    };
    job.report.source = job.source.path().display().to_string();
    let planned = job.plan().await?;
    job.import_blobs(&planned).await?;
    for repo in &planned {
        job.import_manifests(repo).await?;
    }
    job.report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(job.report)
}

struct Job {
    registry: Option<Arc<Registry>>,
    source: Arc<Source>,
    opts: Options,
    progress: Arc<Progress>,
    report: Report,
    /// Each blob's size here, or why it could not be imported.
    blobs: HashMap<Digest, Result<u64, String>>,
    /// Repositories that blobs were newly linked into.
    linked_into: BTreeSet<RepoName>,
}

impl Job {
    /// Step 1: the repositories and their manifests' needs.
    async fn plan(&mut self) -> Result<Vec<Planned>, ImportError> {
        let source = Arc::clone(&self.source);
        let (repos, problems) = registry::blocking(move || source.repositories()).await?;
        for Problem { kind, subject, reason } in problems {
            self.report.skip(kind, subject, reason);
        }
        let mut planned = Vec::with_capacity(repos.len());
        for repo in repos {
            let (source, max) = (Arc::clone(&self.source), self.opts.manifest_max_bytes);
            let digests = repo.manifests.clone();
            let manifests = registry::blocking(move || {
                digests
                    .into_iter()
                    .map(|d| {
                        let needs = read_needs(&source, &d, max);
                        (d, needs)
                    })
                    .collect()
            })
            .await;
            planned.push(Planned { repo, manifests });
        }
        Ok(planned)
    }

    /// Step 2: every blob a repository links or a manifest needs, each digest once.
    async fn import_blobs(&mut self, planned: &[Planned]) -> Result<(), ImportError> {
        let mut wanted: BTreeMap<Digest, BTreeSet<RepoName>> = BTreeMap::new();
        for p in planned {
            let needed = p
                .manifests
                .values()
                .flatten()
                .flat_map(|n| n.blobs.iter().map(|(d, _)| d));
            for digest in p.repo.layers.iter().chain(needed) {
                wanted.entry(digest.clone()).or_default().insert(p.repo.name.clone());
            }
        }
        self.count_work(wanted.keys());
        for (digest, repos) in wanted {
            let repos: Vec<RepoName> = repos.into_iter().collect();
            let outcome = self.import_blob(&digest, &repos).await?;
            if let Err(reason) = &outcome {
                self.report.skip(Kind::Blob, digest.to_string(), reason.clone());
            }
            self.progress.files_done.fetch_add(1, Ordering::Relaxed);
            self.blobs.insert(digest, outcome);
        }
        Ok(())
    }

    /// Tell the progress counters how many blobs and bytes there are to go through.
    fn count_work<'a>(&self, digests: impl Iterator<Item = &'a Digest>) {
        for digest in digests {
            self.progress.files_total.fetch_add(1, Ordering::Relaxed);
            if let Ok(file) = self.source.blob(digest) {
                self.progress.bytes_total.fetch_add(file.size, Ordering::Relaxed);
            }
        }
    }

    /// One blob: make sure it is stored here (verifying it from the source if it is not),
    /// then linked into each of `repos`. Answers its size, or why it cannot be imported.
    async fn import_blob(&mut self, digest: &Digest, repos: &[RepoName]) -> Result<Result<u64, String>, ImportError> {
        let mut linked = Vec::with_capacity(repos.len());
        let mut stored = None;
        for repo in repos {
            let presence = self.presence(repo, digest).await?;
            linked.push(matches!(presence, Presence::Linked(_)));
            if let Presence::Linked(size) | Presence::Stored(size) = presence {
                stored = Some(size);
            }
        }
        let size = if let Some(size) = stored {
            self.report.blobs.present += 1;
            if let Ok(file) = self.source.blob(digest) {
                self.progress.bytes_done.fetch_add(file.size, Ordering::Relaxed);
            }
            size
        } else {
            match self.adopt_blob(digest, &repos[0]).await? {
                Ok(size) => size,
                Err(reason) => return Ok(Err(reason)),
            }
        };
        for (repo, linked) in repos.iter().zip(linked) {
            if linked {
                self.report.links.present += 1;
                continue;
            }
            if let Some(registry) = self.registry.as_ref().filter(|_| !self.opts.dry_run) {
                registry.link_stored_blob(repo, digest).await?;
            }
            self.report.links.imported += 1;
            self.linked_into.insert(repo.clone());
        }
        Ok(Ok(size))
    }

    /// Store the source's copy of `digest` (linked into `repo`), or in a dry run only verify
    /// it. Answers its size, or why it cannot be imported.
    async fn adopt_blob(&mut self, digest: &Digest, repo: &RepoName) -> Result<Result<u64, String>, ImportError> {
        let file = match self.source.blob(digest) {
            Ok(file) => file,
            Err(reason) => return Ok(Err(reason)),
        };
        let done = Arc::clone(&self.progress);
        let progress: crate::blobs::Progress = Arc::new(move |n| {
            done.bytes_done.fetch_add(n, Ordering::Relaxed);
        });
        let adopted = match self.registry.as_ref().filter(|_| !self.opts.dry_run) {
            Some(registry) => registry
                .import_blob(repo, digest, &file.path, progress)
                .await
                .map(|(size, how)| (size, Some(how))),
            None => verify_only(file.path, digest.clone(), progress).await,
        };
        let (size, how) = match adopted {
            Ok(adopted) => adopted,
            Err(registry::Error::DigestMismatch { actual, .. }) => {
                return Ok(Err(format!("is corrupt in the source: its bytes hash to {actual}")));
            }
            Err(e) => return Err(e.into()),
        };
        let counts = &mut self.report.blobs;
        counts.imported += 1;
        counts.bytes_imported += size;
        match how {
            Some(Adopted::Linked) => counts.hard_linked += 1,
            Some(Adopted::Copied) => counts.copied += 1,
            None => {}
        }
        Ok(Ok(size))
    }

    /// Step 3: the manifests of one repository, children first, with their tags.
    async fn import_manifests(&mut self, planned: &Planned) -> Result<(), ImportError> {
        let repo = &planned.repo.name;
        let mut tags: HashMap<&Digest, Vec<Tag>> = HashMap::new();
        for (tag, digest) in &planned.repo.tags {
            if planned.manifests.contains_key(digest) {
                tags.entry(digest).or_default().push(tag.clone());
            } else {
                let reason = format!("points at {digest}, which is not a manifest of the repository (deleted)");
                self.report.skip(Kind::Tag, format!("{repo}:{tag}"), reason);
            }
        }
        let before = (self.report.manifests, self.report.tags, self.report.links);
        let mut done: HashMap<Digest, bool> = HashMap::new();
        for digest in children_first(&planned.manifests) {
            let tags = tags.remove(&digest).unwrap_or_default();
            let imported = match self.check(planned, &digest, &done) {
                Ok(()) => self.store_manifest(repo, &digest, tags).await?,
                Err(reason) => {
                    self.skip_manifest(repo, &digest, &tags, reason);
                    false
                }
            };
            done.insert(digest, imported);
        }
        let after = (self.report.manifests, self.report.tags);
        let new = after.0.imported > before.0.imported || after.1.imported > before.1.imported;
        if new || self.linked_into.contains(repo) {
            self.report.repositories.imported += 1;
        } else {
            self.report.repositories.present += 1;
        }
        Ok(())
    }

    /// Whether the manifest `digest` can be imported: read and parsed, every blob it needs
    /// imported with its declared size, every child imported before it.
    fn check(&self, planned: &Planned, digest: &Digest, done: &HashMap<Digest, bool>) -> Result<(), String> {
        let needs = planned.manifests[digest].as_ref().map_err(Clone::clone)?;
        for child in &needs.children {
            match done.get(child) {
                Some(true) => {}
                Some(false) => return Err(format!("lists manifest {child}, which was skipped")),
                None => return Err(format!("lists manifest {child}, which is not in the repository")),
            }
        }
        for (blob, declared) in &needs.blobs {
            match self.blobs.get(blob) {
                Some(Ok(size)) if size == declared => {}
                Some(Ok(size)) => return Err(format!("declares blob {blob} as {declared} bytes, but it has {size}")),
                Some(Err(reason)) => return Err(format!("needs blob {blob}, which {reason}")),
                None => return Err(format!("needs blob {blob}, which was not read")),
            }
        }
        Ok(())
    }

    /// Store one checked manifest with its tags (those not already pointing at it). Answers
    /// whether it is here now (imported or present); false if this store refused it.
    async fn store_manifest(&mut self, repo: &RepoName, digest: &Digest, tags: Vec<Tag>) -> Result<bool, ImportError> {
        let (stored, moved) = match &self.registry {
            Some(registry) => registry.manifest_presence(repo, digest, &tags).await?,
            None => (false, tags.clone()),
        };
        if !(stored && moved.is_empty())
            && let Some(registry) = self.registry.as_ref().filter(|_| !self.opts.dry_run)
        {
            let max = self.opts.manifest_max_bytes;
            let (source, d) = (Arc::clone(&self.source), digest.clone());
            let body = match registry::blocking(move || source.manifest(&d, max)).await {
                Ok(body) => body,
                Err(reason) => {
                    self.skip_manifest(repo, digest, &tags, reason);
                    return Ok(false);
                }
            };
            match registry.import_manifest(repo, digest, moved.clone(), body.into()).await {
                Ok(()) => {}
                Err(e @ (registry::Error::Internal(_) | registry::Error::StorageUnavailable(_))) => {
                    return Err(e.into());
                }
                Err(refused) => {
                    self.skip_manifest(repo, digest, &tags, format!("refused by this store: {refused}"));
                    return Ok(false);
                }
            }
        }
        let counts = &mut self.report;
        if stored {
            counts.manifests.present += 1;
        } else {
            counts.manifests.imported += 1;
        }
        counts.tags.imported += moved.len() as u64;
        counts.tags.present += (tags.len() - moved.len()) as u64;
        Ok(true)
    }

    /// Report a manifest skipped, and its tags with it.
    fn skip_manifest(&mut self, repo: &RepoName, digest: &Digest, tags: &[Tag], reason: String) {
        for tag in tags {
            let why = format!("its manifest {digest} was skipped");
            self.report.skip(Kind::Tag, format!("{repo}:{tag}"), why);
        }
        self.report.skip(Kind::Manifest, format!("{repo}@{digest}"), reason);
    }

    async fn presence(&self, repo: &RepoName, digest: &Digest) -> Result<Presence, ImportError> {
        match &self.registry {
            Some(registry) => Ok(registry.blob_presence(repo, digest).await?),
            None => Ok(Presence::Absent),
        }
    }
}

/// Read, verify and parse the manifest `digest` of the source: what it needs, or why it
/// cannot be imported.
fn read_needs(source: &Source, digest: &Digest, max: u64) -> Result<Needs, String> {
    let body = source.manifest(digest, max)?;
    let parsed = manifest::parse(&body, None).map_err(|e| format!("is not a manifest Berth accepts: {e}"))?;
    let blobs = parsed.required_blobs().map(|d| (d.digest.clone(), d.size)).collect();
    let children = match parsed.kind {
        ManifestKind::Index => parsed.manifests.iter().map(|d| d.digest.clone()).collect(),
        ManifestKind::Image => Vec::new(),
    };
    Ok(Needs { blobs, children })
}

/// The manifests in an order where every child comes before the indexes that list it.
fn children_first(manifests: &BTreeMap<Digest, Result<Needs, String>>) -> Vec<Digest> {
    let mut order = Vec::with_capacity(manifests.len());
    let mut placed = BTreeSet::new();
    for root in manifests.keys() {
        // Depth first, iteratively: (digest, children already pushed).
        let mut stack = vec![(root, false)];
        while let Some((digest, expanded)) = stack.pop() {
            if placed.contains(digest) {
                continue;
            }
            if expanded {
                placed.insert(digest);
                order.push(digest.clone());
                continue;
            }
            stack.push((digest, true));
            let children = manifests.get(digest).and_then(|n| n.as_ref().ok()).map(|n| &n.children);
            for child in children.into_iter().flatten() {
                if manifests.contains_key(child) && !placed.contains(child) {
                    stack.push((child, false));
                }
            }
        }
    }
    order
}

/// A dry run's check of a source blob: hash it, compare. Answers its size.
async fn verify_only(
    path: std::path::PathBuf,
    digest: Digest,
    progress: crate::blobs::Progress,
) -> Result<(u64, Option<Adopted>), registry::Error> {
    let alg = digest.algorithm();
    let size = std::fs::metadata(&path)?.len();
    let actual = registry::blocking(move || crate::blobs::fs::FsStore::hash_file_with(&path, alg, &*progress)).await?;
    if actual == digest {
        Ok((size, None))
    } else {
        Err(registry::Error::DigestMismatch {
            expected: digest.to_string(),
            actual: actual.to_string(),
        })
    }
}
