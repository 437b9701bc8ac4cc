//! Retention rules (`retention:`): several rules, a dry run that lists exactly what the real
//! run then removes (each with its reason), immutable tags and everything outside the rules
//! untouched, untagged manifests going after `untagged_after` while a kept index's children
//! and a kept manifest's referrers stay, garbage collection applying the rules first, a push
//! that moves a doomed tag between the decision and the delete winning (ordered with the
//! `retention.before_delete` pause point) while another repository takes pushes, and
//! `berth retention` offline and with `--url`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Berth, client, get_json, push_blob, push_image, push_manifest, run_gc, sha256};

const DAY: Duration = Duration::from_secs(86_400);
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

const RULES: &str = "retention:
  - repositories: \"team/*\"
    keep_last: 2
    keep_tags: [\"latest\"]
  - repositories: [\"ci/**\"]
    older_than: 30d
    untagged_after: 7d
immutable_tags:
  - repositories: \"team/*\"
    tags: \"release-*\"
";

fn start(yaml: &str, env: &[(&str, &str)]) -> (Berth, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, yaml).unwrap();
    let mut builder = Berth::builder().arg("--config").arg(path.to_str().unwrap());
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    (builder.start(), dir)
}

async fn retention(berth: &Berth, dry_run: bool) -> Value {
    let url = berth.url(&format!("/admin/retention?dry_run={dry_run}"));
    let resp = client().post(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn tags(berth: &Berth, repo: &str) -> BTreeSet<String> {
    let v = get_json(berth.url(&format!("/v2/{repo}/tags/list"))).await;
    v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn removed_tags(report: &Value) -> BTreeSet<String> {
    report["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}:{}", t["repository"].as_str().unwrap(), t["tag"].as_str().unwrap()))
        .collect()
}

fn removed_manifests(report: &Value) -> BTreeSet<String> {
    report["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}@{}",
                m["repository"].as_str().unwrap(),
                m["digest"].as_str().unwrap()
            )
        })
        .collect()
}

async fn manifest_status(berth: &Berth, repo: &str, reference: &str) -> u16 {
    let url = berth.url(&format!("/v2/{repo}/manifests/{reference}"));
    let resp = client()
        .head(url)
        .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

/// An index over two fresh images of `repo`, pushed by digest (untagged); (index, children).
async fn index_of_two(berth: &Berth, repo: &str, seed: &str) -> (String, Vec<String>) {
    let mut children = Vec::new();
    let mut descs = Vec::new();
    for arch in ["amd64", "arm64"] {
        let layer = format!("{seed} {arch}");
        let (digest, body) = push_image(berth, repo, &format!("tmp-{seed}-{arch}"), &[layer.as_bytes()]).await;
        let resp = client()
            .delete(berth.url(&format!("/v2/{repo}/manifests/tmp-{seed}-{arch}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        descs.push(json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": body.len(),
            "platform": {"os": "linux", "architecture": arch}}));
        children.push(digest);
    }
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs})).unwrap();
    let digest = push_manifest(berth, repo, &sha256(&index), OCI_INDEX, &index).await;
    (digest, children)
}

