//! One load connection: its socket, buffers, MQTT handshake state and role (publisher,
//! subscriber or idle).
//!
//! The hot paths are here. A publisher appends pre-encoded PUBLISH frames (a
//! [`Template`] built once with the codec, then only the packet id and the payload
//! stamp are patched) to one write buffer and writes it in large batches. A subscriber
//! decodes every frame with the codec, checks its stamp and records latency. Neither
//! allocates per message. The event loop that owns these is `super::worker`.
//!
//! TLS and WebSocket sit in [`Layers`], boxed and absent on plain connections: the plain
//! read and write paths only test that the `Option` is `None`, so they cost what they
//! did before either existed.

use std::io::{self, Read, Write};

use bytes::{Buf, Bytes, BytesMut};
use mio::net::TcpStream;
use shoal_core::codec::{self, PubAck, Publish, PublishProperties};
use shoal_core::{Packet, PacketId, ProtocolVersion, QoS, TopicName};

use crate::client::{self, ClientError, Transport};
use crate::payload::{SeqTracker, Stamp};
use crate::rate::RateLimiter;
use crate::ws::WsLink;

/// Write buffer size a publisher fills before writing.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started yet (waiting for the connect-rate limiter).
    NotStarted,
    /// TCP connect in progress.
    Connecting,
    /// CONNECT sent.
    AwaitConnAck,
    /// SUBSCRIBE sent.
    AwaitSubAck,
    /// Established (and subscribed).
    Ready,
    /// Closed, by us or by an error.
    Closed,
}

/// A PUBLISH frame encoded once by the codec, with the offsets to patch per message.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Vec<u8>,
    /// Offset of the two packet-id bytes (QoS 1/2).
    pid_offset: Option<usize>,
    /// Offset of the payload.
    payload_offset: usize,
}

impl Template {
    /// Encodes a PUBLISH of `payload_len` bytes on `topic` and finds where the packet id
    /// and payload sit, by encoding twice and checking the result decodes back.
    ///
    /// # Errors
    /// Encoding errors, or a codec whose output does not round-trip (a bug to report).
    pub fn new(
        topic: &TopicName,
        qos: QoS,
        payload_len: usize,
        version: ProtocolVersion,
    ) -> Result<Self, ClientError> {
        let encode_with = |pid: u16| -> Result<Vec<u8>, ClientError> {
            let mut out = BytesMut::new();
            let publish = Publish {
                dup: false,
                qos,
                retain: false,
                topic: topic.clone(),
                packet_id: if qos == QoS::AtMostOnce { None } else { PacketId::new(pid) },
                properties: PublishProperties::default(),
                payload: Bytes::from(vec![0u8; payload_len]),
            };
            codec::encode(&Packet::Publish(publish), version, &mut out)?;
            Ok(out.to_vec())
        };
        let a = encode_with(0x0101)?;
        let b = encode_with(0x0102)?;
        let payload_offset =
            a.len().checked_sub(payload_len).ok_or(ClientError::Unexpected("template"))?;
        let pid_offset = if qos == QoS::AtMostOnce {
            None
        } else {
            let diff = a.iter().zip(&b).position(|(x, y)| x != y);
            Some(diff.and_then(|d| d.checked_sub(1)).ok_or(ClientError::Unexpected("template"))?)
        };
        let template = Self { bytes: a, pid_offset, payload_offset };
        template.check(topic, qos, version)?;
        Ok(template)
    }

    fn check(
        &self,
        topic: &TopicName,
        qos: QoS,
        version: ProtocolVersion,
    ) -> Result<(), ClientError> {
        let mut buf = BytesMut::from(&self.bytes[..]);
        if let Some(off) = self.pid_offset {
            patch(&mut buf, off, &0x1234u16.to_be_bytes());
        }
        let stamp = Stamp { publisher: 3, seq: 5, sent_ns: 7 };
        if let Some(p) = buf.get_mut(self.payload_offset..) {
            stamp.write(p);
        }
        let ok = match codec::decode(&mut buf, version, usize::MAX)? {
            Some(Packet::Publish(p)) => {
                p.topic == *topic
                    && p.qos == qos
                    && p.packet_id.map(PacketId::get) == self.pid_offset.map(|_| 0x1234)
                    && Stamp::read(&p.payload) == Some(stamp)
            }
            _ => false,
        };
        if !ok || !buf.is_empty() {
            return Err(ClientError::Unexpected("PUBLISH template that does not round-trip"));
        }
        Ok(())
    }

