//! The real session machine (`packetflix::proto::session`), driven through its
//! OS-free world (`session::sim`), whose host goes through the same read
//! pump and the same proxied exchange as the service: the client's bytes cut into reads where
//! the fuzzer chooses, interleaved with fuzzer-chosen events from the rest
//! of the world (capture output, stderr lines, programs exiting, time
//! passing, the client reading or leaving, discovery answering, a
//! namespace scan, shutdown).
//!
//! Input layout: a flag byte; a script length `n` and `n` script bytes;
//! then the read sizes (`fuzz_support::Chunker`) and the client's bytes.
//! Flags: bit 0 `--proxy-discovery`; bit 1 the smallest `--max-head-bytes`
//! and `--max-headers` (256, 4); bit 2 the client follows its bytes with
//! pings worth twice the output bound and never reads; bit 3 the token
//! check (token `fuzz-token`, origin `https://ui.example` admitted, a wrong
//! token's 401 held back 2 s); bit 4
//! the discovery listing waits for a script event instead of answering at
//! once; bit 5 target 1's program cannot start; bit 6 programs ignore
//! SIGTERM (only SIGKILL ends them); bit 7 the kernel buffers 64 KiB of
//! unread output.
//!
//! Script bytes: the low four bits pick an event, the high four its
//! argument: 0 the next client read; 1 output of target `a & 1` (`a >> 1`:
//! section header, three packets, 60 KiB of packets, or garbage); 2 its
//! output ends; 3 a stderr line (or stderr closes); 4 it exits (0, 2,
//! SIGTERM, SIGKILL); 5 time passes (0.1 s to 31 s); 6 the client reads
//! everything; 7 half of it; 8 the client closes; 9 the connection
//! breaks; 10 the listing arrives; 11 a namespace scan; 12 shutdown (odd
//! argument: the connection is displaced instead, if it may be); 13 the
//! address lookup fails; 14 it succeeds (odd argument: the discovery
//! service accepts the connection); 15 the discovery service's end of a
//! proxied exchange (`a & 7`: the connection is up; a whole answer (`a >>
//! 3` picks which); an interim `100`; a chunked head and a chunk; the last
//! chunk; its end of the connection; a failure; garbage); others: the next
//! client read.
//! Request logging and header logging are on.
//!
//! Invariants: no panic; a program is signalled only while not reaped (the
//! world asserts it); the client's queue never passes the high watermark
//! by more than one read's answers; every response is well-formed HTTP/1.1
//! and every frame a well-formed server frame, a close frame with a
//! sendable code and a reason of at most 123 bytes; once the client
//! leaves, the session ends within bounded time, every program it started
//! having been signalled and reaped; and, driven by the client's bytes
//! alone, the answer does not depend on how they were cut into reads (up
//! to where reading stopped, one answer is the start of the other).

#![no_main]

use std::sync::Arc;
use std::time::Duration;

use fuzz_support::{check_close_frame, check_response, server_frame, split_input, Chunker};
use libfuzzer_sys::fuzz_target;
use packetflix::config::{CaptureEngine, Config};
use packetflix::proto::auth::{Policy, TokenSet};
use packetflix::proto::discovery::ParsedListing;
use packetflix::proto::session::sim::Sim;
use packetflix::proto::session::{ExitStatus, Out, Sig, HIGH_WATER};

/// The loop's read buffer: the most one read of a socket or pipe takes.
const READ_BUF: usize = 64 * 1024;
/// What the queue may reach: the bound, one read's answers or relayed
/// output, a section header, a close frame.
const MAX_QUEUED: usize = HIGH_WATER + READ_BUF + 16 * 1024;
/// Whole answers of the discovery service, one of which event 15 sends.
const UPSTREAM_ANSWERS: [&[u8]; 2] = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
];
const NS_A: u64 = 4026532601;
const NS_B: u64 = 4026532602;
const LISTING: &str = r#"{"containers":[
    {"name":"web","type":"docker","netns":4026532601,"network-interfaces":["eth0","lo"]},
    {"name":"db","prefix":"k8s","type":"docker","netns":4026532602},
    {"name":"bare","type":"docker","netns":0}]}"#;

