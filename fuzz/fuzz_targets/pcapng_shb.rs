//! The pcapng SHB editor, fed a capture program's output in reads of
//! fuzzer-chosen sizes.
//!
//! Input layout: one mode byte, the read sizes (see `fuzz_support::Chunker`),
//! then the rest. Mode bit 0 set: the rest is `[doc_len, document..., body]`
//! and the stream is a well-formed SHB built around `body` (taken as options
//! when bit 1 is set, in little-endian order when bit 2 is set, with an
//! end-of-options option when bit 3 is set), followed by whatever `body`
//! left; so most inputs exercise the editing path. Mode bit 0 clear: the
//! stream is the raw rest, with a fixed document.
//!
//! Invariants: no panic; the concatenated output equals the edited SHB
//! followed by the input after the SHB, byte for byte, in any chunking; an
//! input that does not start with a well-formed SHB comes out unchanged; when
//! the input started with a well-formed SHB, the output starts with a
//! well-formed SHB of the same byte order and version whose first option is a
//! comment holding `TARGET_MARKER` at a line start exactly once, ending with
//! our document, with every other option kept in order; the output is a
//! valid pcapng prefix whenever the input was.

#![no_main]

use fuzz_support::pcapng::{build_shb, shb, Order, EDITABLE_SHB_MAX};
use fuzz_support::split_input;
use libfuzzer_sys::fuzz_target;
use packetflix::proto::pcapng::{target_document, ShbEditor, TargetInfo, TARGET_MARKER};

/// Option codes (pcapng spec, section 3.5).
const OPT_COMMENT: u16 = 1;

fn edit(document: &str, reads: &[&[u8]]) -> Vec<u8> {
    let mut editor = ShbEditor::new(document.to_string());
    let mut out = Vec::new();
    for r in reads {
        let was_passthrough = editor.is_passthrough();
        let got = editor.feed(r);
        if was_passthrough {
            // Once the SHB is dealt with, the input itself goes out.
            assert!(
                matches!(got, std::borrow::Cow::Borrowed(b) if b.as_ptr() == r.as_ptr() && b.len() == r.len()),
                "pass-through copied or changed a chunk"
            );
        }
        out.extend_from_slice(&got);
    }
    out.extend_from_slice(&editor.finish());
    assert!(editor.is_passthrough());
    assert!(editor.finish().is_empty());
    out
}

/// Line starts in `text` where `marker` begins.
fn marker_lines(text: &[u8], marker: &[u8]) -> usize {
    (0..text.len())
        .filter(|&at| at == 0 || text[at - 1] == b'\n')
        .filter(|&at| text[at..].starts_with(marker))
        .count()
}

/// Whether `bytes` is a pcapng prefix: blocks whose lengths chain, each
/// complete one closed by its own length, the last one possibly cut short.
fn pcapng_prefix(bytes: &[u8], order: Order) -> bool {
    let mut at = 0;
    while bytes.len() - at >= 8 {
        let len = order.u32(&bytes[at + 4..at + 8]) as usize;
        if len < 12 || !len.is_multiple_of(4) {
            return false;
        }
        if bytes.len() - at < len {
            return true;
        }
        if order.u32(&bytes[at + len - 4..at + len]) as usize != len {
            return false;
        }
        at += len;
    }
    true
}

fn check(stream: &[u8], reads: &[&[u8]], document: &str) {
    let out = edit(document, reads);
    let one_read = edit(document, &[stream]);
    assert_eq!(out, one_read, "output depends on how the input was split");

    let Some(old) = shb(stream, EDITABLE_SHB_MAX) else {
        assert_eq!(out, stream, "input without a well-formed SHB was changed");
        return;
    };
    let new = shb(&out, usize::MAX).expect("edited SHB is not well formed");
    assert_eq!(new.order, old.order);
    assert_eq!(out[8..16], stream[8..16], "magic or version changed");
    assert_eq!(
        &out[new.len..],
        &stream[old.len..],
        "bytes after the SHB changed"
    );
    assert!(new.terminated, "edited SHB without end-of-options");

    let (first, others) = new
        .options
        .split_first()
        .expect("edited SHB without options");
    assert_eq!(first.code, OPT_COMMENT, "first option is not a comment");
    let comment = first.value;
    assert_eq!(
        marker_lines(comment, TARGET_MARKER.as_bytes()),
        1,
        "marker not exactly once in {:?}",
        String::from_utf8_lossy(comment)
    );
    assert!(
        comment.ends_with(document.as_bytes()) || document.len() + 4 > usize::from(u16::MAX),
        "comment does not end with the document"
    );
    // Every option but the first comment is kept, in order.
    let mut first_comment_seen = false;
    let kept: Vec<_> = old
        .options
        .iter()
        .filter(|o| {
            if o.code == OPT_COMMENT && !first_comment_seen {
                first_comment_seen = true;
                return false;
            }
            true
        })
        .collect();
    assert_eq!(kept.len(), others.len(), "options lost or added");
    for (a, b) in kept.iter().zip(others) {
        assert_eq!(*a, b);
    }
    if pcapng_prefix(stream, old.order) {
        assert!(pcapng_prefix(&out, new.order), "output is no pcapng prefix");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (mut chunker, rest) = split_input(rest, 0);
    if mode & 1 == 0 {
        let doc = target_document(&TargetInfo {
            container_name: "fuzz",
            container_type: "docker",
            node_name: "node",
            ..TargetInfo::default()
        });
        return check(rest, &chunker.split(rest), &doc);
    }
    let Some((&doc_len, rest)) = rest.split_first() else {
        return;
    };
    let (name, body) = rest.split_at(usize::from(doc_len).min(rest.len()));
    let doc = target_document(&TargetInfo {
        container_name: &String::from_utf8_lossy(name),
        container_type: "docker",
        node_name: "node",
        cluster_uid: (mode & 0x10 != 0).then_some("uid"),
        capture_filter: (mode & 0x20 != 0).then_some("tcp"),
        no_promiscuous: mode & 0x40 != 0,
    });
    let order = if mode & 4 != 0 {
        Order::Little
    } else {
        Order::Big
    };
    // The body as options: [code lo, len, value...] until it runs out; the
    // bytes left over follow the SHB.
    let mut options: Vec<(u16, &[u8])> = Vec::new();
    let mut tail = body;
    if mode & 2 != 0 {
        while tail.len() >= 2 && options.len() < 8 {
            let code = u16::from(tail[0] % 4);
            let len = usize::from(tail[1]).min(tail.len() - 2);
            if code == 0 {
                tail = &tail[2..];
                break;
            }
            options.push((code, &tail[2..2 + len]));
            tail = &tail[2 + len..];
        }
    }
    let mut stream = build_shb(order, &options, mode & 8 != 0);
    stream.extend_from_slice(tail);
    check(&stream, &chunker.split(&stream), &doc);
});
