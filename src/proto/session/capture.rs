//! The `Capturing` phase: a running capture's sources (one per target, see
//! [`super::source`]), the relay of their output to the client, the
//! client's frames, and how it ends.
//!
//! A source whose output ends is stopped (the others go on); the capture
//! ends when every source has ended and, while it still relays, every
//! output and diagnostics channel is drained. Then the client gets the
//! close this module decides from the [`Ending`] and what each source did.

use std::time::Instant;

use log::{debug, info, warn};

use super::source::{CaptureSource, Life, Sources, Stop};
use super::{
    answer_close, send_close, Broken, Count, Cx, Event, Out, Phase, Refusal, Source, LOW_WATER,
};
use crate::metrics::End;
use crate::proto::http;
use crate::proto::merge::{Merger, Part};
use crate::proto::pcapng::ShbEditor;
use crate::proto::ws::{self, FrameReader, Inbound};

/// Most pieces one merged message is sent in without copying; a read that
/// the merger cut into more (blocks it rebuilt between blocks it passed)
/// is joined into one buffer first. 64 KiB of 1500-byte packets is one
/// piece, or a few around a block that spanned reads.
const MAX_PARTS: usize = 32;

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
    /// Not every source could start: the ones that did are stopped, and
    /// the client hears this once they have ended.
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

pub(super) struct Capture {
    pub sources: Sources,
    pub relay: Relay,
    pub reader: FrameReader,
    pub ending: Ending,
    /// When the outputs were paused for the client's queue (the paused-time
    /// metric); `None` while they are read.
    pub paused_since: Option<Instant>,
    /// The client is not read: pongs owed to it would grow the output
    /// queue past the high watermark.
    pub client_paused: bool,
}

/// Starts relaying once every source started (or one failed: `failure`):
/// the upgrade is answered and the capture runs, or stops what started and
/// tells why once those have ended. `early`: client bytes that came behind
/// the handshake.
pub(super) fn begin(
    cx: &mut Cx,
    accept: &str,
    early: &[u8],
    relay: Relay,
    sources: Vec<CaptureSource>,
    failure: Option<Refusal>,
) -> Phase {
    let mut c = Box::new(Capture {
        sources: sources.into(),
        relay,
        reader: FrameReader::new(),
        ending: Ending::Running,
        paused_since: None,
        client_paused: false,
    });
    let sent = cx.host.send(&http::switching_protocols(accept));
    if let Some(r) = failure {
        // All start or none does: the ones started are stopped, and the
        // client hears why once they have ended.
        cx.host.release_namespaces();
        c.ending = Ending::Refused(Box::new(r));
        c.drop_all_channels(cx);
        c.terminate_all(cx);
        return check_end(c, cx);
    }
    cx.host.count(Count::Started(c.sources.len()));
    let header = match &mut c.relay {
        Relay::Merge(m) => m.merger.take_header(),
        Relay::Edit(_) => None,
    };
    let sent = sent.and_then(|()| match header {
        Some(h) => send_message(cx.host, &h),
        None => Ok(()),
    });
    if let Err(e) = sent {
        return client_broke(c, cx, e);
    }
    if early.is_empty() {
        return Phase::Capturing(c);
    }
    on(c, cx, Event::ClientData(early))
}

/// The `Capturing` phase's transitions.
pub(super) fn on(mut c: Box<Capture>, cx: &mut Cx, ev: Event) -> Phase {
    match ev {
        Event::Output(i, chunk) => match c.relay(cx, i, chunk) {
            // The relay's hot path: nothing about the capture changed.
            Ok(false) => return Phase::Capturing(c),
            Ok(true) => {}
            Err(e) => return client_broke(c, cx, e),
        },
        Event::OutputEnd(i, error) => {
            if let Some(e) = error {
                warn!("[c{}] reading the capture output failed: {e}", cx.id);
            }
            if let Err(e) = c.output_ended(cx, i) {
                return client_broke(c, cx, e);
            }
        }
        Event::Diag(i, data) => {
            let Some(s) = c.sources.get_mut(i) else {
                return Phase::Capturing(c);
            };
            s.diag(cx.id, data);
            if data.is_some() {
                return Phase::Capturing(c);
            }
        }
        Event::Exited(i, status) => {
            let forwards = c.ending.forwards();
            let Some(s) = c.sources.get_mut(i).filter(|s| !s.ended()) else {
                return Phase::Capturing(c);
            };
            s.end(cx.id, status);
            if !forwards {
                // Nobody will read the rest: let the channels go now.
                drop_channels(s, i, cx);
            }
        }
        Event::SourceEnded(i, how) => {
            if c.sources.get(i).is_none_or(|s| s.ended()) {
                return Phase::Capturing(c);
            }
            if let Err(e) = c.output_ended(cx, i) {
                return client_broke(c, cx, e);
            }
            c.sources[i].end_native(cx.id, how);
        }
        Event::ClientData(data) => match c.feed_frames(cx, data) {
            Ok(false) => return Phase::Capturing(c),
            Ok(true) => c.terminate_all(cx),
            Err(e) => return client_broke(c, cx, e),
        },
        Event::ClientEof => {
            debug!("[c{}] client closed the connection", cx.id);
            if c.ending.forwards() || matches!(c.ending, Ending::ClientClosed(_)) {
                c.ending = Ending::ClientGone;
            }
            c.terminate_all(cx);
        }
        Event::ClientBroke(e) => return client_broke(c, cx, e),
        Event::Writable => {
            if cx.host.pending() <= LOW_WATER {
                c.resume(cx);
            }
            return Phase::Capturing(c);
        }
        Event::Timeout => {
            for (i, s) in c.sources.iter_mut().enumerate() {
                s.on_timeout(i, cx);
            }
        }
        Event::Shutdown => {
            if c.ending.forwards() {
                c.ending = Ending::Shutdown;
            }
            c.terminate_all(cx);
        }
        _ => return Phase::Capturing(c),
    }
    check_end(c, cx)
}

