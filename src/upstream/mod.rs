//! A client of another registry (an upstream): what the pull-through cache (`registry::proxy`)
//! fetches through. Knows HTTP and the distribution API's read side (manifests, blobs, tags)
//! with its two login schemes (Basic, and the Docker Bearer token flow), and nothing of the
//! metadata store or the blob store.
//!
//! Credentials never leave this module in a message: errors name the upstream by its URL and
//! say what failed, never with what.

use std::time::Duration;

/// One configured upstream (`proxy:` in the config file): where it is, how to log in, and the
/// cache policy for what comes from it.
#[derive(Clone, PartialEq)]
pub struct Settings {
    /// Repositories named `<prefix>/<name>` are served from the upstream's `<name>`.
    pub prefix: String,
    /// `scheme://host[:port]`, no trailing slash.
    pub url: String,
    /// The `ns` query value (sent by containerd to mirrors) that selects this upstream for a
    /// request whose name carries no prefix: by default the URL's host, `docker.io` for Docker
    /// Hub's `registry-1.docker.io`.
    pub namespace: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// How long a tag's resolution is trusted before the upstream is asked again.
    pub tag_ttl: Duration,
    /// Cache size past which garbage collection evicts the least recently pulled images.
    pub max_bytes: Option<u64>,
    /// Keep serving cached tags (with a `Warning` header) while the upstream fails.
    pub serve_stale: bool,
    /// Also serve pulls of names outside every prefix that the registry does not hold, as
    /// `<prefix>/<name>`: what Docker's `registry-mirrors` sends (Docker Hub names, no
    /// prefix). At most one entry sets it.
    pub serve_unprefixed: bool,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("prefix", &self.prefix)
            .field("url", &self.url)
            .field("namespace", &self.namespace)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tag_ttl", &self.tag_ttl)
            .field("max_bytes", &self.max_bytes)
            .field("serve_stale", &self.serve_stale)
            .field("serve_unprefixed", &self.serve_unprefixed)
            .finish()
    }
}

mod auth;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use crate::oci::{Digest, media};

/// Every manifest type the cache stores, asked for on each manifest request: the upstream
/// answers with what it holds, which is then kept byte for byte.
const MANIFEST_ACCEPT: &str = concat!(
    "application/vnd.oci.image.index.v1+json, ",
    "application/vnd.oci.image.manifest.v1+json, ",
    "application/vnd.docker.distribution.manifest.list.v2+json, ",
    "application/vnd.docker.distribution.manifest.v2+json"
);

/// The largest tag list read from an upstream (Docker Hub's biggest run to a few hundred KiB).
const TAG_LIST_MAX: u64 = 16 << 20;

/// Why an upstream request failed. Messages name the upstream by its URL and never carry
/// credentials.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream answered 404: it has no such manifest, blob or repository.
    #[error("not found upstream")]
    NotFound,
    /// It could not be reached, failed (5xx, 429, a broken body) or refused our login.
    #[error("{0}")]
    Unavailable(String),
}

/// A manifest as the upstream served it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub media_type: String,
    /// `Docker-Content-Digest`, when the upstream sent a valid one.
    pub digest: Option<Digest>,
    pub body: Bytes,
}

/// What a manifest HEAD told.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    pub digest: Option<Digest>,
}

/// A blob body coming from the upstream.
pub struct FetchedBlob {
    /// `Content-Length`, when sent.
    pub size: Option<u64>,
    pub body: crate::blobs::Body<'static>,
}

impl std::fmt::Debug for FetchedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedBlob")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A client of one upstream registry.
#[derive(Debug)]
pub struct Upstream {
    settings: Settings,
    client: reqwest::Client,
    auth: auth::Login,
}

