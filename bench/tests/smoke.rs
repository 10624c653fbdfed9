// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Runs `vhost-bench` briefly against the real vhost-gpio and vhost-i2c-eeprom binaries and
//! checks that the JSON report is complete and consistent. No figure is asserted: this checks
//! the tool, not the speed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::testutil::{cargo_bin, wait_until, ChildGuard};
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

fn bench(args: &[&str], json: &Path) -> (Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vhost-bench"))
        .args(["--seconds", "0.3", "--warmup-ms", "50", "--json"])
        .arg(json)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vhost-bench {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("req/s"), "no table: {stdout}");
    let report = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    (report, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every run did work, without errors, with ordered percentiles and the backend's cost.
fn check_runs(report: &Value, workloads: &[&str], connections: u64) {
    let runs = report["runs"].as_array().unwrap();
    let names: Vec<&str> = runs
        .iter()
        .map(|r| r["workload"].as_str().unwrap())
        .collect();
    assert_eq!(names, workloads);
    for r in runs {
        let name = r["workload"].as_str().unwrap();
        let requests = r["requests"].as_u64().unwrap();
        assert!(requests > 0, "{name}: no requests");
        assert_eq!(r["errors"].as_u64(), Some(0), "{name}");
        assert_eq!(r["connections"].as_u64(), Some(connections), "{name}");
        assert!(r["chains"].as_u64().unwrap() >= requests, "{name}");
        let secs = r["seconds"].as_f64().unwrap();
        assert!(secs > 0.0, "{name}");
        let rps = r["requests_per_second"].as_f64().unwrap();
        let expected = requests as f64 / secs;
        assert!((rps - expected).abs() <= expected * 1e-6, "{name}: {rps}");
        let (p50, p99, max) = (
            r["p50_us"].as_f64().unwrap(),
            r["p99_us"].as_f64().unwrap(),
            r["max_us"].as_f64().unwrap(),
        );
        assert!(
            0.0 < p50 && p50 <= p99 && p99 <= max,
            "{name}: {p50} {p99} {max}"
        );
        let b = &r["backend"];
        assert!(b["cpu_seconds"].as_f64().unwrap() >= 0.0, "{name}");
        assert!(b["peak_rss_kib"].as_u64().unwrap() > 0, "{name}");
        assert!(b["threads"].as_u64().unwrap() >= 1, "{name}");
    }
}

#[test]
fn gpio_workloads_against_vhost_gpio() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("gpio.sock");
    let ctl = dir.path().join("gpio.ctl");
    let mut cmd = Command::new(cargo_bin("vhost-gpio"));
    cmd.arg("--socket-path")
        .arg(&sock)
        .arg("--control-socket")
        .arg(&ctl)
        .args(["--lines", "4"]);
    let g = ChildGuard::spawn(cmd).unwrap();
    assert!(wait_until(T, || ctl.exists().then_some(())).is_some());
    let pid = g.pid().to_string();
    let json = dir.path().join("gpio.json");
    let (report, stderr) = bench(
        &[
            "--pid",
            &pid,
            "gpio",
            "--socket-path",
            sock.to_str().unwrap(),
            "--control-socket",
            ctl.to_str().unwrap(),
        ],
        &json,
    );
    assert_eq!(report["device"], "gpio");
    assert_eq!(report["backend_pid"].as_u64(), Some(u64::from(g.pid())));
    check_runs(
        &report,
        &["gpio-set-get", "gpio-set-get-deep", "gpio-irq"],
        1,
    );
    assert_eq!(report["runs"][1]["depth"].as_u64(), Some(64));
    // The probe read the config, GET_NAMES (one name per line) and each GET_DIRECTION.
    let probe = stderr
        .lines()
        .find(|l| l.starts_with("gpio device: "))
        .unwrap_or_else(|| panic!("no probe line: {stderr}"));
    assert!(
        probe.starts_with("gpio device: 4 lines, names ["),
        "{probe}"
    );
    assert_eq!(probe.matches('"').count(), 8, "{probe}");
    assert!(probe.ends_with("directions [0, 0, 0, 0]"), "{probe}");
}

#[test]
fn i2c_workloads_against_vhost_i2c_eeprom_on_two_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("i2c.sock");
    let image = dir.path().join("e.bin");
    let mut cmd = Command::new(cargo_bin("vhost-i2c-eeprom"));
    cmd.arg("--socket-path")
        .arg(&sock)
        .args(["--socket-count", "2", "--eeprom"])
        .arg(format!(
            "model=24c32,addr=0x50,file={},twr-us=0",
            image.display()
        ));
    let g = ChildGuard::spawn(cmd).unwrap();
    let pid = g.pid().to_string();
    let json = dir.path().join("i2c.json");
    let (report, _) = bench(
        &[
            "--pid",
            &pid,
            "--connections",
            "2",
            "i2c",
            "--socket-path",
            sock.to_str().unwrap(),
        ],
        &json,
    );
    assert_eq!(report["device"], "i2c");
    check_runs(
        &report,
        &["i2c-random-read", "i2c-page-write", "i2c-seq-read"],
        2,
    );
    // The sequential read moved data, and the page writes reached both images.
    assert!(report["runs"][2]["bytes"].as_u64().unwrap() >= 128);
    for i in 0..2 {
        let mut p = image.as_os_str().to_owned();
        p.push(i.to_string());
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len(), 4096);
        assert!(data.iter().any(|&b| b != 0xff), "image {i} unchanged");
    }
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vhost-bench"))
        .args(["--seconds", "0.1", "i2c", "--socket-path"])
        .arg(dir.path().join("absent.sock"))
        .args(["--size", "2048"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size 2048"));
    let out = Command::new(env!("CARGO_BIN_EXE_vhost-bench"))
        .args(["--seconds", "0.1", "--connect-timeout-ms", "100", "gpio"])
        .arg("--socket-path")
        .arg(dir.path().join("absent.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("absent.sock"), "{err}");
}
