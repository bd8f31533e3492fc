//! Retained messages: stored, replaced, deleted, delivered on subscribe (also through
//! wildcards) with the RETAIN flag, and `$`-topics kept away from leading wildcards.

use shoal_core::ProtocolVersion::{V3_1_1, V5};

use super::rumqtt::Rumqtt4;
use super::MODERN;
use crate::harness::TestBroker;
use crate::raw::{Publish, RawClient};

/// Receives `n` PUBLISHes (acking them) and returns them sorted by topic.
fn receive_sorted(client: &mut RawClient, n: usize) -> Vec<Publish> {
    let mut got: Vec<Publish> = (0..n).map(|_| client.expect_publish_acked()).collect();
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    got
}

#[test]
fn retained_message_is_delivered_to_a_new_subscriber_with_retain_set() {
    // [MQTT-3.3.1-6] / [MQTT-3.3.1-8]: stored, and sent to new subscribers with RETAIN=1.
    let broker = TestBroker::start();
    for version in MODERN {
        let topic = format!("r/{version}");
        let mut publisher = RawClient::connect(broker.addr(), version, "r-pub");
        publisher.publish(&topic, b"kept", 1, true);
        publisher.disconnect();
        let mut sub = RawClient::connect(broker.addr(), version, "r-sub");
        sub.subscribe_one(&topic, 1);
        let got = sub.expect_publish_acked();
        assert_eq!((got.topic.as_str(), got.payload.as_slice()), (topic.as_str(), &b"kept"[..]));
        assert!(got.retain, "{version}: retained delivery without RETAIN flag");
        assert_eq!(got.qos, 1);
    }
}

#[test]
fn live_delivery_to_an_existing_subscriber_clears_retain() {
    // [MQTT-3.3.1-9] 3.1.1; v5 the same unless Retain As Published is set.
    let broker = TestBroker::start();
    for version in MODERN {
        let mut sub = RawClient::connect(broker.addr(), version, "live-sub");
        sub.subscribe_one("live/t", 0);
        let mut publisher = RawClient::connect(broker.addr(), version, "live-pub");
        publisher.publish("live/t", b"now", 1, true);
        let got = sub.expect_publish();
        assert_eq!(got.payload, b"now");
        assert!(!got.retain, "{version}: live delivery kept the RETAIN flag");
        // Clean up so the next version's subscriber starts without a retained message.
        publisher.publish("live/t", b"", 1, true);
        sub.expect_publish();
    }
}

#[test]
fn newer_retained_message_replaces_the_older() {
    let broker = TestBroker::start();
    let mut publisher = RawClient::connect(broker.addr(), V3_1_1, "rep-pub");
    publisher.publish("rep/t", b"old", 1, true);
    publisher.publish("rep/t", b"new", 1, true);
    // A non-retained publish does not touch the retained message.
    publisher.publish("rep/t", b"transient", 1, false);
    let mut sub = RawClient::connect(broker.addr(), V5, "rep-sub");
    sub.subscribe_one("rep/t", 1);
    sub.ping();
    let got = sub.expect_publish_acked();
    assert_eq!(got.payload, b"new");
    publisher.publish("rep/t", b"after", 0, false);
    assert_eq!(sub.expect_publish().payload, b"after", "more than one retained message");
}

#[test]
fn empty_retained_payload_deletes_the_retained_message() {
    // [MQTT-3.3.1-10] / [MQTT-3.3.1-11]: a zero-byte retained PUBLISH removes it, and is
    // itself not stored.
    let broker = TestBroker::start();
    let mut publisher = RawClient::connect(broker.addr(), V3_1_1, "del-pub");
    publisher.publish("del/a", b"doomed", 1, true);
    publisher.publish("del/a", b"", 1, true);
    publisher.publish("del/b", b"survivor", 1, true);
    let mut sub = RawClient::connect(broker.addr(), V3_1_1, "del-sub");
    sub.subscribe_one("del/#", 1);
    let got = sub.expect_publish_acked();
    assert_eq!((got.topic.as_str(), got.payload.as_slice()), ("del/b", &b"survivor"[..]));
    publisher.publish("del/z", b"sentinel", 1, false);
    assert_eq!(sub.expect_publish_acked().payload, b"sentinel", "deleted message came back");
}

