// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Integration tests: the real `vhost-i2c-eeprom` binary driven over its
//! vhost-user socket by `test_kit::frontend::TestFrontend` (acting as QEMU and the
//! guest's i2c-virtio driver).

use std::ops::{Deref, DerefMut};
use std::process::Command;
use std::time::Duration;

use common::line::Pull;
use common::wp::WpWriter;
use test_kit::frontend::features::{F_EVENT_IDX, F_INDIRECT, F_PROTOCOL, F_VERSION_1};
use test_kit::frontend::{Buf, Completion, FrontendOptions, TestFrontend};
use test_kit::server::Server;
use test_kit::testutil::{cargo_bin, wait_until, ChildGuard};

const T: Duration = Duration::from_secs(10);
const F_ZERO_LENGTH: u64 = 1 << 0;
const FAIL_NEXT: u32 = 1;
const M_RD: u32 = 2;
const OK: u8 = 0;
const ERR: u8 = 1;
const BIN: &str = env!("CARGO_BIN_EXE_vhost-i2c-eeprom");

/// A vhost-i2c-eeprom [`Server`] on DIR/i2c.sock.
struct Eeprom(Server);

impl Eeprom {
    /// Start the backend on DIR/i2c.sock with these `--eeprom` specs ({dir}
    /// is replaced by the temp dir) and extra arguments.
    fn start(specs: &[&str], extra: &[&str]) -> Eeprom {
        let mut args: Vec<&str> = specs.iter().flat_map(|s| ["--eeprom", s]).collect();
        args.extend(extra);
        Eeprom(Server::start(BIN, "debug", "i2c.sock", &args, T))
    }

    fn connect(&self) -> TestFrontend {
        self.connect_at("i2c.sock")
    }

    fn connect_at(&self, sock: &str) -> TestFrontend {
        self.0.connect_at(sock, opts(), T)
    }

    fn image(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

impl Deref for Eeprom {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.0
    }
}

impl DerefMut for Eeprom {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.0
    }
}

fn spawn(args: &[String]) -> ChildGuard {
    let mut cmd = Command::new(BIN);
    cmd.env("RUST_LOG", "debug").args(args);
    ChildGuard::spawn(cmd).unwrap()
}

fn opts() -> FrontendOptions {
    FrontendOptions {
        queue_sizes: vec![64],
        features: F_VERSION_1 | F_INDIRECT | F_EVENT_IDX | F_ZERO_LENGTH,
        ..FrontendOptions::default()
    }
}

fn hdr(addr: u16, flags: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[..2].copy_from_slice(&(addr << 1).to_le_bytes());
    h[4..].copy_from_slice(&flags.to_le_bytes());
    h
}

/// Queue a write request (no kick).
fn submit_write(fe: &mut TestFrontend, addr: u16, data: &[u8], flags: u32, indirect: bool) -> u16 {
    let h = hdr(addr, flags);
    let bufs: Vec<Buf> = if data.is_empty() {
        vec![Buf::Out(&h), Buf::In(1)]
    } else {
        vec![Buf::Out(&h), Buf::Out(data), Buf::In(1)]
    };
    fe.submit(0, &bufs, indirect).unwrap()
}

/// Queue a read request (no kick).
fn submit_read(fe: &mut TestFrontend, addr: u16, len: u32, flags: u32, indirect: bool) -> u16 {
    let h = hdr(addr, flags | M_RD);
    let bufs: Vec<Buf> = if len == 0 {
        vec![Buf::Out(&h), Buf::In(1)]
    } else {
        vec![Buf::Out(&h), Buf::In(len), Buf::In(1)]
    };
    fe.submit(0, &bufs, indirect).unwrap()
}

fn status(c: &Completion) -> u8 {
    *c.ins.last().unwrap().last().unwrap()
}

/// One-message write transaction: (status, used len).
fn write(fe: &mut TestFrontend, addr: u16, data: &[u8]) -> (u8, u32) {
    let id = submit_write(fe, addr, data, 0, false);
    fe.kick(0).unwrap();
    let c = fe.wait_used(0, T).unwrap();
    assert_eq!(c.id, id);
    (status(&c), c.len)
}

