//! MQTT 5 features a broker must honour beyond 3.1.1: subscription options (No Local,
//! Retain As Published, Retain Handling), subscription identifiers, forwarded
//! properties, message and session expiry, the client's Receive Maximum and Maximum
//! Packet Size, Server Keep Alive, topic aliases, shared subscriptions and v5 reason
//! codes in acknowledgements.
//!
//! Where the spec lets a server opt out of a feature and say so in CONNACK (Subscription
//! Identifiers Available, Topic Alias Maximum, Shared Subscription Available), the test
//! reads CONNACK and checks whichever behaviour the broker announced.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use shoal_core::ProtocolVersion::{V3_1_1, V5};

use crate::harness::{run_with_timeout, ExternalTool, TestBroker};
use crate::raw::wire::{self, find_property, property, string_value, ConnectOptions};
use crate::raw::{Incoming, Property, RawClient, DEADLINE};

/// Connects a v5 client and returns it with its CONNACK properties.
fn connect_v5(broker: &TestBroker, opts: &ConnectOptions) -> (RawClient, Vec<Property>) {
    let (client, reply) = RawClient::connect_raw(broker.addr(), opts);
    match reply {
        Ok(Incoming::ConnAck { code: 0, properties, .. }) => (client, properties),
        other => panic!("v5 CONNECT {:?} not accepted: {other:?}", opts.client_id),
    }
}

/// Whether a CONNACK byte property is absent (meaning available) or 1.
fn available(props: &[Property], id: u8) -> bool {
    find_property(props, id).map_or(true, |p| p.value == [1])
}

#[test]
fn no_local_subscription_does_not_receive_own_messages() {
    // [MQTT-3.8.3-3] No Local: never forward to the connection that published.
    let broker = TestBroker::start();
    let mut client = RawClient::connect(broker.addr(), V5, "narcissus");
    assert_eq!(client.subscribe(&[("nl/t", 0x04 | 1)]), [1]);
    let mut other = RawClient::connect(broker.addr(), V5, "other");
    client.publish("nl/t", b"mine", 1, false);
    other.publish("nl/t", b"theirs", 1, false);
    assert_eq!(client.expect_publish_acked().payload, b"theirs");
}

#[test]
fn retain_as_published_keeps_the_retain_flag_on_live_messages() {
    // [MQTT-3.3.1-12] RAP=1: RETAIN as published; RAP=0: cleared.
    let broker = TestBroker::start();
    let mut rap = RawClient::connect(broker.addr(), V5, "rap");
    assert_eq!(rap.subscribe(&[("rap/t", 0x08 | 1)]), [1]);
    let mut plain = RawClient::connect(broker.addr(), V5, "plain");
    plain.subscribe_one("rap/t", 1);
    let mut publisher = RawClient::connect(broker.addr(), V5, "rap-pub");
    publisher.publish("rap/t", b"r", 1, true);
    assert!(rap.expect_publish_acked().retain, "Retain As Published lost the flag");
    assert!(!plain.expect_publish_acked().retain, "RETAIN kept without Retain As Published");
}

#[test]
fn retain_handling_controls_retained_delivery_on_subscribe() {
    // 3.8.3.1: 0 = always send retained, 1 = only for a new subscription, 2 = never.
    let broker = TestBroker::start();
    let mut publisher = RawClient::connect(broker.addr(), V5, "rh-pub");
    publisher.publish("rh/t", b"kept", 1, true);
    let mut sub = RawClient::connect(broker.addr(), V5, "rh-sub");
    // Retain Handling 2: nothing.
    assert_eq!(sub.subscribe(&[("rh/t", 0x20 | 1)]), [1]);
    let unread = sub.ping_then_unread();
    assert!(unread.is_empty(), "Retain Handling 2 sent {unread:?}");
    sub.unsubscribe(&["rh/t"]);
    // Retain Handling 1 on a new subscription: sent.
    assert_eq!(sub.subscribe(&[("rh/t", 0x10 | 1)]), [1]);
    assert_eq!(sub.expect_publish_acked().payload, b"kept");
    // Retain Handling 1 on an existing subscription: not sent again.
    assert_eq!(sub.subscribe(&[("rh/t", 0x10 | 1)]), [1]);
    let unread = sub.ping_then_unread();
    assert!(unread.is_empty(), "Retain Handling 1 re-sent on an existing subscription: {unread:?}");
}

