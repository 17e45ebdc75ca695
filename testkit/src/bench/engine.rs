//! The capture-engine measurements of `benches/engine.rs`: the service
//! with its dumpcap engine, the service with its native engine (when the
//! binary has one), and the reference ring reader ([`crate::traffic::ring`])
//! in its modes, side by side on real UDP traffic over veth pairs
//! ([`crate::traffic`]), in one run.
//!
//! Columns are interleaved: each round runs every column once, the next
//! round starting one column later, so a machine that gets busier or
//! quieter during the run moves all columns alike. A column that cannot
//! start or fails is reported with its reason and left out of later
//! rounds; nothing here panics on a failing column and no figure is judged
//! against a time except in the report's target list. Every load is
//! bounded in count and time; traffic only flows in the bench's own
//! namespaces.
//!
//! How a figure is obtained is printed with it (each scenario's method);
//! BENCHMARKS.md ("Capture engines") says it once more in prose.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::client::{Client, ConnSpec, Proto, Until, DEFAULT_MAX_SETUPS};
use super::report::{Machine, Measurement, Report, Scenario, Status, TargetCheck};
use super::stats::{latency_summary, median};
use super::{env_num, mono_ns, thread_cpu_ns};
use crate::procs;
use crate::service::{Launch, Service};
use crate::traffic::check::TrafficCheck;
use crate::traffic::ring::{self, Mode};
use crate::traffic::{
    generator_cpu, Fabric, GenReport, GenSpec, Generator, ReaderReport, ReaderSpec, RingReader,
    CAPTURE_IF,
};

/// After a capturer is set up, this long passes before anything is
/// measured, so its start-up work is not counted.
const SETTLE: Duration = Duration::from_millis(300);
/// The steady window of a paced load starts this long after its first
/// packet (at most a quarter of the load), past the start-up transients.
const WARM_MAX: Duration = Duration::from_millis(500);
/// After the generator stops, a capture through the service is read until
/// no packet came for this long…
const DRAIN_QUIET: Duration = Duration::from_millis(300);
/// …but at least this long (dumpcap hands a ring block over after its
/// 250 ms timeout at the latest)…
const DRAIN_MIN: Duration = Duration::from_millis(600);
/// …and at most this long.
const DRAIN_MAX: Duration = Duration::from_secs(5);
/// The reference reader's rings are handed over within its block timeout
/// or sweep period (≤ 10 ms here); it finishes reading when told to stop.
const READER_DRAIN: Duration = Duration::from_millis(200);
/// Slices in which the bench reads while it waits.
const SLICE: Duration = Duration::from_millis(20);
/// Longest opening every capture of a load may take.
const OPEN_LIMIT: Duration = Duration::from_secs(120);
/// Longest a closed capture's program may take to go.
const CLOSE_LIMIT: Duration = Duration::from_secs(20);
/// A paced load whose generator sent less than this share of the packets
/// asked is flagged in the report's notes.
const SENT_WARN_PCT: f64 = 95.0;
/// A generator gets this much beyond its schedule before it is given up on.
const GEN_SLACK: Duration = Duration::from_secs(10);

/// Sections of the run.
pub const ALL_SECTIONS: [&str; 6] = ["latency", "fullspeed", "tradeoff", "dense", "idle", "setup"];

/// Sizes of the run; [`EngineConfig::from_env`] gives `cargo bench`'s.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EngineConfig {
    pub sections: Vec<String>,
    /// Interleaved rounds of the latency points at 2 and 10,000 packets/s
    /// and of full speed.
    pub rounds: u32,
    /// Interleaved rounds of the trade-off points (1 × 100 and N × 1,000
    /// packets/s) and of the idle capture.
    pub tradeoff_rounds: u32,
    /// (packets per second, seconds of traffic per round) of each latency
    /// point; 100 per second is also the single-capture trade-off point.
    pub latency_points: Vec<(u64, f64)>,
    /// Seconds of full-speed traffic per round, and its count bound.
    pub fullspeed_secs: f64,
    pub fullspeed_max_packets: u64,
    pub tradeoff_captures: usize,
    pub tradeoff_rate: u64,
    pub tradeoff_secs: f64,
    pub dense_captures: usize,
    pub dense_rate: u64,
    pub dense_secs: f64,
    pub dense_rounds: u32,
    pub idle_secs: f64,
    pub idle_rounds: u32,
    /// Sequential captures for the set-up time, and captures at rest for
    /// memory and descriptors.
    pub setups: usize,
    pub rest_captures: usize,
    /// Reference reader modes in the latency, full-speed and dense columns.
    pub modes: Vec<String>,
    /// Reference reader modes in the trade-off and idle columns.
    pub tradeoff_modes: Vec<String>,
    /// Ring per socket of the reference reader, KiB.
    pub ring_kib: usize,
}

fn modes_from(v: &str) -> Vec<String> {
    v.split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| Mode::parse(m).is_ok())
        .collect()
}

impl EngineConfig {
    /// The default run (about 15 minutes on two shared cores), scaled by
    /// `PFX_BENCH_SCALE` (durations, the dense capture count, the set-ups),
    /// each knob overridable.
    pub fn from_env() -> EngineConfig {
        let scale: f64 = env_num("PFX_BENCH_SCALE", 1.0);
        let secs = |v: f64| (v * scale).max(0.5);
        let count = |v: f64, min: usize| ((v * scale) as usize).max(min);
        let sections = std::env::var("PFX_BENCH_ONLY")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_else(|_| ALL_SECTIONS.iter().map(|s| s.to_string()).collect());
        EngineConfig {
            sections,
            rounds: env_num("PFX_BENCH_ROUNDS", 2),
            tradeoff_rounds: env_num("PFX_BENCH_TRADEOFF_ROUNDS", 3),
            latency_points: [
                (2, env_num("PFX_BENCH_LAT2_S", secs(10.0))),
                (100, env_num("PFX_BENCH_LAT100_S", secs(4.0))),
                (10_000, env_num("PFX_BENCH_LAT10K_S", secs(2.0))),
            ]
            .into_iter()
            .filter(|(rate, _)| {
                // `PFX_BENCH_LATENCY_RATES=100` repeats one point alone.
                std::env::var("PFX_BENCH_LATENCY_RATES")
                    .map_or(true, |v| v.split(',').any(|r| r.trim() == rate.to_string()))
            })
            .collect(),
            fullspeed_secs: env_num("PFX_BENCH_FULLSPEED_S", secs(3.0)),
            fullspeed_max_packets: env_num("PFX_BENCH_FULLSPEED_MAX", 20_000_000),
            tradeoff_captures: env_num("PFX_BENCH_TRADEOFF_CAPTURES", 20),
            tradeoff_rate: 1_000,
            tradeoff_secs: env_num("PFX_BENCH_TRADEOFF_S", secs(4.0)),
            dense_captures: env_num("PFX_BENCH_DENSE", count(200.0, 2)),
            dense_rate: 1_000,
            dense_secs: env_num("PFX_BENCH_DENSE_S", secs(8.0)),
            dense_rounds: env_num("PFX_BENCH_DENSE_ROUNDS", 1),
            idle_secs: env_num("PFX_BENCH_IDLE_S", secs(4.0)),
            idle_rounds: env_num("PFX_BENCH_IDLE_ROUNDS", 2),
            setups: env_num("PFX_BENCH_SETUPS", count(30.0, 3)),
            rest_captures: env_num("PFX_BENCH_REST", 10),
            modes: std::env::var("PFX_BENCH_MODES")
                .map(|v| modes_from(&v))
                .unwrap_or_else(|_| modes_from("v3:1,v2,sweep:1,adaptive:1")),
            tradeoff_modes: std::env::var("PFX_BENCH_TRADEOFF_MODES")
                .map(|v| modes_from(&v))
                .unwrap_or_else(|_| modes_from("v3:1,v3:10,v2,sweep:1,sweep:2,sweep:5,adaptive:1")),
            ring_kib: env_num("PFX_BENCH_RING_KIB", ring::DEFAULT_RING_KIB),
        }
    }

