//! Online garbage collection over HTTP: reachability rules, dry runs, the admin job API,
//! `berth gc` offline and through `--url`, the dangerous interleavings, and a crash between a
//! blob's tombstone and its unlink. Interleavings are ordered with the test hooks
//! (src/testhook.rs): a collection pauses at a point named in `BERTH_TEST_PAUSE_AT` until the
//! test resumes it, and the test waits for a request to reach a point before it does.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    Berth, client, error_codes, get_json, next_millisecond, push_blob, push_image, push_manifest, sha256,
};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The grace period of tests that let it pass: they move the server's clock past it
/// (`Berth::advance_clock`) rather than wait, so it can be long enough that no slow step of a
/// test outlasts it by accident.
const GRACE: Duration = Duration::from_secs(3600);

/// A server whose grace period is zero: anything unreachable is collectable at once.
fn berth_no_grace() -> Berth {
    Berth::builder().env("BERTH_GC_GRACE_PERIOD", "0s").start()
}

/// A server whose grace period is zero and whose collections pause at `point` until resumed.
fn berth_no_grace_pausing_at(point: &str) -> Berth {
    Berth::builder()
        .env("BERTH_GC_GRACE_PERIOD", "0s")
        .env("BERTH_TEST_PAUSE_AT", point)
        .start()
}

/// Start a collection; returns its job id.
async fn start_gc(berth: &Berth, query: &str) -> String {
    let resp = client()
        .post(berth.url(&format!("/admin/gc?{query}")))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status() == 202 || resp.status() == 200,
        "POST /admin/gc: {}",
        resp.status()
    );
    let job: Value = resp.json().await.unwrap();
    job["id"].as_str().unwrap().to_owned()
}

async fn job(berth: &Berth, id: &str) -> Value {
    get_json(berth.url(&format!("/admin/gc/{id}"))).await
}

/// Poll a job until `done` (panics on `failed` or after 60 s); returns its report.
async fn wait_done(berth: &Berth, id: &str) -> Value {
    for _ in 0..1200 {
        let j = job(berth, id).await;
        match j["state"].as_str() {
            Some("done") => return j["report"].clone(),
            Some("failed") => panic!("gc failed: {j}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("gc did not finish");
}

/// Poll a job until it reports `phase`.
async fn wait_phase(berth: &Berth, id: &str, phase: &str) {
    for _ in 0..1200 {
        if job(berth, id).await["phase"] == phase {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gc never reached phase {phase}");
}

/// Run a whole collection and return its report.
async fn gc(berth: &Berth, query: &str) -> Value {
    // Everything just pushed is then strictly older than the collection's cutoff.
    next_millisecond().await;
    let id = start_gc(berth, query).await;
    wait_done(berth, &id).await
}

async fn status(url: String) -> u16 {
    client().get(url).send().await.unwrap().status().as_u16()
}

fn layer_digests(manifest: &[u8]) -> Vec<String> {
    let m: Value = serde_json::from_slice(manifest).unwrap();
    let mut out = vec![m["config"]["digest"].as_str().unwrap().to_owned()];
    out.extend(
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned()),
    );
    out
}

#[tokio::test]
async fn moved_tag_frees_the_old_manifest_and_its_blobs() {
    let berth = berth_no_grace();
    let (old, _) = push_image(&berth, "app", "v1", &[b"old layer A", b"shared layer"]).await;
    let (new, new_body) = push_image(&berth, "app", "v1", &[b"new layer B", b"shared layer"]).await;
    let report = gc(&berth, "").await;
    assert_eq!(report["manifests_deleted"], 1, "{report}");
    assert_eq!(status(berth.url(&format!("/v2/app/manifests/{old}"))).await, 404);
    assert_eq!(status(berth.url(&format!("/v2/app/manifests/{new}"))).await, 200);
    let old_only = sha256(b"old layer A");
    assert_eq!(status(berth.url(&format!("/v2/app/blobs/{old_only}"))).await, 404);
    assert!(!berth.blob_file(&old_only).exists(), "old layer file is still on disk");
    for d in layer_digests(&new_body) {
        assert_eq!(status(berth.url(&format!("/v2/app/blobs/{d}"))).await, 200, "{d}");
        assert!(berth.blob_file(&d).exists());
    }
}

#[tokio::test]
async fn grace_period_keeps_then_releases() {
    let berth = Berth::builder().env("BERTH_GC_GRACE_PERIOD", "1h").start();
    let (old, _) = push_image(&berth, "app", "v1", &[b"grace layer"]).await;
    push_image(&berth, "app", "v1", &[b"other layer"]).await;
    let report = gc(&berth, "").await;
    assert_eq!(report["manifests_deleted"], 0, "inside the grace period: {report}");
    assert_eq!(status(berth.url(&format!("/v2/app/manifests/{old}"))).await, 200);
    berth.advance_clock(GRACE).await;
    let report = gc(&berth, "").await;
    assert_eq!(report["manifests_deleted"], 1, "{report}");
    assert_eq!(status(berth.url(&format!("/v2/app/manifests/{old}"))).await, 404);
    assert!(!berth.blob_file(&sha256(b"grace layer")).exists());
}

/// Push `layers` and a config as blobs of `repo` and return an OCI manifest over them.
async fn image_manifest(berth: &Berth, repo: &str, layers: &[&[u8]]) -> Vec<u8> {
    let config = format!(r#"{{"os":"linux","layers":{}}}"#, layers.len());
    let config_digest = push_blob(berth, repo, config.as_bytes()).await;
    let mut descs = Vec::new();
    for layer in layers {
        let d = push_blob(berth, repo, layer).await;
        descs.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": layer.len()}));
    }
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": descs,
    }))
    .unwrap()
}

/// Push a manifest by digest (untagged); returns its digest.
async fn push_untagged(berth: &Berth, repo: &str, media_type: &str, body: &[u8]) -> String {
    push_manifest(berth, repo, &sha256(body), media_type, body).await
}

fn descriptor(media_type: &str, body: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(body), "size": body.len()})
}

