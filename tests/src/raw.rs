//! A tiny blocking MQTT client on `std::net::TcpStream` that lets a test say exactly
//! which bytes go out and check exactly what comes back.
//!
//! Independent clients (rumqttc, paho, mosquitto) check that Shoal interoperates; this
//! one checks the protocol edges those clients never produce: withheld acks, duplicate
//! QoS 2 packet ids, malformed bytes, a silent socket. Every read has a deadline; a test
//! that waits for a packet that never comes fails with a message rather than hanging.
//! The wire format is in [`wire`]; the broker's own codec is deliberately not used.

pub mod stream;
pub mod wire;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use shoal_core::ProtocolVersion;

pub use stream::ClientStream;
pub use wire::{ConnectOptions, Incoming, Property, Publish};

/// How long a test waits for something the broker should do promptly.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Why a receive returned no packet.
#[derive(Debug)]
pub enum RecvError {
    /// Nothing complete arrived within the allowed time.
    Timeout,
    /// The broker closed the connection (EOF or reset).
    Closed,
    /// Bytes the broker should never send.
    Malformed(String),
    /// Any other socket error.
    Io(io::Error),
}

/// A connected raw client.
pub struct RawClient {
    stream: Box<dyn ClientStream>,
    version: ProtocolVersion,
    /// Bytes read but not yet decoded.
    buf: Vec<u8>,
    /// Packets read while waiting for something else (an ack, a PINGRESP); returned
    /// first by [`RawClient::recv`], in arrival order.
    pending: VecDeque<Incoming>,
    next_id: u16,
}

impl RawClient {
    /// Opens a TCP connection and sends nothing. `version` decides how replies decode.
    pub fn tcp(addr: SocketAddr, version: ProtocolVersion) -> Self {
        let stream = TcpStream::connect_timeout(&addr, DEADLINE)
            .unwrap_or_else(|e| panic!("TCP connect to {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        Self::over(Box::new(stream), version)
    }

    /// A client on a stream opened elsewhere (TLS, WebSocket: see [`stream`]); sends
    /// nothing.
    pub fn over(stream: Box<dyn ClientStream>, version: ProtocolVersion) -> Self {
        Self { stream, version, buf: Vec::new(), pending: VecDeque::new(), next_id: 0 }
    }

    /// Sends CONNECT (clean session) on `stream` and asserts the CONNACK accepts.
    pub fn connect_over(
        stream: Box<dyn ClientStream>,
        version: ProtocolVersion,
        client_id: &str,
    ) -> Self {
        let mut client = Self::over(stream, version);
        client.send(&wire::connect(&ConnectOptions::new(version, client_id)));
        match client.recv(DEADLINE) {
            Ok(Incoming::ConnAck { code: 0, .. }) => client,
            other => panic!("CONNECT {client_id:?} was not accepted: {other:?}"),
        }
    }

    /// Sends CONNECT and returns the client with the broker's first reply, whatever it is.
    pub fn connect_raw(
        addr: SocketAddr,
        opts: &ConnectOptions,
    ) -> (Self, Result<Incoming, RecvError>) {
        let mut client = Self::tcp(addr, opts.version);
        client.send(&wire::connect(opts));
        let reply = client.recv(DEADLINE);
        (client, reply)
    }

    /// Connects and asserts the CONNACK accepts; returns the client and Session Present.
    pub fn connect_with(addr: SocketAddr, opts: &ConnectOptions) -> (Self, bool) {
        let (client, reply) = Self::connect_raw(addr, opts);
        match reply {
            Ok(Incoming::ConnAck { session_present, code: 0, .. }) => (client, session_present),
            other => panic!("CONNECT {:?} was not accepted: {other:?}", opts.client_id),
        }
    }

    /// Connects with a clean session and asserts success.
    pub fn connect(addr: SocketAddr, version: ProtocolVersion, client_id: &str) -> Self {
        Self::connect_with(addr, &ConnectOptions::new(version, client_id)).0
    }

    /// The protocol version replies are decoded with.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Writes bytes, panicking on failure.
    pub fn send(&mut self, bytes: &[u8]) {
        if let Err(e) = self.try_send(bytes) {
            panic!("send {} bytes: {e}", bytes.len());
        }
    }

    /// Writes bytes; an error is returned (the broker may already have closed).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// The next packet id, skipping zero.
    pub fn next_packet_id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// Receives one packet, waiting at most `within`.
    pub fn recv(&mut self, within: Duration) -> Result<Incoming, RecvError> {
        if let Some(p) = self.pending.pop_front() {
            return Ok(p);
        }
        self.read_packet(Instant::now() + within)
    }

    fn read_packet(&mut self, deadline: Instant) -> Result<Incoming, RecvError> {
        self.read_with(deadline, |buf, packet, used| {
            buf.drain(..used);
            packet
        })
    }

    /// Reads until `buf` starts with a whole packet, then hands `take` the buffer, the
    /// decoded packet and its length on the wire; `take` removes it from the buffer.
    fn read_with<T>(
        &mut self,
        deadline: Instant,
        take: impl Fn(&mut Vec<u8>, Incoming, usize) -> T,
    ) -> Result<T, RecvError> {
        loop {
            match wire::decode(self.version, &self.buf) {
                Ok(Some((packet, used))) => return Ok(take(&mut self.buf, packet, used)),
                Ok(None) => {}
                Err(e) => return Err(RecvError::Malformed(e)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvError::Timeout);
            }
            let wait = (deadline - now).max(Duration::from_millis(1));
            self.stream.set_read_timeout(Some(wait)).map_err(RecvError::Io)?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(RecvError::Closed),
                Ok(n) => self.buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {}
                    io::ErrorKind::Interrupted => {}
                    // UnexpectedEof: a TLS stream whose TCP connection ended without
                    // close_notify (the broker's last write did not fit, or a reset).
                    io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof => return Err(RecvError::Closed),
                    _ => return Err(RecvError::Io(e)),
                },
            }
        }
    }

