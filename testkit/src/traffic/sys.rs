//! The C library calls and kernel structures the traffic generator and the
//! reference ring reader need, as glibc and the Linux UAPI headers declare
//! them on 64-bit Linux. Std only (the two programs are compiled without
//! any crate, see `build.rs`), so the layouts are written out here, each
//! with the header it comes from; `tests/testkit.rs` checks the sizes
//! against the `libc` crate's.
//!
//! Nothing here decides anything: thin wrappers that turn `-1` into
//! `io::Error` and nothing more.

use std::io;
use std::os::raw::{c_char, c_int, c_long, c_uint, c_ulong, c_void};

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
compile_error!("the traffic programs' C declarations are for 64-bit Linux");

/// `struct timespec` (time_t is a long here).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Timespec {
    pub tv_sec: c_long,
    pub tv_nsec: c_long,
}

/// `struct epoll_event`: packed on x86-64 (as <sys/epoll.h> declares it
/// there), naturally aligned elsewhere.
#[cfg_attr(target_arch = "x86_64", repr(C, packed))]
#[cfg_attr(not(target_arch = "x86_64"), repr(C))]
#[derive(Clone, Copy, Debug, Default)]
pub struct EpollEvent {
    pub events: u32,
    pub data: u64,
}

/// `struct sockaddr_ll` (<linux/if_packet.h>).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockaddrLl {
    pub sll_family: u16,
    /// Network byte order.
    pub sll_protocol: u16,
    pub sll_ifindex: c_int,
    pub sll_hatype: u16,
    pub sll_pkttype: u8,
    pub sll_halen: u8,
    pub sll_addr: [u8; 8],
}

/// `struct iovec`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Iovec {
    pub iov_base: *mut c_void,
    pub iov_len: usize,
}

/// `struct msghdr` (glibc's, 64-bit).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Msghdr {
    pub msg_name: *mut c_void,
    pub msg_namelen: u32,
    pub msg_iov: *mut Iovec,
    pub msg_iovlen: usize,
    pub msg_control: *mut c_void,
    pub msg_controllen: usize,
    pub msg_flags: c_int,
}

/// `struct mmsghdr`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Mmsghdr {
    pub msg_hdr: Msghdr,
    pub msg_len: c_uint,
}

/// `struct tpacket_req3` (<linux/if_packet.h>); its first four fields are
/// `struct tpacket_req`, which is what TPACKET_V2 takes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TpacketReq3 {
    pub tp_block_size: c_uint,
    pub tp_block_nr: c_uint,
    pub tp_frame_size: c_uint,
    pub tp_frame_nr: c_uint,
    pub tp_retire_blk_tov: c_uint,
    pub tp_sizeof_priv: c_uint,
    pub tp_feature_req_word: c_uint,
}

/// Bytes of `struct tpacket_req` (the V2 request).
pub const TPACKET_REQ_LEN: usize = 16;

/// `struct tpacket_stats_v3` (V2 fills the first two fields).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TpacketStats {
    pub tp_packets: c_uint,
    pub tp_drops: c_uint,
    pub tp_freeze_q_cnt: c_uint,
}

/// `struct timeval`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Timeval {
    pub tv_sec: c_long,
    pub tv_usec: c_long,
}

/// `struct rusage`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Rusage {
    pub ru_utime: Timeval,
    pub ru_stime: Timeval,
    pub ru_maxrss: c_long,
    pub ru_ixrss: c_long,
    pub ru_idrss: c_long,
    pub ru_isrss: c_long,
    pub ru_minflt: c_long,
    pub ru_majflt: c_long,
    pub ru_nswap: c_long,
    pub ru_inblock: c_long,
    pub ru_oublock: c_long,
    pub ru_msgsnd: c_long,
    pub ru_msgrcv: c_long,
    pub ru_nsignals: c_long,
    pub ru_nvcsw: c_long,
    pub ru_nivcsw: c_long,
}

