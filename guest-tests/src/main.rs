// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `guest-tests`: boots the built guest kernel variants in QEMU.
//!
//! `guest-tests boot` is the boot check ([`guest_tests::boot`]),
//! `guest-tests reproduce` the end-to-end reproduction, and
//! `guest-tests bench` the guest-side benchmarks. Scenarios come from the
//! files of `guest-tests/scenarios/` and `--scenario-file`; kernel variants
//! from `guest-tests/kernel/variants.conf`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use guest_tests::ci::{self, CiError, KcidbOut};
use guest_tests::kcidb::{KcidbError, Submitter};
use guest_tests::qemu::{self, Accel, QemuError};
use guest_tests::report::RunReport;
use guest_tests::scenario::{self, FileKind, Scenario, ScenarioError};
use guest_tests::shard::{self, Exit, ScenariosOn, Shard, ShardError, EXIT_CODES_HELP};
use guest_tests::variants::{self, Conf, Variant, VariantError};

#[derive(Debug, Parser)]
#[command(
    name = "guest-tests",
    version,
    about = "Boot the guest kernel variants in QEMU and check the scenario runner",
    after_help = EXIT_CODES_HELP
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
    /// The end-to-end reproduction: every variant in every scenario (the files of
    /// the scenario directory, and --scenario-file); prints a table, writes
    /// report.json, a JUnit XML, report.html, the logs of each run and, with
    /// --kcidb, a KCIDB document; a run with no entry in expected.toml is
    /// "observed". --shard K/N runs one part of the matrix.
    #[command(after_help = EXIT_CODES_HELP)]
    Reproduce(ReproduceArgs),
    /// Merge the report.json of several (sharded) reproductions into one table,
    /// report.json, JUnit XML, report.html and, with --kcidb, KCIDB document, with
    /// the runs' logs copied beside them; exits like a single run would.
    #[command(after_help = EXIT_CODES_HELP)]
    Merge(MergeArgs),
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
    #[command(flatten)]
    files: FileArgs,
}

/// Where the scenario files and the variant list are.
#[derive(Debug, Args)]
struct FileArgs {
    /// The scenario files (every *.toml).
    #[arg(long, default_value = "guest-tests/scenarios", value_name = "DIR")]
    scenarios_dir: PathBuf,
    /// The kernel variants (their names and order).
    #[arg(
        long,
        default_value = "guest-tests/kernel/variants.conf",
        value_name = "FILE"
    )]
    variants_conf: PathBuf,
}

impl FileArgs {
    fn scenarios(&self) -> Result<Vec<Scenario>, MainError> {
        Ok(scenario::load_dir(&self.scenarios_dir)?)
    }

    fn conf(&self) -> Result<Conf, MainError> {
        Ok(Conf::load(&self.variants_conf)?)
    }
}

#[derive(Debug, Args)]
struct ReproduceArgs {
    /// Kernel variant (repeatable); default: every variant of variants.conf.
    #[arg(long = "kernel", value_name = "V")]
    kernels: Vec<String>,
    /// Scenario (repeatable; `all`: every one of the scenario directory); default: all,
    /// unless --scenario-file is given.
    #[arg(long = "scenario", value_name = "S")]
    scenarios: Vec<String>,
    /// A scenario file to run (repeatable), checked before any kernel boots; with no
    /// --scenario, only these files run.
    #[arg(long = "scenario-file", value_name = "FILE")]
    scenario_files: Vec<PathBuf>,
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
    /// Run only part K of N of the kernel x scenario matrix (a deterministic split:
    /// N jobs given the same kernels and scenarios run every pair once between them;
    /// merge their reports with `guest-tests merge`).
    #[arg(long, value_name = "K/N", default_value = "1/1")]
    shard: Shard,
    /// On kernel V, run only these scenarios of the matrix (repeatable; the kernel and
    /// scenarios must be among those picked); the other kernels run every scenario. For
    /// example a debug kernel on only the scenarios where its sanitizers see more.
    #[arg(long = "scenarios-on", value_name = "V=S[,S...]")]
    scenarios_on: Vec<ScenariosOn>,
    #[command(flatten)]
    kcidb: KcidbArgs,
    #[command(flatten)]
    run: RunArgs,
}

