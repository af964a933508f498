//! What a run found, from the merged histogram and counts: a table for people and one JSON
//! object for scripts (`--json`). The JSON is written by hand: flat, numbers and a few
//! strings, so a serialisation library would cost more than it saves.

use std::fmt::Write as _;

use super::config::{Config, Mode};
use super::driver::PhaseStats;

/// The result of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// `redis://HOST:PORT` or `rotor://HOST:PORT`.
    pub target: String,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Open loop: the requested rate in ops/s.
    pub rate: Option<f64>,
    /// Connections used.
    pub connections: usize,
    /// Pipeline depth per connection.
    pub pipeline: usize,
    /// Threads used.
    pub threads: usize,
    /// Key count.
    pub keys: u64,
    /// `uniform` or `zipf(theta)`.
    pub distribution: String,
    /// Value bytes.
    pub value_size: usize,
    /// Share of reads asked for.
    pub read_ratio: f64,
    /// Warmup in seconds.
    pub warmup_s: f64,
    /// Measured window in seconds.
    pub duration_s: f64,
    /// Successful requests completed in the window, per second.
    pub ops_per_sec: f64,
    /// Latency percentiles in microseconds: p50, p90, p99, p99.9, p99.99.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// 99.99th percentile.
    pub p9999_us: f64,
    /// Largest latency seen.
    pub max_us: f64,
    /// Mean latency.
    pub mean_us: f64,
    /// Successful requests (misses included).
    pub ok: u64,
    /// Failed requests: error replies and requests lost with their connection.
    pub errors: u64,
    /// Reads that found nothing.
    pub misses: u64,
    /// Reads completed.
    pub reads: u64,
    /// Writes completed.
    pub writes: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Established connections lost.
    pub disconnects: u64,
    /// Open loop: requests due in the window that never left (the generator fell behind).
    pub unsent: u64,
    /// Replies received in the run, warmup included, prefill excluded.
    pub replies_total: u64,
    /// Keys written by the prefill, if one ran.
    pub prefill_ok: Option<u64>,
    /// The first connection or protocol failure, if any.
    pub first_failure: Option<String>,
}

impl Report {
    /// Builds the report of a run from its measured phase (and its prefill, if any).
    pub fn new(config: &Config, stats: &PhaseStats, prefill: Option<&PhaseStats>) -> Self {
        let h = &stats.histogram;
        let empty = h.is_empty();
        let us = |ns: u64| if empty { 0.0 } else { ns as f64 / 1000.0 };
        let q = |quantile: f64| us(h.value_at_quantile(quantile));
        let seconds = stats.measured.as_secs_f64();
        // Throughput counts what succeeded: errors can be cheap and would flatter a server.
        let done = stats.counts.ok;
        let (mode, rate) = match config.mode {
            Mode::Closed => ("closed", None),
            Mode::Open { rate } => ("open", Some(rate)),
        };
        Self {
            target: config.target.to_string(),
            mode,
            rate,
            connections: config.connections,
            pipeline: config.pipeline,
            threads: config.threads,
            keys: config.keys,
            distribution: config.distribution.to_string(),
            value_size: config.value_size,
            read_ratio: config.read_ratio,
            warmup_s: config.warmup.as_secs_f64(),
            duration_s: seconds,
            ops_per_sec: if seconds > 0.0 {
                done as f64 / seconds
            } else {
                0.0
            },
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            p9999_us: q(0.9999),
            max_us: us(h.max()),
            mean_us: if empty { 0.0 } else { h.mean() / 1000.0 },
            ok: stats.counts.ok,
            errors: stats.counts.errors,
            misses: stats.counts.misses,
            reads: stats.counts.reads,
            writes: stats.counts.writes,
            connect_failures: stats.connect_failures,
            disconnects: stats.disconnects,
            unsent: stats.unsent,
            replies_total: stats.replies_total,
            prefill_ok: prefill.map(|p| p.counts.ok),
            first_failure: stats
                .first_failure
                .clone()
                .or_else(|| prefill.and_then(|p| p.first_failure.clone())),
        }
    }

