//! Classic BPF programs for packet sockets, sans-IO: what a compiled
//! capture filter must become before the kernel runs it, and the kernel's
//! own acceptance rules, checked here first so that a program the kernel
//! would refuse is refused with a reason instead.
//!
//! libpcap compiles a filter for a link type (`crate::service::engine`
//! does that, off the loop); [`prepare`] then
//! - rewrites a program compiled for the cooked link type `LINUX_SLL` to
//!   run on a `SOCK_DGRAM` packet socket, where the kernel's packet starts
//!   at the network header and the cooked header does not exist: offsets
//!   past the 16-byte header move down, its packet-type and protocol fields
//!   become the kernel's ancillary loads, `len` gets the header's 16 bytes
//!   added back (libpcap's `fix_program`/`fix_offset` in pcap-linux.c do the
//!   first two; they leave `len` off by 16 and map wider or narrower loads
//!   of those fields too, which read other bytes: both refused or fixed
//!   here); a program that reads any other header byte is refused;
//! - makes every accepting return the capture's snap length, 262144
//!   (libpcap's dead handle compiles `ret #65535`, which would cut the
//!   64 KiB packets of `lo` and of GRO);
//! - puts a prologue first that drops the loopback device's outgoing
//!   packets (each comes back as an incoming one: libpcap skips them in
//!   user space, after the kernel has counted them; in the program the
//!   kernel neither stores nor counts them);
//! - checks the result as the kernel's `bpf_check_classic` does.
//!
//! [`clauses`] bounds what compiling may cost: libpcap's optimizer grows
//! about with the cube of the number of `and`/`or` clauses (measured with
//! Debian 12's libpcap 1.10.3: 32 `portrange` clauses 27 ms, 64 clauses
//! 0.24 s, 128 clauses 1.6 s, 256 clauses 14 s of CPU).
//!
//! [`run`] interprets a program (tests and the fuzzer check rewrites with
//! it). Nothing here does I/O.

/// One instruction, as `struct sock_filter` (`<linux/filter.h>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

impl Insn {
    pub const fn stmt(code: u16, k: u32) -> Insn {
        Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
        Insn { code, jt, jf, k }
    }
}

// Instruction classes, sizes, modes and operations (`<linux/bpf_common.h>`).
pub const LD: u16 = 0x00;
pub const LDX: u16 = 0x01;
pub const ST: u16 = 0x02;
pub const STX: u16 = 0x03;
pub const ALU: u16 = 0x04;
pub const JMP: u16 = 0x05;
pub const RET: u16 = 0x06;
pub const MISC: u16 = 0x07;
pub const W: u16 = 0x00;
pub const H: u16 = 0x08;
pub const B: u16 = 0x10;
pub const IMM: u16 = 0x00;
pub const ABS: u16 = 0x20;
pub const IND: u16 = 0x40;
pub const MEM: u16 = 0x60;
pub const LEN: u16 = 0x80;
pub const MSH: u16 = 0xa0;
pub const ADD: u16 = 0x00;
pub const SUB: u16 = 0x10;
pub const MUL: u16 = 0x20;
pub const DIV: u16 = 0x30;
pub const OR: u16 = 0x40;
pub const AND: u16 = 0x50;
pub const LSH: u16 = 0x60;
pub const RSH: u16 = 0x70;
pub const NEG: u16 = 0x80;
pub const MOD: u16 = 0x90;
pub const XOR: u16 = 0xa0;
pub const JA: u16 = 0x00;
pub const JEQ: u16 = 0x10;
pub const JGT: u16 = 0x20;
pub const JGE: u16 = 0x30;
pub const JSET: u16 = 0x40;
pub const K: u16 = 0x00;
pub const X: u16 = 0x08;
pub const A: u16 = 0x10;
pub const TAX: u16 = 0x00;
pub const TXA: u16 = 0x80;