struct Flags(u8);

impl Flags {
    fn bit(&self, n: u8) -> bool {
        self.0 & (1 << n) != 0
    }
}

fn world(flags: &Flags) -> Sim {
    let mut cfg = Config {
        proxy_discovery: flags.bit(0),
        log_requests: true,
        log_headers: true,
        ..Config::default()
    };
    if flags.bit(1) {
        cfg.max_head_bytes = 256;
        cfg.max_headers = 4;
    }
    let policy = if flags.bit(3) {
        let tokens = TokenSet::parse("fuzz-token\n").expect("token");
        Policy::new(&["https://ui.example".to_string()], Some(tokens)).expect("policy")
    } else {
        Policy::new(&[], None).expect("policy")
    };
    let mut s = Sim::new(cfg, policy);
    if flags.bit(3) {
        // A wrong token's 401 waits (an address that keeps guessing).
        s.token_delay = Duration::from_secs(2);
    }
    s.namespaces
        .insert(NS_A, vec!["eth0".to_string(), "lo".to_string()]);
    s.namespaces.insert(NS_B, vec!["lo".to_string()]);
    // The seeds' process reference (pid 1234, start time 5678) is stale.
    s.starttimes.insert(1234, 1);
    s.moved.insert(NS_B);
    // The service's own namespace, so that its own connection is filtered.
    s.own_netns = Some(NS_B);
    let listing = ParsedListing::parse(LISTING.as_bytes().to_vec()).map(Arc::new);
    if !flags.bit(4) {
        s.listing = Some(listing);
    }
    if flags.bit(5) {
        s.spawn_fails = Some(1);
    }
    if flags.bit(7) {
        s.client.window = READ_BUF;
    }
    s
}

/// Reads as the driver makes them: at most one buffer each.
fn reads<'a>(chunker: &mut Chunker, stream: &'a [u8]) -> Vec<&'a [u8]> {
    chunker
        .split(stream)
        .into_iter()
        .flat_map(|c| c.chunks(READ_BUF))
        .collect()
}

/// A capture program's output, block by block (little-endian pcapng).
fn pcapng(kind: u8, started: &mut bool) -> Vec<u8> {
    let mut b = Vec::new();
    let block = |b: &mut Vec<u8>, kind: u32, body: &[u8]| {
        let len = (12 + body.len()) as u32;
        b.extend_from_slice(&kind.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(body);
        b.extend_from_slice(&len.to_le_bytes());
    };
    let shb = |b: &mut Vec<u8>| {
        let mut body = 0x1A2B3C4Du32.to_le_bytes().to_vec();
        body.extend_from_slice(&[1, 0, 0, 0]);
        body.extend_from_slice(&(-1i64).to_le_bytes());
        block(b, 0x0A0D0D0A, &body);
        let mut idb = vec![1, 0, 0, 0];
        idb.extend_from_slice(&0xFFFFu32.to_le_bytes());
        block(b, 1, &idb);
    };
    let epb = |b: &mut Vec<u8>, n: usize| {
        for i in 0..n {
            let mut body = vec![0u8; 20];
            body[12..16].copy_from_slice(&64u32.to_le_bytes());
            body[16..20].copy_from_slice(&64u32.to_le_bytes());
            body.extend(std::iter::repeat_n(i as u8, 64));
            block(b, 6, &body);
        }
    };
    if kind == 3 {
        return b"\x0a\x0d\x0d\x0a\xff\xff\xff\x7f garbage that is no pcapng".to_vec();
    }
    if !*started || kind == 0 {
        shb(&mut b);
        *started = true;
    }
    match kind {
        1 => epb(&mut b, 3),
        2 => epb(&mut b, 60 * 1024 / 96),
        _ => {}
    }
    b
}

/// The length of a whole chunked body at the start of `bytes`; `None` if it
/// is cut off (it must then be all that follows).
fn chunked_len(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        match httparse::parse_chunk_size(&bytes[at..]) {
            Ok(httparse::Status::Complete((n, 0))) => {
                let end = at + n;
                return bytes[end..].starts_with(b"\r\n").then_some(end + 2);
            }
            Ok(httparse::Status::Complete((n, size))) => {
                at += n + usize::try_from(size).ok()? + 2;
                if at > bytes.len() {
                    return None;
                }
            }
            Ok(httparse::Status::Partial) => return None,
            Err(_) => panic!("a chunked body the service forwarded does not parse"),
        }
    }
}