/// The KCIDB document's file and ids.
#[derive(Debug, Args)]
struct KcidbArgs {
    /// Also write the results as a KCIDB (v5.3) JSON document to FILE.
    #[arg(long, value_name = "FILE")]
    kcidb: Option<PathBuf>,
    /// KCIDB origin (the CI system's name, [a-z0-9_]+).
    #[arg(long, default_value = "vhost_gpio_nvmem", value_name = "ORIGIN")]
    kcidb_origin: String,
    /// KCIDB submission id, part of every id (default: the UTC time, like 2026-12-02T071500Z).
    #[arg(long, value_name = "ID")]
    kcidb_submission: Option<String>,
    /// Where the run directory's files are served: log URLs are this plus a file name
    /// (default: file://<absolute run dir>/).
    #[arg(long, value_name = "URL")]
    kcidb_url_base: Option<String>,
}

impl KcidbArgs {
    /// What to write, if asked: the logs are in `dir`, the builds in `cache`.
    fn out(&self, dir: &Path, cache: &Option<PathBuf>) -> Result<Option<KcidbOut>, MainError> {
        let Some(path) = &self.kcidb else {
            return Ok(None);
        };
        let abs = std::path::absolute(dir).map_err(|source| MainError::Io {
            what: "resolving",
            path: dir.to_path_buf(),
            source,
        })?;
        let url = self.kcidb_url_base.clone().unwrap_or_else(|| {
            let path = guest_tests::markup::url_path(&abs.to_string_lossy());
            format!("file://{path}/")
        });
        let submission = self
            .kcidb_submission
            .clone()
            .unwrap_or_else(ci::default_submission);
        let who = Submitter::new(&self.kcidb_origin, &submission, &url)?;
        let cache = match cache {
            Some(c) => c.clone(),
            None => variants::cache_root()?,
        };
        Ok(Some(KcidbOut {
            path: path.clone(),
            who,
            variants_dir: cache.join("variants"),
        }))
    }
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// Run directories (each with a report.json and the runs' logs).
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Where the merged report goes (the runs' logs are copied there).
    #[arg(long, default_value = "target/merged", value_name = "DIR")]
    out: PathBuf,
    /// Cache root, for the builds of the KCIDB document (default: as for reproduce).
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    #[command(flatten)]
    kcidb: KcidbArgs,
}

#[derive(Debug, Args)]
struct BootArgs {
    #[command(flatten)]
    files: FileArgs,
    /// Variant to boot (repeatable); default: every built variant in the cache.
    #[arg(long = "variant", value_name = "V")]
    variants: Vec<String>,
    /// Seconds to wait for the runner's first marker, and again for it to finish.
    #[arg(long, default_value_t = 120, value_name = "S")]
    timeout: u64,
    /// Only wait for the first marker; don't require the runner to finish.
    #[arg(long)]
    first_marker_only: bool,
    /// Guests at a time (each line is printed when its variant is done; the
    /// summary keeps the variants' order).
    #[arg(long, default_value_t = 1, value_name = "N")]
    jobs: usize,
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
    #[error(transparent)]
    Qemu(#[from] QemuError),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Boot(#[from] guest_tests::boot::BootError),
    #[error("no {kind} scenario in {dir}")]
    NoScenario { kind: &'static str, dir: PathBuf },
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
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(transparent)]
    Kcidb(#[from] KcidbError),
    #[error(transparent)]
    Ci(#[from] CiError),
    #[error("reading {path}")]
    Report {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl MainError {
    /// The exit status of an error: the infrastructure (a kernel not built, QEMU or a
    /// backend missing or not starting) is 3; the rest is a usage or file error, 2.
    fn exit(&self) -> Exit {
        match self {
            MainError::Qemu(_) | MainError::Boot(_) | MainError::MissingBinary(..) => {
                Exit::Infrastructure
            }
            MainError::Variant(VariantError::NotBuilt { .. }) => Exit::Infrastructure,
            _ => Exit::Usage,
        }
    }
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
    fn cache(&self) -> Result<PathBuf, MainError> {
        Ok(match &self.cache {
            Some(c) => c.clone(),
            None => variants::cache_root()?,
        })
    }

    /// The kernels given, each a variant of variants.conf or a kernel of the user's own
    /// built into the cache (whose origin is then printed); every variant of variants.conf
    /// when none is given.
    fn pick_kernels(&self, given: &[String], conf: &Conf) -> Result<Vec<String>, MainError> {
        let cache = self.cache()?;
        let own = variants::own_kernels(&cache);
        let mut known: Vec<&str> = conf.names().collect();
        known.extend(own.iter().map(|(n, _)| n.as_str()));
        let picked = if given.is_empty() {
            conf.names().map(str::to_string).collect()
        } else {
            pick(given, &known, "kernel variant")?
        };
        for (name, origin) in own.iter().filter(|(n, _)| picked.contains(n)) {
            let describe =
                std::fs::read_to_string(cache.join("variants").join(name).join("describe"))
                    .unwrap_or_default();
            eprintln!("[reproduce] {name}: a kernel of your own");
            for line in origin.lines().filter(|l| !l.is_empty()) {
                eprintln!("[reproduce]   {line}");
            }
            // The origin file carries it already when build-guest wrote one there.
            if !describe.trim().is_empty() && !origin.lines().any(|l| l.starts_with("describe: ")) {
                eprintln!("[reproduce]   describe: {}", describe.trim());
            }
        }
        Ok(picked)
    }

    /// The named variants, each built.
    fn built(&self, names: &[String]) -> Result<Vec<Variant>, MainError> {
        let cache = self.cache()?;
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
    ) -> Result<guest_tests::run::Options, MainError> {
        let opts = guest_tests::run::Options {
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

/// The one scenario of a kind in the scenario directory.
fn scenario_of_kind(
    files: &FileArgs,
    kind: FileKind,
    what: &'static str,
) -> Result<Scenario, MainError> {
    files
        .scenarios()?
        .into_iter()
        .find(|s| s.kind == kind)
        .ok_or_else(|| MainError::NoScenario {
            kind: what,
            dir: files.scenarios_dir.clone(),
        })
}

fn run_bench(a: &BenchArgs) -> Result<bool, MainError> {
    use guest_tests::bench;

    let conf = a.run.files.conf()?;
    let scenario = scenario_of_kind(&a.run.files, FileKind::Bench, "bench")?;
    let built = a.run.built(&a.run.pick_kernels(&a.kernels, &conf)?)?;
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
    let runs = bench::run_all(&built, &scenario, &a.twr_us, &opts);
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

/// The scenarios to run: the named ones of the directory, and every --scenario-file (all
/// checked before anything boots).
fn pick_scenarios(a: &ReproduceArgs) -> Result<Vec<Scenario>, MainError> {
    let known: Vec<Scenario> = a
        .run
        .files
        .scenarios()?
        .into_iter()
        .filter(|s| s.kind == FileKind::Reproduce)
        .collect();
    let mut extra = Vec::new();
    for f in &a.scenario_files {
        let s = Scenario::load(f)?;
        if s.kind != FileKind::Reproduce {
            return Err(MainError::Unknown {
                what: "kind for --scenario-file (only reproduce files run here)",
                name: format!("{:?} in {}", s.kind, f.display()),
                known: "reproduce".into(),
            });
        }
        scenario::add(&mut extra, s)?;
    }
    let names: Vec<&str> = known.iter().map(|s| s.name.as_str()).collect();
    let mut out = Vec::new();
    let all = a.scenarios.iter().any(|n| n == scenario::ALL);
    if !a.scenarios.is_empty() || extra.is_empty() {
        let given: &[String] = if all { &[] } else { &a.scenarios };
        for n in pick(given, &names, "scenario")? {
            out.extend(known.iter().find(|s| s.name == n).cloned());
        }
    }
    for s in extra {
        scenario::add(&mut out, s)?;
    }
    Ok(out)
}

fn run_reproduce(a: &ReproduceArgs) -> Result<Exit, MainError> {
    use guest_tests::expect::Expectations;
    use guest_tests::reproduce;

    let conf = a.run.files.conf()?;
    let scenarios = pick_scenarios(a)?;
    let expectations = Expectations::load(&a.expected)?;
    expectations.check(&scenarios)?;
    let kernels = a.run.pick_kernels(&a.kernels, &conf)?;
    let names: Vec<String> = scenarios.iter().map(|s| s.name.clone()).collect();
    for on in &a.scenarios_on {
        pick(
            std::slice::from_ref(&on.kernel),
            &kernels.iter().map(String::as_str).collect::<Vec<_>>(),
            "kernel for --scenarios-on (not among those picked)",
        )?;
        pick(
            &on.scenarios,
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
            "scenario for --scenarios-on (not among those picked)",
        )?;
    }
    let kcidb = a.kcidb.out(&a.out_dir, &a.run.cache)?;
    let built = a.run.built(&kernels)?;
    let mut opts = a.run.options(&a.out_dir, a.run_timeout, a.guest_timeout)?;
    opts.jobs = a.jobs.max(1);
    let mine = a.shard.select(&kernels, &names, &a.scenarios_on);
    let qemu_version = qemu::version(&a.run.qemu)?;
    eprintln!(
        "[reproduce] {} kernel(s) x {} scenario(s), shard {}: {} run(s), {} at a time, {}; logs in {}",
        built.len(),
        scenarios.len(),
        a.shard,
        mine.len(),
        opts.jobs,
        qemu_version,
        a.out_dir.display()
    );
    let mut runs = reproduce::run_all(&built, &scenarios, &expectations, &opts, &mine);
    guest_tests::report::group_titles(&mut runs);
    let narrowed = if a.scenarios_on.is_empty() {
        ""
    } else {
        " (narrowed by --scenarios-on)"
    };
    let meta = format!(
        "shard {} of the {} kernel(s) x {} scenario(s) matrix{narrowed}: {} run(s); {}",
        a.shard,
        built.len(),
        scenarios.len(),
        runs.len(),
        qemu_version
    );
    let exit = finish(&a.out_dir, &runs, &meta, kcidb.as_ref())?;
    let wall = runs
        .iter()
        .map(|r| r.offset_seconds.unwrap_or(0.0) + r.seconds)
        .fold(0.0, f64::max);
    println!(
        "\nwhere the time went (stage_seconds of report.json):\n{}",
        guest_tests::timing::Summary::new(&runs, wall, opts.jobs).table()
    );
    Ok(exit)
}

/// Writes the outputs of `runs` into `dir`, prints the table and the summary and returns
/// the exit status.
fn finish(
    dir: &Path,
    runs: &[RunReport],
    meta: &str,
    kcidb: Option<&KcidbOut>,
) -> Result<Exit, MainError> {
    use guest_tests::report;

    let written = ci::write_outputs(dir, runs, meta, kcidb)?;
    println!("{}", report::table(runs));
    let unexpected = runs.iter().filter(|r| r.unexpected()).count();
    let observed = runs
        .iter()
        .filter(|r| r.verdict == report::Verdict::Observed)
        .count();
    let skipped = runs
        .iter()
        .filter(|r| r.verdict == report::Verdict::Skipped)
        .count();
    let infra = runs.iter().filter(|r| r.infrastructure.is_some()).count();
    for r in runs {
        if let Some(i) = &r.infrastructure {
            println!("infrastructure: {} {}: {i}", r.kernel, r.scenario);
        }
    }
    println!(
        "{meta}\n{} run(s), {} as expected, {unexpected} unexpected ({infra} infrastructure), {observed} observed (no expectation), {skipped} skipped (kernel lacks a need); report: {}",
        runs.len(),
        runs.len() - unexpected - observed - skipped,
        written
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ci::exit_of(runs))
}

fn run_merge(a: &MergeArgs) -> Result<Exit, MainError> {
    let mut parts = Vec::new();
    for d in &a.dirs {
        let path = d.join("report.json");
        let text = std::fs::read_to_string(&path).map_err(|source| MainError::Io {
            what: "reading",
            path: path.clone(),
            source,
        })?;
        let runs: Vec<RunReport> =
            serde_json::from_str(&text).map_err(|source| MainError::Report {
                path: path.clone(),
                source,
            })?;
        parts.push(runs);
    }
    let mut runs = shard::merge(parts, |r: &RunReport| {
        (r.kernel.clone(), r.scenario.clone())
    })?;
    // Each shard grouped its own titles; the merged report groups them across all runs.
    guest_tests::report::group_titles(&mut runs);
    std::fs::create_dir_all(&a.out).map_err(|source| MainError::Io {
        what: "creating",
        path: a.out.clone(),
        source,
    })?;
    // The runs' logs, beside the merged report (the page and the KCIDB URLs name them).
    let out_abs = std::path::absolute(&a.out).ok();
    for d in &a.dirs {
        if std::path::absolute(d).ok() == out_abs {
            continue;
        }
        let entries = std::fs::read_dir(d).map_err(|source| MainError::Io {
            what: "reading",
            path: d.clone(),
            source,
        })?;
        for e in entries.flatten() {
            let name = e.file_name();
            let keep = name.to_str().is_some_and(|n| {
                n.ends_with(".log")
                    && runs
                        .iter()
                        .any(|r| n.starts_with(&format!("{}--{}.", r.kernel, r.scenario)))
            });
            if keep {
                let to = a.out.join(&name);
                std::fs::copy(e.path(), &to).map_err(|source| MainError::Io {
                    what: "copying to",
                    path: to.clone(),
                    source,
                })?;
            }
        }
    }
    let kcidb = a.kcidb.out(&a.out, &a.cache)?;
    let meta = format!(
        "merged from {} report(s): {}: {} run(s)",
        a.dirs.len(),
        a.dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        runs.len()
    );
    finish(&a.out, &runs, &meta, kcidb.as_ref())
}

fn run_boot(a: &BootArgs) -> Result<bool, MainError> {
    let cfg = guest_tests::boot::Config {
        variants: a.variants.clone(),
        conf: a.files.conf()?,
        timeout: a.timeout,
        first_marker_only: a.first_marker_only,
        jobs: a.jobs.max(1),
        accel: a.accel,
        qemu: a.qemu.clone(),
        cache: a.cache.clone(),
        log_dir: a.log_dir.clone(),
        append: a.append.clone(),
        scenario: scenario_of_kind(&a.files, FileKind::Boot, "boot")?,
    };
    Ok(guest_tests::boot::run(&cfg)?)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let pass_fail = |ok: bool| if ok { Exit::AsExpected } else { Exit::Differs };
    let res = match &cli.cmd {
        Cmd::Boot(a) => run_boot(a).map(pass_fail),
        Cmd::Reproduce(a) => run_reproduce(a),
        Cmd::Merge(a) => run_merge(a),
        Cmd::Bench(a) => run_bench(a).map(pass_fail),
    };
    match res {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            eprintln!("guest-tests: error: {}", guest_tests::error_chain(&e));
            ExitCode::from(e.exit().code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_tests::console::{ConsoleError, RUNNER_START};

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

    /// `guest-tests reproduce` with the repository's files and `extra` arguments.
    fn reproduce(extra: &[&str]) -> ReproduceArgs {
        let mut args = vec![
            "guest-tests",
            "reproduce",
            "--expected",
            concat!(env!("CARGO_MANIFEST_DIR"), "/expected.toml"),
            "--scenarios-dir",
            concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios"),
            "--variants-conf",
            concat!(env!("CARGO_MANIFEST_DIR"), "/kernel/variants.conf"),
            "--cache",
            "/nonexistent-cache",
        ];
        args.extend_from_slice(extra);
        let Cmd::Reproduce(r) = Cli::try_parse_from(args).unwrap().cmd else {
            panic!("not reproduce")
        };
        r
    }

    #[test]
    fn unknown_kernels_and_scenarios_are_refused_by_name() {
        let e = run_reproduce(&reproduce(&["--kernel", "5.4-vintage"])).unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown kernel variant '5.4-vintage'"),
            "{e}"
        );
        let e = run_reproduce(&reproduce(&["--scenario", "unbnid"])).unwrap_err();
        assert!(e.to_string().contains("unknown scenario 'unbnid'"), "{e}");
    }

    #[test]
    fn scenarios_on_names_only_picked_kernels_and_scenarios() {
        let e = run_reproduce(&reproduce(&[
            "--kernel",
            "6.1-baseline",
            "--scenarios-on",
            "6.12-debug=unbind",
        ]))
        .unwrap_err();
        assert!(
            e.to_string().contains(
                "unknown kernel for --scenarios-on (not among those picked) '6.12-debug' (known: 6.1-baseline)"
            ),
            "{e}"
        );
        let e = run_reproduce(&reproduce(&[
            "--kernel",
            "6.1-baseline",
            "--scenario",
            "unbind",
            "--scenarios-on",
            "6.1-baseline=unbind,replug",
        ]))
        .unwrap_err();
        assert!(
            e.to_string().contains(
                "unknown scenario for --scenarios-on (not among those picked) 'replug' (known: unbind)"
            ),
            "{e}"
        );
        let e = Cli::try_parse_from(["guest-tests", "reproduce", "--scenarios-on", "6.12-debug"])
            .unwrap_err();
        assert!(
            e.to_string().contains("KERNEL=SCENARIO[,SCENARIO...]"),
            "{e}"
        );
    }

    #[test]
    fn scenario_files_are_checked_before_any_kernel_boots() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "name = \"bad\"\npurpose = \"x\"\n\n[[step]]\ndo = \"mark\"\nmark = \"lonely\"\n",
        )
        .unwrap();
        let bad = bad.display().to_string();
        let e = run_reproduce(&reproduce(&["--scenario-file", &bad])).unwrap_err();
        assert_eq!(
            guest_tests::error_chain(&e),
            format!("{bad}:4: mark 'lonely' has no host action: add [[on]] mark = \"lonely\"")
        );
        // A good file gets as far as the kernels: none is built in this cache.
        let good = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/examples/stock-unbind-then-unplug.toml"
        );
        let e = run_reproduce(&reproduce(&[
            "--scenario-file",
            good,
            "--kernel",
            "6.1-baseline",
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("is not built"), "{e}");
    }

    #[test]
    fn the_scenario_selection() {
        let names = |a: &ReproduceArgs| -> Vec<String> {
            pick_scenarios(a)
                .unwrap()
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        let all = names(&reproduce(&[]));
        assert!(all.contains(&"unbind".to_string()) && all.contains(&"level-irq".to_string()));
        assert!(!all.contains(&"bench".to_string()) && !all.contains(&"boot".to_string()));
        let ex = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/examples/stock-unbind-then-unplug.toml"
        );
        assert_eq!(
            names(&reproduce(&["--scenario-file", ex])),
            ["stock-unbind-then-unplug"]
        );
        assert_eq!(
            names(&reproduce(&["--scenario", "irq", "--scenario-file", ex])),
            ["irq", "stock-unbind-then-unplug"]
        );
        let with_all = names(&reproduce(&["--scenario", "all", "--scenario-file", ex]));
        assert_eq!(with_all.len(), all.len() + 1);
        let dup = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/60-irq.toml");
        let e =
            pick_scenarios(&reproduce(&["--scenario", "irq", "--scenario-file", dup])).unwrap_err();
        assert!(
            e.to_string().contains("scenario 'irq' is already defined"),
            "{e}"
        );
    }

    #[test]
    fn cli_parses_shards_kcidb_and_merge() {
        let r = reproduce(&["--shard", "2/3", "--kcidb", "k.json"]);
        assert_eq!(r.shard, Shard { index: 2, count: 3 });
        assert_eq!(r.kcidb.kcidb_origin, "vhost_gpio_nvmem");
        assert_eq!(reproduce(&[]).shard, Shard::WHOLE);
        assert!(Cli::try_parse_from(["guest-tests", "reproduce", "--shard", "3/2"]).is_err());
        let Cmd::Merge(m) = Cli::try_parse_from(["guest-tests", "merge", "a", "b", "--out", "c"])
            .unwrap()
            .cmd
        else {
            panic!("not merge")
        };
        assert_eq!(m.dirs, [PathBuf::from("a"), PathBuf::from("b")]);
        assert!(Cli::try_parse_from(["guest-tests", "merge"]).is_err());
        // A bad origin is a usage error, before anything runs.
        let e = run_reproduce(&reproduce(&[
            "--kcidb",
            "k.json",
            "--kcidb-origin",
            "Bad-Origin",
        ]))
        .unwrap_err();
        assert_eq!(e.exit(), Exit::Usage);
        assert!(e.to_string().contains("Bad-Origin"), "{e}");
    }

    #[test]
    fn errors_before_any_run_exit_2_or_3() {
        let e = run_reproduce(&reproduce(&["--kernel", "5.4-vintage"])).unwrap_err();
        assert_eq!(e.exit(), Exit::Usage);
        // No kernel built in this cache: the infrastructure.
        let e = run_reproduce(&reproduce(&["--kernel", "6.1-baseline"])).unwrap_err();
        assert_eq!(e.exit(), Exit::Infrastructure, "{e}");
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
