//! Starting a capture: its targets resolved ([`super::resolve`]), looked up
//! with the discovery service when a reference is stale (one listing for
//! every target), every namespace located and its interfaces checked, then
//! one program per target started: all, or none keeps running. Then the
//! events of the running capture ([`super::capture`]).

use std::sync::Arc;
use std::time::Instant;

use log::{info, warn};

use super::capture::{send_header, Capture, Close, Ending, Merging, Program, Relay};
use super::resolve::{resolve, stale, Resolved};
use super::{service_name, Action, Cx, Env, ExitStatus, Located, Out, Phase, Refusal, Session};
use crate::metrics;
use crate::proto::discovery::{DiscoveryError, ParsedListing};
use crate::proto::http::{self, Request};
use crate::proto::merge::Merger;
use crate::proto::params::{capture_params_limited, CaptureParams, Limits, Nifs};
use crate::proto::pcapng::{
    push_document_key, target_document, targets_document, ShbEditor, TargetInfo,
};
use crate::proto::target::Target;
use crate::proto::ws::{self, FrameReader};

/// Client bytes kept while a capture starts (frames sent behind the
/// handshake); a well-behaved client sends none or a close frame.
const MAX_EARLY_FRAMES: usize = 4096;

/// Where a starting capture stands.
enum Step {
    /// Waiting for the discovery service's listing.
    Discovering { deadline: Instant },
    /// Locating namespace after namespace (the driver answers at once):
    /// the capture program's arguments of those located so far.
    Locating {
        asked_at: Instant,
        args: Vec<Vec<String>>,
        excluded: Option<String>,
    },
    /// A namespace was not where it was last seen: every target is located
    /// again after the next namespace scan.
    Rescan { asked_at: Instant },
    /// Starting program after program (the driver answers at once).
    Spawning {
        args: Vec<Vec<String>>,
        relay: Relay,
        programs: Vec<Program>,
    },
}

pub(super) struct Start {
    targets: Vec<Target>,
    /// What `/proc` said of each target's process reference.
    proc_starttimes: Vec<Option<u64>>,
    /// Labels of a capture of several targets; `None` for one target.
    labels: Option<Vec<String>>,
    described: bool,
    nifs: Nifs,
    filter: Option<String>,
    chaste: bool,
    accept: String,
    /// Client bytes behind the handshake (a close frame, say): fed to the
    /// capture's frame reader, or to the closing one if it is refused.
    early: Vec<u8>,
    /// When the request came, for the lookup duration metric.
    started: Instant,
    step: Step,
}

impl Start {
    pub(super) fn weight(&self) -> usize {
        self.targets.len()
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        match self.step {
            Step::Discovering { deadline } => Some(deadline),
            _ => None,
        }
    }

