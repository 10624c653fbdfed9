// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-gpio`: serve simulated GPIO lines to guests over vhost-user, and
//! `vhost-gpio ctl`: talk to a running instance's control socket.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use common::daemon::{
    print_capabilities, report, serve_until_terminated, Bound, DaemonError, Termination,
};
use common::wp::{WpError, WpWriter};

use vhost_gpio::config::{Cli, Command, Config, ConfigError};
use vhost_gpio::control::{spawn_server, ControlClient, ControlError};
use vhost_gpio::device::{Device, DeviceError};
use vhost_gpio::serve::GpioConnections;

/// Why `vhost-gpio` could not serve.
#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("invalid command line")]
    Config(#[source] ConfigError),
    #[error("device {0}")]
    Device(usize, #[source] DeviceError),
    #[error("device {0}")]
    Wp(usize, #[source] WpError),
    #[error("device {0}: vhost-user socket")]
    Socket(usize, #[source] DaemonError),
    #[error("device {0}: control socket")]
    Control(usize, #[source] DaemonError),
    #[error("device {0}: starting the control socket thread")]
    ControlThread(usize, #[source] std::io::Error),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

fn run_ctl(path: &Path, words: &[String], max_events: Option<u64>) -> Result<(), ControlError> {
    let mut client = ControlClient::connect(path)?;
    let cmd = words.join(" ");
    let lines = client.command(&cmd)?;
    for l in &lines {
        println!("{l}");
    }
    if words.first().map(String::as_str) == Some("watch") {
        let mut seen = 0u64;
        while max_events.is_none_or(|m| seen < m) {
            let line = client.next_line()?;
            println!("{line}");
            seen += 1;
        }
    }
    Ok(())
}

fn serve(config: Config) -> Result<(), MainError> {
    // Caught before any socket appears: a stop at any moment is a clean exit.
    let termination = Termination::catch()?;
    let mut devices = Vec::new();
    let mut servers = Vec::new();
    let mut controls = Vec::new();
    for (i, dev) in config.devices.iter().enumerate() {
        let wp = match &dev.wp {
            Some(wp) => {
                let pull = dev
                    .lines
                    .get(usize::from(wp.line))
                    .map(|l| l.pull)
                    .ok_or(MainError::Device(i, DeviceError::WpLine(wp.line)))?;
                let writer = WpWriter::open(&wp.state, pull).map_err(|e| MainError::Wp(i, e))?;
                log::info!(
                    "device {i}: publishing line {} to {} (pull {pull})",
                    wp.line,
                    wp.state.display()
                );
                Some((writer, wp.line))
            }
            None => None,
        };
        let device = Arc::new(
            Device::new(&format!("gpio{i}"), &dev.lines, wp)
                .map_err(|e| MainError::Device(i, e))?,
        );
        let bound = dev
            .socket
            .open(&config.access)
            .map_err(|e| MainError::Socket(i, e))?;
        if let Some(ctl) = &dev.control {
            let ctl_bound =
                Bound::bind(ctl, &config.access).map_err(|e| MainError::Control(i, e))?;
            let listener = ctl_bound
                .listener()
                .try_clone()
                .map_err(|e| MainError::ControlThread(i, e))?;
            spawn_server(listener, device.clone()).map_err(|e| MainError::ControlThread(i, e))?;
            log::info!("device {i}: control socket {}", ctl.display());
            controls.push(ctl_bound);
        }
        log::info!(
            "device {i}: {} line(s) on {}",
            dev.lines.len(),
            bound.describe()
        );
        devices.push(device.clone());
        servers.push((bound, GpioConnections::new(device)));
    }
    serve_until_terminated(termination, servers, |signal| {
        for d in &devices {
            // Closes the serving gate and publishes the WP line's pull.
            d.guest_gone(&format!("{signal}: exiting"));
        }
        for c in &controls {
            c.remove();
        }
    })?;
    Ok(())
}

fn main() -> ExitCode {
    let cli: Cli = common::daemon::start();
    match cli.command {
        Some(Command::Ctl {
            control_socket,
            max_events,
            command,
        }) => match run_ctl(&control_socket, &command, max_events) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report("vhost-gpio ctl", &e),
        },
        None if cli.serve.socket.print_capabilities => {
            print_capabilities("gpio");
            ExitCode::SUCCESS
        }
        None => {
            let result = Config::try_from(cli.serve)
                .map_err(MainError::Config)
                .and_then(serve);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => report("vhost-gpio", &e),
            }
        }
    }
}
