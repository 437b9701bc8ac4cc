//! `berth import distribution`: a real CNCF Distribution 2.8.2 (`docker-registry`) is filled
//! over HTTP (a Docker manifest list of two platform images, plain Docker and OCI images, an
//! OCI artifact whose subject is one of them, a manifest deleted by digest, a tag pushed twice,
//! an OCI index), stopped, and imported; then Berth is started on the store and skopeo pulls
//! every tag, byte for byte. Also: a corrupt blob file skips exactly the images needing it, a
//! rerun imports nothing new, a dry run writes nothing, a second import after one more push
//! takes only that, and the import refuses a store a server holds or a directory that is not
//! Distribution's. The Distribution and Berth processes are stopped before each import, so
//! nothing races it.

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use crate::clients::skopeo;
use crate::distribution::Distribution;
use crate::harness::{Berth, client, get_json, header, image_media_types, random_bytes, sha256, tag_list};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image as pushed: its manifest and the blobs it needs (config first).
struct Image {
    media_type: &'static str,
    manifest: Vec<u8>,
    digest: String,
    blobs: Vec<(String, Vec<u8>)>,
}

impl Image {
    /// An image for `arch` with one layer of `size` random bytes, Docker schema2 or OCI.
    fn new(docker: bool, arch: &str, size: usize, seed: u64) -> Image {
        let (media_type, config_type, layer_type) = image_media_types(docker);
        let layer = random_bytes(size, seed);
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
        }))
        .unwrap();
        let blobs = vec![(sha256(&config), config), (sha256(&layer), layer)];
        let manifest = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2, "mediaType": media_type,
            "config": descriptor(config_type, &blobs[0]),
            "layers": [descriptor(layer_type, &blobs[1])],
        }))
        .unwrap();
        Image {
            media_type,
            digest: sha256(&manifest),
            manifest,
            blobs,
        }
    }

    /// An OCI artifact (an SBOM, say) whose subject is `subject`.
    fn artifact(subject: &Image, seed: u64) -> Image {
        let config = b"{}".to_vec();
        let sbom = random_bytes(3000, seed);
        let blobs = vec![(sha256(&config), config), (sha256(&sbom), sbom)];
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom.v1+json",
            "config": descriptor("application/vnd.oci.empty.v1+json", &blobs[0]),
            "layers": [descriptor("application/vnd.example.sbom.v1+json", &blobs[1])],
            "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.manifest.len()},
        }))
        .unwrap();
        Image {
            media_type: OCI_MANIFEST,
            digest: sha256(&manifest),
            manifest,
            blobs,
        }
    }

    async fn push(&self, registry: &Distribution, repo: &str, reference: &str) {
        for (digest, bytes) in &self.blobs {
            assert_eq!(&registry.push_blob(repo, bytes).await, digest);
        }
        let reference = if reference.is_empty() { &self.digest } else { reference };
        let digest = registry
            .push_manifest(repo, reference, self.media_type, &self.manifest)
            .await;
        assert_eq!(digest, self.digest);
    }
}

fn descriptor(media_type: &str, (digest, bytes): &(String, Vec<u8>)) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
}

/// An index (Docker manifest list or OCI index) of `images`, one per architecture.
struct Index {
    media_type: &'static str,
    manifest: Vec<u8>,
    digest: String,
}

impl Index {
    fn new(media_type: &'static str, images: &[(&str, &Image)]) -> Index {
        let entries: Vec<Value> = images
            .iter()
            .map(|(arch, image)| {
                json!({"mediaType": image.media_type, "digest": image.digest, "size": image.manifest.len(),
                       "platform": {"architecture": arch, "os": "linux"}})
            })
            .collect();
        let manifest =
            serde_json::to_vec_pretty(&json!({"schemaVersion": 2, "mediaType": media_type, "manifests": entries}))
                .unwrap();
        Index {
            media_type,
            digest: sha256(&manifest),
            manifest,
        }
    }

    async fn push(&self, registry: &Distribution, repo: &str, tag: &str) {
        let digest = registry.push_manifest(repo, tag, self.media_type, &self.manifest).await;
        assert_eq!(digest, self.digest);
    }
}

