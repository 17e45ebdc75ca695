//! HTTP/1.1 request heads in, response bytes out. No I/O here: the reactor
//! hands in what it read and writes what these functions return, so every
//! path is testable and fuzzable with plain bytes.
//!
//! Heads are bounded in size ([`MAX_HEAD`]) and header count
//! ([`MAX_HEADERS`]); anything else malformed is a [`HeadError`] with the
//! status to answer.

use std::fmt::Write as _;

pub use crate::config::limits::MAX_HEAD;
/// Heads up to this size are parsed again after every read, so that
/// garbage is answered at once. Beyond it a head is parsed again only when a
/// read may have ended it ([`worth_parsing`]), so that a client trickling a
/// large head cannot make the loop re-scan it byte by byte.
pub const EAGER_PARSE: usize = 16 * 1024;
/// Beyond [`EAGER_PARSE`], a head is also parsed at each such step of
/// growth, so a malformed one is refused before it reaches the limit.
const PARSE_STEP: usize = 64 * 1024;
pub use crate::config::limits::MAX_HEADERS;

/// One parsed request head.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub method: String,
    /// The path of the request target, still percent-encoded.
    pub path: String,
    /// The raw query string (after `?`), if any.
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes of the buffer the head took; what follows belongs to the body or
    /// the next protocol.
    pub head_len: usize,
}

/// Why a head was refused, and with which status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Head larger than the limit in force (by default [`MAX_HEAD`]): 431.
    TooLarge { max: usize },
    /// More header lines than the limit in force (by default
    /// [`MAX_HEADERS`]): 431.
    TooManyHeaders { max: usize },
    /// Not HTTP/1.x: 400, with what was wrong.
    Malformed(String),
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge { .. } | HeadError::TooManyHeaders { .. } => 431,
            HeadError::Malformed(_) => 400,
        }
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::TooLarge { max } => write!(f, "request head larger than {max} bytes"),
            HeadError::TooManyHeaders { max } => write!(f, "more than {max} request headers"),
            HeadError::Malformed(why) => write!(f, "malformed request: {why}"),
        }
    }
}

/// How the request's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete,
/// read more (the caller enforces [`MAX_HEAD`] through this function too).
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, HeadError> {
    parse_request_limited(buf, MAX_HEAD, MAX_HEADERS)
}

/// Whether `buf`, whose last `new` bytes just arrived, is worth handing to
/// [`parse_request_limited`] again: it is small, or the new bytes may end
/// the head (a blank line), or it crossed a [`PARSE_STEP`] or the limit.
/// Parsing only then bounds the work per head to a few passes over it.
pub fn worth_parsing(buf: &[u8], new: usize, max_head: usize) -> bool {
    let len = buf.len();
    let before = len.saturating_sub(new);
    if len <= EAGER_PARSE || len >= max_head || before / PARSE_STEP != len / PARSE_STEP {
        return true;
    }
    // Three bytes of overlap catch a `\r\n\r\n` split across reads.
    let from = before.saturating_sub(3);
    buf[from..].windows(2).any(|w| w == b"\n\n" || w == b"\n\r")
}

/// [`parse_request`] with explicit limits.
pub fn parse_request_limited(
    buf: &[u8],
    max_head: usize,
    max_headers: usize,
) -> Result<Option<Request>, HeadError> {
    // httparse wants a fixed header array; a smaller limit just uses a prefix.
    let mut storage = [httparse::EMPTY_HEADER; 256];
    let slots = max_headers.min(storage.len());
    let mut req = httparse::Request::new(&mut storage[..slots]);
    // Only the first `max_head` bytes can hold an acceptable head. Looking at
    // no more also makes the answer independent of how the bytes arrived: a
    // bad byte early in one large read is as malformed as in a small one.
    let window = &buf[..buf.len().min(max_head)];
    let status = match req.parse(window) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::TooManyHeaders { max: slots })
        }
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let head_len = match status {
        httparse::Status::Partial => {
            return if buf.len() >= max_head {
                Err(HeadError::TooLarge { max: max_head })
            } else {
                Ok(None)
            };
        }
        httparse::Status::Complete(n) => n,
    };
    if head_len > max_head {
        return Err(HeadError::TooLarge { max: max_head });
    }
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    let (path, query) = split_target(target)?;
    let headers = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    Ok(Some(Request {
        method,
        path,
        query,
        minor_version: req.version.unwrap_or(1),
        headers,
        head_len,
    }))
}

