//! The phases of a capture of several targets in one stream: resolving
//! every target (one discovery exchange for all the stale ones), starting
//! one capture program per target (all or none), relaying their merged
//! output ([`crate::merge`]), and ending: a program that ends while others
//! run does not end the stream; the close, when the last has ended or the
//! client closes, names what happened to each target.
//!
//! Like the single-target phases, nothing here blocks: discovery is the
//! same non-blocking call, every pipe is a registered non-blocking
//! descriptor, and a slow client pauses every pipe of the capture. Every
//! program started is reaped before the session can go.

use super::capture::{send_message, term_step, TermStep};
use super::*;
use crate::discovery::ParsedListing;
use crate::merge::{Merger, Part};
use crate::multi::{outcomes_reason, target_labels, MultiParams};
use crate::pcapng::targets_document;
use crate::target::Target;
use std::sync::Arc;

/// First token role of the per-target pipes: target `i`'s stdout is
/// `MULTI_ROLES + 2 i`, its stderr the next one.
pub const MULTI_ROLES: usize = UPSTREAM + 1;

fn pipe_role(i: usize, stderr: bool) -> usize {
    MULTI_ROLES + 2 * i + usize::from(stderr)
}

/// One target's capture program.
pub(super) struct Program {
    label: String,
    pid: Pid,
    alive: bool,
    status: Option<WaitStatus>,
    stdout: Option<Receiver>,
    stderr: Option<Receiver>,
    /// What it said on stderr, for the close reason.
    err: ErrLines,
    /// Its output broke the pcapng format (the merger gave it up).
    broken: Option<String>,
    term_sent: bool,
    /// Stopped because the capture as a whole ended (client, shutdown),
    /// not because its own output ended.
    stopped: bool,
    kill_at: Option<Instant>,
    kill_sent: bool,
}

impl Program {
    /// What happened to this target, for the close reason.
    fn outcome(&self) -> String {
        if let Some(b) = &self.broken {
            return format!("bad output: {b}");
        }
        if let Some(e) = self.err.errline() {
            return e.to_string();
        }
        match self.status {
            Some(WaitStatus::Exited(_, 0) | WaitStatus::Signaled(_, Signal::SIGTERM, _))
                if self.stopped =>
            {
                "stopped".into()
            }
            Some(WaitStatus::Exited(_, 0)) => "ended".into(),
            Some(WaitStatus::Exited(_, c)) => format!("exited with status {c}"),
            Some(WaitStatus::Signaled(_, Signal::SIGTERM, _)) if self.term_sent => "stopped".into(),
            Some(WaitStatus::Signaled(_, sig, _)) => format!("killed by {sig}"),
            _ if self.alive => "running".into(),
            _ => "ended abnormally".into(),
        }
    }

    fn failed(&self) -> bool {
        let clean_end = matches!(self.status, Some(WaitStatus::Exited(_, 0)))
            || (self.term_sent && self.status.is_some());
        self.broken.is_some() || self.err.errline().is_some() || !clean_end
    }
}

/// Why a capture of several targets is ending.
#[derive(Clone, Debug, PartialEq)]
enum MultiEnding {
    Running,
    ClientClosed(Option<u16>),
    ClientGone,
    Violation(u16, &'static str),
    Shutdown,
    /// Not every program could start: the ones that did are killed, and the
    /// client gets this once they are reaped.
    Refused(u16, String),
}

impl MultiEnding {
    fn forwards(&self) -> bool {
        matches!(self, MultiEnding::Running | MultiEnding::Shutdown)
    }
}

pub(super) struct MultiCapture {
    programs: Vec<Program>,
    merger: Merger,
    reader: FrameReader,
    ending: MultiEnding,
    paused: bool,
    /// The client is not read: pongs owed to it would grow the output
    /// queue past [`HIGH_WATER`]. Resumes below [`LOW_WATER`], like the pipes.
    client_paused: bool,
    /// When the current pause of the pipes began, for the paused-time metric.
    paused_since: Option<Instant>,
    /// What the merger made of one read (blocks it built or that spanned
    /// reads); the rest of the message is ranges of the read buffer.
    scratch: Vec<u8>,
    /// The pieces of one read's message, in order.
    parts: Vec<Part>,
}

impl MultiCapture {
    pub(super) fn any_alive(&self) -> bool {
        self.programs.iter().any(|p| p.alive)
    }

