//! One conformance suite for every metadata backend, as zot's `RunMetaDBTests`: the same checks
//! drive the `MetaStore` trait directly, the way the registry, garbage collection and fsck do.
//! Each check runs against redb and against PostgreSQL (a fresh database of the shared test
//! cluster, `postgres::Postgres`); another backend adds a constructor and a line to `suite!`.
//!
//! What they pin down is the trait's contract, not redb's: repository isolation, the reference
//! checks and counts of a manifest PUT, a failed write leaving nothing, the lexical paging of
//! listings, which tagged manifest is the newest, the web UI's pages of tags, the upload-session rows and the lengths they acknowledge, the
//! HEAD touches two stores over one shared database share (PostgreSQL's cluster), the garbage-collection sweeps re-checking inside their
//! transactions, fsck's compare-and-set, durability across a reopen, and the audit log and
//! notification outbox written with the change they describe.

use std::sync::Arc;

use berth::meta::browse::{TagOrder, TagPage};
use berth::meta::fsck::Repair;
use berth::meta::gc::Policy;
use berth::meta::{
    Action, Actor, AuditEvent, AuditQuery, Audited, BlobState, ManifestRow, Meta, MetaError, MetaStore, NewManifest,
    PgMeta, Protected, Quota, QuotaUsage, ReferrerRow,
};
use berth::oci::{Algorithm, Digest, RepoName, Tag};
use uuid::Uuid;

/// A backend under test, and what keeps it alive.
struct Backend {
    store: Arc<dyn MetaStore>,
    /// Opens the same storage again, as a restarted process would (the old store dropped first).
    reopen: Box<dyn Fn() -> Arc<dyn MetaStore> + Send + Sync>,
    _dir: Option<tempfile::TempDir>,
}

fn redb() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    // Opening blocks (file I/O, and the first write waits for its commit).
    let open = move || {
        let meta = tokio::task::block_in_place(|| Meta::open(&root).unwrap());
        Arc::new(meta) as Arc<dyn MetaStore>
    };
    Backend {
        store: open(),
        reopen: Box::new(open),
        _dir: Some(dir),
    }
}

fn postgres() -> Backend {
    let url = crate::postgres::Postgres::shared().fresh_url();
    let open = move || {
        let meta = tokio::task::block_in_place(|| PgMeta::open(&url, 8).unwrap());
        Arc::new(meta) as Arc<dyn MetaStore>
    };
    Backend {
        store: open(),
        reopen: Box::new(open),
        _dir: None,
    }
}

/// Run one check against every backend.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod redb {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                super::$name(super::redb()).await;
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                super::$name(super::postgres()).await;
            })*
        }
    };
}

suite!(
    audit_events_commit_with_their_change_or_not_at_all,
    the_audit_log_filters_pages_and_prunes,
    blobs_are_readable_only_where_linked,
    mounts_need_the_source_link_or_a_live_blob,
    a_manifest_put_checks_its_references,
    a_failed_write_leaves_nothing,
    referenced_blobs_cannot_be_unlinked,
    deleting_a_manifest_deletes_its_tags,
    one_put_sets_many_tags_or_none,
    protected_tags_neither_move_nor_go,
    listings_page_in_lexical_order,
    the_newest_tagged_manifest_is_the_last_pushed,
    tag_pages_by_name_and_by_push,
    referrers_are_listed_by_subject,
    upload_sessions,
    shared_stores_share_touches,
    gc_sweeps_recheck_inside_the_transaction,
    deleted_content_is_past_its_grace_period,
    tombstoned_blobs_are_absent_until_pushed_again,
    sparse_manifests_count_blobs_before_they_arrive,
    only_empty_old_repositories_are_removed,
    fsck_repairs_are_compare_and_set,
    counts_and_usage,
    quotas_count_referenced_bytes_once_per_group,
    writes_survive_a_reopen,
    blocking_code_waits_for_writes,
);

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

fn tag(name: &str) -> Tag {
    Tag::parse(name).unwrap()
}

fn digest(bytes: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, bytes)
}

/// Record the blob `content` and link it into `repo` at `now`.
async fn blob(s: &dyn MetaStore, repo: &RepoName, content: &[u8], now: u64) -> Digest {
    let d = digest(content);
    s.commit_blob(repo, &d, content.len() as u64, None, now)
        .commit()
        .await
        .unwrap();
    d
}

