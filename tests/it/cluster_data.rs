//! The data path across nodes: several Berth processes over one PostgreSQL database
//! (`Postgres::fresh_url`) and one Garage bucket prefix, as the nodes of a cluster behind a
//! load balancer are. Each test sends each request to the node it names, so it decides which
//! node serves what, and orders races with test hooks (src/testhook.rs), never with sleeps:
//! - a chunked upload whose `PATCH`es move between nodes (each node resumes from the bucket when
//!   another appended since: `upload.node_switch`) ends in a blob every node serves;
//! - the same layer pushed through three nodes at once is stored once, and every push succeeds:
//!   the commits are serialised by the digest's advisory lock, so one writes the object and the
//!   others find it (`blob.commit_present`);
//! - a push of a digest that garbage collection on another node is deleting waits for the
//!   delete (the digest's advisory lock) and re-creates the blob;
//! - a HEAD on one node protects the blob from a collection run on another (`berth.touches`);
//! - a node killed while it holds a lock lets it go, and its restart spares what was pushed since;
//! - a tail segment that changed behind a node (a dead node's half append) is never built on.

use std::time::Duration;

use crate::garage::{Garage, fresh_prefix};
use crate::harness::{
    Berth, client, header, image_manifest, push_blob, random_bytes, run_gc, sha256, start_gc, wait_gc,
};
use crate::postgres::Postgres;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// S3's smallest part, the `OCI-Chunk-Min-Length` of the test bucket (see `Garage::berth_env`).
const PART: usize = 5 << 20;
/// Long enough that nothing ages out of it unless a test moves the nodes' clocks.
const GRACE: Duration = Duration::from_secs(3600);

/// Where the nodes of one cluster keep their state.
struct Shared {
    url: String,
    prefix: String,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            url: Postgres::shared().fresh_url(),
            prefix: fresh_prefix(),
        }
    }

    /// Start a node with `env` on top of the shared database and bucket prefix.
    fn node(&self, env: &[(&str, &str)]) -> Berth {
        let builder = Berth::builder()
            .postgres(&self.url)
            .s3_prefix(Garage::shared(), &self.prefix);
        env.iter().fold(builder, |b, (k, v)| b.env(k, v)).start()
    }

    fn nodes(&self, n: usize, env: &[(&str, &str)]) -> Vec<Berth> {
        (0..n).map(|_| self.node(env)).collect()
    }

    /// The keys of every object under this cluster's prefix and `under` it.
    async fn objects(&self, under: &str) -> Vec<String> {
        let listed = Garage::shared()
            .client()
            .list_objects_v2()
            .bucket(crate::garage::BUCKET)
            .prefix(format!("{}/{under}", self.prefix))
            .send()
            .await
            .unwrap();
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }
}

/// Open an upload session on `node`; its location path (the same on every node).
async fn start_upload(node: &Berth, repo: &str) -> String {
    let resp = client()
        .post(node.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(header(&resp, "oci-chunk-min-length"), PART.to_string());
    header(&resp, "location")
}

/// PATCH `bytes` at `from` to the session at `location`, through `node`.
async fn patch(node: &Berth, location: &str, from: usize, bytes: &[u8]) {
    let resp = client()
        .patch(node.url(location))
        .header("content-range", format!("{from}-{}", from + bytes.len() - 1))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "PATCH at {from}: {}", resp.text().await.unwrap());
    assert_eq!(header(&resp, "range"), format!("0-{}", from + bytes.len() - 1));
}

/// Finish the session at `location` through `node`, with `last` as its final chunk.
async fn finish(node: &Berth, location: &str, digest: &str, from: usize, last: &[u8]) -> reqwest::Response {
    let sep = if location.contains('?') { '&' } else { '?' };
    let mut put = client().put(node.url(&format!("{location}{sep}digest={digest}")));
    if !last.is_empty() {
        put = put
            .header("content-range", format!("{from}-{}", from + last.len() - 1))
            .header("content-type", "application/octet-stream");
    }
    put.body(last.to_vec()).send().await.unwrap()
}