    /// Receives one packet within [`DEADLINE`] or panics.
    pub fn expect(&mut self) -> Incoming {
        match self.recv(DEADLINE) {
            Ok(p) => p,
            Err(e) => panic!("expected a packet, got {e:?}"),
        }
    }

    /// Receives one packet within [`DEADLINE`] as it was on the wire, for what the
    /// decoded form leaves out (the properties of an acknowledgement, for instance).
    /// Panics if a decoded packet is already waiting in `pending`.
    pub fn expect_frame(&mut self) -> Vec<u8> {
        assert!(self.pending.is_empty(), "decoded packets pending: {:?}", self.pending);
        let frame = self.read_with(Instant::now() + DEADLINE, |buf, _, used| {
            buf.drain(..used).collect::<Vec<u8>>()
        });
        frame.unwrap_or_else(|e| panic!("expected a packet, got {e:?}"))
    }

    /// Receives one packet and asserts it is a PUBLISH.
    pub fn expect_publish(&mut self) -> Publish {
        match self.expect() {
            Incoming::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Waits for a packet matching `pred`, keeping any others for later `recv` calls.
    pub fn wait_for(&mut self, what: &str, pred: impl Fn(&Incoming) -> bool) -> Incoming {
        if let Some(pos) = self.pending.iter().position(&pred) {
            if let Some(p) = self.pending.remove(pos) {
                return p;
            }
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.read_packet(deadline) {
                Ok(p) if pred(&p) => return p,
                Ok(p) => self.pending.push_back(p),
                Err(e) => panic!("waiting for {what}: {e:?} (kept {:?})", self.pending),
            }
        }
    }

    /// Waits for the broker to close the connection; returns the packets that arrived
    /// before the close (a v5 DISCONNECT, for instance), or why it did not close.
    pub fn wait_closed(&mut self, within: Duration) -> Result<Vec<Incoming>, String> {
        let deadline = Instant::now() + within;
        let mut seen: Vec<Incoming> = self.pending.drain(..).collect();
        loop {
            match self.read_packet(deadline) {
                Ok(p) => seen.push(p),
                Err(RecvError::Closed) => return Ok(seen),
                Err(RecvError::Timeout) => {
                    return Err(format!(
                        "connection still open after {within:?}; received {seen:?}"
                    ))
                }
                Err(e) => return Err(format!("waiting for close: {e:?}; received {seen:?}")),
            }
        }
    }

    /// Asserts that the broker closes the connection within `within`; returns the
    /// packets that arrived before the close.
    pub fn expect_closed(&mut self, within: Duration) -> Vec<Incoming> {
        self.wait_closed(within).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Asserts the close and returns the reason of the DISCONNECT that preceded it, if any.
    pub fn expect_closed_with_reason(&mut self, within: Duration) -> Option<u8> {
        self.expect_closed(within).iter().find_map(|p| match p {
            Incoming::Disconnect(reason) => Some(*reason),
            _ => None,
        })
    }

    /// PINGREQ → PINGRESP. Because the broker answers in order on one connection, every
    /// packet it wrote before PINGRESP is now in `pending`: a cheap barrier.
    pub fn ping(&mut self) {
        self.send(&wire::pingreq());
        self.wait_for("PINGRESP", |p| matches!(p, Incoming::PingResp));
    }

    /// [`RawClient::ping`], then everything that arrived before the PINGRESP and has not
    /// been consumed yet. An empty result means nothing else was outstanding.
    pub fn ping_then_unread(&mut self) -> Vec<Incoming> {
        self.ping();
        self.pending.drain(..).collect()
    }

    /// SUBSCRIBE and wait for SUBACK; returns its codes.
    pub fn subscribe(&mut self, filters: &[(&str, u8)]) -> Vec<u8> {
        let id = self.next_packet_id();
        self.send(&wire::subscribe(self.version, id, filters));
        match self.wait_for("SUBACK", |p| matches!(p, Incoming::SubAck(i, _) if *i == id)) {
            Incoming::SubAck(_, codes) => codes,
            _ => unreachable!("wait_for returned a non-matching packet"),
        }
    }

    /// SUBSCRIBE to one filter and assert the grant equals the request.
    pub fn subscribe_one(&mut self, filter: &str, qos: u8) {
        let codes = self.subscribe(&[(filter, qos)]);
        assert_eq!(codes, vec![qos], "SUBACK for {filter} at QoS {qos}");
    }

    /// UNSUBSCRIBE and wait for UNSUBACK; returns its v5 reason codes (empty for 3.1.1).
    pub fn unsubscribe(&mut self, filters: &[&str]) -> Vec<u8> {
        let id = self.next_packet_id();
        self.send(&wire::unsubscribe(self.version, id, filters));
        match self.wait_for("UNSUBACK", |p| matches!(p, Incoming::UnsubAck(i, _) if *i == id)) {
            Incoming::UnsubAck(_, codes) => codes,
            _ => unreachable!("wait_for returned a non-matching packet"),
        }
    }

    /// Sends a PUBLISH without waiting for any ack; returns the packet id used (0 for QoS 0).
    pub fn publish_no_wait(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> u16 {
        let id = if qos > 0 { self.next_packet_id() } else { 0 };
        self.send(&wire::publish(self.version, topic, payload, qos, retain, false, id));
        id
    }

    /// Publishes and completes the QoS handshake (PUBACK, or PUBREC/PUBREL/PUBCOMP).
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) {
        let id = self.publish_no_wait(topic, payload, qos, retain);
        match qos {
            0 => {}
            1 => {
                let ack =
                    self.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(i, _) if *i == id));
                assert!(matches!(ack, Incoming::PubAck(_, r) if r < 0x80), "PUBACK: {ack:?}");
            }
            _ => {
                self.wait_for("PUBREC", |p| matches!(p, Incoming::PubRec(i, _) if *i == id));
                self.send(&wire::ack(wire::kind::PUBREL, id));
                self.wait_for("PUBCOMP", |p| matches!(p, Incoming::PubComp(i, _) if *i == id));
            }
        }
    }

    /// Acknowledges a received PUBLISH as its QoS requires (QoS 2: PUBREC, wait for
    /// PUBREL, PUBCOMP).
    pub fn ack(&mut self, publish: &Publish) {
        let Some(id) = publish.packet_id else { return };
        if publish.qos == 1 {
            self.send(&wire::ack(wire::kind::PUBACK, id));
        } else {
            self.send(&wire::ack(wire::kind::PUBREC, id));
            self.wait_for("PUBREL", |p| matches!(p, Incoming::PubRel(i, _) if *i == id));
            self.send(&wire::ack(wire::kind::PUBCOMP, id));
        }
    }

    /// Receives a PUBLISH, acknowledges it, and returns it.
    pub fn expect_publish_acked(&mut self) -> Publish {
        let p = self.expect_publish();
        self.ack(&p);
        p
    }

    /// Sends DISCONNECT (normal) and waits until the broker closes the connection,
    /// which it does once it has handled the DISCONNECT: when this returns the session
    /// is offline (or gone). Without the wait, what the test does next (a publish to
    /// the offline session, say) could reach the broker first and find the session
    /// still online. Packets that arrive meanwhile are dropped.
    pub fn disconnect(mut self) {
        let bytes = wire::disconnect(self.version, 0);
        // The broker may close first; that is fine for a client that is leaving.
        if self.try_send(&bytes).is_ok() {
            let deadline = Instant::now() + DEADLINE;
            loop {
                match self.read_packet(deadline) {
                    Ok(_) => {}
                    Err(RecvError::Timeout) => {
                        panic!("the broker kept the connection open {DEADLINE:?} after DISCONNECT")
                    }
                    Err(_) => break,
                }
            }
        }
        self.stream.shutdown();
    }

    /// Ends the connection without DISCONNECT, as a crashed client's operating system
    /// would (a FIN, then nothing), and waits until the broker closes its end, which it
    /// does once it has handled the loss: when this returns, the broker has taken the
    /// connection as lost (will scheduled, a persistent session offline). Without the
    /// wait, what the test does next (reconnecting the same client id, publishing to
    /// the session) could reach the broker before the FIN is read and find the old
    /// connection still there: a takeover instead of a resumption, a message sent to a
    /// dead socket instead of queued. Packets that arrive meanwhile are dropped.
    pub fn drop_connection(mut self) {
        self.stream.shutdown_write();
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.read_packet(deadline) {
                Ok(_) => {}
                Err(RecvError::Timeout) => {
                    panic!("the broker kept the connection open {DEADLINE:?} after its FIN")
                }
                Err(_) => break,
            }
        }
        self.stream.shutdown();
    }
}

/// Payload bytes as text for assertion messages.
pub fn text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}
