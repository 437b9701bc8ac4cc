//! Request routing. OCI repository names contain `/`, so axum routes every `/v2/...` path to
//! one handler and this parser reads the raw (still percent-encoded) path right to left into
//! an `Endpoint`. Nothing is percent-decoded: a `%` can never form a valid name, tag or digest,
//! so `%2e%2e` and friends are refused as invalid names rather than decoded into `..`. The two
//! paths of the Docker registry API v1 that `docker search` uses, `/v1/_ping` and `/v1/search`,
//! are endpoints too.

use crate::oci::{Digest, DigestError, NameError, Reference, RepoName};

/// Every endpoint of the distribution API, with its path parameters parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags { name: RepoName },
    /// `/v2/<name>/manifests/<reference>`
    Manifest { name: RepoName, reference: Reference },
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: RepoName, digest: Digest },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart { name: RepoName },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload { name: RepoName, id: String },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: RepoName, digest: Digest },
    /// `/v1/_ping`: the Docker engine's probe before a search.
    Ping,
    /// `/v1/search`: `docker search`.
    Search,
}

impl Endpoint {
    /// The methods this endpoint answers, for the `Allow` header of a 405 (RFC 9110 15.5.6).
    pub fn allow(&self) -> &'static str {
        match self {
            Endpoint::Base | Endpoint::Ping => "GET, HEAD",
            Endpoint::Catalog | Endpoint::Tags { .. } | Endpoint::Referrers { .. } | Endpoint::Search => "GET",
            Endpoint::Manifest { .. } => "GET, HEAD, PUT, DELETE",
            Endpoint::Blob { .. } => "GET, HEAD, DELETE",
            Endpoint::UploadStart { .. } => "POST",
            Endpoint::Upload { .. } => "GET, PATCH, PUT, DELETE",
        }
    }
}

impl Endpoint {
    /// Whether the endpoint is about one repository (the others are about the registry).
    pub fn names_a_repository(&self) -> bool {
        !matches!(
            self,
            Endpoint::Base | Endpoint::Catalog | Endpoint::Ping | Endpoint::Search
        )
    }

    /// The same endpoint for the repository `<prefix>/<name>` (a mirror request whose `ns`
    /// selects a pull-through cache). Endpoints without a repository stay as they are.
    pub fn under_prefix(self, prefix: &str) -> Result<Endpoint, RouteError> {
        let put = |name: RepoName| RepoName::parse(&format!("{prefix}/{name}"));
        Ok(match self {
            Endpoint::Base | Endpoint::Catalog | Endpoint::Ping | Endpoint::Search => self,
            Endpoint::Tags { name } => Endpoint::Tags { name: put(name)? },
            Endpoint::Manifest { name, reference } => Endpoint::Manifest {
                name: put(name)?,
                reference,
            },
            Endpoint::Blob { name, digest } => Endpoint::Blob {
                name: put(name)?,
                digest,
            },
            Endpoint::UploadStart { name } => Endpoint::UploadStart { name: put(name)? },
            Endpoint::Upload { name, id } => Endpoint::Upload { name: put(name)?, id },
            Endpoint::Referrers { name, digest } => Endpoint::Referrers {
                name: put(name)?,
                digest,
            },
        })
    }
}

/// Why a path did not route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("no such endpoint")]
    NotFound,
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// An upload id that is not a UUID: no such session can exist.
    #[error("blob upload unknown to registry")]
    UploadUnknown,
}

