//! The discovery proxy's byte pump: one request forwarded to the discovery
//! service over a non-blocking socket and its response streamed back to the
//! client's [`Conn`], or a websocket upgrade tunnelled both ways, with
//! bounded queues and backpressure both ways. It never blocks. Heads are
//! rewritten and bodies framed by `crate::proto::proxy` and
//! `crate::proto::http1`.

use std::io::{self, Read};
use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::proto::http::Request;
use crate::proto::http1::{BodyFramer, HeadParser, Role};
use crate::proto::http1::{Framing, MAX_RESPONSE_HEAD};
use crate::proto::proxy::{
    next_response_head, request_framing, wants_upgrade, MAX_RESPONSE_HEADERS,
};
use crate::service::conn::{Conn, OutQueue, HIGH_WATER, LOW_WATER, READS_PER_TURN};

/// What the session must do after a proxy step.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep going; nothing to change.
    Continue,
    /// The exchange is complete and the client connection may carry the next
    /// request (the proxy's `pending` bytes start it).
    Done,
    /// The exchange is over and the client connection must close once its
    /// queue is flushed.
    Close,
    /// Failed before any response byte went to the client: answer with this
    /// status and text, then close.
    Fail(u16, String),
    /// The turn's read budget for the upstream is used up: read it again
    /// before sleeping.
    MoreUpstream,
    /// Same for the client side.
    MoreClient,
}

/// One proxied exchange.
pub struct Proxy {
    pub up: TcpStream,
    up_out: OutQueue,
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
    /// Whether a response byte went to the client (errors then close instead
    /// of answering).
    answered: bool,
    head_request: bool,
    /// The request asked for an upgrade (else a 101 is refused: 502).
    upgrade: bool,
    keep_alive: bool,
    /// Client bytes after this request: the next request, kept for later.
    pub pending: Vec<u8>,
    /// Reading the upstream is paused until the client's queue drains.
    pub up_paused: bool,
    /// Reading the client is paused until the upstream queue drains.
    pub client_paused: bool,
    /// The response deadline was restarted when the request was complete.
    pub clock_restarted: bool,
    up_eof: bool,
    /// Interim (1xx) heads seen before the final one.
    interim: usize,
}

/// Interim responses one response may have before it is refused with 502.
/// A real server sends one `100 Continue`, maybe a `103 Early Hints`; a
/// stream of them is a broken or hostile upstream.
pub const MAX_INTERIM: usize = 16;

/// Most client bytes held for the next request while a response streams;
/// beyond it the client is not read until the response is done (a larger
/// head is then read as usual). Not tied to the 1 MiB head limit, so that
/// each proxied connection holds no more than before that limit grew.
const MAX_PENDING: usize = 16 * 1024;