#[tokio::test]
async fn index_children_are_kept_until_the_index_goes() {
    let berth = berth_no_grace();
    let amd = image_manifest(&berth, "multi", &[b"amd64 layer"]).await;
    let arm = image_manifest(&berth, "multi", &[b"arm64 layer"]).await;
    push_untagged(&berth, "multi", OCI_MANIFEST, &amd).await;
    push_untagged(&berth, "multi", OCI_MANIFEST, &arm).await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, &amd), descriptor(OCI_MANIFEST, &arm)],
    }))
    .unwrap();
    push_manifest(&berth, "multi", "latest", OCI_INDEX, &index).await;
    let report = gc(&berth, "").await;
    assert_eq!(report["manifests_deleted"], 0, "children of a tagged index: {report}");
    for child in [&amd, &arm] {
        assert_eq!(
            status(berth.url(&format!("/v2/multi/manifests/{}", sha256(child)))).await,
            200
        );
    }
    let resp = client()
        .delete(berth.url("/v2/multi/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let report = gc(&berth, "").await;
    assert_eq!(report["manifests_deleted"], 3, "index and both children: {report}");
    assert!(!berth.blob_file(&sha256(b"arm64 layer")).exists());
}

#[tokio::test]
async fn referrers_follow_their_subject() {
    let berth = berth_no_grace();
    let (subject, subject_body) = push_image(&berth, "signed", "v1", &[b"signed layer"]).await;
    push_blob(&berth, "signed", b"{}").await;
    let signature = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sig",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(b"{}"), "size": 2},
        "layers": [],
        "subject": descriptor(OCI_MANIFEST, &subject_body),
    }))
    .unwrap();
    let sig = push_untagged(&berth, "signed", OCI_MANIFEST, &signature).await;
    let report = gc(&berth, "").await;
    assert_eq!(report["manifests_deleted"], 0, "a referrer of a live subject: {report}");
    assert_eq!(status(berth.url(&format!("/v2/signed/manifests/{sig}"))).await, 200);
    // Drop the subject's tag: subject and signature both become garbage.
    client()
        .delete(berth.url("/v2/signed/manifests/v1"))
        .send()
        .await
        .unwrap();
    let report = gc(&berth, "").await;
    assert_eq!(report["manifests_deleted"], 2, "{report}");
    assert_eq!(status(berth.url(&format!("/v2/signed/manifests/{sig}"))).await, 404);
    let referrers: Value = get_json(berth.url(&format!("/v2/signed/referrers/{subject}"))).await;
    assert_eq!(referrers["manifests"], json!([]));
}

