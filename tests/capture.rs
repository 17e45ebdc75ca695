//! End-to-end tests of the capture service: the real `packetflix` binary,
//! real `dumpcap` or the native engine, network namespaces made by each
//! test, a real websocket client. Each test bounds its waits, so each ends
//! within about 20 s.
//!
//! The tests about capturing run for both engines (`engines!`: one body,
//! `NAME::dumpcap` and `NAME::native`). Single, and why:
//! - the `harness_*` tests check the test kit, not the service;
//! - plain HTTP (`/version` aside, which names the engine and runs for
//!   both), 404, 426, 400 and every refusal decided before a capture
//!   source starts (bad or unknown netns, container and netns together,
//!   neither, a long reason, a close frame behind the handshake): the
//!   engine is never reached;
//! - the capture *program* itself, dumpcap only: a missing program, the
//!   arguments it gets, its own exit (`-c 3`), one that ignores SIGTERM,
//!   stand-in programs writing hand-made or non-pcapng streams.

// The shared test kit (testkit/), by the name these tests have always used.
use packetflix_testkit as common;

use std::time::Duration;

use common::ghostwire::GwConfig;
use common::http;
use common::pcapng::{self, build, target_yaml, yaml_value, Pcapng};
use common::procs;
use common::ws::must_connect;
use common::*;
use tungstenite::Message;

/// The SHB's `shb_userappl` of each engine: dumpcap names itself
/// ("Dumpcap (Wireshark) 4.0.x ..."), the native engine writes
/// "packetflix VERSION".
fn userappl_is_the_engines(engine: Engine, value: &[u8]) -> bool {
    match engine {
        Engine::Dumpcap => value.starts_with(b"Dumpcap"),
        Engine::Native => value == format!("packetflix {}", env!("CARGO_PKG_VERSION")).as_bytes(),
    }
}

fn netns_q(ns: &Netns) -> String {
    format!("netns={}", ns.inode())
}

fn ping_across_until_seen(c: &mut Client, pair: &VethPair) -> bool {
    let target = pair.b_addr.to_string();
    until_seen(
        c,
        TRAFFIC_TIMEOUT,
        || {
            pair.a.ping(&target, 2);
        },
        // Both directions: dumpcap may write the reply in a later chunk.
        |p| {
            let icmp = p.icmp();
            icmp.iter()
                .any(|i| i.src == pair.a_addr && i.dst == pair.b_addr)
                && icmp
                    .iter()
                    .any(|i| i.src == pair.b_addr && i.dst == pair.a_addr)
        },
    )
}

fn tcp_until_seen(c: &mut Client, ns: &Netns, at_least: usize) -> bool {
    let addr = ns.addr.to_string();
    until_seen(
        c,
        TRAFFIC_TIMEOUT,
        || ns.tcp_poke(&addr, 9),
        |p| p.tcp().len() >= at_least,
    )
}

