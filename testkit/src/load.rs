//! Helpers for the robustness tests: scratch directories, raw idle
//! connections, and a synthetic capture program whose
//! numbered packets are checked as they stream in (so a 100 MiB stream is
//! never held in memory). Every wait here is bounded.

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

// ---- a synthetic capture program and its checker --------------------------

/// Link type of the synthetic packets: LINKTYPE_USER0 (147), reserved for
/// private use, so nothing tries to decode them as real traffic.
pub const SYNTH_LINKTYPE: u16 = 147;
/// The comment the synthetic SHB carries before the service edits it.
pub const SYNTH_COMMENT: &str = "synthetic capture for the robustness tests";
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const EPB: u32 = 6;
/// EPB fixed fields before the packet data: interface id, two timestamp
/// words, captured and original length.
const EPB_FIXED: usize = 20;
/// Block type and two length words around each block's body.
const BLOCK_OVERHEAD: usize = 12;

/// Writes a python3 script that ignores its arguments and writes, as fast
/// as the pipe takes it, a little-endian pcapng stream: an SHB with
/// [`SYNTH_COMMENT`], one IDB, then `packets` EPBs of `payload` bytes whose
/// payload starts and ends with the packet's sequence number (u64 LE). It
/// gives up after `max_secs` and exits 0 when done.
pub fn synthetic_capture_program(
    dir: &ScratchDir,
    packets: u64,
    payload: usize,
    max_secs: u64,
) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    assert!(payload % 4 == 0 && payload >= 16);
    let script = format!(
        r#"#!/usr/bin/python3
import os, struct, sys, time
PACKETS = {packets}
PAYLOAD = {payload}
DEADLINE = time.monotonic() + {max_secs}
def block(btype, body):
    n = 12 + len(body)
    return struct.pack('<II', btype, n) + body + struct.pack('<I', n)
def opt(code, value):
    return struct.pack('<HH', code, len(value)) + value + b'\0' * (-len(value) % 4)
def write(b):
    view = memoryview(b)
    while len(view):
        view = view[os.write(1, view):]
try:
    shb = block(0x0A0D0D0A, struct.pack('<IHHq', 0x1A2B3C4D, 1, 0, -1)
                + opt(1, b'{comment}') + opt(0, b''))
    idb = block(1, struct.pack('<HHI', {linktype}, 0, 0) + opt(2, b'synth0') + opt(0, b''))
    write(shb + idb)
    epb = block(6, struct.pack('<IIIII', 0, 0, 0, PAYLOAD, PAYLOAD) + bytes(PAYLOAD))
    size = len(epb)
    first = 8 + 20
    last = first + PAYLOAD - 8
    BATCH = 128
    buf = bytearray(epb * BATCH)
    seq = 0
    while seq < PACKETS and time.monotonic() < DEADLINE:
        n = min(BATCH, PACKETS - seq)
        for i in range(n):
            struct.pack_into('<Q', buf, i * size + first, seq + i)
            struct.pack_into('<Q', buf, i * size + last, seq + i)
        write(buf[:n * size])
        seq += n
except BrokenPipeError:
    pass
os._exit(0)
"#,
        comment = SYNTH_COMMENT,
        linktype = SYNTH_LINKTYPE,
    );
    let path = dir.join("synthetic-capture");
    std::fs::write(&path, script).expect("write synthetic capture program");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("chmod synthetic capture program");
    path
}

/// The size of one synthetic EPB with `payload` bytes of data.
pub fn synthetic_epb_len(payload: usize) -> usize {
    BLOCK_OVERHEAD + EPB_FIXED + payload
}

/// Checks a synthetic stream as it arrives, holding at most one unfinished
/// block: first an SHB (kept for inspection), then an IDB, then EPBs
/// numbered 0, 1, 2, ... with the number at both ends of their payload.
/// The first problem is kept and stops the checking.
#[derive(Debug, Default)]
pub struct SeqChecker {
    pending: Vec<u8>,
    pub shb_comments: Option<Vec<String>>,
    pub interfaces: usize,
    /// The next sequence number expected; also the count of good packets.
    pub next_seq: u64,
    pub bytes: u64,
    pub problem: Option<String>,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl SeqChecker {
    pub fn feed(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        if self.problem.is_some() {
            return;
        }
        self.pending.extend_from_slice(data);
        let mut at = 0;
        while self.pending.len() - at >= 8 {
            let total = le32(&self.pending, at + 4) as usize;
            if total < BLOCK_OVERHEAD || total % 4 != 0 {
                self.problem = Some(format!("block of bad length {total}"));
                return;
            }
            if self.pending.len() - at < total {
                break;
            }
            let block = self.pending[at..at + total].to_vec();
            at += total;
            if let Err(e) = self.block(&block) {
                self.problem = Some(e);
                return;
            }
        }
        self.pending.drain(..at);
    }

    fn block(&mut self, b: &[u8]) -> Result<(), String> {
        let btype = le32(b, 0);
        let total = b.len();
        if le32(b, total - 4) as usize != total {
            return Err(format!("block {btype:#x}: trailing length differs"));
        }
        match (btype, self.shb_comments.is_some(), self.interfaces) {
            (SHB, false, 0) => {
                if le32(b, 8) != BYTE_ORDER_MAGIC {
                    return Err("first SHB is not little-endian".into());
                }
                self.shb_comments = Some(comments(&b[24..total - 4]));
                Ok(())
            }
            (IDB, true, 0) => {
                self.interfaces = 1;
                Ok(())
            }
            (EPB, true, 1) => {
                let caplen = le32(b, 20) as usize;
                if caplen < 16 || EPB_FIXED + caplen + BLOCK_OVERHEAD > total {
                    return Err(format!("EPB {} has caplen {caplen}", self.next_seq));
                }
                let data = &b[8 + EPB_FIXED..8 + EPB_FIXED + caplen];
                let (head, tail) = (le64(data, 0), le64(data, caplen - 8));
                if head != self.next_seq || tail != self.next_seq {
                    return Err(format!(
                        "expected packet {}, got one numbered {head} (tail {tail})",
                        self.next_seq
                    ));
                }
                self.next_seq += 1;
                Ok(())
            }
            _ => Err(format!(
                "unexpected block {btype:#x} after {} packets",
                self.next_seq
            )),
        }
    }

    /// Bytes received that do not (yet) make a complete block.
    pub fn unfinished(&self) -> usize {
        self.pending.len()
    }
}

/// The comment options (code 1) of little-endian SHB options.
fn comments(mut opts: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while opts.len() >= 4 {
        let code = u16::from_le_bytes([opts[0], opts[1]]);
        let len = u16::from_le_bytes([opts[2], opts[3]]) as usize;
        if code == 0 || 4 + len > opts.len() {
            break;
        }
        if code == 1 {
            out.push(String::from_utf8_lossy(&opts[4..4 + len]).into_owned());
        }
        opts = &opts[((4 + len).div_ceil(4) * 4).min(opts.len())..];
    }
    out
}

/// Whether `path` is an executable file (for optional tools like setcap).
pub fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
