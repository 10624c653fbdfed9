// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The vhost-user glue: pops chains, parses them (`protocol`), runs them on the
//! bus (`model`), persists what a STOP wrote (`storage`) and completes them.
//! Every popped chain is completed, whatever happens to it.

use std::io;
use std::time::Instant;

use log::{debug, error, info, warn};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::{
    VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::QueueOwnedT;
use vm_memory::{Bytes, GuestAddressSpace, GuestMemory, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

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
pub struct I2cEepromBackend {
    bus: Bus,
    images: Vec<Image>,
    wp: WpSource,
    groups: Groups,
    event_idx: bool,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
}

impl I2cEepromBackend {
    /// A backend for `bus`; `images[i]` persists device `i`.
    pub fn new(bus: Bus, images: Vec<Image>, wp: WpSource) -> Self {
        I2cEepromBackend {
            bus,
            images,
            wp,
            groups: Groups::default(),
            event_idx: false,
            mem: None,
        }
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The frontend went away: end any open transaction without a STOP.
    pub fn disconnected(&mut self) {
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

    /// Serve one chain; returns the used length.
    fn serve_chain<M: GuestMemory>(&mut self, mem: &M, descs: &[Descriptor]) -> u32 {
        let req = match protocol::parse(mem, descs) {
            Ok(r) => r,
            Err(rejected) => {
                self.bus.abort();
                self.groups.drained();
                return match rejected.status {
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
                };
            }
        };
        let plan = self.groups.plan(req.fail_next);
        let now = Instant::now();
        let mut read_buf = Vec::new();
        let mut ok = false;
        if plan.execute {
            let result = match &req.transfer {
                Transfer::Probe { .. } => self.bus.transfer(req.addr, Op::Probe, now, &mut self.wp),
                Transfer::Write(data) => {
                    self.bus
                        .transfer(req.addr, Op::Write(data), now, &mut self.wp)
                }
                Transfer::Read { len, .. } => {
                    read_buf = vec![0; usize::try_from(*len).unwrap_or(0)];
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

    /// Serve every available chain of the requestq.
    fn process_queue(&mut self, vring: &VringRwLock) {
        let Some(atomic) = self.mem.as_ref() else {
            warn!("requestq kicked before the memory table was set");
            return;
        };
        let mem = atomic.memory();
        let chains: Vec<_> = match vring.get_mut().get_queue_mut().iter(mem.clone()) {
            Ok(iter) => iter.collect(),
            Err(e) => {
                error!("requestq unusable: {e}");
                return;
            }
        };
        if chains.is_empty() {
            return;
        }
        for chain in chains {
            let head = chain.head_index();
            let descs: Vec<Descriptor> = chain.collect();
            let used = self.serve_chain(&*mem, &descs);
            if let Err(e) = vring.add_used(head, used) {
                error!("add_used({head}) failed: {e}");
            }
        }
        self.groups.drained();
        match vring.needs_notification() {
            Ok(false) => {}
            Ok(true) | Err(_) => {
                if let Err(e) = vring.signal_used_queue() {
                    error!("signalling the requestq failed: {e}");
                }
            }
        }
    }
}

impl VhostUserBackendMut for I2cEepromBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_I2C_F_ZERO_LENGTH_REQUEST)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
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
        self.disconnected();
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
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK) {
            Ok(pair) => Some(pair),
            Err(e) => {
                error!("creating a worker exit event failed: {e}");
                None
            }
        }
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
        if self.event_idx {
            // The queue reads the avail index once per iteration: loop until
            // no chain arrived while notifications were off.
            loop {
                if let Err(e) = vring.disable_notification() {
                    error!("disable_notification: {e}");
                }
                self.process_queue(vring);
                match vring.enable_notification() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        error!("enable_notification: {e}");
                        break;
                    }
                }
            }
        } else {
            self.process_queue(vring);
        }
        Ok(())
    }
}
