//! A small pcapng reader for checking what the service streams: blocks in
//! either byte order, SHB options (comments), interfaces from IDBs (name,
//! link type, snap length, options), packets from EPBs (timestamp, data)
//! with a minimal IPv4 decoder for the link types dumpcap produces here,
//! and the interface statistics of ISBs. An incomplete trailing block (a stream cut
//! mid-block) is left unread; anything malformed before it is an error.
//! Also decodes through `tshark`, as a second opinion from Wireshark itself.

use std::net::Ipv4Addr;

// The block types, magic and option codes of the pcapng specification the
// synthetic capture program writes too; they are defined once, in the one
// file of the kit that program is compiled from.
use crate::pcapgen::format::{BYTE_ORDER_MAGIC, LINKTYPE_ETHERNET};
pub use crate::pcapgen::format::{
    EPB_TYPE as EPB, IDB_TYPE as IDB, OPT_COMMENT, OPT_SHB_USERAPPL as SHB_USERAPPL,
    SHB_TYPE as SHB,
};

/// if_name, an IDB option code (pcapng spec, section 4.2).
pub const IF_NAME: u16 = 2;
/// if_tsresol, if_filter and if_os (IDB options, section 4.2).
pub const IF_TSRESOL: u16 = 9;
pub const IF_FILTER: u16 = 11;
pub const IF_OS: u16 = 12;
/// The Interface Statistics Block's type and its options isb_starttime,
/// isb_endtime, isb_ifrecv and isb_ifdrop (section 4.6).
pub const ISB: u32 = 5;
pub const ISB_STARTTIME: u16 = 2;
pub const ISB_ENDTIME: u16 = 3;
pub const ISB_IFRECV: u16 = 4;
pub const ISB_IFDROP: u16 = 5;

/// Link types (tcpdump.org LINKTYPE_*) dumpcap uses on Linux, besides
/// Ethernet.
const LINKTYPE_LINUX_SLL: u16 = 113;
const LINKTYPE_LINUX_SLL2: u16 = 276;

const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;

#[derive(Clone, Debug, PartialEq)]
pub struct Shb {
    pub big_endian: bool,
    pub major: u16,
    pub minor: u16,
    pub section_length: i64,
    pub options: Vec<(u16, Vec<u8>)>,
}

