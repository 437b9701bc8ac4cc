//! `berth fsck`: a store with shared layers, an index and a referrer is damaged in one way at
//! a time. fsck must report exactly that damage (and nothing on a clean store), `--repair` must
//! fix what can be fixed and list what it did, a second fsck must be clean (once a blob whose
//! content was lost is pushed again), and skopeo must still pull the undamaged images
//! byte-identical. Also: exit codes, `--quick`, and fsck through a running server.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use redb::{Database, ReadableTable};
use serde_json::{Value, json};

use crate::harness::{Berth, client, push_blob, push_image, push_manifest, random_bytes, sha256};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The images of the test store.
struct Store {
    berth: Berth,
    shared: Vec<u8>,
    only_a: Vec<u8>,
    only_b: Vec<u8>,
    b_digest: String,
    index: Vec<u8>,
}

async fn build_store() -> Store {
    let berth = Berth::start();
    let (shared, only_a, only_b) = (
        random_bytes(40_000, 1),
        random_bytes(30_000, 2),
        random_bytes(20_000, 3),
    );
    let (a_digest, a_body) = push_image(&berth, "fsck/app", "a", &[&shared, &only_a]).await;
    let (b_digest, _) = push_image(&berth, "fsck/app", "b", &[&shared, &only_b]).await;
    // A signature-like referrer of image a.
    push_blob(&berth, "fsck/app", b"{}").await;
    let sig = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": a_digest, "size": a_body.len()},
    }))
    .unwrap();
    push_manifest(&berth, "fsck/app", &sha256(&sig), OCI_MANIFEST, &sig).await;
    // A two-platform index in another repository.
    let mut children = Vec::new();
    for (arch, layer) in [("amd64", random_bytes(10_000, 4)), ("arm64", random_bytes(10_000, 5))] {
        let config = format!(r#"{{"architecture":"{arch}","os":"linux"}}"#);
        let config_digest = push_blob(&berth, "fsck/multi", config.as_bytes()).await;
        let layer_digest = push_blob(&berth, "fsck/multi", &layer).await;
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
        }))
        .unwrap();
        push_manifest(&berth, "fsck/multi", &sha256(&m), OCI_MANIFEST, &m).await;
        children.push(json!({"mediaType": OCI_MANIFEST, "digest": sha256(&m), "size": m.len(),
                             "platform": {"architecture": arch, "os": "linux"}}));
    }
    let index =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children})).unwrap();
    push_manifest(&berth, "fsck/multi", "all", OCI_INDEX, &index).await;
    Store {
        berth,
        shared,
        only_a,
        only_b,
        b_digest,
        index,
    }
}

/// Run `berth fsck` on a root; returns the exit code and the JSON report.
fn fsck(root: &Path, args: &[&str]) -> (i32, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BERTH_")) {
        cmd.env_remove(k);
    }
    let out = cmd
        .arg("fsck")
        .arg("--root")
        .arg(root)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let code = out.status.code().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "fsck printed no JSON ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, report)
}

pub fn kinds(report: &Value) -> BTreeSet<String> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn set(kinds: &[&str]) -> BTreeSet<String> {
    kinds.iter().map(|k| (*k).to_owned()).collect()
}

fn blob_path(root: &Path, bytes: &[u8]) -> PathBuf {
    let digest = sha256(bytes);
    let hex = digest.strip_prefix("sha256:").unwrap();
    root.join("blobs/sha256").join(&hex[..2]).join(&hex[2..4]).join(hex)
}

