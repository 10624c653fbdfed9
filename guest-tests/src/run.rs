// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! One guest run in stages, shared by the reproduction and the benchmark:
//!
//! 1. [`RunDir`]: a private temp directory for sockets, images and the console, and the
//!    names under which the logs are kept beside the report;
//! 2. [`Backends`]: vhost-gpio and vhost-i2c-eeprom as the scenario's devices say (none, one
//!    or both), with the host-held line levels set before the guest boots;
//! 3. [`Guest`]: the per-run initramfs (the variant's, plus the scenario's step list) and
//!    QEMU with the devices, QMP connected;
//! 4. [`follow`]: the console, line by line, through the scenario [`Interpreter`] (host
//!    actions, results), until the runner is done, QEMU exits, the run times out, or the guest
//!    stays silent after an oops;
//! 5. [`teardown`]: QEMU and the backends stopped, writes left pending judged on the images,
//!    the console classified, the logs saved.
//!
//! A guest that oopses or hangs is a result: the run ends and is classified like any other.
//! Every process a run starts is stopped when the run ends.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use test_kit::testutil::ChildGuard;
use vhost_gpio::control::ControlClient;

use crate::classify::classify;
use crate::console::{Console, Marker};
use crate::observe::Observations;
use crate::qemu::{Accel, Qemu, QemuConfig, VhostUserDevice};
use crate::qmp::QmpClient;
use crate::scenario::{DeviceName, Eeprom, Host, HostAction, Interpreter, Scenario};
use crate::symbolize::{Resolved, Symbolizer};
use crate::variants::Variant;

/// How long a guest that printed a fatal report (an oops) may stay silent before the run is
/// ended: such a guest is often wedged (the dead task held locks, or died with interrupts off).
pub const SILENCE_AFTER_OOPS: Duration = Duration::from_secs(20);

/// The runner prints a heartbeat marker every second from a background task. After an oops,
/// a guest whose heartbeat and console stop for this long is wedged (the oopsed task died
/// with interrupts off, or holds what everything needs).
pub const HEARTBEAT_LOST: Duration = Duration::from_secs(6);

/// After an oops, a runner that is alive (heartbeat) but has printed no step, result or
/// marker for this long, while the kernel has been quiet for [`KERNEL_QUIET`], is stuck
/// (typically waiting for a device the oops took with it). Without a heartbeat,
/// [`SILENCE_AFTER_OOPS`] of a silent console ends the run instead.
pub const NO_PROGRESS_AFTER_OOPS: Duration = Duration::from_secs(10);

/// How long the kernel must have printed nothing before a stuck run is ended, so that a
/// report still being printed is not cut.
pub const KERNEL_QUIET: Duration = Duration::from_secs(2);

/// The heartbeat marker.
pub const HEARTBEAT: &str = "alive";

/// Where the runner finds its step list in the initramfs.
pub const STEPS_PATH: &str = "etc/vgn-steps.sh";

