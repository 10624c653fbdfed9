// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Expected outcomes, kept as data in `guest-tests/expected.toml`, and the comparison of a
//! run's outcome with its entry.
//!
//! The comparison is exact where the data is: the same number of kernel reports, each of the
//! expected kind, at the expected file, naming the expected function and passing through the
//! expected caller; the same module refcount; the same EEPROM outcomes. A field the entry
//! leaves out is not judged (the informational gpiolib lines, typically).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::classify::Splat;
use crate::observe::{Kind, Observations, Value, WriteOutcome};
use crate::scenario::Scenario;

/// Errors reading the expectations file.
#[derive(Debug, thiserror::Error)]
pub enum ExpectError {
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or an entry lacks a field (the message has the line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the TOML reader said.
        message: String,
    },
    /// An entry names a result its scenario does not observe, or gives it the wrong kind.
    #[error("{path}: kernel {kernel}, scenario {scenario}: {message}")]
    Result {
        /// The file.
        path: String,
        /// Kernel variant.
        kernel: String,
        /// Scenario.
        scenario: String,
        /// What is wrong.
        message: String,
    },
    /// Two entries for one run.
    #[error("{path}: two entries for kernel {kernel}, scenario {scenario}")]
    Duplicate {
        /// The file.
        path: String,
        /// Kernel variant.
        kernel: String,
        /// Scenario.
        scenario: String,
    },
}

/// One expected kernel report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedSplat {
    /// Kind, as [`Splat::kind`]; may be left out where `title` is given.
    #[serde(default)]
    pub kind: Option<String>,
    /// The report's title, exactly ([`Splat::title`]: "KASAN: slab-use-after-free Read in
    /// gpiod_free", "WARNING in gpiod_free").
    #[serde(default)]
    pub title: Option<String>,
    /// Source file of the report's location (`drivers/gpio/gpiolib.c`); for reports printed
    /// without one, not given.
    #[serde(default)]
    pub file: Option<String>,
    /// Reported function.
    #[serde(default)]
    pub function: Option<String>,
    /// A function that must appear in the trace (or be the reported one).
    #[serde(default)]
    pub via: Option<String>,
}

impl ExpectedSplat {
    /// Why `actual` is not this report, or None if it is.
    pub fn mismatch(&self, actual: &Splat) -> Option<String> {
        if let Some(kind) = self.kind.as_ref().filter(|k| **k != actual.kind) {
            return Some(format!("kind {} instead of {kind}", actual.kind));
        }
        if let Some(title) = self.title.as_ref().filter(|t| **t != actual.title) {
            return Some(format!("\"{}\" instead of \"{title}\"", actual.title));
        }
        if let Some(file) = &self.file {
            let actual_file = actual.location.split(':').next().unwrap_or("");
            if actual_file != file {
                return Some(format!("at {} instead of {file}", actual.location));
            }
        }
        if let Some(function) = &self.function {
            if &actual.function != function {
                return Some(format!("in {} instead of {function}", actual.function));
            }
        }
        if let Some(via) = &self.via {
            if !actual.involves(via) {
                return Some(format!("{via} not in the call trace"));
            }
        }
        None
    }
}

/// The expected outcome of one kernel variant in one scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectation {
    /// Kernel variant, e.g. `6.1-baseline`.
    pub kernel: String,
    /// Scenario, e.g. `unbind`.
    pub scenario: String,
    /// Kernel reports, in console order.
    #[serde(default)]
    pub splats: Vec<ExpectedSplat>,
    /// Informational: "REMOVING GPIOCHIP WITH GPIOS STILL REQUESTED" printed (judged only if given).
    #[serde(default)]
    pub still_requested: Option<bool>,
    /// Informational: how many "backing chip is gone" (judged only if given).
    #[serde(default)]
    pub backing_chip_gone: Option<u32>,
    /// The reasoning behind this entry, with every correction of a prediction.
    pub why: String,
    /// The scenario's named results (`eeprom_write = "landed"`, `gpio_virtio_refcnt = 0`):
    /// every other key of the entry. Checked against the scenario's declarations by
    /// [`Expectations::check`].
    #[serde(flatten)]
    pub results: BTreeMap<String, Expected>,
}

/// An expected result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Expected {
    /// A write outcome: `landed`, `blocked`, `refused` or `n/a`.
    Write(WriteOutcome),
    /// The guest never prints it (it hangs or dies first).
    Absent(Absent),
    /// Yes or no.
    Bool(bool),
    /// A number.
    Int(i64),
    /// Text.
    Text(String),
}

