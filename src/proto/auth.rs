//! Who may capture: the origin rule for websocket upgrades and the bearer
//! token check, decided from a parsed request head.
//!
//! The origin rule has two halves. Same-origin (the `Origin` names the
//! request's own `Host`) stops a page elsewhere from opening captures from a
//! visitor's browser; but a page that rebinds its own DNS name to this
//! service's address (DNS rebinding) sends a `Host` and an `Origin` that
//! agree. So an upgrade that carries an `Origin` must also name a host the
//! service is known by: an IP literal, `localhost`, the machine's own host
//! name, or a name configured with `--allow-host`; an origin listed with
//! `--allow-origin` is admitted as it is. An attacker controls the DNS of
//! its own names only, never of these.
//!
//! No I/O here: the token file's text and the machine's host name come in as
//! strings (the service reads them at start-up and on SIGHUP), the verdict
//! goes out as a response for the session to send. Tokens never leave this module in any form that could
//! reach a log line: errors name line numbers, never contents.

use ring::digest::{digest, SHA256};

use crate::proto::front::Route;
use crate::proto::http::{self, Request};

/// Longest token accepted from the file or a request; far above any real
/// token, and it bounds the work one request can make us do.
pub const MAX_TOKEN: usize = 4096;
/// Most tokens a token file may hold (one per client or team, in practice).
pub const MAX_TOKENS: usize = 10_000;

/// The tokens one of which a request must carry. Kept as SHA-256 digests so
/// that comparing costs the same whatever the token's length or content.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenSet {
    digests: Vec<[u8; 32]>,
}

impl TokenSet {
    /// Parses a token file: one token per line, blank lines and lines
    /// starting with `#` ignored, surrounding whitespace trimmed. An empty
    /// set is an error: a service that refuses everyone is a mistake.
    pub fn parse(text: &str) -> Result<TokenSet, String> {
        let mut digests = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if t.len() > MAX_TOKEN {
                return Err(format!(
                    "line {}: token longer than {MAX_TOKEN} bytes",
                    i + 1
                ));
            }
            if !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {}: a token must be printable ASCII without spaces",
                    i + 1
                ));
            }
            if digests.len() == MAX_TOKENS {
                return Err(format!("more than {MAX_TOKENS} tokens"));
            }
            digests.push(sha256(t.as_bytes()));
        }
        if digests.is_empty() {
            return Err("no token in it (one per line; blank and # lines are ignored)".into());
        }
        Ok(TokenSet { digests })
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `token` is one of the set. Every stored digest is compared,
    /// each in constant time, so the timing says nothing about which token
    /// matched or how much of it.
    pub fn contains(&self, token: &[u8]) -> bool {
        if token.is_empty() || token.len() > MAX_TOKEN {
            return false;
        }
        let d = sha256(token);
        self.digests
            .iter()
            .fold(false, |found, k| found | constant_time_eq(k, &d))
    }
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, b).as_ref());
    out
}

