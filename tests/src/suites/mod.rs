//! Integration suites, one module per area of broker behaviour.
//!
//! Every test starts its own broker (so tests run in parallel and share no state) and
//! waits on observable events with deadlines. Negative checks ("X is not delivered") use
//! an in-order sentinel behind X instead of waiting for a quiet period: MQTT delivers one
//! publisher's messages in order, so once the sentinel arrives X would have too.

mod abuse;
mod alias;
mod auth;
mod connect;
mod durable;
mod enhanced_auth;
mod hooks;
mod interop;
mod limits;
mod listeners;
mod malformed;
mod mqtt5;
mod ops;
mod payload_format;
mod qos;
mod receive_maximum;
mod retain;
mod rumqtt;
mod session;
mod shared;
mod shutdown;
mod store_backlog;
mod store_full;
mod tls;
mod topics;
mod will;
mod will_delay;
mod will_store;
mod ws;

use shoal_core::ProtocolVersion;

/// 3.1.1 and 5.0, for tests that run once per version.
const MODERN: [ProtocolVersion; 2] = [ProtocolVersion::V3_1_1, ProtocolVersion::V5];
