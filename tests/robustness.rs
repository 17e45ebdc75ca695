//! End-to-end tests of the service's limits and of how it holds up under
//! abuse and load: connection and capture limits, request-head limits,
//! parameter limits and interface-name rules, a client that stops reading,
//! slowloris, shutdown with live captures, a soak of capture cycles,
//! descriptor exhaustion, and running as a non-root user with file
//! capabilities. Everything is real: the service binary, `dumpcap`,
//! namespaces made here, websocket and raw TCP clients; the one stand-in is
//! a synthetic capture program where a test needs more data, faster, than
//! real traffic gives. Every wait is bounded; the slowest test (the soak)
//! stops after [`SOAK_TIME`].
//!
//! The tests where a capture source runs and its life matters (the
//! capture limit, shutdown, the soak, a non-root service) run for both
//! engines (`engines!`). Single, and why:
//! - HTTP heads, slowloris, descriptor exhaustion, TCP keepalive on the
//!   client's connection, refusals decided before a source starts
//!   (oversized parameters, bad interface names, no capabilities: the
//!   same check for both engines, shown with a recording capture
//!   program): no capture source is involved, or its kind does not
//!   matter;
//! - the capture program itself, dumpcap only: the synthetic program that
//!   outruns a slow client (the native engine's kernel drops under a slow
//!   client are in tests/native.rs), one that misses a SIGTERM.

// The shared test kit (testkit/), by the name these tests have always used.
use packetflix_testkit as common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::http::{self, send_raw};
use common::pcapgen::{self, StreamCheck};
use common::procs::{self, ProcStat};
use common::ws::{must_connect, read_checked};
use common::*;
use nix::sys::signal::Signal;

/// The marker that starts the target document in the first SHB comment
/// (API.md: clients search for it byte for byte).
const TARGET_MARKER: &str = "---\n# capture target information\n";
/// What a websocket upgrade request needs besides its path, for sending it
/// over raw TCP (the key is RFC 6455's example).
const UPGRADE_HEADERS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

fn netns_q(ns: &Netns) -> String {
    format!("netns={}", ns.inode())
}

/// Starts a capture and waits until the capture program is capturing.
fn start(port: u16, query: &str) -> Client {
    let mut c = must_connect(port, query, &[]);
    c.wait_capturing(START_TIMEOUT);
    c
}

/// Closes a capture from the client side and waits for the whole exchange.
fn close_capture(c: &mut Client) {
    let reply = c.close(Duration::from_secs(15));
    assert!(
        reply.is_some(),
        "no close answer: error={:?}",
        c.capture.error
    );
    assert!(c.wait_tcp_closed(Duration::from_secs(5)));
}

/// A capture program that records its arguments, one per line, into
/// `args`, then waits to be stopped.
fn recorder(args: &Scratch) -> Scratch {
    Scratch::script(
        "recorder.sh",
        &format!("printf '%s\\n' \"$@\" > {}\nexec sleep 30\n", args.path()),
    )
}

// ---- limits ----

fn capture_limit_answers_503_before_the_upgrade_until_a_capture_ends(engine: Engine) {
    let ns = Netns::new();
    let svc = Service::start_engine(engine, &["--max-captures", "2"]);
    let port = svc.port();
    let q = netns_q(&ns);
    let mut c1 = start(port, &q);
    let _c2 = start(port, &q);
    assert!(svc.wait_sources_in(&ns, 2, Duration::from_secs(5)));

    let req = format!("GET /capture?{q} HTTP/1.1\r\nHost: pfx\r\n{UPGRADE_HEADERS}\r\n");
    let r = send_raw(port, req.as_bytes(), true, Duration::from_secs(5));
    assert_eq!(r.status, 503, "third capture: {}", r.body_text());
    assert!(r.closed, "the refused capture's connection stayed open");
    assert!(
        r.body_text().contains("maximum of 2 captures"),
        "no reason in the 503: {:?}",
        r.body_text()
    );
    assert!(r.header("Upgrade").is_none() && r.header("Sec-WebSocket-Accept").is_none());
    // Give a wrongly started source time to show.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        svc.sources_in(&ns),
        2,
        "a source was started for the refused capture"
    );

    close_capture(&mut c1);
    let mut c3 = start(port, &q);
    assert!(
        ping_self_until_seen(&mut c3, &ns),
        "new capture saw nothing"
    );
}
engines!(capture_limit_answers_503_before_the_upgrade_until_a_capture_ends);

