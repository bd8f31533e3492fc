//! Operations (issue 8) against a running broker: `$SYS` values after known traffic,
//! client lifecycle events, `/metrics` through the reference Prometheus parser, every
//! admin API endpoint with and without the token, `shoal check-config`, and the
//! dashboard in headless Chromium under real traffic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_core::ProtocolVersion;

use crate::cdp::Browser;
use crate::harness::{run_with_timeout, shoal_binary, wait_until, ExternalTool, TestBroker};
use crate::http::request;
use crate::raw::{text, ConnectOptions, Incoming, RawClient};

const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
const TOKEN: &str = "ops-test-token";
/// Values are sampled once a second and `$SYS` goes out every second in these tests.
const SETTLE: Duration = Duration::from_secs(15);

/// Where tests leave files for a human to look at (screenshots).
fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts")
}

/// Reads `$SYS` publishes into `seen` until `done(seen)` holds, or panics.
fn sys_until(
    client: &mut RawClient,
    what: &str,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + SETTLE;
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}; $SYS so far: {seen:#?}");
        if let Ok(Incoming::Publish(p)) = client.recv(left.min(Duration::from_millis(500))) {
            seen.insert(p.topic.clone(), text(&p.payload));
        }
    }
    seen
}

fn num(seen: &BTreeMap<String, String>, topic: &str) -> Option<u64> {
    seen.get(&format!("$SYS/broker/{topic}"))?.parse().ok()
}

#[test]
fn sys_topics_count_known_traffic() {
    let broker = TestBroker::with_config("[admin]\nsys_interval_secs = 1\n");
    let mut sub = RawClient::connect(broker.addr(), V311, "sys-sub");
    sub.subscribe_one("t/#", 1);
    let mut publisher = RawClient::connect(broker.addr(), V311, "sys-pub");
    for i in 0..5u8 {
        // One of them retained, so the retained count has a user message in it.
        publisher.publish("t/zero", &[i], 0, i == 0);
    }
    for i in 0..3u8 {
        publisher.publish("t/one", &[i], 1, false);
    }
    for _ in 0..8 {
        let p = sub.expect_publish();
        if p.qos == 1 {
            sub.ack(&p);
        }
    }
    let mut watcher = RawClient::connect(broker.addr(), V311, "sys-watch");
    watcher.subscribe_one("$SYS/broker/#", 0);
    let seen = sys_until(&mut watcher, "$SYS to show the traffic", |s| {
        num(s, "publish/messages/received") == Some(8)
            && num(s, "clients/connected") == Some(3)
            && num(s, "subscriptions/count") == Some(2)
            && num(s, "publish/messages/sent").is_some_and(|n| n >= 8)
            // The user's retained message, and the $SYS values themselves.
            && num(s, "retained messages/count").is_some_and(|n| n > 1)
    });
    // Mosquitto's names and formats.
    assert!(seen["$SYS/broker/version"].starts_with("shoal version "), "{seen:#?}");
    assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"));
    assert_eq!(num(&seen, "clients/total"), Some(3));
    // CONNECT ×3, SUBSCRIBE ×2, PUBLISH ×8, PUBACK ×3 from the subscriber at least.
    assert!(num(&seen, "messages/received").is_some_and(|n| n >= 16), "{seen:#?}");
    assert!(num(&seen, "bytes/received").is_some_and(|n| n > 0));
    assert!(num(&seen, "bytes/sent").is_some_and(|n| n > 0));
    assert_eq!(num(&seen, "publish/messages/dropped"), Some(0));
    for window in ["1min", "5min", "15min"] {
        let topic = format!("$SYS/broker/load/publish/received/{window}");
        let v: f64 = seen[&topic].parse().unwrap();
        assert!(v >= 0.0, "{topic} = {v}");
    }
    // Retained: a client subscribing later gets the current values at once.
    let mut late = RawClient::connect(broker.addr(), V311, "sys-late");
    late.subscribe_one("$SYS/broker/clients/connected", 0);
    let p = late.expect_publish();
    assert!(p.retain, "$SYS values are retained");
    assert!(text(&p.payload).parse::<u64>().is_ok());
}