    /// Length of one frame.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

fn patch(buf: &mut [u8], at: usize, with: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + with.len()) {
        dst.copy_from_slice(with);
    }
}

/// Publisher state.
#[derive(Debug)]
pub struct Publisher {
    /// Publisher id carried in the stamps.
    pub id: u32,
    template: Template,
    /// Next sequence number, which is also the number of messages handed to the socket
    /// buffer so far.
    pub seq: u64,
    /// Pacing for this publisher's share of `--rate`.
    pub limiter: RateLimiter,
    /// Unacknowledged QoS 1/2 publishes.
    pub inflight: u32,
    /// Window size (`--inflight`, lowered to the broker's Receive Maximum).
    pub max_inflight: u32,
    last_pid: u16,
    /// One bit per packet id in flight.
    outstanding: Vec<u64>,
    /// Acks for packet ids not in flight.
    pub stray_acks: u64,
}

impl Publisher {
    /// A publisher with its template.
    pub fn new(id: u32, template: Template, limiter: RateLimiter, max_inflight: u32) -> Self {
        Self {
            id,
            template,
            seq: 0,
            limiter,
            inflight: 0,
            max_inflight: max_inflight.clamp(1, 65_535),
            last_pid: 0,
            outstanding: vec![0; 1024],
            stray_acks: 0,
        }
    }

    /// Length of one PUBLISH frame.
    pub fn frame_len(&self) -> usize {
        self.template.len()
    }

    fn bit(id: u16) -> (usize, u64) {
        (usize::from(id >> 6), 1u64 << (id & 63))
    }

    fn alloc_pid(&mut self) -> u16 {
        // The window is below 65,535, so a free id exists.
        loop {
            self.last_pid = self.last_pid.wrapping_add(1);
            if self.last_pid == 0 {
                continue;
            }
            let (w, b) = Self::bit(self.last_pid);
            if let Some(word) = self.outstanding.get_mut(w) {
                if *word & b == 0 {
                    *word |= b;
                    return self.last_pid;
                }
            }
        }
    }

    /// Clears `id` from the window; false if it was not in flight.
    pub fn complete(&mut self, id: PacketId) -> bool {
        let (w, b) = Self::bit(id.get());
        match self.outstanding.get_mut(w) {
            Some(word) if *word & b != 0 => {
                *word &= !b;
                self.inflight = self.inflight.saturating_sub(1);
                true
            }
            _ => {
                self.stray_acks += 1;
                false
            }
        }
    }

    /// Whether `id` is in flight.
    pub fn is_outstanding(&self, id: PacketId) -> bool {
        let (w, b) = Self::bit(id.get());
        self.outstanding.get(w).is_some_and(|word| word & b != 0)
    }

    /// Appends `n` stamped publishes to `out`; returns the payload bytes added.
    pub fn append(&mut self, out: &mut BytesMut, n: u64, now_ns: u64) -> u64 {
        let t_len = self.template.len();
        out.reserve(t_len * n as usize);
        for _ in 0..n {
            let start = out.len();
            out.extend_from_slice(&self.template.bytes);
            let Some(frame) = out.get_mut(start..) else { break };
            if let Some(off) = self.template.pid_offset {
                let pid = self.alloc_pid();
                patch(frame, off, &pid.to_be_bytes());
                self.inflight += 1;
            }
            if let Some(payload) = frame.get_mut(self.template.payload_offset..) {
                Stamp { publisher: self.id, seq: self.seq, sent_ns: now_ns }.write(payload);
            }
            self.seq += 1;
        }
        n * (t_len - self.template.payload_offset) as u64
    }
}