/// `SKF_AD_OFF` (`<linux/filter.h>`): loads at this offset and above read
/// the kernel's ancillary data, not the packet.
pub const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
pub const SKF_AD_PROTOCOL: u32 = 0;
pub const SKF_AD_PKTTYPE: u32 = 4;
pub const SKF_AD_IFINDEX: u32 = 8;
pub const SKF_AD_HATYPE: u32 = 28;
/// One past the last ancillary field the kernel knows (`SKF_AD_MAX`, 64 in
/// Linux 6.x; each field is 4 bytes apart).
pub const SKF_AD_MAX: u32 = 64;
/// The kernel's longest classic program (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;
/// Scratch memory words of a classic program (`BPF_MEMWORDS`).
pub const MEM_WORDS: u32 = 16;
/// The snap length the kernel takes from an accepting return: dumpcap's
/// (262144, libpcap's `MAXIMUM_SNAPLEN`), so both engines cut alike.
pub const SNAPLEN: u32 = 262_144;
/// Length of the cooked header `LINUX_SLL` (`SLL_HDR_LEN`).
pub const SLL_HDR_LEN: u32 = 16;
/// Where the cooked header holds the packet type and the protocol.
const SLL_PKTTYPE_AT: u32 = 0;
const SLL_PROTOCOL_AT: u32 = 14;
/// `PACKET_OUTGOING` (`<linux/if_packet.h>`).
pub const PACKET_OUTGOING: u32 = 4;
/// The loopback device's interface index in every network namespace
/// (`LOOPBACK_IFINDEX`, `<net/net_namespace.h>`: it is registered first).
pub const LOOPBACK_IFINDEX: u32 = 1;
/// Most `and`/`or` clauses a filter may have (see the module text: 64
/// clauses of the costliest kind measured compile in about 0.25 s).
pub const MAX_CLAUSES: usize = 64;

const fn class(code: u16) -> u16 {
    code & 0x07
}
const fn size(code: u16) -> u16 {
    code & 0x18
}
const fn mode(code: u16) -> u16 {
    code & 0xe0
}

/// Which loopback packets the prologue of [`prepare`] drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loopback {
    /// Not bound to the loopback device: nothing dropped.
    No,
    /// Bound to it: every outgoing packet.
    Bound,
    /// Bound to every interface (`any`): outgoing packets of interface
    /// [`LOOPBACK_IFINDEX`].
    Any,
}

/// The number of clauses of a filter expression: one more than its `and`,
/// `or`, `&&` and `||` operators. Counted on words (runs of letters and
/// digits), so a host name with `or` inside counts once more: a bound that
/// is only ever stricter than the grammar's.
pub fn clauses(filter: &str) -> usize {
    let words = filter
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| *w == "and" || *w == "or")
        .count();
    1 + words + filter.matches("&&").count() + filter.matches("||").count()
}

/// The refusal for a filter over [`MAX_CLAUSES`], or nothing.
pub fn check_cost(filter: &str) -> Result<(), String> {
    let n = clauses(filter);
    if n > MAX_CLAUSES {
        return Err(format!(
            "the capture filter has {n} and/or clauses; at most {MAX_CLAUSES} are allowed \
             (compiling longer filters takes seconds)"
        ));
    }
    Ok(())
}

/// Turns a program libpcap compiled into the one to attach: the cooked
/// rewrite if `cooked`, returns of [`SNAPLEN`], the loopback prologue; then
/// the kernel's checks. `Err` says why the program cannot run in the
/// kernel.
pub fn prepare(compiled: &[Insn], cooked: bool, lo: Loopback) -> Result<Vec<Insn>, String> {
    let mut prog = if cooked {
        cooked_rewrite(compiled)?
    } else {
        compiled.to_vec()
    };
    for i in &mut prog {
        if i.code == RET | K && i.k != 0 {
            i.k = SNAPLEN;
        }
    }
    let mut out = prologue(lo);
    out.extend(prog);
    check(&out)?;
    Ok(out)
}

/// The program of a capture without a filter: accept everything whole.
pub fn accept_all() -> Vec<Insn> {
    vec![Insn::stmt(RET | K, SNAPLEN)]
}

