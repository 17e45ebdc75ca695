//! Bounded namespace lookups: what scans of `/proc/*/ns/net` and of the
//! `nsfs` mounts learned (inode -> where it was seen), and when the next
//! scan may run.
//!
//! A scan stats every process's namespace link: tens of milliseconds on a
//! host with thousands of processes, all of it time the loop cannot serve
//! anyone. So a lookup first tries the target's own process and the place
//! the inode was last seen (each re-checked on the opened descriptor before
//! it is trusted, see [`netns::open_checked`]); only an inode found nowhere
//! needs a scan, and scans start at most once per [`SCAN_INTERVAL`]. A
//! scan reads `/proc` in slices of at most [`SCAN_SLICE`], one per loop
//! turn, so clients are served between them. A lookup that misses waits for
//! the next scan that starts after it was asked (a namespace made just
//! before the request is still found), and every lookup waiting then is
//! answered by that one scan, however many there are.
//!
//! Never blocks on anything but local procfs reads; one slice (and one
//! read of the mount table) is the longest the loop is held here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::debug;

use crate::proto::session::LocateError;
use crate::service::lookup::Waiter;
use crate::service::netns::{self, Netns};

/// Shortest time between the starts of two scans. Bounds the loop time
/// scans can take to one scan per interval (about 30 ms of 200 ms on a host
/// with 6,000 processes, in slices) whatever clients ask, while a lookup
/// that needs a scan waits about this long for it.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(200);
/// Most lookups waiting for the next scan; more are refused at once.
pub const MAX_WAITING: usize = 65_536;

/// The answer to one lookup.
#[derive(Debug)]
pub enum Found {
    Held(Netns),
    Missing(LocateError),
    /// Asked again (with the same `asked_at`) once the session is told the
    /// next scan ran.
    Wait,
}

/// A scan in progress: `/proc` read a slice per loop turn.
struct Scan {
    started: Instant,
    dir: Option<std::fs::ReadDir>,
    seen: HashMap<u64, PathBuf>,
}

#[derive(Default)]
pub struct Namespaces {
    /// Where each namespace inode was seen by the last scan (or a lookup).
    seen: HashMap<u64, PathBuf>,
    /// When the last completed scan started.
    last_scan: Option<Instant>,
    scan: Option<Scan>,
    waiters: Vec<Waiter>,
}

impl Namespaces {
    /// Finds and holds the network namespace `inode`; `hint_pid` (if not 0)
    /// is tried first. `asked_at`: when the request came, so that a miss is
    /// only final after a scan that started later.
    pub fn find(
        &mut self,
        inode: u64,
        hint_pid: u32,
        asked_at: Instant,
        now: Instant,
        waiter: Waiter,
    ) -> Found {
        if hint_pid != 0 {
            let path = PathBuf::from(format!("/proc/{hint_pid}/ns/net"));
            if let Some(ns) = netns::open_checked(&path, inode) {
                return Found::Held(ns);
            }
        }
        if let Some(path) = self.seen.get(&inode) {
            match netns::open_checked(path, inode) {
                Some(ns) => return Found::Held(ns),
                // Gone or reused: forget it, the scan will tell.
                None => {
                    self.seen.remove(&inode);
                }
            }
        }
        if self.last_scan.is_some_and(|t| t >= asked_at) {
            return Found::Missing(LocateError::NotFound { netns: inode });
        }
        if self.waiters.len() >= MAX_WAITING {
            return Found::Missing(LocateError::TooManyWaiting { netns: inode });
        }
        self.waiters.push(waiter);
        if self.scan.is_none() && self.scan_due(now) {
            self.start_scan(now);
        }
        Found::Wait
    }

    /// When [`Namespaces::on_timer`] has work: now while a scan runs (one
    /// slice per loop turn), else when the next scan may start.
    pub fn deadline(&self) -> Option<Instant> {
        if self.scan.is_some() {
            return Some(self.scan.as_ref().map_or_else(Instant::now, |s| s.started));
        }
        if self.waiters.is_empty() {
            return None;
        }
        Some(
            self.last_scan
                .map_or_else(Instant::now, |t| t + SCAN_INTERVAL),
        )
    }

