//! A packet socket without a ring, read with `recvmsg`: what a capture
//! reads from the moment it is bound until its ring is ready (see
//! [`super::handover`]), or for good if the ring cannot be set up.
//!
//! Such a socket is live as soon as it is bound: no `PACKET_RX_RING`, so
//! no RCU grace period to wait for (8-16 ms of the kernel's time, which
//! the ring's set-up then spends while this socket already captures).
//! Each packet is one `recvmsg` (`MSG_DONTWAIT|MSG_TRUNC`): its bytes,
//! its `sockaddr_ll` (the cooked header of `any`), its nanosecond time
//! (`SO_TIMESTAMPNS`) and its VLAN tag and length (`PACKET_AUXDATA`), and
//! the EPB is written by the code the ring uses ([`super::epb`]), so a
//! packet comes out byte for byte the same from either socket.
//!
//! Each packet is received into a scratch buffer of the snap length, one
//! per thread (the loop's, for the life of the thread: a buffer of 256 KiB
//! per capture, made on an opener thread and freed on a closer, would be
//! left in the allocator's arenas), and copied to the socket's own buffer
//! (as large as its largest packet so far), then into the caller's (a
//! packet's length is not known before it is received, and one received
//! cannot be put back): two copies more than the ring's path, for the few
//! milliseconds this socket is read.
//! Never waits: every call is non-blocking.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::libc;

use super::epb::{self, Framing, Meta};
use super::ring::Step;
use super::socket::{self, step, Health};
use crate::proto::bpf::{Insn, SNAPLEN};
use crate::proto::pcapng_write::Counts;

/// The receive queue asked for: each queued packet costs its buffer's
/// whole size (at least about 640 bytes for a small one), so 4 MiB (the
/// kernel doubles what is asked) holds a few thousand packets, more than
/// a 2 MiB ring's 1,024 frames.
pub const LIVE_RCVBUF: libc::c_int = 2 << 20;
/// Room for the control messages of one packet: a `timespec` and a
/// `tpacket_auxdata`, each behind its `cmsghdr` (`CMSG_SPACE(16)` +
/// `CMSG_SPACE(20)` = 64 on 64-bit Linux), with room to spare.
const CONTROL_LEN: usize = 128;

