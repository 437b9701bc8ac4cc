//! Immutable tags (`immutable_tags:`): once such a tag exists, a push that would move it and a
//! delete of it or of its manifest are refused with 403 `DENIED` naming the rule, through raw
//! HTTP, the Docker engine and skopeo; pushing the identical manifest again succeeds (CI
//! reruns); tags outside the rules move freely; and a SIGHUP brings in rules added to the file.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::api_manifests::delete;
use crate::clients::{docker_build_and_push, docker_build_and_push_refused, skopeo};
use crate::harness::{Berth, client, push_blob, push_image, random_bytes};

const RULES: &str = "immutable_tags:\n  - repositories: \"prod/*\"\n    tags: [\"v*\", \"release-*\"]\n";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

pub(crate) fn with_config(yaml: &str) -> (Berth, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, yaml).unwrap();
    let berth = Berth::builder().arg("--config").arg(path.to_str().unwrap()).start();
    (berth, dir)
}

pub(crate) async fn put(berth: &Berth, repo: &str, reference: &str, body: &[u8]) -> reqwest::Response {
    client()
        .put(berth.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", OCI_MANIFEST)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// Assert a 403 `DENIED` whose message names the tag and the rule.
async fn assert_immutable(resp: reqwest::Response, tag: &str) {
    assert_eq!(resp.status(), 403);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["errors"][0]["code"], "DENIED", "{v}");
    let message = v["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains(&format!("tag {tag} ")), "{message}");
    assert!(
        message.contains("immutable_tags rule repositories [\"prod/*\"]"),
        "{message}"
    );
}

/// A second image manifest in `repo` (its own config blob); its bytes.
async fn other_manifest(berth: &Berth, repo: &str, seed: u64) -> Vec<u8> {
    let layer = random_bytes(300, seed);
    let layer_digest = push_blob(berth, repo, &layer).await;
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#);
    let config_digest = push_blob(berth, repo, config.as_bytes()).await;
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap()
}

#[tokio::test]
async fn an_immutable_tag_neither_moves_nor_goes() {
    let (berth, _dir) = with_config(RULES);
    let (v1_digest, v1) = push_image(&berth, "prod/app", "v1", &[b"layer one"]).await;
    // The identical manifest again: a no-op success, by tag and by digest with ?tag=.
    assert_eq!(put(&berth, "prod/app", "v1", &v1).await.status(), 201);
    let again = put(&berth, "prod/app", &format!("{v1_digest}?tag=v1"), &v1).await;
    assert_eq!(again.status(), 201);
    // Another manifest: not to v1, nor with ?tag=v1 beside a free tag (which then stays unset).
    let other = other_manifest(&berth, "prod/app", 2).await;
    assert_immutable(put(&berth, "prod/app", "v1", &other).await, "v1").await;
    let other_digest = crate::harness::sha256(&other);
    let both = put(&berth, "prod/app", &format!("{other_digest}?tag=latest&tag=v1"), &other).await;
    assert_immutable(both, "v1").await;
    let latest = client()
        .get(berth.url("/v2/prod/app/manifests/latest"))
        .send()
        .await
        .unwrap();
    assert_eq!(latest.status(), 404, "nothing of a refused push is written");
    let stored = client()
        .head(berth.url(&format!("/v2/prod/app/manifests/{other_digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 404);
    // Neither the tag nor its manifest can be deleted.
    assert_immutable(delete(&berth, "prod/app", "v1").await, "v1").await;
    assert_immutable(delete(&berth, "prod/app", &v1_digest).await, "v1").await;
    let got = client()
        .get(berth.url("/v2/prod/app/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.headers()["docker-content-digest"], v1_digest.as_str());
    // Tags outside the rules move and go as usual: latest here, v1 in another repository.
    assert_eq!(put(&berth, "prod/app", "latest", &v1).await.status(), 201);
    assert_eq!(put(&berth, "prod/app", "latest", &other).await.status(), 201);
    assert_eq!(delete(&berth, "prod/app", "latest").await.status(), 202);
    let (_, dev) = push_image(&berth, "dev/app", "v1", &[b"dev layer"]).await;
    let dev_other = other_manifest(&berth, "dev/app", 3).await;
    assert_eq!(put(&berth, "dev/app", "v1", &dev_other).await.status(), 201);
    assert_eq!(put(&berth, "dev/app", "v1", &dev).await.status(), 201);
}

/// What the Docker engine and skopeo print when a push would move an immutable tag.
#[tokio::test]
async fn docker_and_skopeo_show_the_refusal() {
    let (berth, _dir) = with_config(RULES);
    let tag = format!("{}/prod/web:release-1", berth.host);
    docker_build_and_push(&tag, &[]);
    let output = docker_build_and_push_refused(&tag);
    assert!(output.contains("denied"), "{output}");
    assert!(output.contains("tag release-1 of prod/web is immutable"), "{output}");

    // skopeo: copying another image onto the tag is refused; the same image again is not.
    push_image(&berth, "prod/web", "candidate", &[b"candidate layer"]).await;
    let host = &berth.host;
    let dest = format!("docker://{host}/prod/web:release-1");
    let args = |src: &str| {
        vec![
            "copy".to_owned(),
            "--src-tls-verify=false".to_owned(),
            "--dest-tls-verify=false".to_owned(),
            format!("docker://{host}/prod/web:{src}"),
            dest.clone(),
        ]
    };
    let refused = Command::new("skopeo").args(args("candidate")).output().unwrap();
    let output = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "skopeo moved an immutable tag");
    assert!(output.contains("is immutable"), "{output}");
    let same: Vec<String> = args("release-1");
    let same: Vec<&str> = same.iter().map(String::as_str).collect();
    skopeo(&same);
}

/// Rules added to the file take effect on SIGHUP, without a restart.
#[tokio::test]
async fn a_sighup_brings_in_new_rules() {
    let (berth, dir) = with_config("log:\n  level: info\n");
    let shown = crate::harness::get_json(berth.url("/admin/policies")).await;
    assert_eq!(shown["immutable_tags"], serde_json::json!([]), "{shown}");
    push_image(&berth, "prod/api", "v2", &[b"api layer"]).await;
    let other = other_manifest(&berth, "prod/api", 4).await;
    std::fs::write(dir.path().join("config.yml"), format!("log:\n  level: info\n{RULES}")).unwrap();
    berth.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !berth.log().contains("configuration reloaded: policies in force") {
        assert!(Instant::now() < deadline, "no reload logged:\n{}", berth.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_immutable(put(&berth, "prod/api", "v2", &other).await, "v2").await;
    // The admin API shows the rules now in force.
    let shown = crate::harness::get_json(berth.url("/admin/policies")).await;
    assert_eq!(
        shown["immutable_tags"][0]["repositories"],
        serde_json::json!(["prod/*"]),
        "{shown}"
    );
    assert_eq!(
        shown["immutable_tags"][0]["tags"],
        serde_json::json!(["v*", "release-*"]),
        "{shown}"
    );
    // A file that no longer loads keeps the rules in force.
    std::fs::write(dir.path().join("config.yml"), "immutable_tags: [oops\n").unwrap();
    berth.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !berth.log().contains("configuration reload failed") {
        assert!(Instant::now() < deadline, "no failure logged:\n{}", berth.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_immutable(put(&berth, "prod/api", "v2", &other).await, "v2").await;
}

/// A child of an index that an immutable tag names cannot be deleted by digest either: the
/// tag would then name a broken index.
#[tokio::test]
async fn the_children_of_an_immutable_index_stay() {
    let (berth, _dir) = with_config(RULES);
    let (child, body) = push_image(&berth, "prod/multi", "child-tmp", &[b"child layer"]).await;
    assert_eq!(delete(&berth, "prod/multi", "child-tmp").await.status(), 202);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": body.len(),
            "platform": {"os": "linux", "architecture": "amd64"}}],
    }))
    .unwrap();
    let resp = client()
        .put(berth.url("/v2/prod/multi/manifests/v2"))
        .header("content-type", "application/vnd.oci.image.index.v1+json")
        .body(index)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_immutable(delete(&berth, "prod/multi", &child).await, "v2").await;
    let got = client()
        .get(berth.url(&format!("/v2/prod/multi/manifests/{child}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
}
