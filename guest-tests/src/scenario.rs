// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Scenario files: one TOML file per scenario in `guest-tests/scenarios/`, read, checked and
//! turned into what each side runs.
//!
//! A file names the scenario, says what it is for and which kernels it needs, describes the
//! devices (gpio lines with pulls and host-held levels, the WP wiring, the EEPROMs), the guest
//! steps in order (`[[step]]`, a small vocabulary of `do = "..."` kinds) and the host actions
//! that answer the guest's marks (`[[on]]`). The vocabulary is documented in
//! `guest-tests/scenarios/README.md`; this module is its one definition.
//!
//! - [`Scenario::parse`] checks a file completely before any kernel boots: TOML syntax, unknown
//!   or missing fields, wrong types, unknown step or action kinds, references to devices and
//!   lines that do not exist, a mark with no host action and a host action for a mark no step
//!   prints. Every error names the file and the line.
//! - [`Scenario::guest_script`] renders the steps as the shell the guest's `/init` sources
//!   (one call per step into the runner's step helpers).
//! - [`Interpreter`] follows the guest's markers on the host: it runs the host actions, and
//!   turns the guest's results and the EEPROM images into [`Observations`].
//!
//! A scenario name is data: nothing in the harness compares it with a literal.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::console::Marker;
use crate::observe::{Kind as ResultKind, Observations, Value, WriteOutcome};

/// The word that selects every scenario of the directory (`--scenario all`): no scenario has
/// this name.
pub const ALL: &str = "all";

/// Length of every pattern the guest writes (the runner's `PATLEN`).
pub const PATTERN_LEN: usize = 64;

/// Errors reading a scenario file.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown or missing top-level field, a wrong type (the message has the
    /// line and column).
    #[error("{path}: {message}")]
    Toml {
        /// The file.
        path: String,
        /// What the TOML reader said.
        message: String,
    },
    /// A problem at a line of the file.
    #[error("{path}:{line}: {message}")]
    At {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Two files define one scenario name.
    #[error("{second}: scenario '{name}' is already defined by {first}")]
    Duplicate {
        /// The name.
        name: String,
        /// The first file.
        first: String,
        /// The second file.
        second: String,
    },
    /// Reading the scenario directory failed.
    #[error("reading the scenario directory {path}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// What a scenario file is run by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// A run of the reproduction matrix, judged against `expected.toml`.
    #[default]
    Reproduce,
    /// A boot of the guest-side benchmark (`guest-tests bench`).
    Bench,
    /// The boot check (`guest-tests boot`): no backends.
    Boot,
}

/// A kernel feature a scenario needs (`needs = [...]`). The guest checks each one before the
/// scenario's steps; a kernel that lacks one skips the run (reported as skipped, with the
/// feature named), it does not fail it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// `<module>.<param>`: a module parameter, seen in `/sys/module/<module>/parameters/` (built
    /// in, or loaded), in `modules.builtin.modinfo`, or in the module file's modinfo (not
    /// loaded for it).
    Param {
        /// The module (as `modprobe` names it).
        module: String,
        /// The parameter.
        param: String,
    },
    /// A fact of the kernel's headers that nothing shows at run time, recorded by the guest
    /// module's build (`eeprom_wire`'s `vgn_features` modinfo tag): one of [`BUILD_FEATURES`].
    Build(&'static str),
}

/// The structures whose fields the guest module's build detects, and the fields it knows.
pub const BUILD_FEATURES: &[&str] = &["nvmem_config.wp_gpio"];

impl Need {
    /// Reads a feature name: a [`BUILD_FEATURES`] name, or `<module>.<param>`; why not
    /// otherwise.
    pub fn parse(name: &str) -> Result<Need, String> {
        if let Some(known) = BUILD_FEATURES.iter().find(|f| **f == name) {
            return Ok(Need::Build(known));
        }
        let usage = "a feature is <module>.<parameter> (at24.wp_over_config, \
                     nvmem_core.wp_nonexclusive) or one the guest module's build detects";
        let Some((module, param)) = name.split_once('.') else {
            return Err(format!(
                "unknown feature '{name}': {usage} ({})",
                BUILD_FEATURES.join(", ")
            ));
        };
        let structs: BTreeSet<&str> = BUILD_FEATURES
            .iter()
            .filter_map(|f| f.split_once('.').map(|(s, _)| s))
            .collect();
        if structs.contains(module) {
            return Err(format!(
                "unknown feature '{name}': of {module}, the guest module's build detects only {}",
                BUILD_FEATURES
                    .iter()
                    .filter(|f| f.starts_with(&format!("{module}.")))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let ident = |s: &str, dash: bool| {
            s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && s.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (dash && c == '-')
                })
        };
        if !ident(module, true) || !ident(param, false) {
            return Err(format!(
                "unknown feature '{name}': {usage} ({})",
                BUILD_FEATURES.join(", ")
            ));
        }
        Ok(Need::Param {
            module: module.to_string(),
            param: param.to_string(),
        })
    }
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Param { module, param } => write!(f, "{module}.{param}"),
            Need::Build(name) => f.write_str(name),
        }
    }
}

/// A gpio line's pull.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pull {
    /// Reads 1 when undriven.
    Up,
    /// Reads 0 when undriven (vhost-gpio's default).
    #[default]
    Down,
    /// No pull (reads 0 when undriven).
    None,
}

impl Pull {
    fn as_str(self) -> &'static str {
        match self {
            Pull::Up => "up",
            Pull::Down => "down",
            Pull::None => "none",
        }
    }
}

/// One simulated gpio line.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Its name, as the guest sees it.
    pub name: String,
    /// Its pull.
    #[serde(default)]
    pub pull: Pull,
    /// A level the host holds on it from the start (through the control socket), 0 or 1.
    #[serde(default)]
    pub host: Option<u8>,
}

/// The virtio-gpio device (vhost-gpio).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioDevice {
    /// The lines, in offset order.
    #[serde(rename = "line")]
    pub lines: Vec<Line>,
    /// The line wired to every EEPROM's WP pin (published through the WP state file).
    #[serde(default)]
    pub wp_line: Option<String>,
}

/// What an EEPROM does with a write while WP is asserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WpMode {
    /// Acknowledge the data and drop it (the datasheet's behaviour).
    Ack,
    /// Refuse the data bytes.
    Nack,
}

/// One emulated AT24 EEPROM on the virtio-i2c bus (vhost-i2c-eeprom).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eeprom {
    /// The name steps use for it.
    pub id: String,
    /// at24 model, `24c01` .. `24c2048`.
    pub model: String,
    /// 7-bit address.
    pub addr: u16,
    /// Page size the backend emulates (default: the model's).
    #[serde(default)]
    pub page: Option<u32>,
    /// Write cycle time in microseconds (default: the backend's).
    #[serde(default)]
    pub twr_us: Option<u32>,
    /// Behaviour under WP (default: the backend's, ack).
    #[serde(default)]
    pub wp: Option<WpMode>,
}