    /// The report as an aligned, human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let mode = match self.rate {
            Some(rate) => format!("open loop at {rate:.0} ops/s"),
            None => "closed loop".into(),
        };
        let _ = writeln!(s, "target       {}", self.target);
        let _ = writeln!(
            s,
            "load         {mode}, {} connections x pipeline {}, {} thread(s)",
            self.connections, self.pipeline, self.threads
        );
        let _ = writeln!(
            s,
            "workload     {} keys {}, {}-byte values, {:.0}% reads",
            self.keys,
            self.distribution,
            self.value_size,
            self.read_ratio * 100.0
        );
        let _ = writeln!(
            s,
            "window       {:.2} s after {:.2} s warmup",
            self.duration_s, self.warmup_s
        );
        if let Some(n) = self.prefill_ok {
            let _ = writeln!(s, "prefill      {n} keys written");
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:>12} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "ops/s", "p50 us", "p90 us", "p99 us", "p99.9 us", "p99.99 us", "max us", "mean us"
        );
        let _ = writeln!(
            s,
            "{:>12.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            self.ops_per_sec,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.p9999_us,
            self.max_us,
            self.mean_us
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "ok {} (reads {}, writes {}, misses {})  errors {}  connect failures {}  disconnects {}",
            self.ok,
            self.reads,
            self.writes,
            self.misses,
            self.errors,
            self.connect_failures,
            self.disconnects
        );
        if self.rate.is_some() {
            let _ = writeln!(s, "unsent (generator behind schedule) {}", self.unsent);
        }
        if let Some(f) = &self.first_failure {
            let _ = writeln!(s, "first failure: {f}");
        }
        s
    }

    /// The report as one JSON object on one line.
    pub fn json(&self) -> String {
        let mut j = JsonObject::default();
        j.string("target", &self.target);
        j.string("mode", self.mode);
        j.number("rate", self.rate);
        j.int("connections", self.connections as u64);
        j.int("pipeline", self.pipeline as u64);
        j.int("threads", self.threads as u64);
        j.int("keys", self.keys);
        j.string("distribution", &self.distribution);
        j.int("value_size", self.value_size as u64);
        j.number("read_ratio", Some(self.read_ratio));
        j.number("warmup_s", Some(self.warmup_s));
        j.number("duration_s", Some(self.duration_s));
        j.number("ops_per_sec", Some(self.ops_per_sec));
        j.number("p50_us", Some(self.p50_us));
        j.number("p90_us", Some(self.p90_us));
        j.number("p99_us", Some(self.p99_us));
        j.number("p999_us", Some(self.p999_us));
        j.number("p9999_us", Some(self.p9999_us));
        j.number("max_us", Some(self.max_us));
        j.number("mean_us", Some(self.mean_us));
        j.int("ok", self.ok);
        j.int("errors", self.errors);
        j.int("misses", self.misses);
        j.int("reads", self.reads);
        j.int("writes", self.writes);
        j.int("connect_failures", self.connect_failures);
        j.int("disconnects", self.disconnects);
        j.int("unsent", self.unsent);
        j.int("replies_total", self.replies_total);
        match self.prefill_ok {
            Some(n) => j.int("prefill_ok", n),
            None => j.number("prefill_ok", None),
        }
        match &self.first_failure {
            Some(f) => j.string("first_failure", f),
            None => j.number("first_failure", None),
        }
        j.finish()
    }
}

/// A flat JSON object under construction.
#[derive(Default)]
struct JsonObject {
    out: String,
}

impl JsonObject {
    fn key(&mut self, key: &str) {
        self.out.push(if self.out.is_empty() { '{' } else { ',' });
        push_json_string(&mut self.out, key);
        self.out.push(':');
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_string(&mut self.out, value);
    }

    fn int(&mut self, key: &str, value: u64) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }

    /// A number, or `null` when absent or not finite (JSON has no NaN).
    fn number(&mut self, key: &str, value: Option<f64>) {
        self.key(key);
        match value {
            Some(v) if v.is_finite() => {
                let _ = write!(self.out, "{}", (v * 1000.0).round() / 1000.0);
            }
            _ => self.out.push_str("null"),
        }
    }

    fn finish(mut self) -> String {
        if self.out.is_empty() {
            self.out.push('{');
        }
        self.out.push('}');
        self.out
    }
}

fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::config::{Distribution, TargetSpec};
    use crate::loadgen::driver::Counts;
    use hdrhistogram::Histogram;
    use std::time::Duration;

    fn sample() -> Report {
        let config = Config {
            target: TargetSpec::Redis("127.0.0.1:6390".parse().unwrap()),
            connections: 50,
            pipeline: 16,
            threads: 1,
            mode: Mode::Closed,
            keys: 100_000,
            distribution: Distribution::Zipf { theta: 0.99 },
            value_size: 100,
            read_ratio: 0.9,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(2),
            seed: 1,
            prefill: false,
            rotor: Default::default(),
        };
        let mut histogram = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
        for us in 1..=1000u64 {
            histogram.record(us * 1000).unwrap();
        }
        let stats = PhaseStats {
            histogram,
            counts: Counts {
                ok: 990,
                misses: 5,
                errors: 10,
                reads: 900,
                writes: 100,
            },
            connect_failures: 1,
            disconnects: 0,
            unsent: 0,
            first_failure: Some("refused \"here\"\n".into()),
            measured: Duration::from_secs(2),
            replies_total: 1500,
        };
        Report::new(&config, &stats, None)
    }

    #[test]
    fn json_has_every_field_and_parses() {
        let report = sample();
        let text = report.json();
        assert!(!text.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for field in [
            "ops_per_sec",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "p9999_us",
            "max_us",
            "ok",
            "errors",
        ] {
            assert!(v[field].is_number(), "{field} in {text}");
        }
        assert_eq!(v["ok"], 990);
        assert_eq!(v["errors"], 10);
        assert_eq!(v["ops_per_sec"], 495.0);
        let p50 = v["p50_us"].as_f64().unwrap();
        assert!((499.0..=501.0).contains(&p50), "{p50}");
        let max = v["max_us"].as_f64().unwrap();
        assert!((999.0..=1001.0).contains(&max), "{max}");
        assert_eq!(v["target"], "redis://127.0.0.1:6390");
        assert_eq!(v["distribution"], "zipf(0.99)");
        assert_eq!(v["first_failure"], "refused \"here\"\n");
        assert!(v["rate"].is_null());
    }

    #[test]
    fn table_shows_throughput_and_percentiles() {
        let table = sample().table();
        for needle in [
            "ops/s",
            "p99.99 us",
            "495",
            "errors 10",
            "connect failures 1",
        ] {
            assert!(table.contains(needle), "{needle} missing from\n{table}");
        }
    }
}
