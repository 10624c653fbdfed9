// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The vhost-user glue: a thin [`VhostUserBackendMut`] that drains the queues
//! with [`common::vq::drain`], scans each chain once ([`common::chain`]),
//! hands the parsed request to [`Device::handle`] or [`Device::queue_irq`]
//! (which execute it) and writes the answer. Malformed chains get an error
//! status when they carry a device-writable buffer, else they are returned
//! with length 0 and a log line; the worker never stops on guest input. When
//! the device no longer serves the guest (the serving gate is closed) the loop
//! ends.
//!
//! # Seeing the guest go away
//!
//! The WP line must float as soon as the guest driver stops the device. What
//! vhost-user-backend 0.24 lets a backend observe, and what we use:
//! - `GET_VRING_BASE` (ring stopped): the library calls
//!   [`VhostUserBackendMut::stop_vring`];
//! - `RESET_DEVICE`: the library calls [`VhostUserBackendMut::reset_device`]
//!   (we offer `VHOST_USER_PROTOCOL_F_RESET_DEVICE` so frontends send it);
//! - `SET_VRING_ENABLE 0`: the library only flips the vring's `enabled` flag and
//!   no callback follows, so our vring type [`GpioVring`] wraps `VringRwLock`
//!   and reports `set_enabled(false)` to the device;
//! - end of the connection: the connection loop ([`crate::serve`]) calls
//!   [`Device::guest_gone`] when the daemon's `wait` returns;
//! - SIGTERM: `main` calls [`Device::guest_gone`] before exiting.
//!
//! A ring started (`SET_VRING_KICK`) or enabled again opens the serving gate.
//!
//! `RESET_OWNER` reaches no backend hook in 0.24; every frontend we know stops
//! the rings (`GET_VRING_BASE`) before it resets, which we do see.

use std::io;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock, Weak};

use common::daemon::ExitEvent;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{
    VhostUserBackendMut, VringRwLock, VringStateGuard, VringStateMutGuard, VringT,
};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};

use crate::device::{Device, EventToken, Handled, Queued};
use crate::model::{Completion, IrqStatus};
use crate::protocol::{
    parse_irq_request, ParseError, Request, Response, EVENT_QUEUE, IRQ_REQUEST_SIZE, NUM_QUEUES,
    REQUEST_QUEUE, REQUEST_SIZE, RESPONSE_SIZE, VIRTIO_GPIO_F_IRQ, VIRTIO_GPIO_IRQ_STATUS_INVALID,
    VIRTIO_GPIO_IRQ_STATUS_VALID,
};

/// Largest queue the backend accepts.
pub const QUEUE_SIZE: usize = 1024;
/// Most descriptors a GPIO chain may have (a request uses 2).
pub const MAX_CHAIN_DESCRIPTORS: usize = 16;
/// Epoll id of the device wake-up eventfd (0..=NUM_QUEUES are the library's).
pub const DEVICE_EVENT: u16 = 3;
const _: () = assert!(DEVICE_EVENT as usize > NUM_QUEUES);

use common::chain::{ChainError, ChainScan};
use common::vq::{drain, with_ring, Chain, Mem, QueueServer, Ring, Served, RING_FEATURES};

/// A `VringRwLock` that tells the device when the frontend disables it
/// (`SET_VRING_ENABLE 0`, or a device reset), which the library reports to no
/// backend callback.
#[derive(Clone)]
pub struct GpioVring {
    inner: VringRwLock<Mem>,
    observer: Arc<OnceLock<Weak<Device>>>,
}

impl std::fmt::Debug for GpioVring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpioVring")
            .field("observed", &self.observed())
            .finish()
    }
}

impl GpioVring {
    /// Attach the device to be told about disables (first call wins).
    pub fn observe(&self, device: &Arc<Device>) {
        let _ = self.observer.set(Arc::downgrade(device));
    }

    /// True once a device observes this vring.
    pub fn observed(&self) -> bool {
        self.observer.get().is_some()
    }

    /// The observing device, if still there.
    fn device(&self) -> Option<Arc<Device>> {
        self.observer.get().and_then(Weak::upgrade)
    }

    /// The ring is started and enabled.
    fn running(&self) -> bool {
        let state = self.inner.get_ref();
        state.is_enabled() && state.get_queue().ready()
    }
}

impl<'a> VringStateGuard<'a, Mem> for GpioVring {
    type G = <VringRwLock<Mem> as VringStateGuard<'a, Mem>>::G;
}

