//! Driving headless Chromium through the Chrome DevTools Protocol, for the dashboard
//! test: [`Browser::launch`] starts `chromium --headless --no-sandbox` on a page, and
//! [`Browser::eval`] runs JavaScript in it over the page's DevTools WebSocket.
//!
//! The WebSocket client is the minimum RFC 6455 asks of a client (masked text frames
//! out; text, continuation, ping and close frames in), written here so the test needs
//! nothing beyond the `chromium` package. The browser is killed on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http;

/// The Chromium binary: `$CHROMIUM` or Debian's `/usr/bin/chromium`.
pub fn chromium_binary() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

/// A headless Chromium showing one page.
pub struct Browser {
    child: Child,
    /// The page's DevTools socket; `None` only while launching.
    ws: Option<TcpStream>,
    next_id: u64,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium on `url` with a fresh profile, and attaches to the page.
    pub fn launch(url: &str, window: (u32, u32)) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(chromium_binary())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={},{}", window.0, window.1))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium_binary()));
        // Built first, so that a failure below still kills the browser.
        let mut browser = Browser { child, ws: None, next_id: 0, profile };
        let port = devtools_port(&mut browser.child, browser.profile.path());
        let devtools = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        let ws_url = loop {
            let list = http::request(devtools, "GET", "/json/list", None, None).json();
            let page = list.as_array().and_then(|pages| {
                pages
                    .iter()
                    .find(|p| p["type"] == "page")
                    .and_then(|p| p["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            });
            if let Some(u) = page {
                break u;
            }
            assert!(Instant::now() < deadline, "Chromium shows no page: {list}");
            std::thread::sleep(Duration::from_millis(100));
        };
        browser.ws = Some(ws_connect(devtools, &ws_url));
        browser
    }
}

/// Waits for Chromium to write its DevTools port into the profile directory.
fn devtools_port(child: &mut Child, profile: &Path) -> u16 {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                return port;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("Chromium exited at start: {status}");
        }
        assert!(Instant::now() < deadline, "Chromium did not open its DevTools port");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Browser {
    /// Sends a DevTools command and returns its `result`.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        let ws = self.ws.as_mut().expect("attached to the page");
        ws_send_text(ws, msg.as_bytes());
        loop {
            let text = ws_recv_text(ws);
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                if let Some(err) = v.get("error") {
                    panic!("{method} failed: {err}");
                }
                return v["result"].clone();
            }
            // Events we did not subscribe to are ignored.
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("JavaScript `{expression}` threw: {ex}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is `true`, panicking with `what` after `within`.
    pub fn wait_for(&mut self, within: Duration, what: &str, expression: &str) {
        let deadline = Instant::now() + within;
        loop {
            if self.eval(expression) == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out after {within:?} waiting for: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG screenshot of the page to `path` (directories created).
    pub fn screenshot(&mut self, path: &Path) -> PathBuf {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let data = r["data"].as_str().unwrap_or_default();
        let png = base64_decode(data);
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
        path.to_path_buf()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a WebSocket to `ws://host:port/path` (the host part of `url` is replaced by
/// `addr`, where Chromium listens).
fn ws_connect(addr: SocketAddr, url: &str) -> TcpStream {
    let path = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or_else(|| panic!("not a ws:// URL: {url}"));
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    // Read the response head byte by byte, so no frame bytes are consumed with it.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "WebSocket upgrade refused: {head}");
    s
}

fn ws_send_text(s: &mut TcpStream, payload: &[u8]) {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81u8];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();
}

/// Reads one whole text message (joining continuation frames; answering pings).
fn ws_recv_text(s: &mut TcpStream) -> String {
    let mut message = Vec::new();
    loop {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).unwrap();
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).unwrap();
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).unwrap();
            len = u64::from_be_bytes(b);
        }
        let mut data = vec![0u8; usize::try_from(len).unwrap()];
        s.read_exact(&mut data).unwrap();
        match opcode {
            0x8 => panic!("DevTools closed the WebSocket"),
            0x9 => continue, // ping: Chromium does not need the pong within a test
            0xA => continue,
            _ => message.extend_from_slice(&data),
        }
        if fin {
            return String::from_utf8(message).unwrap();
        }
    }
}

/// Standard base64 (with padding) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter_map(value) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
