//! Process-wide counters for `GET /metrics`, in Prometheus' text exposition
//! format (version 0.0.4).
//!
//! Every counter is a static atomic, so a call site counts with one line
//! (`metrics::CAPTURES_STARTED.inc()`, `metrics::refused(Refusal::Namespace)`)
//! and needs no handle passed through the reactor. Updates are relaxed atomic
//! adds: nothing here locks, allocates or does I/O on the counting path, so
//! counting can never make the loop wait. Rendering allocates one string.
//!
//! Labels take their values from the fixed enums below only: never a
//! container name, address, interface or anything else a client or the
//! kernel chooses, so the number of series stays bounded.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

/// A value that goes up and down (things open right now).
pub struct Gauge(AtomicI64);

impl Gauge {
    pub const fn new() -> Self {
        Gauge(AtomicI64::new(0))
    }

    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Self::new()
    }
}

/// Client connections open now (HTTP, websocket, proxied).
pub static CONNECTIONS_OPEN: Gauge = Gauge::new();
/// Captures running now: discovering or streaming.
pub static CAPTURES_RUNNING: Gauge = Gauge::new();
/// Capture programs started.
pub static CAPTURES_STARTED: Counter = Counter::new();
/// Capture bytes sent to clients (websocket payload, pcapng).
pub static BYTES_RELAYED: Counter = Counter::new();
/// Microseconds captures spent not reading their pipe because a client
/// did not take its output (rendered in seconds).
static PAUSED_MICROS: Counter = Counter::new();
/// Log lines the logger dropped instead of waiting for a full stderr.
pub static LOG_LINES_DROPPED: Counter = Counter::new();
/// TLS handshakes that failed.
pub static TLS_HANDSHAKES_FAILED: Counter = Counter::new();

/// Defines a label enum, its label values and a counter per value.
macro_rules! labelled {
    ($(#[$m:meta])* $name:ident, $store:ident, { $($(#[$vm:meta])* $variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
        }

        static $store: [Counter; $name::ALL.len()] = [const { Counter::new() }; $name::ALL.len()];
    };
}

labelled!(
    /// Why a capture request was refused, as a class.
    Refusal, REFUSED, {
        /// `--max-captures` captures were running (503).
        Limit => "limit",
        /// Bad or contradictory parameters, or nothing to look up.
        Parameters => "parameters",
        /// The network namespace or a requested interface was not found.
        Namespace => "namespace",
        /// The discovery service failed or does not list the target.
        Discovery => "discovery",
        /// The service lacks the capabilities to capture.
        Privileges => "privileges",
        /// The capture program could not be started or watched.
        Program => "program",
    }
);

labelled!(
    /// Why a running capture ended.
    End, ENDED, {
        /// The client sent a close frame.
        ClientClosed => "client_closed",
        /// The client's connection broke.
        ClientGone => "client_gone",
        /// The client broke the websocket protocol.
        Violation => "protocol_violation",
        /// The capture program ended by itself.
        ProgramEnded => "program_ended",
        /// The service shut down.
        Shutdown => "shutdown",
    }
);

labelled!(
    /// How a capture program was reaped.
    Exit, EXITS, {
        /// Exit status 0.
        Success => "success",
        /// A non-zero exit status.
        Failure => "failure",
        /// Killed by a signal (SIGTERM it did not handle, SIGKILL, a crash).
        Signal => "signal",
    }
);

labelled!(
    /// Which capture engine a count is about. (dumpcap's own drops are in
    /// the statistics blocks it writes into each stream; the service does
    /// not parse the stream for them.)
    Engine, KERNEL_DROPS, {
        /// Packet rings read by the service.
        Native => "native",
    }
);

labelled!(
    /// How one lookup with the discovery service went.
    Lookup, LOOKUPS, {
        /// The target was found.
        Found => "found",
        /// The service answered but does not list the target.
        NotListed => "not_listed",
        /// The service could not be reached.
        Unreachable => "unreachable",
        /// No complete answer within `--discovery-timeout`.
        TimedOut => "timed_out",
        /// A bad status, an unparsable or oversized answer.
        BadResponse => "bad_response",
    }
);

