// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `gpio-tool`: the GPIO character device (uAPI v2) from the guest's shell,
//! and the timing loops of the guest-side benchmarks (`bench`).
//!
//! Every result is one line of `kind key=value ...` on stdout, so the
//! scenario runner and the host harness can parse it. Exit status: 0 on
//! success, 1 on error, 2 when a wait timed out.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use gpiocdev::chip::Chip;
use gpiocdev::line::{Bias, Direction, EdgeDetection, EdgeKind, Value};
use gpiocdev::Request;

use gpio_tool::bench;
use gpio_tool::spec::{self, record, ChipSel, LineSel, SpecError};

const CONSUMER: &str = "gpio-tool";

/// Errors of the tool.
#[derive(Debug, thiserror::Error)]
enum ToolError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("listing GPIO chips")]
    Chips(#[source] gpiocdev::Error),
    #[error("opening {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: gpiocdev::Error,
    },
    #[error("{what} on {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: gpiocdev::Error,
    },
    #[error("no GPIO chip matches '{0}'")]
    NoChip(String),
    #[error("chip {chip} has no line named '{name}'")]
    NoLine { chip: String, name: String },
    #[error("chip {chip} has {lines} lines: no offset {offset}")]
    NoOffset {
        chip: String,
        offset: u32,
        lines: u32,
    },
    #[error("no GPIO chip has a line named '{0}'")]
    NoNamedLine(String),
    #[error("timed out after {0} ms")]
    Timeout(u64),
    #[error("writing to stdout")]
    Stdout(#[source] std::io::Error),
    #[error(transparent)]
    Bench(#[from] bench::BenchError),
    #[error("{chip} line {offset}: set {set} but read back {got} ({count} times)")]
    Mismatch {
        chip: String,
        offset: u32,
        set: u8,
        got: u8,
        count: u64,
    },
}

#[derive(Debug, Parser)]
#[command(
    name = "gpio-tool",
    version,
    about = "List, read, drive and watch GPIO lines through /dev/gpiochipN (uAPI v2); time them",
    long_about = "List, read, drive and watch GPIO lines through /dev/gpiochipN (uAPI v2), and\n\
time GPIO round trips and nvmem transfers from user space (`bench`).\n\n\
CHIP is a path (/dev/gpiochip0), a chip name (gpiochip0), a label (virtio1, or label:NAME),\n\
or a label prefix ending in '*' (virtio*). LINE is an offset or a line name.\n\
Output: one 'kind key=value ...' record per line. Exit status: 0 ok, 1 error, 2 timeout."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// List chips (and, with --lines, every line: name, direction, used, consumer).
    List {
        /// Only this chip.
        chip: Option<String>,
        /// Also list each line.
        #[arg(long)]
        lines: bool,
    },
    /// Find the chip and offset of a named line.
    Find {
        /// Line name.
        name: String,
    },
    /// Request lines as inputs and print their values.
    Get {
        chip: String,
        #[arg(required = true)]
        lines: Vec<String>,
        /// Bias of the inputs.
        #[arg(long, value_enum)]
        bias: Option<BiasArg>,
    },
    /// Drive lines as outputs; hold them for a while or until killed.
    Set {
        chip: String,
        /// LINE=VALUE pairs (VALUE: 0, 1, low, high).
        #[arg(required = true)]
        values: Vec<String>,
        /// Keep the request (and the level) this many milliseconds.
        #[arg(long, conflicts_with = "hold_forever")]
        hold_ms: Option<u64>,
        /// Keep the request until the process is killed.
        #[arg(long)]
        hold_forever: bool,
    },
    /// Wait for edge events on a line; exits 2 when fewer than --count arrive in time.
    Wait {
        chip: String,
        line: String,
        /// Which edges to report.
        #[arg(long, value_enum, default_value_t = EdgeArg::Both)]
        edge: EdgeArg,
        /// Give up after this many milliseconds (total, for all events).
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// Number of events to wait for.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Bias of the input.
        #[arg(long, value_enum)]
        bias: Option<BiasArg>,
    },
    /// Time GPIO round trips or nvmem transfers; prints `bench kind=...` records.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Drive LINE as an output and alternate set-value and get-value (each one
    /// request to the GPIO chip), checking each read; records gpio-set and gpio-get.
    Gpio {
        chip: String,
        line: String,
        /// Run for about this many seconds.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Read (or write, read back and compare) the whole nvmem device again and
    /// again; records nvmem-read or nvmem-write in bytes per second.
    Nvmem {
        /// The nvmem file, e.g. /sys/bus/nvmem/devices/0-00500/nvmem.
        path: PathBuf,
        /// Run for about this many seconds (at least one pass).
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Write whole-device patterns (destroys the contents) instead of reading.
        #[arg(long)]
        write: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EdgeArg {
    Rising,
    Falling,
    Both,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BiasArg {
    PullUp,
    PullDown,
    Disabled,
}

impl From<EdgeArg> for EdgeDetection {
    fn from(e: EdgeArg) -> Self {
        match e {
            EdgeArg::Rising => EdgeDetection::RisingEdge,
            EdgeArg::Falling => EdgeDetection::FallingEdge,
            EdgeArg::Both => EdgeDetection::BothEdges,
        }
    }
}

impl From<BiasArg> for Bias {
    fn from(b: BiasArg) -> Self {
        match b {
            BiasArg::PullUp => Bias::PullUp,
            BiasArg::PullDown => Bias::PullDown,
            BiasArg::Disabled => Bias::Disabled,
        }
    }
}

fn out(line: &str) -> Result<(), ToolError> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "{line}")
        .and_then(|()| o.flush())
        .map_err(ToolError::Stdout)
}

fn open(path: PathBuf) -> Result<Chip, ToolError> {
    Chip::from_path(&path).map_err(|source| ToolError::Open { path, source })
}

fn io_err(what: &'static str, path: &std::path::Path) -> impl FnOnce(gpiocdev::Error) -> ToolError {
    let path = path.to_path_buf();
    move |source| ToolError::Io { what, path, source }
}

/// All chips with their info, in name order. A chip that vanishes while we
/// look (hot-unplug) or cannot be read is skipped with a warning on stderr,
/// so one dying chip does not hide the others.
fn all_chips() -> Result<Vec<(Chip, gpiocdev::chip::Info)>, ToolError> {
    let mut v = Vec::new();
    for p in gpiocdev::chip::chips().map_err(ToolError::Chips)? {
        let res = open(p).and_then(|c| {
            let info = c.info().map_err(io_err("reading chip info", c.path()))?;
            Ok((c, info))
        });
        match res {
            Ok(ci) => v.push(ci),
            Err(e) => eprintln!("gpio-tool: warning: skipping a chip: {}", chain(&e)),
        }
    }
    Ok(v)
}

/// An error with its sources, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        // Some errors already print their source; don't say it twice.
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(&format!(": {text}"));
        }
        src = s.source();
    }
    msg
}

