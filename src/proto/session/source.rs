//! A capture's sources: what produces one target's packets, of whichever
//! kind, and its life.
//!
//! Every kind sits behind the same relay and the same life: running,
//! terminating (asked to stop, asked again every [`TERM_REPEAT`] until the
//! kill deadline), killed, ended. The kind decides only what asking means
//! and what the source can say about its end: a capture program is
//! signalled and reaped, and what it wrote on stderr becomes the close
//! reason. A new kind adds a variant to [`Kind`] and its arms here; the
//! relay, the merge and the close sequences do not change.

use std::time::{Duration, Instant};

use log::{debug, warn};

use super::errlines::ErrLines;
use super::{Cx, ExitStatus, Sig, SourceEnd, Started};
use crate::proto::ws;

/// How often a stop request is repeated to a source that has not ended,
/// until the kill deadline. dumpcap loses a SIGTERM that arrives while it
/// starts up: its handler only clears a flag that its capture loop then
/// sets again. A client that closes right after the upgrade would otherwise
/// wait for the kill deadline (10 s) and hold a capture slot meanwhile.
pub(super) const TERM_REPEAT: Duration = Duration::from_secs(1);

/// SIGTERM's number on Linux.
const SIGTERM: i32 = 15;

/// Why a source was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// Its own output ended.
    Own,
    /// The capture as a whole ended (client, shutdown, refusal).
    Whole,
}

/// Where a source stands. Only a source not yet ended may be asked to
/// stop: a process's pid is ours until it is reaped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Life {
    Running,
    Terminating {
        stop: Stop,
        /// When the clean stop gives way to the hard one.
        kill_at: Instant,
        /// When the clean stop is asked again.
        next: Instant,
    },
    Killed {
        stop: Stop,
    },
    Ended {
        status: ExitStatus,
        stop: Option<Stop>,
    },
}

/// What a source is.
pub(super) enum Kind {
    /// A capture program: signalled, reaped, its stderr kept for the close
    /// reason.
    Process {
        pid: u32,
        diag: ErrLines,
        diag_open: bool,
    },
    /// Packet rings the service reads itself: stopped by asking its host,
    /// ended when its host says how (its output then all read).
    Native { end: Option<SourceEnd> },
}

/// One target's source.
pub(super) struct CaptureSource {
    /// Its name in reasons and logs (`None` for a capture of one target).
    pub label: Option<String>,
    pub kind: Kind,
    pub life: Life,
    /// Its output is still read.
    pub out_open: bool,
    /// Its output broke the pcapng format (the merger gave it up).
    pub broken: Option<String>,
}

impl CaptureSource {
    pub fn new(label: Option<String>, started: &Started) -> CaptureSource {
        let kind = match started {
            Started::Process { pid, .. } => Kind::Process {
                pid: *pid,
                diag: ErrLines::default(),
                diag_open: true,
            },
            Started::Native => Kind::Native { end: None },
        };
        CaptureSource {
            label,
            kind,
            life: Life::Running,
            out_open: true,
            broken: None,
        }
    }

    pub fn ended(&self) -> bool {
        matches!(self.life, Life::Ended { .. })
    }

    fn status(&self) -> Option<ExitStatus> {
        match self.life {
            Life::Ended { status, .. } => Some(status),
            _ => None,
        }
    }

    pub fn prefix(&self) -> String {
        match &self.label {
            Some(l) => format!("target {l}: "),
            None => String::new(),
        }
    }

    /// The source as logs name it.
    fn what(&self) -> String {
        match &self.kind {
            Kind::Process { pid, .. } => format!("capture program {pid}"),
            Kind::Native { .. } => "native capture".into(),
        }
    }

    /// Whether its end is still to be read from its output channel (a
    /// source the service runs itself, not yet ended).
    pub fn reads_its_end(&self) -> bool {
        matches!(self.kind, Kind::Native { .. }) && !self.ended()
    }

    /// Whether its diagnostics channel is still read.
    pub fn diag_open(&self) -> bool {
        match &self.kind {
            Kind::Process { diag_open, .. } => *diag_open,
            Kind::Native { .. } => false,
        }
    }

