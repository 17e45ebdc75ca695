//! End-to-end tests of the discovery proxy (`--proxy-discovery`): the real
//! `packetflix` binary in front of a real HTTP/1.1 origin the test starts
//! (tests/common/upstream.rs), which records every request as it arrived.
//! Each test bounds its waits, so each ends within about 20 s.

// The shared test kit (testkit/), by the name these tests have always used.
use packetflix_testkit as common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::http::{self as raw_http, send_raw};
use common::service::free_port;
use common::upstream::{self, fnv1a, pattern, Answer, Fnv, UpRequest, Upstream};
use common::ws::connect_path;
use common::*;
use tungstenite::Message;

/// Size of the large bodies: several MiB, far above every buffer the proxy
/// may hold per connection.
const LARGE: usize = 8 * 1024 * 1024;
/// How long a test client waits for one response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

fn proxying(up: &Upstream) -> Service {
    Service::with_discovery(up.port(), 5, &["--proxy-discovery"])
}

/// `Host` the proxy must send: the discovery service's host and port.
fn gw_host(up: &Upstream) -> String {
    format!("127.0.0.1:{}", up.port())
}

/// Echoes the request target, so a response shows which request it answers.
fn echo_target(req: &UpRequest) -> Answer {
    Answer::text(format!("answer for {}", req.target))
}

// ---- a keep-alive HTTP client ----

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    /// The body with any chunked framing removed.
    body: Vec<u8>,
    chunked: bool,
    trailers: Vec<(String, String)>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection that can carry several requests.
struct Http {
    sock: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Http {
    fn open(port: u16) -> Http {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Http {
            sock,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Like [`Http::open`], with small kernel buffers so that a client that
    /// does not read (or cannot write) shows up at the proxy quickly.
    fn open_small(port: u16) -> Http {
        let c = Http::open(port);
        upstream::small_buffers(&c.sock);
        c
    }

    fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).expect("send request");
    }

    fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: front.test\r\n\r\n").as_bytes());
        self.response()
    }

    /// Reads more bytes; false on EOF or when `deadline` passed.
    fn fill(&mut self, deadline: Instant) -> bool {
        let mut tmp = [0u8; 64 * 1024];
        while !self.eof && Instant::now() < deadline {
            match self.sock.read(&mut tmp) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => self.eof = true,
            }
        }
        false
    }

    fn line(&mut self, deadline: Instant) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(
                self.fill(deadline),
                "connection ended or timed out inside a line; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    fn take(&mut self, n: usize, deadline: Instant) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(
                self.fill(deadline),
                "body cut short: {} of {n} bytes (eof={})",
                self.buf.len(),
                self.eof
            );
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one complete response (any framing); panics on timeout or a
    /// response cut short.
    fn response(&mut self) -> Resp {
        self.response_for(false)
    }

    /// `head_request`: the response answers HEAD, so it has no body
    /// whatever its headers say.
    fn response_for(&mut self, head_request: bool) -> Resp {
        let deadline = Instant::now() + RESPONSE_TIMEOUT;
        let head_len = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill(deadline),
                "no response head (eof={}); have {:?}",
                self.eof,
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head: Vec<u8> = self.buf.drain(..head_len).collect();
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut hdrs);
        assert!(
            matches!(r.parse(&head), Ok(httparse::Status::Complete(_))),
            "bad response head {:?}",
            String::from_utf8_lossy(&head)
        );
        let mut resp = Resp {
            status: r.code.unwrap_or(0),
            headers: raw_http::header_pairs(r.headers),
            body: Vec::new(),
            chunked: false,
            trailers: Vec::new(),
        };
        resp.chunked = resp.has_token("transfer-encoding", "chunked");
        let length: Option<usize> = resp
            .header("content-length")
            .map(|v| v.trim().parse().expect("numeric Content-Length"));
        if head_request
            || (100..200).contains(&resp.status)
            || resp.status == 204
            || resp.status == 304
        {
            return resp;
        }
        if resp.chunked {
            loop {
                let line = self.line(deadline);
                let text = String::from_utf8_lossy(&line).into_owned();
                let size = text.split(';').next().unwrap_or("").trim();
                let n = usize::from_str_radix(size, 16).expect("chunk size");
                if n == 0 {
                    break;
                }
                let data = self.take(n, deadline);
                resp.body.extend_from_slice(&data);
                assert_eq!(
                    self.take(2, deadline),
                    b"\r\n",
                    "chunk not followed by CRLF"
                );
            }
            loop {
                let line = self.line(deadline);
                if line.is_empty() {
                    break;
                }
                let text = String::from_utf8_lossy(&line).into_owned();
                let (k, v) = text.split_once(':').expect("trailer field");
                resp.trailers
                    .push((k.trim().to_string(), v.trim().to_string()));
            }
        } else if let Some(n) = length {
            resp.body = self.take(n, deadline);
        } else {
            while self.fill(deadline) {}
            assert!(self.eof, "close-delimited body did not end in time");
            resp.body = std::mem::take(&mut self.buf);
        }
        resp
    }

    /// Waits (bounded) for EOF with no further bytes; false if bytes came
    /// or the connection stayed open.
    fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.fill(deadline) {}
        self.eof && self.buf.is_empty()
    }
}