/// Splits a request target into path and query, accepting origin form
/// (`/capture?x`) and absolute form (`http://host/capture?x`), as proxies send.
fn split_target(target: &str) -> Result<(String, Option<String>), HeadError> {
    let rest = if target.starts_with('/') {
        target
    } else if let Some(after) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        match after.find('/') {
            Some(i) => &after[i..],
            None => match after.find('?') {
                Some(i) => &after[i..],
                None => "/",
            },
        }
    } else if target == "*" {
        "*"
    } else {
        return Err(HeadError::Malformed(format!(
            "unsupported request target '{}'",
            truncate(target, 64)
        )));
    };
    // A fragment never belongs in a request; drop it if a client sent one.
    let rest = rest.split('#').next().unwrap_or(rest);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (rest, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    Ok((path.to_string(), query))
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Request {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first header of that name as text, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Whether any header of that name lists `token` in its comma-separated
    /// value (case-insensitive), as `Connection: keep-alive, Upgrade` does.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the connection stays open after the response (RFC 9112 9.3).
    pub fn keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.has_token("connection", "keep-alive")
        } else {
            !self.has_token("connection", "close")
        }
    }

    /// How the body is framed (RFC 9112 6.3); conflicting or invalid framing
    /// is malformed, since it is how requests get smuggled.
    pub fn body_kind(&self) -> Result<BodyKind, HeadError> {
        let te: Vec<&[u8]> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
            .map(|(_, v)| v.as_slice())
            .collect();
        let cl: Vec<&[u8]> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.as_slice())
            .collect();
        if !te.is_empty() {
            if !cl.is_empty() {
                return Err(HeadError::Malformed(
                    "both Transfer-Encoding and Content-Length".into(),
                ));
            }
            let last = std::str::from_utf8(te[te.len() - 1])
                .ok()
                .and_then(|v| v.split(',').next_back())
                .map(|t| t.trim().to_ascii_lowercase());
            return match last.as_deref() {
                Some("chunked") => Ok(BodyKind::Chunked),
                _ => Err(HeadError::Malformed("unsupported Transfer-Encoding".into())),
            };
        }
        Ok(match content_length(cl)? {
            None | Some(0) => BodyKind::None,
            Some(n) => BodyKind::Length(n),
        })
    }

    /// The head rules every request must hold whatever it asks for, checked
    /// before it is routed: HTTP/1.1 needs exactly one `Host` and HTTP/1.0
    /// at most one (RFC 9112 3.2); `Content-Length` values must be decimal
    /// and agree (RFC 9112 6.3). Anything else is answered 400, since a
    /// proxy in front of us may read such a head differently than we do.
    pub fn check_rules(&self) -> Result<(), HeadError> {
        let hosts = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
            .count();
        if hosts > 1 {
            return Err(HeadError::Malformed("more than one Host header".into()));
        }
        if hosts == 0 && self.minor_version >= 1 {
            return Err(HeadError::Malformed("HTTP/1.1 request without Host".into()));
        }
        content_length(
            self.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.as_slice()),
        )
        .map(|_| ())
    }
}

/// The one length all `Content-Length` values state, if any.
fn content_length<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<u64>, HeadError> {
    let mut len = None;
    for v in values {
        let n = std::str::from_utf8(v)
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| HeadError::Malformed("invalid Content-Length".into()))?;
        if len.is_some_and(|l| l != n) {
            return Err(HeadError::Malformed("conflicting Content-Length".into()));
        }
        len = Some(n);
    }
    Ok(len)
}

/// What a request asks of the websocket protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// A plain HTTP request.
    None,
    /// A valid websocket opening handshake; the value to answer with in
    /// `Sec-WebSocket-Accept`.
    WebSocket { accept: String },
    /// An upgrade request we cannot accept: status and reason.
    Refused(u16, &'static str),
}

