//! One packet socket with a TPACKET_V2 receive ring, read without system
//! calls: a frame belongs to the reader while its `tp_status` has
//! `TP_STATUS_USER`; the reader copies it into the caller's buffer as an
//! EPB and hands it back with `TP_STATUS_KERNEL`.
//!
//! A packet larger than a frame's room: `PACKET_COPY_THRESH` makes the
//! kernel (`tpacket_rcv`, net/packet/af_packet.c) put as much as fits in
//! the frame, mark it `TP_STATUS_COPY`, and queue the whole packet on the
//! socket's receive queue, in frame order (one queued copy per such frame,
//! while the queue is under `SO_RCVBUF`); the reader takes it with one
//! `recv`. Without room on the queue the frame holds the cut packet and no
//! flag, and the EPB says so (captured < original length).
//!
//! Setting up and tearing down a ring waits for the kernel (an RCU grace
//! period in `packet_set_ring` when the ring is made, two when the socket
//! is closed): [`Ring::setup`] and dropping a `Ring` happen on the engine's
//! helper threads, never on the loop.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::libc;

use super::epb::{self, Framing, Meta};
use super::socket::{self, step, Health};
use crate::proto::bpf::{Insn, SNAPLEN};
use crate::proto::pcapng_write::Counts;

/// Bytes of one frame: an Ethernet packet of 1514 bytes (and a VLAN tag)
/// fits after the 66-byte frame header of a raw socket (`tpacket_rcv`:
/// `TPACKET_ALIGN(TPACKET2_HDRLEN + 16)`, less the 14-byte link header);
/// larger packets take the copy path.
pub const FRAME_SIZE: usize = 2048;
/// Bytes of one ring: libpcap's default buffer, what dumpcap gets (1,024
/// frames).
pub const RING_BYTES: usize = 2 << 20;
/// The socket's receive queue, which holds the whole copies of packets
/// larger than a frame: room for 32 of 64 KiB.
pub const RCVBUF: libc::c_int = 2 << 20;
/// `TPACKET_V2` (`<linux/if_packet.h>`: V1 is 0).
const TPACKET_V2: libc::c_int = 1;
/// Frame header fields (`struct tpacket2_hdr`) and where the kernel puts
/// the `sockaddr_ll` (`TPACKET_ALIGN(sizeof(struct tpacket2_hdr))`).
const SLL_AT: usize = 32;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_COPY: u32 = 1 << 1;

/// One step of reading a socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Empty,
    /// An EPB of this many bytes was written to the buffer.
    Wrote(usize),
    /// The EPB did not fit the whole buffer; it is in the spill buffer.
    Spilled,
    /// The EPB fits an empty buffer but not what is left of this one.
    NoRoom,
}

pub struct Ring {
    fd: OwnedFd,
    map: NonNull<u8>,
    map_len: usize,
    block_size: usize,
    frames_per_block: usize,
    frames: usize,
    next: usize,
    interface: u32,
    framing: Framing,
    counts: Counts,
    /// The interface went down (the socket's error said so) and no packet
    /// has come since. Deleting an interface takes it down first, which
    /// is the only error the socket reports: the kernel's notifier unbinds
    /// the socket a moment later without another one. So while this holds,
    /// [`Ring::health`] asks the socket whether it is still bound.
    down: bool,
}

// SAFETY: the mapping is owned by this value alone (no copies of the
// pointer escape), so moving it to another thread moves the only access.
unsafe impl Send for Ring {}

impl Ring {
    /// Makes `fd` (a packet socket opened with protocol 0, so it receives
    /// nothing yet) a ring bound to `ifindex` (0: every interface), with
    /// `program` attached before the first packet can arrive.
    pub fn setup(
        fd: OwnedFd,
        ifindex: i32,
        program: &[Insn],
        promiscuous: bool,
        interface: u32,
        framing: Framing,
    ) -> io::Result<Ring> {
        let ring = Ring::prepare(fd, program, interface, framing)?;
        ring.bind(ifindex, promiscuous)?;
        Ok(ring)
    }

