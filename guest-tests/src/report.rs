// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The reproduction's report: one record per run, written as JSON, as JUnit XML for CI
//! systems, and as a table for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::classify::Splat;
use crate::markup::escape;
use crate::observe::{Observations, Value, WriteOutcome};

/// How a run compares with `expected.toml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// It matches its entry.
    AsExpected,
    /// It differs from its entry (or the harness failed).
    Unexpected,
    /// No entry for this kernel and scenario: what happened is reported, not judged.
    Observed,
    /// The kernel lacks a feature the scenario needs: its steps did not run (see `skipped`).
    /// Not a failure, with or without an entry.
    Skipped,
}

/// One run: a kernel variant in one scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Kernel variant.
    pub kernel: String,
    /// Scenario.
    pub scenario: String,
    /// QEMU's version.
    pub qemu: String,
    /// Console findings (`splats`, `still_requested`, `backing_chip_gone`,
    /// `backing_chip_gone_by`) and the scenario's named results (`eeprom_write`,
    /// `gpio_virtio_refcnt`, ...), each a field of its own.
    #[serde(flatten)]
    pub observations: Observations,
    /// The run matches its expectation (`null`: there is none, see `verdict`).
    pub expected: Option<bool>,
    /// As expected, unexpected, only observed, or skipped.
    pub verdict: Verdict,
    /// Why the run was skipped (`kernel lacks at24.wp_over_config`), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// What the guest found checking the kernel's config (a prebuilt kernel given without
    /// one): met, or `config unchecked` when the kernel has no `/proc/config.gz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_config: Option<String>,
    /// The expectation's reasoning, and what differed if anything did.
    pub why: String,
    /// Every difference from the expectation.
    pub mismatches: Vec<String>,
    /// How the run ended: `done`, `timeout: ...`, `qemu exited: ...`, `harness error: ...`.
    pub ended: String,
    /// Wall time of the run in seconds.
    pub seconds: f64,
    /// The same by stage ([`crate::run::STAGES`]: `backends` to `judge`, and `other`, the
    /// rest); empty if the run failed to start.
    #[serde(default)]
    pub stage_seconds: std::collections::BTreeMap<String, f64>,
    /// When the run started, in seconds after the reproduction's first run started (runs go
    /// longest first, so this gives the order they ran in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_seconds: Option<f64>,
    /// File name of the console log, beside the report.
    pub console_log: String,
    /// When the run started (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// Why the run is an infrastructure failure (QEMU or a backend did not start, or the
    /// guest never reached its first marker), if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<String>,
    /// How many frames of the run's reports were resolved to `file:line` with the
    /// variant's objects (each splat's frames carry `source`); a variant built without line
    /// tables resolves none.
    #[serde(default)]
    pub symbolized: crate::symbolize::Resolved,
    /// Each title this run reported, with every run of the report that reported it too
    /// (`kernel scenario`, this one included): the runs grouped by title
    /// ([`group_titles`]).
    #[serde(default)]
    pub title_runs: BTreeMap<String, Vec<String>>,
}

impl RunReport {
    /// A run of `kernel` in `scenario` with nothing observed yet and unexpected, its console
    /// log to be written as `console_log`.
    pub fn new(kernel: &str, scenario: &str, console_log: &str) -> RunReport {
        RunReport {
            kernel: kernel.to_string(),
            scenario: scenario.to_string(),
            qemu: String::new(),
            observations: Observations::default(),
            expected: Some(false),
            verdict: Verdict::Unexpected,
            skipped: None,
            kernel_config: None,
            why: String::new(),
            mismatches: Vec::new(),
            ended: String::new(),
            seconds: 0.0,
            stage_seconds: Default::default(),
            offset_seconds: None,
            console_log: console_log.to_string(),
            started: None,
            infrastructure: None,
            symbolized: Default::default(),
            title_runs: BTreeMap::new(),
        }
    }

