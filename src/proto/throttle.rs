//! Slowing down token guessing, per client address, sans-IO: a bounded
//! table of recent failures that says how long the next `401` to an
//! address must be held back.
//!
//! Without it one client tries thousands of tokens a second. With it, each
//! wrong token from an address doubles that address's delay (from
//! [`FIRST_DELAY`] up to [`MAX_DELAY`]), while every other address is
//! answered at once: the table is keyed by address, IPv4 by the whole
//! address and IPv6 by its /64 (one host usually holds a whole /64, so its
//! addresses count as one client). Failures are forgotten as time passes:
//! the count halves every [`HALF_LIFE`], so a user who mistyped a token
//! once is not slowed for long, and an address quiet for a while starts
//! afresh. A right token does not clear the count: a guesser that also has
//! one valid token must not reset its own penalty with it.
//!
//! The table never grows past [`MAX_ENTRIES`] (a client that owns many
//! addresses must not grow memory): when it is full, entries that have
//! decayed to nothing are dropped first, else the entry whose last failure
//! is oldest makes room (least recently failed).
//!
//! This module only counts and computes: it never sleeps, never reads a
//! clock (the caller passes `now`), never touches a socket. Holding the
//! answer back (a timer in the session) is the caller's business.

use core::net::IpAddr;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Addresses (or /64s) remembered at once. An entry is a few dozen bytes, so
/// the table stays under a megabyte; far more clients than guess at once.
pub const MAX_ENTRIES: usize = 16_384;
/// Failures an address may have without any delay: a person retrying a
/// mistyped token a couple of times is not slowed at all.
pub const FREE_FAILURES: u32 = 3;
/// The delay after the first failure beyond the free ones; it doubles with
/// each further failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay: long enough to cut a guesser to a few tries a minute
/// per connection, short enough that a confused user is not locked out.
pub const MAX_DELAY: Duration = Duration::from_secs(10);
/// Time over which an address's failure count halves.
pub const HALF_LIFE: Duration = Duration::from_secs(60);

/// The key an address is counted under: IPv4 (and IPv4-mapped IPv6) whole,
/// IPv6 by its /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    V4(u32),
    V6Prefix(u64),
}

impl Key {
    pub fn of(addr: IpAddr) -> Key {
        match addr {
            IpAddr::V4(v4) => Key::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::V4(u32::from(v4)),
                None => Key::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Failures, decayed to `at` (a fraction after decay).
    failures: f64,
    /// When `failures` was last brought up to date (the last failure).
    at: Instant,
}

impl Entry {
    /// The count as it stands at `now`.
    fn decayed(&self, now: Instant) -> f64 {
        let age = now.saturating_duration_since(self.at).as_secs_f64();
        self.failures * 0.5f64.powf(age / HALF_LIFE.as_secs_f64())
    }
}

/// Below this a decayed count is nothing: the entry may be dropped.
const FORGOTTEN: f64 = 0.5;

/// The failure table (see the module docs).
#[derive(Debug)]
pub struct Throttle {
    entries: HashMap<Key, Entry>,
    max: usize,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::with_capacity(MAX_ENTRIES)
    }
}

impl Throttle {
    /// A table of at most `max` entries (at least one).
    pub fn with_capacity(max: usize) -> Throttle {
        Throttle {
            entries: HashMap::new(),
            max: max.max(1),
        }
    }

    /// Addresses remembered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How long the answer to a request from `addr` that carried a wrong
    /// token must be held back, counting this failure.
    pub fn failed(&mut self, addr: IpAddr, now: Instant) -> Duration {
        let key = Key::of(addr);
        let count = match self.entries.get_mut(&key) {
            Some(e) => {
                e.failures = e.decayed(now) + 1.0;
                e.at = now;
                e.failures
            }
            None => {
                self.make_room(now);
                self.entries.insert(
                    key,
                    Entry {
                        failures: 1.0,
                        at: now,
                    },
                );
                1.0
            }
        };
        delay_for(count)
    }

    /// The delay `addr` would get now without a new failure (what it has
    /// earned so far), for a caller that checks before it counts.
    pub fn pending(&self, addr: IpAddr, now: Instant) -> Duration {
        self.entries
            .get(&Key::of(addr))
            .map_or(Duration::ZERO, |e| delay_for(e.decayed(now)))
    }

    /// Full: drop every entry decayed to nothing; if none was, the one
    /// whose last failure is oldest. Linear in the table, and only when a
    /// new address fails while the table is full.
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.max {
            return;
        }
        self.entries.retain(|_, e| e.decayed(now) >= FORGOTTEN);
        if self.entries.len() < self.max {
            return;
        }
        if let Some(oldest) = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.at)
            .map(|(k, _)| *k)
        {
            self.entries.remove(&oldest);
        }
    }
}

