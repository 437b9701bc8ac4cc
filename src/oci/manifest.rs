//! Manifest parsing: OCI image manifests and indexes, Docker schema2 manifests and manifest
//! lists, and artifacts (an OCI manifest with `artifactType`). The bytes themselves are stored
//! verbatim elsewhere; this module only extracts what the registry must check and index:
//! the media type, the descriptors it references, its `subject` and its artifact type.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::digest::{Digest, DigestError};

/// Media types Berth knows by name.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const OCTET_STREAM: &str = "application/octet-stream";
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest schemaVersion must be 2")]
    SchemaVersion,
    #[error("Docker schema1 manifests are not supported; push a schema2 or OCI manifest")]
    Schema1,
    #[error("unsupported manifest media type {0:?}")]
    UnknownMediaType(String),
    #[error("Content-Type {header:?} does not match the manifest's mediaType {body:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("an image manifest needs a config descriptor")]
    MissingConfig,
    #[error("an index needs a manifests array")]
    MissingManifests,
    #[error("descriptor digest {digest:?}: {source}")]
    Digest { digest: String, source: DigestError },
}

/// A content descriptor, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// True for foreign or non-distributable layers, which need not exist in the registry.
    pub external: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image manifest or artifact: one config and layers (blobs).
    Image,
    /// An index or manifest list: child manifests.
    Index,
}

/// What the registry needs to know about a manifest.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: ManifestKind,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl ParsedManifest {
    /// Blobs that must exist in the repository for this manifest to be accepted.
    pub fn required_blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.config.iter().chain(&self.layers).filter(|d| !d.external)
    }

    /// The artifact type a referrers listing reports: `artifactType`, else (when it is missing
    /// or empty) the config's media type, or none for an index (distribution-spec, "Listing
    /// Referrers").
    pub fn referrer_artifact_type(&self) -> Option<String> {
        self.artifact_type
            .clone()
            .filter(|t| !t.is_empty())
            .or_else(|| self.config.as_ref().map(|c| c.media_type.clone()))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    urls: Vec<String>,
}

impl RawDescriptor {
    fn validate(self) -> Result<Descriptor, ManifestError> {
        let digest = Digest::parse(&self.digest).map_err(|source| ManifestError::Digest {
            digest: self.digest.chars().take(140).collect(),
            source,
        })?;
        let mt = self.media_type.as_str();
        let external = !self.urls.is_empty() || mt.contains(".foreign.") || mt.contains(".nondistributable.");
        Ok(Descriptor {
            media_type: self.media_type,
            digest,
            size: self.size,
            external,
        })
    }
}

fn is_manifest_type(mt: &str) -> bool {
    matches!(
        mt,
        media::OCI_MANIFEST | media::OCI_INDEX | media::DOCKER_MANIFEST | media::DOCKER_LIST
    )
}

/// Parse a manifest body. `content_type` is the request's `Content-Type`, if any; it decides the
/// media type when it names a manifest type, and must then agree with the body's `mediaType`.
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ParsedManifest, ManifestError> {
    // JSON is UTF-8 (RFC 8259). serde_json skips the fields Berth ignores without looking
    // inside their strings, so check the whole text here: a client must be able to parse
    // what Berth stores.
    std::str::from_utf8(bytes).map_err(|e| ManifestError::Json(format!("not UTF-8: {e}")))?;
    let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    let header = content_type.map(|c| c.split(';').next().unwrap_or("").trim());
    if matches!(header, Some(media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED)) || raw.schema_version == Some(1) {
        return Err(ManifestError::Schema1);
    }
    if raw.schema_version != Some(2) {
        return Err(ManifestError::SchemaVersion);
    }
    let has_manifests = raw.manifests.is_some();
    let media_type = resolve_media_type(header, raw.media_type.as_deref(), has_manifests)?;
    let kind = if matches!(media_type.as_str(), media::OCI_INDEX | media::DOCKER_LIST) {
        ManifestKind::Index
    } else {
        ManifestKind::Image
    };
    let all = |v: Option<Vec<RawDescriptor>>| -> Result<Vec<_>, _> {
        v.unwrap_or_default().into_iter().map(RawDescriptor::validate).collect()
    };
    let parsed = ParsedManifest {
        config: raw.config.map(RawDescriptor::validate).transpose()?,
        layers: all(raw.layers)?,
        manifests: all(raw.manifests)?,
        subject: raw.subject.map(RawDescriptor::validate).transpose()?,
        artifact_type: raw.artifact_type,
        annotations: raw.annotations,
        media_type,
        kind,
    };
    match kind {
        ManifestKind::Image if parsed.config.is_none() => Err(ManifestError::MissingConfig),
        ManifestKind::Index if !has_manifests => Err(ManifestError::MissingManifests),
        _ => Ok(parsed),
    }
}

