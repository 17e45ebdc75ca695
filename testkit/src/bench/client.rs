//! The benchmark client: N capture streams read on one thread with one poll.
//!
//! Each connection is raw TCP (the baseline relay) or a websocket upgrade (the
//! service, websocat); either way the bytes end up in a [`Sink`] (the
//! synthetic program's [`StreamCheck`] unless told otherwise), so
//! both paths do the same work per byte apart from websocket framing. It
//! reads as fast as the kernel hands data over, records setup times
//! (connect → 101 → first byte) and per-packet latency, and never judges a
//! stream by timing: only by its bytes.
//!
//! It must never block (one stalled stream would distort all others) and
//! never run unbounded: every run has a deadline.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::mono_ns;
use crate::pcapgen::StreamCheck;

/// What consumes a stream's bytes as they arrive: counts, checks and
/// latencies. Implemented by the synthetic program's [`StreamCheck`] and by
/// [`crate::traffic::check::TrafficCheck`] (real captures of the engine
/// bench's traffic). Must never block or allocate per packet.
pub trait Sink {
    /// The next bytes of the stream, read at CLOCK_MONOTONIC `now_ns`.
    fn feed(&mut self, data: &[u8], now_ns: u64);
    /// The verdict once the stream ended.
    fn finish(&mut self) -> Result<(), String>;
    fn bytes(&self) -> u64;
    fn blocks(&self) -> u64;
    fn packets(&self) -> u64;
    fn error(&self) -> Option<&str>;
    /// The `now_ns` of the feed that completed the first packet.
    fn first_packet_ns(&self) -> Option<u64>;
    fn take_latencies(&mut self) -> Vec<u64>;
}

impl Sink for StreamCheck {
    fn feed(&mut self, data: &[u8], now_ns: u64) {
        StreamCheck::feed(self, data, now_ns)
    }
    fn finish(&mut self) -> Result<(), String> {
        StreamCheck::finish(self)
    }
    fn bytes(&self) -> u64 {
        StreamCheck::bytes(self)
    }
    fn blocks(&self) -> u64 {
        StreamCheck::blocks(self)
    }
    fn packets(&self) -> u64 {
        StreamCheck::packets(self)
    }
    fn error(&self) -> Option<&str> {
        StreamCheck::error(self)
    }
    fn first_packet_ns(&self) -> Option<u64> {
        StreamCheck::first_packet_ns(self)
    }
    fn take_latencies(&mut self) -> Vec<u64> {
        StreamCheck::take_latencies(self)
    }
}
use crate::wsframes::{self as ws, Control, FrameReader, Upgrade};

/// Read buffer shared by all connections: large enough that a busy stream
/// is drained in a few reads per wakeup (a loopback socket's receive buffer
/// is usually a few hundred KiB at most).
const READ_BUF: usize = 256 * 1024;
/// Setups in flight at once; more would overflow the server's listen backlog
/// and turn into SYN retransmits (seconds), which is not what we measure.
pub const DEFAULT_MAX_SETUPS: usize = 32;
/// Events taken from one poll call.
const EVENTS: usize = 1024;

/// How a connection speaks.
#[derive(Clone, Debug)]
pub enum Proto {
    /// Raw pcapng bytes over TCP.
    Raw,
    /// A websocket upgrade to `path` with extra request headers.
    Ws {
        path: String,
        headers: Vec<(String, String)>,
    },
}

/// One capture to open.
#[derive(Clone, Debug)]
pub struct ConnSpec {
    pub addr: SocketAddr,
    pub proto: Proto,
    pub record_latency: bool,
    /// Packets the stream must carry to count as intact, if known.
    pub expect_packets: Option<u64>,
}

/// What one connection saw.
#[derive(Clone, Debug, Default)]
pub struct ConnResult {
    pub bytes: u64,
    pub packets: u64,
    pub blocks: u64,
    pub messages: u64,
    pub latencies_ns: Vec<u64>,
    /// Times from the start of `connect`, in nanoseconds.
    pub connected_ns: Option<u64>,
    pub upgraded_ns: Option<u64>,
    pub first_byte_ns: Option<u64>,
    pub end_ns: Option<u64>,
    /// CLOCK_MONOTONIC of the start of `connect` and of the first byte.
    pub start_mono_ns: u64,
    pub first_byte_mono_ns: Option<u64>,
    pub first_packet_mono_ns: Option<u64>,
    pub end_mono_ns: Option<u64>,
    pub close: Option<(Option<u16>, String)>,
    pub error: Option<String>,
}