#[test]
fn sys_interval_zero_turns_sys_off() {
    let broker = TestBroker::with_config("[admin]\nsys_interval_secs = 0\n");
    let mut watcher = RawClient::connect(broker.addr(), V311, "nosys");
    watcher.subscribe_one("$SYS/#", 0);
    watcher.subscribe_one("sentinel", 0);
    // Well past a tick: a publish behind any $SYS value would arrive after it.
    std::thread::sleep(Duration::from_millis(1500));
    let mut p = RawClient::connect(broker.addr(), V311, "nosys-pub");
    p.publish("sentinel", b"x", 0, false);
    let got = watcher.expect_publish();
    assert_eq!(got.topic, "sentinel", "no $SYS before the sentinel");
}

/// Receives lifecycle events (topic suffix, JSON) until `count` have arrived.
fn events(client: &mut RawClient, count: usize) -> Vec<(String, Value)> {
    (0..count)
        .map(|_| {
            let p = client.expect_publish();
            assert!(!p.retain, "events are not retained");
            (p.topic.clone(), serde_json::from_slice(&p.payload).unwrap())
        })
        .collect()
}

#[test]
fn client_lifecycle_events_are_published() {
    let broker = TestBroker::with_config("[admin]\nclient_events = true\nsys_interval_secs = 0\n");
    let mut watcher = RawClient::connect(broker.addr(), V311, "watcher");
    // Not `+/+`: that would include the watcher's own `subscribed` event.
    watcher.subscribe_one("$SYS/broker/events/clients/ev%2F1/+", 0);
    watcher.subscribe_one("$SYS/broker/events/clients/ev-lost/+", 0);
    let opts = ConnectOptions::new(ProtocolVersion::V5, "ev/1").with_keep_alive(30);
    let (mut client, _) = RawClient::connect_with(broker.addr(), &opts);
    client.subscribe_one("a/b", 1);
    client.unsubscribe(&["a/b"]);
    client.disconnect();
    let got = events(&mut watcher, 4);
    let base = "$SYS/broker/events/clients/ev%2F1";
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            format!("{base}/connected"),
            format!("{base}/subscribed"),
            format!("{base}/unsubscribed"),
            format!("{base}/disconnected")
        ]
    );
    let connected = &got[0].1;
    assert_eq!(connected["client_id"], "ev/1");
    assert_eq!(connected["protocol"], "5.0");
    assert_eq!(connected["keep_alive_secs"], 30);
    assert_eq!(connected["clean_start"], true);
    assert!(connected["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(connected["ts"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(got[1].1["filter"], "a/b");
    assert_eq!(got[1].1["qos"], 1);
    assert_eq!(got[2].1["filter"], "a/b");
    assert_eq!(got[3].1["reason"], "client disconnected");

    // A connection that just goes away.
    let lost = RawClient::connect(broker.addr(), V311, "ev-lost");
    lost.drop_connection();
    let got = events(&mut watcher, 2);
    assert_eq!(got[0].0, "$SYS/broker/events/clients/ev-lost/connected");
    assert_eq!(got[0].1["protocol"], "3.1.1");
    assert_eq!(got[1].0, "$SYS/broker/events/clients/ev-lost/disconnected");
    assert_eq!(got[1].1["reason"], "connection lost");
}

fn admin_broker(extra: &str) -> TestBroker {
    TestBroker::with_config(&format!(
        "[admin]\nenabled = true\nbind = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
         sys_interval_secs = 1\n{extra}"
    ))
}

/// Parses exposition text with `prometheus_client`'s parser; returns
/// `{family: {"type": ..., "samples": [[name, labels, value], ...]}}`.
fn prometheus_parse(exposition: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("metrics.txt");
    std::fs::write(&input, exposition).unwrap();
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    out[fam.name] = {"type": fam.type, "samples": [[s.name, s.labels, s.value] for s in fam.samples]}
print(json.dumps(out))
"#;
    let out = run_with_timeout(
        Command::new("python3").args(["-c", script]).arg(&input),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{exposition}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of `family`'s sample `name` whose labels include `labels`.
fn sample(parsed: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let samples = parsed[family]["samples"].as_array().unwrap_or_else(|| {
        panic!("no family {family} in {parsed}");
    });
    samples
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {family}"))
}

#[test]
fn metrics_endpoint_parses_with_the_prometheus_reference_parser() {
    if !ExternalTool::PrometheusClient.available() {
        return;
    }
    let broker = admin_broker("");
    let admin = broker.admin_addr();
    let mut sub = RawClient::connect(broker.addr(), V311, "m-sub");
    sub.subscribe_one("m/#", 1);
    let opts = ConnectOptions::new(ProtocolVersion::V5, "m-pub");
    let (mut publisher, _) = RawClient::connect_with(broker.addr(), &opts);
    for i in 0..4u8 {
        publisher.publish("m/x", &[i], 1, false);
    }
    for _ in 0..4 {
        let p = sub.expect_publish();
        sub.ack(&p);
    }
    let mut body = String::new();
    wait_until(SETTLE, "/metrics to show 4 QoS 1 publishes", || {
        let r = request(admin, "GET", "/metrics", None, None);
        assert_eq!(r.status, 200);
        assert!(r.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
        body = r.text();
        body.contains("shoal_publish_received_total{qos=\"1\"} 4")
            && body.contains("shoal_subscriptions 1")
            && !body.contains("shoal_retained_messages 0\n")
    });
    let m = prometheus_parse(&body);
    let listener = format!("tcp://{}", broker.addr());
    let pr = "shoal_publish_received";
    assert_eq!(sample(&m, pr, "shoal_publish_received_total", &[("qos", "1")]), 4.0);
    assert_eq!(sample(&m, pr, "shoal_publish_received_total", &[("qos", "0")]), 0.0);
    assert_eq!(m[pr]["type"], "counter");
    let ps = "shoal_publish_sent";
    assert!(sample(&m, ps, "shoal_publish_sent_total", &[("qos", "1")]) >= 4.0);
    let c = "shoal_connections";
    assert_eq!(m[c]["type"], "gauge");
    let by = |protocol| sample(&m, c, c, &[("listener", &listener), ("protocol", protocol)]);
    assert_eq!((by("3.1.1"), by("5.0"), by("3.1")), (1.0, 1.0, 0.0));
    assert_eq!(sample(&m, "shoal_sessions", "shoal_sessions", &[("state", "online")]), 2.0);
    assert_eq!(sample(&m, "shoal_subscriptions", "shoal_subscriptions", &[]), 1.0);
    assert_eq!(sample(&m, "shoal_connects", "shoal_connects_total", &[]), 2.0);
    assert!(sample(&m, "shoal_bytes_received", "shoal_bytes_received_total", &[]) > 0.0);
    let busy = "shoal_worker_busy_seconds";
    assert!(sample(&m, busy, "shoal_worker_busy_seconds_total", &[("worker", "0")]) > 0.0);
    let retained = sample(&m, "shoal_retained_messages", "shoal_retained_messages", &[]);
    assert!(retained >= 1.0, "the $SYS values are retained: {retained}");
    // Without a token by default; a wrong method is refused.
    assert_eq!(request(admin, "POST", "/metrics", None, None).status, 405);
}

#[test]
fn admin_api_answers_every_endpoint_and_requires_the_token() {
    let broker = admin_broker("metrics_require_token = true\n");
    let a = broker.admin_addr();
    let get = |path: &str| request(a, "GET", path, Some(TOKEN), None);

    // No token, a wrong token: 401 with a challenge, for the API and /metrics alike.
    for (path, token) in [("/api/stats", None), ("/api/clients", Some("wrong")), ("/metrics", None)]
    {
        let r = request(a, "GET", path, token, None);
        assert_eq!(r.status, 401, "{path}");
        assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
        assert!(r.json()["error"].is_string());
    }
    assert_eq!(get("/metrics").status, 200);
    // The dashboard page itself needs no token (it asks for one).
    let page = request(a, "GET", "/", None, None);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<html"));

    let mut alpha = RawClient::connect(broker.addr(), V311, "alpha");
    alpha.subscribe_one("s/1", 1);
    alpha.publish("r/1", b"one", 0, true);
    alpha.publish("r/2", &[0xff, 0xfe], 1, true);
    let opts = ConnectOptions::new(ProtocolVersion::V5, "beta");
    let (mut beta, _) = RawClient::connect_with(broker.addr(), &opts);
    beta.subscribe_one("s/#", 0);

    let stats = get("/api/stats").json();
    assert_eq!(stats["version"], env!("CARGO_PKG_VERSION"));
    assert!(stats["counters"]["publish_received"].is_array());
    assert_eq!(get("/api/info").json()["version"], env!("CARGO_PKG_VERSION"));

    let page = get("/api/clients").json();
    assert_eq!(page["total"], 2);
    let ids: Vec<&str> =
        page["clients"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["alpha", "beta"]);
    assert_eq!(get("/api/clients?search=ALP").json()["total"], 1);
    let second = get("/api/clients?limit=1&offset=1").json();
    assert_eq!(
        (second["total"].as_u64(), second["clients"][0]["id"].as_str()),
        (Some(2), Some("beta"))
    );
    for bad in ["/api/clients?limit=0", "/api/clients?limit=abc", "/api/clients?offset=-1"] {
        let r = get(bad);
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.json()["error"].is_string());
    }

    let detail = get("/api/clients/alpha").json();
    assert_eq!(detail["connected"], true);
    assert_eq!(detail["protocol"], "3.1.1");
    assert_eq!(detail["keep_alive_secs"], 60);
    assert_eq!(detail["listener"], format!("tcp://{}", broker.addr()));
    assert!(detail["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(detail["bytes_in"].as_u64().unwrap() > 0);
    assert!(detail["connected_since"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(detail["subscriptions"][0]["filter"], "s/1");
    assert_eq!(detail["subscriptions"][0]["qos"], 1);
    assert_eq!(get("/api/clients/nobody").status, 404);

    let subs = get("/api/subscriptions").json();
    assert_eq!(subs.as_array().unwrap().len(), 2);
    let hash = get("/api/subscriptions?filter=s%2F%23").json();
    assert_eq!(hash[0]["client_id"], "beta");
    assert_eq!(hash.as_array().unwrap().len(), 1);

    let retained = get("/api/retained?filter=r%2F%23").json();
    assert_eq!(retained.as_array().unwrap().len(), 2, "{retained}");
    assert_eq!(
        (retained[0]["topic"].as_str(), retained[0]["payload"].as_str()),
        (Some("r/1"), Some("one"))
    );
    assert_eq!(retained[1]["binary"], true);
    assert_eq!(retained[1]["qos"], 1);
    assert_eq!(get("/api/retained?filter=a%2F%23%2Fb").status, 400);
    assert_eq!(request(a, "DELETE", "/api/retained/r%2F1", Some(TOKEN), None).status, 204);
    assert_eq!(request(a, "DELETE", "/api/retained/r%2F1", Some(TOKEN), None).status, 404);
    assert_eq!(get("/api/retained?filter=r%2F%23").json().as_array().unwrap().len(), 1);

    let publish = |body: &str| request(a, "POST", "/api/publish", Some(TOKEN), Some(body)).status;
    assert_eq!(publish(r#"{"topic":"s/1","payload":"from the API","qos":1}"#), 202);
    let p = alpha.expect_publish();
    assert_eq!((p.topic.as_str(), text(&p.payload).as_str()), ("s/1", "from the API"));
    alpha.ack(&p);
    for bad in [
        r#"{"topic":"s/+","payload":"x"}"#,
        r#"{"topic":"s/1","qos":3}"#,
        "not json",
        r#"{"topic":"s","extra":1}"#,
    ] {
        assert_eq!(publish(bad), 400, "{bad}");
    }

    let config = get("/api/config").json();
    assert_eq!(config["workers"], 2);
    assert_eq!(config["admin"]["token"], "<redacted>");
    assert!(!get("/api/config").text().contains(TOKEN));

    // Disconnect: the v5 client gets DISCONNECT 0x98 and the socket closes.
    assert_eq!(request(a, "DELETE", "/api/clients/beta", Some(TOKEN), None).status, 204);
    let before_close = beta.wait_closed(Duration::from_secs(10)).unwrap();
    assert!(before_close.contains(&Incoming::Disconnect(0x98)), "{before_close:?}");
    assert_eq!(request(a, "DELETE", "/api/clients/beta", Some(TOKEN), None).status, 404);
    wait_until(SETTLE, "beta to leave the client list", || {
        get("/api/clients").json()["total"] == 1
    });

    assert_eq!(get("/api/nothing").status, 404);
    assert_eq!(request(a, "PUT", "/api/stats", Some(TOKEN), None).status, 405);
    assert_eq!(request(a, "GET", "/api/publish", Some(TOKEN), None).status, 405);
}

#[test]
fn check_config_names_line_and_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[admin]\nenabled = true\ntoken = \"x\"\n").unwrap();
    let out = run_with_timeout(
        Command::new(shoal_binary()).arg("check-config").arg(&good),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "workers = 1\n\n[admin]\nsys_interval_secs = \"often\"\n").unwrap();
    let out = run_with_timeout(
        Command::new(shoal_binary()).arg("check-config").arg(&bad),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:4:", bad.display())), "{err}");
    assert!(err.contains("sys_interval_secs"), "{err}");
}

/// A free loopback port (bound and released; for a listener whose URL must be known
/// before the broker starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Publishes QoS 0 messages to `topic` until `stop` is set.
fn publish_until(
    addr: SocketAddr,
    topic: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut c = RawClient::connect(addr, V311, "dash-load");
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            c.publish(topic, b"load", 0, false);
            n += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        n
    })
}

#[test]
fn dashboard_shows_live_traffic_and_disconnects_a_client() {
    if !ExternalTool::HeadlessChromium.available() {
        return;
    }
    let ws_port = free_port();
    let broker = admin_broker(&format!(
        "ws_url = \"ws://127.0.0.1:{ws_port}/mqtt\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"tcp\"\n\n\
         [[listener]]\nbind = \"127.0.0.1:{ws_port}\"\ntransport = \"ws\"\n"
    ));
    let admin = broker.admin_addr();
    let mut victim = RawClient::connect(broker.addr(), V311, "victim");
    let mut browser = Browser::launch(&format!("http://{admin}/#token={TOKEN}"), (1366, 900));
    browser.wait_for(
        SETTLE,
        "the overview to show one connection",
        "document.getElementById('s-conn').textContent.trim() === '1'",
    );
    let idle = browser.eval("document.getElementById('s-in').textContent");

    let stop = Arc::new(AtomicBool::new(false));
    let load = publish_until(broker.addr(), "dash/load", stop.clone());
    browser.wait_for(
        SETTLE,
        "messages in /s to rise under traffic",
        "parseFloat(document.getElementById('s-in').textContent.replace(/[^0-9.]/g, '')) > 0",
    );
    browser.wait_for(
        SETTLE,
        "two connections",
        "document.getElementById('s-conn').textContent.trim() === '2'",
    );
    let busy = browser.eval("document.getElementById('s-in').textContent");
    assert_ne!(idle, busy, "the live number changed");
    browser.screenshot(&artifacts_dir().join("dashboard-overview.png"));

    // Clients tab: the disconnect button (armed by the first click, confirmed by the
    // second) disconnects the real client.
    browser.eval("document.querySelector('.tab[data-tab=clients]').click()");
    browser.wait_for(
        SETTLE,
        "victim's row",
        "!!document.querySelector('tr[data-client=\"victim\"] button')",
    );
    browser.screenshot(&artifacts_dir().join("dashboard-clients.png"));
    browser.eval(
        "(() => { const b = document.querySelector('tr[data-client=\"victim\"] button'); \
         b.click(); b.click(); return true; })()",
    );
    victim
        .wait_closed(Duration::from_secs(10))
        .expect("the dashboard's disconnect closes the client");
    browser.wait_for(
        SETTLE,
        "victim's row to go",
        "!document.querySelector('tr[data-client=\"victim\"]')",
    );
    stop.store(true, Ordering::Relaxed);
    assert!(load.join().unwrap() > 0);

    // Try it: the page's own MQTT-over-WebSocket client subscribes and publishes.
    let mut peer = RawClient::connect(broker.addr(), V311, "dash-peer");
    peer.subscribe_one("try/#", 0);
    browser.eval("document.querySelector('.tab[data-tab=try]').click()");
    browser.eval("document.getElementById('ws-connect').click()");
    browser.wait_for(
        SETTLE,
        "the page's MQTT client to connect",
        "document.getElementById('ws-state').textContent === 'connected'",
    );
    browser.eval(
        "(() => { document.getElementById('sub-topic').value = 'try/#'; \
         document.getElementById('sub-go').click(); \
         document.getElementById('pub-topic').value = 'try/from-page'; \
         document.getElementById('pub-payload').value = 'hello from chromium'; \
         document.getElementById('pub-go').click(); return true; })()",
    );
    let p = peer.expect_publish();
    assert_eq!(
        (p.topic.as_str(), text(&p.payload).as_str()),
        ("try/from-page", "hello from chromium")
    );
    peer.publish("try/to-page", b"hello from a raw client", 0, false);
    browser.wait_for(
        SETTLE,
        "the page to show the message",
        "document.getElementById('log').textContent.includes('hello from a raw client')",
    );
    let shot = browser.screenshot(&artifacts_dir().join("dashboard-try-it.png"));
    eprintln!("screenshots in {}", shot.parent().unwrap().display());
}

/// With the durable store on, `/metrics` shows its group commits: a QoS 1 message to
/// a persistent subscriber is committed before it is acknowledged.
#[test]
fn metrics_show_durable_store_commits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = TestBroker::with_config(&format!(
        "persistence = true\ndata_dir = {:?}\n[admin]\nenabled = true\nbind = \"127.0.0.1:0\"\n",
        data.to_str().unwrap()
    ));
    let mut sub =
        RawClient::connect_with(broker.addr(), &ConnectOptions::persistent(V311, "st-sub")).0;
    sub.subscribe_one("st/x", 1);
    let mut publisher = RawClient::connect(broker.addr(), V311, "st-pub");
    for i in 0..3u8 {
        publisher.publish("st/x", &[i], 1, false);
    }
    let value = |body: &str, name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    };
    let mut body = String::new();
    wait_until(SETTLE, "/metrics to count store commits", || {
        body = request(broker.admin_addr(), "GET", "/metrics", None, None).text();
        value(&body, "shoal_store_commit_batch_records_count") > 0.0
    });
    let commits = value(&body, "shoal_store_commit_seconds_count");
    assert_eq!(commits, value(&body, "shoal_store_commit_batch_records_count"));
    // At least the session, its subscription and the three queued-or-in-flight messages.
    assert!(value(&body, "shoal_store_commit_batch_records_sum") >= 4.0, "{body}");
    assert!(value(&body, "shoal_store_commit_seconds_sum") > 0.0, "{body}");
}

/// The samples named `name` in an exposition, summed over their labels; `name` may
/// spell out all of one sample's labels (`family{label="value"}`).
fn sum_samples(exposition: &str, name: &str) -> u64 {
    exposition
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn metrics_text(admin: SocketAddr) -> String {
    request(admin, "GET", "/metrics", None, None).text()
}

/// A v5 client `id` subscribed to a flood it never reads, and the flood's publisher:
/// far more than the socket buffers and `max_outgoing_bytes` hold (QoS 0 beyond them
/// is dropped), so the broker's write buffer for it stays full and a connection it
/// ends lingers on its DISCONNECT.
fn flooded_subscriber(broker: &TestBroker, id: &str) -> (RawClient, RawClient) {
    let opts = ConnectOptions::new(ProtocolVersion::V5, id);
    let (mut victim, _) = RawClient::connect_with(broker.addr(), &opts);
    victim.subscribe_one("flood", 0);
    let mut publisher = RawClient::connect(broker.addr(), V311, "flooder");
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..300 {
        publisher.publish("flood", &chunk, 0, false);
    }
    publisher.ping();
    (victim, publisher)
}

/// A connection the broker ended stays open up to `CLOSE_LINGER` (3 s) to write what it
/// owes, but it is no longer a client connection: the gauge drops at the next sample.
/// The victim reads nothing until the gauge has dropped, so the broker still lingers on
/// its DISCONNECT; had the gauge waited for the linger to end, that DISCONNECT would
/// have been thrown away with the rest of the buffer.
#[test]
fn kicked_client_leaves_the_connection_gauge_while_its_connection_lingers() {
    let broker = admin_broker("");
    let admin = broker.admin_addr();
    let (mut victim, _publisher) = flooded_subscriber(&broker, "victim");
    let gauge = || sum_samples(&metrics_text(admin), "shoal_connections");
    wait_until(SETTLE, "the gauge to count both clients", || gauge() == 2);
    assert_eq!(request(admin, "DELETE", "/api/clients/victim", Some(TOKEN), None).status, 204);
    wait_until(SETTLE, "the gauge to drop the kicked client", || gauge() == 1);
    let before_close = victim.expect_closed(Duration::from_secs(10));
    assert!(
        before_close.contains(&Incoming::Disconnect(0x98)),
        "the DISCONNECT was still owed when the gauge dropped"
    );
}

/// The same for a takeover: the sample that counts the new connection (connects and
/// gauges are sampled together) no longer counts the old one, still lingering.
#[test]
fn taken_over_connection_leaves_the_connection_gauge_while_it_lingers() {
    let broker = admin_broker("");
    let admin = broker.admin_addr();
    let (mut old, _publisher) = flooded_subscriber(&broker, "twice");
    let opts = ConnectOptions::new(ProtocolVersion::V5, "twice");
    let (_new, _) = RawClient::connect_with(broker.addr(), &opts);
    let mut sample = (0, 0);
    wait_until(SETTLE, "a sample after the takeover", || {
        let body = metrics_text(admin);
        sample =
            (sum_samples(&body, "shoal_connects_total"), sum_samples(&body, "shoal_connections"));
        sample.0 == 3
    });
    assert_eq!(sample.1, 2, "the publisher and the new connection, not the old one");
    let before_close = old.expect_closed(Duration::from_secs(10));
    assert!(
        before_close.contains(&Incoming::Disconnect(0x8E)),
        "the DISCONNECT was still owed when the gauge was sampled"
    );
}

/// A message over a v5 subscriber's Maximum Packet Size is not sent [MQTT-3.1.2-25] and
/// counts as `too_large`, whichever way it goes: QoS 0, QoS 1 sent at once, and QoS 1
/// that waited in the queue behind a full Receive Maximum window.
#[test]
fn messages_over_the_maximum_packet_size_are_dropped_as_too_large() {
    let broker = admin_broker("");
    let admin = broker.admin_addr();
    let mut opts = ConnectOptions::new(ProtocolVersion::V5, "small");
    opts.max_packet_size = Some(128);
    opts.receive_maximum = Some(1);
    let (mut sub, _) = RawClient::connect_with(broker.addr(), &opts);
    sub.subscribe_one("mps/#", 1);
    let mut publisher = RawClient::connect(broker.addr(), V311, "mps-pub");
    let big = [b'x'; 500];
    publisher.publish("mps/now", &big, 0, false);
    publisher.publish("mps/now", &big, 1, false);
    publisher.publish("mps/held", b"first", 1, false);
    let first = sub.expect_publish();
    assert_eq!(first.payload, b"first", "an oversized message reached the client");
    // The window (1) is full: these two wait in the session queue.
    publisher.publish("mps/queued", &big, 1, false);
    publisher.publish("mps/queued", b"fits", 1, false);
    sub.ack(&first);
    let fits = sub.expect_publish_acked();
    assert_eq!(fits.payload, b"fits", "an oversized message reached the client");
    let dropped = |body: &str, cause: &str| {
        let sample = format!("shoal_messages_dropped_total{{cause=\"{cause}\"}}");
        sum_samples(body, &sample)
    };
    let mut body = String::new();
    wait_until(SETTLE, "three too_large drops", || {
        body = metrics_text(admin);
        dropped(&body, "too_large") == 3
    });
    assert_eq!(dropped(&body, "queue_full"), 0, "{body}");
}

/// [MQTT-3.1.2-25] a message over an online subscriber's Maximum Packet Size is
/// discarded when it arrives, not after waiting in the queue: it never takes the queue
/// slot a message that fits needs. With one slot and a full window, the large message
/// would otherwise hold the slot and the small one behind it be dropped as queue_full.
#[test]
fn an_oversized_message_takes_no_queue_slot() {
    let broker = admin_broker("[limits]\nmax_queued_messages = 1\n");
    let admin = broker.admin_addr();
    let mut opts = ConnectOptions::new(ProtocolVersion::V5, "small-slot");
    opts.max_packet_size = Some(128);
    opts.receive_maximum = Some(1);
    let (mut sub, _) = RawClient::connect_with(broker.addr(), &opts);
    sub.subscribe_one("slot/t", 1);
    let mut publisher = RawClient::connect(broker.addr(), V311, "slot-pub");
    publisher.publish("slot/t", b"first", 1, false);
    let first = sub.expect_publish();
    assert_eq!(first.payload, b"first");
    // The window (1) is full; the queue has one slot.
    publisher.publish("slot/t", &[b'x'; 500], 1, false);
    publisher.publish("slot/t", b"fits", 1, false);
    sub.ack(&first);
    let fits = sub.expect_publish_acked();
    assert_eq!(fits.payload, b"fits", "the message that fits was not delivered");
    let dropped = |body: &str, cause: &str| {
        sum_samples(body, &format!("shoal_messages_dropped_total{{cause=\"{cause}\"}}"))
    };
    let mut body = String::new();
    wait_until(SETTLE, "one too_large drop", || {
        body = metrics_text(admin);
        dropped(&body, "too_large") == 1
    });
    assert_eq!(dropped(&body, "queue_full"), 0, "{body}");
}

/// A message refused for taking an offline session's queue past `max_queued_bytes` is
/// counted with the count overflows, as `queue_full`.
#[test]
fn messages_past_max_queued_bytes_count_as_queue_full() {
    // Each message weighs 500 bytes (topic 5 + payload 495): two fit in 1024, the third
    // does not.
    let broker = admin_broker("[limits]\nmax_queued_bytes = 1024\n");
    let admin = broker.admin_addr();
    let opts = ConnectOptions::persistent(ProtocolVersion::V5, "qb-metrics");
    let (mut sub, _) = RawClient::connect_with(broker.addr(), &opts);
    sub.subscribe_one("qbm/t", 1);
    sub.disconnect();
    let mut publisher = RawClient::connect(broker.addr(), V311, "qbm-pub");
    for _ in 0..3 {
        publisher.publish("qbm/t", &[b'x'; 495], 1, false);
    }
    let dropped = |body: &str, cause: &str| {
        sum_samples(body, &format!("shoal_messages_dropped_total{{cause=\"{cause}\"}}"))
    };
    let mut body = String::new();
    wait_until(SETTLE, "one queue_full drop", || {
        body = metrics_text(admin);
        dropped(&body, "queue_full") == 1
    });
    // What stays queued, on the gauge and on the client: the two that fitted. Gauges
    // are counted on the workers' once-a-second tick.
    wait_until(SETTLE, "the queued bytes on the gauge", || {
        body = metrics_text(admin);
        sum_samples(&body, "shoal_queued_bytes") == 1000
    });
    let client = request(admin, "GET", "/api/clients/qb-metrics", Some(TOKEN), None).json();
    assert_eq!(client["queued"], 2, "{client}");
    assert_eq!(client["queued_bytes"], 1000, "{client}");
    let (mut sub, present) = RawClient::connect_with(broker.addr(), &opts);
    assert!(present);
    for _ in 0..2 {
        assert_eq!(sub.expect_publish_acked().payload.len(), 495);
    }
}
