// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Arbitrary descriptor chains through vhost-i2c-eeprom's queue handler, with real guest
//! memory, real image files and virtio-queue's mock descriptor table (as `gpio_queue`).
//!
//! The fuzzer chooses the requestq's descriptor table (addresses inside the data area,
//! anywhere in or far outside guest memory, any lengths, any NEXT/WRITE/INDIRECT flags, any
//! `next`, so loops, dangling links and indirect tables made of garbage), the available
//! ring, the data the descriptors point at (with a plausible virtio-i2c out header written
//! over the first bytes of many readable descriptors, so that transfers reach the EEPROMs),
//! the EEPROMs on the bus (one or two, part and page size), the negotiated features
//! (ZERO_LENGTH_REQUEST, EVENT_IDX, INDIRECT_DESC), and a few queue events and resets
//! before the final kick.
//!
//! Invariants: nothing panics; `handle_event` never fails (an error would stop the worker
//! thread); every chain made available is returned in the used ring exactly once; no used
//! length exceeds the device-writable bytes of its chain. The ring invariants are not
//! checked when the guest lets the device write over its own rings (a writable descriptor
//! inside them) or when a chain's descriptors changed while the batch was served (an
//! earlier chain's data landed in a later chain's indirect table): then the guest broke
//! its ring, not the device.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vhost_i2c_eeprom::model::{At24, At24Config, Bus, Variant};
use vhost_i2c_eeprom::protocol::{VirtioI2cOutHdr, VIRTIO_I2C_F_ZERO_LENGTH_REQUEST};
use vhost_i2c_eeprom::storage::Image;
use vhost_i2c_eeprom::vhu::{VhostUserI2cBackend, WpSource};
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap, Le16, Le32};
use vmm_sys_util::epoll::EventSet;

const QSIZE: u16 = 16;
const Q_BASE: u64 = 0x0;
const DATA: u64 = 0x10_0000;
const DATA_LEN: u64 = 0x2000;
const MEM_SIZE: usize = 0x20_0000;
/// Avail and used rings, relative to the descriptor table. Not the mock's own layout:
/// virtio-queue 0.18's `MockSplitQueue::create` puts the used ring 16 bytes after the start
/// of the avail ring's entries, so with more than 8 entries available the rings overlap.
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
/// Descriptor table, avail and used rings all lie below this address.
const RINGS_END: u64 = 0x3000;

/// First EEPROM (at 0x50) and, optionally, second (at 0x58): parts spanning 1, 2 or 8
/// addresses, with 1- and 2-byte word addresses.
const DEV0: [Variant; 5] = [
    Variant::C01,
    Variant::C02,
    Variant::C04,
    Variant::C16,
    Variant::C32,
];
const DEV1: [Variant; 3] = [Variant::C02, Variant::C64, Variant::C1024];
/// Targets of the generated headers: the devices, other blocks of them (present or not
/// depending on the parts), and an address nothing answers on.
const TARGETS: [u16; 8] = [0x50, 0x50, 0x51, 0x53, 0x57, 0x58, 0x59, 0x08];

#[derive(Arbitrary, Debug)]
struct FDesc {
    /// 0..=2 an offset in the data area; 3 an address anywhere (in or out of memory).
    kind: u8,
    addr: u32,
    len: u32,
    /// Bits 0-2: NEXT, WRITE, INDIRECT. Bits 3-4: length class. Bit 7: any length.
    flags: u8,
    /// Bit 7 clear: one of the filled entries, set: any index.
    next: u8,
    /// Bit 0 clear on a readable data-area descriptor: write a virtio-i2c out header at its
    /// address. Bits 1-3: target, bits 4-5: FAIL_NEXT/M_RD, bits 6-7 both set: a reserved
    /// flag too.
    hdr: u8,
}

#[derive(Arbitrary, Debug)]
struct Eeprom {
    variant: u8,
    /// 0: the part's default page size, else a power of two.
    page: u8,
}

#[derive(Arbitrary, Debug)]
struct Input {
    // The chains first: short inputs then still make some.
    descs: Vec<FDesc>,
    heads: Vec<u8>,
    zero_length: bool,
    event_idx: bool,
    indirect: bool,
    dev0: Eeprom,
    dev1: Option<Eeprom>,
    /// Before the final kick: 0 a kick, 1 an event for an unknown queue, 2 an event
    /// without EPOLLIN, 3 a device reset.
    events: Vec<u8>,
    data: Vec<u8>,
}

