//! Webhook notifications against a real receiver on 127.0.0.1: events are queued durably in
//! the change's transaction and delivered after it, as CNCF Distribution's envelope, signed
//! with HMAC-SHA256; a receiver that is down gets everything once it comes up, in order; a
//! server killed with events pending delivers them after its restart, under the same ids.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use hmac::{KeyInit, Mac};
use serde_json::Value;

use crate::harness::{Berth, get_json, push_image};

const SECRET: &str = "webhook-secret-never-logged";

/// What a receiver got: each POST's headers and body.
type Got = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A port nothing listens on yet (the receiver is down).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Bring the receiver up on `port`: it answers 200 to every POST to /hook and keeps it.
async fn receiver(port: u16) -> Got {
    let got: Got = Arc::default();
    let kept = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            kept.lock().unwrap().push((headers, body.to_vec()));
            async { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    got
}

fn start(port: u16) -> Berth {
    let dir = tempfile::tempdir().unwrap().keep();
    let config = dir.join("config.yml");
    let yaml = format!(
        "notifications:\n  - url: http://127.0.0.1:{port}/hook\n    events: [push, delete]\n    repositories: \"team/*\"\n    secret: {SECRET}\n    timeout: 2s\n"
    );
    std::fs::write(&config, yaml).unwrap();
    Berth::builder().arg("--config").arg(config.to_str().unwrap()).start()
}

/// The queue of the one endpoint (empty when nothing waits).
async fn queue(berth: &Berth) -> Vec<Value> {
    let v = get_json(berth.url("/admin/notifications")).await;
    v["endpoints"]
        .as_array()
        .unwrap()
        .first()
        .map(|e| e["events"].as_array().unwrap().clone())
        .unwrap_or_default()
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

/// Every event received, in order, after checking each POST's media type and signature.
fn events(got: &Got) -> Vec<Value> {
    let mut out = Vec::new();
    for (headers, body) in got.lock().unwrap().iter() {
        assert_eq!(
            headers["content-type"],
            "application/vnd.docker.distribution.events.v1+json"
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(headers["x-berth-signature"].to_str().unwrap(), expected);
        let envelope: Value = serde_json::from_slice(body).unwrap();
        out.extend(envelope["events"].as_array().unwrap().iter().cloned());
    }
    out
}

#[tokio::test]
async fn a_receiver_that_was_down_gets_every_event_in_order_signed() {
    let port = free_port();
    let berth = start(port);
    let (a, _) = push_image(&berth, "team/a", "v1", &[b"layer-a"]).await;
    let (b, _) = push_image(&berth, "team/b", "latest", &[b"layer-b"]).await;
    push_image(&berth, "other/c", "v1", &[b"layer-c"]).await; // not under team/*
    let resp = crate::harness::client()
        .delete(berth.url("/v2/team/a/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // The receiver is down: the sender tries, fails, and keeps the events.
    let waiting = eventually("a failed attempt", async || {
        let q = queue(&berth).await;
        q.iter().any(|e| e["attempts"].as_u64() >= Some(1)).then_some(q)
    })
    .await;
    assert_eq!(waiting.len(), 3, "{waiting:#?}");
    assert!(waiting[0]["last_error"].as_str().unwrap().contains("connect"));

    let got = receiver(port).await;
    let received = eventually("three events", async || {
        let events = events(&got);
        (events.len() >= 3).then_some(events)
    })
    .await;
    assert_eq!(received.len(), 3, "{received:#?}");
    let actions: Vec<&str> = received.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["push", "push", "delete"]);
    let push = &received[0];
    assert_eq!(push["target"]["repository"], "team/a");
    assert_eq!(push["target"]["tag"], "v1");
    assert_eq!(push["target"]["digest"], a.as_str());
    assert_eq!(
        push["target"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert!(push["target"]["size"].as_u64().unwrap() > 0);
    assert_eq!(push["target"]["size"], push["target"]["length"]);
    assert_eq!(push["request"]["method"], "PUT");
    assert_eq!(push["request"]["addr"], "127.0.0.1");
    assert!(push["source"]["instanceID"].is_string());
    assert_eq!(received[1]["target"]["digest"], b.as_str());
    assert_eq!(received[2]["target"]["repository"], "team/a");
    let ids: std::collections::HashSet<&str> = received.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "event ids are unique");
    // Delivered events leave the outbox; the metrics count them.
    eventually("an empty queue", async || queue(&berth).await.is_empty().then_some(())).await;
    let endpoint = format!("endpoint=\"http://127.0.0.1:{port}/hook\"");
    let delivered = crate::proxy::metric(&berth, "berth_notifications_delivered_total{", &[&endpoint]).await;
    assert_eq!(delivered, 3, "delivered events counted per endpoint");
    assert!(!berth.log().contains(SECRET), "the secret reached the log");
}

#[tokio::test]
async fn events_pending_at_a_kill_are_delivered_after_the_restart() {
    let port = free_port();
    let mut berth = start(port);
    let (digest, _) = push_image(&berth, "team/app", "v1", &[b"layer"]).await;
    let pending = queue(&berth).await;
    assert_eq!(pending.len(), 1, "{pending:#?}");
    let id = pending[0]["id"].as_u64().unwrap().to_string();
    berth.kill();
    berth.restart();
    let got = receiver(port).await;
    let received = eventually("the event", async || {
        let events = events(&got);
        (!events.is_empty()).then_some(events)
    })
    .await;
    assert_eq!(received[0]["id"], id.as_str(), "the same id before and after the crash");
    assert_eq!(received[0]["target"]["digest"], digest.as_str());
    eventually("an empty queue", async || queue(&berth).await.is_empty().then_some(())).await;
}
