//! The merger of several capture programs' pcapng streams, fed in reads of
//! fuzzer-chosen sizes and interleavings.
//!
//! Input layout: one mode byte, then a script. Mode bit 0 set ("built"):
//! the script describes up to four well-formed streams, one op byte at a
//! time (`op % 6`: 0 an IDB, 1 an EPB on interface `next byte % IDBs`, 2 an
//! ISB, 3 an SPB, 4 an unknown block type, 5 a new section), each input's
//! byte order from mode bits 1-4 (unknown blocks only in the host's order,
//! where they must pass); every packet and unknown block carries a tag
//! naming its input and sequence number. Mode bit 0 clear ("raw"): the
//! script is cut into up to four raw streams. Then, for both, the remaining
//! bytes choose which input's next read goes in and how long it is.
//!
//! Invariants: no panic; the output is valid pcapng: whole blocks, lengths
//! chaining, the host's byte order, exactly one SHB, first, holding
//! `TARGET_MARKER`; every IDB is named `<input name>/...`; every block that
//! names an interface names one described earlier; every block whose layout
//! the spec gives is sound (its fixed part fits, packet data, records and
//! secrets end inside it, options are well formed), checked here by a
//! reader of its own rather than the merger's check. Built mode: no input
//! fails, nothing is dropped, and every input block other than its SHBs is
//! in the output exactly once (tags), with its interface mapped to the IDB
//! that described it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use packetflix::proto::merge::Merger;
use packetflix::proto::pcapng::TARGET_MARKER;

const NAMES: [&str; 4] = ["a", "b", "netns-4026532000", "d"];
const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const SPB: u32 = 3;
const ISB: u32 = 5;
const EPB: u32 = 6;
const UNKNOWN: u32 = 0x0000_0101;
const IF_NAME: u16 = 2;

#[derive(Clone, Copy, PartialEq)]
enum Order {
    Big,
    Little,
}

fn host() -> Order {
    if cfg!(target_endian = "big") {
        Order::Big
    } else {
        Order::Little
    }
}

impl Order {
    fn u16(self, v: u16) -> [u8; 2] {
        match self {
            Order::Big => v.to_be_bytes(),
            Order::Little => v.to_le_bytes(),
        }
    }
    fn u32(self, v: u32) -> [u8; 4] {
        match self {
            Order::Big => v.to_be_bytes(),
            Order::Little => v.to_le_bytes(),
        }
    }
}

fn rd16(b: &[u8], at: usize) -> u16 {
    let a = [b[at], b[at + 1]];
    if host() == Order::Big {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    }
}

