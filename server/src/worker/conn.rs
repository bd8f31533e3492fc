//! One client connection: its socket, buffers and where it stands in the protocol.
//!
//! The session (protocol state) is not here: it lives in the worker's session store,
//! because a persistent session outlives its connection. An attached connection points
//! at it by [`SessionKey`].

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use shoal_core::ProtocolVersion;

use super::link::Layer;
use crate::store::SessionKey;

/// Bytes asked of the socket per `read` call (the size of the worker's scratch buffer).
pub(super) const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnState {
    /// Accepted; no CONNECT yet. Closed at `since + connect_timeout`.
    Pending { since: Instant },
    /// CONNECT (v5) names an Authentication Method and its exchange is under way
    /// (`enhanced.rs`); only AUTH and DISCONNECT may come. Closed at `since +
    /// connect_timeout` like `Pending`.
    Authenticating { since: Instant },
    /// CONNECT accepted; attached to a session.
    Active { session: SessionKey, version: ProtocolVersion },
    /// Done: the rest of `wbuf` is written once more, then the socket is dropped.
    /// `lingering`: it is kept to write what it still owes (`CLOSE_LINGER`), and counted
    /// in `Shared::lingering` until dropped. (Kept here rather than as a field of
    /// `Conn`, where it would cost 8 bytes per connection.)
    Closing { lingering: bool },
}

impl ConnState {
    pub(super) fn is_closing(&self) -> bool {
        matches!(self, Self::Closing { .. })
    }

    pub(super) fn is_lingering(&self) -> bool {
        matches!(self, Self::Closing { lingering: true })
    }
}

/// Back-pressure state of a connection as a receiver of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pressure {
    /// Its write buffer and session queue are below their high watermarks.
    Calm,
    /// Over a high watermark (half of `max_outgoing_bytes`, of `max_queued_messages`
    /// or of `max_queued_bytes`): the worker holds back publishers until it is under the
    /// low watermark (a quarter) again, or until it has been congested for
    /// `STALL_LIMIT`.
    Congested,
    /// Congested for longer than `STALL_LIMIT`: a slow consumer. It no longer holds
    /// publishers back; its QoS 0 messages are dropped and QoS 1/2 ones queue (then
    /// drop) until it drains to the low watermark and is `Calm` again.
    Slow,
}

/// A client connection.
///
/// Idle connections hold no buffers: both are released by the worker's tick when empty
/// (and, for a connection just admitted, at the end of the iteration that admitted it).
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    /// The client's address: the peer's, or the one its PROXY header named.
    pub(super) addr: SocketAddr,
    /// PROXY / TLS / WebSocket layers above the socket; `None` for plain TCP, whose
    /// reads and writes go straight to the socket.
    pub(super) layer: Option<Box<Layer>>,
    /// Index of the listener that accepted it (per-listener connection counts).
    pub(super) listener: u16,
    /// Bytes of an incomplete frame; empty (no allocation) between frames.
    pub(super) rbuf: BytesMut,
    /// Encoded packets not yet written; bounded by `max_outgoing_bytes` for deliveries.
    pub(super) wbuf: BytesMut,
    pub(super) state: ConnState,
    /// Registered with the worker's `Poll`. A plain connection is read once before it
    /// is registered (`Worker::accept`), and one handed to another worker then never is.
    pub(super) registered: bool,
    /// Listed in the worker's dirty list (has bytes to write this iteration).
    pub(super) dirty: bool,
    /// Listed in the worker's ready list: its read budget ran out (or reads were
    /// deferred) with bytes possibly left in the kernel, so it is read again next
    /// iteration without waiting for an edge that will not come.
    pub(super) ready: bool,
    /// Bytes in `rbuf` not yet decoded: decoding stopped under back-pressure. The
    /// connection is on the ready list and decodes them before reading more.
    pub(super) undecoded: bool,
    /// Has sent a PUBLISH: held back while a subscriber on this worker is congested.
    pub(super) publisher: bool,
    /// Whether this connection's subscriber side is congested (see `Pressure`).
    pub(super) pressure: Pressure,
    /// Reads stopped because `wbuf` is over its hard bound (the client does not read
    /// what it is owed), or because a 3.x client has `max_inflight` answers held for
    /// the durable store ([`Conn::over_held_answers`]); resumed by the worker's write
    /// pass once `wbuf` drains (a commit's release dirties the connection).
    pub(super) read_paused: bool,
    /// Keep-alive granted at CONNECT (for the admin API).
    pub(super) keep_alive_secs: u16,
    /// Clean Start of the CONNECT (for the admin API).
    pub(super) clean_start: bool,
    /// Unix seconds of the accepted CONNECT (0 before).
    pub(super) connected_unix: u32,
    /// Bytes read from the socket.
    pub(super) bytes_in: u64,
    /// Bytes written to the socket.
    pub(super) bytes_out: u64,
    /// Held output (durable store), offsets increasing. Bytes from the first offset
    /// on wait until that ticket is committed (see `durable.rs`); empty (no
    /// allocation) unless the store is on and writing. Boxed: `None` (8 bytes) on
    /// every connection that never waited for the disk, where a bare `Vec` would cost
    /// 24 on each of them.
    #[allow(clippy::box_collection)]
    pub(super) holds: Option<Box<Vec<Hold>>>,
}

