//! The real HTTP layer over a real socket on 127.0.0.1:0, answered by a recording
//! stand-in for the broker side ([`Recorder`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use shoal_core::{QoS, TopicFilter, TopicName};

use super::*;
use crate::metrics::{Metrics, MetricsSnapshot, WorkerCounters, WorkerGauges};

const TOKEN: &str = "s3cret-token";

/// Broker side for the tests: fixed data, and a log of every call.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl Recorder {
    fn log(&self, s: String) {
        self.calls.lock().push(s);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().clone()
    }
}

fn client(id: &str) -> ClientInfo {
    ClientInfo {
        id: id.into(),
        username: Some("alice".into()),
        address: Some("127.0.0.1:50000".into()),
        listener: Some("tcp://127.0.0.1:1883".into()),
        protocol: "5.0".into(),
        connected: true,
        connected_since: Some(1_700_000_000),
        keep_alive_secs: 60,
        ..Default::default()
    }
}

impl AdminBackend for Recorder {
    fn stats(&self) -> MetricsSnapshot {
        self.log("stats".into());
        let now = std::time::Instant::now();
        let m = Metrics::new(now, 1, vec!["tcp://127.0.0.1:1883".into()]);
        let mut c = WorkerCounters::default();
        c.on_publish_received(QoS::AtLeastOnce);
        let mut g = WorkerGauges::default();
        g.add_connection(0, shoal_core::ProtocolVersion::V5);
        m.publish_worker(0, &c, &g);
        m.snapshot(now)
    }
    fn clients(&self, q: &ClientQuery) -> ClientPage {
        self.log(format!("clients search={:?} limit={} offset={}", q.search, q.limit, q.offset));
        ClientPage { total: 1, clients: vec![client("sensor-1")] }
    }
    fn client(&self, id: &str) -> Option<ClientDetail> {
        self.log(format!("client {id}"));
        (id == "sensor/1 é").then(|| ClientDetail {
            info: client(id),
            clean_start: false,
            session_expiry_secs: Some(3600),
            subscriptions: vec![ClientSubscription {
                filter: "a/+".into(),
                qos: 1,
                no_local: false,
                retain_as_published: false,
                identifier: Some(7),
            }],
        })
    }
    fn disconnect(&self, id: &str) -> Result<(), AdminError> {
        self.log(format!("disconnect {id}"));
        if id == "sensor-1" {
            Ok(())
        } else {
            Err(AdminError::NotFound(format!("no client `{id}`")))
        }
    }
    fn subscriptions(&self, filter: &str, limit: usize, offset: usize) -> Vec<SubscriptionInfo> {
        self.log(format!("subscriptions {filter} {limit} {offset}"));
        vec![SubscriptionInfo { client_id: "sensor-1".into(), filter: "a/+".into(), qos: 1 }]
    }
    fn retained(&self, filter: &TopicFilter, limit: usize) -> Vec<RetainedInfo> {
        self.log(format!("retained {} {limit}", filter.as_str()));
        vec![
            RetainedInfo {
                topic: "a/b".into(),
                qos: QoS::AtLeastOnce,
                payload: Bytes::from_static(b"21.5"),
            },
            RetainedInfo {
                topic: "a/bin".into(),
                qos: QoS::AtMostOnce,
                payload: Bytes::from_static(&[0xff, 0]),
            },
        ]
    }
    fn delete_retained(&self, topic: &TopicName) -> Result<(), AdminError> {
        self.log(format!("delete_retained {}", topic.as_str()));
        Ok(())
    }
    fn publish(&self, msg: AdminPublish) -> Result<(), AdminError> {
        self.log(format!(
            "publish {} {:?} {:?} {}",
            msg.topic.as_str(),
            msg.payload,
            msg.qos,
            msg.retain
        ));
        if msg.topic.as_str() == "busy" {
            return Err(AdminError::Unavailable("broker busy".into()));
        }
        Ok(())
    }
    fn config_json(&self) -> serde_json::Value {
        self.log("config".into());
        serde_json::json!({
            "workers": 2,
            "admin": { "bind": "127.0.0.1:8080", "token": "leak-me" },
            "listeners": [{ "bind": "0.0.0.0:8883", "tls": { "private_key": "-----BEGIN", "cert": "c.pem" } }],
            "auth": { "password_file": null, "Client_Secret": "x" }
        })
    }
}

