//! MQTT over WebSocket, server side, without I/O.
//!
//! A `ws` or `wss` connection starts with an HTTP/1.1 Upgrade request, answered by
//! [`UpgradeParser`] with `101 Switching Protocols` (or a short plain-text refusal for a
//! browser or `curl` that did not ask to upgrade). After that, every byte from the client
//! is a WebSocket frame: [`FrameDecoder`] checks and unmasks them and appends the payload of
//! binary messages to a plain byte stream, which goes to the ordinary MQTT decoder exactly as
//! bytes from a TCP socket would. A frame may hold several MQTT packets or part of one; the
//! adapter does not care where packets start. Outgoing MQTT bytes are wrapped in unmasked
//! binary frames by [`encode_binary_header`] / [`encode_binary`] / [`wrap_binary_since`].
//!
//! Nothing here reads a socket or a clock: the connection owner (the worker) feeds bytes
//! in and writes what comes out, and times out a handshake that never completes. TLS for
//! `wss` sits below this module (`tls.rs`), MQTT parsing above it (`shoal-core`).
//!
//! References: RFC 6455 (framing, handshake) and MQTT 5.0 section 6 / 3.1.1 section 6
//! (binary frames only, subprotocol `mqtt`).

use base64::Engine as _;
use bytes::{Buf, BufMut, BytesMut};

/// The path MQTT clients connect to when the config names none.
pub const DEFAULT_WS_PATH: &str = "/mqtt";

/// Largest HTTP upgrade request we buffer before refusing it (431).
pub const MAX_HANDSHAKE_BYTES: usize = 8 * 1024;

/// Bytes allowed in one frame beyond the MQTT maximum packet size: a client may put a whole
/// packet plus the start of the next one in one frame.
pub const FRAME_SLACK_BYTES: usize = 64 * 1024;

/// Largest WebSocket frame header: 2 bytes, 8-byte extended length, 4-byte mask.
pub const MAX_FRAME_HEADER_BYTES: usize = 14;

/// Largest header of a frame the server sends (no mask).
pub const MAX_SERVER_FRAME_HEADER_BYTES: usize = 10;

/// RFC 6455 section 1.3: appended to the client's key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The WebSocket subprotocol agreed in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subprotocol {
    /// `mqtt`, the name MQTT 3.1.1 and 5.0 require.
    Mqtt,
    /// `mqttv3.1`, sent by old MQTT 3.1 clients.
    MqttV31,
}

impl Subprotocol {
    /// The token as written in `Sec-WebSocket-Protocol`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Mqtt => "mqtt",
            Self::MqttV31 => "mqttv3.1",
        }
    }
}

/// Why an upgrade request was refused. [`HandshakeError::response`] is what to write back
/// before closing the socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The request head did not end within [`MAX_HANDSHAKE_BYTES`].
    #[error("HTTP request head longer than {MAX_HANDSHAKE_BYTES} bytes")]
    TooLarge,
    /// Not an HTTP/1.1 request (for example plain MQTT sent to a WebSocket port).
    #[error("malformed HTTP request")]
    Malformed,
    /// A method other than GET.
    #[error("HTTP method is not GET")]
    NotGet,
    /// The request path is not the configured MQTT path.
    #[error("request path is not the MQTT WebSocket path")]
    WrongPath,
    /// A GET without `Upgrade: websocket` (a browser opening the URL, a health check).
    #[error("HTTP request without a WebSocket upgrade")]
    NotUpgrade,
    /// `Sec-WebSocket-Version` is missing or not 13.
    #[error("unsupported WebSocket version")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` is missing or not the base64 of 16 bytes.
    #[error("missing or invalid Sec-WebSocket-Key")]
    BadKey,
}

impl HandshakeError {
    /// The complete HTTP response to send before closing (a refusal is rare: built on demand).
    pub fn response(&self) -> Vec<u8> {
        let (status, extra, body) = match self {
            Self::TooLarge => {
                ("431 Request Header Fields Too Large", "", "Request header fields too large.")
            }
            Self::Malformed => (
                "400 Bad Request",
                "",
                "This port speaks MQTT over WebSocket; the request is not HTTP.",
            ),
            Self::NotGet => (
                "405 Method Not Allowed",
                "Allow: GET\r\n",
                "MQTT over WebSocket needs a GET with an Upgrade.",
            ),
            Self::WrongPath => {
                ("404 Not Found", "", "No MQTT WebSocket endpoint here; check the path.")
            }
            Self::NotUpgrade => (
                "426 Upgrade Required",
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n",
                "This is an MQTT over WebSocket endpoint: connect with an MQTT client \
                 (WebSocket subprotocol \"mqtt\").",
            ),
            Self::UnsupportedVersion => (
                "426 Upgrade Required",
                "Sec-WebSocket-Version: 13\r\n",
                "Only WebSocket version 13 is supported.",
            ),
            Self::BadKey => ("400 Bad Request", "", "Missing or invalid Sec-WebSocket-Key."),
        };
        format!(
            "HTTP/1.1 {status}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}\n",
            body.len() + 1
        )
        .into_bytes()
    }
}