/// Subscriber state.
#[derive(Debug)]
pub struct Subscriber {
    /// The filter subscribed to.
    pub filter: String,
    /// First expected publisher id.
    pub first: u32,
    /// One tracker per expected publisher, indexed by `id - first`.
    pub trackers: Vec<SeqTracker>,
    /// Messages without our stamp or from an unexpected publisher.
    pub foreign: u64,
}

/// What a connection does.
#[derive(Debug)]
pub enum RoleState {
    /// Publishes.
    Pub(Box<Publisher>),
    /// Subscribes.
    Sub(Subscriber),
    /// Holds the connection.
    Idle,
}

/// One connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket, once started; dropped on close.
    pub stream: Option<TcpStream>,
    /// Life-cycle state.
    pub state: State,
    /// Index into the plan's connection list.
    pub spec: usize,
    /// Bytes read but not yet a whole frame. Empty (no allocation) for idle connections.
    pub rbuf: BytesMut,
    /// Bytes waiting to be written.
    pub wbuf: BytesMut,
    /// The socket accepted the last write in full (edge-triggered readiness).
    pub writable: bool,
    /// When the connection was started, ns.
    pub started_ns: u64,
    /// When we last wrote, ns (keep-alive).
    pub last_write_ns: u64,
    /// Role.
    pub role: RoleState,
    /// TLS and WebSocket state; `None` for plain MQTT over TCP.
    pub layers: Option<Box<Layers>>,
}

/// Largest WebSocket frame a publisher's batch is cut into.
const MAX_WS_FRAME: usize = BATCH_BYTES;

/// The layers between the MQTT bytes and the socket: TLS, WebSocket, or WebSocket
/// inside TLS. Writes go MQTT bytes → WebSocket frames → TLS records → socket; reads
/// the other way.
#[derive(Debug)]
pub struct Layers {
    tls: Option<rustls::ClientConnection>,
    ws: Option<WsLink>,
}

/// Outcome of one read through [`Layers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// Something was read (maybe not yet MQTT bytes: handshake, records, frames).
    Data,
    /// Nothing more to read until the next readiness event.
    Blocked,
    /// The broker closed the connection; MQTT bytes read just before are in `rbuf`.
    Eof,
}

impl Layers {
    /// New TLS / WebSocket sessions for one connection, or `None` for plain TCP.
    ///
    /// # Errors
    /// rustls refusing a session, or no randomness for the WebSocket key.
    pub fn for_transport(transport: &Transport) -> Result<Option<Box<Self>>, ClientError> {
        if transport.tls.is_none() && transport.ws.is_none() {
            return Ok(None);
        }
        let tls = transport.tls.as_ref().map(|t| t.session()).transpose()?;
        let ws = transport.ws.as_ref().map(|w| w.link()).transpose()?;
        Ok(Some(Box::new(Self { tls, ws })))
    }

    /// Whether bytes are waiting in the layers themselves (frames, records).
    fn has_output(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
            || self.ws.as_ref().is_some_and(|w| !w.out.is_empty())
    }

    /// Bytes of MQTT data framed but not yet handed to TLS or the socket.
    fn framed_bytes(&self) -> usize {
        self.ws.as_ref().map_or(0, |w| w.out.len())
    }

