//! One interface of a capture, handed over from a socket without a ring
//! (live at once) to a socket with a ring (ready 8-16 ms later), so that
//! the stream can start, and its client's traffic with it, without
//! waiting for the ring's set-up, and no packet is lost or written twice
//! at the cut.
//!
//! **The order of things.** The opener binds the live socket *A* and the
//! stream starts. A ring thread sets up the ring *B*, raises A's marker
//! and binds B: from then on both sockets take every packet (the
//! overlap). It then waits for one grace period (it closes a spare packet
//! socket: `packet_release` calls `synchronize_net()`): every walk of the
//! kernel's packet taps that started before B was bound, and so gave a
//! packet to A and not to B, is over, and that packet is on A's queue.
//! It reads B's counters (`pre`) and stops A (a `ret #0` filter: A takes
//! nothing more, and counts nothing more) and hands B to the loop. The
//! loop reads A to its end (it was read all along; the rest is what came
//! since), then B, leaving out each of B's packets that A gave already.
//!
//! **Which packets are in both.** A packet is in B only if the walk of
//! the taps that delivered it saw B bound, so after the marker was
//! raised; it reached A in the same walk (or not at all, if A was stopped
//! in between). So every packet taken from A after the marker is seen
//! raised is recorded ([`Overlap::record`]: a [`Fingerprint`] of time,
//! length and first bytes, counted, so identical packets are matched one
//! for one), and a frame of B whose fingerprint is recorded is left out.
//! A's packets from before B was bound are recorded too when read late;
//! B never has them, so they only wait in the set. The checking ends
//! ([`Overlap::judge`]) when the set is empty, or at the first frame of B
//! stamped after A was read to its end (a packet A gave was stamped
//! before A gave it, and B holds frames in the order they were given, so
//! nothing behind that frame can be in the set), or after one ring of
//! frames past the `pre` ones (the loop reads no frame of B before A is
//! read to its end, so no more can have come in between). No margin of
//! time is guessed: the clock read when A was read to its end is the
//! bound.
//!
//! **The same time for the same packet** (kernel 6.x, checked in
//! net/packet/af_packet.c and net/core/dev.c): received packets are
//! stamped once, `skb->tstamp`, by `net_timestamp_check()` in
//! `netif_rx`/`netif_receive_skb` (or `__netif_receive_skb_core`) before
//! the taps are walked; sent packets are cloned once in
//! `dev_queue_xmit_nit()`, the clone stamped once by
//! `net_timestamp_set()` and given to every tap. Both stamp only while
//! network time stamping is on (`netstamp_needed_key`), which A's
//! `SO_TIMESTAMPNS` turns on (`sock_enable_timestamp` ->
//! `net_enable_timestamp`; the first user's switch is deferred to a work
//! item, which runs long before B is bound, one `PACKET_RX_RING` grace
//! period later). A's `recvmsg` reports `skb->tstamp`
//! (`__sock_recv_timestamp`); B's frame takes `skb->tstamp` too
//! (`tpacket_rcv`: "prefer an existing software timestamp",
//! `tpacket_get_timestamp(..., po->tp_tstamp | SOF_TIMESTAMPING_SOFTWARE)`),
//! the current time only if it is 0. So both sockets see the same
//! nanoseconds. The exception: a received packet still carrying a
//! monotonic delivery time (a forwarded one with an EDT stamp):
//! `skb_tstamp()` is 0 for B, and `packet_rcv` replaces it with the
//! current time for A (`skb_clear_delivery_time`), so the two differ; such
//! a packet of the overlap would be written twice, never lost.
//!
//! **The counts** stay the kernel's ([`Tally`]): every packet B counted
//! before A was stopped, A counted too (it was live and its filter the
//! same), so received = A's + B's - B's `pre` - the frames of B after
//! `pre` that were left out; dropped = A's + B's - B's `pre` drops (A
//! counted each of those, as taken or dropped) - the frames of B from
//! before the stop that A had dropped and B's ring held (written from
//! B). A frame of that kind stamped before A's latest packet written is
//! not written (it would come out of order) and stays counted as A's
//! drop. Only a packet whose walk of the taps straddles the reading of
//! B's counters and A's stop (two system calls in a row on the ring
//! thread) *and* that A dropped is counted twice, as received and
//! dropped (one A took is recorded and its frame of B left out, so it
//! counts once). So the counts are exact while A drops nothing; under a
//! flood that fills A's queue at the cut, they are over by the packets
//! of that window: none to 4 measured at 100,000 packets a second, more
//! if the ring thread is preempted between the two calls.
//!
//! **Promiscuous mode**, unless the capture is chaste, is held by both
//! sockets while they overlap: the interface's promiscuity count (`ip -d
//! link`) reads 2 for the capture's first tens of milliseconds, and 1 once
//! A is closed on a closer thread.
//!
//! Nothing here makes a system call beyond the sockets' own reads; the
//! loop runs it.

