//! The native capture engine: packets read from the kernel's packet rings
//! inside the service, written as the pcapng stream dumpcap would write,
//! with no process per capture.
//!
//! **Which ring.** A TPACKET_V2 ring per interface (`any`: one cooked
//! socket bound to every interface), read directly through its mapping;
//! libpcap (the `pcap` crate) only compiles filters ([`filter`]). V2 hands
//! each packet to user space as soon as it is written, so the reader
//! decides when to read. TPACKET_V3 hands over whole blocks, when full or
//! when the socket's block timer fires: its latency is the timer period,
//! and every capture then costs a kernel timer and a wakeup per period
//! even when its packets trickle (issue figures: 1 ms timers took 29-34 %
//! of a core for 20 captures at 1,000 packets/s). libpcap's own read path
//! makes a `poll` per empty read; reading a V2 ring costs one memory read
//! of the next frame's status when it is empty, and no system call.
//!
//! **Two ways to read, chosen by the loop** (nothing here waits):
//! - *immediate*: the ring's descriptor ([`Capture::fds`]) is registered
//!   with the poll; the kernel wakes the loop per packet while the loop
//!   sleeps (wakeup latency about 0.1 ms; a quiet capture costs nothing but
//!   its packets, an idle one nothing at all);
//! - *swept*: a busy capture's descriptors are deregistered and every
//!   swept capture is read on one shared timer; [`Capture::has_packet`]
//!   is one memory read per ring, so sweeping many empty rings is cheap.
//!
//! What each costs, measured here (release build, 2-core VM under a load
//! average of 5 to 8 from other work, so the tails are the machine's):
//! an empty ring's [`Capture::has_packet`] 3-6 ns, an empty
//! [`Capture::drain`] 8-12 ns, a full ring drained at 74 ns per 64-byte
//! packet and 106 ns per 1400-byte packet; in immediate mode at 100
//! packets/s, one wakeup per packet and kernel timestamp to drained
//! p50 0.03 ms (p99 3.9 ms, the scheduler of the loaded machine). A swept
//! capture costs its share of one timer wakeup plus a drain per sweep.
//! The bench harness (`benches/engine.rs`) measures the whole path.
//!
//! [`Capture::drain`] writes the EPBs straight into the caller's buffer
//! (one copy, ring to buffer; packets larger than a 2 KiB frame come whole
//! through the socket's receive queue, see [`ring`]), and says whether
//! more is waiting; [`Capture::check`] reads the socket errors (an
//! interface deleted under a capture ends it with dumpcap's line; one that
//! only goes down resumes when it comes up, as with dumpcap);
//! [`Capture::finish`] gives the ISBs with the kernel's counts.
//!
//! **What the kernel makes slow happens on helper threads.** Measured on
//! this 2-core VM (kernel 6.18), a 2 MiB ring: `PACKET_RX_RING` takes
//! 8.4 ms median (28 ms max) of wall time with 4 KiB blocks, 16 ms with
//! 64 KiB or 1 MiB blocks (hence page-sized blocks), all of it an RCU grace
//! period in `packet_set_ring`; `close` takes 27 ms median (36 ms max), two
//! grace periods; `munmap` 0.13 ms. Grace periods overlap across threads:
//! 8 rings opened on 8 threads at once took 14 ms, 8 closed 34 ms. So
//! [`Engine`] runs [`OPENERS`] opener threads, [`RINGERS`] ring threads
//! and [`CLOSERS`] closer threads fed by bounded queues; a capture's
//! several rings are set up on parallel scoped threads; results come back
//! through a channel and a `mio::Waker`. The loop only ever hands work
//! over and takes results.
//!
//! **The first packets come before the ring.** An opener binds a socket
//! without a ring per interface ([`live`]: live at once, no grace period)
//! and hands the capture to the loop, which sends the stream's head and
//! reads those sockets with `recvmsg`; the ring is set up meanwhile on a
//! ring thread and handed over ([`Done::Rings`], [`Capture::hand_over`]);
//! the cut-over neither loses nor repeats a packet ([`handover`]).

