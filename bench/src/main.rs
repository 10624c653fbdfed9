// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-bench`: measures a virtio-gpio or virtio-i2c vhost-user backend over its socket,
//! playing QEMU and the guest driver with `common::frontend::TestFrontend`; `--compare` runs
//! two backends alternately, `--floor` the eventfd floor beside them.

mod compare;
mod gpio;
mod i2c;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use common::frontend::{FrontendError, FrontendOptions, TestFrontend};
use serde::Serialize;
use vhost_bench::floor::{Floor, FloorError};
use vhost_bench::stats;

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
    /// The eventfd floor failed.
    #[error("floor: {0}")]
    Floor(#[from] FloorError),
    /// A backend of `--compare` could not be started or died.
    #[error("backend {label}: {message}")]
    Backend {
        /// A or B.
        label: String,
        /// What happened, with the tail of its output.
        message: String,
    },
    /// A file or directory the tool needs failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
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
/// socket, as QEMU and the Linux driver would drive it. The backend must be running and
/// listening (this tool connects as the frontend), or give --compare and this tool starts
/// two backends and measures them alternately.
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
    /// Also measure the eventfd floor (one kick and one call over eventfds with epoll between
    /// two processes, no virtio work) after the workloads (with --compare: every round), and
    /// report each depth-1 workload's round trip as a multiple of it.
    #[arg(long, global = true)]
    floor: bool,
    /// The `eventfd-floor` program (default: the one beside this program).
    #[arg(long, global = true, value_name = "PATH")]
    floor_program: Option<PathBuf>,
    /// Start two backends from these shell command lines and measure them alternately, A then
    /// B for every workload, --rounds times; print per workload the medians, min-max and the
    /// A/B ratio. In each command `{socket}` is replaced by a socket path in a private
    /// temporary directory and `{control}` by a control socket path (gpio-irq runs only if
    /// both commands have `{control}`). With one connection the tool connects to `{socket}`,
    /// or to `{socket}0` if the backend appends the index anyway (rust-vmm's vhost-device
    /// does). --socket-path, --control-socket and --pid are not used.
    #[arg(long, global = true, num_args = 2, value_names = ["A", "B"])]
    compare: Vec<String>,
    /// With --compare: how many times each backend runs each workload.
    #[arg(long, global = true, default_value_t = 3)]
    rounds: usize,
    /// With --compare: the names of A and B in the output (default: each command's program).
    #[arg(long, global = true, num_args = 2, value_names = ["A", "B"])]
    labels: Vec<String>,
    /// With --compare: the machine's condition, written into the output (say what else ran,
    /// e.g. "one busy loop beside" or "two kernel builds beside").
    #[arg(long, global = true)]
    condition: Option<String>,
    #[command(subcommand)]
    device: Device,
}

#[derive(Debug, Subcommand)]
enum Device {
    /// A virtio-gpio backend.
    Gpio {
        /// vhost-user socket of the backend (not with --compare).
        #[arg(short = 's', long)]
        socket_path: Option<PathBuf>,
        /// Line for SET_VALUE/GET_VALUE (it is made an output as Linux does: SET_VALUE, then
        /// SET_DIRECTION OUT).
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
        /// Workloads to run (default: all; `irq` only with a control socket).
        #[arg(long = "workload", value_enum)]
        workloads: Vec<GpioWork>,
    },
    /// A virtio-i2c backend with an AT24-compatible EEPROM (start ours with twr-us=0).
    I2c {
        /// vhost-user socket of the backend (not with --compare).
        #[arg(short = 's', long)]
        socket_path: Option<PathBuf>,
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

/// One workload, with what it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// gpio set/get at a depth.
    GpioSetGet {
        /// Requests in flight.
        depth: usize,
    },
    /// gpio interrupt latency.
    GpioIrq,
    /// An i2c workload.
    I2c(i2c::Work),
}

impl Work {
    /// The workload's name in the output.
    pub fn name(self) -> &'static str {
        match self {
            Work::GpioSetGet { depth: 1 } => "gpio-set-get",
            Work::GpioSetGet { .. } => "gpio-set-get-deep",
            Work::GpioIrq => "gpio-irq",
            Work::I2c(i2c::Work::RandomRead { .. }) => "i2c-random-read",
            Work::I2c(i2c::Work::PageWrite { .. }) => "i2c-page-write",
            Work::I2c(i2c::Work::SeqRead { .. }) => "i2c-seq-read",
        }
    }

    /// Requests in flight per connection.
    pub fn depth(self) -> usize {
        match self {
            Work::GpioSetGet { depth } => depth,
            _ => 1,
        }
    }
}

