//! The poll loop: one thread, one `mio::Poll`, everything non-blocking.
//!
//! It polls, routes each event to the session its token names (through the
//! driver), fires deadlines from one heap, and reads a signalfd (SIGCHLD
//! for reaping, SIGTERM/SIGINT for shutdown, SIGHUP for a reload), and it
//! sleeps in `poll` until the next event or the nearest deadline. What to
//! do with bytes is the sessions' business; who gets a slot is
//! [`accept`]'s, how the service ends is [`shutdown`]'s; no file is read in
//! the loop: a SIGHUP reload runs on a helper thread (`crate::service::reload`).
//!
//! Slab keys are reused, so sessions are removed only at the end of an event
//! batch: an event still queued for a finished session never reaches a new
//! one that takes its key within the same batch.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use slab::Slab;

use crate::config::{CaptureEngine, Config};
use crate::metrics;
use crate::proto::session::Event;
use crate::service::driver::{Ctx, Entry, Settings, Shared, Tok};
use crate::service::engine::{Done, Opened, Rings};
use crate::service::lookup::{Delivery, Discovery, Waiter};
use crate::service::native::sweep_period;

mod accept;
mod shutdown;

pub use accept::{bind, bind_on};

const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
/// Size of the loop's one read buffer: a full default pipe (64 KiB) per read.
const READ_BUF: usize = 64 * 1024;

/// Deadlines: a binary heap of (when, key, session id), checked lazily
/// against the session's current deadline.
#[derive(Default)]
pub struct Timers {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, usize, u64)>>,
}

impl Timers {
    pub fn arm(&mut self, when: Instant, key: usize, id: u64) {
        self.heap.push(std::cmp::Reverse((when, key, id)));
    }

