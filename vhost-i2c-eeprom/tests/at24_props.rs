// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Property tests: the AT24 model on its bus against a reference model of the EEPROM's
//! memory written from the datasheet rules alone (a flat byte array, a pointer that wraps at
//! the end of memory, page writes that wrap inside their page and land at STOP, reads that
//! never change memory, WP in ack mode inhibiting the write cycle, a repeated START or an
//! abort discarding unfinished write data).

use std::time::{Duration, Instant};

use proptest::prelude::*;
use vhost_i2c_eeprom::model::{At24, At24Config, Bus, FixedWp, Op, Variant};

/// The reference: nothing but memory and the pointer.
#[derive(Debug)]
struct Reference {
    mem: Vec<u8>,
    pointer: u32,
    page: u32,
}

impl Reference {
    fn size(&self) -> u32 {
        u32::try_from(self.mem.len()).unwrap()
    }

    /// A completed page write of `data` at `offset` (WP not asserted).
    fn page_write(&mut self, offset: u32, data: &[u8]) {
        let base = offset - offset % self.page;
        let mut at = offset;
        for &b in data {
            self.mem[usize::try_from(at).unwrap()] = b;
            at = base + (at + 1 - base) % self.page;
        }
        self.pointer = at;
    }

    /// Sets the pointer only (a write of the word address alone, or data thrown away).
    fn set_pointer(&mut self, offset: u32, data_len: usize) {
        let base = offset - offset % self.page;
        let n = u32::try_from(data_len).unwrap();
        self.pointer = base + (offset - base + n) % self.page;
    }

    fn read(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let b = self.mem[usize::try_from(self.pointer).unwrap()];
                self.pointer = (self.pointer + 1) % self.size();
                b
            })
            .collect()
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// Word address + data, STOP.
    Write { offset: u32, data: Vec<u8> },
    /// The same with WP asserted (ack mode: acknowledged, not written).
    WriteProtected { offset: u32, data: Vec<u8> },
    /// Word address + data, then a repeated START to a read: the data is abandoned.
    WriteAbandoned {
        offset: u32,
        data: Vec<u8>,
        n: usize,
    },
    /// Word address + data, then the master is reset without STOP.
    WriteAborted { offset: u32, data: Vec<u8> },
    /// Word address, repeated START, read n bytes, STOP.
    RandomRead { offset: u32, n: usize },
    /// Read n bytes from the pointer, STOP.
    CurrentRead { n: usize },
}

fn step(size: u32, page: u32) -> impl Strategy<Value = Step> {
    let off = 0..size;
    let data = proptest::collection::vec(any::<u8>(), 1..=usize::try_from(2 * page + 3).unwrap());
    let n = 0..=usize::try_from(size.min(600) + 3).unwrap();
    prop_oneof![
        4 => (off.clone(), data.clone()).prop_map(|(offset, data)| Step::Write { offset, data }),
        1 => (off.clone(), data.clone())
            .prop_map(|(offset, data)| Step::WriteProtected { offset, data }),
        1 => (off.clone(), data.clone(), n.clone())
            .prop_map(|(offset, data, n)| Step::WriteAbandoned { offset, data, n }),
        1 => (off.clone(), data).prop_map(|(offset, data)| Step::WriteAborted { offset, data }),
        3 => (off, n.clone()).prop_map(|(offset, n)| Step::RandomRead { offset, n }),
        2 => n.prop_map(|n| Step::CurrentRead { n }),
    ]
}

/// I2C address and word-address bytes of a memory offset (block select in the address).
fn address(v: Variant, base: u16, offset: u32) -> (u16, Vec<u8>) {
    let bytes = v.word_address_bytes();
    let bits = 8 * bytes;
    let block = u16::try_from(offset >> bits).unwrap();
    let word = offset & ((1 << bits) - 1);
    let be = word.to_be_bytes();
    (
        base + block,
        be[4 - usize::try_from(bytes).unwrap()..].to_vec(),
    )
}

const VARIANTS: [Variant; 6] = [
    Variant::C01,
    Variant::C02,
    Variant::C04,
    Variant::C16,
    Variant::C32,
    Variant::C1024,
];

