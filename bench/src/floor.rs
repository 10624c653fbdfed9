// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The floor under a vhost-user round trip at depth 1: one kick and one call over eventfds,
//! each side sleeping in `epoll_wait`, between two processes, with no virtio work at all.
//!
//! The shape is the one `vhost-bench` and a backend have per request at depth 1: the
//! frontend writes the kick eventfd and sleeps in `epoll_wait` on the call eventfd, then
//! reads it; the server sleeps in `epoll_wait` on the kick eventfd, reads it, and writes the
//! call eventfd. As in vhost-user, the server gets both eventfds over a Unix socket
//! (`SCM_RIGHTS`). Whatever a backend's round trip costs above this is the backend's (and
//! its vhost-user library's) own work.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::epoll;
use rustix::event::{eventfd, EventfdFlags};
use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::stats::Tally;

/// How long a round trip may take before the floor is called stalled.
const STALL: Duration = Duration::from_secs(10);

/// Errors of the floor.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Starting the server process failed.
    #[error("starting the floor server {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not connect, or sent something else than expected.
    #[error("floor server: {0}")]
    Server(String),
    /// No call came back.
    #[error("no call for {STALL:?} after a kick")]
    Stalled,
}

type Result<T> = std::result::Result<T, FloorError>;

fn sys(what: &'static str) -> impl FnOnce(Errno) -> FloorError {
    move |e| FloorError::Sys {
        what,
        source: e.into(),
    }
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> FloorError {
    move |source| FloorError::Sys { what, source }
}

/// An epoll instance watching `fd` for input.
fn epoll_on(fds: &[&OwnedFd]) -> Result<OwnedFd> {
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(sys("epoll_create"))?;
    for (i, fd) in fds.iter().enumerate() {
        let data = epoll::EventData::new_u64(u64::try_from(i).unwrap_or(u64::MAX));
        epoll::add(&ep, fd, data, epoll::EventFlags::IN).map_err(sys("epoll_ctl"))?;
    }
    Ok(ep)
}

/// Sleeps in `epoll_wait` up to `timeout`; returns the data of the first ready fd.
fn wait(ep: &OwnedFd, timeout: Option<Duration>) -> Result<Option<u64>> {
    let ts = timeout.map(|t| rustix::event::Timespec {
        tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    let mut events = [MaybeUninit::<epoll::Event>::uninit(); 2];
    loop {
        match epoll::wait(ep, &mut events, ts.as_ref()) {
            Ok((ready, _)) => return Ok(ready.first().map(|e| e.data.u64())),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(sys("epoll_wait")(e)),
        }
    }
}

fn signal(fd: &OwnedFd) -> Result<()> {
    rustix::io::write(fd, &1u64.to_ne_bytes()).map_err(sys("eventfd write"))?;
    Ok(())
}

/// Reads an eventfd's counter; false if it was zero (non-blocking fd).
fn consume(fd: &OwnedFd) -> Result<bool> {
    let mut b = [0u8; 8];
    match rustix::io::read(fd, &mut b) {
        Ok(_) => Ok(true),
        Err(Errno::AGAIN) => Ok(false),
        Err(e) => Err(sys("eventfd read")(e)),
    }
}

/// The server half: connects to `socket`, receives the kick and call eventfds, then answers
/// every kick with a call until the client closes the socket.
pub fn serve(socket: &Path) -> Result<()> {
    let stream = UnixStream::connect(socket).map_err(io("connecting to the client"))?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    recvmsg(
        &stream,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(sys("recvmsg"))?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    let [kick, call]: [OwnedFd; 2] = fds
        .try_into()
        .map_err(|f: Vec<OwnedFd>| FloorError::Server(format!("got {} fds, not 2", f.len())))?;
    let sock: OwnedFd = stream.into();
    let ep = epoll_on(&[&kick, &sock])?;
    loop {
        match wait(&ep, None)? {
            Some(0) => {
                if consume(&kick)? {
                    signal(&call)?;
                }
            }
            // The client hung up (or wrote, which it never does): done.
            _ => return Ok(()),
        }
    }
}

/// The client half with its server process.
#[derive(Debug)]
pub struct Floor {
    child: Child,
    kick: OwnedFd,
    call: OwnedFd,
    epoll: OwnedFd,
    sock: Option<UnixStream>,
    path: PathBuf,
}

impl Floor {
    /// Starts `program --serve SOCKET` (the `eventfd-floor` binary) with `SOCKET` in `dir`,
    /// and hands it the two eventfds.
    pub fn start(program: &Path, dir: &Path) -> Result<Floor> {
        let path = dir.join("floor.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(io("binding the floor socket"))?;
        let child = Command::new(program)
            .arg("--serve")
            .arg(&path)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| FloorError::Spawn {
                program: program.display().to_string(),
                source,
            })?;
        let kick =
            eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(sys("eventfd"))?;
        let call =
            eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(sys("eventfd"))?;
        let epoll = epoll_on(&[&call])?;
        let mut floor = Floor {
            child,
            kick,
            call,
            epoll,
            sock: None,
            path,
        };
        listener.set_nonblocking(true).map_err(io("floor socket"))?;
        let deadline = Instant::now() + STALL;
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Ok(Some(st)) = floor.child.try_wait() {
                        return Err(FloorError::Server(format!(
                            "exited before connecting: {st}"
                        )));
                    }
                    if Instant::now() > deadline {
                        return Err(FloorError::Server(format!(
                            "did not connect within {STALL:?}"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(io("accepting the floor server")(e)),
            }
        };
        let fds = [floor.kick.as_fd(), floor.call.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(FloorError::Server("control buffer too small".into()));
        }
        sendmsg(
            &stream,
            &[IoSlice::new(&[0])],
            &mut control,
            SendFlags::empty(),
        )
        .map_err(sys("sendmsg"))?;
        floor.sock = Some(stream);
        Ok(floor)
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Round trips one at a time until `deadline`: write the kick, sleep in `epoll_wait` on
    /// the call (20 ms slices, as `vhost-bench` waits), read it.
    pub fn run(&mut self, deadline: Instant, record: bool) -> Result<Tally> {
        let mut t = Tally::default();
        while Instant::now() < deadline {
            let start = Instant::now();
            signal(&self.kick)?;
            loop {
                if wait(&self.epoll, Some(Duration::from_millis(20)))?.is_some()
                    && consume(&self.call)?
                {
                    break;
                }
                if start.elapsed() > STALL {
                    return Err(FloorError::Stalled);
                }
            }
            if record {
                t.samples.push(start.elapsed());
                t.requests += 1;
                t.chains += 1;
            }
        }
        Ok(t)
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        // Hanging up ends the server; kill it if it does not go within a second.
        drop(self.sock.take());
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_file(&self.path);
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}
