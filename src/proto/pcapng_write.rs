//! Writing a capture's pcapng stream, sans-IO: the blocks the native engine
//! produces, laid out as dumpcap 4.0 writes them on its stdout, so the
//! relay ([`crate::proto::pcapng::ShbEditor`], [`crate::proto::merge`])
//! and every client treat both engines' streams alike:
//!
//! - one Section Header Block in the host's byte order, section length
//!   unknown, with `shb_os` and `shb_userappl` (dumpcap also writes
//!   `shb_hardware`, a CPU name nothing reads);
//! - one Interface Description Block per interface, in request order:
//!   the link type, snap length 262144, `if_name`, `if_filter` (the filter
//!   string, first byte 0 = libpcap syntax), `if_tsresol` 9, `if_os`;
//! - Enhanced Packet Blocks with nanosecond timestamps, written in place
//!   into the caller's buffer ([`put_epb`]);
//! - at the end one Interface Statistics Block per interface: the comment
//!   dumpcap writes (naming the service), `isb_starttime`, `isb_endtime`,
//!   `isb_ifrecv`, `isb_ifdrop`. dumpcap 4.0 writes its ISB times in
//!   microseconds although its IDBs say nanoseconds; these are in
//!   nanoseconds, as `if_tsresol` says.
//!
//! Nothing here does I/O.

use crate::proto::bpf::SNAPLEN;
use crate::proto::merge::{push_option, wrap};
use crate::proto::pcapng::Order;

/// Block types (pcapng spec, section 4).
const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const ISB: u32 = 5;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// Option codes (pcapng spec, sections 3.5, 4.1, 4.2, 4.6).
const OPT_ENDOFOPT: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_OS: u16 = 3;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const IF_FILTER: u16 = 11;
const IF_OS: u16 = 12;
const ISB_STARTTIME: u16 = 2;
const ISB_ENDTIME: u16 = 3;
const ISB_IFRECV: u16 = 4;
const ISB_IFDROP: u16 = 5;
/// `if_tsresol` 9: timestamps count nanoseconds.
const TSRESOL_NS: u8 = 9;
/// `if_filter`'s first byte: 0 = a libpcap filter string.
const FILTER_LIBPCAP: u8 = 0;
/// The comment dumpcap puts in its ISBs, with the service named instead.
pub const ISB_COMMENT: &str = "Counters provided by packetflix";
/// Option values carry a 16-bit length.
const MAX_OPTION_VALUE: usize = u16::MAX as usize;

/// An EPB's fixed part before the packet: type, length, interface,
/// timestamp high and low, captured and original length.
pub const EPB_HEADER_LEN: usize = 28;
/// An EPB's trailing copy of its length.
pub const EPB_TRAILER_LEN: usize = 4;

/// What the IDB says about one interface.
#[derive(Clone, Copy, Debug)]
pub struct Interface<'a> {
    pub name: &'a str,
    pub linktype: u16,
    pub filter: Option<&'a str>,
}

/// The service's name as `shb_userappl` and the merger write it.
pub fn user_application() -> String {
    format!("packetflix {}", env!("CARGO_PKG_VERSION"))
}

/// The Section Header Block. `os`: the kernel, as `uname -sr` says (what
/// dumpcap writes as `shb_os` and `if_os`).
pub fn section_header(os: &str) -> Vec<u8> {
    let order = Order::host();
    let mut body = Vec::new();
    order.put_u32(&mut body, BYTE_ORDER_MAGIC);
    order.put_u16(&mut body, 1);
    order.put_u16(&mut body, 0);
    // -1: a live stream's section length is not known.
    body.extend_from_slice(&[0xFF; 8]);
    push_option(&mut body, order, SHB_OS, cut(os.as_bytes()));
    push_option(
        &mut body,
        order,
        SHB_USERAPPL,
        user_application().as_bytes(),
    );
    push_option(&mut body, order, OPT_ENDOFOPT, &[]);
    wrap(order, SHB, &body)
}

