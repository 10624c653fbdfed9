// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest's serial console: a file QEMU appends to, followed line by line,
//! and the scenario runner's `VGN-MARK: <name> [word | key=value]...` markers.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What precedes every marker on the console.
pub const MARKER_PREFIX: &str = "VGN-MARK: ";

/// The first marker the runner prints, as soon as `/init` starts.
pub const RUNNER_START: &str = "runner-start";

/// The marker the runner prints before powering off.
pub const DONE: &str = "done";

/// Markers the runner prints itself (or the harness reads as results): a scenario's own marks
/// must not use these names.
pub const RESERVED_MARKERS: &[&str] = &[
    RUNNER_START,
    DONE,
    "plan",
    "step",
    "observe",
    "write-begin",
    "write-end",
    "dmesg-begin",
    "dmesg-end",
    "bench",
    "gpiochip",
    "wired",
    "rewired",
    "nvmem",
    "refcnt",
    "irq-event",
    "irq-count",
    "irq-requested",
    "gone",
    "line-is",
    "read-back",
    "rmmod-begin",
    "rmmod-end",
    "rewire-begin",
    "alive",
    "kmemleak-scan",
    "kmemleak-scanned",
    "lacks",
    "kconfig",
    "kconfig-wrong",
];

/// Whether `name` is one of [`RESERVED_MARKERS`].
pub fn reserved_marker(name: &str) -> bool {
    RESERVED_MARKERS.contains(&name)
}

/// How often the console file is polled.
const POLL: Duration = Duration::from_millis(50);

/// Errors following the console.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Reading the console file failed.
    #[error("reading console {path}")]
    Io {
        /// The console file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The marker did not appear in time.
    #[error("no 'VGN-MARK: {marker}' within {}s", .waited.as_secs_f64())]
    Timeout {
        /// The marker waited for.
        marker: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The guest (QEMU) ended before printing the marker.
    #[error("QEMU exited before 'VGN-MARK: {marker}'")]
    Exited {
        /// The marker waited for.
        marker: String,
    },
}

/// One parsed marker line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The marker's name, the first word after the prefix.
    pub name: String,
    /// Words without `=`, in order.
    pub words: Vec<String>,
    /// `key=value` fields, in order.
    pub fields: Vec<(String, String)>,
}

impl Marker {
    /// Parses a console line holding a marker. Kernel messages on the same
    /// serial line may precede it, so the prefix is searched for anywhere.
    pub fn parse(line: &str) -> Option<Marker> {
        let at = line.find(MARKER_PREFIX)?;
        let rest = line[at + MARKER_PREFIX.len()..].trim_end_matches(['\r', '\n']);
        let mut it = rest.split_whitespace();
        let name = it.next()?.to_owned();
        let mut words = Vec::new();
        let mut fields = Vec::new();
        for tok in it {
            match tok.split_once('=') {
                Some((k, v)) if !k.is_empty() => fields.push((k.to_owned(), v.to_owned())),
                _ => words.push(tok.to_owned()),
            }
        }
        Some(Marker {
            name,
            words,
            fields,
        })
    }

    /// The value of the first field named `key`.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits appended console bytes into complete lines, keeping a partial
/// last line for the next chunk. Carriage returns are dropped and invalid
/// UTF-8 is replaced, so any guest output is accepted.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; returns the lines they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                out.push(Self::finish(&std::mem::take(&mut self.partial)));
            } else if b != b'\r' {
                self.partial.push(b);
            }
        }
        out
    }

    /// The unterminated rest, if any (e.g. at the end of a run).
    pub fn flush(&mut self) -> Option<String> {
        if self.partial.is_empty() {
            None
        } else {
            Some(Self::finish(&std::mem::take(&mut self.partial)))
        }
    }

    fn finish(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }
}

/// Follows a console file that QEMU writes.
#[derive(Debug)]
pub struct Console {
    path: PathBuf,
    offset: u64,
    splitter: LineSplitter,
    lines: Vec<String>,
    /// Index of the first line not yet searched by `wait_for_marker`.
    cursor: usize,
}

impl Console {
    /// Follows `path` from its start (it need not exist yet).
    pub fn new(path: &Path) -> Self {
        Console {
            path: path.to_path_buf(),
            offset: 0,
            splitter: LineSplitter::default(),
            lines: Vec::new(),
            cursor: 0,
        }
    }

