//! Reading property blocks into the per-packet property structs.

use bytes::Bytes;

use super::*;
use crate::codec::wire::Reader;
use crate::codec::DecodeError;

/// One decoded property value, typed by its identifier.
#[derive(Debug)]
enum Value<'a> {
    Byte(u8),
    Two(u16),
    Four(u32),
    Varint(u32),
    Str(&'a str),
    Pair(&'a str, &'a str),
    Binary(Bytes),
}

fn read_value<'a>(r: &mut Reader<'a>, id: u8) -> Result<Value<'a>, DecodeError> {
    Ok(match id {
        PAYLOAD_FORMAT_INDICATOR
        | REQUEST_PROBLEM_INFORMATION
        | REQUEST_RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => Value::Byte(r.u8()?),
        SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => {
            Value::Two(r.u16()?)
        }
        MESSAGE_EXPIRY_INTERVAL
        | SESSION_EXPIRY_INTERVAL
        | WILL_DELAY_INTERVAL
        | MAXIMUM_PACKET_SIZE => Value::Four(r.u32()?),
        SUBSCRIPTION_IDENTIFIER => Value::Varint(r.varint()?),
        CONTENT_TYPE
        | RESPONSE_TOPIC
        | ASSIGNED_CLIENT_IDENTIFIER
        | AUTHENTICATION_METHOD
        | RESPONSE_INFORMATION
        | SERVER_REFERENCE
        | REASON_STRING => Value::Str(r.str()?),
        USER_PROPERTY => {
            let name = r.str()?;
            Value::Pair(name, r.str()?)
        }
        CORRELATION_DATA | AUTHENTICATION_DATA => Value::Binary(r.binary()?),
        _ => return Err(DecodeError::UnknownProperty(id)),
    })
}

/// Reads a Property Length and the properties it covers, handing each to `accept`.
fn read_properties<'a>(
    r: &mut Reader<'a>,
    mut accept: impl FnMut(u8, Value<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = r.varint_len()?;
    let mut block = r.sub(len, DecodeError::PropertyLengthOverrun)?;
    while block.remaining() > 0 {
        // Identifiers are variable byte integers, but every defined one fits in a byte
        // below 0x80; a continuation bit can only start an undefined identifier.
        let id = block.u8()?;
        if id & 0x80 != 0 {
            return Err(DecodeError::UnknownProperty(id));
        }
        let value = read_value(&mut block, id)?;
        accept(id, value)?;
    }
    Ok(())
}

/// Stores a property that may appear at most once.
fn once<T>(slot: &mut Option<T>, value: T, id: u8) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty(id));
    }
    *slot = Some(value);
    Ok(())
}

/// A byte property restricted to 0 or 1.
fn flag(value: u8, id: u8) -> Result<bool, DecodeError> {
    match value {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::InvalidPropertyValue(id)),
    }
}

fn non_zero_u16(value: u16, id: u8) -> Result<u16, DecodeError> {
    if value == 0 {
        return Err(DecodeError::InvalidPropertyValue(id));
    }
    Ok(value)
}

fn non_zero_u32(value: u32, id: u8) -> Result<u32, DecodeError> {
    if value == 0 {
        return Err(DecodeError::InvalidPropertyValue(id));
    }
    Ok(value)
}

fn user_property(list: &mut Vec<UserProperty>, name: &str, value: &str) {
    list.push((name.to_owned(), value.to_owned()));
}

/// A Response Topic: a topic name, so no wildcards and not empty [MQTT-3.3.2-14].
fn response_topic(s: &str) -> Result<TopicName, DecodeError> {
    TopicName::try_from_str(s).map_err(|_| DecodeError::InvalidPropertyValue(RESPONSE_TOPIC))
}

/// Authentication Data without an Authentication Method is a Protocol Error.
fn check_auth_pair(method: &Option<String>, data: &Option<Bytes>) -> Result<(), DecodeError> {
    if method.is_none() && data.is_some() {
        return Err(DecodeError::InvalidPropertyValue(AUTHENTICATION_DATA));
    }
    Ok(())
}

