//! Persistent sessions: subscriptions and queued QoS 1/2 messages survive a reconnect,
//! unacknowledged deliveries are resent with DUP, QoS 2 resumes at PUBREL, a clean
//! session starts empty, and takeover hands queued messages over exactly once.

use std::collections::BTreeMap;

use shoal_core::ProtocolVersion::{self, V3_1_1, V5};

use super::MODERN;
use crate::harness::TestBroker;
use crate::raw::wire::{self, kind, ConnectOptions};
use crate::raw::{Incoming, RawClient, DEADLINE};

fn persistent(broker: &TestBroker, version: ProtocolVersion, id: &str) -> (RawClient, bool) {
    RawClient::connect_with(broker.addr(), &ConnectOptions::persistent(version, id))
}

#[test]
fn persistent_session_keeps_subscriptions_across_reconnect() {
    let broker = TestBroker::start();
    for version in MODERN {
        let (mut sub, present) = persistent(&broker, version, "keeper");
        assert!(!present, "{version}: new session reported as present");
        sub.subscribe_one("keep/t", 1);
        sub.disconnect();
        // [MQTT-3.2.2-2] resumed session → Session Present 1.
        let (mut sub, present) = persistent(&broker, version, "keeper");
        assert!(present, "{version}: resumed session not reported as present");
        let mut publisher = RawClient::connect(broker.addr(), version, "keep-pub");
        publisher.publish("keep/t", b"still subscribed", 1, false);
        assert_eq!(sub.expect_publish_acked().payload, b"still subscribed");
        // End the session so the next version starts fresh.
        sub.disconnect();
        RawClient::connect(broker.addr(), version, "keeper").disconnect();
    }
}

#[test]
fn qos1_and_qos2_messages_are_queued_while_offline() {
    let broker = TestBroker::start();
    for version in MODERN {
        let (mut sub, _) = persistent(&broker, version, "offline");
        sub.subscribe_one("off/t", 2);
        sub.disconnect();
        let mut publisher = RawClient::connect(broker.addr(), version, "off-pub");
        for i in 0..10u8 {
            publisher.publish("off/t", &[i], 1 + i % 2, false);
        }
        let (mut sub, present) = persistent(&broker, version, "offline");
        assert!(present);
        for i in 0..10u8 {
            let got = sub.expect_publish_acked();
            assert_eq!((got.payload.as_slice(), got.qos), (&[i][..], 1 + i % 2), "{version}");
        }
        publisher.publish("off/t", b"sentinel", 1, false);
        assert_eq!(sub.expect_publish_acked().payload, b"sentinel", "{version}: duplicates");
        sub.disconnect();
        RawClient::connect(broker.addr(), version, "offline").disconnect();
    }
}

#[test]
fn qos1_publish_is_redelivered_with_dup_after_reconnect() {
    // [MQTT-4.4.0-1] on reconnect with a persistent session, unacknowledged PUBLISH
    // packets are resent (3.1.1: with DUP=1 [MQTT-3.3.1-1]).
    let broker = TestBroker::start();
    for version in MODERN {
        let (mut sub, _) = persistent(&broker, version, "unacked");
        sub.subscribe_one("un/t", 1);
        let mut publisher = RawClient::connect(broker.addr(), version, "un-pub");
        publisher.publish("un/t", b"a", 1, false);
        publisher.publish("un/t", b"b", 1, false);
        let first = sub.expect_publish();
        let second = sub.expect_publish();
        sub.ack(&first);
        sub.ping();
        sub.drop_connection();
        let (mut sub, present) = persistent(&broker, version, "unacked");
        assert!(present);
        let again = sub.expect_publish_acked();
        assert_eq!(again.payload, b"b", "{version}: wrong message redelivered");
        assert!(again.dup, "{version}: redelivery without DUP");
        assert_eq!(again.packet_id, second.packet_id, "{version}: packet id changed");
        publisher.publish("un/t", b"sentinel", 1, false);
        let next = sub.expect_publish_acked();
        assert_eq!(next.payload, b"sentinel", "{version}: acked message redelivered");
        sub.disconnect();
        RawClient::connect(broker.addr(), version, "unacked").disconnect();
    }
}

