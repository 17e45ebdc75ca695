//! One-line packet summaries, so the demo shows a capture without needing
//! tshark.
//!
//! Reads whole pcapng blocks (as [`super::blocks::BlockCutter`] hands them
//! out), remembers each interface's link type and timestamp resolution, and
//! names what it recognises in each packet: ARP, IPv4/IPv6, ICMP, UDP, TCP.
//! This is a teaching aid, not a dissector: anything else gets its EtherType
//! or protocol number. No I/O here; packet bytes are never trusted for a
//! length without a bounds check.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::blocks::{Order, SHB};

const IDB: u32 = 1;
const EPB: u32 = 6;
/// `if_tsresol`, IDB option 9 (pcapng spec section 4.2).
const OPT_TSRESOL: u16 = 9;
/// Without `if_tsresol`, timestamps count microseconds.
const DEFAULT_TICKS_PER_SEC: f64 = 1e6;
/// Link types (tcpdump.org/linktypes.html).
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_LINUX_SLL2: u32 = 276;
/// How much of a UDP payload the demo shows.
const PAYLOAD_PREVIEW: usize = 40;

/// Turns blocks into numbered summary lines.
#[derive(Debug, Default)]
pub struct Decoder {
    order: Option<Order>,
    /// Per interface of the current section: link type, ticks per second.
    interfaces: Vec<(u32, f64)>,
    first_time: Option<f64>,
    number: u64,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Summaries of the packets in `blocks` (whole blocks only).
    pub fn blocks(&mut self, mut blocks: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        while blocks.len() >= 12 {
            let raw_type = u32::from_le_bytes([blocks[0], blocks[1], blocks[2], blocks[3]]);
            if raw_type == SHB {
                self.order = Order::of_section(blocks);
                self.interfaces.clear();
            }
            let Some(order) = self.order else { break };
            let len = order.u32(blocks, 4) as usize;
            if len < 12 || len > blocks.len() {
                break;
            }
            let body = &blocks[8..len - 4];
            match order.u32(blocks, 0) {
                IDB => self.interface(order, body),
                EPB => {
                    if let Some(line) = self.packet(order, body) {
                        lines.push(line);
                    }
                }
                _ => {}
            }
            blocks = &blocks[len..];
        }
        lines
    }

    fn interface(&mut self, order: Order, body: &[u8]) {
        if body.len() < 8 {
            return;
        }
        let link = u32::from(order.u16(body, 0));
        let mut ticks = DEFAULT_TICKS_PER_SEC;
        let mut opts = &body[8..];
        while opts.len() >= 4 {
            let (code, olen) = (order.u16(opts, 0), order.u16(opts, 2) as usize);
            if code == 0 || opts.len() < 4 + olen {
                break;
            }
            if code == OPT_TSRESOL && olen >= 1 {
                let r = opts[4];
                let exp = i32::from(r & 0x7F);
                ticks = if r & 0x80 == 0 {
                    10f64.powi(exp)
                } else {
                    2f64.powi(exp)
                };
            }
            opts = &opts[(4 + olen.div_ceil(4) * 4).min(opts.len())..];
        }
        self.interfaces.push((link, ticks));
    }

    fn packet(&mut self, order: Order, body: &[u8]) -> Option<String> {
        if body.len() < 20 {
            return None;
        }
        let iface = order.u32(body, 0) as usize;
        let ts = (u64::from(order.u32(body, 4)) << 32) | u64::from(order.u32(body, 8));
        let captured = (order.u32(body, 12) as usize).min(body.len() - 20);
        let wire_len = order.u32(body, 16);
        let data = &body[20..20 + captured];
        let (link, ticks) = self
            .interfaces
            .get(iface)
            .copied()
            .unwrap_or((LINKTYPE_ETHERNET, DEFAULT_TICKS_PER_SEC));
        let time = ts as f64 / ticks;
        let first = *self.first_time.get_or_insert(time);
        self.number += 1;
        Some(format!(
            "{:>4} {:>10.6}  {}  ({wire_len} bytes)",
            self.number,
            time - first,
            summarize(link, data)
        ))
    }
}