/// GET a blob through `node`: its status and bytes.
async fn get_blob(node: &Berth, repo: &str, digest: &str) -> (u16, Vec<u8>) {
    let resp = client()
        .get(node.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

async fn head_blob(node: &Berth, repo: &str, digest: &str) -> u16 {
    let url = node.url(&format!("/v2/{repo}/blobs/{digest}"));
    client().head(url).send().await.unwrap().status().as_u16()
}

/// A chunked upload whose `PATCH`es alternate between nodes, finished on a third: every node
/// serves the blob byte for byte, a node that keeps the session re-hashes nothing, and a
/// manifest pushed on one node is pullable on the others at once.
#[tokio::test]
async fn chunked_upload_across_nodes() {
    let shared = Shared::new();
    let [a, b, c]: [Berth; 3] = shared.nodes(3, &[]).try_into().ok().unwrap();
    let layer = random_bytes(4 * PART + 12_345, 23);
    let chunks: Vec<&[u8]> = layer.chunks(PART).collect();
    let location = start_upload(&a, "cluster/chunked").await;
    // A keeps the session for two PATCHes, B takes the third, A the fourth, C finishes.
    for (i, node) in [&a, &a, &b, &a].into_iter().enumerate() {
        patch(node, &location, i * PART, chunks[i]).await;
    }
    assert_eq!(
        a.reached("upload.node_switch").await,
        1,
        "A resumes only after B appended"
    );
    let digest = sha256(&layer);
    let resp = finish(&c, &location, &digest, 4 * PART, chunks[4]).await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    for node in [&a, &b, &c] {
        let (status, bytes) = get_blob(node, "cluster/chunked", &digest).await;
        assert_eq!(status, 200);
        assert!(bytes == layer, "{} serves other bytes", node.base);
    }
    let manifest = image_manifest(&b, "cluster/chunked", &[&layer]).await;
    crate::harness::push_manifest(&b, "cluster/chunked", "v1", OCI_MANIFEST, &manifest).await;
    for node in [&a, &c] {
        let resp = client()
            .get(node.url("/v2/cluster/chunked/manifests/v1"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.unwrap(), manifest);
    }
}

/// The same layer pushed through three nodes at once, their final PUTs sent together: every
/// push succeeds, and the bucket holds the blob once, with no upload segments left.
#[tokio::test]
async fn same_layer_through_three_nodes_at_once() {
    let shared = Shared::new();
    let nodes = shared.nodes(3, &[]);
    let layer = random_bytes(2 * PART + 99, 7);
    let digest = sha256(&layer);
    let mut sessions = Vec::new();
    for node in &nodes {
        let location = start_upload(node, "cluster/same").await;
        patch(node, &location, 0, &layer[..PART]).await;
        sessions.push(location);
    }
    let puts = nodes
        .iter()
        .zip(&sessions)
        .map(|(node, location)| finish(node, location, &digest, PART, &layer[PART..]));
    for resp in futures_util::future::join_all(puts).await {
        if resp.status() != 201 {
            for n in &nodes {
                eprintln!("LOG {}:\n{}", n.base, n.log());
            }
        }
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    }
    let mut dropped = 0;
    for node in &nodes {
        dropped += node.reached("blob.commit_present").await;
    }
    assert_eq!(
        dropped, 2,
        "the commits were serialised: one wrote the blob, two found it"
    );
    let hex = digest.strip_prefix("sha256:").unwrap();
    let blobs = shared.objects("blobs/").await;
    assert_eq!(blobs.len(), 1, "stored once: {blobs:?}");
    assert!(blobs[0].ends_with(hex), "{blobs:?}");
    assert_eq!(
        shared.objects("uploads/").await,
        Vec::<String>::new(),
        "no segments left"
    );
    for node in &nodes {
        let (status, bytes) = get_blob(node, "cluster/same", &digest).await;
        assert_eq!(status, 200);
        assert!(bytes == layer);
    }
}

/// A push through node B of a digest that garbage collection on node A has tombstoned waits on
/// the digest's advisory lock until A has deleted the object and dropped the rows, then stores
/// the blob again: the acknowledged push is not lost.
#[tokio::test]
async fn push_racing_a_delete_on_another_node() {
    let shared = Shared::new();
    let a = shared.node(&[
        ("BERTH_GC_GRACE_PERIOD", "0s"),
        ("BERTH_TEST_PAUSE_AT", "gc.before_unlink"),
    ]);
    let b = shared.node(&[("BERTH_GC_GRACE_PERIOD", "0s")]);
    let bytes = random_bytes(PART + 1, 3);
    let digest = push_blob(&a, "cluster/race", &bytes).await;
    crate::harness::next_millisecond().await;
    let id = start_gc(&a.base).await;
    a.wait_reached("gc.before_unlink", 1).await;
    assert_eq!(get_blob(&b, "cluster/race", &digest).await.0, 404, "tombstoned");
    let (repushed, ()) = tokio::join!(push_blob(&b, "cluster/race", &bytes), async {
        b.wait_reached("digest_lock.wait", 1).await;
        a.resume("gc.before_unlink").await;
    });
    assert_eq!(repushed, digest);
    let report = wait_gc(&a.base, &id).await;
    assert_eq!(report["blobs_deleted"], 1, "{report}");
    for node in [&a, &b] {
        let (status, body) = get_blob(node, "cluster/race", &digest).await;
        assert_eq!(status, 200, "{}", node.base);
        assert!(body == bytes);
    }
    assert!(b.stored_blobs().await.contains(&digest), "the object is in the bucket");
}

/// A HEAD through node A (a client about to reference the blob) keeps it from a collection run
/// on node B; the same blob without the HEAD is collected, so the touch is what kept it.
#[tokio::test]
async fn head_on_one_node_protects_from_gc_on_another() {
    let shared = Shared::new();
    let [a, b]: [Berth; 2] = shared
        .nodes(2, &[("BERTH_GC_GRACE_PERIOD", "1h")])
        .try_into()
        .ok()
        .unwrap();
    let kept = push_blob(&a, "cluster/touch", b"head-checked on A").await;
    let lost = push_blob(&a, "cluster/touch", b"never head-checked").await;
    for node in [&a, &b] {
        node.advance_clock(2 * GRACE).await; // the pushes leave the grace period
    }
    assert_eq!(head_blob(&a, "cluster/touch", &kept).await, 200);
    let report = run_gc(&b).await;
    assert_eq!(report["blobs_deleted"], 1, "{report}");
    for node in [&a, &b] {
        assert_eq!(head_blob(node, "cluster/touch", &kept).await, 200, "{}", node.base);
        assert_eq!(get_blob(node, "cluster/touch", &lost).await.0, 404, "{}", node.base);
    }
}

/// A node killed while its collection holds a digest's lock (tombstone committed, object not yet
/// deleted) loses its connections, and PostgreSQL releases the lock with them: a push of that
/// digest through another node, waiting on it, goes through and revives the blob (its commit
/// drops the tombstone). The killed node's restart, which finishes interrupted deletions under
/// the digests' locks while the others serve, keeps the bytes the push acknowledged.
#[tokio::test]
async fn a_killed_node_releases_its_locks_and_its_restart_spares_revived_blobs() {
    let shared = Shared::new();
    let mut a = shared.node(&[
        ("BERTH_GC_GRACE_PERIOD", "0s"),
        ("BERTH_TEST_PAUSE_AT", "gc.before_unlink"),
    ]);
    let b = shared.node(&[("BERTH_GC_GRACE_PERIOD", "0s")]);
    let bytes = random_bytes(PART + 5, 11);
    let digest = push_blob(&a, "cluster/killed", &bytes).await;
    crate::harness::next_millisecond().await;
    start_gc(&a.base).await;
    a.wait_reached("gc.before_unlink", 1).await;
    let (repushed, ()) = tokio::join!(push_blob(&b, "cluster/killed", &bytes), async {
        b.wait_reached("digest_lock.wait", 1).await;
        a.kill();
    });
    assert_eq!(repushed, digest);
    a.restart();
    for node in [&a, &b] {
        let (status, body) = get_blob(node, "cluster/killed", &digest).await;
        assert_eq!(status, 200, "{}", node.base);
        assert!(body == bytes);
    }
    assert!(b.stored_blobs().await.contains(&digest), "the object is in the bucket");
}

/// A node that died half-way through an append can leave the session's tail segment longer than
/// the row says, with bytes no client was told were stored. A node that still caches the
/// session (same length as the row) must not build on that tail: its running hash lacks those
/// bytes, so the blob it committed would not be the one it verified. It refuses the chunk with
/// 503, drops its cache, and the session resumes from what the bucket holds.
#[tokio::test]
async fn a_tail_changed_behind_a_node_is_not_built_on() {
    let shared = Shared::new();
    let a = shared.node(&[]);
    let first = random_bytes(PART + 100, 5);
    let location = start_upload(&a, "cluster/tail").await;
    patch(&a, &location, 0, &first).await;
    let id = location.rsplit('/').next().unwrap();
    let tail_key = format!("{}/uploads/{id}/{PART:020}", shared.prefix);
    let mut longer = first[PART..].to_vec();
    longer.extend_from_slice(&[0xee; 100]); // what a dead node's half append left
    Garage::shared()
        .client()
        .put_object()
        .bucket(crate::garage::BUCKET)
        .key(&tail_key)
        .body(longer.into())
        .send()
        .await
        .unwrap();
    let resp = client()
        .patch(a.url(&location))
        .header("content-range", format!("{}-{}", PART + 100, PART + 199))
        .header("content-type", "application/octet-stream")
        .body(vec![1u8; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503, "{}", resp.text().await.unwrap());
    let status = client().get(a.url(&location)).send().await.unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(
        header(&status, "range"),
        format!("0-{}", PART + 199),
        "resumed from the bucket"
    );
}
