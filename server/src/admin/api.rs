//! The admin API: what the HTTP layer asks of the broker ([`AdminBackend`]), the JSON
//! shapes it answers with, and routing a [`Request`] to a [`Response`]. The endpoints
//! are documented in `docs/ADMIN-API.md`; keep the two in step.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use shoal_core::{QoS, TopicFilter, TopicName};

use super::http::{parse_query, percent_decode, Method, Request, Response};
use super::{dashboard, AdminSettings};
use crate::metrics::{render_prometheus, MetricsSnapshot};

/// Default page size of list endpoints.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size a list endpoint returns.
pub const MAX_LIMIT: usize = 1000;

/// The broker as the admin listener sees it. Implemented by the broker (which asks its
/// workers over their channels); called from the admin listener's connection threads,
/// never from a worker, so an implementation may block briefly but should bound the
/// wait and answer [`AdminError::Unavailable`] past it.
pub trait AdminBackend: Send + Sync + 'static {
    /// Current metrics (also rendered for `/metrics`).
    fn stats(&self) -> MetricsSnapshot;
    /// One page of clients matching the query, and how many match in all.
    fn clients(&self, query: &ClientQuery) -> ClientPage;
    /// One client's session and subscriptions; `None` if unknown.
    fn client(&self, id: &str) -> Option<ClientDetail>;
    /// Disconnects a client (MQTT 5 clients get DISCONNECT 0x98 Administrative action).
    ///
    /// # Errors
    /// [`AdminError::NotFound`] if no such client is connected.
    fn disconnect(&self, id: &str) -> Result<(), AdminError>;
    /// Subscriptions whose filter contains `filter` as text (all when empty), one page.
    fn subscriptions(&self, filter: &str, limit: usize, offset: usize) -> Vec<SubscriptionInfo>;
    /// Retained messages whose topic matches `filter`, at most `limit`.
    fn retained(&self, filter: &TopicFilter, limit: usize) -> Vec<RetainedInfo>;
    /// Deletes one retained message.
    ///
    /// # Errors
    /// [`AdminError::NotFound`] if there is none on that topic.
    fn delete_retained(&self, topic: &TopicName) -> Result<(), AdminError>;
    /// Publishes a message as the broker itself.
    ///
    /// # Errors
    /// [`AdminError::Unavailable`] if the broker cannot take it now.
    fn publish(&self, msg: AdminPublish) -> Result<(), AdminError>;
    /// The effective configuration as JSON. Secrets should already be left out; the
    /// HTTP layer redacts known secret keys again (see [`redact`]).
    fn config_json(&self) -> serde_json::Value;
}

/// A backend's refusal; mapped to an HTTP status with a JSON error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 503: the broker did not answer in time or is shutting down.
    #[error("{0}")]
    Unavailable(String),
}

impl AdminError {
    fn into_response(self) -> Response {
        let status = match &self {
            AdminError::NotFound(_) => 404,
            AdminError::BadRequest(_) => 400,
            AdminError::Unavailable(_) => 503,
        };
        Response::error(status, &self.to_string())
    }
}

/// `GET /api/clients` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientQuery {
    /// Case-insensitive text searched in client id, username and address; empty = all.
    pub search: String,
    /// Page size, 1..=[`MAX_LIMIT`].
    pub limit: usize,
    /// Matches skipped before the page.
    pub offset: usize,
}

/// One page of clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientPage {
    /// Clients matching the query in all.
    pub total: usize,
    /// This page.
    pub clients: Vec<ClientInfo>,
}

/// A client, connected or holding an offline persistent session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Client identifier.
    pub id: String,
    /// Username from CONNECT (or the certificate), if any.
    pub username: Option<String>,
    /// Peer address, while connected.
    pub address: Option<String>,
    /// Listener name, while connected.
    pub listener: Option<String>,
    /// `3.1`, `3.1.1` or `5.0`.
    pub protocol: String,
    /// Whether a connection is open.
    pub connected: bool,
    /// Unix time (seconds) of the current connection's CONNECT.
    pub connected_since: Option<u64>,
    /// Negotiated keep-alive, seconds.
    pub keep_alive_secs: u16,
    /// QoS 1/2 messages sent and unacknowledged.
    pub inflight: u64,
    /// Messages queued for the client.
    pub queued: u64,
    /// What they weigh, as `limits.max_queued_bytes` counts it.
    #[serde(default)]
    pub queued_bytes: u64,
    /// Bytes received from the client on this connection.
    pub bytes_in: u64,
    /// Bytes sent to the client on this connection.
    pub bytes_out: u64,
}

