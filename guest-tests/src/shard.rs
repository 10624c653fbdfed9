// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Splitting the kernel x scenario matrix across CI jobs (`--shard K/N`) and merging their
//! reports back (`guest-tests merge`), and the exit status a run or a merge ends with.
//!
//! The split is deterministic and independent of the machine: the pairs are put in one order
//! (kernel, then scenario, by name) and pair `i` goes to shard `i mod N + 1`, so N jobs given
//! the same kernels and scenarios run every pair exactly once between them, and each shard
//! holds a mix of kernels (a job's kernel builds are shared by the cache key, not by shard).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Why a shard or a merge is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardError {
    /// Not `K/N` with 1 <= K <= N.
    #[error("--shard takes K/N with 1 <= K <= N (for example 2/3), not {0:?}")]
    Syntax(String),
    /// Two reports hold the same run.
    #[error("run {kernel}/{scenario} appears in more than one report")]
    Duplicate {
        /// Kernel variant.
        kernel: String,
        /// Scenario.
        scenario: String,
    },
    /// Nothing to merge.
    #[error("no runs to merge")]
    Empty,
    /// Not `KERNEL=SCENARIO[,SCENARIO...]`.
    #[error("--scenarios-on takes KERNEL=SCENARIO[,SCENARIO...] (for example 6.12-debug=unbind,replug), not {0:?}")]
    ScenariosOnSyntax(String),
}

/// One part of N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This part, from 1.
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let bad = || ShardError::Syntax(s.to_string());
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = k.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// The whole matrix as one shard.
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// This shard's pairs of `kernels` x `scenarios`, less the pairs that `narrow` leaves
    /// out, in the canonical order.
    pub fn select(
        &self,
        kernels: &[String],
        scenarios: &[String],
        narrow: &[ScenariosOn],
    ) -> Vec<(String, String)> {
        let ks: BTreeSet<&String> = kernels.iter().collect();
        let ss: BTreeSet<&String> = scenarios.iter().collect();
        ks.iter()
            .flat_map(|k| ss.iter().map(move |s| ((*k).clone(), (*s).clone())))
            .filter(|(k, s)| ScenariosOn::keeps(narrow, k, s))
            .enumerate()
            .filter(|(i, _)| i % self.count + 1 == self.index)
            .map(|(_, pair)| pair)
            .collect()
    }
}

/// `--scenarios-on KERNEL=SCENARIO[,SCENARIO...]`: on that kernel, only those scenarios of the
/// matrix run (the other kernels run all of them). A debug kernel, for example, on only the
/// scenarios where its sanitizers find what the plain kernels cannot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenariosOn {
    /// Kernel variant.
    pub kernel: String,
    /// The scenarios it runs.
    pub scenarios: Vec<String>,
}

impl FromStr for ScenariosOn {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<ScenariosOn, ShardError> {
        let bad = || ShardError::ScenariosOnSyntax(s.to_string());
        let (kernel, list) = s.split_once('=').ok_or_else(bad)?;
        let kernel = kernel.trim();
        let scenarios: Vec<String> = list.split(',').map(|x| x.trim().to_string()).collect();
        if kernel.is_empty() || scenarios.iter().any(String::is_empty) {
            return Err(bad());
        }
        Ok(ScenariosOn {
            kernel: kernel.to_string(),
            scenarios,
        })
    }
}

impl ScenariosOn {
    /// Whether the pair runs: its kernel is named in no entry of `narrow`, or `scenario` is
    /// in one of the entries that name it (entries for one kernel add up).
    pub fn keeps(narrow: &[ScenariosOn], kernel: &str, scenario: &str) -> bool {
        let mut on = narrow.iter().filter(|n| n.kernel == kernel).peekable();
        on.peek().is_none() || on.any(|n| n.scenarios.iter().any(|s| s == scenario))
    }
}

/// Merges the runs of several reports, refusing a run that appears twice, in the order of
/// `key` (kernel, scenario).
pub fn merge<T>(
    parts: impl IntoIterator<Item = Vec<T>>,
    key: impl Fn(&T) -> (String, String),
) -> Result<Vec<T>, ShardError> {
    let mut all: Vec<T> = parts.into_iter().flatten().collect();
    if all.is_empty() {
        return Err(ShardError::Empty);
    }
    all.sort_by_key(&key);
    for pair in all.windows(2) {
        if let [a, b] = pair {
            let (ka, kb) = (key(a), key(b));
            if ka == kb {
                return Err(ShardError::Duplicate {
                    kernel: ka.0,
                    scenario: ka.1,
                });
            }
        }
    }
    Ok(all)
}

/// How `scripts/reproduce` (and `guest-tests merge`) exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// 0: every run as expected (or observed, where there is no expectation).
    AsExpected = 0,
    /// 1: some run differs from its expectation.
    Differs = 1,
    /// 2: a usage or scenario-file error; nothing ran.
    Usage = 2,
    /// 3: the infrastructure failed: a kernel build, QEMU or a backend did not start, or a run
    /// timed out before its first marker.
    Infrastructure = 3,
}

impl Exit {
    /// The status of a matrix from its runs: infrastructure failures first (the results are
    /// incomplete), then differences.
    pub fn of_runs(runs: impl IntoIterator<Item = RunEnd>) -> Exit {
        runs.into_iter()
            .map(|r| match r {
                RunEnd::AsExpected | RunEnd::Observed | RunEnd::Skipped => Exit::AsExpected,
                RunEnd::Differs => Exit::Differs,
                RunEnd::Infrastructure => Exit::Infrastructure,
            })
            .max()
            .unwrap_or(Exit::AsExpected)
    }

    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// How one run ended, for [`Exit::of_runs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunEnd {
    /// Matched its expectation.
    AsExpected,
    /// No expectation: reported, not judged.
    Observed,
    /// Not applicable to the kernel.
    Skipped,
    /// Differed from its expectation.
    Differs,
    /// QEMU or a backend did not start, or the guest never reached its first marker.
    Infrastructure,
}