/// Instructions that drop loopback packets going out, then set A back to
/// 0 (the value a program starts with).
fn prologue(lo: Loopback) -> Vec<Insn> {
    let pkttype = Insn::stmt(LD | W | ABS, SKF_AD_OFF + SKF_AD_PKTTYPE);
    let reset = Insn::stmt(LD | IMM, 0);
    match lo {
        Loopback::No => Vec::new(),
        Loopback::Bound => vec![
            pkttype,
            Insn::jump(JMP | JEQ | K, PACKET_OUTGOING, 0, 1),
            Insn::stmt(RET | K, 0),
            reset,
        ],
        Loopback::Any => vec![
            pkttype,
            Insn::jump(JMP | JEQ | K, PACKET_OUTGOING, 0, 3),
            Insn::stmt(LD | W | ABS, SKF_AD_OFF + SKF_AD_IFINDEX),
            Insn::jump(JMP | JEQ | K, LOOPBACK_IFINDEX, 0, 1),
            Insn::stmt(RET | K, 0),
            reset,
        ],
    }
}

/// A program compiled for `LINUX_SLL` made to run on a cooked socket (see
/// the module text).
fn cooked_rewrite(prog: &[Insn]) -> Result<Vec<Insn>, String> {
    // Each instruction becomes one or two; `at[i]` is where instruction i
    // starts in the output, `at[len]` the end.
    let mut expanded: Vec<Vec<Insn>> = Vec::with_capacity(prog.len());
    for (pc, &i) in prog.iter().enumerate() {
        expanded.push(cooked_insn(pc, i)?);
    }
    let mut at = Vec::with_capacity(prog.len() + 1);
    let mut n = 0usize;
    for e in &expanded {
        at.push(n);
        n += e.len();
    }
    at.push(n);
    let mut out = Vec::with_capacity(n);
    for (pc, e) in expanded.into_iter().enumerate() {
        for mut i in e {
            if class(i.code) == JMP {
                let here = out.len();
                let moved = |off: usize| -> Result<usize, String> {
                    let target = pc + 1 + off;
                    let Some(&t) = at.get(target) else {
                        return Err(format!("instruction {pc} jumps past the program's end"));
                    };
                    Ok(t - here - 1)
                };
                if i.code == JMP | JA {
                    let k = moved(i.k as usize)?;
                    i.k = u32::try_from(k).map_err(|_| "a jump is too long".to_string())?;
                } else {
                    let too_long = || {
                        "the filter is too long for the cooked rewrite (a jump no longer fits)"
                            .to_string()
                    };
                    i.jt = u8::try_from(moved(usize::from(i.jt))?).map_err(|_| too_long())?;
                    i.jf = u8::try_from(moved(usize::from(i.jf))?).map_err(|_| too_long())?;
                }
            }
            out.push(i);
        }
    }
    Ok(out)
}

/// One instruction of a cooked rewrite (unchanged, moved, or two).
fn cooked_insn(pc: usize, i: Insn) -> Result<Vec<Insn>, String> {
    let c = class(i.code);
    if c != LD && c != LDX {
        return Ok(vec![i]);
    }
    let header_read = |what: &str| {
        Err(format!(
            "the filter reads {what} of the cooked header (instruction {pc}), which the kernel \
             cannot filter on for `any`"
        ))
    };
    match mode(i.code) {
        LEN if c == LD => Ok(vec![i, Insn::stmt(ALU | ADD | K, SLL_HDR_LEN)]),
        LEN => Err(format!(
            "the filter loads the packet length into X (instruction {pc}), which the cooked \
             rewrite cannot correct"
        )),
        ABS if c == LD && i.k >= SKF_AD_OFF => Ok(vec![i]),
        ABS | IND | MSH if i.k >= 1 << 31 => header_read("a negative offset"),
        ABS | IND | MSH if i.k >= SLL_HDR_LEN => Ok(vec![Insn {
            k: i.k - SLL_HDR_LEN,
            ..i
        }]),
        ABS if c == LD && size(i.code) == H && i.k == SLL_PKTTYPE_AT => Ok(vec![Insn {
            k: SKF_AD_OFF + SKF_AD_PKTTYPE,
            ..i
        }]),
        ABS if c == LD && size(i.code) == H && i.k == SLL_PROTOCOL_AT => Ok(vec![Insn {
            k: SKF_AD_OFF + SKF_AD_PROTOCOL,
            ..i
        }]),
        ABS | IND | MSH => header_read(&format!("byte {}", i.k)),
        _ => Ok(vec![i]),
    }
}

