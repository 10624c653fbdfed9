// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The end-to-end reproduction: for each kernel variant and scenario, start vhost-gpio and
//! vhost-i2c-eeprom on fresh sockets, boot the guest in QEMU with both devices, act on the
//! guest runner's markers (hot-unplug, replug, raise a GPIO line), then classify the console,
//! judge the EEPROM on the host image and compare with the expected outcome.
//!
//! A guest that oopses or hangs is a result: the run ends at its timeout and is classified
//! like any other. Every process a run starts is stopped when the run ends.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use test_kit::testutil::ChildGuard;
use vhost_gpio::control::ControlClient;

use crate::classify::{classify, ConsoleFindings};
use crate::console::{Console, Marker};
use crate::expect::{Expectation, Expectations, Observed, WriteOutcome};
use crate::qemu::{Accel, Qemu, QemuConfig, VhostUserDevice};
use crate::qmp::QmpClient;
use crate::report::RunReport;
use crate::variants::Variant;

/// Length of the pattern the runner writes (its `PATLEN`).
pub const PATTERN_LEN: usize = 64;
/// The gpio device's QEMU id.
pub const GPIO_ID: &str = "gpio0";
/// The i2c device's QEMU id.
pub const I2C_ID: &str = "i2c0";
/// How long a guest that printed a fatal report (an oops) may stay silent before the run is
/// ended: such a guest is often wedged (the dead task held locks, or died with interrupts off).
pub const SILENCE_AFTER_OOPS: Duration = Duration::from_secs(20);
/// The simulated lines: the WP line (pulled up) and an input for the irq scenario.
pub const GPIO_LINES: &str = "wp:up,led,irq";

/// Errors that stop a run before it can be judged.
#[derive(Debug, thiserror::Error)]
pub enum ReproError {
    /// A temp directory or file could not be made.
    #[error("{what}: {source}")]
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
    #[error("{source}; QEMU said: {log}")]
    Qmp {
        /// The QMP error.
        #[source]
        source: crate::qmp::QmpError,
        /// What QEMU printed.
        log: String,
    },
}

/// How the reproduction runs.
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
    /// Write cycle time of the 24c32 at 0x50 in microseconds (default: the backend's).
    pub twr_us: Option<u32>,
    /// Extra words for the kernel command line.
    pub append: String,
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

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ReproError {
    let what = what.into();
    move |source| ReproError::Io { what, source }
}

/// Reads the first pattern-sized block of the EEPROM image.
fn image_head(image: &Path) -> Option<Vec<u8>> {
    let f = std::fs::File::open(image).ok()?;
    let mut buf = vec![0u8; PATTERN_LEN];
    f.read_exact_at(&mut buf, 0).ok()?;
    Some(buf)
}

/// Console text without the runner's dmesg dump, which repeats what the kernel printed live.
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

/// What the harness learnt from the markers of one run.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    refcnt: Option<i64>,
    irq_seen: Option<bool>,
    /// Write outcome by pattern tag (A first write, B after unplug, C after replug).
    writes: HashMap<String, WriteOutcome>,
    /// Tags the runner started writing.
    attempted: Vec<String>,
    /// Addresses i2cdetect found (eeprom scenario), as the runner printed them.
    i2cdetect: Option<String>,
    /// The names of the gpio chip's lines as the guest saw them.
    gpio_lines: Option<String>,
    /// The `bench` markers (bench scenario), in order.
    pub(crate) bench: Vec<Marker>,
    /// The EEPROM image at 0x50 after the guest stopped (bench scenario).
    pub(crate) image_at50: Option<Vec<u8>>,
    /// KTAP results the runner reported as not ok, and whether its plan was complete.
    pub(crate) ktap_problems: Vec<String>,
    pub(crate) done: bool,
    pub(crate) notes: Vec<String>,
}

impl Progress {
    fn judge(&mut self, tag: &str, images: &Images) {
        if self.writes.contains_key(tag) || !self.attempted.iter().any(|t| t == tag) {
            return;
        }
        let image = images.for_tag(tag);
        let outcome = match image_head(image) {
            Some(head) if head == pattern(tag) => WriteOutcome::Landed,
            _ => WriteOutcome::Blocked,
        };
        self.writes.insert(tag.to_string(), outcome);
    }

    fn write(&self, tag: &str) -> WriteOutcome {
        self.writes
            .get(tag)
            .copied()
            .unwrap_or(WriteOutcome::NotApplicable)
    }
}

