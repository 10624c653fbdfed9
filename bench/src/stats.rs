// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Latency samples, per-run results, and the backend's cost read from `/proc/<pid>`.

use std::time::Duration;

use serde::Serialize;

/// Errors reading `/proc/<pid>`.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (the process is gone, or not ours to read).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file did not have the expected shape.
    #[error("cannot parse {0}")]
    Parse(String),
}

/// What `/proc/<pid>` says about the backend at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ProcSample {
    /// User + system CPU time so far, in seconds.
    pub cpu_seconds: f64,
    /// Peak resident set size (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// Current resident set size (VmRSS), KiB.
    pub rss_kib: u64,
    /// Threads.
    pub threads: u64,
}

impl ProcSample {
    /// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
    pub fn read(pid: u32) -> Result<ProcSample, ProcError> {
        let read = |name: &str| {
            let path = format!("/proc/{pid}/{name}");
            std::fs::read_to_string(&path).map_err(|source| ProcError::Read { path, source })
        };
        let stat = read("stat")?;
        // Fields after the command name, which is in parentheses and may contain spaces.
        let rest = stat
            .rfind(')')
            .map(|i| &stat[i + 1..])
            .ok_or_else(|| ProcError::Parse(format!("/proc/{pid}/stat")))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest starts at field 3 (state); utime is field 14, stime 15.
        let tick = |i: usize| -> Result<u64, ProcError> {
            fields
                .get(i)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ProcError::Parse(format!("/proc/{pid}/stat field {}", i + 3)))
        };
        let ticks = tick(11)? + tick(12)?;
        let hz = rustix::param::clock_ticks_per_second();
        let status = read("status")?;
        let kib = |key: &str| -> Result<u64, ProcError> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| ProcError::Parse(format!("/proc/{pid}/status {key}")))
        };
        Ok(ProcSample {
            cpu_seconds: to_f64(ticks) / to_f64(hz.max(1)),
            peak_rss_kib: kib("VmHWM:")?,
            rss_kib: kib("VmRSS:")?,
            threads: kib("Threads:")?,
        })
    }
}

/// u64 to f64 for statistics (exact below 2^53, which every count here is).
pub fn to_f64(v: u64) -> f64 {
    // u32 halves convert losslessly; no `as`.
    let hi = u32::try_from(v >> 32).unwrap_or(u32::MAX);
    let lo = u32::try_from(v & 0xffff_ffff).unwrap_or(u32::MAX);
    f64::from(hi) * 4_294_967_296.0 + f64::from(lo)
}

/// Latency samples of one run, in nanoseconds.
#[derive(Debug, Default)]
pub struct Samples {
    ns: Vec<u64>,
}

impl Samples {
    /// Adds one.
    pub fn push(&mut self, d: Duration) {
        self.ns
            .push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds another run's samples.
    pub fn merge(&mut self, other: Samples) {
        self.ns.extend(other.ns);
    }

    /// The p-th percentile (nearest rank), microseconds; 0 without samples.
    pub fn percentile_us(&mut self, p: u32) -> f64 {
        if self.ns.is_empty() {
            return 0.0;
        }
        self.ns.sort_unstable();
        let n = self.ns.len();
        // Nearest rank: ceil(p/100 * n), 1-based.
        let rank = (n * usize::try_from(p.min(100)).unwrap_or(100)).div_ceil(100);
        let i = rank.clamp(1, n) - 1;
        to_f64(self.ns[i]) / 1000.0
    }

    /// The largest, microseconds.
    pub fn max_us(&self) -> f64 {
        self.ns.iter().max().map_or(0.0, |&v| to_f64(v) / 1000.0)
    }
}

/// The backend's cost over one run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BackendCost {
    /// CPU seconds (user + system) the backend used during the run.
    pub cpu_seconds: f64,
    /// Backend CPU time per request, microseconds.
    pub cpu_us_per_request: f64,
    /// Peak RSS of the backend process so far (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// RSS at the end of the run, KiB.
    pub rss_kib: u64,
    /// Threads at the end of the run.
    pub threads: u64,
}

/// One measured run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunResult {
    /// Workload name.
    pub workload: String,
    /// Connections (frontends) driven at once.
    pub connections: usize,
    /// Requests kept in flight per connection.
    pub depth: usize,
    /// Requests completed: virtio-gpio messages, or i2c transfers (one `i2c_transfer()`,
    /// i.e. a FAIL_NEXT group of `chains` descriptor chains in all).
    pub requests: u64,
    /// Descriptor chains completed.
    pub chains: u64,
    /// Payload bytes moved (i2c data bytes read or written), 0 for gpio.
    pub bytes: u64,
    /// Requests answered with an error status or a wrong used length or value.
    pub errors: u64,
    /// Wall time of the measured part.
    pub seconds: f64,
    /// requests / seconds.
    pub requests_per_second: f64,
    /// requests / seconds / connections.
    pub requests_per_second_per_connection: f64,
    /// bytes / seconds.
    pub bytes_per_second: f64,
    /// Median latency, microseconds (submit to used element seen by the frontend).
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Largest latency, microseconds.
    pub max_us: f64,
    /// The backend's cost, with `--pid`.
    pub backend: Option<BackendCost>,
    /// CPU time of the measuring process itself (all its threads: the frontend side) per
    /// request, microseconds; 0 if `/proc/self` could not be read.
    pub frontend_cpu_us_per_request: f64,
}

