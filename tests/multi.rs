//! End-to-end tests of captures of several targets in one stream: the real
//! `packetflix` binary, one real `dumpcap` per target or the native
//! engine's rings, namespaces made by each test, a real websocket client,
//! tshark reading the merged stream. Every wait is bounded; every
//! namespace and process is removed by guards.
//!
//! The capture tests run for both engines (`engines!`). Single, and why:
//! - refusals decided before any source starts (an unknown target, an
//!   interface list with several targets, too many targets);
//! - the capture program itself, dumpcap only: one killed by a signal
//!   (the engine's own end of one target, an interface deleted, runs for
//!   both), and the synthetic program writing corrupt or oddly named
//!   streams (the merger's checks, whatever the source).

// The shared test kit (testkit/), by the name these tests have always used.
use packetflix_testkit as common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::pcapng::{target_yaml, tshark_fields};
use common::procs;
use common::procs::netns_of;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn targets_q(targets: &serde_json::Value) -> String {
    format!("container={}", urlencode(&targets.to_string()))
}

/// `tshark -r` on the complete blocks: (interface id, interface name,
/// source address) per packet.
fn tshark_ids_and_names(bytes: &[u8]) -> Vec<(u32, String, String)> {
    let fields = ["frame.interface_id", "frame.interface_name", "ip.src"];
    tshark_fields(bytes, &fields)
        .into_iter()
        .filter_map(|row| Some((row[0].parse().ok()?, row[1].clone(), row[2].clone())))
        .collect()
}

/// The two targets of most tests: `a` on its `lo`, `b` on its `lo` and its
/// veth end, joined by a veth pair.
fn two_targets(pair: &VethPair) -> serde_json::Value {
    serde_json::json!([
        {"netns": pair.a.inode(), "name": "a", "type": "proc", "network-interfaces": ["lo"]},
        {"netns": pair.b.inode(), "name": "b", "type": "proc",
         "network-interfaces": ["lo", pair.b_if]},
    ])
}

/// The dumpcap of the service running in namespace `inode`.
fn dumpcap_in(svc: &Service, inode: u64) -> Option<i32> {
    svc.captures("dumpcap")
        .into_iter()
        .find(|p| netns_of(p.pid) == Some(inode))
        .map(|p| p.pid)
}

fn two_targets_stream_in_one_section_with_named_interfaces(engine: Engine) {
    let pair = VethPair::new();
    let svc = Service::start_engine(engine, &[]);
    let mut c = ws::must_connect(svc.port(), &targets_q(&two_targets(&pair)), &[]);
    let want = [
        "a/lo".to_string(),
        "b/lo".into(),
        format!("b/{}", pair.b_if),
    ];
    let ok = c.read_until(
        |cap| Pcapng::parse(&cap.bytes).is_ok_and(|p| p.interfaces().len() == 3),
        START_TIMEOUT,
    );
    assert!(ok, "three interfaces not described: {:?}", c.capture.close);
    let b_addr = pair.b_addr.to_string();
    let seen = until_seen(
        &mut c,
        TRAFFIC_TIMEOUT,
        || {
            pair.a.ping_self(1);
            pair.b.ping_self(1);
            pair.a.ping(&b_addr, 1);
        },
        |p| {
            let icmp = p.icmp();
            let on = |name: &str, src| {
                icmp.iter()
                    .any(|i| i.interface_name.as_deref() == Some(name) && i.src == src)
            };
            on("a/lo", pair.a.addr) && on("b/lo", pair.b.addr) && on(&want[2], pair.a_addr)
        },
    );
    assert!(seen, "not every target's traffic was seen");
    let close = c.close(Duration::from_secs(15));
    let (code, reason) = close.expect("close answered");
    assert_eq!(code, 1000);
    assert!(reason.contains("a: ") && reason.contains("b: "), "{reason}");

    let p = c.capture.pcapng();
    assert_eq!(p.shbs.len(), 1, "one section header");
    let mut names = p.interface_names();
    names.sort();
    assert_eq!(names, want);
    // Each interface keeps the link type its own dumpcap described.
    assert!(
        p.interfaces().iter().all(|i| i.linktype == 1),
        "{:?}",
        p.interfaces()
    );
    let yaml = target_yaml(&p).expect("target document");
    for key in [
        "container-name: \"a\"",
        "container-name: \"b\"",
        "interface-prefix: \"b/\"",
    ] {
        assert!(yaml.contains(key), "{key} missing from {yaml}");
    }
    // tshark agrees: ids consistent with names, both targets' packets.
    let rows = tshark_ids_and_names(&c.capture.bytes);
    let mut by_id: BTreeMap<u32, String> = BTreeMap::new();
    for (id, name, _) in &rows {
        let prev = by_id.insert(*id, name.clone());
        assert!(
            prev.is_none_or(|n| &n == name),
            "interface {id} has two names"
        );
        assert_eq!(
            p.interfaces()[*id as usize].name.as_deref(),
            Some(name.as_str()),
            "tshark's interface {id} is not the IDB's"
        );
    }
    for name in &want {
        assert!(
            by_id.values().any(|n| n == name),
            "no packet on {name}: {by_id:?}"
        );
    }
    assert!(rows
        .iter()
        .any(|r| r.1 == "a/lo" && r.2 == pair.a.addr.to_string()));
}
engines!(two_targets_stream_in_one_section_with_named_interfaces);

