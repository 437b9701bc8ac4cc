//! The table of the admin API's background jobs (garbage collection, fsck): at most one of each
//! kind runs at a time, and the most recent ones are kept for `GET /admin/<kind>`. `JobView` is
//! also what the CLI reads back from a server (`berth gc --url`, `berth fsck --url`).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// How many runs are remembered.
const HISTORY: usize = 20;

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
    }
}

/// The current and recent runs of one kind of job.
#[derive(Debug, Default)]
pub struct Jobs {
    inner: Mutex<VecDeque<JobView>>,
}

fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Jobs {
    /// Start `work` unless a run is in progress. Returns the run, and whether it started now.
    pub fn start<F, Fut>(self: &Arc<Self>, work: F) -> (JobView, bool)
    where
        F: FnOnce(PhaseSetter) -> Fut,
        Fut: Future<Output = Result<serde_json::Value, String>> + Send + 'static,
    {
        let mut jobs = self.inner.lock().expect("jobs lock");
        if let Some(running) = jobs.iter().find(|j| j.state == JobState::Running) {
            return (running.clone(), false);
        }
        let view = JobView {
            id: uuid::Uuid::new_v4().simple().to_string(),
            state: JobState::Running,
            phase: "starting".into(),
            started_at: timestamp(),
            finished_at: None,
            report: None,
            error: None,
        };
        jobs.push_front(view.clone());
        jobs.truncate(HISTORY);
        drop(jobs);
        let future = work(PhaseSetter {
            jobs: Arc::clone(self),
            id: view.id.clone(),
        });
        let (me, id) = (Arc::clone(self), view.id.clone());
        tokio::spawn(async move {
            let outcome = future.await;
            me.update(&id, |v| {
                v.finished_at = Some(timestamp());
                "done".clone_into(&mut v.phase);
                match outcome {
                    Ok(report) => (v.state, v.report) = (JobState::Done, Some(report)),
                    Err(e) => (v.state, v.error) = (JobState::Failed, Some(e)),
                }
            });
        });
        (view, true)
    }

    pub fn get(&self, id: &str) -> Option<JobView> {
        self.inner
            .lock()
            .expect("jobs lock")
            .iter()
            .find(|j| j.id == id)
            .cloned()
    }

    /// Recent runs, newest first.
    pub fn list(&self) -> Vec<JobView> {
        self.inner.lock().expect("jobs lock").iter().cloned().collect()
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut JobView)) {
        if let Some(view) = self.inner.lock().expect("jobs lock").iter_mut().find(|j| j.id == id) {
            f(view);
        }
    }
}
