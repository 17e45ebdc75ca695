//! One client connection and everything it owns, as an explicit state
//! machine:
//!
//! ```text
//! Head --(/version, 404, ...)--> Head (keep-alive) | Flush -> gone
//! Head --(/capture + upgrade)--> [Discovering] --> Streaming --> Closing -> gone
//!                                          \-- refused: 101 + close --> Closing
//! ```
//!
//! The reactor routes each event here by token; every decision about bytes
//! is made by the no-I/O modules (`http`, `params`, `ws`, `pcapng`, ...). A
//! session never blocks and never panics on what a client or child does: it
//! ends itself with a reason and the loop goes on. A session that started a
//! capture program is not removed before that program is reaped.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info, warn};
use mio::unix::pipe::Receiver;
use mio::{Interest, Registry, Token};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::capture::{capture_args, spawn};
use crate::config::Config;
use crate::conn::{Conn, HIGH_WATER, LOW_WATER, READS_PER_TURN};
use crate::discovery::DiscoveryError;
use crate::front::Route;
use crate::http::{self, Request};
use crate::lookup::Delivery;
use crate::metrics::{self, Refusal};
use crate::nscache::Found;
use crate::params::{capture_params_limited, CaptureParams, Limits};
use crate::pcapng::{target_document, ShbEditor, TargetInfo};
use crate::proxy::{self, Proxy, Step};
use crate::target::{is_stale, process_starttime};
use crate::ws::{self, FrameReader, Inbound};

mod capture;
mod errlines;
mod multi;
mod proxy_phase;

use capture::{term_step, terminate, TermStep};
use errlines::ErrLines;

/// Token roles: the low bits of a token say which descriptor of a session
/// an event is for. Eight bits: a capture of several targets has two pipes
/// per target from `multi::MULTI_ROLES` on.
pub const ROLE_BITS: usize = 8;
pub const CLIENT: usize = 0;
pub const STDOUT: usize = 1;
pub const STDERR: usize = 2;
pub const UPSTREAM: usize = 3;

pub fn token(key: usize, role: usize) -> Token {
    Token((key << ROLE_BITS) | role)
}

/// Time a client has to send a complete request head; ends slowloris
/// connections that trickle bytes to hold a slot.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time allowed between two requests on a kept-alive connection.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time the client has to answer our close frame, or to take a final
/// response, before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Client bytes kept while discovery runs (frames sent behind the
/// handshake); a well-behaved client sends none or a close frame.
const MAX_EARLY_FRAMES: usize = 4096;
/// How often SIGTERM is repeated to a capture program that has not exited,
/// until the kill deadline. dumpcap loses a SIGTERM that arrives while it
/// starts up: its handler only clears a flag that its capture loop then
/// sets again. A client that closes right after the upgrade would otherwise
/// wait for the kill deadline (10 s) and hold a capture slot meanwhile.
const TERM_REPEAT: Duration = Duration::from_secs(1);

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

/// What a session may use of the reactor while handling an event.
pub struct Ctx<'a> {
    pub registry: &'a Registry,
    pub cfg: &'a Config,
    pub timers: &'a mut Timers,
    /// Capture program pid -> slab key, for SIGCHLD.
    pub children: &'a mut std::collections::HashMap<i32, usize>,
    /// Descriptors with work left after their turn: handled again before the
    /// loop sleeps.
    pub again: &'a mut Vec<(Token, u64)>,
    /// The loop's one read buffer; nothing read stays in it across events.
    pub buf: &'a mut [u8],
    pub now: Instant,
    /// The discovery service: its address and the shared listing.
    pub discovery: &'a mut crate::lookup::Discovery,
    /// What namespace scans learned, and when the next may run.
    pub namespaces: &'a mut crate::nscache::Namespaces,
    /// Captures running now (the reactor keeps count).
    pub captures: usize,
    pub privileges: &'a crate::privileges::Privileges,
    /// Who may capture: origins and tokens in force (reloaded on SIGHUP).
    pub policy: &'a crate::auth::Policy,
}

