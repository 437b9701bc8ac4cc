//! Reading a CNCF Distribution (`registry:2`) filesystem store, without writing to it. Its
//! layout (distribution's `registry/storage/paths.go`), below
//! `<rootdirectory>/docker/registry/v2/`:
//!
//! ```text
//! blobs/<alg>/<h0h1>/<hex>/data                         the bytes of every blob and manifest
//! repositories/<name...>/
//! ├── _manifests/revisions/<alg>/<hex>/link            one per manifest of the repository
//! ├── _manifests/tags/<tag>/current/link               the manifest the tag points at
//! ├── _manifests/tags/<tag>/index/<alg>/<hex>/link     where it pointed before (not read)
//! ├── _layers/<alg>/<hex>/link                         blobs linked into the repository
//! └── _uploads/                                        uploads in progress (not read)
//! ```
//!
//! A link file holds a digest (`sha256:<hex>`). Deleting a manifest removes its revision link
//! file and leaves the directory, so a directory without its link is absent. Repository names
//! nest: a directory is a repository when it holds `_manifests` or `_layers`, and it may hold
//! further repositories.
//!
//! Every name, tag and digest read here is checked with `oci`'s validators before anyone uses
//! it, and every path opened must resolve inside the source tree: a symbolic link out of it is
//! refused. What cannot be read or is invalid is reported as a [`Problem`], never fatal.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::Kind;
use crate::oci::{Algorithm, Digest, RepoName, Tag};

/// Where a Distribution store keeps its data, below its `rootdirectory`.
const V2: &str = "docker/registry/v2";

/// A link file is a digest and a newline; anything longer is not one.
const LINK_MAX: u64 = 256;

/// A Distribution store opened for reading.
#[derive(Debug, Clone)]
pub struct Source {
    /// `<rootdirectory>/docker/registry/v2`, canonical.
    v2: PathBuf,
}

/// Why a directory is not a store that can be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "{0} is not a CNCF Distribution storage directory: expected {0}/{V2} (the registry's \
         rootdirectory, /var/lib/registry by default) or that {V2} directory itself"
    )]
    NotDistribution(String),
    #[error("reading {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// One repository of the source, as its links describe it.
#[derive(Debug, Clone)]
pub struct Repository {
    pub name: RepoName,
    /// Its manifests (revision links).
    pub manifests: Vec<Digest>,
    /// Its tags and the manifest each points at.
    pub tags: Vec<(Tag, Digest)>,
    /// The blobs linked into it (layers and configs).
    pub layers: Vec<Digest>,
}

/// Something of the source that cannot be imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: Kind,
    /// What it is: a repository name, `NAME:TAG`, or a path below the store.
    pub subject: String,
    pub reason: String,
}

/// A blob data file, inside the tree.
#[derive(Debug, Clone)]
pub struct BlobFile {
    pub path: PathBuf,
    pub size: u64,
}

impl Source {
    /// Open the store at `dir`: a Distribution `rootdirectory`, or its `docker/registry/v2`.
    pub fn open(dir: &Path) -> Result<Source, SourceError> {
        let v2 = if dir.join(V2).is_dir() {
            dir.join(V2)
        } else if dir.ends_with(V2) && dir.is_dir() {
            dir.to_owned()
        } else {
            return Err(SourceError::NotDistribution(dir.display().to_string()));
        };
        let v2 = v2.canonicalize().map_err(|source| SourceError::Io {
            path: v2.display().to_string(),
            source,
        })?;
        Ok(Source { v2 })
    }

    /// The `docker/registry/v2` directory read.
    pub fn path(&self) -> &Path {
        &self.v2
    }

