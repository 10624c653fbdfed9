// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The daemon shape both backends share: binding the vhost-user socket (refusing a live
//! one, replacing only a stale one, owner-only permissions), taking a listening socket from
//! the service manager (`--fd`, `LISTEN_FDS`), the connection loop (a fresh vhost-user
//! daemon per frontend, a refused connection rather than a hang when file descriptors run
//! out), the worker exit event, logging set-up and error reports.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

/// File descriptors kept free for one connection: the socket, up to 8 memory regions,
/// kick, call and err eventfds per queue, the worker's epoll and eventfds, with room to spare.
pub const FD_HEADROOM: u64 = 48;

/// Errors of the daemon shape.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another live process listens on the socket, or holds its lock file.
    #[error("{path} is in use by a live backend (a second instance?); not replacing it")]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// Something other than a socket sits at the path.
    #[error("{0} exists and is not a socket; not replacing it")]
    NotASocket(PathBuf),
    /// A system call on the socket or its lock file failed.
    #[error("{what} {path}")]
    Io {
        /// What failed.
        what: &'static str,
        /// The socket or lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The descriptor given with `--fd` or by the service manager is not a listening socket.
    #[error("file descriptor {fd} is not a listening socket")]
    NotListening {
        /// The descriptor.
        fd: RawFd,
        /// Why, when a call failed.
        #[source]
        source: Option<io::Error>,
    },
    /// Too few file descriptors left to serve a connection.
    #[error("{open} of {limit} file descriptors in use, {FD_HEADROOM} needed per connection")]
    OutOfFds {
        /// Descriptors open.
        open: u64,
        /// The soft RLIMIT_NOFILE.
        limit: u64,
    },
    /// The vhost-user daemon could not be created or started.
    #[error("vhost-user daemon: {0}")]
    Daemon(String),
}

/// Who may connect to the sockets a backend creates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketAccess {
    /// Permission bits (default 0600: the owner only).
    pub mode: u32,
    /// Group to give the socket to (`--group`), by id.
    pub group: Option<u32>,
}

impl Default for SocketAccess {
    fn default() -> Self {
        SocketAccess {
            mode: 0o600,
            group: None,
        }
    }
}

/// Where one device listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketSource {
    /// A socket this program binds.
    Path(PathBuf),
    /// An already-listening socket it was given (`--fd`, or by the service manager).
    Fd(RawFd),
}

impl SocketSource {
    /// Binds the socket or takes the descriptor over.
    pub fn open(&self, access: &SocketAccess) -> Result<Bound, DaemonError> {
        match self {
            SocketSource::Path(p) => Bound::bind(p, access),
            SocketSource::Fd(fd) => Bound::from_fd(*fd),
        }
    }

    /// The path, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            SocketSource::Path(p) => Some(p),
            SocketSource::Fd(_) => None,
        }
    }
}

impl std::fmt::Display for SocketSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SocketSource::Path(p) => write!(f, "{}", p.display()),
            SocketSource::Fd(fd) => write!(f, "fd {fd}"),
        }
    }
}

/// Errors in the socket flags.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SocketArgsError {
    /// Neither a path nor a descriptor.
    #[error("give --socket-path PATH or --fd FD (or start the program by socket activation)")]
    NoSocket,
    /// `--socket-count 0`.
    #[error("--socket-count must be at least 1")]
    NoSockets,
    /// A descriptor is one socket.
    #[error("--fd (or socket activation) serves one socket: --socket-count must be 1")]
    FdWithCount,
    /// `--socket-mode` is not an octal mode.
    #[error("--socket-mode {0:?} is not an octal mode such as 0600 or 0660")]
    BadMode(String),
    /// `--group` names no group.
    #[error("--group {0:?}: no such group in /etc/group")]
    NoSuchGroup(String),
}

