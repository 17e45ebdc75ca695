//! End-to-end tests of container references: checking a reference against
//! /proc, asking the discovery service (a GhostWire stand-in) when it is
//! stale or missing, and the refusals when discovery cannot help. Real
//! service binary, real dumpcap, namespaces made by each test.

// The shared test kit (testkit/), by the name these tests have always used.
use packetflix_testkit as common;

use std::time::{Duration, Instant};

use common::ghostwire::GwConfig;
use common::pcapng::{target_yaml, yaml_value};
use common::service::free_port;
use common::ws::must_connect;
use common::*;
use serde_json::{json, Value};

fn container_q(target: &Value) -> String {
    format!("container={}", urlencode(&target.to_string()))
}

/// Checks that `c` captures from `want` and not from `other`: `other`'s
/// traffic happens first, so it would be in the stream ahead of `want`'s.
fn assert_captures_from(c: &mut Client, want: &Netns, other: &Netns) {
    other.ping_self(2);
    assert!(
        ping_self_until_seen(c, want),
        "no traffic of {} captured: close={:?}",
        want.name,
        c.capture.close
    );
    assert!(
        !c.capture.pcapng().has_icmp_from(other.addr),
        "captured traffic of {}, which is the wrong namespace",
        other.name
    );
}

/// A pid no process has: one that just exited and was reaped.
fn dead_pid() -> i32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    pid
}

#[test]
fn harness_ghostwire_stand_in_serves_counts_and_delays() {
    let body = mobyshark(&[target("x", "", 1, 2, 3)]);
    let gw = GhostWire::with(GwConfig {
        status: 200,
        body: body.clone(),
        delay: Duration::from_millis(500),
    });
    let t0 = Instant::now();
    let r = common::http::get(gw.port(), "/mobyshark");
    assert!(t0.elapsed() >= Duration::from_millis(500));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["containers"][0]["starttime"], 3);
    assert_eq!(common::http::get(gw.port(), "/other").status, 404);
    assert_eq!(gw.mobyshark_requests(), 1);
    assert_eq!(gw.requests().len(), 2);
    assert_eq!(gw.answered().len(), 2);
}

#[test]
fn harness_process_in_namespace_has_its_netns_and_starttime() {
    let ns = Netns::new();
    let p = ns.spawn(&["sleep", "60"]);
    let link = std::fs::read_link(format!("/proc/{}/ns/net", p.pid())).unwrap();
    assert_eq!(link.to_str().unwrap(), format!("net:[{}]", ns.inode()));
    let st = common::procs::stat(p.pid()).unwrap();
    assert_eq!(st.comm, "sleep");
    assert_eq!(st.starttime, p.starttime());
    assert!(st.starttime > 0);
    assert!(!common::procs::exists(dead_pid()));
}

#[test]
fn up_to_date_reference_captures_without_asking_discovery() {
    let ns = Netns::new();
    let other = Netns::new();
    let proc_ = ns.spawn(&["sleep", "60"]);
    let mut t = target(
        "pfx-uptodate",
        "",
        ns.inode(),
        proc_.pid(),
        proc_.starttime(),
    );
    t["unknown-field"] = json!({"ignored": true});
    let gw = GhostWire::start(mobyshark(&[t.clone()]));
    let svc = Service::with_discovery(gw.port(), 5, &[]);
    let mut c = start(&svc, &container_q(&t), &[]);
    assert_captures_from(&mut c, &ns, &other);
    assert_eq!(
        gw.requests().len(),
        0,
        "discovery asked for a valid reference"
    );
    let yaml = target_yaml(&c.capture.pcapng()).expect("target document");
    assert!(yaml_value(&yaml, "container-name").is_some_and(|v| v.contains("pfx-uptodate")));
    assert!(yaml_value(&yaml, "container-type").is_some_and(|v| v.contains("proc")));
}

#[test]
fn stale_starttime_asks_discovery_once_and_captures_the_listed_namespace() {
    let stale_ns = Netns::new();
    let listed_ns = Netns::new();
    let proc_ = stale_ns.spawn(&["sleep", "60"]);
    let name = "pfx-stale";
    let request = target(
        name,
        "",
        stale_ns.inode(),
        proc_.pid(),
        proc_.starttime() + 1,
    );
    let mut listed = target(name, "", listed_ns.inode(), 0, 0);
    listed["type"] = json!("pod");
    listed["node-name"] = json!("pfx-node-7");
    let gw = GhostWire::start(mobyshark(&[listed]));
    let svc = Service::with_discovery(gw.port(), 5, &[]);
    let mut c = start(&svc, &container_q(&request), &[]);
    assert_captures_from(&mut c, &listed_ns, &stale_ns);
    assert_eq!(gw.mobyshark_requests(), 1);
    assert_eq!(gw.requests().len(), 1);
    let yaml = target_yaml(&c.capture.pcapng()).expect("target document");
    assert!(yaml_value(&yaml, "container-type").is_some_and(|v| v.contains("pod")));
    assert!(yaml_value(&yaml, "node-name").is_some_and(|v| v.contains("pfx-node-7")));
}

