// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Timing of GPIO round trips and nvmem transfers from guest user space.
//!
//! The guest's busybox has no clock finer than `/proc/uptime`'s 10 ms and a
//! shell loop would time its own forks, so the loops and the clock live here.
//! The pure parts (percentiles, the write pattern, its checksum, the result
//! record) are tested on any host; the loops need a guest.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::spec::record;

/// Errors of the nvmem benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The nvmem file could not be opened, read or written.
    #[error("{what} {path}")]
    Io {
        /// What failed.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file is empty (or not a nvmem device).
    #[error("{0} is empty: not a nvmem device?")]
    Empty(PathBuf),
    /// What was read back is not what was written.
    #[error("{path}: pass {pass} read back differs from what was written at offset {offset:#x}")]
    Verify {
        /// The file.
        path: PathBuf,
        /// Which write pass.
        pass: u64,
        /// First differing offset.
        offset: usize,
    },
}

/// Latencies of one kind of operation and how long the loop ran.
#[derive(Debug, Default)]
pub struct Samples {
    /// Per-operation latency in nanoseconds.
    pub ns: Vec<u64>,
    /// Wall time of the whole loop.
    pub elapsed: Duration,
}

impl Samples {
    /// Adds one operation's latency.
    pub fn push(&mut self, d: Duration) {
        self.ns
            .push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Operations per second over the summed latencies.
    pub fn per_second(&self) -> f64 {
        let total: u64 = self.ns.iter().sum();
        if total == 0 {
            return 0.0;
        }
        self.ns.len() as f64 / (total as f64 / 1e9)
    }

    /// The latency at `per_mille`/1000 (nearest rank) in microseconds.
    pub fn quantile_us(&self, per_mille: usize) -> f64 {
        if self.ns.is_empty() {
            return 0.0;
        }
        let mut v = self.ns.clone();
        v.sort_unstable();
        let rank = (per_mille.min(1000) * v.len()).div_ceil(1000);
        v[rank.clamp(1, v.len()) - 1] as f64 / 1e3
    }

    /// The `bench` record of these samples.
    pub fn record(&self, kind: &str, extra: &[(&str, String)]) -> String {
        let mut fields = vec![
            ("kind", kind.to_owned()),
            ("ops", self.ns.len().to_string()),
            ("seconds", format!("{:.3}", self.elapsed.as_secs_f64())),
            ("per_s", format!("{:.0}", self.per_second())),
            ("p50_us", format!("{:.1}", self.quantile_us(500))),
            ("p99_us", format!("{:.1}", self.quantile_us(990))),
        ];
        fields.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        record("bench", &fields)
    }
}

/// The bytes written by pass `pass` of a write benchmark: xorshift64 from a
/// seed that differs per pass, so every pass changes every page.
pub fn pattern(pass: u64, len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ pass.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    if x == 0 {
        x = 1;
    }
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// 64-bit FNV-1a, which the host recomputes over the EEPROM image.
pub fn fnv64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BenchError {
    let path = path.to_path_buf();
    move |source| BenchError::Io { what, path, source }
}

/// Reads the whole file at offset 0 (sysfs may return less than asked).
fn read_all(f: &File, buf: &mut [u8], path: &Path) -> Result<(), BenchError> {
    f.read_exact_at(buf, 0).map_err(io_err("reading", path))
}

/// Result of [`nvmem`].
#[derive(Debug)]
pub struct NvmemResult {
    /// Size of the device.
    pub size: usize,
    /// Whole-device passes timed.
    pub passes: u64,
    /// Time spent in the timed transfers.
    pub elapsed: Duration,
    /// Checksum of the last data written (writes only).
    pub last_fnv64: Option<u64>,
}

impl NvmemResult {
    /// Bytes per second over the timed transfers.
    pub fn bytes_per_second(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s == 0.0 {
            return 0.0;
        }
        (self.size as u64 * self.passes) as f64 / s
    }

    /// The `bench` record.
    pub fn record(&self, kind: &str) -> String {
        let mut fields = vec![
            ("kind", kind.to_owned()),
            ("bytes", self.size.to_string()),
            ("passes", self.passes.to_string()),
            ("seconds", format!("{:.3}", self.elapsed.as_secs_f64())),
            ("bytes_per_s", format!("{:.0}", self.bytes_per_second())),
        ];
        if let Some(h) = self.last_fnv64 {
            fields.push(("verify", "ok".to_owned()));
            fields.push(("fnv64", format!("{h:016x}")));
        }
        record("bench", &fields)
    }
}

/// Reads (or, with `write`, writes then reads back and compares) the whole
/// nvmem device at `path` again and again for about `time`, at least once.
/// Only the transfers themselves are timed, not the checks.
pub fn nvmem(path: &Path, time: Duration, write: bool) -> Result<NvmemResult, BenchError> {
    let f = File::options()
        .read(true)
        .write(write)
        .open(path)
        .map_err(io_err("opening", path))?;
    let size = f
        .metadata()
        .map_err(io_err("reading the size of", path))?
        .len();
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if size == 0 {
        return Err(BenchError::Empty(path.to_path_buf()));
    }
    let mut buf = vec![0u8; size];
    let mut elapsed = Duration::ZERO;
    let mut passes = 0u64;
    let mut last_fnv64 = None;
    while passes == 0 || elapsed < time {
        if write {
            let data = pattern(passes, size);
            let t = Instant::now();
            f.write_all_at(&data, 0).map_err(io_err("writing", path))?;
            elapsed += t.elapsed();
            read_all(&f, &mut buf, path)?;
            if let Some(offset) = buf.iter().zip(&data).position(|(a, b)| a != b) {
                return Err(BenchError::Verify {
                    path: path.to_path_buf(),
                    pass: passes,
                    offset,
                });
            }
            last_fnv64 = Some(fnv64(&data));
        } else {
            let t = Instant::now();
            read_all(&f, &mut buf, path)?;
            elapsed += t.elapsed();
        }
        passes += 1;
    }
    Ok(NvmemResult {
        size,
        passes,
        elapsed,
        last_fnv64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let mut s = Samples::default();
        for us in 1..=100u64 {
            s.push(Duration::from_micros(us));
        }
        assert_eq!(s.quantile_us(500), 50.0);
        assert_eq!(s.quantile_us(990), 99.0);
        assert_eq!(s.quantile_us(1000), 100.0);
        assert_eq!(s.quantile_us(0), 1.0);
        // 100 ops in 5050 us.
        assert!((s.per_second() - 100.0 / 5050e-6).abs() < 1e-6);
        assert_eq!(Samples::default().quantile_us(500), 0.0);
        assert_eq!(Samples::default().per_second(), 0.0);
    }

    #[test]
    fn records_are_parseable() {
        let mut s = Samples::default();
        s.push(Duration::from_micros(250));
        s.elapsed = Duration::from_millis(1);
        assert_eq!(
            s.record("gpio-set", &[("mismatches", "0".into())]),
            "bench kind=gpio-set ops=1 seconds=0.001 per_s=4000 p50_us=250.0 p99_us=250.0 mismatches=0"
        );
        let r = NvmemResult {
            size: 4096,
            passes: 2,
            elapsed: Duration::from_secs(2),
            last_fnv64: Some(0xab),
        };
        assert_eq!(
            r.record("nvmem-write"),
            "bench kind=nvmem-write bytes=4096 passes=2 seconds=2.000 bytes_per_s=4096 verify=ok fnv64=00000000000000ab"
        );
    }

    #[test]
    fn every_pass_writes_other_bytes() {
        let a = pattern(0, 4096);
        let b = pattern(1, 4096);
        assert_eq!(a.len(), 4096);
        assert_eq!(pattern(0, 4096), a);
        // Every 32-byte page differs between consecutive passes.
        assert!(a.chunks(32).zip(b.chunks(32)).all(|(x, y)| x != y));
        assert_eq!(pattern(3, 5).len(), 5);
    }

    #[test]
    fn fnv64_matches_the_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn nvmem_round_trips_on_a_plain_file() {
        let dir = std::env::temp_dir().join(format!("gpio-tool-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("nvmem");
        std::fs::write(&file, vec![0xffu8; 256]).unwrap();
        let w = nvmem(&file, Duration::ZERO, true).unwrap();
        assert_eq!((w.size, w.passes), (256, 1));
        let on_disk = std::fs::read(&file).unwrap();
        assert_eq!(w.last_fnv64, Some(fnv64(&on_disk)));
        assert_eq!(on_disk, pattern(0, 256));
        let r = nvmem(&file, Duration::ZERO, false).unwrap();
        assert_eq!((r.passes, r.last_fnv64), (1, None));
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(
            nvmem(&file, Duration::ZERO, false),
            Err(BenchError::Empty(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