fn desc_addr(d: &FDesc) -> u64 {
    if d.kind % 4 == 3 {
        // Anywhere but the rings: a guest that scribbles over its own rings breaks the
        // ring, not the device.
        let a = u64::from(d.addr) << (d.kind >> 4);
        if a < 0x8000 {
            a + 0x8000
        } else {
            a
        }
    } else {
        DATA + u64::from(d.addr) % DATA_LEN
    }
}

/// Descriptor `d` of a table whose first `n` entries the fuzzer filled.
fn desc(d: &FDesc, n: u16) -> RawDescriptor {
    // Mostly short lengths, often the sizes a request is made of, sometimes anything.
    let len = match (d.flags & 0x80 != 0, (d.flags >> 3) & 3) {
        (true, _) => d.len,
        (false, 0) => d.len % 300,
        // An out header.
        (false, 1) => 8,
        // A status byte.
        (false, 2) => 1,
        // A word address and a few data bytes, or a short read buffer.
        (false, _) => 1 + d.len % 16,
    };
    RawDescriptor::from(Descriptor::new(
        desc_addr(d),
        len,
        u16::from(d.flags & 0x7),
        link(d.next, n),
    ))
}

/// Mostly one of the `n` filled entries, sometimes any index, out of the table too.
fn link(x: u8, n: u16) -> u16 {
    if x & 0x80 != 0 || n == 0 {
        u16::from(x & 0x7f) % (QSIZE + 2)
    } else {
        u16::from(x) % n
    }
}

/// The header `d.hdr` asks for, if any.
fn header(d: &FDesc) -> Option<VirtioI2cOutHdr> {
    // VRING_DESC_F_WRITE is 2.
    if d.hdr & 1 != 0 || d.kind % 4 == 3 || d.flags & 2 != 0 {
        return None;
    }
    let target = TARGETS[usize::from((d.hdr >> 1) & 7)];
    let mut flags = u32::from((d.hdr >> 4) & 3);
    if d.hdr & 0xc0 == 0xc0 {
        flags |= 1 << 2;
    }
    Some(VirtioI2cOutHdr {
        addr: Le16::from(target << 1),
        padding: Le16::from(0),
        flags: Le32::from(flags),
    })
}

/// A directory for the image files, one per fuzzing process.
fn image_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("i2c-queue-fuzz.{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn eeprom(slot: u16, e: &Eeprom) -> (At24, Image) {
    let (variant, addr) = if slot == 0 {
        (DEV0[usize::from(e.variant) % DEV0.len()], 0x50)
    } else {
        (DEV1[usize::from(e.variant) % DEV1.len()], 0x58)
    };
    let mut cfg = At24Config::new(variant, addr);
    if e.page != 0 {
        cfg.page = 1 << (e.page % 8);
    }
    cfg.twr = Duration::ZERO;
    let path = image_dir().join(format!("{slot}-{variant}.bin"));
    let (image, _) = Image::open(&path, u64::from(variant.size()), false).unwrap();
    // Erased, not the file's contents: the same input behaves the same in every run.
    (At24::erased(cfg).unwrap(), image)
}

/// One descriptor as the backend sees it: address, length, device-writable.
type Seen = (u64, u32, bool);

/// What the chain of each available head looks like to a fresh queue, read the way the
/// backend reads it (virtio-queue's iterator, which follows indirect tables).
fn chains(mem: &GuestMemoryMmap) -> Vec<Option<Vec<Seen>>> {
    let mut q = Queue::new(QSIZE).unwrap();
    q.set_size(QSIZE);
    q.try_set_desc_table_address(GuestAddress(Q_BASE)).unwrap();
    q.try_set_avail_ring_address(GuestAddress(Q_BASE + AVAIL))
        .unwrap();
    q.try_set_used_ring_address(GuestAddress(Q_BASE + USED))
        .unwrap();
    q.set_ready(true);
    let mut out = vec![None; usize::from(QSIZE)];
    for chain in q.iter(mem).unwrap() {
        let head = usize::from(chain.head_index());
        out[head] = Some(
            chain
                .map(|d| (d.addr().0, d.len(), d.is_write_only()))
                .collect(),
        );
    }
    out
}

fn writable_bytes(descs: &[Seen]) -> u64 {
    descs.iter().filter(|d| d.2).map(|d| u64::from(d.1)).sum()
}

fn writes_rings(descs: &[Seen]) -> bool {
    descs
        .iter()
        .any(|&(addr, len, write)| write && len > 0 && addr < RINGS_END)
}

