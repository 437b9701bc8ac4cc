//! The audit log and the notification routes, as the registry uses them. Every change the
//! registry makes on a caller's behalf carries its `Actor` down to the metadata write, which
//! records the event in the change's own transaction (`WriteOp::audited`); the routes decide,
//! at that moment, which notification endpoints get the event in their outbox. Events that
//! change nothing else (logins, admin runs, reloads) are recorded by `record`.

use std::sync::{Arc, RwLock};

use globset::GlobSet;

use super::{Error, Registry};
use crate::config::Notification;
use crate::meta::{Action, Actor, AuditEvent, AuditPage, AuditQuery, Audited, Millis, OutboxRow, now_ms};

/// Where events go: one entry per configured endpoint, keyed by its URL.
#[derive(Debug, Default)]
pub struct Routes(Vec<Route>);

#[derive(Debug)]
struct Route {
    url: String,
    events: Vec<String>,
    repositories: GlobSet,
}

impl Routes {
    /// Compile the configuration's endpoints (whose globs it has validated).
    pub fn new(endpoints: &[Notification]) -> Self {
        Routes(
            endpoints
                .iter()
                .map(|n| Route {
                    url: n.url.clone(),
                    events: n.events.clone(),
                    repositories: super::policy::globs(&n.repositories),
                })
                .collect(),
        )
    }

    /// The endpoints that want `event`.
    fn endpoints(&self, event: &AuditEvent) -> Vec<String> {
        let (Some(kind), Some(repo)) = (notification_action(event.action), &event.repository) else {
            return Vec::new();
        };
        self.0
            .iter()
            .filter(|r| r.events.iter().any(|e| e == kind) && r.repositories.is_match(repo))
            .map(|r| r.url.clone())
            .collect()
    }
}

/// The action of CNCF Distribution's envelope an audit action is notified as, if any.
pub fn notification_action(action: Action) -> Option<&'static str> {
    match action {
        Action::Push => Some("push"),
        Action::ManifestDelete | Action::TagDelete | Action::BlobDelete => Some("delete"),
        Action::Mount => Some("mount"),
        Action::Login | Action::Gc | Action::Fsck | Action::ConfigReload | Action::Retention => None,
    }
}

/// The routes in force, replaced on a configuration reload.
#[derive(Debug, Default)]
pub(super) struct CurrentRoutes(RwLock<Arc<Routes>>);

impl CurrentRoutes {
    fn get(&self) -> Arc<Routes> {
        Arc::clone(&self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn set(&self, routes: Routes) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(routes);
    }
}

impl Registry {
    /// `event`, with the endpoints it is bound for.
    pub(super) fn audited(&self, event: AuditEvent) -> Audited {
        let notify = self.routes.get().endpoints(&event);
        Audited { event, notify }
    }

    /// An event of `action` by `actor` on `repo`, now.
    pub(super) fn event(action: Action, actor: &Actor, repo: &crate::oci::RepoName) -> AuditEvent {
        AuditEvent {
            repository: Some(repo.to_string()),
            ..AuditEvent::new(action, actor, now_ms())
        }
    }

    /// Record an event that changes nothing else (a login, an admin run, a reload). A failure
    /// is logged, never passed on: the audit log must not turn a refused login into a 500.
    pub async fn record(&self, event: AuditEvent) {
        let action = event.action.as_str();
        let audited = self.audited(event);
        if let Err(e) = self.meta.record(audited).commit().await {
            tracing::error!(error = %e, action, "could not record an audit event");
        }
    }

    /// Replace the notification routes (start-up, a configuration reload).
    pub fn set_notifications(&self, endpoints: &[Notification]) {
        self.routes.set(Routes::new(endpoints));
    }

    /// One page of the audit log, newest first.
    pub async fn audit_log(&self, query: AuditQuery) -> Result<AuditPage, Error> {
        Ok(self.meta.audit(query).await?)
    }

