//! In-process smoke tests: a broker on 127.0.0.1:0, raw MQTT bytes over a TcpStream.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use shoal_core::codec::{self, Connect, ConnectProperties, Packet, Publish, Subscribe};
use shoal_core::codec::{SubscribeFilter, SubscriptionOptions};
use shoal_core::{PacketId, ProtocolVersion, QoS, ReasonCode, TopicName};

use super::*;

fn broker(workers: usize) -> Broker {
    let mut config = Config { workers, ..Config::default() };
    config.listeners[0].bind = "127.0.0.1:0".parse().unwrap();
    config.persistence.enabled = false;
    Broker::start(config).unwrap()
}

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    version: ProtocolVersion,
}

impl Client {
    fn connect(
        broker: &Broker,
        id: &str,
        version: ProtocolVersion,
        clean: bool,
    ) -> (Client, Packet) {
        let stream = TcpStream::connect(broker.local_addr()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut c = Client { stream, buf: BytesMut::new(), version };
        c.send(&Packet::Connect(Box::new(Connect {
            protocol: version,
            clean_start: clean,
            keep_alive: 30,
            client_id: id.into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        })));
        let ack = c.recv();
        (c, ack)
    }

    fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        p.encode(self.version, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    fn recv(&mut self) -> Packet {
        loop {
            if let Some(p) = codec::decode(&mut self.buf, self.version, 1 << 20).unwrap() {
                return p;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).unwrap();
            assert!(n > 0, "broker closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            filters: vec![SubscribeFilter {
                filter: filter.into(),
                options: SubscriptionOptions { qos, ..Default::default() },
            }],
            properties: Default::default(),
        }));
        assert!(matches!(self.recv(), Packet::SubAck(_)));
    }

    fn publish(&mut self, topic: &str, payload: &'static [u8], qos: QoS, retain: bool) {
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic: TopicName::try_from_str(topic).unwrap(),
            packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(9).unwrap()),
            properties: Default::default(),
            payload: bytes::Bytes::from_static(payload),
        }));
    }
}

#[test]
fn connect_gets_connack() {
    let b = broker(2);
    let (_c, ack) = Client::connect(&b, "smoke-1", ProtocolVersion::V3_1_1, true);
    assert!(
        matches!(ack, Packet::ConnAck(a) if a.reason_code == ReasonCode::Success && !a.session_present)
    );
    b.shutdown().unwrap();
}

#[test]
fn empty_id_with_persistent_session_is_refused() {
    let b = broker(1);
    let (_c, ack) = Client::connect(&b, "", ProtocolVersion::V3_1_1, false);
    assert!(
        matches!(ack, Packet::ConnAck(a) if a.reason_code == ReasonCode::ClientIdentifierNotValid)
    );
}

