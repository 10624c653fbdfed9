// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The vhost-user glue: pops chains, parses them (`protocol`), runs them on the
//! bus (`model`), persists what a STOP wrote (`storage`) and completes them.
//! Every popped chain is completed, whatever happens to it.

use std::io;
use std::time::Instant;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::chain::{walk, ChainShapeError};
use common::daemon::ExitEvent;
use common::vq::{drain, Chain, QueueServer, Served, RING_FEATURES};
use log::{debug, error, info, warn};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VringRwLock};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestMemory, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};

use crate::model::{Bus, Op, WpPin};
use crate::protocol::{
    self, Groups, Transfer, VirtioI2cInHdr, IN_HDR_LEN, VIRTIO_I2C_F_ZERO_LENGTH_REQUEST,
    VIRTIO_I2C_MSG_ERR, VIRTIO_I2C_MSG_OK,
};
use crate::storage::Image;

/// Number of virtqueues (requestq).
pub const NUM_QUEUES: usize = 1;
/// Largest queue size offered.
pub const QUEUE_SIZE: usize = 1024;
/// Descriptors the backend keeps room for between chains (a request uses 2-4).
const KEPT_DESCRIPTORS: usize = 16;
/// Most descriptors a request chain may have. Linux sends 2 or 3 (header, buffer, status);
/// a buffer in guest pages that are not contiguous may take one descriptor per page, and a
/// 65535-byte buffer spans at most 17 pages.
pub const MAX_CHAIN_DESCRIPTORS: usize = 32;

/// Where the WP pin comes from.
#[derive(Debug)]
pub enum WpSource {
    /// Not wired: never asserted.
    NotWired,
    /// The shared line state file (vhost-gpio publishes it).
    Line(common::wp::WpReader),
}

impl WpPin for WpSource {
    fn asserted(&mut self) -> bool {
        match self {
            WpSource::NotWired => false,
            WpSource::Line(reader) => match reader.read() {
                Ok(sample) => {
                    debug!(
                        "WP sampled: level {} (driven {}, writer alive {}, seq {})",
                        sample.level, sample.driven, sample.writer_alive, sample.sequence
                    );
                    sample.level
                }
                Err(e) => {
                    // Fail safe: a line we cannot read protects the memory.
                    error!(
                        "reading WP state {}: {e}; treating WP as asserted",
                        reader.path().display()
                    );
                    true
                }
            },
        }
    }
}

/// The virtio-i2c backend of one bus.
#[derive(Debug)]
pub struct VhostUserI2cBackend {
    bus: Bus,
    images: Vec<Image>,
    wp: WpSource,
    groups: Groups,
    event_idx: bool,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    /// The descriptors of the chain being served (kept to reuse).
    descs: Vec<Descriptor>,
    /// The data of the read being served (kept to reuse).
    read_buf: Vec<u8>,
    /// The worker exit event of the current daemon.
    exit: ExitEvent,
    /// Set on SIGTERM: no more chains are served.
    stopping: Arc<AtomicBool>,
}

