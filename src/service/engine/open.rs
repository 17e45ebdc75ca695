//! Opening a capture, on an opener thread: the sockets are made inside
//! the target's network namespace (the thread enters it with `setns`,
//! which moves only the calling thread, and returns at once: a packet
//! socket belongs to the namespace it was made in, and every later step
//! works on the socket itself); each interface's filter is compiled and
//! its live socket (no ring) attached and bound: the capture is live when
//! [`open`] returns. Its rings are set up afterwards on a ring thread
//! ([`rings`]; several interfaces' in parallel, so their grace periods in
//! the kernel overlap), and handed over as [`super::handover`] says.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use log::{debug, error, warn};
use nix::libc;
use nix::sched::{setns, CloneFlags};

use super::epb::Framing;
use super::filter;
use super::handover::{Handed, Tap};
use super::live::Live;
use super::ring::Ring;
use super::{socket, Capture, Closer, Doomed, OpenError, OpenRequest, RingInfo};
use crate::proto::bpf::{self, Loopback, LOOPBACK_IFINDEX};
use crate::proto::linktype::{self, LinkType};
use crate::proto::pcapng_write::{stream_head, Interface};

/// The name of the pseudo-interface of every interface.
pub const ANY: &str = "any";

/// An interface's two sockets, made in the namespace: the one read at
/// once (no ring) and the one that gets the ring.
struct Made {
    name: String,
    ifindex: i32,
    link: LinkType,
    live: OwnedFd,
    ring: OwnedFd,
}

/// The sockets of a capture made in its namespace: per interface, and one
/// spare whose closing is the grace period before the cut-over (see
/// [`rings`]).
struct Sockets {
    made: Vec<Made>,
    spare: OwnedFd,
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
fn make_sockets(netns: &File, names: &[String]) -> Result<Sockets, OpenError> {
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

fn make_sockets_here(names: &[String]) -> Result<Sockets, OpenError> {
    // Made here too, where packet sockets are surely allowed; never bound.
    let spare = packet_socket(true)?;
    if names.is_empty() {
        return Ok(Sockets {
            made: vec![Made {
                name: ANY.into(),
                ifindex: 0,
                link: linktype::LINUX_SLL,
                live: packet_socket(true)?,
                ring: packet_socket(true)?,
            }],
            spare,
        });
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
            live: packet_socket(link.cooked)?,
            ring: packet_socket(link.cooked)?,
        });
    }
    Ok(Sockets { made, spare })
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

fn framing(link: LinkType) -> Framing {
    if link.cooked {
        Framing::Cooked
    } else {
        Framing::Raw {
            ethernet: link == linktype::ETHERNET,
        }
    }
}

/// What a ring thread needs to set up one interface's ring.
struct Plan {
    name: String,
    ifindex: i32,
    /// The socket for the ring (taken by its set-up).
    fd: Option<OwnedFd>,
    program: Vec<bpf::Insn>,
    promiscuous: bool,
    interface: u32,
    framing: Framing,
    /// Raised just before the ring is bound (see [`Live::marker`]).
    marker: Arc<AtomicBool>,
    /// The live socket, to stop it once the ring is bound.
    live: OwnedFd,
}

/// A capture's rings still to set up (on a ring thread: [`rings`]).
pub struct RingJob {
    ticket: u64,
    plans: Vec<Plan>,
    spare: OwnedFd,
    /// Raised when the capture has ended: the rings are not wanted.
    ended: Arc<AtomicBool>,
}

impl RingJob {
    /// The ticket of the capture's open.
    pub fn ticket(&self) -> u64 {
        self.ticket
    }

