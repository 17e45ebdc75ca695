//! A minimal `log` backend: one line per record on stderr, UTC timestamp,
//! level, message. Sessions put their id first in the message (`[c17] ...`).
//! Also the clock formatting the request log needs (no date crate for two
//! formats).
//!
//! Logging never blocks the loop. A record is put in a bounded queue
//! ([`LOG_BUFFER_BYTES`]) and written to stderr by a writer thread; when
//! nobody drains stderr (a stuck log shipper, a pager, a blocking container
//! log driver) that thread waits, the queue fills, and further lines are
//! dropped and counted ([`dropped_lines`]). Once stderr takes lines again
//! the count is logged. stderr is not made non-blocking instead: O_NONBLOCK
//! belongs to the open file description, which a terminal shares with the
//! shell and every other process writing to it, so it would change their
//! stderr too (and outlive us).
//!
//! Every message is escaped here, once, by [`escape_controls`]: whatever a
//! client put into it (paths, headers, filters, close reasons, names), it
//! stays on its one line and cannot forge another.

use std::collections::VecDeque;

use crate::proto::logtext::{escape_controls, iso8601};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

/// Log bytes that may wait for stderr; more is dropped. About 5,000 lines
/// of a busy `--debug` log: enough for a log shipper's hiccup, small beside
/// the service's other bounds.
pub const LOG_BUFFER_BYTES: usize = 512 * 1024;
/// How long the last lines get to reach stderr when the service exits.
const EXIT_FLUSH: Duration = Duration::from_secs(1);

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines dropped since start-up because stderr did not take them.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Lines waiting for stderr, bounded in bytes. No I/O.
#[derive(Debug, Default)]
pub struct LineQueue {
    lines: VecDeque<String>,
    bytes: usize,
    /// Lines taken by the writer and not yet written.
    in_flight: usize,
    /// Dropped and not yet reported in the log.
    unreported: u64,
}

impl LineQueue {
    /// Queues `line`, or drops and counts it if it does not fit in `cap`.
    pub fn push(&mut self, line: String, cap: usize) -> bool {
        if self.bytes + line.len() > cap {
            self.unreported += 1;
            DROPPED.fetch_add(1, Ordering::Relaxed);
            crate::metrics::log_line_dropped();
            return false;
        }
        self.bytes += line.len();
        self.lines.push_back(line);
        true
    }

    /// Everything queued, for the writer; the room is free again.
    pub fn take(&mut self) -> Vec<String> {
        self.bytes = 0;
        self.in_flight = self.lines.len();
        self.lines.drain(..).collect()
    }

    /// Drops since the last call.
    pub fn take_unreported(&mut self) -> u64 {
        std::mem::take(&mut self.unreported)
    }

    fn idle(&self) -> bool {
        self.lines.is_empty() && self.in_flight == 0
    }
}

#[derive(Default)]
struct Shared {
    queue: Mutex<LineQueue>,
    /// Signalled when lines arrive, and when the writer has written a batch.
    changed: Condvar,
}

/// The writer thread: takes what is queued, writes it with blocking writes
/// (only this thread waits on stderr), then reports drops.
fn write_lines(shared: Arc<Shared>) {
    let mut err = std::io::stderr();
    loop {
        let (batch, dropped) = {
            let Ok(mut q) = shared.queue.lock() else {
                return;
            };
            while q.lines.is_empty() && q.unreported == 0 {
                q = match shared.changed.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
            (q.take(), q.take_unreported())
        };
        for line in &batch {
            let _ = err.write_all(line.as_bytes());
        }
        if dropped > 0 {
            let note = format!(
                "{} WARN  {dropped} log lines dropped: stderr was not taking them ({} since start-up)\n",
                iso8601(SystemTime::now()),
                dropped_lines()
            );
            let _ = err.write_all(note.as_bytes());
        }
        if let Ok(mut q) = shared.queue.lock() {
            q.in_flight = 0;
        }
        shared.changed.notify_all();
    }
}

struct Stderr {
    level: log::LevelFilter,
    /// `None` if the writer thread could not start: lines go straight out.
    shared: Option<Arc<Shared>>,
}

impl log::Log for Stderr {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {:5} {}\n",
            iso8601(SystemTime::now()),
            record.level(),
            escape_controls(&record.args().to_string())
        );
        match &self.shared {
            Some(shared) => {
                if let Ok(mut q) = shared.queue.lock() {
                    q.push(line, LOG_BUFFER_BYTES);
                }
                shared.changed.notify_one();
            }
            // A full or closed stderr must not take the service down.
            None => {
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
        }
    }

    /// Waits, at most [`EXIT_FLUSH`], for the queued lines to be written:
    /// called once when the service exits, never from the loop.
    fn flush(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let Ok(q) = shared.queue.lock() else {
            return;
        };
        let _ = shared
            .changed
            .wait_timeout_while(q, EXIT_FLUSH, |q| !q.idle());
    }
}

/// Installs the logger; `debug` lowers the threshold from info to debug.
pub fn init(debug: bool) {
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let shared = Arc::new(Shared::default());
    let writer = Arc::clone(&shared);
    let shared = match crate::service::background::spawn("log-writer", move || write_lines(writer))
    {
        Ok(_) => Some(shared),
        Err(e) => {
            eprintln!("packetflix: cannot start the log writer ({e}); logging to stderr directly");
            None
        }
    };
    if log::set_boxed_logger(Box::new(Stderr { level, shared })).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_byte_bound_are_dropped_counted_and_reported_once() {
        let mut q = LineQueue::default();
        let before = dropped_lines();
        assert!(q.push("a".repeat(60), 100));
        assert!(!q.push("b".repeat(60), 100));
        assert!(q.push("c".repeat(40), 100));
        assert!(!q.push("d".to_string(), 100));
        assert!(dropped_lines() >= before + 2);
        assert_eq!(q.take_unreported(), 2);
        assert_eq!(q.take_unreported(), 0);
        assert_eq!(q.take().len(), 2);
        // Taken lines free the room.
        assert!(q.push("e".repeat(100), 100));
    }
}
