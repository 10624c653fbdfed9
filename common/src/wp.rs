// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The shared model of the EEPROM's write-protect (WP) line.
//!
//! vhost-gpio publishes the effective level of one of its lines to a small state file; the
//! EEPROM backend reads it at every STOP of a write. The file is the whole interface, so the two
//! backends are separate processes that may start, stop and die in any order.
//!
//! # File layout (64 bytes, little endian)
//!
//! | offset | size | field                                                    |
//! |--------|------|----------------------------------------------------------|
//! | 0      | 8    | magic `VGNWPST\0`                                        |
//! | 8      | 4    | version, 1                                               |
//! | 12     | 1    | pull: 0 down, 1 up, 2 none                               |
//! | 13     | 1    | level last published by the writer: 0 or 1               |
//! | 14     | 1    | driven: 1 while the guest drives the line as an output   |
//! | 15     | 1    | reserved, 0                                              |
//! | 16     | 8    | sequence, bumped on every publish                        |
//! | 24     | 40   | reserved, 0                                              |
//!
//! Any process may map or read the file. Positional writes go straight to the page cache, so
//! once [`WpWriter::publish`] has returned, any later read by any process sees the new level.
//!
//! # Liveness
//!
//! The writer holds an exclusive `flock` on the file for as long as it lives. The kernel drops
//! it when the process exits or is killed, even with `SIGKILL`. A reader tests the lock on every
//! [`WpReader::read`]: with no live writer the line floats, and reads as the stored pull. The
//! writer itself publishes the pull when the guest stops driving the line.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::line::Pull;

/// Size of the state file in bytes.
pub const WP_STATE_SIZE: usize = 64;
/// Magic at the start of the state file.
pub const WP_STATE_MAGIC: [u8; 8] = *b"VGNWPST\0";
/// Layout version of the state file.
pub const WP_STATE_VERSION: u32 = 1;

const OFF_PULL: usize = 12;
const OFF_SEQUENCE: usize = 16;

/// How long a starting writer retries for the lock while readers test it.
const WRITER_LOCK_PATIENCE: Duration = Duration::from_millis(500);

/// Errors of the WP state file.
#[derive(Debug, thiserror::Error)]
pub enum WpError {
    /// A system call on the file failed.
    #[error("WP state file {path}: {source}")]
    Io {
        /// The state file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The file is not 64 bytes long.
    #[error(
        "WP state file {path} has {size} bytes, expected {WP_STATE_SIZE}: not a WP state file"
    )]
    BadSize {
        /// The state file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The file does not start with the magic.
    #[error("WP state file {path} has the wrong magic: not a WP state file")]
    BadMagic {
        /// The state file.
        path: PathBuf,
    },
    /// The file has another layout version.
    #[error(
        "WP state file {path} has version {version}, this program knows version {WP_STATE_VERSION}"
    )]
    BadVersion {
        /// The state file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// A field holds a value no writer stores.
    #[error("WP state file {path} is corrupt: {what}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// Which field.
        what: String,
    },
    /// Another live process already publishes this line.
    #[error("WP state file {path} is held by another live writer (is another vhost-gpio running with it?)")]
    WriterBusy {
        /// The state file.
        path: PathBuf,
    },
}

type Result<T> = std::result::Result<T, WpError>;

/// The line as a reader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WpSample {
    /// The effective level: the published one with a live writer, else the pull's.
    pub level: bool,
    /// The guest drives the line as an output (false without a live writer).
    pub driven: bool,
    /// A live writer holds the file.
    pub writer_alive: bool,
    /// The pull stored in the file.
    pub pull: Pull,
    /// The writer's sequence number of the last publish.
    pub sequence: u64,
}

/// The decoded content of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Content {
    pull: Pull,
    level: bool,
    driven: bool,
    sequence: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> WpError + '_ {
    move |source| WpError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn encode(content: &Content) -> [u8; WP_STATE_SIZE] {
    let mut buf = [0u8; WP_STATE_SIZE];
    buf[0..8].copy_from_slice(&WP_STATE_MAGIC);
    buf[8..12].copy_from_slice(&WP_STATE_VERSION.to_le_bytes());
    buf[OFF_PULL..OFF_SEQUENCE].copy_from_slice(&encode_state(content));
    buf[OFF_SEQUENCE..OFF_SEQUENCE + 8].copy_from_slice(&content.sequence.to_le_bytes());
    buf
}