/// A manifest of `repo` referencing `blobs`, under `tag` if given, its digest derived from `seed`.
fn manifest(repo: &RepoName, seed: &str, blobs: &[(&Digest, u64)], tag: Option<&str>) -> NewManifest {
    let body = format!(r#"{{"schemaVersion":2,"seed":"{seed}"}}"#).into_bytes();
    NewManifest {
        repo: repo.clone(),
        digest: digest(&body),
        row: ManifestRow {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            body,
            subject: None,
            created_ms: 1,
        },
        blobs: blobs.iter().map(|(d, size)| ((*d).clone(), *size)).collect(),
        children: Vec::new(),
        referrer: None,
        tags: tag.map(self::tag).into_iter().collect(),
        sparse: false,
        protected: Protected::default(),
        quotas: Vec::new(),
    }
}

async fn put(s: &dyn MetaStore, m: &NewManifest, now: u64) -> Result<(), MetaError> {
    s.put_manifest(m.clone(), now).commit().await
}

fn policy(cutoff_ms: u64) -> Policy {
    Policy {
        cutoff_ms,
        delete_untagged: true,
    }
}

async fn blobs_are_readable_only_where_linked(backend: Backend) {
    let s = &*backend.store;
    let (a, other) = (repo("suite/a"), repo("suite/b"));
    let d = blob(s, &a, b"layer", 10).await;
    let row = s.linked_blob(&a, &d).await.unwrap().expect("linked where committed");
    assert_eq!(row.size, 5);
    assert!(
        s.linked_blob(&other, &d).await.unwrap().is_none(),
        "not linked elsewhere"
    );
    assert_eq!(s.live_blob(&d).await.unwrap().map(|r| r.size), Some(5));
    assert!(s.live_blob(&digest(b"absent")).await.unwrap().is_none());
    assert_eq!(s.repos(None, 10).await.unwrap().items, ["suite/a"]);
}

async fn mounts_need_the_source_link_or_a_live_blob(backend: Backend) {
    let s = &*backend.store;
    let (a, target, elsewhere) = (repo("suite/a"), repo("suite/m"), repo("suite/x"));
    let d = blob(s, &a, b"layer", 10).await;
    let mount = |from: Option<&RepoName>, d: &Digest| s.mount_blob(&target, d, from, 20).commit();
    assert!(!mount(Some(&elsewhere), &d).await.unwrap(), "not linked in the source");
    assert!(s.linked_blob(&target, &d).await.unwrap().is_none());
    assert!(!mount(None, &digest(b"absent")).await.unwrap(), "no such blob");
    assert!(mount(Some(&a), &d).await.unwrap());
    assert!(s.linked_blob(&target, &d).await.unwrap().is_some());
    let third = repo("suite/n");
    assert!(
        s.mount_blob(&third, &d, None, 20).commit().await.unwrap(),
        "without from: it exists"
    );
}

async fn a_manifest_put_checks_its_references(backend: Backend) {
    let s = &*backend.store;
    let (a, other) = (repo("suite/a"), repo("suite/b"));
    let config = blob(s, &a, b"config", 10).await;
    let foreign = blob(s, &other, b"foreign", 10).await;
    let unlinked = manifest(&a, "1", &[(&config, 6), (&foreign, 7)], None);
    assert!(matches!(put(s, &unlinked, 20).await, Err(MetaError::BlobNotLinked(d)) if d == foreign.as_str()));
    let wrong_size = manifest(&a, "2", &[(&config, 99)], None);
    assert!(matches!(
        put(s, &wrong_size, 20).await,
        Err(MetaError::BlobSizeMismatch { .. })
    ));
    let mut index = manifest(&a, "3", &[], None);
    index.children = vec![digest(b"no such child")];
    assert!(matches!(put(s, &index, 20).await, Err(MetaError::ChildUnknown(_))));

    let image = manifest(&a, "4", &[(&config, 6), (&config, 6)], Some("v1"));
    put(s, &image, 20).await.unwrap();
    index.children = vec![image.digest.clone()];
    put(s, &index, 20).await.unwrap();
    let row = s.manifest(&a, &image.digest).await.unwrap().unwrap();
    assert_eq!(row.body, image.row.body);
    let (by_tag, _) = s.manifest_by_tag(&a, &tag("v1")).await.unwrap().unwrap();
    assert_eq!(by_tag, image.digest.as_str());
    assert!(
        s.manifest(&other, &image.digest).await.unwrap().is_none(),
        "not in another repository"
    );
    let refcount = s.live_blob(&config).await.unwrap().unwrap().refcount;
    assert_eq!(refcount, 1, "a blob listed twice counts once");
    put(s, &image, 30).await.unwrap();
    assert_eq!(
        s.live_blob(&config).await.unwrap().unwrap().refcount,
        1,
        "a re-push counts nothing"
    );
}

async fn a_failed_write_leaves_nothing(backend: Backend) {
    let s = &*backend.store;
    let fresh = repo("suite/fresh");
    let m = manifest(&fresh, "1", &[(&digest(b"never pushed"), 1)], Some("latest"));
    assert!(put(s, &m, 20).await.is_err());
    assert!(s.manifest(&fresh, &m.digest).await.unwrap().is_none());
    assert!(s.manifest_by_tag(&fresh, &tag("latest")).await.unwrap().is_none());
    assert!(
        s.tags(&fresh, None, 10).await.unwrap().is_none(),
        "no repository row either"
    );
    assert!(s.repos(None, 10).await.unwrap().items.is_empty());
}

async fn referenced_blobs_cannot_be_unlinked(backend: Backend) {
    let s = &*backend.store;
    let a = repo("suite/a");
    let config = blob(s, &a, b"config", 10).await;
    let m = manifest(&a, "1", &[(&config, 6)], None);
    put(s, &m, 20).await.unwrap();
    let unlink = || s.unlink_blob(&a, &config).commit();
    assert!(matches!(unlink().await, Err(MetaError::BlobInUse { manifests: 1, .. })));
    s.delete_manifest(&a, &m.digest, Protected::default())
        .commit()
        .await
        .unwrap();
    unlink().await.unwrap();
    assert!(s.linked_blob(&a, &config).await.unwrap().is_none());
    assert!(matches!(unlink().await, Err(MetaError::BlobNotLinked(_))));
    assert!(s.live_blob(&config).await.unwrap().is_some(), "the record stays for GC");
}

async fn deleting_a_manifest_deletes_its_tags(backend: Backend) {
    let s = &*backend.store;
    let a = repo("suite/a");
    let config = blob(s, &a, b"config", 10).await;
    let m = manifest(&a, "1", &[(&config, 6)], Some("one"));
    put(s, &m, 20).await.unwrap();
    put(
        s,
        &NewManifest {
            tags: vec![tag("two")],
            ..m.clone()
        },
        20,
    )
    .await
    .unwrap();
    assert_eq!(s.tags(&a, None, 10).await.unwrap().unwrap().items, ["one", "two"]);
    s.delete_tag(&a, &tag("one"), Protected::default())
        .commit()
        .await
        .unwrap();
    assert!(matches!(
        s.delete_tag(&a, &tag("one"), Protected::default()).commit().await,
        Err(MetaError::ManifestUnknown)
    ));
    assert!(
        s.manifest(&a, &m.digest).await.unwrap().is_some(),
        "a tag delete keeps the manifest"
    );
    s.delete_manifest(&a, &m.digest, Protected::default())
        .commit()
        .await
        .unwrap();
    assert!(s.tags(&a, None, 10).await.unwrap().unwrap().items.is_empty());
    assert!(s.manifest_by_tag(&a, &tag("two")).await.unwrap().is_none());
    assert_eq!(s.live_blob(&config).await.unwrap().unwrap().refcount, 0);
    let again = s.delete_manifest(&a, &m.digest, Protected::default()).commit().await;
    assert!(matches!(again, Err(MetaError::ManifestUnknown)));
}

/// A push by digest with `?tag=` parameters: the manifest and every tag in one transaction,
/// each tag moved from wherever it pointed; a put that fails its checks sets none of them.
async fn one_put_sets_many_tags_or_none(backend: Backend) {
    let s = &*backend.store;
    let a = repo("suite/a");
    let config = blob(s, &a, b"config", 10).await;
    let old = manifest(&a, "old", &[(&config, 6)], Some("v1"));
    put(s, &old, 20).await.unwrap();
    let names = ["latest", "v1", "v1.2", "v1.2.3"];
    let new = NewManifest {
        tags: names.iter().map(|t| tag(t)).collect(),
        ..manifest(&a, "new", &[(&config, 6)], None)
    };
    put(s, &new, 30).await.unwrap();
    assert_eq!(s.tags(&a, None, 10).await.unwrap().unwrap().items, names);
    for name in names {
        let (digest, _) = s.manifest_by_tag(&a, &tag(name)).await.unwrap().unwrap();
        assert_eq!(digest, new.digest.as_str(), "{name}");
    }
    // Moving v1 away left the old manifest untagged: deleting it keeps every tag.
    s.delete_manifest(&a, &old.digest, Protected::default())
        .commit()
        .await
        .unwrap();
    assert_eq!(s.tags(&a, None, 10).await.unwrap().unwrap().items, names);
    // A put whose blob is missing sets no tag at all.
    let missing = digest(b"not linked");
    let bad = NewManifest {
        tags: vec![tag("latest"), tag("other")],
        ..manifest(&a, "bad", &[(&missing, 10)], None)
    };
    assert!(matches!(put(s, &bad, 40).await, Err(MetaError::BlobNotLinked(_))));
    assert_eq!(s.tags(&a, None, 10).await.unwrap().unwrap().items, names);
    let (latest, _) = s.manifest_by_tag(&a, &tag("latest")).await.unwrap().unwrap();
    assert_eq!(latest, new.digest.as_str());
}

/// Protected (immutable) tags: a put may re-point one at the manifest it already names, never
/// at another, and nothing of a refused put is written; neither the tag nor its manifest can
/// be deleted; unprotected tags beside it move as usual.
async fn protected_tags_neither_move_nor_go(backend: Backend) {
    let s = &*backend.store;
    let a = repo("suite/a");
    let config = blob(s, &a, b"config", 10).await;
    let guard = || Protected::new(|t: &str| t.starts_with('v'));
    let v1 = NewManifest {
        protected: guard(),
        ..manifest(&a, "v1", &[(&config, 6)], Some("v1"))
    };
    put(s, &v1, 20).await.unwrap();
    put(s, &v1, 21).await.unwrap();
    let other = NewManifest {
        tags: vec![tag("latest"), tag("v1")],
        protected: guard(),
        ..manifest(&a, "other", &[(&config, 6)], None)
    };
    assert!(matches!(put(s, &other, 30).await, Err(MetaError::TagImmutable(t)) if t == "v1"));
    assert!(
        s.manifest(&a, &other.digest).await.unwrap().is_none(),
        "nothing written"
    );
    assert!(s.manifest_by_tag(&a, &tag("latest")).await.unwrap().is_none());
    let deleted = s.delete_tag(&a, &tag("v1"), guard()).commit().await;
    assert!(matches!(deleted, Err(MetaError::TagImmutable(_))));
    let deleted = s.delete_manifest(&a, &v1.digest, guard()).commit().await;
    assert!(matches!(deleted, Err(MetaError::TagImmutable(_))));
    let (at, _) = s.manifest_by_tag(&a, &tag("v1")).await.unwrap().unwrap();
    assert_eq!(at, v1.digest.as_str());
    let latest = NewManifest {
        tags: vec![tag("latest")],
        protected: guard(),
        ..manifest(&a, "other", &[(&config, 6)], None)
    };
    put(s, &latest, 40).await.unwrap();
}

async fn listings_page_in_lexical_order(backend: Backend) {
    let s = &*backend.store;
    let a = repo("suite/a");
    let config = blob(s, &a, b"config", 10).await;
    for t in ["b", "a", "c1", "c0"] {
        put(s, &manifest(&a, t, &[(&config, 6)], Some(t)), 20).await.unwrap();
    }
    let first = s.tags(&a, None, 2).await.unwrap().unwrap();
    assert_eq!(first.items, ["a", "b"]);
    assert!(first.more);
    let rest = s.tags(&a, Some("b"), 2).await.unwrap().unwrap();
    assert_eq!(rest.items, ["c0", "c1"]);
    assert!(!rest.more);
    let after_any = s.tags(&a, Some("bz"), 10).await.unwrap().unwrap();
    assert_eq!(after_any.items, ["c0", "c1"], "a cursor need not be a tag");
    assert!(s.tags(&repo("suite/none"), None, 10).await.unwrap().is_none());
    for name in ["suite/z", "suite/m", "other"] {
        blob(s, &repo(name), b"config", 10).await;
    }
    let page = s.repos(None, 2).await.unwrap();
    assert_eq!(page.items, ["other", "suite/a"]);
    assert!(page.more);
    let page = s.repos(Some("suite/a"), 10).await.unwrap();
    assert_eq!(page.items, ["suite/m", "suite/z"]);
    assert!(!page.more);
}

async fn the_newest_tagged_manifest_is_the_last_pushed(backend: Backend) {
    let s = &*backend.store;
    let a = repo("suite/a");
    let config = blob(s, &a, b"config", 10).await;
    assert!(s.newest_tagged_manifest(&a).await.unwrap().is_none(), "no tags yet");
    let (one, two, loose) = (
        manifest(&a, "1", &[(&config, 6)], Some("one")),
        manifest(&a, "2", &[(&config, 6)], Some("two")),
        manifest(&a, "3", &[(&config, 6)], None),
    );
    put(s, &one, 20).await.unwrap();
    put(s, &two, 30).await.unwrap();
    put(s, &loose, 40).await.unwrap();
    let digest_of = |found: Option<(String, ManifestRow)>| found.map(|(d, _)| d);
    let found = s.newest_tagged_manifest(&a).await.unwrap();
    assert_eq!(found.as_ref().map(|(_, row)| &row.body), Some(&two.row.body));
    assert_eq!(
        digest_of(found),
        Some(two.digest.to_string()),
        "untagged ones do not count"
    );
    // A re-push by digest makes a tagged manifest the newest again.
    put(
        s,
        &NewManifest {
            tags: Vec::new(),
            ..one.clone()
        },
        50,
    )
    .await
    .unwrap();
    assert_eq!(
        digest_of(s.newest_tagged_manifest(&a).await.unwrap()),
        Some(one.digest.to_string())
    );
    // Untagged, it no longer counts.
    s.delete_tag(&a, &tag("one"), Protected::default())
        .commit()
        .await
        .unwrap();
    assert_eq!(
        digest_of(s.newest_tagged_manifest(&a).await.unwrap()),
        Some(two.digest.to_string())
    );
    assert!(s.newest_tagged_manifest(&repo("suite/none")).await.unwrap().is_none());
}

/// The names of a page's tags.
fn names(page: &TagPage) -> Vec<&str> {
    page.tags.iter().map(|t| t.tag.as_str()).collect()
}

async fn tag_pages_by_name_and_by_push(backend: Backend) {
    let s = &*backend.store;
    let a = repo("suite/a");
    let config = blob(s, &a, b"config", 10).await;
    // Pushed at 20, 30, 30, 40; `b1` and `a1` tie.
    for (t, now) in [("c1", 20), ("b1", 30), ("a1", 30), ("d2", 40)] {
        put(s, &manifest(&a, t, &[(&config, 6)], Some(t)), now).await.unwrap();
    }
    let a = &a;
    let page = |filter: &'static str, order: TagOrder, n: usize| async move {
        s.tag_page(a, filter, &order, n).await.unwrap().unwrap()
    };
    let first = page("", TagOrder::Pushed { page: 1 }, 3).await;
    assert_eq!(names(&first), ["d2", "a1", "b1"], "newest first, ties by name");
    assert_eq!((first.matching, first.more, first.page), (Some(4), true, 1));
    assert_eq!(first.tags[0].updated_ms, 40);
    let second = page("", TagOrder::Pushed { page: 2 }, 3).await;
    assert_eq!(names(&second), ["c1"]);
    assert!(!second.more);
    let past = page("", TagOrder::Pushed { page: 9 }, 3).await;
    assert_eq!(
        (names(&past), past.page),
        (vec!["c1"], 2),
        "a page past the last is the last"
    );
    let filtered = page("1", TagOrder::Pushed { page: 1 }, 10).await;
    assert_eq!((names(&filtered), filtered.matching), (vec!["a1", "b1", "c1"], Some(3)));
    // Re-pushing a tag makes it the newest.
    put(s, &manifest(a, "c1", &[(&config, 6)], Some("c1")), 50)
        .await
        .unwrap();
    assert_eq!(names(&page("", TagOrder::Pushed { page: 1 }, 1).await), ["c1"]);
    // By name, from a cursor that need not be a tag.
    let by_name = page("", TagOrder::Name { after: None }, 2).await;
    assert_eq!((names(&by_name), by_name.more), (vec!["a1", "b1"], true));
    let rest = page(
        "",
        TagOrder::Name {
            after: Some("b".into()),
        },
        2,
    )
    .await;
    assert_eq!((names(&rest), rest.more), (vec!["b1", "c1"], true));
    let last = page(
        "",
        TagOrder::Name {
            after: Some("c1".into()),
        },
        2,
    )
    .await;
    assert_eq!((names(&last), last.more), (vec!["d2"], false));
    let digits = page("2", TagOrder::Name { after: None }, 2).await;
    assert_eq!((names(&digits), digits.matching), (vec!["d2"], None));
    // The tags of one manifest, from the reverse index.
    let shared = manifest(a, "shared", &[(&config, 6)], Some("x"));
    put(s, &shared, 60).await.unwrap();
    put(
        s,
        &NewManifest {
            tags: vec![tag("y")],
            ..shared.clone()
        },
        61,
    )
    .await
    .unwrap();
    assert_eq!(s.manifest_tags(a, &shared.digest).await.unwrap(), ["x", "y"]);
    assert!(
        s.tag_page(&repo("suite/none"), "", &TagOrder::Pushed { page: 1 }, 5)
            .await
            .unwrap()
            .is_none()
    );
}

