//! End-to-end tests of the rule that no client and no broken neighbour can
//! stall the loop or grow its memory: answers the service generates count
//! against the output bound, the parser rules a fuzzer holds us to (Host,
//! Content-Length, Sec-WebSocket-Key, 64-bit frame lengths), a stderr
//! nobody drains, an upstream that floods interim heads, a connection table
//! full of idle connections. Real parts throughout: the service binary, the
//! real `dumpcap` in namespaces made here, raw TCP clients, a stand-in
//! upstream. Every figure is printed; budgets are generous because the
//! machine is shared.
//!
//! Where a capture source runs and its life matters (stopped after a
//! protocol violation; a capture that must start in a full table) the
//! test runs for both engines (`engines!`). Single, and why: the rest is
//! about what the service parses and answers on its own (pongs, heads,
//! keys, interim heads, lookups, target arrays) or about its logger,
//! where a capture, if any, is only a witness; and a table full of
//! captures uses a stand-in program that never writes (nothing of a
//! source's kind matters there). The native engine's loop under load is
//! tests/native.rs's.

// The shared test kit (testkit/), by the name these tests have always used.
use packetflix_testkit as common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::http::{self, send_raw};
use common::latency::{baseline, timed_version, Prober};
use common::procs;
use common::rawws::{raw_capture, read_close, UPGRADE_HEADERS};
use common::ws;
use common::*;

const WAIT: Duration = Duration::from_secs(5);
/// How much the service's RSS may grow while a client pings without reading
/// (the issue's target): the output bound is 256 KiB plus one read.
const PING_RSS_BUDGET_KIB: u64 = 1024;
/// What the non-reading client tries to send.
const PING_BYTES: usize = 100 * 1024 * 1024;
/// How long the client keeps trying before the figure is taken.
const PING_TIME: Duration = Duration::from_secs(8);

fn connect(port: u16) -> TcpStream {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect")
}

/// A masked client ping frame carrying the 125 bytes a control frame may.
fn ping_frame() -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x89, 0x80 | 125];
    f.extend_from_slice(&mask);
    f.extend((0..125).map(|i| b'p' ^ mask[i % 4]));
    f
}

// ---- generated answers count against the output bound ----

