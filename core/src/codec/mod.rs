//! Wire codec for MQTT 3.1, 3.1.1 and 5.0.
//!
//! Decoding is incremental: [`decode`] looks at the fixed header first, refuses a
//! remaining length above the caller's maximum before any payload is buffered, and
//! returns `Ok(None)` ("need more") until a whole frame is in the buffer. It then splits
//! the frame off the buffer, so PUBLISH payloads are zero-copy `Bytes` slices of it.
//!
//! Encoding writes straight into the caller's `BytesMut`; nothing is allocated on the
//! way. Validation of what is allowed *when* (a CONNACK sent by a client, a second
//! CONNECT) is the session's job (`crate::session`), not the codec's.

mod ack;
mod connect;
mod control;
mod properties;
mod publish;
mod subscribe;

pub use ack::{PubAck, PubAckLike, PubComp, PubRec, PubRel};
pub use connect::{ConnAck, Connect, LastWill};
pub use control::{Auth, Disconnect};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, UserProperty, WillProperties,
};
pub use publish::Publish;
pub use subscribe::{
    RetainHandling, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe,
};

/// Every MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (1).
    Connect(Box<Connect>),
    /// CONNACK (2).
    ConnAck(ConnAck),
    /// PUBLISH (3).
    Publish(Publish),
    /// PUBACK (4).
    PubAck(PubAck),
    /// PUBREC (5).
    PubRec(PubRec),
    /// PUBREL (6).
    PubRel(PubRel),
    /// PUBCOMP (7).
    PubComp(PubComp),
    /// SUBSCRIBE (8).
    Subscribe(Subscribe),
    /// SUBACK (9).
    SubAck(SubAck),
    /// UNSUBSCRIBE (10).
    Unsubscribe(Unsubscribe),
    /// UNSUBACK (11).
    UnsubAck(UnsubAck),
    /// PINGREQ (12).
    PingReq,
    /// PINGRESP (13).
    PingResp,
    /// DISCONNECT (14).
    Disconnect(Disconnect),
    /// AUTH (15, v5 only).
    Auth(Auth),
}