/// Checks the websocket opening handshake (RFC 6455 4.2.1).
pub fn websocket_upgrade(req: &Request) -> Upgrade {
    if !req.has_token("upgrade", "websocket") {
        return Upgrade::None;
    }
    if req.method != "GET" {
        return Upgrade::Refused(400, "websocket upgrade needs GET");
    }
    if req.minor_version == 0 {
        return Upgrade::Refused(400, "websocket upgrade needs HTTP/1.1");
    }
    if !req.has_token("connection", "upgrade") {
        return Upgrade::Refused(400, "websocket upgrade without 'Connection: Upgrade'");
    }
    if req.header_str("sec-websocket-version").map(str::trim) != Some("13") {
        return Upgrade::Refused(426, "unsupported websocket version, use 13");
    }
    // RFC 6455 11.3.1: the key must not appear more than once.
    let keys = req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-key"))
        .count();
    if keys > 1 {
        return Upgrade::Refused(400, "more than one Sec-WebSocket-Key");
    }
    match req.header("sec-websocket-key") {
        Some(key) if valid_key(key) => Upgrade::WebSocket {
            accept: tungstenite::handshake::derive_accept_key(trim_ascii(key)),
        },
        _ => Upgrade::Refused(400, "missing or invalid Sec-WebSocket-Key"),
    }
}