#[test]
fn a_killed_program_leaves_the_other_streaming_and_the_close_names_both() {
    let pair = VethPair::new();
    let svc = Service::start(&[]);
    let mut c = ws::must_connect(svc.port(), &targets_q(&two_targets(&pair)), &[]);
    assert!(c.read_until(
        |cap| Pcapng::parse(&cap.bytes).is_ok_and(|p| p.interfaces().len() == 3),
        START_TIMEOUT,
    ));
    assert_eq!(svc.wait_dumpcaps(2, Duration::from_secs(5)).len(), 2);
    let a_pid = dumpcap_in(&svc, pair.a.inode()).expect("a's dumpcap");
    kill(Pid::from_raw(a_pid), Signal::SIGKILL).expect("kill a's dumpcap");
    assert!(
        wait_for(Duration::from_secs(5), || !procs::exists(a_pid)),
        "a's dumpcap not reaped"
    );
    let before = c.capture.pcapng().icmp().len();
    let seen = until_seen(
        &mut c,
        TRAFFIC_TIMEOUT,
        || {
            pair.b.ping_self(1);
        },
        |p| {
            p.icmp().len() > before
                && p.icmp()
                    .iter()
                    .skip(before)
                    .any(|i| i.interface_name.as_deref() == Some("b/lo"))
        },
    );
    assert!(
        seen,
        "b stopped streaming when a's program died: {:?}",
        c.capture.close
    );
    assert!(
        c.capture.close.is_none(),
        "the stream ended with a's program"
    );
    let (_, reason) = c.close(Duration::from_secs(15)).expect("close answered");
    assert!(reason.contains("a: killed by SIGKILL"), "{reason}");
    assert!(reason.contains("b: "), "{reason}");
    assert!(c.wait_tcp_closed(Duration::from_secs(5)));
}