impl Upstream {
    pub fn new(settings: Settings) -> Result<Self, UpstreamError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION"), " (pull-through cache)"))
            .build()
            .map_err(|e| UpstreamError::Unavailable(format!("cannot build an HTTP client: {e}")))?;
        let auth = auth::Login::new(settings.username.clone(), settings.password.clone());
        Ok(Upstream { settings, client, auth })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// `GET /v2/<repo>/manifests/<reference>`, the body read up to `max_bytes`.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
        max_bytes: u64,
    ) -> Result<FetchedManifest, UpstreamError> {
        let path = format!("{repo}/manifests/{reference}");
        let response = self.send(Method::GET, &path, repo, Some(MANIFEST_ACCEPT)).await?;
        let media_type = header(&response, CONTENT_TYPE.as_str())
            .unwrap_or(media::OCI_MANIFEST)
            .to_owned();
        let media_type = media_type.split(';').next().unwrap_or_default().trim().to_owned();
        let digest = content_digest(&response);
        let body = self.read_limited(response, max_bytes).await?;
        Ok(FetchedManifest {
            media_type,
            digest,
            body,
        })
    }

    /// `HEAD /v2/<repo>/manifests/<reference>`: what a tag points at now, without the body.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<ManifestHead, UpstreamError> {
        let path = format!("{repo}/manifests/{reference}");
        let response = self.send(Method::HEAD, &path, repo, Some(MANIFEST_ACCEPT)).await?;
        Ok(ManifestHead {
            digest: content_digest(&response),
        })
    }

    /// `GET /v2/<repo>/tags/list` after `last`, at most `n`: the tags, and whether the upstream
    /// says more follow (a `Link` header).
    pub async fn tags(
        &self,
        repo: &str,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<(Vec<String>, bool), UpstreamError> {
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(n) = n {
                query.append_pair("n", &n.to_string());
            }
            if let Some(last) = last {
                query.append_pair("last", last);
            }
            query.finish()
        };
        let path = if query.is_empty() {
            format!("{repo}/tags/list")
        } else {
            format!("{repo}/tags/list?{query}")
        };
        let response = self.send(Method::GET, &path, repo, None).await?;
        let more = response.headers().contains_key(reqwest::header::LINK);
        let body = self.read_limited(response, TAG_LIST_MAX).await?;
        let listed: TagList = serde_json::from_slice(&body)
            .map_err(|e| self.failed(&format!("sent a tag list that is not JSON ({e})")))?;
        Ok((listed.tags.unwrap_or_default(), more))
    }

    /// `HEAD /v2/<repo>/blobs/<digest>`: the blob's size.
    pub async fn blob_size(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, UpstreamError> {
        let path = format!("{repo}/blobs/{digest}");
        let response = self.send(Method::HEAD, &path, repo, None).await?;
        Ok(header(&response, CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok()))
    }

    /// `GET /v2/<repo>/blobs/<digest>`, following redirects (to a CDN, say) without our
    /// credentials.
    pub async fn blob(&self, repo: &str, digest: &Digest) -> Result<FetchedBlob, UpstreamError> {
        let path = format!("{repo}/blobs/{digest}");
        let response = self.send(Method::GET, &path, repo, None).await?;
        let size = response.content_length();
        let url = self.settings.url.clone();
        let body = response
            .bytes_stream()
            .map(move |chunk| chunk.map_err(|e| format!("reading from upstream {url}: {e}")));
        Ok(FetchedBlob {
            size,
            body: Box::pin(body),
        })
    }

    /// Send a request, logging in once if the upstream asks for it, and sort the answer: a
    /// success is returned, 404 is `NotFound`, everything else `Unavailable`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        repo: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = format!("{}/v2/{path}", self.settings.url);
        let mut challenged = false;
        loop {
            let mut request = self.client.request(method.clone(), &url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            let request = self.auth.authorize(request, repo);
            let response = request.send().await.map_err(|e| self.unreachable(&e))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = header(&response, "www-authenticate").unwrap_or_default().to_owned();
                self.auth
                    .login(&self.client, &challenge, repo)
                    .await
                    .map_err(|why| self.failed(&why))?;
                continue;
            }
            return match status {
                s if s.is_success() => Ok(response),
                StatusCode::NOT_FOUND => Err(UpstreamError::NotFound),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(self.failed(&format!(
                    "refused access to {repo} ({status}); check the proxy's username and password"
                ))),
                StatusCode::TOO_MANY_REQUESTS => Err(self.failed("is rate limiting this registry (429)")),
                other => Err(self.failed(&format!("answered {other}"))),
            };
        }
    }

    async fn read_limited(&self, response: reqwest::Response, max_bytes: u64) -> Result<Bytes, UpstreamError> {
        if response.content_length().is_some_and(|n| n > max_bytes) {
            return Err(self.failed(&format!("sent a body over the limit of {max_bytes} bytes")));
        }
        let mut stream = response.bytes_stream();
        let mut body = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.unreachable(&e))?;
            if (body.len() + chunk.len()) as u64 > max_bytes {
                return Err(self.failed(&format!("sent a body over the limit of {max_bytes} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    fn unreachable(&self, e: &reqwest::Error) -> UpstreamError {
        // reqwest's message names the URL, which carries no credentials (the config refuses
        // userinfo in it); the source chain says why (refused, timed out, TLS).
        let mut why = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            why = format!("{why}: {s}");
            source = s.source();
        }
        UpstreamError::Unavailable(format!("upstream {} is unreachable: {why}", self.settings.url))
    }

    fn failed(&self, what: &str) -> UpstreamError {
        UpstreamError::Unavailable(format!("upstream {} {what}", self.settings.url))
    }
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn content_digest(response: &reqwest::Response) -> Option<Digest> {
    header(response, "docker-content-digest").and_then(|d| Digest::parse(d.trim()).ok())
}