async fn referrers_are_listed_by_subject(backend: Backend) {
    let s = &*backend.store;
    let a = repo("suite/a");
    let config = blob(s, &a, b"config", 10).await;
    let subject = manifest(&a, "subject", &[(&config, 6)], Some("v1"));
    put(s, &subject, 20).await.unwrap();
    let mut sig = manifest(&a, "sig", &[(&config, 6)], None);
    sig.row.subject = Some(subject.digest.to_string());
    sig.referrer = Some(ReferrerRow {
        media_type: sig.row.media_type.clone(),
        size: sig.row.body.len() as u64,
        artifact_type: Some("application/example.sig".into()),
        annotations: std::collections::BTreeMap::new(),
    });
    put(s, &sig, 20).await.unwrap();
    let listed = s.referrers(&a, &subject.digest).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, sig.digest.as_str());
    assert_eq!(listed[0].1.artifact_type.as_deref(), Some("application/example.sig"));
    assert!(s.referrers(&repo("suite/b"), &subject.digest).await.unwrap().is_empty());
    s.delete_manifest(&a, &sig.digest, Protected::default())
        .commit()
        .await
        .unwrap();
    assert!(s.referrers(&a, &subject.digest).await.unwrap().is_empty());
}

async fn upload_sessions(backend: Backend) {
    let s = &*backend.store;
    let a = repo("suite/a");
    let (old, young) = (Uuid::new_v4(), Uuid::new_v4());
    s.create_upload(old, &a, Algorithm::Sha256, 100).commit().await.unwrap();
    s.create_upload(young, &a, Algorithm::Sha512, 300)
        .commit()
        .await
        .unwrap();
    let row = s.upload(old).await.unwrap().unwrap();
    assert_eq!((row.repo.as_str(), row.algorithm), ("suite/a", Algorithm::Sha256));
    let row = s.upload(young).await.unwrap().unwrap();
    assert_eq!(row.algorithm, Algorithm::Sha512, "a session keeps its algorithm");
    assert_eq!(row.appended, 0);
    s.set_upload_length(young, 5 << 20).commit().await.unwrap();
    let row = s.upload(young).await.unwrap().unwrap();
    assert_eq!(
        (row.appended, row.algorithm, row.created_ms),
        (5 << 20, Algorithm::Sha512, 300)
    );
    assert!(s.upload(Uuid::new_v4()).await.unwrap().is_none());
    assert_eq!(s.upload_count().await.unwrap(), 2);
    let mut ids = s.upload_ids().await.unwrap();
    ids.sort_unstable();
    let mut want = vec![old, young];
    want.sort_unstable();
    assert_eq!(ids, want);
    assert_eq!(s.stale_uploads(200).await.unwrap(), [old]);
    s.commit_blob(&a, &digest(b"x"), 1, Some(old), 400)
        .commit()
        .await
        .unwrap();
    assert!(
        s.upload(old).await.unwrap().is_none(),
        "the blob's commit closes its session"
    );
    s.delete_upload(young).commit().await.unwrap();
    s.delete_upload(young).commit().await.unwrap();
    s.set_upload_length(young, 1).commit().await.unwrap();
    assert!(
        s.upload(young).await.unwrap().is_none(),
        "a closed session stays closed"
    );
    assert_eq!(s.upload_count().await.unwrap(), 0);
}

