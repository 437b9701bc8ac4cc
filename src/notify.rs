//! Webhook notifications: the sender that delivers the outbox (`meta::audit`) to the
//! configured endpoints, as CNCF Distribution's notification envelope, so receivers written
//! for it work.
//!
//! Ordering and guarantees:
//! - an event enters an endpoint's outbox in the transaction of the change it describes;
//! - the sender (one tokio task, started by the server) reads the outbox, POSTs each endpoint's
//!   due events oldest first, in batches, and only after a 2xx removes them in a transaction
//!   of its own; a crash in between sends them again (at least once: receivers deduplicate by
//!   the event `id`, its id in the audit log, the same in every attempt and after restarts);
//! - a failed attempt records itself on the rows (attempts, next try with exponential backoff,
//!   last error) and stops that endpoint's round, so an endpoint receives its events in order;
//! - an event older than its endpoint's `max_age` is dropped and counted as failed;
//! - with several nodes sharing the metadata, one node at a time delivers: the one holding
//!   the `notify` lease (`meta::cluster`), which it renews every third of a lease while it
//!   delivers. The others only queue. A holder that dies stops renewing, and another node takes
//!   over once the lease has expired; a holder stalled past its lease in the middle of a POST
//!   may overlap with its successor once, which the event ids let receivers deduplicate.
//!
//! Bodies are signed when the endpoint has a secret: `X-Berth-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of the body. The secret appears nowhere else.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use crate::config::Notification;
use crate::meta::cluster::{Claim, Member};
use crate::meta::{AuditEvent, Millis, OutboxRow, now_ms};
use crate::metrics::{self, EndpointLabels};
use crate::registry::{Registry, notification_action, rfc3339};

/// The envelope's media type (`Content-Type` of every POST).
pub const MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Berth-Signature";
/// Events per POST, at most.
const BATCH: usize = 32;
/// How often the outbox is looked at.
const POLL: Duration = Duration::from_millis(250);
/// The first retry waits this long, each next one twice as long, up to `MAX_BACKOFF`.
const FIRST_BACKOFF_MS: u64 = 250;
const MAX_BACKOFF_MS: u64 = 30_000;

/// The sender's settings, replaced on a configuration reload.
#[derive(Debug)]
pub struct Sender {
    registry: Arc<Registry>,
    endpoints: RwLock<Arc<Vec<Notification>>>,
    http: reqwest::Client,
    /// `source.addr` and the scheme of `target.url`s.
    source_addr: String,
    scheme: &'static str,
    /// `source.instanceID`: new at each start.
    instance: String,
    /// This node in its cluster (several nodes: deliver only while holding the lease).
    member: Option<Member>,
    /// When this node last claimed the `notify` lease, and whether it won it.
    claimed: Mutex<Option<(Instant, bool)>>,
}

/// The lease of the node that delivers, and the job it names.
const LEASE: &str = "notify";

impl Sender {
    /// Start delivering to `endpoints` in the background.
    /// With `member`, deliver only while this node holds the `notify` lease.
    pub fn spawn(
        registry: Arc<Registry>,
        endpoints: &[Notification],
        source_addr: String,
        tls: bool,
        member: Option<Member>,
    ) -> Arc<Self> {
        let sender = Arc::new(Sender {
            registry,
            endpoints: RwLock::new(Arc::new(endpoints.to_vec())),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client with default TLS"),
            source_addr,
            scheme: if tls { "https" } else { "http" },
            instance: uuid::Uuid::new_v4().to_string(),
            member,
            claimed: Mutex::new(None),
        });
        let running = Arc::clone(&sender);
        tokio::spawn(async move {
            loop {
                if running.delivers().await {
                    running.round().await;
                }
                tokio::time::sleep(POLL).await;
            }
        });
        sender
    }