#[test]
fn subscription_identifiers_are_sent_with_matching_publishes() {
    let broker = TestBroker::start();
    let (mut sub, props) = connect_v5(&broker, &ConnectOptions::new(V5, "sid"));
    let id = sub.next_packet_id();
    sub.send(&wire::subscribe_v5_with_properties(id, &[0x0B, 5], &[("sid/+", 1)]));
    if !available(&props, 0x29) {
        // [MQTT-3.8.2-?] not supported and announced so: DISCONNECT 0xA1.
        assert_eq!(sub.expect_closed_with_reason(DEADLINE), Some(0xA1));
        return;
    }
    sub.wait_for("SUBACK", |p| matches!(p, Incoming::SubAck(i, _) if *i == id));
    let id = sub.next_packet_id();
    sub.send(&wire::subscribe_v5_with_properties(id, &[0x0B, 7], &[("sid/b", 1)]));
    sub.wait_for("SUBACK", |p| matches!(p, Incoming::SubAck(i, _) if *i == id));
    sub.subscribe_one("sid/#", 1); // no identifier
    let mut publisher = RawClient::connect(broker.addr(), V5, "sid-pub");
    publisher.publish("sid/b", b"both", 1, false);
    publisher.publish("sid/c", b"one", 1, false);
    let ids = |p: &wire::Publish| {
        let mut ids: Vec<Vec<u8>> =
            p.properties.iter().filter(|x| x.id == 0x0B).map(|x| x.value.clone()).collect();
        ids.sort();
        ids
    };
    // [MQTT-3.3.4-4] one copy carries every matching subscription's identifier.
    let both = sub.expect_publish_acked();
    assert_eq!(ids(&both), [5u32.to_be_bytes().to_vec(), 7u32.to_be_bytes().to_vec()]);
    let one = sub.expect_publish_acked();
    assert_eq!(ids(&one), [5u32.to_be_bytes().to_vec()]);
}

#[test]
fn client_supplied_subscription_identifier_is_not_forwarded() {
    // [MQTT-3.3.4-6] a client's PUBLISH must not carry one; whatever the broker does
    // about it (Shoal's malformed suite expects a Protocol Error), a subscriber must
    // never see an identifier it did not ask for.
    let broker = TestBroker::start();
    let mut sub = RawClient::connect(broker.addr(), V5, "victim");
    sub.subscribe_one("fwd/t", 0);
    let mut publisher = RawClient::connect(broker.addr(), V5, "forger");
    let _ = publisher.try_send(&wire::publish_v5_with_properties(
        "fwd/t",
        b"forged",
        0,
        false,
        0,
        &[0x0B, 42],
    ));
    let mut sentinel = RawClient::connect(broker.addr(), V5, "sentinel");
    sentinel.publish("fwd/t", b"sentinel", 1, false);
    loop {
        let got = sub.expect_publish();
        assert!(
            find_property(&got.properties, 0x0B).is_none(),
            "subscriber received a client-forged Subscription Identifier: {got:?}"
        );
        if got.payload == b"sentinel" {
            break;
        }
    }
}

