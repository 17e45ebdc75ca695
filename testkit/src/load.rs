//! Helpers for the robustness tests: scratch directories and raw idle
//! connections. Every wait here is bounded.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A directory under /tmp that any user may traverse (mode 0755), removed
/// with its contents on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(what: &str) -> ScratchDir {
        use std::os::unix::fs::PermissionsExt;
        let d = ScratchDir(super::scratch_path(what));
        std::fs::create_dir(&d.0).expect("create scratch dir");
        std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o755))
            .expect("chmod scratch dir");
        d
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- raw connections ---------------------------------------------------

/// A TCP connection to the service that sends nothing.
pub fn idle_conn(port: u16) -> TcpStream {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    s
}

/// What arrived on a connection until EOF (or reset) or `timeout`.
#[derive(Debug)]
pub struct Received {
    pub bytes: Vec<u8>,
    /// The server closed (EOF or reset) within the timeout.
    pub closed: bool,
}

impl Received {
    /// The status code of an HTTP response at the start, if any.
    pub fn status(&self) -> Option<u16> {
        let mut hdrs = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut hdrs);
        match resp.parse(&self.bytes) {
            Ok(httparse::Status::Complete(_)) => resp.code,
            _ => None,
        }
    }

    /// The body of an HTTP response at the start (everything after the head).
    pub fn body(&self) -> String {
        let at = self
            .bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(self.bytes.len(), |i| i + 4);
        String::from_utf8_lossy(&self.bytes[at..]).into_owned()
    }
}

/// Reads whatever the server sends on `s` until it closes or `timeout`.
pub fn read_to_eof(s: &mut TcpStream, timeout: Duration) -> Received {
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => {
                return Received {
                    bytes,
                    closed: true,
                }
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                return Received {
                    bytes,
                    closed: true,
                }
            }
        }
    }
    Received {
        bytes,
        closed: false,
    }
}

/// True if nothing (no byte, no EOF) arrives on `s` within `wait`: the
/// service holds the connection open and silent.
pub fn is_silent(s: &mut TcpStream, wait: Duration) -> bool {
    let r = read_to_eof(s, wait);
    r.bytes.is_empty() && !r.closed
}

/// `GET /version` with `Connection: close`: the service, not the client,
/// ends the connection, so it is gone from the service before this returns.
pub fn version_status(port: u16) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.write_all(b"GET /version HTTP/1.1\r\nHost: pfx\r\nConnection: close\r\n\r\n")
        .ok()?;
    let r = read_to_eof(&mut s, Duration::from_secs(5));
    if r.closed {
        r.status()
    } else {
        None
    }
}

/// Whether `path` is an executable file (for optional tools like setcap).
pub fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
