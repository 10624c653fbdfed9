// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vhost-gpio: a virtio-gpio vhost-user backend with simulated lines.
//!
//! - [`protocol`]: the virtio-gpio wire format and spec constants;
//! - [`model`]: the pure line state machine (directions, values, pulls,
//!   interrupts with the spec's masking and latching rules);
//! - [`config`]: command-line values validated into a configuration;
//! - [`device`]: one device as shared by the vhost-user worker, the control
//!   socket and the connection loop (WP publishing lives here);
//! - [`vhu`]: the thin vhost-user backend;
//! - [`control`]: the control socket server and client;
//! - [`serve`]: the device's side of the shared connection loop.

pub mod config;
pub mod control;
pub mod device;
pub mod model;
pub mod protocol;
pub mod serve;
pub mod vhu;
