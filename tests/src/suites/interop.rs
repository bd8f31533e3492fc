//! Independent client implementations against Shoal: paho-mqtt (Python, 3.1.1 and 5)
//! and the mosquitto command-line clients. Run with timeouts; skipped locally when a
//! tool is missing, failing in CI (see `ExternalTool::available`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shoal_core::ProtocolVersion::{V3_1_1, V5};

use crate::harness::{run_with_timeout, wait_until, ExternalTool, TestBroker};
use crate::raw::{RawClient, DEADLINE};

const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

/// Subscribes, publishes to itself at QoS 0/1/2 once SUBACK is in, prints each
/// message as `topic qos payload`, exits 0 after three.
const PAHO_ROUND_TRIP: &str = r#"
import sys
import paho.mqtt.client as mqtt

port, version = int(sys.argv[1]), sys.argv[2]
proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
got = []

def on_connect(client, userdata, flags, reason_code, properties):
    if reason_code.is_failure:
        print("connect failed", reason_code, file=sys.stderr)
        sys.exit(2)
    client.subscribe("paho/#", qos=2)

def on_subscribe(client, userdata, mid, reason_codes, properties):
    for qos in (0, 1, 2):
        client.publish(f"paho/{qos}", f"hello {qos}", qos=qos)

def on_message(client, userdata, msg):
    got.append(f"{msg.topic} {msg.qos} {msg.payload.decode()}")
    if len(got) == 3:
        client.disconnect()

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-{version}", protocol=proto)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.connect("127.0.0.1", port, keepalive=30)
client.loop_forever()
for line in sorted(got):
    print(line)
"#;

/// Publishes argv[3] to argv[4] at QoS 1 with retain per argv[5] and exits.
const PAHO_PUBLISH: &str = r#"
import sys
import paho.mqtt.client as mqtt

port, version, payload, topic, retain = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1"
proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-pub-{version}", protocol=proto)
client.connect("127.0.0.1", port, keepalive=30)
client.loop_start()
info = client.publish(topic, payload, qos=1, retain=retain)
info.wait_for_publish(timeout=10)
client.disconnect()
client.loop_stop()
sys.exit(0 if info.is_published() else 3)
"#;

fn paho_round_trip(version: &str) {
    if !ExternalTool::PahoMqtt.available() {
        return;
    }
    let broker = TestBroker::start();
    let out = run_with_timeout(
        Command::new("python3").args(["-c", PAHO_ROUND_TRIP, &broker.port().to_string(), version]),
        TOOL_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "paho v{version} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["paho/0 0 hello 0", "paho/1 1 hello 1", "paho/2 2 hello 2"],
        "paho v{version}"
    );
}

#[test]
fn paho_v311_publishes_and_receives_at_every_qos() {
    paho_round_trip("3");
}

#[test]
fn paho_v5_publishes_and_receives_at_every_qos() {
    paho_round_trip("5");
}

#[test]
fn paho_publishes_to_raw_subscribers_of_both_versions() {
    if !ExternalTool::PahoMqtt.available() {
        return;
    }
    let broker = TestBroker::start();
    let mut sub4 = RawClient::connect(broker.addr(), V3_1_1, "raw4");
    let mut sub5 = RawClient::connect(broker.addr(), V5, "raw5");
    sub4.subscribe_one("from/paho", 1);
    sub5.subscribe_one("from/paho", 1);
    for version in ["3", "5"] {
        let payload = format!("paho v{version}");
        let out = run_with_timeout(
            Command::new("python3").args([
                "-c",
                PAHO_PUBLISH,
                &broker.port().to_string(),
                version,
                &payload,
                "from/paho",
                "0",
            ]),
            TOOL_TIMEOUT,
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        for sub in [&mut sub4, &mut sub5] {
            let got = sub.expect_publish_acked();
            assert_eq!((got.payload, got.qos), (payload.clone().into_bytes(), 1));
        }
    }
}

fn mosquitto_pub(port: u16, args: &[&str]) {
    let out = run_with_timeout(
        Command::new("mosquitto_pub").args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args),
        TOOL_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mosquitto_round_trip(protocol: &str) {
    if !ExternalTool::MosquittoClients.available() {
        return;
    }
    let broker = TestBroker::start();
    let port = broker.port().to_string();
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", protocol, "-t", "mosq/#", "-q", "2"])
        .args(["-C", "1", "-W", "10", "-F", "%t %q %p"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // mosquitto_sub cannot tell us (through a pipe, its output is block-buffered) when
    // its SUBSCRIBE has been acknowledged, so publish until it has received one message
    // and exited (-C 1); a publish that raced ahead of the subscription is simply lost.
    let mut last_publish: Option<Instant> = None;
    wait_until(DEADLINE, "mosquitto_sub to receive a message", || {
        if let Ok(Some(_)) = sub.try_wait() {
            return true;
        }
        if last_publish.map_or(true, |t| t.elapsed() > Duration::from_millis(250)) {
            mosquitto_pub(
                broker.port(),
                &["-V", protocol, "-t", "mosq/a", "-q", "2", "-m", "hi mosquitto"],
            );
            last_publish = Some(Instant::now());
        }
        false
    });
    let out = sub.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mosquitto_sub ({protocol}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "mosq/a 2 hi mosquitto", "mosquitto_sub ({protocol})");
}

#[test]
fn mosquitto_clients_round_trip_v311() {
    mosquitto_round_trip("mqttv311");
}

#[test]
fn mosquitto_clients_round_trip_v5() {
    mosquitto_round_trip("mqttv5");
}

#[test]
fn mosquitto_clients_round_trip_v31() {
    mosquitto_round_trip("mqttv31");
}

#[test]
fn mosquitto_retained_message_reaches_a_later_subscriber() {
    if !ExternalTool::MosquittoClients.available() {
        return;
    }
    let broker = TestBroker::start();
    mosquitto_pub(broker.port(), &["-t", "mosq/kept", "-q", "1", "-r", "-m", "retained hi"]);
    let out = run_with_timeout(
        Command::new("mosquitto_sub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port().to_string(),
            "-t",
            "mosq/#",
            "-C",
            "1",
            "-W",
            "5",
            "-F",
            "%t %r %p",
        ]),
        TOOL_TIMEOUT,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "mosq/kept 1 retained hi");
}

#[test]
fn paho_retained_message_reaches_mosquitto_sub() {
    if !ExternalTool::PahoMqtt.available() || !ExternalTool::MosquittoClients.available() {
        return;
    }
    let broker = TestBroker::start();
    let out = run_with_timeout(
        Command::new("python3").args([
            "-c",
            PAHO_PUBLISH,
            &broker.port().to_string(),
            "5",
            "from paho",
            "mixed/kept",
            "1",
        ]),
        TOOL_TIMEOUT,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_with_timeout(
        Command::new("mosquitto_sub").args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port().to_string(),
            "-V",
            "mqttv311",
            "-t",
            "mixed/kept",
            "-C",
            "1",
            "-W",
            "5",
        ]),
        TOOL_TIMEOUT,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from paho");
}
