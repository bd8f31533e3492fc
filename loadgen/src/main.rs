//! `shoal-loadgen`: a load generator and console client for any MQTT 3.1.1 / 5.0
//! broker, written on `shoal-core`'s codec.
//!
//! This file is the command line only: it parses flags into a [`scenario::Plan`] and
//! [`engine::Settings`] (load scenarios), or hands over to [`console`] (`pub`/`sub`) or
//! [`sink`] (a trivial broker for measuring the load generator itself). Errors are
//! printed as `error: <message>` with their causes, and exit non-zero.
//!
//! Layout: `client` (the MQTT client), `engine` (threads and event loops), `scenario`
//! (what each scenario opens), `payload` (stamps and sequence checks), `rate` (pacing),
//! `report` (histogram, summary, JSON), `procstat` (broker CPU/RSS), `sys` (rlimit).

mod client;
mod console;
mod engine;
mod payload;
mod procstat;
mod rate;
mod report;
mod scenario;
mod sink;
mod sys;
mod tls;
mod ws;

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use shoal_core::{ProtocolVersion, QoS};

use client::{ClientConfig, Endpoint, TlsTarget, Transport, WsTarget};
use scenario::{Plan, Scenario, Sizes};

#[derive(Debug, Parser)]
#[command(
    name = "shoal-loadgen",
    version,
    about = "Load generator and console client for any MQTT 3.1.1 / 5.0 broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N publisher/subscriber pairs, one topic each (--pairs, default 16).
    Pairs(LoadArgs),
    /// P publishers to S subscribers on one topic (default 1 → 100).
    Fanout(LoadArgs),
    /// P publishers on their own topics to one wildcard subscriber (default 100 → 1).
    Fanin(LoadArgs),
    /// P publishers to a `$share/<group>/...` group of S subscribers (default 4 → 4).
    Shared(LoadArgs),
    /// Open C connections (--connections, default 1000) at --conn-rate and hold them.
    Conn(LoadArgs),
    /// One publisher at a fixed --rate (default 10000/s) to one subscriber; latency.
    Latency(LoadArgs),
    /// Publish messages from the command line, a file or stdin.
    Pub(console::PubArgs),
    /// Subscribe and print messages.
    Sub(console::SubArgs),
    /// A trivial broker that acknowledges and discards everything (for measuring the
    /// load generator's own ceiling).
    #[command(hide = true)]
    Sink(sink::SinkArgs),
}

/// Where the broker is and how to log in; shared by every command.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port [default: 1883, with TLS 8883].
    #[arg(short = 'p', long)]
    port: Option<u16>,
    /// Broker URL (overrides --host/--port): `mqtt://host:port`, `mqtts://host:port`,
    /// `ws://host:port/path` or `wss://host:port/path` (path default `/mqtt`).
    #[arg(long)]
    url: Option<String>,
    /// Use TLS (implied by mqtts://, wss://, --cafile, --cert, --key and --insecure).
    #[arg(long)]
    tls: bool,
    /// User name.
    #[arg(short = 'u', long)]
    username: Option<String>,
    /// Password.
    #[arg(short = 'P', long)]
    password: Option<String>,
    /// Protocol version: 3.1.1 or 5.
    #[arg(short = 'V', long, default_value = "3.1.1", value_parser = parse_protocol)]
    protocol: ProtocolVersion,
    /// Keep Alive, seconds (0 disables).
    #[arg(short = 'k', long, default_value_t = 60)]
    keep_alive: u16,
    /// PEM file of CA certificates to verify the broker with (TLS; default: the
    /// system bundle).
    #[arg(long)]
    cafile: Option<std::path::PathBuf>,
    /// PEM client certificate chain, for mutual TLS (with --key).
    #[arg(long)]
    cert: Option<std::path::PathBuf>,
    /// PEM client private key, for mutual TLS (with --cert).
    #[arg(long)]
    key: Option<std::path::PathBuf>,
    /// TLS without verifying the broker's certificate (self-signed test brokers only).
    #[arg(long)]
    insecure: bool,
}

impl ConnArgs {
    /// The broker endpoint and its transport.
    fn endpoint(&self) -> Result<Endpoint> {
        let tls = self.tls
            || self.cafile.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.insecure;
        let mut endpoint = match &self.url {
            Some(url) => Endpoint::parse_url(url)?,
            None => {
                let port = self.port.unwrap_or(if tls { 8883 } else { 1883 });
                Endpoint::tcp(self.host.clone(), port)
            }
        };
        endpoint.tls |= tls;
        Ok(endpoint)
    }

    /// The TLS and WebSocket layers `endpoint` asks for, with their settings loaded.
    fn transport(&self, endpoint: &Endpoint) -> Result<Transport> {
        let tls = if endpoint.tls {
            let opts = tls::TlsOptions {
                cafile: self.cafile.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
                insecure: self.insecure,
            };
            Some(TlsTarget {
                config: tls::client_config(&opts)?,
                server_name: tls::server_name(&endpoint.host)?,
            })
        } else {
            None
        };
        let ws = endpoint.ws_path.as_ref().map(|path| WsTarget {
            host: if endpoint.host.contains(':') {
                format!("[{}]:{}", endpoint.host, endpoint.port)
            } else {
                format!("{}:{}", endpoint.host, endpoint.port)
            },
            path: path.clone(),
        });
        Ok(Transport { tls, ws })
    }

