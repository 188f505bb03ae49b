//! What a run measured: latencies of successful uploads, errors by kind, and the
//! report (a Markdown row or one JSON line).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// One worker's record.
#[derive(Default)]
pub struct Recorder {
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn ok(&mut self, took: Duration) {
        self.latencies_us.push(took.as_micros() as u64);
    }

    pub fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub fn merge(&mut self, other: Recorder) {
        self.latencies_us.extend(other.latencies_us);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    pub fn successes(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    /// Latency percentiles in milliseconds: p50, p90, p99, max.
    pub fn percentiles(&mut self) -> [f64; 4] {
        self.latencies_us.sort_unstable();
        let v = &self.latencies_us;
        let at = |q: f64| -> f64 {
            if v.is_empty() {
                return f64::NAN;
            }
            // nearest rank
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1] as f64 / 1000.0
        };
        [at(0.50), at(0.90), at(0.99), at(1.0)]
    }

    pub fn into_errors(self) -> BTreeMap<String, u64> {
        self.errors
    }
}

#[derive(Serialize)]
pub struct Report {
    pub label: String,
    pub protocol: String,
    pub target: String,
    pub size: u64,
    pub concurrency: usize,
    pub connections: usize,
    pub uploads: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    pub uploads_per_s: f64,
    pub mb_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Uploads (successful or not) during the unmeasured warm-up.
    pub warmup_uploads: u64,
}

impl Report {
    pub fn markdown_header() -> &'static str {
        "| label | protocol | size | conc | uploads | errors | uploads/s | MB/s | p50 ms | p90 ms | p99 ms | max ms |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    }

    pub fn markdown_row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
            self.label,
            self.protocol,
            self.size,
            self.concurrency,
            self.uploads,
            self.errors,
            self.uploads_per_s,
            self.mb_per_s,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut r = Recorder::default();
        for ms in 1..=100 {
            r.ok(Duration::from_millis(ms));
        }
        assert_eq!(r.percentiles(), [50.0, 90.0, 99.0, 100.0]);
    }
}
