//! The websocket frame reader alone, fed client bytes in reads of
//! fuzzer-chosen sizes, plus the close-frame writer on fuzzer-chosen codes
//! and reasons.
//!
//! Input layout: two bytes of close code, one byte giving the length of a
//! close reason, the reason, then the read sizes (see
//! `fuzz_support::Chunker`) and the client's bytes.
//!
//! Invariants: no panic; the reader never buffers more than 125 bytes; its
//! replies are well-formed pongs; the event and the replies do not depend on
//! the chunking; input after the event is ignored; a reported close carries a
//! code a peer may send and a reason of at most 123 bytes; `close_frame`
//! always writes a valid close frame with at most 125 payload bytes and a
//! reason with its control characters escaped, and `shape_reason` cuts
//! only what it must, at a character boundary.

#![no_main]

use fuzz_support::{
    check_close_frame, check_pongs, check_shaped, close_code_sendable, split_input,
};
use libfuzzer_sys::fuzz_target;
use packetflix::proto::logtext::escape_controls;
use packetflix::proto::ws::{self, FrameReader, Inbound};

/// Control frames carry at most 125 bytes of payload (RFC 6455 5.5).
const MAX_BUFFERED: usize = 125;

fn read(reads: &[&[u8]]) -> (Option<Inbound>, Vec<u8>) {
    let mut r = FrameReader::new();
    let mut replies = Vec::new();
    let mut event = None;
    for chunk in reads {
        let got = r.feed(chunk, &mut replies);
        assert!(
            r.buffered() <= MAX_BUFFERED,
            "{} bytes buffered",
            r.buffered()
        );
        if event.is_some() {
            assert_eq!(got, None, "a second event");
        } else {
            event = got;
        }
        assert_eq!(r.is_done(), event.is_some());
    }
    (event, replies)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let code = u16::from_be_bytes([data[0], data[1]]);
    let rest = &data[3..];
    let (reason, rest) = rest.split_at(usize::from(data[2]).min(rest.len()));
    let reason = String::from_utf8_lossy(reason);
    let shaped = ws::shape_reason(&reason);
    check_shaped(&reason, shaped);
    // What goes on the wire is the reason with its control characters
    // escaped (a client shows it to a person), then shaped.
    let escaped = escape_controls(&reason);
    let (sent_code, sent_reason) = check_close_frame(&ws::close_frame(code, &reason));
    assert_eq!(sent_reason, ws::shape_reason(&escaped));
    assert!(
        !sent_reason.chars().any(char::is_control),
        "a control character in the sent reason {sent_reason:?}"
    );
    assert_eq!(sent_code, ws::wire_code(code));
    if close_code_sendable(code) {
        assert_eq!(sent_code, code);
    }

    let (mut chunker, stream) = split_input(rest, 0);
    // RFC 6455 5.2: a 64-bit length with its top bit set is a protocol
    // error, whatever follows.
    let masked = stream.get(1).is_some_and(|b| b & 0x80 != 0);
    let header = 10 + if masked { 4 } else { 0 };
    if stream.len() >= header && stream[1] & 0x7f == 127 && stream[2] & 0x80 != 0 {
        let (event, _) = read(&[stream]);
        assert!(
            matches!(
                event,
                Some(Inbound::Violation {
                    code: ws::PROTOCOL_ERROR,
                    ..
                })
            ),
            "top-bit length gave {event:?}"
        );
    }
    let (event, replies) = read(&chunker.split(stream));
    check_pongs(&replies);
    let (event1, replies1) = read(&[stream]);
    assert_eq!(event, event1, "event depends on the reads");
    assert_eq!(replies, replies1, "replies depend on the reads");
    match &event {
        Some(Inbound::Close { code, reason }) => {
            assert!(reason.len() <= 123);
            if let Some(c) = code {
                assert!(close_code_sendable(*c), "accepted close code {c}");
            }
            // Echoing the client's close back is always a valid frame.
            check_close_frame(&ws::close_frame(code.unwrap_or(ws::NORMAL), reason));
        }
        Some(Inbound::Violation { code, reason }) => {
            assert!(*code == ws::PROTOCOL_ERROR || *code == ws::INVALID_PAYLOAD);
            check_close_frame(&ws::close_frame(*code, reason));
        }
        None => {}
    }
});