/// A streamed download: the body is hashed as it arrives, never stored.
#[derive(Debug, Default)]
struct Download {
    status: u16,
    content_length: Option<usize>,
    received: usize,
    checksum: u64,
}

/// GETs `path` on a new connection. Reads nothing while `hold` holds,
/// then reads at most 16 KiB at a time; while `slow` holds it sleeps `gap`
/// between reads. `progress` follows the body bytes received. Bounded by
/// `timeout` overall.
fn download(
    port: u16,
    path: &str,
    hold: &AtomicBool,
    gap: Duration,
    slow: &AtomicBool,
    progress: &AtomicU64,
    timeout: Duration,
) -> Download {
    let deadline = Instant::now() + timeout;
    let mut c = Http::open_small(port);
    c.send(format!("GET {path} HTTP/1.1\r\nHost: front.test\r\n\r\n").as_bytes());
    while hold.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let head_len = loop {
        if let Some(i) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        assert!(c.fill(deadline), "no response head for {path}");
    };
    let head: Vec<u8> = c.buf.drain(..head_len).collect();
    let mut hdrs = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut hdrs);
    r.parse(&head).expect("response head");
    let mut d = Download {
        status: r.code.unwrap_or(0),
        content_length: r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok()),
        ..Download::default()
    };
    let want = d.content_length.unwrap_or(usize::MAX);
    let mut fnv = Fnv::default();
    let mut eat = |bytes: &[u8], d: &mut Download| {
        let n = bytes.len().min(want - d.received);
        fnv.update(&bytes[..n]);
        d.received += n;
        progress.store(d.received as u64, Ordering::Relaxed);
    };
    let early = std::mem::take(&mut c.buf);
    eat(&early, &mut d);
    let mut piece = vec![0u8; 16 * 1024];
    while d.received < want && Instant::now() < deadline {
        if slow.load(Ordering::Relaxed) {
            std::thread::sleep(gap);
        }
        match c.sock.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => eat(&piece[..n], &mut d),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    d.checksum = fnv.0;
    d
}

/// Bytes that arrived on the loopback TCP socket `local_port` ->
/// `remote_port` but that its owner has not read yet (the `rx_queue` column
/// of /proc/net/tcp and tcp6). Both ends live on this machine, so the port
/// pair names one socket.
fn unread(local_port: u16, remote_port: u16) -> Option<u64> {
    let port = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 4 && port(f[1]) == Some(local_port) && port(f[2]) == Some(remote_port) {
                let rx = f[4].split(':').nth(1)?;
                return u64::from_str_radix(rx, 16).ok();
            }
        }
    }
    None
}

/// Least unread backlog that shows a socket is not being read: a service
/// that read ahead into memory keeps its sockets near empty.
const HELD_BACK_MIN: u64 = 32 * 1024;
/// How long a backlog may take to build on a stalled exchange: how fast
/// bytes get through tiny loopback buffers varies.
const HELD_BACK_WAIT: Duration = Duration::from_secs(4);
/// Spacing of the backlog samples, and how many in a row must agree.
const HELD_BACK_TICK: Duration = Duration::from_millis(150);
const HELD_BACK_SAMPLES: usize = 4;

/// Asserts that, within [`HELD_BACK_WAIT`], the service leaves a backlog of
/// unread bytes on one of its sockets that does not shrink over several
/// samples: it holds that peer back rather than reading ahead into memory.
fn assert_held_back(what: &str, local_port: u16, remote_port: u16) {
    let deadline = Instant::now() + HELD_BACK_WAIT;
    let mut samples: Vec<u64> = Vec::new();
    loop {
        samples.push(unread(local_port, remote_port).unwrap_or(0));
        let last = &samples[samples.len().saturating_sub(HELD_BACK_SAMPLES)..];
        if last.len() == HELD_BACK_SAMPLES
            && last.iter().all(|&n| n >= HELD_BACK_MIN)
            && last.windows(2).all(|w| w[0] <= w[1])
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} (port {local_port} <- {remote_port}) was never held back: unread bytes {samples:?}"
        );
        std::thread::sleep(HELD_BACK_TICK);
    }
}

