//! How the service ends on SIGTERM or SIGINT: it stops accepting, every
//! session is told (captures stop their sources and close with 1001 once
//! those have ended), and the loop runs until every session is gone; past
//! the deadline, the last capture programs are killed and reaped.

use std::time::{Duration, Instant};

use log::{info, warn};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::Reactor;
use crate::proto::session::Event;

/// Extra time, beyond the SIGTERM->SIGKILL deadline, that shutdown gives
/// clients to take their close frames.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Reactor {
    pub(super) fn begin_shutdown(&mut self, sig: Signal, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!(
            "{sig} received: shutting down ({} connections, {} capture programs)",
            self.sessions.len(),
            self.shared.children.len()
        );
        self.front.close(self.poll.registry());
        self.shutdown_deadline = Some(now + self.settings.cfg.term_timeout + SHUTDOWN_GRACE);
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.event(key, None, Event::Shutdown, now);
        }
    }

    /// Last resort at the shutdown deadline: SIGKILL and reap every child.
    pub(super) fn kill_all(&mut self) {
        warn!(
            "shutdown deadline passed: killing {} capture programs",
            self.shared.children.len()
        );
        for &pid in self.shared.children.keys() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        for (pid, _) in self.shared.children.drain() {
            // SIGKILL cannot be ignored; the loop is over, so waiting is fine.
            let _ = waitpid(Pid::from_raw(pid), None);
        }
    }
}
