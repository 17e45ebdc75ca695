//! Helpers shared by the fuzz targets: turning the first bytes of an input
//! into read sizes (so the fuzzer chooses how the network or a pipe splits a
//! stream), and independent checkers for what the service writes (HTTP
//! responses, websocket frames, pcapng blocks).
//!
//! The checkers are written from the specifications, not from the code under
//! test, so that a fuzz target compares two readings of the same rules. They
//! panic with a message on any violation: that is how a fuzz target reports.

/// Read sizes chosen by the fuzzer, cycled over a stream.
///
/// Input layout: one byte `n` (taken modulo [`MAX_SIZES`] + 1), then `n` size
/// bytes, then the stream. A size byte below 0x80 is that many bytes; from
/// 0x80 on it is `(b & 0x7f) * 64`, so a handful of bytes can describe both
/// byte-by-byte trickles and reads of several KiB. No sizes means one read.
pub struct Chunker<'a> {
    sizes: &'a [u8],
    next: usize,
    /// Smallest read: 1 for sockets and pipes (a 0-byte read is EOF), 0
    /// where an empty feed is a legal call worth exercising.
    min: usize,
}

/// Most read sizes one input can give; they repeat after that.
pub const MAX_SIZES: u8 = 31;

/// Splits `data` into (chunker, stream); see [`Chunker`].
pub fn split_input(data: &[u8], min: usize) -> (Chunker<'_>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (Chunker::whole(), data);
    };
    let n = usize::from(n % (MAX_SIZES + 1)).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    (
        Chunker {
            sizes,
            next: 0,
            min,
        },
        stream,
    )
}

impl<'a> Chunker<'a> {
    /// Everything in one read.
    pub fn whole() -> Chunker<'static> {
        Chunker {
            sizes: &[],
            next: 0,
            min: 1,
        }
    }

    fn size(&mut self) -> usize {
        if self.sizes.is_empty() {
            return usize::MAX;
        }
        let b = self.sizes[self.next % self.sizes.len()];
        self.next += 1;
        let n = if b < 0x80 {
            usize::from(b)
        } else {
            usize::from(b & 0x7f) * 64
        };
        n.max(self.min)
    }

    /// The stream cut into reads. Ends after the last byte; an empty stream
    /// gives no read at all.
    pub fn split<'s>(&mut self, mut stream: &'s [u8]) -> Vec<&'s [u8]> {
        let mut out = Vec::new();
        // A zero-size read makes no progress; bound them so that a fuzz
        // input of all-zero sizes still ends.
        let mut empty_budget = 64;
        while !stream.is_empty() {
            let mut n = self.size().min(stream.len());
            if n == 0 {
                if empty_budget == 0 {
                    n = 1;
                } else {
                    empty_budget -= 1;
                }
            }
            let (chunk, rest) = stream.split_at(n);
            out.push(chunk);
            stream = rest;
        }
        out
    }
}

/// Cross-checks the two readers of the discovery service's answers, which
/// share `packetflix::proto::http1`: the discovery proxy (`proxy::response_head` on
/// each head, interim ones passed over as it passes them on, then the shared
/// framer scanning the body) and the discovery client
/// (`discovery::ResponseParser`, decoding). Where the proxy accepts the bytes
/// as an answer to a GET and the client does not refuse them (it refuses
/// more: see `http1::Role`), both end the response at the same byte, or
/// neither within `bytes`. Panics otherwise.
pub fn proxy_and_client_agree(bytes: &[u8]) {
    use packetflix::proto::discovery::ResponseParser;
    use packetflix::proto::http1::{self, BodyFramer, HeadParser, Role};
    use packetflix::proto::proxy::{response_head, Framing};

    // Where the proxy finds the end of the response, if within `bytes`.
    let mut at = 0;
    let end = loop {
        let h = match response_head(&bytes[at..], false, true, true) {
            Ok(Some(h)) if h.body == Framing::Interim => {
                at += h.head_len;
                continue;
            }
            Ok(Some(h)) if h.body == Framing::Tunnel => return,
            Ok(Some(h)) => h,
            Ok(None) => break None,
            Err(_) => return,
        };
        // A Transfer-Encoding field listing nothing: the roles read it
        // differently by design.
        let head = HeadParser::new(Role::Forward, 128)
            .parse(&bytes[at..], false)
            .expect("the proxy read this head")
            .expect("complete");
        let empty_coding = head.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("transfer-encoding") && http1::list_items(v).next().is_none()
        });
        if empty_coding {
            return;
        }
        let start = at + h.head_len;
        let mut body = BodyFramer::new(h.body);
        match body.scan(&bytes[start..]) {
            Ok(n) if body.is_done() => break Some(start + n),
            Ok(n) => {
                assert_eq!(n, bytes.len() - start, "bytes left over, the body goes on");
                break None;
            }
            Err(_) => return,
        }
    };
    let client = |n: usize| ResponseParser::new(usize::MAX).feed(&bytes[..n]);
    match (end, client(bytes.len())) {
        (_, Err(_)) => {}
        (None, Ok(None)) => {}
        (Some(end), Ok(Some(whole))) => {
            assert_eq!(
                client(end),
                Ok(Some(whole)),
                "the client needs more than the proxy"
            );
            assert_eq!(
                client(end - 1),
                Ok(None),
                "the client ends before the proxy"
            );
        }
        (end, got) => panic!("the proxy ends the response at {end:?}, the client reads {got:?}"),
    }
}

