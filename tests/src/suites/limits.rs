//! Configured limits: packet size, connection count, topic depth, subscriptions per
//! client, and slow-consumer isolation with bounded broker memory.

use std::sync::mpsc;
use std::thread;

use shoal_core::ProtocolVersion::{V3_1_1, V5};

use super::MODERN;
use crate::harness::{wait_until, BrokerProcess, TestBroker};
use crate::raw::wire::{self, ConnectOptions};
use crate::raw::{Incoming, RawClient, DEADLINE};

#[test]
fn oversized_packet_closes_only_that_connection() {
    let broker = TestBroker::with_config("[limits]\nmax_packet_size = 1024");
    let mut sub = RawClient::connect(broker.addr(), V3_1_1, "size-sub");
    sub.subscribe_one("size/#", 1);
    let mut healthy = RawClient::connect(broker.addr(), V5, "size-healthy");
    for version in MODERN {
        let mut big = RawClient::connect(broker.addr(), version, "size-big");
        // Just under the limit is fine.
        big.publish("size/ok", &[b'x'; 900], 1, false);
        assert_eq!(sub.expect_publish_acked().topic, "size/ok");
        let _ =
            big.try_send(&wire::publish(version, "size/big", &[b'x'; 2048], 1, false, false, 9));
        let reason = big.expect_closed_with_reason(DEADLINE);
        if version.is_v5() {
            // v5 [MQTT-3.1.2-24]-family: Maximum Packet Size exceeded → 0x95.
            assert_eq!(reason, Some(0x95), "v5: DISCONNECT Packet too large");
        }
        healthy.publish("size/healthy", version.to_string().as_bytes(), 1, false);
        let got = sub.expect_publish_acked();
        assert_eq!(got.topic, "size/healthy", "{version}: oversized message was routed");
    }
}

#[test]
fn max_packet_size_counts_the_whole_packet() {
    // Limit 1024 bytes including the fixed header (docs/CONFIG.md): a 1024-byte
    // PUBLISH is accepted, a 1025-byte one closes the connection.
    let broker = TestBroker::with_config("[limits]\nmax_packet_size = 1024");
    for version in MODERN {
        let overhead = wire::publish(version, "t", b"", 0, false, false, 0).len();
        // A remaining length ≥ 128 takes a second length byte.
        let payload = 1024 - overhead - 1;
        let exact = wire::publish(version, "t", &vec![0; payload], 0, false, false, 0);
        assert_eq!(exact.len(), 1024);
        let mut client = RawClient::connect(broker.addr(), version, "boundary");
        client.send(&exact);
        client.ping();
        let over = wire::publish(version, "t", &vec![0; payload + 1], 0, false, false, 0);
        let _ = client.try_send(&over);
        client.expect_closed(DEADLINE);
    }
}

#[test]
fn oversized_length_is_refused_from_the_fixed_header() {
    // A PUBLISH header announcing 200 MB and no body: the broker must refuse it from the
    // fixed header alone, without waiting for (or buffering) the body. v5: DISCONNECT
    // 0x95 Packet too large first; 3.1.1 has no way to say why, so just the close.
    let broker = TestBroker::with_config("[limits]\nmax_packet_size = 1024");
    for version in MODERN {
        let mut client = RawClient::connect(broker.addr(), version, "liar");
        client.send(&[0x30, 0x80, 0x80, 0x80, 0x60, 0x00, 0x01, b't']);
        let reason = client.expect_closed_with_reason(DEADLINE);
        if version.is_v5() {
            assert_eq!(reason, Some(0x95), "v5: DISCONNECT Packet too large");
        }
    }
}

