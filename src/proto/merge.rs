//! Merging several pcapng streams into one section, sans-IO.
//!
//! A capture of several targets runs one capture program per target; each
//! writes its own pcapng stream. [`Merger`] is fed each stream's chunks as
//! they are read (any size, any interleaving between inputs) and appends to
//! the output only whole blocks, so the client sees ONE section:
//!
//! - one Section Header Block, built here, whose first comment carries the
//!   document describing every target (see [`crate::proto::pcapng`]; the marker
//!   [`crate::proto::pcapng::TARGET_MARKER`] is kept so clients can replace it);
//!   the inputs' own SHBs are consumed, never forwarded;
//! - each input's Interface Description Blocks renumbered into one id space
//!   in the order they arrive, and named `<input name>/<interface>` (the
//!   `if_name` option is rewritten, or added as `<input name>/<local id>`);
//! - every block that refers to an interface id rewritten: Enhanced Packet
//!   Blocks, Interface Statistics Blocks, obsolete Packet Blocks. A Simple
//!   Packet Block implies interface 0 of its section, which after merging
//!   would be some other input's interface: it is rewritten as an Enhanced
//!   Packet Block on the input's interface 0 with timestamp 0 (its data and
//!   original length kept);
//! - one byte order, the host's (what dumpcap writes). Blocks of an input
//!   written in the other order are converted: every fixed field and option
//!   header of the block types above and of Name Resolution, Decryption
//!   Secrets, systemd Journal and Custom Blocks, and the values of options
//!   the spec gives a numeric type. Values of other options (strings, raw
//!   addresses, custom data) are byte sequences and are copied unchanged.
//!   Other block types of the other byte order cannot be converted without
//!   knowing their layout and are dropped (counted in [`Merger::dropped`]);
//!   of the host's order they are forwarded unchanged.
//!
//! Blocks are forwarded whole, never split or interleaved inside one
//! another. Each input holds at most one partial block, bounded by
//! [`MAX_BLOCK_LEN`]; an input that breaks the format (no SHB first, a bad
//! length, a block over the bound, malformed options, a block naming an
//! interface it never described) fails alone: nothing more of it is
//! forwarded and [`Merger::feed`] says why, while the other inputs go on.
//!
//! The relay uses [`Merger::feed_parts`]: it hands over its read buffer,
//! and blocks that need only an interface-id rewrite (host-order packet and
//! statistics blocks, and host-order blocks passed unchanged) are patched in
//! place and named as ranges of that buffer, not copied; only what the
//! merger makes (the SHB, renamed interfaces, converted blocks, a block
//! that spanned reads) lands in an owned buffer. [`Merger::feed`] is the
//! same walk, assembled into one vector.
//!
//! This module never does I/O and never panics on any input.

use crate::proto::pcapng::{Order, ShbEditor};

/// Largest block accepted from an input. dumpcap's largest snapshot length
/// is 262144 bytes, so its packet blocks stay below 300 KiB even with
/// options; a length field above this is a broken stream, and the bound is
/// what each input may make the merger hold.
pub const MAX_BLOCK_LEN: usize = 1 << 20;
/// Interfaces one input may describe in one section. dumpcap writes one IDB
/// per `-i`; the bound keeps the per-input id map small.
pub const MAX_INTERFACES_PER_INPUT: usize = 1024;

/// Block types (pcapng spec, sections 4 and 5, appendix).
const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const PB: u32 = 2;
const SPB: u32 = 3;
const NRB: u32 = 4;
const ISB: u32 = 5;
const EPB: u32 = 6;
const SJE: u32 = 9;
const DSB: u32 = 0x0A;
const CB_COPY: u32 = 0x0000_0BAD;
const CB_NOCOPY: u32 = 0x4000_0BAD;

/// Block header (type, length) and trailer (length) sizes.
const HEADER_LEN: usize = 8;
const TRAILER_LEN: usize = 4;
const MIN_BLOCK_LEN: usize = HEADER_LEN + TRAILER_LEN;
/// SHB: magic at 8, version at 12, section length at 16, options at 24.
const SHB_MAGIC_AT: usize = 8;
const SHB_OPTIONS_AT: usize = 24;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// Fixed parts: IDB (link type, reserved, snaplen), EPB (if id, ts high,
/// ts low, captured, original), ISB (if id, ts high, ts low), PB (if id
/// u16, drops u16, ts high, ts low, captured, original), SPB (original).
const IDB_OPTIONS_AT: usize = 16;
const EPB_DATA_AT: usize = 28;
const ISB_OPTIONS_AT: usize = 20;
const PB_DATA_AT: usize = 28;
const SPB_DATA_AT: usize = 12;
/// DSB: secrets type and secrets length before the data.
const DSB_DATA_AT: usize = 16;
/// Option codes (pcapng spec, section 3.5 and 4.2).
const OPT_ENDOFOPT: u16 = 0;
const IF_NAME: u16 = 2;
/// Custom options (section 3.5.1): a Private Enterprise Number first.
const OPT_CUSTOM: [u16; 4] = [2988, 2989, 19372, 19373];
const OPTION_HEADER_LEN: usize = 4;
const ALIGNMENT: usize = 4;

fn padded(len: usize) -> usize {
    len.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// Why an input was given up. The other inputs are not affected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeError(pub String);

impl std::fmt::Display for MergeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MergeError {}

fn err<T>(why: impl Into<String>) -> Result<T, MergeError> {
    Err(MergeError(why.into()))
}

/// One piece of merged output, in order: bytes of the chunk given to
/// [`Merger::feed_parts`] (patched in place) or of its owned buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// `chunk[start..end]`.
    Input(usize, usize),
    /// `owned[start..end]`.
    Owned(usize, usize),
}

/// Where [`on_block`] puts a merged block.
struct Sink<'a> {
    owned: &'a mut Vec<u8>,
    parts: &'a mut Vec<Part>,
}

impl Sink<'_> {
    /// Bytes made by the merger.
    fn own(&mut self, bytes: &[u8]) {
        let start = self.owned.len();
        self.owned.extend_from_slice(bytes);
        self.owned_part(start);
    }

    /// Records `owned[start..]` (just appended) as the next part.
    fn owned_part(&mut self, start: usize) {
        let end = self.owned.len();
        if start == end {
            return;
        }
        match self.parts.last_mut() {
            Some(Part::Owned(_, e)) if *e == start => *e = end,
            _ => self.parts.push(Part::Owned(start, end)),
        }
    }

    /// A block forwarded as it now stands: a range of the chunk when it
    /// lies there (`at`), else copied like made bytes.
    fn pass(&mut self, block: &[u8], at: Option<usize>) {
        let Some(start) = at else {
            return self.own(block);
        };
        let end = start + block.len();
        match self.parts.last_mut() {
            Some(Part::Input(_, e)) if *e == start => *e = end,
            _ => self.parts.push(Part::Input(start, end)),
        }
    }
}

