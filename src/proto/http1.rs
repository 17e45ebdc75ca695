//! HTTP/1.1 response framing, shared by everything here that reads HTTP from
//! a peer: the discovery client ([`crate::proto::discovery::ResponseParser`], which
//! also serves the project's own client), and the discovery proxy
//! ([`crate::proto::proxy`]), which forwards responses and request bodies unchanged.
//!
//! Two parts, no I/O at all:
//! - [`HeadParser`] finds and parses a response head (with `httparse`) and
//!   decides how its body is framed ([`Framing`]), by RFC 9112 section 6.3:
//!   101 is a tunnel, other 1xx are interim, 204, 304 and answers to HEAD
//!   have no body, `Transfer-Encoding` overrides `Content-Length`, and bad or
//!   conflicting `Content-Length` values are refused.
//! - [`BodyFramer`], fed a body's bytes split anywhere, says how many of them
//!   belong to the body, hands the payload among them to the caller, and
//!   says when the body is over. Chunk-size lines are read with
//!   `httparse::parse_chunk_size` (extensions allowed, the line bounded);
//!   trailers are skipped, bounded too. A decoding user collects the payload
//!   within a limit; a forwarding user passes the bytes on and only needs the
//!   end.
//!
//! Where a decoder and a forwarder must differ, [`Role`] says which one asks;
//! everything else is the same for both. Error texts are phrased to follow
//! "<peer> sent an invalid HTTP response: ".

use std::fmt;

/// Largest response head (status line, header fields and the blank line).
/// 16 KiB is what common HTTP servers accept for a head.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Largest trailer section of a chunked body, its final blank line included.
pub const MAX_TRAILER: usize = 16 * 1024;

/// Longest chunk-size line, its extensions and CRLF included. The size itself
/// is at most 16 hex digits; the rest is room for extensions nobody we talk
/// to sends but which HTTP/1.1 allows.
pub const MAX_CHUNK_SIZE_LINE: usize = 4 * 1024;

/// Who reads the response, where that changes what is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Decodes the body itself (the discovery client). The only transfer
    /// coding is a lone `chunked`; anything else is refused, as it could not
    /// be decoded. `Content-Length` may be a list of one repeated value
    /// (RFC 9110 8.6). Framing headers of a response without a body are not
    /// looked at.
    Decode,
    /// Passes the bytes on unchanged (the discovery proxy). A body whose last
    /// transfer coding is `chunked` is chunked, any other transfer coding
    /// lasts until the connection closes (RFC 9112 6.3, rule 4), so the next
    /// hop decodes what it asked for; a `Transfer-Encoding` field that lists
    /// no coding at all counts as one that does not end in `chunked` (where
    /// [`Role::Decode`] ignores it), so `Content-Length` never frames a
    /// response that has the field. `Content-Length` must be one number per
    /// field, since the field is passed on and a list may be read otherwise
    /// there; it is checked on every response, bodiless ones too.
    Forward,
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// An interim (1xx other than 101) response: no body, the final response
    /// follows.
    Interim,
    /// No body (204, 304, the answer to HEAD).
    None,
    Length(u64),
    Chunked,
    /// Ends when the connection does.
    UntilClose,
    /// 101 Switching Protocols: from here on the connection carries another
    /// protocol.
    Tunnel,
}