pub mod epb;
pub mod filter;
pub mod handover;
pub mod live;
pub mod open;
pub mod ring;
pub mod socket;

use std::fs::File;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::warn;
use mio::Waker;

use crate::proto::pcapng_write::{interface_statistics, Counts};
use handover::{Handed, Tap};
use ring::Step;
use socket::Health;

/// Threads that open captures: each open enters a namespace, makes the
/// sockets, compiles the filters and binds the live sockets, a few
/// milliseconds at most; four keep 50 captures opening at once short.
pub const OPENERS: usize = 4;
/// Threads that set up rings (each set-up waits for two grace periods:
/// `PACKET_RX_RING`'s and the one before the cut-over).
pub const RINGERS: usize = 4;
/// Threads that close sockets and rings (closing a ring waits for two
/// grace periods, a socket without one for one: a capture's ring and its
/// live socket about 35 ms; grace periods overlap across threads). Eight:
/// with four, 1,000 capture cycles on four clients (1.8 s) left their
/// sockets closing for over 10 s.
pub const CLOSERS: usize = 8;
/// Opens that may wait for an opener; more are refused at once.
pub const MAX_OPENING: usize = 1024;
/// Things to close per capture at most at once: the capture, its rings
/// handed back unused, its live sockets retired, the ring thread's
/// leftovers.
const DOOMED_PER_CAPTURE: usize = 4;

/// What a capture asks for.
#[derive(Debug)]
pub struct OpenRequest {
    /// The target's network namespace, held (a `/proc/PID/ns/net` or bind
    /// mount, opened and checked by the caller; a duplicate is fine).
    pub netns: File,
    /// Interfaces in request order; empty: `any`.
    pub interfaces: Vec<String>,
    /// The filter as dumpcap would get it (self-exclusion included).
    pub filter: Option<String>,
    /// No promiscuous mode.
    pub chaste: bool,
}

/// Why an open failed: the reason to give the client, and whose fault it
/// is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenError {
    pub reason: String,
    /// The request cannot be served as asked (a filter libpcap refuses or
    /// the rings cannot apply, an interface that is not there): 1008. Else
    /// the service failed (1011).
    pub request: bool,
}

impl OpenError {
    /// The request's fault.
    pub fn request(reason: String) -> OpenError {
        OpenError {
            reason,
            request: true,
        }
    }
}

impl From<String> for OpenError {
    /// The service's fault.
    fn from(reason: String) -> OpenError {
        OpenError {
            reason,
            request: false,
        }
    }
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// A finished open, handed back to the loop: the capture is live (its
/// sockets bound), its rings still to come.
pub struct Opened {
    /// What the loop gave [`Engine::open`].
    pub ticket: u64,
    pub result: Result<Capture, OpenError>,
    /// From the request to the result (queueing included).
    pub took: Duration,
}

/// A capture's rings, ready for [`Capture::hand_over`] (one per
/// interface, in request order; an interface whose ring could not be set
/// up says why). Never dropped on the loop: handed over, or to the
/// closers.
pub struct Rings {
    /// The ticket of the capture's open.
    pub ticket: u64,
    /// From the request to the rings' readiness.
    pub took: Duration,
    handed: Vec<Result<Handed, String>>,
}

impl Rings {
    /// Rings for none of `n` interfaces, for `why`.
    fn none(ticket: u64, took: Duration, n: usize, why: &str) -> Rings {
        Rings {
            ticket,
            took,
            handed: (0..n.max(1)).map(|_| Err(why.to_string())).collect(),
        }
    }

    /// How many rings are ready.
    pub fn ready(&self) -> usize {
        self.handed.iter().filter(|h| h.is_ok()).count()
    }
}

/// What the engine's threads hand back.
pub enum Done {
    Opened(Opened),
    Rings(Rings),
}

/// One interface of a capture.
#[derive(Clone, Debug)]
pub struct RingInfo {
    pub name: String,
    pub linktype: u16,
    pub ifindex: i32,
}

/// What one [`Capture::drain`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Bytes of stream written at the start of the buffer.
    pub bytes: usize,
    /// Packets among them.
    pub packets: usize,
    /// More is waiting (the buffer filled first).
    pub more: bool,
}