#[test]
fn application_properties_are_forwarded_unchanged() {
    // [MQTT-3.3.2-4] Payload Format Indicator, [MQTT-3.3.2-20] Content Type,
    // [MQTT-3.3.2-15]/[-16] Response Topic and Correlation Data, [MQTT-3.3.2-17]/[-18]
    // User Properties in order.
    let broker = TestBroker::start();
    let mut sub = RawClient::connect(broker.addr(), V5, "props-sub");
    sub.subscribe_one("props/t", 1);
    let mut v311 = RawClient::connect(broker.addr(), V3_1_1, "props-311");
    v311.subscribe_one("props/t", 1);
    let user = |k: &[u8], v: &[u8]| {
        let mut value = string_value(k);
        value.extend(string_value(v));
        property(0x26, &value)
    };
    let sent: Vec<Vec<u8>> = vec![
        property(0x01, &[1]),
        property(0x03, &string_value(b"text/plain")),
        property(0x08, &string_value(b"reply/here")),
        property(0x09, &string_value(b"\x00\x01corr")),
        user(b"z", b"first"),
        user(b"a", b"second"),
        user(b"z", b"third"),
    ];
    let mut publisher = RawClient::connect(broker.addr(), V5, "props-pub");
    publisher.send(&wire::publish_v5_with_properties(
        "props/t",
        "héllo".as_bytes(),
        1,
        false,
        1,
        &sent.concat(),
    ));
    publisher.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(1, _)));
    let got = sub.expect_publish_acked();
    let forwarded: Vec<&Property> = got
        .properties
        .iter()
        .filter(|p| matches!(p.id, 0x01 | 0x03 | 0x08 | 0x09 | 0x26))
        .collect();
    let expected: Vec<(u8, Vec<u8>)> = vec![
        (0x01, vec![1]),
        (0x03, b"text/plain".to_vec()),
        (0x08, b"reply/here".to_vec()),
        (0x09, b"\x00\x01corr".to_vec()),
        (0x26, [&b"z"[..], b"first"].concat()),
        (0x26, [&b"a"[..], b"second"].concat()),
        (0x26, [&b"z"[..], b"third"].concat()),
    ];
    let mut forwarded: Vec<(u8, Vec<u8>)> =
        forwarded.into_iter().map(|p| (p.id, p.value.clone())).collect();
    // Only user-property order is significant; sort the others by id.
    forwarded.sort_by_key(|(id, _)| *id);
    assert_eq!(forwarded, expected);
    assert_eq!(got.payload, "héllo".as_bytes());
    // A 3.1.1 subscriber gets the same message without properties.
    assert_eq!(v311.expect_publish_acked().payload, "héllo".as_bytes());
}

#[test]
fn expired_messages_are_not_delivered_from_the_offline_queue() {
    // [MQTT-3.3.2-5] after the Message Expiry Interval the server MUST NOT deliver it;
    // [MQTT-3.3.2-6] the forwarded interval is reduced by the time spent waiting.
    let broker = TestBroker::start();
    let opts = ConnectOptions::persistent(V5, "expiry-sub");
    let (mut sub, _) = connect_v5(&broker, &opts);
    sub.subscribe_one("exp/t", 1);
    sub.disconnect();
    let mut publisher = RawClient::connect(broker.addr(), V5, "exp-pub");
    for (payload, secs) in [(&b"short"[..], 1u32), (b"long", 100)] {
        let id = publisher.next_packet_id();
        publisher.send(&wire::publish_v5_with_properties(
            "exp/t",
            payload,
            1,
            false,
            id,
            &property(0x02, &secs.to_be_bytes()),
        ));
        publisher.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(i, _) if *i == id));
    }
    // The behaviour under test is the passing of time itself: let the short one expire.
    std::thread::sleep(Duration::from_millis(2200));
    let (mut sub, _) = connect_v5(&broker, &opts);
    let got = sub.expect_publish_acked();
    assert_eq!(got.payload, b"long", "an expired message was delivered");
    let left = find_property(&got.properties, 0x02).expect("Message Expiry Interval forwarded");
    let left = u32::from_be_bytes(left.value.clone().try_into().unwrap());
    assert!((90..100).contains(&left), "expiry interval not reduced by the wait: {left}");
}

#[test]
fn session_expires_after_its_interval() {
    // 3.1.2.11.2: the session is discarded once the interval has passed offline.
    let broker = TestBroker::start();
    let mut opts = ConnectOptions::persistent(V5, "short-lived");
    opts.session_expiry = Some(1);
    let (mut client, _) = connect_v5(&broker, &opts);
    client.subscribe_one("sx/t", 1);
    client.disconnect();
    std::thread::sleep(Duration::from_millis(2500));
    let (client, reply) = RawClient::connect_raw(broker.addr(), &opts);
    assert!(
        matches!(reply, Ok(Incoming::ConnAck { session_present: false, code: 0, .. })),
        "session outlived its 1 s expiry: {reply:?}"
    );
    client.disconnect();
}

