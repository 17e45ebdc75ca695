//! A running capture: its programs (one per target), the relay of their
//! output to the client, the client's frames, and how it ends.
//!
//! A program's life is one enum (`Life`): running, terminating (SIGTERM
//! sent, repeated every [`TERM_REPEAT`] until the kill deadline), killed
//! (SIGKILL sent), reaped. A program whose output ends is terminated; the
//! capture ends when every program is reaped and, while it still relays,
//! every pipe is drained. Then the client gets the close this module
//! decides from the [`Ending`] and what each program did.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::errlines::ErrLines;
use super::{Action, Broken, Env, Out, Refusal, Source};
use crate::metrics;
use crate::proto::merge::{Merger, Part};
use crate::proto::pcapng::ShbEditor;
use crate::proto::ws::{self, FrameReader, Inbound};

/// How often SIGTERM is repeated to a capture program that has not exited,
/// until the kill deadline. dumpcap loses a SIGTERM that arrives while it
/// starts up: its handler only clears a flag that its capture loop then
/// sets again. A client that closes right after the upgrade would otherwise
/// wait for the kill deadline (10 s) and hold a capture slot meanwhile.
pub(super) const TERM_REPEAT: Duration = Duration::from_secs(1);

/// Most pieces one merged message is sent in without copying; a read that
/// the merger cut into more (blocks it rebuilt between blocks it passed)
/// is joined into one buffer first. 64 KiB of 1500-byte packets is one
/// piece, or a few around a block that spanned reads.
const MAX_PARTS: usize = 32;

/// A signal the session asks the driver to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sig {
    Term,
    Kill,
}

/// How a reaped capture program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    /// Killed by the signal with this number and name (`SIGKILL`).
    Signaled(i32, &'static str),
    /// Anything else the kernel reported.
    Other,
}

/// SIGTERM's number on Linux.
const SIGTERM: i32 = 15;

/// Why a program was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// Its own output ended.
    Own,
    /// The capture as a whole ended (client, shutdown, refusal).
    Whole,
}

/// Where a capture program stands. Only a program not yet reaped may be
/// signalled: its pid is ours until then.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Life {
    Running,
    Terminating {
        stop: Stop,
        /// When SIGTERM gives way to SIGKILL.
        kill_at: Instant,
        /// When SIGTERM is repeated.
        next: Instant,
    },
    Killed {
        stop: Stop,
    },
    Reaped {
        status: ExitStatus,
        stop: Option<Stop>,
    },
}

/// One target's capture program.
pub(super) struct Program {
    /// Its name in reasons and logs (`None` for a capture of one target).
    pub label: Option<String>,
    pub pid: u32,
    pub life: Life,
    pub out_open: bool,
    pub err_open: bool,
    /// What it said on stderr, for the close reason.
    pub err: ErrLines,
    /// Its output broke the pcapng format (the merger gave it up).
    pub broken: Option<String>,
}

impl Program {
    pub(super) fn new(label: Option<String>, pid: u32) -> Program {
        Program {
            label,
            pid,
            life: Life::Running,
            out_open: true,
            err_open: true,
            err: ErrLines::default(),
            broken: None,
        }
    }

    fn reaped(&self) -> bool {
        matches!(self.life, Life::Reaped { .. })
    }

    fn status(&self) -> Option<ExitStatus> {
        match self.life {
            Life::Reaped { status, .. } => Some(status),
            _ => None,
        }
    }

    fn prefix(&self) -> String {
        match &self.label {
            Some(l) => format!("target {l}: "),
            None => String::new(),
        }
    }

    /// SIGTERM now, repeated every [`TERM_REPEAT`]; SIGKILL when the term
    /// timeout has passed (see [`Capture::on_timeout`]).
    fn terminate(&mut self, stop: Stop, env: &Env, id: u64, actions: &mut VecDeque<Action>) {
        if self.life != Life::Running {
            return;
        }
        debug!(
            "[c{id}] {}sending SIGTERM to capture program {}",
            self.prefix(),
            self.pid
        );
        actions.push_back(Action::Signal {
            pid: self.pid,
            signal: Sig::Term,
        });
        let kill_at = env.now + env.cfg.term_timeout;
        self.life = Life::Terminating {
            stop,
            kill_at,
            next: (env.now + TERM_REPEAT).min(kill_at),
        };
    }

