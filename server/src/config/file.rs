//! The raw, serde-shaped config file and its validation into [`Config`].
//!
//! Values that can be wrong beyond their type are wrapped in [`Spanned`] so that a
//! validation error can name the line they are on.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use shoal_core::limits::PROTOCOL_MAX_PACKET_BYTES;
use shoal_core::Limits;
use toml::Spanned;

use crate::auth::FileAuthSettings;

use super::{
    default_workers, BrokerLimits, Config, ConfigError, ListenerConfig, MqttSettings,
    PersistenceConfig, ShareStrategy, Transport,
};
use crate::tls::{ClientCerts, TlsError, TlsSettings, UsernameFrom};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    workers: Option<Spanned<i64>>,
    #[serde(default)]
    listener: Vec<FileListener>,
    limits: Option<FileLimits>,
    persistence: Option<bool>,
    data_dir: Option<Spanned<String>>,
    mqtt: Option<FileMqtt>,
    admin: Option<super::admin::FileAdmin>,
    auth: Option<FileAuthTable>,
}

/// The `[mqtt]` table; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMqtt {
    shared_subscription_strategy: Option<Spanned<String>>,
    topic_alias_maximum: Option<Spanned<i64>>,
}

/// The `[auth]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAuthTable {
    password_file: Option<Spanned<String>>,
    acl_file: Option<Spanned<String>>,
    allow_anonymous: Option<bool>,
}

/// One `[[listener]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileListener {
    bind: Spanned<String>,
    transport: Option<Spanned<String>>,
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    client_certs: Option<Spanned<String>>,
    username_from: Option<Spanned<String>>,
    alpn: Option<Spanned<Vec<String>>>,
    ws_path: Option<Spanned<String>>,
    proxy_protocol: Option<bool>,
    max_connections: Option<Spanned<i64>>,
}

/// The `[limits]` table; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_connections: Option<Spanned<i64>>,
    max_packet_size: Option<Spanned<i64>>,
    max_inflight: Option<Spanned<i64>>,
    max_queued_messages: Option<Spanned<i64>>,
    max_queued_bytes: Option<Spanned<i64>>,
    max_topic_levels: Option<Spanned<i64>>,
    max_subscriptions_per_client: Option<Spanned<i64>>,
    max_outgoing_bytes: Option<Spanned<i64>>,
    connect_timeout_secs: Option<Spanned<i64>>,
    max_keep_alive_secs: Option<Spanned<i64>>,
    max_connection_rate_per_ip: Option<Spanned<i64>>,
    max_publish_rate: Option<Spanned<i64>>,
    max_publish_bytes_rate: Option<Spanned<i64>>,
    max_held_bytes: Option<Spanned<i64>>,
    max_store_queue_bytes: Option<Spanned<i64>>,
}

/// Source text and its name, for turning spans into line numbers.
pub(super) struct Source<'a> {
    text: &'a str,
    pub(super) origin: &'a str,
}

impl Source<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes().get(..end).map_or(1, |b| memchr_count(b'\n', b) + 1)
    }

    pub(super) fn invalid(
        &self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            line: self.line_of(span.start),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// Checks an integer lies in `min..=max` and converts it.
    pub(super) fn int<T: TryFrom<i64>>(
        &self,
        value: &Spanned<i64>,
        key: &str,
        min: i64,
        max: i64,
    ) -> Result<T, ConfigError> {
        let v = *value.get_ref();
        if v < min || v > max {
            return Err(self.invalid(value.span(), key, format!("{v} is not in {min}..={max}")));
        }
        T::try_from(v).map_err(|_| self.invalid(value.span(), key, format!("{v} is out of range")))
    }

    /// The key named on the line holding `offset`: the text before `=`, or a table
    /// header's name.
    fn key_at(&self, offset: usize) -> Option<String> {
        let start = self.text.get(..offset.min(self.text.len()))?.rfind('\n').map_or(0, |i| i + 1);
        let line = self.text.get(start..)?.lines().next()?;
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        (!key.is_empty()).then(|| key.to_owned())
    }
}

fn memchr_count(needle: u8, haystack: &[u8]) -> usize {
    haystack.iter().filter(|&&b| b == needle).count()
}