#[test]
fn qos2_pubrel_is_resent_after_reconnect_in_pubrec_state() {
    // [MQTT-4.4.0-1]: unacknowledged PUBREL packets are resent on reconnect, and the
    // PUBLISH is not (it was acknowledged by PUBREC).
    let broker = TestBroker::start();
    for version in MODERN {
        let (mut sub, _) = persistent(&broker, version, "rel");
        sub.subscribe_one("rel/t", 2);
        let mut publisher = RawClient::connect(broker.addr(), version, "rel-pub");
        publisher.publish("rel/t", b"q2", 2, false);
        let got = sub.expect_publish();
        let id = got.packet_id.unwrap();
        sub.send(&wire::ack(kind::PUBREC, id));
        sub.wait_for("PUBREL", |p| matches!(p, Incoming::PubRel(i, _) if *i == id));
        sub.drop_connection();

        let (mut sub, present) = persistent(&broker, version, "rel");
        assert!(present);
        match sub.expect() {
            Incoming::PubRel(i, _) => assert_eq!(i, id, "{version}: PUBREL for another id"),
            other => panic!("{version}: expected PUBREL resend, got {other:?}"),
        }
        sub.send(&wire::ack(kind::PUBCOMP, id));
        publisher.publish("rel/t", b"sentinel", 2, false);
        let next = sub.expect_publish_acked();
        assert_eq!(next.payload, b"sentinel", "{version}: PUBLISH resent after PUBREC");
        sub.disconnect();
        RawClient::connect(broker.addr(), version, "rel").disconnect();
    }
}

#[test]
fn clean_session_connack_reports_no_session_present() {
    // [MQTT-3.2.2-1] 3.1.1 CleanSession=1 / [MQTT-3.2.2-2] v5 Clean Start=1: the
    // server MUST set Session Present to 0, even when it had a session to discard.
    let broker = TestBroker::start();
    for version in MODERN {
        let (mut sub, _) = persistent(&broker, version, "forgetful");
        sub.subscribe_one("forget/t", 1);
        sub.disconnect();
        let (sub, present) =
            RawClient::connect_with(broker.addr(), &ConnectOptions::new(version, "forgetful"));
        assert!(!present, "{version}: clean session reported Session Present");
        sub.disconnect();
    }
}

#[test]
fn clean_session_discards_previous_subscriptions_and_queue() {
    // [MQTT-3.1.2-6] 3.1.1 CleanSession=1; v5 Clean Start=1 [MQTT-3.1.2-4].
    let broker = TestBroker::start();
    for version in MODERN {
        let (mut sub, _) = persistent(&broker, version, "forgetful");
        sub.subscribe_one("forget/t", 1);
        sub.disconnect();
        let mut publisher = RawClient::connect(broker.addr(), version, "forget-pub");
        publisher.publish("forget/t", b"queued", 1, false);
        let (mut sub, _) =
            RawClient::connect_with(broker.addr(), &ConnectOptions::new(version, "forgetful"));
        sub.subscribe_one("forget/other", 1);
        publisher.publish("forget/t", b"unsubscribed", 1, false);
        publisher.publish("forget/other", b"sentinel", 1, false);
        let got = sub.expect_publish_acked();
        assert_eq!(got.payload, b"sentinel", "{version}: old session state survived");
        sub.disconnect();
    }
}

#[test]
fn v5_session_expiry_zero_ends_the_session_at_disconnect() {
    // v5 3.1.2.11.2: absent Session Expiry Interval means 0, the session ends with the
    // connection even with Clean Start 0.
    let broker = TestBroker::start();
    let mut opts = ConnectOptions::persistent(V5, "ephemeral");
    opts.session_expiry = None;
    let (mut sub, _) = RawClient::connect_with(broker.addr(), &opts);
    sub.subscribe_one("eph/t", 1);
    sub.disconnect();
    let (sub, present) = RawClient::connect_with(broker.addr(), &opts);
    assert!(!present, "session outlived a zero expiry interval");
    sub.disconnect();
}

#[test]
fn takeover_closes_the_old_connection_and_delivers_each_message_once() {
    let broker = TestBroker::start();
    for version in MODERN {
        let (mut old, _) = persistent(&broker, version, "contested");
        old.subscribe_one("take/t", 1);
        let mut publisher = RawClient::connect(broker.addr(), version, "take-pub");
        for i in 0..20u8 {
            publisher.publish("take/t", &[i], 1, false);
        }
        // The old connection acknowledges the first five of whatever it got.
        for _ in 0..5 {
            old.expect_publish_acked();
        }
        old.ping();
        let (mut new, present) = persistent(&broker, version, "contested");
        assert!(present, "{version}: takeover lost the session");
        let reason = old.expect_closed_with_reason(DEADLINE);
        if version.is_v5() {
            assert_eq!(reason, Some(0x8E), "v5: old connection's DISCONNECT reason");
        }
        publisher.publish("take/t", b"sentinel", 1, false);
        let mut counts: BTreeMap<u8, usize> = BTreeMap::new();
        loop {
            let got = new.expect_publish_acked();
            if got.payload == b"sentinel" {
                break;
            }
            *counts.entry(got.payload[0]).or_default() += 1;
        }
        let expected: BTreeMap<u8, usize> = (5..20).map(|i| (i, 1)).collect();
        assert_eq!(counts, expected, "{version}: messages 5..20 exactly once each");
        new.disconnect();
        RawClient::connect(broker.addr(), version, "contested").disconnect();
    }
}