    /// The earliest deadline that `live` still holds (given when, key and
    /// session id); stale entries on top are dropped on the way, so the
    /// loop never wakes for a deadline a session has already cleared (an
    /// idle capture's spent head deadline, say).
    pub fn next_live(&mut self, live: impl Fn(Instant, usize, u64) -> bool) -> Option<Instant> {
        while let Some(&std::cmp::Reverse((when, key, id))) = self.heap.peek() {
            if live(when, key, id) {
                return Some(when);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes and returns a deadline due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64)> {
        match self.heap.peek() {
            Some(r) if r.0 .0 <= now => self.heap.pop().map(|r| (r.0 .1, r.0 .2)),
            _ => None,
        }
    }
}

pub struct Reactor {
    poll: Poll,
    signals: SignalFd,
    sessions: Slab<Entry>,
    timers: Timers,
    buf: Vec<u8>,
    /// Keys that saw an event this batch; checked for removal at its end.
    touched: Vec<usize>,
    /// Captures running, one per target (each session's share in
    /// `Io::counted`).
    captures: usize,
    settings: Settings,
    shared: Shared,
    front: accept::Front,
    /// SIGHUP's reload, read on a helper thread (see `reload`).
    reloader: crate::service::reload::Reloader,
    /// When the swept native captures are read next (none swept: `None`).
    sweep_at: Option<Instant>,
    /// When native captures with an interface down are read again (none:
    /// `None`).
    recheck_at: Option<Instant>,
    shutdown_deadline: Option<Instant>,
}

impl Reactor {
    /// Sets up the loop around a bound listener. Blocks SIGCHLD, SIGTERM,
    /// SIGINT and SIGHUP for this thread so they arrive through the signalfd
    /// only. Loads tokens and certificate; failing that, it fails.
    pub fn new(cfg: Config, listener: std::net::TcpListener) -> io::Result<Reactor> {
        let poll = Poll::new()?;
        // mio allows one waker per poll: the discovery helpers and the
        // reload thread share it.
        let waker = std::sync::Arc::new(mio::Waker::new(
            poll.registry(),
            crate::service::lookup::WAKE,
        )?);
        let reloader = crate::service::reload::Reloader::new(cfg.clone(), waker.clone());
        let engine = match cfg.capture_engine {
            CaptureEngine::Native => Some(
                crate::service::engine::Engine::start(waker.clone(), cfg.max_captures).map_err(
                    |e| io::Error::other(format!("cannot start the native capture engine: {e}")),
                )?,
            ),
            CaptureEngine::Dumpcap => None,
        };
        let discovery = Discovery::new(
            &cfg.discovery_service,
            cfg.gw_port,
            cfg.discovery_timeout,
            waker,
        );
        let front = accept::Front::new(listener, poll.registry(), LISTENER)?;
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGHUP);
        let security = crate::service::security::Security::load(&cfg).map_err(io::Error::other)?;
        mask.thread_block()?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        poll.registry().register(
            &mut SourceFd(&signals.as_fd().as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        let privileges = crate::service::privileges::init();
        if let Some(why) = privileges.refusal() {
            warn!("{why}: every capture will be refused");
        } else if privileges.ambient {
            info!("not root: capture programs get CAP_NET_ADMIN and CAP_NET_RAW as ambient capabilities");
        }
        Ok(Reactor {
            poll,
            signals,
            sessions: Slab::new(),
            timers: Timers::default(),
            buf: vec![0; READ_BUF],
            touched: Vec::new(),
            captures: 0,
            settings: Settings {
                cfg,
                security,
                ambient: privileges.ambient,
                no_capture: privileges.refusal(),
                own_netns: crate::service::netns::inode_of(std::path::Path::new(
                    "/proc/self/ns/net",
                )),
            },
            shared: Shared {
                children: HashMap::new(),
                again: Vec::new(),
                discovery,
                namespaces: Default::default(),
                handshakes: Default::default(),
                throttle: Default::default(),
                engine,
                opening: HashMap::new(),
                ringing: HashMap::new(),
                next_ticket: 1,
                swept: Vec::new(),
                rechecks: Vec::new(),
            },
            front,
            reloader,
            sweep_at: None,
            recheck_at: None,
            shutdown_deadline: None,
        })
    }

    /// The discovery service as start-up reports it.
    pub fn discovery_service(&self) -> String {
        self.shared.discovery.describe()
    }

    /// Runs until shutdown has ended every session and reaped every child.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<(Token, bool, bool)> = Vec::with_capacity(1024);
        loop {
            let timeout = if self.shared.again.is_empty() {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            self.shared.handshakes.new_turn();
            ready.clear();
            ready.extend(events.iter().map(|e| {
                let readable = e.is_readable() || e.is_read_closed() || e.is_error();
                (e.token(), readable, e.is_writable() || e.is_write_closed())
            }));
            for &(tok, readable, writable) in &ready {
                match tok {
                    LISTENER => self.accept(now),
                    SIGNALS => self.on_signals(now),
                    crate::service::lookup::WAKE => {
                        let d = self.shared.discovery.on_wake(self.poll.registry(), now);
                        self.deliver(d, now);
                        if let Some(outcome) = self.reloader.take() {
                            self.reloaded(outcome);
                        }
                        self.on_engine(now);
                    }
                    crate::service::lookup::CALL => self.on_discovery_call(now),
                    _ => self.dispatch(tok, None, readable, writable, now),
                }
            }
            for (tok, id) in std::mem::take(&mut self.shared.again) {
                if tok == crate::service::lookup::CALL {
                    self.on_discovery_call(now);
                } else {
                    self.dispatch(tok, Some(id), true, false, now);
                }
            }
            self.fire_timers(now);
            self.remove_finished();
            self.sweep_at = match (self.shared.swept.is_empty(), self.sweep_at) {
                (true, _) => None,
                (false, None) => Some(now + sweep_period(self.shared.swept.len())),
                (false, at) => at,
            };
            self.recheck_at = match (self.shared.rechecks.is_empty(), self.recheck_at) {
                (true, _) => None,
                (false, None) => Some(now + crate::service::native::RECHECK),
                (false, at) => at,
            };
            if self.shutdown_deadline.is_some() {
                if self.sessions.is_empty() {
                    info!("shutdown complete");
                    return Ok(());
                }
                if self.shutdown_deadline.is_some_and(|d| d <= now) {
                    self.kill_all();
                    return Ok(());
                }
            }
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        let sessions = &self.sessions;
        let timer = self.timers.next_live(|when, key, id| {
            sessions
                .get(key)
                .is_some_and(|e| e.session.id == id && e.session.poll_timeout() == Some(when))
        });
        [
            timer,
            self.front.paused_until(),
            self.sweep_at,
            self.recheck_at,
            self.shutdown_deadline,
            self.shared.discovery.deadline(),
            self.shared.namespaces.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The driver's view of the loop for one event.
    fn ctx(&mut self, now: Instant) -> (Ctx<'_>, &mut Slab<Entry>) {
        (
            Ctx {
                registry: self.poll.registry(),
                settings: &self.settings,
                shared: &mut self.shared,
                buf: &mut self.buf,
                captures: self.captures,
                now,
            },
            &mut self.sessions,
        )
    }

    /// Readiness of a session's descriptor (`id`: only for that session,
    /// when the event is a "read again" from an earlier turn).
    fn dispatch(
        &mut self,
        tok: Token,
        id: Option<u64>,
        readable: bool,
        writable: bool,
        now: Instant,
    ) {
        let Tok { key, src } = Tok::of(tok);
        let (mut cx, sessions) = self.ctx(now);
        let Some(entry) = sessions.get_mut(key) else {
            return;
        };
        if id.is_some_and(|id| id != entry.session.id) || entry.session.finished() {
            return;
        }
        entry.on_ready(&mut cx, key, src, readable, writable);
        self.settle(key, false);
    }

    /// Hands a later event to session `key` (if it is still session `id`).
    fn event(&mut self, key: usize, id: Option<u64>, ev: Event, now: Instant) {
        let (mut cx, sessions) = self.ctx(now);
        let Some(entry) = sessions.get_mut(key) else {
            return;
        };
        if id.is_some_and(|id| id != entry.session.id) {
            return;
        }
        entry.on_event(&mut cx, key, ev);
        self.settle(key, false);
    }

    /// The native engine finished opens, or set up a capture's rings:
    /// each goes to its session (a session gone meanwhile has its capture
    /// or rings closed).
    fn on_engine(&mut self, now: Instant) {
        let Some(engine) = self.shared.engine.as_ref() else {
            return;
        };
        let done: Vec<_> = std::iter::from_fn(|| engine.next()).collect();
        for d in done {
            match d {
                Done::Opened(o) => self.on_opened(o, now),
                Done::Rings(r) => self.on_rings(r, now),
            }
        }
    }

    /// Whether `who` is a session still running.
    fn running(&self, who: Option<(usize, u64, usize)>) -> Option<(usize, u64, usize)> {
        who.filter(|(key, id, _)| {
            self.sessions
                .get(*key)
                .is_some_and(|e| e.session.id == *id && !e.session.finished())
        })
    }

    fn on_opened(&mut self, o: Opened, now: Instant) {
        let who = self.shared.opening.remove(&o.ticket);
        let Some((key, id, target)) = self.running(who) else {
            if let (Ok(c), Some(engine)) = (o.result, self.shared.engine.as_ref()) {
                engine.close(c);
            }
            return;
        };
        debug!(
            "[c{id}] target {target}'s capture: {} after {:?}",
            if o.result.is_ok() {
                "live"
            } else {
                "not opened"
            },
            o.took
        );
        if o.result.is_ok() {
            // Its rings come next (one answer for every capture opened).
            self.shared.ringing.insert(o.ticket, (key, id, target));
        }
        let (mut cx, sessions) = self.ctx(now);
        if let Some(entry) = sessions.get_mut(key) {
            entry.opened(&mut cx, key, target, o.result);
        }
        self.settle(key, false);
    }

    fn on_rings(&mut self, r: Rings, now: Instant) {
        let who = self.shared.ringing.remove(&r.ticket);
        let Some((key, id, target)) = self.running(who) else {
            if let Some(engine) = self.shared.engine.as_ref() {
                engine.close(r);
            }
            return;
        };
        debug!(
            "[c{id}] target {target}'s rings: {} ready after {:?}",
            r.ready(),
            r.took
        );
        let (mut cx, sessions) = self.ctx(now);
        if let Some(entry) = sessions.get_mut(key) {
            entry.rings(&mut cx, key, target, r);
        } else if let Some(engine) = cx.shared.engine.as_ref() {
            engine.close(r);
        }
        self.settle(key, false);
    }

    fn fire_timers(&mut self, now: Instant) {
        if self.sweep_at.is_some_and(|t| t <= now) {
            // Every swept native capture is read on this one wakeup.
            let swept = self.shared.swept.clone();
            for (key, id, target) in swept {
                let tok = Tok::new(key, crate::proto::session::Source::Output(target)).token();
                self.dispatch(tok, Some(id), true, false, now);
            }
            self.sweep_at = Some(now + sweep_period(self.shared.swept.len()));
        }
        if self.recheck_at.is_some_and(|t| t <= now) {
            // Captures with an interface down: an empty read checks
            // whether it is gone.
            for (key, id, target) in self.shared.rechecks.clone() {
                let tok = Tok::new(key, crate::proto::session::Source::Output(target)).token();
                self.dispatch(tok, Some(id), true, false, now);
            }
            self.recheck_at = Some(now + crate::service::native::RECHECK);
        }
        if self.front.paused_until().is_some_and(|t| t <= now) {
            self.front.resume();
            self.accept(now);
        }
        if self.shared.discovery.deadline().is_some_and(|t| t <= now) {
            let d = self.shared.discovery.on_timer(self.poll.registry(), now);
            self.deliver(d, now);
        }
        if self.shared.namespaces.deadline().is_some_and(|t| t <= now) {
            let waiters = self.shared.namespaces.on_timer(now);
            self.deliver(
                waiters
                    .into_iter()
                    .map(|w| (w, Delivery::Rescanned))
                    .collect(),
                now,
            );
        }
        while let Some((key, id)) = self.timers.pop_due(now) {
            let Some(entry) = self.sessions.get(key) else {
                continue;
            };
            // Stale heap entries (deadline moved or session replaced) are
            // skipped here rather than searched for when re-armed.
            if entry.session.id != id || entry.session.poll_timeout().is_none_or(|d| d > now) {
                continue;
            }
            let (mut cx, sessions) = self.ctx(now);
            if let Some(entry) = sessions.get_mut(key) {
                entry.on_event(&mut cx, key, Event::Timeout);
            }
            self.settle(key, true);
        }
    }

    /// The shared discovery exchange's socket is ready (or has data left
    /// from its last turn).
    fn on_discovery_call(&mut self, now: Instant) {
        let d = self
            .shared
            .discovery
            .on_call_ready(self.poll.registry(), now);
        if self.shared.discovery.call_has_more() {
            self.shared.again.push((crate::service::lookup::CALL, 0));
        }
        self.deliver(d, now);
    }

    /// Hands the shared discovery work's results to the sessions waiting for
    /// them; a session that ended or moved on meanwhile ignores its own.
    fn deliver(&mut self, deliveries: Vec<(Waiter, Delivery)>, now: Instant) {
        for ((key, id), delivery) in deliveries {
            let ev = match delivery {
                Delivery::Listing(l) => Event::Listing(l),
                Delivery::Rescanned => Event::Rescanned,
                Delivery::Address(a) => Event::Address(a),
            };
            self.event(key, Some(id), ev, now);
        }
    }

    /// After a session handled an event: its key is checked for removal at
    /// the batch's end, the count of running captures follows its phase
    /// (one per target), and its deadline is in the heap. `fired`: its
    /// deadline just left the heap.
    fn settle(&mut self, key: usize, fired: bool) {
        self.touched.push(key);
        let Some(e) = self.sessions.get_mut(key) else {
            return;
        };
        let weight = e.session.capture_weight();
        if weight != e.io.counted {
            self.captures = self.captures + weight - e.io.counted;
            e.io.counted = weight;
            metrics::CAPTURES_RUNNING.set(self.captures as i64);
        }
        if fired {
            e.io.armed = None;
        }
        let due = e.session.poll_timeout();
        if due != e.io.armed {
            if let Some(when) = due {
                self.timers.arm(when, key, e.session.id);
            }
            e.io.armed = due;
        }
    }

    fn remove_finished(&mut self) {
        self.front.batch_done();
        for key in std::mem::take(&mut self.touched) {
            if self.sessions.get(key).is_some_and(|e| e.session.finished()) {
                let mut e = self.sessions.remove(key);
                let id = e.session.id;
                self.shared.swept.retain(|w| (w.0, w.1) != (key, id));
                self.shared.rechecks.retain(|w| (w.0, w.1) != (key, id));
                if let Some(peer) = e.io.conn.sock.counted() {
                    self.shared.handshakes.done(peer);
                }
                metrics::CONNECTIONS_OPEN.dec();
                self.captures -= e.io.counted;
                metrics::CAPTURES_RUNNING.set(self.captures as i64);
                let _ = self.poll.registry().deregister(e.io.conn.sock.tcp());
                debug!("[c{}] connection closed", e.session.id);
            }
        }
    }

    fn on_signals(&mut self, now: Instant) {
        let mut reap = false;
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => reap = true,
                    Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) => self.begin_shutdown(sig, now),
                    Ok(Signal::SIGHUP) => self.reload(),
                    _ => {}
                },
                Ok(None) => break,
                Err(e) => {
                    warn!("reading the signalfd failed: {e}");
                    break;
                }
            }
        }
        // SIGCHLDs coalesce: one may stand for several exits, so reap all.
        if reap {
            self.reap(now);
        }
    }

    /// SIGHUP: new tokens and certificate for new connections, read on the
    /// reload thread (the loop serves on meanwhile); running sessions keep
    /// what they started with.
    fn reload(&mut self) {
        if let Err(e) = self.reloader.request() {
            warn!("SIGHUP: reload failed, keeping the previous tokens and certificate: {e}");
        }
    }

    /// The reload thread is done. A failed load changes nothing.
    fn reloaded(&mut self, outcome: crate::service::reload::Outcome) {
        match outcome {
            Ok(s) => {
                info!("SIGHUP: reloaded: {}", s.describe());
                self.settings.security = s;
            }
            Err(e) => {
                warn!("SIGHUP: reload failed, keeping the previous tokens and certificate: {e}")
            }
        }
    }

    fn reap(&mut self, now: Instant) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let Some(pid) = status.pid() else {
                continue;
            };
            let Some(key) = self.shared.children.remove(&pid.as_raw()) else {
                debug!("reaped unknown child {pid}: {status:?}");
                continue;
            };
            metrics::exited(metrics::Exit::of(&status));
            let pid = pid.as_raw() as u32;
            let Some(target) = self.sessions.get(key).and_then(|e| e.target_of(pid)) else {
                continue;
            };
            let status = crate::service::driver::exit_status(&status);
            self.event(key, None, Event::Exited(target, status), now);
        }
    }
}