    /// Sets the verdict from the differences found (`None`: there was no expectation).
    pub fn judge(&mut self, mismatches: Option<Vec<String>>) {
        match mismatches {
            None => {
                self.verdict = Verdict::Observed;
                self.expected = None;
                self.mismatches.clear();
            }
            Some(m) => {
                self.verdict = if m.is_empty() {
                    Verdict::AsExpected
                } else {
                    Verdict::Unexpected
                };
                self.expected = Some(m.is_empty());
                self.mismatches = m;
            }
        }
    }

    /// Marks the run skipped: the kernel lacks what the scenario needs. An expectation for it
    /// is not judged (nothing ran to compare).
    pub fn skip(&mut self, reason: &str) {
        self.verdict = Verdict::Skipped;
        self.expected = None;
        self.mismatches.clear();
        self.skipped = Some(reason.to_string());
    }

    /// Whether the run counts as a failure: it differs from its expectation.
    pub fn unexpected(&self) -> bool {
        self.verdict == Verdict::Unexpected
    }

    fn splats(&self) -> &[Splat] {
        &self.observations.console.splats
    }
}

/// Writes the runs as a JSON array.
pub fn write_json(path: &Path, runs: &[RunReport]) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(runs).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

/// The runs as a JUnit XML document: one test case per run, failed when unexpected.
pub fn junit(runs: &[RunReport]) -> String {
    let failures = runs.iter().filter(|r| r.unexpected()).count();
    let total: f64 = runs.iter().map(|r| r.seconds).sum();
    let mut x = String::new();
    let _ = writeln!(x, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        x,
        r#"<testsuites name="reproduce" tests="{}" failures="{failures}" time="{total:.1}">"#,
        runs.len()
    );
    let skipped = runs
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Observed | Verdict::Skipped))
        .count();
    let _ = writeln!(
        x,
        r#"  <testsuite name="reproduce" tests="{}" failures="{failures}" errors="0" skipped="{skipped}" time="{total:.1}">"#,
        runs.len()
    );
    for r in runs {
        let _ = write!(
            x,
            r#"    <testcase classname="reproduce.{}" name="{}" time="{:.1}">"#,
            escape(&r.kernel),
            escape(&r.scenario),
            r.seconds
        );
        if r.verdict == Verdict::Observed {
            let _ = write!(
                x,
                "\n      <skipped message=\"no expectation for this kernel and scenario: observed only\"/>\n    "
            );
        }
        if r.verdict == Verdict::Skipped {
            let _ = write!(
                x,
                "\n      <skipped message=\"skipped: {}\"/>\n    ",
                escape(
                    r.skipped
                        .as_deref()
                        .unwrap_or("the kernel lacks what it needs")
                )
            );
        }
        if r.unexpected() {
            let _ = write!(
                x,
                "\n      <failure message=\"{}\">{}</failure>\n    ",
                escape(&r.mismatches.join("; ")),
                escape(&r.why)
            );
        }
        let _ = write!(
            x,
            "\n      <system-out>{}</system-out>\n    ",
            escape(&summary(r))
        );
        let _ = writeln!(x, "</testcase>");
    }
    let _ = writeln!(x, "  </testsuite>");
    let _ = writeln!(x, "</testsuites>");
    x
}

/// The kernel reports of a run in a few words: their titles.
pub fn splat_summary(splats: &[Splat]) -> String {
    if splats.is_empty() {
        return "none".into();
    }
    splats
        .iter()
        .map(splat_title)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A report's title; a report without one (not classified by title) by its kind and function.
fn splat_title(s: &Splat) -> String {
    if !s.title.is_empty() {
        s.title.clone()
    } else if s.function.is_empty() {
        s.kind.clone()
    } else {
        format!("{}({})", s.kind, s.function)
    }
}

/// The runs that reported each title (`kernel scenario`, in the runs' order, once each).
pub fn by_title(runs: &[RunReport]) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in runs {
        let run = format!("{} {}", r.kernel, r.scenario);
        for s in r.splats() {
            let g = groups.entry(splat_title(s)).or_default();
            if !g.contains(&run) {
                g.push(run.clone());
            }
        }
    }
    groups
}

