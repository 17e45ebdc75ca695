//! One client connection as a state machine that does no I/O.
//!
//! ```text
//! Head --(/version, 404, ...)--> Head (keep-alive) | Flush -> Done
//! Head --(/capture + upgrade)--> Starting --> Capturing --> Closing -> Done
//!                                    \-- refused: 101 + close --> Closing
//! Head --(proxied request)--> ProxyResolving --> Proxying --> Head | Flush
//! ```
//!
//! Events come in as method calls (bytes from the client, bytes from a
//! capture program's stdout or stderr, a program reaped, discovery's
//! answer, a deadline, the socket writable again); what the session wants
//! done comes out as [`Action`]s that the driver (`crate::service::driver`) performs
//! and answers. Bytes for the client go to an [`Out`] the driver provides,
//! so the relay writes straight from the loop's read buffer (no copy on the
//! hot path) and every watermark sees what the socket and TLS still hold.
//! The next deadline is [`Session::poll_timeout`]. Nothing here touches a
//! descriptor, a process or a file: unit tests and the `session` fuzz
//! target drive this exact code with plain bytes.
//!
//! A session that started capture programs does not reach `Done` before
//! every one of them is reaped.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use core::net::SocketAddr;
use log::{debug, info};

use crate::config::Config;
use crate::metrics;
use crate::proto::auth::Policy;
use crate::proto::front::Route;
use crate::proto::http::{self, Request};
use crate::proto::ws::{self, FrameReader};

mod capture;
mod errlines;
mod refusal;
mod resolve;
pub mod sim;
mod start;
#[cfg(test)]
mod tests;

pub use capture::{ExitStatus, Sig};
pub use refusal::Refusal;
pub use resolve::{resolve, Resolved};

use capture::Capture;
use start::Start;

/// Queued output above which a connection's sources (capture pipes,
/// pipelined requests, the client's own frames) are not read; reading
/// resumes below [`LOW_WATER`]. Bounds a slow reader's memory.
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

/// A descriptor of a session, as its events and actions name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Client,
    /// The discovery service, while a request is proxied to it.
    Upstream,
    /// Target `i`'s capture program's stdout.
    Stdout(usize),
    Stderr(usize),
}

/// The client connection broke (the peer is gone).
#[derive(Debug)]
pub struct Broken(pub String);

/// Where the session's bytes for the client go. The driver's socket queue
/// implements it; tests and the fuzzer use a vector.
pub trait Out {
    /// Bytes not yet taken by the kernel (queue and TLS): the watermarks
    /// compare against this.
    fn pending(&self) -> usize;
    /// Queues `bytes` behind whatever waits and writes what the socket takes.
    fn send(&mut self, bytes: &[u8]) -> Result<(), Broken>;
    /// `parts` in order as one unit, written straight from the caller's
    /// buffers when nothing waits.
    fn send_slices(&mut self, parts: &[&[u8]]) -> Result<(), Broken>;
    /// `head` then `body` as one unit, like `send_slices` (the relay's
    /// hot path).
    fn send_parts(&mut self, head: &[u8], body: &[u8]) -> Result<(), Broken> {
        self.send_slices(&[head, body])
    }
}

