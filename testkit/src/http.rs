//! Plain HTTP/1.1 over a raw TCP socket: send exact bytes (valid or not),
//! read the response head and body, and see whether the server closed.

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
