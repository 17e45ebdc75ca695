//! Editing the first Section Header Block (SHB) of a pcapng stream, sans-IO.
//!
//! The capture program writes a pcapng stream; before it reaches the client,
//! the first SHB gets a YAML document describing the capture target added to
//! its first comment option (clients look for [`TARGET_MARKER`] to find and
//! replace it). [`ShbEditor`] is fed the chunks as they are read and hands
//! back what to send: it holds bytes back only until the first SHB is
//! complete, then passes everything through borrowed and untouched.
//!
//! This module never does I/O, never panics on any input, and never loses,
//! duplicates or reorders a byte: whatever it cannot make sense of (not an
//! SHB, implausible lengths, malformed options) is passed through unedited.
//! Only the first SHB of the stream is ever edited.

use std::borrow::Cow;

/// The exact marker clients search for to find (and replace) our document.
pub const TARGET_MARKER: &str = "---\n# capture target information\n";

/// What the YAML document says about the capture target.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TargetInfo<'a> {
    pub container_name: &'a str,
    pub container_type: &'a str,
    pub node_name: &'a str,
    pub cluster_uid: Option<&'a str>,
    pub capture_filter: Option<&'a str>,
    pub no_promiscuous: bool,
}

/// Builds the YAML document describing the capture target.
///
/// Every string is a YAML double-quoted scalar with everything that could end
/// the scalar or the line escaped, so no name can inject keys or documents.
pub fn target_document(info: &TargetInfo) -> String {
    let mut doc = String::with_capacity(TARGET_MARKER.len() + 128);
    doc.push_str(TARGET_MARKER);
    push_string_key(&mut doc, "container-name", info.container_name);
    push_string_key(&mut doc, "container-type", info.container_type);
    push_string_key(&mut doc, "node-name", info.node_name);
    if let Some(uid) = info.cluster_uid {
        doc.push_str("cluster:\n");
        push_string_key(&mut doc, "  uid", uid);
    }
    if let Some(filter) = info.capture_filter {
        push_string_key(&mut doc, "capture-filter", filter);
    }
    if info.no_promiscuous {
        doc.push_str("no-promiscuous-mode: true\n");
    }
    doc
}

/// Builds the YAML document for a capture of several targets merged into
/// one section (see `docs/multi-target.md`): the same marker, then one
/// entry per target under `targets:` with the keys of a single target's
/// document plus `interface-prefix` (what its interface names start with),
/// then the capture-wide `capture-filter` and `no-promiscuous-mode`. The
/// per-target `capture_filter` and `no_promiscuous` of `targets` are not
/// used. Escaping is the same as in [`target_document`].
pub fn targets_document(
    targets: &[(&str, TargetInfo)],
    capture_filter: Option<&str>,
    no_promiscuous: bool,
) -> String {
    let mut doc = String::with_capacity(TARGET_MARKER.len() + 160 * targets.len().max(1));
    doc.push_str(TARGET_MARKER);
    doc.push_str("targets:\n");
    for (prefix, info) in targets {
        push_string_key(&mut doc, "  - container-name", info.container_name);
        push_string_key(&mut doc, "    container-type", info.container_type);
        push_string_key(&mut doc, "    node-name", info.node_name);
        if let Some(uid) = info.cluster_uid {
            doc.push_str("    cluster:\n");
            push_string_key(&mut doc, "      uid", uid);
        }
        push_string_key(&mut doc, "    interface-prefix", prefix);
    }
    if let Some(filter) = capture_filter {
        push_string_key(&mut doc, "capture-filter", filter);
    }
    if no_promiscuous {
        doc.push_str("no-promiscuous-mode: true\n");
    }
    doc
}

/// Appends one more `key: "value"` line to a document built by
/// [`target_document`] or [`targets_document`], escaped the same way.
pub fn push_document_key(doc: &mut String, key: &str, value: &str) {
    push_string_key(doc, key, value);
}

fn push_string_key(doc: &mut String, key: &str, value: &str) {
    doc.push_str(key);
    doc.push_str(": ");
    push_double_quoted(doc, value);
    doc.push('\n');
}

/// Appends `value` as a YAML double-quoted scalar (YAML 1.2, section 5.7):
/// the quote and backslash are escaped, and so is every character YAML does
/// not count as printable or that some parsers treat as a line break.
fn push_double_quoted(doc: &mut String, value: &str) {
    doc.push('"');
    for c in value.chars() {
        match c {
            '"' => doc.push_str("\\\""),
            '\\' => doc.push_str("\\\\"),
            '\n' => doc.push_str("\\n"),
            '\r' => doc.push_str("\\r"),
            '\t' => doc.push_str("\\t"),
            '\0' => doc.push_str("\\0"),
            '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{feff}'
            | '\u{fffe}'
            | '\u{ffff}' => {
                doc.push_str(&format!("\\u{:04X}", u32::from(c)));
            }
            _ => doc.push(c),
        }
    }
    doc.push('"');
}

/// Block type of an SHB (pcapng spec, section 4.1). It reads the same in both
/// byte orders, which is why it can be recognised before the order is known.
const SHB_BLOCK_TYPE: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];

/// The SHB's byte-order magic (pcapng spec, section 4.1) as written by a
/// big-endian writer; a little-endian writer's bytes are the reverse.
const BYTE_ORDER_MAGIC_BE: [u8; 4] = [0x1A, 0x2B, 0x3C, 0x4D];
const BYTE_ORDER_MAGIC_LE: [u8; 4] = [0x4D, 0x3C, 0x2B, 0x1A];

/// Offsets in the SHB's fixed part (pcapng spec, section 4.1): block type,
/// total length, byte-order magic, major and minor version, section length;
/// the options follow.
const TOTAL_LENGTH_AT: usize = 4;
const MAGIC_AT: usize = 8;
const SECTION_LENGTH_AT: usize = 16;
const OPTIONS_AT: usize = 24;
/// The trailing copy of the total length that closes every block.
const TRAILER_LEN: usize = 4;
/// An SHB without options: the fixed part plus the trailing length.
const MIN_SHB_LEN: usize = OPTIONS_AT + TRAILER_LEN;
/// Blocks are padded to 32 bits (pcapng spec, section 3.1).
const ALIGNMENT: usize = 4;
/// Our own bound on how much we hold back waiting for the SHB to complete.
/// dumpcap's SHBs are a few hundred bytes; anything near this is not a real
/// SHB and is passed through rather than buffered.
const MAX_SHB_LEN: usize = 1 << 20;