/// One target's source ends by itself (its interface deleted, which both
/// engines report in dumpcap's words): the other streams on, and the close
/// names both.
fn a_target_whose_interface_is_deleted_ends_alone_and_the_close_names_both(engine: Engine) {
    let pair = VethPair::new();
    let svc = Service::start_engine(engine, &[]);
    let targets = serde_json::json!([
        {"netns": pair.a.inode(), "name": "a", "type": "proc", "network-interfaces": [pair.a_if]},
        {"netns": pair.b.inode(), "name": "b", "type": "proc", "network-interfaces": ["lo"]},
    ]);
    let mut c = ws::must_connect(svc.port(), &targets_q(&targets), &[]);
    assert!(c.read_until(
        |cap| Pcapng::parse(&cap.bytes).is_ok_and(|p| p.interfaces().len() == 2),
        START_TIMEOUT,
    ));
    let out = pair.a.exec(&["ip", "link", "del", &pair.a_if]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        svc.wait_sources_in(&pair.a, 0, Duration::from_secs(5)),
        "a's source still runs after its interface was deleted"
    );
    let before = c.capture.pcapng().icmp().len();
    let seen = until_seen(
        &mut c,
        TRAFFIC_TIMEOUT,
        || {
            pair.b.ping_self(1);
        },
        |p| {
            p.icmp()
                .iter()
                .skip(before)
                .any(|i| i.interface_name.as_deref() == Some("b/lo"))
        },
    );
    assert!(
        seen,
        "b stopped streaming when a's source ended: {:?}",
        c.capture.close
    );
    assert!(
        c.capture.close.is_none(),
        "the stream ended with a's source"
    );
    let (code, reason) = c.close(Duration::from_secs(15)).expect("close answered");
    println!("close {code} {reason:?}");
    assert!(
        reason.contains(&format!(
            "a: The network adapter \"{}\" is no longer attached",
            pair.a_if
        )),
        "{reason}"
    );
    assert!(reason.contains("b: stopped"), "{reason}");
    let p = c.capture.pcapng();
    assert_eq!(
        p.complete_len,
        c.capture.bytes.len(),
        "stream cut mid-block"
    );
    // a's statistics came when it ended, under its merged interface id;
    // b was stopped by the client's close, after which nothing is sent.
    let a_id = p
        .interface_names()
        .iter()
        .position(|n| *n == format!("a/{}", pair.a_if))
        .expect("a's interface") as u32;
    let ids: Vec<u32> = p.stats.iter().map(|s| s.interface_id).collect();
    assert_eq!(ids, vec![a_id], "{:?}", p.stats);
    assert!(c.wait_tcp_closed(Duration::from_secs(5)));
    assert!(svc.wait_nothing_captures(&[&pair.a, &pair.b], Duration::from_secs(5)));
}
engines!(a_target_whose_interface_is_deleted_ends_alone_and_the_close_names_both);

fn client_close_reaps_every_program_before_the_answer(engine: Engine) {
    let pair = VethPair::new();
    let svc = Service::start_engine(engine, &[]);
    let mut c = ws::must_connect(svc.port(), &targets_q(&two_targets(&pair)), &[]);
    assert!(c.read_until(
        |cap| Pcapng::parse(&cap.bytes).is_ok_and(|p| p.interfaces().len() == 3),
        START_TIMEOUT,
    ));
    // a on lo; b on lo and its veth end: with the native engine a ring
    // per interface.
    let per_b = match engine {
        Engine::Dumpcap => 1,
        Engine::Native => 2,
    };
    assert!(svc.wait_sources_in(&pair.a, 1, Duration::from_secs(5)));
    assert!(svc.wait_sources_in(&pair.b, per_b, Duration::from_secs(5)));
    let pids: Vec<i32> = svc.captures("dumpcap").iter().map(|p| p.pid).collect();
    let (code, reason) = c.close(Duration::from_secs(15)).expect("close answered");
    assert_eq!(code, 1000);
    match engine {
        Engine::Dumpcap => {
            assert_eq!(pids.len(), 2);
            for pid in &pids {
                assert!(!procs::exists(*pid), "{pid} not reaped before the answer");
            }
        }
        // The rings go to the engine's closer threads before the answer;
        // the kernel closes them within a few tens of ms.
        Engine::Native => {
            assert!(pids.is_empty(), "children of the native engine: {pids:?}");
            assert!(svc.wait_nothing_captures(&[&pair.a, &pair.b], Duration::from_secs(3)));
        }
    }
    assert!(
        reason.contains("a: stopped") && reason.contains("b: stopped"),
        "{reason}"
    );
    assert!(c.wait_tcp_closed(Duration::from_secs(5)));
    assert!(
        svc.children().is_empty(),
        "children left: {:?}",
        svc.children()
    );
}
engines!(client_close_reaps_every_program_before_the_answer);

