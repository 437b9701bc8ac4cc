//! Real clients, unmodified: skopeo copies a multi-layer OCI image and a multi-arch index
//! into Berth and back, byte-identical; the Docker engine builds a `FROM scratch` image, pushes
//! it, removes it locally, pulls it back, and the digests match. podman and containerd have
//! files of their own. A missing client fails the test with instructions; it never passes
//! silently.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::harness::{Berth, client, random_bytes, sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn run(tool: &str, args: &[&str], install: &str) -> Output {
    run_env(tool, args, &[], install)
}

pub fn run_env(tool: &str, args: &[&str], env: &[(&str, &str)], install: &str) -> Output {
    let out = Command::new(tool)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{tool} is required for this test and could not run ({e}); {install}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn skopeo(args: &[&str]) -> Output {
    run("skopeo", args, "install it with `apt-get install skopeo`")
}

pub fn docker(args: &[&str]) -> Output {
    docker_env(args, &[])
}

/// `docker` with extra environment, such as `DOCKER_CONFIG` for a login of its own.
pub fn docker_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_env(
        "docker",
        args,
        env,
        "the Docker engine must be installed and running (CI machines have it)",
    )
}

/// An OCI image layout being written by hand.
pub struct Layout<'a> {
    pub dir: &'a Path,
}

impl Layout<'_> {
    fn blob(&self, bytes: &[u8]) -> Value {
        let digest = sha256(bytes);
        let path = self
            .dir
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
        json!({"digest": digest, "size": bytes.len()})
    }

    pub fn image(&self, arch: &str, layers: &[Vec<u8>]) -> Vec<u8> {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {},
        }))
        .unwrap();
        let c = self.blob(&config);
        let layers: Vec<Value> = layers
            .iter()
            .map(|l| {
                let d = self.blob(l);
                json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d["digest"], "size": d["size"]})
            })
            .collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c["digest"], "size": c["size"]},
            "layers": layers,
        }))
        .unwrap();
        self.blob(&manifest);
        manifest
    }

    pub fn index(&self, media_type: &str, top: &[u8], tag: &str) {
        std::fs::write(self.dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": media_type, "digest": sha256(top), "size": top.len(),
                           "annotations": {"org.opencontainers.image.ref.name": tag}}],
        });
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

fn read_blob(dir: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(dir.join("blobs/sha256").join(digest.strip_prefix("sha256:").unwrap()))
        .unwrap_or_else(|e| panic!("blob {digest} missing from {}: {e}", dir.display()))
}

/// Every blob of `src` appears byte-identical in `dst`.
pub fn same_blobs(src: &Path, dst: &Path, digests: &[String]) {
    for d in digests {
        assert_eq!(
            read_blob(src, d),
            read_blob(dst, d),
            "blob {d} differs after the round trip"
        );
    }
}

pub fn digests_of(manifest: &[u8]) -> Vec<String> {
    let m: Value = serde_json::from_slice(manifest).unwrap();
    let mut out = vec![m["config"]["digest"].as_str().unwrap().to_owned()];
    out.extend(
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned()),
    );
    out
}

#[tokio::test]
async fn skopeo_copies_a_multi_layer_image_in_and_back_byte_identical() {
    let berth = Berth::start();
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let layout = Layout { dir: src.path() };
    let layers = vec![
        random_bytes(300_000, 1),
        random_bytes(200_000, 2),
        random_bytes(1_000, 3),
    ];
    let manifest = layout.image("amd64", &layers);
    layout.index(OCI_MANIFEST, &manifest, "v1");
    let target = format!("docker://{}/skopeo/multi:v1", berth.host);
    let src_ref = format!("oci:{}:v1", src.path().display());
    let dst_ref = format!("oci:{}:v1", dst.path().display());
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &src_ref,
        &target,
    ]);
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &target,
        &dst_ref,
    ]);
    assert_eq!(read_blob(dst.path(), &sha256(&manifest)), manifest, "manifest bytes");
    same_blobs(src.path(), dst.path(), &digests_of(&manifest));
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &target]);
    assert_eq!(raw.stdout, manifest);
    let resp = client()
        .get(berth.url("/v2/skopeo/multi/manifests/v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["docker-content-digest"], sha256(&manifest).as_str());
}

#[tokio::test]
async fn skopeo_copies_a_multi_arch_index_in_and_back_byte_identical() {
    let berth = Berth::start();
    let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let layout = Layout { dir: src.path() };
    let amd = layout.image("amd64", &[random_bytes(50_000, 10)]);
    let arm = layout.image("arm64", &[random_bytes(60_000, 11)]);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": sha256(&amd), "size": amd.len(), "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": sha256(&arm), "size": arm.len(), "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    }))
    .unwrap();
    layout.blob(&index);
    layout.index(OCI_INDEX, &index, "multi");
    let target = format!("docker://{}/skopeo/index:multi", berth.host);
    let src_ref = format!("oci:{}:multi", src.path().display());
    let dst_ref = format!("oci:{}:multi", dst.path().display());
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &src_ref,
        &target,
    ]);
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &target,
        &dst_ref,
    ]);
    assert_eq!(read_blob(dst.path(), &sha256(&index)), index, "index bytes");
    for child in [&amd, &arm] {
        assert_eq!(&read_blob(dst.path(), &sha256(child)), child, "child manifest bytes");
        same_blobs(src.path(), dst.path(), &digests_of(child));
    }
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &target]);
    assert_eq!(raw.stdout, index);
}

