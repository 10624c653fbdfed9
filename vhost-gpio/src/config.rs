// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command-line values turned into a validated configuration.
//!
//! `--lines` is either a count `N` (lines named `gpio0` .. `gpio<N-1>`, pulled
//! down) or a comma-separated list of `name[:up|:down|:none]`. The `--wp-line`
//! (a name or an index) defaults to pull `up` unless the list gives it a pull.

use std::path::PathBuf;

use crate::model::{BuildError, GpioModel, LineSpec, Pull};

/// Most lines a virtio-gpio device can describe (`ngpio` is a le16).
pub const MAX_LINES: usize = 65535;

/// Configuration errors, each naming the bad input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--lines` was empty or `0`.
    #[error("--lines is empty: give a count (1..=65535) or a list like wp,led:up")]
    NoLines,
    /// More than 65535 lines.
    #[error("--lines gives {0} lines; virtio-gpio allows at most 65535")]
    TooManyLines(usize),
    /// An empty entry in the list (`a,,b`).
    #[error("--lines entry {0} is empty")]
    EmptyEntry(usize),
    /// A pull that is not up/down/none.
    #[error("--lines entry {entry:?}: unknown pull {pull:?} (expected up, down or none)")]
    BadPull {
        /// The entry.
        entry: String,
        /// The pull text.
        pull: String,
    },
    /// A name with characters the control protocol cannot carry.
    #[error("line name {0:?} is invalid: use letters, digits and - _ . / (not only digits)")]
    BadName(String),
    /// The same name twice.
    #[error("duplicate line name {0:?} in --lines")]
    DuplicateName(String),
    /// `--wp-line` names no line.
    #[error("--wp-line {0:?} is neither a line name nor an index below the line count")]
    UnknownWpLine(String),
    /// `--wp-line` without `--wp-state` or the reverse.
    #[error("--wp-line and --wp-state go together")]
    WpHalf,
    /// `--socket-count 0`.
    #[error("--socket-count must be at least 1")]
    NoSockets,
    /// The model refused the lines.
    #[error("bad line set")]
    Model(#[source] BuildError),
}

/// A parsed `--lines` value: specs plus which lines had an explicit pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineList {
    /// The lines in order.
    pub specs: Vec<LineSpec>,
    /// `explicit[i]`: line i's pull was given on the command line.
    pub explicit: Vec<bool>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.bytes().all(|b| b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

/// Parse a `--lines` value.
pub fn parse_lines(text: &str) -> Result<LineList, ConfigError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ConfigError::NoLines);
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // A count. Parse as usize; anything that does not fit is "too many".
        let n = text.parse::<usize>().unwrap_or(usize::MAX);
        if n == 0 {
            return Err(ConfigError::NoLines);
        }
        if n > MAX_LINES {
            return Err(ConfigError::TooManyLines(n));
        }
        return Ok(LineList {
            specs: (0..n)
                .map(|i| LineSpec {
                    name: format!("gpio{i}"),
                    pull: Pull::Down,
                })
                .collect(),
            explicit: vec![false; n],
        });
    }
    let mut specs = Vec::new();
    let mut explicit = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, entry) in text.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err(ConfigError::EmptyEntry(i));
        }
        let (name, pull) = match entry.split_once(':') {
            Some((name, pull)) => {
                let p: Pull = pull.parse().map_err(|_| ConfigError::BadPull {
                    entry: entry.to_string(),
                    pull: pull.to_string(),
                })?;
                (name, Some(p))
            }
            None => (entry, None),
        };
        if !valid_name(name) {
            return Err(ConfigError::BadName(name.to_string()));
        }
        if !seen.insert(name.to_string()) {
            return Err(ConfigError::DuplicateName(name.to_string()));
        }
        specs.push(LineSpec {
            name: name.to_string(),
            pull: pull.unwrap_or(Pull::Down),
        });
        explicit.push(pull.is_some());
        if specs.len() > MAX_LINES {
            return Err(ConfigError::TooManyLines(text.split(',').count()));
        }
    }
    Ok(LineList { specs, explicit })
}