#[test]
fn one_unknown_target_refuses_the_whole_request_and_spawns_nothing() {
    let ns = Netns::new();
    let svc = Service::start(&[]);
    // An inode no namespace has: 2^32 + 7 is above every procfs inode.
    let targets = serde_json::json!([
        {"netns": ns.inode(), "name": "good", "network-interfaces": ["lo"]},
        {"netns": 4_294_967_303u64},
    ]);
    let reason = expect_refusal(svc.port(), &targets_q(&targets), &[]);
    assert!(reason.contains("netns-4294967303"), "{reason}");
    assert!(svc.children().is_empty(), "spawned: {:?}", svc.children());
    assert!(
        !svc.stderr().contains("started: pid"),
        "a capture program was started: {}",
        svc.stderr()
    );
}

#[test]
fn an_interface_list_and_too_many_targets_are_refused() {
    let ns = Netns::new();
    let svc = Service::start(&["--max-targets", "2"]);
    let one = serde_json::json!({"netns": ns.inode()});
    let reason = expect_refusal(
        svc.port(),
        &format!("{}&nif=lo", targets_q(&serde_json::json!([one, one]))),
        &[],
    );
    assert!(reason.contains("nif may only be"), "{reason}");
    let reason = expect_refusal(
        svc.port(),
        &targets_q(&serde_json::json!([one, one, one])),
        &[],
    );
    assert!(reason.contains("at most 2"), "{reason}");
    assert!(svc.children().is_empty());
}

fn stale_targets_are_resolved_by_one_discovery_exchange(engine: Engine) {
    let pair = VethPair::new();
    let gw = GhostWire::start(mobyshark(&[
        target("a", "", pair.a.inode(), 0, 0),
        target("b", "", pair.b.inode(), 0, 0),
    ]));
    let gw_port = gw.port().to_string();
    let svc = Launch::new()
        .engine(engine)
        .args(&[
            "--discovery-service",
            "127.0.0.1",
            "--gw-port",
            &gw_port,
            "--discovery-timeout",
            "5",
        ])
        .start();
    // No netns at all: both must come from the listing.
    let targets = serde_json::json!([
        {"name": "a", "network-interfaces": ["lo"]},
        {"name": "b", "network-interfaces": ["lo"]},
    ]);
    let mut c = ws::must_connect(svc.port(), &targets_q(&targets), &[]);
    assert!(
        c.read_until(
            |cap| Pcapng::parse(&cap.bytes).is_ok_and(|p| p.interfaces().len() == 2),
            START_TIMEOUT,
        ),
        "not started: {:?}",
        c.capture.close
    );
    assert_eq!(gw.mobyshark_requests(), 1, "one exchange for both targets");
    assert_eq!(svc.engine(), engine);
    for ns in [&pair.a, &pair.b] {
        assert!(
            svc.wait_sources_in(ns, 1, Duration::from_secs(5)),
            "no {} source in {}: children {:?}",
            engine.name(),
            ns.name,
            svc.children()
        );
    }
    assert!(c.close(Duration::from_secs(15)).is_some());

    // A name the listing lacks refuses the whole request, naming it.
    let targets = serde_json::json!([{"name": "a"}, {"name": "ghost"}]);
    let reason = expect_refusal(svc.port(), &targets_q(&targets), &[]);
    assert!(reason.contains("ghost"), "{reason}");
    assert!(svc.wait_nothing_captures(&[&pair.a, &pair.b], Duration::from_secs(5)));
}
engines!(stale_targets_are_resolved_by_one_discovery_exchange);

/// Packets the synthetic capture program writes for the clean target.
const CLEAN_PACKETS: u64 = 300;
/// Their rate: the capture lasts about 1.5 s.
const CLEAN_RATE: u64 = 200;

