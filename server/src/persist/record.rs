//! What the durable store keeps, and its byte layout on disk.
//!
//! The types here are plain data: the write intents a worker submits ([`Intent`]) and
//! the records they carry ([`StoredMessage`], [`SessionRecord`], [`InflightRecord`]).
//! Each record is encoded by hand into a small versioned binary layout (first byte:
//! [`FORMAT_VERSION`]); decoding checks every length against what is left and returns
//! [`CorruptRecord`] instead of panicking, because the bytes come from disk.
//! Which table holds what is `super::table`'s concern.

use bytes::Bytes;
use shoal_core::codec::{RetainHandling, SubscriptionOptions};
use shoal_core::{PacketId, ProtocolVersion, QoS, TopicFilter, TopicName};

/// Layout version written as the first byte of every record value.
pub const FORMAT_VERSION: u8 = 1;

/// Identifies one stored message body. Allocated by the broker
/// ([`super::PersistLink::next_message_id`]) and unique for the life of a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

/// An application message as stored: once per body, whatever number of queues,
/// in-flight windows and retained topics refer to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its id.
    pub id: MessageId,
    /// Topic it was published to.
    pub topic: TopicName,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// MQTT 5 publish properties, encoded by the caller (opaque to the store).
    pub properties: Bytes,
    /// When it expires, in seconds since the Unix epoch; `None` never expires.
    pub expires_at: Option<u64>,
}

impl StoredMessage {
    /// True once `expires_at` is at or before `now_unix`.
    pub fn is_expired(&self, now_unix: u64) -> bool {
        self.expires_at.is_some_and(|t| t <= now_unix)
    }
}

/// One subscription of a stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSubscription {
    /// The filter.
    pub filter: TopicFilter,
    /// Options asked for (granted QoS is `options.qos`).
    pub options: SubscriptionOptions,
    /// Subscription identifier (v5), if given.
    pub identifier: Option<u32>,
}

/// The will of a stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWill {
    /// Will topic.
    pub topic: TopicName,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// MQTT 5 will properties, encoded by the caller (opaque to the store).
    pub properties: Bytes,
    /// Will Delay Interval in seconds (v5), 0 when not set.
    pub delay_secs: u32,
}

/// What the store keeps about a persistent session, apart from its queue, in-flight
/// window and QoS 2 received-marks (which have their own intents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Protocol version of the last connection.
    pub version: ProtocolVersion,
    /// Session Expiry Interval in seconds; `u32::MAX` never expires.
    pub expiry_secs: u32,
    /// When the last connection ended (seconds since the Unix epoch); `None` while
    /// connected. A session recovered with `None` was connected at the crash and
    /// counts as disconnected at recovery time.
    pub disconnected_at: Option<u64>,
    /// Subscriptions, in any order.
    pub subscriptions: Vec<StoredSubscription>,
    /// The will, if the session has one.
    pub will: Option<StoredWill>,
}

impl SessionRecord {
    /// True when the session, disconnected at `disconnected_at`, has outlived its
    /// expiry interval at `now_unix`.
    pub fn is_expired(&self, now_unix: u64) -> bool {
        match self.disconnected_at {
            Some(at) if self.expiry_secs != u32::MAX => {
                at.saturating_add(u64::from(self.expiry_secs)) <= now_unix
            }
            _ => false,
        }
    }
}

/// Where an outgoing QoS 1/2 message stands in a session's in-flight window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflightRecord {
    /// PUBLISH sent (QoS 1 or 2), waiting for PUBACK or PUBREC; resent with DUP.
    Publish {
        /// The message.
        message: MessageId,
        /// QoS it was delivered with.
        qos: QoS,
    },
    /// PUBREC received, PUBREL sent, waiting for PUBCOMP; the body is no longer needed.
    Released,
}

