//! Broker configuration: the only place that reads config files, and the only place
//! that knows every setting.
//!
//! A TOML file is parsed into a raw, serde-shaped `FileConfig` (in `file.rs`)
//! (unknown keys refused), then validated into a typed [`Config`] with every default
//! resolved. Errors name the file, the line and the key. The CLI overrides
//! (`--listen`, `--workers`, `--in-memory`, `--data-dir`) are applied by `main.rs` on
//! the typed `Config`.
//! Components never see the whole `Config`: the worker gets [`Limits`] and
//! [`BrokerLimits`] at construction.

mod admin;
mod file;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_core::Limits;

use crate::admin::AdminSettings;
use crate::auth::rate::PublishRateSettings;
use crate::auth::FileAuthSettings;
use crate::tls::{TlsSettings, UsernameFrom};

/// Default bind address when nothing is configured: loopback only, so that a broker
/// started by accident is not reachable from the network.
pub const DEFAULT_BIND: &str = "127.0.0.1:1883";

/// Where the durable store lives when nothing is configured (relative to the working
/// directory).
pub const DEFAULT_DATA_DIR: &str = "./shoal-data";

/// The durable store (issue 7): on by default, so that acknowledged messages, sessions
/// and retained messages survive a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistenceConfig {
    /// Write sessions, queues, in-flight state and retained messages to disk. When
    /// false, everything lives in memory only and a restart starts empty.
    pub enabled: bool,
    /// Directory of the store file (`shoal.redb`); created at start if missing.
    pub data_dir: PathBuf,
    /// Bytes of records submitted to the store and not yet committed, over all
    /// workers, before workers stop reading publishers that need the store
    /// (`limits.max_store_queue_bytes`).
    pub queue_bytes: u64,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            queue_bytes: crate::persist::DEFAULT_QUEUE_BYTES,
        }
    }
}

/// The transport a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain MQTT over TCP.
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl Transport {
    /// Whether the transport runs over TLS (and so needs a certificate).
    pub const fn is_tls(self) -> bool {
        matches!(self, Self::Tls | Self::Wss)
    }

    /// Whether the transport is WebSocket.
    pub const fn is_ws(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
        })
    }
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Address to bind; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Transport spoken on it.
    pub transport: Transport,
    /// Certificate, key and client-certificate policy; `Some` exactly for `tls` and `wss`.
    pub tls: Option<TlsSettings>,
    /// Which part of a verified client certificate becomes the connection's
    /// certificate username (`None`: the certificate names nobody).
    pub username_from: Option<UsernameFrom>,
    /// HTTP path of the WebSocket endpoint (`ws` and `wss` only).
    pub ws_path: String,
    /// Whether every connection starts with a PROXY protocol v1 or v2 header, whose
    /// source address then stands for the client.
    pub proxy_protocol: bool,
    /// Most connections open at once on this listener (`None`: only the broker-wide
    /// `limits.max_connections` applies).
    pub max_connections: Option<usize>,
}

impl ListenerConfig {
    /// A plain TCP listener with every option at its default.
    pub fn tcp(bind: SocketAddr) -> Self {
        Self {
            bind,
            transport: Transport::Tcp,
            tls: None,
            username_from: None,
            ws_path: crate::ws::DEFAULT_WS_PATH.to_owned(),
            proxy_protocol: false,
            max_connections: None,
        }
    }
}

/// Default of `limits.max_held_bytes`: a client's publishes waiting for the store.
pub const DEFAULT_MAX_HELD_BYTES: usize = 4 * 1024 * 1024;

/// Limits the server enforces outside the protocol state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerLimits {
    /// Most client connections open at once, over all listeners and workers.
    pub max_connections: usize,
    /// Bound on one connection's write buffer, in bytes.
    pub max_outgoing_bytes: usize,
    /// Time a new socket has to send CONNECT.
    pub connect_timeout: Duration,
    /// Largest keep-alive a client may ask for; larger requests are lowered (v5 tells the
    /// client with Server Keep Alive; 3.x clients get the timeout enforced at this value).
    pub max_keep_alive_secs: u16,
    /// New connections a second one client address may open; 0 for no limit.
    pub max_connection_rate_per_ip: u64,
    /// Per-client publish limits (each 0 for no limit).
    pub publish_rate: PublishRateSettings,
    /// Bytes of one client's packets whose answers wait for the durable store's
    /// commit (QoS 1/2 PUBLISHes whose PUBACK/PUBREC is held) before it is read no
    /// further until a commit releases them.
    pub max_held_bytes: usize,
}

