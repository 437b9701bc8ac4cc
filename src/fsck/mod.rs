//! `fsck`: verify the whole store against itself, and repair what can be repaired.
//!
//! What is checked, from one metadata snapshot plus a walk of `blobs/` and `uploads/`:
//! 1. every blob file hashes to its name (skipped with `quick`) and has its recorded size;
//! 2. every blob record has a file and every file has a record;
//! 3. every manifest parses, hashes to its digest, and has its config, layers and children
//!    present and linked in its repository;
//! 4. reference counts, link counts, tags and their reverse index, the parent index, the
//!    referrers index and the repository index all match what the manifests say;
//! 5. every upload session has its staging file and every staging file its session;
//! 6. (offline) redb's own integrity check.
//!
//! Repairs never delete user data outright: corrupt or unlisted blob files move to
//! `quarantine/`, and their records are dropped so that clients get `BLOB_UNKNOWN` and can push
//! again. Counters and indexes are rewritten from the manifests. Metadata repairs are
//! compare-and-set (`meta::fsck::Repair`), so an online repair never clobbers a concurrent push.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::blobs::Entry;
use crate::meta::fsck::{Repair, Scan};
use crate::meta::schema::{ReferrerRow, RefsRow};
use crate::meta::{BlobState, now_ms};
use crate::oci::Digest;
use crate::oci::manifest;
use crate::registry::{Error, References, Registry, references};

/// Repairs per write transaction.
const BATCH: usize = 200;

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Check sizes only; do not hash blob contents.
    pub quick: bool,
    pub repair: bool,
}

/// Progress counters, readable while a run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    pub files_total: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_total: AtomicU64,
    pub bytes_done: AtomicU64,
}

/// The kinds of problem fsck reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    BlobCorrupt,
    BlobSizeMismatch,
    BlobMissing,
    OrphanBlobFile,
    StrayFile,
    StagingOrphan,
    UploadFileMissing,
    TombstoneLeftover,
    ManifestUnparsable,
    ManifestDigestMismatch,
    ManifestBlobMissing,
    ManifestChildMissing,
    ManifestRefsWrong,
    RefcountWrong,
    BlobLinksWrong,
    LinkRefsWrong,
    LinkMissing,
    LinkDangling,
    TagDangling,
    TagIndexWrong,
    ParentIndexWrong,
    ReferrerIndexWrong,
    RepoMissing,
    DatabaseIntegrity,
}

impl Kind {
    /// Problems that repair cannot fix: the content itself is wrong or gone.
    fn repairable(self) -> bool {
        !matches!(
            self,
            Kind::ManifestUnparsable
                | Kind::ManifestDigestMismatch
                | Kind::ManifestBlobMissing
                | Kind::ManifestChildMissing
                | Kind::DatabaseIntegrity
        )
    }
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub kind: Kind,
    /// What it is about: a digest, `repo@digest`, `repo:tag`, a path.
    pub subject: String,
    pub detail: String,
}

/// What was looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checked {
    pub repositories: u64,
    pub manifests: u64,
    pub tags: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub bytes_hashed: u64,
    pub uploads: u64,
    /// References of sparse manifests (`validation.sparse`, pull-through caches) to blobs or
    /// child manifests not here yet: absent by design, not damage.
    #[serde(default)]
    pub sparse_references: u64,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// No problems found (or, with repair, none left).
    pub clean: bool,
    pub quick: bool,
    pub repair: bool,
    pub checked: Checked,
    /// Problems per kind.
    pub counts: BTreeMap<Kind, u64>,
    pub problems: Vec<Problem>,
    /// Images (`repo@digest`, with their tags) that reference content that is missing or bad.
    pub damaged_images: Vec<String>,
    /// Every repair action taken.
    pub repairs: Vec<String>,
    /// Problems left after repair (all of them without repair).
    pub unrepaired: u64,
    /// redb's own check; `None` when not run (online).
    pub database_ok: Option<bool>,
    pub duration_ms: u64,
}

/// A file action of a repair plan, done after the metadata repairs commit.
#[derive(Debug, Clone)]
enum FileFix {
    /// An object of the blob area, by its key.
    Quarantine(String),
    RemoveStaging(String),
    Unlink(Digest),
}