/// One Interface Description Block.
pub fn interface_description(i: &Interface, os: &str) -> Vec<u8> {
    let order = Order::host();
    let mut body = Vec::new();
    order.put_u16(&mut body, i.linktype);
    order.put_u16(&mut body, 0);
    order.put_u32(&mut body, SNAPLEN);
    push_option(&mut body, order, IF_NAME, cut(i.name.as_bytes()));
    push_option(&mut body, order, IF_TSRESOL, &[TSRESOL_NS]);
    if let Some(f) = i.filter {
        let mut value = vec![FILTER_LIBPCAP];
        value.extend_from_slice(f.as_bytes());
        push_option(&mut body, order, IF_FILTER, cut(&value));
    }
    push_option(&mut body, order, IF_OS, cut(os.as_bytes()));
    push_option(&mut body, order, OPT_ENDOFOPT, &[]);
    wrap(order, IDB, &body)
}

/// The head of the stream: the SHB and the IDBs of `interfaces`, in order.
pub fn stream_head(interfaces: &[Interface], os: &str) -> Vec<u8> {
    let mut out = section_header(os);
    for i in interfaces {
        out.extend(interface_description(i, os));
    }
    out
}

/// An option value cut to the 16-bit length an option can carry (a filter
/// may be longer: `--max-filter` goes to 64 KiB).
fn cut(value: &[u8]) -> &[u8] {
    &value[..value.len().min(MAX_OPTION_VALUE)]
}

/// The whole length of an EPB holding `caplen` bytes of packet.
pub const fn epb_len(caplen: usize) -> usize {
    EPB_HEADER_LEN + caplen.div_ceil(4) * 4 + EPB_TRAILER_LEN
}