impl Proxy {
    /// Starts the exchange: connects (non-blocking) and queues the request
    /// head and whatever body bytes already arrived.
    pub fn start(
        addr: SocketAddr,
        head: Vec<u8>,
        req: &Request,
        leftover: Vec<u8>,
    ) -> io::Result<Proxy> {
        let up = TcpStream::connect(addr)?;
        let upgrade = wants_upgrade(req);
        let mut req_body = match req.body_kind() {
            Ok(k) => BodyFramer::new(request_framing(k)),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidInput, e.to_string())),
        };
        let mut p = Proxy {
            up,
            up_out: OutQueue::default(),
            connected: false,
            req_body: BodyFramer::new(Framing::None),
            head_buf: Vec::new(),
            head_parser: HeadParser::new(Role::Forward, MAX_RESPONSE_HEADERS),
            resp_body: None,
            tunnel: false,
            answered: false,
            head_request: req.method == "HEAD",
            upgrade,
            keep_alive: req.keep_alive() && !upgrade,
            pending: Vec::new(),
            up_paused: false,
            client_paused: false,
            clock_restarted: false,
            up_eof: false,
            interim: 0,
        };
        p.up_out.push(&head);
        let used = req_body
            .scan(&leftover)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        p.up_out.push(&leftover[..used]);
        p.pending = leftover[used..].to_vec();
        p.req_body = req_body;
        if upgrade {
            // Bytes behind an upgrade request belong to the new protocol.
            let rest = std::mem::take(&mut p.pending);
            p.up_out.push(&rest);
        }
        Ok(p)
    }

    fn fail_or_close(&self, status: u16, why: String) -> Step {
        if self.answered {
            Step::Close
        } else {
            Step::Fail(status, why)
        }
    }

    /// The upstream socket is ready.
    pub fn on_upstream(
        &mut self,
        conn: &mut Conn,
        buf: &mut [u8],
        readable: bool,
        writable: bool,
    ) -> Step {
        if !self.connected {
            if let Ok(Some(e)) | Err(e) = self.up.take_error() {
                return self.fail_or_close(502, format!("discovery service unreachable: {e}"));
            }
            match self.up.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Step::Continue,
                Err(e) => {
                    return self.fail_or_close(502, format!("discovery service unreachable: {e}"))
                }
            }
        }
        if writable || !self.up_out.is_empty() {
            if let Err(e) = self.up_out.flush(&mut self.up) {
                return self
                    .fail_or_close(502, format!("discovery service connection failed: {e}"));
            }
        }
        if readable || !self.up_paused {
            return self.pump_upstream(conn, buf);
        }
        Step::Continue
    }

    /// Reads upstream bytes and forwards them, within the client's queue.
    pub fn pump_upstream(&mut self, conn: &mut Conn, buf: &mut [u8]) -> Step {
        for _ in 0..READS_PER_TURN {
            if conn.pending() >= HIGH_WATER {
                self.up_paused = true;
                return Step::Continue;
            }
            self.up_paused = false;
            let n = match self.up.read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if !self.connected && e.kind() == io::ErrorKind::NotConnected => {
                    return Step::Continue
                }
                Err(e) => {
                    return self
                        .fail_or_close(502, format!("discovery service connection failed: {e}"))
                }
            };
            if n == 0 {
                self.up_eof = true;
                return match (&self.resp_body, self.tunnel) {
                    (_, true) => Step::Close,
                    (None, _) => self.fail_or_close(
                        502,
                        "discovery service closed the connection without answering".into(),
                    ),
                    // The end of a body that lasts until close, or a body
                    // cut off: either way the client connection closes, so
                    // the client cannot take a cut one as whole.
                    (Some(_), _) => Step::Close,
                };
            }
            match self.forward(conn, &buf[..n]) {
                Ok(Step::Continue) => {}
                Ok(step) => return step,
                Err(e) => return self.fail_or_close(502, e),
            }
        }
        // More may be waiting: the session schedules another turn.
        Step::MoreUpstream
    }

    fn forward(&mut self, conn: &mut Conn, mut data: &[u8]) -> Result<Step, String> {
        while !data.is_empty() {
            if self.tunnel {
                conn.send(data).map_err(|e| e.to_string())?;
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
                            conn.send(&h.rewritten).map_err(|e| e.to_string())?;
                            self.head_buf.drain(..h.head_len);
                        }
                        Some(h) => break Some(h),
                    }
                };
                match h {
                    None => continue,
                    Some(h) => {
                        let after = self.head_buf.split_off(h.head_len);
                        self.head_buf.clear();
                        conn.send(&h.rewritten).map_err(|e| e.to_string())?;
                        let rest: Vec<u8> = after.into_iter().chain(data.iter().copied()).collect();
                        self.answered = true;
                        if h.body == Framing::Tunnel {
                            self.tunnel = true;
                            self.req_body = BodyFramer::new(Framing::UntilClose);
                            let pending = std::mem::take(&mut self.pending);
                            self.up_out.push(&pending);
                        }
                        if h.body == Framing::UntilClose {
                            self.keep_alive = false;
                        }
                        self.resp_body = Some(BodyFramer::new(h.body));
                        return self.forward_body(conn, &rest);
                    }
                }
            };
            let used = body.scan(data).map_err(|e| e.to_string())?;
            conn.send(&data[..used]).map_err(|e| e.to_string())?;
            if body.is_done() {
                return Ok(self.finished());
            }
            data = &data[used..];
        }
        Ok(Step::Continue)
    }

    fn forward_body(&mut self, conn: &mut Conn, data: &[u8]) -> Result<Step, String> {
        if self.resp_body.as_ref().is_some_and(BodyFramer::is_done) {
            return Ok(self.finished());
        }
        if data.is_empty() {
            return Ok(Step::Continue);
        }
        self.forward(conn, data)
    }

    fn finished(&self) -> Step {
        if self.keep_alive && self.req_body.is_done() {
            Step::Done
        } else {
            Step::Close
        }
    }

    /// Client bytes arrived while this exchange runs.
    pub fn on_client(&mut self, conn: &mut Conn, buf: &mut [u8]) -> Step {
        for _ in 0..READS_PER_TURN {
            let room_pending = self.req_body.is_done() && !self.tunnel;
            if self.up_out.len() >= HIGH_WATER
                || (room_pending && self.pending.len() >= MAX_PENDING)
            {
                self.client_paused = true;
                return Step::Continue;
            }
            self.client_paused = false;
            let n = match conn.sock.read(buf) {
                Ok(0) => {
                    // The client is done sending; a tunnel ends, a request
                    // cut short ends, a finished request still gets its answer.
                    if self.tunnel || !self.req_body.is_done() {
                        return Step::Close;
                    }
                    return Step::Continue;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Step::Close,
            };
            let data = &buf[..n];
            let used = match self.req_body.scan(data) {
                Ok(u) => u,
                Err(e) => return self.fail_or_close(400, format!("malformed request body: {e}")),
            };
            self.up_out.push(&data[..used]);
            self.pending.extend_from_slice(&data[used..]);
            if self.connected {
                if let Err(e) = self.up_out.flush(&mut self.up) {
                    return self
                        .fail_or_close(502, format!("discovery service connection failed: {e}"));
                }
            }
        }
        Step::MoreClient
    }

    /// Whether the client side should be read again once queues drain.
    pub fn up_queue_low(&self) -> bool {
        self.up_out.len() <= LOW_WATER
    }

    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Whether the whole request (head and body) is with the upstream: only
    /// then does waiting for its answer start to count.
    pub fn request_sent(&self) -> bool {
        self.connected && self.req_body.is_done() && self.up_out.is_empty()
    }
}
