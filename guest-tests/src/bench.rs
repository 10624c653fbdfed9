// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Guest-side benchmarks: boot a kernel variant with both backends in a bench scenario file
//! (`kind = "bench"`, `guest-tests/scenarios/bench.toml`), where
//! the guest times, from user space, GPIO set/get round trips through the GPIO character
//! device and whole-EEPROM nvmem reads and writes (`gpio-tool bench`), once per write cycle
//! time of the emulated 24c32. The harness collects the guest's `bench` markers, checks that
//! the last write the guest made is what the host's EEPROM image holds, and reports a table
//! and JSON.
//!
//! These are measurements, not tests: nothing here compares a figure with a threshold.

use std::path::Path;
use std::time::{Duration, Instant};

use gpio_tool::bench::fnv64;
use serde::Serialize;

use crate::console::Marker;
use crate::run::{self, Options, RunDir};
use crate::scenario::{Action, Scenario};
use crate::variants::Variant;

/// One figure the guest reported (a `bench` marker).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figure {
    /// What was timed: gpio-set, gpio-get, nvmem-read, nvmem-write.
    pub kind: String,
    /// Operations timed (gpio).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops: Option<u64>,
    /// Operations per second over the time spent in them (gpio).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_s: Option<f64>,
    /// Median latency of one operation, microseconds (gpio).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<f64>,
    /// 99th percentile latency, microseconds (gpio).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<f64>,
    /// Set values read back wrong (gpio; 0 when all were right).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatches: Option<u64>,
    /// Size of the device (nvmem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Whole-device passes (nvmem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passes: Option<u64>,
    /// Bytes per second over the timed transfers (nvmem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_per_s: Option<f64>,
    /// Page size at24 was given by the guest module (nvmem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagesize: Option<u32>,
    /// FNV-1a 64 of the last data written, as the guest computed it (nvmem-write).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fnv64: Option<String>,
    /// Seconds the guest's loop ran.
    pub seconds: f64,
}

impl Figure {
    /// The figure of a `bench` marker; None for other markers or one without a kind.
    pub fn from_marker(m: &Marker) -> Option<Figure> {
        if m.name != "bench" {
            return None;
        }
        let num = |k: &str| m.field(k).and_then(|v| v.parse::<f64>().ok());
        let int = |k: &str| m.field(k).and_then(|v| v.parse::<u64>().ok());
        Some(Figure {
            kind: m.field("kind")?.to_string(),
            ops: int("ops"),
            per_s: num("per_s"),
            p50_us: num("p50_us"),
            p99_us: num("p99_us"),
            mismatches: int("mismatches"),
            bytes: int("bytes"),
            passes: int("passes"),
            bytes_per_s: num("bytes_per_s"),
            pagesize: m.field("pagesize").and_then(|v| v.parse().ok()),
            fnv64: m.field("fnv64").map(str::to_string),
            seconds: num("seconds").unwrap_or(0.0),
        })
    }
}

/// One benchmark boot: a kernel variant at one write cycle time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchRun {
    /// Kernel variant.
    pub kernel: String,
    /// Write cycle time of the 24c32, microseconds.
    pub twr_us: u32,
    /// QEMU's version, from QMP.
    pub qemu: String,
    /// The figures, in the order the guest printed them.
    pub figures: Vec<Figure>,
    /// Whether the host image holds the last data the guest wrote (None: nothing written).
    pub image_matches_last_write: Option<bool>,
    /// Kernel splats seen on the console (there should be none).
    pub splats: usize,
    /// How the run ended.
    pub ended: String,
    /// What went wrong: harness errors, KTAP failures, a wrong image, missing figures.
    pub problems: Vec<String>,
    /// Wall time of the boot, seconds.
    pub seconds: f64,
}

impl BenchRun {
    /// The figure of a kind.
    pub fn figure(&self, kind: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.kind == kind)
    }
}

/// The figures every bench boot must produce.
pub const KINDS: [&str; 4] = ["gpio-set", "gpio-get", "nvmem-read", "nvmem-write"];