fn rd32(b: &[u8], at: usize) -> u32 {
    let a = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if host() == Order::Big {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

fn pad(v: &mut Vec<u8>) {
    while v.len() % 4 != 0 {
        v.push(0);
    }
}

fn block(o: Order, t: u32, body: &[u8]) -> Vec<u8> {
    let mut b = body.to_vec();
    pad(&mut b);
    let len = (b.len() + 12) as u32;
    let mut out = o.u32(t).to_vec();
    out.extend(o.u32(len));
    out.extend(b);
    out.extend(o.u32(len));
    out
}

fn option(o: Order, code: u16, value: &[u8]) -> Vec<u8> {
    let mut v = o.u16(code).to_vec();
    v.extend(o.u16(value.len() as u16));
    v.extend(value);
    pad(&mut v);
    v
}

fn shb(o: Order) -> Vec<u8> {
    let mut body = o.u32(0x1A2B_3C4D).to_vec();
    body.extend(o.u16(1));
    body.extend(o.u16(0));
    body.extend([0xFF; 8]);
    body.extend(option(o, 1, b"from the capture program"));
    body.extend([0; 4]);
    block(o, SHB, &body)
}

/// The tag in a packet: input and sequence number, so a copy is told apart.
fn tag(input: usize, seq: u32) -> Vec<u8> {
    let mut t = b"TAG".to_vec();
    t.push(input as u8);
    t.extend(seq.to_be_bytes());
    t
}

/// What the output must hold for one built input block.
struct Expect {
    block_type: u32,
    tag: Vec<u8>,
    /// Local interface index in the merged id space order (the n-th IDB of
    /// all inputs as emitted is unknown up front, so: input, section, local).
    iface: Option<(usize, u32, u32)>,
}

struct Built {
    streams: Vec<Vec<u8>>,
    expect: Vec<Expect>,
}

fn build(mode: u8, script: &[u8]) -> Built {
    let n = 1 + usize::from(script.first().copied().unwrap_or(0) % 4);
    let orders: Vec<Order> = (0..n)
        .map(|i| {
            if mode >> (1 + i) & 1 == 1 {
                Order::Big
            } else {
                Order::Little
            }
        })
        .collect();
    let mut streams: Vec<Vec<u8>> = orders.iter().map(|&o| shb(o)).collect();
    let mut idbs = vec![0u32; n];
    let mut sections = vec![0u32; n];
    let mut seq = 0u32;
    let mut expect = Vec::new();
    let mut it = script.iter().skip(1);
    while let (Some(&who), Some(&op)) = (it.next(), it.next()) {
        let i = usize::from(who) % n;
        let o = orders[i];
        seq += 1;
        let t = tag(i, seq);
        match op % 6 {
            0 => {
                let mut body = o.u16(1).to_vec();
                body.extend(o.u16(0));
                body.extend(o.u32(262_144));
                if seq % 3 != 0 {
                    body.extend(option(o, IF_NAME, format!("if{seq}").as_bytes()));
                }
                body.extend(option(o, 8, &1_000_000_000u64.to_le_bytes()));
                body.extend([0; 4]);
                streams[i].extend(block(o, IDB, &body));
                expect.push(Expect {
                    block_type: IDB,
                    tag: Vec::new(),
                    iface: Some((i, sections[i], idbs[i])),
                });
                idbs[i] += 1;
            }
            1 | 2 | 3 if idbs[i] > 0 => {
                let local = match op % 6 {
                    1 => u32::from(*it.next().unwrap_or(&0)) % idbs[i],
                    2 => idbs[i] - 1,
                    _ => 0,
                };
                let (bt, body) = match op % 6 {
                    1 => {
                        let mut body = o.u32(local).to_vec();
                        body.extend(o.u32(0));
                        body.extend(o.u32(seq));
                        body.extend(o.u32(t.len() as u32));
                        body.extend(o.u32(t.len() as u32 + 100));
                        body.extend(&t);
                        (EPB, body)
                    }
                    2 => {
                        let mut body = o.u32(local).to_vec();
                        body.extend(o.u32(0));
                        body.extend(o.u32(seq));
                        // A comment carries the tag through conversion.
                        body.extend(option(o, 1, &t));
                        body.extend(option(o, 4, &7u64.to_le_bytes()));
                        body.extend([0; 4]);
                        (ISB, body)
                    }
                    _ => {
                        let mut body = o.u32(t.len() as u32).to_vec();
                        body.extend(&t);
                        (SPB, body)
                    }
                };
                streams[i].extend(block(o, bt, &body));
                expect.push(Expect {
                    // An SPB comes out as an EPB on the input's interface 0.
                    block_type: if bt == SPB { EPB } else { bt },
                    tag: t,
                    iface: Some((i, sections[i], local)),
                });
            }
            4 if o == host() => {
                streams[i].extend(block(o, UNKNOWN, &t));
                expect.push(Expect {
                    block_type: UNKNOWN,
                    tag: t,
                    iface: None,
                });
            }
            5 => {
                streams[i].extend(shb(o));
                sections[i] += 1;
                idbs[i] = 0;
            }
            _ => {}
        }
    }
    Built { streams, expect }
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Walks the output; returns (type, block) for each, checking the framing.
fn walk(out: &[u8]) -> Vec<(u32, &[u8])> {
    let mut at = 0;
    let mut blocks = Vec::new();
    while at < out.len() {
        assert!(out.len() - at >= 12, "trailing bytes at {at}");
        let len = rd32(out, at + 4) as usize;
        assert!(len >= 12 && len % 4 == 0, "bad block length {len} at {at}");
        assert!(at + len <= out.len(), "block at {at} overruns the output");
        assert_eq!(rd32(out, at + len - 4) as usize, len, "trailer at {at}");
        blocks.push((rd32(out, at), &out[at..at + len]));
        at += len;
    }
    blocks
}

/// Options from `at` to the block's trailer: each inside, up to the end
/// or an end-of-options option.
fn options_sound(b: &[u8], mut at: usize) -> bool {
    let end = b.len() - 4;
    while at < end {
        if at + 4 > end {
            return false;
        }
        let code = rd16(b, at);
        let len = usize::from(rd16(b, at + 2));
        at += 4 + len.div_ceil(4) * 4;
        if at > end {
            return false;
        }
        if code == 0 {
            break;
        }
    }
    true
}

/// Whether a merged block (host order, framing already checked) is sound.
fn block_sound(t: u32, b: &[u8]) -> bool {
    let end = b.len() - 4;
    let data_then_options = |fixed: usize, len_at: usize| {
        fixed + 4 <= b.len() && {
            let data_end = (rd32(b, len_at) as usize).div_ceil(4) * 4 + fixed;
            data_end <= end && options_sound(b, data_end)
        }
    };
    match t {
        IDB => 20 <= b.len() && options_sound(b, 16),
        // Packet Block and Enhanced Packet Block: captured length at 20.
        2 | EPB => data_then_options(28, 20),
        SPB => 16 <= b.len(),
        // Name Resolution Block: records up to the end record.
        4 => {
            let mut at = 8;
            loop {
                if at + 4 > end {
                    return false;
                }
                let (rt, rl) = (rd16(b, at), usize::from(rd16(b, at + 2)));
                at += 4 + rl.div_ceil(4) * 4;
                if at > end {
                    return false;
                }
                if rt == 0 {
                    return options_sound(b, at);
                }
            }
        }
        ISB => 24 <= b.len() && options_sound(b, 20),
        // Decryption Secrets Block: secrets length at 12.
        0x0A => data_then_options(16, 12),
        // Custom Blocks: the Private Enterprise Number.
        0x0BAD | 0x4000_0BAD => 16 <= b.len(),
        _ => true,
    }
}

fn if_name(idb: &[u8]) -> Vec<u8> {
    let mut at = 16;
    while at + 4 <= idb.len() - 4 {
        let code = rd16(idb, at);
        let len = usize::from(rd16(idb, at + 2));
        if code == IF_NAME {
            return idb[at + 4..at + 4 + len].to_vec();
        }
        if code == 0 {
            break;
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    panic!("merged IDB without if_name");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let built_mode = mode & 1 == 1;
    // The first half describes the streams, the second their feeding.
    let (script, feeding) = rest.split_at(rest.len() / 2);
    let (streams, expect) = if built_mode {
        let b = build(mode, script);
        (b.streams, Some(b.expect))
    } else {
        let n = 1 + usize::from(mode >> 1) % 4;
        let size = script.len().div_ceil(n).max(1);
        (script.chunks(size).map(<[u8]>::to_vec).collect(), None)
    };
    let n = streams.len().max(1);
    let mut merger = Merger::new(NAMES[..n].iter().copied(), format!("{TARGET_MARKER}x: 1\n"));
    let mut out = Vec::new();
    let mut pos = vec![0usize; streams.len()];
    let mut f = feeding.iter().cycle();
    // Bounded: every turn feeds at least one byte of some unfinished input.
    let total: usize = streams.iter().map(Vec::len).sum();
    for _ in 0..=total {
        let open: Vec<usize> = (0..streams.len())
            .filter(|&i| pos[i] < streams[i].len())
            .collect();
        if open.is_empty() {
            break;
        }
        let pick = f.next().copied().unwrap_or(0);
        let i = open[usize::from(pick) % open.len()];
        let len = 1 + usize::from(f.next().copied().unwrap_or(255)) * 4;
        let end = (pos[i] + len).min(streams[i].len());
        let r = merger.feed(i, &streams[i][pos[i]..end], &mut out);
        if expect.is_some() {
            assert!(r.is_ok(), "a well-formed input failed: {r:?}");
        }
        pos[i] = end;
    }
    for i in 0..streams.len() {
        let r = merger.finish(i);
        if expect.is_some() {
            assert!(r.is_ok(), "a well-formed input left a partial block: {r:?}");
        }
    }
    if let Some(h) = merger.take_header() {
        out.splice(0..0, h);
    }
    let blocks = walk(&out);
    assert!(!blocks.is_empty() && blocks[0].0 == SHB, "no SHB first");
    assert_eq!(
        blocks.iter().filter(|b| b.0 == SHB).count(),
        1,
        "more than one SHB"
    );
    assert!(
        find(blocks[0].1, TARGET_MARKER.as_bytes()),
        "SHB without the marker"
    );
    for (t, b) in &blocks[1..] {
        assert!(
            block_sound(*t, b),
            "an invalid block of type {t:#x} was emitted"
        );
    }
    let mut described = 0u32;
    let mut idb_names = Vec::new();
    for (t, b) in &blocks {
        match *t {
            IDB => {
                let name = if_name(b);
                assert!(
                    NAMES[..n]
                        .iter()
                        .any(|p| name.starts_with(format!("{p}/").as_bytes())),
                    "IDB name without an input prefix"
                );
                idb_names.push(name);
                described += 1;
            }
            EPB | ISB => assert!(rd32(b, 8) < described, "interface id not described yet"),
            _ => {}
        }
    }
    assert_eq!(described, merger.interfaces());
    let Some(expect) = expect else {
        return;
    };
    assert_eq!(merger.dropped(), 0);
    // Every input block other than SHBs, once: same count, each tag once,
    // each on the interface its input meant (checked by the IDB order per
    // input: the k-th IDB of (input, section) in the output).
    assert_eq!(blocks.len() - 1, expect.len(), "blocks lost or duplicated");
    let mut idb_of: Vec<(usize, u32, u32)> = Vec::new();
    // Rebuild which (input, section, local) each merged id stands for: IDBs
    // of one input come out in its order, so assign them per input.
    let mut per_input: Vec<Vec<(u32, u32)>> = vec![Vec::new(); n];
    for e in expect.iter().filter(|e| e.block_type == IDB) {
        let (i, s, l) = e.iface.unwrap_or_default();
        per_input[i].push((s, l));
    }
    let mut next = vec![0usize; n];
    for name in &idb_names {
        let i = NAMES[..n]
            .iter()
            .position(|p| name.starts_with(format!("{p}/").as_bytes()))
            .unwrap_or(0);
        let (s, l) = per_input[i][next[i]];
        next[i] += 1;
        idb_of.push((i, s, l));
    }
    for e in expect.iter().filter(|e| e.block_type != IDB) {
        let hits: Vec<&(u32, &[u8])> = blocks.iter().filter(|b| find(b.1, &e.tag)).collect();
        assert_eq!(
            hits.len(),
            1,
            "a tagged block is not in the output exactly once"
        );
        assert_eq!(hits[0].0, e.block_type, "block type changed");
        if let Some(want) = e.iface {
            let id = rd32(hits[0].1, 8) as usize;
            assert_eq!(idb_of[id], want, "block moved to another interface");
        }
    }
});