#[test]
fn oversized_connect_is_refused_from_the_fixed_header() {
    // Before CONNECT the version is unknown, so there is nothing to answer with: the
    // broker closes as soon as the fixed header shows the packet is too large.
    let broker = TestBroker::with_config("[limits]\nmax_packet_size = 1024");
    let mut client = RawClient::tcp(broker.addr(), V5);
    client.send(&[0x10, 0x80, 0x80, 0x80, 0x60, 0x00, 0x04, b'M', b'Q', b'T', b'T', 5]);
    let seen = client.expect_closed(DEADLINE);
    assert!(seen.is_empty(), "answered an oversized CONNECT with {seen:?}");
}

#[test]
fn v5_connack_announces_maximum_packet_size() {
    let broker = TestBroker::with_config("[limits]\nmax_packet_size = 4096");
    let (_client, reply) = RawClient::connect_raw(broker.addr(), &ConnectOptions::new(V5, "mps"));
    let Ok(Incoming::ConnAck { properties, .. }) = reply else { panic!("{reply:?}") };
    let mps = properties.iter().find(|p| p.id == 0x27).expect("Maximum Packet Size property");
    assert_eq!(mps.value, 4096u32.to_be_bytes());
}

#[test]
fn connections_beyond_max_connections_are_refused() {
    let broker = TestBroker::with_config("[limits]\nmax_connections = 3");
    let mut clients: Vec<RawClient> =
        (0..3).map(|i| RawClient::connect(broker.addr(), V3_1_1, &format!("cap-{i}"))).collect();
    let mut extra = RawClient::tcp(broker.addr(), V3_1_1);
    let _ = extra.try_send(&wire::connect(&ConnectOptions::new(V3_1_1, "cap-extra")));
    for packet in extra.expect_closed(DEADLINE) {
        assert!(
            matches!(packet, Incoming::ConnAck { code, .. } if code != 0),
            "connection over the limit got {packet:?}"
        );
    }
    for c in &mut clients {
        c.ping();
    }
    // A freed slot can be used again (the close is noticed asynchronously).
    if let Some(c) = clients.pop() {
        c.disconnect();
    }
    wait_until(DEADLINE, "a slot to free up", || {
        let (c, reply) = RawClient::connect_raw(broker.addr(), &ConnectOptions::new(V5, "cap-new"));
        let ok = matches!(reply, Ok(Incoming::ConnAck { code: 0, .. }));
        if ok {
            clients.push(c);
        }
        ok
    });
}

#[test]
fn a_taken_over_connection_lingering_on_its_last_bytes_does_not_count() {
    // A closed connection may keep its socket for a few seconds to write what it owes
    // (here the DISCONNECT 0x8E behind a backlog its client does not read). It is no
    // client's connection any more: a client reconnecting at once must not be refused
    // under max_connections, the broker's or its listener's, because of its own old
    // socket.
    for config in [
        "workers = 1\n[limits]\nmax_connections = 2\n",
        "workers = 1\n[[listener]]\nbind = \"127.0.0.1:0\"\nmax_connections = 2\n",
    ] {
        let broker = TestBroker::with_config(config);
        reconnect_beside_a_lingering_socket(&broker);
    }
}

/// Leaves a connection of client "linger" lingering on bytes it owes, with one other
/// connection open, then connects "linger" once more; `broker` allows two connections.
fn reconnect_beside_a_lingering_socket(broker: &TestBroker) {
    let mut stalled = RawClient::connect(broker.addr(), V5, "linger");
    stalled.subscribe_one("linger/t", 0);
    // Far more than the socket buffers hold: `stalled` never reads, so the broker's
    // write buffer for it stays full.
    let mut publisher = RawClient::connect(broker.addr(), V3_1_1, "linger-pub");
    for _ in 0..512 {
        publisher.publish("linger/t", &[b'x'; 64 * 1024], 0, false);
    }
    publisher.ping();
    publisher.disconnect();
    // The publisher's place frees up once its close is noticed; then "linger" takes
    // over its session, and the old connection lingers on the DISCONNECT it owes.
    let opts = ConnectOptions::new(V5, "linger");
    let mut second = None;
    wait_until(DEADLINE, "the publisher's place to free up", || {
        let (c, reply) = RawClient::connect_raw(broker.addr(), &opts);
        let ok = matches!(reply, Ok(Incoming::ConnAck { code: 0, .. }));
        second = ok.then_some(c);
        ok
    });
    // Two sockets are open (the lingering one and `second`), one connection is live:
    // reconnecting again takes `second`'s place instead of being refused.
    let (mut third, reply) = RawClient::connect_raw(broker.addr(), &opts);
    assert!(matches!(reply, Ok(Incoming::ConnAck { code: 0, .. })), "refused: {reply:?}");
    third.ping();
    drop((stalled, second));
}