fn writable(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// skopeo pulls the index (never damaged here) with every platform, byte-identical.
fn skopeo_pulls_index(berth: &Berth, index: &[u8]) {
    let out_dir = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:all", out_dir.path().display());
    let status = Command::new("skopeo")
        .args(["copy", "--all", "--preserve-digests", "--src-tls-verify=false"])
        .arg(format!("docker://{}/fsck/multi:all", berth.host))
        .arg(&dest)
        .output()
        .expect("skopeo is required: apt-get install skopeo");
    assert!(
        status.status.success(),
        "skopeo pull: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let hex = sha256(index).strip_prefix("sha256:").unwrap().to_owned();
    let pulled =
        std::fs::read(out_dir.path().join("blobs/sha256").join(hex)).expect("the index blob in the OCI layout");
    assert_eq!(pulled, index);
}

/// The whole round for one kind of damage: fsck finds exactly `found`, repair leaves `left`
/// (the images whose content is gone), pushing `lost` again makes the store clean, and the
/// undamaged index pulls byte-identical throughout.
async fn round(store: Store, damage: impl FnOnce(&Path), found: &[&str], left: &[&str], lost: Option<&[u8]>) -> Store {
    let mut store = store;
    let root = store.berth.root.clone();
    store.berth.stop();
    damage(&root);
    let (code, report) = fsck(&root, &[]);
    assert_eq!(kinds(&report), set(found), "fsck found: {report:#}");
    assert_eq!(code, 1);
    let (code, repaired) = fsck(&root, &["--repair"]);
    assert!(
        !repaired["repairs"].as_array().unwrap().is_empty(),
        "repair lists its actions: {repaired:#}"
    );
    assert_eq!(code, i32::from(!left.is_empty()), "{repaired:#}");
    let (_, after) = fsck(&root, &[]);
    assert_eq!(kinds(&after), set(left), "after repair: {after:#}");
    store.berth.restart();
    skopeo_pulls_index(&store.berth, &store.index);
    if let Some(bytes) = lost {
        push_blob(&store.berth, "fsck/app", bytes).await;
        store.berth.stop();
        let (code, clean) = fsck(&root, &[]);
        assert_eq!(
            (code, kinds(&clean)),
            (0, set(&[])),
            "after pushing the lost blob again: {clean:#}"
        );
    }
    store
}

#[tokio::test]
async fn clean_store_reports_nothing() {
    let mut store = build_store().await;
    let root = store.berth.root.clone();
    store.berth.stop();
    let (code, report) = fsck(&root, &[]);
    assert_eq!((code, kinds(&report)), (0, set(&[])), "{report:#}");
    assert_eq!(report["database_ok"], true);
    assert_eq!(
        report["checked"]["manifests"], 6,
        "a, b, the referrer, the index and its two children"
    );
    assert!(report["checked"]["bytes_hashed"].as_u64().unwrap() >= 110_000);
}

#[tokio::test]
async fn flipped_byte_in_a_blob() {
    let store = build_store().await;
    let lost = store.only_a.clone();
    let damage = |root: &Path| {
        let path = blob_path(root, &lost);
        writable(&path);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
    };
    let only_a = store.only_a.clone();
    round(
        store,
        damage,
        &["blob_corrupt", "manifest_blob_missing"],
        &["manifest_blob_missing"],
        Some(&only_a),
    )
    .await;
}

#[tokio::test]
async fn truncated_blob() {
    let store = build_store().await;
    let lost = store.only_b.clone();
    let damage = |root: &Path| {
        let path = blob_path(root, &lost);
        writable(&path);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100)
            .unwrap();
    };
    let only_b = store.only_b.clone();
    round(
        store,
        damage,
        &["blob_size_mismatch", "manifest_blob_missing"],
        &["manifest_blob_missing"],
        Some(&only_b),
    )
    .await;
}

#[tokio::test]
async fn deleted_blob_file() {
    let store = build_store().await;
    let lost = store.shared.clone();
    let damage = |root: &Path| std::fs::remove_file(blob_path(root, &lost)).unwrap();
    let shared = store.shared.clone();
    round(
        store,
        damage,
        &["blob_missing", "manifest_blob_missing"],
        &["manifest_blob_missing"],
        Some(&shared),
    )
    .await;
}

#[tokio::test]
async fn stray_file_in_the_blob_tree() {
    let store = build_store().await;
    let root = store.berth.root.clone();
    let damage = |root: &Path| std::fs::write(root.join("blobs/sha256/left-behind.txt"), b"stray").unwrap();
    let _store = round(store, damage, &["stray_file"], &[], None).await;
    assert!(
        root.join("quarantine/blobs_sha256_left-behind.txt").exists(),
        "quarantined, not deleted"
    );
}

#[tokio::test]
async fn corrupted_reference_count() {
    let store = build_store().await;
    let shared = sha256(&store.shared);
    let damage = move |root: &Path| {
        let db = Database::open(root.join("meta.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut blobs = txn.open_table(berth::meta::schema::BLOBS.redb()).unwrap();
            let bytes = blobs.get(shared.as_str()).unwrap().unwrap().value().to_vec();
            let mut row: berth::meta::BlobRow = berth::meta::codec::decode(&bytes).unwrap();
            row.refcount = 7;
            blobs
                .insert(shared.as_str(), berth::meta::codec::encode(&row).as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    };
    round(store, damage, &["refcount_wrong"], &[], None).await;
}

#[tokio::test]
async fn manifest_row_deleted_while_its_tag_stays() {
    let store = build_store().await;
    let b = store.b_digest.clone();
    let damage = move |root: &Path| {
        let db = Database::open(root.join("meta.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(berth::meta::schema::MANIFESTS.redb())
            .unwrap()
            .remove(("fsck/app", b.as_str()))
            .unwrap();
        txn.commit().unwrap();
    };
    round(
        store,
        damage,
        &[
            "tag_dangling",
            "manifest_refs_wrong",
            "refcount_wrong",
            "link_refs_wrong",
        ],
        &[],
        None,
    )
    .await;
}

#[tokio::test]
async fn half_written_upload_left_behind() {
    let store = build_store().await;
    let damage = |root: &Path| std::fs::write(root.join("uploads/.tmp-crashed"), random_bytes(5000, 9)).unwrap();
    round(store, damage, &["staging_orphan"], &[], None).await;
}

#[tokio::test]
async fn quick_checks_sizes_only() {
    let mut store = build_store().await;
    let root = store.berth.root.clone();
    store.berth.stop();
    let path = blob_path(&root, &store.only_a);
    writable(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let (code, quick) = fsck(&root, &["--quick"]);
    assert_eq!(
        (code, kinds(&quick)),
        (0, set(&[])),
        "a same-size change is invisible to --quick"
    );
    assert_eq!(quick["checked"]["bytes_hashed"], 0);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(10)
        .unwrap();
    let (code, quick) = fsck(&root, &["--quick"]);
    assert_eq!(
        (code, kinds(&quick)),
        (1, set(&["blob_size_mismatch", "manifest_blob_missing"]))
    );
}

#[tokio::test]
async fn online_fsck_through_the_running_server() {
    let store = build_store().await;
    let root = store.berth.root.to_str().unwrap().to_owned();
    // The store is held: offline fsck explains how to reach the server, and exits 2.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["fsck", "--root", &root])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--url"));
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["fsck", "--json", "--url", &store.berth.base])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["database_ok"],
        Value::Null,
        "redb's own check needs the file to itself"
    );
    // Damage under the running server is found online too.
    let path = blob_path(&store.berth.root, &store.only_b);
    writable(&path);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(5)
        .unwrap();
    let resp = client()
        .get(
            store
                .berth
                .url(&format!("/v2/fsck/app/blobs/{}", sha256(&store.only_b))),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "a blob of the wrong size is never served");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["fsck", "--json", "--url", &store.berth.base])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(kinds(&report), set(&["blob_size_mismatch", "manifest_blob_missing"]));
}