    /// Programs running, for `--max-captures`.
    pub(super) fn weight(&self) -> usize {
        self.programs.len()
    }
}

pub(super) struct MultiDiscovering {
    params: MultiParams,
    accept: String,
    service: String,
    /// When the lookup began, for the lookup duration metric.
    started: Instant,
    /// Not waiting for the discovery service but for the next namespace
    /// scan, for a location first asked at this instant (see `nscache`).
    locating: Option<Instant>,
}

impl MultiDiscovering {
    pub(super) fn weight(&self) -> usize {
        self.params.targets.len()
    }

    pub(super) fn service(&self) -> &str {
        &self.service
    }

    pub(super) fn accept(&self) -> &str {
        &self.accept
    }

    pub(super) fn locating(&self) -> Option<Instant> {
        self.locating
    }
}

/// Where one target stands after its own reference was checked.
#[derive(Debug, PartialEq)]
enum Resolution {
    /// Its `netns` can be used as it is.
    Ready,
    /// It must be looked up with the discovery service by name and prefix.
    Lookup,
    Refused(String),
}

/// Checks one target's reference, as a single capture's is checked: a
/// stale pid/start time makes its `netns` unknown; an unknown `netns` needs
/// a name to look up.
fn resolve_target(id: u64, label: &str, t: &mut Target) -> Resolution {
    if t.netns != 0 && is_stale(t, process_starttime) {
        info!(
            "[c{id}] target {label}: reference to pid {} is stale; netns {} is not trusted",
            t.pid, t.netns
        );
        t.netns = 0;
    }
    if t.netns != 0 {
        Resolution::Ready
    } else if t.name.is_empty() {
        Resolution::Refused(format!(
            "capture refused: target {label} has no valid netns and no name to look up"
        ))
    } else {
        Resolution::Lookup
    }
}

impl Session {
    pub(super) fn start_multi(&mut self, ctx: &mut Ctx, mut params: MultiParams, accept: String) {
        let n = params.targets.len();
        if ctx.captures + n > ctx.cfg.max_captures {
            let reason = format!(
                "capture refused: {n} targets would exceed this service's maximum of {} captures",
                ctx.cfg.max_captures
            );
            metrics::refused(Refusal::Limit);
            return self.refuse(ctx, &accept, ws::TRY_AGAIN_LATER, &reason);
        }
        let labels = target_labels(&params.targets);
        let mut lookup = false;
        for (t, label) in params.targets.iter_mut().zip(&labels) {
            match resolve_target(self.id, label, t) {
                Resolution::Ready => {}
                Resolution::Lookup => lookup = true,
                Resolution::Refused(reason) => {
                    metrics::refused(Refusal::Parameters);
                    return self.refuse(ctx, &accept, ws::POLICY_VIOLATION, &reason);
                }
            }
        }
        if !lookup {
            let now = ctx.now;
            return self.spawn_multi_at(ctx, params, &accept, now);
        }
        // One listing answers every stale target: it holds them all, and
        // the exchange is shared with every other capture asking meanwhile.
        let service = service_name(ctx.cfg);
        info!(
            "[c{}] looking up {} targets with the discovery service at {service}",
            self.id,
            params.targets.iter().filter(|t| t.netns == 0).count()
        );
        let d = MultiDiscovering {
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
            Some(listing) => self.multi_discovered(ctx, d, listing),
            None => {
                self.arm(ctx, ctx.cfg.discovery_timeout);
                self.phase = Phase::MultiDiscovering(Box::new(d));
            }
        }
    }

    /// The shared listing this multi-target capture waited for is here.
    pub(super) fn on_multi_listing(
        &mut self,
        ctx: &mut Ctx,
        listing: Result<Arc<ParsedListing>, DiscoveryError>,
    ) {
        let Phase::MultiDiscovering(d) = std::mem::replace(&mut self.phase, Phase::Flush) else {
            return;
        };
        self.deadline = None;
        self.multi_discovered(ctx, *d, listing);
    }

    /// The namespace scan a multi-target capture waited for has run.
    pub(super) fn on_multi_rescanned(&mut self, ctx: &mut Ctx) {
        let Phase::MultiDiscovering(d) = std::mem::replace(&mut self.phase, Phase::Flush) else {
            return;
        };
        let asked_at = d.locating.unwrap_or(ctx.now);
        self.spawn_multi_at(ctx, d.params, &d.accept, asked_at);
    }