/// Why a capture is ending; decides what the client gets at the end.
#[derive(Clone, Debug, PartialEq)]
enum Ending {
    Running,
    /// The capture program closed its output or exited by itself.
    ProgramEnded,
    /// The client sent a close frame with this code.
    ClientClosed(Option<u16>),
    /// The client's connection broke: nothing more can be sent.
    ClientGone,
    /// The client broke the websocket protocol.
    Violation(u16, &'static str),
    /// The service is shutting down.
    Shutdown,
}

impl Ending {
    /// Whether capture output is still relayed to the client.
    fn forwards(&self) -> bool {
        matches!(
            self,
            Ending::Running | Ending::ProgramEnded | Ending::Shutdown
        )
    }
}

struct Capture {
    pid: Pid,
    /// Not yet reaped: the pid is ours and may be signalled.
    alive: bool,
    status: Option<WaitStatus>,
    stdout: Option<Receiver>,
    stderr: Option<Receiver>,
    editor: ShbEditor,
    reader: FrameReader,
    /// What it said on stderr, for the close reason.
    err: ErrLines,
    ending: Ending,
    paused: bool,
    /// When the current pause began, for the paused-time metric.
    paused_since: Option<Instant>,
    /// The client's frames are not read: what the service owes it (pongs)
    /// would grow the output queue past [`HIGH_WATER`]. Resumes below
    /// [`LOW_WATER`], like the capture pipe.
    client_paused: bool,
    term_sent: bool,
    /// When SIGTERM gives way to SIGKILL (set by the first SIGTERM).
    kill_at: Option<Instant>,
    kill_sent: bool,
}

struct Discovering {
    params: CaptureParams,
    accept: String,
    /// `host:port` of the discovery service, for reasons.
    service: String,
    /// When the lookup began, for the lookup duration metric.
    started: Instant,
    /// Not waiting for the discovery service but for the next namespace
    /// scan, for a lookup first asked at this instant (see `nscache`).
    locating: Option<Instant>,
}

/// A proxied request waiting for the discovery service's address.
struct ProxyResolving {
    req: Request,
    target: String,
    leftover: Vec<u8>,
}

enum Phase {
    /// Reading a request head. `paused`: responses to pipelined requests
    /// filled the output queue, so reading waits for the client to take them.
    Head {
        buf: Vec<u8>,
        first: bool,
        paused: bool,
    },
    /// Waiting for the discovery service before spawning.
    Discovering(Box<Discovering>),
    Streaming(Box<Capture>),
    /// Waiting for the discovery service before spawning, several targets.
    MultiDiscovering(Box<multi::MultiDiscovering>),
    /// Relaying the merged capture of several targets.
    Multi(Box<multi::MultiCapture>),
    /// Our close frame is out; waiting for the client's, or EOF.
    Closing(FrameReader),
    /// A final response is being flushed; then the connection closes.
    Flush,
    /// Forwarding one request to the discovery service (`--proxy-discovery`).
    Proxy(Box<Proxy>),
    /// A request to forward, waiting for the discovery service's name to
    /// be looked up. The client is not read meanwhile.
    ProxyResolving(Box<ProxyResolving>),
}

pub struct Session {
    pub id: u64,
    key: usize,
    peer: SocketAddr,
    conn: Conn,
    phase: Phase,
    deadline: Option<Instant>,
    finished: bool,
    /// How many running captures the reactor counts for this session (one
    /// per target).
    pub counted: usize,
    /// Client bytes that arrived behind the websocket handshake before a
    /// capture could read them (a close frame, say): fed to the capture's
    /// frame reader, or to the closing one if the capture is refused.
    early: Vec<u8>,
}

fn arm(deadline: &mut Option<Instant>, ctx: &mut Ctx, key: usize, id: u64, after: Duration) {
    let when = ctx.now + after;
    *deadline = Some(when);
    ctx.timers.arm(when, key, id);
}

impl Session {
    pub fn new(
        id: u64,
        key: usize,
        peer: SocketAddr,
        sock: crate::tls::Transport,
        ctx: &mut Ctx,
    ) -> Self {
        let mut s = Session {
            id,
            key,
            peer,
            conn: Conn::over(sock),
            phase: Phase::Head {
                buf: Vec::new(),
                first: true,
                paused: false,
            },
            deadline: None,
            finished: false,
            counted: 0,
            early: Vec::new(),
        };
        arm(&mut s.deadline, ctx, key, id, HEAD_TIMEOUT);
        s
    }

    pub fn socket(&mut self) -> &mut mio::net::TcpStream {
        self.conn.sock.tcp()
    }

