// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command line and its validated form.

use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use common::daemon::{SocketAccess, SocketArgs, SocketArgsError, SocketSource};
use common::paths::indexed_path;

use crate::model::{check_overlaps, At24Config, ModelError, Variant, WpMode};

/// Command line of `vhost-i2c-eeprom`.
#[derive(Clone, Debug, Parser, PartialEq, Eq)]
#[command(
    name = "vhost-i2c-eeprom",
    version,
    about = "virtio-i2c vhost-user backend with emulated AT24 EEPROMs",
    long_about = "A vhost-user virtio-i2c backend whose bus carries emulated AT24 EEPROMs \
with datasheet behaviour: page writes with in-page wrap, the write cycle (NACK \
while busy), the address pointer kept between transactions, block select, and \
a WP pin that can follow a GPIO line published by vhost-gpio.\n\n\
With --socket-count N > 1, socket i is SOCKET_PATH followed by i, and each \
socket is an independent bus whose image files are each FILE followed by i \
(e.g. eeprom.bin0, eeprom.bin1) and whose WP state file is the --wp-state \
path followed by i."
)]
pub struct Cli {
    /// The vhost-user socket(s).
    #[command(flatten)]
    pub socket: SocketArgs,

    /// An EEPROM on the bus: model=24c32,addr=0x50,file=PATH[,page=N][,wp=ack|nack][,twr-us=N].
    /// Models: 24c01 24c02 24c04 24c08 24c16 24c32 24c64 24c128 24c256 24c512
    /// 24c1024 (24cm01) 24c2048 (24cm02). Repeat for more devices.
    #[arg(
        short = 'e',
        long = "eeprom",
        required_unless_present = "print_capabilities",
        value_name = "SPEC"
    )]
    pub eeproms: Vec<String>,

    /// WP line state file published by vhost-gpio (--wp-state there). Without it the WP pin
    /// is not wired (never asserted). Suffixed like --socket-path when --socket-count > 1,
    /// as vhost-gpio does, so bus i follows gpio device i.
    #[arg(long, value_name = "PATH")]
    pub wp_state: Option<PathBuf>,

    /// Make every completed write cycle durable (fdatasync) before the request completes.
    #[arg(long)]
    pub sync: bool,
}

/// Errors in the command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `key=value` expected.
    #[error("--eeprom {spec:?}: {item:?} is not key=value")]
    NotKeyValue {
        /// The whole spec.
        spec: String,
        /// The offending item.
        item: String,
    },
    /// Unknown key.
    #[error("--eeprom {spec:?}: unknown key {key:?} (model, addr, file, page, wp, twr-us)")]
    UnknownKey {
        /// The whole spec.
        spec: String,
        /// The key.
        key: String,
    },
    /// Key given twice.
    #[error("--eeprom {spec:?}: {key} given twice")]
    DuplicateKey {
        /// The whole spec.
        spec: String,
        /// The key.
        key: String,
    },
    /// Required key missing.
    #[error("--eeprom {spec:?}: {key}= is required")]
    MissingKey {
        /// The whole spec.
        spec: String,
        /// The key.
        key: &'static str,
    },
    /// Bad value.
    #[error("--eeprom {spec:?}: bad {key} value {value:?}: {why}")]
    BadValue {
        /// The whole spec.
        spec: String,
        /// The key.
        key: &'static str,
        /// The value.
        value: String,
        /// Why.
        why: String,
    },
    /// Model-level error (address range, page size, overlap).
    #[error("{0}")]
    Model(#[from] ModelError),
    /// Two devices on one image.
    #[error("image {0} given for two devices")]
    SharedImage(PathBuf),
    /// Bad socket flags.
    #[error(transparent)]
    Socket(SocketArgsError),
}

/// One `--eeprom` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EepromSpec {
    /// Device configuration.
    pub device: At24Config,
    /// Image file (before any per-socket suffix).
    pub file: PathBuf,
}

fn parse_u32(s: &str) -> Result<u32, String> {
    let r = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(hex, 16)
    } else {
        s.parse::<u32>()
    };
    r.map_err(|e| e.to_string())
}