impl Eeprom {
    /// The image file's name in the run directory.
    pub fn image_name(&self) -> String {
        format!("eeprom-{}.img", self.id)
    }

    /// The i2c client's address as sysfs spells it (`0050`).
    fn addr4(&self) -> String {
        format!("{:04x}", self.addr)
    }
}

/// The devices of a scenario.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Devices {
    /// The gpio device, if any.
    #[serde(default)]
    pub gpio: Option<GpioDevice>,
    /// The EEPROMs; with none, there is no i2c device.
    #[serde(default, rename = "eeprom")]
    pub eeproms: Vec<Eeprom>,
}

impl Devices {
    /// vhost-gpio's `--lines` value.
    pub fn gpio_lines_arg(&self) -> Option<String> {
        let g = self.gpio.as_ref()?;
        Some(
            g.lines
                .iter()
                .map(|l| format!("{}:{}", l.name, l.pull.as_str()))
                .collect::<Vec<_>>()
                .join(","),
        )
    }

    /// The EEPROM with this id.
    pub fn eeprom(&self, id: &str) -> Option<&Eeprom> {
        self.eeproms.iter().find(|e| e.id == id)
    }
}

/// How an IRQ step requests its interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// IRQF_TRIGGER_HIGH.
    LevelHigh,
    /// IRQF_TRIGGER_LOW.
    LevelLow,
    /// IRQF_TRIGGER_RISING.
    EdgeRising,
    /// IRQF_TRIGGER_FALLING.
    EdgeFalling,
    /// Both edges.
    EdgeBoth,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::LevelHigh => "level-high",
            Trigger::LevelLow => "level-low",
            Trigger::EdgeRising => "edge-rising",
            Trigger::EdgeFalling => "edge-falling",
            Trigger::EdgeBoth => "edge-both",
        }
    }
}

/// An edge for `wait-edge`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Edge {
    /// 0 to 1.
    Rising,
    /// 1 to 0.
    Falling,
    /// Either.
    Both,
}

/// What a read-back expects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadExpect {
    /// The pattern must read back (else the step is not ok).
    #[default]
    Same,
    /// The pattern must not read back.
    Differs,
    /// Either; only printed.
    Any,
}

/// What `wait-gone` waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gone {
    /// The virtio-gpio chip.
    Gpiochip,
    /// A PCI function (`pci = "vendor:device"`).
    Pci,
}

/// The guest steps: `do = "<kind>"` and the kind's fields.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "do", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Action {
    /// Print the PCI, virtio, gpio and i2c devices (diagnostics).
    ListDevices {},
    /// Check that these modules are in the initramfs (or built in).
    ModulesPresent {
        /// Module names.
        modules: Vec<String>,
    },
    /// Load a module and its dependencies; each `key=value` parameter must exist afterwards.
    Load {
        /// Module name.
        module: String,
        /// Parameters, `key=value`.
        #[serde(default)]
        params: Vec<String>,
    },
    /// Unload a module.
    Rmmod {
        /// Module name.
        module: String,
        /// Result name: `unloaded`, `in-use`, `killed` (the rmmod process died in the
        /// kernel), `stuck` (did not return), `failed` or `not-loaded`.
        #[serde(default)]
        observe: Option<String>,
    },
    /// Print `/sys/module/<module>/refcnt`.
    Refcount {
        /// Module name.
        module: String,
        /// Result name.
        observe: String,
    },
    /// Wait for a virtio-gpio chip.
    WaitGpiochip {},
    /// Wait for the virtio i2c adapter.
    WaitI2cAdapter {},
    /// Wait until the virtio-gpio chip or a PCI function is gone.
    WaitGone {
        /// What.
        what: Gone,
        /// `vendor:device` for `what = "pci"`.
        #[serde(default)]
        pci: Option<String>,
    },
    /// Create an EEPROM the way board code would: eeprom_wire registers a GPIO lookup for
    /// its WP pin on `line` and creates the i2c client. The first loads eeprom_wire, each
    /// further one is added to it (several EEPROMs may share one line).
    WireEeprom {
        /// EEPROM id.
        eeprom: String,
        /// The gpio line wired to WP.
        line: String,
    },
    /// eeprom_wire: remove every client it wired and wire them again, in order, to the chip
    /// present now.
    Rewire {},
    /// Create an EEPROM through sysfs `new_device` (no WP wiring) and wait for its nvmem.
    NewDevice {
        /// EEPROM id.
        eeprom: String,
    },
    /// Wait for an EEPROM's nvmem device.
    WaitNvmem {
        /// EEPROM id.
        eeprom: String,
    },
    /// Write a 64-byte pattern at an offset through nvmem (clearing `force_ro` first where
    /// the kernel has it); the host judges the image.
    Write {
        /// EEPROM id.
        eeprom: String,
        /// Pattern tag.
        pattern: String,
        /// Byte offset.
        #[serde(default)]
        offset: u32,
        /// Result name (landed, blocked, refused).
        observe: String,
        /// A failing write syscall is a result, not a failed step.
        #[serde(default)]
        may_fail: bool,
    },
    /// Read the pattern's bytes back through nvmem and compare.
    ReadBack {
        /// EEPROM id.
        eeprom: String,
        /// Pattern tag.
        pattern: String,
        /// Byte offset.
        #[serde(default)]
        offset: u32,
        /// What must read back.
        #[serde(default)]
        expect: ReadExpect,
    },
    /// `i2cdetect -y` on the virtio adapter; the addresses that answered.
    I2cdetect {
        /// Result name.
        observe: String,
    },
    /// The virtio-gpio chip's line names, comma-separated.
    GpioLineNames {
        /// Result name.
        observe: String,
    },
    /// Drive a line as an output.
    GpioSet {
        /// Line name.
        line: String,
        /// 0 or 1.
        value: u8,
    },
    /// Read a line.
    GpioGet {
        /// Line name.
        line: String,
        /// Result name.
        observe: String,
    },
    /// Wait until a line reads a value (after printing `mark`, if given).
    WaitLine {
        /// Line name.
        line: String,
        /// 0 or 1.
        value: u8,
        /// Mark printed before waiting.
        #[serde(default)]
        mark: Option<String>,
    },
    /// Arm edge detection through the GPIO character device, print `mark`, wait for edges.
    WaitEdge {
        /// Line name.
        line: String,
        /// Which edges.
        edge: Edge,
        /// How many.
        #[serde(default = "one")]
        count: u32,
        /// Mark printed once armed.
        mark: String,
        /// Result name (true: the edges came).
        observe: String,
    },
    /// Request an interrupt on a line from the guest module (a kernel consumer, so level
    /// types are possible) and count handler runs.
    IrqRequest {
        /// Line name.
        line: String,
        /// Trigger type.
        trigger: Trigger,
    },
    /// Wait until the handler has run at least `min` times.
    IrqWaitCount {
        /// Runs.
        min: u32,
        /// Result name (true: reached).
        observe: String,
    },
    /// Remember the handler's run count under a name.
    IrqCount {
        /// The name.
        save: String,
    },
    /// After `after_ms`, whether the handler ran since the count saved under `since`.
    IrqChanged {
        /// A name saved by `irq-count`.
        since: String,
        /// Wait first.
        #[serde(default = "half_second")]
        after_ms: u32,
        /// Result name (true: it ran).
        observe: String,
    },
    /// disable_irq() on the requested interrupt.
    IrqDisable {},
    /// enable_irq() on it.
    IrqEnable {},
    /// free_irq() and release the line.
    IrqFree {},
    /// gpio-tool bench gpio: set/get round trips on an output line.
    BenchGpio {
        /// Line name.
        line: String,
    },
    /// gpio-tool bench nvmem: whole-device reads, or writes with `write = true`.
    BenchNvmem {
        /// EEPROM id.
        eeprom: String,
        /// Writes instead of reads.
        #[serde(default)]
        write: bool,
    },
    /// Sleep.
    Sleep {
        /// Milliseconds.
        ms: u32,
    },
    /// Print a mark; the host runs the `[[on]]` actions for it.
    Mark {
        /// The mark.
        mark: String,
    },
}

