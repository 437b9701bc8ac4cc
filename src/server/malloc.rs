//! glibc malloc settings for the server process: fewer arenas, and freed memory kept for reuse.
//!
//! **Arenas.** glibc gives threads that allocate at the same time separate arenas, up to eight
//! per core, and each arena keeps the memory freed into it. Berth's blocking pool (redb reads,
//! upload writers) runs many short-lived threads, so by default a busy server spreads its
//! small, short-lived allocations over a dozen or more arenas and its peak RSS grows with
//! them. One arena per core is enough: the runtime has one worker per core, and the per-thread
//! tcache serves most small allocations without touching an arena lock. In the load benchmark
//! this took the peak RSS of a full run from 24.4 to 21.6 MiB.
//!
//! **Thresholds.** A connection's read buffer is up to 128 KiB (`listen`), and during an upload
//! each one is handed on to the staging writer and freed a moment later. At glibc's defaults
//! such a block lands on the mmap threshold, or is given back to the kernel when the top of an
//! arena passes the trim threshold, and the next one is faulted in and zeroed afresh: 17 000 to
//! 37 000 page faults for every GiB pushed, each dearer still in a VM that has handed the page
//! back to its host. With blocks up to 1 MiB served from the arenas and up to 2 MiB of free
//! space kept at an arena's top, the same push takes 1 500 to 3 300 faults and about a fifth
//! less server CPU (1.76-2.13 against 1.93-2.48 s/GiB), for under 1 MiB more peak RSS in the
//! load benchmark (keeping 8 MiB: 1 000 to 1 500 faults, 1-2 MiB more RSS).
//!
//! An operator's own setting of any of these (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`,
//! `MALLOC_TRIM_THRESHOLD_`, or the same in `GLIBC_TUNABLES`) wins. Must run before the process
//! starts its second thread: glibc fixes the arena limit when a thread first needs an arena of
//! its own.

/// Blocks at least this large are mapped on their own rather than carved from an arena.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 20;

/// Free space at the top of an arena beyond this goes back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 2 << 20;

/// Apply Berth's malloc settings, each unless the environment already sets it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_malloc() {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
    let settings = [
        (libc::M_ARENA_MAX, "MALLOC_ARENA_MAX", "arena_max", arenas),
        (
            libc::M_MMAP_THRESHOLD,
            "MALLOC_MMAP_THRESHOLD_",
            "mmap_threshold",
            MMAP_THRESHOLD,
        ),
        (
            libc::M_TRIM_THRESHOLD,
            "MALLOC_TRIM_THRESHOLD_",
            "trim_threshold",
            TRIM_THRESHOLD,
        ),
    ];
    for (param, variable, tunable, value) in settings {
        if std::env::var_os(variable).is_some() || tunables.contains(tunable) {
            continue;
        }
        // SAFETY: mallopt only sets a glibc malloc parameter; it takes no pointers, and it is
        // called before any other thread exists, so no allocation runs concurrently with it.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::mallopt(param, value) };
    }
}

/// Other C libraries have neither arenas nor these thresholds.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_malloc() {}