/// How much the service's resident memory may grow while one exchange is
/// stalled: its queues (256 KiB each way) and allocator slack, far below
/// the 8 MiB a service that buffered the body would need.
const RSS_SLACK_KIB: u64 = 3 * 1024;

/// Clears a flag when dropped, so a helper thread waiting on it is let go
/// also when the test fails.
struct Release<'a>(&'a AtomicBool);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

/// Resident memory of `pid` in KiB (0 once it is gone).
fn rss_kib(pid: i32) -> u64 {
    common::procs::rss_kib(pid).unwrap_or(0)
}

fn assert_version_ok(port: u16) {
    let r = raw_http::get(port, "/version");
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert!(
        r.body_text().contains("\"packetflix\""),
        "{}",
        r.body_text()
    );
}

// ---- requests and their rewriting ----

#[test]
fn get_with_query_is_forwarded_with_the_discover_segment_removed() {
    let up = Upstream::start(echo_target);
    let svc = proxying(&up);
    let cases = [
        ("/discover/mobyshark?x=1", "/mobyshark?x=1"),
        ("/discover", "/"),
        ("/discover?view=all&sort=name", "/?view=all&sort=name"),
        ("/discover/", "/"),
        ("/discover/static/app.js?v=3", "/static/app.js?v=3"),
        ("/mobyshark?x=%2Fy", "/mobyshark?x=%2Fy"),
        ("/discovery/x", "/discovery/x"),
    ];
    for (asked, forwarded) in cases {
        let r = raw_http::get(svc.port(), asked);
        assert_eq!(r.status, 200, "{asked}: {}", r.body_text());
        assert_eq!(r.body_text(), format!("answer for {forwarded}"), "{asked}");
        assert_eq!(r.header("content-type"), Some("text/plain"), "{asked}");
    }
    let seen: Vec<String> = up
        .wait_requests(cases.len(), Duration::from_secs(5))
        .iter()
        .map(|r| r.target.clone())
        .collect();
    let want: Vec<&str> = cases.iter().map(|(_, f)| *f).collect();
    assert_eq!(seen, want);
    assert!(up.requests().iter().all(|r| r.method == "GET"));
}

#[test]
fn request_and_response_headers_are_rewritten_per_hop() {
    let up = Upstream::start(|_| Answer::Full {
        status: 200,
        headers: vec![
            ("Connection".into(), "X-Up-Hop".into()),
            ("X-Up-Hop".into(), "secret".into()),
            ("Keep-Alive".into(), "timeout=9".into()),
            ("X-Up-Kept".into(), "yes".into()),
        ],
        body: b"ok".to_vec(),
    });
    let svc = proxying(&up);
    let req = "GET /discover/mobyshark?x=1 HTTP/1.1\r\n\
               Host: frontend.example:8443\r\n\
               User-Agent: pfx-test/1\r\n\
               Accept: application/json\r\n\
               Connection: keep-alive, X-Hop-Secret\r\n\
               Keep-Alive: timeout=5\r\n\
               X-Hop-Secret: drop-me\r\n\
               Proxy-Authorization: Basic c2VjcmV0\r\n\
               Proxy-Connection: keep-alive\r\n\
               TE: trailers\r\n\
               X-End-To-End: keep-me\r\n\r\n";
    let r = send_raw(svc.port(), req.as_bytes(), false, RESPONSE_TIMEOUT);
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.body_text(), "ok");
    // The origin's hop-by-hop headers stop at the proxy too.
    assert_eq!(r.header("x-up-kept"), Some("yes"));
    assert_eq!(r.header("x-up-hop"), None, "{:?}", r.headers);
    assert_eq!(r.header("keep-alive"), None, "{:?}", r.headers);
    assert!(
        r.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
            .all(|(_, v)| !v.to_ascii_lowercase().contains("x-up-hop")),
        "{:?}",
        r.headers
    );

    let reqs = up.wait_requests(1, Duration::from_secs(5));
    let got = &reqs[0];
    assert_eq!(got.target, "/mobyshark?x=1");
    assert_eq!(got.all("host"), vec![gw_host(&up).as_str()], "{got:?}");
    assert!(got.has("enable-monolith"), "{got:?}");
    assert_eq!(got.all("x-forwarded-for"), vec!["127.0.0.1"], "{got:?}");
    assert_eq!(got.header("user-agent"), Some("pfx-test/1"));
    assert_eq!(got.header("accept"), Some("application/json"));
    assert_eq!(got.header("x-end-to-end"), Some("keep-me"));
    for gone in [
        "keep-alive",
        "x-hop-secret",
        "proxy-authorization",
        "proxy-connection",
        "te",
    ] {
        assert!(!got.has(gone), "{gone} was forwarded: {got:?}");
    }
    // The proxy may say something about its own hop, but nothing the
    // client said about the client's hop.
    for v in got.all("connection") {
        let v = v.to_ascii_lowercase();
        assert!(
            !v.contains("keep-alive") && !v.contains("x-hop-secret"),
            "client's Connection forwarded: {got:?}"
        );
    }

    // An existing X-Forwarded-For chain is extended with the client.
    let req = "GET /discover HTTP/1.1\r\nHost: f\r\nX-Forwarded-For: 192.0.2.7\r\n\r\n";
    let r = send_raw(svc.port(), req.as_bytes(), false, RESPONSE_TIMEOUT);
    assert_eq!(r.status, 200);
    let reqs = up.wait_requests(2, Duration::from_secs(5));
    assert_eq!(reqs[1].target, "/");
    assert_eq!(
        reqs[1].all("x-forwarded-for"),
        vec!["192.0.2.7, 127.0.0.1"],
        "{:?}",
        reqs[1]
    );
}

