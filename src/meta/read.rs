//! Read transactions. Each method takes one MVCC snapshot and never waits for the writer.

use std::ops::Bound;

use redb::{ReadableTable, TableDefinition};

use super::codec::decode;
use super::schema::{
    BLOB_LINKS, BLOBS, BlobRow, BlobState, MANIFESTS, ManifestRow, REFERRERS, REPOS, ReferrerRow, TAGS, TagRow,
    UPLOADS, UploadRow,
};
use super::{Meta, MetaError};

/// One page of a lexically ordered listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    /// True when entries follow the last item.
    pub more: bool,
}

impl Meta {
    pub fn repo_exists(&self, repo: &str) -> Result<bool, MetaError> {
        Ok(self.read_txn()?.open_table(REPOS)?.get(repo)?.is_some())
    }

    /// The manifest `digest` of `repo`.
    pub fn manifest(&self, repo: &str, digest: &str) -> Result<Option<ManifestRow>, MetaError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(MANIFESTS)?;
        table.get((repo, digest))?.map(|v| decode(v.value())).transpose()
    }

    /// The manifest `tag` points at, with its digest, from one snapshot.
    pub fn manifest_by_tag(&self, repo: &str, tag: &str) -> Result<Option<(String, ManifestRow)>, MetaError> {
        let txn = self.read_txn()?;
        let Some(tag_row) = txn
            .open_table(TAGS)?
            .get((repo, tag))?
            .map(|v| decode::<TagRow>(v.value()))
            .transpose()?
        else {
            return Ok(None);
        };
        let table = txn.open_table(MANIFESTS)?;
        let row = table
            .get((repo, tag_row.digest.as_str()))?
            .map(|v| decode(v.value()))
            .transpose()?;
        Ok(row.map(|r| (tag_row.digest, r)))
    }

    /// The blob record of `digest` if it is linked into `repo` and live.
    pub fn linked_blob(&self, repo: &str, digest: &str) -> Result<Option<BlobRow>, MetaError> {
        let txn = self.read_txn()?;
        if txn.open_table(BLOB_LINKS)?.get((repo, digest))?.is_none() {
            return Ok(None);
        }
        let blob = txn
            .open_table(BLOBS)?
            .get(digest)?
            .map(|v| decode::<BlobRow>(v.value()))
            .transpose()?;
        Ok(blob.filter(|b| b.state == BlobState::Live))
    }

    /// The global record of `digest`, if live.
    pub fn live_blob(&self, digest: &str) -> Result<Option<BlobRow>, MetaError> {
        let txn = self.read_txn()?;
        let blob = txn
            .open_table(BLOBS)?
            .get(digest)?
            .map(|v| decode::<BlobRow>(v.value()))
            .transpose()?;
        Ok(blob.filter(|b| b.state == BlobState::Live))
    }

    /// Tags of `repo` after `last`, at most `n`; `None` when the repository does not exist.
    pub fn tags(&self, repo: &str, last: Option<&str>, n: usize) -> Result<Option<Page>, MetaError> {
        let txn = self.read_txn()?;
        if txn.open_table(REPOS)?.get(repo)?.is_none() {
            return Ok(None);
        }
        let table = txn.open_table(TAGS)?;
        let start = last.map_or(Bound::Included((repo, "")), |l| Bound::Excluded((repo, l)));
        let mut items = Vec::new();
        for entry in table.range::<(&str, &str)>((start, Bound::Unbounded))? {
            let (key, _) = entry?;
            let (r, tag) = key.value();
            if r != repo {
                break;
            }
            if items.len() == n {
                return Ok(Some(Page { items, more: true }));
            }
            items.push(tag.to_owned());
        }
        Ok(Some(Page { items, more: false }))
    }

    /// Repository names after `last`, at most `n`.
    pub fn repos(&self, last: Option<&str>, n: usize) -> Result<Page, MetaError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(REPOS)?;
        let start = last.map_or(Bound::Unbounded, Bound::Excluded);
        let mut items = Vec::new();
        for entry in table.range::<&str>((start, Bound::Unbounded))? {
            let (key, _) = entry?;
            if items.len() == n {
                return Ok(Page { items, more: true });
            }
            items.push(key.value().to_owned());
        }
        Ok(Page { items, more: false })
    }

    /// Manifests of `repo` whose `subject` is `subject`, ordered by digest.
    pub fn referrers(&self, repo: &str, subject: &str) -> Result<Vec<(String, ReferrerRow)>, MetaError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(REFERRERS)?;
        let mut out = Vec::new();
        for entry in table.range((repo, subject, "")..)? {
            let (key, value) = entry?;
            let (r, s, referrer) = key.value();
            if r != repo || s != subject {
                break;
            }
            out.push((referrer.to_owned(), decode(value.value())?));
        }
        Ok(out)
    }

    pub fn upload(&self, id: &str) -> Result<Option<UploadRow>, MetaError> {
        let txn = self.read_txn()?;
        txn.open_table(UPLOADS)?.get(id)?.map(|v| decode(v.value())).transpose()
    }

    /// How many upload sessions are open.
    pub fn upload_count(&self) -> Result<u64, MetaError> {
        use redb::ReadableTableMetadata;
        Ok(self.read_txn()?.open_table(UPLOADS)?.len()?)
    }

    /// Every upload session id.
    pub fn upload_ids(&self) -> Result<Vec<String>, MetaError> {
        self.keys(UPLOADS)
    }

    fn keys(&self, def: TableDefinition<&str, &[u8]>) -> Result<Vec<String>, MetaError> {
        let txn = self.read_txn()?;
        let table = txn.open_table(def)?;
        table.iter()?.map(|e| Ok(e?.0.value().to_owned())).collect()
    }
}
