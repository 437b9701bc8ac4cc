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
//! | `referrers`        | (repo, subject, referrer)      | `ReferrerRow` |
//! | `blob_links`       | (repo, blob digest)            | `LinkRow`     |
//! | `blobs`            | blob digest                    | `BlobRow`     |
//! | `uploads`          | upload uuid                    | `UploadRow`   |

use std::collections::BTreeMap;

use redb::TableDefinition;
use serde::{Deserialize, Serialize};

pub type Bytes<'a> = &'a [u8];

pub const REPOS: TableDefinition<&str, Bytes> = TableDefinition::new("repos");
pub const TAGS: TableDefinition<(&str, &str), Bytes> = TableDefinition::new("tags");
pub const TAGS_BY_MANIFEST: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("tags_by_manifest");
pub const MANIFESTS: TableDefinition<(&str, &str), Bytes> = TableDefinition::new("manifests");
pub const MANIFEST_REFS: TableDefinition<(&str, &str), Bytes> = TableDefinition::new("manifest_refs");
pub const REFERRERS: TableDefinition<(&str, &str, &str), Bytes> = TableDefinition::new("referrers");
pub const BLOB_LINKS: TableDefinition<(&str, &str), Bytes> = TableDefinition::new("blob_links");
pub const BLOBS: TableDefinition<&str, Bytes> = TableDefinition::new("blobs");
pub const UPLOADS: TableDefinition<&str, Bytes> = TableDefinition::new("uploads");

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

/// What a manifest references: the blobs counted in their `BlobRow::refcount` (deduplicated,
/// external layers excluded) and the child manifests of an index.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RefsRow {
    pub blobs: Vec<String>,
    pub children: Vec<String>,
}

/// The descriptor a referrers listing returns for one referring manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReferrerRow {
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkRow {
    pub linked_ms: Millis,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum BlobState {
    /// The file exists and may be served.
    Live,
    /// Garbage collection committed its deletion; the file may or may not be unlinked yet.
    /// Treated as absent by every reader; start-up finishes the deletion.
    Deleting { since_ms: Millis },
}

/// The global record of one blob file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobRow {
    pub size: u64,
    /// Number of manifests, across all repositories, whose `RefsRow::blobs` name this blob.
    pub refcount: u64,
    pub created_ms: Millis,
    pub state: BlobState,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadRow {
    pub repo: String,
    pub created_ms: Millis,
}