/// The source of one target's stream: its sockets and what of the stream
/// is not yet handed out. Never dropped on the loop: it goes to the
/// closers ([`Closer::close`]).
pub struct Capture {
    taps: Vec<Tap>,
    infos: Vec<RingInfo>,
    /// Stream bytes made but not yet given: the head (SHB and IDBs), or an
    /// EPB larger than the caller's buffer.
    pending: Vec<u8>,
    pending_at: usize,
    spill: Vec<u8>,
    /// The interface the next drain starts with (they take turns).
    turn: usize,
    started_ns: u64,
    /// Raised when the capture goes to the closers: its rings, if still
    /// being set up, are not wanted any more.
    ended: Arc<AtomicBool>,
    /// Live sockets read to their end, off the poll, kept until every
    /// interface has retired its own (see [`Capture::take_retired`]).
    retired: Vec<live::Live>,
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Capture {
    fn new(taps: Vec<Tap>, infos: Vec<RingInfo>, head: Vec<u8>, ended: Arc<AtomicBool>) -> Capture {
        Capture {
            taps,
            infos,
            pending: head,
            pending_at: 0,
            spill: Vec::new(),
            turn: 0,
            started_ns: now_ns(),
            ended,
            retired: Vec::new(),
        }
    }

    /// The interfaces, in request order (their IDB numbers).
    pub fn interfaces(&self) -> &[RingInfo] {
        &self.infos
    }

    /// The sockets' descriptors, for the loop's registration (they change
    /// at the hand-over: see [`Capture::take_retired`]).
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.taps.iter().flat_map(Tap::fds)
    }

    /// Whether every interface reads its ring alone (the hand-over is
    /// over).
    pub fn on_rings(&self) -> bool {
        self.taps.iter().all(|t| t.has_ring() && !t.has_live())
    }

    /// Whether a drain would write something: one memory read per ring (a
    /// system call per socket still without one).
    pub fn has_packet(&self) -> bool {
        self.pending_at < self.pending.len() || self.taps.iter().any(Tap::has_packet)
    }

    /// Takes the rings over (see [`handover`]): each interface is read
    /// from its live socket to its end, then from its ring. An interface
    /// whose ring could not be set up stays on its live socket: every
    /// packet is still taken or counted by the kernel, at the cost of a
    /// system call each. Returns those interfaces with the reason, and
    /// what is left over for the closers (rings that found no place).
    pub fn hand_over(&mut self, rings: Rings) -> (Vec<String>, Option<Doomed>) {
        let mut kept = Vec::new();
        let mut spare = Vec::new();
        for (i, handed) in rings.handed.into_iter().enumerate() {
            let name = self.infos.get(i).map_or("?", |n| n.name.as_str());
            match (handed, self.taps.get_mut(i)) {
                (Ok(h), Some(tap)) => {
                    if let Err(h) = tap.hand_over(h) {
                        spare.push(h);
                    }
                }
                (Ok(h), None) => spare.push(h),
                (Err(why), tap) => {
                    if let Some(tap) = tap {
                        tap.keep_live();
                    }
                    kept.push(format!("{name}: {why}"));
                }
            }
        }
        let doomed = (!spare.is_empty()).then(|| Doomed(Box::new(spare)));
        (kept, doomed)
    }

    /// The live sockets read to their end since the last call, by
    /// descriptor: the caller takes them off its poll registration (they
    /// stay open until then). Once every interface reads its ring alone,
    /// every retired socket comes with them, for the closers (one batch per
    /// capture, so the close queue's share per capture holds).
    pub fn take_retired(&mut self) -> (Vec<RawFd>, Option<Doomed>) {
        let mut fds = Vec::new();
        for tap in &mut self.taps {
            if let Some(live) = tap.take_retired() {
                fds.push(live.fd());
                self.retired.push(live);
            }
        }
        let doomed = (!self.retired.is_empty() && self.taps.iter().all(|t| !t.has_live()))
            .then(|| Doomed(Box::new(std::mem::take(&mut self.retired))));
        (fds, doomed)
    }