/// What is wrong with a response; `Display` says it for a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    HeadTooLong,
    TooManyHeaders(usize),
    MalformedHead(httparse::Error),
    /// The head's blank line was found but `httparse` wants more.
    HeadIncomplete,
    NoStatus,
    BadContentLength,
    ConflictingContentLength,
    /// [`Role::Decode`]: transfer codings other than a lone `chunked`.
    UnsupportedCoding(String),
    BadChunkSize,
    ChunkSizeLineTooLong,
    /// A chunk's data is not followed by CRLF.
    ChunkDataEnd,
    TrailerTooLong,
    /// A CR in the trailer section that is not followed by LF.
    TrailerBareCr,
    /// The payload is larger than the limit the framer was given.
    TooLarge,
    /// The connection closed with this many bytes of a `Content-Length` body
    /// still to come.
    CutShort(u64),
    /// The connection closed inside a chunked body.
    CutChunked,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::HeadTooLong => write!(
                f,
                "the response head is longer than {MAX_RESPONSE_HEAD} bytes"
            ),
            Error::TooManyHeaders(n) => write!(f, "the response has more than {n} header fields"),
            Error::MalformedHead(e) => write!(f, "malformed response head ({e})"),
            Error::HeadIncomplete => f.write_str("the response head is incomplete"),
            Error::NoStatus => f.write_str("the response has no status code"),
            Error::BadContentLength => f.write_str("the Content-Length header is not a number"),
            Error::ConflictingContentLength => {
                f.write_str("the response has conflicting Content-Length values")
            }
            Error::UnsupportedCoding(codings) => {
                write!(f, "unsupported Transfer-Encoding \"{codings}\"")
            }
            Error::BadChunkSize => f.write_str("invalid chunk size line"),
            Error::ChunkSizeLineTooLong => write!(
                f,
                "a chunk size line is longer than {MAX_CHUNK_SIZE_LINE} bytes"
            ),
            Error::ChunkDataEnd => f.write_str("a chunk's data is not followed by a line end"),
            Error::TrailerTooLong => write!(
                f,
                "the chunked body's trailer is longer than {MAX_TRAILER} bytes"
            ),
            Error::TrailerBareCr => f.write_str("a trailer line holds a CR without LF"),
            Error::TooLarge => f.write_str("the body is larger than the limit"),
            Error::CutShort(missing) => write!(
                f,
                "it closed the connection with {missing} bytes of the body still missing"
            ),
            Error::CutChunked => {
                f.write_str("it closed the connection before the end of the chunked body")
            }
        }
    }
}

impl std::error::Error for Error {}

/// One parsed response head; names, values and reason borrow the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head<'b> {
    pub status: u16,
    pub reason: &'b str,
    /// Header fields in the order they came.
    pub headers: Vec<(&'b str, &'b [u8])>,
    /// Bytes of the buffer the head took, its blank line included.
    pub len: usize,
    pub framing: Framing,
}

/// Finds and parses response heads at the start of a growing buffer.
#[derive(Clone, Debug)]
pub struct HeadParser {
    role: Role,
    max_headers: usize,
    /// How much of the buffer earlier calls already searched for the head's
    /// end, so a slow sender does not make the search quadratic.
    scanned: usize,
}

impl HeadParser {
    /// A parser for `role` that refuses heads with more than `max_headers`
    /// header fields.
    pub fn new(role: Role, max_headers: usize) -> HeadParser {
        HeadParser {
            role,
            max_headers,
            scanned: 0,
        }
    }

    /// The head at the start of `buf`, or `None` while it is incomplete. Until
    /// a head is found, each call must be given the bytes of the call before
    /// and any that came since; after one, the next call starts at the next
    /// head. `head_request`: the request was HEAD (no body whatever the
    /// headers say).
    pub fn parse<'b>(
        &mut self,
        buf: &'b [u8],
        head_request: bool,
    ) -> Result<Option<Head<'b>>, Error> {
        let Some(end) = find_head_end(buf, self.scanned) else {
            if buf.len() > MAX_RESPONSE_HEAD {
                return Err(Error::HeadTooLong);
            }
            self.scanned = buf.len();
            return Ok(None);
        };
        self.scanned = 0;
        if end > MAX_RESPONSE_HEAD {
            return Err(Error::HeadTooLong);
        }
        let mut fields = vec![httparse::EMPTY_HEADER; self.max_headers];
        let mut response = httparse::Response::new(&mut fields);
        match response.parse(&buf[..end]) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(Error::HeadIncomplete),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::TooManyHeaders(self.max_headers))
            }
            Err(e) => return Err(Error::MalformedHead(e)),
        }
        let status = response.code.ok_or(Error::NoStatus)?;
        let reason = response.reason.unwrap_or("");
        let headers: Vec<(&str, &[u8])> =
            response.headers.iter().map(|h| (h.name, h.value)).collect();
        let framing = framing(status, &headers, head_request, self.role)?;
        Ok(Some(Head {
            status,
            reason,
            headers,
            len: end,
            framing,
        }))
    }
}