/// A valid upgrade request, ready to be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// Bytes of the input the request head took; anything after them is already WebSocket
    /// frames (a client may send its first frame right behind the request).
    pub consumed: usize,
    /// The subprotocol to confirm, or `None` if the client offered neither MQTT name (we
    /// then answer without one and let the client decide).
    pub subprotocol: Option<Subprotocol>,
    /// `Sec-WebSocket-Accept` for the client's key.
    accept: String,
}

impl Upgrade {
    /// Appends the `101 Switching Protocols` response to `out`.
    pub fn encode_response(&self, out: &mut BytesMut) {
        out.put_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n");
        out.put_slice(b"Connection: Upgrade\r\nSec-WebSocket-Accept: ");
        out.put_slice(self.accept.as_bytes());
        if let Some(p) = self.subprotocol {
            out.put_slice(b"\r\nSec-WebSocket-Protocol: ");
            out.put_slice(p.as_str().as_bytes());
        }
        out.put_slice(b"\r\n\r\n");
    }

    /// The `Sec-WebSocket-Accept` value sent back.
    pub fn accept(&self) -> &str {
        &self.accept
    }
}

/// Reads an HTTP/1.1 upgrade request from bytes that arrive in pieces.
///
/// Call [`UpgradeParser::decode`] with everything received so far each time more arrives;
/// it remembers how far it has already looked for the end of the head, so a request
/// trickling in byte by byte costs linear time.
#[derive(Debug, Clone)]
pub struct UpgradeParser {
    path: String,
    /// Bytes of the input already known not to contain the blank line ending the head.
    scanned: usize,
}

impl UpgradeParser {
    /// A parser accepting upgrades on `path` (for example [`DEFAULT_WS_PATH`]).
    pub fn new(path: impl Into<String>) -> Self {
        Self { path: path.into(), scanned: 0 }
    }

    /// Looks for a complete request head at the start of `input`.
    ///
    /// Returns `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// A [`HandshakeError`] when the request can never become a valid upgrade; write its
    /// [`response`](HandshakeError::response) and close.
    pub fn decode(&mut self, input: &[u8]) -> Result<Option<Upgrade>, HandshakeError> {
        // Restart three bytes back: the terminator may straddle two reads.
        let from = self.scanned.saturating_sub(3).min(input.len());
        let Some(end) = find_head_end(input, from) else {
            if input.len() > MAX_HANDSHAKE_BYTES {
                return Err(HandshakeError::TooLarge);
            }
            // Bytes that cannot be HTTP need not wait for a terminator that never comes.
            if input.first().is_some_and(|b| !b.is_ascii_uppercase()) {
                return Err(HandshakeError::Malformed);
            }
            self.scanned = input.len();
            return Ok(None);
        };
        if end > MAX_HANDSHAKE_BYTES {
            return Err(HandshakeError::TooLarge);
        }
        let head = input.get(..end).ok_or(HandshakeError::Malformed)?;
        let head = std::str::from_utf8(head).map_err(|_| HandshakeError::Malformed)?;
        parse_head(head, &self.path, end + 4)
    }
}

/// Index of `\r\n\r\n` at or after `from`.
fn find_head_end(input: &[u8], from: usize) -> Option<usize> {
    input.get(from..)?.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + from)
}

fn parse_head(head: &str, path: &str, consumed: usize) -> Result<Option<Upgrade>, HandshakeError> {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().ok_or(HandshakeError::Malformed)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HandshakeError::Malformed);
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HandshakeError::Malformed);
    }
    if method != "GET" {
        return Err(HandshakeError::NotGet);
    }
    let target_path = target.split_once('?').map_or(target, |(p, _)| p);
    if target_path != path {
        return Err(HandshakeError::WrongPath);
    }

    let mut upgrade = false;
    let mut connection_upgrade = false;
    let mut version_ok = false;
    let mut key: Option<&str> = None;
    let mut offers_mqtt = false;
    let mut offers_v31 = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(HandshakeError::Malformed)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version_ok = value == "13";
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            offers_mqtt |= has_token(value, "mqtt");
            offers_v31 |= has_token(value, "mqttv3.1");
        }
    }
    if !upgrade || !connection_upgrade {
        return Err(HandshakeError::NotUpgrade);
    }
    if !version_ok {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = key.ok_or(HandshakeError::BadKey)?;
    // RFC 6455 section 4.1: the key is 16 random bytes, base64-encoded.
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::BadKey),
    }
    // [MQTT-6.0.0-3] / [MQTT-6.0.0-4]: the server selects "mqtt".
    let subprotocol = if offers_mqtt {
        Some(Subprotocol::Mqtt)
    } else if offers_v31 {
        Some(Subprotocol::MqttV31)
    } else {
        None
    };
    Ok(Some(Upgrade { consumed, subprotocol, accept: accept_key(key) }))
}

