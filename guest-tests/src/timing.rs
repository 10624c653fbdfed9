// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where a reproduction's wall time goes, and the order its runs go in.
//!
//! - [`Expected`]: each run's expected duration, from the previous `report.json` of the out
//!   directory when it has the run, else a static estimate ([`estimate`]): a debug variant
//!   (KASAN) is several times slower, a scenario that unplugs or replugs a device slower.
//! - [`longest_first`]: the execution order, longest expected run first, so that `--jobs N`
//!   guests at a time do not end with one long run alone; the report keeps the matrix order.
//! - [`Summary`]: the stages of every run (`stage_seconds` of `report.json`, see
//!   [`crate::run::STAGES`]) summed and per run, with the wall time, the runs and the wall time
//!   per run, printed at the end of a reproduction.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::report::RunReport;
use crate::run::STAGES;
use crate::scenario::{HostAction, Scenario};

/// The static estimate of a plain run, in seconds (a warm run took 3-10 s on 2 cores, TCG).
pub const BASE_SECONDS: f64 = 6.0;

/// How many times slower a debug variant's run is (measured 5.3 to 6.9 times, 2026-12-02).
pub const DEBUG_FACTOR: f64 = 6.0;

/// The static estimate of a run of `scenario` on a variant, debug or not, in seconds.
pub fn estimate(debug: bool, scenario: &Scenario) -> f64 {
    let acts = |f: fn(&HostAction) -> bool| scenario.on.iter().any(|o| f(&o.action));
    let mut s = BASE_SECONDS;
    if acts(|a| matches!(a, HostAction::DeviceDel { .. })) {
        s *= 1.5;
    }
    if acts(|a| {
        matches!(
            a,
            HostAction::Replug { .. }
                | HostAction::DeviceAdd { .. }
                | HostAction::ChardevAdd { .. }
        )
    }) {
        s *= 1.5;
    }
    if debug {
        s *= DEBUG_FACTOR;
    }
    s
}

/// The durations of the runs of an earlier report, by (kernel, scenario).
#[derive(Debug, Default)]
pub struct Expected {
    known: BTreeMap<(String, String), f64>,
}

impl Expected {
    /// The runs' `seconds` in the report at `path`. A missing or unreadable report (or one
    /// in another format) gives none: the order then comes from [`estimate`] alone.
    pub fn from_report(path: &Path) -> Expected {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Expected::default();
        };
        let Ok(serde_json::Value::Array(runs)) = serde_json::from_str(&text) else {
            return Expected::default();
        };
        let known = runs
            .iter()
            .filter_map(|r| {
                let s = |k: &str| r.get(k).and_then(|v| v.as_str()).map(str::to_string);
                let secs = r.get("seconds").and_then(|v| v.as_f64())?;
                // A run that never booted (a harness error) says nothing of its length.
                let booted = r.get("infrastructure").is_none_or(|v| v.is_null());
                (secs.is_finite() && secs > 0.0 && booted)
                    .then_some(((s("kernel")?, s("scenario")?), secs))
            })
            .collect();
        Expected { known }
    }

    /// The earlier duration of a run, if the report had it.
    pub fn get(&self, kernel: &str, scenario: &str) -> Option<f64> {
        self.known
            .get(&(kernel.to_string(), scenario.to_string()))
            .copied()
    }
}

/// The order in which to start runs whose expected durations are `expected` (in the matrix
/// order): longest first, equal ones in the matrix order.
pub fn longest_first(expected: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..expected.len()).collect();
    order.sort_by(|&a, &b| expected[b].total_cmp(&expected[a]).then(a.cmp(&b)));
    order
}

/// One stage over the runs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StageSummary {
    /// The stage (see [`STAGES`]).
    pub stage: String,
    /// Summed over the runs, seconds.
    pub total: f64,
    /// Median per run, seconds.
    pub median: f64,
    /// Maximum per run, seconds.
    pub max: f64,
}

/// Where the wall time of a reproduction went.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Wall time of the runs, from the first start to the last end, seconds.
    pub wall: f64,
    /// Runs.
    pub runs: usize,
    /// Guests at a time.
    pub jobs: usize,
    /// The runs' own times summed, seconds.
    pub run_seconds: f64,
    /// Each stage, in the order of [`STAGES`] (stages no run had are left out), then any
    /// other stage a report holds.
    pub stages: Vec<StageSummary>,
}