    /// CONNECT settings with this login, a clean session and the given client id.
    fn client_config(&self, client_id: String) -> ClientConfig {
        let mut c = ClientConfig::new(self.protocol, client_id);
        c.keep_alive = self.keep_alive;
        c.username = self.username.clone();
        c.password = self.password.clone().map(Bytes::from);
        c
    }
}

fn parse_protocol(s: &str) -> Result<ProtocolVersion, String> {
    match s {
        "3.1.1" | "311" | "4" => Ok(ProtocolVersion::V3_1_1),
        "5" | "5.0" => Ok(ProtocolVersion::V5),
        "3.1" | "31" | "3" => Ok(ProtocolVersion::V3_1),
        _ => Err(format!("unknown protocol version {s:?} (expected 3.1.1 or 5)")),
    }
}

fn parse_qos(s: &str) -> Result<QoS, String> {
    s.parse::<u8>()
        .ok()
        .and_then(QoS::from_bits)
        .ok_or_else(|| format!("QoS must be 0, 1 or 2, not {s:?}"))
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("not a number of seconds: {s:?}"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("not a duration: {s:?}"))
}

/// Flags of the load scenarios.
#[derive(Debug, Clone, Args)]
struct LoadArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Publisher/subscriber pairs (pairs, latency).
    #[arg(long)]
    pairs: Option<u32>,
    /// Publishers (fanout, fanin, shared).
    #[arg(long)]
    publishers: Option<u32>,
    /// Subscribers (fanout, fanin, shared).
    #[arg(long)]
    subscribers: Option<u32>,
    /// Connections to open (conn).
    #[arg(short = 'c', long)]
    connections: Option<u32>,
    /// QoS of publishes and subscriptions.
    #[arg(short = 'q', long, default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Payload bytes per message (at least 24: the stamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Total publish rate over all publishers, msgs/s (default unlimited; latency: 10000).
    #[arg(long)]
    rate: Option<f64>,
    /// Unacknowledged QoS 1/2 publishes per publisher.
    #[arg(long, default_value_t = 100)]
    inflight: u32,
    /// Measured window, seconds (conn: how long to hold the connections).
    #[arg(short = 'd', long, default_value = "10", value_parser = parse_secs)]
    duration: Duration,
    /// Publishing before the measured window, seconds.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    warmup: Duration,
    /// Longest wait for in-flight messages once publishing stops, seconds.
    #[arg(long, default_value = "3", value_parser = parse_secs)]
    drain: Duration,
    /// Start with a clean session (the default).
    #[arg(long, conflicts_with = "persistent")]
    clean: bool,
    /// Keep sessions (clean start off; MQTT 5 session expiry --session-expiry).
    #[arg(long)]
    persistent: bool,
    /// MQTT 5 Session Expiry Interval with --persistent, seconds.
    #[arg(long, default_value_t = 60)]
    session_expiry: u32,
    /// Client id prefix; a per-run tag and the role/index follow it.
    #[arg(long, default_value = "lg-")]
    client_id_prefix: String,
    /// Topic prefix; a per-run tag follows it so runs do not see each other.
    #[arg(long, default_value = "shoal-lg")]
    topic_prefix: String,
    /// Shared-subscription group name (shared).
    #[arg(long, default_value = "lg")]
    group: String,
    /// Local source addresses to connect from, round-robin (for more than ~28k
    /// connections), e.g. 127.0.0.2,127.0.0.3.
    #[arg(long, value_delimiter = ',')]
    bind: Vec<IpAddr>,
    /// Connection attempts per second (default unlimited).
    #[arg(long)]
    conn_rate: Option<f64>,
    /// Longest one connection may take to be established, seconds.
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    connect_timeout: Duration,
    /// Load threads (default 2: publishers and subscribers apart; conn: 1).
    #[arg(long)]
    threads: Option<usize>,
    /// Broker process id: report its CPU seconds and RSS over the measured window.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Print one JSON result object on stdout instead of the text summary.
    #[arg(long)]
    json: bool,
    /// Progress every second even when stderr is not a terminal.
    #[arg(long, conflicts_with = "quiet")]
    progress: bool,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

