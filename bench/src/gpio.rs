// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-gpio workloads: SET_VALUE/GET_VALUE round trips at a given queue depth, and the
//! interrupt latency from a control-socket level change to the used eventq buffer.
//!
//! Only the virtio-gpio wire format is used (virtio spec 1.2, "GPIO Device"), so any
//! backend can be measured; the interrupt workload also needs a control socket that takes
//! `set <line> <0|1>` lines and answers `ok`, as vhost-gpio's does.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use test_kit::frontend::{Buf, Completion, FrontendOptions, TestFrontend};

use crate::stats::Tally;
use crate::{BenchError, Result, TIMEOUT};

const MSG_SET_DIRECTION: u16 = 3;
const MSG_GET_VALUE: u16 = 4;
const MSG_SET_VALUE: u16 = 5;
const MSG_IRQ_TYPE: u16 = 6;
const DIRECTION_NONE: u32 = 0;
const DIRECTION_OUT: u32 = 1;
const DIRECTION_IN: u32 = 2;
const IRQ_TYPE_NONE: u32 = 0;
const IRQ_TYPE_EDGE_BOTH: u32 = 3;
const STATUS_OK: u8 = 0;
const IRQ_STATUS_VALID: u8 = 1;
/// VIRTIO_GPIO_F_IRQ.
pub const F_IRQ: u64 = 1 << 0;
const F_VERSION_1: u64 = 1 << 32;
const F_INDIRECT: u64 = 1 << 28;
const F_EVENT_IDX: u64 = 1 << 29;
/// Descriptors per queue: 64 two-descriptor chains in flight need 128.
const QUEUE_SIZE: u16 = 256;

/// Frontend options for a gpio device: requestq and eventq.
pub fn options() -> FrontendOptions {
    FrontendOptions {
        queue_sizes: vec![QUEUE_SIZE, QUEUE_SIZE],
        features: F_VERSION_1 | F_INDIRECT | F_EVENT_IDX | F_IRQ,
        slot_size: 64,
        ..FrontendOptions::default()
    }
}

fn encode(t: u16, gpio: u16, value: u32) -> [u8; 8] {
    let mut r = [0u8; 8];
    r[0..2].copy_from_slice(&t.to_le_bytes());
    r[2..4].copy_from_slice(&gpio.to_le_bytes());
    r[4..8].copy_from_slice(&value.to_le_bytes());
    r
}

/// One request that must succeed, outside the measurement.
fn must(fe: &mut TestFrontend, t: u16, gpio: u16, value: u32) -> Result<()> {
    let r = encode(t, gpio, value);
    let c = fe.request(0, &[Buf::Out(&r), Buf::In(2)], TIMEOUT)?;
    match c.ins.first().and_then(|b| b.first()) {
        Some(&STATUS_OK) if c.len == 2 => Ok(()),
        _ => Err(BenchError::Setup(format!(
            "request type {t} line {gpio} value {value} failed: used length {}, response {:?}",
            c.len, c.ins
        ))),
    }
}

/// `ngpio` from the config space.
pub fn ngpio(fe: &mut TestFrontend) -> Result<u16> {
    let cfg = fe.get_config(0, 2)?;
    let b: [u8; 2] = cfg
        .get(0..2)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| BenchError::Setup(format!("config space too short: {cfg:?}")))?;
    Ok(u16::from_le_bytes(b))
}

/// Checks the line exists and makes it an output.
pub fn setup_set_get(fe: &mut TestFrontend, line: u16) -> Result<()> {
    let n = ngpio(fe)?;
    if line >= n {
        return Err(BenchError::Setup(format!(
            "line {line} out of range: the device has {n} lines"
        )));
    }
    must(fe, MSG_SET_DIRECTION, line, DIRECTION_OUT)
}

/// Gives the line back.
pub fn teardown_set_get(fe: &mut TestFrontend, line: u16) -> Result<()> {
    must(fe, MSG_SET_DIRECTION, line, DIRECTION_NONE)
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    start: Instant,
    /// For GET_VALUE, the value the last SET_VALUE before it stored.
    expect: Option<u8>,
}