/// What a session wants done; the driver performs each and answers with
/// the matching event (synchronously for `Locate` and `Spawn`).
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// The discovery service's listing: [`Session::on_listing`], now or later.
    WantListing,
    /// The discovery service's address: [`Session::on_address`].
    WantAddress,
    /// Find and hold target `target`'s network namespace `netns` (`pid`
    /// tried first; a miss is final only after a scan that started after
    /// `asked_at`); list its interfaces when `links`.
    /// [`Session::on_located`].
    Locate {
        target: usize,
        netns: u64,
        pid: u32,
        asked_at: Instant,
        links: bool,
    },
    /// Start the capture program with `args` in target `target`'s held
    /// namespace (then let the namespace go): [`Session::on_spawned`].
    Spawn {
        target: usize,
        args: Vec<String>,
    },
    Signal {
        pid: u32,
        signal: Sig,
    },
    /// Let this descriptor go: nobody reads it any more.
    Forget(Source),
    /// Connect to the discovery service and forward this request:
    /// [`Session::on_proxy_started`] or [`Session::on_proxy_failed`].
    Proxy {
        addr: SocketAddr,
        head: Vec<u8>,
        req: Box<Request>,
        leftover: Vec<u8>,
    },
    /// The proxied exchange is over: let the upstream connection go.
    EndProxy,
    /// Read this source again before the loop sleeps (it was paused, or
    /// bytes may wait that no new event will announce).
    Resume(Source),
    /// Everything is out: shut the connection's write side.
    ShutdownWrite,
    /// Let every namespace held for this session go (its start ended).
    ReleaseNamespaces,
}

/// Where a namespace lookup ended ([`Action::Locate`]).
#[derive(Debug)]
pub enum Located {
    /// Held until the spawn; its interfaces if asked for (or why they
    /// could not be listed).
    Held {
        links: Result<std::collections::HashSet<String>, String>,
    },
    Missing(String),
    /// Not found where it was last seen: asked again after the next
    /// namespace scan ([`Session::on_rescanned`]).
    Wait,
}

/// How a proxied exchange stands after a step of the driver's byte pump.
#[derive(Debug, PartialEq)]
pub enum ProxyStep {
    Continue,
    /// Done; the client's next request has begun with these bytes.
    Done(Vec<u8>),
    /// Done; the connection closes once its queue is out.
    Close,
    /// Failed before any response byte went out: answer, then close.
    Fail(u16, String),
    MoreUpstream,
    MoreClient,
}

/// Why a proxied exchange could not start.
#[derive(Debug)]
pub enum ProxyFailure {
    /// The request's own framing is bad (400).
    Malformed(String),
    /// The discovery service cannot be reached (502).
    Unreachable(String),
    /// The upstream socket cannot be watched (502).
    CannotWatch(String),
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
    /// What `/proc` says: a process's start time.
    pub starttime: &'a dyn Fn(u32) -> Option<u64>,
}

/// An event's environment and the client's output, passed down together.
pub(crate) struct Cx<'e, 'o> {
    pub env: &'e Env<'e>,
    pub out: &'o mut dyn Out,
}

/// A proxied request waiting for the discovery service's address.
struct ProxyResolving {
    req: Request,
    target: String,
    leftover: Vec<u8>,
    deadline: Instant,
}

enum Phase {
    /// Reading a request head. `paused`: responses to pipelined requests
    /// filled the output queue, so reading waits for the client to take
    /// them. `first`: no request came yet on this connection.
    Head {
        buf: Vec<u8>,
        first: bool,
        paused: bool,
        deadline: Instant,
    },
    /// A capture request being resolved, located and spawned.
    Starting(Box<Start>),
    /// Relaying capture output (one target's, or several merged).
    Capturing(Box<Capture>),
    ProxyResolving(Box<ProxyResolving>),
    /// Forwarding one request to the discovery service; the driver moves
    /// the bytes. `answered`: a response byte reached the client; `sent`:
    /// the whole request went upstream (the answer is due from then on).
    Proxying {
        deadline: Option<Instant>,
        answered: bool,
        sent: bool,
        clock_restarted: bool,
    },
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
    Done,
}

pub struct Session {
    pub id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    phase: Phase,
    actions: VecDeque<Action>,
}

impl Session {
    pub fn new(id: u64, peer: SocketAddr, local: SocketAddr, now: Instant) -> Self {
        Session {
            id,
            peer,
            local,
            phase: Phase::Head {
                buf: Vec::new(),
                first: true,
                paused: false,
                deadline: now + HEAD_TIMEOUT,
            },
            actions: VecDeque::new(),
        }
    }

    // ---- queries ---------------------------------------------------------

