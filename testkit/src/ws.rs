//! A blocking websocket client (tungstenite over a std `TcpStream`) that
//! collects what a capture sends: binary message bytes in order, any text
//! messages, the close frame, and whether TCP reached EOF. Every read is
//! bounded by a socket timeout plus an overall deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::{HeaderName, HeaderValue};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

use super::pcapgen::StreamCheck;
use super::pcapng::Pcapng;

/// Socket read timeout: the granularity at which deadlines are checked.
const POLL: Duration = Duration::from_millis(100);
/// How long a handshake may take. Longer than the discovery timeouts the
/// tests use, in case the service answers the upgrade only after resolving.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Default)]
pub struct Capture {
    /// Concatenated payloads of all binary messages, in order.
    pub bytes: Vec<u8>,
    pub binary_messages: usize,
    pub text_messages: usize,
    /// Payloads of pong frames received.
    pub pongs: Vec<Vec<u8>>,
    /// Code and reason of the close frame the server sent (1005 if empty).
    pub close: Option<(u16, String)>,
    /// A read error other than a timeout (protocol error, reset, ...).
    pub error: Option<String>,
}

impl Capture {
    /// The complete blocks received so far; panics if they are not pcapng.
    pub fn pcapng(&self) -> Pcapng {
        match Pcapng::parse(&self.bytes) {
            Ok(p) => p,
            Err(e) => panic!("stream is not valid pcapng: {e}"),
        }
    }
}

/// The client's socket, retrying reads and writes that fail with EINTR. A
/// socket read with a timeout (SO_RCVTIMEO) fails with EINTR on any
/// interruption, even without a signal handler (the process being stopped
/// and continued, say), and tungstenite abandons a handshake on any error
/// but WouldBlock: without this, such a hiccup fails a test.
pub struct Stream(pub TcpStream);

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[derive(Debug)]
pub enum ConnectError {
    /// The server answered the upgrade with a plain HTTP response.
    Http(u16, String),
    Other(String),
}

pub struct Client {
    pub ws: WebSocket<Stream>,
    pub capture: Capture,
}

/// Opens `ws://127.0.0.1:PORT/capture?QUERY` with extra request headers.
pub fn connect(port: u16, query: &str, headers: &[(&str, &str)]) -> Result<Client, ConnectError> {
    connect_path(port, &format!("/capture?{query}"), headers)
}

pub fn connect_path(
    port: u16,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> Result<Client, ConnectError> {
    let other = |e: &dyn std::fmt::Display| ConnectError::Other(e.to_string());
    let mut req = format!("ws://127.0.0.1:{port}{path_and_query}")
        .into_client_request()
        .map_err(|e| other(&e))?;
    for (k, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).map_err(|e| other(&e))?,
            HeaderValue::from_str(v).map_err(|e| other(&e))?,
        );
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| other(&e))?;
    stream.set_read_timeout(Some(POLL)).map_err(|e| other(&e))?;
    stream.set_nodelay(true).map_err(|e| other(&e))?;
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut attempt = tungstenite::client::client(req, Stream(stream));
    loop {
        match attempt {
            Ok((ws, _response)) => {
                return Ok(Client {
                    ws,
                    capture: Capture::default(),
                })
            }
            Err(HandshakeError::Interrupted(mid)) => {
                if Instant::now() >= deadline {
                    return Err(ConnectError::Other("handshake timed out".into()));
                }
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                return Err(ConnectError::Http(resp.status().as_u16(), body));
            }
            Err(HandshakeError::Failure(e)) => return Err(other(&e)),
        }
    }
}

/// Connects and panics with the reason if the upgrade is refused.
pub fn must_connect(port: u16, query: &str, headers: &[(&str, &str)]) -> Client {
    match connect(port, query, headers) {
        Ok(c) => c,
        Err(e) => panic!("websocket upgrade for {query:?} {headers:?} failed: {e:?}"),
    }
}

fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io)
        if matches!(io.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
}

