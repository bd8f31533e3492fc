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