impl<'a> VringStateMutGuard<'a, Mem> for GpioVring {
    type G = <VringRwLock<Mem> as VringStateMutGuard<'a, Mem>>::G;
}

impl VringT<Mem> for GpioVring {
    fn new(mem: Mem, max_queue_size: u16) -> Result<Self, virtio_queue::Error> {
        Ok(GpioVring {
            inner: VringRwLock::new(mem, max_queue_size)?,
            observer: Arc::new(OnceLock::new()),
        })
    }
    fn get_ref(&self) -> <Self as VringStateGuard<'_, Mem>>::G {
        self.inner.get_ref()
    }
    fn get_mut(&self) -> <Self as VringStateMutGuard<'_, Mem>>::G {
        self.inner.get_mut()
    }
    fn add_used(&self, desc_index: u16, len: u32) -> Result<(), virtio_queue::Error> {
        self.inner.add_used(desc_index, len)
    }
    fn signal_used_queue(&self) -> io::Result<()> {
        self.inner.signal_used_queue()
    }
    fn enable_notification(&self) -> Result<bool, virtio_queue::Error> {
        self.inner.enable_notification()
    }
    fn disable_notification(&self) -> Result<(), virtio_queue::Error> {
        self.inner.disable_notification()
    }
    fn needs_notification(&self) -> Result<bool, virtio_queue::Error> {
        self.inner.needs_notification()
    }
    fn set_enabled(&self, enabled: bool) {
        self.inner.set_enabled(enabled);
        if let Some(device) = self.device() {
            if enabled {
                device.start_serving();
            } else {
                device.guest_gone("ring disabled (SET_VRING_ENABLE 0 or reset)");
            }
        }
    }
    fn set_queue_info(&self, desc: u64, avail: u64, used: u64) -> Result<(), virtio_queue::Error> {
        self.inner.set_queue_info(desc, avail, used)
    }
    fn queue_next_avail(&self) -> u16 {
        self.inner.queue_next_avail()
    }
    fn set_queue_next_avail(&self, base: u16) {
        self.inner.set_queue_next_avail(base)
    }
    fn set_queue_next_used(&self, idx: u16) {
        self.inner.set_queue_next_used(idx)
    }
    fn queue_used_idx(&self) -> Result<u16, virtio_queue::Error> {
        self.inner.queue_used_idx()
    }
    fn set_queue_size(&self, num: u16) {
        self.inner.set_queue_size(num)
    }
    fn set_queue_event_idx(&self, enabled: bool) {
        self.inner.set_queue_event_idx(enabled)
    }
    fn set_queue_ready(&self, ready: bool) {
        self.inner.set_queue_ready(ready);
        // Not ready: GET_VRING_BASE, which stop_vring reports.
        if ready {
            if let Some(device) = self.device() {
                device.start_serving();
            }
        }
    }
    fn set_kick(&self, file: Option<std::fs::File>) {
        self.inner.set_kick(file)
    }
    fn read_kick(&self) -> io::Result<bool> {
        self.inner.read_kick()
    }
    fn set_call(&self, file: Option<std::fs::File>) {
        self.inner.set_call(file)
    }
    fn set_err(&self, file: Option<std::fs::File>) {
        self.inner.set_err(file)
    }
}

/// One of the device's queues being drained.
struct QueueOf<'a> {
    backend: &'a VhostUserGpioBackend,
    index: u16,
    vring: &'a GpioVring,
    evq: Option<&'a GpioVring>,
}

impl QueueServer for QueueOf<'_> {
    fn serve(&mut self, chain: Chain<'_>) -> Served {
        if self.index == REQUEST_QUEUE {
            self.backend.serve_request(&chain, self.evq)
        } else {
            self.backend.serve_event(&chain, self.vring)
        }
    }
}

/// The vhost-user backend of one device.
pub struct VhostUserGpioBackend {
    device: Arc<Device>,
    mem: Option<Mem>,
    event_idx: bool,
    acked_features: u64,
    exit: ExitEvent,
    ready: Option<SyncSender<()>>,
}

impl std::fmt::Debug for VhostUserGpioBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserGpioBackend")
            .field("device", &self.device.name())
            .field("event_idx", &self.event_idx)
            .field("acked_features", &self.acked_features)
            .finish()
    }
}

