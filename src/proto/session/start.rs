//! The `Starting` phase: a capture's targets resolved ([`super::resolve`]),
//! looked up with the discovery service when a reference is stale (one
//! listing for every target), every namespace located and its interfaces
//! checked, then one source per target started: all, or none keeps
//! running. Locating and starting are answered on the spot by the host;
//! the phase waits only for the discovery service's listing or for a
//! namespace scan.

use std::time::Instant;

use log::{debug, info, warn};

use super::capture::{self, Merging, Relay};
use super::resolve::{resolve, stale, Resolved};
use super::source::CaptureSource;
use super::{
    client_gone, flush_then_close, service_name, Count, Cx, Event, Listing, Locate, Located, Phase,
    Refusal, Spec, Started, CLOSE_TIMEOUT,
};
use crate::config::CaptureEngine;
use crate::metrics::Lookup;
use crate::proto::discovery::DiscoveryError;
use crate::proto::http::{self, Request};
use crate::proto::merge::Merger;
use crate::proto::params::{capture_params_limited, CaptureParams, Limits, Nifs};
use crate::proto::pcapng::{
    push_document_key, target_document, targets_document, ShbEditor, TargetInfo,
};
use crate::proto::target::Target;
use crate::proto::ws::{self, FrameReader};

/// The target document's key naming the capture engine.
const ENGINE_KEY: &str = "capture-engine";

/// Client bytes kept while a capture starts (frames sent behind the
/// handshake); a well-behaved client sends none or a close frame.
const MAX_EARLY_FRAMES: usize = 4096;

/// What a starting capture waits for.
enum Step {
    /// The discovery service's listing.
    Discovering { deadline: Instant },
    /// A namespace was not where it was last seen: every target is located
    /// again after the next namespace scan.
    Rescan { asked_at: Instant },
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
            Step::Rescan { .. } => None,
        }
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

