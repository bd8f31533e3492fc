//! Wire codec for MQTT 3.1, 3.1.1 and 5.0.
//!
//! Decoding is incremental: [`decode`] looks at the fixed header first, refuses a
//! remaining length above the caller's maximum before any payload is buffered, and
//! returns `Ok(None)` ("need more") until a whole frame is in the buffer. It then splits
//! the frame off the buffer, so PUBLISH payloads are zero-copy `Bytes` slices of it.
//!
//! Encoding writes straight into the caller's `BytesMut`: lengths are computed first,
//! the buffer is reserved once, and nothing else is allocated on the way. Validation of
//! what is allowed *when* (a CONNACK sent by a client, a second CONNECT) is the
//! session's job (`crate::session`), not the codec's; topic filters are parsed by
//! `crate::topic`.
//!
//! Layout: `header` (fixed header, frame boundary), `wire` (primitive types),
//! `properties` (MQTT 5 properties), one file per packet family, `error` (what can go
//! wrong and its reason code).

mod ack;
mod connect;
mod control;
mod error;
mod header;
mod properties;
mod publish;
mod subscribe;
mod wire;

use bytes::{Buf, Bytes, BytesMut};

use crate::protocol::ProtocolVersion;
use header::FixedHeader;

pub use ack::{AckKind, PubAck, PubAckLike, PubComp, PubRec, PubRel};
pub(crate) use connect::CONNACK_REASON_CODES;
pub use connect::{ConnAck, Connect, LastWill};
pub(crate) use control::DISCONNECT_REASON_CODES;
pub use control::{Auth, Disconnect};
pub use error::{DecodeError, EncodeError};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperty, WillProperties,
};
pub use publish::Publish;
pub use subscribe::{
    RetainHandling, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe,
};

/// Every MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (1).
    Connect(Box<Connect>),
    /// CONNACK (2).
    ConnAck(ConnAck),
    /// PUBLISH (3).
    Publish(Publish),
    /// PUBACK (4).
    PubAck(PubAck),
    /// PUBREC (5).
    PubRec(PubRec),
    /// PUBREL (6).
    PubRel(PubRel),
    /// PUBCOMP (7).
    PubComp(PubComp),
    /// SUBSCRIBE (8).
    Subscribe(Subscribe),
    /// SUBACK (9).
    SubAck(SubAck),
    /// UNSUBSCRIBE (10).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (11).
    UnsubAck(UnsubAck),
    /// PINGREQ (12).
    PingReq,
    /// PINGRESP (13).
    PingResp,
    /// DISCONNECT (14).
    Disconnect(Disconnect),
    /// AUTH (15, v5 only).
    Auth(Auth),
}

/// Decodes one packet from the front of `buf`.
///
/// Returns `Ok(None)` while `buf` holds less than a whole frame, leaving it untouched.
/// Otherwise splits exactly one frame off the front of `buf`; a decoded PUBLISH's topic
/// and payload share that frame's memory.
///
/// CONNECT is decoded whatever `version` says (it carries its own protocol level); for
/// every other packet `version` decides whether MQTT 5 properties and reason codes are
/// on the wire.
///
/// # Errors
/// [`DecodeError::PacketTooLarge`] as soon as the fixed header shows the whole packet
/// would exceed `max_packet_bytes`, before its body is buffered; a reserved packet type
/// or bad fixed-header flags likewise from the first byte. Otherwise the
/// [`DecodeError`] naming the first rule the frame breaks; the frame has then been
/// consumed, and the connection should be closed with [`DecodeError::reason_code`].
///
/// # Example
/// ```
/// use bytes::BytesMut;
/// use shoal_core::codec::{decode, Packet};
/// use shoal_core::ProtocolVersion;
///
/// // A PINGREQ, then the first byte of a PINGRESP.
/// let mut buf = BytesMut::from(&[0xC0, 0x00, 0xD0][..]);
/// let v = ProtocolVersion::V3_1_1;
/// assert_eq!(decode(&mut buf, v, 1024), Ok(Some(Packet::PingReq)));
/// assert_eq!(decode(&mut buf, v, 1024), Ok(None));
/// assert_eq!(&buf[..], &[0xD0]);
/// ```
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_bytes: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = FixedHeader::parse(buf)? else {
        return Ok(None);
    };
    let frame_len = header.frame_len();
    if frame_len > max_packet_bytes {
        return Err(DecodeError::PacketTooLarge);
    }
    check_flags(&header, version)?;
    if buf.len() < frame_len {
        return Ok(None);
    }
    // Only packets that can carry binary data (PUBLISH, CONNECT, CONNACK, AUTH) take the
    // frame out of the buffer as shared `Bytes`; the rest are read in place, which saves
    // two reference-count updates on every PUBACK and PINGREQ.
    if header.packet_type == 3 {
        return Publish::decode(buf.split_to(frame_len).freeze(), &header, version);
    }
    if matches!(header.packet_type, 1 | 2 | 15) {
        let frame = buf.split_to(frame_len).freeze();
        return decode_frame(frame, &header, version).map(Some);
    }
    let frame = buf.get(..frame_len).ok_or(DecodeError::Truncated)?;
    let packet =
        decode_borrowed(wire::Reader::borrowed(frame, header.header_len), &header, version);
    buf.advance(frame_len);
    packet.map(Some)
}