/// Checks everything the client got: HTTP responses, then (after a 101)
/// server frames, a close frame last.
fn check_stream(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
            panic!(
                "incomplete response head: {:?}",
                String::from_utf8_lossy(bytes)
            );
        };
        let head = &bytes[..end + 4];
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        assert!(resp.parse(head).is_ok_and(|s| s.is_complete()), "bad head");
        let status = resp.code.unwrap_or(0);
        let rest = &bytes[end + 4..];
        // What a proxied exchange forwards from the discovery service:
        // interim heads, and chunked bodies (cut off where its connection
        // ended).
        if (100..200).contains(&status) && status != 101 {
            bytes = rest;
            continue;
        }
        let chunked = resp.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("transfer-encoding")
                && h.value.eq_ignore_ascii_case(b"chunked")
        });
        if chunked {
            match chunked_len(rest) {
                Some(n) => {
                    bytes = &rest[n..];
                    continue;
                }
                None => return,
            }
        }
        let length = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
            .unwrap_or(0);
        // A HEAD request's answer has no body: the next response follows,
        // or nothing does. (The world's client takes every send whole, so
        // a body is never cut short.)
        let head_request = length > 0 && (rest.starts_with(b"HTTP/1.1 ") || rest.len() < length);
        let body = if head_request { 0 } else { length };
        check_response(&bytes[..end + 4 + body], head_request);
        bytes = &rest[body..];
        if status == 101 {
            return check_frames(bytes);
        }
    }
}

fn check_frames(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let (frame, rest) = server_frame(bytes);
        if frame.opcode == 8 {
            check_close_frame(&bytes[..bytes.len() - rest.len()]);
            assert!(rest.is_empty(), "bytes after the close frame");
        } else {
            assert!(matches!(frame.opcode, 0x2 | 0xA), "opcode {}", frame.opcode);
        }
        bytes = rest;
    }
}

fn bounded(s: &Sim) {
    assert!(
        s.client.pending() <= MAX_QUEUED,
        "{} bytes queued for the client",
        s.client.pending()
    );
}

/// The client leaves; time passes; programs end when signalled. The
/// session must end, every program signalled and reaped.
fn wind_down(s: &mut Sim, stubborn: bool) {
    s.close();
    // A proxied exchange whose request was complete ends with the
    // discovery service's end of the connection.
    s.upstream_connect();
    s.upstream_send(b"");
    for _ in 0..200 {
        if s.session.finished() {
            break;
        }
        s.take();
        let due: Vec<(usize, ExitStatus)> = s
            .programs
            .iter()
            .filter(|p| !p.reaped)
            .filter_map(|p| match p.signals.last() {
                Some(Sig::Kill) => Some((p.target, ExitStatus::Signaled(9, "SIGKILL"))),
                Some(Sig::Term) if !stubborn => {
                    Some((p.target, ExitStatus::Signaled(15, "SIGTERM")))
                }
                _ => None,
            })
            .collect();
        for (target, status) in due {
            s.exit(target, status);
        }
        if !s.session.finished() && !s.until_deadline() {
            break;
        }
    }
    assert!(
        s.session.finished(),
        "the session did not end after its client left"
    );
    for p in &s.programs {
        assert!(p.reaped, "program {} never reaped", p.pid);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let flags = Flags(flags);
    let (script, rest) = match rest.split_first() {
        Some((&n, rest)) => rest.split_at(usize::from(n).min(rest.len())),
        None => (&[][..], rest),
    };
    let (mut chunker, stream) = split_input(rest, 1);
    let chunks = reads(&mut chunker, stream);

    // The client's bytes alone, in the fuzzer's reads and in whole reads.
    let mut cut = world(&flags);
    for c in &chunks {
        cut.send(c);
        bounded(&cut);
    }
    let mut whole = world(&flags);
    for c in stream.chunks(READ_BUF) {
        whole.send(c);
    }
    let (a, b) = (&cut.client.received, &whole.client.received);
    let n = a.len().min(b.len());
    assert!(
        a[..n] == b[..n],
        "the answer depends on how the reads were cut"
    );
    check_stream(a);

    // The same bytes among the world's events, with either capture engine.
    for engine in [CaptureEngine::Dumpcap, CaptureEngine::Native] {
        events(&flags, engine, script, &chunks);
    }
});