/// What the checks found and what would fix it.
#[derive(Default)]
struct Findings {
    problems: Vec<Problem>,
    /// Blob records to mark missing first (the file is bad or gone), with the object to
    /// quarantine.
    bad_blobs: Vec<(String, Option<String>)>,
    repairs: Vec<Repair>,
    files: Vec<FileFix>,
    damaged: BTreeSet<String>,
    checked: Checked,
}

impl Findings {
    fn problem(&mut self, kind: Kind, subject: impl Into<String>, detail: impl Into<String>) {
        self.problems.push(Problem {
            kind,
            subject: subject.into(),
            detail: detail.into(),
        });
    }
}

/// Run fsck over a registry's store. `database_ok` is the result of redb's own check, when
/// the caller could run it (offline).
pub async fn run(
    registry: &Arc<Registry>,
    opts: Options,
    progress: Arc<Progress>,
    database_ok: Option<bool>,
) -> Result<Report, Error> {
    let started = Instant::now();
    let scan = registry.fsck_scan().await?;
    let (files, staging) = registry.storage_scan().await?;
    let bad = {
        let live = scan.blobs.iter().filter(|(_, b)| b.state == BlobState::Live);
        let records = live.map(|(d, b)| (d.clone(), b.size)).collect();
        verify_files(registry, &files, &records, opts.quick, &progress).await?
    };
    let mut f = Findings::default();
    check_blobs(&scan, &files, &bad, &mut f);
    check_manifests(&scan, &bad, &|repo| registry.sparse_allowed(repo), &mut f);
    check_stale_refs(&scan, &mut f);
    check_indexes(&scan, &mut f);
    check_uploads(&scan, &staging, &mut f);
    if database_ok == Some(false) {
        f.problem(Kind::DatabaseIntegrity, "meta.redb", "redb's integrity check failed");
    }
    f.checked.bytes_hashed = progress.bytes_done.load(Ordering::Relaxed);
    let mut report = Report {
        quick: opts.quick,
        repair: opts.repair,
        checked: f.checked.clone(),
        damaged_images: f.damaged.iter().cloned().collect(),
        database_ok,
        ..Report::default()
    };
    for p in &f.problems {
        *report.counts.entry(p.kind).or_default() += 1;
    }
    if opts.repair {
        report.repairs = repair(registry, &mut f).await?;
        report.unrepaired = f.problems.iter().filter(|p| !p.kind.repairable()).count() as u64;
    } else {
        report.unrepaired = f.problems.len() as u64;
    }
    report.problems = f.problems;
    report.clean = report.unrepaired == 0;
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// Why a blob cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bad {
    Corrupt(String),
    Size { recorded: u64, actual: u64 },
}

/// Check every well-named object that has a record: size, and (unless `quick`) content,
/// hashing as many at once as there are cores.
async fn verify_files(
    registry: &Registry,
    files: &[Entry],
    records: &HashMap<String, u64>,
    quick: bool,
    progress: &Arc<Progress>,
) -> Result<HashMap<String, Bad>, Error> {
    use futures_util::{StreamExt, TryStreamExt};
    let work: Vec<(&Entry, &Digest)> = files
        .iter()
        .filter_map(|f| {
            f.digest
                .as_ref()
                .filter(|d| records.contains_key(d.as_str()))
                .map(|d| (f, d))
        })
        .collect();
    progress.files_total.store(work.len() as u64, Ordering::Relaxed);
    progress
        .bytes_total
        .store(work.iter().map(|(f, _)| f.size).sum(), Ordering::Relaxed);
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let checks: Vec<_> = work
        .into_iter()
        .map(|(file, digest)| async move {
            let recorded = records[digest.as_str()];
            let verdict = if file.size != recorded {
                Some(Bad::Size {
                    recorded,
                    actual: file.size,
                })
            } else if quick {
                None
            } else {
                hash_check(registry, digest, progress).await?
            };
            progress.files_done.fetch_add(1, Ordering::Relaxed);
            Ok::<_, Error>(verdict.map(|v| (digest.to_string(), v)))
        })
        .collect();
    let verdicts: Vec<Option<(String, Bad)>> = futures_util::stream::iter(checks)
        .buffer_unordered(workers)
        .try_collect()
        .await?;
    Ok(verdicts.into_iter().flatten().collect())
}

