// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! EEPROM image files.
//!
//! - An absent image is created at the device size, erased to 0xff. It is
//!   written under a temporary name and linked into place, so a crash never
//!   leaves a short image behind and two backends racing to create it agree.
//! - An existing image of another size is refused: never truncated, never grown.
//! - The image is locked exclusively (`flock`) for the life of the backend, so
//!   two backends cannot share it; the kernel drops the lock on any exit.
//! - Writes go to the file with `pwrite` at the STOP that ends a write cycle,
//!   before the request completes: they are in the page cache and survive a
//!   kill -9 of the backend. With `sync` they are also made durable with
//!   `fdatasync` before the request completes.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Errors of image handling.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O call failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The image.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The existing file has the wrong size.
    #[error("image {path} is {actual} bytes, the device needs exactly {expected}: refusing to truncate or grow it")]
    WrongSize {
        /// The image.
        path: PathBuf,
        /// Device size.
        expected: u64,
        /// File size.
        actual: u64,
    },
    /// The path is not a regular file.
    #[error("image {0} is not a regular file")]
    NotAFile(PathBuf),
    /// Another process (or another device of this one) holds the image.
    #[error("image {0} is locked by another backend")]
    Locked(PathBuf),
}

type Result<T> = std::result::Result<T, StorageError>;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StorageError + 'a {
    move |source| StorageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// An open, locked EEPROM image.
#[derive(Debug)]
pub struct Image {
    file: File,
    path: PathBuf,
    size: u64,
    sync: bool,
}

impl Image {
    /// Open `path` (creating it erased if absent), lock it and check its size.
    /// Returns the image and its contents.
    pub fn open(path: &Path, size: u64, sync: bool) -> Result<(Image, Vec<u8>)> {
        match std::fs::metadata(path) {
            Ok(m) if !m.is_file() => return Err(StorageError::NotAFile(path.to_path_buf())),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => create_erased(path, size)?,
            Err(e) => return Err(io("stat of", path)(e)),
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io("opening", path))?;
        let meta = file.metadata().map_err(io("stat of", path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StorageError::Locked(path.to_path_buf())),
            Err(TryLockError::Error(e)) => return Err(io("locking", path)(e)),
        }
        if meta.len() != size {
            return Err(StorageError::WrongSize {
                path: path.to_path_buf(),
                expected: size,
                actual: meta.len(),
            });
        }
        let mut contents = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        (&file)
            .read_to_end(&mut contents)
            .map_err(io("reading", path))?;
        if u64::try_from(contents.len()).ok() != Some(size) {
            return Err(StorageError::WrongSize {
                path: path.to_path_buf(),
                expected: size,
                actual: u64::try_from(contents.len()).unwrap_or(u64::MAX),
            });
        }
        Ok((
            Image {
                file,
                path: path.to_path_buf(),
                size,
                sync,
            },
            contents,
        ))
    }

    /// Path of the image.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the image.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Make every write so far durable (fdatasync), as on a clean exit.
    pub fn flush(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(io("fdatasync of", &self.path))
    }

    /// Write `data` at `offset` (into the page cache; durable with `sync`).
    pub fn persist(&self, offset: u32, data: &[u8]) -> Result<()> {
        let end = u64::from(offset) + u64::try_from(data.len()).unwrap_or(u64::MAX);
        if end > self.size {
            return Err(StorageError::Io {
                op: "writing past the end of",
                path: self.path.clone(),
                source: std::io::Error::from(ErrorKind::InvalidInput),
            });
        }
        self.file
            .write_all_at(data, u64::from(offset))
            .map_err(io("writing", &self.path))?;
        if self.sync {
            self.file
                .sync_data()
                .map_err(io("fdatasync of", &self.path))?;
        }
        Ok(())
    }
}

/// Create `path` erased to 0xff, atomically: a temporary file in the same
/// directory, synced, then hard-linked into place (fails if the path appeared
/// meanwhile, in which case the other creator's file is used).
fn create_erased(path: &Path, size: u64) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let tmp = dir.join(format!(".{name}.creating.{}", std::process::id()));
    let result = (|| {
        // Owner-only whatever the umask: the image is the device's contents.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        let chunk = vec![0xffu8; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = usize::try_from(left.min(64 * 1024)).unwrap_or(64 * 1024);
            f.write_all(&chunk[..n]).map_err(io("erasing", &tmp))?;
            left -= u64::try_from(n).unwrap_or(left);
        }
        f.sync_all().map_err(io("syncing", &tmp))?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("linking", path)(e)),
        }
        if let Ok(d) = File::open(&dir) {
            // Best effort: make the new name durable.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    if result.is_ok() {
        log::info!("created erased image {} ({size} bytes)", path.display());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_erased_image() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.bin");
        let (img, contents) = Image::open(&p, 4096, false).unwrap();
        assert_eq!(contents, vec![0xff; 4096]);
        assert_eq!(std::fs::read(&p).unwrap(), vec![0xff; 4096]);
        assert_eq!(img.size(), 4096);
        // No temporary left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn persists_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.bin");
        {
            let (img, _) = Image::open(&p, 256, true).unwrap();
            img.persist(10, &[1, 2, 3]).unwrap();
            assert!(img.persist(255, &[1, 2]).is_err());
        }
        let (_img, contents) = Image::open(&p, 256, false).unwrap();
        assert_eq!(&contents[9..14], &[0xff, 1, 2, 3, 0xff]);
    }

    #[test]
    fn wrong_size_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.bin");
        std::fs::write(&p, [0u8; 100]).unwrap();
        let e = Image::open(&p, 256, false).unwrap_err();
        assert!(matches!(
            e,
            StorageError::WrongSize {
                expected: 256,
                actual: 100,
                ..
            }
        ));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 100);
    }

    #[test]
    fn second_open_is_locked_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.bin");
        let first = Image::open(&p, 128, false).unwrap();
        let e = Image::open(&p, 128, false).unwrap_err();
        assert!(matches!(e, StorageError::Locked(_)), "{e}");
        drop(first);
        assert!(Image::open(&p, 128, false).is_ok());
    }

    #[test]
    fn directory_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = Image::open(dir.path(), 128, false).unwrap_err();
        assert!(matches!(e, StorageError::NotAFile(_)), "{e}");
    }
}
