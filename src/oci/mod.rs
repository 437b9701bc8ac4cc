//! OCI vocabulary with no I/O: digests and hashing, repository names, tags and references,
//! manifest parsing, and byte ranges as values (the HTTP headers that carry them are parsed in
//! `api::range`).
//!
//! Everything here is pure and cheap to fuzz. Every value that later reaches the filesystem
//! (a repository name, a digest's hex) is validated here first, so that the layers above can
//! treat a `RepoName` or a `Digest` as safe to use as a path component.

pub mod digest;
pub mod manifest;
pub mod name;
pub mod range;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use manifest::{Descriptor, ManifestError, ParsedManifest, media};
pub use name::{NameError, Reference, RepoName, Tag};