impl ConnectProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (SESSION_EXPIRY_INTERVAL, Value::Four(v)) => {
                once(&mut p.session_expiry_interval, v, id)
            }
            // [MQTT-3.1.2.11.3] Receive Maximum 0 and Maximum Packet Size 0 are Protocol Errors.
            (RECEIVE_MAXIMUM, Value::Two(v)) => {
                once(&mut p.receive_maximum, non_zero_u16(v, id)?, id)
            }
            (MAXIMUM_PACKET_SIZE, Value::Four(v)) => {
                once(&mut p.maximum_packet_size, non_zero_u32(v, id)?, id)
            }
            (TOPIC_ALIAS_MAXIMUM, Value::Two(v)) => once(&mut p.topic_alias_maximum, v, id),
            (REQUEST_RESPONSE_INFORMATION, Value::Byte(v)) => {
                once(&mut p.request_response_information, flag(v, id)?, id)
            }
            (REQUEST_PROBLEM_INFORMATION, Value::Byte(v)) => {
                once(&mut p.request_problem_information, flag(v, id)?, id)
            }
            (USER_PROPERTY, Value::Pair(k, v)) => {
                user_property(&mut p.user_properties, k, v);
                Ok(())
            }
            (AUTHENTICATION_METHOD, Value::Str(v)) => {
                once(&mut p.authentication_method, v.to_owned(), id)
            }
            (AUTHENTICATION_DATA, Value::Binary(v)) => once(&mut p.authentication_data, v, id),
            _ => Err(DecodeError::UnexpectedProperty(id)),
        })?;
        check_auth_pair(&p.authentication_method, &p.authentication_data)?;
        Ok(p)
    }
}

impl WillProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (WILL_DELAY_INTERVAL, Value::Four(v)) => once(&mut p.will_delay_interval, v, id),
            (PAYLOAD_FORMAT_INDICATOR, Value::Byte(v)) => {
                once(&mut p.payload_format_indicator, flag(v, id)?, id)
            }
            (MESSAGE_EXPIRY_INTERVAL, Value::Four(v)) => {
                once(&mut p.message_expiry_interval, v, id)
            }
            (CONTENT_TYPE, Value::Str(v)) => once(&mut p.content_type, v.to_owned(), id),
            (RESPONSE_TOPIC, Value::Str(v)) => once(&mut p.response_topic, response_topic(v)?, id),
            (CORRELATION_DATA, Value::Binary(v)) => once(&mut p.correlation_data, v, id),
            (USER_PROPERTY, Value::Pair(k, v)) => {
                user_property(&mut p.user_properties, k, v);
                Ok(())
            }
            _ => Err(DecodeError::UnexpectedProperty(id)),
        })?;
        Ok(p)
    }
}