#[test]
fn unread_pongs_do_not_grow_service_memory() {
    let ns = Netns::new();
    let svc = Service::start(&[]);
    let mut s = raw_capture(svc.port(), &format!("netns={}&nif=lo", ns.inode()));
    // The client never reads: small receive buffer so the service's socket
    // fills early and the queue, not the kernel, has to hold the pongs.
    common::upstream::small_buffers(&s);
    std::thread::sleep(Duration::from_millis(500));
    let before = procs::rss_kib(svc.pid()).expect("rss");
    let frame = ping_frame();
    let burst: Vec<u8> = frame
        .iter()
        .cycle()
        .take(frame.len() * 500)
        .copied()
        .collect();
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .expect("write timeout");
    let start = Instant::now();
    let mut sent = 0usize;
    let mut peak = before;
    while sent < PING_BYTES && start.elapsed() < PING_TIME {
        match s.write(&burst) {
            Ok(n) => sent += n,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
        peak = peak.max(procs::rss_kib(svc.pid()).unwrap_or(0));
    }
    std::thread::sleep(Duration::from_millis(300));
    peak = peak.max(procs::rss_kib(svc.pid()).unwrap_or(0));
    let growth = peak.saturating_sub(before);
    println!(
        "pings sent without reading: {} KiB of {} KiB tried in {:?}; service RSS {before} KiB -> peak {peak} KiB (+{growth} KiB, budget {PING_RSS_BUDGET_KIB} KiB)",
        sent / 1024,
        PING_BYTES / 1024,
        start.elapsed()
    );
    assert!(
        growth <= PING_RSS_BUDGET_KIB,
        "service RSS grew by {growth} KiB"
    );
    // The service stopped reading: far less than the whole flood got in.
    assert!(
        sent < PING_BYTES,
        "the service took all {sent} bytes of pings without the client reading"
    );
    // Still serving others while that client sits there.
    assert_eq!(http::version_status(svc.port()), Some(200));
}

// ---- parser rules, one end-to-end case each ----

#[test]
fn http11_request_without_host_or_with_two_gets_400() {
    let svc = Service::start(&[]);
    for (what, raw) in [
        ("no Host", "GET /version HTTP/1.1\r\nX-A: b\r\n\r\n"),
        (
            "two Host",
            "GET /version HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ),
    ] {
        let r = send_raw(svc.port(), raw.as_bytes(), true, WAIT);
        println!("{what}: {} {:?}", r.status, r.body_text());
        assert_eq!(r.status, 400, "{what}");
        assert!(r.body_text().contains("Host"), "{what}: {}", r.body_text());
        assert!(r.closed, "{what}: connection left open");
    }
    // HTTP/1.0 without Host is still served.
    let r = send_raw(svc.port(), b"GET /version HTTP/1.0\r\n\r\n", true, WAIT);
    assert_eq!(r.status, 200);
}

#[test]
fn invalid_or_conflicting_content_length_gets_400() {
    let svc = Service::start(&[]);
    for cl in [
        "Content-Length: 1\r\nContent-Length: 2",
        "Content-Length: 1x",
    ] {
        let raw = format!("GET /version HTTP/1.1\r\nHost: a\r\n{cl}\r\n\r\n");
        let r = send_raw(svc.port(), raw.as_bytes(), true, WAIT);
        println!("{cl:?}: {} {:?}", r.status, r.body_text());
        assert_eq!(r.status, 400, "{cl}");
        assert!(r.body_text().contains("Content-Length"));
        assert!(r.closed);
    }
}

#[test]
fn two_websocket_keys_get_400_and_no_capture() {
    let ns = Netns::new();
    let svc = Service::start(&[]);
    let raw = format!(
        "GET /capture?netns={} HTTP/1.1\r\nHost: a\r\n{UPGRADE_HEADERS}\
         Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n",
        ns.inode()
    );
    let r = send_raw(svc.port(), raw.as_bytes(), true, WAIT);
    println!("two keys: {} {:?}", r.status, r.body_text());
    assert_eq!(r.status, 400);
    assert!(r.body_text().contains("Sec-WebSocket-Key"));
    assert!(svc.captures("dumpcap").is_empty());
}

fn frame_length_with_top_bit_set_is_closed_with_1002(engine: Engine) {
    let ns = Netns::new();
    let svc = Service::start_engine(engine, &[]);
    let mut s = raw_capture(svc.port(), &format!("netns={}&nif=lo", ns.inode()));
    assert!(svc.wait_sources_in(&ns, 1, WAIT));
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 63).to_be_bytes());
    frame.extend_from_slice(&[9, 9, 9, 9]);
    s.write_all(&frame).expect("send frame");
    let code = read_close(&mut s, Duration::from_secs(15)).map(|(c, _)| c);
    println!("close code after a 2^63 frame length: {code:?}");
    assert_eq!(code, Some(1002));
    assert!(
        svc.wait_nothing_captures(&[&ns], Duration::from_secs(15)),
        "capture left running"
    );
}
engines!(frame_length_with_top_bit_set_is_closed_with_1002);

// ---- a stderr nobody drains ----

/// The service with its stderr a pipe this test holds and does not read
/// until the end. Killed and reaped on drop.
struct UndrainedStderr {
    child: std::process::Child,
    port: u16,
}

impl UndrainedStderr {
    fn start(args: &[&str]) -> UndrainedStderr {
        let port = common::service::free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_packetflix"))
            .arg("--port")
            .arg(port.to_string())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn packetflix");
        let svc = UndrainedStderr { child, port };
        assert!(
            wait_for(Duration::from_secs(10), || http::version_status(port)
                == Some(200)),
            "service did not start"
        );
        svc
    }

