//! A real HTTP/1.1 origin standing in for the discovery service behind the
//! discovery proxy: a std listener on 127.0.0.1, one thread per connection.
//! Each request is recorded as it arrived (method, target, headers, decoded
//! body) and answered as the test's handler says: a fixed body, chunks, a
//! close-delimited body, a large generated body streamed as fast as the peer
//! takes it, a delay before the head, a body cut off before its announced
//! length, or no answer at all. In websocket mode every connection is handed
//! to tungstenite's server side and echoes messages back.
//!
//! Every socket read and write is bounded by a short timeout after which the
//! stop flag is checked again, so the server never hangs a test and all its
//! threads end (and are joined) on drop. It only listens on loopback.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tungstenite::handshake::server::{ErrorResponse, Request as WsRequest, Response as WsResponse};
use tungstenite::handshake::HandshakeError;
use tungstenite::Message;

/// Granularity of the accept loop and of interruptible sleeps.
const TICK: Duration = Duration::from_millis(20);
/// Socket timeout: how often a blocked read or write looks at the stop flag.
const IO_TICK: Duration = Duration::from_millis(100);
/// A connection that makes no progress for this long is dropped; longer
/// than any test waits on purpose.
const IDLE_LIMIT: Duration = Duration::from_secs(20);
/// Request heads larger than this are not something the proxy forwards.
const MAX_HEAD: usize = 64 * 1024;
/// Generated bodies are written in pieces of this size, so the count of
/// bytes sent so far is accurate to one piece.
const PIECE: usize = 64 * 1024;
/// Socket buffer sizes the origin asks for. Loopback buffers otherwise grow
/// to many MiB (tcp_rmem's maximum is 32 MiB here) and would hide whether
/// the proxy holds a peer back; the kernel doubles the value asked for.
pub const SOCKET_BUFFER: usize = 32 * 1024;

/// One request as the origin received it.
#[derive(Clone, Debug)]
pub struct UpRequest {
    pub method: String,
    /// Path and query, as on the request line.
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The body, with chunked framing removed.
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl UpRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    /// Every value of header `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }
}

/// How the origin answers one request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// A complete response with `Content-Length`.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// `Transfer-Encoding: chunked`, one chunk per element, `gap` between
    /// chunks, then the trailers.
    Chunked {
        headers: Vec<(String, String)>,
        chunks: Vec<Vec<u8>>,
        gap: Duration,
        trailers: Vec<(String, String)>,
    },
    /// No length: the body ends when the origin closes the connection.
    UntilClose { body: Vec<u8> },
    /// `len` bytes of [`pattern`]`(seed, len)` with `Content-Length`,
    /// written as fast as the peer takes them.
    Generated { len: usize, seed: u64 },
    /// Waits, then answers.
    Delayed(Duration, Box<Answer>),
    /// Announces `announced` bytes, sends `sent` of them, closes.
    CutOff { announced: usize, sent: usize },
    /// Closes without any answer.
    Hangup,
}

impl Answer {
    /// 200 with a text body.
    pub fn text(body: impl Into<Vec<u8>>) -> Answer {
        Answer::Full {
            status: 200,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.into(),
        }
    }
}

type Handler = dyn Fn(&UpRequest) -> Answer + Send + Sync;

struct Shared {
    stop: AtomicBool,
    handler: Box<Handler>,
    websocket: bool,
    /// Waits this long before reading each request body (to make the proxy
    /// hold a request body back).
    body_delay: Duration,
    requests: Mutex<Vec<UpRequest>>,
    connections: AtomicUsize,
    /// How many of them have ended (the origin closed its side).
    ended: AtomicUsize,
    /// The address of each accepted connection's peer (the proxy's side).
    peers: Mutex<Vec<SocketAddr>>,
    /// Bytes of generated bodies written so far.
    generated_sent: AtomicU64,
    /// Request body bytes read so far (framing included).
    body_received: AtomicU64,
    /// Websocket messages echoed.
    echoed: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

pub struct Upstream {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Upstream {
    /// An HTTP origin answering each request with `handler(request)`.
    pub fn start(handler: impl Fn(&UpRequest) -> Answer + Send + Sync + 'static) -> Upstream {
        Upstream::launch(Box::new(handler), false, Duration::ZERO)
    }

