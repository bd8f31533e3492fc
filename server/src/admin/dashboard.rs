//! The web dashboard: static HTML, CSS and JavaScript built into the binary with
//! `include_str!` (no CDN, no build step). The page talks to the JSON API with the
//! bearer token the operator types in, and to the broker's WebSocket listener with a
//! small MQTT client of its own (`dashboard/mqtt.js`) for the "try it" panel.

use super::http::Response;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const STYLE_CSS: &str = include_str!("dashboard/style.css");
const APP_JS: &str = include_str!("dashboard/app.js");
const MQTT_JS: &str = include_str!("dashboard/mqtt.js");

/// Scripts only from this origin, no inline script; the page may open WebSockets to
/// any broker the operator names.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   style-src 'self'; script-src 'self'; frame-ancestors 'none'";

/// The response for a dashboard path, or `None` if `path` is not one.
pub(crate) fn asset(path: &str) -> Option<Response> {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX_HTML),
        "/assets/style.css" => ("text/css; charset=utf-8", STYLE_CSS),
        "/assets/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/assets/mqtt.js" => ("text/javascript; charset=utf-8", MQTT_JS),
        _ => return None,
    };
    Some(
        Response::raw(200, content_type, body.as_bytes().to_vec())
            .with_header("Content-Security-Policy", CSP.into())
            .with_header("Referrer-Policy", "no-referrer".into()),
    )
}
