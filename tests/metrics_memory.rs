//! Histogram samples do not pile up between scrapes.
//!
//! The Prometheus recorder keeps every histogram sample in memory until it
//! is drained into the buckets; draining happens on a scrape of `/metrics`
//! or an upkeep pass. A node nobody scrapes (no Prometheus yet, or a broken
//! one) must not grow by 8 bytes per delivered message for ever: the 30-min
//! soak grew ~2.5 MB of heap this way. Own test binary: it counts live heap
//! bytes with a global allocator, which other tests would disturb.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn histogram_samples_are_drained_without_a_scrape() {
    let handle = roomcast::telemetry::install().expect("the recorder installs");
    // Register the histograms first so only the samples remain to count.
    roomcast::telemetry::fanout_duration(0.001);
    roomcast::telemetry::delivery_latency(0.001);
    let before = LIVE.load(Ordering::Relaxed);

    // Five rounds of samples, each followed by a pause longer than the
    // upkeep interval, and nobody scraping. Held bytes are measured right
    // after each round: kept samples grow with every round; drained ones
    // stay at about one round's worth (drained blocks are freed through
    // crossbeam's epochs, so some wait for the next round's recording).
    const ROUNDS: usize = 5;
    const SAMPLES: usize = 300_000;
    let mut held = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..SAMPLES {
            roomcast::telemetry::fanout_duration((round * SAMPLES + i) as f64 * 1e-9);
            roomcast::telemetry::delivery_latency(i as f64 * 1e-9);
        }
        held.push(LIVE.load(Ordering::Relaxed).saturating_sub(before));
        std::thread::sleep(Duration::from_secs(6));
    }
    // 2 × 300k samples of 8 bytes or more.
    assert!(held[0] > 4_000_000, "one round held only {} bytes", held[0]);
    assert!(
        held[ROUNDS - 1] < held[0] * 5 / 2,
        "histogram samples pile up without a scrape: bytes held after each round {held:?}"
    );

    // The samples were counted, not dropped.
    let page = handle.render();
    let count = page
        .lines()
        .find(|l| l.starts_with("roomcast_fanout_duration_seconds_count"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(count, Some(ROUNDS * SAMPLES + 1), "{page}");
}
