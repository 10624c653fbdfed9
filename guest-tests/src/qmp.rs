// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The QMP conversation of the reproduction, through the `qapi` crate's typed commands:
//! hot-unplug (`device_del`, then DEVICE_DELETED), replug (`chardev-remove`, `chardev-add`,
//! `device_add`) and QEMU's version.
//!
//! Every read has a bound: a QEMU that stops answering makes a call fail with a timeout, never
//! hang the harness.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use qapi::qmp::{self, Event};
use qapi::{Qmp, Stream};

/// How long one QMP read may block.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the QMP conversation.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be reached.
    #[error("connecting to QMP at {path}")]
    Connect {
        /// The QMP socket.
        path: PathBuf,
        /// The last error.
        #[source]
        source: std::io::Error,
    },
    /// QEMU exited before its QMP socket accepted a connection.
    #[error("QEMU exited before QMP at {path} accepted a connection")]
    Exited {
        /// The QMP socket.
        path: PathBuf,
    },
    /// QEMU's greeting was not a QMP greeting.
    #[error("QMP greeting: {0}")]
    Greeting(String),
    /// A command failed.
    #[error("QMP {command}: {detail}")]
    Command {
        /// The command.
        command: &'static str,
        /// QEMU's answer or the I/O error.
        detail: String,
    },
    /// An event named in a scenario did not come in time.
    #[error("no QMP event {event} within {waited:?}")]
    NoEvent {
        /// The event awaited.
        event: String,
        /// How long.
        waited: Duration,
    },
    /// An event did not come in time.
    #[error("no {event} for {what} within {waited:?}")]
    Timeout {
        /// The event awaited.
        event: &'static str,
        /// For what.
        what: String,
        /// How long.
        waited: Duration,
    },
}

type QmpStream = Stream<BufReader<UnixStream>, UnixStream>;

/// A QMP session with one QEMU.
pub struct QmpClient {
    qmp: Qmp<QmpStream>,
    /// Devices whose DEVICE_DELETED came and was not taken yet.
    deleted: HashSet<String>,
    /// Names of the events that came, oldest first, not taken by [`QmpClient::wait_event`].
    events: VecDeque<String>,
}

/// How many event names are kept for [`QmpClient::wait_event`].
const EVENTS_KEPT: usize = 256;

impl std::fmt::Debug for QmpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpClient").finish_non_exhaustive()
    }
}

fn command_err(command: &'static str) -> impl FnOnce(qapi::ExecuteError) -> QmpError {
    move |e| QmpError::Command {
        command,
        detail: e.to_string(),
    }
}

/// Events QEMU may send before its greeting, at most. Seen once in 90 runs (2026-12-02, QEMU
/// 10.0.2, a CI rehearsal): a RESUME event as the first line of a connection made as the
/// guest started, the greeting presumably after it; the run failed as a harness error.
const EVENTS_BEFORE_GREETING: usize = 8;

/// Reads QEMU's greeting, skipping (and logging) events sent before it. Read by hand: the
/// crate's reader panics on an early EOF.
fn read_greeting(reader: &mut impl BufRead) -> Result<(), QmpError> {
    for _ in 0..=EVENTS_BEFORE_GREETING {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| QmpError::Greeting(e.to_string()))?;
        if n == 0 {
            return Err(QmpError::Greeting("the connection closed".into()));
        }
        let value: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| QmpError::Greeting(format!("{e}: {line:?}")))?;
        if value.get("QMP").is_some() {
            return Ok(());
        }
        if value.get("event").is_none() {
            return Err(QmpError::Greeting(format!("not a QMP greeting: {line:?}")));
        }
        log::debug!(
            "QMP: an event before the greeting, skipped: {}",
            line.trim_end()
        );
    }
    Err(QmpError::Greeting(format!(
        "no greeting after {EVENTS_BEFORE_GREETING} events"
    )))
}

