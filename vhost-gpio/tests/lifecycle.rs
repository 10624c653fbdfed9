// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Lifecycle events under load, over the real vhost-user socket: a ring stopped, disabled or
//! reset, or the connection closed, while many requests are in flight; a second instance;
//! socket permissions; many connections.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use test_kit::frontend::features::{F_EVENT_IDX, F_INDIRECT, F_VERSION_1};
use test_kit::frontend::{Buf, FrontendOptions, TestFrontend};
use test_kit::server::Server;
use test_kit::testutil::{
    env_usize, fd_count, file_mode, run_bounded, socket_activated, tail, wait_until, ChildGuard,
};
use vhost_gpio::protocol::*;

const T: Duration = Duration::from_secs(10);
const BIN: &str = env!("CARGO_BIN_EXE_vhost-gpio");

/// `vhost-gpio --socket-path DIR/gpio.sock --lines LINES EXTRA...` (`{dir}` stands for DIR),
/// listening.
fn start(lines: &str, extra: &[&str]) -> Server {
    Server::start(
        BIN,
        "info",
        "gpio.sock",
        &[&["--lines", lines], extra].concat(),
        T,
    )
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
    let g = start(&LINES.to_string(), &[]);
    let names = names_size(LINES);
    let mut worst = Duration::ZERO;
    let mut busy_trials = 0;
    for delay_ms in [0u64, 1, 2, 3] {
        let mut fe = g.connect(opts(1024, names + 1 + 64), T);
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
                tail(&g.log())
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
    let log = g.log();
    assert!(
        count(&log, "not ready") <= 4,
        "the worker kept logging about the stopped queue:\n{}",
        tail(&log)
    );
}

/// How the guest goes away in a WP race trial.
#[derive(Clone, Copy, Debug)]
enum GoAway {
    /// The frontend closes the socket mid-batch.
    Close,
    /// It closes the socket, then writes the kick eventfd.
    CloseThenKick,
    /// SET_VRING_ENABLE(0, false) mid-batch.
    DisableRing,
}

/// Trials per way of going away: 70 each (210 in all) by default; VGN_WP_TRIALS overrides.
fn wp_trials() -> usize {
    env_usize("VGN_WP_TRIALS", 70)
}

/// Queues (no kick) the batch: wp=0, then SET_DIRECTION OUT/IN alternately, ending OUT, so
/// that the line ends driven low if the whole batch lands.
fn queue_wp_batch(fe: &mut TestFrontend, n: usize) {
    let out = u32::from(VIRTIO_GPIO_DIRECTION_OUT);
    let inp = u32::from(VIRTIO_GPIO_DIRECTION_IN);
    let first = Request::encode(VIRTIO_GPIO_MSG_SET_VALUE, 0, 0);
    fe.submit(0, &[Buf::Out(&first), Buf::In(2)], true).unwrap();
    for i in 0..n {
        let dir = if (n - i) % 2 == 1 { out } else { inp };
        let r = Request::encode(VIRTIO_GPIO_MSG_SET_DIRECTION, 0, dir);
        fe.submit(0, &[Buf::Out(&r), Buf::In(2)], true).unwrap();
    }
}

/// Defect 2: once the ring is stopped or disabled or the connection is gone, no request may
/// change the WP line. Trials with the batch of toggles in flight when the guest goes away:
/// the state file (what the EEPROM backend reads) must come to show the pull, undriven, and
/// still show exactly that 30 ms later (no publish after the release). The three ways of
/// going away run side by side, each against its own backend, so each also runs under the
/// load of the other two.
#[test]
fn wp_is_released_whatever_the_order_of_events() {
    let trials = wp_trials();
    let failures: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = [GoAway::Close, GoAway::CloseThenKick, GoAway::DisableRing]
            .into_iter()
            .map(|how| s.spawn(move || wp_trials_going_away(how, trials)))
            .collect();
        runs.into_iter()
            .filter_map(|r| r.join().unwrap().err())
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `trials` WP race trials going away `how`; the backend log's tail if any drove the line
/// after its release.
fn wp_trials_going_away(how: GoAway, trials: usize) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let wp = dir.path().join("wp.state");
    let wp_arg = wp.display().to_string();
    let g = start("wp,a,b", &["--wp-line", "wp", "--wp-state", &wp_arg]);
    // Each way its own delays: xorshift, 0..3000 us after the kick.
    let mut rng = 0x2545_f491_4f6c_dd1du64 ^ (how as u64);
    let mut landed = 0;
    let mut mid_batch = 0;
    let mut slowest = Duration::ZERO;
    let marker = match how {
        GoAway::DisableRing => "ring disabled",
        GoAway::Close | GoAway::CloseThenKick => "connection closed",
    };
    for trial in 0..trials {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_micros(rng % 3000);
        let mut fe = g.connect(opts(1024, 256), T);
        let before = count(&g.log(), marker);
        queue_wp_batch(&mut fe, 999);
        match how {
            GoAway::Close | GoAway::DisableRing => {
                fe.kick(0).unwrap();
                std::thread::sleep(delay);
            }
            GoAway::CloseThenKick => {}
        }
        match how {
            GoAway::Close => fe.hang_up().unwrap(),
            GoAway::CloseThenKick => {
                fe.hang_up().unwrap();
                std::thread::sleep(delay);
                fe.kick(0).unwrap();
            }
            GoAway::DisableRing => fe.set_vring_enable(0, false).unwrap(),
        }
        // The device logs the lifecycle event once it has closed the gate and released
        // the line; from then on nothing may drive the line (the sequence would move).
        let t0 = Instant::now();
        let seen = wait_until(Duration::from_secs(5), || {
            (count(&g.log(), marker) > before).then_some(())
        });
        slowest = slowest.max(t0.elapsed());
        assert!(seen.is_some(), "{how:?}: the device never saw the guest go");
        let reader = common::wp::WpReader::open(&wp).unwrap();
        let released = reader.read().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let after = reader.read().unwrap();
        let mut served = 0;
        while let Ok(Some(_)) = fe.poll_used(0) {
            served += 1;
        }
        if served > 0 && served < 1000 {
            mid_batch += 1;
        }
        if !released.level || released.driven || after != released {
            landed += 1;
            eprintln!("{how:?} trial {trial}: WP released as {released:?}, then {after:?}");
        }
        fe.disconnect();
    }
    eprintln!(
        "{how:?}: {landed} of {trials} trials drove the WP line after its release \
         ({mid_batch} went away mid-batch; release logged within {slowest:?})"
    );
    if landed == 0 {
        Ok(())
    } else {
        Err(format!(
            "{how:?}: {landed} of {trials} trials drove the WP line after its release\n{}",
            tail(&g.log())
        ))
    }
}

/// Connections for the descriptor-leak test (VGN_CONNECTIONS overrides).
fn connections() -> usize {
    env_usize("VGN_CONNECTIONS", 300)
}

/// Defect 3: every connection leaked one eventfd (vhost-user-backend 0.24's exit event).
#[test]
fn connections_do_not_leak_descriptors() {
    let g = start("4", &[]);
    let pid = g.pid();
    let mut fe = g.connect(opts(64, 256), T);
    fe.request(
        0,
        &[
            Buf::Out(&Request::encode(VIRTIO_GPIO_MSG_GET_VALUE, 0, 0)),
            Buf::In(2),
        ],
        T,
    )
    .unwrap();
    fe.disconnect();
    // Let the first connection end before counting.
    std::thread::sleep(Duration::from_millis(100));
    let before = fd_count(pid);
    let n = connections();
    for _ in 0..n {
        g.connect(opts(64, 256), T).disconnect();
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = fd_count(pid);
    eprintln!("descriptors: {before} before, {after} after {n} connections");
    assert!(
        after <= before + 2,
        "{before} -> {after} after {n} connections"
    );
}

/// Defect 3 as it was met: under RLIMIT_NOFILE=128 the ~110th connection hung at
/// SET_VRING_KICK. 250 connections one after another all complete.
#[test]
fn many_connections_under_a_low_descriptor_limit() {
    let g = Server::start_under(
        "ulimit -n 128",
        BIN,
        "info",
        "gpio.sock",
        &["--lines", "4"],
        T,
    );
    for i in 0..250 {
        match TestFrontend::connect(g.socket(), opts(64, 256), T) {
            Ok(fe) => fe.disconnect(),
            Err(err) => panic!("connection {i}: {err}\n{}", g.log()),
        }
    }
}

/// Defect 3, the other half: when descriptors run out the frontend is refused (its
/// connection closed) and the error logged, instead of a silent hang.
#[test]
fn out_of_descriptors_refuses_the_connection() {
    let g = Server::start_under(
        "ulimit -n 40",
        BIN,
        "info",
        "gpio.sock",
        &["--lines", "4"],
        T,
    );
    let t0 = Instant::now();
    let err = TestFrontend::connect(g.socket(), opts(64, 256), T).unwrap_err();
    let took = t0.elapsed();
    eprintln!("refused in {took:?}: {err}");
    assert!(
        !matches!(err, test_kit::frontend::FrontendError::NoReply(..)),
        "hung: {err}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    let logged = wait_until(T, || g.log().contains("file descriptors").then_some(()));
    assert!(logged.is_some(), "{}", g.log());
}

/// Defect 6: a second instance on a live socket (or control socket) is refused and the
/// first one keeps serving; a stale socket is replaced.
#[test]
fn a_second_instance_is_refused() {
    let mut g = start("4", &["--control-socket", "{dir}/CTL"]);
    let sock = g.path("gpio.sock");
    assert!(wait_until(T, || g.path("CTL").exists().then_some(())).is_some());
    // Bounded: a second instance that takes over never exits by itself.
    let second = |args: &[&std::ffi::OsStr]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args).args(["--lines", "2"]);
        run_bounded(cmd, Duration::from_secs(5)).unwrap()
    };
    let other = g.path("other.sock");
    let ctl = g.path("CTL");
    for args in [
        vec![std::ffi::OsStr::new("--socket-path"), sock.as_os_str()],
        vec![
            std::ffi::OsStr::new("--socket-path"),
            other.as_os_str(),
            std::ffi::OsStr::new("--control-socket"),
            ctl.as_os_str(),
        ],
    ] {
        let (status, msg) = second(&args);
        assert!(
            status.is_some(),
            "{args:?}: the second instance took over\n{msg}"
        );
        assert!(status.is_some_and(|s| !s.success()), "{args:?}: {msg}");
        assert!(msg.contains("in use by a live backend"), "{args:?}: {msg}");
    }
    // The first one still serves.
    let mut fe = g.connect(opts(64, 256), T);
    fe.request(
        0,
        &[
            Buf::Out(&Request::encode(VIRTIO_GPIO_MSG_GET_VALUE, 0, 0)),
            Buf::In(2),
        ],
        T,
    )
    .unwrap();
    // --control-socket equal to --socket-path.
    let out = Command::new(BIN)
        .arg("--socket-path")
        .arg(&other)
        .arg("--control-socket")
        .arg(&other)
        .args(["--lines", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("also the vhost-user socket"));
    // A stale socket (its backend killed) is replaced.
    drop(fe);
    g.kill9().unwrap();
    assert!(sock.exists());
    let mut cmd = Command::new(BIN);
    cmd.arg("--socket-path").arg(&sock).args(["--lines", "4"]);
    let _g2 = ChildGuard::spawn(cmd).unwrap();
    let mut fe = TestFrontend::connect(&sock, opts(64, 256), T).unwrap();
    fe.request(
        0,
        &[
            Buf::Out(&Request::encode(VIRTIO_GPIO_MSG_GET_VALUE, 0, 0)),
            Buf::In(2),
        ],
        T,
    )
    .unwrap();
}

/// Defect 7: under umask 000 the sockets were created 0777.
#[test]
fn sockets_are_owner_only_whatever_the_umask() {
    for (extra, want) in [(&[][..], 0o600), (&["--socket-mode", "0660"][..], 0o660)] {
        let args = [
            &["--control-socket", "{dir}/ctl.sock", "--lines", "2"],
            extra,
        ]
        .concat();
        let g = Server::start_under("umask 000", BIN, "info", "gpio.sock", &args, T);
        let (sock, ctl) = (g.socket(), g.path("ctl.sock"));
        assert!(wait_until(T, || (sock.exists() && ctl.exists()).then_some(())).is_some());
        assert_eq!(file_mode(sock), want, "{extra:?}");
        assert_eq!(file_mode(&ctl), want, "{extra:?}");
    }
}

/// SIGTERM with the WP line driven low and requests in flight: a quick exit 0, the line
/// released, the sockets gone.
#[test]
fn sigterm_is_a_quick_clean_exit() {
    let dir = tempfile::tempdir().unwrap();
    let wp = dir.path().join("wp.state");
    let wp_arg = wp.display().to_string();
    let mut g = start(
        "wp,a",
        &[
            "--wp-line",
            "wp",
            "--wp-state",
            &wp_arg,
            "--control-socket",
            "{dir}/CTL",
        ],
    );
    let mut fe = g.connect(opts(1024, 256), T);
    let out = u32::from(VIRTIO_GPIO_DIRECTION_OUT);
    for (t, v) in [
        (VIRTIO_GPIO_MSG_SET_VALUE, 0),
        (VIRTIO_GPIO_MSG_SET_DIRECTION, out),
    ] {
        let c = fe
            .request(0, &[Buf::Out(&Request::encode(t, 0, v)), Buf::In(2)], T)
            .unwrap();
        assert_eq!(c.ins[0][0], VIRTIO_GPIO_STATUS_OK);
    }
    let reader = common::wp::WpReader::open(&wp).unwrap();
    assert!(!reader.read().unwrap().level, "driven low");
    queue_wp_batch(&mut fe, 999);
    fe.kick(0).unwrap();
    let t0 = Instant::now();
    let status = g.terminate(T).unwrap();
    let took = t0.elapsed();
    eprintln!("exit on SIGTERM with requests in flight: {status:?} after {took:?}");
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", g.log());
    assert!(took < Duration::from_secs(2), "{took:?}");
    let s = reader.read().unwrap();
    assert!(s.level && !s.driven && !s.writer_alive, "{s:?}");
    assert!(!g.path("gpio.sock").exists());
    assert!(!g.path("CTL").exists());
}

/// QEMU's backend program conventions: --print-capabilities.
#[test]
fn prints_its_capabilities() {
    let out = Command::new(BIN)
        .arg("--print-capabilities")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"type": "gpio", "features": []}));
}

