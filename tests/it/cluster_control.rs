//! The control path of several nodes sharing one PostgreSQL database and one Garage bucket:
//! - the lease statements: one holder at a time, passed on at release or expiry;
//! - garbage collection elected by a lease: asked of two nodes at once it runs once, and both
//!   answer the same job; its status is readable from the other node; a runner killed with
//!   `kill -9` loses its lease at expiry and another node runs the next one;
//! - a retention run refused (503) while another node holds its lease;
//! - PostgreSQL stopped under load: 503 with `Retry-After`, `/readyz` naming PostgreSQL, then
//!   recovery with nothing acknowledged lost;
//! - webhooks delivered once, by one node, and by the other once that one is killed;
//! - a web UI session that holds on every node, and a HEAD touch through one node that the
//!   collection on another respects.
//!
//! Interleavings are ordered with the test hooks (src/testhook.rs): a collection pauses at
//! `gc.after_mark` until resumed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use serde_json::Value;

use crate::garage::{Garage, fresh_prefix};
use crate::harness::{Berth, Builder, client, get_json, push_image, wait_gc};
use crate::postgres::Postgres;

/// The lease of tests that wait for one to expire: short, so that they wait seconds.
const SHORT_LEASE: &str = "2s";

/// Images pushed in the webhook test, alternately through each node.
const HOOK_PUSHES: usize = 6;

/// A node of the cluster over database `url` and bucket prefix `prefix`.
fn node(url: &str, prefix: &str) -> Builder {
    Builder::default().postgres(url).s3_prefix(Garage::shared(), prefix)
}

/// Two nodes over a fresh database and prefix, each built from `node` by `with`.
fn pair(with: impl Fn(Builder) -> Builder) -> (Berth, Berth) {
    let (url, prefix) = (Postgres::shared().fresh_url(), fresh_prefix());
    let a = with(node(&url, &prefix)).start();
    let b = with(node(&url, &prefix)).start();
    (a, b)
}

/// `POST /admin/gc` on `berth`: the status and the job.
async fn ask_gc(berth: &Berth) -> (u16, Value) {
    let resp = client().post(berth.url("/admin/gc")).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn job(berth: &Berth, id: &str) -> Value {
    get_json(berth.url(&format!("/admin/gc/{id}"))).await
}

/// Poll `f` until it answers `Some` (panics after 60 s).
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn gc_asked_of_two_nodes_at_once_runs_once_and_both_answer_the_same_job() {
    let (a, b) = pair(|n| n.env("BERTH_TEST_PAUSE_AT", "gc.after_mark"));
    let ((sa, ja), (sb, jb)) = tokio::join!(ask_gc(&a), ask_gc(&b));
    let mut statuses = [sa, sb];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 202],
        "one node starts it, the other answers it: {ja} {jb}"
    );
    assert_eq!(ja["id"], jb["id"], "both answer the same job");
    assert_eq!(ja["node"], jb["node"], "both name the node that runs it");
    let (runner, other) = if sa == 202 { (&a, &b) } else { (&b, &a) };
    let id = ja["id"].as_str().unwrap().to_owned();

    // The runner pauses after its mark; the other node reads that from the shared table.
    eventually("the paused phase, read from the other node", async || {
        (job(other, &id).await["phase"] == "paused").then_some(())
    })
    .await;
    let (again, running) = ask_gc(other).await;
    assert_eq!((again, running["id"].as_str()), (200, Some(id.as_str())));
    runner.resume("gc.after_mark").await;
    let report = wait_gc(&other.base, &id).await;
    assert!(report["duration_ms"].is_u64(), "{report}");
    assert_eq!(other.reached("gc.after_mark").await, 0, "the other node never ran it");
    let listed = get_json(other.url("/admin/gc")).await;
    assert_eq!(listed[0]["id"], id.as_str(), "{listed}");
}