    /// A run of half a minute, every section with one reference mode, for
    /// the harness's own test.
    pub fn tiny() -> EngineConfig {
        EngineConfig {
            sections: ALL_SECTIONS.iter().map(|s| s.to_string()).collect(),
            rounds: 1,
            tradeoff_rounds: 1,
            latency_points: vec![(100, 0.5)],
            fullspeed_secs: 0.2,
            fullspeed_max_packets: 50_000,
            tradeoff_captures: 2,
            tradeoff_rate: 1_000,
            tradeoff_secs: 0.3,
            dense_captures: 3,
            dense_rate: 1_000,
            dense_secs: 0.3,
            dense_rounds: 1,
            idle_secs: 0.3,
            idle_rounds: 1,
            setups: 2,
            rest_captures: 2,
            modes: modes_from("v2"),
            tradeoff_modes: modes_from("adaptive:1"),
            ring_kib: ring::DEFAULT_RING_KIB,
        }
    }

    fn runs(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }

    /// Capture namespaces the run needs.
    pub fn namespaces(&self) -> usize {
        let mut n = 1;
        if self.runs("tradeoff") {
            n = n.max(self.tradeoff_captures);
        }
        if self.runs("dense") {
            n = n.max(self.dense_captures);
        }
        if self.runs("setup") {
            n = n.max(self.setups).max(self.rest_captures);
        }
        n
    }
}

/// Where the programs are and where results go.
#[derive(Clone, Debug)]
pub struct EnginePaths {
    pub service: PathBuf,
    /// `target/bench`: engine.json and the services' logs.
    pub out_dir: PathBuf,
}

/// One column of the tables.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Column {
    /// The service, capturing with dumpcap (today's engine).
    Dumpcap,
    /// The service with `--capture-engine native`.
    Native,
    /// The reference ring reader in one of its modes.
    Ref(Mode),
}

impl Column {
    pub fn name(&self) -> String {
        match self {
            Column::Dumpcap => "dumpcap".into(),
            Column::Native => "native".into(),
            Column::Ref(m) => format!("ref-{}", m.label()),
        }
    }

    fn is_service(&self) -> bool {
        !matches!(self, Column::Ref(_))
    }
}

fn columns(modes: &[String]) -> Vec<Column> {
    let mut c = vec![Column::Dumpcap, Column::Native];
    c.extend(
        modes
            .iter()
            .filter_map(|m| Mode::parse(m).ok())
            .map(Column::Ref),
    );
    c
}

/// Whether the service binary takes `--capture-engine` (its `--help`
/// says so): the native engine's column is measured only then.
pub fn has_engine_flag(service: &Path) -> bool {
    std::process::Command::new(service)
        .arg("--help")
        .stdin(std::process::Stdio::null())
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout) + String::from_utf8_lossy(&o.stderr);
            text.contains("--capture-engine")
        })
        .unwrap_or(false)
}

/// The services under test, started once for the whole run.
struct Services {
    dumpcap: Result<Service, String>,
    native: Result<Service, String>,
}

impl Services {
    fn start(paths: &EnginePaths) -> Services {
        let flag = has_engine_flag(&paths.service);
        let start = |engine: &str| {
            let mut args = Vec::new();
            if flag {
                args = vec!["--capture-engine", engine];
            }
            Launch::new()
                .program(&paths.service)
                .args(&args)
                .log(
                    paths
                        .out_dir
                        .join("logs")
                        .join(format!("engine-{engine}.log")),
                )
                .try_start()
        };
        Services {
            dumpcap: start("dumpcap"),
            native: if flag {
                start("native")
            } else {
                Err(format!(
                    "not built: {} has no --capture-engine",
                    paths.service.display()
                ))
            },
        }
    }

    fn get(&self, col: Column) -> Result<&Service, String> {
        match col {
            Column::Dumpcap => self.dumpcap.as_ref().map_err(Clone::clone),
            Column::Native => self.native.as_ref().map_err(Clone::clone),
            Column::Ref(_) => Err("not a service column".into()),
        }
    }
}

/// Why a column has no figures: it is not there, or it failed.
type Why = (Status, String);

/// Everything a measurement needs.
struct Env<'a> {
    cfg: &'a EngineConfig,
    fabric: &'a Fabric,
    services: &'a Services,
}

/// CPU time and context switches of one process, once.
#[derive(Clone, Copy, Debug)]
struct ProcCost {
    cpu_ns: u64,
    ctx: u64,
    root: bool,
}

/// A look at a capturer's processes (the service and its children, or the
/// reader), keyed by pid and start time so a reused pid is not confused.
type TreeSample = BTreeMap<(i32, u64), ProcCost>;

fn sample_tree(root: i32) -> TreeSample {
    let mut out = TreeSample::new();
    let mut add = |p: procs::ProcStat, root: bool| {
        if let Ok(s) = procs::sample(p.pid) {
            let ctx = procs::task_ctx_switches(p.pid).unwrap_or(s.ctx_switches);
            out.insert(
                (p.pid, p.starttime),
                ProcCost {
                    cpu_ns: s.cpu_ns,
                    ctx,
                    root,
                },
            );
        }
    };
    if let Some(r) = procs::stat(root) {
        add(r, true);
    }
    for p in procs::descendants(root) {
        add(p, false);
    }
    out
}

/// What a capturer's processes used between two looks: (own CPU ns,
/// children's CPU ns, own context switches, children's). A process that
/// started in between counts from zero; one that ended is missing (no
/// capture ends inside a window here).
fn cost(a: &TreeSample, b: &TreeSample) -> (u64, u64, u64, u64) {
    let mut c = (0, 0, 0, 0);
    for (k, v) in b {
        let (cpu0, ctx0) = a.get(k).map_or((0, 0), |p| (p.cpu_ns, p.ctx));
        let cpu = v.cpu_ns.saturating_sub(cpu0);
        let ctx = v.ctx.saturating_sub(ctx0);
        if v.root {
            c.0 += cpu;
            c.2 += ctx;
        } else {
            c.1 += cpu;
            c.3 += ctx;
        }
    }
    c
}

