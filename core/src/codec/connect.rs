//! CONNECT and CONNACK.
//!
//! CONNECT names its own protocol version, so it is decoded the same way whatever the
//! connection's version is so far; CONNACK's reason code is kept in MQTT 5 terms and
//! mapped to a 3.1.1 return code on the wire. Which client ids are acceptable (the old
//! 23-byte limit of 3.1, empty ids) is the server's policy, not checked here.

use bytes::{BufMut, Bytes, BytesMut};

use super::header::put_fixed_header;
use super::properties::{
    block_len, ConnAckProperties, ConnectProperties, PropertySet, WillProperties,
};
use super::publish::topic_error;
use super::wire::{field_len, packet_len, put_field, reason_code_in, Reader};
use super::{DecodeError, EncodeError};
use crate::protocol::{ConnectReturnCode, ProtocolVersion, QoS, ReasonCode};
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

impl LastWill {
    /// The will with its topic, payload, response topic and correlation data copied
    /// out of the buffer they were decoded from (one allocation for topic and payload),
    /// so that a broker keeping the will for the whole connection, or in a store, does
    /// not keep that read buffer alive with it.
    #[must_use]
    pub fn detached(&self) -> Self {
        let (topic, payload) = self.topic.detached_with(&self.payload);
        let mut properties = self.properties.clone();
        properties.response_topic = properties.response_topic.map(|t| t.detached());
        properties.correlation_data =
            properties.correlation_data.map(|c| Bytes::copy_from_slice(&c));
        Self { topic, payload, qos: self.qos, retain: self.retain, properties }
    }
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

// CONNECT flags [MQTT 5 3.1.2.3].
const RESERVED: u8 = 0x01;
const CLEAN_START: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;

/// CONNACK reason codes MQTT 5 allows [MQTT 5 3.2.2.2].
pub(crate) const CONNACK_REASON_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];

fn protocol_version(name: &[u8], level: u8) -> Result<ProtocolVersion, DecodeError> {
    match (name, level) {
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V3_1),
        (b"MQTT", 4) => Ok(ProtocolVersion::V3_1_1),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        // A known name with a level we do not speak: answer with CONNACK 0x84 / 0x01.
        (b"MQTT" | b"MQIsdp", _) => Err(DecodeError::UnsupportedProtocolVersion),
        // [MQTT-3.1.2-1] Not MQTT at all.
        _ => Err(DecodeError::InvalidProtocolName),
    }
}

