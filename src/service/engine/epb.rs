//! One packet written as an EPB, the same way whichever socket it came
//! from (a ring frame or a `recvmsg`): the cooked header built from the
//! kernel's `sockaddr_ll`, an offloaded VLAN tag put back where libpcap
//! puts it, the block's header and trailer. And a packet's
//! [`Fingerprint`], which tells the same packet taken from two sockets
//! (see [`super::handover`]).
//!
//! Pure byte work on the caller's buffer: no system call, no allocation.

use std::hash::{Hash, Hasher};

use nix::libc;

use crate::proto::pcapng_write::{epb_len, put_epb, EPB_HEADER_LEN};

/// The status bits of a frame header or of `PACKET_AUXDATA`
/// (`<linux/if_packet.h>`).
pub const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
pub const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
/// The 802.1Q tag protocol, for a tag without a reported TPID.
const ETH_P_8021Q: u16 = 0x8100;
/// Where libpcap re-inserts an offloaded VLAN tag: after the two MAC
/// addresses of an Ethernet header, before the protocol field of a cooked
/// header.
const VLAN_AT_ETHERNET: usize = 12;
const VLAN_AT_COOKED: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;
/// The cooked header (`LINUX_SLL`) the engine writes before the packet of
/// a cooked socket.
pub const SLL_HDR_LEN: usize = 16;
/// Bytes of a packet (cooked header and tag included) a fingerprint
/// hashes: the link, IP and transport headers and the start of the
/// payload, which is where two different packets of the same length and
/// time differ; the rest would only cost time.
pub const FINGERPRINT_BYTES: usize = 128;

/// How a socket's packets are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// As the kernel gives them (a raw socket).
    Raw {
        /// The link type is Ethernet: an offloaded VLAN tag is put back.
        ethernet: bool,
    },
    /// A cooked header first (a `SOCK_DGRAM` socket).
    Cooked,
}

/// What the kernel says of one packet besides its bytes.
#[derive(Clone, Copy)]
pub struct Meta {
    /// Its time, nanoseconds since the epoch.
    pub ts_ns: u64,
    /// Its length as it was (`tp_len`), before any cut.
    pub len: u32,
    /// The offloaded VLAN tag to put back, if any.
    pub tag: Option<[u8; VLAN_TAG_LEN]>,
    /// Where it came from (for the cooked header).
    pub sll: libc::sockaddr_ll,
}

/// The tag to put back for a packet whose kernel status, tag and tag
/// protocol are these (the ring's frame header and `PACKET_AUXDATA` say it
/// the same way), or `None`.
pub fn tag(framing: Framing, status: u32, tci: u16, tpid: u16) -> Option<[u8; VLAN_TAG_LEN]> {
    let offloaded = tci != 0 || status & TP_STATUS_VLAN_VALID != 0;
    if !offloaded || matches!(framing, Framing::Raw { ethernet: false }) {
        return None;
    }
    let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 {
        tpid
    } else {
        ETH_P_8021Q
    };
    let mut t = [0u8; VLAN_TAG_LEN];
    t[..2].copy_from_slice(&tpid.to_be_bytes());
    t[2..].copy_from_slice(&tci.to_be_bytes());
    Some(t)
}

/// Bytes written before the packet's own: the cooked header and the tag.
pub fn prefix(framing: Framing, tagged: bool) -> usize {
    let cooked = match framing {
        Framing::Cooked => SLL_HDR_LEN,
        Framing::Raw { .. } => 0,
    };
    cooked + if tagged { VLAN_TAG_LEN } else { 0 }
}

/// Where the packet's bytes go in the block: after the EPB header and the
/// prefix.
pub fn data_at(framing: Framing, tagged: bool) -> usize {
    EPB_HEADER_LEN + prefix(framing, tagged)
}

/// The most an EPB of this packet can take: its prefix and `data_len`
/// bytes.
pub fn need(framing: Framing, tagged: bool, data_len: usize) -> usize {
    epb_len(prefix(framing, tagged) + data_len)
}

/// Completes the EPB at the start of `block`, whose packet's `data_len`
/// bytes are already at [`data_at`]; `block` is at least [`need`] bytes.
/// Returns the EPB's length.
pub fn finish(
    block: &mut [u8],
    framing: Framing,
    interface: u32,
    meta: &Meta,
    data_len: usize,
) -> usize {
    let tagged = meta.tag.is_some();
    let prefix = prefix(framing, tagged);
    let data_at = EPB_HEADER_LEN + prefix;
    let p = EPB_HEADER_LEN;
    let sll = &meta.sll;
    match (framing, meta.tag) {
        (Framing::Cooked, tag) => {
            let b = &mut block[p..];
            b[0..2].copy_from_slice(&u16::from(sll.sll_pkttype).to_be_bytes());
            b[2..4].copy_from_slice(&sll.sll_hatype.to_be_bytes());
            b[4..6].copy_from_slice(&u16::from(sll.sll_halen).to_be_bytes());
            b[6..14].copy_from_slice(&sll.sll_addr);
            let mut at = VLAN_AT_COOKED;
            if let Some(t) = tag {
                b[at..at + VLAN_TAG_LEN].copy_from_slice(&t);
                at += VLAN_TAG_LEN;
            }
            // sll_protocol is in network order already.
            b[at..at + 2].copy_from_slice(&sll.sll_protocol.to_ne_bytes());
        }
        (Framing::Raw { .. }, Some(t)) if data_len >= VLAN_AT_ETHERNET => {
            // The packet was written after a gap of one tag: move the MAC
            // addresses into it and put the tag behind them.
            block.copy_within(data_at..data_at + VLAN_AT_ETHERNET, p);
            block[p + VLAN_AT_ETHERNET..p + VLAN_AT_ETHERNET + VLAN_TAG_LEN].copy_from_slice(&t);
        }
        (Framing::Raw { .. }, Some(_)) => {
            // Too short to hold MAC addresses: close the gap.
            block.copy_within(data_at..data_at + data_len, p);
        }
        (Framing::Raw { .. }, None) => {}
    }
    let caplen = if matches!(framing, Framing::Raw { .. }) && tagged && data_len < VLAN_AT_ETHERNET
    {
        data_len
    } else {
        prefix + data_len
    };
    let original = prefix + meta.len as usize;
    let len = epb_len(caplen);
    put_epb(
        &mut block[..len],
        interface,
        meta.ts_ns,
        caplen as u32,
        u32::try_from(original).unwrap_or(u32::MAX),
    );
    len
}

