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
//! merged): the harness's client (`bench::client`), whose lean frame
//! reader hands payload slices to the generator's stream check, so the
//! client does the same work per byte either way and its CPU (printed) is
//! well below a core. Every stream must end on a block boundary with every
//! packet present, each generator's numbered in order (the merged stream
//! per interface: one per target).
//! Aggregate throughput = all stream bytes / (connect → last close); CPU =
//! the service's scheduler run time (/proc/PID/schedstat, one thread) over
//! the same span, per GB of stream. The two ways alternate
//! `PFX_BENCH_MULTI_ROUNDS` times (default 3); medians and the ratio per
//! round are printed. `PFX_BENCH_MULTI_BASELINE=/path/to/packetflix` also
//! runs that binary as a second service, measured in the same rounds right
//! after the first (before/after a change in one run). Without `--bench` (a
//! test runner) it does nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use packetflix_testkit::bench::client::{Client, ConnSpec, Proto, Until};
use packetflix_testkit::bench::{self, env_num, stats};
use packetflix_testkit::service::{Launch, Service};
use packetflix_testkit::{pcapgen, procs};

/// Targets in the merged capture, and single captures to compare with.
const TARGETS: usize = 4;
/// Captured bytes per packet: a full Ethernet frame.
const PACKET_SIZE: usize = 1500;
/// How long one measurement may take before the bench gives up.
const CAPTURE_LIMIT: Duration = Duration::from_secs(300);

/// The service's CPU time so far, in nanoseconds (run time of its main
/// thread, the poll loop, as the scheduler accounts it).
fn cpu_ns(pid: i32) -> u64 {
    procs::main_thread_run_ns(pid).unwrap_or(0)
}

/// Reads every capture of `queries` (query, packets it must carry) to its
/// close on this one thread; returns (bytes, packets, this thread's CPU
/// seconds).
fn read_all(port: u16, queries: &[(String, u64)]) -> Result<(u64, u64, f64), String> {
    let cpu0 = bench::thread_cpu_ns();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let specs = queries
        .iter()
        .map(|(q, packets)| ConnSpec {
            addr,
            proto: Proto::Ws {
                path: format!("/capture?{q}"),
                headers: vec![],
            },
            record_latency: false,
            expect_packets: Some(*packets),
        })
        .collect();
    let mut client = Client::new(specs, queries.len()).map_err(|e| e.to_string())?;
    client.run(Until::AllDone, CAPTURE_LIMIT);
    let (mut bytes, mut packets) = (0, 0);
    for r in client.finish() {
        if let Some(e) = r.error {
            return Err(e);
        }
        bytes += r.bytes;
        packets += r.packets;
    }
    let cpu = bench::thread_cpu_ns().saturating_sub(cpu0) as f64 / 1e9;
    Ok((bytes, packets, cpu))
}

struct Run {
    mb_per_s: f64,
    cpu_s_per_gb: f64,
    client_cpu_s_per_gb: f64,
}

/// Runs `queries` concurrently on one client thread; every stream must
/// carry all its packets.
fn measure(port: u16, pid: i32, queries: Vec<(String, u64)>) -> Result<Run, String> {
    let cpu0 = cpu_ns(pid);
    let t0 = Instant::now();
    let (bytes, _, client_cpu) = std::thread::spawn(move || read_all(port, &queries))
        .join()
        .map_err(|_| "client thread panicked")??;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ns(pid) - cpu0) as f64 / 1e9;
    let gb = bytes as f64 / 1e9;
    Ok(Run {
        mb_per_s: bytes as f64 / wall / 1e6,
        cpu_s_per_gb: cpu / gb,
        client_cpu_s_per_gb: client_cpu / gb,
    })
}

fn median(v: Vec<f64>) -> f64 {
    stats::median(&v).unwrap_or(f64::NAN)
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
    let packets = env_num("PFX_BENCH_MULTI_PACKETS", 150_000u64);
    let rounds = env_num("PFX_BENCH_MULTI_ROUNDS", 3u64).max(1);
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
    let single = |_| (format!("netns={inode}"), packets);
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
            );
            let whole = (merged.clone(), packets * TARGETS as u64);
            let m = measure(u.svc.port(), u.svc.pid(), vec![whole]);
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
