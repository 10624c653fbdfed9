// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! One simulated GPIO device as shared by its three users: the vhost-user
//! worker (guest requests), the control socket (host-side levels and watchers),
//! and the connection loop (guest gone, new connection).
//!
//! It owns the line model, the WP state file writer and the list of eventq
//! completions the control socket produced. Those completions can only be
//! written by the vhost-user worker, which owns the queues: the control side
//! queues them here and wakes the worker through an eventfd registered on the
//! daemon's epoll (no thread per line, no polling).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Mutex, MutexGuard};

use common::wp::{WpError, WpWriter};
use vm_memory::GuestAddress;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::model::{BuildError, Completion, Effects, GpioModel, LineSpec, LineState, ModelError};

/// An eventq buffer held by the model until it is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventToken {
    /// Head descriptor index of the chain.
    pub head: u16,
    /// Guest address of the one-byte `virtio_gpio_irq_response`.
    pub status_addr: GuestAddress,
    /// Device generation the buffer belongs to: a buffer from before the guest
    /// went away is never written.
    pub generation: u64,
}

/// The WP line link: which line, and what was last published.
#[derive(Debug)]
struct WpLink {
    writer: WpWriter,
    line: u16,
    last: Option<(bool, bool)>,
}

/// Mutable device state, behind [`Device::lock`].
#[derive(Debug)]
pub struct DeviceState {
    /// The lines.
    pub model: GpioModel<EventToken>,
    wp: Option<WpLink>,
    pending: Vec<Completion<EventToken>>,
    watchers: Vec<SyncSender<LineState>>,
    generation: u64,
}

impl DeviceState {
    /// Current generation (bumped each time the guest goes away).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Publish the WP line if its effective level or drive changed, and tell the
    /// watchers about every changed line. Called under the lock after every model
    /// operation, before the guest can see the operation's answer.
    pub fn publish(&mut self, effects: &Effects<EventToken>) -> Result<(), WpError> {
        let mut result = Ok(());
        if let Some(wp) = self.wp.as_mut() {
            if let Some(now) = self.model.level(wp.line) {
                if wp.last != Some(now) {
                    match wp.writer.publish(now.0, now.1) {
                        Ok(()) => wp.last = Some(now),
                        Err(e) => {
                            log::error!("publishing the WP line: {e}");
                            result = Err(e);
                        }
                    }
                }
            }
        }
        if !effects.changed.is_empty() && !self.watchers.is_empty() {
            for gpio in &effects.changed {
                if let Some(state) = self.model.state(*gpio) {
                    // A watcher that stopped reading is dropped rather than
                    // buffered without bound; its session then ends.
                    self.watchers.retain(|w| match w.try_send(state.clone()) {
                        Ok(()) => true,
                        Err(TrySendError::Full(_)) => {
                            log::warn!("a control watcher is not keeping up; dropping it");
                            false
                        }
                        Err(TrySendError::Disconnected(_)) => false,
                    });
                }
            }
        }
        result
    }

    /// Take the eventq completions queued by the host side.
    pub fn take_pending(&mut self) -> Vec<Completion<EventToken>> {
        std::mem::take(&mut self.pending)
    }

    /// Add a watcher; it gets every later line change (a bounded channel: a
    /// watcher whose channel is full is dropped).
    pub fn add_watcher(&mut self, tx: SyncSender<LineState>) {
        self.watchers.push(tx);
    }
}

/// A device: state plus the worker wake-up eventfd.
#[derive(Debug)]
pub struct Device {
    name: String,
    state: Mutex<DeviceState>,
    wake_rx: EventConsumer,
    wake_tx: EventNotifier,
}

/// Errors building a device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Bad line set.
    #[error("bad line set")]
    Lines(#[source] BuildError),
    /// The WP line index is out of range.
    #[error("WP line {0} is not a line of the device")]
    WpLine(u16),
    /// The eventfd could not be made.
    #[error("creating the worker wake-up eventfd")]
    EventFd(#[source] io::Error),
}

impl Device {
    /// Build a device; `wp` is the opened state file writer and the line it follows.
    pub fn new(
        name: &str,
        lines: &[LineSpec],
        wp: Option<(WpWriter, u16)>,
    ) -> Result<Device, DeviceError> {
        let model = GpioModel::new(lines).map_err(DeviceError::Lines)?;
        let wp = match wp {
            Some((writer, line)) => {
                if model.level(line).is_none() {
                    return Err(DeviceError::WpLine(line));
                }
                Some(WpLink {
                    writer,
                    line,
                    last: None,
                })
            }
            None => None,
        };
        let (wake_rx, wake_tx) =
            new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC)
                .map_err(DeviceError::EventFd)?;
        let mut state = DeviceState {
            model,
            wp,
            pending: Vec::new(),
            watchers: Vec::new(),
            generation: 0,
        };
        // Publish the initial (pull or host) level so `last` is known.
        if let Err(e) = state.publish(&Effects::default()) {
            log::error!("{name}: initial WP publish failed: {e}");
        }
        Ok(Device {
            name: name.to_string(),
            state: Mutex::new(state),
            wake_rx,
            wake_tx,
        })
    }

    /// Name for log lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Lock the state. A panic elsewhere while holding the lock does not make
    /// the device unusable: the state is a plain value and stays consistent
    /// per operation.
    pub fn lock(&self) -> MutexGuard<'_, DeviceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fd the worker's epoll watches.
    pub fn wake_fd(&self) -> RawFd {
        self.wake_rx.as_raw_fd()
    }

    /// Wake the worker.
    pub fn wake(&self) {
        if let Err(e) = self.wake_tx.notify() {
            log::error!("{}: waking the vhost-user worker: {e}", self.name);
        }
    }

    /// Clear the wake-up eventfd (the worker calls this when woken).
    pub fn consume_wake(&self) {
        // Non-blocking: WouldBlock just means nothing was pending.
        let _ = self.wake_rx.consume();
    }

    /// Host side: set (`Some`) or clear (`None`) a line's input level. Interrupts
    /// it raises are queued for the worker, which is woken.
    pub fn host_set(&self, gpio: u16, level: Option<bool>) -> Result<(), ModelError> {
        let mut st = self.lock();
        let effects = st.model.set_host_level(gpio, level)?;
        if let Err(e) = st.publish(&effects) {
            log::error!("{}: {e}", self.name);
        }
        let wake = !effects.completions.is_empty();
        st.pending.extend(effects.completions);
        drop(st);
        if wake {
            self.wake();
        }
        Ok(())
    }

    /// The guest driver is gone: every line floats, interrupts are off, queued
    /// eventq buffers are forgotten, and the WP line is republished.
    pub fn guest_gone(&self, reason: &str) {
        let mut st = self.lock();
        let (effects, dropped) = st.model.release_guest();
        st.generation = st.generation.wrapping_add(1);
        st.pending.clear();
        if let Err(e) = st.publish(&effects) {
            log::error!("{}: {e}", self.name);
        }
        if !effects.changed.is_empty() || !dropped.is_empty() {
            log::info!(
                "{}: {reason}: released {} line(s), dropped {} eventq buffer(s)",
                self.name,
                effects.changed.len(),
                dropped.len()
            );
        } else {
            log::debug!("{}: {reason}: nothing to release", self.name);
        }
    }

    /// Snapshot of every line.
    pub fn states(&self) -> Vec<LineState> {
        self.lock().model.states()
    }
}
