//! The process's memory allocator, all of it in this module: glibc malloc with Berth's
//! settings (fewer arenas, and freed memory kept for reuse), or, with the `mimalloc` feature,
//! mimalloc instead (measured against it in docs/benchmarks.md, "Allocators": as cheap, but a
//! peak RSS nearly three times larger, so glibc stays the default). The sizes other modules
//! choose with the allocator in mind are checked against `REUSED_BELOW` and `ARENA_KEEPS`
//! where they are defined.
//!
//! **Arenas.** glibc gives threads that allocate at the same time separate arenas, up to eight
//! per core, and each arena keeps the memory freed into it. Berth's blocking pool (redb reads,
//! upload writers) runs many short-lived threads, so by default a busy server spreads its
//! small, short-lived allocations over a dozen or more arenas and its peak RSS grows with
//! them. One arena per core is enough: the runtime has one worker per core, and the per-thread
//! tcache serves most small allocations without touching an arena lock. In the load benchmark
//! this took the peak RSS of a full run from 24.4 to 20.9-21.6 MiB.
//!
//! **Thresholds.** A connection's read buffer is up to 128 KiB (`listen`), and during an upload
//! each one is handed on to the staging writer and freed a moment later. glibc starts with a
//! 128 KiB mmap threshold and a 128 KiB trim threshold and raises both as large blocks are
//! freed; an upload still had its next buffer mapped afresh, or grown back after a trim, and
//! every page faulted in and zeroed again: 17 000 to 37 000 page faults for every GiB pushed.
//! Berth fixes the thresholds instead (setting either one stops glibc's adjusting of both):
//! blocks smaller than 1 MiB come from the arenas, and up to 2 MiB of free space stays at an
//! arena's top. The same push then takes 1 500 to 3 300 faults, and in alternating runs
//! against glibc's own behaviour the server spent 1.57-1.94 rather than 1.83-2.37 s/GiB on a
//! monolithic push, for under 1 MiB more peak RSS. Whole-file hashing reads through a
//! 512 KiB buffer (`blobs::fs::HASH_READ_BUFFER`) so that it stays below the 1 MiB threshold.
//!
//! An operator's own setting of any of these (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`,
//! `MALLOC_TRIM_THRESHOLD_`, or the same in `GLIBC_TUNABLES`) wins; as in glibc, a threshold
//! set that way is fixed too. `mallopt` is not thread-safe, so this does nothing once the
//! process has a second thread.

/// Blocks smaller than this come from an arena and are reused when freed; larger ones are
/// mapped on their own and faulted in afresh each time.
pub const REUSED_BELOW: usize = 1 << 20;

/// Free space an arena keeps at its top before giving memory back to the kernel.
pub const ARENA_KEEPS: usize = 2 << 20;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)] // 1 MiB and 2 MiB
const MMAP_THRESHOLD: libc::c_int = REUSED_BELOW as libc::c_int;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
const TRIM_THRESHOLD: libc::c_int = ARENA_KEEPS as libc::c_int;

/// Apply Berth's malloc settings, each unless the environment already sets it. Call it before
/// starting any thread; with other threads running it changes nothing.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_malloc() {
    // glibc's settings mean nothing to another global allocator.
    if cfg!(feature = "mimalloc") || !single_threaded() {
        return;
    }
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    let tunable_set = |name: &str| {
        tunables
            .split(':')
            .any(|pair| pair.split_once('=').is_some_and(|(key, _)| key == name))
    };
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
    let settings = [
        (libc::M_ARENA_MAX, "MALLOC_ARENA_MAX", "glibc.malloc.arena_max", arenas),
        (
            libc::M_MMAP_THRESHOLD,
            "MALLOC_MMAP_THRESHOLD_",
            "glibc.malloc.mmap_threshold",
            MMAP_THRESHOLD,
        ),
        (
            libc::M_TRIM_THRESHOLD,
            "MALLOC_TRIM_THRESHOLD_",
            "glibc.malloc.trim_threshold",
            TRIM_THRESHOLD,
        ),
    ];
    for (param, variable, tunable, value) in settings {
        if std::env::var_os(variable).is_some() || tunable_set(tunable) {
            continue;
        }
        // SAFETY: mallopt only sets a glibc malloc parameter and takes no pointers; the check
        // above found this the process's only thread, so no allocation runs concurrently.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::mallopt(param, value) };
    }
}

/// Whether the process has exactly one thread (this one), per `/proc/self/task`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1)
}

/// Other C libraries have neither arenas nor these thresholds.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_malloc() {}
