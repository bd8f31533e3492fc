//! MQTT over WebSocket (RFC 6455), sans I/O: the client side of the HTTP/1.1 Upgrade
//! handshake and the framing, shared by the load engine and the blocking client.
//!
//! [`WsLink`] takes the bytes read from the socket (after TLS, for `wss://`) and yields
//! the MQTT byte stream inside the binary frames; MQTT packets may be split across
//! frames and several may share one. What must go back to the broker (the Upgrade
//! request, masked data frames, pongs, the close reply) collects in [`WsLink::out`],
//! which the caller writes in order. SHA-1 for `Sec-WebSocket-Accept` comes from `ring`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::{Buf, BytesMut};
use ring::rand::SecureRandom;

/// Request path used when a `ws://` URL gives none.
pub const DEFAULT_PATH: &str = "/mqtt";
/// Longest HTTP response head we accept before giving up.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// The GUID RFC 6455 appends to the key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Why the WebSocket layer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// The Upgrade was answered with something other than `101`.
    #[error("WebSocket upgrade refused: {0}")]
    Refused(String),
    /// A `101` whose headers do not complete the handshake.
    #[error("bad WebSocket handshake: {0}")]
    BadHandshake(&'static str),
    /// A frame that breaks RFC 6455 or MQTT's use of it.
    #[error("bad WebSocket frame: {0}")]
    BadFrame(&'static str),
    /// The broker sent a close frame.
    #[error("the broker closed the WebSocket (code {0})")]
    Closed(u16),
    /// No randomness for the key or masks.
    #[error("no random numbers for the WebSocket key")]
    Random,
}

/// One client WebSocket: handshake state, undecoded input and pending output.
#[derive(Debug)]
pub struct WsLink {
    /// Bytes to write to the broker, in order: the Upgrade request first, then frames.
    pub out: BytesMut,
    /// Bytes read but not yet a whole frame (or, before the upgrade, the response head).
    inbuf: BytesMut,
    /// The `Sec-WebSocket-Accept` value a correct broker answers with.
    expect_accept: String,
    upgraded: bool,
    /// Opcode of the message being continued (binary), if any.
    in_message: bool,
    /// Masking keys: a xorshift generator seeded from the system's random source.
    mask_state: u64,
    max_frame: usize,
}

impl WsLink {
    /// A link that starts by sending the Upgrade request for `path` on `host` (the
    /// `Host` header, with the port) and accepts data frames of at most `max_frame` bytes.
    ///
    /// # Errors
    /// [`WsError::Random`] when the system has no random numbers.
    pub fn new(host: &str, path: &str, max_frame: usize) -> Result<Self, WsError> {
        let rng = ring::rand::SystemRandom::new();
        let mut nonce = [0u8; 16];
        rng.fill(&mut nonce).map_err(|_| WsError::Random)?;
        let mut seed = [0u8; 8];
        rng.fill(&mut seed).map_err(|_| WsError::Random)?;
        let key = BASE64.encode(nonce);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\n\r\n"
        );
        Ok(Self {
            out: BytesMut::from(request.as_bytes()),
            inbuf: BytesMut::new(),
            expect_accept: accept_for(&key),
            upgraded: false,
            in_message: false,
            mask_state: u64::from_le_bytes(seed) | 1,
            max_frame,
        })
    }

    /// Whether the broker has accepted the Upgrade (data frames may be sent).
    pub fn is_upgraded(&self) -> bool {
        self.upgraded
    }

    /// Appends `data` as one masked binary frame to [`Self::out`].
    pub fn send_binary(&mut self, data: &[u8]) {
        let mask = self.next_mask();
        encode_frame(OP_BINARY, data, mask, &mut self.out);
    }

    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.mask_state = x;
        let [a, b, c, d, ..] = x.to_le_bytes();
        [a, b, c, d]
    }

    /// Feeds bytes read from the broker: completes the handshake, then appends the
    /// payload of every whole data frame to `mqtt` and answers pings and closes.
    ///
    /// # Errors
    /// A refused or malformed handshake, a bad frame, or [`WsError::Closed`] when the
    /// broker closed the WebSocket (the close reply is then in [`Self::out`]).
    pub fn receive(&mut self, data: &[u8], mqtt: &mut BytesMut) -> Result<(), WsError> {
        if self.upgraded && self.inbuf.is_empty() {
            // Fast path: decode straight from `data`, keep only an unfinished frame.
            let used = self.decode(data, mqtt)?;
            self.inbuf.extend_from_slice(data.get(used..).unwrap_or_default());
            return Ok(());
        }
        self.inbuf.extend_from_slice(data);
        if !self.upgraded {
            let Some(head_len) = find_head_end(&self.inbuf) else {
                if self.inbuf.len() > MAX_RESPONSE_HEAD {
                    return Err(WsError::BadHandshake("response head too long"));
                }
                return Ok(());
            };
            check_response(self.inbuf.get(..head_len).unwrap_or_default(), &self.expect_accept)?;
            self.inbuf.advance(head_len);
            self.upgraded = true;
        }
        let mut buf = std::mem::take(&mut self.inbuf);
        let used = self.decode(&buf, mqtt)?;
        buf.advance(used);
        self.inbuf = buf;
        Ok(())
    }

    /// Decodes whole frames from `data`; returns the bytes used.
    fn decode(&mut self, data: &[u8], mqtt: &mut BytesMut) -> Result<usize, WsError> {
        let mut pos = 0;
        while let Some(frame) = parse_frame(data.get(pos..).unwrap_or_default(), self.max_frame)? {
            let body_start = pos + frame.header_len;
            let body = data.get(body_start..body_start + frame.len).unwrap_or_default();
            pos = body_start + frame.len;
            match frame.opcode {
                OP_BINARY | OP_CONTINUATION => {
                    if frame.opcode == OP_CONTINUATION && !self.in_message {
                        return Err(WsError::BadFrame("continuation without a message"));
                    }
                    if frame.opcode == OP_BINARY && self.in_message {
                        return Err(WsError::BadFrame("new message inside a fragmented one"));
                    }
                    self.in_message = !frame.fin;
                    let start = mqtt.len();
                    mqtt.extend_from_slice(body);
                    if let (Some(mask), Some(b)) = (frame.mask, mqtt.get_mut(start..)) {
                        apply_mask(b, mask);
                    }
                }
                OP_PING => {
                    let mut payload = body.to_vec();
                    if let Some(mask) = frame.mask {
                        apply_mask(&mut payload, mask);
                    }
                    let mask = self.next_mask();
                    encode_frame(OP_PONG, &payload, mask, &mut self.out);
                }
                OP_PONG => {}
                OP_CLOSE => {
                    let mut payload = body.to_vec();
                    if let Some(mask) = frame.mask {
                        apply_mask(&mut payload, mask);
                    }
                    let code = match payload.get(..2) {
                        Some(&[a, b]) => u16::from_be_bytes([a, b]),
                        _ => 1005,
                    };
                    let reply = payload.get(..2).unwrap_or_default().to_vec();
                    let mask = self.next_mask();
                    encode_frame(OP_CLOSE, &reply, mask, &mut self.out);
                    return Err(WsError::Closed(code));
                }
                OP_TEXT => return Err(WsError::BadFrame("text frame (MQTT uses binary)")),
                _ => return Err(WsError::BadFrame("unknown opcode")),
            }
        }
        Ok(pos)
    }
}