/// Two stores over one shared database (two nodes) see each other's HEAD touches, read under
/// the digests' locks or all at once, and prune them. A store one process owns has no cluster.
async fn shared_stores_share_touches(backend: Backend) {
    let Some(one) = backend.store.shared_locks() else {
        return;
    };
    let other = (backend.reopen)();
    let other = other.shared_locks().expect("the same backend");
    let d = digest(b"touched");
    let held = one.lock_digest(d.as_str()).await.unwrap();
    held.touch(d.as_str(), 500).await.unwrap();
    drop(held);
    assert!(other.touched_since(400).await.unwrap().contains(d.as_str()));
    assert!(other.touched_since(501).await.unwrap().is_empty());
    let held = other.lock_digests([d.as_str(), "sha256:00"]).await.unwrap();
    assert_eq!(held.touched(&[d.as_str(), "sha256:00"], 500).await.unwrap().len(), 1);
    drop(held);
    assert_eq!(one.prune_touches(600).await.unwrap(), 1);
    assert!(other.touched_since(0).await.unwrap().is_empty());
}

async fn gc_sweeps_recheck_inside_the_transaction(backend: Backend) {
    let s = &*backend.store;
    let a = repo("suite/a");
    let (kept, loose) = (blob(s, &a, b"kept", 10).await, blob(s, &a, b"loose", 10).await);
    let tagged = manifest(&a, "tagged", &[(&kept, 4)], Some("v1"));
    let untagged = manifest(&a, "untagged", &[(&kept, 4)], None);
    put(s, &tagged, 20).await.unwrap();
    put(s, &untagged, 20).await.unwrap();
    let snap = s.gc_snapshot().await.unwrap();
    assert_eq!(snap.manifests.len(), 2);
    assert_eq!(snap.links.len(), 2);

    let both = [(a.clone(), tagged.digest.clone()), (a.clone(), untagged.digest.clone())];
    assert_eq!(
        s.gc_delete_manifests(&both, policy(10)).commit().await.unwrap(),
        0,
        "young"
    );
    assert_eq!(s.gc_delete_manifests(&both, policy(1000)).commit().await.unwrap(), 1);
    assert!(s.manifest(&a, &tagged.digest).await.unwrap().is_some(), "a tag anchors");
    assert!(s.manifest(&a, &untagged.digest).await.unwrap().is_none());

    let links = [(a.clone(), kept.clone()), (a.clone(), loose.clone())];
    assert_eq!(s.gc_remove_links(&links, policy(5)).commit().await.unwrap(), 0, "young");
    assert_eq!(
        s.gc_remove_links(&links, policy(1000)).commit().await.unwrap(),
        1,
        "only unreferenced"
    );
    assert!(s.linked_blob(&a, &kept).await.unwrap().is_some());
    assert!(s.linked_blob(&a, &loose).await.unwrap().is_none());
}

