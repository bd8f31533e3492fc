//! PUBACK, PUBREC, PUBREL and PUBCOMP: they share one shape.
//!
//! In MQTT 5 the reason code and properties may be left off: a remaining length of 2
//! means Success with no properties, 3 means a reason code with no properties. The
//! encoder uses the shortest form that says the same thing.

use bytes::{BufMut, BytesMut};

use super::header::put_fixed_header;
use super::properties::{block_len, AckProperties, PropertySet};
use super::wire::{packet_len, reason_code_in, Reader};
use super::{DecodeError, EncodeError};
use crate::protocol::{PacketId, ProtocolVersion, ReasonCode};

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

impl AckKind {
    /// The fixed header's first byte: type and the flags it requires (PUBREL: 0b0010).
    const fn first_byte(self) -> u8 {
        match self {
            Self::PubAck => 0x40,
            Self::PubRec => 0x50,
            Self::PubRel => 0x62,
            Self::PubComp => 0x70,
        }
    }

    /// The reason codes MQTT 5 allows in this packet.
    pub(crate) const fn allowed_reason_codes(self) -> &'static [u8] {
        match self {
            Self::PubAck | Self::PubRec => &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99],
            Self::PubRel | Self::PubComp => &[0x00, 0x92],
        }
    }
}

impl PubAckLike {
    /// A plain successful acknowledgement of `packet_id`.
    pub fn new(packet_id: PacketId) -> Self {
        Self { packet_id, reason_code: ReasonCode::Success, properties: AckProperties::default() }
    }

    pub(crate) fn decode(
        r: &mut Reader<'_>,
        kind: AckKind,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let mut ack = Self::new(r.packet_id()?);
        if version.is_v5() && r.remaining() > 0 {
            ack.reason_code = reason_code_in(r.u8()?, kind.allowed_reason_codes())?;
            // A remaining length below 4 has no Property Length [MQTT 5 3.4.2.2.1].
            if r.remaining() > 0 {
                ack.properties = AckProperties::decode(r)?;
            }
        }
        r.finish()?;
        Ok(ack)
    }

    /// Encodes this acknowledgement as `kind`. For 3.x only the packet id is written.
    ///
    /// # Errors
    /// [`EncodeError::FieldTooLong`] for an over-long reason string or user property.
    pub fn encode(
        &self,
        kind: AckKind,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let v5 = version.is_v5();
        let props = if v5 && !self.properties.is_empty() {
            Some(self.properties.content_len()?)
        } else {
            None
        };
        let len = match props {
            _ if !v5 => 2,
            None if self.reason_code == ReasonCode::Success => 2,
            None => 3,
            Some(p) => 3 + block_len(p),
        };
        out.reserve(packet_len(len)?);
        put_fixed_header(out, kind.first_byte(), len);
        out.put_u16(self.packet_id.get());
        if len > 2 {
            out.put_u8(self.reason_code.value());
        }
        if let Some(p) = props {
            self.properties.put(out, p);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::{assert_wire, decode_bytes, pid};
    use crate::codec::Packet;

    const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    #[test]
    fn acks_in_3_1_1_are_a_packet_id() {
        let ack = PubAckLike::new(pid(0x0102));
        // type | flags, remaining length 2, packet id 0x0102
        assert_wire(&[0x40, 0x02, 0x01, 0x02], V311, Packet::PubAck(ack.clone()));
        assert_wire(&[0x50, 0x02, 0x01, 0x02], V311, Packet::PubRec(ack.clone()));
        // [MQTT-3.6.1-1] PUBREL's flags are 0b0010.
        assert_wire(&[0x62, 0x02, 0x01, 0x02], V311, Packet::PubRel(ack.clone()));
        assert_wire(&[0x70, 0x02, 0x01, 0x02], ProtocolVersion::V3_1, Packet::PubComp(ack));
    }

    #[test]
    fn success_without_properties_uses_the_short_form_in_5() {
        assert_wire(&[0x40, 0x02, 0x00, 0x07], V5, Packet::PubAck(PubAckLike::new(pid(7))));
        // A long form saying the same thing decodes the same.
        #[rustfmt::skip]
        let long = [
            0x40, 0x04,             // PUBACK, remaining length 4
            0x00, 0x07,             // packet id 7
            0x00,                   // reason Success
            0x00,                   // property length 0
        ];
        assert_eq!(decode_bytes(&long, V5), Ok(Packet::PubAck(PubAckLike::new(pid(7)))));
    }

    #[test]
    fn reason_code_without_properties_in_5() {
        #[rustfmt::skip]
        let bytes = [
            0x50, 0x03,             // PUBREC, remaining length 3
            0x00, 0x07,             // packet id 7
            0x10,                   // reason No matching subscribers; no property length
        ];
        let mut ack = PubAckLike::new(pid(7));
        ack.reason_code = ReasonCode::NoMatchingSubscribers;
        assert_wire(&bytes, V5, Packet::PubRec(ack));
    }

    #[test]
    fn reason_string_on_a_failed_puback_in_5() {
        #[rustfmt::skip]
        let bytes = [
            0x40, 0x08,             // PUBACK, remaining length 8
            0x00, 0x07,             // packet id 7
            0x87,                   // reason Not authorized
            0x04,                   // property length 4
            0x1F, 0x00, 0x01, b'x', //   Reason String "x"
        ];
        let mut ack = PubAckLike::new(pid(7));
        ack.reason_code = ReasonCode::NotAuthorized;
        ack.properties.reason_string = Some("x".into());
        assert_wire(&bytes, V5, Packet::PubAck(ack.clone()));
        // For 3.x, reason and properties are not on the wire.
        let mut out = BytesMut::new();
        ack.encode(AckKind::PubAck, V311, &mut out).unwrap();
        assert_eq!(&out[..], &[0x40, 0x02, 0x00, 0x07]);
    }

    #[test]
    fn pubcomp_reports_packet_identifier_not_found() {
        let mut ack = PubAckLike::new(pid(9));
        ack.reason_code = ReasonCode::PacketIdentifierNotFound;
        assert_wire(&[0x70, 0x03, 0x00, 0x09, 0x92], V5, Packet::PubComp(ack));
    }
}