impl QmpClient {
    /// Connects (retrying until `timeout` while QEMU starts), reads the greeting and leaves
    /// capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<QmpClient, QmpError> {
        Self::connect_while(path, timeout, || true)
    }

    /// As [`connect`](Self::connect), but gives up at once when `alive` says QEMU has
    /// exited, instead of retrying until `timeout`.
    pub fn connect_while(
        path: &Path,
        timeout: Duration,
        mut alive: impl FnMut() -> bool,
    ) -> Result<QmpClient, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if !alive() => {
                    return Err(QmpError::Exited {
                        path: path.to_path_buf(),
                    })
                }
                Err(e) if Instant::now() < deadline => {
                    log::trace!("QMP {}: {e}; retrying", path.display());
                    thread::sleep(Duration::from_millis(50));
                }
                Err(source) => {
                    return Err(QmpError::Connect {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            }
        };
        let connect_err = |source| QmpError::Connect {
            path: path.to_path_buf(),
            source,
        };
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(connect_err)?;
        let writer = stream.try_clone().map_err(connect_err)?;
        let mut reader = BufReader::new(stream);
        read_greeting(&mut reader)?;
        let mut qmp = Qmp::new(Stream::new(reader, writer));
        qmp.execute(&qmp::qmp_capabilities { enable: None })
            .map_err(command_err("qmp_capabilities"))?;
        Ok(QmpClient {
            qmp,
            deleted: HashSet::new(),
            events: VecDeque::new(),
        })
    }

    /// QEMU's version, `major.minor.micro`.
    pub fn version(&mut self) -> Result<String, QmpError> {
        let v = self
            .qmp
            .execute(&qmp::query_version {})
            .map_err(command_err("query-version"))?;
        Ok(format!(
            "{}.{}.{}",
            v.qemu.major, v.qemu.minor, v.qemu.micro
        ))
    }

    /// Unplugs device `id` and waits for QEMU's DEVICE_DELETED for it: QEMU sends one for
    /// the virtio backend's QOM path first, then the one naming the device; this waits for the
    /// latter. Returns how long the guest took.
    pub fn device_del(&mut self, id: &str, timeout: Duration) -> Result<Duration, QmpError> {
        self.device_del_request(id)?;
        self.wait_deleted(id, timeout)
    }

    /// Asks QEMU to unplug device `id` (the guest ejects it; QEMU then sends DEVICE_DELETED,
    /// see [`QmpClient::take_deleted`]).
    pub fn device_del_request(&mut self, id: &str) -> Result<(), QmpError> {
        self.deleted.remove(id);
        self.qmp
            .execute(&qmp::device_del { id: id.to_string() })
            .map_err(command_err("device_del"))?;
        Ok(())
    }

    /// Whether DEVICE_DELETED for `id` has come (once: it is taken). One round trip.
    pub fn take_deleted(&mut self, id: &str) -> Result<bool, QmpError> {
        self.pump()?;
        Ok(self.deleted.remove(id))
    }

    /// Waits for DEVICE_DELETED for `id`; returns how long it took.
    pub fn wait_deleted(&mut self, id: &str, timeout: Duration) -> Result<Duration, QmpError> {
        let start = Instant::now();
        loop {
            if self.take_deleted(id)? {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return Err(QmpError::Timeout {
                    event: "DEVICE_DELETED",
                    what: id.to_string(),
                    waited: start.elapsed(),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the next QMP event named `name` (e.g. `DEVICE_DELETED`) since the last one
    /// taken; returns how long it took.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<Duration, QmpError> {
        let start = Instant::now();
        loop {
            self.pump()?;
            if let Some(at) = self.events.iter().position(|e| e == name) {
                self.events.drain(..=at);
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return Err(QmpError::NoEvent {
                    event: name.to_string(),
                    waited: start.elapsed(),
                });
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A round trip (which collects the events QEMU sent meanwhile), then the events sorted
    /// into what the waits look for.
    fn pump(&mut self) -> Result<(), QmpError> {
        self.qmp.nop().map_err(|e| QmpError::Command {
            command: "query-version",
            detail: e.to_string(),
        })?;
        for e in self.qmp.events() {
            if let Event::DEVICE_DELETED { data, .. } = &e {
                log::debug!("DEVICE_DELETED {:?} {}", data.device, data.path);
                if let Some(d) = &data.device {
                    self.deleted.insert(d.clone());
                }
            }
            if let Some(name) = serde_json::to_value(&e)
                .ok()
                .and_then(|v| v.get("event").and_then(|n| n.as_str().map(str::to_string)))
            {
                self.events.push_back(name);
                if self.events.len() > EVENTS_KEPT {
                    self.events.pop_front();
                }
            }
        }
        Ok(())
    }

    /// Removes a chardev (closing its connection to the backend).
    pub fn chardev_remove(&mut self, id: &str) -> Result<(), QmpError> {
        self.qmp
            .execute(&qmp::chardev_remove { id: id.to_string() })
            .map_err(command_err("chardev-remove"))?;
        Ok(())
    }

    /// Adds a chardev connected, as a client, to the Unix socket at `path`.
    pub fn chardev_add_unix(&mut self, id: &str, path: &Path) -> Result<(), QmpError> {
        let socket = qmp::ChardevSocket {
            base: qmp::ChardevCommon {
                logappend: None,
                logfile: None,
            },
            nodelay: None,
            reconnect: None,
            server: Some(false),
            telnet: None,
            tls_authz: None,
            tls_creds: None,
            tn3270: None,
            wait: None,
            websocket: None,
            addr: qmp::SocketAddressLegacy::unix(qmp::UnixSocketAddressWrapper {
                data: qmp::UnixSocketAddress {
                    abstract_: None,
                    tight: None,
                    path: path.display().to_string(),
                },
            }),
        };
        self.qmp
            .execute(&qmp::chardev_add {
                id: id.to_string(),
                backend: qmp::ChardevBackend::socket(qmp::ChardevSocketWrapper { data: socket }),
            })
            .map_err(command_err("chardev-add"))?;
        Ok(())
    }

    /// Adds device `driver` with id `id` and string properties `props`.
    pub fn device_add(
        &mut self,
        driver: &str,
        id: &str,
        props: &[(&str, &str)],
    ) -> Result<(), QmpError> {
        let props = props
            .iter()
            .map(|(k, v)| (k.to_string(), qapi::Any::String(v.to_string())));
        self.qmp
            .execute(&qmp::device_add::new(
                driver,
                Some(id.to_string()),
                None,
                props,
            ))
            .map_err(command_err("device_add"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greet(text: &str) -> Result<(), QmpError> {
        read_greeting(&mut text.as_bytes())
    }

    const GREETING: &str = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n";
    const RESUME: &str =
        "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"RESUME\"}\r\n";

    #[test]
    fn the_greeting_is_read() {
        greet(GREETING).unwrap();
    }

    #[test]
    fn events_before_the_greeting_are_skipped() {
        greet(&format!("{RESUME}{RESUME}{GREETING}")).unwrap();
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(matches!(
            greet("{\"return\": {}}\n"),
            Err(QmpError::Greeting(_))
        ));
        assert!(matches!(greet("garbage\n"), Err(QmpError::Greeting(_))));
        assert!(matches!(greet(RESUME), Err(QmpError::Greeting(_))));
        assert!(matches!(greet(""), Err(QmpError::Greeting(_))));
        let flood = RESUME.repeat(EVENTS_BEFORE_GREETING + 1) + GREETING;
        assert!(matches!(greet(&flood), Err(QmpError::Greeting(_))));
    }
}
