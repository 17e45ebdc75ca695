//! One target's source of the native engine as the driver holds it: the
//! open in flight, then the capture's rings, read in one of two ways the
//! loop chooses by the capture's rate, then its end (the interface
//! statistics, then the end the machine is told).
//!
//! **Immediate or swept.** A quiet capture's ring descriptors are watched
//! by the poll: the kernel wakes the loop per packet while it sleeps, so a
//! packet goes out within about 0.1 ms and an idle capture costs nothing.
//! A capture woken more than [`SWEEP_ABOVE`] times in a [`WINDOW`] (or
//! whose client is not keeping up) is taken off the poll and read on the
//! loop's one shared sweep timer instead, together with every other busy
//! capture: one wakeup serves them all, each read in a batch, and an empty
//! ring costs one memory read. It goes back to the poll when a window
//! brings fewer than [`IMMEDIATE_BELOW`] packets. The sweep period grows
//! with the number of swept captures ([`sweep_period`]) within the latency
//! budget.
//!
//! **An interface that went down** is checked again every [`RECHECK`]
//! until a packet shows it is up, or it turns out gone (deleting an
//! interface takes it down first, and only that is reported to the
//! socket: its removal a moment later wakes nobody).
//!
//! A capture is never dropped here: its rings go to the engine's closer
//! threads (closing one takes the kernel 25-30 ms), on every path.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::proto::session::{Read, SourceEnd};
use crate::service::engine::{Capture, Closer, OpenError, Rings};

/// How long the rate of a capture is measured before its mode is decided.
pub const WINDOW: Duration = Duration::from_millis(100);
/// Wakeups per window above which a capture is swept: 500 a second, where
/// one wakeup per packet (35-70 µs each on this VM) starts to cost more
/// than a share of the sweep.
pub const SWEEP_ABOVE: u32 = 50;
/// Packets per window below which a swept capture is watched again: 200 a
/// second, well under where it was swept, so a rate near the border does
/// not flip the mode every window.
pub const IMMEDIATE_BELOW: u64 = 20;
/// The shortest and the longest sweep period.
pub const SWEEP_MIN: Duration = Duration::from_millis(1);
pub const SWEEP_MAX: Duration = Duration::from_micros(2500);
/// Sweep period per swept capture: one message per capture per sweep costs
/// a few microseconds, so the period grows with the captures (1 ms up to 80
/// of them, 2.5 ms from 200) to keep the messages a second bounded.
pub const SWEEP_PER_CAPTURE: Duration = Duration::from_nanos(12_500);

/// How often a capture whose interface went down is checked for being
/// gone: libpcap's own poll timeout while an interface is down is a
/// second; a tenth of that ends such a capture about as fast as dumpcap
/// notices, at a cost of ten cheap system calls a second.
pub const RECHECK: Duration = Duration::from_millis(100);

/// The sweep period for `swept` captures.
pub fn sweep_period(swept: usize) -> Duration {
    (SWEEP_PER_CAPTURE * u32::try_from(swept).unwrap_or(u32::MAX)).clamp(SWEEP_MIN, SWEEP_MAX)
}

/// How a capture's rings are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Watched by the poll (a wakeup per packet while the loop sleeps).
    Immediate,
    /// Read on the shared sweep timer.
    Swept,
}

enum State {
    /// The engine opens the rings.
    Opening,
    Running(Box<Capture>),
    /// The interface statistics still to hand out, then the end.
    Finishing {
        rest: Vec<u8>,
        at: usize,
        end: SourceEnd,
    },
    /// Everything is out: the end is next.
    Ended(SourceEnd),
    Done,
}

/// One target's native source.
pub struct Native {
    state: State,
    /// The machine asked it to stop.
    stopping: bool,
    mode: Mode,
    /// Registered with the poll (immediate mode, rings open).
    watched: bool,
    window_start: Instant,
    wakeups: u32,
    packets: u64,
    closer: Closer,
    /// The poll token its rings are registered under.
    token: Token,
    /// When its sockets were last asked for errors.
    checked: Instant,
    /// The loop turn (its time) in which a read emptied the rings: another
    /// read in the same turn would only catch the packets that trickled in
    /// meanwhile, a message and a `writev` for one or two packets each, so
    /// it waits for the next wakeup or sweep.
    emptied: Option<Instant>,
    /// Packets the kernel dropped for it, once it ended (for `/metrics`).
    pub dropped: u64,
}

/// What the driver must do after a read.
#[derive(Debug, PartialEq, Eq)]
pub enum Switch {
    Stay,
    /// Now swept: onto the sweep list.
    ToSwept,
    /// Now watched by the poll again: off the sweep list.
    ToImmediate,
    /// Over: off the sweep list if it was there.
    Gone,
}

