// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Serving a virtqueue: the one queue loop both backends use.
//!
//! # Why the loop checks the ring before every chain
//!
//! vhost-user-backend 0.24 answers `GET_VRING_BASE` by first marking the queue not ready
//! (under the vring lock only), then calling the backend's `stop_vring`, which needs the
//! backend lock that the vring worker holds for as long as it serves a kick. virtio-queue
//! 0.18's `pop_descriptor_chain` on a queue that is not ready logs an error and returns
//! nothing, but `enable_notification` does not look at readiness: it keeps reporting new
//! chains while the available index is ahead. The usual EVENT_IDX loop ("drain, re-enable
//! notifications, drain again if more arrived") then never ends, the stop is never
//! answered, and the log fills at ~100 MB/s. [`drain`] stops as soon as the ring is not
//! ready or not enabled, checked under the vring lock before each chain, and says so once.

use std::fmt;

use vhost_user_backend::VringT;
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard, GuestMemoryMmap};

/// Feature bits both backends offer beside their device's own: VIRTIO_F_VERSION_1,
/// VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_RING_F_EVENT_IDX and vhost-user's
/// VHOST_USER_F_PROTOCOL_FEATURES.
pub const RING_FEATURES: u64 = (1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1)
    | (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX)
    | vhost::vhost_user::message::VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// The guest memory type both backends use.
pub type Mem = GuestMemoryAtomic<GuestMemoryMmap>;
/// A descriptor chain popped from a queue.
pub type Chain = DescriptorChain<GuestMemoryLoadGuard<GuestMemoryMmap>>;

/// What became of a chain the device was handed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// Return it now with this used length.
    Used(u32),
    /// The device keeps it and returns it later (a virtio-gpio eventq buffer).
    Held,
    /// The device no longer serves this guest (the ring was stopped, disabled or reset, or
    /// the connection is gone): the chain is not returned and the loop ends.
    Refused,
}

/// A device as the queue loop sees it.
pub trait QueueServer {
    /// Serves one chain.
    fn serve(&mut self, chain: Chain) -> Served;

    /// The queue was found empty after chains were served (a pass of the loop ended): a
    /// request sequence the driver split over kicks has no more parts now.
    fn drained(&mut self) {}
}

/// Why [`drain`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// No chain left and notifications are back on.
    Empty,
    /// The ring was stopped (`GET_VRING_BASE`) or disabled while chains were pending.
    RingStopped,
    /// The device refused a chain.
    Refused,
    /// The available ring is unusable (a bad index or address); the guest must reset it.
    Broken,
}

/// Serves every available chain of `vring` with `server`, in ring order, the EVENT_IDX way
/// when `event_idx`: notifications off while draining, then on, then drain again if chains
/// arrived meanwhile. Returns used chains with `add_used` and signals the frontend when
/// needed, and tells the server each time it found the queue empty. Ends at once when the
/// ring is not ready or not enabled (checked before each chain under the vring lock), when
/// the server refuses a chain, or when the ring is unusable; each of
/// those is logged once per call.
pub fn drain<V: VringT<Mem>>(
    name: &dyn fmt::Display,
    index: u16,
    vring: &V,
    mem: &Mem,
    event_idx: bool,
    server: &mut impl QueueServer,
) -> Drained {
    let mut first_pass = true;
    let outcome = loop {
        if event_idx {
            if let Err(e) = vring.disable_notification() {
                log::warn!("{name}: queue {index}: disabling notifications: {e}");
            }
        }
        let mut used_any = false;
        let mut popped = 0usize;
        let stop = loop {
            let chain = {
                let mut state = vring.get_mut();
                if !state.is_enabled() || !state.get_queue().ready() {
                    break Some(Drained::RingStopped);
                }
                match state.get_queue_mut().iter(mem.memory()) {
                    Ok(mut chains) => chains.next(),
                    Err(e) => {
                        log::error!("{name}: queue {index} unusable: {e}");
                        break Some(Drained::Broken);
                    }
                }
            };
            let Some(chain) = chain else {
                break None;
            };
            popped += 1;
            let head = chain.head_index();
            match server.serve(chain) {
                Served::Used(len) => {
                    if let Err(e) = vring.add_used(head, len) {
                        log::warn!("{name}: queue {index}: add_used({head}): {e}");
                    }
                    used_any = true;
                }
                Served::Held => {}
                Served::Refused => break Some(Drained::Refused),
            }
        };
        if used_any {
            signal(name, index, vring, event_idx);
        }
        if popped > 0 && stop.is_none() {
            server.drained();
        }
        if let Some(stop) = stop {
            break stop;
        }
        if !event_idx {
            break Drained::Empty;
        }
        if !first_pass && popped == 0 {
            // The driver's index says there is more, yet nothing can be popped: a bogus
            // available index. Looping would spin.
            log::error!("{name}: queue {index}: available index ahead of any chain");
            break Drained::Broken;
        }
        first_pass = false;
        match vring.enable_notification() {
            Ok(true) => continue,
            Ok(false) => break Drained::Empty,
            Err(e) => {
                log::warn!("{name}: queue {index}: enabling notifications: {e}");
                break Drained::Broken;
            }
        }
    };
    match outcome {
        Drained::RingStopped => {
            log::info!("{name}: queue {index} stopped or disabled; no more chains served")
        }
        Drained::Refused => log::info!("{name}: queue {index}: the device no longer serves"),
        Drained::Empty | Drained::Broken => {}
    }
    outcome
}

/// Signals the frontend that used chains are there, if it wants to know.
pub fn signal<V: VringT<Mem>>(name: &dyn fmt::Display, index: u16, vring: &V, event_idx: bool) {
    let needed = !event_idx || vring.needs_notification().unwrap_or(true);
    if needed {
        if let Err(e) = vring.signal_used_queue() {
            log::warn!("{name}: queue {index}: signalling the frontend: {e}");
        }
    }
}
