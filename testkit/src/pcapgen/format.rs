//! What the synthetic capture program writes, and the settings it takes,
//! without any I/O: the pcapng blocks and packet layout (shared with the
//! reader's [`super::check`]), the sequence numbering with its deliberate
//! damage, and the `PFX_GEN_*` variables both ways (parsed by the program,
//! written by whoever starts it). Std only: the program is compiled from
//! this file on its own (see `build.rs`).

use std::path::PathBuf;
use std::time::Duration;

/// pcapng block type of the Section Header Block (pcapng spec, section 4.1).
pub const SHB_TYPE: u32 = 0x0A0D_0D0A;
/// pcapng byte-order magic, written in our (little-endian) order.
pub const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// pcapng block type of the Interface Description Block (section 4.2).
pub const IDB_TYPE: u32 = 1;
/// pcapng block type of the Enhanced Packet Block (section 4.3).
pub const EPB_TYPE: u32 = 6;
/// LINKTYPE_ETHERNET from the tcpdump.org link-layer header type registry.
pub const LINKTYPE_ETHERNET: u16 = 1;
/// The snap length dumpcap uses by default.
const SNAPLEN: u32 = 262_144;
/// opt_comment option code (pcapng spec, section 3.5).
pub const OPT_COMMENT: u16 = 1;
/// shb_userappl option code (pcapng spec, section 4.1).
pub const OPT_SHB_USERAPPL: u16 = 4;
/// What the SHB says wrote the file.
pub const USERAPPL: &[u8] = b"packetflix-pcapgen";

/// EPB bytes before the packet data: type, length, interface, two timestamp
/// halves, captured and original length (7 × 4 bytes).
pub const EPB_HEAD: usize = 28;
/// EPB bytes after the padded packet data: the trailing total length.
pub const EPB_TAIL: usize = 4;
/// IEEE 802 "local experimental" EtherType 1: never a real protocol.
const ETHERTYPE_EXPERIMENTAL: u16 = 0x88B5;
/// Marks our payload so a reader can tell a generator packet from anything else.
pub const PAYLOAD_MAGIC: &[u8; 4] = b"PFXG";
/// Offset of the magic inside the packet data (after the 14-byte Ethernet header).
pub const OFF_MAGIC: usize = 14;
/// Offset of the `u64` sequence number inside the packet data.
pub const OFF_SEQ: usize = 18;
/// Offset of the `u64` CLOCK_MONOTONIC nanoseconds inside the packet data.
pub const OFF_STAMP: usize = 26;
/// Smallest packet that holds the Ethernet header, magic, sequence and stamp.
pub const MIN_SIZE: usize = 34;
/// Largest captured length we generate: the classic 16-bit IP total length.
pub const MAX_SIZE: usize = 65_535;
/// Bytes per write at full speed by default: the default Linux pipe capacity
/// (16 pages), so one write fills an empty pipe exactly.
pub const DEFAULT_CHUNK: usize = 65_536;
/// Packet index where corruption is injected when no count is given.
const CORRUPT_AT_WITHOUT_COUNT: u64 = 1000;
/// Default lifetime of an idle generator whose stdout nobody closes.
const DEFAULT_IDLE_MAX_SECS: u64 = 600;
/// Longest SHB comment: an option's length field is 16 bits.
const MAX_COMMENT: usize = u16::MAX as usize;

