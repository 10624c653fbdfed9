// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-i2c-eeprom`: command line -> validated config -> one vhost-user
//! daemon per socket, re-created for every frontend connection.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::Duration;

use clap::Parser;
use log::{error, info, warn};
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use vhost_i2c_eeprom::config::{Cli, Config, SocketConfig};
use vhost_i2c_eeprom::model::{At24, Bus, ModelError};
use vhost_i2c_eeprom::storage::{Image, StorageError};
use vhost_i2c_eeprom::vhu::{I2cEepromBackend, WpSource};

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("WP state file")]
    Wp(#[from] common::wp::WpError),
    #[error("{0} exists and is not a socket: refusing to replace it")]
    NotASocket(PathBuf),
    #[error("listening on {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: vhost::vhost_user::Error,
    },
    #[error("starting the server thread for {path}")]
    Thread {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Backend = Arc<RwLock<I2cEepromBackend>>;

fn listen(path: &Path) -> Result<Listener, MainError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(MainError::NotASocket(path.to_path_buf()));
        }
    }
    Listener::new(path, true).map_err(|source| MainError::Listen {
        path: path.to_path_buf(),
        source,
    })
}

fn open_bus(sock: &SocketConfig, config: &Config) -> Result<Backend, MainError> {
    let mut devices = Vec::new();
    let mut images = Vec::new();
    for e in &sock.eeproms {
        let size = u64::from(e.device.variant.size());
        let (image, contents) = Image::open(&e.file, size, config.sync)?;
        devices.push(At24::new(e.device, contents)?);
        info!(
            "{}: {} at {:#04x}-{:#04x}, page {} B, tWR {} us, WP {}, image {}",
            sock.socket.display(),
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
            let reader = common::wp::WpReader::open(path)?;
            info!("WP follows {}", path.display());
            WpSource::Line(reader)
        }
    };
    Ok(Arc::new(RwLock::new(I2cEepromBackend::new(
        Bus::new(devices)?,
        images,
        wp,
    ))))
}

/// Serve one socket forever: a daemon per frontend connection.
fn serve(path: &Path, backend: Backend, mut listener: Listener) {
    loop {
        let mut daemon = match VhostUserDaemon::new(
            "vhost-i2c-eeprom".to_string(),
            backend.clone(),
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        ) {
            Ok(d) => d,
            Err(e) => {
                error!("{}: creating the daemon failed: {e}", path.display());
                thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        info!("{}: waiting for a frontend", path.display());
        if let Err(e) = daemon.start(&mut listener) {
            error!("{}: accepting a frontend failed: {e}", path.display());
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        info!("{}: frontend connected", path.display());
        match daemon.wait() {
            Ok(())
            | Err(vhost_user_backend::Error::HandleRequest(
                VhostUserError::Disconnected | VhostUserError::PartialMessage,
            )) => info!("{}: frontend disconnected", path.display()),
            Err(e) => warn!("{}: connection ended: {e}", path.display()),
        }
        drop(daemon);
        match backend.write() {
            Ok(mut b) => b.disconnected(),
            Err(poisoned) => poisoned.into_inner().disconnected(),
        }
    }
}

fn run(config: Config) -> Result<(), MainError> {
    // Open everything first: any error ends the process before a socket appears.
    let mut servers = Vec::new();
    for sock in &config.sockets {
        let backend = open_bus(sock, &config)?;
        servers.push((sock.socket.clone(), backend));
    }
    let mut handles = Vec::new();
    for (path, backend) in servers {
        let listener = listen(&path)?;
        let name = format!("i2c-{}", path.display());
        let thread_path = path.clone();
        let handle = thread::Builder::new()
            .name(name)
            .spawn(move || serve(&thread_path, backend, listener))
            .map_err(|source| MainError::Thread { path, source })?;
        handles.push(handle);
    }
    for h in handles {
        if h.join().is_err() {
            error!("a server thread panicked");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let config = match Config::try_from(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vhost-i2c-eeprom: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            eprintln!("vhost-i2c-eeprom: {msg}");
            ExitCode::FAILURE
        }
    }
}