    pub(super) fn keep_early(&mut self, data: &[u8]) {
        let room = MAX_EARLY_FRAMES.saturating_sub(self.early.len());
        self.early.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn label(&self, i: usize) -> Option<String> {
        self.labels.as_ref().map(|l| l[i].clone())
    }

    /// Target `i` as one target's parameters (its interfaces are read as a
    /// single capture's are).
    fn params(&self, i: usize) -> CaptureParams {
        CaptureParams {
            target: self.targets[i].clone(),
            described: self.described,
            nifs: self.nifs.clone(),
            filter: self.filter.clone(),
            chaste: self.chaste,
        }
    }
}

impl Session {
    pub(super) fn start_capture(
        &mut self,
        cx: &mut Cx,
        req: &Request,
        accept: String,
        leftover: Vec<u8>,
    ) {
        let env = cx.env;
        let limits = Limits {
            max_target_json: env.cfg.max_target_json,
            max_filter: env.cfg.max_filter,
        };
        let parsed = crate::proto::multi::multi_params(req, &limits, env.cfg.max_targets).and_then(
            |several| match several {
                Some(m) => Ok((m.targets, true, m.nifs, m.filter, m.chaste, true)),
                None => capture_params_limited(req, &limits).map(|p| {
                    (
                        vec![p.target],
                        p.described,
                        p.nifs,
                        p.filter,
                        p.chaste,
                        false,
                    )
                }),
            },
        );
        let (targets, described, nifs, filter, chaste, several) = match parsed {
            Ok(p) => p,
            Err(why) => return self.refuse(cx, &accept, leftover, Refusal::Parameters(why)),
        };
        if several && env.captures + targets.len() > env.cfg.max_captures {
            let r = Refusal::TooManyTargets {
                targets: targets.len(),
                max: env.cfg.max_captures,
            };
            return self.refuse(cx, &accept, leftover, r);
        }
        let proc_starttimes = targets
            .iter()
            .map(|t| match t.netns != 0 && t.pid != 0 && t.starttime != 0 {
                true => (env.starttime)(t.pid),
                false => None,
            })
            .collect();
        let labels = several.then(|| crate::proto::multi::target_labels(&targets));
        let start = Box::new(Start {
            targets,
            proc_starttimes,
            labels,
            described,
            nifs,
            filter,
            chaste,
            accept,
            early: leftover,
            started: env.now,
            step: Step::Discovering {
                deadline: env.now + env.cfg.discovery_timeout,
            },
        });
        let mut lookups = 0;
        for i in 0..start.targets.len() {
            let t = &start.targets[i];
            let label = start.label(i);
            match resolve(
                t,
                described,
                label.as_deref(),
                start.proc_starttimes[i],
                None,
            ) {
                Resolved::Spawn(_) => {}
                Resolved::Discover => {
                    if t.netns != 0 && stale(t, start.proc_starttimes[i]) {
                        info!(
                            "[c{}] {}reference to pid {} is stale (start time differs or process gone); netns {} is not trusted",
                            self.id,
                            label.map(|l| format!("target {l}: ")).unwrap_or_default(),
                            t.pid,
                            t.netns
                        );
                    }
                    lookups += 1;
                }
                Resolved::Refuse(r) => {
                    let Start { accept, early, .. } = *start;
                    return self.refuse(cx, &accept, early, r);
                }
            }
        }
        if lookups == 0 {
            self.phase = Phase::Starting(start);
            return self.locate_all(cx, env.now);
        }
        // One listing answers every stale target: it holds them all, and
        // the exchange is shared with every other capture asking meanwhile.
        let service = service_name(env.cfg);
        match &start.labels {
            None => info!(
                "[c{}] looking up container {:?} (prefix {:?}) with the discovery service at {service}",
                self.id, start.targets[0].name, start.targets[0].prefix
            ),
            Some(_) => info!(
                "[c{}] looking up {lookups} targets with the discovery service at {service}",
                self.id
            ),
        }
        self.phase = Phase::Starting(start);
        self.actions.push_back(Action::WantListing);
    }

    /// The discovery service's listing this session waited for.
    pub fn on_listing(
        &mut self,
        env: &Env,
        out: &mut dyn Out,
        listing: Result<Arc<ParsedListing>, DiscoveryError>,
    ) {
        let Phase::Starting(s) = &mut self.phase else {
            return;
        };
        if !matches!(s.step, Step::Discovering { .. }) {
            return;
        }
        let mut cx = Cx { env, out };
        let service = service_name(env.cfg);
        let took = env.now - s.started;
        for i in 0..s.targets.len() {
            let label = s.label(i);
            let answer = Some((&listing, service.as_str()));
            let t = &s.targets[i];
            let was = t.netns != 0 && !stale(t, s.proc_starttimes[i]);
            match resolve(
                t,
                s.described,
                label.as_deref(),
                s.proc_starttimes[i],
                answer,
            ) {
                Resolved::Spawn(found) => {
                    if !was {
                        match &label {
                            None => info!(
                                "[c{}] discovery service names netns {} for {:?}",
                                self.id, found.netns, found.name
                            ),
                            Some(l) => info!(
                                "[c{}] discovery service names netns {} for target {l}",
                                self.id, found.netns
                            ),
                        }
                        // Checked against what the listing says from here on.
                        s.proc_starttimes[i] = None;
                        s.targets[i] = found;
                    }
                }
                // Never with a listing given.
                Resolved::Discover => {}
                Resolved::Refuse(r) => {
                    let outcome = match &r {
                        Refusal::Discovery { error, .. } => lookup_outcome(error),
                        _ => metrics::Lookup::Found,
                    };
                    metrics::lookup(outcome, took);
                    return self.refuse_start(&mut cx, r);
                }
            }
        }
        metrics::lookup(metrics::Lookup::Found, took);
        self.locate_all(&mut cx, env.now);
    }

