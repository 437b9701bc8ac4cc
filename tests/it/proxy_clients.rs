//! Real clients, unmodified, pulling through the pull-through cache: skopeo by the cache's
//! prefix and through a `registries.conf` mirror entry; containerd's `ctr` through `hosts.toml`
//! mirrors, two upstreams behind one Berth told apart by the `ns` parameter; the Docker engine
//! by the prefix, then reading the files back out of the image; and CNCF Distribution (Debian's
//! `docker-registry`) as the upstream of a Docker schema2 image. Each test checks the bytes and
//! digests the client ended up with, and that the pull really went through the mirror (the
//! mirror's access log, the upstream's, containerd's HTTP dump). A missing client or server
//! fails the test with instructions; it never passes silently.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::clients::{digest_after, docker, run_env, skopeo};
use crate::containerd::Ctr;
use crate::distribution::Distribution;
use crate::harness::{Berth, client, header, image_media_types, random_bytes, sha256};
use crate::proxy::{Site, access_count, entry, upstream_blob, upstream_image, upstream_manifest};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A number unique to this process and moment, so that no client's local store (Docker's
/// layers, containerd's content) already holds what a test pulls.
fn unique_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    u64::try_from(nanos % u128::from(u64::MAX)).unwrap() ^ (u64::from(std::process::id()) << 40)
}

/// This machine's architecture as image configs name it: engines refuse to unpack an image
/// for another one.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A ustar archive of regular files (mode 0644, owner root).
fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"14700000000\0");
        h[148..156].fill(b' ');
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// The contents of the first file of a tar archive (what `docker cp CONTAINER:FILE -` writes).
fn first_file_of_tar(archive: &[u8]) -> Vec<u8> {
    assert!(archive.len() >= 512, "not a tar archive: {} bytes", archive.len());
    let size = std::str::from_utf8(&archive[124..136])
        .unwrap()
        .trim_matches(|c: char| c == '\0' || c == ' ');
    let size = usize::from_str_radix(size, 8).unwrap();
    archive[512..512 + size].to_vec()
}

/// `bytes` compressed with the system's gzip (`-n`: no name or time stamp).
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let path = file.path().to_str().unwrap();
    run_env("gzip", &["-n", "-c", path], &[], "gzip comes with every Debian system").stdout
}

/// An image an engine can unpack: two gzip tar layers (`/hello.txt`, unique to the call, and
/// `/data.bin`) and a config whose `diff_ids` match them.
struct Image {
    media_type: &'static str,
    manifest: Vec<u8>,
    digest: String,
    /// The config, then the layers: (digest, bytes).
    blobs: Vec<(String, Vec<u8>)>,
    hello: Vec<u8>,
    data: Vec<u8>,
}

