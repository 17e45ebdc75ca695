//! Cutting a pcapng byte stream at block boundaries and counting packets.
//!
//! The service relays the capture program's output in chunks of whatever size
//! a pipe read returned, so a websocket message may end in the middle of a
//! block. The client only ever writes whole blocks: a capture stopped by a
//! signal, a duration or a packet count then still ends in a file that
//! `tshark -r` reads without complaint, and `--count N` means exactly N packet
//! blocks. No I/O here: bytes go in, ready bytes come out.
/// Packet blocks that count towards `--count`: the obsolete Packet Block (2),
/// the Simple Packet Block (3) and the Enhanced Packet Block (6), per the
/// pcapng specification (draft-ietf-opsawg-pcapng, section 4).
pub const PACKET_BLOCK_TYPES: [u32; 3] = [2, 3, 6];
/// Type (4), total length (4) and trailing total length (4): the smallest
/// possible block.
const MIN_BLOCK_LEN: u32 = 12;
/// A sanity bound far above anything dumpcap writes (Wireshark's own reader
/// refuses blocks beyond 16 MiB); a larger length means the stream is garbage
/// and would otherwise make us buffer without end.
const MAX_BLOCK_LEN: u32 = 16 * 1024 * 1024;
/// Interface Statistics Block type, and where its options begin (after
/// type, length, interface id and the two timestamp halves), per the pcapng
/// specification, section 4.6.
const ISB: u32 = 5;
const ISB_OPTIONS_AT: usize = 20;
/// `isb_ifdrop` (packets the interface dropped) and `isb_osdrop` (packets the
/// capture system dropped), both u64 counters since the capture started.
const ISB_IFDROP: u16 = 5;
const ISB_OSDROP: u16 = 7;
/// Enhanced Packet Block type, where its packet data begins, and
/// `epb_dropcount` (packets lost since the previous packet block), section 4.3.
const EPB: u32 = 6;
const EPB_DATA_AT: usize = 28;
const EPB_DROPCOUNT: u16 = 4;
/// The end-of-options option code.
const OPT_END: u16 = 0;

/// Why the stream cannot be cut into blocks.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamError {
    /// The first block is not a Section Header Block.
    NotPcapng,
    /// A Section Header Block carries no valid byte-order magic.
    BadByteOrder,
    /// A block's length is impossible or its two length fields disagree.
    BadBlockLength { offset: u64, length: u32 },
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::NotPcapng => {
                write!(f, "the stream is not pcapng (no section header block)")
            }
            StreamError::BadByteOrder => {
                write!(f, "a pcapng section header has no valid byte-order magic")
            }
            StreamError::BadBlockLength { offset, length } => write!(
                f,
                "corrupt pcapng stream: impossible block length {length} at byte {offset}"
            ),
        }
    }
}

/// Section Header Block type; its value reads the same in either byte order.
pub const SHB: u32 = 0x0A0D_0D0A;

/// The byte order of a pcapng section: the project's one reader of it.
pub use crate::proto::pcapng::Order;

/// Buffers a pcapng stream and hands out its complete blocks.
///
/// Use: [`feed`](Self::feed) a chunk, write [`ready`](Self::ready), then
/// [`consume_ready`](Self::consume_ready). Once the packet limit is reached,
/// everything after the last counted packet block is discarded.
#[derive(Debug)]
pub struct BlockCutter {
    buf: Vec<u8>,
    /// Bytes at the start of `buf` that form whole blocks, ready to write.
    ready: usize,
    /// Stream offset of `buf[0]`, for error messages.
    offset: u64,
    order: Option<Order>,
    packets: u64,
    limit: Option<u64>,
    drops: Drops,
}

/// Drops the stream reports: the latest `isb_ifdrop` + `isb_osdrop` of each
/// interface (they count from the capture's start), plus every
/// `epb_dropcount` (each counts since the packet before).
#[derive(Debug, Default)]
struct Drops {
    /// (section number, interface id) -> the interface's latest total.
    interfaces: std::collections::BTreeMap<(u32, u32), u64>,
    between_packets: u64,
    section: u32,
}