    /// The namespace scan a lookup waited for has run: every target is
    /// located again.
    pub fn on_rescanned(&mut self, env: &Env, out: &mut dyn Out) {
        let Phase::Starting(s) = &self.phase else {
            return;
        };
        let Step::Rescan { asked_at } = s.step else {
            return;
        };
        let mut cx = Cx { env, out };
        self.locate_all(&mut cx, asked_at);
    }

    pub(super) fn start_timeout(&mut self, cx: &mut Cx) {
        let Phase::Starting(s) = &self.phase else {
            return;
        };
        metrics::lookup(metrics::Lookup::TimedOut, cx.env.now - s.started);
        let r = Refusal::Discovery {
            error: DiscoveryError::TimedOut,
            service: service_name(cx.env.cfg),
            target: None,
        };
        self.refuse_start(cx, r);
    }

    /// Locates every namespace first (each held until its program has
    /// entered it); a target that cannot be located refuses the request
    /// before anything is spawned.
    fn locate_all(&mut self, cx: &mut Cx, asked_at: Instant) {
        if let Some(why) = cx.env.no_capture {
            return self.refuse_start(cx, Refusal::Privileges(why.to_string()));
        }
        let Phase::Starting(s) = &mut self.phase else {
            return;
        };
        // Labels after discovery: a looked-up target may have got its name.
        if s.labels.is_some() {
            s.labels = Some(crate::proto::multi::target_labels(&s.targets));
        }
        s.step = Step::Locating {
            asked_at,
            args: Vec::with_capacity(s.targets.len()),
            excluded: None,
        };
        self.locate_next(cx);
    }

    /// Asks for the next target's namespace, or starts the programs once
    /// every one is held.
    fn locate_next(&mut self, cx: &mut Cx) {
        let Phase::Starting(s) = &mut self.phase else {
            return;
        };
        let Step::Locating { asked_at, args, .. } = &s.step else {
            return;
        };
        let i = args.len();
        if i == s.targets.len() {
            return self.spawn_all(cx);
        }
        let asked_at = *asked_at;
        let wanted = match s.params(i).interfaces() {
            Ok(w) => w,
            Err(why) => {
                let r = Refusal::Namespace {
                    why,
                    target: s.label(i),
                };
                return self.refuse_start(cx, r);
            }
        };
        let t = &s.targets[i];
        self.actions.push_back(Action::Locate {
            target: i,
            netns: t.netns,
            pid: t.pid,
            asked_at,
            links: !wanted.is_empty(),
        });
    }

    /// Where target `target`'s namespace lookup ended.
    pub fn on_located(&mut self, env: &Env, out: &mut dyn Out, target: usize, found: Located) {
        let Phase::Starting(s) = &mut self.phase else {
            return;
        };
        let Step::Locating { asked_at, args, .. } = &s.step else {
            return;
        };
        if args.len() != target {
            return;
        }
        let asked_at = *asked_at;
        let mut cx = Cx { env, out };
        let label = s.label(target);
        let links = match found {
            Located::Held { links } => links,
            Located::Missing(why) => {
                let r = Refusal::Namespace { why, target: label };
                return self.refuse_start(&mut cx, r);
            }
            Located::Wait => {
                s.step = Step::Rescan { asked_at };
                return;
            }
        };
        let params = s.params(target);
        let interfaces = match check_interfaces(&params, links, label.as_deref()) {
            Ok(c) => {
                if !c.skipped.is_empty() {
                    match &label {
                        None => info!(
                            "[c{}] skipping interfaces of the target's list that do not exist in netns {}: {}",
                            self.id,
                            params.target.netns,
                            c.skipped.join("/")
                        ),
                        Some(l) => info!(
                            "[c{}] target {l}: skipping interfaces of its list that do not exist in its namespace: {}",
                            self.id,
                            c.skipped.join("/")
                        ),
                    }
                }
                c.interfaces
            }
            Err(r) => return self.refuse_start(&mut cx, r),
        };
        // The document shows the user's filter; the program also excludes
        // this capture's own connection when it runs in our namespace.
        let own =
            (!env.cfg.no_self_exclusion && env.own_netns == Some(params.target.netns)).then(|| {
                (
                    crate::proto::selfexcl::own_connection_filter(self.local, self.peer),
                    crate::proto::selfexcl::describe(self.local, self.peer),
                )
            });
        let Step::Locating { args, excluded, .. } = &mut s.step else {
            return;
        };
        let filter = match own {
            Some((clause, what)) => {
                *excluded = Some(what);
                Some(crate::proto::selfexcl::combined_filter(
                    params.filter.as_deref(),
                    &clause,
                ))
            }
            None => params.filter.clone(),
        };
        args.push(crate::proto::capture::capture_args(
            &interfaces,
            filter.as_deref(),
            params.chaste,
        ));
        self.locate_next(&mut cx);
    }