/// The end (exclusive) of the first head in `buf`: the blank line after the
/// header fields, ending in CRLF or, leniently, LF (RFC 9112 2.2). `from` is
/// how much of `buf` earlier calls already searched.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    // A terminator ("\n\n" or "\n\r\n") may straddle the old end.
    let mut at = from.saturating_sub(2);
    while let Some(offset) = buf.get(at..)?.iter().position(|&b| b == b'\n') {
        let newline = at + offset;
        match buf.get(newline + 1..) {
            Some([b'\n', ..]) => return Some(newline + 2),
            Some([b'\r', b'\n', ..]) => return Some(newline + 3),
            _ => at = newline + 1,
        }
    }
    None
}

/// The comma-separated items of a header field value, trimmed, empty ones
/// dropped (RFC 9110 5.6.1).
pub fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}

fn fields<'h, 'b>(
    headers: &'h [(&'b str, &'b [u8])],
    name: &'static str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|&(_, v)| v)
}

/// How the body after a head with `status` and `headers` is framed.
fn framing(
    status: u16,
    headers: &[(&str, &[u8])],
    head_request: bool,
    role: Role,
) -> Result<Framing, Error> {
    let bodiless = match status {
        101 => Some(Framing::Tunnel),
        100..=199 => Some(Framing::Interim),
        204 | 304 => Some(Framing::None),
        _ if head_request => Some(Framing::None),
        _ => None,
    };
    if let (Some(f), Role::Decode) = (bodiless, role) {
        return Ok(f);
    }
    let length = content_length(headers, role)?;
    if let Some(f) = bodiless {
        return Ok(f);
    }
    let mut codings = fields(headers, "transfer-encoding").peekable();
    if role == Role::Forward && codings.peek().is_some() {
        return Ok(match codings.flat_map(list_items).last() {
            Some(c) if c.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
    }
    // Transfer-Encoding overrides Content-Length (RFC 9112 6.3).
    match codings.flat_map(list_items).collect::<Vec<_>>().as_slice() {
        [] => Ok(length.map_or(Framing::UntilClose, Framing::Length)),
        [only] if only.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
        all => Err(Error::UnsupportedCoding(
            all.iter()
                .map(|c| String::from_utf8_lossy(c))
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// The one length all `Content-Length` values state, if any.
fn content_length(headers: &[(&str, &[u8])], role: Role) -> Result<Option<u64>, Error> {
    let mut length = None;
    for value in fields(headers, "content-length") {
        let mut whole = Some(value.trim_ascii());
        let mut list = list_items(value);
        let items = std::iter::from_fn(|| match role {
            Role::Decode => list.next(),
            Role::Forward => whole.take(),
        });
        for item in items {
            let n = std::str::from_utf8(item)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(Error::BadContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::ConflictingContentLength);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Finds where a message body ends in a byte stream split anywhere, without
/// holding the body: [`BodyFramer::feed`] says how many of the given bytes
/// belong to it and passes on the payload among them (chunk framing and
/// trailers removed). Memory: at most one chunk-size line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyFramer {
    state: State,
    /// Payload bytes the body may still bring.
    room: u64,
    /// A chunk-size line begun in an earlier feed.
    line: Vec<u8>,
}

/// Where a body stands (chunked: RFC 9112 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// This many bytes are still to come.
    Length(u64),
    /// Before or inside a chunk-size line.
    ChunkSize,
    /// Inside a chunk; this many bytes still to come.
    ChunkData(u64),
    /// After a chunk's data: its CR, then its LF.
    ChunkCr,
    ChunkLf,
    /// After the last chunk: trailer lines up to an empty one. `seen` bytes
    /// of them so far; `empty`: the current line has nothing yet; `cr`: the
    /// last byte was CR.
    Trailer {
        seen: usize,
        empty: bool,
        cr: bool,
    },
    UntilClose,
    Done,
}

impl BodyFramer {
    /// A framer for a body framed as `framing`, without a payload limit. A
    /// tunnel is read as a body that lasts until close.
    pub fn new(framing: Framing) -> BodyFramer {
        BodyFramer {
            state: match framing {
                Framing::Interim | Framing::None | Framing::Length(0) => State::Done,
                Framing::Length(n) => State::Length(n),
                Framing::Chunked => State::ChunkSize,
                Framing::UntilClose | Framing::Tunnel => State::UntilClose,
            },
            room: u64::MAX,
            line: Vec::new(),
        }
    }

    /// The same, refusing with [`Error::TooLarge`] a payload over `max`
    /// bytes: a declared length at once, a chunk when its size line comes,
    /// bytes until close before they are taken.
    pub fn with_limit(framing: Framing, max: u64) -> Result<BodyFramer, Error> {
        if matches!(framing, Framing::Length(n) if n > max) {
            return Err(Error::TooLarge);
        }
        Ok(BodyFramer {
            room: max,
            ..BodyFramer::new(framing)
        })
    }

    /// The body is complete; what follows is not part of it.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the body lasts until the connection closes.
    pub fn until_close(&self) -> bool {
        self.state == State::UntilClose
    }

    /// Takes the next bytes: returns how many of `data` belong to the body
    /// (fewer than all only once it is done), and passes the payload among
    /// them to `payload`, in order. Any split of the same bytes gives the
    /// same total, the same payload and the same error.
    pub fn feed(&mut self, data: &[u8], mut payload: impl FnMut(&[u8])) -> Result<usize, Error> {
        let mut at = 0;
        while at < data.len() {
            let rest = &data[at..];
            match self.state {
                State::Done => break,
                State::UntilClose => {
                    let n = rest.len() as u64;
                    if n > self.room {
                        return Err(Error::TooLarge);
                    }
                    self.room -= n;
                    payload(rest);
                    at = data.len();
                }
                State::Length(left) | State::ChunkData(left) => {
                    let n = take_len(left, rest.len());
                    payload(&rest[..n]);
                    at += n;
                    let left = left - n as u64;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkCr,
                        _ => State::ChunkData(left),
                    };
                }
                State::ChunkCr | State::ChunkLf => {
                    self.state = match (self.state, rest[0]) {
                        (State::ChunkCr, b'\r') => State::ChunkLf,
                        (State::ChunkLf, b'\n') => State::ChunkSize,
                        _ => return Err(Error::ChunkDataEnd),
                    };
                    at += 1;
                }
                State::ChunkSize => {
                    let (used, size) = self.size_line(rest)?;
                    at += used;
                    match size {
                        None => {}
                        Some(0) => {
                            self.state = State::Trailer {
                                seen: 0,
                                empty: true,
                                cr: false,
                            }
                        }
                        Some(n) if n > self.room => return Err(Error::TooLarge),
                        Some(n) => {
                            self.room -= n;
                            self.state = State::ChunkData(n);
                        }
                    }
                }
                State::Trailer { seen, empty, cr } => {
                    let seen = seen + 1;
                    if seen > MAX_TRAILER {
                        return Err(Error::TrailerTooLong);
                    }
                    self.state = match rest[0] {
                        b'\n' if empty => State::Done,
                        b'\n' => State::Trailer {
                            seen,
                            empty: true,
                            cr: false,
                        },
                        _ if cr => return Err(Error::TrailerBareCr),
                        b'\r' => State::Trailer {
                            seen,
                            empty,
                            cr: true,
                        },
                        _ => State::Trailer {
                            seen,
                            empty: false,
                            cr: false,
                        },
                    };
                    at += 1;
                }
            }
        }
        Ok(at)
    }

    /// [`Self::feed`] for a user that passes the bytes on and only needs to
    /// know where the body ends.
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, Error> {
        self.feed(data, |_| {})
    }

    /// The connection ended here: `Ok` if that completes the body (it was
    /// done, or lasts until close), else how it was cut short.
    pub fn at_close(&self) -> Result<(), Error> {
        match self.state {
            State::Done | State::UntilClose => Ok(()),
            State::Length(missing) => Err(Error::CutShort(missing)),
            _ => Err(Error::CutChunked),
        }
    }

    /// Reads a chunk-size line from `rest`, after what earlier feeds left in
    /// `line`: how many bytes of `rest` it took, and the size once the line
    /// is complete.
    fn size_line(&mut self, rest: &[u8]) -> Result<(usize, Option<u64>), Error> {
        let before = self.line.len();
        let take = rest.len().min(MAX_CHUNK_SIZE_LINE - before);
        let found = if before == 0 {
            parse_size_line(&rest[..take])?
        } else {
            self.line.extend_from_slice(&rest[..take]);
            parse_size_line(&self.line)?
        };
        match found {
            Some((len, size)) => {
                self.line.clear();
                Ok((len - before, Some(size)))
            }
            None => {
                if before == 0 {
                    self.line.extend_from_slice(&rest[..take]);
                }
                Ok((take, None))
            }
        }
    }
}

/// A complete chunk-size line at the start of `line` (at most
/// [`MAX_CHUNK_SIZE_LINE`] bytes of it): (bytes used, size). `None` while the
/// line is incomplete.
fn parse_size_line(line: &[u8]) -> Result<Option<(usize, u64)>, Error> {
    match line.first() {
        None => return Ok(None),
        // httparse reads a line without digits as size 0, which would end
        // the body early instead of reporting the damage.
        Some(b) if !b.is_ascii_hexdigit() => return Err(Error::BadChunkSize),
        Some(_) => {}
    }
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete(found)) => Ok(Some(found)),
        Ok(httparse::Status::Partial) if line.len() >= MAX_CHUNK_SIZE_LINE => {
            Err(Error::ChunkSizeLineTooLong)
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(Error::BadChunkSize),
    }
}

/// How many of `available` bytes belong to a body part with `remaining`
/// bytes to go.
fn take_len(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `parts` in order: (bytes taken in all, payload, done).
    fn run(framer: &mut BodyFramer, parts: &[&[u8]]) -> Result<(usize, Vec<u8>, bool), Error> {
        let mut used = 0;
        let mut payload = Vec::new();
        for part in parts {
            let was_done = framer.is_done();
            let n = framer.feed(part, |p| payload.extend_from_slice(p))?;
            assert!(n <= part.len());
            if was_done {
                assert_eq!(n, 0, "bytes taken after the end");
            }
            if n < part.len() {
                assert!(framer.is_done(), "bytes left over but the body goes on");
            }
            used += n;
        }
        Ok((used, payload, framer.is_done()))
    }

    /// The result of `data` in one piece, checked to be the same split in
    /// two anywhere and byte by byte.
    fn any_split(framing: Framing, max: u64, data: &[u8]) -> Result<(usize, Vec<u8>, bool), Error> {
        let fresh = || BodyFramer::with_limit(framing, max).unwrap();
        let whole = run(&mut fresh(), &[data]);
        // Every split of short inputs; of long ones, those near the ends.
        let n = data.len();
        let ats: Vec<usize> = if n <= 512 {
            (0..=n).collect()
        } else {
            (0..8)
                .chain(n / 2 - 4..n / 2 + 4)
                .chain(n - 8..=n)
                .collect()
        };
        for at in ats {
            let (a, b) = data.split_at(at);
            assert_eq!(run(&mut fresh(), &[a, b]), whole, "split at {at}");
        }
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(run(&mut fresh(), &bytes), whole, "byte by byte");
        whole
    }

    const CHUNKED: &[u8] =
        b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n";

    #[test]
    fn chunked_body_end_is_found_at_every_split() {
        let mut all = CHUNKED.to_vec();
        all.extend_from_slice(b"NEXT");
        assert_eq!(
            any_split(Framing::Chunked, u64::MAX, &all),
            Ok((CHUNKED.len(), b"Wikipedia in\r\n\r\nchunks.".to_vec(), true))
        );
    }

    #[test]
    fn chunked_body_split_in_three_anywhere_gives_the_same() {
        for i in 0..=CHUNKED.len() {
            for j in i..=CHUNKED.len() {
                let parts = [&CHUNKED[..i], &CHUNKED[i..j], &CHUNKED[j..]];
                let mut f = BodyFramer::new(Framing::Chunked);
                let (used, payload, done) = run(&mut f, &parts).unwrap();
                assert_eq!(used, CHUNKED.len(), "{i} {j}");
                assert_eq!(payload, b"Wikipedia in\r\n\r\nchunks.", "{i} {j}");
                assert!(done);
            }
        }
    }

    #[test]
    fn length_body_takes_exactly_its_bytes() {
        let mut f = BodyFramer::new(Framing::Length(5));
        assert_eq!(f.scan(b"abc"), Ok(3));
        assert_eq!(f.scan(b"deNEXT"), Ok(2));
        assert!(f.is_done());
        assert_eq!(f.scan(b"more"), Ok(0));
        assert_eq!(
            any_split(Framing::Length(5), 5, b"abcdeNEXT"),
            Ok((5, b"abcde".to_vec(), true))
        );
    }

    #[test]
    fn until_close_takes_everything_and_ends_at_close() {
        let mut f = BodyFramer::new(Framing::UntilClose);
        assert_eq!(f.scan(b"abc"), Ok(3));
        assert!(!f.is_done() && f.until_close());
        assert_eq!(f.at_close(), Ok(()));
        assert_eq!(
            any_split(Framing::Tunnel, 9, b"a\r\n0\r\n\r\n"),
            Ok((8, b"a\r\n0\r\n\r\n".to_vec(), false))
        );
    }

    #[test]
    fn bodiless_framings_are_done_at_once() {
        for framing in [Framing::None, Framing::Interim, Framing::Length(0)] {
            let mut f = BodyFramer::new(framing);
            assert!(f.is_done(), "{framing:?}");
            assert_eq!(f.scan(b"HTTP/1.1 200 OK\r\n"), Ok(0));
        }
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for (bad, why) in [
            (&b"x\r\n"[..], Error::BadChunkSize),
            (b"\r\n", Error::BadChunkSize),
            (b";ext\r\n", Error::BadChunkSize),
            (b"3 4\r\n", Error::BadChunkSize),
            (b"4\nWiki", Error::BadChunkSize),
            (b"4\r\nWikiXX", Error::ChunkDataEnd),
            (b"4\r\nWiki\rX", Error::ChunkDataEnd),
            (b"ffffffffffffffffff\r\n", Error::BadChunkSize),
            (b"12345678901234567\r\n", Error::BadChunkSize),
        ] {
            assert_eq!(
                any_split(Framing::Chunked, u64::MAX, bad),
                Err(why),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sixteen_hex_digits_are_a_size() {
        let body = b"000000000000000a\r\n0123456789\r\n0\r\n\r\n";
        let mut f = BodyFramer::new(Framing::Chunked);
        assert_eq!(f.scan(body), Ok(body.len()));
        assert!(f.is_done());
    }

    #[test]
    fn chunk_extensions_are_allowed() {
        let body = b"4;name=value\r\nWiki\r\n5 ; q=\"a;b\"\r\npedia\r\n0;last\r\n\r\n";
        assert_eq!(
            any_split(Framing::Chunked, u64::MAX, body),
            Ok((body.len(), b"Wikipedia".to_vec(), true))
        );
    }

    #[test]
    fn chunk_size_line_is_bounded_in_any_chunking() {
        // A line of exactly the limit (CRLF included) is read.
        let mut fits = b"1;".to_vec();
        fits.resize(MAX_CHUNK_SIZE_LINE - 2, b'x');
        fits.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert_eq!(
            any_split(Framing::Chunked, u64::MAX, &fits),
            Ok((fits.len(), b"a".to_vec(), true))
        );
        // One byte more is refused, complete or not.
        let mut over = b"1;".to_vec();
        over.resize(MAX_CHUNK_SIZE_LINE - 1, b'x');
        over.extend_from_slice(b"\r\na\r\n0\r\n\r\n");
        assert_eq!(
            any_split(Framing::Chunked, u64::MAX, &over),
            Err(Error::ChunkSizeLineTooLong)
        );
        let mut endless = b"1".to_vec();
        endless.resize(3 * MAX_CHUNK_SIZE_LINE, b';');
        let mut f = BodyFramer::new(Framing::Chunked);
        assert_eq!(f.scan(&endless), Err(Error::ChunkSizeLineTooLong));
        // A partial line is held, not more.
        let mut f = BodyFramer::new(Framing::Chunked);
        let most = MAX_CHUNK_SIZE_LINE - 1;
        assert_eq!(f.scan(&endless[..most]), Ok(most));
        assert_eq!(f.scan(b";"), Err(Error::ChunkSizeLineTooLong));
    }

    #[test]
    fn trailers_are_skipped_and_bounded() {
        let body = b"1\r\na\r\n0\r\nX-A: 1\r\nX-B: 2\r\n\r\nNEXT";
        assert_eq!(
            any_split(Framing::Chunked, u64::MAX, body),
            Ok((body.len() - 4, b"a".to_vec(), true))
        );
        // Bare LF ends a line too (RFC 9112 2.2); a CR must come with LF.
        let lf = b"0\r\nX-A: 1\n\nNEXT";
        assert_eq!(
            any_split(Framing::Chunked, u64::MAX, lf),
            Ok((lf.len() - 4, vec![], true))
        );
        assert_eq!(
            any_split(Framing::Chunked, u64::MAX, b"0\r\nX-A: 1\rX\r\n\r\n"),
            Err(Error::TrailerBareCr)
        );
        assert_eq!(
            any_split(Framing::Chunked, u64::MAX, b"0\r\n\rX"),
            Err(Error::TrailerBareCr)
        );
        // The whole section, final CRLF included, fits in MAX_TRAILER.
        let section = |len: usize| {
            let mut t = b"0\r\nX-Pad: ".to_vec();
            t.resize(3 + len - 4, b'p');
            t.extend_from_slice(b"\r\n\r\n");
            t
        };
        let fits = section(MAX_TRAILER);
        assert_eq!(
            any_split(Framing::Chunked, u64::MAX, &fits),
            Ok((fits.len(), vec![], true))
        );
        assert_eq!(
            any_split(Framing::Chunked, u64::MAX, &section(MAX_TRAILER + 1)),
            Err(Error::TrailerTooLong)
        );
    }

    #[test]
    fn payload_limit_is_kept_in_any_chunking() {
        let body = b"5\r\nabcde\r\n4\r\nfghi\r\n0\r\n\r\n";
        assert_eq!(any_split(Framing::Chunked, 8, body), Err(Error::TooLarge));
        assert_eq!(
            any_split(Framing::Chunked, 9, body),
            Ok((body.len(), b"abcdefghi".to_vec(), true))
        );
        // A chunk is refused by its size, before its data.
        let mut f = BodyFramer::with_limit(Framing::Chunked, 8).unwrap();
        assert_eq!(f.scan(b"ffffffffffffffff\r\n"), Err(Error::TooLarge));
        assert_eq!(
            BodyFramer::with_limit(Framing::Length(9), 8),
            Err(Error::TooLarge)
        );
        assert!(BodyFramer::with_limit(Framing::Length(8), 8).is_ok());
        assert_eq!(
            any_split(Framing::UntilClose, 8, b"123456789"),
            Err(Error::TooLarge)
        );
        assert_eq!(
            any_split(Framing::UntilClose, 8, b"12345678"),
            Ok((8, b"12345678".to_vec(), false))
        );
    }

    #[test]
    fn a_cut_body_says_where() {
        let mut f = BodyFramer::new(Framing::Length(5));
        f.scan(b"ab").unwrap();
        assert_eq!(f.at_close(), Err(Error::CutShort(3)));
        let mut f = BodyFramer::new(Framing::Chunked);
        f.scan(b"2\r\nab\r\n0\r\n").unwrap();
        assert_eq!(f.at_close(), Err(Error::CutChunked));
        f.scan(b"\r\n").unwrap();
        assert_eq!(f.at_close(), Ok(()));
    }

    fn head(raw: &[u8], role: Role, head_request: bool) -> Result<Option<Head<'_>>, Error> {
        HeadParser::new(role, 64).parse(raw, head_request)
    }

    fn framing_of(raw: &str, role: Role) -> Result<Framing, Error> {
        head(raw.as_bytes(), role, false).map(|h| h.expect("complete head").framing)
    }

    #[test]
    fn transfer_encoding_wins_over_content_length() {
        for role in [Role::Decode, Role::Forward] {
            assert_eq!(
                framing_of(
                    "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: Chunked\r\n\r\n",
                    role
                ),
                Ok(Framing::Chunked),
                "{role:?}"
            );
            assert_eq!(
                framing_of("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", role),
                Ok(Framing::Length(7))
            );
            assert_eq!(
                framing_of("HTTP/1.1 200 OK\r\n\r\n", role),
                Ok(Framing::UntilClose)
            );
            for bad in ["+5", "five", "", "1 2"] {
                let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
                if bad.is_empty() && role == Role::Decode {
                    // An empty list states no length.
                    assert_eq!(framing_of(&raw, role), Ok(Framing::UntilClose));
                    continue;
                }
                assert_eq!(
                    framing_of(&raw, role),
                    Err(Error::BadContentLength),
                    "{bad}"
                );
            }
            assert_eq!(
                framing_of(
                    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                    role
                ),
                Err(Error::ConflictingContentLength)
            );
        }
    }

    #[test]
    fn the_roles_differ_where_documented() {
        let lists = "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(framing_of(lists, Role::Decode), Ok(Framing::Length(2)));
        assert_eq!(
            framing_of(lists, Role::Forward),
            Err(Error::BadContentLength)
        );
        let codings = [
            ("gzip, chunked", Framing::Chunked),
            ("gzip,, chunked ,", Framing::Chunked),
            ("gzip", Framing::UntilClose),
            ("chunked, gzip", Framing::UntilClose),
        ];
        for (te, forwarded) in codings {
            let raw = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert_eq!(framing_of(&raw, Role::Forward), Ok(forwarded), "{te}");
            let listed: Vec<&str> = te
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            assert_eq!(
                framing_of(&raw, Role::Decode),
                Err(Error::UnsupportedCoding(listed.join(", ")))
            );
        }
        let empty = "HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\nContent-Length: 2\r\n\r\n";
        assert_eq!(framing_of(empty, Role::Decode), Ok(Framing::Length(2)));
        assert_eq!(framing_of(empty, Role::Forward), Ok(Framing::UntilClose));
        // A bodiless response: its framing fields are passed on, so checked.
        let no_content = "HTTP/1.1 204 No Content\r\nContent-Length: x\r\n\r\n";
        assert_eq!(framing_of(no_content, Role::Decode), Ok(Framing::None));
        assert_eq!(
            framing_of(no_content, Role::Forward),
            Err(Error::BadContentLength)
        );
    }

    #[test]
    fn bodiless_statuses_and_head_requests() {
        for role in [Role::Decode, Role::Forward] {
            let f = |raw: &str, head_request| {
                head(raw.as_bytes(), role, head_request)
                    .unwrap()
                    .unwrap()
                    .framing
            };
            let ok = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
            assert_eq!(f(ok, true), Framing::None);
            assert_eq!(f("HTTP/1.1 204 X\r\n\r\n", false), Framing::None);
            assert_eq!(
                f("HTTP/1.1 304 X\r\nContent-Length: 9\r\n\r\n", false),
                Framing::None
            );
            assert_eq!(f("HTTP/1.1 100 Continue\r\n\r\n", true), Framing::Interim);
            assert_eq!(
                f("HTTP/1.1 103 Early Hints\r\n\r\n", false),
                Framing::Interim
            );
            let up = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
            assert_eq!(f(up, true), Framing::Tunnel);
        }
    }

    #[test]
    fn head_is_found_at_the_same_place_in_any_chunking() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\nX-A: b\nContent-Length: 2\n\nab";
        let whole = head(raw, Role::Decode, false).unwrap().unwrap();
        assert_eq!((whole.status, whole.len), (100, 25));
        for role in [Role::Decode, Role::Forward] {
            let mut p = HeadParser::new(role, 64);
            let mut found = Vec::new();
            let mut start = 0;
            for end in 1..=raw.len() {
                if let Some(h) = p.parse(&raw[start..end], false).unwrap() {
                    found.push((start + h.len, h.status, h.reason.to_owned(), h.framing));
                    start += h.len;
                }
            }
            assert_eq!(
                found,
                [
                    (25, 100, "Continue".into(), Framing::Interim),
                    (raw.len() - 2, 200, "OK".into(), Framing::Length(2))
                ]
            );
        }
    }

    #[test]
    fn head_limits() {
        // A head of exactly the limit, blank line included, is read.
        let sized = |len: usize| {
            let mut raw = b"HTTP/1.1 200 OK\r\nX-Filler: ".to_vec();
            raw.resize(len - 4, b'a');
            raw.extend_from_slice(b"\r\n\r\n");
            raw
        };
        let mut p = HeadParser::new(Role::Forward, 4);
        let fits = sized(MAX_RESPONSE_HEAD);
        assert_eq!(p.parse(&fits, false).unwrap().unwrap().len, fits.len());
        assert_eq!(
            p.parse(&sized(MAX_RESPONSE_HEAD + 1), false),
            Err(Error::HeadTooLong)
        );
        // An incomplete one, once it is longer than that.
        let partial = &fits[..fits.len() - 1];
        assert_eq!(p.parse(partial, false), Ok(None));
        let mut over = partial.to_vec();
        over.extend_from_slice(b"aa");
        assert_eq!(p.parse(&over, false), Err(Error::HeadTooLong));
        let many = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n";
        assert_eq!(
            HeadParser::new(Role::Decode, 4).parse(many.as_bytes(), false),
            Err(Error::TooManyHeaders(4))
        );
        assert!(matches!(
            HeadParser::new(Role::Decode, 4).parse(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", false),
            Err(Error::MalformedHead(_))
        ));
    }
}