    /// Writes stream bytes into `out`: first the head, then packets, the
    /// interfaces taking turns, until `out` is full or nothing waits. No
    /// system call on a ring unless a packet larger than a frame is
    /// waiting; one per packet on a live socket.
    pub fn drain(&mut self, out: &mut [u8]) -> Drained {
        let mut d = Drained::default();
        if self.pending_at < self.pending.len() {
            let n = (self.pending.len() - self.pending_at).min(out.len());
            out[..n].copy_from_slice(&self.pending[self.pending_at..self.pending_at + n]);
            self.pending_at += n;
            d.bytes = n;
            if self.pending_at < self.pending.len() {
                d.more = true;
                return d;
            }
            self.pending.clear();
            self.pending_at = 0;
        }
        let n = self.taps.len();
        let mut idle = 0;
        while idle < n {
            let r = self.turn % n;
            let empty = d.bytes == 0;
            match self.taps[r].next_epb(&mut out[d.bytes..], empty, &mut self.spill) {
                Step::Wrote(len) => {
                    d.bytes += len;
                    d.packets += 1;
                    idle = 0;
                    // One packet per turn keeps the interfaces' shares even.
                    self.turn = r + 1;
                }
                Step::Empty => {
                    idle += 1;
                    self.turn = r + 1;
                }
                Step::NoRoom => {
                    d.more = true;
                    return d;
                }
                Step::Spilled => {
                    d.packets += 1;
                    self.turn = r + 1;
                    std::mem::swap(&mut self.pending, &mut self.spill);
                    let n = self.pending.len().min(out.len());
                    out[..n].copy_from_slice(&self.pending[..n]);
                    self.pending_at = n;
                    d.bytes = n;
                    d.more = true;
                    return d;
                }
            }
            if d.bytes == out.len() {
                break;
            }
        }
        d.more = self.has_packet();
        d
    }

    /// Reads the sockets' pending errors. `Err`: the capture must end, with
    /// this reason (dumpcap's line for an interface that is gone).
    pub fn check(&mut self) -> Result<(), String> {
        for (tap, info) in self.taps.iter_mut().zip(&self.infos) {
            match tap.health() {
                Health::Fine | Health::Down => {}
                Health::Gone => {
                    return Err(format!(
                    "The network adapter \"{}\" is no longer attached; the capture has stopped.",
                    info.name
                ))
                }
                Health::Other(e) => warn!(
                    "capture on '{}': {e}",
                    crate::proto::logtext::escape_controls(&info.name)
                ),
            }
        }
        Ok(())
    }

    /// Whether an interface went down and has brought no packet since.
    /// Its deletion would then come without an error event (deleting takes
    /// an interface down first, and only that is reported): such a capture
    /// must be checked again on a timer until it is up or gone.
    pub fn down(&self) -> bool {
        self.taps.iter().any(Tap::is_down)
    }

    /// The kernel's counts so far, summed over the interfaces (a cheap
    /// system call per socket; for metrics).
    pub fn counts(&mut self) -> Counts {
        self.taps.iter_mut().fold(Counts::default(), |sum, t| {
            let c = t.counts();
            Counts {
                received: sum.received + c.received,
                dropped: sum.dropped + c.dropped,
            }
        })
    }

    /// The end of the stream: one ISB per interface, with the kernel's
    /// counts. What the sockets still hold is not read.
    pub fn finish(&mut self) -> Vec<u8> {
        self.ended.store(true, Ordering::SeqCst);
        let end = now_ns();
        let mut out = Vec::new();
        for (i, tap) in self.taps.iter_mut().enumerate() {
            out.extend(interface_statistics(
                i as u32,
                self.started_ns,
                end,
                tap.counts(),
            ));
        }
        out
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.ended.store(true, Ordering::SeqCst);
    }
}