/// Option codes (pcapng spec, section 3.5): end of options, and comment.
const OPT_ENDOFOPT: u16 = 0;
const OPT_COMMENT: u16 = 1;
/// Option code and option length, each 16 bits.
const OPTION_HEADER_LEN: usize = 4;
/// Option values carry a 16-bit length.
const MAX_OPTION_VALUE_LEN: usize = u16::MAX as usize;

/// A section's byte order (pcapng spec 4.1: every field of a section is in
/// the order its SHB's byte-order magic shows). The one reader and writer
/// of multi-byte fields for every pcapng user of the project: the SHB
/// editor, the merger and the client's decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Big,
    Little,
}

impl Order {
    /// The order of this machine (a writer that emits native blocks).
    pub fn host() -> Order {
        if cfg!(target_endian = "big") {
            Order::Big
        } else {
            Order::Little
        }
    }

    /// The order an SHB declares with its byte-order magic (bytes 8..12),
    /// if it is one.
    pub fn of_section(shb: &[u8]) -> Option<Order> {
        match array4(shb, MAGIC_AT)? {
            BYTE_ORDER_MAGIC_BE => Some(Order::Big),
            BYTE_ORDER_MAGIC_LE => Some(Order::Little),
            _ => None,
        }
    }

    /// The u16 at `at`; the caller checks the bounds.
    pub fn u16(self, b: &[u8], at: usize) -> u16 {
        let b = [b[at], b[at + 1]];
        match self {
            Order::Big => u16::from_be_bytes(b),
            Order::Little => u16::from_le_bytes(b),
        }
    }

    /// The u32 at `at`; the caller checks the bounds.
    pub fn u32(self, b: &[u8], at: usize) -> u32 {
        let b = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        match self {
            Order::Big => u32::from_be_bytes(b),
            Order::Little => u32::from_le_bytes(b),
        }
    }

    /// The u16 at `at`, if `b` holds one there.
    pub fn get_u16(self, b: &[u8], at: usize) -> Option<u16> {
        array2(b, at).map(|_| self.u16(b, at))
    }

    /// The u32 at `at`, if `b` holds one there.
    pub fn get_u32(self, b: &[u8], at: usize) -> Option<u32> {
        array4(b, at).map(|_| self.u32(b, at))
    }

    pub fn u16_bytes(self, v: u16) -> [u8; 2] {
        match self {
            Order::Big => v.to_be_bytes(),
            Order::Little => v.to_le_bytes(),
        }
    }

    pub fn u32_bytes(self, v: u32) -> [u8; 4] {
        match self {
            Order::Big => v.to_be_bytes(),
            Order::Little => v.to_le_bytes(),
        }
    }

    pub fn put_u16(self, out: &mut Vec<u8>, v: u16) {
        out.extend_from_slice(&self.u16_bytes(v));
    }

    pub fn put_u32(self, out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&self.u32_bytes(v));
    }
}

fn array2(b: &[u8], at: usize) -> Option<[u8; 2]> {
    b.get(at..at.checked_add(2)?)?.try_into().ok()
}

fn array4(b: &[u8], at: usize) -> Option<[u8; 4]> {
    b.get(at..at.checked_add(4)?)?.try_into().ok()
}

fn padded(len: usize) -> usize {
    len.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// What the bytes held so far say about the start of the stream.
#[derive(Debug, PartialEq)]
enum Probe {
    /// Could still be an SHB; wait for more bytes.
    NeedMore,
    /// Not an SHB we may edit: pass everything through.
    NotShb,
    /// A complete SHB of `len` bytes starts the data.
    Complete { order: Order, len: usize },
}

fn probe(data: &[u8]) -> Probe {
    let seen = data.len().min(SHB_BLOCK_TYPE.len());
    if data[..seen] != SHB_BLOCK_TYPE[..seen] {
        return Probe::NotShb;
    }
    if data.len() < MAGIC_AT + 4 {
        return Probe::NeedMore;
    }
    let Some(order) = Order::of_section(data) else {
        return Probe::NotShb;
    };
    let Ok(len) = usize::try_from(order.u32(data, TOTAL_LENGTH_AT)) else {
        return Probe::NotShb;
    };
    if !(MIN_SHB_LEN..=MAX_SHB_LEN).contains(&len) || len % ALIGNMENT != 0 {
        return Probe::NotShb;
    }
    if data.len() < len {
        Probe::NeedMore
    } else {
        Probe::Complete { order, len }
    }
}

/// The parts of an SHB's options we care about.
struct Options<'a> {
    /// Value of the first comment option, if any.
    comment: Option<&'a [u8]>,
    /// Every other option, header and value as found, without padding
    /// (which is written afresh as zeros).
    others: Vec<&'a [u8]>,
}

/// Splits the options area; `None` if it is malformed in any way.
fn parse_options(mut rest: &[u8], order: Order) -> Option<Options<'_>> {
    let mut options = Options {
        comment: None,
        others: Vec::new(),
    };
    while !rest.is_empty() {
        let code = order.get_u16(rest, 0)?;
        let value_len = usize::from(order.get_u16(rest, 2)?);
        if code == OPT_ENDOFOPT {
            // The end marker has no value and ends the block's options; bytes
            // after it mean we misread the block, so we leave it alone.
            return (value_len == 0 && rest.len() == OPTION_HEADER_LEN).then_some(options);
        }
        let encoded_len = OPTION_HEADER_LEN + padded(value_len);
        if rest.len() < encoded_len {
            return None;
        }
        let unpadded = &rest[..OPTION_HEADER_LEN + value_len];
        if code == OPT_COMMENT && options.comment.is_none() {
            options.comment = Some(&unpadded[OPTION_HEADER_LEN..]);
        } else {
            options.others.push(unpadded);
        }
        rest = &rest[encoded_len..];
    }
    Some(options)
}

