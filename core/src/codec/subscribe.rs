//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK.
//!
//! Topic filters travel as checked UTF-8 strings; turning them into
//! `crate::topic::TopicFilter` is the receiver's job, so that a bad filter can be refused
//! per entry (SUBACK 0x8F) rather than failing the whole packet.

use bytes::BytesMut;

use super::properties::{AckProperties, SubscribeProperties, UnsubscribeProperties};
use super::wire::Reader;
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

impl Subscribe {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let _ = (r, version);
        Err(DecodeError::Truncated)
    }

    /// Encodes this packet.
    ///
    /// # Errors
    /// [`EncodeError`] for an over-long field or packet, or an empty list.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let _ = (version, out);
        Err(EncodeError::V5Only)
    }
}

impl SubAck {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let _ = (r, version);
        Err(DecodeError::Truncated)
    }

    /// Encodes this packet.
    ///
    /// # Errors
    /// [`EncodeError`] for an over-long field or packet, or an empty list.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let _ = (version, out);
        Err(EncodeError::V5Only)
    }
}

impl Unsubscribe {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let _ = (r, version);
        Err(DecodeError::Truncated)
    }

    /// Encodes this packet.
    ///
    /// # Errors
    /// [`EncodeError`] for an over-long field or packet, or an empty list.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let _ = (version, out);
        Err(EncodeError::V5Only)
    }
}

impl UnsubAck {
    pub(crate) fn decode(
        r: &mut Reader<'_>,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let _ = (r, version);
        Err(DecodeError::Truncated)
    }

    /// Encodes this packet.
    ///
    /// # Errors
    /// [`EncodeError`] for an over-long field or packet, or an empty list.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let _ = (version, out);
        Err(EncodeError::V5Only)
    }
}