/// Whether the comma-separated header `value` holds `token` (case-insensitive).
fn has_token(value: &str, token: &str) -> bool {
    value.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key ‖ GUID)).
pub fn accept_key(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish().as_ref())
}

/// WebSocket opcodes (RFC 6455 section 5.2).
mod opcode {
    pub(super) const CONTINUATION: u8 = 0x0;
    pub(super) const TEXT: u8 = 0x1;
    pub(super) const BINARY: u8 = 0x2;
    pub(super) const CLOSE: u8 = 0x8;
    pub(super) const PING: u8 = 0x9;
    pub(super) const PONG: u8 = 0xA;
}

/// Close status codes used by the server (RFC 6455 section 7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (server shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Data of a type we do not accept (text frames: MQTT is binary).
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A frame too large to process.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
}

/// A frame sequence that breaks RFC 6455 or the MQTT WebSocket rules. The connection is
/// closed: send [`encode_close`] with [`FrameError::close_code`] first if you like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A client frame without the mask bit (RFC 6455 section 5.1).
    #[error("client frame is not masked")]
    Unmasked,
    /// A reserved bit set without a negotiated extension.
    #[error("reserved bits set in frame header")]
    ReservedBits,
    /// An opcode RFC 6455 does not define.
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A text frame: [MQTT-6.0.0-1] MQTT is sent in binary frames only.
    #[error("text frame (MQTT needs binary frames)")]
    TextFrame,
    /// A fragmented or oversized control frame (RFC 6455 section 5.5).
    #[error("invalid control frame")]
    BadControlFrame,
    /// A continuation frame with no message started, or a new message before the last
    /// one finished.
    #[error("unexpected continuation or interleaved message")]
    BadFragmentation,
    /// A frame longer than the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Payload length announced by the frame.
        len: u64,
        /// Configured limit.
        max: usize,
    },
}

impl FrameError {
    /// The close status to send for this error.
    pub const fn close_code(&self) -> u16 {
        match self {
            Self::TextFrame => close_code::UNSUPPORTED_DATA,
            Self::TooLarge { .. } => close_code::MESSAGE_TOO_BIG,
            _ => close_code::PROTOCOL_ERROR,
        }
    }
}

/// What [`FrameDecoder::decode`] left the connection in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsStatus {
    /// Still open; more frames may follow.
    Open,
    /// The client sent a close frame; the close reply is in `replies`. Flush it and close
    /// the socket. `code` is the client's status, if it sent one.
    Closed {
        /// The status code from the client's close frame.
        code: Option<u16>,
    },
}

/// The data frame whose payload is being streamed out.
#[derive(Debug, Clone, Copy)]
struct DataFrame {
    /// Payload bytes not yet read.
    remaining: u64,
    mask: [u8; 4],
    /// Position in the mask of the next payload byte.
    mask_pos: usize,
    fin: bool,
}

/// Turns client WebSocket frames into the MQTT byte stream.
///
/// Payloads of binary frames are unmasked and appended to the caller's MQTT buffer as
/// they arrive, without waiting for the end of the frame, so memory does not grow with
/// frame size. Control frames (at most 125 bytes) are handled when complete: ping is
/// answered with pong, close with close.
///
/// # Invariants
/// `data` is `Some` only between the header of a data frame and its last payload byte;
/// `in_message` is true between a non-final data frame and the final one of its message.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
    data: Option<DataFrame>,
    in_message: bool,
    closed: bool,
}

