//! Plain HTTP/1.1 over a raw TCP socket: send exact bytes (valid or not),
//! read the response head and body, and see whether the server closed; hold
//! connections that send nothing, read whatever arrives until EOF, and ask
//! `/version` on a fresh connection.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The server closed the connection (EOF or reset) after the response.
    pub closed: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parsed header lines as (name, value) text, in order.
pub fn header_pairs(headers: &[httparse::Header]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// A parsed response head: status, headers, its length in bytes, and the
/// body length it announces.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    len: usize,
    content_length: Option<usize>,
}

/// Sends `raw` to 127.0.0.1:`port` and reads one response. With
/// `wait_close`, keeps reading (up to `timeout`) until the server closes.
/// Panics if no complete response head arrives within `timeout`.
pub fn send_raw(port: u16, raw: &[u8], wait_close: bool, timeout: Duration) -> Response {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    s.write_all(raw).expect("send request");
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut closed = false;
    let mut parsed: Option<Head> = None;
    loop {
        if parsed.is_none() {
            let mut hdrs = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut hdrs);
            if let Ok(httparse::Status::Complete(n)) = resp.parse(&buf) {
                let headers = header_pairs(resp.headers);
                let len = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse().ok());
                parsed = Some(Head {
                    status: resp.code.unwrap_or(0),
                    headers,
                    len: n,
                    content_length: len,
                });
            }
        }
        if let Some(Head {
            len: head,
            content_length: Some(len),
            ..
        }) = &parsed
        {
            if buf.len() >= head + len && !wait_close {
                break;
            }
        }
        if closed || Instant::now() >= deadline {
            break;
        }
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk) {
            Ok(0) => closed = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // EINTR: a timed socket read reports any interruption.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => closed = true,
        }
    }
    let Some(Head {
        status,
        headers,
        len: head,
        content_length: len,
    }) = parsed
    else {
        panic!(
            "no HTTP response head within {timeout:?}; got {:?}",
            String::from_utf8_lossy(&buf)
        );
    };
    let end = len.map_or(buf.len(), |l| (head + l).min(buf.len()));
    Response {
        status,
        headers,
        body: buf[head..end].to_vec(),
        closed,
    }
}

/// `GET path` with a Host header, reading one response.
pub fn get(port: u16, path: &str) -> Response {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    send_raw(port, req.as_bytes(), false, Duration::from_secs(5))
}

// ---- connections that send little or nothing ----------------------------

/// A TCP connection to the service that sends nothing.
pub fn idle_conn(port: u16) -> TcpStream {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    s
}

/// What arrived on a connection until EOF (or reset) or `timeout`.
#[derive(Debug)]
pub struct Received {
    pub bytes: Vec<u8>,
    /// The server closed (EOF or reset) within the timeout.
    pub closed: bool,
}

impl Received {
    /// The status code of an HTTP response at the start, if any.
    pub fn status(&self) -> Option<u16> {
        let mut hdrs = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut hdrs);
        match resp.parse(&self.bytes) {
            Ok(httparse::Status::Complete(_)) => resp.code,
            _ => None,
        }
    }

    /// The body of an HTTP response at the start (everything after the head).
    pub fn body(&self) -> String {
        let at = self
            .bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(self.bytes.len(), |i| i + 4);
        String::from_utf8_lossy(&self.bytes[at..]).into_owned()
    }
}

/// Reads whatever the server sends on `s` until it closes or `timeout`.
pub fn read_to_eof(s: &mut TcpStream, timeout: Duration) -> Received {
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => {
                return Received {
                    bytes,
                    closed: true,
                }
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                return Received {
                    bytes,
                    closed: true,
                }
            }
        }
    }
    Received {
        bytes,
        closed: false,
    }
}

/// True if nothing (no byte, no EOF) arrives on `s` within `wait`: the
/// service holds the connection open and silent.
pub fn is_silent(s: &mut TcpStream, wait: Duration) -> bool {
    let r = read_to_eof(s, wait);
    r.bytes.is_empty() && !r.closed
}

/// `GET /version` with `Connection: close`: the service, not the client,
/// ends the connection, so it is gone from the service before this returns.
pub fn version_status(port: u16) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.write_all(b"GET /version HTTP/1.1\r\nHost: pfx\r\nConnection: close\r\n\r\n")
        .ok()?;
    let r = read_to_eof(&mut s, Duration::from_secs(5));
    if r.closed {
        r.status()
    } else {
        None
    }
}