#[test]
fn oversized_heads_and_too_many_headers_get_431_and_the_service_serves_on() {
    let svc = Service::start(&["--max-head-bytes", "1024", "--max-headers", "8"]);
    let port = svc.port();
    let head = |extra: &str| format!("GET /version HTTP/1.1\r\nHost: pfx\r\n{extra}\r\n");
    let wait = Duration::from_secs(5);

    // Within both limits (8 headers, about 900 bytes): served.
    let mut fits = String::new();
    for i in 0..7 {
        fits.push_str(&format!("X-Fill-{i}: {}\r\n", "f".repeat(110)));
    }
    assert!(head(&fits).len() < 1024);
    let r = send_raw(port, head(&fits).as_bytes(), false, wait);
    assert_eq!(r.status, 200, "a head within the limits was refused");

    // One header making the head 2000 bytes (the default limit would take it).
    let big = format!("X-Big: {}\r\n", "b".repeat(2000));
    let r = send_raw(port, head(&big).as_bytes(), true, wait);
    assert_eq!(r.status, 431, "oversized head: {}", r.body_text());
    assert!(r.closed, "connection left open after 431");
    assert!(
        r.body_text().contains("1024 bytes"),
        "431 reason does not name the limit in force: {:?}",
        r.body_text()
    );

    // An oversized head that never ends is cut as soon as it is too big,
    // not at the head deadline.
    let t = Instant::now();
    let endless = format!("GET /version HTTP/1.1\r\nX-Big: {}", "e".repeat(1100));
    let r = send_raw(port, endless.as_bytes(), true, wait);
    assert_eq!(r.status, 431, "unfinished oversized head");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "cut only after {:?}",
        t.elapsed()
    );

    // Nine short headers (the default limit would take them).
    let mut many = String::new();
    for i in 0..8 {
        many.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    let r = send_raw(port, head(&many).as_bytes(), true, wait);
    assert_eq!(r.status, 431, "too many headers: {}", r.body_text());
    assert!(r.closed);
    assert!(
        r.body_text().contains("8 request headers"),
        "431 reason does not name the header limit in force: {:?}",
        r.body_text()
    );

    let r = http::get(port, "/version");
    assert_eq!(r.status, 200, "service stopped serving after 431s");
}

#[test]
fn oversized_target_json_and_filter_are_refused_with_a_reason() {
    let ns = Netns::new();
    let args = Scratch::new("args");
    let prog = recorder(&args);
    let svc = Service::start(&[
        "--capture-program",
        prog.path(),
        "--max-target-json",
        "64",
        "--max-filter",
        "16",
    ]);
    let port = svc.port();
    let small = format!("{{\"netns\":{}}}", ns.inode());
    let big = format!(
        "{{\"netns\":{},\"name\":\"{}\"}}",
        ns.inode(),
        "n".repeat(60)
    );
    assert!(small.len() <= 64 && big.len() > 64);

    let reason = expect_refusal(port, &format!("container={}", urlencode(&big)), &[]);
    assert!(reason.contains("more than the 64 allowed"), "{reason}");
    let reason = expect_refusal(port, "", &[("Clustershark-Container", &big)]);
    assert!(reason.contains("more than the 64 allowed"), "{reason}");
    let long_filter = "icmp or tcp or arp"; // 18 bytes
    let reason = expect_refusal(
        port,
        &format!("{}&filter={}", netns_q(&ns), urlencode(long_filter)),
        &[],
    );
    assert!(reason.contains("longer than 16 bytes"), "{reason}");
    let reason = expect_refusal(port, &netns_q(&ns), &[("Clustershark-Filter", long_filter)]);
    assert!(reason.contains("longer than 16 bytes"), "{reason}");
    assert!(svc.children().is_empty() && args.read().is_empty());

    // Within both limits the capture starts, with the filter as one argument.
    let mut c = must_connect(
        port,
        &format!(
            "container={}&filter={}",
            urlencode(&small),
            urlencode("icmp or arp")
        ),
        &[],
    );
    assert!(
        wait_for(Duration::from_secs(5), || args
            .read()
            .contains("-f\nicmp or arp\n")),
        "capture within the limits did not start: args {:?}",
        args.read()
    );
    close_capture(&mut c);
}

