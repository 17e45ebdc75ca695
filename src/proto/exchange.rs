//! One proxied exchange (`--proxy-discovery`) as a sans-IO object: a
//! request forwarded to the discovery service and its response streamed
//! back, or a websocket upgrade tunnelled both ways.
//!
//! The caller feeds what each side sent ([`Exchange::feed_client`],
//! [`Exchange::feed_upstream`]) and hands in where each side's bytes go (an
//! [`Out`]: the service's socket queues, or vectors in tests and the
//! fuzzer); the exchange decides framing, keep-alive, the interim-response
//! limit, backpressure and its deadline, and says after each step how it
//! stands ([`Step`]). It never touches a socket. Heads are rewritten and
//! bodies framed by [`crate::proto::proxy`] and [`crate::proto::http1`].

use std::time::{Duration, Instant};

use crate::proto::http::Request;
use crate::proto::http1::{BodyFramer, Framing, HeadParser, Role, MAX_RESPONSE_HEAD};
use crate::proto::proxy::{
    next_response_head, request_framing, wants_upgrade, MAX_RESPONSE_HEADERS,
};
use crate::proto::session::{Out, HIGH_WATER, LOW_WATER};

/// Interim responses one response may have before it is refused with 502.
/// A real server sends one `100 Continue`, maybe a `103 Early Hints`; a
/// stream of them is a broken or hostile upstream.
pub const MAX_INTERIM: usize = 16;

/// Most client bytes held for the next request while a response streams;
/// beyond it the client is not read until the response is done (a larger
/// head is then read as usual). Not tied to the 1 MiB head limit, so that
/// each proxied connection holds no more than before that limit grew.
const MAX_PENDING: usize = 16 * 1024;

/// How an exchange stands after a step.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep going.
    Continue,
    /// The exchange is complete and the client connection may carry the
    /// next request, which has begun with these bytes.
    Done(Vec<u8>),
    /// The exchange is over; the client connection closes once its queue
    /// is out.
    Close,
    /// Failed before any response byte went to the client: answer with this
    /// status and text, then close.
    Fail(u16, String),
}

/// One proxied exchange.
#[derive(Debug)]
pub struct Exchange {
    connected: bool,
    /// The rest of the client's request body still to forward.
    req_body: BodyFramer,
    /// The response head as it accumulates.
    head_buf: Vec<u8>,
    /// Reads the heads in `head_buf`.
    head_parser: HeadParser,
    /// The response body, once the head is through.
    resp_body: Option<BodyFramer>,
    tunnel: bool,
    /// A response byte went to the client (errors then close instead of
    /// answering).
    answered: bool,
    head_request: bool,
    /// The request asked for an upgrade (else a 101 is refused: 502).
    upgrade: bool,
    keep_alive: bool,
    /// Client bytes after this request: the next request, kept for later.
    pending: Vec<u8>,
    /// Interim (1xx) heads seen before the final one.
    interim: usize,
    /// How long the discovery service has to answer.
    timeout: Duration,
    deadline: Option<Instant>,
    /// The deadline was restarted once the whole request was out.
    clock_restarted: bool,
    /// Reading the client waits for room (the upstream queue or `pending`).
    client_paused: bool,
    /// Reading the upstream waits for the client's queue to drain.
    up_paused: bool,
    /// Bytes for the upstream made while reading the response.
    to_upstream: Vec<u8>,
}

impl Exchange {
    /// Starts the exchange: queues the request head and whatever body
    /// bytes already arrived on `up` (which sends them once connected).
    /// An error is the request's own framing being bad (400).
    pub fn start(
        req: &Request,
        head: &[u8],
        leftover: &[u8],
        up: &mut dyn Out,
        now: Instant,
        timeout: Duration,
    ) -> Result<Exchange, String> {
        let upgrade = wants_upgrade(req);
        let mut req_body = match req.body_kind() {
            Ok(k) => BodyFramer::new(request_framing(k)),
            Err(e) => return Err(e.to_string()),
        };
        let used = req_body.scan(leftover).map_err(|e| e.to_string())?;
        let mut x = Exchange {
            connected: false,
            req_body,
            head_buf: Vec::new(),
            head_parser: HeadParser::new(Role::Forward, MAX_RESPONSE_HEADERS),
            resp_body: None,
            tunnel: false,
            answered: false,
            head_request: req.method == "HEAD",
            upgrade,
            keep_alive: req.keep_alive() && !upgrade,
            pending: leftover[used..].to_vec(),
            interim: 0,
            timeout,
            deadline: Some(now + timeout),
            clock_restarted: false,
            client_paused: false,
            up_paused: false,
            to_upstream: Vec::new(),
        };
        let queued = up
            .send(head)
            .and_then(|()| up.send(&leftover[..used]))
            .and_then(|()| {
                // Bytes behind an upgrade request belong to the new protocol.
                if upgrade {
                    let rest = std::mem::take(&mut x.pending);
                    up.send(&rest)
                } else {
                    Ok(())
                }
            });
        queued.map_err(|e| format!("discovery service connection failed: {e}"))?;
        Ok(x)
    }

