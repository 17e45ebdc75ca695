//! The discovery-proxy phase of a session: starting the exchange and
//! turning each [`Step`] of [`crate::proxy::Proxy`] into the session's next
//! phase. The byte moving itself lives in `crate::proxy`.

use super::*;

impl Session {
    // ---- the discovery proxy -------------------------------------------

    pub(super) fn start_proxy(
        &mut self,
        ctx: &mut Ctx,
        req: &Request,
        target: &str,
        leftover: Vec<u8>,
    ) {
        match ctx.discovery.want_address(ctx.now, (self.key, self.id)) {
            Some(addr) => self.proxy_to(ctx, req, target, leftover, addr),
            None => {
                self.phase = Phase::ProxyResolving(Box::new(ProxyResolving {
                    req: req.clone(),
                    target: target.to_string(),
                    leftover,
                }));
                self.arm(ctx, ctx.cfg.discovery_timeout);
            }
        }
    }

    /// Forwards the request once the discovery service's address is known.
    pub(super) fn proxy_to(
        &mut self,
        ctx: &mut Ctx,
        req: &Request,
        target: &str,
        leftover: Vec<u8>,
        addr: Result<SocketAddr, String>,
    ) {
        let addr = match addr {
            Ok(a) => a,
            Err(why) => {
                self.log_line(ctx, Some(req), 502);
                let resp = http::text_response(502, &why, true);
                return self.respond_close(ctx, resp);
            }
        };
        let service = service_name(ctx.cfg);
        let head = proxy::upstream_head(req, target, &service, self.peer.ip());
        let mut p = match Proxy::start(addr, head, req, leftover) {
            Ok(p) => p,
            Err(e) => {
                let status = match e.kind() {
                    io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => 400,
                    _ => 502,
                };
                self.log_line(ctx, Some(req), status);
                let text = if status == 400 {
                    format!("malformed request: {e}")
                } else {
                    format!("discovery service at {service} unreachable: {e}")
                };
                return self.respond_close(ctx, http::text_response(status, &text, true));
            }
        };
        if let Err(e) = ctx.registry.register(
            &mut p.up,
            token(self.key, UPSTREAM),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.log_line(ctx, Some(req), 502);
            let resp = http::text_response(502, &format!("cannot proxy: {e}"), true);
            return self.respond_close(ctx, resp);
        }
        self.log_line(ctx, Some(req), "proxied");
        debug!(
            "[c{}] proxying {} {target} to {service}",
            self.id, req.method
        );
        self.phase = Phase::Proxy(Box::new(p));
        // No response head within the discovery deadline: 504.
        self.arm(ctx, ctx.cfg.discovery_timeout);
    }

    pub(super) fn on_proxy_upstream(&mut self, ctx: &mut Ctx, readable: bool, writable: bool) {
        let Phase::Proxy(p) = &mut self.phase else {
            return;
        };
        let mut step = p.on_upstream(&mut self.conn, ctx.buf, readable, writable);
        if step == Step::Continue && p.client_paused && p.up_queue_low() {
            step = p.on_client(&mut self.conn, ctx.buf);
        }
        self.proxy_step(ctx, step);
    }

    pub(super) fn on_proxy_client(&mut self, ctx: &mut Ctx) {
        let Phase::Proxy(p) = &mut self.phase else {
            return;
        };
        let step = p.on_client(&mut self.conn, ctx.buf);
        self.proxy_step(ctx, step);
    }

    pub(super) fn proxy_step(&mut self, ctx: &mut Ctx, step: Step) {
        let Phase::Proxy(p) = &mut self.phase else {
            return;
        };
        if p.answered() {
            self.deadline = None;
        } else if !p.clock_restarted && p.request_sent() {
            // The answer is due within the deadline from here on.
            p.clock_restarted = true;
            let after = ctx.cfg.discovery_timeout;
            arm(&mut self.deadline, ctx, self.key, self.id, after);
        }
        match step {
            Step::Continue => {}
            Step::MoreUpstream => ctx.again.push((token(self.key, UPSTREAM), self.id)),
            Step::MoreClient => ctx.again.push((token(self.key, CLIENT), self.id)),
            Step::Done => {
                let pending = std::mem::take(&mut p.pending);
                let _ = ctx.registry.deregister(&mut p.up);
                self.await_next_request(ctx, pending);
                // Bytes that arrived meanwhile were not read (edge-triggered):
                // look again, and handle a request already buffered.
                ctx.again.push((token(self.key, CLIENT), self.id));
                self.parse_heads(ctx);
            }
            Step::Close => {
                let _ = ctx.registry.deregister(&mut p.up);
                self.phase = Phase::Flush;
                self.arm(ctx, CLOSE_TIMEOUT);
                self.finish_if_flushed();
            }
            Step::Fail(status, why) => {
                info!("[c{}] proxy: {why}", self.id);
                let _ = ctx.registry.deregister(&mut p.up);
                self.respond_close(ctx, http::text_response(status, &why, true));
            }
        }
    }
}