#[test]
fn session_survives_many_reconnects_without_losing_messages() {
    let broker = TestBroker::start();
    let (mut sub, _) = persistent(&broker, V3_1_1, "flappy");
    sub.subscribe_one("flap/t", 1);
    sub.disconnect();
    let mut publisher = RawClient::connect(broker.addr(), V5, "flap-pub");
    let mut received = Vec::new();
    for round in 0..10u8 {
        publisher.publish("flap/t", &[round], 1, false);
        let (mut sub, present) = persistent(&broker, V3_1_1, "flappy");
        assert!(present, "round {round}");
        received.push(sub.expect_publish_acked().payload[0]);
        sub.ping();
        sub.disconnect();
    }
    assert_eq!(received, (0..10).collect::<Vec<u8>>());
}

#[test]
fn session_resumes_across_protocol_versions() {
    // A session created by a 3.1.1 client and resumed by a v5 client with the same id
    // (and back): queued messages arrive in the new connection's encoding.
    let broker = TestBroker::start();
    let (mut sub, _) = persistent(&broker, V3_1_1, "shape-shifter");
    sub.subscribe_one("shift/t", 1);
    sub.disconnect();
    let mut publisher = RawClient::connect(broker.addr(), V3_1_1, "shift-pub");
    publisher.publish("shift/t", b"to v5", 1, false);
    let (mut sub, present) = persistent(&broker, V5, "shape-shifter");
    assert!(present, "3.1.1 session not resumed by v5");
    let got = sub.expect_publish_acked();
    assert_eq!((got.topic.as_str(), got.payload.as_slice()), ("shift/t", &b"to v5"[..]));
    sub.disconnect();
    publisher.publish("shift/t", b"to 3.1.1", 1, false);
    let (mut sub, present) = persistent(&broker, V3_1_1, "shape-shifter");
    assert!(present, "v5 session not resumed by 3.1.1");
    let got = sub.expect_publish_acked();
    assert_eq!((got.topic.as_str(), got.payload.as_slice()), ("shift/t", &b"to 3.1.1"[..]));
    sub.disconnect();
}

#[test]
fn assigned_client_identifier_can_resume_its_session() {
    // v5: empty id + Clean Start 1 + Session Expiry > 0 gives a persistent session under
    // the assigned id; reconnecting with that id resumes it (whichever worker accepts).
    let broker = TestBroker::start();
    for attempt in 0..8 {
        let mut opts = ConnectOptions::new(V5, "");
        opts.session_expiry = Some(300);
        let (mut sub, reply) = RawClient::connect_raw(broker.addr(), &opts);
        let Ok(Incoming::ConnAck { code: 0, properties, .. }) = reply else { panic!("{reply:?}") };
        let assigned = wire::find_property(&properties, 0x12).expect("assigned id");
        let assigned = String::from_utf8(assigned.value.clone()).unwrap();
        sub.subscribe_one("assigned/t", 1);
        sub.disconnect();
        let mut publisher = RawClient::connect(broker.addr(), V5, "assigned-pub");
        publisher.publish("assigned/t", &[attempt], 1, false);
        let (mut sub, present) = persistent(&broker, V5, &assigned);
        assert!(present, "attempt {attempt}: session of {assigned:?} not found");
        assert_eq!(sub.expect_publish_acked().payload, [attempt]);
        sub.disconnect();
    }
}

#[test]
fn inbound_qos2_state_survives_a_publisher_reconnect() {
    // Session state includes inbound QoS 2 messages not yet released (4.1): a
    // publisher that reconnects and resends the same packet id (DUP) before PUBREL
    // must not cause a second delivery.
    let broker = TestBroker::start();
    for version in MODERN {
        let mut sub = RawClient::connect(broker.addr(), version, "q2-watch");
        sub.subscribe_one("q2/t", 2);
        let (mut publisher, _) = persistent(&broker, version, "q2-pub");
        publisher.send(&wire::publish(version, "q2/t", b"exactly once", 2, false, false, 5));
        publisher.wait_for("PUBREC", |p| matches!(p, Incoming::PubRec(5, _)));
        publisher.drop_connection();
        let (mut publisher, present) = persistent(&broker, version, "q2-pub");
        assert!(present);
        publisher.send(&wire::publish(version, "q2/t", b"exactly once", 2, false, true, 5));
        publisher.wait_for("PUBREC", |p| matches!(p, Incoming::PubRec(5, _)));
        publisher.send(&wire::ack(kind::PUBREL, 5));
        publisher.wait_for("PUBCOMP", |p| matches!(p, Incoming::PubComp(5, _)));
        publisher.publish("q2/t", b"sentinel", 2, false);
        assert_eq!(sub.expect_publish_acked().payload, b"exactly once", "{version}");
        assert_eq!(sub.expect_publish_acked().payload, b"sentinel", "{version}: duplicate");
        publisher.disconnect();
        RawClient::connect(broker.addr(), version, "q2-pub").disconnect();
    }
}