    /// When the exchange's deadline is due ([`on_timeout`](Self::on_timeout)).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether a response byte reached the client.
    pub fn answered(&self) -> bool {
        self.answered
    }

    fn fail_or_close(&self, status: u16, why: String) -> Step {
        if self.answered {
            Step::Close
        } else {
            Step::Fail(status, why)
        }
    }

    /// Whether the client should be read now (`up_pending`: what waits for
    /// the upstream socket). A pause is recorded; [`on_upstream_progress`](Self::on_upstream_progress)
    /// says when to read again.
    pub fn may_read_client(&mut self, up_pending: usize) -> bool {
        let holding = self.req_body.is_done() && !self.tunnel;
        let full = up_pending >= HIGH_WATER || (holding && self.pending.len() >= MAX_PENDING);
        self.client_paused |= full;
        !full
    }

    /// Whether the upstream should be read now (`client_full`: the client's
    /// queue is above the high watermark).
    pub fn may_read_upstream(&mut self, client_full: bool) -> bool {
        self.up_paused |= client_full;
        !client_full
    }

    /// The client's queue drained below the low watermark (`client_pending`):
    /// true if a paused upstream should be read again.
    pub fn on_client_drained(&mut self, client_pending: usize) -> bool {
        client_pending <= LOW_WATER && std::mem::take(&mut self.up_paused)
    }

    /// The upstream connection is up and its queue went out as far as the
    /// socket took it (`up_pending` left): the answer's deadline starts once
    /// the whole request is out. True if a paused client should be read
    /// again.
    pub fn on_upstream_progress(&mut self, up_pending: usize, now: Instant) -> bool {
        self.connected = true;
        self.note_progress(up_pending, now);
        self.client_paused && up_pending <= LOW_WATER && {
            self.client_paused = false;
            true
        }
    }

    /// After any step: no deadline once answered; the deadline restarts
    /// when the whole request (head and body) is with the upstream.
    fn note_progress(&mut self, up_pending: usize, now: Instant) {
        if self.answered {
            self.deadline = None;
        } else if !self.clock_restarted && self.request_sent(up_pending) {
            self.clock_restarted = true;
            self.deadline = Some(now + self.timeout);
        }
    }

    /// Whether the whole request is with the upstream: only then does
    /// waiting for its answer start to count.
    fn request_sent(&self, up_pending: usize) -> bool {
        self.connected && self.req_body.is_done() && up_pending == 0
    }

    /// The deadline came: `None` if the exchange goes on (the client is
    /// still sending its request, so the answer cannot be late yet),
    /// else how it ends.
    pub fn on_timeout(&mut self, up_pending: usize, now: Instant) -> Option<Step> {
        if self.answered {
            return Some(Step::Close);
        }
        if !self.request_sent(up_pending) {
            self.deadline = Some(now + self.timeout);
            return None;
        }
        Some(Step::Fail(
            504,
            "the discovery service did not answer in time".into(),
        ))
    }

    /// Client bytes that arrived while this exchange runs: the rest of the
    /// request body goes upstream, what follows it is kept for the next
    /// request (a tunnel forwards everything).
    pub fn feed_client(&mut self, data: &[u8], up: &mut dyn Out, now: Instant) -> Step {
        let used = match self.req_body.scan(data) {
            Ok(u) => u,
            Err(e) => return self.fail_or_close(400, format!("malformed request body: {e}")),
        };
        if let Err(e) = up.send(&data[..used]) {
            return self.fail_or_close(502, format!("discovery service connection failed: {e}"));
        }
        self.pending.extend_from_slice(&data[used..]);
        self.note_progress(up.pending(), now);
        Step::Continue
    }

    /// The client is done sending: a tunnel ends, a request cut short
    /// ends, a finished request still gets its answer.
    pub fn client_eof(&self) -> Step {
        if self.tunnel || !self.req_body.is_done() {
            Step::Close
        } else {
            Step::Continue
        }
    }

