//! PUBLISH.

use bytes::Bytes;

use super::properties::PublishProperties;
use crate::protocol::{PacketId, QoS};
use crate::topic::TopicName;

/// PUBLISH: an application message, in either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag: this may be a re-delivery. Always false for QoS 0 [MQTT-3.3.1-2].
    pub dup: bool,
    /// QoS of this delivery.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic Name. Empty only in an MQTT 5 PUBLISH that carries a Topic Alias.
    pub topic: TopicName,
    /// Packet identifier: `Some` exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// MQTT 5 properties; empty for 3.x.
    pub properties: PublishProperties,
    /// Application payload: a zero-copy slice of the read buffer when decoded.
    pub payload: Bytes,
}
