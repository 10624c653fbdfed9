// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-i2c workloads against an AT24-style EEPROM: 32-byte random reads (word-address
//! write + repeated START + read, one FAIL_NEXT group), page writes, and a sequential read of
//! the whole device in the chunks Linux at24 uses.
//!
//! Only the virtio-i2c wire format is used, so any backend with an AT24-compatible device at
//! the address can be measured. Transfers go one at a time, as the Linux i2c core serialises
//! the transfers of one adapter.

use std::time::Instant;

use test_kit::frontend::{Buf, Completion, FrontendOptions, TestFrontend};

use crate::stats::Tally;
use crate::{BenchError, Result, TIMEOUT};

const FAIL_NEXT: u32 = 1;
const M_RD: u32 = 2;
const STATUS_OK: u8 = 0;
const F_ZERO_LENGTH: u64 = 1 << 0;
const F_VERSION_1: u64 = 1 << 32;
const F_INDIRECT: u64 = 1 << 28;
const F_EVENT_IDX: u64 = 1 << 29;
/// Largest read chunk: what fits one descriptor slot.
pub const MAX_CHUNK: u32 = 4096;

/// Frontend options for an i2c adapter: one requestq.
pub fn options() -> FrontendOptions {
    FrontendOptions {
        queue_sizes: vec![64],
        features: F_VERSION_1 | F_INDIRECT | F_EVENT_IDX | F_ZERO_LENGTH,
        slot_size: MAX_CHUNK + 64,
        ..FrontendOptions::default()
    }
}

/// The EEPROM being measured.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// 7-bit I2C address.
    pub addr: u16,
    /// Bytes of memory.
    pub size: u32,
    /// Page size.
    pub page: u32,
}

impl Target {
    /// Checks the geometry: one-byte parts up to 256 bytes, two-byte parts from 4 KiB (the
    /// block-select parts in between address several I2C addresses and are not measured).
    pub fn validate(&self) -> Result<()> {
        let ok_size = self.size.is_power_of_two()
            && (self.size <= 256 || (4096..=65536).contains(&self.size));
        if !ok_size {
            return Err(BenchError::Setup(format!(
                "--size {}: use a power of two up to 256 (one address byte) or 4096..65536 (two)",
                self.size
            )));
        }
        if !self.page.is_power_of_two() || self.page > self.size || self.page > 256 {
            return Err(BenchError::Setup(format!(
                "--page {}: a power of two up to 256 and the size",
                self.page
            )));
        }
        if !(0x08..=0x77).contains(&self.addr) {
            return Err(BenchError::Setup(format!(
                "--addr {:#x}: a 7-bit address 0x08..0x77",
                self.addr
            )));
        }
        Ok(())
    }

    fn word(&self, offset: u32, out: &mut [u8; 2]) -> usize {
        let b = offset.to_be_bytes();
        if self.size > 256 {
            out.copy_from_slice(&b[2..4]);
            2
        } else {
            out[0] = b[3];
            1
        }
    }
}

fn hdr(addr: u16, flags: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..2].copy_from_slice(&(addr << 1).to_le_bytes());
    h[4..].copy_from_slice(&flags.to_le_bytes());
    h
}

/// A small deterministic generator (xorshift64*), so runs are repeatable.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded; the seed 0 is replaced.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value below `n` (n > 0).
    pub fn below(&mut self, n: u32) -> u32 {
        u32::try_from(self.next_u64() % u64::from(n.max(1))).unwrap_or(0)
    }
}

fn status_ok(c: &Completion, data_len: u32) -> bool {
    let Some(st) = c.ins.last() else {
        return false;
    };
    c.len == data_len + 1 && st.first() == Some(&STATUS_OK)
}

/// One random-read transfer (address write with FAIL_NEXT, then the read); returns whether
/// both chains succeeded. `used` receives the two completions (reused, not reallocated).
fn random_read(
    fe: &mut TestFrontend,
    t: &Target,
    offset: u32,
    len: u32,
    used: &mut [Completion; 2],
) -> Result<bool> {
    let mut w = [0u8; 2];
    let n = t.word(offset, &mut w);
    let h1 = hdr(t.addr, FAIL_NEXT);
    let h2 = hdr(t.addr, M_RD);
    fe.submit(0, &[Buf::Out(&h1), Buf::Out(&w[..n]), Buf::In(1)], false)?;
    fe.submit(0, &[Buf::Out(&h2), Buf::In(len), Buf::In(1)], false)?;
    fe.kick(0)?;
    let [a, b] = used;
    fe.wait_used_into(0, TIMEOUT, a)?;
    fe.wait_used_into(0, TIMEOUT, b)?;
    Ok(status_ok(a, 0) && status_ok(b, len))
}