/// Errors that stop a run before it can be judged.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A temp directory or file could not be made.
    #[error("{what}")]
    Io {
        /// What failed.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A backend did not start.
    #[error("{name} did not start listening on {socket} within {waited:?}; its output:\n{log}")]
    Backend {
        /// Which backend.
        name: &'static str,
        /// Its socket.
        socket: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// What it printed.
        log: String,
    },
    /// QEMU could not be started.
    #[error(transparent)]
    Qemu(#[from] crate::qemu::QemuError),
    /// QMP failed before the guest ran; QEMU's own output says why.
    #[error("QMP failed; QEMU said: {log}")]
    Qmp {
        /// The QMP error.
        #[source]
        source: crate::qmp::QmpError,
        /// What QEMU printed.
        log: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// How runs are made.
#[derive(Clone, Debug)]
pub struct Options {
    /// vhost-gpio binary.
    pub vhost_gpio: PathBuf,
    /// vhost-i2c-eeprom binary.
    pub vhost_i2c: PathBuf,
    /// QEMU binary.
    pub qemu: PathBuf,
    /// Accelerator.
    pub accel: Accel,
    /// Bound of one run, boot to power-off.
    pub run_timeout: Duration,
    /// Bound of each guest-side wait (`vgn.timeout`).
    pub guest_timeout: Duration,
    /// Where console logs and backend logs are written.
    pub out_dir: PathBuf,
    /// Runs at once.
    pub jobs: usize,
    /// Write cycle time of the scenario's first EEPROM in microseconds (default: the file's).
    pub twr_us: Option<u32>,
    /// Extra words for the kernel command line.
    pub append: String,
}

/// Stage 1: the run's private directory, and the stem of its logs beside the report.
#[derive(Debug)]
pub struct RunDir {
    dir: tempfile::TempDir,
    /// `<kernel>--<scenario>`: the logs are `<stem>.console.log` etc.
    pub stem: String,
    out_dir: PathBuf,
}

impl RunDir {
    /// A new private directory for a run whose logs go to `out_dir/<stem>.*`.
    pub fn new(out_dir: &Path, stem: &str) -> Result<RunDir, RunError> {
        Ok(RunDir {
            dir: tempfile::Builder::new()
                .prefix("vgn-run-")
                .tempdir()
                .map_err(io("creating the run directory"))?,
            stem: stem.to_string(),
            out_dir: out_dir.to_path_buf(),
        })
    }

    /// A file of the private directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The private directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file name of a log kept beside the report (`<stem>.<what>.log`).
    pub fn log_name(&self, what: &str) -> String {
        format!("{}.{what}.log", self.stem)
    }

    /// Keeps a log beside the report; a failure is returned as a note.
    fn save(&self, what: &str, content: &str) -> Option<String> {
        let p = self.out_dir.join(self.log_name(what));
        std::fs::write(&p, content)
            .err()
            .map(|e| format!("writing {}: {e}", p.display()))
    }
}

/// One backend process, restartable with the same arguments.
#[derive(Debug)]
struct Backend {
    name: &'static str,
    binary: PathBuf,
    args: Vec<String>,
    socket: PathBuf,
    child: Option<ChildGuard>,
    /// Output of earlier instances (killed or restarted).
    old_logs: String,
}

impl Backend {
    fn start(&mut self) -> Result<(), RunError> {
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.args).env("RUST_LOG", "info");
        let mut child =
            ChildGuard::spawn(cmd).map_err(io(format!("starting {}", self.binary.display())))?;
        let waited = Duration::from_secs(10);
        if !wait_for_path(&self.socket, waited) {
            let _ = child.kill9();
            return Err(RunError::Backend {
                name: self.name,
                socket: self.socket.clone(),
                waited,
                log: child.log(),
            });
        }
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) -> Result<(), String> {
        let Some(mut c) = self.child.take() else {
            return Err(format!("{} is not running", self.name));
        };
        let r = c.kill9().map(|_| ()).map_err(|e| e.to_string());
        self.old_logs.push_str(&c.log());
        self.old_logs.push_str("--- killed by the harness ---\n");
        r
    }

    fn stop(&mut self) -> String {
        if let Some(mut c) = self.child.take() {
            let _ = c.terminate(Duration::from_secs(5));
            self.old_logs.push_str(&c.log());
        }
        std::mem::take(&mut self.old_logs)
    }
}

fn wait_for_path(p: &Path, timeout: Duration) -> bool {
    test_kit::testutil::wait_until(timeout, || p.exists().then_some(())).is_some()
}

/// Stage 2: the backends a scenario's devices need.
#[derive(Debug)]
pub struct Backends {
    gpio: Option<Backend>,
    i2c: Option<Backend>,
    ctl: PathBuf,
    images: PathBuf,
}

impl Backends {
    /// Starts the backends of `scenario` in `dir` and sets the lines the host holds.
    pub fn start(scenario: &Scenario, opts: &Options, dir: &RunDir) -> Result<Backends, RunError> {
        let s = |p: &Path| p.display().to_string();
        let wp = dir.path("wp.state");
        let ctl = dir.path("gpio.ctl");
        let wp_line = scenario
            .devices
            .gpio
            .as_ref()
            .and_then(|g| g.wp_line.clone());
        let mut b = Backends {
            gpio: None,
            i2c: None,
            ctl: ctl.clone(),
            images: dir.dir().to_path_buf(),
        };
        if let Some(lines) = scenario.devices.gpio_lines_arg() {
            let socket = dir.path("gpio.sock");
            let mut args = vec![
                "--socket-path".into(),
                s(&socket),
                "--lines".into(),
                lines,
                "--control-socket".into(),
                s(&ctl),
            ];
            if let Some(l) = &wp_line {
                args.extend(["--wp-line".into(), l.clone(), "--wp-state".into(), s(&wp)]);
            }
            let mut g = Backend {
                name: "vhost-gpio",
                binary: opts.vhost_gpio.clone(),
                args,
                socket,
                child: None,
                old_logs: String::new(),
            };
            g.start()?;
            b.gpio = Some(g);
        }
        if !scenario.devices.eeproms.is_empty() {
            let socket = dir.path("i2c.sock");
            let mut args = vec!["--socket-path".into(), s(&socket)];
            for (i, e) in scenario.devices.eeproms.iter().enumerate() {
                let mut spec = format!(
                    "model={},addr={:#04x},file={}",
                    e.model,
                    e.addr,
                    s(&b.image(e))
                );
                if let Some(p) = e.page {
                    spec.push_str(&format!(",page={p}"));
                }
                if let Some(w) = e.wp {
                    spec.push_str(match w {
                        crate::scenario::WpMode::Ack => ",wp=ack",
                        crate::scenario::WpMode::Nack => ",wp=nack",
                    });
                }
                let twr = if i == 0 {
                    opts.twr_us.or(e.twr_us)
                } else {
                    e.twr_us
                };
                if let Some(t) = twr {
                    spec.push_str(&format!(",twr-us={t}"));
                }
                args.extend(["--eeprom".into(), spec]);
            }
            if wp_line.is_some() {
                args.extend(["--wp-state".into(), s(&wp)]);
            }
            let mut i2c = Backend {
                name: "vhost-i2c-eeprom",
                binary: opts.vhost_i2c.clone(),
                args,
                socket,
                child: None,
                old_logs: String::new(),
            };
            i2c.start()?;
            b.i2c = Some(i2c);
        }
        let held: Vec<_> = scenario
            .devices
            .gpio
            .iter()
            .flat_map(|g| g.lines.iter())
            .filter_map(|l| l.host.map(|v| (l.name.clone(), v == 1)))
            .collect();
        if !held.is_empty() {
            if !wait_for_path(&ctl, Duration::from_secs(10)) {
                return Err(RunError::Backend {
                    name: "vhost-gpio",
                    socket: ctl,
                    waited: Duration::from_secs(10),
                    log: b
                        .gpio
                        .as_ref()
                        .and_then(|g| g.child.as_ref())
                        .map(|c| c.log())
                        .unwrap_or_default(),
                });
            }
            for (line, high) in held {
                b.set_line(&line, high).map_err(|e| RunError::Io {
                    what: format!("holding line {line} before boot"),
                    source: std::io::Error::other(e),
                })?;
            }
        }
        Ok(b)
    }

    fn backend(&mut self, d: DeviceName) -> Result<&mut Backend, String> {
        match d {
            DeviceName::Gpio => self.gpio.as_mut(),
            DeviceName::I2c => self.i2c.as_mut(),
        }
        .ok_or_else(|| format!("no {} in this run", d.backend()))
    }

    /// The vhost-user device QEMU gets for a backend.
    fn device(&self, d: DeviceName) -> Option<VhostUserDevice> {
        let b = match d {
            DeviceName::Gpio => self.gpio.as_ref(),
            DeviceName::I2c => self.i2c.as_ref(),
        }?;
        Some(VhostUserDevice {
            socket: b.socket.clone(),
            id: d.qemu_id().into(),
        })
    }

    /// Sets a line's input level through vhost-gpio's control socket.
    pub fn set_line(&self, line: &str, high: bool) -> Result<(), String> {
        ControlClient::connect(&self.ctl)
            .and_then(|mut c| {
                c.set_timeout(Some(Duration::from_secs(5)))?;
                c.set(line, high)
            })
            .map_err(|e| format!("control set {line} {}: {e}", u8::from(high)))
    }

    /// The image file of an EEPROM.
    pub fn image(&self, e: &Eeprom) -> PathBuf {
        self.images.join(e.image_name())
    }

    /// Stops both; returns (vhost-gpio log, vhost-i2c-eeprom log).
    fn stop(&mut self) -> (Option<String>, Option<String>) {
        (
            self.gpio.as_mut().map(Backend::stop),
            self.i2c.as_mut().map(Backend::stop),
        )
    }
}

/// Writes a newc cpio archive holding one file (mode 0644, owner root).
fn cpio_one(name: &str, data: &[u8]) -> Vec<u8> {
    fn entry(out: &mut Vec<u8>, ino: u32, mode: u32, name: &str, data: &[u8]) {
        let namesize = name.len() + 1;
        let header = format!(
            "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
            0, 0, 1, 0, data.len(), 0, 0, 0, 0, 0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    entry(&mut out, 1, 0o100644, name, data);
    entry(&mut out, 0, 0, "TRAILER!!!", &[]);
    out
}

/// Writes `out`: the variant's initramfs followed by an uncompressed cpio holding the step
/// list at [`STEPS_PATH`]. The kernel unpacks concatenated archives in order, a later file
/// replacing an earlier one; an uncompressed archive must start 4-byte aligned, so the first
/// one is padded with zeros, which the unpacker skips.
pub fn initrd_with_steps(base: &Path, script: &str, out: &Path) -> std::io::Result<()> {
    let mut data = std::fs::read(base)?;
    while !data.len().is_multiple_of(4) {
        data.push(0);
    }
    data.extend_from_slice(&cpio_one(STEPS_PATH, script.as_bytes()));
    // No fsync: QEMU reads it through the page cache, and it is gone with the run.
    std::fs::File::create(out)?.write_all(&data)
}

/// Stage 3: QEMU running the scenario on a variant, QMP connected.
#[derive(Debug)]
pub struct Guest {
    qemu: Qemu,
    qmp: QmpClient,
    console: Console,
    qemu_log: PathBuf,
    /// QEMU's version, from QMP.
    pub qemu_version: String,
    /// When the initramfs was written and QEMU spawned (the end of stage `initrd`).
    spawned: Instant,
    /// When [`follow`] first saw the guest reach each point of its run.
    pub milestones: Milestones,
}

/// When the host saw the guest reach each point of its run (to the console's poll interval).
#[derive(Clone, Copy, Debug, Default)]
pub struct Milestones {
    /// The first console line (the kernel's serial console started).
    pub first_line: Option<Instant>,
    /// The runner's first marker (the kernel booted into `/init`).
    pub runner_start: Option<Instant>,
    /// The runner's `done`.
    pub done: Option<Instant>,
}

impl Guest {
    /// Boots `variant` with the scenario's step list and the backends' devices.
    pub fn start(
        variant: &Variant,
        scenario: &Scenario,
        opts: &Options,
        dir: &RunDir,
        backends: &Backends,
    ) -> Result<Guest, RunError> {
        let initrd = dir.path("initrd.img");
        initrd_with_steps(&variant.initramfs(), &scenario.guest_script(), &initrd).map_err(io(
            format!("writing the run's initramfs {}", initrd.display()),
        ))?;
        let mut cfg = QemuConfig::new(&variant.bzimage(), &initrd, dir.dir(), &scenario.name);
        cfg.binary = opts.qemu.clone();
        cfg.accel = opts.accel;
        cfg.memory_mib = variant.memory_mib();
        cfg.gpio = backends.device(DeviceName::Gpio);
        cfg.i2c = backends.device(DeviceName::I2c);
        cfg.append.push_str(&format!(
            " vgn.timeout={} vgn.host_timeout={}",
            opts.guest_timeout.as_secs(),
            opts.run_timeout.as_secs()
        ));
        for w in &scenario.cmdline {
            cfg.append.push(' ');
            cfg.append.push_str(w);
        }
        if !opts.append.is_empty() {
            cfg.append.push(' ');
            cfg.append.push_str(&opts.append);
        }
        let qemu_log = dir.path("qemu.log");
        let spawned = Instant::now();
        let mut qemu = Qemu::spawn(&cfg, &qemu_log)?;
        let qmp_path = cfg.qmp.clone().unwrap_or_else(|| dir.path("qmp.sock"));
        let qemu_said = |source| RunError::Qmp {
            source,
            log: std::fs::read_to_string(&qemu_log)
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        let mut qmp =
            QmpClient::connect_while(&qmp_path, Duration::from_secs(20), || qemu.is_running())
                .map_err(qemu_said)?;
        let qemu_version = qmp.version().map_err(qemu_said)?;
        Ok(Guest {
            qemu,
            qmp,
            console: Console::new(&cfg.console),
            qemu_log,
            qemu_version,
            spawned,
            milestones: Milestones::default(),
        })
    }
}

/// The host side of a running guest, as the interpreter sees it.
struct RunHost<'a> {
    qmp: &'a mut QmpClient,
    backends: &'a mut Backends,
    /// Devices unplugged whose DEVICE_DELETED has not come yet, with the time of the request.
    unplugging: &'a mut BTreeMap<String, Instant>,
}

/// How long the guest gets to eject a device before a replug of it gives up.
const UNPLUG_TIMEOUT: Duration = Duration::from_secs(60);

impl RunHost<'_> {
    /// Before the device is added again: its deletion must be complete (QEMU refuses a
    /// second device with the id of one still being deleted).
    fn deleted(&mut self, d: DeviceName) -> Result<(), String> {
        let id = d.qemu_id();
        if let Some(asked) = self.unplugging.remove(id) {
            let left = UNPLUG_TIMEOUT.saturating_sub(asked.elapsed());
            self.qmp
                .wait_deleted(id, left)
                .map_err(|e| format!("device_del: {e}"))?;
            log::info!("unplugged {id} in {:?}", asked.elapsed());
        }
        Ok(())
    }

    /// Notes the deletions QEMU completed (one QMP round trip while any is pending).
    fn poll_deleted(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        let pending: Vec<String> = self.unplugging.keys().cloned().collect();
        for id in pending {
            match self.qmp.take_deleted(&id) {
                Ok(true) => {
                    if let Some(asked) = self.unplugging.remove(&id) {
                        log::info!("unplugged {id} in {:?}", asked.elapsed());
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    self.unplugging.remove(&id);
                    notes.push(format!("device_del {id}: {e}"));
                }
            }
        }
        notes
    }

    fn device(&self, d: DeviceName) -> Result<VhostUserDevice, String> {
        self.backends
            .device(d)
            .ok_or_else(|| format!("no {} in this run", d.backend()))
    }

    fn chardev_add(&mut self, dev: &VhostUserDevice) -> Result<(), String> {
        // The backend sees the old connection end and listens again; retry until it does.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.qmp.chardev_add_unix(&dev.chardev_id(), &dev.socket) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    log::debug!("chardev-add: {e}; retrying");
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn device_add(&mut self, d: DeviceName) -> Result<(), String> {
        let dev = self.device(d)?;
        self.qmp
            .device_add(d.qemu_model(), &dev.id, &[("chardev", &dev.chardev_id())])
            .map_err(|e| e.to_string())
    }
}

impl Host for RunHost<'_> {
    fn act(&mut self, action: &HostAction) -> Result<(), String> {
        match action {
            HostAction::DeviceDel { device } => {
                // The guest's next step waits for the effect; the console stays followed
                // meanwhile (a guest that oopses in the unplug is seen as such).
                let id = device.qemu_id();
                self.qmp
                    .device_del_request(id)
                    .map_err(|e| format!("device_del: {e}"))?;
                self.unplugging.insert(id.to_string(), Instant::now());
                Ok(())
            }
            HostAction::Replug { device } => {
                self.deleted(*device)?;
                let dev = self.device(*device)?;
                self.qmp
                    .chardev_remove(&dev.chardev_id())
                    .map_err(|e| format!("replug: {e}"))?;
                self.chardev_add(&dev).map_err(|e| format!("replug: {e}"))?;
                self.device_add(*device).map_err(|e| format!("replug: {e}"))
            }
            HostAction::ChardevRemove { device } => {
                self.deleted(*device)?;
                let dev = self.device(*device)?;
                self.qmp
                    .chardev_remove(&dev.chardev_id())
                    .map_err(|e| e.to_string())
            }
            HostAction::ChardevAdd { device } => {
                let dev = self.device(*device)?;
                self.chardev_add(&dev)
            }
            HostAction::DeviceAdd { device } => {
                self.deleted(*device)?;
                self.device_add(*device)
            }
            HostAction::SetLine { line, value } => self.backends.set_line(line, *value == 1),
            HostAction::KillBackend { device } => self.backends.backend(*device)?.kill(),
            HostAction::RestartBackend { device } => {
                let b = self.backends.backend(*device)?;
                if b.child.is_some() {
                    return Err(format!("{} is still running (kill-backend first)", b.name));
                }
                b.start().map_err(|e| e.to_string())
            }
            HostAction::WaitQmpEvent { event, timeout_s } => self
                .qmp
                .wait_event(event, Duration::from_secs(u64::from(*timeout_s)))
                .map(|_| ())
                .map_err(|e| e.to_string()),
            HostAction::Sleep { ms } => {
                thread::sleep(Duration::from_millis(u64::from(*ms)));
                Ok(())
            }
        }
    }

    fn image(&self, e: &Eeprom) -> PathBuf {
        self.backends.image(e)
    }
}

/// Stage 4: follows the console through the interpreter until the run ends; returns how.
pub fn follow(
    guest: &mut Guest,
    backends: &mut Backends,
    interp: &mut Interpreter,
    opts: &Options,
    console_log: &str,
) -> String {
    let mut seen = 0usize;
    let deadline = Instant::now() + opts.run_timeout;
    let mut last_line = Instant::now();
    let mut last_progress = Instant::now();
    let mut last_heartbeat: Option<Instant> = None;
    let mut oops_seen = false;
    let mut unplugging = BTreeMap::new();
    let result = loop {
        let alive = guest.qemu.is_running();
        if let Err(e) = guest.console.poll() {
            interp.notes.push(format!("reading the console: {e}"));
        }
        let lines: Vec<String> = guest.console.lines()[seen..].to_vec();
        seen += lines.len();
        let m = &mut guest.milestones;
        if !lines.is_empty() {
            m.first_line.get_or_insert_with(Instant::now);
        }
        if m.runner_start.is_none() && lines.iter().any(|l| is_runner_start(l)) {
            m.runner_start = Some(Instant::now());
        }
        let heartbeats = lines.iter().filter(|l| is_heartbeat(l)).count();
        if heartbeats > 0 {
            last_heartbeat = Some(Instant::now());
        }
        if lines.iter().any(|l| is_progress(l)) {
            last_progress = Instant::now();
        }
        if lines.len() > heartbeats {
            last_line = Instant::now();
            if !oops_seen && classify(&lines.join("\n")).fatal() {
                oops_seen = true;
            }
        }
        let mut host = RunHost {
            qmp: &mut guest.qmp,
            backends,
            unplugging: &mut unplugging,
        };
        for line in &lines {
            interp.line(line, &mut host);
        }
        if !host.unplugging.is_empty() && alive {
            let notes = host.poll_deleted();
            interp.notes.extend(notes);
        }
        if interp.done {
            // Nothing the run judges comes after `done`: the run ends here, without waiting
            // for the guest's power-off (which an oopsed kernel may never finish); teardown
            // stops QEMU.
            guest.milestones.done = Some(Instant::now());
            break "done".to_string();
        }
        if !alive {
            break format!("qemu exited before the runner finished (see {console_log})");
        }
        if oops_seen && !interp.done {
            if last_heartbeat.is_some_and(|t| t.elapsed() >= HEARTBEAT_LOST)
                && last_line.elapsed() >= HEARTBEAT_LOST
            {
                break format!(
                    "guest wedged after a kernel oops: no heartbeat for {} s",
                    HEARTBEAT_LOST.as_secs()
                );
            }
            if last_heartbeat.is_some()
                && last_progress.elapsed() >= NO_PROGRESS_AFTER_OOPS
                && last_line.elapsed() >= KERNEL_QUIET
            {
                break format!(
                    "guest stuck after a kernel oops: alive, but no step for {} s",
                    NO_PROGRESS_AFTER_OOPS.as_secs()
                );
            }
            if last_line.elapsed() >= SILENCE_AFTER_OOPS {
                break format!(
                    "guest silent for {} s after a kernel oops: hung",
                    SILENCE_AFTER_OOPS.as_secs()
                );
            }
        }
        if Instant::now() >= deadline {
            break format!("timeout after {:?}", opts.run_timeout);
        }
        thread::sleep(Duration::from_millis(50));
    };
    for id in unplugging.keys() {
        interp.notes.push(format!(
            "device_del {id}: no DEVICE_DELETED before the run ended"
        ));
    }
    result
}

/// Whether a console line is the runner's first marker.
fn is_runner_start(line: &str) -> bool {
    Marker::parse(line).is_some_and(|m| m.name == crate::console::RUNNER_START)
}

/// Whether a console line is the runner's heartbeat.
fn is_heartbeat(line: &str) -> bool {
    Marker::parse(line).is_some_and(|m| m.name == HEARTBEAT)
}

/// Whether a console line is the runner's progress: a marker other than the heartbeat, or a
/// KTAP line (not a kernel message).
fn is_progress(line: &str) -> bool {
    match Marker::parse(line) {
        Some(m) => m.name != HEARTBEAT,
        None => ["ok ", "not ok ", "# ", "1..", "KTAP "]
            .iter()
            .any(|p| line.starts_with(p)),
    }
}

/// What a finished run gives its caller.
#[derive(Debug, Default)]
pub struct Finished {
    /// QEMU's version.
    pub qemu: String,
    /// How the run ended.
    pub ended: String,
    /// Console findings and results.
    pub observations: Observations,
    /// Every marker the guest printed.
    pub markers: Vec<Marker>,
    /// The runner printed `done`.
    pub done: bool,
    /// KTAP results that were not ok, and an incomplete plan.
    pub ktap_problems: Vec<String>,
    /// Host-side problems.
    pub notes: Vec<String>,
    /// The needed features the guest found missing (the run is skipped).
    pub lacks: Vec<String>,
    /// The guest's check of the kernel's config, if it made one.
    pub kconfig: Option<crate::scenario::KconfigCheck>,
    /// The EEPROM images after the guest stopped, by EEPROM id.
    pub images: std::collections::BTreeMap<String, Vec<u8>>,
    /// Frames of the console's reports resolved to `file:line` with the variant's objects,
    /// and those left unresolved (a variant without line tables resolves none).
    pub frames: Resolved,
    /// Wall time of each stage in seconds (see [`STAGES`]).
    pub stage_seconds: BTreeMap<String, f64>,
}

/// Stage 5: stops QEMU and the backends, judges the pending writes, classifies the console,
/// resolves its reports' frames with `variant`'s objects (the console log stays as printed)
/// and keeps the logs.
pub fn teardown(
    guest: Guest,
    mut backends: Backends,
    mut interp: Interpreter,
    dir: &RunDir,
    variant: &Variant,
    ended: String,
) -> Finished {
    let Guest {
        mut qemu,
        qmp,
        mut console,
        qemu_log,
        qemu_version,
        ..
    } = guest;
    let mut clock = Stages::default();
    drop(qmp);
    if let Err(e) = qemu.kill() {
        interp.notes.push(format!("stopping QEMU: {e}"));
    }
    let host = ImagesOnly(&backends);
    interp.finish(&host);
    let images = interp
        .scenario()
        .devices
        .eeproms
        .iter()
        .filter_map(|e| Some((e.id.clone(), std::fs::read(backends.image(e)).ok()?)))
        .collect();
    let (gpio_log, i2c_log) = backends.stop();
    clock.lap("stop");
    let _ = console.poll();
    let text = console.text();
    let mut notes = std::mem::take(&mut interp.notes);
    let logs = [
        Some(("console", text.clone())),
        gpio_log.map(|l| ("vhost-gpio", l)),
        i2c_log.map(|l| ("vhost-i2c-eeprom", l)),
        Some((
            "qemu",
            std::fs::read_to_string(&qemu_log).unwrap_or_default(),
        )),
    ];
    for (what, content) in logs.into_iter().flatten() {
        notes.extend(dir.save(what, &content));
    }
    let mut observations = interp.observations;
    observations.console = classify(&live_console(&text));
    let frames =
        Symbolizer::for_variant(&variant.dir).resolve_splats(&mut observations.console.splats);
    clock.lap("judge");
    Finished {
        qemu: qemu_version,
        ended,
        observations,
        markers: std::mem::take(&mut interp.markers),
        done: interp.done,
        ktap_problems: crate::ktap::parse(&text).problems(),
        notes,
        lacks: std::mem::take(&mut interp.lacks),
        kconfig: interp.kconfig.take(),
        images,
        frames,
        stage_seconds: clock.seconds,
    }
}

/// The images of a stopped run, for judging writes after the guest is gone.
struct ImagesOnly<'a>(&'a Backends);

impl Host for ImagesOnly<'_> {
    fn act(&mut self, _: &HostAction) -> Result<(), String> {
        Err("the guest has stopped".into())
    }

    fn image(&self, e: &Eeprom) -> PathBuf {
        self.0.image(e)
    }
}

/// Runs the scenario on a variant through every stage. A harness error (a backend or QEMU
/// that did not start) is returned as such; everything after the guest started is a result.
pub fn run(
    variant: &Variant,
    scenario: &Scenario,
    opts: &Options,
    dir: &RunDir,
) -> Result<Finished, RunError> {
    let mut clock = Stages::default();
    let mut backends = Backends::start(scenario, opts, dir)?;
    clock.lap("backends");
    let mut guest = Guest::start(variant, scenario, opts, dir, &backends)?;
    clock.lap_at("initrd", guest.spawned);
    clock.lap("qemu");
    let mut interp = Interpreter::new(scenario);
    let ended = follow(
        &mut guest,
        &mut backends,
        &mut interp,
        opts,
        &dir.log_name("console"),
    );
    let m = guest.milestones;
    // Each point the guest reached ends a stage; the time after the last one goes to the
    // stage it was in when the run ended.
    for (stage, at) in [
        ("firmware", m.first_line),
        ("kernel", m.runner_start),
        ("scenario", m.done),
    ] {
        match at {
            Some(t) => clock.lap_at(stage, t),
            None => {
                clock.lap(stage);
                break;
            }
        }
    }
    let mut finished = teardown(guest, backends, interp, dir, variant, ended);
    finished.stage_seconds.extend(clock.seconds);
    Ok(finished)
}

/// The stages of a run in the order they happen, for [`Finished::stage_seconds`]:
/// - `backends`: the backends started, the host-held lines set;
/// - `initrd`: the run's initramfs written;
/// - `qemu`: QEMU started, QMP connected;
/// - `firmware`: to the first console line: the firmware, the kernel's decompression and
///   its early boot until the serial console starts;
/// - `kernel`: to the runner's first marker (the kernel's boot to `/init`);
/// - `scenario`: to the runner's `done` (or the run's end without it);
/// - `stop`: QEMU (still running: the run ends at `done`, before the guest powers off) and
///   the backends stopped, the EEPROM images read;
/// - `judge`: the console classified and symbolized, the logs kept;
/// - `other`: what the caller spends around [`run`] (the run directory made and removed,
///   the verdict), added by the caller.
pub const STAGES: &[&str] = &[
    "backends", "initrd", "qemu", "firmware", "kernel", "scenario", "stop", "judge", "other",
];

/// Wall time per stage of a run.
#[derive(Debug)]
struct Stages {
    last: Instant,
    seconds: BTreeMap<String, f64>,
}

impl Default for Stages {
    fn default() -> Self {
        Stages {
            last: Instant::now(),
            seconds: Default::default(),
        }
    }
}

impl Stages {
    /// Ends a stage now: the time since the last lap.
    fn lap(&mut self, stage: &str) {
        self.lap_at(stage, Instant::now());
    }

    /// Ends a stage at `at` (not before the last lap).
    fn lap_at(&mut self, stage: &str, at: Instant) {
        let at = at.max(self.last);
        let secs = (at - self.last).as_secs_f64();
        self.seconds
            .insert(stage.to_string(), (secs * 100.0).round() / 100.0);
        self.last = at;
    }
}

/// Console text without the runner's dmesg dump (the KERN_DEBUG messages the console did not
/// show live; older runners dumped everything, which repeated what the kernel printed live).
pub fn live_console(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_dump = false;
    for line in text.lines() {
        match Marker::parse(line).map(|m| m.name) {
            Some(n) if n == "dmesg-begin" => in_dump = true,
            Some(n) if n == "dmesg-end" => in_dump = false,
            _ if in_dump => {}
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dmesg_dump_is_not_classified_twice() {
        let text = "\
[ 1.0] WARNING: CPU: 0 PID: 1 at drivers/gpio/gpiolib.c:10 gpiod_free+0x1/0x2
VGN-MARK: dmesg-begin
[ 1.0] WARNING: CPU: 0 PID: 1 at drivers/gpio/gpiolib.c:10 gpiod_free+0x1/0x2
VGN-MARK: dmesg-end
VGN-MARK: done scenario=unbind
";
        let live = live_console(text);
        assert_eq!(classify(&live).splats.len(), 1);
        assert!(live.contains("VGN-MARK: done"));
    }

    #[test]
    fn the_heartbeat_is_told_from_progress() {
        assert!(is_heartbeat("VGN-MARK: alive"));
        assert!(is_heartbeat("[   12.5] x VGN-MARK: alive\r"));
        assert!(!is_heartbeat("VGN-MARK: alive-and-well"));
        assert!(!is_heartbeat("VGN-MARK: step 3 alive"));
        assert!(!is_heartbeat("alive"));
        assert!(crate::console::reserved_marker(HEARTBEAT));
        assert!(is_progress("VGN-MARK: step 3 wait-replug"));
        assert!(is_progress("not ok 15 wait-replug # timed out"));
        assert!(is_progress("# gpio_virtio refcnt 1"));
        assert!(!is_progress("VGN-MARK: alive"));
        assert!(!is_progress("[   19.9] clocksource: Long readout interval"));
    }

    #[test]
    fn the_step_list_is_appended_as_an_aligned_newc_archive() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.cpio.gz");
        std::fs::write(&base, b"\x1f\x8b12345").unwrap(); // 7 bytes: padded to 8
        let out = dir.path().join("initrd");
        initrd_with_steps(&base, "plan 1\n", &out).unwrap();
        let data = std::fs::read(&out).unwrap();
        assert_eq!(&data[..7], b"\x1f\x8b12345");
        assert_eq!(data[7], 0);
        let cpio = &data[8..];
        assert!(cpio.starts_with(b"070701"));
        let namesize =
            usize::from_str_radix(std::str::from_utf8(&cpio[94..102]).unwrap(), 16).unwrap();
        assert_eq!(namesize, STEPS_PATH.len() + 1);
        assert_eq!(&cpio[110..110 + STEPS_PATH.len()], STEPS_PATH.as_bytes());
        let filesize =
            usize::from_str_radix(std::str::from_utf8(&cpio[54..62]).unwrap(), 16).unwrap();
        assert_eq!(filesize, 7);
        let data_at = (110 + namesize).div_ceil(4) * 4;
        assert_eq!(&cpio[data_at..data_at + 7], b"plan 1\n");
        assert!(cpio.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(cpio.len() % 4, 0);
        // What cpio(1) itself reads from it.
        if let Ok(o) = Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(
                std::fs::File::open(&out)
                    .and_then(|_| {
                        let p = dir.path().join("only.cpio");
                        std::fs::write(&p, cpio)?;
                        std::fs::File::open(p)
                    })
                    .unwrap(),
            )
            .output()
        {
            if o.status.success() {
                assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), STEPS_PATH);
            }
        }
    }
}