    /// Like [`Upstream::start`], but each request body is read only after
    /// `delay`.
    pub fn slow_reader(
        delay: Duration,
        handler: impl Fn(&UpRequest) -> Answer + Send + Sync + 'static,
    ) -> Upstream {
        Upstream::launch(Box::new(handler), false, delay)
    }

    /// A websocket echo server (tungstenite's server side); each handshake
    /// request is recorded.
    pub fn websocket_echo() -> Upstream {
        Upstream::launch(Box::new(|_| Answer::Hangup), true, Duration::ZERO)
    }

    fn launch(handler: Box<Handler>, websocket: bool, body_delay: Duration) -> Upstream {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind upstream");
        // Accepted sockets inherit these from the listener.
        small_buffers(&listener);
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            handler,
            websocket,
            body_delay,
            requests: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            peers: Mutex::new(Vec::new()),
            generated_sent: AtomicU64::new(0),
            body_received: AtomicU64::new(0),
            echoed: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, peer)) => {
                        s.connections.fetch_add(1, Ordering::Relaxed);
                        s.peers.lock().unwrap().push(peer);
                        let s2 = s.clone();
                        let t = std::thread::spawn(move || {
                            serve(conn, &s2);
                            s2.ended.fetch_add(1, Ordering::Relaxed);
                        });
                        s.threads.lock().unwrap().push(t);
                    }
                    Err(_) => std::thread::sleep(TICK),
                }
            }
        });
        Upstream {
            port,
            shared,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<UpRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Waits (bounded) until at least `n` requests arrived; returns them.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<UpRequest> {
        super::wait_for(timeout, || self.requests().len() >= n);
        self.requests()
    }

    /// How many TCP connections were accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Connections accepted and not yet ended.
    pub fn open_connections(&self) -> usize {
        let ended = self.shared.ended.load(Ordering::Relaxed);
        self.connections().saturating_sub(ended)
    }

    /// The peer address of each accepted connection, in order.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.shared.peers.lock().unwrap().clone()
    }

    /// Bytes of generated bodies written so far.
    pub fn generated_sent(&self) -> u64 {
        self.shared.generated_sent.load(Ordering::Relaxed)
    }

    /// Request body bytes read so far.
    pub fn body_received(&self) -> u64 {
        self.shared.body_received.load(Ordering::Relaxed)
    }

    /// Websocket messages echoed so far.
    pub fn echoed(&self) -> usize {
        self.shared.echoed.load(Ordering::Relaxed)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let threads = std::mem::take(&mut *self.shared.threads.lock().unwrap());
        for t in threads {
            let _ = t.join();
        }
    }
}

/// `len` deterministic pseudo-random bytes for `seed` (xorshift64*), so a
/// large body can be checked by checksum without storing an expected copy.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Incremental 64-bit FNV-1a, the checksum the large-body tests compare.
#[derive(Clone, Copy, Debug)]
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

pub fn fnv1a(data: &[u8]) -> u64 {
    let mut f = Fnv::default();
    f.update(data);
    f.0
}

/// Asks for small kernel buffers on `sock` (see [`SOCKET_BUFFER`]).
pub fn small_buffers(sock: &impl std::os::fd::AsFd) {
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(sock, sockopt::SndBuf, &SOCKET_BUFFER).expect("SO_SNDBUF");
    setsockopt(sock, sockopt::RcvBuf, &SOCKET_BUFFER).expect("SO_RCVBUF");
}

/// Sleeps `d` in ticks; false if the server is stopping.
fn pause(d: Duration, s: &Shared) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if s.stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(TICK.min(until - Instant::now()));
    }
    !s.stop.load(Ordering::Relaxed)
}

/// A connection's socket with the bytes read but not yet consumed.
struct Wire<'a> {
    sock: TcpStream,
    buf: Vec<u8>,
    s: &'a Shared,
}