fn trim_ascii(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// A key is the base64 of 16 bytes: 24 characters ending in "==".
fn valid_key(key: &[u8]) -> bool {
    let key = trim_ascii(key);
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

/// The reason phrase of the statuses this service sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// A complete response with a body. `close` adds `Connection: close`.
pub fn response(
    status: u16,
    extra: &[(&str, &str)],
    content_type: &str,
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let mut head = String::with_capacity(160 + body.len());
    let _ = write!(head, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    let _ = write!(head, "Server: packetflix/{}\r\n", env!("CARGO_PKG_VERSION"));
    if !content_type.is_empty() {
        let _ = write!(head, "Content-Type: {content_type}\r\n");
    }
    let _ = write!(head, "Content-Length: {}\r\n", body.len());
    for (n, v) in extra {
        let _ = write!(head, "{n}: {v}\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A short `text/plain` response.
pub fn text_response(status: u16, text: &str, close: bool) -> Vec<u8> {
    let body = format!("{text}\n");
    response(
        status,
        &[],
        "text/plain; charset=utf-8",
        body.as_bytes(),
        close,
    )
}

/// The `101 Switching Protocols` answer to a websocket handshake.
pub fn switching_protocols(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// The `/version` answer's body: name, version and the capture engine.
pub fn version_body(engine: &str) -> Vec<u8> {
    // Written by hand to keep the keys in this order (`name` first, as the
    // original answers); the one variable value is escaped as JSON.
    let engine = serde_json::Value::from(engine);
    format!(
        r#"{{"name":"packetflix","version":"{}","capture-engine":{engine}}}"#,
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Request {
        parse_request(s.as_bytes()).unwrap().unwrap()
    }

    const WS: &str = "GET /capture?netns=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn complete_head_splits_path_query_and_headers() {
        let r = parse("GET /capture?netns=5&nif=eth0 HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\nrest");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/capture");
        assert_eq!(r.query.as_deref(), Some("netns=5&nif=eth0"));
        assert_eq!(r.minor_version, 1);
        assert_eq!(r.header("x-a"), Some(&b"b"[..]));
        assert_eq!(
            r.head_len,
            "GET /capture?netns=5&nif=eth0 HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\r\n".len()
        );
    }

    #[test]
    fn partial_head_asks_for_more_at_every_split() {
        for cut in 0..WS.len() {
            assert_eq!(parse_request(&WS.as_bytes()[..cut]), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn absolute_form_target_is_reduced_to_path_and_query() {
        let r = parse("GET http://host:5001/version?x=1 HTTP/1.1\r\n\r\n");
        assert_eq!(
            (r.path.as_str(), r.query.as_deref()),
            ("/version", Some("x=1"))
        );
        let r = parse("GET http://host:5001 HTTP/1.1\r\n\r\n");
        assert_eq!(r.path, "/");
    }

    #[test]
    fn garbage_is_malformed_with_status_400() {
        let e = parse_request(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").unwrap_err();
        assert_eq!(e.status(), 400);
        let e = parse_request(b"GET foo HTTP/1.1\r\n\r\n").unwrap_err();
        assert_eq!(e.status(), 400);
        let e = parse_request(b"GET / HTTP/2.0\r\n\r\n").unwrap_err();
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn oversized_head_is_431_even_while_incomplete() {
        let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(
            parse_request(&big),
            Err(HeadError::TooLarge { max: MAX_HEAD })
        );
        assert_eq!(HeadError::TooLarge { max: MAX_HEAD }.status(), 431);
    }

    #[test]
    fn malformed_head_is_400_however_much_follows_it() {
        // Found by the session fuzz target: the same bytes got 400 when read
        // in small pieces but 431 when more than MAX_HEAD came in one read.
        let mut bytes = b"GET / HTTP/1.1\r\nX-A: a\0b".to_vec();
        let short = parse_request(&bytes);
        assert!(matches!(short, Err(HeadError::Malformed(_))), "{short:?}");
        bytes.resize(MAX_HEAD + 100, b'a');
        assert_eq!(parse_request(&bytes), short);
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut s = String::from("GET / HTTP/1.1\r\n");
        for i in 0..(MAX_HEADERS + 1) {
            s.push_str(&format!("X-{i}: v\r\n"));
        }
        s.push_str("\r\n");
        assert_eq!(
            parse_request(s.as_bytes()),
            Err(HeadError::TooManyHeaders { max: MAX_HEADERS })
        );
    }

    #[test]
    fn limit_errors_name_the_configured_limits_not_the_defaults() {
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(600));
        let e = parse_request_limited(big.as_bytes(), 256, 8).unwrap_err();
        assert_eq!(e, HeadError::TooLarge { max: 256 });
        assert_eq!(e.to_string(), "request head larger than 256 bytes");
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..5 {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        let e = parse_request_limited(many.as_bytes(), 1024, 4).unwrap_err();
        assert_eq!(e, HeadError::TooManyHeaders { max: 4 });
        assert_eq!(e.to_string(), "more than 4 request headers");
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_token_lists_are_split() {
        let r = parse(WS);
        assert_eq!(r.header_str("SEC-websocket-VERSION"), Some("13"));
        assert!(r.has_token("connection", "upgrade"));
        assert!(r.has_token("Connection", "KEEP-ALIVE"));
        assert!(!r.has_token("connection", "close"));
    }

    #[test]
    fn valid_handshake_gets_the_rfc_accept_key() {
        // RFC 6455 section 1.3 gives this key and its accept value.
        assert_eq!(
            websocket_upgrade(&parse(WS)),
            Upgrade::WebSocket {
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()
            }
        );
    }

    #[test]
    fn plain_get_is_no_upgrade() {
        assert_eq!(
            websocket_upgrade(&parse("GET /capture HTTP/1.1\r\n\r\n")),
            Upgrade::None
        );
    }

    #[test]
    fn broken_handshakes_are_refused_with_a_reason() {
        let no_key = WS.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
        assert!(matches!(
            websocket_upgrade(&parse(&no_key)),
            Upgrade::Refused(400, _)
        ));
        let bad_key = WS.replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
        assert!(matches!(
            websocket_upgrade(&parse(&bad_key)),
            Upgrade::Refused(400, _)
        ));
        let v8 = WS.replace("Version: 13", "Version: 8");
        assert!(matches!(
            websocket_upgrade(&parse(&v8)),
            Upgrade::Refused(426, _)
        ));
        let post = WS.replace("GET", "POST");
        assert!(matches!(
            websocket_upgrade(&parse(&post)),
            Upgrade::Refused(400, _)
        ));
        let no_conn = WS.replace("keep-alive, Upgrade", "keep-alive");
        assert!(matches!(
            websocket_upgrade(&parse(&no_conn)),
            Upgrade::Refused(400, _)
        ));
    }

    #[test]
    fn second_websocket_key_is_refused() {
        let two = WS.replace(
            "Sec-WebSocket-Version",
            "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version",
        );
        assert_eq!(
            websocket_upgrade(&parse(&two)),
            Upgrade::Refused(400, "more than one Sec-WebSocket-Key")
        );
    }

    #[test]
    fn http11_without_host_or_with_two_is_malformed() {
        assert_eq!(parse(WS).check_rules(), Ok(()));
        let none = parse("GET /version HTTP/1.1\r\nX: y\r\n\r\n").check_rules();
        assert!(matches!(none, Err(HeadError::Malformed(ref w)) if w.contains("without Host")));
        let two = parse("GET /version HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n");
        assert_eq!(two.check_rules().map_err(|e| e.status()), Err(400));
        // HTTP/1.0 may omit Host, but not repeat it.
        assert_eq!(parse("GET /version HTTP/1.0\r\n\r\n").check_rules(), Ok(()));
        let two10 = parse("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n");
        assert!(two10.check_rules().is_err());
    }

    #[test]
    fn invalid_or_conflicting_content_length_is_malformed_for_any_request() {
        let ok = parse("GET /version HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(ok.check_rules(), Ok(()));
        let same = "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(parse(same).check_rules(), Ok(()));
        for bad in [
            "Content-Length: 3\r\nContent-Length: 4",
            "Content-Length: x",
            "Content-Length: 3, 3",
            "Content-Length: -0",
            "Content-Length: ",
            "Content-Length: 99999999999999999999999",
        ] {
            let r = parse(&format!(
                "GET /version HTTP/1.1\r\nHost: a\r\n{bad}\r\n\r\n"
            ));
            assert_eq!(r.check_rules().map_err(|e| e.status()), Err(400), "{bad}");
        }
    }

    #[test]
    fn keep_alive_follows_version_and_connection_header() {
        assert!(parse("GET / HTTP/1.1\r\n\r\n").keep_alive());
        assert!(!parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive());
    }

    #[test]
    fn body_framing_is_read_and_smuggling_shapes_refused() {
        assert_eq!(
            parse("GET / HTTP/1.1\r\n\r\n").body_kind(),
            Ok(BodyKind::None)
        );
        assert_eq!(
            parse("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n").body_kind(),
            Ok(BodyKind::Length(12))
        );
        assert_eq!(
            parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").body_kind(),
            Ok(BodyKind::Chunked)
        );
        for bad in [
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        ] {
            assert!(parse(bad).body_kind().is_err(), "{bad}");
        }
    }

    #[test]
    fn responses_carry_length_type_and_close() {
        let r = String::from_utf8(text_response(426, "use websocket", true)).unwrap();
        assert!(r.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(r.contains("Content-Length: 14\r\n"));
        assert!(r.contains("Connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\nuse websocket\n"));
        let v: serde_json::Value = serde_json::from_slice(&version_body("native")).unwrap();
        assert_eq!(v["name"], "packetflix");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["capture-engine"], "native");
    }

    #[test]
    fn large_heads_are_parsed_again_only_when_a_read_may_end_them() {
        let max = MAX_HEAD;
        let mut buf = b"GET /capture?x HTTP/1.1\r\nA: ".to_vec();
        buf.resize(EAGER_PARSE - 10, b'a');
        // Small heads: every read.
        assert!(worth_parsing(&buf, 5, max));
        buf.resize(EAGER_PARSE + 100, b'a');
        // A large head growing inside a line: not yet.
        assert!(!worth_parsing(&buf, 50, max));
        // A blank line arrived, also split across two reads.
        buf.extend_from_slice(b"\r\n\r\n");
        assert!(worth_parsing(&buf, 4, max));
        assert!(worth_parsing(&buf, 1, max));
        // Crossing a parse step or reaching the limit: parse.
        let mut big = vec![b'a'; PARSE_STEP + 1];
        assert!(worth_parsing(&big, 2, max));
        big.resize(max, b'a');
        assert!(worth_parsing(&big, 1, max));
        // A head built a byte at a time is parsed a bounded number of times.
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        let mut parses = 0;
        while head.len() < 300 * 1024 {
            head.push(if head.len() % 80 == 0 { b'\n' } else { b'a' });
            if worth_parsing(&head, 1, max) {
                parses += 1;
            }
        }
        assert!(parses <= EAGER_PARSE + 8, "{parses} parses");
    }
}
