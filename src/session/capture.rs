//! The capture phases of a session: resolving the target (with discovery
//! when the reference is stale), spawning the capture program, relaying its
//! output, and deciding how the capture ends and what the client is told.

use super::*;
use crate::pcapng::push_document_key;
use crate::selfexcl::combined_filter;

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
        match crate::multi::multi_params(req, &limits, ctx.cfg.max_targets) {
            Ok(Some(several)) => return self.start_multi(ctx, several, accept),
            Ok(None) => {}
            Err(reason) => {
                let reason = format!("capture refused: {reason}");
                return self.refuse(ctx, &accept, ws::POLICY_VIOLATION, &reason);
            }
        }
        let mut params = match capture_params_limited(req, &limits) {
            Ok(p) => p,
            Err(reason) => {
                metrics::refused(Refusal::Parameters);
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
            metrics::refused(Refusal::Parameters);
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
        info!(
            "[c{}] looking up container {:?} (prefix {:?}) with the discovery service at {service}",
            self.id, params.target.name, params.target.prefix
        );
        let d = Discovering {
            params,
            accept,
            service,
            started: ctx.now,
            locating: None,
        };
        match ctx
            .discovery
            .want_listing(ctx.registry, ctx.now, (self.key, self.id))
        {
            Some(listing) => self.discovered(ctx, d, listing),
            None => {
                self.arm(ctx, ctx.cfg.discovery_timeout);
                self.phase = Phase::Discovering(Box::new(d));
            }
        }
    }

    /// The shared discovery work this session waited for is done.
    pub fn on_delivery(&mut self, ctx: &mut Ctx, delivery: Delivery) {
        match (delivery, &self.phase) {
            (Delivery::Listing(listing), Phase::Discovering(d)) if d.locating.is_none() => {
                let Phase::Discovering(d) = std::mem::replace(&mut self.phase, Phase::Flush) else {
                    return;
                };
                self.deadline = None;
                self.discovered(ctx, *d, listing);
            }
            (Delivery::Rescanned, Phase::Discovering(d)) if d.locating.is_some() => {
                let Phase::Discovering(d) = std::mem::replace(&mut self.phase, Phase::Flush) else {
                    return;
                };
                let asked_at = d.locating.unwrap_or(ctx.now);
                self.spawn_capture_at(ctx, d.params, &d.accept, asked_at);
            }
            (Delivery::Listing(listing), Phase::MultiDiscovering(d)) if d.locating().is_none() => {
                self.on_multi_listing(ctx, listing);
            }
            (Delivery::Rescanned, Phase::MultiDiscovering(d)) if d.locating().is_some() => {
                self.on_multi_rescanned(ctx);
            }
            (Delivery::Address(addr), Phase::ProxyResolving(_)) => {
                let Phase::ProxyResolving(p) = std::mem::replace(&mut self.phase, Phase::Flush)
                else {
                    return;
                };
                self.deadline = None;
                let ProxyResolving {
                    req,
                    target,
                    leftover,
                } = *p;
                self.proxy_to(ctx, &req, &target, leftover, addr);
                // Client bytes that arrived meanwhile were left unread.
                ctx.again.push((token(self.key, CLIENT), self.id));
            }
            _ => {}
        }
    }

    fn discovered(
        &mut self,
        ctx: &mut Ctx,
        d: Discovering,
        listing: Result<std::sync::Arc<crate::discovery::ParsedListing>, DiscoveryError>,
    ) {
        let Discovering {
            mut params,
            accept,
            service,
            started,
            ..
        } = d;
        let found = listing.and_then(|l| l.find(&params.target.name, &params.target.prefix));
        metrics::lookup(lookup_outcome(&found), ctx.now - started);
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
                    metrics::refused(Refusal::Discovery);
                    return self.refuse(ctx, &accept, ws::POLICY_VIOLATION, &reason);
                }
                self.spawn_capture(ctx, params, &accept);
            }
            Err(e) => {
                let code = match e {
                    DiscoveryError::NotListed { .. } => ws::POLICY_VIOLATION,
                    _ => ws::INTERNAL_ERROR,
                };
                metrics::refused(Refusal::Discovery);
                self.refuse(ctx, &accept, code, &e.describe(&service));
            }
        }
    }

    pub(super) fn spawn_capture(&mut self, ctx: &mut Ctx, params: CaptureParams, accept: &str) {
        self.spawn_capture_at(ctx, params, accept, ctx.now);
    }

    /// `asked_at`: when the namespace was first looked for (see `nscache`).
    fn spawn_capture_at(
        &mut self,
        ctx: &mut Ctx,
        params: CaptureParams,
        accept: &str,
        asked_at: Instant,
    ) {
        let id = self.id;
        let t = &params.target;
        if let Some(reason) = ctx.privileges.refusal() {
            metrics::refused(Refusal::Privileges);
            return self.refuse(ctx, accept, ws::INTERNAL_ERROR, &reason);
        }
        let found = ctx
            .namespaces
            .find(t.netns, t.pid, asked_at, ctx.now, (self.key, self.id));
        let ns = match found {
            Found::Held(ns) => ns,
            Found::Missing(reason) => {
                metrics::refused(Refusal::Namespace);
                return self.refuse(
                    ctx,
                    accept,
                    ws::POLICY_VIOLATION,
                    &format!("capture refused: {reason}"),
                );
            }
            Found::Wait => {
                self.phase = Phase::Discovering(Box::new(Discovering {
                    params,
                    accept: accept.to_string(),
                    service: service_name(ctx.cfg),
                    started: ctx.now,
                    locating: Some(asked_at),
                }));
                return;
            }
        };
        let wanted = match params.interfaces() {
            Ok(i) => i,
            Err(reason) => {
                let reason = format!("capture refused: {reason}");
                metrics::refused(Refusal::Namespace);
                return self.refuse(ctx, accept, ws::POLICY_VIOLATION, &reason);
            }
        };
        let interfaces = match check_interfaces(&ns, &wanted, &params) {
            Ok(c) => {
                if !c.skipped.is_empty() {
                    info!(
                        "[c{id}] skipping interfaces of the target's list that do not exist in netns {}: {}",
                        t.netns,
                        c.skipped.join("/")
                    );
                }
                c.interfaces
            }
            Err((code, reason)) => return self.refuse(ctx, accept, code, &reason),
        };
        // The document shows the user's filter; the program also excludes
        // this capture's own connection when it runs in our namespace.
        let exclusion = own_exclusion(ctx.cfg, &self.conn, self.peer, t.netns);
        let filter = match &exclusion {
            Some((own, _)) => Some(combined_filter(params.filter.as_deref(), own)),
            None => params.filter.clone(),
        };
        let args = capture_args(&interfaces, filter.as_deref(), params.chaste);
        let program = &ctx.cfg.capture_program;
        let spawned = match spawn(program, &args, &ns.file, ctx.privileges.ambient) {
            Ok(s) => s,
            Err(e) => {
                let reason = format!("cannot start capture program {}: {e}", program.display());
                warn!("[c{id}] {reason}");
                metrics::refused(Refusal::Program);
                return self.refuse(ctx, accept, ws::INTERNAL_ERROR, &reason);
            }
        };
        // The child has entered the namespace (spawn returns after exec).
        drop(ns);
        ctx.children.insert(spawned.pid.as_raw(), self.key);
        metrics::CAPTURES_STARTED.inc();
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
        let mut doc = target_document(&TargetInfo {
            container_name: &t.name,
            container_type: &t.kind,
            node_name: &t.node_name,
            cluster_uid: t.cluster.as_ref().map(|c| c.uid.as_str()),
            capture_filter: params.filter.as_deref(),
            no_promiscuous: params.chaste,
        });
        if let Some((_, what)) = &exclusion {
            push_document_key(&mut doc, crate::selfexcl::DOCUMENT_KEY, what);
        }
        let mut cap = Box::new(Capture {
            pid: spawned.pid,
            alive: true,
            status: None,
            stdout: Some(spawned.stdout),
            stderr: Some(spawned.stderr),
            editor: ShbEditor::new(doc),
            reader: FrameReader::new(),
            err: ErrLines::default(),
            ending: Ending::Running,
            paused: false,
            paused_since: None,
            client_paused: false,
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
                cap.paused_since.get_or_insert(ctx.now);
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
                    cap.err.finish(|l| logged_stderr(self.id, l));
                }
                Ok(n) => cap.err.feed(&ctx.buf[..n], |l| logged_stderr(self.id, l)),
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
        let draining = cap.ending.forwards() && (cap.stdout.is_some() || cap.stderr.is_some());
        if !draining {
            record_end(cap, ctx.now);
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
                let code = code.unwrap_or(ws::NORMAL);
                return self.answer_close(ctx, code, "");
            }
            Ending::ClientGone => return self.client_gone(),
            Ending::Violation(code, reason) => (*code, reason.to_string()),
        };
        info!("[c{}] capture ended: {code} {reason}", self.id);
        self.send_close(ctx, code, &reason);
    }

    /// Answers the client's close handshake (every program is reaped by
    /// now), then closes the connection once the answer is out.
    pub(super) fn answer_close(&mut self, ctx: &mut Ctx, code: u16, reason: &str) {
        self.phase = Phase::Flush;
        self.arm(ctx, CLOSE_TIMEOUT);
        if let Err(e) = self.conn.send(&ws::close_frame(code, reason)) {
            return self.client_broke(ctx, e);
        }
        self.finish_if_flushed();
    }

    /// The client's connection is gone: nothing more can be sent.
    pub(super) fn client_gone(&mut self) {
        self.phase = Phase::Flush;
        self.finished = true;
    }

    /// Sends our close frame and waits for the client's (or EOF).
    pub(super) fn send_close(&mut self, ctx: &mut Ctx, code: u16, reason: &str) {
        self.phase = Phase::Closing(FrameReader::new());
        self.arm(ctx, CLOSE_TIMEOUT);
        if let Err(e) = self.conn.send(&ws::close_frame(code, reason)) {
            self.client_broke(ctx, e);
        }
    }
}

