// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The virtio-gpio request parsers and the line model, fed arbitrary request streams.
//!
//! The input is cut into 9-byte records: an operation byte, then 8 bytes that are parsed as
//! the guest would send them (a requestq request, or an eventq request), or used as a host
//! level change. Invariants: nothing panics, and every eventq buffer the model accepted comes
//! back exactly once (in a completion, or dropped by `release_guest` at the end).

#![no_main]

use std::collections::HashSet;

use common::line::Pull;
use libfuzzer_sys::fuzz_target;
use vhost_gpio::model::{GpioModel, LineSpec};
use vhost_gpio::protocol::{config_slice, encode_config, parse_irq_request, Request};

fn specs() -> Vec<LineSpec> {
    ["a", "b", "c", ""]
        .iter()
        .zip([Pull::Down, Pull::Up, Pull::None, Pull::Down])
        .map(|(n, pull)| LineSpec {
            name: (*n).into(),
            pull,
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut model: GpioModel<u64> = GpioModel::new(&specs()).expect("valid lines");
    let negotiated = data.first().is_some_and(|b| b & 1 != 0);
    let mut outstanding: HashSet<u64> = HashSet::new();
    let mut next_token = 0u64;
    let returned = |t: u64, outstanding: &mut HashSet<u64>| {
        assert!(
            outstanding.remove(&t),
            "token {t} returned twice or never queued"
        );
    };
    for rec in data.get(1..).unwrap_or(&[]).chunks(9) {
        let (op, body) = rec.split_first().map_or((0, &[][..]), |(o, b)| (*o, b));
        let effects = match op % 5 {
            0 | 1 => match Request::parse(body) {
                Ok(req) => {
                    let _ = req.response_size(usize::try_from(model.names_size()).unwrap());
                    let r = match req {
                        Request::GetNames => {
                            assert_eq!(
                                model.names_block().len(),
                                usize::try_from(model.names_size()).unwrap()
                            );
                            continue;
                        }
                        Request::GetDirection { gpio } => {
                            let _ = model.get_direction(gpio);
                            continue;
                        }
                        Request::GetValue { gpio } => {
                            let _ = model.get_value(gpio);
                            continue;
                        }
                        Request::SetDirection { gpio, direction } => {
                            model.set_direction(gpio, direction)
                        }
                        Request::SetValue { gpio, value } => model.set_value(gpio, value),
                        Request::SetIrqType { gpio, irq_type } => {
                            model.set_irq_type(gpio, irq_type, negotiated)
                        }
                        Request::Unsupported(_) => continue,
                    };
                    r.ok()
                }
                Err(_) => {
                    assert!(body.len() < 8);
                    continue;
                }
            },
            2 => match parse_irq_request(body) {
                Ok(gpio) => {
                    let t = next_token;
                    next_token += 1;
                    outstanding.insert(t);
                    match model.queue_irq_buffer(gpio, t) {
                        Ok(e) => Some(e),
                        Err((back, _)) => {
                            returned(back, &mut outstanding);
                            None
                        }
                    }
                }
                Err(_) => continue,
            },
            3 => {
                let gpio = u16::from_le_bytes([
                    body.first().copied().unwrap_or(0),
                    body.get(1).copied().unwrap_or(0),
                ]);
                let level = match body.get(2).copied().unwrap_or(0) % 3 {
                    0 => None,
                    1 => Some(false),
                    _ => Some(true),
                };
                model.set_host_level(gpio, level).ok()
            }
            _ => {
                let cfg = encode_config(model.ngpio(), model.names_size());
                let off = u32::from(body.first().copied().unwrap_or(0));
                let size = u32::from(body.get(1).copied().unwrap_or(0));
                if let Some(s) = config_slice(&cfg, off, size) {
                    assert_eq!(s.len(), usize::try_from(size).unwrap());
                }
                if body.get(2).is_some_and(|b| b % 16 == 0) {
                    let (e, dropped) = model.release_guest();
                    for c in e.completions {
                        returned(c.token, &mut outstanding);
                    }
                    for t in dropped {
                        returned(t, &mut outstanding);
                    }
                }
                continue;
            }
        };
        if let Some(e) = effects {
            for c in e.completions {
                returned(c.token, &mut outstanding);
            }
        }
    }
    let (e, dropped) = model.release_guest();
    for c in e.completions {
        returned(c.token, &mut outstanding);
    }
    for t in dropped {
        returned(t, &mut outstanding);
    }
    assert!(
        outstanding.is_empty(),
        "tokens never returned: {outstanding:?}"
    );
});
