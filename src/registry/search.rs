//! Search: the repositories whose names contain a term (`docker search`, and the catalog's `q`),
//! and the description of each result.
//!
//! Names are matched as the catalog lists them, in lexical order, reading no more of the
//! catalog than it takes to fill the page. A description is computed only for the results
//! returned, and costs at most two manifest reads (an index and one of its images) and one read
//! of an image config no larger than `CONFIG_MAX_BYTES`. It never fetches anything from a
//! pull-through cache's upstream: a config not stored yet gives no description.

use futures_util::StreamExt;
use serde::Deserialize;
use std::collections::BTreeMap;

use super::{Error, Registry};
use crate::oci::{Digest, RepoName};

/// The annotation (on a manifest) and label (in an image config) a description comes from.
pub const DESCRIPTION_KEY: &str = "org.opencontainers.image.description";
/// Image configs larger than this are not read for a description.
pub const CONFIG_MAX_BYTES: u64 = 64 * 1024;
/// Descriptions are cut to this many bytes (at a character boundary).
pub const DESCRIPTION_MAX_BYTES: usize = 1024;
/// Descriptions read at once for one page of results.
const CONCURRENT_DESCRIPTIONS: usize = 8;

/// A search term. Repository names are lowercase, so the term is lowercased once and matched
/// as a substring: the search is case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerm(String);

impl SearchTerm {
    pub fn new(term: &str) -> Self {
        SearchTerm(term.to_lowercase())
    }

    pub fn matches(&self, name: &str) -> bool {
        name.contains(self.0.as_str())
    }
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub description: Option<String>,
}

impl Registry {
    /// The first `n` repositories, in lexical order, whose names match `term` and that
    /// `visible` keeps, each with its description.
    pub async fn search(
        &self,
        term: SearchTerm,
        n: usize,
        visible: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<Vec<Found>, Error> {
        let page = self
            .catalog_visible(None, n, move |name| term.matches(name) && visible(name))
            .await?;
        let found = futures_util::stream::iter(page.items)
            .map(|name| async move {
                let description = self.description(&name).await;
                Found { name, description }
            })
            .buffered(CONCURRENT_DESCRIPTIONS)
            .collect()
            .await;
        Ok(found)
    }

    /// The description of `repo`: the `org.opencontainers.image.description` annotation of its
    /// newest tagged manifest (for an index without one, of its first image), else that label
    /// in the image's config. A description that cannot be read is left out and logged: it
    /// never fails a search.
    pub async fn description(&self, repo: &str) -> Option<String> {
        match self.read_description(repo).await {
            Ok(description) => description.map(truncate),
            Err(e) => {
                tracing::warn!(%repo, error = %e, "could not read a repository's description");
                None
            }
        }
    }

    async fn read_description(&self, repo: &str) -> Result<Option<String>, Error> {
        let repo = RepoName::parse(repo)?;
        let Some((_, row)) = self.meta.newest_tagged_manifest(&repo).await? else {
            return Ok(None);
        };
        let mut shape = Shape::parse(&row.body);
        if shape.description().is_none()
            && shape.config.is_none()
            && let Some(child) = shape.first_image()
            && let Some(row) = self.meta.manifest(&repo, &child).await?
        {
            shape = Shape::parse(&row.body);
        }
        if let Some(description) = shape.description() {
            return Ok(Some(description));
        }
        match &shape.config {
            Some(config) => self.config_label(&repo, config).await,
            None => Ok(None),
        }
    }

    /// The description label of the image config `config`, when it is stored in `repo` and
    /// small enough to read.
    async fn config_label(&self, repo: &RepoName, config: &Descriptor) -> Result<Option<String>, Error> {
        let Ok(digest) = Digest::parse(&config.digest) else {
            return Ok(None);
        };
        let Some(body) = self.read_small_blob(repo, &digest, CONFIG_MAX_BYTES).await? else {
            return Ok(None);
        };
        Ok(config_description(&body))
    }
}

/// What a description is looked for in, of a manifest or an index; anything else is ignored,
/// and a body that does not parse (it was validated when pushed) has none.
#[derive(Debug, Default, Deserialize)]
struct Shape {
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    config: Option<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct Descriptor {
    digest: String,
    platform: Option<Platform>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
}

impl Shape {
    fn parse(body: &[u8]) -> Shape {
        serde_json::from_slice(body).unwrap_or_default()
    }

