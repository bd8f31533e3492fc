//! `shoal`: the broker binary. Parses the command line, loads the config, starts the
//! broker, prints one `listening on TRANSPORT://ADDR` line per listener, reloads TLS,
//! password and ACL files on SIGHUP, and shuts down gracefully on SIGINT or SIGTERM.
//! `shoal passwd` edits a Mosquitto-compatible password file instead.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal_server::auth::passwd::PasswdCommand;
use shoal_server::config::{ListenerConfig, Transport, DEFAULT_BIND};
use shoal_server::log_output::LogOutput;
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
    /// Keep everything in memory: no data directory, nothing survives a restart.
    #[arg(long, conflicts_with = "data_dir")]
    in_memory: bool,
    /// Directory of the durable store (default ./shoal-data); turns persistence on.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or update a password file (the format of mosquitto_passwd).
    Passwd(PasswdArgs),
    /// Validate a config file: exit 0 if it is good, else print the file, line and key
    /// of the first error and exit 1.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
}

/// `shoal passwd [-c | -D] [-b] FILE USER [PASSWORD]`, as mosquitto_passwd.
#[derive(Debug, clap::Args)]
struct PasswdArgs {
    /// Create a new password file, replacing an existing one.
    #[arg(short = 'c', conflicts_with = "delete")]
    create: bool,
    /// Delete USER instead of setting a password.
    #[arg(short = 'D')]
    delete: bool,
    /// Batch mode: take PASSWORD from the command line (visible to other local users in
    /// the process list; prefer piping it on standard input).
    #[arg(short = 'b', requires = "password")]
    batch: bool,
    /// The password file.
    file: PathBuf,
    /// The username.
    user: String,
    /// The password (with -b only). Without -b it is read from standard input.
    password: Option<String>,
}

fn main() -> ExitCode {
    init_log();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Passwd(ref args)) => passwd(args),
        Some(Command::CheckConfig { ref file }) => check_config(file),
        None => run(cli),
    };
    match result {
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

/// `RUST_LOG` filtering (default `info`), one line per record on standard error.
///
/// To a terminal: env_logger's own writer and colours. Otherwise (a file, a pipe, a
/// service manager's journal) the lines go through [`LogOutput`], which lets workers
/// write theirs once per event-loop iteration, in env_logger's default layout without
/// colour codes; `WriteStyle::Always` only spares env_logger's scan for colour codes to
/// strip, as this format writes none.
fn init_log() {
    use std::io::IsTerminal;
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if !std::io::stderr().is_terminal() {
        builder
            .target(env_logger::Target::Pipe(Box::new(LogOutput)))
            .write_style(env_logger::WriteStyle::Always)
            .format(|buf, record| {
                let ts = buf.timestamp_seconds();
                writeln!(buf, "[{ts} {:<5} {}] {}", record.level(), record.target(), record.args())
            });
    }
    builder.init();
}

/// An error and its causes on one line, for the log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn check_config(file: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_file(file)?;
    println!(
        "{}: ok ({} listener(s), {} workers, admin listener {})",
        file.display(),
        config.listeners.len(),
        config.workers,
        if config.admin.enabled { "on" } else { "off" }
    );
    Ok(())
}

fn passwd(args: &PasswdArgs) -> Result<(), Box<dyn std::error::Error>> {
    let password = if args.delete {
        None
    } else if args.batch {
        args.password.clone()
    } else if args.password.is_some() {
        return Err("a password on the command line needs -b".into());
    } else {
        Some(read_password()?)
    };
    let command = PasswdCommand {
        file: args.file.clone(),
        user: args.user.clone(),
        create: args.create,
        delete: args.delete,
        password,
    };
    command.run()?;
    Ok(())
}

/// The first line of standard input. A terminal is refused: without turning echo off
/// the password would show on screen.
fn read_password() -> Result<String, Box<dyn std::error::Error>> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Err("interactive password entry is not supported yet: use -b FILE USER \
                    PASSWORD, or pipe the password on standard input"
            .into());
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err("no password on standard input".into());
    }
    Ok(password.to_owned())
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if !cli.listen.is_empty() {
        config.listeners = cli.listen.iter().map(|&bind| ListenerConfig::tcp(bind)).collect();
    } else if cli.config.is_none() {
        log::info!(
            "no config file: listening on {DEFAULT_BIND} (loopback only); \
             use --listen 0.0.0.0:1883 or a config file to accept remote clients"
        );
    }
    if let Some(w) = cli.workers {
        config.workers = usize::from(w);
    }
    if cli.in_memory {
        config.persistence.enabled = false;
    }
    if let Some(dir) = cli.data_dir {
        config.persistence.enabled = true;
        config.persistence.data_dir = dir;
    }
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])?;
    let transports: Vec<Transport> = config.listeners.iter().map(|l| l.transport).collect();
    let workers = config.workers;
    let broker = Broker::start(config)?;
    let mut out = std::io::stdout().lock();
    for (addr, transport) in broker.local_addrs().iter().zip(transports) {
        writeln!(out, "listening on {transport}://{addr}")?;
    }
    if let Some(addr) = broker.admin_addr() {
        writeln!(out, "admin on http://{addr}")?;
    }
    out.flush()?;
    drop(out);
    log::info!("shoal {} started with {workers} workers", env!("CARGO_PKG_VERSION"));
    let mut signals = signals;
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGHUP {
            log::info!("SIGHUP received: reloading");
            for e in broker.reload() {
                log::error!("reload: {}", error_chain(&e));
            }
            continue;
        }
        log::info!("signal {sig} received: shutting down");
        break;
    }
    broker.shutdown()?;
    log::info!("shutdown complete");
    Ok(())
}
