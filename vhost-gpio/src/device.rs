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
//!
//! Request execution is here, in one place: [`Device::handle`] (requestq) and
//! [`Device::queue_irq`] (eventq) lock the state, check the device still serves
//! the guest, call the model and publish the WP line, all under one lock.
//!
//! # The serving gate
//!
//! Once a ring is stopped, disabled or reset, or the connection is gone, no guest
//! request may change a line: [`Device::guest_gone`] closes the gate and releases
//! the lines under the same lock that [`Device::handle`] checks it under, so no
//! ordering of the worker and the lifecycle event lets a request land after the
//! release. Only a ring being started or enabled again opens it
//! ([`Device::start_serving`]).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Mutex, MutexGuard};

use common::wp::{WpError, WpWriter};
use vm_memory::GuestAddress;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::model::{
    BuildError, Completion, Effects, GpioModel, LineSpec, LineState, ModelError, SmallList,
};
use crate::protocol::{Request, Response};

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

/// Mutable device state, behind the device's lock.
#[derive(Debug)]
struct DeviceState {
    model: GpioModel<EventToken>,
    wp: Option<WpLink>,
    pending: Vec<Completion<EventToken>>,
    watchers: Vec<SyncSender<LineState>>,
    generation: u64,
    /// Guest requests are served (see "The serving gate").
    serving: bool,
}

/// eventq buffers to return, and the device generation they belong to.
pub type Completions = SmallList<Completion<EventToken>>;

/// What [`Device::handle`] made of a requestq message.
#[derive(Debug)]
pub enum Handled {
    /// The response to write, and eventq buffers the request released.
    Answer {
        /// The response.
        response: Response,
        /// eventq buffers to return.
        completions: Completions,
        /// The generation they belong to.
        generation: u64,
    },
    /// Refused with an error status (already logged): write as much of it as fits.
    Error(Response),
    /// The device no longer serves the guest: the request is not executed.
    NotServing,
}

/// What [`Device::queue_irq`] made of an eventq buffer.
#[derive(Debug)]
pub enum Queued {
    /// The model holds the buffer; these buffers (perhaps this one) are to be returned.
    Held {
        /// eventq buffers to return.
        completions: Completions,
        /// The generation they belong to.
        generation: u64,
    },
    /// Refused: return it now with an INVALID status.
    Invalid(ModelError),
    /// The device no longer serves the guest.
    NotServing,
}

