// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The AT24 EEPROM model and the I2C bus it sits on. Pure: no virtio, no
//! files, no clock (every call that depends on time takes `now`).
//!
//! Behaviour follows the Microchip/Atmel and ST datasheets of the 24Cxx
//! family and what Linux `drivers/misc/eeprom/at24.c` relies on:
//!
//! - 24c01..24c16 take one word-address byte, 24c32 and larger take two.
//!   24c04/08/16 use the low 1-3 bits of the I2C address as memory address
//!   bits A8-A10; 24c1024 (24cm01) and 24c2048 (24cm02) use them as A16-A17.
//!   The device answers on every address of that block-select range.
//! - A write message is START, address, word address, data..., and the data
//!   goes into a page buffer: the low address bits wrap inside the page, so
//!   more than a page of data overwrites the start of the buffer. Nothing is
//!   written before STOP. A write of only the word address sets the pointer
//!   and starts no write cycle (the dummy write of a random read). A repeated
//!   START after data bytes abandons them (the internal write cycle is only
//!   ever started by STOP).
//! - After a STOP that ends a write with data the device is busy for tWR and
//!   NACKs its address (ACK polling).
//! - The address pointer is kept across transactions: after a read it points
//!   past the last byte read (wrapping at the end of memory), after a write past
//!   the last byte written (wrapping inside the page). A current-address read
//!   uses the whole internal pointer; the block-select bits of the I2C address
//!   only matter when a word address is sent.
//! - WP: in `ack` mode (Microchip/Atmel) the pin is sampled at STOP and a
//!   protected write is acknowledged but never started (no write cycle); in
//!   `nack` mode (ST) it is sampled when the first data byte arrives and the
//!   data byte is NACKed; the address bytes are still accepted.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Default write cycle time tWR (datasheet maximum of the common parts).
pub const DEFAULT_TWR: Duration = Duration::from_millis(5);
/// Lowest usable 7-bit address (0x00-0x07 are reserved).
pub const MIN_I2C_ADDR: u16 = 0x08;
/// Highest usable 7-bit address (0x78-0x7f are reserved).
pub const MAX_I2C_ADDR: u16 = 0x77;

/// Errors of the model configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// Unknown model name.
    #[error("unknown EEPROM model {0:?} (known: {known})", known = Variant::names())]
    UnknownVariant(String),
    /// Page size not a power of two inside the memory.
    #[error("page size {page} invalid for {variant}: must be a power of two from 1 to {size}")]
    BadPage {
        /// Model.
        variant: Variant,
        /// Requested page size.
        page: u32,
        /// Memory size.
        size: u32,
    },
    /// I2C address outside the usable 7-bit range.
    #[error("{variant} at {addr:#04x}: needs I2C addresses {addr:#04x}-{last:#04x}, usable are 0x08-0x77")]
    BadAddress {
        /// Model.
        variant: Variant,
        /// Base address.
        addr: u16,
        /// Last address used.
        last: u16,
    },
    /// Block-select parts need an aligned base address.
    #[error("{variant} uses the low {bits} I2C address bit(s) as memory address bits: addr {addr:#04x} must be a multiple of {span}")]
    Misaligned {
        /// Model.
        variant: Variant,
        /// Base address.
        addr: u16,
        /// Block-select bits.
        bits: u32,
        /// Number of addresses the device answers on.
        span: u16,
    },
    /// Initial contents of the wrong size.
    #[error("{variant} holds {expected} bytes, initial contents have {actual}")]
    BadContents {
        /// Model.
        variant: Variant,
        /// Device size.
        expected: usize,
        /// Given size.
        actual: usize,
    },
    /// Two devices answer on a common address.
    #[error("{a} at {a_addr:#04x}-{a_last:#04x} and {b} at {b_addr:#04x}-{b_last:#04x} overlap")]
    Overlap {
        /// First device.
        a: Variant,
        /// Its first address.
        a_addr: u16,
        /// Its last address.
        a_last: u16,
        /// Second device.
        b: Variant,
        /// Its first address.
        b_addr: u16,
        /// Its last address.
        b_last: u16,
    },
}

/// The AT24 variants Linux at24 knows (by size), with their datasheet geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// 1 Kbit.
    C01,
    /// 2 Kbit.
    C02,
    /// 4 Kbit, one block-select bit.
    C04,
    /// 8 Kbit, two block-select bits.
    C08,
    /// 16 Kbit, three block-select bits.
    C16,
    /// 32 Kbit, 16-bit word address.
    C32,
    /// 64 Kbit.
    C64,
    /// 128 Kbit.
    C128,
    /// 256 Kbit.
    C256,
    /// 512 Kbit.
    C512,
    /// 1 Mbit (24cm01), A16 in the I2C address.
    C1024,
    /// 2 Mbit (24cm02), A16-A17 in the I2C address.
    C2048,
}

impl Variant {
    /// Every variant, smallest first.
    pub const ALL: [Variant; 12] = [
        Variant::C01,
        Variant::C02,
        Variant::C04,
        Variant::C08,
        Variant::C16,
        Variant::C32,
        Variant::C64,
        Variant::C128,
        Variant::C256,
        Variant::C512,
        Variant::C1024,
        Variant::C2048,
    ];

