// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command-line values turned into a validated configuration.
//!
//! `--lines` is either a count `N` (lines named `gpio0` .. `gpio<N-1>`, pulled
//! down) or a comma-separated list of `name[:up|:down|:none]`. The `--wp-line`
//! (a name or an index) defaults to pull `up` unless the list gives it a pull.

use std::path::PathBuf;

use common::daemon::{SocketAccess, SocketArgs, SocketArgsError, SocketSource};

use crate::model::{BuildError, GpioModel, LineSpec, Pull};

/// Most lines a virtio-gpio device can describe (`ngpio` is a le16).
pub const MAX_LINES: usize = 65535;

/// Configuration errors, each naming the bad input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No `--lines`.
    #[error("--lines is required: a count (1..=65535) or a list like wp,led:up")]
    MissingLines,
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
    /// Bad socket flags.
    #[error(transparent)]
    Socket(SocketArgsError),
    /// The control socket and the vhost-user socket are one path.
    #[error("--control-socket {0} is also the vhost-user socket; give each its own path")]
    ControlIsVhostSocket(PathBuf),
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
    /// Where the device listens.
    pub socket: SocketSource,
    /// Control socket path, if any.
    pub control: Option<PathBuf>,
    /// WP publishing, if any.
    pub wp: Option<WpConfig>,
    /// Lines.
    pub lines: Vec<LineSpec>,
}

/// A virtio-gpio vhost-user backend with simulated lines.
///
/// Start it, then point QEMU at the socket with
/// `-chardev socket,id=gpio0,path=SOCK -device vhost-user-gpio-pci,chardev=gpio0`
/// (guest memory must be shared: memory-backend-memfd with share=on).
/// SIGTERM or SIGINT: the WP line is released and the sockets removed.
#[derive(clap::Parser, Debug)]
#[command(
    name = "vhost-gpio",
    version,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// `ctl`, or nothing to serve.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Serving.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Send one command to a running vhost-gpio's control socket and print the
    /// answer. Commands: list | get LINE | set LINE 0|1 | clear LINE | watch | help.
    Ctl {
        /// The control socket of the running vhost-gpio.
        #[arg(long)]
        control_socket: PathBuf,
        /// With `watch`: exit after this many events.
        #[arg(long)]
        max_events: Option<u64>,
        /// The command and its arguments.
        #[arg(required = true, num_args = 1.., trailing_var_arg = true)]
        command: Vec<String>,
    },
}

/// The serving command line of `vhost-gpio` (what clap gives).
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeArgs {
    /// The vhost-user socket(s).
    #[command(flatten)]
    pub socket: SocketArgs,

    /// The lines: a count N (named gpio0..gpio<N-1>, pulled down) or a
    /// comma list of name[:up|:down|:none]. Default pull: down; the --wp-line
    /// defaults to up. A line pulled none reads 0 when undriven.
    #[arg(short = 'l', long, value_name = "LINES")]
    pub lines: Option<String>,

    /// Control socket path (line protocol; see `vhost-gpio ctl --help`).
    /// Suffixed like --socket-path when --socket-count > 1. Created like the
    /// vhost-user sockets (--socket-mode, --group).
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,

    /// Line (name or index) whose effective level is published to --wp-state.
    #[arg(long, requires = "wp_state", value_name = "LINE")]
    pub wp_line: Option<String>,

    /// WP state file shared with vhost-i2c-eeprom. Suffixed like
    /// --socket-path when --socket-count > 1.
    #[arg(long, requires = "wp_line", value_name = "PATH")]
    pub wp_state: Option<PathBuf>,
}

/// The validated configuration: one entry per device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Devices, index i served on socket i.
    pub devices: Vec<DeviceConfig>,
    /// Who may connect to the sockets this program creates.
    pub access: SocketAccess,
}

pub use common::paths::indexed_path;

impl TryFrom<ServeArgs> for Config {
    type Error = ConfigError;

    fn try_from(raw: ServeArgs) -> Result<Self, ConfigError> {
        let (sockets, access) = raw.socket.sockets().map_err(ConfigError::Socket)?;
        let lines = raw.lines.as_deref().ok_or(ConfigError::MissingLines)?;
        let mut list = parse_lines(lines)?;
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
        let n = sockets.len();
        let devices: Vec<DeviceConfig> = sockets
            .into_iter()
            .enumerate()
            .map(|(i, socket)| DeviceConfig {
                socket,
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
        for d in &devices {
            if let (Some(ctl), Some(sock)) = (&d.control, d.socket.path()) {
                if ctl == sock {
                    return Err(ConfigError::ControlIsVhostSocket(ctl.clone()));
                }
            }
        }
        Ok(Config { devices, access })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(lines: &str) -> ServeArgs {
        ServeArgs {
            socket: SocketArgs {
                socket_path: Some("/tmp/g.sock".into()),
                socket_count: 1,
                socket_mode: "0600".into(),
                ..SocketArgs::default()
            },
            lines: Some(lines.into()),
            ..ServeArgs::default()
        }
    }

    fn path(s: &str) -> SocketSource {
        SocketSource::Path(PathBuf::from(s))
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
        assert_eq!(c.devices[0].socket, path("/tmp/g.sock"));
        assert_eq!(c.devices[0].control, Some(PathBuf::from("/tmp/ctl")));
        assert_eq!(c.access, SocketAccess::default());
        r.socket.socket_count = 3;
        r.wp_line = Some("gpio1".into());
        r.wp_state = Some("/tmp/wp".into());
        let c = Config::try_from(r.clone()).unwrap();
        let socks: Vec<_> = c.devices.iter().map(|d| d.socket.clone()).collect();
        assert_eq!(
            socks,
            ["/tmp/g.sock0", "/tmp/g.sock1", "/tmp/g.sock2"].map(path)
        );
        assert_eq!(c.devices[2].control, Some(PathBuf::from("/tmp/ctl2")));
        assert_eq!(
            c.devices[1].wp.as_ref().unwrap().state,
            PathBuf::from("/tmp/wp1")
        );
        r.socket.socket_count = 0;
        assert_eq!(
            Config::try_from(r.clone()),
            Err(ConfigError::Socket(SocketArgsError::NoSockets))
        );
        r.socket.socket_count = 1;
        r.control_socket = Some("/tmp/g.sock".into());
        assert!(matches!(
            Config::try_from(r.clone()),
            Err(ConfigError::ControlIsVhostSocket(_))
        ));
        r.control_socket = None;
        r.socket.socket_path = None;
        r.socket.fd = Some(7);
        assert_eq!(
            Config::try_from(r.clone()).unwrap().devices[0].socket,
            SocketSource::Fd(7)
        );
        r.socket.socket_count = 2;
        assert_eq!(
            Config::try_from(r),
            Err(ConfigError::Socket(SocketArgsError::FdWithCount))
        );
    }
}