/// Where a backend listens and who may connect: the flags both backends share, as rust-vmm's
/// vhost-device spells them (`-s`, `-c`) plus QEMU's backend program conventions (`--fd`,
/// `--print-capabilities`).
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketArgs {
    /// vhost-user socket path. With --socket-count N > 1 the index 0..N-1 is appended
    /// (gpio.sock -> gpio.sock0, gpio.sock1, ...); with one socket it is used as given.
    /// A live backend's socket is never replaced; a stale one is.
    #[arg(short = 's', long, value_name = "PATH", conflicts_with = "fd")]
    pub socket_path: Option<PathBuf>,

    /// Number of sockets, each an independent device, served concurrently.
    #[arg(short = 'c', long, default_value_t = 1, value_name = "N")]
    pub socket_count: usize,

    /// Serve on this already-listening socket instead of binding one (QEMU's backend
    /// program conventions). Under systemd socket activation (LISTEN_FDS) it is not needed.
    #[arg(long, value_name = "FD")]
    pub fd: Option<RawFd>,

    /// Permissions of the sockets this program creates, in octal.
    #[arg(long, value_name = "MODE", default_value = "0600")]
    pub socket_mode: String,

    /// Give the sockets this program creates to this group (a name or a number).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,

    /// Print the backend's capabilities as JSON and exit (QEMU's backend program
    /// conventions).
    #[arg(long)]
    pub print_capabilities: bool,
}

impl SocketArgs {
    /// The socket of each device, in order, and the access to give to created sockets.
    /// Without `--socket-path` and `--fd`, a socket passed by systemd (`LISTEN_FDS`) is used.
    pub fn sockets(&self) -> Result<(Vec<SocketSource>, SocketAccess), SocketArgsError> {
        let n = self.socket_count;
        if n == 0 {
            return Err(SocketArgsError::NoSockets);
        }
        let fd = self
            .fd
            .or_else(|| self.socket_path.is_none().then(listen_fds).flatten());
        let sockets = match (&self.socket_path, fd) {
            (Some(p), _) => (0..n)
                .map(|i| SocketSource::Path(crate::paths::indexed_path(p, i, n)))
                .collect(),
            (None, Some(_)) if n != 1 => return Err(SocketArgsError::FdWithCount),
            (None, Some(fd)) => vec![SocketSource::Fd(fd)],
            (None, None) => return Err(SocketArgsError::NoSocket),
        };
        let mode = parse_mode(&self.socket_mode)?;
        let group = self.group.as_deref().map(resolve_group).transpose()?;
        Ok((sockets, SocketAccess { mode, group }))
    }
}

/// Parses `--socket-mode` (octal, at most 0777).
pub fn parse_mode(s: &str) -> Result<u32, SocketArgsError> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| SocketArgsError::BadMode(s.to_string()))
}

/// Resolves `--group`: a number, or a name in /etc/group.
pub fn resolve_group(name: &str) -> Result<u32, SocketArgsError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    std::fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(n, _)| *n == name)
        .and_then(|(_, gid)| gid.parse().ok())
        .ok_or_else(|| SocketArgsError::NoSuchGroup(name.to_string()))
}

/// Prints the capabilities object of QEMU's backend program conventions:
/// `{"type": "<type>", "features": []}`.
pub fn print_capabilities(device_type: &str) {
    println!("{{\n  \"type\": \"{device_type}\",\n  \"features\": []\n}}");
}

/// Makes every file the process creates owner-only unless it says otherwise (sockets are
/// created by bind(2) with the umask's permissions). Call first thing in `main`.
pub fn restrict_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// What every backend's `main` does first: owner-only file creation
/// ([`restrict_umask`]), logging ([`init_logging`]), then the command line (clap exits
/// with usage on an error).
pub fn start<C: clap::Parser>() -> C {
    restrict_umask();
    init_logging();
    C::parse()
}

/// Sets up `env_logger` (default level `info`, `RUST_LOG` overrides).
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}

/// An error with its causes, each printed once: "what: because: because".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// Prints `program: error: causes` to stderr and returns the failure exit code.
pub fn report(program: &str, e: &dyn std::error::Error) -> ExitCode {
    eprintln!("{program}: {}", error_chain(e));
    ExitCode::FAILURE
}

/// A listening Unix socket a backend serves on. When it bound the socket itself, it holds
/// the lock file beside it for as long as it lives and removes the socket when dropped.
#[derive(Debug)]
pub struct Bound {
    listener: UnixListener,
    /// The socket path, when this process created it.
    path: Option<PathBuf>,
    _lock: Option<File>,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DaemonError + 'a {
    move |source| DaemonError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The lock file beside a socket: `gpio.sock` -> `gpio.sock.lock`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".lock");
    PathBuf::from(s)
}