/// Upper bounds (seconds) of the discovery duration histogram's buckets,
/// from a local GhostWire's milliseconds up to the default 20 s deadline.
const LOOKUP_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
];
/// Lookups per bucket (not cumulative; summed when rendered), the last
/// slot for those above every bound.
static LOOKUP_HIST: [Counter; LOOKUP_BUCKETS.len() + 1] =
    [const { Counter::new() }; LOOKUP_BUCKETS.len() + 1];
static LOOKUP_MICROS: Counter = Counter::new();

impl Exit {
    /// The class of a reaped child's status.
    pub fn of(status: &nix::sys::wait::WaitStatus) -> Exit {
        use nix::sys::wait::WaitStatus;
        match status {
            WaitStatus::Exited(_, 0) => Exit::Success,
            WaitStatus::Signaled(..) => Exit::Signal,
            _ => Exit::Failure,
        }
    }
}

pub fn refused(why: Refusal) {
    REFUSED[why as usize].inc();
}

pub fn ended(why: End) {
    ENDED[why as usize].inc();
}

pub fn exited(how: Exit) {
    EXITS[how as usize].inc();
}

/// A discovery lookup finished (or failed) after `took`.
pub fn lookup(outcome: Lookup, took: Duration) {
    LOOKUPS[outcome as usize].inc();
    let secs = took.as_secs_f64();
    let slot = LOOKUP_BUCKETS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(LOOKUP_BUCKETS.len());
    LOOKUP_HIST[slot].inc();
    LOOKUP_MICROS.add(micros(took));
}

/// A capture was paused for `d` by a slow client.
pub fn paused_for(d: Duration) {
    PAUSED_MICROS.add(micros(d));
}

/// Packets the kernel dropped for a capture of `engine` (counted when it
/// ends).
pub fn kernel_dropped(engine: Engine, n: u64) {
    KERNEL_DROPS[engine as usize].add(n);
}

pub fn log_line_dropped() {
    LOG_LINES_DROPPED.inc();
}

