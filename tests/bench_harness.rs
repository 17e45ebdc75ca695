//! The benchmark harness tested on itself: a short run of every scenario
//! must yield a well-formed report (JSON and table), and a damaged stream
//! (a skipped sequence number, a wrong block length, a short stream) must be
//! caught on the raw path and through the service's websocket. The engine
//! bench's parts run on real veth pairs for a few seconds: the generator
//! sends what it says (by the kernel's counters at both ends), the
//! reference ring reader counts what arrived in each of its modes, and the
//! client decodes a real dumpcap capture with per-packet latency. No test
//! here asserts a timing: the harness reports numbers, it does not judge
//! them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use packetflix_testkit::bench::client::{Client as BenchClient, ConnSpec, Proto, Until};
use packetflix_testkit::bench::engine::{self, EngineConfig, EnginePaths};
use packetflix_testkit::bench::report::{Report, Status};
use packetflix_testkit::bench::scenarios::{
    run_all, Addressing, BenchConfig, GenSettings, Paths, Sut, System,
};
use packetflix_testkit::bench::websocat::find_websocat;
use packetflix_testkit::pcapgen::Corrupt;
use packetflix_testkit::traffic::check::TrafficCheck;
use packetflix_testkit::traffic::{
    self, ring, Fabric, GenSpec, Generator, LinkCounters, ReaderSpec, RingReader,
};

/// Removes the test's output directory on every path out of the test.
struct OutDir(PathBuf);

impl Drop for OutDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn paths() -> (Paths, OutDir) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pfx-bench-harness-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let paths = Paths {
        service: env!("CARGO_BIN_EXE_packetflix").into(),
        generator: packetflix_testkit::pcapgen::program_path(),
        websocat: find_websocat(),
        out_dir: dir.clone(),
    };
    (paths, OutDir(dir))
}

fn netns() -> Addressing {
    Addressing::Netns(packetflix_testkit::procs::own_netns().unwrap())
}

/// The scenarios of `BenchConfig::tiny()`, in report order.
const EXPECTED_SCENARIOS: [&str; 9] = [
    "throughput-1x64",
    "throughput-1x1500",
    "throughput-4x1500",
    "latency-1x1000pps",
    "latency-3x1000pps",
    "setup-netns",
    "setup-stale-container",
    "density-idle",
    "cpu-per-gb",
];