impl Bound {
    /// Binds a listening socket at `path`.
    ///
    /// Refuses ([`DaemonError::InUse`]) when another process holds the lock file beside it
    /// or something answers a connection on it; replaces only a stale socket (one nobody
    /// listens on) and never another kind of file. The socket gets `access`.
    pub fn bind(path: &Path, access: &SocketAccess) -> Result<Bound, DaemonError> {
        let lock_file = lock_path(path);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_file)
            .map_err(io_err("opening the lock file", &lock_file))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(DaemonError::InUse {
                    path: path.to_path_buf(),
                })
            }
            Err(TryLockError::Error(e)) => return Err(io_err("locking", &lock_file)(e)),
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(DaemonError::NotASocket(path.to_path_buf()));
            }
            // A backend without our lock file (another program, an older version) still
            // answers a connect.
            if UnixStream::connect(path).is_ok() {
                return Err(DaemonError::InUse {
                    path: path.to_path_buf(),
                });
            }
            log::info!("replacing the stale socket {}", path.display());
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing the stale socket", path)(e)),
            }
        }
        let listener = UnixListener::bind(path).map_err(io_err("binding", path))?;
        let bound = Bound {
            listener,
            path: Some(path.to_path_buf()),
            _lock: Some(lock),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode))
            .map_err(io_err("setting the permissions of", path))?;
        if let Some(gid) = access.group {
            std::os::unix::fs::chown(path, None, Some(gid))
                .map_err(io_err("changing the group of", path))?;
        }
        Ok(bound)
    }

    /// Takes over an already-listening socket, as QEMU's backend program conventions
    /// (`--fd FD`) and systemd's socket activation hand one over. The socket file, if any,
    /// belongs to whoever bound it: it is neither locked nor removed here.
    pub fn from_fd(fd: RawFd) -> Result<Bound, DaemonError> {
        let not_listening = |source| DaemonError::NotListening { fd, source };
        // Only take an fd this process has: /proc shows what it is without touching it.
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map_err(|e| not_listening(Some(e)))?;
        if fd <= 2 || !target.to_string_lossy().starts_with("socket:") {
            return Err(not_listening(None));
        }
        // SAFETY: `fd` is open (checked above) and is a socket; the user handed it to this
        // process to own (`--fd`, or LISTEN_FDS from the service manager), nothing else in
        // the process uses it, and it is taken only once (`main` calls this once per fd).
        let listener = unsafe { UnixListener::from_raw_fd(fd) };
        match rustix::net::sockopt::socket_acceptconn(&listener) {
            Ok(true) => {}
            Ok(false) => return Err(not_listening(None)),
            Err(e) => return Err(not_listening(Some(e.into()))),
        }
        // The fd may come without close-on-exec; nothing is executed, but be tidy.
        let _ = rustix::io::fcntl_setfd(&listener, rustix::io::FdFlags::CLOEXEC);
        Ok(Bound {
            listener,
            path: None,
            _lock: None,
        })
    }

    /// The listening socket.
    pub fn listener(&self) -> &UnixListener {
        &self.listener
    }

    /// A vhost-user listener on the same socket (a duplicate descriptor).
    pub fn vhost_listener(&self) -> io::Result<Listener> {
        Ok(Listener::from(self.listener.try_clone()?))
    }

    /// A name for log lines: the path, or the descriptor.
    pub fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => format!("fd {}", self.listener.as_raw_fd()),
        }
    }

    /// Removes the socket file this process created (on a clean exit).
    pub fn remove(&self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The listening socket systemd passed (`LISTEN_FDS`/`LISTEN_PID`, first fd 3), if any.
pub fn listen_fds() -> Option<RawFd> {
    let pid: i32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let n: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    (pid == rustix::process::getpid().as_raw_nonzero().get() && n >= 1).then_some(3)
}

/// Open file descriptors and the soft RLIMIT_NOFILE.
fn fd_usage() -> (u64, u64) {
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    (open, limit)
}

/// Fails when fewer than [`FD_HEADROOM`] descriptors are left.
pub fn check_fd_headroom() -> Result<(), DaemonError> {
    let (open, limit) = fd_usage();
    if open.saturating_add(FD_HEADROOM) > limit {
        Err(DaemonError::OutOfFds { open, limit })
    } else {
        Ok(())
    }
}

/// The worker exit event, without the descriptor vhost-user-backend leaks.
///
/// vhost-user-backend 0.24.0, `VringEpollHandler::new` (event_loop.rs) registers the exit
/// event's consumer with `epoll.ctl(ControlOperation::Add, consumer.into_raw_fd(), ...)` and
/// never closes that descriptor, so every `VhostUserDaemon` leaks one: one per connection
/// for a backend that makes a daemon per connection, until `RLIMIT_NOFILE` runs out and the
/// next frontend hangs at `SET_VRING_KICK`. (Upstream report, in their words: "the exit
/// event consumer returned by `VhostUserBackend::exit_event` is converted with
/// `into_raw_fd()` and never closed; `VringEpollHandler` should keep it as an
/// `EventConsumer` and drop it with the handler.")
///
/// Workaround: this type owns the consumer and hands the library an alias of the same
/// descriptor, which the library forgets. The descriptor is closed when the next daemon's
/// worker asks for its event (the previous daemon is gone by then) or when this is dropped.
/// The version is pinned in the workspace (`=0.24.0`): re-check before upgrading.
#[derive(Debug, Default)]
pub struct ExitEvent {
    owned: Mutex<Option<EventConsumer>>,
}

impl ExitEvent {
    /// A fresh exit event for a worker (what `VhostUserBackend::exit_event` returns).
    pub fn for_worker(&self) -> Option<(EventConsumer, EventNotifier)> {
        let (consumer, notifier) =
            match new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC) {
                Ok(pair) => pair,
                Err(e) => {
                    log::error!("creating a worker exit event: {e}");
                    return None;
                }
            };
        // SAFETY: the alias is handed to vhost-user-backend 0.24.0, whose only use of it is
        // `into_raw_fd()` right away (see above): it never closes or drops it as an owner,
        // so `consumer`, kept below, stays the only owner that closes the descriptor. It is
        // closed only after the daemon that uses it is dropped (and its worker joined),
        // because a new daemon asks for its exit event only after the previous one is gone.
        let alias = unsafe { EventConsumer::from_raw_fd(consumer.as_raw_fd()) };
        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        *owned = Some(consumer);
        Some((alias, notifier))
    }
}

