//! The benchmark report: what was measured, how, on which machine, and
//! against which targets; printed as tables and written as JSON.
//!
//! Every measurement carries its method as text, so no number travels
//! without the way it was obtained. This module formats and serialises
//! only; it measures nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Bumped when the JSON layout changes incompatibly.
pub const SCHEMA: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
    Unavailable,
}

/// One system measured in one scenario.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    /// Scenario id, e.g. `throughput-1x1500`.
    pub scenario: String,
    /// `raw-relay`, `packetflix` or `websocat`.
    pub system: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    /// Named values; units are in the names (`mb_per_s`, `p99_us`, …).
    pub metrics: BTreeMap<String, f64>,
    /// metric / the raw baseline's same metric, where that means something.
    pub vs_baseline: BTreeMap<String, f64>,
    /// Per-round values behind a median.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub rounds: BTreeMap<String, Vec<f64>>,
}

impl Measurement {
    pub fn new(scenario: &str, system: &str) -> Self {
        Measurement {
            scenario: scenario.into(),
            system: system.into(),
            status: Status::Ok,
            error: None,
            metrics: BTreeMap::new(),
            vs_baseline: BTreeMap::new(),
            rounds: BTreeMap::new(),
        }
    }

    pub fn failed(scenario: &str, system: &str, status: Status, why: String) -> Self {
        let mut m = Self::new(scenario, system);
        m.status = status;
        m.error = Some(why);
        m
    }

    pub fn get(&self, metric: &str) -> Option<f64> {
        self.metrics.get(metric).copied()
    }
}

/// A scenario: its title, its method, and a row per system.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Scenario {
    pub id: String,
    pub title: String,
    pub method: String,
    /// Metric columns to print, in order: (metric key, column header).
    pub columns: Vec<(String, String)>,
    pub results: Vec<Measurement>,
}

/// One of the targets and how this run stands against it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetCheck {
    pub name: String,
    pub target: String,
    pub measured: Option<f64>,
    /// `None`: could not be judged (a system was unavailable or failed).
    pub met: Option<bool>,
    pub how: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub mem_total_mib: u64,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub nofile_limit: u64,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_mib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024;
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .into(),
            mem_total_mib,
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
            nofile_limit: 0,
        }
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    pub started_unix: u64,
    pub duration_s: f64,
    pub machine: Machine,
    pub config: serde_json::Value,
    pub scenarios: Vec<Scenario>,
    pub targets: Vec<TargetCheck>,
    pub notes: Vec<String>,
}

impl Report {
    /// A report of `scenarios` from a run that began at `started`, without
    /// targets (the caller judges them on the report). Values that are not
    /// finite (a ratio over a run shorter than a clock tick is 0/0) are
    /// dropped: absent rather than NaN, which JSON cannot carry.
    pub fn assemble(
        started: std::time::Instant,
        mut machine: Machine,
        config: serde_json::Value,
        mut scenarios: Vec<Scenario>,
        notes: Vec<String>,
    ) -> Report {
        for m in scenarios.iter_mut().flat_map(|s| s.results.iter_mut()) {
            m.metrics.retain(|_, v| v.is_finite());
            m.vs_baseline.retain(|_, v| v.is_finite());
            for vals in m.rounds.values_mut() {
                vals.retain(|v| v.is_finite());
            }
        }
        machine.loadavg_end = loadavg();
        Report {
            schema: SCHEMA,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .saturating_sub(started.elapsed().as_secs()),
            duration_s: started.elapsed().as_secs_f64(),
            machine,
            config,
            scenarios,
            targets: vec![],
            notes,
        }
    }

    pub fn find(&self, scenario: &str, system: &str) -> Option<&Measurement> {
        self.scenarios
            .iter()
            .find(|s| s.id == scenario)?
            .results
            .iter()
            .find(|m| m.system == system)
    }

    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text + "\n")
    }

    /// The human-readable tables.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let m = &self.machine;
        let _ = writeln!(
            o,
            "machine: {} × {} cores, {} MiB, Linux {}; load {} → {}; run took {:.0} s",
            m.cpu_model,
            m.cores,
            m.mem_total_mib,
            m.kernel,
            m.loadavg_start,
            m.loadavg_end,
            self.duration_s
        );
        for s in &self.scenarios {
            let _ = writeln!(o, "\n== {} [{}]", s.title, s.id);
            let _ = writeln!(o, "   method: {}", s.method);
            let mut header = format!("   {:<11}", "system");
            for (_, h) in &s.columns {
                let _ = write!(header, " {:>12}", h);
            }
            let _ = writeln!(o, "{header}");
            for r in &s.results {
                let mut line = format!("   {:<11}", r.system);
                if r.status != Status::Ok {
                    let why = r.error.as_deref().unwrap_or("");
                    let _ = writeln!(o, "{line} {:?}: {}", r.status, why);
                    continue;
                }
                for (key, _) in &s.columns {
                    let v = key
                        .strip_prefix("vs:")
                        .map(|k| r.vs_baseline.get(k))
                        .unwrap_or_else(|| r.metrics.get(key.as_str()));
                    match v {
                        Some(v) => {
                            let _ = write!(line, " {:>12}", fmt_num(*v));
                        }
                        None => {
                            let _ = write!(line, " {:>12}", "-");
                        }
                    }
                }
                let _ = writeln!(o, "{line}");
            }
        }
        let _ = writeln!(o, "\n== Targets");
        for t in &self.targets {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "n/a",
            };
            let measured = t.measured.map(fmt_num).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                o,
                "   [{verdict:>6}] {:<44} target {:<14} measured {:>10}  ({})",
                t.name, t.target, measured, t.how
            );
        }
        for n in &self.notes {
            let _ = writeln!(o, "note: {n}");
        }
        o
    }
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.1 {
        format!("{v:.3}")
    } else {
        format!("{v:.2e}")
    }
}