/// Every interface name must exist in the target namespace before anything
/// is spawned (see `crate::links`): the close code and reason otherwise.
pub(super) fn check_interfaces(
    ns: &crate::netns::Netns,
    wanted: &[String],
    params: &CaptureParams,
) -> Result<crate::links::Checked, (u16, String)> {
    if wanted.is_empty() {
        return Ok(crate::links::Checked {
            interfaces: Vec::new(),
            skipped: Vec::new(),
        });
    }
    let existing = crate::links::names_in(&ns.file).map_err(|e| {
        (
            ws::INTERNAL_ERROR,
            format!("cannot list the interfaces of the target's network namespace: {e}"),
        )
    })?;
    let explicit = matches!(params.nifs, crate::params::Nifs::List(_));
    crate::links::check(wanted, explicit, &existing)
        .map_err(|why| (ws::POLICY_VIOLATION, format!("capture refused: {why}")))
}

/// Sends one binary message: header from the stack, payload straight from
/// the read buffer.
pub(super) fn send_message(conn: &mut Conn, data: &[u8]) -> io::Result<()> {
    let mut head = [0u8; ws::MAX_SERVER_HEADER];
    let n = ws::binary_header(data.len(), &mut head);
    conn.send_parts(&head[..n], data)?;
    metrics::BYTES_RELAYED.add(data.len() as u64);
    Ok(())
}

