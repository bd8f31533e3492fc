//! DISCONNECT and AUTH (PINGREQ and PINGRESP have no body and live in `super`).
//!
//! Both may drop their tail in MQTT 5: a remaining length of 0 means Success (Normal
//! disconnection) with no properties, 1 means a reason code with no properties. The
//! encoder uses the shortest form.

use bytes::{BufMut, BytesMut};

use super::header::put_fixed_header;
use super::properties::{block_len, AuthProperties, DisconnectProperties, PropertySet};
use super::wire::{packet_len, reason_code_in, Reader};
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

/// DISCONNECT reason codes MQTT 5 allows [MQTT 5 3.14.2.1].
pub(crate) const DISCONNECT_REASON_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
/// AUTH reason codes [MQTT 5 3.15.2.1].
const AUTH_REASON_CODES: &[u8] = &[0x00, 0x18, 0x19];

/// Reads the optional reason code and properties of DISCONNECT or AUTH.
fn decode_tail<P>(
    r: &mut Reader<'_>,
    allowed: &[u8],
    decode_props: fn(&mut Reader<'_>) -> Result<P, DecodeError>,
) -> Result<(ReasonCode, P), DecodeError>
where
    P: Default,
{
    let mut tail = (ReasonCode::Success, P::default());
    if r.remaining() > 0 {
        tail.0 = reason_code_in(r.u8()?, allowed)?;
        if r.remaining() > 0 {
            tail.1 = decode_props(r)?;
        }
    }
    r.finish()?;
    Ok(tail)
}

/// Writes DISCONNECT or AUTH in its shortest form.
fn encode_tail(
    out: &mut BytesMut,
    first: u8,
    reason_code: ReasonCode,
    props: &impl PropertySet,
    props_empty: bool,
) -> Result<(), EncodeError> {
    let props_len = if props_empty { None } else { Some(props.content_len()?) };
    let len = match props_len {
        None if reason_code == ReasonCode::Success => 0,
        None => 1,
        Some(p) => 1 + block_len(p),
    };
    out.reserve(packet_len(len)?);
    put_fixed_header(out, first, len);
    if len > 0 {
        out.put_u8(reason_code.value());
    }
    if let Some(p) = props_len {
        props.put(out, p);
    }
    Ok(())
}

impl Disconnect {
    /// Normal disconnection, no properties.
    pub fn normal() -> Self {
        Self { reason_code: ReasonCode::Success, properties: DisconnectProperties::default() }
    }

    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        if !version.is_v5() {
            r.finish()?;
            return Ok(Self::normal());
        }
        let (reason_code, properties) =
            decode_tail(r, DISCONNECT_REASON_CODES, DisconnectProperties::decode)?;
        Ok(Self { reason_code, properties })
    }

    /// Encodes this DISCONNECT in its shortest form; for 3.x it is always two bytes.
    ///
    /// # Errors
    /// [`EncodeError::FieldTooLong`] for an over-long property.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if !version.is_v5() {
            out.extend_from_slice(&[0xE0, 0x00]);
            return Ok(());
        }
        encode_tail(out, 0xE0, self.reason_code, &self.properties, self.properties.is_empty())
    }
}

impl Auth {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let (reason_code, properties) = decode_tail(r, AUTH_REASON_CODES, AuthProperties::decode)?;
        Ok(Self { reason_code, properties })
    }

    /// Encodes this AUTH in its shortest form.
    ///
    /// # Errors
    /// [`EncodeError::V5Only`] for 3.x; [`EncodeError::FieldTooLong`] for an over-long
    /// property.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if !version.is_v5() {
            return Err(EncodeError::V5Only);
        }
        encode_tail(out, 0xF0, self.reason_code, &self.properties, self.properties.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::{assert_wire, decode_bytes};
    use crate::codec::Packet;

    const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    #[test]
    fn normal_disconnect_is_two_bytes_in_every_version() {
        for v in [ProtocolVersion::V3_1, V311, V5] {
            assert_wire(&[0xE0, 0x00], v, Packet::Disconnect(Disconnect::normal()));
        }
    }

    #[test]
    fn disconnect_with_reason_in_5() {
        let d = Disconnect {
            reason_code: ReasonCode::DisconnectWithWill,
            properties: DisconnectProperties::default(),
        };
        // DISCONNECT, remaining length 1, reason 0x04; no property length
        assert_wire(&[0xE0, 0x01, 0x04], V5, Packet::Disconnect(d));
        #[rustfmt::skip]
        let bytes = [
            0xE0, 0x07,                         // DISCONNECT, remaining length 7
            0x8B,                               // reason Server shutting down
            0x05,                               // property length 5
            0x11, 0x00, 0x00, 0x00, 0x1E,       //   Session Expiry Interval 30
        ];
        let mut d = Disconnect {
            reason_code: ReasonCode::ServerShuttingDown,
            properties: DisconnectProperties::default(),
        };
        d.properties.session_expiry_interval = Some(30);
        assert_wire(&bytes, V5, Packet::Disconnect(d));
        // Success with an empty property block decodes as the short form.
        assert_eq!(
            decode_bytes(&[0xE0, 0x02, 0x00, 0x00], V5),
            Ok(Packet::Disconnect(Disconnect::normal()))
        );
    }

    #[test]
    fn auth_in_5() {
        let success =
            Auth { reason_code: ReasonCode::Success, properties: AuthProperties::default() };
        // AUTH, remaining length 0: Success
        assert_wire(&[0xF0, 0x00], V5, Packet::Auth(success.clone()));
        #[rustfmt::skip]
        let bytes = [
            0xF0, 0x0D,                         // AUTH, remaining length 13
            0x18,                               // reason Continue authentication
            0x0B,                               // property length 11
            0x15, 0x00, 0x04, b'S', b'C', b'R', b'A', // Authentication Method "SCRA"
            0x16, 0x00, 0x01, 0x2A,             //   Authentication Data [0x2A]
        ];
        let mut auth = Auth {
            reason_code: ReasonCode::ContinueAuthentication,
            properties: AuthProperties::default(),
        };
        auth.properties.authentication_method = Some("SCRA".into());
        auth.properties.authentication_data = Some(bytes::Bytes::from_static(&[0x2A]));
        assert_wire(&bytes, V5, Packet::Auth(auth));
        let mut out = BytesMut::new();
        assert_eq!(success.encode(V311, &mut out), Err(EncodeError::V5Only));
    }
}