impl ConnResult {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

#[derive(Debug, PartialEq)]
enum Phase {
    Queued,
    Connecting,
    Upgrading,
    Streaming,
    Done,
}

struct Conn<S> {
    spec: ConnSpec,
    phase: Phase,
    stream: Option<TcpStream>,
    out: Vec<u8>,
    key: String,
    head: Vec<u8>,
    frames: FrameReader,
    check: S,
    controls: Vec<Control>,
    res: ConnResult,
}

/// When [`Client::run`] may return.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    /// Every stream ended (or failed).
    AllDone,
    /// Every stream delivered at least this many pcapng blocks (or failed);
    /// the connections stay open.
    AllHaveBlocks(u64),
    /// Read until the time limit, which then fails nothing: the streams
    /// stay open (or until every stream ended by itself).
    TimeUp,
}

/// Many streams, one thread.
pub struct Client<S = StreamCheck> {
    poll: Poll,
    conns: Vec<Conn<S>>,
    queue: VecDeque<usize>,
    max_setups: usize,
    buf: Vec<u8>,
    /// Bytes each stream had when the first one completed intact.
    pub bytes_at_first_finish: Option<Vec<u64>>,
}

impl Client<StreamCheck> {
    /// Streams of the synthetic capture program, each checked by a
    /// [`StreamCheck`].
    pub fn new(specs: Vec<ConnSpec>, max_setups: usize) -> io::Result<Client> {
        Client::with_sinks(specs, max_setups, |spec| {
            StreamCheck::new(spec.record_latency)
        })
    }
}

impl<S: Sink> Client<S> {
    /// Streams consumed by sinks `make` builds, one per connection.
    pub fn with_sinks(
        specs: Vec<ConnSpec>,
        max_setups: usize,
        mut make: impl FnMut(&ConnSpec) -> S,
    ) -> io::Result<Client<S>> {
        let conns = specs
            .into_iter()
            .map(|spec| Conn {
                check: make(&spec),
                spec,
                phase: Phase::Queued,
                stream: None,
                out: Vec::new(),
                key: String::new(),
                head: Vec::new(),
                frames: FrameReader::new(),
                controls: Vec::new(),
                res: ConnResult::default(),
            })
            .collect::<Vec<_>>();
        Ok(Client {
            poll: Poll::new()?,
            queue: (0..conns.len()).collect(),
            conns,
            max_setups: max_setups.max(1),
            buf: vec![0; READ_BUF],
            bytes_at_first_finish: None,
        })
    }

    /// Each connection's sink so far, in the order of the specs.
    pub fn sinks(&self) -> impl Iterator<Item = &S> {
        self.conns.iter().map(|c| &c.check)
    }

    /// Each connection's results so far (times, close, error; counts are
    /// the sinks').
    pub fn results(&self) -> impl Iterator<Item = &ConnResult> {
        self.conns.iter().map(|c| &c.res)
    }