fn promiscuity(ns: &Netns, ifname: &str) -> u32 {
    let out = ns.exec(&["ip", "-d", "link", "show", ifname]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let n = text
        .split_whitespace()
        .skip_while(|w| *w != "promiscuity")
        .nth(1)
        .unwrap_or_else(|| panic!("no promiscuity in {text}"));
    n.parse().expect("number")
}

// ---- the harness itself ----

#[test]
fn harness_pcapng_reader_reads_both_byte_orders() {
    for be in [false, true] {
        let mut s = build::shb(&[(1, b"hello"), (4, b"app")], be);
        s.extend(build::idb(1, "eth0", be));
        s.extend(build::idb(113, "lo", be));
        s.extend(build::epb(1, &[0xaa; 5], be));
        let cut = s.len();
        s.extend(build::epb(0, &[0xbb; 8], be));
        let p = Pcapng::parse(&s).unwrap();
        let shb = p.first_shb().unwrap();
        assert_eq!(shb.big_endian, be);
        assert_eq!(shb.section_length, -1);
        assert_eq!(shb.comments(), vec!["hello".to_string()]);
        assert_eq!(shb.option(4), Some(&b"app"[..]));
        assert_eq!(p.interface_names(), vec!["eth0", "lo"]);
        assert_eq!(p.packets.len(), 2);
        assert_eq!(p.packets[0].interface_name.as_deref(), Some("lo"));
        assert_eq!(p.packets[0].data, vec![0xaa; 5]);
        // A stream cut inside a block parses up to that block.
        let partial = Pcapng::parse(&s[..cut + 7]).unwrap();
        assert_eq!(partial.complete_len, cut);
        assert_eq!(partial.packets.len(), 1);
        // A block whose two lengths disagree is corruption.
        let mut bad = s.clone();
        let last = bad.len() - 1;
        bad[if be { last } else { last - 3 }] ^= 4;
        assert!(Pcapng::parse(&bad).is_err());
    }
}

#[test]
fn harness_direct_dumpcap_stream_shows_ping_to_reader_and_tshark() {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let pair = VethPair::new();
    // Guarded: killed and reaped even if an assertion below fails.
    let mut dumpcap = NsProcess {
        child: pair
            .a
            .command(&["dumpcap", "-w", "-", "-n", "-q", "-i", "any"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    };
    let mut out = dumpcap.child.stdout.take().unwrap();
    let bytes = Arc::new(Mutex::new(Vec::new()));
    let b2 = bytes.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            b2.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let parsed = || Pcapng::parse(&bytes.lock().unwrap()).unwrap();
    assert!(wait_for(START_TIMEOUT, || !parsed()
        .interfaces()
        .is_empty()));
    let seen = wait_for(TRAFFIC_TIMEOUT, || {
        pair.a.ping(&pair.b_addr.to_string(), 2);
        parsed().icmp().iter().any(|i| i.src == pair.a_addr)
    });
    drop(dumpcap);
    let _ = reader.join();
    assert!(seen, "ICMP not seen in dumpcap's own stream");
    let p = parsed();
    assert_eq!(p.interface_names(), vec!["any"]);
    assert!(target_yaml(&p).is_none());
    let rows = tshark_decode(&bytes.lock().unwrap());
    assert!(rows.iter().any(|r| r.interface == "any"
        && r.src == pair.a_addr.to_string()
        && r.dst == pair.b_addr.to_string()
        && r.icmp_type == "8"));
}

/// Runs `serve` on one connection accepted on a fresh loopback port.
fn one_shot_server(
    serve: impl FnOnce(std::net::TcpStream) + Send + 'static,
) -> (u16, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        serve(s)
    });
    (port, t)
}

#[test]
// tungstenite's handshake callback type fixes the large error variant.
#[allow(clippy::result_large_err)]
fn harness_ws_client_collects_messages_close_and_eof() {
    use tungstenite::protocol::frame::coding::CloseCode;
    use tungstenite::protocol::CloseFrame;
    // Server closes: the client sees the bytes in order, the close frame,
    // and TCP EOF; the request carried its query and header.
    let (port, t) = one_shot_server(|s| {
        let mut seen = String::new();
        let mut ws =
            tungstenite::accept_hdr(s, |req: &tungstenite::handshake::server::Request, resp| {
                seen = format!("{} {:?}", req.uri(), req.headers().get("clustershark-nif"));
                Ok(resp)
            })
            .unwrap();
        assert_eq!(seen, "/capture?netns=7 Some(\"lo\")");
        ws.send(Message::Binary(b"abc".to_vec().into())).unwrap();
        ws.send(Message::Binary(b"def".to_vec().into())).unwrap();
        ws.close(Some(CloseFrame {
            code: CloseCode::Error,
            reason: "boom".into(),
        }))
        .unwrap();
        while ws.read().is_ok() {}
    });
    let mut c = must_connect(port, "netns=7", &[("Clustershark-Nif", "lo")]);
    assert_eq!(
        c.read_to_close(Duration::from_secs(5)),
        Some((1011, "boom".into()))
    );
    assert_eq!(c.capture.bytes, b"abcdef");
    assert_eq!(c.capture.binary_messages, 2);
    assert!(c.wait_tcp_closed(Duration::from_secs(5)));
    t.join().unwrap();

    // Client closes: the server's answer is returned.
    let (port, t) = one_shot_server(|s| {
        let mut ws = tungstenite::accept(s).unwrap();
        while ws.read().is_ok() {}
    });
    let mut c = must_connect(port, "netns=7", &[]);
    assert_eq!(c.close(Duration::from_secs(5)).map(|c| c.0), Some(1000));
    assert!(c.wait_tcp_closed(Duration::from_secs(5)));
    t.join().unwrap();
}

#[test]
fn harness_http_helper_reads_response_and_close() {
    use std::io::{Read, Write};
    let (port, t) = one_shot_server(|mut s| {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).unwrap();
        s.write_all(b"HTTP/1.1 426 Upgrade Required\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap();
    });
    let r = http::send_raw(
        port,
        b"GET / HTTP/1.1\r\n\r\n",
        true,
        Duration::from_secs(5),
    );
    t.join().unwrap();
    assert_eq!(r.status, 426);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.body_text(), "hello");
    assert!(r.closed);
}

// ---- plain HTTP ----

fn version_answers_json_name_version_and_engine(engine: Engine) {
    let svc = Service::start_engine(engine, &[]);
    let r = http::get(svc.port(), "/version");
    assert_eq!(r.status, 200, "{}", r.body_text());
    let ctype = r.header("content-type").unwrap_or_default();
    assert!(
        ctype.starts_with("application/json"),
        "content-type {ctype:?}"
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(v["name"], "packetflix");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["capture-engine"], engine.name());
}
engines!(version_answers_json_name_version_and_engine);

#[test]
fn unknown_path_gets_404() {
    let svc = Service::start(&[]);
    assert_eq!(http::get(svc.port(), "/nothing-here").status, 404);
    assert_eq!(http::get(svc.port(), "/").status, 404);
}

#[test]
fn plain_get_capture_gets_426_with_text_body() {
    let ns = Netns::new();
    let svc = Service::start(&[]);
    let r = http::get(svc.port(), &format!("/capture?{}", netns_q(&ns)));
    assert_eq!(r.status, 426, "{}", r.body_text());
    assert!(
        r.body_text().to_lowercase().contains("websocket"),
        "426 body should say to use the websocket protocol: {:?}",
        r.body_text()
    );
    assert!(
        svc.captures("dumpcap").is_empty(),
        "no capture without upgrade"
    );
}

