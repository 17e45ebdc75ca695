//! Opening a capture's rings, on an opener thread: the sockets are made
//! inside the target's network namespace (the thread enters it with
//! `setns`, which moves only the calling thread, and returns at once:
//! a packet socket belongs to the namespace it was made in, and every
//! later step works on the socket itself), then each is given its filter
//! and ring. Rings of several interfaces are set up in parallel, so their
//! grace periods in the kernel overlap.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use log::{debug, error};
use nix::libc;
use nix::sched::{setns, CloneFlags};

use super::filter;
use super::ring::{Framing, Ring};
use super::{Capture, OpenError, OpenRequest, RingInfo};
use crate::proto::bpf::{self, Loopback, LOOPBACK_IFINDEX};
use crate::proto::linktype::{self, LinkType};
use crate::proto::pcapng_write::{stream_head, Interface};

/// The name of the pseudo-interface of every interface.
pub const ANY: &str = "any";

/// A socket made in the namespace, not yet a ring.
struct Made {
    name: String,
    ifindex: i32,
    link: LinkType,
    fd: OwnedFd,
}

fn last_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn packet_socket(cooked: bool) -> Result<OwnedFd, String> {
    let kind = if cooked {
        libc::SOCK_DGRAM
    } else {
        libc::SOCK_RAW
    };
    // Protocol 0: no packet arrives before the ring and filter are set and
    // the socket is bound (libpcap's order, too).
    // SAFETY: socket() with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EPERM) {
            "cannot open a packet socket: CAP_NET_RAW is needed".to_string()
        } else {
            format!("cannot open a packet socket: {e}")
        });
    }
    // SAFETY: a descriptor we just made and own alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `ifreq` naming `name`; `None` if the name does not fit.
fn ifreq(name: &str) -> Option<libc::ifreq> {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= r.ifr_name.len() || name.contains('\0') {
        return None;
    }
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Some(r)
}

/// Index and ARP hardware type of `name`, asked through `probe`.
fn describe(probe: &OwnedFd, name: &str) -> Result<(i32, u16), OpenError> {
    let no_such = || {
        OpenError::request(format!(
            "There is no interface named \"{name}\" in the target's network namespace."
        ))
    };
    let mut r = ifreq(name).ok_or_else(no_such)?;
    // SAFETY: SIOCGIFINDEX reads the name and writes the index in `r`.
    if unsafe { libc::ioctl(probe.as_raw_fd(), libc::SIOCGIFINDEX, &mut r) } < 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::ENODEV) {
            no_such()
        } else {
            format!("cannot look up interface \"{name}\": {e}").into()
        });
    }
    // SAFETY: the union member SIOCGIFINDEX wrote.
    let ifindex = unsafe { r.ifr_ifru.ifru_ifindex };
    // SAFETY: SIOCGIFHWADDR reads the name and writes the address.
    if unsafe { libc::ioctl(probe.as_raw_fd(), libc::SIOCGIFHWADDR, &mut r) } < 0 {
        return Err(last_error(&format!("cannot read the type of \"{name}\"")).into());
    }
    // SAFETY: the union member SIOCGIFHWADDR wrote.
    let arptype = unsafe { r.ifr_ifru.ifru_hwaddr.sa_family };
    Ok((ifindex, arptype))
}

/// Makes the packet sockets inside `netns`, then returns this thread to
/// its own namespace (or stops the service if it cannot: every socket made
/// afterwards would be made in the wrong namespace).
fn make_sockets(netns: &File, names: &[String]) -> Result<Vec<Made>, OpenError> {
    let own = File::open("/proc/thread-self/ns/net")
        .map_err(|e| format!("cannot hold the service's own network namespace: {e}"))?;
    setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("cannot enter the target's network namespace: {e}"))?;
    let made = make_sockets_here(names);
    if let Err(e) = setns(own.as_fd(), CloneFlags::CLONE_NEWNET) {
        error!("cannot return to the service's own network namespace after opening packet sockets: {e}; stopping");
        std::process::abort();
    }
    made
}