// <bits/socket.h>, <linux/if_ether.h>, <linux/if_packet.h>
pub const AF_PACKET: c_int = 17;
pub const SOCK_RAW: c_int = 3;
pub const SOCK_CLOEXEC: c_int = 0o2_000_000;
pub const SOL_PACKET: c_int = 263;
pub const PACKET_RX_RING: c_int = 5;
pub const PACKET_STATISTICS: c_int = 6;
pub const PACKET_VERSION: c_int = 10;
pub const PACKET_QDISC_BYPASS: c_int = 20;
pub const TPACKET_V2: c_int = 1;
pub const TPACKET_V3: c_int = 2;
pub const ETH_P_ALL: u16 = 0x0003;
pub const ETH_P_IP: u16 = 0x0800;
/// Frame / block status bits (<linux/if_packet.h>).
pub const TP_STATUS_KERNEL: u32 = 0;
pub const TP_STATUS_USER: u32 = 1;
// <sys/mman.h>
pub const PROT_READ: c_int = 1;
pub const PROT_WRITE: c_int = 2;
pub const MAP_SHARED: c_int = 1;
// <sys/epoll.h>
pub const EPOLL_CLOEXEC: c_int = 0o2_000_000;
pub const EPOLL_CTL_ADD: c_int = 1;
pub const EPOLL_CTL_DEL: c_int = 2;
pub const EPOLLIN: u32 = 0x1;
pub const EPOLLERR: u32 = 0x8;
pub const EPOLLHUP: u32 = 0x10;
// <sched.h>, <sys/prctl.h>, <signal.h>, <sys/resource.h>, <time.h>
pub const CLONE_NEWNET: c_int = 0x4000_0000;
pub const PR_SET_PDEATHSIG: c_int = 1;
pub const SIGKILL: c_ulong = 9;
pub const RUSAGE_SELF: c_int = 0;
pub const CLOCK_MONOTONIC: c_int = 1;
pub const TIMER_ABSTIME: c_int = 1;
/// `EINTR` (<asm-generic/errno-base.h>).
pub const EINTR: i32 = 4;

extern "C" {
    fn clock_gettime(clock: c_int, tp: *mut Timespec) -> c_int;
    fn clock_nanosleep(
        clock: c_int,
        flags: c_int,
        request: *const Timespec,
        remain: *mut Timespec,
    ) -> c_int;
    fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: u32) -> c_int;
    fn getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut u32) -> c_int;
    fn bind(fd: c_int, addr: *const c_void, len: u32) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn mmap(
        addr: *mut c_void,
        len: usize,
        prot: c_int,
        flags: c_int,
        fd: c_int,
        off: i64,
    ) -> *mut c_void;
    fn munmap(addr: *mut c_void, len: usize) -> c_int;
    fn epoll_create1(flags: c_int) -> c_int;
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, event: *mut EpollEvent) -> c_int;
    fn epoll_pwait2(
        epfd: c_int,
        events: *mut EpollEvent,
        max: c_int,
        timeout: *const Timespec,
        mask: *const c_void,
    ) -> c_int;
    fn sendmmsg(fd: c_int, msgs: *mut Mmsghdr, n: c_uint, flags: c_int) -> c_int;
    fn setns(fd: c_int, nstype: c_int) -> c_int;
    fn sched_setaffinity(pid: c_int, size: usize, mask: *const c_ulong) -> c_int;
    fn prctl(option: c_int, ...) -> c_int;
    fn if_nametoindex(name: *const c_char) -> c_uint;
    fn getrusage(who: c_int, usage: *mut Rusage) -> c_int;
}