/// A capturer measured in one run: captures through the service read by
/// the bench's client, or the reference reader.
enum Capturer {
    Service {
        pid: i32,
        client: Box<Client<TrafficCheck>>,
    },
    Reader(RingReader),
}

/// What a capturer got, at the end.
#[derive(Debug, Default)]
struct Captured {
    /// Our packets per capture, in the order of the capture ends.
    per_capture: Vec<u64>,
    gaps: u64,
    backwards: u64,
    other: u64,
    latencies_ns: Vec<u64>,
    /// The reader's own view (wakeups, kernel drops, set-up and close).
    reader: Option<ReaderReport>,
}

impl Capturer {
    fn open(env: &Env, col: Column, on: &[usize]) -> Result<Capturer, Why> {
        let failed = |e: String| (Status::Failed, e);
        match col {
            Column::Ref(mode) => {
                let spec = ReaderSpec {
                    mode,
                    on: on.to_vec(),
                    ring_kib: env.cfg.ring_kib,
                    max_secs: ring::MAX_SECS,
                };
                RingReader::start(env.fabric, &spec)
                    .map(Capturer::Reader)
                    .map_err(failed)
            }
            _ => {
                let svc = env
                    .services
                    .get(col)
                    .map_err(|e| (Status::Unavailable, e))?;
                let specs = on
                    .iter()
                    .map(|&i| ConnSpec {
                        addr: svc.addr(),
                        proto: Proto::Ws {
                            path: format!(
                                "/capture?netns={}&nif={CAPTURE_IF}",
                                env.fabric.captures[i].inode
                            ),
                            headers: vec![],
                        },
                        record_latency: true,
                        expect_packets: None,
                    })
                    .collect();
                let mut client = Client::with_sinks(specs, DEFAULT_MAX_SETUPS, |s| {
                    TrafficCheck::new(s.record_latency)
                })
                .map_err(|e| failed(format!("client: {e}")))?;
                // SHB and IDB: the capture program (or engine) has its
                // interface open and is capturing.
                client.run(Until::AllHaveBlocks(2), OPEN_LIMIT);
                if let Some(e) = client.results().find_map(|r| r.error.clone()) {
                    return Err(failed(format!("capture did not start: {e}")));
                }
                Ok(Capturer::Service {
                    pid: svc.pid(),
                    client: Box::new(client),
                })
            }
        }
    }

    fn root(&self) -> i32 {
        match self {
            Capturer::Service { pid, .. } => *pid,
            Capturer::Reader(r) => r.pid(),
        }
    }

    /// Reads (the service's captures) or waits (the reader reads itself)
    /// until `until`.
    fn pump_until(&mut self, until: Instant) {
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            let d = (until - now).min(SLICE);
            match self {
                Capturer::Service { client, .. } => client.run(Until::TimeUp, d),
                Capturer::Reader(_) => std::thread::sleep(d),
            }
        }
    }

    /// Our packets so far and when the last arrived (the service's
    /// captures only: the reader says at the end).
    fn progress(&self) -> Option<(u64, Option<u64>)> {
        match self {
            Capturer::Service { client, .. } => Some((
                client.sinks().map(TrafficCheck::ours).sum(),
                client.sinks().filter_map(|s| s.last_packet_ns).max(),
            )),
            Capturer::Reader(_) => None,
        }
    }

    /// Reads what is still on its way after the traffic stopped.
    fn drain(&mut self) {
        let start = Instant::now();
        let Some((mut last_count, _)) = self.progress() else {
            self.pump_until(start + READER_DRAIN);
            return;
        };
        let mut last_change = start;
        while start.elapsed() < DRAIN_MAX {
            self.pump_until(Instant::now() + SLICE);
            let (n, _) = self.progress().unwrap_or((0, None));
            if n != last_count {
                last_count = n;
                last_change = Instant::now();
            }
            if start.elapsed() >= DRAIN_MIN && last_change.elapsed() >= DRAIN_QUIET {
                break;
            }
        }
    }

    fn close(self) -> Result<Captured, String> {
        match self {
            Capturer::Reader(r) => {
                let rep = r.finish()?;
                Ok(Captured {
                    per_capture: rep.ring_packets.clone(),
                    gaps: rep.gaps,
                    backwards: rep.backwards,
                    other: rep.other,
                    latencies_ns: rep.latencies_ns.clone(),
                    reader: Some(rep),
                })
            }
            Capturer::Service { pid, client } => {
                let mut out = Captured::default();
                let mut error = None;
                for (res, check) in client.finish_with_sinks() {
                    if let Some(e) = res.error {
                        error.get_or_insert(e);
                    }
                    out.per_capture.push(check.ours());
                    out.gaps += check.flows.gaps();
                    out.backwards += check.flows.backwards();
                    out.other += check.other;
                    out.latencies_ns.extend(res.latencies_ns);
                }
                // The client's drop closed every connection: wait for the
                // capture programs to go before anything else is measured.
                let end = Instant::now() + CLOSE_LIMIT;
                while !procs::descendants(pid).is_empty() && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(10));
                }
                match error {
                    Some(e) => Err(e),
                    None => Ok(out),
                }
            }
        }
    }
}

/// A load: `captures` capture ends, each sent `rate` packets per second
/// (0: full speed) of `size` bytes for `secs`; `None` rate: no traffic.
#[derive(Clone, Copy, Debug)]
struct Load {
    captures: usize,
    rate: Option<u64>,
    size: usize,
    secs: f64,
}

/// One run of one column: its figures and its latency samples.
struct RunOut {
    metrics: BTreeMap<String, f64>,
    latencies_ns: Vec<u64>,
}

fn secs_of(d: u64) -> f64 {
    d as f64 / 1e9
}