#[test]
fn retained_messages_are_delivered_through_wildcards() {
    let broker = TestBroker::start();
    let mut publisher = RawClient::connect(broker.addr(), V3_1_1, "wild-pub");
    for topic in ["w/a/x", "w/b/x", "w/b/y", "other/x"] {
        publisher.publish(topic, topic.as_bytes(), 1, true);
    }
    for (filter, expected) in [
        ("w/+/x", vec!["w/a/x", "w/b/x"]),
        ("w/#", vec!["w/a/x", "w/b/x", "w/b/y"]),
        ("+/x", vec!["other/x"]),
        ("#", vec!["other/x", "w/a/x", "w/b/x", "w/b/y"]),
    ] {
        for version in MODERN {
            let mut sub = RawClient::connect(broker.addr(), version, "wild-sub");
            sub.subscribe_one(filter, 1);
            let got = receive_sorted(&mut sub, expected.len());
            let topics: Vec<&str> = got.iter().map(|p| p.topic.as_str()).collect();
            assert_eq!(topics, expected, "{version}: retained via {filter}");
            assert!(got.iter().all(|p| p.retain && p.payload == p.topic.as_bytes()));
            // Nothing more: a fresh publish is next.
            publisher.publish("w/a/x", b"live", 0, false);
            if filter != "+/x" {
                assert_eq!(sub.expect_publish().payload, b"live", "{filter}: extra message");
            }
            sub.disconnect();
        }
    }
}

#[test]
fn retained_message_is_delivered_at_the_lower_of_stored_and_granted_qos() {
    let broker = TestBroker::start();
    let mut publisher = RawClient::connect(broker.addr(), V3_1_1, "rq-pub");
    publisher.publish("rq/t", b"q2", 2, true);
    for granted in 0..=2u8 {
        let mut sub = RawClient::connect(broker.addr(), V5, "rq-sub");
        sub.subscribe_one("rq/t", granted);
        let got = sub.expect_publish_acked();
        assert_eq!((got.qos, got.retain), (granted, true));
        sub.disconnect();
    }
}

#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards() {
    // [MQTT-4.7.2-1]: `#` and `+/...` do not match topics starting with `$`.
    let broker = TestBroker::start();
    let mut publisher = RawClient::connect(broker.addr(), V3_1_1, "sys-pub");
    publisher.publish("$foo/x", b"dollar", 1, true);
    publisher.publish("plain/x", b"plain", 1, true);
    for version in MODERN {
        let mut sub = RawClient::connect(broker.addr(), version, "sys-sub");
        sub.subscribe_one("#", 1);
        sub.subscribe_one("+/x", 1);
        // If `#` or `+/x` matched `$foo/x`, its retained copy would come before the one
        // the explicit `$foo/#` subscription sends.
        sub.subscribe_one("$foo/#", 1);
        let mut got: Vec<String> = (0..3).map(|_| sub.expect_publish_acked().topic).collect();
        got.sort();
        assert_eq!(got, ["$foo/x", "plain/x", "plain/x"], "{version}: retained copies");
        let extra = sub.ping_then_unread();
        assert!(extra.is_empty(), "{version}: extra retained copies {extra:?}");
        sub.disconnect();

        let mut live = RawClient::connect(broker.addr(), version, "sys-live");
        live.subscribe_one("#", 1);
        live.subscribe_one("+/y", 1);
        // Drain the retained `plain/x` the `#` subscription brings.
        assert_eq!(live.expect_publish_acked().topic, "plain/x");
        publisher.publish("$foo/y", b"hidden", 1, false);
        publisher.publish("plain/y", b"sentinel", 1, false);
        let got = live.expect_publish_acked();
        assert_eq!(got.topic, "plain/y", "{version}: `#` or `+/y` matched `$foo/y`");
    }
}

#[test]
fn rumqttc_sees_retained_message_published_by_raw_client() {
    let broker = TestBroker::start();
    let mut publisher = RawClient::connect(broker.addr(), V5, "rr-pub");
    publisher.publish("rr/t", b"for rumqttc", 1, true);
    let sub = Rumqtt4::connect(broker.addr(), "rr-sub");
    sub.subscribe("rr/#", rumqttc::QoS::AtLeastOnce);
    let got = sub.expect_publish();
    assert!(got.retain);
    assert_eq!(&got.payload[..], b"for rumqttc");
}