/// Equality of two digests without an early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the optimiser from turning the fold back into a short-circuit.
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer <token>` header (scheme
/// case-insensitive, RFC 6750 2.1), if the header has that form.
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let t = value[SCHEME.len()..].trim_ascii();
    (!t.is_empty()).then_some(t)
}

/// An origin reduced to what same-origin compares: scheme, host and port,
/// lower case, the port made explicit.
fn normalize_origin(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => return None,
    };
    // An origin has no path, but be lenient with a trailing slash.
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
        return None;
    }
    let (host, port) = split_host_port(authority, default)?;
    Some(format!("{scheme}://{host}:{port}"))
}

/// `host[:port]` or `[v6][:port]` -> (lower-case host, port).
fn split_host_port(authority: &str, default: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{h}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        None => default,
        Some(p) => p.parse::<u16>().ok()?,
    };
    let delimiter = host.contains(['/', '@', '?', '#']);
    if host.is_empty() || delimiter || host.contains(':') && !host.starts_with('[') {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// The host names a browser page may reach the service by without being
/// listed with `--allow-origin`, besides IP literals: names no outside DNS
/// can point elsewhere.
const LOCAL_NAMES: [&str; 1] = ["localhost"];

/// A host name (no port, no brackets) as origins compare it: lower case,
/// one trailing dot (the DNS root) removed. `None` if it cannot be a host
/// name at all.
fn normalize_host(name: &str) -> Option<String> {
    // No trimming: a name with spaces around it is not this name (fuzz
    // finding: `e\t` listed as `e` never matched a Host of `e\t`).
    let n = name.strip_suffix('.').unwrap_or(name);
    let bad = |c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if n.is_empty() || n.len() > MAX_HOST_NAME || n.contains(bad) {
        return None;
    }
    Some(n.to_ascii_lowercase())
}

/// Longest DNS name (RFC 1035 2.3.4: 255 octets on the wire, 253 as text).
const MAX_HOST_NAME: usize = 253;

/// Whether the host part of an origin (`[v6]` or a name or IPv4 text) is an
/// IP literal: a browser only sends one when the page was loaded from that
/// address, which no DNS answer can change.
fn is_ip_literal(host: &str) -> bool {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<core::net::Ipv6Addr>().is_ok(),
        None => host.parse::<core::net::Ipv4Addr>().is_ok(),
    }
}

/// The access rules in force; rebuilt with new tokens on SIGHUP.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// Origins admitted besides the request's own (`--allow-origin`),
    /// normalized.
    pub allow_origins: Vec<String>,
    /// Host names the service is reached by (`--allow-host` and the
    /// machine's own name), normalized: a same-origin upgrade whose host is
    /// a name must be one of these (or `localhost`).
    pub known_hosts: Vec<String>,
    /// `None`: no token needed (no `--token-file`).
    pub tokens: Option<TokenSet>,
}

impl Policy {
    /// Builds the policy from the `--allow-origin` values; an origin that
    /// cannot be parsed is an error naming it.
    pub fn new(allow_origins: &[String], tokens: Option<TokenSet>) -> Result<Policy, String> {
        let allow_origins = allow_origins
            .iter()
            .map(|o| {
                normalize_origin(o).ok_or_else(|| {
                    format!("--allow-origin: '{o}' is not an origin like https://host[:port]")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Policy {
            allow_origins,
            known_hosts: Vec::new(),
            tokens,
        })
    }

    /// Adds the names the service is reached by: the `--allow-host` values
    /// (a bad one is an error naming it) and the machine's own host name
    /// (left out if it is not a usable name: it is not the user's mistake).
    pub fn with_hosts(
        mut self,
        allow_hosts: &[String],
        own: Option<&str>,
    ) -> Result<Policy, String> {
        for h in allow_hosts {
            let n = normalize_host(h).ok_or_else(|| {
                format!("--allow-host: '{h}' is not a host name (letters, digits, '-', '.')")
            })?;
            if !self.known_hosts.contains(&n) {
                self.known_hosts.push(n);
            }
        }
        if let Some(n) = own.and_then(normalize_host) {
            if !self.known_hosts.contains(&n) {
                self.known_hosts.push(n);
            }
        }
        Ok(self)
    }

    /// Whether a page served under `host` (lower case, as
    /// [`split_host_port`] gives it) may open captures: a name the service
    /// is known by, never one whose DNS someone else controls.
    fn known_host(&self, host: &str) -> bool {
        if is_ip_literal(host) {
            return true;
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        LOCAL_NAMES.contains(&host) || self.known_hosts.iter().any(|k| k == host)
    }

    /// Whether an upgrade with this `Origin` may proceed. No `Origin` (not
    /// a browser): yes. A listed origin: yes. Otherwise its host and port
    /// must be the request's `Host`, and that host an IP literal,
    /// `localhost` or a known name (DNS rebinding: see the module docs).
    pub fn origin_ok(&self, origin: Option<&[u8]>, host: Option<&[u8]>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let Some(origin) = std::str::from_utf8(origin)
            .ok()
            .and_then(|o| normalize_origin(o.trim()))
        else {
            // "null" (sandboxed pages, file: URLs) and garbage are foreign.
            return false;
        };
        if self.allow_origins.contains(&origin) {
            return true;
        }
        let Some(host) = host.and_then(|h| std::str::from_utf8(h).ok()) else {
            return false;
        };
        // The Host's port defaults as the Origin's scheme says: a page from
        // https://h talks to h:443.
        let default = if origin.starts_with("https://") || origin.starts_with("wss://") {
            443
        } else {
            80
        };
        match split_host_port(host.trim(), default) {
            Some((h, p)) => {
                origin.split_once("://").map(|(_, a)| a) == Some(&format!("{h}:{p}"))
                    && self.known_host(&h)
            }
            None => false,
        }
    }

    /// Whether the request carries one of the tokens (or none is needed).
    pub fn token_ok(&self, authorization: Option<&[u8]>) -> bool {
        match &self.tokens {
            None => true,
            Some(set) => authorization
                .and_then(bearer)
                .is_some_and(|t| set.contains(t)),
        }
    }
}

/// Why a request is refused before it is routed any further.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A websocket upgrade from a foreign browser origin.
    ForeignOrigin,
    /// No valid bearer token where one is needed.
    NoToken,
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::ForeignOrigin => 403,
            Refusal::NoToken => 401,
        }
    }

    /// The response; a 401 says how to authenticate (RFC 6750 3).
    pub fn response(&self) -> Vec<u8> {
        let (extra, text): (&[(&str, &str)], &str) = match self {
            Refusal::ForeignOrigin => (
                &[],
                "websocket upgrades from other origins, or from pages under names this service \
                 does not know, are refused (see --allow-origin and --allow-host)",
            ),
            Refusal::NoToken => (
                &[("WWW-Authenticate", "Bearer realm=\"packetflix\"")],
                "a bearer token is needed: send Authorization: Bearer <token>",
            ),
        };
        http::response(
            self.status(),
            extra,
            "text/plain; charset=utf-8",
            format!("{text}\n").as_bytes(),
            true,
        )
    }
}

/// The gate in front of routing: a foreign-origin upgrade gets 403 before
/// anything else; `/capture` and proxied requests need a token (401).
/// `/version` and plain 404s stay open.
pub fn check(policy: &Policy, req: &Request, route: &Route) -> Result<(), Refusal> {
    let upgrade = req.header("upgrade").is_some();
    if upgrade && !policy.origin_ok(req.header("origin"), req.header("host")) {
        return Err(Refusal::ForeignOrigin);
    }
    let guarded = req.path == "/capture" || matches!(route, Route::Proxy { .. });
    if guarded && !policy.token_ok(req.header("authorization")) {
        return Err(Refusal::NoToken);
    }
    Ok(())
}

/// The request as it goes on to the discovery service when this service
/// checked a token: its `Authorization` was meant for us, so it does not
/// travel further (the discovery service has no use for it and should not
/// learn it).
pub fn without_our_credentials(policy: &Policy, mut req: Request) -> Request {
    if policy.tokens.is_some() {
        req.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("authorization"));
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::parse_request;

    fn req(s: &str) -> Request {
        parse_request(s.as_bytes()).unwrap().unwrap()
    }

    fn policy(allow: &[&str], tokens: Option<&str>) -> Policy {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        Policy::new(&allow, tokens.map(|t| TokenSet::parse(t).unwrap())).unwrap()
    }

    const UPGRADE: &str = "GET /capture?netns=1 HTTP/1.1\r\nHost: h.example:5001\r\n\
        Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    fn verdict(p: &Policy, extra: &str) -> Result<(), Refusal> {
        let r = req(&format!("{UPGRADE}{extra}\r\n"));
        let route = crate::proto::front::route(&r, false, "dumpcap", String::new);
        check(p, &r, &route)
    }

    #[test]
    fn token_file_ignores_blanks_and_comments_and_trims() {
        let set = TokenSet::parse("# ops\n\n  alpha  \n#beta\nGamma\r\n").unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.contains(b"alpha") && set.contains(b"Gamma"));
        assert!(!set.contains(b"beta") && !set.contains(b"gamma") && !set.contains(b""));
        assert!(!set.contains(b"alph") && !set.contains(b"alphaa"));
    }

    #[test]
    fn token_file_without_tokens_or_with_bad_ones_is_an_error_without_the_token() {
        assert!(TokenSet::parse("").unwrap_err().contains("no token"));
        assert!(TokenSet::parse("# only\n\n").is_err());
        let e = TokenSet::parse("good\nse cret\n").unwrap_err();
        assert!(e.contains("line 2") && !e.contains("cret"), "{e}");
        assert!(TokenSet::parse(&"x".repeat(MAX_TOKEN + 1)).is_err());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_needs_a_token() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bEaReR   abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Basic YWJj"), None);
        assert_eq!(bearer(b"Bearerabc"), None);
    }

    #[test]
    fn missing_or_wrong_token_is_401_right_one_passes() {
        let p = policy(&[], Some("s3cret\n"));
        assert_eq!(verdict(&p, ""), Err(Refusal::NoToken));
        assert_eq!(
            verdict(&p, "Authorization: Bearer wrong\r\n"),
            Err(Refusal::NoToken)
        );
        assert_eq!(
            verdict(&p, "Authorization: Basic czNjcmV0\r\n"),
            Err(Refusal::NoToken)
        );
        assert_eq!(verdict(&p, "Authorization: Bearer s3cret\r\n"), Ok(()));
        let resp = String::from_utf8(Refusal::NoToken.response()).unwrap();
        // Fuzz finding: the status line once said "401 Unknown".
        assert!(resp.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{resp}");
        let forbidden = String::from_utf8(Refusal::ForeignOrigin.response()).unwrap();
        assert!(
            forbidden.starts_with("HTTP/1.1 403 Forbidden\r\n"),
            "{forbidden}"
        );
        assert!(resp.contains("WWW-Authenticate: Bearer"), "{resp}");
    }

    #[test]
    fn version_stays_open_and_proxied_requests_need_the_token() {
        let p = policy(&[], Some("t\n"));
        let v = req("GET /version HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            check(
                &p,
                &v,
                &crate::proto::front::route(&v, true, "dumpcap", String::new)
            ),
            Ok(())
        );
        let d = req("GET /discover/mobyshark HTTP/1.1\r\nHost: h\r\n\r\n");
        let route = crate::proto::front::route(&d, true, "dumpcap", String::new);
        assert_eq!(check(&p, &d, &route), Err(Refusal::NoToken));
        let d =
            req("GET /discover/mobyshark HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\n\r\n");
        assert_eq!(
            check(
                &p,
                &d,
                &crate::proto::front::route(&d, true, "dumpcap", String::new)
            ),
            Ok(())
        );
        // Without the proxy an unknown path is a plain 404 for everyone.
        let d = req("GET /x HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(
            check(
                &p,
                &d,
                &crate::proto::front::route(&d, false, "dumpcap", String::new)
            ),
            Ok(())
        );
    }

    #[test]
    fn checked_token_is_not_forwarded_but_others_are_kept() {
        let raw = "GET /discover/mobyshark HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\nX-Other: 1\r\n\r\n";
        let guarded = without_our_credentials(&policy(&[], Some("t\n")), req(raw));
        assert!(guarded.header("authorization").is_none());
        assert!(guarded.header("x-other").is_some());
        let open = without_our_credentials(&Policy::default(), req(raw));
        assert!(open.header("authorization").is_some(), "not ours to drop");
    }

    #[test]
    fn foreign_origin_is_403_before_the_token_check() {
        let p = policy(&[], Some("t\n"));
        assert_eq!(
            verdict(
                &p,
                "Origin: https://evil.example\r\nAuthorization: Bearer t\r\n"
            ),
            Err(Refusal::ForeignOrigin)
        );
        assert_eq!(verdict(&p, "Origin: null\r\n"), Err(Refusal::ForeignOrigin));
        assert_eq!(
            verdict(
                &p,
                "Origin: http://h.example:5002\r\nAuthorization: Bearer t\r\n"
            ),
            Err(Refusal::ForeignOrigin)
        );
    }

    /// A policy that knows the test requests' host name.
    fn knowing(names: &[&str]) -> Policy {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        Policy::default().with_hosts(&names, None).unwrap()
    }

    #[test]
    fn same_origin_under_a_known_name_and_no_origin_pass() {
        let p = knowing(&["h.example"]);
        assert_eq!(verdict(&p, ""), Ok(()));
        assert_eq!(verdict(&p, "Origin: http://H.Example:5001\r\n"), Ok(()));
        assert_eq!(verdict(&p, "Origin: https://h.example:5001/\r\n"), Ok(()));
        // Default ports on both sides.
        let p = knowing(&["h"]);
        let r = req(
            "GET /capture HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nOrigin: http://h\r\n\r\n",
        );
        assert!(p.origin_ok(r.header("origin"), r.header("host")));
        let r = req("GET /capture HTTP/1.1\r\nHost: [::1]:80\r\nUpgrade: websocket\r\nOrigin: http://[::1]\r\n\r\n");
        assert!(p.origin_ok(r.header("origin"), r.header("host")));
        assert!(!p.origin_ok(Some(b"http://h"), Some(b"h:8080")));
        assert!(!p.origin_ok(Some(b"http://h"), None));
        // A Host with URL delimiters is nobody's origin (fuzz finding: Host `a/`
        // against Origin `http://a/`).
        assert!(!p.origin_ok(Some(b"http://h"), Some(b"h/")));
        assert!(!p.origin_ok(Some(b"http://a/"), Some(b"a/")));
    }

    #[test]
    fn dns_rebinding_a_foreign_name_onto_this_service_is_403() {
        // After rebinding, Host and Origin agree on the attacker's name.
        let p = knowing(&["pfx.internal"]);
        let (o, h) = (b"http://attacker.example:5001", b"attacker.example:5001");
        assert!(!p.origin_ok(Some(o), Some(h)));
        assert!(!Policy::default().origin_ok(Some(o), Some(h)));
        let r = req(
            "GET /capture HTTP/1.1\r\nHost: attacker.example:5001\r\nUpgrade: websocket\r\n\
                     Origin: http://attacker.example:5001\r\n\r\n",
        );
        let route = crate::proto::front::route(&r, false, "dumpcap", String::new);
        assert_eq!(check(&p, &r, &route), Err(Refusal::ForeignOrigin));
        // A name that merely ends like a known one is another name.
        assert!(!p.origin_ok(Some(b"http://xpfx.internal"), Some(b"xpfx.internal")));
        assert!(!p.origin_ok(
            Some(b"http://pfx.internal.evil"),
            Some(b"pfx.internal.evil")
        ));
    }

    #[test]
    fn ip_literals_localhost_and_known_names_are_admitted_as_same_origin() {
        let p = Policy::default()
            .with_hosts(&["UI.Example.".to_string()], Some("node-7"))
            .unwrap();
        for (o, h) in [
            ("http://127.0.0.1:5001", "127.0.0.1:5001"),
            ("http://10.1.2.3:5001", "10.1.2.3:5001"),
            ("http://[::1]:5001", "[::1]:5001"),
            ("https://[fe80::1]", "[fe80::1]:443"),
            ("http://localhost:5001", "localhost:5001"),
            ("http://LOCALHOST.:5001", "localhost.:5001"),
            ("http://ui.example:5001", "ui.example:5001"),
            ("http://ui.example.:5001", "ui.example.:5001"),
            ("http://node-7:5001", "Node-7:5001"),
        ] {
            assert!(
                p.origin_ok(Some(o.as_bytes()), Some(h.as_bytes())),
                "{o} / {h}"
            );
        }
        // Not literals: numeric names and partial addresses are DNS names.
        for (o, h) in [
            ("http://127.1:5001", "127.1:5001"),
            ("http://1.2.3.4.nip.io:5001", "1.2.3.4.nip.io:5001"),
            ("http://localhost.evil:5001", "localhost.evil:5001"),
        ] {
            assert!(
                !p.origin_ok(Some(o.as_bytes()), Some(h.as_bytes())),
                "{o} / {h}"
            );
        }
        // The own host name is optional and ignored when it is no name.
        assert_eq!(
            Policy::default()
                .with_hosts(&[], Some("bad name"))
                .unwrap()
                .known_hosts,
            Vec::<String>::new()
        );
        assert!(Policy::default()
            .with_hosts(&["a/b".to_string()], None)
            .unwrap_err()
            .contains("--allow-host"));
        // Fuzz finding: a name with white space is no name (not trimmed).
        assert!(Policy::default()
            .with_hosts(&["e\t".to_string()], None)
            .is_err());
    }

    #[test]
    fn allow_origin_admits_listed_origins_only() {
        let p = policy(&["https://ui.example", "http://Other:8080"], None);
        assert_eq!(verdict(&p, "Origin: https://ui.example:443\r\n"), Ok(()));
        assert_eq!(verdict(&p, "Origin: http://other:8080\r\n"), Ok(()));
        assert_eq!(
            verdict(&p, "Origin: http://ui.example\r\n"),
            Err(Refusal::ForeignOrigin)
        );
        assert!(Policy::new(&["ui.example".into()], None).is_err());
        assert!(Policy::new(&["https://u@x".into()], None).is_err());
    }
}