/// One device's side of the connection loop.
pub trait Connections {
    /// The vhost-user backend type.
    type Backend: VhostUserBackend<Bitmap = (), Vring: Clone + Send + Sync> + Clone + 'static;

    /// Name for log lines.
    fn name(&self) -> String;

    /// The backend for the next connection (a fresh one, or the same one again).
    fn backend(&mut self) -> Result<Self::Backend, DaemonError>;

    /// Called once the daemon exists, before a frontend is accepted (to register extra
    /// descriptors with its worker).
    fn started(&mut self, _daemon: &VhostUserDaemon<Self::Backend>) -> Result<(), DaemonError> {
        Ok(())
    }

    /// The frontend has gone (the socket closed); the worker may still be running.
    fn ended(&mut self);
}

/// Serves connection after connection on `bound`, forever: a fresh vhost-user daemon per
/// frontend, so a frontend can reconnect and find a fresh device. When a connection cannot
/// be served (too few file descriptors left, a daemon that cannot be made) the waiting
/// frontend is refused (its connection closed at once) and the error logged, rather than
/// left hanging.
pub fn serve_forever(bound: &Bound, conns: &mut impl Connections) {
    let name = conns.name();
    let mut listener = match bound.vhost_listener() {
        Ok(l) => l,
        Err(e) => {
            log::error!("{name}: duplicating the listening socket: {e}");
            return;
        }
    };
    // One descriptor kept in reserve, so that a connection can be accepted (and refused)
    // even when none are left.
    let mut reserve = File::open("/dev/null").ok();
    let mut backoff = Duration::from_millis(10);
    loop {
        let result = check_fd_headroom().and_then(|()| serve_one(&name, &mut listener, conns));
        match result {
            Ok(()) => backoff = Duration::from_millis(10),
            Err(e) => {
                log::error!("{name}: {}; refusing the next connection", error_chain(&e));
                drop(reserve.take());
                match bound.listener().accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(e) => log::error!("{name}: accepting a connection to refuse it: {e}"),
                }
                reserve = File::open("/dev/null").ok();
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn serve_one<C: Connections>(
    name: &str,
    listener: &mut Listener,
    conns: &mut C,
) -> Result<(), DaemonError> {
    let backend = conns.backend()?;
    let mut daemon = VhostUserDaemon::new(
        name.to_string(),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| DaemonError::Daemon(e.to_string()))?;
    conns.started(&daemon)?;
    log::info!("{name}: waiting for a frontend");
    daemon
        .start(listener)
        .map_err(|e| DaemonError::Daemon(format!("accepting a frontend: {e}")))?;
    log::info!("{name}: frontend connected");
    match daemon.wait() {
        Ok(())
        | Err(vhost_user_backend::Error::HandleRequest(
            vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
        )) => log::info!("{name}: frontend disconnected"),
        Err(e) => log::warn!("{name}: connection ended: {e}"),
    }
    conns.ended();
    // Dropping the daemon stops and joins its worker.
    drop(daemon);
    Ok(())
}

/// SIGTERM and SIGINT, caught from the start so that a service manager's stop is a clean
/// exit at any moment.
#[derive(Debug)]
pub struct Termination {
    signals: signal_hook::iterator::Signals,
}

impl Termination {
    /// Catches SIGTERM and SIGINT from now on.
    pub fn catch() -> Result<Termination, DaemonError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT]).map_err(|source| {
            DaemonError::Io {
                what: "catching",
                path: PathBuf::from("SIGTERM and SIGINT"),
                source,
            }
        })?;
        Ok(Termination { signals })
    }

    /// Blocks until one arrives; returns its name.
    pub fn wait(&mut self) -> &'static str {
        match self.signals.forever().next() {
            Some(signal_hook::consts::SIGINT) => "SIGINT",
            _ => "SIGTERM",
        }
    }
}