/// The delay for a (decayed) failure count: nothing up to
/// [`FREE_FAILURES`], then [`FIRST_DELAY`] doubling per failure, at most
/// [`MAX_DELAY`].
fn delay_for(count: f64) -> Duration {
    let over = count.round() - f64::from(FREE_FAILURES);
    if over < 1.0 {
        return Duration::ZERO;
    }
    // 2^(over-1), capped well before it could overflow.
    let factor = 2f64.powf((over - 1.0).min(32.0));
    FIRST_DELAY.mul_f64(factor).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_few_mistakes_cost_nothing_then_each_failure_doubles_the_delay_to_the_cap() {
        let mut t = Throttle::default();
        let now = Instant::now();
        let a = ip("192.0.2.7");
        let delays: Vec<Duration> = (0..12).map(|_| t.failed(a, now)).collect();
        assert_eq!(&delays[..3], &[Duration::ZERO; 3]);
        assert_eq!(delays[3], FIRST_DELAY);
        assert_eq!(delays[4], FIRST_DELAY * 2);
        assert_eq!(delays[5], FIRST_DELAY * 4);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(delays[11], MAX_DELAY);
        assert_eq!(t.pending(a, now), MAX_DELAY);
    }

    #[test]
    fn one_guessing_address_does_not_slow_any_other() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for _ in 0..1000 {
            t.failed(ip("198.51.100.1"), now);
        }
        assert_eq!(t.pending(ip("198.51.100.2"), now), Duration::ZERO);
        assert_eq!(t.failed(ip("198.51.100.2"), now), Duration::ZERO);
        assert_eq!(t.pending(ip("2001:db8:1::5"), now), Duration::ZERO);
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let mut t = Throttle::default();
        let now = Instant::now();
        // A guesser rotating through the addresses of its own /64.
        for i in 0..10u16 {
            t.failed(ip(&format!("2001:db8:a:b::{i:x}")), now);
        }
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.pending(ip("2001:db8:a:b:ffff::1"), now),
            t.pending(ip("2001:db8:a:b::1"), now)
        );
        assert!(t.pending(ip("2001:db8:a:b::1"), now) > Duration::ZERO);
        assert_eq!(t.pending(ip("2001:db8:a:c::1"), now), Duration::ZERO);
        for _ in 0..5 {
            t.failed(ip("::ffff:203.0.113.9"), now);
        }
        assert_eq!(
            t.pending(ip("203.0.113.9"), now),
            t.pending(ip("::ffff:203.0.113.9"), now)
        );
        assert!(t.pending(ip("203.0.113.9"), now) > Duration::ZERO);
    }

    #[test]
    fn failures_decay_by_half_every_half_life() {
        let mut t = Throttle::default();
        let now = Instant::now();
        let a = ip("192.0.2.9");
        for _ in 0..8 {
            t.failed(a, now);
        }
        let fresh = t.pending(a, now);
        assert_eq!(fresh, FIRST_DELAY * 16);
        // 8 failures halve to 4 after one half-life: 1 over the free ones.
        assert_eq!(t.pending(a, now + HALF_LIFE), FIRST_DELAY);
        assert_eq!(t.pending(a, now + HALF_LIFE * 2), Duration::ZERO);
        // A failure after a long quiet starts nearly afresh.
        assert_eq!(t.failed(a, now + HALF_LIFE * 10), Duration::ZERO);
    }

    #[test]
    fn the_table_is_bounded_and_makes_room_with_forgotten_then_least_recent_entries() {
        let mut t = Throttle::with_capacity(4);
        let now = Instant::now();
        for i in 0..4 {
            for _ in 0..6 {
                t.failed(ip(&format!("10.0.0.{i}")), now + Duration::from_secs(i));
            }
        }
        assert_eq!(t.len(), 4);
        // Full, nothing forgotten: the least recently failed (10.0.0.0) goes.
        t.failed(ip("10.0.1.1"), now + Duration::from_secs(5));
        assert_eq!(t.len(), 4);
        assert_eq!(
            t.pending(ip("10.0.0.0"), now + Duration::from_secs(5)),
            Duration::ZERO
        );
        assert!(t.pending(ip("10.0.0.3"), now + Duration::from_secs(5)) > Duration::ZERO);
        // Much later every entry has decayed: all are dropped to make room.
        let later = now + HALF_LIFE * 20;
        t.failed(ip("10.0.2.2"), later);
        assert_eq!(t.len(), 1);
        // Any number of addresses: never more than the bound.
        let mut t = Throttle::with_capacity(100);
        for i in 0..10_000u32 {
            t.failed(IpAddr::from(i.to_be_bytes()), now);
            assert!(t.len() <= 100);
        }
    }
}