#[test]
fn bad_interface_names_are_refused_and_no_capture_program_starts() {
    let ns = Netns::new();
    let args = Scratch::new("args");
    let prog = recorder(&args);
    let svc = Service::start(&["--capture-program", prog.path()]);
    let port = svc.port();
    let q = netns_q(&ns);

    let too_long = "abcdefghijklmnop"; // 16 bytes; IFNAMSIZ allows 15
    for (nif, why) in [
        (too_long, "longer than 15 bytes"),
        ("lo/-i", "must not start with '-'"),
        ("-w", "must not start with '-'"),
        ("eth 0", "whitespace"),
        ("eth\t0", "whitespace"),
        ("lo//eth0", "empty interface name"),
        ("/lo", "empty interface name"),
    ] {
        let reason = expect_refusal(port, &format!("{q}&nif={}", urlencode(nif)), &[]);
        assert!(reason.contains(why), "nif {nif:?}: {reason}");
    }
    let reason = expect_refusal(port, &q, &[("Clustershark-Nif", "lo/e th0")]);
    assert!(reason.contains("whitespace"), "{reason}");
    // A '/' cannot hide in nif (it separates names), but the container
    // description lists names as JSON strings.
    for bad in ["a/b", "e th0", too_long] {
        let target = serde_json::json!({"netns": ns.inode(), "network-interfaces": ["lo", bad]});
        let reason = expect_refusal(
            port,
            &format!("container={}", urlencode(&target.to_string())),
            &[],
        );
        assert!(
            reason.contains("network-interfaces"),
            "target names {bad:?}: {reason}"
        );
    }
    assert!(
        svc.children().is_empty(),
        "capture program running: {:?}",
        svc.children()
    );
    assert!(
        args.read().is_empty(),
        "capture program ran: {:?}",
        args.read()
    );

    // A name starting with '-' is a valid Linux name, so a container may
    // list one; it is left out rather than passed where it reads as an option.
    let target = serde_json::json!({"netns": ns.inode(), "network-interfaces": ["-i", "lo"]});
    let mut c = must_connect(
        port,
        &format!("container={}", urlencode(&target.to_string())),
        &[],
    );
    assert!(
        wait_for(Duration::from_secs(5), || !args.read().is_empty()),
        "capture with a listed '-i' did not start"
    );
    assert_eq!(args.read(), "-w\n-\n-n\n-q\n-i\nlo\n");
    close_capture(&mut c);

    // The longest valid name passes the rules; it is then refused only
    // because the namespace has no such interface.
    let longest = "abcdefghijklmno";
    let reason = expect_refusal(port, &format!("{q}&nif=lo/{longest}"), &[]);
    assert!(
        reason.contains(&format!("no interface \"{longest}\"")),
        "{reason}"
    );
    // Once it exists, the program gets it.
    let peer = format!("pfxpeer{}", next_id());
    let made = ns.exec(&[
        "ip", "link", "add", longest, "type", "veth", "peer", "name", &peer,
    ]);
    assert!(made.status.success(), "{made:?}");
    let mut c = must_connect(port, &format!("{q}&nif=lo/{longest}"), &[]);
    assert!(
        wait_for(Duration::from_secs(5), || args
            .read()
            .contains(&format!("-i\nlo\n-i\n{longest}\n"))),
        "args {:?}",
        args.read()
    );
    close_capture(&mut c);
}

// ---- a client that stops reading ----

/// Captured bytes of each synthetic packet; with the block framing each EPB
/// is exactly 4 KiB.
const SYNTH_PAYLOAD: usize = 4064;
/// The comment the synthetic SHB carries before the service edits it.
const SYNTH_COMMENT: &str = "synthetic capture for the robustness tests";
/// 160 MiB of packets: far more than the kernel's socket and pipe buffers
/// hold (tcp_wmem/rmem max here are 4 and 32 MiB), so a service without a
/// bound on its queue would have to hold most of it.
const SYNTH_PACKETS: u64 = 40 * 1024;
/// How long the client reads nothing.
const STALL: Duration = Duration::from_secs(3);
/// The service's queue stops growing at 256 KiB (conn::HIGH_WATER); the
/// service itself takes a few MiB. 64 MiB is far above both and far below
/// what an unbounded queue would hold after the stall.
const RSS_BOUND_KIB: u64 = 64 * 1024;