    /// Linux at24 name (the `new_device` name).
    pub fn name(self) -> &'static str {
        match self {
            Variant::C01 => "24c01",
            Variant::C02 => "24c02",
            Variant::C04 => "24c04",
            Variant::C08 => "24c08",
            Variant::C16 => "24c16",
            Variant::C32 => "24c32",
            Variant::C64 => "24c64",
            Variant::C128 => "24c128",
            Variant::C256 => "24c256",
            Variant::C512 => "24c512",
            Variant::C1024 => "24c1024",
            Variant::C2048 => "24c2048",
        }
    }

    fn names() -> String {
        let mut s: Vec<&str> = Variant::ALL.iter().map(|v| v.name()).collect();
        s.push("24cm01");
        s.push("24cm02");
        s.join(", ")
    }

    /// Memory size in bytes.
    pub fn size(self) -> u32 {
        match self {
            Variant::C01 => 128,
            Variant::C02 => 256,
            Variant::C04 => 512,
            Variant::C08 => 1024,
            Variant::C16 => 2048,
            Variant::C32 => 4096,
            Variant::C64 => 8192,
            Variant::C128 => 16384,
            Variant::C256 => 32768,
            Variant::C512 => 65536,
            Variant::C1024 => 131_072,
            Variant::C2048 => 262_144,
        }
    }

    /// Datasheet page size in bytes.
    pub fn default_page(self) -> u32 {
        match self {
            Variant::C01 | Variant::C02 => 8,
            Variant::C04 | Variant::C08 | Variant::C16 => 16,
            Variant::C32 | Variant::C64 => 32,
            Variant::C128 | Variant::C256 => 64,
            Variant::C512 => 128,
            Variant::C1024 | Variant::C2048 => 256,
        }
    }

    /// Word-address bytes after the I2C address (1 up to 24c16, 2 from 24c32).
    pub fn word_address_bytes(self) -> u32 {
        match self {
            Variant::C01 | Variant::C02 | Variant::C04 | Variant::C08 | Variant::C16 => 1,
            _ => 2,
        }
    }

    /// I2C address bits used as memory address bits (block select).
    pub fn block_bits(self) -> u32 {
        match self {
            Variant::C04 | Variant::C1024 => 1,
            Variant::C08 | Variant::C2048 => 2,
            Variant::C16 => 3,
            _ => 0,
        }
    }

    /// Number of consecutive I2C addresses the device answers on.
    pub fn address_span(self) -> u16 {
        1 << self.block_bits()
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let name = match lower.as_str() {
            "24cm01" => "24c1024",
            "24cm02" => "24c2048",
            other => other,
        };
        Variant::ALL
            .iter()
            .copied()
            .find(|v| v.name() == name)
            .ok_or_else(|| ModelError::UnknownVariant(s.to_string()))
    }
}

/// What a write-protected device does with a write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WpMode {
    /// Microchip/Atmel: acknowledge everything, start no write cycle.
    #[default]
    Ack,
    /// ST: NACK the data bytes (the request fails).
    Nack,
}

impl FromStr for WpMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ack" => Ok(WpMode::Ack),
            "nack" => Ok(WpMode::Nack),
            other => Err(format!("unknown wp mode {other:?} (ack or nack)")),
        }
    }
}

impl fmt::Display for WpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WpMode::Ack => "ack",
            WpMode::Nack => "nack",
        })
    }
}

/// The WP pin as the device sees it.
pub trait WpPin {
    /// True when the pin is asserted (write protected).
    fn asserted(&mut self) -> bool;
}

/// A WP pin tied to a fixed level (`false`: not wired, pulled to ground).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FixedWp(pub bool);

impl WpPin for FixedWp {
    fn asserted(&mut self) -> bool {
        self.0
    }
}

/// Configuration of one AT24 device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At24Config {
    /// Model.
    pub variant: Variant,
    /// First 7-bit I2C address.
    pub addr: u16,
    /// Page size in bytes.
    pub page: u32,
    /// WP behaviour.
    pub wp: WpMode,
    /// Write cycle time.
    pub twr: Duration,
}

impl At24Config {
    /// A device with the datasheet defaults.
    pub fn new(variant: Variant, addr: u16) -> Self {
        At24Config {
            variant,
            addr,
            page: variant.default_page(),
            wp: WpMode::Ack,
            twr: DEFAULT_TWR,
        }
    }

    /// Last I2C address the device answers on.
    pub fn last_addr(&self) -> u16 {
        self.addr.saturating_add(self.variant.address_span() - 1)
    }

    /// Check the configuration.
    pub fn validate(&self) -> Result<(), ModelError> {
        let v = self.variant;
        let size = v.size();
        if self.page == 0 || !self.page.is_power_of_two() || self.page > size {
            return Err(ModelError::BadPage {
                variant: v,
                page: self.page,
                size,
            });
        }
        let span = v.address_span();
        if !self.addr.is_multiple_of(span) {
            return Err(ModelError::Misaligned {
                variant: v,
                addr: self.addr,
                bits: v.block_bits(),
                span,
            });
        }
        if self.addr < MIN_I2C_ADDR || self.last_addr() > MAX_I2C_ADDR {
            return Err(ModelError::BadAddress {
                variant: v,
                addr: self.addr,
                last: self.last_addr(),
            });
        }
        Ok(())
    }

    fn overlaps(&self, other: &At24Config) -> bool {
        self.addr <= other.last_addr() && other.addr <= self.last_addr()
    }
}

/// Why a device did not acknowledge.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Nack {
    /// Nothing answers on that address.
    #[error("no device at {0:#04x}")]
    NoDevice(u16),
    /// The device is in its write cycle.
    #[error("device at {0:#04x} busy in its write cycle")]
    Busy(u16),
    /// Data byte refused: WP asserted on an ST-style part.
    #[error("device at {0:#04x} write protected (data NACKed)")]
    WriteProtected(u16),
}

