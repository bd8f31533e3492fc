//! MQTT 5 properties, typed per packet.
//!
//! Each packet family has its own struct holding only the properties the spec allows
//! in it; a property in the wrong packet, or one that may appear once appearing twice,
//! is a malformed packet (`DecodeError::DuplicateProperty`, `DecodeError::UnexpectedProperty`).
//! For MQTT 3.1 / 3.1.1 these structs are always empty (their `Default`).
//!
//! Decoding reads each value by the data type its identifier fixes ([`Value`]) and lets
//! the packet's struct accept or refuse it; encoding walks each struct once through a
//! [`Sink`], either counting bytes or writing them, so the two can never disagree.

use bytes::{BufMut, Bytes};

use super::header::{put_varint, varint_len, MAX_REMAINING_LENGTH};
use super::wire::{field_len, put_field, Reader};
use super::{DecodeError, EncodeError};
use crate::protocol::QoS;
use crate::topic::TopicName;

/// A User Property: a name/value pair of UTF-8 strings, may repeat and keeps its order.
pub type UserProperty = (String, String);

/// Properties of CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectProperties {
    /// Session Expiry Interval (0x11), seconds; absent means 0.
    pub session_expiry_interval: Option<u32>,
    /// Receive Maximum (0x21), never 0.
    pub receive_maximum: Option<u16>,
    /// Maximum Packet Size (0x27), never 0.
    pub maximum_packet_size: Option<u32>,
    /// Topic Alias Maximum (0x22).
    pub topic_alias_maximum: Option<u16>,
    /// Request Response Information (0x19), 0 or 1.
    pub request_response_information: Option<bool>,
    /// Request Problem Information (0x17), 0 or 1.
    pub request_problem_information: Option<bool>,
    /// User Properties (0x26).
    pub user_properties: Vec<UserProperty>,
    /// Authentication Method (0x15).
    pub authentication_method: Option<String>,
    /// Authentication Data (0x16).
    pub authentication_data: Option<Bytes>,
}

/// Properties of the Will in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WillProperties {
    /// Will Delay Interval (0x18), seconds.
    pub will_delay_interval: Option<u32>,
    /// Payload Format Indicator (0x01): `true` means UTF-8 text.
    pub payload_format_indicator: Option<bool>,
    /// Message Expiry Interval (0x02), seconds.
    pub message_expiry_interval: Option<u32>,
    /// Content Type (0x03).
    pub content_type: Option<String>,
    /// Response Topic (0x08).
    pub response_topic: Option<TopicName>,
    /// Correlation Data (0x09).
    pub correlation_data: Option<Bytes>,
    /// User Properties (0x26).
    pub user_properties: Vec<UserProperty>,
}

/// Properties of CONNACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAckProperties {
    /// Session Expiry Interval (0x11).
    pub session_expiry_interval: Option<u32>,
    /// Receive Maximum (0x21).
    pub receive_maximum: Option<u16>,
    /// Maximum QoS (0x24), 0 or 1 (absent means 2).
    pub maximum_qos: Option<QoS>,
    /// Retain Available (0x25).
    pub retain_available: Option<bool>,
    /// Maximum Packet Size (0x27).
    pub maximum_packet_size: Option<u32>,
    /// Assigned Client Identifier (0x12).
    pub assigned_client_identifier: Option<String>,
    /// Topic Alias Maximum (0x22).
    pub topic_alias_maximum: Option<u16>,
    /// Reason String (0x1F).
    pub reason_string: Option<String>,
    /// User Properties (0x26).
    pub user_properties: Vec<UserProperty>,
    /// Wildcard Subscription Available (0x28).
    pub wildcard_subscription_available: Option<bool>,
    /// Subscription Identifiers Available (0x29).
    pub subscription_identifiers_available: Option<bool>,
    /// Shared Subscription Available (0x2A).
    pub shared_subscription_available: Option<bool>,
    /// Server Keep Alive (0x13), seconds.
    pub server_keep_alive: Option<u16>,
    /// Response Information (0x1A).
    pub response_information: Option<String>,
    /// Server Reference (0x1C).
    pub server_reference: Option<String>,
    /// Authentication Method (0x15).
    pub authentication_method: Option<String>,
    /// Authentication Data (0x16).
    pub authentication_data: Option<Bytes>,
}