/// What a packet of link type `link` is, in a few words.
pub fn summarize(link: u32, data: &[u8]) -> String {
    let (ethertype, payload) = match link {
        LINKTYPE_ETHERNET => match ethernet(data) {
            Some(x) => x,
            None => return "truncated Ethernet frame".into(),
        },
        LINKTYPE_LINUX_SLL if data.len() >= 16 => {
            (u16::from_be_bytes([data[14], data[15]]), &data[16..])
        }
        LINKTYPE_LINUX_SLL2 if data.len() >= 20 => {
            (u16::from_be_bytes([data[0], data[1]]), &data[20..])
        }
        LINKTYPE_RAW => match data.first().map(|b| b >> 4) {
            Some(4) => (0x0800, data),
            Some(6) => (0x86DD, data),
            _ => return "raw packet of unknown IP version".into(),
        },
        other => return format!("link type {other}, {} bytes", data.len()),
    };
    match ethertype {
        0x0806 => arp(payload),
        0x0800 => ipv4(payload),
        0x86DD => ipv6(payload),
        other => format!("EtherType 0x{other:04x}"),
    }
}

fn ethernet(data: &[u8]) -> Option<(u16, &[u8])> {
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]);
    // Skip 802.1Q/802.1ad tags to the real EtherType.
    while ethertype == 0x8100 || ethertype == 0x88A8 {
        at += 4;
        ethertype = u16::from_be_bytes([*data.get(at)?, *data.get(at + 1)?]);
    }
    Some((ethertype, data.get(at + 2..)?))
}

fn arp(p: &[u8]) -> String {
    if p.len() < 28 || p[4] != 6 || p[5] != 4 {
        return "ARP".into();
    }
    let sender = Ipv4Addr::new(p[14], p[15], p[16], p[17]);
    let target = Ipv4Addr::new(p[24], p[25], p[26], p[27]);
    let mac: Vec<String> = p[8..14].iter().map(|b| format!("{b:02x}")).collect();
    match u16::from_be_bytes([p[6], p[7]]) {
        1 => format!("ARP  who has {target}? tell {sender}"),
        2 => format!("ARP  {sender} is at {}", mac.join(":")),
        op => format!("ARP  operation {op}"),
    }
}

fn ipv4(p: &[u8]) -> String {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return "truncated IPv4 packet".into();
    }
    let header = usize::from(p[0] & 0x0F) * 4;
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let rest = p.get(header..).unwrap_or(&[]);
    format!("{src} → {dst}  {}", transport(p[9], rest, false))
}

fn ipv6(p: &[u8]) -> String {
    if p.len() < 40 || p[0] >> 4 != 6 {
        return "truncated IPv6 packet".into();
    }
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&p[at..at + 16]);
        Ipv6Addr::from(a)
    };
    format!(
        "{} → {}  {}",
        addr(8),
        addr(24),
        transport(p[6], &p[40..], true)
    )
}

fn transport(proto: u8, p: &[u8], v6: bool) -> String {
    let port = |at: usize| p.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match proto {
        1 | 58 => {
            let (Some(&kind), Some(&code)) = (p.first(), p.get(1)) else {
                return "ICMP (truncated)".into();
            };
            let name = match (v6, kind, code) {
                (false, 0, _) | (true, 129, _) => "echo reply".to_string(),
                (false, 8, _) | (true, 128, _) => "echo request".to_string(),
                (false, 3, 3) | (true, 1, 4) => {
                    "destination unreachable (port unreachable)".to_string()
                }
                (false, 3, c) | (true, 1, c) => format!("destination unreachable (code {c})"),
                (true, 133, _) => "router solicitation".to_string(),
                (true, 134, _) => "router advertisement".to_string(),
                (true, 135, _) => "neighbor solicitation".to_string(),
                (true, 136, _) => "neighbor advertisement".to_string(),
                (true, 143, _) => "multicast listener report v2".to_string(),
                (_, k, c) => format!("type {k} code {c}"),
            };
            format!("{}  {name}", if v6 { "ICMPv6" } else { "ICMP" })
        }
        17 => match (port(0), port(2)) {
            (Some(s), Some(d)) => {
                let payload = p.get(8..).unwrap_or(&[]);
                format!("UDP  {s} → {d}  len={}{}", payload.len(), preview(payload))
            }
            _ => "UDP (truncated)".into(),
        },
        6 => match (port(0), port(2), p.get(13)) {
            (Some(s), Some(d), Some(&f)) => {
                let flags: Vec<&str> = [
                    (0x02, "SYN"),
                    (0x10, "ACK"),
                    (0x01, "FIN"),
                    (0x04, "RST"),
                    (0x08, "PSH"),
                ]
                .iter()
                .filter(|(bit, _)| f & bit != 0)
                .map(|(_, n)| *n)
                .collect();
                format!("TCP  {s} → {d}  [{}]", flags.join(", "))
            }
            _ => "TCP (truncated)".into(),
        },
        other => format!("IP protocol {other}"),
    }
}