    /// Every namespace is held: the stream's document and relay, then the
    /// programs one by one.
    fn spawn_all(&mut self, cx: &mut Cx) {
        let Phase::Starting(s) = &mut self.phase else {
            return;
        };
        let Step::Locating { args, excluded, .. } = std::mem::replace(
            &mut s.step,
            Step::Rescan {
                asked_at: cx.env.now,
            },
        ) else {
            return;
        };
        let relay = match &s.labels {
            None => {
                let t = &s.targets[0];
                let mut doc = target_document(&TargetInfo {
                    container_name: &t.name,
                    container_type: &t.kind,
                    node_name: &t.node_name,
                    cluster_uid: t.cluster.as_ref().map(|c| c.uid.as_str()),
                    capture_filter: s.filter.as_deref(),
                    no_promiscuous: s.chaste,
                });
                if let Some(what) = &excluded {
                    push_document_key(&mut doc, crate::proto::selfexcl::DOCUMENT_KEY, what);
                }
                Relay::Edit(ShbEditor::new(doc))
            }
            Some(labels) => {
                let prefixes: Vec<String> = labels.iter().map(|l| format!("{l}/")).collect();
                let infos: Vec<(&str, TargetInfo)> = prefixes
                    .iter()
                    .zip(&s.targets)
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
                    .collect();
                let mut doc = targets_document(&infos, s.filter.as_deref(), s.chaste);
                if let Some(what) = &excluded {
                    push_document_key(&mut doc, crate::proto::selfexcl::DOCUMENT_KEY, what);
                }
                Relay::Merge(Box::new(Merging {
                    merger: Merger::new(labels.iter().cloned(), doc),
                    scratch: Vec::new(),
                    parts: Vec::new(),
                }))
            }
        };
        let first = args[0].clone();
        s.step = Step::Spawning {
            args,
            relay,
            programs: Vec::with_capacity(s.targets.len()),
        };
        self.actions.push_back(Action::Spawn {
            target: 0,
            args: first,
        });
    }

    /// Target `target`'s program started with `pid` (its pipes watched, or
    /// why not), or could not start.
    pub fn on_spawned(
        &mut self,
        env: &Env,
        out: &mut dyn Out,
        target: usize,
        spawned: Result<(u32, Result<(), String>), String>,
    ) {
        let Phase::Starting(s) = &mut self.phase else {
            return;
        };
        let label = s.label(target);
        let Step::Spawning { args, programs, .. } = &mut s.step else {
            return;
        };
        if programs.len() != target {
            return;
        }
        let program = env.cfg.capture_program.display().to_string();
        let id = self.id;
        let failure = match spawned {
            Ok((pid, watched)) => {
                let t = &s.targets[target];
                match &label {
                    None => info!(
                        "[c{id}] capture started: pid {pid} in netns {} ({}), {program} {}",
                        t.netns,
                        if t.name.is_empty() {
                            "unnamed"
                        } else {
                            t.name.as_str()
                        },
                        args[target].join(" ")
                    ),
                    Some(l) => info!(
                        "[c{id}] capture of target {l} started: pid {pid}, {program} {}",
                        args[target].join(" ")
                    ),
                }
                programs.push(Program::new(label.clone(), pid));
                match watched {
                    Ok(()) => None,
                    Err(e) => {
                        warn!("[c{id}] cannot watch the capture program's output: {e}");
                        Some(Refusal::CannotWatch { target: label })
                    }
                }
            }
            Err(why) => {
                let r = Refusal::Program {
                    program,
                    why,
                    target: label,
                };
                warn!("[c{id}] {}", r.text());
                Some(r)
            }
        };
        if failure.is_none() && programs.len() < args.len() {
            let next = programs.len();
            let args = args[next].clone();
            self.actions.push_back(Action::Spawn { target: next, args });
            return;
        }
        let mut cx = Cx { env, out };
        self.begin_capture(&mut cx, failure);
    }