thread_local! {
    /// Where `recvmsg` writes a packet (see the module's notes).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One packet received and not yet written (it did not fit what was left
/// of the caller's buffer).
struct Held {
    meta: Meta,
    /// Its bytes (at most the snap length), in `Live::data`.
    caplen: usize,
}

pub struct Live {
    fd: OwnedFd,
    interface: u32,
    framing: Framing,
    counts: Counts,
    /// The bytes of the packet held.
    data: Vec<u8>,
    held: Option<Held>,
    /// Set (by the thread setting up the ring) just before the ring is
    /// bound: every packet taken from here after it is seen set may be in
    /// the ring too.
    marker: Arc<AtomicBool>,
    /// An error a `recvmsg` took from the socket (receiving reads and
    /// clears the socket's error), for [`Live::health`].
    taken: Option<i32>,
    /// As [`super::ring::Ring`]'s: the interface went down and no packet
    /// has come since.
    down: bool,
}

impl Live {
    /// Makes `fd` (a packet socket opened with protocol 0) live on
    /// `ifindex` (0: every interface), with `program` attached before it
    /// is bound. Quick: nothing here waits for a grace period.
    pub fn setup(
        fd: OwnedFd,
        ifindex: i32,
        program: &[Insn],
        promiscuous: bool,
        interface: u32,
        framing: Framing,
    ) -> io::Result<Live> {
        let raw = fd.as_raw_fd();
        step("attaching the filter", socket::attach(raw, program))?;
        // Nanosecond times, and the kernel's time stamping on: the ring's
        // frames then carry the same stamp (see `handover`).
        step(
            "SO_TIMESTAMPNS",
            socket::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                &1 as &libc::c_int,
            ),
        )?;
        step(
            "PACKET_AUXDATA",
            socket::setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_AUXDATA,
                &1 as &libc::c_int,
            ),
        )?;
        socket::receive_buffer(raw, LIVE_RCVBUF);
        step("binding", socket::bind(raw, ifindex))?;
        if promiscuous {
            step("PACKET_ADD_MEMBERSHIP", socket::promiscuous(raw, ifindex))?;
        }
        Ok(Live {
            fd,
            interface,
            framing,
            counts: Counts::default(),
            data: Vec::new(),
            held: None,
            marker: Arc::new(AtomicBool::new(false)),
            taken: None,
            down: false,
        })
    }

    /// The socket, for the loop's poll registration.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Another descriptor of the same socket (for the ring's set-up,
    /// which stops this socket once the ring is bound).
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    /// The flag the ring's set-up raises just before binding the ring.
    pub fn marker(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.marker)
    }

    /// Whether the ring may hold what is taken from here from now on.
    pub fn marked(&self) -> bool {
        self.marker.load(Ordering::SeqCst)
    }

    /// Whether a packet waits (a system call: `SIOCINQ` gives the length
    /// of the first queued packet, 0 when there is none).
    pub fn has_packet(&self) -> bool {
        if self.held.is_some() {
            return true;
        }
        let mut n: libc::c_int = 0;
        // SAFETY: SIOCINQ writes one int.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::FIONREAD, &mut n) };
        r == 0 && n > 0
    }

    /// Receives the next packet into the scratch buffer. `Ok(false)`:
    /// none is waiting.
    fn receive(&mut self) -> io::Result<bool> {
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < SNAPLEN as usize {
                scratch.resize(SNAPLEN as usize, 0);
            }
            self.receive_into(scratch)
        })
    }

    fn receive_into(&mut self, scratch: &mut [u8]) -> io::Result<bool> {
        // SAFETY: plain data; all-zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut control = [0u64; CONTROL_LEN / 8];
        let mut iov = libc::iovec {
            iov_base: scratch.as_mut_ptr().cast(),
            iov_len: scratch.len(),
        };
        // SAFETY: plain data; all-zero is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = CONTROL_LEN as _;
        // SAFETY: every pointer in `msg` is to a live buffer of the length
        // given; MSG_TRUNC makes the result the packet's whole length.
        let n = unsafe {
            libc::recvmsg(
                self.fd.as_raw_fd(),
                &mut msg,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        let Ok(n) = usize::try_from(n) else {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(false),
                _ => Err(e),
            };
        };
        let mut ts_ns = None;
        let mut aux: Option<libc::tpacket_auxdata> = None;
        // SAFETY: walking the control messages the kernel wrote into
        // `control`, within `msg_controllen`, with the libc macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let data = libc::CMSG_DATA(c);
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::SOL_SOCKET, libc::SCM_TIMESTAMPNS) => {
                        let t = std::ptr::read_unaligned(data.cast::<libc::timespec>());
                        ts_ns = Some(
                            u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000
                                + u64::try_from(t.tv_nsec).unwrap_or(0),
                        );
                    }
                    (libc::SOL_PACKET, libc::PACKET_AUXDATA) => {
                        aux = Some(std::ptr::read_unaligned(
                            data.cast::<libc::tpacket_auxdata>(),
                        ));
                    }
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        let caplen = n.min(scratch.len());
        self.data.clear();
        self.data.extend_from_slice(&scratch[..caplen]);
        let (status, len, tci, tpid) = match aux {
            Some(a) => (a.tp_status, a.tp_len, a.tp_vlan_tci, a.tp_vlan_tpid),
            None => (0, u32::try_from(n).unwrap_or(u32::MAX), 0, 0),
        };
        self.held = Some(Held {
            meta: Meta {
                // Always there while SO_TIMESTAMPNS is on; the time of
                // reading otherwise.
                ts_ns: ts_ns.unwrap_or_else(super::now_ns),
                len,
                tag: epb::tag(self.framing, status, tci, tpid),
                sll,
            },
            caplen,
        });
        Ok(true)
    }

    /// Writes the next packet as an EPB at the start of `out` (or, if it
    /// could not fit even an empty `out`, into `spill`), as
    /// [`super::ring::Ring::next_epb`] does.
    pub fn next_epb(&mut self, out: &mut [u8], empty: bool, spill: &mut Vec<u8>) -> Step {
        // Receiving reports (and clears) an error the socket had before
        // any packet queued behind it (the interface went down or away):
        // kept for `health`, and the packets are received on the next
        // try. "Empty" must mean no packet is queued.
        let mut tries = 0;
        while self.held.is_none() {
            match self.receive() {
                Ok(true) => {}
                Ok(false) => return Step::Empty,
                Err(e) => {
                    self.taken = Some(e.raw_os_error().unwrap_or(libc::EIO));
                    tries += 1;
                    if tries > 1 {
                        return Step::Empty;
                    }
                }
            }
        }
        let Some(held) = &self.held else {
            return Step::Empty;
        };
        let tagged = held.meta.tag.is_some();
        let room = SNAPLEN as usize - epb::prefix(self.framing, tagged);
        let data_len = held.caplen.min(room);
        let need = epb::need(self.framing, tagged, data_len);
        let spilled = need > out.len();
        if spilled && !empty {
            return Step::NoRoom;
        }
        let block: &mut [u8] = if spilled {
            spill.clear();
            spill.resize(need, 0);
            spill
        } else {
            &mut out[..need]
        };
        let data_at = epb::data_at(self.framing, tagged);
        block[data_at..data_at + data_len].copy_from_slice(&self.data[..data_len]);
        let len = epb::finish(block, self.framing, self.interface, &held.meta, data_len);
        if spilled {
            spill.truncate(len);
        }
        self.held = None;
        self.down = false;
        if spilled {
            Step::Spilled
        } else {
            Step::Wrote(len)
        }
    }

    /// Adds what the kernel counted since the last call and returns the
    /// totals.
    pub fn counts(&mut self) -> Counts {
        socket::add(&mut self.counts, socket::statistics(self.fd.as_raw_fd()));
        self.counts
    }

    /// As [`super::ring::Ring::is_down`].
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// As [`super::ring::Ring::health`], with the error a `recvmsg` took.
    pub fn health(&mut self) -> Health {
        let taken = self.taken.take();
        socket::health(self.fd.as_raw_fd(), taken, &mut self.down)
    }
}
