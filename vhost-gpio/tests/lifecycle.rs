// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Lifecycle events under load, over the real vhost-user socket: a ring stopped, disabled or
//! reset, or the connection closed, while many requests are in flight; a second instance;
//! socket permissions; many connections.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::frontend::{Buf, FrontendOptions, TestFrontend};
use common::testutil::ChildGuard;
use vhost_gpio::protocol::*;

const T: Duration = Duration::from_secs(10);
const F_VERSION_1: u64 = 1 << 32;
const F_INDIRECT: u64 = 1 << 28;
const F_EVENT_IDX: u64 = 1 << 29;

struct Gpio {
    child: ChildGuard,
    dir: tempfile::TempDir,
}

impl Gpio {
    fn start(lines: &str, extra: &[&str]) -> Gpio {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vhost-gpio"));
        cmd.env("RUST_LOG", "info")
            .arg("--socket-path")
            .arg(dir.path().join("gpio.sock"))
            .arg("--lines")
            .arg(lines)
            .args(extra);
        Gpio {
            child: ChildGuard::spawn(cmd).unwrap(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn connect(&self, opts: FrontendOptions) -> TestFrontend {
        match TestFrontend::connect(&self.path("gpio.sock"), opts, T) {
            Ok(fe) => fe,
            Err(e) => panic!("connect: {e}\n--- backend log ---\n{}", self.child.log()),
        }
    }
}

fn opts(queue: u16, slot: u32) -> FrontendOptions {
    FrontendOptions {
        queue_sizes: vec![queue, 64],
        features: F_VERSION_1 | F_INDIRECT | F_EVENT_IDX,
        slot_size: slot,
        ..FrontendOptions::default()
    }
}

/// Queues `n` GET_NAMES requests, each in one indirect descriptor, and kicks once.
fn queue_get_names(fe: &mut TestFrontend, n: usize, names: u32) {
    let r = Request::encode(VIRTIO_GPIO_MSG_GET_NAMES, 0, 0);
    for _ in 0..n {
        fe.submit(0, &[Buf::Out(&r), Buf::In(names + 1)], true)
            .unwrap();
    }
    fe.kick(0).unwrap();
}

/// Size of the names block of `gpio0..gpio<n-1>`.
fn names_size(n: usize) -> u32 {
    let bytes: usize = (0..n).map(|i| format!("gpio{i}").len() + 1).sum();
    u32::try_from(bytes).unwrap()
}

fn count(log: &str, what: &str) -> usize {
    log.matches(what).count()
}

/// Defect 1: GET_VRING_BASE a few milliseconds after a kick of ~1000 long requests was never
/// answered (the worker spun on a queue that was no longer ready, holding the backend lock).
#[test]
fn stop_while_busy_is_answered_promptly() {
    const LINES: usize = 4096;
    const PENDING: usize = 1000;
    let g = Gpio::start(&LINES.to_string(), &[]);
    let names = names_size(LINES);
    let mut worst = Duration::ZERO;
    let mut busy_trials = 0;
    for delay_ms in [0u64, 1, 2, 3] {
        let mut fe = g.connect(opts(1024, names + 1 + 64));
        queue_get_names(&mut fe, PENDING, names);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let t0 = Instant::now();
        let r = fe.stop_queue(0);
        let took = t0.elapsed();
        let mut done = 0;
        while fe.poll_used(0).unwrap().is_some() {
            done += 1;
        }
        if let Err(e) = r {
            panic!(
                "GET_VRING_BASE after {delay_ms} ms: {e}\n--- backend log (tail) ---\n{}",
                tail(&g.child.log())
            );
        }
        eprintln!(
            "stop {delay_ms} ms after the kick: answered in {took:?}, {done} of {PENDING} served"
        );
        if done < PENDING {
            busy_trials += 1;
        }
        worst = worst.max(took);
        fe.disconnect();
    }
    eprintln!("worst stop latency with up to {PENDING} pending: {worst:?}");
    assert!(
        busy_trials > 0,
        "the ring was never busy when it was stopped"
    );
    // The defect's definition is "promptly"; 100 ms measured on an idle machine, this bound
    // leaves room for a loaded one.
    assert!(worst < Duration::from_secs(1), "stop took {worst:?}");
    std::thread::sleep(Duration::from_millis(200));
    let log = g.child.log();
    assert!(
        count(&log, "not ready") <= 4,
        "the worker kept logging about the stopped queue:\n{}",
        tail(&log)
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