/// Completes an EPB in place: `block` is exactly [`epb_len`]`(caplen)`
/// bytes whose packet is already at `EPB_HEADER_LEN..+caplen`; the header,
/// the padding and the trailer are written around it.
pub fn put_epb(block: &mut [u8], interface: u32, ts_ns: u64, caplen: u32, original: u32) {
    let len = block.len();
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    let words = [
        EPB,
        len32,
        interface,
        (ts_ns >> 32) as u32,
        ts_ns as u32,
        caplen,
        original,
    ];
    for (n, w) in words.iter().enumerate() {
        block[n * 4..n * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let end = EPB_HEADER_LEN + caplen as usize;
    block[end..len - EPB_TRAILER_LEN].fill(0);
    block[len - EPB_TRAILER_LEN..].copy_from_slice(&len32.to_ne_bytes());
}

/// What the kernel counted for one interface over the capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Packets the filter accepted (`tp_packets`, drops included).
    pub received: u64,
    /// Of those, packets the ring had no room for (`tp_drops`).
    pub dropped: u64,
}

/// One Interface Statistics Block; times in nanoseconds since the epoch.
pub fn interface_statistics(interface: u32, start_ns: u64, end_ns: u64, counts: Counts) -> Vec<u8> {
    let order = Order::host();
    let mut body = Vec::new();
    order.put_u32(&mut body, interface);
    order.put_u32(&mut body, (end_ns >> 32) as u32);
    order.put_u32(&mut body, end_ns as u32);
    push_option(&mut body, order, OPT_COMMENT, ISB_COMMENT.as_bytes());
    // Timestamps are two 32-bit words, high first, each in the host's
    // order; counters are 64-bit values in the host's order.
    let ts = |t: u64| {
        let mut v = ((t >> 32) as u32).to_ne_bytes().to_vec();
        v.extend_from_slice(&(t as u32).to_ne_bytes());
        v
    };
    push_option(&mut body, order, ISB_STARTTIME, &ts(start_ns));
    push_option(&mut body, order, ISB_ENDTIME, &ts(end_ns));
    push_option(&mut body, order, ISB_IFRECV, &counts.received.to_ne_bytes());
    push_option(&mut body, order, ISB_IFDROP, &counts.dropped.to_ne_bytes());
    push_option(&mut body, order, OPT_ENDOFOPT, &[]);
    wrap(order, ISB, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::merge::Merger;
    use crate::proto::pcapng::{ShbEditor, TARGET_MARKER};

    const OS: &str = "Linux 6.1.0";

    fn stream() -> Vec<u8> {
        let mut s = stream_head(
            &[
                Interface {
                    name: "eth0",
                    linktype: 1,
                    filter: Some("udp port 53"),
                },
                Interface {
                    name: "lo",
                    linktype: 1,
                    filter: None,
                },
            ],
            OS,
        );
        for (i, n) in [(0u32, 60usize), (1, 61), (0, 1514)] {
            let mut block = vec![0xEE; epb_len(n)];
            block[EPB_HEADER_LEN..EPB_HEADER_LEN + n].fill(i as u8 + 1);
            put_epb(
                &mut block,
                i,
                1_700_000_000_123_456_789,
                n as u32,
                n as u32 + 4,
            );
            s.extend(block);
        }
        for i in 0..2 {
            s.extend(interface_statistics(
                i,
                1_700_000_000_000_000_000,
                1_700_000_001_000_000_000,
                Counts {
                    received: 3,
                    dropped: 1,
                },
            ));
        }
        s
    }

    /// (type, body) of each block; panics on a malformed stream.
    fn blocks(s: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < s.len() {
            let t = u32::from_ne_bytes(s[at..at + 4].try_into().unwrap());
            let len = u32::from_ne_bytes(s[at + 4..at + 8].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            let trailer = u32::from_ne_bytes(s[at + len - 4..at + len].try_into().unwrap());
            assert_eq!(trailer as usize, len);
            out.push((t, s[at + 8..at + len - 4].to_vec()));
            at += len;
        }
        out
    }

    fn options(body: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 4 <= body.len() {
            let code = u16::from_ne_bytes([body[at], body[at + 1]]);
            let len = usize::from(u16::from_ne_bytes([body[at + 2], body[at + 3]]));
            out.push((code, body[at + 4..at + 4 + len].to_vec()));
            at += 4 + len.div_ceil(4) * 4;
        }
        out
    }

    #[test]
    fn the_stream_is_dumpcaps_layout() {
        let b = blocks(&stream());
        let types: Vec<u32> = b.iter().map(|(t, _)| *t).collect();
        assert_eq!(types, vec![SHB, IDB, IDB, EPB, EPB, EPB, ISB, ISB]);
        let shb = options(&b[0].1[16..]);
        assert_eq!(shb[0], (SHB_OS, OS.as_bytes().to_vec()));
        assert!(shb[1].1.starts_with(b"packetflix "));
        let idb = &b[1].1;
        assert_eq!(u16::from_ne_bytes([idb[0], idb[1]]), 1);
        assert_eq!(u32::from_ne_bytes(idb[4..8].try_into().unwrap()), 262_144);
        let o = options(&idb[8..]);
        assert_eq!(o[0], (IF_NAME, b"eth0".to_vec()));
        assert_eq!(o[1], (IF_TSRESOL, vec![9]));
        assert_eq!(o[2], (IF_FILTER, b"\0udp port 53".to_vec()));
        assert_eq!(o[3], (IF_OS, OS.as_bytes().to_vec()));
        // No filter, no if_filter.
        assert!(options(&b[2].1[8..]).iter().all(|(c, _)| *c != IF_FILTER));
        let epb = &b[5].1;
        let w = |at: usize| u32::from_ne_bytes(epb[at..at + 4].try_into().unwrap());
        let ts = (u64::from(w(4)) << 32) | u64::from(w(8));
        assert_eq!(
            (w(0), ts, w(12), w(16)),
            (0, 1_700_000_000_123_456_789, 1514, 1518)
        );
        assert!(epb[20..20 + 1514].iter().all(|&x| x == 1));
        assert!(epb[20 + 1514..].iter().all(|&x| x == 0), "padding is zeros");
        let isb = options(&b[6].1[12..]);
        assert_eq!(isb[0], (OPT_COMMENT, ISB_COMMENT.as_bytes().to_vec()));
        assert_eq!(isb[3], (ISB_IFRECV, 3u64.to_ne_bytes().to_vec()));
        assert_eq!(isb[4], (ISB_IFDROP, 1u64.to_ne_bytes().to_vec()));
    }

    #[test]
    fn a_filter_longer_than_an_option_is_cut_to_fit() {
        let f = "x".repeat(70_000);
        let idb = interface_description(
            &Interface {
                name: "lo",
                linktype: 1,
                filter: Some(&f),
            },
            OS,
        );
        let b = blocks(&idb);
        let o = options(&b[0].1[8..]);
        assert_eq!(o[2].1.len(), MAX_OPTION_VALUE);
    }

    #[test]
    fn the_shb_editor_and_the_merger_take_the_stream_as_dumpcaps() {
        let s = stream();
        let doc = format!("{TARGET_MARKER}container-name: \"web\"\n");
        let mut ed = ShbEditor::new(doc.clone());
        let mut edited = Vec::new();
        for chunk in s.chunks(7) {
            edited.extend_from_slice(&ed.feed(chunk));
        }
        edited.extend(ed.finish());
        let b = blocks(&edited);
        assert_eq!(b.len(), 8);
        let comment = &options(&b[0].1[16..])[0];
        assert_eq!(comment.0, OPT_COMMENT);
        assert!(comment.1.ends_with(doc.as_bytes()));
        assert_eq!(
            &edited[edited.len() - (s.len() - blocks_len(&s, 1))..],
            &s[blocks_len(&s, 1)..]
        );

        let mut m = Merger::new(["a", "b"], doc);
        let mut merged = m.take_header().unwrap();
        for (i, chunk) in s.chunks(100).enumerate() {
            m.feed(0, chunk, &mut merged).unwrap();
            let other = &s[(i * 100).min(s.len())..((i + 1) * 100).min(s.len())];
            m.feed(1, other, &mut merged).unwrap();
        }
        m.finish(0).unwrap();
        m.finish(1).unwrap();
        assert_eq!(m.dropped(), 0);
        let b = blocks(&merged);
        let count = |t| b.iter().filter(|(x, _)| *x == t).count();
        assert_eq!(
            (count(SHB), count(IDB), count(EPB), count(ISB)),
            (1, 4, 6, 4)
        );
        let names: Vec<Vec<u8>> = b
            .iter()
            .filter(|(t, _)| *t == IDB)
            .map(|(_, body)| options(&body[8..])[0].1.clone())
            .collect();
        assert_eq!(
            names,
            vec![
                b"a/eth0".to_vec(),
                b"a/lo".to_vec(),
                b"b/eth0".to_vec(),
                b"b/lo".to_vec()
            ]
        );
    }

    /// The length of the first `n` blocks.
    fn blocks_len(s: &[u8], n: usize) -> usize {
        let mut at = 0;
        for _ in 0..n {
            at += u32::from_ne_bytes(s[at + 4..at + 8].try_into().unwrap()) as usize;
        }
        at
    }

    #[test]
    fn wireshark_tools_read_the_stream_with_nanosecond_times() {
        let path = std::env::temp_dir().join(format!(
            "packetflix-pcapng-write-{}.pcapng",
            std::process::id()
        ));
        std::fs::write(&path, stream()).unwrap();
        let out = std::process::Command::new("tshark")
            .args(["-r"])
            .arg(&path)
            .args([
                "-T",
                "fields",
                "-e",
                "frame.interface_name",
                "-e",
                "frame.time_epoch",
            ])
            .output();
        let info = std::process::Command::new("capinfos").arg(&path).output();
        let _ = std::fs::remove_file(&path);
        let (Ok(out), Ok(info)) = (out, info) else {
            eprintln!("note: tshark or capinfos not runnable, check skipped");
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text,
            "eth0\t1700000000.123456789\nlo\t1700000000.123456789\neth0\t1700000000.123456789\n"
        );
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains("Capture application: packetflix"), "{info}");
        assert!(info.contains("Filter string = udp port 53"), "{info}");
        assert!(info.contains("Time precision = nanoseconds (9)"), "{info}");
    }
}
