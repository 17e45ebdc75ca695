//! Compiling a capture filter with libpcap (the `pcap` crate): a dead
//! handle for the interface's link type, `pcap_compile` with the optimizer
//! on, as dumpcap does. The program is then prepared for the kernel by
//! [`crate::proto::bpf::prepare`].
//!
//! Runs on the engine's opener threads, never on the loop. Debian 12's
//! libpcap 1.10.3 is thread-safe here: its changelog says `pcap_compile()`
//! is thread-safe since 1.8 (scanner, parser and optimizer state per call),
//! and the only non-reentrant resolver it imports, `gethostbyname`, serves
//! the `pcap_nametoaddr` API, which the compiler of an IPv6-enabled build
//! (Debian's) does not call: it uses `getaddrinfo`, `getprotobyname_r`,
//! `getnetbyname_r` (`nm -D libpcap.so.0.8`). So openers compile
//! concurrently, without a lock.
//!
//! What a compile may cost is bounded before it starts
//! ([`crate::proto::bpf::check_cost`]); a filter naming hosts makes
//! libpcap resolve them (as dumpcap did), which may wait on DNS.

use pcap::{Capture, Linktype};

use crate::proto::bpf::{self, Insn};

/// Compiles `filter` for the link type `dlt`. `Err` is libpcap's own
/// message (what dumpcap quotes after "That string isn't a valid capture
/// filter"), or the refusal of a filter over the bound on its cost.
pub fn compile(filter: &str, dlt: i32) -> Result<Vec<Insn>, String> {
    bpf::check_cost(filter)?;
    let dead = Capture::dead(Linktype(dlt)).map_err(|e| e.to_string())?;
    let program = dead.compile(filter, true).map_err(|e| match e {
        pcap::Error::PcapError(words) => words,
        other => other.to_string(),
    })?;
    // The crate shows an instruction as "code jt jf k" (decimal) and keeps
    // its fields private.
    let mut out = Vec::with_capacity(program.get_instructions().len());
    for i in program.get_instructions() {
        let text = i.to_string();
        let mut n = text.split(' ').map(|f| f.parse::<u32>().ok());
        let (Some(Some(code)), Some(Some(jt)), Some(Some(jf)), Some(Some(k)), None) =
            (n.next(), n.next(), n.next(), n.next(), n.next())
        else {
            return Err(format!(
                "libpcap gave an instruction that does not read: {text}"
            ));
        };
        let narrow = |v: u32| u8::try_from(v).map_err(|_| format!("bad instruction {text}"));
        out.push(Insn {
            code: u16::try_from(code).map_err(|_| format!("bad instruction {text}"))?,
            jt: narrow(jt)?,
            jf: narrow(jf)?,
            k,
        });
    }
    Ok(out)
}

/// The reason a filter that libpcap refused gives: dumpcap's words
/// ("Invalid capture filter ... for interface ..."), libpcap's, then the
/// filter. One line, the why before the filter: a close frame carries 123
/// bytes of reason, and dumpcap's own three lines quote the filter first,
/// so libpcap's words were cut off for all but the shortest filters (for
/// `nonsense((` already).
pub fn invalid(filter: &str, interface: &str, words: &str) -> String {
    format!("Invalid capture filter for interface '{interface}' ({words}): \"{filter}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::bpf::{Loopback, SNAPLEN};
    use crate::proto::linktype::{ETHERNET, LINUX_SLL, RAW};

    #[test]
    fn a_filter_compiles_to_libpcaps_program() {
        let p = compile("ip", ETHERNET.dlt).unwrap();
        assert_eq!(
            p,
            vec![
                Insn::stmt(0x28, 12),
                Insn::jump(0x15, 0x800, 0, 1),
                Insn::stmt(0x06, 0xffff),
                Insn::stmt(0x06, 0),
            ]
        );
        let ready = bpf::prepare(&p, false, Loopback::No).unwrap();
        assert_eq!(ready[2].k, SNAPLEN);
    }

    #[test]
    fn libpcaps_words_come_back_for_a_bad_filter() {
        let e = compile("nonsense((", ETHERNET.dlt).unwrap_err();
        assert!(e.contains("syntax error"), "{e}");
        let e = compile("vlan 10", LINUX_SLL.dlt).unwrap_err();
        assert!(e.contains("no VLAN support"), "{e}");
    }

    #[test]
    fn a_refused_filters_reason_has_libpcaps_words_within_a_close_frame() {
        let words = compile("nonsense((", ETHERNET.dlt).unwrap_err();
        let r = invalid(&"nonsense((".repeat(30), "abcdefghijklmno", &words);
        let shown = crate::proto::ws::shape_reason(&r);
        assert!(
            shown.starts_with("Invalid capture filter for interface 'abcdefghijklmno' ("),
            "{shown}"
        );
        assert!(
            shown.contains(&format!("({words}): \"nonsense((")),
            "{shown}"
        );
    }

    #[test]
    fn every_link_type_of_the_map_compiles_a_filter() {
        for lt in [ETHERNET, RAW, LINUX_SLL] {
            let p = compile("udp port 53 or icmp", lt.dlt).unwrap();
            bpf::prepare(&p, lt.cooked, Loopback::No).unwrap();
        }
    }

    #[test]
    fn concurrent_compiles_give_the_same_programs() {
        let want = compile("tcp port 80 and not host 10.0.0.1", ETHERNET.dlt).unwrap();
        let got: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..50)
                            .map(|_| compile("tcp port 80 and not host 10.0.0.1", ETHERNET.dlt))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(got.len(), 200);
        assert!(got.iter().all(|p| p.as_ref() == Ok(&want)));
    }

    #[test]
    fn a_costly_filter_is_refused_before_compiling() {
        let f = vec!["portrange 1-2"; 200].join(" or ");
        let t = std::time::Instant::now();
        let e = compile(&f, ETHERNET.dlt).unwrap_err();
        assert!(e.contains("200 and/or clauses"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        // The costliest kind measured, at the bound: printed, not timed.
        let f = vec!["portrange 1-2"; bpf::MAX_CLAUSES].join(" or ");
        let t = std::time::Instant::now();
        compile(&f, ETHERNET.dlt).unwrap();
        eprintln!(
            "{} portrange clauses compiled in {:?}",
            bpf::MAX_CLAUSES,
            t.elapsed()
        );
    }
}