#[test]
fn slow_client_keeps_service_memory_bounded_then_gets_the_stream_intact() {
    let synth = pcapgen::Settings {
        comment: Some(SYNTH_COMMENT.into()),
        ..pcapgen::Settings::stream(SYNTH_PAYLOAD, SYNTH_PACKETS)
    };
    let ns = Netns::new();
    let svc = Launch::new()
        .args(&["--capture-program", pcapgen::PROGRAM])
        .envs(&synth.env())
        .start();
    let pid = svc.pid();
    let rss = || procs::rss_kib(pid).expect("service RSS");
    let before = rss();

    let mut c = must_connect(svc.port(), &netns_q(&ns), &[]);
    let mut peak = before;
    let stall_end = Instant::now() + STALL;
    while Instant::now() < stall_end {
        peak = peak.max(rss());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !svc.children().is_empty(),
        "the capture program finished while nobody read: nothing was held back"
    );
    assert!(
        peak < RSS_BOUND_KIB,
        "service RSS reached {peak} KiB (from {before} KiB) while the client did not read"
    );

    let mut check = StreamCheck::new(false);
    let reading = Instant::now();
    let mut messages = 0u64;
    let read = read_checked(&mut c.ws, &mut check, Duration::from_secs(90), |n| {
        messages = n;
        if n % 256 == 0 {
            peak = peak.max(rss());
        }
    });
    let close =
        read.unwrap_or_else(|e| panic!("stream broke after {} packets: {e}", check.packets()));
    eprintln!(
        "slow client: RSS {before} KiB before, peak {peak} KiB; then {} bytes in {messages} messages in {:?}",
        check.bytes(),
        reading.elapsed()
    );
    assert_eq!(check.error(), None, "stream damaged");
    let (code, reason) = close.expect("no close frame after the stream");
    assert_eq!(code, 1000, "capture ended with {code} {reason:?}");
    assert_eq!(check.packets(), SYNTH_PACKETS, "packets missing at the end");
    assert_eq!(check.finish(), Ok(()), "stream ends mid-block");
    let comments = check.shb_comments().expect("no SHB");
    let first = comments.first().expect("SHB lost its comment");
    assert!(
        first.starts_with(SYNTH_COMMENT) && first.contains(TARGET_MARKER),
        "first SHB comment not edited: {first:?}"
    );
    assert!(peak < RSS_BOUND_KIB, "service RSS reached {peak} KiB");
}

// ---- slowloris ----

/// A request head long enough to take half a minute at one byte a second.
const SLOW_HEAD: &[u8] =
    b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris/1.0\r\n\r\n";

/// Sends [`SLOW_HEAD`] a byte a second until the service closes the
/// connection (or 20 s pass). Returns how long the service took, what it
/// sent, and how many bytes went out.
fn trickle(port: u16) -> (Duration, http::Received, usize) {
    let mut s = http::idle_conn(port);
    let t = Instant::now();
    for (sent, b) in SLOW_HEAD.iter().enumerate() {
        if s.write_all(&[*b]).is_err() {
            let r = http::read_to_eof(&mut s, Duration::from_millis(100));
            return (t.elapsed(), r, sent);
        }
        let r = http::read_to_eof(&mut s, Duration::from_secs(1));
        if r.closed || !r.bytes.is_empty() || t.elapsed() > Duration::from_secs(20) {
            let more = http::read_to_eof(&mut s, Duration::from_secs(1));
            let bytes = [r.bytes, more.bytes].concat();
            return (
                t.elapsed(),
                http::Received {
                    bytes,
                    closed: r.closed || more.closed,
                },
                sent + 1,
            );
        }
    }
    panic!("the whole slow head went out: the service never cut it");
}

#[test]
fn slowloris_is_cut_at_the_head_deadline_while_others_are_served() {
    let svc = Service::start(&[]);
    let port = svc.port();
    let slow: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || trickle(port)))
        .collect();
    let t = Instant::now();
    let mut served = 0;
    while slow.iter().any(|h| !h.is_finished()) && t.elapsed() < Duration::from_secs(25) {
        let asked = Instant::now();
        assert_eq!(
            http::version_status(port),
            Some(200),
            "served {served} so far"
        );
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "a request took {:?} beside slow clients",
            asked.elapsed()
        );
        served += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(served >= 10, "only {served} requests served meanwhile");
    for h in slow {
        let (took, r, sent) = h.join().unwrap();
        assert!(r.closed, "slow connection not closed after {took:?}");
        assert!(
            (Duration::from_secs(9)..=Duration::from_millis(12_500)).contains(&took),
            "slow connection closed after {took:?} (head deadline 10 s)"
        );
        assert!(sent < SLOW_HEAD.len());
        assert_eq!(
            r.status(),
            Some(408),
            "got {:?}",
            String::from_utf8_lossy(&r.bytes)
        );
    }
}

// ---- shutdown ----