/// Judges what a boot produced: figures, the image check and the problems.
pub fn judge(
    run: &mut BenchRun,
    markers: &[Marker],
    image: Option<&[u8]>,
    ktap_problems: &[String],
) {
    run.figures = markers.iter().filter_map(Figure::from_marker).collect();
    run.problems.extend(ktap_problems.iter().cloned());
    for k in KINDS {
        if run.figure(k).is_none() {
            run.problems.push(format!("no {k} figure"));
        }
    }
    for f in &run.figures {
        // The page size at24 was given for this EEPROM: the write figure means little
        // without it.
        if f.kind.starts_with("nvmem-") && f.pagesize.is_none() {
            run.problems
                .push(format!("{}: no page size for its EEPROM", f.kind));
        }
        if let Some(n) = f.mismatches.filter(|&n| n > 0) {
            run.problems
                .push(format!("{}: {n} values read back wrong", f.kind));
        }
    }
    if let Some(want) = run.figure("nvmem-write").and_then(|f| f.fnv64.clone()) {
        let got = image.map(|d| format!("{:016x}", fnv64(d)));
        let matches = got.as_deref() == Some(want.as_str());
        run.image_matches_last_write = Some(matches);
        if !matches {
            run.problems.push(format!(
                "the EEPROM image (fnv64 {}) is not the guest's last write (fnv64 {want})",
                got.as_deref().unwrap_or("unreadable")
            ));
        }
    }
    if run.splats > 0 {
        run.problems
            .push(format!("{} kernel splat(s) on the console", run.splats));
    }
}

/// The EEPROM whose image must hold the guest's last write: the one of the scenario's first
/// `bench-nvmem` write step (else its first EEPROM).
fn written_eeprom(scenario: &Scenario) -> Option<&str> {
    scenario
        .steps
        .iter()
        .find_map(|s| match &s.action {
            Action::BenchNvmem {
                eeprom,
                write: true,
            } => Some(eeprom.as_str()),
            _ => None,
        })
        .or_else(|| scenario.devices.eeproms.first().map(|e| e.id.as_str()))
}

/// Boots `variant` once in the bench scenario with its first EEPROM's write cycle at `twr_us`.
pub fn bench_one(variant: &Variant, scenario: &Scenario, twr_us: u32, opts: &Options) -> BenchRun {
    let start = Instant::now();
    let mut opts = opts.clone();
    opts.twr_us = Some(twr_us);
    let stem = format!("{}--{}-twr{twr_us}", variant.name, scenario.name);
    let mut run = BenchRun {
        kernel: variant.name.clone(),
        twr_us,
        ..BenchRun::default()
    };
    match RunDir::new(&opts.out_dir, &stem).and_then(|dir| run::run(variant, scenario, &opts, &dir))
    {
        Ok(f) => {
            run.qemu = f.qemu;
            run.splats = f.observations.console.splats.len();
            run.ended = f.ended;
            if !f.done {
                run.problems
                    .push(format!("the runner did not finish: {}", run.ended));
            }
            run.problems.extend(f.notes.iter().cloned());
            let image = written_eeprom(scenario).and_then(|id| f.images.get(id));
            judge(
                &mut run,
                &f.markers,
                image.map(Vec::as_slice),
                &f.ktap_problems,
            );
        }
        Err(e) => {
            run.ended = format!("harness error: {}", crate::error_chain(&e));
            run.problems.push(run.ended.clone());
        }
    }
    run.seconds = start.elapsed().as_secs_f64();
    run
}

