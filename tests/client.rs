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
//! The second part (`real_service_*`) runs the real `packetflix` service,
//! network namespaces the test makes, the real dumpcap and real tshark, with
//! the shared helpers of `tests/common` (service, namespaces, GhostWire
//! stand-in, pcapng reader).
//!
//! Everything a test makes is removed by `Drop` guards, also when it fails;
//! every wait is bounded.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

// The shared test kit (testkit/), by the name these tests have always used.
use packetflix_testkit as common;

use common::pcapng::{build, target_yaml, yaml_value, Pcapng};
use common::{GhostWire, ScratchDir};

const CLIENT: &str = env!("CARGO_BIN_EXE_packetflix-capture");
/// No test step may take longer than this; a hang is a failure, not a stall.
const STEP_LIMIT: Duration = Duration::from_secs(30);
/// How long the stand-in service waits for a client before it gives up.
const ACCEPT_LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- pcapng

/// SHB (little endian, section length unknown) and one Ethernet IDB.
fn stream_head() -> Vec<u8> {
    let mut s = build::shb(&[], false);
    s.extend(build::idb(1, "eth0", false));
    s
}

/// An EPB with an Ethernet/IPv4/UDP frame from port 40000 to 9999 carrying
/// `text`.
fn udp_packet(text: &str) -> Vec<u8> {
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
    build::epb(0, &frame, false)
}