/// A boundary in a connection's write buffer: bytes from `offset` on wait for `ticket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hold {
    offset: usize,
    ticket: u64,
    /// PUBACKs to the client's QoS 1 PUBLISHes encoded behind this boundary (and before
    /// the next): they count against our Receive Maximum until released (see
    /// `Worker::handle_packet`).
    pubacks: u32,
    /// Packets of the client answered behind this boundary (QoS 1/2 PUBLISH, PUBREL,
    /// SUBSCRIBE, UNSUBSCRIBE, PINGREQ): what [`Conn::over_held_answers`] bounds.
    answers: u32,
    /// Their size on the wire: what the routed messages behind them roughly hold in
    /// memory until the commit (bounded by `limits.max_held_bytes`).
    bytes: u64,
}

/// What reading from the socket produced.
pub(super) enum ReadOutcome {
    /// This many bytes were read into the front of the buffer.
    Data(usize),
    /// Nothing more for now.
    WouldBlock,
    /// The peer closed its side, or the socket failed.
    Closed,
}

/// What writing to the socket produced.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum WriteOutcome {
    /// Everything was written.
    Drained,
    /// The socket is full; the rest stays in `wbuf` until the next writable event.
    Pending,
    /// The socket failed.
    Failed,
}

impl Conn {
    pub(super) fn new(
        stream: TcpStream,
        addr: SocketAddr,
        layer: Option<Box<Layer>>,
        listener: u16,
        now: Instant,
    ) -> Self {
        Self {
            stream,
            addr,
            layer,
            listener,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            state: ConnState::Pending { since: now },
            registered: false,
            dirty: false,
            ready: false,
            undecoded: false,
            publisher: false,
            pressure: Pressure::Calm,
            read_paused: false,
            keep_alive_secs: 0,
            clean_start: false,
            connected_unix: 0,
            bytes_in: 0,
            bytes_out: 0,
            holds: None,
        }
    }

    /// The session this connection is attached to.
    pub(super) fn session(&self) -> Option<SessionKey> {
        match self.state {
            ConnState::Active { session, .. } => Some(session),
            _ => None,
        }
    }

