//! The server side of an established RFC 6455 connection, sans-IO.
//!
//! Inbound: [`FrameReader`] takes the bytes a client sent and reports the one
//! thing this service cares about: the connection is ending (a close frame, or
//! a protocol violation). Pings are answered, data messages are skipped
//! without being buffered, so a client cannot make us hold its messages.
//! Outbound: frame headers for binary messages and close frames.
//!
//! Frame headers are parsed and formatted by tungstenite's frame codec; the
//! connection logic is ours because the stream's hot path writes payloads
//! straight from the capture pipe's buffer (no per-message copy) and because
//! the close handshake must wait for the capture program to be reaped, which
//! a full websocket object would answer on its own. No I/O here.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// RFC 6455 7.4.1 close codes this service sends.
pub const NORMAL: u16 = 1000;
pub const GOING_AWAY: u16 = 1001;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const INVALID_PAYLOAD: u16 = 1007;
pub const POLICY_VIOLATION: u16 = 1008;
pub const INTERNAL_ERROR: u16 = 1011;
pub const TRY_AGAIN_LATER: u16 = 1013;

/// A close frame's payload is at most 125 bytes (RFC 6455 5.5), two of which
/// carry the code.
pub const MAX_REASON: usize = 123;
/// Control frames carry at most 125 bytes of payload (RFC 6455 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;
/// The longest header a frame can have: 2 + 8 length bytes + 4 mask bytes.
const MAX_HEADER: usize = 14;
/// Largest server frame header: 2 bytes + 8 length bytes, no mask.
pub const MAX_SERVER_HEADER: usize = 10;

/// Why the inbound side stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// The client sent a close frame (code absent if the frame was empty).
    Close { code: Option<u16>, reason: String },
    /// The client broke the protocol: close with this code and reason.
    Violation { code: u16, reason: &'static str },
}

#[derive(Clone, Debug)]
enum State {
    /// Collecting a frame header (in `buf`).
    Header,
    /// Skipping a data frame's payload.
    Skip(u64),
    /// Collecting a control frame's payload (in `buf`).
    Control {
        op: Control,
        mask: [u8; 4],
        len: usize,
    },
    /// A close or violation was reported; later input is ignored.
    Done,
}

