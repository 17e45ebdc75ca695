//! `packetflix-ringread`: the reference capture reader of the engine bench,
//! the kernel's limit against which the service's engines are measured. A
//! minimal AF_PACKET reader: one packet socket per capture, opened inside
//! the capture's namespace and bound to its interface, with a ring mapped
//! from the kernel; it counts our packets ([`super::frame`]) per flow and
//! records each one's latency (CLOCK_MONOTONIC when the reader takes the
//! frame from the ring minus the time in its payload). It does nothing
//! with the packets beyond that, which is the point: what it costs is
//! what reading the ring costs.
//!
//! Modes (`--mode`):
//! - `v3:N`: TPACKET_V3, a block timeout of N ms on each socket, all of
//!   them in one epoll set; the kernel hands over a block when it is full or its
//!   timer fires with a packet in it. Blocks of 256 KiB, as libpcap (and so
//!   dumpcap) asks for.
//! - `v2`: TPACKET_V2, all sockets in the epoll set; the kernel wakes the
//!   reader for every packet while it sleeps.
//! - `sweep:N`: TPACKET_V2 rings never watched; one timer every N ms (an
//!   absolute schedule, missed ticks skipped) reads every ring, which costs
//!   a memory read per empty ring, no system call.
//! - `adaptive:N`: TPACKET_V2; a ring starts polled (a wakeup per packet
//!   while quiet) and is moved to an N ms sweep shared by all busy rings
//!   once it carries a packet per two sweep periods or more, and back when
//!   its rate falls below a quarter of that: the timer runs only while a
//!   ring is busy, so an idle reader makes no wakeups.
//!
//! The ring is `--ring-kib` (2048 by default, dumpcap's default buffer) per
//! socket. The reader never sends a packet. It stops when its stdin closes
//! or reads anything, or after `--max-secs`, and when its parent dies.
//!
//! Command line: `--mode M --ring NETNS_PATH=IFNAME... [--ring-kib K]
//! [--max-secs S] [--samples FILE]`. Output (stdout): `ready rings=N
//! setup_us=a,b,...` once every ring is open, then at the end `result
//! key=value...` (see [`Tally::result_line`]); `--samples` gets every
//! latency in nanoseconds as little-endian `u32`s.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::raw::c_int;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};

use super::frame;
use super::sys;

/// Most latency samples kept (16 MiB of `u32`); the counts go on past it.
const MAX_SAMPLES: usize = 1 << 22;
/// Default ring per socket: dumpcap's default capture buffer (2 MiB).
pub const DEFAULT_RING_KIB: usize = 2048;
/// A TPACKET_V2 frame: the 32-byte header, the 20-byte `sockaddr_ll`, the
/// padding to the MAC header, and a 1514-byte frame fit in 2 KiB.
const V2_FRAME: usize = 2048;
/// TPACKET_V2 frames per block (a 64 KiB block); the ring is whole blocks.
const V2_BLOCK: usize = 64 * 1024;
/// TPACKET_V3 block size libpcap picks for its default snap length
/// (MAXIMUM_SNAPLEN 262144 rounded up to a power-of-two number of pages).
const V3_BLOCK: usize = 256 * 1024;
/// The frame size V3 requests name; only used for the kernel's checks.
const V3_FRAME: usize = 2048;
/// Longest a reader may run, whatever it is told.
pub const MAX_SECS: u64 = 3600;
/// Adaptive mode: rates are judged over this many sweep periods.
const ADAPT_WINDOW_PERIODS: u64 = 16;
const NANOS: u64 = 1_000_000_000;

