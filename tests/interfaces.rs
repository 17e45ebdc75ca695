//! End-to-end tests of which interfaces a capture reads: what `nif=any`
//! means, that only real interfaces of the target namespace are capture
//! sources, that a filter holds on every interface, captures of hundreds of
//! interfaces the way csharg asks for them, and how a capture ends when its
//! interface disappears. Real namespaces, veth pairs, and dumpcap or the
//! native engine; every wait is bounded.
//!
//! Every test here runs for both engines (`engines!`).

// The shared test kit (testkit/), by the name these tests have always used.
use packetflix_testkit as common;

use std::net::TcpListener;
use std::time::Duration;

use common::pcapng::Pcapng;
use common::ws::must_connect;
use common::*;
use serde_json::json;

/// pcapng link types (tcpdump.org link-layer header types).
const LINKTYPE_ETHERNET: u16 = 1;
const LINKTYPE_LINUX_SLL: u16 = 113;
const LINKTYPE_LINUX_SLL2: u16 = 276;
/// RFC 6455 close code for a refused capture.
const POLICY_VIOLATION: u16 = 1008;
/// dumpcap opens hundreds of interfaces one after another (about 10 s for
/// 300 on an idle machine; the machine is shared): a generous bound.
const MANY_START_TIMEOUT: Duration = Duration::from_secs(120);
/// veth pairs for the many-interfaces test: 300 interfaces.
const PAIRS: usize = 150;

fn container_q(target: &serde_json::Value) -> String {
    format!("container={}", urlencode(&target.to_string()))
}

/// Connects, expects the service to close with 1008, returns the reason.
fn refused_1008(port: u16, query: &str, headers: &[(&str, &str)]) -> String {
    let mut c = must_connect(port, query, headers);
    let close = c.read_to_close(Duration::from_secs(15));
    let Some((code, reason)) = close else {
        panic!("{query:?} not closed: error={:?}", c.capture.error);
    };
    assert_eq!(code, POLICY_VIOLATION, "{query:?}: {reason}");
    assert!(
        c.capture.bytes.is_empty(),
        "{query:?} streamed before refusing"
    );
    reason
}

/// A TCP listener bound to 127.0.0.1 inside `ns` (a thread enters the
/// namespace, binds, and ends; the socket stays in the namespace).
fn listen_in(ns: &Netns) -> TcpListener {
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        TcpListener::bind(("127.0.0.1", 0)).expect("bind in netns")
    })
    .join()
    .expect("listener thread")
}

fn any_means_the_targets_own_interfaces_with_their_own_link_types(engine: Engine) {
    let pair = VethPair::new();
    let svc = Service::start_engine(engine, &[]);
    let listed = json!({"netns": pair.a.inode(), "network-interfaces": ["lo", pair.a_if]});
    for nif in ["any", "all"] {
        let c = start(&svc, &format!("{}&nif={nif}", container_q(&listed)), &[]);
        let ifs = c.capture.pcapng().interfaces();
        let names: Vec<_> = ifs
            .iter()
            .map(|i| i.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            vec!["lo".to_string(), pair.a_if.clone()],
            "nif={nif}"
        );
        assert!(
            ifs.iter().all(|i| i.linktype == LINKTYPE_ETHERNET),
            "nif={nif}: {ifs:?}"
        );
    }
    // The extcap's header form, and a target without a list: dumpcap's any.
    let c = start(
        &svc,
        "",
        &[
            ("Clustershark-Container", &listed.to_string()),
            ("Clustershark-Nif", "any"),
        ],
    );
    assert_eq!(c.capture.pcapng().interface_names().len(), 2);
    let bare = json!({"netns": pair.a.inode()});
    let c = start(&svc, &format!("{}&nif=any", container_q(&bare)), &[]);
    let ifs = c.capture.pcapng().interfaces();
    assert_eq!(ifs.len(), 1, "{ifs:?}");
    assert_eq!(ifs[0].name.as_deref(), Some("any"));
    match engine {
        // libpcap picks the cooked header's version.
        Engine::Dumpcap => assert!(
            [LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2].contains(&ifs[0].linktype),
            "{ifs:?}"
        ),
        // The engine writes the first version, as libpcap 1.10 in dumpcap
        // 4.0 does by default.
        Engine::Native => assert_eq!(ifs[0].linktype, LINKTYPE_LINUX_SLL, "{ifs:?}"),
    }
}
engines!(any_means_the_targets_own_interfaces_with_their_own_link_types);

