//! The frames the traffic generator sends and every capturer of the engine
//! bench decodes: Ethernet, IPv4, UDP, and a payload carrying the flow's
//! sequence number and the CLOCK_MONOTONIC time of the send, so a reader on
//! the same host (the reference ring reader, the bench's websocket client)
//! can count what it got and compute each packet's latency. Std only and
//! free of I/O: the generator and the ring reader are compiled from this
//! file on their own (see `build.rs`), the library carries it for the
//! client's decoder and the tests.
//!
//! Addresses are from the documentation ranges (RFC 5737) and locally
//! administered MAC addresses: the frames only ever travel on veth pairs
//! inside namespaces the bench made, where no address is configured, so the
//! receiving stack drops them silently after the capture taps saw them.

/// Ethernet header: destination, source, EtherType.
pub const ETH_HLEN: usize = 14;
/// IPv4 header without options.
const IPV4_HLEN: usize = 20;
/// UDP header.
const UDP_HLEN: usize = 8;
/// Where the payload starts in an Ethernet frame.
pub const OFF_PAYLOAD: usize = ETH_HLEN + IPV4_HLEN + UDP_HLEN;
/// Marks our payload, so a capturer can tell a generator packet from
/// anything else the kernel might put on the wire.
pub const MAGIC: &[u8; 4] = b"PFXT";
/// Payload: magic, `u64` sequence number, `u64` send time (little-endian).
pub const PAYLOAD_LEN: usize = 20;
/// Smallest frame we send: the classic 64-byte minimum Ethernet frame
/// (which includes a 4-byte FCS that a veth never carries, so 60 would be
/// the honest floor; 64 keeps the figure comparable with NIC benchmarks).
pub const MIN_FRAME: usize = 64;
/// Largest frame we send: a full 1500-byte MTU plus the Ethernet header.
pub const MAX_FRAME: usize = 1514;
/// EtherType of IPv4.
const ETHERTYPE_IPV4: u16 = 0x0800;
/// IP protocol number of UDP.
const IPPROTO_UDP: u8 = 17;
/// UDP destination port: the discard service (RFC 863), apt for traffic
/// nobody is meant to receive.
pub const UDP_DST_PORT: u16 = 9;
/// UDP source port of flow 0; flow `i` sends from `UDP_SRC_BASE + i`, which
/// is how a capturer tells flows apart without any state.
pub const UDP_SRC_BASE: u16 = 20_000;
/// Flows one generator may drive (and one reader may track).
pub const MAX_FLOWS: usize = 4096;
/// TEST-NET-1 (RFC 5737): the sender's and the receiver's address.
const SRC_IP: [u8; 4] = [192, 0, 2, 1];
const DST_IP: [u8; 4] = [192, 0, 2, 2];
/// Locally administered unicast MAC prefix ("PF" in the second and third
/// bytes); the fourth byte tells the two ends of a pair apart.
const MAC_PREFIX: [u8; 3] = [0x02, 0x50, 0x46];

/// The MAC of flow `i`'s sending end (in the generator's namespace).
pub fn sender_mac(i: usize) -> [u8; 6] {
    mac(0, i)
}

/// The MAC of flow `i`'s receiving end (in its capture namespace).
pub fn capture_mac(i: usize) -> [u8; 6] {
    mac(1, i)
}

fn mac(side: u8, i: usize) -> [u8; 6] {
    let i = i as u16;
    let [hi, lo] = i.to_be_bytes();
    [MAC_PREFIX[0], MAC_PREFIX[1], MAC_PREFIX[2], side, hi, lo]
}

