//! Berth's integration tests, built into one binary. Each test runs a real server on
//! 127.0.0.1 (see `harness`) and talks to it over HTTP or with a real client.

mod api_blobs;
mod api_errors;
mod api_fixtures;
mod api_listing;
mod api_manifests;
mod api_uploads;
mod auth;
mod cli;
mod clients;
mod concurrency;
mod containerd;
mod crash;
mod crash_points;
mod disk_full;
mod fsck;
mod garage;
mod gc;
mod gc_stress;
mod harness;
mod hostile;
mod limits;
mod memory;
mod meta_suite;
mod ops;
mod pki;
mod podman;
mod proxy;
mod proxy_clients;
mod restart;
mod s3;
mod search;
mod smoke;
mod staging;
mod storage_suite;
mod tls;