/// Reads client frames incrementally, at most [`MAX_HEADER`] or
/// [`MAX_CONTROL_PAYLOAD`] bytes buffered at any time.
#[derive(Clone, Debug)]
pub struct FrameReader {
    state: State,
    buf: Vec<u8>,
    /// Inside a fragmented data message (a continuation frame is expected).
    fragmented: bool,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameReader {
    pub fn new() -> Self {
        FrameReader {
            state: State::Header,
            buf: Vec::new(),
            fragmented: false,
        }
    }

    /// Whether a close or a violation has been reported.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Bytes held back for an incomplete frame header or control payload:
    /// never more than the 125 bytes a control frame may carry, whatever the
    /// client sends (the fuzz targets check this after every feed).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Consumes client bytes. Pongs for pings are appended to `replies`. Returns
    /// `Some` once the connection is ending; input after that is ignored.
    pub fn feed(&mut self, mut data: &[u8], replies: &mut Vec<u8>) -> Option<Inbound> {
        while !data.is_empty() {
            match self.state {
                State::Done => return None,
                State::Header => {
                    let take = (MAX_HEADER - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..take]);
                    let mut cur = Cursor::new(&self.buf[..]);
                    let parsed = match FrameHeader::parse(&mut cur) {
                        Ok(p) => p,
                        Err(_) => return self.violate(PROTOCOL_ERROR, "reserved opcode"),
                    };
                    let Some((header, len)) = parsed else {
                        data = &data[take..];
                        continue;
                    };
                    // Hand back what belongs to the payload.
                    let used = cur.position() as usize;
                    let surplus = self.buf.len() - used;
                    data = &data[take - surplus..];
                    self.buf.clear();
                    if let Some(v) = self.start_frame(&header, len, replies) {
                        return Some(v);
                    }
                }
                State::Skip(left) => {
                    let n = (left.min(data.len() as u64)) as usize;
                    data = &data[n..];
                    self.state = if left == n as u64 {
                        State::Header
                    } else {
                        State::Skip(left - n as u64)
                    };
                }
                State::Control { op, mask, len } => {
                    let n = (len - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.buf.len() == len {
                        for (i, b) in self.buf.iter_mut().enumerate() {
                            *b ^= mask[i % 4];
                        }
                        let payload = std::mem::take(&mut self.buf);
                        self.state = State::Header;
                        if let Some(v) = self.control(op, &payload, replies) {
                            return Some(v);
                        }
                    }
                }
            }
        }
        None
    }

    fn start_frame(&mut self, h: &FrameHeader, len: u64, replies: &mut Vec<u8>) -> Option<Inbound> {
        // RFC 6455 5.2: the most significant bit of a 64-bit length must
        // be 0.
        if len > i64::MAX as u64 {
            return self.violate(PROTOCOL_ERROR, "frame length with its top bit set");
        }
        if h.rsv1 || h.rsv2 || h.rsv3 {
            return self.violate(PROTOCOL_ERROR, "reserved bits set without an extension");
        }
        let Some(mask) = h.mask else {
            return self.violate(PROTOCOL_ERROR, "client frames must be masked");
        };
        match h.opcode {
            OpCode::Control(op) => {
                if !h.is_final || len > MAX_CONTROL_PAYLOAD as u64 {
                    return self.violate(PROTOCOL_ERROR, "fragmented or oversized control frame");
                }
                self.state = State::Control {
                    op,
                    mask,
                    len: len as usize,
                };
                if len == 0 {
                    self.state = State::Header;
                    return self.control(op, &[], replies);
                }
            }
            OpCode::Data(d) => {
                let continuation = matches!(d, Data::Continue);
                if continuation != self.fragmented {
                    return self.violate(PROTOCOL_ERROR, "unexpected continuation state");
                }
                self.fragmented = !h.is_final;
                // Data messages are not part of this service's protocol:
                // skipped, never buffered.
                self.state = if len == 0 {
                    State::Header
                } else {
                    State::Skip(len)
                };
            }
        }
        None
    }

    fn control(&mut self, op: Control, payload: &[u8], replies: &mut Vec<u8>) -> Option<Inbound> {
        match op {
            Control::Ping => {
                write_header(OpCode::Control(Control::Pong), payload.len(), replies);
                replies.extend_from_slice(payload);
                None
            }
            Control::Pong => None,
            Control::Close => {
                let result = match payload.len() {
                    0 => Inbound::Close {
                        code: None,
                        reason: String::new(),
                    },
                    1 => return self.violate(PROTOCOL_ERROR, "close frame with a 1-byte payload"),
                    _ => {
                        let code = u16::from_be_bytes([payload[0], payload[1]]);
                        if !CloseCode::from(code).is_allowed() {
                            return self.violate(PROTOCOL_ERROR, "close code not allowed");
                        }
                        match std::str::from_utf8(&payload[2..]) {
                            Ok(r) => Inbound::Close {
                                code: Some(code),
                                reason: r.to_string(),
                            },
                            Err(_) => {
                                return self.violate(INVALID_PAYLOAD, "close reason not UTF-8")
                            }
                        }
                    }
                };
                self.state = State::Done;
                Some(result)
            }
            Control::Reserved(_) => self.violate(PROTOCOL_ERROR, "reserved opcode"),
        }
    }

    fn violate(&mut self, code: u16, reason: &'static str) -> Option<Inbound> {
        self.state = State::Done;
        self.buf = Vec::new();
        Some(Inbound::Violation { code, reason })
    }
}

fn write_header(opcode: OpCode, len: usize, out: &mut Vec<u8>) {
    let h = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    // Writing into a Vec cannot fail.
    let _ = h.format(len as u64, out);
}

/// The header of an unmasked, final binary frame of `len` payload bytes,
/// written into `out`; returns its length. This is on the stream's hot path,
/// so it is formatted by hand into a stack buffer (RFC 6455 5.2).
#[inline]
pub fn binary_header(len: usize, out: &mut [u8; MAX_SERVER_HEADER]) -> usize {
    out[0] = 0x82; // FIN + binary
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// `reason` cut to at most [`MAX_REASON`] bytes at a character boundary.
pub fn shape_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// The code to put on the wire: one RFC 6455 allows in a close frame. Codes
/// that must never be sent (1005, 1006, 1015, unassigned) become 1011.
pub fn wire_code(code: u16) -> u16 {
    if CloseCode::from(code).is_allowed() {
        code
    } else {
        INTERNAL_ERROR
    }
}

/// A complete close frame with a valid code and a reason cut to fit. Control
/// characters in the reason (from a capture program's line, a target's
/// name) are written as visible escapes, as in the log: a client shows the
/// reason to a person, and raw escape sequences would act on the terminal.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let escaped = crate::proto::logtext::escape_controls(reason);
    let reason = shape_reason(&escaped);
    let mut out = Vec::with_capacity(4 + 2 + reason.len());
    write_header(OpCode::Control(Control::Close), 2 + reason.len(), &mut out);
    out.extend_from_slice(&wire_code(code).to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame, as RFC 6455 5.3 requires clients to send.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn close_payload(code: u16, reason: &str) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        p
    }

    #[test]
    fn close_reasons_carry_no_control_bytes_to_the_client() {
        let f = close_frame(1011, "a: \u{1b}]0;owned\u{7}\r\nb: ended");
        let reason = std::str::from_utf8(&f[4..]).unwrap();
        assert_eq!(reason, "a: \\u{1b}]0;owned\\u{7}\\r\\nb: ended");
        assert!(f.len() <= 4 + MAX_REASON);
    }

    #[test]
    fn close_frame_reports_code_and_reason() {
        let mut r = FrameReader::new();
        let mut replies = Vec::new();
        let got = r.feed(
            &client_frame(0x88, &close_payload(1000, "bye")),
            &mut replies,
        );
        assert_eq!(
            got,
            Some(Inbound::Close {
                code: Some(1000),
                reason: "bye".into()
            })
        );
        assert!(r.is_done());
        assert!(replies.is_empty());
    }

    #[test]
    fn length_with_top_bit_set_is_a_protocol_error() {
        for len in [1u64 << 63, u64::MAX] {
            let mut bytes = vec![0x82, 0x80 | 127];
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.extend_from_slice(&[1, 2, 3, 4]);
            let got = FrameReader::new().feed(&bytes, &mut Vec::new());
            assert!(
                matches!(
                    got,
                    Some(Inbound::Violation {
                        code: PROTOCOL_ERROR,
                        ..
                    })
                ),
                "{len:#x}: {got:?}"
            );
        }
        // The largest legal length is skipped, not refused.
        let mut bytes = vec![0x82, 0x80 | 127];
        bytes.extend_from_slice(&(i64::MAX as u64).to_be_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(FrameReader::new().feed(&bytes, &mut Vec::new()), None);
    }

    #[test]
    fn empty_close_frame_has_no_code() {
        let mut r = FrameReader::new();
        let got = r.feed(&client_frame(0x88, &[]), &mut Vec::new());
        assert_eq!(
            got,
            Some(Inbound::Close {
                code: None,
                reason: String::new()
            })
        );
    }

    #[test]
    fn frames_split_at_every_byte_still_parse() {
        let mut bytes = client_frame(0x82, &[7u8; 300]);
        bytes.extend(client_frame(0x89, b"hi"));
        bytes.extend(client_frame(0x88, &close_payload(1001, "gone")));
        for cut in 0..bytes.len() {
            let mut r = FrameReader::new();
            let mut replies = Vec::new();
            let a = r.feed(&bytes[..cut], &mut replies);
            let b = r.feed(&bytes[cut..], &mut replies);
            let got = a.or(b);
            assert_eq!(
                got,
                Some(Inbound::Close {
                    code: Some(1001),
                    reason: "gone".into()
                }),
                "cut {cut}"
            );
            assert_eq!(replies, vec![0x8a, 2, b'h', b'i'], "cut {cut}");
        }
    }

    #[test]
    fn one_byte_at_a_time_works() {
        let bytes = client_frame(0x88, &close_payload(1000, ""));
        let mut r = FrameReader::new();
        let mut got = None;
        for b in &bytes {
            got = got.or(r.feed(std::slice::from_ref(b), &mut Vec::new()));
        }
        assert!(matches!(
            got,
            Some(Inbound::Close {
                code: Some(1000),
                ..
            })
        ));
    }

    #[test]
    fn ping_gets_a_pong_with_the_same_payload() {
        let mut r = FrameReader::new();
        let mut replies = Vec::new();
        assert_eq!(r.feed(&client_frame(0x89, b"abc"), &mut replies), None);
        assert_eq!(replies, vec![0x8a, 3, b'a', b'b', b'c']);
        // An empty ping is answered too.
        replies.clear();
        assert_eq!(r.feed(&client_frame(0x89, b""), &mut replies), None);
        assert_eq!(replies, vec![0x8a, 0]);
    }

    #[test]
    fn data_messages_are_skipped_without_buffering() {
        let mut r = FrameReader::new();
        let big = vec![1u8; 200_000];
        assert_eq!(r.feed(&client_frame(0x82, &big), &mut Vec::new()), None);
        assert!(r.buf.capacity() <= MAX_HEADER.max(MAX_CONTROL_PAYLOAD));
        assert_eq!(r.feed(&client_frame(0x81, b"text"), &mut Vec::new()), None);
        // Fragmented message with a ping in the middle.
        let mut bytes = client_frame(0x02, b"part1");
        bytes.extend(client_frame(0x89, b"p"));
        bytes.extend(client_frame(0x80, b"part2"));
        let mut replies = Vec::new();
        assert_eq!(r.feed(&bytes, &mut replies), None);
        assert_eq!(replies, vec![0x8a, 1, b'p']);
    }

    #[test]
    fn unmasked_client_frame_is_a_protocol_error() {
        let mut r = FrameReader::new();
        let got = r.feed(&[0x82, 0x01, 0x00], &mut Vec::new());
        assert!(matches!(
            got,
            Some(Inbound::Violation {
                code: PROTOCOL_ERROR,
                ..
            })
        ));
        // Further input is ignored.
        assert_eq!(r.feed(&client_frame(0x88, &[]), &mut Vec::new()), None);
    }

    #[test]
    fn protocol_violations_are_reported_with_1002_or_1007() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (client_frame(0xC2, b"x"), PROTOCOL_ERROR),      // RSV1
            (client_frame(0x83, b"x"), PROTOCOL_ERROR),      // reserved data opcode
            (client_frame(0x8B, b"x"), PROTOCOL_ERROR),      // reserved control opcode
            (client_frame(0x09, b"x"), PROTOCOL_ERROR),      // fragmented ping
            (client_frame(0x89, &[0; 126]), PROTOCOL_ERROR), // oversized ping
            (client_frame(0x80, b"x"), PROTOCOL_ERROR),      // continuation without start
            (client_frame(0x88, &[3]), PROTOCOL_ERROR),      // 1-byte close
            (client_frame(0x88, &close_payload(1006, "")), PROTOCOL_ERROR),
            (client_frame(0x88, &close_payload(999, "")), PROTOCOL_ERROR),
            (client_frame(0x88, &[0x03, 0xe8, 0xff]), INVALID_PAYLOAD),
        ];
        for (bytes, code) in cases {
            let got = FrameReader::new().feed(&bytes, &mut Vec::new());
            assert!(
                matches!(got, Some(Inbound::Violation { code: c, .. }) if c == code),
                "{bytes:02x?} -> {got:?}"
            );
        }
        // A new message inside a fragmented one.
        let mut bytes = client_frame(0x02, b"a");
        bytes.extend(client_frame(0x82, b"b"));
        assert!(matches!(
            FrameReader::new().feed(&bytes, &mut Vec::new()),
            Some(Inbound::Violation {
                code: PROTOCOL_ERROR,
                ..
            })
        ));
    }