impl Image {
    /// With Docker schema2 media types (`docker`) or OCI ones.
    fn new(docker: bool, label: &str) -> Image {
        let seed = unique_seed();
        let hello = format!("hello from {label} ({seed})\n").into_bytes();
        let data = random_bytes(400_000, seed);
        let tars = [tar(&[("hello.txt", &hello)]), tar(&[("data.bin", &data)])];
        let diff_ids: Vec<String> = tars.iter().map(|t| sha256(t)).collect();
        let (media_type, config_type, layer_type) = image_media_types(docker);
        let config = serde_json::to_vec(&json!({
            "architecture": arch(), "os": "linux",
            "config": {"Env": ["PATH=/"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let mut blobs = vec![(sha256(&config), config)];
        blobs.extend(tars.iter().map(|t| gzip(t)).map(|gz| (sha256(&gz), gz)));
        let desc = |media_type: &str, (digest, bytes): &(String, Vec<u8>)| json!({"mediaType": media_type, "digest": digest, "size": bytes.len()});
        let manifest = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": desc(config_type, &blobs[0]),
            "layers": blobs[1..].iter().map(|b| desc(layer_type, b)).collect::<Vec<_>>(),
        }))
        .unwrap();
        Image {
            media_type,
            digest: sha256(&manifest),
            manifest,
            blobs,
            hello,
            data,
        }
    }

    /// Push it to an upstream Berth (with the proxy's credentials) as `repo:tag`.
    async fn push_upstream(&self, upstream: &Berth, repo: &str, tag: &str) {
        for (_, bytes) in &self.blobs {
            upstream_blob(upstream, repo, bytes).await;
        }
        let digest = upstream_manifest(upstream, repo, tag, self.media_type, &self.manifest).await;
        assert_eq!(digest, self.digest);
    }
}

/// Every blob of `image` was fetched from the upstream exactly once (a 200 to a GET in its
/// access log): the mirror fetched it, and nothing fetched it twice.
fn fetched_once(upstream: &Berth, repo: &str, image: &[(String, Vec<u8>)]) {
    for (digest, _) in image {
        let path = format!("/v2/{repo}/blobs/{digest}");
        assert_eq!(access_count(upstream, "GET", &path), 1, "upstream GETs of {path}");
    }
}

/// The mirror's access log shows `GET <path>` answered 200 at least once.
fn mirror_served(mirror: &Berth, path: &str) {
    assert!(
        access_count(mirror, "GET", path) >= 1,
        "the mirror's log shows no 200 for GET {path}:\n{}",
        mirror.log()
    );
}

fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let path = layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap());
    std::fs::read(&path).unwrap_or_else(|e| panic!("{} missing: {e}", path.display()))
}

/// `skopeo [global] copy --preserve-digests [flags] src` into a new OCI layout; the layout.
fn skopeo_pull(global: &[&str], flags: &[&str], src: &str) -> tempfile::TempDir {
    let dst = tempfile::tempdir().unwrap();
    let dst_ref = format!("oci:{}:x", dst.path().display());
    let mut args = global.to_vec();
    args.extend_from_slice(&["copy", "--preserve-digests"]);
    args.extend_from_slice(flags);
    args.extend_from_slice(&[src, &dst_ref]);
    skopeo(&args);
    dst
}

/// The OCI layout holds exactly the manifest and blobs the upstream was given.
fn layout_holds(layout: &Path, manifest: &[u8], blobs: &[(String, Vec<u8>)]) {
    assert_eq!(read_blob(layout, &sha256(manifest)), manifest, "manifest bytes");
    for (digest, bytes) in blobs {
        assert_eq!(&read_blob(layout, digest), bytes, "blob {digest}");
    }
}

#[tokio::test]
async fn skopeo_pulls_through_the_prefix_and_a_second_pull_is_served_from_the_cache() {
    let site = Site::new();
    let upstream = site.upstream(false);
    let layers = [random_bytes(300_000, 21), random_bytes(5_000, 22)];
    let (digest, body, blobs) = upstream_image(&upstream, "team/app", "v1", &[&layers[0], &layers[1]]).await;
    let mirror = site.mirror(&entry("up", &upstream, ""));

    let src = format!("docker://{}/up/team/app:v1", mirror.host);
    let first = skopeo_pull(&[], &["--src-tls-verify=false"], &src);
    layout_holds(first.path(), &body, &blobs);
    mirror_served(&mirror, "/v2/up/team/app/manifests/v1");
    for (d, _) in &blobs {
        mirror_served(&mirror, &format!("/v2/up/team/app/blobs/{d}"));
    }
    fetched_once(&upstream, "team/app", &blobs);
    assert_eq!(
        access_count(&upstream, "GET", &format!("/v2/team/app/manifests/{digest}")),
        1
    );

    // A second client, within tag_ttl: everything from the cache, nothing more upstream.
    let second = skopeo_pull(&[], &["--src-tls-verify=false"], &src);
    layout_holds(second.path(), &body, &blobs);
    fetched_once(&upstream, "team/app", &blobs);
    assert_eq!(
        access_count(&upstream, "HEAD", "/v2/team/app/manifests/v1"),
        1,
        "the tag was asked upstream again within its tag_ttl"
    );
}