    fn multi_discovered(
        &mut self,
        ctx: &mut Ctx,
        d: MultiDiscovering,
        listing: Result<Arc<ParsedListing>, DiscoveryError>,
    ) {
        let MultiDiscovering {
            mut params,
            accept,
            service,
            started,
            ..
        } = d;
        let listing = match listing {
            Ok(l) => l,
            Err(e) => {
                metrics::lookup(
                    super::capture::lookup_outcome(&Err(e.clone())),
                    ctx.now - started,
                );
                metrics::refused(Refusal::Discovery);
                return self.refuse(ctx, &accept, ws::INTERNAL_ERROR, &e.describe(&service));
            }
        };
        let labels = target_labels(&params.targets);
        for (t, label) in params.targets.iter_mut().zip(&labels) {
            if t.netns != 0 {
                continue;
            }
            let found = listing.find(&t.name, &t.prefix);
            if found.is_err() {
                metrics::lookup(super::capture::lookup_outcome(&found), ctx.now - started);
            }
            match found {
                Ok(mut found) if found.netns != 0 => {
                    info!(
                        "[c{}] discovery service names netns {} for target {label}",
                        self.id, found.netns
                    );
                    if !t.network_interfaces.is_empty() {
                        found.network_interfaces = std::mem::take(&mut t.network_interfaces);
                    }
                    *t = found;
                }
                Ok(_) => {
                    let reason = format!(
                        "capture refused: the discovery service lists target {label} without a network namespace"
                    );
                    metrics::refused(Refusal::Discovery);
                    return self.refuse(ctx, &accept, ws::POLICY_VIOLATION, &reason);
                }
                Err(e) => {
                    let code = match e {
                        DiscoveryError::NotListed { .. } => ws::POLICY_VIOLATION,
                        _ => ws::INTERNAL_ERROR,
                    };
                    let reason = format!("target {label}: {}", e.describe(&service));
                    metrics::refused(Refusal::Discovery);
                    return self.refuse(ctx, &accept, code, &reason);
                }
            }
        }
        metrics::lookup(metrics::Lookup::Found, ctx.now - started);
        self.spawn_multi_at(ctx, params, &accept, ctx.now);
    }

