//! Every redb table and row type, in one place. Keys are strings (or tuples of strings) so that
//! redb's ordering is the lexical ordering the listing endpoints need. Every value is a postcard
//! encoding prefixed with a version byte (`codec`), except the reverse tag index, whose value is
//! the unit type and carries nothing to version.
//!
//! | table              | key                            | value         |
//! |--------------------|--------------------------------|---------------|
//! | `repos`            | repo                           | `RepoRow`     |
//! | `tags`             | (repo, tag)                    | `TagRow`      |
//! | `tags_by_manifest` | (repo, manifest digest, tag)   | `()`          |
//! | `manifests`        | (repo, manifest digest)        | `ManifestRow` |
//! | `manifest_refs`    | (repo, manifest digest)        | `RefsRow`     |
//! | `manifest_parents` | (repo, child, parent index)    | `()`          |
//! | `referrers`        | (repo, subject, referrer)      | `ReferrerRow` |
//! | `blob_links`       | (repo, blob digest)            | `LinkRow`     |
//! | `blobs`            | blob digest                    | `BlobRow`     |
//! | `uploads`          | upload uuid                    | `UploadRow`   |
//! | `tombstones`       | blob digest                    | `TombstoneRow`|
//! | `audit`            | event id (u64)                 | `audit::AuditEvent` |
//! | `outbox`           | (endpoint, event id)           | `audit::OutboxRow`  |
//! | `sequences`        | sequence name                  | last value (u64, raw) |

use std::collections::BTreeMap;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::MetaError;
use super::codec::decode;
use super::rows::{Bytes, Key, Str, Str2, Str3, StrU64, Table, U64, Value};
use crate::oci::Algorithm;

pub const REPOS: Table<Str, Bytes> = Table::new("repos");
pub const TAGS: Table<Str2, Bytes> = Table::new("tags");
pub const TAGS_BY_MANIFEST: Table<Str3, ()> = Table::new("tags_by_manifest");
pub const MANIFESTS: Table<Str2, Bytes> = Table::new("manifests");
pub const MANIFEST_REFS: Table<Str2, Bytes> = Table::new("manifest_refs");
pub const MANIFEST_PARENTS: Table<Str3, ()> = Table::new("manifest_parents");
pub const REFERRERS: Table<Str3, Bytes> = Table::new("referrers");
pub const BLOB_LINKS: Table<Str2, Bytes> = Table::new("blob_links");
pub const BLOBS: Table<Str, Bytes> = Table::new("blobs");
pub const UPLOADS: Table<Str, Bytes> = Table::new("uploads");
pub const TOMBSTONES: Table<Str, Bytes> = Table::new("tombstones");
pub const AUDIT: Table<U64, Bytes> = Table::new("audit");
pub const OUTBOX: Table<StrU64, Bytes> = Table::new("outbox");
pub const SEQUENCES: Table<Str, U64> = Table::new("sequences");

/// Every table, by name, with its PostgreSQL key and value column types (`postgres` creates
/// them from this list).
pub const ALL: [(&str, &[&str], Option<&str>); 14] = [
    shape(&REPOS),
    shape(&TAGS),
    shape(&TAGS_BY_MANIFEST),
    shape(&MANIFESTS),
    shape(&MANIFEST_REFS),
    shape(&MANIFEST_PARENTS),
    shape(&REFERRERS),
    shape(&BLOB_LINKS),
    shape(&BLOBS),
    shape(&UPLOADS),
    shape(&TOMBSTONES),
    shape(&AUDIT),
    shape(&OUTBOX),
    shape(&SEQUENCES),
];

const fn shape<K: Key, V: Value>(t: &Table<K, V>) -> (&'static str, &'static [&'static str], Option<&'static str>) {
    (t.name, K::COLUMNS, V::COLUMN)
}

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepoRow {
    pub created_ms: Millis,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TagRow {
    pub digest: String,
    pub updated_ms: Millis,
}

/// A manifest as pushed: its bytes verbatim and the media type it is served with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestRow {
    pub media_type: String,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub subject: Option<String>,
    pub created_ms: Millis,
}

/// The graph facts of a manifest, kept apart from its (possibly large) body so that garbage
/// collection never reads bodies: the blobs counted in their `BlobRow::refcount` and
/// `LinkRow::refs` (deduplicated, external layers excluded), the child manifests of an index,
/// its subject, and when it was last pushed (which starts its grace period).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefsRow {
    pub blobs: Vec<String>,
    pub children: Vec<String>,
    pub subject: Option<String>,
    pub pushed_ms: Millis,
}

/// The descriptor a referrers listing returns for one referring manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReferrerRow {
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LinkRow {
    /// When the blob was last uploaded or mounted into the repository.
    pub linked_ms: Millis,
    /// Number of manifests of this repository whose `RefsRow::blobs` name the blob.
    pub refs: u64,
    /// A manifest of the repository has referenced the blob since it was last uploaded or
    /// mounted here: the push that linked it is over, so once `refs` is back to 0 garbage
    /// collection need not wait out the grace period. Appended after the first release (see
    /// `appended`).
    pub referenced: bool,
}

