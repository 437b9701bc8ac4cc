//! podman, unmodified: it builds `FROM scratch` images, pushes them as an OCI manifest with
//! gzip layers, as a Docker schema2 manifest, and as an OCI manifest with zstd layers, pulls each
//! back and gets the same digest; and it pushes a two-platform manifest list and pulls one
//! platform out of it. podman runs as root with the vfs storage driver and its images in a
//! private directory, so it needs no kernel overlay support.

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::clients::{OCI_MANIFEST, run_env};
use crate::harness::{Berth, client, random_bytes, sha256};

/// podman with its own storage under `dir`.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Self {
        Podman {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let root = self.dir.path().join("root");
        let runroot = self.dir.path().join("run");
        let mut all = vec![
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            runroot.to_str().unwrap(),
            "--storage-driver",
            "vfs",
        ];
        all.extend_from_slice(args);
        run_env(
            "podman",
            &all,
            &[],
            "install it with `apt-get install podman` (the tests run it as root)",
        )
    }

    fn stdout(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(args).stdout).trim().to_owned()
    }

    /// Push `image` to `dest` with extra flags; returns the manifest digest podman wrote.
    fn push(&self, image: &str, dest: &str, flags: &[&str]) -> String {
        let file = self.dir.path().join("digest");
        let mut args = vec!["push", "--tls-verify=false", "--digestfile", file.to_str().unwrap()];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[image, dest]);
        self.run(&args);
        std::fs::read_to_string(file).unwrap().trim().to_owned()
    }

    fn image_digest(&self, image: &str) -> String {
        self.stdout(&["image", "inspect", "--format", "{{.Digest}}", image])
    }
}

/// A build context with a `FROM scratch` Containerfile and two files unique to `seed` and to
/// this run, so podman's blob cache (kept across runs) cannot stand in for a push.
fn context(dir: &Path, seed: u64) {
    let seed = seed ^ u64::from(std::process::id()) << 16;
    std::fs::write(dir.join("hello.txt"), format!("hello from podman {seed}\n")).unwrap();
    std::fs::write(dir.join("data.bin"), random_bytes(700_000, seed)).unwrap();
    std::fs::write(
        dir.join("Containerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\nCOPY data.bin /data.bin\n",
    )
    .unwrap();
}

/// The manifest Berth serves for `repo:reference`, with its content type and digest header.
async fn served(berth: &Berth, repo: &str, reference: &str) -> (String, String, Value) {
    let resp = client()
        .get(berth.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
             application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET {repo}:{reference}");
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let digest = resp.headers()["docker-content-digest"].to_str().unwrap().to_owned();
    let body = resp.bytes().await.unwrap();
    assert_eq!(sha256(&body), digest, "digest header of {repo}:{reference}");
    (content_type, digest, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn podman_pushes_oci_schema2_and_zstd_images_and_pulls_them_back() {
    let berth = Berth::start();
    let podman = Podman::new();
    // Two images of different content: podman 4.3 reuses a layer already in the registry
    // whatever its compression, so zstd layers need content of their own.
    let (gzip_ctx, zstd_ctx) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    context(gzip_ctx.path(), 7);
    context(zstd_ctx.path(), 9);
    let (gzip_image, zstd_image) = ("localhost/berth-it/app:latest", "localhost/berth-it/zstd:latest");
    podman.run(&["build", "-q", "-t", gzip_image, gzip_ctx.path().to_str().unwrap()]);
    podman.run(&["build", "-q", "-t", zstd_image, zstd_ctx.path().to_str().unwrap()]);
    let cases = [
        (
            "app:oci",
            gzip_image,
            &["--format", "oci"][..],
            OCI_MANIFEST,
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
        (
            "app:v2s2",
            gzip_image,
            &["--format", "v2s2"][..],
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ),
        (
            "zstd:v1",
            zstd_image,
            &["--format", "oci", "--compression-format", "zstd"][..],
            OCI_MANIFEST,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    ];
    let mut pushed = Vec::new();
    for (name, local, flags, manifest_type, layer_type) in cases {
        let dest = format!("docker://{}/podman/{name}", berth.host);
        let digest = podman.push(local, &dest, flags);
        let (repo, tag) = name.split_once(':').unwrap();
        let (content_type, served_digest, manifest) = served(&berth, &format!("podman/{repo}"), tag).await;
        assert_eq!(served_digest, digest, "{name}: podman's digest and Berth's");
        assert_eq!(content_type, manifest_type, "{name}");
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2, "{name}: {manifest}");
        for layer in layers {
            assert_eq!(layer["mediaType"], layer_type, "{name}");
        }
        pushed.push((name, digest));
    }
    // Each pull into empty storage: with the built image at hand, podman would only add a name.
    for (name, digest) in &pushed {
        let image = format!("{}/podman/{name}", berth.host);
        let fresh = Podman::new();
        fresh.run(&["pull", "-q", "--tls-verify=false", &image]);
        assert_eq!(&fresh.image_digest(&image), digest, "{name}: pulled back");
    }
}

#[tokio::test]
async fn podman_pushes_a_two_platform_manifest_list_and_pulls_one_platform() {
    let berth = Berth::start();
    let podman = Podman::new();
    let ctx = tempfile::tempdir().unwrap();
    context(ctx.path(), 8);
    let list = "localhost/berth-it/multi:latest";
    // FROM scratch with COPY runs nothing, so building for another architecture needs no
    // emulator; without --no-cache the second platform would reuse the first one's image.
    podman.run(&[
        "build",
        "-q",
        "--no-cache",
        "--platform",
        "linux/amd64,linux/arm64",
        "--manifest",
        list,
        ctx.path().to_str().unwrap(),
    ]);
    let dest = format!("docker://{}/podman/multi:v1", berth.host);
    let file = podman.dir.path().join("list-digest");
    podman.run(&[
        "manifest",
        "push",
        "--all",
        "--tls-verify=false",
        "--digestfile",
        file.to_str().unwrap(),
        list,
        &dest,
    ]);
    let digest = std::fs::read_to_string(file).unwrap().trim().to_owned();
    let (_, served_digest, index) = served(&berth, "podman/multi", "v1").await;
    assert_eq!(served_digest, digest);
    let children = index["manifests"].as_array().unwrap();
    let mut arches: Vec<&str> = children
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    arches.sort_unstable();
    assert_eq!(arches, ["amd64", "arm64"], "{index}");
    let arm = children
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap();
    let arm_digest = arm["digest"].as_str().unwrap();
    let (_, child_digest, _) = served(&berth, "podman/multi", arm_digest).await;
    assert_eq!(child_digest, arm_digest);

    let image = format!("{}/podman/multi:v1", berth.host);
    let podman = Podman::new();
    podman.run(&["pull", "-q", "--tls-verify=false", "--platform", "linux/arm64", &image]);
    assert_eq!(
        podman.stdout(&["image", "inspect", "--format", "{{.Architecture}}", &image]),
        "arm64"
    );
    // podman records the list's digest as the image's, and both as repository digests.
    assert_eq!(podman.image_digest(&image), digest);
    let repo_digests = podman.stdout(&["image", "inspect", "--format", "{{.RepoDigests}}", &image]);
    assert!(repo_digests.contains(arm_digest), "{repo_digests}");
}
