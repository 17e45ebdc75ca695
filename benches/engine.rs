//! `cargo bench --bench engine`: the capture engines measured on real UDP
//! traffic over veth pairs, in one run: the service with its dumpcap
//! engine, the service with its native engine (when the binary takes
//! `--capture-engine`; until then that column says "not built"), and the
//! test kit's reference AF_PACKET ring reader in its modes (the kernel's
//! limit). Prints the tables with their methods and writes
//! `target/bench/engine.json`; BENCHMARKS.md ("Capture engines") explains
//! the method.
//!
//! Environment knobs (all optional): `PFX_BENCH_SCALE` (durations, the
//! dense capture count and the set-ups; 0.1 is a smoke run),
//! `PFX_BENCH_ONLY=latency,fullspeed,tradeoff,dense,idle,setup`,
//! `PFX_BENCH_SERVICE=/path/to/packetflix` (measure another build),
//! `PFX_BENCH_ROUNDS` (2), `PFX_BENCH_TRADEOFF_ROUNDS` (3),
//! `PFX_BENCH_LATENCY_RATES=2,100,10000` (latency points to run),
//! `PFX_BENCH_MODES`, `PFX_BENCH_TRADEOFF_MODES` (reference reader modes,
//! e.g. `v3:1,v2,sweep:1,adaptive:1`), `PFX_BENCH_DENSE` (200) and the
//! per-scenario durations in `testkit/src/bench/engine.rs`. Needs root
//! (namespaces, packet sockets, dumpcap). Without `--bench` (a test
//! runner) it only says how to run it.

use std::path::{Path, PathBuf};

use packetflix_testkit::bench::engine::{run_engine, EngineConfig, EnginePaths};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        if !std::env::args().any(|a| a == "--list") {
            eprintln!("engine bench: run with `cargo bench --bench engine`");
        }
        return;
    }
    let built = PathBuf::from(env!("CARGO_BIN_EXE_packetflix"));
    let service = std::env::var_os("PFX_BENCH_SERVICE").map_or(built.clone(), PathBuf::from);
    // target/<profile>/packetflix → target/bench
    let out_dir = built
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("bench"))
        .unwrap_or_else(|| PathBuf::from("target/bench"));
    let paths = EnginePaths { service, out_dir };
    let cfg = EngineConfig::from_env();
    eprintln!("engine bench: config {cfg:?}");
    let t0 = std::time::Instant::now();
    let progress = |what: &str| {
        eprintln!(
            "engine bench [{:>6.1} s]: {what}",
            t0.elapsed().as_secs_f64()
        )
    };
    let report = run_engine(&cfg, &paths, &progress);
    println!("{}", report.render());
    let json = paths.out_dir.join("engine.json");
    match report.write_json(&json) {
        Ok(()) => println!("JSON: {}", json.display()),
        Err(e) => {
            eprintln!("cannot write {}: {e}", json.display());
            std::process::exit(1);
        }
    }
}