/// Properties of PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishProperties {
    /// Payload Format Indicator (0x01): `true` means UTF-8 text.
    pub payload_format_indicator: Option<bool>,
    /// Message Expiry Interval (0x02), seconds.
    pub message_expiry_interval: Option<u32>,
    /// Topic Alias (0x23), never 0.
    pub topic_alias: Option<u16>,
    /// Response Topic (0x08).
    pub response_topic: Option<TopicName>,
    /// Correlation Data (0x09).
    pub correlation_data: Option<Bytes>,
    /// User Properties (0x26).
    pub user_properties: Vec<UserProperty>,
    /// Subscription Identifiers (0x0B): may repeat, server to client only; each 1..=268,435,455.
    pub subscription_identifiers: Vec<u32>,
    /// Content Type (0x03).
    pub content_type: Option<String>,
}

impl PublishProperties {
    /// True when no property is set (the common case, and always so for 3.1.1).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckProperties {
    /// Reason String (0x1F).
    pub reason_string: Option<String>,
    /// User Properties (0x26).
    pub user_properties: Vec<UserProperty>,
}

impl AckProperties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self.reason_string.is_none() && self.user_properties.is_empty()
    }
}

/// Properties of SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeProperties {
    /// Subscription Identifier (0x0B), 1..=268,435,455.
    pub subscription_identifier: Option<u32>,
    /// User Properties (0x26).
    pub user_properties: Vec<UserProperty>,
}

/// Properties of UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubscribeProperties {
    /// User Properties (0x26).
    pub user_properties: Vec<UserProperty>,
}

/// Properties of DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DisconnectProperties {
    /// Session Expiry Interval (0x11).
    pub session_expiry_interval: Option<u32>,
    /// Reason String (0x1F).
    pub reason_string: Option<String>,
    /// User Properties (0x26).
    pub user_properties: Vec<UserProperty>,
    /// Server Reference (0x1C).
    pub server_reference: Option<String>,
}

/// Properties of AUTH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthProperties {
    /// Authentication Method (0x15).
    pub authentication_method: Option<String>,
    /// Authentication Data (0x16).
    pub authentication_data: Option<Bytes>,
    /// Reason String (0x1F).
    pub reason_string: Option<String>,
    /// User Properties (0x26).
    pub user_properties: Vec<UserProperty>,
}

// Property identifiers [MQTT 5, 2.2.2.2].
const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

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

    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
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

    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Where encoded properties go: a byte counter or the output buffer. Each property
/// struct walks its fields once through [`PropertySet::visit`].
pub(crate) trait Sink {
    /// A byte, two-byte or four-byte integer, `width` bytes wide.
    fn integer(&mut self, id: u8, value: u32, width: usize);
    /// A variable byte integer.
    fn varint(&mut self, id: u8, value: u32);
    /// A UTF-8 string or binary data (same wire shape).
    fn field(&mut self, id: u8, value: &[u8]);
    /// A string pair.
    fn pair(&mut self, id: u8, name: &str, value: &str);

    fn byte(&mut self, id: u8, value: Option<u8>) {
        if let Some(v) = value {
            self.integer(id, u32::from(v), 1);
        }
    }
    fn flag(&mut self, id: u8, value: Option<bool>) {
        self.byte(id, value.map(u8::from));
    }
    fn two(&mut self, id: u8, value: Option<u16>) {
        if let Some(v) = value {
            self.integer(id, u32::from(v), 2);
        }
    }
    fn four(&mut self, id: u8, value: Option<u32>) {
        if let Some(v) = value {
            self.integer(id, v, 4);
        }
    }
    fn str(&mut self, id: u8, value: Option<&str>) {
        if let Some(v) = value {
            self.field(id, v.as_bytes());
        }
    }
    fn binary(&mut self, id: u8, value: Option<&Bytes>) {
        if let Some(v) = value {
            self.field(id, v);
        }
    }
    fn users(&mut self, list: &[UserProperty]) {
        for (name, value) in list {
            self.pair(USER_PROPERTY, name, value);
        }
    }
}

