//! The whole client-connection path without sockets: arbitrary bytes arrive
//! on a server session as a client would send them (request heads, possibly
//! pipelined, a websocket upgrade, then websocket frames), split into reads
//! where the fuzzer chooses.
//!
//! The model follows `src/session/` (`parse_heads`, `handle_request`,
//! `start_capture`, `read_frames`, `read_closing`) step for step, with the
//! parts that need the kernel (namespaces, the capture program, the discovery
//! service) replaced by their outcome. Input layout: one flag byte (bit 0:
//! `--proxy-discovery`; bit 1: the smallest `--max-head-bytes` and
//! `--max-headers`, 256 and 4, so that oversized heads are in reach; bit 2:
//! the client follows its bytes with pings worth twice the output bound,
//! so that the bound is in reach), then the read sizes (see
//! `fuzz_support::Chunker`), then the client's bytes.
//! Bit 3 of the flag byte turns on the access gate's token check (token
//! `fuzz-token`) and admits the origin `https://ui.example`; without it the
//! gate still refuses foreign `Origin`s on upgrades, as the service does.
//!
//! Invariants: no panic; every response is well-formed HTTP/1.1 starting with
//! `HTTP/1.1 `; a head is never held past `MAX_HEAD`; the frame reader never
//! buffers more than 125 bytes; every close frame carries at most 125 payload
//! bytes with a UTF-8 reason; pongs are well-formed; a client that never
//! reads (the model's client never does) cannot make the server queue more
//! than `conn::HIGH_WATER` plus one read's worth of answers, because the
//! server stops reading it there; and what the server writes does not depend
//! on how the client's bytes were split into reads (up to where it stopped
//! reading, the shorter answer is the start of the longer).
//!
//! Where the model knowingly differs from `src/session/`, the difference is
//! named at the place (see `refuse`).

#![no_main]

use fuzz_support::{check_close_frame, check_pongs, check_response, check_shaped, split_input};
use libfuzzer_sys::fuzz_target;
use packetflix::conn::HIGH_WATER;
use packetflix::front::{route, Route};
use packetflix::http::{self, parse_request_limited, MAX_HEAD, MAX_HEADERS};
use packetflix::params::{capture_params, CaptureParams};
use packetflix::pcapng::{target_document, TargetInfo, TARGET_MARKER};
use packetflix::proxy::upstream_head;
use packetflix::ws::{self, FrameReader, Inbound};
use std::net::IpAddr;

/// Control frames carry at most 125 bytes of payload (RFC 6455 5.5): the most
/// a frame reader may ever hold.
const MAX_BUFFERED: usize = 125;
/// The reactor's read buffer (reactor.rs `READ_BUF`): the most one read of
/// the client socket takes.
const READ_BUF: usize = 64 * 1024;
/// Bytes of a frame the reader may hold from earlier reads: a header (at
/// most 14 bytes) or a control payload (at most 125).
const CARRIED: usize = 14 + MAX_BUFFERED;
/// What the queue may reach: the bound, one read's answers (a pong is never
/// longer than the ping it answers, part of which may have come in earlier
/// reads), and a close frame.
const MAX_QUEUED: usize = HIGH_WATER + READ_BUF + CARRIED + 127;

enum Phase {
    Head(Vec<u8>),
    /// Streaming a capture; the reader's event ends the inbound side.
    Streaming(FrameReader),
    /// Our close frame is out; reading until the client's close.
    Closing(FrameReader),
    /// Waiting for discovery or flushing a final response: client bytes are
    /// read and dropped.
    Discard,
    Done,
}

/// What the server did, in order: the bytes it wrote and what it decided.
#[derive(Debug, Default, PartialEq)]
struct Transcript {
    out: Vec<u8>,
    log: Vec<String>,
    /// The server stopped reading the client (output bound reached).
    stopped: bool,
}

/// The smallest limits the command line allows (`--max-head-bytes`,
/// `--max-headers`; config.rs).
const SMALL_LIMITS: (usize, usize) = (256, 4);

struct Session {
    proxy: bool,
    /// `--max-head-bytes` and `--max-headers`.
    limits: (usize, usize),
    /// Tokens and admitted origins (`--token-file`, `--allow-origin`).
    policy: packetflix::auth::Policy,
    phase: Phase,
    t: Transcript,
}

