// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Parsing the scenario runner's KTAP report out of a console log.
//!
//! The runner prints `KTAP version 1`, a plan `1..N`, then
//! `ok N name [# SKIP reason]` / `not ok N name # reason` and `# ` diagnostic
//! lines. On a serial console kernel messages interleave with it, so lines
//! that are none of these are ignored, and a result line may be preceded by
//! kernel text on the same line only if it starts at a line start (it does
//! in practice: the runner prints whole lines).

/// What a test line said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `ok`.
    Pass,
    /// `not ok`.
    Fail,
    /// `ok ... # SKIP`.
    Skip,
    /// `... # TODO` (counted as neither pass nor fail).
    Todo,
}

/// One test result line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    /// The test number.
    pub number: u32,
    /// The test name.
    pub name: String,
    /// The outcome.
    pub outcome: Outcome,
    /// The text after `#` (reason or directive text), if any.
    pub reason: Option<String>,
    /// Diagnostic lines (`# ...`) printed before this result since the previous one.
    pub diagnostics: Vec<String>,
}

/// A parsed report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The KTAP version, if a version line was seen.
    pub version: Option<u32>,
    /// The plan's test count, if a plan was seen.
    pub plan: Option<u32>,
    /// Results in order of appearance.
    pub results: Vec<TestResult>,
    /// Diagnostics after the last result.
    pub trailing_diagnostics: Vec<String>,
}

/// A problem with a report as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// No `KTAP version` line.
    #[error("no 'KTAP version' line")]
    NoVersion,
    /// No plan line.
    #[error("no '1..N' plan line")]
    NoPlan,
    /// Fewer or more results than planned (e.g. the guest died).
    #[error("planned {planned} tests, saw {seen}")]
    Incomplete {
        /// The plan.
        planned: u32,
        /// Results seen.
        seen: usize,
    },
    /// A result numbered out of sequence.
    #[error("test {got} where {want} was expected")]
    OutOfOrder {
        /// Expected number.
        want: u32,
        /// Number seen.
        got: u32,
    },
}

fn parse_result(line: &str) -> Option<(Outcome, u32, String, Option<String>)> {
    let (ok, rest) = if let Some(r) = line.strip_prefix("not ok ") {
        (false, r)
    } else if let Some(r) = line.strip_prefix("ok ") {
        (true, r)
    } else {
        return None;
    };
    let (num, rest) = match rest.split_once(' ') {
        Some((n, r)) => (n, r),
        None => (rest, ""),
    };
    let number: u32 = num.parse().ok()?;
    let (name, reason) = match rest.split_once('#') {
        Some((n, r)) => (n.trim(), Some(r.trim().to_owned())),
        None => (rest.trim(), None),
    };
    let name = name.strip_prefix("- ").unwrap_or(name).to_owned();
    let directive = reason.as_deref().map(str::to_ascii_uppercase);
    let outcome = match directive.as_deref() {
        Some(d) if d.starts_with("SKIP") => Outcome::Skip,
        Some(d) if d.starts_with("TODO") => Outcome::Todo,
        _ if ok => Outcome::Pass,
        _ => Outcome::Fail,
    };
    Some((outcome, number, name, reason))
}

fn parse_plan(line: &str) -> Option<u32> {
    let rest = line.strip_prefix("1..")?;
    let n = rest.split_whitespace().next()?;
    n.parse().ok()
}

/// Parses the first top-level KTAP report in `text`. Indented (subtest)
/// lines and anything before the version line are ignored.
pub fn parse(text: &str) -> Report {
    let mut r = Report::default();
    let mut diags = Vec::new();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if r.version.is_none() {
            if let Some(v) = line.strip_prefix("KTAP version ") {
                r.version = v.trim().parse().ok();
            }
            continue;
        }
        if line.starts_with("KTAP version ") {
            // A second report starts: stop at the first one.
            break;
        }
        if r.plan.is_none() {
            if let Some(n) = parse_plan(line) {
                r.plan = Some(n);
                continue;
            }
        }
        if let Some(d) = line.strip_prefix('#') {
            diags.push(d.strip_prefix(' ').unwrap_or(d).to_owned());
            continue;
        }
        if let Some((outcome, number, name, reason)) = parse_result(line) {
            r.results.push(TestResult {
                number,
                name,
                outcome,
                reason,
                diagnostics: std::mem::take(&mut diags),
            });
        }
    }
    r.trailing_diagnostics = diags;
    r
}

impl Report {
    /// Checks version, plan, numbering and completeness.
    pub fn check_complete(&self) -> Result<(), ReportError> {
        if self.version.is_none() {
            return Err(ReportError::NoVersion);
        }
        let planned = self.plan.ok_or(ReportError::NoPlan)?;
        for (i, t) in self.results.iter().enumerate() {
            let want = u32::try_from(i + 1).unwrap_or(u32::MAX);
            if t.number != want {
                return Err(ReportError::OutOfOrder {
                    want,
                    got: t.number,
                });
            }
        }
        if usize::try_from(planned).ok() != Some(self.results.len()) {
            return Err(ReportError::Incomplete {
                planned,
                seen: self.results.len(),
            });
        }
        Ok(())
    }