/// Sockets and rings to close: closing waits for the kernel, so it is
/// done on the closer threads ([`Closer::close`]), never on the loop.
pub struct Doomed(
    // Only ever dropped, on a closer thread.
    #[allow(dead_code)] Box<dyn Send>,
);

impl From<Capture> for Doomed {
    fn from(c: Capture) -> Doomed {
        // Its rings, if still being set up, are not wanted.
        c.ended.store(true, Ordering::SeqCst);
        Doomed(Box::new(c))
    }
}

impl From<Rings> for Doomed {
    fn from(r: Rings) -> Doomed {
        Doomed(Box::new(r))
    }
}

type Jobs<T> = Arc<Mutex<Receiver<T>>>;

/// The helper threads and their queues; owned by the loop.
pub struct Engine {
    opens: SyncSender<(u64, Instant, OpenRequest)>,
    results: Receiver<Done>,
    closer: Closer,
}

/// Hands sockets to the closer threads; a cheap handle every holder of a
/// capture keeps, so that a capture is never dropped (closed) on the loop
/// thread, on any path.
#[derive(Clone)]
pub struct Closer {
    closes: SyncSender<Doomed>,
    closing: Arc<AtomicUsize>,
}

/// What an opener hands to the ring threads.
struct RingWork {
    job: open::RingJob,
    asked: Instant,
}

impl Engine {
    /// Starts the helper threads. `waker` wakes the loop when an open or a
    /// ring is done; `max_captures` bounds the ring and close queues
    /// (every capture can be waiting at once).
    pub fn start(waker: Arc<Waker>, max_captures: usize) -> std::io::Result<Engine> {
        let captures = max_captures.max(1);
        let (open_tx, open_rx) = sync_channel::<(u64, Instant, OpenRequest)>(MAX_OPENING);
        // An open gives two results (opened, then its rings).
        let (result_tx, result_rx) = sync_channel::<Done>(2 * MAX_OPENING + OPENERS + RINGERS);
        let (ring_tx, ring_rx) = sync_channel::<RingWork>(captures);
        let (close_tx, close_rx) = sync_channel::<Doomed>(captures * DOOMED_PER_CAPTURE);
        let open_rx: Jobs<_> = Arc::new(Mutex::new(open_rx));
        let ring_rx: Jobs<_> = Arc::new(Mutex::new(ring_rx));
        let close_rx: Jobs<_> = Arc::new(Mutex::new(close_rx));
        let closer = Closer {
            closes: close_tx,
            closing: Arc::new(AtomicUsize::new(0)),
        };
        for n in 0..OPENERS {
            let (jobs, results, waker, rings, closer) = (
                Arc::clone(&open_rx),
                result_tx.clone(),
                Arc::clone(&waker),
                ring_tx.clone(),
                closer.clone(),
            );
            crate::service::background::spawn(&format!("ring-open-{n}"), move || {
                opener(jobs, results, waker, rings, closer)
            })?;
        }
        for n in 0..RINGERS {
            let (jobs, results, waker, closer) = (
                Arc::clone(&ring_rx),
                result_tx.clone(),
                Arc::clone(&waker),
                closer.clone(),
            );
            crate::service::background::spawn(&format!("ring-setup-{n}"), move || {
                ringer(jobs, results, waker, closer)
            })?;
        }
        for n in 0..CLOSERS {
            let (jobs, closing) = (Arc::clone(&close_rx), Arc::clone(&closer.closing));
            crate::service::background::spawn(&format!("ring-close-{n}"), move || {
                close_loop(jobs, closing)
            })?;
        }
        Ok(Engine {
            opens: open_tx,
            results: result_rx,
            closer,
        })
    }