impl<'de> Deserialize<'de> for LinkRow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Row;
        impl<'de> Visitor<'de> for Row {
            type Value = LinkRow;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a blob_links row")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LinkRow, A::Error> {
                Ok(LinkRow {
                    linked_ms: required(&mut seq)?,
                    refs: required(&mut seq)?,
                    referenced: appended(&mut seq),
                })
            }
        }
        d.deserialize_tuple(3, Row)
    }
}

fn required<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(seq: &mut A) -> Result<T, A::Error> {
    seq.next_element()?
        .ok_or_else(|| serde::de::Error::custom("row too short"))
}

/// A flag appended to a row after the first release, under the same version byte. Postcard is
/// not self-describing: a row written before the flag ends where it would begin, so reading it
/// fails, and the row reads as `false` (never referenced since: the grace period applies, as
/// it always did). Postcard ignores bytes past the end of a value, so an older release reads a
/// new row, without the flag.
fn appended<'de, A: SeqAccess<'de>>(seq: &mut A) -> bool {
    seq.next_element::<bool>().ok().flatten().unwrap_or(false)
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum BlobState {
    /// The file exists and may be served.
    Live,
    /// Garbage collection committed its deletion; the file may or may not be unlinked yet.
    /// Treated as absent by every reader; start-up finishes the deletion.
    Deleting { since_ms: Millis },
    /// fsck found the file corrupt or gone and quarantined it. Treated as absent by every
    /// reader, but the counts and links are kept, so a push of the same content revives the
    /// record exactly as the manifests that reference it expect.
    Missing { since_ms: Millis },
    /// Named by a manifest of a pull-through cache whose upstream holds the bytes, and not
    /// fetched yet: the manifest was stored sparse, before its blobs. Absent to every reader;
    /// `size` is the size the manifest declares. A fetch makes it `Live` (keeping the counts),
    /// and garbage collection drops the row once nothing counts it.
    Remote,
}

/// The global record of one blob file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BlobRow {
    pub size: u64,
    /// Number of manifests, across all repositories, whose `RefsRow::blobs` name this blob.
    pub refcount: u64,
    /// Number of `blob_links` rows naming this blob.
    pub links: u64,
    /// When the record was created or revived: the blob's last upload.
    pub created_ms: Millis,
    pub state: BlobState,
    /// A manifest has referenced the blob since `created_ms`: its push is over, so once nothing
    /// references or links it garbage collection need not wait out the grace period. Appended
    /// after the first release (see `appended`).
    pub referenced: bool,
}

impl<'de> Deserialize<'de> for BlobRow {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Row;
        impl<'de> Visitor<'de> for Row {
            type Value = BlobRow;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a blobs row")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BlobRow, A::Error> {
                Ok(BlobRow {
                    size: required(&mut seq)?,
                    refcount: required(&mut seq)?,
                    links: required(&mut seq)?,
                    created_ms: required(&mut seq)?,
                    state: required(&mut seq)?,
                    referenced: appended(&mut seq),
                })
            }
        }
        d.deserialize_tuple(6, Row)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadRow {
    pub repo: String,
    pub created_ms: Millis,
    /// The algorithm the session hashes its bytes with as they arrive (`?digest-algorithm=`
    /// when it was opened; sha256 otherwise), so a restart resumes the same hash. Added after
    /// the first release, at the end of the row: see `UploadRow::decode`.
    pub algorithm: Algorithm,
    /// Bytes the session has acknowledged, as of its last successful append. Kept only when
    /// several nodes share the metadata (a node whose cached session has another length
    /// resumes it from the blob store); 0 otherwise. Added at the end of the row, like
    /// `algorithm`.
    pub appended: u64,
}

/// An `uploads` row as releases before `UploadRow::algorithm` wrote it (same version byte).
#[derive(Deserialize)]
struct UploadRowWithoutAlgorithm {
    repo: String,
    created_ms: Millis,
}

/// An `uploads` row as releases before `UploadRow::appended` wrote it.
#[derive(Deserialize)]
struct UploadRowWithoutAppended {
    repo: String,
    created_ms: Millis,
    algorithm: Algorithm,
}

