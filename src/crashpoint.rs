//! Fault injection for crash-consistency tests: `crashpoint::hit("blob.after_rename")` aborts
//! the process (like `kill -9`: no destructors, no flushes) when the environment variable
//! `BERTH_TEST_CRASH_AT` names that point. Otherwise it costs one cached comparison. Compiled
//! in only with the `test-hooks` feature (on for `cargo test` and `cargo bench`, off in a
//! plain or release build; see `testhook`); without it `hit` is empty.
//!
//! The points, in the order each mutation reaches them (see docs/design.md):
//! `upload.after_create_file`, `blob.before_rename`, `blob.after_rename`, `blob.after_commit`,
//! `manifest.after_commit`, `delete.after_commit`, `gc.after_tombstone`, `gc.after_unlink`.

/// The variable naming the crash point. Test use only.
pub const ENV: &str = "BERTH_TEST_CRASH_AT";

/// Abort here if this is the configured crash point.
#[cfg(feature = "test-hooks")]
pub fn hit(point: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if POINT.get_or_init(|| std::env::var(ENV).ok()).as_deref() == Some(point) {
        eprintln!("berth: crash point {point} reached; aborting");
        std::process::abort();
    }
}

/// This build has no crash points.
#[cfg(not(feature = "test-hooks"))]
#[inline]
pub fn hit(_point: &str) {}