/// The header wins when it names a manifest type; the body's `mediaType`, when present, must
/// agree with it. With neither, the shape decides (a `manifests` array means an OCI index).
fn resolve_media_type(header: Option<&str>, body: Option<&str>, has_manifests: bool) -> Result<String, ManifestError> {
    let header = header.filter(|h| is_manifest_type(h));
    match (header, body) {
        (Some(h), Some(b)) if h != b => Err(ManifestError::MediaTypeMismatch {
            header: h.to_owned(),
            body: b.chars().take(100).collect(),
        }),
        (_, Some(b)) if !is_manifest_type(b) => Err(ManifestError::UnknownMediaType(b.chars().take(100).collect())),
        (Some(h), _) => Ok(h.to_owned()),
        (None, Some(b)) => Ok(b.to_owned()),
        (None, None) if has_manifests => Ok(media::OCI_INDEX.to_owned()),
        (None, None) => Ok(media::OCI_MANIFEST.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"a/b","digest":"{D}","size":0}},
               "layers":[{{"mediaType":"l","digest":"{D}","size":0}},
                         {{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"{D}","size":1,"urls":["http://x"]}}]{extra}}}"#,
            media::OCI_MANIFEST
        )
    }

    #[test]
    fn image_manifest() {
        let m = parse(image("").as_bytes(), None).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.required_blobs().count(), 2, "config and one distributable layer");
        assert_eq!(m.referrer_artifact_type().as_deref(), Some("a/b"));
    }

    #[test]
    fn artifact_with_subject() {
        let extra = format!(
            r#","artifactType":"x/sig","subject":{{"mediaType":"{}","digest":"{D}","size":3}}"#,
            media::OCI_MANIFEST
        );
        let m = parse(image(&extra).as_bytes(), Some(media::OCI_MANIFEST)).unwrap();
        assert_eq!(m.subject.unwrap().size, 3);
        assert_eq!(m.artifact_type.as_deref(), Some("x/sig"));
    }

    #[test]
    fn index_without_media_type() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{D}","size":1}}]}}"#,
            media::OCI_MANIFEST
        );
        let m = parse(body.as_bytes(), None).unwrap();
        assert_eq!((m.kind, m.media_type.as_str()), (ManifestKind::Index, media::OCI_INDEX));
    }

    #[test]
    fn rejects() {
        assert!(matches!(parse(b"{", None), Err(ManifestError::Json(_))));
        assert!(matches!(
            parse(br#"{"schemaVersion":1}"#, None),
            Err(ManifestError::Schema1)
        ));
        assert!(matches!(
            parse(image("").as_bytes(), Some(media::OCI_INDEX)),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        let neg = image("").replace(r#""size":0},"#, r#""size":-1},"#);
        assert_ne!(neg, image(""));
        assert!(parse(neg.as_bytes(), None).is_err());
        let bad = image("").replacen(D, "sha256:zz", 1);
        assert!(matches!(parse(bad.as_bytes(), None), Err(ManifestError::Digest { .. })));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(deep.as_bytes(), None).is_err());
    }

    /// Found by the `manifest` fuzz target: a manifest whose unknown field held a string with
    /// invalid UTF-8 (`"#onfig":[{"digest":"sha256:00\xd0\xcf..."}]`) was accepted, because
    /// `serde_json` does not validate strings it skips, and would have been stored as JSON no
    /// client can parse. The whole body is now checked to be UTF-8 first.
    #[test]
    fn invalid_utf8_anywhere_is_refused() {
        let mut body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a","digest":"sha256:"#.to_vec();
        body.extend_from_slice(&[b'0'; 64]);
        body.extend_from_slice(br#"","size":2},"ignored":""#);
        body.extend_from_slice(&[0xd0, 0xcf, 0xcf, 0xd5]);
        body.extend_from_slice(br#""}"#);
        assert!(matches!(parse(&body, None), Err(ManifestError::Json(m)) if m.contains("UTF-8")));
        let len = body.len();
        body[len - 6..len - 2].copy_from_slice(b"okay");
        assert!(parse(&body, None).is_ok());
    }
}