#[test]
fn short_run_yields_a_well_formed_report_with_every_scenario() {
    let (paths, _guard) = paths();
    let websocat_available = paths.websocat.is_ok();
    let cfg = BenchConfig::tiny();
    let report = run_all(&cfg, &paths, &|_| {});

    let json = paths.out_dir.join("results.json");
    report.write_json(&json).unwrap();
    let text = std::fs::read_to_string(&json).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    // serde_json writes NaN and infinities as null: no measured value may be.
    for s in v["scenarios"].as_array().unwrap() {
        for m in s["results"].as_array().unwrap() {
            for field in ["metrics", "vs_baseline", "rounds"] {
                let Some(map) = m[field].as_object() else {
                    continue;
                };
                for (k, x) in map {
                    let all_numbers = match x {
                        serde_json::Value::Array(a) => a.iter().all(|y| y.is_number()),
                        y => y.is_number(),
                    };
                    assert!(
                        all_numbers,
                        "{}/{}: {field}.{k} = {x}",
                        s["id"], m["system"]
                    );
                }
            }
        }
    }
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schema"], 1);
    assert!(back.machine.cores >= 1);
    assert!(!back.machine.cpu_model.is_empty() || !back.machine.kernel.is_empty());

    let ids: Vec<&str> = back.scenarios.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, EXPECTED_SCENARIOS);

    for s in &back.scenarios {
        assert!(s.method.len() > 40, "{}: method missing", s.id);
        assert!(!s.columns.is_empty(), "{}: no columns", s.id);
        assert!(!s.results.is_empty(), "{}: no rows", s.id);
        for m in &s.results {
            assert_eq!(m.scenario, s.id);
            match m.status {
                Status::Ok => {
                    assert!(m.error.is_none());
                    assert!(!m.metrics.is_empty(), "{}/{}: no metrics", s.id, m.system);
                    for (k, x) in &m.metrics {
                        assert!(x.is_finite(), "{}/{}: {k} = {x}", s.id, m.system);
                    }
                }
                _ => assert!(
                    m.error.is_some(),
                    "{}/{}: status without reason",
                    s.id,
                    m.system
                ),
            }
            // The baseline and the service must work; websocat may be absent.
            let must_work = m.system != System::Websocat.name() || websocat_available;
            if must_work {
                assert_eq!(m.status, Status::Ok, "{}/{}: {:?}", s.id, m.system, m.error);
            }
        }
    }

    let tp = back.find("throughput-1x1500", "packetflix").unwrap();
    assert!(tp.get("mb_per_s").unwrap() > 0.0);
    assert!(tp.vs_baseline.contains_key("mb_per_s"));
    assert!(tp.rounds.get("mb_per_s").map(Vec::len) == Some(cfg.rounds as usize));
    let lat = back.find("latency-3x1000pps", "packetflix").unwrap();
    let (n, rate) = cfg.latency_points[1];
    let per_round = (rate as f64 * cfg.latency_round_s) as u64;
    assert_eq!(
        lat.get("samples"),
        Some((n as u64 * per_round * cfg.latency_rounds as u64) as f64)
    );
    assert!(lat.metrics.contains_key("added_p99_us"));
    let stale = back.find("setup-stale-container", "packetflix").unwrap();
    // Setups within a second of each other share the discovery answer
    // (lookup::FRESH_FOR): at least one request, at most one per setup.
    let asked = stale.get("discovery_requests").unwrap_or(0.0);
    assert!(
        (1.0..=cfg.setups as f64).contains(&asked),
        "{asked} discovery requests for {} setups",
        cfg.setups
    );
    let dens = back.find("density-idle", "packetflix").unwrap();
    assert_eq!(dens.get("captures"), Some(cfg.density as f64));
    assert_eq!(
        dens.get("capture_programs_running"),
        Some(cfg.density as f64)
    );

    assert!(back.targets.len() >= 9);
    for t in &back.targets {
        assert!(!t.name.is_empty() && !t.target.is_empty() && !t.how.is_empty());
        // Judged exactly when measured, unless declared not judgeable.
        if !t.how.starts_with("not judged") {
            assert_eq!(t.met.is_some(), t.measured.is_some(), "{}", t.name);
        }
    }

    let table = back.render();
    for s in &back.scenarios {
        assert!(table.contains(&s.title), "table lacks {}", s.title);
    }
    assert_eq!(table.matches("   method: ").count(), back.scenarios.len());
    assert!(table.contains("== Targets"));
}

/// Runs one capture of a damaged stream through `system` and returns the
/// client's verdict.
fn verdict(system: System, gen: GenSettings, expect: u64) -> String {
    let (paths, _guard) = paths();
    let sut = match Sut::start(system, &paths, &gen, "corrupt", netns(), None) {
        Ok(s) => s,
        Err((_, e)) => panic!("{} did not start: {e}", system.name()),
    };
    let out = sut.run(1, Some(expect), false, Duration::from_secs(60));
    out.error()
        .unwrap_or_else(|| panic!("{}: damaged stream passed", system.name()))
}

fn damaged(corrupt: Corrupt) -> GenSettings {
    let mut gen = GenSettings::stream(200, 5_000);
    gen.program.corrupt = corrupt;
    gen
}

#[test]
fn skipped_sequence_number_is_caught_on_the_raw_path() {
    let e = verdict(System::Raw, damaged(Corrupt::Seq), 5_000);
    assert!(
        e.contains("sequence gap: expected packet 2500 but got 2501"),
        "{e}"
    );
}

#[test]
fn skipped_sequence_number_is_caught_through_the_service() {
    let e = verdict(System::Packetflix, damaged(Corrupt::Seq), 5_000);
    assert!(
        e.contains("sequence gap: expected packet 2500 but got 2501"),
        "{e}"
    );
}

#[test]
fn wrong_block_length_is_caught_on_the_raw_path() {
    let e = verdict(System::Raw, damaged(Corrupt::Len), 5_000);
    assert!(e.contains("trailing length"), "{e}");
}

#[test]
fn wrong_block_length_is_caught_through_the_service() {
    let e = verdict(System::Packetflix, damaged(Corrupt::Len), 5_000);
    assert!(e.contains("trailing length"), "{e}");
}