/// Alternates SET_VALUE (toggling) and GET_VALUE on `line`, keeping `depth` requests in
/// flight, until `deadline`; then collects what is still in flight. Every GET_VALUE must read
/// the value of the SET_VALUE before it (one line's messages are processed in order).
pub fn set_get(
    fe: &mut TestFrontend,
    line: u16,
    depth: usize,
    deadline: Instant,
    record: bool,
) -> Result<Tally> {
    let mut t = Tally::default();
    let mut pending: Vec<Option<Pending>> = vec![None; usize::from(QUEUE_SIZE)];
    let mut seq: u64 = 0;
    let mut last_set = 0u8;
    let mut last_progress = Instant::now();
    loop {
        let now = Instant::now();
        let mut submitted = false;
        if now < deadline {
            while fe.in_flight(0) < depth {
                let (req, expect) = if seq.is_multiple_of(2) {
                    last_set ^= 1;
                    (encode(MSG_SET_VALUE, line, u32::from(last_set)), None::<u8>)
                } else {
                    (encode(MSG_GET_VALUE, line, 0), Some(last_set))
                };
                seq += 1;
                let head = fe.submit(0, &[Buf::Out(&req), Buf::In(2)], false)?;
                pending[usize::from(head)] = Some(Pending {
                    start: Instant::now(),
                    expect,
                });
                submitted = true;
            }
        }
        if submitted {
            fe.kick(0)?;
        }
        if fe.in_flight(0) == 0 {
            return Ok(t);
        }
        let mut got = false;
        while let Some(c) = fe.poll_used(0)? {
            got = true;
            let p = pending
                .get_mut(usize::from(c.id))
                .and_then(Option::take)
                .ok_or(BenchError::Protocol(format!(
                    "used element {} was not submitted",
                    c.id
                )))?;
            if record {
                t.samples.push(p.start.elapsed());
                t.requests += 1;
                t.chains += 1;
                if !answer_ok(&c, p.expect) {
                    t.errors += 1;
                    log::debug!("bad answer {c:?}, expected value {:?}", p.expect);
                }
            }
        }
        if got {
            last_progress = Instant::now();
        } else {
            if last_progress.elapsed() > TIMEOUT {
                return Err(BenchError::Stalled(fe.in_flight(0)));
            }
            fe.wait_call(0, Duration::from_millis(20))?;
        }
    }
}

fn answer_ok(c: &Completion, expect: Option<u8>) -> bool {
    let Some(resp) = c.ins.first() else {
        return false;
    };
    c.len == 2 && resp.first() == Some(&STATUS_OK) && expect.is_none_or(|v| resp.get(1) == Some(&v))
}

/// A line-oriented control socket client (`set <line> <level>` -> `ok`).
#[derive(Debug)]
pub struct Control {
    out: UnixStream,
    inp: BufReader<UnixStream>,
    line: String,
    /// The level last set on the irq line, so every `set` is an edge across calls.
    level: u8,
}

impl Control {
    /// Connects.
    pub fn connect(path: &Path) -> Result<Control> {
        let io = |source| BenchError::Control {
            path: path.display().to_string(),
            source,
        };
        let out = UnixStream::connect(path).map_err(io)?;
        out.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        let inp = BufReader::new(out.try_clone().map_err(io)?);
        Ok(Control {
            out,
            inp,
            line: String::new(),
            level: 0,
        })
    }

    /// Sends one command without waiting for the answer.
    fn send(&mut self, cmd: &str) -> Result<()> {
        self.out
            .write_all(format!("{cmd}\n").as_bytes())
            .map_err(|source| BenchError::Control {
                path: "control socket".into(),
                source,
            })
    }

