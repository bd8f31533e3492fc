//! Shoal's sans-I/O MQTT core.
//!
//! Everything a broker or client needs to *speak* MQTT 3.1, 3.1.1 and 5.0, and nothing
//! that touches the outside world: no sockets, no threads, no clocks (time is passed in
//! as `Instant`s), no logging. That keeps every line here unit-testable, property-testable
//! and fuzzable, and lets the server and the load generator share one implementation.
//!
//! # Layout
//! - [`protocol`]: versions, QoS, packet ids, reason codes.
//! - [`codec`]: incremental decoding and allocation-free encoding of every packet.
//! - [`topic`]: validated topic names and filters, `$share` parsing, the subscription trie.
//! - [`limits`]: the protocol limits a connection is held to.
//! - [`session`]: the per-client session and QoS state machine (`handle_*` / `poll_*`).
//! - [`auth`]: the order of MQTT 5 enhanced authentication (AUTH) exchanges.
//!
//! Sockets, TLS and event loops live in `shoal-server`; the load generator's client in
//! `shoal-loadgen`.

#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod auth;
pub mod codec;
#[doc(hidden)]
pub mod fuzz_support;
pub mod limits;
pub mod protocol;
pub mod session;
pub mod topic;

pub use codec::Packet;
pub use limits::Limits;
pub use protocol::{PacketId, ProtocolVersion, QoS, ReasonCode};
pub use topic::{SubscriptionTrie, TopicFilter, TopicName};