impl VhostUserGpioBackend {
    /// A backend for `device`. `ready` gets one message once the backend has
    /// attached the device to its vrings (the first event it handles).
    pub fn new(device: Arc<Device>, ready: Option<SyncSender<()>>) -> Self {
        VhostUserGpioBackend {
            device,
            mem: None,
            event_idx: false,
            acked_features: 0,
            exit: ExitEvent::default(),
            ready,
        }
    }

    fn irq_negotiated(&self) -> bool {
        self.acked_features & (1 << VIRTIO_GPIO_F_IRQ) != 0
    }

    fn attach(&mut self, vrings: &[GpioVring]) {
        for v in vrings {
            if !v.observed() {
                v.observe(&self.device);
                // Started before the device could see it (not on a real connection: the
                // device is attached before the frontend connects).
                if v.running() {
                    self.device.start_serving();
                }
            }
        }
        if let Some(tx) = self.ready.take() {
            let _ = tx.try_send(());
        }
    }

    /// Serve one requestq chain: check it, parse it, hand it to the device,
    /// write the answer.
    fn serve_request(&self, chain: &Chain<'_>, evq: Option<&GpioVring>) -> Served {
        let mem = chain.memory();
        let name = self.device.name();
        let head = chain.head_index();
        let ChainScan { request, writable } =
            match ChainScan::<REQUEST_SIZE>::new(chain, MAX_CHAIN_DESCRIPTORS) {
                Ok(scan) => scan,
                Err(e) => {
                    log::warn!("{name}: requestq head {head}: {e}; dropped");
                    return Served::Used(0);
                }
            };
        let request = request.and_then(|bytes| {
            Request::parse(&bytes).map_err(|ParseError::Short { got, expected }| {
                ChainError::ShortRequest {
                    got,
                    need: expected,
                }
            })
        });
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                log::warn!("{name}: requestq head {head}: {e}; answered ERR");
                return Served::Used(
                    writable.write_status(mem, Response::error(RESPONSE_SIZE).bytes()),
                );
            }
        };
        match self
            .device
            .handle(request, writable.room, self.irq_negotiated())
        {
            Handled::Answer {
                response,
                completions,
                generation,
            } => {
                if let Some(evq) = evq {
                    self.complete(evq, mem, completions, generation);
                }
                let out = response.bytes();
                match writable.write(mem, out) {
                    Ok(()) => Served::Used(u32::try_from(out.len()).unwrap_or(0)),
                    Err(e) => {
                        log::warn!("{name}: requestq head {head}: writing the answer: {e}");
                        Served::Used(0)
                    }
                }
            }
            Handled::Error(response) => Served::Used(writable.write_status(mem, response.bytes())),
            Handled::NotServing => Served::Refused,
        }
    }

    /// Serve one eventq chain: hand the buffer to the device (unmask).
    fn serve_event(&self, chain: &Chain<'_>, evq: &GpioVring) -> Served {
        let mem = chain.memory();
        let head = chain.head_index();
        let name = self.device.name();
        let ChainScan { request, writable } =
            match ChainScan::<IRQ_REQUEST_SIZE>::new(chain, MAX_CHAIN_DESCRIPTORS) {
                Ok(scan) => scan,
                Err(e) => {
                    log::warn!("{name}: eventq head {head}: {e}; dropped");
                    return Served::Used(0);
                }
            };
        let invalid = |e: &dyn std::fmt::Display| {
            log::warn!("{name}: eventq head {head}: {e}; returned INVALID");
            Served::Used(writable.write_status(mem, &[VIRTIO_GPIO_IRQ_STATUS_INVALID]))
        };
        let bytes = match request {
            Ok(b) => b,
            Err(e) => return invalid(&e),
        };
        let gpio = match parse_irq_request(&bytes) {
            Ok(g) => g,
            Err(e) => return invalid(&e),
        };
        // The status byte is the first device-writable byte.
        let Some(status_addr) = writable.first_addr() else {
            return invalid(&ChainError::NoResponseBuffer);
        };
        match self.device.queue_irq(gpio, head, status_addr) {
            Queued::Held {
                completions,
                generation,
            } => {
                self.complete(evq, mem, completions, generation);
                Served::Held
            }
            Queued::Invalid(e) => invalid(&e),
            Queued::NotServing => Served::Refused,
        }
    }

    /// Return eventq buffers the model released: the eventq is locked once for all of
    /// them, and the frontend signalled as EVENT_IDX says.
    fn complete(
        &self,
        evq: &GpioVring,
        mem: &GuestMemoryMmap,
        completions: impl IntoIterator<Item = Completion<EventToken>>,
        generation: u64,
    ) {
        let mut completions = completions.into_iter().peekable();
        if completions.peek().is_none() {
            return;
        }
        let name = self.device.name();
        with_ring(&name, EVENT_QUEUE, evq, mem, self.event_idx, |ring| {
            self.return_events(ring, completions, generation);
        });
    }

    /// Write the statuses of released eventq buffers and put them in the used ring.
    fn return_events(
        &self,
        evq: &mut Ring<'_>,
        completions: impl Iterator<Item = Completion<EventToken>>,
        generation: u64,
    ) {
        for c in completions {
            if c.token.generation != generation {
                log::debug!("stale eventq buffer {} dropped", c.token.head);
                continue;
            }
            let status = match c.status {
                IrqStatus::Valid => VIRTIO_GPIO_IRQ_STATUS_VALID,
                IrqStatus::Invalid => VIRTIO_GPIO_IRQ_STATUS_INVALID,
            };
            let len = match evq.memory().write_obj(status, c.token.status_addr) {
                Ok(()) => 1,
                Err(e) => {
                    log::warn!("eventq head {}: writing the status: {e}", c.token.head);
                    0
                }
            };
            log::debug!(
                "{}: line {} eventq buffer {} returned {:?}",
                self.device.name(),
                c.gpio,
                c.token.head,
                c.status
            );
            if let Err(e) = evq.add_used(c.token.head, len) {
                log::warn!("eventq add_used: {e}");
            }
        }
    }

    /// Drain one queue (see [`common::vq::drain`]).
    fn process_queue(&self, index: u16, vrings: &[GpioVring]) {
        let (Some(vring), Some(mem)) = (vrings.get(usize::from(index)), self.mem.as_ref()) else {
            return;
        };
        let mut server = QueueOf {
            backend: self,
            index,
            vring,
            evq: vrings.get(usize::from(EVENT_QUEUE)),
        };
        drain(
            &self.device.name(),
            index,
            vring,
            mem,
            self.event_idx,
            &mut server,
        );
    }

    /// Return the eventq buffers the control socket released.
    fn process_device_event(&self, vrings: &[GpioVring]) {
        self.device.consume_wake();
        let (pending, generation) = self.device.take_pending();
        if pending.is_empty() {
            return;
        }
        let (Some(evq), Some(mem)) = (vrings.get(usize::from(EVENT_QUEUE)), self.mem.as_ref())
        else {
            log::warn!(
                "{}: interrupts pending but no eventq or guest memory",
                self.device.name()
            );
            return;
        };
        self.complete(evq, &mem.memory(), pending, generation);
    }
}