/// Parses and validates `text`.
pub(super) fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let src = Source { text, origin };
    let raw: FileConfig = toml::from_str(text).map_err(|e| {
        let start = e.span().map_or(0, |s| s.start);
        let message = e.message().to_owned();
        // For an unknown field the span covers the key itself.
        let key = unknown_field(&message).or_else(|| src.key_at(start));
        ConfigError::Syntax { origin: origin.to_owned(), line: src.line_of(start), key, message }
    })?;
    validate(&src, raw)
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(k, _)| k.to_owned())
}

/// Picks one of several words for `key`, or says which are allowed.
fn choice<T: Copy>(
    src: &Source<'_>,
    value: &Spanned<String>,
    key: &str,
    options: &[(&str, T)],
) -> Result<T, ConfigError> {
    let v = value.get_ref();
    options.iter().find(|(name, _)| name == v).map(|&(_, t)| t).ok_or_else(|| {
        let names: Vec<String> = options.iter().map(|(n, _)| format!("`{n}`")).collect();
        src.invalid(value.span(), key, format!("`{v}` is not one of {}", names.join(", ")))
    })
}

fn validate_listener(src: &Source<'_>, l: &FileListener) -> Result<ListenerConfig, ConfigError> {
    let bind: SocketAddr = l.bind.get_ref().parse().map_err(|_| {
        src.invalid(
            l.bind.span(),
            "listener.bind",
            format!("`{}` is not an address like 127.0.0.1:1883", l.bind.get_ref()),
        )
    })?;
    let mut listener = ListenerConfig::tcp(bind);
    let here = l.bind.span();
    if let Some(t) = &l.transport {
        let options = [
            ("tcp", Transport::Tcp),
            ("tls", Transport::Tls),
            ("ws", Transport::Ws),
            ("wss", Transport::Wss),
        ];
        listener.transport = choice(src, t, "listener.transport", &options)?;
    }
    let transport = listener.transport;
    // TLS keys on a listener without TLS are refused rather than ignored: the user
    // believes the port is encrypted.
    let tls_keys = [
        (&l.cert_file, "listener.cert_file"),
        (&l.key_file, "listener.key_file"),
        (&l.ca_file, "listener.ca_file"),
        (&l.client_certs, "listener.client_certs"),
        (&l.username_from, "listener.username_from"),
    ];
    if !transport.is_tls() {
        if let Some((v, key)) = tls_keys.iter().find_map(|(v, k)| v.as_ref().map(|v| (v, k))) {
            let msg = format!("only for `tls` and `wss` listeners (this one is `{transport}`)");
            return Err(src.invalid(v.span(), key, msg));
        }
        if let Some(a) = &l.alpn {
            let msg = format!("only for `tls` and `wss` listeners (this one is `{transport}`)");
            return Err(src.invalid(a.span(), "listener.alpn", msg));
        }
    }
    if let Some(p) = &l.ws_path {
        if !transport.is_ws() {
            let msg = format!("only for `ws` and `wss` listeners (this one is `{transport}`)");
            return Err(src.invalid(p.span(), "listener.ws_path", msg));
        }
        let path = p.get_ref();
        if !path.starts_with('/') || path.contains(|c: char| c.is_whitespace() || c == '?') {
            let msg = format!("`{path}` is not an HTTP path like /mqtt");
            return Err(src.invalid(p.span(), "listener.ws_path", msg));
        }
        listener.ws_path.clone_from(path);
    }
    listener.proxy_protocol = l.proxy_protocol.unwrap_or(false);
    if let Some(v) = &l.max_connections {
        let max = i64::from(u32::MAX);
        listener.max_connections = Some(src.int(v, "listener.max_connections", 1, max)?);
    }
    if transport.is_tls() {
        listener.tls = Some(validate_tls(src, l, here)?);
        if let Some(u) = &l.username_from {
            let options = [
                ("none", None),
                ("cn", Some(UsernameFrom::CommonName)),
                ("san", Some(UsernameFrom::SubjectAltName)),
            ];
            listener.username_from = choice(src, u, "listener.username_from", &options)?;
            let certs = listener.tls.as_ref().map_or(ClientCerts::None, |t| t.client_certs);
            if listener.username_from.is_some() && certs == ClientCerts::None {
                let msg = "needs `client_certs = \"optional\"` or `\"require\"`";
                return Err(src.invalid(u.span(), "listener.username_from", msg));
            }
        }
    }
    Ok(listener)
}

