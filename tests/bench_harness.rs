//! The benchmark harness tested on itself: a short run of every scenario
//! must yield a well-formed report (JSON and table), and a damaged stream
//! (a skipped sequence number, a wrong block length, a short stream) must be
//! caught on the raw path and through the service's websocket. No test here
//! asserts a timing: the harness reports numbers, it does not judge them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use packetflix_testkit::bench::report::{Report, Status};
use packetflix_testkit::bench::scenarios::{
    run_all, Addressing, BenchConfig, GenSettings, Paths, Sut, System,
};
use packetflix_testkit::bench::websocat::find_websocat;
use packetflix_testkit::pcapgen::Corrupt;

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