/// The help text's section on exit codes (for `--help` and the README).
pub const EXIT_CODES_HELP: &str = "\
Exit status:
  0  every run as expected (runs without an expectation are reported as observed)
  1  some run differs from its expectation
  2  usage or scenario-file error (nothing ran)
  3  infrastructure failure: a kernel build, QEMU or a backend failed to start,
     or a run timed out before the guest's first marker";

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parse_shards() {
        assert_eq!("2/3".parse(), Ok(Shard { index: 2, count: 3 }));
        assert_eq!(" 1 / 1 ".parse(), Ok(Shard::WHOLE));
        for bad in ["0/2", "3/2", "1/0", "1", "a/b", "1/2/3", ""] {
            assert_eq!(
                bad.parse::<Shard>(),
                Err(ShardError::Syntax(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(Shard { index: 2, count: 5 }.to_string(), "2/5");
    }

    #[test]
    fn shards_cover_the_matrix_exactly_once_whatever_the_input_order() {
        let kernels = names(&["6.12-kref", "6.1-baseline", "7.3-baseline"]);
        let scenarios = names(&["unbind", "irq", "replug", "eeprom"]);
        let whole = Shard::WHOLE.select(&kernels, &scenarios, &[]);
        assert_eq!(whole.len(), 12);
        for n in 1..=13 {
            let mut seen = Vec::new();
            for k in 1..=n {
                let part = Shard { index: k, count: n }.select(&kernels, &scenarios, &[]);
                // Balanced: sizes differ by at most one.
                assert!(part.len() == 12 / n || part.len() == 12 / n + 1, "{k}/{n}");
                seen.extend(part);
            }
            seen.sort();
            let mut expect = whole.clone();
            expect.sort();
            assert_eq!(seen, expect, "N = {n}");
        }
        let mut shuffled_k = kernels.clone();
        shuffled_k.reverse();
        let s = Shard { index: 2, count: 3 };
        assert_eq!(
            s.select(&kernels, &scenarios, &[]),
            s.select(&shuffled_k, &scenarios, &[])
        );
    }

    #[test]
    fn scenarios_on_parses_and_narrows_one_kernel() {
        let on: ScenariosOn = " 6.12-debug = unbind, replug".parse().unwrap();
        assert_eq!(on.kernel, "6.12-debug");
        assert_eq!(on.scenarios, names(&["unbind", "replug"]));
        for bad in ["6.12-debug", "=unbind", "6.12-debug=", "k=a,,b", "k=a,"] {
            assert_eq!(
                bad.parse::<ScenariosOn>(),
                Err(ShardError::ScenariosOnSyntax(bad.to_string())),
                "{bad}"
            );
        }
        let kernels = names(&["6.12-debug", "6.1-baseline"]);
        let scenarios = names(&["unbind", "irq", "replug"]);
        let narrow = vec![
            "6.12-debug=unbind".parse().unwrap(),
            "6.12-debug=replug".parse().unwrap(),
        ];
        let whole = Shard::WHOLE.select(&kernels, &scenarios, &narrow);
        assert_eq!(
            whole,
            [
                ("6.1-baseline", "irq"),
                ("6.1-baseline", "replug"),
                ("6.1-baseline", "unbind"),
                ("6.12-debug", "replug"),
                ("6.12-debug", "unbind"),
            ]
            .map(|(k, s)| (k.to_string(), s.to_string()))
        );
        // The shards split the narrowed matrix: every kept pair once, balanced.
        let mut seen: Vec<_> = (1..=2)
            .flat_map(|k| Shard { index: k, count: 2 }.select(&kernels, &scenarios, &narrow))
            .collect();
        seen.sort();
        assert_eq!(seen, whole);
        assert_eq!(
            Shard { index: 1, count: 2 }
                .select(&kernels, &scenarios, &narrow)
                .len(),
            3
        );
    }

    #[test]
    fn merge_orders_and_refuses_duplicates() {
        let key = |r: &(&str, &str, u32)| (r.0.to_string(), r.1.to_string());
        let a = vec![("6.1-baseline", "unbind", 1), ("6.12-kref", "irq", 2)];
        let b = vec![("6.1-baseline", "irq", 3)];
        let merged = merge([a.clone(), b], key).unwrap();
        assert_eq!(
            merged.iter().map(|r| r.2).collect::<Vec<_>>(),
            vec![3, 1, 2]
        );
        assert_eq!(
            merge([a.clone(), a], key),
            Err(ShardError::Duplicate {
                kernel: "6.1-baseline".into(),
                scenario: "unbind".into()
            })
        );
        assert_eq!(
            merge(Vec::<Vec<(&str, &str, u32)>>::new(), key),
            Err(ShardError::Empty)
        );
    }

    #[test]
    fn exit_status_of_runs() {
        use RunEnd::*;
        assert_eq!(Exit::of_runs([]), Exit::AsExpected);
        assert_eq!(
            Exit::of_runs([AsExpected, Observed, Skipped]),
            Exit::AsExpected
        );
        assert_eq!(Exit::of_runs([AsExpected, Differs]), Exit::Differs);
        assert_eq!(
            Exit::of_runs([Differs, Infrastructure, AsExpected]),
            Exit::Infrastructure
        );
        assert_eq!(
            [
                Exit::AsExpected,
                Exit::Differs,
                Exit::Usage,
                Exit::Infrastructure
            ]
            .map(Exit::code),
            [0, 1, 2, 3]
        );
    }
}
