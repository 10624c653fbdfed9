// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Expected outcomes, kept as data in `guest-tests/expected.toml`, and the comparison of a
//! run's outcome with its entry.
//!
//! The comparison is exact where the data is: the same number of kernel reports, each of the
//! expected kind, at the expected file, naming the expected function and passing through the
//! expected caller; the same module refcount; the same EEPROM outcomes. A field the entry
//! leaves out is not judged (the informational gpiolib lines, typically).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::classify::Splat;

/// Errors reading the expectations file.
#[derive(Debug, thiserror::Error)]
pub enum ExpectError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: toml::de::Error,
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

/// What became of a write through nvmem, judged on the host's image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteOutcome {
    /// The bytes are in the image.
    Landed,
    /// The image did not change.
    Blocked,
    /// The scenario makes no such write.
    #[serde(rename = "n/a")]
    NotApplicable,
}

impl std::fmt::Display for WriteOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteOutcome::Landed => "landed",
            WriteOutcome::Blocked => "blocked",
            WriteOutcome::NotApplicable => "n/a",
        })
    }
}

/// One expected kernel report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedSplat {
    /// Kind, as [`Splat::kind`].
    pub kind: String,
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
        if self.kind != actual.kind {
            return Some(format!("kind {} instead of {}", actual.kind, self.kind));
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
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Kernel variant, e.g. `6.1-baseline`.
    pub kernel: String,
    /// Scenario, e.g. `unbind`.
    pub scenario: String,
    /// Kernel reports, in console order.
    #[serde(default)]
    pub splats: Vec<ExpectedSplat>,
    /// gpio_virtio's module refcount after the last put, or `"absent"` where the guest
    /// cannot print it (it hangs or dies first).
    pub gpio_virtio_refcnt: ExpectedRefcnt,
    /// The write before any unplug.
    pub eeprom_write: WriteOutcome,
    /// The write after the gpio device is unplugged.
    pub eeprom_write_after_unplug: WriteOutcome,
    /// The write after replug, rewiring and re-probe.
    #[serde(default = "not_applicable")]
    pub eeprom_write_after_replug: WriteOutcome,
    /// Whether the guest saw the GPIO edge (irq scenario).
    #[serde(default)]
    pub irq_seen: Option<bool>,
    /// The write to the 24c02 at 0x51 (eeprom scenario).
    #[serde(default = "not_applicable")]
    pub eeprom2_write: WriteOutcome,
    /// The write while the host asserts WP (eeprom scenario).
    #[serde(default = "not_applicable")]
    pub eeprom_write_wp_asserted: WriteOutcome,
    /// Addresses i2cdetect finds before binding (judged only if given).
    #[serde(default)]
    pub i2cdetect: Option<String>,
    /// The line names the guest sees on the gpio chip (judged only if given).
    #[serde(default)]
    pub gpio_lines: Option<String>,
    /// Informational: "REMOVING GPIOCHIP WITH GPIOS STILL REQUESTED" printed (judged only if given).
    #[serde(default)]
    pub still_requested: Option<bool>,
    /// Informational: how many "backing chip is gone" (judged only if given).
    #[serde(default)]
    pub backing_chip_gone: Option<u32>,
    /// The reasoning behind this entry, with every correction of a prediction.
    pub why: String,
}

/// An expected refcount: a number, or `"absent"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExpectedRefcnt {
    /// This value.
    Value(i64),
    /// The guest never prints it.
    Absent(Absent),
}

/// The word `absent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Absent {
    /// Not printed.
    Absent,
}

impl ExpectedRefcnt {
    fn as_option(self) -> Option<i64> {
        match self {
            ExpectedRefcnt::Value(n) => Some(n),
            ExpectedRefcnt::Absent(_) => None,
        }
    }
}

fn not_applicable() -> WriteOutcome {
    WriteOutcome::NotApplicable
}

/// What a run produced, in the terms of an [`Expectation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed<'a> {
    /// Kernel reports.
    pub splats: &'a [Splat],
    /// Refcount, if the guest printed it.
    pub gpio_virtio_refcnt: Option<i64>,
    /// First write.
    pub eeprom_write: WriteOutcome,
    /// Write after unplug.
    pub eeprom_write_after_unplug: WriteOutcome,
    /// Write after replug.
    pub eeprom_write_after_replug: WriteOutcome,
    /// Edge seen by the guest, if the scenario waits for one.
    pub irq_seen: Option<bool>,
    /// Informational line seen.
    pub still_requested: bool,
    /// Informational line count.
    pub backing_chip_gone: u32,
    /// Write to the second EEPROM.
    pub eeprom2_write: WriteOutcome,
    /// Write while WP is asserted by the host.
    pub eeprom_write_wp_asserted: WriteOutcome,
    /// What i2cdetect found.
    pub i2cdetect: Option<&'a str>,
    /// The gpio line names the guest saw.
    pub gpio_lines: Option<&'a str>,
}