    /// Locates every namespace first (all held until their program has
    /// entered them), then starts every program; a target that cannot be
    /// located refuses the request before anything is spawned.
    fn spawn_multi_at(
        &mut self,
        ctx: &mut Ctx,
        params: MultiParams,
        accept: &str,
        asked_at: Instant,
    ) {
        let id = self.id;
        if let Some(reason) = ctx.privileges.refusal() {
            metrics::refused(Refusal::Privileges);
            return self.refuse(ctx, accept, ws::INTERNAL_ERROR, &reason);
        }
        // Labels after discovery: a looked-up target may have got its name.
        let labels = target_labels(&params.targets);
        let mut located = Vec::with_capacity(params.targets.len());
        // What was kept out of a target in the service's own namespace.
        let mut excluded = None;
        for (t, label) in params.targets.iter().zip(&labels) {
            let found = ctx
                .namespaces
                .find(t.netns, t.pid, asked_at, ctx.now, (self.key, self.id));
            let ns = match found {
                Found::Held(ns) => ns,
                Found::Wait => {
                    // Not found where it was last seen: every target waits
                    // for the next namespace scan, then all are located again.
                    self.phase = Phase::MultiDiscovering(Box::new(MultiDiscovering {
                        params,
                        accept: accept.to_string(),
                        service: service_name(ctx.cfg),
                        started: ctx.now,
                        locating: Some(asked_at),
                    }));
                    return;
                }
                Found::Missing(reason) => {
                    let reason = format!("capture refused: target {label}: {reason}");
                    metrics::refused(Refusal::Namespace);
                    return self.refuse(ctx, accept, ws::POLICY_VIOLATION, &reason);
                }
            };
            let single = CaptureParams {
                target: t.clone(),
                described: true,
                nifs: params.nifs.clone(),
                filter: params.filter.clone(),
                chaste: params.chaste,
            };
            // nif is absent, any or all here: each target's own interfaces,
            // every one checked against its namespace like a single target's.
            let wanted = match single.interfaces() {
                Ok(i) => i,
                Err(reason) => {
                    let reason = format!("capture refused: target {label}: {reason}");
                    metrics::refused(Refusal::Parameters);
                    return self.refuse(ctx, accept, ws::POLICY_VIOLATION, &reason);
                }
            };
            let interfaces = match super::capture::check_interfaces(&ns, &wanted, &single) {
                Ok(c) => {
                    if !c.skipped.is_empty() {
                        info!(
                            "[c{id}] target {}: skipping interfaces of its list that do not exist in its namespace: {}",
                            label,
                            c.skipped.join("/")
                        );
                    }
                    c.interfaces
                }
                Err((code, reason)) => {
                    let reason = reason.replacen(
                        "capture refused: ",
                        &format!("capture refused: target {label}: "),
                        1,
                    );
                    metrics::refused(Refusal::Namespace);
                    return self.refuse(ctx, accept, code, &reason);
                }
            };
            let filter = match own_exclusion(ctx.cfg, &self.conn, self.peer, t.netns) {
                Some((own, what)) => {
                    excluded = Some(what);
                    Some(crate::selfexcl::combined_filter(
                        params.filter.as_deref(),
                        &own,
                    ))
                }
                None => params.filter.clone(),
            };
            located.push((
                ns,
                capture_args(&interfaces, filter.as_deref(), params.chaste),
            ));
        }
        let infos: Vec<(String, &Target)> = labels
            .iter()
            .map(|l| format!("{l}/"))
            .zip(&params.targets)
            .collect();
        let mut doc = targets_document(
            &infos
                .iter()
                .map(|(prefix, t)| {
                    (
                        prefix.as_str(),
                        TargetInfo {
                            container_name: &t.name,
                            container_type: &t.kind,
                            node_name: &t.node_name,
                            cluster_uid: t.cluster.as_ref().map(|c| c.uid.as_str()),
                            ..TargetInfo::default()
                        },
                    )
                })
                .collect::<Vec<_>>(),
            params.filter.as_deref(),
            params.chaste,
        );
        if let Some(what) = &excluded {
            crate::pcapng::push_document_key(&mut doc, crate::selfexcl::DOCUMENT_KEY, what);
        }
        let mut multi = Box::new(MultiCapture {
            programs: Vec::with_capacity(located.len()),
            merger: Merger::new(labels.iter().cloned(), doc),
            reader: FrameReader::new(),
            ending: MultiEnding::Running,
            paused: false,
            client_paused: false,
            paused_since: None,
            scratch: Vec::new(),
            parts: Vec::new(),
        });
        let program = &ctx.cfg.capture_program;
        let mut failure = None;
        for (i, ((ns, args), label)) in located.into_iter().zip(&labels).enumerate() {
            let mut spawned = match spawn(program, &args, &ns.file, ctx.privileges.ambient) {
                Ok(s) => s,
                Err(e) => {
                    let reason = format!(
                        "target {label}: cannot start capture program {}: {e}",
                        program.display()
                    );
                    warn!("[c{id}] {reason}");
                    failure = Some(reason);
                    break;
                }
            };
            drop(ns);
            ctx.children.insert(spawned.pid.as_raw(), self.key);
            info!(
                "[c{id}] capture of target {label} started: pid {}, {} {}",
                spawned.pid,
                program.display(),
                args.join(" ")
            );
            let registered = ctx
                .registry
                .register(
                    &mut spawned.stdout,
                    token(self.key, pipe_role(i, false)),
                    Interest::READABLE,
                )
                .and_then(|()| {
                    ctx.registry.register(
                        &mut spawned.stderr,
                        token(self.key, pipe_role(i, true)),
                        Interest::READABLE,
                    )
                });
            multi.programs.push(Program {
                label: label.clone(),
                pid: spawned.pid,
                alive: true,
                status: None,
                stdout: Some(spawned.stdout),
                stderr: Some(spawned.stderr),
                err: ErrLines::default(),
                broken: None,
                term_sent: false,
                stopped: false,
                kill_at: None,
                kill_sent: false,
            });
            if let Err(e) = registered {
                warn!("[c{id}] cannot watch target {label}'s capture output: {e}");
                failure = Some(format!(
                    "internal error: cannot watch target {label}'s output"
                ));
                break;
            }
        }
        let sent = self.conn.send(&http::switching_protocols(accept));
        if let Some(reason) = failure {
            // All start or none does: the ones started are stopped, and the
            // client hears why once they are reaped.
            multi.ending = MultiEnding::Refused(ws::INTERNAL_ERROR, reason);
            for p in &mut multi.programs {
                p.stdout = None;
                p.stderr = None;
            }
            self.phase = Phase::Multi(multi);
            self.terminate_all(ctx);
            return self.check_end_multi(ctx);
        }
        metrics::CAPTURES_STARTED.add(multi.programs.len() as u64);
        // The merged SHB goes out at once: the client has a valid section
        // before the first packet.
        if let Some(header) = multi.merger.take_header() {
            if sent.is_ok() {
                if let Err(e) = send_message(&mut self.conn, &header) {
                    self.phase = Phase::Multi(multi);
                    return self.client_broke(ctx, e);
                }
            }
        }
        self.phase = Phase::Multi(multi);
        if let Err(e) = sent {
            return self.client_broke(ctx, e);
        }
        let early = std::mem::take(&mut self.early);
        if !early.is_empty() {
            self.feed_client_frames(ctx, &early);
        }
    }