struct Fixture {
    server: AdminServer,
    backend: Arc<Recorder>,
}

fn start(settings: AdminSettings) -> Fixture {
    let backend = Arc::new(Recorder::default());
    let settings = AdminSettings { bind: "127.0.0.1:0".parse().unwrap(), ..settings };
    let server = AdminServer::start(settings, backend.clone()).unwrap();
    Fixture { server, backend }
}

fn fixture() -> Fixture {
    start(AdminSettings {
        token: TOKEN.into(),
        ws_url: Some("ws://127.0.0.1:8083/mqtt".into()),
        ..Default::default()
    })
}

/// Status, headers (lowercased names) and body of one exchange of raw bytes.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

fn exchange(f: &Fixture, raw: &[u8]) -> Reply {
    let mut s = TcpStream::connect(f.server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The server may answer and close before reading everything (413, 431): a failed
    // write is then expected, the answer is what counts.
    let _ = s.write_all(raw);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Reply { status, head, body: out[split + 4..].to_vec() }
}

fn request(f: &Fixture, method: &str, path: &str, token: Option<&str>, body: &str) -> Reply {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(f, raw.as_bytes())
}

fn get(f: &Fixture, path: &str) -> Reply {
    request(f, "GET", path, Some(TOKEN), "")
}

#[test]
fn stats_returns_the_snapshot_as_json() {
    let f = fixture();
    let r = get(&f, "/api/stats");
    assert_eq!(r.status, 200);
    assert!(r.head.contains("content-type: application/json"));
    let v = r.json();
    assert_eq!(v["counters"]["publish_received"][1], 1);
    assert_eq!(v["gauges"]["connections"][0][2], 1);
    assert_eq!(v["listeners"][0], "tcp://127.0.0.1:1883");
}

#[test]
fn every_api_endpoint_refuses_a_missing_or_wrong_token() {
    let f = fixture();
    let endpoints = [
        ("GET", "/api/stats"),
        ("GET", "/api/info"),
        ("GET", "/api/clients"),
        ("GET", "/api/clients/x"),
        ("DELETE", "/api/clients/x"),
        ("GET", "/api/subscriptions"),
        ("GET", "/api/retained"),
        ("DELETE", "/api/retained/a"),
        ("POST", "/api/publish"),
        ("GET", "/api/config"),
        ("GET", "/api/nope"),
    ];
    for (method, path) in endpoints {
        for token in [None, Some("wrong"), Some("s3cret-tokeN"), Some("")] {
            let r = request(&f, method, path, token, "");
            assert_eq!(r.status, 401, "{method} {path} {token:?}");
            assert!(r.head.contains("www-authenticate: bearer"));
            assert_eq!(r.json()["status"], 401);
        }
    }
    // Basic auth with the right secret is still not a bearer token.
    let raw = format!("GET /api/stats HTTP/1.1\r\nAuthorization: Basic {TOKEN}\r\n\r\n");
    assert_eq!(exchange(&f, raw.as_bytes()).status, 401);
    assert!(
        f.backend.calls().is_empty(),
        "backend reached without a token: {:?}",
        f.backend.calls()
    );
}

#[test]
fn an_empty_configured_token_keeps_the_api_closed() {
    let f = start(AdminSettings::default());
    assert_eq!(request(&f, "GET", "/api/stats", Some(""), "").status, 401);
    assert_eq!(request(&f, "GET", "/api/stats", None, "").status, 401);
    assert_eq!(request(&f, "GET", "/metrics", None, "").status, 200);
}

#[test]
fn metrics_is_open_by_default_and_can_require_the_token() {
    let f = fixture();
    let r = request(&f, "GET", "/metrics", None, "");
    assert_eq!(r.status, 200);
    assert!(r.head.contains("content-type: text/plain; version=0.0.4"));
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("shoal_publish_received_total{qos=\"1\"} 1\n"), "{text}");
    assert_eq!(request(&f, "POST", "/metrics", None, "").status, 405);

    let closed = start(AdminSettings {
        token: TOKEN.into(),
        metrics_require_token: true,
        ..Default::default()
    });
    assert_eq!(request(&closed, "GET", "/metrics", None, "").status, 401);
    assert_eq!(request(&closed, "GET", "/metrics", Some(TOKEN), "").status, 200);
}

