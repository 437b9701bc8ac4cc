//! Garbage collection runs as jobs: at most one runs at a time, and the most recent ones are
//! kept for `GET /admin/gc`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Options, Phase, Report, run};
use crate::registry::Registry;

/// How many finished runs are remembered.
const HISTORY: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Done,
    Failed,
}

/// A run as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub state: JobState,
    pub dry_run: bool,
    pub phase: Phase,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub report: Option<Report>,
    pub error: Option<String>,
}

/// The current and recent runs.
#[derive(Debug, Default)]
pub struct Jobs {
    inner: Mutex<VecDeque<JobView>>,
}

fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Jobs {
    /// Start a run unless one is running. Returns the run and whether it was started now.
    pub fn start(self: &Arc<Self>, registry: Arc<Registry>, opts: Options) -> (JobView, bool) {
        let mut jobs = self.inner.lock().expect("jobs lock");
        if let Some(running) = jobs.iter().find(|j| j.state == JobState::Running) {
            return (running.clone(), false);
        }
        let view = JobView {
            id: uuid::Uuid::new_v4().simple().to_string(),
            state: JobState::Running,
            dry_run: opts.dry_run,
            phase: Phase::Starting,
            started_at: timestamp(),
            finished_at: None,
            report: None,
            error: None,
        };
        jobs.push_front(view.clone());
        jobs.truncate(HISTORY);
        drop(jobs);
        let (me, id) = (Arc::clone(self), view.id.clone());
        tokio::spawn(async move {
            let progress = {
                let (me, id) = (Arc::clone(&me), id.clone());
                move |phase| me.update(&id, |v| v.phase = phase)
            };
            let outcome = run(&registry, &opts, &progress).await;
            if let Err(e) = &outcome {
                tracing::error!(error = %e, "garbage collection failed");
            }
            me.update(&id, |v| {
                v.finished_at = Some(timestamp());
                match outcome {
                    Ok(report) => {
                        tracing::info!(?report, "garbage collection finished");
                        (v.state, v.report) = (JobState::Done, Some(report));
                    }
                    Err(e) => (v.state, v.error) = (JobState::Failed, Some(e.to_string())),
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
