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
//! [`Engine`] runs [`OPENERS`] opener threads and [`CLOSERS`] closer
//! threads fed by bounded queues; a capture's several rings are set up on
//! parallel scoped threads; results come back through a channel and a
//! `mio::Waker`. The loop only ever hands work over and takes results.

pub mod filter;
pub mod open;
pub mod ring;

use std::fs::File;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::warn;
use mio::Waker;

use crate::proto::pcapng_write::{interface_statistics, Counts};
use ring::{Health, Ring, Step};

/// Threads that open rings. Each open waits on grace periods, so several
/// in flight overlap them; four keep 50 captures opening at once within
/// about 13 rounds.
pub const OPENERS: usize = 4;
/// Threads that close rings (each close waits for two grace periods).
pub const CLOSERS: usize = 4;
/// Opens that may wait for an opener; more are refused at once.
pub const MAX_OPENING: usize = 1024;

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

/// A finished open, handed back to the loop.
pub struct Opened {
    /// What the loop gave [`Engine::open`].
    pub ticket: u64,
    pub result: Result<Capture, OpenError>,
    /// From the request to the result (queueing included).
    pub took: Duration,
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

/// The source of one target's stream: its rings and what of the stream is
/// not yet handed out.
pub struct Capture {
    rings: Vec<Ring>,
    infos: Vec<RingInfo>,
    /// Stream bytes made but not yet given: the head (SHB and IDBs), or an
    /// EPB larger than the caller's buffer.
    pending: Vec<u8>,
    pending_at: usize,
    spill: Vec<u8>,
    /// The ring the next drain starts with (rings take turns).
    turn: usize,
    started_ns: u64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Capture {
    fn new(rings: Vec<Ring>, infos: Vec<RingInfo>, head: Vec<u8>) -> Capture {
        Capture {
            rings,
            infos,
            pending: head,
            pending_at: 0,
            spill: Vec::new(),
            turn: 0,
            started_ns: now_ns(),
        }
    }

    /// The interfaces, in request order (their IDB numbers).
    pub fn interfaces(&self) -> &[RingInfo] {
        &self.infos
    }

    /// The rings' descriptors, for the loop's registration.
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.rings.iter().map(Ring::fd)
    }

    /// Whether a drain would write something: one memory read per ring.
    pub fn has_packet(&self) -> bool {
        self.pending_at < self.pending.len() || self.rings.iter().any(Ring::has_packet)
    }

