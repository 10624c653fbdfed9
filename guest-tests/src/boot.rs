// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `guest-tests boot`: boots each built variant with the boot scenario (`kind = "boot"`, no
//! backends) and checks that the scenario runner starts (its first marker), then that it
//! finishes its KTAP plan and powers off.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::console::{Console, DONE, RUNNER_START};
use crate::ktap;
use crate::qemu::{self, Accel, Qemu, QemuConfig, QemuError};
use crate::run::initrd_with_steps;
use crate::scenario::Scenario;
use crate::variants::{self, Variant, VariantError};

/// Errors of the boot check.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A variant could not be found.
    #[error(transparent)]
    Variant(#[from] VariantError),
    /// Nothing is built.
    #[error("no built variant in {0} (run scripts/build-guest)")]
    NoVariants(PathBuf),
    /// The run directory or the run's initramfs could not be made.
    #[error("creating {path}")]
    RunDir {
        /// What.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU failed.
    #[error(transparent)]
    Qemu(#[from] QemuError),
}

/// What the boot check does.
#[derive(Debug)]
pub struct Config {
    /// Variants to boot; empty: every built one.
    pub variants: Vec<String>,
    /// The variants of variants.conf (their order).
    pub conf: variants::Conf,
    /// Seconds to wait for the first marker, and again for the runner to finish.
    pub timeout: u64,
    /// Only wait for the first marker.
    pub first_marker_only: bool,
    /// Guests at a time (at least 1).
    pub jobs: usize,
    /// Accelerator.
    pub accel: Accel,
    /// QEMU binary.
    pub qemu: PathBuf,
    /// Cache root (default: the environment's).
    pub cache: Option<PathBuf>,
    /// Keep the logs in DIR/<variant>/.
    pub log_dir: Option<PathBuf>,
    /// Extra kernel command-line words.
    pub append: Option<String>,
    /// The boot scenario.
    pub scenario: Scenario,
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

fn boot_one(v: &Variant, args: &Config, run_dir: &Path) -> Result<BootOutcome, BootError> {
    std::fs::create_dir_all(run_dir).map_err(|source| BootError::RunDir {
        path: run_dir.to_path_buf(),
        source,
    })?;
    let initrd = run_dir.join("initrd.img");
    initrd_with_steps(&v.initramfs(), &args.scenario.guest_script(), &initrd).map_err(
        |source| BootError::RunDir {
            path: initrd.clone(),
            source,
        },
    )?;
    let mut cfg = QemuConfig::new(&v.bzimage(), &initrd, run_dir, &args.scenario.name);
    cfg.binary = args.qemu.clone();
    cfg.accel = args.accel;
    cfg.memory_mib = v.memory_mib();
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
) -> Result<(), BootError> {
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

/// Prints a variant's line (and, if it failed, its problems and console tail) as one
/// write, so lines of guests running side by side do not interleave. True if it passed.
fn report(o: &BootOutcome, total: Duration) -> bool {
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
    line.push_str(&format!(", total {}", secs(total)));
    if o.problems.is_empty() {
        println!("{line}: PASS");
        return true;
    }
    line.push_str(": FAIL");
    for p in &o.problems {
        line.push_str(&format!("\n  {}: {p}", o.name));
    }
    line.push_str(&format!("\n  {}: console tail:", o.name));
    for l in &o.console_tail {
        line.push_str(&format!("\n  | {l}"));
    }
    println!("{line}");
    false
}

/// Boots every variant asked for (every built one by default), `jobs` at a time, and
/// prints a line each.
pub fn run(args: &Config) -> Result<bool, BootError> {
    let cache = match &args.cache {
        Some(c) => c.clone(),
        None => variants::cache_root()?,
    };
    let list: Vec<Variant> = if args.variants.is_empty() {
        let l = variants::built_variants(&cache, &args.conf)?;
        if l.is_empty() {
            return Err(BootError::NoVariants(cache.join("variants")));
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
                .map_err(|source| BootError::RunDir {
                    path: std::env::temp_dir(),
                    source,
                })?;
            tmp.path().to_path_buf()
        }
    };
    // Variants are taken by `jobs` workers, the debug ones first (they boot ten times as
    // long, so they do not end the check alone), the rest in order; each line is printed
    // when its variant is done, the first error (QEMU would not start, ...) ends the check
    // once the guests already running are done.
    let mut order: Vec<usize> = (0..list.len()).collect();
    order.sort_by_key(|&i| !list[i].is_debug());
    let next = AtomicUsize::new(0);
    let error: Mutex<Option<BootError>> = Mutex::new(None);
    let failed: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.clamp(1, list.len()) {
            scope.spawn(|| loop {
                if error.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                    return;
                }
                let Some(&i) = order.get(next.fetch_add(1, Ordering::SeqCst)) else {
                    return;
                };
                let v = &list[i];
                eprintln!("{}: booting {}", v.name, v.bzimage().display());
                let started = Instant::now();
                match boot_one(v, args, &base.join(&v.name)) {
                    Ok(o) => {
                        if !report(&o, started.elapsed()) {
                            failed.lock().unwrap_or_else(|e| e.into_inner()).push(i);
                        }
                    }
                    Err(e) => {
                        error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                    }
                }
            });
        }
    });
    if let Some(e) = error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let mut failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
    failed.sort_unstable();
    let failed: Vec<&str> = failed.iter().map(|&i| list[i].name.as_str()).collect();
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