/// Serves each device on its socket in a thread of its own until SIGTERM or SIGINT, then
/// calls `shutdown` (which must leave every device safe: lines released, images flushed),
/// removes the sockets this process created and returns.
pub fn serve_until_terminated<C>(
    mut termination: Termination,
    devices: Vec<(Bound, C)>,
    shutdown: impl FnOnce(&str),
) -> Result<(), DaemonError>
where
    C: Connections + Send + 'static,
{
    let mut bounds = Vec::new();
    for (bound, mut conns) in devices {
        let bound = std::sync::Arc::new(bound);
        let b2 = bound.clone();
        let name = conns.name();
        thread::Builder::new()
            .name(name.clone())
            .spawn(move || serve_forever(&b2, &mut conns))
            .map_err(|source| DaemonError::Io {
                what: "starting the thread serving",
                path: PathBuf::from(name),
                source,
            })?;
        bounds.push(bound);
    }
    let signal = termination.wait();
    log::info!("{signal}: shutting down");
    shutdown(signal);
    for b in &bounds {
        b.remove();
    }
    log::info!("{signal}: clean exit");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_groups_parse() {
        assert_eq!(parse_mode("0600").unwrap(), 0o600);
        assert_eq!(parse_mode("660").unwrap(), 0o660);
        assert!(parse_mode("0800").is_err());
        assert!(parse_mode("01777").is_err());
        assert_eq!(resolve_group("0").unwrap(), 0);
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert!(matches!(
            resolve_group("no-such-group-here"),
            Err(SocketArgsError::NoSuchGroup(_))
        ));
    }

    #[test]
    fn a_live_socket_is_refused_a_stale_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sock");
        let first = Bound::bind(&p, &SocketAccess::default()).unwrap();
        let err = Bound::bind(&p, &SocketAccess::default()).unwrap_err();
        assert!(matches!(err, DaemonError::InUse { .. }), "{err}");
        // A live listener without our lock file.
        drop(first);
        let foreign = UnixListener::bind(&p).unwrap();
        let err = Bound::bind(&p, &SocketAccess::default()).unwrap_err();
        assert!(matches!(err, DaemonError::InUse { .. }), "{err}");
        // Stale: the file stays after the listener is gone.
        drop(foreign);
        assert!(p.exists());
        let b = Bound::bind(&p, &SocketAccess::default()).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(b);
        assert!(!p.exists(), "the socket is removed on drop");
        // Never another kind of file.
        std::fs::write(&p, b"keep").unwrap();
        assert!(matches!(
            Bound::bind(&p, &SocketAccess::default()),
            Err(DaemonError::NotASocket(_))
        ));
        assert_eq!(std::fs::read(&p).unwrap(), b"keep");
    }

    #[test]
    fn from_fd_wants_a_listening_socket() {
        let f = File::open("/dev/null").unwrap();
        let err = Bound::from_fd(f.as_raw_fd()).unwrap_err();
        assert!(matches!(err, DaemonError::NotListening { .. }), "{err}");
        assert!(Bound::from_fd(9999).is_err());
    }
}
