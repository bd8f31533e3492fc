//! Why a packet could not be decoded or encoded, and which reason code says so.
//!
//! Each [`DecodeError`] variant names one broken rule and knows the MQTT 5 reason code
//! the receiver should close the connection with ([`DecodeError::reason_code`]); for
//! 3.x connections the code only picks the log line, since 3.x has no DISCONNECT reason.

use crate::protocol::ReasonCode;

/// A byte sequence that can never become a valid packet.
///
/// "Not enough bytes yet" is not an error: [`super::decode`] returns `Ok(None)` for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The remaining length ran past four bytes [MQTT-1.5.5 / 2.2.3].
    #[error("remaining length is longer than four bytes")]
    RemainingLengthTooLong,
    /// A variable byte integer inside the packet ran past four bytes.
    #[error("variable byte integer is longer than four bytes")]
    VarintTooLong,
    /// A variable byte integer used more bytes than its value needs [MQTT-1.5.5-1].
    #[error("variable byte integer is not minimally encoded")]
    NonMinimalVarint,
    /// The whole packet would exceed the receiver's maximum packet size.
    #[error("packet exceeds the maximum packet size")]
    PacketTooLarge,
    /// Packet type 0, or 15 before MQTT 5: both are reserved.
    #[error("unknown packet type {0}")]
    UnknownPacketType(u8),
    /// The fixed header's flag bits are not the ones the packet type requires [MQTT-2.2.2-2].
    #[error("reserved fixed-header flags are set")]
    ReservedFlags,
    /// A PUBLISH with QoS 3 [MQTT-3.3.1-4], or a Will QoS of 3 [MQTT-3.1.2-12].
    #[error("QoS 3 is not a QoS")]
    InvalidQoS,
    /// DUP set on an MQTT 5 QoS 0 PUBLISH [MQTT-3.3.1-2].
    #[error("DUP flag set on a QoS 0 publish")]
    DupOnQoS0,
    /// A string is not well-formed UTF-8 [MQTT-1.5.4-1].
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A string contains U+0000 [MQTT-1.5.4-2].
    #[error("string contains the null character")]
    NullCharacter,
    /// A topic name contains `+` or `#` [MQTT-3.3.2-2].
    #[error("topic name contains a wildcard")]
    TopicNameInvalid,
    /// A zero-length topic name where no Topic Alias stands in for it [MQTT-3.3.2-1].
    #[error("topic name is empty")]
    EmptyTopicName,
    /// A packet identifier of zero [MQTT-2.2.1-3].
    #[error("packet identifier is zero")]
    ZeroPacketId,
    /// A SUBSCRIBE with no topic filter [MQTT-3.8.3-2].
    #[error("SUBSCRIBE has no topic filters")]
    EmptySubscribe,
    /// An UNSUBSCRIBE with no topic filter [MQTT-3.10.3-2].
    #[error("UNSUBSCRIBE has no topic filters")]
    EmptyUnsubscribe,
    /// Subscription options with reserved bits set [MQTT-3.8.3-5].
    #[error("reserved bits set in subscription options")]
    SubscriptionOptionsReserved,
    /// A subscription's Maximum QoS of 3 (MQTT 5: Protocol Error; 3.1.1: malformed).
    #[error("subscription QoS 3")]
    InvalidSubscriptionQoS,
    /// Retain Handling of 3.
    #[error("retain handling 3 is reserved")]
    InvalidRetainHandling,
    /// A property that may appear once appears again.
    #[error("property 0x{0:02X} appears more than once")]
    DuplicateProperty(u8),
    /// A known property in a packet that does not allow it.
    #[error("property 0x{0:02X} is not allowed in this packet")]
    UnexpectedProperty(u8),
    /// A property identifier the spec does not define.
    #[error("unknown property 0x{0:02X}")]
    UnknownProperty(u8),
    /// A property holds a value the spec forbids (Receive Maximum 0, Topic Alias 0 ...).
    #[error("property 0x{0:02X} has an invalid value")]
    InvalidPropertyValue(u8),
    /// The Property Length runs past the end of the packet.
    #[error("property length overruns the packet")]
    PropertyLengthOverrun,
    /// CONNECT names a protocol level this codec does not speak.
    #[error("unsupported protocol version")]
    UnsupportedProtocolVersion,
    /// CONNECT's protocol name is neither `MQTT` nor `MQIsdp` (or does not match the level).
    #[error("invalid protocol name")]
    InvalidProtocolName,
    /// CONNECT's reserved flag (bit 0) is set [MQTT-3.1.2-3].
    #[error("reserved CONNECT flag is set")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain set without the Will Flag [MQTT-3.1.2-11, -13].
    #[error("will QoS or retain set without a will")]
    WillFlagsWithoutWill,
    /// 3.1.1 password flag without the user name flag [MQTT-3.1.2-22].
    #[error("password without user name")]
    PasswordWithoutUsername,
    /// CONNACK acknowledge flags with reserved bits set [MQTT-3.2.2-1].
    #[error("reserved CONNACK flags are set")]
    ConnAckReservedFlags,
    /// A reason or return code that is not defined for this packet.
    #[error("reason code not valid for this packet")]
    InvalidReasonCode,
    /// The body ends before the fields it must hold.
    #[error("packet body is shorter than its fields")]
    Truncated,
    /// Bytes left over after the last field of the packet.
    #[error("bytes left over after the packet's fields")]
    TrailingBytes,
}