/// The TLS settings of a `tls` or `wss` listener. The files are read and checked here,
/// so that a missing or bad file stops the broker at start with the file named.
fn validate_tls(
    src: &Source<'_>,
    l: &FileListener,
    here: Range<usize>,
) -> Result<TlsSettings, ConfigError> {
    let missing = |key: &str| {
        src.invalid(here.clone(), key, "required for `tls` and `wss` listeners".to_owned())
    };
    let cert = l.cert_file.as_ref().ok_or_else(|| missing("listener.cert_file"))?;
    let key = l.key_file.as_ref().ok_or_else(|| missing("listener.key_file"))?;
    let mut settings = TlsSettings::new(cert.get_ref(), key.get_ref());
    if let Some(c) = &l.client_certs {
        let options = [
            ("none", ClientCerts::None),
            ("optional", ClientCerts::Optional),
            ("require", ClientCerts::Require),
        ];
        settings.client_certs = choice(src, c, "listener.client_certs", &options)?;
    }
    settings.ca_file = l.ca_file.as_ref().map(|c| PathBuf::from(c.get_ref()));
    if settings.client_certs != ClientCerts::None && settings.ca_file.is_none() {
        let span = l.client_certs.as_ref().map_or(here.clone(), Spanned::span);
        return Err(src.invalid(span, "listener.ca_file", "required when client_certs is set"));
    }
    if let Some(a) = &l.alpn {
        if a.get_ref().iter().any(|p| p.is_empty() || p.len() > 255) {
            let msg = "each protocol name must be 1 to 255 bytes";
            return Err(src.invalid(a.span(), "listener.alpn", msg));
        }
        settings.alpn = a.get_ref().iter().map(|p| p.as_bytes().to_vec()).collect();
    }
    if let Err(e) = crate::tls::build_server_config(&settings) {
        // Point at the key naming the file at fault.
        let (span, key_name) = match &e {
            TlsError::Read { path, .. }
            | TlsError::NoCertificate { path }
            | TlsError::NoPrivateKey { path }
                if *path == settings.key_file =>
            {
                (key.span(), "listener.key_file")
            }
            TlsError::Read { path, .. } | TlsError::NoCertificate { path }
                if Some(path) == settings.ca_file.as_ref() =>
            {
                (l.ca_file.as_ref().map_or(here.clone(), Spanned::span), "listener.ca_file")
            }
            TlsError::BadCa { .. } => {
                (l.ca_file.as_ref().map_or(here.clone(), Spanned::span), "listener.ca_file")
            }
            _ => (cert.span(), "listener.cert_file"),
        };
        return Err(src.invalid(span, key_name, error_chain(&e)));
    }
    Ok(settings)
}

/// An error and its causes on one line.
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