impl FromStr for EepromSpec {
    type Err = ConfigError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let mut model = None;
        let mut addr = None;
        let mut file = None;
        let mut page = None;
        let mut wp = None;
        let mut twr = None;
        let mut seen = HashSet::new();
        for item in spec.split(',') {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| ConfigError::NotKeyValue {
                    spec: spec.to_string(),
                    item: item.to_string(),
                })?;
            if !seen.insert(key.to_string()) {
                return Err(ConfigError::DuplicateKey {
                    spec: spec.to_string(),
                    key: key.to_string(),
                });
            }
            let bad = |key: &'static str, why: String| ConfigError::BadValue {
                spec: spec.to_string(),
                key,
                value: value.to_string(),
                why,
            };
            match key {
                "model" => {
                    model = Some(
                        value
                            .parse::<Variant>()
                            .map_err(|e| bad("model", e.to_string()))?,
                    )
                }
                "addr" => {
                    let a = parse_u32(value).map_err(|e| bad("addr", e))?;
                    let a = u16::try_from(a)
                        .ok()
                        .filter(|a| *a <= 0x7f)
                        .ok_or_else(|| bad("addr", "not a 7-bit I2C address".into()))?;
                    addr = Some(a);
                }
                "file" => {
                    if value.is_empty() {
                        return Err(bad("file", "empty path".into()));
                    }
                    file = Some(PathBuf::from(value));
                }
                "page" => page = Some(parse_u32(value).map_err(|e| bad("page", e))?),
                "wp" => wp = Some(value.parse::<WpMode>().map_err(|e| bad("wp", e))?),
                "twr-us" => {
                    let us: u64 = value
                        .parse()
                        .map_err(|e: std::num::ParseIntError| bad("twr-us", e.to_string()))?;
                    if us > 1_000_000 {
                        return Err(bad("twr-us", "more than one second".into()));
                    }
                    twr = Some(Duration::from_micros(us));
                }
                _ => {
                    return Err(ConfigError::UnknownKey {
                        spec: spec.to_string(),
                        key: key.to_string(),
                    })
                }
            }
        }
        let missing = |key| ConfigError::MissingKey {
            spec: spec.to_string(),
            key,
        };
        let variant = model.ok_or_else(|| missing("model"))?;
        let mut device = At24Config::new(variant, addr.ok_or_else(|| missing("addr"))?);
        if let Some(p) = page {
            device.page = p;
        }
        if let Some(w) = wp {
            device.wp = w;
        }
        if let Some(t) = twr {
            device.twr = t;
        }
        device.validate()?;
        Ok(EepromSpec {
            device,
            file: file.ok_or_else(|| missing("file"))?,
        })
    }
}

/// One socket: its path and its bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketConfig {
    /// Where the bus listens.
    pub socket: SocketSource,
    /// Devices with their (suffixed) image files.
    pub eeproms: Vec<EepromSpec>,
    /// WP line state file of this bus (suffixed like the socket).
    pub wp_state: Option<PathBuf>,
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// One entry per socket.
    pub sockets: Vec<SocketConfig>,
    /// Who may connect to the sockets this program creates.
    pub access: SocketAccess,
    /// fdatasync every write cycle.
    pub sync: bool,
}

impl TryFrom<Cli> for Config {
    type Error = ConfigError;