/// The client's connection broke: nothing more is sent; every source is
/// stopped and the session ends once they have ended.
fn client_broke(mut c: Box<Capture>, cx: &mut Cx, e: Broken) -> Phase {
    debug!("[c{}] client connection broke: {e}", cx.id);
    c.ending = Ending::ClientGone;
    // Nobody will read the rest of what ended sources left.
    for (i, s) in c.sources.iter_mut().enumerate() {
        if s.ended() {
            drop_channels(s, i, cx);
        }
    }
    c.terminate_all(cx);
    check_end(c, cx)
}

/// Decides, after any change, whether the capture is over and what the
/// client gets: a source whose output ended is stopped (the others go on);
/// once every source has ended (and, while relaying, every channel is
/// drained) the close.
fn check_end(mut c: Box<Capture>, cx: &mut Cx) -> Phase {
    for (i, s) in c.sources.iter_mut().enumerate() {
        if s.life == Life::Running && !s.out_open {
            // Nothing more will come from it.
            s.terminate(i, Stop::Own, cx);
        }
    }
    if c.sources.iter().any(|s| !s.ended()) {
        return Phase::Capturing(c);
    }
    let draining = c.sources.iter().any(|s| s.out_open || s.diag_open());
    if c.ending.forwards() && draining {
        // The rest of the output (and the error line) first.
        return Phase::Capturing(c);
    }
    if let Some(since) = c.paused_since.take() {
        cx.host
            .count(Count::Paused(cx.env.now.saturating_duration_since(since)));
    }
    match &c.ending {
        Ending::Running => cx.host.count(Count::Ended(End::ProgramEnded)),
        Ending::ClientClosed(_) => cx.host.count(Count::Ended(End::ClientClosed)),
        Ending::ClientGone => cx.host.count(Count::Ended(End::ClientGone)),
        Ending::Violation(..) => cx.host.count(Count::Ended(End::Violation)),
        Ending::Shutdown => cx.host.count(Count::Ended(End::Shutdown)),
        // Never ran as a whole: counted as refused instead.
        Ending::Refused(r) => cx.host.count(Count::Refused(r.metric())),
    }
    c.drop_all_channels(cx);
    let several = c.several();
    let outcomes = || {
        let outcomes: Vec<(String, String)> = c
            .sources
            .iter()
            .map(|s| (s.label.clone().unwrap_or_default(), s.outcome()))
            .collect();
        let pairs: Vec<(&str, &str)> = outcomes
            .iter()
            .map(|(l, o)| (l.as_str(), o.as_str()))
            .collect();
        crate::proto::multi::outcomes_reason(&pairs)
    };
    let (code, reason) = match &c.ending {
        Ending::Running if several => {
            let failed = c.sources.iter().any(CaptureSource::failed);
            let code = if failed {
                ws::INTERNAL_ERROR
            } else {
                ws::NORMAL
            };
            (code, outcomes())
        }
        Ending::Running => c.sources[0].exit_reason(),
        Ending::Shutdown => (
            ws::GOING_AWAY,
            "the capture service is shutting down".into(),
        ),
        Ending::ClientClosed(code) => {
            // Answered only now: every source has ended.
            let code = code.unwrap_or(ws::NORMAL);
            let reason = if several { outcomes() } else { String::new() };
            return answer_close(cx, code, &reason);
        }
        Ending::ClientGone => return Phase::Done,
        Ending::Violation(code, why) => (*code, why.to_string()),
        Ending::Refused(r) => (r.code(), r.text()),
    };
    if several {
        info!(
            "[c{}] capture of several targets ended: {code} {reason}",
            cx.id
        );
    } else {
        info!("[c{}] capture ended: {code} {reason}", cx.id);
    }
    send_close(cx, code, &reason)
}

impl Capture {
    pub(super) fn weight(&self) -> usize {
        self.sources.len()
    }

    fn several(&self) -> bool {
        matches!(self.relay, Relay::Merge(_))
    }

