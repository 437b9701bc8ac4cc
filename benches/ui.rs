//! The web UI at scale: one repository with `UIBENCH_TAGS` tags (default 10 000, each on its
//! own manifest with its own config blob) and `UIBENCH_REPOS` more repositories (default
//! 10 000, in namespaces of 100, each one tagged image), pushed over the API; then the first
//! page of the repository list, of that repository (newest push first, and by name) and a
//! manifest page, each fetched `UIBENCH_RUNS` times (default 21) after one warm-up, over
//! keep-alive HTTP from a release `berth`. The target (issue 19): under 20 ms each.
//!
//! Run: `cargo bench --bench ui` (a release build).

#![allow(clippy::cast_precision_loss)] // figures for a report

mod common;

use std::time::Instant;

use common::{Server, env_num, machine, median, push_blob, put_manifest, run_concurrent};
use serde_json::json;

const REPO: &str = "big/app";
const CONCURRENCY: usize = 32;

fn manifest(config: &str, config_size: usize, layer: &str, layer_size: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": common::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
    }))
    .unwrap()
}

fn config(n: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "config": {"Env": [format!("BUILD={n}")]}}))
        .unwrap()
}

/// Mount `digest` from `REPO` into `repo` (one request; no bytes move).
async fn mount(c: &reqwest::Client, base: &str, repo: &str, digest: &str) {
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/?mount={digest}&from={REPO}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "mount into {repo}");
}

async fn fill(base: &str, tags: usize, repos: usize) {
    let c = common::client();
    let layer = common::random_bytes(4096, 1);
    let layer_size = layer.len();
    let layer = push_blob(&c, base, REPO, layer).await;
    let (c, layer) = (&c, layer.as_str());
    run_concurrent(tags, CONCURRENCY, |i| async move {
        let body = config(i);
        let size = body.len();
        let digest = push_blob(c, base, REPO, body).await;
        put_manifest(
            c,
            base,
            REPO,
            &format!("v{i:05}"),
            manifest(&digest, size, layer, layer_size),
        )
        .await;
    })
    .await;
    let shared = config(0);
    let (shared_size, shared) = (shared.len(), common::sha256(&shared));
    let shared = shared.as_str();
    run_concurrent(repos, CONCURRENCY, |i| async move {
        let repo = format!("ns{:03}/app{i:05}", i / 100);
        mount(c, base, &repo, shared).await;
        mount(c, base, &repo, layer).await;
        put_manifest(
            c,
            base,
            &repo,
            "latest",
            manifest(shared, shared_size, layer, layer_size),
        )
        .await;
    })
    .await;
}

/// Milliseconds of each GET of `path` (200, HTML), after one unmeasured warm-up.
async fn time_page(c: &reqwest::Client, base: &str, path: &str, runs: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(runs);
    for run in 0..=runs {
        let t = Instant::now();
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body = r.text().await.unwrap();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        assert!(body.contains("</html>"), "{path} is not a whole page");
        if run > 0 {
            out.push(ms);
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let tags = env_num("UIBENCH_TAGS", 10_000);
    let repos = env_num("UIBENCH_REPOS", 10_000);
    let runs = env_num("UIBENCH_RUNS", 21);
    println!("web UI benchmark: {tags} tags in {REPO}, {repos} more repositories, {runs} runs per page");
    println!("machine: {}", machine());
    let server = Server::start(&[]);
    let base = server.base.as_str();
    let t = Instant::now();
    fill(base, tags, repos).await;
    println!("filled over the API in {:.1} s", t.elapsed().as_secs_f64());
    let c = common::client();
    let pages = [
        ("repository list, first page", "/ui/".to_owned()),
        ("repository with 10k tags, newest push first", format!("/ui/r/{REPO}")),
        ("same, by name", format!("/ui/r/{REPO}?sort=name")),
        (
            "same, by name, a later page",
            format!("/ui/r/{REPO}?sort=name&after=v{:05}", tags / 2),
        ),
        ("same, filtered (`?q=v0999`)", format!("/ui/r/{REPO}?q=v0999")),
        (
            "a manifest of it (reads its config blob)",
            format!("/ui/r/{REPO}/-/m/v{:05}", tags / 3),
        ),
    ];
    println!();
    println!("| page | min | median | max |");
    println!("|---|---|---|---|");
    for (name, path) in pages {
        let mut ms = time_page(&c, base, &path, runs).await;
        ms.sort_by(f64::total_cmp);
        let (min, max) = (ms[0], ms[ms.len() - 1]);
        let name = name.replace("{tags}", &tags.to_string());
        println!("| {name} | {min:.1} ms | {:.1} ms | {max:.1} ms |", median(ms));
    }
}