#[test]
fn dead_pid_reference_uses_discovery() {
    let stale_ns = Netns::new();
    let listed_ns = Netns::new();
    let name = "pfx-deadpid";
    let request = target(name, "", stale_ns.inode(), dead_pid(), 12345);
    let gw = GhostWire::start(mobyshark(&[target(name, "", listed_ns.inode(), 0, 0)]));
    let svc = Service::with_discovery(gw.port(), 5, &[]);
    let mut c = start(&svc, &container_q(&request), &[]);
    assert_captures_from(&mut c, &listed_ns, &stale_ns);
    assert_eq!(gw.mobyshark_requests(), 1);
}

#[test]
fn name_and_prefix_without_netns_resolve_via_discovery() {
    let decoy = Netns::new();
    let listed_ns = Netns::new();
    let name = "pfx-byname";
    let request = json!({"name": name, "prefix": "dind-1"});
    // Only the entry matching name *and* prefix may be taken.
    let gw = GhostWire::start(mobyshark(&[
        target(name, "", decoy.inode(), 0, 0),
        target("pfx-other", "dind-1", decoy.inode(), 0, 0),
        target(name, "dind-1", listed_ns.inode(), 0, 0),
        target(name, "dind-1", decoy.inode(), 0, 0),
    ]));
    let svc = Service::with_discovery(gw.port(), 5, &[]);
    let mut c = start(&svc, &container_q(&request), &[]);
    assert_captures_from(&mut c, &listed_ns, &decoy);
    assert_eq!(gw.mobyshark_requests(), 1);
}

#[test]
fn prefix_mismatch_is_refused_as_not_listed() {
    let ns = Netns::new();
    let gw = GhostWire::start(mobyshark(&[target("pfx-prefix", "p2", ns.inode(), 0, 0)]));
    let svc = Service::with_discovery(gw.port(), 5, &[]);
    let request = json!({"name": "pfx-prefix", "prefix": "p1"});
    let reason = expect_refusal(svc.port(), &container_q(&request), &[]);
    assert!(reason.contains("not listed"), "{reason:?}");
    assert_eq!(gw.mobyshark_requests(), 1);
    assert!(svc.children().is_empty());
}

#[test]
fn target_not_listed_is_refused() {
    let ns = Netns::new();
    let gw = GhostWire::start(mobyshark(&[target("pfx-someone", "", ns.inode(), 0, 0)]));
    let svc = Service::with_discovery(gw.port(), 5, &[]);
    let request = json!({"name": "pfx-nobody", "prefix": ""});
    let reason = expect_refusal(svc.port(), &container_q(&request), &[]);
    assert!(reason.contains("not listed"), "{reason:?}");
}

#[test]
fn discovery_down_is_reported_unreachable() {
    let svc = Service::with_discovery(free_port(), 5, &[]);
    let request = json!({"name": "pfx-down", "prefix": ""});
    let reason = expect_refusal(svc.port(), &container_q(&request), &[]);
    assert!(reason.contains("unreachable"), "{reason:?}");
}

#[test]
fn slow_discovery_past_deadline_is_reported_timed_out() {
    let ns = Netns::new();
    let gw = GhostWire::with(GwConfig {
        status: 200,
        body: mobyshark(&[target("pfx-slow", "", ns.inode(), 0, 0)]),
        delay: Duration::from_secs(4),
    });
    let svc = Service::with_discovery(gw.port(), 1, &[]);
    let request = json!({"name": "pfx-slow", "prefix": ""});
    let reason = expect_refusal(svc.port(), &container_q(&request), &[]);
    assert!(reason.contains("timed out"), "{reason:?}");
    assert!(
        gw.answered().is_empty(),
        "refusal came only after the stand-in answered: the deadline did not act"
    );
}

#[test]
fn invalid_discovery_json_is_refused_with_reason() {
    let gw = GhostWire::start(b"{\"containers\": [ {\"name\": ".to_vec());
    let svc = Service::with_discovery(gw.port(), 5, &[]);
    let request = json!({"name": "pfx-badjson", "prefix": ""});
    let reason = expect_refusal(svc.port(), &container_q(&request), &[]);
    let r = reason.to_lowercase();
    assert!(
        r.contains("json") || r.contains("discovery") || r.contains("invalid"),
        "{reason:?}"
    );
    assert_eq!(gw.mobyshark_requests(), 1);
}

#[test]
fn discovery_error_status_is_refused_with_reason() {
    let gw = GhostWire::with(GwConfig {
        status: 500,
        body: b"{}".to_vec(),
        delay: Duration::ZERO,
    });
    let svc = Service::with_discovery(gw.port(), 5, &[]);
    let request = json!({"name": "pfx-500", "prefix": ""});
    let reason = expect_refusal(svc.port(), &container_q(&request), &[]);
    assert!(reason.contains("500"), "{reason:?}");
}

