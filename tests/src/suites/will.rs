//! Will messages: published on an abnormal end of the connection (socket drop,
//! keep-alive expiry, protocol error, takeover), not after a normal DISCONNECT.
//!
//! Negative checks run on a one-worker broker so that the will (if any) and the
//! sentinel that follows it travel the same in-order path to the subscriber.

use std::time::Duration;

use shoal_core::ProtocolVersion::{self, V3_1_1, V5};

use super::MODERN;
use crate::harness::TestBroker;
use crate::raw::wire::{self, ConnectOptions};
use crate::raw::{RawClient, DEADLINE};

fn watcher(broker: &TestBroker, version: ProtocolVersion, filter: &str) -> RawClient {
    let mut sub = RawClient::connect(broker.addr(), version, "will-watcher");
    sub.subscribe_one(filter, 1);
    sub
}

fn will_client(broker: &TestBroker, version: ProtocolVersion, id: &str, topic: &str) -> RawClient {
    let opts = ConnectOptions::new(version, id).with_will(topic, b"gone", 1, false);
    RawClient::connect_with(broker.addr(), &opts).0
}

#[test]
fn will_is_published_when_the_socket_drops_without_disconnect() {
    // [MQTT-3.1.2-8] the will is published when the connection closes abnormally.
    let broker = TestBroker::start();
    for version in MODERN {
        let mut sub = watcher(&broker, version, "will/#");
        let client = will_client(&broker, version, "dropper", "will/drop");
        client.drop_connection();
        let got = sub.expect_publish_acked();
        assert_eq!((got.topic.as_str(), got.payload.as_slice()), ("will/drop", &b"gone"[..]));
        assert_eq!(got.qos, 1, "{version}: will QoS");
        sub.disconnect();
    }
}

#[test]
fn will_is_published_when_keep_alive_expires() {
    // [MQTT-3.1.2-24] no packet within 1.5 × keep alive: the server MUST disconnect,
    // and as the close is abnormal the will is published.
    let broker = TestBroker::start();
    for version in MODERN {
        let mut sub = watcher(&broker, version, "will/#");
        let opts = ConnectOptions::new(version, "sleeper").with_keep_alive(1).with_will(
            "will/keepalive",
            b"timed out",
            1,
            false,
        );
        let (mut silent, _) = RawClient::connect_with(broker.addr(), &opts);
        let got = sub.expect_publish_acked();
        assert_eq!(got.payload, b"timed out", "{version}");
        let reason = silent.expect_closed_with_reason(DEADLINE);
        if version.is_v5() {
            assert_eq!(reason, Some(0x8D), "v5: DISCONNECT Keep Alive timeout");
        }
        sub.disconnect();
    }
}

#[test]
fn keep_alive_is_not_enforced_while_the_client_pings() {
    let broker = TestBroker::start();
    let mut sub = watcher(&broker, V3_1_1, "will/#");
    let opts = ConnectOptions::new(V3_1_1, "pinger").with_keep_alive(1).with_will(
        "will/pinger",
        b"should not",
        1,
        false,
    );
    let (mut client, _) = RawClient::connect_with(broker.addr(), &opts);
    // Three seconds of pings every half second: twice the 1.5 s allowance.
    for _ in 0..6 {
        assert!(client.recv(Duration::from_millis(500)).is_err());
        client.ping();
    }
    client.disconnect();
    let mut publisher = RawClient::connect(broker.addr(), V3_1_1, "sentinel");
    publisher.publish("will/sentinel", b"sentinel", 1, false);
    assert_eq!(sub.expect_publish_acked().topic, "will/sentinel");
}

#[test]
fn will_is_published_after_a_protocol_error() {
    let broker = TestBroker::start();
    for version in MODERN {
        let mut sub = watcher(&broker, version, "will/#");
        let mut client = will_client(&broker, version, "violator", "will/error");
        // PUBLISH with QoS 3 [MQTT-3.3.1-4].
        let _ = client.try_send(&[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01]);
        client.expect_closed(DEADLINE);
        assert_eq!(sub.expect_publish_acked().topic, "will/error", "{version}");
        sub.disconnect();
    }
}