impl DeviceState {
    /// Publish the WP line if its effective level or drive changed, and tell the
    /// watchers about every changed line. Called under the lock after every model
    /// operation, before the guest can see the operation's answer.
    fn publish(&mut self, effects: &Effects<EventToken>) -> Result<(), WpError> {
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

    /// Run one guest request on the model.
    fn execute(
        &mut self,
        request: Request,
        irq_negotiated: bool,
    ) -> Result<(Response, Effects<EventToken>), ModelError> {
        let m = &mut self.model;
        Ok(match request {
            Request::GetNames => (Response::names(m.names_block()), Effects::default()),
            Request::GetDirection { gpio } => (
                Response::ok(m.get_direction(gpio)?.to_wire()),
                Effects::default(),
            ),
            Request::GetValue { gpio } => (
                Response::ok(u8::from(m.get_value(gpio)?)),
                Effects::default(),
            ),
            Request::SetDirection { gpio, direction } => {
                (Response::ok(0), m.set_direction(gpio, direction)?)
            }
            Request::SetValue { gpio, value } => (Response::ok(0), m.set_value(gpio, value)?),
            Request::SetIrqType { gpio, irq_type } => (
                Response::ok(0),
                m.set_irq_type(gpio, irq_type, irq_negotiated)?,
            ),
            Request::Unsupported(t) => return Err(ModelError::Unsupported(t)),
        })
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
            serving: false,
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
    fn lock(&self) -> MutexGuard<'_, DeviceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Size of the response `request` needs.
    pub fn response_size(&self, request: &Request) -> usize {
        request.response_size(self.lock().model.names_block().len())
    }

    /// Execute one requestq message, with `room` device-writable bytes for the
    /// answer. Under one lock: the serving gate, the model, the WP line (in the
    /// shared file before the guest can see the answer) and the watchers.
    pub fn handle(&self, request: Request, room: usize, irq_negotiated: bool) -> Handled {
        let mut st = self.lock();
        if !st.serving {
            return Handled::NotServing;
        }
        let need = request.response_size(st.model.names_block().len());
        if room < need {
            drop(st);
            log::warn!(
                "{}: {request:?}: response buffer has {room} writable bytes, needs {need}; answered ERR",
                self.name
            );
            return Handled::Error(Response::error(crate::protocol::RESPONSE_SIZE));
        }
        match st.execute(request, irq_negotiated) {
            Ok((mut response, effects)) => {
                if let Err(e) = st.publish(&effects) {
                    log::error!("{}: {request:?}: {e}", self.name);
                    response.set_error();
                }
                Handled::Answer {
                    response,
                    completions: effects.completions,
                    generation: st.generation,
                }
            }
            Err(e) => {
                drop(st);
                log::warn!("{}: {request:?}: {e}; answered ERR", self.name);
                Handled::Error(Response::error(need))
            }
        }
    }

    /// Hand an eventq buffer for line `gpio` to the model (unmask), its status
    /// byte at `status_addr`.
    pub fn queue_irq(&self, gpio: u16, head: u16, status_addr: GuestAddress) -> Queued {
        let mut st = self.lock();
        if !st.serving {
            return Queued::NotServing;
        }
        let token = EventToken {
            head,
            status_addr,
            generation: st.generation,
        };
        match st.model.queue_irq_buffer(gpio, token) {
            Ok(effects) => {
                if let Err(e) = st.publish(&effects) {
                    log::error!("{}: {e}", self.name);
                }
                Queued::Held {
                    completions: effects.completions,
                    generation: st.generation,
                }
            }
            Err((_token, e)) => Queued::Invalid(e),
        }
    }

    /// The eventq completions the host side queued, and their generation.
    pub fn take_pending(&self) -> (Vec<Completion<EventToken>>, u64) {
        let mut st = self.lock();
        (std::mem::take(&mut st.pending), st.generation)
    }

    /// The line count and the names block size (the config space).
    pub fn config(&self) -> (u16, u32) {
        let st = self.lock();
        (st.model.ngpio(), st.model.names_size())
    }

    /// A line's state.
    pub fn state(&self, gpio: u16) -> Option<LineState> {
        self.lock().model.state(gpio)
    }

    /// The line with this name or index.
    pub fn find(&self, which: &str) -> Option<u16> {
        self.lock().model.find(which)
    }

    /// Add a watcher; it gets every later line change (a bounded channel: a
    /// watcher whose channel is full is dropped).
    pub fn add_watcher(&self, tx: SyncSender<LineState>) {
        self.lock().watchers.push(tx);
    }

    /// A ring was started or enabled: serve guest requests again.
    pub fn start_serving(&self) {
        let mut st = self.lock();
        if !st.serving {
            st.serving = true;
            log::debug!("{}: serving the guest", self.name);
        }
    }

    /// True while guest requests are served.
    pub fn serving(&self) -> bool {
        self.lock().serving
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
    /// Closes the serving gate in the same critical section: no guest request
    /// changes a line after this, until a ring is started again.
    pub fn guest_gone(&self, reason: &str) {
        let mut st = self.lock();
        st.serving = false;
        let (effects, dropped) = st.model.release_guest();
        st.generation = st.generation.wrapping_add(1);
        st.pending.clear();
        if let Err(e) = st.publish(&effects) {
            log::error!("{}: {e}", self.name);
        }
        // One line per lifecycle event; tests wait for it.
        log::info!(
            "{}: {reason}: released {} line(s), dropped {} eventq buffer(s)",
            self.name,
            effects.changed.len(),
            dropped.len()
        );
    }

    /// Snapshot of every line.
    pub fn states(&self) -> Vec<LineState> {
        self.lock().model.states()
    }
}
