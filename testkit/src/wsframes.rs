//! A lean websocket client, sans-IO: the upgrade request, the check of the
//! 101 answer, and a frame reader that hands message payloads straight to the
//! stream check without copying or reassembling them. The bench client
//! reads with it, and so does [`crate::rawws`], for tests that handle the
//! socket themselves.
//!
//! It exists instead of tungstenite's reader because the benchmark client
//! must do the same work per byte on the websocket path as on the raw TCP
//! path (one pass over the bytes, no per-message allocation); otherwise the
//! ratio would measure the client. It only reads frames a server may send
//! (unmasked) and only writes the two a reading client needs (pong, close).

use tungstenite::handshake::derive_accept_key;

/// Largest response head we wait for before calling the answer broken.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Most headers we parse in a 101 answer.
const MAX_RESPONSE_HEADERS: usize = 32;
/// RFC 6455 5.5: control frames carry at most 125 bytes.
const MAX_CONTROL_PAYLOAD: usize = 125;

/// The upgrade request for `path` (path and query), with extra headers, and
/// the key to check the answer against.
pub fn upgrade_request(host: &str, path: &str, headers: &[(String, String)]) -> (Vec<u8>, String) {
    let key = tungstenite::handshake::client::generate_key();
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in headers {
        r.push_str(k);
        r.push_str(": ");
        r.push_str(v);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    (r.into_bytes(), key)
}

/// What the response head said, once it is complete.
#[derive(Debug, PartialEq)]
pub enum Upgrade {
    /// More bytes are needed.
    Partial,
    /// 101 with the right accept key; the head was this many bytes long.
    Switched(usize),
}

/// Checks the server's answer to [`upgrade_request`].
pub fn check_upgrade(head: &[u8], key: &str) -> Result<Upgrade, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(head) {
        Ok(httparse::Status::Partial) if head.len() > MAX_RESPONSE_HEAD => {
            return Err("response head too long".into())
        }
        Ok(httparse::Status::Partial) => return Ok(Upgrade::Partial),
        Ok(httparse::Status::Complete(n)) => n,
        Err(e) => return Err(format!("unparsable response: {e}")),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        let body = String::from_utf8_lossy(&head[n..]);
        return Err(format!(
            "HTTP {code} {} instead of 101: {}",
            resp.reason.unwrap_or(""),
            body.trim()
        ));
    }
    let want = derive_accept_key(key.as_bytes());
    let accept = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value);
    if accept != Some(want.as_bytes()) {
        return Err("101 without the right Sec-WebSocket-Accept".into());
    }
    Ok(Upgrade::Switched(n))
}

/// A control frame the caller must act on.
#[derive(Debug, PartialEq)]
pub enum Control {
    Ping(Vec<u8>),
    Close(Option<u16>, String),
}

#[derive(Debug, Default)]
enum State {
    /// Collecting a frame header (2 to 10 bytes, servers never mask).
    #[default]
    Header,
    /// Passing `left` bytes of a data frame to the sink.
    Data { left: u64 },
    /// Collecting `left` bytes of a control frame with `opcode`.
    Control { opcode: u8, left: usize },
}