/// Content a manifest referenced after its upload, and none references now, is collectable
/// inside the grace period (its push is over); an upload or mount since, in the repository,
/// puts its link back under the grace period, and a blob still linked is never collected.
async fn deleted_content_is_past_its_grace_period(backend: Backend) {
    let s = &*backend.store;
    let (a, b) = (repo("suite/a"), repo("suite/b"));
    let (gone, relinked) = (blob(s, &a, b"gone", 10).await, blob(s, &a, b"relinked", 10).await);
    let m = manifest(&a, "m", &[(&gone, 4), (&relinked, 8)], Some("v1"));
    put(s, &m, 20).await.unwrap();
    let snap = s.gc_snapshot().await.unwrap();
    assert!(snap.links.iter().all(|(_, _, l)| l.referenced), "{:?}", snap.links);
    assert!(snap.blobs.iter().all(|(_, r)| r.referenced));
    s.delete_manifest(&a, &m.digest, Protected::default())
        .commit()
        .await
        .unwrap();
    // Uploaded again (a push in flight reusing it), and mounted elsewhere: not referenced since.
    blob(s, &a, b"relinked", 30).await;
    s.mount_blob(&b, &gone, Some(&a), 30).commit().await.unwrap();
    // Every write happened after the cutoff of 5: only referenced-since content may go.
    let links = [
        (a.clone(), gone.clone()),
        (a.clone(), relinked.clone()),
        (b.clone(), gone.clone()),
    ];
    assert_eq!(s.gc_remove_links(&links, policy(5)).commit().await.unwrap(), 1);
    assert!(s.linked_blob(&a, &gone).await.unwrap().is_none());
    assert!(s.linked_blob(&a, &relinked).await.unwrap().is_some(), "uploaded again");
    assert!(s.linked_blob(&b, &gone).await.unwrap().is_some(), "mounted since");
    let both = [gone.clone(), relinked.clone()];
    assert!(
        s.gc_tombstone_blobs(&both, policy(5), 40)
            .commit()
            .await
            .unwrap()
            .is_empty(),
        "still linked"
    );
    s.unlink_blob(&b, &gone).commit().await.unwrap();
    let doomed = s.gc_tombstone_blobs(&both, policy(5), 40).commit().await.unwrap();
    assert_eq!(doomed, [(gone.clone(), 4)], "referenced since its upload, now unlinked");
}