#[test]
fn post_with_content_length_arrives_intact_under_backpressure() {
    // The origin reads the body only after a pause, so the proxy must hold
    // the client back instead of buffering the body.
    // Long enough for the service's queue and socket buffers to fill and
    // for the checks below; the client is then unblocked.
    let up = Upstream::slow_reader(Duration::from_secs(6), |req| Answer::Full {
        status: 201,
        headers: vec![],
        body: format!("{} {:016x}", req.body.len(), fnv1a(&req.body)).into_bytes(),
    });
    // A generous answer deadline: this test is about the body, not 504.
    let svc = Service::with_discovery(up.port(), 30, &["--proxy-discovery"]);
    let body = pattern(11, LARGE);
    let want = format!("{} {:016x}", LARGE, fnv1a(&body));
    let mut c = Http::open_small(svc.port());
    let client_port = c.sock.local_addr().unwrap().port();
    let writer = {
        let mut sock = c.sock.try_clone().unwrap();
        let body = body.clone();
        std::thread::spawn(move || {
            let head = format!(
                "POST /discover/upload?kind=pcap HTTP/1.1\r\nHost: f\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            sock.write_all(head.as_bytes())?;
            sock.write_all(&body)
        })
    };
    let rss_before = rss_kib(svc.pid());
    assert_held_back(
        "the service's socket from the client",
        svc.port(),
        client_port,
    );
    assert_eq!(up.body_received(), 0, "origin was meant to wait");
    let rss_stalled = rss_kib(svc.pid());
    assert!(
        rss_stalled.saturating_sub(rss_before) < RSS_SLACK_KIB,
        "service grew from {rss_before} KiB to {rss_stalled} KiB holding a request body"
    );
    let r = c.response();
    let written = writer.join().unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(written.is_ok(), "sending the body failed: {written:?}");
    assert_eq!(r.text(), want);
    let got = &up.wait_requests(1, Duration::from_secs(5))[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.target, "/upload?kind=pcap");
    assert_eq!(
        got.header("content-length"),
        Some(LARGE.to_string().as_str())
    );
    assert_eq!(got.body.len(), body.len());
    assert!(got.body == body, "request body changed on the way");
}

#[test]
fn post_with_chunked_body_arrives_intact() {
    let up = Upstream::start(|req| Answer::text(format!("got {}", req.body.len())));
    let svc = proxying(&up);
    let chunks: Vec<Vec<u8>> = vec![
        b"a".to_vec(),
        pattern(1, 100),
        pattern(2, 5000),
        pattern(3, 70_000),
        b"end".to_vec(),
    ];
    let mut c = Http::open(svc.port());
    c.send(
        b"POST /discover/api/filter HTTP/1.1\r\nHost: f\r\n\
          Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n",
    );
    for (i, chunk) in chunks.iter().enumerate() {
        // Chunk extensions are legal and must not confuse the proxy.
        let ext = if i == 1 { ";name=value" } else { "" };
        let mut piece = format!("{:X}{ext}\r\n", chunk.len()).into_bytes();
        piece.extend_from_slice(chunk);
        piece.extend_from_slice(b"\r\n");
        // Split each chunk across writes, so framing straddles reads.
        let (a, b) = piece.split_at(piece.len() / 2);
        c.send(a);
        std::thread::sleep(Duration::from_millis(30));
        c.send(b);
    }
    c.send(b"0\r\nX-Trailer: t1\r\n\r\n");
    let whole: Vec<u8> = chunks.concat();
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), format!("got {}", whole.len()));
    let got = &up.wait_requests(1, Duration::from_secs(5))[0];
    assert_eq!(got.target, "/api/filter");
    assert!(got
        .all("transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("chunked")));
    assert!(!got.has("content-length"), "{got:?}");
    assert!(got.body == whole, "chunked body changed on the way");
    assert_eq!(
        got.trailers,
        vec![("X-Trailer".to_string(), "t1".to_string())]
    );
    // The connection carries on after the chunked request.
    assert_version_ok(svc.port());
    let v = c.get("/version");
    assert_eq!(v.status, 200, "{}", v.text());
}

// ---- responses of every framing ----

#[test]
fn large_response_streams_with_backpressure_and_intact_checksum() {
    let up = Upstream::start(|_| Answer::Generated {
        len: LARGE,
        seed: 42,
    });
    let svc = proxying(&up);
    let progress = AtomicU64::new(0);
    let slow = AtomicBool::new(false);
    // The client reads nothing until the checks below are done.
    let hold = AtomicBool::new(true);
    let rss_before = rss_kib(svc.pid());
    let d = std::thread::scope(|s| {
        let t = s.spawn(|| {
            download(
                svc.port(),
                "/discover/big.bin",
                &hold,
                Duration::ZERO,
                &slow,
                &progress,
                Duration::from_secs(15),
            )
        });
        let release = Release(&hold);
        assert!(
            wait_for(Duration::from_secs(5), || !up.peers().is_empty()),
            "the proxy never connected to the origin"
        );
        let peer = up.peers()[0];
        assert_held_back(
            "the service's socket from the origin",
            peer.port(),
            up.port(),
        );
        let rss = rss_kib(svc.pid());
        assert!(
            rss.saturating_sub(rss_before) < RSS_SLACK_KIB,
            "service grew from {rss_before} KiB to {rss} KiB while the client stalled"
        );
        assert_eq!(progress.load(Ordering::Relaxed), 0, "client read too early");
        drop(release);
        t.join().unwrap()
    });
    assert_eq!(d.status, 200);
    assert_eq!(d.content_length, Some(LARGE));
    assert_eq!(d.received, LARGE);
    assert_eq!(d.checksum, fnv1a(&pattern(42, LARGE)), "body corrupted");
    assert_eq!(up.generated_sent() as usize, LARGE);
}

#[test]
fn chunked_response_is_relayed_and_the_connection_stays_usable() {
    let big = pattern(5, 100_000);
    let chunks = vec![
        b"hello ".to_vec(),
        b"chunked ".to_vec(),
        b"world".to_vec(),
        big.clone(),
    ];
    let whole = chunks.concat();
    let up = Upstream::start(move |req| {
        if req.target == "/stream" {
            Answer::Chunked {
                headers: vec![("Content-Type".into(), "text/event-stream".into())],
                chunks: chunks.clone(),
                gap: Duration::from_millis(50),
                trailers: vec![("X-Checksum".into(), "abc".into())],
            }
        } else {
            echo_target(req)
        }
    });
    let svc = proxying(&up);
    let mut c = Http::open(svc.port());
    let r = c.get("/discover/stream");
    assert_eq!(r.status, 200);
    assert!(r.chunked, "{:?}", r.headers);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.body == whole, "chunked body changed on the way");
    assert_eq!(
        r.trailers,
        vec![("X-Checksum".to_string(), "abc".to_string())]
    );
    // The end of the chunked body was found exactly: the next requests on
    // the same connection, local and proxied, are answered.
    let v = c.get("/version");
    assert_eq!(v.status, 200, "{}", v.text());
    let again = c.get("/discover/after");
    assert_eq!(again.text(), "answer for /after");
}

