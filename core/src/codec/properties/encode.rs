//! Writing the per-packet property structs: one walk per struct, through a sink that
//! counts or writes.

use bytes::{BufMut, Bytes};

use super::*;
use crate::codec::header::{put_varint, varint_len, MAX_REMAINING_LENGTH};
use crate::codec::wire::{field_len, put_field};
use crate::codec::EncodeError;

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

    #[inline]
    fn byte(&mut self, id: u8, value: Option<u8>) {
        if let Some(v) = value {
            self.integer(id, u32::from(v), 1);
        }
    }
    #[inline]
    fn flag(&mut self, id: u8, value: Option<bool>) {
        self.byte(id, value.map(u8::from));
    }
    #[inline]
    fn two(&mut self, id: u8, value: Option<u16>) {
        if let Some(v) = value {
            self.integer(id, u32::from(v), 2);
        }
    }
    #[inline]
    fn four(&mut self, id: u8, value: Option<u32>) {
        if let Some(v) = value {
            self.integer(id, v, 4);
        }
    }
    #[inline]
    fn str(&mut self, id: u8, value: Option<&str>) {
        if let Some(v) = value {
            self.field(id, v.as_bytes());
        }
    }
    #[inline]
    fn binary(&mut self, id: u8, value: Option<&Bytes>) {
        if let Some(v) = value {
            self.field(id, v);
        }
    }
    #[inline]
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
    #[inline]
    fn add(&mut self, len: Result<usize, EncodeError>) {
        match len {
            Ok(n) => self.len = self.len.saturating_add(n),
            Err(e) => self.error = Some(e),
        }
    }
}

impl Sink for Counter {
    #[inline]
    fn integer(&mut self, _id: u8, _value: u32, width: usize) {
        self.add(Ok(1 + width));
    }
    #[inline]
    fn varint(&mut self, _id: u8, value: u32) {
        let value = value as usize;
        if value > MAX_REMAINING_LENGTH {
            self.add(Err(EncodeError::VarintOutOfRange));
        } else {
            self.add(Ok(1 + varint_len(value)));
        }
    }
    #[inline]
    fn field(&mut self, _id: u8, value: &[u8]) {
        self.add(field_len(value.len()).map(|n| n + 1));
    }
    #[inline]
    fn pair(&mut self, _id: u8, name: &str, value: &str) {
        let len = field_len(name.len()).and_then(|a| Ok(1 + a + field_len(value.len())?));
        self.add(len);
    }
}

/// Writes properties into a buffer already sized by a [`Counter`] pass.
struct Writer<'a, B: BufMut>(&'a mut B);

impl<B: BufMut> Sink for Writer<'_, B> {
    #[inline]
    fn integer(&mut self, id: u8, value: u32, width: usize) {
        self.0.put_u8(id);
        // `value` came from a `width`-byte integer: the truncations are exact.
        match width {
            1 => self.0.put_u8(value as u8),
            2 => self.0.put_u16(value as u16),
            _ => self.0.put_u32(value),
        }
    }
    #[inline]
    fn varint(&mut self, id: u8, value: u32) {
        self.0.put_u8(id);
        put_varint(self.0, value as usize);
    }
    #[inline]
    fn field(&mut self, id: u8, value: &[u8]) {
        self.0.put_u8(id);
        put_field(self.0, value);
    }
    #[inline]
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