async fn tombstoned_blobs_are_absent_until_pushed_again(backend: Backend) {
    let s = &*backend.store;
    let a = repo("suite/a");
    let (linked, loose) = (blob(s, &a, b"linked", 10).await, blob(s, &a, b"loose", 10).await);
    s.unlink_blob(&a, &loose).commit().await.unwrap();
    let candidates = [linked.clone(), loose.clone(), digest(b"absent")];
    let doomed = s
        .gc_tombstone_blobs(&candidates, policy(1000), 50)
        .commit()
        .await
        .unwrap();
    assert_eq!(doomed, [(loose.clone(), 5)], "only the unlinked one");
    assert!(s.live_blob(&loose).await.unwrap().is_none(), "absent once tombstoned");
    assert_eq!(s.tombstones().await.unwrap(), std::slice::from_ref(&loose));
    s.gc_finish_tombstones(std::slice::from_ref(&loose))
        .commit()
        .await
        .unwrap();
    assert!(s.tombstones().await.unwrap().is_empty());
    assert!(
        s.gc_snapshot()
            .await
            .unwrap()
            .blobs
            .iter()
            .all(|(d, _)| d != loose.as_str())
    );
    blob(s, &a, b"loose", 60).await;
    assert!(
        s.linked_blob(&a, &loose).await.unwrap().is_some(),
        "a push brings it back"
    );
}

/// A pull-through cache stores a manifest before its blobs (`sparse`): the absent blobs get
/// `Remote` records, linked and counted, which a later fetch makes live with the counts intact,
/// and which garbage collection drops once nothing counts them.
async fn sparse_manifests_count_blobs_before_they_arrive(backend: Backend) {
    let s = &*backend.store;
    let a = repo("cache/a");
    let (fetched, never) = (digest(b"fetched"), digest(b"never"));
    let child = digest(b"a child manifest not pulled yet");
    let mut m = manifest(&a, "sparse", &[(&fetched, 7), (&never, 5)], Some("v1"));
    assert!(
        matches!(put(s, &m, 10).await, Err(MetaError::BlobNotLinked(_))),
        "not sparse: checked"
    );
    m.sparse = true;
    m.children = vec![child.clone()];
    put(s, &m, 10).await.unwrap();
    assert!(
        s.live_blob(&fetched).await.unwrap().is_none(),
        "remote is absent to readers"
    );
    assert!(s.linked_blob(&a, &fetched).await.unwrap().is_none());
    let state = |snap: &berth::meta::gc::Snapshot, d: &Digest| {
        snap.blobs.iter().find(|(k, _)| k == d.as_str()).map(|(_, b)| b.clone())
    };
    let snap = s.gc_snapshot().await.unwrap();
    let row = state(&snap, &fetched).unwrap();
    assert_eq!(
        (row.state, row.refcount, row.links, row.size),
        (BlobState::Remote, 1, 1, 7)
    );

    // The fetch lands: live, the counts kept.
    s.commit_blob(&a, &fetched, 7, None, 20).commit().await.unwrap();
    let snap = s.gc_snapshot().await.unwrap();
    let row = state(&snap, &fetched).unwrap();
    assert_eq!((row.state, row.refcount, row.links), (BlobState::Live, 1, 1));
    assert!(s.linked_blob(&a, &fetched).await.unwrap().is_some());

    // Evicted: the manifest goes, the remote row follows once unlinked; no tombstone for it.
    s.delete_manifest(&a, &m.digest, Protected::default())
        .commit()
        .await
        .unwrap();
    let links = [(a.clone(), fetched.clone()), (a.clone(), never.clone())];
    assert_eq!(s.gc_remove_links(&links, policy(1000)).commit().await.unwrap(), 2);
    let doomed = s
        .gc_tombstone_blobs(&[fetched.clone(), never.clone()], policy(1000), 30)
        .commit()
        .await
        .unwrap();
    assert_eq!(
        doomed,
        [(fetched.clone(), 7)],
        "only the fetched one has bytes to delete"
    );
    let snap = s.gc_snapshot().await.unwrap();
    assert!(state(&snap, &never).is_none(), "the remote row is gone");

    // A cached manifest declaring a blob whose deletion is under way makes it remote again,
    // and finishing the deletion keeps that row.
    let again = NewManifest {
        sparse: true,
        ..manifest(&a, "again", &[(&fetched, 7)], None)
    };
    put(s, &again, 40).await.unwrap();
    s.gc_finish_tombstones(std::slice::from_ref(&fetched))
        .commit()
        .await
        .unwrap();
    let snap = s.gc_snapshot().await.unwrap();
    let row = state(&snap, &fetched).unwrap();
    assert_eq!((row.state, row.refcount, row.links), (BlobState::Remote, 1, 1));
}

async fn only_empty_old_repositories_are_removed(backend: Backend) {
    let s = &*backend.store;
    let (full, linked, uploading, young, empty) = (
        repo("r/full"),
        repo("r/linked"),
        repo("r/uploading"),
        repo("r/young"),
        repo("r/empty"),
    );
    let d = blob(s, &full, b"layer", 10).await;
    put(s, &manifest(&full, "m", &[(&d, 5)], Some("v1")), 10).await.unwrap();
    blob(s, &linked, b"linked", 10).await;
    // Emptied, but an upload session is open in it.
    blob(s, &uploading, b"uploading", 10).await;
    s.unlink_blob(&uploading, &digest(b"uploading")).commit().await.unwrap();
    s.create_upload(Uuid::new_v4(), &uploading, Algorithm::Sha256, 10)
        .commit()
        .await
        .unwrap();
    // A repository that held a blob whose link went: nothing left.
    blob(s, &empty, b"gone", 10).await;
    s.unlink_blob(&empty, &digest(b"gone")).commit().await.unwrap();
    blob(s, &young, b"young", 500).await;
    s.unlink_blob(&young, &digest(b"young")).commit().await.unwrap();
    let all = [
        full.clone(),
        linked.clone(),
        uploading.clone(),
        young.clone(),
        empty.clone(),
    ];
    let removed = s.gc_remove_empty_repos(&all, policy(100)).commit().await.unwrap();
    assert_eq!(removed, 1);
    let names = s.repos(None, 10).await.unwrap().items;
    assert_eq!(names, ["r/full", "r/linked", "r/uploading", "r/young"]);
}