    /// Stops the service and reads everything it wrote to stderr.
    fn stop_and_read(&mut self) -> String {
        let mut err = self.child.stderr.take().expect("stderr pipe");
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = err.read_to_end(&mut all);
            String::from_utf8_lossy(&all).into_owned()
        });
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let exited = wait_for(Duration::from_secs(15), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        reader.join().unwrap_or_default()
    }
}

impl Drop for UndrainedStderr {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How long the heavy logging runs.
const LOG_FLOOD_TIME: Duration = Duration::from_secs(10);
/// Slowest `/version` answer accepted while the log floods (the target is
/// that it answers at all; a frozen loop would take the whole flood).
const FLOOD_VERSION_BUDGET: Duration = Duration::from_millis(1000);

#[test]
fn undrained_stderr_does_not_stall_captures_or_version_and_drops_are_reported() {
    let ns = Netns::new();
    let mut svc = UndrainedStderr::start(&["--debug", "--log-requests", "--log-headers"]);
    let port = svc.port;
    let mut c = ws::must_connect(port, &format!("netns={}&nif=lo", ns.inode()), &[]);
    c.wait_capturing(START_TIMEOUT);

    // Heavy logging: requests with many headers, each logged line by line.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut headers = String::new();
            for i in 0..40 {
                headers.push_str(&format!("X-Log-{i}: {}\r\n", "l".repeat(100)));
            }
            let req = format!("GET /nothing HTTP/1.1\r\nHost: pfx\r\n{headers}\r\n");
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_secs(1),
                ) else {
                    continue;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                for _ in 0..50 {
                    if s.write_all(req.as_bytes()).is_err() {
                        break;
                    }
                    let mut b = [0u8; 4096];
                    if !matches!(s.read(&mut b), Ok(n) if n > 0) {
                        break;
                    }
                    sent += 1;
                }
            }
            sent
        })
    };
    let start = Instant::now();
    let mut worst = Duration::ZERO;
    let mut answered = 0;
    let mut failed = 0;
    while start.elapsed() < LOG_FLOOD_TIME {
        match timed_version(port) {
            Some(d) => {
                worst = worst.max(d);
                answered += 1;
            }
            None => failed += 1,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let captured = ping_self_until_seen(&mut c, &ns);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let requests = flooder.join().expect("flooder");
    drop(c);
    let log = svc.stop_and_read();
    let report = log
        .lines()
        .rev()
        .find(|l| l.contains("log lines dropped"))
        .unwrap_or("")
        .to_string();
    println!(
        "{LOG_FLOOD_TIME:?} of logging into an undrained pipe: {requests} logged requests, /version answered {answered} times (failed {failed}), slowest {worst:?} (budget {FLOOD_VERSION_BUDGET:?}); capture still delivering: {captured}; {} bytes of log read afterwards; report: {report:?}",
        log.len()
    );
    assert_eq!(failed, 0, "/version went unanswered while stderr was full");
    assert!(answered > 0);
    assert!(worst < FLOOD_VERSION_BUDGET, "/version took {worst:?}");
    assert!(
        captured,
        "the capture stopped delivering while stderr was full"
    );
    assert!(
        requests > 200,
        "too little logging to fill the pipe: {requests} requests"
    );
    assert!(
        !report.is_empty(),
        "no dropped-lines report once stderr drained"
    );
}

// ---- an upstream that floods interim heads ----

/// What the flooding upstream sends: 4 MiB of `100 Continue` heads.
const INTERIM_FLOOD_BYTES: usize = 4 * 1024 * 1024;
/// `/version` budget while the loop is loaded (the issue's figure), on
/// top of the slowest answer of the idle service in the same run.
const VERSION_BUDGET: Duration = Duration::from_millis(100);
/// How far past the target a loaded machine (the whole suite runs in
/// parallel on shared cores) may push an answer before the test fails; a
/// stalled loop (seconds, before these bounds) still fails it.
const VERSION_MARGIN: u32 = 3;

/// A stand-in discovery service that answers every request with a flood of
/// interim heads and nothing else. Stops (and its threads end) on drop.
struct InterimFlood {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl InterimFlood {
    fn start() -> InterimFlood {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut flooded = 0;
            while !st.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                let mut b = [0u8; 4096];
                let _ = s.read(&mut b);
                let head = b"HTTP/1.1 100 Continue\r\n\r\n";
                let block: Vec<u8> = head
                    .iter()
                    .cycle()
                    .take(head.len() * 4096)
                    .copied()
                    .collect();
                let mut sent = 0;
                while sent < INTERIM_FLOOD_BYTES {
                    match s.write(&block) {
                        Ok(n) if n > 0 => sent += n,
                        _ => break,
                    }
                }
                flooded += 1;
            }
            flooded
        });
        InterimFlood {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for InterimFlood {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn interim_head_flood_from_upstream_gets_502_and_the_loop_serves_on() {
    let up = InterimFlood::start();
    let svc = Service::with_discovery(up.port, 10, &["--proxy-discovery"]);
    let port = svc.port();
    let idle = baseline(port);
    let prober = Prober::start(port);
    let t = Instant::now();
    let mut s = connect(port);
    s.write_all(b"GET /discover/mobyshark HTTP/1.1\r\nHost: f\r\n\r\n")
        .expect("send");
    let got = http::read_to_eof(&mut s, Duration::from_secs(10));
    let took = t.elapsed();
    // A few probes after the flood too.
    std::thread::sleep(Duration::from_millis(200));
    let (worst, _) = prober.finish();
    // The proxy passes the first interim heads on (RFC 9110 15.2), up to
    // its cap; the final answer follows them.
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut rest = &got.bytes[..];
    let mut passed = 0;
    while rest.starts_with(interim) {
        rest = &rest[interim.len()..];
        passed += 1;
    }
    let text = String::from_utf8_lossy(rest);
    println!(
        "interim-head flood: {passed} interim heads passed on, then {:?} in {took:?}; slowest /version meanwhile {worst:?} (target {VERSION_BUDGET:?}, failing past {VERSION_MARGIN}x + idle {idle:?})",
        text.lines().next().unwrap_or("")
    );
    assert!(got.closed, "connection left open after the flood");
    assert!(text.starts_with("HTTP/1.1 502"), "{text}");
    assert!(text.contains("interim"), "{text}");
    assert!(
        passed <= packetflix::proto::exchange::MAX_INTERIM,
        "{passed} interim heads passed on"
    );
    assert!(
        worst < VERSION_MARGIN * VERSION_BUDGET + idle,
        "/version took {worst:?}"
    );
}

// ---- a full connection table ----

fn full_table_of_idle_connections_displaces_the_oldest_and_a_capture_starts(engine: Engine) {
    const MAX: usize = 6;
    let ns = Netns::new();
    let svc = Service::start_engine(engine, &["--max-connections", &MAX.to_string()]);
    let port = svc.port();
    assert_eq!(http::version_status(port), Some(200));
    let mut idle: Vec<TcpStream> = Vec::new();
    for i in 0..MAX {
        let mut s = http::idle_conn(port);
        assert!(
            http::is_silent(&mut s, Duration::from_millis(100)),
            "idle connection {i} was not held"
        );
        idle.push(s);
    }
    // The table is full of connections that sent nothing: a capture still
    // starts, and so does a /version, each taking the oldest idle slot.
    let t = Instant::now();
    let mut c = ws::must_connect(port, &format!("netns={}&nif=lo", ns.inode()), &[]);
    c.wait_capturing(START_TIMEOUT);
    let capture_took = t.elapsed();
    let version = timed_version(port);
    let mut closed = Vec::new();
    for (i, s) in idle.iter_mut().enumerate() {
        if http::read_to_eof(s, Duration::from_millis(200)).closed {
            closed.push(i);
        }
    }
    println!(
        "{} engine: table of {MAX} idle connections: capture capturing after {capture_took:?}, /version {version:?}; idle connections closed to make room: {closed:?}",
        engine.name()
    );
    assert!(version.is_some(), "/version not served with a full table");
    assert!(ping_self_until_seen(&mut c, &ns), "capture saw nothing");
    // The two oldest made room; the younger ones are still open.
    assert_eq!(closed, vec![0, 1]);
}
engines!(full_table_of_idle_connections_displaces_the_oldest_and_a_capture_starts);

#[test]
fn full_table_of_working_connections_answers_503() {
    const MAX: usize = 3;
    let ns = Netns::new();
    let sleeper = Scratch::script("sleeper.sh", "exec sleep 30\n");
    let svc = Service::start(&[
        "--max-connections",
        &MAX.to_string(),
        "--capture-program",
        sleeper.path(),
    ]);
    let port = svc.port();
    let q = format!("netns={}&nif=lo", ns.inode());
    let _captures: Vec<Client> = (0..MAX).map(|_| ws::must_connect(port, &q, &[])).collect();
    assert!(wait_for(WAIT, || svc.captures("sleep").len() == MAX));
    // Nothing to displace: a new connection is refused with a reason.
    let mut s = http::idle_conn(port);
    let r = http::read_to_eof(&mut s, Duration::from_secs(3));
    println!("table full of captures: {:?} {:?}", r.status(), r.body());
    assert_eq!(r.status(), Some(503));
    assert!(r.closed);
    assert!(r.body().contains(&format!("maximum of {MAX} connections")));
}

// ---- namespace lookups on a host with many processes ----

/// Extra processes the test runs, so that a scan of every process's
/// namespace costs what it does on a busy host.
const EXTRA_PROCESSES: usize = 3000;
/// Requests for inodes no namespace has, sent at once.
const UNKNOWN_INODE_REQUESTS: usize = 100;

/// `sleep` children, each bounded in time, killed and reaped on drop.
struct Sleepers(Vec<std::process::Child>);

impl Sleepers {
    fn start(n: usize) -> Sleepers {
        let mut s = Sleepers(Vec::with_capacity(n));
        for _ in 0..n {
            let c = std::process::Command::new("sleep")
                .arg("120")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn sleep");
            s.0.push(c);
        }
        s
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

#[test]
fn unknown_inode_lookups_on_a_busy_host_do_not_stall_version() {
    let sleepers = Sleepers::start(EXTRA_PROCESSES);
    let svc = Service::start(&["--debug"]);
    let port = svc.port();
    let idle = baseline(port);
    let prober = Prober::start(port);
    let t = Instant::now();
    let base = 4_000_000_000u64 + u64::from(std::process::id()) * 1000;
    let clients: Vec<_> = (0..UNKNOWN_INODE_REQUESTS as u64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = raw_capture(port, &format!("netns={}", base + i));
                read_close(&mut s, Duration::from_secs(30))
            })
        })
        .collect();
    let closes: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().unwrap_or(None))
        .collect();
    let took = t.elapsed();
    let (worst, probes) = prober.finish();
    let refused = closes
        .iter()
        .filter(|c| {
            c.as_ref()
                .is_some_and(|(code, why)| *code == 1008 && why.contains("no network namespace"))
        })
        .count();
    let scans = svc.stderr().matches("namespace scan:").count();
    println!(
        "{UNKNOWN_INODE_REQUESTS} unknown-inode requests with {} extra processes: {refused} refused in {took:?} by {scans} scan(s); /version slowest {worst:?} over {probes} probes (target {VERSION_BUDGET:?}, failing past {VERSION_MARGIN}x + idle {idle:?})",
        sleepers.0.len()
    );
    drop(sleepers);
    assert_eq!(refused, UNKNOWN_INODE_REQUESTS);
    assert!(
        worst < VERSION_MARGIN * VERSION_BUDGET + idle,
        "/version took {worst:?}"
    );
    assert!(
        (1..UNKNOWN_INODE_REQUESTS / 4).contains(&scans),
        "{scans} scans"
    );
}

// ---- target arrays refused before they are parsed ----

/// Concurrent requests each carrying a 1 MiB target array (the issue's
/// figures): 51,200 small objects, about 19 bytes each.
const ARRAY_REQUESTS: usize = 60;
const ARRAY_ELEMENTS: usize = 51_200;
/// `/version` budget while they are read and refused (the issue's figure).
const ARRAY_VERSION_BUDGET: Duration = Duration::from_millis(200);

/// An upgrade whose `Clustershark-Container` is `body`; returns the close
/// the service sends after its 101, or `None`.
fn upgrade_with_container(port: u16, body: &str) -> Option<(u16, String)> {
    let mut s = connect(port);
    let req = format!(
        "GET /capture HTTP/1.1\r\nHost: pfx\r\n{}Clustershark-Container: {body}\r\n\r\n",
        common::rawws::UPGRADE_HEADERS
    );
    s.write_all(req.as_bytes()).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return None;
    }
    read_close(&mut s, Duration::from_secs(30))
}

