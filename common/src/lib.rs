// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The runtime shared by the `vhost-gpio` and `vhost-i2c-eeprom` backends (their test kit
//! is the `test-kit` crate).
//!
//! - [`line`]: the pull of a simulated line.
//! - [`paths`]: how per-device paths are named with several sockets.
//! - [`wp`]: the write-protect line state file that vhost-gpio publishes and the EEPROM
//!   backend obeys.
//! - [`chain`]: the single-pass scan of a descriptor chain.
//! - [`daemon`]: the daemon shape: socket binding, the connection loop, error reports.
//! - [`vq`]: the queue loop and the bounded descriptor-chain walk both backends use.

pub mod chain;
pub mod daemon;
pub mod line;
pub mod paths;
pub mod vq;
pub mod wp;
