// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-bench --compare` and `eventfd-floor` against the real vhost-gpio binary: the runs
//! alternate A B round after round, the summary is built from them, the floor runs in the
//! same run, and the backends are stopped. No figure is asserted: this checks the tool.
//!
//! The comparison with rust-vmm's vhost-device-gpio is `peer_vhost_device_gpio`, ignored
//! unless asked for, since that backend is built outside this repository:
//! `VHOST_DEVICE_GPIO=/path/to/vhost-device-gpio cargo test -p vhost-bench -- --ignored`.

use std::path::Path;
use std::process::{Command, Output};

use common::testutil::cargo_bin;
use serde_json::Value;

fn vhost_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vhost-bench"))
        .args(["--seconds", "0.2", "--warmup-ms", "20"])
        .args(args)
        .output()
        .unwrap()
}

fn ok_json(out: &Output, json: &Path) -> Value {
    assert!(
        out.status.success(),
        "vhost-bench failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn ours() -> String {
    cargo_bin("vhost-gpio").display().to_string()
}

fn gone(pid: &Value) -> bool {
    !Path::new(&format!("/proc/{}", pid.as_u64().unwrap())).exists()
}

#[test]
fn compare_alternates_two_backends_and_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("c.json");
    let a = format!(
        "{} --socket-path {{socket}} --lines 4 --control-socket {{control}}",
        ours()
    );
    // B has no control socket: gpio-irq is skipped for both.
    let b = format!("{} --socket-path {{socket}} --lines 8", ours());
    let out = vhost_bench(&[
        "--rounds",
        "2",
        "--floor",
        "--floor-program",
        env!("CARGO_BIN_EXE_eventfd-floor"),
        "--condition",
        "test",
        "--labels",
        "four",
        "eight",
        "--json",
        json.to_str().unwrap(),
        "--compare",
        &a,
        &b,
        "gpio",
    ]);
    let r = ok_json(&out, &json);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| gpio-set-get |"), "{stdout}");
    assert!(stdout.contains("condition: test"), "{stdout}");
    assert!(stdout.contains("the floor's"), "{stdout}");
    assert_eq!(r["a"]["label"], "four");
    assert!(
        gone(&r["a"]["pid"]) && gone(&r["b"]["pid"]),
        "backends left running"
    );

    let runs = r["runs"].as_array().unwrap();
    let order: Vec<(u64, &str, &str)> = runs
        .iter()
        .map(|e| {
            (
                e["round"].as_u64().unwrap(),
                e["backend"].as_str().unwrap(),
                e["result"]["workload"].as_str().unwrap(),
            )
        })
        .collect();
    let mut want = Vec::new();
    for round in 1..=2 {
        for w in ["gpio-set-get", "gpio-set-get-deep"] {
            want.push((round, "A", w));
            want.push((round, "B", w));
        }
        want.push((round, "floor", "eventfd-floor"));
    }
    assert_eq!(order, want);
    for e in runs {
        let x = &e["result"];
        assert!(x["requests"].as_u64().unwrap() > 0, "{e}");
        assert_eq!(x["errors"].as_u64(), Some(0), "{e}");
        assert!(x["backend"]["cpu_seconds"].as_f64().unwrap() >= 0.0, "{e}");
        assert!(
            x["frontend_cpu_us_per_request"].as_f64().unwrap() >= 0.0,
            "{e}"
        );
    }
    assert!(r["skipped"][0].as_str().unwrap().starts_with("gpio-irq"));

    // The summary is the median of the runs.
    let summary = r["summary"].as_array().unwrap();
    assert_eq!(summary.len(), 2);
    for l in summary {
        let name = l["workload"].as_str().unwrap();
        for side in ["A", "B"] {
            let mut v: Vec<f64> = runs
                .iter()
                .filter(|e| e["backend"] == side && e["result"]["workload"] == name)
                .map(|e| e["result"]["requests_per_second"].as_f64().unwrap())
                .collect();
            v.sort_by(f64::total_cmp);
            let s = &l[side.to_lowercase().as_str()]["requests_per_second"];
            assert_eq!(s["min"].as_f64(), Some(v[0]), "{name} {side}");
            assert_eq!(s["max"].as_f64(), Some(v[1]), "{name} {side}");
            assert_eq!(
                s["median"].as_f64(),
                Some((v[0] + v[1]) / 2.0),
                "{name} {side}"
            );
        }
        let ratio = l["a_over_b_requests_per_second"].as_f64().unwrap();
        let want = l["a"]["requests_per_second"]["median"].as_f64().unwrap()
            / l["b"]["requests_per_second"]["median"].as_f64().unwrap();
        assert!((ratio - want).abs() < 1e-9, "{name}");
        // Only the depth-1 workload is set against the floor.
        let floor = &l["round_trip_over_floor"];
        if name == "gpio-set-get" {
            assert!(floor[0].as_f64().unwrap() > 0.0 && floor[1].as_f64().unwrap() > 0.0);
        } else {
            assert!(floor.is_null(), "{name}: {floor}");
        }
    }
    assert!(
        r["floor"]["requests_per_second"]["median"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

#[test]
fn compare_reports_a_backend_that_does_not_start() {
    let a = format!("{} --socket-path {{socket}} --lines 4", ours());
    let out = vhost_bench(&[
        "--compare",
        &a,
        "sh -c 'echo no such device >&2; exit 3' {socket}",
        "gpio",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("backend B"), "{err}");
    assert!(err.contains("exited before listening"), "{err}");
    assert!(err.contains("no such device"), "{err}");
    // A command without {socket} is refused before anything starts.
    let out = vhost_bench(&["--compare", &a, "true", "gpio"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("{socket}"));
}

#[test]
fn eventfd_floor_measures_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("f.json");
    let out = Command::new(env!("CARGO_BIN_EXE_eventfd-floor"))
        .args(["--seconds", "0.2", "--warmup-ms", "20", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let r = ok_json(&out, &json);
    let x = &r["runs"][0];
    assert_eq!(x["workload"], "eventfd-floor");
    assert!(x["requests"].as_u64().unwrap() > 0);
    let (p50, p99) = (x["p50_us"].as_f64().unwrap(), x["p99_us"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99, "{p50} {p99}");
    // The server half ran in its own process and used CPU there.
    assert!(x["backend"]["threads"].as_u64().unwrap() >= 1);
}

#[test]
#[ignore = "needs rust-vmm's vhost-device-gpio built with --features mock_gpio: set VHOST_DEVICE_GPIO"]
fn peer_vhost_device_gpio() {
    let peer = std::env::var("VHOST_DEVICE_GPIO")
        .expect("VHOST_DEVICE_GPIO: the path of vhost-device-gpio built with mock_gpio");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("p.json");
    let a = format!("{} --socket-path {{socket}} --lines 8", ours());
    let b = format!("{peer} --socket-path {{socket}} --socket-count 1 --device-list s8");
    let out = vhost_bench(&[
        "--rounds",
        "1",
        "--json",
        json.to_str().unwrap(),
        "--compare",
        &a,
        &b,
        "gpio",
    ]);
    let r = ok_json(&out, &json);
    assert_eq!(r["runs"].as_array().unwrap().len(), 4);
    for e in r["runs"].as_array().unwrap() {
        assert_eq!(e["result"]["errors"].as_u64(), Some(0), "{e}");
        assert!(e["result"]["requests"].as_u64().unwrap() > 0, "{e}");
    }
}