/// Runs every (variant, tWR) pair one after the other (a benchmark has the machine to
/// itself), with progress on stderr.
pub fn run_all(
    variants: &[Variant],
    scenario: &Scenario,
    twr_us: &[u32],
    opts: &Options,
) -> Vec<BenchRun> {
    let total = variants.len() * twr_us.len();
    let mut out = Vec::with_capacity(total);
    for v in variants {
        for &t in twr_us {
            eprintln!(
                "[bench] {}/{total} {} tWR {t} us: booting",
                out.len() + 1,
                v.name
            );
            let r = bench_one(v, scenario, t, opts);
            eprintln!(
                "[bench] {}/{total} {} tWR {t} us: {} in {:.0} s{}",
                out.len() + 1,
                v.name,
                if r.problems.is_empty() {
                    "ok"
                } else {
                    "FAILED"
                },
                r.seconds,
                if r.problems.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.problems.join("; "))
                }
            );
            out.push(r);
        }
    }
    out
}

fn gpio_cell(f: Option<&Figure>) -> String {
    match f {
        Some(f) => format!(
            "{:.0}/s (p50 {:.0} us, p99 {:.0} us)",
            f.per_s.unwrap_or(0.0),
            f.p50_us.unwrap_or(0.0),
            f.p99_us.unwrap_or(0.0)
        ),
        None => "-".into(),
    }
}

fn nvmem_cell(f: Option<&Figure>) -> String {
    match f {
        Some(f) => format!(
            "{:.0} B/s ({} x {} B in {:.1} s)",
            f.bytes_per_s.unwrap_or(0.0),
            f.passes.unwrap_or(0),
            f.bytes.unwrap_or(0),
            f.seconds
        ),
        None => "-".into(),
    }
}

/// A Markdown table of the runs.
pub fn table(runs: &[BenchRun]) -> String {
    let mut t = String::from(
        "| kernel | tWR | GPIO set | GPIO get | nvmem read | nvmem write | page | image | result |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let page = r
            .figure("nvmem-write")
            .or_else(|| r.figure("nvmem-read"))
            .and_then(|f| f.pagesize)
            .map_or_else(|| "-".to_string(), |p| p.to_string());
        let image = match r.image_matches_last_write {
            Some(true) => "matches",
            Some(false) => "DIFFERS",
            None => "-",
        };
        t.push_str(&format!(
            "| {} | {} ms | {} | {} | {} | {} | {page} | {image} | {} |\n",
            r.kernel,
            f64::from(r.twr_us) / 1000.0,
            gpio_cell(r.figure("gpio-set")),
            gpio_cell(r.figure("gpio-get")),
            nvmem_cell(r.figure("nvmem-read")),
            nvmem_cell(r.figure("nvmem-write")),
            if r.problems.is_empty() {
                "ok".to_string()
            } else {
                r.problems.join("; ")
            }
        ));
    }
    t
}

/// The JSON report.
#[derive(Debug, Serialize)]
struct Report<'a> {
    /// Seconds each guest loop ran.
    seconds_per_figure: u64,
    accel: &'a str,
    runs: &'a [BenchRun],
}