fn refused_subscription(codes: &[u8]) -> bool {
    codes.iter().all(|c| *c >= 0x80)
}

#[test]
fn topic_deeper_than_max_topic_levels_is_refused() {
    let broker = TestBroker::with_config("[limits]\nmax_topic_levels = 4");
    for version in MODERN {
        let mut client = RawClient::connect(broker.addr(), version, "deep");
        client.subscribe_one("a/b/c/d", 1);
        // A refused subscription is a SUBACK failure (3.1.1: 0x80; v5: ≥ 0x80); closing
        // the connection would also be within the spec, so accept either.
        let id = client.next_packet_id();
        client.send(&wire::subscribe(version, id, &[("a/b/c/d/e", 1)]));
        match client.recv(DEADLINE) {
            Ok(Incoming::SubAck(_, codes)) => {
                assert!(refused_subscription(&codes), "{version}: granted {codes:?}")
            }
            Err(_) => continue,
            Ok(other) => panic!("{version}: {other:?}"),
        }
        // Publishing to a too-deep topic is not routed (or closes the connection).
        let mut watcher = RawClient::connect(broker.addr(), version, "deep-watch");
        watcher.subscribe_one("#", 1);
        let mut publisher = RawClient::connect(broker.addr(), version, "deep-pub");
        let _ =
            publisher.try_send(&wire::publish(version, "a/b/c/d/e/f", b"deep", 1, false, false, 3));
        let mut fresh = RawClient::connect(broker.addr(), version, "deep-pub2");
        fresh.publish("a/b/c/d", b"sentinel", 1, false);
        assert_eq!(watcher.expect_publish_acked().payload, b"sentinel", "{version}");
    }
}

#[test]
fn subscriptions_beyond_max_subscriptions_per_client_are_refused() {
    let broker = TestBroker::with_config("[limits]\nmax_subscriptions_per_client = 3");
    for version in MODERN {
        let mut client = RawClient::connect(broker.addr(), version, "greedy");
        for f in ["s/1", "s/2", "s/3"] {
            client.subscribe_one(f, 1);
        }
        // Re-subscribing to an existing filter replaces it and is not a new subscription.
        client.subscribe_one("s/3", 0);
        let id = client.next_packet_id();
        client.send(&wire::subscribe(version, id, &[("s/4", 1)]));
        match client.recv(DEADLINE) {
            Ok(Incoming::SubAck(_, codes)) => {
                assert!(refused_subscription(&codes), "{version}: granted {codes:?}");
                if version.is_v5() {
                    assert_eq!(codes, [0x97], "v5: Quota exceeded expected");
                }
            }
            Err(_) => continue,
            Ok(other) => panic!("{version}: {other:?}"),
        }
        let mut publisher = RawClient::connect(broker.addr(), version, "greedy-pub");
        publisher.publish("s/4", b"not subscribed", 1, false);
        publisher.publish("s/1", b"kept", 1, false);
        assert_eq!(client.expect_publish_acked().payload, b"kept", "{version}");
    }
}