/// Current-address read: (status, data, used len).
fn read(fe: &mut TestFrontend, addr: u16, len: u32) -> (u8, Vec<u8>, u32) {
    let id = submit_read(fe, addr, len, 0, false);
    fe.kick(0).unwrap();
    let c = fe.wait_used(0, T).unwrap();
    assert_eq!(c.id, id);
    let data = if len == 0 {
        Vec::new()
    } else {
        c.ins[0].clone()
    };
    (status(&c), data, c.len)
}

/// Random read as Linux does it: word-address write with FAIL_NEXT, then the
/// read, both queued before one kick. Returns (statuses, data).
fn random_read(fe: &mut TestFrontend, addr: u16, word: &[u8], len: u32) -> ([u8; 2], Vec<u8>) {
    let a = submit_write(fe, addr, word, FAIL_NEXT, true);
    let b = submit_read(fe, addr, len, 0, true);
    fe.kick(0).unwrap();
    let ca = fe.wait_used(0, T).unwrap();
    let cb = fe.wait_used(0, T).unwrap();
    assert_eq!((ca.id, cb.id), (a, b));
    assert_eq!(ca.len, 1);
    if status(&cb) == OK {
        assert_eq!(cb.len, len + 1, "used length of a read: buffer + status");
    } else {
        assert_eq!(cb.len, 1);
    }
    ([status(&ca), status(&cb)], cb.ins[0].clone())
}

/// Poll (ACK polling) until the device at `addr` answers a quick write.
fn wait_ready(fe: &mut TestFrontend, addr: u16) {
    let ready = wait_until(T, || (write(fe, addr, &[]).0 == OK).then_some(()));
    assert!(
        ready.is_some(),
        "device {addr:#x} never left its write cycle"
    );
}

#[test]
fn features_and_protocol_features() {
    let e = Eeprom::start(&["model=24c02,addr=0x50,file={dir}/a.bin"], &[]);
    let fe = e.connect();
    let offered = fe.offered_features();
    for (bit, name) in [
        (F_VERSION_1, "VERSION_1"),
        (F_INDIRECT, "INDIRECT_DESC"),
        (F_EVENT_IDX, "EVENT_IDX"),
        (F_ZERO_LENGTH, "ZERO_LENGTH_REQUEST"),
        (F_PROTOCOL, "PROTOCOL_FEATURES"),
    ] {
        assert_ne!(offered & bit, 0, "{name} not offered");
    }
    use vhost::vhost_user::message::VhostUserProtocolFeatures as P;
    let p = fe.protocol_features();
    assert!(p.contains(P::MQ | P::REPLY_ACK), "{p:?}");
    assert!(!p.contains(P::CONFIG), "no config space: {p:?}");
}

#[test]
fn write_then_read_back_through_virtio_and_image() {
    let e = Eeprom::start(
        &[
            "model=24c32,addr=0x50,file={dir}/a.bin",
            "model=24c02,addr=0x51,file={dir}/b.bin,twr-us=0",
        ],
        &[],
    );
    let mut fe = e.connect();
    assert_eq!(e.image("a.bin"), vec![0xff; 4096], "created erased");
    assert_eq!(e.image("b.bin"), vec![0xff; 256]);
    // A full 32-byte page at 0x0120 of the 24c32.
    let data: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    let mut msg = vec![0x01, 0x20];
    msg.extend_from_slice(&data);
    assert_eq!(write(&mut fe, 0x50, &msg), (OK, 1));
    // In the image as soon as the guest sees the completion.
    let img = e.image("a.bin");
    assert_eq!(&img[0x120..0x140], &data[..]);
    assert_eq!(img[0x11f], 0xff);
    assert_eq!(img[0x140], 0xff);
    wait_ready(&mut fe, 0x50);
    let (st, got) = random_read(&mut fe, 0x50, &[0x01, 0x20], 32);
    assert_eq!(st, [OK, OK]);
    assert_eq!(got, data);
    // Sequential: the pointer continues after the last byte read.
    let (st, got, len) = read(&mut fe, 0x50, 2);
    assert_eq!((st, len), (OK, 3));
    assert_eq!(got, vec![0xff, 0xff]);

    // The 24c02: byte write with an 8-bit word address; page wrap at 8 bytes.
    assert_eq!(write(&mut fe, 0x51, &[0x06, 1, 2, 3, 4]).0, OK);
    let img = e.image("b.bin");
    assert_eq!(&img[0..8], &[3, 4, 0xff, 0xff, 0xff, 0xff, 1, 2]);
    let (st, got) = random_read(&mut fe, 0x51, &[0x06], 4);
    assert_eq!(st, [OK, OK]);
    assert_eq!(got, vec![1, 2, 0xff, 0xff], "reads do not wrap at the page");
    // The other image is untouched by this device.
    assert_eq!(&e.image("a.bin")[..8], &[0xff; 8]);
}

