//! `shoal`: the broker binary. Parses the command line, loads the config, starts the
//! broker, prints one `listening on tcp://ADDR` line per listener, and shuts down
//! gracefully on SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shoal_server::config::{ListenerConfig, Transport, DEFAULT_BIND};
use shoal_server::{Broker, Config};

/// Shoal: an MQTT 3.1 / 3.1.1 / 5.0 broker.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about)]
struct Cli {
    /// TOML config file (keys are documented in docs/CONFIG.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on ADDR (TCP); repeatable. Replaces the config file's listeners.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Number of event-loop threads (default: available cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if !cli.listen.is_empty() {
        config.listeners = cli
            .listen
            .iter()
            .map(|&bind| ListenerConfig { bind, transport: Transport::Tcp })
            .collect();
    } else if cli.config.is_none() {
        log::info!(
            "no config file: listening on {DEFAULT_BIND} (loopback only); \
             use --listen 0.0.0.0:1883 or a config file to accept remote clients"
        );
    }
    if let Some(w) = cli.workers {
        config.workers = usize::from(w);
    }
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let transports: Vec<Transport> = config.listeners.iter().map(|l| l.transport).collect();
    let workers = config.workers;
    let broker = Broker::start(config)?;
    let mut out = std::io::stdout().lock();
    for (addr, transport) in broker.local_addrs().iter().zip(transports) {
        writeln!(out, "listening on {transport}://{addr}")?;
    }
    out.flush()?;
    drop(out);
    log::info!("shoal {} started with {workers} workers", env!("CARGO_PKG_VERSION"));
    let mut signals = signals;
    if let Some(sig) = signals.forever().next() {
        log::info!("signal {sig} received: shutting down");
    }
    broker.shutdown()?;
    log::info!("shutdown complete");
    Ok(())
}