#[tokio::test]
async fn skopeo_pulls_the_upstream_name_through_a_registries_conf_mirror() {
    let site = Site::new();
    let upstream = site.upstream(false);
    let layers = [random_bytes(200_000, 31), random_bytes(7_000, 32)];
    let (digest, body, blobs) = upstream_image(&upstream, "team/app", "v1", &[&layers[0], &layers[1]]).await;
    let mirror = site.mirror(&entry("up", &upstream, ""));
    let image = format!("docker://{}/team/app:v1", upstream.host);

    // Straight to the upstream, skopeo has no credentials: the pull fails.
    let plain = site.write("plain-registries.conf", "unqualified-search-registries = []\n");
    let direct = Command::new("skopeo")
        .args(["--registries-conf", plain.to_str().unwrap()])
        .args(["inspect", "--raw", "--tls-verify=false", &image])
        .output()
        .expect("skopeo is required for this test; install it with `apt-get install skopeo`");
    assert!(
        !direct.status.success(),
        "the upstream served an anonymous pull: the test would not show the mirror was used"
    );

    // With the mirror (plain HTTP, under the cache's prefix) in front of it, the same name pulls.
    let conf = site.write(
        "registries.conf",
        &format!(
            "unqualified-search-registries = []\n\n[[registry]]\nlocation = \"{}\"\n\n\
             [[registry.mirror]]\nlocation = \"{}/up\"\ninsecure = true\n",
            upstream.host, mirror.host
        ),
    );
    let layout = skopeo_pull(&["--registries-conf", conf.to_str().unwrap()], &[], &image);
    layout_holds(layout.path(), &body, &blobs);
    mirror_served(&mirror, "/v2/up/team/app/manifests/v1");
    for (d, _) in &blobs {
        mirror_served(&mirror, &format!("/v2/up/team/app/blobs/{d}"));
    }
    // The upstream saw the mirror's fetches, once each.
    fetched_once(&upstream, "team/app", &blobs);
    assert_eq!(
        access_count(&upstream, "GET", &format!("/v2/team/app/manifests/{digest}")),
        1
    );
}

