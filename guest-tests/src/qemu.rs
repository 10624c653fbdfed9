// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! QEMU for the guest tests: the command line (pure, tested) and the
//! process (own process group, killed with its parent, always stopped on
//! drop with a bounded wait).
//!
//! The machine is `pc` with memfd-backed shared memory (vhost-user needs
//! it), the serial console in a file, QMP on a Unix socket, and optional
//! vhost-user-gpio-pci / vhost-user-i2c-pci devices on client sockets.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for QEMU to go after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Errors running QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// The QEMU binary could not be started.
    #[error("starting {binary}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Creating QEMU's log file failed.
    #[error("creating {path}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for or signalling the process failed.
    #[error("waiting for QEMU (pid {pid})")]
    Wait {
        /// QEMU's pid.
        pid: u32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// QEMU did not exit within the bound after SIGKILL.
    #[error("QEMU (pid {pid}) did not exit within {}s of SIGKILL", .waited.as_secs())]
    Unkillable {
        /// QEMU's pid.
        pid: u32,
        /// How long we waited.
        waited: Duration,
    },
    /// `qemu --version` failed or printed nothing usable.
    #[error("cannot get the version of {binary}: {detail}")]
    Version {
        /// The binary.
        binary: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// The accelerator. KVM hangs under nested virtualisation on some hosts,
/// so TCG is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Accel {
    /// Software emulation.
    #[default]
    Tcg,
    /// Hardware virtualisation.
    Kvm,
}

impl Accel {
    /// The `-accel` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// A vhost-user device on a client socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostUserDevice {
    /// The backend's listening socket.
    pub socket: PathBuf,
    /// QEMU device id (QMP `device_del` takes it), e.g. `gpio0`.
    pub id: String,
}

impl VhostUserDevice {
    /// The chardev id used for this device.
    pub fn chardev_id(&self) -> String {
        format!("chr-{}", self.id)
    }
}

/// Everything that makes up a QEMU command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    /// The binary, `qemu-system-x86_64` by default.
    pub binary: PathBuf,
    /// The accelerator.
    pub accel: Accel,
    /// Guest memory in MiB (also the memfd backend's size).
    pub memory_mib: u32,
    /// The kernel image.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The kernel command line.
    pub append: String,
    /// Where the serial console is written.
    pub console: PathBuf,
    /// QMP socket (QEMU listens), if wanted.
    pub qmp: Option<PathBuf>,
    /// vhost-user-gpio-pci on this socket, if wanted.
    pub gpio: Option<VhostUserDevice>,
    /// vhost-user-i2c-pci on this socket, if wanted.
    pub i2c: Option<VhostUserDevice>,
    /// Extra arguments, appended last.
    pub extra: Vec<OsString>,
}

/// The default kernel command line before the scenario's own words. `no_timer_check`: under
/// TCG on a loaded host the IO-APIC timer check can miss its ticks and panic the boot ("IO-APIC +
/// timer doesn't work!"), seen here at load average 9; the check proves nothing about QEMU's
/// emulated timer. `pty.legacy_count=0`: no BSD pty pairs (`CONFIG_LEGACY_PTYS` makes 256 by
/// default, 512 devices registered at boot, which nothing here opens); measured 2026-12-02,
/// 0.36 s of a 2.2 s boot to the runner on 6.12-kref and 2.3 s of 13.7 s on 6.12-debug. A
/// kernel without legacy ptys passes the word on to init, which ignores it.
pub const BASE_APPEND: &str =
    "console=ttyS0 panic=-1 slub_debug=P no_timer_check pty.legacy_count=0";

impl QemuConfig {
    /// A configuration for a kernel and initramfs with the console and
    /// QMP socket in `run_dir`, scenario `scenario`, and no devices.
    pub fn new(kernel: &Path, initrd: &Path, run_dir: &Path, scenario: &str) -> Self {
        QemuConfig {
            binary: PathBuf::from("qemu-system-x86_64"),
            accel: Accel::Tcg,
            memory_mib: 256,
            kernel: kernel.to_path_buf(),
            initrd: initrd.to_path_buf(),
            append: format!("{BASE_APPEND} vgn.scenario={scenario}"),
            console: run_dir.join("console.log"),
            qmp: Some(run_dir.join("qmp.sock")),
            gpio: None,
            i2c: None,
            extra: Vec::new(),
        }
    }