impl VhostUserI2cBackend {
    /// A backend for `bus`; `images[i]` persists device `i`.
    pub fn new(bus: Bus, images: Vec<Image>, wp: WpSource) -> Self {
        VhostUserI2cBackend {
            bus,
            images,
            wp,
            groups: Groups::default(),
            event_idx: false,
            mem: None,
            descs: Vec::new(),
            read_buf: Vec::new(),
            exit: ExitEvent::default(),
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set it to stop serving chains (the worker then ends its loop at once), before
    /// [`VhostUserI2cBackend::shut_down`].
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stopping.clone()
    }

    /// A clean exit: end any open transaction without a STOP (as a power-off does: no write
    /// cycle starts) and make every write cycle so far durable.
    pub fn shut_down(&mut self) {
        self.stopping.store(true, Ordering::Release);
        self.bus.abort();
        for image in &self.images {
            if let Err(e) = image.flush() {
                error!("{e}");
            }
        }
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The frontend went away: end any open transaction without a STOP, and let go of
    /// its guest memory (else the whole guest RAM stays mapped here after QEMU exits).
    pub fn disconnected(&mut self) {
        self.end_transaction();
        self.mem = None;
    }

    /// End any open transaction without a STOP (a reset, a frontend gone).
    fn end_transaction(&mut self) {
        self.bus.abort();
        self.groups.drained();
    }

    /// STOP, then persist what it wrote. False if persisting failed.
    fn stop(&mut self, now: Instant) -> bool {
        let commits = self.bus.stop(now, &mut self.wp);
        let mut ok = true;
        for c in commits {
            let Some(image) = self.images.get(c.device) else {
                error!("no image for device {}", c.device);
                ok = false;
                continue;
            };
            match image.persist(c.offset, &c.data) {
                Ok(()) => debug!(
                    "{}: {} bytes at {:#x} written",
                    image.path().display(),
                    c.data.len(),
                    c.offset
                ),
                Err(e) => {
                    error!("{e}: write cycle lost");
                    ok = false;
                }
            }
        }
        ok
    }

    /// A chain whose shape is wrong (too long, a loop): an error status if it has a
    /// device-writable byte, like any malformed request.
    fn reject<M: GuestMemory>(
        &mut self,
        mem: &M,
        descs: &[Descriptor],
        e: &ChainShapeError,
    ) -> u32 {
        let rejected = protocol::Rejected {
            error: protocol::ParseError::Shape(*e),
            status: protocol::status_slot(mem, descs),
        };
        self.answer_rejected(mem, rejected)
    }

    /// End the transaction and answer a malformed request with ERR where possible; returns
    /// the used length.
    fn answer_rejected<M: GuestMemory>(&mut self, mem: &M, rejected: protocol::Rejected) -> u32 {
        self.end_transaction();
        match rejected.status {
            Some(at) => {
                warn!("malformed request ({}): status ERR", rejected.error);
                match mem.write_obj(
                    VirtioI2cInHdr {
                        status: VIRTIO_I2C_MSG_ERR,
                    },
                    at,
                ) {
                    Ok(()) => IN_HDR_LEN,
                    Err(e) => {
                        warn!("writing the status failed: {e}");
                        0
                    }
                }
            }
            None => {
                warn!(
                    "malformed request ({}) without a usable status byte: dropped",
                    rejected.error
                );
                0
            }
        }
    }

    /// Serve one chain; returns the used length.
    fn serve_chain<M: GuestMemory>(&mut self, mem: &M, descs: &[Descriptor]) -> u32 {
        let req = match protocol::parse(mem, descs) {
            Ok(r) => r,
            Err(rejected) => return self.answer_rejected(mem, rejected),
        };
        let plan = self.groups.plan(req.fail_next);
        let now = Instant::now();
        let mut read_buf = std::mem::take(&mut self.read_buf);
        let mut ok = false;
        if plan.execute {
            let result = match &req.transfer {
                Transfer::Probe { .. } => self.bus.transfer(req.addr, Op::Probe, now, &mut self.wp),
                Transfer::Write(data) => {
                    self.bus
                        .transfer(req.addr, Op::Write(data), now, &mut self.wp)
                }
                Transfer::Read { len, .. } => {
                    read_buf.clear();
                    read_buf.resize(usize::try_from(*len).unwrap_or(0), 0);
                    self.bus
                        .transfer(req.addr, Op::Read(&mut read_buf), now, &mut self.wp)
                }
            };
            match result {
                Ok(()) => ok = true,
                Err(nack) => {
                    debug!("NACK: {nack}");
                    // The master ends the transaction with STOP after a NACK.
                    self.stop(now);
                }
            }
        } else {
            debug!("request to {:#04x} failed with its group", req.addr);
        }
        if ok && plan.ends_group {
            ok = self.stop(now);
        }
        self.groups.record(plan, ok);
        if ok {
            if let Transfer::Read { segments, .. } = &req.transfer {
                let mut at = 0usize;
                for seg in segments {
                    let n = usize::try_from(seg.len).unwrap_or(0);
                    if let Err(e) = mem.write_slice(&read_buf[at..at + n], seg.addr) {
                        warn!("writing read data failed: {e}");
                        ok = false;
                        break;
                    }
                    at += n;
                }
            }
        }
        // At most MAX_BUFFER_LEN bytes, kept for the next read.
        self.read_buf = read_buf;
        let status = if ok {
            VIRTIO_I2C_MSG_OK
        } else {
            VIRTIO_I2C_MSG_ERR
        };
        if let Err(e) = mem.write_obj(VirtioI2cInHdr { status }, req.status) {
            warn!("writing the status failed: {e}");
            return 0;
        }
        if ok {
            req.used_len_ok()
        } else {
            IN_HDR_LEN
        }
    }

    /// Serve every available chain of the requestq, one at a time (see
    /// [`common::vq::drain`]); stop when the ring is stopped or disabled.
    fn process_queue(&mut self, vring: &VringRwLock) {
        let Some(atomic) = self.mem.clone() else {
            warn!("requestq kicked before the memory table was set");
            return;
        };
        let event_idx = self.event_idx;
        drain(&"requestq", 0, vring, &atomic, event_idx, self);
        // A chain may have up to 64 Ki descriptors (an indirect table); keep
        // only what an ordinary one needs.
        self.descs.clear();
        self.descs.shrink_to(KEPT_DESCRIPTORS);
    }
}

impl QueueServer for VhostUserI2cBackend {
    fn serve(&mut self, chain: Chain<'_>) -> Served {
        if self.stopping.load(Ordering::Acquire) {
            return Served::Refused;
        }
        let mem = chain.memory();
        // Reused from chain to chain: serving a chain allocates nothing here.
        let mut descs = std::mem::take(&mut self.descs);
        descs.clear();
        let shape = walk(&chain, MAX_CHAIN_DESCRIPTORS, |d| descs.push(*d));
        let len = match shape {
            Ok(_) => self.serve_chain(mem, &descs),
            Err(e) => self.reject(mem, &descs, &e),
        };
        self.descs = descs;
        Served::Used(len)
    }

    fn drained(&mut self) {
        self.groups.drained();
    }
}

impl VhostUserBackendMut for VhostUserI2cBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        RING_FEATURES | (1 << VIRTIO_I2C_F_ZERO_LENGTH_REQUEST)
    }

