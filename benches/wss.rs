//! `cargo bench --bench wss`: one capture relayed over `wss://` against the
//! same capture over plain `ws://`, in the same run, on the synthetic
//! capture program. Prints throughput and the service's CPU per GB for
//! both, and their ratio, with the method.
//!
//! Method: two service processes (one with `--tls-cert/--tls-key`, one
//! without), the same generator settings, the same blocking client
//! (tungstenite; over rustls with the ring provider for wss), rounds
//! interleaved (plain, tls, then tls, plain, ...), the median of per-round
//! ratios reported. Throughput = stream bytes / (upgrade answered -> last
//! byte); the service's CPU = its scheduler run time over the round
//! (`/proc/PID/task/*/schedstat`); the client's CPU (its thread's CPU
//! clock) is printed beside it. The client's own decryption runs on the
//! same two cores, as a real client's would (its socket reads are buffered,
//! 256 KiB, as rustls reads 4 KiB at a time). Every stream is checked
//! (blocks, sequence numbers) and a damaged one fails the run.
//!
//! Knobs: `PFX_WSS_ROUNDS` (default 5), `PFX_WSS_PACKETS` (default 400000),
//! `PFX_WSS_SIZE` (bytes per packet, default 1500).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use packetflix_testkit::bench::{self, env_num, stats};
use packetflix_testkit::pcapgen::{self, StreamCheck};
use packetflix_testkit::pki;
use packetflix_testkit::service::{Launch, Service};
use rustls::pki_types::ServerName;
use tungstenite::{Message, WebSocket};

/// Longest a single stream may take before the run is called failed.
const STREAM_LIMIT: Duration = Duration::from_secs(120);
const GB: f64 = 1e9;

/// Client socket reads for TLS: rustls asks for at most 4 KiB per read, so
/// without this the client (not the service) would spend its time in
/// syscalls; one read here takes what the socket has, up to this much.
const CLIENT_READ: usize = 256 * 1024;

/// A socket with a large read buffer in front (writes go straight through).
struct BufSock {
    rd: std::io::BufReader<TcpStream>,
}

impl Read for BufSock {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.rd.read(buf)
    }
}

impl Write for BufSock {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.rd.get_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.rd.get_mut().flush()
    }
}

struct RoundOut {
    bytes: u64,
    secs: f64,
    server_cpu_ns: u64,
    client_cpu_ns: u64,
}