#[derive(Debug)]
struct Input {
    /// Prefix of this input's interface names (`<name>/`).
    name: String,
    /// A block begun in one chunk and not yet complete; never more than
    /// [`MAX_BLOCK_LEN`].
    held: Vec<u8>,
    /// Byte order of the section being read; `None` before its first SHB.
    order: Option<Order>,
    /// Local interface id -> merged id, for the current section.
    ids: Vec<u32>,
    failed: Option<MergeError>,
}

/// Merges several pcapng streams into one section (see the module docs).
#[derive(Debug)]
pub struct Merger {
    inputs: Vec<Input>,
    /// The merged SHB, until it has been emitted ahead of the first block.
    header: Option<Vec<u8>>,
    next_id: u32,
    dropped: u64,
}

impl Merger {
    /// One input per name, in order (names prefix the interface names).
    /// `document` goes into the merged SHB's comment, normally
    /// [`crate::proto::pcapng::targets_document`]'s output.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>, document: String) -> Self {
        Merger {
            inputs: names
                .into_iter()
                .map(|n| Input {
                    name: n.into(),
                    held: Vec::new(),
                    order: None,
                    ids: Vec::new(),
                    failed: None,
                })
                .collect(),
            header: Some(merged_shb(document)),
            next_id: 0,
            dropped: 0,
        }
    }

    /// The merged SHB: emitted by the first `feed`, or taken here to be sent
    /// ahead of anything (so the client has a valid section at once).
    pub fn take_header(&mut self) -> Option<Vec<u8>> {
        self.header.take()
    }

    /// Blocks of the other byte order that could not be converted and were
    /// left out.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Interfaces described so far, over all inputs.
    pub fn interfaces(&self) -> u32 {
        self.next_id
    }

    /// Why input `i` was given up, if it was.
    pub fn failure(&self, i: usize) -> Option<&MergeError> {
        self.inputs.get(i).and_then(|x| x.failed.as_ref())
    }

    /// Feeds the next chunk of input `i`; appends whole merged blocks to
    /// `out` (after the merged SHB, if that has not gone out yet). An error
    /// means the input broke the format and is ignored from now on; what it
    /// gave before stays in `out`. An unknown `i` is an error too.
    pub fn feed(&mut self, i: usize, data: &[u8], out: &mut Vec<u8>) -> Result<(), MergeError> {
        let mut chunk = data.to_vec();
        let mut owned = Vec::new();
        let mut parts = Vec::new();
        let result = self.feed_parts(i, &mut chunk, &mut owned, &mut parts);
        for p in parts {
            out.extend_from_slice(match p {
                Part::Input(s, e) => &chunk[s..e],
                Part::Owned(s, e) => &owned[s..e],
            });
        }
        result
    }

    /// [`Merger::feed`] without copying what need not be copied: the merged
    /// output is `parts`, in order, each a range of `data` (whose blocks'
    /// interface ids are rewritten in place) or of `owned` (bytes made here,
    /// appended). Only whole blocks are named; a block that `data` ends
    /// inside waits in the input's hold, as with `feed`.
    pub fn feed_parts(
        &mut self,
        i: usize,
        data: &mut [u8],
        owned: &mut Vec<u8>,
        parts: &mut Vec<Part>,
    ) -> Result<(), MergeError> {
        let mut sink = Sink { owned, parts };
        if let Some(h) = self.header.take() {
            sink.own(&h);
        }
        let Some(input) = self.inputs.get_mut(i) else {
            return err(format!("no input {i}"));
        };
        if let Some(e) = &input.failed {
            return Err(e.clone());
        }
        let total = data.len();
        let result: Result<(), MergeError> = (|| {
            let mut at = 0;
            while at < total {
                if input.held.is_empty() {
                    // Whole blocks straight from the chunk, without copying
                    // them into the hold.
                    match block_len(input.order, &data[at..])? {
                        Some(len) if len <= total - at => {
                            let block = &mut data[at..at + len];
                            on_block(
                                input,
                                block,
                                Some(at),
                                &mut self.next_id,
                                &mut self.dropped,
                                &mut sink,
                            )?;
                            at += len;
                            continue;
                        }
                        _ => {}
                    }
                }
                // A partial block: top the hold up to its header, then to its
                // end, and no further.
                // Every block is at least MIN_BLOCK_LEN long, and that many
                // bytes always tell its length (an SHB's needs its magic).
                let want = match block_len(input.order, &input.held)? {
                    Some(len) => len,
                    None => MIN_BLOCK_LEN,
                };
                let take = want.saturating_sub(input.held.len()).min(total - at);
                input.held.extend_from_slice(&data[at..at + take]);
                at += take;
                if let Some(len) = block_len(input.order, &input.held)? {
                    if input.held.len() == len {
                        let mut block = std::mem::take(&mut input.held);
                        on_block(
                            input,
                            &mut block,
                            None,
                            &mut self.next_id,
                            &mut self.dropped,
                            &mut sink,
                        )?;
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = &result {
            input.failed = Some(e.clone());
            input.held = Vec::new();
        }
        result
    }

    /// Input `i` has ended. A block it left incomplete is dropped (it cannot
    /// be forwarded whole); the error says how many bytes that was.
    pub fn finish(&mut self, i: usize) -> Result<(), MergeError> {
        let Some(input) = self.inputs.get_mut(i) else {
            return err(format!("no input {i}"));
        };
        let held = std::mem::take(&mut input.held);
        if input.failed.is_some() || held.is_empty() {
            return Ok(());
        }
        let e = MergeError(format!(
            "output ended inside a block ({} bytes left out)",
            held.len()
        ));
        input.failed = Some(e.clone());
        Err(e)
    }
}

/// The merged SHB: version 1.0, no options of its own but the user
/// application, then edited by the same editor as a single capture's SHB,
/// so the comment, marker and section length are exactly as there.
fn merged_shb(document: String) -> Vec<u8> {
    let order = Order::host();
    let app = format!("packetflix {}", env!("CARGO_PKG_VERSION"));
    let mut body = Vec::new();
    order.put_u32(&mut body, BYTE_ORDER_MAGIC);
    order.put_u16(&mut body, 1);
    order.put_u16(&mut body, 0);
    body.extend_from_slice(&[0xFF; 8]);
    // shb_userappl (option 4).
    push_option(&mut body, order, 4, app.as_bytes());
    push_option(&mut body, order, OPT_ENDOFOPT, &[]);
    let block = wrap(order, SHB, &body);
    let mut editor = ShbEditor::new(document);
    let mut out = editor.feed(&block).into_owned();
    out.extend(editor.finish());
    out
}

pub(crate) fn push_option(out: &mut Vec<u8>, order: Order, code: u16, value: &[u8]) {
    order.put_u16(out, code);
    // Callers bound values below 64 KiB (they come from one block).
    order.put_u16(out, u16::try_from(value.len()).unwrap_or(u16::MAX));
    out.extend_from_slice(value);
    out.resize(out.len() + padded(value.len()) - value.len(), 0);
}

/// A whole block around `body` (padded here).
pub(crate) fn wrap(order: Order, block_type: u32, body: &[u8]) -> Vec<u8> {
    let len = MIN_BLOCK_LEN + padded(body.len());
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(len);
    order.put_u32(&mut out, block_type);
    order.put_u32(&mut out, len32);
    out.extend_from_slice(body);
    out.resize(HEADER_LEN + padded(body.len()), 0);
    order.put_u32(&mut out, len32);
    out
}

/// The length of the block starting `data`, once its header is there;
/// errors for lengths no valid block has. Before the first SHB only an SHB
/// is acceptable; an SHB's own magic gives its byte order.
fn block_len(order: Option<Order>, data: &[u8]) -> Result<Option<usize>, MergeError> {
    if data.len() < HEADER_LEN {
        if order.is_none() && !SHB.to_be_bytes().starts_with(&data[..data.len().min(4)]) {
            return err("the capture output does not start with a pcapng section header");
        }
        return Ok(None);
    }
    let is_shb = data[..4] == SHB.to_be_bytes();
    let order = if is_shb {
        if data.len() < SHB_MAGIC_AT + 4 {
            return Ok(None);
        }
        match Order::of_section(data) {
            Some(o) => o,
            None => return err("section header with a bad byte-order magic"),
        }
    } else {
        match order {
            Some(o) => o,
            None => return err("the capture output does not start with a pcapng section header"),
        }
    };
    let len = order.u32(data, 4) as usize;
    if len < MIN_BLOCK_LEN || len % ALIGNMENT != 0 {
        return err(format!("block length {len} is not valid pcapng"));
    }
    if len > MAX_BLOCK_LEN {
        return err(format!(
            "block of {len} bytes is larger than the {MAX_BLOCK_LEN} accepted"
        ));
    }
    Ok(Some(len))
}

/// One complete block of an input: checked, rewritten, handed to `out`.
/// `at` is where the block lies in the chunk being fed, if it lies there;
/// a block forwarded with only its interface id changed is changed in
/// place and passed as that range.
fn on_block(
    input: &mut Input,
    block: &mut [u8],
    at: Option<usize>,
    next_id: &mut u32,
    dropped: &mut u64,
    out: &mut Sink,
) -> Result<(), MergeError> {
    let len = block.len();
    if block[..4] == SHB.to_be_bytes() {
        let order = Order::of_section(block).ok_or_else(|| MergeError("bad magic".into()))?;
        if len < SHB_OPTIONS_AT + TRAILER_LEN || order.u32(block, len - 4) as usize != len {
            return err("malformed section header");
        }
        if order.u16(block, 12) != 1 {
            return err("section header of an unknown pcapng major version");
        }
        // A new section: its interfaces are new ones.
        input.order = Some(order);
        input.ids.clear();
        return Ok(());
    }
    let order = input
        .order
        .ok_or_else(|| MergeError("block before the section header".into()))?;
    if order.u32(block, len - 4) as usize != len {
        return err("block's trailing length differs from its leading one");
    }
    let host = Order::host();
    let block_type = order.u32(block, 0);
    // The same structural checks whatever the byte order: a block passed
    // on unchanged in the host's order must be as sound as one converted.
    check_block(order, block_type, block)?;
    if order == host && !matches!(block_type, IDB | EPB | ISB | PB | SPB) {
        // Its layout needs no change.
        out.pass(block, at);
        return Ok(());
    }
    let body = &block[HEADER_LEN..len - TRAILER_LEN];
    match block_type {
        IDB => {
            if input.ids.len() >= MAX_INTERFACES_PER_INPUT {
                return err(format!(
                    "more than {MAX_INTERFACES_PER_INPUT} interfaces in one section"
                ));
            }
            let local = input.ids.len();
            out.own(&rewrite_idb(&input.name, local, order, body)?);
            input.ids.push(*next_id);
            *next_id = next_id.wrapping_add(1);
        }
        EPB | ISB => {
            let fixed = if block_type == EPB {
                EPB_DATA_AT
            } else {
                ISB_OPTIONS_AT
            };
            if len < fixed + TRAILER_LEN {
                return err("packet or statistics block shorter than its fixed part");
            }
            let id = map_id(input, order.u32(block, 8))?;
            if order == host {
                block[8..12].copy_from_slice(&host.u32_bytes(id));
                out.pass(block, at);
            } else {
                let mut body = Vec::with_capacity(len);
                host.put_u32(&mut body, id);
                push_swapped_words(&mut body, &block[12..fixed], 4);
                let opts_at = if block_type == EPB {
                    let captured = order.u32(block, 20) as usize;
                    let data_end = EPB_DATA_AT
                        .checked_add(padded(captured))
                        .filter(|&e| e <= len - TRAILER_LEN)
                        .ok_or_else(|| MergeError("packet data overruns its block".into()))?;
                    body.extend_from_slice(&block[EPB_DATA_AT..data_end]);
                    data_end
                } else {
                    fixed
                };
                convert_options(
                    &mut body,
                    &block[opts_at..len - TRAILER_LEN],
                    order,
                    block_type,
                )?;
                out.own(&wrap(host, block_type, &body));
            }
        }
        PB => {
            if len < PB_DATA_AT + TRAILER_LEN {
                return err("packet block shorter than its fixed part");
            }
            let id = map_id(input, u32::from(order.u16(block, 8)))?;
            let id = u16::try_from(id).map_err(|_| {
                MergeError("obsolete packet block on an interface id above 65535".into())
            })?;
            let mut body = Vec::with_capacity(len);
            host.put_u16(&mut body, id);
            host.put_u16(&mut body, order.u16(block, 10));
            push_swapped_words(&mut body, &block[12..PB_DATA_AT], 4);
            let captured = order.u32(block, 20) as usize;
            let data_end = PB_DATA_AT
                .checked_add(padded(captured))
                .filter(|&e| e <= len - TRAILER_LEN)
                .ok_or_else(|| MergeError("packet data overruns its block".into()))?;
            body.extend_from_slice(&block[PB_DATA_AT..data_end]);
            convert_options(&mut body, &block[data_end..len - TRAILER_LEN], order, PB)?;
            out.own(&wrap(host, PB, &body));
        }
        SPB => {
            if len < SPB_DATA_AT + TRAILER_LEN {
                return err("simple packet block shorter than its fixed part");
            }
            let id = map_id(input, 0)?;
            let original = order.u32(block, 8);
            let data = &block[SPB_DATA_AT..len - TRAILER_LEN];
            let captured = data.len().min(original as usize);
            let mut body = Vec::with_capacity(len + 16);
            host.put_u32(&mut body, id);
            host.put_u32(&mut body, 0);
            host.put_u32(&mut body, 0);
            host.put_u32(&mut body, captured as u32);
            host.put_u32(&mut body, original);
            body.extend_from_slice(&data[..captured]);
            out.own(&wrap(host, EPB, &body));
        }
        NRB => {
            let mut conv = Vec::with_capacity(len);
            let mut at = 0;
            loop {
                if body.len() < at + OPTION_HEADER_LEN {
                    return err("name resolution records overrun their block");
                }
                let rtype = order.u16(body, at);
                let rlen = usize::from(order.u16(body, at + 2));
                let end = at + OPTION_HEADER_LEN + padded(rlen);
                if end > body.len() {
                    return err("name resolution record overruns its block");
                }
                host.put_u16(&mut conv, rtype);
                host.put_u16(&mut conv, rlen as u16);
                conv.extend_from_slice(&body[at + OPTION_HEADER_LEN..end]);
                at = end;
                if rtype == 0 {
                    break;
                }
            }
            convert_options(&mut conv, &body[at..], order, NRB)?;
            out.own(&wrap(host, NRB, &conv));
        }
        DSB => {
            if body.len() < DSB_DATA_AT - HEADER_LEN {
                return err("decryption secrets block shorter than its fixed part");
            }
            let secrets = order.u32(body, 4) as usize;
            let data_end = (DSB_DATA_AT - HEADER_LEN)
                .checked_add(padded(secrets))
                .filter(|&e| e <= body.len())
                .ok_or_else(|| MergeError("secrets overrun their block".into()))?;
            let mut conv = Vec::with_capacity(len);
            push_swapped_words(&mut conv, &body[..8], 4);
            conv.extend_from_slice(&body[8..data_end]);
            convert_options(&mut conv, &body[data_end..], order, DSB)?;
            out.own(&wrap(host, DSB, &conv));
        }
        SJE => out.own(&wrap(host, SJE, body)),
        CB_COPY | CB_NOCOPY if body.len() >= 4 => {
            // The Private Enterprise Number is ours to convert; the custom
            // data's layout belongs to its owner and is kept as written.
            let mut conv = Vec::with_capacity(len);
            push_swapped_words(&mut conv, &body[..4], 4);
            conv.extend_from_slice(&body[4..]);
            out.own(&wrap(host, block_type, &conv));
        }
        _ => *dropped += 1,
    }
    Ok(())
}

/// Whether a complete block (not an SHB) of `order` holds together: its
/// fixed part fits, its packet data or records or secrets end inside it,
/// and its options are well formed. The same for both byte orders, and for
/// every block type whose layout the spec gives; other types are only
/// length-checked (done by the caller).
fn check_block(order: Order, block_type: u32, block: &[u8]) -> Result<(), MergeError> {
    let len = block.len();
    let end = len - TRAILER_LEN;
    // Where the options start, after the fixed part and any data.
    let opts_at = match block_type {
        IDB => IDB_OPTIONS_AT,
        ISB => ISB_OPTIONS_AT,
        EPB | PB => {
            let fixed = if block_type == EPB {
                EPB_DATA_AT
            } else {
                PB_DATA_AT
            };
            if len < fixed + TRAILER_LEN {
                return err("packet block shorter than its fixed part");
            }
            let captured = order.u32(block, 20) as usize;
            fixed
                .checked_add(padded(captured))
                .filter(|&e| e <= end)
                .ok_or_else(|| MergeError("packet data overruns its block".into()))?
        }
        SPB => {
            if len < SPB_DATA_AT + TRAILER_LEN {
                return err("simple packet block shorter than its fixed part");
            }
            return Ok(());
        }
        NRB => {
            let mut at = HEADER_LEN;
            loop {
                if end < at + OPTION_HEADER_LEN {
                    return err("name resolution records overrun their block");
                }
                let rtype = order.u16(block, at);
                let rlen = usize::from(order.u16(block, at + 2));
                at += OPTION_HEADER_LEN + padded(rlen);
                if at > end {
                    return err("name resolution record overruns its block");
                }
                if rtype == 0 {
                    break at;
                }
            }
        }
        DSB => {
            if len < DSB_DATA_AT + TRAILER_LEN {
                return err("decryption secrets block shorter than its fixed part");
            }
            let secrets = order.u32(block, 12) as usize;
            DSB_DATA_AT
                .checked_add(padded(secrets))
                .filter(|&e| e <= end)
                .ok_or_else(|| MergeError("secrets overrun their block".into()))?
        }
        CB_COPY | CB_NOCOPY => {
            if len < HEADER_LEN + 4 + TRAILER_LEN {
                return err("custom block shorter than its enterprise number");
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    if len < opts_at + TRAILER_LEN {
        return err("block shorter than its fixed part");
    }
    check_options(order, &block[opts_at..end])
}

/// Whether an options area is well formed: every option's value inside the
/// area (anything after an end-of-options option is ignored, as readers do).
fn check_options(order: Order, rest: &[u8]) -> Result<(), MergeError> {
    Options { order, rest }.try_for_each(|o| o.map(drop))
}

/// The options of an area, in `order`: (code, value) each, up to and
/// including an end-of-options option; an option that overruns the area is
/// an error (and the last item).
struct Options<'a> {
    order: Order,
    rest: &'a [u8],
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<(u16, &'a [u8]), MergeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest;
        if rest.is_empty() {
            return None;
        }
        self.rest = &[];
        if rest.len() < OPTION_HEADER_LEN {
            return Some(err("options overrun their block"));
        }
        let code = self.order.u16(rest, 0);
        let vlen = usize::from(self.order.u16(rest, 2));
        let end = OPTION_HEADER_LEN + padded(vlen);
        if end > rest.len() {
            return Some(err("option overruns its block"));
        }
        if code != OPT_ENDOFOPT {
            self.rest = &rest[end..];
        }
        Some(Ok((
            code,
            &rest[OPTION_HEADER_LEN..OPTION_HEADER_LEN + vlen],
        )))
    }
}

fn map_id(input: &Input, local: u32) -> Result<u32, MergeError> {
    input.ids.get(local as usize).copied().ok_or_else(|| {
        MergeError(format!(
            "block refers to interface {local}, which was never described"
        ))
    })
}

/// Appends `bytes` with every `width`-byte word reversed (a byte-order
/// change of consecutive fields of that width).
fn push_swapped_words(out: &mut Vec<u8>, bytes: &[u8], width: usize) {
    for w in bytes.chunks(width) {
        out.extend(w.iter().rev());
    }
}

/// Width of the numeric words in an option's value, per the spec, or
/// `None` for values that are byte sequences (strings, addresses, hashes).
fn option_word(block_type: u32, code: u16) -> Option<usize> {
    match (block_type, code) {
        // if_speed, if_tsoffset, if_txspeed, if_rxspeed; if_tzone.
        (IDB, 8 | 14 | 16 | 17) => Some(8),
        (IDB, 10) => Some(4),
        // epb_flags, epb_queue; epb_dropcount, epb_packetid.
        (EPB, 2 | 6) | (PB, 2) => Some(4),
        (EPB, 4 | 5) => Some(8),
        // isb_starttime/endtime are two 32-bit halves; the counters u64.
        (ISB, 2 | 3) => Some(4),
        (ISB, 4..=8) => Some(8),
        _ => None,
    }
}

/// Converts an options area of `order` to the host's, appending it to
/// `out` (terminated by an end-of-options option if it was).
fn convert_options(
    out: &mut Vec<u8>,
    rest: &[u8],
    order: Order,
    block_type: u32,
) -> Result<(), MergeError> {
    let host = Order::host();
    for option in (Options { order, rest }) {
        let (code, value) = option?;
        let vlen = value.len();
        host.put_u16(out, code);
        host.put_u16(out, vlen as u16);
        match option_word(block_type, code) {
            Some(w) if vlen % w == 0 => push_swapped_words(out, value, w),
            _ if OPT_CUSTOM.contains(&code) && vlen >= 4 => {
                push_swapped_words(out, &value[..4], 4);
                out.extend_from_slice(&value[4..]);
            }
            _ => out.extend_from_slice(value),
        }
        out.resize(out.len() + padded(vlen) - vlen, 0);
    }
    Ok(())
}

/// The IDB in the host's order, with its `if_name` first, prefixed by the
/// input's name (or made up from the local id if it had none).
fn rewrite_idb(name: &str, local: usize, order: Order, body: &[u8]) -> Result<Vec<u8>, MergeError> {
    let fixed = IDB_OPTIONS_AT - HEADER_LEN;
    if body.len() < fixed {
        return err("interface description shorter than its fixed part");
    }
    let host = Order::host();
    let mut others = Vec::with_capacity(body.len());
    let mut if_name: Option<&[u8]> = None;
    let mut rest = &body[fixed..];
    while !rest.is_empty() {
        if rest.len() < OPTION_HEADER_LEN {
            return err("interface options overrun their block");
        }
        let code = order.u16(rest, 0);
        let vlen = usize::from(order.u16(rest, 2));
        let end = OPTION_HEADER_LEN + padded(vlen);
        if end > rest.len() {
            return err("interface option overruns its block");
        }
        if code == OPT_ENDOFOPT {
            break;
        }
        if code == IF_NAME && if_name.is_none() {
            if_name = Some(&rest[OPTION_HEADER_LEN..OPTION_HEADER_LEN + vlen]);
        } else {
            convert_options(&mut others, &rest[..end], order, IDB)?;
        }
        rest = &rest[end..];
    }
    let mut full = name.as_bytes().to_vec();
    full.push(b'/');
    match if_name {
        // A C string in some writers: the NUL is not part of the name.
        Some(n) => full.extend(n.iter().take_while(|&&b| b != 0)),
        None => full.extend_from_slice(local.to_string().as_bytes()),
    }
    // Names reach the client's screen: control bytes (a target named with
    // an escape sequence, an interface name with a newline) are written as
    // visible escapes, as the log writes them.
    let shown = String::from_utf8_lossy(&full);
    let shown = crate::proto::logtext::escape_controls(&shown);
    let mut end = shown.len().min(usize::from(u16::MAX));
    while !shown.is_char_boundary(end) {
        end -= 1;
    }
    let full = shown.as_bytes()[..end].to_vec();
    let mut out = Vec::with_capacity(body.len() + full.len() + 8);
    host.put_u16(&mut out, order.u16(body, 0));
    host.put_u16(&mut out, order.u16(body, 2));
    host.put_u32(&mut out, order.u32(body, 4));
    push_option(&mut out, host, IF_NAME, &full);
    out.extend_from_slice(&others);
    push_option(&mut out, host, OPT_ENDOFOPT, &[]);
    Ok(wrap(host, IDB, &out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pcapng::TARGET_MARKER;

    fn u16b(o: Order, v: u16) -> Vec<u8> {
        let mut b = Vec::new();
        o.put_u16(&mut b, v);
        b
    }

    fn u32b(o: Order, v: u32) -> Vec<u8> {
        o.u32_bytes(v).to_vec()
    }

    fn opt(o: Order, code: u16, value: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        push_option(&mut b, o, code, value);
        b
    }

    fn shb(o: Order) -> Vec<u8> {
        let mut body = u32b(o, BYTE_ORDER_MAGIC);
        body.extend(u16b(o, 1));
        body.extend(u16b(o, 0));
        body.extend([0xFF; 8]);
        body.extend(opt(o, 1, b"a comment"));
        body.extend(opt(o, 0, b""));
        wrap(o, SHB, &body)
    }

    fn idb(o: Order, link: u16, name: Option<&str>) -> Vec<u8> {
        let mut body = u16b(o, link);
        body.extend(u16b(o, 0));
        body.extend(u32b(o, 262_144));
        if let Some(n) = name {
            body.extend(opt(o, IF_NAME, n.as_bytes()));
        }
        body.extend(opt(o, 9, &[6]));
        body.extend(opt(o, 8, &1_000_000u64.to_le_bytes()[..]));
        body.extend(opt(o, 0, b""));
        wrap(o, IDB, &body)
    }

    fn epb(o: Order, id: u32, frame: &[u8]) -> Vec<u8> {
        let mut body = u32b(o, id);
        body.extend(u32b(o, 1));
        body.extend(u32b(o, 2));
        body.extend(u32b(o, frame.len() as u32));
        body.extend(u32b(o, frame.len() as u32 + 10));
        body.extend_from_slice(frame);
        body.resize(20 + padded(frame.len()), 0);
        body.extend(opt(o, 2, &u32b(o, 1)));
        body.extend(opt(o, 0, b""));
        wrap(o, EPB, &body)
    }

    fn isb(o: Order, id: u32) -> Vec<u8> {
        let mut body = u32b(o, id);
        body.extend(u32b(o, 0));
        body.extend(u32b(o, 9));
        body.extend(opt(o, 4, &77u64.to_le_bytes()));
        body.extend(opt(o, 0, b""));
        wrap(o, ISB, &body)
    }

    fn spb(o: Order, frame: &[u8]) -> Vec<u8> {
        let mut body = u32b(o, frame.len() as u32);
        body.extend_from_slice(frame);
        wrap(o, SPB, &body)
    }

    #[derive(Debug, PartialEq)]
    struct Parsed {
        block_type: u32,
        bytes: Vec<u8>,
    }

    /// Walks the output: every block whole, lengths consistent, host order.
    fn walk(out: &[u8]) -> Vec<Parsed> {
        let h = Order::host();
        let mut at = 0;
        let mut v = Vec::new();
        while at < out.len() {
            let len = h.u32(out, at + 4) as usize;
            assert!(
                len >= 12 && len % 4 == 0 && at + len <= out.len(),
                "bad block at {at}"
            );
            assert_eq!(h.u32(out, at + len - 4) as usize, len);
            v.push(Parsed {
                block_type: h.u32(out, at),
                bytes: out[at..at + len].to_vec(),
            });
            at += len;
        }
        v
    }

    fn if_name_of(idb: &[u8]) -> String {
        let h = Order::host();
        let mut at = IDB_OPTIONS_AT;
        loop {
            let code = h.u16(idb, at);
            let len = h.u16(idb, at + 2) as usize;
            if code == IF_NAME {
                return String::from_utf8(idb[at + 4..at + 4 + len].to_vec()).unwrap();
            }
            assert_ne!(code, 0, "no if_name");
            at += 4 + padded(len);
        }
    }

    fn stream(o: Order, parts: &[Vec<u8>]) -> Vec<u8> {
        let mut s = shb(o);
        for p in parts {
            s.extend_from_slice(p);
        }
        s
    }

    #[test]
    fn one_section_with_the_document_and_renumbered_named_interfaces() {
        let h = Order::host();
        let a = stream(h, &[idb(h, 1, Some("lo")), epb(h, 0, b"aaaa")]);
        let b = stream(
            h,
            &[
                idb(h, 1, Some("lo")),
                idb(h, 113, Some("veth0")),
                epb(h, 1, b"bbbbb"),
                epb(h, 0, b"cc"),
            ],
        );
        let mut m = Merger::new(["a", "b"], format!("{TARGET_MARKER}targets: []\n"));
        let mut out = Vec::new();
        m.feed(0, &a, &mut out).unwrap();
        m.feed(1, &b, &mut out).unwrap();
        let blocks = walk(&out);
        assert_eq!(blocks.iter().filter(|b| b.block_type == SHB).count(), 1);
        assert_eq!(blocks[0].block_type, SHB);
        let shb_text = String::from_utf8_lossy(&blocks[0].bytes);
        assert!(shb_text.contains(TARGET_MARKER));
        let names: Vec<String> = blocks
            .iter()
            .filter(|b| b.block_type == IDB)
            .map(|b| if_name_of(&b.bytes))
            .collect();
        assert_eq!(names, ["a/lo", "b/lo", "b/veth0"]);
        let ids: Vec<u32> = blocks
            .iter()
            .filter(|b| b.block_type == EPB)
            .map(|b| h.u32(&b.bytes, 8))
            .collect();
        assert_eq!(ids, [0, 2, 1]);
        assert_eq!(m.interfaces(), 3);
        // Link types travel with their interfaces.
        let links: Vec<u16> = blocks
            .iter()
            .filter(|b| b.block_type == IDB)
            .map(|b| h.u16(&b.bytes, 8))
            .collect();
        assert_eq!(links, [1, 1, 113]);
    }

    #[test]
    fn blocks_arrive_whole_in_any_chunking_and_interleaving() {
        let h = Order::host();
        let a = stream(h, &[idb(h, 1, Some("lo")), epb(h, 0, b"x"), isb(h, 0)]);
        let b = stream(h, &[idb(h, 1, Some("eth0")), epb(h, 0, &[7; 300])]);
        let mut whole = Merger::new(["a", "b"], TARGET_MARKER.to_string());
        let mut expect = Vec::new();
        whole.feed(0, &a, &mut expect).unwrap();
        whole.feed(1, &b, &mut expect).unwrap();
        let expect_blocks = walk(&expect);
        for step in [1, 3, 7, 13, 64] {
            let mut m = Merger::new(["a", "b"], TARGET_MARKER.to_string());
            let mut out = Vec::new();
            let (mut ia, mut ib) = (0, 0);
            while ia < a.len() || ib < b.len() {
                let ea = (ia + step).min(a.len());
                m.feed(0, &a[ia..ea], &mut out).unwrap();
                ia = ea;
                let eb = (ib + step * 2).min(b.len());
                m.feed(1, &b[ib..eb], &mut out).unwrap();
                ib = eb;
                walk(&out);
            }
            let got = walk(&out);
            assert_eq!(got.len(), expect_blocks.len(), "step {step}");
            let mut names: Vec<String> = got
                .iter()
                .filter(|b| b.block_type == IDB)
                .map(|b| if_name_of(&b.bytes))
                .collect();
            // Which input's interface comes first depends on the chunking.
            names.sort();
            assert_eq!(names, ["a/lo", "b/eth0"], "step {step}");
        }
    }

    #[test]
    fn foreign_byte_order_is_converted_to_the_hosts() {
        let h = Order::host();
        let f = if h == Order::Big {
            Order::Little
        } else {
            Order::Big
        };
        let native = stream(h, &[idb(h, 1, Some("lo")), epb(h, 0, b"abcdef"), isb(h, 0)]);
        let foreign = stream(f, &[idb(f, 1, Some("lo")), epb(f, 0, b"abcdef"), isb(f, 0)]);
        let run = |s: &[u8]| {
            let mut m = Merger::new(["t"], TARGET_MARKER.to_string());
            let mut out = Vec::new();
            m.feed(0, s, &mut out).unwrap();
            out
        };
        // The helpers write u64 option values little-endian in both orders,
        // so compare everything but those: fixed fields and names.
        let n = walk(&run(&native));
        let c = walk(&run(&foreign));
        assert_eq!(n.len(), c.len());
        for (x, y) in n.iter().zip(&c) {
            assert_eq!(x.block_type, y.block_type);
            assert_eq!(x.bytes.len(), y.bytes.len());
        }
        assert_eq!(if_name_of(&c[1].bytes), "t/lo");
        // EPB: id, timestamps, lengths, data and the epb_flags option agree.
        assert_eq!(n[2].bytes, c[2].bytes);
        // ISB: id and timestamps agree; the u64 counter is swapped.
        assert_eq!(n[3].bytes[..20], c[3].bytes[..20]);
        let mut swapped = 77u64.to_le_bytes();
        swapped.reverse();
        assert_eq!(c[3].bytes[24..32], swapped);
    }

    #[test]
    fn a_partial_block_waits_and_is_dropped_at_the_end() {
        let h = Order::host();
        let a = stream(h, &[idb(h, 1, Some("lo")), epb(h, 0, b"abcdefgh")]);
        let mut m = Merger::new(["a"], TARGET_MARKER.to_string());
        let mut out = Vec::new();
        m.feed(0, &a[..a.len() - 5], &mut out).unwrap();
        let blocks = walk(&out);
        assert_eq!(
            blocks.iter().map(|b| b.block_type).collect::<Vec<_>>(),
            [SHB, IDB]
        );
        let e = m.finish(0).unwrap_err();
        assert!(e.0.contains("inside a block"), "{e}");
        walk(&out);
    }

    #[test]
    fn a_broken_input_fails_alone() {
        let h = Order::host();
        let good = stream(h, &[idb(h, 1, Some("lo")), epb(h, 0, b"ok")]);
        let mut m = Merger::new(["bad", "good"], TARGET_MARKER.to_string());
        let mut out = Vec::new();
        let e = m.feed(0, b"this is not pcapng", &mut out).unwrap_err();
        assert!(e.0.contains("section header"), "{e}");
        assert!(m.failure(0).is_some());
        assert!(
            m.feed(0, &good, &mut out).is_err(),
            "a failed input stays failed"
        );
        m.feed(1, &good, &mut out).unwrap();
        let blocks = walk(&out);
        assert_eq!(blocks.len(), 3);
        assert_eq!(if_name_of(&blocks[1].bytes), "good/lo");
    }

    #[test]
    fn oversized_and_misnumbered_blocks_are_refused() {
        let h = Order::host();
        let mut big = shb(h);
        big.extend(u32b(h, EPB));
        big.extend(u32b(h, (MAX_BLOCK_LEN + 4) as u32));
        let mut m = Merger::new(["a"], String::new());
        assert!(m
            .feed(0, &big, &mut Vec::new())
            .unwrap_err()
            .0
            .contains("larger"));

        let undescribed = stream(h, &[idb(h, 1, None), epb(h, 3, b"x")]);
        let mut m = Merger::new(["a"], String::new());
        let e = m.feed(0, &undescribed, &mut Vec::new()).unwrap_err();
        assert!(e.0.contains("interface 3"), "{e}");

        let mut odd = shb(h);
        odd.extend(u32b(h, EPB));
        odd.extend(u32b(h, 13));
        let mut m = Merger::new(["a"], String::new());
        assert!(m.feed(0, &odd, &mut Vec::new()).is_err());
    }

    #[test]
    fn nameless_interface_gets_its_local_id_and_spb_becomes_epb_on_interface_0() {
        let h = Order::host();
        let a = stream(h, &[idb(h, 1, Some("x"))]);
        let b = stream(h, &[idb(h, 1, None), spb(h, b"12345")]);
        let mut m = Merger::new(["netns-4026531840", "b"], String::new());
        let mut out = Vec::new();
        m.feed(0, &a, &mut out).unwrap();
        m.feed(1, &b, &mut out).unwrap();
        let blocks = walk(&out);
        assert_eq!(if_name_of(&blocks[1].bytes), "netns-4026531840/x");
        assert_eq!(if_name_of(&blocks[2].bytes), "b/0");
        assert_eq!(blocks[3].block_type, EPB);
        assert_eq!(
            h.u32(&blocks[3].bytes, 8),
            1,
            "b's interface 0 is merged id 1"
        );
        assert_eq!(h.u32(&blocks[3].bytes, 20), 5);
        assert_eq!(&blocks[3].bytes[28..33], b"12345");
    }

    #[test]
    fn a_second_section_in_one_input_describes_new_interfaces() {
        let h = Order::host();
        let mut a = stream(h, &[idb(h, 1, Some("lo")), epb(h, 0, b"1")]);
        a.extend(stream(h, &[idb(h, 1, Some("eth0")), epb(h, 0, b"2")]));
        let mut m = Merger::new(["a"], String::new());
        let mut out = Vec::new();
        m.feed(0, &a, &mut out).unwrap();
        let blocks = walk(&out);
        assert_eq!(blocks.iter().filter(|b| b.block_type == SHB).count(), 1);
        let epbs: Vec<u32> = blocks
            .iter()
            .filter(|b| b.block_type == EPB)
            .map(|b| h.u32(&b.bytes, 8))
            .collect();
        assert_eq!(epbs, [0, 1]);
    }

    /// A 40-byte EPB whose captured length (1,000,000) runs past it.
    fn overrunning_epb(o: Order) -> Vec<u8> {
        let mut b = epb(o, 0, &[0xAB; 8]);
        b.truncate(8 + 20);
        let mut body = b[8..].to_vec();
        body[12..16].copy_from_slice(&u32b(o, 1_000_000));
        body.extend_from_slice(&[0xAB; 8]);
        let block = wrap(o, EPB, &body);
        assert_eq!(block.len(), 40);
        block
    }

    #[test]
    fn every_block_is_checked_alike_in_both_byte_orders() {
        let h = Order::host();
        let f = if h == Order::Big {
            Order::Little
        } else {
            Order::Big
        };
        // Each bad block, in each order: the input is given up, nothing of
        // the block reaches the output, the other input goes on.
        let bad_isb = |o| {
            let mut body = u32b(o, 0);
            body.extend(u32b(o, 0));
            body.extend(u32b(o, 9));
            body.extend(u16b(o, 4));
            body.extend(u16b(o, 200)); // an option longer than the block
            body.extend([0u8; 8]);
            wrap(o, ISB, &body)
        };
        let bad_nrb = |o| {
            let mut body = u16b(o, 1);
            body.extend(u16b(o, 400)); // a record longer than the block
            body.extend([0u8; 8]);
            wrap(o, NRB, &body)
        };
        let bad_dsb = |o| {
            let mut body = u32b(o, 0x544c_534b);
            body.extend(u32b(o, 4096)); // secrets longer than the block
            body.extend([0u8; 8]);
            wrap(o, DSB, &body)
        };
        let short_cb = |o| wrap(o, CB_COPY, b"");
        type Maker = fn(Order) -> Vec<u8>;
        let bad: [(&str, Maker); 5] = [
            ("packet data overruns", overrunning_epb),
            ("option overruns", bad_isb),
            ("record overruns", bad_nrb),
            ("secrets overrun", bad_dsb),
            ("enterprise number", short_cb),
        ];
        for (why, make) in bad {
            for o in [h, f] {
                let mut m = Merger::new(["bad", "good"], String::new());
                let mut out = Vec::new();
                let e = m
                    .feed(0, &stream(o, &[idb(o, 1, None), make(o)]), &mut out)
                    .unwrap_err();
                assert!(e.0.contains(why), "{o:?}: {e}");
                assert_eq!(m.failure(0), Some(&e));
                m.feed(
                    1,
                    &stream(h, &[idb(h, 1, None), epb(h, 0, b"ok")]),
                    &mut out,
                )
                .unwrap();
                let blocks = walk(&out);
                let types: Vec<u32> = blocks.iter().map(|b| b.block_type).collect();
                assert_eq!(types, [SHB, IDB, IDB, EPB], "{why} {o:?}");
            }
        }
    }

    #[test]
    fn control_bytes_in_merged_interface_names_are_escaped() {
        let h = Order::host();
        let mut m = Merger::new(["evil\u{1b}[2J"], String::new());
        let mut out = Vec::new();
        m.feed(0, &stream(h, &[idb(h, 1, Some("eth\r\n0"))]), &mut out)
            .unwrap();
        let blocks = walk(&out);
        let name = if_name_of(&blocks[1].bytes);
        assert_eq!(name, "evil\\u{1b}[2J/eth\\r\\n0");
        assert!(!name.chars().any(char::is_control), "{name:?}");
    }

    #[test]
    fn unknown_blocks_pass_in_host_order_and_are_dropped_in_the_other() {
        let h = Order::host();
        let f = if h == Order::Big {
            Order::Little
        } else {
            Order::Big
        };
        let unknown = |o| wrap(o, 0x0000_0007, b"opaque!!");
        let mut m = Merger::new(["h", "f"], String::new());
        let mut out = Vec::new();
        m.feed(0, &stream(h, &[unknown(h)]), &mut out).unwrap();
        m.feed(1, &stream(f, &[unknown(f)]), &mut out).unwrap();
        let blocks = walk(&out);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[1].bytes, unknown(h));
        assert_eq!(m.dropped(), 1);
    }

    #[test]
    fn host_order_packets_are_ranges_of_the_chunk_patched_in_place() {
        let h = Order::host();
        let a = stream(h, &[idb(h, 1, Some("lo"))]);
        let b = stream(h, &[idb(h, 1, Some("lo"))]);
        let mut m = Merger::new(["a", "b"], TARGET_MARKER.to_string());
        let (mut owned, mut parts) = (Vec::new(), Vec::new());
        let mut chunk = a.clone();
        m.feed_parts(0, &mut chunk, &mut owned, &mut parts).unwrap();
        let mut chunk = b.clone();
        m.feed_parts(1, &mut chunk, &mut owned, &mut parts).unwrap();
        assert!(parts.iter().all(|p| matches!(p, Part::Owned(..))));
        // b's interface 0 is merged id 1: its packets are patched where
        // they lie and named as one range; the block cut off at the end
        // waits and is not named.
        let mut chunk = [epb(h, 0, b"one"), epb(h, 0, b"two"), epb(h, 0, b"three")].concat();
        let cut = chunk.len() - 7;
        let whole = epb(h, 0, b"one").len() + epb(h, 0, b"two").len();
        owned.clear();
        parts.clear();
        m.feed_parts(1, &mut chunk[..cut], &mut owned, &mut parts)
            .unwrap();
        assert_eq!(parts, [Part::Input(0, whole)]);
        assert!(owned.is_empty(), "nothing copied");
        let got = walk(&chunk[..whole]);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|b| h.u32(&b.bytes, 8) == 1));
        // The rest completes the held block: copied, as it spanned reads.
        let mut rest = chunk[cut..].to_vec();
        rest.extend(epb(h, 0, b"four"));
        let four = epb(h, 0, b"four").len();
        owned.clear();
        parts.clear();
        m.feed_parts(1, &mut rest, &mut owned, &mut parts).unwrap();
        let held_len = epb(h, 0, b"three").len();
        assert_eq!(parts, [Part::Owned(0, held_len), Part::Input(7, 7 + four)]);
        assert_eq!(h.u32(&owned, 8), 1);
        assert_eq!(h.u32(&rest, 7 + 8), 1);
    }

    #[test]
    fn parts_assemble_to_what_feed_writes_in_any_chunking() {
        let h = Order::host();
        let f = if h == Order::Big {
            Order::Little
        } else {
            Order::Big
        };
        let a = stream(
            h,
            &[
                idb(h, 1, Some("lo")),
                epb(h, 0, b"x"),
                wrap(h, NRB, &[0; 4]),
                isb(h, 0),
                spb(h, b"spb"),
                epb(h, 0, &[9; 200]),
            ],
        );
        let b = stream(f, &[idb(f, 1, Some("eth0")), epb(f, 0, &[7; 300])]);
        for step in [1, 5, 12, 33, 100, 4096] {
            let mut whole = Merger::new(["a", "b"], TARGET_MARKER.to_string());
            let mut parted = Merger::new(["a", "b"], TARGET_MARKER.to_string());
            let (mut expect, mut got) = (Vec::new(), Vec::new());
            let (mut ia, mut ib) = (0, 0);
            while ia < a.len() || ib < b.len() {
                for (i, s, at) in [(0, &a, &mut ia), (1, &b, &mut ib)] {
                    let end = (*at + step).min(s.len());
                    whole.feed(i, &s[*at..end], &mut expect).unwrap();
                    let mut chunk = s[*at..end].to_vec();
                    let (mut owned, mut parts) = (Vec::new(), Vec::new());
                    parted
                        .feed_parts(i, &mut chunk, &mut owned, &mut parts)
                        .unwrap();
                    for p in parts {
                        got.extend_from_slice(match p {
                            Part::Input(s, e) => &chunk[s..e],
                            Part::Owned(s, e) => &owned[s..e],
                        });
                    }
                    *at = end;
                }
            }
            assert_eq!(got, expect, "step {step}");
            assert_eq!(walk(&got).len(), 1 + 6 + 2, "step {step}");
        }
    }

    #[test]
    fn random_bytes_never_panic_and_output_stays_whole_blocks() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let h = Order::host();
        let base = stream(h, &[idb(h, 1, Some("lo")), epb(h, 0, b"abc"), isb(h, 0)]);
        for _ in 0..2000 {
            let mut s = base.clone();
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % s.len();
                s[at] = next() as u8;
            }
            let mut m = Merger::new(["a", "b"], String::new());
            let mut out = Vec::new();
            let mut at = 0;
            while at < s.len() {
                let end = (at + 1 + (next() as usize) % 40).min(s.len());
                let _ = m.feed((next() % 2) as usize, &s[at..end], &mut out);
                at = end;
            }
            let _ = m.finish(0);
            let _ = m.finish(1);
            walk(&out);
        }
    }
}