impl Wire<'_> {
    /// Reads more bytes; false on EOF, error, stop or a long idle.
    fn fill(&mut self) -> bool {
        let idle_since = Instant::now();
        let mut tmp = [0u8; 16 * 1024];
        loop {
            if self.s.stop.load(Ordering::Relaxed) {
                return false;
            }
            match self.sock.read(&mut tmp) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if idle_since.elapsed() > IDLE_LIMIT {
                        return false;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Takes one CRLF-terminated line (without the CRLF).
    fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                self.s
                    .body_received
                    .fetch_add(i as u64 + 2, Ordering::Relaxed);
                return Some(line);
            }
            if self.buf.len() > MAX_HEAD || !self.fill() {
                return None;
            }
        }
    }

    /// Takes exactly `n` body bytes.
    /// Counts them as they arrive, so a test can watch a body's progress.
    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        let received = &self.s.body_received;
        let mut counted = self.buf.len().min(n);
        received.fetch_add(counted as u64, Ordering::Relaxed);
        while self.buf.len() < n {
            if !self.fill() {
                return None;
            }
            let now = self.buf.len().min(n);
            received.fetch_add((now - counted) as u64, Ordering::Relaxed);
            counted = now;
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Writes all of `data`; false if the peer is gone or stalls too long.
    fn send(&mut self, mut data: &[u8]) -> bool {
        let mut progress = Instant::now();
        while !data.is_empty() {
            if self.s.stop.load(Ordering::Relaxed) {
                return false;
            }
            match self.sock.write(data) {
                Ok(0) => return false,
                Ok(n) => {
                    data = &data[n..];
                    progress = Instant::now();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if progress.elapsed() > IDLE_LIMIT {
                        return false;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Reads one request head and its body; `None` when the connection ends.
    fn request(&mut self) -> Option<(UpRequest, bool)> {
        let head_len = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > MAX_HEAD || !self.fill() {
                return None;
            }
        };
        let head: Vec<u8> = self.buf.drain(..head_len).collect();
        let mut hdrs = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut hdrs);
        let Ok(httparse::Status::Complete(_)) = req.parse(&head) else {
            return None;
        };
        let mut r = UpRequest {
            method: req.method.unwrap_or_default().to_string(),
            target: req.path.unwrap_or_default().to_string(),
            headers: super::http::header_pairs(req.headers),
            body: Vec::new(),
            trailers: Vec::new(),
        };
        let close = req.version == Some(0)
            || r.all("connection")
                .iter()
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        let chunked = r
            .all("transfer-encoding")
            .iter()
            .flat_map(|v| v.split(','))
            .next_back()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        let length = r
            .header("content-length")
            .and_then(|v| v.trim().parse().ok());
        if (chunked || length.is_some_and(|n: usize| n > 0)) && !pause(self.s.body_delay, self.s) {
            return None;
        }
        if chunked {
            loop {
                let line = self.line()?;
                let size = String::from_utf8_lossy(&line);
                let size = size.split(';').next().unwrap_or("").trim();
                let n = usize::from_str_radix(size, 16).ok()?;
                if n == 0 {
                    break;
                }
                let data = self.take(n)?;
                r.body.extend_from_slice(&data);
                if self.take(2)? != b"\r\n" {
                    return None;
                }
            }
            loop {
                let line = self.line()?;
                if line.is_empty() {
                    break;
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                let (k, v) = text.split_once(':')?;
                r.trailers
                    .push((k.trim().to_string(), v.trim().to_string()));
            }
        } else if let Some(n) = length {
            r.body = self.take(n)?;
        }
        Some((r, close))
    }
}

fn serve(sock: TcpStream, s: &Shared) {
    small_buffers(&sock);
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(IO_TICK));
    let _ = sock.set_write_timeout(Some(IO_TICK));
    if s.websocket {
        return serve_websocket(sock, s);
    }
    let mut w = Wire {
        sock,
        buf: Vec::new(),
        s,
    };
    while let Some((req, close)) = w.request() {
        s.requests.lock().unwrap().push(req.clone());
        let answer = (s.handler)(&req);
        let keep = answer_with(&mut w, answer, req.method == "HEAD");
        if close || !keep {
            break;
        }
    }
    // Lingering close: the proxy sent everything before we answered, so
    // nothing unread remains that would turn the FIN into a reset.
    let _ = w.sock.shutdown(Shutdown::Write);
    let until = Instant::now() + Duration::from_secs(2);
    let mut tmp = [0u8; 4096];
    while Instant::now() < until && !s.stop.load(Ordering::Relaxed) {
        match w.sock.read(&mut tmp) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
}

fn head(status: u16, headers: &[(String, String)], extra: &str) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {status} Test\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str(extra);
    h.push_str("\r\n");
    h.into_bytes()
}

/// Sends `answer`; true if the connection may carry another request.
fn answer_with(w: &mut Wire, answer: Answer, head_only: bool) -> bool {
    match answer {
        Answer::Full {
            status,
            headers,
            body,
        } => {
            let h = head(
                status,
                &headers,
                &format!("Content-Length: {}\r\n", body.len()),
            );
            w.send(&h) && (head_only || w.send(&body))
        }
        Answer::Chunked {
            headers,
            chunks,
            gap,
            trailers,
        } => {
            if !w.send(&head(200, &headers, "Transfer-Encoding: chunked\r\n")) {
                return false;
            }
            for c in chunks.iter().filter(|c| !c.is_empty()) {
                let mut piece = format!("{:x}\r\n", c.len()).into_bytes();
                piece.extend_from_slice(c);
                piece.extend_from_slice(b"\r\n");
                if !w.send(&piece) || !pause(gap, w.s) {
                    return false;
                }
            }
            let mut end = b"0\r\n".to_vec();
            for (k, v) in &trailers {
                end.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
            }
            end.extend_from_slice(b"\r\n");
            w.send(&end)
        }
        Answer::UntilClose { body } => {
            let _ = w.send(&head(
                200,
                &[],
                "Content-Type: application/octet-stream\r\n",
            )) && w.send(&body);
            false
        }
        Answer::Generated { len, seed } => {
            let h = head(
                200,
                &[],
                &format!("Content-Type: application/octet-stream\r\nContent-Length: {len}\r\n"),
            );
            if !w.send(&h) {
                return false;
            }
            let body = pattern(seed, len);
            for piece in body.chunks(PIECE) {
                if !w.send(piece) {
                    return false;
                }
                w.s.generated_sent
                    .fetch_add(piece.len() as u64, Ordering::Relaxed);
            }
            true
        }
        Answer::Delayed(d, then) => pause(d, w.s) && answer_with(w, *then, head_only),
        Answer::CutOff { announced, sent } => {
            let h = head(200, &[], &format!("Content-Length: {announced}\r\n"));
            let _ = w.send(&h) && w.send(&pattern(7, sent));
            false
        }
        Answer::Hangup => false,
    }
}

// The handshake callback's error type is tungstenite's, not ours to shrink.
#[allow(clippy::result_large_err)]
fn serve_websocket(sock: TcpStream, s: &Shared) {
    let record = |req: &WsRequest, resp: WsResponse| -> Result<WsResponse, ErrorResponse> {
        let mut headers = Vec::new();
        for (k, v) in req.headers() {
            headers.push((
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ));
        }
        s.requests.lock().unwrap().push(UpRequest {
            method: req.method().as_str().to_string(),
            target: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        });
        Ok(resp)
    };
    let deadline = Instant::now() + IDLE_LIMIT;
    let mut attempt = tungstenite::accept_hdr(sock, record);
    let mut ws = loop {
        match attempt {
            Ok(ws) => break ws,
            Err(HandshakeError::Interrupted(mid)) => {
                if s.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    return;
                }
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(_)) => return,
        }
    };
    let mut idle_since = Instant::now();
    while !s.stop.load(Ordering::Relaxed) && idle_since.elapsed() < IDLE_LIMIT {
        let _ = ws.flush();
        match ws.read() {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                idle_since = Instant::now();
                match ws.send(m) {
                    Ok(()) => {}
                    // Queued inside tungstenite; the flush below goes on.
                    Err(tungstenite::Error::Io(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => return,
                }
                s.echoed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => idle_since = Instant::now(),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}