fn check(r: c_int) -> io::Result<c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// CLOCK_MONOTONIC in nanoseconds (the clock every process of the host
/// shares, and the one the packets carry).
pub fn mono_ns() -> u64 {
    let mut t = Timespec::default();
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC cannot fail on Linux.
    unsafe { clock_gettime(CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn timespec(ns: u64) -> Timespec {
    Timespec {
        tv_sec: (ns / 1_000_000_000) as c_long,
        tv_nsec: (ns % 1_000_000_000) as c_long,
    }
}

/// Sleeps until CLOCK_MONOTONIC reaches `ns` (an early return on a signal
/// is fine: callers loop on the clock).
pub fn sleep_until(ns: u64) {
    let t = timespec(ns);
    // SAFETY: valid pointers; the remainder is unused with TIMER_ABSTIME.
    unsafe { clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, std::ptr::null_mut()) };
}

pub fn packet_socket() -> io::Result<c_int> {
    // Protocol 0: the socket receives nothing until it is bound with one.
    // SAFETY: plain system call.
    check(unsafe { socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0) })
}

pub fn set_opt<T>(fd: c_int, level: c_int, name: c_int, val: &T, len: usize) -> io::Result<()> {
    assert!(len <= std::mem::size_of::<T>());
    // SAFETY: `val` is valid for `len` bytes (checked above).
    check(unsafe { setsockopt(fd, level, name, (val as *const T).cast(), len as u32) }).map(|_| ())
}

pub fn set_int_opt(fd: c_int, level: c_int, name: c_int, val: c_int) -> io::Result<()> {
    set_opt(fd, level, name, &val, std::mem::size_of::<c_int>())
}

/// `PACKET_STATISTICS`: packets the socket received and dropped since the
/// last call (reading resets them).
pub fn packet_stats(fd: c_int) -> io::Result<TpacketStats> {
    let mut s = TpacketStats::default();
    let mut len = std::mem::size_of::<TpacketStats>() as u32;
    // SAFETY: `s` is valid for `len` bytes; the kernel writes at most that.
    check(unsafe {
        getsockopt(
            fd,
            SOL_PACKET,
            PACKET_STATISTICS,
            (&mut s as *mut TpacketStats).cast(),
            &mut len,
        )
    })?;
    Ok(s)
}

pub fn bind_ll(fd: c_int, addr: &SockaddrLl) -> io::Result<()> {
    let len = std::mem::size_of::<SockaddrLl>() as u32;
    // SAFETY: `addr` is a valid sockaddr_ll of `len` bytes.
    check(unsafe { bind(fd, (addr as *const SockaddrLl).cast(), len) }).map(|_| ())
}

pub fn close_fd(fd: c_int) -> io::Result<()> {
    // SAFETY: the caller owns `fd` and does not use it afterwards.
    check(unsafe { close(fd) }).map(|_| ())
}

/// Maps `len` bytes of a packet socket's ring, shared with the kernel.
pub fn map_ring(fd: c_int, len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh mapping chosen by the kernel; nothing aliases it yet.
    let p = unsafe {
        mmap(
            std::ptr::null_mut(),
            len,
            PROT_READ | PROT_WRITE,
            MAP_SHARED,
            fd,
            0,
        )
    };
    if p as isize == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}

/// # Safety
/// `p` and `len` must be a mapping made by [`map_ring`] that nothing uses
/// any more.
pub unsafe fn unmap(p: *mut u8, len: usize) -> io::Result<()> {
    check(munmap(p.cast(), len)).map(|_| ())
}

/// An epoll instance, closed on drop: the reader waits with it as an event
/// loop (mio) would, so a wakeup costs what is ready, not what is watched.
pub struct Epoll(c_int);

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain system call.
        check(unsafe { epoll_create1(EPOLL_CLOEXEC) }).map(Epoll)
    }

    fn ctl(&self, op: c_int, fd: c_int, events: u32, token: u64) -> io::Result<()> {
        let mut ev = EpollEvent {
            events,
            data: token,
        };
        // SAFETY: a valid event for the call.
        check(unsafe { epoll_ctl(self.0, op, fd, &mut ev) }).map(|_| ())
    }

    /// Watches `fd` for input (level-triggered), reported as `token`.
    pub fn add(&self, fd: c_int, token: u64) -> io::Result<()> {
        self.ctl(EPOLL_CTL_ADD, fd, EPOLLIN, token)
    }

    pub fn delete(&self, fd: c_int) -> io::Result<()> {
        self.ctl(EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Waits for events, at most `timeout_ns` (`None`: forever); the
    /// number filled in, 0 on a timeout and on EINTR.
    pub fn wait(&self, events: &mut [EpollEvent], timeout_ns: Option<u64>) -> io::Result<usize> {
        let t = timeout_ns.map(timespec);
        let tp = t
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const Timespec);
        // SAFETY: valid array of its length, timespec or null, no mask.
        let r = unsafe {
            epoll_pwait2(
                self.0,
                events.as_mut_ptr(),
                events.len() as c_int,
                tp,
                std::ptr::null(),
            )
        };
        match check(r) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.raw_os_error() == Some(EINTR) => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        let _ = close_fd(self.0);
    }
}

/// # Safety
/// Every message must point at valid names and buffers for the call.
pub unsafe fn send_mmsg(fd: c_int, msgs: &mut [Mmsghdr]) -> io::Result<usize> {
    check(sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as c_uint, 0)).map(|n| n as usize)
}

/// Moves the calling thread into the network namespace `fd` refers to.
pub fn enter_netns(fd: c_int) -> io::Result<()> {
    // SAFETY: plain system call.
    check(unsafe { setns(fd, CLONE_NEWNET) }).map(|_| ())
}

/// Pins the calling thread (and what it starts later) to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    const WORDS: usize = 16; // a 1024-CPU mask, glibc's cpu_set_t
    let bits = c_ulong::BITS as usize;
    if cpu >= WORDS * bits {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "no such CPU"));
    }
    let mut mask = [0 as c_ulong; WORDS];
    mask[cpu / bits] |= 1 << (cpu % bits);
    // SAFETY: a valid mask of the size given.
    check(unsafe { sched_setaffinity(0, std::mem::size_of_val(&mask), mask.as_ptr()) }).map(|_| ())
}

/// Asks for SIGKILL when the parent dies, so an aborted bench leaves no
/// program behind.
pub fn die_with_parent() -> io::Result<()> {
    // SAFETY: plain system call with integer arguments.
    check(unsafe { prctl(PR_SET_PDEATHSIG, SIGKILL) }).map(|_| ())
}

/// The interface index of `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> io::Result<c_int> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: a valid C string.
    match unsafe { if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i as c_int),
    }
}

/// This process's CPU time (user, system) in microseconds, and its
/// voluntary and involuntary context switches.
pub fn own_usage() -> (u64, u64, u64, u64) {
    let mut r = Rusage::default();
    // SAFETY: a valid out-pointer.
    unsafe { getrusage(RUSAGE_SELF, &mut r) };
    let us = |t: Timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (
        us(r.ru_utime),
        us(r.ru_stime),
        r.ru_nvcsw as u64,
        r.ru_nivcsw as u64,
    )
}