/// Several live captures in two namespaces; `sig` to the service.
fn shutdown_with_live_captures(engine: Engine, sig: Signal) {
    let n1 = Netns::new();
    let n2 = Netns::new();
    let inodes = [n1.inode(), n2.inode()];
    let mut svc = Launch::default().engine(engine).start();
    let port = svc.port();
    let mut clients = [
        start(port, &netns_q(&n1)),
        start(port, &netns_q(&n1)),
        start(port, &netns_q(&n2)),
    ];
    assert!(
        svc.wait_sources_in(&n1, 2, Duration::from_secs(5))
            && svc.wait_sources_in(&n2, 1, Duration::from_secs(5)),
        "expected 3 {} sources: children {:?}",
        engine.name(),
        svc.children()
    );
    let programs = match engine {
        Engine::Dumpcap => 3,
        Engine::Native => 0,
    };
    assert_eq!(procs::in_namespaces("dumpcap", &inodes).len(), programs);
    assert_eq!(dumpcaps_of(&svc).len(), programs);
    let descendants = procs::descendants(svc.pid());
    // The service's rings in the namespaces (none with dumpcap: its
    // sockets are its own).
    let rings: Vec<u64> = [&n1, &n2]
        .iter()
        .flat_map(|ns| procs::packet_socket_inodes(&ns.path()))
        .filter(|i| procs::socket_inodes(svc.pid()).contains(i))
        .collect();
    assert_eq!(rings.len(), 3 - programs);

    svc.signal(sig);
    for (i, c) in clients.iter_mut().enumerate() {
        let close = c.read_to_close(Duration::from_secs(15));
        let (code, reason) = close.unwrap_or_else(|| {
            panic!("client {i} got no close frame: error={:?}", c.capture.error)
        });
        assert_eq!(code, 1001, "client {i}: {reason:?}");
        assert!(reason.contains("shutting down"), "client {i}: {reason:?}");
        // The rest of each stream came, to the statistics at its end.
        let p = c.capture.pcapng();
        assert_eq!(p.complete_len, c.capture.bytes.len(), "client {i}");
        assert_eq!(
            p.check_final_isbs(engine.isb_resolution()),
            Ok(()),
            "client {i}"
        );
        // Our close answer goes out; the service then closes TCP.
        assert!(c.wait_tcp_closed(Duration::from_secs(5)), "client {i}");
    }
    // Every client answered, so the service need not wait out its close
    // deadline (5 s): it exits at once.
    let status = svc
        .wait_exit(Duration::from_secs(3))
        .unwrap_or_else(|| panic!("service did not exit after {sig}"));
    assert_eq!(status.code(), Some(0), "service exit after {sig}: {status}");
    for d in &descendants {
        assert!(!procs::still_there(d), "{d:?} outlived the service");
    }
    let left = procs::in_namespaces("dumpcap", &inodes);
    assert!(
        left.is_empty(),
        "dumpcap left in the test namespaces: {left:?}"
    );
    let left: Vec<u64> = [&n1, &n2]
        .iter()
        .flat_map(|ns| procs::packet_socket_inodes(&ns.path()))
        .filter(|i| rings.contains(i))
        .collect();
    assert!(
        left.is_empty(),
        "rings left in the test namespaces: {left:?}"
    );
}

fn dumpcaps_of(svc: &Service) -> Vec<ProcStat> {
    svc.children()
        .into_iter()
        .filter(|p| p.comm == "dumpcap" && p.state != 'Z')
        .collect()
}

fn sigterm_closes_live_captures_with_1001_and_leaves_no_child(engine: Engine) {
    shutdown_with_live_captures(engine, Signal::SIGTERM);
}
engines!(sigterm_closes_live_captures_with_1001_and_leaves_no_child);

fn sigint_closes_live_captures_with_1001_and_leaves_no_child(engine: Engine) {
    shutdown_with_live_captures(engine, Signal::SIGINT);
}
engines!(sigint_closes_live_captures_with_1001_and_leaves_no_child);

// ---- a lost SIGTERM ----

