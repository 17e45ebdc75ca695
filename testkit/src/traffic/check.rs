//! The engine bench client's view of a real capture: a pcapng stream (as
//! the service relays dumpcap's, or its own engine's) decoded as it
//! arrives, counting the generator's packets per flow and taking each
//! one's latency (arrival at the client minus the send time it carries).
//! Sans-IO, a [`Sink`] for the bench's one-thread client: bytes in, counts
//! out, no allocation per packet.
//!
//! It reads little-endian sections (what dumpcap and the service write on
//! the machines we run), Ethernet and Linux cooked (SLL, SLL2) link types,
//! and keeps each interface's last Interface Statistics Block counts (what
//! the capture program says the kernel received and dropped). Anything
//! that is not one of our packets is counted as "other"; damaged framing
//! is an error, like the synthetic program's check.

use crate::bench::client::Sink;
use crate::pcapng::{le16, le32, le64, Splitter};

use super::frame::{self, Decoded, Flows};

/// pcapng block types (pcapng spec, sections 4.1–4.6).
const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const EPB: u32 = 6;
const ISB: u32 = 5;
/// pcapng byte-order magic as it reads in a little-endian section.
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// EPB bytes before the packet data (block type, length, interface, two
/// timestamp halves, captured and original length).
const EPB_HEAD: usize = 28;
/// ISB options: isb_ifrecv, isb_ifdrop (pcapng spec, section 4.6).
const ISB_IFRECV: u16 = 4;
const ISB_IFDROP: u16 = 5;
/// Link types (tcpdump.org LINKTYPE_*).
const LINKTYPE_ETHERNET: u16 = 1;
const LINKTYPE_LINUX_SLL: u16 = 113;
const LINKTYPE_LINUX_SLL2: u16 = 276;
/// EtherType of IPv4, as the cooked headers carry it.
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
/// Interfaces one section may describe here (the bench asks for one per
/// target); more means the stream is not what we think.
const MAX_INTERFACES: usize = 4096;

/// Decodes one captured packet of link type `linktype` if it is ours.
pub fn decode(linktype: u16, data: &[u8]) -> Option<Decoded> {
    match linktype {
        LINKTYPE_ETHERNET => frame::decode_ethernet(data),
        LINKTYPE_LINUX_SLL if data.get(14..16)? == ETHERTYPE_IPV4 => {
            frame::decode_ipv4(data.get(16..)?)
        }
        LINKTYPE_LINUX_SLL2 if data.get(0..2)? == ETHERTYPE_IPV4 => {
            frame::decode_ipv4(data.get(20..)?)
        }
        _ => None,
    }
}

/// What the capture program's statistics block said of one interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfStats {
    pub received: Option<u64>,
    pub dropped: Option<u64>,
}

/// The decoder of one capture stream.
#[derive(Debug, Default)]
pub struct TrafficCheck {
    split: Splitter,
    bytes: u64,
    blocks: u64,
    /// Link type of each interface of the current section.
    linktypes: Vec<u16>,
    pub flows: Flows,
    /// Packets that were not the generator's.
    pub other: u64,
    /// The last statistics seen per interface of the current section.
    pub if_stats: Vec<IfStats>,
    record_latency: bool,
    latencies_ns: Vec<u64>,
    first_packet_ns: Option<u64>,
    /// CLOCK_MONOTONIC of the feed that brought the latest packet of ours.
    pub last_packet_ns: Option<u64>,
    error: Option<String>,
}

impl TrafficCheck {
    pub fn new(record_latency: bool) -> TrafficCheck {
        TrafficCheck {
            record_latency,
            ..Default::default()
        }
    }

    /// The generator's packets seen so far.
    pub fn ours(&self) -> u64 {
        self.flows.packets()
    }

    fn block(&mut self, b: &[u8], now_ns: u64) -> Result<(), String> {
        let btype = le32(b, 0);
        let first = self.blocks == 0;
        self.blocks += 1;
        match btype {
            SHB => {
                if b.len() < 28 || le32(b, 8) != BYTE_ORDER_MAGIC {
                    return Err("an SHB that is not little-endian".into());
                }
                self.linktypes.clear();
                self.if_stats.clear();
            }
            _ if first => return Err(format!("stream starts with block type {btype:#x}")),
            IDB => {
                if b.len() < 20 || self.linktypes.len() >= MAX_INTERFACES {
                    return Err("a short IDB, or too many interfaces".into());
                }
                self.linktypes.push(le16(b, 8));
                self.if_stats.push(IfStats::default());
            }
            EPB => self.packet(b, now_ns)?,
            ISB => self.statistics(b),
            _ => {}
        }
        Ok(())
    }

    fn packet(&mut self, b: &[u8], now_ns: u64) -> Result<(), String> {
        if b.len() < EPB_HEAD + 4 {
            return Err("a short EPB".into());
        }
        let iface = le32(b, 8) as usize;
        let caplen = le32(b, 20) as usize;
        if EPB_HEAD + caplen + 4 > b.len() {
            return Err(format!("EPB captured length {caplen} overruns its block"));
        }
        let Some(&linktype) = self.linktypes.get(iface) else {
            return Err(format!("EPB on interface {iface}, not described"));
        };
        match decode(linktype, &b[EPB_HEAD..EPB_HEAD + caplen]) {
            Some(d) => {
                self.flows.saw(&d);
                self.first_packet_ns.get_or_insert(now_ns);
                self.last_packet_ns = Some(now_ns);
                if self.record_latency {
                    self.latencies_ns.push(now_ns.saturating_sub(d.sent_ns));
                }
            }
            None => self.other += 1,
        }
        Ok(())
    }

