//! The `Head` phase: reading request heads (pipelined ones in order) and
//! routing each, until one starts a capture, is proxied, or ends the
//! connection.

use std::time::Instant;

use log::{debug, info};

use super::{
    flush_then_close, log_line, proxying, respond_close, start, Count, Cx, Event, Phase, Source,
    HEAD_TIMEOUT, HIGH_WATER, LOW_WATER,
};
use crate::metrics::Refusal as Refused;
use crate::proto::front::Route;
use crate::proto::http::{self, Request};

/// A connection waiting for a request head.
pub(super) struct Head {
    /// What arrived of the next head (and of requests pipelined behind it).
    pub buf: Vec<u8>,
    /// No request came yet on this connection.
    pub first: bool,
    /// Responses to pipelined requests filled the output queue: reading
    /// waits for the client to take them.
    pub paused: bool,
    pub deadline: Instant,
}

impl Head {
    pub fn first(now: Instant) -> Head {
        Head {
            buf: Vec::new(),
            first: true,
            paused: false,
            deadline: now + HEAD_TIMEOUT,
        }
    }

    /// The next request on a kept-alive connection, begun in `buf`.
    pub fn next(buf: Vec<u8>, deadline: Instant) -> Head {
        Head {
            buf,
            first: false,
            paused: false,
            deadline,
        }
    }

    pub fn may_read(&mut self, full: bool) -> bool {
        self.paused |= full;
        !full
    }
}

/// The `Head` phase's transitions.
pub(super) fn on(mut h: Head, cx: &mut Cx, ev: Event) -> Phase {
    match ev {
        Event::ClientData(data) => {
            // Never hold more than a head's worth plus one read.
            h.buf.extend_from_slice(data);
            if http::worth_parsing(&h.buf, data.len(), cx.env.cfg.max_head_bytes) {
                return parse(h, cx);
            }
            Phase::Head(h)
        }
        Event::Writable if h.paused && cx.host.pending() <= LOW_WATER => {
            h.paused = false;
            cx.host.resume(Source::Client);
            parse(h, cx)
        }
        Event::Timeout => {
            if !h.buf.is_empty() || h.first {
                debug!("[c{}] request head not complete in time", cx.id);
                if !h.buf.is_empty() {
                    let _ = cx.host.send(&http::text_response(
                        408,
                        "request head not received in time",
                        true,
                    ));
                }
            }
            Phase::Done
        }
        Event::Displaced => {
            debug!(
                "[c{}] closed to make room: the connection table is full and this connection sent no request",
                cx.id
            );
            Phase::Done
        }
        Event::ClientEof | Event::ClientBroke(_) | Event::Shutdown => Phase::Done,
        _ => Phase::Head(h),
    }
}

/// Handles every complete head in the buffer (pipelined requests), until
/// one leaves the phase or the buffer holds no complete head.
pub(super) fn parse(mut h: Head, cx: &mut Cx) -> Phase {
    loop {
        // A client that pipelines requests without reading the responses
        // is not read further until it takes them.
        if cx.host.pending() >= HIGH_WATER {
            h.paused = true;
            return Phase::Head(h);
        }
        if h.buf.is_empty() {
            return Phase::Head(h);
        }
        let cfg = cx.env.cfg;
        let parsed = http::parse_request_limited(&h.buf, cfg.max_head_bytes, cfg.max_headers)
            .and_then(|r| match r {
                Some(req) => req.check_rules().map(|()| Some(req)),
                None => Ok(None),
            });
        match parsed {
            Ok(None) => return Phase::Head(h),
            Ok(Some(req)) => {
                let leftover = h.buf.split_off(req.head_len);
                match handle_request(cx, req, leftover) {
                    Phase::Head(next) => h = next,
                    other => return other,
                }
            }
            Err(e) => {
                debug!("[c{}] bad request: {e}", cx.id);
                log_line(cx.id, cx.peer, cx.env, None, e.status());
                return respond_close(cx, &http::text_response(e.status(), &e.to_string(), true));
            }
        }
    }
}

/// Routes one request. A request answered on a kept-alive connection
/// returns the next `Head` (not yet parsed: [`parse`] goes on with it).
fn handle_request(cx: &mut Cx, req: Request, leftover: Vec<u8>) -> Phase {
    let env = cx.env;
    let id = cx.id;
    if env.cfg.log_headers {
        for (n, v) in &req.headers {
            info!(
                "[c{id}] header {}",
                crate::proto::logtext::header_line(n, v)
            );
        }
    }
    let host = &mut *cx.host;
    let engine = env.cfg.capture_engine.name();
    let route = crate::proto::front::route(&req, env.cfg.proxy_discovery, engine, || {
        host.metrics_text()
    });
    if let Err(refusal) = crate::proto::auth::check(env.policy, &req, &route) {
        info!(
            "[c{id}] {} refused: {}",
            req.path,
            match refusal {
                crate::proto::auth::Refusal::ForeignOrigin => "foreign Origin",
                crate::proto::auth::Refusal::NoToken => "no valid bearer token",
            }
        );
        log_line(id, cx.peer, env, Some(&req), refusal.status());
        if let crate::proto::auth::Refusal::NoToken = refusal {
            // Guessing tokens is slowed per address; nobody else waits.
            let hold = cx.host.token_refused(cx.peer.ip());
            if !hold.is_zero() {
                debug!(
                    "[c{id}] answer held back {hold:?}: repeated wrong tokens from this address"
                );
                return Phase::Held {
                    resp: refusal.response().into_boxed_slice(),
                    deadline: env.now + hold,
                };
            }
        }
        return respond_close(cx, &refusal.response());
    }
    match route {
        Route::Capture { .. } if env.captures >= env.cfg.max_captures => {
            info!(
                "[c{id}] capture refused: {} captures are running, the limit",
                env.captures
            );
            cx.host.count(Count::Refused(Refused::Limit));
            log_line(id, cx.peer, env, Some(&req), 503);
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
            respond_close(cx, &resp)
        }
        Route::Capture { accept } => {
            log_line(id, cx.peer, env, Some(&req), 101);
            start::begin(cx, &req, accept, leftover)
        }
        Route::Respond {
            status,
            bytes,
            keep_alive,
        } => {
            log_line(id, cx.peer, env, Some(&req), status);
            if let Err(e) = cx.host.send(&bytes) {
                return super::client_gone(cx, e);
            }
            if keep_alive {
                Phase::Head(Head::next(leftover, env.now + super::KEEPALIVE_TIMEOUT))
            } else {
                flush_then_close(cx)
            }
        }
        Route::Proxy { target } => {
            let req = crate::proto::auth::without_our_credentials(env.policy, req);
            proxying::begin(cx, req, target, leftover)
        }
    }
}
