//! PUBLISH.

use bytes::{Bytes, BytesMut};

use super::header::FixedHeader;
use super::properties::PublishProperties;
use super::{DecodeError, EncodeError};
use crate::protocol::{PacketId, ProtocolVersion, QoS};
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

impl Publish {
    pub(crate) fn decode(
        frame: Bytes,
        header: &FixedHeader,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let _ = (frame, header, version);
        Err(DecodeError::Truncated)
    }

    /// Size of this PUBLISH on the wire for `version`, fixed header included; compare it
    /// with the receiver's Maximum Packet Size before sending.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let _ = version;
        0
    }

    /// Encodes this PUBLISH.
    ///
    /// # Errors
    /// [`EncodeError`] for an over-long field or packet, an empty topic without a
    /// Topic Alias, or a packet id that does not match the QoS.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let _ = (version, out);
        Err(EncodeError::V5Only)
    }
}
