//! Test hooks that integration tests drive against the real binary: pause points, observation
//! points and a test clock. Like `crashpoint`, they are compiled in only with the `test-hooks`
//! feature, which `cargo test` and `cargo bench` turn on (Cargo.toml) and a plain or release
//! build leaves off; without it every function here is an empty inline stub, and neither the
//! `/admin/test/*` routes (`api::test_hooks`) nor any way to reach these hooks exist.
//!
//! With the feature, the hooks still do nothing unless the server was started with
//! `BERTH_TEST_HOOKS=1`, so that a binary built by `cargo bench` behaves like a release one.
//! Then:
//! - `pause(point)` waits, at each point named in `BERTH_TEST_PAUSE_AT` (comma-separated), until
//!   `POST /admin/test/resume?point=` releases it. Points: `gc.after_mark`, `gc.before_unlink`.
//! - `reached(point)` counts; `GET /admin/test/reached?point=` reads the count. A pause point
//!   counts when it pauses. Points: `digest_lock.wait` (a digest lock, in-process or advisory,
//!   was held by someone else), `upload_lock.wait` (the same for an upload session's advisory
//!   lock), `upload.node_switch` (a node dropped its cached upload session because another node
//!   appended since), `blob.commit_present` (a commit found its blob stored and dropped its copy),
//!   `upload.digest_reread` (an upload's digest was computed by reading its stored bytes again,
//!   because it was asked for another algorithm than the one it hashed with as they arrived).
//! - `meta::now_ms`, the clock of every timestamp that garbage collection compares with its
//!   grace period or `gc.upload_max_age` (pushes, links, upload sessions, HEAD touches, and the
//!   collection's own cutoff), runs ahead of the wall clock by what `POST /admin/test/clock?
//!   advance_ms=` added, so a test lets a grace period pass without sleeping through it.
//!
//! A pause registers itself before it tells its caller (`on_pause`, which sets the GC phase to
//! `paused`), so a test that saw the phase can always release it.

/// Turns the hooks on in a build that has them. Test use only.
pub const ENV_ENABLE: &str = "BERTH_TEST_HOOKS";
/// The pause points to stop at. Test use only.
pub const ENV_PAUSE_AT: &str = "BERTH_TEST_PAUSE_AT";

#[cfg(feature = "test-hooks")]
pub use hooks::*;
#[cfg(not(feature = "test-hooks"))]
pub use stubs::*;

#[cfg(feature = "test-hooks")]
mod hooks {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};

    use tokio::sync::oneshot;

    /// What the environment armed, read once.
    struct Armed {
        enabled: bool,
        pause_at: Vec<String>,
    }

    static ARMED: OnceLock<Armed> = OnceLock::new();
    static CLOCK_OFFSET_MS: AtomicU64 = AtomicU64::new(0);
    static REACHED: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
    static PAUSED: Mutex<Option<HashMap<String, Vec<oneshot::Sender<()>>>>> = Mutex::new(None);

    fn armed() -> &'static Armed {
        ARMED.get_or_init(|| Armed {
            enabled: std::env::var(super::ENV_ENABLE).is_ok_and(|v| v == "1"),
            pause_at: std::env::var(super::ENV_PAUSE_AT)
                .unwrap_or_default()
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect(),
        })
    }

    /// Whether this server runs with its test hooks on.
    pub fn enabled() -> bool {
        armed().enabled
    }

    /// Count a pass through `point`.
    pub fn reached(point: &str) {
        if enabled() {
            let mut counts = REACHED.lock().expect("test hook counts");
            *counts.get_or_insert_default().entry(point.to_owned()).or_default() += 1;
        }
    }

    /// How many times `point` was reached.
    pub fn reached_count(point: &str) -> u64 {
        let counts = REACHED.lock().expect("test hook counts");
        counts.as_ref().and_then(|c| c.get(point)).copied().unwrap_or(0)
    }

    /// Wait at `point` until it is resumed, if it is armed; `on_pause` runs once the pause can
    /// be resumed. Returns whether it paused.
    pub async fn pause(point: &str, on_pause: impl FnOnce()) -> bool {
        if !enabled() || !armed().pause_at.iter().any(|p| p == point) {
            return false;
        }
        let (resume, resumed) = oneshot::channel();
        PAUSED
            .lock()
            .expect("test hook pauses")
            .get_or_insert_default()
            .entry(point.to_owned())
            .or_default()
            .push(resume);
        reached(point);
        tracing::warn!(point, "test hook: paused");
        on_pause();
        let _ = resumed.await;
        tracing::warn!(point, "test hook: resumed");
        true
    }

    /// Release everything paused at `point`; returns how many were.
    pub fn resume(point: &str) -> usize {
        let waiting = PAUSED
            .lock()
            .expect("test hook pauses")
            .as_mut()
            .and_then(|p| p.remove(point))
            .unwrap_or_default();
        let n = waiting.len();
        for resume in waiting {
            let _ = resume.send(());
        }
        n
    }

    /// Move the test clock `ms` ahead; returns its offset from the wall clock.
    pub fn advance_clock(ms: u64) -> u64 {
        CLOCK_OFFSET_MS.fetch_add(ms, Ordering::SeqCst) + ms
    }

    /// How far the test clock runs ahead of the wall clock.
    pub fn clock_offset_ms() -> u64 {
        if enabled() {
            CLOCK_OFFSET_MS.load(Ordering::SeqCst)
        } else {
            0
        }
    }
}

#[cfg(not(feature = "test-hooks"))]
mod stubs {
    /// Always false: this build has no test hooks.
    #[inline]
    pub fn enabled() -> bool {
        false
    }

    #[inline]
    pub fn reached(_point: &str) {}

    #[inline]
    #[allow(clippy::unused_async)] // the same signature as the hook it stands in for
    pub async fn pause(_point: &str, _on_pause: impl FnOnce()) -> bool {
        false
    }

    #[inline]
    pub fn clock_offset_ms() -> u64 {
        0
    }
}
