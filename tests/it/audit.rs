//! The audit log over real HTTP: every change records its event (user, source address,
//! action, repository, reference, digest, result) in its own transaction; a refused login is
//! recorded; a request that fails before its commit leaves no event; `GET /admin/audit` and
//! `berth audit` (through `--url` and offline) read it; garbage collection prunes it by
//! `audit.max_age`.

use serde_json::{Value, json};

use crate::auth::{Site, entry};
use crate::harness::{Berth, client, random_bytes, sha256};
use crate::tls::start_with;

const RULES: &str = r#"  admins:
    users: [carol]
  rules:
    - repositories: ["team/**"]
      users: [alice]
      actions: [pull, push, delete]
"#;

fn pw(user: &str) -> &'static str {
    match user {
        "alice" => "alice-pw",
        "carol" => "carol-pw",
        _ => "none",
    }
}

/// A site with alice (pushes to team/**) and carol (admin).
fn site() -> (Site, std::path::PathBuf) {
    let site = Site::new();
    std::fs::write(
        &site.htpasswd,
        entry("alice", pw("alice")) + &entry("carol", pw("carol")),
    )
    .unwrap();
    let config = site.config(RULES);
    (site, config)
}

fn as_user(req: reqwest::RequestBuilder, user: &str) -> reqwest::RequestBuilder {
    req.basic_auth(user, Some(pw(user)))
}

async fn push_blob(berth: &Berth, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let url = berth.url(&format!("/v2/{repo}/blobs/uploads/?digest={digest}"));
    let resp = as_user(client().post(url), "alice")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    digest
}

fn manifest(config: &[u8], layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(layer), "size": layer.len()}],
    }))
    .unwrap()
}