fn validate(src: &Source<'_>, raw: FileConfig) -> Result<Config, ConfigError> {
    let workers = match &raw.workers {
        Some(w) => src.int(w, "workers", 1, 1024)?,
        None => default_workers(),
    };
    let mut listeners = Vec::with_capacity(raw.listener.len());
    for l in &raw.listener {
        listeners.push(validate_listener(src, l)?);
    }
    if listeners.is_empty() {
        listeners = Config::default().listeners;
    }

    let mut limits = Limits::default();
    let mut broker_limits = BrokerLimits::default();
    let mut persistence = PersistenceConfig::default();
    if let Some(l) = raw.limits {
        let max_u32 = i64::from(u32::MAX);
        if let Some(v) = &l.max_connections {
            broker_limits.max_connections = src.int(v, "limits.max_connections", 1, max_u32)?;
        }
        if let Some(v) = &l.max_packet_size {
            let max = i64::try_from(PROTOCOL_MAX_PACKET_BYTES).unwrap_or(i64::MAX);
            limits.max_packet_bytes = src.int(v, "limits.max_packet_size", 16, max)?;
        }
        if let Some(v) = &l.max_inflight {
            limits.max_inflight = src.int(v, "limits.max_inflight", 1, 65_535)?;
        }
        if let Some(v) = &l.max_queued_messages {
            limits.max_queued_messages = src.int(v, "limits.max_queued_messages", 0, max_u32)?;
        }
        if let Some(v) = &l.max_queued_bytes {
            limits.max_queued_bytes = src.int(v, "limits.max_queued_bytes", 0, i64::MAX)?;
        }
        if let Some(v) = &l.max_topic_levels {
            limits.max_topic_levels = src.int(v, "limits.max_topic_levels", 1, 65_535)?;
        }
        if let Some(v) = &l.max_subscriptions_per_client {
            limits.max_subscriptions =
                src.int(v, "limits.max_subscriptions_per_client", 1, max_u32)?;
        }
        if let Some(v) = &l.max_outgoing_bytes {
            broker_limits.max_outgoing_bytes =
                src.int(v, "limits.max_outgoing_bytes", 1024, max_u32)?;
        }
        if let Some(v) = &l.connect_timeout_secs {
            let secs: u64 = src.int(v, "limits.connect_timeout_secs", 1, 86_400)?;
            broker_limits.connect_timeout = Duration::from_secs(secs);
        }
        if let Some(v) = &l.max_keep_alive_secs {
            broker_limits.max_keep_alive_secs =
                src.int(v, "limits.max_keep_alive_secs", 1, 65_535)?;
        }
        if let Some(v) = &l.max_connection_rate_per_ip {
            broker_limits.max_connection_rate_per_ip =
                src.int(v, "limits.max_connection_rate_per_ip", 0, max_u32)?;
        }
        if let Some(v) = &l.max_publish_rate {
            broker_limits.publish_rate.messages_per_second =
                src.int(v, "limits.max_publish_rate", 0, max_u32)?;
        }
        if let Some(v) = &l.max_publish_bytes_rate {
            broker_limits.publish_rate.bytes_per_second =
                src.int(v, "limits.max_publish_bytes_rate", 0, i64::MAX)?;
        }
        if let Some(v) = &l.max_held_bytes {
            broker_limits.max_held_bytes = src.int(v, "limits.max_held_bytes", 1024, i64::MAX)?;
        }
        if let Some(v) = &l.max_store_queue_bytes {
            persistence.queue_bytes =
                src.int(v, "limits.max_store_queue_bytes", 65_536, i64::MAX)?;
        }
    }
    if let Some(enabled) = raw.persistence {
        persistence.enabled = enabled;
    }
    if let Some(dir) = &raw.data_dir {
        if dir.get_ref().trim().is_empty() {
            return Err(src.invalid(dir.span(), "data_dir", "an empty path is not a directory"));
        }
        persistence.data_dir = dir.get_ref().into();
    }
    let mut mqtt = MqttSettings::default();
    if let Some(m) = raw.mqtt {
        if let Some(v) = &m.topic_alias_maximum {
            limits.topic_alias_maximum = src.int(v, "mqtt.topic_alias_maximum", 0, 65_535)?;
        }
        if let Some(v) = &m.shared_subscription_strategy {
            mqtt.share_strategy = match v.get_ref().as_str() {
                "round_robin" => ShareStrategy::RoundRobin,
                "random" => ShareStrategy::Random,
                "sticky" => ShareStrategy::Sticky,
                other => {
                    return Err(src.invalid(
                        v.span(),
                        "mqtt.shared_subscription_strategy",
                        format!("`{other}` is not one of `round_robin`, `random`, `sticky`"),
                    ))
                }
            };
        }
    }
    let admin = super::admin::validate(src, raw.admin.unwrap_or_default())?;
    let auth = match &raw.auth {
        Some(a) => validate_auth(src, a)?,
        None => FileAuthSettings::default(),
    };
    Ok(Config { workers, listeners, limits, broker_limits, persistence, mqtt, admin, auth })
}