#[test]
fn close_delimited_response_is_relayed_then_the_connection_closes() {
    let body = pattern(9, 300_000);
    let b2 = body.clone();
    let up = Upstream::start(move |_| Answer::UntilClose { body: b2.clone() });
    let svc = proxying(&up);
    let mut c = Http::open(svc.port());
    let r = c.get("/discover/export");
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").is_none() && !r.chunked);
    assert!(r.has_token("connection", "close"), "{:?}", r.headers);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "body changed on the way");
    assert!(c.closed_within(Duration::from_secs(2)));
}

// ---- connections ----

#[test]
fn keep_alive_carries_proxied_and_local_requests_in_order() {
    let up = Upstream::start(echo_target);
    let svc = proxying(&up);
    let mut c = Http::open(svc.port());
    assert_eq!(c.get("/discover/one").text(), "answer for /one");
    assert_eq!(c.get("/discover/two?n=2").text(), "answer for /two?n=2");
    let v = c.get("/version");
    assert_eq!(v.status, 200);
    assert!(v.text().contains("packetflix"));
    // Pipelined: three requests in one write, answered in order.
    c.send(
        b"GET /discover/three HTTP/1.1\r\nHost: f\r\n\r\n\
          GET /version HTTP/1.1\r\nHost: f\r\n\r\n\
          GET /discover/four HTTP/1.1\r\nHost: f\r\n\r\n",
    );
    assert_eq!(c.response().text(), "answer for /three");
    assert!(c.response().text().contains("packetflix"));
    assert_eq!(c.response().text(), "answer for /four");
    // A HEAD answer has a length but no body; the next request follows.
    c.send(b"HEAD /discover/six HTTP/1.1\r\nHost: f\r\n\r\n");
    let h = c.response_for(true);
    assert_eq!(h.status, 200);
    assert_eq!(
        h.header("content-length"),
        Some("answer for /six".len().to_string().as_str())
    );
    // Still open for more.
    assert_eq!(c.get("/discover/five").text(), "answer for /five");
    // The client ends the connection with its last request.
    c.send(b"GET /discover/last HTTP/1.1\r\nHost: f\r\nConnection: close\r\n\r\n");
    let last = c.response();
    assert_eq!(last.text(), "answer for /last");
    assert!(last.has_token("connection", "close"), "{:?}", last.headers);
    assert!(c.closed_within(Duration::from_secs(5)));
    let targets: Vec<String> = up
        .wait_requests(7, Duration::from_secs(5))
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert_eq!(
        targets,
        [
            "GET /one",
            "GET /two?n=2",
            "GET /three",
            "GET /four",
            "HEAD /six",
            "GET /five",
            "GET /last"
        ]
    );
}