/// One page write (word address and data in one message, as Linux at24 sends it).
fn page_write(
    fe: &mut TestFrontend,
    t: &Target,
    offset: u32,
    data: &mut [u8; 258],
    len: usize,
    used: &mut Completion,
) -> Result<bool> {
    let mut w = [0u8; 2];
    let n = t.word(offset, &mut w);
    // The word address goes in front of the data in the same buffer.
    let start = 2 - n;
    data[start..2].copy_from_slice(&w[..n]);
    let h = hdr(t.addr, 0);
    fe.submit(
        0,
        &[Buf::Out(&h), Buf::Out(&data[start..2 + len]), Buf::In(1)],
        false,
    )?;
    fe.kick(0)?;
    fe.wait_used_into(0, TIMEOUT, used)?;
    Ok(status_ok(used, 0))
}

/// Probes the device with a one-byte random read at 0.
pub fn probe(fe: &mut TestFrontend, t: &Target) -> Result<()> {
    if random_read(fe, t, 0, 1, &mut Default::default())? {
        Ok(())
    } else {
        Err(BenchError::Setup(format!(
            "no device answers a read at I2C address {:#x}",
            t.addr
        )))
    }
}

/// The i2c workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// `len`-byte reads at random offsets aligned to `len`.
    RandomRead {
        /// Bytes per read.
        len: u32,
    },
    /// Page writes of `len` bytes at random page-aligned offsets.
    PageWrite {
        /// Bytes per write (at most a page).
        len: u32,
    },
    /// The whole device, from 0, in `chunk`-byte transfers, pass after pass.
    SeqRead {
        /// Bytes per transfer.
        chunk: u32,
    },
}

/// Runs `work` until `deadline` (a sequential pass in progress is finished).
pub fn run(
    fe: &mut TestFrontend,
    t: &Target,
    work: Work,
    deadline: Instant,
    record: bool,
    rng: &mut Rng,
) -> Result<Tally> {
    let mut tally = Tally::default();
    let mut data = [0u8; 258];
    let mut offset = 0u32;
    let mut used: [Completion; 2] = Default::default();
    loop {
        let at_start_of_pass = offset == 0;
        if Instant::now() >= deadline && (at_start_of_pass || !matches!(work, Work::SeqRead { .. }))
        {
            return Ok(tally);
        }
        let start = Instant::now();
        let (ok, chains, bytes) = match work {
            Work::RandomRead { len } => {
                let slots = (t.size / len).max(1);
                let off = rng.below(slots) * len;
                (random_read(fe, t, off, len, &mut used)?, 2, len)
            }
            Work::PageWrite { len } => {
                let off = rng.below(t.size / t.page) * t.page;
                let l = usize::try_from(len.min(t.page)).unwrap_or(0);
                for b in data[2..2 + l].iter_mut() {
                    *b = u8::try_from(rng.next_u64() & 0xff).unwrap_or(0);
                }
                (page_write(fe, t, off, &mut data, l, &mut used[0])?, 1, len)
            }
            Work::SeqRead { chunk } => {
                let len = chunk.min(t.size - offset);
                let ok = random_read(fe, t, offset, len, &mut used)?;
                offset = (offset + len) % t.size;
                (ok, 2, len)
            }
        };
        if record {
            tally.samples.push(start.elapsed());
            tally.requests += 1;
            tally.chains += chains;
            if ok {
                tally.bytes += u64::from(bytes);
            } else {
                tally.errors += 1;
            }
        }
    }
}

/// Checks `--chunk`.
pub fn validate_chunk(chunk: u32) -> Result<()> {
    if chunk == 0 || chunk > MAX_CHUNK {
        return Err(BenchError::Setup(format!(
            "--chunk {chunk}: 1..={MAX_CHUNK} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_address_width_follows_the_size() {
        let mut w = [0u8; 2];
        let t = Target {
            addr: 0x50,
            size: 4096,
            page: 32,
        };
        assert_eq!(t.word(0x0123, &mut w), 2);
        assert_eq!(w, [0x01, 0x23]);
        let t = Target { size: 256, ..t };
        assert_eq!(t.word(0x42, &mut w), 1);
        assert_eq!(w[0], 0x42);
    }

    #[test]
    fn geometry_is_validated() {
        let t = Target {
            addr: 0x50,
            size: 4096,
            page: 32,
        };
        assert!(t.validate().is_ok());
        assert!(Target { size: 2048, ..t }.validate().is_err());
        assert!(Target { page: 48, ..t }.validate().is_err());
        assert!(Target { addr: 0x78, ..t }.validate().is_err());
        assert!(validate_chunk(0).is_err());
        assert!(validate_chunk(128).is_ok());
    }

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            let v = a.below(128);
            assert_eq!(v, b.below(128));
            assert!(v < 128);
        }
    }
}