fn events(flags: &Flags, engine: CaptureEngine, script: &[u8], chunks: &[&[u8]]) {
    let mut s = world(flags);
    s.cfg.capture_engine = engine;
    let mut next = chunks.iter();
    let mut started = [false; 2];
    for &op in script {
        let arg = op >> 4;
        let t = usize::from(arg & 1);
        match op & 0x0f {
            1 => {
                let bytes = pcapng((arg >> 1) & 3, &mut started[t]);
                s.output(t, &bytes);
            }
            2 => s.output_end(t),
            3 => {
                let line: Option<&[u8]> = match (arg >> 1) & 3 {
                    0 => Some(b"Capturing on 'lo'\n"),
                    1 => Some(b"dumpcap: The network adapter \"lo\" is no longer attached.\n"),
                    2 => Some(b"dumpcap: half a li"),
                    _ => None,
                };
                s.stderr(t, line);
            }
            4 => {
                let status = match (arg >> 1) & 3 {
                    0 => ExitStatus::Exited(0),
                    1 => ExitStatus::Exited(2),
                    2 => ExitStatus::Signaled(15, "SIGTERM"),
                    _ => ExitStatus::Signaled(9, "SIGKILL"),
                };
                s.exit(t, status);
            }
            5 => {
                let ms = [100, 1000, 5000, 10_000, 20_000, 31_000][usize::from(arg) % 6];
                s.advance(Duration::from_millis(ms));
            }
            6 => s.take(),
            7 => {
                let unread = s.client.received.len() - s.client.taken;
                s.client.taken += unread / 2;
                s.writable();
            }
            8 => s.close(),
            9 => s.break_connection(),
            10 => {
                let l = ParsedListing::parse(LISTING.as_bytes().to_vec()).map(Arc::new);
                s.answer_listing(l);
            }
            11 => s.rescan(),
            12 if arg & 1 == 1 => {
                s.displace();
            }
            12 => s.shutdown(),
            13 => s.answer_address(Err("the discovery service's name does not resolve".into())),
            14 => {
                s.upstream_reachable = (arg & 1 == 1).then_some(());
                s.answer_address(Ok("127.0.0.1:5000".parse().expect("address")));
            }
            15 => match arg & 7 {
                0 => s.upstream_connect(),
                1 => s.upstream_send(UPSTREAM_ANSWERS[usize::from(arg >> 3)]),
                2 => s.upstream_send(b"HTTP/1.1 100 Continue\r\n\r\n"),
                3 => s.upstream_send(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
                ),
                4 => s.upstream_send(b"0\r\n\r\n"),
                5 => s.upstream_send(b""),
                6 => s.upstream_fail(),
                _ => s.upstream_send(b"\x00garbage\r\n\r\n"),
            },
            _ => {
                if let Some(c) = next.next() {
                    s.send(c);
                }
            }
        }
        bounded(&s);
        assert!(
            s.session.capture_weight() <= 16,
            "counts {} captures, more than --max-targets",
            s.session.capture_weight()
        );
    }
    for c in next {
        s.send(c);
        bounded(&s);
    }
    if flags.bit(2) {
        // Pings worth twice the bound from a client that never reads.
        let mut ping = vec![0x89, 0x80 | 125, 1, 2, 3, 4];
        ping.extend(std::iter::repeat_n(0x55, 125));
        let flood = ping.repeat(2 * HIGH_WATER / ping.len());
        for c in flood.chunks(READ_BUF) {
            s.send(c);
            bounded(&s);
        }
    }
    if !s.client.broken {
        check_stream(&s.client.received);
    }
    wind_down(&mut s, flags.bit(6));
}