    /// The soonest stop repeat or kill due.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.sources
            .iter()
            .filter_map(CaptureSource::deadline)
            .min()
    }

    pub(super) fn may_read(&mut self, src: Source, full: bool, now: Instant) -> bool {
        match src {
            Source::Client => {
                self.client_paused |= full;
                !full
            }
            Source::Output(i) => {
                let Some(s) = self.sources.get(i) else {
                    return false;
                };
                if !s.out_open {
                    // A source the service runs itself still tells its end
                    // there after its output was let go.
                    return s.reads_its_end();
                }
                if full && self.ending.forwards() {
                    // Every output of the capture waits for the client.
                    self.paused_since.get_or_insert(now);
                    return false;
                }
                true
            }
            Source::Diag(i) => self.sources.get(i).is_some_and(CaptureSource::diag_open),
            Source::Upstream => false,
        }
    }

    /// The client's queue is below the low watermark: what was paused is
    /// read again.
    fn resume(&mut self, cx: &mut Cx) {
        if std::mem::take(&mut self.client_paused) {
            cx.host.resume(Source::Client);
        }
        if let Some(since) = self.paused_since.take() {
            cx.host
                .count(Count::Paused(cx.env.now.saturating_duration_since(since)));
            for (i, s) in self.sources.iter().enumerate() {
                if s.out_open {
                    cx.host.resume(Source::Output(i));
                }
            }
        }
    }

    /// Asks every source still running to stop.
    fn terminate_all(&mut self, cx: &mut Cx) {
        for (i, s) in self.sources.iter_mut().enumerate() {
            s.terminate(i, Stop::Whole, cx);
        }
    }

    /// Lets every channel go (a capture refused halfway reads nothing).
    fn drop_all_channels(&mut self, cx: &mut Cx) {
        for (i, s) in self.sources.iter_mut().enumerate() {
            drop_channels(s, i, cx);
        }
    }

    /// Frames from the client: pongs are owed while output is relayed; a
    /// close or a protocol violation ends the capture (true).
    fn feed_frames(&mut self, cx: &mut Cx, data: &[u8]) -> Result<bool, Broken> {
        if self.reader.is_done() {
            return Ok(false);
        }
        let mut replies = Vec::new();
        let event = self.reader.feed(data, &mut replies);
        if !replies.is_empty() && self.ending.forwards() {
            cx.host.send(&replies)?;
        }
        let id = cx.id;
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
    /// True if the capture changed (a target given up).
    fn relay(&mut self, cx: &mut Cx, i: usize, chunk: &mut [u8]) -> Result<bool, Broken> {
        if !self.ending.forwards() {
            return Ok(false);
        }
        match &mut self.relay {
            Relay::Edit(editor) => {
                let data = editor.feed(chunk);
                if !data.is_empty() {
                    send_message(cx.host, &data)?;
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
                    send_merged(cx.host, chunk, scratch, parts)?;
                }
                if let Some(e) = failed {
                    let s = &mut self.sources[i];
                    warn!(
                        "[c{}] target {}: {e}; its output is left out",
                        cx.id,
                        s.label.as_deref().unwrap_or("")
                    );
                    s.broken = Some(e.0);
                    self.output_ended(cx, i)?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Target `i`'s output ended (EOF, a read error, or bad pcapng).
    fn output_ended(&mut self, cx: &mut Cx, i: usize) -> Result<(), Broken> {
        let Some(s) = self.sources.get_mut(i) else {
            return Ok(());
        };
        if !s.out_open {
            return Ok(());
        }
        s.out_open = false;
        let forwards = self.ending.forwards();
        match &mut self.relay {
            Relay::Edit(editor) => {
                if forwards {
                    let rest = editor.finish();
                    if !rest.is_empty() {
                        send_message(cx.host, &rest)?;
                    }
                }
            }
            Relay::Merge(m) => {
                if let Err(e) = m.merger.finish(i) {
                    s.broken.get_or_insert(e.0);
                }
            }
        }
        // The host may still hold the channel (after bad output): let it go.
        cx.host.forget(Source::Output(i));
        Ok(())
    }
}

fn drop_channels(s: &mut CaptureSource, i: usize, cx: &mut Cx) {
    if std::mem::take(&mut s.out_open) {
        cx.host.forget(Source::Output(i));
    }
    if s.close_diag() {
        cx.host.forget(Source::Diag(i));
    }
}

/// Sends one binary message: the header from the stack, the payload
/// straight from the caller's buffer.
fn send_message(out: &mut dyn super::Host, data: &[u8]) -> Result<(), Broken> {
    let mut head = [0u8; ws::MAX_SERVER_HEADER];
    let n = ws::binary_header(data.len(), &mut head);
    out.send_parts(&head[..n], data)?;
    out.count(Count::Relayed(data.len()));
    Ok(())
}

/// One read's merged blocks as one binary message: the websocket header and
/// the pieces (ranges of the read buffer and of what the merger made) in
/// one `writev`, with no copy when the socket takes them.
fn send_merged(
    out: &mut dyn super::Host,
    chunk: &[u8],
    made: &[u8],
    parts: &[Part],
) -> Result<(), Broken> {
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
    out.count(Count::Relayed(len));
    Ok(())
}

#[allow(dead_code)]
fn _out_is_object_safe(_: &dyn Out) {}