/// Hash one stored blob. A read error is the blob's fault (bad sectors, a vanished object),
/// except when the storage service as a whole is unavailable: then fsck stops.
async fn hash_check(registry: &Registry, digest: &Digest, progress: &Arc<Progress>) -> Result<Option<Bad>, Error> {
    let counter = Arc::clone(progress);
    let on_read = Arc::new(move |n: u64| {
        counter.bytes_done.fetch_add(n, Ordering::Relaxed);
    });
    match registry.hash_stored_blob(digest, on_read).await {
        Ok(Some(actual)) => Ok((&actual != digest).then(|| Bad::Corrupt(format!("content hashes to {actual}")))),
        Ok(None) => Ok(Some(Bad::Corrupt("gone while fsck read it".to_owned()))),
        Err(e @ Error::StorageUnavailable(_)) => Err(e),
        Err(e) => Ok(Some(Bad::Corrupt(format!("cannot read: {e}")))),
    }
}

fn check_blobs(scan: &Scan, files: &[Entry], bad: &HashMap<String, Bad>, f: &mut Findings) {
    let on_disk: BTreeSet<&str> = files
        .iter()
        .filter_map(|f| f.digest.as_ref().map(Digest::as_str))
        .collect();
    f.checked.blobs = scan.blobs.len() as u64;
    f.checked.blob_bytes = scan.blobs.values().map(|b| b.size).sum();
    for file in files {
        match &file.digest {
            None => {
                f.problem(Kind::StrayFile, file.key.clone(), "not a blob path");
                f.files.push(FileFix::Quarantine(file.key.clone()));
            }
            Some(d) if scan.tombstones.contains(d.as_str()) || is_missing(scan, d.as_str()) => {}
            Some(d) if !scan.blobs.contains_key(d.as_str()) => {
                f.problem(Kind::OrphanBlobFile, d.as_str(), "file has no blob record");
                f.files.push(FileFix::Quarantine(file.key.clone()));
            }
            Some(d) => match bad.get(d.as_str()) {
                Some(Bad::Corrupt(why)) => {
                    f.problem(Kind::BlobCorrupt, d.as_str(), why.clone());
                    f.bad_blobs.push((d.to_string(), Some(file.key.clone())));
                }
                Some(Bad::Size { recorded, actual }) => {
                    f.problem(
                        Kind::BlobSizeMismatch,
                        d.as_str(),
                        format!("file is {actual} bytes, record says {recorded}"),
                    );
                    f.bad_blobs.push((d.to_string(), Some(file.key.clone())));
                }
                None => {}
            },
        }
    }
    for (digest, _) in scan
        .blobs
        .iter()
        .filter(|(d, b)| b.state == BlobState::Live && !on_disk.contains(d.as_str()))
    {
        if scan.tombstones.contains(digest) {
            continue;
        }
        f.problem(Kind::BlobMissing, digest.as_str(), "record has no file");
        f.bad_blobs.push((digest.clone(), None));
    }
    for digest in &scan.tombstones {
        f.problem(
            Kind::TombstoneLeftover,
            digest.as_str(),
            "deletion interrupted; start-up finishes it",
        );
        if let Ok(d) = Digest::parse(digest) {
            f.files.push(FileFix::Unlink(d));
        }
    }
}

/// What the manifests say the counters and indexes must be.
#[derive(Default)]
struct Expected {
    refcount: HashMap<String, u64>,
    link_refs: HashMap<(String, String), u64>,
    parents: BTreeSet<(String, String, String)>,
    referrers: BTreeMap<(String, String, String), ReferrerRow>,
}