    /// The capture's interfaces.
    pub fn interfaces(&self) -> usize {
        self.plans.len()
    }
}

/// One interface made live; its plan for the ring.
fn live_of(req: &OpenRequest, id: u32, m: Made) -> Result<(Tap, RingInfo, Plan), OpenError> {
    let program = program(req, &m)?;
    let framing = framing(m.link);
    // libpcap ignores promiscuous mode on `any`.
    let promiscuous = !req.chaste && m.ifindex != 0;
    let live = Live::setup(m.live, m.ifindex, &program, promiscuous, id, framing)
        .map_err(|e| format!("cannot capture on interface '{}': {e}", m.name))?;
    let dup = live
        .try_clone_fd()
        .map_err(|e| format!("cannot capture on interface '{}': {e}", m.name))?;
    let plan = Plan {
        name: m.name.clone(),
        ifindex: m.ifindex,
        fd: Some(m.ring),
        program,
        promiscuous,
        interface: id,
        framing,
        marker: live.marker(),
        live: dup,
    };
    let info = RingInfo {
        name: m.name,
        linktype: m.link.linktype,
        ifindex: m.ifindex,
    };
    Ok((Tap::live(live), info, plan))
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

/// Opens `req`'s capture: live when this returns (its sockets bound,
/// without rings), with the job of setting up its rings. `Err` is the
/// reason to give the client.
pub fn open(ticket: u64, req: &OpenRequest) -> Result<(Capture, RingJob), OpenError> {
    let t = Instant::now();
    let Sockets { made, spare } = make_sockets(&req.netns, &req.interfaces)?;
    let in_ns = t.elapsed();
    let mut taps = Vec::with_capacity(made.len());
    let mut infos = Vec::with_capacity(made.len());
    let mut plans = Vec::with_capacity(made.len());
    for (i, m) in made.into_iter().enumerate() {
        // On the first failure what was made so far is dropped here, on
        // this helper thread.
        let (tap, info, plan) = live_of(req, i as u32, m)?;
        taps.push(tap);
        infos.push(info);
        plans.push(plan);
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
        "capture live on {} socket(s) in {:?} ({:?} inside the namespace)",
        taps.len(),
        t.elapsed(),
        in_ns
    );
    let ended = Arc::new(AtomicBool::new(false));
    let job = RingJob {
        ticket,
        plans,
        spare,
        ended: Arc::clone(&ended),
    };
    Ok((Capture::new(taps, infos, head, ended), job))
}

/// Sets up the rings of `job` (on a ring thread: it waits for the
/// kernel), in this order (see [`super::handover`]): each ring made, its
/// live socket's marker raised, the ring bound; one grace period (the
/// spare socket closed: `packet_release` waits in `synchronize_net()`),
/// after which every packet a walk of the taps gave the live socket alone
/// is on its queue; then each ring's counts read and its live socket
/// stopped. Whatever is not handed over goes to `closer`.
pub fn rings(job: RingJob, closer: &Closer) -> Vec<Result<Handed, String>> {
    let t = Instant::now();
    let RingJob {
        plans,
        spare,
        ended,
        ..
    } = job;
    let gone = |ended: &AtomicBool| ended.load(Ordering::SeqCst);
    if gone(&ended) {
        let n = plans.len();
        closer.close(Doomed(Box::new((plans, spare))));
        return (0..n).map(|_| Err("the capture ended".into())).collect();
    }
    // The grace periods of several rings' set-ups overlap on threads of
    // their own.
    let prepare = |p: &mut Plan| -> Result<Ring, String> {
        let fd = p.fd.take().ok_or("no socket for the ring")?;
        Ring::prepare(fd, &p.program, p.interface, p.framing)
            .map_err(|e| format!("cannot set up a ring on '{}': {e}", p.name))
    };
    let mut plans = plans;
    let prepared: Vec<Result<Ring, String>> = if plans.len() == 1 {
        plans.iter_mut().map(prepare).collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = plans
                .iter_mut()
                .map(|p| s.spawn(move || prepare(p)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a ring set-up thread failed".to_string()))
                })
                .collect()
        })
    };
    let mut bound: Vec<Result<(Ring, OwnedFd), String>> = Vec::with_capacity(plans.len());
    let mut leftovers: Vec<Box<dyn Send>> = Vec::new();
    for (plan, ring) in plans.into_iter().zip(prepared) {
        let Plan {
            name,
            ifindex,
            promiscuous,
            marker,
            live,
            ..
        } = plan;
        let ring = match ring {
            Ok(r) if gone(&ended) => {
                leftovers.push(Box::new((r, live)));
                bound.push(Err("the capture ended".into()));
                continue;
            }
            Ok(r) => r,
            Err(e) => {
                leftovers.push(Box::new(live));
                bound.push(Err(e));
                continue;
            }
        };
        // From here a packet taken from the live socket may be in the ring
        // too: the loop records it.
        marker.store(true, Ordering::SeqCst);
        match ring.bind(ifindex, promiscuous) {
            Ok(()) => bound.push(Ok((ring, live))),
            Err(e) => {
                leftovers.push(Box::new((ring, live)));
                bound.push(Err(format!("cannot bind the ring on '{name}': {e}")));
            }
        }
    }
    if bound.iter().any(Result::is_ok) {
        // The grace period: closing a packet socket waits for one
        // (`packet_release` -> `synchronize_net()`), whatever it was.
        drop(spare);
    } else {
        leftovers.push(Box::new(spare));
    }
    let handed = bound
        .into_iter()
        .map(|b| {
            let (mut ring, live) = b?;
            // B's counts first, then A stopped: every packet B counted so
            // far, A counted too.
            let pre = ring.counts();
            if let Err(e) = socket::stop(live.as_raw_fd()) {
                warn!("cannot stop a capture's socket without a ring at its hand-over: {e}");
            }
            leftovers.push(Box::new(live));
            Ok(Handed { ring, pre })
        })
        .collect();
    closer.close(Doomed(Box::new(leftovers)));
    debug!("rings ready for the hand-over in {:?}", t.elapsed());
    handed
}