use std::collections::HashMap;

use log::warn;

use super::epb::{self, Fingerprint};
use super::live::Live;
use super::ring::{Ring, Step};
use super::socket::Health;
use crate::proto::pcapng_write::Counts;

/// Fingerprints kept for one interface's overlap: A's queue holds at most
/// a few thousand packets (4 MiB of buffers of at least ~640 bytes each)
/// and B's ring 1,024 frames, so this is ten times what a cut-over can
/// need; past it (a flood the loop outruns for long), packets are no
/// longer recorded and some could be written twice.
pub const MAX_OVERLAP: usize = 1 << 16;

/// What the cut-over subtracts from the two sockets' counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// B's counts when A was stopped: A counted each of those packets too.
    pub pre: Counts,
    /// Frames of B after those that A had given (left out).
    pub skipped_post: u64,
    /// Frames of B from before the stop that A had dropped (written from
    /// B).
    pub rescued_pre: u64,
}

impl Tally {
    /// The interface's counts from A's and B's.
    pub fn combine(&self, live: Counts, ring: Counts) -> Counts {
        Counts {
            received: (live.received + ring.received)
                .saturating_sub(self.pre.received + self.skipped_post),
            dropped: (live.dropped + ring.dropped)
                .saturating_sub(self.pre.dropped + self.rescued_pre),
        }
    }
}

/// Whether a frame of B is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Skip,
}

/// The state of one interface's overlap, from A's marker to the end of
/// the checking.
#[derive(Debug, Default)]
pub struct Overlap {
    seen: HashMap<Fingerprint, u32>,
    recorded: usize,
    warned: bool,
    /// The latest time among A's packets written.
    last_live_ts: u64,
    /// Set at the cut: B's frames from before A's stop.
    frames_pre: u64,
    /// B's frames in all.
    ring_frames: u64,
    /// Frames of B judged so far.
    judged: u64,
    /// When A was read to its end (nanoseconds since the epoch).
    drained_at: Option<u64>,
}

impl Overlap {
    /// One packet written from A (`epb` as written); `marked`: the ring
    /// may hold it too.
    pub fn record(&mut self, epb: &[u8], marked: bool) {
        let fp = epb::fingerprint(epb);
        self.last_live_ts = self.last_live_ts.max(fp.ts_ns);
        if !marked {
            return;
        }
        if self.recorded >= MAX_OVERLAP {
            if !std::mem::replace(&mut self.warned, true) {
                warn!("more than {MAX_OVERLAP} packets in one hand-over to a ring: some may be written twice");
            }
            return;
        }
        self.recorded += 1;
        *self.seen.entry(fp).or_insert(0) += 1;
    }

    /// A was stopped when B held `frames_pre` frames (of `ring_frames`).
    pub fn cut(&mut self, frames_pre: u64, ring_frames: u64) {
        self.frames_pre = frames_pre;
        self.ring_frames = ring_frames;
    }

    /// A is read to its end at `now_ns`.
    pub fn drained(&mut self, now_ns: u64) {
        self.drained_at = Some(now_ns);
    }

    /// Nothing left to check before B's first frame: no frame from before
    /// the stop and nothing recorded.
    pub fn over(&self) -> bool {
        self.frames_pre == 0 && self.seen.is_empty()
    }

    fn take(&mut self, fp: &Fingerprint) -> bool {
        match self.seen.get_mut(fp) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                self.seen.remove(fp);
                true
            }
            None => false,
        }
    }

    /// Judges B's next frame (`epb` as written); whether the checking is
    /// over after it.
    pub fn judge(&mut self, epb: &[u8], tally: &mut Tally) -> (Verdict, bool) {
        let fp = epb::fingerprint(epb);
        let pre = self.judged < self.frames_pre;
        self.judged += 1;
        let verdict = if self.take(&fp) {
            if !pre {
                tally.skipped_post += 1;
            }
            Verdict::Skip
        } else if pre && fp.ts_ns < self.last_live_ts {
            // A dropped it and has written later packets: it would come
            // out of order. Left out, it stays counted as A's drop.
            Verdict::Skip
        } else {
            if pre {
                tally.rescued_pre += 1;
            }
            Verdict::Keep
        };
        let after = self.judged >= self.frames_pre;
        let done = after
            && (self.seen.is_empty()
                || fp.ts_ns > self.drained_at.unwrap_or(u64::MAX)
                || self.judged >= self.frames_pre + self.ring_frames);
        (verdict, done)
    }
}