/// Fills each run's [`RunReport::title_runs`] from the whole report.
pub fn group_titles(runs: &mut [RunReport]) {
    let groups = by_title(runs);
    for r in runs.iter_mut() {
        r.title_runs = r
            .splats()
            .iter()
            .map(splat_title)
            .filter_map(|t| Some((t.clone(), groups.get(&t)?.clone())))
            .collect();
    }
}

/// The results of the table's own columns.
const REFCNT: &str = "gpio_virtio_refcnt";
const EEPROM_COLUMNS: [&str; 3] = [
    "eeprom_write",
    "eeprom_write_after_unplug",
    "eeprom_write_after_replug",
];

/// Every other result that was observed, `name=value` (empty if none): the line under a
/// run's row.
fn other_results(r: &RunReport) -> String {
    let parts: Vec<String> = r
        .observations
        .results
        .iter()
        .filter(|(n, _)| *n != REFCNT && !EEPROM_COLUMNS.contains(&n.as_str()))
        .filter_map(|(n, v)| match v {
            None | Some(Value::Write(WriteOutcome::NotApplicable)) => None,
            Some(v) => Some(format!("{n}={v}")),
        })
        .collect();
    parts.join(" ")
}

fn summary(r: &RunReport) -> String {
    let o = &r.observations;
    let mut s = String::new();
    if let Some(why) = &r.skipped {
        let _ = writeln!(s, "skipped: {why}");
    }
    if let Some(c) = &r.kernel_config {
        let _ = writeln!(s, "{c}");
    }
    let _ = write!(
        s,
        "ended: {}\nsplats: {}\nstill_requested: {}\nbacking_chip_gone: {}",
        r.ended,
        splat_summary(r.splats()),
        o.console.still_requested,
        o.console.backing_chip_gone,
    );
    for (name, v) in &o.results {
        let _ = write!(
            s,
            "\n{name}: {}",
            v.as_ref()
                .map_or_else(|| "not printed".to_string(), Value::to_string)
        );
    }
    let _ = write!(s, "\nconsole: {}", r.console_log);
    s
}

fn refcnt(r: &RunReport) -> String {
    match r.observations.results.get(REFCNT) {
        Some(Some(Value::Int(n))) => refcnt_text(Some(*n)),
        Some(_) => refcnt_text(None),
        None => "-".into(),
    }
}

fn refcnt_text(n: Option<i64>) -> String {
    match n {
        Some(n) if n > 0 => format!("{n} (leaked)"),
        Some(n) if n < 0 => format!("{n} (underflow)"),
        Some(n) => n.to_string(),
        None => "not printed".into(),
    }
}

