// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The parts of `vhost-bench` that its second program, `eventfd-floor`, shares: latency
//! statistics and the eventfd round-trip floor.

pub mod floor;
pub mod stats;
