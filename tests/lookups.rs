//! End-to-end tests of the shared discovery lookups: concurrent captures
//! that need the discovery service share one exchange and its parsed
//! answer, and the discovery service's host name is looked up when it is
//! needed (not once at start-up) without the loop ever waiting for it.
//! Real parts: the service binary, a stand-in GhostWire over real HTTP, the
//! system resolver reading an `/etc/hosts` the test controls (in a mount
//! namespace of the service's own), real `dumpcap` in namespaces made here.

// The shared test kit (testkit/), by the name these tests have always used.
use packetflix_testkit as common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::latency::{baseline, Prober};
use common::procs;
use common::rawws::{raw_capture, read_close};
use common::ws;
use common::*;
use serde_json::json;

/// `/version` budget while lookups run (the figure), on top of the
/// slowest answer of the idle service in the same run.
const VERSION_BUDGET: Duration = Duration::from_millis(100);
/// How far past the target a loaded machine (the whole suite runs in
/// parallel on shared cores) may push an answer before the test fails; a
/// stalled loop (seconds, before these bounds) still fails it.
const VERSION_MARGIN: u32 = 3;
/// Captures asking for the same stale target at once.
const CONCURRENT_LOOKUPS: usize = 150;
/// Size of the stand-in's listing.
const LISTING_BYTES: usize = 8_000_000;
/// Peak service memory allowed, as a multiple of the listing.
const RSS_PER_LISTING: u64 = 3;

/// A listing of about `bytes` bytes: filler containers, none of them named
/// `wanted`.
fn big_listing(bytes: usize) -> Vec<u8> {
    let pad = "x".repeat(300);
    let mut targets = Vec::new();
    let mut size = 0;
    let mut i = 0u64;
    while size < bytes {
        let mut t = target(&format!("filler-{i}"), "", 4_000_000_000 + i, 0, 0);
        t["labels"] = json!({ "pad": pad });
        size += t.to_string().len() + 1;
        targets.push(t);
        i += 1;
    }
    mobyshark(&targets)
}

/// A pid no process has: one that just exited and was reaped.
fn dead_pid() -> i32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id() as i32;
    let _ = child.wait();
    pid
}

#[test]
fn concurrent_stale_lookups_share_one_exchange_and_its_parsed_answer() {
    let listing = big_listing(LISTING_BYTES);
    let listing_len = listing.len();
    let gw = GhostWire::start(listing);
    let svc = Service::with_discovery(gw.port(), 20, &[]);
    let port = svc.port();
    let name = format!("pfx-unlisted-{}", std::process::id());
    // A stale reference: the pid is gone, so the netns is not trusted and
    // the name is looked up.
    let stale = json!({"name": name, "netns": 4_026_531_999u64, "pid": dead_pid(), "starttime": 1});
    let q = format!("container={}", urlencode(&stale.to_string()));
    let base_kib = procs::rss_kib(svc.pid()).expect("rss");
    let idle = baseline(port);
    let prober = Prober::start(port);
    let t = Instant::now();
    let clients: Vec<_> = (0..CONCURRENT_LOOKUPS)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut s = raw_capture(port, &q);
                read_close(&mut s, Duration::from_secs(30))
            })
        })
        .collect();
    let closes: Vec<Option<(u16, String)>> = clients
        .into_iter()
        .map(|c| c.join().unwrap_or(None))
        .collect();
    let took = t.elapsed();
    let (worst, probes) = prober.finish();
    let peak_kib: u64 = procs::status_field(svc.pid(), "VmHWM")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    let asked = gw.mobyshark_requests();
    let refused = closes
        .iter()
        .filter(|c| {
            c.as_ref()
                .is_some_and(|(code, why)| *code == 1008 && why.contains("not listed"))
        })
        .count();
    println!(
        "{CONCURRENT_LOOKUPS} concurrent stale lookups against a {listing_len}-byte listing: {asked} upstream request(s), {refused} answered 'not listed' in {took:?}; /version slowest {worst:?} over {probes} probes (target {VERSION_BUDGET:?}, failing past {VERSION_MARGIN}x + idle {idle:?}); service RSS {base_kib} KiB before, peak {peak_kib} KiB (budget {} KiB)",
        RSS_PER_LISTING * listing_len as u64 / 1024
    );
    assert_eq!(asked, 1, "lookups were not shared");
    assert_eq!(
        refused,
        CONCURRENT_LOOKUPS,
        "{:?}",
        closes.iter().find(|c| c.is_none())
    );
    assert!(
        worst < VERSION_MARGIN * VERSION_BUDGET + idle,
        "/version took {worst:?}"
    );
    assert!(
        peak_kib <= RSS_PER_LISTING * listing_len as u64 / 1024,
        "peak RSS {peak_kib} KiB"
    );
}