/// The runs as a table for a terminal.
pub fn table(runs: &[RunReport]) -> String {
    let header = [
        "kernel",
        "scenario",
        "splats",
        "refcnt",
        "eeprom (write/unplug/replug)",
        "expected",
    ];
    let rows: Vec<[String; 6]> = runs
        .iter()
        .map(|r| {
            let o = &r.observations;
            [
                r.kernel.clone(),
                r.scenario.clone(),
                splat_summary(r.splats()),
                refcnt(r),
                EEPROM_COLUMNS.map(|n| o.write(n).to_string()).join("/"),
                match r.verdict {
                    Verdict::AsExpected => "yes".into(),
                    Verdict::Unexpected => "NO".into(),
                    Verdict::Observed => "observed".into(),
                    Verdict::Skipped => "skipped".into(),
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&header, &mut out);
    line(
        &widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str),
        &mut out,
    );
    for (row, r) in rows.iter().zip(runs) {
        line(&row.each_ref().map(String::as_str), &mut out);
        if let Some(why) = &r.skipped {
            let _ = writeln!(out, "    skipped: {why}");
        }
        if let Some(c) = &r.kernel_config {
            let _ = writeln!(out, "    {c}");
        }
        let other = other_results(r);
        if !other.is_empty() {
            let _ = writeln!(out, "    {other}");
        }
    }
    let groups = by_title(runs);
    if !groups.is_empty() {
        let _ = writeln!(out, "\nreports by title:");
        for (title, group) in &groups {
            let _ = writeln!(out, "  {title} ({} run(s))", group.len());
            for run in group {
                let _ = writeln!(out, "      {run}");
            }
        }
    }
    for r in runs.iter().filter(|r| r.unexpected()) {
        let _ = writeln!(
            out,
            "unexpected: {} {}: {}",
            r.kernel,
            r.scenario,
            r.mismatches.join("; ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Kind;

    fn run(expected: bool) -> RunReport {
        let mut r = RunReport::new("6.1-baseline", "unbind", "6.1-baseline--unbind.console.log");
        r.qemu = "10.0.2".into();
        r.observations.declare(&[
            ("gpio_virtio_refcnt".into(), Kind::Int),
            ("eeprom_write".into(), Kind::Write),
            ("eeprom_write_after_unplug".into(), Kind::Write),
            ("irq_seen".into(), Kind::Bool),
        ]);
        r.observations.console.splats = vec![Splat {
            kind: "warning".into(),
            location: "drivers/gpio/gpiolib.c:2164".into(),
            function: "gpiod_free".into(),
            trace: vec!["release_nodes".into()],
            headline: "WARNING: <&>".into(),
            ..Splat::default()
        }];
        r.observations
            .set("gpio_virtio_refcnt", Some(Value::Int(0)));
        r.observations
            .set("eeprom_write", Some(Value::Write(WriteOutcome::Landed)));
        r.why = "the 2020 double put".into();
        r.judge(Some(if expected {
            vec![]
        } else {
            vec!["refcnt 1 instead of 0 <x>".into()]
        }));
        r.ended = "done".into();
        r.seconds = 12.5;
        r
    }

    #[test]
    fn json_has_the_documented_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.json");
        write_json(&p, &[run(true)]).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let o = &v[0];
        for key in [
            "kernel",
            "scenario",
            "qemu",
            "splats",
            "still_requested",
            "backing_chip_gone",
            "gpio_virtio_refcnt",
            "eeprom_write_after_unplug",
            "expected",
            "verdict",
            "why",
        ] {
            assert!(o.get(key).is_some(), "missing {key}");
        }
        assert_eq!(o["eeprom_write"], "landed");
        assert_eq!(o["verdict"], "as-expected");
        assert!(o["irq_seen"].is_null());
        let back: Vec<RunReport> =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(back[0].observations.results, run(true).observations.results);
        assert_eq!(o["eeprom_write_after_unplug"], "n/a");
        assert_eq!(o["splats"][0]["location"], "drivers/gpio/gpiolib.c:2164");
        assert_eq!(o["splats"][0]["trace"][0], "release_nodes");
    }

    #[test]
    fn identical_titles_are_grouped_across_runs() {
        let titled = |kernel: &str, scenario: &str, titles: &[&str]| {
            let mut r = run(true);
            r.kernel = kernel.into();
            r.scenario = scenario.into();
            r.observations.console.splats = titles
                .iter()
                .map(|t| Splat {
                    title: (*t).into(),
                    ..Splat::default()
                })
                .collect();
            r
        };
        let mut runs = [
            titled("6.1-baseline", "unbind", &["WARNING in gpiod_free"]),
            titled("6.1-kref", "unbind", &[]),
            titled(
                "6.12-debug",
                "unplug-then-unbind",
                &[
                    "KASAN: slab-use-after-free Read in gpiod_free",
                    "WARNING in gpiod_free",
                ],
            ),
        ];
        group_titles(&mut runs);
        let both = ["6.1-baseline unbind", "6.12-debug unplug-then-unbind"];
        assert_eq!(runs[0].title_runs["WARNING in gpiod_free"], both);
        assert!(runs[1].title_runs.is_empty());
        assert_eq!(runs[2].title_runs.len(), 2);
        let t = table(&runs);
        assert!(t.contains("KASAN: slab-use-after-free Read in gpiod_free, WARNING in gpiod_free"));
        let section = t.split("reports by title:").nth(1).unwrap();
        assert!(section.contains("  WARNING in gpiod_free (2 run(s))\n      6.1-baseline unbind\n      6.12-debug unplug-then-unbind\n"), "{t}");
        let v = serde_json::to_value(&runs[0]).unwrap();
        assert_eq!(v["title_runs"]["WARNING in gpiod_free"][1], both[1]);
    }

    #[test]
    fn junit_marks_unexpected_runs_as_failures_and_escapes() {
        let x = junit(&[run(true), run(false)]);
        assert!(x.contains(r#"tests="2" failures="1""#));
        assert_eq!(x.matches("<failure").count(), 1);
        assert!(x.contains("refcnt 1 instead of 0 &lt;x&gt;"));
        assert!(!x.contains("<&>"));
    }

    #[test]
    fn table_lists_every_run_and_the_unexpected_ones() {
        let t = table(&[run(true), run(false)]);
        assert_eq!(
            t.lines().filter(|l| l.starts_with("6.1-baseline")).count(),
            2
        );
        assert!(t.contains("warning(gpiod_free)"));
        assert!(t.contains("unexpected: 6.1-baseline unbind: refcnt 1 instead of 0"));
        assert!(t.lines().nth(2).unwrap().ends_with("yes"));
        assert!(t.lines().nth(2).unwrap().contains("landed/n/a/n/a"));
    }

    #[test]
    fn a_run_without_expectation_is_observed_not_failed() {
        let mut r = run(true);
        r.observations.set("irq_seen", Some(Value::Bool(true)));
        r.judge(None);
        assert_eq!(r.expected, None);
        assert!(!r.unexpected());
        let t = table(&[r.clone()]);
        let row = t.lines().nth(2).unwrap();
        assert!(row.ends_with("observed"), "{row}");
        assert_eq!(t.lines().nth(3).unwrap(), "    irq_seen=true");
        let x = junit(&[r]);
        assert!(
            x.contains(r#"failures="0""#) && x.contains(r#"skipped="1""#),
            "{x}"
        );
        assert!(x.contains("irq_seen: true"), "{x}");
    }

    #[test]
    fn a_skipped_run_says_why_everywhere() {
        let mut r = run(true);
        r.skip("kernel lacks at24.wp_over_config");
        let t = table(&[r.clone()]);
        assert!(t.lines().nth(2).unwrap().ends_with("skipped"), "{t}");
        assert_eq!(
            t.lines().nth(3).unwrap(),
            "    skipped: kernel lacks at24.wp_over_config"
        );
        let x = junit(&[r.clone()]);
        assert!(
            x.contains(r#"failures="0""#) && x.contains(r#"skipped="1""#),
            "{x}"
        );
        assert!(
            x.contains(r#"<skipped message="skipped: kernel lacks at24.wp_over_config"/>"#),
            "{x}"
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["verdict"], "skipped");
        assert_eq!(v["skipped"], "kernel lacks at24.wp_over_config");
        assert!(v["expected"].is_null());
        // Read back (a shard's report.json, merged).
        let back: RunReport = serde_json::from_value(v).unwrap();
        assert_eq!((back.verdict, &back.skipped), (r.verdict, &r.skipped));
        // A report written before the field existed still reads.
        let mut old = serde_json::to_value(run(true)).unwrap();
        old.as_object_mut().unwrap().remove("skipped");
        assert_eq!(
            serde_json::from_value::<RunReport>(old).unwrap().skipped,
            None
        );
    }

    #[test]
    fn refcounts_say_what_they_mean() {
        assert_eq!(refcnt_text(Some(1)), "1 (leaked)");
        assert_eq!(refcnt_text(Some(-1)), "-1 (underflow)");
        assert_eq!(refcnt_text(None), "not printed");
    }
}