    /// Every program started (or one failed: `failure`): the upgrade is
    /// answered and the capture runs, or stops what started and tells why
    /// once those are reaped.
    fn begin_capture(&mut self, cx: &mut Cx, failure: Option<Refusal>) {
        let Phase::Starting(s) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        let Start {
            accept,
            early,
            step,
            ..
        } = *s;
        let Step::Spawning {
            relay, programs, ..
        } = step
        else {
            return;
        };
        let mut c = Box::new(Capture {
            id: self.id,
            programs: programs.into(),
            relay,
            reader: FrameReader::new(),
            ending: Ending::Running,
            paused_since: None,
            client_paused: false,
        });
        let sent = cx.out.send(&http::switching_protocols(&accept));
        if let Some(r) = failure {
            // All start or none does: the ones started are stopped, and the
            // client hears why once they are reaped.
            self.actions.push_back(Action::ReleaseNamespaces);
            c.ending = Ending::Refused(Box::new(r));
            c.drop_all_pipes(&mut self.actions);
            c.terminate_all(cx.env, &mut self.actions);
            self.phase = Phase::Capturing(c);
            return self.capture_changed(cx);
        }
        metrics::CAPTURES_STARTED.add(c.programs.len() as u64);
        let header = match &mut c.relay {
            Relay::Merge(m) => m.merger.take_header(),
            Relay::Edit(_) => None,
        };
        self.phase = Phase::Capturing(c);
        if let Err(e) = sent.and_then(|()| match header {
            Some(h) => send_header(cx.out, &h),
            None => Ok(()),
        }) {
            return self.client_broke(cx, e);
        }
        if !early.is_empty() {
            self.capture_frames(cx, &early);
        }
    }

    /// Ends a capture that could not start.
    fn refuse_start(&mut self, cx: &mut Cx, r: Refusal) {
        let Phase::Starting(s) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return;
        };
        self.actions.push_back(Action::ReleaseNamespaces);
        let Start { accept, early, .. } = *s;
        self.refuse(cx, &accept, early, r);
    }

    /// The handshake is accepted so that the client receives the reason in
    /// a close frame.
    pub(super) fn refuse(&mut self, cx: &mut Cx, accept: &str, early: Vec<u8>, r: Refusal) {
        let reason = r.text();
        info!("[c{}] {reason}", self.id);
        r.count();
        let mut bytes = http::switching_protocols(accept);
        bytes.extend_from_slice(&ws::close_frame(r.code(), &reason));
        if let Err(e) = cx.out.send(&bytes) {
            self.phase = Phase::Done;
            return self.client_broke(cx, e);
        }
        let mut reader = FrameReader::new();
        // A close frame the client sent right behind its handshake answers
        // ours already.
        if !early.is_empty() && reader.feed(&early, &mut Vec::new()).is_some() {
            return self.close_handshake_done(cx);
        }
        self.phase = Phase::Closing {
            reader: Box::new(reader),
            deadline: cx.env.now + super::CLOSE_TIMEOUT,
        };
    }

    // ---- the running capture ---------------------------------------------