impl Session {
    fn new(proxy: bool, limits: (usize, usize)) -> Self {
        Session {
            proxy,
            limits,
            policy: packetflix::auth::Policy::default(),
            phase: Phase::Head(Vec::new()),
            t: Transcript::default(),
        }
    }

    /// One socket read at most `READ_BUF` bytes long, as the reactor reads.
    fn read(&mut self, data: &[u8]) {
        for piece in data.chunks(READ_BUF) {
            self.read_one(piece);
        }
    }

    fn read_one(&mut self, data: &[u8]) {
        // session/mod.rs `read_frames`: above the high watermark a streaming
        // client is not read until it takes what it is owed.
        if matches!(self.phase, Phase::Streaming(_)) && self.t.out.len() >= HIGH_WATER {
            self.t.stopped = true;
            return;
        }
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Head(mut buf) => {
                buf.extend_from_slice(data);
                self.phase = Phase::Head(buf);
                self.parse_heads();
            }
            Phase::Streaming(mut reader) => {
                if !reader.is_done() {
                    let mut replies = Vec::new();
                    let ev = reader.feed(data, &mut replies);
                    assert!(reader.buffered() <= MAX_BUFFERED);
                    check_pongs(&replies);
                    assert!(
                        replies.len() <= data.len() + CARRIED,
                        "answers longer than the read"
                    );
                    self.t.out.extend_from_slice(&replies);
                    if let Some(ev) = ev {
                        self.inbound_end(&ev);
                    }
                    assert!(
                        self.t.out.len() <= MAX_QUEUED,
                        "{} bytes queued for a client that never reads",
                        self.t.out.len()
                    );
                }
                self.phase = Phase::Streaming(reader);
            }
            Phase::Closing(mut reader) => {
                let mut replies = Vec::new();
                let ev = reader.feed(data, &mut replies);
                assert!(reader.buffered() <= MAX_BUFFERED);
                check_pongs(&replies);
                // Pongs are not owed once our close frame is out.
                self.phase = match ev {
                    Some(ev) => {
                        self.t.log.push(format!("closing ended by {ev:?}"));
                        Phase::Done
                    }
                    None => Phase::Closing(reader),
                };
            }
            Phase::Discard => self.phase = Phase::Discard,
            Phase::Done => {}
        }
    }

    fn parse_heads(&mut self) {
        loop {
            let Phase::Head(buf) = &mut self.phase else {
                return;
            };
            if buf.is_empty() {
                return;
            }
            let (max_head, max_headers) = self.limits;
            // session/mod.rs `parse_heads`: the head rules (Host,
            // Content-Length) hold for every request.
            let parsed = parse_request_limited(buf, max_head, max_headers).and_then(|r| match r {
                Some(req) => req.check_rules().map(|()| Some(req)),
                None => Ok(None),
            });
            match parsed {
                Ok(None) => {
                    assert!(buf.len() < max_head, "{} bytes held for a head", buf.len());
                    return;
                }
                Ok(Some(req)) => {
                    assert!(req.head_len > 0 && req.head_len <= buf.len());
                    assert!(req.head_len <= max_head);
                    assert!(req.headers.len() <= max_headers);
                    let leftover = buf.split_off(req.head_len);
                    self.handle_request(req, leftover);
                }
                Err(e) => {
                    let status = e.status();
                    assert!(status == 400 || status == 431, "head error status {status}");
                    let resp = http::text_response(status, &e.to_string(), true);
                    assert_eq!(check_response(&resp, false), status);
                    self.t.out.extend_from_slice(&resp);
                    self.t.log.push(format!("bad head: {status}"));
                    self.phase = Phase::Discard;
                    return;
                }
            }
        }
    }

    fn handle_request(&mut self, req: http::Request, leftover: Vec<u8>) {
        let route = route(&req, self.proxy);
        // The access gate (`auth::check`) comes before everything else.
        if let Err(refusal) = packetflix::auth::check(&self.policy, &req, &route) {
            let resp = refusal.response();
            assert_eq!(check_response(&resp, false), refusal.status());
            self.t.out.extend_from_slice(&resp);
            self.t.log.push(format!("refused {}", refusal.status()));
            self.phase = Phase::Discard;
            return;
        }
        match route {
            Route::Respond {
                status,
                bytes,
                keep_alive,
            } => {
                let got = check_response(&bytes, req.method == "HEAD");
                assert_eq!(got, status);
                assert!(
                    !keep_alive || req.keep_alive(),
                    "connection kept though the client asked to close"
                );
                self.t.out.extend_from_slice(&bytes);
                self.t.log.push(format!("respond {status} {keep_alive}"));
                // Pipelining: the rest is the next request.
                self.phase = if keep_alive {
                    Phase::Head(leftover)
                } else {
                    Phase::Discard
                };
            }
            Route::Capture { accept } => {
                assert_eq!(accept.len(), 28, "accept key {accept:?}");
                self.t.log.push("capture".into());
                self.start_capture(&req, &accept, &leftover);
            }
            Route::Proxy { target } => {
                assert!(self.proxy);
                assert!(target.starts_with('/') || target.starts_with('*'));
                // The head goes to the discovery service (checked in the
                // `proxy` target); the rest of the connection is its business.
                let head = upstream_head(
                    &req,
                    &target,
                    "ghostwire:5000",
                    IpAddr::from([127, 0, 0, 1]),
                );
                assert!(head.ends_with(b"\r\n\r\n"));
                self.t.log.push(format!("proxy {target}"));
                self.phase = Phase::Discard;
            }
        }
    }

    fn start_capture(&mut self, req: &http::Request, accept: &str, leftover: &[u8]) {
        let params = match capture_params(req) {
            Ok(p) => p,
            Err(reason) => {
                return self.refuse(
                    accept,
                    ws::POLICY_VIOLATION,
                    &format!("capture refused: {reason}"),
                    leftover,
                );
            }
        };
        check_params(&params);
        // A named target without a usable netns goes to the discovery
        // service (its answer is fuzzed in the `discovery` target); client
        // bytes meanwhile are read and dropped.
        if params.target.netns == 0 {
            if !params.described || params.target.name.is_empty() {
                return self.refuse(
                    accept,
                    ws::POLICY_VIOLATION,
                    "capture refused: the target has no valid netns and no name to look up with the discovery service",
                    leftover,
                );
            }
            self.t.log.push("discovering".into());
            self.phase = Phase::Discard;
            return;
        }
        // The namespace is found (the kernel's part); then the interfaces.
        if let Err(reason) = params.interfaces() {
            return self.refuse(
                accept,
                ws::POLICY_VIOLATION,
                &format!("capture refused: {reason}"),
                leftover,
            );
        }
        // The capture program is started; its output goes through the SHB
        // editor with this document (fuzzed in `pcapng_shb`).
        check_document(&params);
        let resp = http::switching_protocols(accept);
        check_response(&resp, false);
        self.t.out.extend_from_slice(&resp);
        self.t.log.push("streaming".into());
        self.phase = Phase::Streaming(FrameReader::new());
        if !leftover.is_empty() {
            // Frames the client sent right behind its handshake.
            self.read(leftover);
        }
    }

    /// Deviation from session/capture.rs as of this writing: its `refuse` drops
    /// the bytes that came in the same read as the head (`leftover`), so a
    /// close frame sent right behind the handshake is seen or not depending
    /// on how TCP split the bytes. The model feeds them to the closing
    /// reader, as `spawn_capture` does for a started capture.
    fn refuse(&mut self, accept: &str, code: u16, reason: &str, leftover: &[u8]) {
        let shaped = ws::shape_reason(reason);
        check_shaped(reason, shaped);
        let resp = http::switching_protocols(accept);
        check_response(&resp, false);
        let frame = ws::close_frame(code, reason);
        let (got_code, got_reason) = check_close_frame(&frame);
        assert_eq!((got_code, got_reason.as_str()), (code, shaped));
        self.t.out.extend_from_slice(&resp);
        self.t.out.extend_from_slice(&frame);
        self.t.log.push(format!("refused {code}"));
        self.phase = Phase::Closing(FrameReader::new());
        if !leftover.is_empty() {
            self.read(leftover);
        }
    }

    /// The client's side ended: close or violation. The session answers once
    /// the capture program is reaped, which the model takes as immediate.
    fn inbound_end(&mut self, ev: &Inbound) {
        let frame = match ev {
            Inbound::Close { code, reason } => {
                assert!(
                    reason.len() <= 123,
                    "close reason of {} bytes",
                    reason.len()
                );
                if let Some(c) = code {
                    assert!(fuzz_support::close_code_sendable(*c), "accepted code {c}");
                }
                ws::close_frame(code.unwrap_or(ws::NORMAL), "")
            }
            Inbound::Violation { code, reason } => {
                assert!(*code == ws::PROTOCOL_ERROR || *code == ws::INVALID_PAYLOAD);
                ws::close_frame(*code, reason)
            }
        };
        check_close_frame(&frame);
        self.t.out.extend_from_slice(&frame);
        self.t.log.push(format!("inbound end {ev:?}"));
    }
}