    /// Makes `fd` (a packet socket opened with protocol 0) a ring with
    /// `program` attached, not yet bound: it takes no packet until
    /// [`Ring::bind`]. This is the step that waits for the kernel (the
    /// grace period of `PACKET_RX_RING`).
    pub fn prepare(
        fd: OwnedFd,
        program: &[Insn],
        interface: u32,
        framing: Framing,
    ) -> io::Result<Ring> {
        let raw = fd.as_raw_fd();
        step("attaching the filter", socket::attach(raw, program))?;
        step(
            "PACKET_VERSION",
            socket::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V2),
        )?;
        step(
            "PACKET_COPY_THRESH",
            socket::setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_COPY_THRESH,
                &1 as &libc::c_int,
            ),
        )?;
        socket::receive_buffer(raw, RCVBUF);
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or(4096);
        // Blocks of one page (or the frame, if larger): measured here, the
        // ring is set up about twice as fast as with 64 KiB blocks.
        let block_size = page.max(FRAME_SIZE).next_power_of_two();
        let blocks = (RING_BYTES / block_size).max(1);
        let frames_per_block = block_size / FRAME_SIZE;
        let req = libc::tpacket_req {
            tp_block_size: block_size as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: FRAME_SIZE as u32,
            tp_frame_nr: (blocks * frames_per_block) as u32,
        };
        step(
            "PACKET_RX_RING",
            socket::setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req),
        )?;
        let map_len = block_size * blocks;
        // SAFETY: a fresh shared mapping of the socket's ring, of the size
        // the kernel just made; checked for failure below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                raw,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return step("mapping the ring", Err(io::Error::last_os_error()));
        }
        let Some(map) = NonNull::new(map.cast::<u8>()) else {
            return Err(io::Error::other("the ring was mapped at address 0"));
        };
        // From here the Ring owns the mapping: dropping it unmaps it.
        Ok(Ring {
            fd,
            map,
            map_len,
            block_size,
            frames_per_block,
            frames: blocks * frames_per_block,
            next: 0,
            interface,
            framing,
            counts: Counts::default(),
            down: false,
        })
    }

    /// Binds the prepared ring to `ifindex` (0: every interface): from
    /// here it takes packets. Quick (no grace period: the socket was not
    /// bound before).
    pub fn bind(&self, ifindex: i32, promiscuous: bool) -> io::Result<()> {
        let raw = self.fd.as_raw_fd();
        step("binding", socket::bind(raw, ifindex))?;
        if promiscuous {
            step("PACKET_ADD_MEMBERSHIP", socket::promiscuous(raw, ifindex))?;
        }
        Ok(())
    }

    /// The socket, for the loop's poll registration.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Frames in the ring.
    pub fn frames(&self) -> usize {
        self.frames
    }

    fn frame(&self, n: usize) -> *mut u8 {
        let at = (n / self.frames_per_block) * self.block_size
            + (n % self.frames_per_block) * FRAME_SIZE;
        // SAFETY: n < frames, so the offset is inside the mapping.
        unsafe { self.map.as_ptr().add(at) }
    }

    fn status(&self, frame: *mut u8) -> &AtomicU32 {
        // SAFETY: tp_status is the frame's first, 4-byte aligned word,
        // shared with the kernel, which updates it atomically.
        unsafe { AtomicU32::from_ptr(frame.cast::<u32>()) }
    }

    /// Whether the next frame holds a packet: one memory read.
    pub fn has_packet(&self) -> bool {
        self.status(self.frame(self.next)).load(Ordering::Acquire) & TP_STATUS_USER != 0
    }

    /// Writes the next packet as an EPB at the start of `out` (or, if it
    /// could not fit even an empty `out`, into `spill`).
    pub fn next_epb(&mut self, out: &mut [u8], empty: bool, spill: &mut Vec<u8>) -> Step {
        let frame = self.frame(self.next);
        let status = self.status(frame).load(Ordering::Acquire);
        if status & TP_STATUS_USER == 0 {
            return Step::Empty;
        }
        // SAFETY: the frame is ours until handed back; the header and the
        // sockaddr_ll are where the kernel wrote them.
        let (h, sll) = unsafe {
            (
                std::ptr::read(frame.cast::<libc::tpacket2_hdr>()),
                std::ptr::read_unaligned(frame.add(SLL_AT).cast::<libc::sockaddr_ll>()),
            )
        };
        let meta = Meta {
            ts_ns: u64::from(h.tp_sec) * 1_000_000_000 + u64::from(h.tp_nsec),
            len: h.tp_len,
            tag: epb::tag(self.framing, status, h.tp_vlan_tci, h.tp_vlan_tpid),
            sll,
        };
        let tagged = meta.tag.is_some();
        let copy = status & TP_STATUS_COPY != 0;
        let room = SNAPLEN as usize - epb::prefix(self.framing, tagged);
        let wanted = if copy { h.tp_len } else { h.tp_snaplen } as usize;
        let need = epb::need(self.framing, tagged, wanted.min(room));
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
        // The packet: the whole copy from the receive queue, else what the
        // frame holds.
        let mut got = None;
        if copy {
            // SAFETY: receiving into the block's packet area, of the length
            // given; MSG_TRUNC makes the return value the packet's length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    block[data_at..].as_mut_ptr().cast(),
                    wanted.min(room),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            if let Ok(n) = usize::try_from(n) {
                got = Some(n.min(wanted.min(room)));
            }
        }
        let data_len = match got {
            Some(n) => n,
            None => {
                let n = (h.tp_snaplen as usize).min(room);
                // SAFETY: tp_mac + tp_snaplen lies inside the frame, as the
                // kernel wrote it.
                let src =
                    unsafe { std::slice::from_raw_parts(frame.add(usize::from(h.tp_mac)), n) };
                block[data_at..data_at + n].copy_from_slice(src);
                n
            }
        };
        let len = epb::finish(block, self.framing, self.interface, &meta, data_len);
        if spilled {
            spill.truncate(len);
        }
        self.status(frame)
            .store(TP_STATUS_KERNEL, Ordering::Release);
        self.next = (self.next + 1) % self.frames;
        // A packet came: the interface is up.
        self.down = false;
        if spilled {
            Step::Spilled
        } else {
            Step::Wrote(len)
        }
    }

    /// Adds what the kernel counted since the last call (reading its
    /// counters resets them) and returns the totals.
    pub fn counts(&mut self) -> Counts {
        socket::add(&mut self.counts, socket::statistics(self.fd.as_raw_fd()));
        self.counts
    }

    /// Whether the interface went down and has brought no packet since
    /// (its deletion would then bring no error: check it again later).
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// The socket's pending error, read (and cleared) without waiting;
    /// while the interface is down, also whether it is gone.
    pub fn health(&mut self) -> Health {
        socket::health(self.fd.as_raw_fd(), None, &mut self.down)
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `prepare`, unmapped once; the socket
        // is closed after it by OwnedFd.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.map_len);
        }
    }
}
