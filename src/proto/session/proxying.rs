//! The `Proxying` phase (`--proxy-discovery`): a request that is not ours
//! waits for the discovery service's address, then runs as one
//! [`Exchange`] through the host's upstream connection; afterwards the
//! connection carries the next request, or closes.

use std::time::Instant;

use log::{debug, info};

use super::host::ProxyFailure;
use super::{
    await_next_request, client_gone, flush_then_close, log_line, respond_close, service_name, Cx,
    Event, Phase, Source,
};
use crate::proto::exchange::{Exchange, Step};
use crate::proto::http::{self, Request};

pub(super) enum Proxying {
    /// Waiting for the discovery service's address.
    Resolving {
        req: Request,
        target: String,
        leftover: Vec<u8>,
        deadline: Instant,
    },
    /// The exchange runs.
    Exchanging(Exchange),
}

impl Proxying {
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Proxying::Resolving { deadline, .. } => Some(*deadline),
            Proxying::Exchanging(x) => x.deadline(),
        }
    }

    pub(super) fn may_read(&mut self, src: Source, client_full: bool, up_pending: usize) -> bool {
        match (self, src) {
            (Proxying::Exchanging(x), Source::Client) => x.may_read_client(up_pending),
            (Proxying::Exchanging(x), Source::Upstream) => x.may_read_upstream(client_full),
            _ => false,
        }
    }
}

/// A request for the discovery service: its address first.
pub(super) fn begin(cx: &mut Cx, req: Request, target: String, leftover: Vec<u8>) -> Phase {
    let deadline = cx.env.now + cx.env.cfg.discovery_timeout;
    match cx.host.want_address() {
        Some(addr) => addressed(cx, req, target, leftover, addr),
        None => Phase::Proxying(Box::new(Proxying::Resolving {
            req,
            target,
            leftover,
            deadline,
        })),
    }
}

/// The `Proxying` phase's transitions.
pub(super) fn on(p: Box<Proxying>, cx: &mut Cx, ev: Event) -> Phase {
    match *p {
        Proxying::Resolving {
            req,
            target,
            leftover,
            deadline,
        } => match ev {
            Event::Address(addr) => addressed(cx, req, target, leftover, addr),
            Event::Timeout => {
                info!("[c{}] discovery service name not looked up in time", cx.id);
                let resp = http::text_response(
                    504,
                    "the discovery service's name was not looked up in time",
                    true,
                );
                respond_close(cx, &resp)
            }
            Event::ClientEof | Event::ClientBroke(_) | Event::Shutdown => Phase::Done,
            _ => Phase::Proxying(Box::new(Proxying::Resolving {
                req,
                target,
                leftover,
                deadline,
            })),
        },
        Proxying::Exchanging(x) => exchanging(x, cx, ev),
    }
}

fn exchanging(mut x: Exchange, cx: &mut Cx, ev: Event) -> Phase {
    let now = cx.env.now;
    let step = match ev {
        Event::ClientData(data) => match cx.host.upstream() {
            Some(up) => x.feed_client(data, up, now),
            None => Step::Close,
        },
        Event::ClientEof => x.client_eof(),
        Event::ClientBroke(e) => {
            cx.host.end_upstream();
            return client_gone(cx, e);
        }
        Event::Writable => {
            if x.on_client_drained(cx.host.pending()) {
                cx.host.resume(Source::Upstream);
            }
            Step::Continue
        }
        Event::UpstreamReady => {
            if x.on_upstream_progress(cx.host.upstream_pending(), now) {
                cx.host.resume(Source::Client);
            }
            Step::Continue
        }
        Event::UpstreamData(data) => {
            let up_pending = cx.host.upstream_pending();
            let client: &mut dyn super::Out = cx.host;
            let step = x.feed_upstream(data, client, up_pending, now);
            let more = x.take_for_upstream();
            match cx.host.upstream() {
                Some(up) if !more.is_empty() => match up.send(&more) {
                    Ok(()) => step,
                    Err(e) => x.upstream_failed(&e.0),
                },
                _ => step,
            }
        }
        Event::UpstreamEof => x.upstream_eof(),
        Event::UpstreamFailed(e) => x.upstream_failed(&e),
        Event::Timeout => match x.on_timeout(cx.host.upstream_pending(), now) {
            None => Step::Continue,
            Some(Step::Close) => {
                cx.host.end_upstream();
                return Phase::Done;
            }
            Some(step) => {
                info!("[c{}] discovery service did not answer in time", cx.id);
                step
            }
        },
        Event::Shutdown => {
            cx.host.end_upstream();
            return Phase::Done;
        }
        _ => Step::Continue,
    };
    match step {
        Step::Continue => Phase::Proxying(Box::new(Proxying::Exchanging(x))),
        Step::Done(pending) => {
            cx.host.end_upstream();
            // Bytes that arrived meanwhile were not read (edge-triggered):
            // look again, and handle a request already buffered.
            cx.host.resume(Source::Client);
            await_next_request(cx, pending)
        }
        Step::Close => {
            cx.host.end_upstream();
            flush_then_close(cx)
        }
        Step::Fail(status, why) => {
            info!("[c{}] proxy: {why}", cx.id);
            cx.host.end_upstream();
            respond_close(cx, &http::text_response(status, &why, true))
        }
    }
}

/// The discovery service's address (or why there is none): connect and
/// start the exchange.
fn addressed(
    cx: &mut Cx,
    req: Request,
    target: String,
    leftover: Vec<u8>,
    addr: Result<core::net::SocketAddr, String>,
) -> Phase {
    let service = service_name(cx.env.cfg);
    let addr = match addr {
        Ok(a) => a,
        Err(why) => {
            log_line(cx.id, cx.peer, cx.env, Some(&req), 502);
            return respond_close(cx, &http::text_response(502, &why, true));
        }
    };
    let head = crate::proto::proxy::upstream_head(&req, &target, &service, cx.peer.ip());
    debug!("[c{}] proxying {} {target} to {service}", cx.id, req.method);
    let failure = match cx.host.connect_upstream(addr) {
        Ok(()) => {
            let timeout = cx.env.cfg.discovery_timeout;
            let now = cx.env.now;
            let started = match cx.host.upstream() {
                Some(up) => Exchange::start(&req, &head, &leftover, up, now, timeout),
                None => Err("the upstream connection is gone".into()),
            };
            match started {
                Ok(x) => {
                    log_line(cx.id, cx.peer, cx.env, Some(&req), "proxied");
                    // Client bytes that arrived meanwhile were left unread.
                    cx.host.resume(Source::Client);
                    return Phase::Proxying(Box::new(Proxying::Exchanging(x)));
                }
                Err(e) => {
                    cx.host.end_upstream();
                    (400, format!("malformed request: {e}"))
                }
            }
        }
        Err(ProxyFailure::Unreachable(e)) => (
            502,
            format!("discovery service at {service} unreachable: {e}"),
        ),
        Err(ProxyFailure::CannotWatch(e)) => (502, format!("cannot proxy: {e}")),
    };
    let (status, text) = failure;
    log_line(cx.id, cx.peer, cx.env, Some(&req), status);
    respond_close(cx, &http::text_response(status, &text, true))
}
