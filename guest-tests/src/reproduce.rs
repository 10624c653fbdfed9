// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The end-to-end reproduction: every kernel variant in every scenario, each run through the
//! stages of [`crate::run`], judged against `expected.toml`. Runs go `jobs` at a time, the
//! longest expected first ([`crate::timing`]), with a line per run on stderr as it finishes;
//! the report keeps the matrix order.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use crate::expect::{Expectation, Expectations};
use crate::report::{RunReport, Verdict};
use crate::run::{self, Options, RunDir};
use crate::scenario::{KconfigCheck, Scenario};
use crate::timing::{self, Expected};
use crate::variants::Variant;

/// Runs one kernel variant in one scenario and judges it (no expectation: observed only).
pub fn run_one(
    variant: &Variant,
    scenario: &Scenario,
    expectation: Option<&Expectation>,
    declared: &[(String, crate::observe::Kind)],
    opts: &Options,
) -> RunReport {
    let start = Instant::now();
    let started = std::time::SystemTime::now();
    let stem = format!("{}--{}", variant.name, scenario.name);
    let mut report = RunReport::new(
        &variant.name,
        &scenario.name,
        &format!("{stem}.console.log"),
    );
    let mut notes = Vec::new();
    let mut lacks = Vec::new();
    let mut kconfig = None;
    let harness_error = match RunDir::new(&opts.out_dir, &stem)
        .and_then(|dir| run::run(variant, scenario, opts, &dir))
    {
        Ok(f) => {
            report.qemu = f.qemu;
            report.ended = f.ended;
            report.observations = f.observations;
            report.stage_seconds = f.stage_seconds;
            report.symbolized = f.frames;
            notes = f.notes;
            lacks = f.lacks;
            kconfig = f.kconfig;
            false
        }
        Err(e) => {
            report.ended = format!("harness error: {}", crate::error_chain(&e));
            true
        }
    };
    report.started = Some(humantime::format_rfc3339_seconds(started).to_string());
    report.infrastructure = if harness_error {
        Some(report.ended.clone())
    } else if !reached_first_marker(&opts.out_dir.join(&report.console_log)) {
        Some(format!(
            "the guest never reached its first marker ({})",
            report.ended
        ))
    } else if let Some(k @ KconfigCheck::Unmet { .. }) = &kconfig {
        // What scripts/build-guest refuses for a config it is given (exit 3), found late.
        Some(k.note())
    } else {
        None
    };
    report.kernel_config = kconfig.as_ref().map(KconfigCheck::note);
    // A run that could not be judged: the harness failed, or the kernel's config is unusable.
    let failed = match &kconfig {
        _ if harness_error => Some(report.ended.clone()),
        Some(k @ KconfigCheck::Unmet { .. }) => Some(k.note()),
        _ => None,
    };
    // Every run of a report has the same fields: the results of every scenario in it.
    report.observations.declare(declared);
    report.seconds = start.elapsed().as_secs_f64();
    if !report.stage_seconds.is_empty() {
        // What the stages of the run leave out: the run directory, the verdict.
        let staged: f64 = report.stage_seconds.values().sum();
        let other = (report.seconds - staged).max(0.0);
        report
            .stage_seconds
            .insert("other".into(), (other * 100.0).round() / 100.0);
    }
    judge(&mut report, expectation, &lacks, failed);
    if !notes.is_empty() {
        report.why = format!("{} [harness: {}]", report.why, notes.join("; "));
    }
    report
}

/// Sets a run's verdict: skipped when the kernel lacks what the scenario needs (with or
/// without an expectation: nothing ran to judge), unexpected when it `failed` (the harness,
/// or an unusable kernel config), else compared with its expectation (none: observed).
fn judge(
    report: &mut RunReport,
    expectation: Option<&Expectation>,
    lacks: &[String],
    failed: Option<String>,
) {
    if failed.is_none() && !lacks.is_empty() {
        let reason = format!("kernel lacks {}", lacks.join(", "));
        report.why = expectation.map_or_else(|| format!("skipped: {reason}"), |e| e.why.clone());
        report.skip(&reason);
        return;
    }
    match expectation {
        None => {
            report.why = "no expectation for this kernel and scenario in expected.toml".into();
            report.judge(failed.map(|f| vec![f]));
        }
        Some(e) => {
            report.why = e.why.clone();
            report.judge(Some(match failed {
                Some(f) => vec![f],
                None => e.compare(&report.observations),
            }));
        }
    }
}

/// What symbolizing a run's reports gave, for its progress line: nothing when it had no
/// frames; "no line tables" when none resolved (a kernel built without them).
fn frames_note(f: crate::symbolize::Resolved) -> String {
    match (f.resolved, f.unresolved) {
        (0, 0) => String::new(),
        (0, n) => format!(", {n} frames unresolved (no line tables)"),
        (r, 0) => format!(", {r} frames resolved"),
        (r, n) => format!(", {r} frames resolved, {n} not"),
    }
}

/// Whether the console log shows the runner's first marker (the guest booted into it).
fn reached_first_marker(console_log: &std::path::Path) -> bool {
    let marker = format!("VGN-MARK: {}", crate::console::RUNNER_START);
    std::fs::read(console_log)
        .map(|b| String::from_utf8_lossy(&b).contains(&marker))
        .unwrap_or(false)
}