/// The environment variables the program reads (see the table in
/// [`super`]).
pub mod var {
    pub const MODE: &str = "PFX_GEN_MODE";
    pub const SIZE: &str = "PFX_GEN_SIZE";
    pub const COUNT: &str = "PFX_GEN_COUNT";
    pub const RATE: &str = "PFX_GEN_RATE";
    pub const CHUNK: &str = "PFX_GEN_CHUNK";
    pub const START_FIFO: &str = "PFX_GEN_START_FIFO";
    pub const CORRUPT: &str = "PFX_GEN_CORRUPT";
    pub const IDLE_MAX_SECS: &str = "PFX_GEN_IDLE_MAX_SECS";
    pub const COMMENT: &str = "PFX_GEN_COMMENT";
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Stream,
    Idle,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Corrupt {
    None,
    /// Skip one sequence number.
    Seq,
    /// Write one block whose trailing length disagrees with its leading one.
    Len,
    /// Right after the header blocks, a 40-byte packet block whose captured
    /// length (1,000,000) runs past its end, in our (little-endian) order.
    Overrun,
    /// The same block in the other (big-endian) order: a big-endian section
    /// (its SHB and IDB) with that block first.
    OverrunSwapped,
}

/// Everything the program can be told.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub mode: Mode,
    /// Captured bytes per packet.
    pub size: usize,
    /// Packets to write, then exit; 0: until the reader goes away.
    pub count: u64,
    /// Packets per second; 0: full speed.
    pub rate: u64,
    /// Bytes per write at full speed.
    pub chunk: usize,
    pub corrupt: Corrupt,
    /// How long an idle generator waits at most.
    pub idle_max: Duration,
    /// A FIFO to open before the first packet.
    pub start_fifo: Option<PathBuf>,
    /// An `opt_comment` for the SHB.
    pub comment: Option<String>,
}

impl Default for Settings {
    /// What the program does with none of its variables set.
    fn default() -> Self {
        Settings {
            mode: Mode::Stream,
            size: 64,
            count: 0,
            rate: 0,
            chunk: DEFAULT_CHUNK,
            corrupt: Corrupt::None,
            idle_max: Duration::from_secs(DEFAULT_IDLE_MAX_SECS),
            start_fifo: None,
            comment: None,
        }
    }
}

fn num(get: &dyn Fn(&str) -> Option<String>, name: &str, default: u64) -> Result<u64, String> {
    match get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a non-negative integer")),
    }
}

impl Settings {
    /// `count` packets of `size` bytes at full speed.
    pub fn stream(size: usize, count: u64) -> Settings {
        Settings {
            size,
            count,
            ..Settings::default()
        }
    }

    /// Header blocks, then nothing until the reader goes away.
    pub fn idle() -> Settings {
        Settings {
            mode: Mode::Idle,
            ..Settings::default()
        }
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Settings, String> {
        Settings::from_vars(&|name| std::env::var(name).ok())
    }

    /// Reads the settings from `get`, a lookup of the variables in [`var`].
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let mode = match get(var::MODE).as_deref() {
            None | Some("") | Some("stream") => Mode::Stream,
            Some("idle") => Mode::Idle,
            Some(other) => return Err(format!("{}={other:?}: use stream or idle", var::MODE)),
        };
        let size = num(get, var::SIZE, 64)? as usize;
        if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
            return Err(format!(
                "{}={size}: must be {MIN_SIZE}..={MAX_SIZE}",
                var::SIZE
            ));
        }
        let chunk = num(get, var::CHUNK, DEFAULT_CHUNK as u64)? as usize;
        if chunk == 0 {
            return Err(format!("{} must be > 0", var::CHUNK));
        }
        let corrupt = match get(var::CORRUPT).as_deref() {
            None | Some("") | Some("0") => Corrupt::None,
            Some("1") | Some("seq") => Corrupt::Seq,
            Some("len") => Corrupt::Len,
            Some("overrun") => Corrupt::Overrun,
            Some("overrun-swapped") => Corrupt::OverrunSwapped,
            Some(other) => return Err(format!("{}={other:?}: use seq or len", var::CORRUPT)),
        };
        let comment = get(var::COMMENT).filter(|c| !c.is_empty());
        if comment.as_ref().is_some_and(|c| c.len() > MAX_COMMENT) {
            return Err(format!(
                "{} is longer than {MAX_COMMENT} bytes",
                var::COMMENT
            ));
        }
        Ok(Settings {
            mode,
            size,
            count: num(get, var::COUNT, 0)?,
            rate: num(get, var::RATE, 0)?,
            chunk,
            corrupt,
            idle_max: Duration::from_secs(num(get, var::IDLE_MAX_SECS, DEFAULT_IDLE_MAX_SECS)?),
            start_fifo: get(var::START_FIFO).map(Into::into),
            comment,
        })
    }

    /// The variables that tell the program these settings (the service and
    /// the relays pass their environment on to the capture program).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut v = vec![
            (
                var::MODE,
                match self.mode {
                    Mode::Stream => "stream",
                    Mode::Idle => "idle",
                }
                .to_string(),
            ),
            (var::SIZE, self.size.to_string()),
            (var::COUNT, self.count.to_string()),
            (var::RATE, self.rate.to_string()),
            (var::CHUNK, self.chunk.to_string()),
            (var::IDLE_MAX_SECS, self.idle_max.as_secs().to_string()),
        ];
        match self.corrupt {
            Corrupt::None => {}
            Corrupt::Seq => v.push((var::CORRUPT, "seq".into())),
            Corrupt::Len => v.push((var::CORRUPT, "len".into())),
            Corrupt::Overrun => v.push((var::CORRUPT, "overrun".into())),
            Corrupt::OverrunSwapped => v.push((var::CORRUPT, "overrun-swapped".into())),
        }
        if let Some(f) = &self.start_fifo {
            v.push((var::START_FIFO, f.display().to_string()));
        }
        if let Some(c) = &self.comment {
            v.push((var::COMMENT, c.clone()));
        }
        v.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