    /// The arguments (without the binary).
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(OsString::from(s));
        let mem = format!("{}M", self.memory_mib);
        push("-nodefaults");
        push("-no-user-config");
        push("-display");
        push("none");
        push("-no-reboot");
        push("-accel");
        push(self.accel.as_str());
        push("-m");
        push(&mem);
        push("-object");
        push(&format!("memory-backend-memfd,id=mem,size={mem},share=on"));
        push("-machine");
        push("pc,memory-backend=mem");
        push("-smp");
        push("1");
        push("-chardev");
        push(&format!("file,id=con0,path={}", opt_path(&self.console)));
        push("-serial");
        push("chardev:con0");
        push("-monitor");
        push("none");
        if let Some(q) = &self.qmp {
            push("-qmp");
            push(&format!("unix:{},server=on,wait=off", opt_path(q)));
        }
        for (dev, model) in [
            (&self.gpio, "vhost-user-gpio-pci"),
            (&self.i2c, "vhost-user-i2c-pci"),
        ] {
            if let Some(d) = dev {
                push("-chardev");
                push(&format!(
                    "socket,id={},path={}",
                    d.chardev_id(),
                    opt_path(&d.socket)
                ));
                push("-device");
                push(&format!("{model},chardev={},id={}", d.chardev_id(), d.id));
            }
        }
        a.push("-kernel".into());
        a.push(self.kernel.clone().into());
        a.push("-initrd".into());
        a.push(self.initrd.clone().into());
        a.push("-append".into());
        a.push(self.append.clone().into());
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// A path inside a QEMU option value, where `,` must be doubled.
fn opt_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// The first line of `qemu --version`, e.g.
/// `QEMU emulator version 10.0.2 (Debian ...)`.
pub fn version(binary: &Path) -> Result<String, QemuError> {
    let err = |detail: String| QemuError::Version {
        binary: binary.to_path_buf(),
        detail,
    };
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(format!("exit status {}", out.status)));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .ok_or_else(|| err("empty output".to_owned()))
}

/// A running QEMU. Dropping it kills QEMU (bounded wait).
#[derive(Debug)]
pub struct Qemu {
    child: Child,
    pid: u32,
    started: Instant,
    status: Option<ExitStatus>,
    log: PathBuf,
}