#[test]
fn will_is_not_published_after_a_normal_disconnect() {
    // [MQTT-3.1.2-10] DISCONNECT removes the will.
    let broker = TestBroker::with_config("workers = 1");
    for version in MODERN {
        let mut sub = watcher(&broker, version, "will/#");
        let mut client = will_client(&broker, version, "polite", "will/polite");
        client.send(&wire::disconnect(version, 0));
        // The broker closes after DISCONNECT, so it has handled it before the sentinel.
        client.expect_closed(DEADLINE);
        let mut publisher = RawClient::connect(broker.addr(), version, "sentinel");
        publisher.publish("will/sentinel", b"sentinel", 1, false);
        let got = sub.expect_publish_acked();
        assert_eq!(got.topic, "will/sentinel", "{version}: will published after DISCONNECT");
        sub.disconnect();
    }
}

#[test]
fn v5_disconnect_with_will_message_publishes_the_will() {
    // v5 3.14.2.1: reason 0x04 "Disconnect with Will Message".
    let broker = TestBroker::start();
    let mut sub = watcher(&broker, V5, "will/#");
    let mut client = will_client(&broker, V5, "asks-for-will", "will/asked");
    client.send(&wire::disconnect(V5, 0x04));
    client.expect_closed(DEADLINE);
    assert_eq!(sub.expect_publish_acked().topic, "will/asked");
}

#[test]
fn retained_will_is_retained() {
    let broker = TestBroker::start();
    for version in MODERN {
        let topic = format!("will/retained/{version}");
        let opts = ConnectOptions::new(version, "retainer").with_will(&topic, b"last", 1, true);
        RawClient::connect_with(broker.addr(), &opts).0.drop_connection();
        // A subscriber that arrives later still gets it, flagged retained. The broker
        // publishes the will (storing it as retained) before it closes its end of the
        // dropped connection, and `drop_connection` waits for that close: subscribing
        // any earlier could catch the will live, with RETAIN cleared.
        let mut late = RawClient::connect(broker.addr(), version, "late");
        late.subscribe_one(&topic, 1);
        let p = late.expect_publish_acked();
        assert!(p.retain && p.payload == b"last", "{version}: {p:?}");
        late.disconnect();
    }
}

#[test]
fn takeover_publishes_the_old_connections_will() {
    // 3.1.1 [MQTT-3.1.4-2]: the existing client is disconnected, and since it sent no
    // DISCONNECT its will is published. v5 [MQTT-3.1.4-3]: DISCONNECT 0x8E (Session
    // taken over) to the old connection; with Will Delay 0 the will is published
    // (3.1.2.5, [MQTT-3.1.2-8]).
    let broker = TestBroker::start();
    for version in MODERN {
        let mut sub = watcher(&broker, version, "will/#");
        let mut old = will_client(&broker, version, "contested", "will/takeover");
        let mut new = RawClient::connect(broker.addr(), version, "contested");
        let reason = old.expect_closed_with_reason(DEADLINE);
        if version.is_v5() {
            assert_eq!(reason, Some(0x8E), "v5: DISCONNECT Session taken over");
        }
        assert_eq!(sub.expect_publish_acked().topic, "will/takeover", "{version}");
        new.ping();
        sub.disconnect();
    }
}

#[test]
fn any_packet_resets_the_keep_alive_timer() {
    // [MQTT-3.1.2-24]: the limit is on time between any two control packets, not pings.
    let broker = TestBroker::start();
    let opts = ConnectOptions::new(V5, "chatty").with_keep_alive(1);
    let (mut client, _) = RawClient::connect_with(broker.addr(), &opts);
    for i in 0..6u8 {
        assert!(client.recv(Duration::from_millis(500)).is_err());
        client.publish("chatty/t", &[i], 1, false);
    }
    client.ping();
}