    /// Every repository, in name order, and what could not be read.
    pub fn repositories(&self) -> Result<(Vec<Repository>, Vec<Problem>), SourceError> {
        let mut problems = Vec::new();
        let mut repos = Vec::new();
        let top = match self.inside(&self.v2.join("repositories")) {
            Ok(top) if top.is_dir() => top,
            Ok(_) => return Ok((repos, problems)),
            Err(reason) => {
                if fs::symlink_metadata(self.v2.join("repositories")).is_ok() {
                    problems.push(self.problem(&self.v2.join("repositories"), reason));
                }
                return Ok((repos, problems));
            }
        };
        let mut stack = vec![(top, String::new())];
        // Canonical directories already read: a symbolic link back up the tree is read once.
        let mut seen = std::collections::HashSet::new();
        while let Some((dir, name)) = stack.pop() {
            if !seen.insert(dir.clone()) {
                continue;
            }
            let entries = Self::entries(&dir)?;
            let is_repo = entries.iter().any(|(n, _)| n == "_manifests" || n == "_layers");
            if is_repo {
                match RepoName::parse(&name) {
                    Ok(repo) => repos.push(self.repository(&dir, repo, &mut problems)),
                    Err(e) => problems.push(Problem {
                        kind: Kind::Repository,
                        subject: name.clone(),
                        reason: format!("not a valid repository name: {e}"),
                    }),
                }
            }
            for (child, path) in entries.into_iter().filter(|(n, _)| !n.starts_with('_')) {
                match self.inside(&path) {
                    Ok(path) if path.is_dir() => {
                        let child = if name.is_empty() {
                            child
                        } else {
                            format!("{name}/{child}")
                        };
                        stack.push((path, child));
                    }
                    Ok(_) => {}
                    Err(reason) => problems.push(self.problem(&path, reason)),
                }
            }
        }
        repos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((repos, problems))
    }

    /// The blob data file of `digest`, which must be a regular file inside the tree.
    pub fn blob(&self, digest: &Digest) -> Result<BlobFile, String> {
        let hex = digest.hex();
        let path = self
            .v2
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
            .join("data");
        let path = self.inside(&path)?;
        let meta = fs::metadata(&path).map_err(|e| format!("cannot be read from the source: {e}"))?;
        if !meta.is_file() {
            return Err("is not a regular file in the source".to_owned());
        }
        Ok(BlobFile { path, size: meta.len() })
    }

