//! CONNECT and CONNACK.

use bytes::{Bytes, BytesMut};

use super::properties::{ConnAckProperties, ConnectProperties, WillProperties};
use super::wire::Reader;
use super::{DecodeError, EncodeError};
use crate::protocol::{ProtocolVersion, QoS, ReasonCode};
use crate::topic::TopicName;

/// CONNECT: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version, from the protocol name and level.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client identifier; may be empty (the server may assign one).
    pub client_id: String,
    /// The Will, if the will flag is set.
    pub will: Option<LastWill>,
    /// User Name, if its flag is set.
    pub username: Option<String>,
    /// Password, if its flag is set (binary data).
    pub password: Option<Bytes>,
    /// MQTT 5 properties; empty for 3.x.
    pub properties: ConnectProperties,
}

/// The Will Message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will Topic.
    pub topic: TopicName,
    /// Will Payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// MQTT 5 Will Properties; empty for 3.x.
    pub properties: WillProperties,
}

/// CONNACK: the server's answer to CONNECT.
///
/// The reason code is kept in MQTT 5 terms for every version; the codec maps it to
/// and from the 3.1.1 return codes (`crate::protocol::ConnectReturnCode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present flag.
    pub session_present: bool,
    /// Connect reason code.
    pub reason_code: ReasonCode,
    /// MQTT 5 properties; empty for 3.x.
    pub properties: ConnAckProperties,
}

impl Connect {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let _ = r;
        Err(DecodeError::Truncated)
    }

    /// Encodes this CONNECT in its own `protocol` version.
    ///
    /// # Errors
    /// [`EncodeError::FieldTooLong`] for an over-long string or binary field.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let _ = out;
        Err(EncodeError::V5Only)
    }
}

impl ConnAck {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let _ = (r, version);
        Err(DecodeError::Truncated)
    }

    /// Encodes this CONNACK; for 3.x the reason code is mapped to a return code.
    ///
    /// # Errors
    /// [`EncodeError::FieldTooLong`] for an over-long property.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let _ = (version, out);
        Err(EncodeError::V5Only)
    }
}