#[tokio::test]
async fn rules_remove_what_they_doom_and_nothing_else() {
    let (berth, _dir) = start(RULES, &[]);
    // Old content, then 40 days later new content.
    for t in ["a", "b", "latest", "release-1"] {
        push_image(&berth, "team/app", t, &[format!("team {t}").as_bytes()]).await;
    }
    let (old, _) = push_image(&berth, "ci/build", "old", &[b"ci old"]).await;
    push_image(&berth, "other/app", "old", &[b"other old"]).await;
    let (stale, _) = push_image(&berth, "ci/build", "doomed-untagged", &[b"ci untagged"]).await;
    client()
        .delete(berth.url("/v2/ci/build/manifests/doomed-untagged"))
        .send()
        .await
        .unwrap();
    let (kept_index, kept_children) = index_of_two(&berth, "ci/build", "kept").await;
    let kept_index_body = get_json(berth.url(&format!("/v2/ci/build/manifests/{kept_index}"))).await;
    assert_eq!(kept_index_body["manifests"].as_array().unwrap().len(), 2);
    berth.advance_clock(40 * DAY).await;
    for t in ["c", "d"] {
        push_image(&berth, "team/app", t, &[format!("team {t}").as_bytes()]).await;
    }
    push_image(&berth, "ci/build", "new", &[b"ci new"]).await;
    // The index is tagged now, so its (untagged, 40 days old) children stay.
    let index_body = serde_json::to_vec(&kept_index_body).unwrap();
    let tagged = client()
        .put(berth.url("/v2/ci/build/manifests/nightly"))
        .header("content-type", OCI_INDEX)
        .body(index_body)
        .send()
        .await
        .unwrap();
    assert_eq!(tagged.status(), 201);

    let shown = get_json(berth.url("/admin/policies")).await;
    assert_eq!(shown["retention"][0]["keep_last"], 2, "{shown}");
    assert_eq!(shown["retention"][1]["older_than"], "30d", "{shown}");
    let predicted = retention(&berth, true).await;
    assert_eq!(predicted["dry_run"], true);
    let expected_tags: BTreeSet<String> = ["team/app:a", "team/app:b", "ci/build:old"].map(String::from).into();
    assert_eq!(removed_tags(&predicted), expected_tags, "{predicted}");
    // With untagged_after, the manifest a removed tag leaves untagged goes too.
    let expected_manifests: BTreeSet<String> = [format!("ci/build@{stale}"), format!("ci/build@{old}")].into();
    assert_eq!(removed_manifests(&predicted), expected_manifests, "{predicted}");
    let reason = predicted["tags"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("most recently pushed") || reason.contains("older_than"),
        "{reason}"
    );
    assert_eq!(tags(&berth, "team/app").await.len(), 6, "a dry run removes nothing");

    let done = retention(&berth, false).await;
    assert_eq!(removed_tags(&done), expected_tags, "the run does what the dry run said");
    assert_eq!(removed_manifests(&done), expected_manifests);
    let team: BTreeSet<String> = ["c", "d", "latest", "release-1"].map(String::from).into();
    assert_eq!(
        tags(&berth, "team/app").await,
        team,
        "keep_last, keep_tags and immutable"
    );
    let ci: BTreeSet<String> = ["new", "nightly"].map(String::from).into();
    assert_eq!(tags(&berth, "ci/build").await, ci);
    assert_eq!(tags(&berth, "other/app").await.len(), 1, "outside the rules: untouched");
    assert_eq!(manifest_status(&berth, "ci/build", &stale).await, 404);
    for child in &kept_children {
        assert_eq!(
            manifest_status(&berth, "ci/build", child).await,
            200,
            "a kept index's child"
        );
    }
    // Each removed tag is in the audit log as a tag delete by Berth (the test's own deletes
    // are by nobody), with the reason; the run itself as an admin action.
    let events = get_json(berth.url("/admin/audit?action=tag-delete")).await;
    let audited: BTreeSet<String> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["user"] == "berth")
        .map(|e| {
            assert!(e["result"].as_str().unwrap().contains("retention"), "{e}");
            format!(
                "{}:{}",
                e["repository"].as_str().unwrap(),
                e["reference"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(audited, expected_tags);
    let runs = get_json(berth.url("/admin/audit?action=retention")).await;
    assert_eq!(
        runs["events"].as_array().unwrap().len(),
        2,
        "the dry run and the run: {runs}"
    );
    // Nothing left to do.
    let again = retention(&berth, false).await;
    assert!(
        removed_tags(&again).is_empty() && removed_manifests(&again).is_empty(),
        "{again}"
    );
}

/// Garbage collection applies the rules first, and its report carries theirs; a referrer of
/// a kept manifest stays although it is untagged and old.
#[tokio::test]
async fn garbage_collection_applies_the_rules_first() {
    let (berth, _dir) = start(RULES, &[]);
    let (subject, body) = push_image(&berth, "ci/app", "v1", &[b"subject layer"]).await;
    let config = push_blob(&berth, "ci/app", b"{}").await;
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example.sbom",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": body.len()},
    }))
    .unwrap();
    let referrer_digest = push_manifest(&berth, "ci/app", &sha256(&referrer), OCI_MANIFEST, &referrer).await;
    push_image(&berth, "ci/app", "stale", &[b"stale layer"]).await;
    berth.advance_clock(40 * DAY).await;
    // v1 is pushed again today: it is young, so it and its referrer stay.
    push_manifest(&berth, "ci/app", "v1", OCI_MANIFEST, &body).await;
    let report = run_gc(&berth).await;
    let retention = &report["retention"];
    let expected: BTreeSet<String> = ["ci/app:stale".to_owned()].into();
    assert_eq!(removed_tags(retention), expected, "{report}");
    assert_eq!(manifest_status(&berth, "ci/app", &referrer_digest).await, 200);
    assert_eq!(tags(&berth, "ci/app").await, ["v1".to_owned()].into());
}