    fn acked_features(&mut self, features: u64) {
        if features & (1 << VIRTIO_I2C_F_ZERO_LENGTH_REQUEST) == 0 {
            warn!("driver did not accept VIRTIO_I2C_F_ZERO_LENGTH_REQUEST (mandatory)");
        }
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn reset_device(&mut self) {
        info!("device reset");
        // The memory table stays: the frontend starts the rings again without resending it.
        self.end_transaction();
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    /// A fresh exit event for each worker: the worker of one connection must
    /// end when its daemon is dropped, or the next connection never starts.
    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        self.exit.for_worker()
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        // An error here would stop the worker thread and with it the queue:
        // log and carry on instead.
        if !evset.contains(EventSet::IN) {
            warn!("requestq event without EPOLLIN: {evset:?}");
            return Ok(());
        }
        let Some(vring) = vrings.first().filter(|_| device_event == 0) else {
            warn!("unknown device event {device_event}");
            return Ok(());
        };
        self.process_queue(vring);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{At24, At24Config, Variant};
    use crate::protocol::{VIRTIO_I2C_FLAGS_FAIL_NEXT, VIRTIO_I2C_FLAGS_M_RD};
    use test_kit::chains;
    use vhost_user_backend::VringT;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, GuestAddress, Le16, Le32};

    const QSIZE: u16 = 16;
    const DATA: u64 = 0x10_0000;

    struct Rig {
        mem: GuestMemoryMmap,
        vring: VringRwLock,
        backend: VhostUserI2cBackend,
        _dir: tempfile::TempDir,
        used_addr: GuestAddress,
        avail_addr: GuestAddress,
    }

    /// One descriptor: (guest address, length, device-writable).
    type D = (u64, u32, bool);

    fn rig(chains: &[Vec<D>], next_override: Option<(usize, u16)>) -> Rig {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, QSIZE);
        let mut flat = Vec::new();
        for chain in chains {
            let first = flat.len();
            let link = next_override
                .filter(|(at, _)| (first..first + chain.len()).contains(at))
                .map(|(at, n)| (at - first, n));
            flat.extend(chains::descriptors(
                u16::try_from(first).unwrap(),
                chain,
                link,
            ));
        }
        vq.add_desc_chains(&flat, 0).unwrap();
        let atomic = GuestMemoryAtomic::new(mem.clone());
        let vring = VringRwLock::new(atomic.clone(), QSIZE).unwrap();
        vring.set_queue_size(QSIZE);
        vring
            .set_queue_info(vq.desc_table_addr().0, vq.avail_addr().0, vq.used_addr().0)
            .unwrap();
        vring.set_queue_ready(true);
        vring.set_enabled(true);
        let dir = tempfile::tempdir().unwrap();
        let (image, contents) = Image::open(&dir.path().join("e.bin"), 256, false).unwrap();
        let mut cfg = At24Config::new(Variant::C02, 0x50);
        cfg.twr = std::time::Duration::ZERO;
        let bus = Bus::new(vec![At24::new(cfg, contents).unwrap()]).unwrap();
        let mut backend = VhostUserI2cBackend::new(bus, vec![image], WpSource::NotWired);
        backend.update_memory(atomic).unwrap();
        Rig {
            used_addr: vq.used_addr(),
            avail_addr: vq.avail_addr(),
            mem,
            vring,
            backend,
            _dir: dir,
        }
    }

