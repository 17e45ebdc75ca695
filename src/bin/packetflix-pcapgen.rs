//! `packetflix-pcapgen`: a synthetic capture program for benchmarks and tests.
//!
//! It stands in for `dumpcap` behind `--capture-program`: it accepts (and
//! ignores) the dumpcap-style arguments the service passes (`-w - -n -q [-p]
//! [-i IF]... [-f FILTER]`) and writes a valid pcapng stream to stdout: one
//! Section Header Block, one Interface Description Block, then Enhanced Packet
//! Blocks. Because the service passes fixed arguments, the generator takes its
//! own settings from environment variables:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `PFX_GEN_MODE` | `stream` | `stream` writes packets; `idle` writes the two header blocks and then waits, without timers or polling, until its reader goes away |
//! | `PFX_GEN_SIZE` | 64 | captured bytes per packet (34 ..= 65535) |
//! | `PFX_GEN_COUNT` | 0 | packets to write, then exit 0; 0 = until the reader goes away |
//! | `PFX_GEN_RATE` | 0 | packets per second, each written on its own; 0 = full speed, written in chunks |
//! | `PFX_GEN_CHUNK` | 65536 | bytes per `write` at full speed |
//! | `PFX_GEN_START_FIFO` | unset | after the header blocks, open this FIFO for reading before the first packet: the open returns when someone opens it for writing, so many captures can be set up first and then all start at once |
//! | `PFX_GEN_CORRUPT` | unset | `seq` (or `1`): skip one sequence number; `len`: write one block with a wrong trailing length. Halfway through the count (packet 1000 without a count). Lets tests prove the reader notices |
//! | `PFX_GEN_IDLE_MAX_SECS` | 600 | an idle generator exits after this long even if nobody closed its stdout, so a crashed run leaves nothing behind |
//!
//! Every packet is an Ethernet frame (local experimental EtherType 0x88B5)
//! whose payload begins with the magic `PFXG`, a little-endian `u64` sequence
//! number (0, 1, 2, … per run) and a little-endian `u64` CLOCK_MONOTONIC time
//! in nanoseconds taken just before the write, so a reader on the same host
//! can check the stream is intact and compute each packet's latency. The
//! reader side of this layout lives in `benches/support/pcapng.rs`.
//!
//! This program must never be a bottleneck at full speed: packets are
//! patched in place in a prebuilt chunk, and the clock is read once per chunk.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, clock_nanosleep, ClockId, ClockNanosleepFlags};

/// pcapng block type of the Section Header Block (pcapng spec, section 4.1).
const SHB_TYPE: u32 = 0x0A0D_0D0A;
/// pcapng byte-order magic, written in our (little-endian) order.
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// pcapng block type of the Interface Description Block (section 4.2).
const IDB_TYPE: u32 = 1;
/// pcapng block type of the Enhanced Packet Block (section 4.3).
const EPB_TYPE: u32 = 6;
/// LINKTYPE_ETHERNET from the tcpdump.org link-layer header type registry.
const LINKTYPE_ETHERNET: u16 = 1;
/// The snap length dumpcap uses by default.
const SNAPLEN: u32 = 262_144;
/// shb_userappl option code (pcapng spec, section 4.1).
const OPT_SHB_USERAPPL: u16 = 4;
/// What the SHB says wrote the file.
const USERAPPL: &[u8] = b"packetflix-pcapgen";