/// One contiguous run of bytes written to a device's memory at STOP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// Index of the device on its bus.
    pub device: usize,
    /// Byte offset in the device memory.
    pub offset: u32,
    /// The bytes.
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct PageBuffer {
    base: u32,
    bytes: Vec<Option<u8>>,
}

/// Counters, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct At24Stats {
    /// Write cycles started.
    pub write_cycles: u64,
    /// Writes inhibited by WP.
    pub writes_inhibited: u64,
    /// Writes abandoned by a repeated START before STOP.
    pub writes_abandoned: u64,
}

/// One AT24 EEPROM.
#[derive(Clone, Debug)]
pub struct At24 {
    cfg: At24Config,
    mem: Vec<u8>,
    pointer: u32,
    busy_until: Option<Instant>,
    pending: Option<PageBuffer>,
    stats: At24Stats,
}

impl At24 {
    /// A device holding `contents` (exactly the device size).
    pub fn new(cfg: At24Config, contents: Vec<u8>) -> Result<At24, ModelError> {
        cfg.validate()?;
        let expected = usize::try_from(cfg.variant.size()).unwrap_or(usize::MAX);
        if contents.len() != expected {
            return Err(ModelError::BadContents {
                variant: cfg.variant,
                expected,
                actual: contents.len(),
            });
        }
        Ok(At24 {
            cfg,
            mem: contents,
            pointer: 0,
            busy_until: None,
            pending: None,
            stats: At24Stats::default(),
        })
    }

    /// An erased device (all 0xff).
    pub fn erased(cfg: At24Config) -> Result<At24, ModelError> {
        let size = usize::try_from(cfg.variant.size()).unwrap_or(0);
        At24::new(cfg, vec![0xff; size])
    }

    /// Configuration.
    pub fn config(&self) -> &At24Config {
        &self.cfg
    }

    /// Memory contents.
    pub fn contents(&self) -> &[u8] {
        &self.mem
    }

    /// Internal address pointer.
    pub fn pointer(&self) -> u32 {
        self.pointer
    }

    /// Counters.
    pub fn stats(&self) -> At24Stats {
        self.stats
    }

    /// True while a write cycle runs at `now`.
    pub fn is_busy(&self, now: Instant) -> bool {
        self.busy_until.is_some_and(|t| now < t)
    }

    /// Block-select value if the device answers on `addr`.
    fn block_of(&self, addr: u16) -> Option<u32> {
        (addr >= self.cfg.addr && addr <= self.cfg.last_addr())
            .then(|| u32::from(addr - self.cfg.addr))
    }

    fn size(&self) -> u32 {
        self.cfg.variant.size()
    }

    fn idx(&self, at: u32) -> usize {
        usize::try_from(at).unwrap_or(0)
    }

    /// A write message after the address byte was acknowledged.
    fn write(&mut self, block: u32, data: &[u8], wp: &mut dyn WpPin) -> Result<(), Nack> {
        let nbytes = self.cfg.variant.word_address_bytes();
        let n = self.idx(nbytes);
        if data.len() < n {
            // Quick write, or a 16-bit word address cut short: nothing latched.
            return Ok(());
        }
        let word = data[..n]
            .iter()
            .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        self.pointer = ((block << (8 * nbytes)) | word) & (self.size() - 1);
        let payload = &data[n..];
        if payload.is_empty() {
            return Ok(());
        }
        if self.cfg.wp == WpMode::Nack && wp.asserted() {
            self.stats.writes_inhibited += 1;
            return Err(Nack::WriteProtected(self.cfg.addr + block_u16(block)));
        }
        let page = self.cfg.page;
        let base = self.pointer & !(page - 1);
        let mut buf = PageBuffer {
            base,
            bytes: vec![None; self.idx(page)],
        };
        for &b in payload {
            let slot = self.idx(self.pointer - base);
            buf.bytes[slot] = Some(b);
            self.pointer = base | ((self.pointer + 1) & (page - 1));
        }
        self.pending = Some(buf);
        Ok(())
    }

    /// A read message: sequential read from the pointer, wrapping at the end.
    fn read(&mut self, buf: &mut [u8]) {
        let size = self.size();
        for b in buf.iter_mut() {
            *b = self.mem[self.idx(self.pointer)];
            self.pointer = (self.pointer + 1) % size;
        }
    }

    /// A START or repeated START seen while data was buffered: abandon it.
    fn restart(&mut self) {
        if self.pending.take().is_some() {
            self.stats.writes_abandoned += 1;
        }
    }

    /// STOP: start the write cycle of buffered data unless WP inhibits it.
    fn stop(&mut self, now: Instant, wp: &mut dyn WpPin) -> Vec<(u32, Vec<u8>)> {
        let Some(buf) = self.pending.take() else {
            return Vec::new();
        };
        if self.cfg.wp == WpMode::Ack && wp.asserted() {
            self.stats.writes_inhibited += 1;
            return Vec::new();
        }
        let mut runs: Vec<(u32, Vec<u8>)> = Vec::new();
        for (offset, b) in (buf.base..).zip(buf.bytes.iter()) {
            if let Some(v) = b {
                let at = self.idx(offset);
                self.mem[at] = *v;
                match runs.last_mut() {
                    Some((start, data))
                        if *start + u32::try_from(data.len()).unwrap_or(u32::MAX) == offset =>
                    {
                        data.push(*v)
                    }
                    _ => runs.push((offset, vec![*v])),
                }
            }
        }
        self.stats.write_cycles += 1;
        if !self.cfg.twr.is_zero() {
            self.busy_until = Some(now + self.cfg.twr);
        }
        runs
    }
}

fn block_u16(block: u32) -> u16 {
    // Block values are below 8 (at most three block-select bits).
    u16::try_from(block).unwrap_or(0)
}