#[test]
fn clients_list_passes_search_and_paging() {
    let f = fixture();
    let r = get(&f, "/api/clients?search=sens%20or&limit=10&offset=20");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["total"], 1);
    assert_eq!(r.json()["clients"][0]["id"], "sensor-1");
    assert_eq!(r.json()["clients"][0]["protocol"], "5.0");
    let r = get(&f, "/api/clients");
    assert_eq!(r.status, 200);
    assert_eq!(
        f.backend.calls(),
        vec![
            "clients search=\"sens or\" limit=10 offset=20".to_owned(),
            format!("clients search=\"\" limit={DEFAULT_LIMIT} offset=0"),
        ]
    );
}

#[test]
fn list_paging_rejects_bad_numbers() {
    let f = fixture();
    for q in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "offset=1.5",
        "limit=99999999999999999999999",
    ] {
        for path in ["/api/clients", "/api/subscriptions", "/api/retained"] {
            let r = get(&f, &format!("{path}?{q}"));
            assert_eq!(r.status, 400, "{path}?{q}");
            assert!(r.json()["error"].as_str().unwrap().contains('`'));
        }
    }
    assert_eq!(get(&f, "/api/clients?search=%zz").status, 400);
    assert!(f.backend.calls().is_empty());
}

#[test]
fn one_client_is_found_by_percent_encoded_id() {
    let f = fixture();
    let r = get(&f, "/api/clients/sensor%2F1%20%C3%A9");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["id"], "sensor/1 é");
    assert_eq!(v["session_expiry_secs"], 3600);
    assert_eq!(v["subscriptions"][0]["filter"], "a/+");
    assert_eq!(v["subscriptions"][0]["identifier"], 7);
    let r = get(&f, "/api/clients/ghost");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no client `ghost`");
    assert_eq!(get(&f, "/api/clients/%ff").status, 400);
    assert_eq!(get(&f, "/api/clients/").status, 400);
    assert_eq!(request(&f, "POST", "/api/clients/x", Some(TOKEN), "").status, 405);
}

#[test]
fn disconnect_calls_the_backend_and_maps_not_found() {
    let f = fixture();
    assert_eq!(request(&f, "DELETE", "/api/clients/sensor-1", Some(TOKEN), "").status, 204);
    let r = request(&f, "DELETE", "/api/clients/ghost", Some(TOKEN), "");
    assert_eq!(r.status, 404);
    assert_eq!(f.backend.calls(), vec!["disconnect sensor-1", "disconnect ghost"]);
}

#[test]
fn subscriptions_pass_the_filter_text() {
    let f = fixture();
    let r = get(&f, "/api/subscriptions?filter=a%2F%2B&limit=5");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["client_id"], "sensor-1");
    assert_eq!(f.backend.calls(), vec!["subscriptions a/+ 5 0"]);
}

#[test]
fn retained_validates_the_filter_and_marks_binary_payloads() {
    let f = fixture();
    let r = get(&f, "/api/retained?filter=a/%23");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v[0]["payload"], "21.5");
    assert_eq!(v[0]["qos"], 1);
    assert_eq!(v[0]["binary"], false);
    assert_eq!(v[1]["payload"], serde_json::Value::Null);
    assert_eq!(v[1]["binary"], true);
    assert_eq!(v[1]["size"], 2);
    assert_eq!(get(&f, "/api/retained").status, 200);
    for bad in ["a/%23/b", "a%2B", "%00"] {
        assert_eq!(get(&f, &format!("/api/retained?filter={bad}")).status, 400, "{bad}");
    }
    assert_eq!(f.backend.calls(), vec!["retained a/# 100", "retained # 100"]);
}