/// Two targets captured by the synthetic capture program: target `a` (its
/// `lo`) writes a packet block whose captured length runs past its block
/// (`how`: in the host's byte order or in a big-endian section), `b` (its
/// veth end) a clean stream. `a` is given up, `b` streams to its end, and
/// the merged stream is valid to tshark.
fn overrunning_block_gives_its_target_up(how: &str) {
    let pair = VethPair::new();
    // The capture program is one for every target: the wrapper corrupts the
    // one started for `-i lo`.
    let program = Scratch::script(
        "overrun-gen",
        &format!(
            "case \" $* \" in *\" -i lo \"*) PFX_GEN_CORRUPT={how}; export PFX_GEN_CORRUPT;; esac\nexec {} \"$@\"\n",
            common::pcapgen::PROGRAM
        ),
    );
    let settings = common::pcapgen::Settings {
        rate: CLEAN_RATE,
        ..common::pcapgen::Settings::stream(64, CLEAN_PACKETS)
    };
    let svc = Launch {
        args: vec!["--capture-program".into(), program.path().into()],
        env: settings.env(),
        ..Launch::default()
    }
    .start();
    let targets = serde_json::json!([
        {"netns": pair.a.inode(), "name": "a", "type": "proc", "network-interfaces": ["lo"]},
        {"netns": pair.b.inode(), "name": "b", "type": "proc", "network-interfaces": [pair.b_if]},
    ]);
    let mut c = ws::must_connect(svc.port(), &targets_q(&targets), &[]);
    let close = c.read_to_close(Duration::from_secs(30));
    let (code, reason) = close.expect("the capture ended with a close");
    let p = c.capture.pcapng();
    let on = |prefix: &str| {
        p.packets
            .iter()
            .filter(|pk| {
                pk.interface_name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .count() as u64
    };
    let rows = tshark_fields(&c.capture.bytes, &["frame.interface_name"]);
    let b_rows = rows.iter().filter(|r| r[0].starts_with("b/")).count() as u64;
    println!(
        "overrunning block ({how}): close {code} {reason:?}; packets of a {}, of b {} of {CLEAN_PACKETS}; tshark read {} packets, {b_rows} of b",
        on("a/"),
        on("b/"),
        rows.len()
    );
    assert!(
        reason.contains("a: ") && reason.contains("overruns"),
        "{reason}"
    );
    assert_eq!(code, 1011, "a target given up is a failure: {reason}");
    assert_eq!(on("a/"), 0, "a packet of the given-up target was forwarded");
    assert_eq!(on("b/"), CLEAN_PACKETS, "the clean target lost packets");
    assert_eq!(b_rows, CLEAN_PACKETS, "tshark disagrees");
    assert_eq!(rows.len() as u64, CLEAN_PACKETS);
}

#[test]
fn an_overrunning_host_order_block_gives_its_target_up_and_the_stream_stays_valid() {
    overrunning_block_gives_its_target_up("overrun");
}

#[test]
fn an_overrunning_swapped_order_block_gives_its_target_up_and_the_stream_stays_valid() {
    overrunning_block_gives_its_target_up("overrun-swapped");
}

#[test]
fn control_bytes_in_target_names_reach_the_client_escaped() {
    let pair = VethPair::new();
    let settings = common::pcapgen::Settings {
        rate: CLEAN_RATE,
        ..common::pcapgen::Settings::stream(64, 20)
    };
    let svc = Launch {
        args: vec!["--capture-program".into(), common::pcapgen::PROGRAM.into()],
        env: settings.env(),
        ..Launch::default()
    }
    .start();
    let targets = serde_json::json!([
        {"netns": pair.a.inode(), "name": "a\u{1b}]0;owned\u{7}", "network-interfaces": ["lo"]},
        {"netns": pair.b.inode(), "name": "b\r\nFAKE", "network-interfaces": ["lo"]},
    ]);
    let mut c = ws::must_connect(svc.port(), &targets_q(&targets), &[]);
    let (code, reason) = c
        .read_to_close(Duration::from_secs(30))
        .expect("the capture ended with a close");
    let names = c.capture.pcapng().interface_names();
    println!("close {code} {reason:?}; interfaces {names:?}");
    assert!(!reason.chars().any(char::is_control), "{reason:?}");
    assert!(
        reason.contains("a\\u{1b}]0;owned\\u{7}: ") && reason.contains("b\\r\\nFAKE: "),
        "{reason:?}"
    );
    assert_eq!(names.len(), 2, "{names:?}");
    for n in &names {
        assert!(!n.chars().any(char::is_control), "{n:?}");
    }
}