impl RunResult {
    /// Sets the measuring process's CPU time over the run.
    pub fn with_own_cpu(mut self, seconds: f64) -> RunResult {
        if self.requests > 0 {
            self.frontend_cpu_us_per_request = seconds.max(0.0) * 1e6 / to_f64(self.requests);
        }
        self
    }
}

/// CPU seconds of this process so far (0 if `/proc/self` cannot be read).
pub fn own_cpu_seconds() -> f64 {
    ProcSample::read(std::process::id()).map_or(0.0, |s| s.cpu_seconds)
}

/// What a workload counted, before it becomes a [`RunResult`].
#[derive(Debug, Default)]
pub struct Tally {
    /// Completed requests.
    pub requests: u64,
    /// Completed chains.
    pub chains: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Errors.
    pub errors: u64,
    /// Latencies.
    pub samples: Samples,
}

impl Tally {
    /// Adds another connection's tally.
    pub fn merge(&mut self, o: Tally) {
        self.requests += o.requests;
        self.chains += o.chains;
        self.bytes += o.bytes;
        self.errors += o.errors;
        self.samples.merge(o.samples);
    }
}

/// Builds the result of a run.
pub fn result(
    workload: &str,
    connections: usize,
    depth: usize,
    mut t: Tally,
    elapsed: Duration,
    before: Option<ProcSample>,
    after: Option<ProcSample>,
) -> RunResult {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rps = to_f64(t.requests) / secs;
    let conns = connections.max(1);
    let backend = match (before, after) {
        (Some(b), Some(a)) => {
            let cpu = (a.cpu_seconds - b.cpu_seconds).max(0.0);
            Some(BackendCost {
                cpu_seconds: cpu,
                cpu_us_per_request: if t.requests == 0 {
                    0.0
                } else {
                    cpu * 1e6 / to_f64(t.requests)
                },
                peak_rss_kib: a.peak_rss_kib,
                rss_kib: a.rss_kib,
                threads: a.threads,
            })
        }
        _ => None,
    };
    RunResult {
        workload: workload.to_string(),
        connections: conns,
        depth,
        requests: t.requests,
        chains: t.chains,
        bytes: t.bytes,
        errors: t.errors,
        seconds: secs,
        requests_per_second: rps,
        requests_per_second_per_connection: rps / to_f64(u64::try_from(conns).unwrap_or(1)),
        bytes_per_second: to_f64(t.bytes) / secs,
        p50_us: t.samples.percentile_us(50),
        p99_us: t.samples.percentile_us(99),
        max_us: t.samples.max_us(),
        backend,
        frontend_cpu_us_per_request: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut s = Samples::default();
        for us in (1..=100).rev() {
            s.push(Duration::from_micros(us));
        }
        assert_eq!(s.percentile_us(50), 50.0);
        assert_eq!(s.percentile_us(99), 99.0);
        assert_eq!(s.percentile_us(100), 100.0);
        assert_eq!(s.max_us(), 100.0);
        assert_eq!(Samples::default().percentile_us(50), 0.0);
    }

    #[test]
    fn to_f64_is_exact_for_counts() {
        assert_eq!(to_f64(0), 0.0);
        assert_eq!(to_f64(1 << 40), 1099511627776.0);
        assert_eq!(to_f64(123_456_789), 123_456_789.0);
    }

    #[test]
    fn proc_sample_of_this_process() {
        let s = ProcSample::read(std::process::id()).unwrap();
        assert!(s.threads >= 1);
        assert!(s.peak_rss_kib >= s.rss_kib && s.rss_kib > 0);
        assert!(matches!(
            ProcSample::read(u32::MAX),
            Err(ProcError::Read { .. })
        ));
    }

    #[test]
    fn result_divides_by_time_and_connections() {
        let mut t = Tally {
            requests: 1000,
            bytes: 4000,
            ..Tally::default()
        };
        for _ in 0..1000 {
            t.samples.push(Duration::from_micros(10));
        }
        let r = result("x", 4, 1, t, Duration::from_secs(2), None, None).with_own_cpu(0.5);
        assert_eq!(r.requests_per_second, 500.0);
        assert_eq!(r.requests_per_second_per_connection, 125.0);
        assert_eq!(r.bytes_per_second, 2000.0);
        assert_eq!(r.p50_us, 10.0);
        assert!(r.backend.is_none());
        assert_eq!(r.frontend_cpu_us_per_request, 500.0);
    }
}