#[test]
fn delete_retained_takes_the_rest_of_the_path_as_the_topic() {
    let f = fixture();
    assert_eq!(request(&f, "DELETE", "/api/retained/a/b%20c", Some(TOKEN), "").status, 204);
    assert_eq!(request(&f, "DELETE", "/api/retained/a%2F%23", Some(TOKEN), "").status, 400);
    assert_eq!(request(&f, "DELETE", "/api/retained/a/+", Some(TOKEN), "").status, 400);
    assert_eq!(request(&f, "GET", "/api/retained/a", Some(TOKEN), "").status, 405);
    assert_eq!(f.backend.calls(), vec!["delete_retained a/b c"]);
}

#[test]
fn publish_validates_topic_qos_and_body() {
    let f = fixture();
    let ok = |body: &str| request(&f, "POST", "/api/publish", Some(TOKEN), body);
    let r = ok(r#"{"topic":"a/b","payload":"hi","qos":1,"retain":true}"#);
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["accepted"], true);
    assert_eq!(ok(r#"{"topic":"x"}"#).status, 202);
    for bad in [
        r#"{"topic":"a/+","payload":"x"}"#,
        r#"{"topic":"","payload":"x"}"#,
        r#"{"topic":"a","qos":3}"#,
        r#"{"topic":"a","qos":-1}"#,
        r#"{"topic":"a","extra":1}"#,
        r#"{"payload":"x"}"#,
        r#"not json"#,
        r#""#,
        r#"[1,2]"#,
    ] {
        let r = ok(bad);
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.json()["error"].is_string());
    }
    assert_eq!(ok(r#"{"topic":"busy"}"#).status, 503);
    assert_eq!(request(&f, "GET", "/api/publish", Some(TOKEN), "").status, 405);
    assert_eq!(
        f.backend.calls(),
        vec![
            "publish a/b b\"hi\" AtLeastOnce true",
            "publish x b\"\" AtMostOnce false",
            "publish busy b\"\" AtMostOnce false"
        ]
    );
}

#[test]
fn config_is_served_with_secrets_redacted() {
    let f = fixture();
    let r = get(&f, "/api/config");
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["workers"], 2);
    assert_eq!(v["admin"]["token"], "<redacted>");
    assert_eq!(v["admin"]["bind"], "127.0.0.1:8080");
    assert_eq!(v["listeners"][0]["tls"]["private_key"], "<redacted>");
    assert_eq!(v["listeners"][0]["tls"]["cert"], "c.pem");
    assert_eq!(v["auth"]["password_file"], serde_json::Value::Null);
    assert_eq!(v["auth"]["Client_Secret"], "<redacted>");
    assert!(!String::from_utf8_lossy(&r.body).contains("leak-me"));
}

#[test]
fn info_tells_the_dashboard_the_ws_url() {
    let f = fixture();
    let v = get(&f, "/api/info").json();
    assert_eq!(v["ws_url"], "ws://127.0.0.1:8083/mqtt");
    let none = start(AdminSettings { token: TOKEN.into(), ..Default::default() });
    assert_eq!(get(&none, "/api/info").json()["ws_url"], serde_json::Value::Null);
}

#[test]
fn unknown_paths_and_methods_get_json_errors() {
    let f = fixture();
    let r = request(&f, "GET", "/nope", None, "");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no such path");
    assert_eq!(get(&f, "/api/nope").status, 404);
    assert_eq!(get(&f, "/api").status, 404);
    assert_eq!(request(&f, "PUT", "/api/stats", Some(TOKEN), "").status, 405);
    assert_eq!(request(&f, "DELETE", "/", None, "").status, 405);
    let r = request(&f, "PATCH", "/api/clients", Some(TOKEN), "");
    assert_eq!(r.status, 405);
    assert!(r.head.contains("allow: get"));
}

#[test]
fn dashboard_assets_are_served_with_a_content_security_policy() {
    let f = fixture();
    for (path, ty) in [
        ("/", "text/html"),
        ("/index.html", "text/html"),
        ("/assets/style.css", "text/css"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/mqtt.js", "text/javascript"),
    ] {
        let r = request(&f, "GET", path, None, "");
        assert_eq!(r.status, 200, "{path}");
        assert!(r.head.contains(&format!("content-type: {ty}")), "{path}");
        assert!(r.head.contains("content-security-policy: default-src 'self'"));
        assert!(!r.body.is_empty());
    }
    let html = String::from_utf8(request(&f, "GET", "/", None, "").body).unwrap();
    assert!(html.contains("/assets/app.js") && html.contains("/assets/style.css"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "dashboard must not load from elsewhere"
    );
}

#[test]
fn oversized_and_chunked_requests_get_4xx() {
    let f = fixture();
    let mut big = b"GET /api/stats HTTP/1.1\r\nX-Pad: ".to_vec();
    big.resize(http::MAX_HEAD_BYTES + 100, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(exchange(&f, &big).status, 431);
    let raw = format!(
        "POST /api/publish HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        http::MAX_BODY_BYTES + 1
    );
    assert_eq!(exchange(&f, raw.as_bytes()).status, 413);
    let raw = "POST /api/publish HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(exchange(&f, raw.as_bytes()).status, 411);
    let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
    assert_eq!(exchange(&f, format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).status, 431);
}

/// Deterministic pseudo-random bytes (xorshift), so a failure replays.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn garbage_requests_get_an_answer_and_never_stop_the_server() {
    let f = fixture();
    let mut inputs: Vec<Vec<u8>> = vec![
        b"\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET /api/stats\r\n\r\n".to_vec(),
        b"GET /api/stats HTTP/9.9\r\n\r\n".to_vec(),
        b"GET  HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /%%%% HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /api/clients/%C3 HTTP/1.1\r\n\r\n".to_vec(),
        b"GET /api/retained?filter=%%%&&&== HTTP/1.1\r\n\r\n".to_vec(),
        format!("GET /api/retained?filter=%E2%82 HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").into_bytes(),
        format!("GET /api/clients/%C3 HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n").into_bytes(),
        [
            format!("POST /api/publish HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 3\r\n\r\n").as_bytes(),
            &b"\xff\xfe\x00"[..],
        ]
        .concat(),
        b"POST /api/publish HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\n: empty\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(), // a TLS ClientHello
    ];
    for seed in 1..200u64 {
        let mut g = garbage(seed, (seed as usize * 7) % 300 + 1);
        if seed % 3 == 0 {
            let mut line = b"GET /api/".to_vec();
            line.extend_from_slice(&g);
            g = line;
        }
        g.extend_from_slice(b"\r\n\r\n");
        inputs.push(g);
    }
    for raw in &inputs {
        let r = exchange(&f, raw);
        assert!(
            (400..500).contains(&r.status) || r.status == 200,
            "{:?} -> {}",
            String::from_utf8_lossy(raw),
            r.status
        );
        if r.status >= 400 {
            assert!(r.json()["error"].is_string());
        }
    }
    // Still serving.
    assert_eq!(get(&f, "/api/stats").status, 200);
}

#[test]
fn a_silent_client_does_not_block_other_requests() {
    let f = fixture();
    let _idle: Vec<TcpStream> =
        (0..4).map(|_| TcpStream::connect(f.server.local_addr()).unwrap()).collect();
    assert_eq!(get(&f, "/api/stats").status, 200);
}

#[test]
fn connections_beyond_the_cap_get_503_at_once() {
    let f = fixture();
    // Each silent connection holds a connection thread until it times out.
    let idle: Vec<TcpStream> =
        (0..MAX_CONCURRENT).map(|_| TcpStream::connect(f.server.local_addr()).unwrap()).collect();
    // The accept thread counts a connection when it accepts it: wait until all are.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut status = 0;
    while std::time::Instant::now() < deadline {
        status = get(&f, "/api/stats").status;
        if status == 503 {
            break;
        }
    }
    assert_eq!(status, 503);
    drop(idle);
    // Closed connections end their threads (read sees EOF), and service resumes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(&f, "/api/stats").status != 200 {
        assert!(std::time::Instant::now() < deadline, "never recovered");
    }
}

#[test]
fn shutdown_stops_accepting() {
    let f = fixture();
    let addr = f.server.local_addr();
    f.server.shutdown();
    // The listener socket is closed with the accept thread.
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn redact_walks_nested_objects_and_arrays() {
    let mut v = serde_json::json!([{ "a": { "TOKEN": 5, "passwordFile": "/p" } }, { "key": "k" }]);
    redact(&mut v);
    assert_eq!(
        v,
        serde_json::json!([{ "a": { "TOKEN": "<redacted>", "passwordFile": "<redacted>" } }, { "key": "k" }])
    );
}

/// A broker side with plausible, moving numbers, for looking at the dashboard.
struct Demo {
    metrics: Metrics,
    calls: Mutex<u64>,
    clients: Vec<ClientInfo>,
}

impl Demo {
    fn new() -> Demo {
        let clients = (0..23)
            .map(|i| ClientInfo {
                id: format!("sensor-{i:03}"),
                username: (i % 3 != 0).then(|| "plant-a".to_owned()),
                address: (i % 5 != 4).then(|| format!("10.1.0.{}:{}", 20 + i, 40000 + i)),
                listener: Some("tcp://0.0.0.0:1883".into()),
                protocol: if i % 4 == 0 { "3.1.1".into() } else { "5.0".into() },
                connected: i % 5 != 4,
                connected_since: Some(1_763_700_000 + i * 97),
                keep_alive_secs: 60,
                inflight: i % 4,
                queued: if i % 5 == 4 { 12 + i } else { 0 },
                queued_bytes: if i % 5 == 4 { (12 + i) * 180 } else { 0 },
                bytes_in: 1000 * i * i,
                bytes_out: 4000 * i,
            })
            .collect();
        Demo {
            metrics: Metrics::new(
                std::time::Instant::now(),
                2,
                vec!["tcp://0.0.0.0:1883".into(), "ws://0.0.0.0:8083".into()],
            ),
            calls: Mutex::new(0),
            clients,
        }
    }
}

impl AdminBackend for Demo {
    fn stats(&self) -> MetricsSnapshot {
        let n = {
            let mut c = self.calls.lock();
            *c += 1;
            *c
        };
        let wave = |k: u64, p: u64| ((n * k + p) % 17) as i64 - 8;
        let c = WorkerCounters {
            publish_received: [n * 900 + (n * n % 300), n * 300, n * 10],
            publish_sent: [n * 2400 + (n * n * 7 % 900), n * 800, n * 20],
            bytes_received: n * 160_000,
            bytes_sent: n * 420_000,
            dropped_queue_full: n * 3 + (n * n % 11),
            dropped_expired: n / 4,
            packets_received: n * 1500,
            connects: 40 + n / 10,
            ..Default::default()
        };
        let mut g = WorkerGauges::default();
        for _ in 0..(180 + wave(3, 1) * 3) {
            g.add_connection(0, shoal_core::ProtocolVersion::V5);
        }
        for _ in 0..(60 + wave(5, 2)) {
            g.add_connection(1, shoal_core::ProtocolVersion::V3_1_1);
        }
        g.sessions_online = 240;
        g.sessions_offline = 37;
        g.subscriptions = 912;
        g.queued = (400 + wave(7, 3) * 30) as u64;
        g.inflight = (120 + wave(2, 5) * 8) as u64;
        self.metrics.publish_worker(0, &c, &g);
        self.metrics.set_retained(1_204);
        self.metrics.snapshot(std::time::Instant::now())
    }
    fn clients(&self, q: &ClientQuery) -> ClientPage {
        let hits: Vec<_> = self
            .clients
            .iter()
            .filter(|c| q.search.is_empty() || c.id.contains(&q.search))
            .cloned()
            .collect();
        ClientPage {
            total: hits.len(),
            clients: hits.into_iter().skip(q.offset).take(q.limit).collect(),
        }
    }
    fn client(&self, id: &str) -> Option<ClientDetail> {
        let info = self.clients.iter().find(|c| c.id == id)?.clone();
        Some(ClientDetail {
            info,
            clean_start: false,
            session_expiry_secs: Some(86_400),
            subscriptions: vec![
                ClientSubscription {
                    filter: "plant-a/+/setpoint".into(),
                    qos: 1,
                    no_local: false,
                    retain_as_published: false,
                    identifier: None,
                },
                ClientSubscription {
                    filter: "firmware/#".into(),
                    qos: 2,
                    no_local: false,
                    retain_as_published: true,
                    identifier: Some(3),
                },
            ],
        })
    }
    fn disconnect(&self, _id: &str) -> Result<(), AdminError> {
        Ok(())
    }
    fn subscriptions(&self, filter: &str, limit: usize, offset: usize) -> Vec<SubscriptionInfo> {
        self.clients
            .iter()
            .flat_map(|c| {
                [
                    SubscriptionInfo {
                        client_id: c.id.clone(),
                        filter: "plant-a/+/setpoint".into(),
                        qos: 1,
                    },
                    SubscriptionInfo {
                        client_id: c.id.clone(),
                        filter: format!("devices/{}/cmd", c.id),
                        qos: 2,
                    },
                ]
            })
            .filter(|s| s.filter.contains(filter))
            .skip(offset)
            .take(limit)
            .collect()
    }
    fn retained(&self, _filter: &TopicFilter, limit: usize) -> Vec<RetainedInfo> {
        (0..12)
            .map(|i| RetainedInfo {
                topic: format!("plant-a/line-{}/temperature", i),
                qos: QoS::AtLeastOnce,
                payload: Bytes::from(format!("{{\"celsius\": {}.{}, \"ok\": true}}", 20 + i, i)),
            })
            .chain([RetainedInfo {
                topic: "firmware/latest".into(),
                qos: QoS::ExactlyOnce,
                payload: Bytes::from_static(&[0x7f, 0x45, 0x4c, 0x46, 0xff]),
            }])
            .take(limit)
            .collect()
    }
    fn delete_retained(&self, _topic: &TopicName) -> Result<(), AdminError> {
        Ok(())
    }
    fn publish(&self, _msg: AdminPublish) -> Result<(), AdminError> {
        Ok(())
    }
    fn config_json(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

/// Serves the dashboard over [`Demo`] for `SHOAL_ADMIN_DEMO_SECS` seconds on
/// `SHOAL_ADMIN_DEMO_PORT` (token `demo`), to look at it in a browser:
/// `SHOAL_ADMIN_DEMO_SECS=60 cargo test -p shoal-server --lib serve_dashboard_demo -- --ignored`.
#[test]
#[ignore = "manual: serves the dashboard for a look in a browser"]
fn serve_dashboard_demo() {
    let secs: u64 =
        std::env::var("SHOAL_ADMIN_DEMO_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let port: u16 =
        std::env::var("SHOAL_ADMIN_DEMO_PORT").ok().and_then(|s| s.parse().ok()).unwrap_or(18080);
    let ws_url = std::env::var("SHOAL_ADMIN_DEMO_WS").ok();
    let settings = AdminSettings {
        bind: ([127, 0, 0, 1], port).into(),
        token: "demo".into(),
        metrics_require_token: false,
        ws_url,
    };
    let server = AdminServer::start(settings, Arc::new(Demo::new())).unwrap();
    eprintln!("dashboard: http://{}/#token=demo", server.local_addr());
    std::thread::sleep(Duration::from_secs(secs));
}
