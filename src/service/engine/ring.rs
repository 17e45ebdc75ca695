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

use crate::proto::bpf::{Insn, SNAPLEN};
use crate::proto::pcapng_write::{epb_len, put_epb, Counts, EPB_HEADER_LEN};

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
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
/// The 802.1Q tag protocol, for a tag without a reported TPID.
const ETH_P_8021Q: u16 = 0x8100;
/// Where libpcap re-inserts an offloaded VLAN tag: after the two MAC
/// addresses of an Ethernet header, before the protocol field of a cooked
/// header.
const VLAN_AT_ETHERNET: usize = 12;
const VLAN_AT_COOKED: usize = 14;
const VLAN_TAG_LEN: usize = 4;
/// The cooked header (`LINUX_SLL`) the engine writes before the packet of
/// a cooked socket.
const SLL_HDR_LEN: usize = 16;

/// How a ring's packets are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// As the kernel gives them (a raw socket).
    Raw {
        /// The link type is Ethernet: an offloaded VLAN tag is put back.
        ethernet: bool,
    },
    /// A cooked header first (a `SOCK_DGRAM` socket).
    Cooked,
}

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

/// One step of reading a ring.
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

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
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

/// What a step of `setup` was, for the error.
fn step<T>(what: &str, r: io::Result<T>) -> io::Result<T> {
    r.map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
}

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
        let raw = fd.as_raw_fd();
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
        step(
            "attaching the filter",
            setsockopt(raw, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog),
        )?;
        step(
            "PACKET_VERSION",
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V2),
        )?;
        step(
            "PACKET_COPY_THRESH",
            setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_COPY_THRESH,
                &1 as &libc::c_int,
            ),
        )?;
        // Beyond rmem_max needs CAP_NET_ADMIN; without it, take what is
        // allowed.
        if setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RCVBUF).is_err() {
            let _ = setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, &RCVBUF);
        }
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
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req),
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
        // From here the Ring owns the mapping: an error below unmaps it.
        let ring = Ring {
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
        };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: binding with a sockaddr_ll of the size given.
        step(
            "binding",
            check(unsafe {
                libc::bind(
                    raw,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            }),
        )?;
        if promiscuous {
            // SAFETY: packet_mreq is plain data.
            let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
            mreq.mr_ifindex = ifindex;
            mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
            step(
                "PACKET_ADD_MEMBERSHIP",
                setsockopt(raw, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq),
            )?;
        }
        Ok(ring)
    }

    /// The socket, for the loop's poll registration.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
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
        let vlan = (h.tp_vlan_tci != 0 || status & TP_STATUS_VLAN_VALID != 0)
            && !matches!(self.framing, Framing::Raw { ethernet: false });
        let prefix = match self.framing {
            Framing::Cooked => SLL_HDR_LEN,
            Framing::Raw { .. } => 0,
        } + if vlan { VLAN_TAG_LEN } else { 0 };
        let copy = status & TP_STATUS_COPY != 0;
        let room = SNAPLEN as usize - prefix;
        let wanted = if copy { h.tp_len } else { h.tp_snaplen } as usize;
        let most = prefix + wanted.min(room);
        let need = epb_len(most);
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
        let data_at = EPB_HEADER_LEN + prefix;
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
        let tag = || {
            let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 {
                h.tp_vlan_tpid
            } else {
                ETH_P_8021Q
            };
            let mut t = [0u8; VLAN_TAG_LEN];
            t[..2].copy_from_slice(&tpid.to_be_bytes());
            t[2..].copy_from_slice(&h.tp_vlan_tci.to_be_bytes());
            t
        };
        let p = EPB_HEADER_LEN;
        match self.framing {
            Framing::Cooked => {
                let b = &mut block[p..];
                b[0..2].copy_from_slice(&u16::from(sll.sll_pkttype).to_be_bytes());
                b[2..4].copy_from_slice(&sll.sll_hatype.to_be_bytes());
                b[4..6].copy_from_slice(&u16::from(sll.sll_halen).to_be_bytes());
                b[6..14].copy_from_slice(&sll.sll_addr);
                let mut at = VLAN_AT_COOKED;
                if vlan {
                    b[at..at + VLAN_TAG_LEN].copy_from_slice(&tag());
                    at += VLAN_TAG_LEN;
                }
                // sll_protocol is in network order already.
                b[at..at + 2].copy_from_slice(&sll.sll_protocol.to_ne_bytes());
            }
            Framing::Raw { .. } if vlan && data_len >= VLAN_AT_ETHERNET => {
                // The packet was written after a gap of one tag: move the
                // MAC addresses into it and put the tag behind them.
                block.copy_within(data_at..data_at + VLAN_AT_ETHERNET, p);
                block[p + VLAN_AT_ETHERNET..p + VLAN_AT_ETHERNET + VLAN_TAG_LEN]
                    .copy_from_slice(&tag());
            }
            Framing::Raw { .. } if vlan => {
                // Too short to hold MAC addresses: close the gap.
                block.copy_within(data_at..data_at + data_len, p);
            }
            Framing::Raw { .. } => {}
        }
        let caplen =
            if matches!(self.framing, Framing::Raw { .. }) && vlan && data_len < VLAN_AT_ETHERNET {
                data_len
            } else {
                prefix + data_len
            };
        let original = prefix + h.tp_len as usize;
        let len = epb_len(caplen);
        let ts = u64::from(h.tp_sec) * 1_000_000_000 + u64::from(h.tp_nsec);
        put_epb(
            &mut block[..len],
            self.interface,
            ts,
            caplen as u32,
            u32::try_from(original).unwrap_or(u32::MAX),
        );
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
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `st`.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.counts.received += u64::from(st.tp_packets);
            self.counts.dropped += u64::from(st.tp_drops);
        }
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
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the kernel writes one int.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Health::Other(io::Error::last_os_error());
        }
        match err {
            0 if !self.down => Health::Fine,
            0 | libc::ENETDOWN => {
                // The kernel's notifier sets the bound index to -1 when the
                // device is unregistered, not when it only goes down.
                // SAFETY: sockaddr_ll is plain data.
                let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: the kernel writes at most `len` bytes.
                let r = unsafe {
                    libc::getsockname(
                        self.fd.as_raw_fd(),
                        (&mut sll as *mut libc::sockaddr_ll).cast(),
                        &mut len,
                    )
                };
                if r == 0 && sll.sll_ifindex == -1 {
                    Health::Gone
                } else {
                    self.down = true;
                    Health::Down
                }
            }
            e => Health::Other(io::Error::from_raw_os_error(e)),
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the mapping made in setup, unmapped once; the socket is
        // closed after it by OwnedFd.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), self.map_len);
        }
    }
}
