//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK.
//!
//! Topic filters travel as checked UTF-8 strings; turning them into
//! `crate::topic::TopicFilter` is the receiver's job, so that a bad filter can be refused
//! per entry (SUBACK 0x8F) rather than failing the whole packet.

use bytes::{BufMut, BytesMut};

use super::header::put_fixed_header;
use super::properties::{
    block_len, AckProperties, PropertySet, SubscribeProperties, UnsubscribeProperties,
};
use super::wire::{field_len, packet_len, put_field, reason_code_in, Reader};
use super::{DecodeError, EncodeError};
use crate::protocol::{PacketId, ProtocolVersion, QoS, ReasonCode};

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// At least one filter with its options [MQTT-3.8.3-3].
    pub filters: Vec<SubscribeFilter>,
    /// MQTT 5 properties; empty for 3.x.
    pub properties: SubscribeProperties,
}

/// One topic filter of a SUBSCRIBE and its subscription options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// The topic filter as sent (UTF-8 checked, not yet parsed as a filter).
    pub filter: String,
    /// Subscription options.
    pub options: SubscriptionOptions,
}

/// Subscription options. For 3.x only `qos` is on the wire; the rest keep their defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local (v5).
    pub no_local: bool,
    /// Retain As Published (v5).
    pub retain_as_published: bool,
    /// Retain Handling (v5).
    pub retain_handling: RetainHandling,
}

/// When retained messages are sent on subscribe (v5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at subscribe.
    #[default]
    OnSubscribe = 0,
    /// 1: send only if the subscription did not exist.
    OnNewSubscription = 1,
    /// 2: never send at subscribe.
    Never = 2,
}

/// SUBACK. For 3.x, `Success`/`GrantedQoS1`/`GrantedQoS2` map to 0/1/2 and any error to 0x80.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// One reason code per filter, in order.
    pub reason_codes: Vec<ReasonCode>,
    /// MQTT 5 properties; empty for 3.x.
    pub properties: AckProperties,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// At least one topic filter [MQTT-3.10.3-2].
    pub filters: Vec<String>,
    /// MQTT 5 properties; empty for 3.x.
    pub properties: UnsubscribeProperties,
}

/// UNSUBACK. For 3.x the reason codes are not on the wire (decoded as empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// One reason code per filter (v5 only).
    pub reason_codes: Vec<ReasonCode>,
    /// MQTT 5 properties; empty for 3.x.
    pub properties: AckProperties,
}

/// SUBACK reason codes MQTT 5 allows [MQTT 5 3.9.3].
const SUBACK_REASON_CODES: &[u8] =
    &[0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2];
/// UNSUBACK reason codes MQTT 5 allows [MQTT 5 3.11.3].
const UNSUBACK_REASON_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
/// 3.1.1 SUBACK failure return code [MQTT-3.9.3].
const V3_SUBACK_FAILURE: u8 = 0x80;

impl SubscriptionOptions {
    /// Parses the options byte. 3.x has only the QoS bits; MQTT 5 adds No Local,
    /// Retain As Published and Retain Handling.
    fn decode(byte: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        // [MQTT-3.8.3-5] Reserved bits must be 0: 7-2 in 3.x, 7-6 in MQTT 5.
        let reserved = if version.is_v5() { 0xC0 } else { 0xFC };
        if byte & reserved != 0 {
            return Err(DecodeError::SubscriptionOptionsReserved);
        }
        let qos = QoS::from_bits(byte & 0b11).ok_or(DecodeError::InvalidSubscriptionQoS)?;
        let retain_handling = match (byte >> 4) & 0b11 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscription,
            2 => RetainHandling::Never,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        Ok(Self {
            qos,
            no_local: byte & 0b0100 != 0,
            retain_as_published: byte & 0b1000 != 0,
            retain_handling,
        })
    }