#[test]
fn garbage_request_gets_400_and_close_and_service_lives_on() {
    let svc = Service::start(&[]);
    let r = http::send_raw(
        svc.port(),
        b"\x16\x03\x01\x02\x00 this is not http\r\n\r\n",
        true,
        Duration::from_secs(5),
    );
    assert_eq!(r.status, 400);
    assert!(r.closed, "connection must be closed after 400");
    let r = http::send_raw(
        svc.port(),
        b"GET /version HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n",
        true,
        Duration::from_secs(5),
    );
    assert_eq!(r.status, 400);
    assert!(r.closed, "connection must be closed after 400");
    assert_eq!(http::get(svc.port(), "/version").status, 200);
}

// ---- captures ----

fn capture_all_interfaces_streams_ping_with_target_document(engine: Engine) {
    let pair = VethPair::new();
    let svc = Service::start_engine(engine, &[]);
    let mut c = start(&svc, &netns_q(&pair.a), &[]);
    assert!(ping_across_until_seen(&mut c, &pair), "ping not captured");
    assert_eq!(c.capture.text_messages, 0, "stream must be binary only");
    let p = c.capture.pcapng();
    assert_eq!(p.interface_names(), vec!["any"]);
    let shb = p.first_shb().unwrap();
    assert_eq!(shb.section_length, -1, "section length must become unknown");
    assert!(
        shb.option(pcapng::SHB_USERAPPL)
            .is_some_and(|v| userappl_is_the_engines(engine, v)),
        "the source's own SHB options must be kept: {:?}",
        shb.options
    );
    let comments = shb.comments();
    let first = comments.first().expect("SHB has a comment");
    assert!(
        first.contains("---\n# capture target information\n"),
        "first comment lacks the exact marker: {first:?}"
    );
    let yaml = target_yaml(&p).unwrap();
    for key in ["container-name", "container-type", "node-name"] {
        assert!(yaml_value(&yaml, key).is_some(), "no {key} in {yaml:?}");
    }
    assert!(yaml_value(&yaml, "capture-filter").is_none(), "{yaml:?}");
    assert_ne!(
        yaml_value(&yaml, "no-promiscuous-mode").as_deref(),
        Some("true")
    );
    assert_eq!(
        yaml_value(&yaml, "capture-engine"),
        Some(format!("\"{}\"", engine.name())),
        "{yaml}"
    );
    let rows = tshark_decode(&c.capture.bytes);
    let (a, b) = (pair.a_addr.to_string(), pair.b_addr.to_string());
    assert!(rows
        .iter()
        .any(|r| r.src == a && r.dst == b && r.icmp_type == "8"));
    assert!(rows
        .iter()
        .any(|r| r.src == b && r.dst == a && r.icmp_type == "0"));
    assert!(rows.iter().all(|r| r.interface == "any"));
}
engines!(capture_all_interfaces_streams_ping_with_target_document);

fn capture_one_interface_via_nif(engine: Engine) {
    let pair = VethPair::new();
    let svc = Service::start_engine(engine, &[]);
    let q = format!("{}&nif={}", netns_q(&pair.a), pair.a_if);
    let mut c = start(&svc, &q, &[]);
    assert_eq!(
        c.capture.pcapng().interface_names(),
        vec![pair.a_if.clone()]
    );
    assert!(ping_across_until_seen(&mut c, &pair));
    // Own loopback traffic is not on that interface.
    pair.a.ping_self(2);
    pair.a.ping(&pair.b_addr.to_string(), 1);
    let n = c.capture.pcapng().icmp().len();
    c.read_until(|c| c.pcapng().icmp().len() >= n + 2, Duration::from_secs(3));
    assert!(!c.capture.pcapng().has_icmp_from(pair.a.addr));
    let rows = tshark_decode(&c.capture.bytes);
    assert!(rows.iter().all(|r| r.interface == pair.a_if), "{rows:?}");
}
engines!(capture_one_interface_via_nif);

fn capture_two_interfaces_via_nif(engine: Engine) {
    let pair = VethPair::new();
    let svc = Service::start_engine(engine, &[]);
    let q = format!("{}&nif=lo/{}", netns_q(&pair.a), pair.a_if);
    let mut c = start(&svc, &q, &[]);
    assert!(c.read_until(
        |c| c.pcapng().interfaces().len() >= 2,
        Duration::from_secs(5)
    ));
    assert_eq!(
        c.capture.pcapng().interface_names(),
        vec!["lo".to_string(), pair.a_if.clone()]
    );
    assert!(ping_self_until_seen(&mut c, &pair.a));
    assert!(ping_across_until_seen(&mut c, &pair));
    let p = c.capture.pcapng();
    let icmp = p.icmp();
    assert!(icmp
        .iter()
        .any(|i| i.src == pair.a.addr && i.interface_name.as_deref() == Some("lo")));
    assert!(icmp
        .iter()
        .any(|i| i.src == pair.a_addr && i.interface_name.as_deref() == Some(&pair.a_if)));
}
engines!(capture_two_interfaces_via_nif);