#[test]
fn write_cycle_nacks_until_done() {
    // tWR of one second: the probe right after the write is well inside it.
    let e = Eeprom::start(
        &["model=24c64,addr=0x50,file={dir}/a.bin,twr-us=1000000"],
        &[],
    );
    let mut fe = e.connect();
    assert_eq!(write(&mut fe, 0x50, &[0, 0, 0xab]).0, OK);
    assert_eq!(
        write(&mut fe, 0x50, &[]),
        (ERR, 1),
        "quick write NACKed during tWR"
    );
    let (st, _, len) = read(&mut fe, 0x50, 1);
    assert_eq!((st, len), (ERR, 1), "read NACKed during tWR");
    wait_ready(&mut fe, 0x50);
    let (st, got) = random_read(&mut fe, 0x50, &[0, 0], 1);
    assert_eq!(st, [OK, OK]);
    assert_eq!(got, vec![0xab]);
}

#[test]
fn fail_next_groups() {
    let e = Eeprom::start(
        &[
            "model=24c32,addr=0x50,file={dir}/a.bin,twr-us=0",
            "model=24c02,addr=0x52,file={dir}/b.bin,twr-us=1000000",
        ],
        &[],
    );
    let mut fe = e.connect();
    let pattern: Vec<u8> = (0..32).collect();
    let mut msg = vec![0, 0];
    msg.extend_from_slice(&pattern);
    assert_eq!(write(&mut fe, 0x50, &msg).0, OK);

    // Group 1: pointer to 0x0010 (ok), read from an absent device (fails),
    // read 4 from 0x50 (fails with its group, never reaches the bus).
    // Group 2: one read of 0x50, unaffected. All queued before one kick.
    let ids = [
        submit_write(&mut fe, 0x50, &[0x00, 0x10], FAIL_NEXT, false),
        submit_read(&mut fe, 0x33, 1, FAIL_NEXT, false),
        submit_read(&mut fe, 0x50, 4, 0, true),
        submit_read(&mut fe, 0x50, 1, 0, false),
    ];
    fe.kick(0).unwrap();
    let cs: Vec<Completion> = (0..4).map(|_| fe.wait_used(0, T).unwrap()).collect();
    assert_eq!(cs.iter().map(|c| c.id).collect::<Vec<_>>(), ids);
    let st: Vec<u8> = cs.iter().map(status).collect();
    assert_eq!(st, vec![OK, ERR, ERR, OK]);
    assert_eq!(cs[2].len, 1, "failed read: only the status was written");
    // Group 2 read the byte at 0x10: the skipped read did not move the pointer.
    assert_eq!(cs[3].ins[0], vec![0x10]);
    assert_eq!(cs[3].len, 2);

    // A busy device fails the whole random read; the next group is fine.
    assert_eq!(write(&mut fe, 0x52, &[0x00, 0x77]).0, OK);
    submit_write(&mut fe, 0x52, &[0x00], FAIL_NEXT, true);
    submit_read(&mut fe, 0x52, 2, 0, true);
    submit_write(&mut fe, 0x50, &[0x00, 0x05], FAIL_NEXT, true);
    submit_read(&mut fe, 0x50, 2, 0, true);
    fe.kick(0).unwrap();
    let cs: Vec<Completion> = (0..4).map(|_| fe.wait_used(0, T).unwrap()).collect();
    assert_eq!(
        cs.iter().map(status).collect::<Vec<_>>(),
        vec![ERR, ERR, OK, OK]
    );
    assert_eq!(cs[3].ins[0], vec![5, 6]);

    // A group whose tail arrives after the kick: the head completes without
    // waiting, the tail continues the transaction (repeated START).
    let head = submit_write(&mut fe, 0x50, &[0x00, 0x08], FAIL_NEXT, false);
    fe.kick(0).unwrap();
    let c = fe.wait_used(0, T).unwrap();
    assert_eq!((c.id, status(&c)), (head, OK));
    let (st, got, _) = read(&mut fe, 0x50, 3);
    assert_eq!(st, OK);
    assert_eq!(got, vec![8, 9, 10]);
}

