//! The session queue on its own (`shoal_core::session`, no broker around it).
//!
//! - `session/queue/qos1/{1,100}`: a connected 3.1.1 session whose in-flight window is
//!   full takes a QoS 1 delivery into its queue (`handle_delivery`), then a PUBACK frees
//!   one slot and the oldest queued message moves into the window and is encoded
//!   (`handle_packet` → `pump` → `encode_transmit`). This is a slow subscriber's
//!   per-message path: everything the queue's bookkeeping (count and byte bounds) costs
//!   shows here. The parameter is how many messages wait behind the window; the topic is
//!   a typical telemetry one and the payload 64 bytes. Throughput is in messages.

// Set-up failures (a refused delivery, an unexpected packet) should stop the run.
#![allow(clippy::panic)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoal_core::codec::{Connect, ConnectProperties, PubAckLike};
use shoal_core::session::{ConnectAnswer, Delivery, Message, PublishCache, SentCounts, Session};
use shoal_core::{Limits, Packet, PacketId, ProtocolVersion, QoS, TopicName};

fn delivery(message: &Arc<Message>) -> Delivery {
    Delivery {
        message: message.clone(),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: Vec::new(),
        share: None,
    }
}

/// The encoded size of one bench PUBLISH: fixed header 2, topic 2 + 32, id 2, payload 64.
const FRAME: usize = 102;

/// Appends the packet ids of the PUBLISHes encoded in `out` (each `FRAME` bytes).
fn read_ids(out: &[u8], ids: &mut VecDeque<PacketId>) {
    for frame in out.chunks(FRAME) {
        assert_eq!(frame.len(), FRAME, "unexpected packet in the output");
        let id = frame.get(36..38).map(|b| u16::from_be_bytes([b[0], b[1]]));
        ids.extend(id.and_then(PacketId::new));
    }
}

fn queue(c: &mut Criterion) {
    let mut group = c.benchmark_group("session/queue/qos1");
    group.throughput(Throughput::Elements(1));
    for waiting in [1usize, 100] {
        let now = Instant::now();
        let message = Arc::new(Message {
            topic: TopicName::try_from_str("site/berlin-3/line/7/temperature")
                .unwrap_or_else(|e| panic!("topic: {e:?}")),
            payload: Bytes::from(vec![b'x'; 64]),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            expires_at: None,
            publisher: None,
        });
        let window = 16u16;
        let limits = Limits { max_inflight: window, ..Limits::default() };
        let mut session = Session::new(Arc::from("bench"), limits);
        let connect = Connect {
            protocol: ProtocolVersion::V3_1_1,
            clean_start: false,
            keep_alive: 0,
            client_id: "bench".to_owned(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        };
        let answer = ConnectAnswer { max_keep_alive_secs: u16::MAX, ..ConnectAnswer::default() };
        session.handle_connect(now, &connect, answer);
        assert!(matches!(session.poll_transmit(), Some(Packet::ConnAck(_))));
        // Fill the window, then queue `waiting` behind it.
        for _ in 0..usize::from(window) + waiting {
            if session.handle_delivery(now, delivery(&message)).is_err() {
                panic!("set-up delivery refused");
            }
        }
        assert_eq!(session.queued(), waiting);
        let (mut out, mut cache, mut sent) =
            (BytesMut::with_capacity(1 << 16), PublishCache::default(), SentCounts::default());
        session.encode_transmit(ProtocolVersion::V3_1_1, &mut out, &mut cache, &mut sent);
        // The ids in flight, oldest first, read from the encoded PUBLISHes.
        let mut inflight: VecDeque<PacketId> = VecDeque::new();
        read_ids(&out, &mut inflight);
        assert_eq!(inflight.len(), usize::from(window));
        group.bench_function(BenchmarkId::from_parameter(waiting), |b| {
            b.iter(|| {
                let queued = session.handle_delivery(now, delivery(&message));
                if let Some(id) = inflight.pop_front() {
                    session.handle_packet(now, Packet::PubAck(PubAckLike::new(id)));
                }
                out.clear();
                session.encode_transmit(ProtocolVersion::V3_1_1, &mut out, &mut cache, &mut sent);
                read_ids(&out, &mut inflight);
                black_box(queued)
            });
        });
        assert_eq!(session.queued(), waiting, "the queue stayed at its depth");
    }
    group.finish();
}

criterion_group!(benches, queue);
criterion_main!(benches);
