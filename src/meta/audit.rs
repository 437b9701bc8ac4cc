//! The audit log and the notification outbox: what happened, by whom, from where, recorded in
//! the same transaction as the change itself (`WriteOp::audited`), or in a small write of its
//! own for an event that changes nothing else (`MetaStore::record`: a login, an admin run, a
//! configuration reload). There is no event for a change that did not commit and no committed
//! change without its event.
//!
//! An event bound for notification endpoints also gets one outbox row per endpoint, in the
//! same transaction. The sender (`crate::notify`) delivers them after the commit, and removes
//! a row (or records its failed attempt) in a later transaction, so delivery survives restarts
//! and crashes: at least once, with the event id for deduplication.
//!
//! `Actor`, `AuditEvent`, `Audited`, `AuditQuery` and `OutboxRow` are backend-neutral data
//! (meta knows nothing of HTTP: the caller fills the actor in); the functions below them are
//! the transactions, over any backend's rows (`rows`).
//!
//! Event ids come from one sequence (`sequences["audit"]`), never reused even when the log is
//! pruned empty, so an outbox key stays unique.

use serde::{Deserialize, Serialize};

use super::MetaError;
use super::codec::{decode, encode};
use super::rows::{Dir, NEXT, Rows, STOP, WriteRows};
use super::schema::{AUDIT, Millis, OUTBOX, SEQUENCES};

/// Who asked for a change, and from where; every field optional (a background run has no
/// address). Filled in by the HTTP layer and passed down as data.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Actor {
    /// The authenticated user; `None` for an anonymous caller or with authentication off.
    pub user: Option<String>,
    /// The client's address (IP).
    pub addr: Option<String>,
    /// The request's id (`X-Request-Id`).
    pub request_id: Option<String>,
    pub method: Option<String>,
    /// The `Host` the client asked for.
    pub host: Option<String>,
    pub user_agent: Option<String>,
}

impl Actor {
    /// Berth itself (a scheduled run, a reload): no user, no address.
    pub fn system() -> Self {
        Actor {
            user: Some("berth".into()),
            ..Actor::default()
        }
    }
}

/// What an event records. New actions go at the end (postcard encodes the variant index).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A manifest pushed (and its tags pointed, or moved, at it).
    Push,
    /// A manifest deleted by digest, with its tags.
    ManifestDelete,
    /// One tag deleted.
    TagDelete,
    /// A blob unlinked from a repository.
    BlobDelete,
    /// A blob mounted from another repository.
    Mount,
    /// Credentials checked: `result` says whether they were accepted.
    Login,
    Gc,
    Fsck,
    ConfigReload,
    /// The retention rules applied on their own (`POST /admin/retention`).
    Retention,
}

impl Action {
    pub const ALL: [Action; 10] = [
        Action::Push,
        Action::ManifestDelete,
        Action::TagDelete,
        Action::BlobDelete,
        Action::Mount,
        Action::Login,
        Action::Gc,
        Action::Fsck,
        Action::ConfigReload,
        Action::Retention,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::ManifestDelete => "manifest-delete",
            Action::TagDelete => "tag-delete",
            Action::BlobDelete => "blob-delete",
            Action::Mount => "mount",
            Action::Login => "login",
            Action::Gc => "gc",
            Action::Fsck => "fsck",
            Action::ConfigReload => "config-reload",
            Action::Retention => "retention",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One audit record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEvent {
    pub time_ms: Millis,
    pub actor: Actor,
    pub action: Action,
    pub repository: Option<String>,
    /// The tag or digest the request named.
    pub reference: Option<String>,
    pub digest: Option<String>,
    /// For a manifest: its media type and size (the notification's target).
    pub media_type: Option<String>,
    pub size: Option<u64>,
    /// `"ok"`, or what went wrong (never a secret).
    pub result: String,
}

impl AuditEvent {
    /// An event of `action` by `actor` now, succeeded, naming nothing yet.
    pub fn new(action: Action, actor: &Actor, now: Millis) -> Self {
        AuditEvent {
            time_ms: now,
            actor: actor.clone(),
            action,
            repository: None,
            reference: None,
            digest: None,
            media_type: None,
            size: None,
            result: "ok".into(),
        }
    }
}

/// An event to record, and the notification endpoints (their keys) it is bound for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audited {
    pub event: AuditEvent,
    pub notify: Vec<String>,
}

/// An outbox row: one event for one endpoint, not delivered yet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutboxRow {
    pub event: AuditEvent,
    /// Failed deliveries so far.
    pub attempts: u32,
    /// Not to be tried before this instant.
    pub next_ms: Millis,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// A filter over the log, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub repository: Option<String>,
    pub user: Option<String>,
    pub action: Option<Action>,
    pub since_ms: Option<Millis>,
    pub until_ms: Option<Millis>,
    /// Only events with ids below this one (the previous page's cursor).
    pub before: Option<u64>,
    pub limit: usize,
}

