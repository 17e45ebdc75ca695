//! Keeping a capture from capturing its own stream, sans-IO.
//!
//! A capture of the namespace the service itself runs in (typically the
//! host's `lo`, or its external interface) would include the websocket
//! connection carrying the capture, which then feeds on itself. When the
//! target namespace is the service's own, the capture filter gets a clause
//! that excludes exactly this capture's TCP connection, both addresses and
//! both ports as the service's socket sees them (IPv4-mapped IPv6 addresses
//! unmapped: a dual-stack socket reports v4 peers that way, but the packets
//! are IPv4): `not (<own connection>) and (<user filter>)`.
//!
//! The exclusion comes first because libpcap's `vlan`, `mpls`, `pppoes`
//! and `geneve` keywords move the offsets of everything after them in the
//! expression: appended after `not vlan`, the own-connection clause would
//! read the wrong bytes, match nothing, and the capture would relay its
//! own packets, each relayed message captured and relayed again.
//!
//! This module only builds strings; the session decides when it applies
//! (`--no-self-exclusion` turns it off). No I/O here.

use core::net::{IpAddr, SocketAddr};

/// The key that says, in the SHB's target document, what was excluded.
pub const DOCUMENT_KEY: &str = "excluded-own-connection";

/// `addr` without an IPv4 mapping.
pub fn unmapped(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// A pcap-filter expression matching the TCP connection between `local`
/// (the service's end) and `peer`, in both directions.
pub fn own_connection_filter(local: SocketAddr, peer: SocketAddr) -> String {
    let (l, p) = (unmapped(local.ip()), unmapped(peer.ip()));
    let (lp, pp) = (local.port(), peer.port());
    format!(
        "tcp and ((src host {l} and src port {lp} and dst host {p} and dst port {pp}) or \
         (src host {p} and src port {pp} and dst host {l} and dst port {lp}))"
    )
}

/// The filter the capture program gets: the own connection excluded first,
/// at offsets no keyword of the user's has moved, then the user's filter
/// (if any).
pub fn combined_filter(user: Option<&str>, own: &str) -> String {
    match user {
        Some(u) => format!("not ({own}) and ({u})"),
        None => format!("not ({own})"),
    }
}

/// How the document describes the excluded connection.
pub fn describe(local: SocketAddr, peer: SocketAddr) -> String {
    let show = |a: SocketAddr| SocketAddr::new(unmapped(a.ip()), a.port()).to_string();
    format!("tcp {} <-> {}", show(local), show(peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_v4_addresses_are_unmapped() {
        let f = own_connection_filter(sa("[::ffff:127.0.0.1]:5001"), sa("[::ffff:10.0.0.2]:40000"));
        assert_eq!(
            f,
            "tcp and ((src host 127.0.0.1 and src port 5001 and dst host 10.0.0.2 and dst port 40000) or \
             (src host 10.0.0.2 and src port 40000 and dst host 127.0.0.1 and dst port 5001))"
        );
        assert!(!f.contains("ffff"));
    }

    #[test]
    fn v6_addresses_stay_v6() {
        let f = own_connection_filter(sa("[::1]:5001"), sa("[::1]:41000"));
        assert!(f.contains("src host ::1 and src port 41000"), "{f}");
        assert_eq!(
            describe(sa("[::1]:5001"), sa("[::1]:41000")),
            "tcp [::1]:5001 <-> [::1]:41000"
        );
    }

    #[test]
    fn the_exclusion_comes_before_the_user_filter_in_parentheses() {
        assert_eq!(
            combined_filter(Some("icmp or udp"), "X"),
            "not (X) and (icmp or udp)"
        );
        // `vlan` moves the offsets of what follows it: nothing of ours may.
        assert!(combined_filter(Some("not vlan"), "X").ends_with("(not vlan)"));
        assert_eq!(combined_filter(None, "X"), "not (X)");
    }
}