async fn fsck_repairs_are_compare_and_set(backend: Backend) {
    let s = &*backend.store;
    let a = repo("suite/a");
    let d = blob(s, &a, b"layer", 10).await;
    let scan = s.fsck_scan().await.unwrap();
    assert_eq!(scan.blobs[d.as_str()].links, 1);
    assert!(scan.repos.contains("suite/a"));
    let set = |seen| Repair::SetBlobLinks {
        digest: d.to_string(),
        seen,
        want: 7,
    };
    assert_eq!(
        s.fsck_repair(vec![set(3), set(1)]).commit().await.unwrap(),
        [false, true]
    );
    assert_eq!(s.live_blob(&d).await.unwrap().unwrap().links, 7);
    let missing = Repair::MarkBlobMissing {
        digest: d.to_string(),
        now: 20,
    };
    assert_eq!(s.fsck_repair(vec![missing]).commit().await.unwrap(), [true]);
    assert!(
        s.linked_blob(&a, &d).await.unwrap().is_none(),
        "a missing blob is absent"
    );
}

async fn counts_and_usage(backend: Backend) {
    let s = &*backend.store;
    let (a, other) = (repo("suite/a"), repo("suite/b"));
    let shared = blob(s, &a, b"shared", 10).await;
    s.mount_blob(&other, &shared, Some(&a), 10).commit().await.unwrap();
    let own = blob(s, &a, b"own", 10).await;
    put(s, &manifest(&a, "1", &[(&shared, 6), (&own, 3)], Some("v1")), 20)
        .await
        .unwrap();
    let c = s.counts().await.unwrap();
    assert_eq!(
        (c.blobs, c.stored_bytes, c.manifests, c.tags, c.repositories),
        (2, 9, 1, 1, 2)
    );
    let usage = s.usage().await.unwrap();
    assert_eq!((usage.stored_bytes, usage.logical_bytes, usage.blobs), (9, 15, 2));
    let first = &usage.repositories[0];
    assert_eq!(
        (first.name.as_str(), first.bytes, first.exclusive_bytes),
        ("suite/a", 9, 3)
    );
}

/// A quota over `team/*`: what its manifests reference counts once per group (a blob linked
/// only, or referenced outside the group, does not count); a new manifest whose new bytes
/// would pass the limit is refused with nothing written, one adding no new bytes always
/// passes, and deleting a manifest gives its bytes back at once.
async fn quotas_count_referenced_bytes_once_per_group(backend: Backend) {
    let s = &*backend.store;
    let quota = Quota::new("team/*".into(), 10, "team/".into(), |r: &str| r.starts_with("team/"));
    let usage = || async { s.quota_usage(vec![quota.clone()]).await.unwrap() };
    let used = |used_bytes| {
        vec![QuotaUsage {
            quota: "team/*".into(),
            used_bytes,
            max_bytes: 10,
        }]
    };
    let (a, b, outside) = (repo("team/a"), repo("team/b"), repo("teamx/c"));
    let limited = |m: NewManifest| NewManifest {
        quotas: vec![quota.clone()],
        ..m
    };
    let shared = blob(s, &a, b"shared", 10).await; // 6 bytes
    s.mount_blob(&b, &shared, Some(&a), 10).commit().await.unwrap();
    s.mount_blob(&outside, &shared, Some(&a), 10).commit().await.unwrap();
    let big = blob(s, &b, b"big!!", 10).await; // 5 bytes
    // Referenced outside the group only: nothing counts.
    put(s, &manifest(&outside, "o", &[(&shared, 6)], None), 20)
        .await
        .unwrap();
    assert_eq!(usage().await, used(0));
    put(s, &limited(manifest(&a, "1", &[(&shared, 6)], Some("v1"))), 20)
        .await
        .unwrap();
    assert_eq!(usage().await, used(6));
    // The shared blob again, from the group's other repository: counted once.
    put(s, &limited(manifest(&b, "2", &[(&shared, 6)], None)), 20)
        .await
        .unwrap();
    assert_eq!(usage().await, used(6));
    // 6 + 5 > 10: refused, nothing written.
    let over = limited(manifest(&b, "3", &[(&shared, 6), (&big, 5)], Some("big")));
    match put(s, &over, 30).await {
        Err(MetaError::QuotaExceeded {
            quota,
            used,
            limit,
            adds,
        }) => assert_eq!((quota.as_str(), used, limit, adds), ("team/*", 6, 10, 5)),
        other => panic!("{other:?}"),
    }
    assert!(s.manifest(&b, &over.digest).await.unwrap().is_none());
    assert!(s.tags(&b, None, 10).await.unwrap().unwrap().items.is_empty());
    assert_eq!(usage().await, used(6));
    // Under a limit lowered below usage, a manifest adding nothing new still passes.
    let lowered = Quota::new("team/*".into(), 1, "team/".into(), |r: &str| r.starts_with("team/"));
    let retag = NewManifest {
        quotas: vec![lowered],
        ..manifest(&a, "4", &[(&shared, 6)], Some("v2"))
    };
    put(s, &retag, 40).await.unwrap();
    // Deleting every group manifest referencing the shared blob frees its bytes at once.
    for (r, m) in [(&a, "1"), (&b, "2"), (&a, "4")] {
        let d = manifest(r, m, &[], None).digest;
        s.delete_manifest(r, &d, Protected::default()).commit().await.unwrap();
    }
    assert_eq!(usage().await, used(0));
    put(s, &limited(manifest(&b, "5", &[(&big, 5)], None)), 50)
        .await
        .unwrap();
    assert_eq!(usage().await, used(5));
}

async fn writes_survive_a_reopen(backend: Backend) {
    let a = repo("suite/a");
    let d = blob(&*backend.store, &a, b"layer", 10).await;
    let pushed = manifest(&a, "1", &[(&d, 5)], Some("v1"));
    put(&*backend.store, &pushed, 20).await.unwrap();
    drop(backend.store);
    let s = (backend.reopen)();
    assert!(s.linked_blob(&a, &d).await.unwrap().is_some());
    assert!(s.manifest_by_tag(&a, &tag("v1")).await.unwrap().is_some());
}

