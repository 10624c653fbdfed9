// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The per-socket connection loop: one vhost-user daemon per frontend
//! connection, all on one listening socket that stays bound, so a frontend can
//! reconnect (QEMU's chardev reconnect, or a hot-replug) and find a fresh
//! device. A disconnect or a protocol error ends only that connection.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::Duration;

use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vmm_sys_util::epoll::EventSet;

use crate::device::Device;
use crate::vhu::{new_guest_memory, VhostUserGpioBackend, DEVICE_EVENT};

/// Errors that stop a device from being served at all.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The vhost-user socket could not be bound.
    #[error("binding vhost-user socket {path}")]
    Bind {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: vhost::vhost_user::Error,
    },
    /// Something other than a socket sits at the path: it is left alone.
    #[error("vhost-user socket path {0} exists and is not a socket; not replacing it")]
    NotASocket(String),
}

/// Bind the vhost-user socket (replacing a stale socket, never another file).
pub fn bind(path: &Path) -> Result<Listener, ServeError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServeError::NotASocket(path.display().to_string()));
        }
    }
    Listener::new(path, true).map_err(|source| ServeError::Bind {
        path: path.display().to_string(),
        source,
    })
}

/// Serve connection after connection on `listener`, forever.
pub fn serve_forever(mut listener: Listener, device: Arc<Device>) {
    let mut backoff = Duration::from_millis(10);
    loop {
        match serve_one(&mut listener, &device) {
            Ok(()) => backoff = Duration::from_millis(10),
            Err(e) => {
                log::error!("{}: {e}; retrying in {backoff:?}", device.name());
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Serve one frontend connection, then release the guest's lines.
pub fn serve_one(listener: &mut Listener, device: &Arc<Device>) -> Result<(), String> {
    let (ready_tx, ready_rx) = sync_channel(1);
    let backend = VhostUserGpioBackend::new(device.clone(), Some(ready_tx))
        .map_err(|e| format!("creating the backend: {e}"))?;
    let backend = Arc::new(RwLock::new(backend));
    let mut daemon = VhostUserDaemon::new(
        format!("vhost-gpio-{}", device.name()),
        backend,
        new_guest_memory(),
    )
    .map_err(|e| format!("creating the vhost-user daemon: {e}"))?;
    let handlers = daemon.get_epoll_handlers();
    let Some(handler) = handlers.first() else {
        return Err("the daemon has no worker".into());
    };
    handler
        .register_listener(device.wake_fd(), EventSet::IN, u64::from(DEVICE_EVENT))
        .map_err(|e| format!("registering the device eventfd: {e}"))?;
    // Let the worker attach the device to its vrings before any frontend
    // message can disable one.
    device.wake();
    if ready_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        log::warn!("{}: worker did not start within 5 s", device.name());
    }
    log::info!("{}: waiting for a frontend", device.name());
    daemon
        .start(listener)
        .map_err(|e| format!("accepting a connection: {e}"))?;
    log::info!("{}: frontend connected", device.name());
    match daemon.wait() {
        Ok(())
        | Err(vhost_user_backend::Error::HandleRequest(
            vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
        )) => log::info!("{}: frontend disconnected", device.name()),
        Err(e) => log::warn!("{}: connection ended: {e}", device.name()),
    }
    device.guest_gone("connection closed");
    // Dropping the daemon stops and joins its worker.
    drop(daemon);
    Ok(())
}
