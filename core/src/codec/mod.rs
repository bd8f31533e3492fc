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

use bytes::BytesMut;

use crate::protocol::ProtocolVersion;
use header::FixedHeader;

pub use ack::{AckKind, PubAck, PubAckLike, PubComp, PubRec, PubRel};
pub use connect::{ConnAck, Connect, LastWill};
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
    let frame = buf.split_to(frame_len).freeze();
    decode_frame(frame, &header, version).map(Some)
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

fn decode_frame(
    frame: bytes::Bytes,
    header: &FixedHeader,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    if header.packet_type == 3 {
        return Publish::decode(frame, header, version).map(Packet::Publish);
    }
    let mut r = wire::Reader::new(&frame, header.header_len);
    let r = &mut r;
    let packet = match header.packet_type {
        1 => Packet::Connect(Box::new(Connect::decode(r)?)),
        2 => Packet::ConnAck(ConnAck::decode(r, version)?),
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
        15 => Packet::Auth(Auth::decode(r)?),
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