fn make_sockets_here(names: &[String]) -> Result<Vec<Made>, OpenError> {
    if names.is_empty() {
        return Ok(vec![Made {
            name: ANY.into(),
            ifindex: 0,
            link: linktype::LINUX_SLL,
            fd: packet_socket(true)?,
        }]);
    }
    // A datagram socket of the namespace answers the interface ioctls
    // (closing a packet socket would wait for the kernel; this one does
    // not).
    // SAFETY: socket() with constant arguments; checked below.
    let probe = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if probe < 0 {
        return Err(last_error("cannot open a socket for interface lookups").into());
    }
    // SAFETY: a descriptor we just made and own alone.
    let probe = unsafe { OwnedFd::from_raw_fd(probe) };
    let mut made = Vec::with_capacity(names.len());
    for name in names {
        let (ifindex, arptype) = describe(&probe, name)?;
        let link = linktype::from_arphrd(arptype);
        made.push(Made {
            name: name.clone(),
            ifindex,
            link,
            fd: packet_socket(link.cooked)?,
        });
    }
    Ok(made)
}

/// The program for one socket: the user's filter compiled for its link
/// type and prepared for the kernel, or accept-all with the loopback
/// prologue.
fn program(req: &OpenRequest, m: &Made) -> Result<Vec<bpf::Insn>, OpenError> {
    let lo = if m.ifindex == 0 {
        Loopback::Any
    } else if m.ifindex == LOOPBACK_IFINDEX as i32 {
        Loopback::Bound
    } else {
        Loopback::No
    };
    let compiled = match &req.filter {
        Some(f) => {
            // Over the bound: refused for that, in one line that fits a
            // close frame (quoting a filter that long would not).
            bpf::check_cost(f).map_err(OpenError::request)?;
            filter::compile(f, m.link.dlt)
                .map_err(|words| OpenError::request(filter::invalid(f, &m.name, &words)))?
        }
        None => bpf::accept_all(),
    };
    // The why before the filter, as in `filter::invalid`.
    bpf::prepare(&compiled, m.link.cooked, lo).map_err(|why| {
        OpenError::request(format!(
            "The capture filter cannot be used on interface '{}' ({why}): \"{}\"",
            m.name,
            req.filter.as_deref().unwrap_or(""),
        ))
    })
}

fn ring_of(req: &OpenRequest, id: u32, m: Made) -> Result<(Ring, RingInfo), OpenError> {
    let prog = program(req, &m)?;
    let framing = if m.link.cooked {
        Framing::Cooked
    } else {
        Framing::Raw {
            ethernet: m.link == linktype::ETHERNET,
        }
    };
    // libpcap ignores promiscuous mode on `any`.
    let promiscuous = !req.chaste && m.ifindex != 0;
    let ring = Ring::setup(m.fd, m.ifindex, &prog, promiscuous, id, framing)
        .map_err(|e| format!("cannot capture on interface '{}': {e}", m.name))?;
    Ok((
        ring,
        RingInfo {
            name: m.name,
            linktype: m.link.linktype,
            ifindex: m.ifindex,
        },
    ))
}

/// The kernel as dumpcap names it in `shb_os`: `uname -sr`.
fn os_name() -> String {
    match nix::sys::utsname::uname() {
        Ok(u) => format!(
            "{} {}",
            u.sysname().to_string_lossy(),
            u.release().to_string_lossy()
        ),
        Err(_) => "Linux".into(),
    }
}

/// Opens every ring of `req`. `Err` is the reason to give the client.
pub fn open(req: &OpenRequest) -> Result<Capture, OpenError> {
    let t = Instant::now();
    let made = make_sockets(&req.netns, &req.interfaces)?;
    let in_ns = t.elapsed();
    let results: Vec<Result<(Ring, RingInfo), OpenError>> = if made.len() == 1 {
        made.into_iter().map(|m| ring_of(req, 0, m)).collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = made
                .into_iter()
                .enumerate()
                .map(|(i, m)| s.spawn(move || ring_of(req, i as u32, m)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(String::from("a ring set-up thread failed").into()))
                })
                .collect()
        })
    };
    let mut rings = Vec::with_capacity(results.len());
    let mut infos = Vec::with_capacity(results.len());
    for r in results {
        // On the first failure the rings made so far are dropped here, on
        // this helper thread.
        let (ring, info) = r?;
        rings.push(ring);
        infos.push(info);
    }
    let os = os_name();
    let interfaces: Vec<Interface> = infos
        .iter()
        .map(|i| Interface {
            name: &i.name,
            linktype: i.linktype,
            filter: req.filter.as_deref(),
        })
        .collect();
    let head = stream_head(&interfaces, &os);
    debug!(
        "opened {} ring(s) in {:?} ({:?} inside the namespace)",
        rings.len(),
        t.elapsed(),
        in_ns
    );
    Ok(Capture::new(rings, infos, head))
}