impl Drops {
    fn total(&self) -> u64 {
        self.interfaces
            .values()
            .fold(self.between_packets, |sum, d| sum.saturating_add(*d))
    }

    /// Reads the drop counters of one complete block, if it has any.
    fn see(&mut self, order: Order, block: &[u8], block_type: u32) {
        match block_type {
            SHB => self.section = self.section.wrapping_add(1),
            ISB if block.len() >= ISB_OPTIONS_AT + 4 => {
                let interface = order.u32(block, 8);
                let mut total = None::<u64>;
                for (code, value) in options(order, block, ISB_OPTIONS_AT) {
                    if matches!(code, ISB_IFDROP | ISB_OSDROP) {
                        if let Some(n) = u64_of(order, value) {
                            total = Some(total.unwrap_or(0).saturating_add(n));
                        }
                    }
                }
                if let Some(total) = total {
                    self.interfaces.insert((self.section, interface), total);
                }
            }
            EPB if block.len() >= EPB_DATA_AT + 4 => {
                let captured = order.u32(block, 20) as usize;
                let Some(at) = captured
                    .checked_next_multiple_of(4)
                    .and_then(|padded| padded.checked_add(EPB_DATA_AT))
                else {
                    return;
                };
                for (code, value) in options(order, block, at) {
                    if code == EPB_DROPCOUNT {
                        if let Some(n) = u64_of(order, value) {
                            self.between_packets = self.between_packets.saturating_add(n);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The options of `block` from byte `at` up to its trailing length, as
/// (code, value); stops at the end option or at anything malformed.
fn options(order: Order, block: &[u8], at: usize) -> Vec<(u16, &[u8])> {
    let end = block.len().saturating_sub(4);
    let mut out = Vec::new();
    let mut at = at;
    while at + 4 <= end {
        let code = order.u16(block, at);
        let len = order.u16(block, at + 2) as usize;
        if code == OPT_END || at + 4 + len > end {
            break;
        }
        out.push((code, &block[at + 4..at + 4 + len]));
        at += 4 + len.div_ceil(4) * 4;
    }
    out
}

fn u64_of(order: Order, value: &[u8]) -> Option<u64> {
    let b: [u8; 8] = value.try_into().ok()?;
    Some(match order {
        Order::Little => u64::from_le_bytes(b),
        Order::Big => u64::from_be_bytes(b),
    })
}

impl BlockCutter {
    /// A cutter that stops after `limit` packet blocks, or never if `None`.
    pub fn new(limit: Option<u64>) -> Self {
        BlockCutter {
            buf: Vec::new(),
            ready: 0,
            offset: 0,
            order: None,
            packets: 0,
            limit,
            drops: Drops::default(),
        }
    }

    /// Appends a chunk of the stream and finds the whole blocks in it.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), StreamError> {
        if self.limit_reached() {
            return Ok(());
        }
        self.buf.extend_from_slice(chunk);
        while !self.limit_reached() {
            match self.next_block_len()? {
                Some(len) => self.ready += len,
                None => break,
            }
        }
        if self.limit_reached() {
            self.buf.truncate(self.ready);
        }
        Ok(())
    }

    /// The length of the complete block at `self.ready`, if it is complete;
    /// counts it if it is a packet block.
    fn next_block_len(&mut self) -> Result<Option<usize>, StreamError> {
        let rest = &self.buf[self.ready..];
        let at = self.offset + self.ready as u64;
        if rest.len() < 8 {
            return Ok(None);
        }
        let raw_type = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if raw_type == SHB {
            if rest.len() < 12 {
                return Ok(None);
            }
            self.order = Some(Order::of_section(rest).ok_or(StreamError::BadByteOrder)?);
        }
        let Some(order) = self.order else {
            return Err(StreamError::NotPcapng);
        };
        let block_type = order.u32(rest, 0);
        let length = order.u32(rest, 4);
        if !(MIN_BLOCK_LEN..=MAX_BLOCK_LEN).contains(&length) || length % 4 != 0 {
            return Err(StreamError::BadBlockLength { offset: at, length });
        }
        let len = length as usize;
        if rest.len() < len {
            return Ok(None);
        }
        if order.u32(rest, len - 4) != length {
            return Err(StreamError::BadBlockLength { offset: at, length });
        }
        if PACKET_BLOCK_TYPES.contains(&block_type) {
            self.packets += 1;
        }
        self.drops.see(order, &rest[..len], block_type);
        Ok(Some(len))
    }

    /// Whole blocks not yet handed out.
    pub fn ready(&self) -> &[u8] {
        &self.buf[..self.ready]
    }

    /// Forgets the bytes [`ready`](Self::ready) returned.
    pub fn consume_ready(&mut self) {
        self.buf.drain(..self.ready);
        self.offset += self.ready as u64;
        self.ready = 0;
    }

    /// Packet blocks seen so far (all of them are in, or were in, `ready`).
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Packets the stream says were dropped so far (interface statistics and
    /// per-packet drop counts); 0 when it says nothing.
    pub fn drops(&self) -> u64 {
        self.drops.total()
    }

    /// True once `limit` packet blocks have been cut.
    pub fn limit_reached(&self) -> bool {
        self.limit.is_some_and(|limit| self.packets >= limit)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The byte-order magic of an SHB, as it reads in the section's own order.
    const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

    /// A block of `block_type` with `body` (padded to 4 bytes) in little endian.
    pub(crate) fn block_le(block_type: u32, body: &[u8]) -> Vec<u8> {
        let padded = body.len().div_ceil(4) * 4;
        let total = (12 + padded) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&block_type.to_le_bytes());
        b.extend_from_slice(&total.to_le_bytes());
        b.extend_from_slice(body);
        b.resize(8 + padded, 0);
        b.extend_from_slice(&total.to_le_bytes());
        b
    }

    fn block_be(block_type: u32, body: &[u8]) -> Vec<u8> {
        let padded = body.len().div_ceil(4) * 4;
        let total = (12 + padded) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&block_type.to_be_bytes());
        b.extend_from_slice(&total.to_be_bytes());
        b.extend_from_slice(body);
        b.resize(8 + padded, 0);
        b.extend_from_slice(&total.to_be_bytes());
        b
    }

    pub(crate) fn shb_le() -> Vec<u8> {
        let mut body = BYTE_ORDER_MAGIC.to_le_bytes().to_vec();
        body.extend_from_slice(&[1, 0, 0, 0]); // version 1.0
        body.extend_from_slice(&u64::MAX.to_le_bytes()); // section length unknown
        block_le(SHB, &body)
    }

    fn shb_be() -> Vec<u8> {
        let mut body = BYTE_ORDER_MAGIC.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 1, 0, 0]);
        body.extend_from_slice(&u64::MAX.to_be_bytes());
        block_be(SHB, &body)
    }

    fn stream_le(packets: usize) -> Vec<u8> {
        let mut s = shb_le();
        s.extend(block_le(1, &[1, 0, 0, 0, 0, 0, 4, 0])); // IDB, Ethernet
        for i in 0..packets {
            s.extend(block_le(6, &[i as u8; 29]));
        }
        s
    }

    fn drain(cutter: &mut BlockCutter, out: &mut Vec<u8>) {
        out.extend_from_slice(cutter.ready());
        cutter.consume_ready();
    }

    #[test]
    fn whole_stream_in_one_chunk_passes_unchanged() {
        let stream = stream_le(3);
        let mut c = BlockCutter::new(None);
        c.feed(&stream).unwrap();
        assert_eq!(c.ready(), &stream[..]);
        assert_eq!(c.packets(), 3);
    }

    #[test]
    fn blocks_split_at_every_byte_are_reassembled_in_order() {
        let stream = stream_le(4);
        let mut c = BlockCutter::new(None);
        let mut out = Vec::new();
        for byte in &stream {
            c.feed(std::slice::from_ref(byte)).unwrap();
            drain(&mut c, &mut out);
        }
        assert_eq!(out, stream);
        assert_eq!(c.packets(), 4);
    }

    #[test]
    fn partial_trailing_block_is_held_back() {
        let stream = stream_le(2);
        let mut c = BlockCutter::new(None);
        c.feed(&stream[..stream.len() - 5]).unwrap();
        let whole = stream_le(1).len();
        assert_eq!(c.ready(), &stream[..whole]);
        assert_eq!(c.packets(), 1);
    }

    #[test]
    fn count_limit_cuts_after_the_nth_packet_block() {
        let stream = stream_le(5);
        let mut c = BlockCutter::new(Some(2));
        c.feed(&stream).unwrap();
        assert!(c.limit_reached());
        assert_eq!(c.packets(), 2);
        assert_eq!(c.ready(), &stream_le(2)[..]);
        let mut out = Vec::new();
        drain(&mut c, &mut out);
        c.feed(&block_le(6, &[9; 8])).unwrap();
        assert!(c.ready().is_empty(), "nothing is taken after the limit");
    }

    #[test]
    fn simple_and_obsolete_packet_blocks_count_but_statistics_do_not() {
        let mut s = shb_le();
        s.extend(block_le(1, &[1, 0, 0, 0, 0, 0, 0, 0]));
        s.extend(block_le(3, &[0; 8])); // SPB
        s.extend(block_le(2, &[0; 24])); // obsolete PB
        s.extend(block_le(5, &[0; 12])); // ISB
        s.extend(block_le(4, &[0; 4])); // NRB
        let mut c = BlockCutter::new(None);
        c.feed(&s).unwrap();
        assert_eq!(c.packets(), 2);
        assert_eq!(c.ready().len(), s.len());
    }

    #[test]
    fn big_endian_sections_are_cut_by_their_own_lengths() {
        let mut s = shb_be();
        s.extend(block_be(1, &[0, 1, 0, 0, 0, 0, 0, 0]));
        s.extend(block_be(6, &[7; 21]));
        let mut c = BlockCutter::new(None);
        c.feed(&s[..s.len() - 1]).unwrap();
        assert_eq!(c.packets(), 0);
        c.feed(&s[s.len() - 1..]).unwrap();
        assert_eq!(c.packets(), 1);
        assert_eq!(c.ready(), &s[..]);
    }

    #[test]
    fn a_second_section_may_switch_byte_order() {
        let mut s = stream_le(1);
        s.extend(shb_be());
        s.extend(block_be(6, &[1; 4]));
        let mut c = BlockCutter::new(None);
        c.feed(&s).unwrap();
        assert_eq!(c.packets(), 2);
        assert_eq!(c.ready().len(), s.len());
    }

    #[test]
    fn stream_without_section_header_is_refused() {
        let mut c = BlockCutter::new(None);
        assert_eq!(c.feed(&block_le(6, &[0; 8])), Err(StreamError::NotPcapng));
    }

    #[test]
    fn legacy_pcap_is_refused_as_not_pcapng() {
        let pcap_header = [0xD4, 0xC3, 0xB2, 0xA1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut c = BlockCutter::new(None);
        assert_eq!(c.feed(&pcap_header), Err(StreamError::NotPcapng));
    }

    #[test]
    fn garbage_byte_order_magic_is_refused() {
        let mut shb = shb_le();
        shb[8] = 0;
        let mut c = BlockCutter::new(None);
        assert_eq!(c.feed(&shb), Err(StreamError::BadByteOrder));
    }

    #[test]
    fn impossible_lengths_are_refused_with_their_offset() {
        let mut s = shb_le();
        let at = s.len() as u64;
        s.extend_from_slice(&6u32.to_le_bytes());
        s.extend_from_slice(&13u32.to_le_bytes());
        let mut c = BlockCutter::new(None);
        assert_eq!(
            c.feed(&s),
            Err(StreamError::BadBlockLength {
                offset: at,
                length: 13
            })
        );

        let mut c = BlockCutter::new(None);
        let mut huge = shb_le();
        huge.extend_from_slice(&6u32.to_le_bytes());
        huge.extend_from_slice(&(MAX_BLOCK_LEN + 4).to_le_bytes());
        assert!(matches!(
            c.feed(&huge),
            Err(StreamError::BadBlockLength { .. })
        ));
    }

    #[test]
    fn mismatched_trailing_length_is_refused() {
        let mut s = stream_le(1);
        let last = s.len() - 4;
        s[last] ^= 4;
        let mut c = BlockCutter::new(None);
        assert!(matches!(
            c.feed(&s),
            Err(StreamError::BadBlockLength { .. })
        ));
    }

    #[test]
    fn error_offsets_count_bytes_already_consumed() {
        let first = stream_le(1);
        let mut c = BlockCutter::new(None);
        c.feed(&first).unwrap();
        c.consume_ready();
        let mut bad = Vec::new();
        bad.extend_from_slice(&6u32.to_le_bytes());
        bad.extend_from_slice(&8u32.to_le_bytes());
        assert_eq!(
            c.feed(&bad),
            Err(StreamError::BadBlockLength {
                offset: first.len() as u64,
                length: 8
            })
        );
    }

    /// An option: code, length, value padded to 4 bytes (little endian).
    fn option_le(code: u16, value: &[u8]) -> Vec<u8> {
        let mut o = Vec::new();
        o.extend_from_slice(&code.to_le_bytes());
        o.extend_from_slice(&(value.len() as u16).to_le_bytes());
        o.extend_from_slice(value);
        o.resize(4 + value.len().div_ceil(4) * 4, 0);
        o
    }

    fn isb_le(interface: u32, options: &[(u16, u64)]) -> Vec<u8> {
        let mut body = interface.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 8]);
        for (code, n) in options {
            body.extend(option_le(*code, &n.to_le_bytes()));
        }
        body.extend(option_le(OPT_END, &[]));
        block_le(ISB, &body)
    }

    fn epb_le(data: &[u8], dropcount: Option<u64>) -> Vec<u8> {
        let mut body = 0u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        body.resize(20 + data.len().div_ceil(4) * 4, 0);
        if let Some(n) = dropcount {
            body.extend(option_le(EPB_DROPCOUNT, &n.to_le_bytes()));
        }
        block_le(EPB, &body)
    }

    #[test]
    fn drops_are_the_latest_interface_statistics_plus_per_packet_counts() {
        let mut c = BlockCutter::new(None);
        let mut s = shb_le();
        s.extend(epb_le(b"abcde", None));
        c.feed(&s).unwrap();
        assert_eq!(c.drops(), 0, "nothing reported, nothing shown");
        let mut s = isb_le(0, &[(4, 100), (ISB_IFDROP, 3), (ISB_OSDROP, 2)]);
        s.extend(isb_le(1, &[(ISB_IFDROP, 1)]));
        s.extend(epb_le(b"xyz", Some(7)));
        c.feed(&s).unwrap();
        assert_eq!(c.drops(), 3 + 2 + 1 + 7);
        // A later statistics block of interface 0 replaces its earlier total.
        c.feed(&isb_le(0, &[(ISB_IFDROP, 10)])).unwrap();
        assert_eq!(c.drops(), 10 + 1 + 7);
        // A new section has interfaces of its own.
        let mut s = shb_le();
        s.extend(isb_le(0, &[(ISB_OSDROP, 4)]));
        c.feed(&s).unwrap();
        assert_eq!(c.drops(), 10 + 1 + 7 + 4);
    }

    #[test]
    fn malformed_statistics_options_are_ignored_not_trusted() {
        let mut c = BlockCutter::new(None);
        let mut s = shb_le();
        // An option whose length runs past the block, and a drop counter of
        // the wrong size.
        let mut body = 0u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 8]);
        body.extend(option_le(ISB_IFDROP, &[1, 2, 3]));
        s.extend(block_le(ISB, &body));
        let mut body = 0u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&ISB_IFDROP.to_le_bytes());
        body.extend_from_slice(&200u16.to_le_bytes());
        s.extend(block_le(ISB, &body));
        c.feed(&s).unwrap();
        assert_eq!(c.drops(), 0);
        assert_eq!(c.ready().len(), s.len(), "the blocks still pass");
    }
}