#[test]
fn quick_probes_and_i2cdetect_reads() {
    let e = Eeprom::start(
        &[
            "model=24c32,addr=0x50,file={dir}/a.bin",
            "model=24c02,addr=0x51,file={dir}/b.bin",
            "model=24c16,addr=0x58,file={dir}/c.bin",
        ],
        &[],
    );
    let mut fe = e.connect();
    // Quick write and quick read (zero-length requests).
    let mut present = Vec::new();
    for a in 0x08..=0x77u16 {
        let (w, wl) = write(&mut fe, a, &[]);
        let (r, _, rl) = read(&mut fe, a, 0);
        assert_eq!((wl, rl), (1, 1));
        assert_eq!(w, r, "quick read and write agree at {a:#x}");
        if w == OK {
            present.push(a);
        }
    }
    let mut expect = vec![0x50, 0x51];
    expect.extend(0x58..=0x5f);
    assert_eq!(present, expect);
    // i2cdetect's default for 0x50-0x5f: a one-byte read, which moves the pointer.
    assert_eq!(write(&mut fe, 0x51, &[0x10, 0xaa, 0xbb]).0, OK);
    wait_ready(&mut fe, 0x51);
    let (st, _) = random_read(&mut fe, 0x51, &[0x10], 0);
    assert_eq!(st, [OK, OK]);
    assert_eq!(read(&mut fe, 0x51, 1).1, vec![0xaa]);
    assert_eq!(read(&mut fe, 0x51, 1).1, vec![0xbb]);
    assert_eq!(read(&mut fe, 0x51, 1).1, vec![0xff]);
    assert_eq!(read(&mut fe, 0x53, 1).0, ERR);
}

#[test]
fn unknown_address_is_nack() {
    let e = Eeprom::start(&["model=24c02,addr=0x50,file={dir}/a.bin"], &[]);
    let mut fe = e.connect();
    assert_eq!(write(&mut fe, 0x20, &[0, 1, 2]), (ERR, 1));
    let (st, _, len) = read(&mut fe, 0x20, 4);
    assert_eq!((st, len), (ERR, 1));
    // 10-bit style addresses beyond 7 bits.
    assert_eq!(write(&mut fe, 0x150, &[0]).0, ERR);
    assert_eq!(e.image("a.bin"), vec![0xff; 256]);
}