    fn encode(&self, version: ProtocolVersion) -> u8 {
        let mut byte = self.qos.bits();
        if version.is_v5() {
            byte |= (self.retain_handling as u8) << 4;
            if self.no_local {
                byte |= 0b0100;
            }
            if self.retain_as_published {
                byte |= 0b1000;
            }
        }
        byte
    }
}

/// Writes the fixed header, packet id and (MQTT 5) property block shared by the four
/// packets here, after reserving room for the whole packet.
fn put_start(
    out: &mut BytesMut,
    first: u8,
    len: usize,
    packet_id: PacketId,
    props: Option<(&impl PropertySet, usize)>,
) -> Result<(), EncodeError> {
    out.reserve(packet_len(len)?);
    put_fixed_header(out, first, len);
    out.put_u16(packet_id.get());
    if let Some((set, content_len)) = props {
        set.put(out, content_len);
    }
    Ok(())
}

/// Property-block content length when `version` carries properties.
fn props_len(
    set: &impl PropertySet,
    version: ProtocolVersion,
) -> Result<Option<usize>, EncodeError> {
    if version.is_v5() {
        set.content_len().map(Some)
    } else {
        Ok(None)
    }
}

impl Subscribe {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties = if version.is_v5() {
            SubscribeProperties::decode(r)?
        } else {
            SubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while r.remaining() > 0 {
            let filter = r.string()?;
            let options = SubscriptionOptions::decode(r.u8()?, version)?;
            filters.push(SubscribeFilter { filter, options });
        }
        // [MQTT-3.8.3-2] At least one filter.
        if filters.is_empty() {
            return Err(DecodeError::EmptySubscribe);
        }
        Ok(Self { packet_id, filters, properties })
    }

    /// Encodes this SUBSCRIBE; for 3.x only the QoS of each option is written.
    ///
    /// # Errors
    /// [`EncodeError`] for an over-long field or packet, or no filters.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyList);
        }
        let props = props_len(&self.properties, version)?;
        let mut len = 2 + props.map_or(0, block_len);
        for f in &self.filters {
            len = len.saturating_add(field_len(f.filter.len())? + 1);
        }
        put_start(out, 0x82, len, self.packet_id, props.map(|p| (&self.properties, p)))?;
        for f in &self.filters {
            put_field(out, f.filter.as_bytes());
            out.put_u8(f.options.encode(version));
        }
        Ok(())
    }
}

impl SubAck {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties =
            if version.is_v5() { AckProperties::decode(r)? } else { AckProperties::default() };
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while r.remaining() > 0 {
            let code = r.u8()?;
            let reason = if version.is_v5() {
                reason_code_in(code, SUBACK_REASON_CODES)?
            } else {
                match code {
                    0x00 => ReasonCode::Success,
                    0x01 => ReasonCode::GrantedQoS1,
                    0x02 => ReasonCode::GrantedQoS2,
                    V3_SUBACK_FAILURE => ReasonCode::UnspecifiedError,
                    _ => return Err(DecodeError::InvalidReasonCode),
                }
            };
            reason_codes.push(reason);
        }
        // One code per filter of a SUBSCRIBE, which has at least one.
        if reason_codes.is_empty() {
            return Err(DecodeError::Truncated);
        }
        Ok(Self { packet_id, reason_codes, properties })
    }

    /// Encodes this SUBACK; for 3.x any error code becomes the failure code 0x80 and any
    /// other success code than Granted QoS 1/2 becomes 0x00.
    ///
    /// # Errors
    /// [`EncodeError`] for an over-long property or packet, or no reason codes.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.reason_codes.is_empty() {
            return Err(EncodeError::EmptyList);
        }
        let props = props_len(&self.properties, version)?;
        let len = (2 + props.map_or(0, block_len)).saturating_add(self.reason_codes.len());
        put_start(out, 0x90, len, self.packet_id, props.map(|p| (&self.properties, p)))?;
        for &code in &self.reason_codes {
            out.put_u8(if version.is_v5() {
                code.value()
            } else if code.is_error() {
                V3_SUBACK_FAILURE
            } else {
                match code {
                    ReasonCode::GrantedQoS1 => 0x01,
                    ReasonCode::GrantedQoS2 => 0x02,
                    _ => 0x00,
                }
            });
        }
        Ok(())
    }
}

