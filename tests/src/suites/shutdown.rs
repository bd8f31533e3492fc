//! Graceful shutdown (signals to the `shoal` process, `Broker::shutdown` in process)
//! and start-up failures from a bad configuration file.

use std::process::Command;
use std::time::Duration;

use shoal_core::ProtocolVersion::{V3_1_1, V5};

use crate::harness::{run_with_timeout, shoal_binary, BrokerProcess, TestBroker};
use crate::raw::{RawClient, DEADLINE};

/// How long a graceful shutdown of an idle broker may take.
const EXIT_DEADLINE: Duration = Duration::from_secs(10);

fn graceful_shutdown_on(signal: &str) {
    let mut broker = BrokerProcess::start(&["--workers", "2"]);
    let mut v5 = RawClient::connect(broker.addr(), V5, "v5-listener");
    let mut v311 = RawClient::connect(broker.addr(), V3_1_1, "v311-listener");
    v5.ping();
    broker.signal(signal);
    // v5 3.14: the server MAY send DISCONNECT before closing; Shoal sends 0x8B.
    assert_eq!(
        v5.expect_closed_with_reason(EXIT_DEADLINE),
        Some(0x8B),
        "SIG{signal}: v5 client did not get DISCONNECT Server shutting down"
    );
    let seen = v311.expect_closed(EXIT_DEADLINE);
    assert!(seen.is_empty(), "3.1.1 client got {seen:?} (3.1.1 has no server DISCONNECT)");
    let status = broker
        .wait_exit(EXIT_DEADLINE)
        .unwrap_or_else(|| panic!("still running {EXIT_DEADLINE:?} after SIG{signal}"));
    assert!(status.success(), "SIG{signal}: exit status {status}, stderr:\n{}", broker.stderr());
}

#[test]
fn sigterm_disconnects_v5_clients_with_0x8b_and_exits_zero() {
    graceful_shutdown_on("TERM");
}

#[test]
fn sigint_disconnects_v5_clients_with_0x8b_and_exits_zero() {
    graceful_shutdown_on("INT");
}

#[test]
fn sigterm_with_many_idle_clients_exits_promptly() {
    let mut broker = BrokerProcess::start(&[]);
    let mut clients: Vec<RawClient> =
        (0..200).map(|i| RawClient::connect(broker.addr(), V5, &format!("idle-{i}"))).collect();
    broker.signal("TERM");
    for c in &mut clients {
        assert_eq!(c.expect_closed_with_reason(EXIT_DEADLINE), Some(0x8B));
    }
    let status = broker.wait_exit(EXIT_DEADLINE).expect("exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn in_process_shutdown_disconnects_v5_clients_with_0x8b() {
    let broker = TestBroker::start();
    let mut v5 = RawClient::connect(broker.addr(), V5, "inproc");
    v5.subscribe_one("t", 1);
    let addr = broker.addr();
    broker.shutdown();
    assert_eq!(v5.expect_closed_with_reason(DEADLINE), Some(0x8B));
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

/// Runs `shoal` with `config` as its config file; returns (exit success, stderr, path).
fn run_with_config(config: &str) -> (bool, String, String) {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), config).unwrap();
    let path = file.path().display().to_string();
    let out = run_with_timeout(
        Command::new(shoal_binary()).args(["--listen", "127.0.0.1:0", "--config", &path]),
        EXIT_DEADLINE,
    );
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned(), path)
}

#[test]
fn bad_config_file_exits_nonzero_naming_file_line_and_key() {
    for (config, line, key) in [
        // Unknown key on line 3 of the file.
        ("workers = 1\n[limits]\nmax_inflight_typo = 5\n", 3, "max_inflight_typo"),
        // Wrong type on line 2.
        ("# comment\nworkers = \"two\"\n", 2, "workers"),
        // Well-typed but invalid value on line 4.
        ("workers = 1\n\n[limits]\nmax_packet_size = 0\n", 4, "max_packet_size"),
    ] {
        let (ok, stderr, path) = run_with_config(config);
        assert!(!ok, "{key}: shoal started with a bad config");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: "),
            "{key}: stderr does not start with `error: `:\n{stderr}"
        );
        assert!(stderr.contains(&path), "{key}: stderr does not name {path}:\n{stderr}");
        assert!(stderr.contains(key), "{key}: stderr does not name the key:\n{stderr}");
        assert!(
            stderr.contains(&format!(":{line}")) || stderr.contains(&format!("line {line}")),
            "{key}: stderr does not name line {line}:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{key}: a panic, not an error:\n{stderr}");
    }
}

#[test]
fn missing_config_file_exits_nonzero_naming_the_file() {
    let out = run_with_timeout(
        Command::new(shoal_binary()).args(["--config", "/nonexistent/shoal.toml"]),
        EXIT_DEADLINE,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("/nonexistent/shoal.toml"), "{stderr}");
}

#[test]
fn config_file_settings_take_effect_in_the_binary() {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), "workers = 1\n[limits]\nmax_packet_size = 512\n").unwrap();
    let broker = BrokerProcess::start(&["--config", file.path().to_str().unwrap()]);
    let mut client = RawClient::connect(broker.addr(), V5, "limited");
    client.publish("t", &[0; 100], 1, false);
    let _ = client.try_send(&crate::raw::wire::publish(V5, "t", &[0; 1024], 1, false, false, 7));
    assert_eq!(client.expect_closed_with_reason(DEADLINE), Some(0x95));
}
