// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Helpers for tests that start the real backend binaries: a guard that always stops the
//! process it started, the path of a workspace binary, and polling with a deadline.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{kill_process_group, set_parent_process_death_signal, Pid, Signal};

/// Makes the kernel SIGKILL the process `cmd` starts when the thread that starts it exits, so
/// that it never outlives a harness that is itself killed (by `timeout`, say) before it can
/// clean up. Start it from the thread that owns it for the process's whole life.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec. It makes one prctl(2) system
    // call through rustix's raw syscall wrapper: async-signal-safe, no allocation, no lock,
    // and it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            set_parent_process_death_signal(Some(Signal::KILL)).map_err(std::io::Error::from)
        });
    }
}

/// A child process in its own process group, killed (SIGKILL to the whole group) and reaped
/// when dropped, and by the kernel if the thread that started it dies first
/// ([`die_with_parent`]). Its stdout and stderr go to a log file in a private temp dir.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
    reaped: Option<ExitStatus>,
}

impl ChildGuard {
    /// Starts `cmd` in a new process group, output to a log file.
    pub fn spawn(mut cmd: Command) -> io::Result<ChildGuard> {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new().prefix("child-log-").tempdir()?;
        let log_path = dir.path().join("output.log");
        let log = File::create(&log_path)?;
        die_with_parent(&mut cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?;
        Ok(ChildGuard {
            child,
            log_path,
            _dir: dir,
            reaped: None,
        })
    }

    /// The child's pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal_group(&self, sig: Signal) -> io::Result<()> {
        let raw = i32::try_from(self.child.id())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let pid = Pid::from_raw(raw)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid 0"))?;
        match kill_process_group(pid, sig) {
            Ok(()) => Ok(()),
            // Already gone.
            Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// SIGKILL to the group, then reap.
    pub fn kill9(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.reaped {
            return Ok(s);
        }
        self.signal_group(Signal::KILL)?;
        let s = self.child.wait()?;
        self.reaped = Some(s);
        Ok(s)
    }

    /// SIGTERM to the group, wait up to `timeout`, then SIGKILL. Returns the exit status if the
    /// child ended on SIGTERM, `None` if it had to be killed.
    pub fn terminate(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.reaped {
            return Ok(Some(s));
        }
        self.signal_group(Signal::TERM)?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.kill9()?;
        Ok(None)
    }

    /// The exit status if the child has ended.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.reaped {
            return Ok(Some(s));
        }
        let s = self.child.try_wait()?;
        if s.is_some() {
            self.reaped = s;
        }
        Ok(s)
    }

    /// What the child printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            let _ = self.signal_group(Signal::KILL);
            let _ = self.child.wait();
        }
    }
}

/// A command that runs `program args...` through `sh -c` after the shell `prelude` (say
/// `umask 000; ulimit -n 40`), so that the program starts with that process state.
pub fn with_shell_prelude(prelude: &str, program: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{prelude}; exec \"$0\" \"$@\""))
        .arg(program);
    cmd
}