fn validate_auth(src: &Source<'_>, a: &FileAuthTable) -> Result<FileAuthSettings, ConfigError> {
    let path = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<PathBuf>, ConfigError> {
        match v {
            Some(p) if p.get_ref().trim().is_empty() => {
                Err(src.invalid(p.span(), key, "the path is empty"))
            }
            Some(p) => Ok(Some(PathBuf::from(p.get_ref()))),
            None => Ok(None),
        }
    };
    Ok(FileAuthSettings {
        password_file: path(&a.password_file, "auth.password_file")?,
        acl_file: path(&a.acl_file, "auth.acl_file")?,
        allow_anonymous: a.allow_anonymous,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_parses() {
        let text = r#"
workers = 2
[[listener]]
bind = "127.0.0.1:0"
transport = "tcp"
[limits]
max_connections = 10
max_packet_size = 4096
max_inflight = 5
max_queued_messages = 7
max_topic_levels = 8
max_subscriptions_per_client = 9
max_outgoing_bytes = 65536
connect_timeout_secs = 3
max_keep_alive_secs = 60
max_connection_rate_per_ip = 5
max_publish_rate = 100
max_publish_bytes_rate = 65536
[auth]
password_file = "/etc/shoal/passwd"
acl_file = "acl"
allow_anonymous = true
"#;
        let c = Config::from_toml_str(text, "t.toml").unwrap();
        assert_eq!(c.workers, 2);
        assert_eq!(c.listeners[0].bind.port(), 0);
        assert_eq!(c.limits.max_packet_bytes, 4096);
        assert_eq!(c.limits.max_inflight, 5);
        assert_eq!(c.limits.max_queued_messages, 7);
        assert_eq!(c.limits.max_topic_levels, 8);
        assert_eq!(c.limits.max_subscriptions, 9);
        assert_eq!(c.broker_limits.max_connections, 10);
        assert_eq!(c.broker_limits.max_outgoing_bytes, 65536);
        assert_eq!(c.broker_limits.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.broker_limits.max_keep_alive_secs, 60);
        assert_eq!(c.broker_limits.max_connection_rate_per_ip, 5);
        assert_eq!(c.broker_limits.publish_rate.messages_per_second, 100);
        assert_eq!(c.broker_limits.publish_rate.bytes_per_second, 65536);
        assert_eq!(c.auth.password_file, Some(PathBuf::from("/etc/shoal/passwd")));
        assert_eq!(c.auth.acl_file, Some(PathBuf::from("acl")));
        assert_eq!(c.auth.allow_anonymous, Some(true));
    }

    #[test]
    fn auth_errors_name_line_and_key() {
        let text = "[auth]\npassword_file = \"\"\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.starts_with("f.toml:2:") && msg.contains("auth.password_file"), "{msg}");
        let text = "[auth]\nallow_anonymous = \"yes\"\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.starts_with("f.toml:2:") && msg.contains("allow_anonymous"), "{msg}");
        let text = "[limits]\nmax_publish_rate = -1\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("limits.max_publish_rate"), "{msg}");
    }

    #[test]
    fn persistence_keys_parse_and_default_on() {
        let c = Config::from_toml_str("", "t.toml").unwrap();
        assert!(c.persistence.enabled);
        assert_eq!(c.persistence.data_dir, std::path::PathBuf::from("./shoal-data"));
        let c = Config::from_toml_str("persistence = false\ndata_dir = \"/var/lib/shoal\"\n", "t")
            .unwrap();
        assert!(!c.persistence.enabled);
        assert_eq!(c.persistence.data_dir, std::path::PathBuf::from("/var/lib/shoal"));
    }

    #[test]
    fn bad_persistence_values_name_line_and_key() {
        let msg = Config::from_toml_str("workers = 1\npersistence = \"yes\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("f.toml:2:") && msg.contains("persistence"), "{msg}");
        let msg = Config::from_toml_str("\ndata_dir = \"\"\n", "f.toml").unwrap_err().to_string();
        assert!(msg.starts_with("f.toml:2:") && msg.contains("`data_dir`"), "{msg}");
    }

    #[test]
    fn store_byte_bounds_are_read_and_checked() {
        let c = Config::from_toml_str("", "t").unwrap();
        assert_eq!(c.broker_limits.max_held_bytes, 4 << 20);
        assert_eq!(c.persistence.queue_bytes, 64 << 20);
        let text = "[limits]\nmax_held_bytes = 65536\nmax_store_queue_bytes = 1048576\n";
        let c = Config::from_toml_str(text, "t").unwrap();
        assert_eq!(c.broker_limits.max_held_bytes, 65536);
        assert_eq!(c.persistence.queue_bytes, 1 << 20);
        let text = "[limits]\nmax_inflight = 5\nmax_held_bytes = 10\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.starts_with("f.toml:3:") && msg.contains("limits.max_held_bytes"), "{msg}");
        let text = "[limits]\nmax_store_queue_bytes = \"big\"\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.starts_with("f.toml:2:") && msg.contains("max_store_queue_bytes"), "{msg}");
        let text = "[limits]\nmax_store_queue_bytes = 1024\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("limits.max_store_queue_bytes") && msg.contains("65536"), "{msg}");
    }

    #[test]
    fn queued_bytes_bound_is_read_and_checked() {
        let c = Config::from_toml_str("", "t").unwrap();
        assert_eq!(c.limits.max_queued_bytes, 16 << 20);
        let c = Config::from_toml_str("[limits]\nmax_queued_bytes = 65536\n", "t").unwrap();
        assert_eq!(c.limits.max_queued_bytes, 65536);
        let c = Config::from_toml_str("[limits]\nmax_queued_bytes = 0\n", "t").unwrap();
        assert_eq!(c.limits.max_queued_bytes, 0, "0 turns the byte bound off");
        let text = "[limits]\nmax_queued_messages = 5\nmax_queued_bytes = -1\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.starts_with("f.toml:3:") && msg.contains("limits.max_queued_bytes"), "{msg}");
        let text = "[limits]\nmax_queued_bytes = \"16MiB\"\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.starts_with("f.toml:2:") && msg.contains("max_queued_bytes"), "{msg}");
    }

    #[test]
    fn share_strategy_is_read_and_checked() {
        let c = Config::from_toml_str("[mqtt]\nshared_subscription_strategy = \"sticky\"\n", "t")
            .unwrap();
        assert_eq!(c.mqtt.share_strategy, ShareStrategy::Sticky);
        let text = "[mqtt]\nshared_subscription_strategy = \"first\"\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("f.toml:2:") && msg.contains("mqtt.shared_subscription_strategy"));
        assert_eq!(Config::default().mqtt.share_strategy, ShareStrategy::RoundRobin);
    }

    #[test]
    fn topic_alias_maximum_is_read_and_checked() {
        let c = Config::from_toml_str("[mqtt]\ntopic_alias_maximum = 0\n", "t").unwrap();
        assert_eq!(c.limits.topic_alias_maximum, 0);
        assert_eq!(Config::default().limits.topic_alias_maximum, 10);
        let msg = Config::from_toml_str("[mqtt]\ntopic_alias_maximum = 70000\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("f.toml:2:") && msg.contains("mqtt.topic_alias_maximum"), "{msg}");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml_str("", "t.toml").unwrap();
        assert_eq!(c.listeners, Config::default().listeners);
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = "workers = 1\n[limits]\nmax_conections = 5\n";
        let msg = Config::from_toml_str(text, "shoal.toml").unwrap_err().to_string();
        assert!(msg.starts_with("shoal.toml:3:"), "{msg}");
        assert!(msg.contains("max_conections"), "{msg}");
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let text = "\n[limits]\nmax_inflight = \"many\"\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.starts_with("f.toml:3:"), "{msg}");
        assert!(msg.contains("max_inflight"), "{msg}");
    }

    #[test]
    fn out_of_range_value_names_line_and_key() {
        let text = "workers = 0\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.starts_with("f.toml:1:"), "{msg}");
        assert!(msg.contains("`workers`"), "{msg}");
    }

    #[test]
    fn bad_bind_address_and_transport_are_refused() {
        let text = "[[listener]]\nbind = \"nowhere\"\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("f.toml:2:") && msg.contains("listener.bind"), "{msg}");
        let text = "[[listener]]\nbind = \"127.0.0.1:1\"\ntransport = \"quic\"\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("f.toml:3:") && msg.contains("listener.transport"), "{msg}");
    }

    /// A self-signed certificate and key in a temporary directory.
    fn cert_files() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        (dir, cert.display().to_string(), key.display().to_string())
    }

    #[test]
    fn tls_and_ws_listeners_parse_with_their_options() {
        let (_dir, cert, key) = cert_files();
        let text = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"wss\"\n\
             cert_file = \"{cert}\"\nkey_file = \"{key}\"\nca_file = \"{cert}\"\n\
             client_certs = \"optional\"\nusername_from = \"san\"\nalpn = [\"mqtt\"]\n\
             ws_path = \"/ws\"\nproxy_protocol = true\nmax_connections = 7\n\
             [[listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"ws\"\n"
        );
        let c = Config::from_toml_str(&text, "t.toml").unwrap();
        let l = &c.listeners[0];
        assert_eq!(l.transport, Transport::Wss);
        let tls = l.tls.as_ref().unwrap();
        assert_eq!(tls.client_certs, ClientCerts::Optional);
        assert_eq!(tls.alpn, vec![b"mqtt".to_vec()]);
        assert_eq!(l.username_from, Some(UsernameFrom::SubjectAltName));
        assert_eq!(l.ws_path, "/ws");
        assert!(l.proxy_protocol);
        assert_eq!(l.max_connections, Some(7));
        let ws = &c.listeners[1];
        assert_eq!(
            (ws.transport, ws.ws_path.as_str(), ws.tls.is_none()),
            (Transport::Ws, "/mqtt", true)
        );
    }

    #[test]
    fn tls_listener_without_key_or_with_a_missing_file_is_refused() {
        let (_dir, cert, key) = cert_files();
        let text = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"tls\"\ncert_file = \"{cert}\"\n"
        );
        let msg = Config::from_toml_str(&text, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("f.toml:2:") && msg.contains("listener.key_file"), "{msg}");

        let text = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"tls\"\n\
             cert_file = \"/nonexistent/cert.pem\"\nkey_file = \"{key}\"\n"
        );
        let msg = Config::from_toml_str(&text, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("f.toml:4:") && msg.contains("listener.cert_file"), "{msg}");
        assert!(msg.contains("/nonexistent/cert.pem"), "{msg}");

        // A certificate where the key should be: the key file is named.
        let text = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"tls\"\n\
             cert_file = \"{cert}\"\nkey_file = \"{cert}\"\n"
        );
        let msg = Config::from_toml_str(&text, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("f.toml:5:") && msg.contains("listener.key_file"), "{msg}");
    }

    #[test]
    fn options_of_the_wrong_transport_are_refused() {
        let text = "[[listener]]\nbind = \"127.0.0.1:0\"\ncert_file = \"c.pem\"\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("f.toml:3:") && msg.contains("listener.cert_file"), "{msg}");
        let text = "[[listener]]\nbind = \"127.0.0.1:0\"\nws_path = \"/x\"\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("f.toml:3:") && msg.contains("listener.ws_path"), "{msg}");
        let text = "[[listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"ws\"\nws_path = \"mqtt\"\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("f.toml:4:") && msg.contains("listener.ws_path"), "{msg}");
    }

    #[test]
    fn client_cert_options_need_a_ca_and_a_policy() {
        let (_dir, cert, key) = cert_files();
        let base = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"tls\"\n\
             cert_file = \"{cert}\"\nkey_file = \"{key}\"\n"
        );
        let text = format!("{base}client_certs = \"require\"\n");
        let msg = Config::from_toml_str(&text, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("f.toml:6:") && msg.contains("listener.ca_file"), "{msg}");
        let text = format!("{base}username_from = \"cn\"\n");
        let msg = Config::from_toml_str(&text, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("f.toml:6:") && msg.contains("listener.username_from"), "{msg}");
        let text = format!("{base}client_certs = \"sometimes\"\n");
        let msg = Config::from_toml_str(&text, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("`optional`"), "{msg}");
    }
}
