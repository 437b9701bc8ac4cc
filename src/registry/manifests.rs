//! Manifest reads, pushes and deletes.

use bytes::Bytes;

use super::policy::Policies;
use super::{Error, Registry};
use crate::meta::{Action, Actor, ManifestRow, NewManifest, ReferrerRow, now_ms};
use crate::oci::manifest::{self, ManifestKind, ParsedManifest};
use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag};

/// A stored manifest as served.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub body: Bytes,
    /// Why it may be out of date (a cached tag served while its upstream failed), for a
    /// `Warning` header.
    pub warning: Option<String>,
}

impl Manifest {
    pub(super) fn from_row(digest: String, row: ManifestRow) -> Self {
        Manifest {
            digest,
            media_type: row.media_type,
            body: Bytes::from(row.body),
            warning: None,
        }
    }
}

/// The outcome of a manifest push.
#[derive(Debug, Clone)]
pub struct ManifestPut {
    pub digest: Digest,
    pub subject: Option<Digest>,
    /// The tags now pointing at it: the reference's, or the push by digest's extra tags.
    pub tags: Vec<Tag>,
}

impl Registry {
    pub async fn get_manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Manifest, Error> {
        if let Some(cached) = self.cached_manifest(repo, reference).await {
            return cached;
        }
        let found = match reference {
            Reference::Tag(tag) => self.meta.manifest_by_tag(repo, tag).await?,
            Reference::Digest(digest) => {
                let row = self.meta.manifest(repo, digest).await?;
                row.map(|row| (digest.to_string(), row))
            }
        };
        let (digest, row) = found.ok_or(Error::ManifestUnknown)?;
        Ok(Manifest::from_row(digest, row))
    }

    /// Store a manifest under its digest and point its tags at it: the reference's for a push
    /// by tag, `tags` (the `?tag=` parameters, which the caller allows only with a digest) for
    /// a push by digest. The body is hashed and parsed before the (short) write transaction
    /// that checks and stores it and sets every tag, so the manifest and all its tags appear
    /// together or not at all.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        tags: Vec<Tag>,
        content_type: Option<&str>,
        body: Bytes,
        actor: &Actor,
    ) -> Result<ManifestPut, Error> {
        self.refuse_cached(repo)?;
        let limit = self.limits.manifest_max_bytes;
        if body.len() as u64 > limit {
            return Err(Error::ManifestTooLarge { limit });
        }
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &body);
                if &actual != expected {
                    return Err(Error::DigestMismatch {
                        expected: expected.to_string(),
                        actual: actual.to_string(),
                    });
                }
                actual
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &body),
        };
        let parsed = manifest::parse(&body, content_type)?;
        let subject = parsed.subject.as_ref().map(|s| s.digest.clone());
        let tags = match reference {
            Reference::Tag(t) => std::iter::once(t.clone()).chain(tags).collect(),
            Reference::Digest(_) => tags,
        };
        let mut event = Self::event(Action::Push, actor, repo);
        event.reference = Some(reference.to_string());
        event.digest = Some(digest.to_string());
        event.size = Some(body.len() as u64);
        let row = manifest_row(&parsed, body);
        event.media_type = Some(row.media_type.clone());
        let audited = self.audited(event);
        let policies = self.policies.get();
        let new = NewManifest {
            sparse: self.limits.sparse_manifests,
            protected: policies.protected(repo),
            quotas: policies.quotas_of(repo),
            ..new_manifest(repo.clone(), digest.clone(), tags.clone(), &parsed, row)
        };
        self.meta_write(|m| m.put_manifest(new, now_ms()).audited(move |()| Some(audited.clone())))
            .await
            .map_err(|e| immutable(e, &policies, repo))?;
        crate::crashpoint::hit("manifest.after_commit");
        Ok(ManifestPut { digest, subject, tags })
    }

    /// Delete by digest (the manifest and its tags) or by tag (only the tag).
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference, actor: &Actor) -> Result<(), Error> {
        self.refuse_cached(repo)?;
        let policies = self.policies.get();
        let protected = policies.protected(repo);
        let action = match reference {
            Reference::Digest(_) => Action::ManifestDelete,
            Reference::Tag(_) => Action::TagDelete,
        };
        let mut event = Self::event(action, actor, repo);
        event.reference = Some(reference.to_string());
        if let Reference::Digest(d) = reference {
            event.digest = Some(d.to_string());
        }
        let audited = self.audited(event);
        let hook = move |(): &()| Some(audited.clone());
        let deleted = match reference {
            Reference::Digest(d) => {
                self.meta_write(|m| m.delete_manifest(repo, d, protected).audited(hook))
                    .await
            }
            Reference::Tag(t) => {
                self.meta_write(|m| m.delete_tag(repo, t, protected).audited(hook))
                    .await
            }
        };
        deleted.map_err(|e| immutable(e, &policies, repo))?;
        if let Reference::Digest(_) = reference {
            crate::crashpoint::hit("delete.after_commit");
        }
        Ok(())
    }

    /// Replace the policies (a configuration reload); requests under way keep the old ones.
    pub fn set_policies(&self, policies: Policies) {
        self.policies.set(policies);
    }
}