/// What `capture_params` accepted must be what its contract promises.
fn check_params(p: &CaptureParams) {
    use packetflix::params::{valid_ifname, Nifs, MAX_FILTER};
    if let Nifs::List(l) = &p.nifs {
        assert!(!l.is_empty());
        for (i, n) in l.iter().enumerate() {
            assert!(valid_ifname(n).is_ok(), "accepted interface {n:?}");
            assert!(!l[..i].contains(n), "duplicate interface {n:?}");
        }
    }
    for n in p.interfaces().unwrap_or_default() {
        assert!(
            valid_ifname(&n).is_ok() && !n.starts_with('-'),
            "interface {n:?}"
        );
    }
    if let Some(f) = &p.filter {
        assert!(f.len() <= MAX_FILTER && !f.contains('\0') && !f.trim().is_empty());
    }
}

/// The SHB document for an accepted capture: starts with the marker, holds
/// the marker once, and no user text can add lines to it.
fn check_document(p: &CaptureParams) {
    let t = &p.target;
    let doc = target_document(&TargetInfo {
        container_name: &t.name,
        container_type: &t.kind,
        node_name: &t.node_name,
        cluster_uid: t.cluster.as_ref().map(|c| c.uid.as_str()),
        capture_filter: p.filter.as_deref(),
        no_promiscuous: p.chaste,
    });
    assert!(doc.starts_with(TARGET_MARKER));
    assert_eq!(doc.matches(TARGET_MARKER).count(), 1);
    let lines = 2
        + 3
        + if t.cluster.is_some() { 2 } else { 0 }
        + usize::from(p.filter.is_some())
        + usize::from(p.chaste);
    assert_eq!(doc.lines().count(), lines, "document lines: {doc:?}");
}