    /// Runs one slice of the scan (starting it if due). Once it is complete,
    /// returns the waiters, to be asked again.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Waiter> {
        if self.scan.is_none() {
            if self.waiters.is_empty() || !self.scan_due(now) {
                return Vec::new();
            }
            self.start_scan(now);
        }
        if !self.scan_slice() {
            return Vec::new();
        }
        std::mem::take(&mut self.waiters)
    }

    fn scan_due(&self, now: Instant) -> bool {
        self.last_scan
            .is_none_or(|t| now.saturating_duration_since(t) >= SCAN_INTERVAL)
    }

    fn start_scan(&mut self, now: Instant) {
        self.scan = Some(Scan {
            started: now,
            dir: std::fs::read_dir("/proc").ok(),
            seen: HashMap::new(),
        });
    }

    /// Reads `/proc` for at most [`SCAN_SLICE`]; true once the scan is
    /// complete (the bind mounts are read last, in one go).
    fn scan_slice(&mut self) -> bool {
        let Some(scan) = self.scan.as_mut() else {
            return true;
        };
        let t = Instant::now();
        if let Some(dir) = scan.dir.as_mut() {
            let mut n = 0usize;
            loop {
                let Some(entry) = dir.next() else {
                    scan.dir = None;
                    break;
                };
                if let Ok(entry) = entry {
                    netns::note_process(&entry.file_name(), &mut scan.seen);
                }
                n += 1;
                if n % CLOCK_EVERY == 0 && t.elapsed() >= SCAN_SLICE {
                    return false;
                }
            }
        }
        let Some(mut scan) = self.scan.take() else {
            return true;
        };
        netns::note_mounts(&mut scan.seen);
        debug!(
            "namespace scan: {} namespaces, the last slice {:?}",
            scan.seen.len(),
            t.elapsed()
        );
        self.seen = scan.seen;
        self.last_scan = Some(scan.started);
        true
    }
}

/// The most loop time one slice of a scan takes; other clients are served
/// between slices.
pub const SCAN_SLICE: Duration = Duration::from_millis(5);
/// `/proc` entries between two looks at the clock.
const CLOCK_EVERY: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn own_inode() -> Option<u64> {
        std::fs::metadata("/proc/self/ns/net").ok().map(|m| m.ino())
    }

    /// Runs scan slices until the scan completes; the waiters it returns.
    fn finish_scan(n: &mut Namespaces, now: Instant) -> Vec<Waiter> {
        for _ in 0..100_000 {
            if n.scan.is_none() && n.deadline().is_none_or(|d| d > now) {
                return Vec::new();
            }
            let w = n.on_timer(now);
            if n.scan.is_none() {
                return w;
            }
        }
        panic!("scan did not complete");
    }

    #[test]
    fn a_miss_waits_for_a_scan_that_started_after_the_request() {
        let mut n = Namespaces::default();
        let t0 = Instant::now();
        // The first miss starts a scan and waits for it.
        assert!(matches!(n.find(1, 0, t0, t0, (0, 1)), Found::Wait));
        assert_eq!(finish_scan(&mut n, t0), vec![(0, 1)]);
        assert!(matches!(n.find(1, 0, t0, t0, (0, 1)), Found::Missing(_)));
        // A later request within the interval waits for the next scan...
        let t1 = t0 + Duration::from_millis(10);
        assert!(matches!(n.find(2, 0, t1, t1, (0, 2)), Found::Wait));
        assert!(matches!(n.find(3, 0, t1, t1, (0, 3)), Found::Wait));
        assert_eq!(n.deadline(), Some(t0 + SCAN_INTERVAL));
        // ...which does not start before the interval...
        assert!(n.on_timer(t1).is_empty());
        assert!(n.scan.is_none());
        // ...and then answers every waiter with one scan.
        let t2 = t0 + SCAN_INTERVAL;
        assert_eq!(finish_scan(&mut n, t2), vec![(0, 2), (0, 3)]);
        assert!(matches!(n.find(2, 0, t1, t2, (0, 2)), Found::Missing(_)));
        assert_eq!(n.deadline(), None);
    }

    #[test]
    fn a_namespace_seen_by_a_scan_is_found_again_without_one() {
        let Some(ino) = own_inode() else {
            return;
        };
        let mut n = Namespaces::default();
        let t0 = Instant::now();
        assert!(matches!(n.find(ino, 0, t0, t0, (0, 1)), Found::Wait));
        assert_eq!(finish_scan(&mut n, t0), vec![(0, 1)]);
        assert!(matches!(n.find(ino, 0, t0, t0, (0, 1)), Found::Held(_)));
        // Within the interval, with no hint: found where it was seen.
        let t1 = t0 + Duration::from_millis(1);
        match n.find(ino, 0, t1, t1, (0, 2)) {
            Found::Held(ns) => assert_eq!(ns.inode, ino),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stale_place_is_rechecked_not_trusted() {
        let Some(ino) = own_inode() else {
            return;
        };
        let mut n = Namespaces::default();
        // Claim inode 7 lives where our namespace is: the open descriptor's
        // inode differs, so it is not taken.
        assert_ne!(ino, 7);
        n.seen.insert(7, PathBuf::from("/proc/self/ns/net"));
        let asked = Instant::now();
        n.last_scan = Some(asked + Duration::from_millis(1));
        assert!(matches!(
            n.find(7, 0, asked, asked, (0, 1)),
            Found::Missing(_)
        ));
        assert!(!n.seen.contains_key(&7));
    }
}
