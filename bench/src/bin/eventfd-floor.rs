// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `eventfd-floor`: the cheapest possible vhost-user-shaped round trip, one kick and one call
//! over eventfds with epoll between two processes and no virtio work, to measure a backend's
//! depth-1 round trip against (`vhost-bench --floor` runs it in the same run).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;
use vhost_bench::floor::{serve, Floor, FloorError};
use vhost_bench::stats::{self, ProcSample, RunResult};

/// Measure the floor under a vhost-user round trip at depth 1: this process writes a kick
/// eventfd and sleeps in epoll_wait on a call eventfd; a server process it starts (this
/// program with --serve) sleeps in epoll_wait on the kick, reads it and writes the call.
/// Prints round trips per second, p50/p99/max and both sides' CPU per round trip.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Unmeasured warm-up, milliseconds.
    #[arg(long, default_value_t = 200)]
    warmup_ms: u64,
    /// Write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Be the server half, connecting to this socket (the client starts it so).
    #[arg(long, value_name = "SOCKET")]
    serve: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Floor(#[from] FloorError),
    #[error("--seconds {0}: more than 0, at most 3600")]
    Seconds(f64),
    #[error("cannot find this program's own path: {0}")]
    SelfPath(#[source] std::io::Error),
    #[error("temporary directory: {0}")]
    TempDir(#[source] std::io::Error),
    #[error("--pid: {0}")]
    Proc(#[from] stats::ProcError),
    #[error("writing {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Serialize)]
struct Report {
    tool: &'static str,
    version: &'static str,
    runs: Vec<RunResult>,
}

fn measure(cli: &Cli) -> Result<RunResult, Error> {
    if !(cli.seconds > 0.0 && cli.seconds <= 3600.0) {
        return Err(Error::Seconds(cli.seconds));
    }
    let me = std::env::current_exe().map_err(Error::SelfPath)?;
    let dir = tempfile::Builder::new()
        .prefix("eventfd-floor-")
        .tempdir()
        .map_err(Error::TempDir)?;
    let mut floor = Floor::start(&me, dir.path())?;
    floor.run(
        Instant::now() + Duration::from_millis(cli.warmup_ms.min(60_000)),
        false,
    )?;
    let before = ProcSample::read(floor.pid())?;
    let own = stats::own_cpu_seconds();
    let start = Instant::now();
    let tally = floor.run(start + Duration::from_secs_f64(cli.seconds), true)?;
    let elapsed = start.elapsed();
    let own = stats::own_cpu_seconds() - own;
    let after = ProcSample::read(floor.pid())?;
    Ok(stats::result(
        "eventfd-floor",
        1,
        1,
        tally,
        elapsed,
        Some(before),
        Some(after),
    )
    .with_own_cpu(own))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(sock) = &cli.serve {
        return match serve(sock) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("eventfd-floor --serve: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let result = measure(&cli).and_then(|r| {
        let cpu = r.backend.map_or_else(
            || "-".to_string(),
            |b| format!("{:.2}", b.cpu_us_per_request),
        );
        println!(
            "{:<14} {:>9} {:>10} {:>9} {:>9} {:>9} {:>16} {:>16}",
            "workload",
            "requests",
            "req/s",
            "p50 us",
            "p99 us",
            "max us",
            "server cpu us/rt",
            "client cpu us/rt"
        );
        println!(
            "{:<14} {:>9} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>16} {:>16.2}",
            r.workload,
            r.requests,
            r.requests_per_second,
            r.p50_us,
            r.p99_us,
            r.max_us,
            cpu,
            r.frontend_cpu_us_per_request
        );
        if let Some(path) = &cli.json {
            let report = Report {
                tool: "eventfd-floor",
                version: env!("CARGO_PKG_VERSION"),
                runs: vec![r],
            };
            let mut text = serde_json::to_string_pretty(&report).unwrap_or_default();
            text.push('\n');
            std::fs::write(path, text).map_err(|source| Error::Json {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eventfd-floor: {e}");
            ExitCode::FAILURE
        }
    }
}
