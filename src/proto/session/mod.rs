//! One client connection as a state machine that does no I/O.
//!
//! ```text
//! Head --(/version, 404, ...)--> Head (keep-alive) | Flush -> Done
//! Head --(/capture + upgrade)--> Starting --> Capturing --> Closing | Flush -> Done
//!                                    \-- refused: 101 + close --> Closing
//! Head --(proxied request)--> Proxying (address, then exchange) --> Head | Flush
//! ```
//!
//! Everything that happens to a connection is one [`Event`], handed to
//! [`Session::on`]. Each phase owns its events in one `match`, in the file
//! about that phase: [`head`] (request heads and routing), [`start`]
//! (resolving, locating and starting a capture's sources), [`capture`]
//! (the running capture: relay, client frames, sources' lives and the
//! close), [`proxying`] (a request forwarded to the discovery service) and
//! [`ending`] (our close frame out, a final response flushing). A
//! transition takes the phase by value and returns the next one, so every
//! change of phase is in those functions' return values and in one
//! assignment here.
//!
//! What the machine asks of the world goes through the [`Host`] it is
//! given ([`host`]): questions answered on the spot (locate a namespace,
//! start a source, a process's start time, the next read) are method calls;
//! only what arrives later comes back as an event. The [`pump`] that reads
//! a ready descriptor is part of the machine, so the service's driver and
//! the simulated world ([`sim`]) run the same code. Nothing here touches a
//! descriptor, a process or a file: unit tests and the `session` fuzz
//! target drive this exact code with plain bytes.
//!
//! A session that started capture sources does not reach `Done` before
//! every one of them has ended (a process reaped).

use std::time::{Duration, Instant, SystemTime};

use core::net::SocketAddr;
use log::{debug, info};

use crate::config::Config;
use crate::proto::auth::Policy;
use crate::proto::http::Request;
use crate::proto::ws::{self, FrameReader};

mod capture;
mod ending;
mod errlines;
mod head;
pub mod host;
mod proxying;
pub mod pump;
mod refusal;
mod resolve;
pub mod sim;
mod source;
mod start;
#[cfg(test)]
mod tests;

pub use host::{
    Broken, Count, ExitStatus, Host, Listing, Locate, LocateError, Located, Out, Read, Sig, Source,
    SourceEnd, Spec, StartError, Started,
};
pub use refusal::Refusal;
pub use resolve::{resolve, Resolved};

use capture::Capture;
use head::Head;
use proxying::Proxying;
use start::Start;