/// Opens the column's capturer on the load's capture ends, runs the load,
/// and measures.
fn run_once(env: &Env, col: Column, load: &Load) -> Result<RunOut, Why> {
    let failed = |e: String| (Status::Failed, e);
    let on: Vec<usize> = (0..load.captures).collect();
    let mut cap = Capturer::open(env, col, &on)?;
    cap.pump_until(Instant::now() + SETTLE);
    let root = cap.root();
    let rx0 = env.fabric.capture_counters(&on).map_err(failed)?;
    let s0 = sample_tree(root);
    let client0 = thread_cpu_ns();
    let t0 = mono_ns();
    let mut gen_report: Option<GenReport> = None;
    let mut asked = 0;
    let (sa, ta, sb, tb, gen_cpu, machine);
    match load.rate {
        Some(rate) => {
            let count = if rate == 0 {
                env.cfg.fullspeed_max_packets
            } else {
                ((rate as f64 * load.secs) as u64).max(1)
            };
            if rate > 0 {
                asked = count * on.len() as u64;
            }
            let spec = GenSpec {
                to: on.clone(),
                size: load.size,
                rate,
                count,
                secs: load.secs.ceil() as u64 + 1,
            };
            let mut gen = Generator::start(env.fabric, &spec).map_err(failed)?;
            let start = Instant::now();
            let span = Duration::from_secs_f64(load.secs);
            cap.pump_until(start + (span / 4).min(WARM_MAX));
            let g0 = procs::sample(gen.pid()).map(|s| s.cpu_ns).unwrap_or(0);
            let m0 = procs::machine_cpu();
            sa = sample_tree(root);
            ta = mono_ns();
            // The steady window ends with the schedule (full speed: when
            // the generator is done).
            let end = start + span;
            while Instant::now() < end && !(rate == 0 && gen.done()) {
                cap.pump_until((Instant::now() + SLICE).min(end));
            }
            sb = sample_tree(root);
            tb = mono_ns();
            let m1 = procs::machine_cpu();
            let g1 = procs::sample(gen.pid()).map(|s| s.cpu_ns).unwrap_or(g0);
            gen_cpu = g1.saturating_sub(g0);
            machine = (m1.0.saturating_sub(m0.0), m1.1.saturating_sub(m0.1));
            let limit = Instant::now() + GEN_SLACK;
            while !gen.done() && Instant::now() < limit {
                cap.pump_until(Instant::now() + SLICE);
            }
            gen_report = Some(gen.finish(Duration::from_secs(1)).map_err(failed)?);
            cap.drain();
        }
        None => {
            let m0 = procs::machine_cpu();
            sa = s0.clone();
            ta = t0;
            cap.pump_until(Instant::now() + Duration::from_secs_f64(load.secs));
            sb = sample_tree(root);
            tb = mono_ns();
            let m1 = procs::machine_cpu();
            gen_cpu = 0;
            machine = (m1.0.saturating_sub(m0.0), m1.1.saturating_sub(m0.1));
        }
    }
    let s_end = sample_tree(root);
    let t_end = mono_ns();
    let client_cpu = thread_cpu_ns().saturating_sub(client0);
    let rx1 = env.fabric.capture_counters(&on).map_err(failed)?;
    let got = cap.close().map_err(failed)?;

    let mut m = BTreeMap::new();
    let steady = secs_of(tb.saturating_sub(ta)).max(1e-9);
    let (own, kids, own_ctx, kids_ctx) = cost(&sa, &sb);
    m.insert("cpu_pct".into(), (own + kids) as f64 / 1e9 / steady * 100.0);
    m.insert("wakeups_per_s".into(), (own_ctx + kids_ctx) as f64 / steady);
    if col.is_service() {
        m.insert("svc_cpu_pct".into(), own as f64 / 1e9 / steady * 100.0);
        m.insert("child_cpu_pct".into(), kids as f64 / 1e9 / steady * 100.0);
        m.insert("svc_wakeups_per_s".into(), own_ctx as f64 / steady);
        m.insert("child_wakeups_per_s".into(), kids_ctx as f64 / steady);
        m.insert(
            "client_cpu_pct".into(),
            client_cpu as f64 / 1e9 / secs_of(t_end - t0) * 100.0,
        );
    }
    if machine.1 > 0 {
        m.insert(
            "machine_busy_pct".into(),
            machine.0 as f64 / machine.1 as f64 * 100.0,
        );
    }
    let arrived: Vec<u64> = rx1
        .iter()
        .zip(&rx0)
        .map(|(b, a)| b.rx_packets.saturating_sub(a.rx_packets))
        .collect();
    let arrived_sum: u64 = arrived.iter().sum();
    let captured: u64 = got.per_capture.iter().sum();
    if let Some(g) = &gen_report {
        m.insert("sent".into(), g.sent as f64);
        if asked > 0 {
            m.insert("sent_pct".into(), g.sent as f64 / asked as f64 * 100.0);
        }
        m.insert("send_errors".into(), g.errors as f64);
        m.insert(
            "sent_per_s".into(),
            g.sent as f64 / secs_of(g.elapsed_ns.max(1)),
        );
        m.insert("gen_cpu_pct".into(), gen_cpu as f64 / 1e9 / steady * 100.0);
        m.insert("arrived".into(), arrived_sum as f64);
        m.insert("captured".into(), captured as f64);
        m.insert("lost".into(), arrived_sum.saturating_sub(captured) as f64);
        if arrived_sum > 0 {
            m.insert(
                "captured_pct".into(),
                captured as f64 / arrived_sum as f64 * 100.0,
            );
        }
        if captured > 0 {
            let (a, b, _, _) = cost(&s0, &s_end);
            m.insert(
                "cpu_us_per_pkt".into(),
                (a + b) as f64 / 1e3 / captured as f64,
            );
        }
        let shares: Vec<f64> = got
            .per_capture
            .iter()
            .zip(&arrived)
            .filter(|(_, &a)| a > 0)
            .map(|(&c, &a)| c as f64 / a as f64)
            .collect();
        let lo = shares.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = shares.iter().copied().fold(0.0, f64::max);
        if hi > 0.0 {
            m.insert("fairness_min_over_max".into(), lo / hi);
        }
        m.insert("gaps".into(), got.gaps as f64);
        m.insert("backwards".into(), got.backwards as f64);
    }
    m.insert("other_packets".into(), got.other as f64);
    if let Some(r) = &got.reader {
        m.insert("kernel_drops".into(), r.kernel_drops as f64);
        m.insert(
            "reader_loops_per_s".into(),
            r.wakeups as f64 / secs_of(t_end - t0),
        );
    }
    Ok(RunOut {
        metrics: m,
        latencies_ns: got.latencies_ns,
    })
}

/// Per-column rounds of one scenario, or why a column dropped out.
#[derive(Default)]
struct Rounds {
    per_round: BTreeMap<String, Vec<BTreeMap<String, f64>>>,
    latencies: BTreeMap<String, Vec<u64>>,
    failed: BTreeMap<String, Why>,
}

impl Rounds {
    /// Runs `rounds` interleaved rounds of `load` over `cols`.
    fn run(
        env: &Env,
        cols: &[Column],
        load: &Load,
        rounds: u32,
        progress: &dyn Fn(&str),
    ) -> Rounds {
        let mut out = Rounds::default();
        for round in 0..rounds.max(1) as usize {
            for k in 0..cols.len() {
                let col = cols[(round + k) % cols.len()];
                let name = col.name();
                if out.failed.contains_key(&name) {
                    continue;
                }
                progress(&format!("  round {round}: {name}"));
                match run_once(env, col, load) {
                    Ok(r) => {
                        out.per_round
                            .entry(name.clone())
                            .or_default()
                            .push(r.metrics);
                        out.latencies
                            .entry(name)
                            .or_default()
                            .extend(r.latencies_ns);
                    }
                    Err(why) => {
                        out.failed.insert(name, why);
                    }
                }
            }
        }
        out
    }