#[test]
fn half_closed_client_still_gets_its_answer() {
    let up = Upstream::start(|req| {
        Answer::Delayed(Duration::from_millis(300), Box::new(echo_target(req)))
    });
    let svc = proxying(&up);
    let mut c = Http::open(svc.port());
    c.send(b"GET /discover/x HTTP/1.1\r\nHost: f\r\n\r\n");
    // Done sending (as `nc -N` or a shell here-document does).
    c.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "answer for /x");
    assert!(c.closed_within(Duration::from_secs(5)));
}

#[test]
fn websocket_upgrade_is_tunnelled_to_the_origin_and_back() {
    let up = Upstream::websocket_echo();
    let svc = proxying(&up);
    let mut c = match connect_path(svc.port(), "/discover/echo?room=1", &[]) {
        Ok(c) => c,
        Err(e) => panic!("websocket through the proxy failed: {e:?}"),
    };
    let big = pattern(3, 200_000);
    c.ws.send(Message::Text("hello through the proxy".into()))
        .unwrap();
    c.ws.send(Message::Binary(big.clone().into())).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + RESPONSE_TIMEOUT;
    while got.len() < 2 && Instant::now() < deadline {
        match c.ws.read() {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => got.push(m),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("websocket read failed: {e}"),
        }
    }
    assert_eq!(got.len(), 2, "echoes: {got:?}");
    assert_eq!(got[0], Message::Text("hello through the proxy".into()));
    assert_eq!(got[1], Message::Binary(big.into()));
    // The origin counts an echo once its send returned, which may be just
    // after the client already read it.
    assert!(wait_for(Duration::from_secs(2), || up.echoed() == 2));
    // The close handshake goes through the tunnel, then TCP closes.
    let close = c.close(Duration::from_secs(5));
    assert!(close.is_some(), "no close answer through the tunnel");
    assert!(c.wait_tcp_closed(Duration::from_secs(5)));
    assert!(
        wait_for(Duration::from_secs(5), || up.open_connections() == 0),
        "the tunnel's origin connection stayed open"
    );

    let got = &up.wait_requests(1, Duration::from_secs(5))[0];
    assert_eq!(got.target, "/echo?room=1");
    assert_eq!(got.all("host"), vec![gw_host(&up).as_str()]);
    assert!(got.has("enable-monolith"));
    assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(got
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
    assert_version_ok(svc.port());
}

// ---- failures ----

#[test]
fn unreachable_discovery_service_gives_502() {
    let nothing = free_port();
    let svc = Service::with_discovery(nothing, 5, &["--proxy-discovery"]);
    for path in ["/discover/mobyshark", "/"] {
        let r = send_raw(
            svc.port(),
            format!("GET {path} HTTP/1.1\r\nHost: f\r\n\r\n").as_bytes(),
            true,
            RESPONSE_TIMEOUT,
        );
        assert_eq!(r.status, 502, "{path}: {}", r.body_text());
        let text = r.body_text();
        assert!(
            !text.trim().is_empty() && text.len() < 512,
            "502 text should be short and present: {text:?}"
        );
        assert!(r.closed, "connection kept open after 502");
    }
    assert_version_ok(svc.port());
}

#[test]
fn origin_closing_without_an_answer_gives_502() {
    let up = Upstream::start(|_| Answer::Hangup);
    let svc = proxying(&up);
    let r = send_raw(
        svc.port(),
        b"GET /discover/x HTTP/1.1\r\nHost: f\r\n\r\n",
        true,
        RESPONSE_TIMEOUT,
    );
    assert_eq!(r.status, 502, "{}", r.body_text());
    assert!(r.closed);
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn slow_discovery_service_gives_504() {
    let up = Upstream::start(|_| {
        Answer::Delayed(Duration::from_secs(6), Box::new(Answer::text("too late")))
    });
    let svc = Service::with_discovery(up.port(), 1, &["--proxy-discovery"]);
    let start = Instant::now();
    let r = send_raw(
        svc.port(),
        b"GET /discover/mobyshark HTTP/1.1\r\nHost: f\r\n\r\n",
        true,
        Duration::from_secs(5),
    );
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.body_text());
    assert!(!r.body_text().trim().is_empty());
    assert!(r.closed);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(3500),
        "504 after {took:?} with a 1 s deadline"
    );
    assert_eq!(up.requests().len(), 1, "the request did reach the origin");
    assert_version_ok(svc.port());
}