impl FrameDecoder {
    /// A decoder refusing frames with payloads over `max_frame_bytes` (use the MQTT maximum
    /// packet size plus [`FRAME_SLACK_BYTES`]).
    pub const fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes, data: None, in_message: false, closed: false }
    }

    /// A decoder for a listener whose MQTT maximum packet size is `max_packet_bytes`:
    /// frames may be up to [`FRAME_SLACK_BYTES`] larger.
    pub const fn for_max_packet(max_packet_bytes: usize) -> Self {
        Self::new(max_packet_bytes.saturating_add(FRAME_SLACK_BYTES))
    }

    /// Whether a close frame has been received (further input is ignored).
    pub const fn is_closed(&self) -> bool {
        self.closed
    }

    /// Consumes as much of `input` as possible: MQTT bytes go to `mqtt`, frames the server
    /// owes the client (pong, close) to `replies`. An incomplete frame header or control
    /// frame stays in `input` for the next call.
    ///
    /// # Errors
    /// A [`FrameError`] when the client broke the protocol; the connection must be closed.
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        mqtt: &mut BytesMut,
        replies: &mut BytesMut,
    ) -> Result<WsStatus, FrameError> {
        loop {
            if self.closed {
                input.clear();
                return Ok(WsStatus::Closed { code: None });
            }
            if let Some(frame) = self.data.as_mut() {
                if !stream_payload(frame, input, mqtt) {
                    return Ok(WsStatus::Open);
                }
                if frame.fin {
                    self.in_message = false;
                }
                self.data = None;
                continue;
            }
            let Some(header) = decode_header(input)? else {
                return Ok(WsStatus::Open);
            };
            if header.len > self.max_frame_bytes as u64 {
                return Err(FrameError::TooLarge { len: header.len, max: self.max_frame_bytes });
            }
            match header.opcode {
                opcode::BINARY | opcode::CONTINUATION => {
                    let continuation = header.opcode == opcode::CONTINUATION;
                    if continuation != self.in_message {
                        return Err(FrameError::BadFragmentation);
                    }
                    input.advance(header.header_len);
                    self.in_message = !header.fin;
                    self.data = Some(DataFrame {
                        remaining: header.len,
                        mask: header.mask,
                        mask_pos: 0,
                        fin: header.fin,
                    });
                }
                opcode::TEXT => return Err(FrameError::TextFrame),
                opcode::CLOSE | opcode::PING | opcode::PONG => {
                    if !header.fin || header.len > 125 {
                        return Err(FrameError::BadControlFrame);
                    }
                    // Checked ≤ 125 above, so this cannot truncate.
                    let total = header.header_len + header.len as usize;
                    if input.len() < total {
                        return Ok(WsStatus::Open);
                    }
                    let frame = input.split_to(total);
                    let mut payload = frame.get(header.header_len..).unwrap_or_default().to_vec();
                    unmask(&mut payload, header.mask, 0);
                    match header.opcode {
                        opcode::PING => encode_frame(opcode::PONG, &payload, replies),
                        opcode::CLOSE => {
                            let code = match payload.as_slice() {
                                [hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
                                _ => None,
                            };
                            if payload.len() == 1 {
                                return Err(FrameError::BadControlFrame);
                            }
                            // Echo the status code, as RFC 6455 section 5.5.1 suggests.
                            encode_close(code.unwrap_or(close_code::NORMAL), replies);
                            self.closed = true;
                            input.clear();
                            return Ok(WsStatus::Closed { code });
                        }
                        _ => {} // An unsolicited pong needs no answer.
                    }
                }
                other => return Err(FrameError::UnknownOpcode(other)),
            }
        }
    }
}

/// A parsed client frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    len: u64,
    mask: [u8; 4],
    header_len: usize,
}

/// Parses a frame header from the start of `input` without consuming it; `Ok(None)` if
/// it is not complete yet.
fn decode_header(input: &[u8]) -> Result<Option<Header>, FrameError> {
    let (Some(&b0), Some(&b1)) = (input.first(), input.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let (len, len_bytes) = match b1 & 0x7F {
        126 => match input.get(2..4) {
            Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 2),
            _ => return Ok(None),
        },
        127 => match input.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
            // RFC 6455 section 5.2: the most significant bit must be 0.
            Some(b) if b[0] & 0x80 != 0 => return Err(FrameError::BadControlFrame),
            Some(b) => (u64::from_be_bytes(b), 8),
            None => return Ok(None),
        },
        n => (u64::from(n), 0),
    };
    let mask_at = 2 + len_bytes;
    let Some(mask) = input.get(mask_at..mask_at + 4).and_then(|s| <[u8; 4]>::try_from(s).ok())
    else {
        return Ok(None);
    };
    Ok(Some(Header { fin, opcode, len, mask, header_len: mask_at + 4 }))
}

/// Moves the available part of a data frame's payload from `input` to `mqtt`, unmasked.
/// Returns true when the frame's payload is complete.
fn stream_payload(frame: &mut DataFrame, input: &mut BytesMut, mqtt: &mut BytesMut) -> bool {
    let take = usize::try_from(frame.remaining).map_or(input.len(), |r| r.min(input.len()));
    if take > 0 {
        let start = mqtt.len();
        mqtt.extend_from_slice(input.get(..take).unwrap_or_default());
        input.advance(take);
        if let Some(new) = mqtt.get_mut(start..) {
            unmask(new, frame.mask, frame.mask_pos);
        }
        frame.mask_pos = (frame.mask_pos + take) % 4;
        frame.remaining -= take as u64;
    }
    frame.remaining == 0
}

/// XORs `data` with `mask`, starting at byte `pos` of the mask.
fn unmask(data: &mut [u8], mask: [u8; 4], pos: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(pos + i) % 4];
    }
}

/// Appends the header of an unmasked final binary frame carrying `len` bytes; the caller
/// appends the payload right after.
pub fn encode_binary_header(len: usize, out: &mut BytesMut) {
    encode_header(opcode::BINARY, len, out);
}

/// Appends `payload` as one unmasked final binary frame.
pub fn encode_binary(payload: &[u8], out: &mut BytesMut) {
    encode_frame(opcode::BINARY, payload, out);
}

