// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The device's side of the shared connection loop ([`common::daemon`]): a
//! fresh backend per frontend connection, the device attached to its vrings
//! before any message can arrive, and the guest's lines released when the
//! connection ends.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use common::daemon::{Connections, DaemonError};
use vhost_user_backend::VhostUserDaemon;
use vmm_sys_util::epoll::EventSet;

use crate::device::Device;
use crate::vhu::{VhostUserGpioBackend, DEVICE_EVENT};

/// One device served connection after connection.
#[derive(Debug)]
pub struct GpioConnections {
    device: Arc<Device>,
    ready: Option<Receiver<()>>,
}

impl GpioConnections {
    /// Serve `device`.
    pub fn new(device: Arc<Device>) -> Self {
        GpioConnections {
            device,
            ready: None,
        }
    }
}

impl Connections for GpioConnections {
    type Backend = Arc<RwLock<VhostUserGpioBackend>>;

    fn name(&self) -> String {
        self.device.name().to_string()
    }

    fn backend(&mut self) -> Result<Self::Backend, DaemonError> {
        let (ready_tx, ready_rx) = sync_channel(1);
        self.ready = Some(ready_rx);
        let backend = VhostUserGpioBackend::new(self.device.clone(), Some(ready_tx));
        Ok(Arc::new(RwLock::new(backend)))
    }

    fn started(&mut self, daemon: &VhostUserDaemon<Self::Backend>) -> Result<(), DaemonError> {
        let handlers = daemon.get_epoll_handlers();
        let handler = handlers
            .first()
            .ok_or_else(|| DaemonError::Daemon("the daemon has no worker".into()))?;
        handler
            .register_listener(self.device.wake_fd(), EventSet::IN, u64::from(DEVICE_EVENT))
            .map_err(|e| DaemonError::Daemon(format!("registering the device eventfd: {e}")))?;
        // Let the worker attach the device to its vrings before any frontend
        // message can start or disable one.
        self.device.wake();
        let ready = self.ready.take();
        if ready.is_none_or(|r| r.recv_timeout(Duration::from_secs(5)).is_err()) {
            log::warn!("{}: worker did not start within 5 s", self.device.name());
        }
        Ok(())
    }

    fn ended(&mut self) {
        self.device.guest_gone("connection closed");
    }
}
