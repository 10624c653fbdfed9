// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What a run observed, in one type: the console's kernel reports and gpiolib lines, and the
//! named results the scenario's steps produce (EEPROM writes judged on the host's image,
//! module refcounts, interrupts seen, text the guest printed). The same type is the run's
//! progress while it follows the guest, its part of `report.json`, and what `expected.toml`
//! is compared with.
//!
//! Results are named by the scenario file (`observe = "eeprom_write_after_unplug"`); in JSON
//! they are fields beside the console findings. A result the run never reached is `null`,
//! except a write, which is `"n/a"` (the scenario made no such write).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::classify::ConsoleFindings;

/// What became of a write through nvmem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteOutcome {
    /// The bytes are in the host's image.
    Landed,
    /// The write syscall succeeded in the guest, but the image did not change: the bytes went
    /// to the bus and the EEPROM dropped them (WP asserted).
    Blocked,
    /// The write syscall failed in the guest: the kernel refused the write (for example
    /// nvmem aborting when it cannot set WP).
    Refused,
    /// The scenario made no such write (or the run ended before it).
    #[serde(rename = "n/a")]
    NotApplicable,
}

impl std::fmt::Display for WriteOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteOutcome::Landed => "landed",
            WriteOutcome::Blocked => "blocked",
            WriteOutcome::Refused => "refused",
            WriteOutcome::NotApplicable => "n/a",
        })
    }
}

/// The kind of a named result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An EEPROM write's outcome.
    Write,
    /// A number (a refcount).
    Int,
    /// Yes or no (an interrupt seen).
    Bool,
    /// Text the guest printed (addresses, line names).
    Text,
}

impl Kind {
    /// The value of a result the run never reached.
    pub fn unobserved(self) -> Option<Value> {
        match self {
            Kind::Write => Some(Value::Write(WriteOutcome::NotApplicable)),
            _ => None,
        }
    }

    /// The kind of a value.
    pub fn of(v: &Value) -> Kind {
        match v {
            Value::Write(_) => Kind::Write,
            Value::Bool(_) => Kind::Bool,
            Value::Int(_) => Kind::Int,
            Value::Text(_) => Kind::Text,
        }
    }
}

/// A named result's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A write's outcome (`"landed"`, `"blocked"`, `"refused"`, `"n/a"`).
    Write(WriteOutcome),
    /// Yes or no.
    Bool(bool),
    /// A number.
    Int(i64),
    /// Text.
    Text(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Write(w) => write!(f, "{w}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Text(t) => write!(f, "{t}"),
        }
    }
}

/// Everything a run observed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observations {
    /// Kernel reports and the informational gpiolib lines, from the console.
    #[serde(flatten)]
    pub console: ConsoleFindings,
    /// Named results: `null` when the run never got there (a write: `"n/a"`).
    #[serde(flatten)]
    pub results: BTreeMap<String, Option<Value>>,
    /// The kinds of the declared results (not serialized: the values say it, and a report
    /// read back only compares values).
    #[serde(skip)]
    kinds: BTreeMap<String, Kind>,
}

impl Observations {
    /// Declares results, each not observed yet (a name declared twice keeps its first kind).
    pub fn declare(&mut self, results: &[(String, Kind)]) {
        for (name, kind) in results {
            self.kinds.entry(name.clone()).or_insert(*kind);
            self.results
                .entry(name.clone())
                .or_insert_with(|| kind.unobserved());
        }
    }

    /// The kind of a declared result.
    pub fn kind_of(&self, name: &str) -> Option<Kind> {
        self.kinds.get(name).copied()
    }

    /// Records a result.
    pub fn set(&mut self, name: &str, value: Option<Value>) {
        self.results.insert(name.to_string(), value);
    }

    /// A result's value (None: not observed or not declared).
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.results.get(name).and_then(Option::as_ref)
    }

    /// A write's outcome (`n/a` when the run made no such write).
    pub fn write(&self, name: &str) -> WriteOutcome {
        match self.get(name) {
            Some(Value::Write(w)) => *w,
            _ => WriteOutcome::NotApplicable,
        }
    }

    /// A result as text for tables: the value, `n/a` for a write never made, `-` otherwise.
    pub fn text(&self, name: &str) -> String {
        match self.results.get(name) {
            Some(Some(v)) => v.to_string(),
            Some(None) => "not printed".into(),
            None => "-".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Splat;

    fn sample() -> Observations {
        let mut o = Observations::default();
        o.declare(&[
            ("eeprom_write".into(), Kind::Write),
            ("gpio_virtio_refcnt".into(), Kind::Int),
            ("irq_seen".into(), Kind::Bool),
            ("i2cdetect".into(), Kind::Text),
        ]);
        o.console.splats.push(Splat {
            kind: "warning".into(),
            location: "drivers/gpio/gpiolib.c:1".into(),
            function: "gpiod_free".into(),
            trace: vec!["release_nodes".into()],
            headline: "WARNING".into(),
            ..Splat::default()
        });
        o
    }

    #[test]
    fn undeclared_results_are_null_and_writes_na() {
        let o = sample();
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["eeprom_write"], "n/a");
        assert!(v["gpio_virtio_refcnt"].is_null());
        assert!(v["irq_seen"].is_null());
        assert_eq!(v["splats"][0]["function"], "gpiod_free");
        assert_eq!(v["still_requested"], false);
        assert_eq!(o.write("eeprom_write"), WriteOutcome::NotApplicable);
        assert_eq!(o.text("gpio_virtio_refcnt"), "not printed");
        assert_eq!(o.text("nothing"), "-");
    }

    #[test]
    fn a_report_reads_back_the_same() {
        let mut o = sample();
        o.set("eeprom_write", Some(Value::Write(WriteOutcome::Refused)));
        o.set("gpio_virtio_refcnt", Some(Value::Int(-1)));
        o.set("irq_seen", Some(Value::Bool(true)));
        o.set("i2cdetect", Some(Value::Text("50,51".into())));
        let text = serde_json::to_string(&o).unwrap();
        let back: Observations = serde_json::from_str(&text).unwrap();
        assert_eq!(back.console, o.console);
        assert_eq!(back.results, o.results);
        assert_eq!(back.write("eeprom_write"), WriteOutcome::Refused);
        assert_eq!(back.get("i2cdetect"), Some(&Value::Text("50,51".into())));
    }
}