/// Whether the kernel accepts `code` in a classic program (the table of
/// `bpf_check_classic`, net/core/filter.c).
fn allowed(code: u16) -> bool {
    const ALU_OPS: [u16; 10] = [ADD, SUB, MUL, DIV, MOD, AND, OR, XOR, LSH, RSH];
    const JUMPS: [u16; 4] = [JEQ, JGT, JGE, JSET];
    const LOADS: [u16; 9] = [
        LD | W | ABS,
        LD | H | ABS,
        LD | B | ABS,
        LD | W | IND,
        LD | H | IND,
        LD | B | IND,
        LD | W | LEN,
        LD | IMM,
        LD | MEM,
    ];
    const OTHERS: [u16; 11] = [
        LDX | W | LEN,
        LDX | B | MSH,
        LDX | IMM,
        LDX | MEM,
        ST,
        STX,
        MISC | TAX,
        MISC | TXA,
        RET | K,
        RET | A,
        ALU | NEG,
    ];
    let src_is_k_or_x = |base: u16| code == base | K || code == base | X;
    LOADS.contains(&code)
        || OTHERS.contains(&code)
        || code == JMP | JA
        || ALU_OPS.iter().any(|&op| src_is_k_or_x(ALU | op))
        || JUMPS.iter().any(|&op| src_is_k_or_x(JMP | op))
}

/// The kernel's checks of a classic program (`bpf_check_classic` and
/// `check_load_and_stores`, net/core/filter.c): length, known opcodes, no
/// division by a constant zero, shifts below 32, scratch words in range,
/// every jump inside the program, known ancillary loads, a return last, and
/// no scratch word read before every path to it wrote it.
pub fn check(prog: &[Insn]) -> Result<(), String> {
    let len = prog.len();
    if len == 0 || len > MAX_INSNS {
        return Err(format!(
            "the compiled filter has {len} instructions; the kernel takes 1 to {MAX_INSNS}"
        ));
    }
    for (pc, i) in prog.iter().enumerate() {
        let bad = |why: &str| Err(format!("instruction {pc} ({:#06x}): {why}", i.code));
        if !allowed(i.code) {
            return bad("an operation the kernel does not know");
        }
        let after = len - pc - 1;
        let problem = match i.code {
            c if (c == ALU | DIV | K || c == ALU | MOD | K) && i.k == 0 => Some("division by zero"),
            c if (c == ALU | LSH | K || c == ALU | RSH | K) && i.k >= 32 => {
                Some("a shift of 32 or more")
            }
            c if (c == LD | MEM || c == LDX | MEM || c == ST || c == STX) && i.k >= MEM_WORDS => {
                Some("a scratch word out of range")
            }
            c if c == JMP | JA && i.k as usize >= after => Some("a jump past the end"),
            c if c != JMP | JA
                && class(c) == JMP
                && (usize::from(i.jt) >= after || usize::from(i.jf) >= after) =>
            {
                Some("a jump past the end")
            }
            c if class(c) == LD
                && mode(c) == ABS
                && i.k >= SKF_AD_OFF
                && (i.k - SKF_AD_OFF >= SKF_AD_MAX || i.k % 4 != 0) =>
            {
                Some("an unknown ancillary load")
            }
            _ => None,
        };
        if let Some(why) = problem {
            return bad(why);
        }
    }
    if !matches!(prog[len - 1].code, c if c == RET | K || c == RET | A) {
        return Err("the compiled filter does not end with a return".into());
    }
    let mut masks = vec![u16::MAX; len];
    let mut valid: u16 = 0;
    for (pc, i) in prog.iter().enumerate() {
        valid &= masks[pc];
        match i.code {
            c if c == ST || c == STX => valid |= 1 << i.k,
            c if (c == LD | MEM || c == LDX | MEM) && valid & (1 << i.k) == 0 => {
                return Err(format!(
                    "instruction {pc} reads scratch word {} before it is written",
                    i.k
                ));
            }
            c if c == JMP | JA => {
                masks[pc + 1 + i.k as usize] &= valid;
                valid = u16::MAX;
            }
            c if class(c) == JMP => {
                masks[pc + 1 + usize::from(i.jt)] &= valid;
                masks[pc + 1 + usize::from(i.jf)] &= valid;
                valid = u16::MAX;
            }
            _ => {}
        }
    }
    Ok(())
}

