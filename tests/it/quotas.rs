//! Storage quotas (`quotas:`): the repositories of a group together reference at most
//! `max_bytes`, each blob counted once. A manifest push whose new bytes would pass the limit
//! is refused with 403 `DENIED` giving used, limit and the push's new bytes (what `docker push`
//! prints), and leaves nothing referenced; uploads alone do not count; deleting images gives
//! their bytes back at once; `/admin/usage` and the metrics show each quota; a SIGHUP brings
//! in a changed rule.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clients::docker_build_and_push_refused;
use crate::gc::delete_manifest;
use crate::harness::{Berth, get_json, image_manifest, push_image, random_bytes};
use crate::policies::{put, with_config};
use crate::proxy::metric;

/// The `quotas` section of `/admin/usage`: (name, used, limit) per quota.
async fn quota_usage(berth: &Berth) -> Vec<(String, u64, u64)> {
    let usage = get_json(berth.url("/admin/usage")).await;
    usage["quotas"]
        .as_array()
        .unwrap_or_else(|| panic!("no quotas in {usage}"))
        .iter()
        .map(|q| {
            (
                q["quota"].as_str().unwrap().to_owned(),
                q["used_bytes"].as_u64().unwrap(),
                q["max_bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The bytes of the config blob `push_image` writes for an image of `layers` layers.
fn config_len(layers: usize) -> u64 {
    format!(r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"n":{layers}}}"#).len()
        as u64
}

/// Assert a 403 `DENIED` "quota exceeded" naming the quota, its usage, limit and new bytes.
async fn assert_over_quota(resp: reqwest::Response, used: u64, limit: u64, adds: u64) {
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "DENIED", "{v}");
    let message = v["errors"][0]["message"].as_str().unwrap();
    let expected = format!(
        "quota exceeded: the repositories of quota team-a/* use {used} bytes of {limit}, and this push adds {adds} new bytes"
    );
    assert!(message.starts_with(&expected), "{message}");
}

/// A shared layer counts once for the group; a push over the limit is refused with the exact
/// figures and changes nothing; deleting images frees their bytes at once, so the same push
/// then fits; the metrics show each quota.
#[tokio::test]
async fn a_group_is_held_to_its_limit_each_blob_counted_once() {
    let (berth, _dir) = with_config("quotas:\n  - repositories: \"team-a/*\"\n    max_bytes: 1000\n");
    let (l1, l2) = (random_bytes(400, 1), random_bytes(500, 2));
    let (one, _) = push_image(&berth, "team-a/one", "v1", &[&l1]).await;
    let used = config_len(1) + 400;
    assert_eq!(quota_usage(&berth).await, [("team-a/*".to_owned(), used, 1000)]);
    // The same layer and config from the group's other repository, and from outside it.
    let (two, _) = push_image(&berth, "team-a/two", "v1", &[&l1]).await;
    push_image(&berth, "team-b/x", "v1", &[&l1, &l2]).await;
    assert_eq!(quota_usage(&berth).await, [("team-a/*".to_owned(), used, 1000)]);
    // Another config and the second layer: over the limit.
    let bigger = image_manifest(&berth, "team-a/two", &[&l1, &l2]).await;
    let adds = config_len(2) + 500;
    assert!(used + adds > 1000 && config_len(2) + 900 <= 1000);
    assert_over_quota(put(&berth, "team-a/two", "v2", &bigger).await, used, 1000, adds).await;
    // Its blobs are uploaded and linked, yet nothing of the refused push counts or is stored.
    assert_eq!(quota_usage(&berth).await, [("team-a/*".to_owned(), used, 1000)]);
    let tags = get_json(berth.url("/v2/team-a/two/tags/list")).await;
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    // Deleting one of the two images sharing the layer frees nothing; deleting both frees it.
    delete_manifest(&berth, "team-a/one", &one).await;
    assert_eq!(quota_usage(&berth).await, [("team-a/*".to_owned(), used, 1000)]);
    delete_manifest(&berth, "team-a/two", &two).await;
    assert_eq!(quota_usage(&berth).await, [("team-a/*".to_owned(), 0, 1000)]);
    assert_eq!(put(&berth, "team-a/two", "v2", &bigger).await.status(), 201);
    let now = config_len(2) + 900;
    assert_eq!(quota_usage(&berth).await, [("team-a/*".to_owned(), now, 1000)]);

    assert_eq!(metric(&berth, "berth_quota_bytes", &["quota=\"team-a/*\""]).await, now);
    assert_eq!(
        metric(&berth, "berth_quota_limit_bytes", &["quota=\"team-a/*\""]).await,
        1000
    );
}

/// What the Docker engine prints when a push would pass the quota, and what is left: nothing
/// referenced (the layers it uploaded do not count).
#[tokio::test]
async fn docker_push_over_quota_is_denied_with_the_figures() {
    let (berth, _dir) = with_config("quotas:\n  - repositories: team-a/**\n    max_bytes: 1MiB\n");
    let tag = format!("{}/team-a/web/app:1", berth.host);
    let output = docker_build_and_push_refused(&tag);
    assert!(
        output.contains(
            "denied: quota exceeded: the repositories of quota team-a/** use 0 bytes of 1048576, and this push adds "
        ),
        "{output}"
    );
    assert!(output.contains("raise the quota's max_bytes"), "{output}");
    assert_eq!(quota_usage(&berth).await, [("team-a/**".to_owned(), 0, 1 << 20)]);
    let usage = get_json(berth.url("/admin/usage")).await;
    let repo = &usage["repositories"][0];
    assert_eq!(
        (&repo["name"], &repo["manifests"]),
        (&"team-a/web/app".into(), &0.into()),
        "{usage}"
    );
}

/// A quota added to the file applies on SIGHUP, also to a group already past it: pushes that
/// add bytes are refused, one that adds none (a new tag for stored content) is not.
#[tokio::test]
async fn a_sighup_brings_in_a_quota_over_existing_usage() {
    let (berth, dir) = with_config("log:\n  level: info\n");
    let layer = random_bytes(2000, 3);
    let (_, body) = push_image(&berth, "team-a/app", "v1", &[&layer]).await;
    let used = config_len(1) + 2000;
    std::fs::write(
        dir.path().join("config.yml"),
        "log:\n  level: info\nquotas:\n  - repositories: \"team-a/*\"\n    max_bytes: 1000\n",
    )
    .unwrap();
    berth.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !berth.log().contains("configuration reloaded: policies in force") {
        assert!(Instant::now() < deadline, "no reload logged:\n{}", berth.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(quota_usage(&berth).await, [("team-a/*".to_owned(), used, 1000)]);
    assert_eq!(put(&berth, "team-a/app", "again", &body).await.status(), 201);
    let more = image_manifest(&berth, "team-a/app", &[&layer, b"x"]).await;
    assert_over_quota(
        put(&berth, "team-a/app", "v2", &more).await,
        used,
        1000,
        config_len(2) + 1,
    )
    .await;
}
