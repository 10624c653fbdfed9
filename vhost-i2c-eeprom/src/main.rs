// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-i2c-eeprom`: command line -> validated config -> one vhost-user
//! daemon per socket, re-created for every frontend connection.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use common::daemon::{
    print_capabilities, report, serve_until_terminated, DaemonError, Termination,
};
use common::wp::{WpError, WpReader};
use log::info;

use vhost_i2c_eeprom::config::{Cli, Config, ConfigError, SocketConfig};
use vhost_i2c_eeprom::model::{At24, Bus, ModelError};
use vhost_i2c_eeprom::serve::I2cConnections;
use vhost_i2c_eeprom::storage::{Image, StorageError};
use vhost_i2c_eeprom::vhu::{VhostUserI2cBackend, WpSource};

/// Why `vhost-i2c-eeprom` could not serve.
#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("invalid command line")]
    Config(#[source] ConfigError),
    #[error("bus {name}")]
    Bus {
        name: String,
        #[source]
        source: BusError,
    },
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// What went wrong with one bus.
#[derive(Debug, thiserror::Error)]
enum BusError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Wp(#[from] WpError),
    #[error(transparent)]
    Socket(#[from] DaemonError),
}

fn bus_err(name: &str) -> impl FnOnce(BusError) -> MainError + '_ {
    move |source| MainError::Bus {
        name: name.to_string(),
        source,
    }
}

type Backend = Arc<RwLock<VhostUserI2cBackend>>;

fn open_bus(sock: &SocketConfig, config: &Config) -> Result<Backend, BusError> {
    let name = sock.socket.to_string();
    let mut devices = Vec::new();
    let mut images = Vec::new();
    for e in &sock.eeproms {
        let size = u64::from(e.device.variant.size());
        let (image, contents) = Image::open(&e.file, size, config.sync)?;
        devices.push(At24::new(e.device, contents)?);
        info!(
            "{name}: {} at {:#04x}-{:#04x}, page {} B, tWR {} us, WP {}, image {}",
            e.device.variant,
            e.device.addr,
            e.device.last_addr(),
            e.device.page,
            e.device.twr.as_micros(),
            e.device.wp,
            e.file.display()
        );
        images.push(image);
    }
    let wp = match &sock.wp_state {
        None => WpSource::NotWired,
        Some(path) => {
            let reader = WpReader::open(path)?;
            info!("{name}: WP follows {}", path.display());
            WpSource::Line(reader)
        }
    };
    let bus = Bus::new(devices)?;
    Ok(Arc::new(RwLock::new(VhostUserI2cBackend::new(
        bus, images, wp,
    ))))
}

fn run(config: Config) -> Result<(), MainError> {
    // Caught before any socket appears: a stop at any moment is a clean exit.
    let termination = Termination::catch()?;
    // Open everything first: any error ends the process before a socket appears.
    let mut buses = Vec::new();
    for sock in &config.sockets {
        let name = sock.socket.to_string();
        buses.push((
            sock.socket.clone(),
            open_bus(sock, &config).map_err(bus_err(&name))?,
        ));
    }
    let mut servers = Vec::new();
    let mut backends = Vec::new();
    for (socket, backend) in buses {
        let name = socket.to_string();
        let bound = socket
            .open(&config.access)
            .map_err(|e| bus_err(&name)(e.into()))?;
        info!("serving {}", bound.describe());
        let stop = backend
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .stop_flag();
        backends.push((backend.clone(), stop));
        servers.push((bound, I2cConnections::new(socket.to_string(), backend)));
    }
    serve_until_terminated(termination, servers, |_signal| {
        // Stop the workers first (they end their loop at the next chain), then take each
        // bus to flush its images.
        for (_, stop) in &backends {
            stop.store(true, Ordering::Release);
        }
        for (b, _) in &backends {
            b.write().unwrap_or_else(|p| p.into_inner()).shut_down();
        }
    })?;
    Ok(())
}

fn main() -> ExitCode {
    let cli: Cli = common::daemon::start();
    if cli.socket.print_capabilities {
        print_capabilities("i2c");
        return ExitCode::SUCCESS;
    }
    match Config::try_from(cli)
        .map_err(MainError::Config)
        .and_then(run)
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report("vhost-i2c-eeprom", &e),
    }
}
