//! End-to-end: the `shoal-loadgen` binary against a real Mosquitto, when one is
//! installed (skipped with a message otherwise). Each test starts its own Mosquitto on
//! a free loopback port and kills that process on drop.

// Harness helpers outside `#[test]` functions: a failure here is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use common::{loadgen, publish_until_subscriber_exits, Mosquitto};

#[test]
fn short_pairs_run_is_verified_clean() {
    let Some(broker) = Mosquitto::start("allow_anonymous true") else { return };
    let port = broker.port.to_string();
    let pid = broker.child.id().to_string();
    for (qos, protocol) in [("1", "3.1.1"), ("2", "5")] {
        let out = loadgen(&[
            "pairs",
            "--port",
            &port,
            "--pairs",
            "2",
            "-q",
            qos,
            "-V",
            protocol,
            "--rate",
            "2000",
            "-d",
            "1",
            "--warmup",
            "0.2",
            "--json",
            "--quiet",
            "--broker-pid",
            &pid,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "loadgen failed: {stderr}");
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["scenario"], "pairs");
        assert_eq!(j["connections"]["connected"], 4);
        assert!(j["delivered"]["msgs"].as_u64().unwrap() > 500, "{j}");
        assert_eq!(j["verification"]["clean"], true, "{j}");
        assert_eq!(j["verification"]["lost"], 0, "{j}");
        assert_eq!(j["verification"]["undelivered"], 0, "{j}");
        assert!(j["latency_us"]["p50"].as_f64().unwrap() > 0.0);
        assert!(j["broker"]["cpu_secs"].is_number());
    }
}

#[test]
fn console_sub_prints_what_pub_sends() {
    let Some(broker) = Mosquitto::start("allow_anonymous true") else { return };
    let port = broker.port.to_string();
    let out = publish_until_subscriber_exits(
        &["--port", &port, "-t", "lg/console/#", "-C", "2", "-v", "-q", "1"],
        &["--port", &port, "-t", "lg/console/a", "-m", "hello", "-q", "1"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.lines().next(), Some("lg/console/a hello"));
}

#[test]
fn refusal_is_reported_in_words() {
    let Some(broker) = Mosquitto::start("allow_anonymous false") else { return };
    let port = broker.port.to_string();
    let out = loadgen(&["pub", "--port", &port, "-V", "5", "-t", "x", "-m", "y"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connection refused: Not authorized (0x87)"), "{stderr}");
}
