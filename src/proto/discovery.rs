//! The GhostWire discovery client: `GET /mobyshark` and picking the target a
//! capture names out of the answer (API.md, "Resolving the target", step 2).
//!
//! Two layers. The sans-IO layer ([`mobyshark_request`], [`ResponseParser`]
//! over the shared framer in [`crate::proto::http1`], [`find_target`]) turns bytes
//! into decisions and touches no socket, so tests and fuzz targets drive it
//! with plain bytes. [`DiscoveryCall`] moves those bytes over one non-blocking
//! TCP connection for the single-threaded reactor.
//! Nothing here may block: no name resolution (the caller hands over a
//! `SocketAddr`), no blocking connect, read or write, no sleeping. Nothing
//! here keeps time either: the reactor owns the discovery deadline, drops the
//! call when it passes and reports [`DiscoveryError::TimedOut`].

use crate::proto::http1::{self, BodyFramer, Framing, HeadParser, Role};
use crate::proto::target::{Target, TargetError};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// Largest `/mobyshark` body we accept. GhostWire describes each container in
/// roughly 300 to 500 bytes of JSON, so 8 MiB holds well over ten thousand of
/// them (Kubernetes supports 110 pods per node; busy Docker hosts run a few
/// thousand containers) while bounding what a misbehaving service can make
/// us hold in memory.
pub const MAX_DISCOVERY_BODY: usize = 8 * 1024 * 1024;

/// Largest response head (status line plus header fields), as the shared
/// framer bounds it; the chunked-body trailer section has its own bound of
/// the same size ([`http1::MAX_TRAILER`]).
pub use crate::proto::http1::MAX_RESPONSE_HEAD;

/// Most header fields in one response head; GhostWire sends fewer than ten.
pub const MAX_RESPONSE_HEADERS: usize = 64;

/// How the discovery service is named in every message a user sees.
const SERVICE: &str = "discovery service (GhostWire)";

/// The path GhostWire serves its container list at.
const MOBYSHARK_PATH: &str = "/mobyshark";

/// Everything that can go wrong asking the discovery service. `Display`
/// names the service without its address; [`DiscoveryError::describe`] adds
/// the address the user configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryError {
    /// Connecting or sending the request failed; carries the reason.
    Unreachable(String),
    /// The configured host name does not resolve (yet): the system
    /// resolver's reason.
    Unresolved { host: String, why: String },
    /// The reactor's deadline passed before the answer was complete.
    TimedOut,
    /// The service answered with a status other than 200 OK.
    BadStatus(u16),
    /// The answer is not a well-formed HTTP/1.1 response (or the connection
    /// ended before it was complete); carries what was wrong.
    BadResponse(String),
    /// The body is larger than the parser's limit.
    TooLarge,
    /// The body is not a usable `{"containers":[...]}` document.
    BadJson(String),
    /// The list holds no container with this name and prefix.
    NotListed { name: String, prefix: String },
}

impl DiscoveryError {
    /// The user-facing message, naming the discovery service by the address
    /// the user configured (for example `127.0.0.1:5000`).
    pub fn describe(&self, service_addr: &str) -> String {
        Described {
            error: self,
            addr: Some(service_addr),
        }
        .to_string()
    }
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Described {
            error: self,
            addr: None,
        }
        .fmt(f)
    }
}

impl std::error::Error for DiscoveryError {}

/// One formatting path for messages with and without the service address.
struct Described<'a> {
    error: &'a DiscoveryError,
    addr: Option<&'a str>,
}

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match self.addr {
            Some(addr) => format!("{SERVICE} at {addr}"),
            None => SERVICE.to_owned(),
        };
        match self.error {
            DiscoveryError::Unreachable(why) => write!(f, "{who} is unreachable: {why}"),
            DiscoveryError::Unresolved { host, why } => {
                write!(f, "discovery service name {host:?} does not resolve ({why})")
            }
            DiscoveryError::TimedOut => write!(f, "{who} timed out: no complete answer within the discovery deadline (--discovery-timeout)"),
            DiscoveryError::BadStatus(status) => {
                write!(
                    f,
                    "{who} answered GET {MOBYSHARK_PATH} with HTTP status {status}"
                )
            }
            DiscoveryError::BadResponse(why) => {
                write!(f, "{who} sent an invalid HTTP response: {why}")
            }
            DiscoveryError::TooLarge => write!(
                f,
                "{who} sent a container list larger than the {} MiB limit",
                MAX_DISCOVERY_BODY / (1024 * 1024)
            ),
            DiscoveryError::BadJson(why) => {
                write!(f, "{who} sent an unusable container list: {why}")
            }
            DiscoveryError::NotListed { name, prefix } if prefix.is_empty() => {
                write!(
                    f,
                    "container {name:?} (no prefix) is not listed by the {who}"
                )
            }
            DiscoveryError::NotListed { name, prefix } => write!(
                f,
                "container {name:?} (prefix {prefix:?}) is not listed by the {who}"
            ),
        }
    }
}