/// What the kernel knows about a packet besides its bytes, for [`run`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Aux {
    pub protocol: u16,
    pub pkttype: u8,
    pub ifindex: u32,
    pub hatype: u16,
}

/// Runs a checked program on `pkt` as the kernel's interpreter would: the
/// snap length it returns (0: dropped). A load outside the packet ends the
/// program with 0, as in the kernel; so does a division by X = 0.
pub fn run(prog: &[Insn], pkt: &[u8], aux: &Aux) -> u32 {
    let (mut a, mut x) = (0u32, 0u32);
    let mut mem = [0u32; MEM_WORDS as usize];
    let mut pc = 0usize;
    let load = |at: u32, sz: u16| -> Option<u32> {
        let at = at as usize;
        let n = match sz {
            W => 4,
            H => 2,
            _ => 1,
        };
        let b = pkt.get(at..at.checked_add(n)?)?;
        Some(b.iter().fold(0u32, |v, &byte| (v << 8) | u32::from(byte)))
    };
    // A checked program has at most MAX_INSNS instructions and jumps only
    // forward, so it ends within that many steps.
    for _ in 0..=MAX_INSNS {
        let Some(&i) = prog.get(pc) else {
            return 0;
        };
        pc += 1;
        match class(i.code) {
            LD | LDX => {
                let v = match mode(i.code) {
                    IMM => i.k,
                    LEN => pkt.len() as u32,
                    MEM => mem[(i.k % MEM_WORDS) as usize],
                    ABS if i.k >= SKF_AD_OFF => match i.k - SKF_AD_OFF {
                        SKF_AD_PROTOCOL => u32::from(aux.protocol),
                        SKF_AD_PKTTYPE => u32::from(aux.pkttype),
                        SKF_AD_IFINDEX => aux.ifindex,
                        SKF_AD_HATYPE => u32::from(aux.hatype),
                        _ => 0,
                    },
                    ABS => match load(i.k, size(i.code)) {
                        Some(v) => v,
                        None => return 0,
                    },
                    IND => match x.checked_add(i.k).and_then(|at| load(at, size(i.code))) {
                        Some(v) => v,
                        None => return 0,
                    },
                    MSH => match load(i.k, B) {
                        Some(v) => (v & 0xf) << 2,
                        None => return 0,
                    },
                    _ => return 0,
                };
                if class(i.code) == LD {
                    a = v;
                } else {
                    x = v;
                }
            }
            ST => mem[(i.k % MEM_WORDS) as usize] = a,
            STX => mem[(i.k % MEM_WORDS) as usize] = x,
            ALU => {
                let v = if i.code & X != 0 { x } else { i.k };
                a = match i.code & 0xf0 {
                    ADD => a.wrapping_add(v),
                    SUB => a.wrapping_sub(v),
                    MUL => a.wrapping_mul(v),
                    DIV | MOD if v == 0 => return 0,
                    DIV => a / v,
                    MOD => a % v,
                    OR => a | v,
                    AND => a & v,
                    LSH => a.checked_shl(v).unwrap_or(0),
                    RSH => a.checked_shr(v).unwrap_or(0),
                    NEG => a.wrapping_neg(),
                    XOR => a ^ v,
                    _ => return 0,
                };
            }
            JMP => {
                if i.code == JMP | JA {
                    pc += i.k as usize;
                    continue;
                }
                let v = if i.code & X != 0 { x } else { i.k };
                let taken = match i.code & 0xf0 {
                    JEQ => a == v,
                    JGT => a > v,
                    JGE => a >= v,
                    JSET => a & v != 0,
                    _ => return 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            RET => return if i.code & A != 0 { a } else { i.k },
            _ => {
                if i.code & TXA != 0 {
                    a = x;
                } else {
                    x = a;
                }
            }
        }
    }
    0
}

/// The kernel's view of a packet libpcap's cooked header describes: the
/// header's packet type, protocol and hardware type as ancillary data, the
/// packet after it as the bytes. For tests and the fuzzer.
pub fn cooked_view(sll_packet: &[u8]) -> Option<(&[u8], Aux)> {
    let header = sll_packet.get(..SLL_HDR_LEN as usize)?;
    let u16_at = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    let aux = Aux {
        pkttype: u8::try_from(u16_at(0)).ok()?,
        hatype: u16_at(2),
        protocol: u16_at(14),
        ifindex: 2,
    };
    Some((&sll_packet[SLL_HDR_LEN as usize..], aux))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(v: &[(u16, u8, u8, u32)]) -> Vec<Insn> {
        v.iter()
            .map(|&(code, jt, jf, k)| Insn { code, jt, jf, k })
            .collect()
    }

    // Programs as Debian 12's libpcap 1.10.3 compiles them on a dead handle
    // (snap length 65535), for LINUX_SLL (113) unless said otherwise.
    fn udp_port_53_sll() -> Vec<Insn> {
        prog(&[
            (0x28, 0, 0, 0xe),
            (0x15, 0, 6, 0x86dd),
            (0x30, 0, 0, 0x16),
            (0x15, 0, 15, 0x11),
            (0x28, 0, 0, 0x38),
            (0x15, 12, 0, 0x35),
            (0x28, 0, 0, 0x3a),
            (0x15, 10, 11, 0x35),
            (0x15, 0, 10, 0x800),
            (0x30, 0, 0, 0x19),
            (0x15, 0, 8, 0x11),
            (0x28, 0, 0, 0x16),
            (0x45, 6, 0, 0x1fff),
            (0xb1, 0, 0, 0x10),
            (0x48, 0, 0, 0x10),
            (0x15, 2, 0, 0x35),
            (0x48, 0, 0, 0x12),
            (0x15, 0, 1, 0x35),
            (0x6, 0, 0, 0xffff),
            (0x6, 0, 0, 0x0),
        ])
    }

    fn inbound_sll() -> Vec<Insn> {
        prog(&[
            (0x28, 0, 0, 0x0),
            (0x15, 0, 1, 0x4),
            (0x6, 0, 0, 0x0),
            (0x6, 0, 0, 0xffff),
        ])
    }

    fn greater_100_sll() -> Vec<Insn> {
        prog(&[
            (0x80, 0, 0, 0x0),
            (0x35, 0, 1, 0x64),
            (0x6, 0, 0, 0xffff),
            (0x6, 0, 0, 0x0),
        ])
    }

    /// An IPv4/UDP packet to `port`, `pad` bytes of payload.
    fn udp(port: u16, pad: usize) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend_from_slice(&4000u16.to_be_bytes());
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(&[0, 8, 0, 0]);
        p.resize(p.len() + pad, 0xab);
        p
    }

    /// `payload` behind a cooked header of packet type `pkttype`.
    fn sll(pkttype: u16, protocol: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = pkttype.to_be_bytes().to_vec();
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(&6u16.to_be_bytes());
        p.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
        p.extend_from_slice(&protocol.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// The original on the cooked packet and the rewrite on what the
    /// kernel sees agree (both drop, or both accept).
    fn agree(original: &[Insn], rewritten: &[Insn], packet: &[u8]) -> bool {
        let (payload, aux) = cooked_view(packet).unwrap();
        let before = run(original, packet, &Aux::default());
        let after = run(rewritten, payload, &aux);
        assert_eq!(before != 0, after != 0, "{original:?} vs {rewritten:?}");
        after != 0
    }

    #[test]
    fn a_cooked_program_moves_its_offsets_and_filters_the_same_packets() {
        let original = udp_port_53_sll();
        let rewritten = prepare(&original, true, Loopback::No).unwrap();
        assert_eq!(rewritten.len(), original.len());
        assert_eq!(rewritten[0].k, SKF_AD_OFF + SKF_AD_PROTOCOL);
        assert_eq!(rewritten[2].k, 0x16 - 16);
        assert_eq!(rewritten[13], Insn::stmt(LDX | B | MSH, 0));
        assert!(agree(&original, &rewritten, &sll(0, 0x800, &udp(53, 4))));
        assert!(!agree(&original, &rewritten, &sll(0, 0x800, &udp(54, 4))));
        assert!(!agree(&original, &rewritten, &sll(0, 0x806, &udp(53, 4))));
    }

    #[test]
    fn the_cooked_packet_type_becomes_the_kernels() {
        let original = inbound_sll();
        let rewritten = prepare(&original, true, Loopback::No).unwrap();
        assert_eq!(rewritten[0].k, SKF_AD_OFF + SKF_AD_PKTTYPE);
        assert!(agree(&original, &rewritten, &sll(0, 0x800, &udp(1, 0))));
        assert!(!agree(
            &original,
            &rewritten,
            &sll(PACKET_OUTGOING as u16, 0x800, &udp(1, 0))
        ));
    }

    #[test]
    fn the_cooked_length_counts_the_header_libpcap_forgets() {
        let original = greater_100_sll();
        let rewritten = prepare(&original, true, Loopback::No).unwrap();
        assert_eq!(rewritten.len(), original.len() + 1);
        assert_eq!(rewritten[1], Insn::stmt(ALU | ADD | K, SLL_HDR_LEN));
        // 28 bytes of headers: 28 + 56 + 16 = 100 passes, one less does not.
        assert!(agree(&original, &rewritten, &sll(0, 0x800, &udp(1, 56))));
        assert!(!agree(&original, &rewritten, &sll(0, 0x800, &udp(1, 55))));
    }

    #[test]
    fn jumps_over_an_expanded_instruction_still_land_where_they_did() {
        // `greater 100 or inbound`, by hand: 0 ldh [0]; 1 jeq #0 jt 4 jf 2;
        // 2 ld len; 3 jge #100 jt 4 jf 5; 4 ret #65535; 5 ret #0.
        let original = prog(&[
            (LD | H | ABS, 0, 0, 0),
            (JMP | JEQ | K, 2, 0, 0),
            (LD | W | LEN, 0, 0, 0),
            (JMP | JGE | K, 0, 1, 100),
            (RET | K, 0, 0, 0xffff),
            (RET | K, 0, 0, 0),
        ]);
        let rewritten = prepare(&original, true, Loopback::No).unwrap();
        assert_eq!(rewritten[1].jt, 3);
        for p in [
            sll(0, 0x800, &udp(1, 0)),
            sll(4, 0x800, &udp(1, 0)),
            sll(4, 0x800, &udp(1, 80)),
        ] {
            agree(&original, &rewritten, &p);
        }
    }

    #[test]
    fn reads_of_other_cooked_header_bytes_are_refused_with_the_reason() {
        // `link[1] = 3`
        let original = prog(&[
            (0x30, 0, 0, 0x1),
            (0x15, 0, 1, 0x3),
            (0x6, 0, 0, 0xffff),
            (0x6, 0, 0, 0x0),
        ]);
        let why = prepare(&original, true, Loopback::No).unwrap_err();
        assert!(why.contains("byte 1 of the cooked header"), "{why}");
        // The same program on a raw socket is fine.
        assert!(prepare(&original, false, Loopback::No).is_ok());
        // A word read of the protocol field reads payload bytes too.
        let wide = prog(&[(LD | W | ABS, 0, 0, 14), (RET | A, 0, 0, 0)]);
        assert!(prepare(&wide, true, Loopback::No).is_err());
    }

    #[test]
    fn accepting_returns_take_dumpcaps_snap_length() {
        let p = prepare(&inbound_sll(), false, Loopback::No).unwrap();
        assert_eq!(p[2], Insn::stmt(RET | K, 0));
        assert_eq!(p[3], Insn::stmt(RET | K, SNAPLEN));
        assert_eq!(run(&accept_all(), &[1, 2, 3], &Aux::default()), SNAPLEN);
    }

    #[test]
    fn loopback_packets_going_out_are_dropped_and_a_starts_at_zero() {
        // `ret a`: what A holds when the user's program starts.
        let ret_a = prog(&[(RET | A, 0, 0, 0)]);
        let ret_all = accept_all();
        let out = Aux {
            pkttype: PACKET_OUTGOING as u8,
            ifindex: LOOPBACK_IFINDEX,
            ..Aux::default()
        };
        let other_out = Aux { ifindex: 2, ..out };
        let incoming = Aux { pkttype: 0, ..out };
        let bound = prepare(&ret_all, false, Loopback::Bound).unwrap();
        assert_eq!(run(&bound, &[0; 20], &out), 0);
        assert_eq!(run(&bound, &[0; 20], &incoming), SNAPLEN);
        let any = prepare(&ret_all, true, Loopback::Any).unwrap();
        assert_eq!(run(&any, &[0; 20], &out), 0);
        assert_eq!(run(&any, &[0; 20], &other_out), SNAPLEN);
        assert_eq!(run(&any, &[0; 20], &incoming), SNAPLEN);
        let a = prepare(&ret_a, true, Loopback::Any).unwrap();
        assert_eq!(run(&a, &[0; 20], &incoming), 0);
        assert_eq!(run(&a, &[0; 20], &other_out), 0);
    }

    #[test]
    fn the_kernels_checks_refuse_what_it_would() {
        let ret = (RET | K, 0, 0, 1);
        type Raw = Vec<(u16, u8, u8, u32)>;
        let cases: Vec<(&str, Raw)> = vec![
            ("instructions", vec![]),
            ("operation", vec![(0xff, 0, 0, 0), ret]),
            ("operation", vec![(RET | X, 0, 0, 0)]),
            ("division by zero", vec![(ALU | DIV | K, 0, 0, 0), ret]),
            ("division by zero", vec![(ALU | MOD | K, 0, 0, 0), ret]),
            ("shift", vec![(ALU | LSH | K, 0, 0, 32), ret]),
            ("scratch word out", vec![(ST, 0, 0, 16), ret]),
            ("past the end", vec![(JMP | JA, 0, 0, 1), ret]),
            ("past the end", vec![(JMP | JEQ | K, 0, 1, 0), ret]),
            (
                "ancillary",
                vec![(LD | W | ABS, 0, 0, SKF_AD_OFF + 64), ret],
            ),
            ("ancillary", vec![(LD | W | ABS, 0, 0, SKF_AD_OFF + 2), ret]),
            ("end with a return", vec![(LD | IMM, 0, 0, 0)]),
            ("before it is written", vec![(LD | MEM, 0, 0, 3), ret]),
            (
                "before it is written",
                vec![
                    (JMP | JEQ | K, 0, 1, 7),
                    (ST, 0, 0, 3),
                    (LD | MEM, 0, 0, 3),
                    ret,
                ],
            ),
        ];
        for (why, p) in cases {
            let err = check(&prog(&p)).unwrap_err();
            assert!(err.contains(why), "{p:?}: {err}");
        }
        let long = vec![Insn::stmt(RET | K, 0); MAX_INSNS + 1];
        assert!(check(&long).unwrap_err().contains("4097"));
        assert!(check(&long[1..]).is_ok());
        let stored = prog(&[(ST, 0, 0, 3), (LD | MEM, 0, 0, 3), (RET | A, 0, 0, 0)]);
        assert!(check(&stored).is_ok());
        assert!(check(&udp_port_53_sll()).is_ok());
    }

    #[test]
    fn clauses_are_counted_on_words_and_operators() {
        assert_eq!(clauses("ip"), 1);
        assert_eq!(clauses("tcp and port 80 or (udp&&port 53)||icmp"), 5);
        assert_eq!(clauses("host android"), 1);
        assert_eq!(clauses("host my-or-host"), 2);
        let long = vec!["port 1"; MAX_CLAUSES + 1].join(" or ");
        assert!(check_cost(&long).unwrap_err().contains("65 and/or clauses"));
        let fits = vec!["port 1"; MAX_CLAUSES].join(" or ");
        assert!(check_cost(&fits).is_ok());
    }
}
