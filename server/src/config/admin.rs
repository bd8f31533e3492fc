//! The `[admin]` table: the admin HTTP listener (Prometheus `/metrics`, the JSON API,
//! the dashboard), the `$SYS` interval and client lifecycle events.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::file::Source;
use super::{AdminConfig, ConfigError};

/// `[admin]` as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAdmin {
    enabled: Option<bool>,
    bind: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    metrics_require_token: Option<bool>,
    ws_url: Option<Spanned<String>>,
    sys_interval_secs: Option<Spanned<i64>>,
    client_events: Option<bool>,
}

/// Validates `[admin]`; a token file is read here (config is the only file reader),
/// relative to the config file's directory.
pub(super) fn validate(src: &Source<'_>, raw: FileAdmin) -> Result<AdminConfig, ConfigError> {
    let mut c = AdminConfig { enabled: raw.enabled.unwrap_or(false), ..AdminConfig::default() };
    if let Some(b) = &raw.bind {
        c.settings.bind = b.get_ref().parse::<SocketAddr>().map_err(|_| {
            src.invalid(
                b.span(),
                "admin.bind",
                format!("`{}` is not an address like 127.0.0.1:8080", b.get_ref()),
            )
        })?;
    }
    match (&raw.token, &raw.token_file) {
        (Some(_), Some(f)) => {
            return Err(src.invalid(
                f.span(),
                "admin.token_file",
                "set `token` or `token_file`, not both",
            ))
        }
        (Some(t), None) => c.settings.token = checked_token(src, t, "admin.token", t.get_ref())?,
        (None, Some(f)) => {
            let path = match Path::new(src.origin).parent() {
                Some(dir) => dir.join(f.get_ref()),
                None => Path::new(f.get_ref()).to_path_buf(),
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                src.invalid(
                    f.span(),
                    "admin.token_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            c.settings.token = checked_token(src, f, "admin.token_file", text.trim())?;
        }
        (None, None) => {}
    }
    c.settings.metrics_require_token = raw.metrics_require_token.unwrap_or(false);
    if let Some(u) = &raw.ws_url {
        let url = u.get_ref();
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(src.invalid(
                u.span(),
                "admin.ws_url",
                format!("`{url}` is not a ws:// or wss:// URL"),
            ));
        }
        c.settings.ws_url = Some(url.clone());
    }
    if let Some(v) = &raw.sys_interval_secs {
        c.sys_interval_secs = src.int(v, "admin.sys_interval_secs", 0, 86_400)?;
    }
    c.client_events = raw.client_events.unwrap_or(false);
    Ok(c)
}

/// A token is printable ASCII without spaces (it travels in an HTTP header).
fn checked_token<T>(
    src: &Source<'_>,
    at: &Spanned<T>,
    key: &str,
    token: &str,
) -> Result<String, ConfigError> {
    if token.is_empty() {
        return Err(src.invalid(at.span(), key, "the token is empty"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(src.invalid(
            at.span(),
            key,
            "the token must be printable ASCII without spaces",
        ));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn every_admin_key_parses() {
        let text = r#"
[admin]
enabled = true
bind = "127.0.0.1:0"
token = "abc123"
metrics_require_token = true
ws_url = "ws://127.0.0.1:8083/mqtt"
sys_interval_secs = 3
client_events = true
"#;
        let c = Config::from_toml_str(text, "t.toml").unwrap().admin;
        assert!(c.enabled && c.client_events && c.settings.metrics_require_token);
        assert_eq!(c.settings.bind.port(), 0);
        assert_eq!(c.settings.token, "abc123");
        assert_eq!(c.settings.ws_url.as_deref(), Some("ws://127.0.0.1:8083/mqtt"));
        assert_eq!(c.sys_interval_secs, 3);
    }

    #[test]
    fn admin_defaults_keep_the_listener_off_and_sys_on() {
        let c = Config::from_toml_str("", "t.toml").unwrap().admin;
        assert!(!c.enabled && !c.client_events);
        assert_eq!(c.sys_interval_secs, 10);
        assert_eq!(c.settings.bind.to_string(), crate::admin::DEFAULT_ADMIN_BIND);
        assert!(c.settings.token.is_empty());
    }

    #[test]
    fn token_file_is_read_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin.token"), "  from-file\n").unwrap();
        let origin = dir.path().join("shoal.toml");
        let text = "[admin]\ntoken_file = \"admin.token\"\n";
        let c = Config::from_toml_str(text, &origin.display().to_string()).unwrap();
        assert_eq!(c.admin.settings.token, "from-file");
    }

    #[test]
    fn bad_admin_values_name_line_and_key() {
        for (text, line, key) in [
            ("[admin]\nbind = \"localhost\"\n", 2, "admin.bind"),
            ("[admin]\n\nws_url = \"http://x\"\n", 3, "admin.ws_url"),
            ("[admin]\nsys_interval_secs = -1\n", 2, "admin.sys_interval_secs"),
            ("[admin]\ntoken = \"a b\"\n", 2, "admin.token"),
            ("[admin]\ntoken = \"\"\n", 2, "admin.token"),
            ("[admin]\ntoken = \"a\"\ntoken_file = \"f\"\n", 3, "admin.token_file"),
            ("[admin]\ntoken_file = \"/nonexistent/shoal\"\n", 2, "admin.token_file"),
            ("[admin]\nenable = true\n", 2, "enable"),
        ] {
            let msg = Config::from_toml_str(text, "f.toml").unwrap_err().to_string();
            assert!(msg.starts_with(&format!("f.toml:{line}:")), "{text:?}: {msg}");
            assert!(msg.contains(key), "{text:?}: {msg}");
        }
    }
}
