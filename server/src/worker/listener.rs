//! Accepting sockets, adopting handed-off ones, and the read path that turns bytes into
//! packets for the session.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::BytesMut;
use mio::{Interest, Token};
use shoal_core::codec::{self, DecodeError};
use shoal_core::session::LinkLoss;
use shoal_core::ProtocolVersion;

use super::conn::{Conn, ConnState, Pressure, ReadOutcome};
use super::{Worker, CONN_BASE};

/// Most bytes read from one connection per loop iteration.
pub(super) const READ_BUDGET_BYTES: usize = 64 * 1024;
/// Sockets accepted beyond `max_connections` only to be refused in CONNACK; past
/// `max_connections + REFUSAL_SLOTS` they are closed at accept, so the refusals stay cheap.
pub(super) const REFUSAL_SLOTS: usize = 64;
/// A partial frame longer than this stays in the connection's own read buffer.
const OWN_RBUF_BYTES: usize = 4 * 1024;
use crate::route::Handoff;

impl Worker {
    /// Accepts until `WouldBlock` on listener `i`.
    pub(super) fn accept(&mut self, i: usize, now: Instant) {
        loop {
            let Some(listener) = self.listeners.get(i) else { return };
            let (stream, addr) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors and the like: try again on the next event.
                    log::warn!("accept failed: {e}");
                    return;
                }
            };
            let max = self.shared.broker_limits.max_connections;
            // Every socket counts against the ceiling, which bounds descriptors;
            // `max_connections` counts those of connections not yet closed.
            let open = self.shared.connections.fetch_add(1, Ordering::Relaxed);
            if open >= max.saturating_add(REFUSAL_SLOTS) {
                self.shared.connections.fetch_sub(1, Ordering::Relaxed);
                log::warn!(
                    "connection from {addr} closed at accept: max_connections ({max}) reached"
                );
                continue;
            }
            if !self.admit_socket(addr) {
                self.shared.connections.fetch_sub(1, Ordering::Relaxed);
                log::info!("connection from {addr} refused at accept by a hook");
                continue;
            }
            let listener = u16::try_from(i).unwrap_or(u16::MAX);
            let Some(spec) = self.shared.listeners.get(i) else {
                self.shared.connections.fetch_sub(1, Ordering::Relaxed);
                continue;
            };
            if !spec.try_open() {
                self.shared.connections.fetch_sub(1, Ordering::Relaxed);
                let max = spec.max_connections.unwrap_or_default();
                log::warn!(
                    "connection from {addr} refused: the listener's max_connections ({max}) reached"
                );
                continue;
            }
            let layer = match spec.new_layer() {
                Ok(layer) => layer,
                Err(e) => {
                    log::warn!("connection from {addr} closed: cannot start TLS: {e}");
                    self.shared.forget_connection(listener, false);
                    continue;
                }
            };
            if !self.nodelay_inherited {
                let _ = stream.set_nodelay(true);
            }
            self.counters.sockets_accepted = self.counters.sockets_accepted.wrapping_add(1);
            let plain = layer.is_none();
            let idx = self.conns.insert(Conn::new(stream, addr, layer, listener, now));
            if self.shared.live_connections(open) >= max {
                // Over the limit but under the ceiling: kept until its CONNECT, which is
                // answered with a refusal (connect.rs), so the client learns why.
                self.refusing.push(idx);
            }
            if plain {
                // A client usually sends CONNECT right behind its TCP handshake, so it
                // is often here already: read it now, before registering. That spares
                // a wake-up for its readable event, and a connection whose client id
                // is homed on another worker goes there without ever being registered
                // here (no `epoll_ctl` pair). A silent client is read in vain once and
                // then waits for its CONNECT timeout like any other. TLS and WebSocket
                // start with a handshake and take the ordinary path.
                self.on_readable(idx, now, true);
            }
            // Unless it was handed to its home worker (its slot is empty then) or is
            // closing already (dropped at the end of this iteration after one write).
            if self.conns.get(idx).is_some_and(|c| !c.registered && !c.state.is_closing()) {
                self.register_accepted(idx, now);
            }
        }
    }

    /// Registers an accepted connection that is still on this worker after its first
    /// read. A failure closes it like a lost link (it may hold a session by now).
    fn register_accepted(&mut self, idx: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(idx) else { return };
        let interest = Interest::READABLE | Interest::WRITABLE;
        match self.registry.register(&mut conn.stream, Token(CONN_BASE + idx), interest) {
            Ok(()) => conn.registered = true,
            Err(e) => {
                log::warn!("cannot register connection from {}: {e}", conn.addr);
                self.link_lost(idx, LinkLoss::SocketClosed, now);
            }
        }
    }

    /// Puts a connection in the slab and registers it for reads and writes (edge
    /// triggered; writable events only matter while `wbuf` is non-empty).
    pub(super) fn register(&mut self, conn: Conn) -> Option<usize> {
        let entry = self.conns.vacant_entry();
        let idx = entry.key();
        let conn = entry.insert(conn);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.registry.register(&mut conn.stream, Token(CONN_BASE + idx), interest) {
            log::warn!("cannot register connection from {}: {e}", conn.addr);
            let listener = conn.listener;
            self.conns.remove(idx);
            self.shared.forget_connection(listener, false);
            return None;
        }
        conn.registered = true;
        Some(idx)
    }

    /// Takes over a connection whose CONNECT was read by another worker.
    pub(super) fn adopt(&mut self, h: Handoff, now: Instant) {
        let layered = h.layer.is_some();
        let mut conn = Conn::new(h.stream, h.addr, h.layer, h.listener, h.accepted_at);
        conn.rbuf = h.rest;
        conn.bytes_in = h.bytes_in;
        let Some(idx) = self.register(conn) else { return };
        if layered {
            // TLS or WebSocket may hold decoded bytes the socket will not signal again.
            self.mark_ready(idx);
        }
        self.accept_connect(idx, h.connect, now);
        // Bytes that arrived behind the CONNECT.
        if let Some(c) = self.conns.get_mut(idx) {
            if !c.rbuf.is_empty() {
                let mut buf = std::mem::take(&mut c.rbuf);
                if self.decode_frames(idx, &mut buf, now) {
                    if let Some(c) = self.conns.get_mut(idx) {
                        c.rbuf = buf;
                    }
                }
            }
        }
    }

    /// Reads at most [`READ_BUDGET_BYTES`] from a connection, handling every complete
    /// frame as it arrives. A connection whose budget runs out goes on the ready list
    /// and is read again next iteration, after this iteration's writes: one fast
    /// publisher cannot keep the loop from its write phase or from other connections.
    ///
    /// Reads stop (bytes stay in the kernel, pushing back on the client through TCP)
    /// while a peer worker's channel is full, while this connection's own write
    /// buffer is over twice `max_outgoing_bytes` (a client that sends but does not read
    /// what it is owed), and while a client has `max_held_bytes` (a 3.x client also:
    /// `max_inflight` answers) held for the durable store. While the store's channel
    /// is full (batches wait in `Durable::unsent`), decoding stops before a PUBLISH
    /// that may need the store ([`Worker::decode_frames`]).
    ///
    /// `edge`: called for a readiness event that reported neither a close nor an error.
    /// Then a plain TCP read shorter than asked for ends the pass: it emptied the
    /// socket, and bytes arriving later raise a new edge, so the `read` that would only
    /// return `WouldBlock` is skipped (one syscall per read event). Without `edge` (a
    /// close or error was reported, which would not be signalled again; or a pass from
    /// the ready list) reads go on until `WouldBlock` or end of stream.
    pub(super) fn on_readable(&mut self, idx: usize, now: Instant, edge: bool) {
        let hard_out = self.shared.broker_limits.max_outgoing_bytes.saturating_mul(2);
        let max_held = usize::from(self.shared.limits.max_inflight);
        let max_held_bytes = self.shared.broker_limits.max_held_bytes;
        let mut budget = READ_BUDGET_BYTES;
        loop {
            if self.peers_full || budget == 0 {
                self.mark_ready(idx);
                return;
            }
            let Some(conn) = self.conns.get_mut(idx) else { return };
            if conn.state.is_closing() {
                return;
            }
            if conn.wbuf.len() >= hard_out || conn.over_held_answers(max_held, max_held_bytes) {
                conn.read_paused = true;
                return;
            }
            let held = conn.publisher && conn.pressure == Pressure::Calm;
            if held && !self.congested.is_empty() {
                // Back-pressure from a congested subscriber.
                self.mark_ready(idx);
                return;
            }
            // Bytes left undecoded under back-pressure are handled before reading more.
            let mut drained = false;
            let n = if std::mem::take(&mut conn.undecoded) {
                0
            } else {
                let want = budget.min(self.scratch.len());
                let Some(chunk) = self.scratch.get_mut(..want) else { return };
                match conn.read_into(chunk) {
                    ReadOutcome::Data(n) => {
                        drained = edge && n < want && conn.layer.is_none();
                        let bytes = n as u64;
                        conn.bytes_in = conn.bytes_in.wrapping_add(bytes);
                        self.counters.bytes_received =
                            self.counters.bytes_received.wrapping_add(bytes);
                        n
                    }
                    ReadOutcome::WouldBlock => return,
                    ReadOutcome::Closed => {
                        if conn.take_tls_handshake_failure() {
                            self.counters.tls_handshake_failures =
                                self.counters.tls_handshake_failures.wrapping_add(1);
                        }
                        self.link_lost(idx, LinkLoss::SocketClosed, now);
                        return;
                    }
                }
            };
            budget = budget.saturating_sub(n);
            let Some(data) = self.scratch.get(..n) else { return };
            // Small partial frames are copied into the worker's decode buffer (so an idle
            // connection keeps only its partial bytes); a large one keeps growing in the
            // connection's own buffer instead of being copied back and forth.
            let own = conn.rbuf.len() > OWN_RBUF_BYTES;
            let mut buf = if own {
                std::mem::take(&mut conn.rbuf)
            } else {
                let mut b = std::mem::take(&mut self.inbuf);
                b.extend_from_slice(&conn.rbuf);
                conn.rbuf = BytesMut::new();
                b
            };
            buf.extend_from_slice(data);
            let alive = self.decode_frames(idx, &mut buf, now);
            if alive && !buf.is_empty() {
                if let Some(c) = self.conns.get_mut(idx) {
                    c.rbuf = if own { std::mem::take(&mut buf) } else { BytesMut::from(&buf[..]) };
                }
            }
            if !own {
                buf.clear();
                self.inbuf = buf;
            }
            if !alive || self.conns.get(idx).is_some_and(|c| c.undecoded) {
                return;
            }
            if self.outbox_full {
                self.flush_outbox();
            }
            if drained {
                return;
            }
        }
    }

    /// Decodes and handles every complete frame in `buf`. Returns `false` once the
    /// connection is closing or has been handed to another worker.
    ///
    /// A publisher is stopped between frames as soon as a subscriber on this worker
    /// becomes congested: the rest stays in `buf` (the caller keeps it in the
    /// connection's `rbuf`), the connection is flagged `undecoded` and put on the ready
    /// list. Checking per frame keeps a congested session from receiving more than a
    /// frame's worth of messages beyond its high watermark from local publishers.
    ///
    /// While the durable store's channel is full (batches wait in this worker's
    /// memory, `Durable::unsent`), decoding stops the same way before a PUBLISH that
    /// may write to the store (QoS 1/2, or retained): what it routed would only add to
    /// those batches. QoS 0 PUBLISHes that are not retained write nothing and go on,
    /// so a QoS 0 publisher keeps being read, and at most one such frame (and the
    /// rest of its read chunk) waits.
    pub(super) fn decode_frames(&mut self, idx: usize, buf: &mut BytesMut, now: Instant) -> bool {
        let max = self.shared.limits.max_packet_bytes;
        let max_held = usize::from(self.shared.limits.max_inflight);
        let max_held_bytes = self.shared.broker_limits.max_held_bytes;
        let backlogged = self.durable.as_ref().is_some_and(|d| d.backlogged());
        loop {
            let Some(conn) = self.conns.get_mut(idx) else { return false };
            let (version, pending) = match conn.state {
                ConnState::Pending { .. } => (ProtocolVersion::V3_1_1, true),
                ConnState::Authenticating { .. } => (ProtocolVersion::V5, true),
                ConnState::Active { version, .. } => (version, false),
                ConnState::Closing { .. } => return false,
            };
            let held = conn.publisher && conn.pressure == Pressure::Calm;
            if held && !self.congested.is_empty() && !buf.is_empty() {
                conn.undecoded = true;
                self.mark_ready(idx);
                return true;
            }
            if !buf.is_empty() && conn.over_held_answers(max_held, max_held_bytes) {
                // Resumed by the write pass once a commit releases the answers.
                conn.undecoded = true;
                conn.read_paused = true;
                return true;
            }
            if backlogged && !pending && may_need_store(buf) {
                // Decoded again next iteration, once the channel has room.
                conn.undecoded = true;
                self.mark_ready(idx);
                return true;
            }
            let frame_start = buf.len();
            let decoded = codec::decode(buf, version, max);
            if let Ok(Some(packet)) = &decoded {
                let c = &mut self.counters;
                c.packets_received = c.packets_received.wrapping_add(1);
                if let codec::Packet::Publish(p) = packet {
                    c.on_publish_received(p.qos);
                }
            }
            match decoded {
                Ok(None) => return true,
                Ok(Some(packet)) if pending => {
                    if !self.handle_first_packet(idx, packet, buf, now) {
                        return false;
                    }
                }
                Ok(Some(packet)) => {
                    if matches!(packet, codec::Packet::Publish(_)) {
                        conn.publisher = true;
                    }
                    // Only the durable store holds answers (`Conn::over_held_answers`).
                    let answered = self.durable.is_some() && expects_answer(&packet);
                    let frame_len = frame_start.saturating_sub(buf.len());
                    self.handle_packet(idx, packet, now);
                    if answered {
                        if let Some(c) = self.conns.get_mut(idx) {
                            c.count_held_answer(frame_len);
                        }
                    }
                }
                Err(e) => {
                    self.decode_failed(idx, pending, e, now);
                    return false;
                }
            }
        }
    }

    fn decode_failed(&mut self, idx: usize, pending: bool, e: DecodeError, now: Instant) {
        let addr = self.conns.get(idx).map(|c| c.addr);
        if pending {
            if e == DecodeError::UnsupportedProtocolVersion {
                // [MQTT-3.1.2-2] CONNACK 0x01 "unacceptable protocol version", then close.
                if let Some(c) = self.conns.get_mut(idx) {
                    c.wbuf.extend_from_slice(&[0x20, 0x02, 0x00, 0x01]);
                }
            }
            if let Some(addr) = addr {
                log::info!("connection from {addr} closed before CONNECT: {e}");
            }
            self.close_later(idx);
        } else {
            if let Some(addr) = addr {
                log::debug!("malformed packet from {addr}: {e}");
            }
            self.link_lost(idx, LinkLoss::Malformed(e.reason_code()), now);
        }
    }
}

/// Whether the frame at the front of `buf` is a PUBLISH that may write to the durable
/// store: QoS 1/2 (a persistent subscriber may match) or retained. Read from the
/// first byte of the fixed header, so it holds for a frame not fully arrived yet.
fn may_need_store(buf: &[u8]) -> bool {
    // Fixed header byte 1: packet type (3 = PUBLISH) in the high nibble, then DUP,
    // QoS (2 bits) and RETAIN.
    buf.first().is_some_and(|&b| b >> 4 == 3 && b & 0b0111 != 0)
}

/// Whether the broker answers `packet` (what a held answer counts, see
/// `Conn::over_held_answers`).
fn expects_answer(packet: &codec::Packet) -> bool {
    match packet {
        codec::Packet::Publish(p) => p.qos != shoal_core::QoS::AtMostOnce,
        codec::Packet::PubRel(_)
        | codec::Packet::Subscribe(_)
        | codec::Packet::Unsubscribe(_)
        | codec::Packet::PingReq => true,
        _ => false,
    }
}