/// [MQTT-2.2.2-1, -2] Fixed-header flags are reserved except in PUBLISH: 0b0010 for
/// PUBREL, SUBSCRIBE and UNSUBSCRIBE, 0 for the rest.
fn check_flags(header: &FixedHeader, version: ProtocolVersion) -> Result<(), DecodeError> {
    let expected = match header.packet_type {
        // [MQTT-3.3.1-4] QoS 3 is malformed; the rest is checked with the body.
        3 if header.flags & 0b0110 == 0b0110 => return Err(DecodeError::InvalidQoS),
        3 => return Ok(()),
        6 | 8 | 10 => 0b0010,
        1 | 2 | 4 | 5 | 7 | 9 | 11..=14 => 0,
        15 if version.is_v5() => 0,
        other => return Err(DecodeError::UnknownPacketType(other)),
    };
    if header.flags != expected {
        return Err(DecodeError::ReservedFlags);
    }
    Ok(())
}

/// Decodes a CONNECT, CONNACK or AUTH frame that has been split off the read buffer.
fn decode_frame(
    frame: Bytes,
    header: &FixedHeader,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let mut r = wire::Reader::shared(&frame, header.header_len);
    let r = &mut r;
    let packet = match header.packet_type {
        1 => Packet::Connect(Box::new(Connect::decode(r)?)),
        2 => Packet::ConnAck(ConnAck::decode(r, version)?),
        15 => Packet::Auth(Auth::decode(r)?),
        other => return Err(DecodeError::UnknownPacketType(other)),
    };
    Ok(packet)
}

/// Decodes a frame in place: packets with no binary fields.
fn decode_borrowed(
    mut r: wire::Reader<'_>,
    header: &FixedHeader,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let r = &mut r;
    let packet = match header.packet_type {
        4 => Packet::PubAck(PubAckLike::decode(r, AckKind::PubAck, version)?),
        5 => Packet::PubRec(PubAckLike::decode(r, AckKind::PubRec, version)?),
        6 => Packet::PubRel(PubAckLike::decode(r, AckKind::PubRel, version)?),
        7 => Packet::PubComp(PubAckLike::decode(r, AckKind::PubComp, version)?),
        8 => Packet::Subscribe(Subscribe::decode(r, version)?),
        9 => Packet::SubAck(SubAck::decode(r, version)?),
        10 => Packet::Unsubscribe(Unsubscribe::decode(r, version)?),
        11 => Packet::UnsubAck(UnsubAck::decode(r, version)?),
        12 | 13 => {
            r.finish()?;
            if header.packet_type == 12 {
                Packet::PingReq
            } else {
                Packet::PingResp
            }
        }
        14 => Packet::Disconnect(Disconnect::decode(r, version)?),
        other => return Err(DecodeError::UnknownPacketType(other)),
    };
    Ok(packet)
}

/// Encodes `packet` for a connection speaking `version`, appending it to `out`.
///
/// A CONNECT is written in its own `protocol` version. Properties and non-success
/// reason codes a 3.x packet cannot carry are dropped (3.x SUBACK and CONNACK codes are
/// mapped to their nearest return code), so a v5 message can be forwarded to a 3.x
/// subscriber as is.
///
/// # Errors
/// [`EncodeError`] when the packet cannot be expressed: a field or the packet is too
/// long, AUTH in 3.x, an empty topic without an alias. Nothing is written then.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    packet.encode(version, out)
}