fn case() -> impl Strategy<Value = (Variant, bool, Vec<Step>)> {
    (0..VARIANTS.len(), any::<bool>()).prop_flat_map(|(i, small_page)| {
        let v = VARIANTS[i];
        let page = if small_page { 1 } else { v.default_page() };
        (
            Just(v),
            Just(small_page),
            proptest::collection::vec(step(v.size(), page), 1..24),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn at24_matches_the_reference((variant, small_page, steps) in case()) {
        let base = 0x50;
        let page = if small_page { 1 } else { variant.default_page() };
        let cfg = At24Config {
            page,
            twr: Duration::ZERO,
            ..At24Config::new(variant, base)
        };
        let size = usize::try_from(variant.size()).unwrap();
        // Distinct initial contents, so a read from the wrong place shows.
        let initial: Vec<u8> = (0..size).map(|i| u8::try_from((i * 7 + i / 256) % 251).unwrap()).collect();
        let mut bus = Bus::new(vec![At24::new(cfg, initial.clone()).unwrap()]).unwrap();
        let mut r = Reference { mem: initial, pointer: 0, page };
        let now = Instant::now();
        let mut wp_off = FixedWp(false);
        let mut wp_on = FixedWp(true);
        for s in &steps {
            match s {
                Step::Write { offset, data } | Step::WriteProtected { offset, data } => {
                    let protected = matches!(s, Step::WriteProtected { .. });
                    let wp: &mut FixedWp = if protected { &mut wp_on } else { &mut wp_off };
                    let (a, mut msg) = address(variant, base, *offset);
                    msg.extend_from_slice(data);
                    prop_assert!(bus.transfer(a, Op::Write(&msg), now, wp).is_ok());
                    let commits = bus.stop(now, wp);
                    if protected {
                        prop_assert!(commits.is_empty());
                        r.set_pointer(*offset, data.len());
                    } else {
                        prop_assert!(!commits.is_empty());
                        r.page_write(*offset, data);
                    }
                }
                Step::WriteAbandoned { offset, data, n } => {
                    let (a, mut msg) = address(variant, base, *offset);
                    msg.extend_from_slice(data);
                    prop_assert!(bus.transfer(a, Op::Write(&msg), now, &mut wp_off).is_ok());
                    let mut buf = vec![0u8; *n];
                    prop_assert!(bus.transfer(a, Op::Read(&mut buf), now, &mut wp_off).is_ok());
                    prop_assert!(bus.stop(now, &mut wp_off).is_empty());
                    r.set_pointer(*offset, data.len());
                    prop_assert_eq!(buf, r.read(*n));
                }
                Step::WriteAborted { offset, data } => {
                    let (a, mut msg) = address(variant, base, *offset);
                    msg.extend_from_slice(data);
                    prop_assert!(bus.transfer(a, Op::Write(&msg), now, &mut wp_off).is_ok());
                    bus.abort();
                    r.set_pointer(*offset, data.len());
                }
                Step::RandomRead { offset, n } => {
                    let (a, msg) = address(variant, base, *offset);
                    prop_assert!(bus.transfer(a, Op::Write(&msg), now, &mut wp_off).is_ok());
                    let mut buf = vec![0u8; *n];
                    prop_assert!(bus.transfer(a, Op::Read(&mut buf), now, &mut wp_off).is_ok());
                    prop_assert!(bus.stop(now, &mut wp_off).is_empty());
                    r.pointer = *offset;
                    prop_assert_eq!(buf, r.read(*n));
                }
                Step::CurrentRead { n } => {
                    let mut buf = vec![0u8; *n];
                    prop_assert!(bus.transfer(base, Op::Read(&mut buf), now, &mut wp_off).is_ok());
                    prop_assert!(bus.stop(now, &mut wp_off).is_empty());
                    prop_assert_eq!(buf, r.read(*n));
                }
            }
            let dev = &bus.devices()[0];
            prop_assert_eq!(dev.pointer(), r.pointer, "pointer after {:?}", s);
            prop_assert!(dev.contents() == &r.mem[..], "memory after {:?}", s);
        }
    }
}
