//! What the pages show of a manifest and of an image config, read from their JSON. Pure: the
//! bytes come from `registry`. Anything a manifest carries is kept as text here and escaped
//! by the templates (`views`), never trusted as markup.
//!
//! A body that does not parse as expected (it was validated at push, but an image config is
//! any blob) yields empty fields rather than an error: a page shows what it can.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Index children buildx adds for attestations carry this annotation.
const REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// A descriptor as a manifest lists it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub artifact_type: Option<String>,
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) if !v.is_empty() => write!(f, "/{v}"),
            _ => Ok(()),
        }
    }
}

impl Descriptor {
    /// An index child that is an attestation rather than an image of a platform.
    pub fn is_attestation(&self) -> bool {
        self.annotations.contains_key(REFERENCE_TYPE) || self.platform.as_ref().is_some_and(|p| p.os == "unknown")
    }
}

/// The fields of a manifest or index the pages show.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestView {
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl ManifestView {
    pub fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// An index (or manifest list): children rather than layers.
    pub fn is_index(&self) -> bool {
        self.config.is_none() && !self.manifests.is_empty()
    }

    /// Bytes an image pulls: its config and layers (an index's are its children's).
    pub fn image_size(&self) -> u64 {
        self.config.iter().chain(&self.layers).map(|d| d.size).sum()
    }

    /// The platforms of an index's images, attestations left out.
    pub fn platforms(&self) -> Vec<String> {
        self.manifests
            .iter()
            .filter(|d| !d.is_attestation())
            .filter_map(|d| d.platform.as_ref().map(ToString::to_string))
            .collect()
    }
}

/// What an image config says about the image (`docker inspect`, `docker history`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub platform: String,
    pub created: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub history: Vec<History>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct History {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub empty_layer: bool,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
    created: Option<String>,
    config: Option<RunConfig>,
    #[serde(default)]
    history: Vec<History>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
    working_dir: Option<String>,
    user: Option<String>,
}

impl ImageConfig {
    /// The image config in `body`, if it is one.
    pub fn parse(body: &[u8]) -> Option<Self> {
        let raw: RawConfig = serde_json::from_slice(body).ok()?;
        let platform = Platform {
            os: raw.os,
            architecture: raw.architecture,
            variant: raw.variant,
        };
        let run = raw.config;
        let (mut entrypoint, mut cmd, mut env, mut labels, mut working_dir, mut user) = Default::default();
        if let Some(run) = run {
            entrypoint = run.entrypoint.unwrap_or_default();
            cmd = run.cmd.unwrap_or_default();
            env = run.env.unwrap_or_default();
            labels = run.labels.unwrap_or_default();
            working_dir = run.working_dir.filter(|w| !w.is_empty());
            user = run.user.filter(|u| !u.is_empty());
        }
        Some(ImageConfig {
            platform: platform.to_string(),
            created: raw.created,
            entrypoint,
            cmd,
            env,
            labels,
            working_dir,
            user,
            history: raw.history,
        })
    }
}

/// `body` pretty-printed when it is JSON, else as it is (lossily, as UTF-8).
pub fn pretty_json(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// A byte count as people read it: `0 B`, `1.5 KiB`, `12.3 MiB`.
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// Milliseconds since the epoch as an RFC 3339 time to the second, or `-` for 0 (unknown).
pub fn human_time(ms: u64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_lists_platforms_without_attestations() {
        let index = br#"{"schemaVersion":2,"manifests":[
            {"mediaType":"m","digest":"sha256:1","size":10,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"mediaType":"m","digest":"sha256:2","size":10,"platform":{"os":"linux","architecture":"amd64"}},
            {"mediaType":"m","digest":"sha256:3","size":10,"platform":{"os":"unknown","architecture":"unknown"}}]}"#;
        let m = ManifestView::parse(index);
        assert!(m.is_index());
        assert_eq!(m.platforms(), ["linux/arm64/v8", "linux/amd64"]);
    }

    #[test]
    fn an_image_sums_config_and_layers() {
        let image = br#"{"config":{"mediaType":"c","digest":"sha256:c","size":5},
            "layers":[{"mediaType":"l","digest":"sha256:a","size":100},{"mediaType":"l","digest":"sha256:b","size":20}]}"#;
        let m = ManifestView::parse(image);
        assert!(!m.is_index());
        assert_eq!(m.image_size(), 125);
        assert_eq!(ManifestView::parse(b"not json").image_size(), 0);
    }

    #[test]
    fn an_image_config_gives_its_run_settings_and_history() {
        let config = br#"{"os":"linux","architecture":"arm","variant":"v7","created":"2024-01-01T00:00:00Z",
            "config":{"Entrypoint":["/bin/app"],"Cmd":null,"Env":["A=1"],"Labels":{"k":"<b>"},"WorkingDir":""},
            "history":[{"created_by":"COPY app /bin/app"},{"created_by":"ENV A=1","empty_layer":true}]}"#;
        let c = ImageConfig::parse(config).unwrap();
        assert_eq!(c.platform, "linux/arm/v7");
        assert_eq!(c.entrypoint, ["/bin/app"]);
        assert!(c.cmd.is_empty() && c.working_dir.is_none());
        assert_eq!(c.labels["k"], "<b>");
        assert_eq!(c.history.len(), 2);
        assert!(c.history[1].empty_layer);
        assert!(ImageConfig::parse(b"[1]").is_none());
    }

    #[test]
    fn sizes_and_times_read_as_people_read_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_time(0), "-");
        assert_eq!(human_time(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert_eq!(pretty_json(br#"{"a":1}"#), "{\n  \"a\": 1\n}");
    }
}
