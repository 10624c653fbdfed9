// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The reproduction's report: one record per run, written as JSON, as JUnit XML for CI
//! systems, and as a table for people.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::classify::Splat;
use crate::expect::WriteOutcome;

/// One run: a kernel variant in one scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Kernel variant.
    pub kernel: String,
    /// Scenario.
    pub scenario: String,
    /// QEMU's version.
    pub qemu: String,
    /// Kernel reports seen on the console.
    pub splats: Vec<Splat>,
    /// "REMOVING GPIOCHIP WITH GPIOS STILL REQUESTED" printed.
    pub still_requested: bool,
    /// "backing chip is gone" count.
    pub backing_chip_gone: u32,
    /// The same by the function that printed it.
    pub backing_chip_gone_by: std::collections::BTreeMap<String, u32>,
    /// gpio_virtio's module refcount after the last put (signed; absent if never printed).
    pub gpio_virtio_refcnt: Option<i64>,
    /// The first write through nvmem, judged on the host image.
    pub eeprom_write: WriteOutcome,
    /// The write after unplug, judged on the host image.
    pub eeprom_write_after_unplug: WriteOutcome,
    /// The write after replug, judged on the host image.
    pub eeprom_write_after_replug: WriteOutcome,
    /// Whether the guest saw the GPIO edge (irq scenario).
    pub irq_seen: Option<bool>,
    /// The write to the second EEPROM (24c02 at 0x51), judged on its image.
    pub eeprom2_write: WriteOutcome,
    /// The write made while the host asserts WP, judged on the host image.
    pub eeprom_write_wp_asserted: WriteOutcome,
    /// Addresses i2cdetect found before binding (`50,51`).
    pub i2cdetect: Option<String>,
    /// The gpio chip's line names as the guest saw them (`wp,led,irq`).
    pub gpio_lines: Option<String>,
    /// The run matches its expectation.
    pub expected: bool,
    /// The expectation's reasoning, and what differed if anything did.
    pub why: String,
    /// Every difference from the expectation.
    pub mismatches: Vec<String>,
    /// How the run ended: `done`, `timeout: ...`, `qemu exited: ...`, `harness error: ...`.
    pub ended: String,
    /// Wall time of the run in seconds.
    pub seconds: f64,
    /// File name of the console log, beside the report.
    pub console_log: String,
}

impl RunReport {
    /// A run of `kernel` in `scenario` with nothing observed yet and not expected, its console
    /// log to be written as `console_log`.
    pub fn new(kernel: &str, scenario: &str, console_log: &str) -> RunReport {
        RunReport {
            kernel: kernel.to_string(),
            scenario: scenario.to_string(),
            qemu: String::new(),
            splats: Vec::new(),
            still_requested: false,
            backing_chip_gone: 0,
            backing_chip_gone_by: Default::default(),
            gpio_virtio_refcnt: None,
            eeprom_write: WriteOutcome::NotApplicable,
            eeprom_write_after_unplug: WriteOutcome::NotApplicable,
            eeprom_write_after_replug: WriteOutcome::NotApplicable,
            irq_seen: None,
            eeprom2_write: WriteOutcome::NotApplicable,
            eeprom_write_wp_asserted: WriteOutcome::NotApplicable,
            i2cdetect: None,
            gpio_lines: None,
            expected: false,
            why: String::new(),
            mismatches: Vec::new(),
            ended: String::new(),
            seconds: 0.0,
            console_log: console_log.to_string(),
        }
    }
}