    fn setups_in_flight(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| {
                matches!(c.phase, Phase::Connecting | Phase::Upgrading)
                    || (c.phase == Phase::Streaming && c.res.first_byte_ns.is_none())
            })
            .count()
    }

    fn admit(&mut self) {
        let mut in_flight = self.setups_in_flight();
        while in_flight < self.max_setups {
            let Some(i) = self.queue.pop_front() else {
                return;
            };
            self.start(i);
            in_flight += 1;
        }
    }

    fn start(&mut self, i: usize) {
        let c = &mut self.conns[i];
        c.res.start_mono_ns = mono_ns();
        match TcpStream::connect(c.spec.addr) {
            Ok(mut s) => {
                let r = self.poll.registry().register(
                    &mut s,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                );
                c.stream = Some(s);
                c.phase = Phase::Connecting;
                if let Err(e) = r {
                    fail(c, format!("register: {e}"));
                }
            }
            Err(e) => fail(c, format!("connect {}: {e}", c.spec.addr)),
        }
    }

    fn satisfied(&self, until: Until) -> bool {
        self.queue.is_empty()
            && self.conns.iter().all(|c| match until {
                Until::AllDone | Until::TimeUp => c.phase == Phase::Done,
                Until::AllHaveBlocks(n) => c.phase == Phase::Done || c.check.blocks() >= n,
            })
    }

    /// Drives all streams until `until` holds or `limit` passes; streams not
    /// finished by then are marked as timed out (and closed, for `AllDone`;
    /// left alone for `TimeUp`).
    pub fn run(&mut self, until: Until, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut events = Events::with_capacity(EVENTS);
        self.admit();
        while !self.satisfied(until) {
            let now = Instant::now();
            if now >= deadline {
                for c in self.conns.iter_mut().filter(|c| c.phase != Phase::Done) {
                    let msg = format!(
                        "timed out after {:.1} s in {:?} with {} bytes, {} packets",
                        limit.as_secs_f64(),
                        c.phase,
                        c.check.bytes(),
                        c.check.packets()
                    );
                    let short = match until {
                        Until::AllDone => true,
                        Until::AllHaveBlocks(n) => c.check.blocks() < n,
                        Until::TimeUp => false,
                    };
                    if short {
                        fail(c, msg);
                    }
                }
                break;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(deadline - now)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                for c in self.conns.iter_mut() {
                    fail(c, format!("poll: {e}"));
                }
                break;
            }
            for ev in events.iter() {
                let i = ev.token().0;
                self.event(i);
            }
            self.admit();
        }
    }

    fn event(&mut self, i: usize) {
        let Client {
            conns,
            buf,
            poll,
            bytes_at_first_finish,
            ..
        } = self;
        let c = &mut conns[i];
        if c.phase == Phase::Connecting {
            let Some(s) = c.stream.as_mut() else { return };
            match s.take_error() {
                Ok(Some(e)) | Err(e) => return fail(c, format!("connect: {e}")),
                Ok(None) => {}
            }
            match s.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return fail(c, format!("connect: {e}")),
            }
            c.res.connected_ns = Some(mono_ns() - c.res.start_mono_ns);
            let _ = s.set_nodelay(true);
            match &c.spec.proto {
                Proto::Raw => c.phase = Phase::Streaming,
                Proto::Ws { path, headers } => {
                    let host = c.spec.addr.to_string();
                    let (req, key) = ws::upgrade_request(&host, path, headers);
                    c.out = req;
                    c.key = key;
                    c.phase = Phase::Upgrading;
                }
            }
        }
        if c.phase == Phase::Done {
            return;
        }
        if let Err(e) = flush(c) {
            return fail(c, format!("write: {e}"));
        }
        loop {
            let Some(s) = c.stream.as_mut() else { return };
            match s.read(buf) {
                Ok(0) => {
                    eof(c);
                    break;
                }
                Ok(n) => {
                    let now = mono_ns();
                    received(c, &buf[..n], now);
                    if c.phase == Phase::Done {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    fail(c, format!("read: {e}"));
                    break;
                }
            }
        }
        if c.phase == Phase::Done {
            if let Some(mut s) = c.stream.take() {
                let _ = poll.registry().deregister(&mut s);
            }
            if c.res.error.is_none() && bytes_at_first_finish.is_none() {
                *bytes_at_first_finish = Some(conns.iter().map(|c| c.check.bytes()).collect());
            }
        }
    }

    /// Results in the order of the specs; consumes the client, closing
    /// every connection still open.
    pub fn finish(self) -> Vec<ConnResult> {
        self.finish_with_sinks()
            .into_iter()
            .map(|(r, _)| r)
            .collect()
    }

    /// [`Client::finish`], with each connection's sink.
    pub fn finish_with_sinks(self) -> Vec<(ConnResult, S)> {
        self.conns
            .into_iter()
            .map(|mut c| {
                c.res.bytes = c.check.bytes();
                c.res.packets = c.check.packets();
                c.res.blocks = c.check.blocks();
                c.res.messages = c.frames.messages();
                c.res.latencies_ns = c.check.take_latencies();
                c.res.first_packet_mono_ns = c.check.first_packet_ns();
                if c.res.error.is_none() {
                    c.res.error = c.check.error().map(str::to_string);
                }
                (c.res, c.check)
            })
            .collect()
    }

    /// Ends every stream still running with `why`.
    pub fn fail_all(&mut self, why: &str) {
        for c in self.conns.iter_mut().filter(|c| c.phase != Phase::Done) {
            fail(c, why.to_string());
        }
        self.queue.clear();
    }

    /// Streams currently open (connected and not ended).
    pub fn open_streams(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| c.stream.is_some() && c.phase != Phase::Done)
            .count()
    }
}