/// Wraps the bytes appended to `buf` since offset `from` into one binary frame, in place.
///
/// Lets the MQTT encoder write straight into the connection's write buffer: remember
/// `buf.len()`, encode packets, then call this. The payload is moved up by the header size
/// (a `memmove` inside the buffer, no allocation when `buf` has
/// [`MAX_SERVER_FRAME_HEADER_BYTES`] of spare capacity). Does nothing if nothing was
/// appended or `from` is out of range.
pub fn wrap_binary_since(buf: &mut BytesMut, from: usize) {
    let Some(len) = buf.len().checked_sub(from).filter(|&n| n > 0) else {
        return;
    };
    let mut header = BytesMut::with_capacity(MAX_SERVER_FRAME_HEADER_BYTES);
    encode_binary_header(len, &mut header);
    let hlen = header.len();
    buf.resize(buf.len() + hlen, 0);
    buf.copy_within(from..from + len, from + hlen);
    if let Some(dst) = buf.get_mut(from..from + hlen) {
        dst.copy_from_slice(&header);
    }
}

/// Appends a close frame with `code`.
pub fn encode_close(code: u16, out: &mut BytesMut) {
    encode_frame(opcode::CLOSE, &code.to_be_bytes(), out);
}

fn encode_frame(op: u8, payload: &[u8], out: &mut BytesMut) {
    encode_header(op, payload.len(), out);
    out.put_slice(payload);
}