/// Writes the runs as a JSON array.
pub fn write_json(path: &Path, runs: &[RunReport]) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(runs).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no place for most control characters: consoles carry some.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// The runs as a JUnit XML document: one test case per run, failed when unexpected.
pub fn junit(runs: &[RunReport]) -> String {
    let failures = runs.iter().filter(|r| !r.expected).count();
    let total: f64 = runs.iter().map(|r| r.seconds).sum();
    let mut x = String::new();
    let _ = writeln!(x, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        x,
        r#"<testsuites name="reproduce" tests="{}" failures="{failures}" time="{total:.1}">"#,
        runs.len()
    );
    let _ = writeln!(
        x,
        r#"  <testsuite name="reproduce" tests="{}" failures="{failures}" errors="0" time="{total:.1}">"#,
        runs.len()
    );
    for r in runs {
        let _ = write!(
            x,
            r#"    <testcase classname="reproduce.{}" name="{}" time="{:.1}">"#,
            xml_escape(&r.kernel),
            xml_escape(&r.scenario),
            r.seconds
        );
        if !r.expected {
            let _ = write!(
                x,
                "\n      <failure message=\"{}\">{}</failure>\n    ",
                xml_escape(&r.mismatches.join("; ")),
                xml_escape(&r.why)
            );
        }
        let _ = write!(
            x,
            "\n      <system-out>{}</system-out>\n    ",
            xml_escape(&summary(r))
        );
        let _ = writeln!(x, "</testcase>");
    }
    let _ = writeln!(x, "  </testsuite>");
    let _ = writeln!(x, "</testsuites>");
    x
}

/// The kernel reports of a run in a few words.
pub fn splat_summary(splats: &[Splat]) -> String {
    if splats.is_empty() {
        return "none".into();
    }
    splats
        .iter()
        .map(|s| {
            if s.function.is_empty() {
                s.kind.clone()
            } else {
                format!("{}({})", s.kind, s.function)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary(r: &RunReport) -> String {
    let mut s = format!(
        "ended: {}\nsplats: {}\nstill_requested: {}\nbacking_chip_gone: {}\ngpio_virtio_refcnt: {}\neeprom: write {}, after unplug {}, after replug {}",
        r.ended,
        splat_summary(&r.splats),
        r.still_requested,
        r.backing_chip_gone,
        refcnt_text(r.gpio_virtio_refcnt),
        r.eeprom_write,
        r.eeprom_write_after_unplug,
        r.eeprom_write_after_replug,
    );
    if r.scenario == "eeprom" {
        let _ = write!(
            s,
            "\n24c02 write {}, write with WP asserted {}\ni2cdetect: {}\ngpio lines: {}",
            r.eeprom2_write,
            r.eeprom_write_wp_asserted,
            r.i2cdetect.as_deref().unwrap_or("not printed"),
            r.gpio_lines.as_deref().unwrap_or("not printed"),
        );
    }
    let _ = write!(s, "\nconsole: {}", r.console_log);
    s
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
            [
                r.kernel.clone(),
                r.scenario.clone(),
                splat_summary(&r.splats),
                refcnt_text(r.gpio_virtio_refcnt),
                format!(
                    "{}/{}/{}",
                    r.eeprom_write, r.eeprom_write_after_unplug, r.eeprom_write_after_replug
                ),
                if r.expected {
                    "yes".into()
                } else {
                    "NO".into()
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
    for row in &rows {
        line(&row.each_ref().map(String::as_str), &mut out);
    }
    for r in runs.iter().filter(|r| !r.expected) {
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

    fn run(expected: bool) -> RunReport {
        let mut r = RunReport::new("6.1-baseline", "unbind", "6.1-baseline--unbind.console.log");
        r.qemu = "10.0.2".into();
        r.splats = vec![Splat {
            kind: "warning".into(),
            location: "drivers/gpio/gpiolib.c:2164".into(),
            function: "gpiod_free".into(),
            trace: vec!["release_nodes".into()],
            headline: "WARNING: <&>".into(),
            ..Splat::default()
        }];
        r.gpio_virtio_refcnt = Some(0);
        r.eeprom_write = WriteOutcome::Landed;
        r.expected = expected;
        r.why = "the 2020 double put".into();
        if !expected {
            r.mismatches = vec!["refcnt 1 instead of 0 <x>".into()];
        }
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
            "why",
        ] {
            assert!(o.get(key).is_some(), "missing {key}");
        }
        assert_eq!(o["eeprom_write_after_unplug"], "n/a");
        assert_eq!(o["splats"][0]["location"], "drivers/gpio/gpiolib.c:2164");
        assert_eq!(o["splats"][0]["trace"][0], "release_nodes");
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
    }

    #[test]
    fn refcounts_say_what_they_mean() {
        assert_eq!(refcnt_text(Some(1)), "1 (leaked)");
        assert_eq!(refcnt_text(Some(-1)), "-1 (underflow)");
        assert_eq!(refcnt_text(None), "not printed");
    }
}
