//! What a session has to send, kept small until it is encoded.
//!
//! The queue holds [`Transmit`] entries of about 64 bytes rather than `Packet`s (over
//! 200): a delivery stays a shared `Arc<Message>` plus its per-subscriber fields, and
//! its PUBLISH is built only when the broker encodes it. [`PublishCache`] lets a
//! broker encode a QoS 0 PUBLISH once per message and wire form and copy the same bytes
//! to every subscriber that receives that form.

use std::sync::Arc;

use bytes::BytesMut;

use super::message::{Delivery, Message};
use crate::codec::{AckKind, Packet, PubAckLike, Publish};
use crate::protocol::{PacketId, ProtocolVersion, QoS};

/// One packet waiting to be written.
#[derive(Debug)]
pub(crate) enum Transmit {
    /// A delivery, encoded as a PUBLISH for `version`.
    Publish {
        delivery: Delivery,
        version: ProtocolVersion,
        /// Set for QoS 1/2.
        packet_id: Option<PacketId>,
        /// Redelivery [MQTT-3.3.1-1].
        dup: bool,
        /// Message Expiry Interval left when it was queued (v5).
        expiry_secs: Option<u32>,
        /// Topic Alias to send (v5), and whether the topic name goes with it (a new
        /// or re-assigned alias) or is left empty (an alias the client already knows).
        alias: Option<(u16, bool)>,
    },
    /// PUBACK, PUBREC, PUBREL or PUBCOMP.
    Ack(AckKind, PubAckLike),
    /// PINGRESP.
    PingResp,
    /// Anything else (CONNACK, SUBACK, UNSUBACK, DISCONNECT): rare, so boxed.
    Other(Box<Packet>),
}

impl Transmit {
    /// The QoS of a PUBLISH, `None` for any other packet.
    pub(crate) fn publish_qos(&self) -> Option<QoS> {
        match self {
            Self::Publish { delivery, .. } => Some(delivery.qos),
            _ => None,
        }
    }

    /// The PUBLISH of a delivery.
    pub(crate) fn publish(
        delivery: Delivery,
        version: ProtocolVersion,
        now: std::time::Instant,
    ) -> Self {
        let expiry_secs = delivery.message.expiry_left(now);
        Self::Publish { delivery, version, packet_id: None, dup: false, expiry_secs, alias: None }
    }

    /// The topic of a PUBLISH entry.
    pub(crate) fn topic(&self) -> Option<&crate::topic::TopicName> {
        match self {
            Self::Publish { delivery, .. } => Some(&delivery.message.topic),
            _ => None,
        }
    }

    /// Sets the topic alias of a PUBLISH entry.
    pub(crate) fn set_alias(&mut self, value: (u16, bool)) {
        if let Self::Publish { alias, .. } = self {
            *alias = Some(value);
        }
    }

    /// The packet this entry stands for.
    pub(crate) fn into_packet(self) -> Packet {
        match self {
            Self::Publish { delivery, version, packet_id, dup, expiry_secs, alias } => {
                let mut p = build_publish(&delivery, version, packet_id, dup, expiry_secs);
                apply_alias(&mut p, alias);
                Packet::Publish(p)
            }
            Self::Ack(AckKind::PubAck, a) => Packet::PubAck(a),
            Self::Ack(AckKind::PubRec, a) => Packet::PubRec(a),
            Self::Ack(AckKind::PubRel, a) => Packet::PubRel(a),
            Self::Ack(AckKind::PubComp, a) => Packet::PubComp(a),
            Self::PingResp => Packet::PingResp,
            Self::Other(p) => *p,
        }
    }

    /// Appends this entry's encoding to `out`.
    pub(crate) fn encode(
        self,
        version: ProtocolVersion,
        out: &mut BytesMut,
        cache: &mut PublishCache,
    ) -> Result<(), crate::codec::EncodeError> {
        match self {
            Self::Publish { delivery, version: _, packet_id, dup, expiry_secs, alias } => {
                let shareable = delivery.qos == QoS::AtMostOnce
                    && delivery.subscription_ids.is_empty()
                    && expiry_secs.is_none()
                    && alias.is_none();
                if !shareable {
                    let mut p = build_publish(&delivery, version, packet_id, dup, expiry_secs);
                    apply_alias(&mut p, alias);
                    return p.encode(version, out);
                }
                let form = (version, delivery.retain);
                if let Some((m, f)) = &cache.key {
                    if *f == form && Arc::ptr_eq(m, &delivery.message) {
                        out.extend_from_slice(&cache.frame);
                        return Ok(());
                    }
                }
                let start = out.len();
                build_publish(&delivery, version, None, false, None).encode(version, out)?;
                cache.frame.clear();
                if let Some(frame) = out.get(start..) {
                    cache.frame.extend_from_slice(frame);
                    // Holding the Arc keeps its address from being reused by another
                    // message while the cache is keyed by it.
                    cache.key = Some((delivery.message, form));
                }
                Ok(())
            }
            Self::Ack(kind, a) => a.encode(kind, version, out),
            Self::PingResp => Packet::PingResp.encode(version, out),
            Self::Other(p) => p.encode(version, out),
        }
    }
}

/// Puts a topic alias on a PUBLISH; without the topic name when the client knows it.
fn apply_alias(p: &mut Publish, alias: Option<(u16, bool)>) {
    if let Some((a, with_topic)) = alias {
        p.properties.topic_alias = Some(a);
        if !with_topic {
            p.topic = crate::topic::TopicName::empty();
        }
    }
}

fn build_publish(
    d: &Delivery,
    version: ProtocolVersion,
    packet_id: Option<PacketId>,
    dup: bool,
    expiry_secs: Option<u32>,
) -> Publish {
    let mut p = d.message.publish_for(version, d.qos, d.retain, &d.subscription_ids, expiry_secs);
    p.packet_id = packet_id;
    p.dup = dup;
    p
}

/// Packets a broker thread has encoded for its clients, counted by
/// [`super::Session::encode_transmit`]: plain integers the thread owns and reads when
/// it publishes its metrics. They only grow, wrapping at `u64::MAX`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SentCounts {
    /// Packets of any type.
    pub packets: u64,
    /// PUBLISH packets, indexed by QoS (0, 1, 2).
    pub publish: [u64; 3],
}

/// The last QoS 0 PUBLISH a broker thread encoded, by message and wire form (protocol
/// version, RETAIN flag), so that fan-out to many subscribers encodes it once.
///
/// Only QoS 0 deliveries without subscription identifiers or a remaining expiry are
/// shared: everything else differs per subscriber. Keep one per thread and pass it to
/// [`super::Session::encode_transmit`].
#[derive(Debug, Default)]
pub struct PublishCache {
    key: Option<(Arc<Message>, (ProtocolVersion, bool))>,
    frame: BytesMut,
}

impl PublishCache {
    /// Forgets the cached frame (and releases its message).
    pub fn clear(&mut self) {
        self.key = None;
    }
}
