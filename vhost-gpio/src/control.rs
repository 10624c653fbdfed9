// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The control socket: a line protocol over a Unix stream socket for host-side
//! tests and people (documented in the crate README), and a client for it.
//!
//! Requests are single lines; every answer ends with a line `ok` or `err
//! <reason>`. Records of lines come before the `ok`:
//!
//! ```text
//! line <index> <name> dir=<none|in|out> level=<0|1> pull=<up|down|none>
//!      irq=<none|rising|falling|both|high|low> driven-by=<guest|host|pull>
//!      host=<0|1|-> output=<0|1|-> latched=<0|1> unmasked=<0|1>
//! ```
//! (one line on the wire). Commands: `list`, `get <line>`, `set <line> <0|1>`,
//! `clear <line>`, `watch`, `help`, `quit`. `<line>` is a name or an index.
//! After `watch` answers `ok`, the server sends `event <record>` lines (the
//! record without the word `line`) for every change until the client closes.
//!
//! One thread per client (capped at [`MAX_CLIENTS`]); a bad command gets an
//! `err` line and the session goes on.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::device::Device;
use crate::model::LineState;

/// Most control clients served at once.
pub const MAX_CLIENTS: usize = 64;
/// Longest request line accepted.
pub const MAX_LINE: usize = 1024;
/// Events buffered for a watcher that is not reading; beyond this it is dropped.
pub const WATCH_BACKLOG: usize = 4096;

/// Control socket errors.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Connecting failed.
    #[error("connecting to control socket {path}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// I/O on an open connection failed.
    #[error("control socket I/O")]
    Io(#[source] io::Error),
    /// The server closed the connection before answering.
    #[error("the server closed the connection")]
    Closed,
    /// The server answered `err ...`.
    #[error("server error: {0}")]
    Server(String),
}

/// Format one line record (without the leading `line `/`event `).
pub fn format_record(s: &LineState) -> String {
    let opt = |v: Option<bool>| match v {
        Some(b) => u8::from(b).to_string(),
        None => "-".to_string(),
    };
    let name = if s.name.is_empty() { "-" } else { &s.name };
    format!(
        "{} {} dir={} level={} pull={} irq={} driven-by={} host={} output={} latched={} unmasked={}",
        s.index,
        name,
        s.direction.as_str(),
        u8::from(s.level),
        s.pull,
        s.irq.as_str(),
        s.driven_by,
        opt(s.host_level),
        opt(s.output),
        u8::from(s.latched),
        u8::from(s.unmasked),
    )
}

/// A parsed record, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Line index.
    pub index: u16,
    /// Name (`-` for none).
    pub name: String,
    /// `key=value` fields in order.
    pub fields: Vec<(String, String)>,
}

impl Record {
    /// Parse a record (with or without a leading `line `/`event `).
    pub fn parse(text: &str) -> Option<Record> {
        let text = text
            .strip_prefix("line ")
            .or_else(|| text.strip_prefix("event "))
            .unwrap_or(text);
        let mut it = text.split_whitespace();
        let index = it.next()?.parse().ok()?;
        let name = it.next()?.to_string();
        let fields = it
            .map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Record {
            index,
            name,
            fields,
        })
    }

    /// Value of a field.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

const HELP: &[&str] = &[
    "commands (one per line; <line> is a name or an index):",
    "  list               every line, one record each",
    "  get <line>         one line's record",
    "  set <line> <0|1>   drive the line's input level from the host",
    "  clear <line>       stop driving it from the host (it reads its pull)",
    "  watch              stream 'event <record>' for every change",
    "  help               this text",
    "  quit               close the connection",
];

/// Start the control server for `device` on `listener` (bound with
/// [`common::daemon::Bound`], which refuses a live socket and sets the mode).
pub fn spawn_server(
    listener: UnixListener,
    device: Arc<Device>,
) -> io::Result<thread::JoinHandle<()>> {
    let clients = Arc::new(AtomicUsize::new(0));
    let name = format!("ctl-{}", device.name());
    thread::Builder::new()
        .name(name)
        .spawn(move || accept_loop(listener, device, clients))
}