#[test]
fn publish_reaches_subscriber_on_any_worker() {
    let b = broker(3);
    let mut subs: Vec<Client> = (0..4)
        .map(|i| Client::connect(&b, &format!("sub-{i}"), ProtocolVersion::V5, true).0)
        .collect();
    for s in &mut subs {
        s.subscribe("a/+", QoS::AtLeastOnce);
    }
    let (mut p, _) = Client::connect(&b, "pub", ProtocolVersion::V3_1_1, true);
    p.publish("a/b", b"hello", QoS::AtLeastOnce, false);
    assert!(matches!(p.recv(), Packet::PubAck(_)));
    for s in &mut subs {
        match s.recv() {
            Packet::Publish(m) => {
                assert_eq!(&m.payload[..], b"hello");
                assert_eq!(m.qos, QoS::AtLeastOnce);
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    b.shutdown().unwrap();
}

#[test]
fn retained_message_is_delivered_on_subscribe() {
    let b = broker(2);
    let (mut p, _) = Client::connect(&b, "rpub", ProtocolVersion::V3_1_1, true);
    p.publish("r/x", b"kept", QoS::AtLeastOnce, true);
    assert!(matches!(p.recv(), Packet::PubAck(_)));
    let (mut s, _) = Client::connect(&b, "rsub", ProtocolVersion::V3_1_1, true);
    s.subscribe("r/#", QoS::AtMostOnce);
    assert!(matches!(s.recv(), Packet::Publish(m) if m.retain && &m.payload[..] == b"kept"));
}

#[test]
fn persistent_session_gets_queued_qos1_after_reconnect() {
    let b = broker(2);
    let (mut s, _) = Client::connect(&b, "durable", ProtocolVersion::V3_1_1, false);
    s.subscribe("q", QoS::AtLeastOnce);
    drop(s);
    let (mut p, _) = Client::connect(&b, "qpub", ProtocolVersion::V3_1_1, true);
    // Whether or not the broker has seen the subscriber go yet, the QoS 1 message is
    // either queued offline or in flight and redelivered on reconnect.
    p.publish("q", b"while away", QoS::AtLeastOnce, false);
    assert!(matches!(p.recv(), Packet::PubAck(_)));
    let (mut s, ack) = Client::connect(&b, "durable", ProtocolVersion::V3_1_1, false);
    assert!(matches!(ack, Packet::ConnAck(a) if a.session_present));
    assert!(matches!(s.recv(), Packet::Publish(m) if &m.payload[..] == b"while away"));
}

impl Client {
    /// Reads until the broker closes the socket; returns the packets seen.
    fn recv_until_closed(&mut self) -> Vec<Packet> {
        let mut seen = Vec::new();
        loop {
            while let Ok(Some(p)) = codec::decode(&mut self.buf, self.version, 1 << 20) {
                seen.push(p);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return seen,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

#[test]
fn takeover_closes_old_connection_with_0x8e() {
    let b = broker(2);
    let (mut old, _) = Client::connect(&b, "twin", ProtocolVersion::V5, false);
    let (_new, ack) = Client::connect(&b, "twin", ProtocolVersion::V5, false);
    assert!(matches!(ack, Packet::ConnAck(a) if a.session_present));
    let seen = old.recv_until_closed();
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::SessionTakenOver),
        "{seen:?}"
    );
}

#[test]
fn qos2_resent_before_pubrel_is_delivered_once() {
    let b = broker(2);
    let (mut s, _) = Client::connect(&b, "q2sub", ProtocolVersion::V3_1_1, true);
    s.subscribe("e", QoS::ExactlyOnce);
    let (mut p, _) = Client::connect(&b, "q2pub", ProtocolVersion::V3_1_1, true);
    p.publish("e", b"once", QoS::ExactlyOnce, false);
    assert!(matches!(p.recv(), Packet::PubRec(_)));
    p.publish("e", b"once", QoS::ExactlyOnce, false);
    assert!(matches!(p.recv(), Packet::PubRec(_)));
    p.send(&Packet::PubRel(shoal_core::codec::PubAckLike::new(PacketId::new(9).unwrap())));
    assert!(matches!(p.recv(), Packet::PubComp(_)));
    // A marker published after the PUBREL: if the duplicate had been routed, it would
    // arrive before the marker.
    p.publish("e", b"marker", QoS::AtMostOnce, false);
    let Packet::Publish(first) = s.recv() else { panic!("expected PUBLISH") };
    assert_eq!(&first.payload[..], b"once");
    let id = first.packet_id.unwrap();
    s.send(&Packet::PubRec(shoal_core::codec::PubAckLike::new(id)));
    // The marker may be written before or after the PUBREL answering our PUBREC (it
    // was published before we read "once"); a second "once" must never come.
    let (mut rel, mut marker) = (false, false);
    while !(rel && marker) {
        match s.recv() {
            Packet::PubRel(_) => rel = true,
            Packet::Publish(m) => {
                assert_eq!(&m.payload[..], b"marker", "the resent QoS 2 PUBLISH was routed twice");
                marker = true;
            }
            other => panic!("unexpected {}", other.name()),
        }
    }
    s.send(&Packet::PubComp(shoal_core::codec::PubAckLike::new(id)));
}

#[test]
fn malformed_v5_packet_gets_disconnect_with_reason() {
    let b = broker(1);
    let (mut c, _) = Client::connect(&b, "bad", ProtocolVersion::V5, true);
    // PUBLISH QoS 3: malformed [MQTT-3.3.1-4].
    c.stream.write_all(&[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01]).unwrap();
    let seen = c.recv_until_closed();
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::MalformedPacket),
        "{seen:?}"
    );
}

#[test]
fn unsupported_protocol_level_gets_connack_1() {
    let b = broker(1);
    let mut s = TcpStream::connect(b.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // CONNECT, protocol "MQTT" level 9.
    s.write_all(&[0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 9, 0x02, 0, 30, 0, 1, b'x']).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert_eq!(got, vec![0x20, 0x02, 0x00, 0x01]);
}

#[test]
fn shutdown_sends_v5_clients_server_shutting_down() {
    let b = broker(2);
    let (mut c, _) = Client::connect(&b, "bye", ProtocolVersion::V5, true);
    b.shutdown().unwrap();
    let seen = c.recv_until_closed();
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ServerShuttingDown),
        "{seen:?}"
    );
}

#[test]
fn slow_subscriber_does_not_block_publisher() {
    let mut config = Config { workers: 2, ..Config::default() };
    config.listeners[0].bind = "127.0.0.1:0".parse().unwrap();
    config.persistence.enabled = false;
    config.broker_limits.max_outgoing_bytes = 4096;
    let b = Broker::start(config).unwrap();
    let (mut slow, _) = Client::connect(&b, "slow", ProtocolVersion::V3_1_1, true);
    slow.subscribe("flood", QoS::AtMostOnce);
    let (mut fast, _) = Client::connect(&b, "fast", ProtocolVersion::V3_1_1, true);
    fast.subscribe("flood", QoS::AtLeastOnce);
    let (mut p, _) = Client::connect(&b, "flooder", ProtocolVersion::V3_1_1, true);
    static PAYLOAD: [u8; 8192] = [7; 8192];
    for _ in 0..2000 {
        p.publish("flood", &PAYLOAD, QoS::AtMostOnce, false);
    }
    p.publish("flood", b"end", QoS::AtLeastOnce, false);
    assert!(matches!(p.recv(), Packet::PubAck(_)), "publisher was not blocked");
    // The fast subscriber keeps up and sees the end marker.
    loop {
        if let Packet::Publish(m) = fast.recv() {
            if &m.payload[..] == b"end" {
                break;
            }
        }
    }
}

/// A publisher writing QoS 0 as fast as the socket takes it must not starve the write
/// phase: its subscriber receives messages while the publisher is still sending, and
/// the broker reads the publisher in bounded slices (regression: it used to read the
/// publisher until `WouldBlock`, which a fast publisher never lets happen).
fn subscriber_receives_while_publisher_floods(workers: usize) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let b = broker(workers);
    let (mut sub, _) = Client::connect(&b, "flood-sub", ProtocolVersion::V3_1_1, true);
    sub.subscribe("flood/fast", QoS::AtMostOnce);
    let (p, _) = Client::connect(&b, "flood-pub", ProtocolVersion::V3_1_1, true);
    // 64 KiB of whole PUBLISH frames, written round and round: however a write is cut,
    // the stream stays a sequence of whole frames.
    let mut frames = BytesMut::new();
    while frames.len() < 64 * 1024 {
        let publish = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: TopicName::try_from_str("flood/fast").unwrap(),
            packet_id: None,
            properties: Default::default(),
            payload: bytes::Bytes::from_static(&[5; 64]),
        });
        publish.encode(ProtocolVersion::V3_1_1, &mut frames).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (stop, written) = (stop.clone(), written.clone());
        let mut stream = p.stream;
        std::thread::spawn(move || {
            stream.set_write_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut off = 0;
            while !stop.load(Ordering::Relaxed) {
                match stream.write(&frames[off..]) {
                    Ok(n) => {
                        off = (off + n) % frames.len();
                        written.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(e) => panic!("publisher write failed: {e}"),
                }
            }
        })
    };
    // Wait until the publisher is well under way, so the broker always has bytes to read.
    while written.load(Ordering::Relaxed) < 4 * 1024 * 1024 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut received = 0;
    while received < 2000 {
        // `recv` fails the test after its 5 s read timeout: nothing delivered.
        if let Packet::Publish(m) = sub.recv() {
            assert_eq!(m.topic.as_str(), "flood/fast");
            received += 1;
        }
    }
    let during = written.load(Ordering::Relaxed);
    assert!(!publisher.is_finished(), "the publisher stopped early");
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    assert!(during >= 4 * 1024 * 1024);
    b.shutdown().unwrap();
}

#[test]
fn subscriber_on_same_worker_receives_while_publisher_floods() {
    subscriber_receives_while_publisher_floods(1);
}

#[test]
fn subscriber_on_any_worker_receives_while_publisher_floods() {
    subscriber_receives_while_publisher_floods(2);
}