impl Client {
    /// Reads messages until `pred` holds (true), or the server closes, an
    /// error occurs, or `timeout` passes (false).
    pub fn read_until(&mut self, pred: impl Fn(&Capture) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.capture) {
                return true;
            }
            if self.capture.close.is_some() || self.capture.error.is_some() {
                return false;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.read_one();
        }
    }

    /// Reads until the server closes (or errors) or `timeout` passes.
    pub fn read_to_close(&mut self, timeout: Duration) -> Option<(u16, String)> {
        self.read_until(|_| false, timeout);
        self.capture.close.clone()
    }

    /// Waits (bounded) for the first Interface Description Block: the
    /// capture program has opened its interfaces and is capturing. Panics
    /// with what happened instead.
    pub fn wait_capturing(&mut self, timeout: Duration) {
        let ok = self.read_until(
            |c| Pcapng::parse(&c.bytes).is_ok_and(|p| !p.interfaces().is_empty()),
            timeout,
        );
        assert!(
            ok,
            "capture did not start within {timeout:?}: close={:?} error={:?} bytes={}",
            self.capture.close,
            self.capture.error,
            self.capture.bytes.len()
        );
    }

    fn read_one(&mut self) {
        match self.ws.read() {
            Ok(Message::Binary(b)) => {
                self.capture.bytes.extend_from_slice(&b);
                self.capture.binary_messages += 1;
            }
            Ok(Message::Text(_)) => self.capture.text_messages += 1,
            Ok(Message::Pong(p)) => self.capture.pongs.push(p.to_vec()),
            Ok(Message::Close(frame)) => {
                self.capture.close = Some(match frame {
                    Some(f) => (u16::from(f.code), f.reason.to_string()),
                    None => (1005, String::new()),
                });
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => self.capture.error = Some(e.to_string()),
        }
    }

    /// Sends a close frame (1000) and waits for the server's close answer;
    /// returns it. Binary messages still in flight are collected.
    pub fn close(&mut self, timeout: Duration) -> Option<(u16, String)> {
        let _ = self.ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "test done".into(),
        }));
        let deadline = Instant::now() + timeout;
        while self.capture.close.is_none() && Instant::now() < deadline {
            match self.ws.read() {
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) if is_timeout(&e) => {}
                Err(e) => {
                    self.capture.error = Some(e.to_string());
                    break;
                }
                Ok(Message::Binary(b)) => {
                    self.capture.bytes.extend_from_slice(&b);
                    self.capture.binary_messages += 1;
                }
                Ok(Message::Close(frame)) => {
                    self.capture.close = Some(match frame {
                        Some(f) => (u16::from(f.code), f.reason.to_string()),
                        None => (1005, String::new()),
                    });
                }
                Ok(_) => {}
            }
        }
        self.capture.close.clone()
    }

    /// After a close exchange: sends our close answer if one is owed, then
    /// waits (bounded) until the server closes the TCP connection.
    pub fn wait_tcp_closed(&mut self, timeout: Duration) -> bool {
        let _ = self.ws.flush();
        let stream = self.ws.get_mut();
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }

    /// Breaks the TCP connection without a close frame.
    pub fn drop_tcp(self) {
        let _ = self.ws.get_ref().0.shutdown(std::net::Shutdown::Both);
    }
}

/// Reads a capture of the synthetic program into `check` until the
/// server's close frame, or until `timeout` passes (a read timeout on the
/// socket only makes it look again); after each binary message `each` gets
/// the count so far. Returns the close frame's code and reason (1005 if it
/// had none) or `None` without one; the error that broke the stream.
pub fn read_checked<S: Read + Write>(
    ws: &mut WebSocket<S>,
    check: &mut StreamCheck,
    timeout: Duration,
    mut each: impl FnMut(u64),
) -> Result<Option<(u16, String)>, tungstenite::Error> {
    let deadline = Instant::now() + timeout;
    let mut messages = 0;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Binary(b)) => {
                check.feed(&b, 0);
                messages += 1;
                each(messages);
            }
            Ok(Message::Close(f)) => {
                return Ok(Some(f.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                })))
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