/// Bytes 12..16: pull, level, driven, reserved.
fn encode_state(content: &Content) -> [u8; 4] {
    [
        content.pull.to_byte(),
        u8::from(content.level),
        u8::from(content.driven),
        0,
    ]
}

fn decode(path: &Path, buf: &[u8; WP_STATE_SIZE]) -> Result<Content> {
    if buf[0..8] != WP_STATE_MAGIC {
        return Err(WpError::BadMagic {
            path: path.to_path_buf(),
        });
    }
    let version = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if version != WP_STATE_VERSION {
        return Err(WpError::BadVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    let corrupt = |what: String| WpError::Corrupt {
        path: path.to_path_buf(),
        what,
    };
    let pull = Pull::from_byte(buf[OFF_PULL])
        .ok_or_else(|| corrupt(format!("pull byte {}", buf[OFF_PULL])))?;
    let flag = |off: usize, name: &str| match buf[off] {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(corrupt(format!("{name} byte {b}"))),
    };
    let level = flag(OFF_PULL + 1, "level")?;
    let driven = flag(OFF_PULL + 2, "driven")?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&buf[OFF_SEQUENCE..OFF_SEQUENCE + 8]);
    Ok(Content {
        pull,
        level,
        driven,
        sequence: u64::from_le_bytes(seq),
    })
}

/// Creates the file at `path` with `content`, atomically: a reader never sees it half written.
/// Does nothing if a file is already there.
fn create_if_absent(path: &Path, content: &Content) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".wp-state-")
        .tempfile_in(&dir)
        .map_err(io_err(path))?;
    tmp.as_file()
        .write_all_at(&encode(content), 0)
        .map_err(io_err(path))?;
    // A hard link fails if the name exists: whoever links first wins and the other one
    // opens the winner's file.
    match std::fs::hard_link(tmp.path(), path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Reads and validates the whole file.
fn read_content(file: &File, path: &Path) -> Result<Content> {
    let size = file.metadata().map_err(io_err(path))?.len();
    if size != WP_STATE_SIZE as u64 {
        return Err(WpError::BadSize {
            path: path.to_path_buf(),
            size,
        });
    }
    let mut buf = [0u8; WP_STATE_SIZE];
    file.read_exact_at(&mut buf, 0).map_err(io_err(path))?;
    decode(path, &buf)
}

/// The publishing side, held by vhost-gpio for as long as it runs.
#[derive(Debug)]
pub struct WpWriter {
    file: File,
    path: PathBuf,
    pull: Pull,
    sequence: AtomicU64,
}

impl WpWriter {
    /// Opens or creates the state file, takes the writer lock, stores `pull` and publishes the
    /// floating level (the pull's, undriven).
    ///
    /// Fails with [`WpError::WriterBusy`] if another live process holds the file.
    pub fn open(path: &Path, pull: Pull) -> Result<WpWriter> {
        create_if_absent(
            path,
            &Content {
                pull,
                level: pull.level(),
                driven: false,
                sequence: 0,
            },
        )?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        // Validate before locking, so a wrong file gets its own error.
        let content = read_content(&file, path)?;
        // Readers take a shared lock for a few microseconds to test for us: retry a little.
        let deadline = Instant::now() + WRITER_LOCK_PATIENCE;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(1));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(WpError::WriterBusy {
                        path: path.to_path_buf(),
                    })
                }
                Err(TryLockError::Error(e)) => return Err(io_err(path)(e)),
            }
        }
        let writer = WpWriter {
            file,
            path: path.to_path_buf(),
            pull,
            sequence: AtomicU64::new(content.sequence),
        };
        writer.release()?;
        Ok(writer)
    }

    /// Publishes the line's effective level. `driven` tells that the guest drives it as an
    /// output. When this returns, a read of the file by any process sees the new state.
    pub fn publish(&self, level: bool, driven: bool) -> Result<()> {
        let sequence = self.sequence.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        let content = Content {
            pull: self.pull,
            level,
            driven,
            sequence,
        };
        let mut buf = [0u8; 12];
        buf[0..4].copy_from_slice(&encode_state(&content));
        buf[4..12].copy_from_slice(&sequence.to_le_bytes());
        // One positional write of bytes 12..24; the level is a single byte, so a concurrent
        // reader sees either the old or the new level, never a mix.
        self.file
            .write_all_at(&buf, OFF_PULL as u64)
            .map_err(io_err(&self.path))?;
        log::debug!(
            "WP {}: level {} driven {driven} (seq {sequence})",
            self.path.display(),
            u8::from(level)
        );
        Ok(())
    }

    /// Publishes the floating level: the pull's, undriven.
    pub fn release(&self) -> Result<()> {
        self.publish(self.pull.level(), false)
    }

    /// The pull stored in the file.
    pub fn pull(&self) -> Pull {
        self.pull
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WpWriter {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            log::warn!("releasing the WP line on exit: {e}");
        }
        // The lock goes with the file descriptor.
    }
}