/// A tag moved after retention chose it, before the delete, stays; pushes elsewhere go on.
#[tokio::test]
async fn a_push_between_the_decision_and_the_delete_wins() {
    let (berth, _dir) = start(RULES, &[("BERTH_TEST_PAUSE_AT", "retention.before_delete")]);
    for t in ["a", "b"] {
        push_image(&berth, "team/web", t, &[format!("web {t}").as_bytes()]).await;
    }
    berth.advance_clock(DAY).await;
    for t in ["c", "d"] {
        push_image(&berth, "team/web", t, &[format!("web {t}").as_bytes()]).await;
    }
    let base = berth.base.clone();
    let run = tokio::spawn(async move {
        let resp = client().post(format!("{base}/admin/retention")).send().await.unwrap();
        resp.json::<Value>().await.unwrap()
    });
    berth.wait_reached("retention.before_delete", 1).await;
    // a is pushed again (it is now the newest); other repositories take pushes meanwhile.
    push_image(&berth, "team/web", "a", &[b"web a again"]).await;
    for i in 0..5 {
        push_image(&berth, "loop/app", &format!("t{i}"), &[format!("loop {i}").as_bytes()]).await;
    }
    berth.resume("retention.before_delete").await;
    let report = run.await.unwrap();
    let expected: BTreeSet<String> = ["team/web:b".to_owned()].into();
    assert_eq!(removed_tags(&report), expected, "{report}");
    let web: BTreeSet<String> = ["a", "c", "d"].map(String::from).into();
    assert_eq!(tags(&berth, "team/web").await, web);
    assert_eq!(tags(&berth, "loop/app").await.len(), 5);
}

#[tokio::test]
async fn berth_retention_runs_offline_and_through_a_server() {
    let (mut berth, dir) = start(RULES, &[]);
    for t in ["a", "b", "c"] {
        push_image(&berth, "team/cli", t, &[format!("cli {t}").as_bytes()]).await;
        berth.advance_clock(Duration::from_secs(60)).await;
    }
    let config = dir.path().join("config.yml");
    let through = berth
        .cli()
        .args(["retention", "--dry-run", "--json", "--url", &berth.base])
        .output()
        .unwrap();
    assert!(through.status.success(), "{}", String::from_utf8_lossy(&through.stderr));
    let v: Value = serde_json::from_slice(&through.stdout).unwrap();
    assert_eq!(removed_tags(&v), ["team/cli:a".to_owned()].into());
    berth.stop();
    let root = berth.root.to_str().unwrap().to_owned();
    let offline = berth
        .cli()
        .args(["retention", "--config", config.to_str().unwrap(), "--root", &root])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&offline.stdout);
    assert!(offline.status.success(), "{}", String::from_utf8_lossy(&offline.stderr));
    assert!(text.contains("tag       team/cli:a"), "{text}");
    assert!(
        text.contains("retention removed 1 tag and 0 untagged manifests"),
        "{text}"
    );
    berth.restart();
    assert_eq!(tags(&berth, "team/cli").await, ["b", "c"].map(String::from).into());
}