#[test]
fn client_receive_maximum_bounds_unacknowledged_deliveries() {
    // [MQTT-3.3.4-9] no more than Receive Maximum unacknowledged QoS 1/2 PUBLISHes.
    let broker = TestBroker::with_config("[limits]\nmax_inflight = 100");
    let mut opts = ConnectOptions::new(V5, "rm-sub");
    opts.receive_maximum = Some(3);
    let (mut sub, _) = connect_v5(&broker, &opts);
    sub.subscribe_one("rm/t", 1);
    let mut publisher = RawClient::connect(broker.addr(), V5, "rm-pub");
    for i in 0..10u8 {
        publisher.publish("rm/t", &[i], 1, false);
    }
    let held: Vec<wire::Publish> = (0..3).map(|_| sub.expect_publish()).collect();
    match sub.recv(Duration::from_millis(300)) {
        Ok(Incoming::Publish(p)) => panic!("PUBLISH {:?} beyond Receive Maximum 3", p.payload),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(_) => {}
    }
    let mut payloads: Vec<u8> = held.iter().map(|p| p.payload[0]).collect();
    for p in &held {
        sub.ack(p);
    }
    while payloads.len() < 10 {
        payloads.push(sub.expect_publish_acked().payload[0]);
    }
    assert_eq!(payloads, (0..10).collect::<Vec<u8>>());
}

#[test]
fn messages_above_the_clients_maximum_packet_size_are_not_sent() {
    // [MQTT-3.1.2-24] the server MUST NOT send a packet exceeding the client's Maximum
    // Packet Size; [MQTT-3.1.2-25] it discards the message instead.
    let broker = TestBroker::start();
    let mut opts = ConnectOptions::new(V5, "small");
    opts.max_packet_size = Some(128);
    let (mut sub, _) = connect_v5(&broker, &opts);
    sub.subscribe_one("mps/t", 1);
    let mut publisher = RawClient::connect(broker.addr(), V5, "mps-pub");
    publisher.publish("mps/t", &[b'x'; 500], 1, false);
    publisher.publish("mps/t", b"fits", 1, false);
    let got = sub.expect_publish_acked();
    assert_eq!(got.payload, b"fits", "oversized message reached the client");
    sub.ping();
}

#[test]
fn server_keep_alive_is_announced_when_the_request_exceeds_the_maximum() {
    // [MQTT-3.2.2-21]/[-22] Server Keep Alive in CONNACK overrides the client's value.
    let broker = TestBroker::with_config("[limits]\nmax_keep_alive_secs = 30");
    let (_client, props) = connect_v5(&broker, &ConnectOptions::new(V5, "ka").with_keep_alive(600));
    let ka = find_property(&props, 0x13).expect("Server Keep Alive property");
    assert_eq!(ka.value, 30u16.to_be_bytes());
    // Keep alive 0 (no limit) exceeds every finite maximum too.
    let opts = ConnectOptions::new(V5, "ka0").with_keep_alive(0);
    let (_client, props) = connect_v5(&broker, &opts);
    let ka = find_property(&props, 0x13).expect("Server Keep Alive for keep alive 0");
    assert_eq!(ka.value, 30u16.to_be_bytes());
}

#[test]
fn keep_alive_above_the_maximum_is_enforced_at_the_maximum() {
    // docs/CONFIG.md `limits.max_keep_alive_secs`: a larger request is lowered, and
    // 3.x clients get it enforced at that value too.
    let broker = TestBroker::with_config("[limits]\nmax_keep_alive_secs = 1");
    for version in [V3_1_1, V5] {
        let opts = ConnectOptions::new(version, "lazy").with_keep_alive(600);
        let (mut client, _) = RawClient::connect_with(broker.addr(), &opts);
        // 1.5 × 1 s on a one-second tick: closed well within 5 s.
        let reason = client.expect_closed_with_reason(Duration::from_secs(5));
        if version.is_v5() {
            assert_eq!(reason, Some(0x8D), "v5: Keep Alive timeout");
        }
    }
}

#[test]
fn unsubscribe_reports_whether_a_subscription_existed() {
    // 3.11.3: 0x00 Success, 0x11 No subscription existed.
    let broker = TestBroker::start();
    let mut client = RawClient::connect(broker.addr(), V5, "unsub-codes");
    client.subscribe_one("uc/a", 0);
    assert_eq!(client.unsubscribe(&["uc/a", "uc/never"]), [0x00, 0x11]);
}