/// Where a device publishes its WP line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WpConfig {
    /// Line index.
    pub line: u16,
    /// State file.
    pub state: PathBuf,
}

/// Configuration of one device (one vhost-user socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// vhost-user socket path.
    pub socket: PathBuf,
    /// Control socket path, if any.
    pub control: Option<PathBuf>,
    /// WP publishing, if any.
    pub wp: Option<WpConfig>,
    /// Lines.
    pub lines: Vec<LineSpec>,
}

/// Raw command-line values (what clap gives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawConfig {
    /// `--socket-path`.
    pub socket_path: PathBuf,
    /// `--socket-count`.
    pub socket_count: usize,
    /// `--lines`.
    pub lines: String,
    /// `--control-socket`.
    pub control_socket: Option<PathBuf>,
    /// `--wp-line`.
    pub wp_line: Option<String>,
    /// `--wp-state`.
    pub wp_state: Option<PathBuf>,
}

/// The validated configuration: one entry per device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Devices, index i served on socket i.
    pub devices: Vec<DeviceConfig>,
}

pub use common::paths::indexed_path;

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        if raw.socket_count == 0 {
            return Err(ConfigError::NoSockets);
        }
        let mut list = parse_lines(&raw.lines)?;
        let wp_line = match (&raw.wp_line, &raw.wp_state) {
            (None, None) => None,
            (Some(name), Some(_)) => {
                let idx = list
                    .specs
                    .iter()
                    .position(|s| s.name == *name)
                    .or_else(|| name.parse::<usize>().ok().filter(|&i| i < list.specs.len()))
                    .ok_or_else(|| ConfigError::UnknownWpLine(name.clone()))?;
                if let (Some(spec), Some(false)) = (list.specs.get_mut(idx), list.explicit.get(idx))
                {
                    spec.pull = Pull::Up;
                }
                Some(u16::try_from(idx).map_err(|_| ConfigError::UnknownWpLine(name.clone()))?)
            }
            _ => return Err(ConfigError::WpHalf),
        };
        // Let the model check the set too (duplicates, size), with its own error.
        GpioModel::<()>::new(&list.specs).map_err(ConfigError::Model)?;
        let n = raw.socket_count;
        let devices = (0..n)
            .map(|i| DeviceConfig {
                socket: indexed_path(&raw.socket_path, i, n),
                control: raw.control_socket.as_deref().map(|p| indexed_path(p, i, n)),
                wp: match (wp_line, &raw.wp_state) {
                    (Some(line), Some(state)) => Some(WpConfig {
                        line,
                        state: indexed_path(state, i, n),
                    }),
                    _ => None,
                },
                lines: list.specs.clone(),
            })
            .collect();
        Ok(Config { devices })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(lines: &str) -> RawConfig {
        RawConfig {
            socket_path: "/tmp/g.sock".into(),
            socket_count: 1,
            lines: lines.into(),
            control_socket: None,
            wp_line: None,
            wp_state: None,
        }
    }

    #[test]
    fn count_form() {
        let l = parse_lines("3").unwrap();
        let names: Vec<_> = l.specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["gpio0", "gpio1", "gpio2"]);
        assert!(l.specs.iter().all(|s| s.pull == Pull::Down));
        assert_eq!(parse_lines("65535").unwrap().specs.len(), 65535);
        assert_eq!(parse_lines("65536"), Err(ConfigError::TooManyLines(65536)));
        assert_eq!(
            parse_lines("99999999999999999999999"),
            Err(ConfigError::TooManyLines(usize::MAX))
        );
        assert_eq!(parse_lines("0"), Err(ConfigError::NoLines));
    }

    #[test]
    fn list_form() {
        let l = parse_lines("wp,led:up,irq:none, x:down").unwrap();
        let got: Vec<_> = l.specs.iter().map(|s| (s.name.as_str(), s.pull)).collect();
        assert_eq!(
            got,
            [
                ("wp", Pull::Down),
                ("led", Pull::Up),
                ("irq", Pull::None),
                ("x", Pull::Down)
            ]
        );
        assert_eq!(l.explicit, [false, true, true, true]);
    }

    #[test]
    fn list_errors() {
        assert_eq!(parse_lines(""), Err(ConfigError::NoLines));
        assert_eq!(parse_lines("  "), Err(ConfigError::NoLines));
        assert_eq!(parse_lines("a,,b"), Err(ConfigError::EmptyEntry(1)));
        assert_eq!(parse_lines("a,"), Err(ConfigError::EmptyEntry(1)));
        assert_eq!(
            parse_lines("a,a:up"),
            Err(ConfigError::DuplicateName("a".into()))
        );
        assert_eq!(
            parse_lines("a:sideways"),
            Err(ConfigError::BadPull {
                entry: "a:sideways".into(),
                pull: "sideways".into()
            })
        );
        assert_eq!(parse_lines("a b"), Err(ConfigError::BadName("a b".into())));
        assert_eq!(parse_lines("1,2"), Err(ConfigError::BadName("1".into())));
        assert_eq!(parse_lines(":up"), Err(ConfigError::BadName("".into())));
        let many = vec!["l"; 65536]
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s}{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(parse_lines(&many), Err(ConfigError::TooManyLines(65536)));
    }

    #[test]
    fn wp_line_defaults_to_pull_up() {
        let mut r = raw("wp,led");
        r.wp_line = Some("wp".into());
        r.wp_state = Some("/tmp/wp".into());
        let c = Config::try_from(r).unwrap();
        let d = &c.devices[0];
        assert_eq!(d.lines[0].pull, Pull::Up);
        assert_eq!(d.lines[1].pull, Pull::Down);
        assert_eq!(
            d.wp,
            Some(WpConfig {
                line: 0,
                state: "/tmp/wp".into()
            })
        );
        // An explicit pull wins; an index works.
        let mut r = raw("led,wp:down");
        r.wp_line = Some("1".into());
        r.wp_state = Some("/tmp/wp".into());
        let c = Config::try_from(r).unwrap();
        assert_eq!(c.devices[0].lines[1].pull, Pull::Down);
        assert_eq!(c.devices[0].wp.as_ref().unwrap().line, 1);
    }

    #[test]
    fn wp_errors() {
        let mut r = raw("wp,led");
        r.wp_line = Some("nope".into());
        r.wp_state = Some("/tmp/wp".into());
        assert_eq!(
            Config::try_from(r.clone()),
            Err(ConfigError::UnknownWpLine("nope".into()))
        );
        r.wp_line = Some("2".into());
        assert_eq!(
            Config::try_from(r.clone()),
            Err(ConfigError::UnknownWpLine("2".into()))
        );
        r.wp_state = None;
        assert_eq!(Config::try_from(r), Err(ConfigError::WpHalf));
    }

    #[test]
    fn socket_naming() {
        let mut r = raw("2");
        r.control_socket = Some("/tmp/ctl".into());
        let c = Config::try_from(r.clone()).unwrap();
        assert_eq!(c.devices.len(), 1);
        assert_eq!(c.devices[0].socket, PathBuf::from("/tmp/g.sock"));
        assert_eq!(c.devices[0].control, Some(PathBuf::from("/tmp/ctl")));
        r.socket_count = 3;
        r.wp_line = Some("gpio1".into());
        r.wp_state = Some("/tmp/wp".into());
        let c = Config::try_from(r.clone()).unwrap();
        let socks: Vec<_> = c.devices.iter().map(|d| d.socket.clone()).collect();
        assert_eq!(
            socks,
            ["/tmp/g.sock0", "/tmp/g.sock1", "/tmp/g.sock2"].map(PathBuf::from)
        );
        assert_eq!(c.devices[2].control, Some(PathBuf::from("/tmp/ctl2")));
        assert_eq!(
            c.devices[1].wp.as_ref().unwrap().state,
            PathBuf::from("/tmp/wp1")
        );
        r.socket_count = 0;
        assert_eq!(Config::try_from(r), Err(ConfigError::NoSockets));
    }
}