/// B with what the ring thread read of it when it stopped A.
pub struct Handed {
    pub ring: Ring,
    /// B's counts at that moment.
    pub pre: Counts,
}

/// One interface's sockets.
pub struct Tap {
    live: Option<Live>,
    ring: Option<Ring>,
    overlap: Option<Overlap>,
    tally: Tally,
    /// A's counts once it is retired.
    live_counts: Counts,
    /// A, read to its end, to be closed.
    retired: Option<Live>,
}

impl Tap {
    /// An interface read from its live socket until a ring is handed over.
    pub fn live(live: Live) -> Tap {
        Tap {
            live: Some(live),
            ring: None,
            overlap: Some(Overlap::default()),
            tally: Tally::default(),
            live_counts: Counts::default(),
            retired: None,
        }
    }

    /// An interface read from its ring alone.
    pub fn ring(ring: Ring) -> Tap {
        Tap {
            live: None,
            ring: Some(ring),
            overlap: None,
            tally: Tally::default(),
            live_counts: Counts::default(),
            retired: None,
        }
    }

    /// B is ready and A stopped: A is read to its end, then B. `Err`: B
    /// was not (it is given back); A stays the source.
    pub fn hand_over(&mut self, handed: Handed) -> Result<(), Handed> {
        if self.ring.is_some() || self.live.is_none() {
            return Err(handed);
        }
        let frames_pre = handed.pre.received.saturating_sub(handed.pre.dropped);
        if let Some(o) = &mut self.overlap {
            o.cut(frames_pre, handed.ring.frames() as u64);
        }
        self.tally.pre = handed.pre;
        self.ring = Some(handed.ring);
        Ok(())
    }

    /// No ring will come: what was recorded for it goes.
    pub fn keep_live(&mut self) {
        if self.ring.is_none() {
            self.overlap = None;
        }
    }

    /// Whether a ring was handed over (the cut-over may still be going on).
    pub fn has_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// Whether the live socket is still open.
    pub fn has_live(&self) -> bool {
        self.live.is_some()
    }

