//! End-to-end tests of `packetflix-capture`, the real binary as users and
//! Wireshark run it.
//!
//! The first part talks to a stand-in service: a real websocket server
//! (tungstenite over std::net) that records the request and streams scripted
//! pcapng, so every ending (count, duration, signals, refusal, broken stream,
//! fifo reader leaving) is exercised exactly. Real `tshark` decodes what the
//! client wrote, and captures through the client as its extcap plugin,
//! installed into a personal extcap folder the test makes.
//!
//! The second part (`real_service_*`) runs the real `packetflix` service, a
//! network namespace the test makes, the real dumpcap and real tshark.
//!
//! Everything a test makes is removed by `Drop` guards, also when it fails;
//! every wait is bounded.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

const CLIENT: &str = env!("CARGO_BIN_EXE_packetflix-capture");
/// No test step may take longer than this; a hang is a failure, not a stall.
const STEP_LIMIT: Duration = Duration::from_secs(30);
/// How long the stand-in service waits for a client before it gives up.
const ACCEPT_LIMIT: Duration = Duration::from_secs(20);

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

// ---------------------------------------------------------------- scratch dirs

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(unique("pf-client-test-"));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- pcapng

fn block(block_type: u32, body: &[u8]) -> Vec<u8> {
    let padded = body.len().div_ceil(4) * 4;
    let total = (12 + padded) as u32;
    let mut b = block_type.to_le_bytes().to_vec();
    b.extend_from_slice(&total.to_le_bytes());
    b.extend_from_slice(body);
    b.resize(8 + padded, 0);
    b.extend_from_slice(&total.to_le_bytes());
    b
}

/// SHB (little endian, section length unknown) and one Ethernet IDB.
fn stream_head() -> Vec<u8> {
    let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&[1, 0, 0, 0]);
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    let mut s = block(0x0A0D_0D0A, &shb);
    s.extend(block(1, &[1, 0, 0, 0, 0, 0, 4, 0]));
    s
}

/// An EPB with an Ethernet/IPv4/UDP frame carrying `text`.
fn udp_packet(n: u32, text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + 8 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 10, 9, 0, 1, 10, 9, 0, 2]);
    let sum = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>();
    let sum = !((sum & 0xFFFF) + (sum >> 16)) as u16;
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&40000u16.to_be_bytes());
    ip.extend_from_slice(&9999u16.to_be_bytes());
    ip.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(payload);
    let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    frame.extend_from_slice(&ip);
    let ts = 1_700_000_000_000_000u64 + u64::from(n) * 1000;
    let mut body = 0u32.to_le_bytes().to_vec();
    body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(ts as u32).to_le_bytes());
    body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    body.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    body.extend_from_slice(&frame);
    block(6, &body)
}