    /// Remove audit events recorded before `before_ms` (garbage collection).
    pub async fn prune_audit(&self, before_ms: Millis) -> Result<u64, Error> {
        self.meta_write(|m| m.prune_audit(before_ms)).await
    }

    /// The notification outbox: (endpoint, event id, row).
    pub async fn outbox(&self) -> Result<Vec<(String, u64, OutboxRow)>, Error> {
        Ok(self.meta.outbox().await?)
    }

    /// Remove delivered (`None`) or update retried (`Some`) outbox rows of `endpoint`.
    pub async fn outbox_update(&self, endpoint: &str, updates: Vec<(u64, Option<OutboxRow>)>) -> Result<(), Error> {
        self.meta_write(|m| m.outbox_update(endpoint, updates)).await
    }
}

/// One audit event as the admin API and `berth audit` show it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub user: Option<String>,
    pub addr: Option<String>,
    pub action: String,
    pub repository: Option<String>,
    pub reference: Option<String>,
    pub digest: Option<String>,
    pub result: String,
    pub request_id: Option<String>,
}

impl AuditEntry {
    pub fn new(id: u64, e: AuditEvent) -> Self {
        AuditEntry {
            id,
            time: rfc3339(e.time_ms),
            user: e.actor.user,
            addr: e.actor.addr,
            action: e.action.as_str().to_owned(),
            repository: e.repository,
            reference: e.reference,
            digest: e.digest,
            result: e.result,
            request_id: e.actor.request_id,
        }
    }
}

/// A page of `AuditEntry`s and the cursor of the next (`before=`), if any.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AuditListing {
    pub events: Vec<AuditEntry>,
    pub next: Option<u64>,
}

impl From<AuditPage> for AuditListing {
    fn from(page: AuditPage) -> Self {
        AuditListing {
            events: page.events.into_iter().map(|(id, e)| AuditEntry::new(id, e)).collect(),
            next: page.next,
        }
    }
}

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: Millis) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

/// The most events one page holds; also the default.
pub const AUDIT_PAGE_MAX: usize = 1000;

/// Build a query from its text parameters (`repository`, `user`, `action`, `since`, `until`,
/// `limit`, `before`), as `GET /admin/audit` and `berth audit` take them. `since` and `until`
/// are RFC 3339 instants or durations back from `now` (`24h`). The error names the parameter.
pub fn audit_query(get: impl Fn(&str) -> Option<String>, now: Millis) -> Result<AuditQuery, String> {
    let instant = |key: &str| -> Result<Option<Millis>, String> {
        let Some(text) = get(key) else { return Ok(None) };
        if let Ok(t) = humantime::parse_rfc3339_weak(&text) {
            let ms = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
            return Ok(Some(u64::try_from(ms).unwrap_or(u64::MAX)));
        }
        let ago = humantime::parse_duration(&text)
            .map_err(|_| format!("{key}={text:?} is neither an RFC 3339 time nor a duration (24h)"))?;
        Ok(Some(
            now.saturating_sub(u64::try_from(ago.as_millis()).unwrap_or(u64::MAX)),
        ))
    };
    let action = match get("action") {
        None => None,
        Some(a) => Some(Action::parse(&a).ok_or_else(|| {
            let known: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
            format!("action={a:?} is not one of {}", known.join(", "))
        })?),
    };
    let number = |key: &str| -> Result<Option<u64>, String> {
        get(key)
            .map(|v| v.parse::<u64>().map_err(|_| format!("{key}={v:?} is not a number")))
            .transpose()
    };
    let limit = number("limit")?.map_or(100, |n| usize::try_from(n).unwrap_or(AUDIT_PAGE_MAX));
    Ok(AuditQuery {
        repository: get("repository").filter(|s| !s.is_empty()),
        user: get("user").filter(|s| !s.is_empty()),
        action,
        since_ms: instant("since")?,
        until_ms: instant("until")?,
        before: number("before")?,
        limit: limit.clamp(1, AUDIT_PAGE_MAX),
    })
}
