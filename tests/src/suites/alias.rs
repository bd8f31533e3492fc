//! MQTT 5 Topic Alias (3.3.2.3.4) in both directions: aliases a publisher sets up (at
//! most our Topic Alias Maximum, re-mapped and reused), aliases the broker sets up
//! towards a subscriber (at most its Topic Alias Maximum, per connection), and the
//! refusals.

use shoal_core::ProtocolVersion::V5;

use crate::harness::TestBroker;
use crate::raw::wire::{self, find_property, property, ConnectOptions};
use crate::raw::{Incoming, RawClient, DEADLINE};

fn alias_prop(alias: u16) -> Vec<u8> {
    property(0x23, &alias.to_be_bytes())
}

/// Topic Alias Maximum from a CONNACK.
fn connack_alias_max(client: &str, broker: &TestBroker) -> (RawClient, u16) {
    let (c, reply) = RawClient::connect_raw(broker.addr(), &ConnectOptions::new(V5, client));
    let Ok(Incoming::ConnAck { code: 0, properties, .. }) = reply else {
        panic!("CONNECT refused: {reply:?}")
    };
    let max = find_property(&properties, 0x22)
        .map_or(0, |p| u16::from_be_bytes([p.value[0], p.value[1]]));
    (c, max)
}

#[test]
fn publisher_aliases_are_resolved_remapped_and_reused() {
    let broker = TestBroker::with_config("[mqtt]\ntopic_alias_maximum = 2\n");
    let mut sub = RawClient::connect(broker.addr(), V5, "sub");
    sub.subscribe_one("al/#", 0);
    let (mut publisher, max) = connack_alias_max("pub", &broker);
    assert_eq!(max, 2, "CONNACK Topic Alias Maximum");
    let sends: [(&str, u16, &[u8]); 6] = [
        ("al/one", 1, b"1"),
        ("", 1, b"2"),
        ("al/two", 2, b"3"),
        ("", 2, b"4"),
        ("al/three", 1, b"5"), // alias 1 re-mapped
        ("", 1, b"6"),
    ];
    for (topic, alias, payload) in sends {
        publisher.send(&wire::publish_v5_with_properties(
            topic,
            payload,
            0,
            false,
            0,
            &alias_prop(alias),
        ));
    }
    let expected =
        ["al/one", "al/one", "al/two", "al/two", "al/three", "al/three"].iter().zip(b"123456");
    for (topic, payload) in expected {
        let got = sub.expect_publish();
        assert_eq!((got.topic.as_str(), got.payload.as_slice()), (*topic, &[*payload][..]));
        // The subscriber did not ask for aliases: none is sent to it.
        assert!(find_property(&got.properties, 0x23).is_none(), "alias sent to {got:?}");
    }
}

#[test]
fn alias_above_the_maximum_is_refused_with_0x94() {
    let broker = TestBroker::with_config("[mqtt]\ntopic_alias_maximum = 2\n");
    let (mut publisher, _) = connack_alias_max("pub", &broker);
    publisher.send(&wire::publish_v5_with_properties("x", b"", 0, false, 0, &alias_prop(3)));
    assert_eq!(publisher.expect_closed_with_reason(DEADLINE), Some(0x94));
}

#[test]
fn unknown_alias_with_an_empty_topic_is_a_protocol_error() {
    let broker = TestBroker::start();
    let (mut publisher, _) = connack_alias_max("pub", &broker);
    publisher.send(&wire::publish_v5_with_properties("", b"", 0, false, 0, &alias_prop(1)));
    assert_eq!(publisher.expect_closed_with_reason(DEADLINE), Some(0x82));
}

#[test]
fn aliases_do_not_outlive_the_connection() {
    // [MQTT-3.3.2-7] a new connection starts with no aliases.
    let broker = TestBroker::start();
    let (mut first, _) = connack_alias_max("pub", &broker);
    first.send(&wire::publish_v5_with_properties("t", b"", 0, false, 0, &alias_prop(1)));
    first.disconnect();
    let (mut again, _) = connack_alias_max("pub", &broker);
    again.send(&wire::publish_v5_with_properties("", b"", 0, false, 0, &alias_prop(1)));
    assert_eq!(again.expect_closed_with_reason(DEADLINE), Some(0x82));
}

#[test]
fn broker_aliases_topics_towards_a_client_up_to_its_maximum() {
    let broker = TestBroker::start();
    let mut opts = ConnectOptions::new(V5, "aliased-sub");
    opts.topic_alias_maximum = Some(2);
    let (mut sub, _) = RawClient::connect_with(broker.addr(), &opts);
    sub.subscribe_one("out/#", 1);
    let mut publisher = RawClient::connect(broker.addr(), V5, "pub");
    let topics = ["out/a", "out/a", "out/b", "out/c", "out/a", "out/b"];
    for (i, topic) in topics.iter().enumerate() {
        publisher.publish(topic, &[i as u8], 1, false);
    }
    // Alias 1 = out/a, 2 = out/b; out/c re-assigns the oldest (1), then out/a takes 2.
    let expected = [("out/a", 1), ("", 1), ("out/b", 2), ("out/c", 1), ("out/a", 2), ("out/b", 1)];
    let mut known: [Option<String>; 2] = [None, None];
    for (i, (topic, alias)) in expected.iter().enumerate() {
        let got = sub.expect_publish_acked();
        let a = find_property(&got.properties, 0x23)
            .map(|p| u16::from_be_bytes([p.value[0], p.value[1]]));
        assert_eq!((got.topic.as_str(), a), (*topic, Some(*alias)), "message {i}");
        assert_eq!(got.payload, [i as u8]);
        // The client's view: what the alias stands for now is the topic sent.
        let slot = &mut known[usize::from(*alias) - 1];
        if !got.topic.is_empty() {
            *slot = Some(got.topic.clone());
        }
        assert_eq!(slot.as_deref(), Some(topics[i]), "alias {alias} resolves to the topic");
    }
}
