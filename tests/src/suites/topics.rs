//! Topic names and filters over the wire: the matching rules of 4.7 checked through
//! real SUBSCRIBE/PUBLISH exchanges, including the corner cases (empty levels, `#`
//! matching its parent, non-ASCII levels, `$` topics).

use shoal_core::ProtocolVersion::{V3_1_1, V5};

use crate::harness::TestBroker;
use crate::raw::{Incoming, RawClient};

/// (filter, topic, matches?) — each row from a rule or example in 4.7.
const MATCHING: &[(&str, &str, bool)] = &[
    ("sport/tennis/player1/#", "sport/tennis/player1", true), // 4.7.1.2: `#` includes the parent
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", true),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true),
    ("sport/#", "sport", true),
    ("sport/tennis/+", "sport/tennis/player1", true),
    ("sport/tennis/+", "sport/tennis/player1/tournament", false),
    ("sport/+", "sport", false),
    ("sport/+", "sport/", true), // an empty level is a level
    ("+/+", "/finance", true),
    ("/+", "/finance", true),
    ("+", "/finance", false),
    ("a/+/b", "a//b", true),
    ("a//b", "a//b", true),
    ("a/b", "a/b/", false),
    ("A/b", "a/b", false),    // case-sensitive
    ("a b/c", "a b/c", true), // spaces are ordinary characters
    ("ünï/+/ködé", "ünï/x/ködé", true),
    // [MQTT-4.7.2-1] on a `$` topic a client may publish to (`$SYS` is the broker's).
    ("#", "$app/broker", false),
    ("+/broker", "$app/broker", false),
    ("$app/#", "$app/broker", true),
    ("$app/+", "$app/broker", true),
];

#[test]
fn filters_match_topics_as_the_spec_examples_say() {
    let broker = TestBroker::start();
    let mut failures = Vec::new();
    for (i, (filter, topic, expected)) in MATCHING.iter().enumerate() {
        let version = if i % 2 == 0 { V3_1_1 } else { V5 };
        let mut sub = RawClient::connect(broker.addr(), version, "matcher");
        sub.subscribe_one(filter, 1);
        sub.subscribe_one("sentinel/end", 1);
        let mut publisher = RawClient::connect(broker.addr(), version, "matcher-pub");
        publisher.publish(topic, b"probe", 1, false);
        publisher.publish("sentinel/end", b"end", 1, false);
        let first = sub.expect_publish_acked();
        let matched = first.topic == *topic;
        if matched {
            assert_eq!(sub.expect_publish_acked().topic, "sentinel/end");
        }
        if matched != *expected {
            failures.push(format!("{filter:?} vs {topic:?}: matched = {matched}"));
        }
        sub.disconnect();
        publisher.disconnect();
    }
    assert!(failures.is_empty(), "wrong matches:\n{}", failures.join("\n"));
}

#[test]
fn topic_names_are_delivered_byte_for_byte() {
    let broker = TestBroker::start();
    let mut sub = RawClient::connect(broker.addr(), V5, "bytes-sub");
    sub.subscribe_one("#", 0);
    let long = "x".repeat(60_000);
    let topics = ["/", "//", "a/", "ünï/ködé", "\u{FEFF}bom", long.as_str()];
    let mut publisher = RawClient::connect(broker.addr(), V3_1_1, "bytes-pub");
    for topic in topics {
        publisher.publish(topic, b"", 1, false);
        // [MQTT-1.5.3-3] U+FEFF must not be stripped; nothing else may change either.
        assert_eq!(sub.expect_publish().topic, topic);
    }
}

#[test]
fn clients_may_not_publish_to_sys() {
    // `$SYS` carries the broker's own statistics: a client's PUBLISH there is
    // acknowledged (v5: 0x87 Not authorized) and dropped, so nobody can fake them.
    let broker = TestBroker::start();
    let mut sub = RawClient::connect(broker.addr(), V5, "sys-sub");
    sub.subscribe_one("$SYS/fake/#", 1);
    sub.subscribe_one("sentinel/sys", 1);
    for (i, version) in [V3_1_1, V5].into_iter().enumerate() {
        let mut publisher = RawClient::connect(broker.addr(), version, "sys-faker");
        let id = publisher.publish_no_wait("$SYS/fake/clients", b"999", 1, true);
        let ack = publisher.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(i, _) if *i == id));
        let expected = if version.is_v5() { 0x87 } else { 0 };
        assert_eq!(ack, Incoming::PubAck(id, expected), "{version}");
        publisher.publish_no_wait("$SYS", b"999", 0, false);
        publisher.publish("sentinel/sys", format!("end {i}").as_bytes(), 1, false);
        let first = sub.expect_publish_acked();
        assert_eq!(first.topic, "sentinel/sys", "{version}: the $SYS publish was routed");
        publisher.disconnect();
    }
    // Nor was it retained.
    let mut late = RawClient::connect(broker.addr(), V5, "sys-late");
    late.subscribe_one("$SYS/fake/#", 1);
    let unread = late.ping_then_unread();
    assert!(unread.is_empty(), "{unread:?}");
}

/// Publishers skip workers whose subscriptions cannot match (see the server's
/// `worker::interest`). A subscription must still be seen by a publish on any worker
/// right after its SUBACK, and an unsubscribe must not leave a stale filter behind.
/// `isub-N` and `ipub-N` share a worker in about half of the rounds, and not in the rest.
#[test]
fn a_fresh_subscription_gets_publishes_from_every_worker() {
    let broker = TestBroker::start();
    for round in 0..40u32 {
        let version = if round % 2 == 0 { V3_1_1 } else { V5 };
        let level = format!("lvl{round}");
        // Exact first levels (a count going 0 -> 1 -> 0), leading wildcards, `$` topics.
        let (filter, topic) = match round % 4 {
            0 => (format!("{level}/a"), format!("{level}/a")),
            1 => ("+/b".to_string(), format!("{level}/b")),
            2 => ("#".to_string(), format!("{level}/c")),
            _ => (format!("${level}/+"), format!("${level}/d")),
        };
        let mut publisher = RawClient::connect(broker.addr(), version, &format!("ipub-{round}"));
        let mut sub = RawClient::connect(broker.addr(), version, &format!("isub-{round}"));
        let sentinel = format!("sentinel/{round}");
        sub.subscribe(&[(filter.as_str(), 1), (sentinel.as_str(), 1)]);
        publisher.publish(&topic, b"one", 1, false);
        let first = sub.expect_publish_acked();
        assert_eq!((first.topic.as_str(), first.payload.as_slice()), (topic.as_str(), &b"one"[..]));
        sub.unsubscribe(&[filter.as_str()]);
        publisher.publish(&topic, b"two", 1, false);
        publisher.publish(&sentinel, b"end", 1, false);
        let next = sub.expect_publish_acked();
        assert_eq!(next.topic, sentinel, "round {round}: {topic} delivered after unsubscribe");
        sub.disconnect();
        publisher.disconnect();
    }
}
