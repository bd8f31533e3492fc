//! The byte layers between a connection's socket and its MQTT bytes, for every
//! listener that is not plain TCP: a PROXY protocol header, TLS (rustls) and WebSocket,
//! in that order from the socket up.
//!
//! A plain TCP connection has no [`Layer`] at all (`Conn::layer` is `None`), so its read
//! and write path is exactly the socket's: one branch on a `None`, no copy. Everything
//! here is driven by the worker's event loop, never by a thread of its own: reads pull
//! what the socket has, run the TLS handshake and the WebSocket upgrade as bytes arrive,
//! and hand decoded MQTT bytes up; writes push the connection's MQTT write buffer down
//! (framed for WebSocket, encrypted for TLS) until the socket is full. A handshake that
//! never finishes is closed by the worker's CONNECT timeout, like a silent TCP client.
//!
//! Neighbours: building the rustls config and reloading it is `tls.rs`; the WebSocket
//! handshake and frame codec are `ws.rs`; the PROXY header parser is `proxy.rs`; what a
//! connection is and how the worker reads it is `conn.rs` / `listener.rs`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use rustls::ServerConnection;

use super::conn::{ReadOutcome, WriteOutcome};
use crate::config::{ListenerConfig, Transport};
use crate::proxy::{ProxyHeader, ProxyParser};
use crate::tls::{ReloadableTlsConfig, TlsError, UsernameFrom};
use crate::ws::{self, FrameDecoder, UpgradeParser, WsStatus};

/// Most MQTT bytes put in one outgoing WebSocket frame.
const WS_FRAME_BYTES: usize = 64 * 1024;

/// What every worker knows about one listener, shared through `Shared`.
#[derive(Debug)]
pub(crate) struct ListenerSpec {
    pub(crate) transport: Transport,
    /// The listener's TLS config, swapped on reload (`tls` and `wss` only).
    pub(crate) tls: Option<Arc<ReloadableTlsConfig>>,
    pub(crate) username_from: Option<UsernameFrom>,
    pub(crate) ws_path: String,
    pub(crate) proxy_protocol: bool,
    pub(crate) max_connections: Option<usize>,
    /// Sockets open on this listener over all workers, lingering ones included.
    pub(crate) open: AtomicUsize,
    /// Of `open`, those closed but lingering (they do not count against
    /// `max_connections`; see `Shared::lingering`).
    lingering: AtomicUsize,
    /// The MQTT maximum packet size, which bounds WebSocket frames.
    max_packet_bytes: usize,
}

impl ListenerSpec {
    /// Loads the listener's certificates (if any).
    ///
    /// # Errors
    /// A [`TlsError`] naming the file that could not be used.
    pub(crate) fn new(config: &ListenerConfig, max_packet_bytes: usize) -> Result<Self, TlsError> {
        let tls = match &config.tls {
            Some(settings) => Some(Arc::new(ReloadableTlsConfig::new(settings.clone())?)),
            None => None,
        };
        Ok(Self {
            transport: config.transport,
            tls,
            username_from: config.username_from,
            ws_path: config.ws_path.clone(),
            proxy_protocol: config.proxy_protocol,
            max_connections: config.max_connections,
            open: AtomicUsize::new(0),
            lingering: AtomicUsize::new(0),
            max_packet_bytes,
        })
    }