    /// Stops reading its diagnostics; true if they were read until now.
    pub fn close_diag(&mut self) -> bool {
        match &mut self.kind {
            Kind::Process { diag_open, .. } => std::mem::take(diag_open),
            Kind::Native { .. } => false,
        }
    }

    /// What it said on its diagnostics channel; `None` at its end.
    pub fn diag(&mut self, id: u64, data: Option<&[u8]>) {
        let prefix = self.prefix();
        let Kind::Process {
            diag, diag_open, ..
        } = &mut self.kind
        else {
            return;
        };
        let seen = |l: &str| debug!("[c{id}] {prefix}capture program: {l}");
        match data {
            Some(d) => diag.feed(d, seen),
            None => {
                *diag_open = false;
                diag.finish(seen);
            }
        }
    }

    /// The line a user can act on (dumpcap's `dumpcap: ...`), if any.
    fn errline(&self) -> Option<&str> {
        match &self.kind {
            Kind::Process { diag, .. } => diag.errline(),
            Kind::Native { end: Some(end) } => match end {
                SourceEnd::Stopped => None,
                SourceEnd::Ended(l) | SourceEnd::Failed(l) | SourceEnd::Refused(l) => Some(l),
            },
            Kind::Native { end: None } => None,
        }
    }

    fn firstline(&self) -> Option<&str> {
        match &self.kind {
            Kind::Process { diag, .. } => diag.firstline(),
            Kind::Native { .. } => None,
        }
    }

    /// Asks target `i`'s source to stop now, and again every
    /// [`TERM_REPEAT`]; the hard stop once the term timeout has passed (see
    /// [`on_timeout`](Self::on_timeout)).
    pub fn terminate(&mut self, i: usize, stop: Stop, cx: &mut Cx) {
        if self.life != Life::Running {
            return;
        }
        match self.kind {
            Kind::Process { .. } => debug!(
                "[c{}] {}sending SIGTERM to {}",
                cx.id,
                self.prefix(),
                self.what()
            ),
            Kind::Native { .. } => {
                debug!("[c{}] {}stopping the native capture", cx.id, self.prefix())
            }
        }
        cx.host.signal(i, Sig::Term);
        let now = cx.env.now;
        let kill_at = now + cx.env.cfg.term_timeout;
        self.life = Life::Terminating {
            stop,
            kill_at,
            next: (now + TERM_REPEAT).min(kill_at),
        };
    }

    /// A deadline came: asked again if due, or stopped hard past its kill
    /// deadline.
    pub fn on_timeout(&mut self, i: usize, cx: &mut Cx) {
        let now = cx.env.now;
        let Life::Terminating {
            stop,
            kill_at,
            next,
        } = self.life
        else {
            return;
        };
        if now >= kill_at {
            warn!(
                "[c{}] {}{} ignored SIGTERM for {:?}; killing it",
                cx.id,
                self.prefix(),
                self.what(),
                cx.env.cfg.term_timeout
            );
            cx.host.signal(i, Sig::Kill);
            self.life = Life::Killed { stop };
        } else if now >= next {
            debug!(
                "[c{}] {}{} still running; repeating SIGTERM",
                cx.id,
                self.prefix(),
                self.what()
            );
            cx.host.signal(i, Sig::Term);
            self.life = Life::Terminating {
                stop,
                kill_at,
                next: (now + TERM_REPEAT).min(kill_at),
            };
        }
    }

    /// The soonest repeat or kill due.
    pub fn deadline(&self) -> Option<Instant> {
        match self.life {
            Life::Terminating { kill_at, next, .. } => Some(next.min(kill_at)),
            _ => None,
        }
    }

    /// The source ended with `status`.
    pub fn end(&mut self, id: u64, status: ExitStatus) {
        let stop = match self.life {
            Life::Terminating { stop, .. } | Life::Killed { stop } => Some(stop),
            _ => None,
        };
        self.life = Life::Ended { status, stop };
        match self.kind {
            Kind::Process { .. } => debug!(
                "[c{id}] {}{} reaped: {status:?}",
                self.prefix(),
                self.what()
            ),
            Kind::Native { .. } => debug!("[c{id}] {}native capture ended", self.prefix()),
        }
    }

