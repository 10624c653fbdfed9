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
//! - [`shard`]: `--shard K/N`, merging shards' reports, and the exit status.
//! - [`symbolize`]: report frames resolved to file:line with the variant's objects.
//! - [`html`]: `report.html`, the matrix as one self-contained page.
//! - [`kcidb`]: the matrix as a KCIDB document (checkouts, builds, tests, issues).
//! - [`expect`]: the expected outcomes (`expected.toml`) and the comparison.
//! - [`qmp`]: hot-unplug and replug through QMP.
//! - [`reproduce`]: one run end to end (backends, QEMU, markers, judgement).
//! - [`report`]: JSON, JUnit XML and the table.
//! - [`bench`]: guest-side benchmarks (GPIO round trips, nvmem throughput).

pub mod bench;
pub mod classify;
pub mod console;
pub mod expect;
pub mod html;
pub mod kcidb;
pub mod ktap;
pub mod qemu;
pub mod qmp;
pub mod report;
pub mod reproduce;
pub mod shard;
pub mod symbolize;
pub mod variants;
