//! DISCONNECT and AUTH (PINGREQ and PINGRESP have no body).

use bytes::BytesMut;

use super::properties::{AuthProperties, DisconnectProperties};
use super::wire::Reader;
use super::{DecodeError, EncodeError};
use crate::protocol::{ProtocolVersion, ReasonCode};

/// DISCONNECT, in either direction (server to client only in v5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Reason code (v5); `Success` means Normal disconnection. Always `Success` for 3.x.
    pub reason_code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: DisconnectProperties,
}

/// AUTH (v5 only): enhanced authentication exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Properties (the method and data live here).
    pub properties: AuthProperties,
}

impl Disconnect {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let _ = (r, version);
        Err(DecodeError::Truncated)
    }

    /// Encodes this DISCONNECT (two bytes when the reason is Success with no properties).
    ///
    /// # Errors
    /// [`EncodeError::FieldTooLong`] for an over-long property.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let _ = (version, out);
        Err(EncodeError::V5Only)
    }
}

impl Auth {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let _ = r;
        Err(DecodeError::Truncated)
    }

    /// Encodes this AUTH.
    ///
    /// # Errors
    /// [`EncodeError::V5Only`] for 3.x; [`EncodeError::FieldTooLong`] for an over-long property.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let _ = (version, out);
        Err(EncodeError::V5Only)
    }
}