// ---- a discovery service name that resolves only after start-up ----

/// The DNS timeout the service's resolver is given: how long a lookup of a
/// name missing from the hosts file stays pending.
const DNS_TIMEOUT_SECS: u64 = 2;

/// A name server on loopback that takes queries and never answers, so a
/// lookup that reaches it stays pending for the resolver's timeout. Counts
/// the queries; stops on drop.
struct SilentDns {
    addr: std::net::Ipv4Addr,
    stop: Arc<AtomicBool>,
    queries: Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentDns {
    fn start() -> SilentDns {
        // resolv.conf cannot name a port: a loopback address of our own,
        // port 53, picked from the process id to stay apart from parallel
        // test runs.
        let pid = std::process::id();
        let (sock, addr) = (1..=250u8)
            .find_map(|last| {
                let addr = std::net::Ipv4Addr::new(127, 77, (pid % 250) as u8 + 1, last);
                UdpSocket::bind((addr, 53)).ok().map(|s| (s, addr))
            })
            .expect("a free loopback port 53");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (st, q) = (stop.clone(), queries.clone());
        let thread = std::thread::spawn(move || {
            let mut b = [0u8; 512];
            while !st.load(Ordering::Relaxed) {
                if sock.recv_from(&mut b).is_ok() {
                    q.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        SilentDns {
            addr,
            stop,
            queries,
            thread: Some(thread),
        }
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for SilentDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The service in a mount namespace of its own where `/etc/hosts` and
/// `/etc/resolv.conf` are files this test writes: the system resolver the
/// service uses reads them as it would the host's, and the host's own files
/// are never touched. Killed and reaped on drop, with the files.
struct ServiceWithOwnHosts {
    svc: Service,
    hosts: PathBuf,
    resolv: PathBuf,
    base_hosts: String,
}

impl ServiceWithOwnHosts {
    fn start(dns: &SilentDns, args: &[&str]) -> ServiceWithOwnHosts {
        let hosts = scratch_path("hosts");
        let resolv = scratch_path("resolv.conf");
        let base_hosts = "127.0.0.1 localhost\n::1 localhost\n".to_string();
        std::fs::write(&hosts, &base_hosts).expect("hosts");
        std::fs::write(
            &resolv,
            format!(
                "nameserver {}\noptions timeout:{DNS_TIMEOUT_SECS} attempts:1\n",
                dns.addr
            ),
        )
        .expect("resolv.conf");
        let path = |p: &PathBuf| p.to_str().expect("UTF-8 path").to_string();
        let wrapper = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/resolv.conf && shift 2 && exec \"$@\"",
            "sh",
        ]
        .map(String::from)
        .into_iter()
        .chain([path(&hosts), path(&resolv)])
        .collect();
        let svc = Launch {
            wrapper,
            ..Launch::default()
        }
        .args(args)
        .start();
        ServiceWithOwnHosts {
            svc,
            hosts,
            resolv,
            base_hosts,
        }
    }

    fn port(&self) -> u16 {
        self.svc.port()
    }

    /// Adds `line` to the hosts file the service sees, in place (a bind
    /// mount follows the inode, so the file is rewritten, not replaced).
    fn add_host(&self, line: &str) {
        std::fs::write(&self.hosts, format!("{}{line}\n", self.base_hosts)).expect("hosts");
    }

    fn remove_hosts(&self) {
        std::fs::write(&self.hosts, &self.base_hosts).expect("hosts");
    }

    fn log(&self) -> String {
        self.svc.stderr()
    }
}

impl Drop for ServiceWithOwnHosts {
    fn drop(&mut self) {
        // The service is stopped first (it may still read the files).
        self.svc.stop();
        for f in [&self.hosts, &self.resolv] {
            let _ = std::fs::remove_file(f);
        }
    }
}

#[test]
fn discovery_name_that_resolves_after_start_up_is_looked_up_when_needed() {
    let ns = Netns::new();
    let p = ns.spawn(&["sleep", "60"]);
    let target_name = format!("pfx-moving-{}", std::process::id());
    let gw = GhostWire::start(mobyshark(&[target(
        &target_name,
        "",
        ns.inode(),
        p.pid(),
        p.starttime(),
    )]));
    let dns = SilentDns::start();
    let gw_name = format!("pfx-gw-{}.invalid", std::process::id());
    let gw_port = gw.port().to_string();
    // The name does not resolve yet: the service starts anyway.
    let svc = ServiceWithOwnHosts::start(
        &dns,
        &[
            "--discovery-service",
            &gw_name,
            "--gw-port",
            &gw_port,
            "--proxy-discovery",
        ],
    );
    let port = svc.port();
    let stale =
        json!({"name": target_name, "netns": 4_026_531_999u64, "pid": dead_pid(), "starttime": 1});
    let q = format!("container={}", urlencode(&stale.to_string()));

    // A capture needing discovery: the lookup reaches the silent name
    // server and stays pending; the loop serves /version meanwhile.
    let idle = baseline(port);
    let prober = Prober::start(port);
    let t = Instant::now();
    let mut s = raw_capture(port, &q);
    let refused = read_close(&mut s, Duration::from_secs(20));
    let pending_for = t.elapsed();
    let (worst, probes) = prober.finish();
    println!(
        "before the name resolves: capture closed with {refused:?} after {pending_for:?} ({} DNS queries seen); /version slowest {worst:?} over {probes} probes while the lookup was pending (idle: {idle:?})",
        dns.queries()
    );
    let (code, reason) = refused.expect("no close frame");
    assert_eq!(code, 1011);
    assert!(
        reason.contains(&format!(
            "discovery service name \"{gw_name}\" does not resolve"
        )),
        "{reason}"
    );
    assert!(
        dns.queries() > 0,
        "the lookup never reached the name server"
    );
    assert!(
        worst < VERSION_MARGIN * VERSION_BUDGET + idle,
        "/version took {worst:?}"
    );
    assert!(
        probes >= 5,
        "too few probes ({probes}) while the lookup was pending"
    );
    // The proxy uses the same lookup.
    let r = common::http::send_raw(
        port,
        b"GET /discover/mobyshark HTTP/1.1\r\nHost: f\r\n\r\n",
        true,
        Duration::from_secs(20),
    );
    assert_eq!(r.status, 502, "{}", r.body_text());
    assert!(
        r.body_text().contains("does not resolve"),
        "{}",
        r.body_text()
    );
    assert_eq!(gw.mobyshark_requests(), 0);

    // The name resolves now: the stale reference is repaired, no restart.
    svc.add_host(&format!("127.0.0.1 {gw_name}"));
    let mut c = ws::must_connect(port, &q, &[]);
    c.wait_capturing(START_TIMEOUT);
    assert!(ping_self_until_seen(&mut c, &ns), "capture saw nothing");
    let r = common::http::get(port, "/discover/mobyshark");
    println!(
        "after the name resolves: capture running, proxy answered {}, {} listing request(s) at the stand-in",
        r.status,
        gw.mobyshark_requests()
    );
    assert_eq!(r.status, 200);
    assert!(gw.mobyshark_requests() >= 2);
    drop(c);
    svc.remove_hosts();
}

#[test]
fn ip_literal_discovery_service_needs_no_lookup() {
    let dns = SilentDns::start();
    let gw = GhostWire::start(mobyshark(&[]));
    let gw_port = gw.port().to_string();
    let svc = ServiceWithOwnHosts::start(
        &dns,
        &[
            "--discovery-service",
            "127.0.0.1",
            "--gw-port",
            &gw_port,
            "--proxy-discovery",
        ],
    );
    let t = Instant::now();
    let r = common::http::get(svc.port(), "/discover/mobyshark");
    println!(
        "literal address: proxy answered {} in {:?}, {} DNS queries",
        r.status,
        t.elapsed(),
        dns.queries()
    );
    assert_eq!(r.status, 200);
    assert_eq!(dns.queries(), 0);
    assert!(
        svc.log().contains("discovery service 127.0.0.1:"),
        "{}",
        svc.log()
    );
}