/// EPB bytes before the packet data: type, length, interface, two timestamp
/// halves, captured and original length (7 × 4 bytes).
const EPB_HEAD: usize = 28;
/// EPB bytes after the padded packet data: the trailing total length.
const EPB_TAIL: usize = 4;
/// IEEE 802 "local experimental" EtherType 1: never a real protocol.
const ETHERTYPE_EXPERIMENTAL: u16 = 0x88B5;
/// Marks our payload so a reader can tell a generator packet from anything else.
const PAYLOAD_MAGIC: &[u8; 4] = b"PFXG";
/// Offset of the magic inside the packet data (after the 14-byte Ethernet header).
const OFF_MAGIC: usize = 14;
/// Offset of the `u64` sequence number inside the packet data.
const OFF_SEQ: usize = 18;
/// Offset of the `u64` CLOCK_MONOTONIC nanoseconds inside the packet data.
const OFF_STAMP: usize = 26;
/// Smallest packet that holds the Ethernet header, magic, sequence and stamp.
const MIN_SIZE: usize = 34;
/// Largest captured length we generate: the classic 16-bit IP total length.
const MAX_SIZE: usize = 65_535;
/// Bytes per write at full speed by default: the default Linux pipe capacity
/// (16 pages), so one write fills an empty pipe exactly.
const DEFAULT_CHUNK: usize = 65_536;
/// Packet index where corruption is injected when no count is given.
const CORRUPT_AT_WITHOUT_COUNT: u64 = 1000;
/// Default lifetime of an idle generator whose stdout nobody closes.
const DEFAULT_IDLE_MAX_SECS: u64 = 600;

const NANOS_PER_SEC: u64 = 1_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Stream,
    Idle,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Corrupt {
    None,
    /// Skip one sequence number.
    Seq,
    /// Write one block whose trailing length disagrees with its leading one.
    Len,
}

#[derive(Clone, Debug)]
struct Settings {
    mode: Mode,
    size: usize,
    count: u64,
    rate: u64,
    chunk: usize,
    corrupt: Corrupt,
    idle_max: Duration,
    start_fifo: Option<std::path::PathBuf>,
}

fn env_u64(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a non-negative integer")),
    }
}

fn settings_from_env() -> Result<Settings, String> {
    let mode = match std::env::var("PFX_GEN_MODE").as_deref() {
        Err(_) | Ok("") | Ok("stream") => Mode::Stream,
        Ok("idle") => Mode::Idle,
        Ok(other) => return Err(format!("PFX_GEN_MODE={other:?}: use stream or idle")),
    };
    let size = env_u64("PFX_GEN_SIZE", 64)? as usize;
    if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
        return Err(format!(
            "PFX_GEN_SIZE={size}: must be {MIN_SIZE}..={MAX_SIZE}"
        ));
    }
    let chunk = env_u64("PFX_GEN_CHUNK", DEFAULT_CHUNK as u64)? as usize;
    if chunk == 0 {
        return Err("PFX_GEN_CHUNK must be > 0".into());
    }
    let corrupt = match std::env::var("PFX_GEN_CORRUPT").as_deref() {
        Err(_) | Ok("") | Ok("0") => Corrupt::None,
        Ok("1") | Ok("seq") => Corrupt::Seq,
        Ok("len") => Corrupt::Len,
        Ok(other) => return Err(format!("PFX_GEN_CORRUPT={other:?}: use seq or len")),
    };
    Ok(Settings {
        mode,
        size,
        count: env_u64("PFX_GEN_COUNT", 0)?,
        rate: env_u64("PFX_GEN_RATE", 0)?,
        chunk,
        corrupt,
        idle_max: Duration::from_secs(env_u64("PFX_GEN_IDLE_MAX_SECS", DEFAULT_IDLE_MAX_SECS)?),
        start_fifo: std::env::var_os("PFX_GEN_START_FIFO").map(Into::into),
    })
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// SHB (with shb_userappl) followed by one Ethernet IDB.
fn header_blocks() -> Vec<u8> {
    let mut out = Vec::new();
    let opt_len = 4 + pad4(USERAPPL.len()) + 4; // option + opt_endofopt
    let shb_len = (28 + opt_len) as u32;
    put_u32(&mut out, SHB_TYPE);
    put_u32(&mut out, shb_len);
    put_u32(&mut out, BYTE_ORDER_MAGIC);
    put_u16(&mut out, 1); // major version
    put_u16(&mut out, 0); // minor version
    out.extend_from_slice(&(-1i64).to_le_bytes()); // section length unknown
    put_u16(&mut out, OPT_SHB_USERAPPL);
    put_u16(&mut out, USERAPPL.len() as u16);
    out.extend_from_slice(USERAPPL);
    out.resize(out.len() + pad4(USERAPPL.len()) - USERAPPL.len(), 0);
    put_u32(&mut out, 0); // opt_endofopt
    put_u32(&mut out, shb_len);

    put_u32(&mut out, IDB_TYPE);
    put_u32(&mut out, 20);
    put_u16(&mut out, LINKTYPE_ETHERNET);
    put_u16(&mut out, 0); // reserved
    put_u32(&mut out, SNAPLEN);
    put_u32(&mut out, 20);
    out
}