    fn description(&self) -> Option<String> {
        self.annotations.get(DESCRIPTION_KEY).filter(|d| !d.is_empty()).cloned()
    }

    /// The first child of an index that is an image rather than an attestation (which
    /// buildx lists with the platform `unknown/unknown` and a `vnd.docker.reference.type`).
    fn first_image(&self) -> Option<Digest> {
        self.manifests
            .iter()
            .filter(|d| !d.annotations.contains_key("vnd.docker.reference.type"))
            .find(|d| d.platform.as_ref().is_none_or(|p| p.os != "unknown"))
            .and_then(|d| Digest::parse(&d.digest).ok())
    }
}

/// The description label of an image config (`config.Labels`).
fn config_description(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct ImageConfig {
        config: Option<RunConfig>,
    }
    #[derive(Deserialize)]
    struct RunConfig {
        #[serde(rename = "Labels")]
        labels: Option<BTreeMap<String, String>>,
    }
    let parsed: ImageConfig = serde_json::from_slice(body).ok()?;
    parsed.config?.labels?.remove(DESCRIPTION_KEY).filter(|d| !d.is_empty())
}

/// `description` cut to at most `DESCRIPTION_MAX_BYTES`, at a character boundary.
fn truncate(mut description: String) -> String {
    if description.len() > DESCRIPTION_MAX_BYTES {
        let mut end = DESCRIPTION_MAX_BYTES;
        while !description.is_char_boundary(end) {
            end -= 1;
        }
        description.truncate(end);
    }
    description
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn terms_match_case_insensitively_as_substrings() {
        let t = SearchTerm::new("App");
        assert!(t.matches("team/app") && t.matches("my-apple"));
        assert!(!t.matches("ap/p"));
        assert!(SearchTerm::new("").matches("anything"));
    }

    #[test]
    fn an_index_leads_to_its_first_image_past_attestations() {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[
                {{"mediaType":"m","digest":"{D}","size":1,"platform":{{"architecture":"unknown","os":"unknown"}}}},
                {{"mediaType":"m","digest":"sha256:{}","size":1,"annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}},
                {{"mediaType":"m","digest":"sha256:{}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
            "1".repeat(64),
            "2".repeat(64)
        );
        let shape = Shape::parse(index.as_bytes());
        assert_eq!(
            shape.first_image().unwrap().as_str(),
            format!("sha256:{}", "2".repeat(64))
        );
        assert_eq!(shape.description(), None);
    }

    #[test]
    fn descriptions_come_from_annotations_and_labels() {
        let m = br#"{"annotations":{"org.opencontainers.image.description":"hello"},"config":{"digest":"x"}}"#;
        assert_eq!(Shape::parse(m).description().as_deref(), Some("hello"));
        assert_eq!(Shape::parse(b"not json").description(), None);
        let config = br#"{"config":{"Labels":{"org.opencontainers.image.description":"from a label"}}}"#;
        assert_eq!(config_description(config).as_deref(), Some("from a label"));
        assert_eq!(config_description(br#"{"config":{"Labels":null}}"#), None);
        assert_eq!(config_description(br#"{"config":{}}"#), None);
    }

    #[test]
    fn long_descriptions_are_cut_at_a_character_boundary() {
        let long = "é".repeat(DESCRIPTION_MAX_BYTES);
        let cut = truncate(long);
        assert!(cut.len() <= DESCRIPTION_MAX_BYTES && cut.len() > DESCRIPTION_MAX_BYTES - 2);
        assert_eq!(truncate("short".into()), "short");
    }
}