/// One client's subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSubscription {
    /// The filter as subscribed (with `$share/group/` if shared).
    pub filter: String,
    /// Granted QoS.
    pub qos: u8,
    /// MQTT 5 No Local.
    pub no_local: bool,
    /// MQTT 5 Retain As Published.
    pub retain_as_published: bool,
    /// MQTT 5 Subscription Identifier.
    pub identifier: Option<u32>,
}

/// `GET /api/clients/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientDetail {
    /// The summary row.
    #[serde(flatten)]
    pub info: ClientInfo,
    /// Clean Start / Clean Session of the last CONNECT.
    pub clean_start: bool,
    /// Session Expiry Interval in seconds (`None`: never expires).
    pub session_expiry_secs: Option<u32>,
    /// Its subscriptions.
    pub subscriptions: Vec<ClientSubscription>,
}

/// One row of `GET /api/subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    /// Subscriber.
    pub client_id: String,
    /// Filter.
    pub filter: String,
    /// Granted QoS.
    pub qos: u8,
}

/// A retained message as the backend returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedInfo {
    /// Topic.
    pub topic: String,
    /// QoS it was published with.
    pub qos: QoS,
    /// Payload.
    pub payload: Bytes,
}

/// A retained message as `GET /api/retained` shows it: the payload as text when it is
/// UTF-8, else `null` with `binary: true`.
#[derive(Debug, Serialize)]
struct RetainedJson<'a> {
    topic: &'a str,
    qos: u8,
    size: usize,
    binary: bool,
    payload: Option<&'a str>,
}

/// A validated `POST /api/publish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminPublish {
    /// Topic (no wildcards).
    pub topic: TopicName,
    /// Payload bytes (the request's `payload` as UTF-8).
    pub payload: Bytes,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
}

/// `POST /api/publish` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    topic: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    retain: bool,
}

/// Replaces the value of every object key that names a secret (`password`, `token`,
/// `secret`, `private`, case-insensitive substring) with `"<redacted>"`, recursively.
pub fn redact(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let k = k.to_ascii_lowercase();
                let secret =
                    ["password", "token", "secret", "private"].iter().any(|s| k.contains(s));
                if secret && !v.is_null() {
                    *v = serde_json::Value::String("<redacted>".into());
                } else {
                    redact(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Constant-time comparison of the presented token with the configured one, so the
/// response time does not reveal a matching prefix. An empty configured token matches
/// nothing: the API stays closed until a token is set.
fn token_ok(settings: &AdminSettings, authorization: Option<&str>) -> bool {
    let Some(given) = authorization.and_then(|a| a.strip_prefix("Bearer ")) else {
        return false;
    };
    let want = settings.token.as_bytes();
    let given = given.trim().as_bytes();
    if want.is_empty() || want.len() != given.len() {
        return false;
    }
    want.iter().zip(given).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Answers one request. Never panics on any input.
pub(crate) fn route(
    req: &Request,
    settings: &AdminSettings,
    backend: &dyn AdminBackend,
) -> Response {
    if let Some(asset) = dashboard::asset(&req.path) {
        return match req.method {
            Method::Get => asset,
            _ => method_not_allowed("GET"),
        };
    }
    if req.path == "/metrics" {
        if settings.metrics_require_token && !token_ok(settings, req.authorization.as_deref()) {
            return unauthorized();
        }
        return match req.method {
            Method::Get => Response::raw(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                render_prometheus(&backend.stats()).into_bytes(),
            ),
            _ => method_not_allowed("GET"),
        };
    }
    let Some(api_path) = req.path.strip_prefix("/api/") else {
        return Response::error(404, "no such path");
    };
    if !token_ok(settings, req.authorization.as_deref()) {
        return unauthorized();
    }
    let query = match parse_query(&req.query) {
        Some(q) => q,
        None => return Response::error(400, "query string is not valid percent-encoded UTF-8"),
    };
    let params = Params(query);
    let result = match (req.method, api_path) {
        (Method::Get, "stats") => Ok(Response::json(200, &backend.stats())),
        (Method::Get, "info") => Ok(Response::json(
            200,
            &serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "ws_url": settings.ws_url,
                "metrics_require_token": settings.metrics_require_token,
            }),
        )),
        (Method::Get, "clients") => list_clients(backend, &params),
        (Method::Get, "subscriptions") => page(&params).map(|(limit, offset)| {
            Response::json(
                200,
                &backend.subscriptions(params.get("filter").unwrap_or(""), limit, offset),
            )
        }),
        (Method::Get, "retained") => list_retained(backend, &params),
        (Method::Post, "publish") => publish(backend, &req.body),
        (Method::Get, "config") => {
            let mut cfg = backend.config_json();
            redact(&mut cfg);
            Ok(Response::json(200, &cfg))
        }
        (_, "stats" | "info" | "clients" | "subscriptions" | "retained" | "config") => {
            Ok(method_not_allowed("GET"))
        }
        (_, "publish") => Ok(method_not_allowed("POST")),
        (method, path) => {
            if let Some(id) = path.strip_prefix("clients/") {
                one_client(backend, method, id)
            } else if let Some(topic) = path.strip_prefix("retained/") {
                delete_retained(backend, method, topic)
            } else {
                Ok(Response::error(404, "no such path"))
            }
        }
    };
    result.unwrap_or_else(AdminError::into_response)
}

/// Decoded query parameters; the first of a repeated name wins.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn unauthorized() -> Response {
    Response::error(401, "missing or wrong bearer token")
        .with_header("WWW-Authenticate", "Bearer realm=\"shoal-admin\"".into())
}

fn method_not_allowed(allow: &'static str) -> Response {
    Response::error(405, "method not allowed").with_header("Allow", allow.into())
}

fn number(params: &Params, name: &str, default: usize) -> Result<usize, AdminError> {
    match params.get(name) {
        None | Some("") => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            AdminError::BadRequest(format!("`{name}` must be a non-negative integer"))
        }),
    }
}