    /// Reads once into the front of `buf` (the worker's scratch buffer, initialised
    /// once and reused, so no read pays for zero-filling), retrying on `Interrupted`.
    pub(super) fn read_into(&mut self, buf: &mut [u8]) -> ReadOutcome {
        if let Some(layer) = self.layer.as_deref_mut() {
            let outcome = layer.read(&mut self.stream, buf);
            if let Some(source) = layer.take_source() {
                log::debug!("connection from {} is proxied for {source}", self.addr);
                self.addr = source;
            }
            return outcome;
        }
        loop {
            match self.stream.read(buf) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => return ReadOutcome::Data(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::WouldBlock,
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }

    /// Whether this connection's TLS handshake failed, once.
    pub(super) fn take_tls_handshake_failure(&mut self) -> bool {
        self.layer.as_deref_mut().is_some_and(Layer::take_handshake_failure)
    }

    /// Holds the bytes from `offset` on until `ticket` is released. Boundaries of one
    /// ticket merge into the earliest.
    pub(super) fn hold(&mut self, offset: usize, ticket: u64) {
        let offset = offset.min(self.wbuf.len());
        let holds = self.holds.get_or_insert_with(Box::default);
        match holds.last_mut() {
            Some(h) if h.ticket == ticket => h.offset = h.offset.min(offset),
            _ => holds.push(Hold { offset, ticket, pubacks: 0, answers: 0, bytes: 0 }),
        }
    }

    /// Notes a PUBACK just encoded while output is held: it waits behind the last
    /// boundary. Nothing to note when nothing is held (it goes out this iteration).
    pub(super) fn count_held_puback(&mut self) {
        if let Some(h) = self.holds.as_mut().and_then(|h| h.last_mut()) {
            h.pubacks = h.pubacks.saturating_add(1);
        }
    }

    /// PUBACKs encoded but held (0 unless the durable store holds output).
    pub(super) fn held_pubacks(&self) -> usize {
        let holds = self.holds.iter().flat_map(|h| h.iter());
        holds.map(|h| h.pubacks as usize).fold(0, usize::saturating_add)
    }

    /// Notes a packet of the client just answered, `bytes` long on the wire: if the
    /// answer is held, it counts towards [`Conn::over_held_answers`].
    pub(super) fn count_held_answer(&mut self, bytes: usize) {
        if let Some(h) = self.holds.as_mut().and_then(|h| h.last_mut()) {
            h.answers = h.answers.saturating_add(1);
            h.bytes = h.bytes.saturating_add(bytes as u64);
        }
    }

    /// Whether the client has packets whose answers wait for the durable store
    /// adding up to `max_bytes` or more, or (a 3.x client) `limit` or more of them: it
    /// is read no more until a commit releases some. Every message routed behind a
    /// held answer stays in memory (its body and the store intents behind it) for as
    /// long as the store is behind; the byte bound keeps a few publishers of large
    /// payloads from holding much of it. A 3.x client has no Receive Maximum to
    /// respect, and one that sends QoS 1 PUBLISHes without waiting for their PUBACKs
    /// would otherwise be read on and on. MQTT 5 clients are not paused by the count:
    /// one going over our Receive Maximum is disconnected (0x93,
    /// `Worker::receive_maximum_exceeded`).
    pub(super) fn over_held_answers(&self, limit: usize, max_bytes: usize) -> bool {
        let Some(holds) = self.holds.as_deref() else { return false };
        let (answers, bytes) = holds.iter().fold((0_usize, 0_u64), |(n, b), h| {
            (n.saturating_add(h.answers as usize), b.saturating_add(h.bytes))
        });
        if bytes >= max_bytes as u64 {
            return true;
        }
        let v5 = matches!(self.state, ConnState::Active { version, .. } if version.is_v5());
        !v5 && answers >= limit
    }

    /// Releases the holds of tickets up to `through`; true if any went.
    pub(super) fn release(&mut self, through: u64) -> bool {
        let Some(holds) = self.holds.as_mut() else { return false };
        let before = holds.len();
        holds.retain(|h| h.ticket > through);
        let released = holds.len() != before;
        if holds.is_empty() {
            self.holds = None;
        }
        released
    }

    /// Drops the bytes held for `ticket` and everything after them (a failed commit:
    /// they must never be sent). True if it held any.
    pub(super) fn drop_held(&mut self, ticket: u64) -> bool {
        let held = self.holds.as_ref().and_then(|h| h.iter().find(|h| h.ticket == ticket));
        let Some(&Hold { offset, .. }) = held else { return false };
        self.wbuf.truncate(offset);
        self.holds = None;
        true
    }

    /// Drops every held byte: the connection is ending, so they could never be sent
    /// (`close_pending` writes only up to the first boundary), and what the session
    /// writes as it ends (a DISCONNECT, which promises nothing on disk) must not wait
    /// behind them. The client resends what it was not acknowledged for.
    pub(super) fn drop_all_held(&mut self) {
        if let Some(offset) = self.holds.take().and_then(|h| h.first().map(|h| h.offset)) {
            self.wbuf.truncate(offset);
        }
    }

    /// Whether some output waits for a commit.
    pub(super) fn is_holding(&self) -> bool {
        self.holds.is_some()
    }

    /// Where writing must stop for now.
    fn write_limit(&self) -> usize {
        self.holds.as_ref().and_then(|h| h.first()).map_or(self.wbuf.len(), |h| h.offset)
    }

    /// Moves every hold boundary to `by(old offset)` after bytes left the buffer.
    fn shift_holds(&mut self, by: impl Fn(usize) -> usize) {
        for h in self.holds.iter_mut().flat_map(|h| h.iter_mut()) {
            h.offset = by(h.offset);
        }
    }

    /// Writes `wbuf` until it is empty, held bytes come, or the socket is full, adding
    /// the bytes taken from `wbuf` (MQTT bytes, before any TLS or WebSocket framing)
    /// to `sent` (the worker's counter) and to the connection's own count.
    pub(super) fn flush(&mut self, sent: &mut u64) -> WriteOutcome {
        let limit = self.write_limit();
        if let Some(layer) = self.layer.as_deref_mut() {
            // Only the bytes before the first hold go to the layer (which may frame
            // them in place); the held tail is put back behind what it left.
            let tail = self.wbuf.split_off(limit.min(self.wbuf.len()));
            let before = self.wbuf.len();
            let outcome = layer.write(&mut self.stream, &mut self.wbuf);
            let left = self.wbuf.len();
            let n = before.saturating_sub(left) as u64;
            self.bytes_out = self.bytes_out.wrapping_add(n);
            *sent = sent.wrapping_add(n);
            self.shift_holds(|o| o.saturating_sub(limit).saturating_add(left));
            self.wbuf.unsplit(tail);
            return outcome;
        }
        loop {
            let limit = self.write_limit();
            let Some(ready) = self.wbuf.get(..limit).filter(|b| !b.is_empty()) else { break };
            match self.stream.write(ready) {
                Ok(0) => return WriteOutcome::Failed,
                Ok(n) => {
                    self.wbuf.advance(n);
                    self.shift_holds(|o| o.saturating_sub(n));
                    let n = n as u64;
                    self.bytes_out = self.bytes_out.wrapping_add(n);
                    *sent = sent.wrapping_add(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return WriteOutcome::Pending,
                Err(_) => return WriteOutcome::Failed,
            }
        }
        WriteOutcome::Drained
    }

    /// The username the verified client certificate stands for, as the listener's
    /// `username_from` says; `None` on a listener without TLS or without it, for a client
    /// without a certificate, or before the TLS handshake is done (it is done once
    /// CONNECT has been read).
    #[allow(dead_code)] // Read by authentication (issue 6), which is wired separately.
    pub(crate) fn cert_username(&self) -> Option<String> {
        self.layer.as_deref()?.cert_username()
    }

    /// Before the last writes: the layers end in order after what `wbuf` holds
    /// (WebSocket close frame, TLS close_notify).
    pub(super) fn close_notify(&mut self) {
        if let Some(layer) = self.layer.as_deref_mut() {
            layer.close_notify();
        }
    }

    /// Drops empty buffers' memory (idle connections cost no buffer space).
    pub(super) fn release_idle_buffers(&mut self) {
        if let Some(layer) = self.layer.as_deref_mut() {
            layer.release_idle_buffers();
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > 0 {
            self.wbuf = BytesMut::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_state_stays_small() {
        let conn = std::mem::size_of::<Conn>();
        let slot = std::mem::size_of::<crate::store::SessionSlot>();
        eprintln!("Conn {conn} B, SessionSlot {slot} B");
        // Idle connection: both structs, slab and index overhead, no buffers. The
        // session's subscription and QoS 1/2 state is boxed on first use.
        // 8 of these bytes are the TLS/WebSocket layer pointer (`None` for plain TCP);
        // 24 are the per-connection byte counts and CONNECT facts the admin API shows
        // (issue 8); 8 the durable store's held-output boundaries (`None` unless
        // waiting, issue 7).
        assert!(conn <= 184, "Conn {conn}");
        assert!(slot <= 200, "SessionSlot {slot}");
    }
}