impl Expected {
    fn fits(&self, kind: Kind) -> bool {
        match self {
            Expected::Write(_) => kind == Kind::Write,
            Expected::Absent(_) => kind != Kind::Write,
            Expected::Bool(_) => kind == Kind::Bool,
            Expected::Int(_) => kind == Kind::Int,
            Expected::Text(_) => kind == Kind::Text,
        }
    }

    fn value(&self) -> Option<Value> {
        match self {
            Expected::Write(w) => Some(Value::Write(*w)),
            Expected::Absent(_) => None,
            Expected::Bool(b) => Some(Value::Bool(*b)),
            Expected::Int(n) => Some(Value::Int(*n)),
            Expected::Text(t) => Some(Value::Text(t.clone())),
        }
    }
}

/// The word `absent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Absent {
    /// Not printed.
    Absent,
}

impl Expectation {
    /// Every way `obs` differs from this entry; empty if the run is as expected. Every write
    /// is judged (one the entry leaves out must be `n/a`); other results only where given.
    pub fn compare(&self, obs: &Observations) -> Vec<String> {
        let mut out = Vec::new();
        let splats = &obs.console.splats;
        if splats.len() != self.splats.len() {
            out.push(format!(
                "{} kernel report(s) instead of {}: [{}]",
                splats.len(),
                self.splats.len(),
                splats
                    .iter()
                    .map(|s| format!("\"{}\" at {}", s.title, s.location))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        } else {
            for (i, (e, a)) in self.splats.iter().zip(splats).enumerate() {
                if let Some(why) = e.mismatch(a) {
                    out.push(format!("report {}: {why}", i + 1));
                }
            }
        }
        for (name, want) in &self.results {
            let got = obs.get(name);
            match (want.value(), got) {
                (Some(Value::Write(w)), _) => {
                    let got = obs.write(name);
                    if got != w {
                        out.push(format!("{name}: {got} instead of {w}"));
                    }
                }
                (None, None) => {}
                (Some(w), Some(g)) if &w == g => {}
                (Some(w), Some(g)) => out.push(format!("{name}: {g} instead of {w}")),
                (None, Some(g)) => out.push(format!(
                    "{name}: printed ({g}), expected the guest not to get that far"
                )),
                (Some(w), None) => out.push(format!("{name}: never printed, expected {w}")),
            }
        }
        for (name, got) in &obs.results {
            if let Some(Value::Write(g)) = got {
                if *g != WriteOutcome::NotApplicable && !self.results.contains_key(name) {
                    out.push(format!("{name}: {g} instead of n/a"));
                }
            }
        }
        if let Some(want) = self.still_requested {
            if obs.console.still_requested != want {
                out.push(format!(
                    "STILL REQUESTED printed: {} instead of {want}",
                    obs.console.still_requested
                ));
            }
        }
        if let Some(want) = self.backing_chip_gone {
            if obs.console.backing_chip_gone != want {
                out.push(format!(
                    "{} 'backing chip is gone' instead of {want}",
                    obs.console.backing_chip_gone
                ));
            }
        }
        out
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    run: Vec<Expectation>,
}

/// All expectations of a file.
#[derive(Clone, Debug)]
pub struct Expectations {
    entries: Vec<Expectation>,
    path: String,
}

impl Expectations {
    /// Parses TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Expectations, ExpectError> {
        let file: File = toml::from_str(text).map_err(|e| ExpectError::Parse {
            path: path.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut seen = std::collections::HashSet::new();
        for e in &file.run {
            if e.splats
                .iter()
                .any(|s| s.kind.is_none() && s.title.is_none())
            {
                return Err(ExpectError::Parse {
                    path: path.to_string(),
                    message: format!(
                        "{} {}: a splat entry needs a kind or a title",
                        e.kernel, e.scenario
                    ),
                });
            }
            if !seen.insert((e.kernel.clone(), e.scenario.clone())) {
                return Err(ExpectError::Duplicate {
                    path: path.to_string(),
                    kernel: e.kernel.clone(),
                    scenario: e.scenario.clone(),
                });
            }
        }
        Ok(Expectations {
            entries: file.run,
            path: path.to_string(),
        })
    }

    /// Checks every entry of a known scenario against it: each result the entry names must be
    /// one the scenario observes, of the same kind (`"absent"` fits any result but a write).
    pub fn check(&self, scenarios: &[Scenario]) -> Result<(), ExpectError> {
        for e in &self.entries {
            let Some(s) = scenarios.iter().find(|s| s.name == e.scenario) else {
                continue;
            };
            let declared = s.results();
            for (name, want) in &e.results {
                let err = |message: String| ExpectError::Result {
                    path: self.path.clone(),
                    kernel: e.kernel.clone(),
                    scenario: e.scenario.clone(),
                    message,
                };
                match declared.iter().find(|(n, _)| n == name) {
                    None => {
                        return Err(err(format!(
                            "'{name}' is not a result of the scenario (it observes: {})",
                            declared
                                .iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )))
                    }
                    Some((_, kind)) if !want.fits(*kind) => {
                        return Err(err(format!("'{name}' is a {kind:?} result, not {want:?}")))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Expectations, ExpectError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExpectError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The entry for a run.
    pub fn get(&self, kernel: &str, scenario: &str) -> Option<&Expectation> {
        self.entries
            .iter()
            .find(|e| e.kernel == kernel && e.scenario == scenario)
    }

    /// Every entry.
    pub fn all(&self) -> &[Expectation] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn warning(function: &str, file: &str, trace: &[&str]) -> Splat {
        Splat {
            kind: "warning".into(),
            location: format!("{file}:100"),
            function: function.into(),
            trace: trace.iter().map(|s| s.to_string()).collect(),
            ..Splat::default()
        }
    }

    const ONE: &str = r#"
[[run]]
kernel = "6.1-baseline"
scenario = "unbind"
splats = [{ kind = "warning", file = "drivers/gpio/gpiolib.c", via = "release_nodes" }]
gpio_virtio_refcnt = 0
eeprom_write = "landed"
why = "the 2020 double put"
"#;

    fn observed(splats: &[Splat]) -> Observations {
        let mut o = Observations::default();
        o.declare(&[
            ("eeprom_write".into(), Kind::Write),
            ("eeprom_write_after_unplug".into(), Kind::Write),
            ("gpio_virtio_refcnt".into(), Kind::Int),
            ("irq_seen".into(), Kind::Bool),
            ("i2cdetect".into(), Kind::Text),
        ]);
        o.console.splats = splats.to_vec();
        o.set("gpio_virtio_refcnt", Some(Value::Int(0)));
        o.set("eeprom_write", Some(Value::Write(WriteOutcome::Landed)));
        o
    }

    fn entry(text: &str) -> Expectation {
        Expectations::parse(text, "t")
            .unwrap()
            .get("6.1-baseline", "unbind")
            .unwrap()
            .clone()
    }

    fn the_warning() -> [Splat; 1] {
        [warning(
            "gpiod_put",
            "drivers/gpio/gpiolib.c",
            &["release_nodes"],
        )]
    }

    #[test]
    fn a_matching_run_is_expected() {
        let splats = the_warning();
        assert_eq!(entry(ONE).compare(&observed(&splats)), Vec::<String>::new());
    }

    #[test]
    fn a_title_is_matched_exactly() {
        let by_title = ONE.replace(
            r#"{ kind = "warning", file"#,
            r#"{ title = "WARNING in gpiod_put", file"#,
        );
        let mut splats = the_warning();
        splats[0].title = "WARNING in gpiod_put".into();
        assert_eq!(
            entry(&by_title).compare(&observed(&splats)),
            Vec::<String>::new()
        );
        splats[0].title = "WARNING in gpiod_free".into();
        let d = entry(&by_title).compare(&observed(&splats));
        assert_eq!(
            d,
            ["report 1: \"WARNING in gpiod_free\" instead of \"WARNING in gpiod_put\""]
        );
        let neither = ONE.replace(r#"kind = "warning", "#, "");
        let e = Expectations::parse(&neither, "t").unwrap_err().to_string();
        assert!(e.contains("needs a kind or a title"), "{e}");
    }

    #[test]
    fn every_difference_is_named() {
        let entry = entry(ONE);
        // No report at all.
        let d = entry.compare(&observed(&[]));
        assert_eq!(d.len(), 1);
        assert!(d[0].contains("0 kernel report(s) instead of 1"), "{d:?}");
        // Wrong file, missing caller.
        let splats = [warning("gpiod_put", "lib/refcount.c", &["release_nodes"])];
        assert!(entry.compare(&observed(&splats))[0].contains("lib/refcount.c"));
        let splats = [warning(
            "gpiod_put",
            "drivers/gpio/gpiolib.c",
            &["nvmem_release"],
        )];
        assert!(entry.compare(&observed(&splats))[0].contains("release_nodes not in"));
        // Refcount and write outcomes.
        let splats = the_warning();
        let mut o = observed(&splats);
        o.set("gpio_virtio_refcnt", Some(Value::Int(-1)));
        o.set("eeprom_write", Some(Value::Write(WriteOutcome::Refused)));
        let d = entry.compare(&o);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.contains(&"gpio_virtio_refcnt: -1 instead of 0".to_string()));
        assert!(d.contains(&"eeprom_write: refused instead of landed".to_string()));
        o.set("gpio_virtio_refcnt", None);
        assert!(entry
            .compare(&o)
            .contains(&"gpio_virtio_refcnt: never printed, expected 0".to_string()));
    }

    #[test]
    fn a_write_the_entry_leaves_out_must_not_happen() {
        let splats = the_warning();
        let mut o = observed(&splats);
        o.set(
            "eeprom_write_after_unplug",
            Some(Value::Write(WriteOutcome::Blocked)),
        );
        assert_eq!(
            entry(ONE).compare(&o),
            ["eeprom_write_after_unplug: blocked instead of n/a"]
        );
    }

    #[test]
    fn an_absent_refcount_must_be_absent() {
        let text = ONE.replace("gpio_virtio_refcnt = 0", "gpio_virtio_refcnt = \"absent\"");
        let entry = entry(&text);
        let splats = the_warning();
        let mut o = observed(&splats);
        o.set("gpio_virtio_refcnt", None);
        assert!(entry.compare(&o).is_empty());
        o.set("gpio_virtio_refcnt", Some(Value::Int(0)));
        assert_eq!(entry.compare(&o).len(), 1);
    }

    #[test]
    fn text_and_bool_results_are_compared_where_given() {
        let text = ONE.replace("why =", "i2cdetect = \"50,51\"\nirq_seen = true\nwhy =");
        let entry = entry(&text);
        let splats = the_warning();
        let mut o = observed(&splats);
        o.set("i2cdetect", Some(Value::Text("50,51".into())));
        o.set("irq_seen", Some(Value::Bool(true)));
        assert!(entry.compare(&o).is_empty());
        o.set("i2cdetect", Some(Value::Text("50".into())));
        o.set("irq_seen", Some(Value::Bool(false)));
        let d = entry.compare(&o);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().any(|m| m == "i2cdetect: 50 instead of 50,51"));
        assert!(d.iter().any(|m| m == "irq_seen: false instead of true"));
    }

    #[test]
    fn informational_fields_are_judged_only_when_given() {
        let splats = the_warning();
        let mut o = observed(&splats);
        o.console.still_requested = true;
        o.console.backing_chip_gone = 2;
        let mut entry = entry(ONE);
        assert!(entry.compare(&o).is_empty());
        entry.backing_chip_gone = Some(1);
        assert_eq!(entry.compare(&o).len(), 1);
    }

    #[test]
    fn bad_files_are_refused() {
        let dup = format!("{ONE}{}", ONE.replace("[[run]]", "\n[[run]]"));
        assert!(matches!(
            Expectations::parse(&dup, "t"),
            Err(ExpectError::Duplicate { .. })
        ));
        let no_why = ONE.replace("why = \"the 2020 double put\"", "");
        let e = Expectations::parse(&no_why, "t").unwrap_err();
        assert!(e.to_string().contains("why"), "{e}");
        let bad_splat = ONE.replace("via =", "vai =");
        assert!(matches!(
            Expectations::parse(&bad_splat, "t"),
            Err(ExpectError::Parse { .. })
        ));
    }

    #[test]
    fn entries_are_checked_against_their_scenario() {
        let scenarios =
            crate::scenario::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios"))
                .unwrap();
        let good = Expectations::parse(ONE, "t").unwrap();
        good.check(&scenarios).unwrap();
        let typo =
            Expectations::parse(&ONE.replace("eeprom_write =", "eprom_write ="), "t").unwrap();
        let e = typo.check(&scenarios).unwrap_err().to_string();
        assert!(
            e.contains("'eprom_write' is not a result of the scenario"),
            "{e}"
        );
        let kind = Expectations::parse(&ONE.replace("= \"landed\"", "= 3"), "t").unwrap();
        let e = kind.check(&scenarios).unwrap_err().to_string();
        assert!(e.contains("'eeprom_write' is a Write result"), "{e}");
    }

    #[test]
    fn the_repository_file_covers_every_variant_and_scenario() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let e = Expectations::load(&root.join("expected.toml")).unwrap();
        let scenarios = crate::scenario::load_dir(&root.join("scenarios")).unwrap();
        e.check(&scenarios).unwrap();
        let variants = crate::variants::Conf::load(&root.join("kernel/variants.conf")).unwrap();
        for k in variants.names() {
            for s in scenarios
                .iter()
                .filter(|s| s.kind == crate::scenario::FileKind::Reproduce)
            {
                assert!(
                    e.get(k, &s.name).is_some(),
                    "no expectation for {k} {}",
                    s.name
                );
            }
        }
    }
}