fn names_that_are_not_interfaces_are_refused_before_anything_is_spawned(engine: Engine) {
    let pair = VethPair::new();
    let ns = &pair.a;
    let marker = Scratch::new("spawned");
    let prog = Scratch::script(
        "capture.sh",
        &format!(
            "echo \"$@\" >> {}\nexec /usr/bin/dumpcap \"$@\"\n",
            marker.path()
        ),
    );
    // dumpcap would read a FIFO named like an interface from its working
    // directory, which is the service's.
    let cwd = ScratchDir::new("cwd");
    let fifo = format!("pfxfifo{}", next_id());
    nix::unistd::mkfifo(
        &cwd.path().join(&fifo),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    let listener = listen_in(ns);
    listener.set_nonblocking(true).expect("nonblocking");
    let tcp = format!("TCP@127.1:{}", listener.local_addr().unwrap().port());
    assert!(
        tcp.len() <= 15,
        "{tcp} must pass the name rules to test the check"
    );
    // The native engine runs no program: the marker must stay empty, and
    // what it opens shows as packet sockets and the log's start lines.
    let svc = Launch {
        cwd: Some(cwd.path().to_path_buf()),
        ..Launch::default()
    }
    .engine(engine)
    .args(&["--capture-program", prog.path()])
    .start();
    let q = format!("netns={}", ns.inode());
    for name in [tcp.as_str(), fifo.as_str(), "nosuch0"] {
        for (query, headers) in [
            (format!("{q}&nif=lo/{}", urlencode(name)), vec![]),
            (q.clone(), vec![("Clustershark-Nif", name)]),
        ] {
            let reason = refused_1008(svc.port(), &query, &headers);
            assert!(reason.contains(&format!("\"{name}\"")), "{reason}");
            assert!(
                reason.contains("it has:") && reason.contains("lo") && reason.contains(&pair.a_if),
                "reason does not list the namespace's interfaces: {reason}"
            );
        }
    }
    // The target's own list: a list of nothing real is refused too.
    let only_fake = json!({"netns": ns.inode(), "network-interfaces": [fifo, "nosuch0"]});
    let reason = refused_1008(svc.port(), &container_q(&only_fake), &[]);
    assert!(
        reason.contains("none of the target's interfaces"),
        "{reason}"
    );
    assert!(
        marker.read().is_empty(),
        "capture program ran: {}",
        marker.read()
    );
    assert!(svc.children().is_empty(), "{:?}", svc.children());
    assert_eq!(svc.packet_sockets_in(ns), 0);
    assert!(
        !svc.stderr().contains("capture started"),
        "{}",
        svc.stderr()
    );
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the listener was reached: {other:?}"),
    }
    // Names of the target's list that do not exist are skipped.
    let mixed = json!({"netns": ns.inode(), "network-interfaces": [fifo, "lo", "nosuch0"]});
    let c = start(&svc, &container_q(&mixed), &[]);
    assert_eq!(c.capture.pcapng().interface_names(), vec!["lo"]);
    match engine {
        Engine::Dumpcap => assert_eq!(marker.read().trim(), "-w - -n -q -i lo"),
        Engine::Native => {
            assert!(marker.read().is_empty(), "{}", marker.read());
            // One ring, on lo, once it took over from the socket read
            // while it was set up.
            assert!(
                svc.wait_sources_in(ns, 1, Duration::from_secs(5)),
                "one ring, on lo: {} packet sockets",
                svc.packet_sockets_in(ns)
            );
        }
    }
    assert!(svc.logged("skipping interfaces"), "{}", svc.stderr());
}
engines!(names_that_are_not_interfaces_are_refused_before_anything_is_spawned);