fn filter_excludes_ping_and_is_named_in_document(engine: Engine) {
    let ns = Netns::new();
    let svc = Service::start_engine(engine, &[]);
    let filter = "tcp and not icmp";
    let q = format!("{}&filter={}", netns_q(&ns), urlencode(filter));
    let mut c = start(&svc, &q, &[]);
    assert!(tcp_until_seen(&mut c, &ns, 1), "TCP not captured");
    ns.ping_self(3);
    // The ping is over before this second poke; if it had passed the
    // filter it would be in the stream ahead of it.
    let n = c.capture.pcapng().tcp().len();
    assert!(tcp_until_seen(&mut c, &ns, n + 1));
    assert!(
        c.capture.pcapng().icmp().is_empty(),
        "filter let ICMP through"
    );
    let yaml = target_yaml(&c.capture.pcapng()).expect("target document");
    let v = yaml_value(&yaml, "capture-filter").expect("capture-filter key");
    assert!(v.contains(filter), "capture-filter {v:?}");
}
engines!(filter_excludes_ping_and_is_named_in_document);

fn chaste_capture_avoids_promiscuous_mode_and_says_so(engine: Engine) {
    let pair = VethPair::new();
    let svc = Service::start_engine(engine, &[]);
    let base = format!("{}&nif={}", netns_q(&pair.a), pair.a_if);
    // Control: without chaste, either engine puts the interface in
    // promiscuous mode.
    // The native engine's hand-over holds the mode on two sockets for a
    // moment (the first one and the ring): the count settles at 1.
    let mut c = start(&svc, &base, &[]);
    assert!(promiscuity(&pair.a, &pair.a_if) >= 1);
    assert!(
        wait_for(Duration::from_secs(5), || promiscuity(&pair.a, &pair.a_if)
            == 1),
        "promiscuity {}",
        promiscuity(&pair.a, &pair.a_if)
    );
    c.close(Duration::from_secs(5));
    assert!(wait_for(Duration::from_secs(5), || promiscuity(
        &pair.a, &pair.a_if
    ) == 0));
    let c = start(&svc, &format!("{base}&chaste"), &[]);
    assert_eq!(
        promiscuity(&pair.a, &pair.a_if),
        0,
        "chaste went promiscuous"
    );
    let yaml = target_yaml(&c.capture.pcapng()).expect("target document");
    assert_eq!(
        yaml_value(&yaml, "no-promiscuous-mode").as_deref(),
        Some("true")
    );
}
engines!(chaste_capture_avoids_promiscuous_mode_and_says_so);

fn chaste_header_avoids_promiscuous_mode(engine: Engine) {
    let pair = VethPair::new();
    let svc = Service::start_engine(engine, &[]);
    let q = format!("{}&nif={}", netns_q(&pair.a), pair.a_if);
    let c = start(&svc, &q, &[("Clustershark-Chaste", "1")]);
    assert_eq!(promiscuity(&pair.a, &pair.a_if), 0);
    let yaml = target_yaml(&c.capture.pcapng()).expect("target document");
    assert_eq!(
        yaml_value(&yaml, "no-promiscuous-mode").as_deref(),
        Some("true")
    );
}
engines!(chaste_header_avoids_promiscuous_mode);

fn nif_header_wins_over_query(engine: Engine) {
    let pair = VethPair::new();
    let svc = Service::start_engine(engine, &[]);
    let q = format!("{}&nif={}", netns_q(&pair.a), pair.a_if);
    let c = start(&svc, &q, &[("clustershark-nif", "lo")]);
    assert_eq!(c.capture.pcapng().interface_names(), vec!["lo"]);
}
engines!(nif_header_wins_over_query);

fn filter_header_wins_over_query(engine: Engine) {
    let ns = Netns::new();
    let svc = Service::start_engine(engine, &[]);
    let q = format!("{}&filter=icmp", netns_q(&ns));
    let mut c = start(&svc, &q, &[("Clustershark-Filter", "tcp")]);
    assert!(tcp_until_seen(&mut c, &ns, 1), "header filter not applied");
    ns.ping_self(3);
    let n = c.capture.pcapng().tcp().len();
    assert!(tcp_until_seen(&mut c, &ns, n + 1));
    assert!(
        c.capture.pcapng().icmp().is_empty(),
        "query filter was used"
    );
    let yaml = target_yaml(&c.capture.pcapng()).unwrap();
    assert_eq!(
        yaml_value(&yaml, "capture-filter")
            .map(|v| v.trim_matches(|c| c == '"' || c == '\'').to_string())
            .as_deref(),
        Some("tcp")
    );
}
engines!(filter_header_wins_over_query);