fn page(params: &Params) -> Result<(usize, usize), AdminError> {
    let limit = number(params, "limit", DEFAULT_LIMIT)?;
    if limit == 0 || limit > MAX_LIMIT {
        return Err(AdminError::BadRequest(format!("`limit` must be 1..={MAX_LIMIT}")));
    }
    Ok((limit, number(params, "offset", 0)?))
}

fn list_clients(backend: &dyn AdminBackend, params: &Params) -> Result<Response, AdminError> {
    let (limit, offset) = page(params)?;
    let query =
        ClientQuery { search: params.get("search").unwrap_or("").to_owned(), limit, offset };
    Ok(Response::json(200, &backend.clients(&query)))
}

fn list_retained(backend: &dyn AdminBackend, params: &Params) -> Result<Response, AdminError> {
    let (limit, _) = page(params)?;
    let text = match params.get("filter") {
        None | Some("") => "#",
        Some(f) => f,
    };
    let filter = TopicFilter::parse(text)
        .map_err(|e| AdminError::BadRequest(format!("`filter` is not a topic filter: {e}")))?;
    let rows = backend.retained(&filter, limit);
    let json: Vec<RetainedJson<'_>> = rows
        .iter()
        .map(|r| {
            let text = std::str::from_utf8(&r.payload).ok();
            RetainedJson {
                topic: &r.topic,
                qos: r.qos.bits(),
                size: r.payload.len(),
                binary: text.is_none(),
                payload: text,
            }
        })
        .collect();
    Ok(Response::json(200, &json))
}

fn decode_segment(raw: &str, what: &str) -> Result<String, AdminError> {
    match percent_decode(raw, false) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(AdminError::BadRequest(format!("{what} is empty or not percent-encoded UTF-8"))),
    }
}

fn one_client(
    backend: &dyn AdminBackend,
    method: Method,
    raw_id: &str,
) -> Result<Response, AdminError> {
    let id = decode_segment(raw_id, "client id")?;
    match method {
        Method::Get => match backend.client(&id) {
            Some(detail) => Ok(Response::json(200, &detail)),
            None => Err(AdminError::NotFound(format!("no client `{id}`"))),
        },
        Method::Delete => backend.disconnect(&id).map(|()| Response::empty(204)),
        _ => Ok(method_not_allowed("GET, DELETE")),
    }
}

fn delete_retained(
    backend: &dyn AdminBackend,
    method: Method,
    raw: &str,
) -> Result<Response, AdminError> {
    if method != Method::Delete {
        return Ok(method_not_allowed("DELETE"));
    }
    let text = decode_segment(raw, "topic")?;
    let topic = TopicName::try_from(text.as_str())
        .map_err(|e| AdminError::BadRequest(format!("not a topic name: {e}")))?;
    backend.delete_retained(&topic).map(|()| Response::empty(204))
}

fn publish(backend: &dyn AdminBackend, body: &[u8]) -> Result<Response, AdminError> {
    let body: PublishBody = serde_json::from_slice(body).map_err(|e| {
        AdminError::BadRequest(format!("body must be {{topic, payload, qos, retain}}: {e}"))
    })?;
    let topic = TopicName::try_from(body.topic.as_str())
        .map_err(|e| AdminError::BadRequest(format!("`topic` is not a topic name: {e}")))?;
    let qos = QoS::from_bits(body.qos)
        .ok_or_else(|| AdminError::BadRequest("`qos` must be 0, 1 or 2".into()))?;
    backend.publish(AdminPublish {
        topic,
        payload: Bytes::from(body.payload),
        qos,
        retain: body.retain,
    })?;
    Ok(Response::json(202, &serde_json::json!({ "accepted": true })))
}