    #[test]
    fn binary_header_uses_the_shortest_length_form() {
        let mut h = [0u8; MAX_SERVER_HEADER];
        assert_eq!(binary_header(5, &mut h), 2);
        assert_eq!(&h[..2], &[0x82, 5]);
        assert_eq!(binary_header(125, &mut h), 2);
        assert_eq!(binary_header(126, &mut h), 4);
        assert_eq!(&h[..4], &[0x82, 126, 0, 126]);
        assert_eq!(binary_header(65535, &mut h), 4);
        assert_eq!(binary_header(65536, &mut h), 10);
        assert_eq!(&h[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        // Same bytes as tungstenite's own formatter.
        for len in [0usize, 1, 125, 126, 1000, 65535, 65536, 1 << 20] {
            let mut theirs = Vec::new();
            write_header(OpCode::Data(Data::Binary), len, &mut theirs);
            let n = binary_header(len, &mut h);
            assert_eq!(&h[..n], &theirs[..], "len {len}");
        }
    }

    #[test]
    fn close_reason_is_cut_at_123_bytes_on_a_char_boundary() {
        let long = "ä".repeat(100); // 200 bytes
        let cut = shape_reason(&long);
        assert!(cut.len() <= MAX_REASON);
        assert_eq!(cut.len(), 122);
        let f = close_frame(NORMAL, &long);
        assert_eq!(f[0], 0x88);
        assert_eq!(f[1] as usize, 2 + 122);
        assert!(f.len() <= 2 + 125);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }

    #[test]
    fn codes_never_sent_are_replaced_by_1011() {
        assert_eq!(wire_code(1006), INTERNAL_ERROR);
        assert_eq!(wire_code(1005), INTERNAL_ERROR);
        assert_eq!(wire_code(1015), INTERNAL_ERROR);
        assert_eq!(wire_code(0), INTERNAL_ERROR);
        for ok in [1000, 1001, 1008, 1011, 1013, 4000] {
            assert_eq!(wire_code(ok), ok);
        }
        let f = close_frame(1006, "x");
        assert_eq!(u16::from_be_bytes([f[2], f[3]]), INTERNAL_ERROR);
    }
}