fn client_close_reaps_capture_before_answer_and_closes_tcp(engine: Engine) {
    let ns = Netns::new();
    let svc = Service::start_engine(engine, &[]);
    let fds_before = svc.settled_fds();
    let mut c = start(&svc, &netns_q(&ns), &[]);
    assert!(
        svc.wait_sources_in(&ns, 1, Duration::from_secs(5)),
        "one {} source in the namespace: children {:?}",
        engine.name(),
        svc.children()
    );
    let dumpcap = svc.captures("dumpcap").first().map(|p| p.pid);
    let reply = c.close(Duration::from_secs(12));
    let Some((code, _)) = reply else {
        panic!("no close answer: error={:?}", c.capture.error);
    };
    assert!(code == 1000 || code == 1005, "close answer code {code}");
    match engine {
        Engine::Dumpcap => {
            let pid = dumpcap.expect("a dumpcap child");
            assert!(
                !procs::exists(pid),
                "capture program {pid} not reaped before the close answer: {:?}",
                procs::stat(pid)
            );
        }
        // No process to reap: the ring is handed to the engine's closer
        // threads before the answer, and the kernel takes 25-30 ms to
        // close it.
        Engine::Native => assert_eq!(dumpcap, None, "a child of the native engine"),
    }
    assert!(c.wait_tcp_closed(Duration::from_secs(5)), "TCP left open");
    assert!(svc.children().is_empty(), "children: {:?}", svc.children());
    assert!(
        svc.wait_nothing_captures(&[&ns], Duration::from_secs(3)),
        "a packet socket left in the namespace: {}",
        svc.packet_sockets_in(&ns)
    );
    assert!(
        // A leak shows as more descriptors than the settled baseline.
        wait_for(Duration::from_secs(3), || svc.open_fds() <= fds_before),
        "descriptors leaked: {} before, {} after",
        fds_before,
        svc.open_fds()
    );
}
engines!(client_close_reaps_capture_before_answer_and_closes_tcp);

fn tcp_drop_without_close_frame_reaps_capture(engine: Engine) {
    let ns = Netns::new();
    let svc = Service::start_engine(engine, &[]);
    let c = start(&svc, &netns_q(&ns), &[]);
    assert!(
        svc.wait_sources_in(&ns, 1, Duration::from_secs(5)),
        "one {} source in the namespace: children {:?}",
        engine.name(),
        svc.children()
    );
    let fds = svc.open_fds();
    c.drop_tcp();
    assert!(
        svc.wait_nothing_captures(&[&ns], Duration::from_secs(5)),
        "the capture is still there after the client vanished: children {:?}, packet sockets {}",
        svc.children(),
        svc.packet_sockets_in(&ns)
    );
    assert!(svc.zombies().is_empty());
    // The connection and the source's descriptors are gone (a pipe or
    // two with dumpcap, the ring with the native engine).
    assert!(
        wait_for(Duration::from_secs(3), || svc.open_fds() < fds - 1),
        "descriptors: {fds} with the capture, {} after",
        svc.open_fds()
    );
}
engines!(tcp_drop_without_close_frame_reaps_capture);

/// A filter only libpcap can judge (dumpcap's, or the native engine's
/// compiler): the close carries its words.
fn a_filter_libpcap_refuses_closes_with_its_message(engine: Engine) {
    let ns = Netns::new();
    let svc = Service::start_engine(engine, &[]);
    // Names that do not exist never reach the source (see
    // tests/interfaces.rs); a filter only libpcap can judge does.
    let mut c = must_connect(
        svc.port(),
        &format!("{}&nif=lo&filter={}", netns_q(&ns), urlencode("nonsense((")),
        &[],
    );
    let close = c.read_to_close(Duration::from_secs(10));
    let Some((code, reason)) = close else {
        panic!("not closed: error={:?}", c.capture.error);
    };
    match engine {
        // dumpcap exits with status 2 after its message, whose first line
        // is the reason.
        Engine::Dumpcap => {
            assert!(
                is_error_close_code(code),
                "code {code} for a failed capture"
            );
            assert!(
                reason.contains("Invalid capture filter \"nonsense((\""),
                "reason {reason:?} lacks dumpcap's message"
            );
        }
        // The engine knows it is the request's fault, and gives libpcap's
        // words before the filter (a close frame holds 123 bytes).
        Engine::Native => {
            assert_eq!(code, 1008, "{reason}");
            assert!(
                reason.starts_with("Invalid capture filter for interface 'lo' (")
                    && reason.contains("syntax error")
                    && reason.ends_with("\"nonsense((\""),
                "{reason}"
            );
        }
    }
    assert!(c.capture.bytes.is_empty(), "streamed before refusing");
    assert!(c.wait_tcp_closed(Duration::from_secs(5)));
    assert!(svc.wait_nothing_captures(&[&ns], Duration::from_secs(3)));
}
engines!(a_filter_libpcap_refuses_closes_with_its_message);