    /// What happened to this target, for the close reason of a capture of
    /// several targets.
    fn outcome(&self) -> String {
        if let Some(b) = &self.broken {
            return format!("bad output: {b}");
        }
        if let Some(e) = self.err.errline() {
            return e.to_string();
        }
        match self.life {
            Life::Reaped {
                status: ExitStatus::Exited(0) | ExitStatus::Signaled(SIGTERM, _),
                stop: Some(Stop::Whole),
            } => "stopped".into(),
            Life::Reaped {
                status: ExitStatus::Exited(0),
                ..
            } => "ended".into(),
            Life::Reaped {
                status: ExitStatus::Exited(c),
                ..
            } => format!("exited with status {c}"),
            Life::Reaped {
                status: ExitStatus::Signaled(SIGTERM, _),
                stop: Some(_),
            } => "stopped".into(),
            Life::Reaped {
                status: ExitStatus::Signaled(_, name),
                ..
            } => format!("killed by {name}"),
            Life::Reaped { .. } => "ended abnormally".into(),
            _ => "running".into(),
        }
    }

    /// Whether this target's program did not end cleanly.
    fn failed(&self) -> bool {
        let clean_end = match self.life {
            Life::Reaped {
                status: ExitStatus::Exited(0),
                ..
            } => true,
            Life::Reaped { stop, .. } => stop.is_some(),
            _ => false,
        };
        self.broken.is_some() || self.err.errline().is_some() || !clean_end
    }

