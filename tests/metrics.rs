//! `GET /metrics` after real captures: Prometheus' own checker
//! (`promtool check metrics`, Debian's `prometheus` package) accepts the
//! text, and the counters moved exactly as the captures did. Each test has a
//! service of its own, so exact values hold.
//!
//! The tests of real captures run for both engines (`engines!`); what
//! differs is said (capture program exits with dumpcap, none with the
//! native engine). Single: the pause of a client that does not read, shown
//! with the synthetic capture program (the native engine's pause and
//! kernel drops under such a client are tests/native.rs's), and promtool's
//! own check.

// The shared test kit (testkit/), by the name these tests have always used.
use packetflix_testkit as common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Netns, Service};

/// The samples of a text exposition: series (name and labels) -> value.
fn samples(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample line");
            (series.to_string(), value.parse().expect("sample value"))
        })
        .collect()
}

fn scrape(port: u16) -> (String, std::collections::HashMap<String, f64>) {
    let r = common::http::get(port, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.body_text();
    let s = samples(&text);
    (text, s)
}

/// `promtool check metrics` on `text`: (success, what it printed).
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (package prometheus; scripts/deps.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool result");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Capture program exits counted: dumpcap ends on SIGTERM by itself, with
/// status 0, once per target; the native engine runs no program.
fn program_exits(s: &std::collections::HashMap<String, f64>) -> f64 {
    ["success", "failure", "signal"]
        .iter()
        .map(|st| s[&format!("packetflix_capture_program_exits_total{{status=\"{st}\"}}")])
        .sum()
}

fn metrics_pass_promtool_and_count_captures_refusals_bytes_and_lookups(engine: common::Engine) {
    // Discovery points at a port nothing listens on: a lookup fails fast.
    let gw_port = common::service::free_port().to_string();
    let svc = Service::start_engine(engine, &["--gw-port", &gw_port]);
    let (_, before) = scrape(svc.port());
    assert_eq!(before["packetflix_captures_started_total"], 0.0);

    let ns = Netns::new();
    let mut c = common::start(&svc, &format!("netns={}&nif=lo", ns.inode()), &[]);
    assert!(common::ping_self_until_seen(&mut c, &ns));
    let (_, during) = scrape(svc.port());
    assert_eq!(during["packetflix_captures_running"], 1.0);
    let _ = c.close(Duration::from_secs(5));

    common::expect_refusal(svc.port(), "netns=1", &[]);
    common::expect_refusal(svc.port(), "", &[]);
    let by_name = common::urlencode(r#"{"name":"nowhere"}"#);
    common::expect_refusal(svc.port(), &format!("container={by_name}"), &[]);

    // The close handshake and the reaping end before the scrape counts them.
    let settled = common::wait_for(Duration::from_secs(10), || {
        let (_, s) = scrape(svc.port());
        s["packetflix_captures_running"] == 0.0
            && s["packetflix_captures_ended_total{cause=\"client_closed\"}"] == 1.0
    });
    assert!(settled, "capture not counted as ended");
    let (text, s) = scrape(svc.port());
    let (ok, said) = promtool(&text);
    assert!(ok, "promtool check metrics: {said}\n{text}");

    assert_eq!(s["packetflix_captures_started_total"], 1.0);
    assert!(s["packetflix_relayed_bytes_total"] > 0.0);
    assert_eq!(
        s["packetflix_captures_refused_total{reason=\"namespace\"}"],
        1.0
    );
    assert_eq!(
        s["packetflix_captures_refused_total{reason=\"parameters\"}"],
        1.0
    );
    assert_eq!(
        s["packetflix_captures_refused_total{reason=\"discovery\"}"],
        1.0
    );
    assert_eq!(
        s["packetflix_discovery_lookups_total{outcome=\"unreachable\"}"],
        1.0
    );
    assert_eq!(s["packetflix_discovery_lookup_duration_seconds_count"], 1.0);
    let programs = match engine {
        common::Engine::Dumpcap => 1.0,
        common::Engine::Native => 0.0,
    };
    assert_eq!(program_exits(&s), programs);
    // A quiet capture: the kernel dropped nothing for it.
    assert_eq!(
        s["packetflix_capture_kernel_drops_total{engine=\"native\"}"],
        0.0
    );
    // This scrape's own connection is open.
    assert!(s["packetflix_connections_open"] >= 1.0);
}
common::engines!(metrics_pass_promtool_and_count_captures_refusals_bytes_and_lookups);

/// Captured bytes of each synthetic packet (4 KiB blocks with the framing).
const SYNTH_PAYLOAD: usize = 4064;
/// 160 MiB: more than socket buffers and the output queue hold, so a
/// client that reads nothing pauses the capture for as long as it stalls.
const SYNTH_PACKETS: u64 = 40 * 1024;
/// How long the client reads nothing.
const STALL: Duration = Duration::from_millis(1500);

#[test]
fn time_paused_by_a_client_that_does_not_read_is_counted() {
    let ns = Netns::new();
    let svc = common::Launch::new()
        .args(&["--capture-program", common::pcapgen::PROGRAM])
        .envs(&common::pcapgen::Settings::stream(SYNTH_PAYLOAD, SYNTH_PACKETS).env())
        .start();
    let c = common::ws::must_connect(svc.port(), &format!("netns={}", ns.inode()), &[]);
    std::thread::sleep(STALL);
    // The connection breaks with the capture paused: the pause still counts.
    c.drop_tcp();
    let ended = common::wait_for(Duration::from_secs(10), || {
        scrape(svc.port()).1["packetflix_captures_ended_total{cause=\"client_gone\"}"] == 1.0
    });
    assert!(ended, "capture not counted as ended by the client going");
    let (text, s) = scrape(svc.port());
    let paused = s["packetflix_capture_paused_seconds_total"];
    eprintln!("paused {paused} s in a {STALL:?} stall");
    // The queue fills within a fraction of the stall; the rest is paused.
    assert!(
        paused > STALL.as_secs_f64() / 3.0 && paused < 10.0,
        "paused {paused} s in a {STALL:?} stall"
    );
    let (ok, said) = promtool(&text);
    assert!(ok, "{said}");
}

#[test]
fn promtool_rejects_what_the_format_forbids() {
    // The checker is not a rubber stamp: a counter without the _total
    // suffix and without help text fails it.
    let (ok, _) = promtool("# TYPE x counter\nx 1\n");
    assert!(!ok);
}

fn a_capture_of_two_targets_counts_two_starts_and_one_end(engine: common::Engine) {
    let svc = Service::start_engine(engine, &[]);
    let (a, b) = (Netns::new(), Netns::new());
    let targets = serde_json::json!([
        {"netns": a.inode(), "name": "a", "network-interfaces": ["lo"]},
        {"netns": b.inode(), "name": "b", "network-interfaces": ["lo"]},
    ]);
    let query = format!("container={}", common::urlencode(&targets.to_string()));
    let mut c = common::start(&svc, &query, &[]);
    assert!(common::ping_self_until_seen(&mut c, &a));
    let (_, during) = scrape(svc.port());
    assert_eq!(during["packetflix_captures_running"], 2.0);
    assert_eq!(during["packetflix_captures_started_total"], 2.0);
    let _ = c.close(Duration::from_secs(5));
    let settled = common::wait_for(Duration::from_secs(10), || {
        let (_, s) = scrape(svc.port());
        s["packetflix_captures_running"] == 0.0
            && s["packetflix_captures_ended_total{cause=\"client_closed\"}"] == 1.0
    });
    assert!(settled, "the capture of two targets not counted as one end");
    let (text, s) = scrape(svc.port());
    assert!(s["packetflix_relayed_bytes_total"] > 0.0);
    let programs = match engine {
        common::Engine::Dumpcap => 2.0,
        common::Engine::Native => 0.0,
    };
    assert_eq!(program_exits(&s), programs);
    let (ok, said) = promtool(&text);
    assert!(ok, "{said}");
}
common::engines!(a_capture_of_two_targets_counts_two_starts_and_one_end);