#[test]
fn long_close_reason_is_cut_at_a_character_boundary() {
    // Interface names are bounded (IFNAMSIZ) before dumpcap sees them, so a
    // long reason comes from a long container name that discovery does not
    // list: the reason quotes the name.
    let gw = GhostWire::with(GwConfig {
        status: 200,
        body: br#"{"containers":[]}"#.to_vec(),
        delay: Duration::ZERO,
    });
    let svc = Service::with_discovery(gw.port(), 5, &[]);
    let name = "ä".repeat(100);
    let container = format!(r#"{{"name":"{name}"}}"#);
    let q = format!("container={}", urlencode(&container));
    let mut c = must_connect(svc.port(), &q, &[]);
    // tungstenite rejects a close frame over 125 bytes or with invalid
    // UTF-8, so an ill-cut reason shows up as an error here.
    let close = c.read_to_close(Duration::from_secs(10));
    let Some((code, reason)) = close else {
        panic!("not closed properly: error={:?}", c.capture.error);
    };
    assert!(is_error_close_code(code));
    assert!(reason.len() <= 123, "reason of {} bytes", reason.len());
    assert!(reason.len() > 100, "reason cut too short: {reason:?}");
    assert!(reason.starts_with("container \"ää"), "{reason:?}");
}

#[test]
fn unknown_netns_is_refused_with_reason() {
    let svc = Service::start(&[]);
    let reason = expect_refusal(svc.port(), "netns=1", &[]);
    let r = reason.to_lowercase();
    assert!(r.contains("namespace") || r.contains("netns"), "{reason:?}");
    assert!(svc.children().is_empty());
}

#[test]
fn container_and_netns_together_are_refused() {
    let ns = Netns::new();
    let svc = Service::start(&[]);
    let container = format!(r#"{{"netns":{}}}"#, ns.inode());
    let q = format!("{}&container={}", netns_q(&ns), urlencode(&container));
    let reason = expect_refusal(svc.port(), &q, &[]);
    let r = reason.to_lowercase();
    assert!(r.contains("container") || r.contains("netns"), "{reason:?}");
}

#[test]
fn neither_container_nor_netns_is_refused() {
    let svc = Service::start(&[]);
    let reason = expect_refusal(svc.port(), "nif=lo", &[]);
    let r = reason.to_lowercase();
    assert!(r.contains("container") || r.contains("netns"), "{reason:?}");
}

#[test]
fn bad_netns_values_are_refused() {
    let svc = Service::start(&[]);
    for bad in ["abc", "0", "-5", "", "99999999999999999999999"] {
        let reason = expect_refusal(svc.port(), &format!("netns={bad}"), &[]);
        assert!(
            reason.to_lowercase().contains("netns"),
            "netns={bad:?}: reason {reason:?}"
        );
    }
    assert!(svc.children().is_empty());
}

#[test]
fn missing_capture_program_is_named_in_reason() {
    let ns = Netns::new();
    let missing = Scratch::new("dumpcap-missing");
    let svc = Service::start(&["--capture-program", missing.path()]);
    let reason = expect_refusal(svc.port(), &netns_q(&ns), &[]);
    assert!(reason.contains("dumpcap-missing"), "{reason:?}");
}

#[test]
fn capture_program_gets_contract_arguments_inside_the_namespace() {
    let pair = VethPair::new();
    let args_file = Scratch::new("args");
    let ns_file = Scratch::new("ns");
    let script = Scratch::script(
        "capture.sh",
        &format!(
            "printf '%s\\n' \"$@\" > {}\nreadlink /proc/$$/ns/net > {}\nexec /usr/bin/dumpcap \"$@\"\n",
            args_file.path(),
            ns_file.path()
        ),
    );
    let svc = Service::start(&["--capture-program", script.path()]);
    let filter = "icmp and not tcp";
    let q = format!(
        "{}&nif=lo/{}&filter={}&chaste",
        netns_q(&pair.a),
        pair.a_if,
        urlencode(filter)
    );
    let _c = start(&svc, &q, &[]);
    let args = args_file.read();
    let ns = ns_file.read();
    let want: Vec<&str> = vec![
        "-w", "-", "-n", "-q", "-p", "-f", filter, "-i", "lo", "-i", &pair.a_if,
    ];
    assert_eq!(args.lines().collect::<Vec<_>>(), want);
    assert_eq!(ns.trim(), format!("net:[{}]", pair.a.inode()));
}

#[test]
fn capture_program_exiting_normally_closes_with_1000_after_all_output() {
    let ns = Netns::new();
    // dumpcap's own packet count limit: it stops after 3 packets, exit 0.
    let script = Scratch::script("capture.sh", "exec /usr/bin/dumpcap \"$@\" -c 3\n");
    let svc = Service::start(&["--capture-program", script.path()]);
    let mut c = start(&svc, &netns_q(&ns), &[]);
    let deadline = std::time::Instant::now() + TRAFFIC_TIMEOUT;
    while c.capture.close.is_none()
        && c.capture.error.is_none()
        && std::time::Instant::now() < deadline
    {
        ns.ping_self(2);
        c.read_until(|_| false, Duration::from_millis(800));
    }
    let Some((code, _reason)) = c.capture.close.clone() else {
        panic!(
            "not closed after the program exited: error={:?}",
            c.capture.error
        );
    };
    assert_eq!(code, 1000);
    let p = c.capture.pcapng();
    assert_eq!(p.complete_len, c.capture.bytes.len(), "output cut short");
    assert_eq!(p.packets.len(), 3);
    assert!(c.wait_tcp_closed(Duration::from_secs(5)));
    assert!(wait_for(Duration::from_secs(3), || svc
        .children()
        .is_empty()));
}

fn client_messages_are_ignored_and_ping_gets_pong(engine: Engine) {
    let ns = Netns::new();
    let svc = Service::start_engine(engine, &[]);
    let mut c = start(&svc, &netns_q(&ns), &[]);
    c.ws.send(Message::Text("hello".into())).unwrap();
    c.ws.send(Message::Binary(vec![1, 2, 3].into())).unwrap();
    c.ws.send(Message::Ping(b"pfx".to_vec().into())).unwrap();
    assert!(c.read_until(|c| !c.pongs.is_empty(), Duration::from_secs(5)));
    assert_eq!(c.capture.pongs[0], b"pfx");
    assert!(ping_self_until_seen(&mut c, &ns), "capture stopped");
}
engines!(client_messages_are_ignored_and_ping_gets_pong);

fn three_concurrent_captures_see_only_their_own_namespace(engine: Engine) {
    let n1 = Netns::new();
    let n2 = Netns::new();
    let svc = Service::start_engine(engine, &[]);
    let mut c1 = start(&svc, &netns_q(&n1), &[]);
    let mut c2 = start(&svc, &netns_q(&n1), &[]);
    let mut c3 = start(&svc, &netns_q(&n2), &[]);
    // One source each (`any`: one dumpcap, or one ring), two in n1.
    assert!(svc.wait_sources_in(&n1, 2, Duration::from_secs(5)));
    assert!(svc.wait_sources_in(&n2, 1, Duration::from_secs(5)));
    n2.ping_self(2);
    assert!(ping_self_until_seen(&mut c1, &n1));
    assert!(ping_self_until_seen(&mut c2, &n1));
    assert!(ping_self_until_seen(&mut c3, &n2));
    assert!(!c1.capture.pcapng().has_icmp_from(n2.addr), "c1 saw n2");
    assert!(!c2.capture.pcapng().has_icmp_from(n2.addr), "c2 saw n2");
    assert!(!c3.capture.pcapng().has_icmp_from(n1.addr), "c3 saw n1");
}
engines!(three_concurrent_captures_see_only_their_own_namespace);

fn service_shutdown_ends_and_reaps_running_captures(engine: Engine) {
    let ns = Netns::new();
    let mut svc = Service::start_engine(engine, &[]);
    let mut c = start(&svc, &netns_q(&ns), &[]);
    assert!(svc.wait_sources_in(&ns, 1, Duration::from_secs(5)));
    let caps = svc.captures("dumpcap");
    let sockets = procs::packet_socket_inodes(&ns.path());
    svc.signal(nix::sys::signal::Signal::SIGTERM);
    // The client takes part in the close handshake, as a real one would.
    let close = c.read_to_close(Duration::from_secs(12));
    c.wait_tcp_closed(Duration::from_secs(5));
    assert!(
        svc.wait_exit(Duration::from_secs(12)).is_some(),
        "service ignored SIGTERM"
    );
    let Some((code, reason)) = close else {
        panic!(
            "client got no close frame at shutdown: error={:?}",
            c.capture.error
        );
    };
    assert_eq!(code, 1001, "{reason}");
    // Stopped, not cut off: the rest of the stream came, to the
    // statistics at its end.
    let p = c.capture.pcapng();
    assert_eq!(
        p.complete_len,
        c.capture.bytes.len(),
        "stream cut mid-block"
    );
    assert_eq!(
        p.check_final_isbs(engine.isb_resolution()),
        Ok(()),
        "{:?}",
        p.stats
    );
    match engine {
        Engine::Dumpcap => assert!(
            !procs::exists(caps[0].pid),
            "capture program outlived the service: {:?}",
            procs::stat(caps[0].pid)
        ),
        Engine::Native => {
            assert!(caps.is_empty(), "a child of the native engine: {caps:?}");
            assert!(!sockets.is_empty(), "no packet socket in the namespace");
            let left: Vec<u64> = procs::packet_socket_inodes(&ns.path())
                .into_iter()
                .filter(|i| sockets.contains(i))
                .collect();
            assert!(
                left.is_empty(),
                "packet sockets outlived the service: {left:?}"
            );
        }
    }
}
engines!(service_shutdown_ends_and_reaps_running_captures);

#[test]
fn capture_program_ignoring_sigterm_is_killed_and_reaped() {
    let ns = Netns::new();
    // A capture program that shrugs off SIGTERM and never writes.
    let script = Scratch::script("stubborn.sh", "trap '' TERM\nexec sleep 30\n");
    let svc = Service::start(&["--capture-program", script.path()]);
    let mut c = must_connect(svc.port(), &netns_q(&ns), &[]);
    let mut stubborn = Vec::new();
    assert!(
        wait_for(Duration::from_secs(5), || {
            stubborn = svc.captures("sleep");
            stubborn.len() == 1
        }),
        "capture program not started: {:?}",
        svc.children()
    );
    let pid = stubborn[0].pid;
    // The service's kill deadline is 10 s; allow it a few more.
    let reply = c.close(Duration::from_secs(15));
    assert!(
        reply.is_some(),
        "no close answer: error={:?}",
        c.capture.error
    );
    assert!(!procs::exists(pid), "stubborn capture program {pid} left");
    assert!(c.wait_tcp_closed(Duration::from_secs(5)));
    assert!(svc.children().is_empty());
}

/// A capture program that writes the bytes of `data` one at a time, a
/// moment apart, so the service reads them in many small pieces, then exits.
fn trickling_program(data: &[u8]) -> (Scratch, Scratch, Scratch) {
    let bytes = Scratch::new("stream.bin");
    std::fs::write(&bytes.0, data).unwrap();
    let py = Scratch::new("trickle.py");
    std::fs::write(
        &py.0,
        "import os, sys, time\n\
         data = open(sys.argv[1], 'rb').read()\n\
         for i in range(len(data)):\n\
         \x20   os.write(1, data[i:i + 1])\n\
         \x20   time.sleep(0.002)\n",
    )
    .unwrap();
    let script = Scratch::script(
        "trickle.sh",
        &format!("exec python3 {} {}\n", py.path(), bytes.path()),
    );
    (script, py, bytes)
}

#[test]
fn big_endian_shb_split_across_reads_is_edited_and_rest_relayed_unchanged() {
    let ns = Netns::new();
    let old_doc = "---\n# capture target information\ncontainer-name: stale-old\n";
    let mut shb = build::shb(
        &[
            (
                pcapng::OPT_COMMENT,
                format!("hand-made\n{old_doc}").as_bytes(),
            ),
            (pcapng::OPT_COMMENT, b"second comment"),
            (pcapng::SHB_USERAPPL, b"trickle"),
        ],
        true,
    );
    // A known section length, which the service must turn into -1.
    shb[16..24].copy_from_slice(&1234i64.to_be_bytes());
    let mut rest = build::idb(1, "eth0", true);
    rest.extend(build::epb(0, &[0x5a; 42], true));
    let mut input = shb.clone();
    input.extend(&rest);
    let (script, _py, _bytes) = trickling_program(&input);
    let svc = Service::start(&["--capture-program", script.path()]);
    let mut c = must_connect(svc.port(), &format!("{}&filter=icmp", netns_q(&ns)), &[]);
    let close = c.read_to_close(Duration::from_secs(10));
    assert_eq!(
        close.map(|c| c.0),
        Some(1000),
        "error={:?}",
        c.capture.error
    );
    let out = c.capture.bytes.clone();
    let p = Pcapng::parse(&out).expect("valid pcapng");
    assert_eq!(p.complete_len, out.len());
    let shb_out = p.first_shb().unwrap();
    assert!(shb_out.big_endian, "byte order changed");
    assert_eq!(shb_out.section_length, -1);
    let comments = shb_out.comments();
    assert_eq!(comments.len(), 2, "{comments:?}");
    assert!(comments[0].starts_with("hand-made\n"), "{:?}", comments[0]);
    assert_eq!(
        comments[0].matches("# capture target information").count(),
        1,
        "earlier document not replaced: {:?}",
        comments[0]
    );
    assert!(!comments[0].contains("stale-old"), "{:?}", comments[0]);
    let yaml = target_yaml(&p).unwrap();
    assert!(yaml_value(&yaml, "capture-filter").is_some_and(|v| v.contains("icmp")));
    assert_eq!(comments[1], "second comment");
    assert_eq!(shb_out.option(pcapng::SHB_USERAPPL), Some(&b"trickle"[..]));
    // Everything after the SHB is relayed byte for byte.
    let shb_out_len = u32::from_be_bytes(out[4..8].try_into().unwrap()) as usize;
    assert_eq!(&out[shb_out_len..], &rest[..]);
}

#[test]
fn stream_without_shb_is_relayed_unedited() {
    let ns = Netns::new();
    let input = b"this is not pcapng at all, but it is what the program wrote\n".to_vec();
    let (script, _py, _bytes) = trickling_program(&input);
    let svc = Service::start(&["--capture-program", script.path()]);
    let mut c = must_connect(svc.port(), &netns_q(&ns), &[]);
    let close = c.read_to_close(Duration::from_secs(10));
    assert_eq!(
        close.map(|c| c.0),
        Some(1000),
        "error={:?}",
        c.capture.error
    );
    assert_eq!(c.capture.bytes, input);
}

/// A client may send its close frame in the same write as the handshake
/// (a script that only wants the refusal reason). The service must take it
/// as the answer to its own close, not wait out the close deadline (5 s).
#[test]
fn close_frame_behind_the_handshake_ends_a_refused_capture_at_once() {
    let svc = Service::start(&[]);
    let mut raw = b"GET /capture?netns=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    // A masked close frame with code 1000 (mask of zeros keeps it readable).
    raw.extend_from_slice(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
    let started = std::time::Instant::now();
    let r = http::send_raw(svc.port(), &raw, true, Duration::from_secs(8));
    assert_eq!(r.status, 101);
    assert!(r.closed, "connection left open");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed only after {:?}: the early close frame was ignored",
        started.elapsed()
    );
    // The refusal's close frame (with its reason) came before the close.
    assert!(
        r.body.first() == Some(&0x88),
        "no close frame: {:02x?}",
        r.body
    );
    assert!(String::from_utf8_lossy(&r.body).contains("inode 1"));
}