/// The device and the workloads, validated from the command line.
#[derive(Clone, Debug)]
pub struct Spec {
    /// "gpio" or "i2c".
    pub device: &'static str,
    /// gpio: the set/get line and the irq line.
    pub line: u16,
    /// gpio: the irq line.
    pub irq_line: u16,
    /// i2c: the EEPROM.
    pub target: i2c::Target,
    /// In order.
    pub workloads: Vec<Work>,
}

impl Spec {
    fn options(&self) -> FrontendOptions {
        if self.device == "gpio" {
            gpio::options()
        } else {
            i2c::options()
        }
    }
}

/// From the device subcommand: the spec, the socket path and the control socket.
fn spec_of(device: Device) -> Result<(Spec, Option<PathBuf>, Option<PathBuf>)> {
    match device {
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
            let workloads = workloads
                .into_iter()
                .map(|w| match w {
                    GpioWork::SetGet => Work::GpioSetGet { depth: 1 },
                    GpioWork::SetGetDeep => Work::GpioSetGet { depth },
                    GpioWork::Irq => Work::GpioIrq,
                })
                .collect();
            let spec = Spec {
                device: "gpio",
                line,
                irq_line,
                target: i2c::Target {
                    addr: 0x50,
                    size: 4096,
                    page: 32,
                },
                workloads,
            };
            Ok((spec, socket_path, control_socket))
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
            let workloads = workloads
                .into_iter()
                .map(|w| {
                    Work::I2c(match w {
                        I2cWork::RandomRead => i2c::Work::RandomRead { len },
                        I2cWork::PageWrite => i2c::Work::PageWrite { len },
                        I2cWork::SeqRead => i2c::Work::SeqRead { chunk },
                    })
                })
                .collect();
            let spec = Spec {
                device: "i2c",
                line: 0,
                irq_line: 0,
                target,
                workloads,
            };
            Ok((spec, socket_path, None))
        }
    }
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

/// The machine.
#[derive(Debug, Serialize)]
pub struct Host {
    /// CPUs this process may use.
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
}