#[tokio::test]
async fn a_gc_runner_killed_mid_run_loses_its_lease_and_another_node_runs_gc() {
    let (url, prefix) = (Postgres::shared().fresh_url(), fresh_prefix());
    let lease = |n: Builder| n.env("BERTH_METADATA_POSTGRES_LEASE", SHORT_LEASE);
    let mut a = lease(node(&url, &prefix))
        .env("BERTH_TEST_PAUSE_AT", "gc.after_mark")
        .start();
    let b = lease(node(&url, &prefix)).start();
    let (status, started) = ask_gc(&a).await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    a.wait_reached("gc.after_mark", 1).await;
    let (status, running) = ask_gc(&b).await;
    assert_eq!((status, running["id"].as_str()), (200, Some(id.as_str())), "{running}");

    a.kill();
    // Until the lease expires B answers the dead node's job; then it starts its own.
    let (_, mine) = eventually("B to take the lease over", async || {
        let (status, job) = ask_gc(&b).await;
        (status == 202).then_some((status, job))
    })
    .await;
    assert_ne!(mine["id"], id.as_str());
    assert_ne!(mine["node"], started["node"]);
    wait_gc(&b.base, mine["id"].as_str().unwrap()).await;
    let dead = job(&b, &id).await;
    assert_eq!(dead["state"], "failed", "{dead}");
    assert!(dead["error"].as_str().unwrap().contains("stopped reporting"), "{dead}");
}

/// What one push of the load ended with.
enum Pushed {
    Acked(String),
    /// A 503 with `Retry-After`: the client retries later.
    Unavailable,
    /// Anything else (a 500, say): what an outage must never give.
    Failed(String),
}

/// Push the `i`-th image of the load through `berth` (config, one layer, manifest), stopping
/// at the first answer that is not a success.
async fn push_one(berth: &Berth, i: usize) -> Pushed {
    let (layer, config) = (format!("layer {i}"), format!(r#"{{"n":{i}}}"#));
    let mut descs = Vec::new();
    for (bytes, media_type) in [
        (config.as_bytes(), "application/vnd.oci.image.config.v1+json"),
        (layer.as_bytes(), "application/vnd.oci.image.layer.v1.tar"),
    ] {
        let digest = crate::harness::sha256(bytes);
        let url = berth.url(&format!("/v2/load/app/blobs/uploads/?digest={digest}"));
        if let Err(failed) = outcome(client().post(url).body(bytes.to_vec()).send().await).await {
            return failed;
        }
        descs.push(serde_json::json!({"mediaType": media_type, "digest": digest, "size": bytes.len()}));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descs[0],
        "layers": [descs[1]],
    });
    let tag = format!("v{i}");
    let put = client()
        .put(berth.url(&format!("/v2/load/app/manifests/{tag}")))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&manifest).unwrap())
        .send()
        .await;
    match outcome(put).await {
        Ok(()) => Pushed::Acked(tag),
        Err(failed) => failed,
    }
}

/// `Ok` for a 201; the failure otherwise.
async fn outcome(sent: reqwest::Result<reqwest::Response>) -> Result<(), Pushed> {
    let resp = sent.map_err(|e| Pushed::Failed(e.to_string()))?;
    match resp.status().as_u16() {
        201 => Ok(()),
        503 if resp.headers().contains_key("retry-after") => Err(Pushed::Unavailable),
        status => Err(Pushed::Failed(format!(
            "{status}: {}",
            resp.text().await.unwrap_or_default()
        ))),
    }
}

/// A 503 of the outage: `UNAVAILABLE`, with `Retry-After`.
async fn assert_unavailable(resp: reqwest::Response) {
    assert_eq!(resp.status(), 503);
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(retry.is_some_and(|r| r.parse::<u64>().is_ok()), "no Retry-After");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAVAILABLE", "{body}");
    let text = body.to_string();
    assert!(!text.contains("127.0.0.1:") && !text.contains("postgres://"), "{text}");
}