    /// Whether the session can be removed: done, and no child left to reap.
    pub fn finished(&self) -> bool {
        self.finished
            && !matches!(&self.phase, Phase::Streaming(c) if c.alive)
            && !matches!(&self.phase, Phase::Multi(m) if m.any_alive())
    }

    pub fn is_capture(&self) -> bool {
        matches!(self.phase, Phase::Streaming(_) | Phase::Discovering(_))
    }

    /// How many captures this session counts for against `--max-captures`:
    /// one per target.
    pub fn capture_weight(&self) -> usize {
        match &self.phase {
            Phase::Multi(m) => m.weight(),
            Phase::MultiDiscovering(d) => d.weight(),
            _ => usize::from(self.is_capture()),
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether a full connection table may give this session's slot to a
    /// new connection: it is waiting for a request head (its first, or the
    /// next on a kept-alive connection) with no answer still queued, so it
    /// holds nothing but the slot.
    pub fn displaceable(&self) -> bool {
        !self.finished && matches!(self.phase, Phase::Head { .. }) && self.conn.pending() == 0
    }

    /// Ends a [`displaceable`](Self::displaceable) session to make room.
    pub fn displace(&mut self) {
        debug!(
            "[c{}] closed to make room: the connection table is full and this connection sent no request",
            self.id
        );
        let _ = self.conn.sock.tcp().shutdown(std::net::Shutdown::Both);
        self.finished = true;
    }

    // ---- event entry points -------------------------------------------

    pub fn on_event(&mut self, ctx: &mut Ctx, role: usize, readable: bool, writable: bool) {
        if self.finished {
            return;
        }
        match role {
            CLIENT => {
                if writable {
                    self.on_writable(ctx);
                }
                if readable && !self.finished {
                    self.on_readable(ctx);
                }
            }
            STDOUT => self.pump_stdout(ctx),
            STDERR => self.pump_stderr(ctx),
            UPSTREAM if matches!(self.phase, Phase::Proxy(_)) => {
                self.on_proxy_upstream(ctx, readable, writable)
            }
            r if r >= multi::MULTI_ROLES => self.on_multi_pipe(ctx, r),
            _ => {}
        }
    }

    pub fn on_timer(&mut self, ctx: &mut Ctx) {
        match self.deadline {
            Some(d) if d <= ctx.now => self.deadline = None,
            _ => return,
        }
        let id = self.id;
        match &mut self.phase {
            Phase::Head { buf, first, .. } => {
                if !buf.is_empty() || *first {
                    debug!("[c{id}] request head not complete in time");
                    if !buf.is_empty() {
                        let _ = self.conn.send(&http::text_response(
                            408,
                            "request head not received in time",
                            true,
                        ));
                    }
                }
                self.finished = true;
            }
            Phase::Discovering(d) => {
                metrics::lookup(metrics::Lookup::TimedOut, ctx.now - d.started);
                metrics::refused(Refusal::Discovery);
                let reason = DiscoveryError::TimedOut.describe(&d.service);
                let accept = d.accept.clone();
                self.refuse(ctx, &accept, ws::INTERNAL_ERROR, &reason);
            }
            Phase::Streaming(cap) => {
                if cap.alive && !cap.kill_sent {
                    match term_step(cap.kill_at.unwrap_or(ctx.now), ctx.now) {
                        TermStep::Repeat(next) => {
                            debug!(
                                "[c{id}] capture program {} still running; repeating SIGTERM",
                                cap.pid
                            );
                            let _ = kill(cap.pid, Signal::SIGTERM);
                            arm(&mut self.deadline, ctx, self.key, id, next - ctx.now);
                        }
                        TermStep::Kill => {
                            warn!(
                                "[c{id}] capture program {} ignored SIGTERM for {:?}; killing it",
                                cap.pid, ctx.cfg.term_timeout
                            );
                            let _ = kill(cap.pid, Signal::SIGKILL);
                            cap.kill_sent = true;
                        }
                    }
                }
            }
            Phase::Multi(_) | Phase::MultiDiscovering(_) => self.multi_timer(ctx),
            Phase::Closing(_) | Phase::Flush => {
                debug!("[c{id}] client did not finish closing in time");
                self.finished = true;
            }
            Phase::ProxyResolving(_) => {
                info!("[c{id}] discovery service name not looked up in time");
                let resp = http::text_response(
                    504,
                    "the discovery service's name was not looked up in time",
                    true,
                );
                self.respond_close(ctx, resp);
            }
            Phase::Proxy(p) => {
                if p.answered() {
                    self.finished = true;
                } else if !p.request_sent() {
                    // The client is still sending its request: the discovery
                    // service cannot be late yet.
                    self.arm(ctx, ctx.cfg.discovery_timeout);
                } else {
                    info!("[c{id}] discovery service did not answer in time");
                    let resp = http::text_response(
                        504,
                        "the discovery service did not answer in time",
                        true,
                    );
                    self.respond_close(ctx, resp);
                }
            }
        }
    }

    /// The capture program was reaped.
    pub fn on_exit(&mut self, ctx: &mut Ctx, status: WaitStatus) {
        if matches!(self.phase, Phase::Multi(_)) {
            return self.on_multi_exit(ctx, status.pid(), status);
        }
        let Phase::Streaming(cap) = &mut self.phase else {
            return;
        };
        cap.alive = false;
        cap.status = Some(status);
        self.deadline = None;
        debug!(
            "[c{}] capture program {} reaped: {status:?}",
            self.id, cap.pid
        );
        if !cap.ending.forwards() {
            // Nobody will read the rest: let the pipes go now.
            cap.stdout = None;
            cap.stderr = None;
        }
        self.check_end(ctx);
    }

    /// The service is shutting down: end what can be ended now, terminate
    /// capture programs (they are answered with 1001 once reaped).
    pub fn shutdown(&mut self, ctx: &mut Ctx) {
        match &mut self.phase {
            Phase::Streaming(cap) => {
                if cap.ending.forwards() {
                    cap.ending = Ending::Shutdown;
                }
                terminate(cap, &mut self.deadline, ctx, self.key, self.id);
                self.check_end(ctx);
            }
            Phase::Multi(_) => self.shutdown_multi(ctx),
            Phase::Discovering(_) | Phase::MultiDiscovering(_) => {
                let _ = self.conn.send(&http::text_response(
                    503,
                    "the capture service is shutting down",
                    true,
                ));
                self.phase = Phase::Flush;
                self.arm(ctx, CLOSE_TIMEOUT);
                self.finish_if_flushed();
            }
            Phase::Head { .. } | Phase::Closing(_) | Phase::Proxy(_) | Phase::ProxyResolving(_) => {
                self.finished = true
            }
            Phase::Flush => {}
        }
    }

    // ---- client socket -------------------------------------------------

    fn on_writable(&mut self, ctx: &mut Ctx) {
        if let Err(e) = self.conn.flush() {
            self.client_broke(ctx, e);
            return;
        }
        match &mut self.phase {
            Phase::Streaming(cap)
                if (cap.paused || cap.client_paused) && self.conn.pending() <= LOW_WATER =>
            {
                if cap.client_paused {
                    cap.client_paused = false;
                    ctx.again.push((token(self.key, CLIENT), self.id));
                }
                if cap.paused {
                    cap.paused = false;
                    capture::pause_ended(cap, ctx.now);
                    self.pump_stdout(ctx);
                }
            }
            Phase::Head { paused: true, .. } if self.conn.pending() <= LOW_WATER => {
                if let Phase::Head { paused, .. } = &mut self.phase {
                    *paused = false;
                }
                self.parse_heads(ctx);
                ctx.again.push((token(self.key, CLIENT), self.id));
            }
            Phase::Multi(_) => self.resume_multi(ctx),
            Phase::Proxy(p) if p.up_paused && self.conn.pending() <= LOW_WATER => {
                let step = p.pump_upstream(&mut self.conn, ctx.buf);
                self.proxy_step(ctx, step);
            }
            _ => {}
        }
        self.finish_if_flushed();
    }

    /// The client answered our close frame: close once it is all out.
    fn close_handshake_done(&mut self) {
        self.phase = Phase::Flush;
        self.finish_if_flushed();
    }

    fn finish_if_flushed(&mut self) {
        if matches!(self.phase, Phase::Flush) && self.conn.pending() == 0 {
            self.conn.sock.shutdown_write();
            self.finished = true;
        }
    }

    /// A read or write on the client socket failed: the peer is gone.
    fn client_broke(&mut self, ctx: &mut Ctx, e: io::Error) {
        debug!("[c{}] client connection broke: {e}", self.id);
        match &mut self.phase {
            Phase::Streaming(cap) => {
                cap.ending = Ending::ClientGone;
                terminate(cap, &mut self.deadline, ctx, self.key, self.id);
                self.check_end(ctx);
            }
            Phase::Multi(_) => self.multi_client_broke(ctx),
            _ => self.finished = true,
        }
    }

    fn on_readable(&mut self, ctx: &mut Ctx) {
        match self.phase {
            Phase::Head { .. } => self.read_head(ctx),
            Phase::Streaming(_) => self.read_frames(ctx),
            Phase::Closing(_) => self.read_closing(ctx),
            Phase::Multi(_) => self.read_frames_multi(ctx),
            Phase::Discovering(_) | Phase::MultiDiscovering(_) | Phase::Flush => {
                self.read_discard(ctx)
            }
            Phase::Proxy(_) => self.on_proxy_client(ctx),
            // Read once the request can be forwarded.
            Phase::ProxyResolving(_) => {}
        }
    }

    /// Reads up to a turn's worth from the client. `Ok(0)` is EOF.
    fn read_client(&mut self, ctx: &mut Ctx, reads: &mut usize) -> io::Result<usize> {
        if *reads == READS_PER_TURN {
            ctx.again.push((token(self.key, CLIENT), self.id));
            return Err(io::ErrorKind::WouldBlock.into());
        }
        *reads += 1;
        loop {
            match self.conn.sock.read(ctx.buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn read_head(&mut self, ctx: &mut Ctx) {
        let mut reads = 0;
        loop {
            if self.head_backlogged() {
                return;
            }
            match self.read_client(ctx, &mut reads) {
                Ok(0) => {
                    self.finished = true;
                    return;
                }
                Ok(n) => {
                    let mut worth = true;
                    if let Phase::Head { buf, .. } = &mut self.phase {
                        // Never hold more than a head's worth plus one read.
                        buf.extend_from_slice(&ctx.buf[..n]);
                        worth = http::worth_parsing(buf, n, ctx.cfg.max_head_bytes);
                    }
                    if worth {
                        self.parse_heads(ctx);
                    }
                    if !matches!(self.phase, Phase::Head { .. }) || self.finished {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.client_broke(ctx, e);
                    return;
                }
            }
        }
    }

    /// A client that pipelines requests without reading the responses is not
    /// read further until it takes them: its queue stays bounded.
    fn head_backlogged(&mut self) -> bool {
        let full = self.conn.pending() >= HIGH_WATER;
        if let Phase::Head { paused, .. } = &mut self.phase {
            *paused |= full;
        }
        full
    }

    /// Handles every complete head in the buffer (pipelined requests).
    fn parse_heads(&mut self, ctx: &mut Ctx) {
        loop {
            if self.head_backlogged() {
                return;
            }
            let Phase::Head { buf, .. } = &mut self.phase else {
                return;
            };
            if buf.is_empty() {
                return;
            }
            let parsed =
                http::parse_request_limited(buf, ctx.cfg.max_head_bytes, ctx.cfg.max_headers)
                    .and_then(|r| match r {
                        Some(req) => req.check_rules().map(|()| Some(req)),
                        None => Ok(None),
                    });
            match parsed {
                Ok(None) => return,
                Ok(Some(req)) => {
                    let leftover = buf.split_off(req.head_len);
                    self.handle_request(ctx, req, leftover);
                    if self.finished {
                        return;
                    }
                }
                Err(e) => {
                    debug!("[c{}] bad request: {e}", self.id);
                    self.log_line(ctx, None, e.status());
                    self.respond_close(ctx, http::text_response(e.status(), &e.to_string(), true));
                    return;
                }
            }
        }
    }

    fn read_discard(&mut self, ctx: &mut Ctx) {
        let mut reads = 0;
        loop {
            match self.read_client(ctx, &mut reads) {
                Ok(0) => {
                    // The client gave up: no one is left to answer.
                    if matches!(
                        self.phase,
                        Phase::Discovering(_) | Phase::MultiDiscovering(_)
                    ) {
                        debug!("[c{}] client left during discovery", self.id);
                    }
                    self.finished = true;
                    return;
                }
                Ok(n) => {
                    // Frames sent right behind the handshake (a close, say)
                    // are kept for the capture, within a bound.
                    if matches!(
                        self.phase,
                        Phase::Discovering(_) | Phase::MultiDiscovering(_)
                    ) {
                        let room = MAX_EARLY_FRAMES.saturating_sub(self.early.len());
                        self.early.extend_from_slice(&ctx.buf[..n.min(room)]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => return self.client_broke(ctx, e),
            }
        }
    }

    fn read_closing(&mut self, ctx: &mut Ctx) {
        let mut reads = 0;
        loop {
            match self.read_client(ctx, &mut reads) {
                Ok(0) => {
                    self.finished = true;
                    return;
                }
                Ok(n) => {
                    let Phase::Closing(reader) = &mut self.phase else {
                        return;
                    };
                    // Pongs are not owed once our close frame is out.
                    if reader.feed(&ctx.buf[..n], &mut Vec::new()).is_some() {
                        return self.close_handshake_done();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.finished = true;
                    return;
                }
            }
        }
    }

    fn read_frames(&mut self, ctx: &mut Ctx) {
        let mut reads = 0;
        loop {
            // Pongs count against the same bound as the stream: a client
            // that pings without reading is not read until it takes them.
            if self.conn.pending() >= HIGH_WATER {
                if let Phase::Streaming(cap) = &mut self.phase {
                    cap.client_paused = true;
                }
                break;
            }
            let r = self.read_client(ctx, &mut reads);
            let Phase::Streaming(cap) = &mut self.phase else {
                return;
            };
            match r {
                Ok(0) => {
                    if cap.ending.forwards() || matches!(cap.ending, Ending::ClientClosed(_)) {
                        debug!("[c{}] client closed the connection", self.id);
                        cap.ending = Ending::ClientGone;
                    }
                    terminate(cap, &mut self.deadline, ctx, self.key, self.id);
                    break;
                }
                Ok(n) => {
                    if cap.reader.is_done() {
                        continue;
                    }
                    let mut replies = Vec::new();
                    let event = cap.reader.feed(&ctx.buf[..n], &mut replies);
                    if !replies.is_empty() && cap.ending.forwards() {
                        if let Err(e) = self.conn.send(&replies) {
                            return self.client_broke(ctx, e);
                        }
                    }
                    match event {
                        None => {}
                        Some(Inbound::Close { code, reason }) => {
                            info!(
                                "[c{}] client closed the capture ({}{}{})",
                                self.id,
                                code.map_or("no code".to_string(), |c| c.to_string()),
                                if reason.is_empty() { "" } else { ": " },
                                reason
                            );
                            if cap.ending.forwards() {
                                cap.ending = Ending::ClientClosed(code);
                            }
                            terminate(cap, &mut self.deadline, ctx, self.key, self.id);
                        }
                        Some(Inbound::Violation { code, reason }) => {
                            info!(
                                "[c{}] client broke the websocket protocol: {reason}",
                                self.id
                            );
                            if cap.ending.forwards() {
                                cap.ending = Ending::Violation(code, reason);
                            }
                            terminate(cap, &mut self.deadline, ctx, self.key, self.id);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return self.client_broke(ctx, e),
            }
        }
        self.check_end(ctx);
    }

    // ---- requests --------------------------------------------------------

    fn handle_request(&mut self, ctx: &mut Ctx, req: Request, leftover: Vec<u8>) {
        if ctx.cfg.log_headers {
            for (n, v) in &req.headers {
                info!(
                    "[c{}] header {}",
                    self.id,
                    crate::logging::header_line(n, v)
                );
            }
        }
        let route = crate::front::route(&req, ctx.cfg.proxy_discovery);
        if let Err(refusal) = crate::auth::check(ctx.policy, &req, &route) {
            info!(
                "[c{}] {} refused: {}",
                self.id,
                req.path,
                match refusal {
                    crate::auth::Refusal::ForeignOrigin => "foreign Origin",
                    crate::auth::Refusal::NoToken => "no valid bearer token",
                }
            );
            self.log_line(ctx, Some(&req), refusal.status());
            return self.respond_close(ctx, refusal.response());
        }
        match route {
            Route::Capture { .. } if ctx.captures >= ctx.cfg.max_captures => {
                info!(
                    "[c{}] capture refused: {} captures are running, the limit",
                    self.id, ctx.captures
                );
                metrics::refused(Refusal::Limit);
                self.log_line(ctx, Some(&req), 503);
                let text = format!(
                    "capture refused: this service is running its maximum of {} captures; try again later",
                    ctx.cfg.max_captures
                );
                let resp = http::response(
                    503,
                    &[("Retry-After", "10")],
                    "text/plain; charset=utf-8",
                    format!("{text}\n").as_bytes(),
                    true,
                );
                self.respond_close(ctx, resp);
            }
            Route::Capture { accept } => {
                self.log_line(ctx, Some(&req), 101);
                self.deadline = None;
                self.start_capture(ctx, &req, accept, leftover);
            }
            Route::Respond {
                status,
                bytes,
                keep_alive,
            } => {
                self.log_line(ctx, Some(&req), status);
                if keep_alive {
                    self.respond(ctx, bytes, leftover);
                } else {
                    self.respond_close(ctx, bytes);
                }
            }
            Route::Proxy { target } => {
                let req = crate::auth::without_our_credentials(ctx.policy, req);
                self.start_proxy(ctx, &req, &target, leftover)
            }
        }
    }

    /// Sends a response and waits for the next request on this connection.
    fn respond(&mut self, ctx: &mut Ctx, resp: Vec<u8>, leftover: Vec<u8>) {
        if let Err(e) = self.conn.send(&resp) {
            return self.client_broke(ctx, e);
        }
        self.await_next_request(ctx, leftover);
    }

    /// Keep-alive: the connection waits for its next request, which may
    /// already have begun in `buf`.
    fn await_next_request(&mut self, ctx: &mut Ctx, buf: Vec<u8>) {
        self.phase = Phase::Head {
            buf,
            first: false,
            paused: false,
        };
        self.arm(ctx, KEEPALIVE_TIMEOUT);
    }

    fn arm(&mut self, ctx: &mut Ctx, after: Duration) {
        arm(&mut self.deadline, ctx, self.key, self.id, after);
    }

    fn respond_close(&mut self, ctx: &mut Ctx, resp: Vec<u8>) {
        if let Err(e) = self.conn.send(&resp) {
            return self.client_broke(ctx, e);
        }
        self.phase = Phase::Flush;
        self.arm(ctx, CLOSE_TIMEOUT);
        self.finish_if_flushed();
    }

    fn log_line(&self, ctx: &Ctx, req: Option<&Request>, status: impl std::fmt::Display) {
        if !ctx.cfg.log_requests {
            return;
        }
        let line = match req {
            Some(r) => format!(
                "{} {}{}{} HTTP/1.{}",
                r.method,
                r.path,
                if r.query.is_some() { "?" } else { "" },
                r.query.as_deref().unwrap_or(""),
                r.minor_version
            ),
            None => "-".to_string(),
        };
        info!(
            "[c{}] {} - - [{}] \"{}\" {} -",
            self.id,
            self.peer.ip(),
            crate::logging::clf_time(SystemTime::now()),
            line.escape_default(),
            status
        );
    }
}

/// When the target namespace `netns` is the service's own (and
/// `--no-self-exclusion` is not given): the filter clause that keeps this
/// session's own connection out of the capture, and how the document
/// describes it.
fn own_exclusion(
    cfg: &Config,
    conn: &Conn,
    peer: SocketAddr,
    netns: u64,
) -> Option<(String, String)> {
    if cfg.no_self_exclusion {
        return None;
    }
    let own = crate::netns::inode_of(std::path::Path::new("/proc/self/ns/net"))?;
    if own != netns {
        return None;
    }
    let local = conn.sock.local_addr().ok()?;
    Some((
        crate::selfexcl::own_connection_filter(local, peer),
        crate::selfexcl::describe(local, peer),
    ))
}

/// `host:port` of the discovery service as the user configured it.
pub fn service_name(cfg: &Config) -> String {
    if cfg.discovery_service.contains(':') {
        format!("[{}]:{}", cfg.discovery_service, cfg.gw_port)
    } else {
        format!("{}:{}", cfg.discovery_service, cfg.gw_port)
    }
}