    /// Writes stream bytes into `out`: first the head, then packets, the
    /// rings taking turns, until `out` is full or the rings are empty. No
    /// system call unless a packet larger than a frame is waiting.
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
        let n = self.rings.len();
        let mut idle = 0;
        while idle < n {
            let r = self.turn % n;
            let empty = d.bytes == 0;
            match self.rings[r].next_epb(&mut out[d.bytes..], empty, &mut self.spill) {
                Step::Wrote(len) => {
                    d.bytes += len;
                    d.packets += 1;
                    idle = 0;
                    // One packet per turn keeps the rings' shares even.
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
        for (ring, info) in self.rings.iter_mut().zip(&self.infos) {
            match ring.health() {
                Health::Fine | Health::Down => {}
                Health::Gone => {
                    return Err(format!(
                    "The network adapter \"{}\" is no longer attached; the capture has stopped.",
                    info.name
                ))
                }
                Health::Other(e) => warn!("capture on '{}': {e}", info.name),
            }
        }
        Ok(())
    }

    /// Whether an interface went down and has brought no packet since.
    /// Its deletion would then come without an error event (deleting takes
    /// an interface down first, and only that is reported): such a capture
    /// must be checked again on a timer until it is up or gone.
    pub fn down(&self) -> bool {
        self.rings.iter().any(Ring::is_down)
    }

    /// The kernel's counts so far, summed over the rings (a cheap system
    /// call per ring; for metrics).
    pub fn counts(&mut self) -> Counts {
        self.rings.iter_mut().fold(Counts::default(), |sum, r| {
            let c = r.counts();
            Counts {
                received: sum.received + c.received,
                dropped: sum.dropped + c.dropped,
            }
        })
    }

    /// The end of the stream: one ISB per interface, with the kernel's
    /// counts. What the rings still hold is not read.
    pub fn finish(&mut self) -> Vec<u8> {
        let end = now_ns();
        let mut out = Vec::new();
        for (i, ring) in self.rings.iter_mut().enumerate() {
            out.extend(interface_statistics(
                i as u32,
                self.started_ns,
                end,
                ring.counts(),
            ));
        }
        out
    }
}

type Jobs<T> = Arc<Mutex<Receiver<T>>>;

/// The helper threads and their queues; owned by the loop.
pub struct Engine {
    opens: SyncSender<(u64, Instant, OpenRequest)>,
    results: Receiver<Opened>,
    closer: Closer,
}

/// Hands captures to the closer threads; a cheap handle every holder of a
/// capture keeps, so that a capture is never dropped (closed) on the loop
/// thread, on any path.
#[derive(Clone)]
pub struct Closer {
    closes: SyncSender<Capture>,
    closing: Arc<AtomicUsize>,
}

impl Engine {
    /// Starts the helper threads. `waker` wakes the loop when an open is
    /// done; `max_captures` bounds the close queue (every capture can be
    /// waiting to close at once).
    pub fn start(waker: Arc<Waker>, max_captures: usize) -> std::io::Result<Engine> {
        let (open_tx, open_rx) = sync_channel::<(u64, Instant, OpenRequest)>(MAX_OPENING);
        let (result_tx, result_rx) = sync_channel::<Opened>(MAX_OPENING + OPENERS);
        let (close_tx, close_rx) = sync_channel::<Capture>(max_captures.max(1));
        let open_rx: Jobs<_> = Arc::new(Mutex::new(open_rx));
        let close_rx: Jobs<_> = Arc::new(Mutex::new(close_rx));
        let closing = Arc::new(AtomicUsize::new(0));
        for n in 0..OPENERS {
            let (jobs, results, waker) =
                (Arc::clone(&open_rx), result_tx.clone(), Arc::clone(&waker));
            crate::service::background::spawn(&format!("ring-open-{n}"), move || {
                opener(jobs, results, waker)
            })?;
        }
        for n in 0..CLOSERS {
            let (jobs, closing) = (Arc::clone(&close_rx), Arc::clone(&closing));
            crate::service::background::spawn(&format!("ring-close-{n}"), move || {
                closer(jobs, closing)
            })?;
        }
        Ok(Engine {
            opens: open_tx,
            results: result_rx,
            closer: Closer {
                closes: close_tx,
                closing,
            },
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

    /// The next finished open, if any (call until `None` after a wake).
    pub fn next_opened(&self) -> Option<Opened> {
        self.results.try_recv().ok()
    }

    /// Hands a capture's rings to the closers (the loop never waits for a
    /// close).
    pub fn close(&self, capture: Capture) {
        self.closer.close(capture);
    }

    /// A handle that closes captures as [`Engine::close`] does.
    pub fn closer(&self) -> Closer {
        self.closer.clone()
    }

    /// Captures handed to [`Engine::close`] whose rings are not closed yet.
    pub fn closing(&self) -> usize {
        self.closer.closing.load(Ordering::Relaxed)
    }
}

impl Closer {
    /// Hands a capture's rings to the closers (never waits for a close).
    pub fn close(&self, capture: Capture) {
        self.closing.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.closes.try_send(capture) {
            // Cannot happen while the queue holds every capture; should it,
            // a thread of its own closes this one.
            let capture = match e {
                TrySendError::Full(c) | TrySendError::Disconnected(c) => c,
            };
            let closing = Arc::clone(&self.closing);
            let spawned = crate::service::background::spawn("ring-close-extra", move || {
                drop(capture);
                closing.fetch_sub(1, Ordering::Relaxed);
            });
            if let Err(e) = spawned {
                warn!("cannot start a thread to close a capture's rings: {e}");
            }
        }
    }
}

fn opener(jobs: Jobs<(u64, Instant, OpenRequest)>, results: SyncSender<Opened>, waker: Arc<Waker>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((ticket, asked, req)) = job else {
            return;
        };
        let result = open::open(&req);
        // The namespace is let go before the loop hears of the result.
        drop(req);
        let opened = Opened {
            ticket,
            result,
            took: asked.elapsed(),
        };
        if results.send(opened).is_err() {
            return;
        }
        let _ = waker.wake();
    }
}

fn closer(jobs: Jobs<Capture>, closing: Arc<AtomicUsize>) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(capture) = job else {
            return;
        };
        drop(capture);
        closing.fetch_sub(1, Ordering::Relaxed);
    }
}