    impl Rig {
        fn used(&self) -> Vec<(u32, u32)> {
            chains::used(&self.mem, self.used_addr, QSIZE, &mut 0)
        }

        fn byte(&self, at: u64) -> u8 {
            self.mem.read_obj(GuestAddress(at)).unwrap()
        }
    }

    fn put_hdr(mem: &GuestMemoryMmap, at: u64, addr: u16, flags: u32) {
        let h = protocol::VirtioI2cOutHdr {
            addr: Le16::from(addr << 1),
            padding: Le16::from(0),
            flags: Le32::from(flags),
        };
        mem.write_obj(h, GuestAddress(at)).unwrap();
    }

    #[test]
    fn every_chain_completed_with_spec_lengths() {
        let chains = vec![
            // Write 0x11 0x22 at 0x10.
            vec![
                (DATA, 8, false),
                (DATA + 0x100, 3, false),
                (DATA + 0x200, 1, true),
            ],
            // No status byte: dropped, still used (len 0).
            vec![(DATA + 0x300, 8, false)],
            // Random read of 2 at 0x10.
            vec![
                (DATA + 0x400, 8, false),
                (DATA + 0x500, 1, false),
                (DATA + 0x600, 1, true),
            ],
            vec![
                (DATA + 0x700, 8, false),
                (DATA + 0x800, 2, true),
                (DATA + 0x900, 1, true),
            ],
        ];
        let mut r = rig(&chains, None);
        put_hdr(&r.mem, DATA, 0x50, 0);
        r.mem
            .write_slice(&[0x10, 0x11, 0x22], GuestAddress(DATA + 0x100))
            .unwrap();
        put_hdr(&r.mem, DATA + 0x300, 0x50, 0);
        put_hdr(&r.mem, DATA + 0x400, 0x50, VIRTIO_I2C_FLAGS_FAIL_NEXT);
        r.mem.write_obj(0x10u8, GuestAddress(DATA + 0x500)).unwrap();
        put_hdr(&r.mem, DATA + 0x700, 0x50, VIRTIO_I2C_FLAGS_M_RD);
        for st in [0x200, 0x600, 0x900] {
            r.mem.write_obj(0xeeu8, GuestAddress(DATA + st)).unwrap();
        }
        let vring = r.vring.clone();
        r.backend.process_queue(&vring);
        assert_eq!(r.used(), vec![(0, 1), (3, 0), (4, 1), (7, 3)]);
        assert_eq!(r.byte(DATA + 0x200), VIRTIO_I2C_MSG_OK);
        assert_eq!(r.byte(DATA + 0x600), VIRTIO_I2C_MSG_OK);
        assert_eq!(r.byte(DATA + 0x900), VIRTIO_I2C_MSG_OK);
        assert_eq!(r.byte(DATA + 0x800), 0x11);
        assert_eq!(r.byte(DATA + 0x801), 0x22);
        assert_eq!(
            &r.backend.bus().devices()[0].contents()[0x10..0x12],
            &[0x11, 0x22]
        );
    }

    #[test]
    fn broken_next_link_still_completed() {
        // The second chain's header has NEXT pointing outside the table: the
        // chain ends after the header, which has no status byte.
        let chains = vec![
            vec![(DATA + 0x100, 8, false), (DATA + 0x200, 1, true)],
            vec![(DATA, 8, false)],
        ];
        let mut r = rig(&chains, Some((2, 200)));
        put_hdr(&r.mem, DATA, 0x50, 0);
        put_hdr(&r.mem, DATA + 0x100, 0x50, 0);
        let vring = r.vring.clone();
        r.backend.process_queue(&vring);
        assert_eq!(r.used(), vec![(0, 1), (2, 0)]);
        assert_eq!(r.byte(DATA + 0x200), VIRTIO_I2C_MSG_OK);
    }

    #[test]
    fn bogus_avail_index_does_not_panic() {
        let chains = vec![vec![(DATA, 8, false), (DATA + 0x200, 1, true)]];
        let mut r = rig(&chains, None);
        // Claim far more available chains than the ring holds.
        r.mem
            .write_obj(1000u16, r.avail_addr.unchecked_add(2))
            .unwrap();
        let vring = r.vring.clone();
        r.backend.process_queue(&vring);
        assert!(r.used().is_empty());
    }
}