impl VhostUserBackendMut for VhostUserGpioBackend {
    type Bitmap = ();
    type Vring = GpioVring;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        RING_FEATURES | (1 << VIRTIO_GPIO_F_IRQ)
    }

    fn acked_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::RESET_DEVICE
    }

    fn reset_device(&mut self) {
        self.device.guest_gone("device reset");
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let (ngpio, names) = self.device.config();
        let config = crate::protocol::encode_config(ngpio, names);
        crate::protocol::config_slice(&config, offset, size).unwrap_or_else(|| {
            log::warn!(
                "{}: GET_CONFIG offset {offset} size {size} outside the {}-byte config space",
                self.device.name(),
                config.len()
            );
            Vec::new()
        })
    }

    fn update_memory(&mut self, mem: Mem) -> io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        self.exit.for_worker()
    }

    fn stop_vring(&mut self, queue_index: u32) -> io::Result<()> {
        self.device
            .guest_gone(&format!("ring {queue_index} stopped (GET_VRING_BASE)"));
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        evset: EventSet,
        vrings: &[GpioVring],
        _thread_id: usize,
    ) -> io::Result<()> {
        self.attach(vrings);
        if !evset.contains(EventSet::IN) {
            log::warn!("{}: unexpected event set {evset:?}", self.device.name());
            return Ok(());
        }
        match device_event {
            REQUEST_QUEUE | EVENT_QUEUE => self.process_queue(device_event, vrings),
            DEVICE_EVENT => self.process_device_event(vrings),
            other => log::warn!("{}: unknown event {other}", self.device.name()),
        }
        // Never return an error: that would stop the worker thread for good.
        Ok(())
    }
}