impl Packet {
    /// Encodes this packet; see [`encode`].
    ///
    /// # Errors
    /// As [`encode`].
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Self::Connect(p) => p.encode(out),
            Self::ConnAck(p) => p.encode(version, out),
            Self::Publish(p) => p.encode(version, out),
            Self::PubAck(p) => p.encode(AckKind::PubAck, version, out),
            Self::PubRec(p) => p.encode(AckKind::PubRec, version, out),
            Self::PubRel(p) => p.encode(AckKind::PubRel, version, out),
            Self::PubComp(p) => p.encode(AckKind::PubComp, version, out),
            Self::Subscribe(p) => p.encode(version, out),
            Self::SubAck(p) => p.encode(version, out),
            Self::Unsubscribe(p) => p.encode(version, out),
            Self::UnsubAck(p) => p.encode(version, out),
            Self::PingReq => {
                out.extend_from_slice(&[0xC0, 0x00]);
                Ok(())
            }
            Self::PingResp => {
                out.extend_from_slice(&[0xD0, 0x00]);
                Ok(())
            }
            Self::Disconnect(p) => p.encode(version, out),
            Self::Auth(p) => p.encode(version, out),
        }
    }

    /// The spec's name of the packet type, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connect(_) => "CONNECT",
            Self::ConnAck(_) => "CONNACK",
            Self::Publish(_) => "PUBLISH",
            Self::PubAck(_) => "PUBACK",
            Self::PubRec(_) => "PUBREC",
            Self::PubRel(_) => "PUBREL",
            Self::PubComp(_) => "PUBCOMP",
            Self::Subscribe(_) => "SUBSCRIBE",
            Self::SubAck(_) => "SUBACK",
            Self::Unsubscribe(_) => "UNSUBSCRIBE",
            Self::UnsubAck(_) => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect(_) => "DISCONNECT",
            Self::Auth(_) => "AUTH",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::protocol::{PacketId, ReasonCode};
    use crate::topic::TopicName;

    /// Decodes `bytes` as one whole frame under `version`.
    pub(crate) fn decode_bytes(
        bytes: &[u8],
        version: ProtocolVersion,
    ) -> Result<Packet, DecodeError> {
        let mut buf = BytesMut::from(bytes);
        let packet = decode(&mut buf, version, usize::MAX)?;
        assert!(buf.is_empty(), "frame not fully consumed: {} bytes left", buf.len());
        Ok(packet.expect("a whole frame was given"))
    }

    /// Encodes `packet` under `version` into a fresh buffer.
    pub(crate) fn encode_bytes(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(packet, version, &mut out).expect("encodable");
        out.to_vec()
    }

    /// `bytes` decodes to `packet`, and `packet` encodes to `bytes`.
    pub(crate) fn assert_wire(bytes: &[u8], version: ProtocolVersion, packet: Packet) {
        assert_eq!(decode_bytes(bytes, version), Ok(packet.clone()), "decoding {bytes:02X?}");
        assert_eq!(encode_bytes(&packet, version), bytes, "encoding {packet:?}");
    }

    pub(crate) fn pid(id: u16) -> PacketId {
        PacketId::new(id).expect("non-zero")
    }

    pub(crate) fn topic(s: &str) -> TopicName {
        TopicName::try_from_str(s).expect("valid topic")
    }

    const V31: ProtocolVersion = ProtocolVersion::V3_1;
    const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    #[test]
    fn ping_packets_are_two_bytes() {
        for v in [V31, V311, V5] {
            assert_wire(&[0xC0, 0x00], v, Packet::PingReq);
            assert_wire(&[0xD0, 0x00], v, Packet::PingResp);
        }
    }

    #[test]
    fn partial_frame_needs_more_and_leaves_the_buffer_alone() {
        let frame = [0x30, 0x05, 0x00, 0x01, b't', b'h', b'i'];
        for cut in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(decode(&mut buf, V311, 1024), Ok(None), "cut at {cut}");
            assert_eq!(&buf[..], &frame[..cut]);
        }
    }

    #[test]
    fn refuses_oversized_packet_from_the_fixed_header_alone() {
        // PUBLISH announcing 16,383 bytes of body; only the header has arrived.
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0x7F][..]);
        let err = decode(&mut buf, V311, 1024).unwrap_err();
        assert_eq!(err, DecodeError::PacketTooLarge);
        assert_eq!(err.reason_code(), ReasonCode::PacketTooLarge);
        // The limit counts the fixed header: 2 + 3 bytes fits in exactly 5.
        let mut buf = BytesMut::from(&[0xE0, 0x03][..]);
        assert_eq!(decode(&mut buf, V5, 4), Err(DecodeError::PacketTooLarge));
        let mut buf = BytesMut::from(&[0xC0, 0x00][..]);
        assert_eq!(decode(&mut buf, V5, 2), Ok(Some(Packet::PingReq)));
    }

    #[test]
    fn decodes_back_to_back_frames_one_at_a_time() {
        let mut buf = BytesMut::from(&[0xC0, 0x00, 0x40, 0x02, 0x00, 0x01, 0xD0][..]);
        assert_eq!(decode(&mut buf, V311, 64), Ok(Some(Packet::PingReq)));
        assert_eq!(decode(&mut buf, V311, 64), Ok(Some(Packet::PubAck(PubAckLike::new(pid(1))))));
        assert_eq!(decode(&mut buf, V311, 64), Ok(None));
        assert_eq!(&buf[..], &[0xD0]);
    }

    #[test]
    fn publish_payload_and_topic_share_the_read_buffer() {
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&[0x30, 0x07, 0x00, 0x01, b't', b'a', b'b', b'c', b'd']);
        let base = buf.as_ptr() as usize;
        let Ok(Some(Packet::Publish(p))) = decode(&mut buf, V311, 64) else { panic!() };
        assert_eq!(p.topic.as_bytes().as_ptr() as usize, base + 4);
        assert_eq!(p.payload.as_ptr() as usize, base + 5);
        assert_eq!(p.payload, Bytes::from_static(b"abcd"));
    }

    /// One malformed input, the version it is read under, and the error it must give.
    struct Malformed {
        what: &'static str,
        version: ProtocolVersion,
        bytes: &'static [u8],
        error: DecodeError,
        reason: ReasonCode,
    }

    const MALFORMED: ReasonCode = ReasonCode::MalformedPacket;
    const PROTOCOL: ReasonCode = ReasonCode::ProtocolError;

    #[rustfmt::skip]
    fn malformed_table() -> Vec<Malformed> {
        use DecodeError as E;
        let m = |what, version, bytes, error, reason| Malformed { what, version, bytes, error, reason };
        vec![
            m("remaining length of five bytes", V311, &[0x30, 0x80, 0x80, 0x80, 0x80, 0x01], E::RemainingLengthTooLong, MALFORMED),
            m("non-minimal remaining length", V311, &[0xC0, 0x80, 0x00], E::NonMinimalVarint, MALFORMED),
            m("packet type 0", V311, &[0x00, 0x00], E::UnknownPacketType(0), MALFORMED),
            m("AUTH before MQTT 5", V311, &[0xF0, 0x00], E::UnknownPacketType(15), MALFORMED),
            m("PINGREQ with flags", V311, &[0xC1, 0x00], E::ReservedFlags, MALFORMED),
            m("PUBREL without 0b0010", V311, &[0x60, 0x02, 0x00, 0x01], E::ReservedFlags, MALFORMED),
            m("SUBSCRIBE without 0b0010", V5, &[0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a'], E::ReservedFlags, MALFORMED),
            m("UNSUBSCRIBE with 0b0011", V311, &[0xA3, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'], E::ReservedFlags, MALFORMED),
            m("PUBLISH QoS 3", V311, &[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01], E::InvalidQoS, MALFORMED),
            m("DUP on QoS 0 in MQTT 5", V5, &[0x38, 0x04, 0x00, 0x01, b'a', 0x00], E::DupOnQoS0, MALFORMED),
            m("wildcard in topic name", V311, &[0x30, 0x03, 0x00, 0x01, b'#'], E::TopicNameInvalid, ReasonCode::TopicNameInvalid),
            m("plus in topic name", V5, &[0x30, 0x06, 0x00, 0x03, b'a', b'/', b'+', 0x00], E::TopicNameInvalid, ReasonCode::TopicNameInvalid),
            m("empty topic in 3.1.1", V311, &[0x30, 0x02, 0x00, 0x00], E::EmptyTopicName, PROTOCOL),
            m("empty topic without alias in MQTT 5", V5, &[0x30, 0x03, 0x00, 0x00, 0x00], E::EmptyTopicName, PROTOCOL),
            m("invalid UTF-8 in topic", V311, &[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28], E::InvalidUtf8, MALFORMED),
            m("null in topic", V311, &[0x30, 0x04, 0x00, 0x02, b'a', 0x00], E::NullCharacter, MALFORMED),
            m("topic longer than the body", V311, &[0x30, 0x03, 0x00, 0x05, b'a'], E::Truncated, MALFORMED),
            m("zero packet id in PUBLISH", V311, &[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00], E::ZeroPacketId, MALFORMED),
            m("zero packet id in PUBACK", V311, &[0x40, 0x02, 0x00, 0x00], E::ZeroPacketId, MALFORMED),
            m("PUBACK with trailing bytes in 3.1.1", V311, &[0x40, 0x03, 0x00, 0x01, 0x00], E::TrailingBytes, MALFORMED),
            m("PUBACK one byte short", V311, &[0x40, 0x01, 0x00], E::Truncated, MALFORMED),
            m("PINGREQ with a body", V311, &[0xC0, 0x01, 0x00], E::TrailingBytes, MALFORMED),
            m("3.1.1 DISCONNECT with a body", V311, &[0xE0, 0x01, 0x00], E::TrailingBytes, MALFORMED),
            m("empty SUBSCRIBE", V311, &[0x82, 0x02, 0x00, 0x01], E::EmptySubscribe, PROTOCOL),
            m("empty UNSUBSCRIBE", V5, &[0xA2, 0x03, 0x00, 0x01, 0x00], E::EmptyUnsubscribe, PROTOCOL),
            m("3.1.1 subscription options bit 2", V311, &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04], E::SubscriptionOptionsReserved, MALFORMED),
            m("MQTT 5 subscription options bit 6", V5, &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x40], E::SubscriptionOptionsReserved, MALFORMED),
            m("retain handling 3", V5, &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30], E::InvalidRetainHandling, PROTOCOL),
            m("subscription QoS 3", V311, &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03], E::InvalidSubscriptionQoS, PROTOCOL),
            m("property length overruns the packet", V5, &[0x30, 0x05, 0x00, 0x01, b'a', 0x09, 0x01], E::PropertyLengthOverrun, MALFORMED),
            m("property value overruns its block", V5, &[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x02, 0x00], E::Truncated, MALFORMED),
            m("property length of five bytes", V5, &[0x30, 0x08, 0x00, 0x01, b'a', 0x80, 0x80, 0x80, 0x80, 0x01], E::VarintTooLong, MALFORMED),
            m("unknown property", V5, &[0x30, 0x05, 0x00, 0x01, b'a', 0x01, 0x7F], E::UnknownProperty(0x7F), MALFORMED),
            m("property not allowed in PUBLISH", V5, &[0x30, 0x09, 0x00, 0x01, b'a', 0x05, 0x11, 0, 0, 0, 1], E::UnexpectedProperty(0x11), MALFORMED),
            m("Topic Alias twice", V5, &[0x30, 0x0B, 0x00, 0x01, b'a', 0x06, 0x23, 0, 1, 0x23, 0, 2, b'x'], E::DuplicateProperty(0x23), PROTOCOL),
            m("Topic Alias 0", V5, &[0x30, 0x07, 0x00, 0x01, b'a', 0x03, 0x23, 0, 0], E::InvalidPropertyValue(0x23), ReasonCode::TopicAliasInvalid),
            m("Subscription Identifier 0", V5, &[0x82, 0x09, 0x00, 0x01, 0x02, 0x0B, 0x00, 0x00, 0x01, b'a', 0x00], E::InvalidPropertyValue(0x0B), PROTOCOL),
            m("Subscription Identifier twice in SUBSCRIBE", V5, &[0x82, 0x0B, 0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b'a', 0x00], E::DuplicateProperty(0x0B), PROTOCOL),
            m("Payload Format Indicator 2", V5, &[0x30, 0x06, 0x00, 0x01, b'a', 0x02, 0x01, 0x02], E::InvalidPropertyValue(0x01), PROTOCOL),
            m("Receive Maximum 0 in CONNECT", V5, &[0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00, 0x03, 0x21, 0x00, 0x00, 0x00, 0x00], E::InvalidPropertyValue(0x21), PROTOCOL),
            m("Maximum Packet Size 0 in CONNECT", V5, &[0x10, 0x12, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00, 0x05, 0x27, 0, 0, 0, 0, 0x00, 0x00], E::InvalidPropertyValue(0x27), PROTOCOL),
            m("Authentication Data without Method", V5, &[0x10, 0x11, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x00, 0x04, 0x16, 0x00, 0x01, b'x', 0x00, 0x00], E::InvalidPropertyValue(0x16), PROTOCOL),
            m("unsupported protocol level", V311, &[0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x00, 0x00, 0x00], E::UnsupportedProtocolVersion, ReasonCode::UnsupportedProtocolVersion),
            m("unknown protocol name", V311, &[0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'X', 0x04, 0x02, 0x00, 0x00, 0x00, 0x00], E::InvalidProtocolName, MALFORMED),
            m("CONNECT reserved flag", V311, &[0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x03, 0x00, 0x00, 0x00, 0x00], E::ConnectReservedFlag, MALFORMED),
            m("Will QoS without Will Flag", V311, &[0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x0A, 0x00, 0x00, 0x00, 0x00], E::WillFlagsWithoutWill, MALFORMED),
            m("Will Retain without Will Flag", V5, &[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x22, 0x00, 0x00, 0x00, 0x00, 0x00], E::WillFlagsWithoutWill, MALFORMED),
            m("Will QoS 3", V311, &[0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x1E, 0x00, 0x00, 0x00, 0x00], E::InvalidQoS, MALFORMED),
            m("3.1.1 password without user name", V311, &[0x10, 0x0F, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x42, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, b'p'], E::PasswordWithoutUsername, PROTOCOL),
            m("wildcard in Will Topic", V311, &[0x10, 0x11, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, b'#', 0x00, 0x00], E::TopicNameInvalid, ReasonCode::TopicNameInvalid),
            m("CONNECT with trailing bytes", V311, &[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0xFF], E::TrailingBytes, MALFORMED),
            m("null in client id", V311, &[0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00], E::NullCharacter, MALFORMED),
            m("CONNACK reserved flags", V311, &[0x20, 0x02, 0x02, 0x00], E::ConnAckReservedFlags, MALFORMED),
            m("3.1.1 CONNACK return code 6", V311, &[0x20, 0x02, 0x00, 0x06], E::InvalidReasonCode, MALFORMED),
            m("MQTT 5 CONNACK reason 0x04", V5, &[0x20, 0x03, 0x00, 0x04, 0x00], E::InvalidReasonCode, MALFORMED),
            m("3.1.1 SUBACK return code 3", V311, &[0x90, 0x03, 0x00, 0x01, 0x03], E::InvalidReasonCode, MALFORMED),
            m("PUBREL reason 0x10", V5, &[0x62, 0x03, 0x00, 0x01, 0x10], E::InvalidReasonCode, MALFORMED),
            m("DISCONNECT reason 0x01", V5, &[0xE0, 0x01, 0x01], E::InvalidReasonCode, MALFORMED),
            m("AUTH with reason 0x87", V5, &[0xF0, 0x01, 0x87], E::InvalidReasonCode, MALFORMED),
            m("User Property with bad UTF-8", V5, &[0xE0, 0x0A, 0x00, 0x08, 0x26, 0x00, 0x01, 0xFF, 0x00, 0x01, b'v', 0x00], E::InvalidUtf8, MALFORMED),
            m("SUBACK with no reason codes", V5, &[0x90, 0x03, 0x00, 0x01, 0x00], E::Truncated, MALFORMED),
        ]
    }

    #[test]
    fn malformed_inputs_fail_with_their_error_and_reason_code() {
        for case in malformed_table() {
            let mut buf = BytesMut::from(case.bytes);
            let got = decode(&mut buf, case.version, usize::MAX);
            assert_eq!(got, Err(case.error), "{}", case.what);
            assert_eq!(case.error.reason_code(), case.reason, "{}", case.what);
        }
    }

    #[test]
    fn every_error_has_a_failure_reason_code() {
        for case in malformed_table() {
            assert!(case.error.reason_code().is_error(), "{}", case.what);
        }
    }

    #[test]
    fn hot_path_types_keep_their_size() {
        // Growth of these is a decision: a Packet is moved once per decoded frame.
        // PublishProperties is 160+ of Publish's bytes; boxing it would change a
        // shared public type, so it is left inline for now.
        assert_eq!(std::mem::size_of::<Publish>(), 224);
        assert_eq!(std::mem::size_of::<Packet>(), 232);
    }
}
