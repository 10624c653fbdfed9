// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Pieces shared by the `vhost-gpio` and `vhost-i2c-eeprom` backends and their tests.
//!
//! - [`line`]: the pull of a simulated line.
//! - [`paths`]: how per-device paths are named with several sockets.
//! - [`wp`]: the write-protect line state file that vhost-gpio publishes and the EEPROM
//!   backend obeys.
//! - [`daemon`]: the daemon shape: socket binding, the connection loop, error reports.
//! - [`vq`]: the queue loop and the bounded descriptor-chain walk both backends use.
//! - [`frontend`]: a vhost-user frontend that plays QEMU and the guest driver, for
//!   integration tests and benchmarks.
//! - [`testutil`]: process guards and polling helpers for tests.

pub mod daemon;
pub mod frontend;
pub mod line;
pub mod paths;
pub mod testutil;
pub mod vq;
pub mod wp;