pub fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    put_u16(buf, code);
    put_u16(buf, value.len() as u16);
    buf.extend_from_slice(value);
    buf.resize(buf.len() + pad4(value.len()) - value.len(), 0);
}

/// The SHB: shb_userappl, and `comment` as opt_comment if there is one (at
/// most 65535 bytes, as [`Settings::from_vars`] checks).
pub fn shb(comment: Option<&str>) -> Vec<u8> {
    let mut opts = Vec::new();
    if let Some(c) = comment {
        put_option(&mut opts, OPT_COMMENT, c.as_bytes());
    }
    put_option(&mut opts, OPT_SHB_USERAPPL, USERAPPL);
    put_u32(&mut opts, 0); // opt_endofopt
    let shb_len = (28 + opts.len()) as u32;
    let mut out = Vec::new();
    put_u32(&mut out, SHB_TYPE);
    put_u32(&mut out, shb_len);
    put_u32(&mut out, BYTE_ORDER_MAGIC);
    put_u16(&mut out, 1); // major version
    put_u16(&mut out, 0); // minor version
    out.extend_from_slice(&(-1i64).to_le_bytes()); // section length unknown
    out.extend_from_slice(&opts);
    put_u32(&mut out, shb_len);
    out
}

/// The one Ethernet IDB.
pub fn idb() -> Vec<u8> {
    let mut out = Vec::new();
    put_u32(&mut out, IDB_TYPE);
    put_u32(&mut out, 20);
    put_u16(&mut out, LINKTYPE_ETHERNET);
    put_u16(&mut out, 0); // reserved
    put_u32(&mut out, SNAPLEN);
    put_u32(&mut out, 20);
    out
}

/// What the program writes first: [`shb`], then [`idb`].
pub fn header_blocks(comment: Option<&str>) -> Vec<u8> {
    let mut out = shb(comment);
    out.extend(idb());
    out
}

/// One EPB with sequence number and stamps zeroed; [`patch_epb`] fills them.
pub fn epb_template(size: usize) -> Vec<u8> {
    let total = EPB_HEAD + pad4(size) + EPB_TAIL;
    let mut out = Vec::with_capacity(total);
    put_u32(&mut out, EPB_TYPE);
    put_u32(&mut out, total as u32);
    put_u32(&mut out, 0); // interface id
    put_u32(&mut out, 0); // timestamp high
    put_u32(&mut out, 0); // timestamp low
    put_u32(&mut out, size as u32); // captured length
    put_u32(&mut out, size as u32); // original length
    let data_start = out.len();
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // locally administered dst
    out.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // locally administered src
    out.extend_from_slice(&ETHERTYPE_EXPERIMENTAL.to_be_bytes());
    out.resize(data_start + pad4(size), 0);
    out[data_start + OFF_MAGIC..data_start + OFF_MAGIC + 4].copy_from_slice(PAYLOAD_MAGIC);
    put_u32(&mut out, total as u32);
    debug_assert_eq!(out.len(), total);
    out
}

