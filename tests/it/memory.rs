//! `berth serve` caps glibc's malloc arenas at one per core (src/server/arenas.rs); without the
//! cap every blocking-pool thread that allocates takes an arena of its own (up to eight per
//! core) and keeps what is freed into it, which is what raised the load benchmark's peak RSS.
//! Arenas are counted in /proc/<pid>/maps; a run with `MALLOC_ARENA_MAX=64` is the control
//! that shows the same load does create more of them without the cap.

use crate::harness::{Berth, push_blob, random_bytes};

/// glibc's non-main arena heaps: 64 MiB-aligned anonymous reservations whose used part
/// (rw-p) is followed at once by the rest of the reservation (---p), 64 MiB together.
fn arena_heaps(pid: u32) -> usize {
    const HEAP: u64 = 64 << 20;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let regions: Vec<(u64, u64, String)> = maps
        .lines()
        .map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next().unwrap().split_once('-').unwrap();
            let perms = fields.next().unwrap().to_owned();
            let anonymous = fields.nth(3).is_none();
            let perms = if anonymous { perms } else { String::new() };
            (
                u64::from_str_radix(start, 16).unwrap(),
                u64::from_str_radix(end, 16).unwrap(),
                perms,
            )
        })
        .collect();
    regions
        .windows(2)
        .filter(|w| {
            let ((start, end, perms), (next_start, next_end, next_perms)) = (&w[0], &w[1]);
            start % HEAP == 0
                && perms == "rw-p"
                && next_perms == "---p"
                && end == next_start
                && next_end - start == HEAP
        })
        .count()
}

/// Many concurrent uploads, each written by its own blocking thread; returns the arena count.
async fn arenas_after_load(berth: &Berth) -> usize {
    let pushes = (0..48u64).map(|i| async move {
        push_blob(berth, "mem/arenas", &random_bytes(512 << 10, i)).await;
    });
    futures_util::future::join_all(pushes).await;
    arena_heaps(berth.pid())
}

#[tokio::test]
async fn malloc_arenas_are_capped_at_one_per_core() {
    let cores = std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .max(2);
    let capped = arenas_after_load(&Berth::start()).await;
    let uncapped = arenas_after_load(&Berth::builder().env("MALLOC_ARENA_MAX", "64").start()).await;
    assert!(
        uncapped > cores,
        "control: without the cap the load should create more than {cores} arenas, saw {uncapped}"
    );
    // The cap counts the main arena too, so at most cores - 1 of these heaps.
    assert!(
        capped < cores,
        "{capped} arena heaps with {cores} cores (uncapped: {uncapped})"
    );
}