    /// The bytes of the manifest `digest`, checked against it; refused past `max` bytes.
    pub fn manifest(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, String> {
        let file = self.blob(digest)?;
        if file.size > max {
            return Err(format!(
                "is {} bytes, more than limits.manifest_max_size ({max})",
                file.size
            ));
        }
        let bytes = fs::read(&file.path).map_err(|e| format!("cannot be read from the source: {e}"))?;
        let actual = Digest::of(digest.algorithm(), &bytes);
        if &actual == digest {
            Ok(bytes)
        } else {
            Err(format!("is corrupt in the source: its bytes hash to {actual}"))
        }
    }

    /// Read the repository at `dir`.
    fn repository(&self, dir: &Path, name: RepoName, problems: &mut Vec<Problem>) -> Repository {
        let manifests = self.digest_links(&dir.join("_manifests/revisions"), problems);
        let layers = self.digest_links(&dir.join("_layers"), problems);
        let tags = self.tags(&dir.join("_manifests/tags"), &name, problems);
        Repository {
            name,
            manifests,
            tags,
            layers,
        }
    }

    /// Tags under `dir` (`<tag>/current/link`).
    fn tags(&self, dir: &Path, repo: &RepoName, problems: &mut Vec<Problem>) -> Vec<(Tag, Digest)> {
        let mut out = Vec::new();
        for (name, path) in self.entries_or_report(dir, problems) {
            let subject = || format!("{repo}:{name}");
            let tag = match Tag::parse(&name) {
                Ok(tag) => tag,
                Err(e) => {
                    problems.push(Problem {
                        kind: Kind::Tag,
                        subject: subject(),
                        reason: format!("not a valid tag: {e}"),
                    });
                    continue;
                }
            };
            match self.link(&path.join("current/link")) {
                Ok(Some(digest)) => out.push((tag, digest)),
                // A tag whose current link is gone does not exist (Distribution answers 404).
                Ok(None) => {}
                Err(reason) => problems.push(Problem {
                    kind: Kind::Tag,
                    subject: subject(),
                    reason,
                }),
            }
        }
        out.sort();
        out
    }

    /// Digests linked under `dir` (`<alg>/<hex>/link`), each checked against its path.
    fn digest_links(&self, dir: &Path, problems: &mut Vec<Problem>) -> Vec<Digest> {
        let mut out = Vec::new();
        for (alg, alg_dir) in self.entries_or_report(dir, problems) {
            if Algorithm::from_name(&alg).is_err() {
                problems.push(self.problem(&alg_dir, format!("unsupported digest algorithm {alg:?}")));
                continue;
            }
            for (hex, path) in self.entries_or_report(&alg_dir, problems) {
                match self.checked_link(&path, &format!("{alg}:{hex}")) {
                    Ok(Some(digest)) => out.push(digest),
                    Ok(None) => {}
                    Err(reason) => problems.push(self.problem(&path, reason)),
                }
            }
        }
        out.sort();
        out
    }

    /// The link in `dir`, which must name the digest `expected` (its path).
    fn checked_link(&self, dir: &Path, expected: &str) -> Result<Option<Digest>, String> {
        let expected = Digest::parse(expected).map_err(|e| format!("not a digest: {e}"))?;
        match self.link(&dir.join("link"))? {
            Some(d) if d == expected => Ok(Some(d)),
            Some(d) => Err(format!("links {d}, not the {expected} its path names")),
            None => Ok(None),
        }
    }

    /// The digest in the link file `path`; `None` if there is no such file (deleted).
    fn link(&self, path: &Path) -> Result<Option<Digest>, String> {
        let path = match self.inside(path) {
            Ok(path) => path,
            Err(_) if fs::symlink_metadata(path).is_err() => return Ok(None),
            Err(reason) => return Err(reason),
        };
        let mut text = String::new();
        fs::File::open(&path)
            .and_then(|f| f.take(LINK_MAX).read_to_string(&mut text))
            .map_err(|e| format!("cannot read its link: {e}"))?;
        Digest::parse(text.trim())
            .map(Some)
            .map_err(|e| format!("its link does not hold a digest: {e}"))
    }

    /// The entries of `dir` (name, path), in name order; none if it does not exist.
    fn entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, SourceError> {
        let io = |source| SourceError::Io {
            path: dir.display().to_string(),
            source,
        };
        let list = match fs::read_dir(dir) {
            Ok(list) => list,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let mut out = Vec::new();
        for entry in list {
            let entry = entry.map_err(io)?;
            out.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
        }
        out.sort();
        Ok(out)
    }

    /// `entries`, with a failure reported as a problem of `dir` rather than stopping the scan.
    fn entries_or_report(&self, dir: &Path, problems: &mut Vec<Problem>) -> Vec<(String, PathBuf)> {
        let dir = match self.inside(dir) {
            Ok(dir) => dir,
            Err(_) if fs::symlink_metadata(dir).is_err() => return Vec::new(),
            Err(reason) => {
                problems.push(self.problem(dir, reason));
                return Vec::new();
            }
        };
        Self::entries(&dir).unwrap_or_else(|e| {
            problems.push(self.problem(&dir, e.to_string()));
            Vec::new()
        })
    }

    /// `path` resolved, if it exists inside the tree.
    fn inside(&self, path: &Path) -> Result<PathBuf, String> {
        let resolved = path.canonicalize().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => "is missing from the source".to_owned(),
            _ => format!("cannot be read from the source: {e}"),
        })?;
        if resolved.starts_with(&self.v2) {
            Ok(resolved)
        } else {
            Err(format!(
                "is a symbolic link out of the source tree (to {}), refused",
                resolved.display()
            ))
        }
    }

    fn problem(&self, path: &Path, reason: String) -> Problem {
        let subject = path.strip_prefix(&self.v2).unwrap_or(path).display().to_string();
        Problem {
            kind: Kind::Source,
            subject,
            reason,
        }
    }
}