impl Native {
    /// A source whose rings are being opened.
    pub fn opening(closer: Closer, token: Token, now: Instant) -> Native {
        Native {
            state: State::Opening,
            stopping: false,
            mode: Mode::Immediate,
            watched: false,
            window_start: now,
            wakeups: 0,
            packets: 0,
            closer,
            token,
            checked: now,
            emptied: None,
            dropped: 0,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// An interface of its went down and has brought no packet since: it
    /// must be read again every [`RECHECK`] (an empty read checks whether
    /// it is gone).
    pub fn needs_recheck(&self) -> bool {
        matches!(&self.state, State::Running(c) if c.down())
    }

    /// The engine's answer to the open. The caller reads the output next
    /// (the stream's head, or the end).
    pub fn opened(
        &mut self,
        result: Result<Capture, OpenError>,
        registry: &Registry,
    ) -> io::Result<()> {
        match result {
            Ok(c) => {
                let c = Box::new(c);
                let watch = if self.stopping {
                    Ok(())
                } else {
                    watch(registry, &c, self.token)
                };
                self.watched = watch.is_ok() && !self.stopping;
                self.state = State::Running(c);
                watch
            }
            Err(e) => {
                self.state = State::Ended(if e.request {
                    SourceEnd::Refused(e.reason)
                } else {
                    SourceEnd::Failed(e.reason)
                });
                Ok(())
            }
        }
    }

    /// The engine set up the capture's rings: the capture takes them over
    /// (see `engine::handover`), and, if it is watched, they are watched
    /// too. A capture no longer running has them closed. `Err`: a ring
    /// could not be watched (the caller reads the capture on the sweep).
    pub fn rings(&mut self, rings: Rings, registry: &Registry) -> io::Result<()> {
        let State::Running(c) = &mut self.state else {
            self.closer.close(rings);
            return Ok(());
        };
        let before: Vec<RawFd> = c.fds().collect();
        let (kept, spare) = c.hand_over(rings);
        if let Some(spare) = spare {
            self.closer.close(spare);
        }
        for why in kept {
            log::warn!(
                "a capture stays on its socket without a ring (a system call per packet): {}",
                crate::proto::logtext::escape_controls(&why)
            );
        }
        if !self.watched {
            return Ok(());
        }
        for fd in c.fds().filter(|fd| !before.contains(fd)) {
            registry.register(&mut SourceFd(&fd), self.token, Interest::READABLE)?;
        }
        Ok(())
    }

    /// The live sockets the capture read to their end since the last call
    /// leave the poll; once every interface reads its ring, they go to
    /// the closers.
    fn retire(c: &mut Capture, watched: bool, closer: &Closer, registry: &Registry) {
        let (fds, doomed) = c.take_retired();
        if watched {
            for fd in fds {
                let _ = registry.deregister(&mut SourceFd(&fd));
            }
        }
        if let Some(doomed) = doomed {
            closer.close(doomed);
        }
    }

    /// The machine asks it to stop: the rest of its output, its
    /// statistics, then the end.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Nobody reads its output any more: the rings go now; its end
    /// (stopped) is still told if the machine asks.
    pub fn forget(&mut self, registry: &Registry) {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Running(c) => {
                self.unwatch(registry, &c);
                self.close(c);
                self.state = State::Ended(SourceEnd::Stopped);
            }
            State::Opening => {
                self.stopping = true;
                self.state = State::Opening;
            }
            State::Finishing { end, .. } | State::Ended(end) => self.state = State::Ended(end),
            State::Done => {}
        }
    }

    /// One read of the output into `buf`, and what the driver must do
    /// about the mode.
    pub fn read(&mut self, buf: &mut [u8], registry: &Registry, now: Instant) -> (Read, Switch) {
        let read = self.step(buf, registry, now);
        if matches!(read, Read::Ended(_)) {
            return (read, Switch::Gone);
        }
        let switch = self.rate(registry, &read, now);
        (read, switch)
    }

    fn step(&mut self, buf: &mut [u8], registry: &Registry, now: Instant) -> Read {
        loop {
            match &mut self.state {
                State::Opening | State::Done => return Read::WouldBlock,
                State::Running(c) => {
                    if self.emptied == Some(now) && !self.stopping {
                        return Read::WouldBlock;
                    }
                    let d = c.drain(buf);
                    Native::retire(c, self.watched, &self.closer, registry);
                    if d.bytes > 0 {
                        self.packets += d.packets as u64;
                        if !d.more {
                            self.emptied = Some(now);
                        }
                        return Read::Data(d.bytes);
                    }
                    // Woken with nothing to read (immediate mode): an error
                    // event, so the sockets are asked. Swept, an empty ring is
                    // the normal case: asked once per RECHECK only.
                    let ask = self.mode == Mode::Immediate
                        || now.saturating_duration_since(self.checked) >= RECHECK;
                    let end = if self.stopping {
                        SourceEnd::Stopped
                    } else if !ask {
                        return Read::WouldBlock;
                    } else {
                        self.checked = now;
                        match c.check() {
                            Ok(()) => return Read::WouldBlock,
                            Err(line) => SourceEnd::Ended(line),
                        }
                    };
                    self.finish(registry, end);
                }
                State::Finishing { rest, at, end } => {
                    let n = (rest.len() - *at).min(buf.len());
                    if n > 0 {
                        buf[..n].copy_from_slice(&rest[*at..*at + n]);
                        *at += n;
                        return Read::Data(n);
                    }
                    let end = std::mem::replace(end, SourceEnd::Stopped);
                    self.state = State::Ended(end);
                }
                State::Ended(end) => {
                    let end = std::mem::replace(end, SourceEnd::Stopped);
                    self.state = State::Done;
                    return Read::Ended(end);
                }
            }
        }
    }

    /// The capture is over: its statistics are the last bytes, its rings go
    /// to the closers.
    fn finish(&mut self, registry: &Registry, end: SourceEnd) {
        let State::Running(mut c) = std::mem::replace(&mut self.state, State::Done) else {
            return;
        };
        self.unwatch(registry, &c);
        let rest = c.finish();
        self.dropped = c.counts().dropped;
        self.close(c);
        self.state = State::Finishing { rest, at: 0, end };
    }

    /// Counts a read for the rate, and at the end of a window decides the
    /// mode.
    fn rate(&mut self, registry: &Registry, read: &Read, now: Instant) -> Switch {
        if matches!(read, Read::WouldBlock) && self.mode == Mode::Immediate {
            self.wakeups += 1;
        }
        if now.saturating_duration_since(self.window_start) < WINDOW {
            return Switch::Stay;
        }
        let (wakeups, packets) = (self.wakeups, self.packets);
        self.window_start = now;
        self.wakeups = 0;
        self.packets = 0;
        let State::Running(c) = &self.state else {
            return Switch::Stay;
        };
        match self.mode {
            Mode::Immediate if wakeups > SWEEP_ABOVE => {
                if std::mem::take(&mut self.watched) {
                    unwatch(registry, c);
                }
                self.mode = Mode::Swept;
                Switch::ToSwept
            }
            Mode::Swept if packets < IMMEDIATE_BELOW && !self.stopping => {
                if watch(registry, c, self.token).is_err() {
                    return Switch::Stay;
                }
                self.watched = true;
                self.mode = Mode::Immediate;
                Switch::ToImmediate
            }
            _ => Switch::Stay,
        }
    }

    /// The client is not keeping up: the capture is not woken per packet
    /// while it waits (a full ring wakes the loop for every packet it
    /// drops); it waits on the sweep.
    pub fn pause(&mut self, registry: &Registry) -> Switch {
        if self.mode == Mode::Swept {
            return Switch::Stay;
        }
        if let State::Running(c) = &self.state {
            if std::mem::take(&mut self.watched) {
                unwatch(registry, c);
            }
        }
        self.mode = Mode::Swept;
        Switch::ToSwept
    }

    fn unwatch(&mut self, registry: &Registry, c: &Capture) {
        if std::mem::take(&mut self.watched) {
            unwatch(registry, c);
        }
    }

    #[allow(clippy::boxed_local)] // It is boxed where it lives (`State`).
    fn close(&self, c: Box<Capture>) {
        self.closer.close(*c);
    }
}

impl Drop for Native {
    /// The session is gone: its rings go to the closers, never closed on
    /// the loop thread.
    fn drop(&mut self) {
        if let State::Running(c) = std::mem::replace(&mut self.state, State::Done) {
            self.closer.close(*c);
        }
    }
}

fn unwatch(registry: &Registry, c: &Capture) {
    for fd in c.fds() {
        let _ = registry.deregister(&mut SourceFd(&fd));
    }
}

/// Registers every ring of `c` under `token` (readable: a packet waits; an
/// error event: the interface is gone).
fn watch(registry: &Registry, c: &Capture, token: Token) -> io::Result<()> {
    let fds: Vec<RawFd> = c.fds().collect();
    for (n, fd) in fds.iter().enumerate() {
        if let Err(e) = registry.register(&mut SourceFd(fd), token, Interest::READABLE) {
            for fd in &fds[..n] {
                let _ = registry.deregister(&mut SourceFd(fd));
            }
            return Err(e);
        }
    }
    Ok(())
}