    /// The close code and reason for a capture of one target whose program
    /// ended by itself.
    pub(super) fn exit_reason(&self) -> (u16, String) {
        let detail = self.err.errline().map(str::to_string);
        match self.status() {
            // dumpcap exits 0 also when it stops by itself for a reason the
            // user should see (a captured interface was deleted, say).
            Some(ExitStatus::Exited(0)) => (
                ws::NORMAL,
                detail.unwrap_or_else(|| "capture program ended".into()),
            ),
            Some(ExitStatus::Exited(code)) => (
                ws::INTERNAL_ERROR,
                detail.unwrap_or_else(|| match self.err.firstline() {
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

/// Why a capture is ending; decides what the client gets at the end.
#[derive(Debug)]
pub(super) enum Ending {
    Running,
    /// The client sent a close frame with this code.
    ClientClosed(Option<u16>),
    /// The client's connection broke: nothing more can be sent.
    ClientGone,
    /// The client broke the websocket protocol.
    Violation(u16, &'static str),
    /// The service is shutting down.
    Shutdown,
    /// Not every program could start: the ones that did are stopped, and
    /// the client hears this once they are reaped.
    Refused(Box<Refusal>),
}

impl Ending {
    /// Whether capture output is still relayed to the client.
    fn forwards(&self) -> bool {
        matches!(self, Ending::Running | Ending::Shutdown)
    }
}

/// How capture output becomes the client's stream.
pub(super) enum Relay {
    /// One target: its output as it comes, with the first SHB edited.
    Edit(ShbEditor),
    /// Several targets merged into one section ([`crate::proto::merge`]).
    /// Boxed: a capture of one target (the common, dense case) does not
    /// carry its room.
    Merge(Box<Merging>),
}

/// The merger of a capture of several targets and its per-read buffers.
pub(super) struct Merging {
    pub merger: Merger,
    /// What the merger made of one read (blocks it built or that spanned
    /// reads); the rest of the message is ranges of the read buffer.
    pub scratch: Vec<u8>,
    /// The pieces of one read's message, in order.
    pub parts: Vec<Part>,
}

/// A capture's programs: one kept inline (a capture of one target, the
/// dense case, costs no allocation for it), or several.
pub(super) enum Programs {
    One([Program; 1]),
    Many(Vec<Program>),
}

impl From<Vec<Program>> for Programs {
    fn from(mut v: Vec<Program>) -> Programs {
        match v.len() {
            1 => Programs::One([v.remove(0)]),
            _ => Programs::Many(v),
        }
    }
}

impl std::ops::Deref for Programs {
    type Target = [Program];
    fn deref(&self) -> &[Program] {
        match self {
            Programs::One(p) => p,
            Programs::Many(v) => v,
        }
    }
}

impl std::ops::DerefMut for Programs {
    fn deref_mut(&mut self) -> &mut [Program] {
        match self {
            Programs::One(p) => p,
            Programs::Many(v) => v,
        }
    }
}

/// What the session does once a capture is over.
pub(super) enum Close {
    /// Our close frame, then wait for the client's.
    Send(u16, String),
    /// Answer the client's close frame, then close.
    Answer(u16, String),
    /// The client is gone: nothing to send.
    Gone,
}

pub(super) struct Capture {
    pub id: u64,
    pub programs: Programs,
    pub relay: Relay,
    pub reader: FrameReader,
    pub ending: Ending,
    /// When the pipes were paused for the client's queue (the paused-time
    /// metric); `None` while they are read.
    pub paused_since: Option<Instant>,
    /// The client is not read: pongs owed to it would grow the output
    /// queue past the high watermark.
    pub client_paused: bool,
}

impl Capture {
    pub(super) fn weight(&self) -> usize {
        self.programs.len()
    }

    fn several(&self) -> bool {
        matches!(self.relay, Relay::Merge(_))
    }

    /// The soonest SIGTERM repeat or SIGKILL due.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.programs
            .iter()
            .filter_map(|p| match p.life {
                Life::Terminating { kill_at, next, .. } => Some(next.min(kill_at)),
                _ => None,
            })
            .min()
    }

    pub(super) fn may_read(&mut self, src: Source, full: bool, now: Instant) -> bool {
        match src {
            Source::Client => {
                self.client_paused |= full;
                !full
            }
            Source::Stdout(i) => {
                if !self.programs.get(i).is_some_and(|p| p.out_open) {
                    return false;
                }
                if full && self.ending.forwards() {
                    // Every pipe of the capture waits for the client.
                    self.paused_since.get_or_insert(now);
                    return false;
                }
                true
            }
            Source::Stderr(i) => self.programs.get(i).is_some_and(|p| p.err_open),
            Source::Upstream => false,
        }
    }

    /// The client's queue is below the low watermark: what was paused is
    /// read again.
    pub(super) fn resume(&mut self, now: Instant) -> Vec<Source> {
        let mut again = Vec::new();
        if std::mem::take(&mut self.client_paused) {
            again.push(Source::Client);
        }
        if let Some(since) = self.paused_since.take() {
            metrics::paused_for(now.saturating_duration_since(since));
            again.extend(
                (0..self.programs.len())
                    .filter(|&i| self.programs[i].out_open)
                    .map(Source::Stdout),
            );
        }
        again
    }

    /// SIGTERM to every program still running.
    pub(super) fn terminate_all(&mut self, env: &Env, actions: &mut VecDeque<Action>) {
        for p in self.programs.iter_mut() {
            p.terminate(Stop::Whole, env, self.id, actions);
        }
    }

    /// A deadline came: each terminating program due gets SIGTERM again,
    /// or SIGKILL past its kill deadline.
    pub(super) fn on_timeout(&mut self, id: u64, env: &Env, actions: &mut VecDeque<Action>) {
        let now = env.now;
        for p in self.programs.iter_mut() {
            let Life::Terminating {
                stop,
                kill_at,
                next,
            } = p.life
            else {
                continue;
            };
            if now >= kill_at {
                warn!(
                    "[c{id}] {}capture program {} ignored SIGTERM for {:?}; killing it",
                    p.prefix(),
                    p.pid,
                    env.cfg.term_timeout
                );
                actions.push_back(Action::Signal {
                    pid: p.pid,
                    signal: Sig::Kill,
                });
                p.life = Life::Killed { stop };
            } else if now >= next {
                debug!(
                    "[c{id}] {}capture program {} still running; repeating SIGTERM",
                    p.prefix(),
                    p.pid
                );
                actions.push_back(Action::Signal {
                    pid: p.pid,
                    signal: Sig::Term,
                });
                p.life = Life::Terminating {
                    stop,
                    kill_at,
                    next: (now + TERM_REPEAT).min(kill_at),
                };
            }
        }
    }

    pub(super) fn client_eof(&mut self) {
        if self.ending.forwards() || matches!(self.ending, Ending::ClientClosed(_)) {
            self.ending = Ending::ClientGone;
        }
    }

    pub(super) fn client_broke(&mut self, actions: &mut VecDeque<Action>) {
        self.ending = Ending::ClientGone;
        // Nobody will read the rest of what reaped programs left.
        for (i, p) in self.programs.iter_mut().enumerate() {
            if p.reaped() {
                drop_pipes(p, i, actions);
            }
        }
    }

    /// Lets every pipe go (a capture refused halfway reads nothing).
    pub(super) fn drop_all_pipes(&mut self, actions: &mut VecDeque<Action>) {
        for (i, p) in self.programs.iter_mut().enumerate() {
            drop_pipes(p, i, actions);
        }
    }

    pub(super) fn shutdown(&mut self) {
        if self.ending.forwards() {
            self.ending = Ending::Shutdown;
        }
    }

    /// Frames from the client: pongs are owed while output is relayed;
    /// a close or a protocol violation ends the capture.
    pub(super) fn feed_frames(&mut self, data: &[u8], out: &mut dyn Out) -> Result<bool, Broken> {
        if self.reader.is_done() {
            return Ok(false);
        }
        let mut replies = Vec::new();
        let event = self.reader.feed(data, &mut replies);
        if !replies.is_empty() && self.ending.forwards() {
            out.send(&replies)?;
        }
        let id = self.id;
        match event {
            None => return Ok(false),
            Some(Inbound::Close { code, reason }) => {
                if self.several() {
                    info!("[c{id}] client closed the capture of several targets");
                } else {
                    info!(
                        "[c{id}] client closed the capture ({}{}{})",
                        code.map_or("no code".to_string(), |c| c.to_string()),
                        if reason.is_empty() { "" } else { ": " },
                        reason
                    );
                }
                if self.ending.forwards() {
                    self.ending = Ending::ClientClosed(code);
                }
            }
            Some(Inbound::Violation { code, reason }) => {
                info!("[c{id}] client broke the websocket protocol: {reason}");
                if self.ending.forwards() {
                    self.ending = Ending::Violation(code, reason);
                }
            }
        }
        Ok(true)
    }

    /// One read of target `i`'s output, relayed as one binary message.
    /// `chunk` is the loop's read buffer: the merger may patch it in place.
    pub(super) fn relay(
        &mut self,
        i: usize,
        chunk: &mut [u8],
        out: &mut dyn Out,
        actions: &mut VecDeque<Action>,
    ) -> Result<bool, Broken> {
        if !self.ending.forwards() {
            return Ok(false);
        }
        match &mut self.relay {
            Relay::Edit(editor) => {
                let data = editor.feed(chunk);
                if !data.is_empty() {
                    send_message(out, &data)?;
                }
            }
            Relay::Merge(m) => {
                let Merging {
                    merger,
                    scratch,
                    parts,
                } = &mut **m;
                scratch.clear();
                parts.clear();
                let failed = merger.feed_parts(i, chunk, scratch, parts).err();
                if !parts.is_empty() {
                    send_merged(out, chunk, scratch, parts)?;
                }
                if let Some(e) = failed {
                    let p = &mut self.programs[i];
                    warn!(
                        "[c{}] target {}: {e}; its output is left out",
                        self.id,
                        p.label.as_deref().unwrap_or("")
                    );
                    p.broken = Some(e.0);
                    self.output_ended(i, out, actions)?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Target `i`'s output ended (EOF, a read error, or bad pcapng).
    pub(super) fn output_ended(
        &mut self,
        i: usize,
        out: &mut dyn Out,
        actions: &mut VecDeque<Action>,
    ) -> Result<(), Broken> {
        let Some(p) = self.programs.get_mut(i) else {
            return Ok(());
        };
        if !p.out_open {
            return Ok(());
        }
        p.out_open = false;
        let forwards = self.ending.forwards();
        match &mut self.relay {
            Relay::Edit(editor) => {
                if forwards {
                    let rest = editor.finish();
                    if !rest.is_empty() {
                        send_message(out, &rest)?;
                    }
                }
            }
            Relay::Merge(m) => {
                if let Err(e) = m.merger.finish(i) {
                    p.broken.get_or_insert(e.0);
                }
            }
        }
        // The driver may still hold the pipe (after bad output): let it go.
        actions.push_back(Action::Forget(Source::Stdout(i)));
        Ok(())
    }

    /// Bytes target `i`'s program wrote on stderr; `None` at its end.
    pub(super) fn stderr(&mut self, i: usize, data: Option<&[u8]>) {
        let id = self.id;
        let Some(p) = self.programs.get_mut(i) else {
            return;
        };
        let prefix = p.prefix();
        let seen = |l: &str| debug!("[c{id}] {prefix}capture program: {l}");
        match data {
            Some(d) => p.err.feed(d, seen),
            None => {
                p.err_open = false;
                p.err.finish(seen);
            }
        }
    }

    /// The program with `pid` was reaped. False if it is not this capture's.
    pub(super) fn reaped(
        &mut self,
        pid: u32,
        status: ExitStatus,
        actions: &mut VecDeque<Action>,
    ) -> bool {
        let forwards = self.ending.forwards();
        let Some(i) = self
            .programs
            .iter()
            .position(|p| p.pid == pid && !p.reaped())
        else {
            return false;
        };
        let p = &mut self.programs[i];
        let stop = match p.life {
            Life::Terminating { stop, .. } | Life::Killed { stop } => Some(stop),
            _ => None,
        };
        p.life = Life::Reaped { status, stop };
        debug!(
            "[c{}] {}capture program {pid} reaped: {status:?}",
            self.id,
            p.prefix()
        );
        if !forwards {
            // Nobody will read the rest: let the pipes go now.
            drop_pipes(p, i, actions);
        }
        true
    }

    /// Decides, after any change, whether the capture is over and what the
    /// client gets: a program whose output ended is stopped (the others go
    /// on); once every program is reaped (and, while relaying, every pipe
    /// is drained) the close.
    pub(super) fn check_end(&mut self, env: &Env, actions: &mut VecDeque<Action>) -> Option<Close> {
        for p in self.programs.iter_mut() {
            if p.life == Life::Running && !p.out_open {
                // Nothing more will come from it.
                p.terminate(Stop::Own, env, self.id, actions);
            }
        }
        if self.programs.iter().any(|p| !p.reaped()) {
            return None;
        }
        let draining = self.programs.iter().any(|p| p.out_open || p.err_open);
        if self.ending.forwards() && draining {
            // The rest of the output (and the error line) first.
            return None;
        }
        if let Some(since) = self.paused_since.take() {
            metrics::paused_for(env.now.saturating_duration_since(since));
        }
        match &self.ending {
            Ending::Running => metrics::ended(metrics::End::ProgramEnded),
            Ending::ClientClosed(_) => metrics::ended(metrics::End::ClientClosed),
            Ending::ClientGone => metrics::ended(metrics::End::ClientGone),
            Ending::Violation(..) => metrics::ended(metrics::End::Violation),
            Ending::Shutdown => metrics::ended(metrics::End::Shutdown),
            // Never ran as a whole: counted as refused instead.
            Ending::Refused(r) => r.count(),
        }
        self.drop_all_pipes(actions);
        let several = self.several();
        let outcomes = || {
            let outcomes: Vec<(String, String)> = self
                .programs
                .iter()
                .map(|p| (p.label.clone().unwrap_or_default(), p.outcome()))
                .collect();
            let pairs: Vec<(&str, &str)> = outcomes
                .iter()
                .map(|(l, o)| (l.as_str(), o.as_str()))
                .collect();
            crate::proto::multi::outcomes_reason(&pairs)
        };
        let (code, reason) = match &self.ending {
            Ending::Running if several => {
                let failed = self.programs.iter().any(Program::failed);
                let code = if failed {
                    ws::INTERNAL_ERROR
                } else {
                    ws::NORMAL
                };
                (code, outcomes())
            }
            Ending::Running => self.programs[0].exit_reason(),
            Ending::Shutdown => (
                ws::GOING_AWAY,
                "the capture service is shutting down".into(),
            ),
            Ending::ClientClosed(code) => {
                // Answered only now: every program has been reaped.
                let code = code.unwrap_or(ws::NORMAL);
                let reason = if several { outcomes() } else { String::new() };
                return Some(Close::Answer(code, reason));
            }
            Ending::ClientGone => return Some(Close::Gone),
            Ending::Violation(code, why) => (*code, why.to_string()),
            Ending::Refused(r) => (r.code(), r.text()),
        };
        if several {
            info!(
                "[c{}] capture of several targets ended: {code} {reason}",
                self.id
            );
        } else {
            info!("[c{}] capture ended: {code} {reason}", self.id);
        }
        Some(Close::Send(code, reason))
    }
}

fn drop_pipes(p: &mut Program, i: usize, actions: &mut VecDeque<Action>) {
    if std::mem::take(&mut p.out_open) {
        actions.push_back(Action::Forget(Source::Stdout(i)));
    }
    if std::mem::take(&mut p.err_open) {
        actions.push_back(Action::Forget(Source::Stderr(i)));
    }
}

/// Sends one binary message: the header from the stack, the payload
/// straight from the caller's buffer.
fn send_message(out: &mut dyn Out, data: &[u8]) -> Result<(), Broken> {
    let mut head = [0u8; ws::MAX_SERVER_HEADER];
    let n = ws::binary_header(data.len(), &mut head);
    out.send_parts(&head[..n], data)?;
    metrics::BYTES_RELAYED.add(data.len() as u64);
    Ok(())
}

/// One read's merged blocks as one binary message: the websocket header and
/// the pieces (ranges of the read buffer and of what the merger made) in
/// one `writev`, with no copy when the socket takes them.
fn send_merged(out: &mut dyn Out, chunk: &[u8], made: &[u8], parts: &[Part]) -> Result<(), Broken> {
    let piece = |p: &Part| match *p {
        Part::Input(s, e) => &chunk[s..e],
        Part::Owned(s, e) => &made[s..e],
    };
    let len: usize = parts.iter().map(|p| piece(p).len()).sum();
    if parts.len() > MAX_PARTS {
        let mut joined = Vec::with_capacity(len);
        for p in parts {
            joined.extend_from_slice(piece(p));
        }
        return send_message(out, &joined);
    }
    let mut head = [0u8; ws::MAX_SERVER_HEADER];
    let n = ws::binary_header(len, &mut head);
    let mut slices: [&[u8]; MAX_PARTS + 1] = [&[]; MAX_PARTS + 1];
    slices[0] = &head[..n];
    for (s, p) in slices[1..].iter_mut().zip(parts) {
        *s = piece(p);
    }
    out.send_slices(&slices[..parts.len() + 1])?;
    metrics::BYTES_RELAYED.add(len as u64);
    Ok(())
}

/// Sends the merged section header a capture of several targets starts
/// with, so the client has a valid section before the first packet.
pub(super) fn send_header(out: &mut dyn Out, header: &[u8]) -> Result<(), Broken> {
    send_message(out, header)
}
