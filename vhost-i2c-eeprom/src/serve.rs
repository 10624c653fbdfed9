// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The bus's side of the shared connection loop ([`common::daemon`]): one
//! backend for every connection (the EEPROMs keep their state), told when a
//! frontend goes so that it ends the open transaction and lets go of the
//! guest's memory.

use std::sync::{Arc, RwLock};

use common::daemon::{Connections, DaemonError};

use crate::vhu::VhostUserI2cBackend;

/// One bus served connection after connection.
#[derive(Debug)]
pub struct I2cConnections {
    name: String,
    backend: Arc<RwLock<VhostUserI2cBackend>>,
}

impl I2cConnections {
    /// Serve `backend`; `name` for log lines.
    pub fn new(name: String, backend: Arc<RwLock<VhostUserI2cBackend>>) -> Self {
        I2cConnections { name, backend }
    }
}

impl Connections for I2cConnections {
    type Backend = Arc<RwLock<VhostUserI2cBackend>>;

    fn name(&self) -> String {
        self.name.clone()
    }

    fn backend(&mut self) -> Result<Self::Backend, DaemonError> {
        Ok(self.backend.clone())
    }

    fn ended(&mut self) {
        self.backend
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .disconnected();
    }
}