impl Expectation {
    /// Every way `obs` differs from this entry; empty if the run is as expected.
    pub fn compare(&self, obs: &Observed) -> Vec<String> {
        let mut out = Vec::new();
        if obs.splats.len() != self.splats.len() {
            out.push(format!(
                "{} kernel report(s) instead of {}: [{}]",
                obs.splats.len(),
                self.splats.len(),
                obs.splats
                    .iter()
                    .map(|s| format!("{} in {} at {}", s.kind, s.function, s.location))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        } else {
            for (i, (e, a)) in self.splats.iter().zip(obs.splats).enumerate() {
                if let Some(why) = e.mismatch(a) {
                    out.push(format!("report {}: {why}", i + 1));
                }
            }
        }
        match (obs.gpio_virtio_refcnt, self.gpio_virtio_refcnt.as_option()) {
            (Some(n), Some(want)) if n == want => {}
            (None, None) => {}
            (Some(n), Some(want)) => out.push(format!("gpio_virtio refcnt {n} instead of {want}")),
            (Some(n), None) => out.push(format!(
                "gpio_virtio refcnt printed ({n}), expected the guest not to get that far"
            )),
            (None, Some(_)) => out.push("the guest never printed gpio_virtio's refcnt".into()),
        }
        let mut write = |what: &str, got: WriteOutcome, want: WriteOutcome| {
            if got != want {
                out.push(format!("{what}: {got} instead of {want}"));
            }
        };
        write("EEPROM write", obs.eeprom_write, self.eeprom_write);
        write(
            "EEPROM write after unplug",
            obs.eeprom_write_after_unplug,
            self.eeprom_write_after_unplug,
        );
        write(
            "EEPROM write after replug",
            obs.eeprom_write_after_replug,
            self.eeprom_write_after_replug,
        );
        write("write to the 24c02", obs.eeprom2_write, self.eeprom2_write);
        write(
            "EEPROM write with WP asserted",
            obs.eeprom_write_wp_asserted,
            self.eeprom_write_wp_asserted,
        );
        for (what, want, got) in [
            ("i2cdetect found", &self.i2cdetect, obs.i2cdetect),
            ("gpio line names", &self.gpio_lines, obs.gpio_lines),
        ] {
            if let Some(want) = want {
                if got != Some(want.as_str()) {
                    out.push(format!("{what}: {got:?} instead of {want:?}"));
                }
            }
        }
        if self.irq_seen.is_some() && obs.irq_seen != self.irq_seen {
            out.push(format!(
                "GPIO edge seen: {:?} instead of {:?}",
                obs.irq_seen, self.irq_seen
            ));
        }
        if let Some(want) = self.still_requested {
            if obs.still_requested != want {
                out.push(format!(
                    "STILL REQUESTED printed: {} instead of {want}",
                    obs.still_requested
                ));
            }
        }
        if let Some(want) = self.backing_chip_gone {
            if obs.backing_chip_gone != want {
                out.push(format!(
                    "{} 'backing chip is gone' instead of {want}",
                    obs.backing_chip_gone
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
}

impl Expectations {
    /// Parses TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Expectations, ExpectError> {
        let file: File = toml::from_str(text).map_err(|source| ExpectError::Parse {
            path: path.to_string(),
            source,
        })?;
        let mut seen = std::collections::HashSet::new();
        for e in &file.run {
            if !seen.insert((e.kernel.clone(), e.scenario.clone())) {
                return Err(ExpectError::Duplicate {
                    path: path.to_string(),
                    kernel: e.kernel.clone(),
                    scenario: e.scenario.clone(),
                });
            }
        }
        Ok(Expectations { entries: file.run })
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

/// The kernel variants the reproduction runs.
pub const KERNELS: [&str; 5] = [
    "6.1-baseline",
    "6.1-kref",
    "6.1-kref-numbfix",
    "6.12-baseline",
    "6.12-kref",
];

/// The scenarios the reproduction runs.
pub const SCENARIOS: [&str; 7] = [
    "stock-unbind",
    "unbind",
    "unplug-then-unbind",
    "stock-unplug",
    "replug",
    "irq",
    "eeprom",
];

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
eeprom_write_after_unplug = "n/a"
why = "the 2020 double put"
"#;

    fn observed(splats: &[Splat]) -> Observed<'_> {
        Observed {
            splats,
            gpio_virtio_refcnt: Some(0),
            eeprom_write: WriteOutcome::Landed,
            eeprom_write_after_unplug: WriteOutcome::NotApplicable,
            eeprom_write_after_replug: WriteOutcome::NotApplicable,
            irq_seen: None,
            still_requested: false,
            backing_chip_gone: 0,
            eeprom2_write: WriteOutcome::NotApplicable,
            eeprom_write_wp_asserted: WriteOutcome::NotApplicable,
            i2cdetect: None,
            gpio_lines: None,
        }
    }

    #[test]
    fn a_matching_run_is_expected() {
        let e = Expectations::parse(ONE, "t").unwrap();
        let entry = e.get("6.1-baseline", "unbind").unwrap();
        let splats = [warning(
            "gpiod_put",
            "drivers/gpio/gpiolib.c",
            &["release_nodes"],
        )];
        assert_eq!(entry.compare(&observed(&splats)), Vec::<String>::new());
    }

    #[test]
    fn every_difference_is_named() {
        let e = Expectations::parse(ONE, "t").unwrap();
        let entry = e.get("6.1-baseline", "unbind").unwrap();
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
        let splats = [warning(
            "gpiod_put",
            "drivers/gpio/gpiolib.c",
            &["release_nodes"],
        )];
        let mut o = observed(&splats);
        o.gpio_virtio_refcnt = Some(-1);
        o.eeprom_write = WriteOutcome::Blocked;
        let d = entry.compare(&o);
        assert_eq!(d.len(), 2, "{d:?}");
        o.gpio_virtio_refcnt = None;
        assert!(entry.compare(&o)[0].contains("never printed"));
    }

    #[test]
    fn an_absent_refcount_must_be_absent() {
        let text = ONE.replace("gpio_virtio_refcnt = 0", "gpio_virtio_refcnt = \"absent\"");
        let e = Expectations::parse(&text, "t").unwrap();
        let entry = e.get("6.1-baseline", "unbind").unwrap();
        let splats = [warning(
            "gpiod_put",
            "drivers/gpio/gpiolib.c",
            &["release_nodes"],
        )];
        let mut o = observed(&splats);
        o.gpio_virtio_refcnt = None;
        assert!(entry.compare(&o).is_empty());
        o.gpio_virtio_refcnt = Some(0);
        assert_eq!(entry.compare(&o).len(), 1);
        assert!(Expectations::parse(&ONE.replace("= 0\n", "= \"gone\"\n"), "t").is_err());
    }

    #[test]
    fn eeprom_scenario_fields_are_compared() {
        let text = ONE.replace(
            "why =",
            "eeprom2_write = \"landed\"\neeprom_write_wp_asserted = \"blocked\"\ni2cdetect = \"50,51\"\ngpio_lines = \"wp,led,irq\"\nwhy =",
        );
        let e = Expectations::parse(&text, "t").unwrap();
        let entry = e.get("6.1-baseline", "unbind").unwrap();
        let splats = [warning(
            "gpiod_put",
            "drivers/gpio/gpiolib.c",
            &["release_nodes"],
        )];
        let mut o = observed(&splats);
        o.eeprom2_write = WriteOutcome::Landed;
        o.eeprom_write_wp_asserted = WriteOutcome::Blocked;
        o.i2cdetect = Some("50,51");
        o.gpio_lines = Some("wp,led,irq");
        assert!(entry.compare(&o).is_empty());
        o.i2cdetect = Some("50");
        o.eeprom_write_wp_asserted = WriteOutcome::Landed;
        let d = entry.compare(&o);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().any(|m| m.contains("i2cdetect found")));
        assert!(d
            .iter()
            .any(|m| m.contains("WP asserted: landed instead of blocked")));
    }

    #[test]
    fn informational_fields_are_judged_only_when_given() {
        let e = Expectations::parse(ONE, "t").unwrap();
        let entry = e.get("6.1-baseline", "unbind").unwrap();
        let splats = [warning(
            "gpiod_put",
            "drivers/gpio/gpiolib.c",
            &["release_nodes"],
        )];
        let mut o = observed(&splats);
        o.still_requested = true;
        o.backing_chip_gone = 2;
        assert!(entry.compare(&o).is_empty());
        let mut entry = entry.clone();
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
        let unknown = ONE.replace("why =", "whence = 1\nwhy =");
        assert!(matches!(
            Expectations::parse(&unknown, "t"),
            Err(ExpectError::Parse { .. })
        ));
        let bad_outcome = ONE.replace("\"landed\"", "\"maybe\"");
        assert!(Expectations::parse(&bad_outcome, "t").is_err());
    }

    #[test]
    fn the_repository_file_parses_and_covers_every_run() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("expected.toml");
        let e = Expectations::load(&path).unwrap();
        for k in crate::expect::KERNELS {
            for s in crate::expect::SCENARIOS {
                assert!(e.get(k, s).is_some(), "no expectation for {k} {s}");
            }
        }
        assert_eq!(e.all().len(), KERNELS.len() * SCENARIOS.len());
    }
}