/// Adds a finished pause of the capture pipe to the paused-time metric.
pub(super) fn pause_ended(cap: &mut Capture, now: Instant) {
    if let Some(since) = cap.paused_since.take() {
        metrics::paused_for(now.saturating_duration_since(since));
    }
}

/// Counts a capture's end by cause (once: the session leaves `Streaming`
/// right after), with a pause still open at the end.
fn record_end(cap: &mut Capture, now: Instant) {
    pause_ended(cap, now);
    metrics::ended(match cap.ending {
        Ending::Running | Ending::ProgramEnded => metrics::End::ProgramEnded,
        Ending::ClientClosed(_) => metrics::End::ClientClosed,
        Ending::ClientGone => metrics::End::ClientGone,
        Ending::Violation(..) => metrics::End::Violation,
        Ending::Shutdown => metrics::End::Shutdown,
    });
}

/// The lookup metric's outcome for a finished discovery exchange.
pub(super) fn lookup_outcome(
    found: &Result<crate::target::Target, DiscoveryError>,
) -> metrics::Lookup {
    use metrics::Lookup;
    match found {
        Ok(_) => Lookup::Found,
        Err(DiscoveryError::NotListed { .. }) => Lookup::NotListed,
        Err(DiscoveryError::Unreachable(_)) => Lookup::Unreachable,
        Err(DiscoveryError::TimedOut) => Lookup::TimedOut,
        Err(_) => Lookup::BadResponse,
    }
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

fn logged_stderr(id: u64, line: &str) {
    debug!("[c{id}] capture program: {line}");
}

/// The close code and reason for a capture program that ended by itself.
pub(super) fn exit_reason(cap: &Capture) -> (u16, String) {
    let detail = cap.err.errline().map(str::to_string);
    match cap.status {
        // dumpcap exits 0 also when it stops by itself for a reason the user
        // should see (a captured interface was deleted, say).
        Some(WaitStatus::Exited(_, 0)) => (
            ws::NORMAL,
            detail.unwrap_or_else(|| "capture program ended".into()),
        ),
        Some(WaitStatus::Exited(_, code)) => (
            ws::INTERNAL_ERROR,
            detail.unwrap_or_else(|| match cap.err.firstline() {
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

    fn ended(status: WaitStatus, stderr: &[&str]) -> Capture {
        let mut cap = Capture {
            pid: Pid::from_raw(4242),
            alive: false,
            status: Some(status),
            stdout: None,
            stderr: None,
            editor: ShbEditor::new(String::new()),
            reader: FrameReader::new(),
            err: ErrLines::default(),
            ending: Ending::ProgramEnded,
            paused: false,
            paused_since: None,
            client_paused: false,
            term_sent: false,
            kill_at: None,
            kill_sent: false,
        };
        for line in stderr {
            cap.err.feed(line.as_bytes(), |_| {});
            cap.err.finish(|_| {});
        }
        cap
    }

    #[test]
    fn dumpcaps_line_is_the_reason_also_when_it_exits_0() {
        let pid = Pid::from_raw(4242);
        let gone =
            "dumpcap: The network adapter \"eth0\" is no longer attached; the capture has stopped.";
        let cap = ended(
            WaitStatus::Exited(pid, 0),
            &["Capturing on 'eth0'", gone, "Packets captured: 10"],
        );
        assert_eq!(
            exit_reason(&cap),
            (
                ws::NORMAL,
                "The network adapter \"eth0\" is no longer attached; the capture has stopped."
                    .into()
            )
        );
        let cap = ended(WaitStatus::Exited(pid, 0), &["Packets captured: 3"]);
        assert_eq!(
            exit_reason(&cap),
            (ws::NORMAL, "capture program ended".into())
        );
        let cap = ended(
            WaitStatus::Exited(pid, 1),
            &["dumpcap: Invalid capture filter \"x\" for interface 'lo'."],
        );
        assert_eq!(
            exit_reason(&cap),
            (
                ws::INTERNAL_ERROR,
                "Invalid capture filter \"x\" for interface 'lo'.".into()
            )
        );
    }

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