/// `sparse_allowed` tells the repositories whose manifests may be sparse (`validation.sparse`,
/// pull-through caches): a blob never pushed or fetched (`Remote`) or a child manifest not
/// there yet is expected in them, counted in `Checked::sparse_references`, not damage.
fn check_manifests(scan: &Scan, bad: &HashMap<String, Bad>, sparse_allowed: &dyn Fn(&str) -> bool, f: &mut Findings) {
    f.checked.manifests = scan.manifests.len() as u64;
    let mut exp = Expected::default();
    let lost: BTreeSet<String> = f.bad_blobs.iter().map(|(d, _)| d.clone()).collect();
    let unusable = |d: &str| {
        bad.contains_key(d) || lost.contains(d) || !scan.blobs.get(d).is_some_and(|b| b.state == BlobState::Live)
    };
    let remote = |d: &str| scan.blobs.get(d).is_some_and(|b| b.state == BlobState::Remote);
    for ((repo, digest), row) in &scan.manifests {
        let at = format!("{repo}@{digest}");
        let sparse = sparse_allowed(repo);
        if let Ok(d) = Digest::parse(digest)
            && Digest::of(d.algorithm(), &row.body) != d
        {
            f.problem(
                Kind::ManifestDigestMismatch,
                at.clone(),
                "stored bytes do not hash to the digest",
            );
        }
        let parsed = match manifest::parse(&row.body, Some(&row.media_type)) {
            Ok(p) => p,
            Err(e) => {
                f.problem(Kind::ManifestUnparsable, at, e.to_string());
                continue;
            }
        };
        // The same computation as the manifest PUT's.
        let References {
            blobs,
            children,
            subject,
            referrer,
            ..
        } = references(&parsed, row.body.len() as u64);
        let children: Vec<String> = children.iter().map(ToString::to_string).collect();
        for blob in &blobs {
            *exp.refcount.entry(blob.clone()).or_default() += 1;
            *exp.link_refs.entry((repo.clone(), blob.clone())).or_default() += 1;
            if sparse && remote(blob) && scan.links.contains_key(&(repo.clone(), blob.clone())) {
                f.checked.sparse_references += 1;
                continue;
            }
            if unusable(blob) {
                f.problem(
                    Kind::ManifestBlobMissing,
                    at.clone(),
                    format!("blob {blob} is missing or damaged"),
                );
                f.damaged.insert(image_name(scan, repo, digest));
            } else if !scan.links.contains_key(&(repo.clone(), blob.clone())) {
                f.problem(
                    Kind::LinkMissing,
                    at.clone(),
                    format!("blob {blob} is not linked into {repo}"),
                );
                f.repairs.push(Repair::AddLink {
                    repo: repo.clone(),
                    digest: blob.clone(),
                    refs: 0,
                    now: now_ms(),
                });
            }
        }
        for child in &children {
            exp.parents.insert((repo.clone(), child.clone(), digest.clone()));
            let present = scan.manifests.contains_key(&(repo.clone(), child.clone()));
            if sparse && !present {
                f.checked.sparse_references += 1;
            } else if !present {
                f.problem(
                    Kind::ManifestChildMissing,
                    at.clone(),
                    format!("child manifest {child} is missing"),
                );
                f.damaged.insert(image_name(scan, repo, digest));
            }
        }
        if let (Some(s), Some(referrer)) = (&subject, referrer) {
            exp.referrers
                .insert((repo.clone(), s.clone(), digest.clone()), referrer);
        }
        let stored = scan.refs.get(&(repo.clone(), digest.clone()));
        let fits = stored.is_some_and(|r| r.blobs == blobs && r.children == children && r.subject == subject);
        if !fits {
            f.problem(Kind::ManifestRefsWrong, at, "reference row does not match the manifest");
            let pushed_ms = stored.map_or(row.created_ms, |r| r.pushed_ms);
            let refs = RefsRow {
                blobs,
                children,
                subject,
                pushed_ms,
            };
            f.repairs.push(Repair::SetRefs {
                repo: repo.clone(),
                digest: digest.clone(),
                refs,
            });
        }
    }
    check_counts(scan, &exp, f);
    check_graph_indexes(scan, &exp, f);
}

/// A record that an earlier repair marked missing (its file was quarantined).
fn is_missing(scan: &Scan, digest: &str) -> bool {
    scan.blobs
        .get(digest)
        .is_some_and(|b| matches!(b.state, BlobState::Missing { .. }))
}

fn image_name(scan: &Scan, repo: &str, digest: &str) -> String {
    let tags: Vec<&str> = scan
        .tags
        .iter()
        .filter(|((r, _), t)| r == repo && t.digest == digest)
        .map(|((_, t), _)| t.as_str())
        .collect();
    if tags.is_empty() {
        format!("{repo}@{digest}")
    } else {
        format!("{repo}@{digest} (tags: {})", tags.join(", "))
    }
}

/// Reference rows whose manifest does not exist.
fn check_stale_refs(scan: &Scan, f: &mut Findings) {
    for (repo, digest) in scan.refs.keys().filter(|k| !scan.manifests.contains_key(*k)) {
        f.problem(
            Kind::ManifestRefsWrong,
            format!("{repo}@{digest}"),
            "reference row of a manifest that does not exist",
        );
        f.repairs.push(Repair::DropRefs {
            repo: repo.clone(),
            digest: digest.clone(),
        });
    }
}