pub fn tls_handshake_failed() {
    TLS_HANDSHAKES_FAILED.inc();
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// One metric family: its HELP and TYPE lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn labelled_family<L: Copy>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    all: &[L],
    value: impl Fn(L) -> (&'static str, u64),
) {
    family(out, name, "counter", help);
    for l in all {
        let (v, n) = value(*l);
        let _ = writeln!(out, "{name}{{{label}=\"{v}\"}} {n}");
    }
}

/// Every metric, in the text exposition format.
pub fn render() -> String {
    let mut out = String::with_capacity(4096);
    let mut one = |name: &str, kind: &str, help: &str, value: String| {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    };
    one(
        "packetflix_connections_open",
        "gauge",
        "Client connections open now.",
        CONNECTIONS_OPEN.get().to_string(),
    );
    one(
        "packetflix_captures_running",
        "gauge",
        "Captures running now (looking up their target or streaming).",
        CAPTURES_RUNNING.get().to_string(),
    );
    one(
        "packetflix_captures_started_total",
        "counter",
        "Capture programs started.",
        CAPTURES_STARTED.get().to_string(),
    );
    one(
        "packetflix_relayed_bytes_total",
        "counter",
        "Capture bytes sent to clients.",
        BYTES_RELAYED.get().to_string(),
    );
    one(
        "packetflix_capture_paused_seconds_total",
        "counter",
        "Time captures spent paused because a client did not keep up.",
        seconds(PAUSED_MICROS.get()).to_string(),
    );
    one(
        "packetflix_log_lines_dropped_total",
        "counter",
        "Log lines dropped instead of waiting for a full log output.",
        LOG_LINES_DROPPED.get().to_string(),
    );
    one(
        "packetflix_tls_handshakes_failed_total",
        "counter",
        "TLS handshakes that failed.",
        TLS_HANDSHAKES_FAILED.get().to_string(),
    );
    labelled_family(
        &mut out,
        "packetflix_captures_refused_total",
        "Capture requests refused, by reason class.",
        "reason",
        Refusal::ALL,
        |r| (r.label(), REFUSED[r as usize].get()),
    );
    labelled_family(
        &mut out,
        "packetflix_capture_kernel_drops_total",
        "Packets the kernel dropped for captures that ended (its ring was full), by engine.",
        "engine",
        Engine::ALL,
        |e| (e.label(), KERNEL_DROPS[e as usize].get()),
    );
    labelled_family(
        &mut out,
        "packetflix_captures_ended_total",
        "Captures ended, by cause.",
        "cause",
        End::ALL,
        |e| (e.label(), ENDED[e as usize].get()),
    );
    labelled_family(
        &mut out,
        "packetflix_capture_program_exits_total",
        "Capture programs reaped, by exit status class.",
        "status",
        Exit::ALL,
        |e| (e.label(), EXITS[e as usize].get()),
    );
    labelled_family(
        &mut out,
        "packetflix_discovery_lookups_total",
        "Lookups with the discovery service, by outcome.",
        "outcome",
        Lookup::ALL,
        |l| (l.label(), LOOKUPS[l as usize].get()),
    );
    histogram(&mut out);
    out
}

fn histogram(out: &mut String) {
    let name = "packetflix_discovery_lookup_duration_seconds";
    family(
        out,
        name,
        "histogram",
        "How long lookups with the discovery service took.",
    );
    let mut cumulative = 0;
    for (bound, n) in LOOKUP_BUCKETS.iter().zip(&LOOKUP_HIST) {
        cumulative += n.get();
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += LOOKUP_HIST[LOOKUP_BUCKETS.len()].get();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum {}", seconds(LOOKUP_MICROS.get()));
    let _ = writeln!(out, "{name}_count {cumulative}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line `series` (name plus labels) in `text`.
    fn sample(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    // The counters are process-wide and unit tests run in parallel, so these
    // tests assert on increases of series only they touch, never on values.

    #[test]
    fn labelled_counters_move_only_their_own_series() {
        let before = render();
        refused(Refusal::Privileges);
        refused(Refusal::Privileges);
        exited(Exit::Signal);
        let after = render();
        let d = |s: &str| sample(&after, s) - sample(&before, s);
        assert!(d("packetflix_captures_refused_total{reason=\"privileges\"}") >= 2.0);
        assert!(d("packetflix_capture_program_exits_total{status=\"signal\"}") >= 1.0);
    }

    #[test]
    fn every_label_value_has_a_series_from_the_start() {
        let text = render();
        for r in Refusal::ALL {
            assert!(text.contains(&format!("{{reason=\"{}\"}}", r.label())));
        }
        for e in End::ALL {
            assert!(text.contains(&format!("{{cause=\"{}\"}}", e.label())));
        }
        for l in Lookup::ALL {
            assert!(text.contains(&format!("{{outcome=\"{}\"}}", l.label())));
        }
    }

    #[test]
    fn lookup_durations_land_in_cumulative_buckets() {
        let h = "packetflix_discovery_lookup_duration_seconds";
        let before = render();
        lookup(Lookup::BadResponse, Duration::from_millis(30));
        lookup(Lookup::BadResponse, Duration::from_secs(60));
        let after = render();
        let d = |s: &str| sample(&after, s) - sample(&before, s);
        // 30 ms is above the 25 ms bound and within 50 ms; 60 s only in +Inf.
        // Other tests may add lookups meanwhile, so only lower bounds hold.
        assert!(d(&format!("{h}_bucket{{le=\"0.05\"}}")) >= 1.0);
        assert!(d(&format!("{h}_bucket{{le=\"+Inf\"}}")) >= 2.0);
        assert!(d(&format!("{h}_sum")) >= 60.03 - 1e-6);
        assert_eq!(
            sample(&after, &format!("{h}_count")),
            sample(&after, &format!("{h}_bucket{{le=\"+Inf\"}}"))
        );
        assert!(d("packetflix_discovery_lookups_total{outcome=\"bad_response\"}") >= 2.0);
    }

    #[test]
    fn buckets_never_decrease() {
        lookup(Lookup::Found, Duration::from_millis(3));
        let text = render();
        let counts: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("packetflix_discovery_lookup_duration_seconds_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(counts.len(), LOOKUP_BUCKETS.len() + 1);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    }

    #[test]
    fn paused_time_is_rendered_in_seconds() {
        let name = "packetflix_capture_paused_seconds_total";
        let before = sample(&render(), name);
        paused_for(Duration::from_millis(1500));
        assert!(sample(&render(), name) - before >= 1.5 - 1e-9);
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = render();
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|b| typed.contains(*b))
                    .unwrap_or(name);
                assert!(typed.contains(base), "{line} before its TYPE");
            }
        }
    }
}