async fn put_manifest(berth: &Berth, repo: &str, reference: &str, body: &[u8]) -> u16 {
    let url = berth.url(&format!("/v2/{repo}/manifests/{reference}"));
    let resp = as_user(client().put(url), "alice")
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

async fn delete(berth: &Berth, path: &str) -> u16 {
    let resp = as_user(client().delete(berth.url(path)), "alice").send().await.unwrap();
    resp.status().as_u16()
}

/// The audit log through the admin API, as carol.
pub async fn audit(berth: &Berth, query: &str) -> Vec<Value> {
    let resp = as_user(client().get(berth.url(&format!("/admin/audit?{query}"))), "carol")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    v["events"].as_array().unwrap().clone()
}

/// The newest event matching `query`, once there is one (panics after 30 s).
async fn first_event(berth: &Berth, query: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(e) = audit(berth, query).await.first().cloned() {
            return e;
        }
        assert!(std::time::Instant::now() < deadline, "no event for {query}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn find<'a>(events: &'a [Value], action: &str, reference: &str) -> Option<&'a Value> {
    events
        .iter()
        .find(|e| e["action"] == action && e["reference"] == reference)
}

#[tokio::test]
async fn every_change_and_login_is_audited_and_a_failed_request_is_not() {
    let (_site, config) = site();
    let berth = start_with(&config);
    // A refused login, then an accepted one.
    let wrong = client()
        .get(berth.url("/v2/"))
        .basic_auth("alice", Some("wrong-secret-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let ok = as_user(client().get(berth.url("/v2/")), "alice").send().await.unwrap();
    assert_eq!(ok.status(), 200);

    let (config_blob, layer) = (br#"{"os":"linux"}"#.to_vec(), random_bytes(500, 1));
    push_blob(&berth, "team/app", &config_blob).await;
    let layer_digest = push_blob(&berth, "team/app", &layer).await;
    let v1 = manifest(&config_blob, &layer);
    assert_eq!(put_manifest(&berth, "team/app", "v1", &v1).await, 201);
    // A push that fails inside its transaction (a layer not in the repository): no event.
    let missing = random_bytes(300, 2);
    let broken = manifest(&config_blob, &missing);
    assert_eq!(put_manifest(&berth, "team/app", "broken", &broken).await, 400);
    // The tag moves to another manifest.
    let layer2 = random_bytes(400, 3);
    push_blob(&berth, "team/app", &layer2).await;
    let v2 = manifest(&config_blob, &layer2);
    assert_eq!(put_manifest(&berth, "team/app", "v1", &v2).await, 201);
    // A mount, a blob delete, a tag delete, a manifest delete.
    let mount = berth.url(&format!(
        "/v2/team/copy/blobs/uploads/?mount={layer_digest}&from=team/app"
    ));
    let resp = as_user(client().post(mount), "alice").send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(
        delete(&berth, &format!("/v2/team/copy/blobs/{layer_digest}")).await,
        202
    );
    assert_eq!(delete(&berth, "/v2/team/app/manifests/v1").await, 202);
    assert_eq!(
        delete(&berth, &format!("/v2/team/app/manifests/{}", sha256(&v1))).await,
        202
    );
    // Deleting it again fails before any commit: no second event.
    assert_eq!(
        delete(&berth, &format!("/v2/team/app/manifests/{}", sha256(&v1))).await,
        404
    );

    let events = audit(&berth, "limit=1000").await;
    let refused = events
        .iter()
        .find(|e| e["action"] == "login" && e["result"] != "ok")
        .expect("the refused login");
    assert_eq!(refused["user"], "alice");
    assert_eq!(refused["addr"], "127.0.0.1");
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "login" && e["result"] == "ok" && e["user"] == "alice")
    );
    let pushes: Vec<&Value> = events.iter().filter(|e| e["action"] == "push").collect();
    assert_eq!(
        pushes.len(),
        2,
        "two pushes committed, the broken one did not: {events:#?}"
    );
    // Newest first: the move of v1 to v2, then v1.
    assert_eq!(pushes[0]["digest"], sha256(&v2));
    assert_eq!(pushes[1]["digest"], sha256(&v1));
    for p in &pushes {
        assert_eq!(p["user"], "alice");
        assert_eq!(p["addr"], "127.0.0.1");
        assert_eq!(p["repository"], "team/app");
        assert_eq!(p["reference"], "v1");
        assert_eq!(p["result"], "ok");
        assert!(p["request_id"].is_string() && p["time"].as_str().unwrap().ends_with('Z'));
    }
    assert!(!events.iter().any(|e| e["digest"] == sha256(&broken)));
    let mount = find(&events, "mount", &layer_digest).expect("the mount");
    assert_eq!(mount["repository"], "team/copy");
    let blob_delete = find(&events, "blob-delete", &layer_digest).expect("the blob delete");
    assert_eq!(blob_delete["repository"], "team/copy");
    assert!(find(&events, "tag-delete", "v1").is_some());
    let deletes: Vec<_> = events.iter().filter(|e| e["action"] == "manifest-delete").collect();
    assert_eq!(deletes.len(), 1, "the failed second delete left no event");
    assert_eq!(deletes[0]["digest"], sha256(&v1));
    // Filters and paging.
    assert_eq!(audit(&berth, "action=push&repository=team/app").await.len(), 2);
    assert!(audit(&berth, "user=carol&action=push").await.is_empty());
    let page = as_user(client().get(berth.url("/admin/audit?limit=2")), "carol")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let next = page["next"].as_u64().expect("a next page");
    let older = audit(&berth, &format!("before={next}&limit=1000")).await;
    assert_eq!(older.len() + 2, events.len());
    assert!(!berth.log().contains("wrong-secret-pw"));
    // The admin API is for admins only.
    let resp = as_user(client().get(berth.url("/admin/audit")), "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn admin_runs_are_audited_and_the_cli_reads_the_log_online_and_offline() {
    let (_site, config) = site();
    let mut berth = start_with(&config);
    for job in ["gc", "fsck"] {
        let resp = as_user(client().post(berth.url(&format!("/admin/{job}"))), "carol")
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        // The run's event is recorded when it finishes.
        let event = first_event(&berth, &format!("action={job}")).await;
        assert_eq!(
            (event["user"].as_str(), event["result"].as_str()),
            (Some("carol"), Some("ok"))
        );
        assert_eq!(event["addr"], "127.0.0.1");
    }
    // A reload that works, then one of a file that no longer loads.
    berth.signal("HUP");
    let reload = first_event(&berth, "action=config-reload").await;
    assert_eq!(
        (reload["user"].as_str(), reload["result"].as_str()),
        (Some("berth"), Some("ok"))
    );
    std::fs::write(&config, "gc:\n  grace_period: soon\n").unwrap();
    berth.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut failed = first_event(&berth, "action=config-reload").await;
    while failed["result"] == "ok" {
        assert!(std::time::Instant::now() < deadline, "no failed reload recorded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        failed = first_event(&berth, "action=config-reload").await;
    }
    assert!(failed["result"].as_str().unwrap().starts_with("failed"), "{failed}");

    let online = berth
        .cli()
        .args(["audit", "--json", "--action", "gc", "--url", &berth.base])
        .env("BERTH_ADMIN_USER", "carol")
        .env("BERTH_ADMIN_PASSWORD", pw("carol"))
        .output()
        .unwrap();
    assert!(online.status.success(), "{}", String::from_utf8_lossy(&online.stderr));
    let listing: Value = serde_json::from_slice(&online.stdout).unwrap();
    assert_eq!(listing["events"][0]["user"], "carol");

    berth.stop();
    let root = berth.root.to_str().unwrap().to_owned();
    let offline = berth.cli().args(["audit", "--root", &root]).output().unwrap();
    assert!(offline.status.success(), "{}", String::from_utf8_lossy(&offline.stderr));
    let table = String::from_utf8_lossy(&offline.stdout);
    assert!(table.starts_with("    ID TIME"), "{table}");
    assert!(
        table.lines().any(|l| l.contains(" carol ") && l.contains(" gc ")),
        "{table}"
    );
}

#[tokio::test]
async fn garbage_collection_prunes_events_older_than_the_max_age() {
    let berth = Berth::builder().env("BERTH_AUDIT_MAX_AGE", "10d").start();
    crate::harness::push_image(&berth, "old/app", "v1", &[b"layer"]).await;
    berth
        .advance_clock(std::time::Duration::from_secs(11 * 24 * 3600))
        .await;
    crate::harness::push_image(&berth, "new/app", "v1", &[b"layer2"]).await;
    let report = crate::harness::run_gc(&berth).await;
    assert_eq!(report["audit_events_pruned"], 1, "{report}");
    let events = crate::harness::get_json(berth.url("/admin/audit?action=push")).await;
    let repos: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["repository"].as_str().unwrap())
        .collect();
    assert_eq!(repos, ["new/app"]);
}
