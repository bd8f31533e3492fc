//! The routed application message ([`Message`], one shared allocation per publish) and
//! one [`Delivery`] of it to a session. Matching is the server's; the QoS state of a
//! delivery is `super::inflight`'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{LastWill, Publish, PublishProperties};
use crate::protocol::{ProtocolVersion, QoS};
use crate::topic::TopicName;

/// An application message as routed: one allocation shared by every delivery of one
/// publish.
///
/// Kept small because a million of them may wait in offline queues: the MQTT 5
/// properties, absent from most messages, are boxed (`None` costs 8 bytes, not 150).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic it was published to.
    pub topic: TopicName,
    /// Payload. Straight from the decoder it is a view into the publisher's read chunk
    /// (so fan-out copies nothing); a message that will wait is
    /// [`detached`](Message::detached) from that chunk first.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// MQTT 5 properties passed through (topic alias and subscription ids removed);
    /// `None` when there are none (build it with [`Message::pack_properties`]).
    pub properties: Option<Box<PublishProperties>>,
    /// When the Message Expiry Interval runs out, if it was set.
    pub expires_at: Option<Instant>,
    /// Client id of the publisher, for No Local; `None` for server-made messages.
    pub publisher: Option<Arc<str>>,
}

impl Message {
    /// Builds the routed message from an incoming PUBLISH received at `now`.
    pub fn from_publish(publish: Publish, publisher: Option<Arc<str>>, now: Instant) -> Self {
        let mut properties = publish.properties;
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        let expires_at = properties
            .message_expiry_interval
            .and_then(|s| now.checked_add(Duration::from_secs(u64::from(s))));
        Self {
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties: Self::pack_properties(properties),
            expires_at,
            publisher,
        }
    }

    /// Builds the message a will turns into.
    pub fn from_will(will: LastWill, publisher: Option<Arc<str>>, now: Instant) -> Self {
        let p = will.properties;
        let properties = PublishProperties {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
            content_type: p.content_type,
            ..PublishProperties::default()
        };
        let expires_at = properties
            .message_expiry_interval
            .and_then(|s| now.checked_add(Duration::from_secs(u64::from(s))));
        Self {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: Self::pack_properties(properties),
            expires_at,
            publisher,
        }
    }

    /// Properties as [`Message::properties`] holds them: boxed, or `None` when empty.
    pub fn pack_properties(properties: PublishProperties) -> Option<Box<PublishProperties>> {
        (!properties.is_empty()).then(|| Box::new(properties))
    }

    /// This message with its topic and payload copied into one allocation of their
    /// own.
    ///
    /// A decoded PUBLISH's topic and payload are views into the publisher's read
    /// chunk (64 KiB, holding every frame read with it), and a view keeps the whole
    /// chunk alive. That is free while a message passes through, but one that waits
    /// (an offline or slow session's queue, the retained store) would pin a chunk
    /// for each ~100 bytes it needs. The copy costs one allocation per message, not
    /// per queue: the caller shares the detached `Arc` among all sessions that keep it.
    pub fn detached(&self) -> Self {
        let (topic, payload) = self.topic.detached_with(&self.payload);
        Self {
            topic,
            payload,
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.as_deref().map(|p| {
                let mut p = p.clone();
                p.response_topic = p.response_topic.map(|t| t.detached());
                p.correlation_data = p.correlation_data.map(|c| Bytes::copy_from_slice(&c));
                Box::new(p)
            }),
            expires_at: self.expires_at,
            publisher: self.publisher.clone(),
        }
    }

    /// What this message weighs against a session's `max_queued_bytes`: its topic,
    /// payload and MQTT 5 properties (as encoded, without their length prefix). Fixed
    /// for the life of the message (a [`detached`](Message::detached) copy weighs the
    /// same), so a queue can add it on entry and take it off on exit. Not counted: the
    /// fixed header, the packet id and the allocation overheads, a few dozen bytes.
    pub fn queued_bytes(&self) -> usize {
        let properties = self.properties.as_deref().map_or(0, |p| p.content_bytes());
        self.topic.len().saturating_add(self.payload.len()).saturating_add(properties)
    }

    /// True once the Message Expiry Interval has passed.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }

    /// The Message Expiry Interval to forward at `now`: the remaining lifetime, not
    /// the original one [MQTT-3.3.2-6], at least 1; `None` when it was not set.
    pub fn expiry_left(&self, now: Instant) -> Option<u32> {
        let t = self.expires_at?;
        let left = t.saturating_duration_since(now).as_secs();
        Some(u32::try_from(left).unwrap_or(u32::MAX).max(1))
    }

    /// The PUBLISH for one delivery of this message at `now`.
    pub fn to_publish(
        &self,
        version: ProtocolVersion,
        qos: QoS,
        retain: bool,
        subscription_ids: &[u32],
        now: Instant,
    ) -> Publish {
        self.publish_for(version, qos, retain, subscription_ids, self.expiry_left(now))
    }

    /// The PUBLISH for one delivery, with the expiry interval already worked out
    /// ([`Message::expiry_left`]).
    pub fn publish_for(
        &self,
        version: ProtocolVersion,
        qos: QoS,
        retain: bool,
        subscription_ids: &[u32],
        expiry_secs: Option<u32>,
    ) -> Publish {
        let properties = if version.is_v5() {
            let mut p = self.properties.as_deref().cloned().unwrap_or_default();
            p.subscription_identifiers.extend_from_slice(subscription_ids);
            if expiry_secs.is_some() {
                p.message_expiry_interval = expiry_secs;
            }
            p
        } else {
            PublishProperties::default()
        };
        Publish {
            dup: false,
            qos,
            retain,
            topic: self.topic.clone(),
            packet_id: None,
            properties,
            payload: self.payload.clone(),
        }
    }
}

/// One delivery of a message to one session: the message plus what the subscription
/// decided about it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// Delivered QoS: min(published QoS, granted QoS).
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (v5); usually empty.
    pub subscription_ids: Vec<u32>,
    /// The shared-subscription group that chose this session for the message, as an
    /// opaque tag set by the broker; `None` for ordinary subscriptions. A QoS 1/2
    /// delivery with a tag that is not acknowledged when the connection ends is handed
    /// back in [`super::Event::Orphaned`] for another member of the group.
    pub share: Option<u64>,
}

/// Why a session dropped a message: one it was handed
/// ([`Session::handle_delivery`](super::Session::handle_delivery)) or one it held in its
/// queue ([`QueueDrops`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No room: the session queue is at `max_queued_messages`, or this message would
    /// take it past `max_queued_bytes` (QoS 1/2), or a QoS 0 message found the
    /// connection's write buffer full or the session offline.
    QueueFull,
    /// Its Message Expiry Interval ran out before it was sent.
    Expired,
    /// Its PUBLISH is larger than the client's Maximum Packet Size [MQTT-3.1.2-25].
    TooLarge,
}

/// Messages a session dropped from its queue on its own, when their turn came (after
/// [`Session::handle_delivery`](super::Session::handle_delivery) had taken them), and
/// not yet reported: see [`Session::take_queue_drops`](super::Session::take_queue_drops).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDrops {
    /// Expired while they waited.
    pub expired: u32,
    /// Larger than the Maximum Packet Size of the connection they were to go out on.
    pub too_large: u32,
}

impl QueueDrops {
    /// Whether nothing was dropped.
    pub fn is_empty(&self) -> bool {
        self.expired == 0 && self.too_large == 0
    }
}