fn one() -> u32 {
    1
}

fn half_second() -> u32 {
    500
}

impl Action {
    /// The kind, as written after `do =`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::ListDevices {} => "list-devices",
            Action::ModulesPresent { .. } => "modules-present",
            Action::Load { .. } => "load",
            Action::Rmmod { .. } => "rmmod",
            Action::Refcount { .. } => "refcount",
            Action::WaitGpiochip {} => "wait-gpiochip",
            Action::WaitI2cAdapter {} => "wait-i2c-adapter",
            Action::WaitGone { .. } => "wait-gone",
            Action::WireEeprom { .. } => "wire-eeprom",
            Action::Rewire {} => "rewire",
            Action::NewDevice { .. } => "new-device",
            Action::WaitNvmem { .. } => "wait-nvmem",
            Action::Write { .. } => "write",
            Action::ReadBack { .. } => "read-back",
            Action::I2cdetect { .. } => "i2cdetect",
            Action::GpioLineNames { .. } => "gpio-line-names",
            Action::GpioSet { .. } => "gpio-set",
            Action::GpioGet { .. } => "gpio-get",
            Action::WaitLine { .. } => "wait-line",
            Action::WaitEdge { .. } => "wait-edge",
            Action::IrqRequest { .. } => "irq-request",
            Action::IrqWaitCount { .. } => "irq-wait-count",
            Action::IrqCount { .. } => "irq-count",
            Action::IrqChanged { .. } => "irq-changed",
            Action::IrqDisable {} => "irq-disable",
            Action::IrqEnable {} => "irq-enable",
            Action::IrqFree {} => "irq-free",
            Action::BenchGpio { .. } => "bench-gpio",
            Action::BenchNvmem { .. } => "bench-nvmem",
            Action::Sleep { .. } => "sleep",
            Action::Mark { .. } => "mark",
        }
    }

    /// Whether a failure of this step makes the following steps skip, unless the file says.
    fn fatal_by_default(&self) -> bool {
        matches!(
            self,
            Action::Load { .. }
                | Action::WaitGpiochip {}
                | Action::WaitI2cAdapter {}
                | Action::WaitGone { .. }
                | Action::WireEeprom { .. }
                | Action::Rewire {}
                | Action::NewDevice { .. }
                | Action::WaitNvmem { .. }
                | Action::WaitLine { .. }
                | Action::IrqRequest { .. }
        ) || matches!(
            self,
            Action::Write {
                may_fail: false,
                ..
            }
        )
    }

    /// The result this step observes, with its kind.
    pub fn observes(&self) -> Option<(&str, ResultKind)> {
        match self {
            Action::Write { observe, .. } => Some((observe, ResultKind::Write)),
            Action::Refcount { observe, .. } => Some((observe, ResultKind::Int)),
            Action::Rmmod {
                observe: Some(observe),
                ..
            } => Some((observe, ResultKind::Text)),
            Action::I2cdetect { observe }
            | Action::GpioLineNames { observe }
            | Action::GpioGet { observe, .. } => Some((observe, ResultKind::Text)),
            Action::WaitEdge { observe, .. }
            | Action::IrqWaitCount { observe, .. }
            | Action::IrqChanged { observe, .. } => Some((observe, ResultKind::Bool)),
            _ => None,
        }
    }

    /// The mark this step prints for the host, if any.
    pub fn mark(&self) -> Option<&str> {
        match self {
            Action::Mark { mark } | Action::WaitEdge { mark, .. } => Some(mark),
            Action::WaitLine { mark, .. } => mark.as_deref(),
            _ => None,
        }
    }
}

/// One guest step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The KTAP test name (default: the kind).
    pub name: String,
    /// What it does.
    pub action: Action,
    /// A failure skips the following steps (except `always` ones).
    pub fatal: bool,
    /// Runs even after a fatal failure (final reports such as refcounts).
    pub always: bool,
    /// Line in the file.
    pub line: usize,
}

/// The vhost-user devices, by the name host actions use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceName {
    /// vhost-user-gpio-pci / vhost-gpio.
    Gpio,
    /// vhost-user-i2c-pci / vhost-i2c-eeprom.
    I2c,
}

impl DeviceName {
    /// The QEMU device id.
    pub fn qemu_id(self) -> &'static str {
        match self {
            DeviceName::Gpio => "gpio0",
            DeviceName::I2c => "i2c0",
        }
    }

    /// The QEMU device model.
    pub fn qemu_model(self) -> &'static str {
        match self {
            DeviceName::Gpio => "vhost-user-gpio-pci",
            DeviceName::I2c => "vhost-user-i2c-pci",
        }
    }

    /// The backend's name.
    pub fn backend(self) -> &'static str {
        match self {
            DeviceName::Gpio => "vhost-gpio",
            DeviceName::I2c => "vhost-i2c-eeprom",
        }
    }
}

/// What the host does when the guest prints a mark.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "do", rename_all = "kebab-case", deny_unknown_fields)]
pub enum HostAction {
    /// QMP device_del and wait for DEVICE_DELETED.
    DeviceDel {
        /// Which device.
        device: DeviceName,
    },
    /// chardev-remove, chardev-add (to the backend, which listens again), device_add.
    Replug {
        /// Which device.
        device: DeviceName,
    },
    /// QMP chardev-remove of the device's chardev.
    ChardevRemove {
        /// Which device.
        device: DeviceName,
    },
    /// QMP chardev-add of the device's chardev, retried until the backend listens.
    ChardevAdd {
        /// Which device.
        device: DeviceName,
    },
    /// QMP device_add of the device on its chardev.
    DeviceAdd {
        /// Which device.
        device: DeviceName,
    },
    /// Set a gpio line's input level through vhost-gpio's control socket.
    SetLine {
        /// Line name.
        line: String,
        /// 0 or 1.
        value: u8,
    },
    /// SIGKILL a backend.
    KillBackend {
        /// Which backend.
        device: DeviceName,
    },
    /// Start a backend again with the same arguments (after kill-backend).
    RestartBackend {
        /// Which backend.
        device: DeviceName,
    },
    /// Wait for a QMP event by name (e.g. `DEVICE_DELETED`).
    WaitQmpEvent {
        /// The event name.
        event: String,
        /// Bound in seconds.
        #[serde(default = "sixty")]
        timeout_s: u32,
    },
    /// Sleep on the host.
    Sleep {
        /// Milliseconds.
        ms: u32,
    },
}

