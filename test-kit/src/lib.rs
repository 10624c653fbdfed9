// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The test kit of the two backends (a dev-dependency: the backends do not link it).
//!
//! - [`frontend`]: a vhost-user frontend that plays QEMU and the guest driver, for
//!   integration tests and benchmarks.
//! - [`testutil`]: process guards, polling, socket activation and shell set-up for tests
//!   that start the real binaries.
//! - [`server`]: a backend binary under test, on a socket in its own temp dir, stopped when
//!   dropped.
//! - [`chains`]: descriptor-chain builders for unit tests over mock rings.
//! - [`docs`]: the man pages and shell completions generated from the command lines, and
//!   the check that the committed ones are current.

pub mod chains;
pub mod docs;
pub mod frontend;
pub mod server;
pub mod testutil;