/// Checks one complete response as the service writes it: a valid HTTP/1.1
/// head, a known status, a `Content-Length` that matches the body (zero body
/// bytes for a `HEAD` request and for 101). Returns the status.
pub fn check_response(bytes: &[u8], head_request: bool) -> u16 {
    assert!(
        bytes.starts_with(b"HTTP/1.1 "),
        "response does not start with HTTP/1.1: {:?}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(64)])
    );
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "response head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(bytes)
        ),
    };
    let status = resp.code.unwrap_or(0);
    assert!((100..600).contains(&status), "status {status} out of range");
    assert_eq!(resp.version, Some(1));
    let reason = resp.reason.unwrap_or("");
    assert!(
        !reason.is_empty() && reason != "Unknown",
        "status {status} sent without a proper reason phrase"
    );
    let body = &bytes[head_len..];
    let length = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("bad Content-Length {:?}", h.value))
        });
    if status == 101 {
        assert!(
            body.is_empty(),
            "101 followed by bytes in the same response"
        );
        assert!(length.is_none(), "101 with a Content-Length");
    } else {
        let length = length.unwrap_or_else(|| panic!("status {status} without Content-Length"));
        if head_request {
            assert!(body.is_empty(), "HEAD response with a body");
        } else {
            assert_eq!(length, body.len(), "Content-Length does not match the body");
        }
    }
    status
}

/// A server-to-client frame parsed from the start of `bytes`.
#[derive(Debug)]
pub struct ServerFrame<'a> {
    pub opcode: u8,
    pub payload: &'a [u8],
}

/// Parses one unmasked, final server frame (RFC 6455 5.2) and returns it
/// with the rest of the bytes. Panics if the frame is not one a server may
/// send: masked, fragmented, reserved bits, or a control frame over 125
/// bytes.
pub fn server_frame(bytes: &[u8]) -> (ServerFrame<'_>, &[u8]) {
    assert!(bytes.len() >= 2, "truncated frame header {bytes:02x?}");
    let (b0, b1) = (bytes[0], bytes[1]);
    assert_eq!(b0 & 0x80, 0x80, "server frame not final");
    assert_eq!(b0 & 0x70, 0, "server frame with reserved bits");
    assert_eq!(b1 & 0x80, 0, "server frame masked");
    let opcode = b0 & 0x0f;
    let (len, at) = match b1 & 0x7f {
        126 => (
            usize::from(u16::from_be_bytes([bytes[2], bytes[3]])),
            4usize,
        ),
        127 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(&bytes[2..10]);
            (
                usize::try_from(u64::from_be_bytes(l)).unwrap_or(usize::MAX),
                10,
            )
        }
        n => (usize::from(n), 2),
    };
    if opcode >= 8 {
        assert!(at == 2 && len <= 125, "control frame of {len} bytes");
    }
    assert!(
        bytes.len() >= at + len,
        "frame of {len} bytes cut short: {bytes:02x?}"
    );
    (
        ServerFrame {
            opcode,
            payload: &bytes[at..at + len],
        },
        &bytes[at + len..],
    )
}

/// RFC 6455 7.4: codes an endpoint may put in a close frame: the RFC's own
/// (1000 to 1003, 1007 to 1011), the registered 1012 and 1013, and the
/// ranges for libraries and applications. 1014, registered later, is left
/// out as tungstenite leaves it out; the service sends 1011 instead.
pub fn close_code_sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// Checks a close frame as the service sends it: one frame, opcode 8, a
/// sendable code, a UTF-8 reason of at most 123 bytes. Returns (code, reason).
pub fn check_close_frame(bytes: &[u8]) -> (u16, String) {
    let (frame, rest) = server_frame(bytes);
    assert!(rest.is_empty(), "bytes after the close frame");
    assert_eq!(frame.opcode, 8, "not a close frame");
    assert!(frame.payload.len() >= 2, "close frame without a code");
    assert!(frame.payload.len() <= 125);
    let code = u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
    assert!(
        close_code_sendable(code),
        "close code {code} must not be sent"
    );
    let reason = std::str::from_utf8(&frame.payload[2..])
        .unwrap_or_else(|_| panic!("close reason not UTF-8: {:02x?}", frame.payload));
    assert!(reason.len() <= 123);
    (code, reason.to_string())
}