    /// Counts a new connection on this listener, or says it is full. Lingering sockets
    /// of closed connections do not count.
    pub(crate) fn try_open(&self) -> bool {
        let n = self.open.fetch_add(1, Ordering::Relaxed);
        let live = n.saturating_sub(self.lingering.load(Ordering::Relaxed));
        if self.max_connections.is_some_and(|max| live >= max) {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A closed connection now lingers to write what it owes.
    pub(crate) fn start_lingering(&self) {
        self.lingering.fetch_add(1, Ordering::Relaxed);
    }

    /// Forgets a dropped connection (`lingered`: counted as lingering too).
    pub(crate) fn close(&self, lingered: bool) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if lingered {
            self.lingering.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The layers a new connection on this listener needs; `None` for plain TCP.
    ///
    /// # Errors
    /// rustls could not start a connection from the current config (out of memory and
    /// the like); the socket should be closed.
    pub(crate) fn new_layer(&self) -> Result<Option<Box<Layer>>, rustls::Error> {
        let tls = match &self.tls {
            Some(config) => Some(ServerConnection::new(config.current())?),
            None => None,
        };
        let ws = self.transport.is_ws().then(|| Ws::Handshake(UpgradeParser::new(&*self.ws_path)));
        if tls.is_none() && ws.is_none() && !self.proxy_protocol {
            return Ok(None);
        }
        Ok(Some(Box::new(Layer {
            proxy: self.proxy_protocol.then(ProxyParser::new),
            tls,
            ws,
            username_from: self.username_from,
            max_packet_bytes: self.max_packet_bytes,
            raw: BytesMut::new(),
            mqtt: BytesMut::new(),
            out: BytesMut::new(),
            closed: false,
            ending: Ending::Open,
            source: None,
            handshake_failed: false,
        })))
    }
}

/// Where the WebSocket layer stands.
#[derive(Debug)]
enum Ws {
    /// Waiting for the HTTP Upgrade request.
    Handshake(UpgradeParser),
    /// Upgraded: every byte from the client is a frame.
    Open(FrameDecoder),
}

/// Progress of the orderly end of a connection: MQTT bytes first, then a WebSocket close
/// frame, then TLS close_notify, so that a client sees a clean close (WebSocket status
/// 1000 rather than 1006) and nothing it was owed is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Not ending.
    Open,
    /// The connection is to close once `wbuf` is written.
    Requested,
    /// The WebSocket close frame (if any) is queued; TLS close_notify is next.
    CloseQueued,
    /// Everything is queued.
    Done,
}

/// The layers of one connection above its socket.
///
/// # Invariants
/// Bytes move only upwards through `raw` → `mqtt` and downwards through `out` → TLS →
/// socket; `proxy` is `Some` until the PROXY header has been read, and nothing above it
/// sees a byte before that.
pub(crate) struct Layer {
    proxy: Option<ProxyParser>,
    tls: Option<ServerConnection>,
    ws: Option<Ws>,
    username_from: Option<UsernameFrom>,
    max_packet_bytes: usize,
    /// Bytes from below the WebSocket layer (socket or TLS plaintext), or below the PROXY
    /// header, not yet decoded.
    raw: BytesMut,
    /// MQTT bytes decoded but not yet handed to the worker.
    mqtt: BytesMut,
    /// Bytes owed to the client under MQTT (HTTP answers, WebSocket frames), not yet given
    /// to TLS or the socket.
    out: BytesMut,
    /// The layer ended the connection (refused upgrade, WebSocket close, TLS
    /// close_notify): once `out` is written the socket is to be closed.
    closed: bool,
    ending: Ending,
    /// The client address from a PROXY header, not yet taken by the connection.
    source: Option<SocketAddr>,
    /// The TLS handshake failed (counted by the worker once, for the metrics).
    handshake_failed: bool,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layer")
            .field("tls", &self.tls.is_some())
            .field("ws", &self.ws)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Layer {
    /// The username of the verified client certificate, as the listener's
    /// `username_from` says; `None` without TLS, without a client certificate, or
    /// before the handshake is done.
    pub(crate) fn cert_username(&self) -> Option<String> {
        crate::tls::peer_username(self.tls.as_ref()?, self.username_from?)
    }

    /// Whether the TLS handshake failed, once (the worker counts it).
    pub(super) fn take_handshake_failure(&mut self) -> bool {
        std::mem::take(&mut self.handshake_failed)
    }

    /// The client's address from the PROXY header, once (the connection replaces its
    /// peer address with it).
    pub(super) fn take_source(&mut self) -> Option<SocketAddr> {
        self.source.take()
    }

    /// Reads MQTT bytes into `buf`: whatever is decoded already, else what the socket
    /// has, through every layer. Handshake bytes are answered (written) on the way.
    pub(super) fn read(&mut self, stream: &mut TcpStream, buf: &mut [u8]) -> ReadOutcome {
        loop {
            if !self.mqtt.is_empty() {
                let n = buf.len().min(self.mqtt.len());
                let (Some(dst), Some(src)) = (buf.get_mut(..n), self.mqtt.get(..n)) else {
                    return ReadOutcome::Closed;
                };
                dst.copy_from_slice(src);
                self.mqtt.advance(n);
                return ReadOutcome::Data(n);
            }
            if self.closed {
                // Whatever the layer owes (an HTTP answer, a close frame) goes first.
                let _ = self.write(stream, &mut BytesMut::new());
                return ReadOutcome::Closed;
            }
            if !self.raw.is_empty() && self.proxy.is_none() && self.ws.is_some() {
                let before = self.raw.len();
                self.decode_ws();
                let _ = self.write(stream, &mut BytesMut::new());
                if !self.mqtt.is_empty() || self.closed || self.raw.len() != before {
                    continue;
                }
            }
            if let Some(tls) = self.tls.as_mut() {
                if self.proxy.is_none() {
                    match tls.reader().read(buf) {
                        Ok(0) => {
                            // close_notify from the client.
                            self.closed = true;
                            continue;
                        }
                        Ok(n) if self.ws.is_some() => {
                            self.raw.extend_from_slice(buf.get(..n).unwrap_or_default());
                            continue;
                        }
                        Ok(n) => return ReadOutcome::Data(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return ReadOutcome::Closed,
                    }
                    match tls.read_tls(stream) {
                        Ok(0) => return ReadOutcome::Closed,
                        Ok(_) => {
                            if let Err(e) = tls.process_new_packets() {
                                log::info!("TLS error: {e}");
                                self.handshake_failed = tls.is_handshaking();
                                // Sends the alert rustls queued, if the socket takes it.
                                let _ = tls.write_tls(stream);
                                return ReadOutcome::Closed;
                            }
                            // Handshake messages (and anything else owed) go out now.
                            if self.write(stream, &mut BytesMut::new()) == WriteOutcome::Failed {
                                return ReadOutcome::Closed;
                            }
                            continue;
                        }
                        Err(e) => match read_error(&e) {
                            Some(outcome) => return outcome,
                            None => continue,
                        },
                    }
                }
            }
            // No TLS, or TLS waiting behind the PROXY header: read the socket itself.
            match stream.read(buf) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => {
                    let data = buf.get(..n).unwrap_or_default();
                    if self.proxy.is_some() {
                        self.raw.extend_from_slice(data);
                        if !self.decode_proxy() {
                            return ReadOutcome::Closed;
                        }
                        // A ClientHello that came with the header has been answered.
                        if self.write(stream, &mut BytesMut::new()) == WriteOutcome::Failed {
                            return ReadOutcome::Closed;
                        }
                    } else if self.ws.is_some() {
                        self.raw.extend_from_slice(data);
                    } else {
                        return ReadOutcome::Data(n);
                    }
                }
                Err(e) => {
                    if let Some(outcome) = read_error(&e) {
                        return outcome;
                    }
                }
            }
        }
    }

    /// Parses the PROXY header from `raw`; once complete, hands what follows it to the
    /// layer above. Returns `false` when the header is malformed.
    fn decode_proxy(&mut self) -> bool {
        let Some(parser) = self.proxy.as_mut() else { return true };
        match parser.decode(&self.raw) {
            Ok(None) => true,
            Ok(Some((header, consumed))) => {
                self.raw.advance(consumed);
                self.proxy = None;
                if let ProxyHeader::Proxied { source, .. } = header {
                    self.source = Some(source);
                }
                if let Some(tls) = self.tls.as_mut() {
                    let mut rest: &[u8] = &self.raw;
                    while !rest.is_empty() {
                        match tls.read_tls(&mut rest) {
                            Ok(0) | Err(_) => return false,
                            Ok(_) => {
                                if let Err(e) = tls.process_new_packets() {
                                    log::info!("TLS error: {e}");
                                    self.handshake_failed = tls.is_handshaking();
                                    return false;
                                }
                            }
                        }
                    }
                    self.raw.clear();
                } else if self.ws.is_none() {
                    self.mqtt = std::mem::take(&mut self.raw);
                }
                true
            }
            Err(e) => {
                log::info!("connection closed: bad PROXY header: {e}");
                false
            }
        }
    }

    /// Runs the WebSocket layer over `raw`: the upgrade, then frames.
    fn decode_ws(&mut self) {
        match self.ws.as_mut() {
            Some(Ws::Handshake(parser)) => match parser.decode(&self.raw) {
                Ok(None) => {}
                Ok(Some(upgrade)) => {
                    upgrade.encode_response(&mut self.out);
                    self.raw.advance(upgrade.consumed);
                    self.ws = Some(Ws::Open(FrameDecoder::for_max_packet(self.max_packet_bytes)));
                }
                Err(e) => {
                    log::info!("WebSocket upgrade refused: {e}");
                    self.out.extend_from_slice(&e.response());
                    self.raw.clear();
                    self.closed = true;
                }
            },
            Some(Ws::Open(decoder)) => {
                match decoder.decode(&mut self.raw, &mut self.mqtt, &mut self.out) {
                    Ok(WsStatus::Open) => {}
                    Ok(WsStatus::Closed { .. }) => self.closed = true,
                    Err(e) => {
                        log::info!("WebSocket error: {e}");
                        ws::encode_close(e.close_code(), &mut self.out);
                        self.raw.clear();
                        self.closed = true;
                    }
                }
            }
            None => {}
        }
    }

    /// Writes `wbuf` (MQTT bytes) and whatever the layers owe, until everything is out
    /// or the socket is full. At most one WebSocket frame or the TLS buffer's worth of
    /// `wbuf` leaves it ahead of the socket, so the worker's measure of a connection's
    /// backlog (`wbuf.len()`) stays true.
    pub(super) fn write(&mut self, stream: &mut TcpStream, wbuf: &mut BytesMut) -> WriteOutcome {
        loop {
            if let Some(tls) = self.tls.as_mut() {
                while tls.wants_write() {
                    match tls.write_tls(stream) {
                        Ok(0) => return WriteOutcome::Failed,
                        Ok(_) => {}
                        Err(e) => match write_error(&e) {
                            Some(outcome) => return outcome,
                            None => continue,
                        },
                    }
                }
            }
            if !self.out.is_empty() {
                let written = match self.tls.as_mut() {
                    Some(tls) => tls.writer().write(&self.out),
                    None => stream.write(&self.out),
                };
                match written {
                    // rustls holds plaintext it cannot send yet (handshake running).
                    Ok(0) => return WriteOutcome::Pending,
                    Ok(n) => self.out.advance(n),
                    Err(e) => {
                        if let Some(outcome) = write_error(&e) {
                            return outcome;
                        }
                    }
                }
                continue;
            }
            if wbuf.is_empty() {
                match self.ending {
                    Ending::Open | Ending::Done => return WriteOutcome::Drained,
                    Ending::Requested => {
                        // After a close from the client (or an error) the close frame
                        // was queued already.
                        if matches!(self.ws, Some(Ws::Open(_))) && !self.closed {
                            ws::encode_close(ws::close_code::NORMAL, &mut self.out);
                        }
                        self.ending = Ending::CloseQueued;
                    }
                    Ending::CloseQueued => {
                        if let Some(tls) = self.tls.as_mut() {
                            tls.send_close_notify();
                        }
                        self.ending = Ending::Done;
                    }
                }
                continue;
            }
            match &self.ws {
                Some(Ws::Open(_)) => {
                    let n = wbuf.len().min(WS_FRAME_BYTES);
                    ws::encode_binary_header(n, &mut self.out);
                    self.out.extend_from_slice(wbuf.get(..n).unwrap_or_default());
                    wbuf.advance(n);
                    continue;
                }
                // Nothing of MQTT can be owed before the upgrade; drop it rather than
                // send it as HTTP.
                Some(Ws::Handshake(_)) => {
                    wbuf.clear();
                    continue;
                }
                None => {}
            }
            let written = match self.tls.as_mut() {
                Some(tls) => tls.writer().write(wbuf),
                None => stream.write(wbuf),
            };
            match written {
                Ok(0) if self.tls.is_some() => return WriteOutcome::Pending,
                Ok(0) => return WriteOutcome::Failed,
                Ok(n) => wbuf.advance(n),
                Err(e) => {
                    if let Some(outcome) = write_error(&e) {
                        return outcome;
                    }
                }
            }
        }
    }

    /// Ends the connection in order: the next writes send what `wbuf` holds, then a
    /// WebSocket close frame, then TLS close_notify.
    pub(super) fn close_notify(&mut self) {
        if self.ending == Ending::Open {
            self.ending = Ending::Requested;
        }
    }

    /// Drops the memory of empty buffers (idle connections keep only rustls' state).
    pub(super) fn release_idle_buffers(&mut self) {
        for b in [&mut self.raw, &mut self.mqtt, &mut self.out] {
            if b.is_empty() && b.capacity() > 0 {
                *b = BytesMut::new();
            }
        }
    }
}

/// `None` to retry (`Interrupted`), else what a failed read means.
fn read_error(e: &io::Error) -> Option<ReadOutcome> {
    match e.kind() {
        io::ErrorKind::Interrupted => None,
        io::ErrorKind::WouldBlock => Some(ReadOutcome::WouldBlock),
        _ => Some(ReadOutcome::Closed),
    }
}

/// `None` to retry (`Interrupted`), else what a failed write means.
fn write_error(e: &io::Error) -> Option<WriteOutcome> {
    match e.kind() {
        io::ErrorKind::Interrupted => None,
        io::ErrorKind::WouldBlock => Some(WriteOutcome::Pending),
        _ => Some(WriteOutcome::Failed),
    }
}
