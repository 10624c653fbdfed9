// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Host side of the guest tests: find the built kernel variants, launch
//! QEMU on them, follow the serial console for the scenario runner's
//! markers and parse its KTAP report.
//!
//! - [`variants`]: the kernel cache written by `scripts/build-guest`.
//! - [`qemu`]: QEMU command line and process lifetime.
//! - [`console`]: following the serial console file, `VGN-MARK:` markers.
//! - [`ktap`]: parsing the runner's KTAP output.
//! - [`classify`]: kernel reports and gpiolib lines on the console.
//! - [`scenario`]: scenario files (`guest-tests/scenarios/*.toml`), the guest's step list,
//!   and the interpreter that answers the guest's marks and collects results.
//! - [`observe`]: what a run observed, one type for progress, report and expectation.
//! - [`shard`]: `--shard K/N`, merging shards' reports, and the exit status.
//! - [`symbolize`]: report frames resolved to file:line with the variant's objects.
//! - [`html`]: `report.html`, the matrix as one self-contained page.
//! - [`kcidb`]: the matrix as a KCIDB document (checkouts, builds, tests, issues).
//! - [`expect`]: the expected outcomes (`expected.toml`) and the comparison.
//! - [`qmp`]: hot-unplug and replug through QMP.
//! - [`run`]: one run in stages (run dir, backends, guest, follow the console, teardown).
//! - [`reproduce`]: the matrix of kernel variants and scenarios, judged.
//! - [`report`]: JSON, JUnit XML and the table.
//! - [`timing`]: the runs' order (longest first) and where the wall time went.
//! - [`bench`]: guest-side benchmarks (GPIO round trips, nvmem throughput).
//! - [`boot`]: the boot check.

pub mod bench;
pub mod boot;
pub mod ci;
pub mod classify;
pub mod console;
pub mod expect;
pub mod html;
pub mod kcidb;
pub mod ktap;
pub mod markup;
pub mod observe;
pub mod qemu;
pub mod qmp;
pub mod report;
pub mod reproduce;
pub mod run;
pub mod scenario;
pub mod shard;
pub mod symbolize;
pub mod timing;
pub mod variants;

/// An error and its causes, `: `-separated, each printed once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}