fn encode_header(op: u8, len: usize, out: &mut BytesMut) {
    out.reserve(MAX_SERVER_FRAME_HEADER_BYTES + len);
    out.put_u8(0x80 | op);
    if len < 126 {
        out.put_u8(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(short);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key and accept value from RFC 6455 section 1.3.
    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn request(path: &str, protocol: Option<&str>) -> String {
        let mut r = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\n\
             Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {RFC_KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n"
        );
        if let Some(p) = protocol {
            r.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        r.push_str("\r\n");
        r
    }

    /// A masked client frame.
    fn client_frame(fin: bool, op: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | op];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else if payload.len() <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

    fn decode_all(
        dec: &mut FrameDecoder,
        bytes: &[u8],
    ) -> (Result<WsStatus, FrameError>, Vec<u8>, Vec<u8>) {
        let mut input = BytesMut::from(bytes);
        let mut mqtt = BytesMut::new();
        let mut replies = BytesMut::new();
        let r = dec.decode(&mut input, &mut mqtt, &mut replies);
        (r, mqtt.to_vec(), replies.to_vec())
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(accept_key(RFC_KEY), RFC_ACCEPT);
    }

    #[test]
    fn upgrade_with_mqtt_subprotocol_gets_101() {
        let req = request("/mqtt", Some("mqtt"));
        let up = UpgradeParser::new(DEFAULT_WS_PATH).decode(req.as_bytes()).unwrap().unwrap();
        assert_eq!(up.consumed, req.len());
        assert_eq!(up.subprotocol, Some(Subprotocol::Mqtt));
        let mut out = BytesMut::new();
        up.encode_response(&mut out);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains(&format!("Sec-WebSocket-Accept: {RFC_ACCEPT}\r\n")));
        assert!(text.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn old_mqttv31_subprotocol_is_chosen_when_mqtt_is_not_offered() {
        let req = request("/mqtt", Some("mqttv3.1"));
        let up = UpgradeParser::new("/mqtt").decode(req.as_bytes()).unwrap().unwrap();
        assert_eq!(up.subprotocol, Some(Subprotocol::MqttV31));
        let req = request("/mqtt", Some("mqttv3.1, mqtt"));
        let up = UpgradeParser::new("/mqtt").decode(req.as_bytes()).unwrap().unwrap();
        assert_eq!(up.subprotocol, Some(Subprotocol::Mqtt));
    }

    #[test]
    fn upgrade_without_subprotocol_is_answered_without_one() {
        let req = request("/mqtt", None);
        let up = UpgradeParser::new("/mqtt").decode(req.as_bytes()).unwrap().unwrap();
        assert_eq!(up.subprotocol, None);
        let mut out = BytesMut::new();
        up.encode_response(&mut out);
        assert!(!std::str::from_utf8(&out).unwrap().contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn query_string_is_ignored_for_the_path_check() {
        let req = request("/mqtt?token=1", Some("mqtt"));
        assert!(UpgradeParser::new("/mqtt").decode(req.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn request_arriving_byte_by_byte_completes_once() {
        let req = request("/mqtt", Some("mqtt"));
        let mut p = UpgradeParser::new("/mqtt");
        for n in 1..req.len() {
            assert_eq!(p.decode(&req.as_bytes()[..n]), Ok(None), "at {n} bytes");
        }
        let up = p.decode(req.as_bytes()).unwrap().unwrap();
        assert_eq!(up.accept(), RFC_ACCEPT);
    }

    #[test]
    fn first_frame_behind_the_request_is_left_for_the_frame_decoder() {
        let mut bytes = request("/mqtt", Some("mqtt")).into_bytes();
        let head_len = bytes.len();
        bytes.extend_from_slice(&client_frame(true, opcode::BINARY, &[0xC0, 0x00], MASK));
        let up = UpgradeParser::new("/mqtt").decode(&bytes).unwrap().unwrap();
        assert_eq!(up.consumed, head_len);
        let (r, mqtt, _) = decode_all(&mut FrameDecoder::new(1024), &bytes[up.consumed..]);
        assert_eq!(r, Ok(WsStatus::Open));
        assert_eq!(mqtt, [0xC0, 0x00]);
    }

    #[test]
    fn plain_get_gets_a_helpful_426() {
        let req = "GET /mqtt HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\n\r\n";
        let err = UpgradeParser::new("/mqtt").decode(req.as_bytes()).unwrap_err();
        assert_eq!(err, HandshakeError::NotUpgrade);
        let resp = String::from_utf8(err.response()).unwrap();
        assert!(resp.starts_with("HTTP/1.1 426 "));
        assert!(resp.contains("MQTT"));
    }

    #[test]
    fn every_refusal_response_has_a_correct_content_length() {
        for e in [
            HandshakeError::TooLarge,
            HandshakeError::Malformed,
            HandshakeError::NotGet,
            HandshakeError::WrongPath,
            HandshakeError::NotUpgrade,
            HandshakeError::UnsupportedVersion,
            HandshakeError::BadKey,
        ] {
            let resp = String::from_utf8(e.response()).unwrap();
            let (head, body) = resp.split_once("\r\n\r\n").unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(len, body.len(), "{e:?}");
        }
    }

    #[test]
    fn wrong_path_method_version_and_key_are_refused() {
        let mut p = UpgradeParser::new("/mqtt");
        let req = request("/other", Some("mqtt"));
        assert_eq!(p.decode(req.as_bytes()), Err(HandshakeError::WrongPath));
        let req = request("/mqtt", Some("mqtt")).replacen("GET", "POST", 1);
        assert_eq!(p.decode(req.as_bytes()), Err(HandshakeError::NotGet));
        let req = request("/mqtt", None).replace("Version: 13", "Version: 8");
        assert_eq!(p.decode(req.as_bytes()), Err(HandshakeError::UnsupportedVersion));
        let req = request("/mqtt", None).replace(RFC_KEY, "c2hvcnQ=");
        assert_eq!(p.decode(req.as_bytes()), Err(HandshakeError::BadKey));
        let req = request("/mqtt", None).replace(&format!("Sec-WebSocket-Key: {RFC_KEY}\r\n"), "");
        assert_eq!(p.decode(req.as_bytes()), Err(HandshakeError::BadKey));
    }

    #[test]
    fn raw_mqtt_on_a_websocket_port_is_refused_at_once() {
        // CONNECT fixed header: not an HTTP method, so no need to wait for "\r\n\r\n".
        let mut p = UpgradeParser::new("/mqtt");
        assert_eq!(p.decode(&[0x10, 0x0C, 0x00]), Err(HandshakeError::Malformed));
    }

    #[test]
    fn endless_header_is_refused_as_too_large() {
        let mut req = b"GET /mqtt HTTP/1.1\r\n".to_vec();
        while req.len() <= MAX_HANDSHAKE_BYTES {
            req.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(UpgradeParser::new("/mqtt").decode(&req), Err(HandshakeError::TooLarge));
    }

    #[test]
    fn masked_binary_frame_is_unmasked() {
        let payload: Vec<u8> = (0..=255).collect();
        let frame = client_frame(true, opcode::BINARY, &payload, MASK);
        let (r, mqtt, replies) = decode_all(&mut FrameDecoder::new(1024), &frame);
        assert_eq!(r, Ok(WsStatus::Open));
        assert_eq!(mqtt, payload);
        assert!(replies.is_empty());
    }

    #[test]
    fn several_frames_in_one_read_are_all_decoded() {
        let mut bytes = client_frame(true, opcode::BINARY, b"abc", MASK);
        bytes.extend(client_frame(true, opcode::BINARY, b"defg", [1, 2, 3, 4]));
        bytes.extend(client_frame(true, opcode::BINARY, b"h", [9, 9, 9, 9]));
        let (r, mqtt, _) = decode_all(&mut FrameDecoder::new(1024), &bytes);
        assert_eq!(r, Ok(WsStatus::Open));
        assert_eq!(mqtt, b"abcdefgh");
    }

    #[test]
    fn fragmented_message_is_reassembled_with_a_ping_in_between() {
        let mut bytes = client_frame(false, opcode::BINARY, b"hel", MASK);
        bytes.extend(client_frame(true, opcode::PING, b"p", MASK));
        bytes.extend(client_frame(false, opcode::CONTINUATION, b"lo ", [5, 6, 7, 8]));
        bytes.extend(client_frame(true, opcode::CONTINUATION, b"world", MASK));
        let (r, mqtt, replies) = decode_all(&mut FrameDecoder::new(1024), &bytes);
        assert_eq!(r, Ok(WsStatus::Open));
        assert_eq!(mqtt, b"hello world");
        // Pong: FIN + opcode 0xA, unmasked length 1, the ping's payload.
        assert_eq!(replies, [0x8A, 0x01, b'p']);
    }

    #[test]
    fn stream_split_at_every_byte_gives_the_same_bytes() {
        let payload: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
        let mut bytes = client_frame(false, opcode::BINARY, &payload[..200], MASK);
        bytes.extend(client_frame(true, opcode::CONTINUATION, &payload[200..], [7, 0, 7, 0]));
        bytes.extend(client_frame(true, opcode::PING, b"", MASK));
        for split in 0..bytes.len() {
            let mut dec = FrameDecoder::new(1024);
            let mut input = BytesMut::from(&bytes[..split]);
            let mut mqtt = BytesMut::new();
            let mut replies = BytesMut::new();
            assert_eq!(dec.decode(&mut input, &mut mqtt, &mut replies), Ok(WsStatus::Open));
            input.extend_from_slice(&bytes[split..]);
            assert_eq!(dec.decode(&mut input, &mut mqtt, &mut replies), Ok(WsStatus::Open));
            assert_eq!(&mqtt[..], &payload[..], "split at {split}");
            assert_eq!(&replies[..], [0x8A, 0x00]);
            assert!(input.is_empty());
        }
    }

    #[test]
    fn partial_header_waits_without_consuming() {
        let frame = client_frame(true, opcode::BINARY, &[0u8; 300], MASK);
        for cut in 0..8 {
            let mut dec = FrameDecoder::new(1024);
            let mut input = BytesMut::from(&frame[..cut]);
            let (mut mqtt, mut replies) = (BytesMut::new(), BytesMut::new());
            assert_eq!(dec.decode(&mut input, &mut mqtt, &mut replies), Ok(WsStatus::Open));
            assert_eq!(input.len(), cut, "header bytes are kept until complete");
            assert!(mqtt.is_empty());
        }
    }

    #[test]
    fn sixty_four_bit_length_frames_decode() {
        let payload = vec![0x5A; 70_000];
        let frame = client_frame(true, opcode::BINARY, &payload, MASK);
        assert_eq!(frame[1], 0x80 | 127);
        let (r, mqtt, _) = decode_all(&mut FrameDecoder::new(100_000), &frame);
        assert_eq!(r, Ok(WsStatus::Open));
        assert_eq!(mqtt, payload);
    }

    #[test]
    fn close_is_echoed_and_ends_the_stream() {
        let mut bytes = client_frame(true, opcode::BINARY, b"x", MASK);
        bytes.extend(client_frame(true, opcode::CLOSE, &1001u16.to_be_bytes(), MASK));
        bytes.extend(client_frame(true, opcode::BINARY, b"ignored", MASK));
        let mut dec = FrameDecoder::new(1024);
        let (r, mqtt, replies) = decode_all(&mut dec, &bytes);
        assert_eq!(r, Ok(WsStatus::Closed { code: Some(1001) }));
        assert_eq!(mqtt, b"x");
        assert_eq!(replies, [0x88, 0x02, 0x03, 0xE9]);
        assert!(dec.is_closed());
        let (r, mqtt, _) = decode_all(&mut dec, &client_frame(true, 2, b"y", MASK));
        assert_eq!(r, Ok(WsStatus::Closed { code: None }));
        assert!(mqtt.is_empty());
    }

    #[test]
    fn empty_close_gets_a_normal_close() {
        let (r, _, replies) =
            decode_all(&mut FrameDecoder::new(16), &client_frame(true, opcode::CLOSE, b"", MASK));
        assert_eq!(r, Ok(WsStatus::Closed { code: None }));
        assert_eq!(replies, [0x88, 0x02, 0x03, 0xE8]);
    }

    #[test]
    fn protocol_violations_are_errors() {
        let dec = || FrameDecoder::new(1024);
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (client_frame(true, 0x3, b"", MASK), FrameError::UnknownOpcode(3)),
            (client_frame(true, 0xB, b"", MASK), FrameError::UnknownOpcode(0xB)),
            (client_frame(true, opcode::TEXT, b"hi", MASK), FrameError::TextFrame),
            (client_frame(true, opcode::CONTINUATION, b"x", MASK), FrameError::BadFragmentation),
            (client_frame(false, opcode::PING, b"", MASK), FrameError::BadControlFrame),
            (client_frame(true, opcode::PING, &[0; 126], MASK), FrameError::BadControlFrame),
            (client_frame(true, opcode::CLOSE, &[3], MASK), FrameError::BadControlFrame),
            (vec![0x82, 0x01, b'x'], FrameError::Unmasked),
            (vec![0xC2, 0x80, 0, 0, 0, 0], FrameError::ReservedBits),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode_all(&mut dec(), &bytes).0, Err(want.clone()), "{want:?}");
        }
        let mut interleaved = client_frame(false, opcode::BINARY, b"a", MASK);
        interleaved.extend(client_frame(true, opcode::BINARY, b"b", MASK));
        assert_eq!(decode_all(&mut dec(), &interleaved).0, Err(FrameError::BadFragmentation));
        assert_eq!(FrameError::TextFrame.close_code(), 1003);
    }

    #[test]
    fn oversize_frame_is_refused_from_its_header() {
        // Only the header: the refusal must not wait for (or buffer) the payload.
        let frame = client_frame(true, opcode::BINARY, &vec![0; 2000], MASK);
        let err = decode_all(&mut FrameDecoder::new(1000), &frame[..8]).0.unwrap_err();
        assert_eq!(err, FrameError::TooLarge { len: 2000, max: 1000 });
        assert_eq!(err.close_code(), close_code::MESSAGE_TOO_BIG);
        let mut huge = vec![0x82, 0x80 | 127];
        huge.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
        huge.extend_from_slice(&MASK);
        assert!(matches!(
            decode_all(&mut FrameDecoder::new(1000), &huge).0,
            Err(FrameError::TooLarge { .. })
        ));
        huge[2] = 0x80;
        assert!(decode_all(&mut FrameDecoder::new(1000), &huge).0.is_err());
    }

    #[test]
    fn server_frames_are_unmasked_with_the_shortest_length() {
        for (len, header) in [
            (0usize, vec![0x82, 0]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65_535, vec![0x82, 126, 0xFF, 0xFF]),
            (65_536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let payload = vec![7u8; len];
            let mut out = BytesMut::new();
            encode_binary(&payload, &mut out);
            assert_eq!(&out[..header.len()], &header[..], "len {len}");
            assert_eq!(&out[header.len()..], &payload[..]);
        }
    }

    #[test]
    fn wrap_binary_since_frames_bytes_in_place() {
        let mut buf = BytesMut::from(&b"earlier"[..]);
        let from = buf.len();
        buf.extend_from_slice(&[0xD0, 0x00]); // PINGRESP
        wrap_binary_since(&mut buf, from);
        assert_eq!(&buf[..], b"earlier\x82\x02\xD0\x00");
        let from = buf.len();
        wrap_binary_since(&mut buf, from);
        assert_eq!(buf.len(), from, "nothing appended, nothing framed");
        let mut big = BytesMut::new();
        big.extend_from_slice(&[1u8; 300]);
        wrap_binary_since(&mut big, 0);
        assert_eq!(&big[..4], &[0x82, 126, 0x01, 0x2C]);
        assert_eq!(big.len(), 304);
    }

    #[test]
    fn server_frames_decode_as_client_frames_once_masked() {
        // Round trip: our encoder's header, masked as a client would, through the decoder.
        let mut out = BytesMut::new();
        encode_binary(b"round trip", &mut out);
        let masked = client_frame(true, opcode::BINARY, &out[2..], MASK);
        let (r, mqtt, _) = decode_all(&mut FrameDecoder::new(64), &masked);
        assert_eq!(r, Ok(WsStatus::Open));
        assert_eq!(mqtt, b"round trip");
    }

    proptest::proptest! {
        /// Messages cut into fragments at random, with pings between frames, fed in random
        /// chunks: the MQTT stream is the messages' bytes in order and every ping gets
        /// its pong.
        #[test]
        fn random_fragmentation_and_chunking_give_the_same_stream(
            messages in proptest::collection::vec(
                (proptest::collection::vec(proptest::num::u8::ANY, 0..300), 1usize..4, proptest::bool::ANY),
                1..6,
            ),
            mask in proptest::array::uniform4(proptest::num::u8::ANY),
            chunk in 1usize..64,
        ) {
            let mut wire = Vec::new();
            let mut want = Vec::new();
            let mut pings = 0;
            for (payload, pieces, ping) in &messages {
                want.extend_from_slice(payload);
                let step = payload.len() / pieces + 1;
                let parts: Vec<&[u8]> = if payload.is_empty() {
                    vec![&[][..]]
                } else {
                    payload.chunks(step).collect()
                };
                for (i, part) in parts.iter().enumerate() {
                    let op = if i == 0 { opcode::BINARY } else { opcode::CONTINUATION };
                    wire.extend(client_frame(i + 1 == parts.len(), op, part, mask));
                    if *ping {
                        wire.extend(client_frame(true, opcode::PING, b"p", mask));
                        pings += 1;
                    }
                }
            }
            let mut dec = FrameDecoder::for_max_packet(1024);
            let (mut input, mut mqtt, mut replies) = (BytesMut::new(), BytesMut::new(), BytesMut::new());
            for piece in wire.chunks(chunk) {
                input.extend_from_slice(piece);
                proptest::prop_assert_eq!(
                    dec.decode(&mut input, &mut mqtt, &mut replies),
                    Ok(WsStatus::Open)
                );
            }
            proptest::prop_assert!(input.is_empty());
            proptest::prop_assert_eq!(&mqtt[..], &want[..]);
            proptest::prop_assert_eq!(replies.len(), pings * 3);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut dec = FrameDecoder::new(100);
            let _ = decode_all(&mut dec, &bytes);
            let _ = UpgradeParser::new("/mqtt").decode(&bytes);
        }
    }
}
