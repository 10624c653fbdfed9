// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `--compare A B`: starts two backends from shell command lines, connects to both, and runs
//! every workload on A then on B, round after round, so that both see the same condition;
//! then prints per workload the medians, the min-max and the A/B ratio. With `--floor`, the
//! eventfd floor runs once per round too, and each depth-1 round trip is given as a multiple
//! of the floor's.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::process::{kill_process, Pid, Signal};
use serde::Serialize;

use crate::stats::RunResult;
use crate::{
    floor_program, host, private_dir, runner_of, socket_of, spec_of, BenchError, Cli, Host, Result,
    Session, Work,
};

/// How long a backend gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// `a / b`, 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

/// Quotes `s` for `sh`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The program a command line starts, for a label: the first word's file name.
fn program_name(command: &str) -> String {
    command
        .split_whitespace()
        .find(|w| !w.contains('='))
        .map(|w| w.rsplit('/').next().unwrap_or(w).to_string())
        .unwrap_or_else(|| command.to_string())
}

/// A backend started from a command line; SIGTERM, then SIGKILL, when dropped.
#[derive(Debug)]
struct Backend {
    label: String,
    command: String,
    child: Child,
    log: PathBuf,
    socket: PathBuf,
    control: Option<PathBuf>,
}

impl Backend {
    /// Starts `template` with `{socket}` and `{control}` replaced by paths in `dir`.
    fn start(label: &str, template: &str, dir: &Path, tag: &str) -> Result<Backend> {
        let socket = dir.join(format!("{tag}.sock"));
        let control = template
            .contains("{control}")
            .then(|| dir.join(format!("{tag}.ctl")));
        if !template.contains("{socket}") {
            return Err(BenchError::Setup(format!(
                "--compare {label}: the command has no {{socket}} to put the socket path in: {template}"
            )));
        }
        let mut command = template.replace("{socket}", &shell_quote(&socket.to_string_lossy()));
        if let Some(c) = &control {
            command = command.replace("{control}", &shell_quote(&c.to_string_lossy()));
        }
        let log = dir.join(format!("{tag}.log"));
        let io = |what: &str| {
            let what = format!("backend {label}: {what}");
            move |source| BenchError::Io { what, source }
        };
        let out = File::create(&log).map_err(io("creating its log"))?;
        let err = out.try_clone().map_err(io("creating its log"))?;
        eprintln!("starting {label}: {command}");
        // `exec`, so that the pid is the backend's own (for its CPU time).
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {command}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io("starting sh"))?;
        Ok(Backend {
            label: label.to_string(),
            command,
            child,
            log,
            socket,
            control,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n");
        if tail.is_empty() {
            "(no output)".into()
        } else {
            tail
        }
    }

    /// An error for this backend, saying whether it has exited and what it printed.
    fn failed(&mut self, what: &str, cause: Option<&BenchError>) -> BenchError {
        let state = match self.child.try_wait() {
            Ok(Some(st)) => format!("exited ({st})"),
            _ => "still running".into(),
        };
        let cause = cause.map_or_else(String::new, |e| format!(": {e}"));
        BenchError::Backend {
            label: self.label.clone(),
            message: format!(
                "{what}{cause}; the backend {state}; its output ends:\n{}",
                self.log_tail()
            ),
        }
    }

    /// Waits for the backend's sockets: with one connection `{socket}` or `{socket}0`, else
    /// `{socket}0` ..; and the same for the control sockets.
    fn wait_sockets(
        &mut self,
        n: usize,
        timeout: Duration,
    ) -> Result<(Vec<PathBuf>, Option<Vec<PathBuf>>)> {
        let deadline = Instant::now() + timeout;
        let candidates = |base: &Path| -> Vec<Vec<PathBuf>> {
            if n == 1 {
                vec![vec![base.to_path_buf()], vec![socket_of(base, 2, 0)]]
            } else {
                vec![(0..n).map(|i| socket_of(base, n, i)).collect()]
            }
        };
        let ready = |sets: &[Vec<PathBuf>]| -> Option<Vec<PathBuf>> {
            sets.iter().find(|s| s.iter().all(|p| p.exists())).cloned()
        };
        let sockets = candidates(&self.socket);
        let controls = self.control.as_deref().map(candidates);
        loop {
            let s = ready(&sockets);
            let c = controls.as_deref().map(ready);
            match (s, c) {
                (Some(s), None) => return Ok((s, None)),
                (Some(s), Some(Some(c))) => return Ok((s, Some(c))),
                _ => {}
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return Err(self.failed("exited before listening", None));
            }
            if Instant::now() > deadline {
                return Err(self.failed(
                    &format!("no socket at {} within {timeout:?}", self.socket.display()),
                    None,
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Some(pid) = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw) {
            let _ = kill_process(pid, Signal::TERM);
        }
        let end = Instant::now() + TERM_GRACE;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Median, smallest and largest of a set of figures.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    /// The median (mean of the middle two for an even count).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

/// The spread of `v`; all 0 when empty.
pub fn spread(v: &[f64]) -> Spread {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return Spread {
            median: 0.0,
            min: 0.0,
            max: 0.0,
        };
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Spread {
        median,
        min: s[0],
        max: s[n - 1],
    }
}

/// One backend's figures for one workload over the rounds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Side {
    /// Requests per second.
    pub requests_per_second: Spread,
    /// Median latency, microseconds.
    pub p50_us: Spread,
    /// 99th percentile latency, microseconds.
    pub p99_us: Spread,
    /// Backend CPU per request, microseconds.
    pub cpu_us_per_request: Spread,
    /// This tool's own CPU per request (the frontend side), microseconds.
    pub frontend_cpu_us_per_request: Spread,
    /// Failed requests over all rounds.
    pub errors: u64,
}

fn side(runs: &[&RunResult]) -> Side {
    let f = |g: fn(&RunResult) -> f64| spread(&runs.iter().map(|r| g(r)).collect::<Vec<_>>());
    Side {
        requests_per_second: f(|r| r.requests_per_second),
        p50_us: f(|r| r.p50_us),
        p99_us: f(|r| r.p99_us),
        cpu_us_per_request: f(|r| r.backend.map_or(0.0, |b| b.cpu_us_per_request)),
        frontend_cpu_us_per_request: f(|r| r.frontend_cpu_us_per_request),
        errors: runs.iter().map(|r| r.errors).sum(),
    }
}

/// One workload's comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Line {
    /// Workload name.
    pub workload: String,
    /// Requests in flight per connection.
    pub depth: usize,
    /// A's figures.
    pub a: Side,
    /// B's figures.
    pub b: Side,
    /// A's median requests/s over B's.
    pub a_over_b_requests_per_second: f64,
    /// A's median CPU per request over B's.
    pub a_over_b_cpu_per_request: f64,
    /// With the floor, at depth 1 on one connection: each backend's round trip as a multiple
    /// of the floor's (mean round trip, from the requests/s medians), A and B.
    pub round_trip_over_floor: Option<(f64, f64)>,
}

/// Who was compared.
#[derive(Debug, Serialize)]
pub struct Who {
    /// The name in the output.
    pub label: String,
    /// The command as run.
    pub command: String,
    /// Its pid.
    pub pid: u32,
}

/// One measured run of one backend (or of the floor).
#[derive(Debug, Serialize)]
pub struct Entry {
    /// 1-based.
    pub round: usize,
    /// "A", "B" or "floor".
    pub backend: &'static str,
    /// The run.
    pub result: RunResult,
}

/// The JSON report of `--compare`.
#[derive(Debug, Serialize)]
pub struct CompareReport {
    tool: &'static str,
    version: &'static str,
    mode: &'static str,
    /// When it started, UTC.
    pub date_utc: String,
    /// The machine.
    pub host: Host,
    /// As given with --condition.
    pub condition: Option<String>,
    /// /proc/loadavg before and after.
    pub load_before: String,
    /// /proc/loadavg after.
    pub load_after: String,
    /// "gpio" or "i2c".
    pub device: &'static str,
    /// Connections per backend.
    pub connections: usize,
    /// Measured seconds per workload.
    pub seconds: f64,
    /// Warm-up per workload.
    pub warmup_ms: u64,
    /// Rounds.
    pub rounds: usize,
    /// A.
    pub a: Who,
    /// B.
    pub b: Who,
    /// Every run in the order measured.
    pub runs: Vec<Entry>,
    /// Per workload.
    pub summary: Vec<Line>,
    /// The floor over the rounds, with --floor.
    pub floor: Option<Side>,
    /// Workloads not run, and why.
    pub skipped: Vec<String>,
}

impl CompareReport {
    /// Whether any request failed.
    pub fn errors(&self) -> bool {
        self.runs.iter().any(|e| e.result.errors > 0)
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(0),
        u32::try_from(d).unwrap_or(0),
    )
}

/// `secs` since the epoch as "YYYY-MM-DD HH:MM UTC".
fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Runs the comparison.
pub fn run(cli: Cli) -> Result<CompareReport> {
    let runner = runner_of(&cli)?;
    if cli.rounds == 0 || cli.rounds > 100 {
        return Err(BenchError::Setup(format!(
            "--rounds {}: 1..=100",
            cli.rounds
        )));
    }
    if cli.pid.is_some() {
        return Err(BenchError::Setup(
            "--pid with --compare: the tool starts the backends and knows their pids".into(),
        ));
    }
    let n = cli.connections;
    let timeout = Duration::from_millis(cli.connect_timeout_ms);
    let floor = if cli.floor {
        Some(floor_program(cli.floor_program.clone())?)
    } else {
        None
    };
    let (spec, socket, control) = spec_of(cli.device)?;
    if socket.is_some() || control.is_some() {
        return Err(BenchError::Setup(
            "--compare starts the backends: give {socket} and {control} in their commands, not --socket-path or --control-socket".into(),
        ));
    }
    let labels: Vec<String> = if cli.labels.len() == 2 {
        cli.labels.clone()
    } else {
        cli.compare.iter().map(|c| program_name(c)).collect()
    };
    let dir = private_dir("vhost-bench-compare-")?;
    let date_utc = utc(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()));
    let load_before = loadavg();

    let mut backends = Vec::new();
    let mut sessions = Vec::new();
    for (i, tag) in ["a", "b"].iter().enumerate() {
        let label = format!("{} ({})", ["A", "B"][i], labels[i]);
        let mut b = Backend::start(&label, &cli.compare[i], dir.path(), tag)?;
        let (paths, controls) = b.wait_sockets(n, timeout)?;
        let s = Session::open(&spec, &paths, controls, timeout)
            .map_err(|e| b.failed("connecting", Some(&e)))?;
        backends.push(b);
        sessions.push(s);
    }
    let mut skipped = Vec::new();
    let workloads: Vec<Work> = spec
        .workloads
        .iter()
        .copied()
        .filter(|&w| {
            let ok = sessions.iter().all(|s| s.can_run(w));
            if !ok {
                skipped.push(format!(
                    "{}: needs {{control}} in both commands (a control socket)",
                    w.name()
                ));
            }
            ok
        })
        .collect();

    let mut runs = Vec::new();
    for round in 1..=cli.rounds {
        eprintln!("round {round} of {}", cli.rounds);
        for &w in &workloads {
            for (i, (b, s)) in backends.iter_mut().zip(sessions.iter_mut()).enumerate() {
                let r = s
                    .run(&runner, &spec, w, Some(b.pid()))
                    .map_err(|e| b.failed(w.name(), Some(&e)))?;
                runs.push(Entry {
                    round,
                    backend: ["A", "B"][i],
                    result: r,
                });
            }
        }
        if let Some(program) = &floor {
            runs.push(Entry {
                round,
                backend: "floor",
                result: runner.floor(program, dir.path())?,
            });
        }
    }
    drop(sessions);
    let load_after = loadavg();
    let pick = |who: &str, name: &str| -> Vec<&RunResult> {
        runs.iter()
            .filter(|e| e.backend == who && e.result.workload == name)
            .map(|e| &e.result)
            .collect()
    };
    let floor_side = floor
        .as_ref()
        .map(|_| side(&pick("floor", "eventfd-floor")));
    let summary = workloads
        .iter()
        .map(|&w| {
            let a = side(&pick("A", w.name()));
            let b = side(&pick("B", w.name()));
            let round_trip_over_floor = floor_side
                .as_ref()
                .filter(|_| w.depth() == 1 && n == 1)
                .map(|f| {
                    let fr = f.requests_per_second.median;
                    (
                        ratio(fr, a.requests_per_second.median),
                        ratio(fr, b.requests_per_second.median),
                    )
                });
            Line {
                workload: w.name().to_string(),
                depth: w.depth(),
                a_over_b_requests_per_second: ratio(
                    a.requests_per_second.median,
                    b.requests_per_second.median,
                ),
                a_over_b_cpu_per_request: ratio(
                    a.cpu_us_per_request.median,
                    b.cpu_us_per_request.median,
                ),
                a,
                b,
                round_trip_over_floor,
            }
        })
        .collect();
    let who = |i: usize| Who {
        label: labels[i].clone(),
        command: backends[i].command.clone(),
        pid: backends[i].pid(),
    };
    Ok(CompareReport {
        tool: "vhost-bench",
        version: env!("CARGO_PKG_VERSION"),
        mode: "compare",
        date_utc,
        host: host(),
        condition: cli.condition,
        load_before,
        load_after,
        device: spec.device,
        connections: n,
        seconds: cli.seconds,
        warmup_ms: cli.warmup_ms,
        rounds: cli.rounds,
        a: who(0),
        b: who(1),
        runs,
        summary,
        floor: floor_side,
        skipped,
    })
}

/// `v` rounded, thousands separated by spaces.
fn group(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn rps(s: &Spread) -> String {
    format!("{} ({}-{})", group(s.median), group(s.min), group(s.max))
}

fn us(s: &Spread) -> String {
    format!("{:.1} ({:.1}-{:.1})", s.median, s.min, s.max)
}

/// Prints the comparison: the condition, then a Markdown table per workload.
pub fn print(r: &CompareReport) {
    println!("A = {}: {}", r.a.label, r.a.command);
    println!("B = {}: {}", r.b.label, r.b.command);
    println!(
        "{}; {} CPUs, kernel {}; load average {} before, {} after; condition: {}",
        r.date_utc,
        r.host.cpus,
        r.host.kernel,
        r.load_before,
        r.load_after,
        r.condition.as_deref().unwrap_or("not given")
    );
    println!(
        "{} rounds, A then B per workload, {} s each after {} ms warm-up, {} connection(s) each; medians (min-max)",
        r.rounds, r.seconds, r.warmup_ms, r.connections
    );
    println!();
    println!(
        "| workload | A req/s | B req/s | A/B req/s | A p50 µs | B p50 µs | A p99 µs | B p99 µs | A CPU µs/req | B CPU µs/req |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for l in &r.summary {
        let name = if l.depth > 1 {
            format!("{} ({})", l.workload, l.depth)
        } else {
            l.workload.clone()
        };
        println!(
            "| {name} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} |",
            rps(&l.a.requests_per_second),
            rps(&l.b.requests_per_second),
            l.a_over_b_requests_per_second,
            us(&l.a.p50_us),
            us(&l.b.p50_us),
            us(&l.a.p99_us),
            us(&l.b.p99_us),
            us(&l.a.cpu_us_per_request),
            us(&l.b.cpu_us_per_request),
        );
    }
    if let Some(f) = &r.floor {
        println!();
        println!(
            "eventfd floor: {} req/s, p50 {} µs, CPU per round trip: server {} µs, client {} µs",
            rps(&f.requests_per_second),
            us(&f.p50_us),
            us(&f.cpu_us_per_request),
            us(&f.frontend_cpu_us_per_request)
        );
        for l in &r.summary {
            if let Some((a, b)) = l.round_trip_over_floor {
                println!(
                    "{}: round trip (1/req/s, medians) A {a:.2}x the floor's, B {b:.2}x; p50 A {:.2}x, B {:.2}x; this tool's CPU per request A {:.2} µs, B {:.2} µs",
                    l.workload,
                    ratio(l.a.p50_us.median, f.p50_us.median),
                    ratio(l.b.p50_us.median, f.p50_us.median),
                    l.a.frontend_cpu_us_per_request.median,
                    l.b.frontend_cpu_us_per_request.median,
                );
            }
        }
    }
    let errors: u64 = r.summary.iter().map(|l| l.a.errors + l.b.errors).sum();
    if errors > 0 {
        println!("{errors} requests failed (see the JSON report's runs)");
    }
    for s in &r.skipped {
        println!("skipped {s}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_has_median_and_range() {
        let s = spread(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = spread(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert_eq!(spread(&[]).median, 0.0);
    }

    #[test]
    fn dates_are_utc_civil() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        // 2000-02-29 12:34 (a leap day).
        assert_eq!(utc(951_827_640), "2000-02-29 12:34 UTC");
        assert_eq!(utc(1_798_761_600), "2027-01-01 00:00 UTC");
    }

    #[test]
    fn commands_are_quoted_and_named() {
        assert_eq!(shell_quote("/tmp/a b/x'y"), r"'/tmp/a b/x'\''y'");
        assert_eq!(
            program_name("RUST_LOG=off /opt/x/vhost-device-gpio -s {socket}"),
            "vhost-device-gpio"
        );
        assert_eq!(group(1_234_567.4), "1 234 567");
        assert_eq!(group(999.0), "999");
        assert_eq!(ratio(1.0, 0.0), 0.0);
    }
}
