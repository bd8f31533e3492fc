//! A slow subscriber's session on its own (`shoal_core::session`, no broker around it),
//! shared by the criterion bench `session` and the instruction-count case
//! `session/queue/qos1/100`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use shoal_core::codec::{Connect, ConnectProperties, PubAckLike};
use shoal_core::session::{ConnectAnswer, Delivery, Message, PublishCache, SentCounts, Session};
use shoal_core::{Limits, Packet, PacketId, ProtocolVersion, QoS};

/// A connected MQTT 3.1.1 session whose in-flight window is full of QoS 1 copies of
/// one message, with more of them queued behind it.
pub struct SlowSubscriber {
    session: Session,
    message: Arc<Message>,
    now: Instant,
    /// Packet ids in flight, oldest first, read back from the encoded PUBLISHes.
    inflight: VecDeque<PacketId>,
    out: BytesMut,
    cache: PublishCache,
    sent: SentCounts,
    /// The encoded size of one PUBLISH of the message, and where its packet id sits.
    frame: usize,
    id_at: usize,
}

impl SlowSubscriber {
    /// `window` messages in flight and `waiting` queued behind them. `None` if the
    /// set-up does not come out so (a refused delivery, a packet of another size in the
    /// output): a bench must not measure something else.
    pub fn new(message: Arc<Message>, window: u16, waiting: usize, now: Instant) -> Option<Self> {
        let limits = Limits { max_inflight: window, ..Limits::default() };
        let mut session = Session::new(Arc::from("slow"), limits);
        let connect = Connect {
            protocol: ProtocolVersion::V3_1_1,
            clean_start: false,
            keep_alive: 0,
            client_id: "slow".to_owned(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        };
        let answer = ConnectAnswer { max_keep_alive_secs: u16::MAX, ..ConnectAnswer::default() };
        session.handle_connect(now, &connect, answer);
        if !matches!(session.poll_transmit(), Some(Packet::ConnAck(_))) {
            return None;
        }
        // Fixed header, topic length and topic, packet id, payload.
        let id_at = 2 + 2 + message.topic.as_str().len();
        let remaining = id_at - 2 + 2 + message.payload.len();
        if remaining >= 128 {
            return None; // a two-byte remaining length: `id_at` would be off by one
        }
        let mut slow = Self {
            session,
            message,
            now,
            inflight: VecDeque::new(),
            out: BytesMut::with_capacity(1 << 16),
            cache: PublishCache::default(),
            sent: SentCounts::default(),
            frame: remaining + 2,
            id_at,
        };
        for _ in 0..usize::from(window) + waiting {
            slow.session.handle_delivery(now, slow.delivery()).ok()?;
        }
        slow.encode();
        (slow.inflight.len() == usize::from(window) && slow.queued() == waiting).then_some(slow)
    }

    /// One message through the queue: a delivery is queued, a PUBACK frees the oldest
    /// slot in the window, and the oldest queued message moves into it and is encoded.
    /// Returns whether the delivery was queued.
    pub fn step(&mut self) -> bool {
        let queued = self.session.handle_delivery(self.now, self.delivery()).is_ok();
        if let Some(id) = self.inflight.pop_front() {
            self.session.handle_packet(self.now, Packet::PubAck(PubAckLike::new(id)));
        }
        self.out.clear();
        self.encode();
        queued
    }

    /// Messages waiting behind the window.
    pub fn queued(&self) -> usize {
        self.session.queued()
    }

    fn delivery(&self) -> Delivery {
        Delivery {
            message: self.message.clone(),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: Vec::new(),
            share: None,
        }
    }

    /// Encodes what the session has to send and reads the packet ids back.
    fn encode(&mut self) {
        let version = ProtocolVersion::V3_1_1;
        self.session.encode_transmit(version, &mut self.out, &mut self.cache, &mut self.sent);
        let mut at = self.id_at;
        while let Some(&[hi, lo]) = self.out.get(at..at + 2) {
            self.inflight.extend(PacketId::new(u16::from_be_bytes([hi, lo])));
            at += self.frame;
        }
    }
}
