//! `kill -9` in the middle of work: every acknowledged blob and manifest survives intact, no
//! partial blob is ever visible, and an interrupted upload session is either resumable from
//! the offset it reports or cleanly unknown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{Berth, client, random_bytes, sha256};

/// A request body fed by hand, so a test can stop sending half-way.
fn fed_body() -> (
    tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
    reqwest::Body,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let body = reqwest::Body::wrap_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    (tx, body)
}

fn staging_files(berth: &Berth) -> Vec<String> {
    std::fs::read_dir(berth.root.join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn a_monolithic_upload_killed_half_way_leaves_nothing_visible() {
    let mut berth = Berth::start();
    let bytes = random_bytes(3 << 20, 5);
    let digest = sha256(&bytes);
    let (tx, body) = fed_body();
    let url = berth.url(&format!("/v2/crash/blobs/uploads/?digest={digest}"));
    let upload = tokio::spawn(async move { client().post(url).body(body).send().await });
    tx.send(Ok(bytes[..bytes.len() / 2].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!staging_files(&berth).is_empty(), "the half upload is staged");
    berth.kill();
    assert!(upload.await.unwrap().is_err(), "never acknowledged");
    berth.restart();
    let resp = client()
        .get(berth.url(&format!("/v2/crash/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(staging_files(&berth).is_empty(), "start-up removed the staging file");
    let hex = digest.strip_prefix("sha256:").unwrap();
    assert!(
        !berth
            .root
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(&hex[2..4])
            .join(hex)
            .exists()
    );
}

#[tokio::test]
async fn a_session_killed_mid_patch_resumes_from_the_offset_it_reports() {
    let mut berth = Berth::start();
    let whole = random_bytes(4 << 20, 6);
    let c = client();
    let resp = c.post(berth.url("/v2/crash/blobs/uploads/")).send().await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let first = 1 << 20;
    let resp = c
        .patch(berth.url(&location))
        .body(whole[..first].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "the first chunk is acknowledged");
    let (tx, body) = fed_body();
    let url = berth.url(&location);
    let patch = tokio::spawn(async move { client().patch(url).body(body).send().await });
    tx.send(Ok(whole[first..first + 300_000].to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    berth.kill();
    assert!(patch.await.unwrap().is_err());
    berth.restart();
    let status = c.get(berth.url(&location)).send().await.unwrap();
    assert_eq!(status.status(), 204, "the session survived");
    let range = status.headers()["range"].to_str().unwrap().to_owned();
    let offset: usize = range.strip_prefix("0-").unwrap().parse::<usize>().unwrap() + 1;
    assert!(
        (first..=first + 300_000).contains(&offset),
        "offset {offset} covers the acknowledged bytes"
    );
    let remaining = format!("{offset}-{}", whole.len() - 1);
    let resp = c
        .patch(berth.url(&location))
        .header("content-range", remaining)
        .body(whole[offset..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let resp = c
        .put(berth.url(&format!("{location}?digest={}", sha256(&whole))))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
}

type Acked = Arc<Mutex<HashMap<String, (String, Vec<u8>)>>>;

/// Push blobs (monolithic and chunked) and manifests in a loop until the server dies,
/// recording what was acknowledged: url path -> (repo, bytes).
async fn worker(base: String, id: u64, acked: Acked) {
    let c = client();
    for n in 0..10_000u64 {
        let repo = format!("crash/w{id}");
        let bytes = random_bytes(usize::try_from(20_000 + (n % 7) * 150_000).unwrap(), id * 100_000 + n);
        let digest = sha256(&bytes);
        let ok = if n % 2 == 0 {
            let url = format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}");
            matches!(c.post(url).body(bytes.clone()).send().await, Ok(r) if r.status() == 201)
        } else {
            let Ok(resp) = c.post(format!("{base}/v2/{repo}/blobs/uploads/")).send().await else {
                return;
            };
            let Some(location) = resp.headers().get("location").map(|l| l.to_str().unwrap().to_owned()) else {
                return;
            };
            let half = bytes.len() / 2;
            let Ok(_) = c
                .patch(format!("{base}{location}"))
                .body(bytes[..half].to_vec())
                .send()
                .await
            else {
                return;
            };
            let url = format!("{base}{location}?digest={digest}");
            matches!(c.put(url).body(bytes[half..].to_vec()).send().await, Ok(r) if r.status() == 201)
        };
        if !ok {
            return;
        }
        acked
            .lock()
            .unwrap()
            .insert(format!("/v2/{repo}/blobs/{digest}"), (repo.clone(), bytes.clone()));
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": bytes.len()},
            "layers": [],
        }))
        .unwrap();
        let put = c
            .put(format!("{base}/v2/{repo}/manifests/t{n}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .await;
        match put {
            Ok(r) if r.status() == 201 => {
                acked
                    .lock()
                    .unwrap()
                    .insert(format!("/v2/{repo}/manifests/t{n}"), (repo, manifest));
            }
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_nine_under_concurrent_pushes_loses_nothing_acknowledged() {
    let mut berth = Berth::start();
    let acked: Acked = Arc::default();
    for round in 0..3u64 {
        let mut tasks = Vec::new();
        for w in 0..4 {
            tasks.push(tokio::spawn(worker(
                berth.base.clone(),
                round * 10 + w,
                Arc::clone(&acked),
            )));
        }
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(700 + 300 * round)).await;
        berth.kill();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(60));
        berth.restart();
        let all: Vec<(String, (String, Vec<u8>))> = acked.lock().unwrap().clone().into_iter().collect();
        assert!(!all.is_empty(), "the workers acknowledged something before the kill");
        for (path, (_, bytes)) in &all {
            let resp = client().get(berth.url(path)).send().await.unwrap();
            assert_eq!(
                resp.status(),
                200,
                "acknowledged {path} is gone after kill -9 (round {round})"
            );
            assert_eq!(sha256(&resp.bytes().await.unwrap()), sha256(bytes), "{path} changed");
        }
    }
    // Offline, fsck also checks the redb file; with the metadata in PostgreSQL there is no
    // offline, and a node runs it.
    let report = if crate::postgres::postgres_mode() {
        // Nor does a node's start-up reconcile the shared staging area (other nodes' sessions
        // live there): a session whose commit the kill cut off stays until garbage collection
        // purges it past `gc.upload_max_age`, which this lets pass.
        berth.advance_clock(Duration::from_secs(2 * 24 * 3600)).await;
        crate::harness::run_gc(&berth).await;
        crate::harness::fsck_report(&berth)
    } else {
        berth.stop();
        let out = berth
            .cli()
            .args(["fsck", "--json", "--root", berth.root.to_str().unwrap()])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    for p in report["problems"].as_array().unwrap() {
        assert_eq!(
            p["kind"], "orphan_blob_file",
            "only the documented leftover may remain: {p}"
        );
    }
}
