// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Parsing of the command-line pieces (chip and line selectors, values,
//! edges) and the parseable output format, kept apart from the ioctls so
//! they can be tested on any host.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Errors of argument parsing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    /// A `LINE=VALUE` pair without `=`.
    #[error("'{0}' is not LINE=VALUE")]
    NotAssignment(String),
    /// A value that is not 0/1/active/inactive/high/low.
    #[error("'{0}' is not a line value (use 0, 1, high, low, active or inactive)")]
    BadValue(String),
    /// An empty chip or line selector.
    #[error("empty {0} selector")]
    Empty(&'static str),
}

/// How the user named a chip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChipSel {
    /// A path to the character device, e.g. `/dev/gpiochip0`.
    Path(PathBuf),
    /// The kernel's chip name, e.g. `gpiochip0`.
    Name(String),
    /// The chip label (for virtio-gpio the virtio device name, e.g. `virtio1`),
    /// or, with a trailing `*`, a label prefix (`virtio*`).
    Label { text: String, prefix: bool },
}

impl ChipSel {
    /// Parses a chip selector.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        if s.is_empty() {
            return Err(SpecError::Empty("chip"));
        }
        if s.starts_with('/') {
            return Ok(ChipSel::Path(PathBuf::from(s)));
        }
        if let Some(rest) = s.strip_prefix("gpiochip") {
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                return Ok(ChipSel::Name(s.to_owned()));
            }
        }
        let label = s.strip_prefix("label:").unwrap_or(s);
        match label.strip_suffix('*') {
            Some(p) => Ok(ChipSel::Label {
                text: p.to_owned(),
                prefix: true,
            }),
            None => Ok(ChipSel::Label {
                text: label.to_owned(),
                prefix: false,
            }),
        }
    }

    /// Whether a chip with this name and label matches the selector.
    pub fn matches(&self, name: &str, label: &str) -> bool {
        match self {
            ChipSel::Path(p) => p.file_name().is_some_and(|f| f == name),
            ChipSel::Name(n) => n == name,
            ChipSel::Label {
                text,
                prefix: false,
            } => text == label,
            ChipSel::Label { text, prefix: true } => label.starts_with(text.as_str()),
        }
    }
}

/// How the user named a line: its offset in the chip or its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineSel {
    /// Hardware offset in the chip.
    Offset(u32),
    /// Line name as reported by the chip.
    Name(String),
}

impl LineSel {
    /// Parses a line selector: all digits is an offset, anything else a name.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        if s.is_empty() {
            return Err(SpecError::Empty("line"));
        }
        match s.parse::<u32>() {
            Ok(n) => Ok(LineSel::Offset(n)),
            Err(_) => Ok(LineSel::Name(s.to_owned())),
        }
    }
}

/// Parses a line value.
pub fn parse_value(s: &str) -> Result<bool, SpecError> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "high" | "active" | "on" => Ok(true),
        "0" | "low" | "inactive" | "off" => Ok(false),
        _ => Err(SpecError::BadValue(s.to_owned())),
    }
}

/// Parses `LINE=VALUE`.
pub fn parse_assignment(s: &str) -> Result<(LineSel, bool), SpecError> {
    let (l, v) = s
        .split_once('=')
        .ok_or_else(|| SpecError::NotAssignment(s.to_owned()))?;
    Ok((LineSel::parse(l)?, parse_value(v)?))
}

/// Quotes a value for the `key=value` output: plain words stay bare,
/// anything else (empty, spaces, quotes, `=`, control characters) is
/// double-quoted with backslash escapes.
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:+,@".contains(c));
    if plain {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Formats one output record: a kind word followed by `key=value` fields.
pub fn record(kind: &str, fields: &[(&str, String)]) -> String {
    let mut s = kind.to_owned();
    for (k, v) in fields {
        s.push(' ');
        s.push_str(k);
        s.push('=');
        s.push_str(&quote(v));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chip_selectors() {
        assert_eq!(
            ChipSel::parse("/dev/gpiochip3").unwrap(),
            ChipSel::Path(PathBuf::from("/dev/gpiochip3"))
        );
        assert_eq!(
            ChipSel::parse("gpiochip3").unwrap(),
            ChipSel::Name("gpiochip3".into())
        );
        // "gpiochipX" is not a kernel name, so it is a label.
        assert_eq!(
            ChipSel::parse("gpiochipX").unwrap(),
            ChipSel::Label {
                text: "gpiochipX".into(),
                prefix: false
            }
        );
        let p = ChipSel::parse("virtio*").unwrap();
        assert!(p.matches("gpiochip0", "virtio2"));
        assert!(!p.matches("gpiochip0", "other"));
        let l = ChipSel::parse("label:virtio1").unwrap();
        assert!(l.matches("gpiochip9", "virtio1"));
        assert!(!l.matches("gpiochip9", "virtio10"));
        assert!(ChipSel::parse("/dev/gpiochip2")
            .unwrap()
            .matches("gpiochip2", "x"));
        assert_eq!(ChipSel::parse(""), Err(SpecError::Empty("chip")));
    }

    #[test]
    fn line_selectors_and_values() {
        assert_eq!(LineSel::parse("7").unwrap(), LineSel::Offset(7));
        assert_eq!(LineSel::parse("wp").unwrap(), LineSel::Name("wp".into()));
        assert_eq!(LineSel::parse(""), Err(SpecError::Empty("line")));
        assert_eq!(parse_value("HIGH"), Ok(true));
        assert_eq!(parse_value("0"), Ok(false));
        assert_eq!(parse_value("2"), Err(SpecError::BadValue("2".into())));
        assert_eq!(
            parse_assignment("wp=1"),
            Ok((LineSel::Name("wp".into()), true))
        );
        assert_eq!(parse_assignment("3=low"), Ok((LineSel::Offset(3), false)));
        assert_eq!(
            parse_assignment("3"),
            Err(SpecError::NotAssignment("3".into()))
        );
    }

    #[test]
    fn quoting_and_records() {
        assert_eq!(quote("wp"), "wp");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("x=\"y\"\n"), "\"x=\\\"y\\\"\\x0a\"");
        assert_eq!(
            record(
                "line",
                &[
                    ("offset", "0".into()),
                    ("name", "wp".into()),
                    ("consumer", String::new())
                ]
            ),
            "line offset=0 name=wp consumer=\"\""
        );
    }
}
