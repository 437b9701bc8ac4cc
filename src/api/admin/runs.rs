//! Garbage collection and fsck as admin jobs: each run starts in the background in its table
//! of `Jobs` (at most one at a time, in the cluster with several nodes), reports its phase
//! there, leaves its report as JSON, and is counted in the metrics. Retention runs answer at
//! once, under a lease of their own with several nodes. `gc` and `fsck` only expose their `run`
//! functions; they know nothing of jobs, leases, the admin API or metrics.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::jobs::{JobView, Jobs};
use crate::meta::cluster::{Claim, Member};
use crate::meta::{Action, Actor, AuditEvent};
use crate::metrics;
use crate::registry::{Error, Registry};
use crate::{fsck, gc};

/// Start a garbage collection as a background job, unless one is running. Returns the run,
/// and whether it started now. Used by `POST /admin/gc` and by the server's periodic runs.
pub async fn start_gc(
    jobs: &Arc<Jobs>,
    registry: Arc<Registry>,
    opts: gc::Options,
    actor: Actor,
) -> Result<(JobView, bool), Error> {
    jobs.start(move |phase_setter| async move {
        let progress = move |p: gc::Phase| phase_setter.set(p.as_str());
        let outcome = match gc::run(&registry, &opts, &progress).await {
            Ok(report) => {
                tracing::info!(?report, "garbage collection finished");
                record_gc(&report);
                serde_json::to_value(report).map_err(|e| e.to_string())
            }
            Err(e) => {
                tracing::error!(error = %e, "garbage collection failed");
                metrics::job_result(&metrics::get().gc_runs, "failed");
                Err(e.to_string())
            }
        };
        let what = if opts.dry_run { "dry run" } else { "run" };
        audit(&registry, Action::Gc, &actor, what, &outcome).await;
        outcome
    })
    .await
}

/// Record an admin run in the audit log once it has finished: `what` it was, and how it ended.
pub(super) async fn audit(
    registry: &Registry,
    action: Action,
    actor: &Actor,
    what: &str,
    outcome: &Result<serde_json::Value, String>,
) {
    let mut event = AuditEvent::new(action, actor, crate::meta::now_ms());
    event.reference = Some(what.to_owned());
    event.result = match outcome {
        Ok(_) => "ok".into(),
        Err(e) => format!("failed: {e}"),
    };
    registry.record(event).await;
}

fn record_gc(report: &gc::Report) {
    let m = metrics::get();
    metrics::job_result(&m.gc_runs, if report.dry_run { "dry_run" } else { "done" });
    #[allow(clippy::cast_precision_loss)] // milliseconds as seconds
    m.gc_seconds.observe(report.duration_ms as f64 / 1000.0);
    if !report.dry_run {
        m.gc_bytes_freed.inc_by(report.bytes_freed);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        m.gc_last_success.set(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
    }
}

/// Start fsck as a background job, unless one is running (online: redb's own check is not
/// run). Returns the run, and whether it started now.
pub async fn start_fsck(
    jobs: &Arc<Jobs>,
    registry: Arc<Registry>,
    opts: fsck::Options,
    actor: Actor,
) -> Result<(JobView, bool), Error> {
    jobs.start(move |phase| async move {
        let outcome = fsck_job(&registry, opts, &phase).await;
        let what = if opts.repair { "repair" } else { "verify" };
        audit(&registry, Action::Fsck, &actor, what, &outcome).await;
        outcome
    })
    .await
}

/// A retention run, or who holds the retention lease.
pub enum Retention {
    Ran(Result<gc::retention::Report, Error>),
    /// Another node (`node`) is applying the rules now.
    Busy {
        node: String,
    },
}

/// Apply the retention rules now (under the `retention` lease when `member` is set), and record
/// the run in the audit log.
pub async fn run_retention(
    registry: &Arc<Registry>,
    member: Option<&Member>,
    dry_run: bool,
    grace: std::time::Duration,
    actor: &Actor,
) -> Result<Retention, Error> {
    let work = gc::retention::run(registry, dry_run, grace);
    let report = match member {
        None => work.await,
        Some(member) => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            if let Claim::Held { holder, .. } = member.claim("retention", &id).await? {
                return Ok(Retention::Busy { node: holder });
            }
            let held = member
                .hold("retention", &id, work, &tokio::sync::Notify::new(), || async {})
                .await;
            member.release("retention", &id).await;
            held.unwrap_or_else(|lost| Err(Error::Internal(lost.to_string())))
        }
    };
    let outcome = report
        .as_ref()
        .map(|r| serde_json::json!({"tags": r.tags.len(), "manifests": r.manifests.len()}))
        .map_err(ToString::to_string);
    let what = if dry_run { "dry run" } else { "run" };
    audit(registry, Action::Retention, actor, what, &outcome).await;
    Ok(Retention::Ran(report))
}

async fn fsck_job(
    registry: &Arc<Registry>,
    opts: fsck::Options,
    phase: &super::jobs::PhaseSetter,
) -> Result<serde_json::Value, String> {
    phase.set(if opts.repair { "verify_and_repair" } else { "verify" });
    let m = metrics::get();
    let report = match fsck::run(registry, opts, Arc::default(), None).await {
        Ok(report) => report,
        Err(e) => {
            metrics::job_result(&m.fsck_runs, "failed");
            return Err(e.to_string());
        }
    };
    metrics::job_result(&m.fsck_runs, if report.clean { "clean" } else { "problems" });
    m.fsck_problems
        .set(i64::try_from(report.problems.len()).unwrap_or(i64::MAX));
    tracing::info!(clean = report.clean, problems = report.problems.len(), "fsck finished");
    serde_json::to_value(report).map_err(|e| e.to_string())
}
