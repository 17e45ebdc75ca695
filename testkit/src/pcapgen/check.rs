//! The reader's integrity check of a `packetflix-pcapgen` stream, sans-IO.
//!
//! Bytes go in as they arrive (split anywhere: across reads, websocket
//! messages, blocks); out come counts, per-packet latencies, the SHB's
//! comments and the first sign of damage: a block whose leading and
//! trailing lengths disagree, a stream that does not start with an SHB, a
//! packet on an interface no IDB described yet, a packet without the
//! generator's magic, or a sequence number that is not exactly the previous
//! one on its interface plus one. Each generator writes one interface, so a
//! capture of several merged into one section is checked per generator. It
//! accepts an SHB of any length, because the service rewrites the SHB.
//!
//! The packet layout is [`super::format`]'s, the writer's own; the test
//! suite runs the real generator through this checker. It does no I/O and
//! never allocates per packet: the client must not be the bottleneck of what
//! it measures.

use crate::pcapng::{le32, le64, Pcapng, Splitter};

use super::format::{
    BYTE_ORDER_MAGIC, EPB_HEAD, EPB_TYPE, IDB_TYPE, MIN_SIZE as MIN_PACKET, OFF_MAGIC, OFF_SEQ,
    OFF_STAMP, PAYLOAD_MAGIC, SHB_TYPE,
};

/// Incremental checker of one stream.
#[derive(Debug, Default)]
pub struct StreamCheck {
    split: Splitter,
    bytes: u64,
    blocks: u64,
    packets: u64,
    /// The next sequence number expected on each interface described so far.
    next_seq: Vec<u64>,
    error: Option<String>,
    shb_comments: Option<Vec<String>>,
    record_latency: bool,
    latencies_ns: Vec<u64>,
    first_packet_ns: Option<u64>,
}

impl StreamCheck {
    pub fn new(record_latency: bool) -> Self {
        StreamCheck {
            record_latency,
            ..Default::default()
        }
    }

    /// Feeds the next bytes of the stream, read at CLOCK_MONOTONIC `now_ns`.
    /// After the first error the rest of the stream is only counted.
    pub fn feed(&mut self, data: &[u8], now_ns: u64) {
        self.bytes += data.len() as u64;
        if self.error.is_some() {
            return;
        }
        let mut split = std::mem::take(&mut self.split);
        let r = split.feed(data, |b| {
            self.block(b, now_ns);
            self.error.clone().map_or(Ok(()), Err)
        });
        self.split = split;
        if let Err(e) = r {
            let after = self.blocks;
            self.fail(format!("{e} after {after} blocks"));
        }
    }

    fn block(&mut self, b: &[u8], now_ns: u64) {
        let len = b.len();
        let btype = le32(b, 0);
        let first = self.blocks == 0;
        self.blocks += 1;
        match btype {
            SHB_TYPE if first => {
                if len < 28 || le32(b, 8) != BYTE_ORDER_MAGIC {
                    return self.fail("first block is not a little-endian SHB".into());
                }
                // Once per stream: the reader's parser, for the options.
                self.shb_comments = Some(
                    Pcapng::parse(b)
                        .ok()
                        .and_then(|p| Some(p.first_shb()?.comments()))
                        .unwrap_or_default(),
                );
            }
            _ if first => self.fail(format!(
                "stream starts with block type {btype:#x}, not an SHB"
            )),
            IDB_TYPE => self.next_seq.push(0),
            EPB_TYPE => self.packet(b, now_ns),
            _ => self.fail(format!(
                "unexpected block type {btype:#x} as block {}",
                self.blocks - 1
            )),
        }
    }

    fn packet(&mut self, b: &[u8], now_ns: u64) {
        let caplen = le32(b, 20) as usize;
        if caplen < MIN_PACKET || EPB_HEAD + caplen + 4 > b.len() {
            return self.fail(format!(
                "packet {}: captured length {caplen} does not fit",
                self.packets
            ));
        }
        let d = &b[EPB_HEAD..EPB_HEAD + caplen];
        if &d[OFF_MAGIC..OFF_MAGIC + 4] != PAYLOAD_MAGIC {
            return self.fail(format!("packet {}: not a generator packet", self.packets));
        }
        let iface = le32(b, 8) as usize;
        let interfaces = self.next_seq.len();
        let Some(&next) = self.next_seq.get(iface) else {
            return self.fail(format!(
                "packet {} on interface {iface}, of {interfaces} described",
                self.packets
            ));
        };
        let seq = le64(d, OFF_SEQ);
        if seq != next {
            let on = if interfaces > 1 {
                format!(" on interface {iface}")
            } else {
                String::new()
            };
            return self.fail(format!(
                "sequence gap{on}: expected packet {next} but got {seq}"
            ));
        }
        self.next_seq[iface] += 1;
        self.packets += 1;
        self.first_packet_ns.get_or_insert(now_ns);
        if self.record_latency {
            self.latencies_ns
                .push(now_ns.saturating_sub(le64(d, OFF_STAMP)));
        }
    }

    fn fail(&mut self, why: String) {
        if self.error.is_none() {
            self.error = Some(why);
        }
    }

    /// The verdict once the stream ended: damage seen, or a block cut short.
    pub fn finish(&mut self) -> Result<(), String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.split.pending() > 0 {
            let e = format!(
                "stream ended inside a block ({} bytes pending)",
                self.split.pending()
            );
            self.error = Some(e.clone());
            return Err(e);
        }
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub fn blocks(&self) -> u64 {
        self.blocks
    }
    pub fn packets(&self) -> u64 {
        self.packets
    }
    /// Interfaces described so far (IDBs).
    pub fn interfaces(&self) -> usize {
        self.next_seq.len()
    }
    /// The comments of the stream's SHB, once it has arrived.
    pub fn shb_comments(&self) -> Option<&[String]> {
        self.shb_comments.as_deref()
    }
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
    /// The `now_ns` of the feed that completed the first packet.
    pub fn first_packet_ns(&self) -> Option<u64> {
        self.first_packet_ns
    }
    pub fn take_latencies(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.latencies_ns)
    }
}