/// What tells one packet from another across two sockets that saw it: its
/// time (the same `skb->tstamp` for both, see [`super::handover`]), its
/// length and a hash of its first [`FINGERPRINT_BYTES`] as written (not
/// the whole of it: one socket may have cut a packet the other took
/// whole).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    pub ts_ns: u64,
    pub original: u32,
    pub digest: u64,
}

fn word(epb: &[u8], at: usize) -> u32 {
    epb.get(at..at + 4)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

/// The fingerprint of a whole EPB as [`finish`] wrote it.
pub fn fingerprint(epb: &[u8]) -> Fingerprint {
    let ts_ns = (u64::from(word(epb, 12)) << 32) | u64::from(word(epb, 16));
    let caplen = word(epb, 20) as usize;
    let original = word(epb, 24);
    let end = (EPB_HEADER_LEN + caplen.min(FINGERPRINT_BYTES)).min(epb.len());
    // SipHash with fixed keys: the same bytes give the same digest in
    // every call, which is all this needs.
    let mut h = std::hash::DefaultHasher::new();
    epb.get(EPB_HEADER_LEN..end).unwrap_or(&[]).hash(&mut h);
    Fingerprint {
        ts_ns,
        original,
        digest: h.finish(),
    }
}

/// The time an EPB as [`finish`] wrote it carries.
pub fn ts_ns(epb: &[u8]) -> u64 {
    (u64::from(word(epb, 12)) << 32) | u64::from(word(epb, 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sll(pkttype: u8) -> libc::sockaddr_ll {
        // SAFETY: plain data.
        let mut s: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        s.sll_pkttype = pkttype;
        s.sll_hatype = 1;
        s.sll_halen = 6;
        s.sll_addr[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        s.sll_protocol = 0x0800u16.to_be();
        s
    }

    /// Writes `packet` as [`finish`] expects it and finishes the EPB.
    fn write(framing: Framing, meta: &Meta, packet: &[u8]) -> Vec<u8> {
        let tagged = meta.tag.is_some();
        let mut block = vec![0xee; need(framing, tagged, packet.len())];
        let at = data_at(framing, tagged);
        block[at..at + packet.len()].copy_from_slice(packet);
        let len = finish(&mut block, framing, 3, meta, packet.len());
        block.truncate(len);
        block
    }

    #[test]
    fn a_cooked_epb_carries_the_sll_header_and_the_packet() {
        let meta = Meta {
            ts_ns: 1_700_000_000_123_456_789,
            len: 40,
            tag: None,
            sll: sll(4),
        };
        let b = write(Framing::Cooked, &meta, &[0x45; 20]);
        assert_eq!(b.len(), epb_len(36));
        assert_eq!(&b[28..30], &[0, 4], "packet type");
        assert_eq!(&b[28 + 14..28 + 16], &[8, 0], "protocol");
        assert_eq!(&b[28 + 16..28 + 36], &[0x45; 20]);
        assert_eq!(word(&b, 20), 36, "captured");
        assert_eq!(word(&b, 24), 56, "original, the header included");
        assert_eq!(ts_ns(&b), meta.ts_ns);
    }

    #[test]
    fn an_offloaded_tag_goes_back_behind_the_mac_addresses() {
        let t = tag(Framing::Raw { ethernet: true }, TP_STATUS_VLAN_VALID, 10, 0).unwrap();
        assert_eq!(t, [0x81, 0, 0, 10]);
        let meta = Meta {
            ts_ns: 5,
            len: 60,
            tag: Some(t),
            sll: sll(0),
        };
        let packet: Vec<u8> = (0..60).collect();
        let b = write(Framing::Raw { ethernet: true }, &meta, &packet);
        assert_eq!(&b[28..40], &packet[..12]);
        assert_eq!(&b[40..44], &t);
        assert_eq!(&b[44..92], &packet[12..]);
        assert_eq!(word(&b, 20), 64);
        // No tag on a link that is not Ethernet.
        assert_eq!(tag(Framing::Raw { ethernet: false }, 0, 10, 0), None);
    }

    #[test]
    fn a_fingerprint_tells_packets_apart_by_time_length_and_bytes_not_by_cut() {
        let meta = Meta {
            ts_ns: 42,
            len: 300,
            tag: None,
            sll: sll(0),
        };
        let whole: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let a = fingerprint(&write(Framing::Raw { ethernet: true }, &meta, &whole));
        // The same packet cut short (past the hashed bytes) by one socket.
        let cut = fingerprint(&write(
            Framing::Raw { ethernet: true },
            &meta,
            &whole[..200],
        ));
        assert_eq!(a, cut);
        let later = Meta { ts_ns: 43, ..meta };
        assert_ne!(
            a,
            fingerprint(&write(Framing::Raw { ethernet: true }, &later, &whole))
        );
        let mut other = whole.clone();
        other[50] ^= 1;
        assert_ne!(
            a,
            fingerprint(&write(Framing::Raw { ethernet: true }, &meta, &other))
        );
    }
}