#[test]
fn malformed_chains_then_good_request() {
    let e = Eeprom::start(&["model=24c02,addr=0x50,file={dir}/a.bin,twr-us=0"], &[]);
    let mut fe = e.connect();
    let good = hdr(0x50, 0);
    let rd = hdr(0x50, M_RD);
    let cases: Vec<(&str, Vec<Buf>, Option<u8>)> = vec![
        (
            "short header",
            vec![Buf::Out(&good[..4]), Buf::In(1)],
            Some(ERR),
        ),
        ("no status", vec![Buf::Out(&good), Buf::Out(&[0, 1])], None),
        (
            "header only writable",
            vec![Buf::In(8), Buf::In(1)],
            Some(ERR),
        ),
        (
            "readable after writable",
            vec![Buf::Out(&good), Buf::In(1), Buf::Out(&[1])],
            Some(ERR),
        ),
        (
            "read with readable buffer",
            vec![Buf::Out(&rd), Buf::Out(&[1, 2]), Buf::In(1)],
            Some(ERR),
        ),
        (
            "write with writable buffer",
            vec![Buf::Out(&good), Buf::In(4), Buf::In(1)],
            Some(ERR),
        ),
        (
            "buffer outside guest memory",
            vec![
                Buf::Out(&rd),
                Buf::Raw {
                    addr: 1 << 40,
                    len: 16,
                    write: true,
                },
                Buf::In(1),
            ],
            Some(ERR),
        ),
        (
            "status outside guest memory",
            vec![
                Buf::Out(&good),
                Buf::Raw {
                    addr: 1 << 40,
                    len: 1,
                    write: true,
                },
            ],
            None,
        ),
        (
            "header outside guest memory",
            vec![
                Buf::Raw {
                    addr: 1 << 40,
                    len: 8,
                    write: false,
                },
                Buf::In(1),
            ],
            Some(ERR),
        ),
        (
            "over-long read",
            vec![
                Buf::Out(&rd),
                Buf::Raw {
                    addr: 0,
                    len: 0x10000,
                    write: true,
                },
                Buf::In(1),
            ],
            Some(ERR),
        ),
    ];
    for indirect in [false, true] {
        for (name, bufs, expect) in &cases {
            let id = fe.submit(0, bufs, indirect).unwrap();
            fe.kick(0).unwrap();
            let c = match fe.wait_used(0, T) {
                Ok(c) => c,
                Err(err) => panic!("{name}: {err}\n{}", e.log()),
            };
            assert_eq!(c.id, id, "{name}");
            match expect {
                Some(st) => {
                    assert_eq!(c.len, 1, "{name}");
                    assert_eq!(status(&c), *st, "{name}");
                }
                None => assert_eq!(c.len, 0, "{name}: dropped chain still returned"),
            }
            // The queue keeps serving.
            assert_eq!(write(&mut fe, 0x50, &[0x00, 0x42]).0, OK, "{name}");
        }
    }
    // A malformed chain inside a batch of good ones.
    submit_write(&mut fe, 0x50, &[0x03, 0x33], 0, false);
    fe.submit(0, &[Buf::Out(&good[..3]), Buf::In(1)], false)
        .unwrap();
    submit_write(&mut fe, 0x50, &[0x04, 0x44], 0, true);
    fe.kick(0).unwrap();
    let st: Vec<u8> = (0..3)
        .map(|_| status(&fe.wait_used(0, T).unwrap()))
        .collect();
    assert_eq!(st, vec![OK, ERR, OK]);
    assert_eq!(&e.image("a.bin")[..5], &[0x42, 0xff, 0xff, 0x33, 0x44]);
    assert!(e.log().contains("malformed request"));
}

#[test]
fn wp_from_state_file_both_modes() {
    let e = Eeprom::start(
        &[
            "model=24c32,addr=0x50,file={dir}/a.bin,twr-us=0",
            "model=24c02,addr=0x51,file={dir}/b.bin,twr-us=0,wp=nack",
        ],
        &["--wp-state", "{dir}/wp.state"],
    );
    let mut fe = e.connect();
    let wp_path = e.path("wp.state");
    let writer = WpWriter::open(&wp_path, Pull::Up).unwrap();
    // Driven low: writes go through.
    writer.publish(false, true).unwrap();
    assert_eq!(write(&mut fe, 0x50, &[0, 0, 1]).0, OK);
    assert_eq!(write(&mut fe, 0x51, &[0, 1]).0, OK);
    assert_eq!(e.image("a.bin")[0], 1);
    assert_eq!(e.image("b.bin")[0], 1);
    // Driven high: ack mode ACKs and writes nothing; nack mode fails.
    writer.publish(true, true).unwrap();
    assert_eq!(write(&mut fe, 0x50, &[0, 0, 2]), (OK, 1));
    assert_eq!(write(&mut fe, 0x51, &[0, 2]), (ERR, 1));
    assert_eq!(e.image("a.bin")[0], 1);
    assert_eq!(e.image("b.bin")[0], 1);
    // No write cycle started in ack mode: the device answers at once... (tWR is 0
    // here anyway), and reads still work under WP.
    let (st, got) = random_read(&mut fe, 0x50, &[0, 0], 1);
    assert_eq!((st, got), ([OK, OK], vec![1]));
    // Low again.
    writer.publish(false, true).unwrap();
    assert_eq!(write(&mut fe, 0x50, &[0, 0, 3]).0, OK);
    assert_eq!(e.image("a.bin")[0], 3);
    // The writer dies: the line floats to its pull (up): protected.
    drop(writer);
    assert_eq!(write(&mut fe, 0x50, &[0, 0, 4]).0, OK);
    assert_eq!(write(&mut fe, 0x51, &[0, 4]).0, ERR);
    assert_eq!(e.image("a.bin")[0], 3);
    assert_eq!(e.image("b.bin")[0], 1);
    // A pulled-down line with a dead writer does not protect.
    drop(WpWriter::open(&wp_path, Pull::Down).unwrap());
    assert_eq!(write(&mut fe, 0x50, &[0, 0, 5]).0, OK);
    assert_eq!(e.image("a.bin")[0], 5);
}