pub(crate) fn bad(why: impl Into<String>) -> DiscoveryError {
    DiscoveryError::BadResponse(why.into())
}

/// The complete `GET /mobyshark` request. `host` is the discovery service as
/// configured (a name or an address literal, without port); IPv6 literals get
/// their brackets in the `Host` header.
pub fn mobyshark_request(host: &str, port: u16) -> Vec<u8> {
    // The host comes from the command line; dropping control characters and
    // spaces keeps a mistyped value from splitting the header line.
    let host: String = host
        .chars()
        .filter(|c| !c.is_control() && *c != ' ')
        .collect();
    let authority = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    format!(
        "GET {MOBYSHARK_PATH} HTTP/1.1\r\n\
         Host: {authority}\r\n\
         Accept: application/json\r\n\
         User-Agent: packetflix/{}\r\n\
         Connection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// A complete HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Where the incremental parser stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Reading a response head (interim 1xx heads are read and dropped here).
    Head,
    /// Reading the body through the shared framer.
    Body(BodyFramer),
    /// A response was delivered or an error reported; nothing more to do.
    Finished,
}

/// Incremental HTTP/1.1 response parser: feed it bytes as they arrive, split
/// anywhere, and it answers once the response is complete. Heads and bodies
/// are read by the shared framer in [`crate::proto::http1`] as a decoding user
/// ([`Role::Decode`]): bodies may be delimited by Content-Length, chunked
/// transfer coding (extensions and trailers are ignored), or the end of the
/// connection; the payload is collected here within the body limit. Interim
/// 1xx responses are skipped. After it has delivered a response or an error,
/// the parser is finished and refuses further input.
#[derive(Debug)]
pub struct ResponseParser {
    max_body: usize,
    /// Received head bytes not yet consumed (body bytes go straight to the
    /// framer).
    pending: Vec<u8>,
    head: HeadParser,
    state: State,
    status: u16,
    body: Vec<u8>,
}

impl ResponseParser {
    /// A parser that refuses bodies longer than `max_body` bytes with
    /// [`DiscoveryError::TooLarge`].
    pub fn new(max_body: usize) -> Self {
        ResponseParser {
            max_body,
            pending: Vec::new(),
            head: HeadParser::new(Role::Decode, MAX_RESPONSE_HEADERS),
            state: State::Head,
            status: 0,
            body: Vec::new(),
        }
    }

    /// Takes the next bytes from the connection. `Ok(None)`: more is needed.
    /// Bytes after a complete response are ignored (we asked the service to
    /// close the connection).
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<Response>, DiscoveryError> {
        let outcome = match self.state {
            State::Finished => return Err(already_finished()),
            State::Head => {
                self.pending.extend_from_slice(data);
                self.read_heads()
            }
            State::Body(_) => self.read_body(data),
        };
        if !matches!(outcome, Ok(None)) {
            self.finish();
        }
        outcome
    }

    /// The connection ended. That completes a body delimited by the end of
    /// the connection; anywhere else it means the response was cut short.
    pub fn eof(&mut self) -> Result<Response, DiscoveryError> {
        let outcome = match &self.state {
            State::Head if self.pending.is_empty() => {
                Err(bad("it closed the connection without answering"))
            }
            State::Head => Err(bad(
                "it closed the connection in the middle of the response head",
            )),
            State::Body(framer) => match framer.at_close() {
                Ok(()) => Ok(self.take_response()),
                Err(e) => Err(e.into()),
            },
            State::Finished => Err(already_finished()),
        };
        self.finish();
        outcome
    }

    fn finish(&mut self) {
        self.state = State::Finished;
        self.pending = Vec::new();
    }

    fn take_response(&mut self) -> Response {
        Response {
            status: self.status,
            body: std::mem::take(&mut self.body),
        }
    }

    /// Reads the heads in `pending`: interim ones are dropped, the final one
    /// starts its body with the bytes after it. Errors and completion leave
    /// `pending` to [`Self::finish`].
    fn read_heads(&mut self) -> Result<Option<Response>, DiscoveryError> {
        let mut pos = 0;
        loop {
            let Some(head) = self.head.parse(&self.pending[pos..], false)? else {
                self.pending.drain(..pos);
                return Ok(None);
            };
            pos += head.len;
            let framing = match head.framing {
                Framing::Interim => continue,
                Framing::Tunnel => {
                    return Err(bad(
                        "it switched protocols (status 101) without being asked to",
                    ))
                }
                Framing::None => Framing::None,
                body => {
                    refuse_compressed(&head.headers)?;
                    body
                }
            };
            self.status = head.status;
            let framer = BodyFramer::with_limit(framing, self.max_body as u64)?;
            self.state = State::Body(framer);
            let rest = std::mem::take(&mut self.pending);
            return self.read_body(&rest[pos..]);
        }
    }

    /// Passes body bytes through the framer, keeping the payload.
    fn read_body(&mut self, data: &[u8]) -> Result<Option<Response>, DiscoveryError> {
        let State::Body(framer) = &mut self.state else {
            return Err(already_finished());
        };
        let body = &mut self.body;
        framer.feed(data, |payload| body.extend_from_slice(payload))?;
        if framer.is_done() {
            return Ok(Some(self.take_response()));
        }
        Ok(None)
    }
}

impl From<http1::Error> for DiscoveryError {
    fn from(e: http1::Error) -> DiscoveryError {
        match e {
            http1::Error::TooLarge => DiscoveryError::TooLarge,
            e => bad(e.to_string()),
        }
    }
}

pub(crate) fn already_finished() -> DiscoveryError {
    bad("this exchange is already over")
}

/// We send no Accept-Encoding, so a compressed body is a service error better
/// named here than as unreadable JSON later.
fn refuse_compressed(headers: &[(&str, &[u8])]) -> Result<(), DiscoveryError> {
    let codings = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-encoding"))
        .flat_map(|(_, value)| http1::list_items(value));
    for coding in codings {
        if !coding.eq_ignore_ascii_case(b"identity") {
            return Err(bad(format!(
                "the body is compressed ({}), which this client does not decode",
                String::from_utf8_lossy(coding)
            )));
        }
    }
    Ok(())
}

/// The first target in a `/mobyshark` body whose `name` and `prefix` both
/// equal the given ones (a missing or null `prefix` is the empty prefix).
///
/// The body is read as a stream and only one container entry is held at a
/// time, so a large list costs no more memory than its largest entry. Other
/// top-level keys are ignored; so are entries that do not match, however
/// malformed (other than JSON syntax errors, which end the parse). If the
/// first matching entry is itself invalid, that is reported rather than
/// falling back to a later match: a later duplicate is no more trustworthy.
pub fn find_target(body: &[u8], name: &str, prefix: &str) -> Result<Target, DiscoveryError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let listing = ListingSeed { name, prefix }
        .deserialize(&mut de)
        .and_then(|listing| de.end().map(|()| listing))
        .map_err(|e| DiscoveryError::BadJson(e.to_string()))?;
    match listing {
        Listing::NoContainers => Err(DiscoveryError::BadJson(
            "it has no \"containers\" list".into(),
        )),
        Listing::NotFound => Err(DiscoveryError::NotListed {
            name: name.to_owned(),
            prefix: prefix.to_owned(),
        }),
        Listing::Found { index, target } => {
            target.map_err(|e| DiscoveryError::BadJson(format!("containers[{index}]: {e}")))
        }
    }
}