#[test]
fn resumed_session_does_not_resend_retained_messages() {
    // Retained messages go out when a subscription is made [MQTT-3.3.1-6], not when a
    // session carrying the subscription is resumed.
    let broker = TestBroker::start();
    let mut publisher = RawClient::connect(broker.addr(), V3_1_1, "rr-pub");
    publisher.publish("rr/t", b"retained", 1, true);
    let (mut sub, _) = persistent(&broker, V5, "rr-sub");
    sub.subscribe_one("rr/t", 1);
    assert_eq!(sub.expect_publish_acked().payload, b"retained");
    sub.disconnect();
    let (mut sub, present) = persistent(&broker, V5, "rr-sub");
    assert!(present);
    publisher.publish("rr/t", b"live", 1, false);
    assert_eq!(sub.expect_publish_acked().payload, b"live", "retained message resent");
}

#[test]
fn takeover_disconnect_reaches_an_old_connection_whose_socket_is_full() {
    // The old connection stopped reading with QoS 1 messages (100 in flight x 200 kB)
    // filling its socket and write buffer when the takeover comes: the write buffer
    // may take them all, and holds far more than the loopback socket buffers can
    // absorb later. DISCONNECT 0x8E is queued behind that output; the connection must
    // stay open until it is written (the client reads again), not be closed with the
    // DISCONNECT unsent. One worker: the publisher's PUBACKs prove the messages were
    // handed to the old connection first.
    let broker = TestBroker::with_config("workers = 1\n[limits]\nmax_outgoing_bytes = 33554432\n");
    let (mut old, _) = persistent(&broker, V5, "stuck");
    old.subscribe_one("full/t", 1);
    let mut publisher = RawClient::connect(broker.addr(), V5, "full-pub");
    let payload = vec![7u8; 200_000];
    for _ in 0..100 {
        publisher.publish("full/t", &payload, 1, false);
    }
    // Clean start: the old session (and what it still queues) goes.
    let (_new, _) = RawClient::connect_with(broker.addr(), &ConnectOptions::new(V5, "stuck"));
    let seen = old.expect_closed(DEADLINE);
    let publishes = seen.iter().filter(|p| matches!(p, Incoming::Publish(_))).count();
    assert!(publishes > 0, "nothing was delivered: {} packets", seen.len());
    assert_eq!(
        seen.last(),
        Some(&Incoming::Disconnect(0x8E)),
        "the old connection closed without DISCONNECT 0x8E after {publishes} publishes"
    );
}

#[test]
fn disconnect_then_immediate_reconnect_is_not_a_takeover() {
    // A client that sends DISCONNECT and connects again at once: the broker handles the
    // DISCONNECT first (will discarded, a zero-expiry session ended), even when the new
    // CONNECT reaches the client id's home worker before that worker read the old
    // socket. Taking it for a takeover published the will and resumed the session.
    let broker = TestBroker::start();
    let mut watcher = RawClient::connect(broker.addr(), V5, "bounce-watcher");
    watcher.subscribe_one("bounce/will", 0);
    for round in 0..200 {
        let will = format!("will {round}");
        let mut opts = ConnectOptions::persistent(V5, "bouncer").with_will(
            "bounce/will",
            will.as_bytes(),
            0,
            false,
        );
        // No Session Expiry Interval: 0, the session ends with the connection.
        opts.session_expiry = None;
        let (client, present) = RawClient::connect_with(broker.addr(), &opts);
        assert!(!present, "round {round}: the session outlived its DISCONNECT");
        client.disconnect();
    }
    let mut sentinel = RawClient::connect(broker.addr(), V5, "bounce-sentinel");
    sentinel.publish("bounce/will", b"sentinel", 0, false);
    let got = watcher.expect_publish();
    assert_eq!(crate::raw::text(&got.payload), "sentinel", "a will followed a normal DISCONNECT");
}
