//! The capture filter, from the `filter` parameter through libpcap's
//! compiler and the engine's preparation for the kernel
//! (`service::engine::filter::compile`, `proto::bpf::prepare`).
//!
//! Input layout: one mode byte, then the filter text (UTF-8, lossy). Mode
//! bits 0-1 pick the link type (Ethernet, raw IP, cooked `any`, Ethernet);
//! bit 2 adds the self-exclusion clause as the session does; bits 3-4 the
//! loopback prologue (none, bound to `lo`, `any`).
//!
//! Invariants: no panic; a filter the parameter check refuses never
//! reaches libpcap; every program `prepare` emits is one the kernel's
//! checker accepts (checked by `fuzz_support::check_kernel_accepts`, written
//! from the kernel's rules); every accepting return is the snap length;
//! for a cooked program, the rewrite accepts exactly the packets the
//! original accepts on the cooked header (fixed packets of several kinds,
//! and one made of the input).

#![no_main]

use fuzz_support::check_kernel_accepts;
use libfuzzer_sys::fuzz_target;
use packetflix::proto::bpf::{self, Insn, Loopback};
use packetflix::proto::linktype::{ETHERNET, LINUX_SLL, RAW};
use packetflix::proto::params::{check_filter, MAX_FILTER};
use packetflix::proto::selfexcl;
use packetflix::service::engine::filter::compile;

/// Cooked packets: (packet type, protocol, payload).
fn samples(extra: &[u8]) -> Vec<Vec<u8>> {
    let udp = [
        0x45, 0, 0, 36, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x0f, 0xa0, 0, 53,
        0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
    ];
    let tcp = [
        0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 192, 168, 1, 1, 10, 0, 0, 2, 0, 80, 0x9c, 0x40, 0,
        0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ];
    let icmp6 = [
        0x60, 0, 0, 0, 0, 8, 58, 64, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xfe,
        0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 128, 0, 0, 0, 0, 1, 0, 1,
    ];
    let arp = [0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1];
    let mut out = Vec::new();
    for (pkttype, proto, payload) in [
        (0u16, 0x0800u16, &udp[..]),
        (4, 0x0800, &tcp[..]),
        (1, 0x86dd, &icmp6[..]),
        (2, 0x0806, &arp[..]),
        (3, 0x0800, extra),
    ] {
        let mut p = pkttype.to_be_bytes().to_vec();
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(&6u16.to_be_bytes());
        p.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0]);
        p.extend_from_slice(&proto.to_be_bytes());
        p.extend_from_slice(payload);
        out.push(p);
    }
    out
}

fn tuples(p: &[Insn]) -> Vec<(u16, u8, u8, u32)> {
    p.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let Ok(user) = check_filter(&text, MAX_FILTER) else {
        return;
    };
    let filter = if mode & 4 != 0 {
        let own = selfexcl::own_connection_filter(
            "127.0.0.1:5001".parse().unwrap(),
            "[::1]:40000".parse().unwrap(),
        );
        selfexcl::combined_filter(Some(&user), &own)
    } else {
        user
    };
    let link = [ETHERNET, RAW, LINUX_SLL, ETHERNET][usize::from(mode & 3)];
    let lo =
        [Loopback::No, Loopback::Bound, Loopback::Any, Loopback::No][usize::from((mode >> 3) & 3)];
    let Ok(compiled) = compile(&filter, link.dlt) else {
        return;
    };
    let Ok(prepared) = bpf::prepare(&compiled, link.cooked, lo) else {
        return;
    };
    check_kernel_accepts(&tuples(&prepared));
    for i in &prepared {
        if i.code == bpf::RET | bpf::K {
            assert!(i.k == 0 || i.k == bpf::SNAPLEN, "return {}", i.k);
        }
    }
    if link.cooked {
        let Ok(plain) = bpf::prepare(&compiled, true, Loopback::No) else {
            panic!("prepared with a prologue but not without");
        };
        // The original with its returns as the kernel would take them.
        let original: Vec<Insn> = compiled
            .iter()
            .map(|&i| match i {
                Insn { code, k, .. } if code == bpf::RET | bpf::K && k != 0 => Insn {
                    k: bpf::SNAPLEN,
                    ..i
                },
                i => i,
            })
            .collect();
        for p in samples(rest) {
            let Some((payload, aux)) = bpf::cooked_view(&p) else {
                continue;
            };
            let before = bpf::run(&original, &p, &bpf::Aux::default());
            let after = bpf::run(&plain, payload, &aux);
            assert_eq!(before != 0, after != 0, "{filter:?} on {p:?}");
        }
    }
});