/// Checks that `replies` is a sequence of pong frames answering pings.
pub fn check_pongs(mut replies: &[u8]) {
    while !replies.is_empty() {
        let (frame, rest) = server_frame(replies);
        assert_eq!(frame.opcode, 0xA, "reply that is not a pong");
        replies = rest;
    }
}

/// Checks what [`packetflix::proto::ws::shape_reason`] made of `reason`: at most
/// 123 bytes, a prefix of the input, and no shorter than it must be (cut at
/// the last character boundary that fits).
pub fn check_shaped(reason: &str, shaped: &str) {
    assert!(
        shaped.len() <= 123,
        "shaped reason of {} bytes",
        shaped.len()
    );
    assert!(reason.starts_with(shaped), "shaped reason is not a prefix");
    if reason.len() <= 123 {
        assert_eq!(reason, shaped, "a reason that fits was cut");
    } else {
        // A UTF-8 character is at most 4 bytes long.
        assert!(shaped.len() > 123 - 4, "reason cut more than needed");
    }
}

pub mod pcapng {
    //! An independent reading of pcapng blocks (pcapng spec, sections 3 and
    //! 4.1), for checking what the SHB editor writes.

    pub const SHB_TYPE: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];
    /// The editor's bound on an SHB it will hold back and edit (pcapng.rs,
    /// `MAX_SHB_LEN`); bigger ones pass through unedited.
    pub const EDITABLE_SHB_MAX: usize = 1 << 20;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Order {
        Big,
        Little,
    }

    impl Order {
        pub fn u16(self, b: &[u8]) -> u16 {
            let a = [b[0], b[1]];
            match self {
                Order::Big => u16::from_be_bytes(a),
                Order::Little => u16::from_le_bytes(a),
            }
        }
        pub fn u32(self, b: &[u8]) -> u32 {
            let a = [b[0], b[1], b[2], b[3]];
            match self {
                Order::Big => u32::from_be_bytes(a),
                Order::Little => u32::from_le_bytes(a),
            }
        }
        pub fn put_u16(self, v: u16) -> [u8; 2] {
            match self {
                Order::Big => v.to_be_bytes(),
                Order::Little => v.to_le_bytes(),
            }
        }
        pub fn put_u32(self, v: u32) -> [u8; 4] {
            match self {
                Order::Big => v.to_be_bytes(),
                Order::Little => v.to_le_bytes(),
            }
        }
    }

    /// One option: code and unpadded value.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Opt<'a> {
        pub code: u16,
        pub value: &'a [u8],
    }

    /// A complete, well-formed SHB at the start of `bytes`.
    #[derive(Debug)]
    pub struct Shb<'a> {
        pub order: Order,
        pub len: usize,
        pub options: Vec<Opt<'a>>,
        /// Whether an end-of-options option closed the list.
        pub terminated: bool,
    }

    /// The SHB at the start of `bytes`, if one is complete and well formed:
    /// known byte order, total length a multiple of 4, at least 28 and no
    /// more than `max_len`, trailer equal to the header's length, options
    /// that exactly fill the options area (an end-of-options option, if
    /// present, must be empty and last).
    pub fn shb(bytes: &[u8], max_len: usize) -> Option<Shb<'_>> {
        if bytes.len() < 12 || bytes[..4] != SHB_TYPE {
            return None;
        }
        let order = match bytes[8..12] {
            [0x1A, 0x2B, 0x3C, 0x4D] => Order::Big,
            [0x4D, 0x3C, 0x2B, 0x1A] => Order::Little,
            _ => return None,
        };
        let len = usize::try_from(order.u32(&bytes[4..8])).ok()?;
        if len < 28 || !len.is_multiple_of(4) || len > max_len || bytes.len() < len {
            return None;
        }
        if order.u32(&bytes[len - 4..len]) as usize != len {
            return None;
        }
        let mut area = &bytes[24..len - 4];
        let mut options = Vec::new();
        let mut terminated = false;
        while !area.is_empty() {
            if area.len() < 4 {
                return None;
            }
            let code = order.u16(&area[0..2]);
            let vlen = usize::from(order.u16(&area[2..4]));
            if code == 0 {
                if vlen != 0 || area.len() != 4 {
                    return None;
                }
                terminated = true;
                break;
            }
            let padded = vlen.div_ceil(4) * 4;
            if area.len() < 4 + padded {
                return None;
            }
            options.push(Opt {
                code,
                value: &area[4..4 + vlen],
            });
            area = &area[4 + padded..];
        }
        Some(Shb {
            order,
            len,
            options,
            terminated,
        })
    }

    /// Builds an SHB around `options` (code, value) in byte order `order`,
    /// with version 1.0 and an unknown section length.
    pub fn build_shb(order: Order, options: &[(u16, &[u8])], endofopt: bool) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&order.put_u32(0x1A2B_3C4D));
        body.extend_from_slice(&order.put_u16(1));
        body.extend_from_slice(&order.put_u16(0));
        body.extend_from_slice(&[0xFF; 8]);
        for (code, value) in options {
            body.extend_from_slice(&order.put_u16(*code));
            body.extend_from_slice(&order.put_u16(value.len() as u16));
            body.extend_from_slice(value);
            body.resize(body.len().div_ceil(4) * 4, 0);
        }
        if endofopt {
            body.extend_from_slice(&[0; 4]);
        }
        let len = (body.len() + 12) as u32;
        let mut out = SHB_TYPE.to_vec();
        out.extend_from_slice(&order.put_u32(len));
        out.extend_from_slice(&body);
        out.extend_from_slice(&order.put_u32(len));
        out
    }
}

