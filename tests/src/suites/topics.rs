//! Topic names and filters over the wire: the matching rules of 4.7 checked through
//! real SUBSCRIBE/PUBLISH exchanges, including the corner cases (empty levels, `#`
//! matching its parent, non-ASCII levels, `$` topics).

use shoal_core::ProtocolVersion::{V3_1_1, V5};

use crate::harness::TestBroker;
use crate::raw::RawClient;

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
    ("#", "$SYS/broker", false), // [MQTT-4.7.2-1]
    ("+/broker", "$SYS/broker", false),
    ("$SYS/#", "$SYS/broker", true),
    ("$SYS/+", "$SYS/broker", true),
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