    /// Client frames during a capture.
    pub(super) fn capture_frames(&mut self, cx: &mut Cx, data: &[u8]) {
        let Phase::Capturing(c) = &mut self.phase else {
            return;
        };
        match c.feed_frames(data, cx.out) {
            Ok(false) => {}
            Ok(true) => {
                c.terminate_all(cx.env, &mut self.actions);
                self.capture_changed(cx);
            }
            Err(e) => self.client_broke(cx, e),
        }
    }

    /// One read of target `target`'s output (the loop's read buffer, which
    /// the relay may patch in place).
    pub fn on_output(&mut self, env: &Env, out: &mut dyn Out, target: usize, chunk: &mut [u8]) {
        let Phase::Capturing(c) = &mut self.phase else {
            return;
        };
        match c.relay(target, chunk, out, &mut self.actions) {
            Ok(false) => {}
            Ok(true) => self.capture_changed(&mut Cx { env, out }),
            Err(e) => self.client_broke(&mut Cx { env, out }, e),
        }
    }

    /// Target `target`'s output ended; `error`: a read failed.
    pub fn on_output_end(
        &mut self,
        env: &Env,
        out: &mut dyn Out,
        target: usize,
        error: Option<String>,
    ) {
        let Phase::Capturing(c) = &mut self.phase else {
            return;
        };
        if let Some(e) = error {
            warn!("[c{}] reading the capture output failed: {e}", self.id);
        }
        let mut cx = Cx { env, out };
        match c.output_ended(target, cx.out, &mut self.actions) {
            Ok(()) => self.capture_changed(&mut cx),
            Err(e) => self.client_broke(&mut cx, e),
        }
    }

    /// What target `target`'s program wrote on stderr; `None`: its end.
    pub fn on_stderr(&mut self, env: &Env, out: &mut dyn Out, target: usize, data: Option<&[u8]>) {
        let Phase::Capturing(c) = &mut self.phase else {
            return;
        };
        c.stderr(target, data);
        if data.is_none() {
            self.capture_changed(&mut Cx { env, out });
        }
    }

    /// A capture program of this session was reaped.
    pub fn on_exit(&mut self, env: &Env, out: &mut dyn Out, pid: u32, status: ExitStatus) {
        let Phase::Capturing(c) = &mut self.phase else {
            return;
        };
        if c.reaped(pid, status, &mut self.actions) {
            self.capture_changed(&mut Cx { env, out });
        }
    }

    /// After any change to a capture: the close, once it is over.
    pub(super) fn capture_changed(&mut self, cx: &mut Cx) {
        let Phase::Capturing(c) = &mut self.phase else {
            return;
        };
        match c.check_end(cx.env, &mut self.actions) {
            None => {}
            Some(Close::Send(code, reason)) => self.send_close(cx, code, &reason),
            Some(Close::Answer(code, reason)) => self.answer_close(cx, code, &reason),
            Some(Close::Gone) => self.phase = Phase::Done,
        }
    }
}

/// Every interface name must exist in the target namespace before anything
/// is spawned (see `crate::proto::links`).
fn check_interfaces(
    params: &CaptureParams,
    links: Result<std::collections::HashSet<String>, String>,
    label: Option<&str>,
) -> Result<crate::proto::links::Checked, Refusal> {
    let wanted = params.interfaces().map_err(|why| Refusal::Namespace {
        why,
        target: label.map(str::to_string),
    })?;
    if wanted.is_empty() {
        return Ok(crate::proto::links::Checked {
            interfaces: Vec::new(),
            skipped: Vec::new(),
        });
    }
    let existing = links.map_err(|why| Refusal::LinksUnreadable { why })?;
    let explicit = matches!(params.nifs, Nifs::List(_));
    crate::proto::links::check(&wanted, explicit, &existing).map_err(|why| Refusal::Namespace {
        why,
        target: label.map(str::to_string),
    })
}

/// The lookup metric's outcome for a failed lookup.
fn lookup_outcome(e: &DiscoveryError) -> metrics::Lookup {
    use metrics::Lookup;
    match e {
        DiscoveryError::NotListed { .. } => Lookup::NotListed,
        DiscoveryError::Unreachable(_) => Lookup::Unreachable,
        DiscoveryError::TimedOut => Lookup::TimedOut,
        _ => Lookup::BadResponse,
    }
}