fn run(reads: &[&[u8]], proxy: bool, limits: (usize, usize), secured: bool) -> Transcript {
    let mut s = Session::new(proxy, limits);
    if secured {
        let tokens = packetflix::auth::TokenSet::parse("fuzz-token\n").ok();
        s.policy = packetflix::auth::Policy::new(&["https://ui.example".to_string()], tokens)
            .expect("fixed policy parses");
    }
    for r in reads {
        s.read(r);
    }
    s.t
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let proxy = flags & 1 != 0;
    let limits = if flags & 2 != 0 {
        SMALL_LIMITS
    } else {
        (MAX_HEAD, MAX_HEADERS)
    };
    let (mut chunker, stream) = split_input(rest, 1);
    let secured = flags & 8 != 0;
    let mut reads = chunker.split(stream);
    let mut all = stream.to_vec();
    let pings = if flags & 4 != 0 {
        flood_of_pings(stream)
    } else {
        Vec::new()
    };
    if !pings.is_empty() {
        reads.push(&pings);
        all.extend_from_slice(&pings);
    }
    let chunked = run(&reads, proxy, limits, secured);
    // The same bytes in one read: the answer must not depend on how TCP
    // happened to split them.
    let whole = run(&[&all], proxy, limits, secured);
    if chunked.stopped || whole.stopped {
        // Where reading stopped depends on the reads; before that, the same.
        let (short, long) = if chunked.out.len() <= whole.out.len() {
            (&chunked, &whole)
        } else {
            (&whole, &chunked)
        };
        assert!(
            long.out.starts_with(&short.out),
            "answers diverge before the bound"
        );
        assert!(long.log.starts_with(&short.log) || short.log.starts_with(&long.log));
    } else {
        assert_eq!(chunked, whole, "answer depends on how the reads were split");
    }
});

/// Masked pings carrying the first bytes of `seed` (at most 125), enough of
/// them for twice the output bound.
fn flood_of_pings(seed: &[u8]) -> Vec<u8> {
    let payload = &seed[..seed.len().min(125)];
    let mask = [0x5a, 0x0f, 0xc3, 0x81];
    let mut frame = vec![0x89, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let pong = 2 + payload.len();
    let count = 2 * HIGH_WATER / pong + 1;
    frame.repeat(count)
}
