// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The virtio-i2c request parser (one descriptor chain against real guest memory) and the
//! FAIL_NEXT group tracker, fed arbitrary chains in arbitrary order.
//!
//! Invariants: nothing panics; an accepted request's read segments and status byte lie in
//! guest memory and add up to its length; a rejected chain's status slot, when given, lies
//! in guest memory; once a request of a group fails, no later request of that group
//! executes, and the next group starts afresh.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vhost_i2c_eeprom::protocol::{parse, Groups, Transfer};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

const MEM: u64 = 0x1_0000;

#[derive(Arbitrary, Debug)]
struct FDesc {
    /// Bit 0: device-writable. Bits 1-2: 0..=2 inside memory, 3 anywhere.
    kind: u8,
    addr: u32,
    len: u16,
}

#[derive(Arbitrary, Debug)]
struct Chain {
    descs: Vec<FDesc>,
    /// Outcome of the request on the bus when it executes.
    bus_ok: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    data: Vec<u8>,
    chains: Vec<Chain>,
}

fn desc(d: &FDesc) -> Descriptor {
    let write = d.kind & 1 != 0;
    let addr = if (d.kind >> 1) & 3 == 3 {
        u64::from(d.addr) << 8
    } else {
        u64::from(d.addr) % MEM
    };
    let flags = if write { 2 } else { 0 };
    Descriptor::new(addr, u32::from(d.len), flags, 0)
}

fuzz_target!(|input: Input| {
    let mem =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), usize::try_from(MEM).unwrap())])
            .unwrap();
    let n = input.data.len().min(usize::try_from(MEM).unwrap());
    mem.write_slice(&input.data[..n], GuestAddress(0)).unwrap();
    let mut groups = Groups::default();
    let mut group_failed = false;
    for chain in input.chains.iter().take(64) {
        let descs: Vec<Descriptor> = chain.descs.iter().take(16).map(desc).collect();
        match parse(&mem, &descs) {
            Ok(req) => {
                assert!(mem.check_range(req.status, 1, Permissions::Write));
                if let Transfer::Read { segments, len } = &req.transfer {
                    let sum: u64 = segments.iter().map(|s| u64::from(s.len)).sum();
                    assert_eq!(sum, u64::from(*len));
                    for s in segments {
                        assert!(mem.check_range(
                            s.addr,
                            usize::try_from(s.len).unwrap(),
                            Permissions::Write
                        ));
                    }
                    assert_eq!(req.used_len_ok(), len + 1);
                } else {
                    assert_eq!(req.used_len_ok(), 1);
                }
                assert!(req.addr < 0x8000);
                let plan = groups.plan(req.fail_next);
                assert_eq!(plan.execute, !group_failed, "a failed group kept executing");
                assert_eq!(plan.ends_group, !req.fail_next);
                let ok = plan.execute && chain.bus_ok;
                groups.record(plan, ok);
                group_failed = if plan.ends_group {
                    false
                } else {
                    group_failed || !ok
                };
                assert_eq!(groups.failed(), group_failed);
            }
            Err(rejected) => {
                if let Some(status) = rejected.status {
                    assert!(mem.check_range(status, 1, Permissions::Write));
                }
                let _ = rejected.error.to_string();
            }
        }
    }
    groups.drained();
    assert!(!groups.failed());
});