    /// The console file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was appended since the last call; returns the number of new lines.
    pub fn poll(&mut self) -> Result<usize, ConsoleError> {
        let io = |source| ConsoleError::Io {
            path: self.path.clone(),
            source,
        };
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(e)),
        };
        f.seek(SeekFrom::Start(self.offset)).map_err(io)?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(io)?;
        self.offset += u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let new = self.splitter.push(&buf);
        let n = new.len();
        self.lines.extend(new);
        Ok(n)
    }

    /// Every complete line read so far.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Everything read so far, including an unterminated last line.
    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        if !self.splitter.partial.is_empty() {
            s.push('\n');
            s.push_str(&String::from_utf8_lossy(&self.splitter.partial));
        }
        s
    }

    /// The last `n` lines, for error reports.
    pub fn tail(&self, n: usize) -> &[String] {
        &self.lines[self.lines.len().saturating_sub(n)..]
    }

    /// Waits until a marker named `name` appears after the previously found
    /// one, at most `timeout`. `running` is asked between polls whether the
    /// guest is still alive; once it is not, the file is read one last time.
    pub fn wait_for_marker(
        &mut self,
        name: &str,
        timeout: Duration,
        mut running: impl FnMut() -> bool,
    ) -> Result<Marker, ConsoleError> {
        let start = Instant::now();
        loop {
            let alive = running();
            self.poll()?;
            while self.cursor < self.lines.len() {
                let line = &self.lines[self.cursor];
                self.cursor += 1;
                if let Some(m) = Marker::parse(line) {
                    if m.name == name {
                        return Ok(m);
                    }
                }
            }
            if !alive {
                return Err(ConsoleError::Exited {
                    marker: name.to_owned(),
                });
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(ConsoleError::Timeout {
                    marker: name.to_owned(),
                    waited,
                });
            }
            std::thread::sleep(POLL.min(timeout - waited));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parses_markers() {
        let m = Marker::parse("VGN-MARK: runner-start kernel=6.1.0 scenario=boot uptime=1.23\r")
            .unwrap();
        assert_eq!(m.name, "runner-start");
        assert_eq!(m.field("kernel"), Some("6.1.0"));
        assert_eq!(m.field("scenario"), Some("boot"));
        assert_eq!(m.field("uptime"), Some("1.23"));
        assert_eq!(m.field("nope"), None);
        assert!(m.words.is_empty());

        let m = Marker::parse("[    3.1] x: yVGN-MARK: irq-result timeout").unwrap();
        assert_eq!(m.name, "irq-result");
        assert_eq!(m.words, ["timeout"]);

        let m = Marker::parse("VGN-MARK: wired wired chip=virtio1 offset=3 =odd").unwrap();
        assert_eq!(m.words, ["wired", "=odd"]);
        assert_eq!(m.field("offset"), Some("3"));

        assert_eq!(Marker::parse("VGN-MARK: "), None);
        assert_eq!(Marker::parse("no marker here"), None);
        assert_eq!(Marker::parse("VGN-MARK:missing-space"), None);
    }

    #[test]
    fn splits_lines_across_chunks() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"abc").is_empty());
        assert_eq!(s.push(b"def\r\ngh\n\nij"), ["abcdef", "gh", ""]);
        assert_eq!(s.push(b"\xff\n"), ["ij\u{fffd}"]);
        assert_eq!(s.flush(), None);
        s.push(b"tail");
        assert_eq!(s.flush().as_deref(), Some("tail"));
    }

    #[test]
    fn waits_for_markers_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("console.log");
        let mut c = Console::new(&p);
        // A missing file is not an error: QEMU may not have created it yet.
        assert_eq!(c.poll().unwrap(), 0);
        let mut f = File::create(&p).unwrap();
        write!(
            f,
            "boot\nVGN-MARK: step 1 a\nVGN-MARK: step 2 b\nVGN-MARK: do"
        )
        .unwrap();
        f.flush().unwrap();
        let m = c
            .wait_for_marker("step", Duration::from_secs(5), || true)
            .unwrap();
        assert_eq!(m.words, ["1", "a"]);
        let m = c
            .wait_for_marker("step", Duration::from_secs(5), || true)
            .unwrap();
        assert_eq!(m.words, ["2", "b"]);
        // "done" is incomplete (no newline) and the guest is gone.
        let e = c
            .wait_for_marker("done", Duration::from_secs(5), || false)
            .unwrap_err();
        assert!(matches!(e, ConsoleError::Exited { ref marker } if marker == "done"));
        writeln!(f, "ne scenario=boot").unwrap();
        f.flush().unwrap();
        let m = c
            .wait_for_marker("done", Duration::from_secs(5), || true)
            .unwrap();
        assert_eq!(m.field("scenario"), Some("boot"));
        let e = c
            .wait_for_marker("never", Duration::ZERO, || true)
            .unwrap_err();
        assert!(matches!(e, ConsoleError::Timeout { .. }));
        assert!(c.text().starts_with("boot\n"));
        assert_eq!(c.tail(1), ["VGN-MARK: done scenario=boot"]);
    }
}