/// A capture request's upgrade: its parameters read, its targets resolved;
/// then it waits for the discovery service or goes on to locate them.
pub(super) fn begin(cx: &mut Cx, req: &Request, accept: String, leftover: Vec<u8>) -> Phase {
    let env = cx.env;
    let limits = Limits {
        max_target_json: env.cfg.max_target_json,
        max_filter: env.cfg.max_filter,
    };
    let parsed =
        crate::proto::multi::multi_params(req, &limits, env.cfg.max_targets).and_then(|several| {
            match several {
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
            }
        });
    let (targets, described, nifs, filter, chaste, several) = match parsed {
        Ok(p) => p,
        Err(why) => return refuse(cx, &accept, &leftover, Refusal::Parameters(why)),
    };
    if several && env.captures + targets.len() > env.cfg.max_captures {
        let r = Refusal::TooManyTargets {
            targets: targets.len(),
            max: env.cfg.max_captures,
        };
        return refuse(cx, &accept, &leftover, r);
    }
    let proc_starttimes = targets
        .iter()
        .map(|t| match t.netns != 0 && t.pid != 0 && t.starttime != 0 {
            true => cx.host.starttime(t.pid),
            false => None,
        })
        .collect();
    let labels = several.then(|| crate::proto::multi::target_labels(&targets));
    let s = Box::new(Start {
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
    for (i, t) in s.targets.iter().enumerate() {
        let label = s.label(i);
        match resolve(t, described, label.as_deref(), s.proc_starttimes[i], None) {
            Resolved::Spawn(_) => {}
            Resolved::Discover => {
                if t.netns != 0 && stale(t, s.proc_starttimes[i]) {
                    info!(
                        "[c{}] {}reference to pid {} is stale (start time differs or process gone); netns {} is not trusted",
                        cx.id,
                        label.map(|l| format!("target {l}: ")).unwrap_or_default(),
                        t.pid,
                        t.netns
                    );
                }
                lookups += 1;
            }
            Resolved::Refuse(r) => return refuse(cx, &s.accept, &s.early, r),
        }
    }
    if lookups == 0 {
        return locate_all(s, cx, env.now);
    }
    // One listing answers every stale target: it holds them all, and the
    // exchange is shared with every other capture asking meanwhile.
    let service = service_name(env.cfg);
    match &s.labels {
        None => info!(
            "[c{}] looking up container {:?} (prefix {:?}) with the discovery service at {service}",
            cx.id, s.targets[0].name, s.targets[0].prefix
        ),
        Some(_) => info!(
            "[c{}] looking up {lookups} targets with the discovery service at {service}",
            cx.id
        ),
    }
    match cx.host.want_listing() {
        Some(listing) => listed(s, cx, listing),
        None => Phase::Starting(s),
    }
}

/// The `Starting` phase's transitions.
pub(super) fn on(mut s: Box<Start>, cx: &mut Cx, ev: Event) -> Phase {
    match ev {
        Event::ClientData(data) => {
            let room = MAX_EARLY_FRAMES.saturating_sub(s.early.len());
            s.early.extend_from_slice(&data[..data.len().min(room)]);
            Phase::Starting(s)
        }
        Event::Listing(listing) if matches!(s.step, Step::Discovering { .. }) => {
            listed(s, cx, listing)
        }
        Event::Rescanned => match s.step {
            Step::Rescan { asked_at } => locate_all(s, cx, asked_at),
            Step::Discovering { .. } => Phase::Starting(s),
        },
        Event::Timeout => {
            cx.host
                .count(Count::Lookup(Lookup::TimedOut, cx.env.now - s.started));
            let r = Refusal::Discovery {
                error: DiscoveryError::TimedOut,
                service: service_name(cx.env.cfg),
                target: None,
            };
            refuse_start(s, cx, r)
        }
        Event::ClientEof => {
            // The client gave up: no one is left to answer.
            debug!("[c{}] client left during discovery", cx.id);
            cx.host.release_namespaces();
            Phase::Done
        }
        Event::ClientBroke(e) => {
            cx.host.release_namespaces();
            client_gone(cx, e)
        }
        Event::Shutdown => {
            cx.host.release_namespaces();
            let _ = cx.host.send(&http::text_response(
                503,
                "the capture service is shutting down",
                true,
            ));
            flush_then_close(cx)
        }
        _ => Phase::Starting(s),
    }
}

/// The discovery service's listing: every stale target is replaced by what
/// it lists, then every target is located.
fn listed(mut s: Box<Start>, cx: &mut Cx, listing: Listing) -> Phase {
    let service = service_name(cx.env.cfg);
    let took = cx.env.now - s.started;
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
                            cx.id, found.netns, found.name
                        ),
                        Some(l) => info!(
                            "[c{}] discovery service names netns {} for target {l}",
                            cx.id, found.netns
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
                    _ => Lookup::Found,
                };
                cx.host.count(Count::Lookup(outcome, took));
                return refuse_start(s, cx, r);
            }
        }
    }
    cx.host.count(Count::Lookup(Lookup::Found, took));
    locate_all(s, cx, cx.env.now)
}