    /// A source the service runs itself ended `how` (its output is all
    /// read).
    pub fn end_native(&mut self, id: u64, how: SourceEnd) {
        let status = match how {
            SourceEnd::Stopped | SourceEnd::Ended(_) => ExitStatus::Exited(0),
            SourceEnd::Failed(_) | SourceEnd::Refused(_) => ExitStatus::Exited(1),
        };
        if let Kind::Native { end } = &mut self.kind {
            *end = Some(how);
        }
        self.end(id, status);
    }

    /// What happened to this target, for the close reason of a capture of
    /// several targets.
    pub fn outcome(&self) -> String {
        if let Some(b) = &self.broken {
            return format!("bad output: {b}");
        }
        if let Some(e) = self.errline() {
            return e.to_string();
        }
        match self.life {
            Life::Ended {
                status: ExitStatus::Exited(0) | ExitStatus::Signaled(SIGTERM, _),
                stop: Some(Stop::Whole),
            } => "stopped".into(),
            Life::Ended {
                status: ExitStatus::Exited(0),
                ..
            } => "ended".into(),
            Life::Ended {
                status: ExitStatus::Exited(c),
                ..
            } => format!("exited with status {c}"),
            Life::Ended {
                status: ExitStatus::Signaled(SIGTERM, _),
                stop: Some(_),
            } => "stopped".into(),
            Life::Ended {
                status: ExitStatus::Signaled(_, name),
                ..
            } => format!("killed by {name}"),
            Life::Ended { .. } => "ended abnormally".into(),
            _ => "running".into(),
        }
    }

    /// Whether this target's source did not end cleanly.
    pub fn failed(&self) -> bool {
        let clean_end = match self.life {
            Life::Ended {
                status: ExitStatus::Exited(0),
                ..
            } => true,
            Life::Ended { stop, .. } => stop.is_some(),
            _ => false,
        };
        self.broken.is_some() || self.errline().is_some() || !clean_end
    }

    /// The close code and reason for a capture of one target whose source
    /// ended by itself.
    pub fn exit_reason(&self) -> (u16, String) {
        if let Kind::Native { end: Some(end) } = &self.kind {
            return match end {
                SourceEnd::Stopped => (ws::NORMAL, "capture ended".into()),
                SourceEnd::Ended(l) => (ws::NORMAL, l.clone()),
                SourceEnd::Failed(l) => (ws::INTERNAL_ERROR, l.clone()),
                SourceEnd::Refused(l) => (ws::POLICY_VIOLATION, l.clone()),
            };
        }
        let detail = self.errline().map(str::to_string);
        match self.status() {
            // dumpcap exits 0 also when it stops by itself for a reason the
            // user should see (a captured interface was deleted, say).
            Some(ExitStatus::Exited(0)) => (
                ws::NORMAL,
                detail.unwrap_or_else(|| "capture program ended".into()),
            ),
            Some(ExitStatus::Exited(code)) => (
                ws::INTERNAL_ERROR,
                detail.unwrap_or_else(|| match self.firstline() {
                    Some(l) => format!("capture program failed ({code}): {l}"),
                    None => format!("capture program exited with status {code}"),
                }),
            ),
            Some(ExitStatus::Signaled(_, name)) => (
                ws::INTERNAL_ERROR,
                detail.unwrap_or_else(|| format!("capture program killed by {name}")),
            ),
            _ => (
                ws::INTERNAL_ERROR,
                "capture program ended abnormally".into(),
            ),
        }
    }
}

/// A capture's sources, by target: one kept inline (a capture of one
/// target, the dense case, costs no allocation for it), or several.
pub(super) enum Sources {
    One([CaptureSource; 1]),
    Many(Vec<CaptureSource>),
}

impl From<Vec<CaptureSource>> for Sources {
    fn from(mut v: Vec<CaptureSource>) -> Sources {
        match v.len() {
            1 => Sources::One([v.remove(0)]),
            _ => Sources::Many(v),
        }
    }
}

impl std::ops::Deref for Sources {
    type Target = [CaptureSource];
    fn deref(&self) -> &[CaptureSource] {
        match self {
            Sources::One(p) => p,
            Sources::Many(v) => v,
        }
    }
}

impl std::ops::DerefMut for Sources {
    fn deref_mut(&mut self) -> &mut [CaptureSource] {
        match self {
            Sources::One(p) => p,
            Sources::Many(v) => v,
        }
    }
}