/// (block types in order) of a little- or big-endian pcapng file; panics on
/// a torn or corrupt file, which is what the tests check against.
fn block_types(bytes: &[u8]) -> Vec<u32> {
    let mut types = Vec::new();
    let mut rest = bytes;
    let mut big = false;
    while !rest.is_empty() {
        assert!(
            rest.len() >= 12,
            "torn block at the end: {} bytes left",
            rest.len()
        );
        let raw = u32::from_le_bytes(rest[0..4].try_into().unwrap());
        if raw == 0x0A0D_0D0A {
            big = rest[8..12] == [0x1A, 0x2B, 0x3C, 0x4D];
        }
        let rd = |at: usize| {
            let b: [u8; 4] = rest[at..at + 4].try_into().unwrap();
            if big {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let len = rd(4) as usize;
        assert!(
            len >= 12 && len <= rest.len(),
            "torn block: length {len}, {} bytes left",
            rest.len()
        );
        types.push(rd(0));
        rest = &rest[len..];
    }
    types
}

fn packets_in(bytes: &[u8]) -> usize {
    block_types(bytes)
        .iter()
        .filter(|t| [2, 3, 6].contains(*t))
        .count()
}

// ---------------------------------------------------------------- stand-in service

/// What the stand-in service saw of the client.
#[derive(Debug, Default)]
struct Seen {
    uri: String,
    headers: Vec<(String, String)>,
    /// Close frames the client sent (its own close, or its answer to ours).
    client_closes: Vec<(u16, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn query(&self) -> &str {
        self.uri.split_once('?').map_or("", |(_, q)| q)
    }
}

/// How the stand-in's script ends.
enum After {
    /// Keep reading until the client closes, then answer and hang up.
    AwaitClose,
    /// Hang up the TCP connection without any close frame.
    Drop,
}

fn accept_one(listener: &TcpListener) -> Option<TcpStream> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + ACCEPT_LIMIT;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return Some(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
    None
}

/// A websocket service on a free loopback port running `script` for one
/// client. The thread ends by itself within its limits.
// tungstenite's handshake callback type has a large error variant; not ours.
#[allow(clippy::result_large_err)]
fn fake_service<F>(script: F) -> (u16, JoinHandle<Seen>)
where
    F: FnOnce(&mut WebSocket<TcpStream>, &mut Seen) -> After + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let mut seen = Seen::default();
        let Some(stream) = accept_one(&listener) else {
            return seen;
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut request = None;
        let accepted = tungstenite::accept_hdr(
            stream,
            |req: &tungstenite::handshake::server::Request, resp| {
                request = Some((
                    req.uri().to_string(),
                    req.headers()
                        .iter()
                        .map(|(n, v)| {
                            (
                                n.to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect::<Vec<_>>(),
                ));
                Ok(resp)
            },
        );
        let Ok(mut ws) = accepted else { return seen };
        if let Some((uri, headers)) = request {
            seen.uri = uri;
            seen.headers = headers;
        }
        if let After::AwaitClose = script(&mut ws, &mut seen) {
            let deadline = Instant::now() + STEP_LIMIT;
            while Instant::now() < deadline {
                match ws.read() {
                    Ok(Message::Close(Some(f))) => seen
                        .client_closes
                        .push((f.code.into(), f.reason.to_string())),
                    Ok(Message::Close(None)) => seen.client_closes.push((1005, String::new())),
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        }
        seen
    });
    (port, handle)
}

fn send(ws: &mut WebSocket<TcpStream>, bytes: Vec<u8>) {
    ws.send(Message::Binary(bytes.into())).unwrap();
}

/// Streams the head, then a packet every `interval`, until the client closes
/// (recorded in `seen`) or `limit` passes.
fn stream_until_client_closes(
    ws: &mut WebSocket<TcpStream>,
    seen: &mut Seen,
    interval: Duration,
    limit: Duration,
) -> After {
    send(ws, stream_head());
    let deadline = Instant::now() + limit;
    let mut n = 0;
    while Instant::now() < deadline {
        if ws
            .send(Message::Binary(udp_packet(n, &format!("tick {n}")).into()))
            .is_err()
        {
            return After::Drop;
        }
        n += 1;
        let next = Instant::now() + interval;
        while Instant::now() < next {
            match ws.read() {
                Ok(Message::Close(frame)) => {
                    let f = frame.map_or((1005, String::new()), |f| {
                        (f.code.into(), f.reason.to_string())
                    });
                    seen.client_closes.push(f);
                    // Our answer goes out with the next read, in fake_service.
                    return After::AwaitClose;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return After::Drop,
            }
        }
    }
    After::AwaitClose
}

/// A plain HTTP server answering `count` requests with `status` and `body`
/// (chunked if the status is 200, as Go's net/http sends a large listing);
/// returns the request lines it saw.
fn fake_http(count: usize, status: &'static str, body: String) -> (u16, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let mut lines = Vec::new();
        for _ in 0..count {
            let Some(mut s) = accept_one(&listener) else {
                break;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let text = String::from_utf8_lossy(&head).into_owned();
            lines.push(text.lines().next().unwrap_or("").to_string());
            let mid = body.len() / 2;
            let answer = if !status.starts_with("200") {
                format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            } else {
                format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
                 {:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                mid,
                &body[..mid],
                body.len() - mid,
                &body[mid..]
                )
            };
            let _ = s.write_all(answer.as_bytes());
        }
        lines
    });
    (port, handle)
}

const LISTING: &str = r#"{
  "metadata": {"hostname": "edge-node-1"},
  "containers": [
    {"name": "/run/netns/blue", "type": "bindmount", "netns": 4026532601,
     "network-interfaces": ["eth0", "lo"], "pid": 0, "starttime": 0, "prefix": ""},
    {"name": "mosquitto", "type": "docker", "netns": 4026532777,
     "network-interfaces": ["eth0", "lo"], "pid": 4242, "starttime": 123456, "prefix": ""},
    {"name": "mosquitto", "type": "docker", "netns": 4026532999,
     "network-interfaces": ["eth0", "eth1", "lo"], "pid": 5151, "starttime": 654321, "prefix": "dind-1"}
  ]
}"#;

// ---------------------------------------------------------------- processes

struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

/// Kills a child that a failing test leaves behind.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(program: &str, args: &[&str], envs: &[(&str, &str)]) -> ChildGuard {
    let child = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    ChildGuard(Some(child))
}

/// Waits (bounded) for the child, reading its output meanwhile.
fn finish(mut guard: ChildGuard, limit: Duration) -> Run {
    let mut child = guard.0.take().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "process did not end within {limit:?}; stderr: {}",
                err_reader.join().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

fn client(args: &[&str]) -> Run {
    finish(spawn(CLIENT, args, &[]), STEP_LIMIT)
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn wait_for<F: FnMut() -> bool>(what: &str, limit: Duration, mut cond: F) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn tshark_lines(file: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["-r", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = finish(spawn("tshark", &args, &[]), STEP_LIMIT);
    assert!(run.status.success(), "tshark -r failed: {}", run.stderr);
    String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

// ================================================================ stand-in tests

#[test]
fn capture_writes_a_file_tshark_decodes_and_sends_params_as_query_and_headers() {
    let dir = TempDir::new();
    let file = dir.join("out.pcapng");
    let mut stream = stream_head();
    for n in 0..3 {
        stream.extend(udp_packet(n, &format!("hello {n}")));
    }
    let expected = stream.clone();
    let (port, service) = fake_service(move |ws, _| {
        // Chunks that cut blocks anywhere, as pipe reads do.
        for chunk in stream.chunks(37) {
            send(ws, chunk.to_vec());
        }
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "capture program exited".into(),
        }))
        .unwrap();
        After::AwaitClose
    });
    let container = r#"{"name":"mosquitto","type":"docker","netns":4026532777,"prefix":""}"#;
    let run = client(&[
        &url(port),
        "--container",
        container,
        "--nif",
        "eth0/lo",
        "-f",
        "udp port 9999",
        "--chaste",
        "-w",
        file.to_str().unwrap(),
    ]);
    let seen = service.join().unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(run.stderr.contains("3 packets"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the service ended the capture: capture program exited"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&file).unwrap(), expected);

    assert!(seen.uri.starts_with("/capture?"), "{}", seen.uri);
    let query = seen.query();
    assert!(
        query.contains("container=%7B%22name%22%3A%22mosquitto%22"),
        "{query}"
    );
    assert!(
        query.contains("nif=eth0%2Flo") && query.contains("filter=udp%20port%209999"),
        "{query}"
    );
    assert!(query.split('&').any(|p| p == "chaste"), "{query}");
    assert_eq!(seen.header("Clustershark-Container"), Some(container));
    assert_eq!(seen.header("Clustershark-Nif"), Some("eth0/lo"));
    assert_eq!(seen.header("Clustershark-Filter"), Some("udp port 9999"));
    assert_eq!(seen.header("Clustershark-Chaste"), Some(""));

    let lines = tshark_lines(
        &file,
        &[
            "-T",
            "fields",
            "-e",
            "udp.dstport",
            "-e",
            "data.text",
            "-o",
            "data.show_as_text:TRUE",
        ],
    );
    assert_eq!(lines, ["9999\thello 0", "9999\thello 1", "9999\thello 2"]);
}

#[test]
fn count_stops_after_exactly_n_packets_with_a_close_handshake() {
    let dir = TempDir::new();
    let file = dir.join("count.pcapng");
    let (port, service) = fake_service(|ws, _| {
        let mut s = stream_head();
        for n in 0..10 {
            s.extend(udp_packet(n, "x"));
        }
        send(ws, s);
        After::AwaitClose
    });
    let run = client(&[
        &url(port),
        "--netns",
        "4026531840",
        "-c",
        "4",
        "-w",
        file.to_str().unwrap(),
    ]);
    let seen = service.join().unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(seen.query(), "netns=4026531840");
    assert_eq!(
        seen.header("Clustershark-Nif"),
        None,
        "no nif given, none sent"
    );
    assert_eq!(packets_in(&std::fs::read(&file).unwrap()), 4);
    assert_eq!(
        seen.client_closes,
        [(1000, "capture stopped by the client".to_string())]
    );
    assert!(
        run.stderr.contains("4 packets") && run.stderr.contains("packet count reached"),
        "{}",
        run.stderr
    );
}

#[test]
fn duration_ends_the_capture_cleanly_and_on_time() {
    let dir = TempDir::new();
    let file = dir.join("duration.pcapng");
    let (port, service) = fake_service(|ws, seen| {
        stream_until_client_closes(ws, seen, Duration::from_millis(50), Duration::from_secs(20))
    });
    let started = Instant::now();
    let run = client(&[
        &url(port),
        "--netns",
        "1",
        "-a",
        "duration:1",
        "-w",
        file.to_str().unwrap(),
    ]);
    let took = started.elapsed();
    let seen = service.join().unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(run.stderr.contains("duration reached"), "{}", run.stderr);
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert_eq!(
        seen.client_closes,
        [(1000, "capture stopped by the client".to_string())]
    );
    let packets = packets_in(&std::fs::read(&file).unwrap());
    assert!(packets >= 5, "only {packets} packets in a second of 20/s");
}

fn interrupt_with(signal: nix::sys::signal::Signal) {
    let dir = TempDir::new();
    let file = dir.join("signal.pcapng");
    let (port, service) = fake_service(|ws, seen| {
        stream_until_client_closes(ws, seen, Duration::from_millis(20), Duration::from_secs(20))
    });
    let guard = spawn(
        CLIENT,
        &[&url(port), "--netns", "1", "-w", file.to_str().unwrap()],
        &[],
    );
    let pid = nix::unistd::Pid::from_raw(guard.0.as_ref().unwrap().id() as i32);
    wait_for("packets in the file", STEP_LIMIT, || {
        std::fs::read(&file)
            .map(|b| b.len() > stream_head().len() + 200)
            .unwrap_or(false)
    });
    nix::sys::signal::kill(pid, signal).unwrap();
    let run = finish(guard, STEP_LIMIT);
    let seen = service.join().unwrap();
    assert_eq!(
        seen.client_closes,
        [(1000, "capture stopped by the client".to_string())]
    );
    assert!(
        run.status.success(),
        "{signal}: {:?} {}",
        run.status,
        run.stderr
    );
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    // Whole blocks only, even though the signal came mid-stream.
    assert!(packets_in(&std::fs::read(&file).unwrap()) > 0);
}

#[test]
fn sigint_closes_the_websocket_and_exits_0() {
    interrupt_with(nix::sys::signal::Signal::SIGINT);
}

#[test]
fn sigterm_closes_the_websocket_and_exits_0() {
    interrupt_with(nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn refused_capture_prints_the_services_reason_and_leaves_no_file() {
    let dir = TempDir::new();
    let file = dir.join("refused.pcapng");
    let (port, service) = fake_service(|ws, _| {
        ws.close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: "network namespace 42 not found".into(),
        }))
        .unwrap();
        After::AwaitClose
    });
    let run = client(&[&url(port), "--netns", "42", "-w", file.to_str().unwrap()]);
    service.join().unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr.contains("packetflix-capture: capture refused by the service: network namespace 42 not found (close code 1008)"),
        "{}",
        run.stderr
    );
    assert!(!file.exists());
}

#[test]
fn service_failing_mid_capture_is_an_error_with_its_reason() {
    let (port, service) = fake_service(|ws, _| {
        let mut s = stream_head();
        s.extend(udp_packet(0, "a"));
        send(ws, s);
        ws.close(Some(CloseFrame {
            code: CloseCode::Error,
            reason: "interface eth0 went down".into(),
        }))
        .unwrap();
        After::AwaitClose
    });
    let run = client(&[&url(port), "--netns", "1", "-w", "-"]);
    service.join().unwrap();
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the service ended the capture: interface eth0 went down (close code 1011)"),
        "{}",
        run.stderr
    );
    assert_eq!(
        packets_in(&run.stdout),
        1,
        "what came before the failure is kept"
    );
}

#[test]
fn broken_stream_is_an_error() {
    let (port, service) = fake_service(|ws, _| {
        let mut s = stream_head();
        s.extend(udp_packet(0, "a"));
        s.extend_from_slice(&udp_packet(1, "b")[..10]);
        send(ws, s);
        After::Drop
    });
    let run = client(&[&url(port), "--netns", "1", "-w", "-"]);
    service.join().unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr.contains("the capture stream broke"),
        "{}",
        run.stderr
    );
    assert_eq!(packets_in(&run.stdout), 1, "the torn block is not written");
}

#[test]
fn unreachable_service_is_reported() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let run = client(&[&url(port), "--netns", "1", "-w", "-"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr.contains(&format!(
            "cannot reach the Packetflix service at 127.0.0.1:{port}: Connection refused"
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn non_websocket_answer_is_reported_with_its_status() {
    let (port, http) = fake_http(1, "404 Not Found", "no such page\n".into());
    let run = client(&[&url(port), "--netns", "1", "-w", "-"]);
    http.join().unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr
            .contains("refused the capture request: HTTP 404 Not Found: no such page"),
        "{}",
        run.stderr
    );
}

#[test]
fn stdout_output_is_the_pcapng_stream() {
    let (port, service) = fake_service(|ws, _| {
        let mut s = stream_head();
        s.extend(udp_packet(0, "to stdout"));
        send(ws, s);
        ws.close(None).unwrap();
        After::AwaitClose
    });
    let run = client(&[&url(port), "--netns", "1", "-w", "-"]);
    service.join().unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    let mut expected = stream_head();
    expected.extend(udp_packet(0, "to stdout"));
    assert_eq!(run.stdout, expected);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--netns", "0"][..],
        &["--bogus"],
        &["-w", "x"],
        &["--netns", "1", "--container", "{}"],
    ] {
        let run = client(args);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.starts_with("packetflix-capture: "),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn targets_lists_discovery_as_table_and_json() {
    let (gw, http) = fake_http(2, "200 OK", LISTING.to_string());
    let discovery = format!("http://127.0.0.1:{gw}");
    let table = client(&["targets", "--discovery", &discovery]);
    let json = client(&["targets", "--discovery", &discovery, "--json"]);
    let requests = http.join().unwrap();
    assert!(table.status.success(), "{}", table.stderr);
    let text = String::from_utf8(table.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "TYPE", "PREFIX", "NETNS", "INTERFACES"]
    );
    assert_eq!(
        lines[3].split_whitespace().collect::<Vec<_>>(),
        [
            "mosquitto",
            "docker",
            "dind-1",
            "4026532999",
            "eth0/eth1/lo"
        ]
    );
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[1]["netns"], 4026532777u64);
    assert_eq!(
        requests,
        ["GET /mobyshark HTTP/1.1", "GET /mobyshark HTTP/1.1"]
    );
}

#[test]
fn targets_go_through_the_services_discovery_proxy_by_default() {
    let (port, http) = fake_http(1, "200 OK", LISTING.to_string());
    let run = client(&["targets", &url(port)]);
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(http.join().unwrap(), ["GET /discover/mobyshark HTTP/1.1"]);
}

#[test]
fn missing_discovery_proxy_says_how_to_enable_it() {
    let (port, http) = fake_http(1, "404 Not Found", "not found".into());
    let run = client(&["targets", &url(port)]);
    http.join().unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stderr.contains("--proxy-discovery"), "{}", run.stderr);
}

#[test]
fn name_lookup_sends_the_target_exactly_as_discovery_listed_it() {
    let (gw, http) = fake_http(1, "200 OK", LISTING.to_string());
    let (port, service) = fake_service(|ws, _| {
        let mut s = stream_head();
        s.extend(udp_packet(0, "x"));
        send(ws, s);
        After::AwaitClose
    });
    let run = client(&[
        &url(port),
        "--name",
        "mosquitto",
        "--prefix",
        "dind-1",
        "--discovery",
        &format!("127.0.0.1:{gw}"),
        "-c",
        "1",
        "-w",
        "-",
    ]);
    http.join().unwrap();
    let seen = service.join().unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    let sent: serde_json::Value =
        serde_json::from_str(seen.header("Clustershark-Container").unwrap()).unwrap();
    let listing: serde_json::Value = serde_json::from_str(LISTING).unwrap();
    assert_eq!(sent, listing["containers"][2]);
}

#[test]
fn unknown_name_is_reported_with_the_prefixes_that_exist() {
    let (gw, http) = fake_http(1, "200 OK", LISTING.to_string());
    let run = client(&[
        "--name",
        "mosquitto",
        "--prefix",
        "nope",
        "--discovery",
        &format!("127.0.0.1:{gw}"),
        "-w",
        "-",
    ]);
    http.join().unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr.contains(r#"exists with prefix "", "dind-1""#),
        "{}",
        run.stderr
    );
}

#[test]
fn packetflix_url_from_the_discovery_ui_captures_its_target() {
    let (port, service) = fake_service(|ws, _| {
        send(ws, stream_head());
        ws.close(None).unwrap();
        After::AwaitClose
    });
    let link = format!(
        "packetflix://127.0.0.1:{port}/capture?container=%7B%22name%22%3A%22mosquitto%22%2C%22netns%22%3A4026532777%7D&nif=eth0"
    );
    let run = client(&[&link, "-w", "-"]);
    let seen = service.join().unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        seen.header("Clustershark-Container"),
        Some(r#"{"name":"mosquitto","netns":4026532777}"#)
    );
    assert_eq!(seen.header("Clustershark-Nif"), Some("eth0"));
}

// ---------------------------------------------------------------- extcap

#[test]
fn extcap_answers_wiresharks_questions() {
    let run = client(&["--extcap-interfaces", "--extcap-version=4.0"]);
    let text = String::from_utf8(run.stdout).unwrap();
    assert!(text.contains("interface {value=packetflix}"), "{text}");
    let run = client(&["--extcap-interface", "packetflix", "--extcap-dlts"]);
    assert!(String::from_utf8(run.stdout)
        .unwrap()
        .starts_with("dlt {number=147}"));
    let run = client(&["--extcap-interface", "packetflix", "--extcap-config"]);
    let text = String::from_utf8(run.stdout).unwrap();
    for call in ["--url", "--target", "--nif", "--filter", "--chaste"] {
        assert!(
            text.contains(&format!("{{call={call}}}")),
            "{call} in {text}"
        );
    }
}

#[test]
fn extcap_capture_stops_cleanly_when_wireshark_closes_the_fifo() {
    let dir = TempDir::new();
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (port, service) = fake_service(|ws, _| {
        // A quiet interface: one packet, then nothing; the client must notice
        // the reader leaving without a write failing.
        let mut s = stream_head();
        s.extend(udp_packet(0, "only one"));
        send(ws, s);
        After::AwaitClose
    });
    let guard = spawn(
        CLIENT,
        &[
            "--capture",
            "--extcap-interface",
            "packetflix",
            "--fifo",
            fifo.to_str().unwrap(),
            "--url",
            &url(port),
            "--target",
            "4026531840",
        ],
        &[],
    );
    let mut reader = std::fs::File::open(&fifo).unwrap();
    let mut got = vec![0u8; stream_head().len() + udp_packet(0, "only one").len()];
    reader.read_exact(&mut got).unwrap();
    assert_eq!(packets_in(&got), 1);
    drop(reader);
    let run = finish(guard, STEP_LIMIT);
    let seen = service.join().unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr.is_empty(),
        "an extcap prints nothing on success: {}",
        run.stderr
    );
    assert_eq!(
        seen.client_closes.len(),
        1,
        "the client closed the websocket"
    );
}

/// The personal extcap folder of a Wireshark whose configuration lives in
/// `dir`, with our binary installed the documented way (a symlink).
/// Wireshark 4.0 ignores WIRESHARK_EXTCAP_DIR when run as root (it counts as
/// "special privileges"), so the test points XDG_CONFIG_HOME at its own
/// folder instead; that is also what installing for a user does.
fn install_extcap(dir: &TempDir) -> String {
    let config = dir.join("config");
    let extcap = config.join("wireshark").join("extcap");
    std::fs::create_dir_all(&extcap).unwrap();
    std::os::unix::fs::symlink(CLIENT, extcap.join("packetflix-capture")).unwrap();
    config.to_str().unwrap().to_string()
}

#[test]
fn tshark_lists_the_installed_extcap_interface() {
    let dir = TempDir::new();
    let config = install_extcap(&dir);
    let run = finish(
        spawn("tshark", &["-D"], &[("XDG_CONFIG_HOME", &config)]),
        STEP_LIMIT,
    );
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        text.lines()
            .any(|l| l
                .ends_with("packetflix (Packetflix: capture inside a container, pod or netns)")),
        "{text}"
    );
}

#[test]
fn tshark_captures_through_the_extcap_into_its_own_file() {
    let dir = TempDir::new();
    let config = install_extcap(&dir);
    let out = dir.join("tshark.pcapng");
    let (port, service) = fake_service(|ws, seen| {
        stream_until_client_closes(ws, seen, Duration::from_millis(50), Duration::from_secs(20))
    });
    let run = finish(
        spawn(
            "tshark",
            &[
                "-i",
                "packetflix",
                "-o",
                &format!("extcap.packetflix.url:{}", url(port)),
                "-o",
                "extcap.packetflix.target:4026531840",
                "-o",
                "extcap.packetflix.chaste:true",
                "-a",
                "duration:3",
                "-w",
                out.to_str().unwrap(),
            ],
            &[("XDG_CONFIG_HOME", &config)],
        ),
        STEP_LIMIT,
    );
    let seen = service.join().unwrap();
    assert!(run.status.success(), "tshark: {}", run.stderr);
    assert!(!run.stderr.contains("Error by extcap"), "{}", run.stderr);
    assert_eq!(
        seen.query(),
        "netns=4026531840&chaste",
        "options reached the service"
    );
    assert_eq!(
        seen.client_closes,
        [(1000, "capture stopped by the client".to_string())],
        "tshark stopping the extcap ends the websocket cleanly"
    );
    let lines = tshark_lines(&out, &["-T", "fields", "-e", "udp.dstport"]);
    assert!(
        lines.len() >= 10,
        "only {} packets in 3 s at 20/s",
        lines.len()
    );
    assert!(lines.iter().all(|l| l == "9999"), "{lines:?}");
}

// ================================================================ real service
//
// The real `packetflix` service (run as root, as it must be), a network
// namespace made here joined to the host by a veth pair, UDP datagrams sent
// into it, the real dumpcap inside it, and real tshark.

const SERVICE: &str = env!("CARGO_BIN_EXE_packetflix");
/// The UDP port test traffic goes to; nothing listens there.
const TRAFFIC_PORT: u16 = 9999;
/// Pause between test datagrams: 20 per second.
const TRAFFIC_INTERVAL: Duration = Duration::from_millis(50);

/// A running service; SIGTERM and reaped (killed if it hangs) when dropped.
struct Service {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Service {
    fn start(dir: &TempDir, extra: &[&str]) -> Service {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join(&format!("service-{port}.log"));
        let mut args = vec!["--port".to_string(), port.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(SERVICE)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let service = Service { child, port, log };
        wait_for("the service to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        service
    }
    fn url(&self) -> String {
        url(self.port)
    }
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes whose parent is `pid` (the service's capture programs).
fn children_of(pid: i32) -> Vec<i32> {
    let mut kids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(pid) {
            if let Ok(child) = entry.file_name().to_string_lossy().parse() {
                kids.push(child);
            }
        }
    }
    kids
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with a veth pair to the host and UDP datagrams flowing
/// into it; all removed when dropped.
struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    inode: u64,
    stop_traffic: std::sync::Arc<std::sync::atomic::AtomicBool>,
    traffic: Option<JoinHandle<()>>,
}

impl Netns {
    fn with_traffic() -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // At most 15 characters: "pct" + pid (up to 7 digits) + "x" + n + "h".
        let base = format!("pct{pid}x{}", n % 1000);
        let mut ns = Netns {
            name: base.clone(),
            host_if: format!("{base}h"),
            ns_if: format!("{base}n"),
            inode: 0,
            stop_traffic: Default::default(),
            traffic: None,
        };
        // A /30 per test, away from the demo's 10.200.0.0/13.
        let (b, c, d) = (
            210 + (n % 40) as u8,
            ((pid / 64) % 256) as u8,
            ((pid % 64) * 4) as u8,
        );
        let host_ip = std::net::Ipv4Addr::new(10, b, c, d + 1);
        let ns_ip = std::net::Ipv4Addr::new(10, b, c, d + 2);
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_if,
        ]);
        ip(&["link", "set", &ns.ns_if, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &ns.host_if]);
        ip(&["link", "set", &ns.host_if, "up"]);
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns.ns_if,
        ]);
        ip(&["-n", &ns.name, "link", "set", &ns.ns_if, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        use std::os::unix::fs::MetadataExt;
        ns.inode = std::fs::metadata(format!("/run/netns/{}", ns.name))
            .unwrap()
            .ino();
        let stop = ns.stop_traffic.clone();
        ns.traffic = Some(thread::spawn(move || {
            let socket = std::net::UdpSocket::bind((host_ip, 0)).unwrap();
            let mut i = 0u32;
            // Bounded: the test ends long before, and stops it on drop.
            while !stop.load(Ordering::SeqCst) && i < 2400 {
                let _ = socket.send_to(format!("datagram {i}").as_bytes(), (ns_ip, TRAFFIC_PORT));
                i += 1;
                thread::sleep(TRAFFIC_INTERVAL);
            }
        }));
        ns
    }
    fn inode(&self) -> String {
        self.inode.to_string()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.stop_traffic.store(true, Ordering::SeqCst);
        if let Some(t) = self.traffic.take() {
            let _ = t.join();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn capture_comment(file: &Path) -> String {
    let run = finish(
        spawn("capinfos", &["-k", file.to_str().unwrap()], &[]),
        STEP_LIMIT,
    );
    String::from_utf8_lossy(&run.stdout).into_owned()
}

#[test]
fn real_service_capture_with_filter_and_chaste_decodes_in_tshark() {
    let dir = TempDir::new();
    let service = Service::start(&dir, &[]);
    let ns = Netns::with_traffic();
    let file = dir.join("real.pcapng");
    let run = client(&[
        &service.url(),
        "--netns",
        &ns.inode(),
        "--nif",
        &ns.ns_if,
        "-f",
        "udp port 9999",
        "--chaste",
        "-c",
        "5",
        "-w",
        file.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}\nservice log:\n{}",
        run.stderr,
        service.log()
    );
    assert!(run.stderr.contains("5 packets"), "{}", run.stderr);
    let lines = tshark_lines(
        &file,
        &[
            "-T",
            "fields",
            "-e",
            "udp.dstport",
            "-e",
            "data.text",
            "-o",
            "data.show_as_text:TRUE",
        ],
    );
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.starts_with("9999\tdatagram ")),
        "only the filtered traffic: {lines:?}"
    );
    let comment = capture_comment(&file);
    assert!(
        comment.contains("# capture target information"),
        "{comment}"
    );
    assert!(
        comment.contains("capture-filter") && comment.contains("no-promiscuous-mode: true"),
        "{comment}"
    );
}

#[test]
fn real_service_sigint_closes_cleanly_and_dumpcap_is_reaped() {
    let dir = TempDir::new();
    let service = Service::start(&dir, &[]);
    let ns = Netns::with_traffic();
    let file = dir.join("sigint.pcapng");
    let guard = spawn(
        CLIENT,
        &[
            &service.url(),
            "--netns",
            &ns.inode(),
            "--nif",
            &ns.ns_if,
            "-w",
            file.to_str().unwrap(),
        ],
        &[],
    );
    let pid = nix::unistd::Pid::from_raw(guard.0.as_ref().unwrap().id() as i32);
    wait_for("packets in the file", STEP_LIMIT, || {
        std::fs::read(&file)
            .map(|b| packets_in_prefix(&b) >= 3)
            .unwrap_or(false)
    });
    assert_eq!(
        children_of(service.pid()).len(),
        1,
        "one capture program runs"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let run = finish(guard, STEP_LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    assert!(packets_in(&std::fs::read(&file).unwrap()) >= 3);
    wait_for(
        "the service to reap dumpcap",
        Duration::from_secs(15),
        || children_of(service.pid()).is_empty(),
    );
    assert!(
        service.log().contains("client closed the capture (1000"),
        "{}",
        service.log()
    );
}

/// Packet blocks among the whole blocks at the start of a file still being
/// written.
fn packets_in_prefix(bytes: &[u8]) -> usize {
    let mut rest = bytes;
    let mut n = 0;
    while rest.len() >= 12 {
        let len = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
        if len < 12 || len > rest.len() {
            break;
        }
        if rest[0..4] == 6u32.to_le_bytes() {
            n += 1;
        }
        rest = &rest[len..];
    }
    n
}

#[test]
fn real_service_refusal_reason_reaches_the_user() {
    let dir = TempDir::new();
    let service = Service::start(&dir, &[]);
    let run = client(&[
        &service.url(),
        "--netns",
        "1",
        "-w",
        dir.join("none.pcapng").to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("capture refused by the service: no network namespace with inode 1 exists"),
        "{}",
        run.stderr
    );
    assert!(!dir.join("none.pcapng").exists());
}

#[test]
fn real_service_tshark_captures_through_the_extcap() {
    let dir = TempDir::new();
    let service = Service::start(&dir, &[]);
    let ns = Netns::with_traffic();
    let config = install_extcap(&dir);
    let out = dir.join("tshark-real.pcapng");
    let run = finish(
        spawn(
            "tshark",
            &[
                "-i",
                "packetflix",
                "-o",
                &format!("extcap.packetflix.url:{}", service.url()),
                "-o",
                &format!("extcap.packetflix.target:{}", ns.inode()),
                "-o",
                &format!("extcap.packetflix.nif:{}", ns.ns_if),
                "-f",
                "udp",
                "-a",
                "duration:3",
                "-w",
                out.to_str().unwrap(),
            ],
            &[("XDG_CONFIG_HOME", &config)],
        ),
        STEP_LIMIT,
    );
    assert!(
        run.status.success(),
        "tshark: {}\nservice log:\n{}",
        run.stderr,
        service.log()
    );
    let lines = tshark_lines(&out, &["-T", "fields", "-e", "udp.dstport"]);
    assert!(
        lines.len() >= 10,
        "only {} packets in 3 s at 20/s",
        lines.len()
    );
    assert!(
        lines.iter().all(|l| l == "9999"),
        "tshark's -f reached the service as the filter: {lines:?}"
    );
    wait_for(
        "the service to reap dumpcap",
        Duration::from_secs(15),
        || children_of(service.pid()).is_empty(),
    );
    assert!(
        service.log().contains("client closed the capture (1000"),
        "{}",
        service.log()
    );
}

#[test]
fn real_service_name_lookup_and_targets_through_the_discovery_proxy() {
    let dir = TempDir::new();
    let ns = Netns::with_traffic();
    let name = format!("client-test-{}", ns.name);
    let listing = format!(
        r#"{{"containers":[{{"name":"{name}","type":"bindmount","netns":{},"network-interfaces":["{}"],"pid":0,"starttime":0,"prefix":""}}]}}"#,
        ns.inode, ns.ns_if
    );
    let (gw, ghostwire) = fake_http(2, "200 OK", listing);
    let service = Service::start(&dir, &["--proxy-discovery", "--gw-port", &gw.to_string()]);
    let table = client(&["targets", &service.url()]);
    assert!(
        table.status.success(),
        "{}\nservice log:\n{}",
        table.stderr,
        service.log()
    );
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&name) && l.contains(&ns.inode())),
        "{text}"
    );
    let file = dir.join("by-name.pcapng");
    let run = client(&[
        &service.url(),
        "--name",
        &name,
        "-f",
        "udp",
        "-c",
        "3",
        "-w",
        file.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}\nservice log:\n{}",
        run.stderr,
        service.log()
    );
    assert_eq!(
        ghostwire.join().unwrap(),
        ["GET /mobyshark HTTP/1.1", "GET /mobyshark HTTP/1.1"]
    );
    let lines = tshark_lines(&file, &["-T", "fields", "-e", "udp.dstport"]);
    assert_eq!(lines, ["9999", "9999", "9999"]);
    let comment = capture_comment(&file);
    assert!(
        comment.contains(&format!("container-name: \"{name}\"")),
        "{comment}"
    );
    assert!(
        comment.contains("container-type: \"bindmount\""),
        "{comment}"
    );
}

#[test]
fn real_service_demo_shows_packets_and_removes_its_namespace() {
    let dir = TempDir::new();
    let service = Service::start(&dir, &[]);
    let guard = spawn(CLIENT, &["demo", &service.url(), "-c", "4"], &[]);
    let demo_pid = guard.0.as_ref().unwrap().id();
    let run = finish(guard, STEP_LIMIT);
    let _ = std::fs::remove_file(
        std::env::temp_dir().join(format!("packetflix-demo-{demo_pid}.pcapng")),
    );
    assert!(
        run.status.success(),
        "{}\nservice log:\n{}",
        run.stderr,
        service.log()
    );
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(
        out.contains("UDP  ") && out.contains("hello from packetflix demo"),
        "{out}"
    );
    assert!(
        run.stderr
            .contains(&format!("removed network namespace pfdemo-{demo_pid}")),
        "{}",
        run.stderr
    );
    assert!(!netns_exists(&format!("pfdemo-{demo_pid}")));
}

#[test]
fn real_service_demo_interrupted_still_removes_its_namespace() {
    let dir = TempDir::new();
    let service = Service::start(&dir, &[]);
    let guard = spawn(
        CLIENT,
        &["demo", &service.url(), "-c", "100000", "-a", "duration:60"],
        &[],
    );
    let demo_pid = guard.0.as_ref().unwrap().id();
    let name = format!("pfdemo-{demo_pid}");
    wait_for("the demo's capture to run", STEP_LIMIT, || {
        children_of(service.pid()).len() == 1
    });
    assert!(netns_exists(&name));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(demo_pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let run = finish(guard, STEP_LIMIT);
    let _ = std::fs::remove_file(
        std::env::temp_dir().join(format!("packetflix-demo-{demo_pid}.pcapng")),
    );
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        !netns_exists(&name),
        "namespace left behind: {}",
        run.stderr
    );
}

#[test]
fn demo_without_a_service_fails_before_making_a_namespace() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let guard = spawn(CLIENT, &["demo", &url(port)], &[]);
    let demo_pid = guard.0.as_ref().unwrap().id();
    let run = finish(guard, STEP_LIMIT);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr.contains("no Packetflix service at"),
        "{}",
        run.stderr
    );
    assert!(!netns_exists(&format!("pfdemo-{demo_pid}")));
}