#[test]
fn upload_still_arriving_is_not_cut_off_as_a_slow_discovery_service() {
    // The answer deadline is for the discovery service; a client that is
    // still sending its body (slow link, big upload) is not the discovery
    // service being slow, and the origin here answers at once when the body
    // is complete.
    let up = Upstream::start(|req| Answer::text(format!("got {}", req.body.len())));
    let svc = Service::with_discovery(up.port(), 1, &["--proxy-discovery"]);
    const PIECES: usize = 25;
    let piece = pattern(4, 1024);
    let mut c = Http::open(svc.port());
    c.send(
        format!(
            "POST /discover/api/upload HTTP/1.1\r\nHost: f\r\nContent-Length: {}\r\n\r\n",
            PIECES * piece.len()
        )
        .as_bytes(),
    );
    // 2.5 s of steady progress with a 1 s answer deadline.
    for _ in 0..PIECES {
        if c.sock.write_all(&piece).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = c.response();
    assert_eq!(
        r.status,
        200,
        "an upload still in progress was answered {}: {}",
        r.status,
        r.text()
    );
    assert_eq!(r.text(), format!("got {}", PIECES * piece.len()));
}

#[test]
fn origin_closing_mid_body_closes_only_that_client_connection() {
    let up = Upstream::start(|req| {
        if req.target == "/cut" {
            Answer::CutOff {
                announced: 100_000,
                sent: 30_000,
            }
        } else {
            echo_target(req)
        }
    });
    let svc = proxying(&up);
    // Another client keeps a connection open meanwhile.
    let mut other = Http::open(svc.port());
    assert_eq!(other.get("/discover/first").text(), "answer for /first");
    let r = send_raw(
        svc.port(),
        b"GET /discover/cut HTTP/1.1\r\nHost: f\r\n\r\n",
        true,
        RESPONSE_TIMEOUT,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("100000"));
    assert!(r.closed, "client connection left open after the cut");
    assert_eq!(
        r.body.len(),
        30_000,
        "client should get exactly what the origin sent before closing"
    );
    assert!(r.body == pattern(7, 30_000));
    // Nothing else affected: the other connection and new ones work.
    assert_eq!(other.get("/discover/second").text(), "answer for /second");
    assert_version_ok(svc.port());
    assert_eq!(
        raw_http::get(svc.port(), "/discover/third").body_text(),
        "answer for /third"
    );
}

#[test]
fn client_leaving_mid_download_releases_the_origin_connection() {
    let up = Upstream::start(|_| Answer::Generated {
        len: LARGE,
        seed: 8,
    });
    let svc = proxying(&up);
    let fds_before = svc.open_fds();
    let mut c = Http::open_small(svc.port());
    c.send(b"GET /discover/big.bin HTTP/1.1\r\nHost: f\r\n\r\n");
    let deadline = Instant::now() + RESPONSE_TIMEOUT;
    while c.buf.len() < 100 * 1024 {
        assert!(c.fill(deadline), "download did not start");
    }
    drop(c);
    assert!(
        wait_for(Duration::from_secs(5), || up.open_connections() == 0),
        "the service kept the origin connection after its client left"
    );
    assert!((up.generated_sent() as usize) < LARGE);
    assert!(
        wait_for(Duration::from_secs(5), || svc.open_fds() <= fds_before),
        "descriptors leaked: {} before, {} after",
        fds_before,
        svc.open_fds()
    );
    assert_version_ok(svc.port());
}

#[test]
fn request_with_both_length_and_chunked_is_refused_not_forwarded() {
    let up = Upstream::start(echo_target);
    let svc = proxying(&up);
    // Request smuggling shape (RFC 9112 6.1): a proxy must not pass it on
    // as is.
    let r = send_raw(
        svc.port(),
        b"POST /discover/api HTTP/1.1\r\nHost: f\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /discover/smuggled HTTP/1.1\r\n\r\n",
        true,
        RESPONSE_TIMEOUT,
    );
    assert_eq!(r.status, 400, "{}", r.body_text());
    assert!(r.closed);
    std::thread::sleep(Duration::from_millis(300));
    assert!(up.requests().is_empty(), "{:?}", up.requests());
}

#[test]
fn without_the_flag_nothing_is_forwarded() {
    let up = Upstream::start(echo_target);
    let svc = Service::with_discovery(up.port(), 5, &[]);
    for path in [
        "/discover/mobyshark?x=1",
        "/discover",
        "/",
        "/static/app.js",
    ] {
        let r = raw_http::get(svc.port(), path);
        assert_eq!(r.status, 404, "{path}: {}", r.body_text());
    }
    let r = send_raw(
        svc.port(),
        b"POST /discover/api HTTP/1.1\r\nHost: f\r\nContent-Length: 3\r\n\r\nabc",
        true,
        RESPONSE_TIMEOUT,
    );
    assert_eq!(r.status, 404);
    assert_version_ok(svc.port());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(up.connections(), 0, "the origin was contacted");
    assert!(up.requests().is_empty());
}

// ---- captures beside the proxy ----

#[test]
fn capture_streams_while_a_large_download_is_in_progress() {
    let ns = Netns::new();
    let up = Upstream::start(|_| Answer::Generated {
        len: LARGE,
        seed: 77,
    });
    let svc = proxying(&up);
    let progress = AtomicU64::new(0);
    // The download crawls (16 KiB per 40 ms, so about 20 s for the whole
    // body, longer than a capture may take to start and show a ping) until
    // the capture has shown its packets, then speeds up.
    let slow = AtomicBool::new(true);
    let hold = AtomicBool::new(false);
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            download(
                svc.port(),
                "/discover/big.bin",
                &hold,
                Duration::from_millis(40),
                &slow,
                &progress,
                Duration::from_secs(25),
            )
        });
        let crawl = Release(&slow);
        assert!(
            wait_for(Duration::from_secs(5), || {
                progress.load(Ordering::Relaxed) > 256 * 1024
            }),
            "download did not start"
        );
        let before = progress.load(Ordering::Relaxed);
        let mut c = ws::must_connect(svc.port(), &format!("netns={}", ns.inode()), &[]);
        c.wait_capturing(START_TIMEOUT);
        assert!(
            ping_self_until_seen(&mut c, &ns),
            "capture showed no ping while the download ran"
        );
        let after = progress.load(Ordering::Relaxed);
        assert!(
            after > before && (after as usize) < LARGE,
            "the download was not running alongside the capture ({before} then {after} of {LARGE} bytes)"
        );
        c.close(Duration::from_secs(5));
        drop(crawl);
        let d = t.join().unwrap();
        assert_eq!(d.status, 200);
        assert_eq!(d.received, LARGE);
        assert_eq!(d.checksum, fnv1a(&pattern(77, LARGE)), "body corrupted");
    });
    assert!(svc.wait_dumpcaps(0, Duration::from_secs(5)).is_empty());
}

#[test]
fn a_101_to_a_request_without_upgrade_gives_502_not_a_tunnel() {
    let up = Upstream::start(|_| Answer::Full {
        status: 101,
        headers: vec![
            ("Upgrade".into(), "websocket".into()),
            ("Connection".into(), "Upgrade".into()),
        ],
        body: b"bytes of some other protocol".to_vec(),
    });
    let svc = proxying(&up);
    let r = send_raw(
        svc.port(),
        b"GET /discover/mobyshark HTTP/1.1\r\nHost: f\r\n\r\n",
        true,
        RESPONSE_TIMEOUT,
    );
    println!("101 to a plain request: {} {:?}", r.status, r.body_text());
    assert_eq!(r.status, 502, "{}", r.body_text());
    assert!(
        !r.body_text().contains("other protocol"),
        "{}",
        r.body_text()
    );
    assert!(r.closed);
    assert_eq!(up.requests().len(), 1);
    assert_version_ok(svc.port());
}
