//! containerd, unmodified, through its own client `ctr` (containerd's resolver, fetcher and
//! pusher, not Docker's): it pulls and unpacks an image the Docker engine pushed, holds the same
//! manifest bytes, and pushes the image to a second repository, mounting the layers across. The
//! test uses the containerd that runs the Docker engine (or `CONTAINERD_ADDRESS`), in a
//! namespace of its own that it removes again.

use std::process::Output;

use crate::clients::{docker_build_and_push, run_env};
use crate::harness::{Berth, client, sha256};

const SOCKETS: [&str; 2] = [
    "/run/containerd/containerd.sock",
    "/var/run/docker/containerd/containerd.sock",
];

/// `ctr` against the running containerd, in namespace `ns` (removed with its images on drop).
pub struct Ctr {
    address: String,
    ns: String,
}

impl Ctr {
    pub fn new(ns: String) -> Self {
        let address = std::env::var("CONTAINERD_ADDRESS")
            .ok()
            .or_else(|| {
                SOCKETS
                    .iter()
                    .find(|s| std::path::Path::new(s).exists())
                    .map(|s| (*s).to_owned())
            })
            .unwrap_or_else(|| {
                panic!(
                    "containerd is required for this test: none of {SOCKETS:?} exists and \
                     CONTAINERD_ADDRESS is not set (the Docker engine starts one; ctr comes with \
                     Debian's containerd package)"
                )
            });
        Ctr { address, ns }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["--address", &self.address, "--namespace", &self.ns];
        all.extend_from_slice(args);
        run_env(
            "ctr",
            &all,
            &[],
            "it comes with Debian's containerd package, which the Docker engine uses; tests run as root",
        )
    }

    pub fn stdout(&self, args: &[&str]) -> Vec<u8> {
        self.run(args).stdout
    }
}

impl Drop for Ctr {
    /// Remove the test's images (waiting for containerd's garbage collection) and namespace.
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            std::process::Command::new("ctr")
                .args(["--address", &self.address, "--namespace", &self.ns])
                .args(args)
                .output()
                .ok()
        };
        if let Some(out) = quiet(&["images", "ls", "-q"]) {
            for image in String::from_utf8_lossy(&out.stdout).lines() {
                quiet(&["images", "rm", "--sync", image]);
            }
        }
        quiet(&["namespaces", "rm", &self.ns]);
    }
}

/// The manifest Berth serves for `repo:tag`: its digest header and bytes.
async fn served(berth: &Berth, repo: &str, tag: &str) -> (String, Vec<u8>) {
    let resp = client()
        .get(berth.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("accept", "application/vnd.docker.distribution.manifest.v2+json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET {repo}:{tag}");
    let digest = resp.headers()["docker-content-digest"].to_str().unwrap().to_owned();
    (digest, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn containerd_pulls_unpacks_and_pushes_an_image_across_repositories() {
    let berth = Berth::start();
    let tag = format!("{}/containerd/app:v1", berth.host);
    let digest = docker_build_and_push(&tag, &[]);

    let port = berth.host.rsplit(':').next().unwrap();
    let ctr = Ctr::new(format!("berth-it-{port}"));
    ctr.run(&["images", "pull", "--plain-http", &tag]);
    let listed = String::from_utf8_lossy(&ctr.stdout(&["images", "ls"])).into_owned();
    let row = listed
        .lines()
        .find(|l| l.starts_with(&tag))
        .unwrap_or_else(|| panic!("{tag} not in ctr images ls:\n{listed}"));
    assert!(row.contains(&digest), "ctr holds {row}, Docker pushed {digest}");
    // containerd stored exactly the bytes Berth serves.
    let (served_digest, manifest) = served(&berth, "containerd/app", "v1").await;
    assert_eq!(served_digest, digest);
    assert_eq!(ctr.stdout(&["content", "get", &digest]), manifest);
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    for layer in parsed["layers"].as_array().unwrap() {
        let layer_digest = layer["digest"].as_str().unwrap();
        assert_eq!(sha256(&ctr.stdout(&["content", "get", layer_digest])), layer_digest);
    }

    let copy = format!("{}/containerd/copy:v2", berth.host);
    // --http-dump shows the requests: every layer mounted from the first repository (201 to
    // the POST), none uploaded again.
    let push = ctr.run(&["images", "push", "--http-dump", "--plain-http", &copy, &tag]);
    let dump = String::from_utf8_lossy(&push.stderr);
    let layers = parsed["layers"].as_array().unwrap();
    for layer in layers {
        let mount = format!("mount={}&from=containerd/app", layer["digest"].as_str().unwrap());
        assert!(dump.contains(&mount), "no {mount} in:\n{dump}");
    }
    assert!(
        !dump.contains("PUT /v2/containerd/copy/blobs/uploads"),
        "a layer was uploaded again:\n{dump}"
    );
    let (copy_digest, copy_manifest) = served(&berth, "containerd/copy", "v2").await;
    assert_eq!(copy_digest, digest);
    assert_eq!(copy_manifest, manifest);
    for layer in layers {
        let path = format!("/v2/containerd/copy/blobs/{}", layer["digest"].as_str().unwrap());
        let resp = client().get(berth.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(sha256(&resp.bytes().await.unwrap()), layer["digest"].as_str().unwrap());
    }
}