/// A command that starts `program` the way systemd's socket activation does: `listener`
/// as file descriptor 3, `LISTEN_FDS=1`, and `LISTEN_PID` the program's own pid.
pub fn socket_activated(program: &Path, listener: &std::os::unix::net::UnixListener) -> Command {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    // The shell's pid is the program's: it execs it.
    let mut cmd = with_shell_prelude("LISTEN_PID=$$; export LISTEN_PID", program);
    cmd.env("LISTEN_FDS", "1");
    let fd = listener.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe system calls (dup2, fcntl) on descriptors of the child; it
    // allocates nothing and touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                // Already there: only clear close-on-exec.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// What a systemd socket-activated template unit pair runs, read from the unit files the
/// way systemd reads them (enough of it for this project's units): `%i` the instance, `%t`
/// and `%S` the runtime and state directories (both `root` here), `$VAR` split into words
/// from `Environment=`.
#[derive(Debug)]
pub struct SystemdUnit {
    /// The socket's `ListenStream=` path.
    pub listen: PathBuf,
    /// The service's `ExecStart=` program.
    pub program: PathBuf,
    /// The service's `ExecStart=` arguments after the program.
    pub args: Vec<String>,
}

impl SystemdUnit {
    /// Reads `socket` and `service` for instance `instance`, directories under `root`.
    /// Panics on a unit it cannot read: this is for tests only.
    pub fn load(socket: &Path, service: &Path, instance: &str, root: &Path) -> SystemdUnit {
        let root = root.display().to_string();
        let expand = |s: &str| {
            s.replace("%i", instance)
                .replace("%t", &root)
                .replace("%S", &root)
                .replace("%%", "%")
        };
        let read = |p: &Path| {
            std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        };
        let value = |text: &str, key: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| l.trim().strip_prefix(key))
                .map(|v| expand(v.trim().trim_matches('"')))
                .collect()
        };
        let socket_text = read(socket);
        let listen = value(&socket_text, "ListenStream=")
            .pop()
            .expect("the socket unit has ListenStream=");
        let service_text = read(service);
        let env: Vec<(String, String)> = value(&service_text, "Environment=")
            .iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let exec = value(&service_text, "ExecStart=")
            .pop()
            .expect("the service unit has ExecStart=");
        let mut words = exec.split_whitespace();
        let program = PathBuf::from(words.next().expect("ExecStart= names a program"));
        let mut args = Vec::new();
        for word in words {
            match word.strip_prefix('$') {
                Some(var) => {
                    let (_, v) = env
                        .iter()
                        .find(|(k, _)| k == var)
                        .unwrap_or_else(|| panic!("${var} has no Environment= default"));
                    args.extend(v.split_whitespace().map(str::to_string));
                }
                None => args.push(word.to_string()),
            }
        }
        SystemdUnit {
            listen: PathBuf::from(listen),
            program,
            args,
        }
    }

    /// The template pair `NAME@.socket` + `NAME@.service` a socket-activation test starts,
    /// instance `test0`, directories under `root`.
    ///
    /// By default the repository's `dist/systemd` units, and `program` is `built` (the
    /// program cargo built). With `VGN_UNIT_DIR` set (the package test sets it to the
    /// installed `/usr/lib/systemd/system`), the units in that directory and the program
    /// their `ExecStart=` names: the installed binary, started as systemd would start it.
    pub fn for_activation(name: &str, built: &Path, root: &Path) -> SystemdUnit {
        let (dir, installed) = match std::env::var_os("VGN_UNIT_DIR") {
            Some(dir) => (PathBuf::from(dir), true),
            None => (
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd"),
                false,
            ),
        };
        let mut unit = SystemdUnit::load(
            &dir.join(format!("{name}@.socket")),
            &dir.join(format!("{name}@.service")),
            "test0",
            root,
        );
        if !installed {
            unit.program = built.to_path_buf();
        }
        eprintln!(
            "{} with the units in {}",
            unit.program.display(),
            dir.display()
        );
        unit
    }
}

/// Open file descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Runs `cmd` under a [`ChildGuard`] for at most `timeout`: its exit status (`None` if it
/// was still running, and was then killed) and its output.
pub fn run_bounded(cmd: Command, timeout: Duration) -> io::Result<(Option<ExitStatus>, String)> {
    let mut g = ChildGuard::spawn(cmd)?;
    let status = wait_until(timeout, || g.try_wait().ok().flatten());
    Ok((status, g.log()))
}

/// Polls `f` every 5 ms until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until something listens on the Unix socket at `path`.
///
/// It does so by connecting and closing: a vhost-user backend sees that as a frontend that
/// came and went (and starts over with a fresh device). Where that matters, wait for the
/// socket file to exist instead.
pub fn wait_for_socket(path: &Path, timeout: Duration) -> bool {
    wait_until(timeout, || {
        std::os::unix::net::UnixStream::connect(path)
            .ok()
            .map(|_| ())
    })
    .is_some()
}

/// Whether a Unix stream socket bound at `path` is listening, read from `/proc/net/unix`
/// (without connecting, which a vhost-user backend would see as a frontend that came and
/// went). Where that table cannot be read, or cannot name `path` in one word, whether `path`
/// exists.
pub fn listening(path: &Path) -> bool {
    // __SO_ACCEPTCON in the Flags column: listen(2) was called.
    const ACCEPTCON: u32 = 1 << 16;
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return path.exists();
    };
    let Some(path) = path.to_str().filter(|p| !p.contains(char::is_whitespace)) else {
        return path.exists();
    };
    table.lines().skip(1).any(|line| {
        // Num RefCount Protocol Flags Type St Inode Path
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() == 8
            && cols[7] == path
            && u32::from_str_radix(cols[3], 16).is_ok_and(|f| f & ACCEPTCON != 0)
    })
}

