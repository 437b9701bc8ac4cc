//! glibc malloc arenas: at most one per core for the server process.
//!
//! glibc gives threads that allocate at the same time separate arenas, up to eight per core,
//! and each arena keeps the memory freed into it. Berth's blocking pool (redb reads, upload
//! writers) runs many short-lived threads, so by default a busy server spreads its small,
//! short-lived allocations over a dozen or more arenas and its peak RSS grows with them. One
//! arena per core is enough: the runtime has one worker per core, and the per-thread tcache
//! serves most small allocations without touching an arena lock. In the load benchmark this
//! took the peak RSS of a full run from 24.4 to 21.6 MiB (tag pushes alone: 19.8 to 17.3)
//! with no measurable change in throughput.
//!
//! An operator's own `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES=glibc.malloc.arena_max=...` wins.
//! Must run before the process starts its second thread: glibc fixes the arena limit when a
//! thread first needs an arena of its own.

/// Limit glibc to one malloc arena per core, unless the environment already sets a limit.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_malloc_arenas() {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() || tunables.contains("arena_max") {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets a glibc malloc parameter; it takes no pointers, and it is
    // called before any other thread exists, so no allocation runs concurrently with it.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
}

/// Other C libraries have no arenas to limit.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_malloc_arenas() {}