/// Incremental reader of server-to-client frames.
#[derive(Debug, Default)]
pub struct FrameReader {
    state: State,
    hdr: [u8; 10],
    hdr_len: usize,
    ctl: Vec<u8>,
    /// Inside a fragmented message: continuation frames are expected.
    fragmented: bool,
    messages: u64,
    closed: bool,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Complete data messages seen so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Feeds bytes from the socket; data payload goes to `sink` as it comes,
    /// control frames are pushed to `controls`. After a close frame the rest
    /// is ignored.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        sink: &mut dyn FnMut(&[u8]),
        controls: &mut Vec<Control>,
    ) -> Result<(), String> {
        while !data.is_empty() && !self.closed {
            match self.state {
                State::Data { left } => {
                    let take = (left.min(data.len() as u64)) as usize;
                    sink(&data[..take]);
                    data = &data[take..];
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::Header
                    } else {
                        State::Data { left }
                    };
                }
                State::Control { opcode, left } => {
                    let take = left.min(data.len());
                    self.ctl.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if take == left {
                        self.state = State::Header;
                        self.control(opcode, controls)?;
                    } else {
                        self.state = State::Control {
                            opcode,
                            left: left - take,
                        };
                    }
                }
                State::Header => {
                    // Two bytes tell how long the rest of the header is.
                    while self.hdr_len < 2 && !data.is_empty() {
                        self.hdr[self.hdr_len] = data[0];
                        self.hdr_len += 1;
                        data = &data[1..];
                    }
                    if self.hdr_len < 2 {
                        break;
                    }
                    let need = match self.hdr[1] & 0x7F {
                        126 => 4,
                        127 => 10,
                        _ => 2,
                    };
                    let take = (need - self.hdr_len).min(data.len());
                    self.hdr[self.hdr_len..self.hdr_len + take].copy_from_slice(&data[..take]);
                    self.hdr_len += take;
                    data = &data[take..];
                    if self.hdr_len == need {
                        self.hdr_len = 0;
                        self.start_frame(controls)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn start_frame(&mut self, controls: &mut Vec<Control>) -> Result<(), String> {
        let h = self.hdr;
        let fin = h[0] & 0x80 != 0;
        if h[0] & 0x70 != 0 {
            return Err("frame with reserved bits set (no extension was negotiated)".into());
        }
        if h[1] & 0x80 != 0 {
            return Err("server sent a masked frame".into());
        }
        let len = match h[1] & 0x7F {
            126 => u16::from_be_bytes([h[2], h[3]]) as u64,
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            n => n as u64,
        };
        let opcode = h[0] & 0x0F;
        match opcode {
            0 | 2 => {
                if (opcode == 0) != self.fragmented {
                    return Err(format!(
                        "opcode {opcode} out of order in a fragmented message"
                    ));
                }
                self.fragmented = !fin;
                if fin {
                    self.messages += 1;
                }
                self.state = if len == 0 {
                    State::Header
                } else {
                    State::Data { left: len }
                };
            }
            1 => return Err("text message in a capture stream (must be binary)".into()),
            8..=10 => {
                if !fin || len as usize > MAX_CONTROL_PAYLOAD {
                    return Err(format!(
                        "malformed control frame (opcode {opcode}, {len} bytes)"
                    ));
                }
                self.ctl.clear();
                if len == 0 {
                    self.control(opcode, controls)?;
                } else {
                    self.state = State::Control {
                        opcode,
                        left: len as usize,
                    };
                }
            }
            _ => return Err(format!("unknown opcode {opcode}")),
        }
        Ok(())
    }

    fn control(&mut self, opcode: u8, controls: &mut Vec<Control>) -> Result<(), String> {
        let p = std::mem::take(&mut self.ctl);
        match opcode {
            8 => {
                self.closed = true;
                if p.len() < 2 {
                    controls.push(Control::Close(None, String::new()));
                    return Ok(());
                }
                let code = u16::from_be_bytes([p[0], p[1]]);
                let reason = String::from_utf8(p[2..].to_vec())
                    .map_err(|_| "close reason is not UTF-8".to_string())?;
                controls.push(Control::Close(Some(code), reason));
            }
            9 => controls.push(Control::Ping(p)),
            // An unsolicited pong is allowed and asks for nothing.
            _ => {}
        }
        Ok(())
    }
}

/// A masked client frame (RFC 6455 5.3: clients must mask); the mask does not
/// protect anything on loopback, so it is fixed.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let len = payload.len().min(MAX_CONTROL_PAYLOAD);
    let mut f = vec![0x80 | opcode, 0x80 | len as u8];
    f.extend_from_slice(&MASK);
    f.extend(
        payload[..len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ MASK[i % 4]),
    );
    f
}
