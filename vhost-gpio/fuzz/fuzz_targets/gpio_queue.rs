// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Arbitrary descriptor chains through vhost-gpio's queue handler, with real guest memory
//! and virtio-queue's mock descriptor table (as the crate's own backend tests use).
//!
//! The fuzzer chooses the descriptor tables of both queues (addresses inside the data area,
//! anywhere in or far outside guest memory, any lengths, any NEXT/WRITE/INDIRECT flags, any
//! `next`, so loops, dangling links and indirect tables made of garbage), the available
//! rings, the data the descriptors point at, the negotiated features, and the order of
//! queue events. Invariants: nothing panics, `handle_event` never fails (an error would
//! stop the worker thread), and every requestq chain made available is returned.

#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use common::line::Pull;
use libfuzzer_sys::fuzz_target;
use vhost_gpio::device::Device;
use vhost_gpio::model::LineSpec;
use vhost_gpio::vhu::{GpioVring, VhostUserGpioBackend};
use vhost_user_backend::{VhostUserBackendMut, VringT};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

const QSIZE: u16 = 16;
const Q_BASE: [u64; 2] = [0x0, 0x4000];
const DATA: u64 = 0x10_0000;
const DATA_LEN: u64 = 0x2000;
const MEM_SIZE: usize = 0x20_0000;
/// Avail and used rings, relative to the queue's descriptor table. Not the mock's own
/// layout: virtio-queue 0.18's `MockSplitQueue::create` puts the used ring 16 bytes after
/// the start of the avail ring's entries (it adds the entry count, not the byte size), so
/// with more than 8 entries available the two rings overlap.
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;

#[derive(Arbitrary, Debug)]
struct FDesc {
    /// 0..=2 an offset in the data area; 3 an address anywhere (in or out of memory).
    kind: u8,
    addr: u32,
    len: u32,
    flags: u8,
    next: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    irq: bool,
    event_idx: bool,
    data: Vec<u8>,
    requestq: Vec<FDesc>,
    eventq: Vec<FDesc>,
    requestq_heads: Vec<u8>,
    eventq_heads: Vec<u8>,
    events: Vec<bool>,
}

fn desc(d: &FDesc) -> RawDescriptor {
    let addr = if d.kind % 4 == 3 {
        // Anywhere but the rings: a guest that scribbles over its own rings breaks the
        // ring, not the device, and the invariant below would not hold.
        let a = u64::from(d.addr) << (d.kind >> 4);
        if a < 0x8000 {
            a + 0x8000
        } else {
            a
        }
    } else {
        DATA + u64::from(d.addr) % DATA_LEN
    };
    // Mostly short lengths, sometimes anything.
    let len = if d.flags & 0x80 != 0 {
        d.len
    } else {
        d.len % 300
    };
    RawDescriptor::from(Descriptor::new(
        addr,
        len,
        u16::from(d.flags & 0x7),
        u16::from(d.next) % (QSIZE + 2),
    ))
}

fuzz_target!(|input: Input| {
    let mmap = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let data_len = input.data.len().min(usize::try_from(DATA_LEN).unwrap());
    mmap.write_slice(&input.data[..data_len], GuestAddress(DATA))
        .unwrap();
    let queues: Vec<MockSplitQueue<'_, GuestMemoryMmap>> = Q_BASE
        .iter()
        .map(|&base| MockSplitQueue::create(&mmap, GuestAddress(base), QSIZE))
        .collect();
    let mut heads_total = [0u16; 2];
    for (q, (descs, heads)) in [
        (&input.requestq, &input.requestq_heads),
        (&input.eventq, &input.eventq_heads),
    ]
    .into_iter()
    .enumerate()
    {
        let vq = &queues[q];
        for (i, d) in descs.iter().take(usize::from(QSIZE)).enumerate() {
            vq.desc_table()
                .store(u16::try_from(i).unwrap(), desc(d))
                .unwrap();
        }
        let n = heads.len().min(usize::from(QSIZE));
        let avail = Q_BASE[q] + AVAIL;
        for (i, h) in heads.iter().take(n).enumerate() {
            let at = avail + 4 + 2 * u64::try_from(i).unwrap();
            mmap.write_obj(u16::from(*h) % QSIZE, GuestAddress(at))
                .unwrap();
        }
        let n = u16::try_from(n).unwrap();
        mmap.write_obj(n, GuestAddress(avail + 2)).unwrap();
        heads_total[q] = n;
    }

    let mem = GuestMemoryAtomic::new(mmap.clone());
    let lines: Vec<LineSpec> = [("a", Pull::Down), ("b", Pull::Up), ("", Pull::None)]
        .iter()
        .map(|(n, pull)| LineSpec {
            name: (*n).into(),
            pull: *pull,
        })
        .collect();
    let device = Arc::new(Device::new("fuzz", &lines, None).unwrap());
    let mut backend = VhostUserGpioBackend::new(device, None);
    backend.update_memory(mem.clone()).unwrap();
    let mut features = (1u64 << 32) | (1 << 28) | (1 << 29);
    if input.irq {
        features |= 1;
    }
    backend.acked_features(features);
    backend.set_event_idx(input.event_idx);
    let vrings: Vec<GpioVring> = queues
        .iter()
        .map(|vq| {
            let v = GpioVring::new(mem.clone(), QSIZE).unwrap();
            v.set_queue_size(QSIZE);
            let base = vq.desc_table_addr().0;
            v.set_queue_info(base, base + AVAIL, base + USED).unwrap();
            v.set_queue_ready(true);
            v.set_enabled(true);
            v
        })
        .collect();

    for &eventq_first in input.events.iter().take(4) {
        let q = u16::from(eventq_first);
        backend
            .handle_event(q, EventSet::IN, &vrings, 0)
            .expect("handle_event must never fail");
    }
    backend
        .handle_event(0, EventSet::IN, &vrings, 0)
        .expect("handle_event must never fail");

    let used_idx = |q: usize| -> u16 { mmap.read_obj(GuestAddress(Q_BASE[q] + USED + 2)).unwrap() };
    let used0 = used_idx(0);
    assert_eq!(
        used0, heads_total[0],
        "every requestq chain must be returned"
    );
    let used1 = used_idx(1);
    assert!(
        used1 <= heads_total[1],
        "more eventq buffers used than made available"
    );
});