#[test]
fn capture_program_that_misses_a_sigterm_is_stopped_by_the_next_one() {
    // Like dumpcap while it starts up: the first SIGTERM is noted and lost.
    let log = Scratch::new("terms");
    let ready = Scratch::new("trap-set");
    let prog = Scratch::script(
        "deaf-once.sh",
        &format!(
            "n=0\ntrap 'n=$((n+1)); echo TERM >> {log}; [ $n -ge 2 ] && exit 0' TERM\n\
             : > {ready}\nwhile :; do sleep 0.1; done\n",
            log = log.path(),
            ready = ready.path()
        ),
    );
    let ns = Netns::new();
    let svc = Service::start(&["--capture-program", prog.path()]);
    let mut c = must_connect(svc.port(), &netns_q(&ns), &[]);
    // A SIGTERM before the trap is set would end the shell at once: the
    // client closes only once the program is listening for it.
    assert!(wait_for(Duration::from_secs(5), || std::path::Path::new(
        ready.path()
    )
    .exists()));
    let t = Instant::now();
    let reply = c.close(Duration::from_secs(15));
    let took = t.elapsed();
    assert!(reply.is_some(), "no close answer: {:?}", c.capture.error);
    assert_eq!(log.read(), "TERM\nTERM\n", "SIGTERMs the program saw");
    // The kill deadline is 10 s; a repeated SIGTERM comes within about 1 s.
    assert!(
        took < Duration::from_secs(5),
        "close answered after {took:?}"
    );
    assert!(c.wait_tcp_closed(Duration::from_secs(5)));
    assert!(svc.children().is_empty());
    assert!(
        !svc.stderr().contains("killing it"),
        "the program was killed instead"
    );
}

// ---- soak ----

/// Cycles in the soak, spread over [`SOAK_CLIENTS`] parallel clients.
const SOAK_CYCLES: usize = 300;
const SOAK_WARMUP: usize = 24;
const SOAK_CLIENTS: usize = 4;
/// The soak stops starting cycles after this long, done or not.
const SOAK_TIME: Duration = Duration::from_secs(60);
/// Fewer cycles than this in [`SOAK_TIME`] is not a soak.
const SOAK_MIN_CYCLES: usize = 150;
/// Descriptors the service may hold beyond its count after the warm-up
/// (e.g. a connection whose close is still in flight when sampled).
const FD_SLACK: usize = 2;
/// Mappings the service may hold beyond its count after the warm-up (the
/// allocator maps and unmaps as it likes; a leaked ring is one each, so
/// 276 cycles leaking would be far past this).
const MAP_SLACK: usize = 8;

/// One connect/capture/close cycle; the kind rotates through the ways a
/// capture can end.
fn soak_cycle(port: u16, q: &str, i: usize) -> Result<(), String> {
    match i % 4 {
        // Capture running, client closes.
        0 => {
            let mut c = start(port, q);
            c.close(Duration::from_secs(10))
                .ok_or_else(|| format!("cycle {i}: no close answer"))?;
            if !c.wait_tcp_closed(Duration::from_secs(5)) {
                return Err(format!("cycle {i}: TCP left open"));
            }
        }
        // Capture running, connection breaks without a close frame.
        1 => start(port, q).drop_tcp(),
        // Client closes before the capture program has produced anything.
        2 => {
            let mut c = must_connect(port, q, &[]);
            c.close(Duration::from_secs(10))
                .ok_or_else(|| format!("cycle {i}: no close answer"))?;
        }
        // Refused: an inode no namespace has.
        _ => {
            let reason = expect_refusal(port, "netns=1", &[]);
            if reason.is_empty() {
                return Err(format!("cycle {i}: empty reason"));
            }
        }
    }
    Ok(())
}

/// Runs cycles `from..to` over the parallel clients; returns how many ran.
fn soak_run(port: u16, q: &str, from: usize, to: usize, until: Instant) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(from);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..SOAK_CLIENTS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= to || Instant::now() >= until {
                    return;
                }
                if let Err(e) = soak_cycle(port, q, i) {
                    panic!("{e}");
                }
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    done.into_inner()
}

/// Waits until the service has no children and its descriptor count holds
/// still; returns that count.
fn settled_fds(svc: &Service) -> usize {
    assert!(
        wait_for(Duration::from_secs(15), || svc.children().is_empty()),
        "children left: {:?}",
        svc.children()
    );
    let mut last = svc.open_fds();
    let mut steady = 0;
    wait_for(Duration::from_secs(5), || {
        let now = svc.open_fds();
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
        steady >= 3
    });
    last
}