/// One EPB with sequence number and stamps zeroed; [`patch_epb`] fills them.
fn epb_template(size: usize) -> Vec<u8> {
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
fn patch_epb(epb: &mut [u8], seq: u64, mono_ns: u64, wall_us: u64) {
    epb[12..16].copy_from_slice(&((wall_us >> 32) as u32).to_le_bytes());
    epb[16..20].copy_from_slice(&(wall_us as u32).to_le_bytes());
    let d = EPB_HEAD;
    epb[d + OFF_SEQ..d + OFF_SEQ + 8].copy_from_slice(&seq.to_le_bytes());
    epb[d + OFF_STAMP..d + OFF_STAMP + 8].copy_from_slice(&mono_ns.to_le_bytes());
}

fn corrupt_epb(epb: &mut [u8], how: Corrupt) {
    if how == Corrupt::Len {
        let n = epb.len();
        let wrong = (n as u32).wrapping_add(4);
        epb[n - 4..].copy_from_slice(&wrong.to_le_bytes());
    }
}

fn restore_epb_tail(epb: &mut [u8]) {
    let n = epb.len();
    epb[n - 4..].copy_from_slice(&(n as u32).to_le_bytes());
}

fn now_ns(clock: ClockId) -> u64 {
    match clock_gettime(clock) {
        Ok(ts) => ts.tv_sec() as u64 * NANOS_PER_SEC + ts.tv_nsec() as u64,
        // CLOCK_MONOTONIC and CLOCK_REALTIME cannot fail on Linux; a zero
        // stamp would show up as an absurd latency rather than go unnoticed.
        Err(_) => 0,
    }
}

/// Hands out sequence numbers, skipping one where corruption asks for it,
/// and says which packet gets its length corrupted.
struct Sequencer {
    next: u64,
    index: u64,
    corrupt: Corrupt,
    corrupt_at: u64,
}

impl Sequencer {
    fn new(s: &Settings) -> Self {
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
    fn take(&mut self) -> (u64, bool) {
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

/// Writes everything or reports why not; EPIPE means the reader left.
fn write_all(out: &mut File, buf: &[u8]) -> io::Result<()> {
    out.write_all(buf)
}

fn run_full_speed(out: &mut File, s: &Settings) -> io::Result<()> {
    let template = epb_template(s.size);
    let per_chunk = (s.chunk / template.len()).max(1);
    let mut chunk = Vec::with_capacity(per_chunk * template.len());
    for _ in 0..per_chunk {
        chunk.extend_from_slice(&template);
    }
    let mut seqs = Sequencer::new(s);
    let mut written: u64 = 0;
    loop {
        let n = if s.count == 0 {
            per_chunk as u64
        } else {
            (s.count - written).min(per_chunk as u64)
        };
        if n == 0 {
            return Ok(());
        }
        let mono = now_ns(ClockId::CLOCK_MONOTONIC);
        let wall_us = now_ns(ClockId::CLOCK_REALTIME) / 1000;
        let bytes = n as usize * template.len();
        for epb in chunk[..bytes].chunks_exact_mut(template.len()) {
            let (seq, bad_len) = seqs.take();
            patch_epb(epb, seq, mono, wall_us);
            if bad_len {
                corrupt_epb(epb, Corrupt::Len);
            } else {
                restore_epb_tail(epb);
            }
        }
        write_all(out, &chunk[..bytes])?;
        written += n;
    }
}

/// A well-mixed value in `0..period` from `seed` (splitmix64's finaliser);
/// no randomness crate needed for spreading start times.
fn phase(seed: u64, period: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % period.max(1)
}

fn run_paced(out: &mut File, s: &Settings) -> io::Result<()> {
    let mut epb = epb_template(s.size);
    let period = NANOS_PER_SEC / s.rate.max(1);
    let now = now_ns(ClockId::CLOCK_MONOTONIC);
    // A random phase within the first period: generators released together
    // must not tick in lockstep, or a hundred captures would arrive as one
    // burst every period instead of as independent streams.
    let start = now + phase(now ^ u64::from(std::process::id()), period);
    let mut seqs = Sequencer::new(s);
    let mut i: u64 = 0;
    while s.count == 0 || i < s.count {
        let due = start + i * period;
        let ts = TimeSpec::new((due / NANOS_PER_SEC) as i64, (due % NANOS_PER_SEC) as i64);
        // EINTR only shortens the sleep; the packet then goes out a bit early.
        let _ = clock_nanosleep(
            ClockId::CLOCK_MONOTONIC,
            ClockNanosleepFlags::TIMER_ABSTIME,
            &ts,
        );
        let (seq, bad_len) = seqs.take();
        let wall_us = now_ns(ClockId::CLOCK_REALTIME) / 1000;
        patch_epb(&mut epb, seq, now_ns(ClockId::CLOCK_MONOTONIC), wall_us);
        if bad_len {
            corrupt_epb(&mut epb, Corrupt::Len);
        } else {
            restore_epb_tail(&mut epb);
        }
        write_all(out, &epb)?;
        i += 1;
    }
    Ok(())
}

/// Waits without timers or polling until stdout's reader goes away (the
/// kernel reports POLLERR on a pipe whose read end is closed) or the safety
/// lifetime ends.
fn run_idle(out: &File, s: &Settings) {
    let deadline = std::time::Instant::now() + s.idle_max;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::empty())];
        match poll(&mut fds, timeout) {
            Ok(0) => continue,
            Ok(_) => return,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

fn main() -> ExitCode {
    // The dumpcap-style arguments only say where to capture; a synthetic
    // source has nothing to do with them.
    let settings = match settings_from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("packetflix-pcapgen: {e}");
            return ExitCode::from(2);
        }
    };
    // Unbuffered: std's stdout is line-buffered, which would split binary
    // chunks at arbitrary 0x0A bytes.
    let mut out = match io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => File::from(fd),
        Err(e) => {
            eprintln!("packetflix-pcapgen: cannot use stdout: {e}");
            return ExitCode::from(1);
        }
    };
    let result = write_all(&mut out, &header_blocks()).and_then(|()| match settings.mode {
        Mode::Idle => {
            run_idle(&out, &settings);
            Ok(())
        }
        Mode::Stream => {
            if let Some(fifo) = &settings.start_fifo {
                // Blocks until the starter opens the FIFO for writing.
                File::open(fifo).map_err(|e| {
                    io::Error::new(e.kind(), format!("start FIFO {}: {e}", fifo.display()))
                })?;
            }
            if settings.rate == 0 {
                run_full_speed(&mut out, &settings)
            } else {
                run_paced(&mut out, &settings)
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away: for a capture program that is a normal end.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("packetflix-pcapgen: write failed: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(count: u64, corrupt: Corrupt) -> Settings {
        Settings {
            mode: Mode::Stream,
            size: 64,
            count,
            rate: 0,
            chunk: DEFAULT_CHUNK,
            corrupt,
            idle_max: Duration::from_secs(1),
            start_fifo: None,
        }
    }

    #[test]
    fn header_blocks_are_a_little_endian_shb_then_an_ethernet_idb() {
        let h = header_blocks();
        let shb_len = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
        assert_eq!(u32::from_le_bytes(h[0..4].try_into().unwrap()), SHB_TYPE);
        assert_eq!(
            u32::from_le_bytes(h[8..12].try_into().unwrap()),
            BYTE_ORDER_MAGIC
        );
        assert_eq!(&h[shb_len - 4..shb_len], &(shb_len as u32).to_le_bytes());
        let idb = &h[shb_len..];
        assert_eq!(idb.len(), 20);
        assert_eq!(u32::from_le_bytes(idb[0..4].try_into().unwrap()), IDB_TYPE);
        assert_eq!(
            u16::from_le_bytes(idb[8..10].try_into().unwrap()),
            LINKTYPE_ETHERNET
        );
    }

    #[test]
    fn epb_length_covers_padded_data_and_both_length_fields() {
        for size in [34, 35, 64, 1500] {
            let e = epb_template(size);
            assert_eq!(e.len() % 4, 0);
            assert_eq!(e.len(), 32 + pad4(size));
            assert_eq!(&e[4..8], &e[e.len() - 4..]);
            assert_eq!(
                u32::from_le_bytes(e[20..24].try_into().unwrap()) as usize,
                size
            );
        }
    }

    #[test]
    fn patched_epb_carries_sequence_and_monotonic_stamp_after_the_magic() {
        let mut e = epb_template(64);
        patch_epb(&mut e, 7, 123_456_789, 1);
        let d = &e[EPB_HEAD..];
        assert_eq!(&d[OFF_MAGIC..OFF_MAGIC + 4], PAYLOAD_MAGIC);
        assert_eq!(
            u64::from_le_bytes(d[OFF_SEQ..OFF_SEQ + 8].try_into().unwrap()),
            7
        );
        assert_eq!(
            u64::from_le_bytes(d[OFF_STAMP..OFF_STAMP + 8].try_into().unwrap()),
            123_456_789
        );
    }

    #[test]
    fn phases_stay_inside_the_period_and_spread_over_it() {
        let period = 10_000_000;
        let phases: Vec<u64> = (0..1000)
            .map(|pid| phase(123_456_789 ^ pid, period))
            .collect();
        assert!(phases.iter().all(|&p| p < period));
        // Each tenth of the period gets some of a thousand seeds.
        for tenth in 0..10 {
            let lo = tenth * period / 10;
            let n = phases
                .iter()
                .filter(|&&p| p >= lo && p < lo + period / 10)
                .count();
            assert!(n > 50, "tenth {tenth}: {n}");
        }
    }

    #[test]
    fn sequencer_counts_up_without_corruption() {
        let mut s = Sequencer::new(&settings(10, Corrupt::None));
        let seqs: Vec<u64> = (0..10).map(|_| s.take().0).collect();
        assert_eq!(seqs, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn seq_corruption_skips_exactly_one_number_halfway() {
        let mut s = Sequencer::new(&settings(10, Corrupt::Seq));
        let seqs: Vec<u64> = (0..10).map(|_| s.take().0).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4, 6, 7, 8, 9, 10]);
    }

    #[test]
    fn len_corruption_marks_one_packet_and_keeps_numbers() {
        let mut s = Sequencer::new(&settings(10, Corrupt::Len));
        let taken: Vec<(u64, bool)> = (0..10).map(|_| s.take()).collect();
        assert_eq!(taken.iter().filter(|t| t.1).count(), 1);
        assert!(taken[5].1);
        assert_eq!(
            taken.iter().map(|t| t.0).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn corrupted_length_is_restored_for_the_next_packet_in_the_same_slot() {
        let mut e = epb_template(64);
        corrupt_epb(&mut e, Corrupt::Len);
        assert_ne!(&e[4..8], &e[e.len() - 4..]);
        restore_epb_tail(&mut e);
        assert_eq!(&e[4..8], &e[e.len() - 4..]);
    }
}