fn accept_loop(listener: UnixListener, device: Arc<Device>, clients: Arc<AtomicUsize>) {
    for conn in listener.incoming() {
        let mut stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn!("{}: control accept: {e}", device.name());
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
            clients.fetch_sub(1, Ordering::AcqRel);
            let _ = writeln!(stream, "err too many control clients ({MAX_CLIENTS})");
            continue;
        }
        let device = device.clone();
        let clients2 = clients.clone();
        let spawned = thread::Builder::new()
            .name("ctl-client".into())
            .spawn(move || {
                if let Err(e) = session(stream, &device) {
                    log::debug!("{}: control client: {e}", device.name());
                }
                clients2.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            log::error!("control client thread: {e}");
            clients.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Read one line of at most MAX_LINE bytes; `None` at EOF.
fn read_line(reader: &mut impl BufRead) -> io::Result<Option<Result<String, String>>> {
    let mut buf = Vec::new();
    let n = reader
        .by_ref()
        .take(u64::try_from(MAX_LINE + 1).unwrap_or(u64::MAX))
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE {
        // Skip the rest of the overlong line.
        let mut rest = Vec::new();
        reader.read_until(b'\n', &mut rest)?;
        return Ok(Some(Err(format!("request longer than {MAX_LINE} bytes"))));
    }
    match String::from_utf8(buf) {
        Ok(s) => Ok(Some(Ok(s.trim().to_string()))),
        Err(_) => Ok(Some(Err("request is not UTF-8".into()))),
    }
}

fn session(stream: UnixStream, device: &Device) -> io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(line) = read_line(&mut reader)? {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                writeln!(out, "err {e}")?;
                continue;
            }
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => continue,
            ["help"] => {
                for h in HELP {
                    writeln!(out, "{h}")?;
                }
                writeln!(out, "ok")?;
            }
            ["quit"] => {
                writeln!(out, "ok")?;
                return Ok(());
            }
            ["list"] => {
                let mut text = String::new();
                for s in device.states() {
                    text.push_str("line ");
                    text.push_str(&format_record(&s));
                    text.push('\n');
                }
                text.push_str("ok\n");
                out.write_all(text.as_bytes())?;
            }
            ["get", which] => match find(device, which) {
                Ok(i) => {
                    let st = device.state(i);
                    match st {
                        Some(s) => writeln!(out, "line {}\nok", format_record(&s))?,
                        None => writeln!(out, "err no line {which:?}")?,
                    }
                }
                Err(e) => writeln!(out, "err {e}")?,
            },
            ["set", which, level] => {
                let level = match *level {
                    "0" | "low" => Some(false),
                    "1" | "high" => Some(true),
                    _ => None,
                };
                match (find(device, which), level) {
                    (Ok(i), Some(l)) => answer(&mut out, device.host_set(i, Some(l)))?,
                    (Err(e), _) => writeln!(out, "err {e}")?,
                    (_, None) => writeln!(out, "err level must be 0 or 1")?,
                }
            }
            ["clear", which] => match find(device, which) {
                Ok(i) => answer(&mut out, device.host_set(i, None))?,
                Err(e) => writeln!(out, "err {e}")?,
            },
            ["watch"] => return watch(out, reader.into_inner(), device),
            [cmd, ..] => writeln!(
                out,
                "err unknown command or wrong arguments: {cmd:?} (try help)"
            )?,
        }
    }
    Ok(())
}

fn answer<E: std::fmt::Display>(out: &mut UnixStream, r: Result<(), E>) -> io::Result<()> {
    match r {
        Ok(()) => writeln!(out, "ok"),
        Err(e) => writeln!(out, "err {e}"),
    }
}

fn find(device: &Device, which: &str) -> Result<u16, String> {
    device
        .find(which)
        .ok_or_else(|| format!("no line named or numbered {which:?}"))
}

fn watch(mut out: UnixStream, stream: UnixStream, device: &Device) -> io::Result<()> {
    let (tx, rx) = mpsc::sync_channel::<LineState>(WATCH_BACKLOG);
    device.add_watcher(tx);
    writeln!(out, "ok")?;
    // Detect a closed client while idle: a read that returns 0 bytes.
    stream.set_read_timeout(Some(Duration::from_millis(1)))?;
    let mut probe = [0u8; 64];
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(state) => writeln!(out, "event {}", format_record(&state))?,
            Err(RecvTimeoutError::Timeout) => match (&stream).read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(_) => {} // input after watch is ignored
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            },
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

/// A control socket client.
#[derive(Debug)]
pub struct ControlClient {
    out: UnixStream,
    reader: BufReader<UnixStream>,
}

impl ControlClient {
    /// Connect to a control socket.
    pub fn connect(path: &Path) -> Result<ControlClient, ControlError> {
        let stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let out = stream.try_clone().map_err(ControlError::Io)?;
        Ok(ControlClient {
            out,
            reader: BufReader::new(stream),
        })
    }

    /// Bound how long a read may block (None: forever).
    pub fn set_timeout(&self, t: Option<Duration>) -> Result<(), ControlError> {
        self.out.set_read_timeout(t).map_err(ControlError::Io)
    }

    /// Send one command; return the lines before `ok`, or the `err` reason.
    pub fn command(&mut self, cmd: &str) -> Result<Vec<String>, ControlError> {
        writeln!(self.out, "{}", cmd.trim()).map_err(ControlError::Io)?;
        let mut lines = Vec::new();
        loop {
            let line = self.next_line()?;
            if line == "ok" {
                return Ok(lines);
            }
            if let Some(reason) = line.strip_prefix("err ") {
                return Err(ControlError::Server(reason.to_string()));
            }
            lines.push(line);
        }
    }

    /// All lines' records.
    pub fn list(&mut self) -> Result<Vec<Record>, ControlError> {
        Ok(self
            .command("list")?
            .iter()
            .filter_map(|l| Record::parse(l))
            .collect())
    }

    /// One line's record.
    pub fn get(&mut self, line: &str) -> Result<Record, ControlError> {
        self.command(&format!("get {line}"))?
            .first()
            .and_then(|l| Record::parse(l))
            .ok_or(ControlError::Closed)
    }

    /// Drive a line's input level from the host.
    pub fn set(&mut self, line: &str, level: bool) -> Result<(), ControlError> {
        self.command(&format!("set {line} {}", u8::from(level)))
            .map(drop)
    }

    /// Stop driving it.
    pub fn clear(&mut self, line: &str) -> Result<(), ControlError> {
        self.command(&format!("clear {line}")).map(drop)
    }

    /// Switch to watch mode; then call [`ControlClient::next_event`].
    pub fn watch(&mut self) -> Result<(), ControlError> {
        self.command("watch").map(drop)
    }

    /// Next event record in watch mode.
    pub fn next_event(&mut self) -> Result<Record, ControlError> {
        loop {
            let line = self.next_line()?;
            if let Some(r) = line.strip_prefix("event ").and_then(Record::parse) {
                return Ok(r);
            }
        }
    }

    /// Next raw line from the server.
    pub fn next_line(&mut self) -> Result<String, ControlError> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(ControlError::Io)?;
        if n == 0 {
            return Err(ControlError::Closed);
        }
        Ok(line.trim_end().to_string())
    }
}