    /// Whether this node delivers now: always on one node; with several, while it holds the
    /// `notify` lease. Every third of a lease it claims it again (a claim by the holder extends
    /// it), so a node that does not hold it asks that often too. Without endpoints no node
    /// needs it.
    async fn delivers(&self) -> bool {
        let Some(member) = &self.member else {
            return true;
        };
        if self.endpoints().is_empty() {
            return false;
        }
        let last = *self.claimed.lock().expect("lease lock");
        if let Some((at, won)) = last
            && at.elapsed() < member.renew_every()
        {
            return won;
        }
        // A failed claim counts as lost (and is tried again a third of a lease later): the
        // database it failed on holds the outbox too.
        let won = match member.claim(LEASE, LEASE).await {
            Ok(claim) => claim == Claim::Won,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim the webhook sender's lease");
                false
            }
        };
        *self.claimed.lock().expect("lease lock") = Some((Instant::now(), won));
        won
    }

    /// Replace the endpoints (a configuration reload).
    pub fn set_endpoints(&self, endpoints: &[Notification]) {
        *self
            .endpoints
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(endpoints.to_vec());
    }

    fn endpoints(&self) -> Arc<Vec<Notification>> {
        Arc::clone(&self.endpoints.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// One pass over the outbox: each configured endpoint's due events, oldest first.
    async fn round(&self) {
        let endpoints = self.endpoints();
        if endpoints.is_empty() {
            return;
        }
        let outbox = match self.registry.outbox().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(error = %e, "could not read the notification outbox");
                return;
            }
        };
        let mut by_endpoint: BTreeMap<String, Vec<(u64, OutboxRow)>> = BTreeMap::new();
        for (endpoint, id, row) in outbox {
            by_endpoint.entry(endpoint).or_default().push((id, row));
        }
        let m = metrics::get();
        for endpoint in endpoints.iter() {
            let rows = by_endpoint.remove(&endpoint.url).unwrap_or_default();
            let labels = EndpointLabels {
                endpoint: shown(&endpoint.url),
            };
            m.notifications_pending
                .get_or_create(&labels)
                .set(i64::try_from(rows.len()).unwrap_or(i64::MAX));
            if let Err(e) = self.deliver(endpoint, rows).await {
                tracing::error!(error = %e, endpoint = %shown(&endpoint.url), "could not update the notification outbox");
            }
        }
    }

    /// Deliver `rows` (one endpoint's, by id) batch by batch until one fails.
    async fn deliver(
        &self,
        endpoint: &Notification,
        rows: Vec<(u64, OutboxRow)>,
    ) -> Result<(), crate::registry::Error> {
        let now = now_ms();
        let max_age = u64::try_from(endpoint.max_age.as_millis()).unwrap_or(u64::MAX);
        let (expired, live): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|(_, row)| now.saturating_sub(row.event.time_ms) > max_age);
        let labels = EndpointLabels {
            endpoint: shown(&endpoint.url),
        };
        if !expired.is_empty() {
            tracing::warn!(endpoint = %shown(&endpoint.url), count = expired.len(), "notifications undelivered past max_age dropped");
            metrics::get()
                .notifications_failed
                .get_or_create(&labels)
                .inc_by(expired.len() as u64);
            let drop = expired.into_iter().map(|(id, _)| (id, None)).collect();
            self.registry.outbox_update(&endpoint.url, drop).await?;
        }
        // In order: nothing is sent while an older event still waits for its retry.
        if live.first().is_some_and(|(_, row)| row.next_ms > now) {
            return Ok(());
        }
        for batch in live.chunks(BATCH) {
            match self.post(endpoint, batch).await {
                Ok(()) => {
                    let done = batch.iter().map(|(id, _)| (*id, None)).collect();
                    self.registry.outbox_update(&endpoint.url, done).await?;
                    metrics::get()
                        .notifications_delivered
                        .get_or_create(&labels)
                        .inc_by(batch.len() as u64);
                }
                Err(why) => {
                    tracing::warn!(endpoint = %shown(&endpoint.url), error = %why, "notification delivery failed; will retry");
                    let retry = batch
                        .iter()
                        .map(|(id, row)| (*id, Some(retried(row, &why, now))))
                        .collect();
                    return self.registry.outbox_update(&endpoint.url, retry).await;
                }
            }
        }
        Ok(())
    }

    /// POST one envelope; `Err` with the reason unless the answer is 2xx.
    async fn post(&self, endpoint: &Notification, batch: &[(u64, OutboxRow)]) -> Result<(), String> {
        let events: Vec<Value> = batch
            .iter()
            .map(|(id, row)| self.envelope_event(*id, &row.event))
            .collect();
        let body = serde_json::to_vec(&json!({ "events": events })).expect("JSON serialises");
        let mut request = self
            .http
            .post(&endpoint.url)
            .timeout(endpoint.timeout)
            .header(reqwest::header::CONTENT_TYPE, MEDIA_TYPE);
        if let Some(secret) = &endpoint.secret {
            request = request.header(SIGNATURE_HEADER, signature(secret.as_bytes(), &body));
        }
        let response = request.body(body).send().await.map_err(|e| describe(&e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", response.status().as_u16()))
        }
    }

    /// One event of the envelope, as CNCF Distribution writes it.
    fn envelope_event(&self, id: u64, e: &AuditEvent) -> Value {
        let repo = e.repository.clone().unwrap_or_default();
        let tag = e.reference.as_ref().filter(|r| !r.contains(':'));
        let digest = e.digest.clone().unwrap_or_default();
        let url = e.actor.host.as_ref().filter(|_| !digest.is_empty()).map(|host| {
            let kind = if e.media_type.is_some() { "manifests" } else { "blobs" };
            format!("{}://{host}/v2/{repo}/{kind}/{digest}", self.scheme)
        });
        json!({
            "id": id.to_string(),
            "timestamp": rfc3339(e.time_ms),
            "action": notification_action(e.action).unwrap_or("unknown"),
            "target": {
                "mediaType": e.media_type,
                "size": e.size,
                "digest": digest,
                "length": e.size,
                "repository": repo,
                "url": url,
                "tag": tag,
            },
            "request": {
                "id": e.actor.request_id.clone().unwrap_or_default(),
                "addr": e.actor.addr,
                "host": e.actor.host,
                "method": e.actor.method.clone().unwrap_or_default(),
                "useragent": e.actor.user_agent.clone().unwrap_or_default(),
            },
            "actor": { "name": e.actor.user },
            "source": { "addr": self.source_addr, "instanceID": self.instance },
        })
    }
}