impl DecodeError {
    /// The reason code to close the connection with (DISCONNECT, or CONNACK while
    /// connecting).
    ///
    /// Malformed Packet (0x81) unless the MQTT 5 spec names another: Protocol Error
    /// (0x82) for duplicated properties, forbidden property values, empty (UN)SUBSCRIBE,
    /// retain handling 3 and the 3.1.1 password rule; Unsupported Protocol Version (0x84);
    /// Topic Name invalid (0x90); Topic Alias invalid (0x94); Packet too large (0x95).
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Self::PacketTooLarge => ReasonCode::PacketTooLarge,
            Self::TopicNameInvalid => ReasonCode::TopicNameInvalid,
            Self::UnsupportedProtocolVersion => ReasonCode::UnsupportedProtocolVersion,
            // Topic Alias 0 [MQTT-3.3.2-8]: "Topic Alias invalid".
            Self::InvalidPropertyValue(0x23) => ReasonCode::TopicAliasInvalid,
            Self::DuplicateProperty(_)
            | Self::InvalidPropertyValue(_)
            | Self::EmptyTopicName
            | Self::EmptySubscribe
            | Self::EmptyUnsubscribe
            | Self::InvalidSubscriptionQoS
            | Self::InvalidRetainHandling
            | Self::PasswordWithoutUsername => ReasonCode::ProtocolError,
            Self::RemainingLengthTooLong
            | Self::VarintTooLong
            | Self::NonMinimalVarint
            | Self::UnknownPacketType(_)
            | Self::ReservedFlags
            | Self::InvalidQoS
            | Self::DupOnQoS0
            | Self::InvalidUtf8
            | Self::NullCharacter
            | Self::ZeroPacketId
            | Self::SubscriptionOptionsReserved
            | Self::UnexpectedProperty(_)
            | Self::UnknownProperty(_)
            | Self::PropertyLengthOverrun
            | Self::InvalidProtocolName
            | Self::ConnectReservedFlag
            | Self::WillFlagsWithoutWill
            | Self::ConnAckReservedFlags
            | Self::InvalidReasonCode
            | Self::Truncated
            | Self::TrailingBytes => ReasonCode::MalformedPacket,
        }
    }
}

/// A packet value that cannot be put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string or binary field is longer than its two-byte length prefix allows.
    #[error("string or binary field longer than 65535 bytes")]
    FieldTooLong,
    /// The remaining length would exceed 268,435,455 bytes.
    #[error("packet longer than 268435455 bytes")]
    PacketTooLarge,
    /// A packet that exists only in MQTT 5 (AUTH) asked for in 3.x.
    #[error("packet type exists only in MQTT 5")]
    V5Only,
    /// A PUBLISH with an empty topic and no Topic Alias (always the case in 3.x).
    #[error("empty topic name without a topic alias")]
    EmptyTopicName,
    /// QoS 1/2 PUBLISH without a packet id, or QoS 0 with one.
    #[error("packet id presence does not match the QoS")]
    PacketIdMismatch,
    /// A SUBSCRIBE, UNSUBSCRIBE or SUBACK with an empty list.
    #[error("empty list of filters or reason codes")]
    EmptyList,
    /// A variable byte integer value above 268,435,455 (Subscription Identifier).
    #[error("variable byte integer value out of range")]
    VarintOutOfRange,
}