    /// Moves `wbuf` down through the layers and out, until everything is written, the
    /// socket is full, or a handshake must finish first.
    fn flush(
        &mut self,
        stream: &mut TcpStream,
        wbuf: &mut BytesMut,
        wrote: &mut bool,
    ) -> io::Result<Flush> {
        loop {
            if let Some(tls) = &mut self.tls {
                while tls.wants_write() {
                    match tls.write_tls(stream) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(_) => *wrote = true,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Ok(Flush::Blocked)
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            let pending = match &mut self.ws {
                Some(ws) => {
                    if ws.out.is_empty() && ws.is_upgraded() && !wbuf.is_empty() {
                        let n = wbuf.len().min(MAX_WS_FRAME);
                        ws.send_binary(wbuf.get(..n).unwrap_or_default());
                        wbuf.advance(n);
                    }
                    &mut ws.out
                }
                None => &mut *wbuf,
            };
            if pending.is_empty() {
                return Ok(if wbuf.is_empty() { Flush::Done } else { Flush::Waiting });
            }
            match &mut self.tls {
                Some(tls) => {
                    let n = tls.writer().write(pending)?;
                    if n == 0 && !tls.wants_write() {
                        // rustls holds all the early data it will before the handshake.
                        return Ok(Flush::Waiting);
                    }
                    pending.advance(n);
                }
                None => match stream.write(pending) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        pending.advance(n);
                        *wrote = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                },
            }
        }
    }

    /// Reads once from the socket up through the layers; MQTT bytes go to `rbuf`.
    fn read(
        &mut self,
        stream: &mut TcpStream,
        scratch: &mut [u8],
        rbuf: &mut BytesMut,
    ) -> Result<ReadStatus, String> {
        let mut eof = false;
        let n = match &mut self.tls {
            None => match stream.read(scratch) {
                Ok(0) => return Ok(ReadStatus::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadStatus::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(ReadStatus::Data),
                Err(e) => return Err(format!("read failed: {e}")),
            },
            Some(tls) => {
                match tls.read_tls(stream) {
                    Ok(0) => eof = true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(ReadStatus::Blocked)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        return Ok(ReadStatus::Data)
                    }
                    Err(e) => return Err(format!("read failed: {e}")),
                }
                if let Err(e) = tls.process_new_packets() {
                    // Tell the broker why (the alert rustls queued), then give up.
                    let _ = tls.write_tls(stream);
                    return Err(format!("TLS: {e}{}", crate::tls::hint(&e)));
                }
                let mut n = 0;
                while let Some(room) = scratch.get_mut(n..).filter(|r| !r.is_empty()) {
                    match tls.reader().read(room) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(k) => n += k,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("TLS: {e}")),
                    }
                }
                n
            }
        };
        let data = scratch.get(..n).unwrap_or_default();
        match &mut self.ws {
            None => rbuf.extend_from_slice(data),
            Some(ws) => ws.receive(data, rbuf).map_err(|e| e.to_string())?,
        }
        Ok(if eof { ReadStatus::Eof } else { ReadStatus::Data })
    }
}

/// Outcome of writing out the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything written.
    Done,
    /// The socket is full; wait for writable.
    Blocked,
    /// Nothing more can go out until the broker answers a TLS or WebSocket handshake.
    Waiting,
}

impl Conn {
    /// A connection not yet started.
    pub fn new(spec: usize, role: RoleState) -> Self {
        Self {
            stream: None,
            state: State::NotStarted,
            spec,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            writable: false,
            started_ns: 0,
            last_write_ns: 0,
            role,
            layers: None,
        }
    }

    /// Whether anything waits to be written (MQTT bytes, frames or TLS records).
    pub fn wants_flush(&self) -> bool {
        !self.wbuf.is_empty() || self.layers.as_ref().is_some_and(|l| l.has_output())
    }

    /// Bytes of MQTT data not yet handed to the socket (nor to TLS).
    pub fn unsent_bytes(&self) -> usize {
        self.wbuf.len() + self.layers.as_ref().map_or(0, |l| l.framed_bytes())
    }

    /// Reads once through TLS / WebSocket (connections with [`Layers`] only).
    ///
    /// # Errors
    /// A socket, TLS or WebSocket failure, in words.
    pub fn read_layered(&mut self, scratch: &mut [u8]) -> Result<ReadStatus, String> {
        match (self.stream.as_mut(), self.layers.as_deref_mut()) {
            (Some(stream), Some(layers)) => layers.read(stream, scratch, &mut self.rbuf),
            _ => Ok(ReadStatus::Blocked),
        }
    }

