//! The discovery proxy (`--proxy-discovery`): one HTTP request forwarded to
//! the discovery service and its response streamed back, or a websocket
//! upgrade tunnelled both ways.
//!
//! This module is sans-IO: rewriting the request head
//! (`/discover` prefix removed, `Host` rewritten, `Enable-Monolith` and
//! `X-Forwarded-For` added, hop-by-hop headers dropped per RFC 9110 7.6.1),
//! and rewriting the response head. Response heads and the end of request
//! and response bodies are found by the shared framer in [`crate::proto::http1`], as
//! a forwarding user ([`Role::Forward`]): the bytes go on unchanged, nothing
//! of a body is held. The byte pump between the client's connection and
//! the upstream socket is `crate::service::upstream`.

use core::net::IpAddr;

use crate::proto::http::{BodyKind, Request};
pub use crate::proto::http1::{Framing, MAX_RESPONSE_HEAD};
use crate::proto::http1::{HeadParser, Role};

/// Headers that describe one hop and must not be forwarded (RFC 9110 7.6.1),
/// plus `Host`, which is rewritten.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];
/// Most header fields in a response head from the discovery service.
pub const MAX_RESPONSE_HEADERS: usize = 96;

fn is_hop_by_hop(name: &str, listed: &[String]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || listed.iter().any(|l| name.eq_ignore_ascii_case(l))
}

/// Header names the `Connection` header lists: also hop-by-hop.
fn connection_options<'a>(headers: impl Iterator<Item = (&'a str, &'a [u8])>) -> Vec<String> {
    headers
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether the request asks for a websocket (or other protocol) upgrade.
pub fn wants_upgrade(req: &Request) -> bool {
    req.has_token("connection", "upgrade") && req.header("upgrade").is_some()
}