/// Reads one whole capture from `ws`, checking it.
fn drain<S: Read + Write>(mut ws: WebSocket<S>) -> Result<u64, String> {
    let mut check = StreamCheck::new(false);
    let end = Instant::now() + STREAM_LIMIT;
    loop {
        if Instant::now() > end {
            return Err("stream did not finish in time".into());
        }
        match ws.read() {
            Ok(Message::Binary(b)) => check.feed(&b, 0),
            Ok(Message::Close(_)) => {}
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    check.finish()?;
    Ok(check.bytes())
}

fn round(
    server: &Service,
    tls: Option<&Arc<rustls::ClientConfig>>,
    ino: u64,
) -> Result<RoundOut, String> {
    let cpu0 = server.sample().map_err(|e| e.to_string())?.cpu_ns;
    let sock = TcpStream::connect(server.addr()).map_err(|e| e.to_string())?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    let path = format!("/capture?netns={ino}");
    let port = server.port();
    let t0 = Instant::now();
    let c0 = bench::thread_cpu_ns();
    let bytes = match tls {
        None => {
            let (ws, _) = tungstenite::client::client(format!("ws://127.0.0.1:{port}{path}"), sock)
                .map_err(|e| e.to_string())?;
            drain(ws)?
        }
        Some(cfg) => {
            let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
            let conn =
                rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
            let sock = BufSock {
                rd: std::io::BufReader::with_capacity(CLIENT_READ, sock),
            };
            let stream = rustls::StreamOwned::new(conn, sock);
            let (ws, _) =
                tungstenite::client::client(format!("wss://127.0.0.1:{port}{path}"), stream)
                    .map_err(|e| e.to_string())?;
            drain(ws)?
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    let client_cpu_ns = bench::thread_cpu_ns().saturating_sub(c0);
    // Let the service reap the generator so its CPU is all counted.
    std::thread::sleep(Duration::from_millis(200));
    let cpu1 = server.sample().map_err(|e| e.to_string())?.cpu_ns;
    Ok(RoundOut {
        bytes,
        secs,
        server_cpu_ns: cpu1.saturating_sub(cpu0),
        client_cpu_ns,
    })
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        if !std::env::args().any(|a| a == "--list") {
            eprintln!("wss bench: run with `cargo bench --bench wss`");
        }
        return;
    }
    if let Err(e) = run() {
        eprintln!("wss bench failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let rounds: usize = env_num("PFX_WSS_ROUNDS", 5);
    let packets: u64 = env_num("PFX_WSS_PACKETS", 400_000);
    let size: usize = env_num("PFX_WSS_SIZE", 1500);
    let service = PathBuf::from(env!("CARGO_BIN_EXE_packetflix"));
    let generator = pcapgen::program_path();
    let out = service
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("bench"))
        .unwrap_or_else(|| PathBuf::from("target/bench"));
    let pki = out.join(format!("wss-pki-{}", std::process::id()));
    std::fs::create_dir_all(&pki).map_err(|e| e.to_string())?;
    let pki::PkiFiles { ca, cert, key } = pki::make(&pki)?;
    let tls_cfg = pki::client_config(&ca)?;
    let env = pcapgen::Settings::stream(size, packets).env();
    let ino = packetflix_testkit::procs::own_netns().ok_or("cannot read /proc/self/ns/net")?;
    let start = |tls: bool| -> Result<Service, String> {
        let mut args = vec![
            "--capture-program".to_string(),
            generator.display().to_string(),
        ];
        if tls {
            args.extend([
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
            ]);
        }
        let log = out.join("logs").join(format!(
            "wss-bench-{}.log",
            if tls { "tls" } else { "plain" }
        ));
        Launch {
            args,
            env: env.clone(),
            ..Launch::new().program(&service).log(log)
        }
        .try_start()
    };
    let mut plain = start(false)?;
    let mut tls = start(true)?;
    println!(
        "wss vs ws: one capture of {packets} packets x {size} B from the synthetic generator, \
         {rounds} interleaved rounds, same blocking tungstenite client (rustls+ring for wss); \
         throughput = stream bytes / (connect -> last byte), server CPU = scheduler run time"
    );
    println!(
        "{:>5} {:>6} {:>10} {:>12} {:>15}",
        "round", "mode", "MB/s", "CPU s/GB", "client CPU s/GB"
    );
    let (mut ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
    let (mut tp_plain, mut tp_tls, mut cpu_plain, mut cpu_tls) = (vec![], vec![], vec![], vec![]);
    let mut result = Ok(());
    for r in 0..rounds {
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut got = [None, None];
        for &is_tls in &order {
            let (server, cfg) = if is_tls {
                (&tls, Some(&tls_cfg))
            } else {
                (&plain, None)
            };
            match round(server, cfg, ino) {
                Ok(o) => {
                    let mbps = o.bytes as f64 / o.secs / 1e6;
                    let cpu_gb = o.server_cpu_ns as f64 / 1e9 / (o.bytes as f64 / GB);
                    let client_gb = o.client_cpu_ns as f64 / 1e9 / (o.bytes as f64 / GB);
                    println!(
                        "{r:>5} {:>6} {mbps:>10.1} {cpu_gb:>12.3} {client_gb:>15.3}",
                        if is_tls { "wss" } else { "ws" }
                    );
                    got[usize::from(is_tls)] = Some((mbps, cpu_gb));
                }
                Err(e) => {
                    result = Err(format!(
                        "round {r} ({}): {e}",
                        if is_tls { "wss" } else { "ws" }
                    ));
                }
            }
        }
        if let [Some((p, pc)), Some((t, tc))] = got {
            ratios.push(t / p);
            cpu_ratios.push(tc / pc);
            tp_plain.push(p);
            tp_tls.push(t);
            cpu_plain.push(pc);
            cpu_tls.push(tc);
        }
        if result.is_err() {
            break;
        }
    }
    plain.stop();
    tls.stop();
    let _ = std::fs::remove_dir_all(&pki);
    result?;
    let median = |v: &mut Vec<f64>| stats::median(v).unwrap_or(f64::NAN);
    println!(
        "median: ws {:.1} MB/s, {:.3} CPU s/GB; wss {:.1} MB/s, {:.3} CPU s/GB",
        median(&mut tp_plain),
        median(&mut cpu_plain),
        median(&mut tp_tls),
        median(&mut cpu_tls)
    );
    let ratio = median(&mut ratios);
    println!(
        "wss/ws throughput ratio (median of per-round ratios): {ratio:.2} (target >= 0.70: {}); CPU per GB ratio: {:.2}",
        if ratio >= 0.7 { "met" } else { "NOT met" },
        median(&mut cpu_ratios)
    );
    Ok(())
}