/// A row after a failed attempt: counted, its next try backed off.
fn retried(row: &OutboxRow, why: &str, now: Millis) -> OutboxRow {
    let attempts = row.attempts.saturating_add(1);
    let backoff = FIRST_BACKOFF_MS
        .saturating_mul(1 << attempts.min(16).saturating_sub(1))
        .min(MAX_BACKOFF_MS);
    OutboxRow {
        attempts,
        next_ms: now.saturating_add(backoff),
        last_error: Some(why.to_owned()),
        ..row.clone()
    }
}

/// An endpoint's URL for logs and metric labels: without user, password and query, which may
/// hold credentials.
pub fn shown(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// A delivery error without the URL (which may hold credentials).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    kind.to_owned()
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2.
    #[test]
    fn signature_is_hmac_sha256() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn shown_urls_carry_no_credentials() {
        assert_eq!(
            shown("https://ci:hunter2@hooks.example/registry?token=abc"),
            "https://hooks.example/registry"
        );
        assert_eq!(shown("not a url"), "<invalid url>");
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let row = OutboxRow {
            event: AuditEvent::new(crate::meta::Action::Push, &crate::meta::Actor::default(), 0),
            attempts: 0,
            next_ms: 0,
            last_error: None,
        };
        let first = retried(&row, "x", 1000);
        assert_eq!((first.attempts, first.next_ms), (1, 1250));
        let second = retried(&first, "x", 1000);
        assert_eq!(second.next_ms, 1500);
        let mut r = second;
        for _ in 0..20 {
            r = retried(&r, "x", 1000);
        }
        assert_eq!(r.next_ms, 1000 + MAX_BACKOFF_MS);
    }
}