/// Guest memory type the backend uses, for callers building a daemon.
pub fn new_guest_memory() -> Mem {
    GuestMemoryAtomic::new(GuestMemoryMmap::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LineSpec;
    use crate::protocol::*;
    use common::line::Pull;
    use test_kit::chains;
    use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
    use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    const QSIZE: u16 = 16;
    const Q_BASE: [u64; 2] = [0x0, 0x4000];
    const DATA: u64 = 0x10_0000;

    struct Rig {
        mem: Mem,
        queues: Vec<MockSplitQueue<'static, GuestMemoryMmap>>,
        vrings: Vec<GpioVring>,
        backend: VhostUserGpioBackend,
        device: Arc<Device>,
        next_desc: [u16; 2],
        next_data: u64,
        used_seen: [u16; 2],
    }

    impl Rig {
        fn new(irq: bool) -> Rig {
            let _ = env_logger::builder().is_test(true).try_init();
            let mmap = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
            // The mock rings borrow the memory for the whole test: leak one
            // handle (the regions are shared with the atomic copy).
            let shared: &'static GuestMemoryMmap = Box::leak(Box::new(mmap.clone()));
            let queues: Vec<_> = Q_BASE
                .iter()
                .map(|&base| MockSplitQueue::create(shared, GuestAddress(base), QSIZE))
                .collect();
            let mem = GuestMemoryAtomic::new(mmap);
            let lines = [
                LineSpec {
                    name: "a".into(),
                    pull: Pull::Down,
                },
                LineSpec {
                    name: "b".into(),
                    pull: Pull::Up,
                },
            ];
            let device = Arc::new(Device::new("test", &lines, None).unwrap());
            let mut backend = VhostUserGpioBackend::new(device.clone(), None);
            backend.update_memory(mem.clone()).unwrap();
            let mut features = (1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_RING_F_EVENT_IDX);
            if irq {
                features |= 1 << VIRTIO_GPIO_F_IRQ;
            }
            backend.acked_features(features);
            backend.set_event_idx(false);
            let vrings: Vec<GpioVring> = queues
                .iter()
                .map(|vq| {
                    let v = GpioVring::new(mem.clone(), QSIZE).unwrap();
                    v.set_queue_size(QSIZE);
                    v.set_queue_info(vq.desc_table_addr().0, vq.avail_addr().0, vq.used_addr().0)
                        .unwrap();
                    v.set_queue_ready(true);
                    v.set_enabled(true);
                    v
                })
                .collect();
            Rig {
                mem,
                queues,
                vrings,
                backend,
                device,
                next_desc: [0; 2],
                next_data: DATA,
                used_seen: [0; 2],
            }
        }

        /// Queue a chain of (bytes to read | writable length) buffers; returns the head.
        fn push(&mut self, q: usize, bufs: &[Result<&[u8], u32>]) -> u16 {
            let g = self.mem.memory();
            let head = self.next_desc[q];
            let mut placed = Vec::new();
            for b in bufs {
                placed.push(match b {
                    Ok(bytes) => {
                        g.write_slice(bytes, GuestAddress(self.next_data)).unwrap();
                        (self.next_data, u32::try_from(bytes.len()).unwrap(), false)
                    }
                    Err(n) => (self.next_data, *n, true),
                });
                self.next_data += 0x100;
            }
            self.queues[q]
                .add_desc_chains(&chains::descriptors(head, &placed, None), head)
                .unwrap();
            self.next_desc[q] += u16::try_from(bufs.len()).unwrap();
            head
        }

        fn run(&mut self, event: u16) {
            self.backend
                .handle_event(event, EventSet::IN, &self.vrings, 0)
                .unwrap();
        }

        /// Used elements since the last call: (id, len).
        fn used(&mut self, q: usize) -> Vec<(u32, u32)> {
            let used_ring = self.queues[q].used_addr();
            chains::used(
                &*self.mem.memory(),
                used_ring,
                QSIZE,
                &mut self.used_seen[q],
            )
        }

        fn read(&self, addr: u64, n: usize) -> Vec<u8> {
            let mut v = vec![0u8; n];
            self.mem
                .memory()
                .read_slice(&mut v, GuestAddress(addr))
                .unwrap();
            v
        }

        /// Send one request, return (used len, response bytes).
        fn request(&mut self, t: u16, gpio: u16, value: u32, resp: u32) -> (u32, Vec<u8>) {
            let r = Request::encode(t, gpio, value);
            let resp_addr = self.next_data + 0x100;
            let head = self.push(0, &[Ok(&r), Err(resp)]);
            self.run(0);
            let used = self.used(0);
            assert_eq!(used.len(), 1);
            assert_eq!(used[0].0, u32::from(head));
            (
                used[0].1,
                self.read(resp_addr, usize::try_from(resp).unwrap()),
            )
        }
    }

    #[test]
    fn answers_requests_with_exact_lengths() {
        let mut r = Rig::new(false);
        let (len, resp) = r.request(VIRTIO_GPIO_MSG_GET_NAMES, 0, 0, 5);
        assert_eq!((len, resp), (5, b"\0a\0b\0".to_vec()));
        assert_eq!(
            r.request(VIRTIO_GPIO_MSG_GET_VALUE, 1, 0, 2),
            (2, vec![0, 1])
        );
        assert_eq!(
            r.request(VIRTIO_GPIO_MSG_SET_VALUE, 0, 1, 2),
            (2, vec![0, 0])
        );
        assert_eq!(
            r.request(VIRTIO_GPIO_MSG_SET_DIRECTION, 0, 1, 2),
            (2, vec![0, 0])
        );
        assert_eq!(
            r.request(VIRTIO_GPIO_MSG_GET_DIRECTION, 0, 0, 2),
            (2, vec![0, 1])
        );
        assert_eq!(
            r.request(VIRTIO_GPIO_MSG_GET_VALUE, 0, 0, 2),
            (2, vec![0, 1])
        );
    }

    #[test]
    fn errors_get_an_error_status() {
        let mut r = Rig::new(false);
        // Out of range, unknown type, IRQ not negotiated, short response.
        assert_eq!(
            r.request(VIRTIO_GPIO_MSG_GET_VALUE, 2, 0, 2),
            (2, vec![1, 0])
        );
        assert_eq!(r.request(0x42, 0, 0, 2), (2, vec![1, 0]));
        assert_eq!(
            r.request(VIRTIO_GPIO_MSG_IRQ_TYPE, 0, 1, 2),
            (2, vec![1, 0])
        );
        assert_eq!(r.request(VIRTIO_GPIO_MSG_GET_VALUE, 0, 0, 1), (1, vec![1]));
        assert_eq!(
            r.request(VIRTIO_GPIO_MSG_GET_NAMES, 0, 0, 4),
            (2, vec![1, 0, 0, 0])
        );
        // Short request.
        let head = r.push(0, &[Ok(&[1, 0, 0]), Err(2)]);
        let resp = r.next_data - 0x100;
        r.run(0);
        assert_eq!(r.used(0), vec![(u32::from(head), 2)]);
        assert_eq!(r.read(resp, 2), vec![1, 0]);
        // No writable buffer: returned with length 0.
        let req = Request::encode(VIRTIO_GPIO_MSG_GET_VALUE, 0, 0);
        let head = r.push(0, &[Ok(&req)]);
        r.run(0);
        assert_eq!(r.used(0), vec![(u32::from(head), 0)]);
        // Still serving.
        assert_eq!(
            r.request(VIRTIO_GPIO_MSG_GET_VALUE, 1, 0, 2),
            (2, vec![0, 1])
        );
    }

    #[test]
    fn eventq_and_control_wakeup() {
        let mut r = Rig::new(true);
        assert_eq!(
            r.request(VIRTIO_GPIO_MSG_IRQ_TYPE, 0, 1, 2),
            (2, vec![0, 0])
        );
        let status = r.next_data + 0x100;
        let head = r.push(1, &[Ok(&[0, 0]), Err(1)]);
        r.run(1);
        assert!(r.used(1).is_empty(), "held until the interrupt");
        // The control side raises the line; the worker is woken by the eventfd.
        r.device.host_set(0, Some(true)).unwrap();
        r.run(DEVICE_EVENT);
        assert_eq!(r.used(1), vec![(u32::from(head), 1)]);
        assert_eq!(r.read(status, 1), vec![VIRTIO_GPIO_IRQ_STATUS_VALID]);
        // Disable with a buffer queued: INVALID, returned by the requestq handler.
        let status = r.next_data + 0x100;
        let head = r.push(1, &[Ok(&[0, 0]), Err(1)]);
        r.run(1);
        assert_eq!(
            r.request(VIRTIO_GPIO_MSG_IRQ_TYPE, 0, 0, 2),
            (2, vec![0, 0])
        );
        assert_eq!(r.used(1), vec![(u32::from(head), 1)]);
        assert_eq!(r.read(status, 1), vec![VIRTIO_GPIO_IRQ_STATUS_INVALID]);
    }

    #[test]
    fn stale_buffers_are_not_completed_after_the_guest_goes() {
        let mut r = Rig::new(true);
        r.request(VIRTIO_GPIO_MSG_IRQ_TYPE, 0, 1, 2);
        r.push(1, &[Ok(&[0, 0]), Err(1)]);
        r.run(1);
        r.backend.stop_vring(1).unwrap();
        r.device.host_set(0, Some(true)).unwrap();
        r.run(DEVICE_EVENT);
        assert!(r.used(1).is_empty());
        assert!(r.device.states().iter().all(|s| !s.unmasked));
    }

    #[test]
    fn vring_disable_is_reported_to_the_device() {
        let mut r = Rig::new(false);
        r.run(DEVICE_EVENT); // attaches the device to the vrings
        assert!(r.vrings.iter().all(GpioVring::observed));
        r.request(VIRTIO_GPIO_MSG_SET_DIRECTION, 0, 1, 2);
        assert_eq!(r.device.states()[0].direction, Direction::Out);
        r.vrings[1].set_enabled(false);
        assert_eq!(r.device.states()[0].direction, Direction::None);
    }

    /// Where the chain-shape tests put their buffers (clear of `Rig::push`'s).
    const AREA: u64 = 0x18_0000;
    /// An address past the end of guest memory.
    const OUTSIDE: u64 = 0x30_0000;

    impl Rig {
        fn write(&self, addr: u64, bytes: &[u8]) {
            self.mem
                .memory()
                .write_slice(bytes, GuestAddress(addr))
                .unwrap();
        }

        /// Queue a chain of exactly these buffers; returns the head.
        fn push_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
            let head = self.next_desc[q];
            self.queues[q]
                .add_desc_chains(&chains::descriptors(head, bufs, None), head)
                .unwrap();
            self.next_desc[q] += u16::try_from(bufs.len()).unwrap();
            head
        }

        /// Queue a chain whose buffers are listed in an indirect table at `table`.
        fn push_indirect(&mut self, q: usize, table: u64, bufs: &[(u64, u32, bool)]) -> u16 {
            let head = self.next_desc[q];
            let indirect = chains::indirect(&*self.mem.memory(), table, bufs);
            self.queues[q].add_desc_chains(&[indirect], head).unwrap();
            self.next_desc[q] += 1;
            head
        }

        /// Queue one chain, run the queue, and return the chain's used length.
        fn serve_chain(&mut self, q: u16, bufs: &[(u64, u32, bool)]) -> u32 {
            let head = self.push_chain(usize::from(q), bufs);
            self.run(q);
            let used = self.used(usize::from(q));
            assert_eq!(used.len(), 1);
            assert_eq!(used[0].0, u32::from(head));
            used[0].1
        }
    }

    /// A request and its answer split over several buffers, with empty ones in between.
    #[test]
    fn request_and_answer_may_span_buffers() {
        let mut r = Rig::new(false);
        let req = Request::encode(VIRTIO_GPIO_MSG_GET_VALUE, 1, 0);
        r.write(AREA, &req[..3]);
        r.write(AREA + 0x100, &req[3..]);
        r.write(AREA + 0x300, &[0xee, 0xee]);
        let len = r.serve_chain(
            0,
            &[
                (AREA, 3, false),
                (AREA + 0x80, 0, false),
                (AREA + 0x100, 5, false),
                (AREA + 0x200, 0, true),
                (AREA + 0x300, 1, true),
                (AREA + 0x400, 1, true),
            ],
        );
        assert_eq!(len, 2);
        assert_eq!(r.read(AREA + 0x300, 2), vec![0, 0xee]);
        assert_eq!(r.read(AREA + 0x400, 1), vec![1]);
    }

    /// Malformed chains: an error status when there is somewhere to write it,
    /// else returned with length 0; the device keeps serving. (A fresh rig per
    /// chain: the mock ring has room for only a few.)
    #[test]
    fn malformed_chains_keep_their_answers() {
        let req = Request::encode(VIRTIO_GPIO_MSG_GET_VALUE, 1, 0);
        let resp = AREA + 0x300;
        let table = AREA + 0x1000;
        // Serve `bufs` (directly, or through an indirect table); check the used
        // length and, when 2, the error status; then check the device still answers.
        let check = |indirect: bool, bufs: &[(u64, u32, bool)], want: u32| {
            let mut r = Rig::new(false);
            r.write(AREA, &req);
            r.write(resp, &[0xee, 0xee]);
            let head = if indirect {
                r.push_indirect(0, table, bufs)
            } else {
                r.push_chain(0, bufs)
            };
            r.run(0);
            assert_eq!(r.used(0), vec![(u32::from(head), want)], "{bufs:x?}");
            if want == 2 {
                assert_eq!(
                    r.read(resp, 2),
                    vec![VIRTIO_GPIO_STATUS_ERR, 0],
                    "{bufs:x?}"
                );
            }
            assert_eq!(
                r.request(VIRTIO_GPIO_MSG_GET_VALUE, 1, 0, 2),
                (2, vec![0, 1])
            );
        };
        // Device-readable after device-writable.
        check(
            false,
            &[(AREA, 8, false), (resp, 2, true), (AREA, 8, false)],
            2,
        );
        // A device-readable buffer outside guest memory, or running off its end.
        check(false, &[(OUTSIDE, 8, false), (resp, 2, true)], 2);
        check(false, &[(0x1f_fffc, 8, false), (resp, 2, true)], 2);
        // A device-writable buffer outside guest memory, or running off its end.
        check(false, &[(AREA, 8, false), (OUTSIDE, 2, true)], 0);
        check(false, &[(AREA, 8, false), (0x1f_ffff, 2, true)], 0);
        check(
            false,
            &[(AREA, 8, false), (resp, 2, true), (OUTSIDE, 2, true)],
            0,
        );
        // Only empty device-writable buffers.
        check(false, &[(AREA, 8, false), (resp, 0, true)], 0);
        // Too many descriptors (an indirect table: the ring has only 16).
        let mut bufs = vec![(AREA, 8, false)];
        bufs.extend((0..16).map(|i| (resp + i, 1, true)));
        check(true, &bufs, 2);
        // ... with a device-writable buffer outside memory past the limit.
        bufs.push((OUTSIDE, 1, true));
        check(true, &bufs, 0);
        // A good request through an indirect table.
        let mut r = Rig::new(false);
        r.write(AREA, &req);
        let head = r.push_indirect(0, table, &[(AREA, 8, false), (resp, 2, true)]);
        r.run(0);
        assert_eq!(r.used(0), vec![(u32::from(head), 2)]);
        assert_eq!(r.read(resp, 2), vec![VIRTIO_GPIO_STATUS_OK, 1]);
    }

    /// The eventq status goes to the first device-writable byte, past empty buffers.
    #[test]
    fn eventq_status_is_the_first_writable_byte() {
        let mut r = Rig::new(true);
        let high = u32::from(VIRTIO_GPIO_IRQ_TYPE_LEVEL_HIGH);
        assert_eq!(
            r.request(VIRTIO_GPIO_MSG_IRQ_TYPE, 1, high, 2),
            (2, vec![0, 0])
        );
        r.write(AREA, &1u16.to_le_bytes());
        r.write(AREA + 0x400, &[0xee]);
        // Line 1 is pulled up: the level interrupt fires at once.
        let len = r.serve_chain(
            1,
            &[
                (AREA, 2, false),
                (AREA + 0x300, 0, true),
                (AREA + 0x400, 1, true),
            ],
        );
        assert_eq!(len, 1);
        assert_eq!(r.read(AREA + 0x400, 1), vec![VIRTIO_GPIO_IRQ_STATUS_VALID]);
        // Short or misplaced requests come back INVALID.
        r.write(AREA + 0x400, &[0xee]);
        assert_eq!(
            r.serve_chain(1, &[(AREA, 1, false), (AREA + 0x400, 1, true)]),
            1
        );
        assert_eq!(
            r.read(AREA + 0x400, 1),
            vec![VIRTIO_GPIO_IRQ_STATUS_INVALID]
        );
        assert_eq!(
            r.serve_chain(1, &[(AREA + 0x400, 1, true), (AREA, 2, false)]),
            1
        );
        assert_eq!(r.serve_chain(1, &[(AREA, 2, false), (OUTSIDE, 1, true)]), 0);
    }

    #[test]
    fn config_space_reads_are_bounds_checked() {
        let r = Rig::new(false);
        assert_eq!(r.backend.get_config(0, 8), vec![2, 0, 0, 0, 4, 0, 0, 0]);
        assert_eq!(r.backend.get_config(4, 4), vec![4, 0, 0, 0]);
        assert!(r.backend.get_config(6, 4).is_empty());
        assert!(r.backend.get_config(u32::MAX, 2).is_empty());
    }
}
