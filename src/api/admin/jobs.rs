//! The table of the admin API's background jobs (garbage collection, fsck): at most one of each
//! kind runs at a time, and the most recent ones are kept for `GET /admin/<kind>`. `JobView` is
//! also what the CLI reads back from a server (`berth gc --url`, `berth fsck --url`).
//!
//! **One node.** The table is in memory: "at most one at a time" is this process's.
//!
//! **Several nodes** (`meta::cluster::Member`, with PostgreSQL metadata). A job runs on the
//! node that claims the lease named after its kind; a start asked of any other node answers
//! the running job, with the node that runs it. The runner writes the job's status to the
//! shared table when it starts, at each phase, at each lease renewal and when it ends, so that
//! every node answers `GET` for every job from there. A job whose runner stopped reporting for
//! longer than a lease (its node died) shows as failed. A runner that loses its lease stops.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::meta::cluster::{Claim, JOB_HISTORY, JobRecord, Member};
use crate::registry::Error;

/// How many runs are remembered (in memory; the shared table keeps `JOB_HISTORY`).
const HISTORY: usize = 20;

/// How often a runner retries writing its final status while the database is unreachable.
const FINAL_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Done,
    Failed,
}

/// A run as the admin API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    pub id: String,
    pub state: JobState,
    /// What the run is doing now (for example `mark`, `sweep_blobs`, `verify`).
    pub phase: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub report: Option<serde_json::Value>,
    pub error: Option<String>,
    /// The node that runs it, when several nodes share the metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl JobView {
    fn new(node: Option<String>) -> Self {
        JobView {
            id: uuid::Uuid::new_v4().simple().to_string(),
            state: JobState::Running,
            phase: "starting".into(),
            started_at: timestamp(),
            finished_at: None,
            report: None,
            error: None,
            node,
        }
    }

    /// Record how the run ended.
    fn finish(&mut self, outcome: Result<serde_json::Value, String>) {
        self.finished_at = Some(timestamp());
        "done".clone_into(&mut self.phase);
        match outcome {
            Ok(report) => (self.state, self.report) = (JobState::Done, Some(report)),
            Err(e) => (self.state, self.error) = (JobState::Failed, Some(e)),
        }
    }
}

/// Lets a running job say which phase it is in.
#[derive(Clone)]
pub struct PhaseSetter {
    jobs: Arc<Jobs>,
    id: String,
}

impl PhaseSetter {
    pub fn set(&self, phase: &str) {
        self.jobs.update(&self.id, |v| phase.clone_into(&mut v.phase));
        self.jobs.changed.notify_one();
    }
}

/// The current and recent runs of one kind of job.
#[derive(Debug)]
pub struct Jobs {
    /// `gc`, `fsck`: the name of the lease and the kind in the shared table.
    kind: &'static str,
    inner: Mutex<VecDeque<JobView>>,
    /// Wakes the runner's publisher when the phase changes.
    changed: Notify,
    member: Option<Member>,
}

fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Jobs {
    /// The jobs of `kind`, run under a lease shared with the other nodes if `member` is set.
    pub fn new(kind: &'static str, member: Option<Member>) -> Self {
        Jobs {
            kind,
            inner: Mutex::default(),
            changed: Notify::new(),
            member,
        }
    }

    /// Start `work` unless a run is in progress (here, or with several nodes, anywhere).
    /// Returns the run, and whether it started now.
    pub async fn start<F, Fut>(self: &Arc<Self>, work: F) -> Result<(JobView, bool), Error>
    where
        F: FnOnce(PhaseSetter) -> Fut,
        Fut: Future<Output = Result<serde_json::Value, String>> + Send + 'static,
    {
        if let Some(running) = self.running() {
            return Ok((running, false));
        }
        let view = JobView::new(self.member.as_ref().map(|m| m.node.clone()));
        if let Some(elsewhere) = self.elect(&view).await? {
            return Ok((elsewhere, false));
        }
        if let Some(running) = self.begin(&view) {
            if let Some(member) = &self.member {
                member.release(self.kind, &view.id).await;
            }
            return Ok((running, false));
        }
        let future = work(PhaseSetter {
            jobs: Arc::clone(self),
            id: view.id.clone(),
        });
        tokio::spawn(Arc::clone(self).run(view.id.clone(), future));
        Ok((view, true))
    }

    /// With several nodes, claim the lease for `view` and publish it; the run the lease
    /// names when another holds it.
    async fn elect(&self, view: &JobView) -> Result<Option<JobView>, Error> {
        let Some(member) = &self.member else {
            return Ok(None);
        };
        match member.claim(self.kind, &view.id).await? {
            Claim::Held { holder, job } => Ok(Some(self.held(holder, job).await?)),
            Claim::Won => match self.publish(member, view).await {
                Ok(()) => Ok(None),
                Err(e) => {
                    member.release(self.kind, &view.id).await;
                    Err(e)
                }
            },
        }
    }

    /// The run in progress on this node, if any.
    fn running(&self) -> Option<JobView> {
        let jobs = self.inner.lock().expect("jobs lock");
        jobs.iter().find(|j| j.state == JobState::Running).cloned()
    }

    /// Put `view` in the table, unless a run is in progress here (which it returns).
    fn begin(&self, view: &JobView) -> Option<JobView> {
        let mut jobs = self.inner.lock().expect("jobs lock");
        if let Some(running) = jobs.iter().find(|j| j.state == JobState::Running) {
            return Some(running.clone());
        }
        jobs.push_front(view.clone());
        jobs.truncate(HISTORY);
        None
    }

    /// Run `future` as job `id` to its end (under the lease with several nodes), record how
    /// it ended, and publish that.
    async fn run(self: Arc<Self>, id: String, future: impl Future<Output = Result<serde_json::Value, String>>) {
        let Some(member) = self.member.clone() else {
            let outcome = future.await;
            self.update(&id, |v| v.finish(outcome));
            return;
        };
        let tick = || self.publish_current(&member, &id);
        let held = member.hold(self.kind, &id, future, &self.changed, tick).await;
        let outcome = held.unwrap_or_else(|lost| {
            tracing::error!(error = %lost, kind = self.kind, "job stopped");
            Err(lost.to_string())
        });
        self.update(&id, |v| v.finish(outcome));
        self.publish_final(&member, &id).await;
        member.release(self.kind, &id).await;
    }

    /// The run `holder` holds the lease for, as it last reported (or as just started, if it
    /// has not yet).
    async fn held(&self, holder: String, job: String) -> Result<JobView, Error> {
        if let Some(view) = self.get(&job).await? {
            return Ok(view);
        }
        let mut view = JobView::new(Some(holder));
        view.id = job;
        Ok(view)
    }

    pub async fn get(&self, id: &str) -> Result<Option<JobView>, Error> {
        if let Some(view) = self.local(id) {
            return Ok(Some(view));
        }
        let Some(member) = &self.member else {
            return Ok(None);
        };
        let record = member.cluster.job(self.kind, id).await?;
        Ok(record.and_then(|r| self.shown(&r)))
    }

    /// Recent runs, newest first: this node's, or with several nodes, the cluster's.
    pub async fn list(&self) -> Result<Vec<JobView>, Error> {
        let Some(member) = &self.member else {
            return Ok(self.inner.lock().expect("jobs lock").iter().cloned().collect());
        };
        let records = member.cluster.jobs(self.kind, JOB_HISTORY).await?;
        Ok(records.iter().filter_map(|r| self.shown(r)).collect())
    }

    /// With several nodes, whether any node started a run within `within` (the periodic runs
    /// of the nodes then make one per interval together); always `false` on one node, whose
    /// own timer spaces its runs.
    pub async fn started_within(&self, within: Duration) -> Result<bool, Error> {
        if self.member.is_none() {
            return Ok(false);
        }
        let since = SystemTime::now().checked_sub(within).unwrap_or(SystemTime::UNIX_EPOCH);
        let recent = |v: &JobView| humantime::parse_rfc3339(&v.started_at).is_ok_and(|t| t > since);
        Ok(self.list().await?.first().is_some_and(recent))
    }

    fn local(&self, id: &str) -> Option<JobView> {
        let jobs = self.inner.lock().expect("jobs lock");
        jobs.iter().find(|j| j.id == id).cloned()
    }

    /// A shared row as the API shows it: a run whose node stopped reporting for longer than
    /// a lease is over, whatever it last said.
    fn shown(&self, record: &JobRecord) -> Option<JobView> {
        let mut view: JobView = serde_json::from_str(&record.status).ok()?;
        let lease = self.member.as_ref().map_or(Duration::MAX, |m| m.lease);
        let silent = Duration::from_millis(record.age_ms);
        if view.state == JobState::Running && silent > lease {
            view.state = JobState::Failed;
            view.error = Some(format!("node {} stopped reporting; its lease expired", record.node));
        }
        Some(view)
    }

    async fn publish(&self, member: &Member, view: &JobView) -> Result<(), Error> {
        let record = JobRecord {
            id: view.id.clone(),
            kind: self.kind.to_owned(),
            node: member.node.clone(),
            status: serde_json::to_string(view).expect("a job view serialises"),
            age_ms: 0,
        };
        Ok(member.cluster.put_job(&record).await?)
    }

    /// Publish job `id` as it is now; a failure is logged (the next tick tries again).
    async fn publish_current(&self, member: &Member, id: &str) {
        let Some(view) = self.local(id) else { return };
        if let Err(e) = self.publish(member, &view).await {
            tracing::warn!(error = %e, kind = self.kind, "could not publish a job's status");
        }
    }

    /// Publish how job `id` ended, retrying for up to a lease while the database is away.
    async fn publish_final(&self, member: &Member, id: &str) {
        let Some(view) = self.local(id) else { return };
        let deadline = Instant::now() + member.lease;
        while let Err(e) = self.publish(member, &view).await {
            if Instant::now() >= deadline {
                tracing::error!(error = %e, kind = self.kind, "could not publish how a job ended");
                return;
            }
            tokio::time::sleep(FINAL_RETRY).await;
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut JobView)) {
        if let Some(view) = self.inner.lock().expect("jobs lock").iter_mut().find(|j| j.id == id) {
            f(view);
        }
    }
}