/// Packets in a file that must hold whole blocks only; panics on a torn or
/// corrupt file, which is what the tests check against.
fn packets_in(bytes: &[u8]) -> usize {
    let p = Pcapng::parse(bytes).expect("valid pcapng");
    assert_eq!(p.complete_len, bytes.len(), "a torn block at the end");
    p.packets.len()
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
            .send(Message::Binary(udp_packet(&format!("tick {n}")).into()))
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
    let dir = ScratchDir::new("client");
    let file = dir.join("out.pcapng");
    let mut stream = stream_head();
    for n in 0..3 {
        stream.extend(udp_packet(&format!("hello {n}")));
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
    let dir = ScratchDir::new("client");
    let file = dir.join("count.pcapng");
    let (port, service) = fake_service(|ws, _| {
        let mut s = stream_head();
        for _ in 0..10 {
            s.extend(udp_packet("x"));
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
    let dir = ScratchDir::new("client");
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
    let dir = ScratchDir::new("client");
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
    assert!(
        common::wait_for(STEP_LIMIT, || {
            std::fs::read(&file)
                .map(|b| b.len() > stream_head().len() + 200)
                .unwrap_or(false)
        }),
        "packets in the file"
    );
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

/// A fake service that refuses the capture as the real one refuses an
/// unknown namespace.
fn refusing_service() -> (u16, JoinHandle<Seen>) {
    fake_service(|ws, _| {
        ws.close(Some(CloseFrame {
            code: CloseCode::Policy,
            reason: "network namespace 42 not found".into(),
        }))
        .unwrap();
        After::AwaitClose
    })
}

#[test]
fn refused_capture_prints_the_services_reason_and_leaves_no_file() {
    let dir = ScratchDir::new("client");
    let file = dir.join("refused.pcapng");
    let (port, service) = refusing_service();
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
fn refused_capture_into_a_device_or_an_existing_file_removes_neither() {
    use std::os::unix::fs::FileTypeExt;
    let dir = ScratchDir::new("client");
    // A null device of the test's own (what `-w /dev/null` names) and an
    // empty file that was there before the run.
    let device = dir.join("null");
    nix::sys::stat::mknod(
        &device,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .expect("mknod");
    let existing = dir.join("existing.pcapng");
    std::fs::write(&existing, b"").expect("file");
    for out in [&device, &existing] {
        let (port, service) = refusing_service();
        let run = client(&[&url(port), "--netns", "42", "-w", out.to_str().unwrap()]);
        service.join().unwrap();
        assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    }
    let kind = std::fs::symlink_metadata(&device).expect("the device is still there");
    assert!(kind.file_type().is_char_device(), "{kind:?}");
    assert!(
        existing.exists(),
        "a file that was there before was removed"
    );
}

#[test]
fn service_failing_mid_capture_is_an_error_with_its_reason() {
    let (port, service) = fake_service(|ws, _| {
        let mut s = stream_head();
        s.extend(udp_packet("a"));
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
        s.extend(udp_packet("a"));
        s.extend_from_slice(&udp_packet("b")[..10]);
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
    // Any plain HTTP server: the GhostWire stand-in answers 404 to /capture.
    let gw = GhostWire::start(Vec::new());
    let run = client(&[&url(gw.port()), "--netns", "1", "-w", "-"]);
    assert_eq!(run.status.code(), Some(1));
    // The body ("not found") is shown when it arrives before the stand-in's
    // close; a reset may swallow it, so only the status is certain.
    assert!(
        run.stderr
            .contains("refused the capture request: HTTP 404 Not Found"),
        "{}",
        run.stderr
    );
}

#[test]
fn stdout_output_is_the_pcapng_stream() {
    let (port, service) = fake_service(|ws, _| {
        let mut s = stream_head();
        s.extend(udp_packet("to stdout"));
        send(ws, s);
        ws.close(None).unwrap();
        After::AwaitClose
    });
    let run = client(&[&url(port), "--netns", "1", "-w", "-"]);
    service.join().unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    let mut expected = stream_head();
    expected.extend(udp_packet("to stdout"));
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
    let gw = GhostWire::start(LISTING.into());
    let discovery = format!("http://127.0.0.1:{}", gw.port());
    let table = client(&["targets", "--discovery", &discovery]);
    let json = client(&["targets", "--discovery", &discovery, "--json"]);
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
    assert_eq!(gw.mobyshark_requests(), 2);
}

#[test]
fn missing_discovery_proxy_says_how_to_enable_it() {
    // A service without the proxy answers 404, as the stand-in does.
    let gw = GhostWire::start(LISTING.into());
    let run = client(&["targets", &url(gw.port())]);
    assert_eq!(run.status.code(), Some(1));
    assert!(run.stderr.contains("--proxy-discovery"), "{}", run.stderr);
}

#[test]
fn name_lookup_sends_the_target_exactly_as_discovery_listed_it() {
    let gw = GhostWire::start(LISTING.into());
    let (port, service) = fake_service(|ws, _| {
        let mut s = stream_head();
        s.extend(udp_packet("x"));
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
        &format!("127.0.0.1:{}", gw.port()),
        "-c",
        "1",
        "-w",
        "-",
    ]);
    let seen = service.join().unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    let sent: serde_json::Value =
        serde_json::from_str(seen.header("Clustershark-Container").unwrap()).unwrap();
    let listing: serde_json::Value = serde_json::from_str(LISTING).unwrap();
    assert_eq!(sent, listing["containers"][2]);
}

#[test]
fn unknown_name_is_reported_with_the_prefixes_that_exist() {
    let gw = GhostWire::start(LISTING.into());
    let run = client(&[
        "--name",
        "mosquitto",
        "--prefix",
        "nope",
        "--discovery",
        &format!("127.0.0.1:{}", gw.port()),
        "-w",
        "-",
    ]);
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

#[test]
fn ghostwire_ui_link_with_a_base_path_and_raw_slashes_in_nif_captures() {
    let (port, service) = fake_service(|ws, _| {
        send(ws, stream_head());
        ws.close(None).unwrap();
        After::AwaitClose
    });
    // As the UI writes it: encodeURIComponent(JSON), then a raw `nif`.
    let link = format!(
        "packetflix:ws://127.0.0.1:{port}/gw/capture?container=%7B%22netns%22%3A4026532777%2C%22network-interfaces%22%3A%5B%22eth0%22%2C%22lo%22%5D%2C%22name%22%3A%22web%22%2C%22type%22%3A%22docker%22%2C%22prefix%22%3A%22%22%7D&nif=eth0/lo"
    );
    let run = client(&[&link, "-w", "-"]);
    let seen = service.join().unwrap();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(seen.uri.starts_with("/gw/capture?"), "{}", seen.uri);
    assert!(seen.query().contains("nif=eth0%2Flo"), "{}", seen.uri);
    assert_eq!(
        seen.header("Clustershark-Container"),
        Some(
            r#"{"netns":4026532777,"network-interfaces":["eth0","lo"],"name":"web","type":"docker","prefix":""}"#
        )
    );
    assert_eq!(seen.header("Clustershark-Nif"), Some("eth0/lo"));
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
    let dir = ScratchDir::new("client");
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (port, service) = fake_service(|ws, _| {
        // A quiet interface: one packet, then nothing; the client must notice
        // the reader leaving without a write failing.
        let mut s = stream_head();
        s.extend(udp_packet("only one"));
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
    let mut got = vec![0u8; stream_head().len() + udp_packet("only one").len()];
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

/// Wireshark may stop a capture before it has opened the reading end of the
/// fifo (a start cancelled at once). The extcap is then blocked in open(2) on
/// the fifo: only a signal handler installed without SA_RESTART makes that
/// open return (EINTR) so the stop is seen; with SA_RESTART the kernel
/// restarts the open and the plugin waits forever.
#[test]
fn extcap_waiting_for_wiresharks_fifo_stops_on_sigterm() {
    let dir = ScratchDir::new("client");
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let guard = spawn(
        CLIENT,
        &[
            "--capture",
            "--extcap-interface",
            "packetflix",
            "--fifo",
            fifo.to_str().unwrap(),
            "--url",
            "http://127.0.0.1:9",
            "--target",
            "4026531840",
        ],
        &[],
    );
    let pid = nix::unistd::Pid::from_raw(guard.0.as_ref().unwrap().id() as i32);
    // Until the handlers are installed a SIGTERM would simply kill it; the
    // open of the fifo comes after them, so wait until it sleeps there
    // (the kernel's fifo open waits in wait_for_partner).
    assert!(
        common::wait_for(STEP_LIMIT, || {
            std::fs::read_to_string(format!("/proc/{pid}/wchan"))
                .is_ok_and(|w| w.contains("wait_for_partner"))
        }),
        "the plugin blocks opening the fifo"
    );
    let sent = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let run = finish(guard, Duration::from_secs(10));
    println!("stopped {:?} after SIGTERM", sent.elapsed());
    assert!(run.status.success(), "{:?} {}", run.status, run.stderr);
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

/// The personal extcap folder of a Wireshark whose configuration lives in
/// `dir`, with our binary installed the documented way (a symlink).
/// Wireshark 4.0 ignores WIRESHARK_EXTCAP_DIR when run as root (it counts as
/// "special privileges"), so the test points XDG_CONFIG_HOME at its own
/// folder instead; that is also what installing for a user does.
fn install_extcap(dir: &ScratchDir) -> String {
    let config = dir.join("config");
    let extcap = config.join("wireshark").join("extcap");
    std::fs::create_dir_all(&extcap).unwrap();
    std::os::unix::fs::symlink(CLIENT, extcap.join("packetflix-capture")).unwrap();
    config.to_str().unwrap().to_string()
}

#[test]
fn tshark_lists_the_installed_extcap_interface() {
    let dir = ScratchDir::new("client");
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
    let dir = ScratchDir::new("client");
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
// The real `packetflix` service (run as root, as it must be), network
// namespaces made here joined by a veth pair with pings flowing across it,
// the real dumpcap inside them, and real tshark. Service, namespaces and
// GhostWire stand-in are the shared helpers of tests/common.

use common::{mobyshark, NsProcess, Service, VethPair};

/// Pings from `a` to `b` 20 times a second; stopped on drop.
fn pings(pair: &VethPair) -> NsProcess {
    pair.a
        .spawn(&["ping", "-n", "-q", "-i", "0.05", &pair.b_addr.to_string()])
}

fn service_url(service: &Service) -> String {
    url(service.port())
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// The capture target document in the file's first SHB.
fn target_document(file: &Path) -> String {
    let p = Pcapng::parse(&std::fs::read(file).unwrap()).unwrap();
    target_yaml(&p).expect("a capture target document")
}

#[test]
fn real_service_capture_with_filter_and_chaste_decodes_in_tshark() {
    let dir = ScratchDir::new("client");
    let service = Service::start(&[]);
    let pair = VethPair::new();
    let _ping = pings(&pair);
    let file = dir.join("real.pcapng");
    let run = client(&[
        &service_url(&service),
        "--netns",
        &pair.b.inode().to_string(),
        "--nif",
        &pair.b_if,
        "-f",
        "icmp[icmptype] == icmp-echo",
        "--chaste",
        "-c",
        "5",
        "-w",
        file.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    assert!(run.stderr.contains("5 packets"), "{}", run.stderr);
    let lines = tshark_lines(&file, &["-T", "fields", "-e", "ip.src", "-e", "icmp.type"]);
    let request = format!("{}\t8", pair.a_addr);
    assert_eq!(lines, vec![request; 5], "only echo requests, as filtered");
    let doc = target_document(&file);
    assert_eq!(
        yaml_value(&doc, "capture-filter").as_deref(),
        Some("\"icmp[icmptype] == icmp-echo\"")
    );
    assert_eq!(
        yaml_value(&doc, "no-promiscuous-mode").as_deref(),
        Some("true")
    );
}

#[test]
fn real_service_sigint_closes_cleanly_and_dumpcap_is_reaped() {
    let dir = ScratchDir::new("client");
    let service = Service::start(&[]);
    let pair = VethPair::new();
    let _ping = pings(&pair);
    let file = dir.join("sigint.pcapng");
    let guard = spawn(
        CLIENT,
        &[
            &service_url(&service),
            "--netns",
            &pair.b.inode().to_string(),
            "--nif",
            &pair.b_if,
            "-w",
            file.to_str().unwrap(),
        ],
        &[],
    );
    let pid = nix::unistd::Pid::from_raw(guard.0.as_ref().unwrap().id() as i32);
    assert!(
        common::wait_for(STEP_LIMIT, || {
            std::fs::read(&file)
                .is_ok_and(|b| Pcapng::parse(&b).is_ok_and(|p| p.packets.len() >= 3))
        }),
        "packets in the file"
    );
    assert_eq!(
        service.captures("dumpcap").len(),
        1,
        "one capture program runs"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let run = finish(guard, STEP_LIMIT);
    assert!(run.status.success(), "{}", run.stderr);
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
    assert!(packets_in(&std::fs::read(&file).unwrap()) >= 3);
    assert!(
        service.wait_dumpcaps(0, Duration::from_secs(15)).is_empty(),
        "the service stopped and reaped dumpcap"
    );
    assert!(
        service.logged("client closed the capture (1000"),
        "{}",
        service.stderr()
    );
}

#[test]
fn real_service_refusal_reason_reaches_the_user() {
    let dir = ScratchDir::new("client");
    let service = Service::start(&[]);
    let file = dir.join("none.pcapng");
    let run = client(&[
        &service_url(&service),
        "--netns",
        "1",
        "-w",
        file.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "packetflix-capture: capture refused by the service: no network namespace with inode 1 exists"
        ),
        "{}",
        run.stderr
    );
    assert!(!file.exists());
}

#[test]
fn real_service_tshark_captures_through_the_extcap() {
    let dir = ScratchDir::new("client");
    let service = Service::start(&[]);
    let pair = VethPair::new();
    let _ping = pings(&pair);
    let config = install_extcap(&dir);
    let out = dir.join("tshark-real.pcapng");
    let run = finish(
        spawn(
            "tshark",
            &[
                "-i",
                "packetflix",
                "-o",
                &format!("extcap.packetflix.url:{}", service_url(&service)),
                "-o",
                &format!("extcap.packetflix.target:{}", pair.b.inode()),
                "-o",
                &format!("extcap.packetflix.nif:{}", pair.b_if),
                "-f",
                "icmp[icmptype] == icmp-echoreply",
                "-a",
                "duration:3",
                "-w",
                out.to_str().unwrap(),
            ],
            &[("XDG_CONFIG_HOME", &config)],
        ),
        STEP_LIMIT,
    );
    assert!(run.status.success(), "tshark: {}", run.stderr);
    let lines = tshark_lines(&out, &["-T", "fields", "-e", "ip.src", "-e", "icmp.type"]);
    assert!(
        lines.len() >= 10,
        "only {} packets in 3 s at 20/s",
        lines.len()
    );
    let reply = format!("{}\t0", pair.b_addr);
    assert!(
        lines.iter().all(|l| *l == reply),
        "tshark's -f reached the service as the filter: {lines:?}"
    );
    assert!(
        service.wait_dumpcaps(0, Duration::from_secs(15)).is_empty(),
        "the service stopped and reaped dumpcap"
    );
    assert!(
        service.logged("client closed the capture (1000"),
        "{}",
        service.stderr()
    );
}

#[test]
fn real_service_name_lookup_and_targets_through_the_discovery_proxy() {
    let dir = ScratchDir::new("client");
    let pair = VethPair::new();
    let _ping = pings(&pair);
    let name = format!("client-test-{}", pair.b.name);
    let inode = pair.b.inode();
    let gw = GhostWire::start(mobyshark(&[common::target(&name, "", inode, 0, 0)]));
    let service = Service::with_discovery(gw.port(), 5, &["--proxy-discovery"]);
    let table = client(&["targets", &service_url(&service)]);
    assert!(table.status.success(), "{}", table.stderr);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [&name, "proc", "-", &inode.to_string()]),
        "{text}"
    );
    let file = dir.join("by-name.pcapng");
    let run = client(&[
        &service_url(&service),
        "--name",
        &name,
        "--nif",
        &pair.b_if,
        "-f",
        "icmp",
        "-c",
        "3",
        "-w",
        file.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        gw.mobyshark_requests(),
        2,
        "targets and the lookup, both through the proxy"
    );
    let lines = tshark_lines(&file, &["-T", "fields", "-e", "icmp.type"]);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let doc = target_document(&file);
    assert_eq!(
        yaml_value(&doc, "container-name"),
        Some(format!("\"{name}\""))
    );
    assert_eq!(
        yaml_value(&doc, "container-type").as_deref(),
        Some("\"proc\"")
    );
}

#[test]
fn real_service_demo_shows_packets_and_removes_its_namespace() {
    let service = Service::start(&[]);
    let guard = spawn(CLIENT, &["demo", &service_url(&service), "-c", "4"], &[]);
    let demo_pid = guard.0.as_ref().unwrap().id();
    let run = finish(guard, STEP_LIMIT);
    let _ = std::fs::remove_file(
        std::env::temp_dir().join(format!("packetflix-demo-{demo_pid}.pcapng")),
    );
    assert!(run.status.success(), "{}", run.stderr);
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
    let service = Service::start(&[]);
    let guard = spawn(
        CLIENT,
        &[
            "demo",
            &service_url(&service),
            "-c",
            "100000",
            "-a",
            "duration:60",
        ],
        &[],
    );
    let demo_pid = guard.0.as_ref().unwrap().id();
    let name = format!("pfdemo-{demo_pid}");
    assert_eq!(
        service.wait_dumpcaps(1, STEP_LIMIT).len(),
        1,
        "the demo's capture runs"
    );
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
    let port = common::service::free_port();
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

// ------------------------------------------ extcap: the target selector

/// The `value` sentences for `arg` in an extcap answer: (value, display).
fn selector_values(text: &str, arg: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| l.starts_with("value ") && l.contains(&format!("{{arg={arg}}}")))
        .filter_map(|l| {
            let field = |k: &str| {
                let start = l.find(&format!("{{{k}="))? + k.len() + 2;
                let end = start + l[start..].find('}')?;
                Some(l[start..end].to_string())
            };
            Some((field("value")?, field("display")?))
        })
        .collect()
}

#[test]
fn extcap_config_offers_a_reloadable_multi_target_selector_and_all_interfaces() {
    let run = client(&["--extcap-interface", "packetflix", "--extcap-config"]);
    assert!(run.status.success(), "{}", run.stderr);
    let text = String::from_utf8(run.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("{call=--targets}"))
        .unwrap_or_else(|| panic!("no target selector in {text}"));
    assert!(
        line.contains("{type=multicheck}") && line.contains("{reload=true}"),
        "{line}"
    );
    let nif = text.lines().find(|l| l.contains("{call=--nif}")).unwrap();
    assert!(nif.contains("or all"), "{nif}");
    let run = client(&["--extcap-interfaces"]);
    let text = String::from_utf8(run.stdout).unwrap();
    assert!(
        text.lines().next().unwrap().contains("{help=https://"),
        "{text}"
    );
}

#[test]
fn tshark_captures_two_targets_picked_in_the_reloaded_selector() {
    let dir = ScratchDir::new("client");
    let pair = VethPair::new();
    let _ping = pings(&pair);
    let (na, nb) = (
        format!("sel-a-{}", pair.a.name),
        format!("sel-b-{}", pair.b.name),
    );
    let mut ta = common::target(&na, "", pair.a.inode(), 0, 0);
    ta["network-interfaces"] = serde_json::json!([pair.a_if]);
    let mut tb = common::target(&nb, "", pair.b.inode(), 0, 0);
    tb["network-interfaces"] = serde_json::json!([pair.b_if]);
    let gw = GhostWire::start(mobyshark(&[ta, tb]));
    let service = Service::with_discovery(gw.port(), 5, &["--proxy-discovery"]);
    // What Wireshark runs when the selector's reload button is pressed.
    let run = client(&[
        "--extcap-interface",
        "packetflix",
        "--extcap-config",
        "--extcap-reload-option",
        "targets",
        "--url",
        &service_url(&service),
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    let text = String::from_utf8(run.stdout).unwrap();
    let values = selector_values(&text, "7");
    let displays: Vec<&str> = values.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(
        displays,
        [format!("{na} (proc)"), format!("{nb} (proc)")],
        "{text}"
    );
    let picked: Vec<&str> = values.iter().map(|(v, _)| v.as_str()).collect();

    let config = install_extcap(&dir);
    let out = dir.join("two-targets.pcapng");
    let run = finish(
        spawn(
            "tshark",
            &[
                "-i",
                "packetflix",
                "-o",
                &format!("extcap.packetflix.url:{}", service_url(&service)),
                "-o",
                &format!("extcap.packetflix.targets:{}", picked.join(",")),
                "-a",
                "duration:3",
                "-w",
                out.to_str().unwrap(),
            ],
            &[("XDG_CONFIG_HOME", &config)],
        ),
        STEP_LIMIT,
    );
    assert!(run.status.success(), "tshark: {}", run.stderr);
    let lines = tshark_lines(&out, &["-T", "fields", "-e", "frame.interface_name"]);
    for name in [format!("{na}/{}", pair.a_if), format!("{nb}/{}", pair.b_if)] {
        assert!(lines.contains(&name), "no packet on {name}: {lines:?}");
    }
    assert!(
        service.wait_dumpcaps(0, Duration::from_secs(15)).is_empty(),
        "the service stopped and reaped both dumpcaps"
    );
}

#[test]
fn tshark_captures_an_interface_picked_in_the_reloaded_interface_selector() {
    let dir = ScratchDir::new("client");
    let pair = VethPair::new();
    let _ping = pings(&pair);
    let (na, nb) = (
        format!("nif-a-{}", pair.a.name),
        format!("nif-b-{}", pair.b.name),
    );
    let mut ta = common::target(&na, "", pair.a.inode(), 0, 0);
    ta["network-interfaces"] = serde_json::json!([pair.a_if, "lo"]);
    let mut tb = common::target(&nb, "", pair.b.inode(), 0, 0);
    tb["network-interfaces"] = serde_json::json!([pair.b_if, "lo"]);
    let gw = GhostWire::start(mobyshark(&[ta, tb]));
    let service = Service::with_discovery(gw.port(), 5, &["--proxy-discovery"]);
    let reload = |chosen: &[&str]| {
        let mut args = vec![
            "--extcap-interface",
            "packetflix",
            "--extcap-config",
            "--extcap-reload-option",
            "nif",
        ];
        args.extend_from_slice(chosen);
        let url = service_url(&service);
        args.extend_from_slice(&["--url", &url]);
        let run = client(&args);
        assert!(run.status.success(), "{}", run.stderr);
        let text = String::from_utf8(run.stdout).unwrap();
        selector_values(&text, "3")
            .into_iter()
            .map(|(v, _)| v)
            .collect::<Vec<_>>()
    };
    // The initial answer offers "all"; a reload without a chosen target
    // offers every listed target's interfaces, each once.
    let run = client(&["--extcap-interface", "packetflix", "--extcap-config"]);
    let text = String::from_utf8(run.stdout).unwrap();
    assert_eq!(
        selector_values(&text, "3"),
        [("all".to_string(), "all interfaces".to_string())]
    );
    assert_eq!(
        reload(&[]),
        ["all", pair.a_if.as_str(), "lo", pair.b_if.as_str()]
    );
    // The targets picked in the target selector come along with the
    // reload, as Wireshark passes every option's current value.
    let run = client(&[
        "--extcap-interface",
        "packetflix",
        "--extcap-config",
        "--extcap-reload-option",
        "targets",
        "--url",
        &service_url(&service),
    ]);
    let text = String::from_utf8(run.stdout).unwrap();
    let picked: Vec<String> = selector_values(&text, "7")
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    assert_eq!(picked.len(), 2, "{text}");
    assert_eq!(
        reload(&["--targets", &picked[1]]),
        ["all", pair.b_if.as_str(), "lo"]
    );
    assert_eq!(
        reload(&["--target", &nb]),
        ["all", pair.b_if.as_str(), "lo"]
    );

    // tshark sets the selector's preference like a string's: one picked
    // interface of a target named by name...
    let config = install_extcap(&dir);
    let capture = |name: &str, prefs: &[String]| {
        let out = dir.join(name);
        let mut args = vec![
            "-i".to_string(),
            "packetflix".to_string(),
            "-o".to_string(),
            format!("extcap.packetflix.url:{}", service_url(&service)),
        ];
        for p in prefs {
            args.extend(["-o".to_string(), p.clone()]);
        }
        args.extend(["-a", "duration:3", "-w", out.to_str().unwrap()].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = finish(
            spawn("tshark", &args, &[("XDG_CONFIG_HOME", &config)]),
            STEP_LIMIT,
        );
        assert!(run.status.success(), "tshark: {}", run.stderr);
        tshark_lines(&out, &["-T", "fields", "-e", "frame.interface_name"])
    };
    let lines = capture(
        "one-nif.pcapng",
        &[
            format!("extcap.packetflix.target:{nb}"),
            format!("extcap.packetflix.nif:{}", pair.b_if),
        ],
    );
    assert!(lines.len() >= 10, "{lines:?}");
    assert!(lines.iter().all(|l| *l == pair.b_if), "{lines:?}");
    // ... and "all" with both targets picked.
    let lines = capture(
        "all-nifs.pcapng",
        &[
            format!("extcap.packetflix.targets:{}", picked.join(",")),
            "extcap.packetflix.nif:all".to_string(),
        ],
    );
    for name in [format!("{na}/{}", pair.a_if), format!("{nb}/{}", pair.b_if)] {
        assert!(lines.contains(&name), "no packet on {name}: {lines:?}");
    }
    assert!(
        service.wait_dumpcaps(0, Duration::from_secs(15)).is_empty(),
        "the service stopped and reaped every dumpcap"
    );
}

// ================================================================ progress line

/// The frames a live line wrote between carriage returns, without blanks.
fn frames(terminal: &str) -> Vec<String> {
    terminal
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect()
}

/// The seconds a progress frame shows (`…, 1.2 s` or `…, 1.2 s, 3 dropped`).
fn frame_seconds(frame: &str) -> Option<f64> {
    let (_, tail) = frame.rsplit_once(", ")?;
    let tail = if tail.ends_with(" dropped") {
        frame.rsplit(", ").nth(1)?
    } else {
        tail
    };
    tail.strip_suffix(" s")?.parse().ok()
}

#[test]
fn real_service_progress_line_is_live_on_a_terminal_and_absent_when_stderr_is_a_file() {
    let dir = ScratchDir::new("client");
    let service = Service::start(&[]);
    let pair = VethPair::new();
    let _ping = pings(&pair);
    let file = dir.join("live.pcapng");
    let seconds = 2.0;
    let args = format!(
        "{CLIENT} {} --netns {} --nif {} -a duration:{seconds} -w {}",
        service_url(&service),
        pair.b.inode(),
        pair.b_if,
        file.display()
    );
    // script(1) gives the client a pseudo-terminal as stdin, stdout and
    // stderr, and copies what it writes there to its own stdout.
    let run = finish(
        spawn("script", &["-q", "-f", "-e", "-c", &args, "/dev/null"], &[]),
        STEP_LIMIT,
    );
    let terminal = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(run.status.success(), "{terminal}");
    let frames = frames(&terminal);
    let (summary, live) = frames.split_last().expect("output on the terminal");
    assert!(
        summary.contains("written to") && summary.ends_with("; duration reached"),
        "the summary replaces the line last: {terminal:?}"
    );
    let times: Vec<f64> = live
        .iter()
        .map(|f| {
            assert!(
                f.starts_with("packetflix-capture: ") && f.contains(" packet"),
                "{f:?}"
            );
            frame_seconds(f).unwrap_or_else(|| panic!("no time in {f:?}"))
        })
        .collect();
    println!("{} live frames over {seconds} s: {times:?}", times.len());
    assert!(
        times.len() >= 3,
        "updated a few times a second: {terminal:?}"
    );
    assert!(
        times.len() as f64 <= seconds / 0.25 + 2.0,
        "no more often than every 250 ms: {terminal:?}"
    );
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    assert!(
        live.last().is_some_and(|f| !f.contains(" 0 packets")),
        "the count moves: {live:?}"
    );

    // The same capture with stderr a file: only the summary, no carriage
    // return, no live line.
    let errors = dir.join("stderr.txt");
    let status = Command::new(CLIENT)
        .args([
            &service_url(&service),
            "--netns",
            &pair.b.inode().to_string(),
            "--nif",
            &pair.b_if,
            "-a",
            "duration:1",
            "-w",
            file.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&errors).unwrap())
        .status()
        .unwrap();
    let text = std::fs::read_to_string(&errors).unwrap();
    assert!(status.success(), "{text}");
    assert!(!text.contains('\r'), "{text:?}");
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(text.ends_with("; duration reached\n"), "{text:?}");
}