fn sixty() -> u32 {
    60
}

/// A host action and the mark it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnMark {
    /// The mark.
    pub mark: String,
    /// What to do.
    pub action: HostAction,
    /// Line in the file.
    pub line: usize,
}

/// A checked scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Its name (`--scenario`, expected.toml, the report).
    pub name: String,
    /// One line: what it shows.
    pub purpose: String,
    /// Who runs it.
    pub kind: FileKind,
    /// Kernel features it needs.
    pub needs: Vec<Need>,
    /// Devices.
    pub devices: Devices,
    /// Extra kernel command-line words.
    pub cmdline: Vec<String>,
    /// Guest steps, in order.
    pub steps: Vec<Step>,
    /// Host actions, in file order.
    pub on: Vec<OnMark>,
    /// Where it was read from.
    pub path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: String,
    purpose: String,
    #[serde(default)]
    kind: FileKind,
    #[serde(default)]
    needs: Vec<toml::Spanned<String>>,
    #[serde(default)]
    devices: Devices,
    #[serde(default)]
    cmdline: Vec<String>,
    #[serde(default)]
    step: Vec<toml::Spanned<toml::Table>>,
    #[serde(default)]
    on: Vec<toml::Spanned<toml::Table>>,
}

/// The 1-based line of a byte offset (a table's span starts at its `[[...]]` header).
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A value the runner passes to the shell: printable, no quote, no whitespace.
fn shell_safe(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.,:=/+-@%".contains(c))
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
}

struct Checker<'a> {
    path: &'a str,
}

impl Checker<'_> {
    fn at(&self, line: usize, message: impl Into<String>) -> ScenarioError {
        ScenarioError::At {
            path: self.path.to_string(),
            line,
            message: message.into(),
        }
    }
}

