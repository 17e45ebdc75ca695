//! The capture phases of a session: resolving the target (with discovery
//! when the reference is stale), spawning the capture program, relaying its
//! output, and deciding how the capture ends and what the client is told.

use super::*;

impl Session {
    // ---- starting a capture ---------------------------------------------

    pub(super) fn start_capture(
        &mut self,
        ctx: &mut Ctx,
        req: &Request,
        accept: String,
        leftover: Vec<u8>,
    ) {
        self.early = leftover;
        let limits = Limits {
            max_target_json: ctx.cfg.max_target_json,
            max_filter: ctx.cfg.max_filter,
        };
        let mut params = match capture_params_limited(req, &limits) {
            Ok(p) => p,
            Err(reason) => {
                return self.refuse(
                    ctx,
                    &accept,
                    ws::POLICY_VIOLATION,
                    &format!("capture refused: {reason}"),
                );
            }
        };
        let t = &mut params.target;
        if t.netns != 0 && is_stale(t, process_starttime) {
            info!(
                "[c{}] reference to pid {} is stale (start time differs or process gone); netns {} is not trusted",
                self.id, t.pid, t.netns
            );
            t.netns = 0;
        }
        if t.netns != 0 {
            return self.spawn_capture(ctx, params, &accept);
        }
        if !params.described || t.name.is_empty() {
            return self.refuse(
                ctx,
                &accept,
                ws::POLICY_VIOLATION,
                "capture refused: the target has no valid netns and no name to look up with the discovery service",
            );
        }
        self.start_discovery(ctx, params, accept);
    }

    pub(super) fn start_discovery(&mut self, ctx: &mut Ctx, params: CaptureParams, accept: String) {
        let service = service_name(ctx.cfg);
        let addr = match &ctx.discovery {
            Ok(a) => *a,
            Err(why) => {
                let why = why.clone();
                return self.refuse(ctx, &accept, ws::INTERNAL_ERROR, &why);
            }
        };
        let mut call = match DiscoveryCall::start(addr, &ctx.cfg.discovery_service, ctx.cfg.gw_port)
        {
            Ok(c) => c,
            Err(e) => return self.refuse(ctx, &accept, ws::INTERNAL_ERROR, &e.describe(&service)),
        };
        if let Err(e) = ctx.registry.register(
            call.stream(),
            token(self.key, UPSTREAM),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            let reason = DiscoveryError::Unreachable(e.to_string()).describe(&service);
            return self.refuse(ctx, &accept, ws::INTERNAL_ERROR, &reason);
        }
        info!(
            "[c{}] looking up container {:?} (prefix {:?}) with the discovery service at {addr}",
            self.id, params.target.name, params.target.prefix
        );
        self.arm(ctx, ctx.cfg.discovery_timeout);
        self.phase = Phase::Discovering(Box::new(Discovering {
            params,
            accept,
            call,
            service,
        }));
    }

    pub(super) fn on_discovery(&mut self, ctx: &mut Ctx) {
        let Phase::Discovering(d) = &mut self.phase else {
            return;
        };
        let result = match d.call.on_ready() {
            std::task::Poll::Pending => return,
            std::task::Poll::Ready(r) => r,
        };
        let Phase::Discovering(d) = std::mem::replace(&mut self.phase, Phase::Flush) else {
            return;
        };
        let Discovering {
            mut params,
            accept,
            mut call,
            service,
        } = *d;
        let _ = ctx.registry.deregister(call.stream());
        drop(call);
        self.deadline = None;
        let found = result.and_then(|resp| {
            if resp.status != 200 {
                return Err(DiscoveryError::BadStatus(resp.status));
            }
            find_target(&resp.body, &params.target.name, &params.target.prefix)
        });
        match found {
            Ok(mut t) => {
                info!(
                    "[c{}] discovery service names netns {} for {:?}",
                    self.id, t.netns, t.name
                );
                if !params.target.network_interfaces.is_empty() {
                    t.network_interfaces = std::mem::take(&mut params.target.network_interfaces);
                }
                params.target = t;
                if params.target.netns == 0 {
                    let reason = format!(
                        "capture refused: the discovery service lists {:?} without a network namespace",
                        params.target.name
                    );
                    return self.refuse(ctx, &accept, ws::POLICY_VIOLATION, &reason);
                }
                self.spawn_capture(ctx, params, &accept);
            }
            Err(e) => {
                let code = match e {
                    DiscoveryError::NotListed { .. } => ws::POLICY_VIOLATION,
                    _ => ws::INTERNAL_ERROR,
                };
                self.refuse(ctx, &accept, code, &e.describe(&service));
            }
        }
    }