fn check_counts(scan: &Scan, exp: &Expected, f: &mut Findings) {
    let mut links_per_blob: HashMap<&str, u64> = HashMap::new();
    for ((repo, digest), link) in &scan.links {
        *links_per_blob.entry(digest).or_default() += 1;
        if !scan.blobs.contains_key(digest) {
            f.problem(
                Kind::LinkDangling,
                format!("{repo}@{digest}"),
                "link to a blob with no record",
            );
            f.repairs.push(Repair::DropLink {
                repo: repo.clone(),
                digest: digest.clone(),
            });
            continue;
        }
        let want = exp.link_refs.get(&(repo.clone(), digest.clone())).copied().unwrap_or(0);
        if link.refs != want {
            f.problem(
                Kind::LinkRefsWrong,
                format!("{repo}@{digest}"),
                format!("refs {} should be {want}", link.refs),
            );
            f.repairs.push(Repair::SetLinkRefs {
                repo: repo.clone(),
                digest: digest.clone(),
                seen: link.refs,
                want,
            });
        }
    }
    for (digest, blob) in &scan.blobs {
        let want = exp.refcount.get(digest).copied().unwrap_or(0);
        if blob.refcount != want {
            f.problem(
                Kind::RefcountWrong,
                digest.as_str(),
                format!("refcount {} should be {want}", blob.refcount),
            );
            f.repairs.push(Repair::SetRefcount {
                digest: digest.clone(),
                seen: blob.refcount,
                want,
            });
        }
        let links = links_per_blob.get(digest.as_str()).copied().unwrap_or(0);
        if blob.links != links {
            f.problem(
                Kind::BlobLinksWrong,
                digest.as_str(),
                format!("links {} should be {links}", blob.links),
            );
            f.repairs.push(Repair::SetBlobLinks {
                digest: digest.clone(),
                seen: blob.links,
                want: links,
            });
        }
    }
}

fn check_graph_indexes(scan: &Scan, exp: &Expected, f: &mut Findings) {
    for (repo, child, parent) in exp.parents.difference(&scan.parents) {
        f.problem(
            Kind::ParentIndexWrong,
            format!("{repo}@{child}"),
            format!("missing parent entry {parent}"),
        );
        f.repairs.push(Repair::AddParent {
            repo: repo.clone(),
            child: child.clone(),
            parent: parent.clone(),
        });
    }
    for (repo, child, parent) in scan.parents.difference(&exp.parents) {
        f.problem(
            Kind::ParentIndexWrong,
            format!("{repo}@{child}"),
            format!("stale parent entry {parent}"),
        );
        f.repairs.push(Repair::DropParent {
            repo: repo.clone(),
            child: child.clone(),
            parent: parent.clone(),
        });
    }
    for (key @ (repo, subject, referrer), row) in &exp.referrers {
        if scan.referrers.get(key) != Some(row) {
            f.problem(
                Kind::ReferrerIndexWrong,
                format!("{repo}@{referrer}"),
                format!("referrer of {subject} not indexed"),
            );
            let (repo, subject, referrer) = (repo.clone(), subject.clone(), referrer.clone());
            f.repairs.push(Repair::AddReferrer {
                repo,
                subject,
                referrer,
                row: row.clone(),
            });
        }
    }
    for (repo, subject, referrer) in scan.referrers.keys().filter(|k| !exp.referrers.contains_key(*k)) {
        f.problem(
            Kind::ReferrerIndexWrong,
            format!("{repo}@{referrer}"),
            format!("stale referrer entry of {subject}"),
        );
        let (repo, subject, referrer) = (repo.clone(), subject.clone(), referrer.clone());
        f.repairs.push(Repair::DropReferrer {
            repo,
            subject,
            referrer,
        });
    }
}

