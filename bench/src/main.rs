// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-bench`: measures a virtio-gpio or virtio-i2c vhost-user backend over its socket,
//! playing QEMU and the guest driver with `test_kit::frontend::TestFrontend`.

mod gpio;
mod i2c;
mod stats;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use test_kit::frontend::{FrontendError, FrontendOptions, TestFrontend};

use stats::{ProcSample, RunResult, Tally};

/// How long any single answer may take before the run is called stalled.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The vhost-user side failed.
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    /// Connecting to `--socket-path` failed.
    #[error("connection {index} ({path}): {source}")]
    Connect {
        /// Which connection.
        index: usize,
        /// The socket.
        path: String,
        /// The error.
        #[source]
        source: FrontendError,
    },
    /// The device is not what the workload needs.
    #[error("{0}")]
    Setup(String),
    /// The backend answered something unexpected.
    #[error("{0}")]
    Protocol(String),
    /// Requests stopped completing.
    #[error("no request completed for {TIMEOUT:?} with {0} in flight")]
    Stalled(usize),
    /// The control socket failed.
    #[error("control socket {path}: {source}")]
    Control {
        /// The socket.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// `/proc/<pid>` could not be read.
    #[error("--pid: {0}")]
    Proc(#[from] stats::ProcError),
    /// The JSON report could not be written.
    #[error("writing {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A worker thread panicked.
    #[error("a connection's thread panicked")]
    Panicked,
}

/// Result alias.
pub type Result<T> = std::result::Result<T, BenchError>;

/// Benchmark a virtio-gpio or virtio-i2c vhost-user backend (ours or any other) over its
/// socket. The backend must be running and listening; this tool connects as the frontend.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Measured seconds per workload.
    #[arg(long, global = true, default_value_t = 5.0)]
    seconds: f64,
    /// Unmeasured warm-up before each workload, milliseconds.
    #[arg(long, global = true, default_value_t = 200)]
    warmup_ms: u64,
    /// The backend's pid: report its CPU seconds, peak RSS and threads from /proc.
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// Write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Drive N devices at once, one connection each, to sockets PATH0 .. PATH<N-1> (the
    /// names `--socket-count N` gives, in our backends and in rust-vmm's vhost-device).
    #[arg(long, global = true, default_value_t = 1)]
    connections: usize,
    /// How long to keep trying to connect to each socket, milliseconds.
    #[arg(long, global = true, default_value_t = 10_000)]
    connect_timeout_ms: u64,
    #[command(subcommand)]
    device: Device,
}

