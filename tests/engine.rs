//! The native capture engine with real parts: namespaces and veth pairs
//! made here, real UDP traffic (bounded in count and time) sent inside
//! them, the stream read back with the test kit's pcapng reader, tshark and
//! capinfos, and compared with a real dumpcap on the same interfaces.
//! Needs root (namespaces, packet sockets).

use std::collections::HashMap;
use std::fs::File;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use packetflix::service::engine::{Capture, Done, Engine, OpenError, OpenRequest, Rings};
use packetflix_testkit::{pcapng, Netns, Pcapng, VethPair};

const WAKE: Token = Token(0);
const RING: Token = Token(1);
/// The loop's read buffer (the relay's 64 KiB).
const BUF: usize = 64 * 1024;

struct Loop {
    poll: Poll,
    engine: Engine,
    next: u64,
    /// Rings that came for a ticket not yet asked for.
    rings: HashMap<u64, Rings>,
}

impl Loop {
    fn new() -> Loop {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKE).unwrap());
        let engine = Engine::start(waker, 64).unwrap();
        Loop {
            poll,
            engine,
            next: 0,
            rings: HashMap::new(),
        }
    }

    /// Opens as the loop would: hands the request over (timed: it must
    /// not wait for the kernel), then waits for the waker; once the
    /// capture is live, waits for its rings and hands them over.
    fn open(
        &mut self,
        ns: &Netns,
        ifs: &[&str],
        filter: Option<&str>,
        chaste: bool,
    ) -> Result<Capture, OpenError> {
        self.open_timed(ns, ifs, filter, chaste).0
    }

    fn open_timed(
        &mut self,
        ns: &Netns,
        ifs: &[&str],
        filter: Option<&str>,
        chaste: bool,
    ) -> (Result<Capture, OpenError>, Duration, Duration) {
        let (r, ticket, handed, took) = self.open_live(ns, ifs, filter, chaste);
        let r = r.map(|mut c| {
            let rings = self.wait_rings(ticket);
            assert_eq!(rings.ready(), c.interfaces().len(), "every ring ready");
            self.hand_over(&mut c, rings);
            c
        });
        (r, handed, took)
    }

    /// Opens and returns as soon as the capture is live (its rings still
    /// being set up): the result, its ticket, the hand-over's time and the
    /// open's.
    fn open_live(
        &mut self,
        ns: &Netns,
        ifs: &[&str],
        filter: Option<&str>,
        chaste: bool,
    ) -> (Result<Capture, OpenError>, u64, Duration, Duration) {
        self.next += 1;
        let ticket = self.next;
        let req = OpenRequest {
            netns: File::open(format!("/run/netns/{}", ns.name)).unwrap(),
            interfaces: ifs.iter().map(|s| s.to_string()).collect(),
            filter: filter.map(str::to_string),
            chaste,
        };
        let t = Instant::now();
        self.engine.open(ticket, req).unwrap();
        let handed = t.elapsed();
        let mut events = Events::with_capacity(8);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            while let Some(d) = self.engine.next() {
                match d {
                    Done::Opened(o) => {
                        assert_eq!(o.ticket, ticket);
                        return (o.result, ticket, handed, o.took);
                    }
                    Done::Rings(r) => {
                        self.rings.insert(r.ticket, r);
                    }
                }
            }
            self.poll
                .poll(&mut events, Some(Duration::from_millis(200)))
                .unwrap();
        }
        panic!("no answer to the open within 20 s");
    }

    /// The rings of `ticket`, if they came (without waiting).
    fn try_rings(&mut self, ticket: u64) -> Option<Rings> {
        while let Some(d) = self.engine.next() {
            match d {
                Done::Opened(o) => panic!("an open not asked for: {}", o.ticket),
                Done::Rings(r) => {
                    self.rings.insert(r.ticket, r);
                }
            }
        }
        self.rings.remove(&ticket)
    }

    /// Waits (20 s at most) for the rings of `ticket`.
    fn wait_rings(&mut self, ticket: u64) -> Rings {
        let mut events = Events::with_capacity(8);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = self.try_rings(ticket) {
                return r;
            }
            assert!(Instant::now() < deadline, "no rings within 20 s");
            self.poll
                .poll(&mut events, Some(Duration::from_millis(200)))
                .unwrap();
        }
    }

    /// Hands `rings` over to `c` (what does not fit goes to the closers).
    fn hand_over(&self, c: &mut Capture, rings: Rings) {
        let (kept, spare) = c.hand_over(rings);
        assert!(kept.is_empty(), "{kept:?}");
        assert!(spare.is_none(), "rings that found no place");
    }

    /// The live sockets `c` read to their end go to the closers, as the
    /// loop's do; how many there were.
    fn retire(&self, c: &mut Capture) -> usize {
        let (fds, doomed) = c.take_retired();
        if let Some(d) = doomed {
            self.engine.close(d);
        }
        fds.len()
    }

    /// Reads `c` as the loop would until nothing waits, retires its live
    /// sockets and waits until the closers closed them.
    fn settle(&self, c: &mut Capture) {
        let mut buf = vec![0u8; BUF];
        while c.drain(&mut buf).more {}
        self.retire(c);
        self.wait_closed();
    }

    fn wait_closed(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.engine.closing() > 0 {
            assert!(Instant::now() < deadline, "sockets not closed within 20 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Hands the capture to the closers (timed) and waits until its rings
    /// are closed; (hand-over, until closed).
    fn close(&self, c: Capture) -> (Duration, Duration) {
        let t = Instant::now();
        self.engine.close(c);
        let handed = t.elapsed();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.engine.closing() > 0 {
            assert!(Instant::now() < deadline, "rings not closed within 20 s");
            std::thread::sleep(Duration::from_millis(1));
        }
        (handed, t.elapsed())
    }
}

/// Drains until `until` holds for the stream or `secs` pass; the stream.
fn read_until(
    c: &mut Capture,
    buf_len: usize,
    secs: u64,
    until: impl Fn(&Pcapng) -> bool,
) -> Vec<u8> {
    let mut stream = Vec::new();
    let mut buf = vec![0u8; buf_len];
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let d = c.drain(&mut buf);
        stream.extend_from_slice(&buf[..d.bytes]);
        if d.more {
            continue;
        }
        let p = Pcapng::parse(&stream).unwrap();
        if until(&p) || Instant::now() > deadline {
            return stream;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `count` UDP datagrams of `size` bytes from inside `ns` to
/// `dst:port`, one every 0.5 ms at most.
fn send_udp(ns: &Netns, dst: &str, port: u16, count: u32, size: usize) {
    let script = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range({count}):\n s.sendto(b'x'*{size},('{dst}',{port}))\n time.sleep(0.0005)\n"
    );
    let out = ns
        .command(&["timeout", "20", "python3", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// UDP packets to `port` in a parsed stream (Ethernet or cooked framing).
fn udp_to(p: &Pcapng, port: u16) -> usize {
    p.packets
        .iter()
        .filter(|pk| {
            let ip_at = match pk.linktype {
                1 => 14,
                113 => 16,
                101 => 0,
                _ => return false,
            };
            let d = &pk.data;
            d.len() >= ip_at + 24 && d[ip_at] >> 4 == 4 && d[ip_at + 9] == 17 && {
                let ihl = usize::from(d[ip_at] & 0xf) * 4;
                d.len() >= ip_at + ihl + 4
                    && u16::from_be_bytes([d[ip_at + ihl + 2], d[ip_at + ihl + 3]]) == port
            }
        })
        .count()
}

fn port() -> u16 {
    // Ports inside the test's own namespaces: any fixed value is private
    // to them; vary per process so a stray packet of another run cannot
    // match.
    20_000 + (std::process::id() % 20_000) as u16
}

/// (code, value) options of each block of type `t`, in order.
/// A block's fixed part and its options.
type Block = (Vec<u8>, Vec<(u16, Vec<u8>)>);

fn block_options(stream: &[u8], t: u32, fixed: usize) -> Vec<Block> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 12 <= stream.len() {
        let bt = u32::from_ne_bytes(stream[at..at + 4].try_into().unwrap());
        let len = u32::from_ne_bytes(stream[at + 4..at + 8].try_into().unwrap()) as usize;
        if bt == t {
            let body = &stream[at + 8..at + len - 4];
            let mut opts = Vec::new();
            let mut o = fixed;
            while o + 4 <= body.len() {
                let code = u16::from_ne_bytes([body[o], body[o + 1]]);
                let l = usize::from(u16::from_ne_bytes([body[o + 2], body[o + 3]]));
                if code == 0 {
                    break;
                }
                opts.push((code, body[o + 4..o + 4 + l].to_vec()));
                o += 4 + l.div_ceil(4) * 4;
            }
            out.push((body[..fixed].to_vec(), opts));
        }
        at += len;
    }
    out
}

/// A tun device in `ns` (a link type without a link header).
fn add_tun(ns: &Netns, name: &str) {
    ip(&["-n", &ns.name, "tuntap", "add", "mode", "tun", "name", name]);
    ip(&["-n", &ns.name, "link", "set", name, "up"]);
}

/// What dumpcap writes for the same interfaces in `ns`: its stdout for
/// one second.
fn dumpcap_head(ns: &Netns, ifs: &[&str], filter: &str) -> Vec<u8> {
    let mut cmd = vec![
        "timeout",
        "10",
        "dumpcap",
        "-q",
        "-w",
        "-",
        "-a",
        "duration:1",
        "-f",
        filter,
    ];
    for i in ifs {
        cmd.extend(["-i", i]);
    }
    let out = ns.command(&cmd).output().unwrap();
    assert!(
        !out.stdout.is_empty(),
        "dumpcap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn link_types_and_idbs_match_dumpcaps_for_veth_lo_tun_and_any() {
    let pair = VethPair::new();
    add_tun(&pair.a, "ptun0");
    let mut lp = Loop::new();
    let filter = "udp or icmp";
    let ifs = [pair.a_if.as_str(), "lo", "ptun0"];
    let mut c = lp.open(&pair.a, &ifs, Some(filter), true).unwrap();
    let mut any = lp.open(&pair.a, &[], Some(filter), true).unwrap();
    let ours = read_until(&mut c, BUF, 1, |_| true);
    let ours_any = read_until(&mut any, BUF, 1, |_| true);
    let theirs = dumpcap_head(&pair.a, &ifs, filter);
    let theirs_any = dumpcap_head(&pair.a, &["any"], filter);
    for (ours, theirs, n) in [(&ours, &theirs, 3), (&ours_any, &theirs_any, 1)] {
        let a = block_options(ours, 1, 8);
        let b = block_options(theirs, 1, 8);
        assert_eq!(a.len(), n);
        assert_eq!(b.len(), n);
        for ((fa, oa), (fb, ob)) in a.iter().zip(&b) {
            // Link type, reserved, snap length: the same bytes.
            assert_eq!(fa, fb, "fixed fields");
            // if_name, if_tsresol, if_filter, if_os: the same values;
            // dumpcap adds if_description where libpcap has one.
            for code in [2u16, 9, 11, 12] {
                let find = |o: &Vec<(u16, Vec<u8>)>| {
                    o.iter().find(|(c, _)| *c == code).map(|(_, v)| v.clone())
                };
                assert_eq!(find(oa), find(ob), "option {code}");
            }
        }
    }
    let lts: Vec<u16> = Pcapng::parse(&ours)
        .unwrap()
        .interfaces()
        .iter()
        .map(|i| i.linktype)
        .collect();
    assert_eq!(lts, vec![1, 1, 101]);
    assert_eq!(
        Pcapng::parse(&ours_any).unwrap().interfaces()[0].linktype,
        113
    );
    eprintln!("IDBs of veth, lo, tun and any equal dumpcap's field by field");
    lp.close(c);
    lp.close(any);
}

#[test]
fn packets_pass_the_filter_with_nanosecond_times_and_the_isbs_hold_the_kernels_counts() {
    let pair = VethPair::new();
    let mut lp = Loop::new();
    let p = port();
    let mut c = lp
        .open(&pair.b, &[&pair.b_if], Some(&format!("udp port {p}")), true)
        .unwrap();
    send_udp(&pair.a, &pair.b_addr.to_string(), p, 50, 100);
    send_udp(&pair.a, &pair.b_addr.to_string(), p + 1, 20, 100);
    let mut stream = read_until(&mut c, BUF, 5, |s| udp_to(s, p) >= 50);
    stream.extend(c.finish());
    let parsed = Pcapng::parse(&stream).unwrap();
    assert_eq!(parsed.packets.len(), 50, "only the filter's packets");
    assert_eq!(udp_to(&parsed, p), 50);
    assert_eq!(parsed.stats.len(), 1);
    let isb = &parsed.stats[0];
    assert_eq!(isb.counter(pcapng::ISB_IFRECV), Some(50));
    assert_eq!(isb.counter(pcapng::ISB_IFDROP), Some(0));
    // Nanoseconds: tshark shows nine digits, and not all end in 000.
    let times =
        packetflix_testkit::pcapng::tshark_fields(&stream, &["frame.time_epoch", "udp.dstport"]);
    assert_eq!(times.len(), 50);
    assert!(times.iter().all(|r| r[1] == p.to_string()));
    assert!(times
        .iter()
        .all(|r| r[0].split('.').nth(1).is_some_and(|f| f.len() == 9)));
    assert!(times.iter().any(|r| !r[0].ends_with("000")), "{times:?}");
    lp.close(c);
}

#[test]
fn a_ring_not_read_drops_in_the_kernel_and_the_isb_counts_it() {
    let pair = VethPair::new();
    let mut lp = Loop::new();
    let p = port();
    let mut c = lp
        .open(&pair.b, &[&pair.b_if], Some(&format!("udp port {p}")), true)
        .unwrap();
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         for i in range(3000):\n s.sendto(b'x'*64,('{}',{p}))\n",
        pair.b_addr
    );
    let out = pair
        .a
        .command(&["timeout", "20", "python3", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(200));
    let mut stream = read_until(&mut c, BUF, 1, |_| false);
    stream.extend(c.finish());
    let parsed = Pcapng::parse(&stream).unwrap();
    let counter = |code| parsed.stats[0].counter(code).expect("ISB counter");
    let (recv, drop) = (counter(pcapng::ISB_IFRECV), counter(pcapng::ISB_IFDROP));
    eprintln!(
        "sent 3000, captured {}, kernel: received {recv}, dropped {drop}",
        parsed.packets.len()
    );
    assert!(drop > 0, "a 1024-frame ring cannot hold 3000 packets");
    assert_eq!(recv, parsed.packets.len() as u64 + drop);
    assert_eq!(recv, 3000);
    lp.close(c);
}

#[test]
fn any_is_cooked_filtered_in_the_kernel_and_sees_loopback_packets_once() {
    let pair = VethPair::new();
    let mut lp = Loop::new();
    let p = port();
    // `inbound` reads the cooked packet type: rewritten to the kernel's.
    let mut c = lp
        .open(
            &pair.a,
            &[],
            Some(&format!("udp port {p} and inbound")),
            true,
        )
        .unwrap();
    send_udp(&pair.b, &pair.a_addr.to_string(), p, 20, 50);
    send_udp(&pair.a, &pair.b_addr.to_string(), p, 20, 50);
    send_udp(&pair.a, &pair.a.addr.to_string(), p, 10, 50);
    let stream = read_until(&mut c, BUF, 5, |s| udp_to(s, p) >= 30);
    let parsed = Pcapng::parse(&stream).unwrap();
    assert_eq!(parsed.interfaces()[0].linktype, 113);
    // 20 in over veth, 10 over lo (once: the outgoing copy is dropped).
    assert_eq!(udp_to(&parsed, p), 30);
    let rows = packetflix_testkit::pcapng::tshark_fields(&stream, &["sll.pkttype", "udp.dstport"]);
    assert!(
        rows.iter().all(|r| r[0] == "0" && r[1] == p.to_string()),
        "{rows:?}"
    );
    lp.close(c);
    // A filter that reads the cooked header's address is refused, with
    // the reason.
    let e = lp
        .open(&pair.a, &[], Some("link[6] = 2"), true)
        .err()
        .unwrap();
    assert!(e.request, "the request's fault: {e}");
    assert!(e.reason.contains("byte 6 of the cooked header"), "{e}");
}

#[test]
fn a_bad_filter_is_refused_with_libpcaps_words() {
    let ns = Netns::new();
    let mut lp = Loop::new();
    let e = lp
        .open(&ns, &["lo"], Some("nonsense(("), true)
        .err()
        .unwrap();
    assert!(e.request, "the request's fault: {e}");
    assert!(
        e.reason
            .starts_with("Invalid capture filter for interface 'lo' ("),
        "{e}"
    );
    assert!(e.reason.contains("syntax error"), "{e}");
    assert!(e.reason.ends_with(": \"nonsense((\""), "{e}");
    // Over the clause bound: that reason, in one line.
    let long = vec!["port 1"; 65].join(" or ");
    let e = lp.open(&ns, &["lo"], Some(&long), true).err().unwrap();
    assert!(e.request, "the request's fault: {e}");
    assert!(
        e.reason
            .starts_with("the capture filter has 65 and/or clauses"),
        "{e}"
    );
    let e = lp.open(&ns, &["nosuch0"], None, true).err().unwrap();
    assert!(e.reason.contains("nosuch0"), "{e}");
}

fn promiscuity(ns: &Netns, ifname: &str) -> u32 {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-d", "link", "show", ifname])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "promiscuity")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn chaste_captures_leave_promiscuous_mode_off() {
    let pair = VethPair::new();
    let mut lp = Loop::new();
    let chaste = lp.open(&pair.a, &[&pair.a_if], None, true).unwrap();
    assert_eq!(promiscuity(&pair.a, &pair.a_if), 0);
    let mut promisc = lp.open(&pair.a, &[&pair.a_if], None, false).unwrap();
    // Both of its sockets (live, ring) hold the mode until the live one is
    // read out and closed.
    lp.settle(&mut promisc);
    assert_eq!(promiscuity(&pair.a, &pair.a_if), 1);
    lp.close(promisc);
    assert_eq!(promiscuity(&pair.a, &pair.a_if), 0);
    lp.close(chaste);
}

#[test]
fn packets_larger_than_a_frame_come_whole_over_jumbo_veth_and_lo() {
    let pair = VethPair::new();
    for (ns, ifname) in [(&pair.a, &pair.a_if), (&pair.b, &pair.b_if)] {
        ip(&["-n", &ns.name, "link", "set", ifname, "mtu", "9000"]);
    }
    let mut lp = Loop::new();
    let p = port();
    let filter = format!("udp port {p}");
    let mut c = lp
        .open(&pair.b, &[&pair.b_if], Some(&filter), true)
        .unwrap();
    send_udp(&pair.a, &pair.b_addr.to_string(), p, 5, 8000);
    let stream = read_until(&mut c, BUF, 5, |s| udp_to(s, p) >= 5);
    let parsed = Pcapng::parse(&stream).unwrap();
    assert_eq!(udp_to(&parsed, p), 5);
    assert!(parsed
        .packets
        .iter()
        .all(|pk| pk.data.len() == 14 + 20 + 8 + 8000));
    lp.close(c);
    // lo: 60000-byte datagrams in one packet, read through a 4 KiB buffer
    // (each EPB handed out over several drains).
    let mut c = lp.open(&pair.a, &["lo"], Some(&filter), true).unwrap();
    send_udp(&pair.a, &pair.a.addr.to_string(), p, 3, 60_000);
    let stream = read_until(&mut c, 4096, 5, |s| udp_to(s, p) >= 3);
    let parsed = Pcapng::parse(&stream).unwrap();
    assert_eq!(parsed.complete_len, stream.len());
    assert_eq!(udp_to(&parsed, p), 3);
    assert!(parsed
        .packets
        .iter()
        .all(|pk| pk.data.len() == 14 + 20 + 8 + 60_000));
    let lens = packetflix_testkit::pcapng::tshark_fields(&stream, &["frame.len", "frame.cap_len"]);
    assert!(
        lens.iter().all(|r| r[0] == "60042" && r[1] == "60042"),
        "{lens:?}"
    );
    lp.close(c);
}

#[test]
fn an_interface_deleted_under_a_capture_ends_it_with_dumpcaps_line() {
    let pair = VethPair::new();
    let mut lp = Loop::new();
    let p = port();
    let mut c = lp
        .open(&pair.a, &[&pair.a_if], Some(&format!("udp port {p}")), true)
        .unwrap();
    // Registered as the loop does in immediate mode: the error wakes it.
    for fd in c.fds().collect::<Vec<_>>() {
        lp.poll
            .registry()
            .register(&mut mio::unix::SourceFd(&fd), RING, Interest::READABLE)
            .unwrap();
    }
    // Down, then up: not the end (dumpcap goes on too); packets resume.
    ip(&["-n", &pair.a.name, "link", "set", &pair.a_if, "down"]);
    let mut events = Events::with_capacity(8);
    lp.poll
        .poll(&mut events, Some(Duration::from_secs(2)))
        .unwrap();
    assert!(
        events.iter().any(|e| e.token() == RING && e.is_error()),
        "no error event"
    );
    assert_eq!(c.check(), Ok(()));
    ip(&["-n", &pair.a.name, "link", "set", &pair.a_if, "up"]);
    ip(&["-n", &pair.b.name, "link", "set", &pair.b_if, "up"]);
    std::thread::sleep(Duration::from_millis(300));
    send_udp(&pair.b, &pair.a_addr.to_string(), p, 5, 10);
    let stream = read_until(&mut c, BUF, 5, |s| udp_to(s, p) >= 5);
    assert_eq!(udp_to(&Pcapng::parse(&stream).unwrap(), p), 5);
    // Deleted: the end, in dumpcap's words.
    ip(&["-n", &pair.a.name, "link", "del", &pair.a_if]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let e = loop {
        lp.poll
            .poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        if let Err(e) = c.check() {
            break e;
        }
        assert!(Instant::now() < deadline, "no error after the delete");
    };
    assert_eq!(
        e,
        format!(
            "The network adapter \"{}\" is no longer attached; the capture has stopped.",
            pair.a_if
        )
    );
    lp.close(c);
}

#[test]
fn an_interface_deleted_while_down_ends_the_capture_on_a_later_check() {
    let pair = VethPair::new();
    let mut lp = Loop::new();
    let mut c = lp.open(&pair.a, &[&pair.a_if], None, true).unwrap();
    // Down: reported (the socket's error), not the end.
    ip(&["-n", &pair.a.name, "link", "set", &pair.a_if, "down"]);
    assert_eq!(c.check(), Ok(()));
    assert!(c.down(), "the capture knows its interface is down");
    // Deleted while down: the kernel reports nothing more to the socket,
    // yet the next check must see it gone.
    ip(&["-n", &pair.a.name, "link", "del", &pair.a_if]);
    assert_eq!(
        c.check(),
        Err(format!(
            "The network adapter \"{}\" is no longer attached; the capture has stopped.",
            pair.a_if
        ))
    );
    lp.close(c);
}

#[test]
fn an_interface_down_then_up_is_no_longer_down_once_a_packet_comes() {
    let pair = VethPair::new();
    let mut lp = Loop::new();
    let p = port();
    let mut c = lp
        .open(&pair.a, &[&pair.a_if], Some(&format!("udp port {p}")), true)
        .unwrap();
    ip(&["-n", &pair.a.name, "link", "set", &pair.a_if, "down"]);
    assert_eq!(c.check(), Ok(()));
    assert!(c.down());
    ip(&["-n", &pair.a.name, "link", "set", &pair.a_if, "up"]);
    ip(&["-n", &pair.b.name, "link", "set", &pair.b_if, "up"]);
    std::thread::sleep(Duration::from_millis(300));
    send_udp(&pair.b, &pair.a_addr.to_string(), p, 3, 10);
    let stream = read_until(&mut c, BUF, 5, |s| udp_to(s, p) >= 3);
    assert_eq!(udp_to(&Pcapng::parse(&stream).unwrap(), p), 3);
    assert!(!c.down(), "packets came: the interface is up");
    assert_eq!(c.check(), Ok(()));
    lp.close(c);
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn maps_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn a_thousand_open_close_cycles_leave_nothing_behind_and_never_wait_on_the_caller() {
    let ns = Netns::new();
    let mut lp = Loop::new();
    // Warm up (threads, allocator, the thread's receive buffer for live
    // sockets), then take the baseline.
    for _ in 0..5 {
        let mut c = lp.open(&ns, &["lo"], Some("udp"), true).unwrap();
        lp.settle(&mut c);
        lp.close(c);
    }
    let (fds, maps, rss) = (fd_count(), maps_count(), rss_kib());
    // The check below can see a ring left behind: an open one shows
    // (its live socket, read to its end, is retired).
    // (A helper thread's first allocation may map its allocator arena:
    // one or two mappings of slack.)
    let ring_shows = |fds_now: usize, maps_now: usize| {
        assert_eq!(fds_now, fds + 2, "the ring's and the live socket's");
        assert!(
            (maps + 1..=maps + 3).contains(&maps_now),
            "the ring's mapping: {maps} -> {maps_now}"
        );
    };
    // (What the ring thread left to the closers, a duplicate of the live
    // socket's descriptor among it, is closed first.)
    let mut c = lp.open(&ns, &["lo"], None, true).unwrap();
    lp.wait_closed();
    ring_shows(fd_count(), maps_count());
    let mut buf = vec![0u8; 4096];
    while c.drain(&mut buf).more {}
    assert_eq!(lp.retire(&mut c), 1, "the live socket is read out");
    lp.close(c);
    let c = lp.open(&ns, &["lo"], None, true).unwrap();
    lp.wait_closed();
    ring_shows(fd_count(), maps_count());
    lp.close(c);
    let (mut hand_open, mut took_open, mut hand_close, mut took_close) =
        (vec![], vec![], vec![], vec![]);
    let mut longest_hand = Duration::ZERO;
    for n in 0..1000 {
        let ifs: &[&str] = if n % 2 == 0 { &["lo"] } else { &[] };
        let (c, handed, took) = lp.open_timed(&ns, ifs, Some("udp"), true);
        let mut c = c.unwrap();
        assert!(c.has_packet(), "the head is waiting");
        let mut buf = vec![0u8; 4096];
        assert!(c.drain(&mut buf).bytes > 0);
        let (h, t) = lp.close(c);
        longest_hand = longest_hand.max(handed).max(h);
        hand_open.push(handed);
        took_open.push(took);
        hand_close.push(h);
        took_close.push(t);
    }
    eprintln!(
        "1000 cycles: open handed over in {:?} median, ring(s) ready {:?} median; close handed over in {:?} median, rings closed {:?} median; longest hand-over {:?}",
        median(&mut hand_open),
        median(&mut took_open),
        median(&mut hand_close),
        median(&mut took_close),
        longest_hand
    );
    // Far past any hand-over: the caller never waits for the kernel.
    assert!(longest_hand < Duration::from_millis(50), "{longest_hand:?}");
    let (fds2, maps2, rss2) = (fd_count(), maps_count(), rss_kib());
    eprintln!("descriptors {fds} -> {fds2}, mappings {maps} -> {maps2}, RSS {rss} -> {rss2} KiB");
    assert_eq!(fds2, fds, "descriptors left behind");
    assert!(maps2 <= maps + 4, "mappings left behind: {maps} -> {maps2}");
    assert!(
        rss2 < rss + 8 * 1024,
        "memory left behind: {rss} -> {rss2} KiB"
    );
}

/// Datagrams flooded into a capture across its hand-over, none read until
/// the ring took over: the live socket's queue and the ring fill and the
/// kernel drops.
const FLOOD: u32 = 12_000;

/// The sequence numbers (first four payload bytes) of the UDP datagrams
/// to `port`, in stream order (Ethernet framing).
fn sequence(p: &Pcapng, port: u16) -> Vec<u32> {
    p.packets
        .iter()
        .filter_map(|pk| {
            let ip = pk.data.get(14..)?;
            if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
                return None;
            }
            let udp = ip.get(usize::from(ip[0] & 0xf) * 4..)?;
            if u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]) != port {
                return None;
            }
            Some(u32::from_be_bytes(udp.get(8..12)?.try_into().ok()?))
        })
        .collect()
}

#[test]
fn a_flood_across_the_hand_over_is_counted_as_the_kernel_saw_it() {
    let pair = VethPair::new();
    let mut lp = Loop::new();
    let p = port();
    let (c, ticket, _, _) = lp.open_live(
        &pair.b,
        &[&pair.b_if],
        Some(&format!("udp dst port {p}")),
        true,
    );
    let mut c = c.unwrap();
    // Sent into the live capture, across its rings' set-up: a datagram
    // every 10 µs at most, bounded in time.
    let sock = pair.a.udp_socket();
    let t = Instant::now();
    let mut rings = None;
    let mut sent = 0;
    while sent < FLOOD && t.elapsed() < Duration::from_secs(10) {
        let mut payload = [0x5au8; 64];
        payload[..4].copy_from_slice(&sent.to_be_bytes());
        sock.send_to(&payload, (pair.b_addr, p)).unwrap();
        sent += 1;
        if rings.is_none() {
            rings = lp.try_rings(ticket);
        }
        let until = Instant::now() + Duration::from_micros(10);
        while Instant::now() < until {}
    }
    let sending = t.elapsed();
    let came_during = rings.is_some();
    let rings = rings.unwrap_or_else(|| lp.wait_rings(ticket));
    assert_eq!(rings.ready(), 1);
    lp.hand_over(&mut c, rings);
    let mut stream = read_until(&mut c, BUF, 1, |_| false);
    assert_eq!(lp.retire(&mut c), 1, "the live socket is read out");
    assert!(c.on_rings());
    stream.extend(c.finish());
    let parsed = Pcapng::parse(&stream).unwrap();
    let seqs = sequence(&parsed, p);
    let counter = |code| parsed.stats[0].counter(code).expect("ISB counter");
    let (recv, drop) = (counter(pcapng::ISB_IFRECV), counter(pcapng::ISB_IFDROP));
    eprintln!(
        "sent {sent} in {sending:?} (rings ready {}), captured {}; kernel: received {recv}, dropped {drop}",
        if came_during { "meanwhile" } else { "after" },
        seqs.len()
    );
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "captured twice or out of order"
    );
    assert_eq!(
        parsed.packets.len(),
        seqs.len(),
        "only the filter's packets"
    );
    // The kernel saw every one. A datagram whose walk of the packet taps
    // fell between the ring's counters being read and the live socket
    // being stopped (two system calls in a row on the ring thread) and
    // that the live socket dropped is counted by both, as received and
    // dropped (see `engine::handover`): none when nothing is dropped (the
    // tests of datagrams across the hand-over check that), a few under
    // this flood (100,000 a second) if the ring thread is preempted in
    // between. Bounded here far above what was seen (0 to 4).
    let extra = recv
        .checked_sub(u64::from(sent))
        .expect("isb_ifrecv below what was sent");
    assert!(
        extra <= u64::from(sent) / 100,
        "isb_ifrecv {recv} for {sent} sent"
    );
    assert!(
        drop > 0,
        "nothing read for {sending:?}: the kernel must drop"
    );
    assert_eq!(recv, seqs.len() as u64 + drop, "captured + dropped");
    // Every datagram not captured is a drop the kernel counted, no more.
    let missing = u64::from(sent) - seqs.len() as u64;
    assert_eq!(missing + extra, drop);
    lp.close(c);
}

#[test]
fn captures_closed_while_their_rings_are_set_up_leave_no_socket_descriptor_mapping_or_thread() {
    let pair = VethPair::new();
    let mut lp = Loop::new();
    let ifs: [&[&str]; 3] = [&["lo"], &[], &["lo", &pair.a_if]];
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let mine =
        || packetflix_testkit::procs::packet_sockets_of(std::process::id() as i32, &pair.a.path());
    let mut cycle = |n: usize| {
        let (c, ticket, _, _) = lp.open_live(&pair.a, ifs[n % 3], None, true);
        let mut c = c.unwrap();
        let mut buf = vec![0u8; BUF];
        assert!(c.drain(&mut buf).bytes > 0, "the head");
        // Closed at once, or while the ring is being set up (8-16 ms).
        std::thread::sleep(Duration::from_millis([0, 2, 6][n % 3]));
        lp.engine.close(c);
        let rings = lp.wait_rings(ticket);
        lp.engine.close(rings);
        lp.wait_closed();
    };
    for n in 0..6 {
        cycle(n);
    }
    let (fds, maps, tasks) = (fd_count(), maps_count(), threads());
    assert_eq!(mine(), 0);
    for n in 0..60 {
        cycle(n);
    }
    let (fds2, maps2, tasks2) = (fd_count(), maps_count(), threads());
    eprintln!("60 captures closed early: descriptors {fds} -> {fds2}, mappings {maps} -> {maps2}, threads {tasks} -> {tasks2}");
    assert_eq!(mine(), 0, "packet sockets left in the namespace");
    assert_eq!(fds2, fds, "descriptors left behind");
    // A ring left behind would show as a descriptor and a packet socket
    // too; the mappings may grow by the allocator's arenas of the threads
    // that set up several rings in parallel (two each, eight per core).
    assert!(
        maps2 <= maps + 32,
        "mappings left behind: {maps} -> {maps2}"
    );
    assert_eq!(tasks2, tasks, "threads left behind");
}