/// Name the rule behind a refusal to move or delete an immutable tag.
fn immutable(e: Error, policies: &Policies, repo: &RepoName) -> Error {
    match e {
        Error::TagImmutable { tag, .. } => {
            let rule = policies
                .immutable_rule(repo.as_str(), &tag)
                .unwrap_or("a rule now removed")
                .to_owned();
            Error::TagImmutable {
                repo: repo.to_string(),
                tag,
                rule,
            }
        }
        other => other,
    }
}

pub(super) fn manifest_row(parsed: &ParsedManifest, body: Bytes) -> ManifestRow {
    ManifestRow {
        media_type: parsed.media_type.clone(),
        body: body.into(),
        subject: parsed.subject.as_ref().map(|s| s.digest.to_string()),
        created_ms: now_ms(),
    }
}

/// What a manifest references: the one computation behind the rows a manifest PUT records and
/// fsck's check of them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct References {
    /// Required blobs (config and distributable layers) with their declared sizes, as listed.
    pub declared: Vec<(Digest, u64)>,
    /// The same digests, sorted and deduplicated: what the `manifest_refs` row lists.
    pub blobs: Vec<String>,
    /// Child manifests of an index.
    pub children: Vec<Digest>,
    pub subject: Option<String>,
    /// The descriptor listed under the subject, when there is one.
    pub referrer: Option<ReferrerRow>,
}

pub(crate) fn references(parsed: &ParsedManifest, body_len: u64) -> References {
    let declared: Vec<(Digest, u64)> = parsed.required_blobs().map(|d| (d.digest.clone(), d.size)).collect();
    let mut blobs: Vec<String> = declared.iter().map(|(d, _)| d.to_string()).collect();
    blobs.sort_unstable();
    blobs.dedup();
    let children = match parsed.kind {
        ManifestKind::Index => parsed.manifests.iter().map(|d| d.digest.clone()).collect(),
        ManifestKind::Image => Vec::new(),
    };
    let subject = parsed.subject.as_ref().map(|s| s.digest.to_string());
    let referrer = subject.as_ref().map(|_| ReferrerRow {
        media_type: parsed.media_type.clone(),
        size: body_len,
        artifact_type: parsed.referrer_artifact_type(),
        annotations: parsed.annotations.clone(),
    });
    References {
        declared,
        blobs,
        children,
        subject,
        referrer,
    }
}

pub(super) fn new_manifest(
    repo: RepoName,
    digest: Digest,
    tags: Vec<Tag>,
    parsed: &ParsedManifest,
    row: ManifestRow,
) -> NewManifest {
    let refs = references(parsed, row.body.len() as u64);
    NewManifest {
        repo,
        digest,
        row,
        blobs: refs.declared,
        children: refs.children,
        referrer: refs.referrer,
        tags,
        sparse: false,
        protected: crate::meta::Protected::default(),
        quotas: Vec::new(),
    }
}
