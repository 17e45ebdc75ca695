//! End-to-end tests of self-exclusion: a capture of the service's own
//! network namespace on `lo` never holds its own websocket connection's
//! packets (unless `--no-self-exclusion`), while other loopback traffic is
//! captured. The real service with dumpcap or the native engine; the other
//! traffic is a TCP connection from the test to a listener of its own on
//! 127.0.0.1.
//!
//! Every test here runs for both engines (`engines!`): the exclusion is a
//! filter the service puts first, which either engine applies.

// The shared test kit (testkit/), by the name these tests have always used.
use packetflix_testkit as common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::pcapng::{target_yaml, yaml_value};
use common::*;

/// Ethernet header before the IP header on `lo` (link type 1).
const ETHERNET_LEN: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const IPPROTO_TCP: u8 = 6;

/// The TCP port pair of each IPv4 TCP packet captured.
fn tcp_ports(p: &Pcapng) -> Vec<(u16, u16)> {
    p.packets
        .iter()
        .filter(|pk| pk.linktype == 1 && pk.data.len() > ETHERNET_LEN + 20)
        .filter(|pk| pk.data[12..14] == ETHERTYPE_IPV4)
        .filter_map(|pk| {
            let ip = &pk.data[ETHERNET_LEN..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip[9] != IPPROTO_TCP || ip.len() < ihl + 4 {
                return None;
            }
            let t = &ip[ihl..];
            Some((
                u16::from_be_bytes([t[0], t[1]]),
                u16::from_be_bytes([t[2], t[3]]),
            ))
        })
        .collect()
}

/// Other loopback traffic: a listener of the test's own and a connection
/// to it; each `poke` sends a few bytes the listener reads.
struct OtherTraffic {
    port: u16,
    conn: TcpStream,
    peer: TcpStream,
}

impl OtherTraffic {
    fn new() -> OtherTraffic {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (peer, _) = listener.accept().expect("accept");
        peer.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        OtherTraffic { port, conn, peer }
    }

    fn poke(&mut self) {
        let _ = self.conn.write_all(b"other loopback traffic");
        let mut buf = [0u8; 64];
        let _ = self.peer.read(&mut buf);
    }
}

fn own_inode() -> u64 {
    std::fs::metadata("/proc/self/ns/net")
        .expect("own netns")
        .ino()
}

/// Captures the service's own namespace on `lo` (filter `tcp`) until the
/// other traffic is seen, then a moment longer; returns the capture, the
/// websocket's own port pair (service, client) and the other port.
fn capture_own_lo(engine: Engine, args: &[&str]) -> (Pcapng, (u16, u16), u16) {
    capture_own_lo_filtered(engine, args, "tcp")
}

/// [`capture_own_lo`] with the capture filter `filter`.
fn capture_own_lo_filtered(
    engine: Engine,
    args: &[&str],
    filter: &str,
) -> (Pcapng, (u16, u16), u16) {
    let svc = Service::start_engine(engine, args);
    let mut other = OtherTraffic::new();
    let query = format!("netns={}&nif=lo&filter={}", own_inode(), urlencode(filter));
    let mut c = start(&svc, &query, &[]);
    let client_port = c.ws.get_ref().0.local_addr().expect("local addr").port();
    let other_port = other.port;
    let seen = until_seen(
        &mut c,
        TRAFFIC_TIMEOUT,
        || other.poke(),
        |p| {
            tcp_ports(p)
                .iter()
                .any(|&(s, d)| s == other_port || d == other_port)
        },
    );
    assert!(seen, "other loopback traffic not captured");
    // Let the stream carry captured packets for a while: without exclusion
    // each message it sends is itself captured and sent again.
    let until = Instant::now() + Duration::from_millis(700);
    while Instant::now() < until {
        other.poke();
        c.read_until(|_| false, Duration::from_millis(100));
    }
    assert!(c.close(Duration::from_secs(15)).is_some(), "close answered");
    (c.capture.pcapng(), (svc.port(), client_port), other_port)
}

fn is_own(ports: (u16, u16), own: (u16, u16)) -> bool {
    ports == own || ports == (own.1, own.0)
}

fn own_connection_is_left_out_of_a_capture_of_the_own_namespace(engine: Engine) {
    let (p, own, other) = capture_own_lo(engine, &[]);
    let ports = tcp_ports(&p);
    assert!(ports.iter().any(|&(s, d)| s == other || d == other));
    let mine = ports.iter().filter(|&&pp| is_own(pp, own)).count();
    assert_eq!(
        mine, 0,
        "{mine} packets of the capture's own connection {own:?}"
    );
    let yaml = target_yaml(&p).expect("document");
    assert_eq!(
        yaml_value(&yaml, "capture-filter").as_deref(),
        Some("\"tcp\""),
        "{yaml}"
    );
    let excluded = yaml_value(&yaml, "excluded-own-connection").expect("exclusion noted");
    assert!(excluded.contains(&format!(":{}", own.0)), "{excluded}");
    assert!(excluded.contains(&format!(":{}", own.1)), "{excluded}");
}
engines!(own_connection_is_left_out_of_a_capture_of_the_own_namespace);

fn no_self_exclusion_captures_the_own_connection(engine: Engine) {
    let (p, own, other) = capture_own_lo(engine, &["--no-self-exclusion"]);
    let ports = tcp_ports(&p);
    assert!(ports.iter().any(|&(s, d)| s == other || d == other));
    assert!(
        ports.iter().any(|&pp| is_own(pp, own)),
        "the own connection {own:?} is missing with --no-self-exclusion"
    );
    let yaml = target_yaml(&p).expect("document");
    assert!(
        yaml_value(&yaml, "excluded-own-connection").is_none(),
        "{yaml}"
    );
}
engines!(no_self_exclusion_captures_the_own_connection);

/// A filter whose keyword moves libpcap's offsets (`vlan`, `mpls`,
/// `pppoes`) must not move the exclusion: it comes first. Loopback carries
/// none of these encapsulations, so each filter passes every packet of the
/// capture's own connection unless the exclusion holds.
fn own_connection_left_out_with_filter(engine: Engine, filter: &str) {
    let (p, own, other) = capture_own_lo_filtered(engine, &[], filter);
    let ports = tcp_ports(&p);
    let mine = ports.iter().filter(|&&pp| is_own(pp, own)).count();
    let others = ports
        .iter()
        .filter(|&&(s, d)| s == other || d == other)
        .count();
    println!(
        "{} engine, filter {filter:?}: {} packets captured, {others} of the other connection, \
         {mine} of the capture's own connection {own:?} (budget 0)",
        engine.name(),
        p.packets.len()
    );
    assert!(others > 0, "{filter:?}: other traffic not captured");
    assert_eq!(
        mine, 0,
        "{filter:?}: {mine} packets of the capture's own connection {own:?}"
    );
    let yaml = target_yaml(&p).expect("document");
    let shown = yaml_value(&yaml, "capture-filter").unwrap_or_default();
    assert!(shown.contains(filter), "{yaml}");
}

fn own_connection_is_left_out_with_not_vlan(engine: Engine) {
    own_connection_left_out_with_filter(engine, "not vlan");
}
engines!(own_connection_is_left_out_with_not_vlan);

fn own_connection_is_left_out_with_not_mpls(engine: Engine) {
    own_connection_left_out_with_filter(engine, "not mpls");
}
engines!(own_connection_is_left_out_with_not_mpls);

fn own_connection_is_left_out_with_not_pppoes(engine: Engine) {
    own_connection_left_out_with_filter(engine, "not pppoes");
}
engines!(own_connection_is_left_out_with_not_pppoes);

fn own_connection_is_left_out_with_vlan_or_greater_1(engine: Engine) {
    own_connection_left_out_with_filter(engine, "vlan or greater 1");
}
engines!(own_connection_is_left_out_with_vlan_or_greater_1);