    /// The next action for the driver, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        let next = self.actions.pop_front();
        if next.is_none() && self.actions.capacity() > 0 {
            // An idle session keeps no room for actions (a start's burst
            // would otherwise stay allocated for the capture's life).
            self.actions = VecDeque::new();
        }
        next
    }

    /// When [`on_timeout`](Self::on_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Head { deadline, .. }
            | Phase::Closing { deadline, .. }
            | Phase::Flush { deadline } => Some(*deadline),
            Phase::ProxyResolving(p) => Some(p.deadline),
            Phase::Proxying { deadline, .. } => *deadline,
            Phase::Starting(s) => s.deadline(),
            Phase::Capturing(c) => c.deadline(),
            Phase::Done => None,
        }
    }

    /// Whether the session can go: done, and every program it started reaped.
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

    /// Whether the driver should hand this session's client bytes to the
    /// proxied exchange rather than to the session.
    pub fn proxying(&self) -> bool {
        matches!(self.phase, Phase::Proxying { .. })
    }

    /// Whether the driver should read `src` now. Reading a source pauses
    /// when the client's queue is above [`HIGH_WATER`] and what it would
    /// produce adds to that queue; the pause is recorded, and
    /// [`on_writable`](Self::on_writable) resumes it below [`LOW_WATER`].
    pub fn may_read(&mut self, src: Source, out: &dyn Out, now: Instant) -> bool {
        let full = out.pending() >= HIGH_WATER;
        match (&mut self.phase, src) {
            (Phase::Head { paused, .. }, Source::Client) => {
                *paused |= full;
                !full
            }
            (Phase::Capturing(c), src) => c.may_read(src, full, now),
            (Phase::Starting(_) | Phase::Closing { .. } | Phase::Flush { .. }, Source::Client) => {
                true
            }
            _ => false,
        }
    }

    /// Whether a full connection table may give this session's slot to a
    /// new connection: it waits for a request head (its first, or the next
    /// on a kept-alive connection) with no answer still queued.
    pub fn displaceable(&self, out: &dyn Out) -> bool {
        matches!(self.phase, Phase::Head { .. }) && out.pending() == 0
    }

    /// Ends a [`displaceable`](Self::displaceable) session to make room.
    pub fn displace(&mut self) {
        debug!(
            "[c{}] closed to make room: the connection table is full and this connection sent no request",
            self.id
        );
        self.phase = Phase::Done;
    }

    // ---- events ----------------------------------------------------------

    /// Bytes from the client (never empty).
    pub fn on_client_data(&mut self, env: &Env, out: &mut dyn Out, data: &[u8]) {
        let mut cx = Cx { env, out };
        match &mut self.phase {
            Phase::Head { buf, .. } => {
                // Never hold more than a head's worth plus one read.
                buf.extend_from_slice(data);
                if http::worth_parsing(buf, data.len(), env.cfg.max_head_bytes) {
                    self.parse_heads(&mut cx);
                }
            }
            Phase::Starting(s) => s.keep_early(data),
            Phase::Capturing(_) => self.capture_frames(&mut cx, data),
            Phase::Closing { reader, .. } => {
                // Pongs are not owed once our close frame is out.
                let answered = reader.feed(data, &mut Vec::new()).is_some();
                if answered {
                    self.close_handshake_done(&mut cx);
                }
            }
            _ => {}
        }
    }

    /// The client closed its side.
    pub fn on_client_eof(&mut self, env: &Env, out: &mut dyn Out) {
        let mut cx = Cx { env, out };
        match &mut self.phase {
            Phase::Capturing(c) => {
                debug!("[c{}] client closed the connection", self.id);
                c.client_eof();
                c.terminate_all(env, &mut self.actions);
                self.capture_changed(&mut cx);
            }
            Phase::Starting(_) => {
                // The client gave up: no one is left to answer.
                debug!("[c{}] client left during discovery", self.id);
                self.phase = Phase::Done;
            }
            Phase::Done => {}
            _ => self.phase = Phase::Done,
        }
    }

    /// A read or write on the client socket failed: the peer is gone.
    pub fn on_client_broke(&mut self, env: &Env, out: &mut dyn Out, e: Broken) {
        let mut cx = Cx { env, out };
        self.client_broke(&mut cx, e);
    }

    /// The driver wrote what it could of the queue.
    pub fn on_writable(&mut self, env: &Env, out: &mut dyn Out) {
        let mut cx = Cx { env, out };
        let low = cx.out.pending() <= LOW_WATER;
        match &mut self.phase {
            Phase::Capturing(c) if low => {
                for src in c.resume(env.now) {
                    self.actions.push_back(Action::Resume(src));
                }
            }
            Phase::Head { paused, .. } if *paused && low => {
                *paused = false;
                self.parse_heads(&mut cx);
                self.actions.push_back(Action::Resume(Source::Client));
            }
            _ => {}
        }
        self.finish_if_flushed(&mut cx);
    }

    /// The deadline from [`poll_timeout`](Self::poll_timeout) has come.
    pub fn on_timeout(&mut self, env: &Env, out: &mut dyn Out) {
        if self.poll_timeout().is_none_or(|d| d > env.now) {
            return;
        }
        let mut cx = Cx { env, out };
        let id = self.id;
        match &mut self.phase {
            Phase::Head { buf, first, .. } => {
                if !buf.is_empty() || *first {
                    debug!("[c{id}] request head not complete in time");
                    if !buf.is_empty() {
                        let _ = cx.out.send(&http::text_response(
                            408,
                            "request head not received in time",
                            true,
                        ));
                    }
                }
                self.phase = Phase::Done;
            }
            Phase::Starting(_) => self.start_timeout(&mut cx),
            Phase::Capturing(c) => {
                c.on_timeout(id, env, &mut self.actions);
            }
            Phase::Closing { .. } | Phase::Flush { .. } => {
                debug!("[c{id}] client did not finish closing in time");
                self.phase = Phase::Done;
            }
            Phase::ProxyResolving(_) => {
                info!("[c{id}] discovery service name not looked up in time");
                let resp = http::text_response(
                    504,
                    "the discovery service's name was not looked up in time",
                    true,
                );
                self.respond_close(&mut cx, resp);
            }
            Phase::Proxying {
                answered,
                sent,
                deadline,
                ..
            } => {
                if *answered {
                    self.actions.push_back(Action::EndProxy);
                    self.phase = Phase::Done;
                } else if !*sent {
                    // The client is still sending its request: the discovery
                    // service cannot be late yet.
                    *deadline = Some(env.now + env.cfg.discovery_timeout);
                } else {
                    info!("[c{id}] discovery service did not answer in time");
                    let resp = http::text_response(
                        504,
                        "the discovery service did not answer in time",
                        true,
                    );
                    self.actions.push_back(Action::EndProxy);
                    self.respond_close(&mut cx, resp);
                }
            }
            Phase::Done => {}
        }
    }

    /// The service is shutting down: end what can be ended now, terminate
    /// capture programs (their clients get 1001 once they are reaped).
    pub fn shutdown(&mut self, env: &Env, out: &mut dyn Out) {
        let mut cx = Cx { env, out };
        if matches!(self.phase, Phase::Starting(_)) {
            self.actions.push_back(Action::ReleaseNamespaces);
        }
        match &mut self.phase {
            Phase::Capturing(c) => {
                c.shutdown();
                c.terminate_all(env, &mut self.actions);
                self.capture_changed(&mut cx);
            }
            Phase::Starting(_) => {
                let _ = cx.out.send(&http::text_response(
                    503,
                    "the capture service is shutting down",
                    true,
                ));
                self.flush_then_close(&mut cx);
            }
            Phase::Proxying { .. } => {
                self.actions.push_back(Action::EndProxy);
                self.phase = Phase::Done;
            }
            Phase::Head { .. } | Phase::Closing { .. } | Phase::ProxyResolving(_) => {
                self.phase = Phase::Done
            }
            Phase::Flush { .. } | Phase::Done => {}
        }
    }

    /// The discovery service's address for a proxied request.
    pub fn on_address(&mut self, env: &Env, out: &mut dyn Out, addr: Result<SocketAddr, String>) {
        let Phase::ProxyResolving(_) = self.phase else {
            return;
        };
        let Phase::ProxyResolving(p) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        let mut cx = Cx { env, out };
        let ProxyResolving {
            req,
            target,
            leftover,
            ..
        } = *p;
        match addr {
            Ok(addr) => {
                let service = service_name(env.cfg);
                let head =
                    crate::proto::proxy::upstream_head(&req, &target, &service, self.peer.ip());
                debug!(
                    "[c{}] proxying {} {target} to {service}",
                    self.id, req.method
                );
                self.phase = Phase::Proxying {
                    deadline: Some(env.now + env.cfg.discovery_timeout),
                    answered: false,
                    sent: false,
                    clock_restarted: false,
                };
                self.actions.push_back(Action::Proxy {
                    addr,
                    head,
                    req: Box::new(req),
                    leftover,
                });
                // Client bytes that arrived meanwhile were left unread.
                self.actions.push_back(Action::Resume(Source::Client));
            }
            Err(why) => {
                self.log_line(&cx, Some(&req), 502);
                let resp = http::text_response(502, &why, true);
                self.respond_close(&mut cx, resp);
            }
        }
    }

    /// The proxied exchange started; `req` is the request it forwards.
    pub fn on_proxy_started(&mut self, env: &Env, req: &Request) {
        if self.proxying() {
            self.log_line_env(env, Some(req), "proxied");
        }
    }

    /// The proxied exchange could not start.
    pub fn on_proxy_failed(
        &mut self,
        env: &Env,
        out: &mut dyn Out,
        req: &Request,
        why: ProxyFailure,
    ) {
        if !self.proxying() {
            return;
        }
        let mut cx = Cx { env, out };
        let service = service_name(env.cfg);
        let (status, text) = match why {
            ProxyFailure::Malformed(e) => (400, format!("malformed request: {e}")),
            ProxyFailure::Unreachable(e) => (
                502,
                format!("discovery service at {service} unreachable: {e}"),
            ),
            ProxyFailure::CannotWatch(e) => (502, format!("cannot proxy: {e}")),
        };
        self.log_line(&cx, Some(req), status);
        self.actions.push_back(Action::EndProxy);
        self.respond_close(&mut cx, http::text_response(status, &text, true));
    }

    /// A step of the proxied exchange: `answered`, `sent` as the pump says.
    pub fn on_proxy_step(
        &mut self,
        env: &Env,
        out: &mut dyn Out,
        step: ProxyStep,
        now_answered: bool,
        now_sent: bool,
    ) {
        let Phase::Proxying {
            deadline,
            answered,
            sent,
            clock_restarted,
        } = &mut self.phase
        else {
            return;
        };
        *answered = now_answered;
        *sent = now_sent;
        if now_answered {
            *deadline = None;
        } else if !*clock_restarted && now_sent {
            // The answer is due within the deadline from here on.
            *clock_restarted = true;
            *deadline = Some(env.now + env.cfg.discovery_timeout);
        }
        let mut cx = Cx { env, out };
        match step {
            ProxyStep::Continue => {}
            ProxyStep::MoreUpstream => self.actions.push_back(Action::Resume(Source::Upstream)),
            ProxyStep::MoreClient => self.actions.push_back(Action::Resume(Source::Client)),
            ProxyStep::Done(pending) => {
                self.actions.push_back(Action::EndProxy);
                self.await_next_request(&cx, pending);
                // Bytes that arrived meanwhile were not read (edge-triggered):
                // look again, and handle a request already buffered.
                self.actions.push_back(Action::Resume(Source::Client));
                self.parse_heads(&mut cx);
            }
            ProxyStep::Close => {
                self.actions.push_back(Action::EndProxy);
                self.flush_then_close(&mut cx);
            }
            ProxyStep::Fail(status, why) => {
                info!("[c{}] proxy: {why}", self.id);
                self.actions.push_back(Action::EndProxy);
                self.respond_close(&mut cx, http::text_response(status, &why, true));
            }
        }
    }

    // ---- request heads ---------------------------------------------------

    /// Handles every complete head in the buffer (pipelined requests).
    fn parse_heads(&mut self, cx: &mut Cx) {
        loop {
            let full = cx.out.pending() >= HIGH_WATER;
            let Phase::Head { buf, paused, .. } = &mut self.phase else {
                return;
            };
            // A client that pipelines requests without reading the responses
            // is not read further until it takes them.
            if full {
                *paused = true;
                return;
            }
            if buf.is_empty() {
                return;
            }
            let cfg = cx.env.cfg;
            let parsed = http::parse_request_limited(buf, cfg.max_head_bytes, cfg.max_headers)
                .and_then(|r| match r {
                    Some(req) => req.check_rules().map(|()| Some(req)),
                    None => Ok(None),
                });
            match parsed {
                Ok(None) => return,
                Ok(Some(req)) => {
                    let leftover = buf.split_off(req.head_len);
                    self.handle_request(cx, req, leftover);
                    if !matches!(self.phase, Phase::Head { .. }) {
                        return;
                    }
                }
                Err(e) => {
                    debug!("[c{}] bad request: {e}", self.id);
                    self.log_line(cx, None, e.status());
                    self.respond_close(cx, http::text_response(e.status(), &e.to_string(), true));
                    return;
                }
            }
        }
    }

    fn handle_request(&mut self, cx: &mut Cx, req: Request, leftover: Vec<u8>) {
        let env = cx.env;
        if env.cfg.log_headers {
            for (n, v) in &req.headers {
                info!(
                    "[c{}] header {}",
                    self.id,
                    crate::proto::logtext::header_line(n, v)
                );
            }
        }
        let route = crate::proto::front::route(&req, env.cfg.proxy_discovery);
        if let Err(refusal) = crate::proto::auth::check(env.policy, &req, &route) {
            info!(
                "[c{}] {} refused: {}",
                self.id,
                req.path,
                match refusal {
                    crate::proto::auth::Refusal::ForeignOrigin => "foreign Origin",
                    crate::proto::auth::Refusal::NoToken => "no valid bearer token",
                }
            );
            self.log_line(cx, Some(&req), refusal.status());
            return self.respond_close(cx, refusal.response());
        }
        match route {
            Route::Capture { .. } if env.captures >= env.cfg.max_captures => {
                info!(
                    "[c{}] capture refused: {} captures are running, the limit",
                    self.id, env.captures
                );
                metrics::refused(metrics::Refusal::Limit);
                self.log_line(cx, Some(&req), 503);
                let text = format!(
                    "capture refused: this service is running its maximum of {} captures; try again later",
                    env.cfg.max_captures
                );
                let resp = http::response(
                    503,
                    &[("Retry-After", "10")],
                    "text/plain; charset=utf-8",
                    format!("{text}\n").as_bytes(),
                    true,
                );
                self.respond_close(cx, resp);
            }
            Route::Capture { accept } => {
                self.log_line(cx, Some(&req), 101);
                self.start_capture(cx, &req, accept, leftover);
            }
            Route::Respond {
                status,
                bytes,
                keep_alive,
            } => {
                self.log_line(cx, Some(&req), status);
                if let Err(e) = cx.out.send(&bytes) {
                    return self.client_broke(cx, e);
                }
                if keep_alive {
                    self.await_next_request(cx, leftover);
                } else {
                    self.flush_then_close(cx);
                }
            }
            Route::Proxy { target } => {
                let req = crate::proto::auth::without_our_credentials(env.policy, req);
                self.phase = Phase::ProxyResolving(Box::new(ProxyResolving {
                    req,
                    target,
                    leftover,
                    deadline: env.now + env.cfg.discovery_timeout,
                }));
                self.actions.push_back(Action::WantAddress);
            }
        }
    }

    /// Keep-alive: the connection waits for its next request, which may
    /// already have begun in `buf`.
    fn await_next_request(&mut self, cx: &Cx, buf: Vec<u8>) {
        self.phase = Phase::Head {
            buf,
            first: false,
            paused: false,
            deadline: cx.env.now + KEEPALIVE_TIMEOUT,
        };
    }

    // ---- endings ---------------------------------------------------------

    /// Sends a final response, then closes once it is out.
    fn respond_close(&mut self, cx: &mut Cx, resp: Vec<u8>) {
        if let Err(e) = cx.out.send(&resp) {
            return self.client_broke(cx, e);
        }
        self.flush_then_close(cx);
    }

    fn flush_then_close(&mut self, cx: &mut Cx) {
        self.phase = Phase::Flush {
            deadline: cx.env.now + CLOSE_TIMEOUT,
        };
        self.finish_if_flushed(cx);
    }

    fn finish_if_flushed(&mut self, cx: &mut Cx) {
        if matches!(self.phase, Phase::Flush { .. }) && cx.out.pending() == 0 {
            self.actions.push_back(Action::ShutdownWrite);
            self.phase = Phase::Done;
        }
    }

    /// The client answered our close frame: close once it is all out.
    fn close_handshake_done(&mut self, cx: &mut Cx) {
        self.flush_then_close(cx);
    }

    /// Sends our close frame and waits for the client's (or EOF).
    fn send_close(&mut self, cx: &mut Cx, code: u16, reason: &str) {
        self.phase = Phase::Closing {
            reader: Box::new(FrameReader::new()),
            deadline: cx.env.now + CLOSE_TIMEOUT,
        };
        if let Err(e) = cx.out.send(&ws::close_frame(code, reason)) {
            self.client_broke(cx, e);
        }
    }

    /// Answers the client's close handshake, then closes the connection
    /// once the answer is out.
    fn answer_close(&mut self, cx: &mut Cx, code: u16, reason: &str) {
        self.phase = Phase::Flush {
            deadline: cx.env.now + CLOSE_TIMEOUT,
        };
        if let Err(e) = cx.out.send(&ws::close_frame(code, reason)) {
            return self.client_broke(cx, e);
        }
        self.finish_if_flushed(cx);
    }

    fn client_broke(&mut self, cx: &mut Cx, e: Broken) {
        debug!("[c{}] client connection broke: {}", self.id, e.0);
        match &mut self.phase {
            Phase::Capturing(c) => {
                c.client_broke(&mut self.actions);
                c.terminate_all(cx.env, &mut self.actions);
                self.capture_changed(cx);
            }
            Phase::Proxying { .. } => {
                self.actions.push_back(Action::EndProxy);
                self.phase = Phase::Done;
            }
            _ => self.phase = Phase::Done,
        }
    }

    fn log_line(&self, cx: &Cx, req: Option<&Request>, status: impl std::fmt::Display) {
        self.log_line_env(cx.env, req, status)
    }

    fn log_line_env(&self, env: &Env, req: Option<&Request>, status: impl std::fmt::Display) {
        if !env.cfg.log_requests {
            return;
        }
        let line = req.map_or_else(|| "-".to_string(), crate::proto::logtext::request_line);
        info!(
            "[c{}] {} - - [{}] \"{}\" {} -",
            self.id,
            self.peer.ip(),
            crate::proto::logtext::clf_time((env.wall)()),
            line.escape_default(),
            status
        );
    }
}

/// `host:port` of the discovery service as the user configured it.
pub fn service_name(cfg: &Config) -> String {
    if cfg.discovery_service.contains(':') {
        format!("[{}]:{}", cfg.discovery_service, cfg.gw_port)
    } else {
        format!("{}:{}", cfg.discovery_service, cfg.gw_port)
    }
}