/// Queued output above which a connection's sources (capture output,
/// pipelined requests, the client's own frames, a proxied response) are not
/// read; reading resumes below [`LOW_WATER`]. Bounds a slow reader's memory.
pub const HIGH_WATER: usize = 256 * 1024;
pub const LOW_WATER: usize = 64 * 1024;
/// Time a client has to send a complete request head; ends slowloris
/// connections that trickle bytes to hold a slot.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time allowed between two requests on a kept-alive connection.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time the client has to answer our close frame, or to take a final
/// response, before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything that can happen to a session.
#[derive(Debug)]
pub enum Event<'a> {
    /// Bytes from the client (never empty).
    ClientData(&'a [u8]),
    /// The client closed its side.
    ClientEof,
    /// A read or write on the client socket failed: the peer is gone.
    ClientBroke(Broken),
    /// The host wrote what it could of the client's queue.
    Writable,
    /// One read of target `i`'s output (the loop's read buffer, which the
    /// relay may patch in place).
    Output(usize, &'a mut [u8]),
    /// Target `i`'s output ended; with the error if a read failed.
    OutputEnd(usize, Option<std::io::Error>),
    /// What target `i`'s source said on its diagnostics channel (stderr);
    /// `None`: its end.
    Diag(usize, Option<&'a [u8]>),
    /// Target `i`'s source ended (its process was reaped).
    Exited(usize, ExitStatus),
    /// Target `i`'s source that the service runs itself ended, its output
    /// all read.
    SourceEnded(usize, SourceEnd),
    /// The deadline from [`Session::poll_timeout`] has come.
    Timeout,
    /// The discovery service's listing this session waited for.
    Listing(Listing),
    /// The namespace scan a lookup waited for has run.
    Rescanned,
    /// The discovery service's address for a proxied request.
    Address(Result<SocketAddr, String>),
    /// The upstream connection is established and its queue flushed as far
    /// as the socket took it.
    UpstreamReady,
    /// Bytes from the discovery service (never empty).
    UpstreamData(&'a [u8]),
    /// The discovery service closed the connection.
    UpstreamEof,
    /// Connecting to, writing to or reading from the discovery service failed.
    UpstreamFailed(std::io::Error),
    /// The service is shutting down: end what can be ended now, stop
    /// capture sources (their clients get 1001 once they have ended).
    Shutdown,
    /// A full connection table takes this idle connection's slot.
    Displaced,
}

/// What a session may know of the world for one event.
pub struct Env<'a> {
    pub now: Instant,
    /// The wall clock, for the request log: read only when a line is
    /// logged, not on every event of the relay.
    pub wall: fn() -> SystemTime,
    pub cfg: &'a Config,
    /// Origins and tokens in force (reloaded on SIGHUP).
    pub policy: &'a Policy,
    /// Captures running now, counted by the loop (one per target).
    pub captures: usize,
    /// Why no capture can run (privileges), if so.
    pub no_capture: Option<&'a str>,
    /// The service's own network namespace inode, for self-exclusion.
    pub own_netns: Option<u64>,
}

/// One event's context, handed to every transition: the environment, the
/// host, and the connection's identity for logs and filters.
pub(crate) struct Cx<'e, 'h> {
    pub env: &'e Env<'e>,
    pub host: &'h mut dyn Host,
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

enum Phase {
    /// Reading a request head (the first, or the next on a kept-alive
    /// connection).
    Head(Head),
    /// A capture request being resolved, located and started.
    Starting(Box<Start>),
    /// Relaying capture output (one target's, or several merged).
    Capturing(Box<Capture>),
    /// A request forwarded to the discovery service.
    Proxying(Box<Proxying>),
    /// Our close frame is out; waiting for the client's, or EOF. (The
    /// reader is boxed so that every connection's slot stays small.)
    Closing {
        reader: Box<FrameReader>,
        deadline: Instant,
    },
    /// A final response is being flushed; then the connection closes.
    Flush {
        deadline: Instant,
    },
    /// A final response held back until `deadline` (a `401` to an address
    /// that keeps guessing tokens); the client is not read meanwhile.
    Held {
        resp: Box<[u8]>,
        deadline: Instant,
    },
    Done,
}

pub struct Session {
    pub id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    phase: Phase,
}

impl Session {
    pub fn new(id: u64, peer: SocketAddr, local: SocketAddr, now: Instant) -> Self {
        Session {
            id,
            peer,
            local,
            phase: Phase::Head(Head::first(now)),
        }
    }

    // ---- the one entry ---------------------------------------------------

    /// Hands one event to the phase it belongs to; the phase returns the
    /// next one. A final response that is all out ends the connection.
    pub fn on(&mut self, env: &Env, host: &mut dyn Host, ev: Event) {
        if matches!(ev, Event::Timeout) && self.poll_timeout().is_none_or(|d| d > env.now) {
            return;
        }
        let mut cx = Cx {
            env,
            host,
            id: self.id,
            peer: self.peer,
            local: self.local,
        };
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        let next = match phase {
            Phase::Head(h) => head::on(h, &mut cx, ev),
            Phase::Starting(s) => start::on(s, &mut cx, ev),
            Phase::Capturing(c) => capture::on(c, &mut cx, ev),
            Phase::Proxying(p) => proxying::on(p, &mut cx, ev),
            Phase::Closing { reader, deadline } => ending::closing(reader, deadline, &mut cx, ev),
            Phase::Flush { deadline } => ending::flushing(deadline, &mut cx, ev),
            Phase::Held { resp, deadline } => ending::held(resp, deadline, &mut cx, ev),
            Phase::Done => Phase::Done,
        };
        self.phase = ending::finish_if_flushed(next, &mut cx);
    }

    // ---- queries ---------------------------------------------------------

    /// When [`Event::Timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Head(h) => Some(h.deadline),
            Phase::Closing { deadline, .. }
            | Phase::Flush { deadline }
            | Phase::Held { deadline, .. } => Some(*deadline),
            Phase::Proxying(p) => p.deadline(),
            Phase::Starting(s) => s.deadline(),
            Phase::Capturing(c) => c.deadline(),
            Phase::Done => None,
        }
    }

    /// Whether the session can go: done, and every source it started ended.
    pub fn finished(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// How many captures this session counts for against `--max-captures`:
    /// one per target.
    pub fn capture_weight(&self) -> usize {
        match &self.phase {
            Phase::Starting(s) => s.weight(),
            Phase::Capturing(c) => c.weight(),
            _ => 0,
        }
    }

    /// Whether `src` should be read now. Reading a source pauses while what
    /// it would produce cannot be queued (the client's queue above
    /// [`HIGH_WATER`], or the upstream's for a proxied request); the pause
    /// is recorded, and [`Event::Writable`] (or the upstream's progress)
    /// resumes it below [`LOW_WATER`].
    pub fn may_read(&mut self, src: Source, host: &dyn Host, now: Instant) -> bool {
        let full = host.pending() >= HIGH_WATER;
        match (&mut self.phase, src) {
            (Phase::Head(h), Source::Client) => h.may_read(full),
            (Phase::Capturing(c), src) => c.may_read(src, full, now),
            (Phase::Proxying(p), src) => p.may_read(src, full, host.upstream_pending()),
            (Phase::Starting(_) | Phase::Closing { .. } | Phase::Flush { .. }, Source::Client) => {
                true
            }
            _ => false,
        }
    }

    /// Whether a full connection table may give this session's slot to a
    /// new connection: it waits for a request head (its first, or the next
    /// on a kept-alive connection), or holds back a refusal, with no answer
    /// still queued.
    pub fn displaceable(&self, pending: usize) -> bool {
        matches!(self.phase, Phase::Head(_) | Phase::Held { .. }) && pending == 0
    }
}

// ---- shared by the phases ---------------------------------------------------

/// Keep-alive: the connection waits for its next request, which may already
/// have begun in `buf` (parsed right away).
fn await_next_request(cx: &mut Cx, buf: Vec<u8>) -> Phase {
    head::parse(Head::next(buf, cx.env.now + KEEPALIVE_TIMEOUT), cx)
}

/// Sends a final response, then closes once it is out.
fn respond_close(cx: &mut Cx, resp: &[u8]) -> Phase {
    match cx.host.send(resp) {
        Ok(()) => flush_then_close(cx),
        Err(e) => client_gone(cx, e),
    }
}

fn flush_then_close(cx: &Cx) -> Phase {
    Phase::Flush {
        deadline: cx.env.now + CLOSE_TIMEOUT,
    }
}

/// Sends our close frame and waits for the client's (or EOF).
fn send_close(cx: &mut Cx, code: u16, reason: &str) -> Phase {
    match cx.host.send(&ws::close_frame(code, reason)) {
        Ok(()) => Phase::Closing {
            reader: Box::new(FrameReader::new()),
            deadline: cx.env.now + CLOSE_TIMEOUT,
        },
        Err(e) => client_gone(cx, e),
    }
}

/// Answers the client's close handshake, then closes the connection once
/// the answer is out.
fn answer_close(cx: &mut Cx, code: u16, reason: &str) -> Phase {
    match cx.host.send(&ws::close_frame(code, reason)) {
        Ok(()) => flush_then_close(cx),
        Err(e) => client_gone(cx, e),
    }
}

/// The client connection broke where nothing else is to be stopped.
fn client_gone(cx: &Cx, e: Broken) -> Phase {
    debug!("[c{}] client connection broke: {e}", cx.id);
    Phase::Done
}

/// One request line in common log format (`--log-requests`).
fn log_line(
    id: u64,
    peer: SocketAddr,
    env: &Env,
    req: Option<&Request>,
    status: impl std::fmt::Display,
) {
    if !env.cfg.log_requests {
        return;
    }
    let line = req.map_or_else(|| "-".to_string(), crate::proto::logtext::request_line);
    info!(
        "[c{id}] {} - - [{}] \"{}\" {} -",
        peer.ip(),
        crate::proto::logtext::clf_time((env.wall)()),
        line.escape_default(),
        status
    );
}

/// `host:port` of the discovery service as the user configured it.
pub fn service_name(cfg: &Config) -> String {
    if cfg.discovery_service.contains(':') {
        format!("[{}]:{}", cfg.discovery_service, cfg.gw_port)
    } else {
        format!("{}:{}", cfg.discovery_service, cfg.gw_port)
    }
}