#[derive(Debug, Subcommand)]
enum Device {
    /// A virtio-gpio backend.
    Gpio {
        /// vhost-user socket of the backend.
        #[arg(long)]
        socket_path: PathBuf,
        /// Line for SET_VALUE/GET_VALUE (it is made an output).
        #[arg(long, default_value_t = 0)]
        line: u16,
        /// Requests in flight for the `set-get-deep` workload.
        #[arg(long, default_value_t = 64)]
        depth: usize,
        /// vhost-gpio's control socket, for the `irq` workload (with --connections N:
        /// PATH0 .. PATH<N-1>).
        #[arg(long)]
        control_socket: Option<PathBuf>,
        /// Line toggled through the control socket for the `irq` workload.
        #[arg(long, default_value_t = 1)]
        irq_line: u16,
        /// Workloads to run (default: all; `irq` only with --control-socket).
        #[arg(long = "workload", value_enum)]
        workloads: Vec<GpioWork>,
    },
    /// A virtio-i2c backend with an AT24-compatible EEPROM (start ours with twr-us=0).
    I2c {
        /// vhost-user socket of the backend.
        #[arg(long)]
        socket_path: PathBuf,
        /// 7-bit I2C address of the EEPROM (hex with 0x, or decimal).
        #[arg(long, default_value = "0x50", value_parser = parse_addr)]
        addr: u16,
        /// EEPROM size in bytes (24c32: 4096).
        #[arg(long, default_value_t = 4096)]
        size: u32,
        /// Page size in bytes (24c32: 32).
        #[arg(long, default_value_t = 32)]
        page: u32,
        /// Bytes per random read and per page write.
        #[arg(long, default_value_t = 32)]
        len: u32,
        /// Bytes per transfer of the sequential read (Linux at24 reads 128 at a time).
        #[arg(long, default_value_t = 128)]
        chunk: u32,
        /// Workloads to run (default: all).
        #[arg(long = "workload", value_enum)]
        workloads: Vec<I2cWork>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum GpioWork {
    /// SET_VALUE/GET_VALUE round trips, one request in flight.
    SetGet,
    /// The same with --depth requests in flight.
    SetGetDeep,
    /// Control-socket level change to used eventq buffer.
    Irq,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum I2cWork {
    /// Random reads of --len bytes.
    RandomRead,
    /// Page writes of --len bytes.
    PageWrite,
    /// The whole device, in --chunk transfers.
    SeqRead,
}

fn parse_addr(s: &str) -> std::result::Result<u16, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u16::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s}: {e}"))
}

/// The JSON report.
#[derive(Debug, Serialize)]
struct Report {
    tool: &'static str,
    version: &'static str,
    device: &'static str,
    socket_path: String,
    connections: usize,
    backend_pid: Option<u32>,
    host: Host,
    /// The backend with every connection made, before any workload.
    backend_connected: Option<ProcSample>,
    runs: Vec<RunResult>,
    skipped: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Host {
    cpus: usize,
    kernel: String,
}

fn host() -> Host {
    Host {
        cpus: thread::available_parallelism().map_or(0, usize::from),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

fn socket_of(base: &Path, connections: usize, i: usize) -> PathBuf {
    if connections > 1 {
        let mut s = base.as_os_str().to_owned();
        s.push(i.to_string());
        PathBuf::from(s)
    } else {
        base.to_path_buf()
    }
}

fn connect_all(
    base: &Path,
    n: usize,
    opts: &FrontendOptions,
    timeout: Duration,
) -> Result<Vec<TestFrontend>> {
    (0..n)
        .map(|i| {
            let path = socket_of(base, n, i);
            eprintln!("connecting {}", path.display());
            TestFrontend::connect(&path, opts.clone(), timeout).map_err(|source| {
                BenchError::Connect {
                    index: i,
                    path: path.display().to_string(),
                    source,
                }
            })
        })
        .collect()
}

fn sample(pid: Option<u32>) -> Result<Option<ProcSample>> {
    pid.map(ProcSample::read).transpose().map_err(Into::into)
}

/// Runs `f` on every connection in its own thread: a warm-up to `warm`, then the measured
/// part to `end`; merges the tallies.
fn on_all<S: Send>(
    fes: &mut [TestFrontend],
    states: &mut [S],
    warmup: Duration,
    seconds: Duration,
    f: impl Fn(&mut TestFrontend, &mut S, Instant, bool) -> Result<Tally> + Sync,
) -> Result<(Tally, Duration)> {
    let warm_end = Instant::now() + warmup;
    let results: Vec<Result<(Tally, Instant, Instant)>> = thread::scope(|s| {
        let handles: Vec<_> = fes
            .iter_mut()
            .zip(states.iter_mut())
            .map(|(fe, st)| {
                let f = &f;
                s.spawn(move || {
                    f(fe, st, warm_end, false)?;
                    // Every connection measures the same window.
                    let start = warm_end.max(Instant::now());
                    let t = f(fe, st, warm_end + seconds, true)?;
                    Ok((t, start, Instant::now()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(BenchError::Panicked)))
            .collect()
    });
    let mut total = Tally::default();
    let mut first = None::<Instant>;
    let mut last = None::<Instant>;
    for r in results {
        let (t, s, e) = r?;
        total.merge(t);
        first = Some(first.map_or(s, |f| f.min(s)));
        last = Some(last.map_or(e, |l| l.max(e)));
    }
    let elapsed = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f),
        _ => Duration::ZERO,
    };
    Ok((total, elapsed))
}

struct Runner {
    pid: Option<u32>,
    warmup: Duration,
    seconds: Duration,
    runs: Vec<RunResult>,
}

impl Runner {
    fn measure<S: Send>(
        &mut self,
        name: &str,
        depth: usize,
        fes: &mut [TestFrontend],
        states: &mut [S],
        f: impl Fn(&mut TestFrontend, &mut S, Instant, bool) -> Result<Tally> + Sync,
    ) -> Result<()> {
        eprintln!(
            "running {name} on {} connection(s) for {:.1} s",
            fes.len(),
            self.seconds.as_secs_f64()
        );
        let before = sample(self.pid)?;
        let (tally, elapsed) = on_all(fes, states, self.warmup, self.seconds, f)?;
        let after = sample(self.pid)?;
        let r = stats::result(name, fes.len(), depth, tally, elapsed, before, after);
        if r.errors > 0 {
            log::warn!("{name}: {} requests failed", r.errors);
        }
        self.runs.push(r);
        Ok(())
    }
}

fn run(cli: Cli) -> Result<Report> {
    if !(cli.seconds > 0.0 && cli.seconds <= 3600.0) {
        return Err(BenchError::Setup(format!(
            "--seconds {}: more than 0, at most 3600",
            cli.seconds
        )));
    }
    if cli.connections == 0 || cli.connections > 1024 {
        return Err(BenchError::Setup(format!(
            "--connections {}: 1..=1024",
            cli.connections
        )));
    }
    let mut runner = Runner {
        pid: cli.pid,
        warmup: Duration::from_millis(cli.warmup_ms.min(60_000)),
        seconds: Duration::from_secs_f64(cli.seconds),
        runs: Vec::new(),
    };
    let n = cli.connections;
    let connect_timeout = Duration::from_millis(cli.connect_timeout_ms);
    let mut skipped = Vec::new();
    let (device, socket_path, connected) = match cli.device {
        Device::Gpio {
            socket_path,
            line,
            depth,
            control_socket,
            irq_line,
            workloads,
        } => {
            if depth == 0 || depth > 128 {
                return Err(BenchError::Setup(format!("--depth {depth}: 1..=128")));
            }
            let workloads = if workloads.is_empty() {
                vec![GpioWork::SetGet, GpioWork::SetGetDeep, GpioWork::Irq]
            } else {
                workloads
            };
            let mut fes = connect_all(&socket_path, n, &gpio::options(), connect_timeout)?;
            let connected = sample(cli.pid)?;
            for w in workloads {
                match w {
                    GpioWork::SetGet | GpioWork::SetGetDeep => {
                        let (name, d) = if w == GpioWork::SetGet {
                            ("gpio-set-get", 1)
                        } else {
                            ("gpio-set-get-deep", depth)
                        };
                        for fe in fes.iter_mut() {
                            gpio::setup_set_get(fe, line)?;
                        }
                        let mut st = vec![(); n];
                        runner.measure(name, d, &mut fes, &mut st, |fe, _, until, rec| {
                            gpio::set_get(fe, line, d, until, rec)
                        })?;
                        for fe in fes.iter_mut() {
                            gpio::teardown_set_get(fe, line)?;
                        }
                    }
                    GpioWork::Irq => {
                        let Some(ctl) = &control_socket else {
                            skipped.push("gpio-irq: no --control-socket".to_string());
                            eprintln!("skipping irq: no --control-socket");
                            continue;
                        };
                        let mut ctls = (0..n)
                            .map(|i| gpio::Control::connect(&socket_of(ctl, n, i)))
                            .collect::<Result<Vec<_>>>()?;
                        for (fe, c) in fes.iter_mut().zip(ctls.iter_mut()) {
                            gpio::setup_irq(fe, c, irq_line)?;
                        }
                        runner.measure(
                            "gpio-irq",
                            1,
                            &mut fes,
                            &mut ctls,
                            |fe, c, until, rec| gpio::irq(fe, c, irq_line, until, rec),
                        )?;
                        for (fe, c) in fes.iter_mut().zip(ctls.iter_mut()) {
                            gpio::teardown_irq(fe, c, irq_line)?;
                        }
                    }
                }
            }
            ("gpio", socket_path, connected)
        }
        Device::I2c {
            socket_path,
            addr,
            size,
            page,
            len,
            chunk,
            workloads,
        } => {
            let target = i2c::Target { addr, size, page };
            target.validate()?;
            i2c::validate_chunk(chunk)?;
            if len == 0 || len > page {
                return Err(BenchError::Setup(format!(
                    "--len {len}: 1 up to the page size {page}"
                )));
            }
            let workloads = if workloads.is_empty() {
                vec![I2cWork::RandomRead, I2cWork::PageWrite, I2cWork::SeqRead]
            } else {
                workloads
            };
            let mut fes = connect_all(&socket_path, n, &i2c::options(), connect_timeout)?;
            let connected = sample(cli.pid)?;
            for fe in fes.iter_mut() {
                i2c::probe(fe, &target)?;
            }
            let mut rngs: Vec<i2c::Rng> = (0..n)
                .map(|i| i2c::Rng::new(0x5eed + u64::try_from(i).unwrap_or(0)))
                .collect();
            for w in workloads {
                let (name, work) = match w {
                    I2cWork::RandomRead => ("i2c-random-read", i2c::Work::RandomRead { len }),
                    I2cWork::PageWrite => ("i2c-page-write", i2c::Work::PageWrite { len }),
                    I2cWork::SeqRead => ("i2c-seq-read", i2c::Work::SeqRead { chunk }),
                };
                runner.measure(name, 1, &mut fes, &mut rngs, |fe, rng, until, rec| {
                    i2c::run(fe, &target, work, until, rec, rng)
                })?;
            }
            ("i2c", socket_path, connected)
        }
    };
    Ok(Report {
        tool: "vhost-bench",
        version: env!("CARGO_PKG_VERSION"),
        device,
        socket_path: socket_path.display().to_string(),
        connections: n,
        backend_pid: cli.pid,
        host: host(),
        backend_connected: connected,
        runs: runner.runs,
        skipped,
    })
}

fn print_table(r: &Report) {
    println!(
        "{:<18} {:>5} {:>5} {:>9} {:>6} {:>10} {:>9} {:>9} {:>9} {:>10} {:>6} {:>8} {:>9} {:>9} {:>7}",
        "workload",
        "conns",
        "depth",
        "requests",
        "errors",
        "req/s",
        "req/s/cn",
        "p50 us",
        "p99 us",
        "KiB/s",
        "secs",
        "cpu s",
        "cpu us/rq",
        "peak KiB",
        "threads"
    );
    for x in &r.runs {
        let (cpu, per, rss, thr) = match &x.backend {
            Some(b) => (
                format!("{:.2}", b.cpu_seconds),
                format!("{:.1}", b.cpu_us_per_request),
                b.peak_rss_kib.to_string(),
                b.threads.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "{:<18} {:>5} {:>5} {:>9} {:>6} {:>10.0} {:>9.0} {:>9.1} {:>9.1} {:>10.1} {:>6.2} {:>8} {:>9} {:>9} {:>7}",
            x.workload,
            x.connections,
            x.depth,
            x.requests,
            x.errors,
            x.requests_per_second,
            x.requests_per_second_per_connection,
            x.p50_us,
            x.p99_us,
            x.bytes_per_second / 1024.0,
            x.seconds,
            cpu,
            per,
            rss,
            thr
        );
    }
    if let Some(c) = &r.backend_connected {
        println!(
            "backend with {} connection(s), before the workloads: RSS {} KiB, peak {} KiB, {} threads",
            r.connections, c.rss_kib, c.peak_rss_kib, c.threads
        );
    }
    for s in &r.skipped {
        println!("skipped {s}");
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let json = cli.json.clone();
    let result = run(cli).and_then(|report| {
        print_table(&report);
        if let Some(path) = json {
            let mut text = serde_json::to_string_pretty(&report)
                .map_err(|e| BenchError::Protocol(format!("serialising the report: {e}")))?;
            text.push('\n');
            std::fs::write(&path, text).map_err(|source| BenchError::Json { path, source })?;
        }
        Ok(report)
    });
    match result {
        Ok(r) if r.runs.iter().any(|x| x.errors > 0) => {
            eprintln!("vhost-bench: some requests failed (see the errors column)");
            ExitCode::from(2)
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            // Every message already names its cause.
            eprintln!("vhost-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
