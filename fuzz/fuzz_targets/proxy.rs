//! The discovery proxy's sans-IO half (`--proxy-discovery`): the request head
//! rewritten for the discovery service, the response head parsed and
//! rewritten for the client, and the shared body framer (`http1::BodyFramer`)
//! finding where a request body ends in a stream split into reads where the
//! fuzzer chooses.
//!
//! Input layout: one mode byte (bits 0-1: 0 and 1 response head, 2 request
//! head, 3 body framer; bit 2: the request was HEAD; bit 3: keep-alive;
//! bits 4-5: request body framing for the framer; bit 6: a whole exchange
//! instead, `crate::proto::exchange::Exchange` fed a request and a response:
//! then the first byte `n` of the bytes gives the request's length, `4 * n`),
//! the read sizes (see `fuzz_support::Chunker`), then the bytes.
//!
//! Invariants: no panic; a rewritten head is one well-formed HTTP/1.1 head
//! (nothing a peer sent can split it or add a line), without hop-by-hop
//! headers except what an upgrade needs, with `Connection: close` where the
//! connection must close; a response head is found at the same place however
//! it arrives; the proxy and the discovery client end a response to a GET at
//! the same byte where both accept it (`fuzz_support::proxy_and_client_agree`);
//! the body framer consumes the same bytes, passes the same payload and
//! reaches the same end or error in any chunking, and takes nothing once
//! done.

#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use std::time::{Duration, Instant};

use fuzz_support::{split_input, Chunker};
use libfuzzer_sys::fuzz_target;
use packetflix::proto::exchange::{Exchange, Step};
use packetflix::proto::front::proxied_target;
use packetflix::proto::http::{parse_request, BodyKind};
use packetflix::proto::http1::{self, BodyFramer};
use packetflix::proto::proxy::{response_head, upstream_head, Framing, MAX_RESPONSE_HEAD};
use packetflix::proto::session::{Broken, Out};

/// Headers that describe one hop (RFC 9110 7.6.1) and are never forwarded;
/// `Connection` and `Upgrade` are checked separately.
const HOP_BY_HOP: [&str; 6] = [
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
];

fn response(buf: &[u8], head_request: bool, keep_alive: bool) {
    // As for a request that asked for an upgrade (a 101 is a tunnel).
    let Ok(Some(h)) = response_head(buf, head_request, keep_alive, true) else {
        return;
    };
    assert!(h.head_len <= buf.len() && h.head_len <= MAX_RESPONSE_HEAD);
    // Found at the same place with nothing after it, and not before.
    assert_eq!(
        response_head(&buf[..h.head_len], head_request, keep_alive, true),
        Ok(Some(h.clone()))
    );
    assert_eq!(
        response_head(&buf[..h.head_len - 1], head_request, keep_alive, true),
        Ok(None)
    );
    // A request without upgrade never gets a tunnel.
    if h.status == 101 {
        assert!(response_head(buf, head_request, keep_alive, false).is_err());
    }
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&h.rewritten) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, h.rewritten.len(), "bytes after head"),
        other => panic!(
            "rewritten head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(&h.rewritten)
        ),
    }
    assert_eq!(resp.code, Some(h.status));
    let has = |name: &str| {
        resp.headers
            .iter()
            .any(|x| x.name.eq_ignore_ascii_case(name))
    };
    for name in HOP_BY_HOP {
        assert!(!has(name), "hop-by-hop {name} forwarded");
    }
    if h.status != 101 {
        assert!(!has("upgrade"), "Upgrade forwarded on {}", h.status);
        let closes = resp.headers.iter().any(|x| {
            x.name.eq_ignore_ascii_case("connection") && x.value.eq_ignore_ascii_case(b"close")
        });
        if !keep_alive || h.body == Framing::UntilClose {
            assert!(closes, "connection must close");
        }
    }
    if has("transfer-encoding") {
        assert!(
            !has("content-length"),
            "both Transfer-Encoding and Content-Length"
        );
    }
    match h.body {
        Framing::Interim => assert!((100..200).contains(&h.status) && h.status != 101),
        Framing::Tunnel => assert_eq!(h.status, 101),
        _ if head_request => assert_eq!(h.body, Framing::None),
        _ => {}
    }
    if !head_request {
        fuzz_support::proxy_and_client_agree(buf);
    }
}

fn request(buf: &[u8], flags: u8) {
    let Ok(Some(req)) = parse_request(buf) else {
        return;
    };
    let target = proxied_target(&req);
    let client = if flags & 4 != 0 {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0x0a00, 0x0001))
    };
    let head = upstream_head(&req, &target, "ghostwire:5000", client);
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut up = httparse::Request::new(&mut headers);
    match up.parse(&head) {
        Ok(httparse::Status::Complete(n)) => assert_eq!(n, head.len(), "bytes after head"),
        other => panic!(
            "upstream head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(&head)
        ),
    }
    assert_eq!(up.method, Some(req.method.as_str()));
    assert_eq!(up.path, Some(target.as_str()));
    let count = |name: &str| {
        up.headers
            .iter()
            .filter(|x| x.name.eq_ignore_ascii_case(name))
            .count()
    };
    assert_eq!(count("host"), 1);
    assert_eq!(count("connection"), 1);
    assert_eq!(count("x-forwarded-for"), 1);
    assert_eq!(count("enable-monolith"), 1);
    for name in HOP_BY_HOP {
        assert_eq!(count(name), 0, "hop-by-hop {name} forwarded");
    }
    assert!(count("upgrade") <= 1);
}