/// What a `/mobyshark` body says about the container we look for.
enum Listing {
    NoContainers,
    NotFound,
    Found {
        index: usize,
        target: Result<Target, TargetError>,
    },
}

/// Reads the top-level object, skipping everything but `containers`.
#[derive(Clone, Copy)]
struct ListingSeed<'a> {
    name: &'a str,
    prefix: &'a str,
}

impl<'de> DeserializeSeed<'de> for ListingSeed<'_> {
    type Value = Listing;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Listing, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ListingSeed<'_> {
    type Value = Listing;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with a \"containers\" list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Listing, A::Error> {
        let mut listing = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "containers" {
                map.next_value::<IgnoredAny>()?;
            } else if listing.is_some() {
                return Err(de::Error::duplicate_field("containers"));
            } else {
                listing = Some(map.next_value_seed(ContainersSeed(self))?);
            }
        }
        Ok(listing.unwrap_or(Listing::NoContainers))
    }
}

/// Reads the `containers` array one entry at a time.
struct ContainersSeed<'a>(ListingSeed<'a>);

impl<'de> DeserializeSeed<'de> for ContainersSeed<'_> {
    type Value = Listing;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Listing, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ContainersSeed<'_> {
    type Value = Listing;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of containers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Listing, A::Error> {
        let mut index = 0;
        while let Some(raw) = seq.next_element::<Box<serde_json::value::RawValue>>()? {
            // An entry that is valid JSON but cannot be read as a value (a
            // number too large for a float, say) matches nothing, as in
            // [`ParsedListing`].
            let Ok(entry) = serde_json::from_str::<Value>(raw.get()) else {
                index += 1;
                continue;
            };
            if entry_matches(&entry, self.0.name, self.0.prefix) {
                // The rest still has to be read (and be valid JSON).
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                return Ok(Listing::Found {
                    index,
                    target: Target::try_from(entry),
                });
            }
            index += 1;
        }
        Ok(Listing::NotFound)
    }
}

fn entry_matches(entry: &Value, name: &str, prefix: &str) -> bool {
    // Missing and null mean empty, as in the target model.
    let text = |key| match entry.get(key) {
        None | Some(Value::Null) => Some(""),
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => None,
    };
    entry.is_object() && text("name") == Some(name) && text("prefix") == Some(prefix)
}

