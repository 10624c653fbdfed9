// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The QMP client against a real QEMU (paused, no guest): version, and a chardev added as a
//! client of a socket we listen on, then removed, which closes that connection. This is the
//! replug path of the reproduction without the device.

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::Duration;

use guest_tests::qmp::{QmpClient, QmpError};
use test_kit::testutil::ChildGuard;

#[test]
fn version_chardev_add_and_remove_against_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let qmp_sock = dir.path().join("qmp.sock");
    let backend_sock = dir.path().join("backend.sock");
    let listener = UnixListener::bind(&backend_sock).unwrap();

    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-S",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-machine",
        "none",
    ])
    .arg("-qmp")
    .arg(format!("unix:{},server=on,wait=off", qmp_sock.display()));
    let mut qemu = ChildGuard::spawn(cmd).expect("qemu-system-x86_64 (run scripts/setup-host)");

    let mut qmp = QmpClient::connect(&qmp_sock, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}; qemu said: {}", qemu.log()));
    let v = qmp.version().unwrap();
    let out = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("version {v}")),
        "QMP says {v}"
    );

    qmp.chardev_add_unix("chr0", &backend_sock).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Adding the same id again is refused with QEMU's own message.
    let err = qmp.chardev_add_unix("chr0", &backend_sock).unwrap_err();
    assert!(
        matches!(
            err,
            QmpError::Command {
                command: "chardev-add",
                ..
            }
        ),
        "{err}"
    );

    qmp.chardev_remove("chr0").unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        conn.read(&mut buf).unwrap(),
        0,
        "chardev-remove closes the connection"
    );
    assert!(qmp.chardev_remove("chr0").is_err());

    drop(qmp);
    qemu.terminate(Duration::from_secs(5)).unwrap();
}

#[test]
fn connecting_to_nothing_fails_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let err =
        QmpClient::connect(&dir.path().join("none.sock"), Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, QmpError::Connect { .. }), "{err}");
}

#[test]
fn a_dead_qemu_is_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let err = QmpClient::connect_while(
        &dir.path().join("none.sock"),
        Duration::from_secs(60),
        || false,
    )
    .unwrap_err();
    assert!(matches!(err, QmpError::Exited { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited for a dead QEMU"
    );
}
