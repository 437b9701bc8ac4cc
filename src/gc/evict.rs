//! Eviction for the pull-through caches: before the mark phase, a cache over its `max_bytes`
//! gives up its least recently pulled images until it fits. Only manifests of the cache's own
//! repositories are chosen; the sweep that follows frees what they alone held, through the same
//! re-checked transactions, digest locks and tombstones as any collection, so a pull of the
//! same content during the run either finds it or fetches it again.
//!
//! A cache's size is the bytes of the live blobs linked into its repositories, each counted
//! once. An image is a root manifest (one no index of its repository lists) with the children
//! it lists; it was last pulled when any of them was (the registry's record of pulls since it
//! started, else when it was cached). Evicting an image frees, in this accounting, every blob
//! no remaining manifest of the cache references.

use std::collections::{HashMap, HashSet};

use crate::meta::gc::Snapshot;
use crate::meta::{BlobState, Millis};

/// One cache's bound.
#[derive(Debug, Clone)]
pub struct Bound {
    pub prefix: String,
    pub max_bytes: u64,
}

/// What eviction chose: manifests to delete, and the bytes their removal frees.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Choice {
    pub manifests: Vec<(String, String)>,
    pub bytes: u64,
}

fn under(prefix: &str, repo: &str) -> bool {
    repo.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// Choose what each cache over its bound gives up. `pulled` tells when a manifest was last
/// pulled, if the registry saw it.
pub fn choose(snap: &Snapshot, bounds: &[Bound], pulled: &dyn Fn(&str, &str) -> Option<Millis>) -> Choice {
    let mut choice = Choice::default();
    for bound in bounds {
        let one = choose_in(snap, bound, pulled);
        choice.bytes += one.bytes;
        choice.manifests.extend(one.manifests);
    }
    choice
}

fn choose_in(snap: &Snapshot, bound: &Bound, pulled: &dyn Fn(&str, &str) -> Option<Millis>) -> Choice {
    let size: HashMap<&str, u64> = snap
        .blobs
        .iter()
        .filter(|(_, b)| b.state == BlobState::Live)
        .map(|(d, b)| (d.as_str(), b.size))
        .collect();
    let (mut used, _) = snap.linked_under(&bound.prefix);
    if used <= bound.max_bytes {
        return Choice::default();
    }
    // Links of the cache's repositories per live blob.
    let mut holders: HashMap<&str, u64> = HashMap::new();
    for (_, digest, _) in snap.links.iter().filter(|(r, _, _)| under(&bound.prefix, r)) {
        if size.contains_key(digest.as_str()) {
            *holders.entry(digest.as_str()).or_default() += 1;
        }
    }
    if holders.is_empty() {
        return Choice::default();
    }
    // References per link, from the cache's manifests.
    let mut refs: HashMap<(&str, &str), u64> = HashMap::new();
    for ((repo, _), node) in snap.manifests.iter().filter(|((r, _), _)| under(&bound.prefix, r)) {
        for blob in &node.refs.blobs {
            *refs.entry((repo.as_str(), blob.as_str())).or_default() += 1;
        }
    }
    let mut choice = Choice::default();
    for (repo, members) in images_oldest_first(snap, bound, pulled) {
        if used <= bound.max_bytes {
            break;
        }
        for digest in members {
            let node = &snap.manifests[&(repo.to_owned(), digest.to_owned())];
            for blob in &node.refs.blobs {
                let n = refs.entry((repo, blob.as_str())).or_default();
                *n = n.saturating_sub(1);
                if *n > 0 {
                    continue;
                }
                // The link goes; the blob leaves the cache with its last link.
                if let Some(h) = holders.get_mut(blob.as_str()) {
                    *h = h.saturating_sub(1);
                    if *h == 0 {
                        let freed = size.get(blob.as_str()).copied().unwrap_or(0);
                        used = used.saturating_sub(freed);
                        choice.bytes += freed;
                    }
                }
            }
            choice.manifests.push((repo.to_owned(), digest.to_owned()));
        }
    }
    choice
}

/// The cache's images, least recently pulled first: (repository, root then its children).
fn images_oldest_first<'s>(
    snap: &'s Snapshot,
    bound: &Bound,
    pulled: &dyn Fn(&str, &str) -> Option<Millis>,
) -> Vec<(&'s str, Vec<&'s str>)> {
    let mut images: Vec<(Millis, &str, Vec<&str>)> = Vec::new();
    for ((repo, digest), node) in &snap.manifests {
        if !under(&bound.prefix, repo) || !node.parents.is_empty() {
            continue;
        }
        let members = with_children(snap, repo, digest);
        let last = members
            .iter()
            .map(|d| {
                let cached = snap.manifests[&(repo.clone(), (*d).to_owned())].refs.pushed_ms;
                pulled(repo, d).unwrap_or(cached).max(cached)
            })
            .max()
            .unwrap_or(0);
        images.push((last, repo.as_str(), members));
    }
    images.sort_unstable();
    images.into_iter().map(|(_, repo, members)| (repo, members)).collect()
}