/// Counts the bytes a property block's content takes, and notes what cannot be encoded.
#[derive(Debug, Default)]
struct Counter {
    len: usize,
    error: Option<EncodeError>,
}

impl Counter {
    fn add(&mut self, len: Result<usize, EncodeError>) {
        match len {
            Ok(n) => self.len = self.len.saturating_add(n),
            Err(e) => self.error = Some(e),
        }
    }
}

impl Sink for Counter {
    fn integer(&mut self, _id: u8, _value: u32, width: usize) {
        self.add(Ok(1 + width));
    }
    fn varint(&mut self, _id: u8, value: u32) {
        let value = value as usize;
        if value > MAX_REMAINING_LENGTH {
            self.add(Err(EncodeError::VarintOutOfRange));
        } else {
            self.add(Ok(1 + varint_len(value)));
        }
    }
    fn field(&mut self, _id: u8, value: &[u8]) {
        self.add(field_len(value.len()).map(|n| n + 1));
    }
    fn pair(&mut self, _id: u8, name: &str, value: &str) {
        let len = field_len(name.len()).and_then(|a| Ok(1 + a + field_len(value.len())?));
        self.add(len);
    }
}

/// Writes properties into a buffer already sized by a [`Counter`] pass.
struct Writer<'a, B: BufMut>(&'a mut B);

impl<B: BufMut> Sink for Writer<'_, B> {
    fn integer(&mut self, id: u8, value: u32, width: usize) {
        self.0.put_u8(id);
        // `value` came from a `width`-byte integer: the truncations are exact.
        match width {
            1 => self.0.put_u8(value as u8),
            2 => self.0.put_u16(value as u16),
            _ => self.0.put_u32(value),
        }
    }
    fn varint(&mut self, id: u8, value: u32) {
        self.0.put_u8(id);
        put_varint(self.0, value as usize);
    }
    fn field(&mut self, id: u8, value: &[u8]) {
        self.0.put_u8(id);
        put_field(self.0, value);
    }
    fn pair(&mut self, id: u8, name: &str, value: &str) {
        self.0.put_u8(id);
        put_field(self.0, name.as_bytes());
        put_field(self.0, value.as_bytes());
    }
}

/// A property struct that can be encoded.
pub(crate) trait PropertySet {
    /// Feeds every set property to `sink`, in a fixed order.
    fn visit(&self, sink: &mut impl Sink);

    /// Length of the property block's content (without its Property Length prefix).
    fn content_len(&self) -> Result<usize, EncodeError> {
        let mut counter = Counter::default();
        self.visit(&mut counter);
        match counter.error {
            Some(e) => Err(e),
            None if counter.len > MAX_REMAINING_LENGTH => Err(EncodeError::PacketTooLarge),
            None => Ok(counter.len),
        }
    }

    /// Writes the Property Length `content_len` (from [`PropertySet::content_len`]) and
    /// the properties.
    fn put(&self, out: &mut impl BufMut, content_len: usize) {
        put_varint(out, content_len);
        self.visit(&mut Writer(out));
    }
}

/// Length of a property block with its Property Length prefix.
pub(crate) fn block_len(content_len: usize) -> usize {
    varint_len(content_len) + content_len
}

