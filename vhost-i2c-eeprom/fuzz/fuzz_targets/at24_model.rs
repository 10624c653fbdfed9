// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The AT24 model on an I2C bus, fed arbitrary transaction sequences: messages to any
//! address (devices with one- and two-byte word addresses and block select), STOPs, aborts,
//! the WP pin moving, and time passing through write cycles.
//!
//! Invariants: nothing panics; memory sizes never change; pointers stay inside memory; memory
//! changes only at STOP, and exactly as the returned commits say; a device NACKs as busy only
//! inside its write cycle.

#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vhost_i2c_eeprom::model::{At24, At24Config, Bus, FixedWp, Nack, Op, Variant, WpMode};

#[derive(Arbitrary, Debug)]
enum Step {
    Probe(u8),
    Write(u8, Vec<u8>),
    Read(u8, u16),
    Stop,
    Abort,
    Wait(u16),
    Wp(bool),
}

#[derive(Arbitrary, Debug)]
struct Input {
    nack_mode: bool,
    twr_us: u16,
    steps: Vec<Step>,
}

fn bus(nack: bool, twr: Duration) -> Bus {
    let wp = if nack { WpMode::Nack } else { WpMode::Ack };
    let devices = [
        (Variant::C32, 0x50),
        (Variant::C02, 0x51),
        (Variant::C04, 0x52),
        (Variant::C256, 0x56),
        (Variant::C16, 0x58),
    ]
    .into_iter()
    .map(|(v, a)| {
        let cfg = At24Config {
            wp,
            twr,
            ..At24Config::new(v, a)
        };
        At24::erased(cfg).expect("valid device")
    })
    .collect();
    Bus::new(devices).expect("no overlaps")
}

fn addr(sel: u8) -> u16 {
    // Mostly the devices' range, sometimes anything.
    if sel & 0x80 == 0 {
        0x50 + u16::from(sel & 0x0f)
    } else {
        u16::from(sel & 0x7f)
    }
}

fn snapshot(b: &Bus) -> Vec<Vec<u8>> {
    b.devices().iter().map(|d| d.contents().to_vec()).collect()
}

fuzz_target!(|input: Input| {
    let twr = Duration::from_micros(u64::from(input.twr_us));
    let mut b = bus(input.nack_mode, twr);
    let sizes: Vec<usize> = b.devices().iter().map(|d| d.contents().len()).collect();
    let t0 = Instant::now();
    let mut now = t0;
    let mut wp = FixedWp(false);
    let mut mem = snapshot(&b);
    // When each device's last write cycle started.
    let mut cycle_start: Vec<Option<Instant>> = vec![None; sizes.len()];
    let mut buf = vec![0u8; 70_000];
    for step in input.steps.iter().take(256) {
        let result = match step {
            Step::Probe(a) => Some((addr(*a), b.transfer(addr(*a), Op::Probe, now, &mut wp))),
            Step::Write(a, data) => Some((
                addr(*a),
                b.transfer(addr(*a), Op::Write(data), now, &mut wp),
            )),
            Step::Read(a, n) => {
                let n = usize::from(*n);
                Some((
                    addr(*a),
                    b.transfer(addr(*a), Op::Read(&mut buf[..n]), now, &mut wp),
                ))
            }
            Step::Stop => {
                let commits = b.stop(now, &mut wp);
                for c in &commits {
                    let start = usize::try_from(c.offset).unwrap();
                    let end = start + c.data.len();
                    assert!(end <= sizes[c.device], "commit past the end");
                    assert_eq!(&b.devices()[c.device].contents()[start..end], &c.data[..]);
                    mem[c.device][start..end].copy_from_slice(&c.data);
                    cycle_start[c.device] = Some(now);
                }
                None
            }
            Step::Abort => {
                b.abort();
                None
            }
            Step::Wait(us) => {
                now += Duration::from_micros(u64::from(*us));
                None
            }
            Step::Wp(on) => {
                wp = FixedWp(*on);
                None
            }
        };
        if let Some((a, Err(Nack::Busy(busy)))) = result {
            assert_eq!(a, busy);
            let busy_dev = b
                .devices()
                .iter()
                .position(|d| {
                    let c = d.config();
                    a >= c.addr && a <= c.last_addr()
                })
                .expect("busy NACK from a device that exists");
            let started = cycle_start[busy_dev].expect("busy without a write cycle");
            assert!(now < started + twr, "busy after the write cycle ended");
        }
        for (i, d) in b.devices().iter().enumerate() {
            assert_eq!(d.contents().len(), sizes[i]);
            assert!(usize::try_from(d.pointer()).unwrap() < sizes[i]);
            assert!(d.contents() == &mem[i][..], "memory changed outside STOP");
        }
    }
});
