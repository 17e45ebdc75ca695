//! Keeps TLS handshakes from monopolising the loop.
//!
//! A handshake's public-key work (an RSA-2048 signature is 1-2 ms here)
//! runs on the loop thread when the ClientHello is read. An attacker needs
//! no cryptography to make us do it: one recorded ClientHello replayed on
//! thousands of connections costs us a signature each. Two rules bound what
//! that can take from everyone else:
//!
//! - **A budget per loop turn.** Handshake work stops for the turn once it
//!   has taken [`TURN_BUDGET`]; the connections that wait are read again in
//!   the next turn, after the events that came meanwhile (established
//!   captures, plain requests, new clients) were served. So one turn holds
//!   the loop for at most the budget plus one handshake.
//! - **A cap on connections still in their handshake**, per client address
//!   ([`MAX_PER_PEER`], IPv4 whole, IPv6 by its /64 as `proto::throttle`
//!   counts them) and in all ([`MAX_TOTAL`]): a connection past either is
//!   closed at once, before any work. A replayed ClientHello never finishes
//!   its handshake, so its connection holds its slot until the head
//!   deadline: one address can make us sign at most [`MAX_PER_PEER`] times
//!   per head deadline, and the queue a real client waits behind stays
//!   short.
//!
//! Measured (`tests/security.rs`: 2,000 replays of one ClientHello from
//! another address against an RSA-2048 key, while a capture streams and
//! `/version` is asked over new TLS connections): p99 1.7 s with neither
//! rule, 57 ms with the budget alone (and all 2,000 signatures made), 11 ms
//! with both (16 made); 6 ms with no flood.
//!
//! Why not handshakes on a worker thread: the work would still be done,
//! competing for the same two cores; it would move each connection between
//! threads twice; and fairness would still need the same caps. The budget
//! and the caps bound the loop's share directly and cost a clock read per
//! handshake read. An ECDSA certificate makes each handshake cheaper still
//! (0.23 ms of CPU against 0.63 ms with RSA-2048 here; README, "Securing
//! it").

use std::collections::HashMap;
use std::time::{Duration, Instant};

use core::net::IpAddr;

use crate::proto::throttle::Key;

/// Handshake work one loop turn may do: a few RSA-2048 handshakes here
/// (0.6 ms of CPU each in a release build), a dozen ECDSA ones; other
/// clients wait at most about this long per turn.
pub const TURN_BUDGET: Duration = Duration::from_millis(3);
/// Connections one address may have in their handshake at once: far more
/// than a browser (six) or a capture client (one) opens.
pub const MAX_PER_PEER: u32 = 16;
/// Connections in their handshake at once, from all addresses.
pub const MAX_TOTAL: u32 = 512;

/// The loop's handshake accounting.
#[derive(Default)]
pub struct Gate {
    /// Handshake work done this turn.
    spent: Duration,
    in_handshake: HashMap<Key, u32>,
    total: u32,
}

impl Gate {
    /// A new loop turn: a new budget.
    pub fn new_turn(&mut self) {
        self.spent = Duration::ZERO;
    }

    /// Whether handshake work may be done now (this turn's budget is not
    /// used up).
    pub fn may_work(&self) -> bool {
        self.spent < TURN_BUDGET
    }

    /// Handshake work that began at `since` is done.
    pub fn worked(&mut self, since: Instant) {
        self.spent += since.elapsed();
    }

    /// A new TLS connection from `peer`: admitted (and counted until
    /// [`done`](Self::done)) unless a cap is reached.
    pub fn admit(&mut self, peer: IpAddr) -> bool {
        let n = self.in_handshake.entry(Key::of(peer)).or_insert(0);
        if *n >= MAX_PER_PEER || self.total >= MAX_TOTAL {
            if *n == 0 {
                self.in_handshake.remove(&Key::of(peer));
            }
            return false;
        }
        *n += 1;
        self.total += 1;
        true
    }

    /// `peer`'s connection finished its handshake, or ended in it.
    pub fn done(&mut self, peer: IpAddr) {
        let key = Key::of(peer);
        if let Some(n) = self.in_handshake.get_mut(&key) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.in_handshake.remove(&key);
            }
        }
    }

    /// Connections in their handshake now.
    pub fn in_handshake(&self) -> u32 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_gets_its_cap_and_others_still_get_in() {
        let mut g = Gate::default();
        for _ in 0..MAX_PER_PEER {
            assert!(g.admit(ip("192.0.2.9")));
        }
        assert!(!g.admit(ip("192.0.2.9")));
        assert!(
            !g.admit(ip("::ffff:192.0.2.9")),
            "mapped is the same client"
        );
        assert!(g.admit(ip("192.0.2.10")));
        g.done(ip("192.0.2.9"));
        assert!(g.admit(ip("192.0.2.9")));
        assert_eq!(g.in_handshake(), MAX_PER_PEER + 1);
    }

    #[test]
    fn the_total_is_capped_and_freed_as_handshakes_end() {
        let mut g = Gate::default();
        let peers: Vec<IpAddr> = (0..MAX_TOTAL)
            .map(|i| ip(&format!("2001:db8:{i:x}::1")))
            .collect();
        for p in &peers {
            assert!(g.admit(*p));
        }
        assert!(!g.admit(ip("198.51.100.1")));
        for p in &peers {
            g.done(*p);
        }
        assert_eq!(g.in_handshake(), 0);
        assert!(g.in_handshake.is_empty(), "no empty entries are kept");
        assert!(g.admit(ip("198.51.100.1")));
    }

    #[test]
    fn the_budget_is_per_turn() {
        let mut g = Gate::default();
        assert!(g.may_work());
        g.spent = TURN_BUDGET;
        assert!(!g.may_work());
        g.new_turn();
        assert!(g.may_work());
    }
}