/// One write the broker asks the store to make durable. A batch of intents is applied
/// in order inside one transaction, together with every other batch queued at the time.
///
/// Messages are stored once ([`Intent::PutMessage`]) and referred to by id; a body is
/// deleted at the end of the transaction in which its last reference (queue entry,
/// in-flight entry or retained topic) went away, or that stored it unreferenced.
/// A reference to a message the store does not hold is skipped and counted
/// ([`super::PersistStats::dangling`]), so the disk never holds a dangling id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Store a message body (overwrites the same id: resubmitting a batch is harmless).
    PutMessage(StoredMessage),
    /// Make `message` the retained message of `topic`.
    PutRetained {
        /// The topic.
        topic: TopicName,
        /// Its new retained message.
        message: MessageId,
    },
    /// Delete the retained message of `topic`.
    DeleteRetained {
        /// The topic.
        topic: TopicName,
    },
    /// Append `message` to `client_id`'s queue at position `seq` (increasing per client).
    Enqueue {
        /// The session.
        client_id: String,
        /// The message.
        message: MessageId,
        /// Its position; the queue is recovered in `seq` order.
        seq: u64,
    },
    /// Remove the queue entry at `seq` (delivered and acknowledged, or moved in flight).
    Dequeue {
        /// The session.
        client_id: String,
        /// The entry.
        seq: u64,
    },
    /// Create or replace a session record.
    PutSession {
        /// The session.
        client_id: String,
        /// What to keep.
        record: SessionRecord,
    },
    /// Delete a session with everything it holds: queue, in-flight, QoS 2 marks.
    DeleteSession {
        /// The session.
        client_id: String,
    },
    /// An incoming QoS 2 PUBLISH was received (PUBREC sent); a resend is not routed again.
    MarkQos2Received {
        /// The session.
        client_id: String,
        /// The publisher's packet id.
        packet_id: PacketId,
    },
    /// PUBREL received for an incoming QoS 2 packet id.
    ClearQos2Received {
        /// The session.
        client_id: String,
        /// The publisher's packet id.
        packet_id: PacketId,
    },
    /// Set the in-flight state of an outgoing packet id.
    PutInflight {
        /// The session.
        client_id: String,
        /// The packet id it was sent with.
        packet_id: PacketId,
        /// Its state.
        record: InflightRecord,
    },
    /// The outgoing packet id was completed (PUBACK or PUBCOMP).
    DeleteInflight {
        /// The session.
        client_id: String,
        /// The packet id.
        packet_id: PacketId,
    },
}

impl Intent {
    /// Roughly the memory this intent holds while it waits to be committed: its own
    /// size plus the bytes it points to (a payload shared with deliveries is counted
    /// as if it were its own, erring on the heavy side). What
    /// [`super::PersistOptions::queue_bytes`] bounds.
    pub fn weight(&self) -> u64 {
        let heap = match self {
            Intent::PutMessage(m) => m
                .payload
                .len()
                .saturating_add(m.topic.as_str().len())
                .saturating_add(m.properties.len()),
            Intent::PutRetained { topic, .. } | Intent::DeleteRetained { topic } => {
                topic.as_str().len()
            }
            Intent::PutSession { client_id, record } => {
                let subscriptions = record
                    .subscriptions
                    .iter()
                    .map(|s| s.filter.as_str().len() + std::mem::size_of::<StoredSubscription>())
                    .fold(0, usize::saturating_add);
                let will = record.will.as_ref().map_or(0, |w| {
                    w.payload.len().saturating_add(w.topic.as_str().len() + w.properties.len())
                });
                client_id.len().saturating_add(subscriptions).saturating_add(will)
            }
            Intent::Enqueue { client_id, .. }
            | Intent::Dequeue { client_id, .. }
            | Intent::DeleteSession { client_id }
            | Intent::MarkQos2Received { client_id, .. }
            | Intent::ClearQos2Received { client_id, .. }
            | Intent::PutInflight { client_id, .. }
            | Intent::DeleteInflight { client_id, .. } => client_id.len(),
        };
        (std::mem::size_of::<Intent>() as u64).saturating_add(heap as u64)
    }
}

/// A stored value could not be decoded: the file was written by something else, or
/// damaged in a way redb's checksums did not catch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {what} record: {why}")]
pub struct CorruptRecord {
    /// Which kind of record.
    pub what: &'static str,
    /// What was wrong.
    pub why: &'static str,
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(capacity: usize) -> Self {
        let mut v = Vec::with_capacity(capacity + 1);
        v.push(FORMAT_VERSION);
        Self(v)
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
            None => self.u8(0),
        }
    }
    /// Length-prefixed bytes. Lengths above `u32::MAX` cannot come from MQTT (packets are
    /// at most 256 MiB), so they are clamped rather than checked.
    fn bytes(&mut self, b: &[u8]) {
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.0.extend_from_slice(b.get(..len as usize).unwrap_or(b));
    }
}

struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Result<Self, CorruptRecord> {
        let mut r = Self { rest: bytes, what };
        if r.u8()? != FORMAT_VERSION {
            return Err(r.err("unknown format version"));
        }
        Ok(r)
    }
    fn err(&self, why: &'static str) -> CorruptRecord {
        CorruptRecord { what: self.what, why }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptRecord> {
        if self.rest.len() < n {
            return Err(self.err("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, CorruptRecord> {
        let b = self.take(1)?;
        b.first().copied().ok_or_else(|| self.err("truncated"))
    }
    fn u32(&mut self) -> Result<u32, CorruptRecord> {
        let b = self.take(4)?;
        let a: [u8; 4] = b.try_into().map_err(|_| self.err("truncated"))?;
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, CorruptRecord> {
        let b = self.take(8)?;
        let a: [u8; 8] = b.try_into().map_err(|_| self.err("truncated"))?;
        Ok(u64::from_le_bytes(a))
    }
    fn bool(&mut self) -> Result<bool, CorruptRecord> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.err("bad flag")),
        }
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, CorruptRecord> {
        Ok(if self.bool()? { Some(self.u64()?) } else { None })
    }
    fn bytes(&mut self) -> Result<&'a [u8], CorruptRecord> {
        let len = self.u32()? as usize;
        self.take(len)
    }
    fn qos(&mut self) -> Result<QoS, CorruptRecord> {
        let b = self.u8()?;
        QoS::from_bits(b).ok_or_else(|| self.err("bad QoS"))
    }
    fn topic(&mut self) -> Result<TopicName, CorruptRecord> {
        let b = self.bytes()?;
        TopicName::parse(Bytes::copy_from_slice(b)).map_err(|_| self.err("bad topic name"))
    }
    fn finish(self) -> Result<(), CorruptRecord> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.err("trailing bytes"))
        }
    }
}

/// Encodes a message body (the id is the table key, not part of the value).
pub(super) fn encode_message(m: &StoredMessage) -> Vec<u8> {
    let mut w = Writer::new(24 + m.topic.len() + m.payload.len() + m.properties.len());
    w.u8(m.qos.bits());
    w.u8(u8::from(m.retain));
    w.opt_u64(m.expires_at);
    w.bytes(m.topic.as_bytes());
    w.bytes(&m.payload);
    w.bytes(&m.properties);
    w.0
}

/// Decodes a message body stored under `id`.
pub(super) fn decode_message(id: MessageId, bytes: &[u8]) -> Result<StoredMessage, CorruptRecord> {
    let mut r = Reader::new(bytes, "message")?;
    let qos = r.qos()?;
    let retain = r.bool()?;
    let expires_at = r.opt_u64()?;
    let topic = r.topic()?;
    let payload = Bytes::copy_from_slice(r.bytes()?);
    let properties = Bytes::copy_from_slice(r.bytes()?);
    r.finish()?;
    Ok(StoredMessage { id, topic, payload, qos, retain, properties, expires_at })
}

fn version_byte(v: ProtocolVersion) -> u8 {
    v.level()
}

fn retain_handling_byte(h: RetainHandling) -> u8 {
    h as u8
}

/// Encodes a session record.
pub(super) fn encode_session(s: &SessionRecord) -> Vec<u8> {
    let mut w = Writer::new(64 + 32 * s.subscriptions.len());
    w.u8(version_byte(s.version));
    w.u32(s.expiry_secs);
    w.opt_u64(s.disconnected_at);
    w.u32(u32::try_from(s.subscriptions.len()).unwrap_or(u32::MAX));
    for sub in &s.subscriptions {
        w.bytes(sub.filter.as_bytes());
        w.u8(sub.options.qos.bits());
        w.u8(u8::from(sub.options.no_local));
        w.u8(u8::from(sub.options.retain_as_published));
        w.u8(retain_handling_byte(sub.options.retain_handling));
        w.opt_u64(sub.identifier.map(u64::from));
    }
    match &s.will {
        None => w.u8(0),
        Some(will) => {
            w.u8(1);
            w.bytes(will.topic.as_bytes());
            w.bytes(&will.payload);
            w.u8(will.qos.bits());
            w.u8(u8::from(will.retain));
            w.bytes(&will.properties);
            w.u32(will.delay_secs);
        }
    }
    w.0
}