fn a_filter_holds_on_every_interface(engine: Engine) {
    let pair = VethPair::new();
    let svc = Service::start_engine(engine, &[]);
    let q = format!("netns={}&nif=lo/{}&filter=icmp", pair.a.inode(), pair.a_if);
    let mut c = start(&svc, &q, &[]);
    let (own, peer) = (pair.a.addr.to_string(), pair.b_addr.to_string());
    let lo_and_veth = |p: &Pcapng| {
        let icmp = p.icmp();
        let on = |name: &str| {
            icmp.iter()
                .any(|i| i.interface_name.as_deref() == Some(name))
        };
        on("lo") && on(&pair.a_if)
    };
    // TCP first in every round: unfiltered, it would be in the stream ahead
    // of the ICMP that ends the wait.
    let seen = until_seen(
        &mut c,
        TRAFFIC_TIMEOUT,
        || {
            pair.a.tcp_poke(&own, 9);
            pair.a.tcp_poke(&peer, 9);
            pair.a.ping_self(1);
            pair.a.ping(&peer, 1);
        },
        lo_and_veth,
    );
    assert!(seen, "ICMP not seen on both interfaces");
    let p = c.capture.pcapng();
    // Every packet on either interface is ICMP over IPv4: nothing else
    // (TCP, ARP, IPv6) passed.
    let icmp = p.icmp();
    assert_eq!(
        icmp.len(),
        p.packets.len(),
        "packets outside the filter: {:?}",
        p.packets
            .iter()
            .map(|pk| (pk.interface_name.clone(), pk.data.len()))
            .collect::<Vec<_>>()
    );
    assert!(p.tcp().is_empty(), "TCP passed the filter: {:?}", p.tcp());
}
engines!(a_filter_holds_on_every_interface);

fn a_target_with_300_interfaces_captures_when_asked_the_way_csharg_asks(engine: Engine) {
    let ns = Netns::new();
    // Docker-like names (11 bytes), so the request is as large as csharg's
    // for such a target.
    let names: Vec<String> = (0..PAIRS)
        .flat_map(|i| [format!("veth{i:03}c0fa"), format!("veth{i:03}c0fb")])
        .collect();
    let mut batch = String::new();
    for pair in names.chunks(2) {
        batch.push_str(&format!(
            "link add {} type veth peer name {}\n",
            pair[0], pair[1]
        ));
    }
    for n in &names {
        batch.push_str(&format!("link set {n} up\n"));
    }
    let file = Scratch::new("ip-batch");
    std::fs::write(&file.0, batch).expect("write batch");
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.name, "-batch", file.path()])
        .output()
        .expect("ip -batch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let svc = Service::start_engine(engine, &[]);
    let nif = names.join("/");
    let target = json!({
        "name": "pfx-router", "type": "proc", "prefix": "", "netns": ns.inode(),
        "network-interfaces": names, "node-name": "127.0.0.1",
        "capture-service": "packetflix", "captureport": svc.port(),
    })
    .to_string();
    // csharg: keys sorted, the values again as headers.
    let query = format!("container={}&nif={}", urlencode(&target), urlencode(&nif));
    let headers = [
        ("Clustershark-Container", target.as_str()),
        ("Clustershark-Nif", nif.as_str()),
    ];
    let head_size = query.len() + target.len() + nif.len();
    assert!(
        head_size > 16 * 1024,
        "the request ({head_size} bytes) must exceed the old 16 KiB head limit"
    );
    let mut c = must_connect(svc.port(), &query, &headers);
    let all_open = c.read_until(
        |cap| Pcapng::parse(&cap.bytes).is_ok_and(|p| p.interfaces().len() == names.len()),
        MANY_START_TIMEOUT,
    );
    assert!(
        all_open,
        "not capturing on {} interfaces: close={:?} interfaces={}",
        names.len(),
        c.capture.close,
        Pcapng::parse(&c.capture.bytes).map_or(0, |p| p.interfaces().len())
    );
    let p = c.capture.pcapng();
    assert_eq!(p.interface_names(), names);
    assert!(p
        .interfaces()
        .iter()
        .all(|i| i.linktype == LINKTYPE_ETHERNET));
    assert!(
        c.close(Duration::from_secs(15)).is_some(),
        "close not answered"
    );
}
engines!(a_target_with_300_interfaces_captures_when_asked_the_way_csharg_asks);