/// The machine now.
pub fn host() -> Host {
    Host {
        cpus: thread::available_parallelism().map_or(0, usize::from),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

/// The socket of connection `i` of `connections`: the path itself for one, else the path
/// with the index appended.
pub fn socket_of(base: &Path, connections: usize, i: usize) -> PathBuf {
    if connections > 1 {
        let mut s = base.as_os_str().to_owned();
        s.push(i.to_string());
        PathBuf::from(s)
    } else {
        base.to_path_buf()
    }
}

fn connect_all(
    paths: &[PathBuf],
    opts: &FrontendOptions,
    timeout: Duration,
) -> Result<Vec<TestFrontend>> {
    paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            eprintln!("connecting {}", path.display());
            TestFrontend::connect(path, opts.clone(), timeout).map_err(|source| {
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

/// Connected devices, probed as the driver would, ready for workloads.
#[derive(Debug)]
pub struct Session {
    fes: Vec<TestFrontend>,
    /// gpio: what each device's probe found.
    chips: Vec<gpio::Chip>,
    /// gpio: control sockets, one per connection, if the backend has them.
    controls: Option<Vec<PathBuf>>,
    /// i2c: a generator per connection.
    rngs: Vec<i2c::Rng>,
}

impl Session {
    /// Connects to every socket in `paths` and probes each device.
    pub fn open(
        spec: &Spec,
        paths: &[PathBuf],
        controls: Option<Vec<PathBuf>>,
        timeout: Duration,
    ) -> Result<Session> {
        let mut fes = connect_all(paths, &spec.options(), timeout)?;
        let mut chips = Vec::new();
        if spec.device == "gpio" {
            for fe in fes.iter_mut() {
                chips.push(gpio::probe(fe)?);
            }
            if let Some(c) = chips.first() {
                eprintln!(
                    "gpio device: {} lines, names {:?}, directions {:?}",
                    c.ngpio, c.names, c.directions
                );
            }
        } else {
            for fe in fes.iter_mut() {
                i2c::probe(fe, &spec.target)?;
            }
        }
        let rngs = (0..fes.len())
            .map(|i| i2c::Rng::new(0x5eed + u64::try_from(i).unwrap_or(0)))
            .collect();
        Ok(Session {
            fes,
            chips,
            controls,
            rngs,
        })
    }

    /// Whether the session can run `w` (gpio-irq needs the control sockets).
    pub fn can_run(&self, w: Work) -> bool {
        w != Work::GpioIrq || self.controls.is_some()
    }

    /// Runs one workload, measured as `runner` says, `pid` being the backend's.
    pub fn run(
        &mut self,
        runner: &Runner,
        spec: &Spec,
        w: Work,
        pid: Option<u32>,
    ) -> Result<RunResult> {
        let name = w.name();
        match w {
            Work::GpioSetGet { depth } => {
                let line = spec.line;
                for (fe, chip) in self.fes.iter_mut().zip(&self.chips) {
                    gpio::setup_set_get(fe, chip, line)?;
                }
                let mut st = vec![(); self.fes.len()];
                let r = runner.measure(
                    name,
                    depth,
                    pid,
                    &mut self.fes,
                    &mut st,
                    |fe, _, until, rec| gpio::set_get(fe, line, depth, until, rec),
                )?;
                for fe in self.fes.iter_mut() {
                    gpio::teardown_set_get(fe, line)?;
                }
                Ok(r)
            }
            Work::GpioIrq => {
                let line = spec.irq_line;
                let paths = self
                    .controls
                    .as_deref()
                    .ok_or_else(|| BenchError::Setup("gpio-irq needs a control socket".into()))?;
                let mut ctls = paths
                    .iter()
                    .map(|p| gpio::Control::connect(p))
                    .collect::<Result<Vec<_>>>()?;
                for ((fe, chip), c) in self.fes.iter_mut().zip(&self.chips).zip(ctls.iter_mut()) {
                    gpio::setup_irq(fe, chip, c, line)?;
                }
                let r = runner.measure(
                    name,
                    1,
                    pid,
                    &mut self.fes,
                    &mut ctls,
                    |fe, c, until, rec| gpio::irq(fe, c, line, until, rec),
                )?;
                for (fe, c) in self.fes.iter_mut().zip(ctls.iter_mut()) {
                    gpio::teardown_irq(fe, c, line)?;
                }
                Ok(r)
            }
            Work::I2c(work) => {
                let target = spec.target;
                runner.measure(
                    name,
                    1,
                    pid,
                    &mut self.fes,
                    &mut self.rngs,
                    |fe, rng, until, rec| i2c::run(fe, &target, work, until, rec, rng),
                )
            }
        }
    }
}

/// Runs `f` on every item in its own thread: a warm-up of `warmup`, then the measured part of
/// `seconds`; calls `at_warm_end` when the warm-up ends; merges the tallies.
fn on_all<T: Send, S: Send>(
    items: &mut [T],
    states: &mut [S],
    warmup: Duration,
    seconds: Duration,
    f: impl Fn(&mut T, &mut S, Instant, bool) -> Result<Tally> + Sync,
    at_warm_end: impl FnOnce(),
) -> Result<(Tally, Duration)> {
    let warm_end = Instant::now() + warmup;
    let results: Vec<Result<(Tally, Instant, Instant)>> = thread::scope(|s| {
        let handles: Vec<_> = items
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
        thread::sleep(warm_end.saturating_duration_since(Instant::now()));
        at_warm_end();
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

/// How long each workload runs.
#[derive(Clone, Copy, Debug)]
pub struct Runner {
    warmup: Duration,
    seconds: Duration,
}

impl Runner {
    /// Measures `f` on every item, `pid` being the process that serves them.
    pub fn measure<T: Send, S: Send>(
        &self,
        name: &str,
        depth: usize,
        pid: Option<u32>,
        items: &mut [T],
        states: &mut [S],
        f: impl Fn(&mut T, &mut S, Instant, bool) -> Result<Tally> + Sync,
    ) -> Result<RunResult> {
        eprintln!(
            "running {name} on {} connection(s) for {:.1} s",
            items.len(),
            self.seconds.as_secs_f64()
        );
        // Both processes' CPU time is read when the warm-up ends and after the run.
        let mut before = Ok((None, 0.0));
        let (tally, elapsed) = on_all(items, states, self.warmup, self.seconds, f, || {
            before = sample(pid).map(|b| (b, stats::own_cpu_seconds()));
        })?;
        let own_after = stats::own_cpu_seconds();
        let after = sample(pid)?;
        let (before, own_before) = before?;
        let r = stats::result(name, items.len(), depth, tally, elapsed, before, after)
            .with_own_cpu(own_after - own_before);
        if r.errors > 0 {
            log::warn!("{name}: {} requests failed", r.errors);
        }
        Ok(r)
    }

    /// Measures the eventfd floor, starting `program --serve` in `dir`.
    pub fn floor(&self, program: &Path, dir: &Path) -> Result<RunResult> {
        let mut floor = [Floor::start(program, dir)?];
        let pid = Some(floor[0].pid());
        let mut st = [()];
        self.measure(
            "eventfd-floor",
            1,
            pid,
            &mut floor,
            &mut st,
            |f, _, until, rec| f.run(until, rec).map_err(Into::into),
        )
    }
}

/// Where `eventfd-floor` is: `--floor-program`, else beside this program.
fn floor_program(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p);
    }
    let me = std::env::current_exe().map_err(|source| BenchError::Io {
        what: "finding this program's path".into(),
        source,
    })?;
    let p = me.with_file_name("eventfd-floor");
    if p.exists() {
        Ok(p)
    } else {
        Err(BenchError::Setup(format!(
            "--floor: {} not found (build it: cargo build --release -p vhost-bench, or give --floor-program)",
            p.display()
        )))
    }
}

fn private_dir(prefix: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|source| BenchError::Io {
            what: "creating a temporary directory".into(),
            source,
        })
}

fn runner_of(cli: &Cli) -> Result<Runner> {
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
    Ok(Runner {
        warmup: Duration::from_millis(cli.warmup_ms.min(60_000)),
        seconds: Duration::from_secs_f64(cli.seconds),
    })
}

fn run(cli: Cli) -> Result<Report> {
    let runner = runner_of(&cli)?;
    let n = cli.connections;
    let connect_timeout = Duration::from_millis(cli.connect_timeout_ms);
    let floor = if cli.floor {
        Some(floor_program(cli.floor_program)?)
    } else {
        None
    };
    let (spec, socket_path, control) = spec_of(cli.device)?;
    let socket_path = socket_path
        .ok_or_else(|| BenchError::Setup(format!("{} --socket-path is required", spec.device)))?;
    let paths: Vec<PathBuf> = (0..n).map(|i| socket_of(&socket_path, n, i)).collect();
    let controls = control.map(|c| (0..n).map(|i| socket_of(&c, n, i)).collect());
    let mut session = Session::open(&spec, &paths, controls, connect_timeout)?;
    let connected = sample(cli.pid)?;
    let mut skipped = Vec::new();
    let mut runs = Vec::new();
    for &w in &spec.workloads {
        if !session.can_run(w) {
            skipped.push(format!("{}: no --control-socket", w.name()));
            eprintln!("skipping {}: no --control-socket", w.name());
            continue;
        }
        runs.push(session.run(&runner, &spec, w, cli.pid)?);
    }
    if let Some(program) = floor {
        let dir = private_dir("vhost-bench-floor-")?;
        runs.push(runner.floor(&program, dir.path())?);
    }
    Ok(Report {
        tool: "vhost-bench",
        version: env!("CARGO_PKG_VERSION"),
        device: spec.device,
        socket_path: socket_path.display().to_string(),
        connections: n,
        backend_pid: cli.pid,
        host: host(),
        backend_connected: connected,
        runs,
        skipped,
    })
}

/// Prints the per-run table.
pub fn print_runs(runs: &[RunResult]) {
    println!(
        "{:<18} {:>5} {:>5} {:>9} {:>6} {:>10} {:>9} {:>9} {:>9} {:>10} {:>6} {:>8} {:>9} {:>9} {:>7} {:>9}",
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
        "threads",
        "fe us/rq"
    );
    for x in runs {
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
            "{:<18} {:>5} {:>5} {:>9} {:>6} {:>10.0} {:>9.0} {:>9.1} {:>9.1} {:>10.1} {:>6.2} {:>8} {:>9} {:>9} {:>7} {:>9.1}",
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
            thr,
            x.frontend_cpu_us_per_request
        );
    }
}

fn print_table(r: &Report) {
    print_runs(&r.runs);
    if let Some(c) = &r.backend_connected {
        println!(
            "backend with {} connection(s), before the workloads: RSS {} KiB, peak {} KiB, {} threads",
            r.connections, c.rss_kib, c.peak_rss_kib, c.threads
        );
    }
    if let Some(f) = r.runs.iter().find(|x| x.workload == "eventfd-floor") {
        for x in r
            .runs
            .iter()
            .filter(|x| x.depth == 1 && x.connections == 1 && x.workload != "eventfd-floor")
        {
            println!(
                "{}: round trip {:.2}x the floor's (mean, from req/s), p50 {:.2}x",
                x.workload,
                compare::ratio(f.requests_per_second, x.requests_per_second),
                compare::ratio(x.p50_us, f.p50_us),
            );
        }
    }
    for s in &r.skipped {
        println!("skipped {s}");
    }
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| BenchError::Protocol(format!("serialising the report: {e}")))?;
    text.push('\n');
    std::fs::write(path, text).map_err(|source| BenchError::Json {
        path: path.to_path_buf(),
        source,
    })
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let json = cli.json.clone();
    let result = if cli.compare.is_empty() {
        run(cli).and_then(|report| {
            print_table(&report);
            if let Some(path) = &json {
                write_json(path, &report)?;
            }
            Ok(report.runs.iter().any(|x| x.errors > 0))
        })
    } else {
        compare::run(cli).and_then(|report| {
            compare::print(&report);
            if let Some(path) = &json {
                write_json(path, &report)?;
            }
            Ok(report.errors())
        })
    };
    match result {
        Ok(true) => {
            eprintln!("vhost-bench: some requests failed (see the errors column)");
            ExitCode::from(2)
        }
        Ok(false) => ExitCode::SUCCESS,
        Err(e) => {
            // Every message already names its cause.
            eprintln!("vhost-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