#[test]
fn topic_alias_from_the_client_is_resolved_or_refused_as_announced() {
    let broker = TestBroker::start();
    let mut sub = RawClient::connect(broker.addr(), V5, "alias-sub");
    sub.subscribe_one("alias/#", 0);
    let (mut publisher, props) = connect_v5(&broker, &ConnectOptions::new(V5, "alias-pub"));
    let max =
        find_property(&props, 0x22).map_or(0, |p| u16::from_be_bytes([p.value[0], p.value[1]]));
    let alias = property(0x23, &1u16.to_be_bytes());
    publisher.send(&wire::publish_v5_with_properties("alias/long/name", b"1", 0, false, 0, &alias));
    if max == 0 {
        // [MQTT-3.3.2-8]-family: alias beyond Topic Alias Maximum (0) → 0x94.
        assert_eq!(publisher.expect_closed_with_reason(DEADLINE), Some(0x94));
        return;
    }
    publisher.send(&wire::publish_v5_with_properties("", b"2", 0, false, 0, &alias));
    for payload in [b"1", b"2"] {
        let got = sub.expect_publish();
        assert_eq!((got.topic.as_str(), got.payload.as_slice()), ("alias/long/name", &payload[..]));
    }
}

#[test]
fn shared_subscription_delivers_each_message_to_one_member() {
    let broker = TestBroker::start();
    let (mut a, props) = connect_v5(&broker, &ConnectOptions::new(V5, "share-a"));
    let codes = a.subscribe(&[("$share/g/sh/t", 1)]);
    if !available(&props, 0x2A) {
        assert_eq!(codes, [0x9E], "shared subscriptions refused without 0x9E");
        return;
    }
    assert_eq!(codes, [1]);
    let mut b = RawClient::connect(broker.addr(), V3_1_1, "share-b");
    b.subscribe_one("$share/g/sh/t", 1);
    let mut plain = RawClient::connect(broker.addr(), V5, "share-plain");
    plain.subscribe_one("sh/t", 1);
    let mut publisher = RawClient::connect(broker.addr(), V5, "share-pub");
    for i in 0..20u8 {
        publisher.publish("sh/t", &[i], 1, false);
    }
    publisher.publish("sh/end", b"", 0, false);
    // The ordinary subscriber gets all 20; the group gets each exactly once.
    for i in 0..20u8 {
        assert_eq!(plain.expect_publish_acked().payload, [i]);
    }
    let mut counts: BTreeMap<u8, usize> = BTreeMap::new();
    let mut total = 0;
    crate::harness::wait_until(DEADLINE, "20 shared deliveries", || {
        for member in [&mut a, &mut b] {
            while let Ok(Incoming::Publish(p)) = member.recv(Duration::from_millis(20)) {
                member.ack(&p);
                *counts.entry(p.payload[0]).or_default() += 1;
                total += 1;
            }
        }
        total >= 20
    });
    let unread: Vec<Incoming> = [a.ping_then_unread(), b.ping_then_unread()].concat();
    assert!(unread.is_empty(), "extra shared deliveries: {unread:?}");
    assert_eq!(counts, (0..20).map(|i| (i, 1)).collect(), "each message once per group");
}

#[test]
fn disconnect_cannot_turn_a_zero_session_expiry_into_a_persistent_one() {
    // [MQTT-3.14.2-2] Session Expiry 0 at CONNECT, non-zero at DISCONNECT: Protocol Error.
    let broker = TestBroker::start();
    let mut client = RawClient::connect(broker.addr(), V5, "sneaky");
    client.send(&wire::frame(0xE0, &[0x00, 5, 0x11, 0, 0, 0, 60]));
    let seen = client.expect_closed(DEADLINE);
    assert_eq!(seen, [Incoming::Disconnect(0x82)], "expected DISCONNECT Protocol Error");
}

#[test]
fn inbound_qos2_beyond_the_brokers_receive_maximum_is_refused() {
    // [MQTT-3.3.4-7]/[-8]: a client must not exceed the server's Receive Maximum; the
    // server answers DISCONNECT 0x93.
    let broker = TestBroker::start();
    let (mut client, props) = connect_v5(&broker, &ConnectOptions::new(V5, "flooder"));
    let max = find_property(&props, 0x21)
        .map_or(65_535, |p| u16::from_be_bytes([p.value[0], p.value[1]]));
    if max > 1000 {
        eprintln!("broker Receive Maximum {max}: too large to exceed cheaply; nothing to check");
        return;
    }
    for id in 1..=max + 1 {
        let _ = client.try_send(&wire::publish(V5, "rx/t", b"", 2, false, false, id));
    }
    let reason = client.expect_closed_with_reason(DEADLINE);
    assert_eq!(reason, Some(0x93), "expected Receive Maximum exceeded");
}