    /// A row per column: medians over rounds, the rounds themselves, the
    /// range of the CPU share and p99 over rounds, and the latency
    /// percentiles over all rounds' packets together.
    fn measurements(mut self, scenario: &str, cols: &[Column]) -> Vec<Measurement> {
        cols.iter()
            .map(|c| {
                let name = c.name();
                if let Some((status, why)) = self.failed.get(&name) {
                    return Measurement::failed(scenario, &name, *status, why.clone());
                }
                let Some(rounds) = self.per_round.get(&name) else {
                    return Measurement::failed(
                        scenario,
                        &name,
                        Status::Unavailable,
                        "not run".into(),
                    );
                };
                let mut m = Measurement::new(scenario, &name);
                let keys: BTreeSet<&String> = rounds.iter().flat_map(|r| r.keys()).collect();
                for k in keys {
                    let vals: Vec<f64> = rounds.iter().filter_map(|r| r.get(k).copied()).collect();
                    if let Some(med) = median(&vals) {
                        m.metrics.insert(k.clone(), med);
                    }
                    if k == "cpu_pct" || k == "wakeups_per_s" {
                        let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
                        let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        m.metrics.insert(format!("{k}_min"), lo);
                        m.metrics.insert(format!("{k}_max"), hi);
                    }
                    if rounds.len() > 1 {
                        m.rounds.insert(k.clone(), vals);
                    }
                }
                let mut lat = self.latencies.remove(&name).unwrap_or_default();
                if let Some(s) = latency_summary(&mut lat) {
                    m.metrics.insert("samples".into(), s.count as f64);
                    m.metrics.insert("p50_us".into(), s.p50_us);
                    m.metrics.insert("p99_us".into(), s.p99_us);
                    m.metrics.insert("max_us".into(), s.max_us);
                }
                m
            })
            .collect()
    }
}

fn cols(c: &[(&str, &str)]) -> Vec<(String, String)> {
    c.iter()
        .map(|(k, h)| (k.to_string(), h.to_string()))
        .collect()
}

/// How the capture-end figures are obtained, common to every traffic
/// scenario.
fn method_common(cfg: &EngineConfig) -> String {
    let cpu = generator_cpu().map_or("not pinned (one CPU)".to_string(), |c| {
        format!("pinned to CPU {c}")
    });
    format!(
        "UDP over veth pairs, one per capture, from one sender namespace (packetflix-trafficgen, \
         one AF_PACKET socket, sendmmsg, {cpu}; the receiving side's kernel work runs in its \
         context too) to capture namespaces with no address, IPv6 off; a paced flow sends each \
         packet at its slot plus a random offset within half a period (no phase-locking to the \
         kernel's periodic timers, mean rate exact); each packet carries its flow's sequence \
         number and CLOCK_MONOTONIC send time. Columns: the service (dumpcap \
         engine; native engine with --capture-engine native) captured with ?netns=<inode>&nif=c0, \
         read by the bench's one-thread client, which decodes EPBs as they arrive; the reference \
         reader packetflix-ringread (one process, one socket and {} KiB ring per capture). \
         Latency = arrival at the client (reader: when it takes the frame from the ring) − send \
         time; percentiles over all packets of all rounds. CPU = scheduler run time of the \
         service and every child it started, or of the reader (/proc/PID/task/*/schedstat), over \
         the steady window (from {} ms after the first packet, at most a quarter of the load, to \
         the end of the schedule) as % of one core; wakeups = voluntary + involuntary context \
         switches of the same processes over the same window; arrived = rx_packets of the \
         capture ends (/proc/net/dev in their namespaces); captured = our packets the capturer \
         saw, counted after a drain (service: until no packet for {} ms, at least {} ms); columns \
         interleaved, the next round starting one column later",
        cfg.ring_kib,
        WARM_MAX.as_millis(),
        DRAIN_QUIET.as_millis(),
        DRAIN_MIN.as_millis()
    )
}

fn latency_scenario(env: &Env, rate: u64, secs: f64, progress: &dyn Fn(&str)) -> Scenario {
    let cfg = env.cfg;
    // 100 per second is also the single-capture point of the trade-off.
    let (modes, rounds) = if rate == 100 {
        (&cfg.tradeoff_modes, cfg.tradeoff_rounds)
    } else {
        (&cfg.modes, cfg.rounds)
    };
    let cs = columns(modes);
    let load = Load {
        captures: 1,
        rate: Some(rate),
        size: 64,
        secs,
    };
    let id = format!("latency-{rate}pps");
    let per_round = ((rate as f64 * secs) as u64).max(1);
    let r = Rounds::run(env, &cs, &load, rounds, progress);
    Scenario {
        title: format!("Send-to-capturer latency and cost, 1 capture × {rate} packets/s, 64 B"),
        method: format!(
            "{}; {per_round} packets per round ({secs} s), {rounds} rounds, so {} samples per \
             column (nearest-rank p99 of fewer than 100 samples is their maximum)",
            method_common(cfg),
            per_round * u64::from(rounds),
        ),
        columns: cols(&[
            ("p50_us", "p50 µs"),
            ("p99_us", "p99 µs"),
            ("max_us", "max µs"),
            ("samples", "samples"),
            ("cpu_pct", "CPU %"),
            ("cpu_pct_min", "CPU% min"),
            ("cpu_pct_max", "CPU% max"),
            ("wakeups_per_s", "wakeups/s"),
            ("captured_pct", "captured %"),
            ("sent_pct", "sent %"),
            ("machine_busy_pct", "machine%"),
        ]),
        results: r.measurements(&id, &cs),
        id,
    }
}

fn fullspeed_scenario(env: &Env, size: usize, progress: &dyn Fn(&str)) -> Scenario {
    let cfg = env.cfg;
    let cs = columns(&cfg.modes);
    let load = Load {
        captures: 1,
        rate: Some(0),
        size,
        secs: cfg.fullspeed_secs,
    };
    let id = format!("fullspeed-{size}");
    let r = Rounds::run(env, &cs, &load, cfg.rounds, progress);
    Scenario {
        title: format!("Full speed, 1 capture, {size} B frames"),
        method: format!(
            "{}; the generator sends as fast as one core lets it for {} s (at most {} packets), \
             {} rounds; captured % = captured / arrived; CPU per packet = the capturer's CPU from \
             the generator's start to the end of the drain / packets captured; ref kernel drops = \
             PACKET_STATISTICS",
            method_common(cfg),
            cfg.fullspeed_secs,
            cfg.fullspeed_max_packets,
            cfg.rounds
        ),
        columns: cols(&[
            ("sent", "sent"),
            ("arrived", "arrived"),
            ("captured", "captured"),
            ("captured_pct", "captured %"),
            ("cpu_us_per_pkt", "CPU µs/pkt"),
            ("cpu_pct", "CPU %"),
            ("child_cpu_pct", "child CPU%"),
            ("sent_per_s", "sent/s"),
            ("gen_cpu_pct", "gen CPU%"),
            ("kernel_drops", "ref drops"),
            ("p99_us", "p99 µs"),
            ("machine_busy_pct", "machine%"),
        ]),
        results: r.measurements(&id, &cs),
        id,
    }
}