#[tokio::test]
async fn postgres_stopped_under_load_gives_503_then_both_nodes_recover_with_nothing_lost() {
    let mut pg = Postgres::start();
    let (url, prefix) = (pg.fresh_url(), fresh_prefix());
    let nodes = Arc::new([node(&url, &prefix).start(), node(&url, &prefix).start()]);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (nodes, acked, stop) = (Arc::clone(&nodes), Arc::clone(&acked), Arc::clone(&stop));
        tokio::spawn(async move {
            let (mut i, mut unavailable, mut failed) = (0, 0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match push_one(&nodes[i % 2], i).await {
                    Pushed::Acked(tag) => acked.lock().unwrap().push(tag),
                    Pushed::Unavailable => unavailable += 1,
                    Pushed::Failed(why) => failed.push(why),
                }
                i += 1;
            }
            (unavailable, failed)
        })
    };
    eventually("a few pushes before the outage", async || {
        (acked.lock().unwrap().len() >= 3).then_some(())
    })
    .await;

    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    for berth in nodes.iter() {
        assert_unavailable(
            client()
                .get(berth.url("/v2/load/app/manifests/v0"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_unavailable(
            client()
                .post(berth.url("/v2/load/app/blobs/uploads/"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        let ready = client().get(berth.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 503);
        let why = ready.text().await.unwrap();
        assert!(why.contains("PostgreSQL"), "{why}");
        assert!(!why.contains("storage"), "S3 is up: {why}");
        assert!(!berth.log().contains("postgres://"), "the URL never reaches the log");
    }
    let acked_before = acked.lock().unwrap().len();

    pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    for berth in nodes.iter() {
        eventually("/readyz once PostgreSQL is back", async || {
            let ready = client().get(berth.url("/readyz")).send().await.unwrap();
            (ready.status() == 200).then_some(())
        })
        .await;
    }
    eventually("pushes after the outage", async || {
        (acked.lock().unwrap().len() >= acked_before + 4).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (unavailable, failed) = load.await.unwrap();
    assert!(failed.is_empty(), "the outage answered other than 503: {failed:?}");
    assert!(unavailable > 0, "the load met the outage");
    let acked = acked.lock().unwrap().clone();
    for berth in nodes.iter() {
        for tag in &acked {
            let resp = client()
                .get(berth.url(&format!("/v2/load/app/manifests/{tag}")))
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "acknowledged {tag} lost");
        }
    }
    drop(pg);
}

/// A receiver on a free port that answers 200 to every POST to /hook, slowly (so that two
/// senders would both see the same events waiting), and keeps the envelopes.
async fn slow_receiver() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |_: HeaderMap, body: axum::body::Bytes| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            kept.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
            "ok"
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, got)
}

#[tokio::test]
async fn webhooks_are_delivered_once_by_one_node_of_two() {
    let (port, got) = slow_receiver().await;
    let config = tempfile::tempdir().unwrap().keep().join("config.yml");
    let yaml = format!("notifications:\n  - url: http://127.0.0.1:{port}/hook\n    events: [push]\n");
    std::fs::write(&config, yaml).unwrap();
    let (a, b) = pair(|n| n.arg("--config").arg(config.to_str().unwrap()));
    for i in 0..HOOK_PUSHES {
        let berth = if i % 2 == 0 { &a } else { &b };
        push_image(
            berth,
            &format!("hooks/r{i}"),
            "v1",
            &[format!("hook layer {i}").as_bytes()],
        )
        .await;
    }
    eventually("every event delivered and the outbox empty", async || {
        let pending = get_json(a.url("/admin/notifications")).await["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pending"].as_u64().unwrap())
            .sum::<u64>();
        (pending == 0 && events(&got).len() >= HOOK_PUSHES).then_some(())
    })
    .await;
    let events = events(&got);
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        (events.len(), ids.len()),
        (HOOK_PUSHES, HOOK_PUSHES),
        "each event once: {events:#?}"
    );
    let mut senders: Vec<&str> = events
        .iter()
        .map(|e| e["source"]["instanceID"].as_str().unwrap())
        .collect();
    senders.dedup();
    assert_eq!(senders.len(), 1, "one node delivered: {senders:?}");
}

fn events(got: &Arc<Mutex<Vec<Value>>>) -> Vec<Value> {
    let envelopes = got.lock().unwrap().clone();
    envelopes
        .iter()
        .flat_map(|e| e["events"].as_array().unwrap().clone())
        .collect()
}

/// The `berth_session` cookie a response sets, if any.
fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("berth_session="))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// Behind a round-robin balancer, a web UI session opened through one node must hold on the
/// next: both nodes sign cookies with the key the first stored in the shared database, so
/// node B keeps A's session rather than replacing it with a fresh anonymous one.
#[tokio::test]
async fn a_ui_session_opened_on_one_node_holds_on_the_other() {
    let (a, b) = pair(|n| n);
    let opened = client().get(a.url("/ui/")).send().await.unwrap();
    assert_eq!(opened.status(), 200);
    let cookie = session_cookie(&opened).expect("a new session");
    let on_b = client()
        .get(b.url("/ui/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(on_b.status(), 200);
    assert_eq!(session_cookie(&on_b), None, "B accepted A's session");
    let stranger = client().get(b.url("/ui/")).send().await.unwrap();
    assert!(
        session_cookie(&stranger).is_some(),
        "a request without one gets a session"
    );
}

/// A client HEADs a blob before it references it in a manifest, and garbage collection spares
/// a blob touched within the grace period. With several nodes the HEAD and the collection
/// may reach different nodes: the touch recorded by B must keep A from collecting the blob.
#[tokio::test]
async fn a_blob_touched_on_one_node_is_spared_by_gc_on_the_other() {
    const GRACE: Duration = Duration::from_secs(3600);
    let (a, b) = pair(|n| n.env("BERTH_GC_GRACE_PERIOD", "1h"));
    let kept = crate::harness::push_blob(&a, "touch/app", b"headed through B").await;
    let gone = crate::harness::push_blob(&a, "touch/app", b"never headed").await;
    for berth in [&a, &b] {
        berth.advance_clock(GRACE * 2).await;
    }
    let head = |berth: &Berth, digest: &str| {
        client()
            .head(berth.url(&format!("/v2/touch/app/blobs/{digest}")))
            .send()
    };
    assert_eq!(head(&b, &kept).await.unwrap().status(), 200);
    let report = crate::harness::run_gc(&a).await;
    assert_eq!(report["blobs_deleted"], 1, "{report}");
    assert_eq!(head(&a, &kept).await.unwrap().status(), 200, "the touched blob stays");
    assert_eq!(head(&a, &gone).await.unwrap().status(), 404, "the other one went");
}

/// While another node holds the retention lease, a retention run asked of this one answers
/// 503 with `Retry-After`, naming that node, and applies nothing.
#[tokio::test]
async fn retention_asked_while_another_node_runs_it_answers_503_naming_that_node() {
    let pg = Postgres::shared();
    let url = pg.fresh_url();
    let berth = node(&url, &fresh_prefix()).start();
    let db = url.rsplit('/').next().unwrap();
    pg.psql(
        db,
        "INSERT INTO berth.leases VALUES ('retention', 'elsewhere:5000#0', 'j', \
         (extract(epoch FROM clock_timestamp()) * 1000)::bigint + 600000)",
    );
    let resp = client().post(berth.url("/admin/retention")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body = resp.text().await.unwrap();
    assert!(body.contains("elsewhere:5000#0"), "{body}");
    pg.psql(db, "DELETE FROM berth.leases WHERE name = 'retention'");
    let resp = client().post(berth.url("/admin/retention")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

/// The lease statements themselves, against PostgreSQL: one holder at a time, only the
/// holder renews or releases, a released lease is free at once and an expired one is taken
/// over.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_has_one_holder_until_released_or_expired() {
    use berth::meta::MetaStore as _;
    use berth::meta::cluster::Claim;
    let url = Postgres::shared().fresh_url();
    let meta = tokio::task::block_in_place(|| berth::meta::PgMeta::open(&url, 4).unwrap());
    let cluster = meta.cluster().expect("PostgreSQL coordinates nodes");
    let (long, none) = (Duration::from_secs(600), Duration::ZERO);
    assert_eq!(cluster.claim("gc", "a", "j1", long).await.unwrap(), Claim::Won);
    let held = Claim::Held {
        holder: "a".into(),
        job: "j1".into(),
    };
    assert_eq!(cluster.claim("gc", "b", "j2", long).await.unwrap(), held);
    assert_eq!(
        cluster.claim("gc", "a", "j3", long).await.unwrap(),
        held,
        "one job at a time"
    );
    assert_eq!(
        cluster.claim("gc", "a", "j1", long).await.unwrap(),
        Claim::Won,
        "the holder again"
    );
    assert!(cluster.renew("gc", "a", "j1", long).await.unwrap());
    assert!(!cluster.renew("gc", "b", "j2", long).await.unwrap(), "not b's");
    cluster.release("gc", "b", "j2").await.unwrap();
    assert_eq!(
        cluster.claim("gc", "b", "j2", long).await.unwrap(),
        held,
        "b released nothing"
    );
    cluster.release("gc", "a", "j1").await.unwrap();
    assert_eq!(cluster.claim("gc", "b", "j2", none).await.unwrap(), Claim::Won);
    // b's lease of zero length expires with the database clock's next millisecond.
    eventually("the expired lease taken over", async || {
        (cluster.claim("gc", "c", "j4", long).await.unwrap() == Claim::Won).then_some(())
    })
    .await;
    assert!(!cluster.renew("gc", "b", "j2", long).await.unwrap(), "b lost it");
    assert_eq!(
        cluster.claim("fsck", "b", "j5", long).await.unwrap(),
        Claim::Won,
        "leases are per name"
    );
}

/// The node delivering webhooks is killed with `kill -9`: once its lease has expired the other
/// node takes the delivery over, and an event queued meanwhile arrives.
#[tokio::test]
async fn webhooks_pass_to_the_other_node_when_the_delivering_one_dies() {
    let (port, got) = slow_receiver().await;
    let config = tempfile::tempdir().unwrap().keep().join("config.yml");
    let yaml = format!("notifications:\n  - url: http://127.0.0.1:{port}/hook\n    events: [push]\n");
    std::fs::write(&config, yaml).unwrap();
    let pg = Postgres::shared();
    let (url, prefix) = (pg.fresh_url(), fresh_prefix());
    let start = || {
        node(&url, &prefix)
            .env("BERTH_METADATA_POSTGRES_LEASE", SHORT_LEASE)
            .arg("--config")
            .arg(config.to_str().unwrap())
            .start()
    };
    let mut nodes = [start(), start()];
    push_image(&nodes[0], "hooks/first", "v1", &[b"first hook layer"]).await;
    eventually("the first event", async || (!events(&got).is_empty()).then_some(())).await;
    let db = url.rsplit('/').next().unwrap();
    let holder = pg.psql(db, "SELECT holder FROM berth.leases WHERE name = 'notify'");
    let dead = nodes
        .iter()
        .position(|n| holder.starts_with(&format!("{}#", n.host)))
        .unwrap_or_else(|| panic!("the holder {holder} is one of the nodes"));
    nodes[dead].kill();
    let survivor = &nodes[1 - dead];
    push_image(survivor, "hooks/second", "v1", &[b"second hook layer"]).await;
    let events = eventually("the event queued after the kill", async || {
        let events = events(&got);
        (events.len() >= 2).then_some(events)
    })
    .await;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[1]["target"]["repository"], "hooks/second");
    assert_ne!(
        events[0]["source"]["instanceID"], events[1]["source"]["instanceID"],
        "the survivor delivered it"
    );
}