#[test]
fn slow_consumer_does_not_stall_others_and_memory_stays_bounded() {
    const MESSAGES: usize = 2000;
    const PAYLOAD: usize = 16 * 1024; // 2000 × 16 KiB = 31 MiB through the broker
    const RSS_GROWTH_BOUND_KIB: u64 = 24 * 1024; // allowed growth while that passes
    const OUTGOING_BYTES: usize = 256 * 1024;
    // The publisher keeps at most one window (8 × 16 KiB = 128 KiB) ahead of the fast
    // subscriber, so the fast subscriber's write buffer can never fill: QoS 0 to a
    // consumer whose buffer is full may be dropped by design, and the point here is
    // that the *slow* consumers' full buffers cost the fast one nothing. The publisher
    // is never paced by the slow consumers.
    const WINDOW: usize = 8;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "workers = 2\n[limits]\nmax_outgoing_bytes = {OUTGOING_BYTES}\nmax_queued_messages = 100\n"
        ),
    )
    .unwrap();
    let broker = BrokerProcess::start(&["--config", config.path().to_str().unwrap()]);

    // The slow consumers subscribe and then never read a byte.
    let mut slow = RawClient::connect(broker.addr(), V3_1_1, "slow");
    slow.subscribe_one("flood/t", 0);
    let mut slow_q1 = RawClient::connect(broker.addr(), V5, "slow-q1");
    slow_q1.subscribe_one("flood/t", 1);
    let mut fast = RawClient::connect(broker.addr(), V5, "fast");
    fast.subscribe_one("flood/t", 0);
    let baseline = broker.vm_rss_kib().expect("VmRSS of the broker");

    let (window_done, next_window) = mpsc::channel::<()>();
    let addr = broker.addr();
    let publisher = thread::spawn(move || {
        let mut p = RawClient::connect(addr, V3_1_1, "flooder");
        let payload = vec![b'z'; PAYLOAD];
        for chunk in 0..MESSAGES / WINDOW {
            if chunk > 0 {
                next_window.recv_timeout(DEADLINE).expect("fast subscriber stalled");
            }
            for i in 0..WINDOW {
                let mut body = payload.clone();
                body[..4].copy_from_slice(&((chunk * WINDOW + i) as u32).to_be_bytes());
                p.publish_no_wait("flood/t", &body, 1, false);
            }
            let mut acks = 0;
            while acks < WINDOW {
                if let Incoming::PubAck(..) = p.expect() {
                    acks += 1;
                }
            }
        }
    });
    let mut peak = baseline;
    for expected in 0..(MESSAGES / WINDOW * WINDOW) as u32 {
        let got = fast.expect_publish();
        let seq = u32::from_be_bytes(got.payload[..4].try_into().unwrap());
        assert_eq!(seq, expected, "fast subscriber lost or reordered a message");
        if (expected as usize + 1) % WINDOW == 0 {
            // The publisher may be gone after the last window.
            let _ = window_done.send(());
        }
        if expected % 64 == 0 {
            peak = peak.max(broker.vm_rss_kib().unwrap_or(0));
        }
    }
    publisher.join().unwrap();
    peak = peak.max(broker.vm_rss_kib().unwrap_or(0));
    assert!(
        peak.saturating_sub(baseline) < RSS_GROWTH_BOUND_KIB,
        "broker RSS grew from {baseline} KiB to {peak} KiB (bound {RSS_GROWTH_BOUND_KIB} KiB)"
    );
    // The broker is still responsive with the slow consumers still attached.
    fast.ping();
    slow_q1.ping_then_unread();
    drop(slow);
}