#[test]
fn stream_shorter_than_announced_is_caught_through_the_service() {
    let e = verdict(System::Packetflix, GenSettings::stream(64, 1_000), 2_000);
    assert!(e.contains("ended after 1000 of 2000 packets"), "{e}");
}

#[test]
fn intact_stream_passes_on_both_paths_with_every_packet() {
    for system in [System::Raw, System::Packetflix] {
        let (paths, _guard) = paths();
        let gen = GenSettings::stream(1500, 3_000);
        let sut = Sut::start(system, &paths, &gen, "intact", netns(), None)
            .unwrap_or_else(|(_, e)| panic!("{e}"));
        let out = sut.run(2, Some(3_000), false, Duration::from_secs(60));
        assert_eq!(out.error(), None, "{}", system.name());
        assert_eq!(out.packets(), 6_000);
        // SHB (+ the service's target comment) + IDB + 3000 EPBs of 1532 B.
        for r in &out.results {
            assert_eq!(r.blocks, 3_002);
            assert!(r.bytes >= 3_000 * 1532 + 20 + 28);
        }
    }
}

// ---- The engine bench's parts: real traffic over veth pairs ----

/// Sum of the kernel's counters on the capture ends `which` of `f`.
fn rx(f: &Fabric, which: &[usize]) -> Vec<LinkCounters> {
    f.capture_counters(which).unwrap()
}

fn delta(after: &[LinkCounters], before: &[LinkCounters]) -> Vec<(u64, u64)> {
    after
        .iter()
        .zip(before)
        .map(|(a, b)| (a.rx_packets - b.rx_packets, a.tx_packets - b.tx_packets))
        .collect()
}

#[test]
fn generator_sends_what_it_says_and_the_kernel_counts_it_at_the_far_ends() {
    let f = Fabric::new(3).unwrap();
    let which = [0, 2];
    let rx0 = rx(&f, &which);
    let tx0 = f.sender_counters(&which).unwrap();
    let spec = GenSpec {
        to: which.to_vec(),
        size: 1514,
        rate: 1_000,
        count: 300,
        secs: 20,
    };
    let g = Generator::start(&f, &spec).unwrap();
    let r = g.finish(Duration::from_secs(30)).unwrap();
    assert_eq!((r.sent, r.errors, r.error.clone()), (600, 0, None), "{r:?}");
    assert_eq!(r.per_flow, vec![300, 300]);
    // At 1,000 per second, 300 packets take about 0.3 s, not 0 and not 20.
    println!(
        "300 packets per flow at 1000/s took {} ms",
        r.elapsed_ns / 1_000_000
    );
    assert!(r.elapsed_ns > 200_000_000 && r.elapsed_ns < 10_000_000_000);
    // What arrived, by the kernel's counters: all of it, on the ends sent
    // to only, and nothing came back.
    let d = delta(&rx(&f, &which), &rx0);
    assert_eq!(d, vec![(300, 0), (300, 0)]);
    assert_eq!(rx(&f, &[1])[0].rx_packets, 0, "end 1 was not sent to");
    let s = delta(&f.sender_counters(&which).unwrap(), &tx0);
    assert_eq!(s, vec![(0, 300), (0, 300)], "(rx, tx) of the sending ends");
    // Full speed is bounded by the count too.
    let spec = GenSpec {
        rate: 0,
        size: 64,
        count: 20_000,
        ..spec
    };
    let r = Generator::start(&f, &spec)
        .unwrap()
        .finish(Duration::from_secs(30))
        .unwrap();
    assert_eq!(r.sent + r.errors, r.attempts);
    assert_eq!(r.sent, 40_000, "{r:?}");
}

