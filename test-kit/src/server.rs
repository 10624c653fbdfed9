// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A backend binary under test: started on a socket in its own temp dir, waited for until it
//! listens, stopped with SIGTERM (bounded, then SIGKILL) when dropped.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::frontend::{FrontendOptions, TestFrontend};
use crate::testutil::{listening, wait_until, with_shell_prelude, ChildGuard};

/// How long a dropped [`Server`] has to exit on SIGTERM before it is killed.
pub const STOP_BOUND: Duration = Duration::from_secs(5);

/// A backend process serving a vhost-user socket in a private temp dir.
#[derive(Debug)]
pub struct Server {
    child: ChildGuard,
    launch: Launch,
    dir: tempfile::TempDir,
}

/// What starts (and restarts) the process.
#[derive(Debug)]
struct Launch {
    prelude: Option<String>,
    bin: PathBuf,
    rust_log: String,
    socket: PathBuf,
    args: Vec<String>,
    timeout: Duration,
}

impl Server {
    /// Starts `BIN --socket-path DIR/SOCKET ARGS...` with `RUST_LOG=rust_log`, DIR a new temp
    /// dir (`{dir}` in ARGS stands for it), and waits up to `timeout` until it listens: on
    /// DIR/SOCKET, or with `--socket-count N` in ARGS on DIR/SOCKET0 .. DIR/SOCKET<N-1>.
    ///
    /// Panics, with the backend's log, if it does not.
    pub fn start(
        bin: impl AsRef<Path>,
        rust_log: &str,
        socket: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Server {
        Server::launch(None, bin.as_ref(), rust_log, socket, args, timeout)
    }

    /// [`Server::start`] through `sh -c` after the shell `prelude` (say `ulimit -n 40`, see
    /// [`with_shell_prelude`]).
    pub fn start_under(
        prelude: &str,
        bin: impl AsRef<Path>,
        rust_log: &str,
        socket: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Server {
        Server::launch(Some(prelude), bin.as_ref(), rust_log, socket, args, timeout)
    }

    fn launch(
        prelude: Option<&str>,
        bin: &Path,
        rust_log: &str,
        socket: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display().to_string();
        let launch = Launch {
            prelude: prelude.map(str::to_string),
            bin: bin.to_path_buf(),
            rust_log: rust_log.to_string(),
            socket: dir.path().join(socket),
            args: args.iter().map(|a| a.replace("{dir}", &d)).collect(),
            timeout,
        };
        let child = launch.spawn();
        Server { child, launch, dir }
    }

    /// The temp dir the server runs in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `name` in the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The vhost-user socket (`--socket-path`).
    pub fn socket(&self) -> &Path {
        &self.launch.socket
    }

    /// The backend's pid.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// What the backend printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        self.child.log()
    }

    /// A frontend on the socket; panics with the backend's log if it cannot connect.
    pub fn connect(&self, opts: FrontendOptions, timeout: Duration) -> TestFrontend {
        self.connect_to(self.socket(), opts, timeout)
    }

    /// A frontend on the socket `name` in the temp dir (`--socket-count`); panics with the
    /// backend's log if it cannot connect.
    pub fn connect_at(&self, name: &str, opts: FrontendOptions, timeout: Duration) -> TestFrontend {
        self.connect_to(&self.path(name), opts, timeout)
    }

    fn connect_to(&self, path: &Path, opts: FrontendOptions, timeout: Duration) -> TestFrontend {
        TestFrontend::connect(path, opts, timeout).unwrap_or_else(|e| {
            panic!(
                "connect {}: {e}\n--- backend log ---\n{}",
                path.display(),
                self.log()
            )
        })
    }

    /// SIGKILL, then reap (see [`ChildGuard::kill9`]).
    pub fn kill9(&mut self) -> io::Result<ExitStatus> {
        self.child.kill9()
    }

    /// SIGTERM, wait up to `timeout`, then SIGKILL (see [`ChildGuard::terminate`]).
    pub fn terminate(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        self.child.terminate(timeout)
    }

    /// The exit status if the backend has ended.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// `kill -9`, then start again with the same command line and wait until it listens.
    pub fn restart_after_kill9(&mut self) {
        self.child.kill9().expect("kill -9");
        self.child = self.launch.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.terminate(STOP_BOUND);
    }
}

impl Launch {
    /// The sockets the backend listens on once it is up.
    fn sockets(&self) -> Vec<PathBuf> {
        let count = self
            .args
            .iter()
            .position(|a| a == "--socket-count")
            .and_then(|i| self.args.get(i + 1))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(1);
        if count == 1 {
            return vec![self.socket.clone()];
        }
        (0..count)
            .map(|i| {
                let mut s = self.socket.clone().into_os_string();
                s.push(i.to_string());
                PathBuf::from(s)
            })
            .collect()
    }

    fn spawn(&self) -> ChildGuard {
        let mut cmd = match &self.prelude {
            Some(p) => with_shell_prelude(p, &self.bin),
            None => Command::new(&self.bin),
        };
        cmd.env("RUST_LOG", &self.rust_log)
            .arg("--socket-path")
            .arg(&self.socket)
            .args(&self.args);
        let mut child = ChildGuard::spawn(cmd)
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        let sockets = self.sockets();
        let up = wait_until(self.timeout, || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} exited ({status}) before it listened\n--- backend log ---\n{}",
                    self.bin.display(),
                    child.log()
                );
            }
            sockets.iter().all(|s| listening(s)).then_some(())
        });
        if up.is_none() {
            panic!(
                "{} did not listen on {sockets:?} within {:?}\n--- backend log ---\n{}",
                self.bin.display(),
                self.timeout,
                child.log()
            );
        }
        child
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "exited (exit status: 7) before it listened")]
    fn a_backend_that_exits_before_it_listens_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let bins = tempfile::tempdir().unwrap();
        let bin = bins.path().join("fails");
        std::fs::write(&bin, "#!/bin/sh\necho failing\nexit 7\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _s = Server::start(&bin, "info", "x.sock", &[], Duration::from_secs(10));
    }

    #[test]
    fn socket_count_names_every_socket() {
        let launch = |args: &[&str]| Launch {
            prelude: None,
            bin: PathBuf::from("b"),
            rust_log: String::new(),
            socket: PathBuf::from("/d/s.sock"),
            args: args.iter().map(|a| a.to_string()).collect(),
            timeout: Duration::ZERO,
        };
        assert_eq!(launch(&["--x"]).sockets(), [PathBuf::from("/d/s.sock")]);
        assert_eq!(
            launch(&["--socket-count", "2"]).sockets(),
            [PathBuf::from("/d/s.sock0"), PathBuf::from("/d/s.sock1")]
        );
    }
}