    /// Writes the buffer until it is empty or the socket is full.
    ///
    /// # Errors
    /// A socket error (the caller closes the connection).
    pub fn flush(&mut self, now_ns: u64) -> io::Result<Flush> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if let Some(layers) = self.layers.as_deref_mut() {
            let mut wrote = false;
            let result = layers.flush(stream, &mut self.wbuf, &mut wrote);
            if wrote {
                self.last_write_ns = now_ns;
            }
            if matches!(result, Ok(Flush::Blocked)) {
                self.writable = false;
            }
            return result;
        }
        while !self.wbuf.is_empty() {
            match stream.write(&self.wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let _ = self.wbuf.split_to(n);
                    self.last_write_ns = now_ns;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return Ok(Flush::Blocked);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.wbuf.capacity() > 4 * BATCH_BYTES {
            // A one-off burst grew the buffer; give the memory back.
            self.wbuf = BytesMut::new();
        }
        Ok(Flush::Done)
    }

    /// Encodes `packet` onto the write buffer.
    ///
    /// # Errors
    /// Encoding errors.
    pub fn queue(&mut self, packet: &Packet, version: ProtocolVersion) -> Result<(), ClientError> {
        codec::encode(packet, version, &mut self.wbuf)?;
        Ok(())
    }

    /// Queues the acknowledgement a received QoS 1/2 PUBLISH needs.
    ///
    /// # Errors
    /// Encoding errors.
    pub fn ack_publish(
        &mut self,
        qos: QoS,
        packet_id: Option<PacketId>,
        version: ProtocolVersion,
    ) -> Result<(), ClientError> {
        match (qos, packet_id) {
            (QoS::AtLeastOnce, Some(id)) => self.queue(&Packet::PubAck(PubAck::new(id)), version),
            (QoS::ExactlyOnce, Some(id)) => self.queue(&Packet::PubRec(PubAck::new(id)), version),
            _ => Ok(()),
        }
    }

    /// Queues SUBSCRIBE for a subscriber.
    ///
    /// # Errors
    /// Encoding errors.
    pub fn queue_subscribe(
        &mut self,
        qos: QoS,
        version: ProtocolVersion,
    ) -> Result<(), ClientError> {
        if let RoleState::Sub(s) = &self.role {
            let filters = [s.filter.clone()];
            let id = PacketId::new(1).ok_or(ClientError::Unexpected("packet id"))?;
            let packet = client::subscribe_packet(id, &filters, qos);
            self.queue(&packet, version)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::STAMP_BYTES;

    #[test]
    fn template_patches_packet_id_and_stamp() {
        for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let topic = TopicName::try_from_str("a/b").unwrap();
                let t = Template::new(&topic, qos, 64, version).unwrap();
                let mut p = Publisher::new(9, t, RateLimiter::unlimited(), 10);
                let mut out = BytesMut::new();
                assert_eq!(p.append(&mut out, 3, 77), 3 * 64);
                for seq in 0..3 {
                    let Some(Packet::Publish(pkt)) =
                        codec::decode(&mut out, version, usize::MAX).unwrap()
                    else {
                        panic!("not a publish")
                    };
                    let stamp = Stamp::read(&pkt.payload).unwrap();
                    assert_eq!((stamp.publisher, stamp.seq, stamp.sent_ns), (9, seq, 77));
                    assert_eq!(pkt.payload.len(), 64);
                    if qos != QoS::AtMostOnce {
                        let id = pkt.packet_id.unwrap();
                        assert_eq!(id.get(), seq as u16 + 1);
                        assert!(p.is_outstanding(id));
                    }
                }
                assert!(out.is_empty());
            }
        }
    }

    #[test]
    fn window_completes_and_skips_ids_in_flight() {
        let topic = TopicName::try_from_str("t").unwrap();
        let t = Template::new(&topic, QoS::AtLeastOnce, STAMP_BYTES, ProtocolVersion::V5).unwrap();
        let mut p = Publisher::new(0, t, RateLimiter::unlimited(), 100);
        let mut out = BytesMut::new();
        p.append(&mut out, 2, 0);
        assert_eq!(p.inflight, 2);
        assert!(p.complete(PacketId::new(1).unwrap()));
        assert!(!p.complete(PacketId::new(1).unwrap()), "second ack of the same id is stray");
        assert_eq!((p.inflight, p.stray_acks), (1, 1));
        // Wrap around: id 2 is still in flight and must be skipped.
        p.last_pid = u16::MAX;
        assert_eq!(p.alloc_pid(), 1);
        assert_eq!(p.alloc_pid(), 3);
    }
}
