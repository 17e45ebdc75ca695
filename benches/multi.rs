//! `cargo bench --bench multi`: four targets merged into one capture against
//! four single captures of the same targets, in the same run, alternating.
//!
//! The service runs with the synthetic capture program
//! (`packetflix-pcapgen`) standing in for dumpcap, so the capture programs
//! are never the bottleneck; every target is the bench's own network
//! namespace. Each generator writes `PFX_BENCH_MULTI_PACKETS` packets
//! (default 150000) of 1500 bytes at full speed and exits. Both ways are
//! read the same way: ONE client thread, one `mio` poll over every
//! connection of the measurement (four for the singles, one for the
//! merged), the lean frame reader of `bench::ws` handing payload slices
//! to a block counter that copies nothing, so the client does the same work
//! per byte either way and its CPU (printed) is well below a core. Every
//! stream must end on a block boundary with every packet present.
//! Aggregate throughput = all stream bytes / (connect → last close); CPU =
//! the service's scheduler run time (/proc/PID/schedstat, one thread) over
//! the same span, per GB of stream. The two ways alternate
//! `PFX_BENCH_MULTI_ROUNDS` times (default 3); medians and the ratio per
//! round are printed. `PFX_BENCH_MULTI_BASELINE=/path/to/packetflix` also
//! runs that binary as a second service, measured in the same rounds right
//! after the first (before/after a change in one run). Without `--bench` (a
//! test runner) it does nothing.

use packetflix_testkit::service::{Launch, Service};
use packetflix_testkit::{bench, pcapgen, procs};

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use packetflix_testkit::bench::ws::{self, Control, FrameReader, Upgrade};

/// Targets in the merged capture, and single captures to compare with.
const TARGETS: usize = 4;
/// Captured bytes per packet: a full Ethernet frame.
const PACKET_SIZE: usize = 1500;
/// EPB type (pcapng spec, section 4.3).
const EPB: u32 = 6;
/// How long one measurement may take before the bench gives up.
const CAPTURE_LIMIT: Duration = Duration::from_secs(300);
/// Client read buffer: a loopback socket's receive buffer in a few reads.
const READ_BUF: usize = 256 * 1024;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The service's CPU time so far, in nanoseconds (run time of its main
/// thread, the poll loop, as the scheduler accounts it).
fn cpu_ns(pid: i32) -> u64 {
    procs::main_thread_run_ns(pid).unwrap_or(0)
}

/// Counts blocks and EPBs of a little-endian pcapng stream fed in pieces,
/// looking only at block headers (nothing is copied but a split header).
#[derive(Default)]
struct Counter {
    hdr: [u8; 8],
    hdr_len: usize,
    /// Bytes of the current block still to pass over.
    skip: usize,
    epbs: u64,
    bytes: u64,
    bad: Option<String>,
}

impl Counter {
    fn feed(&mut self, mut data: &[u8]) {
        self.bytes += data.len() as u64;
        while !data.is_empty() && self.bad.is_none() {
            if self.skip > 0 {
                let k = self.skip.min(data.len());
                self.skip -= k;
                data = &data[k..];
                continue;
            }
            let k = (8 - self.hdr_len).min(data.len());
            self.hdr[self.hdr_len..self.hdr_len + k].copy_from_slice(&data[..k]);
            self.hdr_len += k;
            data = &data[k..];
            if self.hdr_len == 8 {
                let le = |at: usize| {
                    u32::from_le_bytes([
                        self.hdr[at],
                        self.hdr[at + 1],
                        self.hdr[at + 2],
                        self.hdr[at + 3],
                    ])
                };
                let (t, len) = (le(0), le(4) as usize);
                if len < 12 || len % 4 != 0 {
                    self.bad = Some(format!("bad block length {len}"));
                }
                if t == EPB {
                    self.epbs += 1;
                }
                self.skip = len.saturating_sub(8);
                self.hdr_len = 0;
            }
        }
    }

    fn finish(&self) -> Result<(), String> {
        match &self.bad {
            Some(e) => Err(e.clone()),
            None if self.skip > 0 || self.hdr_len > 0 => Err("ended inside a block".into()),
            None => Ok(()),
        }
    }
}

/// One websocket capture being read.
struct Stream {
    sock: mio::net::TcpStream,
    frames: FrameReader,
    counter: Counter,
    done: bool,
}

