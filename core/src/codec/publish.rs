//! PUBLISH: the one packet on the hot path.
//!
//! Decoding takes ownership of the frame and hands out its topic and payload as
//! `Bytes` slices of it; with no properties (always so in 3.x) nothing is allocated.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::header::{put_fixed_header, FixedHeader};
use super::properties::{block_len, PropertySet, PublishProperties};
use super::wire::{field_len, packet_len, put_field, Reader};
use super::{DecodeError, EncodeError, Packet};
use crate::protocol::{PacketId, ProtocolVersion, QoS};
use crate::topic::{TopicError, TopicName};

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

const DUP: u8 = 0b1000;
const RETAIN: u8 = 0b0001;

/// Maps a topic validation failure to the decode error (and so the reason code) for it.
pub(crate) fn topic_error(e: TopicError) -> DecodeError {
    match e {
        TopicError::Empty => DecodeError::EmptyTopicName,
        TopicError::InvalidUtf8 => DecodeError::InvalidUtf8,
        TopicError::NullCharacter => DecodeError::NullCharacter,
        _ => DecodeError::TopicNameInvalid,
    }
}

impl Publish {
    /// Decodes a PUBLISH frame, straight into the shape [`super::decode`] returns: a
    /// `Packet` is over 200 bytes, and building it in place saves a copy per wrapper.
    pub(crate) fn decode(
        mut frame: Bytes,
        header: &FixedHeader,
        version: ProtocolVersion,
    ) -> Result<Option<Packet>, DecodeError> {
        let flags = header.flags;
        // [MQTT-3.3.1-4] QoS 3 is malformed.
        let qos = QoS::from_bits((flags >> 1) & 0b11).ok_or(DecodeError::InvalidQoS)?;
        let mut dup = flags & DUP != 0;
        if dup && qos == QoS::AtMostOnce {
            // [MQTT-3.3.1-2] DUP must be 0 at QoS 0. MQTT 5 treats any protocol
            // violation as fatal; for 3.x we are a tolerant receiver and clear it.
            if version.is_v5() {
                return Err(DecodeError::DupOnQoS0);
            }
            dup = false;
        }
        let mut r = Reader::shared(&frame, header.header_len);
        let topic = r.binary()?;
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce | QoS::ExactlyOnce => Some(r.packet_id()?),
        };
        let properties = if version.is_v5() {
            PublishProperties::decode(&mut r)?
        } else {
            PublishProperties::default()
        };
        let payload_start = r.position();
        let topic = if topic.is_empty() {
            // [MQTT-3.3.2-1] 3.x needs a topic; [MQTT 5 3.3.4] a zero-length topic
            // without a Topic Alias is a Protocol Error.
            if properties.topic_alias.is_none() {
                return Err(DecodeError::EmptyTopicName);
            }
            TopicName::empty()
        } else {
            TopicName::parse(topic).map_err(topic_error)?
        };
        // The frame becomes the payload: no second reference-count round trip.
        frame.advance(payload_start);
        Ok(Some(Packet::Publish(Self {
            dup,
            qos,
            retain: flags & RETAIN != 0,
            topic,
            packet_id,
            properties,
            payload: frame,
        })))
    }

    /// Remaining length and property-block content length for `version`.
    fn lengths(&self, version: ProtocolVersion) -> Result<(usize, usize), EncodeError> {
        let mut len = field_len(self.topic.len())?;
        if self.qos != QoS::AtMostOnce {
            len += 2;
        }
        let mut props = 0;
        if version.is_v5() {
            props = self.properties.content_len()?;
            len += block_len(props);
        }
        let len = len.checked_add(self.payload.len()).ok_or(EncodeError::PacketTooLarge)?;
        Ok((len, props))
    }

    /// Size of this PUBLISH on the wire for `version`, fixed header included; compare it
    /// with the receiver's Maximum Packet Size before sending.
    ///
    /// `usize::MAX` when the packet cannot be encoded at all (see [`Publish::encode`]),
    /// so that it fails every size check.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        self.lengths(version).and_then(|(len, _)| packet_len(len)).unwrap_or(usize::MAX)
    }

    /// Encodes this PUBLISH. For 3.x the properties are dropped; DUP is written only for
    /// QoS 1 and 2.
    ///
    /// # Errors
    /// [`EncodeError`] for an over-long field or packet, an empty topic without a
    /// Topic Alias (so always in 3.x), or a packet id that does not match the QoS.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.topic.is_empty() && (!version.is_v5() || self.properties.topic_alias.is_none()) {
            return Err(EncodeError::EmptyTopicName);
        }
        if (self.qos == QoS::AtMostOnce) != self.packet_id.is_none() {
            return Err(EncodeError::PacketIdMismatch);
        }
        let (len, props) = self.lengths(version)?;
        out.reserve(packet_len(len)?);
        let mut first = 0x30 | (self.qos.bits() << 1);
        if self.dup && self.qos != QoS::AtMostOnce {
            first |= DUP;
        }
        if self.retain {
            first |= RETAIN;
        }
        put_fixed_header(out, first, len);
        put_field(out, self.topic.as_bytes());
        if let Some(id) = self.packet_id {
            out.put_u16(id.get());
        }
        if version.is_v5() {
            self.properties.put(out, props);
        }
        out.put_slice(&self.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::{assert_wire, decode_bytes, pid, topic};
    use crate::codec::{DecodeError, Packet};

    const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn publish(
        qos: QoS,
        packet_id: Option<u16>,
        topic_name: &str,
        payload: &'static [u8],
    ) -> Publish {
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic(topic_name),
            packet_id: packet_id.map(pid),
            properties: PublishProperties::default(),
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn qos0_publish_in_3_1_1() {
        #[rustfmt::skip]
        let bytes = [
            0x30,                   // PUBLISH, DUP 0, QoS 0, RETAIN 0
            0x0A,                   // remaining length 10
            0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
            b'h', b'e', b'l', b'l', b'o', // payload, no packet id at QoS 0
        ];
        assert_wire(&bytes, V311, Packet::Publish(publish(QoS::AtMostOnce, None, "a/b", b"hello")));
        assert_wire(
            &bytes,
            ProtocolVersion::V3_1,
            Packet::Publish(publish(QoS::AtMostOnce, None, "a/b", b"hello")),
        );
    }

    #[test]
    fn qos1_retained_duplicate_in_3_1_1() {
        #[rustfmt::skip]
        let bytes = [
            0x3B,                   // PUBLISH, DUP 1, QoS 1 (0b01 << 1), RETAIN 1
            0x06,                   // remaining length 6
            0x00, 0x01, b't',       // topic "t"
            0x00, 0x0A,             // packet id 10
            b'x',                   // payload
        ];
        let mut p = publish(QoS::AtLeastOnce, Some(10), "t", b"x");
        p.dup = true;
        p.retain = true;
        assert_wire(&bytes, V311, Packet::Publish(p));
    }

    #[test]
    fn qos0_publish_in_5_has_an_empty_property_block() {
        #[rustfmt::skip]
        let bytes = [
            0x30, 0x05,             // PUBLISH QoS 0, remaining length 5
            0x00, 0x01, b't',       // topic "t"
            0x00,                   // property length 0
            b'x',                   // payload
        ];
        assert_wire(&bytes, V5, Packet::Publish(publish(QoS::AtMostOnce, None, "t", b"x")));
    }

    #[test]
    fn qos2_publish_with_properties_in_5() {
        #[rustfmt::skip]
        let bytes = [
            0x34, 0x19,             // PUBLISH QoS 2, remaining length 25
            0x00, 0x01, b't',       // topic "t"
            0x00, 0x07,             // packet id 7
            0x11,                   // property length 17
            0x01, 0x01,             //   Payload Format Indicator: UTF-8
            0x23, 0x00, 0x05,       //   Topic Alias 5
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // User Property ("k", "v")
            0x0B, 0x81, 0x01,       //   Subscription Identifier 129 (two-byte varint)
            0x0B, 0x02,             //   Subscription Identifier 2 (may repeat)
            b'p', b'q',             // payload
        ];
        let mut p = publish(QoS::ExactlyOnce, Some(7), "t", b"pq");
        p.properties.payload_format_indicator = Some(true);
        p.properties.topic_alias = Some(5);
        p.properties.user_properties = vec![("k".into(), "v".into())];
        p.properties.subscription_identifiers = vec![129, 2];
        assert_wire(&bytes, V5, Packet::Publish(p));
    }

    #[test]
    fn alias_only_publish_has_an_empty_topic_in_5() {
        #[rustfmt::skip]
        let bytes = [
            0x30, 0x07,             // PUBLISH QoS 0, remaining length 7
            0x00, 0x00,             // topic "" (named by alias)
            0x03, 0x23, 0x00, 0x09, // properties: Topic Alias 9
            b'x',                   // payload
        ];
        let mut p = publish(QoS::AtMostOnce, None, "t", b"x");
        p.topic = TopicName::empty();
        p.properties.topic_alias = Some(9);
        assert_wire(&bytes, V5, Packet::Publish(p.clone()));
        // 3.x cannot name a topic by alias.
        let mut out = BytesMut::new();
        assert_eq!(p.encode(V311, &mut out), Err(EncodeError::EmptyTopicName));
        assert!(out.is_empty());
    }

    #[test]
    fn dup_on_qos0_is_cleared_in_3_x() {
        let got = decode_bytes(&[0x38, 0x04, 0x00, 0x01, b't', b'x'], V311);
        assert_eq!(got, Ok(Packet::Publish(publish(QoS::AtMostOnce, None, "t", b"x"))));
        assert_eq!(
            decode_bytes(&[0x38, 0x04, 0x00, 0x01, b't', 0x00], V5),
            Err(DecodeError::DupOnQoS0)
        );
    }

    #[test]
    fn properties_are_dropped_for_3_x_subscribers() {
        let mut p = publish(QoS::AtMostOnce, None, "t", b"x");
        p.properties.user_properties = vec![("k".into(), "v".into())];
        let mut out = BytesMut::new();
        p.encode(V311, &mut out).unwrap();
        assert_eq!(&out[..], &[0x30, 0x04, 0x00, 0x01, b't', b'x']);
    }

    #[test]
    fn encoded_len_matches_the_bytes_written() {
        let mut p = publish(QoS::AtLeastOnce, Some(1), "sensors/temp", &[7; 300]);
        p.properties.content_type = Some("text/plain".into());
        for v in [V311, V5] {
            let mut out = BytesMut::new();
            p.encode(v, &mut out).unwrap();
            assert_eq!(p.encoded_len(v), out.len());
        }
    }

    #[test]
    fn packet_id_must_match_qos() {
        let mut out = BytesMut::new();
        let p = publish(QoS::AtLeastOnce, None, "t", b"");
        assert_eq!(p.encode(V311, &mut out), Err(EncodeError::PacketIdMismatch));
        let p = publish(QoS::AtMostOnce, Some(1), "t", b"");
        assert_eq!(p.encode(V311, &mut out), Err(EncodeError::PacketIdMismatch));
    }
}
