//! End-to-end test of a discovery service named by a host name that only
//! starts to resolve after the service has started (as a compose service
//! name does when GhostWire starts later).
//!
//! The service runs in a mount namespace of its own (`unshare --mount`) in
//! which a scratch file is bind-mounted over `/etc/hosts` and another over
//! `/etc/resolv.conf`: the test adds and removes the name's `/etc/hosts`
//! line as the service sees it without touching the machine's own, and DNS
//! queries go to a UDP socket of the test on a loopback address that never
//! answers, so a lookup stays pending for as long as the resolver's timeout.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use common::ws::must_connect;
use common::*;
use serde_json::json;

/// The resolver's per-query timeout in the service's resolv.conf: how long
/// a lookup stays pending. Long enough that the loop's answers to other
/// requests during it cannot be mistaken for answers after it.
const DNS_TIMEOUT_SECS: u32 = 5;
/// Bound on waiting for the service's first DNS query.
const QUERY_WAIT: Duration = Duration::from_secs(10);

/// Runs the service in its own mount namespace with `hosts` and `resolv`
/// over the system's files.
fn private_names(hosts: &Scratch, resolv: &Scratch) -> Launch {
    let script = "mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/resolv.conf \
                  && shift 2 && exec \"$@\"";
    Launch {
        cwd: None,
        wrapper: [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            hosts.path(),
            resolv.path(),
        ]
        .map(String::from)
        .to_vec(),
    }
}

/// Rewrites a file in place (a bind mount follows the inode, not the name).
fn rewrite(file: &Scratch, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&file.0)
        .expect("open for rewrite");
    f.write_all(text.as_bytes()).expect("rewrite");
}

#[test]
fn a_discovery_name_that_resolves_after_start_up_works_without_a_restart() {
    let ns = Netns::new();
    let container = format!("pfx-moved-{}", next_id());
    let gw = GhostWire::start(mobyshark(&[target(&container, "", ns.inode(), 0, 0)]));
    let name = format!("gw-{}-{}.invalid", std::process::id(), next_id());
    // A loopback address of our own for the silent name server.
    let dns_ip = Ipv4Addr::new(127, 83, (std::process::id() % 250) as u8, next_id() as u8);
    let dns = UdpSocket::bind((dns_ip, 53)).expect("bind the silent name server");
    dns.set_read_timeout(Some(QUERY_WAIT)).unwrap();
    let hosts = Scratch::new("hosts");
    std::fs::write(&hosts.0, "127.0.0.1 localhost\n").unwrap();
    let resolv = Scratch::new("resolv.conf");
    std::fs::write(
        &resolv.0,
        format!("nameserver {dns_ip}\noptions timeout:{DNS_TIMEOUT_SECS} attempts:1\n"),
    )
    .unwrap();
    let gw_port = gw.port().to_string();
    let svc = Service::start_with(
        &private_names(&hosts, &resolv),
        &[
            "--discovery-service",
            &name,
            "--gw-port",
            &gw_port,
            "--discovery-timeout",
            "30",
            "--proxy-discovery",
        ],
    );
    assert!(svc.stderr().contains(&name), "{}", svc.stderr());

    // 1. The name does not resolve yet: a capture needing discovery waits
    // for the lookup, and the loop serves others meanwhile.
    let port = svc.port();
    let by_name = json!({"name": container}).to_string();
    let q = format!("container={}", urlencode(&by_name));
    let q2 = q.clone();
    let capture = std::thread::spawn(move || {
        let mut c = must_connect(port, &q2, &[]);
        c.read_to_close(Duration::from_secs(40))
    });
    let mut query = [0u8; 512];
    let (n, _) = dns
        .recv_from(&mut query)
        .expect("the service asked no name server");
    let label = name.split('.').next().unwrap();
    assert!(
        query[..n]
            .windows(label.len())
            .any(|w| w == label.as_bytes()),
        "the DNS query is not for {name}"
    );
    // The lookup is pending now (nothing answers it for seconds).
    let version = common::http::get(port, "/version");
    assert_eq!(version.status, 200);
    assert!(
        !capture.is_finished(),
        "the capture ended before the lookup could have: no proof it was pending"
    );
    let (code, reason) = capture.join().unwrap().expect("the capture was not closed");
    assert!(is_error_close_code(code), "{code} {reason}");
    assert!(
        reason.contains(&format!("discovery service name {name} does not resolve")),
        "{reason}"
    );
    let r = common::http::get(port, "/discover/mobyshark");
    assert_eq!(r.status, 502, "{}", r.body_text());
    assert!(
        r.body_text().contains("does not resolve"),
        "{}",
        r.body_text()
    );
    assert_eq!(gw.mobyshark_requests(), 0);

    // 2. The name appears (GhostWire came up): a stale reference is
    // repaired through discovery, and the proxy works, with no restart.
    rewrite(&hosts, &format!("127.0.0.1 localhost\n127.0.0.1 {name}\n"));
    let stale = json!({
        "name": container,
        "netns": ns.inode() + 1,
        "pid": std::process::id(),
        "starttime": 1,
    })
    .to_string();
    let mut c = start(&svc, &format!("container={}", urlencode(&stale)), &[]);
    assert!(
        ping_self_until_seen(&mut c, &ns),
        "not capturing in {}",
        ns.name
    );
    assert_eq!(gw.mobyshark_requests(), 1);
    let r = common::http::get(port, "/discover/mobyshark");
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert!(r.body_text().contains(&container), "{}", r.body_text());
    assert!(svc.stderr().contains("stale"), "{}", svc.stderr());

    // 3. The line is removed again (the scratch file goes on drop too).
    rewrite(&hosts, "127.0.0.1 localhost\n");
    assert!(c.close(Duration::from_secs(15)).is_some());
}
