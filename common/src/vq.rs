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
//!
//! # Few locks and one memory load per drain
//!
//! Every `VringT` call (`add_used`, `enable_notification`, `needs_notification`, ...) takes
//! the vring's lock and loads the guest memory through `arc_swap` again. [`drain`] instead
//! loads the memory once per call and calls the `virtio_queue::QueueT` methods on the queue
//! it locked itself: once to pop a chain, once to return it and pop the next (and, at the end
//! of a pass, to signal the frontend and turn notifications back on). The lock is not held
//! while a chain is served, so a `GET_VRING_BASE` or `SET_VRING_ENABLE 0` of the frontend
//! takes effect between two chains, however long the queue (holding it across a drain of a
//! thousand 64 KiB I2C reads kept a stop waiting for more than a second), and a server may
//! lock this or any other vring (the gpio eventq returns held buffers while it is drained).

use std::fmt;

use vhost_user_backend::{VringState, VringT};
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

/// Feature bits both backends offer beside their device's own: VIRTIO_F_VERSION_1,
/// VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_RING_F_EVENT_IDX and vhost-user's
/// VHOST_USER_F_PROTOCOL_FEATURES.
pub const RING_FEATURES: u64 = (1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1)
    | (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC)
    | (1 << virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX)
    | vhost::vhost_user::message::VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// The guest memory type both backends use.
pub type Mem = GuestMemoryAtomic<GuestMemoryMmap>;
/// A descriptor chain popped from a queue, reading the guest memory [`drain`] loaded.
pub type Chain<'m> = DescriptorChain<&'m GuestMemoryMmap>;

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

/// A vring's state, locked by [`with_ring`], with the guest memory loaded: chains are
/// returned on it without taking the lock or loading the memory again.
pub struct Ring<'a> {
    state: &'a mut VringState<Mem>,
    mem: &'a GuestMemoryMmap,
    used: bool,
}

impl fmt::Debug for Ring<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("next_used", &self.state.get_queue().next_used())
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

impl Ring<'_> {
    /// Puts a used element for chain `head` in the used ring; [`with_ring`] signals the
    /// frontend when it lets go of the ring.
    pub fn add_used(&mut self, head: u16, len: u32) -> Result<(), virtio_queue::Error> {
        self.state.get_queue_mut().add_used(self.mem, head, len)?;
        self.used = true;
        Ok(())
    }

    /// The guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        self.mem
    }

    /// Signals the frontend if used elements were added since the last signal and it
    /// wants to know (EVENT_IDX: `needs_notification`).
    fn signal(&mut self, name: &dyn fmt::Display, index: u16, event_idx: bool) {
        if !std::mem::take(&mut self.used) {
            return;
        }
        let needed = !event_idx
            || self
                .state
                .get_queue_mut()
                .needs_notification(self.mem)
                .unwrap_or(true);
        if needed {
            if let Err(e) = self.state.signal_used_queue() {
                log::warn!("{name}: queue {index}: signalling the frontend: {e}");
            }
        }
    }
}

/// A device as the queue loop sees it.
pub trait QueueServer {
    /// Serves one chain (the vring is not locked meanwhile).
    fn serve(&mut self, chain: Chain<'_>) -> Served;

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
/// arrived meanwhile. Returns used chains and signals the frontend when needed (after each
/// pass, if it wants to know), and tells the server each time it found the queue empty. Ends
/// at once when the ring is not ready or not enabled (checked before each chain under the
/// vring lock), when the server refuses a chain, or when the ring is unusable; each of those
/// is logged once per call.
///
/// The guest memory is loaded once per call, and the vring locked once per chain, not
/// while the chain is served: see the module documentation.
pub fn drain<V: VringT<Mem>>(
    name: &dyn fmt::Display,
    index: u16,
    vring: &V,
    mem: &Mem,
    event_idx: bool,
    server: &mut impl QueueServer,
) -> Drained {
    let mem = mem.memory();
    let mem: &GuestMemoryMmap = &mem;
    let mut state = vring.get_mut();
    let mut first_pass = true;
    let outcome = loop {
        if event_idx {
            if let Err(e) = state.get_queue_mut().disable_notification(mem) {
                log::warn!("{name}: queue {index}: disabling notifications: {e}");
            }
        }
        let mut used = false;
        let mut popped = 0usize;
        // The vring is locked at the top of this loop.
        let stop = loop {
            if !state.is_enabled() || !state.get_queue().ready() {
                break Some(Drained::RingStopped);
            }
            let chain = match state.get_queue_mut().iter(mem) {
                Ok(mut chains) => chains.next(),
                Err(e) => {
                    log::error!("{name}: queue {index} unusable: {e}");
                    break Some(Drained::Broken);
                }
            };
            let Some(chain) = chain else {
                break None;
            };
            popped += 1;
            let head = chain.head_index();
            drop(state);
            let served = server.serve(chain);
            state = vring.get_mut();
            match served {
                Served::Used(len) => {
                    if let Err(e) = state.get_queue_mut().add_used(mem, head, len) {
                        log::warn!("{name}: queue {index}: add_used({head}): {e}");
                    }
                    used = true;
                }
                Served::Held => {}
                Served::Refused => break Some(Drained::Refused),
            }
        };
        Ring {
            state: &mut state,
            mem,
            used,
        }
        .signal(name, index, event_idx);
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
        match state.get_queue_mut().enable_notification(mem) {
            Ok(true) => continue,
            Ok(false) => break Drained::Empty,
            Err(e) => {
                log::warn!("{name}: queue {index}: enabling notifications: {e}");
                break Drained::Broken;
            }
        }
    };
    drop(state);
    match outcome {
        Drained::RingStopped => {
            log::info!("{name}: queue {index} stopped or disabled; no more chains served")
        }
        Drained::Refused => log::info!("{name}: queue {index}: the device no longer serves"),
        Drained::Empty | Drained::Broken => {}
    }
    outcome
}

/// Locks `vring` once, lets `f` return chains on it with the guest memory `mem`, and signals
/// the frontend if `f` added any and it wants to know (EVENT_IDX). For chains a device held
/// (the gpio eventq); [`drain`] returns the chains it serves itself.
pub fn with_ring<V: VringT<Mem>, R>(
    name: &dyn fmt::Display,
    index: u16,
    vring: &V,
    mem: &GuestMemoryMmap,
    event_idx: bool,
    f: impl FnOnce(&mut Ring<'_>) -> R,
) -> R {
    let mut state = vring.get_mut();
    let mut ring = Ring {
        state: &mut state,
        mem,
        used: false,
    };
    let r = f(&mut ring);
    ring.signal(name, index, event_idx);
    r
}