    /// The failed tests.
    pub fn failures(&self) -> impl Iterator<Item = &TestResult> {
        self.results.iter().filter(|t| t.outcome == Outcome::Fail)
    }

    /// Counts of (pass, fail, skip).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |o| self.results.iter().filter(|t| t.outcome == o).count();
        (n(Outcome::Pass), n(Outcome::Fail), n(Outcome::Skip))
    }

    /// What is wrong, one line each: an incomplete report, then every
    /// `not ok N name # reason`. Empty when the report passed.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = self.check_complete() {
            out.push(format!("KTAP: {e}"));
        }
        out.extend(self.failures().map(|t| {
            format!(
                "not ok {} {} # {}",
                t.number,
                t.name,
                t.reason.as_deref().unwrap_or("")
            )
        }));
        out
    }

    /// Complete and without failures.
    pub fn passed(&self) -> bool {
        self.check_complete().is_ok() && self.failures().next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
[    0.5] some kernel line
VGN-MARK: runner-start kernel=6.1 scenario=unbind
KTAP version 1
1..4
VGN-MARK: step 1 load-modules
# loaded at24 wp_over_config=1
[    2.0] at24 0-0050: 4096 byte 24c32 EEPROM
ok 1 load-modules
not ok 2 write-pattern # dd to /sys/x failed (status 1)
ok 3 read-back # SKIP write-pattern failed
# gpio_virtio refcnt 1
ok 4 - refcount
# trailing
KTAP version 1
1..1
not ok 1 other
";

    #[test]
    fn parses_a_runner_report() {
        let r = parse(LOG);
        assert_eq!(r.version, Some(1));
        assert_eq!(r.plan, Some(4));
        assert_eq!(r.results.len(), 4);
        assert_eq!(r.results[0].name, "load-modules");
        assert_eq!(r.results[0].outcome, Outcome::Pass);
        assert_eq!(r.results[0].diagnostics, ["loaded at24 wp_over_config=1"]);
        assert_eq!(r.results[1].outcome, Outcome::Fail);
        assert_eq!(
            r.results[1].reason.as_deref(),
            Some("dd to /sys/x failed (status 1)")
        );
        assert_eq!(r.results[2].outcome, Outcome::Skip);
        assert_eq!(r.results[3].name, "refcount");
        assert_eq!(r.results[3].diagnostics, ["gpio_virtio refcnt 1"]);
        assert_eq!(r.trailing_diagnostics, ["trailing"]);
        assert_eq!(r.check_complete(), Ok(()));
        assert_eq!(r.counts(), (2, 1, 1));
        assert!(!r.passed());
        assert_eq!(r.failures().count(), 1);
        assert_eq!(
            r.problems(),
            ["not ok 2 write-pattern # dd to /sys/x failed (status 1)"]
        );
    }

    #[test]
    fn incomplete_and_missing_reports() {
        let r = parse("KTAP version 1\n1..3\nok 1 a\nok 2 b\n");
        assert_eq!(
            r.check_complete(),
            Err(ReportError::Incomplete {
                planned: 3,
                seen: 2
            })
        );
        assert!(!r.passed());
        assert_eq!(
            parse("nothing\n").check_complete(),
            Err(ReportError::NoVersion)
        );
        assert_eq!(
            parse("KTAP version 1\nok 1 a\n").check_complete(),
            Err(ReportError::NoPlan)
        );
        let r = parse("KTAP version 1\n1..2\nok 2 a\nok 1 b\n");
        assert_eq!(
            r.check_complete(),
            Err(ReportError::OutOfOrder { want: 1, got: 2 })
        );
        let r = parse("KTAP version 1\n1..1\nok 1 a\n");
        assert!(r.passed());
        assert!(r.problems().is_empty());
        assert_eq!(
            parse("KTAP version 1\n1..2\nnot ok 1 a\n").problems(),
            ["KTAP: planned 2 tests, saw 1", "not ok 1 a # "]
        );
    }

    #[test]
    fn odd_result_lines() {
        // Not a number, a TODO, a lone "ok N".
        let r = parse("KTAP version 1\n1..3\nok x y\nnot ok 1 a # TODO later\nok 2\nnot ok 3 c\n");
        assert_eq!(r.results.len(), 3);
        assert_eq!(r.results[0].outcome, Outcome::Todo);
        assert_eq!(r.results[1].name, "");
        assert_eq!(r.results[2].reason, None);
        assert_eq!(r.results[2].outcome, Outcome::Fail);
    }
}