/// Socket activation as systemd does it, with the shipped unit files: the .socket's
/// ListenStream bound by the "manager", the .service's ExecStart run with it as fd 3.
#[test]
fn socket_activation_with_the_shipped_units() {
    let dir = tempfile::tempdir().unwrap();
    let unit =
        test_kit::testutil::SystemdUnit::for_activation("vhost-gpio", Path::new(BIN), dir.path());
    std::fs::create_dir_all(unit.listen.parent().unwrap()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&unit.listen).unwrap();
    let mut cmd = socket_activated(&unit.program, &listener);
    cmd.env("RUST_LOG", "info").args(&unit.args);
    let mut child = ChildGuard::spawn(cmd).unwrap();
    drop(listener);
    let mut fe = TestFrontend::connect(&unit.listen, opts(64, 256), T)
        .unwrap_or_else(|e| panic!("{e}\n{}", child.log()));
    let c = fe
        .request(
            0,
            &[
                Buf::Out(&Request::encode(VIRTIO_GPIO_MSG_GET_VALUE, 0, 0)),
                Buf::In(2),
            ],
            T,
        )
        .unwrap();
    assert_eq!(c.ins[0][0], VIRTIO_GPIO_STATUS_OK);
    fe.disconnect();
    // A stop (SIGTERM, systemd's default) is a clean exit; the socket belongs to systemd.
    let status = child.terminate(T).unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", child.log());
    assert!(unit.listen.exists());
}
