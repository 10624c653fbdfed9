// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! virtio-gpio workloads: SET_VALUE/GET_VALUE round trips at a given queue depth, and the
//! interrupt latency from a control-socket level change to the used eventq buffer.
//!
//! Only the virtio-gpio wire format is used (virtio spec 1.2, "GPIO Device"), and the device
//! is driven in the order Linux's gpio-virtio driver drives it (probe: config, `GET_NAMES`,
//! `GET_DIRECTION` of every line; an output: `SET_VALUE` then `SET_DIRECTION OUT`; a freed
//! line: `SET_DIRECTION NONE`), so any backend that serves Linux can be measured; the
//! interrupt workload also needs a control socket that takes `set <line> <0|1>` lines and
//! answers `ok`, as vhost-gpio's does.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use test_kit::frontend::{Buf, Completion, FrontendOptions, TestFrontend};
use vhost_gpio::protocol::{
    Request, VIRTIO_GPIO_DIRECTION_IN, VIRTIO_GPIO_DIRECTION_NONE, VIRTIO_GPIO_DIRECTION_OUT,
    VIRTIO_GPIO_F_IRQ, VIRTIO_GPIO_IRQ_STATUS_VALID, VIRTIO_GPIO_IRQ_TYPE_EDGE_BOTH,
    VIRTIO_GPIO_IRQ_TYPE_NONE, VIRTIO_GPIO_MSG_GET_DIRECTION, VIRTIO_GPIO_MSG_GET_NAMES,
    VIRTIO_GPIO_MSG_GET_VALUE, VIRTIO_GPIO_MSG_IRQ_TYPE, VIRTIO_GPIO_MSG_SET_DIRECTION,
    VIRTIO_GPIO_MSG_SET_VALUE, VIRTIO_GPIO_STATUS_OK,
};

use crate::stats::Tally;
use crate::{BenchError, Result, TIMEOUT};

/// VIRTIO_GPIO_F_IRQ as a feature mask.
pub const F_IRQ: u64 = 1 << VIRTIO_GPIO_F_IRQ;
const F_VERSION_1: u64 = 1 << 32;
const F_INDIRECT: u64 = 1 << 28;
const F_EVENT_IDX: u64 = 1 << 29;
/// Descriptors per queue: 64 two-descriptor chains in flight need 128.
const QUEUE_SIZE: u16 = 256;
/// Bytes of guest memory per descriptor: the largest device-writable buffer, which is the
/// `GET_NAMES` answer (status + the names block).
const SLOT_SIZE: u32 = 4096;
/// Bytes of a `virtio_gpio_config`: le16 ngpio, 2 padding, le32 gpio_names_size.
const CONFIG_SIZE: u32 = 8;
/// Bytes of a response to every message but `GET_NAMES`: status, value.
const RESPONSE_SIZE: u32 = 2;

/// Frontend options for a gpio device: requestq and eventq.
pub fn options() -> FrontendOptions {
    FrontendOptions {
        queue_sizes: vec![QUEUE_SIZE, QUEUE_SIZE],
        features: F_VERSION_1 | F_INDIRECT | F_EVENT_IDX | F_IRQ,
        slot_size: SLOT_SIZE,
        ..FrontendOptions::default()
    }
}

fn encode(t: u16, gpio: u16, value: u32) -> [u8; 8] {
    Request::encode(t, gpio, value)
}

/// One request that must succeed, outside the measurement; returns the value byte.
fn must(fe: &mut TestFrontend, t: u16, gpio: u16, value: u32) -> Result<u8> {
    let r = encode(t, gpio, value);
    let c = fe.request(0, &[Buf::Out(&r), Buf::In(RESPONSE_SIZE)], TIMEOUT)?;
    match c.ins.first().map(Vec::as_slice) {
        Some(&[VIRTIO_GPIO_STATUS_OK, v]) if c.len == RESPONSE_SIZE => Ok(v),
        _ => Err(BenchError::Setup(format!(
            "request type {t} line {gpio} value {value} failed: used length {}, response {:?}",
            c.len, c.ins
        ))),
    }
}

/// What the driver's probe learnt about the chip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chip {
    /// Lines (`ngpio`).
    pub ngpio: u16,
    /// Line names from `GET_NAMES` (empty without a names block; "" for a nameless line).
    pub names: Vec<String>,
    /// Each line's direction from `GET_DIRECTION` at probe.
    pub directions: Vec<u8>,
}

/// Parses a `virtio_gpio_config`: `(ngpio, gpio_names_size)`.
fn parse_config(cfg: &[u8]) -> Result<(u16, u32)> {
    match *cfg {
        [n0, n1, _, _, s0, s1, s2, s3, ..] => Ok((
            u16::from_le_bytes([n0, n1]),
            u32::from_le_bytes([s0, s1, s2, s3]),
        )),
        _ => Err(BenchError::Setup(format!(
            "config space too short: {} bytes",
            cfg.len()
        ))),
    }
}