/// Locates and holds every namespace first (each until its source has
/// started in it); a target that cannot be located, or lacks an interface
/// asked for, refuses the request before anything starts.
fn locate_all(mut s: Box<Start>, cx: &mut Cx, asked_at: Instant) -> Phase {
    if let Some(why) = cx.env.no_capture {
        return refuse_start(s, cx, Refusal::Privileges(why.to_string()));
    }
    // Labels after discovery: a looked-up target may have got its name.
    if s.labels.is_some() {
        s.labels = Some(crate::proto::multi::target_labels(&s.targets));
    }
    let mut plans = Vec::with_capacity(s.targets.len());
    let mut excluded = None;
    for i in 0..s.targets.len() {
        let label = s.label(i);
        let params = s.params(i);
        let wanted = match params.interfaces() {
            Ok(w) => w,
            Err(why) => return refuse_start(s, cx, Refusal::Namespace { why, target: label }),
        };
        let t = &params.target;
        let q = Locate {
            netns: t.netns,
            pid: t.pid,
            asked_at,
            links: !wanted.is_empty(),
        };
        let links = match cx.host.locate(i, &q) {
            Located::Held { links } => links,
            Located::Missing(why) => {
                let r = Refusal::Namespace {
                    why: why.to_string(),
                    target: label,
                };
                return refuse_start(s, cx, r);
            }
            Located::Wait => {
                s.step = Step::Rescan { asked_at };
                return Phase::Starting(s);
            }
        };
        let interfaces = match check_interfaces(&params, links, label.as_deref()) {
            Ok(c) => {
                if !c.skipped.is_empty() {
                    match &label {
                        None => info!(
                            "[c{}] skipping interfaces of the target's list that do not exist in netns {}: {}",
                            cx.id,
                            params.target.netns,
                            c.skipped.join("/")
                        ),
                        Some(l) => info!(
                            "[c{}] target {l}: skipping interfaces of its list that do not exist in its namespace: {}",
                            cx.id,
                            c.skipped.join("/")
                        ),
                    }
                }
                c.interfaces
            }
            Err(r) => return refuse_start(s, cx, r),
        };
        // The document shows the user's filter; the source also excludes
        // this capture's own connection when it runs in our namespace.
        let own = !cx.env.cfg.no_self_exclusion && cx.env.own_netns == Some(params.target.netns);
        let filter = if own {
            let clause = crate::proto::selfexcl::own_connection_filter(cx.local, cx.peer);
            excluded = Some(crate::proto::selfexcl::describe(cx.local, cx.peer));
            Some(crate::proto::selfexcl::combined_filter(
                params.filter.as_deref(),
                &clause,
            ))
        } else {
            params.filter.clone()
        };
        plans.push(Plan {
            interfaces,
            filter,
            chaste: params.chaste,
        });
    }
    start_all(s, cx, &plans, excluded)
}

/// What one target's source captures: checked interfaces (none: every
/// one, as `any`), the filter it applies, promiscuous or not.
struct Plan {
    interfaces: Vec<String>,
    filter: Option<String>,
    chaste: bool,
}

/// Every namespace is held: the stream's document and relay, then the
/// sources one by one (of the configured engine), until one fails.
fn start_all(s: Box<Start>, cx: &mut Cx, plans: &[Plan], excluded: Option<String>) -> Phase {
    let relay = relay(&s, cx.env.cfg.capture_engine, excluded.as_deref());
    let engine = cx.env.cfg.capture_engine;
    let program = match engine {
        CaptureEngine::Dumpcap => cx.env.cfg.capture_program.display().to_string(),
        CaptureEngine::Native => "the native capture engine".into(),
    };
    let mut sources = Vec::with_capacity(s.targets.len());
    let mut failure = None;
    for (i, plan) in plans.iter().enumerate() {
        let label = s.label(i);
        let args;
        let spec = match engine {
            CaptureEngine::Dumpcap => {
                args = crate::proto::capture::capture_args(
                    &plan.interfaces,
                    plan.filter.as_deref(),
                    plan.chaste,
                );
                Spec::Process { args: &args }
            }
            CaptureEngine::Native => Spec::Native {
                interfaces: &plan.interfaces,
                filter: plan.filter.as_deref(),
                chaste: plan.chaste,
            },
        };
        match cx.host.start(i, spec) {
            Ok(started) => {
                log_started(cx, &s, i, &started, spec, &program);
                sources.push(CaptureSource::new(label.clone(), &started));
                if let Started::Process {
                    watched: Err(e), ..
                } = &started
                {
                    warn!(
                        "[c{}] cannot watch the capture program's output: {e}",
                        cx.id
                    );
                    failure = Some(Refusal::CannotWatch { target: label });
                    break;
                }
            }
            Err(why) => {
                let r = Refusal::Program {
                    program: program.clone(),
                    why: why.to_string(),
                    target: label,
                };
                warn!("[c{}] {}", cx.id, r.text());
                failure = Some(r);
                break;
            }
        }
    }
    capture::begin(cx, &s.accept, &s.early, relay, sources, failure)
}

