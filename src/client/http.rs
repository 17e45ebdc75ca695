//! A small blocking HTTP/1.1 GET, for the discovery service and `/version`.
//!
//! The client is a separate short-lived process, so plain blocking sockets
//! are right here; this module is never used by the service's reactor. Every
//! wait is bounded: connect, and the whole exchange, have deadlines, and a
//! stop request (Ctrl-C) ends the wait within one tick. Responses are decoded
//! by the service's own sans-IO parser, [`crate::proto::discovery::ResponseParser`]
//! (over the HTTP/1.1 framer the service shares, [`crate::proto::http1`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::tls::Stream;
use super::url::Url;
use crate::proto::discovery::{DiscoveryError, Response, ResponseParser, MAX_DISCOVERY_BODY};

/// How long a blocking read or write may sleep before the caller looks at its
/// stop flag and deadlines again: short enough that Ctrl-C feels immediate.
pub const TICK: Duration = Duration::from_millis(200);
/// Connecting to one address of the service may take this long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The same bound the service puts on a discovery listing.
const MAX_RESPONSE: usize = MAX_DISCOVERY_BODY;

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

/// Connects to `url` (default port `default_port`): TLS when its scheme
/// says so, verified as its access settings say.
pub fn open(url: &Url, default_port: u16) -> Result<Stream, String> {
    let tcp = connect(&url.host, url.port.unwrap_or(default_port))?;
    if url.is_tls() {
        Stream::tls(tcp, &url.host, &url.access)
    } else {
        Ok(Stream::Plain(tcp))
    }
}

/// The first non-blank line of a body, shortened, for error messages.
pub fn first_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(200).collect()
}

/// GETs `url` within `timeout`. `Err` is a sentence for the user; `Ok(None)`
/// means a stop was requested.
pub fn get(url: &Url, timeout: Duration, stop: &AtomicBool) -> Result<Option<Response>, String> {
    let deadline = Instant::now() + timeout;
    let port = url.port.unwrap_or(80);
    let mut stream = open(url, port)?;
    let auth = match url.access.authorization()? {
        Some(a) if a.contains(['\r', '\n']) => return Err("the token holds a line break".into()),
        Some(a) => format!("Authorization: {a}\r\n"),
        None => String::new(),
    };
    let request = format!(
        "GET {}{} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: packetflix-capture/{}\r\n{auth}Connection: close\r\n\r\n",
        if url.path.is_empty() { "/" } else { &url.path },
        query_suffix(url),
        url.authority(port),
        env!("CARGO_PKG_VERSION"),
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending the request failed: {e}"))?;
    let mut parser = ResponseParser::new(MAX_RESPONSE);
    let mut buf = [0u8; 16 * 1024];
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Err(format!("no complete answer within {}s", timeout.as_secs()));
        }
        let outcome = match stream.read(&mut buf) {
            Ok(0) => parser.eof().map(Some),
            Ok(n) => parser.feed(&buf[..n]),
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
        match outcome {
            Ok(Some(response)) => return Ok(Some(response)),
            Ok(None) => {}
            Err(DiscoveryError::BadResponse(why)) => {
                return Err(format!("not a usable HTTP answer: {why}"))
            }
            Err(DiscoveryError::TooLarge) => {
                return Err(format!("answer larger than {MAX_RESPONSE} bytes"))
            }
            Err(e) => return Err(e.to_string()),
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
