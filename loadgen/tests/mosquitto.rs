//! End-to-end: the `shoal-loadgen` binary against a real Mosquitto, when one is
//! installed (skipped with a message otherwise). Each test starts its own Mosquitto on
//! a free loopback port and kills that process on drop.

// Harness helpers outside `#[test]` functions: a failure here is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{loadgen, Mosquitto, LOADGEN};

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
    let sub = Command::new(LOADGEN)
        .args(["sub", "--port", &port, "-t", "lg/console/#", "-C", "2", "-v", "-q", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Publish until the subscriber has subscribed and exits after two messages.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sub = Some(sub);
    let mut output = None;
    while output.is_none() {
        assert!(Instant::now() < deadline, "sub did not receive two messages");
        let out =
            loadgen(&["pub", "--port", &port, "-t", "lg/console/a", "-m", "hello", "-q", "1"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(50));
        if let Some(mut child) = sub.take() {
            match child.try_wait().unwrap() {
                Some(_) => output = Some(child.wait_with_output().unwrap()),
                None => sub = Some(child),
            }
        }
    }
    let out = output.unwrap();
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
