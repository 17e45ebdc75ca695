//! The measurement harness of `benches/relay.rs` (and parts of the other
//! benches), tested by `tests/bench_harness.rs`: start the systems under
//! test on the synthetic capture program ([`crate::pcapgen`]), read their
//! streams, check them, measure, report.
//!
//! Modules: [`client`] reads many streams on one thread (with the kit's
//! [`crate::wsframes`] and [`crate::pcapgen::StreamCheck`]); [`baseline`]
//! is the raw relay; [`websocat`] finds the other relay; the kit's
//! [`crate::service`] starts the servers, [`crate::procs`] reads them,
//! [`crate::ghostwire`] answers for discovery; [`scenarios`] runs the
//! issue's measurements; [`engine`] measures the capture engines against
//! the reference ring reader on real traffic ([`crate::traffic`]);
//! [`report`] prints and serialises them; [`stats`] holds the percentile
//! rules. Nothing here asserts a timing: numbers are
//! reported, never judged pass/fail, except against the targets in
//! the report.

pub mod baseline;
pub mod client;
pub mod engine;
pub mod report;
pub mod scenarios;
pub mod stats;
pub mod websocat;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::time::{clock_gettime, ClockId};

fn clock_ns(id: ClockId) -> u64 {
    match clock_gettime(id) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64,
        // These clocks cannot fail on Linux; 0 would show as an absurd value.
        Err(_) => 0,
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock the generator stamps packets with.
pub fn mono_ns() -> u64 {
    clock_ns(ClockId::CLOCK_MONOTONIC)
}

/// CPU time of the calling thread in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(ClockId::CLOCK_THREAD_CPUTIME_ID)
}

/// The environment variable `name` parsed as a `T` (surrounding white
/// space ignored), or `default` if it is unset or does not parse: the
/// benches' knobs.
pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Raises this process's descriptor limit to its hard limit (children
/// inherit it); returns the new soft limit.
pub fn raise_nofile() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 0,
    }
}