#[test]
fn slow_discovery_does_not_stall_another_capture() {
    let waiting_ns = Netns::new();
    let other_ns = Netns::new();
    let gw = GhostWire::with(GwConfig {
        status: 200,
        body: mobyshark(&[target("pfx-waiting", "", waiting_ns.inode(), 0, 0)]),
        delay: Duration::from_secs(5),
    });
    let svc = Service::with_discovery(gw.port(), 15, &[]);
    let port = svc.port();
    let q = container_q(&json!({"name": "pfx-waiting", "prefix": ""}));
    // The upgrade may be answered before or after discovery: wait for the
    // first capture in a thread of its own.
    let waiting = std::thread::spawn(move || {
        let mut c = must_connect(port, &q, &[]);
        c.wait_capturing(Duration::from_secs(15));
        c
    });
    assert!(
        wait_for(Duration::from_secs(5), || gw.mobyshark_requests() == 1),
        "service never asked discovery"
    );
    let mut c = start(&svc, &format!("netns={}", other_ns.inode()), &[]);
    assert!(ping_self_until_seen(&mut c, &other_ns));
    let streamed_at = Instant::now();
    let answered = gw.answered();
    assert!(
        answered.is_empty() || answered[0] > streamed_at,
        "the other capture only streamed after discovery had answered"
    );
    let mut w = waiting.join().expect("waiting capture started");
    assert_captures_from(&mut w, &waiting_ns, &other_ns);
}

#[test]
fn container_header_wins_over_query() {
    let header_ns = Netns::new();
    let query_ns = Netns::new();
    let gw = GhostWire::start(mobyshark(&[]));
    let svc = Service::with_discovery(gw.port(), 5, &[]);
    let q = container_q(&json!({"netns": query_ns.inode()}));
    let h = json!({"netns": header_ns.inode()}).to_string();
    let mut c = start(&svc, &q, &[("Clustershark-Container", &h)]);
    assert_captures_from(&mut c, &header_ns, &query_ns);
    assert_eq!(gw.requests().len(), 0, "netns alone needs no discovery");
}

#[test]
fn target_interface_list_chooses_interfaces_unless_nif_given() {
    let ns = Netns::new();
    let t = json!({"netns": ns.inode(), "network-interfaces": ["lo"]});
    let svc = Service::start(&[]);
    let c = start(&svc, &container_q(&t), &[]);
    assert_eq!(c.capture.pcapng().interface_names(), vec!["lo"]);
    // `any` (the extcap's default) means the target's own list too.
    let c = start(&svc, &format!("{}&nif=any", container_q(&t)), &[]);
    assert_eq!(c.capture.pcapng().interface_names(), vec!["lo"]);
    let c = start(&svc, &format!("{}&nif=eth0/any", container_q(&t)), &[]);
    assert_eq!(c.capture.pcapng().interface_names(), vec!["lo"]);
}

#[test]
fn discovered_interfaces_apply_only_when_request_has_none() {
    let pair = VethPair::new();
    let name = "pfx-ifaces";
    let mut listed = target(name, "", pair.a.inode(), 0, 0);
    listed["network-interfaces"] = json!(["lo"]);
    let gw = GhostWire::start(mobyshark(&[listed]));
    let svc = Service::with_discovery(gw.port(), 5, &[]);
    let c = start(&svc, &container_q(&json!({"name": name})), &[]);
    assert_eq!(c.capture.pcapng().interface_names(), vec!["lo"]);
    let own = json!({"name": name, "network-interfaces": [pair.a_if]});
    let c = start(&svc, &container_q(&own), &[]);
    assert_eq!(
        c.capture.pcapng().interface_names(),
        vec![pair.a_if.clone()]
    );
    // The second lookup shares the first answer if it comes within a
    // second of it (lookup::FRESH_FOR), else asks again.
    let asked = gw.mobyshark_requests();
    assert!((1..=2).contains(&asked), "{asked} listing requests");
}

#[test]
fn target_document_describes_the_container() {
    let ns = Netns::new();
    let t = json!({
        "netns": ns.inode(),
        "name": "pfx-doc",
        "type": "pod",
        "node-name": "pfx-node-3",
        "cluster": {"uid": "c0ffee-42"},
        "prefix": "",
    });
    let svc = Service::start(&[]);
    let c = start(&svc, &container_q(&t), &[]);
    let yaml = target_yaml(&c.capture.pcapng()).expect("target document");
    assert!(yaml_value(&yaml, "container-name").is_some_and(|v| v.contains("pfx-doc")));
    assert!(yaml_value(&yaml, "container-type").is_some_and(|v| v.contains("pod")));
    assert!(yaml_value(&yaml, "node-name").is_some_and(|v| v.contains("pfx-node-3")));
    assert!(yaml_value(&yaml, "cluster").is_some(), "{yaml:?}");
    assert!(
        yaml.lines()
            .any(|l| l.trim_start().starts_with("uid:") && l.contains("c0ffee-42")),
        "{yaml:?}"
    );
}

#[test]
fn unparsable_container_is_refused() {
    let svc = Service::start(&[]);
    let reason = expect_refusal(svc.port(), "container=%7Bnot-json", &[]);
    assert!(reason.to_lowercase().contains("container"), "{reason:?}");
}