/// Writes the JSON report.
pub fn write_json(
    path: &Path,
    runs: &[BenchRun],
    seconds_per_figure: Duration,
    accel: &str,
) -> std::io::Result<()> {
    let r = Report {
        seconds_per_figure: seconds_per_figure.as_secs(),
        accel,
        runs,
    };
    let text = serde_json::to_string_pretty(&r).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn markers(text: &str) -> Vec<Marker> {
        text.lines().filter_map(Marker::parse).collect()
    }

    const GUEST: &str = "\
VGN-MARK: bench kind=gpio-set ops=4000 seconds=3.001 per_s=2711 p50_us=350.2 p99_us=911.0 chip=gpiochip0 offset=1 mismatches=0
VGN-MARK: bench kind=gpio-get ops=4000 seconds=3.001 per_s=2911 p50_us=330.0 p99_us=800.5 chip=gpiochip0 offset=1 mismatches=0
VGN-MARK: bench kind=nvmem-read bytes=4096 passes=30 seconds=3.050 bytes_per_s=40288 pagesize=32
VGN-MARK: bench kind=nvmem-write bytes=4096 passes=3 seconds=3.300 bytes_per_s=3724 verify=ok fnv64=af63dc4c8601ec8c pagesize=32
VGN-MARK: done scenario=bench
";

    #[test]
    fn figures_come_from_the_bench_markers() {
        let m = markers(GUEST);
        let figs: Vec<Figure> = m.iter().filter_map(Figure::from_marker).collect();
        assert_eq!(figs.len(), 4);
        assert_eq!(figs[0].kind, "gpio-set");
        assert_eq!(figs[0].ops, Some(4000));
        assert_eq!(figs[0].per_s, Some(2711.0));
        assert_eq!(figs[0].p99_us, Some(911.0));
        assert_eq!(figs[0].mismatches, Some(0));
        assert_eq!(figs[3].bytes_per_s, Some(3724.0));
        assert_eq!(figs[3].pagesize, Some(32));
        assert_eq!(figs[3].fnv64.as_deref(), Some("af63dc4c8601ec8c"));
        assert_eq!(figs[3].passes, Some(3));
        assert!(Figure::from_marker(&Marker::parse("VGN-MARK: bench ops=1").unwrap()).is_none());
    }

    #[test]
    fn the_image_must_hold_the_last_write() {
        // fnv64("a") is af63dc4c8601ec8c.
        let m = markers(GUEST);
        let mut ok = BenchRun::default();
        judge(&mut ok, &m, Some(b"a"), &[]);
        assert_eq!(ok.image_matches_last_write, Some(true));
        assert!(ok.problems.is_empty(), "{:?}", ok.problems);

        let mut bad = BenchRun::default();
        judge(&mut bad, &m, Some(b"b"), &[]);
        assert_eq!(bad.image_matches_last_write, Some(false));
        assert_eq!(bad.problems.len(), 1, "{:?}", bad.problems);

        let mut gone = BenchRun::default();
        judge(&mut gone, &m, None, &[]);
        assert!(
            gone.problems[0].contains("unreadable"),
            "{:?}",
            gone.problems
        );
    }

    #[test]
    fn an_nvmem_figure_without_its_page_size_is_a_problem() {
        let m = markers(&GUEST.replace(
            " pagesize=32\nVGN-MARK: done",
            " pagesize=unknown\nVGN-MARK: done",
        ));
        let mut r = BenchRun::default();
        judge(&mut r, &m, Some(b"a"), &[]);
        assert_eq!(
            r.problems,
            ["nvmem-write: no page size for its EEPROM".to_string()]
        );
    }

    #[test]
    fn missing_figures_ktap_failures_and_splats_are_problems() {
        let m = markers(GUEST);
        let mut r = BenchRun {
            splats: 1,
            ..BenchRun::default()
        };
        judge(
            &mut r,
            &m[..2],
            None,
            &["not ok 8 bench-nvmem-read # failed".into()],
        );
        assert_eq!(r.image_matches_last_write, None);
        assert_eq!(
            r.problems,
            [
                "not ok 8 bench-nvmem-read # failed",
                "no nvmem-read figure",
                "no nvmem-write figure",
                "1 kernel splat(s) on the console"
            ]
        );
        let wrong = markers("VGN-MARK: bench kind=gpio-get ops=10 mismatches=3");
        let mut r = BenchRun::default();
        judge(&mut r, &wrong, None, &[]);
        assert!(r
            .problems
            .iter()
            .any(|p| p == "gpio-get: 3 values read back wrong"));
    }

    #[test]
    fn the_table_has_a_row_per_run() {
        let mut r = BenchRun {
            kernel: "6.12-kref".into(),
            twr_us: 5000,
            ..BenchRun::default()
        };
        judge(&mut r, &markers(GUEST), Some(b"a"), &[]);
        let t = table(&[r]);
        let row = t.lines().nth(2).unwrap();
        assert!(
            row.starts_with("| 6.12-kref | 5 ms | 2711/s (p50 350 us, p99 911 us) |"),
            "{row}"
        );
        assert!(
            row.contains("| 3724 B/s (3 x 4096 B in 3.3 s) | 32 | matches | ok |"),
            "{row}"
        );
    }
}