async fn blocking_code_waits_for_writes(backend: Backend) {
    let s = Arc::clone(&backend.store);
    let a = repo("suite/a");
    let d = digest(b"layer");
    let (a2, d2) = (a.clone(), d.clone());
    tokio::task::spawn_blocking(move || s.commit_blob(&a2, &d2, 5, None, 10).wait())
        .await
        .unwrap()
        .unwrap();
    assert!(backend.store.linked_blob(&a, &d).await.unwrap().is_some());
}

/// An event of `action` on `repo` at `now`, bound for `notify`.
fn event(action: Action, repo: &RepoName, user: &str, now: u64, notify: &[&str]) -> Audited {
    let actor = Actor {
        user: Some(user.into()),
        ..Actor::default()
    };
    Audited {
        event: AuditEvent {
            repository: Some(repo.to_string()),
            ..AuditEvent::new(action, &actor, now)
        },
        notify: notify.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn everything() -> AuditQuery {
    AuditQuery {
        limit: 1000,
        ..AuditQuery::default()
    }
}

async fn audit_events_commit_with_their_change_or_not_at_all(backend: Backend) {
    let s = &*backend.store;
    let a = repo("suite/a");
    let d = blob(s, &a, b"layer", 10).await;
    let pushed = event(Action::Push, &a, "alice", 20, &["http://hook/1", "http://hook/2"]);
    let good = manifest(&a, "1", &[(&d, 5)], Some("v1"));
    s.put_manifest(good, 20)
        .audited(move |()| Some(pushed.clone()))
        .commit()
        .await
        .unwrap();
    // A write that fails inside its transaction records no event and queues nothing.
    let missing = digest(b"absent");
    let bad = manifest(&a, "2", &[(&missing, 3)], Some("v2"));
    let refused = event(Action::Push, &a, "mallory", 21, &["http://hook/1"]);
    let failed = s
        .put_manifest(bad, 21)
        .audited(move |()| Some(refused.clone()))
        .commit()
        .await;
    assert!(matches!(failed, Err(MetaError::BlobNotLinked(_))));
    // A hook may decline: a mount that linked nothing.
    let mount = event(Action::Mount, &a, "alice", 22, &["http://hook/1"]);
    let linked = s
        .mount_blob(&repo("suite/b"), &missing, None, 22)
        .audited(move |linked| linked.then(|| mount.clone()))
        .commit()
        .await
        .unwrap();
    assert!(!linked);
    let log = s.audit(everything()).await.unwrap().events;
    assert_eq!(log.len(), 1, "{log:?}");
    let (id, recorded) = &log[0];
    assert_eq!(
        (recorded.action, recorded.actor.user.as_deref()),
        (Action::Push, Some("alice"))
    );
    let outbox = s.outbox().await.unwrap();
    let keys: Vec<(&str, u64)> = outbox.iter().map(|(e, i, _)| (e.as_str(), *i)).collect();
    assert_eq!(keys, [("http://hook/1", *id), ("http://hook/2", *id)]);
    // Delivered: removed for one endpoint; a failed attempt updates the other's row.
    s.outbox_update("http://hook/1", vec![(*id, None)])
        .commit()
        .await
        .unwrap();
    let mut row = outbox[1].2.clone();
    row.attempts = 1;
    s.outbox_update("http://hook/2", vec![(*id, Some(row.clone()))])
        .commit()
        .await
        .unwrap();
    drop(backend.store);
    let s = (backend.reopen)();
    let outbox = s.outbox().await.unwrap();
    assert_eq!(
        outbox,
        [("http://hook/2".to_owned(), *id, row)],
        "the outbox survives a reopen"
    );
    // Updating a row already removed does not bring it back.
    s.outbox_update("http://hook/1", vec![(*id, Some(outbox[0].2.clone()))])
        .commit()
        .await
        .unwrap();
    assert_eq!(s.outbox().await.unwrap().len(), 1);
}

async fn the_audit_log_filters_pages_and_prunes(backend: Backend) {
    let s = &*backend.store;
    let (a, b) = (repo("suite/a"), repo("suite/b"));
    for (i, (r, user, action)) in [
        (&a, "alice", Action::Push),
        (&b, "bob", Action::Push),
        (&a, "bob", Action::TagDelete),
        (&a, "alice", Action::Login),
    ]
    .into_iter()
    .enumerate()
    {
        s.record(event(action, r, user, 100 + i as u64 * 10, &[]))
            .commit()
            .await
            .unwrap();
    }
    let ids = |page: berth::meta::AuditPage| page.events.iter().map(|(_, e)| e.time_ms).collect::<Vec<_>>();
    assert_eq!(
        ids(s.audit(everything()).await.unwrap()),
        [130, 120, 110, 100],
        "newest first"
    );
    let q = |f: fn(&mut AuditQuery)| {
        let mut q = everything();
        f(&mut q);
        q
    };
    let by_repo = q(|q| q.repository = Some("suite/a".into()));
    assert_eq!(ids(s.audit(by_repo).await.unwrap()), [130, 120, 100]);
    let by_user = q(|q| q.user = Some("bob".into()));
    assert_eq!(ids(s.audit(by_user).await.unwrap()), [120, 110]);
    let by_action = q(|q| q.action = Some(Action::Push));
    assert_eq!(ids(s.audit(by_action).await.unwrap()), [110, 100]);
    let window = q(|q| {
        q.since_ms = Some(110);
        q.until_ms = Some(120);
    });
    assert_eq!(ids(s.audit(window).await.unwrap()), [120, 110]);
    let first = s.audit(q(|q| q.limit = 3)).await.unwrap();
    assert_eq!(ids(first.clone()), [130, 120, 110]);
    let rest = s
        .audit(AuditQuery {
            before: first.next,
            limit: 3,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!((ids(rest.clone()), rest.next), (vec![100], None));
    assert_eq!(s.prune_audit(120).commit().await.unwrap(), 2);
    assert_eq!(ids(s.audit(everything()).await.unwrap()), [130, 120]);
    // Ids are never reused, even once pruned.
    assert_eq!(s.prune_audit(1000).commit().await.unwrap(), 2);
    s.record(event(Action::Gc, &a, "carol", 2000, &[]))
        .commit()
        .await
        .unwrap();
    let (id, _) = s.audit(everything()).await.unwrap().events[0].clone();
    assert!(id > 4, "{id}");
}