fn flush<S>(c: &mut Conn<S>) -> io::Result<()> {
    while !c.out.is_empty() {
        let Some(s) = c.stream.as_mut() else {
            return Ok(());
        };
        match s.write(&c.out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn fail<S>(c: &mut Conn<S>, why: String) {
    if c.res.error.is_none() {
        c.res.error = Some(why);
    }
    c.phase = Phase::Done;
    c.res
        .end_ns
        .get_or_insert(mono_ns().saturating_sub(c.res.start_mono_ns));
}

fn complete<S: Sink>(c: &mut Conn<S>) {
    let now = mono_ns();
    c.phase = Phase::Done;
    c.res.end_ns = Some(now - c.res.start_mono_ns);
    c.res.end_mono_ns = Some(now);
    if let Err(e) = c.check.finish() {
        return fail(c, e);
    }
    if let Some(want) = c.spec.expect_packets {
        if c.check.packets() != want {
            let got = c.check.packets();
            fail(c, format!("stream ended after {got} of {want} packets"));
        }
    }
}

fn eof<S: Sink>(c: &mut Conn<S>) {
    match c.phase {
        Phase::Streaming if matches!(c.spec.proto, Proto::Raw) => complete(c),
        Phase::Streaming => fail(c, "connection closed without a close frame".into()),
        _ => fail(c, format!("connection closed during {:?}", c.phase)),
    }
}

fn received<S: Sink>(c: &mut Conn<S>, data: &[u8], now: u64) {
    if c.phase == Phase::Upgrading {
        c.head.extend_from_slice(data);
        match ws::check_upgrade(&c.head, &c.key) {
            Ok(Upgrade::Partial) => return,
            Ok(Upgrade::Switched(n)) => {
                c.res.upgraded_ns = Some(now - c.res.start_mono_ns);
                c.phase = Phase::Streaming;
                let rest = c.head.split_off(n);
                c.head = Vec::new();
                return received(c, &rest, now);
            }
            Err(e) => return fail(c, e),
        }
    }
    if data.is_empty() {
        return;
    }
    let before = c.check.bytes();
    match c.spec.proto {
        Proto::Raw => c.check.feed(data, now),
        Proto::Ws { .. } => {
            let Conn {
                frames,
                check,
                controls,
                ..
            } = c;
            let r = frames.feed(data, &mut |p| check.feed(p, now), controls);
            if let Err(e) = r {
                return fail(c, format!("websocket: {e}"));
            }
        }
    }
    if before == 0 && c.check.bytes() > 0 {
        c.res.first_byte_ns = Some(now - c.res.start_mono_ns);
        c.res.first_byte_mono_ns = Some(now);
    }
    for ctl in std::mem::take(&mut c.controls) {
        match ctl {
            Control::Ping(p) => c.out.extend(ws::client_frame(0xA, &p)),
            Control::Close(code, reason) => {
                c.out
                    .extend(ws::client_frame(0x8, &code.unwrap_or(1000).to_be_bytes()));
                let _ = flush(c);
                c.res.close = Some((code, reason.clone()));
                if c.check.blocks() == 0 {
                    return fail(c, format!("closed before any data: {code:?} {reason}"));
                }
                // No status code (websocat's habit) is a plain end too.
                if !matches!(code, None | Some(1000)) {
                    complete(c);
                    return fail(c, format!("closed with {code:?}: {reason}"));
                }
                return complete(c);
            }
        }
    }
    if c.check.error().is_some() {
        // The verdict is in; reading on would only measure a broken stream.
        complete(c);
    }
}
