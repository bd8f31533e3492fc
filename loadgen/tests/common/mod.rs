//! Test harness shared by the end-to-end tests: a Mosquitto of our own on free loopback
//! ports, killed on drop, and a way to run the `shoal-loadgen` binary.
//!
//! A missing Mosquitto (or `openssl`, for the TLS tests) skips a test with a message,
//! except under CI (`CI` set), where it fails: CI must run these.

// Harness helpers outside `#[test]` functions: a failure here is a test failure.
#![allow(clippy::unwrap_used, clippy::panic, dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const LOADGEN: &str = env!("CARGO_BIN_EXE_shoal-loadgen");

/// A tool the test needs, or `None` (skip) with a message; panics under CI.
pub fn require(what: &str, candidates: &[&str]) -> Option<PathBuf> {
    let found = candidates.iter().map(PathBuf::from).find(|p| p.exists());
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "{what} is not installed, and CI is set");
        eprintln!("skipping: {what} is not installed");
    }
    found
}

pub fn mosquitto_binary() -> Option<PathBuf> {
    require(
        "mosquitto",
        &["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto"],
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A Mosquitto process of our own.
pub struct Mosquitto {
    pub child: Child,
    /// The first listener's port.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Mosquitto with one plain listener on a free port and `extra_config`.
    pub fn start(extra_config: &str) -> Option<Self> {
        let port = free_port();
        let config = format!(
            "listener {port} 127.0.0.1\npersistence false\nset_tcp_nodelay true\n\
             log_dest stderr\nlog_type error\n{extra_config}\n"
        );
        Self::start_config(tempfile::tempdir().unwrap(), &config, &[port])
    }

    /// Mosquitto with `config` written in `dir` (kept until drop), once every port in
    /// `ports` accepts connections.
    pub fn start_config(dir: tempfile::TempDir, config: &str, ports: &[u16]) -> Option<Self> {
        let bin = mosquitto_binary()?;
        let conf = dir.path().join("mosquitto.conf");
        std::fs::File::create(&conf).unwrap().write_all(config.as_bytes()).unwrap();
        make_readable(dir.path());
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let m = Self { child, port: ports.first().copied().unwrap_or(0), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        for &port in ports {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "mosquitto did not start listening on {port}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Some(m)
    }
}

/// Mosquitto drops to its own user when started as root: let it read the directory and
/// every file in it (throwaway test keys included).
pub fn make_readable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644));
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn loadgen(args: &[&str]) -> Output {
    Command::new(LOADGEN).args(args).output().unwrap()
}

/// Runs `shoal-loadgen sub SUB_ARGS` (which must end by itself, e.g. with `-C`) and
/// keeps running `shoal-loadgen pub PUB_ARGS` until it has, since the subscriber may
/// not have subscribed when the first message goes out. Returns the subscriber's output.
pub fn publish_until_subscriber_exits(sub_args: &[&str], pub_args: &[&str]) -> Output {
    let mut sub = Command::new(LOADGEN)
        .arg("sub")
        .args(sub_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "sub did not end (did it receive its messages?)");
        let mut args = vec!["pub"];
        args.extend_from_slice(pub_args);
        let out = loadgen(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(50));
        if sub.try_wait().unwrap().is_some() {
            return sub.wait_with_output().unwrap();
        }
    }
}