impl Summary {
    /// The summary of `runs`, made `jobs` at a time in `wall` seconds.
    pub fn new(runs: &[RunReport], wall: f64, jobs: usize) -> Summary {
        let mut names: Vec<String> = STAGES.iter().map(|s| s.to_string()).collect();
        for r in runs {
            for k in r.stage_seconds.keys() {
                if !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
        let stages = names
            .into_iter()
            .filter_map(|stage| {
                let mut v: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| r.stage_seconds.get(&stage).copied())
                    .collect();
                if v.is_empty() {
                    return None;
                }
                v.sort_by(f64::total_cmp);
                Some(StageSummary {
                    total: v.iter().sum(),
                    median: median(&v),
                    max: v.last().copied().unwrap_or(0.0),
                    stage,
                })
            })
            .collect();
        Summary {
            wall,
            runs: runs.len(),
            jobs,
            run_seconds: runs.iter().map(|r| r.seconds).sum(),
            stages,
        }
    }

    /// Wall time per run, seconds (0 without runs).
    pub fn wall_per_run(&self) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            self.wall / self.runs as f64
        }
    }

    /// The summary as a small table and a line of totals.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{:<10} {:>9} {:>6} {:>8} {:>7}",
            "stage", "summed s", "share", "median s", "max s"
        );
        for s in &self.stages {
            let share = if self.run_seconds > 0.0 {
                100.0 * s.total / self.run_seconds
            } else {
                0.0
            };
            let _ = writeln!(
                t,
                "{:<10} {:>9.1} {:>5.0}% {:>8.2} {:>7.2}",
                s.stage, s.total, share, s.median, s.max
            );
        }
        let _ = write!(
            t,
            "wall {:.1} s for {} run(s), {} at a time: {:.2} s of wall per run (the runs took {:.1} s together)",
            self.wall,
            self.runs,
            self.jobs,
            self.wall_per_run(),
            self.run_seconds
        );
        t
    }
}

/// The median of sorted values (0 for none).
fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &str) -> Scenario {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
        crate::scenario::load_dir(Path::new(dir))
            .unwrap()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap()
    }

    #[test]
    fn longest_runs_go_first_ties_in_matrix_order() {
        assert_eq!(longest_first(&[]), Vec::<usize>::new());
        assert_eq!(longest_first(&[3.0, 9.0, 3.0, 40.0, 9.0]), [3, 1, 4, 0, 2]);
        // NaN (not from a report, but never a panic) sorts before every number.
        assert_eq!(longest_first(&[1.0, f64::NAN, 2.0]), [1, 2, 0]);
    }

    #[test]
    fn the_static_estimate_ranks_debug_then_replug_then_unplug() {
        let plain = estimate(false, &scenario("stock-unbind"));
        let unplug = estimate(false, &scenario("stock-unplug"));
        let replug = estimate(false, &scenario("replug"));
        let debug = estimate(true, &scenario("stock-unbind"));
        assert!(plain < unplug && unplug < replug && replug < debug);
        assert_eq!(estimate(false, &scenario("irq")), plain);
    }

    #[test]
    fn earlier_durations_come_from_the_report_and_bad_ones_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.json");
        assert!(Expected::from_report(&p).get("k", "s").is_none());
        std::fs::write(&p, "{not json").unwrap();
        assert!(Expected::from_report(&p).get("k", "s").is_none());
        std::fs::write(
            &p,
            r#"[{"kernel": "k", "scenario": "a", "seconds": 7.5},
                {"kernel": "k", "scenario": "b", "seconds": 2.0, "infrastructure": "no qemu"},
                {"kernel": "k", "scenario": "c", "seconds": -1},
                {"kernel": "k", "seconds": 3.0}]"#,
        )
        .unwrap();
        let e = Expected::from_report(&p);
        assert_eq!(e.get("k", "a"), Some(7.5));
        assert_eq!(e.get("k", "b"), None);
        assert_eq!(e.get("k", "c"), None);
        assert_eq!(e.get("k", "x"), None);
    }

    #[test]
    fn the_summary_sums_stages_with_median_and_max() {
        let run = |secs: &[(&str, f64)], total: f64| {
            let mut r = RunReport::new("k", "s", "k--s.console.log");
            r.stage_seconds = secs.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            r.seconds = total;
            r
        };
        let runs = [
            run(&[("kernel", 1.0), ("scenario", 2.0), ("extra", 0.5)], 3.5),
            run(&[("kernel", 3.0), ("scenario", 4.0)], 7.0),
            run(&[("kernel", 2.0)], 2.0),
        ];
        let s = Summary::new(&runs, 6.25, 2);
        let names: Vec<&str> = s.stages.iter().map(|x| x.stage.as_str()).collect();
        assert_eq!(names, ["kernel", "scenario", "extra"]);
        assert_eq!(
            s.stages[0],
            StageSummary {
                stage: "kernel".into(),
                total: 6.0,
                median: 2.0,
                max: 3.0
            }
        );
        assert_eq!(s.stages[1].median, 3.0);
        assert_eq!(s.run_seconds, 12.5);
        assert!((s.wall_per_run() - 6.25 / 3.0).abs() < 1e-9);
        let t = s.table();
        assert!(
            t.contains("kernel           6.0    48%     2.00    3.00"),
            "{t}"
        );
        assert!(
            t.ends_with("2.08 s of wall per run (the runs took 12.5 s together)"),
            "{t}"
        );
        assert_eq!(Summary::new(&[], 0.0, 1).wall_per_run(), 0.0);
    }
}