/// `aa:bb:...` as `ip link` takes it.
pub fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The RFC 791 header checksum of `h` (checksum field zero).
fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A frame of `size` bytes (clamped to [`MIN_FRAME`]..=[`MAX_FRAME`]) for
/// flow `flow`, addressed from its sender's MAC to its capture end's, with
/// sequence 0 and time 0; [`stamp`] fills those in before each send.
pub fn template(size: usize, flow: usize) -> Vec<u8> {
    let size = size.clamp(MIN_FRAME, MAX_FRAME);
    let mut f = vec![0u8; size];
    f[0..6].copy_from_slice(&capture_mac(flow));
    f[6..12].copy_from_slice(&sender_mac(flow));
    f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let ip = &mut f[ETH_HLEN..ETH_HLEN + IPV4_HLEN];
    ip[0] = 0x45; // version 4, 5 words of header
    ip[2..4].copy_from_slice(&((size - ETH_HLEN) as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64; // TTL
    ip[9] = IPPROTO_UDP;
    ip[12..16].copy_from_slice(&SRC_IP);
    ip[16..20].copy_from_slice(&DST_IP);
    let sum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut f[ETH_HLEN + IPV4_HLEN..OFF_PAYLOAD];
    let src = UDP_SRC_BASE.wrapping_add(flow as u16);
    udp[0..2].copy_from_slice(&src.to_be_bytes());
    udp[2..4].copy_from_slice(&UDP_DST_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&((size - ETH_HLEN - IPV4_HLEN) as u16).to_be_bytes());
    // UDP checksum 0: none (allowed over IPv4, RFC 768).
    f[OFF_PAYLOAD..OFF_PAYLOAD + 4].copy_from_slice(MAGIC);
    f
}

/// Writes the sequence number and send time into a [`template`] frame.
pub fn stamp(frame: &mut [u8], seq: u64, mono_ns: u64) {
    frame[OFF_PAYLOAD + 4..OFF_PAYLOAD + 12].copy_from_slice(&seq.to_le_bytes());
    frame[OFF_PAYLOAD + 12..OFF_PAYLOAD + 20].copy_from_slice(&mono_ns.to_le_bytes());
}

/// What a capturer reads from one of our packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub flow: usize,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Decodes an IPv4 packet (from its first header byte) if it is ours.
pub fn decode_ipv4(ip: &[u8]) -> Option<Decoded> {
    if ip.len() < IPV4_HLEN || ip[0] >> 4 != 4 || ip[9] != IPPROTO_UDP {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let udp = ip.get(ihl..)?;
    if udp.len() < UDP_HLEN + PAYLOAD_LEN || udp[2..4] != UDP_DST_PORT.to_be_bytes() {
        return None;
    }
    let p = &udp[UDP_HLEN..];
    if &p[0..4] != MAGIC {
        return None;
    }
    let src = u16::from_be_bytes([udp[0], udp[1]]);
    let flow = usize::from(src.wrapping_sub(UDP_SRC_BASE));
    if flow >= MAX_FLOWS {
        return None;
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&p[4..12]);
    let mut sent = [0u8; 8];
    sent.copy_from_slice(&p[12..20]);
    Some(Decoded {
        flow,
        seq: u64::from_le_bytes(seq),
        sent_ns: u64::from_le_bytes(sent),
    })
}

/// Decodes an Ethernet frame if it is one of ours.
pub fn decode_ethernet(frame: &[u8]) -> Option<Decoded> {
    if frame.len() < ETH_HLEN || frame[12..14] != ETHERTYPE_IPV4.to_be_bytes() {
        return None;
    }
    decode_ipv4(&frame[ETH_HLEN..])
}

/// Per-flow bookkeeping of a capturer: packets seen, and how the sequence
/// numbers went (a gap is packets never seen; going backwards is a
/// duplicate or a reordering, which no capture path may produce).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCount {
    pub packets: u64,
    pub next_seq: u64,
    /// Sequence numbers skipped over (lost somewhere before the capturer).
    pub gaps: u64,
    /// Packets whose number was below the next expected one.
    pub backwards: u64,
}

impl FlowCount {
    pub fn saw(&mut self, seq: u64) {
        self.packets += 1;
        if seq >= self.next_seq {
            self.gaps += seq - self.next_seq;
            self.next_seq = seq + 1;
        } else {
            self.backwards += 1;
        }
    }
}

/// Counts per flow, indexed by flow id, bounded by [`MAX_FLOWS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flows(pub Vec<FlowCount>);

impl Flows {
    pub fn saw(&mut self, d: &Decoded) {
        if d.flow >= MAX_FLOWS {
            return;
        }
        if self.0.len() <= d.flow {
            self.0.resize(d.flow + 1, FlowCount::default());
        }
        self.0[d.flow].saw(d.seq);
    }

    pub fn packets(&self) -> u64 {
        self.0.iter().map(|f| f.packets).sum()
    }

    pub fn gaps(&self) -> u64 {
        self.0.iter().map(|f| f.gaps).sum()
    }

    pub fn backwards(&self) -> u64 {
        self.0.iter().map(|f| f.backwards).sum()
    }

    /// Packets of flow `i` (0 if never seen).
    pub fn of(&self, i: usize) -> u64 {
        self.0.get(i).map_or(0, |f| f.packets)
    }
}
