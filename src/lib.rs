//! Berth: a self-hosted OCI / Docker container registry.
//!
//! Dependencies point one way: `api` and `ui` (HTTP) → `registry` → (`meta`, `blobs`) → `oci`. `meta` and
//! `blobs` know nothing of HTTP; `registry` is the only layer that touches both. See
//! `docs/design.md` for the on-disk layout, the redb schema, the invariants and the commit
//! ordering.

pub mod api;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod crashpoint;
pub mod fsck;
pub mod gc;
pub mod hot_pool;
pub mod import;
pub mod malloc;
pub mod meta;
pub mod metrics;
pub mod notify;
pub mod oci;
pub mod registry;
pub mod server;
pub mod testhook;
pub mod ui;
pub mod upstream;