fn run_load(scenario: Scenario, a: LoadArgs) -> Result<()> {
    let endpoint = a.conn.endpoint()?;
    let addr = endpoint.resolve()?;
    let transport = a.conn.transport(&endpoint)?;
    if scenario != Scenario::Conn && a.payload < payload::STAMP_BYTES {
        bail!(
            "--payload must be at least {} bytes (the stamp each message carries)",
            payload::STAMP_BYTES
        );
    }
    if a.inflight == 0 || a.inflight > 65_535 {
        bail!("--inflight must be between 1 and 65535");
    }
    if matches!(a.rate, Some(r) if r.is_nan() || r <= 0.0) {
        bail!("--rate must be above 0");
    }
    match sys::raise_fd_limit() {
        Ok(limit) if scenario == Scenario::Conn => {
            let want = u64::from(a.connections.unwrap_or(1000)) + 64;
            if limit < want {
                eprintln!("warning: open-file limit is {limit}; {want} needed for this run");
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!("warning: cannot raise the open-file limit: {e}"),
    }
    let tag = run_tag();
    let plan = Plan::build(
        scenario,
        Sizes {
            pairs: a.pairs,
            publishers: a.publishers,
            subscribers: a.subscribers,
            connections: a.connections,
        },
        &format!("{}/{tag}", a.topic_prefix),
        &format!("{}{tag}-", a.client_id_prefix),
        &a.group,
    )?;
    let rate = match (scenario, a.rate) {
        (Scenario::Latency, None) => Some(10_000.0),
        (_, r) => r,
    };
    let mut client = a.conn.client_config(String::new());
    if a.persistent {
        client.clean_start = false;
        client.session_expiry = Some(a.session_expiry);
    }
    let threads = a.threads.unwrap_or(if scenario == Scenario::Conn { 1 } else { 2 });
    let settings_json = json!({
        "broker": endpoint.url(),
        "protocol": a.conn.protocol.to_string(),
        "qos": a.qos.bits(),
        "payload": a.payload,
        "rate": rate,
        "inflight": a.inflight,
        "duration_secs": a.duration.as_secs_f64(),
        "warmup_secs": a.warmup.as_secs_f64(),
        "publishers": plan.publishers,
        "subscribers": plan.subscribers,
        "connections": plan.conns.len(),
        "clean_start": client.clean_start,
        "threads": threads,
    });
    let settings = engine::Settings {
        addr,
        transport,
        bind: a.bind.clone(),
        source_port_offset: source_port_offset(),
        client,
        qos: a.qos,
        payload: a.payload.max(payload::STAMP_BYTES),
        rate,
        inflight: a.inflight,
        duration: a.duration,
        warmup: a.warmup,
        drain: a.drain,
        conn_rate: a.conn_rate.filter(|r| *r > 0.0),
        connect_timeout: a.connect_timeout,
        threads,
        broker_pid: a.broker_pid,
        progress: !a.quiet && (a.progress || engine::stderr_is_tty()),
    };
    let summary = engine::run(plan, settings, settings_json)?;
    if a.json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.to_text());
    }
    Ok(())
}

/// A start for this run's explicit source ports (see `engine::SOURCE_PORTS`), from the
/// clock: consecutive runs start far apart.
fn source_port_offset() -> u16 {
    let span = u128::from(engine::SOURCE_PORTS.end - engine::SOURCE_PORTS.start);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    u16::try_from(nanos % span).unwrap_or(0)
}

/// A short tag unique to this run, so concurrent or repeated runs against one broker use
/// different topics and client ids.
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}", (std::process::id() ^ nanos) & 0xFFFFF)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Pairs(a) => run_load(Scenario::Pairs, a),
        Command::Fanout(a) => run_load(Scenario::Fanout, a),
        Command::Fanin(a) => run_load(Scenario::Fanin, a),
        Command::Shared(a) => run_load(Scenario::Shared, a),
        Command::Conn(a) => run_load(Scenario::Conn, a),
        Command::Latency(a) => run_load(Scenario::Latency, a),
        Command::Pub(a) => console::run_pub(a).context("pub"),
        Command::Sub(a) => console::run_sub(a).context("sub"),
        Command::Sink(a) => sink::run(a),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn tls_flags_imply_tls_and_fail_clearly() {
        let cli =
            Cli::try_parse_from(["shoal-loadgen", "pairs", "--cafile", "/no/ca.pem"]).unwrap();
        let Command::Pairs(a) = cli.command else { panic!() };
        let endpoint = a.conn.endpoint().unwrap();
        assert!(endpoint.tls);
        assert_eq!(endpoint.url(), "mqtts://127.0.0.1:8883");
        let e = a.conn.transport(&endpoint).unwrap_err();
        assert_eq!(e.to_string(), "cannot read /no/ca.pem");
        let cli = Cli::try_parse_from(["shoal-loadgen", "conn", "--insecure", "--cert", "c.pem"]);
        let Command::Conn(a) = cli.unwrap().command else { panic!() };
        let e = a.conn.transport(&a.conn.endpoint().unwrap()).unwrap_err();
        assert_eq!(e.to_string(), "--cert and --key go together (mutual TLS needs both)");
    }

    #[test]
    fn protocol_and_qos_parse() {
        assert_eq!(parse_protocol("5"), Ok(ProtocolVersion::V5));
        assert_eq!(parse_protocol("3.1.1"), Ok(ProtocolVersion::V3_1_1));
        assert!(parse_protocol("6").is_err());
        assert_eq!(parse_qos("2"), Ok(QoS::ExactlyOnce));
        assert!(parse_qos("3").is_err());
    }
}