/// Many captures at the same rate each: the trade-off point and the dense
/// one.
struct Many<'a> {
    id: String,
    n: usize,
    rate: u64,
    secs: f64,
    modes: &'a [String],
    rounds: u32,
}

fn many_scenario(env: &Env, many: Many, progress: &dyn Fn(&str)) -> Scenario {
    let Many {
        id,
        n,
        rate,
        secs,
        modes,
        rounds,
    } = many;
    let cs = columns(modes);
    let load = Load {
        captures: n,
        rate: Some(rate),
        size: 64,
        secs,
    };
    let r = Rounds::run(env, &cs, &load, rounds, progress);
    Scenario {
        title: format!("{n} captures of {n} namespaces × {rate} packets/s, 64 B"),
        method: format!(
            "{}; every capture end gets {rate} packets/s at its own random phase for {secs} s, \
             {rounds} round(s); fairness = min/max over captures of (captured / arrived); lost = \
             arrived − captured",
            method_common(env.cfg)
        ),
        columns: cols(&[
            ("cpu_pct", "CPU %"),
            ("cpu_pct_min", "CPU% min"),
            ("cpu_pct_max", "CPU% max"),
            ("p50_us", "p50 µs"),
            ("p99_us", "p99 µs"),
            ("max_us", "max µs"),
            ("wakeups_per_s", "wakeups/s"),
            ("captured_pct", "captured %"),
            ("lost", "lost"),
            ("fairness_min_over_max", "fairness"),
            ("sent_pct", "sent %"),
            ("gen_cpu_pct", "gen CPU%"),
            ("machine_busy_pct", "machine%"),
        ]),
        results: r.measurements(&id, &cs),
        id,
    }
}

fn idle_scenario(env: &Env, progress: &dyn Fn(&str)) -> Scenario {
    let cfg = env.cfg;
    let cs = columns(&cfg.tradeoff_modes);
    let load = Load {
        captures: 1,
        rate: None,
        size: 64,
        secs: cfg.idle_secs,
    };
    let r = Rounds::run(env, &cs, &load, cfg.idle_rounds, progress);
    let id = "idle".to_string();
    Scenario {
        title: "Idle capture: wakeups and CPU with no traffic".into(),
        method: format!(
            "one capture open on a capture end nobody sends to; after {} ms of settling, the \
             capturer's processes are watched for {} s: wakeups = voluntary + involuntary context \
             switches (/proc/PID/task/*/status) per second, the service's and its children's \
             (dumpcap) apart; CPU = scheduler run time as % of a core; {} round(s), interleaved",
            SETTLE.as_millis(),
            cfg.idle_secs,
            cfg.idle_rounds
        ),
        columns: cols(&[
            ("wakeups_per_s", "wakeups/s"),
            ("svc_wakeups_per_s", "service wk/s"),
            ("child_wakeups_per_s", "child wk/s"),
            ("wakeups_per_s_max", "max wk/s"),
            ("cpu_pct", "CPU %"),
            ("machine_busy_pct", "machine%"),
        ]),
        results: r.measurements(&id, &cs),
        id,
    }
}

/// The set-up time and the cost at rest of the service's captures.
fn setup_service(env: &Env, col: Column, scenario: &str) -> Measurement {
    let name = col.name();
    let svc = match env.services.get(col) {
        Ok(s) => s,
        Err(e) => return Measurement::failed(scenario, &name, Status::Unavailable, e),
    };
    let spec = |i: usize| ConnSpec {
        addr: svc.addr(),
        proto: Proto::Ws {
            path: format!(
                "/capture?netns={}&nif={CAPTURE_IF}",
                env.fabric.captures[i].inode
            ),
            headers: vec![],
        },
        record_latency: false,
        expect_packets: None,
    };
    // No capture program left, and the service's descriptors holding
    // still (the native engine closes sockets on helper threads after the
    // capture ended, tens of milliseconds each).
    let settle = || {
        let end = Instant::now() + CLOSE_LIMIT;
        while !procs::descendants(svc.pid()).is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut last = procs::open_fds(svc.pid());
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
            let now = procs::open_fds(svc.pid());
            if now == last {
                break;
            }
            last = now;
        }
    };
    let mut firsts = Vec::new();
    for _ in 0..env.cfg.setups {
        settle();
        let mut c = match Client::with_sinks(vec![spec(0)], 1, |_| TrafficCheck::new(false)) {
            Ok(c) => c,
            Err(e) => return Measurement::failed(scenario, &name, Status::Failed, e.to_string()),
        };
        c.run(Until::AllHaveBlocks(1), OPEN_LIMIT);
        let r = c.finish().pop().unwrap_or_default();
        match (r.error, r.connected_ns, r.first_byte_ns) {
            (None, Some(a), Some(b)) => firsts.push((b - a) as f64 / 1e6),
            (e, _, _) => {
                let e = e.unwrap_or_else(|| "no first byte".into());
                return Measurement::failed(scenario, &name, Status::Failed, e);
            }
        }
    }
    settle();
    // At rest: several captures open, nothing flowing.
    let n = env.cfg.rest_captures.max(1);
    let before = procs::sample(svc.pid());
    let mut c = match Client::with_sinks((0..n).map(spec).collect(), DEFAULT_MAX_SETUPS, |_| {
        TrafficCheck::new(false)
    }) {
        Ok(c) => c,
        Err(e) => return Measurement::failed(scenario, &name, Status::Failed, e.to_string()),
    };
    c.run(Until::AllHaveBlocks(2), OPEN_LIMIT);
    c.run(Until::TimeUp, Duration::from_secs(1));
    let after = procs::sample(svc.pid());
    let kids: Vec<procs::ProcStat> = procs::descendants(svc.pid());
    let kid = |f: &dyn Fn(i32) -> Option<u64>| {
        let v: Vec<f64> = kids
            .iter()
            .filter_map(|p| f(p.pid))
            .map(|x| x as f64)
            .collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / n as f64
        }
    };
    let kid_rss = kid(&procs::rss_kib);
    let kid_pss = kid(&procs::pss_kib);
    let kid_anon = kid(&procs::rss_anon_kib);
    // A descriptor this process holds too was inherited through the
    // service (cargo's jobserver pipe under `cargo bench`), not opened for
    // the capture.
    let ours: BTreeSet<String> = procs::fd_targets(std::process::id() as i32)
        .into_iter()
        .filter(|t| t.starts_with("pipe:") || t.starts_with("socket:"))
        .collect();
    let own_fds = |p: i32| {
        let n = procs::fd_targets(p)
            .iter()
            .filter(|t| !ours.contains(*t))
            .count();
        Some(n as u64)
    };
    let kid_fds = kid(&own_fds);
    let open_errors = c.results().filter(|r| r.error.is_some()).count();
    drop(c);
    settle();
    let (Ok(before), Ok(after)) = (before, after) else {
        return Measurement::failed(scenario, &name, Status::Failed, "service vanished".into());
    };
    if open_errors > 0 {
        let e = format!("{open_errors} of {n} captures at rest failed");
        return Measurement::failed(scenario, &name, Status::Failed, e);
    }
    let mut m = Measurement::new(scenario, &name);
    let mm = &mut m.metrics;
    let mut sorted = firsts.clone();
    sorted.sort_by(f64::total_cmp);
    mm.insert("first_byte_ms".into(), median(&firsts).unwrap_or(f64::NAN));
    mm.insert(
        "first_byte_max_ms".into(),
        sorted.last().copied().unwrap_or(f64::NAN),
    );
    mm.insert("setups".into(), firsts.len() as f64);
    let per = |a: u64, b: u64| (b as f64 - a as f64) / n as f64;
    let svc_rss = per(before.rss_kib, after.rss_kib);
    let svc_fds = per(before.fds, after.fds);
    mm.insert("svc_rss_kib_per_capture".into(), svc_rss);
    mm.insert("child_rss_kib_per_capture".into(), kid_rss);
    mm.insert("child_pss_kib_per_capture".into(), kid_pss);
    mm.insert("child_anon_kib_per_capture".into(), kid_anon);
    mm.insert("rss_kib_per_capture".into(), svc_rss + kid_rss);
    mm.insert("pss_kib_per_capture".into(), svc_rss + kid_pss);
    mm.insert("svc_fds_per_capture".into(), svc_fds);
    mm.insert("child_fds_per_capture".into(), kid_fds);
    mm.insert("fds_per_capture".into(), svc_fds + kid_fds);
    mm.insert("children_per_capture".into(), kids.len() as f64 / n as f64);
    m.rounds.insert("first_byte_ms".into(), firsts);
    m
}