fn resolve_chip(sel: &str) -> Result<(Chip, gpiocdev::chip::Info), ToolError> {
    let s = ChipSel::parse(sel)?;
    if let ChipSel::Path(p) = &s {
        let c = open(p.clone())?;
        let info = c.info().map_err(io_err("reading chip info", c.path()))?;
        return Ok((c, info));
    }
    all_chips()?
        .into_iter()
        .find(|(_, i)| s.matches(&i.name, &i.label))
        .ok_or_else(|| ToolError::NoChip(sel.to_owned()))
}

fn resolve_line(chip: &Chip, info: &gpiocdev::chip::Info, sel: &LineSel) -> Result<u32, ToolError> {
    match sel {
        LineSel::Offset(o) if *o < info.num_lines => Ok(*o),
        LineSel::Offset(o) => Err(ToolError::NoOffset {
            chip: info.name.clone(),
            offset: *o,
            lines: info.num_lines,
        }),
        LineSel::Name(n) => {
            chip.find_line_info(n)
                .map(|li| li.offset)
                .ok_or_else(|| ToolError::NoLine {
                    chip: info.name.clone(),
                    name: n.clone(),
                })
        }
    }
}

fn dir_str(d: Direction) -> &'static str {
    match d {
        Direction::Input => "input",
        Direction::Output => "output",
    }
}