/// `requests` concurrent upgrades with `body` as their target header, while
/// `/version` is probed: (slowest probe, probes, time, how many were closed
/// with 1008 for too many targets).
fn flood_of_heads(port: u16, body: &str, requests: usize) -> (Duration, usize, Duration, usize) {
    let body = std::sync::Arc::new(body.to_string());
    let prober = Prober::start(port);
    let t = Instant::now();
    let clients: Vec<_> = (0..requests)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || upgrade_with_container(port, &body))
        })
        .collect();
    let refused = clients
        .into_iter()
        .map(|c| c.join().unwrap_or(None))
        .filter(|c| {
            c.as_ref()
                .is_some_and(|(code, why)| *code == 1008 && why.contains("more than 16 targets"))
        })
        .count();
    let took = t.elapsed();
    let (worst, probes) = prober.finish();
    (worst, probes, took, refused)
}

#[test]
fn many_large_target_arrays_are_refused_without_stalling_version() {
    let svc = Service::start(&[]);
    let port = svc.port();
    let element = r#"{"netns":4026531}"#;
    let array = format!("[{}]", vec![element; ARRAY_ELEMENTS].join(","));
    // The same head size as padding behind a short array that is refused
    // for the same reason: what reading and refusing such a head costs
    // without the array's elements.
    let short = format!("[{}]", vec![element; 17].join(","));
    let padded = format!(
        "{short}\r\nX-Pad: {}",
        "p".repeat(array.len() - short.len())
    );
    let idle = baseline(port);
    let (pad_worst, pad_probes, pad_took, pad_refused) =
        flood_of_heads(port, &padded, ARRAY_REQUESTS);
    let (worst, probes, took, refused) = flood_of_heads(port, &array, ARRAY_REQUESTS);
    println!(
        "{ARRAY_REQUESTS} concurrent requests with a {} KiB array of {ARRAY_ELEMENTS} targets: {refused} refused in {took:?}; /version slowest {worst:?} over {probes} probes (budget {ARRAY_VERSION_BUDGET:?}, failing past {VERSION_MARGIN}x + idle {idle:?}); the same heads as 17 targets and padding: {pad_refused} refused in {pad_took:?}, /version slowest {pad_worst:?} over {pad_probes} probes",
        array.len() / 1024
    );
    assert_eq!(refused, ARRAY_REQUESTS);
    assert_eq!(pad_refused, ARRAY_REQUESTS);
    assert!(svc.children().is_empty(), "a capture started");
    assert!(
        worst < VERSION_MARGIN * ARRAY_VERSION_BUDGET + idle,
        "/version took {worst:?}"
    );
}
