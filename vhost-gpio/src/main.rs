// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `vhost-gpio`: serve simulated GPIO lines to guests over vhost-user, and
//! `vhost-gpio ctl`: talk to a running instance's control socket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::thread;

use clap::{Args, Parser, Subcommand};
use common::wp::WpWriter;

use vhost_gpio::config::{Config, RawConfig};
use vhost_gpio::control::{spawn_server, ControlClient, ControlError};
use vhost_gpio::device::Device;
use vhost_gpio::serve::{bind, serve_forever};

/// A virtio-gpio vhost-user backend with simulated lines.
///
/// Start it, then point QEMU at the socket with
/// `-chardev socket,id=gpio0,path=SOCK -device vhost-user-gpio-pci,chardev=gpio0`
/// (guest memory must be shared: memory-backend-memfd with share=on).
#[derive(Parser, Debug)]
#[command(
    version,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// vhost-user socket path. With --socket-count N > 1 the device index
    /// 0..N-1 is appended (gpio.sock -> gpio.sock0, gpio.sock1, ...); with one
    /// socket the path is used exactly as given.
    #[arg(long, required = true)]
    socket_path: Option<PathBuf>,

    /// Number of independent devices, one per socket, served concurrently.
    #[arg(long, default_value_t = 1)]
    socket_count: usize,

    /// The lines: a count N (named gpio0..gpio<N-1>, pulled down) or a
    /// comma list of name[:up|:down|:none]. Default pull: down; the --wp-line
    /// defaults to up. A line pulled none reads 0 when undriven.
    #[arg(long, required = true)]
    lines: Option<String>,

    /// Control socket path (line protocol; see `vhost-gpio ctl --help`).
    /// Suffixed like --socket-path when --socket-count > 1.
    #[arg(long)]
    control_socket: Option<PathBuf>,

    /// Line (name or index) whose effective level is published to --wp-state.
    #[arg(long, requires = "wp_state")]
    wp_line: Option<String>,

    /// WP state file shared with vhost-i2c-eeprom. Suffixed like
    /// --socket-path when --socket-count > 1.
    #[arg(long, requires = "wp_line")]
    wp_state: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send one command to a running vhost-gpio's control socket and print the
    /// answer. Commands: list | get LINE | set LINE 0|1 | clear LINE | watch | help.
    Ctl {
        /// The control socket of the running vhost-gpio.
        #[arg(long)]
        control_socket: PathBuf,
        /// With `watch`: exit after this many events.
        #[arg(long)]
        max_events: Option<u64>,
        /// The command and its arguments.
        #[arg(required = true, num_args = 1.., trailing_var_arg = true)]
        command: Vec<String>,
    },
}

fn run_ctl(
    path: &std::path::Path,
    words: &[String],
    max_events: Option<u64>,
) -> Result<(), ControlError> {
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

fn serve(args: ServeArgs) -> Result<(), String> {
    let raw = RawConfig {
        socket_path: args.socket_path.ok_or("--socket-path is required")?,
        socket_count: args.socket_count,
        lines: args.lines.ok_or("--lines is required")?,
        control_socket: args.control_socket,
        wp_line: args.wp_line,
        wp_state: args.wp_state,
    };
    let config = Config::try_from(raw).map_err(|e| error_chain(&e))?;
    let mut workers = Vec::new();
    for (i, dev) in config.devices.iter().enumerate() {
        let wp = match &dev.wp {
            Some(wp) => {
                let pull = dev
                    .lines
                    .get(usize::from(wp.line))
                    .map(|l| l.pull)
                    .ok_or("WP line out of range")?;
                let writer = WpWriter::open(&wp.state, pull).map_err(|e| error_chain(&e))?;
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
            Device::new(&format!("gpio{i}"), &dev.lines, wp).map_err(|e| error_chain(&e))?,
        );
        let listener = bind(&dev.socket).map_err(|e| error_chain(&e))?;
        if let Some(ctl) = &dev.control {
            spawn_server(ctl, device.clone()).map_err(|e| error_chain(&e))?;
            log::info!("device {i}: control socket {}", ctl.display());
        }
        log::info!(
            "device {i}: {} line(s) on {}",
            dev.lines.len(),
            dev.socket.display()
        );
        let handle = thread::Builder::new()
            .name(format!("gpio{i}"))
            .spawn(move || serve_forever(listener, device))
            .map_err(|e| format!("starting device thread: {e}"))?;
        workers.push(handle);
    }
    for w in workers {
        if w.join().is_err() {
            return Err("a device thread panicked".into());
        }
    }
    Ok(())
}

/// An error with its sources, one per "because".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Ctl {
            control_socket,
            max_events,
            command,
        }) => run_ctl(&control_socket, &command, max_events).map_err(|e| error_chain(&e)),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vhost-gpio: {e}");
            ExitCode::FAILURE
        }
    }
}