fn soak_of_capture_cycles_grows_no_descriptors_children_or_zombies(engine: Engine) {
    let ns = Netns::new();
    let svc = Service::start_engine(engine, &[]);
    let port = svc.port();
    let q = netns_q(&ns);
    let t = Instant::now();
    let until = t + SOAK_TIME;
    let warm = soak_run(port, &q, 0, SOAK_WARMUP, until);
    assert_eq!(warm, SOAK_WARMUP, "warm-up did not finish in time");
    let base = settled_fds(&svc);
    let maps_base = procs::mappings(svc.pid());
    let rss_base = procs::rss_kib(svc.pid()).unwrap_or(0);
    let rest = soak_run(port, &q, SOAK_WARMUP, SOAK_CYCLES, until);
    let end = settled_fds(&svc);
    let maps_end = procs::mappings(svc.pid());
    let cycles = warm + rest;
    eprintln!(
        "soak ({}): {cycles} cycles in {:?}; descriptors {base} after warm-up, {end} at the end; mappings {maps_base} -> {maps_end}; RSS {rss_base} -> {} KiB",
        engine.name(),
        t.elapsed(),
        procs::rss_kib(svc.pid()).unwrap_or(0)
    );
    assert!(
        end <= base + FD_SLACK,
        "descriptors grew from {base} to {end} over {cycles} cycles"
    );
    // A ring left behind would stay mapped (one mapping each).
    assert!(
        maps_end <= maps_base + MAP_SLACK,
        "mappings grew from {maps_base} to {maps_end} over {cycles} cycles"
    );
    assert_eq!(svc.packet_sockets_in(&ns), 0, "rings left open");
    assert!(svc.zombies().is_empty(), "zombies: {:?}", svc.zombies());
    assert!(svc.children().is_empty());
    assert!(
        cycles >= SOAK_MIN_CYCLES,
        "only {cycles} cycles in {SOAK_TIME:?}"
    );
    assert_eq!(http::version_status(port), Some(200));
}
engines!(soak_of_capture_cycles_grows_no_descriptors_children_or_zombies);

// ---- descriptor exhaustion ----

/// RLIMIT_NOFILE for the service: a few dozen connections fill it.
const LOW_NOFILE: u64 = 64;
/// Connections opened against it: well past the limit; the rest wait in
/// the listen backlog.
const FLOOD: usize = 100;

