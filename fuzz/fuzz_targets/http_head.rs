//! The HTTP request head parser and everything that reads a parsed head.
//!
//! Input layout: two limit bytes (for `parse_request_limited`), then the
//! bytes a client sent. Invariants: no panic; a parsed head stays within
//! its limits and describes itself consistently (the head alone parses to
//! the same request; every shorter prefix asks for more or fails the same
//! way); the derived decisions (keep-alive, body framing, upgrade, route)
//! never panic and produce well-formed responses.

#![no_main]

use fuzz_support::check_response;
use libfuzzer_sys::fuzz_target;
use packetflix::proto::front::{proxied_target, route, Route};
use packetflix::proto::http::{
    parse_request, parse_request_limited, websocket_upgrade, HeadError, Request, Upgrade, MAX_HEAD,
    MAX_HEADERS,
};

fn check_request(req: &Request, buf: &[u8], max_head: usize, max_headers: usize) {
    assert!(req.head_len > 0 && req.head_len <= buf.len());
    assert!(req.head_len <= max_head, "head of {} bytes", req.head_len);
    assert!(req.headers.len() <= max_headers);
    assert!(req.minor_version <= 1);
    assert!(
        req.path.starts_with('/') || req.path == "*",
        "path {:?}",
        req.path
    );
    assert!(!req.path.contains('?') && !req.path.contains('#'));
    if let Some(q) = &req.query {
        assert!(!q.contains('#'), "fragment left in the query {q:?}");
    }
    // The head alone is the same request: nothing after it was looked at.
    let again = parse_request_limited(&buf[..req.head_len], max_head, max_headers);
    assert_eq!(again, Ok(Some(req.clone())));
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (limits, buf) = data.split_at(2);
    let max_head = usize::from(limits[0]) * 64 + 1;
    let max_headers = usize::from(limits[1] % 80);

    match parse_request_limited(buf, max_head, max_headers) {
        Ok(Some(req)) => check_request(&req, buf, max_head, max_headers),
        Ok(None) => assert!(buf.len() < max_head, "incomplete past the limit"),
        Err(_) => {}
    }

    let result = parse_request(buf);
    match &result {
        Ok(Some(req)) => {
            check_request(req, buf, MAX_HEAD, MAX_HEADERS);
            // A shorter prefix is incomplete: a head that is complete must
            // not look broken or oversized while it is still arriving.
            let cut = req.head_len.saturating_sub(1 + usize::from(limits[0]));
            assert_eq!(parse_request(&buf[..cut]), Ok(None), "prefix {cut}");

            let _ = req.keep_alive();
            let _ = req.body_kind();
            // The head rules: Host once on HTTP/1.1 (at most once on 1.0),
            // Content-Length decimal and agreeing; else 400.
            let hosts = req
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
                .count();
            let lengths: Vec<Option<u64>> = req
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| {
                    let t = std::str::from_utf8(v).ok()?.trim();
                    (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| t.parse().ok())
                        .flatten()
                })
                .collect();
            let lengths_ok =
                lengths.iter().all(Option::is_some) && lengths.windows(2).all(|w| w[0] == w[1]);
            let expect_ok = hosts <= 1 && (hosts == 1 || req.minor_version == 0) && lengths_ok;
            match req.check_rules() {
                Ok(()) => assert!(expect_ok, "head rules passed: {req:?}"),
                Err(e) => {
                    assert!(!expect_ok, "head rules refused {e}: {req:?}");
                    assert_eq!(e.status(), 400);
                }
            }
            let keys = req
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key"))
                .count();
            if keys > 1 {
                assert!(!matches!(websocket_upgrade(req), Upgrade::WebSocket { .. }));
            }
            let _ = req.header_str("host");
            let head = req.method == "HEAD";
            match websocket_upgrade(req) {
                Upgrade::WebSocket { accept } => assert_eq!(accept.len(), 28),
                Upgrade::Refused(status, why) => {
                    assert!(status == 400 || status == 426);
                    assert!(!why.is_empty());
                }
                Upgrade::None => {}
            }
            for proxy in [false, true] {
                match route(req, proxy, "dumpcap", String::new) {
                    Route::Respond { status, bytes, .. } => {
                        assert_eq!(check_response(&bytes, head), status);
                    }
                    Route::Capture { accept } => assert_eq!(accept.len(), 28),
                    Route::Proxy { target } => {
                        assert!(proxy);
                        assert_eq!(target, proxied_target(req));
                    }
                }
            }
        }
        Ok(None) => {
            assert!(buf.len() < MAX_HEAD);
            // Every prefix of an incomplete head is incomplete too.
            let cut = buf.len().saturating_sub(1 + usize::from(limits[0]));
            assert_eq!(parse_request(&buf[..cut]), Ok(None));
        }
        Err(e) => {
            assert!(e.status() == 400 || e.status() == 431);
            if let HeadError::Malformed(why) = e {
                assert!(why.len() < 512, "reason of {} bytes", why.len());
            }
        }
    }
});
