// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `guest-tests`: boots the built guest kernel variants in QEMU.
//!
//! `guest-tests boot` boots each variant with scenario `boot` and no
//! backends and checks that the scenario runner starts (its first marker),
//! then that it finishes its KTAP plan and powers off.
//! `guest-tests reproduce` runs the end-to-end reproduction, and
//! `guest-tests bench` the guest-side benchmarks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use guest_tests::console::{Console, DONE, RUNNER_START};
use guest_tests::ktap;
use guest_tests::qemu::{self, Accel, Qemu, QemuConfig, QemuError};
use guest_tests::variants::{self, Variant, VariantError};

#[derive(Debug, Parser)]
#[command(
    name = "guest-tests",
    version,
    about = "Boot the guest kernel variants in QEMU and check the scenario runner"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Boot each built variant (scenario `boot`, no backends) and check that
    /// the runner starts, passes its checks and powers off.
    Boot(BootArgs),
    /// The end-to-end reproduction: every variant in every scenario with both
    /// backends attached; prints a table, writes report.json, a JUnit XML and
    /// the logs of each run; exits 1 when any run differs from expected.toml.
    Reproduce(ReproduceArgs),
    /// Guest-side benchmarks: boot a kernel with both backends and time, from guest user
    /// space, GPIO set/get round trips through the GPIO character device and whole-EEPROM
    /// nvmem reads and writes, once per write cycle time; prints a table, writes bench.json.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Kernel variant (repeatable).
    #[arg(long = "kernel", value_name = "V", default_values_t = ["6.12-kref".to_string()])]
    kernels: Vec<String>,
    /// Write cycle time of the emulated 24c32 in microseconds (repeatable).
    #[arg(long = "twr-us", value_name = "US", default_values_t = [0u32, 5000],
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    twr_us: Vec<u32>,
    /// Seconds each guest-side measurement runs.
    #[arg(long, default_value_t = 3, value_name = "S",
          value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Bound of one boot, from QEMU start to power-off, in seconds.
    #[arg(long, default_value_t = 300, value_name = "S")]
    run_timeout: u64,
    /// Where bench.json and the logs go.
    #[arg(long, default_value = "target/bench", value_name = "DIR")]
    out_dir: PathBuf,
    #[command(flatten)]
    run: RunArgs,
}

/// What a run with both backends needs: QEMU, the backends, the kernel cache.
#[derive(Debug, Args)]
struct RunArgs {
    /// Accelerator.
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    accel: Accel,
    /// QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64", value_name = "PATH")]
    qemu: PathBuf,
    /// vhost-gpio binary (default: beside this program).
    #[arg(long, value_name = "PATH")]
    vhost_gpio: Option<PathBuf>,
    /// vhost-i2c-eeprom binary (default: beside this program).
    #[arg(long, value_name = "PATH")]
    vhost_i2c_eeprom: Option<PathBuf>,
    /// Cache root (default: $VGN_CACHE, else $XDG_CACHE_HOME/vhost-gpio-nvmem,
    /// else ~/.cache/vhost-gpio-nvmem).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ReproduceArgs {
    /// Kernel variant (repeatable); default: the five of expected.toml.
    #[arg(long = "kernel", value_name = "V")]
    kernels: Vec<String>,
    /// Scenario (repeatable); default: all six.
    #[arg(long = "scenario", value_name = "S")]
    scenarios: Vec<String>,
    /// Guests at a time.
    #[arg(long, default_value_t = 2, value_name = "N")]
    jobs: usize,
    /// Bound of one run, from QEMU start to power-off, in seconds.
    #[arg(long, default_value_t = 300, value_name = "S")]
    run_timeout: u64,
    /// Bound of each guest-side wait, in seconds (vgn.timeout).
    #[arg(long, default_value_t = 60, value_name = "S")]
    guest_timeout: u64,
    /// Expected outcomes.
    #[arg(long, default_value = "guest-tests/expected.toml", value_name = "FILE")]
    expected: PathBuf,
    /// Where the report and logs go.
    #[arg(long, default_value = "target/reproduce", value_name = "DIR")]
    out_dir: PathBuf,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Args)]