impl Shb {
    pub fn comments(&self) -> Vec<String> {
        self.options
            .iter()
            .filter(|(c, _)| *c == OPT_COMMENT)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    pub fn option(&self, code: u16) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Interface {
    pub linktype: u16,
    pub name: Option<String>,
    pub snaplen: u32,
    /// Every option, in order (code, value).
    pub options: Vec<(u16, Vec<u8>)>,
}

impl Interface {
    pub fn option(&self, code: u16) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    /// if_tsresol's exponent of ten (6, microseconds, without the option).
    pub fn tsresol(&self) -> u8 {
        self.option(IF_TSRESOL)
            .and_then(|v| v.first().copied())
            .unwrap_or(6)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Packet {
    /// Index into the interfaces of the packet's own section.
    pub interface_id: u32,
    pub interface_name: Option<String>,
    pub linktype: u16,
    /// The 64-bit timestamp, in its interface's if_tsresol units.
    pub ts: u64,
    /// The packet's length on the wire (captured may be less).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// An Interface Statistics Block.
#[derive(Clone, Debug, PartialEq)]
pub struct Isb {
    pub interface_id: u32,
    pub ts: u64,
    /// Every option, in order (code, value as read: the 64-bit ones are
    /// decoded by [`Isb::counter`]).
    pub options: Vec<(u16, u64)>,
}

impl Isb {
    /// A 64-bit option (isb_ifrecv, isb_ifdrop, ...), if present.
    pub fn counter(&self, code: u16) -> Option<u64> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| *v)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ipv4Packet {
    pub interface_name: Option<String>,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pcapng {
    pub shbs: Vec<Shb>,
    /// Interfaces of each section, in order (what EPBs refer to).
    pub sections_interfaces: Vec<Vec<Interface>>,
    pub packets: Vec<Packet>,
    /// The interface statistics blocks, in order.
    pub stats: Vec<Isb>,
    /// Bytes making up complete blocks; the rest is an unfinished block.
    pub complete_len: usize,
}

fn u16_at(b: &[u8], at: usize, be: bool) -> u16 {
    let a = [b[at], b[at + 1]];
    if be {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

fn u32_at(b: &[u8], at: usize, be: bool) -> u32 {
    let a = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if be {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

fn parse_options(b: &[u8], be: bool) -> Result<Vec<(u16, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= b.len() {
        let code = u16_at(b, at, be);
        let len = u16_at(b, at + 2, be) as usize;
        if code == 0 {
            return Ok(out);
        }
        let end = at + 4 + len;
        if end > b.len() {
            return Err(format!("option {code} of length {len} overruns its block"));
        }
        out.push((code, b[at + 4..end].to_vec()));
        at += 4 + pad4(len);
    }
    if at != b.len() {
        return Err("options do not end on a 4-byte boundary".into());
    }
    Ok(out)
}

impl Pcapng {
    pub fn parse(bytes: &[u8]) -> Result<Pcapng, String> {
        let mut out = Pcapng::default();
        let mut be = false;
        let mut at = 0;
        while bytes.len() - at >= 12 {
            let raw_type = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
            if raw_type == SHB {
                // The byte-order magic decides the order of this section.
                let magic = &bytes[at + 8..at + 12];
                be = match u32::from_le_bytes(magic.try_into().unwrap()) {
                    BYTE_ORDER_MAGIC => false,
                    m if m.swap_bytes() == BYTE_ORDER_MAGIC => true,
                    m => return Err(format!("SHB at {at} has bad byte-order magic {m:#x}")),
                };
            } else if out.shbs.is_empty() {
                return Err(format!("block type {raw_type:#x} at {at} before any SHB"));
            }
            let btype = u32_at(bytes, at, be);
            let total = u32_at(bytes, at + 4, be) as usize;
            if total < 12 || total % 4 != 0 {
                return Err(format!("block {btype:#x} at {at} has bad length {total}"));
            }
            if bytes.len() - at < total {
                break; // unfinished block: more bytes to come
            }
            let trailer = u32_at(bytes, at + total - 4, be) as usize;
            if trailer != total {
                return Err(format!(
                    "block {btype:#x} at {at}: leading length {total} != trailing {trailer}"
                ));
            }
            let body = &bytes[at + 8..at + total - 4];
            out.read_block(btype, body, be)
                .map_err(|e| format!("block {btype:#x} at {at}: {e}"))?;
            at += total;
            out.complete_len = at;
        }
        Ok(out)
    }

    fn read_block(&mut self, btype: u32, body: &[u8], be: bool) -> Result<(), String> {
        match btype {
            SHB => {
                if body.len() < 16 {
                    return Err("SHB too short".into());
                }
                self.shbs.push(Shb {
                    big_endian: be,
                    major: u16_at(body, 4, be),
                    minor: u16_at(body, 6, be),
                    section_length: {
                        let a: [u8; 8] = body[8..16].try_into().unwrap();
                        if be {
                            i64::from_be_bytes(a)
                        } else {
                            i64::from_le_bytes(a)
                        }
                    },
                    options: parse_options(&body[16..], be)?,
                });
                self.sections_interfaces.push(Vec::new());
            }
            IDB => {
                if body.len() < 8 {
                    return Err("IDB too short".into());
                }
                let options = parse_options(&body[8..], be)?;
                let name = options.iter().find(|(c, _)| *c == IF_NAME).map(|(_, v)| {
                    String::from_utf8_lossy(v)
                        .trim_end_matches('\0')
                        .to_string()
                });
                self.sections_interfaces
                    .last_mut()
                    .expect("SHB came first")
                    .push(Interface {
                        linktype: u16_at(body, 0, be),
                        name,
                        snaplen: u32_at(body, 4, be),
                        options,
                    });
            }
            EPB => {
                if body.len() < 20 {
                    return Err("EPB too short".into());
                }
                let interface_id = u32_at(body, 0, be);
                let caplen = u32_at(body, 12, be) as usize;
                if 20 + pad4(caplen) > body.len() {
                    return Err(format!("EPB caplen {caplen} overruns its block"));
                }
                parse_options(&body[20 + pad4(caplen)..], be)?;
                let iface = self
                    .sections_interfaces
                    .last()
                    .and_then(|s| s.get(interface_id as usize))
                    .ok_or_else(|| format!("EPB names undefined interface {interface_id}"))?;
                self.packets.push(Packet {
                    interface_id,
                    interface_name: iface.name.clone(),
                    linktype: iface.linktype,
                    ts: u64::from(u32_at(body, 4, be)) << 32 | u64::from(u32_at(body, 8, be)),
                    orig_len: u32_at(body, 16, be),
                    data: body[20..20 + caplen].to_vec(),
                });
            }
            ISB => {
                if body.len() < 12 {
                    return Err("ISB too short".into());
                }
                let options = parse_options(&body[12..], be)?
                    .into_iter()
                    .map(|(code, v)| {
                        // isb_starttime/endtime: two 32-bit halves, high
                        // first; the counters: one 64-bit number.
                        let n = match (code, v.len()) {
                            (ISB_STARTTIME | ISB_ENDTIME, 8) => {
                                u64::from(u32_at(&v, 0, be)) << 32 | u64::from(u32_at(&v, 4, be))
                            }
                            (_, 8) => {
                                let a: [u8; 8] = v[..8].try_into().expect("8 bytes");
                                if be {
                                    u64::from_be_bytes(a)
                                } else {
                                    u64::from_le_bytes(a)
                                }
                            }
                            _ => 0,
                        };
                        (code, n)
                    })
                    .collect();
                self.stats.push(Isb {
                    interface_id: u32_at(body, 0, be),
                    ts: u64::from(u32_at(body, 4, be)) << 32 | u64::from(u32_at(body, 8, be)),
                    options,
                });
            }
            _ => {}
        }
        Ok(())
    }

    pub fn first_shb(&self) -> Option<&Shb> {
        self.shbs.first()
    }

    /// Interfaces of the first section.
    pub fn interfaces(&self) -> Vec<Interface> {
        self.sections_interfaces
            .first()
            .cloned()
            .unwrap_or_default()
    }

    pub fn interface_names(&self) -> Vec<String> {
        self.interfaces()
            .into_iter()
            .map(|i| i.name.unwrap_or_default())
            .collect()
    }

    pub fn ipv4(&self) -> Vec<Ipv4Packet> {
        self.packets.iter().filter_map(decode_ipv4).collect()
    }

    pub fn icmp(&self) -> Vec<Ipv4Packet> {
        self.ipv4()
            .into_iter()
            .filter(|p| p.proto == IPPROTO_ICMP)
            .collect()
    }

    pub fn tcp(&self) -> Vec<Ipv4Packet> {
        self.ipv4()
            .into_iter()
            .filter(|p| p.proto == IPPROTO_TCP)
            .collect()
    }

    /// True if an ICMP packet from `src` was captured.
    pub fn has_icmp_from(&self, src: Ipv4Addr) -> bool {
        self.icmp().iter().any(|p| p.src == src)
    }

    /// A timestamp of interface `interface_id` (of the first section) in
    /// nanoseconds since the epoch; `None` for an unknown interface or a
    /// power-of-two resolution (no source here writes one).
    pub fn ts_ns(&self, interface_id: u32, ts: u64) -> Option<u128> {
        let res = self.interfaces().get(interface_id as usize)?.tsresol();
        if res & 0x80 != 0 || res > 9 {
            return None;
        }
        Some(u128::from(ts) * 10u128.pow(9 - u32::from(res)))
    }

    /// Checks the interface statistics a stream ends with, as dumpcap and
    /// the native engine write them when a capture stops: exactly one ISB
    /// per interface of the first section, after every packet; each with
    /// isb_ifrecv and isb_ifdrop; isb_starttime <= isb_endtime <= the
    /// block's own time, within a day of now. `isb_resolution`: the power
    /// of ten the ISBs' times are in, `None` for their interface's
    /// if_tsresol as the specification has it (dumpcap 4.0 writes them in
    /// microseconds whatever its IDBs say).
    pub fn check_final_isbs(&self, isb_resolution: Option<u8>) -> Result<(), String> {
        let n = self.interfaces().len();
        let mut ids: Vec<u32> = self.stats.iter().map(|s| s.interface_id).collect();
        ids.sort_unstable();
        if ids != (0..n as u32).collect::<Vec<_>>() {
            return Err(format!("ISBs for interfaces {ids:?} of {n}"));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let day = 86_400u128 * 1_000_000_000;
        for isb in &self.stats {
            let id = isb.interface_id;
            let time = |v: u64| match isb_resolution {
                Some(res) if res <= 9 => Ok(u128::from(v) * 10u128.pow(9 - u32::from(res))),
                Some(res) => Err(format!("resolution 10^-{res}")),
                None => self
                    .ts_ns(id, v)
                    .ok_or_else(|| format!("ISB {id}: no decimal resolution")),
            };
            let own = time(isb.ts)?;
            let start = time(isb.counter(ISB_STARTTIME).ok_or("no isb_starttime")?)?;
            let end = time(isb.counter(ISB_ENDTIME).ok_or("no isb_endtime")?)?;
            if !(start <= end && end <= own && now.abs_diff(own) < day) {
                return Err(format!(
                    "ISB {id}: start {start}, end {end}, block {own}, now {now} (ns)"
                ));
            }
            for code in [ISB_IFRECV, ISB_IFDROP] {
                if isb.counter(code).is_none() {
                    return Err(format!("ISB {id} lacks option {code}"));
                }
            }
        }
        if let Some(last) = self.packets.last() {
            let last_ns = self.ts_ns(last.interface_id, last.ts).unwrap_or(0);
            for isb in &self.stats {
                let own = match isb_resolution {
                    Some(res) => u128::from(isb.ts) * 10u128.pow(9 - u32::from(res.min(9))),
                    None => self.ts_ns(isb.interface_id, isb.ts).unwrap_or(0),
                };
                if own < last_ns {
                    return Err(format!(
                        "ISB {} at {own} before the last packet at {last_ns}",
                        isb.interface_id
                    ));
                }
            }
        }
        Ok(())
    }
}

fn decode_ipv4(p: &Packet) -> Option<Ipv4Packet> {
    let d = &p.data;
    let (ethertype, l3) = match p.linktype {
        LINKTYPE_ETHERNET => (u16::from_be_bytes([*d.get(12)?, *d.get(13)?]), 14),
        LINKTYPE_LINUX_SLL => (u16::from_be_bytes([*d.get(14)?, *d.get(15)?]), 16),
        LINKTYPE_LINUX_SLL2 => (u16::from_be_bytes([*d.first()?, *d.get(1)?]), 20),
        _ => return None,
    };
    if ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = d.get(l3..)?;
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let proto = ip[9];
    Some(Ipv4Packet {
        interface_name: p.interface_name.clone(),
        proto,
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
    })
}

/// Larger blocks than this come from neither dumpcap (262144-byte snap
/// length plus headers) nor the service (an SHB with a target document of
/// at most 256 KiB): a length beyond it means a stream lost its framing.
pub const MAX_BLOCK: usize = 1 << 20;
/// Smallest legal block: type, length, trailing length.
const MIN_BLOCK: usize = 12;

/// Splits a little-endian pcapng byte stream, fed in pieces of any size
/// (reads, websocket messages), into whole blocks, checking each block's
/// leading and trailing lengths. A block is copied only when it spans two
/// pieces; everything else is handed over in place. Sans-IO, no allocation
/// per block: the bench's readers must never be what a bench measures.
#[derive(Debug)]
pub struct Splitter {
    carry: Vec<u8>,
    max_block: usize,
}

impl Default for Splitter {
    fn default() -> Self {
        Splitter::new(MAX_BLOCK)
    }
}

impl Splitter {
    pub fn new(max_block: usize) -> Splitter {
        Splitter {
            carry: Vec::new(),
            max_block,
        }
    }

    /// Bytes of an unfinished block held back.
    pub fn pending(&self) -> usize {
        self.carry.len()
    }

    /// Hands every block `data` completes to `block`, in order; stops at
    /// the first bad length or the first error `block` returns.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mut block: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        if !self.carry.is_empty() {
            let mut carry = std::mem::take(&mut self.carry);
            if carry.len() < 8 {
                let take = (8 - carry.len()).min(data.len());
                carry.extend_from_slice(&data[..take]);
                data = &data[take..];
                if carry.len() < 8 {
                    self.carry = carry;
                    return Ok(());
                }
            }
            let len = self.block_len(&carry)?;
            let take = (len - carry.len()).min(data.len());
            carry.extend_from_slice(&data[..take]);
            data = &data[take..];
            if carry.len() < len {
                self.carry = carry;
                return Ok(());
            }
            let r = check_trailer(&carry).and_then(|()| block(&carry));
            carry.clear();
            self.carry = carry; // keeps the allocation
            r?;
        }
        while data.len() >= 8 {
            let len = self.block_len(data)?;
            if data.len() < len {
                break;
            }
            check_trailer(&data[..len])?;
            block(&data[..len])?;
            data = &data[len..];
        }
        self.carry.extend_from_slice(data);
        Ok(())
    }

    fn block_len(&self, b: &[u8]) -> Result<usize, String> {
        let len = le32(b, 4) as usize;
        if len < MIN_BLOCK || len % 4 != 0 || len > self.max_block {
            return Err(format!("bad block length {len} (type {:#x})", le32(b, 0)));
        }
        Ok(len)
    }
}

/// Little-endian readers for the stream checks (callers check bounds).
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn check_trailer(b: &[u8]) -> Result<(), String> {
    let len = b.len();
    let trailer = le32(b, len - 4) as usize;
    if trailer != len {
        return Err(format!(
            "block (type {:#x}): trailing length {trailer} != leading length {len}",
            le32(b, 0)
        ));
    }
    Ok(())
}

/// One packet as tshark decodes it.
#[derive(Clone, Debug, PartialEq)]
pub struct TsharkRow {
    pub interface: String,
    pub src: String,
    pub dst: String,
    pub icmp_type: String,
}

/// The complete blocks of `bytes` decoded by `tshark -r`, one row per packet
/// with the given fields (`-T fields -e ...`) in order; panics if tshark
/// cannot read them (so it also checks the stream is valid pcapng).
pub fn tshark_fields(bytes: &[u8], fields: &[&str]) -> Vec<Vec<String>> {
    let complete = Pcapng::parse(bytes).expect("valid pcapng").complete_len;
    let path = super::scratch_path("capture.pcapng");
    std::fs::write(&path, &bytes[..complete]).expect("write capture file");
    let mut cmd = std::process::Command::new("tshark");
    cmd.arg("-r")
        .arg(&path)
        .args(["-T", "fields", "-E", "separator=\t"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run tshark");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "tshark could not read the stream: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut row: Vec<String> = l.split('\t').map(str::to_string).collect();
            row.resize(fields.len(), String::new());
            row
        })
        .collect()
}

/// Decodes the complete blocks of `bytes` with tshark (see [`tshark_fields`]).
pub fn tshark_decode(bytes: &[u8]) -> Vec<TsharkRow> {
    let fields = ["frame.interface_name", "ip.src", "ip.dst", "icmp.type"];
    tshark_fields(bytes, &fields)
        .into_iter()
        .map(|mut row| TsharkRow {
            icmp_type: row.pop().unwrap_or_default(),
            dst: row.pop().unwrap_or_default(),
            src: row.pop().unwrap_or_default(),
            interface: row.pop().unwrap_or_default(),
        })
        .collect()
}

/// The YAML document the service put into the first SHB comment, from the
/// marker on; `None` without one.
pub fn target_yaml(p: &Pcapng) -> Option<String> {
    let marker = "---\n# capture target information\n";
    p.first_shb()?
        .comments()
        .into_iter()
        .find_map(|c| c.find(marker).map(|i| c[i..].to_string()))
}

/// The value text after `key:` on the document's line for `key`, if any.
pub fn yaml_value(yaml: &str, key: &str) -> Option<String> {
    yaml.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// Builds pcapng blocks in either byte order, to check this reader itself.
pub mod build {
    fn put16(out: &mut Vec<u8>, v: u16, be: bool) {
        out.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() });
    }
    fn put32(out: &mut Vec<u8>, v: u32, be: bool) {
        out.extend_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() });
    }

    pub fn options(opts: &[(u16, &[u8])], be: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for (code, v) in opts {
            put16(&mut out, *code, be);
            put16(&mut out, v.len() as u16, be);
            out.extend_from_slice(v);
            out.resize(super::pad4(out.len()), 0);
        }
        if !opts.is_empty() {
            out.extend_from_slice(&[0; 4]);
        }
        out
    }

    pub fn block(btype: u32, body: &[u8], be: bool) -> Vec<u8> {
        let total = 12 + body.len() as u32;
        let mut out = Vec::new();
        put32(&mut out, btype, be);
        put32(&mut out, total, be);
        out.extend_from_slice(body);
        put32(&mut out, total, be);
        out
    }

    pub fn shb(opts: &[(u16, &[u8])], be: bool) -> Vec<u8> {
        let mut body = Vec::new();
        put32(&mut body, super::BYTE_ORDER_MAGIC, be);
        put16(&mut body, 1, be);
        put16(&mut body, 0, be);
        body.extend_from_slice(&if be {
            (-1i64).to_be_bytes()
        } else {
            (-1i64).to_le_bytes()
        });
        body.extend(options(opts, be));
        block(super::SHB, &body, be)
    }

    pub fn idb(linktype: u16, name: &str, be: bool) -> Vec<u8> {
        idb_with(linktype, &[(super::IF_NAME, name.as_bytes())], be)
    }

    /// An IDB with the options `opts`.
    pub fn idb_with(linktype: u16, opts: &[(u16, &[u8])], be: bool) -> Vec<u8> {
        let mut body = Vec::new();
        put16(&mut body, linktype, be);
        put16(&mut body, 0, be);
        put32(&mut body, 262144, be);
        body.extend(options(opts, be));
        block(super::IDB, &body, be)
    }

    /// An EPB with a timestamp (in its interface's units).
    pub fn epb_at(interface_id: u32, ts: u64, data: &[u8], be: bool) -> Vec<u8> {
        let mut body = Vec::new();
        put32(&mut body, interface_id, be);
        put32(&mut body, (ts >> 32) as u32, be);
        put32(&mut body, ts as u32, be);
        put32(&mut body, data.len() as u32, be);
        put32(&mut body, data.len() as u32, be);
        body.extend_from_slice(data);
        body.resize(super::pad4(body.len()), 0);
        block(super::EPB, &body, be)
    }

    /// An ISB at `ts` with isb_starttime, isb_endtime (two 32-bit halves),
    /// isb_ifrecv and isb_ifdrop.
    pub fn isb(
        interface_id: u32,
        ts: u64,
        start: u64,
        end: u64,
        recv: u64,
        drop: u64,
        be: bool,
    ) -> Vec<u8> {
        let halves = |v: u64| {
            let mut out = Vec::new();
            put32(&mut out, (v >> 32) as u32, be);
            put32(&mut out, v as u32, be);
            out
        };
        let counter = |v: u64| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let (start, end, recv, drop) = (halves(start), halves(end), counter(recv), counter(drop));
        let mut body = Vec::new();
        put32(&mut body, interface_id, be);
        put32(&mut body, (ts >> 32) as u32, be);
        put32(&mut body, ts as u32, be);
        body.extend(options(
            &[
                (super::ISB_STARTTIME, &start),
                (super::ISB_ENDTIME, &end),
                (super::ISB_IFRECV, &recv),
                (super::ISB_IFDROP, &drop),
            ],
            be,
        ));
        block(super::ISB, &body, be)
    }

    pub fn epb(interface_id: u32, data: &[u8], be: bool) -> Vec<u8> {
        let mut body = Vec::new();
        put32(&mut body, interface_id, be);
        put32(&mut body, 0, be);
        put32(&mut body, 0, be);
        put32(&mut body, data.len() as u32, be);
        put32(&mut body, data.len() as u32, be);
        body.extend_from_slice(data);
        body.resize(super::pad4(body.len()), 0);
        block(super::EPB, &body, be)
    }
}