/// Writes sequence number, monotonic stamp and pcapng timestamp (µs since
/// the epoch, the default if_tsresol) into one EPB.
pub fn patch_epb(epb: &mut [u8], seq: u64, mono_ns: u64, wall_us: u64) {
    epb[12..16].copy_from_slice(&((wall_us >> 32) as u32).to_le_bytes());
    epb[16..20].copy_from_slice(&(wall_us as u32).to_le_bytes());
    let d = EPB_HEAD;
    epb[d + OFF_SEQ..d + OFF_SEQ + 8].copy_from_slice(&seq.to_le_bytes());
    epb[d + OFF_STAMP..d + OFF_STAMP + 8].copy_from_slice(&mono_ns.to_le_bytes());
}

pub fn corrupt_epb(epb: &mut [u8], how: Corrupt) {
    if how == Corrupt::Len {
        let n = epb.len();
        let wrong = (n as u32).wrapping_add(4);
        epb[n - 4..].copy_from_slice(&wrong.to_le_bytes());
    }
}

pub fn restore_epb_tail(epb: &mut [u8]) {
    let n = epb.len();
    epb[n - 4..].copy_from_slice(&(n as u32).to_le_bytes());
}

/// Captured length of the overrunning block: far past its 40 bytes.
pub const OVERRUN_CAPTURED: u32 = 1_000_000;

/// What [`Corrupt::Overrun`] and [`Corrupt::OverrunSwapped`] write after the
/// header blocks (nothing for the other settings).
pub fn overrun_blocks(how: Corrupt) -> Vec<u8> {
    let be = match how {
        Corrupt::Overrun => false,
        Corrupt::OverrunSwapped => true,
        _ => return Vec::new(),
    };
    let u16b = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let u32b = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut out = Vec::new();
    if be {
        // A new section in the other order: SHB (no options), one IDB.
        for w in [SHB_TYPE, 28, BYTE_ORDER_MAGIC] {
            out.extend_from_slice(&u32b(w));
        }
        out.extend_from_slice(&u16b(1));
        out.extend_from_slice(&u16b(0));
        out.extend_from_slice(&(-1i64).to_be_bytes());
        out.extend_from_slice(&u32b(28));
        for w in [IDB_TYPE, 20] {
            out.extend_from_slice(&u32b(w));
        }
        out.extend_from_slice(&u16b(LINKTYPE_ETHERNET));
        out.extend_from_slice(&u16b(0));
        for w in [SNAPLEN, 20] {
            out.extend_from_slice(&u32b(w));
        }
    }
    // EPB: type, length 40, interface 0, timestamp 0, the captured length
    // that overruns, original length, 8 bytes of data, trailing length.
    for w in [EPB_TYPE, 40, 0, 0, 0, OVERRUN_CAPTURED, OVERRUN_CAPTURED] {
        out.extend_from_slice(&u32b(w));
    }
    out.extend_from_slice(&[0xAB; 8]);
    out.extend_from_slice(&u32b(40));
    out
}

/// Hands out sequence numbers, skipping one where corruption asks for it,
/// and says which packet gets its length corrupted.
pub struct Sequencer {
    next: u64,
    index: u64,
    corrupt: Corrupt,
    corrupt_at: u64,
}

impl Sequencer {
    pub fn new(s: &Settings) -> Self {
        let corrupt_at = if s.count > 0 {
            s.count / 2
        } else {
            CORRUPT_AT_WITHOUT_COUNT
        };
        Sequencer {
            next: 0,
            index: 0,
            corrupt: s.corrupt,
            corrupt_at,
        }
    }

    /// (sequence number, corrupt this packet's length?)
    pub fn take(&mut self) -> (u64, bool) {
        let at = self.index == self.corrupt_at;
        if at && self.corrupt == Corrupt::Seq {
            self.next += 1;
        }
        let seq = self.next;
        self.next += 1;
        self.index += 1;
        (seq, at && self.corrupt == Corrupt::Len)
    }
}

/// A well-mixed value in `0..period` from `seed` (splitmix64's finaliser);
/// no randomness crate needed for spreading start times.
pub fn phase(seed: u64, period: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % period.max(1)
}