impl ConnAckProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (SESSION_EXPIRY_INTERVAL, Value::Four(v)) => {
                once(&mut p.session_expiry_interval, v, id)
            }
            (RECEIVE_MAXIMUM, Value::Two(v)) => {
                once(&mut p.receive_maximum, non_zero_u16(v, id)?, id)
            }
            // Maximum QoS is 0 or 1; absent means 2.
            (MAXIMUM_QOS, Value::Byte(v)) => {
                let qos = if flag(v, id)? { QoS::AtLeastOnce } else { QoS::AtMostOnce };
                once(&mut p.maximum_qos, qos, id)
            }
            (RETAIN_AVAILABLE, Value::Byte(v)) => once(&mut p.retain_available, flag(v, id)?, id),
            (MAXIMUM_PACKET_SIZE, Value::Four(v)) => {
                once(&mut p.maximum_packet_size, non_zero_u32(v, id)?, id)
            }
            (ASSIGNED_CLIENT_IDENTIFIER, Value::Str(v)) => {
                once(&mut p.assigned_client_identifier, v.to_owned(), id)
            }
            (TOPIC_ALIAS_MAXIMUM, Value::Two(v)) => once(&mut p.topic_alias_maximum, v, id),
            (REASON_STRING, Value::Str(v)) => once(&mut p.reason_string, v.to_owned(), id),
            (USER_PROPERTY, Value::Pair(k, v)) => {
                user_property(&mut p.user_properties, k, v);
                Ok(())
            }
            (WILDCARD_SUBSCRIPTION_AVAILABLE, Value::Byte(v)) => {
                once(&mut p.wildcard_subscription_available, flag(v, id)?, id)
            }
            (SUBSCRIPTION_IDENTIFIER_AVAILABLE, Value::Byte(v)) => {
                once(&mut p.subscription_identifiers_available, flag(v, id)?, id)
            }
            (SHARED_SUBSCRIPTION_AVAILABLE, Value::Byte(v)) => {
                once(&mut p.shared_subscription_available, flag(v, id)?, id)
            }
            (SERVER_KEEP_ALIVE, Value::Two(v)) => once(&mut p.server_keep_alive, v, id),
            (RESPONSE_INFORMATION, Value::Str(v)) => {
                once(&mut p.response_information, v.to_owned(), id)
            }
            (SERVER_REFERENCE, Value::Str(v)) => once(&mut p.server_reference, v.to_owned(), id),
            (AUTHENTICATION_METHOD, Value::Str(v)) => {
                once(&mut p.authentication_method, v.to_owned(), id)
            }
            (AUTHENTICATION_DATA, Value::Binary(v)) => once(&mut p.authentication_data, v, id),
            _ => Err(DecodeError::UnexpectedProperty(id)),
        })?;
        check_auth_pair(&p.authentication_method, &p.authentication_data)?;
        Ok(p)
    }
}

impl PublishProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (PAYLOAD_FORMAT_INDICATOR, Value::Byte(v)) => {
                once(&mut p.payload_format_indicator, flag(v, id)?, id)
            }
            (MESSAGE_EXPIRY_INTERVAL, Value::Four(v)) => {
                once(&mut p.message_expiry_interval, v, id)
            }
            // [MQTT-3.3.2-8] Topic Alias 0 is not permitted.
            (TOPIC_ALIAS, Value::Two(v)) => once(&mut p.topic_alias, non_zero_u16(v, id)?, id),
            (RESPONSE_TOPIC, Value::Str(v)) => once(&mut p.response_topic, response_topic(v)?, id),
            (CORRELATION_DATA, Value::Binary(v)) => once(&mut p.correlation_data, v, id),
            (USER_PROPERTY, Value::Pair(k, v)) => {
                user_property(&mut p.user_properties, k, v);
                Ok(())
            }
            // May repeat: one per matching subscription.
            (SUBSCRIPTION_IDENTIFIER, Value::Varint(v)) => {
                p.subscription_identifiers.push(non_zero_u32(v, id)?);
                Ok(())
            }
            (CONTENT_TYPE, Value::Str(v)) => once(&mut p.content_type, v.to_owned(), id),
            _ => Err(DecodeError::UnexpectedProperty(id)),
        })?;
        Ok(p)
    }
}

impl AckProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (REASON_STRING, Value::Str(v)) => once(&mut p.reason_string, v.to_owned(), id),
            (USER_PROPERTY, Value::Pair(k, v)) => {
                user_property(&mut p.user_properties, k, v);
                Ok(())
            }
            _ => Err(DecodeError::UnexpectedProperty(id)),
        })?;
        Ok(p)
    }
}

impl SubscribeProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            // [MQTT-3.8.2.1.2] A Subscription Identifier of 0 is a Protocol Error.
            (SUBSCRIPTION_IDENTIFIER, Value::Varint(v)) => {
                once(&mut p.subscription_identifier, non_zero_u32(v, id)?, id)
            }
            (USER_PROPERTY, Value::Pair(k, v)) => {
                user_property(&mut p.user_properties, k, v);
                Ok(())
            }
            _ => Err(DecodeError::UnexpectedProperty(id)),
        })?;
        Ok(p)
    }
}