/// The reference reader's ring set-up and close times, and its cost per
/// ring at rest.
fn setup_reader(env: &Env, mode: Mode, scenario: &str) -> Measurement {
    let name = Column::Ref(mode).name();
    let start = |n: usize| {
        RingReader::start(
            env.fabric,
            &ReaderSpec {
                mode,
                on: (0..n).collect(),
                ring_kib: env.cfg.ring_kib,
                max_secs: 60,
            },
        )
    };
    let fail = |e: String| Measurement::failed(scenario, &name, Status::Failed, e);
    let timed = match start(env.cfg.setups.max(1)).and_then(RingReader::finish) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let look = |n: usize| -> Result<(u64, u64, u64), String> {
        let r = start(n)?;
        std::thread::sleep(Duration::from_millis(200));
        let pid = r.pid();
        let s = (
            procs::rss_kib(pid).unwrap_or(0),
            procs::pss_kib(pid).unwrap_or(0),
            procs::open_fds(pid) as u64,
        );
        r.finish()?;
        Ok(s)
    };
    let n = env.cfg.rest_captures.max(2);
    let (one, many) = match (look(1), look(n)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    let per = |a: u64, b: u64| (b as f64 - a as f64) / (n - 1) as f64;
    let us = |v: &[u64]| median(&v.iter().map(|&x| x as f64 / 1e3).collect::<Vec<_>>());
    let mut m = Measurement::new(scenario, &name);
    let mm = &mut m.metrics;
    mm.insert(
        "ring_open_ms".into(),
        us(&timed.setup_us).unwrap_or(f64::NAN),
    );
    mm.insert(
        "ring_open_max_ms".into(),
        timed
            .setup_us
            .iter()
            .max()
            .map_or(f64::NAN, |&x| x as f64 / 1e3),
    );
    mm.insert(
        "ring_close_ms".into(),
        us(&timed.close_us).unwrap_or(f64::NAN),
    );
    mm.insert(
        "ring_close_max_ms".into(),
        timed
            .close_us
            .iter()
            .max()
            .map_or(f64::NAN, |&x| x as f64 / 1e3),
    );
    mm.insert("setups".into(), timed.setup_us.len() as f64);
    mm.insert("rss_kib_per_capture".into(), per(one.0, many.0));
    mm.insert("pss_kib_per_capture".into(), per(one.1, many.1));
    mm.insert("fds_per_capture".into(), per(one.2, many.2));
    m
}

fn setup_scenario(env: &Env) -> Scenario {
    let cfg = env.cfg;
    let id = "setup".to_string();
    let mut results = vec![
        setup_service(env, Column::Dumpcap, &id),
        setup_service(env, Column::Native, &id),
    ];
    for m in ["v3:1", "v2"] {
        if let Ok(mode) = Mode::parse(m) {
            results.push(setup_reader(env, mode, &id));
        }
    }
    Scenario {
        title: "Set-up time, and cost per capture at rest".into(),
        method: format!(
            "service: {} captures one after another (each closed, its program gone, before the \
             next), time from the upgrade request (written when the TCP connect completes) to \
             the first pcapng byte at the client; median and max. At rest: {} captures open, 1 s \
             after the last one's IDB the service's VmRSS and descriptors minus before, per \
             capture, plus each child's (dumpcap's) VmRSS, PSS (smaps_rollup), RssAnon and \
             descriptors (not counting pipes and sockets the bench itself holds, i.e. inherited \
             through the service, like cargo's jobserver pipe). Reference reader: one process opening {} rings in sequence (socket, \
             PACKET_RX_RING, mmap, bind; wall time each, median and max) and closing them (munmap, \
             close); per ring at rest = (reader with {} rings − reader with 1) / {}",
            cfg.setups,
            cfg.rest_captures,
            cfg.setups,
            cfg.rest_captures.max(2),
            cfg.rest_captures.max(2) - 1
        ),
        columns: cols(&[
            ("first_byte_ms", "1st byte ms"),
            ("first_byte_max_ms", "max ms"),
            ("ring_open_ms", "ring open ms"),
            ("ring_open_max_ms", "open max"),
            ("ring_close_ms", "close ms"),
            ("ring_close_max_ms", "close max"),
            ("rss_kib_per_capture", "RSS KiB/cap"),
            ("pss_kib_per_capture", "PSS KiB/cap"),
            ("child_anon_kib_per_capture", "child anon"),
            ("svc_rss_kib_per_capture", "svc RSS/cap"),
            ("fds_per_capture", "fds/cap"),
            ("svc_fds_per_capture", "svc fds/cap"),
            ("child_fds_per_capture", "child fds"),
            ("children_per_capture", "procs/cap"),
        ]),
        results,
        id,
    }
}

/// The targets, judged on the native engine's row (n/a while it
/// is not built).
fn targets(report: &Report) -> Vec<TargetCheck> {
    let get = |sc: &str, col: &str, k: &str| {
        report
            .find(sc, col)
            .filter(|m| m.status == Status::Ok)
            .and_then(|m| m.get(k))
    };
    let check =
        |name: String, goal: &str, measured: Option<f64>, ok: &dyn Fn(f64) -> bool, how: &str| {
            TargetCheck {
                name,
                target: goal.into(),
                measured,
                met: measured.map(ok),
                how: how.into(),
            }
        };
    // The best (lowest) of the reference reader's columns of a scenario.
    let best_ref = |sc: &str, k: &str| {
        report
            .scenarios
            .iter()
            .find(|s| s.id == sc)?
            .results
            .iter()
            .filter(|m| m.system.starts_with("ref-") && m.status == Status::Ok)
            .filter_map(|m| m.get(k))
            .reduce(f64::min)
    };
    let mut t = Vec::new();
    for rate in [2, 100, 10_000] {
        let sc = format!("latency-{rate}pps");
        t.push(check(
            format!("latency p99, 1 × {rate}/s"),
            "≤ 2 ms",
            get(&sc, "native", "p99_us").map(|v| v / 1e3),
            &|v| v <= 2.0,
            "native, p99 over all rounds, ms",
        ));
    }
    for size in [64, 1514] {
        let sc = format!("fullspeed-{size}");
        t.push(check(
            format!("captured at full speed, {size} B"),
            "≥ 99 %",
            get(&sc, "native", "captured_pct"),
            &|v| v >= 99.0,
            "native, captured / arrived",
        ));
        let native = get(&sc, "native", "cpu_us_per_pkt");
        t.push(check(
            format!("CPU per packet vs dumpcap engine, {size} B"),
            "≤ 0.25×",
            native
                .zip(get(&sc, "dumpcap", "cpu_us_per_pkt"))
                .map(|(a, b)| a / b),
            &|v| v <= 0.25,
            "native / dumpcap, medians",
        ));
        t.push(check(
            format!("CPU per packet vs reference, {size} B"),
            "≤ 2×",
            native
                .zip(best_ref(&sc, "cpu_us_per_pkt"))
                .map(|(a, b)| a / b),
            &|v| v <= 2.0,
            "native / the cheapest reference mode, medians",
        ));
    }
    let dense = report
        .scenarios
        .iter()
        .find(|s| s.id.starts_with("dense-"))
        .map(|s| s.id.clone())
        .unwrap_or_default();
    t.push(check(
        "dense: total CPU vs dumpcap engine".into(),
        "≤ 1×",
        get(&dense, "native", "cpu_pct")
            .zip(get(&dense, "dumpcap", "cpu_pct"))
            .map(|(a, b)| a / b),
        &|v| v <= 1.0,
        "native / dumpcap CPU % (service + children)",
    ));
    t.push(check(
        "dense: latency p99".into(),
        "≤ 5 ms",
        get(&dense, "native", "p99_us").map(|v| v / 1e3),
        &|v| v <= 5.0,
        "native, ms",
    ));
    t.push(check(
        "dense: lost".into(),
        "= 0",
        get(&dense, "native", "lost"),
        &|v| v == 0.0,
        "native, arrived − captured",
    ));
    t.push(check(
        "dense: fairness".into(),
        "≥ 0.8",
        get(&dense, "native", "fairness_min_over_max"),
        &|v| v >= 0.8,
        "native, min/max share of arrived",
    ));
    t.push(check(
        "idle capture wakeups".into(),
        "= 0 /s",
        get("idle", "native", "wakeups_per_s"),
        &|v| v == 0.0,
        "native, context switches per second",
    ));
    t.push(check(
        "1 capture × 100/s CPU".into(),
        "≤ 1 % of a core",
        get("latency-100pps", "native", "cpu_pct"),
        &|v| v <= 1.0,
        "native, steady window",
    ));
    t.push(check(
        "upgrade to first byte vs dumpcap engine".into(),
        "≤ 0.5×",
        get("setup", "native", "first_byte_ms")
            .zip(get("setup", "dumpcap", "first_byte_ms"))
            .map(|(a, b)| a / b),
        &|v| v <= 0.5,
        "medians of sequential set-ups",
    ));
    t
}

/// Runs the configured sections and assembles the report.
pub fn run_engine(cfg: &EngineConfig, paths: &EnginePaths, progress: &dyn Fn(&str)) -> Report {
    let started = Instant::now();
    let mut machine = Machine::probe();
    machine.nofile_limit = super::raise_nofile();
    let mut notes = Vec::new();
    let mut scenarios = Vec::new();
    progress(&format!("{} capture namespaces", cfg.namespaces()));
    let fabric = Fabric::new(cfg.namespaces());
    let services = Services::start(paths);
    if let Err(e) = &services.native {
        notes.push(format!("native engine: {e}"));
    }
    if let Err(e) = &services.dumpcap {
        notes.push(format!("dumpcap engine: {e}"));
    }
    match &fabric {
        Err(e) => notes.push(format!("cannot make the namespaces: {e}")),
        Ok(fabric) => {
            let env = Env {
                cfg,
                fabric,
                services: &services,
            };
            if cfg.runs("latency") {
                for &(rate, secs) in &cfg.latency_points {
                    progress(&format!("latency, 1 × {rate}/s"));
                    scenarios.push(latency_scenario(&env, rate, secs, progress));
                }
            }
            if cfg.runs("fullspeed") {
                for size in [64, 1514] {
                    progress(&format!("full speed, {size} B"));
                    scenarios.push(fullspeed_scenario(&env, size, progress));
                }
            }
            if cfg.runs("tradeoff") {
                let n = cfg.tradeoff_captures;
                progress(&format!("trade-off, {n} × {}/s", cfg.tradeoff_rate));
                let many = Many {
                    id: format!("tradeoff-{n}x{}", cfg.tradeoff_rate),
                    n,
                    rate: cfg.tradeoff_rate,
                    secs: cfg.tradeoff_secs,
                    modes: &cfg.tradeoff_modes,
                    rounds: cfg.tradeoff_rounds,
                };
                scenarios.push(many_scenario(&env, many, progress));
            }
            if cfg.runs("dense") {
                let n = cfg.dense_captures;
                progress(&format!("dense, {n} × {}/s", cfg.dense_rate));
                let many = Many {
                    id: format!("dense-{n}x{}", cfg.dense_rate),
                    n,
                    rate: cfg.dense_rate,
                    secs: cfg.dense_secs,
                    modes: &cfg.modes,
                    rounds: cfg.dense_rounds,
                };
                scenarios.push(many_scenario(&env, many, progress));
            }
            if cfg.runs("idle") {
                progress("idle capture");
                scenarios.push(idle_scenario(&env, progress));
            }
            if cfg.runs("setup") {
                progress("set-up and rest");
                scenarios.push(setup_scenario(&env));
            }
        }
    }
    drop(services);
    drop(fabric);
    // A sender that fell behind its schedule gave that column a lighter
    // load than the others: say so beside the tables.
    for s in &scenarios {
        for m in &s.results {
            if let Some(p) = m.get("sent_pct").filter(|p| *p < SENT_WARN_PCT) {
                notes.push(format!(
                    "{} / {}: the generator sent only {p:.0} % of the packets asked; that column's \
                     figures are for a lighter load than the others'",
                    s.id, m.system
                ));
            }
        }
    }
    let config = serde_json::to_value(cfg).unwrap_or_default();
    let mut report = Report::assemble(started, machine, config, scenarios, notes);
    report.targets = targets(&report);
    report.duration_s = started.elapsed().as_secs_f64();
    report
}
