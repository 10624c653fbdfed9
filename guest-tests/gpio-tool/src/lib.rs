// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The parts of `gpio-tool` that need no GPIO chip: argument parsing and the
//! record format ([`spec`]), and the benchmark loops' pure pieces ([`bench`]).
//! The host harness uses [`bench::fnv64`] to check what the guest wrote, so
//! both sides share one definition of the checksum.

pub mod bench;
pub mod spec;