/// Regression: with never-reading subscribers attached and an unpaced publisher, the
/// fast subscriber's backlog once drained one batch (8 × 16 KiB) per one-second timer
/// tick instead of on write readiness, so 2000 messages took about a minute.
#[test]
fn fast_subscriber_backlog_drains_promptly_beside_a_stalled_subscriber() {
    const MESSAGES: usize = 2000;
    const WINDOW: usize = 32;
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "workers = 2\n[limits]\nmax_outgoing_bytes = 262144\nmax_queued_messages = 100\n",
    )
    .unwrap();
    let broker = BrokerProcess::start(&["--config", config.path().to_str().unwrap()]);
    let mut stalled = RawClient::connect(broker.addr(), V5, "stalled-q1");
    stalled.subscribe_one("burst/t", 1);
    let mut stalled_q0 = RawClient::connect(broker.addr(), V3_1_1, "stalled-q0");
    stalled_q0.subscribe_one("burst/t", 0);
    let mut fast = RawClient::connect(broker.addr(), V5, "fast");
    fast.subscribe_one("burst/t", 0);
    fast.subscribe_one("burst/end", 1);
    let addr = broker.addr();
    let started = std::time::Instant::now();
    let publisher = thread::spawn(move || {
        let mut p = RawClient::connect(addr, V3_1_1, "burster");
        let payload = vec![b'b'; 16 * 1024];
        for _ in 0..MESSAGES / WINDOW {
            for _ in 0..WINDOW {
                p.publish_no_wait("burst/t", &payload, 1, false);
            }
            let mut acks = 0;
            while acks < WINDOW {
                if let Incoming::PubAck(..) = p.expect() {
                    acks += 1;
                }
            }
        }
        p.publish("burst/end", b"end", 1, false);
    });
    let mut received = 0usize;
    loop {
        let got = fast.expect_publish_acked();
        if got.topic == "burst/end" {
            break;
        }
        received += 1;
    }
    let elapsed = started.elapsed();
    publisher.join().unwrap();
    assert!(
        elapsed < std::time::Duration::from_secs(10),
        "{received} of {} messages took {elapsed:?} to reach a reading subscriber",
        MESSAGES / WINDOW * WINDOW
    );
    stalled.ping_then_unread();
    drop(stalled_q0);
}

#[test]
fn offline_queue_holds_only_the_messages_that_fit_max_queued_bytes() {
    // 64 KiB of queue; each message weighs its topic (4 bytes) plus payload, 8 KiB in
    // all, so exactly the first eight of twenty fit and the other twelve are dropped as
    // queue_full. One worker: the publisher's PUBACK then comes after the offline
    // session took (or refused) the message, so the reconnect cannot overtake it.
    const BOUND: usize = 64 * 1024;
    const WEIGHT: usize = 8 * 1024;
    const TOPIC: &str = "qb/t";
    let broker =
        TestBroker::with_config(&format!("workers = 1\n[limits]\nmax_queued_bytes = {BOUND}\n"));
    for version in MODERN {
        let opts = ConnectOptions::persistent(version, "qbytes");
        let (mut sub, _) = RawClient::connect_with(broker.addr(), &opts);
        sub.subscribe_one("qb/#", 1);
        sub.disconnect();
        let mut publisher = RawClient::connect(broker.addr(), version, "qbytes-pub");
        for i in 0..20u8 {
            publisher.publish(TOPIC, &vec![i; WEIGHT - TOPIC.len()], 1, false);
        }
        let (mut sub, present) = RawClient::connect_with(broker.addr(), &opts);
        assert!(present, "{version}");
        for i in 0..(BOUND / WEIGHT) as u8 {
            let got = sub.expect_publish_acked();
            assert_eq!((got.topic.as_str(), got.payload.len()), (TOPIC, WEIGHT - TOPIC.len()));
            assert_eq!(got.payload[0], i, "{version}: out of order or a gap");
        }
        // Nothing else was kept: the next thing to arrive is what is published now.
        publisher.publish("qb/sentinel", b"end", 1, false);
        let got = sub.expect_publish_acked();
        let first = got.payload.first();
        assert_eq!(
            got.topic, "qb/sentinel",
            "{version}: message {first:?} was kept past the bound"
        );
        sub.disconnect();
        RawClient::connect(broker.addr(), version, "qbytes").disconnect();
        publisher.disconnect();
    }
}