fn list(chip: Option<&str>, lines: bool) -> Result<(), ToolError> {
    let chips = match chip {
        Some(sel) => vec![resolve_chip(sel)?],
        None => all_chips()?,
    };
    for (c, info) in chips {
        out(&record(
            "chip",
            &[
                ("name", info.name.clone()),
                ("label", info.label.clone()),
                ("lines", info.num_lines.to_string()),
                ("path", c.path().display().to_string()),
            ],
        ))?;
        if !lines {
            continue;
        }
        for offset in 0..info.num_lines {
            let li = c
                .line_info(offset)
                .map_err(io_err("reading line info", c.path()))?;
            out(&record(
                "line",
                &[
                    ("chip", info.name.clone()),
                    ("offset", offset.to_string()),
                    ("name", li.name.clone()),
                    ("direction", dir_str(li.direction).to_owned()),
                    ("used", li.used.to_string()),
                    ("consumer", li.consumer.clone()),
                ],
            ))?;
        }
    }
    Ok(())
}

fn find(name: &str) -> Result<(), ToolError> {
    for (c, info) in all_chips()? {
        if let Some(li) = c.find_line_info(name) {
            return out(&record(
                "found",
                &[
                    ("chip", info.name.clone()),
                    ("label", info.label.clone()),
                    ("path", c.path().display().to_string()),
                    ("offset", li.offset.to_string()),
                ],
            ));
        }
    }
    Err(ToolError::NoNamedLine(name.to_owned()))
}

fn get(chip: &str, lines: &[String], bias: Option<BiasArg>) -> Result<(), ToolError> {
    let (c, info) = resolve_chip(chip)?;
    let mut offsets = Vec::with_capacity(lines.len());
    for l in lines {
        offsets.push(resolve_line(&c, &info, &LineSel::parse(l)?)?);
    }
    let req = Request::builder()
        .on_chip(c.path())
        .with_consumer(CONSUMER)
        .with_lines(&offsets)
        .as_input()
        .with_bias(bias.map(Bias::from))
        .request()
        .map_err(io_err("requesting lines", c.path()))?;
    for (o, name) in offsets.iter().zip(lines) {
        let v = req.value(*o).map_err(io_err("reading a value", c.path()))?;
        out(&record(
            "value",
            &[
                ("chip", info.name.clone()),
                ("line", name.clone()),
                ("offset", o.to_string()),
                ("value", u8::from(v == Value::Active).to_string()),
            ],
        ))?;
    }
    Ok(())
}

fn set(
    chip: &str,
    values: &[String],
    hold: Option<Duration>,
    forever: bool,
) -> Result<(), ToolError> {
    let (c, info) = resolve_chip(chip)?;
    let mut b = Request::builder();
    b.on_chip(c.path()).with_consumer(CONSUMER);
    let mut set = Vec::with_capacity(values.len());
    for a in values {
        let (sel, v) = spec::parse_assignment(a)?;
        let o = resolve_line(&c, &info, &sel)?;
        b.with_line(o).as_output(Value::from(v));
        set.push((o, v));
    }
    let _req = b.request().map_err(io_err("requesting lines", c.path()))?;
    for (o, v) in &set {
        out(&record(
            "set",
            &[
                ("chip", info.name.clone()),
                ("offset", o.to_string()),
                ("value", u8::from(*v).to_string()),
            ],
        ))?;
    }
    if forever {
        out(&record("holding", &[("until", "killed".to_owned())]))?;
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if let Some(d) = hold {
        out(&record("holding", &[("ms", d.as_millis().to_string())]))?;
        std::thread::sleep(d);
    }
    Ok(())
}

fn wait(
    chip: &str,
    line: &str,
    edge: EdgeArg,
    timeout_ms: u64,
    count: u32,
    bias: Option<BiasArg>,
) -> Result<(), ToolError> {
    let (c, info) = resolve_chip(chip)?;
    let o = resolve_line(&c, &info, &LineSel::parse(line)?)?;
    let req = Request::builder()
        .on_chip(c.path())
        .with_consumer(CONSUMER)
        .with_line(o)
        .as_input()
        .with_bias(bias.map(Bias::from))
        .with_edge_detection(EdgeDetection::from(edge))
        .request()
        .map_err(io_err("requesting the line with edge detection", c.path()))?;
    out(&record(
        "armed",
        &[
            ("chip", info.name.clone()),
            ("offset", o.to_string()),
            ("timeout_ms", timeout_ms.to_string()),
        ],
    ))?;
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let mut seen = 0u32;
    while seen < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero()
            || !req
                .wait_edge_event(left)
                .map_err(io_err("waiting for an edge", c.path()))?
        {
            out(&record(
                "timeout",
                &[("events", seen.to_string()), ("wanted", count.to_string())],
            ))?;
            return Err(ToolError::Timeout(timeout_ms));
        }
        let ev = req
            .read_edge_event()
            .map_err(io_err("reading an edge event", c.path()))?;
        seen += 1;
        out(&record(
            "event",
            &[
                ("chip", info.name.clone()),
                ("offset", ev.offset.to_string()),
                (
                    "kind",
                    match ev.kind {
                        EdgeKind::Rising => "rising",
                        EdgeKind::Falling => "falling",
                    }
                    .to_owned(),
                ),
                ("seqno", ev.seqno.to_string()),
                ("timestamp_ns", ev.timestamp_ns.to_string()),
            ],
        ))?;
    }
    Ok(())
}

fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

fn bench_gpio(chip: &str, line: &str, time: Duration) -> Result<(), ToolError> {
    let (c, info) = resolve_chip(chip)?;
    let o = resolve_line(&c, &info, &LineSel::parse(line)?)?;
    let req = Request::builder()
        .on_chip(c.path())
        .with_consumer(CONSUMER)
        .with_line(o)
        .as_output(Value::Inactive)
        .request()
        .map_err(io_err("requesting the line as an output", c.path()))?;
    let mut set = bench::Samples::default();
    let mut get = bench::Samples::default();
    let mut mismatch: Option<(u8, u8)> = None;
    let mut mismatches = 0u64;
    let start = Instant::now();
    let mut high = false;
    while set.ns.is_empty() || start.elapsed() < time {
        high = !high;
        let want = Value::from(high);
        let t = Instant::now();
        req.set_value(o, want)
            .map_err(io_err("setting a value", c.path()))?;
        set.push(t.elapsed());
        let t = Instant::now();
        let got = req.value(o).map_err(io_err("reading a value", c.path()))?;
        get.push(t.elapsed());
        if got != want {
            mismatches += 1;
            mismatch.get_or_insert((u8::from(high), u8::from(got == Value::Active)));
        }
    }
    let elapsed = start.elapsed();
    set.elapsed = elapsed;
    get.elapsed = elapsed;
    let extra = [
        ("chip", info.name.clone()),
        ("offset", o.to_string()),
        ("mismatches", mismatches.to_string()),
    ];
    out(&set.record("gpio-set", &extra))?;
    out(&get.record("gpio-get", &extra))?;
    match mismatch {
        Some((set, got)) => Err(ToolError::Mismatch {
            chip: info.name,
            offset: o,
            set,
            got,
            count: mismatches,
        }),
        None => Ok(()),
    }
}

fn bench_nvmem(path: &std::path::Path, time: Duration, write: bool) -> Result<(), ToolError> {
    let r = bench::nvmem(path, time, write)?;
    out(&r.record(if write { "nvmem-write" } else { "nvmem-read" }))
}

fn run(cli: Cli) -> Result<(), ToolError> {
    match cli.cmd {
        Cmd::List { chip, lines } => list(chip.as_deref(), lines),
        Cmd::Find { name } => find(&name),
        Cmd::Get { chip, lines, bias } => get(&chip, &lines, bias),
        Cmd::Set {
            chip,
            values,
            hold_ms,
            hold_forever,
        } => set(
            &chip,
            &values,
            hold_ms.map(Duration::from_millis),
            hold_forever,
        ),
        Cmd::Wait {
            chip,
            line,
            edge,
            timeout_ms,
            count,
            bias,
        } => wait(&chip, &line, edge, timeout_ms, count, bias),
        Cmd::Bench(BenchCmd::Gpio {
            chip,
            line,
            seconds: s,
        }) => bench_gpio(&chip, &line, seconds(s)),
        Cmd::Bench(BenchCmd::Nvmem {
            path,
            seconds: s,
            write,
        }) => bench_nvmem(&path, seconds(s), write),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpio-tool: error: {}", chain(&e));
            if matches!(e, ToolError::Timeout(_)) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