/// Connects and upgrades (blocking: setup is not what is measured).
fn open(port: u16, query: &str) -> Result<Stream, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let host = format!("127.0.0.1:{port}");
    let (req, key) = ws::upgrade_request(&host, &format!("/capture?{query}"), &[]);
    s.write_all(&req).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(CAPTURE_LIMIT))
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let rest = loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during the upgrade".into());
        }
        head.extend_from_slice(&buf[..n]);
        match ws::check_upgrade(&head, &key)? {
            Upgrade::Partial => {}
            Upgrade::Switched(n) => break head.split_off(n),
        }
    };
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut st = Stream {
        sock: mio::net::TcpStream::from_std(s),
        frames: FrameReader::new(),
        counter: Counter::default(),
        done: false,
    };
    received(&mut st, &rest)?;
    Ok(st)
}

/// Bytes from the socket: payload to the counter, a pong for a ping, and
/// the close answered.
fn received(st: &mut Stream, data: &[u8]) -> Result<(), String> {
    let mut controls = Vec::new();
    let Stream {
        frames, counter, ..
    } = st;
    frames.feed(data, &mut |p| counter.feed(p), &mut controls)?;
    for c in controls {
        match c {
            Control::Ping(p) => {
                let _ = st.sock.write_all(&ws::client_frame(0xA, &p));
            }
            Control::Close(code, reason) => {
                let _ = st
                    .sock
                    .write_all(&ws::client_frame(0x8, &code.unwrap_or(1000).to_be_bytes()));
                st.done = true;
                if !matches!(code, None | Some(1000)) {
                    return Err(format!("closed with {code:?}: {reason}"));
                }
            }
        }
    }
    Ok(())
}