/// Runs the (variant, scenario) pairs named in `mine` (a shard's selection, see
/// [`crate::shard::Shard::select`]), `opts.jobs` at a time, reporting progress on stderr.
pub fn run_all(
    variants: &[Variant],
    scenarios: &[Scenario],
    expectations: &Expectations,
    opts: &Options,
    mine: &[(String, String)],
) -> Vec<RunReport> {
    let declared: Vec<_> = scenarios.iter().flat_map(Scenario::results).collect();
    let work: Vec<(Variant, Scenario)> = variants
        .iter()
        .flat_map(|v| scenarios.iter().map(move |s| (v.clone(), s.clone())))
        .filter(|(v, s)| mine.contains(&(v.name.clone(), s.name.clone())))
        .collect();
    let total = work.len();
    let earlier = Expected::from_report(&opts.out_dir.join("report.json"));
    let mut from_report = 0;
    let expected: Vec<f64> = work
        .iter()
        .map(|(v, s)| {
            earlier
                .get(&v.name, &s.name)
                .inspect(|_| from_report += 1)
                .unwrap_or_else(|| timing::estimate(v.is_debug(), s))
        })
        .collect();
    eprintln!(
        "[reproduce] longest runs first: {from_report} of {total} run time(s) from the last report.json there, the rest estimated"
    );
    let mut work: Vec<Option<(Variant, Scenario)>> = work.into_iter().map(Some).collect();
    // The queue is popped from its end: the first run to start goes last.
    let queue: Vec<(usize, (Variant, Scenario))> = timing::longest_first(&expected)
        .into_iter()
        .rev()
        .filter_map(|i| Some((i, work[i].take()?)))
        .collect();
    let queue = Arc::new(Mutex::new(queue));
    let results = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..opts.jobs.max(1))
        .map(|_| {
            let queue = queue.clone();
            let results = results.clone();
            let opts = opts.clone();
            let expectations = expectations.clone();
            let declared = declared.clone();
            thread::spawn(move || loop {
                let next = queue.lock().map(|mut q| q.pop()).ok().flatten();
                let Some((i, (v, s))) = next else { break };
                eprintln!("[reproduce] start {} {}", v.name, s.name);
                let offset = started.elapsed().as_secs_f64();
                let mut r = run_one(&v, &s, expectations.get(&v.name, &s.name), &declared, &opts);
                r.offset_seconds = Some((offset * 100.0).round() / 100.0);
                eprintln!(
                    "[reproduce] {}/{total} {} {}: {} in {:.0} s ({:.0} s elapsed){}{}",
                    results.lock().map(|r| r.len() + 1).unwrap_or(0),
                    v.name,
                    s.name,
                    match r.verdict {
                        Verdict::AsExpected => "as expected".to_string(),
                        Verdict::Unexpected => "UNEXPECTED".to_string(),
                        Verdict::Observed => "observed (no expectation)".to_string(),
                        Verdict::Skipped => format!(
                            "skipped ({})",
                            r.skipped.as_deref().unwrap_or("the kernel lacks a need")
                        ),
                    },
                    r.seconds,
                    started.elapsed().as_secs_f64(),
                    frames_note(r.symbolized),
                    if r.unexpected() {
                        format!(": {}", r.mismatches.join("; "))
                    } else {
                        String::new()
                    }
                );
                if let Ok(mut res) = results.lock() {
                    res.push((i, r));
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let mut out = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::Resolved;

    #[test]
    fn a_run_whose_kernel_lacks_a_need_is_skipped_with_or_without_an_expectation() {
        let entries = crate::expect::Expectations::parse(
            "[[run]]\nkernel = \"k\"\nscenario = \"unbind\"\neeprom_write = \"landed\"\nwhy = \"the double put\"\n",
            "t",
        )
        .unwrap();
        let e = entries.get("k", "unbind");
        let lacks = ["at24.wp_over_config".to_string()];
        for expectation in [e, None] {
            let mut r = RunReport::new("k", "unbind", "k--unbind.console.log");
            judge(&mut r, expectation, &lacks, None);
            assert_eq!(r.verdict, Verdict::Skipped);
            assert_eq!(
                r.skipped.as_deref(),
                Some("kernel lacks at24.wp_over_config")
            );
            assert!(!r.unexpected() && r.mismatches.is_empty() && r.expected.is_none());
            assert_eq!(crate::ci::exit_of(&[r]).code(), 0);
        }
        // The same run without the need missing differs from its entry (nothing landed).
        let mut r = RunReport::new("k", "unbind", "k--unbind.console.log");
        judge(&mut r, e, &[], None);
        assert_eq!(r.verdict, Verdict::Unexpected);
        // An unusable kernel config is a failure, never a skip.
        let mut r = RunReport::new("k", "unbind", "k--unbind.console.log");
        judge(&mut r, None, &lacks, Some("kernel config ...".into()));
        assert_eq!(r.verdict, Verdict::Unexpected);
        assert_eq!(r.mismatches, ["kernel config ..."]);
    }

    #[test]
    fn the_progress_line_says_how_many_frames_resolved() {
        let f = |resolved, unresolved| {
            frames_note(Resolved {
                resolved,
                unresolved,
            })
        };
        assert_eq!(f(0, 0), "");
        assert_eq!(f(0, 12), ", 12 frames unresolved (no line tables)");
        assert_eq!(f(30, 0), ", 30 frames resolved");
        assert_eq!(f(30, 2), ", 30 frames resolved, 2 not");
    }
}