#[test]
fn generator_refuses_a_namespace_the_bench_did_not_make() {
    let out = std::process::Command::new(traffic::GENERATOR)
        .args(["--netns", "/proc/self/ns/net", "--flow", "0=lo"])
        .args(["--count", "1", "--secs", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a namespace of the bench"));
}

#[test]
fn ring_reader_counts_what_arrived_in_every_mode() {
    let f = Fabric::new(2).unwrap();
    let which = [0, 1];
    for mode in ["v3:1", "v2", "sweep:1", "adaptive:1"] {
        let mode = ring::Mode::parse(mode).unwrap();
        let reader = RingReader::start(
            &f,
            &ReaderSpec {
                mode,
                on: which.to_vec(),
                ring_kib: ring::DEFAULT_RING_KIB,
                max_secs: 60,
            },
        )
        .unwrap();
        let rx0 = rx(&f, &which);
        let spec = GenSpec {
            to: which.to_vec(),
            size: 64,
            rate: 2_000,
            count: 500,
            secs: 20,
        };
        let g = Generator::start(&f, &spec)
            .unwrap()
            .finish(Duration::from_secs(30))
            .unwrap();
        assert_eq!(g.sent, 1_000);
        let arrived: Vec<u64> = delta(&rx(&f, &which), &rx0).iter().map(|d| d.0).collect();
        // A V3 block is handed over at its timeout: give it a few.
        std::thread::sleep(Duration::from_millis(50));
        let r = reader.finish().unwrap();
        let m = mode.label();
        assert_eq!(arrived, vec![500, 500], "{m}");
        assert_eq!(r.ring_packets, arrived, "{m}: {r:?}");
        assert_eq!(
            (r.packets, r.gaps, r.backwards, r.other),
            (1_000, 0, 0, 0),
            "{m}"
        );
        assert_eq!(r.kernel_drops, 0, "{m}");
        assert_eq!(r.latencies_ns.len(), 1_000, "{m}");
        assert_eq!(r.setup_us.len(), 2);
        // The decode works when every latency is a plausible span on the
        // shared clock (a wrong offset would give garbage).
        let max = r.latencies_ns.iter().max().copied().unwrap_or(0);
        println!("{m}: {} wakeups, max latency {} µs", r.wakeups, max / 1000);
        assert!(max < 5_000_000_000, "{m}: {max} ns");
        assert!(r.wakeups > 0, "{m}");
        if matches!(mode, ring::Mode::Adaptive { .. }) {
            // 2,000 per second is busy for a 1 ms sweep: both rings moved.
            assert!(r.switches >= 2, "{m}: {} switches", r.switches);
        }
    }
}

#[test]
fn an_idle_reader_in_an_event_mode_makes_no_wakeups_and_a_sweep_does() {
    let f = Fabric::new(1).unwrap();
    let mut wakeups = Vec::new();
    for mode in ["v2", "adaptive:1", "sweep:5"] {
        let reader = RingReader::start(
            &f,
            &ReaderSpec {
                mode: ring::Mode::parse(mode).unwrap(),
                on: vec![0],
                ring_kib: ring::DEFAULT_RING_KIB,
                max_secs: 60,
            },
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let r = reader.finish().unwrap();
        assert_eq!(r.packets, 0);
        wakeups.push(r.wakeups);
    }
    // Closing stdin is itself one wakeup.
    assert!(wakeups[0] <= 1 && wakeups[1] <= 1, "{wakeups:?}");
    // 300 ms of a 5 ms sweep: about 60 ticks.
    assert!(wakeups[2] >= 20, "{wakeups:?}");
}

#[test]
fn client_decodes_a_real_dumpcap_capture_through_the_service_with_latency() {
    let f = Fabric::new(1).unwrap();
    let svc = packetflix_testkit::Service::start(&[]);
    let spec = ConnSpec {
        addr: svc.addr(),
        proto: Proto::Ws {
            path: format!(
                "/capture?netns={}&nif={}",
                f.captures[0].inode,
                traffic::CAPTURE_IF
            ),
            headers: vec![],
        },
        record_latency: true,
        expect_packets: None,
    };
    let mut c =
        BenchClient::with_sinks(vec![spec], 1, |s| TrafficCheck::new(s.record_latency)).unwrap();
    // SHB and IDB: dumpcap has opened its ring.
    c.run(Until::AllHaveBlocks(2), Duration::from_secs(20));
    let g = Generator::start(
        &f,
        &GenSpec {
            to: vec![0],
            size: 64,
            rate: 500,
            count: 200,
            secs: 20,
        },
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while c.sinks().next().map_or(0, TrafficCheck::ours) < 200
        && std::time::Instant::now() < deadline
    {
        c.run(Until::TimeUp, Duration::from_millis(50));
    }
    let sent = g.finish(Duration::from_secs(10)).unwrap().sent;
    let (res, check) = c.finish_with_sinks().pop().unwrap();
    assert_eq!(res.error, None);
    assert_eq!(sent, 200);
    assert_eq!(
        (
            check.flows.of(0),
            check.flows.gaps(),
            check.flows.backwards()
        ),
        (200, 0, 0)
    );
    let lat = res.latencies_ns;
    assert_eq!(lat.len(), 200);
    let max = lat.iter().max().copied().unwrap_or(0);
    println!(
        "through dumpcap and the service: max latency {} ms",
        max / 1_000_000
    );
    assert!(lat.iter().all(|&l| l > 0 && l < 10_000_000_000), "{lat:?}");
}

/// The scenarios of `EngineConfig::tiny()`, in report order.
const ENGINE_SCENARIOS: [&str; 7] = [
    "latency-100pps",
    "fullspeed-64",
    "fullspeed-1514",
    "tradeoff-2x1000",
    "dense-3x1000",
    "idle",
    "setup",
];

#[test]
fn engine_bench_short_run_yields_a_report_with_every_scenario_and_column() {
    let (paths, _guard) = paths();
    let epaths = EnginePaths {
        service: paths.service.clone(),
        out_dir: paths.out_dir.clone(),
    };
    let native_built = engine::has_engine_flag(&epaths.service);
    let cfg = EngineConfig::tiny();
    let report = engine::run_engine(&cfg, &epaths, &|_| {});
    let json = paths.out_dir.join("engine.json");
    report.write_json(&json).unwrap();
    let back: Report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ids: Vec<&str> = back.scenarios.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ENGINE_SCENARIOS, "notes: {:?}", back.notes);
    for s in &back.scenarios {
        assert!(s.method.len() > 100, "{}: method missing", s.id);
        let systems: Vec<&str> = s.results.iter().map(|m| m.system.as_str()).collect();
        assert_eq!(&systems[..2], ["dumpcap", "native"], "{}", s.id);
        for m in &s.results {
            match (m.system.as_str(), m.status) {
                ("native", Status::Unavailable) if !native_built => {
                    assert!(m.error.as_deref().unwrap_or("").contains("not built"));
                }
                (_, Status::Ok) => {
                    assert!(!m.metrics.is_empty(), "{}/{}", s.id, m.system);
                    assert!(m.metrics.values().all(|v| v.is_finite()));
                }
                _ => panic!("{}/{}: {:?} {:?}", s.id, m.system, m.status, m.error),
            }
        }
    }
    // Paced loads lose nothing, whoever captures: every packet sent
    // arrived and was captured, and every captured one has a latency.
    for (sc, per_capture) in [("latency-100pps", 50.0), ("tradeoff-2x1000", 300.0)] {
        for sys in ["dumpcap", "ref-v2", "ref-adaptive-1ms"] {
            let Some(m) = back.find(sc, sys) else {
                continue;
            };
            let captures = if sc.starts_with("tradeoff") { 2.0 } else { 1.0 };
            let sent = captures * per_capture;
            assert_eq!(m.get("sent"), Some(sent), "{sc}/{sys}");
            assert_eq!(m.get("sent_pct"), Some(100.0), "{sc}/{sys}");
            assert_eq!(m.get("arrived"), Some(sent), "{sc}/{sys}");
            assert_eq!(m.get("captured"), Some(sent), "{sc}/{sys}");
            assert_eq!(m.get("samples"), Some(sent), "{sc}/{sys}");
            assert_eq!(m.get("fairness_min_over_max"), Some(1.0), "{sc}/{sys}");
            assert!(m.get("cpu_pct").is_some() && m.get("wakeups_per_s").is_some());
        }
    }
    // The dumpcap engine runs one program per capture; the reader none.
    let idle = back.find("idle", "dumpcap").unwrap();
    assert!(idle.metrics.contains_key("child_wakeups_per_s"));
    let setup = back.find("setup", "dumpcap").unwrap();
    assert_eq!(setup.get("children_per_capture"), Some(1.0));
    assert_eq!(setup.get("setups"), Some(cfg.setups as f64));
    let ring = back.find("setup", "ref-v2").unwrap();
    assert_eq!(ring.get("fds_per_capture"), Some(1.0));
    // Every target names what it judges; none is judged without a figure.
    assert!(back.targets.len() >= 10);
    for t in &back.targets {
        assert_eq!(t.met.is_some(), t.measured.is_some(), "{}", t.name);
    }
    let table = back.render();
    assert_eq!(table.matches("   method: ").count(), back.scenarios.len());
}
