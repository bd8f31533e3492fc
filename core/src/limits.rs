//! Protocol limits a connection is held to; plain data, filled in by the server's config.

/// Limits enforced while decoding and handling one connection's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest packet accepted, in bytes including the fixed header. Checked from the
    /// fixed header before the body is buffered.
    pub max_packet_bytes: usize,
    /// Most topic levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Most unacknowledged outgoing QoS 1/2 messages per client.
    pub max_inflight: u16,
    /// Most messages queued for one session beyond the in-flight window.
    pub max_queued_messages: usize,
    /// Most bytes ([`crate::session::Message::queued_bytes`]) of the messages queued
    /// for one session beyond the in-flight window; 0: no byte bound.
    pub max_queued_bytes: usize,
    /// Most subscriptions one client may hold.
    pub max_subscriptions: usize,
    /// Topic Alias Maximum sent to MQTT 5 clients: the aliases a client may set up
    /// per connection for the topics it publishes to (0: none).
    pub topic_alias_maximum: u16,
}

/// The largest packet the protocol can express: 268,435,455 bytes of body plus a
/// five-byte fixed header.
pub const PROTOCOL_MAX_PACKET_BYTES: usize = 268_435_455 + 5;

/// Default of [`Limits::max_queued_bytes`]: 16 MiB. Telemetry-sized messages (well
/// under 16 KiB) reach `max_queued_messages` (1000) first, so the byte bound changes
/// nothing for them; it caps what a session can hold at 1/64 of the 1000 × 1 MiB the
/// count alone allows at the default `max_packet_bytes`, and still takes 16 messages
/// of that maximum size.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_packet_bytes: 1024 * 1024,
            max_topic_levels: 128,
            max_inflight: 100,
            max_queued_messages: 1000,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_subscriptions: 1000,
            topic_alias_maximum: 10,
        }
    }
}