/// Decodes a session record.
pub(super) fn decode_session(bytes: &[u8]) -> Result<SessionRecord, CorruptRecord> {
    let mut r = Reader::new(bytes, "session")?;
    let version = match r.u8()? {
        3 => ProtocolVersion::V3_1,
        4 => ProtocolVersion::V3_1_1,
        5 => ProtocolVersion::V5,
        _ => return Err(r.err("bad protocol version")),
    };
    let expiry_secs = r.u32()?;
    let disconnected_at = r.opt_u64()?;
    let count = r.u32()? as usize;
    // Each subscription takes at least 9 bytes: never trust a count to size a Vec.
    let mut subscriptions = Vec::with_capacity(count.min(r.rest.len() / 9));
    for _ in 0..count {
        let filter = std::str::from_utf8(r.bytes()?)
            .ok()
            .and_then(|s| TopicFilter::parse(s).ok())
            .ok_or_else(|| r.err("bad topic filter"))?;
        let qos = r.qos()?;
        let no_local = r.bool()?;
        let retain_as_published = r.bool()?;
        let retain_handling = match r.u8()? {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscription,
            2 => RetainHandling::Never,
            _ => return Err(r.err("bad retain handling")),
        };
        let identifier = match r.opt_u64()? {
            None => None,
            Some(v) => Some(u32::try_from(v).map_err(|_| r.err("bad subscription id"))?),
        };
        let options = SubscriptionOptions { qos, no_local, retain_as_published, retain_handling };
        subscriptions.push(StoredSubscription { filter, options, identifier });
    }
    let will = if r.bool()? {
        let topic = r.topic()?;
        let payload = Bytes::copy_from_slice(r.bytes()?);
        let qos = r.qos()?;
        let retain = r.bool()?;
        let properties = Bytes::copy_from_slice(r.bytes()?);
        let delay_secs = r.u32()?;
        Some(StoredWill { topic, payload, qos, retain, properties, delay_secs })
    } else {
        None
    };
    r.finish()?;
    Ok(SessionRecord { version, expiry_secs, disconnected_at, subscriptions, will })
}

/// Encodes an in-flight record.
pub(super) fn encode_inflight(rec: &InflightRecord) -> Vec<u8> {
    let mut w = Writer::new(10);
    match rec {
        InflightRecord::Publish { message, qos } => {
            w.u8(0);
            w.u64(message.0);
            w.u8(qos.bits());
        }
        InflightRecord::Released => w.u8(1),
    }
    w.0
}

/// Decodes an in-flight record.
pub(super) fn decode_inflight(bytes: &[u8]) -> Result<InflightRecord, CorruptRecord> {
    let mut r = Reader::new(bytes, "in-flight")?;
    let rec = match r.u8()? {
        0 => {
            let message = MessageId(r.u64()?);
            let qos = r.qos()?;
            InflightRecord::Publish { message, qos }
        }
        1 => InflightRecord::Released,
        _ => return Err(r.err("bad state")),
    };
    r.finish()?;
    Ok(rec)
}

/// The message an in-flight record refers to, if any.
pub(super) fn inflight_message(rec: &InflightRecord) -> Option<MessageId> {
    match rec {
        InflightRecord::Publish { message, .. } => Some(*message),
        InflightRecord::Released => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> StoredMessage {
        StoredMessage {
            id: MessageId(7),
            topic: TopicName::try_from_str("a/b").unwrap(),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Bytes::from_static(&[1, 2, 3]),
            expires_at: Some(99),
        }
    }

    fn session() -> SessionRecord {
        SessionRecord {
            version: ProtocolVersion::V5,
            expiry_secs: 3600,
            disconnected_at: Some(5),
            subscriptions: vec![StoredSubscription {
                filter: TopicFilter::parse("a/+/#").unwrap(),
                options: SubscriptionOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::Never,
                },
                identifier: Some(42),
            }],
            will: Some(StoredWill {
                topic: TopicName::try_from_str("will").unwrap(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Bytes::new(),
                delay_secs: 10,
            }),
        }
    }

    #[test]
    fn records_round_trip() {
        let m = message();
        assert_eq!(decode_message(m.id, &encode_message(&m)).unwrap(), m);
        let s = session();
        assert_eq!(decode_session(&encode_session(&s)).unwrap(), s);
        for rec in [
            InflightRecord::Publish { message: MessageId(3), qos: QoS::ExactlyOnce },
            InflightRecord::Released,
        ] {
            assert_eq!(decode_inflight(&encode_inflight(&rec)).unwrap(), rec);
        }
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_not_a_panic() {
        let m = encode_message(&message());
        let s = encode_session(&session());
        for n in 0..m.len() {
            assert!(decode_message(MessageId(1), &m[..n]).is_err());
        }
        for n in 0..s.len() {
            assert!(decode_session(&s[..n]).is_err());
        }
        let mut seed = 0x9e37_79b9_u32;
        for len in 0..200 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = decode_message(MessageId(1), &junk);
            let _ = decode_session(&junk);
            let _ = decode_inflight(&junk);
        }
    }
}