fn check_indexes(scan: &Scan, f: &mut Findings) {
    f.checked.tags = scan.tags.len() as u64;
    f.checked.repositories = scan.repos.len() as u64;
    let mut reverse = BTreeSet::new();
    for ((repo, tag), row) in &scan.tags {
        reverse.insert((repo.clone(), row.digest.clone(), tag.clone()));
        if !scan.manifests.contains_key(&(repo.clone(), row.digest.clone())) {
            f.problem(
                Kind::TagDangling,
                format!("{repo}:{tag}"),
                format!("points at missing manifest {}", row.digest),
            );
            let (repo, tag, digest) = (repo.clone(), tag.clone(), row.digest.clone());
            f.repairs.push(Repair::DropTag { repo, tag, digest });
        }
    }
    for (repo, digest, tag) in reverse.difference(&scan.tags_by_manifest) {
        f.problem(
            Kind::TagIndexWrong,
            format!("{repo}:{tag}"),
            "missing from the reverse tag index",
        );
        f.repairs.push(Repair::AddTagIndex {
            repo: repo.clone(),
            digest: digest.clone(),
            tag: tag.clone(),
        });
    }
    for (repo, digest, tag) in scan.tags_by_manifest.difference(&reverse) {
        f.problem(
            Kind::TagIndexWrong,
            format!("{repo}:{tag}"),
            "stale reverse tag index entry",
        );
        f.repairs.push(Repair::DropTagIndex {
            repo: repo.clone(),
            digest: digest.clone(),
            tag: tag.clone(),
        });
    }
    let used = scan
        .tags
        .keys()
        .map(|(r, _)| r)
        .chain(scan.manifests.keys().map(|(r, _)| r))
        .chain(scan.links.keys().map(|(r, _)| r));
    let missing: BTreeSet<&String> = used.filter(|r| !scan.repos.contains(*r)).collect();
    for repo in missing {
        f.problem(Kind::RepoMissing, repo.as_str(), "has content but no repository row");
        f.repairs.push(Repair::AddRepo {
            repo: repo.clone(),
            now: now_ms(),
        });
    }
}

fn check_uploads(scan: &Scan, staging: &[String], f: &mut Findings) {
    f.checked.uploads = scan.uploads.len() as u64;
    for id in scan.uploads.keys().filter(|id| !staging.contains(id)) {
        f.problem(
            Kind::UploadFileMissing,
            id.as_str(),
            "upload session has no staging file",
        );
        f.repairs.push(Repair::DropUpload { id: id.clone() });
    }
    for name in staging.iter().filter(|n| !scan.uploads.contains_key(*n)) {
        f.problem(
            Kind::StagingOrphan,
            name.as_str(),
            "staging file with no upload session",
        );
        f.files.push(FileFix::RemoveStaging(name.clone()));
    }
}

/// Apply the plan: mark bad blob records missing (under their digest locks) and quarantine
/// their objects, then the metadata repairs in batches, then the other storage fixes. Returns
/// what was done.
async fn repair(registry: &Arc<Registry>, f: &mut Findings) -> Result<Vec<String>, Error> {
    let mut done = Vec::new();
    for (digest, key) in std::mem::take(&mut f.bad_blobs) {
        if registry.mark_blob_missing(&digest).await? {
            done.push(format!(
                "marked blob {digest} missing (clients get BLOB_UNKNOWN until it is pushed again)"
            ));
        }
        if let Some(key) = key {
            let dest = registry.quarantine(&key).await?;
            done.push(format!("moved {key} to {dest}"));
        }
    }
    let repairs = std::mem::take(&mut f.repairs);
    for batch in repairs.chunks(BATCH) {
        let batch = batch.to_vec();
        let shown: Vec<String> = batch.iter().map(|r| format!("{r:?}")).collect();
        let applied = registry.fsck_repair(batch).await?;
        for (what, ok) in shown.into_iter().zip(applied) {
            done.push(if ok {
                format!("applied {what}")
            } else {
                format!("skipped {what} (changed since the scan)")
            });
        }
    }
    let mut tombstoned = Vec::new();
    for fix in std::mem::take(&mut f.files) {
        match fix {
            FileFix::Quarantine(key) => {
                let dest = registry.quarantine(&key).await?;
                done.push(format!("moved {key} to {dest}"));
            }
            FileFix::RemoveStaging(name) => {
                registry.remove_staging_entry(&name).await?;
                done.push(format!("removed staging entry {name}"));
            }
            FileFix::Unlink(d) => {
                done.push(format!("removed the stored blob of tombstoned {d}"));
                tombstoned.push(d);
            }
        }
    }
    if !tombstoned.is_empty() {
        registry.delete_tombstoned(tombstoned).await?;
    }
    Ok(done)
}