/// The log line of a source that started.
fn log_started(cx: &Cx, s: &Start, i: usize, started: &Started, spec: Spec, program: &str) {
    let t = &s.targets[i];
    let what = match (started, spec) {
        (Started::Process { pid, .. }, Spec::Process { args }) => {
            format!("pid {pid}, {program} {}", args.join(" "))
        }
        (
            _,
            Spec::Native {
                interfaces,
                filter,
                chaste,
            },
        ) => format!(
            "native engine on {}{}{}",
            if interfaces.is_empty() {
                "any".to_string()
            } else {
                interfaces.join("/")
            },
            filter
                .map(|f| format!(", filter {f:?}"))
                .unwrap_or_default(),
            if chaste { ", not promiscuous" } else { "" }
        ),
        (Started::Native, Spec::Process { .. }) => program.to_string(),
    };
    match s.label(i) {
        None => info!(
            "[c{}] capture started in netns {} ({}): {what}",
            cx.id,
            t.netns,
            if t.name.is_empty() {
                "unnamed"
            } else {
                t.name.as_str()
            },
        ),
        Some(l) => info!("[c{}] capture of target {l} started: {what}", cx.id),
    }
}

/// How the sources' output becomes the client's stream: one target's
/// with its document in the first SHB, or several merged into one section.
fn relay(s: &Start, engine: CaptureEngine, excluded: Option<&str>) -> Relay {
    match &s.labels {
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
            push_document_key(&mut doc, ENGINE_KEY, engine.name());
            if let Some(what) = excluded {
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
            push_document_key(&mut doc, ENGINE_KEY, engine.name());
            if let Some(what) = excluded {
                push_document_key(&mut doc, crate::proto::selfexcl::DOCUMENT_KEY, what);
            }
            Relay::Merge(Box::new(Merging {
                merger: Merger::new(labels.iter().cloned(), doc),
                scratch: Vec::new(),
                parts: Vec::new(),
            }))
        }
    }
}

/// Ends a capture that could not start.
fn refuse_start(s: Box<Start>, cx: &mut Cx, r: Refusal) -> Phase {
    cx.host.release_namespaces();
    refuse(cx, &s.accept, &s.early, r)
}

/// Refuses a capture request: the handshake is accepted so that the client
/// receives the reason in a close frame.
pub(super) fn refuse(cx: &mut Cx, accept: &str, early: &[u8], r: Refusal) -> Phase {
    let reason = r.text();
    info!("[c{}] {reason}", cx.id);
    cx.host.count(Count::Refused(r.metric()));
    let mut bytes = http::switching_protocols(accept);
    bytes.extend_from_slice(&ws::close_frame(r.code(), &reason));
    if let Err(e) = cx.host.send(&bytes) {
        return client_gone(cx, e);
    }
    let mut reader = FrameReader::new();
    // A close frame the client sent right behind its handshake answers
    // ours already.
    if !early.is_empty() && reader.feed(early, &mut Vec::new()).is_some() {
        return flush_then_close(cx);
    }
    Phase::Closing {
        reader: Box::new(reader),
        deadline: cx.env.now + CLOSE_TIMEOUT,
    }
}

/// Every interface name must exist in the target namespace before anything
/// starts (see `crate::proto::links`).
fn check_interfaces(
    params: &CaptureParams,
    links: Result<std::collections::HashSet<String>, std::io::Error>,
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
    let existing = links.map_err(|e| Refusal::LinksUnreadable { why: e.to_string() })?;
    let explicit = matches!(params.nifs, Nifs::List(_));
    crate::proto::links::check(&wanted, explicit, &existing).map_err(|why| Refusal::Namespace {
        why,
        target: label.map(str::to_string),
    })
}

/// The lookup metric's outcome for a failed lookup.
fn lookup_outcome(e: &DiscoveryError) -> Lookup {
    match e {
        DiscoveryError::NotListed { .. } => Lookup::NotListed,
        DiscoveryError::Unreachable(_) => Lookup::Unreachable,
        DiscoveryError::TimedOut => Lookup::TimedOut,
        _ => Lookup::BadResponse,
    }
}
