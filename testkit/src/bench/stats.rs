//! Order statistics for the report: nearest-rank percentiles and medians.
//! Pure functions on slices; the only place rounding rules live.

/// Nearest-rank percentile (`p` in 0..=100) of sorted values; `None` if
/// there are none. p100 is the maximum.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    // The epsilon keeps p99.9 of 1000 values at rank 999 despite 0.999
    // not being exact in binary.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Median of unsorted floats (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Latency summary in microseconds, from nanosecond samples (sorted here).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

pub fn latency_summary(samples: &mut [u64]) -> Option<LatencySummary> {
    samples.sort_unstable();
    let us = |p: f64| percentile(samples, p).map(|v| v as f64 / 1000.0);
    let sum: u128 = samples.iter().map(|&v| v as u128).sum();
    Some(LatencySummary {
        count: samples.len() as u64,
        p50_us: us(50.0)?,
        p99_us: us(99.0)?,
        p999_us: us(99.9)?,
        max_us: us(100.0)?,
        mean_us: sum as f64 / samples.len() as f64 / 1000.0,
    })
}