    /// Hands an open to the openers. `Err`: too many are waiting already.
    pub fn open(&self, ticket: u64, req: OpenRequest) -> Result<(), String> {
        match self.opens.try_send((ticket, Instant::now(), req)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(format!(
                "{MAX_OPENING} captures are already waiting for their packet sockets"
            )),
            Err(TrySendError::Disconnected(_)) => Err("the capture engine has stopped".into()),
        }
    }

    /// The next finished open or set of rings, if any (call until `None`
    /// after a wake). An open that succeeded is followed, later, by its
    /// rings (one [`Done::Rings`] for every open capture).
    pub fn next(&self) -> Option<Done> {
        self.results.try_recv().ok()
    }

    /// Hands sockets to the closers (the loop never waits for a close).
    pub fn close(&self, doomed: impl Into<Doomed>) {
        self.closer.close(doomed);
    }

    /// A handle that closes as [`Engine::close`] does.
    pub fn closer(&self) -> Closer {
        self.closer.clone()
    }

    /// Things handed to [`Engine::close`] not closed yet.
    pub fn closing(&self) -> usize {
        self.closer.closing.load(Ordering::Relaxed)
    }
}

impl Closer {
    /// Hands sockets to the closers (never waits for a close).
    pub fn close(&self, doomed: impl Into<Doomed>) {
        let doomed = doomed.into();
        self.closing.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.closes.try_send(doomed) {
            // Cannot happen while the queue holds every capture's share;
            // should it, a thread of its own closes these.
            let doomed = match e {
                TrySendError::Full(d) | TrySendError::Disconnected(d) => d,
            };
            let closing = Arc::clone(&self.closing);
            let spawned = crate::service::background::spawn("ring-close-extra", move || {
                drop(doomed);
                closing.fetch_sub(1, Ordering::Relaxed);
            });
            if let Err(e) = spawned {
                warn!("cannot start a thread to close a capture's sockets: {e}");
            }
        }
    }
}

fn opener(
    jobs: Jobs<(u64, Instant, OpenRequest)>,
    results: SyncSender<Done>,
    waker: Arc<Waker>,
    rings: SyncSender<RingWork>,
    closer: Closer,
) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((ticket, asked, req)) = job else {
            return;
        };
        let opened = open::open(ticket, &req);
        // The namespace is let go before the loop hears of the result.
        drop(req);
        let (result, work) = match opened {
            Ok((capture, job)) => (Ok(capture), Some(job)),
            Err(e) => (Err(e), None),
        };
        let opened = Opened {
            ticket,
            result,
            took: asked.elapsed(),
        };
        if results.send(Done::Opened(opened)).is_err() {
            return;
        }
        let _ = waker.wake();
        // The rings after the capture: the loop hears of them in that order.
        let Some(job) = work else {
            continue;
        };
        if let Err(e) = rings.try_send(RingWork { job, asked }) {
            // Cannot happen while the queue holds every capture; should it,
            // the capture stays on its live sockets.
            let RingWork { job, .. } = match e {
                TrySendError::Full(w) | TrySendError::Disconnected(w) => w,
            };
            let n = job.interfaces();
            closer.close(Doomed(Box::new(job)));
            let none = Rings::none(
                ticket,
                asked.elapsed(),
                n,
                "too many rings are being set up",
            );
            if results.send(Done::Rings(none)).is_err() {
                return;
            }
            let _ = waker.wake();
        }
    }
}

fn ringer(jobs: Jobs<RingWork>, results: SyncSender<Done>, waker: Arc<Waker>, closer: Closer) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(RingWork { job, asked }) = job else {
            return;
        };
        let ticket = job.ticket();
        let handed = open::rings(job, &closer);
        let rings = Rings {
            ticket,
            took: asked.elapsed(),
            handed,
        };
        if results.send(Done::Rings(rings)).is_err() {
            return;
        }
        let _ = waker.wake();
    }
}

fn close_loop(jobs: Jobs<Doomed>, closing: Arc<AtomicUsize>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(doomed) = job else {
            return;
        };
        drop(doomed);
        closing.fetch_sub(1, Ordering::Relaxed);
    }
}
