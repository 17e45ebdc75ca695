//! Link types of captured interfaces, sans-IO: what libpcap 1.10's
//! `map_arphrd_to_dlt` (pcap-linux.c) makes of an interface's ARP hardware
//! type, so the native engine reports what dumpcap reports: the pcapng link
//! type for the IDB, the DLT value libpcap compiles filters for, and whether
//! the interface must be captured in cooked mode (a `SOCK_DGRAM` packet
//! socket, each packet given a 16-byte `LINUX_SLL` header).
//!
//! Types libpcap maps to a link type with no cooked fallback are kept;
//! types it captures cooked (PPP, ATM, every type it does not know) are
//! cooked here too. libpcap's special cooked types (IrDA, LAPD, netlink)
//! and its name-based exceptions (`cdma_rmnet*`, `isdn*`, DSA ports) are
//! not carried over: those interfaces are captured as plain `LINUX_SLL`.

/// How packets of an interface are captured and described.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkType {
    /// The pcapng/pcap `LINKTYPE_*` value written in the IDB.
    pub linktype: u16,
    /// The `DLT_*` value libpcap compiles filters for.
    pub dlt: i32,
    /// Captured on a `SOCK_DGRAM` socket, with a cooked header.
    pub cooked: bool,
}

/// `LINKTYPE_ETHERNET`/`DLT_EN10MB`.
pub const ETHERNET: LinkType = LinkType {
    linktype: 1,
    dlt: 1,
    cooked: false,
};
/// `LINKTYPE_RAW` (101) is `DLT_RAW` (12 on Linux): the one common type
/// whose two numbers differ.
pub const RAW: LinkType = LinkType {
    linktype: 101,
    dlt: 12,
    cooked: false,
};
/// `LINKTYPE_LINUX_SLL`/`DLT_LINUX_SLL`: what `any` and cooked interfaces
/// get (dumpcap 4.0 with libpcap 1.10 writes v1, not `LINUX_SLL2`).
pub const LINUX_SLL: LinkType = LinkType {
    linktype: 113,
    dlt: 113,
    cooked: true,
};

/// ARP hardware types (`<linux/if_arp.h>`).
pub mod arphrd {
    pub const ETHER: u16 = 1;
    pub const EETHER: u16 = 2;
    pub const AX25: u16 = 3;
    pub const PRONET: u16 = 4;
    pub const CHAOS: u16 = 5;
    pub const IEEE802: u16 = 6;
    pub const ARCNET: u16 = 7;
    pub const DLCI: u16 = 15;
    pub const ATM: u16 = 19;
    pub const METRICOM: u16 = 23;
    pub const SLIP: u16 = 256;
    pub const CSLIP: u16 = 257;
    pub const SLIP6: u16 = 258;
    pub const CSLIP6: u16 = 259;
    pub const ADAPT: u16 = 264;
    pub const CAN: u16 = 280;
    pub const PPP: u16 = 512;
    pub const CISCO: u16 = 513;
    pub const RAWHDLC: u16 = 518;
    pub const TUNNEL: u16 = 768;
    pub const FRAD: u16 = 770;
    pub const LOOPBACK: u16 = 772;
    pub const LOCALTLK: u16 = 773;
    pub const FDDI: u16 = 774;
    pub const SIT: u16 = 776;
    pub const IEEE802_TR: u16 = 800;
    pub const IEEE80211: u16 = 801;
    pub const IEEE80211_PRISM: u16 = 802;
    pub const IEEE80211_RADIOTAP: u16 = 803;
    pub const IEEE802154: u16 = 804;
    pub const VSOCKMON: u16 = 826;
    pub const NONE: u16 = 0xfffe;
}

/// A link type whose DLT and LINKTYPE numbers are the same.
const fn same(n: u16) -> LinkType {
    LinkType {
        linktype: n,
        dlt: n as i32,
        cooked: false,
    }
}

/// The link type libpcap gives an interface of ARP hardware type `arptype`.
pub fn from_arphrd(arptype: u16) -> LinkType {
    use arphrd::*;
    match arptype {
        ETHER | METRICOM | LOOPBACK => ETHERNET,
        EETHER => same(2),
        AX25 => same(202),
        PRONET => same(4),
        CHAOS => same(5),
        CAN => same(227),
        IEEE802 | IEEE802_TR => same(6),
        ARCNET => same(129),
        FDDI => same(10),
        IEEE80211 => same(105),
        IEEE80211_PRISM => same(119),
        IEEE80211_RADIOTAP => same(127),
        CISCO => same(104),
        TUNNEL | SIT | CSLIP | SLIP6 | CSLIP6 | ADAPT | SLIP | RAWHDLC | DLCI | NONE => RAW,
        FRAD => same(107),
        LOCALTLK => same(114),
        IEEE802154 => same(230),
        VSOCKMON => same(271),
        // PPP and ATM by libpcap's choice, the rest because it does not
        // know them.
        _ => LINUX_SLL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interfaces_of_containers_get_dumpcaps_link_types() {
        // veth and Ethernet, lo, tun (IFF_TUN has no link header), a GRE
        // tunnel (unknown to libpcap: cooked), PPP (cooked by choice).
        assert_eq!(from_arphrd(arphrd::ETHER), ETHERNET);
        assert_eq!(from_arphrd(arphrd::LOOPBACK), ETHERNET);
        assert_eq!(from_arphrd(arphrd::NONE), RAW);
        assert_eq!(from_arphrd(778), LINUX_SLL);
        assert_eq!(from_arphrd(arphrd::PPP), LINUX_SLL);
        assert_eq!(from_arphrd(arphrd::IEEE80211_RADIOTAP).linktype, 127);
        assert!(!from_arphrd(arphrd::SIT).cooked);
    }
}