#[test]
fn qos2_deliveries_count_against_receive_maximum_until_pubcomp() {
    // 4.9: the send quota is returned by PUBACK or PUBCOMP (or a PUBREC with an error
    // code), not by a successful PUBREC.
    let broker = TestBroker::start();
    let mut opts = ConnectOptions::new(V5, "q2-quota");
    opts.receive_maximum = Some(2);
    let (mut sub, _) = connect_v5(&broker, &opts);
    sub.subscribe_one("quota/t", 2);
    let mut publisher = RawClient::connect(broker.addr(), V5, "quota-pub");
    for i in 0..4u8 {
        publisher.publish("quota/t", &[i], 2, false);
    }
    let first: Vec<wire::Publish> = (0..2).map(|_| sub.expect_publish()).collect();
    for p in &first {
        let id = p.packet_id.unwrap();
        sub.send(&wire::ack(wire::kind::PUBREC, id));
        sub.wait_for("PUBREL", |x| matches!(x, Incoming::PubRel(i, _) if *i == id));
    }
    match sub.recv(Duration::from_millis(300)) {
        Ok(Incoming::Publish(p)) => {
            panic!("PUBLISH {:?} while 2 QoS 2 flows lack PUBCOMP", p.payload)
        }
        Ok(other) => panic!("unexpected {other:?}"),
        Err(_) => {}
    }
    for p in &first {
        sub.send(&wire::ack(wire::kind::PUBCOMP, p.packet_id.unwrap()));
    }
    assert_eq!(sub.expect_publish_acked().payload, [2]);
    assert_eq!(sub.expect_publish_acked().payload, [3]);
}

/// Connects with paho (v5; argv[2] = Request Problem Information, argv[3] = Maximum
/// Packet Size or 0 for none), subscribes to two filters (one over the broker's quota),
/// unsubscribes from one and from a malformed filter, and prints each ack's codes and
/// reason string.
const PAHO_ACK_REASONS: &str = r#"
import sys
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

port, problem_info, max_packet = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])

def reason(properties):
    return getattr(properties, "ReasonString", None) if properties is not None else None

def on_connect(client, userdata, flags, reason_code, properties):
    client.subscribe([("good/t", 1), ("over/quota", 1)])

def on_subscribe(client, userdata, mid, reason_codes, properties):
    print("SUBACK", [c.value for c in reason_codes], reason(properties))
    client.unsubscribe(["good/t", "bad/#/x"])

def on_unsubscribe(client, userdata, mid, reason_codes, properties):
    print("UNSUBACK", [c.value for c in reason_codes], reason(properties))
    client.disconnect()

props = Properties(PacketTypes.CONNECT)
props.RequestProblemInformation = problem_info
if max_packet:
    props.MaximumPacketSize = max_packet
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-reasons", protocol=mqtt.MQTTv5)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_unsubscribe = on_unsubscribe
client.connect("127.0.0.1", port, keepalive=30, properties=props)
client.loop_forever()
"#;