/// Refuse devices that answer on a common I2C address (block-select ranges included).
pub fn check_overlaps(cfgs: &[At24Config]) -> Result<(), ModelError> {
    for (i, a) in cfgs.iter().enumerate() {
        for b in &cfgs[i + 1..] {
            if a.overlaps(b) {
                return Err(ModelError::Overlap {
                    a: a.variant,
                    a_addr: a.addr,
                    a_last: a.last_addr(),
                    b: b.variant,
                    b_addr: b.addr,
                    b_last: b.last_addr(),
                });
            }
        }
    }
    Ok(())
}

/// One message of a transaction.
#[derive(Debug)]
pub enum Op<'a> {
    /// Address only (zero-length request).
    Probe,
    /// Write these bytes.
    Write(&'a [u8]),
    /// Read into this buffer.
    Read(&'a mut [u8]),
}

/// An I2C bus with AT24 devices on it.
#[derive(Clone, Debug)]
pub struct Bus {
    devices: Vec<At24>,
    in_transaction: bool,
    last: Option<usize>,
}

impl Bus {
    /// A bus with these devices; their address ranges must not overlap.
    pub fn new(devices: Vec<At24>) -> Result<Bus, ModelError> {
        let cfgs: Vec<At24Config> = devices.iter().map(|d| d.cfg).collect();
        check_overlaps(&cfgs)?;
        Ok(Bus {
            devices,
            in_transaction: false,
            last: None,
        })
    }

    /// The devices.
    pub fn devices(&self) -> &[At24] {
        &self.devices
    }

    /// True between a START and its STOP.
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// One message: START (or repeated START inside a transaction), the address
    /// byte, then the data. A NACK leaves the transaction open: the master then
    /// sends STOP (`stop`).
    pub fn transfer(
        &mut self,
        addr: u16,
        op: Op<'_>,
        now: Instant,
        wp: &mut dyn WpPin,
    ) -> Result<(), Nack> {
        if let Some(i) = self.last.take() {
            self.devices[i].restart();
        }
        self.in_transaction = true;
        let (index, block) = self
            .devices
            .iter()
            .enumerate()
            .find_map(|(i, d)| d.block_of(addr).map(|b| (i, b)))
            .ok_or(Nack::NoDevice(addr))?;
        let dev = &mut self.devices[index];
        if dev.is_busy(now) {
            return Err(Nack::Busy(addr));
        }
        self.last = Some(index);
        match op {
            Op::Probe => Ok(()),
            Op::Write(data) => dev.write(block, data, wp),
            Op::Read(buf) => {
                dev.read(buf);
                Ok(())
            }
        }
    }

    /// The master is reset without a STOP (device reset, disconnect, garbage
    /// from the driver): buffered write data is abandoned, the bus is idle.
    pub fn abort(&mut self) {
        self.in_transaction = false;
        if let Some(i) = self.last.take() {
            self.devices[i].restart();
        }
    }

    /// STOP: ends the transaction; returns what the addressed device wrote to
    /// its memory (to be persisted before the request is completed).
    pub fn stop(&mut self, now: Instant, wp: &mut dyn WpPin) -> Vec<Commit> {
        self.in_transaction = false;
        let Some(device) = self.last.take() else {
            return Vec::new();
        };
        self.devices[device]
            .stop(now, wp)
            .into_iter()
            .map(|(offset, data)| Commit {
                device,
                offset,
                data,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(v: Variant, addr: u16) -> At24 {
        At24::erased(At24Config::new(v, addr)).unwrap()
    }

    fn bus1(cfg: At24Config) -> Bus {
        Bus::new(vec![At24::erased(cfg).unwrap()]).unwrap()
    }

    /// Word-address bytes for `offset` on `v` (without block bits).
    fn word(v: Variant, offset: u32) -> Vec<u8> {
        let b = offset.to_be_bytes();
        if v.word_address_bytes() == 1 {
            vec![b[3]]
        } else {
            vec![b[2], b[3]]
        }
    }

    /// I2C address and word bytes reaching `offset`.
    fn target(v: Variant, base: u16, offset: u32) -> (u16, Vec<u8>) {
        let shift = 8 * v.word_address_bytes();
        let block = u16::try_from(offset >> shift).unwrap();
        (base + block, word(v, offset))
    }

    /// A full write transaction (write + STOP); returns the commits.
    fn write_at(
        bus: &mut Bus,
        v: Variant,
        base: u16,
        offset: u32,
        data: &[u8],
        now: Instant,
    ) -> Vec<Commit> {
        let (addr, mut msg) = target(v, base, offset);
        msg.extend_from_slice(data);
        bus.transfer(addr, Op::Write(&msg), now, &mut FixedWp(false))
            .unwrap();
        bus.stop(now, &mut FixedWp(false))
    }

    /// A random read: dummy write, repeated START, read, STOP.
    fn read_at(
        bus: &mut Bus,
        v: Variant,
        base: u16,
        offset: u32,
        len: usize,
        now: Instant,
    ) -> Vec<u8> {
        let (addr, msg) = target(v, base, offset);
        bus.transfer(addr, Op::Write(&msg), now, &mut FixedWp(false))
            .unwrap();
        let mut buf = vec![0; len];
        bus.transfer(addr, Op::Read(&mut buf), now, &mut FixedWp(false))
            .unwrap();
        assert!(bus.stop(now, &mut FixedWp(false)).is_empty());
        buf
    }

    #[test]
    fn variant_table() {
        let expect = [
            ("24c01", 128, 8, 1, 0),
            ("24c02", 256, 8, 1, 0),
            ("24c04", 512, 16, 1, 1),
            ("24c08", 1024, 16, 1, 2),
            ("24c16", 2048, 16, 1, 3),
            ("24c32", 4096, 32, 2, 0),
            ("24c64", 8192, 32, 2, 0),
            ("24c128", 16384, 64, 2, 0),
            ("24c256", 32768, 64, 2, 0),
            ("24c512", 65536, 128, 2, 0),
            ("24c1024", 131072, 256, 2, 1),
            ("24c2048", 262144, 256, 2, 2),
        ];
        for (v, (name, size, page, wab, bits)) in Variant::ALL.iter().zip(expect) {
            assert_eq!(v.name(), name);
            assert_eq!(v.size(), size, "{name}");
            assert_eq!(v.default_page(), page, "{name}");
            assert_eq!(v.word_address_bytes(), wab, "{name}");
            assert_eq!(v.block_bits(), bits, "{name}");
            assert_eq!(name.parse::<Variant>().unwrap(), *v);
            // Every byte addressable: 8 * word bytes + block bits cover the size.
            assert!(1u64 << (8 * wab + bits) >= u64::from(size), "{name}");
        }
        assert_eq!("24cm01".parse::<Variant>().unwrap(), Variant::C1024);
        assert_eq!("24CM02".parse::<Variant>().unwrap(), Variant::C2048);
        assert_eq!(
            "24c03".parse::<Variant>(),
            Err(ModelError::UnknownVariant("24c03".into()))
        );
    }

    #[test]
    fn config_validation() {
        let mut c = At24Config::new(Variant::C32, 0x50);
        assert_eq!(c.validate(), Ok(()));
        c.page = 24;
        assert!(matches!(
            c.validate(),
            Err(ModelError::BadPage { page: 24, .. })
        ));
        c.page = 8192;
        assert!(matches!(c.validate(), Err(ModelError::BadPage { .. })));
        c.page = 1;
        assert_eq!(c.validate(), Ok(()));
        let c = At24Config::new(Variant::C16, 0x51);
        assert!(matches!(
            c.validate(),
            Err(ModelError::Misaligned { span: 8, .. })
        ));
        let c = At24Config::new(Variant::C16, 0x78);
        assert!(matches!(c.validate(), Err(ModelError::BadAddress { .. })));
        let c = At24Config::new(Variant::C02, 0x07);
        assert!(matches!(c.validate(), Err(ModelError::BadAddress { .. })));
        let c = At24Config::new(Variant::C2048, 0x74);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.last_addr(), 0x77);
        assert!(At24::new(At24Config::new(Variant::C02, 0x50), vec![0; 255]).is_err());
    }

    #[test]
    fn overlapping_devices_refused() {
        let e = Bus::new(vec![dev(Variant::C16, 0x50), dev(Variant::C02, 0x57)]).unwrap_err();
        assert!(matches!(
            e,
            ModelError::Overlap {
                a_last: 0x57,
                b_addr: 0x57,
                ..
            }
        ));
        let e = Bus::new(vec![dev(Variant::C02, 0x52), dev(Variant::C08, 0x50)]).unwrap_err();
        assert!(matches!(e, ModelError::Overlap { .. }));
        assert!(Bus::new(vec![dev(Variant::C16, 0x50), dev(Variant::C02, 0x58)]).is_ok());
    }

    #[test]
    fn every_variant_addresses_every_block_and_wraps_page() {
        let t = Instant::now();
        for v in Variant::ALL {
            let mut cfg = At24Config::new(v, 0x50);
            cfg.twr = Duration::ZERO;
            let mut bus = bus1(cfg);
            let size = v.size();
            let page = v.default_page();
            // Mark the first byte of every page with a pattern derived from its offset.
            let stride = (size / 64).max(page);
            let mut off = 0;
            while off < size {
                let val = [u8::try_from((off / stride) & 0xff).unwrap() ^ 0x5a];
                let c = write_at(&mut bus, v, 0x50, off, &val, t);
                assert_eq!(
                    c,
                    vec![Commit {
                        device: 0,
                        offset: off,
                        data: val.to_vec()
                    }],
                    "{v} {off}"
                );
                assert_eq!(read_at(&mut bus, v, 0x50, off, 1, t), val, "{v} {off}");
                off += stride;
            }
            // The last byte of memory lives in the last block.
            let last = size - 1;
            let (addr, _) = target(v, 0x50, last);
            assert_eq!(addr, 0x50 + v.address_span() - 1, "{v}");
            write_at(&mut bus, v, 0x50, last, &[0x11], t);
            assert_eq!(
                bus.devices()[0].contents()[usize::try_from(last).unwrap()],
                0x11
            );

            // Page write wrapping: start 2 bytes before the end of page 1, write page+1 bytes.
            let start = 2 * page - 2;
            let data: Vec<u8> = (0..page + 1)
                .map(|i| u8::try_from(i % 251).unwrap())
                .collect();
            let commits = write_at(&mut bus, v, 0x50, start, &data, t);
            let mem = bus.devices()[0].contents();
            let p = usize::try_from(page).unwrap();
            let s = usize::try_from(start).unwrap();
            // The byte at `start` was written twice: first data[0], then data[page].
            assert_eq!(mem[s], data[p], "{v}");
            assert_eq!(mem[s + 1], data[1], "{v}");
            // Then it wrapped to the start of the page.
            for k in 0..p - 2 {
                assert_eq!(mem[p + k], data[2 + k], "{v} k={k}");
            }
            // Nothing outside the page moved.
            assert_ne!(mem[2 * p], data[2 % p]);
            let total: usize = commits.iter().map(|c| c.data.len()).sum();
            assert_eq!(total, p, "{v}");
            assert!(commits
                .iter()
                .all(|c| c.offset >= page
                    && c.offset + u32::try_from(c.data.len()).unwrap() <= 2 * page));
            // Pointer after the page write: last written + 1, inside the page.
            assert_eq!(bus.devices()[0].pointer(), start + 1, "{v}");
        }
    }

    #[test]
    fn block_select_parts_answer_on_their_span_only() {
        let t = Instant::now();
        for v in [
            Variant::C04,
            Variant::C08,
            Variant::C16,
            Variant::C1024,
            Variant::C2048,
        ] {
            let mut bus = bus1(At24Config::new(v, 0x50));
            for a in 0x50..0x50 + v.address_span() {
                bus.transfer(a, Op::Probe, t, &mut FixedWp(false)).unwrap();
                assert!(bus.stop(t, &mut FixedWp(false)).is_empty());
            }
            let beyond = 0x50 + v.address_span();
            assert_eq!(
                bus.transfer(beyond, Op::Probe, t, &mut FixedWp(false)),
                Err(Nack::NoDevice(beyond))
            );
            bus.stop(t, &mut FixedWp(false));
            assert_eq!(
                bus.transfer(0x4f, Op::Probe, t, &mut FixedWp(false)),
                Err(Nack::NoDevice(0x4f))
            );
            bus.stop(t, &mut FixedWp(false));
        }
        // 24c16: block 5, word 0x34 = offset 0x534.
        let mut bus = bus1(At24Config::new(Variant::C16, 0x50));
        bus.transfer(0x55, Op::Write(&[0x34, 0xaa]), t, &mut FixedWp(false))
            .unwrap();
        let c = bus.stop(t, &mut FixedWp(false));
        assert_eq!(
            c,
            vec![Commit {
                device: 0,
                offset: 0x534,
                data: vec![0xaa]
            }]
        );
        // 24cm02: block 3, word 0x1234 = offset 0x31234.
        let mut bus = bus1(At24Config::new(Variant::C2048, 0x54));
        bus.transfer(0x57, Op::Write(&[0x12, 0x34, 0xbb]), t, &mut FixedWp(false))
            .unwrap();
        let c = bus.stop(t, &mut FixedWp(false));
        assert_eq!(
            c,
            vec![Commit {
                device: 0,
                offset: 0x3_1234,
                data: vec![0xbb]
            }]
        );
    }

    #[test]
    fn unused_high_word_bits_are_dont_care() {
        let t = Instant::now();
        // 24c32 has 12 address bits: 0xf123 reaches 0x123.
        let mut bus = bus1(At24Config::new(Variant::C32, 0x50));
        bus.transfer(0x50, Op::Write(&[0xf1, 0x23, 0x42]), t, &mut FixedWp(false))
            .unwrap();
        assert_eq!(bus.stop(t, &mut FixedWp(false))[0].offset, 0x123);
        // 24c01 has 7 address bits: 0x85 reaches 0x05.
        let mut bus = bus1(At24Config::new(Variant::C01, 0x50));
        bus.transfer(0x50, Op::Write(&[0x85, 0x42]), t, &mut FixedWp(false))
            .unwrap();
        assert_eq!(bus.stop(t, &mut FixedWp(false))[0].offset, 0x05);
    }

    #[test]
    fn reads_current_random_sequential_and_rollover() {
        let t = Instant::now();
        for v in Variant::ALL {
            let mut cfg = At24Config::new(v, 0x50);
            cfg.twr = Duration::ZERO;
            let contents: Vec<u8> = (0..v.size())
                .map(|i| u8::try_from((i * 7 + i / 256) % 256).unwrap())
                .collect();
            let mut bus = Bus::new(vec![At24::new(cfg, contents.clone()).unwrap()]).unwrap();
            let size = usize::try_from(v.size()).unwrap();
            // Random read of 3 bytes ending 1 before the end, then sequential across the end.
            let got = read_at(&mut bus, v, 0x50, v.size() - 4, 3, t);
            assert_eq!(got, contents[size - 4..size - 1], "{v}");
            // Pointer kept across transactions: current-address read goes on.
            let mut buf = [0u8; 3];
            bus.transfer(0x50, Op::Read(&mut buf), t, &mut FixedWp(false))
                .unwrap();
            bus.stop(t, &mut FixedWp(false));
            assert_eq!(buf, [contents[size - 1], contents[0], contents[1]], "{v}");
            assert_eq!(bus.devices()[0].pointer(), 2);
            // A current-address read on another block address still uses the full pointer.
            let last_addr = 0x50 + v.address_span() - 1;
            let mut one = [0u8; 1];
            bus.transfer(last_addr, Op::Read(&mut one), t, &mut FixedWp(false))
                .unwrap();
            bus.stop(t, &mut FixedWp(false));
            assert_eq!(one[0], contents[2], "{v}");
        }
    }

    #[test]
    fn i2cdetect_read_probe_moves_pointer() {
        let t = Instant::now();
        let contents: Vec<u8> = (0..=255).collect();
        let mut bus = Bus::new(vec![At24::new(
            At24Config::new(Variant::C02, 0x50),
            contents,
        )
        .unwrap()])
        .unwrap();
        for expect in 0..4u8 {
            let mut b = [0u8];
            bus.transfer(0x50, Op::Read(&mut b), t, &mut FixedWp(false))
                .unwrap();
            bus.stop(t, &mut FixedWp(false));
            assert_eq!(b[0], expect);
        }
        assert_eq!(bus.devices()[0].pointer(), 4);
        // A quick probe does not.
        bus.transfer(0x50, Op::Probe, t, &mut FixedWp(false))
            .unwrap();
        bus.stop(t, &mut FixedWp(false));
        assert_eq!(bus.devices()[0].pointer(), 4);
    }

    #[test]
    fn address_only_write_sets_pointer_without_cycle() {
        let t = Instant::now();
        let mut bus = bus1(At24Config::new(Variant::C64, 0x50));
        bus.transfer(0x50, Op::Write(&[0x01, 0x00]), t, &mut FixedWp(false))
            .unwrap();
        assert!(bus.stop(t, &mut FixedWp(false)).is_empty());
        assert_eq!(bus.devices()[0].pointer(), 0x100);
        assert!(!bus.devices()[0].is_busy(t));
        assert_eq!(bus.devices()[0].stats().write_cycles, 0);
        // Half a word address latches nothing.
        bus.transfer(0x50, Op::Write(&[0x02]), t, &mut FixedWp(false))
            .unwrap();
        assert!(bus.stop(t, &mut FixedWp(false)).is_empty());
        assert_eq!(bus.devices()[0].pointer(), 0x100);
    }

    #[test]
    fn write_cycle_busy_window() {
        let t0 = Instant::now();
        let mut cfg = At24Config::new(Variant::C32, 0x50);
        cfg.twr = Duration::from_micros(5000);
        let mut bus = bus1(cfg);
        assert_eq!(
            write_at(&mut bus, Variant::C32, 0x50, 0x10, &[1, 2], t0).len(),
            1
        );
        // Data is in memory at STOP already.
        assert_eq!(&bus.devices()[0].contents()[0x10..0x12], &[1, 2]);
        for dt in [0, 1, 4999] {
            let now = t0 + Duration::from_micros(dt);
            assert_eq!(
                bus.transfer(0x50, Op::Probe, now, &mut FixedWp(false)),
                Err(Nack::Busy(0x50)),
                "{dt}"
            );
            assert!(bus.stop(now, &mut FixedWp(false)).is_empty());
            let mut b = [0u8];
            assert_eq!(
                bus.transfer(0x50, Op::Read(&mut b), now, &mut FixedWp(false)),
                Err(Nack::Busy(0x50))
            );
            bus.stop(now, &mut FixedWp(false));
        }
        // Pointer untouched by the NACKed polls.
        assert_eq!(bus.devices()[0].pointer(), 0x12);
        let done = t0 + Duration::from_micros(5000);
        assert_eq!(
            bus.transfer(0x50, Op::Probe, done, &mut FixedWp(false)),
            Ok(())
        );
        bus.stop(done, &mut FixedWp(false));
        // Reads, probes and address-only writes start no new cycle.
        assert_eq!(
            read_at(&mut bus, Variant::C32, 0x50, 0x10, 2, done),
            vec![1, 2]
        );
        assert!(!bus.devices()[0].is_busy(done));
    }

    #[test]
    fn zero_twr_is_never_busy() {
        let t = Instant::now();
        let mut cfg = At24Config::new(Variant::C02, 0x50);
        cfg.twr = Duration::ZERO;
        let mut bus = bus1(cfg);
        write_at(&mut bus, Variant::C02, 0x50, 0, &[9], t);
        assert_eq!(
            bus.transfer(0x50, Op::Probe, t, &mut FixedWp(false)),
            Ok(())
        );
    }

    #[test]
    fn repeated_start_abandons_write_data() {
        let t = Instant::now();
        let mut bus = bus1(At24Config::new(Variant::C02, 0x50));
        bus.transfer(0x50, Op::Write(&[0x20, 0xde, 0xad]), t, &mut FixedWp(false))
            .unwrap();
        let mut b = [0u8; 1];
        bus.transfer(0x50, Op::Read(&mut b), t, &mut FixedWp(false))
            .unwrap();
        assert!(bus.stop(t, &mut FixedWp(false)).is_empty());
        assert_eq!(bus.devices()[0].contents()[0x20], 0xff);
        assert_eq!(bus.devices()[0].stats().writes_abandoned, 1);
        assert!(!bus.devices()[0].is_busy(t));
    }

    #[test]
    fn abort_abandons_buffered_data() {
        let t = Instant::now();
        let mut bus = bus1(At24Config::new(Variant::C02, 0x50));
        bus.transfer(0x50, Op::Write(&[0x08, 1, 2]), t, &mut FixedWp(false))
            .unwrap();
        assert!(bus.in_transaction());
        bus.abort();
        assert!(!bus.in_transaction());
        assert!(bus.stop(t, &mut FixedWp(false)).is_empty());
        let d = &bus.devices()[0];
        assert_eq!(&d.contents()[8..10], &[0xff, 0xff]);
        assert_eq!(d.stats().writes_abandoned, 1);
        assert!(!d.is_busy(t));
    }

    #[test]
    fn nack_leaves_no_device_selected() {
        let t = Instant::now();
        let mut bus = Bus::new(vec![dev(Variant::C02, 0x50)]).unwrap();
        bus.transfer(0x50, Op::Write(&[0x00, 7]), t, &mut FixedWp(false))
            .unwrap();
        // Repeated START to a missing device: the write is abandoned, nothing commits.
        assert_eq!(
            bus.transfer(0x60, Op::Probe, t, &mut FixedWp(false)),
            Err(Nack::NoDevice(0x60))
        );
        assert!(bus.stop(t, &mut FixedWp(false)).is_empty());
        assert_eq!(bus.devices()[0].contents()[0], 0xff);
    }

    #[test]
    fn wp_ack_mode_inhibits_at_stop() {
        let t = Instant::now();
        let mut bus = bus1(At24Config::new(Variant::C32, 0x50));
        bus.transfer(0x50, Op::Write(&[0, 0, 1, 2, 3]), t, &mut FixedWp(false))
            .unwrap();
        // WP asserted between the data and the STOP: sampled at STOP.
        assert!(bus.stop(t, &mut FixedWp(true)).is_empty());
        let d = &bus.devices()[0];
        assert_eq!(&d.contents()[..3], &[0xff; 3]);
        assert!(!d.is_busy(t), "no write cycle when inhibited");
        assert_eq!(d.stats().writes_inhibited, 1);
        assert_eq!(d.stats().write_cycles, 0);
        // Released: the same write goes through.
        bus.transfer(0x50, Op::Write(&[0, 0, 1, 2, 3]), t, &mut FixedWp(true))
            .unwrap();
        assert_eq!(bus.stop(t, &mut FixedWp(false)).len(), 1);
        assert_eq!(&bus.devices()[0].contents()[..3], &[1, 2, 3]);
        // Reads are not affected by WP.
        let later = t + DEFAULT_TWR;
        bus.transfer(0x50, Op::Write(&[0, 0]), later, &mut FixedWp(true))
            .unwrap();
        let mut b = [0u8; 3];
        bus.transfer(0x50, Op::Read(&mut b), later, &mut FixedWp(true))
            .unwrap();
        bus.stop(later, &mut FixedWp(true));
        assert_eq!(b, [1, 2, 3]);
    }

    #[test]
    fn wp_nack_mode_refuses_data() {
        let t = Instant::now();
        let mut cfg = At24Config::new(Variant::C32, 0x50);
        cfg.wp = WpMode::Nack;
        let mut bus = bus1(cfg);
        assert_eq!(
            bus.transfer(0x50, Op::Write(&[0x01, 0x02, 7]), t, &mut FixedWp(true)),
            Err(Nack::WriteProtected(0x50))
        );
        assert!(bus.stop(t, &mut FixedWp(true)).is_empty());
        let d = &bus.devices()[0];
        assert_eq!(d.contents()[0x102], 0xff);
        assert_eq!(d.pointer(), 0x102, "address bytes were accepted");
        assert!(!d.is_busy(t));
        // The address-only write still works under WP (random reads).
        assert_eq!(
            bus.transfer(0x50, Op::Write(&[0, 0]), t, &mut FixedWp(true)),
            Ok(())
        );
        bus.stop(t, &mut FixedWp(true));
        // WP deasserted: written.
        bus.transfer(0x50, Op::Write(&[0x01, 0x02, 7]), t, &mut FixedWp(false))
            .unwrap();
        assert_eq!(bus.stop(t, &mut FixedWp(false)).len(), 1);
        assert_eq!(bus.devices()[0].contents()[0x102], 7);
    }

    struct CountingWp(u32);
    impl WpPin for CountingWp {
        fn asserted(&mut self) -> bool {
            self.0 += 1;
            false
        }
    }

    #[test]
    fn wp_sampled_only_for_writes_with_data() {
        let t = Instant::now();
        let mut bus = bus1(At24Config::new(Variant::C02, 0x50));
        let mut wp = CountingWp(0);
        bus.transfer(0x50, Op::Write(&[0]), t, &mut wp).unwrap();
        let mut b = [0u8; 4];
        bus.transfer(0x50, Op::Read(&mut b), t, &mut wp).unwrap();
        bus.stop(t, &mut wp);
        assert_eq!(wp.0, 0);
        bus.transfer(0x50, Op::Write(&[0, 1]), t, &mut wp).unwrap();
        bus.stop(t, &mut wp);
        assert_eq!(wp.0, 1);
    }

    #[test]
    fn two_devices_independent() {
        let t = Instant::now();
        let mut bus = Bus::new(vec![dev(Variant::C32, 0x50), dev(Variant::C02, 0x51)]).unwrap();
        bus.transfer(0x50, Op::Write(&[0, 0, 0x11]), t, &mut FixedWp(false))
            .unwrap();
        let c = bus.stop(t, &mut FixedWp(false));
        assert_eq!(c[0].device, 0);
        // 0x50 busy, 0x51 free.
        assert_eq!(
            bus.transfer(0x50, Op::Probe, t, &mut FixedWp(false)),
            Err(Nack::Busy(0x50))
        );
        bus.stop(t, &mut FixedWp(false));
        bus.transfer(0x51, Op::Write(&[5, 0x22]), t, &mut FixedWp(false))
            .unwrap();
        let c = bus.stop(t, &mut FixedWp(false));
        assert_eq!(
            c,
            vec![Commit {
                device: 1,
                offset: 5,
                data: vec![0x22]
            }]
        );
        assert_eq!(bus.devices()[0].contents()[0], 0x11);
        assert_eq!(bus.devices()[1].contents()[5], 0x22);
        assert_eq!(
            bus.transfer(0x52, Op::Probe, t, &mut FixedWp(false)),
            Err(Nack::NoDevice(0x52))
        );
    }

    #[test]
    fn page_override() {
        let t = Instant::now();
        let mut cfg = At24Config::new(Variant::C32, 0x50);
        cfg.page = 8;
        cfg.twr = Duration::ZERO;
        let mut bus = bus1(cfg);
        let data: Vec<u8> = (1..=10).collect();
        write_at(&mut bus, Variant::C32, 0x50, 0x20, &data, t);
        let m = bus.devices()[0].contents();
        assert_eq!(&m[0x20..0x28], &[9, 10, 3, 4, 5, 6, 7, 8]);
        assert_eq!(m[0x28], 0xff);
    }
}