/// Parse a request path (as sent, before any decoding).
pub fn parse(path: &str) -> Result<Endpoint, RouteError> {
    let rest = match path {
        "/v2" | "/v2/" => return Ok(Endpoint::Base),
        "/v1/_ping" => return Ok(Endpoint::Ping),
        "/v1/search" => return Ok(Endpoint::Search),
        _ => path.strip_prefix("/v2/").ok_or(RouteError::NotFound)?,
    };
    if rest == "_catalog" {
        return Ok(Endpoint::Catalog);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name_of = |k: usize| -> Result<RepoName, RouteError> {
        if k == 0 {
            return Err(RouteError::NotFound);
        }
        Ok(RepoName::parse(
            &rest[..segs[..k].iter().map(|s| s.len() + 1).sum::<usize>() - 1],
        )?)
    };
    let tail = |k: usize| segs.get(n.wrapping_sub(k)).copied();
    match (tail(3), tail(2), tail(1)) {
        (Some("blobs"), Some("uploads"), Some("")) => Ok(Endpoint::UploadStart { name: name_of(n - 3)? }),
        (Some("blobs"), Some("uploads"), Some(id)) => {
            let name = name_of(n - 3)?;
            if uuid::Uuid::try_parse(id).is_err() {
                return Err(RouteError::UploadUnknown);
            }
            Ok(Endpoint::Upload {
                name,
                id: id.to_owned(),
            })
        }
        (_, Some("blobs"), Some("uploads")) => Ok(Endpoint::UploadStart { name: name_of(n - 2)? }),
        (_, Some("tags"), Some("list")) => Ok(Endpoint::Tags { name: name_of(n - 2)? }),
        (_, Some("manifests"), Some(r)) if !r.is_empty() => {
            let name = name_of(n - 2)?;
            Ok(Endpoint::Manifest {
                name,
                reference: Reference::parse(r)?,
            })
        }
        (_, Some("blobs"), Some(d)) if !d.is_empty() => {
            let name = name_of(n - 2)?;
            Ok(Endpoint::Blob {
                name,
                digest: Digest::parse(d)?,
            })
        }
        (_, Some("referrers"), Some(d)) if !d.is_empty() => {
            let name = name_of(n - 2)?;
            Ok(Endpoint::Referrers {
                name,
                digest: Digest::parse(d)?,
            })
        }
        _ => Err(RouteError::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn routes() {
        assert_eq!(parse("/v2/"), Ok(Endpoint::Base));
        assert_eq!(parse("/v2"), Ok(Endpoint::Base));
        assert_eq!(parse("/v2/_catalog"), Ok(Endpoint::Catalog));
        assert_eq!(parse("/v1/_ping"), Ok(Endpoint::Ping));
        assert_eq!(parse("/v1/search"), Ok(Endpoint::Search));
        assert_eq!(parse("/v2/a/b/tags/list"), Ok(Endpoint::Tags { name: name("a/b") }));
        assert_eq!(
            parse("/v2/a/blobs/uploads/"),
            Ok(Endpoint::UploadStart { name: name("a") })
        );
        assert_eq!(
            parse("/v2/a/blobs/uploads"),
            Ok(Endpoint::UploadStart { name: name("a") })
        );
        assert_eq!(parse("/v2/a/blobs/uploads/xyz"), Err(RouteError::UploadUnknown));
        assert_eq!(
            parse("/v2/a/blobs/uploads/0b8a7c3e-1f6d-4f2b-9a54-1c2d3e4f5a6b"),
            Ok(Endpoint::Upload {
                name: name("a"),
                id: "0b8a7c3e-1f6d-4f2b-9a54-1c2d3e4f5a6b".into()
            })
        );
        assert!(matches!(
            parse(&format!("/v2/x/y/blobs/{D}")),
            Ok(Endpoint::Blob { .. })
        ));
        assert!(matches!(
            parse(&format!("/v2/x/referrers/{D}")),
            Ok(Endpoint::Referrers { .. })
        ));
        assert!(matches!(parse("/v2/x/manifests/latest"), Ok(Endpoint::Manifest { .. })));
    }

    #[test]
    fn names_that_look_like_keywords() {
        // A repository may itself be called "blobs/uploads" or "manifests": the tail decides.
        assert_eq!(
            parse("/v2/blobs/uploads/blobs/uploads/"),
            Ok(Endpoint::UploadStart {
                name: name("blobs/uploads")
            })
        );
        assert!(
            matches!(parse("/v2/manifests/manifests/v1"), Ok(Endpoint::Manifest { name: n, .. }) if n.as_str() == "manifests")
        );
        assert_eq!(
            parse("/v2/tags/list/tags/list"),
            Ok(Endpoint::Tags {
                name: name("tags/list")
            })
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(parse("/"), Err(RouteError::NotFound));
        assert_eq!(parse("/v2/foo"), Err(RouteError::NotFound));
        assert_eq!(parse("/v1/"), Err(RouteError::NotFound));
        assert_eq!(parse("/v1/search/x"), Err(RouteError::NotFound));
        assert_eq!(parse("/v2/tags/list"), Err(RouteError::NotFound));
        assert_eq!(parse("/v2/foo/manifests/"), Err(RouteError::NotFound));
        assert!(matches!(parse("/v2/%2e%2e/manifests/x"), Err(RouteError::Name(_))));
        assert!(matches!(parse("/v2/a/../b/manifests/x"), Err(RouteError::Name(_))));
        assert!(matches!(parse("/v2/UP/manifests/x"), Err(RouteError::Name(_))));
        assert!(matches!(parse("/v2/a/blobs/sha256:zz"), Err(RouteError::Digest(_))));
        assert!(matches!(
            parse("/v2/a/manifests/bad:tag"),
            Err(RouteError::Name(NameError::Digest(_)))
        ));
        assert!(matches!(parse("/v2/a/manifests/-bad"), Err(RouteError::Name(_))));
    }

    /// Found by the `route` fuzz target: `/v2/a/blobs/uploads/0\u{1}\0\0\0c3e-...` routed,
    /// carrying control bytes in the upload id as far as the registry (which then failed to
    /// parse it as a UUID, so nothing was reached, but the route promised more than it had
    /// checked). The route now accepts only ids that are UUIDs, and answers the rest as unknown
    /// sessions, which is what they are.
    #[test]
    fn upload_ids_are_uuids_or_unknown() {
        for id in ["0\u{1}\0\0\0c3e-1f6d-4f2b-9a54-,c1d", "..", "%2e%2e", "a b", ""] {
            let path = format!("/v2/a/blobs/uploads/{id}x");
            assert_eq!(parse(&path), Err(RouteError::UploadUnknown), "{path:?}");
        }
    }
}