#[tokio::test]
async fn a_blob_shared_by_two_repositories_lives_until_both_drop_it() {
    let berth = berth_no_grace();
    let shared: &[u8] = b"layer shared by two repositories";
    let (a, _) = push_image(&berth, "team/a", "v1", &[shared]).await;
    let (b, _) = push_image(&berth, "team/b", "v1", &[shared, b"b only"]).await;
    let file = berth.blob_file(&sha256(shared));
    client()
        .delete(berth.url(&format!("/v2/team/a/manifests/{a}")))
        .send()
        .await
        .unwrap();
    gc(&berth, "").await;
    assert!(file.exists(), "still used by team/b");
    assert_eq!(
        status(berth.url(&format!("/v2/team/b/blobs/{}", sha256(shared)))).await,
        200
    );
    assert_eq!(
        status(berth.url(&format!("/v2/team/a/blobs/{}", sha256(shared)))).await,
        404,
        "link dropped"
    );
    client()
        .delete(berth.url(&format!("/v2/team/b/manifests/{b}")))
        .send()
        .await
        .unwrap();
    let report = gc(&berth, "").await;
    assert!(!file.exists(), "no longer used anywhere: {report}");
}

#[tokio::test]
async fn uploads_in_progress_and_fresh_blobs_are_kept() {
    let berth = Berth::start(); // default grace period: one hour
    let c = client();
    let resp = c.post(berth.url("/v2/up/blobs/uploads/")).send().await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let resp = c
        .patch(berth.url(&location))
        .body(b"first half ".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let orphan = push_blob(&berth, "up", b"uploaded, not yet referenced").await;
    let report = gc(&berth, "").await;
    assert_eq!(report["blobs_deleted"], 0, "{report}");
    assert_eq!(report["kept_by_grace"]["count"], 1, "{report}");
    assert_eq!(status(berth.url(&format!("/v2/up/blobs/{orphan}"))).await, 200);
    let whole = b"first half second half";
    let resp = c
        .put(berth.url(&format!("{location}?digest={}", sha256(whole))))
        .body(b"second half".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "the session survived the collection");
}

#[tokio::test]
async fn dry_run_deletes_nothing_and_predicts_the_real_run() {
    let berth = berth_no_grace();
    let (old, _) = push_image(&berth, "dry", "v1", &[b"dry old"]).await;
    push_image(&berth, "dry", "v1", &[b"dry new"]).await;
    push_blob(&berth, "dry", b"dry orphan").await;
    let predicted = gc(&berth, "dry_run=true").await;
    assert_eq!(predicted["dry_run"], true);
    assert_eq!(predicted["manifests_deleted"], 1, "{predicted}");
    assert_eq!(predicted["blobs_deleted"], 2, "{predicted}");
    assert_eq!(status(berth.url(&format!("/v2/dry/manifests/{old}"))).await, 200);
    assert!(berth.blob_file(&sha256(b"dry old")).exists());
    let actual = gc(&berth, "").await;
    for key in ["manifests_deleted", "links_removed", "blobs_deleted", "bytes_freed"] {
        assert_eq!(predicted[key], actual[key], "{key}: {predicted} vs {actual}");
    }
}

#[tokio::test]
async fn admin_api_runs_one_job_at_a_time() {
    let berth = berth_no_grace_pausing_at("gc.after_mark");
    let first = start_gc(&berth, "").await;
    wait_phase(&berth, &first, "paused").await;
    let resp = client().post(berth.url("/admin/gc")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "a run is in progress");
    let second: Value = resp.json().await.unwrap();
    assert_eq!(second["id"], first.as_str());
    assert_eq!(second["state"], "running");
    berth.resume("gc.after_mark").await;
    wait_done(&berth, &first).await;
    let list: Value = get_json(berth.url("/admin/gc")).await;
    assert_eq!(list[0]["id"], first.as_str());
    assert!(list[0]["finished_at"].is_string());
    let resp = client().get(berth.url("/admin/gc/nope")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client().post(berth.url("/admin/gc")).send().await.unwrap();
    assert_eq!(resp.status(), 202, "a new run once the last one finished");
}

fn berth_cmd(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("BERTH_")) {
        cmd.env_remove(k);
    }
    cmd.env("BERTH_GC_GRACE_PERIOD", "0s").args(args).output().unwrap()
}

#[tokio::test]
async fn berth_gc_offline_and_through_a_running_server() {
    let mut berth = berth_no_grace();
    let (old, _) = push_image(&berth, "cli", "v1", &[b"cli old"]).await;
    push_image(&berth, "cli", "v1", &[b"cli new"]).await;
    let root = berth.root.to_str().unwrap().to_owned();
    let held = berth_cmd(&["gc", "--root", &root]);
    assert!(!held.status.success());
    let stderr = String::from_utf8_lossy(&held.stderr);
    assert!(stderr.contains("--url"), "explains how to run it: {stderr}");
    // With the configuration's address, not a placeholder (this CLI has the default one).
    assert!(stderr.contains("`berth gc --url http://127.0.0.1:5000`"), "{stderr}");
    let dry = berth_cmd(&["gc", "--url", &berth.base, "--dry-run", "--json"]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let report: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(report["manifests_deleted"], 1);
    assert_eq!(status(berth.url(&format!("/v2/cli/manifests/{old}"))).await, 200);
    assert_eq!(berth.stop().map(|s| s.success()), Some(true));
    next_millisecond().await;
    let offline = berth_cmd(&["gc", "--root", &root]);
    assert!(offline.status.success(), "{}", String::from_utf8_lossy(&offline.stderr));
    let text = String::from_utf8_lossy(&offline.stdout);
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("manifests deleted") && l.trim_end().ends_with(" 1")),
        "{text}"
    );
    // Every value in one column; plurals that agree; a duration for people.
    for line in text.lines().skip(1) {
        assert!(
            line.len() > 39 && &line[38..39] == " " && !line[39..].starts_with(' '),
            "misaligned: {line:?}\n{text}"
        );
    }
    assert!(
        !text.contains(" 1 blobs") && text.lines().next().unwrap().ends_with(" ms"),
        "{text}"
    );
    berth.restart();
    assert_eq!(status(berth.url(&format!("/v2/cli/manifests/{old}"))).await, 404);
    assert_eq!(status(berth.url("/v2/cli/manifests/v1")).await, 200);

    // A mistyped root is refused, and nothing is created there (nor by fsck or du).
    let typo = tempfile::tempdir().unwrap();
    let missing = typo.path().join("dat");
    for job in ["gc", "fsck", "du"] {
        let out = berth_cmd(&[job, "--root", missing.to_str().unwrap()]);
        assert!(!out.status.success(), "{job} ran on a root with no store");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no store at") && stderr.contains("--root"),
            "{job}: {stderr}"
        );
        assert!(!missing.exists(), "{job} created {}", missing.display());
    }
}