impl PropertySet for ConnectProperties {
    fn visit(&self, s: &mut impl Sink) {
        s.four(SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        s.two(RECEIVE_MAXIMUM, self.receive_maximum);
        s.four(MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        s.two(TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        s.flag(REQUEST_RESPONSE_INFORMATION, self.request_response_information);
        s.flag(REQUEST_PROBLEM_INFORMATION, self.request_problem_information);
        s.users(&self.user_properties);
        s.str(AUTHENTICATION_METHOD, self.authentication_method.as_deref());
        s.binary(AUTHENTICATION_DATA, self.authentication_data.as_ref());
    }
}

impl PropertySet for WillProperties {
    fn visit(&self, s: &mut impl Sink) {
        s.four(WILL_DELAY_INTERVAL, self.will_delay_interval);
        s.flag(PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        s.four(MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        s.str(CONTENT_TYPE, self.content_type.as_deref());
        s.str(RESPONSE_TOPIC, self.response_topic.as_ref().map(TopicName::as_str));
        s.binary(CORRELATION_DATA, self.correlation_data.as_ref());
        s.users(&self.user_properties);
    }
}

impl PropertySet for ConnAckProperties {
    fn visit(&self, s: &mut impl Sink) {
        s.four(SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        s.two(RECEIVE_MAXIMUM, self.receive_maximum);
        s.byte(MAXIMUM_QOS, self.maximum_qos.map(QoS::bits));
        s.flag(RETAIN_AVAILABLE, self.retain_available);
        s.four(MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        s.str(ASSIGNED_CLIENT_IDENTIFIER, self.assigned_client_identifier.as_deref());
        s.two(TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        s.str(REASON_STRING, self.reason_string.as_deref());
        s.users(&self.user_properties);
        s.flag(WILDCARD_SUBSCRIPTION_AVAILABLE, self.wildcard_subscription_available);
        s.flag(SUBSCRIPTION_IDENTIFIER_AVAILABLE, self.subscription_identifiers_available);
        s.flag(SHARED_SUBSCRIPTION_AVAILABLE, self.shared_subscription_available);
        s.two(SERVER_KEEP_ALIVE, self.server_keep_alive);
        s.str(RESPONSE_INFORMATION, self.response_information.as_deref());
        s.str(SERVER_REFERENCE, self.server_reference.as_deref());
        s.str(AUTHENTICATION_METHOD, self.authentication_method.as_deref());
        s.binary(AUTHENTICATION_DATA, self.authentication_data.as_ref());
    }
}

impl PropertySet for PublishProperties {
    fn visit(&self, s: &mut impl Sink) {
        s.flag(PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        s.four(MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        s.two(TOPIC_ALIAS, self.topic_alias);
        s.str(RESPONSE_TOPIC, self.response_topic.as_ref().map(TopicName::as_str));
        s.binary(CORRELATION_DATA, self.correlation_data.as_ref());
        s.users(&self.user_properties);
        for &id in &self.subscription_identifiers {
            s.varint(SUBSCRIPTION_IDENTIFIER, id);
        }
        s.str(CONTENT_TYPE, self.content_type.as_deref());
    }
}

impl PropertySet for AckProperties {
    fn visit(&self, s: &mut impl Sink) {
        s.str(REASON_STRING, self.reason_string.as_deref());
        s.users(&self.user_properties);
    }
}

impl PropertySet for SubscribeProperties {
    fn visit(&self, s: &mut impl Sink) {
        if let Some(id) = self.subscription_identifier {
            s.varint(SUBSCRIPTION_IDENTIFIER, id);
        }
        s.users(&self.user_properties);
    }
}

impl PropertySet for UnsubscribeProperties {
    fn visit(&self, s: &mut impl Sink) {
        s.users(&self.user_properties);
    }
}

impl PropertySet for DisconnectProperties {
    fn visit(&self, s: &mut impl Sink) {
        s.four(SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        s.str(REASON_STRING, self.reason_string.as_deref());
        s.users(&self.user_properties);
        s.str(SERVER_REFERENCE, self.server_reference.as_deref());
    }
}

impl PropertySet for AuthProperties {
    fn visit(&self, s: &mut impl Sink) {
        s.str(AUTHENTICATION_METHOD, self.authentication_method.as_deref());
        s.binary(AUTHENTICATION_DATA, self.authentication_data.as_ref());
        s.str(REASON_STRING, self.reason_string.as_deref());
        s.users(&self.user_properties);
    }
}
