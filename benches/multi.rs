//! `cargo bench --bench multi`: four targets merged into one capture against
//! four single captures of the same targets, in the same run, alternating.
//!
//! The service runs with the synthetic capture program
//! (`packetflix-pcapgen`) standing in for dumpcap, so the capture programs
//! are never the bottleneck; every target is the bench's own network
//! namespace. Each generator writes `PFX_BENCH_MULTI_PACKETS` packets
//! (default 150000) of 1500 bytes at full speed and exits; a client reads
//! each stream to its close and counts the packet blocks (every one must
//! arrive). Aggregate throughput = all stream bytes / (connect → last
//! close); CPU = the service's scheduler run time (/proc/PID/schedstat,
//! one thread) over the same span, per GB of stream. The two ways alternate
//! `PFX_BENCH_MULTI_ROUNDS` times (default 3); medians and the ratio per
//! round are printed. Without `--bench` (a test runner) it does nothing.

use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tungstenite::Message;

/// Targets in the merged capture, and single captures to compare with.
const TARGETS: usize = 4;
/// Captured bytes per packet: a full Ethernet frame.
const PACKET_SIZE: usize = 1500;
/// EPB type (pcapng spec, section 4.3).
const EPB: u32 = 6;
/// How long one capture may take before the bench gives up.
const CAPTURE_LIMIT: Duration = Duration::from_secs(300);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The service's CPU time so far, in nanoseconds (run time of its one
/// thread as the scheduler accounts it).
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Counts EPBs in a little-endian pcapng byte stream fed in pieces.
#[derive(Default)]
struct Counter {
    held: Vec<u8>,
    epbs: u64,
    bytes: u64,
}

impl Counter {
    fn feed(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.held.extend_from_slice(data);
        let mut at = 0;
        while self.held.len() - at >= 8 {
            let t = u32::from_le_bytes(self.held[at..at + 4].try_into().unwrap_or([0; 4]));
            let len =
                u32::from_le_bytes(self.held[at + 4..at + 8].try_into().unwrap_or([0; 4])) as usize;
            if len < 12 || self.held.len() - at < len {
                break;
            }
            if t == EPB {
                self.epbs += 1;
            }
            at += len;
        }
        self.held.drain(..at);
    }
}

/// Reads one capture to its close; returns (bytes, packets).
fn read_capture(port: u16, query: String) -> Result<(u64, u64), String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(CAPTURE_LIMIT))
        .map_err(|e| e.to_string())?;
    let url = format!("ws://127.0.0.1:{port}/capture?{query}");
    let (mut ws, _) = tungstenite::client(url, stream).map_err(|e| e.to_string())?;
    let mut c = Counter::default();
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => c.feed(&b),
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok((c.bytes, c.epbs))
}

struct Run {
    mb_per_s: f64,
    cpu_s_per_gb: f64,
}

/// Runs `queries` concurrently, one client thread each; checks every
/// packet arrived.
fn measure(port: u16, pid: u32, queries: Vec<String>, packets: u64) -> Result<Run, String> {
    let cpu0 = cpu_ns(pid);
    let t0 = Instant::now();
    let threads: Vec<_> = queries
        .into_iter()
        .map(|q| std::thread::spawn(move || read_capture(port, q)))
        .collect();
    let mut bytes = 0;
    let mut got = 0;
    for t in threads {
        let (b, p) = t.join().map_err(|_| "client thread panicked")??;
        bytes += b;
        got += p;
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ns(pid) - cpu0) as f64 / 1e9;
    let want = packets * TARGETS as u64;
    if got != want {
        return Err(format!("{got} packets arrived, {want} were sent"));
    }
    Ok(Run {
        mb_per_s: bytes as f64 / wall / 1e6,
        cpu_s_per_gb: cpu / (bytes as f64 / 1e9),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let packets = env_or("PFX_BENCH_MULTI_PACKETS", 150_000);
    let rounds = env_or("PFX_BENCH_MULTI_ROUNDS", 3).max(1);
    let service = PathBuf::from(env!("CARGO_BIN_EXE_packetflix"));
    let generator = env!("CARGO_BIN_EXE_packetflix-pcapgen");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let inode = std::fs::metadata("/proc/self/ns/net")
        .expect("own netns")
        .ino();
    let child = Command::new(&service)
        .args(["--port", &port.to_string(), "--capture-program", generator])
        .env("PFX_GEN_SIZE", PACKET_SIZE.to_string())
        .env("PFX_GEN_COUNT", packets.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the service");
    let pid = child.id();
    let svc = Service(child);
    let ready = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < ready, "service did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
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
         {packets} packets of {PACKET_SIZE} B per target, {rounds} alternating rounds"
    );
    let (mut ratios_mb, mut ratios_cpu) = (Vec::new(), Vec::new());
    let (mut singles, mut merges) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let s = measure(port, pid, (0..TARGETS).map(single).collect(), packets);
        let m = measure(port, pid, vec![merged.clone()], packets);
        match (s, m) {
            (Ok(s), Ok(m)) => {
                println!(
                    "round {round}: singles {:.0} MB/s {:.3} CPU s/GB | merged {:.0} MB/s {:.3} CPU s/GB",
                    s.mb_per_s, s.cpu_s_per_gb, m.mb_per_s, m.cpu_s_per_gb
                );
                ratios_mb.push(m.mb_per_s / s.mb_per_s);
                ratios_cpu.push(m.cpu_s_per_gb / s.cpu_s_per_gb);
                singles.push((s.mb_per_s, s.cpu_s_per_gb));
                merges.push((m.mb_per_s, m.cpu_s_per_gb));
            }
            (s, m) => {
                eprintln!(
                    "round {round} failed: singles {:?} merged {:?}",
                    s.err(),
                    m.err()
                );
                std::process::exit(1);
            }
        }
    }
    println!(
        "median: singles {:.0} MB/s {:.3} CPU s/GB | merged {:.0} MB/s {:.3} CPU s/GB",
        median(singles.iter().map(|x| x.0).collect()),
        median(singles.iter().map(|x| x.1).collect()),
        median(merges.iter().map(|x| x.0).collect()),
        median(merges.iter().map(|x| x.1).collect()),
    );
    println!(
        "merged / singles, median of per-round ratios: throughput {:.2}x (target >= 0.9x), CPU per GB {:.2}x",
        median(ratios_mb),
        median(ratios_cpu)
    );
    drop(svc);
}