impl Scenario {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Scenario, ScenarioError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ScenarioError::Toml {
            path: path.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let c = Checker { path };
        let top = |key: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(key))
                .map_or(1, |i| i + 1)
        };
        if !name_ok(&raw.name) || raw.name == ALL {
            return Err(c.at(
                top("name"),
                format!(
                    "scenario name '{}' must be lowercase letters, digits, '-' or '_'",
                    raw.name
                ),
            ));
        }
        if raw.purpose.trim().is_empty() || raw.purpose.contains('\n') {
            return Err(c.at(top("purpose"), "purpose must be one non-empty line"));
        }
        for w in &raw.cmdline {
            if !shell_safe(w) {
                return Err(c.at(top("cmdline"), format!("kernel command-line word '{w}'")));
            }
        }
        let mut needs: Vec<Need> = Vec::new();
        for n in &raw.needs {
            let line = line_of(text, n.span().start);
            let need = Need::parse(n.get_ref()).map_err(|m| c.at(line, m))?;
            if needs.contains(&need) {
                return Err(c.at(line, format!("feature '{need}' is needed twice")));
            }
            needs.push(need);
        }
        check_devices(&raw.devices, &c, text)?;

        let mut steps = Vec::new();
        for (i, spanned) in raw.step.iter().enumerate() {
            let line = line_of(text, spanned.span().start);
            let mut table = spanned.get_ref().clone();
            let take_bool =
                |t: &mut toml::Table, key: &str| -> Result<Option<bool>, ScenarioError> {
                    match t.remove(key) {
                        None => Ok(None),
                        Some(toml::Value::Boolean(b)) => Ok(Some(b)),
                        Some(v) => Err(c.at(
                            line,
                            format!("step {}: '{key}' must be true or false, not {v}", i + 1),
                        )),
                    }
                };
            let fatal = take_bool(&mut table, "fatal")?;
            let always = take_bool(&mut table, "always")?.unwrap_or(false);
            let name = match table.remove("name") {
                None => None,
                Some(toml::Value::String(s)) => Some(s),
                Some(v) => {
                    return Err(c.at(
                        line,
                        format!("step {}: 'name' must be a string, not {v}", i + 1),
                    ))
                }
            };
            if !table.contains_key("do") {
                return Err(c.at(line, format!("step {}: missing field `do`", i + 1)));
            }
            let action = Action::deserialize(toml::Value::Table(table))
                .map_err(|e| c.at(line, format!("step {}: {}", i + 1, e.message().trim_end())))?;
            let name = name.unwrap_or_else(|| action.kind().to_string());
            if !name_ok(&name) {
                return Err(c.at(line, format!("step {}: step name '{name}'", i + 1)));
            }
            steps.push(Step {
                name,
                fatal: fatal.unwrap_or_else(|| action.fatal_by_default()),
                always,
                action,
                line,
            });
        }
        if raw.kind != FileKind::Boot && steps.is_empty() {
            return Err(c.at(top("name"), "no [[step]]"));
        }

        let mut on = Vec::new();
        for (i, spanned) in raw.on.iter().enumerate() {
            let line = line_of(text, spanned.span().start);
            let mut table = spanned.get_ref().clone();
            let mark = match table.remove("mark") {
                Some(toml::Value::String(s)) => s,
                Some(v) => {
                    return Err(c.at(
                        line,
                        format!("[[on]] {}: 'mark' must be a string, not {v}", i + 1),
                    ))
                }
                None => return Err(c.at(line, format!("[[on]] {}: missing field `mark`", i + 1))),
            };
            if !table.contains_key("do") {
                return Err(c.at(line, format!("[[on]] {}: missing field `do`", i + 1)));
            }
            let action = HostAction::deserialize(toml::Value::Table(table)).map_err(|e| {
                c.at(
                    line,
                    format!("[[on]] {}: {}", i + 1, e.message().trim_end()),
                )
            })?;
            on.push(OnMark { mark, action, line });
        }

        let s = Scenario {
            name: raw.name,
            purpose: raw.purpose,
            kind: raw.kind,
            needs,
            devices: raw.devices,
            cmdline: raw.cmdline,
            steps,
            on,
            path: path.to_string(),
        };
        s.check(&c)?;
        Ok(s)
    }

    /// The cross-references: devices, lines, marks, result names, saved counts.
    fn check(&self, c: &Checker) -> Result<(), ScenarioError> {
        let gpio_line = |line: usize, name: &str| -> Result<(), ScenarioError> {
            match &self.devices.gpio {
                None => Err(c.at(
                    line,
                    format!("gpio line '{name}' but the scenario has no [devices.gpio]"),
                )),
                Some(g) if !g.lines.iter().any(|l| l.name == name) => Err(c.at(
                    line,
                    format!(
                        "no gpio line '{name}' (lines: {})",
                        g.lines
                            .iter()
                            .map(|l| l.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
                Some(_) => Ok(()),
            }
        };
        let eeprom = |line: usize, id: &str| -> Result<(), ScenarioError> {
            if self.devices.eeprom(id).is_none() {
                return Err(c.at(
                    line,
                    format!(
                        "no EEPROM '{id}' in [[devices.eeprom]] (have: {})",
                        self.devices
                            .eeproms
                            .iter()
                            .map(|e| e.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            Ok(())
        };
        let safe = |line: usize, what: &str, v: &str| -> Result<(), ScenarioError> {
            if shell_safe(v) {
                Ok(())
            } else {
                Err(c.at(
                    line,
                    format!("{what} '{v}': use letters, digits and _.,:=/+-@%"),
                ))
            }
        };
        let mut results: BTreeMap<&str, usize> = BTreeMap::new();
        let mut saved: BTreeSet<&str> = BTreeSet::new();
        let mut marks: BTreeMap<&str, usize> = BTreeMap::new();
        let mut irq_requested = false;
        // The EEPROMs created so far (by wire-eeprom or new-device): the step's line and kind.
        let mut created: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
        for st in &self.steps {
            let l = st.line;
            if self.kind == FileKind::Boot && self.devices.gpio.is_none() {
                // Boot runs without backends: device steps would wait forever.
                if matches!(
                    st.action,
                    Action::WaitGpiochip {} | Action::WaitI2cAdapter {} | Action::WireEeprom { .. }
                ) {
                    return Err(c.at(
                        l,
                        format!("a boot scenario has no devices: '{}'", st.action.kind()),
                    ));
                }
            }
            match &st.action {
                Action::ModulesPresent { modules } => {
                    for m in modules {
                        safe(l, "module", m)?;
                    }
                }
                Action::Load { module, params } => {
                    safe(l, "module", module)?;
                    for p in params {
                        safe(l, "module parameter", p)?;
                        if !p.contains('=') || p.starts_with('=') {
                            return Err(c.at(l, format!("module parameter '{p}' is not key=value")));
                        }
                    }
                }
                Action::Rmmod { module, .. } | Action::Refcount { module, .. } => {
                    safe(l, "module", module)?;
                    // Unloading eeprom_wire removes every client it wired.
                    if matches!(st.action, Action::Rmmod { .. })
                        && module.replace('-', "_") == "eeprom_wire"
                    {
                        created.retain(|_, (_, how)| *how != "wire-eeprom");
                    }
                }
                Action::WaitGone { what, pci } => match (what, pci) {
                    (Gone::Pci, None) => {
                        return Err(
                            c.at(l, "wait-gone what = \"pci\" needs pci = \"vendor:device\"")
                        )
                    }
                    (Gone::Pci, Some(p)) => {
                        let ok = p.split_once(':').is_some_and(|(v, d)| {
                            v.len() == 4
                                && d.len() == 4
                                && (v.to_string() + d).chars().all(|ch| ch.is_ascii_hexdigit())
                        });
                        if !ok {
                            return Err(c.at(
                                l,
                                format!("pci '{p}' is not vendor:device in hex (1af4:1069)"),
                            ));
                        }
                    }
                    (Gone::Gpiochip, Some(_)) => {
                        return Err(c.at(l, "pci is only for what = \"pci\""))
                    }
                    (Gone::Gpiochip, None) => {
                        if self.devices.gpio.is_none() {
                            return Err(c.at(
                                l,
                                "wait-gone gpiochip but the scenario has no [devices.gpio]",
                            ));
                        }
                    }
                },
                Action::WireEeprom { eeprom: e, .. } | Action::NewDevice { eeprom: e } => {
                    eeprom(l, e)?;
                    if let Action::WireEeprom { line, .. } = &st.action {
                        gpio_line(l, line)?;
                    }
                    // Each EEPROM is one i2c client: a second one at its address fails.
                    if let Some((first, how)) = created.insert(e, (l, st.action.kind())) {
                        return Err(c.at(
                            l,
                            format!(
                                "EEPROM '{e}' is already created by the {how} at line {first}{}",
                                if how == "wire-eeprom" {
                                    " (rewire wires it again)"
                                } else {
                                    ""
                                }
                            ),
                        ));
                    }
                }
                Action::WaitNvmem { eeprom: e } => eeprom(l, e)?,
                Action::BenchNvmem { eeprom: e, .. } => eeprom(l, e)?,
                Action::Write {
                    eeprom: e,
                    pattern,
                    offset,
                    ..
                }
                | Action::ReadBack {
                    eeprom: e,
                    pattern,
                    offset,
                    ..
                } => {
                    eeprom(l, e)?;
                    safe(l, "pattern", pattern)?;
                    if usize::try_from(*offset).map_or(true, |o| o % PATTERN_LEN != 0) {
                        return Err(c.at(l, format!("offset {offset}: a multiple of {PATTERN_LEN} (the pattern is written in one write call)")));
                    }
                    let size = self
                        .devices
                        .eeprom(e)
                        .and_then(|x| model_size(&x.model))
                        .unwrap_or(0);
                    if u64::from(*offset) + PATTERN_LEN as u64 > size {
                        return Err(c.at(l, format!("offset {offset} + {PATTERN_LEN} bytes does not fit the EEPROM '{e}' ({size} bytes)")));
                    }
                }
                Action::GpioSet { line, value } | Action::WaitLine { line, value, .. } => {
                    gpio_line(l, line)?;
                    if *value > 1 {
                        return Err(c.at(l, format!("value {value}: 0 or 1")));
                    }
                }
                Action::GpioGet { line, .. }
                | Action::WaitEdge { line, .. }
                | Action::BenchGpio { line } => gpio_line(l, line)?,
                Action::IrqRequest { line, .. } => {
                    gpio_line(l, line)?;
                    irq_requested = true;
                }
                Action::IrqWaitCount { .. }
                | Action::IrqDisable {}
                | Action::IrqEnable {}
                | Action::IrqFree {} => {
                    if !irq_requested {
                        return Err(c.at(l, format!("{} before any irq-request", st.action.kind())));
                    }
                }
                Action::IrqCount { save } => {
                    if !irq_requested {
                        return Err(c.at(l, "irq-count before any irq-request"));
                    }
                    if !name_ok(save) {
                        return Err(c.at(l, format!("saved count name '{save}'")));
                    }
                    saved.insert(save);
                }
                Action::IrqChanged { since, .. } => {
                    if !saved.contains(since.as_str()) {
                        return Err(c.at(
                            l,
                            format!("irq-changed since '{since}': no earlier irq-count saves it"),
                        ));
                    }
                }
                Action::I2cdetect { .. } | Action::WaitI2cAdapter {} => {
                    if self.devices.eeproms.is_empty() {
                        return Err(c.at(
                            l,
                            format!(
                                "{} but the scenario has no EEPROM (no i2c device)",
                                st.action.kind()
                            ),
                        ));
                    }
                }
                Action::WaitGpiochip {} | Action::GpioLineNames { .. } | Action::Rewire {} => {
                    if self.devices.gpio.is_none() {
                        return Err(c.at(
                            l,
                            format!(
                                "{} but the scenario has no [devices.gpio]",
                                st.action.kind()
                            ),
                        ));
                    }
                }
                Action::ListDevices {} | Action::Sleep { .. } | Action::Mark { .. } => {}
            }
            if let Some((name, _)) = st.action.observes() {
                if !name_ok(name) {
                    return Err(c.at(
                        l,
                        format!("result name '{name}': lowercase letters, digits, '_'"),
                    ));
                }
                if let Some(first) = results.insert(name, l) {
                    return Err(c.at(
                        l,
                        format!("result '{name}' is already observed at line {first}"),
                    ));
                }
            }
            if let Some(m) = st.action.mark() {
                if !name_ok(m) {
                    return Err(c.at(
                        l,
                        format!("mark '{m}': lowercase letters, digits, '-', '_'"),
                    ));
                }
                if crate::console::reserved_marker(m) {
                    return Err(c.at(l, format!("mark '{m}' is one the runner prints itself")));
                }
                marks.entry(m).or_insert(l);
                if !self.on.iter().any(|o| o.mark == m) {
                    return Err(c.at(
                        l,
                        format!("mark '{m}' has no host action: add [[on]] mark = \"{m}\""),
                    ));
                }
            }
        }
        for o in &self.on {
            if !marks.contains_key(o.mark.as_str()) {
                return Err(c.at(
                    o.line,
                    format!("host action for mark '{}', which no step prints", o.mark),
                ));
            }
            match &o.action {
                HostAction::SetLine { line, value } => {
                    gpio_line(o.line, line)?;
                    if *value > 1 {
                        return Err(c.at(o.line, format!("value {value}: 0 or 1")));
                    }
                }
                HostAction::DeviceDel { device }
                | HostAction::Replug { device }
                | HostAction::ChardevRemove { device }
                | HostAction::ChardevAdd { device }
                | HostAction::DeviceAdd { device }
                | HostAction::KillBackend { device }
                | HostAction::RestartBackend { device } => {
                    let present = match device {
                        DeviceName::Gpio => self.devices.gpio.is_some(),
                        DeviceName::I2c => !self.devices.eeproms.is_empty(),
                    };
                    if !present {
                        return Err(c.at(
                            o.line,
                            format!("the scenario has no {} device", device.backend()),
                        ));
                    }
                }
                HostAction::WaitQmpEvent { event, .. } => {
                    if event.is_empty()
                        || !event.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_')
                    {
                        return Err(
                            c.at(o.line, format!("QMP event '{event}' (e.g. DEVICE_DELETED)"))
                        );
                    }
                }
                HostAction::Sleep { .. } => {}
            }
        }
        Ok(())
    }

    /// The results this scenario observes, with their kinds.
    pub fn results(&self) -> Vec<(String, ResultKind)> {
        self.steps
            .iter()
            .filter_map(|s| s.action.observes())
            .map(|(n, k)| (n.to_string(), k))
            .collect()
    }

    /// The shell the guest runner sources: `plan N`, then one `step` call per step.
    pub fn guest_script(&self) -> String {
        let q = |s: &str| format!("'{s}'");
        let mut out = format!(
            "# generated from {} by guest-tests\nscenario {}\nplan {}\n",
            self.path,
            q(&self.name),
            self.steps.len()
        );
        // Before any step: each needed feature; one the kernel lacks skips every step.
        for need in &self.needs {
            let words = match need {
                Need::Param { module, param } => ["param", module.as_str(), param.as_str()].map(q),
                Need::Build(name) => ["build", *name, "-"].map(q),
            };
            out.push_str(&format!("need {}\n", words.join(" ")));
        }
        for st in &self.steps {
            let flags = match (st.fatal, st.always) {
                (true, true) => "fatal,always",
                (true, false) => "fatal",
                (false, true) => "always",
                (false, false) => "-",
            };
            let ee = |id: &str| self.devices.eeprom(id).expect("checked");
            let mut words: Vec<String> = vec!["step".into(), flags.into(), q(&st.name)];
            let mut push = |w: &str| words.push(q(w));
            match &st.action {
                Action::ListDevices {} => push("list_devices"),
                Action::ModulesPresent { modules } => {
                    push("modules_present");
                    modules.iter().for_each(|m| push(m));
                }
                Action::Load { module, params } => {
                    push("load");
                    push(module);
                    params.iter().for_each(|p| push(p));
                }
                Action::Rmmod { module, observe } => {
                    push("rmmod");
                    push(module);
                    if let Some(o) = observe {
                        push(o);
                    }
                }
                Action::Refcount { module, observe } => {
                    push("refcount");
                    push(module);
                    push(observe);
                }
                Action::WaitGpiochip {} => push("wait_gpiochip"),
                Action::WaitI2cAdapter {} => push("wait_i2c_adapter"),
                Action::WaitGone { what, pci } => {
                    push("wait_gone");
                    match what {
                        Gone::Gpiochip => push("gpiochip"),
                        Gone::Pci => {
                            push("pci");
                            push(pci.as_deref().unwrap_or(""));
                        }
                    }
                }
                Action::WireEeprom { eeprom, line } => {
                    let e = ee(eeprom);
                    push("wire_eeprom");
                    push(line);
                    push(&e.model);
                    push(&format!("{:#04x}", e.addr));
                    push(&e.page.unwrap_or(32).to_string());
                    push(&e.addr4());
                }
                Action::Rewire {} => push("rewire"),
                Action::NewDevice { eeprom } => {
                    let e = ee(eeprom);
                    push("new_device");
                    push(&e.model);
                    push(&format!("{:#04x}", e.addr));
                    push(&e.addr4());
                }
                Action::WaitNvmem { eeprom } => {
                    push("wait_nvmem");
                    push(&ee(eeprom).addr4());
                }
                Action::Write {
                    eeprom,
                    pattern,
                    offset,
                    observe,
                    may_fail,
                } => {
                    push("write");
                    push(&ee(eeprom).addr4());
                    push(pattern);
                    push(&offset.to_string());
                    push(observe);
                    push(if *may_fail {
                        "may-fail"
                    } else {
                        "must-succeed"
                    });
                }
                Action::ReadBack {
                    eeprom,
                    pattern,
                    offset,
                    expect,
                } => {
                    push("read_back");
                    push(&ee(eeprom).addr4());
                    push(pattern);
                    push(&offset.to_string());
                    push(match expect {
                        ReadExpect::Same => "same",
                        ReadExpect::Differs => "differs",
                        ReadExpect::Any => "any",
                    });
                }
                Action::I2cdetect { observe } => {
                    push("i2cdetect");
                    push(observe);
                }
                Action::GpioLineNames { observe } => {
                    push("gpio_line_names");
                    push(observe);
                }
                Action::GpioSet { line, value } => {
                    push("gpio_set");
                    push(line);
                    push(&value.to_string());
                }
                Action::GpioGet { line, observe } => {
                    push("gpio_get");
                    push(line);
                    push(observe);
                }
                Action::WaitLine { line, value, mark } => {
                    push("wait_line");
                    push(line);
                    push(&value.to_string());
                    push(mark.as_deref().unwrap_or("-"));
                }
                Action::WaitEdge {
                    line,
                    edge,
                    count,
                    mark,
                    observe,
                } => {
                    push("wait_edge");
                    push(line);
                    push(match edge {
                        Edge::Rising => "rising",
                        Edge::Falling => "falling",
                        Edge::Both => "both",
                    });
                    push(&count.to_string());
                    push(mark);
                    push(observe);
                }
                Action::IrqRequest { line, trigger } => {
                    push("irq_request");
                    push(line);
                    push(trigger.as_str());
                }
                Action::IrqWaitCount { min, observe } => {
                    push("irq_wait_count");
                    push(&min.to_string());
                    push(observe);
                }
                Action::IrqCount { save } => {
                    push("irq_count");
                    push(save);
                }
                Action::IrqChanged {
                    since,
                    after_ms,
                    observe,
                } => {
                    push("irq_changed");
                    push(since);
                    push(&after_ms.to_string());
                    push(observe);
                }
                Action::IrqDisable {} => push("irq_disable"),
                Action::IrqEnable {} => push("irq_enable"),
                Action::IrqFree {} => push("irq_free"),
                Action::BenchGpio { line } => {
                    push("bench_gpio");
                    push(line);
                }
                Action::BenchNvmem { eeprom, write } => {
                    push("bench_nvmem");
                    push(&ee(eeprom).addr4());
                    push(if *write { "write" } else { "read" });
                }
                Action::Sleep { ms } => {
                    push("sleep_ms");
                    push(&ms.to_string());
                }
                Action::Mark { mark } => {
                    push("mark_step");
                    push(mark);
                }
            }
            out.push_str(&words.join(" "));
            out.push('\n');
        }
        out
    }
}

/// Bytes of an at24 model (`24c32` is 32 kbit = 4096 bytes).
pub fn model_size(model: &str) -> Option<u64> {
    let kbit: u64 = model.strip_prefix("24c")?.parse().ok()?;
    matches!(
        kbit,
        1 | 2 | 4 | 8 | 16 | 32 | 64 | 128 | 256 | 512 | 1024 | 2048
    )
    .then_some(kbit * 128)
}

fn check_devices(d: &Devices, c: &Checker, text: &str) -> Result<(), ScenarioError> {
    let at = |needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .map_or(1, |i| i + 1)
    };
    if let Some(g) = &d.gpio {
        if g.lines.is_empty() {
            return Err(c.at(
                at("[devices.gpio]"),
                "[devices.gpio] has no [[devices.gpio.line]]",
            ));
        }
        let mut seen = BTreeSet::new();
        for l in &g.lines {
            if !shell_safe(&l.name) || l.name.contains([',', ':', '=']) {
                return Err(c.at(at(&l.name), format!("gpio line name '{}'", l.name)));
            }
            if !seen.insert(&l.name) {
                return Err(c.at(at(&l.name), format!("two gpio lines named '{}'", l.name)));
            }
            if l.host.is_some_and(|v| v > 1) {
                return Err(c.at(at(&l.name), format!("line '{}': host level 0 or 1", l.name)));
            }
        }
        if let Some(wp) = &g.wp_line {
            if !seen.contains(wp) {
                return Err(c.at(
                    at("wp_line"),
                    format!("wp_line '{wp}' is not one of the lines"),
                ));
            }
        }
    }
    let mut ids = BTreeSet::new();
    let mut addrs = BTreeSet::new();
    for e in &d.eeproms {
        let l = at(&format!("\"{}\"", e.id));
        if !name_ok(&e.id) {
            return Err(c.at(l, format!("EEPROM id '{}'", e.id)));
        }
        if !ids.insert(&e.id) {
            return Err(c.at(l, format!("two EEPROMs with id '{}'", e.id)));
        }
        if model_size(&e.model).is_none() {
            return Err(c.at(l, format!("EEPROM model '{}' (24c01 .. 24c2048)", e.model)));
        }
        if !(0x08..=0x77).contains(&e.addr) {
            return Err(c.at(
                l,
                format!("EEPROM address {:#x} is not a 7-bit device address", e.addr),
            ));
        }
        if !addrs.insert(e.addr) {
            return Err(c.at(l, format!("two EEPROMs at {:#x}", e.addr)));
        }
    }
    Ok(())
}

/// Every scenario file (`*.toml`) of a directory, checked, sorted by the order the files give
/// (`order` in each file is not a thing: by file name, so `10-...` sorts before `20-...`).
pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    let rd = std::fs::read_dir(dir).map_err(|source| ScenarioError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|source| ScenarioError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let p = ent.path();
        if p.extension().is_some_and(|e| e == "toml") {
            files.push(p);
        }
    }
    files.sort();
    let mut out: Vec<Scenario> = Vec::new();
    for f in files {
        add(&mut out, Scenario::load(&f)?)?;
    }
    Ok(out)
}

/// Adds a scenario to a list, refusing a second one of the same name.
pub fn add(list: &mut Vec<Scenario>, s: Scenario) -> Result<(), ScenarioError> {
    if let Some(first) = list.iter().find(|x| x.name == s.name) {
        return Err(ScenarioError::Duplicate {
            name: s.name.clone(),
            first: first.path.clone(),
            second: s.path,
        });
    }
    list.push(s);
    Ok(())
}

/// The 64 bytes the guest runner writes for `tag` (its `make_pattern`): `VGN-<tag>-`, the
/// first 32 hex digits of sha256("<tag>\n"), padded with dots.
pub fn pattern(tag: &str) -> Vec<u8> {
    let digest = Sha256::digest(format!("{tag}\n").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut p = format!("VGN-{tag}-{}", &hex[..32]).into_bytes();
    p.truncate(PATTERN_LEN);
    p.resize(PATTERN_LEN, b'.');
    p
}

/// What the interpreter asks of the host side of a run: QMP, the backends, the control socket.
pub trait Host {
    /// Runs one host action.
    fn act(&mut self, action: &HostAction) -> Result<(), String>;
    /// The image file of an EEPROM.
    fn image(&self, eeprom: &Eeprom) -> PathBuf;
}

/// Follows one run's markers on the host: runs the host actions the scenario pairs with the
/// guest's marks, and collects the results.
#[derive(Debug)]
pub struct Interpreter<'a> {
    scenario: &'a Scenario,
    /// What was observed so far.
    pub observations: Observations,
    /// Writes begun (by result name) and not judged yet.
    pending_writes: BTreeSet<String>,
    /// Every marker, in order (bench figures are read from them).
    pub markers: Vec<Marker>,
    /// The runner printed `done`.
    pub done: bool,
    /// Problems of the host side (a failed host action, a result the guest printed badly).
    pub notes: Vec<String>,
    /// The needed features the guest found missing (`lacks` markers): the run is skipped.
    pub lacks: Vec<String>,
    /// The guest's check of the kernel's config, made when the host had none to check.
    pub kconfig: Option<KconfigCheck>,
    /// `kconfig-wrong` lines before the check's verdict.
    kconfig_wrong: Vec<String>,
}

/// What the guest found checking `/proc/config.gz` against the config fragments (a prebuilt
/// kernel given without its config; `guest-tests/kernel/kconfig-check`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KconfigCheck {
    /// It meets the fragments of this version.
    Met {
        /// The fragment version (`6.12`).
        fragments: String,
    },
    /// It does not: the check's lines (`wanted CONFIG_X=y, got ...`).
    Unmet {
        /// The fragment version (the nearest).
        fragments: String,
        /// What is wrong.
        wrong: Vec<String>,
    },
    /// The kernel has no `/proc/config.gz`: nothing checked its config.
    Unchecked,
}

impl KconfigCheck {
    /// The run's note: what was checked and how it came out.
    pub fn note(&self) -> String {
        match self {
            KconfigCheck::Met { fragments } => {
                format!("config checked in the guest: /proc/config.gz meets the {fragments} fragments")
            }
            KconfigCheck::Unmet { fragments, wrong } => format!(
                "kernel config (/proc/config.gz) does not meet the {fragments} fragments: {}",
                if wrong.is_empty() {
                    "see the console".to_string()
                } else {
                    wrong.join("; ")
                }
            ),
            KconfigCheck::Unchecked => "config unchecked: no --config, no .config in the build tree and no /proc/config.gz (CONFIG_IKCONFIG_PROC) in the guest".into(),
        }
    }
}

impl<'a> Interpreter<'a> {
    /// An interpreter for `scenario`, every result it declares not observed yet.
    pub fn new(scenario: &'a Scenario) -> Self {
        let mut observations = Observations::default();
        observations.declare(&scenario.results());
        Interpreter {
            scenario,
            observations,
            pending_writes: BTreeSet::new(),
            markers: Vec::new(),
            done: false,
            notes: Vec::new(),
            lacks: Vec::new(),
            kconfig: None,
            kconfig_wrong: Vec::new(),
        }
    }

    /// The scenario it follows.
    pub fn scenario(&self) -> &'a Scenario {
        self.scenario
    }

    /// Handles one console line.
    pub fn line(&mut self, line: &str, host: &mut dyn Host) {
        let Some(m) = Marker::parse(line) else {
            return;
        };
        if m.name == "kconfig-wrong" {
            // The check's line as it printed it (spaces and all).
            let text = line
                .split_once("kconfig-wrong")
                .map_or("", |(_, t)| t.trim());
            self.kconfig_wrong.push(text.to_string());
        }
        self.marker(m, host);
    }

    fn marker(&mut self, m: Marker, host: &mut dyn Host) {
        match m.name.as_str() {
            "done" => self.done = true,
            "lacks" => {
                if let Some(f) = m.field("feature") {
                    self.lacks.push(f.to_string());
                }
            }
            "kconfig-wrong" => {}
            "kconfig" => {
                let fragments = m.field("fragments").unwrap_or("?").to_string();
                self.kconfig = match m.field("status") {
                    Some("met") => Some(KconfigCheck::Met { fragments }),
                    Some("unmet") => Some(KconfigCheck::Unmet {
                        fragments,
                        wrong: std::mem::take(&mut self.kconfig_wrong),
                    }),
                    Some("unchecked") => Some(KconfigCheck::Unchecked),
                    other => {
                        self.notes
                            .push(format!("kconfig marker with status {other:?}"));
                        None
                    }
                };
            }
            "write-begin" => {
                if let Some(o) = m.field("observe") {
                    self.pending_writes.insert(o.to_string());
                }
            }
            "write-end" => match (m.field("observe"), m.field("status")) {
                // The write call did not return in time: no answer from the kernel yet;
                // judged on the image when the run ends.
                (Some(o), Some("timeout")) => self.notes.push(format!(
                    "the write for '{o}' did not return within the guest's bound"
                )),
                (Some(o), status) => self.judge_write(o, status == Some("refused"), host),
                (None, _) => {}
            },
            "observe" => match (m.field("name"), m.field("value")) {
                (Some(n), Some(v)) => self.result(n, v),
                _ => self
                    .notes
                    .push(format!("malformed observe marker: {:?}", m.fields)),
            },
            name => {
                let actions: Vec<&OnMark> =
                    self.scenario.on.iter().filter(|o| o.mark == name).collect();
                for o in actions {
                    log::info!("{}: mark {name}: {:?}", self.scenario.name, o.action);
                    if let Err(e) = host.act(&o.action) {
                        self.notes.push(format!("on mark {name}: {e}"));
                    }
                }
            }
        }
        self.markers.push(m);
    }

    fn result(&mut self, name: &str, value: &str) {
        let Some(kind) = self.observations.kind_of(name) else {
            self.notes.push(format!(
                "the guest printed result '{name}', which the scenario does not observe"
            ));
            return;
        };
        let v = match kind {
            ResultKind::Int => match value.parse::<i64>() {
                Ok(n) => Some(Value::Int(n)),
                Err(_) => None, // "none": the module is not loaded
            },
            ResultKind::Bool => match value {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => {
                    self.notes
                        .push(format!("result '{name}': '{value}' is not true or false"));
                    None
                }
            },
            ResultKind::Text => Some(Value::Text(value.to_string())),
            ResultKind::Write => {
                self.notes
                    .push(format!("result '{name}' is a write, judged on the host"));
                return;
            }
        };
        self.observations.set(name, v);
    }

    fn judge_write(&mut self, observe: &str, refused: bool, host: &dyn Host) {
        if !self.pending_writes.remove(observe) {
            return;
        }
        let Some(Action::Write {
            eeprom,
            pattern: tag,
            offset,
            ..
        }) = self
            .scenario
            .steps
            .iter()
            .map(|s| &s.action)
            .find(|a| a.observes().is_some_and(|(n, _)| n == observe))
        else {
            self.notes.push(format!(
                "the guest wrote for result '{observe}', which no write step observes"
            ));
            return;
        };
        let outcome = if refused {
            WriteOutcome::Refused
        } else {
            let e = self.scenario.devices.eeprom(eeprom).expect("checked");
            let mut buf = vec![0u8; PATTERN_LEN];
            let read = std::fs::File::open(host.image(e))
                .and_then(|f| f.read_exact_at(&mut buf, u64::from(*offset)));
            match read {
                Ok(()) if buf == pattern(tag) => WriteOutcome::Landed,
                _ => WriteOutcome::Blocked,
            }
        };
        self.observations.set(observe, Some(Value::Write(outcome)));
    }

    /// After the guest stopped: judges writes the guest began but never reported (it died or
    /// hung in the write) on the images as they are.
    pub fn finish(&mut self, host: &dyn Host) {
        for o in std::mem::take(&mut self.pending_writes) {
            self.pending_writes.insert(o.clone());
            self.judge_write(&o, false, host);
        }
    }
}

#[cfg(test)]
mod tests;
