// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Descriptor-chain builders for the backends' unit tests (which drive `handle_event` over
//! virtio-queue's `MockSplitQueue` rings): the descriptors of a chain, an indirect table,
//! and the used elements the device returned.

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use vm_memory::{Bytes, GuestAddress};

/// One buffer: (guest address, length, device-writable).
pub type Buffer = (u64, u32, bool);

fn flag(bits: u32) -> u16 {
    // The descriptor flags are the low bits.
    u16::try_from(bits).unwrap_or(0)
}

/// The descriptors of a chain of `bufs` at table indices `first`, `first + 1`, ...;
/// `link` = (buffer, index) makes that buffer name `index` as its next one (with NEXT),
/// for malformed chains: a loop, an index outside the ring.
pub fn descriptors(first: u16, bufs: &[Buffer], link: Option<(usize, u16)>) -> Vec<RawDescriptor> {
    bufs.iter()
        .enumerate()
        .map(|(i, &(addr, len, write))| {
            let idx = first.wrapping_add(u16::try_from(i).unwrap_or(u16::MAX));
            let last = i + 1 == bufs.len();
            let mut flags = if write { flag(VRING_DESC_F_WRITE) } else { 0 };
            let mut next = 0;
            if !last {
                flags |= flag(VRING_DESC_F_NEXT);
                next = idx.wrapping_add(1);
            }
            if let Some((_, to)) = link.filter(|(at, _)| *at == i) {
                flags |= flag(VRING_DESC_F_NEXT);
                next = to;
            }
            RawDescriptor::from(Descriptor::new(addr, len, flags, next))
        })
        .collect()
}

/// Writes `bufs` as an indirect table at `table` in `mem`; returns the ring descriptor
/// that points to it.
pub fn indirect<M: Bytes<GuestAddress>>(mem: &M, table: u64, bufs: &[Buffer]) -> RawDescriptor
where
    M::E: std::fmt::Debug,
{
    for (i, d) in descriptors(0, bufs, None).into_iter().enumerate() {
        let at = table + 16 * u64::try_from(i).unwrap_or(u64::MAX);
        mem.write_obj(d, GuestAddress(at))
            .expect("indirect table inside guest memory");
    }
    RawDescriptor::from(Descriptor::new(
        table,
        u32::try_from(16 * bufs.len()).unwrap_or(u32::MAX),
        flag(VRING_DESC_F_INDIRECT),
        0,
    ))
}

/// The used elements of the ring whose used ring is at `used_ring` (`size` entries) from
/// index `*seen` on, advancing `*seen`: (id, len).
pub fn used<M: Bytes<GuestAddress>>(
    mem: &M,
    used_ring: GuestAddress,
    size: u16,
    seen: &mut u16,
) -> Vec<(u32, u32)>
where
    M::E: std::fmt::Debug,
{
    let idx: u16 = mem
        .read_obj(GuestAddress(used_ring.0 + 2))
        .expect("used ring inside guest memory");
    let mut out = Vec::new();
    while *seen != idx {
        let at = used_ring.0 + 4 + 8 * u64::from(*seen % size);
        let id: u32 = mem.read_obj(GuestAddress(at)).expect("used element");
        let len: u32 = mem.read_obj(GuestAddress(at + 4)).expect("used element");
        out.push((id, len));
        *seen = seen.wrapping_add(1);
    }
    out
}