    /// The discovery service closed the connection.
    pub fn upstream_eof(&self) -> Step {
        match (&self.resp_body, self.tunnel) {
            (_, true) => Step::Close,
            (None, _) => self.fail_or_close(
                502,
                "discovery service closed the connection without answering".into(),
            ),
            // The end of a body that lasts until close, or a body cut off:
            // either way the client connection closes, so the client cannot
            // take a cut one as whole.
            (Some(_), _) => Step::Close,
        }
    }

    /// Connecting to, writing to or reading from the upstream failed.
    pub fn upstream_failed(&self, why: &std::io::Error) -> Step {
        let what = if self.connected {
            "discovery service connection failed"
        } else {
            "discovery service unreachable"
        };
        self.fail_or_close(502, format!("{what}: {why}"))
    }

    /// Bytes from the discovery service, forwarded to the client as the
    /// response's framing allows.
    /// A tunnel's start moves the client bytes held so far to the upstream:
    /// take them with [`take_for_upstream`](Self::take_for_upstream).
    pub fn feed_upstream(
        &mut self,
        data: &[u8],
        client: &mut dyn Out,
        up_pending: usize,
        now: Instant,
    ) -> Step {
        let step = match self.forward(client, data) {
            Ok(step) => step,
            Err(e) => self.fail_or_close(502, e),
        };
        self.note_progress(up_pending + self.to_upstream.len(), now);
        step
    }

    /// Bytes the exchange made for the upstream while it read the response
    /// (what the client sent behind an upgrade the upstream accepted).
    pub fn take_for_upstream(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.to_upstream)
    }

    fn forward(&mut self, client: &mut dyn Out, mut data: &[u8]) -> Result<Step, String> {
        while !data.is_empty() {
            if self.tunnel {
                client.send(data).map_err(|e| e.to_string())?;
                return Ok(Step::Continue);
            }
            let Some(body) = self.resp_body.as_mut() else {
                // Still reading the head.
                let take = data
                    .len()
                    .min(MAX_RESPONSE_HEAD + 1 - self.head_buf.len().min(MAX_RESPONSE_HEAD));
                self.head_buf.extend_from_slice(&data[..take]);
                data = &data[take..];
                // Interim (1xx) heads precede the final one: each is passed
                // on and dropped from the buffer, up to a cap, in a loop (an
                // upstream may send thousands in one read).
                let h = loop {
                    match next_response_head(
                        &mut self.head_parser,
                        &self.head_buf,
                        self.head_request,
                        self.keep_alive,
                        self.upgrade,
                    )? {
                        None => break None,
                        Some(h) if h.body == Framing::Interim => {
                            self.interim += 1;
                            if self.interim > MAX_INTERIM {
                                return Err(format!(
                                    "discovery service sent more than {MAX_INTERIM} interim responses"
                                ));
                            }
                            client.send(&h.rewritten).map_err(|e| e.to_string())?;
                            self.head_buf.drain(..h.head_len);
                        }
                        Some(h) => break Some(h),
                    }
                };
                let Some(h) = h else {
                    continue;
                };
                let after = self.head_buf.split_off(h.head_len);
                self.head_buf.clear();
                client.send(&h.rewritten).map_err(|e| e.to_string())?;
                let rest: Vec<u8> = after.into_iter().chain(data.iter().copied()).collect();
                self.answered = true;
                if h.body == Framing::Tunnel {
                    self.tunnel = true;
                    self.req_body = BodyFramer::new(Framing::UntilClose);
                    self.to_upstream = std::mem::take(&mut self.pending);
                }
                if h.body == Framing::UntilClose {
                    self.keep_alive = false;
                }
                self.resp_body = Some(BodyFramer::new(h.body));
                if self.resp_body.as_ref().is_some_and(BodyFramer::is_done) {
                    return Ok(self.finished());
                }
                if rest.is_empty() {
                    return Ok(Step::Continue);
                }
                return self.forward(client, &rest);
            };
            let used = body.scan(data).map_err(|e| e.to_string())?;
            client.send(&data[..used]).map_err(|e| e.to_string())?;
            if body.is_done() {
                return Ok(self.finished());
            }
            data = &data[used..];
        }
        Ok(Step::Continue)
    }

    fn finished(&mut self) -> Step {
        if self.keep_alive && self.req_body.is_done() {
            Step::Done(std::mem::take(&mut self.pending))
        } else {
            Step::Close
        }
    }
}