impl Qemu {
    /// Starts QEMU with `cfg`; its stdout and stderr go to `log`.
    ///
    /// QEMU gets its own process group (a terminal's Ctrl-C goes to the
    /// harness, which stops it) and is killed by the kernel when the thread
    /// that spawned it exits, so it never outlives a crashed harness: spawn
    /// it from the thread that owns the returned value.
    pub fn spawn(cfg: &QemuConfig, log: &Path) -> Result<Qemu, QemuError> {
        let logf = File::create(log).map_err(|source| QemuError::Log {
            path: log.to_path_buf(),
            source,
        })?;
        let logf2 = logf.try_clone().map_err(|source| QemuError::Log {
            path: log.to_path_buf(),
            source,
        })?;
        let mut cmd = Command::new(&cfg.binary);
        cmd.args(cfg.args())
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf))
            .stderr(Stdio::from(logf2))
            .process_group(0);
        test_kit::testutil::die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|source| QemuError::Spawn {
            binary: cfg.binary.clone(),
            source,
        })?;
        log::debug!("qemu pid {}: {:?} {:?}", child.id(), cfg.binary, cfg.args());
        Ok(Qemu {
            pid: child.id(),
            child,
            started: Instant::now(),
            status: None,
            log: log.to_path_buf(),
        })
    }

    /// QEMU's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// When QEMU was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// QEMU's stdout/stderr log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status, if QEMU has exited.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>, QemuError> {
        if self.status.is_none() {
            self.status = self.child.try_wait().map_err(|source| QemuError::Wait {
                pid: self.pid,
                source,
            })?;
        }
        Ok(self.status)
    }

    /// Whether QEMU is still running (an error counts as not running).
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_status(), Ok(None))
    }

    /// Waits at most `timeout` for QEMU to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, QemuError> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_status()? {
                return Ok(Some(s));
            }
            if start.elapsed() >= timeout {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills QEMU (SIGKILL) unless it has exited, and reaps it within a bound.
    pub fn kill(&mut self) -> Result<ExitStatus, QemuError> {
        if let Some(s) = self.try_status()? {
            return Ok(s);
        }
        if let Err(source) = self.child.kill() {
            // It may have exited between try_wait and kill.
            if let Some(s) = self.try_status()? {
                return Ok(s);
            }
            return Err(QemuError::Wait {
                pid: self.pid,
                source,
            });
        }
        self.wait_timeout(KILL_WAIT)?.ok_or(QemuError::Unkillable {
            pid: self.pid,
            waited: KILL_WAIT,
        })
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            log::error!("stopping QEMU: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(a: &[OsString]) -> Vec<String> {
        a.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    fn after<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn default_command_line() {
        let c = QemuConfig::new(
            Path::new("/k/bzImage"),
            Path::new("/k/initramfs.cpio.gz"),
            Path::new("/run,x"),
            "boot",
        );
        let a = strs(&c.args());
        assert_eq!(after(&a, "-accel"), ["tcg"]);
        assert_eq!(
            after(&a, "-object"),
            ["memory-backend-memfd,id=mem,size=256M,share=on"]
        );
        assert_eq!(after(&a, "-machine"), ["pc,memory-backend=mem"]);
        assert_eq!(after(&a, "-m"), ["256M"]);
        // Commas in paths are doubled inside option values.
        assert_eq!(
            after(&a, "-chardev"),
            ["file,id=con0,path=/run,,x/console.log"]
        );
        assert_eq!(
            after(&a, "-qmp"),
            ["unix:/run,,x/qmp.sock,server=on,wait=off"]
        );
        assert_eq!(after(&a, "-kernel"), ["/k/bzImage"]);
        assert_eq!(after(&a, "-initrd"), ["/k/initramfs.cpio.gz"]);
        assert_eq!(
            after(&a, "-append"),
            ["console=ttyS0 panic=-1 slub_debug=P no_timer_check pty.legacy_count=0 vgn.scenario=boot"]
        );
        assert!(a.contains(&"-no-reboot".to_owned()));
        assert!(after(&a, "-device").is_empty());
    }

    #[test]
    fn vhost_user_devices() {
        let mut c = QemuConfig::new(Path::new("k"), Path::new("i"), Path::new("/r"), "irq");
        c.accel = Accel::Kvm;
        c.qmp = None;
        c.gpio = Some(VhostUserDevice {
            socket: PathBuf::from("/r/gpio.sock"),
            id: "gpio0".into(),
        });
        c.i2c = Some(VhostUserDevice {
            socket: PathBuf::from("/r/i2c.sock"),
            id: "i2c0".into(),
        });
        c.extra.push("-s".into());
        let a = strs(&c.args());
        assert_eq!(after(&a, "-accel"), ["kvm"]);
        assert!(after(&a, "-qmp").is_empty());
        assert_eq!(
            after(&a, "-chardev"),
            [
                "file,id=con0,path=/r/console.log",
                "socket,id=chr-gpio0,path=/r/gpio.sock",
                "socket,id=chr-i2c0,path=/r/i2c.sock"
            ]
        );
        assert_eq!(
            after(&a, "-device"),
            [
                "vhost-user-gpio-pci,chardev=chr-gpio0,id=gpio0",
                "vhost-user-i2c-pci,chardev=chr-i2c0,id=i2c0"
            ]
        );
        assert_eq!(a.last().map(String::as_str), Some("-s"));
    }

    #[test]
    fn spawn_failure_names_the_binary() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = QemuConfig::new(Path::new("k"), Path::new("i"), tmp.path(), "boot");
        c.binary = tmp.path().join("no-such-qemu");
        let e = Qemu::spawn(&c, &tmp.path().join("qemu.log")).unwrap_err();
        assert!(matches!(e, QemuError::Spawn { ref binary, .. } if binary == &c.binary));
    }

    #[test]
    fn process_is_killed_on_drop() {
        // A stand-in for QEMU that runs until killed and ignores its arguments.
        let tmp = tempfile::tempdir().unwrap();
        let fake = tmp.path().join("fake-qemu");
        std::fs::write(&fake, "#!/bin/sh\nexec sleep 1000\n").unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut c = QemuConfig::new(Path::new("k"), Path::new("i"), tmp.path(), "boot");
        c.binary = fake;
        let mut q = Qemu::spawn(&c, &tmp.path().join("qemu.log")).unwrap();
        assert!(q.is_running());
        let pid = q.pid();
        drop(q);
        // /proc/<pid> is gone once the process was reaped.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