/// Run `berth import distribution <source> --root <berth's root> --json [extra]` with the
/// server's storage settings; its exit code and report.
fn import(berth: &Berth, source: &Path, extra: &[&str]) -> (i32, Value) {
    let out = import_raw(berth, source, &berth.root, extra);
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "import printed no report: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("exited"), report)
}

fn import_raw(berth: &Berth, source: &Path, root: &Path, extra: &[&str]) -> Output {
    let (source, root) = (source.to_str().unwrap(), root.to_str().unwrap());
    let mut args = vec!["import", "distribution", source, "--root", root, "--json"];
    args.extend(extra);
    berth.cli().args(&args).output().unwrap()
}

/// The report's counts of one kind: (imported, present, skipped).
fn counts(report: &Value, what: &str) -> (u64, u64, u64) {
    let c = &report[what];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{what}.{k} in {report:#}"));
    (n("imported"), n("present"), n("skipped"))
}

/// Pull `repo:tag` from Berth with skopeo into a `dir:` copy and check that the manifest and
/// every blob are the bytes pushed (`all`: every image of an index too, as `<hex>.manifest.json`).
fn pull_and_compare(berth: &Berth, repo: &str, tag: &str, manifest: &[u8], images: &[&Image]) {
    let dst = tempfile::tempdir().unwrap();
    let src = format!("docker://{}/{repo}:{tag}", berth.host);
    let dst_ref = format!("dir:{}", dst.path().display());
    let mut args = vec!["copy", "--preserve-digests", "--src-tls-verify=false"];
    if images.len() > 1 {
        args.push("--all");
    }
    args.extend([src.as_str(), dst_ref.as_str()]);
    skopeo(&args);
    let read =
        |name: &str| std::fs::read(dst.path().join(name)).unwrap_or_else(|e| panic!("{name} of {repo}:{tag}: {e}"));
    assert_eq!(read("manifest.json"), manifest, "manifest of {repo}:{tag}");
    for image in images {
        if images.len() > 1 {
            let hex = image.digest.strip_prefix("sha256:").unwrap();
            assert_eq!(
                read(&format!("{hex}.manifest.json")),
                image.manifest,
                "{}",
                image.digest
            );
        }
        for (digest, bytes) in &image.blobs {
            assert_eq!(
                &read(digest.strip_prefix("sha256:").unwrap()),
                bytes,
                "blob {digest} of {repo}:{tag}"
            );
        }
    }
}

/// GET a manifest from Berth: status, digest header, body.
async fn manifest(berth: &Berth, repo: &str, reference: &str) -> (u16, String, Vec<u8>) {
    let accept = [DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX].join(", ");
    let resp = client()
        .get(berth.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let digest = if status == 200 {
        header(&resp, "docker-content-digest")
    } else {
        String::new()
    };
    (status, digest, resp.bytes().await.unwrap().to_vec())
}

/// A Berth whose store exists and is stopped, ready to import into.
fn stopped_berth() -> Berth {
    let mut berth = Berth::builder().start();
    berth.stop();
    berth
}

/// What the main test pushes into Distribution.
struct Pushed {
    amd: Image,
    arm: Image,
    list: Index,
    plain: Image,
    first: Image,
    second: Image,
    deleted: Image,
    oci: Image,
    sbom: Image,
}

impl Pushed {
    async fn into(registry: &Distribution) -> Pushed {
        // A Docker manifest list of two platform images.
        let (amd, arm) = (
            Image::new(true, "amd64", 300_000, 1),
            Image::new(true, "arm64", 200_000, 2),
        );
        amd.push(registry, "multi/app", "").await;
        arm.push(registry, "multi/app", "").await;
        let list = Index::new(DOCKER_LIST, &[("amd64", &amd), ("arm64", &arm)]);
        list.push(registry, "multi/app", "latest").await;
        // A plain Docker image; a tag pushed twice (the newest wins); a manifest deleted by
        // digest.
        let plain = Image::new(true, "amd64", 150_000, 3);
        plain.push(registry, "plain", "1").await;
        let (first, second) = (Image::new(true, "amd64", 1000, 4), Image::new(true, "amd64", 2000, 5));
        first.push(registry, "plain", "v1").await;
        second.push(registry, "plain", "v1").await;
        let deleted = Image::new(true, "amd64", 4000, 6);
        deleted.push(registry, "plain", "old").await;
        registry.delete_manifest("plain", &deleted.digest).await;
        // An OCI image and an artifact whose subject it is (untagged, found by referrers).
        let oci = Image::new(false, "amd64", 100_000, 7);
        oci.push(registry, "oci/img", "1.0").await;
        let sbom = Image::artifact(&oci, 8);
        sbom.push(registry, "oci/img", "").await;
        Pushed {
            amd,
            arm,
            list,
            plain,
            first,
            second,
            deleted,
            oci,
            sbom,
        }
    }

    /// Berth serves all of it as pushed, and nothing deleted.
    async fn check(&self, berth: &Berth) {
        pull_and_compare(
            berth,
            "multi/app",
            "latest",
            &self.list.manifest,
            &[&self.amd, &self.arm],
        );
        pull_and_compare(berth, "plain", "1", &self.plain.manifest, &[&self.plain]);
        pull_and_compare(berth, "plain", "v1", &self.second.manifest, &[&self.second]);
        pull_and_compare(berth, "oci/img", "1.0", &self.oci.manifest, &[&self.oci]);
        assert_eq!(tag_list(berth, "plain").await, json!(["1", "v1"]));
        let (status, _, body) = manifest(berth, "plain", &self.first.digest).await;
        assert_eq!(
            (status, body),
            (200, self.first.manifest.clone()),
            "the tag's old image stays, untagged"
        );
        assert_eq!(
            manifest(berth, "plain", &self.deleted.digest).await.0,
            404,
            "deleted in Distribution"
        );
        assert_eq!(manifest(berth, "plain", "old").await.0, 404);
        let sbom = &self.sbom;
        let (status, digest, body) = manifest(berth, "oci/img", &sbom.digest).await;
        assert_eq!(
            (status, digest, body),
            (200, sbom.digest.clone(), sbom.manifest.clone())
        );
        let referrers = get_json(berth.url(&format!("/v2/oci/img/referrers/{}", self.oci.digest))).await;
        assert_eq!(
            referrers["manifests"][0]["digest"],
            sbom.digest.as_str(),
            "{referrers:#}"
        );
    }
}

#[tokio::test]
async fn a_distribution_store_is_imported_whole_and_every_tag_pulls_byte_for_byte() {
    let mut registry = Distribution::start();
    let pushed = Pushed::into(&registry).await;
    registry.stop();

    let mut berth = stopped_berth();
    let (code, report) = import(&berth, &registry.root(), &[]);
    assert_eq!(code, 0, "{report:#}");
    let mut keys: Vec<&str> = report.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "blobs",
            "created_store",
            "dry_run",
            "duration_ms",
            "links",
            "manifests",
            "repositories",
            "skipped",
            "source",
            "tags"
        ]
    );
    assert_eq!(
        report["source"],
        registry
            .root()
            .join("docker/registry/v2")
            .canonicalize()
            .unwrap()
            .to_str()
            .unwrap()
    );
    assert_eq!(
        (report["dry_run"].clone(), report["created_store"].clone()),
        (json!(false), json!(false))
    );
    assert_eq!(counts(&report, "repositories"), (3, 0, 0));
    // amd, arm, list; plain, first, second (untagged now, still a manifest there); oci, sbom.
    assert_eq!(counts(&report, "manifests"), (8, 0, 0));
    assert_eq!(counts(&report, "tags"), (4, 0, 0));
    assert_eq!(report["skipped"], json!([]));
    // Every blob pushed, the deleted image's too (Distribution keeps its layer links).
    let blobs = &report["blobs"];
    assert_eq!(blobs["imported"], 2 * 8, "{report:#}");
    let (linked, copied) = (
        blobs["hard_linked"].as_u64().unwrap(),
        blobs["copied"].as_u64().unwrap(),
    );
    if berth.on_s3() {
        assert_eq!((linked, copied), (0, 16), "a bucket gets copies");
    } else {
        assert_eq!((linked, copied), (16, 0), "the same file system: hard links");
    }

    berth.restart();
    pushed.check(&berth).await;
    let fsck = crate::harness::fsck_report(&berth);
    assert_eq!(fsck["problems"], json!([]), "{fsck:#}");

    // The import refuses a store the server holds, and changes nothing.
    let out = import_raw(&berth, &registry.root(), &berth.root, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("held by a running berth server"), "{stderr}");

    // A rerun imports nothing new and reports everything present.
    berth.stop();
    let (code, report) = import(&berth, &registry.root(), &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(counts(&report, "repositories"), (0, 3, 0));
    assert_eq!(counts(&report, "manifests"), (0, 8, 0));
    assert_eq!(counts(&report, "tags"), (0, 4, 0));
    assert_eq!(counts(&report, "blobs").0, 0);
    assert_eq!(counts(&report, "links").0, 0);
}

#[tokio::test]
async fn a_corrupt_blob_skips_exactly_the_images_that_need_it() {
    let mut registry = Distribution::start();
    let good = Image::new(false, "amd64", 50_000, 11);
    good.push(&registry, "good/one", "1").await;
    // An OCI index of a corrupt image and a sound one; the index needs both.
    let (broken, sound) = (
        Image::new(false, "amd64", 60_000, 12),
        Image::new(false, "arm64", 70_000, 13),
    );
    broken.push(&registry, "bad/two", "1").await;
    sound.push(&registry, "bad/two", "").await;
    let index = Index::new(OCI_INDEX, &[("amd64", &broken), ("arm64", &sound)]);
    index.push(&registry, "bad/two", "multi").await;
    registry.stop();
    // Flip the bytes of the broken image's layer file, keeping its length.
    let layer = &broken.blobs[1].0;
    let hex = layer.strip_prefix("sha256:").unwrap();
    let file = registry
        .root()
        .join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    let flipped: Vec<u8> = std::fs::read(&file).unwrap().iter().map(|b| !b).collect();
    std::fs::write(&file, flipped).unwrap();

    let mut berth = stopped_berth();
    for run in ["first", "rerun"] {
        let (code, report) = import(&berth, &registry.root(), &[]);
        assert_eq!(code, 1, "{run}: something was skipped: {report:#}");
        let skipped: Vec<(String, String)> = report["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["kind"].as_str().unwrap().to_owned(),
                    s["subject"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let want = [
            ("blob", layer.clone()),
            ("tag", "bad/two:1".to_owned()),
            ("manifest", format!("bad/two@{}", broken.digest)),
            ("tag", "bad/two:multi".to_owned()),
            ("manifest", format!("bad/two@{}", index.digest)),
        ];
        let mut want: Vec<(String, String)> = want.into_iter().map(|(k, s)| (k.to_owned(), s)).collect();
        let mut got = skipped.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want, "{run}: {report:#}");
        let blob_reason = report["skipped"][0]["reason"].as_str().unwrap();
        assert!(blob_reason.contains("corrupt"), "{blob_reason}");
        let new = if run == "first" { (2, 0, 2) } else { (0, 2, 2) };
        assert_eq!(
            counts(&report, "manifests"),
            new,
            "{run}: good and sound in, broken and index out"
        );
    }

    berth.restart();
    pull_and_compare(&berth, "good/one", "1", &good.manifest, &[&good]);
    assert_eq!(manifest(&berth, "bad/two", "1").await.0, 404);
    assert_eq!(manifest(&berth, "bad/two", "multi").await.0, 404);
    assert_eq!(manifest(&berth, "bad/two", &broken.digest).await.0, 404);
    assert_eq!(manifest(&berth, "bad/two", &sound.digest).await.0, 200);
    let stored = berth.stored_blobs().await;
    assert!(!stored.contains(layer), "the corrupt blob was not stored");
    assert!(stored.contains(&sound.blobs[1].0));
}

#[tokio::test]
async fn a_dry_run_writes_nothing_and_a_second_import_takes_only_what_is_new() {
    let mut registry = Distribution::start();
    let one = Image::new(true, "amd64", 80_000, 21);
    one.push(&registry, "app", "1").await;
    registry.stop();

    // Into a root with no store: the dry run reports what it would do and creates nothing.
    let berth = stopped_berth();
    let fresh = tempfile::tempdir().unwrap();
    let root = fresh.path().join("new-store");
    let v2 = registry.root().join("docker/registry/v2");
    let mode = |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions());
    let layer_hex = one.blobs[1].0.strip_prefix("sha256:").unwrap().to_owned();
    let layer_file = v2.join(format!("blobs/sha256/{}/{layer_hex}/data", &layer_hex[..2]));
    let source_mode = mode(&layer_file);
    let out = import_raw(&berth, &v2, &root, &["--dry-run"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(
        (report["dry_run"].clone(), report["created_store"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(counts(&report, "manifests"), (1, 0, 0));
    assert_eq!(counts(&report, "blobs"), (2, 0, 0));
    assert!(!root.exists(), "a dry run created {}", root.display());
    assert_eq!(mode(&layer_file), source_mode, "a dry run changed the source");

    let (code, report) = import(&berth, &v2, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(counts(&report, "manifests"), (1, 0, 0));

    // One more tag in Distribution: a dry run sees it and stores nothing, the import takes it.
    registry.restart();
    let two = Image::new(true, "amd64", 90_000, 22);
    two.push(&registry, "app", "2").await;
    registry.stop();
    let blobs_before = berth.stored_blobs().await;
    let (code, report) = import(&berth, &registry.root(), &["--dry-run"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(counts(&report, "manifests"), (1, 1, 0));
    assert_eq!(counts(&report, "tags"), (1, 1, 0));
    assert_eq!(counts(&report, "blobs"), (2, 2, 0));
    assert_eq!(berth.stored_blobs().await, blobs_before, "a dry run stored blobs");
    assert_eq!(
        berth.staging_entries().await,
        Vec::<String>::new(),
        "a dry run staged files"
    );
    if !berth.on_s3() {
        assert_eq!(
            mode(&layer_file) & 0o777,
            0o444,
            "the first import shares the layer's file"
        );
    }

    let (code, report) = import(&berth, &registry.root(), &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(counts(&report, "repositories"), (1, 0, 0));
    assert_eq!(counts(&report, "manifests"), (1, 1, 0));
    assert_eq!(counts(&report, "tags"), (1, 1, 0));
    assert_eq!(counts(&report, "blobs"), (2, 2, 0));
    let mut berth = berth;
    berth.restart();
    pull_and_compare(&berth, "app", "2", &two.manifest, &[&two]);
    pull_and_compare(&berth, "app", "1", &one.manifest, &[&one]);
}

#[test]
fn a_directory_that_is_not_distributions_is_refused_naming_what_was_expected() {
    let berth = stopped_berth();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = import_raw(&berth, elsewhere.path(), &berth.root, &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = elsewhere.path().join("docker/registry/v2");
    assert!(stderr.contains(&format!("expected {}", expected.display())), "{stderr}");
}

#[tokio::test]
async fn a_blob_file_that_links_out_of_the_source_tree_is_refused_even_with_the_right_bytes() {
    let mut registry = Distribution::start();
    let image = Image::new(true, "amd64", 20_000, 31);
    image.push(&registry, "linked", "1").await;
    registry.stop();
    // Replace the layer's data file by a symbolic link to an identical file outside the tree.
    let outside = tempfile::tempdir().unwrap();
    let (layer, bytes) = &image.blobs[1];
    let hex = layer.strip_prefix("sha256:").unwrap();
    let file = registry
        .root()
        .join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    let copy = outside.path().join("data");
    std::fs::write(&copy, bytes).unwrap();
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(&copy, &file).unwrap();

    let berth = stopped_berth();
    let (code, report) = import(&berth, &registry.root(), &[]);
    assert_eq!(code, 1, "{report:#}");
    let blob = &report["skipped"][0];
    assert_eq!(
        (blob["kind"].as_str(), blob["subject"].as_str()),
        (Some("blob"), Some(layer.as_str()))
    );
    let reason = blob["reason"].as_str().unwrap();
    assert!(reason.contains("symbolic link out of the source tree"), "{reason}");
    assert_eq!(counts(&report, "manifests"), (0, 0, 1));
    assert_eq!(counts(&report, "tags"), (0, 0, 1));
    assert!(!berth.stored_blobs().await.contains(layer));
}
