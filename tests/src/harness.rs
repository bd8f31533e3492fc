//! Starting real brokers for the suites, and running external clients against them.
//!
//! - [`TestBroker`]: the broker in this process via `shoal_server::Broker`, from a TOML
//!   snippet merged over [`DEFAULT_CONFIG`], on `127.0.0.1:0`; shut down on drop.
//! - [`BrokerProcess`]: the `shoal` binary as a child process, for what only a process
//!   shows: signals, exit codes, stderr, resident memory. Killed on drop.
//! - [`wait_until`]: poll a condition up to a deadline. Tests synchronise on observable
//!   state, never on a sleep.
//! - [`ExternalTool`] and [`run_with_timeout`]: paho-mqtt (Python) and mosquitto clients.
//!   Locally a missing tool skips the test with a message; with `CI=true` it fails.
//!
//! The raw protocol client is in `crate::raw`.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use shoal_server::{Broker, Config};

/// The configuration every in-process test broker starts from; a test's snippet is
/// merged over it table by table (`[limits]` keys add to or replace these).
pub const DEFAULT_CONFIG: &str = r#"
workers = 2
# Tests that need the durable store give it a temporary data_dir; the rest must not
# write into the working directory.
persistence = false

[[listener]]
bind = "127.0.0.1:0"
transport = "tcp"

[limits]
connect_timeout_secs = 10
"#;

/// How often [`wait_until`] re-checks its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A broker running in this process. Shut down (gracefully) on drop.
pub struct TestBroker {
    broker: Option<Broker>,
    addr: SocketAddr,
    addrs: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
}

impl TestBroker {
    /// A broker with [`DEFAULT_CONFIG`].
    pub fn start() -> Self {
        Self::with_config("")
    }

    /// A broker with `snippet` merged over [`DEFAULT_CONFIG`].
    pub fn with_config(snippet: &str) -> Self {
        let toml = merged_config(snippet);
        let config = Config::from_toml_str(&toml, "test")
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n{toml}"));
        let broker = Broker::start(config).unwrap_or_else(|e| panic!("broker start: {e}"));
        Self::around(broker)
    }

    fn around(broker: Broker) -> Self {
        let addr = broker.local_addr();
        let addrs = broker.local_addrs();
        let admin = broker.admin_addr();
        Self { broker: Some(broker), addr, addrs, admin }
    }

    /// A broker with `snippet` merged over [`DEFAULT_CONFIG`] and an application's
    /// hooks (`Broker::start_with_hooks`).
    pub fn with_hooks(snippet: &str, hooks: Arc<dyn shoal_server::auth::Hooks>) -> Self {
        let toml = merged_config(snippet);
        let config = Config::from_toml_str(&toml, "test")
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n{toml}"));
        let broker =
            Broker::start_with_hooks(config, hooks).unwrap_or_else(|e| panic!("broker start: {e}"));
        Self::around(broker)
    }

    /// A broker with `snippet` merged over [`DEFAULT_CONFIG`] and these durable-store
    /// options (`Broker::start_with_store_options`: a fault injector standing in for a
    /// slow disk, a smaller channel). The snippet turns persistence on.
    pub fn with_store_options(
        snippet: &str,
        options: shoal_server::persist::PersistOptions,
    ) -> Self {
        let toml = merged_config(snippet);
        let config = Config::from_toml_str(&toml, "test")
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n{toml}"));
        let broker = Broker::start_with_store_options(config, options)
            .unwrap_or_else(|e| panic!("broker start: {e}"));
        Self::around(broker)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every listener's address, in config order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The admin listener's address (the snippet must set `[admin] enabled = true`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("the test config enables [admin]")
    }

    /// The port, for clients that take host and port apart.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Graceful shutdown, asserting it succeeds.
    pub fn shutdown(mut self) {
        if let Some(broker) = self.broker.take() {
            broker.shutdown().unwrap_or_else(|e| panic!("broker shutdown: {e}"));
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(broker) = self.broker.take() {
            // A failing shutdown here must not turn a test failure into a double panic.
            let _ = broker.shutdown();
        }
    }
}

/// Merges a TOML snippet over [`DEFAULT_CONFIG`]: tables merge key by key, anything
/// else (including the `listener` array) is replaced.
pub fn merged_config(snippet: &str) -> String {
    let mut base: toml::Table = DEFAULT_CONFIG.parse().unwrap();
    let overlay: toml::Table = snippet
        .parse()
        .unwrap_or_else(|e| panic!("test config snippet is not TOML: {e}\n{snippet}"));
    merge(&mut base, overlay);
    toml::to_string(&base).unwrap()
}

fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

/// Polls `cond` until it holds, panicking with `what` after `within`.
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// The `shoal` binary, built once per test run.
///
/// `SHOAL_BIN` overrides the path. Otherwise the binary sits next to this test
/// executable's `deps/` directory; `cargo test -p shoal-tests` does not build another
/// package's binary, so we run `cargo build -p shoal-server --bin shoal` once (a no-op
/// when it is fresh, which also covers a stale binary).
pub fn shoal_binary() -> PathBuf {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("SHOAL_BIN") {
            return Ok(PathBuf::from(path));
        }
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let deps = exe.parent().ok_or("test executable has no directory")?;
        let profile_dir =
            if deps.ends_with("deps") { deps.parent().ok_or("deps/ has no parent")? } else { deps };
        let binary = profile_dir.join(format!("shoal{}", std::env::consts::EXE_SUFFIX));
        build_shoal(profile_dir)?;
        if binary.is_file() {
            Ok(binary)
        } else {
            Err(format!("{} missing after cargo build", binary.display()))
        }
    });
    match found {
        Ok(path) => path.clone(),
        Err(e) => panic!("cannot get the shoal binary: {e}"),
    }
}