/// A push of a digest whose blob GC is deleting waits for the deletion and re-creates it.
#[tokio::test]
async fn race_repush_of_a_blob_being_deleted() {
    let berth = berth_no_grace_pausing_at("gc.before_unlink");
    let bytes: &[u8] = b"deleted and pushed again";
    let digest = push_blob(&berth, "race", bytes).await;
    next_millisecond().await;
    let id = start_gc(&berth, "").await;
    wait_phase(&berth, &id, "paused").await;
    assert_eq!(
        status(berth.url(&format!("/v2/race/blobs/{digest}"))).await,
        404,
        "tombstoned"
    );
    // The sweep holds the digest's lock from its tombstone commit until the rows are gone: the
    // push waits on it, and only then is the sweep resumed.
    let (repush, ()) = tokio::join!(push_blob(&berth, "race", bytes), async {
        berth.wait_reached("digest_lock.wait", 1).await;
        berth.resume("gc.before_unlink").await;
    });
    assert_eq!(repush, digest);
    let report = wait_done(&berth, &id).await;
    assert_eq!(report["blobs_deleted"], 1);
    let body = client()
        .get(berth.url(&format!("/v2/race/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), 200);
    assert_eq!(body.bytes().await.unwrap(), bytes);
    assert!(berth.blob_file(&digest).exists());
}

/// A manifest PUT that references a blob being swept gets a clean error; pushing the blob
/// again then lets the manifest in. No stored manifest ever references a missing blob.
#[tokio::test]
async fn race_manifest_put_against_a_blob_being_swept() {
    let berth = berth_no_grace_pausing_at("gc.before_unlink");
    let manifest = image_manifest(&berth, "race2", &[b"swept layer"]).await;
    next_millisecond().await;
    let id = start_gc(&berth, "").await;
    wait_phase(&berth, &id, "paused").await;
    let resp = client()
        .put(berth.url("/v2/race2/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(error_codes(resp).await, ["MANIFEST_BLOB_UNKNOWN"]);
    berth.resume("gc.before_unlink").await;
    wait_done(&berth, &id).await;
    let again = image_manifest(&berth, "race2", &[b"swept layer"]).await;
    assert_eq!(again, manifest);
    push_manifest(&berth, "race2", "v1", OCI_MANIFEST, &manifest).await;
    for d in layer_digests(&manifest) {
        assert_eq!(status(berth.url(&format!("/v2/race2/blobs/{d}"))).await, 200);
    }
}

/// A HEAD (as docker does before deciding not to upload) protects the blob like an upload,
/// so the manifest PUT that follows succeeds even though a collection ran in between.
#[tokio::test]
async fn race_head_then_manifest_put_across_a_sweep() {
    let berth = Berth::builder().env("BERTH_GC_GRACE_PERIOD", "1h").start();
    let manifest = image_manifest(&berth, "race3", &[b"head checked layer"]).await;
    berth.advance_clock(GRACE).await; // the uploads leave the grace period
    for d in layer_digests(&manifest) {
        let resp = client()
            .head(berth.url(&format!("/v2/race3/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let report = gc(&berth, "").await;
    assert_eq!(report["blobs_deleted"], 0, "HEAD-checked blobs are kept: {report}");
    push_manifest(&berth, "race3", "v1", OCI_MANIFEST, &manifest).await;
    // Without the HEADs, the same situation loses the blobs.
    let other = image_manifest(&berth, "race3", &[b"never checked layer"]).await;
    berth.advance_clock(GRACE).await;
    let report = gc(&berth, "").await;
    assert!(report["blobs_deleted"].as_u64().unwrap() >= 1, "{report}");
    let resp = client()
        .put(berth.url("/v2/race3/manifests/v2"))
        .header("content-type", OCI_MANIFEST)
        .body(other)
        .send()
        .await
        .unwrap();
    assert_eq!(error_codes(resp).await, ["MANIFEST_BLOB_UNKNOWN"]);
}

/// A tag pointed at a manifest after the mark decided it was garbage keeps it.
#[tokio::test]
async fn race_tag_moved_during_the_mark() {
    let berth = berth_no_grace_pausing_at("gc.after_mark");
    let manifest = image_manifest(&berth, "race4", &[b"rescued layer"]).await;
    let digest = push_untagged(&berth, "race4", OCI_MANIFEST, &manifest).await;
    next_millisecond().await;
    let id = start_gc(&berth, "").await;
    wait_phase(&berth, &id, "paused").await;
    push_manifest(&berth, "race4", "rescued", OCI_MANIFEST, &manifest).await;
    berth.resume("gc.after_mark").await;
    let report = wait_done(&berth, &id).await;
    assert_eq!(report["manifests_deleted"], 0, "{report}");
    assert_eq!(status(berth.url(&format!("/v2/race4/manifests/{digest}"))).await, 200);
    for d in layer_digests(&manifest) {
        assert_eq!(status(berth.url(&format!("/v2/race4/blobs/{d}"))).await, 200);
    }
}

/// A server built with test hooks (as `cargo bench` builds it too) runs without them unless
/// `BERTH_TEST_HOOKS=1`: no `/admin/test/*` route, and no pause at an armed pause point.
#[tokio::test]
async fn test_hooks_are_off_without_berth_test_hooks() {
    let berth = Berth::builder()
        .env("BERTH_TEST_HOOKS", "0")
        .env("BERTH_TEST_PAUSE_AT", "gc.after_mark,gc.before_unlink")
        .env("BERTH_GC_GRACE_PERIOD", "0s")
        .start();
    let resp = client()
        .post(berth.url("/admin/test/clock?advance_ms=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    push_blob(&berth, "off", b"collected without a pause").await;
    let report = gc(&berth, "").await;
    assert_eq!(report["blobs_deleted"], 1, "{report}");
}

/// `kill -9` after GC committed a blob's tombstone but before it unlinked the file: start-up
/// finishes the deletion, and the digest can be pushed again.
#[tokio::test]
async fn crash_between_tombstone_and_unlink() {
    let mut berth = berth_no_grace_pausing_at("gc.before_unlink");
    let bytes: &[u8] = b"tombstoned when the server died";
    let digest = push_blob(&berth, "crash", bytes).await;
    next_millisecond().await;
    let id = start_gc(&berth, "").await;
    wait_phase(&berth, &id, "paused").await;
    assert!(berth.blob_file(&digest).exists(), "not unlinked yet");
    berth.kill();
    berth.restart();
    assert!(!berth.blob_file(&digest).exists(), "start-up finished the deletion");
    assert_eq!(status(berth.url(&format!("/v2/crash/blobs/{digest}"))).await, 404);
    push_blob(&berth, "crash", bytes).await;
    let body = client()
        .get(berth.url(&format!("/v2/crash/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(body.bytes().await.unwrap(), bytes);
}

#[tokio::test]
async fn stale_upload_sessions_are_purged() {
    let berth = Berth::builder().env("BERTH_GC_UPLOAD_MAX_AGE", "1h").start();
    let resp = client().post(berth.url("/v2/up/blobs/uploads/")).send().await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    client()
        .patch(berth.url(&location))
        .body(b"abandoned".to_vec())
        .send()
        .await
        .unwrap();
    let report = gc(&berth, "").await;
    assert_eq!(report["uploads_purged"], 0, "younger than gc.upload_max_age: {report}");
    berth.advance_clock(Duration::from_secs(3600)).await;
    let report = gc(&berth, "").await;
    assert_eq!(report["uploads_purged"], 1, "{report}");
    let resp = client().get(berth.url(&location)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(error_codes(resp).await, ["BLOB_UPLOAD_UNKNOWN"]);
    let staging: Vec<_> = std::fs::read_dir(berth.root.join("uploads")).unwrap().collect();
    assert!(staging.is_empty(), "the staging file went with the session");
}

#[tokio::test]
async fn gc_interval_runs_collections_periodically() {
    // The grace period must outlast the pushes: with 0 s a periodic run could (by design) sweep
    // a layer uploaded a moment before its manifest, and the manifest PUT then fails with
    // MANIFEST_BLOB_UNKNOWN, which made this test flaky. Once the pushes are done, the clock
    // moves past it and the next periodic run removes the old manifest.
    let berth = Berth::builder()
        .env("BERTH_GC_INTERVAL", "300ms")
        .env("BERTH_GC_GRACE_PERIOD", "1h")
        .start();
    let (old, _) = push_image(&berth, "periodic", "v1", &[b"periodic old"]).await;
    push_image(&berth, "periodic", "v1", &[b"periodic new"]).await;
    berth.advance_clock(GRACE).await;
    for _ in 0..100 {
        if status(berth.url(&format!("/v2/periodic/manifests/{old}"))).await == 404 {
            let runs: Value = get_json(berth.url("/admin/gc")).await;
            assert!(!runs.as_array().unwrap().is_empty());
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no periodic collection removed the untagged manifest within 10 s");
}

/// A repository whose every manifest, tag and link is gone leaves `_catalog` with the next
/// collection; one that still holds something stays.
#[tokio::test]
async fn gc_removes_repositories_left_empty() {
    let berth = berth_no_grace();
    let (gone, _) = push_image(&berth, "empty/gone", "v1", &[b"soon gone"]).await;
    push_image(&berth, "empty/kept", "v1", &[b"kept"]).await;
    push_blob(&berth, "empty/loose", b"a loose blob, linked").await;
    let c = client();
    let resp = c
        .delete(berth.url(&format!("/v2/empty/gone/manifests/{gone}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    next_millisecond().await;
    let report = crate::harness::run_gc(&berth).await;
    assert_eq!(report["repositories_removed"], 2, "{report}");
    let catalog = crate::harness::get_json(berth.url("/v2/_catalog")).await;
    // empty/loose's blob had no manifest: its link went, and the repository with it.
    assert_eq!(catalog["repositories"], json!(["empty/kept"]), "{catalog}");
}

/// Staging leftovers (entries no upload session owns, as a crash or a dropped request between
/// a session's staging file and its row leaves) used to go only at the next start-up, so a
/// server that ran for weeks kept them and fsck reported them. Now a collection removes those
/// unchanged for the grace period, and keeps younger ones and every entry a session owns.
#[tokio::test]
async fn gc_removes_staging_leftovers_older_than_the_grace_period() {
    // Files, so that the test can age them (an object's time is the bucket's to set; the
    // storage suite checks those times on S3).
    let berth = Berth::builder()
        .filesystem()
        .env("BERTH_GC_GRACE_PERIOD", &format!("{}s", GRACE.as_secs()))
        .start();
    let age = |name: &str| {
        let file = std::fs::File::options()
            .write(true)
            .open(berth.root.join("uploads").join(name))
            .unwrap();
        let then = std::time::SystemTime::now() - GRACE - Duration::from_secs(60);
        file.set_modified(then).unwrap();
    };
    let old = berth.make_staging_leftover().await;
    let young = berth.make_staging_leftover().await;
    // An upload session in progress, as old as the old leftover.
    let resp = client()
        .post(berth.url("/v2/gc/leftovers/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let session = resp.headers()["docker-upload-uuid"].to_str().unwrap().to_owned();
    let patch = client()
        .patch(berth.url(resp.headers()["location"].to_str().unwrap()))
        .body(b"some bytes".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 202);
    age(&old);
    age(&session);

    let predicted = gc(&berth, "dry_run=true").await;
    assert_eq!(predicted["staging_orphans_removed"], 1, "{predicted}");
    assert!(
        berth.staging_entries().await.contains(&old),
        "a dry run removes nothing"
    );

    let report = gc(&berth, "").await;
    assert_eq!(report["staging_orphans_removed"], 1, "{report}");
    let mut left = berth.staging_entries().await;
    left.sort();
    let mut expected = vec![session, young];
    expected.sort();
    assert_eq!(
        left, expected,
        "the old leftover went; the session and the young leftover stay"
    );
}

/// DELETE a manifest by digest, asserting 202.
pub(crate) async fn delete_manifest(berth: &Berth, repo: &str, digest: &str) {
    let resp = client()
        .delete(berth.url(&format!("/v2/{repo}/manifests/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

/// A user deleted an image and ran a collection, and nothing was freed for an hour: every blob
/// uploaded within the grace period was kept. The period protects pushes in flight, and this
/// push was over once its manifest referenced the blobs. Now they go at once; a blob another
/// image still uses, and an upload no manifest has referenced yet, stay.
#[tokio::test]
async fn a_deleted_image_is_reclaimed_at_the_next_collection() {
    let berth = Berth::builder().env("BERTH_GC_GRACE_PERIOD", "1h").start();
    let shared: &[u8] = b"layer of both images";
    let (_, kept) = push_image(&berth, "reclaim", "keep", &[b"layer of the kept image", shared]).await;
    let (gone, _) = push_image(&berth, "reclaim", "gone", &[b"layer of the deleted image", shared]).await;
    let in_flight = push_blob(&berth, "reclaim", b"uploaded, no manifest yet").await;
    delete_manifest(&berth, "reclaim", &gone).await;
    let report = gc(&berth, "").await;
    let freed = sha256(b"layer of the deleted image");
    assert_eq!(report["blobs_deleted"], 1, "{report}");
    assert_eq!(report["bytes_freed"], b"layer of the deleted image".len(), "{report}");
    assert!(
        !berth.stored_blobs().await.contains(&freed),
        "the deleted image's layer is on disk"
    );
    let stored = berth.stored_blobs().await;
    for d in layer_digests(&kept).into_iter().chain([in_flight]) {
        assert!(stored.contains(&d), "{d} was collected");
        assert_eq!(status(berth.url(&format!("/v2/reclaim/blobs/{d}"))).await, 200, "{d}");
    }
}

/// The image is deleted and a collection marks its layer as garbage while another push has
/// just HEAD-checked that layer (and so will not upload it): the sweep sees the touch and keeps
/// the layer, and that push's manifest goes in.
#[tokio::test]
async fn a_layer_head_checked_by_a_push_survives_the_delete_of_its_image() {
    let berth = Berth::builder()
        .env("BERTH_GC_GRACE_PERIOD", "1h")
        .env("BERTH_TEST_PAUSE_AT", "gc.after_mark")
        .start();
    let (first, body) = push_image(&berth, "reclaim2", "v1", &[b"base layer, reused"]).await;
    let v1: Value = serde_json::from_slice(&body).unwrap();
    let new_layer: &[u8] = b"layer only v2 has";
    let new_digest = push_blob(&berth, "reclaim2", new_layer).await;
    let mut v2 = v1.clone();
    v2["layers"].as_array_mut().unwrap().push(
        json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": new_digest, "size": new_layer.len()}),
    );
    delete_manifest(&berth, "reclaim2", &first).await;
    next_millisecond().await;
    let id = start_gc(&berth, "").await;
    wait_phase(&berth, &id, "paused").await;
    // The second push finds the config and the base layer present: it will not upload them.
    let reused = layer_digests(&body);
    for d in &reused {
        let resp = client()
            .head(berth.url(&format!("/v2/reclaim2/blobs/{d}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    berth.resume("gc.after_mark").await;
    let report = wait_done(&berth, &id).await;
    assert_eq!(report["blobs_deleted"], 0, "HEAD-checked blobs are kept: {report}");
    push_manifest(
        &berth,
        "reclaim2",
        "v2",
        OCI_MANIFEST,
        &serde_json::to_vec(&v2).unwrap(),
    )
    .await;
    let stored = berth.stored_blobs().await;
    assert!(reused.iter().all(|d| stored.contains(d)), "{stored:?}");
    // Without the HEADs, the same delete frees them at once.
    let (third, third_body) = push_image(&berth, "reclaim2", "v3", &[b"a layer nobody reuses"]).await;
    delete_manifest(&berth, "reclaim2", &third).await;
    let id = start_gc(&berth, "").await;
    wait_phase(&berth, &id, "paused").await;
    berth.resume("gc.after_mark").await;
    let report = wait_done(&berth, &id).await;
    assert_eq!(report["blobs_deleted"], 1, "{report}");
    assert!(!berth.stored_blobs().await.contains(&layer_digests(&third_body)[1]));
}