/// The framer fed `reads` in order: (bytes taken, payload, done).
fn frame(reads: &[&[u8]], kind: BodyKind) -> Result<(usize, Vec<u8>, bool), http1::Error> {
    let mut f = BodyFramer::new(match kind {
        BodyKind::None => Framing::None,
        BodyKind::Length(n) => Framing::Length(n),
        BodyKind::Chunked => Framing::Chunked,
    });
    let mut used = 0;
    let mut payload = Vec::new();
    for r in reads {
        let was_done = f.is_done();
        let n = f.feed(r, |p| payload.extend_from_slice(p))?;
        assert!(n <= r.len());
        if was_done {
            assert_eq!(n, 0, "bytes taken after the end of the body");
        }
        used += n;
        if n < r.len() {
            assert!(f.is_done(), "bytes left over but the body goes on");
        }
    }
    assert!(payload.len() <= used, "more payload than bytes");
    if let BodyKind::Length(_) = kind {
        assert_eq!(payload.len(), used, "a length body is all payload");
    }
    Ok((used, payload, f.is_done()))
}

/// A queue standing in for a socket: everything sent, nothing pending.
#[derive(Default)]
struct Wire(Vec<u8>);

impl Out for Wire {
    fn pending(&self) -> usize {
        0
    }
    fn send(&mut self, bytes: &[u8]) -> Result<(), Broken> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
    fn send_slices(&mut self, parts: &[&[u8]]) -> Result<(), Broken> {
        for p in parts {
            self.0.extend_from_slice(p);
        }
        Ok(())
    }
}

/// Runs one exchange: the request head parsed from `client`, the first of
/// the fuzzer's reads of the rest arriving with it, the others and the
/// upstream's reads fed alternately. Checks what must hold whatever the
/// bytes and the reads: a failure sends the client nothing but interim
/// heads; the upstream
/// gets the rewritten head, then the client's bytes in order, never more
/// than it sent; the client gets a whole response head before anything
/// else; an exchange done hands back exactly the bytes that followed.
fn exchange(stream: &[u8], cut: &mut Chunker) {
    let Some((&n, rest)) = stream.split_first() else {
        return;
    };
    let (client, upstream) = rest.split_at((usize::from(n) * 4).min(rest.len()));
    let Ok(Some(req)) = parse_request(client) else {
        return;
    };
    let head = upstream_head(
        &req,
        &proxied_target(&req),
        "ghostwire:5000",
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    );
    let now = Instant::now();
    let (mut to_client, mut to_up) = (Wire::default(), Wire::default());
    let after = &client[req.head_len..];
    let mut clients = cut.split(after).into_iter();
    let leftover = clients.next().unwrap_or_default();
    let timeout = Duration::from_secs(20);
    let Ok(mut x) = Exchange::start(&req, &head, leftover, &mut to_up, now, timeout) else {
        return;
    };
    let _ = x.on_upstream_progress(to_up.pending(), now);
    let mut ups = cut.split(upstream).into_iter();
    let end = loop {
        let (c, u) = (clients.next(), ups.next());
        if c.is_none() && u.is_none() {
            break x.upstream_eof();
        }
        let mut step = Step::Continue;
        if let Some(c) = c {
            step = x.feed_client(c, &mut to_up, now);
        }
        if let (Step::Continue, Some(u)) = (&step, u) {
            step = x.feed_upstream(u, &mut to_client, 0, now);
            let more = x.take_for_upstream();
            to_up.0.extend_from_slice(&more);
        }
        if step != Step::Continue {
            break step;
        }
    };
    assert!(to_up.0.starts_with(&head), "the rewritten head goes first");
    assert!(
        after.starts_with(&to_up.0[head.len()..]),
        "the upstream got bytes the client did not send, or out of order"
    );
    match &end {
        Step::Fail(status, _) => {
            assert!(!x.answered(), "failed with {status} after answering");
            // Only interim (1xx) heads may precede the failure's answer.
            let mut rest = &to_client.0[..];
            while !rest.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; 128];
                let mut resp = httparse::Response::new(&mut headers);
                let Ok(httparse::Status::Complete(n)) = resp.parse(rest) else {
                    panic!("bytes other than interim heads went out before a failure");
                };
                let status = resp.code.unwrap_or(0);
                assert!(
                    (100..200).contains(&status) && status != 101,
                    "{status} before a failure"
                );
                rest = &rest[n..];
            }
        }
        Step::Done(pending) => {
            let body = to_up.0.len() - head.len();
            assert!(
                after[body..].starts_with(pending),
                "the next request is not what followed the body"
            );
        }
        _ => {}
    }
    if !to_client.0.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut headers);
        assert!(
            matches!(resp.parse(&to_client.0), Ok(httparse::Status::Complete(_))),
            "the client got no whole head first: {:?}",
            String::from_utf8_lossy(&to_client.0[..to_client.0.len().min(200)])
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (mut chunker, stream) = split_input(rest, 0);
    if mode & 64 != 0 {
        return exchange(stream, &mut chunker);
    }
    match mode & 3 {
        0 | 1 => response(stream, mode & 4 != 0, mode & 8 != 0),
        2 => request(stream, mode),
        _ => {
            let kind = match (mode >> 4) & 3 {
                0 => BodyKind::None,
                // `Request::body_kind` never gives Length(0) (that is None).
                1 => BodyKind::Length(1 + u64::from(stream.first().copied().unwrap_or(0))),
                _ => BodyKind::Chunked,
            };
            let reads = chunker.split(stream);
            let chunked = frame(&reads, kind);
            let whole = frame(&[stream], kind);
            assert_eq!(chunked, whole, "the body framing depends on the reads");
        }
    }
});