struct BootArgs {
    /// Variant to boot (repeatable); default: every built variant in the cache.
    #[arg(long = "variant", value_name = "V")]
    variants: Vec<String>,
    /// Seconds to wait for the runner's first marker, and again for it to finish.
    #[arg(long, default_value_t = 120, value_name = "S")]
    timeout: u64,
    /// Only wait for the first marker; don't require the runner to finish.
    #[arg(long)]
    first_marker_only: bool,
    /// Accelerator.
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    accel: Accel,
    /// QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64", value_name = "PATH")]
    qemu: PathBuf,
    /// Cache root (default: $VGN_CACHE, else $XDG_CACHE_HOME/vhost-gpio-nvmem,
    /// else ~/.cache/vhost-gpio-nvmem).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Keep each variant's console and QEMU log in DIR/<variant>/ (default:
    /// a temporary directory, removed at exit).
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Extra words for the kernel command line.
    #[arg(long, value_name = "WORDS")]
    append: Option<String>,
}

/// Errors of the binary.
#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error(transparent)]
    Variant(#[from] VariantError),
    #[error("no built variant in {0} (run scripts/build-guest)")]
    NoVariants(PathBuf),
    #[error("creating the run directory {path}")]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Qemu(#[from] QemuError),
    #[error(transparent)]
    Expect(#[from] guest_tests::expect::ExpectError),
    #[error("unknown {what} '{name}' (known: {known})")]
    Unknown {
        what: &'static str,
        name: String,
        known: String,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} not found: build it (cargo build --release -p {1}) or pass --{1}")]
    MissingBinary(PathBuf, &'static str),
}

/// A binary of this workspace beside the running one.
fn sibling(name: &str) -> Option<PathBuf> {
    std::env::current_exe().ok()?.parent().map(|d| d.join(name))
}

/// The backend binary given, else the one beside this program; it must exist.
fn binary(given: &Option<PathBuf>, name: &'static str) -> Result<PathBuf, MainError> {
    let p = given
        .clone()
        .or_else(|| sibling(name))
        .unwrap_or_else(|| PathBuf::from(name));
    if p.is_file() {
        Ok(p)
    } else {
        Err(MainError::MissingBinary(p, name))
    }
}

/// The names given, each checked against `all`; all of them when none is given.
fn pick(given: &[String], all: &[&str], what: &'static str) -> Result<Vec<String>, MainError> {
    if given.is_empty() {
        return Ok(all.iter().map(|s| s.to_string()).collect());
    }
    for g in given {
        if !all.contains(&g.as_str()) {
            return Err(MainError::Unknown {
                what,
                name: g.clone(),
                known: all.join(", "),
            });
        }
    }
    Ok(given.to_vec())
}

impl RunArgs {
    /// The named variants, each built.
    fn built(&self, names: &[String]) -> Result<Vec<Variant>, MainError> {
        let cache = match &self.cache {
            Some(c) => c.clone(),
            None => variants::cache_root()?,
        };
        let mut built = Vec::new();
        for k in names {
            let v = variants::variant(&cache, k)?;
            v.check_built()?;
            built.push(v);
        }
        Ok(built)
    }

    /// Run options (one guest at a time), with `out_dir` created.
    fn options(
        &self,
        out_dir: &Path,
        run_timeout: u64,
        guest_timeout: u64,
    ) -> Result<guest_tests::reproduce::Options, MainError> {
        let opts = guest_tests::reproduce::Options {
            vhost_gpio: binary(&self.vhost_gpio, "vhost-gpio")?,
            vhost_i2c: binary(&self.vhost_i2c_eeprom, "vhost-i2c-eeprom")?,
            qemu: self.qemu.clone(),
            accel: self.accel,
            run_timeout: Duration::from_secs(run_timeout),
            guest_timeout: Duration::from_secs(guest_timeout),
            out_dir: out_dir.to_path_buf(),
            jobs: 1,
            twr_us: None,
            append: String::new(),
        };
        std::fs::create_dir_all(out_dir).map_err(|source| MainError::Io {
            what: "creating",
            path: out_dir.to_path_buf(),
            source,
        })?;
        Ok(opts)
    }
}

fn run_bench(a: &BenchArgs) -> Result<bool, MainError> {
    use guest_tests::bench;
    use guest_tests::expect::KERNELS;

    let built = a
        .run
        .built(&pick(&a.kernels, &KERNELS, "kernel variant")?)?;
    let seconds = Duration::from_secs(a.seconds);
    let mut opts = a.run.options(&a.out_dir, a.run_timeout, 60)?;
    opts.append = format!("vgn.bench_seconds={}", a.seconds);
    eprintln!(
        "[bench] {} kernel(s) x {} write cycle time(s), {} s per figure, {} (-accel {}); logs in {}",
        built.len(),
        a.twr_us.len(),
        a.seconds,
        qemu::version(&a.run.qemu)?,
        a.run.accel.as_str(),
        a.out_dir.display()
    );
    let runs = bench::run_all(&built, &a.twr_us, &opts);
    let json = a.out_dir.join("bench.json");
    bench::write_json(&json, &runs, seconds, a.run.accel.as_str()).map_err(|source| {
        MainError::Io {
            what: "writing",
            path: json.clone(),
            source,
        }
    })?;
    println!("{}", bench::table(&runs));
    let failed = runs.iter().filter(|r| !r.problems.is_empty()).count();
    println!(
        "{} boot(s), {failed} with problems; report: {}",
        runs.len(),
        json.display()
    );
    Ok(failed == 0)
}

fn run_reproduce(a: &ReproduceArgs) -> Result<bool, MainError> {
    use guest_tests::expect::{Expectations, KERNELS, SCENARIOS};
    use guest_tests::{report, reproduce};

    let expectations = Expectations::load(&a.expected)?;
    let kernels = pick(&a.kernels, &KERNELS, "kernel variant")?;
    let scenarios = pick(&a.scenarios, &SCENARIOS, "scenario")?;
    let built = a.run.built(&kernels)?;
    let mut opts = a.run.options(&a.out_dir, a.run_timeout, a.guest_timeout)?;
    opts.jobs = a.jobs.max(1);
    eprintln!(
        "[reproduce] {} kernel(s) x {} scenario(s), {} at a time, {}; logs in {}",
        built.len(),
        scenarios.len(),
        opts.jobs,
        qemu::version(&a.run.qemu)?,
        a.out_dir.display()
    );
    let runs = reproduce::run_all(&built, &scenarios, &expectations, &opts);
    let json = a.out_dir.join("report.json");
    report::write_json(&json, &runs).map_err(|source| MainError::Io {
        what: "writing",
        path: json.clone(),
        source,
    })?;
    let junit = a.out_dir.join("report.junit.xml");
    std::fs::write(&junit, report::junit(&runs)).map_err(|source| MainError::Io {
        what: "writing",
        path: junit.clone(),
        source,
    })?;
    println!("{}", report::table(&runs));
    let unexpected = runs.iter().filter(|r| !r.expected).count();
    println!(
        "{} run(s), {} as expected, {unexpected} unexpected; report: {}, {}",
        runs.len(),
        runs.len() - unexpected,
        json.display(),
        junit.display()
    );
    Ok(unexpected == 0)
}

/// What happened to one variant.
#[derive(Debug)]
struct BootOutcome {
    name: String,
    /// Wall time from QEMU start to the first marker.
    first_marker: Option<Duration>,
    /// The guest's uptime when the runner started.
    guest_uptime: Option<String>,
    krelease: Option<String>,
    /// Wall time from QEMU start to the `done` marker.
    done: Option<Duration>,
    /// (pass, fail, skip) of the runner's KTAP.
    ktap: Option<(usize, usize, usize)>,
    problems: Vec<String>,
    console_tail: Vec<String>,
}

fn boot_one(v: &Variant, args: &BootArgs, run_dir: &Path) -> Result<BootOutcome, MainError> {
    std::fs::create_dir_all(run_dir).map_err(|source| MainError::RunDir {
        path: run_dir.to_path_buf(),
        source,
    })?;
    let mut cfg = QemuConfig::new(&v.bzimage(), &v.initramfs(), run_dir, "boot");
    cfg.binary = args.qemu.clone();
    cfg.accel = args.accel;
    if let Some(extra) = &args.append {
        cfg.append.push(' ');
        cfg.append.push_str(extra);
    }
    // A stale console from an earlier run in the same --log-dir would be read.
    let _ = std::fs::remove_file(&cfg.console);
    let timeout = Duration::from_secs(args.timeout);
    let mut out = BootOutcome {
        name: v.name.clone(),
        first_marker: None,
        guest_uptime: None,
        krelease: None,
        done: None,
        ktap: None,
        problems: Vec::new(),
        console_tail: Vec::new(),
    };
    let mut q = Qemu::spawn(&cfg, &run_dir.join("qemu.log"))?;
    let mut con = Console::new(&cfg.console);
    match con.wait_for_marker(RUNNER_START, timeout, || q.is_running()) {
        Ok(m) => {
            out.first_marker = Some(q.started().elapsed());
            out.guest_uptime = m.field("uptime").map(str::to_owned);
            out.krelease = m.field("kernel").map(str::to_owned);
            if !args.first_marker_only {
                finish_run(&mut q, &mut con, timeout, &mut out)?;
            }
        }
        Err(e) => out.problems.push(e.to_string()),
    }
    q.kill()?;
    if let Ok(log) = std::fs::read_to_string(q.log_path()) {
        for l in log.lines().filter(|l| !l.trim().is_empty()) {
            out.problems.push(format!("qemu: {l}"));
        }
    }
    let _ = con.poll();
    if !out.problems.is_empty() {
        out.console_tail = con.tail(40).to_vec();
    }
    Ok(out)
}

/// After the first marker: wait for `done`, QEMU's exit, and check the KTAP.
fn finish_run(
    q: &mut Qemu,
    con: &mut Console,
    timeout: Duration,
    out: &mut BootOutcome,
) -> Result<(), MainError> {
    match con.wait_for_marker(DONE, timeout, || q.is_running()) {
        Ok(_) => out.done = Some(q.started().elapsed()),
        Err(e) => out.problems.push(e.to_string()),
    }
    match q.wait_timeout(Duration::from_secs(30))? {
        Some(s) if s.success() => {}
        Some(s) => out.problems.push(format!("QEMU exited with {s}")),
        None => out
            .problems
            .push("QEMU did not exit within 30 s of the runner's end (poweroff failed?)".into()),
    }
    let _ = con.poll();
    let report = ktap::parse(&con.text());
    out.ktap = Some(report.counts());
    out.problems.extend(report.problems());
    Ok(())
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn run_boot(args: &BootArgs) -> Result<bool, MainError> {
    let cache = match &args.cache {
        Some(c) => c.clone(),
        None => variants::cache_root()?,
    };
    let list: Vec<Variant> = if args.variants.is_empty() {
        let l = variants::built_variants(&cache)?;
        if l.is_empty() {
            return Err(MainError::NoVariants(cache.join("variants")));
        }
        l
    } else {
        let mut l = Vec::new();
        for n in &args.variants {
            let v = variants::variant(&cache, n)?;
            v.check_built()?;
            l.push(v);
        }
        l
    };
    let qv = qemu::version(&args.qemu)?;
    eprintln!(
        "booting {} variant(s) with {} (-accel {}), timeout {} s",
        list.len(),
        qv,
        args.accel.as_str(),
        args.timeout
    );
    let tmp;
    let base = match &args.log_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::Builder::new()
                .prefix("guest-tests-boot.")
                .tempdir()
                .map_err(|source| MainError::RunDir {
                    path: std::env::temp_dir(),
                    source,
                })?;
            tmp.path().to_path_buf()
        }
    };
    let mut failed = Vec::new();
    for v in &list {
        eprintln!("{}: booting {}", v.name, v.bzimage().display());
        let started = Instant::now();
        let o = boot_one(v, args, &base.join(&v.name))?;
        let mut line = format!("{}:", o.name);
        match o.first_marker {
            Some(d) => line.push_str(&format!(" first marker after {}", secs(d))),
            None => line.push_str(" NO first marker"),
        }
        if let Some(u) = &o.guest_uptime {
            line.push_str(&format!(" (guest uptime {u} s)"));
        }
        if let Some(k) = &o.krelease {
            line.push_str(&format!(", kernel {k}"));
        }
        if let Some(d) = o.done {
            line.push_str(&format!(", runner done after {}", secs(d)));
        }
        if let Some((p, f, s)) = o.ktap {
            line.push_str(&format!(", KTAP {p} ok / {f} not ok / {s} skip"));
        }
        line.push_str(&format!(", total {}", secs(started.elapsed())));
        if o.problems.is_empty() {
            println!("{line}: PASS");
        } else {
            println!("{line}: FAIL");
            for p in &o.problems {
                println!("  {}: {p}", o.name);
            }
            println!("  {}: console tail:", o.name);
            for l in &o.console_tail {
                println!("  | {l}");
            }
            failed.push(o.name.clone());
        }
    }
    if let Some(d) = &args.log_dir {
        eprintln!("logs in {}", d.display());
    }
    if failed.is_empty() {
        println!("all {} variant(s) booted", list.len());
        Ok(true)
    } else {
        println!("FAILED: {}", failed.join(", "));
        Ok(false)
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let res = match &cli.cmd {
        Cmd::Boot(a) => run_boot(a),
        Cmd::Reproduce(a) => run_reproduce(a),
        Cmd::Bench(a) => run_bench(a),
    };
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            let mut msg = format!("guest-tests: error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_tests::console::ConsoleError;

    #[test]
    fn cli_parses_boot() {
        let c = Cli::try_parse_from([
            "guest-tests",
            "boot",
            "--variant",
            "6.1-baseline",
            "--variant",
            "6.12-kref",
            "--timeout",
            "60",
            "--accel",
            "kvm",
        ])
        .unwrap();
        let Cmd::Boot(b) = c.cmd else {
            panic!("not boot")
        };
        assert_eq!(b.variants, ["6.1-baseline", "6.12-kref"]);
        assert_eq!(b.timeout, 60);
        assert_eq!(b.accel, Accel::Kvm);
        assert!(Cli::try_parse_from(["guest-tests", "boot", "--timeout", "x"]).is_err());
    }

    #[test]
    fn cli_parses_reproduce() {
        let c = Cli::try_parse_from([
            "guest-tests",
            "reproduce",
            "--kernel",
            "6.1-baseline",
            "--scenario",
            "unbind",
            "--jobs",
            "1",
        ])
        .unwrap();
        let Cmd::Reproduce(r) = c.cmd else {
            panic!("not reproduce")
        };
        assert_eq!(r.kernels, ["6.1-baseline"]);
        assert_eq!(r.scenarios, ["unbind"]);
        assert_eq!(r.jobs, 1);
        assert_eq!(r.run_timeout, 300);
        assert!(Cli::try_parse_from(["guest-tests", "reproduce", "--jobs", "two"]).is_err());
    }

    #[test]
    fn unknown_kernels_and_scenarios_are_refused_by_name() {
        let c = Cli::try_parse_from([
            "guest-tests",
            "reproduce",
            "--kernel",
            "5.4-vintage",
            "--expected",
            concat!(env!("CARGO_MANIFEST_DIR"), "/expected.toml"),
        ])
        .unwrap();
        let Cmd::Reproduce(r) = c.cmd else {
            panic!("not reproduce")
        };
        let e = run_reproduce(&r).unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown kernel variant '5.4-vintage'"),
            "{e}"
        );
    }

    #[test]
    fn cli_parses_bench() {
        let c = Cli::try_parse_from(["guest-tests", "bench"]).unwrap();
        let Cmd::Bench(b) = c.cmd else {
            panic!("not bench")
        };
        assert_eq!(b.kernels, ["6.12-kref"]);
        assert_eq!(b.twr_us, [0, 5000]);
        assert_eq!(b.seconds, 3);
        let c = Cli::try_parse_from([
            "guest-tests",
            "bench",
            "--kernel",
            "6.1-baseline",
            "--twr-us",
            "10000",
            "--seconds",
            "1",
        ])
        .unwrap();
        let Cmd::Bench(b) = c.cmd else {
            panic!("not bench")
        };
        assert_eq!(b.kernels, ["6.1-baseline"]);
        assert_eq!(b.twr_us, [10000]);
        assert!(Cli::try_parse_from(["guest-tests", "bench", "--seconds", "0"]).is_err());
        assert!(Cli::try_parse_from(["guest-tests", "bench", "--twr-us", "2000000"]).is_err());
    }

    #[test]
    fn console_error_names_the_marker() {
        let e = ConsoleError::Timeout {
            marker: RUNNER_START.into(),
            waited: Duration::from_secs(3),
        };
        assert_eq!(e.to_string(), "no 'VGN-MARK: runner-start' within 3s");
    }
}
