//! QoS 0/1/2 delivery: round trips with rumqttc and the raw client in both directions,
//! the QoS downgrade rule, packet ids, the in-flight window, QoS 2 duplicate
//! suppression, per-publisher ordering and overlapping subscriptions.

use std::collections::HashSet;
use std::thread;
use std::time::Duration;

use shoal_core::ProtocolVersion::{V3_1_1, V5};

use super::rumqtt::{Rumqtt4, Rumqtt5, V5QoS};
use super::MODERN;
use crate::harness::TestBroker;
use crate::raw::wire::{self, kind};
use crate::raw::{Incoming, RawClient};

fn v4_qos(qos: u8) -> rumqttc::QoS {
    match qos {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn v5_qos(qos: u8) -> V5QoS {
    match qos {
        0 => V5QoS::AtMostOnce,
        1 => V5QoS::AtLeastOnce,
        _ => V5QoS::ExactlyOnce,
    }
}

#[test]
fn raw_publisher_reaches_rumqttc_subscriber_at_every_qos() {
    let broker = TestBroker::start();
    let sub4 = Rumqtt4::connect(broker.addr(), "rq-sub4");
    let sub5 = Rumqtt5::connect(broker.addr(), "rq-sub5");
    sub4.subscribe("rq/#", rumqttc::QoS::ExactlyOnce);
    sub5.subscribe("rq/#", V5QoS::ExactlyOnce);
    for version in MODERN {
        let mut publisher = RawClient::connect(broker.addr(), version, "rq-pub");
        for qos in 0..=2u8 {
            let topic = format!("rq/{version}/{qos}");
            publisher.publish(&topic, topic.as_bytes(), qos, false);
            let got = sub4.expect_publish();
            assert_eq!((got.topic.as_str(), got.qos), (topic.as_str(), v4_qos(qos)));
            assert_eq!(&got.payload[..], topic.as_bytes());
            let got = sub5.expect_publish();
            assert_eq!((&got.topic[..], got.qos), (topic.as_bytes(), v5_qos(qos)));
            assert_eq!(&got.payload[..], topic.as_bytes());
        }
    }
}

#[test]
fn rumqttc_publisher_reaches_raw_subscriber_at_every_qos() {
    let broker = TestBroker::start();
    let pub4 = Rumqtt4::connect(broker.addr(), "qr-pub4");
    let pub5 = Rumqtt5::connect(broker.addr(), "qr-pub5");
    for version in MODERN {
        let mut sub = RawClient::connect(broker.addr(), version, "qr-sub");
        sub.subscribe_one("qr/#", 2);
        for qos in 0..=2u8 {
            pub4.publish("qr/v4", v4_qos(qos), false, b"from v4");
            let got = sub.expect_publish_acked();
            assert_eq!((got.topic.as_str(), got.qos), ("qr/v4", qos), "{version}");
            assert_eq!(got.payload, b"from v4");
            pub5.publish("qr/v5", v5_qos(qos), false, b"from v5");
            let got = sub.expect_publish_acked();
            assert_eq!((got.topic.as_str(), got.qos), ("qr/v5", qos), "{version}");
            assert_eq!(got.payload, b"from v5");
        }
        sub.disconnect();
    }
}

#[test]
fn rumqttc_v311_and_v5_clients_exchange_qos2_messages() {
    let broker = TestBroker::start();
    let a = Rumqtt4::connect(broker.addr(), "x-v4");
    let b = Rumqtt5::connect(broker.addr(), "x-v5");
    a.subscribe("x/to-v4", rumqttc::QoS::ExactlyOnce);
    b.subscribe("x/to-v5", V5QoS::ExactlyOnce);
    for i in 0..10u8 {
        a.publish("x/to-v5", rumqttc::QoS::ExactlyOnce, false, &[i]);
        assert_eq!(&b.expect_publish().payload[..], &[i]);
        b.publish("x/to-v4", V5QoS::ExactlyOnce, false, &[i]);
        assert_eq!(&a.expect_publish().payload[..], &[i]);
    }
}

#[test]
fn delivered_qos_is_the_minimum_of_publish_and_granted_qos() {
    // [MQTT-3.8.4-8] 3.1.1 / v5 3.8.4: delivered QoS = min(published, granted).
    let broker = TestBroker::start();
    for version in MODERN {
        for granted in 0..=2u8 {
            let mut sub = RawClient::connect(broker.addr(), version, "min-sub");
            sub.subscribe_one("min/t", granted);
            let mut publisher = RawClient::connect(broker.addr(), version, "min-pub");
            for published in 0..=2u8 {
                publisher.publish("min/t", &[published], published, false);
                let got = sub.expect_publish_acked();
                assert_eq!(got.payload, [published]);
                assert_eq!(
                    got.qos,
                    published.min(granted),
                    "{version}: published {published}, granted {granted}"
                );
                // [MQTT-2.3.1-5] QoS 0 carries no packet id; QoS > 0 a non-zero one.
                assert_eq!(got.packet_id.is_some(), got.qos > 0);
                assert!(!got.dup, "first delivery with DUP set");
            }
            sub.disconnect();
            publisher.disconnect();
        }
    }
}

#[test]
fn outbound_packet_ids_are_nonzero_and_unique_among_inflight() {
    let broker = TestBroker::with_config("[limits]\nmax_inflight = 100");
    for version in MODERN {
        let mut sub = RawClient::connect(broker.addr(), version, "ids-sub");
        sub.subscribe_one("ids/t", 2);
        let mut publisher = RawClient::connect(broker.addr(), version, "ids-pub");
        let mut ids = HashSet::new();
        for i in 0..40u8 {
            publisher.publish("ids/t", &[i], 1 + i % 2, false);
            // Withhold every ack: all 40 stay in flight (the window is 100).
            let got = sub.expect_publish();
            let id = got.packet_id.expect("QoS > 0 without packet id");
            assert_ne!(id, 0, "[MQTT-2.3.1-1] packet id 0");
            assert!(ids.insert(id), "{version}: packet id {id} reused while in flight");
        }
    }
}

#[test]
fn inflight_window_bounds_unacknowledged_qos1_messages() {
    const WINDOW: usize = 5;
    let broker = TestBroker::with_config(&format!("[limits]\nmax_inflight = {WINDOW}"));
    for version in MODERN {
        let mut sub = RawClient::connect(broker.addr(), version, "window-sub");
        sub.subscribe_one("w/t", 1);
        let mut publisher = RawClient::connect(broker.addr(), version, "window-pub");
        for i in 0..20u8 {
            publisher.publish("w/t", &[i], 1, false);
        }
        // Every PUBACK to the publisher is in, so all 20 are routed. Collect the
        // unacked PUBLISHes the subscriber has; the PINGRESP barrier flushes them out.
        let mut held = Vec::new();
        for _ in 0..WINDOW {
            held.push(sub.expect_publish());
        }
        sub.ping();
        match sub.recv(Duration::from_millis(300)) {
            Ok(Incoming::Publish(p)) => {
                panic!("{version}: PUBLISH {:?} beyond the in-flight window of {WINDOW}", p.payload)
            }
            Ok(other) => panic!("{version}: unexpected {other:?}"),
            Err(_) => {}
        }
        // Each ack opens one slot; every message arrives, in order.
        let mut payloads: Vec<u8> = held.iter().map(|p| p.payload[0]).collect();
        for p in held {
            sub.ack(&p);
        }
        while payloads.len() < 20 {
            payloads.push(sub.expect_publish_acked().payload[0]);
        }
        assert_eq!(payloads, (0..20).collect::<Vec<u8>>(), "{version}");
        sub.disconnect();
        publisher.disconnect();
    }
}

#[test]
fn inbound_qos2_resent_before_pubrel_is_delivered_once() {
    // [MQTT-4.3.3-2] (3.1.1 method B): until PUBREL, a PUBLISH with the same packet id
    // is not a new message.
    let broker = TestBroker::start();
    for version in MODERN {
        let mut sub = RawClient::connect(broker.addr(), version, "dup2-sub");
        sub.subscribe_one("dup2/t", 2);
        let mut publisher = RawClient::connect(broker.addr(), version, "dup2-pub");
        publisher.send(&wire::publish(version, "dup2/t", b"once", 2, false, false, 7));
        publisher.wait_for("PUBREC", |p| matches!(p, Incoming::PubRec(7, _)));
        publisher.send(&wire::publish(version, "dup2/t", b"once", 2, false, true, 7));
        publisher.wait_for("PUBREC", |p| matches!(p, Incoming::PubRec(7, _)));
        publisher.send(&wire::ack(kind::PUBREL, 7));
        publisher.wait_for("PUBCOMP", |p| matches!(p, Incoming::PubComp(7, _)));
        publisher.publish("dup2/t", b"sentinel", 2, false);
        assert_eq!(sub.expect_publish_acked().payload, b"once", "{version}");
        assert_eq!(sub.expect_publish_acked().payload, b"sentinel", "{version}: duplicate");
        sub.disconnect();
    }
}

#[test]
fn inbound_qos2_packet_id_is_reusable_after_pubcomp() {
    let broker = TestBroker::start();
    let mut sub = RawClient::connect(broker.addr(), V3_1_1, "reuse-sub");
    sub.subscribe_one("reuse/t", 2);
    let mut publisher = RawClient::connect(broker.addr(), V3_1_1, "reuse-pub");
    for payload in [b"first", b"again"] {
        publisher.send(&wire::publish(V3_1_1, "reuse/t", payload, 2, false, false, 9));
        publisher.wait_for("PUBREC", |p| matches!(p, Incoming::PubRec(9, _)));
        publisher.send(&wire::ack(kind::PUBREL, 9));
        publisher.wait_for("PUBCOMP", |p| matches!(p, Incoming::PubComp(9, _)));
        assert_eq!(sub.expect_publish_acked().payload, payload);
    }
}

#[test]
fn ten_thousand_qos1_messages_keep_publisher_order() {
    const COUNT: u32 = 10_000;
    let broker = TestBroker::with_config("[limits]\nmax_queued_messages = 20000");
    for version in [V3_1_1, V5] {
        let mut sub = RawClient::connect(broker.addr(), version, "order-sub");
        sub.subscribe_one("order/t", 1);
        let addr = broker.addr();
        let publisher = thread::spawn(move || {
            let mut publisher = RawClient::connect(addr, version, "order-pub");
            for i in 0..COUNT {
                publisher.publish_no_wait("order/t", &i.to_be_bytes(), 1, false);
            }
            // Drain every PUBACK so the broker's writes to us never back up.
            let mut acked = 0;
            while acked < COUNT {
                if let Incoming::PubAck(..) = publisher.expect() {
                    acked += 1;
                }
            }
        });
        for expected in 0..COUNT {
            let got = sub.expect_publish_acked();
            let seq = u32::from_be_bytes(got.payload.as_slice().try_into().unwrap());
            assert_eq!(seq, expected, "{version}: out of order");
        }
        publisher.join().unwrap();
        sub.disconnect();
    }
}

#[test]
fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    // Shoal merges overlapping subscriptions of one session (docs/ARCHITECTURE.md,
    // "Delivery"); [MQTT-3.3.5-1] requires at least the maximum QoS of the matches.
    let broker = TestBroker::start();
    for version in MODERN {
        let mut sub = RawClient::connect(broker.addr(), version, "overlap-sub");
        assert_eq!(sub.subscribe(&[("a/#", 0), ("a/+", 1), ("a/b", 2)]), vec![0, 1, 2]);
        let mut publisher = RawClient::connect(broker.addr(), version, "overlap-pub");
        publisher.publish("a/b", b"two", 2, false);
        publisher.publish("a/b", b"one", 1, false);
        publisher.publish("a/c", b"plus", 2, false);
        publisher.publish("a/c/d", b"hash", 2, false);
        let got: Vec<(String, Vec<u8>, u8)> = (0..4)
            .map(|_| {
                let p = sub.expect_publish_acked();
                (p.topic, p.payload, p.qos)
            })
            .collect();
        let expected = [
            ("a/b", &b"two"[..], 2u8),
            ("a/b", b"one", 1),
            ("a/c", b"plus", 1),
            ("a/c/d", b"hash", 0),
        ]
        .map(|(t, p, q)| (t.to_owned(), p.to_vec(), q));
        assert_eq!(got, expected, "{version}: one copy each, at the highest matching QoS");
        sub.disconnect();
    }
}

#[test]
fn qos0_fans_out_to_many_subscribers() {
    let broker = TestBroker::start();
    let mut subs: Vec<RawClient> = (0..20)
        .map(|i| {
            let mut s = RawClient::connect(broker.addr(), MODERN[i % 2], &format!("fan-{i}"));
            s.subscribe_one("fan/t", 0);
            s
        })
        .collect();
    let mut publisher = RawClient::connect(broker.addr(), V5, "fan-pub");
    for i in 0..10u8 {
        publisher.publish("fan/t", &[i], 0, false);
    }
    for sub in &mut subs {
        for i in 0..10u8 {
            assert_eq!(sub.expect_publish().payload, [i]);
        }
    }
}

#[test]
fn pubrel_and_pubrec_for_an_unknown_packet_id_are_answered_not_found() {
    // PUBREL is answered with PUBCOMP even when the id is unknown (the PUBCOMP may have
    // been lost), and PUBREC with PUBREL; v5 says so with 0x92 Packet Identifier not
    // found and a Reason String, as for its other reason-coded acks. 3.1.1 has neither:
    // the ack is the packet id alone.
    let broker = TestBroker::start();
    for version in MODERN {
        let mut client = RawClient::connect(broker.addr(), version, "stray-acks");
        for (sent, answer) in [(kind::PUBREL, 0x70), (kind::PUBREC, 0x62)] {
            client.send(&wire::ack(sent, 4242));
            let frame = client.expect_frame();
            let [first, _, hi, lo, rest @ ..] = frame.as_slice() else {
                panic!("{version}: short ack {frame:02x?}")
            };
            assert_eq!((*first, u16::from_be_bytes([*hi, *lo])), (answer, 4242), "{frame:02x?}");
            if version.is_v5() {
                // Reason code, property length, then Reason String (0x1F).
                let [0x92, _, 0x1F, _, _, text @ ..] = rest else {
                    panic!("{version}: no 0x92 with Reason String: {frame:02x?}")
                };
                let text = String::from_utf8_lossy(text);
                assert!(text.contains("packet identifier"), "{text}");
            } else {
                assert!(rest.is_empty(), "3.1.1 ack with a body: {frame:02x?}");
            }
        }
        client.ping();
    }
}

#[test]
fn large_messages_round_trip_intact() {
    let broker = TestBroker::start();
    let payload: Vec<u8> = (0..900 * 1024u32).map(|i| (i * 7 + i / 251) as u8).collect();
    for version in MODERN {
        let mut sub = RawClient::connect(broker.addr(), version, "big-sub");
        sub.subscribe_one("big/t", 2);
        let mut publisher = RawClient::connect(broker.addr(), version, "big-pub");
        publisher.publish("big/t", &payload, 2, false);
        let got = sub.expect_publish_acked();
        assert!(got.payload == payload, "{version}: payload corrupted");
    }
}
