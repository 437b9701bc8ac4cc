//! Micro-benchmarks of the hot paths (criterion): digest hashing, manifest parsing, the
//! route parser, and the metadata transaction of a manifest PUT (a durable commit).
//!
//! Run: `cargo bench --bench micro`.

use std::hint::black_box;

use berth::api::route;
use berth::meta::{ManifestRow, Meta, MetaStore, NewManifest, now_ms};
use berth::oci::{Algorithm, Digest, RepoName, Tag, manifest};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn hashing(c: &mut Criterion) {
    let data = vec![0x5au8; 1 << 20];
    let mut group = c.benchmark_group("digest");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("sha256 1 MiB", |b| {
        b.iter(|| Digest::of(Algorithm::Sha256, black_box(&data)));
    });
    group.bench_function("sha512 1 MiB", |b| {
        b.iter(|| Digest::of(Algorithm::Sha512, black_box(&data)));
    });
    group.finish();
    c.bench_function("digest parse", |b| {
        b.iter(|| {
            Digest::parse(black_box(
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ))
        });
    });
}

fn sample_manifest(layers: usize) -> Vec<u8> {
    let d = |i: usize| format!("sha256:{i:064x}");
    let layers: Vec<_> = (0..layers)
        .map(|i| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d(i + 1), "size": 1000 + i}))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(0), "size": 1234},
        "layers": layers,
        "annotations": {"org.opencontainers.image.created": "2026-11-22T00:00:00Z"},
    }))
    .unwrap()
}

fn parsing(c: &mut Criterion) {
    let small = sample_manifest(5);
    let large = sample_manifest(500);
    c.bench_function("manifest parse (5 layers)", |b| {
        b.iter(|| manifest::parse(black_box(&small), None).unwrap());
    });
    c.bench_function("manifest parse (500 layers)", |b| {
        b.iter(|| manifest::parse(black_box(&large), None).unwrap());
    });
    let paths = [
        "/v2/library/busybox/manifests/latest",
        "/v2/team/project/app/blobs/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "/v2/a/b/c/blobs/uploads/0b5a5f4e-7d3c-4c1e-9f41-0d9c2a3b4c5d",
        "/v2/library/busybox/tags/list",
    ];
    c.bench_function("route parse", |b| {
        b.iter(|| {
            for p in &paths {
                black_box(route::parse(black_box(p)).unwrap());
            }
        });
    });
}

fn manifest_put(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let meta = Meta::open(dir.path()).unwrap();
    let repo = RepoName::parse("bench/app").unwrap();
    let config = Digest::of(Algorithm::Sha256, b"{}");
    meta.commit_blob(&repo, &config, 2, None, now_ms()).wait().unwrap();
    let mut n = 0u64;
    c.bench_function("manifest PUT transaction (durable commit)", |b| {
        b.iter(|| {
            n += 1;
            let body = format!(r#"{{"schemaVersion":2,"n":{n}}}"#).into_bytes();
            let digest = Digest::of(Algorithm::Sha256, &body);
            let row = ManifestRow {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                body,
                subject: None,
                created_ms: now_ms(),
            };
            let new = NewManifest {
                repo: repo.clone(),
                digest,
                row,
                blobs: vec![(config.clone(), 2)],
                children: Vec::new(),
                referrer: None,
                tags: vec![Tag::parse(&format!("t{}", n % 100)).unwrap()],
                sparse: false,
                protected: berth::meta::Protected::default(),
                quotas: Vec::new(),
            };
            meta.put_manifest(new, now_ms()).wait().unwrap();
        });
    });
}

criterion_group!(benches, hashing, parsing, manifest_put);
criterion_main!(benches);