#[test]
fn no_wp_state_means_never_protected() {
    let e = Eeprom::start(&["model=24c02,addr=0x50,file={dir}/a.bin,wp=nack"], &[]);
    let mut fe = e.connect();
    assert_eq!(write(&mut fe, 0x50, &[0, 9]).0, OK);
    assert_eq!(e.image("a.bin")[0], 9);
}

/// virtio-gpio request: le16 type, le16 gpio, le32 value.
fn gpio_req(fe: &mut TestFrontend, t: u16, gpio: u16, value: u32) {
    let mut r = [0u8; 8];
    r[..2].copy_from_slice(&t.to_le_bytes());
    r[2..4].copy_from_slice(&gpio.to_le_bytes());
    r[4..].copy_from_slice(&value.to_le_bytes());
    let c = fe.request(0, &[Buf::Out(&r), Buf::In(2)], T).unwrap();
    assert_eq!(c.ins[0][0], 0, "gpio request {t} failed");
}

#[test]
fn wp_driven_by_a_running_vhost_gpio() {
    const SET_DIRECTION: u16 = 3;
    const SET_VALUE: u16 = 5;
    const OUT: u32 = 1;
    let mut gpio = Server::start(
        cargo_bin("vhost-gpio"),
        "debug",
        "gpio.sock",
        &[
            "--lines",
            "wp,led",
            "--wp-line",
            "wp",
            "--wp-state",
            "{dir}/wp.state",
        ],
        T,
    );
    let wp_state = gpio.path("wp.state");
    let mut gfe = gpio.connect(
        FrontendOptions {
            queue_sizes: vec![64, 64],
            features: F_VERSION_1 | F_INDIRECT | F_EVENT_IDX,
            ..FrontendOptions::default()
        },
        T,
    );
    assert!(wait_until(T, || wp_state.exists().then_some(())).is_some());

    let e = Eeprom::start(
        &["model=24c32,addr=0x50,file={dir}/a.bin,twr-us=0"],
        &["--wp-state", &wp_state.display().to_string()],
    );
    let mut fe = e.connect();
    // The line is pulled up and undriven: protected.
    assert_eq!(write(&mut fe, 0x50, &[0, 0, 1]).0, OK);
    assert_eq!(e.image("a.bin")[0], 0xff);
    // The guest drives WP low (as the nvmem core does around a write).
    gpio_req(&mut gfe, SET_VALUE, 0, 0);
    gpio_req(&mut gfe, SET_DIRECTION, 0, OUT);
    assert_eq!(write(&mut fe, 0x50, &[0, 0, 2]).0, OK);
    assert_eq!(e.image("a.bin")[0], 2);
    // And high again.
    gpio_req(&mut gfe, SET_VALUE, 0, 1);
    assert_eq!(write(&mut fe, 0x50, &[0, 0, 3]).0, OK);
    assert_eq!(e.image("a.bin")[0], 2);
    // vhost-gpio killed: the line floats to its pull (up).
    gpio_req(&mut gfe, SET_VALUE, 0, 0);
    drop(gfe);
    gpio.kill9().unwrap();
    assert_eq!(write(&mut fe, 0x50, &[0, 0, 4]).0, OK);
    assert_eq!(e.image("a.bin")[0], 2);
}

#[test]
fn kill9_keeps_acknowledged_writes() {
    let mut e = Eeprom::start(&["model=24c256,addr=0x50,file={dir}/a.bin,twr-us=0"], &[]);
    let mut fe = e.connect();
    let mut expect = vec![0xffu8; 32768];
    for i in 0..64u16 {
        let off = i * 509 % 32768;
        let v = u8::try_from(i).unwrap() ^ 0xa5;
        let [hi, lo] = off.to_be_bytes();
        assert_eq!(write(&mut fe, 0x50, &[hi, lo, v]).0, OK);
        expect[usize::from(off)] = v;
    }
    // No sync, no clean shutdown: the page cache must have it.
    e.restart_after_kill9();
    drop(fe);
    assert_eq!(e.image("a.bin"), expect);
    let mut fe = e.connect();
    let (st, got) = random_read(&mut fe, 0x50, &[0, 0], 64);
    assert_eq!(st, [OK, OK]);
    assert_eq!(got, expect[..64]);
}