/// The kernel's acceptance rules for a classic BPF program
/// (`bpf_check_classic`, net/core/filter.c), written from the kernel's
/// text, not from `packetflix::proto::bpf`: at most 4096 instructions, only
/// opcodes the kernel knows, every jump inside the program, a return last,
/// scratch memory words in range, constant divisors not zero, constant
/// shifts below 32, loads at negative offsets only of known ancillary
/// fields. Panics naming the first violation. Instructions are (code, jt,
/// jf, k).
pub fn check_kernel_accepts(prog: &[(u16, u8, u8, u32)]) {
    const KNOWN: [u16; 43] = [
        0x04, 0x0c, 0x14, 0x1c, 0x24, 0x2c, 0x34, 0x3c, 0x94, 0x9c, 0x54, 0x5c, 0x44, 0x4c, 0xa4,
        0xac, 0x64, 0x6c, 0x74, 0x7c, 0x84, // ALU
        0x20, 0x28, 0x30, 0x40, 0x48, 0x50, 0x80, 0x00, 0x60, // LD
        0x81, 0xb1, 0x01, 0x61, // LDX
        0x02, 0x03, // ST, STX
        0x07, 0x87, // TAX, TXA
        0x06, 0x16, // RET K, RET A
        0x05, 0x15, 0x1d, // JA, JEQ
    ];
    const MORE_JUMPS: [u16; 6] = [0x25, 0x2d, 0x35, 0x3d, 0x45, 0x4d];
    let len = prog.len();
    assert!((1..=4096).contains(&len), "program of {len} instructions");
    for (pc, &(code, jt, jf, k)) in prog.iter().enumerate() {
        assert!(
            KNOWN.contains(&code) || MORE_JUMPS.contains(&code),
            "{pc}: unknown opcode {code:#x}"
        );
        let rest = len - pc - 1;
        match code {
            0x05 => assert!((k as usize) < rest, "{pc}: ja out of range"),
            0x15 | 0x1d | 0x25 | 0x2d | 0x35 | 0x3d | 0x45 | 0x4d => {
                assert!(
                    usize::from(jt) < rest && usize::from(jf) < rest,
                    "{pc}: jump out of range"
                )
            }
            0x34 | 0x94 => assert!(k != 0, "{pc}: division by zero"),
            0x64 | 0x74 => assert!(k < 32, "{pc}: shift {k}"),
            0x60 | 0x61 | 0x02 | 0x03 => assert!(k < 16, "{pc}: scratch word {k}"),
            0x20 | 0x28 | 0x30 if k >= 0x8000_0000 => {
                let off = k.wrapping_sub(0xFFFF_F000);
                assert!(
                    k >= 0xFFFF_F000 && off < 64 && off % 4 == 0,
                    "{pc}: load at {k:#x}"
                );
            }
            _ => {}
        }
    }
    assert!(matches!(prog[len - 1].0, 0x06 | 0x16), "no return last");
}
