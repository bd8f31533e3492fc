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
    /// Most subscriptions one client may hold.
    pub max_subscriptions: usize,
    /// Topic Alias Maximum sent to MQTT 5 clients: the aliases a client may set up
    /// per connection for the topics it publishes to (0: none).
    pub topic_alias_maximum: u16,
}

/// The largest packet the protocol can express: 268,435,455 bytes of body plus a
/// five-byte fixed header.
pub const PROTOCOL_MAX_PACKET_BYTES: usize = 268_435_455 + 5;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_packet_bytes: 1024 * 1024,
            max_topic_levels: 128,
            max_inflight: 100,
            max_queued_messages: 1000,
            max_subscriptions: 1000,
            topic_alias_maximum: 10,
        }
    }
}
