//! Fault injection for crash-consistency tests: `crashpoint::hit("blob.after_rename")` aborts
//! the process (like `kill -9`: no destructors, no flushes) when the environment variable
//! `BERTH_TEST_CRASH_AT` names that point. Otherwise it costs one cached comparison.
//!
//! The points, in the order each mutation reaches them (see docs/design.md):
//! `upload.after_create_file`, `blob.before_rename`, `blob.after_rename`, `blob.after_commit`,
//! `manifest.after_commit`, `delete.after_commit`, `gc.after_tombstone`, `gc.after_unlink`.

use std::sync::OnceLock;

/// The variable naming the crash point. Test use only.
pub const ENV: &str = "BERTH_TEST_CRASH_AT";

static POINT: OnceLock<Option<String>> = OnceLock::new();

/// Abort here if this is the configured crash point.
pub fn hit(point: &str) {
    if POINT.get_or_init(|| std::env::var(ENV).ok()).as_deref() == Some(point) {
        eprintln!("berth: crash point {point} reached; aborting");
        std::process::abort();
    }
}