/// A `/mobyshark` answer parsed once, to serve every lookup made while it is
/// fresh: the body is kept, and each `(name, prefix)` maps to where its first
/// entry lies in it. A lookup then parses only that one entry, so a listing
/// of thousands of containers costs its size plus a small index, however
/// many captures ask.
#[derive(Debug)]
pub struct ParsedListing {
    body: Vec<u8>,
    /// `(name, prefix)` -> (index in `containers`, byte range of the entry).
    first: std::collections::HashMap<(String, String), (usize, std::ops::Range<usize>)>,
}

/// The top-level object; only `containers` matters, its entries kept raw.
#[derive(serde::Deserialize)]
struct RawListing<'a> {
    #[serde(borrow, default)]
    containers: Option<Vec<&'a serde_json::value::RawValue>>,
}

impl ParsedListing {
    /// Parses a `/mobyshark` body. Errors are what [`find_target`] reports
    /// for a body without a usable `containers` list; unlike it, this also
    /// refuses a body that is not UTF-8 in parts no lookup reads (JSON is
    /// UTF-8, RFC 8259 8.1, and every part is indexed here).
    pub fn parse(body: Vec<u8>) -> Result<ParsedListing, DiscoveryError> {
        let mut first = std::collections::HashMap::new();
        {
            let raw: RawListing = serde_json::from_slice(&body)
                .map_err(|e| DiscoveryError::BadJson(e.to_string()))?;
            let entries = raw
                .containers
                .ok_or_else(|| DiscoveryError::BadJson("it has no \"containers\" list".into()))?;
            let base = body.as_ptr() as usize;
            for (index, entry) in entries.iter().enumerate() {
                let text = entry.get();
                // Read as `find_target` reads entries (a `Value`: the last of
                // duplicate keys wins); not objects, or a name or prefix
                // that is not a string (missing/null means empty), match
                // nothing.
                let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
                    continue;
                };
                let as_text = |key| match map.get(key) {
                    None | Some(Value::Null) => Some(String::new()),
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(_) => None,
                };
                let (Some(name), Some(prefix)) = (as_text("name"), as_text("prefix")) else {
                    continue;
                };
                let start = text.as_ptr() as usize - base;
                first
                    .entry((name, prefix))
                    .or_insert((index, start..start + text.len()));
            }
        }
        first.shrink_to_fit();
        Ok(ParsedListing { body, first })
    }

    /// The first target named `name` with `prefix`, as [`find_target`]
    /// would pick it from the same body.
    pub fn find(&self, name: &str, prefix: &str) -> Result<Target, DiscoveryError> {
        let Some((index, range)) = self.first.get(&(name.to_owned(), prefix.to_owned())) else {
            return Err(DiscoveryError::NotListed {
                name: name.to_owned(),
                prefix: prefix.to_owned(),
            });
        };
        let entry: Value = serde_json::from_slice(&self.body[range.clone()])
            .map_err(|e| DiscoveryError::BadJson(format!("containers[{index}]: {e}")))?;
        Target::try_from(entry)
            .map_err(|e| DiscoveryError::BadJson(format!("containers[{index}]: {e}")))
    }

    /// Containers listed under distinct (name, prefix) pairs.
    pub fn len(&self) -> usize {
        self.first.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }

    /// Bytes of the body kept.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http1::MAX_CHUNK_SIZE_LINE;

    const SMALL_LIMIT: usize = 64;

    /// Feeds `chunks` in order; the connection ends after the last one.
    fn parse(chunks: &[&[u8]], max_body: usize) -> Result<Response, DiscoveryError> {
        let mut parser = ResponseParser::new(max_body);
        for chunk in chunks {
            if let Some(response) = parser.feed(chunk)? {
                return Ok(response);
            }
        }
        parser.eof()
    }

    fn ok(body: &[u8]) -> Result<Response, DiscoveryError> {
        Ok(Response {
            status: 200,
            body: body.to_vec(),
        })
    }

    fn bad_response(result: Result<Response, DiscoveryError>) -> String {
        match result {
            Err(DiscoveryError::BadResponse(why)) => why,
            other => panic!("expected BadResponse, got {other:?}"),
        }
    }

    const WITH_LENGTH: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"containers\":[]}";
    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        4;name=value\r\nWiki\r\n5 ; q=\"a;b\"\r\npedia\r\nA\r\n in chunks\r\n\
        0;last\r\nX-Checksum: abc\r\n\r\n";
    const WITH_INTERIM: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
        HTTP/1.1 102 Processing\r\nX-Wait: 1\r\n\r\n\
        HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    const UNTIL_CLOSE: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}";

    #[test]
    fn any_split_of_a_response_gives_the_same_result() {
        let cases: [(&[u8], &[u8]); 4] = [
            (WITH_LENGTH, b"{\"containers\":[]}"),
            (CHUNKED, b"Wikipedia in chunks"),
            (WITH_INTERIM, b"{}"),
            (UNTIL_CLOSE, b"{\"a\":1}"),
        ];
        for (raw, body) in cases {
            for at in 0..=raw.len() {
                let (a, b) = raw.split_at(at);
                assert_eq!(parse(&[a, b], SMALL_LIMIT), ok(body), "split at {at}");
            }
            let bytes: Vec<&[u8]> = raw.chunks(1).collect();
            assert_eq!(parse(&bytes, SMALL_LIMIT), ok(body), "byte by byte");
        }
    }

    #[test]
    fn chunked_body_split_in_three_anywhere_is_decoded() {
        for i in 0..=CHUNKED.len() {
            for j in i..=CHUNKED.len() {
                let parts = [&CHUNKED[..i], &CHUNKED[i..j], &CHUNKED[j..]];
                assert_eq!(
                    parse(&parts, SMALL_LIMIT),
                    ok(b"Wikipedia in chunks"),
                    "{i} {j}"
                );
            }
        }
    }

    #[test]
    fn length_delimited_response_completes_without_waiting_for_close() {
        let mut parser = ResponseParser::new(SMALL_LIMIT);
        assert_eq!(parser.feed(WITH_LENGTH).map(|r| r.is_some()), Ok(true));
        let mut parser = ResponseParser::new(SMALL_LIMIT);
        assert_eq!(parser.feed(CHUNKED).map(|r| r.is_some()), Ok(true));
    }

    #[test]
    fn close_delimited_body_ends_only_at_eof() {
        let mut parser = ResponseParser::new(SMALL_LIMIT);
        assert_eq!(parser.feed(UNTIL_CLOSE), Ok(None));
        assert_eq!(parser.feed(b" more"), Ok(None));
        assert_eq!(parser.eof(), ok(b"{\"a\":1} more"));
    }

    #[test]
    fn bytes_after_a_complete_response_are_ignored() {
        let mut raw = WITH_LENGTH.to_vec();
        raw.extend_from_slice(b"HTTP/1.1 500 Oops\r\n\r\n");
        assert_eq!(parse(&[&raw], SMALL_LIMIT), ok(b"{\"containers\":[]}"));
    }

    #[test]
    fn no_content_and_not_modified_have_no_body() {
        for status in [204u16, 304] {
            let raw = format!("HTTP/1.1 {status} X\r\n\r\n");
            let mut parser = ResponseParser::new(SMALL_LIMIT);
            let response = parser.feed(raw.as_bytes()).unwrap().unwrap();
            assert_eq!((response.status, response.body.len()), (status, 0));
        }
    }

    #[test]
    fn bare_lf_line_ends_in_the_head_are_accepted() {
        let raw = b"HTTP/1.1 200 OK\nContent-Length: 2\n\nab";
        assert_eq!(parse(&[raw], SMALL_LIMIT), ok(b"ab"));
    }

    #[test]
    fn transfer_encoding_wins_over_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n";
        assert_eq!(parse(&[raw], SMALL_LIMIT), ok(b"ab"));
    }

    #[test]
    fn repeated_equal_content_lengths_are_accepted() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse(&[raw], SMALL_LIMIT), ok(b"{}"));
    }

    #[test]
    fn switching_protocols_unasked_is_refused() {
        let why = bad_response(parse(
            &[b"HTTP/1.1 101 Switching Protocols\r\n\r\n"],
            SMALL_LIMIT,
        ));
        assert!(why.contains("101"), "{why}");
    }

    #[test]
    fn declared_length_over_the_limit_is_refused_before_the_body() {
        let mut parser = ResponseParser::new(8);
        assert_eq!(
            parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"),
            Err(DiscoveryError::TooLarge)
        );
        assert_eq!(
            parse(
                &[b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n12345678"],
                8
            ),
            ok(b"12345678")
        );
    }

    #[test]
    fn chunks_adding_up_over_the_limit_are_refused() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n4\r\nfghi\r\n0\r\n\r\n";
        assert_eq!(parse(&[raw], 8), Err(DiscoveryError::TooLarge));
        assert_eq!(parse(&[raw], 9), ok(b"abcdefghi"));
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n";
        assert_eq!(parse(&[huge], 8), Err(DiscoveryError::TooLarge));
    }

    #[test]
    fn close_delimited_body_over_the_limit_is_refused() {
        let mut parser = ResponseParser::new(8);
        assert_eq!(parser.feed(b"HTTP/1.1 200 OK\r\n\r\n12345678"), Ok(None));
        assert_eq!(parser.feed(b"9"), Err(DiscoveryError::TooLarge));
    }

    #[test]
    fn endless_head_is_refused_once_over_the_limit() {
        let mut parser = ResponseParser::new(SMALL_LIMIT);
        assert_eq!(parser.feed(b"HTTP/1.1 200 OK\r\nX-Filler: "), Ok(None));
        let filler = vec![b'a'; 1024];
        let mut outcome = Ok(None);
        for _ in 0..=MAX_RESPONSE_HEAD / filler.len() {
            outcome = parser.feed(&filler);
            if outcome.is_err() {
                break;
            }
        }
        assert!(bad_response(outcome.map(|_| Response {
            status: 0,
            body: vec![]
        }))
        .contains("longer than"));
    }

    #[test]
    fn too_many_header_fields_are_refused() {
        let mut raw = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_RESPONSE_HEADERS {
            raw.push_str(&format!("X-{i}: y\r\n"));
        }
        raw.push_str("Content-Length: 0\r\n\r\n");
        assert!(bad_response(parse(&[raw.as_bytes()], SMALL_LIMIT)).contains("header fields"));
    }

    #[test]
    fn endless_trailer_is_refused() {
        let mut parser = ResponseParser::new(SMALL_LIMIT);
        let start = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n";
        assert_eq!(parser.feed(start), Ok(None));
        let line = b"X-Trailer: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut outcome = Ok(None);
        for _ in 0..=MAX_RESPONSE_HEAD / line.len() {
            outcome = parser.feed(line);
            if outcome.is_err() {
                break;
            }
        }
        assert!(
            matches!(outcome, Err(DiscoveryError::BadResponse(ref why)) if why.contains("trailer"))
        );
    }

    #[test]
    fn malformed_responses_are_refused_with_a_reason() {
        const CHUNKED_HEAD: &str = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let cases: [(String, &str); 12] = [
            ("HTTP/1.1 abc OK\r\n\r\n".into(), "malformed response head"),
            (
                "SSH-2.0-OpenSSH_9.2\r\n\r\n".into(),
                "malformed response head",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nabcde".into(),
                "not a number",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\n".into(),
                "not a number",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef".into(),
                "conflicting Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".into(),
                "unsupported Transfer-Encoding \"gzip, chunked\"",
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}".into(),
                "compressed (gzip)",
            ),
            (format!("{CHUNKED_HEAD}zz\r\n"), "invalid chunk size line"),
            (format!("{CHUNKED_HEAD};ext\r\n"), "invalid chunk size line"),
            (
                format!("{CHUNKED_HEAD}3 4\r\nabc\r\n0\r\n\r\n"),
                "invalid chunk size line",
            ),
            (
                format!("{CHUNKED_HEAD}12345678901234567\r\n"),
                "invalid chunk size line",
            ),
            (
                format!("{CHUNKED_HEAD}3\r\nabcX\r\n0\r\n\r\n"),
                "not followed by a line end",
            ),
        ];
        for (raw, expected) in cases {
            let why = bad_response(parse(&[raw.as_bytes()], SMALL_LIMIT));
            assert!(why.contains(expected), "{raw:?}: {why}");
        }
    }

    #[test]
    fn overlong_chunk_extension_is_refused() {
        let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        raw.resize(raw.len() + MAX_CHUNK_SIZE_LINE, b'x');
        assert!(bad_response(parse(&[&raw], SMALL_LIMIT)).contains("chunk size line"));
    }

    #[test]
    fn connection_ending_early_is_reported_where_it_happened() {
        assert_eq!(
            bad_response(parse(&[], SMALL_LIMIT)),
            "it closed the connection without answering"
        );
        assert!(bad_response(parse(&[b"HTTP/1.1 200 OK\r\n"], SMALL_LIMIT)).contains("head"));
        assert!(
            bad_response(parse(&[&WITH_LENGTH[..WITH_LENGTH.len() - 3]], SMALL_LIMIT))
                .contains("3 bytes of the body still missing")
        );
        assert!(
            bad_response(parse(&[&CHUNKED[..CHUNKED.len() - 2]], SMALL_LIMIT))
                .contains("chunked body")
        );
    }

    #[test]
    fn finished_parser_refuses_more_input() {
        let mut parser = ResponseParser::new(SMALL_LIMIT);
        assert!(parser.feed(WITH_LENGTH).unwrap().is_some());
        assert!(parser.feed(b"x").is_err());
        assert!(parser.eof().is_err());
    }

    #[test]
    fn request_asks_for_json_and_closes() {
        let request = mobyshark_request("127.0.0.1", 5000);
        let text = String::from_utf8(request.clone()).unwrap();
        assert!(text.starts_with("GET /mobyshark HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Request::new(&mut headers);
        assert_eq!(
            parsed.parse(&request),
            Ok(httparse::Status::Complete(request.len()))
        );
        let header = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        assert_eq!(header("accept"), Some(&b"application/json"[..]));
        assert_eq!(header("connection"), Some(&b"close"[..]));
    }

    #[test]
    fn ipv6_host_gets_brackets_once() {
        for host in ["::1", "[::1]"] {
            let text = String::from_utf8(mobyshark_request(host, 5000)).unwrap();
            assert!(text.contains("\r\nHost: [::1]:5000\r\n"), "{text}");
        }
        let text = String::from_utf8(mobyshark_request("ghostwire.local", 80)).unwrap();
        assert!(text.contains("\r\nHost: ghostwire.local:80\r\n"), "{text}");
    }

    #[test]
    fn host_cannot_inject_header_lines() {
        let request = mobyshark_request("evil\r\nX-Injected: 1", 5000);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Request::new(&mut headers);
        assert_eq!(
            parsed.parse(&request),
            Ok(httparse::Status::Complete(request.len()))
        );
        assert!(parsed.headers.iter().all(|h| h.name != "X-Injected"));
    }

    fn fixture() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ghostwire-mobyshark.json"
        );
        std::fs::read(path).unwrap()
    }

    #[test]
    fn first_entry_with_equal_name_and_prefix_wins() {
        let listing = fixture();
        let target = find_target(&listing, "mosquitto", "").unwrap();
        assert_eq!(
            (target.netns, target.pid, target.starttime),
            (4026532777, 4242, 123456)
        );
        let target = find_target(&listing, "mosquitto", "dind-1").unwrap();
        assert_eq!(target.netns, 4026532999);
        assert_eq!(target.network_interfaces, ["eth0", "eth1", "lo"]);
        let target = find_target(&listing, "/run/netns/blue", "").unwrap();
        assert_eq!(target.kind, "bindmount");
    }

    #[test]
    fn earlier_duplicate_wins_over_later() {
        let body = br#"{"containers":[{"name":"a","netns":1},{"name":"a","netns":2}]}"#;
        assert_eq!(find_target(body, "a", "").unwrap().netns, 1);
    }

    #[test]
    fn prefix_must_match_too() {
        let err = find_target(&fixture(), "mosquitto", "dind-2").unwrap_err();
        assert_eq!(
            err,
            DiscoveryError::NotListed {
                name: "mosquitto".into(),
                prefix: "dind-2".into()
            }
        );
        assert!(matches!(
            find_target(&fixture(), "kube-system/coredns-5d78c9869d-7xkqp", "dind-1"),
            Err(DiscoveryError::NotListed { .. })
        ));
    }

    #[test]
    fn unknown_container_is_not_listed() {
        assert!(matches!(
            find_target(&fixture(), "nginx", ""),
            Err(DiscoveryError::NotListed { .. })
        ));
        assert!(matches!(
            find_target(br#"{"containers":[]}"#, "nginx", ""),
            Err(DiscoveryError::NotListed { .. })
        ));
    }

    #[test]
    fn broken_other_entries_do_not_hide_the_match() {
        let body = br#"{"metadata":{"x":[1,{"y":null}]},"containers":[
            42, "text", null, {"name":"webx","netns":"bad"}, {"name":7},
            {"name":"web","prefix":null,"netns":99,"x-extra":true}, {"netns":-1}]}"#;
        assert_eq!(find_target(body, "web", "").unwrap().netns, 99);
    }

    /// A fuzz finding: the two readers disagreed on an entry whose
    /// number does not fit a float (`find_target` failed the lookup, the
    /// parsed listing skipped the entry).
    #[test]
    fn an_entry_with_a_number_out_of_range_matches_nothing_in_either_reader() {
        let body = br#"{"containers":[{"name":"web","netns":1e999},{"name":"web","netns":2}]}"#;
        assert_eq!(find_target(body, "web", "").unwrap().netns, 2);
        let listing = ParsedListing::parse(body.to_vec()).unwrap();
        assert_eq!(listing.find("web", "").unwrap().netns, 2);
    }

    #[test]
    fn invalid_matching_entry_is_reported_with_its_position() {
        let body =
            br#"{"containers":[{"name":"a"},{"name":"web","netns":-5},{"name":"web","netns":5}]}"#;
        match find_target(body, "web", "") {
            Err(DiscoveryError::BadJson(why)) => {
                assert!(why.starts_with("containers[1]: "), "{why}");
                assert!(why.contains("\"netns\""), "{why}");
            }
            other => panic!("expected BadJson, got {other:?}"),
        }
    }

    #[test]
    fn malformed_listings_are_bad_json() {
        let cases: [&[u8]; 7] = [
            b"",
            b"<html>Not here</html>",
            b"[]",
            br#"{"containers":{}}"#,
            br#"{"containers":[{"name":"a"}"#,
            br#"{"containers":[{"name":"a"}]} trailing"#,
            br#"{"containers":[],"containers":[]}"#,
        ];
        for body in cases {
            assert!(
                matches!(find_target(body, "a", ""), Err(DiscoveryError::BadJson(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            find_target(br#"{"items":[]}"#, "a", ""),
            Err(DiscoveryError::BadJson(
                "it has no \"containers\" list".into()
            ))
        );
    }

    #[test]
    fn messages_name_the_service_and_its_address() {
        let refused = DiscoveryError::Unreachable("connection refused".into());
        assert_eq!(
            refused.describe("127.0.0.1:5000"),
            "discovery service (GhostWire) at 127.0.0.1:5000 is unreachable: connection refused"
        );
        assert_eq!(
            refused.to_string(),
            "discovery service (GhostWire) is unreachable: connection refused"
        );
        let not_listed = DiscoveryError::NotListed {
            name: "mosquitto".into(),
            prefix: "dind-1".into(),
        };
        assert_eq!(
            not_listed.to_string(),
            "container \"mosquitto\" (prefix \"dind-1\") is not listed by the discovery service (GhostWire)"
        );
        let all = [
            refused,
            DiscoveryError::TimedOut,
            DiscoveryError::BadStatus(503),
            DiscoveryError::BadResponse("x".into()),
            DiscoveryError::TooLarge,
            DiscoveryError::BadJson("x".into()),
            not_listed,
            DiscoveryError::NotListed {
                name: "mosquitto".into(),
                prefix: String::new(),
            },
        ];
        let messages: Vec<String> = all.iter().map(|e| e.describe("[::1]:5000")).collect();
        for (i, message) in messages.iter().enumerate() {
            assert!(message.contains("GhostWire) at [::1]:5000"), "{message}");
            assert!(!messages[..i].contains(message), "{message} twice");
        }
        assert!(messages[2].contains("503"));
        assert!(messages[4].contains("8 MiB"));
    }
}

#[cfg(test)]
mod listing_tests {
    use super::*;

    /// Bodies that exercise every matching rule of `find_target`.
    const BODIES: [&str; 7] = [
        r#"{"containers":[{"name":"a","prefix":"","netns":5,"pid":1,"starttime":2},{"name":"a","prefix":"","netns":6}]}"#,
        r#"{"x":[1,2],"containers":[["a",""],{"name":"a","prefix":null,"netns":7},{"name":"b","prefix":"p","netns":8}],"y":{}}"#,
        r#"{"containers":[{"name":"a","prefix":5},{"name":"a","netns":"bad"},{"name":"a","netns":9}]}"#,
        r#"{"containers":[]}"#,
        r#"{"nothing":1}"#,
        r#"{"containers":[{"name":"a"}],"containers":[]}"#,
        r#"{"containers":[{"name":"a","netns":1}"#,
    ];

    #[test]
    fn duplicate_keys_in_an_entry_are_read_as_find_target_reads_them() {
        let body = br#"{"containers":[{"name":"x","prefix":"p","prefix":"","netns":3},{"name":"x","netns":4}]}"#;
        let l = ParsedListing::parse(body.to_vec()).unwrap();
        assert_eq!(l.find("x", "").unwrap().netns, 3);
        assert_eq!(find_target(body, "x", "").unwrap().netns, 3);
    }

    #[test]
    fn a_body_that_is_not_utf8_is_refused() {
        let mut body = br#"{"containers":[{"name":"a","netns":1},{"x":"#.to_vec();
        body.extend_from_slice(b"\"\xff\"}]}");
        assert!(matches!(
            ParsedListing::parse(body),
            Err(DiscoveryError::BadJson(_))
        ));
    }

    #[test]
    fn parsed_listing_finds_what_find_target_finds() {
        for body in BODIES {
            let parsed = ParsedListing::parse(body.as_bytes().to_vec());
            for (name, prefix) in [("a", ""), ("b", "p"), ("b", ""), ("zz", "")] {
                let direct = find_target(body.as_bytes(), name, prefix);
                match &parsed {
                    Ok(l) => {
                        let via = l.find(name, prefix);
                        match (&direct, &via) {
                            (Ok(d), Ok(v)) => assert_eq!(d, v, "{body} {name}"),
                            (Err(d), Err(v)) => assert_eq!(
                                std::mem::discriminant(d),
                                std::mem::discriminant(v),
                                "{body} {name}: {d} / {v}"
                            ),
                            _ => panic!("{body} {name}: {direct:?} vs {via:?}"),
                        }
                    }
                    Err(e) => {
                        assert!(matches!(e, DiscoveryError::BadJson(_)), "{body}: {e}");
                        assert!(direct.is_err(), "{body}: {direct:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn first_listed_entry_wins_and_an_invalid_first_match_is_reported() {
        let l = ParsedListing::parse(BODIES[0].as_bytes().to_vec()).unwrap();
        assert_eq!(l.find("a", "").unwrap().netns, 5);
        assert_eq!(l.len(), 1);
        let l = ParsedListing::parse(BODIES[2].as_bytes().to_vec()).unwrap();
        let e = l.find("a", "").unwrap_err();
        assert!(
            matches!(e, DiscoveryError::BadJson(ref w) if w.starts_with("containers[1]")),
            "{e}"
        );
    }
}