#[test]
fn sync_mode_writes_land() {
    let e = Eeprom::start(
        &["model=24c02,addr=0x50,file={dir}/a.bin,twr-us=0"],
        &["--sync"],
    );
    let mut fe = e.connect();
    assert_eq!(write(&mut fe, 0x50, &[0x10, 1, 2, 3]).0, OK);
    assert_eq!(&e.image("a.bin")[0x10..0x13], &[1, 2, 3]);
}

#[test]
fn reconnect_after_disconnect() {
    let mut e = Eeprom::start(&["model=24c02,addr=0x50,file={dir}/a.bin,twr-us=0"], &[]);
    for round in 0..3u8 {
        let mut fe = e.connect();
        assert_eq!(
            write(&mut fe, 0x50, &[round, round + 1]).0,
            OK,
            "round {round}"
        );
        fe.disconnect();
    }
    let mut fe = e.connect();
    let (st, got) = random_read(&mut fe, 0x50, &[0], 3);
    assert_eq!((st, got), ([OK, OK], vec![1, 2, 3]));
    assert!(
        e.try_wait().unwrap().is_none(),
        "daemon exited on disconnect"
    );
}

#[test]
fn socket_count_gives_independent_buses() {
    let e = Eeprom::start(
        &["model=24c02,addr=0x50,file={dir}/e.bin,twr-us=0"],
        &["--socket-count", "2", "--wp-state", "{dir}/wp"],
    );
    let mut fe0 = e.connect_at("i2c.sock0");
    let mut fe1 = e.connect_at("i2c.sock1");
    // The backend created both state files (floating, pulled up: protected).
    assert_eq!(write(&mut fe0, 0x50, &[0, 0x01]).0, OK);
    assert_eq!(e.image("e.bin0")[0], 0xff);
    let w0 = WpWriter::open(&e.path("wp0"), Pull::Up).unwrap();
    let w1 = WpWriter::open(&e.path("wp1"), Pull::Up).unwrap();
    w0.publish(false, true).unwrap();
    w1.publish(false, true).unwrap();
    assert_eq!(write(&mut fe0, 0x50, &[0, 0x10]).0, OK);
    assert_eq!(write(&mut fe1, 0x50, &[0, 0x11]).0, OK);
    assert_eq!(e.image("e.bin0")[0], 0x10);
    assert_eq!(e.image("e.bin1")[0], 0x11);
    assert!(!e.path("e.bin").exists());
    // Each bus follows its own WP state file.
    w1.publish(true, true).unwrap();
    assert_eq!(write(&mut fe0, 0x50, &[0, 0x20]).0, OK);
    assert_eq!(write(&mut fe1, 0x50, &[0, 0x21]).0, OK);
    assert_eq!(e.image("e.bin0")[0], 0x20);
    assert_eq!(e.image("e.bin1")[0], 0x11, "bus 1 protected");
    assert!(!e.path("wp").exists());
}

fn wait_exit(child: &mut ChildGuard) -> std::process::ExitStatus {
    wait_until(T, || child.try_wait().unwrap()).expect("backend did not exit")
}

#[test]
fn image_locked_against_a_second_backend() {
    let e = Eeprom::start(&["model=24c02,addr=0x50,file={dir}/a.bin"], &[]);
    // Wait until the first one has opened (and locked) the image.
    let _fe = e.connect();
    let mut second = spawn(&[
        "--socket-path".into(),
        e.path("other.sock").display().to_string(),
        "--eeprom".into(),
        format!("model=24c02,addr=0x50,file={}", e.path("a.bin").display()),
    ]);
    let st = wait_exit(&mut second);
    assert!(!st.success());
    assert!(
        second.log().contains("locked by another backend"),
        "{}",
        second.log()
    );
    assert!(!e.path("other.sock").exists());
}

#[test]
fn wrong_size_image_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.bin");
    std::fs::write(&img, [0u8; 100]).unwrap();
    let mut child = spawn(&[
        "--socket-path".into(),
        dir.path().join("i2c.sock").display().to_string(),
        "--eeprom".into(),
        format!("model=24c32,addr=0x50,file={}", img.display()),
    ]);
    let st = wait_exit(&mut child);
    assert!(!st.success());
    let log = child.log();
    assert!(log.contains("100 bytes") && log.contains("4096"), "{log}");
    assert_eq!(
        std::fs::read(&img).unwrap(),
        vec![0u8; 100],
        "never truncated or grown"
    );
}

