// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vhost-user virtio-i2c backend carrying emulated AT24 EEPROMs.
//!
//! - [`protocol`]: virtio-i2c wire format, request parser, FAIL_NEXT groups.
//! - [`model`]: the pure AT24 model and the I2C bus.
//! - [`storage`]: image files (create, lock, persist).
//! - [`vhu`]: the vhost-user backend.
//! - [`serve`]: the bus's side of the shared connection loop.
//! - [`config`]: command line and its validation.

pub mod config;
pub mod model;
pub mod protocol;
pub mod serve;
pub mod storage;
pub mod vhu;