/// Splits a names block into at most `ngpio` NUL-terminated names, as the Linux driver reads
/// it (the last byte is taken as a terminator whatever it is).
fn parse_names(block: &[u8], ngpio: u16) -> Vec<String> {
    let Some((_, body)) = block.split_last() else {
        return Vec::new();
    };
    body.split(|&b| b == 0)
        .take(usize::from(ngpio))
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Probes the device as Linux's gpio-virtio driver does before it registers the chip: reads
/// the config, fetches the line names with `GET_NAMES` (when the config announces a names
/// block), then gpiolib reads every line's direction with `GET_DIRECTION`. Every answer must
/// be exactly the size the driver asked for, as Linux rejects any other used length.
pub fn probe(fe: &mut TestFrontend) -> Result<Chip> {
    let cfg = fe.get_config(0, CONFIG_SIZE)?;
    let (ngpio, names_size) = parse_config(&cfg)?;
    if ngpio == 0 {
        return Err(BenchError::Setup(
            "the device has no lines (config ngpio is 0)".into(),
        ));
    }
    let mut names = Vec::new();
    if names_size > 0 {
        let want = names_size.saturating_add(1);
        if want > SLOT_SIZE {
            return Err(BenchError::Setup(format!(
                "the names block ({names_size} bytes) does not fit one {SLOT_SIZE}-byte buffer"
            )));
        }
        let r = encode(VIRTIO_GPIO_MSG_GET_NAMES, 0, 0);
        let c = fe.request(0, &[Buf::Out(&r), Buf::In(want)], TIMEOUT)?;
        match c.ins.first().map(Vec::as_slice) {
            Some([VIRTIO_GPIO_STATUS_OK, block @ ..]) if c.len == want => {
                names = parse_names(block, ngpio);
            }
            _ => {
                return Err(BenchError::Setup(format!(
                    "GET_NAMES failed: used length {} for {want}, status {:?}",
                    c.len,
                    c.ins.first().and_then(|b| b.first())
                )))
            }
        }
    }
    let directions = (0..ngpio)
        .map(|line| {
            let d = must(fe, VIRTIO_GPIO_MSG_GET_DIRECTION, line, 0)?;
            if d > VIRTIO_GPIO_DIRECTION_IN {
                return Err(BenchError::Setup(format!(
                    "GET_DIRECTION line {line}: direction {d} is none of 0, 1, 2"
                )));
            }
            Ok(d)
        })
        .collect::<Result<Vec<u8>>>()?;
    Ok(Chip {
        ngpio,
        names,
        directions,
    })
}

impl Chip {
    /// Fails unless `line` exists.
    pub fn check_line(&self, what: &str, line: u16) -> Result<()> {
        if line >= self.ngpio {
            return Err(BenchError::Setup(format!(
                "{what} {line} out of range: the device has {} lines",
                self.ngpio
            )));
        }
        Ok(())
    }
}

/// One request: type, line, value.
pub type Msg = (u16, u16, u32);

/// Linux's `direction_output(line, value)`: `SET_VALUE` first, then `SET_DIRECTION OUT` (a
/// device may refuse an output whose value was never set, and rust-vmm's does).
pub fn direction_output(line: u16, value: u32) -> [Msg; 2] {
    [
        (VIRTIO_GPIO_MSG_SET_VALUE, line, value),
        (
            VIRTIO_GPIO_MSG_SET_DIRECTION,
            line,
            u32::from(VIRTIO_GPIO_DIRECTION_OUT),
        ),
    ]
}

/// Linux's `direction_input(line)`.
pub fn direction_input(line: u16) -> [Msg; 1] {
    [(
        VIRTIO_GPIO_MSG_SET_DIRECTION,
        line,
        u32::from(VIRTIO_GPIO_DIRECTION_IN),
    )]
}

/// Linux's `free(line)`: `SET_DIRECTION NONE`.
pub fn free(line: u16) -> [Msg; 1] {
    [(
        VIRTIO_GPIO_MSG_SET_DIRECTION,
        line,
        u32::from(VIRTIO_GPIO_DIRECTION_NONE),
    )]
}

/// Sends `msgs` one at a time, each of which must succeed.
fn must_all(fe: &mut TestFrontend, msgs: &[Msg]) -> Result<()> {
    for &(t, line, value) in msgs {
        must(fe, t, line, value)?;
    }
    Ok(())
}

/// Makes `line` an output driving 0, as the driver does.
pub fn setup_set_get(fe: &mut TestFrontend, chip: &Chip, line: u16) -> Result<()> {
    chip.check_line("line", line)?;
    must_all(fe, &direction_output(line, 0))
}

/// Frees the line, as the driver does.
pub fn teardown_set_get(fe: &mut TestFrontend, line: u16) -> Result<()> {
    must_all(fe, &free(line))
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
    // Reused: collecting a completion allocates nothing.
    let mut c = Completion::default();
    loop {
        let now = Instant::now();
        let mut submitted = false;
        if now < deadline {
            while fe.in_flight(0) < depth {
                let (req, expect) = if seq.is_multiple_of(2) {
                    last_set ^= 1;
                    (
                        encode(VIRTIO_GPIO_MSG_SET_VALUE, line, u32::from(last_set)),
                        None::<u8>,
                    )
                } else {
                    (encode(VIRTIO_GPIO_MSG_GET_VALUE, line, 0), Some(last_set))
                };
                seq += 1;
                let head = fe.submit(0, &[Buf::Out(&req), Buf::In(RESPONSE_SIZE)], false)?;
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
        while fe.poll_used_into(0, &mut c)? {
            got = true;
            let p = pending
                .get_mut(usize::from(c.id))
                .and_then(Option::take)
                // Lazily: the message is formatted only on the error path (an eager
                // `format!` cost the frontend about 500 instructions per request).
                .ok_or_else(|| {
                    BenchError::Protocol(format!("used element {} was not submitted", c.id))
                })?;
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
    c.len == RESPONSE_SIZE
        && resp.first() == Some(&VIRTIO_GPIO_STATUS_OK)
        && expect.is_none_or(|v| resp.get(1) == Some(&v))
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

/// Prepares `line` for the interrupt workload: host level 0, then as Linux does for a
/// requested interrupt: `SET_DIRECTION IN`, then `IRQ_TYPE` both edges.
pub fn setup_irq(fe: &mut TestFrontend, chip: &Chip, ctl: &mut Control, line: u16) -> Result<()> {
    if fe.acked_features() & F_IRQ == 0 {
        return Err(BenchError::Setup(
            "the backend does not offer VIRTIO_GPIO_F_IRQ".into(),
        ));
    }
    chip.check_line("irq line", line)?;
    ctl.command(&format!("set {line} 0"))?;
    ctl.level = 0;
    must_all(fe, &direction_input(line))?;
    must(
        fe,
        VIRTIO_GPIO_MSG_IRQ_TYPE,
        line,
        u32::from(VIRTIO_GPIO_IRQ_TYPE_EDGE_BOTH),
    )
    .map(drop)
}

/// Disarms and frees the line, and stops driving it from the host.
pub fn teardown_irq(fe: &mut TestFrontend, ctl: &mut Control, line: u16) -> Result<()> {
    must(
        fe,
        VIRTIO_GPIO_MSG_IRQ_TYPE,
        line,
        u32::from(VIRTIO_GPIO_IRQ_TYPE_NONE),
    )?;
    // Disabling returns a still queued eventq buffer (none here, but be tolerant).
    while fe.poll_used(1)?.is_some() {}
    teardown_set_get(fe, line)?;
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
    let mut c = Completion::default();
    while Instant::now() < deadline {
        fe.submit(1, &[Buf::Out(&buf), Buf::In(1)], false)?;
        fe.kick(1)?;
        ctl.level ^= 1;
        let start = Instant::now();
        ctl.send(&format!("set {line} {}", ctl.level))?;
        fe.wait_used_into(1, TIMEOUT, &mut c)?;
        let lat = start.elapsed();
        ctl.answer()?;
        if record {
            t.samples.push(lat);
            t.requests += 1;
            t.chains += 1;
            if c.len != 1
                || c.ins.first().and_then(|b| b.first()) != Some(&VIRTIO_GPIO_IRQ_STATUS_VALID)
            {
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
        assert_eq!(
            encode(VIRTIO_GPIO_MSG_SET_VALUE, 0x0102, 1),
            [5, 0, 2, 1, 1, 0, 0, 0]
        );
    }

    #[test]
    fn lines_are_driven_in_the_linux_driver_order() {
        // The value first: SET_DIRECTION OUT on a line whose value was never set is refused
        // by rust-vmm's backend.
        assert_eq!(
            direction_output(3, 1),
            [
                (VIRTIO_GPIO_MSG_SET_VALUE, 3, 1),
                (VIRTIO_GPIO_MSG_SET_DIRECTION, 3, 1)
            ]
        );
        assert_eq!(direction_input(2), [(VIRTIO_GPIO_MSG_SET_DIRECTION, 2, 2)]);
        assert_eq!(free(2), [(VIRTIO_GPIO_MSG_SET_DIRECTION, 2, 0)]);
    }

    #[test]
    fn config_and_names_are_parsed_as_linux_does() {
        assert_eq!(parse_config(&[8, 0, 0, 0, 57, 0, 0, 0]).unwrap(), (8, 57));
        assert!(parse_config(&[8, 0, 0, 0]).is_err());
        assert_eq!(parse_names(b"a\0\0ccc\0", 3), ["a", "", "ccc"]);
        // At most ngpio names; the last byte ends the block whatever it is.
        assert_eq!(parse_names(b"a\0b\0c\0", 2), ["a", "b"]);
        assert_eq!(parse_names(b"ab", 1), ["a"]);
        assert!(parse_names(b"", 4).is_empty());
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