/// The last 40 lines of `log`.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The permission bits of the file at `path`.
pub fn file_mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The environment variable `name` as a number, `default` if it is unset or not a number.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The path of a binary of this workspace, `target/<profile>/NAME`, next to the running test
/// executable. If it is not there (the test runs without its package having been built), it
/// is built first with `$CARGO build --bin NAME`.
///
/// Panics if it cannot be found or built: this is for tests only.
pub fn cargo_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("test executable has no parent directory")
        .to_path_buf();
    let bin = profile_dir.join(name);
    if bin.is_file() {
        return bin;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = profile_dir
        .parent()
        .expect("profile directory has no parent")
        .to_path_buf();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--bin")
        .arg(name)
        .arg("--target-dir")
        .arg(&target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("running cargo build");
    assert!(status.success(), "cargo build --bin {name} failed");
    assert!(bin.is_file(), "{} missing after build", bin.display());
    bin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_kills_the_whole_group_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("sleep 30 & echo $! > {}; wait", pidfile.display()));
        let guard = ChildGuard::spawn(cmd).unwrap();
        let grandchild: i32 = wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
        .expect("grandchild started");
        drop(guard);
        let gone = wait_until(Duration::from_secs(5), || {
            let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).ok();
            // Gone, or a zombie waiting for init.
            match stat {
                None => Some(()),
                Some(s) if s.split_whitespace().nth(2) == Some("Z") => Some(()),
                Some(_) => None,
            }
        });
        assert!(gone.is_some(), "grandchild {grandchild} survived the guard");
    }

    #[test]
    fn terminate_reports_a_clean_exit_and_log_has_output() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("echo hello; trap 'exit 3' TERM; while :; do sleep 0.01; done");
        let mut g = ChildGuard::spawn(cmd).unwrap();
        assert!(wait_until(Duration::from_secs(5), || g
            .log()
            .contains("hello")
            .then_some(()))
        .is_some());
        let s = g.terminate(Duration::from_secs(5)).unwrap();
        assert_eq!(s.and_then(|s| s.code()), Some(3));
    }

    #[test]
    fn a_guarded_child_dies_with_the_thread_that_started_it() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let p2 = pidfile.clone();
        // Start the child from a thread that then exits without dropping the guard (whose log
        // directory is then ours to remove).
        let log_dir = thread::spawn(move || {
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(format!("echo $$ > {}; exec sleep 30", p2.display()));
            let g = ChildGuard::spawn(cmd).unwrap();
            // The shell creates the file before `echo` writes to it: wait for the whole line.
            wait_until(Duration::from_secs(5), || {
                std::fs::read_to_string(&p2)
                    .ok()
                    .filter(|s| s.ends_with('\n'))
                    .map(|_| ())
            })
            .unwrap();
            let log_dir = g._dir.path().to_path_buf();
            std::mem::forget(g);
            log_dir
        })
        .join()
        .unwrap();
        std::fs::remove_dir_all(&log_dir).unwrap();
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = wait_until(Duration::from_secs(5), || {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => Some(()),
                Ok(s) if s.split_whitespace().nth(2) == Some("Z") => Some(()),
                Ok(_) => None,
            }
        });
        assert!(
            gone.is_some(),
            "child {pid} outlived the thread that started it"
        );
    }

    #[test]
    fn listening_sees_a_listener_and_not_a_left_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        assert!(!listening(&path));
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(listening(&path));
        drop(listener);
        assert!(path.exists());
        assert!(!listening(&path));
    }

    #[test]
    fn tail_keeps_the_last_40_lines() {
        let log: String = (0..50).map(|i| format!("{i}\n")).collect();
        let t = tail(&log);
        assert_eq!(t.lines().count(), 40);
        assert!(t.starts_with("10\n") && t.ends_with("49"));
        assert_eq!(tail("a\nb"), "a\nb");
    }

    #[test]
    fn wait_until_gives_up() {
        assert_eq!(wait_until(Duration::from_millis(20), || None::<()>), None);
        assert_eq!(wait_until(Duration::from_millis(20), || Some(4)), Some(4));
    }
}