/// A quoted preview if the payload is printable text.
fn preview(payload: &[u8]) -> String {
    let shown = &payload[..payload.len().min(PAYLOAD_PREVIEW)];
    if !shown.is_empty() && shown.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        let more = if payload.len() > shown.len() {
            "…"
        } else {
            ""
        };
        format!("  \"{}{more}\"", String::from_utf8_lossy(shown))
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::super::blocks::tests::{block_le, shb_le};
    use super::*;

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4_udp(payload: &[u8]) -> Vec<u8> {
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        ip.extend_from_slice(&40000u16.to_be_bytes());
        ip.extend_from_slice(&9999u16.to_be_bytes());
        ip.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(payload);
        ip
    }

    fn epb(iface: u32, ts: u64, data: &[u8]) -> Vec<u8> {
        let mut body = iface.to_le_bytes().to_vec();
        body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(ts as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        block_le(EPB, &body)
    }

    #[test]
    fn udp_over_ethernet_shows_addresses_ports_and_text() {
        let s = summarize(LINKTYPE_ETHERNET, &eth(0x0800, &ipv4_udp(b"hello demo")));
        assert_eq!(
            s,
            "10.0.0.1 → 10.0.0.2  UDP  40000 → 9999  len=10  \"hello demo\""
        );
    }

    #[test]
    fn binary_payload_gets_no_preview() {
        let s = summarize(LINKTYPE_ETHERNET, &eth(0x0800, &ipv4_udp(&[0, 1, 2])));
        assert!(s.ends_with("len=3"), "{s}");
    }

    #[test]
    fn arp_request_and_vlan_tag_are_understood() {
        let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1];
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&[10, 0, 0, 2]);
        assert_eq!(
            summarize(LINKTYPE_ETHERNET, &eth(0x0806, &arp)),
            "ARP  who has 10.0.0.2? tell 10.0.0.1"
        );
        let mut tagged = vec![0, 5, 0x08, 0x06]; // TCI, then the real EtherType
        tagged.extend_from_slice(&arp);
        assert_eq!(
            summarize(LINKTYPE_ETHERNET, &eth(0x8100, &tagged)),
            "ARP  who has 10.0.0.2? tell 10.0.0.1"
        );
    }

    #[test]
    fn icmp_port_unreachable_is_named() {
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
        ];
        ip.extend_from_slice(&[3, 3, 0, 0]);
        assert_eq!(
            summarize(LINKTYPE_ETHERNET, &eth(0x0800, &ip)),
            "10.0.0.2 → 10.0.0.1  ICMP  destination unreachable (port unreachable)"
        );
    }

    #[test]
    fn truncated_and_unknown_frames_do_not_panic() {
        assert_eq!(
            summarize(LINKTYPE_ETHERNET, &[1, 2, 3]),
            "truncated Ethernet frame"
        );
        assert_eq!(
            summarize(LINKTYPE_ETHERNET, &eth(0x0800, &[0x45, 0])),
            "truncated IPv4 packet"
        );
        assert_eq!(
            summarize(LINKTYPE_ETHERNET, &eth(0x88CC, &[])),
            "EtherType 0x88cc"
        );
        assert_eq!(summarize(999, &[0; 4]), "link type 999, 4 bytes");
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 6, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
        ];
        ip.extend_from_slice(&[0, 80]);
        assert_eq!(
            summarize(LINKTYPE_RAW, &ip),
            "1.1.1.1 → 2.2.2.2  TCP (truncated)"
        );
    }

    #[test]
    fn decoder_numbers_packets_with_relative_times_per_interface_resolution() {
        let mut s = shb_le();
        // IDB: Ethernet, snaplen 0, option if_tsresol=3 (milliseconds), end.
        let mut idb = vec![1, 0, 0, 0, 0, 0, 0, 0];
        idb.extend_from_slice(&[9, 0, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
        s.extend(block_le(IDB, &idb));
        let frame = eth(0x0800, &ipv4_udp(b"x"));
        s.extend(epb(0, 1_000, &frame));
        s.extend(epb(0, 3_500, &frame));
        let lines = Decoder::new().blocks(&s);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("   1   0.000000  10.0.0.1"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("   2   2.500000  10.0.0.1"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].ends_with(&format!("({} bytes)", frame.len())),
            "{}",
            lines[1]
        );
    }
}
