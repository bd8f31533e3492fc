//! Wire codec throughput: decoding and encoding PUBLISH, the packet every message
//! crosses twice (in from the publisher, out to each subscriber), and CONNECT, which
//! dominates connection storms.
//!
//! Inputs model a broker's steady state: frames are decoded back to back from a warm
//! read buffer that already shares its allocation (as a connection's does after its
//! first frame was split off), and encoded into a reused write buffer. Buffers are
//! filled and decoded packets dropped outside the timed section. PUBLISH covers QoS 0
//! and 1, payloads of 16 B, 256 B and 4 KiB, MQTT 3.1.1 and 5.0 (5.0 with an empty
//! property block, the common case), plus a whole 64-byte QoS 0 frame, the size the
//! decode budget (well under 100 ns) is set for. Throughput is in frame bytes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use shoal_core::codec::{
    decode, encode, Connect, ConnectProperties, LastWill, Packet, Publish, PublishProperties,
    WillProperties,
};
use shoal_core::{PacketId, ProtocolVersion, QoS, TopicName};

const MAX_PACKET_BYTES: usize = 1 << 20;

fn versions() -> [(&'static str, ProtocolVersion); 2] {
    [("v311", ProtocolVersion::V3_1_1), ("v5", ProtocolVersion::V5)]
}

fn publish(qos: QoS, topic: &str, payload_len: usize) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::try_from_str(topic).unwrap_or_else(|_| TopicName::empty()),
        packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(42)).flatten(),
        properties: PublishProperties::default(),
        payload: Bytes::from(vec![0xA5; payload_len]),
    }
}

fn connect(version: ProtocolVersion) -> Packet {
    let mut properties = ConnectProperties::default();
    if version.is_v5() {
        properties.session_expiry_interval = Some(3600);
        properties.receive_maximum = Some(100);
    }
    Packet::Connect(Box::new(Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 60,
        client_id: "bench-client-000042".into(),
        will: Some(LastWill {
            topic: TopicName::try_from_str("clients/bench-client-000042/status")
                .unwrap_or_else(|_| TopicName::empty()),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties::default(),
        }),
        username: Some("device".into()),
        password: Some(Bytes::from_static(b"correct horse battery staple")),
        properties,
    }))
}

fn encoded(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    if let Err(e) = encode(packet, version, &mut out) {
        eprintln!("bench input does not encode: {e}");
    }
    out.to_vec()
}

type Group<'a> = BenchmarkGroup<'a, WallTime>;

/// Frames decoded per timed run: enough to amortise the clock reads, few enough that
/// the read buffer stays in cache as a connection's does.
const FRAMES_PER_RUN: u64 = 256;

fn bench_decode(group: &mut Group<'_>, id: &str, frame: &[u8], version: ProtocolVersion) {
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            let mut decoded = Vec::with_capacity(FRAMES_PER_RUN as usize);
            while left > 0 {
                let n = left.min(FRAMES_PER_RUN);
                // A read buffer holding n frames, already in the shared representation a
                // connection's buffer has once its first frame was split off.
                let mut buf = BytesMut::with_capacity(frame.len() * n as usize);
                drop(buf.split_to(0));
                for _ in 0..n {
                    buf.extend_from_slice(frame);
                }
                let start = Instant::now();
                for _ in 0..n {
                    decoded.push(decode(black_box(&mut buf), version, MAX_PACKET_BYTES));
                }
                total += start.elapsed();
                // Dropping the packets is the consumer's cost, not the decoder's.
                black_box(&decoded);
                decoded.clear();
                left -= n;
            }
            total
        })
    });
}

fn bench_encode(group: &mut Group<'_>, id: &str, packet: &Packet, version: ProtocolVersion) {
    let len = encoded(packet, version).len();
    group.throughput(Throughput::Bytes(len as u64));
    let mut out = BytesMut::with_capacity(len * 2);
    group.bench_function(id, |b| {
        b.iter(|| {
            out.clear();
            let result = encode(black_box(packet), version, &mut out);
            black_box((result, out.len()))
        })
    });
}

fn publish_benches(c: &mut Criterion) {
    let topic = "sensors/building-7/floor-3/temperature";
    for (direction, is_decode) in [("decode", true), ("encode", false)] {
        for (vname, version) in versions() {
            for (qname, qos) in [("qos0", QoS::AtMostOnce), ("qos1", QoS::AtLeastOnce)] {
                let mut group = c.benchmark_group(format!("{direction}/publish/{vname}/{qname}"));
                for (size, len) in [("16B", 16), ("256B", 256), ("4KiB", 4096)] {
                    let packet = Packet::Publish(publish(qos, topic, len));
                    if is_decode {
                        bench_decode(&mut group, size, &encoded(&packet, version), version);
                    } else {
                        bench_encode(&mut group, size, &packet, version);
                    }
                }
                group.finish();
            }
        }
    }
    // A whole 64-byte frame: 2 header + 2 + 14 topic + 46 payload.
    let version = ProtocolVersion::V3_1_1;
    let packet = Packet::Publish(publish(QoS::AtMostOnce, "sensors/7/temp", 46));
    let frame = encoded(&packet, version);
    assert_eq!(frame.len(), 64, "the 64-byte case must stay 64 bytes");
    let mut group = c.benchmark_group("decode/publish/v311/qos0");
    bench_decode(&mut group, "64B-frame", &frame, version);
    group.finish();
    let mut group = c.benchmark_group("encode/publish/v311/qos0");
    bench_encode(&mut group, "64B-frame", &packet, version);
    group.finish();
    // The framing floor: fixed header, frame split and nothing else.
    let mut group = c.benchmark_group("decode/pingreq");
    bench_decode(&mut group, "v311", &encoded(&Packet::PingReq, version), version);
    group.finish();
}

fn connect_benches(c: &mut Criterion) {
    let mut decode_group = c.benchmark_group("decode/connect");
    for (vname, version) in versions() {
        bench_decode(&mut decode_group, vname, &encoded(&connect(version), version), version);
    }
    decode_group.finish();
    let mut encode_group = c.benchmark_group("encode/connect");
    for (vname, version) in versions() {
        bench_encode(&mut encode_group, vname, &connect(version), version);
    }
    encode_group.finish();
}

criterion_group!(benches, publish_benches, connect_benches);
criterion_main!(benches);