/// Finds the marker at the start of the comment or of one of its lines.
fn find_marker(comment: &[u8]) -> Option<usize> {
    let marker = TARGET_MARKER.as_bytes();
    (0..comment.len())
        .filter(|&at| at == 0 || comment[at - 1] == b'\n')
        .find(|&at| comment[at..].starts_with(marker))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The comment without any earlier target document. An old document runs
/// from its marker through the line break before a following YAML document
/// start (`---`), which is kept, or else to the end of the comment. Every
/// one is removed, so that the comment ends up with exactly one marker.
fn without_target_document(comment: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(comment.len());
    // `pos` is always at a line start: 0, or just after the line break that
    // ended a removed document (or the end of the comment).
    let mut pos = 0;
    while let Some(found) = find_marker(&comment[pos..]) {
        let start = pos + found;
        // The marker's own closing line break may already open the next
        // document.
        let body_at = start + TARGET_MARKER.len() - 1;
        let body = &comment[body_at..];
        let end = match find(body, b"\n---\n") {
            Some(at) => body_at + at + 1,
            None if body.ends_with(b"\n---") => comment.len() - 3,
            None => comment.len(),
        };
        out.extend_from_slice(&comment[pos..start]);
        pos = end;
    }
    out.extend_from_slice(&comment[pos..]);
    out
}

/// The new comment text: the old one without an earlier target document,
/// line-terminated, followed by our document; just the document (cut to
/// fit) if that would not fit an option value.
fn edited_comment(old: Option<&[u8]>, document: &str) -> Vec<u8> {
    // Line-terminated before the search: a last line that reads as the
    // marker once terminated is an old document too.
    let mut comment = old
        .map(|c| without_target_document(&line_terminated(c.to_vec())))
        .unwrap_or_default();
    comment = line_terminated(comment);
    if comment.len() + document.len() <= MAX_OPTION_VALUE_LEN {
        comment.extend_from_slice(document.as_bytes());
        return comment;
    }
    let mut cut = document.len().min(MAX_OPTION_VALUE_LEN);
    while !document.is_char_boundary(cut) {
        cut -= 1;
    }
    document.as_bytes()[..cut].to_vec()
}

/// `text` with a line break at its end, unless it is empty or has one.
fn line_terminated(mut text: Vec<u8>) -> Vec<u8> {
    if !text.is_empty() && !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    text
}

fn push_padded(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.resize(out.len() + padded(bytes.len()) - bytes.len(), 0);
}

/// Rebuilds a complete SHB with the target document in its first comment
/// option; `None` if the SHB is malformed and must pass unedited.
fn edit_shb(shb: &[u8], order: Order, document: &str) -> Option<Vec<u8>> {
    let len = shb.len();
    let trailer_at = len.checked_sub(TRAILER_LEN)?;
    if usize::try_from(order.get_u32(shb, trailer_at)?).ok()? != len {
        return None;
    }
    let options = parse_options(shb.get(OPTIONS_AT..trailer_at)?, order)?;
    let comment = edited_comment(options.comment, document);
    let comment_len = u16::try_from(comment.len()).ok()?;

    let others_len: usize = options.others.iter().map(|o| padded(o.len())).sum();
    let new_len =
        MIN_SHB_LEN + OPTION_HEADER_LEN + padded(comment.len()) + others_len + OPTION_HEADER_LEN;
    let new_len_bytes = order.u32_bytes(u32::try_from(new_len).ok()?);

    let mut out = Vec::with_capacity(new_len);
    out.extend_from_slice(&SHB_BLOCK_TYPE);
    out.extend_from_slice(&new_len_bytes);
    out.extend_from_slice(shb.get(MAGIC_AT..SECTION_LENGTH_AT)?); // magic, major, minor
    debug_assert_eq!(out.len(), SECTION_LENGTH_AT);
    // -1 (unknown): a live stream's section has no length known up front,
    // and clients expect what the original service wrote here.
    out.extend_from_slice(&[0xFF; 8]);
    order.put_u16(&mut out, OPT_COMMENT);
    order.put_u16(&mut out, comment_len);
    push_padded(&mut out, &comment);
    for other in &options.others {
        push_padded(&mut out, other);
    }
    order.put_u16(&mut out, OPT_ENDOFOPT);
    order.put_u16(&mut out, 0);
    out.extend_from_slice(&new_len_bytes);
    debug_assert_eq!(out.len(), new_len);
    Some(out)
}

#[derive(Debug)]
enum State {
    /// Waiting for the first SHB to complete.
    Holding { held: Vec<u8>, document: String },
    /// The SHB has been dealt with; everything passes untouched.
    PassThrough,
}

/// Edits the first SHB of a pcapng stream fed to it chunk by chunk.
#[derive(Debug)]
pub struct ShbEditor {
    state: State,
}

impl ShbEditor {
    /// `document` is what goes into the SHB comment, normally
    /// [`target_document`]'s output.
    pub fn new(document: String) -> Self {
        ShbEditor {
            state: State::Holding {
                held: Vec::new(),
                document,
            },
        }
    }

    /// Feeds the next chunk read from the capture program; returns what to
    /// send now, in order. While the first SHB is incomplete, bytes are held
    /// back (returns empty). Once it is complete, returns the edited SHB
    /// followed by any overspill; from then on returns `input` itself.
    #[inline]
    pub fn feed<'a>(&mut self, input: &'a [u8]) -> Cow<'a, [u8]> {
        match self.state {
            State::PassThrough => Cow::Borrowed(input),
            State::Holding { .. } => self.feed_holding(input),
        }
    }

    /// True once the first SHB has been dealt with and every further chunk
    /// passes untouched.
    pub fn is_passthrough(&self) -> bool {
        matches!(self.state, State::PassThrough)
    }

    /// At end of stream: whatever is still held back (an incomplete SHB),
    /// unedited. The editor passes everything through afterwards.
    pub fn finish(&mut self) -> Vec<u8> {
        match std::mem::replace(&mut self.state, State::PassThrough) {
            State::Holding { held, .. } => held,
            State::PassThrough => Vec::new(),
        }
    }

    #[cold]
    fn feed_holding<'a>(&mut self, input: &'a [u8]) -> Cow<'a, [u8]> {
        let State::Holding { held, document } = &mut self.state else {
            return Cow::Borrowed(input);
        };
        // With nothing held yet (the usual case: dumpcap writes its SHB in
        // one go) the input is examined in place, without copying.
        let in_place = held.is_empty();
        if !in_place {
            held.extend_from_slice(input);
        }
        let data: &[u8] = if in_place { input } else { held };
        let out = match probe(data) {
            Probe::NeedMore => {
                if in_place {
                    held.extend_from_slice(input);
                }
                return Cow::Borrowed(&[]);
            }
            Probe::NotShb => None,
            Probe::Complete { order, len } => {
                edit_shb(&data[..len], order, document).map(|mut shb| {
                    shb.extend_from_slice(&data[len..]);
                    Cow::Owned(shb)
                })
            }
        };
        let out = out.unwrap_or_else(|| {
            if in_place {
                Cow::Borrowed(input)
            } else {
                Cow::Owned(std::mem::take(held))
            }
        });
        self.state = State::PassThrough;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SAMPLE_DOC: &str = "---\n# capture target information\ncontainer-name: \"web\"\ncontainer-type: \"docker\"\nnode-name: \"n1\"\n";

    fn sample_info() -> TargetInfo<'static> {
        TargetInfo {
            container_name: "web",
            container_type: "docker",
            node_name: "n1",
            ..TargetInfo::default()
        }
    }

    fn bo(big: bool) -> Order {
        if big {
            Order::Big
        } else {
            Order::Little
        }
    }

    fn u16b(big: bool, v: u16) -> [u8; 2] {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn u32b(big: bool, v: u32) -> [u8; 4] {
        bo(big).u32_bytes(v)
    }

    fn option(big: bool, code: u16, value: &[u8]) -> Vec<u8> {
        let mut o = Vec::new();
        o.extend_from_slice(&u16b(big, code));
        o.extend_from_slice(&u16b(big, value.len() as u16));
        o.extend_from_slice(value);
        o.resize(OPTION_HEADER_LEN + padded(value.len()), 0);
        o
    }

    fn endofopt() -> Vec<u8> {
        vec![0; 4]
    }

    /// Any block: type, lengths, body (padded here).
    fn block(big: bool, block_type: u32, body: &[u8]) -> Vec<u8> {
        let len = (12 + padded(body.len())) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&u32b(big, block_type));
        b.extend_from_slice(&u32b(big, len));
        b.extend_from_slice(body);
        b.resize(8 + padded(body.len()), 0);
        b.extend_from_slice(&u32b(big, len));
        b
    }

    /// An SHB, version 1.0, with a known section length, the given options.
    fn shb(big: bool, options: &[Vec<u8>]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&u32b(big, 0x1A2B_3C4D));
        body.extend_from_slice(&u16b(big, 1));
        body.extend_from_slice(&u16b(big, 0));
        body.extend_from_slice(&1234u64.to_le_bytes());
        for o in options {
            body.extend_from_slice(o);
        }
        block(big, 0x0A0D_0D0A, &body)
    }

    /// Options that dumpcap writes besides a comment: hardware, OS, app.
    fn dumpcap_like_options(big: bool) -> Vec<Vec<u8>> {
        vec![
            option(big, 2, b"x86_64"),
            option(big, 3, b"Linux 6.1"),
            option(big, 4, b"Dumpcap (Wireshark) 4.0.17"),
        ]
    }

    /// Interface Description Block: Ethernet, snaplen 262144.
    fn idb(big: bool) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&u16b(big, 1));
        body.extend_from_slice(&u16b(big, 0));
        body.extend_from_slice(&u32b(big, 262_144));
        body.extend_from_slice(&option(big, 2, b"eth0"));
        body.extend_from_slice(&endofopt());
        block(big, 1, &body)
    }

    /// Enhanced Packet Block on interface 0 carrying `frame`.
    fn epb(big: bool, ts: u64, frame: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&u32b(big, 0));
        body.extend_from_slice(&u32b(big, (ts >> 32) as u32));
        body.extend_from_slice(&u32b(big, ts as u32));
        body.extend_from_slice(&u32b(big, frame.len() as u32));
        body.extend_from_slice(&u32b(big, frame.len() as u32));
        body.extend_from_slice(frame);
        body.resize(20 + padded(frame.len()), 0);
        block(big, 6, &body)
    }

    fn ethernet_frame(n: u8) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x88, 0xB5];
        f.extend_from_slice(&[n; 33]);
        f
    }

    /// A decoded block: type and the whole block's bytes.
    type Block = (u32, Vec<u8>);

    /// Walks a pcapng stream, checking every block's two length fields, the
    /// padding and that the stream ends on a block boundary.
    fn walk_blocks(stream: &[u8]) -> Vec<Block> {
        let mut blocks = Vec::new();
        let mut at = 0;
        let mut big = true;
        while at < stream.len() {
            let first: [u8; 4] = stream[at..at + 4].try_into().unwrap();
            if first == SHB_BLOCK_TYPE {
                big = match array4(stream, at + 8).unwrap() {
                    BYTE_ORDER_MAGIC_BE => true,
                    BYTE_ORDER_MAGIC_LE => false,
                    m => panic!("bad magic {m:?}"),
                };
            }
            let block_type = bo(big).u32(stream, at);
            let len = bo(big).u32(stream, at + 4) as usize;
            assert!(len >= 12 && len % 4 == 0, "bad length {len} at {at}");
            assert!(at + len <= stream.len(), "block at {at} overruns");
            let trailer = bo(big).u32(stream, at + len - 4) as usize;
            assert_eq!(trailer, len, "trailing length differs at {at}");
            blocks.push((block_type, stream[at..at + len].to_vec()));
            at += len;
        }
        blocks
    }

    /// The options of an SHB as (code, value), checking that they end with a
    /// proper opt_endofopt exactly at the block's trailer.
    fn shb_options(shb: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let big = match array4(shb, 8).unwrap() {
            BYTE_ORDER_MAGIC_BE => true,
            BYTE_ORDER_MAGIC_LE => false,
            m => panic!("bad magic {m:?}"),
        };
        let end = shb.len() - 4;
        let mut at = OPTIONS_AT;
        let mut opts = Vec::new();
        loop {
            let code = bo(big).u16(shb, at);
            let len = bo(big).u16(shb, at + 2) as usize;
            if code == 0 {
                assert_eq!(len, 0);
                assert_eq!(at + 4, end, "opt_endofopt is not last");
                return opts;
            }
            opts.push((code, shb[at + 4..at + 4 + len].to_vec()));
            assert!(shb[at + 4 + len..at + 4 + padded(len)]
                .iter()
                .all(|&b| b == 0));
            at += 4 + padded(len);
        }
    }

    fn run_whole(input: &[u8], doc: &str) -> Vec<u8> {
        let mut ed = ShbEditor::new(doc.to_string());
        let mut out = ed.feed(input).into_owned();
        out.extend(ed.finish());
        out
    }

    fn run_chunks(chunks: &[&[u8]], doc: &str) -> Vec<u8> {
        let mut ed = ShbEditor::new(doc.to_string());
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&ed.feed(c));
        }
        out.extend(ed.finish());
        out
    }

    /// Edits `input` and returns (edited SHB's options, rest of the output).
    fn edit_and_decode(input: &[u8]) -> (Vec<(u16, Vec<u8>)>, Vec<u8>) {
        let out = run_whole(input, SAMPLE_DOC);
        let shb_len = bo(out[8] == 0x1A).u32(&out, 4) as usize;
        let blocks = walk_blocks(&out[..shb_len]);
        assert_eq!(blocks.len(), 1);
        (shb_options(&out[..shb_len]), out[shb_len..].to_vec())
    }

    /// The value of the first option, checked to be a comment.
    fn comment_bytes(opts: &[(u16, Vec<u8>)]) -> &[u8] {
        assert_eq!(opts[0].0, OPT_COMMENT, "comment is not the first option");
        &opts[0].1
    }

    /// The first option's text, checked to be the only comment.
    fn comment_of(opts: &[(u16, Vec<u8>)]) -> String {
        assert_eq!(
            opts.iter().filter(|o| o.0 == OPT_COMMENT).count(),
            1,
            "more than one comment"
        );
        String::from_utf8(comment_bytes(opts).to_vec()).unwrap()
    }

    #[test]
    fn document_lists_required_keys_quoted() {
        assert_eq!(target_document(&sample_info()), SAMPLE_DOC);
    }

    #[test]
    fn document_adds_cluster_filter_and_chaste_in_order() {
        let info = TargetInfo {
            cluster_uid: Some("c-42"),
            capture_filter: Some("tcp port 80"),
            no_promiscuous: true,
            ..sample_info()
        };
        assert_eq!(
            target_document(&info),
            format!(
                "{SAMPLE_DOC}cluster:\n  uid: \"c-42\"\ncapture-filter: \"tcp port 80\"\nno-promiscuous-mode: true\n"
            )
        );
    }

    #[test]
    fn targets_document_lists_every_target_with_its_prefix() {
        let a = TargetInfo {
            cluster_uid: Some("u1"),
            ..sample_info()
        };
        let b = TargetInfo {
            container_name: "db\n---\nx: y",
            ..TargetInfo::default()
        };
        let doc = targets_document(&[("web/", a), ("db/", b)], Some("tcp"), true);
        assert_eq!(
            doc,
            concat!(
                "---\n# capture target information\n",
                "targets:\n",
                "  - container-name: \"web\"\n",
                "    container-type: \"docker\"\n",
                "    node-name: \"n1\"\n",
                "    cluster:\n",
                "      uid: \"u1\"\n",
                "    interface-prefix: \"web/\"\n",
                "  - container-name: \"db\\n---\\nx: y\"\n",
                "    container-type: \"\"\n",
                "    node-name: \"\"\n",
                "    interface-prefix: \"db/\"\n",
                "capture-filter: \"tcp\"\n",
                "no-promiscuous-mode: true\n",
            )
        );
    }

    #[test]
    fn document_escapes_hostile_names() {
        let info = TargetInfo {
            container_name: "a\"b\\c\nd: e\r\t\u{1}\u{7f}\u{85}\u{2028}é",
            container_type: "\n---\nx",
            node_name: "",
            ..TargetInfo::default()
        };
        let doc = target_document(&info);
        assert!(doc.starts_with(TARGET_MARKER));
        assert_eq!(
            doc,
            concat!(
                "---\n# capture target information\n",
                "container-name: \"a\\\"b\\\\c\\nd: e\\r\\t\\u0001\\u007F\\u0085\\u2028é\"\n",
                "container-type: \"\\n---\\nx\"\n",
                "node-name: \"\"\n",
            )
        );
    }

    /// Checks the document against a real YAML parser, if python3 with
    /// PyYAML is present.
    #[test]
    fn document_parses_as_yaml_with_exact_values() {
        let name = "we\"ird\\ \n--- name: x\u{1}\u{85}\u{2028}\u{feff}é😀 #c";
        let info = TargetInfo {
            container_name: name,
            container_type: "pod",
            node_name: "node:1",
            cluster_uid: Some("'uid'"),
            capture_filter: Some("host 1.2.3.4 and not port 22"),
            no_promiscuous: true,
        };
        let doc = target_document(&info);
        let script = "import sys, yaml, json\n\
            d = list(yaml.safe_load_all(sys.stdin.read()))\n\
            print(json.dumps(d))";
        let child = Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("note: python3 not found, YAML parse check skipped");
            return;
        };
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(doc.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        if String::from_utf8_lossy(&out.stderr).contains("No module named 'yaml'") {
            eprintln!("note: PyYAML not installed, YAML parse check skipped");
            return;
        }
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let expected = serde_json::json!([{
            "container-name": name,
            "container-type": "pod",
            "node-name": "node:1",
            "cluster": {"uid": "'uid'"},
            "capture-filter": "host 1.2.3.4 and not port 22",
            "no-promiscuous-mode": true,
        }]);
        assert_eq!(parsed, expected);
    }

    #[test]
    fn shb_without_comment_gets_one_first_in_both_byte_orders() {
        for big in [true, false] {
            let mut input = shb(big, &[]);
            input.extend(idb(big));
            let (opts, rest) = edit_and_decode(&input);
            assert_eq!(opts.len(), 1);
            assert_eq!(comment_of(&opts), SAMPLE_DOC);
            assert_eq!(rest, idb(big));
        }
    }

    #[test]
    fn edited_shb_keeps_order_magic_and_version_and_unknowns_section_length() {
        for big in [true, false] {
            let mut input = shb(big, &[option(big, 4, b"app"), endofopt()]);
            input[MAGIC_AT + 4..SECTION_LENGTH_AT]
                .copy_from_slice(&[u16b(big, 1), u16b(big, 2)].concat());
            let out = run_whole(&input, SAMPLE_DOC);
            assert_eq!(out[..4], SHB_BLOCK_TYPE);
            assert_eq!(out[8..16], input[8..16]);
            assert_eq!(out[16..24], [0xFF; 8]);
            assert_eq!(walk_blocks(&out).len(), 1);
        }
    }

    #[test]
    fn existing_comment_without_document_gets_it_appended_on_a_new_line() {
        for big in [true, false] {
            let input = shb(big, &[option(big, 1, b"ABC"), endofopt()]);
            let (opts, _) = edit_and_decode(&input);
            assert_eq!(comment_of(&opts), format!("ABC\n{SAMPLE_DOC}"));
        }
    }

    #[test]
    fn existing_comment_ending_in_newline_gets_no_extra_line() {
        let input = shb(true, &[option(true, 1, b"ABC\n"), endofopt()]);
        let (opts, _) = edit_and_decode(&input);
        assert_eq!(comment_of(&opts), format!("ABC\n{SAMPLE_DOC}"));
    }

    #[test]
    fn earlier_document_is_replaced_not_duplicated() {
        let old = "ABC\n---\n# capture target information\ncontainer-name: \"old\"\n";
        for big in [true, false] {
            let input = shb(big, &[option(big, 1, old.as_bytes()), endofopt()]);
            let (opts, _) = edit_and_decode(&input);
            assert_eq!(comment_of(&opts), format!("ABC\n{SAMPLE_DOC}"));
        }
    }

    #[test]
    fn every_earlier_document_is_removed() {
        // Found by the pcapng_shb fuzz target: only the first of two earlier
        // documents was removed, and a last line lacking only its line break
        // became a second marker once terminated.
        for old in [
            "ABC\n---\n# capture target information\na: 1\n---\n# capture target information\nb: 2\n",
            "ABC\n---\n# capture target information\n---\n# capture target information\n",
            // Becomes a marker line once the comment is line-terminated.
            "ABC\n---\n# capture target information",
        ] {
            let input = shb(true, &[option(true, 1, old.as_bytes()), endofopt()]);
            let (opts, _) = edit_and_decode(&input);
            assert_eq!(comment_of(&opts), format!("ABC\n{SAMPLE_DOC}"), "{old:?}");
        }
    }

    #[test]
    fn editing_twice_gives_the_same_comment_as_once() {
        let input = shb(false, &[option(false, 1, b"hello"), endofopt()]);
        let once = run_whole(&input, SAMPLE_DOC);
        let twice = run_whole(&once, SAMPLE_DOC);
        assert_eq!(once, twice);
    }

    #[test]
    fn earlier_document_at_comment_start_is_replaced() {
        let old = "---\n# capture target information\ncontainer-name: \"old\"";
        let input = shb(true, &[option(true, 1, old.as_bytes()), endofopt()]);
        let (opts, _) = edit_and_decode(&input);
        assert_eq!(comment_of(&opts), SAMPLE_DOC);
    }

    #[test]
    fn following_yaml_document_is_kept() {
        let old = "ABC\n---\n# capture target information\ncontainer-name: \"old\"\n---\nmine: 1\n";
        let input = shb(true, &[option(true, 1, old.as_bytes()), endofopt()]);
        let (opts, _) = edit_and_decode(&input);
        assert_eq!(
            comment_of(&opts),
            format!("ABC\n---\nmine: 1\n{SAMPLE_DOC}")
        );
    }

    #[test]
    fn following_bare_document_start_at_end_is_kept() {
        let old = "---\n# capture target information\nnode-name: \"x\"\n---";
        let input = shb(true, &[option(true, 1, old.as_bytes()), endofopt()]);
        let (opts, _) = edit_and_decode(&input);
        assert_eq!(comment_of(&opts), format!("---\n{SAMPLE_DOC}"));
    }

    #[test]
    fn marker_inside_a_line_is_not_a_document() {
        let old = "see ---\n# capture target information\n";
        let input = shb(true, &[option(true, 1, old.as_bytes()), endofopt()]);
        let (opts, _) = edit_and_decode(&input);
        assert_eq!(comment_of(&opts), format!("{old}{SAMPLE_DOC}"));
    }

    #[test]
    fn only_first_comment_is_edited_and_moved_first_others_kept_in_order() {
        for big in [true, false] {
            let mut options = dumpcap_like_options(big);
            options.insert(1, option(big, 1, b"first"));
            options.push(option(big, 1, b"second"));
            options.push(option(big, 0x8001, &[9, 8, 7])); // custom-ish, odd length
            options.push(endofopt());
            let (opts, _) = edit_and_decode(&shb(big, &options));
            assert_eq!(opts[0], (1, format!("first\n{SAMPLE_DOC}").into_bytes()));
            let rest: Vec<(u16, Vec<u8>)> = opts[1..].to_vec();
            assert_eq!(
                rest,
                vec![
                    (2, b"x86_64".to_vec()),
                    (3, b"Linux 6.1".to_vec()),
                    (4, b"Dumpcap (Wireshark) 4.0.17".to_vec()),
                    (1, b"second".to_vec()),
                    (0x8001, vec![9, 8, 7]),
                ]
            );
        }
    }

    #[test]
    fn options_without_endofopt_are_accepted_and_terminated() {
        let input = shb(true, &[option(true, 4, b"app")]);
        let (opts, _) = edit_and_decode(&input);
        assert_eq!(opts[1], (4, b"app".to_vec()));
    }

    #[test]
    fn oversized_comment_is_replaced_by_the_document_alone() {
        let old = vec![b'x'; MAX_OPTION_VALUE_LEN - 10];
        let input = shb(true, &[option(true, 1, &old), endofopt()]);
        let (opts, _) = edit_and_decode(&input);
        assert_eq!(comment_of(&opts), SAMPLE_DOC);
    }

    #[test]
    fn oversized_document_is_cut_at_a_character_boundary() {
        let name = "é".repeat(MAX_OPTION_VALUE_LEN / 2 + 10);
        let info = TargetInfo {
            container_name: &name,
            ..TargetInfo::default()
        };
        let doc = target_document(&info);
        assert!(doc.len() > MAX_OPTION_VALUE_LEN);
        let input = shb(false, &[]);
        let out = run_whole(&input, &doc);
        let opts = shb_options(&walk_blocks(&out)[0].1);
        let comment = comment_of(&opts);
        assert!(comment.len() <= MAX_OPTION_VALUE_LEN && comment.len() > 65_000);
        assert!(doc.starts_with(&comment));
    }

    #[test]
    fn overspill_after_shb_is_passed_exactly() {
        for big in [true, false] {
            let mut rest = idb(big);
            rest.extend(epb(big, 1, &ethernet_frame(1)));
            rest.extend_from_slice(&[1, 2, 3, 4, 5]); // a partial block, too
            let mut input = shb(big, &dumpcap_like_options(big));
            input.extend_from_slice(&rest);
            let (_, out_rest) = edit_and_decode(&input);
            assert_eq!(out_rest, rest);
        }
    }

    #[test]
    fn split_shb_is_edited_once_complete_at_every_split_point() {
        for big in [true, false] {
            let mut input = shb(
                big,
                &[option(big, 1, b"hi"), option(big, 2, b"hw"), endofopt()],
            );
            let shb_len = input.len();
            input.extend(idb(big));
            let expected = run_whole(&input, SAMPLE_DOC);
            assert_ne!(expected, input);
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    let mut ed = ShbEditor::new(SAMPLE_DOC.to_string());
                    let mut out = Vec::new();
                    for (n, chunk) in [&input[..i], &input[i..j], &input[j..]].iter().enumerate() {
                        let sent = ed.feed(chunk);
                        let complete_after = [i, j, input.len()][n] >= shb_len;
                        assert_eq!(ed.is_passthrough(), complete_after, "i={i} j={j}");
                        if !complete_after {
                            assert!(sent.is_empty());
                        }
                        out.extend_from_slice(&sent);
                    }
                    assert!(ed.finish().is_empty());
                    assert_eq!(out, expected, "split at {i}, {j}");
                }
            }
        }
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_stream() {
        for big in [true, false] {
            let mut input = shb(big, &dumpcap_like_options(big));
            input.extend(idb(big));
            input.extend(epb(big, 7, &ethernet_frame(2)));
            let expected = run_whole(&input, SAMPLE_DOC);
            let chunks: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(run_chunks(&chunks, SAMPLE_DOC), expected);
        }
    }

    #[test]
    fn passthrough_returns_the_input_itself() {
        let mut ed = ShbEditor::new(SAMPLE_DOC.to_string());
        let _ = ed.feed(&shb(true, &[]));
        assert!(ed.is_passthrough());
        let chunk = epb(true, 3, &ethernet_frame(3));
        let sent = ed.feed(&chunk);
        assert!(matches!(sent, Cow::Borrowed(s) if std::ptr::eq(s, chunk.as_slice())));
        assert!(ed.finish().is_empty());
    }

    #[test]
    fn non_shb_stream_passes_unchanged_and_borrowed() {
        let epb_first = epb(true, 1, &ethernet_frame(4));
        let pcap_classic = [0xD4, 0xC3, 0xB2, 0xA1, 2, 0, 4, 0];
        for input in [&epb_first[..], &pcap_classic[..], b"hello world", &[0x0A]] {
            let mut ed = ShbEditor::new(SAMPLE_DOC.to_string());
            let sent = ed.feed(input);
            if input.len() > 1 {
                assert!(matches!(sent, Cow::Borrowed(_)));
                assert!(ed.is_passthrough());
            }
            let mut out = sent.into_owned();
            out.extend(ed.finish());
            assert_eq!(out, input);
        }
    }

    #[test]
    fn non_shb_stream_is_released_as_soon_as_it_is_recognised() {
        let mut ed = ShbEditor::new(SAMPLE_DOC.to_string());
        assert!(ed.feed(&[0x0A, 0x0D]).is_empty());
        assert_eq!(&*ed.feed(&[0x0D, 0x0B]), &[0x0A, 0x0D, 0x0D, 0x0B]);
        assert!(ed.is_passthrough());
    }

    /// Mutations of a good SHB that must all pass through byte for byte.
    fn malformed_inputs() -> Vec<(&'static str, Vec<u8>)> {
        let good = shb(
            true,
            &[option(true, 1, b"ABC"), option(true, 4, b"app"), endofopt()],
        );
        let len = good.len();
        let mut cases = Vec::new();
        let mut set_len = |name, v: u32| {
            let mut b = good.clone();
            b[4..8].copy_from_slice(&v.to_be_bytes());
            b[len - 4..].copy_from_slice(&v.to_be_bytes());
            cases.push((name, b));
        };
        set_len("too short", 24);
        set_len("zero length", 0);
        set_len("huge length", u32::MAX);
        set_len("over the bound", (MAX_SHB_LEN + 4) as u32);
        let mut b = good.clone();
        b[4..8].copy_from_slice(&(len as u32 + 2).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        cases.push(("odd total length", b));
        let mut b = good.clone();
        b[len - 1] ^= 4;
        cases.push(("trailer differs", b));
        let mut b = good.clone();
        b[8..12].copy_from_slice(&[0x1A, 0x2B, 0x4D, 0x3C]);
        cases.push(("bad magic", b));
        let mut b = good.clone();
        b[OPTIONS_AT + 2..OPTIONS_AT + 4].copy_from_slice(&500u16.to_be_bytes());
        cases.push(("option overruns block", b));
        let mut b = good.clone();
        b[OPTIONS_AT + 2..OPTIONS_AT + 4].copy_from_slice(&u16::MAX.to_be_bytes());
        cases.push(("option length max", b));
        let mut b = good.clone();
        b[OPTIONS_AT + 2..OPTIONS_AT + 4].copy_from_slice(&5u16.to_be_bytes());
        cases.push(("option length misaligns rest", b));
        let mut b = good.clone();
        b[len - 6..len - 4].copy_from_slice(&4u16.to_be_bytes());
        cases.push(("endofopt with a length", b));
        let b = shb(
            true,
            &[option(true, 4, b"app"), endofopt(), option(true, 2, b"x")],
        );
        cases.push(("options after endofopt", b));
        cases
    }

    #[test]
    fn malformed_shbs_pass_through_unchanged_in_any_chunking() {
        for (name, input) in malformed_inputs() {
            assert_eq!(run_whole(&input, SAMPLE_DOC), input, "{name}");
            let chunks: Vec<&[u8]> = input.chunks(3).collect();
            assert_eq!(run_chunks(&chunks, SAMPLE_DOC), input, "{name} in chunks");
        }
    }

    #[test]
    fn truncated_shb_is_returned_by_finish_unedited() {
        let input = shb(false, &dumpcap_like_options(false));
        for cut in 0..input.len() {
            let mut ed = ShbEditor::new(SAMPLE_DOC.to_string());
            assert!(ed.feed(&input[..cut]).is_empty(), "cut {cut}");
            assert!(!ed.is_passthrough());
            assert_eq!(ed.finish(), &input[..cut]);
            assert!(ed.is_passthrough());
            assert!(ed.finish().is_empty());
        }
    }

    /// A tiny xorshift64 so the randomised test needs no crate and repeats.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn random_input(rng: &mut XorShift) -> Vec<u8> {
        let big = rng.next() & 1 == 0;
        let mut options = Vec::new();
        for _ in 0..rng.below(5) {
            let code = [1u16, 2, 3, 4, 9, 2988][rng.below(6)];
            let value: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
            options.push(option(big, code, &value));
        }
        if rng.next() & 1 == 0 {
            options.push(endofopt());
        }
        let mut input = shb(big, &options);
        input.extend(idb(big));
        input.extend(epb(big, rng.next(), &ethernet_frame(5)));
        // Mutate some inputs: flip bytes, overwrite lengths, truncate.
        match rng.below(4) {
            0 => {}
            1 => {
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(input.len());
                    input[at] = rng.next() as u8;
                }
            }
            2 => {
                let at = rng.below(input.len().saturating_sub(2));
                input[at..at + 2].copy_from_slice(&(rng.next() as u16).to_ne_bytes());
            }
            _ => input.truncate(rng.below(input.len() + 1)),
        }
        input
    }

    #[test]
    fn random_inputs_never_panic_and_pass_everything_after_the_shb() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let (mut edited, mut unedited) = (0, 0);
        for case in 0..3000 {
            let input = random_input(&mut rng);
            let whole = run_whole(&input, SAMPLE_DOC);
            // Random chunking gives exactly the same stream.
            let mut chunks = Vec::new();
            let mut at = 0;
            while at < input.len() {
                let n = 1 + rng.below(input.len() - at);
                chunks.push(&input[at..at + n]);
                at += n;
            }
            assert_eq!(run_chunks(&chunks, SAMPLE_DOC), whole, "case {case}");
            if whole == input {
                unedited += 1;
                continue;
            }
            edited += 1;
            // Edited: a well-formed SHB, then the input after its SHB.
            let big = input[8] == 0x1A;
            let in_len = bo(big).u32(&input, 4) as usize;
            let out_len = bo(big).u32(&whole, 4) as usize;
            assert_eq!(&whole[out_len..], &input[in_len..], "case {case}");
            let blocks = walk_blocks(&whole[..out_len]);
            assert!(comment_bytes(&shb_options(&blocks[0].1)).ends_with(SAMPLE_DOC.as_bytes()));
        }
        eprintln!("{edited} inputs edited, {unedited} passed unedited");
        // Both outcomes must be exercised for the property to mean much.
        assert!(edited > 1000 && unedited > 300, "{edited} / {unedited}");
    }

    static FILE_COUNTER: AtomicUsize = AtomicUsize::new(0);

    /// A temporary file removed on drop, so failing tests leave nothing.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(bytes: &[u8]) -> Self {
            let n = FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "packetflix-pcapng-test-{}-{n}.pcapng",
                std::process::id()
            ));
            std::fs::write(&path, bytes).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn run_tool(tool: &str, args: &[&str], file: &TempFile) -> Option<String> {
        let out = match Command::new(tool).args(args).arg(&file.0).output() {
            Ok(out) => out,
            Err(e) => {
                eprintln!("note: {tool} not runnable ({e}), check skipped");
                return None;
            }
        };
        assert!(
            out.status.success(),
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn wireshark_tools_read_the_edited_capture_and_its_comment() {
        let info = TargetInfo {
            cluster_uid: Some("uid-1"),
            capture_filter: Some("ether proto 0x88b5"),
            no_promiscuous: true,
            ..sample_info()
        };
        let doc = target_document(&info);
        for big in [true, false] {
            let mut options = dumpcap_like_options(big);
            options.insert(0, option(big, 1, b"from dumpcap"));
            options.push(endofopt());
            let mut input = shb(big, &options);
            input.extend(idb(big));
            input.extend(epb(big, 1_700_000_000_000_000, &ethernet_frame(1)));
            input.extend(epb(big, 1_700_000_000_000_001, &ethernet_frame(2)));
            let chunks: Vec<&[u8]> = input.chunks(7).collect();
            let edited = run_chunks(&chunks, &doc);
            assert_eq!(walk_blocks(&edited).len(), 4);
            let file = TempFile::new(&edited);

            let Some(frames) = run_tool(
                "tshark",
                &["-T", "fields", "-e", "frame.number", "-r"],
                &file,
            ) else {
                return;
            };
            assert_eq!(frames, "1\n2\n");
            let Some(info) = run_tool("capinfos", &["-k"], &file) else {
                return;
            };
            assert!(info.contains("from dumpcap"), "{info}");
            assert!(info.contains("# capture target information"), "{info}");
            assert!(info.contains("container-name: \"web\""), "{info}");
            assert!(info.contains("no-promiscuous-mode: true"), "{info}");
        }
    }
}
