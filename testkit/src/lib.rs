//! The test kit of packetflix: what the end-to-end tests (`tests/`) and the
//! benchmarks (`benches/`) share, compiled once as a library. Real network
//! namespaces, the real service binary, a real websocket client, a pcapng
//! reader, raw HTTP and a GhostWire stand-in. Every resource made here is
//! owned by a guard whose `Drop` removes it, also when a test panics; every
//! wait here is bounded so no test can hang. Nothing here touches the host's
//! own network: traffic only flows inside namespaces the tests make
//! (documentation address ranges) or on loopback.
//!
//! A dev-dependency only: nothing here ships with the service. Being a
//! library, each part is compiled once for all test and bench binaries, and
//! the compiler and clippy check it like any crate's public API (its own
//! tests are `tests/testkit.rs` of the service's package, so the top-level
//! `cargo nextest run --all-targets` runs them).
//!
//! The parts:
//! - processes: [`service`] (the one launcher of the service, or of another
//!   server a bench compares), [`engine`] (the two capture engines and the
//!   macro that runs one test body with each), [`bins`] (where cargo put
//!   the binaries), [`procs`] (the one `/proc` reader), [`netns`]
//!   (namespaces, veth pairs, processes inside), [`docker`] (images,
//!   containers);
//! - stand-ins: [`ghostwire`] (the discovery service), [`upstream`] (an
//!   origin behind the discovery proxy), [`pcapgen`] (the synthetic capture
//!   program, its stream format and its stream check);
//! - real traffic: [`traffic`] (namespaces joined by veth pairs, a UDP
//!   generator, the reference ring reader, and a decoder of captures of
//!   that traffic);
//! - clients: [`ws`] (tungstenite), [`rawws`] and [`wsframes`] (websocket by
//!   hand), [`http`] (raw HTTP/1.1), [`tls`] and [`pki`] (certificates, TLS
//!   and third-party wss clients), [`latency`] (`/version` probes);
//! - reading what was captured: [`pcapng`] (a reader, independent of the
//!   service's own pcapng code, and `tshark` as a second opinion);
//! - [`mod@bench`]: the measurement harness of the benches;
//! - here: scratch files and directories, bounded waits, and the capture
//!   helpers most end-to-end tests start with.

pub mod bench;
pub mod bins;
pub mod docker;
pub mod engine;
pub mod ghostwire;
pub mod http;
pub mod latency;
pub mod netns;
pub mod pcapgen;
pub mod pcapng;
pub mod pki;
pub mod procs;
pub mod rawws;
pub mod service;
pub mod tls;
pub mod traffic;
pub mod upstream;
pub mod ws;
pub mod wsframes;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use engine::Engine;
pub use ghostwire::{mobyshark, target, GhostWire};
pub use netns::{Netns, NsProcess, VethPair};
pub use pcapng::{tshark_decode, Pcapng};
pub use service::{Launch, Service};
pub use ws::{connect, Client};

/// Per-process counter that makes names of namespaces, files and addresses
/// unique among the tests running in parallel in one test binary.
static COUNTER: AtomicU32 = AtomicU32::new(1);

pub fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A path under /tmp unique to this process and call, for scratch files.
pub fn scratch_path(what: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!(
        "/tmp/pfx-test-{}-{}-{what}",
        std::process::id(),
        next_id()
    ))
}

/// A scratch file removed on drop (also when the test fails).
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        Scratch(scratch_path(what))
    }

    /// An executable shell script with `body` after the `#!/bin/sh` line.
    pub fn script(what: &str, body: &str) -> Scratch {
        use std::os::unix::fs::PermissionsExt;
        let s = Scratch::new(what);
        std::fs::write(&s.0, format!("#!/bin/sh\n{body}")).expect("write script");
        std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o755))
            .expect("chmod script");
        s
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("scratch paths are UTF-8")
    }

    pub fn read(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A directory under /tmp that any user may traverse (mode 0755), removed
/// with its contents on drop.
pub struct ScratchDir(pub std::path::PathBuf);

impl ScratchDir {
    pub fn new(what: &str) -> ScratchDir {
        use std::os::unix::fs::PermissionsExt;
        let d = ScratchDir(scratch_path(what));
        std::fs::create_dir(&d.0).expect("create scratch dir");
        std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o755))
            .expect("chmod scratch dir");
        d
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `path` is an executable file (for optional tools like setcap).
pub fn executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved kept).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// JavaScript's `encodeURIComponent`, as the discovery UI escapes the JSON
/// in its capture links (it keeps `!~*'()` that [`urlencode`] escapes).
pub fn encode_uri_component(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Makes traffic with `generate` in rounds and reads until `seen` holds for
/// what `client` collected, or `timeout` passes. Rounds are needed because a
/// capture program may be a moment late in attaching its filter.
pub fn until_seen(
    client: &mut Client,
    timeout: Duration,
    mut generate: impl FnMut(),
    seen: impl Fn(&Pcapng) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        generate();
        if client.read_until(
            |c| Pcapng::parse(&c.bytes).is_ok_and(|p| seen(&p)),
            Duration::from_millis(800),
        ) {
            return true;
        }
        if client.capture.close.is_some() || client.capture.error.is_some() {
            return false;
        }
    }
    false
}

/// Pings `ns`'s identity address until `client` saw an ICMP packet from it.
pub fn ping_self_until_seen(client: &mut Client, ns: &Netns) -> bool {
    until_seen(
        client,
        TRAFFIC_TIMEOUT,
        || {
            ns.ping_self(2);
        },
        |p| p.has_icmp_from(ns.addr),
    )
}

/// How long a test keeps making traffic waiting to see it captured.
pub const TRAFFIC_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a capture may take from upgrade to its first interface block.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a capture and waits until the capture program is capturing.
pub fn start(svc: &Service, query: &str, headers: &[(&str, &str)]) -> Client {
    let mut c = ws::must_connect(svc.port(), query, headers);
    c.wait_capturing(START_TIMEOUT);
    c
}

/// Close codes RFC 6455 (section 7.4) lets an endpoint put in a close frame
/// to report a failure: the defined ones except 1000 (normal), 1004/1005/1006
/// (reserved or never sent) and 1015 (TLS), plus the registered and private
/// ranges.
pub fn is_error_close_code(code: u16) -> bool {
    matches!(code, 1001..=1003 | 1007..=1014 | 3000..=4999)
}

/// Opens a capture that the service must refuse: the upgrade succeeds and
/// the service closes with an error code and a reason (returned), then
/// closes TCP. Panics otherwise.
pub fn expect_refusal(port: u16, query: &str, headers: &[(&str, &str)]) -> String {
    let mut c = ws::must_connect(port, query, headers);
    let close = c.read_to_close(Duration::from_secs(15));
    let Some((code, reason)) = close else {
        panic!(
            "capture {query:?} {headers:?} was not closed: error={:?}, {} bytes streamed",
            c.capture.error,
            c.capture.bytes.len()
        );
    };
    assert!(
        is_error_close_code(code),
        "refusal of {query:?} closed with code {code} ({reason:?}), not an error code"
    );
    assert!(
        !reason.trim().is_empty(),
        "refusal of {query:?} has an empty reason"
    );
    assert!(
        c.wait_tcp_closed(Duration::from_secs(5)),
        "service kept TCP open after refusing {query:?}"
    );
    reason
}
