//! The byte streams a [`RawClient`](super::RawClient) can speak MQTT over: plain TCP,
//! TLS (rustls client), and WebSocket over either, so every suite's byte-level checks
//! also run over the `tls`, `ws` and `wss` listeners.
//!
//! The WebSocket client here is written from RFC 6455 for the tests (the broker's
//! `ws.rs` is not used), so a framing bug on one side is not mirrored on the other.
//! Each `write` sends exactly one binary frame: a test splits a packet across frames by
//! sending it in pieces, and puts several packets in one frame by sending them at once.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

/// A connected byte stream to the broker.
pub trait ClientStream: Read + Write + Send {
    /// Bounds the next read (as `TcpStream::set_read_timeout`).
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
    /// Closes both directions of the socket underneath.
    fn shutdown(&mut self);
    /// Ends the sending direction of the socket underneath (a FIN) and nothing else: no
    /// TLS close_notify, no WebSocket close frame, as when the client's process dies.
    fn shutdown_write(&mut self);
}

impl ClientStream for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
    fn shutdown(&mut self) {
        let _ = TcpStream::shutdown(self, Shutdown::Both);
    }
    fn shutdown_write(&mut self) {
        let _ = TcpStream::shutdown(self, Shutdown::Write);
    }
}

/// TLS over TCP with rustls.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

impl ClientStream for TlsStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)
    }
    fn shutdown(&mut self) {
        self.conn.send_close_notify();
        let _ = self.conn.complete_io(&mut self.sock);
        let _ = self.sock.shutdown(Shutdown::Both);
    }
    fn shutdown_write(&mut self) {
        let _ = self.sock.shutdown(Shutdown::Write);
    }
}

/// Starts TLS to `localhost` on `tcp` and finishes the handshake.
///
/// # Errors
/// The handshake failed: the server refused the client's certificate, or the client
/// refused the server's. (With TLS 1.3 the server checks a client certificate after
/// the client has finished, so a refusal may only show on the first read.)
pub fn tls(tcp: TcpStream, config: Arc<ClientConfig>) -> io::Result<TlsStream> {
    tls_after(tcp, config, &[])
}

/// As [`tls`], with `prefix` (a PROXY header) sent in the same write as the ClientHello.
///
/// # Errors
/// As [`tls`].
pub fn tls_after(
    tcp: TcpStream,
    config: Arc<ClientConfig>,
    prefix: &[u8],
) -> io::Result<TlsStream> {
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut first = prefix.to_vec();
    while conn.wants_write() {
        conn.write_tls(&mut first)?;
    }
    (&tcp).write_all(&first)?;
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// MQTT over WebSocket over `S`.
pub struct WsStream<S> {
    inner: S,
    /// Bytes read from `inner` not yet parsed as frames.
    raw: Vec<u8>,
    /// Payload of binary frames not yet read by the caller.
    data: Vec<u8>,
    /// The server sent a close frame.
    closed: bool,
    /// Counter behind the frame masks (RFC 6455 wants them unpredictable to
    /// intermediaries; a test has none).
    mask_seed: u32,
}

/// What the server answered to the upgrade request, when it refused.
#[derive(Debug)]
pub struct Refused {
    /// The whole HTTP response head and body.
    pub response: String,
}

/// Sends the upgrade request for `path` with subprotocol `protocol` and reads the
/// answer.
///
/// # Errors
/// `Err(Ok(refused))` with the response when the server did not answer 101;
/// `Err(Err(io))` when the socket failed.
pub fn websocket<S: ClientStream>(
    mut inner: S,
    path: &str,
    protocol: &str,
) -> Result<WsStream<S>, Result<Refused, io::Error>> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
    );
    inner.write_all(request.as_bytes()).map_err(Err)?;
    inner.flush().map_err(Err)?;
    inner.set_read_timeout(Some(Duration::from_secs(10))).map_err(Err)?;
    let mut raw = Vec::new();
    let end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        match inner.read(&mut chunk) {
            Ok(0) => {
                return Err(Ok(Refused { response: String::from_utf8_lossy(&raw).into_owned() }))
            }
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(Err(e)),
        }
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        // Read the body too, for the assertion message.
        let mut rest = Vec::new();
        let _ = inner.read_to_end(&mut rest);
        raw.extend_from_slice(&rest);
        return Err(Ok(Refused { response: String::from_utf8_lossy(&raw).into_owned() }));
    }
    // RFC 6455 section 1.3's example key has this accept value.
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    raw.drain(..end);
    Ok(WsStream { inner, raw, data: Vec::new(), closed: false, mask_seed: 0x9e37_79b9 })
}

impl<S: ClientStream> WsStream<S> {
    /// Sends one frame with `opcode` (masked, as a client must).
    pub fn send_frame(&mut self, opcode: u8, fin: bool, payload: &[u8]) -> io::Result<()> {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&short.to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.mask_seed = self.mask_seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let mask = self.mask_seed.to_be_bytes();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.inner.write_all(&frame)?;
        self.inner.flush()
    }

    /// Parses complete frames from `raw` into `data`.
    fn parse(&mut self) -> io::Result<()> {
        loop {
            let [b0, b1, ..] = self.raw[..] else { return Ok(()) };
            if b1 & 0x80 != 0 {
                return Err(io::Error::other("server frame is masked"));
            }
            let (len, at) = match b1 & 0x7F {
                126 if self.raw.len() >= 4 => {
                    (usize::from(u16::from_be_bytes([self.raw[2], self.raw[3]])), 4)
                }
                127 if self.raw.len() >= 10 => {
                    let b: [u8; 8] = self.raw[2..10].try_into().unwrap();
                    (usize::try_from(u64::from_be_bytes(b)).unwrap(), 10)
                }
                126 | 127 => return Ok(()),
                n => (usize::from(n), 2),
            };
            if self.raw.len() < at + len {
                return Ok(());
            }
            let payload: Vec<u8> = self.raw.drain(..at + len).skip(at).collect();
            match b0 & 0x0F {
                0x0 | 0x2 => self.data.extend_from_slice(&payload),
                0x8 => self.closed = true,
                0x9 => self.send_frame(0xA, true, &payload)?,
                0xA => {}
                op => return Err(io::Error::other(format!("server sent opcode {op:#x}"))),
            }
        }
    }
}

impl<S: ClientStream> Read for WsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.data.is_empty() {
                let n = buf.len().min(self.data.len());
                buf[..n].copy_from_slice(&self.data[..n]);
                self.data.drain(..n);
                return Ok(n);
            }
            if self.closed {
                return Ok(0);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                return Ok(0);
            }
            self.raw.extend_from_slice(&chunk[..n]);
            self.parse()?;
        }
    }
}

impl<S: ClientStream> Write for WsStream<S> {
    /// Sends `buf` as one binary frame.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_frame(0x2, true, buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<S: ClientStream> ClientStream for WsStream<S> {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.inner.set_read_timeout(timeout)
    }
    fn shutdown(&mut self) {
        self.inner.shutdown();
    }
    fn shutdown_write(&mut self) {
        self.inner.shutdown_write();
    }
}