/// `digest` and every manifest it lists, transitively, that is stored in `repo`. A child that
/// another image also lists goes with whichever is evicted first, and stays listed (and
/// fetched again on demand) by the other.
fn with_children<'s>(snap: &'s Snapshot, repo: &str, digest: &'s str) -> Vec<&'s str> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut stack = vec![digest];
    let mut out = Vec::new();
    while let Some(d) = stack.pop() {
        if !seen.insert(d) {
            continue;
        }
        let Some((key, node)) = snap.manifests.get_key_value(&(repo.to_owned(), d.to_owned())) else {
            continue;
        };
        out.push(key.1.as_str());
        stack.extend(node.refs.children.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::BlobRow;
    use crate::meta::gc::Node;
    use crate::meta::schema::LinkRow;

    fn link() -> LinkRow {
        LinkRow {
            linked_ms: 0,
            refs: 1,
            referenced: true,
        }
    }

    fn blob(size: u64) -> BlobRow {
        BlobRow {
            size,
            refcount: 1,
            links: 1,
            created_ms: 0,
            state: BlobState::Live,
            referenced: true,
        }
    }

    /// An image: its name, when it was cached, and its blobs with their sizes.
    type Image<'a> = (&'a str, Millis, &'a [(&'a str, u64)]);

    /// A snapshot with `images` in repo `c/app`, and one local repo.
    fn snap(images: &[Image<'_>]) -> Snapshot {
        let mut s = Snapshot::default();
        for (name, pushed, blobs) in images {
            let mut node = Node::default();
            node.refs.pushed_ms = *pushed;
            for (b, size) in *blobs {
                node.refs.blobs.push((*b).to_owned());
                if s.blobs.iter().all(|(d, _)| d != b) {
                    s.blobs.push(((*b).to_owned(), blob(*size)));
                    s.links.push(("c/app".into(), (*b).to_owned(), link()));
                }
            }
            s.manifests.insert(("c/app".into(), (*name).to_owned()), node);
        }
        // A local repository's big blob never counts, nor is its manifest chosen.
        let mut local = Node::default();
        local.refs.blobs.push("local".into());
        s.manifests.insert(("local/app".into(), "m-local".into()), local);
        s.blobs.push(("local".into(), blob(1 << 30)));
        s.links.push(("local/app".into(), "local".into(), link()));
        s
    }

    #[test]
    fn least_recently_pulled_images_go_first_until_the_cache_fits() {
        let s = snap(&[
            ("m-old", 10, &[("a", 100), ("shared", 50)]),
            ("m-mid", 20, &[("b", 100), ("shared", 50)]),
            ("m-new", 30, &[("c", 100)]),
        ]);
        let bound = Bound {
            prefix: "c".into(),
            max_bytes: 260,
        };
        // 350 bytes used: m-old goes (frees a, 100; shared stays with m-mid).
        let choice = choose(&s, std::slice::from_ref(&bound), &|_, _| None);
        assert_eq!(choice.manifests, [("c/app".to_owned(), "m-old".to_owned())]);
        assert_eq!(choice.bytes, 100);
        // A recent pull of m-old saves it: m-mid goes instead.
        let choice = choose(&s, std::slice::from_ref(&bound), &|_, d| (d == "m-old").then_some(99));
        assert_eq!(choice.manifests, [("c/app".to_owned(), "m-mid".to_owned())]);
        // Within bounds: nothing.
        let roomy = Bound {
            prefix: "c".into(),
            max_bytes: 350,
        };
        assert_eq!(choose(&s, &[roomy], &|_, _| None), Choice::default());
        // A tight bound empties the cache, never touching the local repository.
        let tight = Bound {
            prefix: "c".into(),
            max_bytes: 0,
        };
        let choice = choose(&s, &[tight], &|_, _| None);
        assert_eq!(choice.manifests.len(), 3);
        assert_eq!(choice.bytes, 350);
    }
}