fn build_shoal(profile_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("tests/ has no parent")?;
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace).args(["build", "--quiet", "-p", "shoal-server", "--bin", "shoal"]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    // `cargo test` runs this process with the variables cargo sets for a crate
    // (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, OUT_DIR, ...). Build scripts watch some of
    // them (ring's: `rerun-if-env-changed=CARGO_MANIFEST_DIR`), so a nested cargo that
    // inherited them found ring changed and rebuilt it and everything above it, and the
    // next `cargo test` rebuilt them back: with release LTO on a loaded machine that
    // outlasted the timeout below and failed every test needing the binary. The nested
    // build gets the environment `cargo test` was started with.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(set_by_cargo_for_a_crate) {
            cmd.env_remove(&key);
        }
    }
    // A guard against a hung build, not a measure: a fresh binary makes this a no-op,
    // a stale one costs a link with LTO, minutes when the machine is busy.
    let out = run_with_timeout(&mut cmd, Duration::from_secs(1200));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo build -p shoal-server failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Whether cargo sets the environment variable `key` for the crate it builds or the
/// test it runs, rather than reading it as configuration.
fn set_by_cargo_for_a_crate(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || key.starts_with("CARGO_BIN_EXE_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

/// The `shoal` binary running as a child process. Killed on drop.
pub struct BrokerProcess {
    child: Child,
    addr: SocketAddr,
    listening: Vec<(String, SocketAddr)>,
    /// Everything the process wrote to stderr so far (filled by a reader thread).
    stderr: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
}

impl BrokerProcess {
    /// Starts `shoal --listen 127.0.0.1:0 <extra args>` and waits for its
    /// `listening on tcp://<addr>` line. Without `--data-dir` in `extra_args` it runs
    /// `--in-memory`, so that tests never write into the working directory.
    pub fn start(extra_args: &[&str]) -> Self {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra_args);
        Self::spawn(&args, 1)
    }

    /// Starts `shoal --config <file> --in-memory` and waits for the `listening on` lines
    /// of its `listeners` listeners (see [`BrokerProcess::listening`]).
    pub fn start_with_config(config: &Path, listeners: usize) -> Self {
        let config = config.display().to_string();
        Self::spawn(&["--config", &config], listeners)
    }

    fn spawn(args: &[&str], listeners: usize) -> Self {
        let mut cmd = Command::new(shoal_binary());
        cmd.args(args);
        if !args.contains(&"--data-dir") {
            cmd.arg("--in-memory");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn shoal: {e}"));
        let stderr = capture(child.stderr.take());
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            thread::spawn(move || {
                // Keep draining stdout so the broker never blocks on a full pipe.
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut process = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            listening: Vec::new(),
            stderr,
            status: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while process.listening.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let Some(url) = line.trim().strip_prefix("listening on ") else { continue };
                    let Some((transport, addr)) = url.split_once("://") else { continue };
                    let addr: SocketAddr =
                        addr.parse().unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
                    if transport == "tcp" && process.addr.port() == 0 {
                        process.addr = addr;
                    }
                    process.listening.push((transport.to_owned(), addr));
                }
                Err(_) => panic!(
                    "shoal printed {} of {listeners} `listening on` lines within 20 s; stderr:\n{}",
                    process.listening.len(),
                    process.stderr()
                ),
            }
        }
        process
    }

    /// Every listener as (transport, address), in config order.
    pub fn listening(&self) -> &[(String, SocketAddr)] {
        &self.listening
    }

    /// The TCP listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"TERM"`, `"INT"`, ...) to this process only, by its PID.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("run kill: {e}"));
        assert!(status.success(), "kill -s {name} {} failed", self.pid());
    }

    /// Waits for the process to exit; `None` if it is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.status {
                return Some(status);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Resident memory in KiB, from `/proc/<pid>/status` (Linux only).
    pub fn vm_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads a pipe to the end on a thread, into a shared string.
fn capture(pipe: Option<impl Read + Send + 'static>) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    if let Some(mut pipe) = pipe {
        let sink = Arc::clone(&text);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(buf.get(..n).unwrap_or_default()));
                }
            }
        });
    }
    text
}

