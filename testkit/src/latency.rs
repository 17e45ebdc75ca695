//! `/version` latency seen by a client while a test loads the service: the
//! figure the holding-up tests judge the loop by. Every probe is a fresh
//! connection (`http::version_status`), so a stalled loop shows as a slow
//! or missing answer. Budgets are judged against a baseline taken in the
//! same run, so a machine busy with other work does not fail a test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http;

/// Time between probes.
const PROBE_GAP: Duration = Duration::from_millis(20);
/// Longest a prober runs if nobody stops it.
const PROBE_LIMIT: Duration = Duration::from_secs(60);
/// Probes taken for a baseline.
const BASELINE_PROBES: usize = 20;

/// One `/version` on a fresh connection, timed; `None` if not answered 200.
pub fn timed_version(port: u16) -> Option<Duration> {
    let t = Instant::now();
    (http::version_status(port) == Some(200)).then(|| t.elapsed())
}

/// The slowest of a few probes of an idle service: what the machine adds
/// by itself right now.
pub fn baseline(port: u16) -> Duration {
    (0..BASELINE_PROBES)
        .map(|_| {
            let d = timed_version(port).unwrap_or(Duration::MAX);
            std::thread::sleep(PROBE_GAP);
            d
        })
        .max()
        .unwrap_or(Duration::MAX)
}

/// Probes `/version` until stopped; an unanswered probe counts as
/// `Duration::MAX`. Stops on drop.
pub struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(Duration, usize)>>,
}

impl Prober {
    pub fn start(port: u16) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut worst, mut n) = (Duration::ZERO, 0);
            let until = Instant::now() + PROBE_LIMIT;
            while !st.load(Ordering::Relaxed) && Instant::now() < until {
                worst = worst.max(timed_version(port).unwrap_or(Duration::MAX));
                n += 1;
                std::thread::sleep(PROBE_GAP);
            }
            (worst, n)
        });
        Prober {
            stop,
            thread: Some(thread),
        }
    }

    /// The slowest answer and the number of probes.
    pub fn finish(mut self) -> (Duration, usize) {
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
