//! Prometheus metrics, served at `GET /metrics` (and on `http.debug_addr` when set).
//!
//! Counters and histograms are updated where things happen: the access-log middleware, the
//! admin API's garbage collection and fsck jobs, and the observer of the metadata writer's
//! commits that the server hands `meta::Meta::open_observed` (`meta` itself knows nothing of
//! metrics). The store gauges (blobs, manifests, tags, repositories, stored bytes, quota usage) are read
//! from the metadata when scraped.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route group: base, catalog, search, tags, manifests, blobs, uploads, referrers, admin, ops,
    /// other.
    pub group: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub group: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// A pull-through cache's events: `upstream` is the proxy prefix, `event` one of `hit`,
/// `miss`, `stale` (served while the upstream failed), `error` (an upstream request failed),
/// `revalidated` (a tag checked upstream and unchanged) and `changed` (checked and moved);
/// `kind` is `manifest` or `blob`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyLabels {
    pub upstream: String,
    pub kind: String,
    pub event: String,
}

/// A storage quota, named by its repository globs (`quotas:`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuotaLabels {
    pub quota: String,
}

/// A notification endpoint (its URL).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

/// Every metric Berth exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<GroupLabels, Histogram, fn() -> Histogram>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub uploads_active: Gauge,
    pub blobs: Gauge,
    pub manifests: Gauge,
    pub tags: Gauge,
    pub repositories: Gauge,
    pub stored_bytes: Gauge,
    pub gc_runs: Family<ResultLabels, Counter>,
    pub gc_seconds: Histogram,
    pub gc_bytes_freed: Counter,
    pub gc_last_success: Gauge,
    pub fsck_runs: Family<ResultLabels, Counter>,
    pub fsck_problems: Gauge,
    pub meta_commit_seconds: Histogram,
    pub meta_batch_ops: Histogram,
    pub proxy_events: Family<ProxyLabels, Counter>,
    pub proxy_upstream_bytes: Family<UpstreamLabels, Counter>,
    pub quota_bytes: Family<QuotaLabels, Gauge>,
    pub quota_limit_bytes: Family<QuotaLabels, Gauge>,
    pub notifications_pending: Family<EndpointLabels, Gauge>,
    pub notifications_delivered: Family<EndpointLabels, Counter>,
    pub notifications_failed: Family<EndpointLabels, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("berth"),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            uploads_active: Gauge::default(),
            blobs: Gauge::default(),
            manifests: Gauge::default(),
            tags: Gauge::default(),
            repositories: Gauge::default(),
            stored_bytes: Gauge::default(),
            gc_runs: Family::default(),
            gc_seconds: latency_histogram(),
            gc_bytes_freed: Counter::default(),
            gc_last_success: Gauge::default(),
            fsck_runs: Family::default(),
            fsck_problems: Gauge::default(),
            meta_commit_seconds: latency_histogram(),
            meta_batch_ops: Histogram::new(exponential_buckets(1.0, 2.0, 8)),
            proxy_events: Family::default(),
            proxy_upstream_bytes: Family::default(),
            quota_bytes: Family::default(),
            quota_limit_bytes: Family::default(),
            notifications_pending: Family::default(),
            notifications_delivered: Family::default(),
            notifications_failed: Family::default(),
        };
        m.register();
        m
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "http_requests",
            "HTTP requests by route group, method and status",
            self.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            self.request_seconds.clone(),
        );
        r.register(
            "http_request_bytes",
            "Request body bytes received",
            self.bytes_in.clone(),
        );
        r.register(
            "http_response_bytes",
            "Response body bytes sent",
            self.bytes_out.clone(),
        );
        r.register(
            "uploads_active",
            "Upload sessions open in this process",
            self.uploads_active.clone(),
        );
        r.register("blobs", "Live blobs", self.blobs.clone());
        r.register("manifests", "Manifests", self.manifests.clone());
        r.register("tags", "Tags", self.tags.clone());
        r.register("repositories", "Repositories", self.repositories.clone());
        r.register(
            "storage_bytes",
            "Bytes of live blobs, each counted once",
            self.stored_bytes.clone(),
        );
        r.register("gc_runs", "Garbage collection runs by result", self.gc_runs.clone());
        r.register(
            "gc_duration_seconds",
            "Garbage collection run time",
            self.gc_seconds.clone(),
        );
        r.register(
            "gc_freed_bytes",
            "Bytes freed by garbage collection",
            self.gc_bytes_freed.clone(),
        );
        r.register(
            "gc_last_success_timestamp_seconds",
            "Unix time of the last successful garbage collection",
            self.gc_last_success.clone(),
        );
        r.register(
            "fsck_runs",
            "fsck runs by result (clean, problems, failed)",
            self.fsck_runs.clone(),
        );
        r.register(
            "fsck_problems",
            "Problems found by the last fsck",
            self.fsck_problems.clone(),
        );
        r.register(
            "meta_commit_seconds",
            "Metadata write transaction time",
            self.meta_commit_seconds.clone(),
        );
        r.register(
            "meta_commit_operations",
            "Operations per group commit",
            self.meta_batch_ops.clone(),
        );
        r.register(
            "proxy_events",
            "Pull-through cache events per upstream: hits, misses, stale serves, upstream errors and tag revalidations",
            self.proxy_events.clone(),
        );
        r.register(
            "proxy_upstream_bytes",
            "Blob bytes fetched from each upstream",
            self.proxy_upstream_bytes.clone(),
        );
        self.register_policies();
    }

    /// The policies' series: quotas and notifications.
    fn register_policies(&mut self) {
        let r = &mut self.registry;
        r.register(
            "quota_bytes",
            "Bytes the repositories of each quota reference, each blob once",
            self.quota_bytes.clone(),
        );
        r.register(
            "quota_limit_bytes",
            "Each quota's max_bytes",
            self.quota_limit_bytes.clone(),
        );
        r.register(
            "notifications_pending",
            "Events in each notification endpoint's outbox, not delivered yet",
            self.notifications_pending.clone(),
        );
        r.register(
            "notifications_delivered",
            "Events delivered to each notification endpoint",
            self.notifications_delivered.clone(),
        );
        r.register(
            "notifications_failed",
            "Events given up on (older than the endpoint's max_age), per notification endpoint",
            self.notifications_failed.clone(),
        );
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Record a finished request.
pub fn request(group: &str, method: &str, status: u16, seconds: f64, bytes_in: u64, bytes_out: u64) {
    let m = get();
    m.requests
        .get_or_create(&RequestLabels {
            group: group.into(),
            method: method.into(),
            status,
        })
        .inc();
    m.request_seconds
        .get_or_create(&GroupLabels {
            group: group.into(),
            method: method.into(),
        })
        .observe(seconds);
    m.bytes_in.inc_by(bytes_in);
    m.bytes_out.inc_by(bytes_out);
}

/// Record a finished run of a job (`gc` or `fsck`).
pub fn job_result(family: &Family<ResultLabels, Counter>, result: &str) {
    family.get_or_create(&ResultLabels { result: result.into() }).inc();
}

/// Count a pull-through cache event (see `ProxyLabels`).
pub fn proxy_event(upstream: &str, kind: &str, event: &str) {
    get()
        .proxy_events
        .get_or_create(&ProxyLabels {
            upstream: upstream.into(),
            kind: kind.into(),
            event: event.into(),
        })
        .inc();
}
