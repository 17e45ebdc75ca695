//! A websocket capture client on raw TCP, for tests that must control every
//! byte (send malformed frames, never read, read only the close): the
//! upgrade written by hand, server frames walked by the kit's own frame
//! reader ([`crate::wsframes`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::wsframes::{Control, FrameReader};

/// A websocket upgrade's headers besides path and Host (RFC 6455's example
/// key).
pub const UPGRADE_HEADERS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
/// Longest upgrade response head read.
const MAX_RESPONSE_HEAD: usize = 4096;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `GET /capture?<query>` with a websocket upgrade and reads up to the
/// end of the 101 head; panics on anything else.
pub fn raw_capture(port: u16, query: &str) -> TcpStream {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    let req = format!("GET /capture?{query} HTTP/1.1\r\nHost: pfx\r\n{UPGRADE_HEADERS}\r\n");
    s.write_all(req.as_bytes()).expect("send upgrade");
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .expect("timeout");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(
            head.len() < MAX_RESPONSE_HEAD,
            "no end of the upgrade response head"
        );
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            other => panic!("upgrade response cut: {other:?} after {head:?}"),
        }
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// Reads server frames until a close frame: its code and reason. `None` if
/// the connection ends, the frames are not what a server may send, the close
/// carries no code, or `timeout` passes first.
pub fn read_close(s: &mut TcpStream, timeout: Duration) -> Option<(u16, String)> {
    let deadline = Instant::now() + timeout;
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let mut frames = FrameReader::new();
    let mut controls = Vec::new();
    let mut chunk = [0u8; 65536];
    while Instant::now() < deadline {
        let n = match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return None,
        };
        frames.feed(&chunk[..n], &mut |_| {}, &mut controls).ok()?;
        for c in controls.drain(..) {
            if let Control::Close(code, reason) = c {
                return code.map(|code| (code, reason));
            }
        }
    }
    None
}