#[test]
fn bad_command_lines_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("i2c.sock").display().to_string();
    for (spec, needle) in [
        ("model=24c99,addr=0x50,file=x", "unknown EEPROM model"),
        ("model=24c02,addr=0x50", "file= is required"),
        ("model=24c02,addr=0x50,file=x,speed=1", "unknown key"),
        ("model=24c16,addr=0x51,file=x", "multiple of 8"),
    ] {
        let mut child = spawn(&[
            "--socket-path".into(),
            sock.clone(),
            "--eeprom".into(),
            spec.into(),
        ]);
        let st = wait_exit(&mut child);
        assert!(!st.success(), "{spec}");
        assert!(child.log().contains(needle), "{spec}: {}", child.log());
    }
    let mut child = spawn(&[
        "--socket-path".into(),
        sock,
        "--eeprom".into(),
        "model=24c16,addr=0x50,file=x".into(),
        "--eeprom".into(),
        "model=24c02,addr=0x57,file=y".into(),
    ]);
    assert!(!wait_exit(&mut child).success());
    assert!(child.log().contains("overlap"), "{}", child.log());
}

#[test]
fn partial_groups_on_a_four_entry_ring() {
    // QEMU 7.2 gives the i2c queue 4 entries: a longer transfer is kicked
    // partial (Linux i2c-virtio) and its tail never comes.
    let e = Eeprom::start(&["model=24c32,addr=0x50,file={dir}/a.bin,twr-us=0"], &[]);
    let mut fe = e.0.connect(
        FrontendOptions {
            queue_sizes: vec![4],
            ..opts()
        },
        T,
    );
    let mut msg = vec![0, 0];
    msg.extend(0..8u8);
    assert_eq!(write(&mut fe, 0x50, &msg).0, OK);
    // Four messages of a longer transfer, all with FAIL_NEXT; the ring is full.
    submit_write(&mut fe, 0x50, &[0, 2], FAIL_NEXT, true);
    for _ in 0..3 {
        submit_read(&mut fe, 0x50, 1, FAIL_NEXT, true);
    }
    assert!(fe
        .submit(0, &[Buf::Out(&hdr(0x50, M_RD)), Buf::In(1)], true)
        .is_err());
    fe.kick(0).unwrap();
    let cs: Vec<Completion> = (0..4).map(|_| fe.wait_used(0, T).unwrap()).collect();
    assert_eq!(cs.iter().map(status).collect::<Vec<_>>(), vec![OK; 4]);
    assert_eq!(
        cs[1..].iter().map(|c| c.ins[0][0]).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    // The next transfer is served normally (it continues the open transaction
    // with a repeated START and ends it).
    assert_eq!(write(&mut fe, 0x50, &[0, 0x20, 0xee]).0, OK);
    assert_eq!(e.image("a.bin")[0x20], 0xee);
    // A partial group that failed does not fail the next transfer.
    for _ in 0..4 {
        submit_read(&mut fe, 0x33, 1, FAIL_NEXT, true);
    }
    fe.kick(0).unwrap();
    let st: Vec<u8> = (0..4)
        .map(|_| status(&fe.wait_used(0, T).unwrap()))
        .collect();
    assert_eq!(st, vec![ERR; 4]);
    let (st, got) = random_read(&mut fe, 0x50, &[0, 0x20], 1);
    assert_eq!((st, got), ([OK, OK], vec![0xee]));
}

#[test]
fn socket_path_that_is_a_file_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_socket = dir.path().join("precious.bin");
    std::fs::write(&not_a_socket, b"keep me").unwrap();
    let mut child = spawn(&[
        "--socket-path".into(),
        not_a_socket.display().to_string(),
        "--eeprom".into(),
        format!(
            "model=24c02,addr=0x50,file={}",
            dir.path().join("a.bin").display()
        ),
    ]);
    assert!(!wait_exit(&mut child).success());
    assert!(child.log().contains("not a socket"), "{}", child.log());
    assert_eq!(std::fs::read(&not_a_socket).unwrap(), b"keep me");
}