    fn try_from(cli: Cli) -> Result<Self, Self::Error> {
        let (sockets, access) = cli.socket.sockets().map_err(ConfigError::Socket)?;
        let specs = cli
            .eeproms
            .iter()
            .map(|s| s.parse::<EepromSpec>())
            .collect::<Result<Vec<_>, _>>()?;
        let devices: Vec<At24Config> = specs.iter().map(|s| s.device).collect();
        check_overlaps(&devices)?;
        let mut files = HashSet::new();
        for s in &specs {
            if !files.insert(s.file.clone()) {
                return Err(ConfigError::SharedImage(s.file.clone()));
            }
        }
        let n = sockets.len();
        let sockets = sockets
            .into_iter()
            .enumerate()
            .map(|(i, socket)| SocketConfig {
                socket,
                eeproms: specs
                    .iter()
                    .map(|s| EepromSpec {
                        device: s.device,
                        file: indexed_path(&s.file, i, n),
                    })
                    .collect(),
                wp_state: cli.wp_state.as_ref().map(|p| indexed_path(p, i, n)),
            })
            .collect();
        Ok(Config {
            sockets,
            access,
            sync: cli.sync,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Config, ConfigError> {
        let mut v = vec!["vhost-i2c-eeprom"];
        v.extend_from_slice(args);
        Config::try_from(Cli::try_parse_from(v).unwrap())
    }

    #[test]
    fn full_spec() {
        let s: EepromSpec = "model=24c32,addr=0x50,file=/tmp/a.bin,page=8,wp=nack,twr-us=0"
            .parse()
            .unwrap();
        assert_eq!(s.device.variant, Variant::C32);
        assert_eq!(s.device.addr, 0x50);
        assert_eq!(s.device.page, 8);
        assert_eq!(s.device.wp, WpMode::Nack);
        assert_eq!(s.device.twr, Duration::ZERO);
        assert_eq!(s.file, PathBuf::from("/tmp/a.bin"));
        let s: EepromSpec = "file=x,addr=82,model=24cm01".parse().unwrap();
        assert_eq!(s.device.addr, 0x52);
        assert_eq!(s.device.variant, Variant::C1024);
        assert_eq!(s.device.page, 256);
        assert_eq!(s.device.twr, Duration::from_millis(5));
    }

    #[test]
    fn spec_errors() {
        let e = |s: &str| s.parse::<EepromSpec>().unwrap_err();
        assert!(matches!(
            e("model=24c32,addr=0x50"),
            ConfigError::MissingKey { key: "file", .. }
        ));
        assert!(matches!(
            e("addr=0x50,file=a"),
            ConfigError::MissingKey { key: "model", .. }
        ));
        assert!(matches!(
            e("model=24c32,file=a"),
            ConfigError::MissingKey { key: "addr", .. }
        ));
        assert!(matches!(
            e("model=24c33,addr=0x50,file=a"),
            ConfigError::BadValue { key: "model", .. }
        ));
        assert!(matches!(
            e("model=24c32,addr=0x80,file=a"),
            ConfigError::BadValue { key: "addr", .. }
        ));
        assert!(matches!(
            e("model=24c32,addr=zz,file=a"),
            ConfigError::BadValue { key: "addr", .. }
        ));
        assert!(matches!(
            e("model=24c32,addr=0x50,file=a,color=red"),
            ConfigError::UnknownKey { .. }
        ));
        assert!(matches!(
            e("model=24c32,addr=0x50,file=a,wp=maybe"),
            ConfigError::BadValue { key: "wp", .. }
        ));
        assert!(matches!(
            e("model=24c32,addr=0x50,file=a,page=24"),
            ConfigError::Model(ModelError::BadPage { .. })
        ));
        assert!(matches!(
            e("model=24c32,addr=0x50,file=a,twr-us=-1"),
            ConfigError::BadValue { key: "twr-us", .. }
        ));
        assert!(matches!(
            e("model=24c32,addr=0x50,file="),
            ConfigError::BadValue { key: "file", .. }
        ));
        assert!(matches!(
            e("model=24c32,addr=0x50,file=a,addr=0x51"),
            ConfigError::DuplicateKey { .. }
        ));
        assert!(matches!(
            e("model=24c32,addr=0x50,file=a,junk"),
            ConfigError::NotKeyValue { .. }
        ));
        assert!(matches!(
            e("model=24c16,addr=0x52,file=a"),
            ConfigError::Model(ModelError::Misaligned { .. })
        ));
        // Messages name the spec.
        assert!(e("model=24c32,addr=0x50")
            .to_string()
            .contains("file= is required"));
    }

    #[test]
    fn overlap_and_shared_image() {
        let e = cli(&[
            "-s",
            "s",
            "-e",
            "model=24c16,addr=0x50,file=a",
            "-e",
            "model=24c02,addr=0x53,file=b",
        ])
        .unwrap_err();
        assert!(
            matches!(e, ConfigError::Model(ModelError::Overlap { .. })),
            "{e}"
        );
        let e = cli(&[
            "-s",
            "s",
            "-e",
            "model=24c02,addr=0x50,file=a",
            "-e",
            "model=24c02,addr=0x51,file=a",
        ])
        .unwrap_err();
        assert_eq!(e, ConfigError::SharedImage("a".into()));
        assert_eq!(
            cli(&["-s", "s", "-c", "0", "-e", "model=24c02,addr=0x50,file=a"]).unwrap_err(),
            ConfigError::Socket(SocketArgsError::NoSockets)
        );
    }

    #[test]
    fn socket_count_suffixes_sockets_and_images() {
        let c = cli(&[
            "-s",
            "/r/i2c.sock",
            "-e",
            "model=24c02,addr=0x50,file=/r/e.bin",
            "--sync",
        ])
        .unwrap();
        assert_eq!(c.sockets.len(), 1);
        assert_eq!(
            c.sockets[0].socket,
            SocketSource::Path("/r/i2c.sock".into())
        );
        assert_eq!(c.sockets[0].eeproms[0].file, PathBuf::from("/r/e.bin"));
        assert_eq!(c.sockets[0].wp_state, None);
        assert!(c.sync);
        let c = cli(&[
            "--socket-path",
            "/r/i2c.sock",
            "--socket-count",
            "2",
            "--eeprom",
            "model=24c02,addr=0x50,file=/r/e.bin",
            "--eeprom",
            "model=24c32,addr=0x51,file=/r/f.bin",
            "--wp-state",
            "/r/wp",
        ])
        .unwrap();
        assert_eq!(
            c.sockets[1].socket,
            SocketSource::Path("/r/i2c.sock1".into())
        );
        assert_eq!(c.sockets[0].eeproms[1].file, PathBuf::from("/r/f.bin0"));
        assert_eq!(c.sockets[1].eeproms[0].file, PathBuf::from("/r/e.bin1"));
        assert_eq!(c.sockets[0].wp_state, Some(PathBuf::from("/r/wp0")));
        assert_eq!(c.sockets[1].wp_state, Some(PathBuf::from("/r/wp1")));
    }

    #[test]
    fn eeprom_required() {
        assert!(Cli::try_parse_from(["x", "-s", "s"]).is_err());
        assert!(Cli::try_parse_from(["x", "--print-capabilities"]).is_ok());
    }
}