/// The `Sec-WebSocket-Accept` value for `key`.
pub fn accept_for(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(GUID.as_bytes());
    BASE64.encode(ctx.finish().as_ref())
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Checks the status line and the headers that complete the handshake.
fn check_response(head: &[u8], expect_accept: &str) -> Result<(), WsError> {
    let text = std::str::from_utf8(head).map_err(|_| WsError::BadHandshake("non-UTF-8 head"))?;
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let mut parts = status.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if !version.starts_with("HTTP/1.") {
        return Err(WsError::BadHandshake("not an HTTP response"));
    }
    if code != "101" {
        return Err(WsError::Refused(status.to_string()));
    }
    let mut accept_ok = false;
    let mut upgrade_ok = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept_ok = value == expect_accept;
            if !accept_ok {
                return Err(WsError::BadHandshake("wrong Sec-WebSocket-Accept"));
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_ok = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol")
            && !value.eq_ignore_ascii_case("mqtt")
        {
            return Err(WsError::BadHandshake("the broker chose a subprotocol other than mqtt"));
        }
    }
    if !accept_ok {
        return Err(WsError::BadHandshake("no Sec-WebSocket-Accept"));
    }
    if !upgrade_ok {
        return Err(WsError::BadHandshake("no Upgrade: websocket"));
    }
    Ok(())
}

struct FrameHead {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    header_len: usize,
    len: usize,
}

/// The head of the frame at the start of `buf`, if the whole frame is there.
fn parse_frame(buf: &[u8], max_frame: usize) -> Result<Option<FrameHead>, WsError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(WsError::BadFrame("reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let masked = b1 & 0x80 != 0;
    let (len, mut header_len) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
            _ => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let is_control = opcode & 0x8 != 0;
    if is_control && (len > 125 || !fin) {
        return Err(WsError::BadFrame("control frame too long or fragmented"));
    }
    let len = usize::try_from(len).map_err(|_| WsError::BadFrame("frame too long"))?;
    if len > max_frame {
        return Err(WsError::BadFrame("frame too long"));
    }
    let mask = if masked {
        let m = buf.get(header_len..header_len + 4).and_then(|s| <[u8; 4]>::try_from(s).ok());
        header_len += 4;
        match m {
            Some(m) => Some(m),
            None => return Ok(None),
        }
    } else {
        None
    };
    if buf.len() - header_len < len {
        return Ok(None);
    }
    Ok(Some(FrameHead { fin, opcode, mask, header_len, len }))
}

/// Appends one final, masked frame (as a client must send) to `out`.
fn encode_frame(opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut BytesMut) {
    out.reserve(payload.len() + 14);
    out.extend_from_slice(&[0x80 | opcode]);
    match payload.len() {
        n if n < 126 => out.extend_from_slice(&[0x80 | n as u8]),
        n if n <= 0xFFFF => {
            out.extend_from_slice(&[0x80 | 126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.extend_from_slice(&[0x80 | 127]);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(body) = out.get_mut(start..) {
        apply_mask(body, mask);
    }
}

/// XORs `data` with the repeating 4-byte `mask` (eight bytes at a time).
fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        if let Ok(arr) = <[u8; 8]>::try_from(&*chunk) {
            chunk.copy_from_slice(&(u64::from_ne_bytes(arr) ^ wide).to_ne_bytes());
        }
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask.iter().cycle()) {
        *b ^= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matches_rfc_example() {
        assert_eq!(accept_for("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    fn upgraded_link() -> WsLink {
        let mut link = WsLink::new("h:1", DEFAULT_PATH, 1 << 20).unwrap();
        let req = String::from_utf8(link.out.to_vec()).unwrap();
        assert!(req.starts_with("GET /mqtt HTTP/1.1\r\nHost: h:1\r\n"), "{req}");
        assert!(req.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
        let key = req.split("Sec-WebSocket-Key: ").nth(1).unwrap().split("\r\n").next().unwrap();
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
            accept_for(key)
        );
        link.out.clear();
        let mut mqtt = BytesMut::new();
        // The head arrives in two pieces, followed by the start of a frame.
        let mut bytes = resp.into_bytes();
        bytes.extend_from_slice(&[0x82, 0x02, 0x20]);
        link.receive(&bytes[..10], &mut mqtt).unwrap();
        assert!(!link.is_upgraded());
        link.receive(&bytes[10..], &mut mqtt).unwrap();
        assert!(link.is_upgraded());
        link.receive(&[0x02], &mut mqtt).unwrap();
        assert_eq!(&mqtt[..], &[0x20, 0x02]);
        link
    }

    #[test]
    fn handshake_then_split_and_shared_frames() {
        let mut link = upgraded_link();
        let mut mqtt = BytesMut::new();
        // A fragmented message (binary + continuation) and a second message in one read,
        // with a ping between them.
        let data = [
            0x02, 0x01, 0xAA, // binary, not final
            0x89, 0x01, 0x7F, // ping "\x7f"
            0x80, 0x02, 0xBB, 0xCC, // continuation, final
            0x82, 0x7E, 0x00, 0x03, 1, 2, 3, // binary, 16-bit length
        ];
        for split in 0..data.len() {
            mqtt.clear();
            link.out.clear();
            link.receive(&data[..split], &mut mqtt).unwrap();
            link.receive(&data[split..], &mut mqtt).unwrap();
            assert_eq!(&mqtt[..], &[0xAA, 0xBB, 0xCC, 1, 2, 3], "split at {split}");
            // The pong is masked and echoes the ping payload.
            assert_eq!(link.out.len(), 2 + 4 + 1);
            assert_eq!(link.out[0], 0x8A);
            assert_eq!(link.out[6] ^ link.out[2], 0x7F);
        }
    }

    #[test]
    fn close_is_answered_and_reported() {
        let mut link = upgraded_link();
        let mut mqtt = BytesMut::new();
        let e = link.receive(&[0x88, 0x02, 0x03, 0xE8], &mut mqtt).unwrap_err();
        assert_eq!(e, WsError::Closed(1000));
        assert_eq!(link.out[0], 0x88);
    }

    #[test]
    fn frames_are_masked_and_round_trip() {
        let mut link = upgraded_link();
        let payload: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        link.send_binary(&payload);
        assert_eq!(&link.out[..2], &[0x82, 0xFF]);
        // Decoding our own masked frame (a server would) gives the payload back.
        let frame = link.out.split();
        let mut mqtt = BytesMut::new();
        link.receive(&frame, &mut mqtt).unwrap();
        assert_eq!(&mqtt[..], &payload[..]);
    }

    #[test]
    fn refusals_and_bad_accept_are_errors() {
        let mut link = WsLink::new("h", "/", 1024).unwrap();
        let e = link.receive(b"HTTP/1.1 404 Not Found\r\n\r\n", &mut BytesMut::new());
        assert_eq!(e, Err(WsError::Refused("HTTP/1.1 404 Not Found".into())));
        let mut link = WsLink::new("h", "/", 1024).unwrap();
        let e = link.receive(
            b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n",
            &mut BytesMut::new(),
        );
        assert_eq!(e, Err(WsError::BadHandshake("wrong Sec-WebSocket-Accept")));
    }
}