/// The reading side, held by the EEPROM backend.
#[derive(Debug)]
pub struct WpReader {
    file: File,
    path: PathBuf,
}

impl WpReader {
    /// Opens the state file, creating it (pulled up, floating) if absent, and validates it.
    pub fn open(path: &Path) -> Result<WpReader> {
        create_if_absent(
            path,
            &Content {
                pull: Pull::Up,
                level: true,
                driven: false,
                sequence: 0,
            },
        )?;
        let file = File::open(path).map_err(io_err(path))?;
        read_content(&file, path)?;
        Ok(WpReader {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The line now. Without a live writer it floats and reads as the stored pull.
    pub fn read(&self) -> Result<WpSample> {
        let content = read_content(&self.file, &self.path)?;
        let writer_alive = match self.file.try_lock_shared() {
            Ok(()) => {
                self.file.unlock().map_err(io_err(&self.path))?;
                false
            }
            Err(TryLockError::WouldBlock) => true,
            Err(TryLockError::Error(e)) => return Err(io_err(&self.path)(e)),
        };
        Ok(if writer_alive {
            WpSample {
                level: content.level,
                driven: content.driven,
                writer_alive,
                pull: content.pull,
                sequence: content.sequence,
            }
        } else {
            WpSample {
                level: content.pull.level(),
                driven: false,
                writer_alive,
                pull: content.pull,
                sequence: content.sequence,
            }
        })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("wp.state")
    }

    #[test]
    fn reader_creates_a_pulled_up_floating_line() {
        let dir = tempfile::tempdir().unwrap();
        let r = WpReader::open(&state_path(&dir)).unwrap();
        let s = r.read().unwrap();
        assert_eq!(s.pull, Pull::Up);
        assert!(s.level);
        assert!(!s.writer_alive);
        assert!(!s.driven);
        assert_eq!(
            std::fs::metadata(state_path(&dir)).unwrap().len(),
            WP_STATE_SIZE as u64
        );
    }

    #[test]
    fn writer_publishes_and_reader_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let w = WpWriter::open(&state_path(&dir), Pull::Up).unwrap();
        let r = WpReader::open(&state_path(&dir)).unwrap();
        let s0 = r.read().unwrap();
        assert!(s0.writer_alive);
        assert!(s0.level);
        w.publish(false, true).unwrap();
        let s1 = r.read().unwrap();
        assert!(!s1.level);
        assert!(s1.driven);
        assert!(s1.sequence > s0.sequence);
        w.release().unwrap();
        let s2 = r.read().unwrap();
        assert!(s2.level);
        assert!(!s2.driven);
    }

    #[test]
    fn writer_stores_its_pull_over_a_readers_default() {
        let dir = tempfile::tempdir().unwrap();
        let r = WpReader::open(&state_path(&dir)).unwrap();
        let w = WpWriter::open(&state_path(&dir), Pull::Down).unwrap();
        assert_eq!(r.read().unwrap().pull, Pull::Down);
        assert!(!r.read().unwrap().level);
        drop(w);
        // Dead writer: floats to the pull it stored.
        let s = r.read().unwrap();
        assert!(!s.writer_alive);
        assert_eq!(s.pull, Pull::Down);
        assert!(!s.level);
    }

    #[test]
    fn a_dead_writer_reads_as_the_pull_even_if_it_left_a_driven_level() {
        // What a writer killed with SIGKILL leaves: a driven low level and no lock.
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        let content = Content {
            pull: Pull::Up,
            level: false,
            driven: true,
            sequence: 7,
        };
        std::fs::write(&path, encode(&content)).unwrap();
        let r = WpReader::open(&path).unwrap();
        let s = r.read().unwrap();
        assert!(!s.writer_alive);
        assert!(!s.driven);
        assert!(s.level, "a line nobody drives reads its pull-up");
        assert_eq!(s.sequence, 7);
    }

    #[test]
    fn second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _w = WpWriter::open(&state_path(&dir), Pull::Up).unwrap();
        let err = WpWriter::open(&state_path(&dir), Pull::Up).unwrap_err();
        assert!(matches!(err, WpError::WriterBusy { .. }), "{err}");
    }

    #[test]
    fn writer_can_take_over_after_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let w = WpWriter::open(&state_path(&dir), Pull::Up).unwrap();
        w.publish(false, true).unwrap();
        drop(w);
        let w2 = WpWriter::open(&state_path(&dir), Pull::Up).unwrap();
        let r = WpReader::open(&state_path(&dir)).unwrap();
        let s = r.read().unwrap();
        assert!(s.writer_alive);
        assert!(s.level);
        drop(w2);
    }