    /// Reads isb_ifrecv and isb_ifdrop; a malformed option list is ignored
    /// (the counts are a report, not something the stream is judged by).
    fn statistics(&mut self, b: &[u8]) {
        if b.len() < 24 {
            return;
        }
        let iface = le32(b, 8) as usize;
        let Some(st) = self.if_stats.get_mut(iface) else {
            return;
        };
        let opts = &b[20..b.len() - 4];
        let mut at = 0;
        while at + 4 <= opts.len() {
            let code = le16(opts, at);
            let len = usize::from(le16(opts, at + 2));
            if code == 0 || at + 4 + len > opts.len() {
                break;
            }
            if len == 8 {
                match code {
                    ISB_IFRECV => st.received = Some(le64(opts, at + 4)),
                    ISB_IFDROP => st.dropped = Some(le64(opts, at + 4)),
                    _ => {}
                }
            }
            at += 4 + len.div_ceil(4) * 4;
        }
    }
}

impl Sink for TrafficCheck {
    fn feed(&mut self, data: &[u8], now_ns: u64) {
        self.bytes += data.len() as u64;
        if self.error.is_some() {
            return;
        }
        let mut split = std::mem::take(&mut self.split);
        let r = split.feed(data, |b| self.block(b, now_ns));
        self.split = split;
        if let Err(e) = r {
            self.error = Some(format!("{e} (block {})", self.blocks));
        }
    }

    fn finish(&mut self) -> Result<(), String> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None if self.split.pending() > 0 => Err(format!(
                "stream ended inside a block ({} bytes pending)",
                self.split.pending()
            )),
            None => Ok(()),
        }
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn blocks(&self) -> u64 {
        self.blocks
    }

    fn packets(&self) -> u64 {
        self.flows.packets()
    }

    fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    fn first_packet_ns(&self) -> Option<u64> {
        self.first_packet_ns
    }

    fn take_latencies(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.latencies_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcapng::build;

    fn isb(iface: u32, recv: u64, drop: u64) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&iface.to_le_bytes());
        body.extend_from_slice(&[0; 8]);
        body.extend(build::options(
            &[
                (ISB_IFRECV, &recv.to_le_bytes()),
                (ISB_IFDROP, &drop.to_le_bytes()),
            ],
            false,
        ));
        build::block(ISB, &body, false)
    }

    fn stream() -> Vec<u8> {
        let mut s = build::shb(&[], false);
        s.extend(build::idb(LINKTYPE_ETHERNET, "c0", false));
        for seq in [0, 1, 3] {
            let mut f = frame::template(64, 7);
            frame::stamp(&mut f, seq, 1_000);
            s.extend(build::epb(0, &f, false));
        }
        s.extend(build::epb(0, &[0u8; 60], false));
        s.extend(isb(0, 5, 1));
        s
    }

    #[test]
    fn packets_are_counted_per_flow_with_gaps_and_latency_whatever_the_cuts() {
        let s = stream();
        for cut in [1, 7, 13, 64, s.len()] {
            let mut c = TrafficCheck::new(true);
            for piece in s.chunks(cut) {
                c.feed(piece, 11_000);
            }
            assert_eq!(c.finish(), Ok(()), "cut {cut}");
            assert_eq!(c.flows.of(7), 3);
            assert_eq!((c.flows.gaps(), c.other), (1, 1));
            assert_eq!(c.take_latencies(), vec![10_000; 3]);
            assert_eq!(
                c.if_stats,
                vec![IfStats {
                    received: Some(5),
                    dropped: Some(1)
                }]
            );
        }
    }

    #[test]
    fn a_cooked_capture_is_decoded_too() {
        let mut f = frame::template(64, 2);
        frame::stamp(&mut f, 9, 5);
        let ip = &f[frame::ETH_HLEN..];
        let mut sll = vec![0u8; 16];
        sll[14..16].copy_from_slice(&ETHERTYPE_IPV4);
        sll.extend_from_slice(ip);
        let mut sll2 = vec![0u8; 20];
        sll2[0..2].copy_from_slice(&ETHERTYPE_IPV4);
        sll2.extend_from_slice(ip);
        for (lt, data) in [(LINKTYPE_LINUX_SLL, sll), (LINKTYPE_LINUX_SLL2, sll2)] {
            let d = decode(lt, &data).expect("decoded");
            assert_eq!((d.flow, d.seq, d.sent_ns), (2, 9, 5));
        }
    }

    #[test]
    fn damaged_framing_is_an_error_and_a_cut_block_is_reported() {
        let mut s = stream();
        let n = s.len();
        s[n - 1] ^= 0x40; // the last block's trailing length
        let mut c = TrafficCheck::new(false);
        c.feed(&s, 0);
        assert!(c.finish().unwrap_err().contains("trailing length"));
        let s = stream();
        let mut c = TrafficCheck::new(false);
        c.feed(&s[..s.len() - 3], 0);
        assert!(c.finish().unwrap_err().contains("inside a block"));
    }
}