/// Runs a command to completion, killing it after `timeout`. The returned output's
/// status is a failure if it was killed.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let stdout = read_to_end(child.stdout.take());
    let stderr = read_to_end(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait().unwrap_or_else(|e| panic!("wait {cmd:?}: {e}"));
        }
        thread::sleep(POLL_INTERVAL);
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Reads a pipe to its end on a thread (the pipe closes when the child exits).
fn read_to_end(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut out);
        }
        out
    })
}

/// An external client program a test needs.
#[derive(Debug, Clone, Copy)]
pub enum ExternalTool {
    /// `python3` with `paho-mqtt` 2.x importable.
    PahoMqtt,
    /// `mosquitto_pub` and `mosquitto_sub` (Debian `mosquitto-clients`).
    MosquittoClients,
    /// Node.js with MQTT.js installed in `tests/js` (`npm ci` there).
    MqttJs,
    /// Debian's Chromium (`/usr/bin/chromium`, or `CHROMIUM`) and playwright-core in
    /// `tests/js`, for MQTT.js in a browser page.
    Chromium,
    /// `python3` with `prometheus_client` (the reference exposition-format parser).
    PrometheusClient,
    /// Debian's Chromium alone (`/usr/bin/chromium`, or `CHROMIUM`), driven over the
    /// DevTools protocol by `crate::cdp` (the dashboard test).
    HeadlessChromium,
    /// `mosquitto_passwd` (Debian `mosquitto`).
    MosquittoPasswd,
}

/// The directory of the Node.js scripts and their `package.json`.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

impl ExternalTool {
    /// Whether the tool is usable here. When it is not: with `CI=true` this panics (CI
    /// installs every tool, so a missing one is a broken pipeline); otherwise it prints
    /// why the test is skipped and returns `false`.
    pub fn available(self) -> bool {
        let ok = match self {
            Self::PahoMqtt => Command::new("python3")
                .args([
                    "-c",
                    "import paho.mqtt, sys; sys.exit(0 if paho.mqtt.__version__ >= '2' else 1)",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            Self::MosquittoClients => ["mosquitto_pub", "mosquitto_sub"].iter().all(|tool| {
                Command::new(tool)
                    .arg("--help")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            }),
            Self::Chromium => {
                let chromium = std::env::var_os("CHROMIUM")
                    .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
                chromium.is_file()
                    && js_dir().join("node_modules/playwright-core/package.json").is_file()
                    && Self::MqttJs.available()
            }
            Self::MqttJs => {
                js_dir().join("node_modules/mqtt/package.json").is_file()
                    && Command::new("node")
                        .arg("--version")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
            }
            Self::HeadlessChromium => Path::new(&crate::cdp::chromium_binary()).is_file(),
            Self::PrometheusClient => Command::new("python3")
                .args(["-c", "import prometheus_client.parser"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            Self::MosquittoPasswd => Command::new("mosquitto_passwd")
                .arg("--help")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok(),
        };
        if ok {
            return true;
        }
        let install = match self {
            Self::PahoMqtt => "pip install 'paho-mqtt>=2,<3'",
            Self::MosquittoClients => "apt-get install mosquitto-clients",
            Self::MqttJs => "apt-get install nodejs npm && (cd tests/js && npm ci)",
            Self::Chromium => "apt-get install chromium && (cd tests/js && npm ci)",
            Self::PrometheusClient => "pip install prometheus-client",
            Self::HeadlessChromium => "apt-get install chromium",
            Self::MosquittoPasswd => "apt-get install mosquitto",
        };
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{self:?} is required in CI but missing; {install}");
        }
        eprintln!("SKIPPED: {self:?} is not installed here ({install}); CI runs this test");
        false
    }
}