    pub(super) fn spawn_capture(&mut self, ctx: &mut Ctx, params: CaptureParams, accept: &str) {
        let id = self.id;
        let t = &params.target;
        if let Some(reason) = ctx.privileges.refusal() {
            return self.refuse(ctx, accept, ws::INTERNAL_ERROR, &reason);
        }
        let ns = match crate::netns::locate(t.netns, t.pid) {
            Ok(ns) => ns,
            Err(reason) => {
                return self.refuse(
                    ctx,
                    accept,
                    ws::POLICY_VIOLATION,
                    &format!("capture refused: {reason}"),
                );
            }
        };
        let interfaces = match params.interfaces() {
            Ok(i) => i,
            Err(reason) => {
                let reason = format!("capture refused: {reason}");
                return self.refuse(ctx, accept, ws::POLICY_VIOLATION, &reason);
            }
        };
        let args = capture_args(&interfaces, params.filter.as_deref(), params.chaste);
        let program = &ctx.cfg.capture_program;
        let spawned = match spawn(program, &args, &ns.file, ctx.privileges.ambient) {
            Ok(s) => s,
            Err(e) => {
                let reason = format!("cannot start capture program {}: {e}", program.display());
                warn!("[c{id}] {reason}");
                return self.refuse(ctx, accept, ws::INTERNAL_ERROR, &reason);
            }
        };
        // The child has entered the namespace (spawn returns after exec).
        drop(ns);
        ctx.children.insert(spawned.pid.as_raw(), self.key);
        info!(
            "[c{id}] capture started: pid {} in netns {} ({}), {} {}",
            spawned.pid,
            t.netns,
            if t.name.is_empty() {
                "unnamed"
            } else {
                t.name.as_str()
            },
            program.display(),
            args.join(" ")
        );
        let doc = target_document(&TargetInfo {
            container_name: &t.name,
            container_type: &t.kind,
            node_name: &t.node_name,
            cluster_uid: t.cluster.as_ref().map(|c| c.uid.as_str()),
            capture_filter: params.filter.as_deref(),
            no_promiscuous: params.chaste,
        });
        let mut cap = Box::new(Capture {
            pid: spawned.pid,
            alive: true,
            status: None,
            stdout: Some(spawned.stdout),
            stderr: Some(spawned.stderr),
            editor: ShbEditor::new(doc),
            reader: FrameReader::new(),
            errline: None,
            firstline: None,
            errpart: Vec::new(),
            ending: Ending::Running,
            paused: false,
            term_sent: false,
            kill_at: None,
            kill_sent: false,
        });
        let registered = [(STDOUT, cap.stdout.as_mut()), (STDERR, cap.stderr.as_mut())]
            .into_iter()
            .try_for_each(|(role, pipe)| match pipe {
                Some(p) => ctx
                    .registry
                    .register(p, token(self.key, role), Interest::READABLE),
                None => Ok(()),
            });
        let sent = self.conn.send(&http::switching_protocols(accept));
        self.phase = Phase::Streaming(cap);
        if let Err(e) = registered {
            warn!("[c{id}] cannot watch the capture program's output: {e}");
            if let Phase::Streaming(cap) = &mut self.phase {
                cap.ending = Ending::Violation(
                    ws::INTERNAL_ERROR,
                    "internal error: cannot watch the capture output",
                );
                terminate(cap, &mut self.deadline, ctx, self.key, id);
            }
            return;
        }
        if let Err(e) = sent {
            return self.client_broke(ctx, e);
        }
        let early = std::mem::take(&mut self.early);
        if !early.is_empty() {
            if let Phase::Streaming(cap) = &mut self.phase {
                let mut replies = Vec::new();
                if let Some(ev) = cap.reader.feed(&early, &mut replies) {
                    cap.ending = match ev {
                        Inbound::Close { code, .. } => Ending::ClientClosed(code),
                        Inbound::Violation { code, reason } => Ending::Violation(code, reason),
                    };
                    terminate(cap, &mut self.deadline, ctx, self.key, id);
                } else if !replies.is_empty() {
                    let _ = self.conn.send(&replies);
                }
            }
        }
    }

