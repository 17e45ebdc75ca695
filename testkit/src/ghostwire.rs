//! A stand-in for the GhostWire discovery service: a real HTTP/1.1 server on
//! 127.0.0.1 (std listener, one thread per connection) answering
//! `GET /mobyshark` with a configurable status, body and delay. It records
//! every request and when each answer went out; it stops on drop. The
//! tests and the benches' setup scenario share it.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Request heads larger than this are not something a client of ours sends.
const MAX_HEAD: usize = 16 * 1024;
/// Granularity of the accept loop and of interruptible delays.
const TICK: Duration = Duration::from_millis(20);

#[derive(Clone, Debug)]
pub struct GwConfig {
    pub status: u16,
    pub body: Vec<u8>,
    pub delay: Duration,
}

#[derive(Clone, Debug)]
pub struct GwRequest {
    pub method: String,
    pub path: String,
    pub at: Instant,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    config: Mutex<Option<GwConfig>>,
    requests: Mutex<Vec<GwRequest>>,
    answered: Mutex<Vec<Instant>>,
}

pub struct GhostWire {
    port: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GhostWire {
    /// Serves `body` with status 200 and no delay.
    pub fn start(body: Vec<u8>) -> GhostWire {
        GhostWire::with(GwConfig {
            status: 200,
            body,
            delay: Duration::ZERO,
        })
    }

    pub fn with(config: GwConfig) -> GhostWire {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind stand-in");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let shared = Arc::new(Shared::default());
        *shared.config.lock().unwrap() = Some(config);
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            while !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || serve(conn, &s));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
                    Err(_) => std::thread::sleep(TICK),
                }
            }
        });
        GhostWire {
            port,
            shared,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn requests(&self) -> Vec<GwRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many `GET /mobyshark` requests arrived.
    pub fn mobyshark_requests(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == "/mobyshark")
            .count()
    }

    /// When each answer was sent, in order.
    pub fn answered(&self) -> Vec<Instant> {
        self.shared.answered.lock().unwrap().clone()
    }
}

impl Drop for GhostWire {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut conn: TcpStream, s: &Shared) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            _ => return,
        }
        if head.len() > MAX_HEAD {
            return;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    s.requests.lock().unwrap().push(GwRequest {
        method,
        path: path.clone(),
        at: Instant::now(),
    });
    let Some(cfg) = s.config.lock().unwrap().clone() else {
        return;
    };
    let until = Instant::now() + cfg.delay;
    while Instant::now() < until {
        if s.stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(TICK);
    }
    let (status, body) = if path == "/mobyshark" {
        (cfg.status, cfg.body)
    } else {
        (404, b"not found".to_vec())
    };
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // Counted before the bytes go out: a client that has its answer must
    // find it counted.
    s.answered.lock().unwrap().push(Instant::now());
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&body);
    let _ = conn.flush();
    let _ = conn.shutdown(std::net::Shutdown::Write);
}

/// One target, shaped like an element of GhostWire's `containers` array.
pub fn target(name: &str, prefix: &str, netns: u64, pid: i32, starttime: u64) -> Value {
    json!({
        "name": name,
        "type": "proc",
        "netns": netns,
        "network-interfaces": [],
        "pid": pid,
        "starttime": starttime,
        "prefix": prefix,
    })
}

/// A whole `/mobyshark` answer listing `targets`, with metadata as the real
/// service sends (see shared/fixtures/ghostwire-mobyshark.json).
pub fn mobyshark(targets: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "metadata": {
            "creation-timestamp": "2026-11-26T06:30:00Z",
            "creator-tool": "ghostwire",
            "hostname": "pfx-test-node",
            "container-engines": []
        },
        "containers": targets,
    }))
    .expect("serialize")
}