// Offsets in `struct tpacket2_hdr` (<linux/if_packet.h>).
const V2_SNAPLEN: usize = 8;
const V2_MAC: usize = 12;
// Offsets in `struct tpacket_block_desc` / `tpacket_hdr_v1`.
const BD_STATUS: usize = 8;
const BD_NUM_PKTS: usize = 12;
const BD_FIRST: usize = 16;
// Offsets in `struct tpacket3_hdr`.
const V3_NEXT: usize = 0;
const V3_SNAPLEN: usize = 12;
const V3_MAC: usize = 24;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    V3 { tov_ms: u32 },
    V2,
    Sweep { period_ns: u64 },
    Adaptive { period_ns: u64 },
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode, String> {
        let ms = |v: &str| -> Result<f64, String> {
            let x: f64 = v.parse().map_err(|_| format!("bad period in mode {s}"))?;
            if x > 0.0 && x <= 1000.0 {
                Ok(x)
            } else {
                Err(format!("period out of range in mode {s}"))
            }
        };
        let ns = |v: &str| ms(v).map(|x| (x * 1e6) as u64);
        match s.split_once(':') {
            None if s == "v2" => Ok(Mode::V2),
            Some(("v3", v)) => {
                let x = ms(v)?;
                if x.fract() != 0.0 {
                    return Err("the V3 block timeout is whole milliseconds".into());
                }
                Ok(Mode::V3 { tov_ms: x as u32 })
            }
            Some(("sweep", v)) => Ok(Mode::Sweep { period_ns: ns(v)? }),
            Some(("adaptive", v)) => Ok(Mode::Adaptive { period_ns: ns(v)? }),
            _ => Err(format!("unknown mode {s}")),
        }
    }

    /// The name the bench shows, e.g. `v3-1ms`, `sweep-2ms`.
    pub fn label(&self) -> String {
        let ms = |ns: u64| {
            let v = ns as f64 / 1e6;
            if v.fract() == 0.0 {
                format!("{v:.0}ms")
            } else {
                format!("{v}ms")
            }
        };
        match self {
            Mode::V3 { tov_ms } => format!("v3-{tov_ms}ms"),
            Mode::V2 => "v2".into(),
            Mode::Sweep { period_ns } => format!("sweep-{}", ms(*period_ns)),
            Mode::Adaptive { period_ns } => format!("adaptive-{}", ms(*period_ns)),
        }
    }

    /// The command-line form, e.g. `v3:1`.
    pub fn arg(&self) -> String {
        match self {
            Mode::V3 { tov_ms } => format!("v3:{tov_ms}"),
            Mode::V2 => "v2".into(),
            Mode::Sweep { period_ns } => format!("sweep:{}", *period_ns as f64 / 1e6),
            Mode::Adaptive { period_ns } => format!("adaptive:{}", *period_ns as f64 / 1e6),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Args {
    pub mode: Mode,
    /// (namespace path, interface)
    pub rings: Vec<(String, String)>,
    pub ring_kib: usize,
    pub max_secs: u64,
    pub samples: Option<String>,
}

pub fn parse(args: &[String]) -> Result<Args, String> {
    let mut mode = None;
    let mut a = Args {
        mode: Mode::V2,
        rings: Vec::new(),
        ring_kib: DEFAULT_RING_KIB,
        max_secs: 600,
        samples: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--mode" => mode = Some(Mode::parse(value()?)?),
            "--ring" => {
                let v = value()?;
                let (ns, ifname) = v
                    .rsplit_once('=')
                    .ok_or_else(|| format!("--ring {v}: want NETNS_PATH=IFNAME"))?;
                a.rings.push((ns.to_string(), ifname.to_string()));
            }
            "--ring-kib" => {
                a.ring_kib = value()?.parse().map_err(|_| "--ring-kib: bad number")?;
            }
            "--max-secs" => {
                a.max_secs = value()?.parse().map_err(|_| "--max-secs: bad number")?;
            }
            "--samples" => a.samples = Some(value()?.clone()),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    a.mode = mode.ok_or("need --mode")?;
    if a.rings.is_empty() || a.rings.len() > frame::MAX_FLOWS {
        return Err("need 1 to 4096 --ring".into());
    }
    if a.max_secs == 0 || a.max_secs > MAX_SECS {
        return Err(format!("--max-secs must be 1..={MAX_SECS}"));
    }
    let block = if matches!(a.mode, Mode::V3 { .. }) {
        V3_BLOCK
    } else {
        V2_BLOCK
    };
    if a.ring_kib * 1024 < block || a.ring_kib > 1 << 20 {
        return Err(format!("--ring-kib must be {}..=1048576", block / 1024));
    }
    Ok(a)
}

/// One packet socket and its mapped ring.
struct Ring {
    fd: c_int,
    map: *mut u8,
    len: usize,
    v3: bool,
    /// V2: frame size and count; V3: block size and count.
    unit: usize,
    units: usize,
    /// The next frame (V2) or block (V3) to look at.
    next: usize,
    /// Our packets taken from this ring.
    packets: u64,
    /// Adaptive mode: read by the sweep instead of being watched.
    swept: bool,
    /// Adaptive mode: packets since the rate was last judged.
    window: u64,
    /// The socket reported an error (its interface went away): not watched.
    dead: bool,
}

/// What the reader counts over all rings.
#[derive(Debug, Default)]
pub struct Tally {
    pub flows: frame::Flows,
    /// Frames that were not ours.
    pub other: u64,
    pub samples: Vec<u32>,
    /// Returns from the wait (epoll_pwait2).
    pub wakeups: u64,
    /// Sweeps of the rings (sweep and adaptive modes).
    pub sweeps: u64,
    /// Times an adaptive ring changed mode.
    pub switches: u64,
}

impl Tally {
    /// Counts one frame taken from a ring at `now`.
    pub fn take(&mut self, data: &[u8], now: u64) -> bool {
        match frame::decode_ethernet(data) {
            Some(d) => {
                self.flows.saw(&d);
                if self.samples.len() < MAX_SAMPLES {
                    let lat = now.saturating_sub(d.sent_ns).min(u64::from(u32::MAX));
                    self.samples.push(lat as u32);
                }
                true
            }
            None => {
                self.other += 1;
                false
            }
        }
    }
}

/// A `u32` in the ring the kernel writes concurrently.
///
/// # Safety
/// `p` must be 4-byte aligned and inside a live ring mapping.
unsafe fn status(p: *mut u8) -> &'static AtomicU32 {
    AtomicU32::from_ptr(p.cast())
}

fn rd32(p: *const u8) -> u32 {
    // SAFETY: callers pass in-bounds ring pointers; unaligned read is fine.
    unsafe { p.cast::<u32>().read_unaligned() }
}

fn rd16(p: *const u8) -> u16 {
    // SAFETY: as `rd32`.
    unsafe { p.cast::<u16>().read_unaligned() }
}

impl Ring {
    fn open(
        ns: &File,
        home: &File,
        ifname: &str,
        mode: Mode,
        ring_kib: usize,
    ) -> Result<Ring, String> {
        let v3 = matches!(mode, Mode::V3 { .. });
        sys::enter_netns(ns.as_raw_fd()).map_err(|e| format!("setns: {e}"))?;
        let opened = sys::packet_socket().and_then(|fd| Ok((fd, sys::ifindex(ifname)?)));
        // Back home before anything can fail: later rings start from here.
        sys::enter_netns(home.as_raw_fd()).map_err(|e| format!("setns back: {e}"))?;
        let (fd, ifindex) = opened.map_err(|e| format!("{ifname}: {e}"))?;
        let mut ring = Ring {
            fd,
            map: std::ptr::null_mut(),
            len: 0,
            v3,
            unit: 0,
            units: 0,
            next: 0,
            packets: 0,
            swept: false,
            window: 0,
            dead: false,
        };
        // On error `ring` drops, which closes the socket.
        ring.map_ring(mode, ring_kib)
            .map_err(|e| format!("{ifname}: {e}"))?;
        let addr = sys::SockaddrLl {
            sll_family: sys::AF_PACKET as u16,
            sll_protocol: sys::ETH_P_ALL.to_be(),
            sll_ifindex: ifindex,
            ..Default::default()
        };
        sys::bind_ll(fd, &addr).map_err(|e| format!("bind {ifname}: {e}"))?;
        Ok(ring)
    }

    fn map_ring(&mut self, mode: Mode, ring_kib: usize) -> std::io::Result<()> {
        let bytes = ring_kib * 1024;
        let (version, req, len) = match mode {
            Mode::V3 { tov_ms } => {
                let blocks = bytes / V3_BLOCK;
                let req = sys::TpacketReq3 {
                    tp_block_size: V3_BLOCK as u32,
                    tp_block_nr: blocks as u32,
                    tp_frame_size: V3_FRAME as u32,
                    tp_frame_nr: (blocks * V3_BLOCK / V3_FRAME) as u32,
                    tp_retire_blk_tov: tov_ms,
                    ..Default::default()
                };
                self.unit = V3_BLOCK;
                self.units = blocks;
                (
                    sys::TPACKET_V3,
                    req,
                    std::mem::size_of::<sys::TpacketReq3>(),
                )
            }
            _ => {
                let blocks = bytes / V2_BLOCK;
                let frames = blocks * (V2_BLOCK / V2_FRAME);
                let req = sys::TpacketReq3 {
                    tp_block_size: V2_BLOCK as u32,
                    tp_block_nr: blocks as u32,
                    tp_frame_size: V2_FRAME as u32,
                    tp_frame_nr: frames as u32,
                    ..Default::default()
                };
                self.unit = V2_FRAME;
                self.units = frames;
                (sys::TPACKET_V2, req, sys::TPACKET_REQ_LEN)
            }
        };
        sys::set_int_opt(self.fd, sys::SOL_PACKET, sys::PACKET_VERSION, version)?;
        sys::set_opt(self.fd, sys::SOL_PACKET, sys::PACKET_RX_RING, &req, len)?;
        self.len = self.unit * self.units;
        self.map = sys::map_ring(self.fd, self.len)?;
        Ok(())
    }

    /// Takes every frame the kernel has handed over, at most one pass
    /// around the ring; returns our packets taken.
    fn drain(&mut self, t: &mut Tally, now: u64) -> u64 {
        let before = self.packets;
        if self.v3 {
            for _ in 0..self.units {
                // SAFETY: `next < units`, so the block is inside the map.
                let bd = unsafe { self.map.add(self.next * self.unit) };
                // SAFETY: block descriptors are 8-byte aligned in the map.
                let st = unsafe { status(bd.add(BD_STATUS)) };
                if st.load(Ordering::Acquire) & sys::TP_STATUS_USER == 0 {
                    break;
                }
                let n = rd32(unsafe { bd.add(BD_NUM_PKTS) });
                let mut off = rd32(unsafe { bd.add(BD_FIRST) }) as usize;
                for _ in 0..n {
                    if off + V3_MAC + 2 > self.unit {
                        break;
                    }
                    // SAFETY: `off` was checked against the block size.
                    let h = unsafe { bd.add(off) };
                    let snap = rd32(unsafe { h.add(V3_SNAPLEN) }) as usize;
                    let mac = usize::from(rd16(unsafe { h.add(V3_MAC) }));
                    if off + mac + snap <= self.unit {
                        // SAFETY: in bounds (checked just above); the kernel
                        // does not touch a block while user space owns it.
                        let data = unsafe { std::slice::from_raw_parts(h.add(mac), snap) };
                        if t.take(data, now) {
                            self.packets += 1;
                        }
                    }
                    let next = rd32(unsafe { h.add(V3_NEXT) }) as usize;
                    if next == 0 {
                        break;
                    }
                    off += next;
                }
                st.store(sys::TP_STATUS_KERNEL, Ordering::Release);
                self.next = (self.next + 1) % self.units;
            }
        } else {
            for _ in 0..self.units {
                // SAFETY: `next < units`, so the frame is inside the map.
                let h = unsafe { self.map.add(self.next * self.unit) };
                // SAFETY: frames are 16-byte aligned in the map.
                let st = unsafe { status(h) };
                if st.load(Ordering::Acquire) & sys::TP_STATUS_USER == 0 {
                    break;
                }
                let snap = rd32(unsafe { h.add(V2_SNAPLEN) }) as usize;
                let mac = usize::from(rd16(unsafe { h.add(V2_MAC) }));
                if mac + snap <= self.unit {
                    // SAFETY: in bounds (checked); user space owns the frame.
                    let data = unsafe { std::slice::from_raw_parts(h.add(mac), snap) };
                    if t.take(data, now) {
                        self.packets += 1;
                    }
                }
                st.store(sys::TP_STATUS_KERNEL, Ordering::Release);
                self.next = (self.next + 1) % self.units;
            }
        }
        let got = self.packets - before;
        self.window += got;
        got
    }

    /// Unmaps and closes; returns the wall time it took.
    fn close(&mut self) -> u64 {
        let t0 = sys::mono_ns();
        if !self.map.is_null() {
            // SAFETY: our own mapping, not used after this.
            let _ = unsafe { sys::unmap(self.map, self.len) };
            self.map = std::ptr::null_mut();
        }
        if self.fd >= 0 {
            let _ = sys::close_fd(self.fd);
            self.fd = -1;
        }
        sys::mono_ns() - t0
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.close();
    }
}

/// Token of stdin in the epoll set (the bench closes it to stop us); a
/// ring's token is its index.
const STDIN: u64 = u64::MAX;
/// Events taken per wait; more ready rings come with the next one (the
/// set is level-triggered).
const EVENTS: usize = 256;

/// The next tick of a schedule with period `p` after `now`, skipping
/// ticks already missed.
fn next_tick(tick: u64, now: u64, p: u64) -> u64 {
    if tick > now {
        tick
    } else {
        tick + ((now - tick) / p + 1) * p
    }
}

/// Waits on one epoll set, as an event loop would: stdin always, and the
/// rings that are polled (none in the plain sweep; the quiet ones in the
/// adaptive mode). A wakeup costs what is ready, not what is watched.
fn run(mode: Mode, rings: &mut [Ring], t: &mut Tally, deadline: u64) -> Result<(), String> {
    let err = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let ep = sys::Epoll::new().map_err(|e| err("epoll", e))?;
    ep.add(0, STDIN).map_err(|e| err("epoll stdin", e))?;
    if !matches!(mode, Mode::Sweep { .. }) {
        for (i, r) in rings.iter().enumerate() {
            ep.add(r.fd, i as u64).map_err(|e| err("epoll ring", e))?;
        }
    }
    let mut events = vec![sys::EpollEvent::default(); EVENTS];
    let start = sys::mono_ns();
    let period = match mode {
        Mode::Sweep { period_ns } | Mode::Adaptive { period_ns } => period_ns,
        _ => 0,
    };
    let mut tick = start + period;
    let mut judged_at = start;
    loop {
        let now = sys::mono_ns();
        if now >= deadline {
            return Ok(());
        }
        let timers = match mode {
            Mode::Sweep { .. } => true,
            Mode::Adaptive { .. } => rings.iter().any(|r| r.swept),
            _ => false,
        };
        let wait = if timers {
            tick = next_tick(tick, now, period);
            tick.min(deadline) - now
        } else {
            deadline - now
        };
        let n = ep
            .wait(&mut events, Some(wait))
            .map_err(|e| err("epoll_pwait2", e))?;
        t.wakeups += 1;
        let now = sys::mono_ns();
        for ev in &events[..n] {
            let (token, bits) = (ev.data, ev.events);
            if token == STDIN {
                return Ok(());
            }
            let Some(r) = rings.get_mut(token as usize) else {
                continue;
            };
            if bits & sys::EPOLLIN != 0 {
                r.drain(t, now);
            }
            if bits & (sys::EPOLLERR | sys::EPOLLHUP) != 0 {
                // The interface went away: nothing more will come.
                r.dead = true;
                let _ = ep.delete(r.fd);
            }
        }
        if timers && now >= tick {
            t.sweeps += 1;
            // The plain sweep reads every ring; the adaptive one its busy ones.
            let all = matches!(mode, Mode::Sweep { .. });
            for r in rings.iter_mut().filter(|r| all || r.swept) {
                r.drain(t, now);
            }
            tick += period;
        }
        if let Mode::Adaptive { period_ns } = mode {
            if now - judged_at >= period_ns * ADAPT_WINDOW_PERIODS {
                for (i, swept) in judge(rings, now - judged_at, period_ns) {
                    t.switches += 1;
                    let r = &mut rings[i];
                    if r.dead {
                        continue;
                    }
                    if swept {
                        let _ = ep.delete(r.fd);
                    } else {
                        // Whatever came since the last sweep, then polled.
                        r.drain(t, now);
                        ep.add(r.fd, i as u64).map_err(|e| err("epoll ring", e))?;
                    }
                }
                judged_at = now;
            }
        }
    }
}

/// Adaptive mode: moves rings between polled and swept by their rate over
/// the last `elapsed` ns (busy: a packet per two sweep periods or more;
/// quiet again: under a quarter of that); returns the rings that changed,
/// with whether they are swept now.
fn judge(rings: &mut [Ring], elapsed: u64, period: u64) -> Vec<(usize, bool)> {
    let busy = elapsed / (2 * period);
    let mut changed = Vec::new();
    for (i, r) in rings.iter_mut().enumerate() {
        let was = r.swept;
        if !r.swept && r.window >= busy.max(1) {
            r.swept = true;
        } else if r.swept && r.window * 4 < busy {
            r.swept = false;
        }
        if r.swept != was {
            changed.push((i, r.swept));
        }
        r.window = 0;
    }
    changed
}

fn result_line(t: &Tally, rings: &[Ring], stats: &[sys::TpacketStats], close_ns: &[u64]) -> String {
    let (user_us, sys_us, nvcsw, nivcsw) = sys::own_usage();
    let list = |v: Vec<u64>| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    format!(
        "result packets={} other={} gaps={} backwards={} wakeups={} sweeps={} switches={} \
         kernel_packets={} kernel_drops={} user_us={user_us} sys_us={sys_us} nvcsw={nvcsw} \
         nivcsw={nivcsw} samples={} dead_rings={} ring_packets={} ring_drops={} close_us={}",
        t.flows.packets(),
        t.other,
        t.flows.gaps(),
        t.flows.backwards(),
        t.wakeups,
        t.sweeps,
        t.switches,
        stats.iter().map(|s| u64::from(s.tp_packets)).sum::<u64>(),
        stats.iter().map(|s| u64::from(s.tp_drops)).sum::<u64>(),
        t.samples.len(),
        rings.iter().filter(|r| r.dead).count(),
        list(rings.iter().map(|r| r.packets).collect()),
        list(stats.iter().map(|s| u64::from(s.tp_drops)).collect()),
        list(close_ns.iter().map(|n| n / 1000).collect()),
    )
}

fn open_all(a: &Args) -> Result<(Vec<Ring>, Vec<u64>), String> {
    let home = File::open("/proc/self/ns/net").map_err(|e| format!("own namespace: {e}"))?;
    let mut rings = Vec::new();
    let mut setup = Vec::new();
    for (ns_path, ifname) in &a.rings {
        let ns = File::open(ns_path).map_err(|e| format!("{ns_path}: {e}"))?;
        let t0 = sys::mono_ns();
        rings.push(Ring::open(&ns, &home, ifname, a.mode, a.ring_kib)?);
        setup.push((sys::mono_ns() - t0) / 1000);
    }
    Ok((rings, setup))
}

pub fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("packetflix-ringread: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = sys::die_with_parent() {
        eprintln!("packetflix-ringread: prctl: {e}");
        return ExitCode::FAILURE;
    }
    let (mut rings, setup) = match open_all(&a) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("packetflix-ringread: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut t = Tally::default();
    let setup_us: Vec<String> = setup.iter().map(u64::to_string).collect();
    println!(
        "ready rings={} setup_us={}",
        rings.len(),
        setup_us.join(",")
    );
    let _ = std::io::stdout().flush();
    let deadline = sys::mono_ns() + a.max_secs * NANOS;
    let outcome = run(a.mode, &mut rings, &mut t, deadline);
    // Whatever is still in the rings is counted (a V3 block still open is
    // not: the kernel has not handed it over).
    let now = sys::mono_ns();
    for r in rings.iter_mut() {
        r.drain(&mut t, now);
    }
    let stats: Vec<sys::TpacketStats> = rings
        .iter()
        .map(|r| sys::packet_stats(r.fd).unwrap_or_default())
        .collect();
    let close_ns: Vec<u64> = rings.iter_mut().map(Ring::close).collect();
    if let Some(path) = &a.samples {
        let bytes: Vec<u8> = t.samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        if let Err(e) = std::fs::write(path, bytes) {
            eprintln!("packetflix-ringread: {path}: {e}");
        }
    }
    println!("{}", result_line(&t, &rings, &stats, &close_ns));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("packetflix-ringread: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_back_as_written() {
        for m in ["v3:1", "v3:10", "v2", "sweep:1", "sweep:0.5", "adaptive:2"] {
            let mode = Mode::parse(m).unwrap();
            assert_eq!(Mode::parse(&mode.arg()).unwrap(), mode, "{m}");
        }
        assert_eq!(Mode::parse("v3:1").unwrap().label(), "v3-1ms");
        assert_eq!(Mode::parse("sweep:0.5").unwrap().label(), "sweep-0.5ms");
        assert!(Mode::parse("v3:0.5").is_err());
        assert!(Mode::parse("sweep:0").is_err());
        assert!(Mode::parse("v4").is_err());
    }

    #[test]
    fn missed_ticks_are_skipped_not_replayed() {
        assert_eq!(next_tick(100, 50, 10), 100);
        assert_eq!(next_tick(100, 100, 10), 110);
        assert_eq!(next_tick(100, 135, 10), 140);
    }

    #[test]
    fn a_ring_smaller_than_a_block_is_refused() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let base = ["--ring", "/run/netns/pfx1-c=c0"];
        let mut small_v3 = v(&base);
        small_v3.extend(v(&["--mode", "v3:1", "--ring-kib", "64"]));
        assert!(parse(&small_v3).is_err());
        let mut small_v2 = v(&base);
        small_v2.extend(v(&["--mode", "v2", "--ring-kib", "64"]));
        assert!(parse(&small_v2).is_ok());
    }

    #[test]
    fn only_our_frames_count_and_carry_a_latency() {
        let mut t = Tally::default();
        let mut f = frame::template(64, 3);
        frame::stamp(&mut f, 0, 1_000);
        assert!(t.take(&f, 5_000));
        assert!(!t.take(&[0u8; 60], 5_000));
        assert_eq!(
            (t.flows.of(3), t.other, t.samples.clone()),
            (1, 1, vec![4_000])
        );
    }

    #[test]
    fn a_ring_turns_swept_when_busy_and_back_when_quiet() {
        let mk = |window| Ring {
            fd: -1,
            map: std::ptr::null_mut(),
            len: 0,
            v3: false,
            unit: 0,
            units: 0,
            next: 0,
            packets: 0,
            swept: false,
            window,
            dead: false,
        };
        let mut rings = vec![mk(100), mk(1)];
        // 16 ms at a 1 ms period: busy means 8 packets or more.
        assert_eq!(judge(&mut rings, 16_000_000, 1_000_000), vec![(0, true)]);
        assert!(rings[0].swept && !rings[1].swept);
        assert_eq!(rings[0].window, 0, "each judgement starts a new window");
        rings[0].window = 2; // a quarter of busy is 2: not yet quiet
        assert_eq!(judge(&mut rings, 16_000_000, 1_000_000), vec![]);
        rings[0].window = 1;
        assert_eq!(judge(&mut rings, 16_000_000, 1_000_000), vec![(0, false)]);
    }
}