    // ---- output ------------------------------------------------------------

    /// An event on one of the per-target pipes.
    pub(super) fn on_multi_pipe(&mut self, ctx: &mut Ctx, role: usize) {
        let i = (role - MULTI_ROLES) / 2;
        if (role - MULTI_ROLES) % 2 == 0 {
            self.pump_multi(ctx, i);
        } else {
            self.pump_multi_stderr(ctx, i);
        }
        self.check_end_multi(ctx);
    }

    /// Reads target `i`'s output and relays the merged blocks.
    fn pump_multi(&mut self, ctx: &mut Ctx, i: usize) {
        let Phase::Multi(m) = &mut self.phase else {
            return;
        };
        let conn = &mut self.conn;
        let forwarding = m.ending.forwards();
        let mut reads = 0;
        let mut broke = None;
        let mut ended = false;
        while let Some(pipe) = m.programs.get_mut(i).and_then(|p| p.stdout.as_mut()) {
            if forwarding && conn.pending() >= HIGH_WATER {
                // Every pipe of the capture waits for the client.
                if !m.paused {
                    m.paused_since = Some(ctx.now);
                }
                m.paused = true;
                break;
            }
            if reads == READS_PER_TURN {
                ctx.again
                    .push((token(self.key, pipe_role(i, false)), self.id));
                break;
            }
            reads += 1;
            let n = match pipe.read(ctx.buf) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(
                        "[c{}] reading target {i}'s capture output failed: {e}",
                        self.id
                    );
                    ended = true;
                    break;
                }
            };
            if !forwarding {
                continue;
            }
            m.scratch.clear();
            m.parts.clear();
            let chunk = &mut ctx.buf[..n];
            if let Err(e) = m.merger.feed_parts(i, chunk, &mut m.scratch, &mut m.parts) {
                let p = &mut m.programs[i];
                warn!(
                    "[c{}] target {}: {e}; its output is left out",
                    self.id, p.label
                );
                p.broken = Some(e.0);
                ended = true;
            }
            if !m.parts.is_empty() {
                if let Err(e) = send_merged(conn, chunk, &m.scratch, &m.parts) {
                    broke = Some(e);
                    break;
                }
            }
            if ended {
                break;
            }
        }
        if ended {
            if let Err(e) = m.merger.finish(i) {
                if m.programs[i].broken.is_none() {
                    m.programs[i].broken = Some(e.0);
                }
            }
            if let Some(p) = m.programs.get_mut(i) {
                p.stdout = None;
            }
        }
        if let Some(e) = broke {
            self.client_broke(ctx, e);
        }
    }

    fn pump_multi_stderr(&mut self, ctx: &mut Ctx, i: usize) {
        let Phase::Multi(m) = &mut self.phase else {
            return;
        };
        let Some(p) = m.programs.get_mut(i) else {
            return;
        };
        let mut reads = 0;
        while let Some(pipe) = p.stderr.as_mut() {
            if reads == READS_PER_TURN {
                ctx.again
                    .push((token(self.key, pipe_role(i, true)), self.id));
                break;
            }
            reads += 1;
            match pipe.read(ctx.buf) {
                Ok(0) => {
                    p.stderr = None;
                    let (id, label) = (self.id, &p.label);
                    p.err.finish(|l| logged_stderr(id, label, l));
                }
                Ok(n) => {
                    let (id, label) = (self.id, &p.label);
                    p.err.feed(&ctx.buf[..n], |l| logged_stderr(id, label, l));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => p.stderr = None,
            }
        }
    }

    /// The client took enough of its queue: every pipe is read again.
    pub(super) fn resume_multi(&mut self, ctx: &mut Ctx) {
        let n = match &mut self.phase {
            Phase::Multi(m)
                if (m.paused || m.client_paused) && self.conn.pending() <= LOW_WATER =>
            {
                if std::mem::take(&mut m.client_paused) {
                    ctx.again.push((token(self.key, CLIENT), self.id));
                }
                if std::mem::take(&mut m.paused) {
                    if let Some(since) = m.paused_since.take() {
                        metrics::paused_for(ctx.now.saturating_duration_since(since));
                    }
                    m.programs.len()
                } else {
                    0
                }
            }
            _ => return,
        };
        for i in 0..n {
            self.pump_multi(ctx, i);
        }
        self.check_end_multi(ctx);
    }

    // ---- client frames ---------------------------------------------------

    pub(super) fn read_frames_multi(&mut self, ctx: &mut Ctx) {
        let mut reads = 0;
        loop {
            // Pongs count against the same bound as the stream: a client
            // that pings without reading is not read until it takes them.
            if self.conn.pending() >= HIGH_WATER {
                if let Phase::Multi(m) = &mut self.phase {
                    m.client_paused = true;
                }
                break;
            }
            match self.read_client(ctx, &mut reads) {
                Ok(0) => {
                    if let Phase::Multi(m) = &mut self.phase {
                        if !matches!(m.ending, MultiEnding::Refused(..)) {
                            m.ending = MultiEnding::ClientGone;
                        }
                    }
                    self.terminate_all(ctx);
                    break;
                }
                Ok(n) => {
                    let bytes = ctx.buf[..n].to_vec();
                    self.feed_client_frames(ctx, &bytes);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return self.client_broke(ctx, e),
            }
        }
        self.check_end_multi(ctx);
    }

    fn feed_client_frames(&mut self, ctx: &mut Ctx, bytes: &[u8]) {
        let Phase::Multi(m) = &mut self.phase else {
            return;
        };
        if m.reader.is_done() {
            return;
        }
        let mut replies = Vec::new();
        let event = m.reader.feed(bytes, &mut replies);
        if !replies.is_empty() && m.ending.forwards() {
            if let Err(e) = self.conn.send(&replies) {
                return self.client_broke(ctx, e);
            }
        }
        let Phase::Multi(m) = &mut self.phase else {
            return;
        };
        match event {
            None => return,
            Some(Inbound::Close { code, .. }) => {
                info!(
                    "[c{}] client closed the capture of several targets",
                    self.id
                );
                if m.ending.forwards() {
                    m.ending = MultiEnding::ClientClosed(code);
                }
            }
            Some(Inbound::Violation { code, reason }) => {
                info!(
                    "[c{}] client broke the websocket protocol: {reason}",
                    self.id
                );
                if m.ending.forwards() {
                    m.ending = MultiEnding::Violation(code, reason);
                }
            }
        }
        self.terminate_all(ctx);
        self.check_end_multi(ctx);
    }

    // ---- ending --------------------------------------------------------

    /// SIGTERM to every program still running (see `multi_timer`).
    fn terminate_all(&mut self, ctx: &mut Ctx) {
        let Phase::Multi(m) = &mut self.phase else {
            return;
        };
        for p in &mut m.programs {
            p.stopped |= p.alive && !p.term_sent;
            terminate_program(p, ctx, self.id);
        }
        self.arm_multi(ctx);
    }

    /// The session's deadline: the soonest SIGTERM repeat or SIGKILL due.
    fn arm_multi(&mut self, ctx: &mut Ctx) {
        let Phase::Multi(m) = &self.phase else {
            return;
        };
        let next = m
            .programs
            .iter()
            .filter(|p| p.alive && p.term_sent && !p.kill_sent)
            .filter_map(|p| match term_step(p.kill_at?, ctx.now) {
                TermStep::Repeat(at) => Some(at),
                TermStep::Kill => Some(ctx.now),
            })
            .min();
        if let Some(at) = next {
            if self.deadline.is_none_or(|d| d > at || d <= ctx.now) {
                self.arm(ctx, at.saturating_duration_since(ctx.now));
            }
        }
    }

    pub(super) fn multi_timer(&mut self, ctx: &mut Ctx) {
        let id = self.id;
        match &mut self.phase {
            Phase::Multi(m) => {
                // The deadline is the soonest of the programs': one that is
                // not due yet gets its repeated SIGTERM a little early.
                for p in m.programs.iter_mut().filter(|p| p.alive && p.term_sent) {
                    if p.kill_sent {
                        continue;
                    }
                    match term_step(p.kill_at.unwrap_or(ctx.now), ctx.now) {
                        TermStep::Repeat(_) => {
                            let _ = kill(p.pid, Signal::SIGTERM);
                        }
                        TermStep::Kill => {
                            warn!(
                                "[c{id}] target {}: capture program {} ignored SIGTERM; killing it",
                                p.label, p.pid
                            );
                            let _ = kill(p.pid, Signal::SIGKILL);
                            p.kill_sent = true;
                        }
                    }
                }
                self.arm_multi(ctx);
            }
            Phase::MultiDiscovering(d) => {
                let reason = DiscoveryError::TimedOut.describe(d.service());
                let accept = d.accept().to_string();
                self.refuse(ctx, &accept, ws::INTERNAL_ERROR, &reason);
            }
            _ => {}
        }
    }

    /// A program of this capture was reaped.
    pub(super) fn on_multi_exit(&mut self, ctx: &mut Ctx, pid: Option<Pid>, status: WaitStatus) {
        let Phase::Multi(m) = &mut self.phase else {
            return;
        };
        let forwards = m.ending.forwards();
        if let Some(p) = m
            .programs
            .iter_mut()
            .find(|p| Some(p.pid) == pid && p.alive)
        {
            p.alive = false;
            p.status = Some(status);
            info!(
                "[c{}] target {}: capture program reaped: {status:?}",
                self.id, p.label
            );
            if !forwards {
                p.stdout = None;
                p.stderr = None;
            }
        }
        self.check_end_multi(ctx);
    }

    pub(super) fn shutdown_multi(&mut self, ctx: &mut Ctx) {
        if let Phase::Multi(m) = &mut self.phase {
            if m.ending.forwards() {
                m.ending = MultiEnding::Shutdown;
            }
        }
        self.terminate_all(ctx);
        self.check_end_multi(ctx);
    }

    pub(super) fn multi_client_broke(&mut self, ctx: &mut Ctx) {
        if let Phase::Multi(m) = &mut self.phase {
            m.ending = MultiEnding::ClientGone;
            for p in &mut m.programs {
                if !p.alive {
                    p.stdout = None;
                    p.stderr = None;
                }
            }
        }
        self.terminate_all(ctx);
        self.check_end_multi(ctx);
    }

    /// Decides, after any change, whether the capture is over: a program
    /// whose output ended is stopped; once every program is reaped (and,
    /// while relaying, every pipe drained) the client gets the close.
    pub(super) fn check_end_multi(&mut self, ctx: &mut Ctx) {
        let Phase::Multi(m) = &mut self.phase else {
            return;
        };
        let mut stopped = false;
        for p in &mut m.programs {
            if p.alive && p.stdout.is_none() && !p.term_sent {
                // Nothing more will come from it; the others go on.
                terminate_program(p, ctx, self.id);
                stopped = true;
            }
        }
        if stopped {
            self.arm_multi(ctx);
        }
        let Phase::Multi(m) = &mut self.phase else {
            return;
        };
        if m.any_alive() {
            return;
        }
        let draining = m
            .programs
            .iter()
            .any(|p| p.stdout.is_some() || p.stderr.is_some());
        if m.ending.forwards() && draining {
            return;
        }
        if let Some(since) = m.paused_since.take() {
            metrics::paused_for(ctx.now.saturating_duration_since(since));
        }
        match &m.ending {
            MultiEnding::Running => metrics::ended(metrics::End::ProgramEnded),
            MultiEnding::ClientClosed(_) => metrics::ended(metrics::End::ClientClosed),
            MultiEnding::ClientGone => metrics::ended(metrics::End::ClientGone),
            MultiEnding::Violation(..) => metrics::ended(metrics::End::Violation),
            MultiEnding::Shutdown => metrics::ended(metrics::End::Shutdown),
            // Never ran as a whole: counted as refused instead.
            MultiEnding::Refused(..) => metrics::refused(Refusal::Program),
        }
        let outcomes: Vec<(String, String)> = m
            .programs
            .iter()
            .map(|p| (p.label.clone(), p.outcome()))
            .collect();
        let pairs: Vec<(&str, &str)> = outcomes
            .iter()
            .map(|(l, o)| (l.as_str(), o.as_str()))
            .collect();
        let reason = outcomes_reason(&pairs);
        let (code, reason) = match &m.ending {
            MultiEnding::Running => {
                let failed = m.programs.iter().any(Program::failed);
                (
                    if failed {
                        ws::INTERNAL_ERROR
                    } else {
                        ws::NORMAL
                    },
                    reason,
                )
            }
            MultiEnding::Shutdown => (
                ws::GOING_AWAY,
                "the capture service is shutting down".into(),
            ),
            MultiEnding::ClientClosed(code) => {
                // Answered only now: every program has been reaped.
                let code = code.unwrap_or(ws::NORMAL);
                return self.answer_close(ctx, code, &reason);
            }
            MultiEnding::ClientGone => return self.client_gone(),
            MultiEnding::Violation(code, why) => (*code, why.to_string()),
            MultiEnding::Refused(code, why) => (*code, why.clone()),
        };
        info!(
            "[c{}] capture of several targets ended: {code} {reason}",
            self.id
        );
        self.send_close(ctx, code, &reason);
    }
}

/// Most pieces one merged message is sent in without copying; a read that
/// the merger cut into more (blocks it rebuilt between blocks it passed)
/// is joined into one buffer first. 64 KiB of 1500-byte packets is one
/// piece, or a few around a block that spanned reads.
const MAX_PARTS: usize = 32;

/// One read's merged blocks as one binary message: the websocket header and
/// the pieces (ranges of the read buffer and of what the merger made) in
/// one `writev`, with no copy when the socket takes them.
fn send_merged(conn: &mut Conn, chunk: &[u8], made: &[u8], parts: &[Part]) -> io::Result<()> {
    let piece = |p: &Part| match *p {
        Part::Input(s, e) => &chunk[s..e],
        Part::Owned(s, e) => &made[s..e],
    };
    let len: usize = parts.iter().map(|p| piece(p).len()).sum();
    let mut head = [0u8; ws::MAX_SERVER_HEADER];
    let n = ws::binary_header(len, &mut head);
    if parts.len() > MAX_PARTS {
        let mut joined = Vec::with_capacity(len);
        for p in parts {
            joined.extend_from_slice(piece(p));
        }
        conn.send_parts(&head[..n], &joined)?;
    } else {
        let mut slices: [&[u8]; MAX_PARTS + 1] = [&[]; MAX_PARTS + 1];
        slices[0] = &head[..n];
        for (s, p) in slices[1..].iter_mut().zip(parts) {
            *s = piece(p);
        }
        conn.send_slices(&slices[..parts.len() + 1])?;
    }
    metrics::BYTES_RELAYED.add(len as u64);
    Ok(())
}

fn terminate_program(p: &mut Program, ctx: &mut Ctx, id: u64) {
    if !p.alive || p.term_sent {
        return;
    }
    p.term_sent = true;
    debug!(
        "[c{id}] target {}: SIGTERM to capture program {}",
        p.label, p.pid
    );
    let _ = kill(p.pid, Signal::SIGTERM);
    p.kill_at = Some(ctx.now + ctx.cfg.term_timeout);
}

fn logged_stderr(id: u64, label: &str, line: &str) {
    debug!("[c{id}] target {label}: capture program: {line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_without_netns_or_name_is_refused_by_label() {
        let mut t = Target::default();
        match resolve_target(1, "netns-0", &mut t) {
            Resolution::Refused(r) => assert!(r.contains("target netns-0"), "{r}"),
            other => panic!("{other:?}"),
        }
        t.name = "web".into();
        assert_eq!(resolve_target(1, "web", &mut t), Resolution::Lookup);
        t.netns = 4026531840;
        assert_eq!(resolve_target(1, "web", &mut t), Resolution::Ready);
    }

    #[test]
    fn a_stale_reference_needs_a_lookup() {
        let mut t = Target {
            netns: 4026531840,
            pid: u32::MAX - 1,
            starttime: 5,
            name: "web".into(),
            ..Target::default()
        };
        assert_eq!(resolve_target(1, "web", &mut t), Resolution::Lookup);
        assert_eq!(t.netns, 0);
    }

    #[test]
    fn pipe_roles_fit_the_role_bits_for_the_most_targets() {
        let top = pipe_role(crate::multi::MAX_TARGETS_LIMIT - 1, true);
        assert!(top < 1 << ROLE_BITS);
        assert_eq!(pipe_role(0, false), MULTI_ROLES);
    }
}
