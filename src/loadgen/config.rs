//! What a benchmark run is asked to do: the target, the load shape and the workload, parsed
//! and validated once before any thread starts, so the hot loop never checks a flag.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::BenchError;

/// One benchmark run, fully validated. Built by the `rotor-bench` binary from its flags.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The server to measure and the protocol it speaks.
    pub target: TargetSpec,
    /// Connections opened in total, spread over the threads.
    pub connections: usize,
    /// Requests each connection keeps in flight (closed loop) or may have in flight at most
    /// (open loop).
    pub pipeline: usize,
    /// Threads driving the connections; each owns `connections / threads` of them.
    pub threads: usize,
    /// Closed loop, or open loop at a fixed rate.
    pub mode: Mode,
    /// Number of distinct keys, `0..keys`.
    pub keys: u64,
    /// How keys are drawn.
    pub distribution: Distribution,
    /// Bytes of every written value.
    pub value_size: usize,
    /// Share of operations that are reads, in `0.0..=1.0`.
    pub read_ratio: f64,
    /// Time run before measuring, so connections and caches settle.
    pub warmup: Duration,
    /// Time measured after the warmup; the run stops by itself at warmup + duration.
    pub duration: Duration,
    /// Seed of every random choice; equal seeds give equal request streams per thread.
    pub seed: u64,
    /// Write every key once before the warmup, so reads hit.
    pub prefill: bool,
    /// Rotor targets only: shard awareness and how writes pick their context.
    pub rotor: super::rotor::RotorOptions,
}

/// The protocol and address of the server under test, from `--target SCHEME://HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// A Rotor node speaking the Rotor wire protocol.
    Rotor(SocketAddr),
    /// A Redis-compatible server speaking RESP (GET/SET).
    Redis(SocketAddr),
}

/// How requests are issued.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Every connection keeps `pipeline` requests in flight and sends the next as soon as a
    /// reply arrives: measures peak throughput.
    Closed,
    /// Requests are due at a fixed total rate (ops/s) whatever the server does; latency is
    /// measured from the time a request was due, not sent, so a stalled server is charged for
    /// the requests it delayed (coordinated-omission correction).
    Open {
        /// Total requests per second over all threads.
        rate: f64,
    },
}

/// How keys are drawn from `0..keys`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Zipfian with skew `theta` in `(0, 1)`: key 0 is the hottest.
    Zipf {
        /// Skew; YCSB's default is 0.99.
        theta: f64,
    },
}

impl Config {
    /// Checks the combination of values; the binary calls it before running.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |msg: String| Err(BenchError::Config(msg));
        if self.connections == 0 {
            return bad("--connections must be at least 1".into());
        }
        if self.threads == 0 || self.threads > self.connections {
            return bad(format!(
                "--threads must be between 1 and --connections ({})",
                self.connections
            ));
        }
        if self.pipeline == 0 || self.pipeline > super::PIPELINE_MAX {
            return bad(format!(
                "--pipeline must be between 1 and {}",
                super::PIPELINE_MAX
            ));
        }
        if self.keys == 0 {
            return bad("--keys must be at least 1".into());
        }
        if self.value_size > super::VALUE_BYTES_MAX {
            return bad(format!(
                "--value-size must be at most {}",
                super::VALUE_BYTES_MAX
            ));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return bad("--read-ratio must be between 0 and 1".into());
        }
        if self.duration.is_zero() {
            return bad("--duration must be positive".into());
        }
        if let Distribution::Zipf { theta } = self.distribution {
            if !(theta > 0.0 && theta < 1.0) {
                return bad("--zipf-theta must be strictly between 0 and 1".into());
            }
        }
        if let Mode::Open { rate } = self.mode {
            if !(rate.is_finite() && rate > 0.0) {
                return bad("--rate must be a positive number of ops/s".into());
            }
        }
        Ok(())
    }
}

impl TargetSpec {
    /// Parses `rotor://HOST:PORT` or `redis://HOST:PORT`, resolving HOST once.
    pub fn parse(text: &str) -> Result<Self, BenchError> {
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            BenchError::Config(format!(
                "target {text:?}: expected rotor://HOST:PORT or redis://HOST:PORT"
            ))
        })?;
        let rest = rest.trim_end_matches('/');
        let addr = rest
            .to_socket_addrs()
            .map_err(|e| BenchError::Config(format!("target {text:?}: {e}")))?
            .next()
            .ok_or_else(|| BenchError::Config(format!("target {text:?}: no address")))?;
        match scheme {
            "rotor" => Ok(Self::Rotor(addr)),
            "redis" => Ok(Self::Redis(addr)),
            other => Err(BenchError::Config(format!(
                "target {text:?}: unknown scheme {other:?} (rotor or redis)"
            ))),
        }
    }

    /// The address to connect to.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Self::Rotor(a) | Self::Redis(a) => *a,
        }
    }
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rotor(a) => write!(f, "rotor://{a}"),
            Self::Redis(a) => write!(f, "redis://{a}"),
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uniform => f.write_str("uniform"),
            Self::Zipf { theta } => write!(f, "zipf({theta})"),
        }
    }
}

/// Parses a duration such as `10s`, `500ms`, `1.5s`, `2m`, `250us` or a bare number of
/// seconds. Rejects negative, non-finite and absurdly long values.
pub fn parse_duration(text: &str) -> Result<Duration, BenchError> {
    let err = || BenchError::Config(format!("duration {text:?}: expected e.g. 10s, 500ms, 2m"));
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| err())?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    let seconds = value * seconds_per_unit;
    // A day bounds every run; it also keeps the f64 -> Duration conversion in range.
    if !seconds.is_finite() || !(0.0..=86_400.0).contains(&seconds) {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expect: Option<Duration>) {
        assert_eq!(parse_duration(text).ok(), expect, "{text:?}");
    }

    #[test]
    fn durations_parse_with_units() {
        check("10s", Some(Duration::from_secs(10)));
        check("2s", Some(Duration::from_secs(2)));
        check("500ms", Some(Duration::from_millis(500)));
        check("1.5s", Some(Duration::from_millis(1500)));
        check("250us", Some(Duration::from_micros(250)));
        check("2m", Some(Duration::from_secs(120)));
        check("3", Some(Duration::from_secs(3)));
        check("0s", Some(Duration::ZERO));
        check(" 7s ", Some(Duration::from_secs(7)));
    }

    #[test]
    fn durations_reject_garbage() {
        for bad in [
            "", "s", "ten", "10x", "-1s", "1e400s", "1..2s", "100000h", "ms10",
        ] {
            check(bad, None);
        }
    }

    #[test]
    fn targets_parse_scheme_and_address() {
        assert_eq!(
            TargetSpec::parse("redis://127.0.0.1:6390").unwrap(),
            TargetSpec::Redis("127.0.0.1:6390".parse().unwrap())
        );
        assert_eq!(
            TargetSpec::parse("rotor://127.0.0.1:7000/").unwrap(),
            TargetSpec::Rotor("127.0.0.1:7000".parse().unwrap())
        );
        for bad in [
            "127.0.0.1:6390",
            "http://127.0.0.1:80",
            "redis://nohost",
            "redis://",
        ] {
            assert!(TargetSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
