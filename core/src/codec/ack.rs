//! PUBACK, PUBREC, PUBREL and PUBCOMP: they share one shape.

use bytes::BytesMut;

use super::properties::AckProperties;
use super::wire::Reader;
use super::{DecodeError, EncodeError};
use crate::protocol::ProtocolVersion;
use crate::protocol::{PacketId, ReasonCode};

/// PUBACK, PUBREC, PUBREL or PUBCOMP (which one is the `Packet` variant).
///
/// For 3.x the reason code is always `Success` and the properties empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubAckLike {
    /// Packet identifier being acknowledged.
    pub packet_id: PacketId,
    /// Reason code (v5); `Success` is omitted on the wire when there are no properties.
    pub reason_code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

impl PubAckLike {
    /// A plain successful acknowledgement of `packet_id`.
    pub fn new(packet_id: PacketId) -> Self {
        Self { packet_id, reason_code: ReasonCode::Success, properties: AckProperties::default() }
    }
}

/// PUBACK (QoS 1 acknowledgement).
pub type PubAck = PubAckLike;
/// PUBREC (QoS 2, step 1).
pub type PubRec = PubAckLike;
/// PUBREL (QoS 2, step 2).
pub type PubRel = PubAckLike;
/// PUBCOMP (QoS 2, step 3).
pub type PubComp = PubAckLike;

/// Which of the four acknowledgements a [`PubAckLike`] is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckKind {
    /// PUBACK (4).
    PubAck,
    /// PUBREC (5).
    PubRec,
    /// PUBREL (6).
    PubRel,
    /// PUBCOMP (7).
    PubComp,
}

impl PubAckLike {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let _ = (r, version);
        Err(DecodeError::Truncated)
    }

    /// Encodes this acknowledgement as `kind`.
    ///
    /// # Errors
    /// [`EncodeError::FieldTooLong`] for an over-long reason string or user property.
    pub fn encode(
        &self,
        kind: AckKind,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let _ = (kind, version, out);
        Err(EncodeError::V5Only)
    }
}