fn a_deleted_interface_ends_the_capture_with_dumpcaps_words(engine: Engine) {
    let pair = VethPair::new();
    let svc = Service::start_engine(engine, &[]);
    let mut c = start(
        &svc,
        &format!("netns={}&nif={}", pair.a.inode(), pair.a_if),
        &[],
    );
    let out = pair.a.exec(&["ip", "link", "del", &pair.a_if]);
    assert!(out.status.success(), "{out:?}");
    let close = c.read_to_close(Duration::from_secs(15));
    let Some((code, reason)) = close else {
        panic!("not closed: error={:?}", c.capture.error);
    };
    assert_eq!(code, 1000, "{reason}");
    assert_eq!(
        reason,
        format!(
            "The network adapter \"{}\" is no longer attached; the capture has stopped.",
            pair.a_if
        )
    );
    // Everything before the close is whole blocks, ending with the
    // interface's statistics; both write nanoseconds (if_tsresol 9).
    let p = c.capture.pcapng();
    assert_eq!(p.interfaces()[0].tsresol(), 9);
    assert_eq!(
        p.check_final_isbs(engine.isb_resolution()),
        Ok(()),
        "{:?}",
        p.stats
    );
    assert_eq!(
        p.complete_len,
        c.capture.bytes.len(),
        "stream cut mid-block"
    );
    assert!(svc.wait_nothing_captures(&[&pair.a], Duration::from_secs(5)));
}
engines!(a_deleted_interface_ends_the_capture_with_dumpcaps_words);

/// Deleting an interface that is already down: the kernel reports only
/// the going down to a packet socket, so the source must notice the
/// deletion by itself.
fn an_interface_taken_down_then_deleted_ends_the_capture_with_dumpcaps_words(engine: Engine) {
    let pair = VethPair::new();
    let svc = Service::start_engine(engine, &[]);
    let mut c = start(
        &svc,
        &format!("netns={}&nif={}", pair.a.inode(), pair.a_if),
        &[],
    );
    let out = pair.a.exec(&["ip", "link", "set", &pair.a_if, "down"]);
    assert!(out.status.success(), "{out:?}");
    // Down is not the end (dumpcap goes on too).
    c.read_until(|_| false, Duration::from_millis(500));
    assert_eq!(
        c.capture.close, None,
        "a capture ended when its interface went down"
    );
    let out = pair.a.exec(&["ip", "link", "del", &pair.a_if]);
    assert!(out.status.success(), "{out:?}");
    let close = c.read_to_close(Duration::from_secs(15));
    let Some((code, reason)) = close else {
        panic!("not closed: error={:?}", c.capture.error);
    };
    assert_eq!(code, 1000, "{reason}");
    assert_eq!(
        reason,
        format!(
            "The network adapter \"{}\" is no longer attached; the capture has stopped.",
            pair.a_if
        )
    );
    assert!(svc.wait_nothing_captures(&[&pair.a], Duration::from_secs(5)));
}
engines!(an_interface_taken_down_then_deleted_ends_the_capture_with_dumpcaps_words);