#[test]
fn paho_sees_reason_strings_on_failed_subscribe_and_unsubscribe_only_when_allowed() {
    // v5 SUBACK/UNSUBACK explain a failure code with a reason string naming the
    // filter; never when the client set Request Problem Information 0
    // [MQTT-3.1.2-29], nor when the ack would then exceed its Maximum Packet Size
    // [MQTT-3.1.2-25].
    if !ExternalTool::PahoMqtt.available() {
        return;
    }
    let broker = TestBroker::with_config("[limits]\nmax_subscriptions_per_client = 1\n");
    let run = |problem_info: &str, max_packet: &str| {
        let port = broker.port().to_string();
        let out = run_with_timeout(
            Command::new("python3").args(["-c", PAHO_ACK_REASONS, &port, problem_info, max_packet]),
            Duration::from_secs(20),
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "paho: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let explained = run("1", "0");
    let lines: Vec<&str> = explained.lines().collect();
    assert_eq!(lines.len(), 2, "{explained}");
    // 0x97 Quota exceeded; 0x8F Topic Filter invalid.
    assert!(
        lines[0].starts_with("SUBACK [1, 151] ") && lines[0].contains("over/quota"),
        "{explained}"
    );
    assert!(
        lines[1].starts_with("UNSUBACK [0, 143] ") && lines[1].contains("bad/#/x"),
        "{explained}"
    );
    assert_eq!(run("0", "0"), "SUBACK [1, 151] None\nUNSUBACK [0, 143] None\n");
    // Room for the codes (10 bytes at most), not for the strings.
    assert_eq!(run("1", "12"), "SUBACK [1, 151] None\nUNSUBACK [0, 143] None\n");
}

#[test]
fn expired_retained_message_is_not_sent_to_a_new_subscriber() {
    // [MQTT-3.3.2-5] applies to a retained message as to a queued one: once its Message
    // Expiry Interval has passed it is not delivered; [MQTT-3.3.2-6] a retained message
    // still alive goes out with the interval reduced by the time it was kept.
    let broker = TestBroker::start();
    let mut publisher = RawClient::connect(broker.addr(), V5, "rexp-pub");
    for (topic, secs) in [("rexp/short", 1u32), ("rexp/long", 100)] {
        let id = publisher.next_packet_id();
        publisher.send(&wire::publish_v5_with_properties(
            topic,
            topic.as_bytes(),
            1,
            true,
            id,
            &property(0x02, &secs.to_be_bytes()),
        ));
        publisher.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(i, _) if *i == id));
    }
    // The behaviour under test is the passing of time itself: let the short one expire.
    std::thread::sleep(Duration::from_millis(2200));
    let mut sub = RawClient::connect(broker.addr(), V5, "rexp-sub");
    sub.subscribe_one("rexp/#", 1);
    let got = sub.expect_publish_acked();
    assert_eq!(got.topic, "rexp/long", "an expired retained message was delivered");
    assert!(got.retain, "retained delivery without RETAIN");
    let left = find_property(&got.properties, 0x02).expect("Message Expiry Interval forwarded");
    let left = u32::from_be_bytes(left.value.clone().try_into().unwrap());
    assert!((90..100).contains(&left), "expiry interval not reduced by the wait: {left}");
    let unread = sub.ping_then_unread();
    assert!(unread.is_empty(), "more than the live retained message: {unread:?}");
}

#[test]
fn connack_maximum_qos_and_retain_available_match_what_is_honoured() {
    // 3.2.2.3.4: Maximum QoS is absent when QoS 2 is supported and may only be 0 or 1;
    // 3.2.2.3.5: Retain Available absent means 1. Whatever the CONNACK announces must
    // hold: a will at that QoS with RETAIN is accepted [MQTT-3.2.2-12]/[-13], and so
    // are PUBLISHes at that QoS with RETAIN.
    let broker = TestBroker::start();
    let (client, props) = connect_v5(&broker, &ConnectOptions::new(V5, "caps"));
    let max_qos = match find_property(&props, 0x24) {
        Some(p) => {
            assert!(p.value == [0] || p.value == [1], "Maximum QoS {:?}", p.value);
            p.value[0]
        }
        None => 2,
    };
    let retain = available(&props, 0x25);
    client.disconnect();

    let opts = ConnectOptions::new(V5, "caps-will").with_will("caps/will", b"w", max_qos, retain);
    let (mut with_will, reply) = RawClient::connect_raw(broker.addr(), &opts);
    assert!(
        matches!(reply, Ok(Incoming::ConnAck { code: 0, .. })),
        "a will within the announced capabilities was refused: {reply:?}"
    );
    with_will.publish("caps/t", b"kept", max_qos, retain);
    let mut sub = RawClient::connect(broker.addr(), V5, "caps-sub");
    sub.subscribe_one("caps/t", max_qos);
    if retain {
        let got = sub.expect_publish_acked();
        assert!(got.retain && got.payload == b"kept", "retained message not kept: {got:?}");
    }
    with_will.publish("caps/t", b"live", max_qos, false);
    let got = sub.expect_publish_acked();
    assert_eq!((got.payload.as_slice(), got.qos), (&b"live"[..], max_qos));
    with_will.disconnect();
}

