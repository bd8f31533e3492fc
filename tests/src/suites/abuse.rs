//! Limits against abuse: the per-address connection rate, the per-client publish rate
//! (messages and bytes a second), and the CONNACK refusal over `max_connections`.
//!
//! Rates are asserted without timing: a client sends far more than the limit as fast
//! as it can, so on any machine it goes over well inside the one-second burst.

use shoal_core::ProtocolVersion::{V3_1_1, V5};

use super::MODERN;
use crate::harness::TestBroker;
use crate::raw::wire::{self, ConnectOptions};
use crate::raw::{Incoming, RawClient, RecvError, DEADLINE};

#[test]
fn connection_rate_per_address_refuses_the_excess_at_accept() {
    let broker = TestBroker::with_config("[limits]\nmax_connection_rate_per_ip = 2");
    let mut kept = Vec::new();
    let mut refused = 0;
    for i in 0..20 {
        let opts = ConnectOptions::new(V3_1_1, &format!("rate-{i}"));
        match RawClient::connect_raw(broker.addr(), &opts) {
            (c, Ok(Incoming::ConnAck { code: 0, .. })) => kept.push(c),
            (_, Err(RecvError::Closed)) => refused += 1,
            (_, other) => panic!("connect {i}: {other:?}"),
        }
    }
    assert!(refused > 0, "20 connects in a burst with a limit of 2/s were all accepted");
    assert!(kept.len() >= 2, "the burst allowance admitted {}", kept.len());
    for c in &mut kept {
        c.ping();
    }
}

/// Publishes QoS 0 messages of `payload` bytes until the broker closes the connection;
/// returns the DISCONNECT reason seen, if any.
fn publish_until_closed(client: &mut RawClient, payload: &[u8]) -> Option<u8> {
    let version = client.version();
    for _ in 0..10_000 {
        if client.try_send(&wire::publish(version, "flood", payload, 0, false, false, 0)).is_err() {
            break;
        }
    }
    client.expect_closed_with_reason(DEADLINE)
}

#[test]
fn publish_message_rate_disconnects_with_0x96() {
    let broker = TestBroker::with_config("[limits]\nmax_publish_rate = 20");
    let mut sub = RawClient::connect(broker.addr(), V5, "rate-sub");
    sub.subscribe_one("flood", 0);
    for version in MODERN {
        let mut flood = RawClient::connect(broker.addr(), version, "flooder");
        let reason = publish_until_closed(&mut flood, b"x");
        // v5: DISCONNECT Message rate too high; 3.x: closed (and logged).
        assert_eq!(reason, if version.is_v5() { Some(0x96) } else { None }, "{version}");
    }
    // A client within the limit is unaffected.
    let mut calm = RawClient::connect(broker.addr(), V3_1_1, "calm");
    calm.publish("flood", b"one", 1, false);
    sub.ping();
}

#[test]
fn publish_byte_rate_disconnects_with_quota_exceeded() {
    let broker = TestBroker::with_config("[limits]\nmax_publish_bytes_rate = 10000");
    let mut flood = RawClient::connect(broker.addr(), V5, "bytes");
    assert_eq!(publish_until_closed(&mut flood, &[7; 1000]), Some(0x97));
}

#[test]
fn over_max_connections_the_client_is_told_in_connack() {
    let broker = TestBroker::with_config("[limits]\nmax_connections = 2");
    let _held: Vec<RawClient> =
        (0..2).map(|i| RawClient::connect(broker.addr(), V5, &format!("held-{i}"))).collect();
    // 3.x: 3 Server unavailable; v5: 0x97 Quota exceeded. Then the socket is closed.
    for (version, code) in [(V3_1_1, 3), (V5, 0x97)] {
        let (mut c, reply) =
            RawClient::connect_raw(broker.addr(), &ConnectOptions::new(version, "one-too-many"));
        assert!(
            matches!(reply, Ok(Incoming::ConnAck { code: c, .. }) if c == code),
            "{version}: {reply:?}"
        );
        c.expect_closed(DEADLINE);
    }
}