    /// Reads answer lines up to `ok` (or fails on `err ...`).
    fn answer(&mut self) -> Result<()> {
        loop {
            self.line.clear();
            let n = self
                .inp
                .read_line(&mut self.line)
                .map_err(|source| BenchError::Control {
                    path: "control socket".into(),
                    source,
                })?;
            let l = self.line.trim_end();
            if n == 0 {
                return Err(BenchError::Protocol("control socket closed".into()));
            }
            if l == "ok" {
                return Ok(());
            }
            if let Some(e) = l.strip_prefix("err") {
                return Err(BenchError::Protocol(format!("control socket: err{e}")));
            }
        }
    }

    fn command(&mut self, cmd: &str) -> Result<()> {
        self.send(cmd)?;
        self.answer()
    }
}

/// Prepares `line` for the interrupt workload: input, both edges, host level 0.
pub fn setup_irq(fe: &mut TestFrontend, ctl: &mut Control, line: u16) -> Result<()> {
    if fe.acked_features() & F_IRQ == 0 {
        return Err(BenchError::Setup(
            "the backend does not offer VIRTIO_GPIO_F_IRQ".into(),
        ));
    }
    let n = ngpio(fe)?;
    if line >= n {
        return Err(BenchError::Setup(format!(
            "irq line {line} out of range: the device has {n} lines"
        )));
    }
    ctl.command(&format!("set {line} 0"))?;
    ctl.level = 0;
    must(fe, MSG_SET_DIRECTION, line, DIRECTION_IN)?;
    must(fe, MSG_IRQ_TYPE, line, IRQ_TYPE_EDGE_BOTH)
}

/// Disarms and releases the line, and stops driving it from the host.
pub fn teardown_irq(fe: &mut TestFrontend, ctl: &mut Control, line: u16) -> Result<()> {
    must(fe, MSG_IRQ_TYPE, line, IRQ_TYPE_NONE)?;
    // Disabling returns a still queued eventq buffer (none here, but be tolerant).
    while fe.poll_used(1)?.is_some() {}
    must(fe, MSG_SET_DIRECTION, line, DIRECTION_NONE)?;
    ctl.command(&format!("clear {line}"))
}

/// Per iteration: queue an eventq buffer for `line`, toggle the line through the control
/// socket, and time from sending the command to seeing the used eventq buffer.
pub fn irq(
    fe: &mut TestFrontend,
    ctl: &mut Control,
    line: u16,
    deadline: Instant,
    record: bool,
) -> Result<Tally> {
    let mut t = Tally::default();
    let buf = line.to_le_bytes();
    while Instant::now() < deadline {
        fe.submit(1, &[Buf::Out(&buf), Buf::In(1)], false)?;
        fe.kick(1)?;
        ctl.level ^= 1;
        let start = Instant::now();
        ctl.send(&format!("set {line} {}", ctl.level))?;
        let c = fe.wait_used(1, TIMEOUT)?;
        let lat = start.elapsed();
        ctl.answer()?;
        if record {
            t.samples.push(lat);
            t.requests += 1;
            t.chains += 1;
            if c.len != 1 || c.ins.first().and_then(|b| b.first()) != Some(&IRQ_STATUS_VALID) {
                t.errors += 1;
                log::debug!("bad interrupt answer {c:?}");
            }
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_little_endian() {
        assert_eq!(encode(MSG_SET_VALUE, 0x0102, 1), [5, 0, 2, 1, 1, 0, 0, 0]);
    }

    #[test]
    fn answers_are_checked_for_length_status_and_value() {
        let c = |len, ins: &[u8]| Completion {
            id: 0,
            len,
            ins: vec![ins.to_vec()],
        };
        assert!(answer_ok(&c(2, &[0, 1]), Some(1)));
        assert!(answer_ok(&c(2, &[0, 0]), None));
        assert!(!answer_ok(&c(2, &[0, 0]), Some(1)));
        assert!(!answer_ok(&c(2, &[1, 1]), Some(1)));
        assert!(!answer_ok(&c(1, &[0, 1]), None));
    }
}