#[test]
fn disconnect_can_end_a_persistent_session_by_setting_its_expiry_to_zero() {
    // 3.14.2.2.2: the Session Expiry Interval on DISCONNECT replaces the CONNECT's; from
    // non-zero to 0 is allowed, and the session then ends with the connection.
    let broker = TestBroker::start();
    let opts = ConnectOptions::persistent(V5, "changes-mind");
    let (mut client, _) = connect_v5(&broker, &opts);
    client.subscribe_one("cm/t", 1);
    client.send(&wire::frame(0xE0, &[0x00, 5, 0x11, 0, 0, 0, 0]));
    let seen = client.expect_closed(DEADLINE);
    assert!(seen.is_empty(), "answered a valid DISCONNECT with {seen:?}");
    let (client, reply) = RawClient::connect_raw(broker.addr(), &opts);
    assert!(
        matches!(reply, Ok(Incoming::ConnAck { session_present: false, code: 0, .. })),
        "session outlived Session Expiry 0 set on DISCONNECT: {reply:?}"
    );
    client.disconnect();
}

#[test]
fn retained_message_carries_the_subscription_identifier_of_its_subscription() {
    // [MQTT-3.3.4-3]: a PUBLISH sent because of a subscription with an identifier
    // carries it; a retained message sent on subscribe is such a PUBLISH.
    let broker = TestBroker::start();
    let mut publisher = RawClient::connect(broker.addr(), V5, "rsid-pub");
    publisher.publish("rsid/t", b"kept", 1, true);
    let (mut sub, props) = connect_v5(&broker, &ConnectOptions::new(V5, "rsid-sub"));
    if !available(&props, 0x29) {
        return;
    }
    let id = sub.next_packet_id();
    sub.send(&wire::subscribe_v5_with_properties(id, &[0x0B, 9], &[("rsid/#", 1)]));
    sub.wait_for("SUBACK", |p| matches!(p, Incoming::SubAck(i, _) if *i == id));
    let got = sub.expect_publish_acked();
    assert!(got.retain, "{got:?}");
    let sid = find_property(&got.properties, 0x0B).map(|p| p.value.clone());
    assert_eq!(sid, Some(9u32.to_be_bytes().to_vec()), "Subscription Identifier of {got:?}");
}

#[test]
fn message_expiring_behind_a_full_receive_maximum_is_not_delivered() {
    // [MQTT-3.3.2-5] holds for an online subscriber too: a message waiting behind its
    // Receive Maximum that expires meanwhile is dropped, not sent late.
    let broker = TestBroker::start();
    let mut opts = ConnectOptions::new(V5, "slow-acker");
    opts.receive_maximum = Some(1);
    let (mut sub, _) = connect_v5(&broker, &opts);
    sub.subscribe_one("hold/t", 1);
    let mut publisher = RawClient::connect(broker.addr(), V5, "hold-pub");
    publisher.publish("hold/t", b"first", 1, false);
    let id = publisher.next_packet_id();
    publisher.send(&wire::publish_v5_with_properties(
        "hold/t",
        b"short-lived",
        1,
        false,
        id,
        &property(0x02, &1u32.to_be_bytes()),
    ));
    publisher.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(i, _) if *i == id));
    publisher.publish("hold/t", b"last", 1, false);
    let first = sub.expect_publish();
    assert_eq!(first.payload, b"first");
    // The behaviour under test is the passing of time itself: hold the only slot
    // until the second message has expired.
    std::thread::sleep(Duration::from_millis(2200));
    sub.ack(&first);
    assert_eq!(sub.expect_publish_acked().payload, b"last", "an expired message was delivered");
}

#[test]
fn no_local_on_one_of_two_overlapping_subscriptions_still_delivers_through_the_other() {
    // [MQTT-3.8.3-3] No Local only stops delivery through the subscription that has it;
    // a client's own message matching another subscription of it without No Local is
    // delivered through that one.
    let broker = TestBroker::start();
    let mut client = RawClient::connect(broker.addr(), V5, "overlap");
    assert_eq!(client.subscribe(&[("ov/#", 0x04 | 1)]), [1]);
    client.subscribe_one("ov/t", 1);
    client.publish("ov/t", b"own", 1, false);
    client.publish("ov/other", b"own, no-local only", 1, false);
    let got = client.expect_publish_acked();
    assert_eq!(got.payload, b"own");
    let unread = client.ping_then_unread();
    assert!(unread.is_empty(), "No Local ignored: {unread:?}");
}