impl AuditQuery {
    fn matches(&self, e: &AuditEvent) -> bool {
        self.repository
            .as_ref()
            .is_none_or(|r| e.repository.as_ref() == Some(r))
            && self.user.as_ref().is_none_or(|u| e.actor.user.as_ref() == Some(u))
            && self.action.is_none_or(|a| e.action == a)
            && self.since_ms.is_none_or(|t| e.time_ms >= t)
            && self.until_ms.is_none_or(|t| e.time_ms <= t)
    }
}

/// One page of the log: events with their ids, and the cursor of the next page if there is one.
#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    pub events: Vec<(u64, AuditEvent)>,
    pub next: Option<u64>,
}

/// Append `audited` to the log and to the outbox of each of its endpoints.
pub(super) fn append(txn: &impl WriteRows, audited: &Audited) -> Result<u64, MetaError> {
    let id = txn.get(&SEQUENCES, "audit")?.unwrap_or(0) + 1;
    txn.insert(&SEQUENCES, "audit", id)?;
    txn.insert(&AUDIT, id, &encode(&audited.event))?;
    let row = encode(&OutboxRow {
        event: audited.event.clone(),
        attempts: 0,
        next_ms: audited.event.time_ms,
        last_error: None,
    });
    for endpoint in &audited.notify {
        txn.insert(&OUTBOX, (endpoint.as_str(), id), &row)?;
    }
    Ok(id)
}

/// How far out of time order events may be committed: each takes its time before its write
/// queues, and concurrent writes may commit in another order.
const ORDER_SLACK_MS: Millis = 60_000;

/// Events matching `q`, newest first. Events are appended in commit order, which follows their
/// times but for concurrent writes, so the scan stops once an event is older than `since` by
/// more than `ORDER_SLACK_MS`.
pub(super) fn query(txn: &impl Rows, q: &AuditQuery) -> Result<AuditPage, MetaError> {
    let mut page = AuditPage::default();
    txn.visit(&AUDIT, ..q.before.unwrap_or(u64::MAX), Dir::Back, &mut |id, v| {
        let event: AuditEvent = decode(v)?;
        if q.since_ms
            .is_some_and(|t| event.time_ms.saturating_add(ORDER_SLACK_MS) < t)
        {
            return STOP;
        }
        if !q.matches(&event) {
            return NEXT;
        }
        if page.events.len() == q.limit {
            page.next = page.events.last().map(|(id, _)| *id);
            return STOP;
        }
        page.events.push((id, event));
        NEXT
    })?;
    Ok(page)
}

/// Remove events older than `before_ms`; answers how many.
pub(super) fn prune(txn: &impl WriteRows, before_ms: Millis) -> Result<u64, MetaError> {
    let mut old = Vec::new();
    txn.scan(&AUDIT, .., &mut |id, v| {
        if decode::<AuditEvent>(v)?.time_ms >= before_ms {
            return STOP;
        }
        old.push(id);
        NEXT
    })?;
    for id in &old {
        txn.remove(&AUDIT, *id)?;
    }
    Ok(old.len() as u64)
}

/// Every outbox row, by endpoint then event id.
pub(super) fn outbox(txn: &impl Rows) -> Result<Vec<(String, u64, OutboxRow)>, MetaError> {
    let mut out = Vec::new();
    txn.scan(&OUTBOX, .., &mut |(endpoint, id), v| {
        out.push((endpoint.to_owned(), id, decode(v)?));
        NEXT
    })?;
    Ok(out)
}

/// Replace (`Some`) or remove (`None`) outbox rows of `endpoint`. A row already gone (a
/// concurrent removal) stays gone.
pub(super) fn outbox_update(
    txn: &impl WriteRows,
    endpoint: &str,
    updates: &[(u64, Option<OutboxRow>)],
) -> Result<(), MetaError> {
    for (id, row) in updates {
        let key = (endpoint, *id);
        match row {
            None => {
                txn.remove(&OUTBOX, key)?;
            }
            Some(row) if txn.contains(&OUTBOX, key)? => {
                txn.insert(&OUTBOX, key, &encode(row))?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}