    #[test]
    fn bad_files_are_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);

        std::fs::write(&path, [0u8; 10]).unwrap();
        assert!(matches!(
            WpReader::open(&path).unwrap_err(),
            WpError::BadSize { size: 10, .. }
        ));
        assert!(matches!(
            WpWriter::open(&path, Pull::Up).unwrap_err(),
            WpError::BadSize { size: 10, .. }
        ));

        std::fs::write(&path, [0u8; WP_STATE_SIZE]).unwrap();
        assert!(matches!(
            WpReader::open(&path).unwrap_err(),
            WpError::BadMagic { .. }
        ));

        let mut buf = encode(&Content {
            pull: Pull::Up,
            level: true,
            driven: false,
            sequence: 0,
        });
        buf[8] = 9;
        std::fs::write(&path, buf).unwrap();
        let err = WpReader::open(&path).unwrap_err();
        assert!(matches!(err, WpError::BadVersion { version: 9, .. }));
        assert!(err.to_string().contains("version 9"));

        buf[8] = 1;
        buf[OFF_PULL] = 5;
        std::fs::write(&path, buf).unwrap();
        assert!(matches!(
            WpReader::open(&path).unwrap_err(),
            WpError::Corrupt { .. }
        ));
    }

    #[test]
    fn concurrent_creators_agree_on_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = path.clone();
                thread::spawn(move || WpReader::open(&p).map(|r| r.read().unwrap().pull))
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap(), Pull::Up);
        }
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("wp.state")]);
    }

    #[test]
    fn readers_testing_the_lock_do_not_block_a_starting_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(&dir);
        let r = WpReader::open(&path).unwrap();
        let reads = std::sync::Arc::new(AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (reads2, stop2) = (reads.clone(), stop.clone());
        let reader = thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                r.read().unwrap();
                reads2.fetch_add(1, Ordering::Relaxed);
            }
        });
        // Open and close writers while the reader tests the lock, until both sides have
        // done a fair amount of work at the same time.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut opens = 0;
        while opens < 20 || reads.load(Ordering::Relaxed) < 200 {
            assert!(
                Instant::now() < deadline,
                "reader or writers made no progress"
            );
            let w = WpWriter::open(&path, Pull::Up).unwrap();
            drop(w);
            opens += 1;
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
    }
}