impl Connect {
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let name = r.binary_slice()?;
        let level = r.u8()?;
        let protocol = protocol_version(name, level)?;
        let flags = r.u8()?;
        // [MQTT-3.1.2-3] The reserved flag must be 0.
        if flags & RESERVED != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let has_will = flags & WILL != 0;
        // [MQTT-3.1.2-12] Will QoS 3 is malformed.
        let will_qos =
            QoS::from_bits((flags >> WILL_QOS_SHIFT) & 0b11).ok_or(DecodeError::InvalidQoS)?;
        let will_retain = flags & WILL_RETAIN != 0;
        // [MQTT-3.1.2-11, -13] Without a will, its QoS and retain must be 0.
        if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        let has_username = flags & USERNAME != 0;
        let has_password = flags & PASSWORD != 0;
        // [MQTT-3.1.2-22] 3.x: no password without a user name (MQTT 5 allows it).
        if has_password && !has_username && !protocol.is_v5() {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16()?;
        let properties = if protocol.is_v5() {
            ConnectProperties::decode(r)?
        } else {
            ConnectProperties::default()
        };
        let client_id = r.string()?;
        let will = if has_will {
            let properties = if protocol.is_v5() {
                WillProperties::decode(r)?
            } else {
                WillProperties::default()
            };
            let topic = TopicName::parse(r.binary()?).map_err(topic_error)?;
            let payload = r.binary()?;
            Some(LastWill { topic, payload, qos: will_qos, retain: will_retain, properties })
        } else {
            None
        };
        let username = if has_username { Some(r.string()?) } else { None };
        let password = if has_password { Some(r.binary()?) } else { None };
        r.finish()?;
        Ok(Self {
            protocol,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    /// Remaining length and the property-block content lengths (connect, will).
    fn lengths(&self) -> Result<(usize, usize, usize), EncodeError> {
        let v5 = self.protocol.is_v5();
        // Protocol name, level, flags, keep alive.
        let mut len = field_len(self.protocol.protocol_name().len())? + 1 + 1 + 2;
        let mut props = 0;
        if v5 {
            props = self.properties.content_len()?;
            len += block_len(props);
        }
        len += field_len(self.client_id.len())?;
        let mut will_props = 0;
        if let Some(will) = &self.will {
            if v5 {
                will_props = will.properties.content_len()?;
                len += block_len(will_props);
            }
            len += field_len(will.topic.len())? + field_len(will.payload.len())?;
        }
        if let Some(username) = &self.username {
            len += field_len(username.len())?;
        }
        if let Some(password) = &self.password {
            len += field_len(password.len())?;
        }
        Ok((len, props, will_props))
    }

    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.clean_start {
            flags |= CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= WILL | (will.qos.bits() << WILL_QOS_SHIFT);
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        flags
    }

    /// Encodes this CONNECT in its own `protocol` version; properties are written only
    /// for MQTT 5.
    ///
    /// # Errors
    /// [`EncodeError::FieldTooLong`] for an over-long string or binary field.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let (len, props, will_props) = self.lengths()?;
        out.reserve(packet_len(len)?);
        put_fixed_header(out, 0x10, len);
        put_field(out, self.protocol.protocol_name().as_bytes());
        out.put_u8(self.protocol.level());
        out.put_u8(self.flags());
        out.put_u16(self.keep_alive);
        let v5 = self.protocol.is_v5();
        if v5 {
            self.properties.put(out, props);
        }
        put_field(out, self.client_id.as_bytes());
        if let Some(will) = &self.will {
            if v5 {
                will.properties.put(out, will_props);
            }
            put_field(out, will.topic.as_bytes());
            put_field(out, &will.payload);
        }
        if let Some(username) = &self.username {
            put_field(out, username.as_bytes());
        }
        if let Some(password) = &self.password {
            put_field(out, password);
        }
        Ok(())
    }
}

impl ConnAck {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let mut flags = r.u8()?;
        if version == ProtocolVersion::V3_1 {
            // 3.1 has no Session Present: the byte is an unused reserved field.
            flags = 0;
        }
        // [MQTT-3.2.2-1] Bits 7-1 of the acknowledge flags are reserved.
        if flags & 0xFE != 0 {
            return Err(DecodeError::ConnAckReservedFlags);
        }
        let code = r.u8()?;
        let (reason_code, properties) = if version.is_v5() {
            (reason_code_in(code, CONNACK_REASON_CODES)?, ConnAckProperties::decode(r)?)
        } else {
            let code = ConnectReturnCode::from_value(code).ok_or(DecodeError::InvalidReasonCode)?;
            (code.to_reason(), ConnAckProperties::default())
        };
        r.finish()?;
        Ok(Self { session_present: flags & 1 != 0, reason_code, properties })
    }

    /// Encodes this CONNACK; for 3.x the reason code is mapped to the nearest return
    /// code (`ConnectReturnCode::from_reason`) and the properties are dropped, and 3.1
    /// has no Session Present flag.
    ///
    /// # Errors
    /// [`EncodeError::FieldTooLong`] for an over-long property.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let (code, props) = if version.is_v5() {
            (self.reason_code.value(), Some(self.properties.content_len()?))
        } else {
            (ConnectReturnCode::from_reason(self.reason_code) as u8, None)
        };
        let len = 2 + props.map_or(0, block_len);
        out.reserve(packet_len(len)?);
        put_fixed_header(out, 0x20, len);
        // 3.1 has no Session Present flag; its first byte is reserved.
        out.put_u8(u8::from(self.session_present && version != ProtocolVersion::V3_1));
        out.put_u8(code);
        if let Some(p) = props {
            self.properties.put(out, p);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::{assert_wire, decode_bytes, encode_bytes, topic};
    use crate::codec::Packet;

    const V31: ProtocolVersion = ProtocolVersion::V3_1;
    const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn connect(protocol: ProtocolVersion, client_id: &str) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }

    #[test]
    fn minimal_connect_in_3_1_1() {
        #[rustfmt::skip]
        let bytes = [
            0x10, 0x0F,                         // CONNECT, remaining length 15
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name "MQTT"
            0x04,                               // protocol level 4 (3.1.1)
            0x02,                               // flags: Clean Session
            0x00, 0x3C,                         // keep alive 60 s
            0x00, 0x03, b'a', b'b', b'c',       // client id "abc"
        ];
        let packet = Packet::Connect(Box::new(connect(V311, "abc")));
        assert_wire(&bytes, V311, packet.clone());
        // CONNECT carries its own version: the connection's guess does not matter.
        assert_eq!(decode_bytes(&bytes, V5), Ok(packet));
    }

    #[test]
    fn mqisdp_connect_in_3_1() {
        #[rustfmt::skip]
        let bytes = [
            0x10, 0x0F,                         // CONNECT, remaining length 15
            0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name "MQIsdp"
            0x03,                               // protocol level 3 (3.1)
            0x02,                               // flags: Clean Session
            0x00, 0x3C,                         // keep alive 60 s
            0x00, 0x01, b'c',                   // client id "c"
        ];
        assert_wire(&bytes, V311, Packet::Connect(Box::new(connect(V31, "c"))));
    }

    #[test]
    fn connect_with_will_user_and_password_in_3_1_1() {
        #[rustfmt::skip]
        let bytes = [
            0x10, 0x1D,                         // CONNECT, remaining length 29
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
            0x04,                               // level 4
            0xEC,                               // user name, password, will retain, will QoS 1, will; no clean session
            0x00, 0x00,                         // keep alive off
            0x00, 0x00,                         // client id "" (server assigns)
            0x00, 0x03, b'w', b'/', b't',       // will topic "w/t"
            0x00, 0x02, b'b', b'y',             // will payload "by"
            0x00, 0x01, b'u',                   // user name "u"
            0x00, 0x03, 0x00, 0xFF, 0x01,       // password: binary, any bytes
        ];
        let mut c = connect(V311, "");
        c.clean_start = false;
        c.keep_alive = 0;
        c.will = Some(LastWill {
            topic: topic("w/t"),
            payload: Bytes::from_static(b"by"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties::default(),
        });
        c.username = Some("u".into());
        c.password = Some(Bytes::from_static(&[0x00, 0xFF, 0x01]));
        assert_wire(&bytes, V311, Packet::Connect(Box::new(c)));
    }

    #[test]
    fn connect_with_properties_and_will_properties_in_5() {
        #[rustfmt::skip]
        let bytes = [
            0x10, 0x26,                         // CONNECT, remaining length 38
            0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
            0x05,                               // level 5
            0x46,                               // password (no user name: fine in 5), will, clean start
            0x00, 0x0A,                         // keep alive 10 s
            0x08,                               // property length 8
            0x11, 0x00, 0x00, 0x0E, 0x10,       //   Session Expiry Interval 3600
            0x21, 0x00, 0x14,                   //   Receive Maximum 20
            0x00, 0x01, b'c',                   // client id "c"
            0x07,                               // will property length 7
            0x18, 0x00, 0x00, 0x00, 0x05,       //   Will Delay Interval 5
            0x01, 0x00,                         //   Payload Format Indicator: bytes
            0x00, 0x01, b'w',                   // will topic "w"
            0x00, 0x00,                         // will payload ""
            0x00, 0x01, b'p',                   // password "p"
        ];
        let mut c = connect(V5, "c");
        c.keep_alive = 10;
        c.properties.session_expiry_interval = Some(3600);
        c.properties.receive_maximum = Some(20);
        let will_properties = WillProperties {
            will_delay_interval: Some(5),
            payload_format_indicator: Some(false),
            ..Default::default()
        };
        c.will = Some(LastWill {
            topic: topic("w"),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: will_properties,
        });
        c.password = Some(Bytes::from_static(b"p"));
        assert_wire(&bytes, V5, Packet::Connect(Box::new(c)));
    }

    #[test]
    fn connack_in_3_1_1_uses_return_codes() {
        let accepted = ConnAck {
            session_present: true,
            reason_code: ReasonCode::Success,
            properties: ConnAckProperties::default(),
        };
        // CONNACK, remaining length 2, Session Present, return code 0 (accepted)
        assert_wire(&[0x20, 0x02, 0x01, 0x00], V311, Packet::ConnAck(accepted));
        let refused = ConnAck {
            session_present: false,
            reason_code: ReasonCode::NotAuthorized,
            properties: ConnAckProperties::default(),
        };
        // return code 5: not authorized
        assert_wire(&[0x20, 0x02, 0x00, 0x05], V311, Packet::ConnAck(refused.clone()));
        // A v5-only reason maps to its nearest 3.1.1 return code.
        let banned = ConnAck { reason_code: ReasonCode::Banned, ..refused };
        assert_eq!(encode_bytes(&Packet::ConnAck(banned), V311), [0x20, 0x02, 0x00, 0x05]);
    }

    #[test]
    fn connack_in_3_1_has_no_session_present() {
        let ack = ConnAck {
            session_present: true,
            reason_code: ReasonCode::Success,
            properties: ConnAckProperties::default(),
        };
        // CONNACK, remaining length 2, reserved byte 0, return code 0
        assert_eq!(encode_bytes(&Packet::ConnAck(ack.clone()), V31), [0x20, 0x02, 0x00, 0x00]);
        let expected = ConnAck { session_present: false, ..ack };
        assert_eq!(decode_bytes(&[0x20, 0x02, 0x01, 0x00], V31), Ok(Packet::ConnAck(expected)));
    }

    #[test]
    fn connack_with_properties_in_5() {
        #[rustfmt::skip]
        let bytes = [
            0x20, 0x0D,                         // CONNACK, remaining length 13
            0x00,                               // no session present
            0x00,                               // reason Success
            0x0A,                               // property length 10
            0x24, 0x01,                         //   Maximum QoS 1
            0x12, 0x00, 0x02, b'i', b'd',       //   Assigned Client Identifier "id"
            0x22, 0x00, 0x0A,                   //   Topic Alias Maximum 10
        ];
        let mut ack = ConnAck {
            session_present: false,
            reason_code: ReasonCode::Success,
            properties: ConnAckProperties::default(),
        };
        ack.properties.maximum_qos = Some(QoS::AtLeastOnce);
        ack.properties.assigned_client_identifier = Some("id".into());
        ack.properties.topic_alias_maximum = Some(10);
        assert_wire(&bytes, V5, Packet::ConnAck(ack));
    }

    #[test]
    fn password_without_user_name_is_refused_only_before_5() {
        let mut c = connect(V311, "c");
        c.password = Some(Bytes::from_static(b"p"));
        let bytes = encode_bytes(&Packet::Connect(Box::new(c.clone())), V311);
        assert_eq!(decode_bytes(&bytes, V311), Err(DecodeError::PasswordWithoutUsername));
        c.protocol = V5;
        let bytes = encode_bytes(&Packet::Connect(Box::new(c.clone())), V5);
        assert_eq!(decode_bytes(&bytes, V311), Ok(Packet::Connect(Box::new(c))));
    }

    #[test]
    fn a_detached_will_keeps_nothing_of_the_decode_buffer() {
        let mut c = connect(V5, "w");
        c.will = Some(LastWill {
            topic: TopicName::try_from_str("dev/1/status").unwrap(),
            payload: Bytes::from_static(b"OFFLINE"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: Some(5),
                response_topic: Some(TopicName::try_from_str("dev/1/reply").unwrap()),
                correlation_data: Some(Bytes::from_static(b"corr")),
                ..WillProperties::default()
            },
        });
        let mut wire = BytesMut::new();
        c.encode(&mut wire).unwrap();
        let frame = wire.freeze();
        let mut buf = BytesMut::from(frame.as_ref());
        let chunk = buf.as_ptr_range();
        let Ok(Some(Packet::Connect(decoded))) = crate::codec::decode(&mut buf, V5, usize::MAX)
        else {
            panic!("CONNECT did not decode");
        };
        let will = decoded.will.expect("will");
        let inside = |b: &[u8]| chunk.contains(&b.as_ptr());
        // The decoder's will is a view into the buffer (what the copy is for) ...
        assert!(inside(&will.payload));
        let copy = will.detached();
        assert_eq!(copy, will);
        // ... and the copy is not.
        assert!(!inside(copy.topic.as_bytes()));
        assert!(!inside(&copy.payload));
        let props = &copy.properties;
        assert!(!inside(props.response_topic.as_ref().unwrap().as_bytes()));
        assert!(!inside(props.correlation_data.as_ref().unwrap()));
    }
}