    /// The sockets' descriptors.
    pub fn fds(&self) -> impl Iterator<Item = std::os::fd::RawFd> + '_ {
        self.live
            .iter()
            .map(Live::fd)
            .chain(self.ring.iter().map(Ring::fd))
    }

    /// Whether a read may write something (a system call while A is the
    /// source, one memory read after).
    pub fn has_packet(&self) -> bool {
        self.live.as_ref().is_some_and(Live::has_packet)
            || self.ring.as_ref().is_some_and(Ring::has_packet)
    }

    /// A, read to its end and out of use, for the closer.
    pub fn take_retired(&mut self) -> Option<Live> {
        self.retired.take()
    }

    fn retire_live(&mut self) {
        if let Some(mut live) = self.live.take() {
            self.live_counts = live.counts();
            if let Some(o) = &mut self.overlap {
                o.drained(super::now_ns());
                if o.over() {
                    self.overlap = None;
                }
            }
            self.retired = Some(live);
        }
    }

    /// Writes the next packet (see [`Ring::next_epb`]).
    pub fn next_epb(&mut self, out: &mut [u8], empty: bool, spill: &mut Vec<u8>) -> Step {
        if let Some(live) = &mut self.live {
            let marked = live.marked();
            let step = live.next_epb(out, empty, spill);
            let written: Option<&[u8]> = match &step {
                Step::Wrote(len) => Some(&out[..*len]),
                Step::Spilled => Some(spill),
                Step::NoRoom => return step,
                Step::Empty if self.ring.is_some() => None,
                Step::Empty => return step,
            };
            match written {
                Some(epb) => {
                    if let Some(o) = &mut self.overlap {
                        o.record(epb, marked);
                    }
                    return step;
                }
                // Stopped and read to its end: B from here.
                None => self.retire_live(),
            }
        }
        let Some(ring) = &mut self.ring else {
            return Step::Empty;
        };
        loop {
            let step = ring.next_epb(out, empty, spill);
            let Some(o) = &mut self.overlap else {
                return step;
            };
            let epb: &[u8] = match &step {
                Step::Wrote(len) => &out[..*len],
                Step::Spilled => spill,
                _ => return step,
            };
            let (verdict, done) = o.judge(epb, &mut self.tally);
            if done {
                self.overlap = None;
            }
            match verdict {
                Verdict::Keep => return step,
                Verdict::Skip => spill.clear(),
            }
        }
    }

    /// The interface's counts so far (a cheap system call per socket).
    pub fn counts(&mut self) -> Counts {
        let live = match &mut self.live {
            Some(l) => l.counts(),
            None => self.live_counts,
        };
        let ring = self.ring.as_mut().map(Ring::counts).unwrap_or_default();
        self.tally.combine(live, ring)
    }

    /// The sockets' health: the worst of the two.
    pub fn health(&mut self) -> Health {
        let mut worst = Health::Fine;
        let rank = |h: &Health| match h {
            Health::Fine => 0,
            Health::Down => 1,
            Health::Other(_) => 2,
            Health::Gone => 3,
        };
        let live = self.live.as_mut().map(Live::health);
        let ring = self.ring.as_mut().map(Ring::health);
        for h in [live, ring].into_iter().flatten() {
            if rank(&h) > rank(&worst) {
                worst = h;
            }
        }
        worst
    }

    /// Whether an interface went down and no packet came since.
    pub fn is_down(&self) -> bool {
        self.live.as_ref().is_some_and(Live::is_down)
            || self.ring.as_ref().is_some_and(Ring::is_down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pcapng_write::{epb_len, put_epb};

    /// An EPB of a 64-byte packet whose bytes are `id` and time `ts`.
    fn epb(id: u32, ts: u64) -> Vec<u8> {
        let mut b = vec![0u8; epb_len(64)];
        for (i, byte) in b[28..92].iter_mut().enumerate() {
            *byte = (id.wrapping_mul(31).wrapping_add(i as u32)) as u8;
        }
        b[28..32].copy_from_slice(&id.to_be_bytes());
        put_epb(&mut b, 0, ts, 64, 64);
        b
    }

    /// Runs the ring's frames `(id, ts)` through the judge; the ids kept.
    fn run(o: &mut Overlap, tally: &mut Tally, frames: &[(u32, u64)]) -> Vec<u32> {
        let mut kept = Vec::new();
        let mut checking = true;
        for &(id, ts) in frames {
            if checking {
                let (v, done) = o.judge(&epb(id, ts), tally);
                if v == Verdict::Keep {
                    kept.push(id);
                }
                checking = !done;
            } else {
                kept.push(id);
            }
        }
        kept
    }

    #[test]
    fn the_overlap_is_left_out_exactly_when_cpus_interleave() {
        let mut o = Overlap::default();
        // A gives 0..10; the marker was raised before 5 was taken.
        for id in 0..10u32 {
            o.record(&epb(id, 1000 + u64::from(id)), id >= 5);
        }
        // B holds 5..10 in another order (two CPUs), then 10..14.
        o.cut(5, 1024);
        o.drained(1009);
        let mut tally = Tally::default();
        let frames = [(6, 1006), (5, 1005), (8, 1008), (7, 1007), (9, 1009)];
        let mut all: Vec<(u32, u64)> = frames.to_vec();
        all.extend((10..14).map(|id| (id, 1000 + u64::from(id))));
        assert_eq!(run(&mut o, &mut tally, &all), vec![10, 11, 12, 13]);
        assert_eq!(tally.skipped_post, 0);
        assert_eq!(tally.rescued_pre, 0);
    }

    #[test]
    fn identical_packets_are_matched_one_for_one() {
        let mut o = Overlap::default();
        // Two identical packets (same time, bytes) taken from A.
        o.record(&epb(1, 50), true);
        o.record(&epb(1, 50), true);
        o.cut(3, 1024);
        o.drained(60);
        let mut tally = Tally::default();
        // B has them and a third one that A never gave.
        let kept = run(&mut o, &mut tally, &[(1, 50), (1, 50), (1, 50)]);
        assert_eq!(kept, vec![1]);
        assert_eq!(tally.rescued_pre, 1);
    }

    #[test]
    fn a_frame_a_dropped_is_written_from_b_unless_it_would_come_out_of_order() {
        let mut o = Overlap::default();
        // A: 0..3, dropped 3..6 (its queue was full), then gave 6.
        for id in [0, 1, 2, 6] {
            o.record(&epb(id, u64::from(id)), true);
        }
        o.cut(4, 1024);
        o.drained(100);
        let mut tally = Tally::default();
        // B from 2: 2 is A's; 3, 4, 5 A dropped but 6 came out already.
        let kept = run(
            &mut o,
            &mut tally,
            &[(2, 2), (3, 3), (4, 4), (5, 5), (7, 7)],
        );
        assert_eq!(kept, vec![7]);
        assert_eq!(tally.rescued_pre, 0, "left out, they stay A's drops");
        // Had A written nothing later, they come from B.
        let mut o = Overlap::default();
        for id in [0, 1, 2] {
            o.record(&epb(id, u64::from(id)), true);
        }
        o.cut(4, 1024);
        o.drained(100);
        let mut tally = Tally::default();
        let kept = run(
            &mut o,
            &mut tally,
            &[(2, 2), (3, 3), (4, 4), (5, 5), (6, 6)],
        );
        assert_eq!(kept, vec![3, 4, 5, 6]);
        assert_eq!(tally.rescued_pre, 3);
        // A: 0, 1, 2 taken, 3, 4, 5 dropped; B: 2, 3, 4, 5 before the
        // stop, 6 after.
        let tally = Tally {
            pre: Counts {
                received: 4,
                dropped: 0,
            },
            ..tally
        };
        let live = Counts {
            received: 6,
            dropped: 3,
        };
        let ring = Counts {
            received: 5,
            dropped: 0,
        };
        assert_eq!(
            tally.combine(live, ring),
            Counts {
                received: 7,
                dropped: 0
            },
            "seven packets, none lost"
        );
    }

    #[test]
    fn stragglers_after_the_stop_are_left_out_and_counted_once() {
        let mut o = Overlap::default();
        for id in 0..4u32 {
            o.record(&epb(id, u64::from(id)), id >= 2);
        }
        // B held 2 at the stop; 3 reached both a moment after.
        o.cut(1, 1024);
        o.drained(10);
        let mut tally = Tally::default();
        let kept = run(&mut o, &mut tally, &[(2, 2), (3, 3), (4, 11), (5, 12)]);
        assert_eq!(kept, vec![4, 5]);
        assert_eq!(tally.skipped_post, 1);
        let tally = Tally {
            pre: Counts {
                received: 1,
                dropped: 0,
            },
            ..tally
        };
        // A counted 0..4, B 2..6.
        let c = tally.combine(
            Counts {
                received: 4,
                dropped: 0,
            },
            Counts {
                received: 4,
                dropped: 0,
            },
        );
        assert_eq!(c.received, 6);
    }

    #[test]
    fn the_checking_ends_at_the_first_frame_stamped_after_a_was_read_out() {
        let mut o = Overlap::default();
        // A's backlog from before B was bound, read after the marker: B
        // never has it.
        for id in 0..3u32 {
            o.record(&epb(id, u64::from(id)), true);
        }
        o.cut(0, 1024);
        o.drained(5);
        let mut tally = Tally::default();
        let (v, done) = o.judge(&epb(9, 4), &mut tally);
        assert_eq!((v, done), (Verdict::Keep, false));
        let (v, done) = o.judge(&epb(10, 6), &mut tally);
        assert_eq!((v, done), (Verdict::Keep, true));
        // Or after one ring of frames, whatever the clock says.
        let mut o = Overlap::default();
        o.record(&epb(0, 0), true);
        o.cut(0, 2);
        o.drained(u64::MAX - 1);
        assert!(!o.judge(&epb(1, 1), &mut tally).1);
        assert!(o.judge(&epb(2, 2), &mut tally).1);
    }

    #[test]
    fn nothing_recorded_before_the_marker_nor_past_the_bound() {
        let mut o = Overlap::default();
        o.record(&epb(1, 1), false);
        assert!(o.seen.is_empty());
        assert_eq!(o.last_live_ts, 1, "the time counts still");
        for id in 0..(MAX_OVERLAP as u32 + 10) {
            o.record(&epb(id, 2), true);
        }
        assert_eq!(o.recorded, MAX_OVERLAP);
    }
}
