//! End-to-end tests of the shared discovery lookups: concurrent captures
//! that need the discovery service share one exchange and its parsed
//! answer, and the discovery service's host name is looked up when it is
//! needed (not once at start-up) without the loop ever waiting for it.
//! Real parts: the service binary, a stand-in GhostWire over real HTTP, the
//! system resolver reading an `/etc/hosts` the test controls (in a mount
//! namespace of the service's own), real `dumpcap` in namespaces made here.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::load;
use common::rawws::{raw_capture, read_close};
use common::*;
use serde_json::json;

/// `/version` budget while lookups run (the figure).
const VERSION_BUDGET: Duration = Duration::from_millis(100);
/// Captures asking for the same stale target at once.
const CONCURRENT_LOOKUPS: usize = 150;
/// Size of the stand-in's listing.
const LISTING_BYTES: usize = 8_000_000;
/// Peak service memory allowed, as a multiple of the listing.
const RSS_PER_LISTING: u64 = 3;

/// One `/version` on a fresh connection, timed.
fn timed_version(port: u16) -> Option<Duration> {
    let t = Instant::now();
    (load::version_status(port) == Some(200)).then(|| t.elapsed())
}

/// Probes `/version` every 20 ms until stopped; the slowest answer (an
/// unanswered probe counts as `Duration::MAX`) and the count.
struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Duration, usize)>>,
}

impl Prober {
    fn start(port: u16) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut worst, mut n) = (Duration::ZERO, 0);
            let until = Instant::now() + Duration::from_secs(60);
            while !st.load(Ordering::Relaxed) && Instant::now() < until {
                worst = worst.max(timed_version(port).unwrap_or(Duration::MAX));
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (worst, n)
        });
        Prober {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (Duration, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or((Duration::MAX, 0))
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A listing of about `bytes` bytes: filler containers, none of them named
/// `wanted`.
fn big_listing(bytes: usize) -> Vec<u8> {
    let pad = "x".repeat(300);
    let mut targets = Vec::new();
    let mut size = 0;
    let mut i = 0u64;
    while size < bytes {
        let mut t = target(&format!("filler-{i}"), "", 4_000_000_000 + i, 0, 0);
        t["labels"] = json!({ "pad": pad });
        size += t.to_string().len() + 1;
        targets.push(t);
        i += 1;
    }
    mobyshark(&targets)
}

/// A pid no process has: one that just exited and was reaped.
fn dead_pid() -> i32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id() as i32;
    let _ = child.wait();
    pid
}

#[test]
fn concurrent_stale_lookups_share_one_exchange_and_its_parsed_answer() {
    let listing = big_listing(LISTING_BYTES);
    let listing_len = listing.len();
    let gw = GhostWire::start(listing);
    let svc = Service::with_discovery(gw.port(), 20, &[]);
    let port = svc.port();
    let name = format!("pfx-unlisted-{}", std::process::id());
    // A stale reference: the pid is gone, so the netns is not trusted and
    // the name is looked up.
    let stale = json!({"name": name, "netns": 4_026_531_999u64, "pid": dead_pid(), "starttime": 1});
    let q = format!("container={}", urlencode(&stale.to_string()));
    let base_kib = load::rss_kib(svc.pid()).expect("rss");
    let prober = Prober::start(port);
    let t = Instant::now();
    let clients: Vec<_> = (0..CONCURRENT_LOOKUPS)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut s = raw_capture(port, &q);
                read_close(&mut s, Duration::from_secs(30))
            })
        })
        .collect();
    let closes: Vec<Option<(u16, String)>> = clients
        .into_iter()
        .map(|c| c.join().unwrap_or(None))
        .collect();
    let took = t.elapsed();
    let (worst, probes) = prober.finish();
    let peak_kib: u64 = load::status_field(svc.pid(), "VmHWM")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    let asked = gw.mobyshark_requests();
    let refused = closes
        .iter()
        .filter(|c| {
            c.as_ref()
                .is_some_and(|(code, why)| *code == 1008 && why.contains("not listed"))
        })
        .count();
    println!(
        "{CONCURRENT_LOOKUPS} concurrent stale lookups against a {listing_len}-byte listing: {asked} upstream request(s), {refused} answered 'not listed' in {took:?}; /version slowest {worst:?} over {probes} probes (budget {VERSION_BUDGET:?}); service RSS {base_kib} KiB before, peak {peak_kib} KiB (budget {} KiB)",
        RSS_PER_LISTING * listing_len as u64 / 1024
    );
    assert_eq!(asked, 1, "lookups were not shared");
    assert_eq!(
        refused,
        CONCURRENT_LOOKUPS,
        "{:?}",
        closes.iter().find(|c| c.is_none())
    );
    assert!(worst < VERSION_BUDGET, "/version took {worst:?}");
    assert!(
        peak_kib <= RSS_PER_LISTING * listing_len as u64 / 1024,
        "peak RSS {peak_kib} KiB"
    );
}
