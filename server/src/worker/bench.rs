//! Hooks for `crate::bench_support`: drive this worker's real delivery and routing code
//! without its event loop. Nothing here runs in the broker.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use shoal_core::codec::{Connect, ConnectProperties, Packet, PubAckLike, Subscribe};
use shoal_core::codec::{SubscribeFilter, SubscriptionOptions};
use shoal_core::session::Message;
use shoal_core::{PacketId, ProtocolVersion, QoS};

use super::conn::Conn;
use super::Worker;

impl Worker {
    /// Attaches `count` MQTT 3.1.1 sessions, each on its own accepted loopback socket
    /// (the client end is closed at once; nothing is ever written), subscribed to
    /// `filter` at `qos` through the ordinary CONNECT and SUBSCRIBE handling.
    pub(crate) fn bench_add_subscribers(
        &mut self,
        listener: &TcpListener,
        count: usize,
        filter: &str,
        qos: QoS,
        now: Instant,
    ) -> io::Result<()> {
        let addr = listener.local_addr()?;
        for i in 0..count {
            let client = std::net::TcpStream::connect(addr)?;
            let (server, peer) = listener.accept()?;
            drop(client);
            server.set_nonblocking(true)?;
            let conn = Conn::new(mio::net::TcpStream::from_std(server), peer, None, 0, now);
            let idx = self.register(conn).ok_or_else(|| io::Error::other("cannot register"))?;
            let connect = Connect {
                protocol: ProtocolVersion::V3_1_1,
                clean_start: true,
                keep_alive: 0,
                client_id: format!("bench-{}-{i}", self.id),
                will: None,
                username: None,
                password: None,
                properties: ConnectProperties::default(),
            };
            self.accept_connect(idx, Box::new(connect), now);
            let subscribe = Subscribe {
                packet_id: PacketId::new(1).ok_or_else(|| io::Error::other("packet id"))?,
                filters: vec![SubscribeFilter {
                    filter: filter.to_owned(),
                    options: SubscriptionOptions { qos, ..SubscriptionOptions::default() },
                }],
                properties: Default::default(),
            };
            self.handle_packet(idx, Packet::Subscribe(subscribe), now);
        }
        self.bench_take_output();
        Ok(())
    }

    /// Matches `msg` against this worker's subscriptions and encodes it into every
    /// matching connection's write buffer (the path of a publish read by this worker,
    /// or received from another one).
    pub(crate) fn bench_deliver(&mut self, msg: &Arc<Message>, now: Instant) {
        self.deliver_local(msg, now);
    }

    /// Feeds a PUBACK for `id` from every attached connection.
    pub(crate) fn bench_ack_all(&mut self, id: PacketId, now: Instant) {
        let attached: Vec<usize> =
            self.conns.iter().filter(|(_, c)| c.session().is_some()).map(|(i, _)| i).collect();
        for idx in attached {
            self.handle_packet(idx, Packet::PubAck(PubAckLike::new(id)), now);
        }
    }

    /// Empties every write buffer as if written; returns how many bytes there were.
    pub(crate) fn bench_take_output(&mut self) -> usize {
        let mut bytes = 0;
        for idx in std::mem::take(&mut self.dirty) {
            if let Some(c) = self.conns.get_mut(idx) {
                c.dirty = false;
                bytes += c.wbuf.len();
                c.wbuf.clear();
            }
        }
        bytes
    }

    /// Routes `msg` as a publish read by this worker: local delivery and this
    /// iteration's batches for the other workers.
    pub(crate) fn bench_route(&mut self, msg: &Arc<Message>, now: Instant) {
        self.route(msg.clone(), now);
    }

    /// Sends this iteration's batches to the other workers (one wake-up each).
    pub(crate) fn bench_flush_outbox(&mut self) {
        self.flush_outbox();
    }

    /// Handles what other workers sent, as one loop iteration does.
    pub(crate) fn bench_drain_channel(&mut self, now: Instant) {
        self.drain_channel(now);
    }
}