/// `DIR/<host>/hosts.toml`: pull and resolve `host`'s images through `mirror` (plain HTTP).
fn hosts_toml(dir: &Path, host: &str, mirror: &Berth) {
    let d = dir.join(host);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("hosts.toml"),
        format!(
            "server = \"http://{host}\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            mirror.base
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn containerd_pulls_two_upstreams_through_one_mirror_told_apart_by_ns() {
    // Two upstreams with the same repository and tag and different images.
    let (site_one, site_two) = (Site::new(), Site::new());
    let (one, two) = (site_one.upstream(false), site_two.upstream(false));
    let (image_one, image_two) = (Image::new(false, "upstream one"), Image::new(false, "upstream two"));
    image_one.push_upstream(&one, "team/app", "v1").await;
    image_two.push_upstream(&two, "team/app", "v1").await;
    // One by its default namespace (its host:port), one by a name of its own.
    let named = "two.example:5000";
    let mirror = site_one.mirror(&format!(
        "{}{}",
        entry("one", &one, ""),
        entry("two", &two, &format!("    namespace: {named}\n"))
    ));
    let hosts = tempfile::tempdir().unwrap();
    hosts_toml(hosts.path(), &one.host, &mirror);
    hosts_toml(hosts.path(), named, &mirror);

    let port = mirror.host.rsplit(':').next().unwrap();
    let ctr = Ctr::new(format!("berth-proxy-it-{port}"));
    let hosts_dir = hosts.path().to_str().unwrap();
    for (ns, image, upstream) in [(one.host.as_str(), &image_one, &one), (named, &image_two, &two)] {
        let reference = format!("{ns}/team/app:v1");
        let pull = ctr.run(&["images", "pull", "--hosts-dir", hosts_dir, "--http-dump", &reference]);
        let dump = String::from_utf8_lossy(&pull.stderr).to_ascii_lowercase();
        // containerd asked the mirror, naming the upstream in ns, and the mirror said it served
        // that namespace.
        let asked = format!("/v2/team/app/manifests/v1?ns={}", ns.replace(':', "%3a"));
        assert!(dump.contains(&asked), "no {asked} in ctr's dump:\n{dump}");
        assert!(
            dump.contains(&format!("oci-namespace: {ns}")),
            "no OCI-Namespace: {ns} in ctr's dump:\n{dump}"
        );
        assert!(
            !dump.contains(&format!("host: {}", upstream.host)),
            "ctr went to the upstream itself:\n{dump}"
        );
        // containerd holds the image the right upstream has, byte for byte.
        let listed = String::from_utf8_lossy(&ctr.stdout(&["images", "ls"])).into_owned();
        let row = listed
            .lines()
            .find(|l| l.starts_with(&reference))
            .unwrap_or_else(|| panic!("{reference} not in ctr images ls:\n{listed}"));
        assert!(
            row.contains(&image.digest),
            "ctr holds {row}, the upstream has {}",
            image.digest
        );
        assert_eq!(ctr.stdout(&["content", "get", &image.digest]), image.manifest);
        for (digest, bytes) in &image.blobs {
            assert_eq!(&ctr.stdout(&["content", "get", digest]), bytes, "blob {digest}");
        }
        // The mirror fetched it from that upstream, once.
        fetched_once(upstream, "team/app", &image.blobs);
        for (digest, _) in &image.blobs {
            mirror_served(&mirror, &format!("/v2/team/app/blobs/{digest}"));
        }
    }
    // Each upstream was asked for its own image only.
    for (upstream, other) in [(&one, &image_two), (&two, &image_one)] {
        let path = format!("/v2/team/app/manifests/{}", other.digest);
        assert_eq!(
            access_count(upstream, "GET", &path),
            0,
            "{path} asked of the wrong upstream"
        );
    }
}

/// Removes a test's container and image from the Docker engine, even when the test fails.
struct DockerCleanup {
    container: String,
    image: String,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| Command::new("docker").args(args).output().ok();
        quiet(&["rm", "-f", &self.container]);
        quiet(&["rmi", "-f", &self.image]);
    }
}

#[tokio::test]
async fn docker_pulls_through_the_prefix_and_the_files_come_out_of_the_image() {
    let site = Site::new();
    let upstream = site.upstream(false);
    let image = Image::new(true, "docker through the mirror");
    image.push_upstream(&upstream, "team/app", "v1").await;
    let mirror = site.mirror(&entry("up", &upstream, ""));
    let port = mirror.host.rsplit(':').next().unwrap();
    let cleanup = DockerCleanup {
        container: format!("berth-proxy-it-{port}"),
        image: format!("{}/up/team/app:v1", mirror.host),
    };

    let pulled = docker(&["pull", &cleanup.image]);
    let stdout = String::from_utf8_lossy(&pulled.stdout);
    assert_eq!(digest_after(&stdout, "Digest: "), image.digest, "{stdout}");
    // The engine resolves the tag with a HEAD, then GETs the manifest by its digest.
    assert!(access_count(&mirror, "HEAD", "/v2/up/team/app/manifests/v1") >= 1);
    mirror_served(&mirror, &format!("/v2/up/team/app/manifests/{}", image.digest));
    for (digest, _) in &image.blobs {
        mirror_served(&mirror, &format!("/v2/up/team/app/blobs/{digest}"));
    }
    fetched_once(&upstream, "team/app", &image.blobs);

    // The engine unpacked the layers (checking them against the config's diff_ids): the files
    // read back out of a container are the ones pushed upstream.
    docker(&["create", "--name", &cleanup.container, &cleanup.image, "/hello.txt"]);
    for (file, want) in [("/hello.txt", &image.hello), ("/data.bin", &image.data)] {
        let out = docker(&["cp", &format!("{}:{file}", cleanup.container), "-"]);
        assert_eq!(&first_file_of_tar(&out.stdout), want, "{file} in the pulled image");
    }
    let repo_digest = docker(&[
        "image",
        "inspect",
        "--format",
        "{{index .RepoDigests 0}}",
        &cleanup.image,
    ]);
    let repo_digest = String::from_utf8_lossy(&repo_digest.stdout);
    assert!(repo_digest.trim().ends_with(&image.digest), "{repo_digest}");
}

/// Push `image` into `registry` as `repo:tag`, as docker does (each blob by POST then PUT with
/// its digest, then the manifest by tag).
async fn push_to(registry: &Distribution, repo: &str, tag: &str, image: &Image) {
    for (digest, bytes) in &image.blobs {
        assert_eq!(&registry.push_blob(repo, bytes).await, digest);
    }
    let digest = registry
        .push_manifest(repo, tag, image.media_type, &image.manifest)
        .await;
    assert_eq!(digest, image.digest);
}

#[tokio::test]
async fn a_distribution_upstream_serves_docker_schema2_through_the_mirror_unchanged() {
    let registry = Distribution::start();
    let image = Image::new(true, "distribution upstream");
    push_to(&registry, "team/app", "v1", &image).await;
    let site = Site::new();
    let mirror = site.mirror(&format!("  - prefix: dist\n    url: {}\n", registry.base));

    // skopeo pulls it through the mirror into a `dir:` copy, byte for byte.
    let dst = tempfile::tempdir().unwrap();
    let src = format!("docker://{}/dist/team/app:v1", mirror.host);
    let dst_ref = format!("dir:{}", dst.path().display());
    skopeo(&["copy", "--preserve-digests", "--src-tls-verify=false", &src, &dst_ref]);
    assert_eq!(std::fs::read(dst.path().join("manifest.json")).unwrap(), image.manifest);
    for (digest, bytes) in &image.blobs {
        let file = dst.path().join(digest.strip_prefix("sha256:").unwrap());
        assert_eq!(&std::fs::read(file).unwrap(), bytes, "blob {digest}");
    }
    // Distribution served each piece once, to the mirror.
    assert_eq!(registry.gets(&format!("/v2/team/app/manifests/{}", image.digest)), 1);
    for (digest, _) in &image.blobs {
        assert_eq!(registry.gets(&format!("/v2/team/app/blobs/{digest}")), 1, "{digest}");
        mirror_served(&mirror, &format!("/v2/dist/team/app/blobs/{digest}"));
    }

    // By tag and by digest, GET and HEAD: the Docker media type and digest Distribution has.
    let c = client();
    for reference in ["v1", image.digest.as_str()] {
        let url = mirror.url(&format!("/v2/dist/team/app/manifests/{reference}"));
        let head = c
            .head(&url)
            .header("accept", format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}"))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200, "HEAD {reference}");
        assert_eq!(header(&head, "content-type"), DOCKER_MANIFEST);
        assert_eq!(header(&head, "docker-content-digest"), image.digest);
        let resp = c.get(&url).header("accept", DOCKER_MANIFEST).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {reference}");
        assert_eq!(header(&resp, "content-type"), DOCKER_MANIFEST);
        assert_eq!(header(&resp, "docker-content-digest"), image.digest);
        assert_eq!(resp.bytes().await.unwrap(), image.manifest);
    }
    for (digest, bytes) in &image.blobs {
        let resp = c
            .get(mirror.url(&format!("/v2/dist/team/app/blobs/{digest}")))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&resp, "docker-content-digest"), *digest);
        assert_eq!(&resp.bytes().await.unwrap(), bytes);
        assert_eq!(
            registry.gets(&format!("/v2/team/app/blobs/{digest}")),
            1,
            "fetched again"
        );
    }
}