#[test]
fn descriptor_exhaustion_pauses_accepts_without_spinning_and_recovers() {
    let svc = Launch {
        nofile: Some(LOW_NOFILE),
        ..Launch::default()
    }
    .start();
    let (pid, port) = (svc.pid(), svc.port());
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.split_whitespace().nth(3) == Some("64")),
        "limit not applied:\n{limits}"
    );
    let mut conns: Vec<TcpStream> = (0..FLOOD).map(|_| http::idle_conn(port)).collect();
    assert!(
        wait_for(Duration::from_secs(3), || svc.open_fds() as u64
            >= LOW_NOFILE),
        "service holds only {} descriptors",
        svc.open_fds()
    );
    assert!(
        wait_for(Duration::from_secs(2), || svc
            .stderr()
            .contains("cannot accept connections")),
        "no accept failure logged"
    );

    let ticks = procs::clock_ticks_per_second() as f64;
    let (cpu0, wall0) = (procs::stat(pid).unwrap().cpu_ticks, Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let cpu = (procs::stat(pid).unwrap().cpu_ticks - cpu0) as f64 / ticks;
    let wall = wall0.elapsed().as_secs_f64();
    eprintln!("descriptor exhaustion: {cpu:.2} s CPU in {wall:.2} s");
    assert!(
        cpu < 0.2 * wall,
        "service spun: {cpu:.2} s CPU in {wall:.2} s"
    );

    // A connection accepted before the table filled is still served.
    conns[0]
        .write_all(b"GET /version HTTP/1.1\r\nHost: pfx\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = http::read_to_eof(&mut conns[0], Duration::from_secs(5));
    assert_eq!(r.status(), Some(200), "accepted connection not served");

    drop(conns);
    assert!(
        wait_for(Duration::from_secs(10), || http::version_status(port)
            == Some(200)),
        "service does not serve after the connections closed"
    );
    assert!(
        wait_for(Duration::from_secs(5), || svc.open_fds() < 16),
        "descriptors not released: {}",
        svc.open_fds()
    );
}

// ---- privileges ----

const SETCAP: &str = "/usr/sbin/setcap";
/// Capability numbers from <linux/capability.h>.
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
/// The unprivileged user the copies run as.
const NOBODY: &str = "nobody";

/// A copy of the service binary in a directory anyone may traverse.
fn binary_copy(dir: &ScratchDir) -> PathBuf {
    let bin = dir.join("packetflix");
    std::fs::copy(env!("CARGO_BIN_EXE_packetflix"), &bin).expect("copy the service binary");
    bin
}

fn cap_mask(pid: i32, key: &str) -> u64 {
    let v = procs::status_field(pid, key).unwrap_or_default();
    u64::from_str_radix(&v, 16).unwrap_or(0)
}

fn nobody_uid() -> u32 {
    let out = std::process::Command::new("id")
        .args(["-u", NOBODY])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn as_nobody(program: &Path, engine: Engine) -> Service {
    Launch {
        program: Some(program.to_path_buf()),
        user: Some(NOBODY.into()),
        ..Launch::default()
    }
    .engine(engine)
    .start()
}

fn non_root_service_with_file_capabilities_captures(engine: Engine) {
    if !executable(Path::new(SETCAP)) {
        eprintln!("note: {SETCAP} is not installed (package libcap2-bin); test skipped");
        return;
    }
    let dir = ScratchDir::new("caps");
    let bin = binary_copy(&dir);
    let out = std::process::Command::new(SETCAP)
        .arg("cap_sys_admin,cap_sys_ptrace,cap_net_admin,cap_net_raw+ep")
        .arg(&bin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setcap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ns = Netns::new();
    let svc = as_nobody(&bin, engine);
    let nobody = nobody_uid();
    assert_eq!(
        procs::uid(svc.pid()),
        Some(nobody),
        "service not running as nobody"
    );
    let needed = [CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_NET_ADMIN, CAP_NET_RAW]
        .iter()
        .fold(0u64, |m, c| m | 1 << c);
    assert_eq!(cap_mask(svc.pid(), "CapEff") & needed, needed);

    let mut c = start(svc.port(), &netns_q(&ns));
    assert!(
        ping_self_until_seen(&mut c, &ns),
        "no packets captured by the non-root service"
    );
    let rows = tshark_decode(&c.capture.bytes);
    assert!(
        rows.iter().any(|r| r.src == ns.addr.to_string()),
        "tshark decodes no packet from {}: {rows:?}",
        ns.addr
    );
    match engine {
        Engine::Dumpcap => {
            let dumpcap = dumpcaps_of(&svc);
            assert_eq!(dumpcap.len(), 1, "{:?}", svc.children());
            let d = dumpcap[0].pid;
            assert_eq!(procs::uid(d), Some(nobody), "dumpcap not running as nobody");
            // dumpcap drops what it was given once its sockets are open,
            // so only the upper bound can be seen: nothing beyond the
            // network capabilities was passed on.
            let net = (1u64 << CAP_NET_ADMIN) | (1u64 << CAP_NET_RAW);
            for set in ["CapPrm", "CapEff", "CapInh", "CapAmb"] {
                let mask = cap_mask(d, set);
                assert_eq!(mask & !net, 0, "dumpcap's {set} is {mask:#x}");
            }
            assert_eq!(procs::netns_of(d), Some(ns.inode()));
        }
        // The service itself holds the ring, made inside the target's
        // namespace with the capabilities of its file.
        Engine::Native => {
            assert!(svc.children().is_empty(), "{:?}", svc.children());
            assert!(
                svc.wait_sources_in(&ns, 1, Duration::from_secs(5)),
                "one ring: {} packet sockets",
                svc.packet_sockets_in(&ns)
            );
        }
    }
    close_capture(&mut c);
}
engines!(non_root_service_with_file_capabilities_captures);

#[test]
fn non_root_service_without_capabilities_refuses_captures_naming_them() {
    let dir = ScratchDir::new("nocaps");
    let bin = binary_copy(&dir);
    let ns = Netns::new();
    let svc = as_nobody(&bin, Engine::Dumpcap);
    assert_eq!(procs::uid(svc.pid()), Some(nobody_uid()));
    assert_eq!(cap_mask(svc.pid(), "CapEff"), 0);
    let reason = expect_refusal(svc.port(), &netns_q(&ns), &[]);
    for cap in [
        "CAP_SYS_ADMIN",
        "CAP_SYS_PTRACE",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
    ] {
        assert!(reason.contains(cap), "reason does not name {cap}: {reason}");
    }
    assert!(svc.children().is_empty(), "{:?}", svc.children());
    assert_eq!(http::version_status(svc.port()), Some(200));
}

/// Dead peers (a host that vanished without a FIN) are found by TCP
/// keepalive, which ends their captures; its timers run in the kernel, so
/// the test checks the service arms them on a live capture's connection
/// (the probes themselves take minutes).
#[test]
fn capture_connections_are_probed_by_tcp_keepalive() {
    let ns = Netns::new();
    let svc = Service::start(&[]);
    let mut c = start(svc.port(), &netns_q(&ns));
    let filter = format!("( sport = :{} )", svc.port());
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established", &filter])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().unwrap_or_default();
    assert!(
        line.contains("timer:(keepalive,"),
        "no keepalive timer on the capture connection: {text:?}"
    );
    close_capture(&mut c);
}