/// The request head sent to the discovery service. Upgrades keep their
/// `Connection: Upgrade` and `Upgrade` headers; every other request is sent
/// with `Connection: close` (one upstream connection per request).
pub fn upstream_head(req: &Request, target: &str, host: &str, client: IpAddr) -> Vec<u8> {
    let listed = connection_options(req.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
    let upgrade = wants_upgrade(req);
    let mut out = format!("{} {target} HTTP/1.1\r\nHost: {host}\r\n", req.method).into_bytes();
    let mut forwarded_for = None;
    for (name, value) in &req.headers {
        if name.eq_ignore_ascii_case("host") || is_hop_by_hop(name, &listed) {
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for = Some(String::from_utf8_lossy(value).trim().to_string());
            continue;
        }
        if name.eq_ignore_ascii_case("enable-monolith") {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let client = match client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let xff = match forwarded_for {
        Some(prev) if !prev.is_empty() => format!("{prev}, {client}"),
        _ => client.to_string(),
    };
    out.extend_from_slice(
        format!("X-Forwarded-For: {xff}\r\nEnable-Monolith: true\r\n").as_bytes(),
    );
    if upgrade {
        let up = req.header("upgrade").unwrap_or_default();
        out.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: ");
        out.extend_from_slice(up);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A parsed response head from the discovery service, rewritten for the
/// client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// Bytes of the upstream buffer the head took.
    pub head_len: usize,
    /// How the body that follows is framed.
    pub body: Framing,
    /// The head to send to the client.
    pub rewritten: Vec<u8>,
}

/// Parses and rewrites a response head. `head_request`: the request was HEAD
/// (no body whatever the headers say). `keep_alive`: whether the client
/// connection stays open after this response if the framing allows it.
/// `upgrade`: the request asked for a protocol upgrade; a `101` to one that
/// did not is an error (a `502` for the client), never a tunnel: the
/// client's later bytes would otherwise go to the discovery service raw.
pub fn response_head(
    buf: &[u8],
    head_request: bool,
    keep_alive: bool,
    upgrade: bool,
) -> Result<Option<ResponseHead>, String> {
    let mut parser = HeadParser::new(Role::Forward, MAX_RESPONSE_HEADERS);
    next_response_head(&mut parser, buf, head_request, keep_alive, upgrade)
}

/// [`response_head`] with a parser that keeps how far it searched `buf`
/// while the head is incomplete.
pub fn next_response_head(
    parser: &mut HeadParser,
    buf: &[u8],
    head_request: bool,
    keep_alive: bool,
    upgrade: bool,
) -> Result<Option<ResponseHead>, String> {
    let Some(head) = parser.parse(buf, head_request).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let status = head.status;
    // httparse takes any three digits; "010" would be rewritten as a status
    // line the client cannot parse (RFC 9110 15: 100 to 999).
    if status < 100 {
        return Err(format!("malformed response head: status {status:03}"));
    }
    if status == 101 && !upgrade {
        return Err(
            "the discovery service switched protocols for a request that asked for no upgrade"
                .into(),
        );
    }
    let pairs = || head.headers.iter().copied();
    let listed = connection_options(pairs());
    let has_te = pairs().any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    let body = head.framing;
    let mut out = format!("HTTP/1.1 {status} {}\r\n", head.reason).into_bytes();
    for (name, value) in pairs() {
        let keep_upgrade = status == 101
            && (name.eq_ignore_ascii_case("upgrade") || name.eq_ignore_ascii_case("connection"));
        if is_hop_by_hop(name, &listed) && !keep_upgrade {
            continue;
        }
        if has_te && name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if status != 101 && (!keep_alive || body == Framing::UntilClose) {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        status,
        head_len: head.len,
        body,
        rewritten: out,
    }))
}

/// How a request body is framed, for the shared framer.
pub fn request_framing(kind: BodyKind) -> Framing {
    match kind {
        BodyKind::None => Framing::None,
        BodyKind::Length(n) => Framing::Length(n),
        BodyKind::Chunked => Framing::Chunked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::parse_request;
    use crate::proto::http1::BodyFramer;
    use std::net::Ipv4Addr;

    fn req(s: &str) -> Request {
        parse_request(s.as_bytes()).unwrap().unwrap()
    }

    fn head_text(r: &Request, target: &str) -> String {
        String::from_utf8(upstream_head(
            r,
            target,
            "gw:5000",
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
        ))
        .unwrap()
    }

    #[test]
    fn request_head_is_rewritten_for_the_discovery_service() {
        let r = req(
            "GET /discover/mobyshark?x=1 HTTP/1.1\r\nHost: pfx:5001\r\nAccept: */*\r\n\
                     Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n\
                     Proxy-Authorization: Basic abc\r\nTE: trailers\r\n\r\n",
        );
        let h = head_text(&r, "/mobyshark?x=1");
        assert!(
            h.starts_with("GET /mobyshark?x=1 HTTP/1.1\r\nHost: gw:5000\r\n"),
            "{h}"
        );
        assert!(h.contains("Accept: */*\r\n"));
        assert!(h.contains("Enable-Monolith: true\r\n"));
        assert!(h.contains("X-Forwarded-For: 10.0.0.9\r\n"));
        assert!(h.contains("Connection: close\r\n"));
        for gone in [
            "pfx:5001",
            "X-Secret",
            "Keep-Alive",
            "Proxy-Authorization",
            "TE:",
        ] {
            assert!(!h.contains(gone), "{gone} in {h}");
        }
        assert!(h.ends_with("\r\n\r\n"));
    }

    #[test]
    fn forwarded_for_is_appended_and_mapped_addresses_shown_as_ipv4() {
        let r = req("GET / HTTP/1.1\r\nX-Forwarded-For: 192.0.2.1\r\n\r\n");
        let h = String::from_utf8(upstream_head(
            &r,
            "/",
            "gw",
            "::ffff:127.0.0.1".parse().unwrap(),
        ))
        .unwrap();
        assert!(
            h.contains("X-Forwarded-For: 192.0.2.1, 127.0.0.1\r\n"),
            "{h}"
        );
    }

    #[test]
    fn a_101_to_a_request_that_asked_for_no_upgrade_is_an_error_not_a_tunnel() {
        let switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let e = response_head(switch, false, true, false).unwrap_err();
        assert!(e.contains("asked for no upgrade"), "{e}");
        let h = response_head(switch, false, false, true).unwrap().unwrap();
        assert_eq!(h.body, Framing::Tunnel);
    }

    #[test]
    fn upgrade_requests_keep_their_upgrade_headers() {
        let r = req("GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
        let h = head_text(&r, "/ws");
        assert!(
            h.contains("Connection: Upgrade\r\nUpgrade: websocket\r\n"),
            "{h}"
        );
        assert!(h.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(!h.contains("Connection: close"));
    }

    #[test]
    fn status_below_100_is_a_malformed_response() {
        // Found by the proxy fuzz target: "HTTP/1.1 010 X" was passed on as
        // "HTTP/1.1 10 X", which no client can parse.
        for s in ["HTTP/1.1 010 X\r\n\r\n", "HTTP/1.1 000 X\r\n\r\n"] {
            let e = response_head(s.as_bytes(), false, true, true).unwrap_err();
            assert!(e.contains("malformed"), "{s}: {e}");
        }
        let ok = response_head(b"HTTP/1.1 100 Continue\r\n\r\n", false, true, true);
        assert_eq!(ok.unwrap().unwrap().status, 100);
    }

    #[test]
    fn response_framing_is_recognised() {
        let f = |s: &str, head: bool| {
            response_head(s.as_bytes(), head, true, true)
                .unwrap()
                .unwrap()
                .body
        };
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            Framing::Length(5)
        );
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            Framing::Chunked
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n", false), Framing::UntilClose);
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Framing::None
        );
        assert_eq!(f("HTTP/1.1 204 No Content\r\n\r\n", false), Framing::None);
        assert_eq!(
            f(
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            ),
            Framing::None
        );
        assert_eq!(f("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", false), Framing::Tunnel);
        assert!(response_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            false,
            true,
            true
        )
        .is_err());
        assert!(
            response_head(b"HTTP/1.1 200 OK\r\nContent-Len", false, true, true)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn response_head_drops_hop_by_hop_and_marks_close_delimited_bodies() {
        let h = response_head(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nX-A: b\r\n\r\nbody",
            false,
            true,
            false,
        )
        .unwrap()
        .unwrap();
        let t = String::from_utf8(h.rewritten).unwrap();
        assert_eq!(t, "HTTP/1.1 200 OK\r\nX-A: b\r\nConnection: close\r\n\r\n");
        let h = response_head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", false, false, true)
            .unwrap()
            .unwrap();
        let t = String::from_utf8(h.rewritten).unwrap();
        assert!(
            t.contains("Upgrade: websocket\r\nConnection: Upgrade\r\n"),
            "{t}"
        );
    }

    #[test]
    fn interim_heads_are_framed_apart_from_the_final_one() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab";
        let mut parser = HeadParser::new(Role::Forward, MAX_RESPONSE_HEADERS);
        let first = next_response_head(&mut parser, raw, true, true, true)
            .unwrap()
            .unwrap();
        assert_eq!((first.status, first.body), (100, Framing::Interim));
        let rest = &raw[first.head_len..];
        let last = next_response_head(&mut parser, rest, false, true, true)
            .unwrap()
            .unwrap();
        assert_eq!((last.status, last.body), (200, Framing::Length(2)));
        assert_eq!(&rest[last.head_len..], b"ab");
    }

    #[test]
    fn response_framing_is_decided_for_a_forwarder() {
        let f = |s: &str| response_head(s.as_bytes(), false, true, true).map(|h| h.unwrap().body);
        // The next hop decodes what it asked for; only the end matters here.
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n"),
            Ok(Framing::UntilClose)
        );
        // A list is passed on as it is, and may be read otherwise there.
        assert!(f("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n").is_err());
        assert!(f("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n").is_err());
    }

    #[test]
    fn request_bodies_are_framed_as_http_reads_them() {
        let mut f = BodyFramer::new(request_framing(BodyKind::Length(5)));
        assert_eq!(f.scan(b"abcdeNEXT"), Ok(5));
        assert!(f.is_done());
        let mut f = BodyFramer::new(request_framing(BodyKind::Chunked));
        assert_eq!(f.scan(b"1\r\na\r\n0\r\n\r\nNEXT"), Ok(11));
        assert!(f.is_done());
        assert!(BodyFramer::new(request_framing(BodyKind::None)).is_done());
    }
}
