//! A small blocking HTTP/1.1 GET, for the discovery service and `/version`.
//!
//! The client is a separate short-lived process, so plain blocking sockets
//! are right here; this module is never used by the service's reactor. Every
//! wait is bounded: connect, and the whole exchange, have deadlines, and a
//! stop request (Ctrl-C) ends the wait within one tick. Response decoding
//! ([`decode_response`]) does no I/O, so it is tested with bytes.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::url::Url;

/// How long a blocking read or write may sleep before the caller looks at its
/// stop flag and deadlines again: short enough that Ctrl-C feels immediate.
pub const TICK: Duration = Duration::from_millis(200);
/// Connecting to one address of the service may take this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A discovery listing of thousands of containers is a few MiB at most.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;
/// Headers we accept in a response; GhostWire sends a handful.
const MAX_HEADERS: usize = 64;

/// Connects to `host:port`, trying each resolved address in turn, with
/// [`TICK`] as read and write timeout.
pub fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let several = addrs.len() > 1;
    let mut last = format!("cannot resolve {host}: no addresses");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream
                    .set_read_timeout(Some(TICK))
                    .map_err(|e| e.to_string())?;
                stream
                    .set_write_timeout(Some(TICK))
                    .map_err(|e| e.to_string())?;
                // Close frames and pongs are tiny; do not let Nagle delay them.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) if several => last = format!("{addr}: {e}"),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub body: Vec<u8>,
}

impl Response {
    /// The body's first line, for error messages.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("");
        line.chars().take(200).collect()
    }
}

/// GETs `url` within `timeout`. `Err` is a sentence for the user; `Ok(None)`
/// means a stop was requested.
pub fn get(url: &Url, timeout: Duration, stop: &AtomicBool) -> Result<Option<Response>, String> {
    let deadline = Instant::now() + timeout;
    let port = url.port.unwrap_or(80);
    let mut stream = connect(&url.host, port)?;
    let request = format!(
        "GET {}{} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: packetflix-capture/{}\r\nConnection: close\r\n\r\n",
        if url.path.is_empty() { "/" } else { &url.path },
        query_suffix(url),
        url.authority(port),
        env!("CARGO_PKG_VERSION"),
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending the request failed: {e}"))?;
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Err(format!("no complete answer within {}s", timeout.as_secs()));
        }
        let eof = match stream.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => {
                received.extend_from_slice(&buf[..n]);
                false
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(format!("reading the answer failed: {e}")),
        };
        if received.len() > MAX_RESPONSE {
            return Err(format!("answer larger than {MAX_RESPONSE} bytes"));
        }
        if let Some(response) = decode_response(&received, eof)? {
            return Ok(Some(response));
        }
        if eof {
            return Err("the connection closed before the answer was complete".into());
        }
    }
}

fn query_suffix(url: &Url) -> String {
    if url.query.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = url
        .query
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                super::url::percent_encode(k),
                super::url::percent_encode(v)
            )
        })
        .collect();
    format!("?{}", pairs.join("&"))
}

/// Decodes a response once it is complete: `Ok(None)` while more bytes are
/// needed. Handles `Content-Length`, chunked bodies, and bodies ended by the
/// connection closing (`eof`).
pub fn decode_response(bytes: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Response::new(&mut headers);
    let head_len = match head.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("not an HTTP answer ({e})")),
    };
    let status = head.code.unwrap_or(0);
    let reason = head.reason.unwrap_or("").to_string();
    let header = |name: &str| {
        head.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let rest = &bytes[head_len..];
    let body = if header("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
        match dechunk(rest)? {
            Some(body) => body,
            None if eof => return Err("the connection closed inside a chunked answer".into()),
            None => return Ok(None),
        }
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        if rest.len() < len {
            return Ok(None);
        }
        rest[..len].to_vec()
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response {
        status,
        reason,
        body,
    }))
}

/// The body of a complete chunked encoding, or `None` if it is incomplete.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&rest[..eol]);
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        if size == 0 {
            return Ok(Some(body));
        }
        let data = eol + 2;
        if rest.len() < data + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[data..data + size]);
        rest = &rest[data + size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_body_waits_until_complete() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel";
        assert_eq!(decode_response(r, false), Ok(None));
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        let resp = decode_response(r, false).unwrap().unwrap();
        assert_eq!((resp.status, resp.body.as_slice()), (200, &b"hello"[..]));
    }

    #[test]
    fn chunked_body_is_reassembled_with_extensions_ignored() {
        let r =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n{\"a\"\r\n3\r\n:1}\r\n";
        assert_eq!(decode_response(r, false), Ok(None));
        let mut full = r.to_vec();
        full.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(
            decode_response(&full, false).unwrap().unwrap().body,
            b"{\"a\":1}"
        );
        assert!(
            decode_response(r, true).is_err(),
            "eof inside chunks is an error"
        );
    }

    #[test]
    fn body_without_length_ends_with_the_connection() {
        let r = b"HTTP/1.0 502 Bad Gateway\r\n\r\nupstream down\n";
        assert_eq!(decode_response(r, false), Ok(None));
        let resp = decode_response(r, true).unwrap().unwrap();
        assert_eq!(
            (resp.status, resp.reason.as_str(), resp.snippet()),
            (502, "Bad Gateway", "upstream down".into())
        );
    }

    #[test]
    fn garbage_is_not_an_http_answer() {
        assert!(decode_response(b"SSH-2.0-OpenSSH\r\n", true).is_err());
        assert!(decode_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", true).is_err());
    }
}