impl UploadRow {
    /// Decode an `uploads` row, including one written before sessions chose their algorithm:
    /// postcard is not self-describing, so such a row ends where `algorithm` would begin, fails
    /// to decode as a whole row, and decodes as the older layout, a sha256 session (all sessions
    /// were). Postcard ignores bytes past the end of a value, so an older release reads a new
    /// row too (as a sha256 session, whose final digest of another algorithm then re-reads
    /// the staged bytes once, as it always did). Upload rows live minutes, so this is the whole
    /// migration.
    ///
    /// `appended` was added the same way, later: a row without it decodes with 0 (a session
    /// opened by a single-node release, which never kept it).
    pub fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        decode::<UploadRow>(bytes).or_else(|e| {
            if let Ok(old) = decode::<UploadRowWithoutAppended>(bytes) {
                return Ok(UploadRow {
                    repo: old.repo,
                    created_ms: old.created_ms,
                    algorithm: old.algorithm,
                    appended: 0,
                });
            }
            let old = decode::<UploadRowWithoutAlgorithm>(bytes).map_err(|_| e)?;
            Ok(UploadRow {
                repo: old.repo,
                created_ms: old.created_ms,
                algorithm: Algorithm::Sha256,
                appended: 0,
            })
        })
    }
}

/// A blob whose deletion garbage collection committed; its file is unlinked next, then this row
/// and the blob row are removed. Start-up finishes any it finds (a crash in between).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TombstoneRow {
    pub size: u64,
    pub since_ms: Millis,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::codec::encode;

    /// The layout of `uploads` rows before sessions chose their algorithm.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct OldUploadRow {
        repo: String,
        created_ms: Millis,
    }

    /// The layout of `uploads` rows before sessions recorded their length.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct AlgorithmUploadRow {
        repo: String,
        created_ms: Millis,
        algorithm: Algorithm,
    }

    #[test]
    fn upload_rows_of_either_layout_decode_both_ways() {
        let old = encode(&OldUploadRow {
            repo: "a/b".into(),
            created_ms: 7,
        });
        let row = UploadRow::decode(&old).unwrap();
        assert_eq!(
            row,
            UploadRow {
                repo: "a/b".into(),
                created_ms: 7,
                algorithm: Algorithm::Sha256,
                appended: 0,
            },
            "a row from before the field is a sha256 session"
        );
        let new = UploadRow {
            repo: "c".into(),
            created_ms: 9,
            algorithm: Algorithm::Sha512,
            appended: 5 << 20,
        };
        assert_eq!(UploadRow::decode(&encode(&new)).unwrap(), new);
        // An older release reads a new row, ignoring the fields it does not know.
        let seen_by_old: OldUploadRow = decode(&encode(&new)).unwrap();
        assert_eq!(seen_by_old.repo, "c");
        assert_eq!(seen_by_old.created_ms, 9);
        let seen_by_v2: AlgorithmUploadRow = decode(&encode(&new)).unwrap();
        assert_eq!(seen_by_v2.algorithm, Algorithm::Sha512);
        // A row from before `appended` keeps its algorithm and has appended nothing.
        let v2 = encode(&AlgorithmUploadRow {
            repo: "d".into(),
            created_ms: 3,
            algorithm: Algorithm::Sha512,
        });
        let row = UploadRow::decode(&v2).unwrap();
        assert_eq!((row.algorithm, row.appended), (Algorithm::Sha512, 0));
        assert!(UploadRow::decode(&[1, 0xff]).is_err(), "damage is still an error");
    }

    /// The layouts of `blob_links` and `blobs` rows before their `referenced` flag.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct OldLinkRow {
        linked_ms: Millis,
        refs: u64,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct OldBlobRow {
        size: u64,
        refcount: u64,
        links: u64,
        created_ms: Millis,
        state: BlobState,
    }

    #[test]
    fn link_and_blob_rows_of_either_layout_decode_both_ways() {
        let old_link = encode(&OldLinkRow { linked_ms: 5, refs: 2 });
        let link = LinkRow {
            linked_ms: 5,
            refs: 2,
            referenced: false,
        };
        assert_eq!(decode::<LinkRow>(&old_link).unwrap(), link);
        let new_link = LinkRow {
            referenced: true,
            ..link
        };
        assert_eq!(decode::<LinkRow>(&encode(&new_link)).unwrap(), new_link);
        let seen_by_old: OldLinkRow = decode(&encode(&new_link)).unwrap();
        assert_eq!(seen_by_old, OldLinkRow { linked_ms: 5, refs: 2 });

        let state = BlobState::Deleting { since_ms: 4 };
        let old_blob = encode(&OldBlobRow {
            size: 9,
            refcount: 1,
            links: 3,
            created_ms: 7,
            state,
        });
        let blob = BlobRow {
            size: 9,
            refcount: 1,
            links: 3,
            created_ms: 7,
            state,
            referenced: false,
        };
        assert_eq!(decode::<BlobRow>(&old_blob).unwrap(), blob);
        let new_blob = BlobRow {
            referenced: true,
            ..blob
        };
        assert_eq!(decode::<BlobRow>(&encode(&new_blob)).unwrap(), new_blob);
        let seen_by_old: OldBlobRow = decode(&encode(&new_blob)).unwrap();
        assert_eq!(seen_by_old.created_ms, 7);
        assert!(decode::<BlobRow>(&[1, 9]).is_err(), "a truncated row is still an error");
    }
}
