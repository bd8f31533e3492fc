//! The broker's own Receive Maximum (issue 5): a v5 client may have at most that many
//! QoS 1 and QoS 2 PUBLISHes unacknowledged [MQTT-3.3.4-9]; one more gets DISCONNECT
//! 0x93, and a client that stays at the limit is served.
//!
//! A QoS 2 PUBLISH stays unacknowledged until PUBCOMP (here: until the client's PUBREL).
//! The broker answers a QoS 1 PUBLISH at once, except with the durable store on, where
//! its PUBACK waits for the commit of what the message wrote: the tests with a
//! persistent subscriber send several PUBLISHes in one write, so they are handled in
//! one loop iteration, before any commit can release their PUBACKs.
//!
//! (Going over it with QoS 2 alone is `mqtt5::inbound_qos2_beyond_the_brokers_receive_maximum_is_refused`.)

use shoal_core::ProtocolVersion::V5;
use tempfile::TempDir;

use crate::harness::TestBroker;
use crate::raw::wire::{self, ConnectOptions};
use crate::raw::{Incoming, RawClient, DEADLINE};

/// The Receive Maximum the tests' brokers advertise.
const MAX: u16 = 3;

/// A broker with Receive Maximum [`MAX`]; with the durable store in `data` when given
/// (one worker, so the persistent subscriber's writes are this worker's own).
fn broker(data: Option<&TempDir>) -> TestBroker {
    let limits = format!("[limits]\nmax_inflight = {MAX}\n");
    match data {
        None => TestBroker::with_config(&limits),
        Some(dir) => TestBroker::with_config(&format!(
            "workers = 1\npersistence = true\ndata_dir = {:?}\n{limits}",
            dir.path().to_str().unwrap()
        )),
    }
}

/// Sends `n` QoS `qos` PUBLISHes to `topic` in one write; returns their packet ids.
fn burst(client: &mut RawClient, topic: &str, qos: u8, n: u16) -> Vec<u16> {
    let mut bytes = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = client.next_packet_id();
        bytes.extend(wire::publish(V5, topic, &id.to_be_bytes(), qos, false, false, id));
        ids.push(id);
    }
    client.send(&bytes);
    ids
}

/// A persistent v5 subscriber to `topic` at QoS 1: every QoS 1 message to it is written
/// to the store, so the publisher's PUBACK is held until the commit.
fn persistent_subscriber(broker: &TestBroker, topic: &str) -> RawClient {
    let (mut sub, _) =
        RawClient::connect_with(broker.addr(), &ConnectOptions::persistent(V5, "keeper"));
    sub.subscribe_one(topic, 1);
    sub
}

#[test]
fn qos2_exchanges_exactly_at_our_receive_maximum_are_served() {
    let broker = broker(None);
    let mut client = RawClient::connect(broker.addr(), V5, "at-limit");
    for _round in 0..3 {
        let ids = burst(&mut client, "rx/t", 2, MAX);
        for &id in &ids {
            client.wait_for("PUBREC", |p| matches!(p, Incoming::PubRec(i, 0) if *i == id));
        }
        for &id in &ids {
            client.send(&wire::ack(wire::kind::PUBREL, id));
            client.wait_for("PUBCOMP", |p| matches!(p, Incoming::PubComp(i, 0) if *i == id));
        }
    }
    assert_eq!(client.ping_then_unread(), [], "still connected, nothing else sent");
}

#[test]
fn qos1_beyond_our_receive_maximum_of_open_qos2_exchanges_is_refused() {
    // QoS 1 and QoS 2 count together: MAX exchanges awaiting PUBREL leave no room.
    let broker = broker(None);
    let mut client = RawClient::connect(broker.addr(), V5, "mixed");
    for id in burst(&mut client, "rx/t", 2, MAX) {
        client.wait_for("PUBREC", |p| matches!(p, Incoming::PubRec(i, 0) if *i == id));
    }
    let _ = client.try_send(&wire::publish(V5, "rx/t", b"one too many", 1, false, false, 99));
    assert_eq!(client.expect_closed_with_reason(DEADLINE), Some(0x93));
}

#[test]
fn qos1_beyond_our_receive_maximum_while_pubacks_are_held_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let broker = broker(Some(&data));
    let _sub = persistent_subscriber(&broker, "held/t");
    let mut client = RawClient::connect(broker.addr(), V5, "eager");
    burst(&mut client, "held/t", 1, MAX + 1);
    let seen = client.expect_closed(DEADLINE);
    assert!(seen.contains(&Incoming::Disconnect(0x93)), "expected DISCONNECT 0x93, got {seen:?}");
}

#[test]
fn held_pubacks_and_open_qos2_exchanges_count_together() {
    let data = tempfile::tempdir().unwrap();
    let broker = broker(Some(&data));
    let _sub = persistent_subscriber(&broker, "held/t");
    let mut client = RawClient::connect(broker.addr(), V5, "eager-mixed");
    for id in burst(&mut client, "held/t", 2, MAX - 1) {
        client.wait_for("PUBREC", |p| matches!(p, Incoming::PubRec(i, 0) if *i == id));
    }
    // One QoS 1 fits; its PUBACK is held, so the second is one too many.
    burst(&mut client, "held/t", 1, 2);
    let seen = client.expect_closed(DEADLINE);
    assert!(seen.contains(&Incoming::Disconnect(0x93)), "expected DISCONNECT 0x93, got {seen:?}");
}

#[test]
fn a_client_at_our_receive_maximum_while_pubacks_are_held_is_served() {
    let data = tempfile::tempdir().unwrap();
    let broker = broker(Some(&data));
    let mut sub = persistent_subscriber(&broker, "held/t");
    let mut client = RawClient::connect(broker.addr(), V5, "patient");
    let mut sent = 0;
    for _round in 0..5 {
        for id in burst(&mut client, "held/t", 1, MAX) {
            client.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(i, 0) if *i == id));
            sent += 1;
        }
    }
    // At the limit with both kinds: MAX - 1 QoS 2 exchanges open, one QoS 1.
    let open = burst(&mut client, "held/t", 2, MAX - 1);
    for &id in &open {
        client.wait_for("PUBREC", |p| matches!(p, Incoming::PubRec(i, 0) if *i == id));
    }
    for id in burst(&mut client, "held/t", 1, 1) {
        client.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(i, 0) if *i == id));
    }
    for id in open {
        client.send(&wire::ack(wire::kind::PUBREL, id));
        client.wait_for("PUBCOMP", |p| matches!(p, Incoming::PubComp(i, 0) if *i == id));
    }
    sent += MAX;
    assert_eq!(client.ping_then_unread(), [], "still connected, nothing else sent");
    for _ in 0..sent {
        sub.expect_publish_acked();
    }
}
