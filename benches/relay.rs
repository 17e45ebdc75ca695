//! `cargo bench`: the whole-system measurements of the service against a raw
//! relay and websocat on the synthetic capture program. Prints the tables
//! and writes `target/bench/results.json`; see BENCHMARKS.md for the method.
//!
//! Environment knobs (all optional): `PFX_BENCH_SCALE` (counts and
//! durations, default 1), `PFX_BENCH_ONLY=throughput,concurrent,latency,
//! setup,density`, `PFX_BENCH_ROUNDS`, `PFX_BENCH_CONCURRENT`,
//! `PFX_BENCH_DENSITY`, `PFX_BENCH_LATENCY_CAPTURES=1,100`,
//! `PFX_BENCH_SERVICE=/path/to/packetflix` (measure that build instead),
//! `PFX_BENCH_WEBSOCAT=/path|none`, and the per-count knobs in
//! `support/scenarios.rs`. Without `--bench` (e.g. `cargo test --benches`)
//! it only says how to run it: a five-minute run is not a test.

use std::path::{Path, PathBuf};

use packetflix_testkit::bench::scenarios::{run_all, BenchConfig, Paths};
use packetflix_testkit::bench::websocat::find_websocat;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // Test runners list and run every target; this one only measures.
        // `--list` gets an empty list (what nextest asks for), anything
        // else a hint on stderr.
        if !std::env::args().any(|a| a == "--list") {
            eprintln!("relay bench: run with `cargo bench --bench relay`");
        }
        return;
    }
    // `PFX_BENCH_SERVICE=/path/to/packetflix` measures another build (a
    // before/after comparison with the same harness and generator).
    let built = PathBuf::from(env!("CARGO_BIN_EXE_packetflix"));
    let service = std::env::var_os("PFX_BENCH_SERVICE").map_or(built.clone(), PathBuf::from);
    let generator = packetflix_testkit::pcapgen::program_path();
    // target/<profile>/packetflix → target/bench
    let out_dir = built
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("bench"))
        .unwrap_or_else(|| PathBuf::from("target/bench"));
    let paths = Paths {
        service,
        generator,
        websocat: find_websocat(),
        out_dir,
    };
    let cfg = BenchConfig::from_env();
    eprintln!("packetflix bench: config {cfg:?}");
    if let Err(e) = &paths.websocat {
        eprintln!("packetflix bench: websocat unavailable: {e}");
    }
    let t0 = std::time::Instant::now();
    let progress = |what: &str| {
        eprintln!(
            "packetflix bench [{:>5.1} s]: {what} …",
            t0.elapsed().as_secs_f64()
        )
    };
    let report = run_all(&cfg, &paths, &progress);
    println!("{}", report.render());
    let json = paths.out_dir.join("results.json");
    match report.write_json(&json) {
        Ok(()) => println!("JSON: {}", json.display()),
        Err(e) => {
            eprintln!("cannot write {}: {e}", json.display());
            std::process::exit(1);
        }
    }
}
