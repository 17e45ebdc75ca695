//! SIGHUP's reload, off the loop: the token file, certificate and key are
//! read and parsed on a helper thread, and the complete new [`Security`]
//! (or the reason there is none) is handed back to the loop, which then
//! swaps it in between two events.
//!
//! The loop never reads these files itself: even a bounded read of a
//! regular file can wait (a slow or hung network file system), and parsing
//! a key takes time the clients should have. The files' own rules (regular
//! files only, a size bound) are `security`'s. Like the discovery helpers
//! (`lookup`), the thread is fed by a channel holding one job, hands its
//! result back through a mutex-guarded slot and wakes the loop through the
//! loop's one `mio::Waker`. At most one reload runs; SIGHUPs that arrive
//! meanwhile are folded into one more reload after it, so no number of
//! signals grows a queue or starts a second reader. A reload that fails, or
//! that is still reading, leaves the settings in force untouched.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use mio::Waker;

use crate::config::Config;
use crate::service::security::Security;

/// What a reload gives the loop: new settings, or why not.
pub type Outcome = Result<Security, String>;

pub struct Reloader {
    cfg: Arc<Config>,
    waker: Arc<Waker>,
    slot: Arc<Mutex<Option<Outcome>>>,
    jobs: Option<SyncSender<()>>,
    /// A reload is on the thread.
    running: bool,
    /// A SIGHUP came while one was running: run once more after it.
    again: bool,
}

impl Reloader {
    /// Nothing starts until the first SIGHUP.
    pub fn new(cfg: Config, waker: Arc<Waker>) -> Reloader {
        Reloader {
            cfg: Arc::new(cfg),
            waker,
            slot: Arc::default(),
            jobs: None,
            running: false,
            again: false,
        }
    }

    /// SIGHUP: starts a reload, or folds this one into the next if one is
    /// running. An error means no reload could be started (no thread).
    pub fn request(&mut self) -> Result<(), String> {
        if self.running {
            self.again = true;
            return Ok(());
        }
        self.start()
    }

    /// The loop was woken: the finished reload's outcome, if one finished
    /// (a folded SIGHUP's reload starts now).
    pub fn take(&mut self) -> Option<Outcome> {
        if !self.running {
            return None;
        }
        let outcome = self.slot.lock().ok()?.take()?;
        self.running = false;
        if std::mem::take(&mut self.again) {
            if let Err(e) = self.start() {
                log::warn!("SIGHUP: {e}");
            }
        }
        Some(outcome)
    }

    /// Whether a reload is on the thread now.
    pub fn running(&self) -> bool {
        self.running
    }

    fn start(&mut self) -> Result<(), String> {
        if self.jobs.is_none() {
            let (tx, rx) = sync_channel::<()>(1);
            let (cfg, slot, waker) = (
                Arc::clone(&self.cfg),
                Arc::clone(&self.slot),
                Arc::clone(&self.waker),
            );
            crate::service::background::spawn("reload", move || reloader(rx, &cfg, slot, waker))
                .map_err(|e| format!("cannot start the reload thread: {e}"))?;
            self.jobs = Some(tx);
        }
        match self.jobs.as_ref().map(|tx| tx.try_send(())) {
            Some(Ok(())) => {
                self.running = true;
                Ok(())
            }
            _ => {
                self.jobs = None;
                Err("the reload thread is gone".into())
            }
        }
    }
}

/// The reload thread: one complete load per job.
fn reloader(
    jobs: Receiver<()>,
    cfg: &Config,
    slot: Arc<Mutex<Option<Outcome>>>,
    waker: Arc<Waker>,
) {
    while jobs.recv().is_ok() {
        let outcome = Security::load(cfg);
        if let Ok(mut s) = slot.lock() {
            *s = Some(outcome);
        }
        let _ = waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Polls until the reloader hands an outcome back (bounded).
    fn outcome(poll: &mut mio::Poll, r: &mut Reloader) -> Option<Outcome> {
        let mut events = mio::Events::with_capacity(4);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .ok()?;
            if let Some(o) = r.take() {
                return Some(o);
            }
        }
        None
    }

    fn reloader(token_file: &std::path::Path) -> (mio::Poll, Reloader) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(7)).unwrap());
        let cfg = Config {
            token_file: Some(token_file.to_path_buf()),
            ..Config::default()
        };
        (poll, Reloader::new(cfg, waker))
    }

    #[test]
    fn a_reload_runs_off_the_calling_thread_and_hands_back_the_new_settings() {
        let path = std::env::temp_dir().join(format!("pfx-reload-ok-{}", std::process::id()));
        std::fs::write(&path, "tok\n").unwrap();
        let (mut poll, mut r) = reloader(&path);
        assert!(r.take().is_none(), "nothing before a SIGHUP");
        r.request().unwrap();
        assert!(r.running());
        let got = outcome(&mut poll, &mut r);
        let _ = std::fs::remove_file(&path);
        let s = got.expect("an outcome").expect("settings");
        assert!(s.policy.token_ok(Some(b"Bearer tok")));
        assert!(!r.running());
    }

    #[test]
    fn sighups_during_a_reload_fold_into_one_more_and_a_fifo_fails_at_once() {
        let path = std::env::temp_dir().join(format!("pfx-reload-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (mut poll, mut r) = reloader(&path);
        for _ in 0..1000 {
            r.request().unwrap();
        }
        let first = outcome(&mut poll, &mut r);
        // The folded SIGHUPs: exactly one more reload, then none.
        assert!(r.running());
        let second = outcome(&mut poll, &mut r);
        let _ = std::fs::remove_file(&path);
        for o in [first, second] {
            let e = o.expect("an outcome").err().expect("an error");
            assert!(e.contains("not a regular file (a FIFO)"), "{e}");
        }
        assert!(!r.running() && r.take().is_none());
    }
}
