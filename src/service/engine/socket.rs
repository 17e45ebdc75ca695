//! What the engine does to a packet socket whatever reads it (a ring or
//! `recvmsg`): attach a program, bind, join promiscuous mode, read the
//! kernel's counts and the socket's errors. Every call here is one short
//! system call that never waits for the kernel's grace periods (those are
//! in `PACKET_RX_RING` and `close`, see [`super::ring`]), so the loop may
//! make them.

use std::io;
use std::os::fd::RawFd;

use nix::libc;

use crate::proto::bpf::Insn;
use crate::proto::pcapng_write::Counts;

/// What the kernel said about the socket.
#[derive(Debug)]
pub enum Health {
    Fine,
    /// The interface went down; the socket resumes when it comes up (as
    /// libpcap keeps capturing).
    Down,
    /// The interface is gone (deleted, or its namespace is).
    Gone,
    Other(io::Error),
}

pub(super) fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub(super) fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is a live `T` of the size given.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
}

/// What a step of a set-up was, for the error.
pub(super) fn step<T>(what: &str, r: io::Result<T>) -> io::Result<T> {
    r.map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// Attaches a classic BPF program (replacing the one attached before).
pub(super) fn attach(fd: RawFd, program: &[Insn]) -> io::Result<()> {
    let mut filter: Vec<libc::sock_filter> = program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: u16::try_from(filter.len()).map_err(|_| io::Error::other("program too long"))?,
        filter: filter.as_mut_ptr(),
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

/// `ret #0`: the socket takes no packet any more (the kernel neither
/// queues nor counts what the filter refuses).
const DROP_ALL: [Insn; 1] = [Insn {
    code: 0x06,
    jt: 0,
    jf: 0,
    k: 0,
}];

/// Stops the socket taking packets (without unbinding it: a rebind or a
/// close would wait for a grace period).
pub(super) fn stop(fd: RawFd) -> io::Result<()> {
    attach(fd, &DROP_ALL)
}

/// Asks for a receive queue of `bytes` (beyond `rmem_max` only with
/// CAP_NET_ADMIN; without it, what is allowed).
pub(super) fn receive_buffer(fd: RawFd, bytes: libc::c_int) {
    if setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &bytes).is_err() {
        let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &bytes);
    }
}

/// Binds the socket to every protocol of `ifindex` (0: every interface):
/// from here it takes packets.
pub(super) fn bind(fd: RawFd, ifindex: i32) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: binding with a sockaddr_ll of the size given.
    check(unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
}

/// Puts `ifindex` in promiscuous mode for as long as the socket lives.
pub(super) fn promiscuous(fd: RawFd, ifindex: i32) -> io::Result<()> {
    // SAFETY: packet_mreq is plain data.
    let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mreq.mr_ifindex = ifindex;
    mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
}

/// What the kernel counted since the last call (`PACKET_STATISTICS`
/// resets its counters when read; `tp_packets` comes with the drops
/// added), or nothing if it cannot be read.
pub(super) fn statistics(fd: RawFd) -> Counts {
    let mut st = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `st`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Counts {
            received: u64::from(st.tp_packets),
            dropped: u64::from(st.tp_drops),
        }
    } else {
        Counts::default()
    }
}

/// Adds `b` to `a`.
pub(super) fn add(a: &mut Counts, b: Counts) {
    a.received += b.received;
    a.dropped += b.dropped;
}

/// The socket's pending error, read (and cleared) without waiting, or
/// `taken` (an error a `recvmsg` took from the socket before); while the
/// interface is down, also whether it is gone. `down` is kept by the
/// caller: set here, cleared when a packet comes.
pub(super) fn health(fd: RawFd, taken: Option<i32>, down: &mut bool) -> Health {
    let err = match taken {
        Some(e) => e,
        None => {
            let mut err: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: the kernel writes one int.
            let r = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    (&mut err as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            if r != 0 {
                return Health::Other(io::Error::last_os_error());
            }
            err
        }
    };
    match err {
        0 if !*down => Health::Fine,
        0 | libc::ENETDOWN => {
            // The kernel's notifier sets the bound index to -1 when the
            // device is unregistered, not when it only goes down.
            // SAFETY: sockaddr_ll is plain data.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: the kernel writes at most `len` bytes.
            let r = unsafe {
                libc::getsockname(fd, (&mut sll as *mut libc::sockaddr_ll).cast(), &mut len)
            };
            if r == 0 && sll.sll_ifindex == -1 {
                Health::Gone
            } else {
                *down = true;
                Health::Down
            }
        }
        e => Health::Other(io::Error::from_raw_os_error(e)),
    }
}