impl Unsubscribe {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties = if version.is_v5() {
            UnsubscribeProperties::decode(r)?
        } else {
            UnsubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while r.remaining() > 0 {
            filters.push(r.string()?);
        }
        // [MQTT-3.10.3-2] At least one filter.
        if filters.is_empty() {
            return Err(DecodeError::EmptyUnsubscribe);
        }
        Ok(Self { packet_id, filters, properties })
    }

    /// Encodes this UNSUBSCRIBE.
    ///
    /// # Errors
    /// [`EncodeError`] for an over-long field or packet, or no filters.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::EmptyList);
        }
        let props = props_len(&self.properties, version)?;
        let mut len = 2 + props.map_or(0, block_len);
        for f in &self.filters {
            len = len.saturating_add(field_len(f.len())?);
        }
        put_start(out, 0xA2, len, self.packet_id, props.map(|p| (&self.properties, p)))?;
        for f in &self.filters {
            put_field(out, f.as_bytes());
        }
        Ok(())
    }
}

impl UnsubAck {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        if !version.is_v5() {
            r.finish()?;
            return Ok(Self {
                packet_id,
                reason_codes: Vec::new(),
                properties: AckProperties::default(),
            });
        }
        let properties = AckProperties::decode(r)?;
        let mut reason_codes = Vec::with_capacity(r.remaining());
        while r.remaining() > 0 {
            reason_codes.push(reason_code_in(r.u8()?, UNSUBACK_REASON_CODES)?);
        }
        if reason_codes.is_empty() {
            return Err(DecodeError::Truncated);
        }
        Ok(Self { packet_id, reason_codes, properties })
    }

    /// Encodes this UNSUBACK; 3.x has only the packet id.
    ///
    /// # Errors
    /// [`EncodeError`] for an over-long property or packet, or (MQTT 5) no reason codes.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let props = props_len(&self.properties, version)?;
        let mut len = 2;
        if let Some(p) = props {
            if self.reason_codes.is_empty() {
                return Err(EncodeError::EmptyList);
            }
            len = (len + block_len(p)).saturating_add(self.reason_codes.len());
        }
        put_start(out, 0xB0, len, self.packet_id, props.map(|p| (&self.properties, p)))?;
        if props.is_some() {
            for &code in &self.reason_codes {
                out.put_u8(code.value());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::{assert_wire, encode_bytes, pid};
    use crate::codec::Packet;

    const V311: ProtocolVersion = ProtocolVersion::V3_1_1;
    const V5: ProtocolVersion = ProtocolVersion::V5;

    fn filter(f: &str, qos: QoS) -> SubscribeFilter {
        SubscribeFilter {
            filter: f.into(),
            options: SubscriptionOptions { qos, ..Default::default() },
        }
    }

    #[test]
    fn subscribe_in_3_1_1() {
        #[rustfmt::skip]
        let bytes = [
            0x82, 0x0C,                         // SUBSCRIBE (flags 0b0010), remaining length 12
            0x00, 0x0A,                         // packet id 10
            0x00, 0x03, b'a', b'/', b'#',       // filter "a/#"
            0x01,                               //   requested QoS 1
            0x00, 0x01, b'b',                   // filter "b"
            0x02,                               //   requested QoS 2
        ];
        let sub = Subscribe {
            packet_id: pid(10),
            filters: vec![filter("a/#", QoS::AtLeastOnce), filter("b", QoS::ExactlyOnce)],
            properties: SubscribeProperties::default(),
        };
        assert_wire(&bytes, V311, Packet::Subscribe(sub));
    }

    #[test]
    fn subscribe_with_options_and_identifier_in_5() {
        #[rustfmt::skip]
        let bytes = [
            0x82, 0x09,                         // SUBSCRIBE, remaining length 9
            0x00, 0x0A,                         // packet id 10
            0x02,                               // property length 2
            0x0B, 0x05,                         //   Subscription Identifier 5
            0x00, 0x01, b'a',                   // filter "a"
            0x2E,                               //   Retain Handling 2, RAP, No Local, QoS 2
        ];
        let sub = Subscribe {
            packet_id: pid(10),
            filters: vec![SubscribeFilter {
                filter: "a".into(),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::Never,
                },
            }],
            properties: SubscribeProperties {
                subscription_identifier: Some(5),
                user_properties: Vec::new(),
            },
        };
        assert_wire(&bytes, V5, Packet::Subscribe(sub.clone()));
        // 3.x keeps only the QoS bits.
        assert_eq!(
            encode_bytes(&Packet::Subscribe(sub), V311),
            [0x82, 0x06, 0x00, 0x0A, 0x00, 0x01, b'a', 0x02]
        );
    }

    #[test]
    fn suback_in_3_1_1_maps_errors_to_0x80() {
        #[rustfmt::skip]
        let bytes = [
            0x90, 0x05,                         // SUBACK, remaining length 5
            0x00, 0x0A,                         // packet id 10
            0x00, 0x01, 0x80,                   // granted QoS 0, granted QoS 1, failure
        ];
        let ack = SubAck {
            packet_id: pid(10),
            reason_codes: vec![
                ReasonCode::Success,
                ReasonCode::GrantedQoS1,
                ReasonCode::UnspecifiedError,
            ],
            properties: AckProperties::default(),
        };
        assert_wire(&bytes, V311, Packet::SubAck(ack.clone()));
        let mut refused = ack;
        refused.reason_codes[2] = ReasonCode::NotAuthorized;
        assert_eq!(encode_bytes(&Packet::SubAck(refused), V311), bytes);
    }

    #[test]
    fn suback_in_5() {
        #[rustfmt::skip]
        let bytes = [
            0x90, 0x05,                         // SUBACK, remaining length 5
            0x00, 0x0A,                         // packet id 10
            0x00,                               // property length 0
            0x02, 0xA2,                         // granted QoS 2, wildcards not supported
        ];
        let ack = SubAck {
            packet_id: pid(10),
            reason_codes: vec![
                ReasonCode::GrantedQoS2,
                ReasonCode::WildcardSubscriptionsNotSupported,
            ],
            properties: AckProperties::default(),
        };
        assert_wire(&bytes, V5, Packet::SubAck(ack));
    }

    #[test]
    fn unsubscribe_and_unsuback_in_3_1_1() {
        #[rustfmt::skip]
        let bytes = [
            0xA2, 0x05,                         // UNSUBSCRIBE (flags 0b0010), remaining length 5
            0x00, 0x0B,                         // packet id 11
            0x00, 0x01, b'a',                   // filter "a"
        ];
        let unsub = Unsubscribe {
            packet_id: pid(11),
            filters: vec!["a".into()],
            properties: UnsubscribeProperties::default(),
        };
        assert_wire(&bytes, V311, Packet::Unsubscribe(unsub));
        // UNSUBACK, remaining length 2, packet id 11: no reason codes before 5.
        let ack = UnsubAck {
            packet_id: pid(11),
            reason_codes: Vec::new(),
            properties: AckProperties::default(),
        };
        assert_wire(&[0xB0, 0x02, 0x00, 0x0B], V311, Packet::UnsubAck(ack));
    }

    #[test]
    fn unsuback_in_5() {
        #[rustfmt::skip]
        let bytes = [
            0xB0, 0x05,                         // UNSUBACK, remaining length 5
            0x00, 0x0B,                         // packet id 11
            0x00,                               // property length 0
            0x00, 0x11,                         // Success, No subscription existed
        ];
        let ack = UnsubAck {
            packet_id: pid(11),
            reason_codes: vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted],
            properties: AckProperties::default(),
        };
        assert_wire(&bytes, V5, Packet::UnsubAck(ack));
    }
}