    /// Ends a capture that could not start: the handshake is accepted so that
    /// the client receives the reason in a close frame.
    pub(super) fn refuse(&mut self, ctx: &mut Ctx, accept: &str, code: u16, reason: &str) {
        info!("[c{}] {reason}", self.id);
        let mut bytes = http::switching_protocols(accept);
        bytes.extend_from_slice(&ws::close_frame(code, reason));
        if let Err(e) = self.conn.send(&bytes) {
            self.phase = Phase::Flush;
            return self.client_broke(ctx, e);
        }
        self.phase = Phase::Closing(FrameReader::new());
        self.arm(ctx, CLOSE_TIMEOUT);
        // A close frame the client sent right behind its handshake answers
        // ours already.
        let early = std::mem::take(&mut self.early);
        if let Phase::Closing(reader) = &mut self.phase {
            if !early.is_empty() && reader.feed(&early, &mut Vec::new()).is_some() {
                self.close_handshake_done();
            }
        }
    }

    // ---- capture output ----------------------------------------------------

    pub(super) fn pump_stdout(&mut self, ctx: &mut Ctx) {
        let Phase::Streaming(cap) = &mut self.phase else {
            return;
        };
        let conn = &mut self.conn;
        let mut reads = 0;
        let mut broke = None;
        while let Some(pipe) = cap.stdout.as_mut() {
            let forwarding = cap.ending.forwards();
            if forwarding && conn.pending() >= HIGH_WATER {
                cap.paused = true;
                break;
            }
            if reads == READS_PER_TURN {
                ctx.again.push((token(self.key, STDOUT), self.id));
                break;
            }
            reads += 1;
            match pipe.read(ctx.buf) {
                Ok(0) => {
                    cap.stdout = None;
                    if forwarding {
                        let rest = cap.editor.finish();
                        if !rest.is_empty() {
                            broke = send_message(conn, &rest).err();
                        }
                    }
                    break;
                }
                Ok(n) => {
                    if forwarding {
                        let data = cap.editor.feed(&ctx.buf[..n]);
                        if !data.is_empty() {
                            if let Err(e) = send_message(conn, &data) {
                                broke = Some(e);
                                break;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("[c{}] reading the capture output failed: {e}", self.id);
                    cap.stdout = None;
                }
            }
        }
        if let Some(e) = broke {
            return self.client_broke(ctx, e);
        }
        self.check_end(ctx);
    }

    pub(super) fn pump_stderr(&mut self, ctx: &mut Ctx) {
        let Phase::Streaming(cap) = &mut self.phase else {
            return;
        };
        let mut reads = 0;
        while let Some(pipe) = cap.stderr.as_mut() {
            if reads == READS_PER_TURN {
                ctx.again.push((token(self.key, STDERR), self.id));
                break;
            }
            reads += 1;
            match pipe.read(ctx.buf) {
                Ok(0) => {
                    cap.stderr = None;
                    let rest = std::mem::take(&mut cap.errpart);
                    stderr_line(cap, self.id, &rest);
                }
                Ok(n) => {
                    for part in ctx.buf[..n].split_inclusive(|b| *b == b'\n') {
                        if cap.errpart.len() < MAX_ERR_LINE {
                            let room = MAX_ERR_LINE - cap.errpart.len();
                            cap.errpart.extend_from_slice(&part[..part.len().min(room)]);
                        }
                        if part.ends_with(b"\n") {
                            let line = std::mem::take(&mut cap.errpart);
                            stderr_line(cap, self.id, &line);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => cap.stderr = None,
            }
        }
        self.check_end(ctx);
    }

    /// Decides, after any change, whether the capture is over and what the
    /// client gets.
    pub(super) fn check_end(&mut self, ctx: &mut Ctx) {
        let Phase::Streaming(cap) = &mut self.phase else {
            return;
        };
        if cap.alive {
            if cap.stdout.is_none() && cap.ending == Ending::Running {
                // The program closed its output: nothing more will come.
                cap.ending = Ending::ProgramEnded;
                terminate(cap, &mut self.deadline, ctx, self.key, self.id);
            }
            return;
        }
        let (code, reason) = match &cap.ending {
            Ending::Running | Ending::ProgramEnded | Ending::Shutdown => {
                if cap.stdout.is_some() || cap.stderr.is_some() {
                    // The rest of the output (and the error line) first.
                    return;
                }
                if cap.ending == Ending::Shutdown {
                    (
                        ws::GOING_AWAY,
                        "the capture service is shutting down".to_string(),
                    )
                } else {
                    exit_reason(cap)
                }
            }
            Ending::ClientClosed(code) => {
                // Answer the client's close handshake, then close.
                let code = code.unwrap_or(ws::NORMAL);
                let frame = ws::close_frame(code, "");
                self.phase = Phase::Flush;
                self.arm(ctx, CLOSE_TIMEOUT);
                if let Err(e) = self.conn.send(&frame) {
                    return self.client_broke(ctx, e);
                }
                return self.finish_if_flushed();
            }
            Ending::ClientGone => {
                self.phase = Phase::Flush;
                self.finished = true;
                return;
            }
            Ending::Violation(code, reason) => (*code, reason.to_string()),
        };
        info!("[c{}] capture ended: {code} {reason}", self.id);
        self.phase = Phase::Closing(FrameReader::new());
        self.arm(ctx, CLOSE_TIMEOUT);
        if let Err(e) = self.conn.send(&ws::close_frame(code, &reason)) {
            self.client_broke(ctx, e);
        }
    }
}

/// Sends one binary message: header from the stack, payload straight from
/// the read buffer.
pub(super) fn send_message(conn: &mut Conn, data: &[u8]) -> io::Result<()> {
    let mut head = [0u8; ws::MAX_SERVER_HEADER];
    let n = ws::binary_header(data.len(), &mut head);
    conn.send_parts(&head[..n], data)
}

/// SIGTERM now, repeated every [`TERM_REPEAT`]; SIGKILL when the term
/// timeout has passed (see `on_timer` and [`term_step`]).
pub(super) fn terminate(
    cap: &mut Capture,
    deadline: &mut Option<Instant>,
    ctx: &mut Ctx,
    key: usize,
    id: u64,
) {
    if !cap.alive || cap.term_sent {
        return;
    }
    cap.term_sent = true;
    debug!("[c{id}] sending SIGTERM to capture program {}", cap.pid);
    let _ = kill(cap.pid, Signal::SIGTERM);
    let kill_at = ctx.now + ctx.cfg.term_timeout;
    cap.kill_at = Some(kill_at);
    if let TermStep::Repeat(next) = term_step(kill_at, ctx.now) {
        arm(deadline, ctx, key, id, next - ctx.now);
    }
}

/// What a terminating capture program gets when its timer fires.
#[derive(Debug, PartialEq)]
pub(super) enum TermStep {
    /// SIGTERM again; look again at this time.
    Repeat(Instant),
    Kill,
}

pub(super) fn term_step(kill_at: Instant, now: Instant) -> TermStep {
    if now >= kill_at {
        TermStep::Kill
    } else {
        TermStep::Repeat((now + TERM_REPEAT).min(kill_at))
    }
}

pub(super) fn stderr_line(cap: &mut Capture, id: u64, line: &[u8]) {
    let line = String::from_utf8_lossy(line);
    let line = line.trim();
    if line.is_empty() {
        return;
    }
    debug!("[c{id}] capture program: {line}");
    if cap.errline.is_none() {
        if let Some(rest) = line.strip_prefix("dumpcap: ") {
            cap.errline = Some(rest.trim().to_string());
        }
    }
    if cap.firstline.is_none() {
        cap.firstline = Some(line.to_string());
    }
}

/// The close code and reason for a capture program that ended by itself.
pub(super) fn exit_reason(cap: &Capture) -> (u16, String) {
    let detail = cap.errline.clone();
    match cap.status {
        Some(WaitStatus::Exited(_, 0)) => (ws::NORMAL, "capture program ended".into()),
        Some(WaitStatus::Exited(_, code)) => (
            ws::INTERNAL_ERROR,
            detail.unwrap_or_else(|| match &cap.firstline {
                Some(l) => format!("capture program failed ({code}): {l}"),
                None => format!("capture program exited with status {code}"),
            }),
        ),
        Some(WaitStatus::Signaled(_, sig, _)) => (
            ws::INTERNAL_ERROR,
            detail.unwrap_or_else(|| format!("capture program killed by {sig}")),
        ),
        _ => (
            ws::INTERNAL_ERROR,
            "capture program ended abnormally".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn sigterm_is_repeated_until_the_kill_deadline_then_sigkill() {
        let start = Instant::now();
        let kill_at = start + Duration::from_millis(2500);
        let mut now = start;
        let mut repeats = 0;
        while let TermStep::Repeat(next) = term_step(kill_at, now) {
            assert!(next > now && next <= kill_at);
            assert!(next - now <= TERM_REPEAT);
            now = next;
            repeats += 1;
            assert!(repeats < 10, "never reaches the kill deadline");
        }
        assert_eq!(now, kill_at);
        assert_eq!(repeats, 3);
        assert_eq!(term_step(kill_at, kill_at + TERM_REPEAT), TermStep::Kill);
    }
}