impl Default for BrokerLimits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_outgoing_bytes: 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            max_keep_alive_secs: u16::MAX,
            max_connection_rate_per_ip: 0,
            publish_rate: PublishRateSettings::default(),
            max_held_bytes: DEFAULT_MAX_HELD_BYTES,
        }
    }
}

/// How a shared subscription group (`$share/{group}/{filter}`) picks the member that
/// gets a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShareStrategy {
    /// Each online member in turn.
    #[default]
    RoundRobin,
    /// An online member at random.
    Random,
    /// The same member while it stays online; then the next one.
    Sticky,
}

/// MQTT 5 and shared-subscription settings (`[mqtt]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MqttSettings {
    /// Member choice of shared subscription groups.
    pub share_strategy: ShareStrategy,
}

/// `[admin]`: the admin HTTP listener, `$SYS` and client lifecycle events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Whether the admin HTTP listener runs (default: no).
    pub enabled: bool,
    /// Bind address, token, `/metrics` protection and the dashboard's WebSocket URL.
    pub settings: AdminSettings,
    /// Seconds between `$SYS` publications; 0 turns `$SYS` off (default 10).
    pub sys_interval_secs: u64,
    /// Whether client lifecycle events are published (default: no).
    pub client_events: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            settings: AdminSettings::default(),
            sys_interval_secs: 10,
            client_events: false,
        }
    }
}

/// The validated broker configuration, every default resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Event-loop threads; at least 1.
    pub workers: usize,
    /// Listeners, at least one.
    pub listeners: Vec<ListenerConfig>,
    /// Protocol limits handed to every session.
    pub limits: Limits,
    /// Server-side limits.
    pub broker_limits: BrokerLimits,
    /// The durable store.
    pub persistence: PersistenceConfig,
    /// MQTT 5 and shared-subscription settings.
    pub mqtt: MqttSettings,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// Password and ACL files (`[auth]`). Relative paths in a config file are taken
    /// relative to the file's directory.
    pub auth: FileAuthSettings,
}

impl Default for Config {
    /// Listens on 127.0.0.1:1883 with one worker per available core.
    fn default() -> Self {
        Self {
            workers: default_workers(),
            listeners: vec![ListenerConfig::tcp(SocketAddr::from(([127, 0, 0, 1], 1883)))],
            limits: Limits::default(),
            broker_limits: BrokerLimits::default(),
            persistence: PersistenceConfig::default(),
            mqtt: MqttSettings::default(),
            admin: AdminConfig::default(),
            auth: FileAuthSettings::default(),
        }
    }
}

/// One worker per available core (1 if that cannot be found out).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML, or a key is unknown or has a value of the wrong type.
    #[error("{origin}:{line}: {key_part}{message}", key_part = key_prefix(key.as_deref()))]
    Syntax {
        /// File name (or other origin) of the text.
        origin: String,
        /// 1-based line of the error.
        line: usize,
        /// The key concerned, when it can be told.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A well-formed value that is not allowed (zero workers, bad address ...).
    #[error("{origin}:{line}: key `{key}`: {message}")]
    Invalid {
        /// File name (or other origin) of the text.
        origin: String,
        /// 1-based line of the value.
        line: usize,
        /// The key concerned.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn key_prefix(key: Option<&str>) -> String {
    key.map(|k| format!("key `{k}`: ")).unwrap_or_default()
}

impl Config {
    /// Parses and validates TOML text; `origin` names it in errors (usually the path).
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] or [`ConfigError::Invalid`], naming line and key.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        file::parse(text, origin)
    }

    /// Reads, parses and validates a TOML config file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] if the file cannot be read, otherwise as
    /// [`Config::from_toml_str`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let mut config = Self::from_toml_str(&text, &path.display().to_string())?;
        if let Some(dir) = path.parent() {
            for file in [&mut config.auth.password_file, &mut config.auth.acl_file] {
                if let Some(f) = file.as_mut().filter(|f| f.is_relative()) {
                    *f = dir.join(&*f);
                }
            }
        }
        Ok(config)
    }
}
