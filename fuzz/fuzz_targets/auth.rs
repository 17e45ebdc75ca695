//! The access gate's parsers and the log escaper: `auth::TokenSet::parse`
//! and `contains`, `auth::bearer`, `auth::Policy::origin_ok`, and
//! `logging::escape_controls`.
//!
//! Input layout: one mode byte, then text. Mode 0: the text is a token
//! file. Mode 1: the text is `Origin` and `Host` values separated by the
//! byte 0xff. Mode 2: the text is an `Authorization` value checked against
//! a fixed token. Mode 3: the text is a log message.
//!
//! Invariants: no panic; every token a token file lists is accepted, and an
//! error is one of the fixed texts (numbers aside), so it cannot quote the
//! file; an origin built from the Host (`http://` + Host) is same-origin
//! once its host is a known name, a policy that knows no names admits only
//! IP literals and `localhost`, a missing Origin always passes;
//! only `Bearer fuzz-token` (scheme in any case) passes the fixed token; an
//! escaped message has no control characters and an unescaped one is
//! returned as it was.

#![no_main]

use libfuzzer_sys::fuzz_target;
use packetflix::proto::auth::{bearer, Policy, TokenSet};
use packetflix::proto::logtext::escape_controls;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => token_file(rest),
        1 => origin(rest),
        2 => authorization(rest),
        _ => escape(rest),
    }
});

fn token_file(rest: &[u8]) {
    let text = String::from_utf8_lossy(rest);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    match TokenSet::parse(&text) {
        Ok(set) => {
            assert!(!set.is_empty() && set.len() == lines.len());
            for l in &lines {
                assert!(set.contains(l.as_bytes()), "listed token refused");
            }
        }
        Err(e) => {
            // Errors are fixed texts with numbers: nothing of the file's
            // content can be in them.
            let shape: String = e.chars().filter(|c| !c.is_ascii_digit()).collect();
            assert!(
                ERROR_SHAPES.contains(&shape.as_str()),
                "unexpected error text: {e}"
            );
        }
    }
}

/// `TokenSet::parse`'s errors with their digits removed.
const ERROR_SHAPES: [&str; 4] = [
    "line : token longer than  bytes",
    "line : a token must be printable ASCII without spaces",
    "more than  tokens",
    "no token in it (one per line; blank and # lines are ignored)",
];

fn origin(rest: &[u8]) {
    let (o, h) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let p = Policy::default();
    let admitted = p.origin_ok(Some(o), h);
    assert!(p.origin_ok(None, h), "no Origin must pass");
    if admitted {
        // Nothing listed: only an IP literal or localhost can be admitted
        // (DNS rebinding), whatever Host says.
        let host = origin_host(o).expect("an admitted origin parses");
        assert!(
            host == "localhost"
                || host.parse::<core::net::Ipv4Addr>().is_ok()
                || host
                    .strip_prefix('[')
                    .and_then(|v| v.strip_suffix(']'))
                    .is_some_and(|v| v.parse::<core::net::Ipv6Addr>().is_ok()),
            "origin {host:?} admitted without being known"
        );
    }
    if let Some(h) = h.and_then(|h| std::str::from_utf8(h).ok()) {
        let own = format!("http://{}", h.trim());
        // A Host that parses as host[:port] is its own origin once its
        // host is a known name. (A Host with URL delimiters, `a/` say, is
        // nobody's: unit test in auth.rs.)
        let delimiters = h.contains(['/', '@', '?', '#']);
        if !delimiters && Policy::new(std::slice::from_ref(&own), None).is_ok() {
            let name = origin_host(own.as_bytes()).expect("own origin parses");
            if let Ok(knowing) = Policy::default().with_hosts(&[name], None) {
                assert!(
                    knowing.origin_ok(Some(own.as_bytes()), Some(h.as_bytes())),
                    "own origin {own:?} refused under a known name"
                );
            }
        }
    }
}

/// The lower-case host of an `http://host[:port]` style origin (IPv6 in
/// brackets), as the fuzz target reads it.
fn origin_host(o: &[u8]) -> Option<String> {
    let o = std::str::from_utf8(o).ok()?.trim();
    let (_, rest) = o.split_once("://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let host = if authority.starts_with('[') {
        &authority[..=authority.find(']')?]
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    Some(host.to_ascii_lowercase())
}

fn authorization(rest: &[u8]) {
    let p = Policy {
        tokens: TokenSet::parse("fuzz-token\n").ok(),
        ..Policy::default()
    };
    let ok = p.token_ok(Some(rest));
    let expected = bearer(rest) == Some(&b"fuzz-token"[..]);
    assert_eq!(
        ok, expected,
        "token check disagrees with the header's token"
    );
}

fn escape(rest: &[u8]) {
    let text = String::from_utf8_lossy(rest);
    let out = escape_controls(&text);
    assert!(
        !out.chars().any(|c| c.is_control()),
        "control char survived"
    );
    if !text
        .chars()
        .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}')
    {
        assert_eq!(out, text, "clean text changed");
    }
}