/// Reads every capture of `queries` to its close on this one thread;
/// returns (bytes, packets, this thread's CPU seconds).
fn read_all(port: u16, queries: &[String]) -> Result<(u64, u64, f64), String> {
    let cpu0 = bench::thread_cpu_ns();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut streams = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let mut st = open(port, q)?;
        poll.registry()
            .register(&mut st.sock, Token(i), Interest::READABLE)
            .map_err(|e| e.to_string())?;
        streams.push(st);
    }
    let deadline = Instant::now() + CAPTURE_LIMIT;
    let mut events = Events::with_capacity(64);
    let mut buf = vec![0u8; READ_BUF];
    while streams.iter().any(|s| !s.done) {
        let now = Instant::now();
        if now >= deadline {
            return Err("timed out".into());
        }
        match poll.poll(&mut events, Some(deadline - now)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        }
        for ev in events.iter() {
            let st = &mut streams[ev.token().0];
            while !st.done {
                match st.sock.read(&mut buf) {
                    Ok(0) => return Err("connection closed without a close frame".into()),
                    Ok(n) => received(st, &buf[..n])?,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
    }
    let (mut bytes, mut packets) = (0, 0);
    for st in &streams {
        st.counter.finish()?;
        bytes += st.counter.bytes;
        packets += st.counter.epbs;
    }
    let cpu = bench::thread_cpu_ns().saturating_sub(cpu0) as f64 / 1e9;
    Ok((bytes, packets, cpu))
}

struct Run {
    mb_per_s: f64,
    cpu_s_per_gb: f64,
    client_cpu_s_per_gb: f64,
}

/// Runs `queries` concurrently on one client thread; checks every packet
/// arrived.
fn measure(port: u16, pid: i32, queries: Vec<String>, packets: u64) -> Result<Run, String> {
    let cpu0 = cpu_ns(pid);
    let t0 = Instant::now();
    let (bytes, got, client_cpu) = std::thread::spawn(move || read_all(port, &queries))
        .join()
        .map_err(|_| "client thread panicked")??;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ns(pid) - cpu0) as f64 / 1e9;
    let want = packets * TARGETS as u64;
    if got != want {
        return Err(format!("{got} packets arrived, {want} were sent"));
    }
    let gb = bytes as f64 / 1e9;
    Ok(Run {
        mb_per_s: bytes as f64 / wall / 1e6,
        cpu_s_per_gb: cpu / gb,
        client_cpu_s_per_gb: client_cpu / gb,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One service under test.
struct Under {
    label: String,
    svc: Service,
    singles: Vec<Run>,
    merges: Vec<Run>,
}

fn start_service(binary: &std::path::Path, generator: &str, packets: u64) -> Service {
    Launch::new()
        .program(binary)
        .args(&["--capture-program", generator])
        .envs(&pcapgen::Settings::stream(PACKET_SIZE, packets).env())
        .start()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let packets = env_or("PFX_BENCH_MULTI_PACKETS", 150_000);
    let rounds = env_or("PFX_BENCH_MULTI_ROUNDS", 3).max(1);
    let generator = pcapgen::PROGRAM;
    let mut binaries = vec![(
        "this build".to_string(),
        PathBuf::from(env!("CARGO_BIN_EXE_packetflix")),
    )];
    if let Ok(b) = std::env::var("PFX_BENCH_MULTI_BASELINE") {
        binaries.push((format!("baseline {b}"), PathBuf::from(b)));
    }
    let mut under: Vec<Under> = binaries
        .into_iter()
        .map(|(label, bin)| Under {
            label,
            svc: start_service(&bin, generator, packets),
            singles: Vec::new(),
            merges: Vec::new(),
        })
        .collect();
    let inode = procs::own_netns().expect("own netns");
    let single = |_| format!("netns={inode}");
    let targets: Vec<String> = (0..TARGETS)
        .map(|i| format!("{{\"netns\":{inode},\"name\":\"t{i}\"}}"))
        .collect();
    let merged = format!("container=[{}]", targets.join(","));
    let merged = merged
        .replace('{', "%7B")
        .replace('}', "%7D")
        .replace('"', "%22");
    println!(
        "multi bench: {TARGETS} targets merged in one capture vs {TARGETS} single captures, \
         {packets} packets of {PACKET_SIZE} B per target, {rounds} alternating rounds; \
         both read by one client thread (one poll, lean frame reader)"
    );
    let mut failed = false;
    'rounds: for round in 0..rounds {
        for u in &mut under {
            let s = measure(
                u.svc.port(),
                u.svc.pid(),
                (0..TARGETS).map(single).collect(),
                packets,
            );
            let m = measure(u.svc.port(), u.svc.pid(), vec![merged.clone()], packets);
            match (s, m) {
                (Ok(s), Ok(m)) => {
                    println!(
                        "round {round} [{}]: singles {:.0} MB/s {:.3} CPU s/GB (client {:.3}) | \
                         merged {:.0} MB/s {:.3} CPU s/GB (client {:.3}) | ratio {:.2}x",
                        u.label,
                        s.mb_per_s,
                        s.cpu_s_per_gb,
                        s.client_cpu_s_per_gb,
                        m.mb_per_s,
                        m.cpu_s_per_gb,
                        m.client_cpu_s_per_gb,
                        m.mb_per_s / s.mb_per_s
                    );
                    u.singles.push(s);
                    u.merges.push(m);
                }
                (s, m) => {
                    eprintln!(
                        "round {round} [{}] failed: singles {:?} merged {:?}",
                        u.label,
                        s.err(),
                        m.err()
                    );
                    failed = true;
                    break 'rounds;
                }
            }
        }
    }
    if failed {
        // Stops the services (their Drop) before exiting.
        drop(under);
        std::process::exit(1);
    }
    for u in &under {
        let med = |runs: &[Run], f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
        println!(
            "median [{}]: singles {:.0} MB/s {:.3} CPU s/GB | merged {:.0} MB/s {:.3} CPU s/GB",
            u.label,
            med(&u.singles, |r| r.mb_per_s),
            med(&u.singles, |r| r.cpu_s_per_gb),
            med(&u.merges, |r| r.mb_per_s),
            med(&u.merges, |r| r.cpu_s_per_gb),
        );
        let ratio = |f: fn(&Run) -> f64| {
            median(
                u.singles
                    .iter()
                    .zip(&u.merges)
                    .map(|(s, m)| f(m) / f(s))
                    .collect(),
            )
        };
        println!(
            "merged / singles [{}], median of per-round ratios: throughput {:.2}x (target >= 0.9x), \
             CPU per GB {:.2}x",
            u.label,
            ratio(|r| r.mb_per_s),
            ratio(|r| r.cpu_s_per_gb)
        );
    }
}
