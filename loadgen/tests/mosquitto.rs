//! End-to-end: the `shoal-loadgen` binary against a real Mosquitto, when one is
//! installed (skipped with a message otherwise). Each test starts its own Mosquitto on
//! a free loopback port and kills that process on drop.

// Harness helpers outside `#[test]` functions: a failure here is a test failure.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const LOADGEN: &str = env!("CARGO_BIN_EXE_shoal-loadgen");

fn mosquitto_binary() -> Option<PathBuf> {
    ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A Mosquitto process of our own, on a free port.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start(extra_config: &str) -> Option<Self> {
        let Some(bin) = mosquitto_binary() else {
            eprintln!("skipping: mosquitto is not installed");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        let mut f = std::fs::File::create(&conf).unwrap();
        writeln!(f, "listener {port} 127.0.0.1\npersistence false\nset_tcp_nodelay true").unwrap();
        writeln!(f, "log_dest stderr\nlog_type error\n{extra_config}").unwrap();
        drop(f);
        make_readable(dir.path(), &conf);
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = Self { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(m)
    }
}

/// Mosquitto drops to its own user when started as root; let it read the config.
fn make_readable(dir: &Path, conf: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    let _ = std::fs::set_permissions(conf, std::fs::Permissions::from_mode(0o644));
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn loadgen(args: &[&str]) -> Output {
    Command::new(LOADGEN).args(args).output().unwrap()
}

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