impl UnsubscribeProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (USER_PROPERTY, Value::Pair(k, v)) => {
                user_property(&mut p.user_properties, k, v);
                Ok(())
            }
            _ => Err(DecodeError::UnexpectedProperty(id)),
        })?;
        Ok(p)
    }
}

impl DisconnectProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (SESSION_EXPIRY_INTERVAL, Value::Four(v)) => {
                once(&mut p.session_expiry_interval, v, id)
            }
            (REASON_STRING, Value::Str(v)) => once(&mut p.reason_string, v.to_owned(), id),
            (USER_PROPERTY, Value::Pair(k, v)) => {
                user_property(&mut p.user_properties, k, v);
                Ok(())
            }
            (SERVER_REFERENCE, Value::Str(v)) => once(&mut p.server_reference, v.to_owned(), id),
            _ => Err(DecodeError::UnexpectedProperty(id)),
        })?;
        Ok(p)
    }
}

impl AuthProperties {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut p = Self::default();
        read_properties(r, |id, value| match (id, value) {
            (AUTHENTICATION_METHOD, Value::Str(v)) => {
                once(&mut p.authentication_method, v.to_owned(), id)
            }
            (AUTHENTICATION_DATA, Value::Binary(v)) => once(&mut p.authentication_data, v, id),
            (REASON_STRING, Value::Str(v)) => once(&mut p.reason_string, v.to_owned(), id),
            (USER_PROPERTY, Value::Pair(k, v)) => {
                user_property(&mut p.user_properties, k, v);
                Ok(())
            }
            _ => Err(DecodeError::UnexpectedProperty(id)),
        })?;
        check_auth_pair(&p.authentication_method, &p.authentication_data)?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use crate::codec::tests::decode_bytes;
    use crate::codec::{DecodeError, Disconnect, Packet};
    use crate::protocol::{ProtocolVersion, ReasonCode};

    const V5: ProtocolVersion = ProtocolVersion::V5;

    #[test]
    fn user_properties_repeat_and_keep_their_order() {
        #[rustfmt::skip]
        let bytes = [
            0xE0, 0x14,                         // DISCONNECT, remaining length 20
            0x00,                               // reason Normal disconnection
            0x12,                               // property length 18
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'2', // User Property ("k", "2")
            0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'1', // User Property ("k", "1"): same name again
            0x1F, 0x00, 0x01, b'r',             //   Reason String "r"
        ];
        let Ok(Packet::Disconnect(Disconnect { reason_code, properties })) =
            decode_bytes(&bytes, V5)
        else {
            panic!("valid DISCONNECT");
        };
        assert_eq!(reason_code, ReasonCode::Success);
        assert_eq!(
            properties.user_properties,
            vec![("k".to_owned(), "2".to_owned()), ("k".to_owned(), "1".to_owned())]
        );
        assert_eq!(properties.reason_string.as_deref(), Some("r"));
    }

    #[test]
    fn multi_byte_property_identifier_is_unknown() {
        // DISCONNECT, reason 0, property length 2, identifier 0x81 0x00 (a varint of 1 in
        // two bytes would also be non-minimal; no defined identifier needs two bytes).
        assert_eq!(
            decode_bytes(&[0xE0, 0x04, 0x00, 0x02, 0x81, 0x00], V5),
            Err(DecodeError::UnknownProperty(0x81))
        );
    }

    #[test]
    fn reason_string_twice_is_a_protocol_error() {
        #[rustfmt::skip]
        let bytes = [
            0x40, 0x0C,                         // PUBACK, remaining length 12
            0x00, 0x01,                         // packet id 1
            0x80,                               // reason Unspecified error
            0x08,                               // property length 8
            0x1F, 0x00, 0x01, b'a',             //   Reason String "a"
            0x1F, 0x00, 0x01, b'b',             //   Reason String "b": only one allowed
        ];
        let err = decode_bytes(&bytes, V5).unwrap_err();
        assert_eq!(err, DecodeError::DuplicateProperty(0x1F));
        assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
    }
}