fuzz_target!(|input: Input| {
    let mmap = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let data_len = input.data.len().min(usize::try_from(DATA_LEN).unwrap());
    mmap.write_slice(&input.data[..data_len], GuestAddress(DATA))
        .unwrap();
    let vq = MockSplitQueue::create(&mmap, GuestAddress(Q_BASE), QSIZE);
    let filled = u16::try_from(input.descs.len().min(usize::from(QSIZE))).unwrap();
    for (i, d) in input.descs.iter().take(usize::from(QSIZE)).enumerate() {
        vq.desc_table()
            .store(u16::try_from(i).unwrap(), desc(d, filled))
            .unwrap();
        if let Some(h) = header(d) {
            mmap.write_slice(h.as_slice(), GuestAddress(desc_addr(d)))
                .unwrap();
        }
    }
    let n = input.heads.len().min(usize::from(QSIZE));
    let mut heads: Vec<u16> = input.heads[..n]
        .iter()
        .map(|h| link(*h, filled) % QSIZE)
        .collect();
    for (i, h) in heads.iter().enumerate() {
        let at = Q_BASE + AVAIL + 4 + 2 * u64::try_from(i).unwrap();
        mmap.write_obj(*h, GuestAddress(at)).unwrap();
    }
    mmap.write_obj(u16::try_from(n).unwrap(), GuestAddress(Q_BASE + AVAIL + 2))
        .unwrap();
    let before = chains(&mmap);

    let mut devices = Vec::new();
    let mut images = Vec::new();
    for (slot, e) in [Some(&input.dev0), input.dev1.as_ref()]
        .into_iter()
        .enumerate()
    {
        if let Some(e) = e {
            let (dev, image) = eeprom(u16::try_from(slot).unwrap(), e);
            devices.push(dev);
            images.push(image);
        }
    }
    let bus = Bus::new(devices).unwrap();
    let mem = GuestMemoryAtomic::new(mmap.clone());
    let mut backend = VhostUserI2cBackend::new(bus, images, WpSource::NotWired);
    backend.update_memory(mem.clone()).unwrap();
    let mut features = (1u64 << 32) | (1 << 30);
    if input.zero_length {
        features |= 1 << VIRTIO_I2C_F_ZERO_LENGTH_REQUEST;
    }
    if input.indirect {
        features |= 1 << 28;
    }
    if input.event_idx {
        features |= 1 << 29;
    }
    backend.acked_features(features);
    backend.set_event_idx(input.event_idx);
    let vring = VringRwLock::new(mem.clone(), QSIZE).unwrap();
    vring.set_queue_size(QSIZE);
    vring
        .set_queue_info(Q_BASE, Q_BASE + AVAIL, Q_BASE + USED)
        .unwrap();
    vring.set_queue_event_idx(input.event_idx);
    vring.set_queue_ready(true);
    vring.set_enabled(true);
    let vrings = [vring];

    for e in input.events.iter().take(4) {
        let (q, evset) = match e % 4 {
            0 => (0, EventSet::IN),
            1 => (1, EventSet::IN),
            2 => (0, EventSet::OUT),
            _ => {
                backend.reset_device();
                continue;
            }
        };
        backend
            .handle_event(q, evset, &vrings, 0)
            .expect("handle_event must never fail");
    }
    backend
        .handle_event(0, EventSet::IN, &vrings, 0)
        .expect("handle_event must never fail");

    let after = chains(&mmap);
    if before != after || before.iter().flatten().any(|c| writes_rings(c)) {
        return;
    }
    let used_idx: u16 = mmap.read_obj(GuestAddress(Q_BASE + USED + 2)).unwrap();
    assert_eq!(
        usize::from(used_idx),
        n,
        "every available chain must be returned"
    );
    let mut used_ids = Vec::new();
    for i in 0..u64::from(used_idx) {
        let at = GuestAddress(Q_BASE + USED + 4 + 8 * i);
        let id: u32 = mmap.read_obj(at).unwrap();
        let len: u32 = mmap.read_obj(GuestAddress(at.0 + 4)).unwrap();
        let head = u16::try_from(id).unwrap_or(u16::MAX);
        assert!(head < QSIZE, "used id {id} out of range");
        let writable = before[usize::from(head)]
            .as_deref()
            .map_or(0, writable_bytes);
        assert!(
            u64::from(len) <= writable,
            "used length {len} of head {head} exceeds its {writable} writable bytes"
        );
        used_ids.push(head);
    }
    used_ids.sort_unstable();
    heads.sort_unstable();
    assert_eq!(used_ids, heads, "each chain must be returned exactly once");
});