/// The `sha256:...` digest printed after `marker` in a docker command's output.
pub fn digest_after(text: &str, marker: &str) -> String {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in docker output:\n{text}"));
    text[at + marker.len()..].split_whitespace().next().unwrap().to_owned()
}

/// `docker build` a `FROM scratch` image tagged `tag`, with content unique to `tag`.
pub fn docker_build(tag: &str) {
    let context = tempfile::tempdir().unwrap();
    std::fs::write(context.path().join("hello.txt"), format!("hello from {tag}\n")).unwrap();
    std::fs::write(context.path().join("data.bin"), random_bytes(1_500_000, 42)).unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\nCOPY data.bin /data.bin\n",
    )
    .unwrap();
    let ctx = context.path().to_str().unwrap();
    let built = Command::new("docker")
        .args(["build", "-q", "-t", tag, ctx])
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("the Docker engine must be installed and running (CI machines have it)");
    assert!(
        built.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
}

/// Build `tag` and push it, which the registry must refuse; remove it locally and return
/// what `docker push` printed (stdout, then stderr).
pub fn docker_build_and_push_refused(tag: &str) -> String {
    docker_build(tag);
    let pushed = Command::new("docker").args(["push", tag]).output().unwrap();
    docker(&["rmi", "-f", tag]);
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&pushed.stdout),
        String::from_utf8_lossy(&pushed.stderr)
    );
    assert!(!pushed.status.success(), "docker push succeeded:\n{output}");
    output
}

/// Build `tag`, push it (with `env`, such as a `DOCKER_CONFIG` holding a login) and remove it
/// locally; returns the digest the push printed.
pub fn docker_build_and_push(tag: &str, env: &[(&str, &str)]) -> String {
    docker_build(tag);
    let pushed = docker_env(&["push", tag], env);
    let digest = digest_after(&String::from_utf8_lossy(&pushed.stdout), "digest: ");
    docker(&["rmi", "-f", tag]);
    digest
}

/// Build `tag`, push it, remove it locally and pull it back (with `env`, as above); returns
/// the digest, checked equal both ways.
pub fn docker_round_trip(tag: &str, env: &[(&str, &str)]) -> String {
    let pushed_digest = docker_build_and_push(tag, env);
    let pulled = docker_env(&["pull", tag], env);
    let pulled_digest = digest_after(&String::from_utf8_lossy(&pulled.stdout), "Digest: ");
    assert_eq!(pulled_digest, pushed_digest);
    docker(&["rmi", "-f", tag]);
    pushed_digest
}

#[tokio::test]
async fn docker_builds_pushes_removes_and_pulls_back_the_same_image() {
    let berth = Berth::start();
    let tag = format!("{}/docker/app:v1", berth.host);
    let pushed_digest = docker_build_and_push(&tag, &[]);
    let pulled = docker(&["pull", &tag]);
    let pulled_digest = digest_after(&String::from_utf8_lossy(&pulled.stdout), "Digest: ");
    assert_eq!(pulled_digest, pushed_digest);
    let repo_digest = docker(&["image", "inspect", "--format", "{{index .RepoDigests 0}}", &tag]);
    assert!(
        String::from_utf8_lossy(&repo_digest.stdout)
            .trim()
            .ends_with(&pushed_digest)
    );
    let resp = client()
        .get(berth.url("/v2/docker/app/manifests/v1"))
        .header("accept", "application/vnd.docker.distribution.manifest.v2+json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["docker-content-digest"], pushed_digest.as_str());
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(sha256(&resp.bytes().await.unwrap()), pushed_digest);
    docker(&["rmi", "-f", &tag]);
}
