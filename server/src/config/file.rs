//! The raw, serde-shaped config file and its validation into [`Config`].
//!
//! Values that can be wrong beyond their type are wrapped in [`Spanned`] so that a
//! validation error can name the line they are on.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use shoal_core::limits::PROTOCOL_MAX_PACKET_BYTES;
use shoal_core::Limits;
use toml::Spanned;

use super::{
    default_workers, BrokerLimits, Config, ConfigError, ListenerConfig, MqttSettings,
    PersistenceConfig, ShareStrategy, Transport,
};

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
}

/// The `[mqtt]` table; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMqtt {
    shared_subscription_strategy: Option<Spanned<String>>,
}

/// One `[[listener]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileListener {
    bind: Spanned<String>,
    transport: Option<Spanned<String>>,
}

/// The `[limits]` table; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_connections: Option<Spanned<i64>>,
    max_packet_size: Option<Spanned<i64>>,
    max_inflight: Option<Spanned<i64>>,
    max_queued_messages: Option<Spanned<i64>>,
    max_topic_levels: Option<Spanned<i64>>,
    max_subscriptions_per_client: Option<Spanned<i64>>,
    max_outgoing_bytes: Option<Spanned<i64>>,
    connect_timeout_secs: Option<Spanned<i64>>,
    max_keep_alive_secs: Option<Spanned<i64>>,
}

/// Source text and its name, for turning spans into line numbers.
struct Source<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Source<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes().get(..end).map_or(1, |b| memchr_count(b'\n', b) + 1)
    }

    fn invalid(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.to_owned(),
            line: self.line_of(span.start),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// Checks an integer lies in `min..=max` and converts it.
    fn int<T: TryFrom<i64>>(
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

fn validate(src: &Source<'_>, raw: FileConfig) -> Result<Config, ConfigError> {
    let workers = match &raw.workers {
        Some(w) => src.int(w, "workers", 1, 1024)?,
        None => default_workers(),
    };
    let mut listeners = Vec::with_capacity(raw.listener.len());
    for l in &raw.listener {
        let bind: SocketAddr = l.bind.get_ref().parse().map_err(|_| {
            src.invalid(
                l.bind.span(),
                "listener.bind",
                format!("`{}` is not an address like 127.0.0.1:1883", l.bind.get_ref()),
            )
        })?;
        let transport = match &l.transport {
            None => Transport::Tcp,
            Some(t) if t.get_ref() == "tcp" => Transport::Tcp,
            Some(t) => {
                return Err(src.invalid(
                    t.span(),
                    "listener.transport",
                    format!("unsupported transport `{}` (only `tcp` for now)", t.get_ref()),
                ))
            }
        };
        listeners.push(ListenerConfig { bind, transport });
    }
    if listeners.is_empty() {
        listeners = Config::default().listeners;
    }

    let mut limits = Limits::default();
    let mut broker_limits = BrokerLimits::default();
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
    }
    let mut persistence = PersistenceConfig::default();
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
    Ok(Config { workers, listeners, limits, broker_limits, persistence, mqtt })
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
        let text = "[[listener]]\nbind = \"127.0.0.1:1\"\ntransport = \"ws\"\n";
        let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
        assert!(msg.contains("f.toml:3:") && msg.contains("listener.transport"), "{msg}");
    }
}