/// The EEPROM images of a run: the 24c32 at 0x50 and the 24c02 at 0x51.
#[derive(Debug)]
struct Images {
    at50: PathBuf,
    at51: PathBuf,
}

impl Images {
    /// The runner writes pattern D to the 24c02, every other one to the 24c32.
    fn for_tag(&self, tag: &str) -> &Path {
        if tag == "D" {
            &self.at51
        } else {
            &self.at50
        }
    }
}

/// The paths of one run's private directory.
struct RunFiles {
    dir: tempfile::TempDir,
}

impl RunFiles {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn wait_for_path(p: &Path, timeout: Duration) -> bool {
    test_kit::testutil::wait_until(timeout, || p.exists().then_some(())).is_some()
}

fn start_backend(
    name: &'static str,
    binary: &Path,
    args: &[String],
    socket: &Path,
) -> Result<ChildGuard, ReproError> {
    let mut cmd = Command::new(binary);
    cmd.args(args).env("RUST_LOG", "info");
    let mut child = ChildGuard::spawn(cmd).map_err(io(format!("starting {}", binary.display())))?;
    let waited = Duration::from_secs(10);
    if !wait_for_path(socket, waited) {
        let _ = child.kill9();
        return Err(ReproError::Backend {
            name,
            socket: socket.to_path_buf(),
            waited,
            log: child.log(),
        });
    }
    Ok(child)
}

/// Replug: close the old chardev, open a new one to the (re-listening) backend, add the device.
fn replug(qmp: &mut QmpClient, dev: &VhostUserDevice) -> Result<(), String> {
    let chardev = dev.chardev_id();
    qmp.chardev_remove(&chardev).map_err(|e| e.to_string())?;
    // The backend sees the connection end and listens again; retry until it does.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match qmp.chardev_add_unix(&chardev, &dev.socket) {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                log::debug!("chardev-add: {e}; retrying");
                thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    qmp.device_add("vhost-user-gpio-pci", &dev.id, &[("chardev", &chardev)])
        .map_err(|e| e.to_string())
}

/// Runs one kernel variant in one scenario and judges it.
pub fn run_one(
    variant: &Variant,
    scenario: &str,
    expectation: Option<&Expectation>,
    opts: &Options,
) -> RunReport {
    let start = Instant::now();
    let stem = format!("{}--{scenario}", variant.name);
    let console_name = format!("{stem}.console.log");
    let mut report = RunReport::new(&variant.name, scenario, &console_name);
    let result = drive(variant, scenario, opts, &stem, &mut report);
    let (findings, progress) = match result {
        Ok(x) => x,
        Err(e) => {
            report.ended = format!("harness error: {e}");
            (ConsoleFindings::default(), Progress::default())
        }
    };
    report.splats = findings.splats;
    report.still_requested = findings.still_requested;
    report.backing_chip_gone = findings.backing_chip_gone;
    report.backing_chip_gone_by = findings.backing_chip_gone_by;
    report.gpio_virtio_refcnt = progress.refcnt;
    report.eeprom_write = progress.write("A");
    report.eeprom_write_after_unplug = progress.write("B");
    report.eeprom_write_after_replug = progress.write("C");
    report.irq_seen = progress.irq_seen;
    report.eeprom2_write = progress.write("D");
    report.eeprom_write_wp_asserted = progress.write("E");
    report.i2cdetect = progress.i2cdetect.clone();
    report.gpio_lines = progress.gpio_lines.clone();
    report.seconds = start.elapsed().as_secs_f64();
    match expectation {
        None => {
            report.mismatches = vec!["no expectation for this run in expected.toml".into()];
            report.why = report.mismatches[0].clone();
        }
        Some(e) if report.ended.starts_with("harness error") => {
            report.mismatches = vec![report.ended.clone()];
            report.why = e.why.clone();
        }
        Some(e) => {
            report.mismatches = e.compare(&Observed {
                splats: &report.splats,
                gpio_virtio_refcnt: report.gpio_virtio_refcnt,
                eeprom_write: report.eeprom_write,
                eeprom_write_after_unplug: report.eeprom_write_after_unplug,
                eeprom_write_after_replug: report.eeprom_write_after_replug,
                irq_seen: report.irq_seen,
                still_requested: report.still_requested,
                backing_chip_gone: report.backing_chip_gone,
                eeprom2_write: report.eeprom2_write,
                eeprom_write_wp_asserted: report.eeprom_write_wp_asserted,
                i2cdetect: report.i2cdetect.as_deref(),
                gpio_lines: report.gpio_lines.as_deref(),
            });
            report.expected = report.mismatches.is_empty();
            report.why = e.why.clone();
        }
    }
    if !progress.notes.is_empty() {
        report.why = format!("{} [harness: {}]", report.why, progress.notes.join("; "));
    }
    report
}

/// Starts everything, follows the guest, stops everything. Returns the console findings.
pub(crate) fn drive(
    variant: &Variant,
    scenario: &str,
    opts: &Options,
    stem: &str,
    report: &mut RunReport,
) -> Result<(ConsoleFindings, Progress), ReproError> {
    let files = RunFiles {
        dir: tempfile::Builder::new()
            .prefix("vgn-run-")
            .tempdir()
            .map_err(io("creating the run directory"))?,
    };
    let images = Images {
        at50: files.path("eeprom-24c32.img"),
        at51: files.path("eeprom-24c02.img"),
    };
    let wp = files.path("wp.state");
    let gpio_sock = files.path("gpio.sock");
    let i2c_sock = files.path("i2c.sock");
    let ctl_sock = files.path("gpio.ctl");

    let s = |p: &Path| p.display().to_string();
    let mut gpio = start_backend(
        "vhost-gpio",
        &opts.vhost_gpio,
        &[
            "--socket-path".into(),
            s(&gpio_sock),
            "--lines".into(),
            GPIO_LINES.into(),
            "--wp-line".into(),
            "wp".into(),
            "--wp-state".into(),
            s(&wp),
            "--control-socket".into(),
            s(&ctl_sock),
        ],
        &gpio_sock,
    )?;
    let mut i2c = start_backend(
        "vhost-i2c-eeprom",
        &opts.vhost_i2c,
        &[
            "--socket-path".into(),
            s(&i2c_sock),
            "--eeprom".into(),
            format!(
                "model=24c32,addr=0x50,file={}{}",
                s(&images.at50),
                opts.twr_us
                    .map(|t| format!(",twr-us={t}"))
                    .unwrap_or_default()
            ),
            "--eeprom".into(),
            format!("model=24c02,addr=0x51,file={}", s(&images.at51)),
            "--wp-state".into(),
            s(&wp),
        ],
        &i2c_sock,
    )?;

    if scenario == "eeprom" {
        // Nothing in the guest drives WP in this scenario (the EEPROMs come from sysfs
        // new_device, with no GPIO lookup): the host holds it low, then asserts it.
        if !wait_for_path(&ctl_sock, Duration::from_secs(10)) {
            return Err(ReproError::Backend {
                name: "vhost-gpio",
                socket: ctl_sock.clone(),
                waited: Duration::from_secs(10),
                log: gpio.log(),
            });
        }
        set_line(&ctl_sock, "wp", false, &mut Vec::new());
    }
    let mut cfg = QemuConfig::new(
        &variant.bzimage(),
        &variant.initramfs(),
        files.dir.path(),
        scenario,
    );
    cfg.binary = opts.qemu.clone();
    cfg.accel = opts.accel;
    let gpio_dev = VhostUserDevice {
        socket: gpio_sock.clone(),
        id: GPIO_ID.into(),
    };
    cfg.gpio = Some(gpio_dev.clone());
    cfg.i2c = Some(VhostUserDevice {
        socket: i2c_sock.clone(),
        id: I2C_ID.into(),
    });
    let guest_timeout = opts.guest_timeout.as_secs();
    cfg.append.push_str(&format!(
        " vgn.timeout={guest_timeout} vgn.host_timeout={}",
        opts.run_timeout.as_secs()
    ));
    if !opts.append.is_empty() {
        cfg.append.push(' ');
        cfg.append.push_str(&opts.append);
    }
    let qemu_log = files.path("qemu.log");
    let mut qemu = Qemu::spawn(&cfg, &qemu_log)?;
    let qmp_path = cfg.qmp.clone().unwrap_or_else(|| files.path("qmp.sock"));
    let qemu_said = |source| {
        let log = std::fs::read_to_string(&qemu_log).unwrap_or_default();
        ReproError::Qmp {
            source,
            log: log.trim().to_string(),
        }
    };
    let mut qmp =
        QmpClient::connect_while(&qmp_path, Duration::from_secs(20), || qemu.is_running())
            .map_err(qemu_said)?;
    report.qemu = qmp.version().map_err(qemu_said)?;

    let mut console = Console::new(&cfg.console);
    let mut seen = 0usize;
    let mut progress = Progress::default();
    let deadline = Instant::now() + opts.run_timeout;
    let mut done_at: Option<Instant> = None;
    let mut last_line = Instant::now();
    let mut oops_seen = false;
    report.ended = loop {
        let alive = qemu.is_running();
        if let Err(e) = console.poll() {
            progress.notes.push(format!("reading the console: {e}"));
        }
        let lines: Vec<String> = console.lines()[seen..].to_vec();
        seen += lines.len();
        if !lines.is_empty() {
            last_line = Instant::now();
            if !oops_seen && classify(&lines.join("\n")).fatal() {
                oops_seen = true;
            }
        }
        for line in &lines {
            if line.starts_with("# writing pattern ") {
                if let Some(tag) = line.split_whitespace().nth(3) {
                    progress.attempted.push(tag.to_string());
                }
            }
            let Some(m) = Marker::parse(line) else {
                continue;
            };
            on_marker(&m, &mut progress, &mut qmp, &gpio_dev, &ctl_sock, &images);
        }
        if progress.done && done_at.is_none() {
            done_at = Some(Instant::now());
        }
        if !alive {
            break if progress.done {
                "done".to_string()
            } else {
                format!(
                    "qemu exited before the runner finished (see {})",
                    report.console_log
                )
            };
        }
        if let Some(t) = done_at {
            // The runner powers off right after `done`; give QEMU a moment to exit.
            if t.elapsed() > Duration::from_secs(15) {
                break "done (QEMU did not exit after power-off)".to_string();
            }
        }
        if oops_seen && !progress.done && last_line.elapsed() >= SILENCE_AFTER_OOPS {
            break format!(
                "guest silent for {} s after a kernel oops: hung",
                SILENCE_AFTER_OOPS.as_secs()
            );
        }
        if Instant::now() >= deadline {
            break format!("timeout after {:?}", opts.run_timeout);
        }
        thread::sleep(Duration::from_millis(50));
    };
    drop(qmp);
    if let Err(e) = qemu.kill() {
        progress.notes.push(format!("stopping QEMU: {e}"));
    }
    for tag in ["A", "B", "C", "D", "E"] {
        progress.judge(tag, &images);
    }
    if scenario == "bench" {
        progress.image_at50 = std::fs::read(&images.at50).ok();
    }
    let _ = gpio.terminate(Duration::from_secs(5));
    let _ = i2c.terminate(Duration::from_secs(5));

    // Keep the logs beside the report.
    let _ = console.poll();
    let text = console.text();
    let save = |name: String, content: &str| {
        let _ = std::fs::write(opts.out_dir.join(name), content);
    };
    save(format!("{stem}.console.log"), &text);
    progress.ktap_problems = crate::ktap::parse(&text).problems();
    save(format!("{stem}.vhost-gpio.log"), &gpio.log());
    save(format!("{stem}.vhost-i2c-eeprom.log"), &i2c.log());
    save(
        format!("{stem}.qemu.log"),
        &std::fs::read_to_string(&qemu_log).unwrap_or_default(),
    );
    Ok((classify(&live_console(&text)), progress))
}

/// Sets a line's input level through vhost-gpio's control socket; problems go to `notes`.
fn set_line(ctl_sock: &Path, line: &str, high: bool, notes: &mut Vec<String>) {
    let result = ControlClient::connect(ctl_sock).and_then(|mut c| {
        c.set_timeout(Some(Duration::from_secs(5)))?;
        c.set(line, high)
    });
    if let Err(e) = result {
        notes.push(format!("control set {line} {}: {e}", u8::from(high)));
    }
}

fn on_marker(
    m: &Marker,
    progress: &mut Progress,
    qmp: &mut QmpClient,
    gpio_dev: &VhostUserDevice,
    ctl_sock: &Path,
    images: &Images,
) {
    match m.name.as_str() {
        "ready-for-unplug" => match qmp.device_del(&gpio_dev.id, Duration::from_secs(60)) {
            Ok(t) => log::info!("unplugged {} in {t:?}", gpio_dev.id),
            Err(e) => progress.notes.push(format!("device_del: {e}")),
        },
        "ready-for-replug" => {
            if let Err(e) = replug(qmp, gpio_dev) {
                progress.notes.push(format!("replug: {e}"));
            }
        }
        "irq-armed" => {
            let line = m.field("line").unwrap_or("irq");
            set_line(ctl_sock, line, false, &mut progress.notes);
            set_line(ctl_sock, line, true, &mut progress.notes);
        }
        "ready-for-wp" => set_line(ctl_sock, "wp", true, &mut progress.notes),
        "wrote" => {
            if let Some(tag) = m.field("pattern") {
                progress.judge(tag, images);
            }
        }
        "write-result" => {
            if let Some(tag) = m.field("pattern") {
                progress.judge(tag, images);
            }
        }
        "write-after-unplug" => progress.judge("B", images),
        "write-after-replug" => progress.judge("C", images),
        "i2cdetect" => progress.i2cdetect = m.field("found").map(str::to_string),
        "gpio-lines" => progress.gpio_lines = m.field("names").map(str::to_string),
        "refcnt" => {
            progress.refcnt = m.field("gpio_virtio").and_then(|v| v.parse().ok());
        }
        "irq-result" => {
            progress.irq_seen = Some(m.field("events").is_some());
        }
        "bench" => progress.bench.push(m.clone()),
        "done" => progress.done = true,
        _ => {}
    }
}

/// Runs every (variant, scenario) pair, `opts.jobs` at a time, reporting progress on stderr.
pub fn run_all(
    variants: &[Variant],
    scenarios: &[String],
    expectations: &Expectations,
    opts: &Options,
) -> Vec<RunReport> {
    let work: Vec<(Variant, String)> = variants
        .iter()
        .flat_map(|v| scenarios.iter().map(move |s| (v.clone(), s.clone())))
        .collect();
    let total = work.len();
    let queue = Arc::new(Mutex::new(work.into_iter().enumerate().collect::<Vec<_>>()));
    let results = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..opts.jobs.max(1))
        .map(|_| {
            let queue = queue.clone();
            let results = results.clone();
            let opts = opts.clone();
            let expectations = expectations.clone();
            thread::spawn(move || loop {
                let next = queue.lock().map(|mut q| q.pop()).ok().flatten();
                let Some((i, (v, s))) = next else { break };
                eprintln!("[reproduce] start {} {s}", v.name);
                let r = run_one(&v, &s, expectations.get(&v.name, &s), &opts);
                eprintln!(
                    "[reproduce] {}/{total} {} {s}: {} in {:.0} s ({:.0} s elapsed){}",
                    results.lock().map(|r| r.len() + 1).unwrap_or(0),
                    v.name,
                    if r.expected {
                        "as expected"
                    } else {
                        "UNEXPECTED"
                    },
                    r.seconds,
                    started.elapsed().as_secs_f64(),
                    if r.expected {
                        String::new()
                    } else {
                        format!(": {}", r.mismatches.join("; "))
                    }
                );
                if let Ok(mut res) = results.lock() {
                    res.push((i, r));
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let mut out = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_matches_the_runner() {
        // What `make_pattern A` in guest-tests/guest/init writes, computed with sha256sum.
        let p = pattern("A");
        assert_eq!(p.len(), PATTERN_LEN);
        assert!(p.starts_with(b"VGN-A-06f961b802bc46ee168555f066d28f4f.."));
        assert_eq!(&p[38..], &[b'.'; 26][..]);
        assert_ne!(pattern("A"), pattern("B"));
    }

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
    fn writes_are_judged_on_the_image_once() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("img");
        let images = Images {
            at50: image.clone(),
            at51: dir.path().join("img2"),
        };
        std::fs::write(&image, vec![0xffu8; 4096]).unwrap();
        std::fs::write(&images.at51, vec![0xffu8; 256]).unwrap();
        let mut p = Progress::default();
        // Not attempted: not judged.
        p.judge("A", &images);
        assert_eq!(p.write("A"), WriteOutcome::NotApplicable);
        p.attempted.push("A".into());
        let mut img = pattern("A");
        img.resize(4096, 0xff);
        std::fs::write(&image, &img).unwrap();
        p.judge("A", &images);
        assert_eq!(p.write("A"), WriteOutcome::Landed);
        p.attempted.push("B".into());
        p.judge("B", &images);
        assert_eq!(p.write("B"), WriteOutcome::Blocked);
        // Judged once: a later change does not rewrite history.
        let mut img = pattern("B");
        img.resize(4096, 0xff);
        std::fs::write(&image, &img).unwrap();
        p.judge("B", &images);
        assert_eq!(p.write("B"), WriteOutcome::Blocked);
        // Pattern D goes to the second EEPROM.
        p.attempted.push("D".into());
        let mut img2 = pattern("D");
        img2.resize(256, 0xff);
        std::fs::write(&images.at51, &img2).unwrap();
        p.judge("D", &images);
        assert_eq!(p.write("D"), WriteOutcome::Landed);
    }
}
