//! Cases for the instruction-count gate (`shoal-icount`, run by `.ci/bench-gate`).
//!
//! A case is a name, an iteration count and a `prepare` function that builds the input
//! (not counted) and returns the closure that runs the operation `iterations` times (the
//! counted part). Names follow the criterion benches' groups so a moved count points at
//! the bench to look at. Keep inputs deterministic: no random seeds, no clocks.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use shoal_core::codec::{self, Publish, PublishProperties};
use shoal_core::topic::{SubscriptionTrie, TopicFilter, TopicName};
use shoal_core::{PacketId, ProtocolVersion, QoS};

/// The counted part of a case.
pub type Run = Box<dyn FnMut()>;

/// One instruction-count case.
pub struct Case {
    /// Stable name, also the key in `benches/icount-baseline.txt`.
    pub name: &'static str,
    /// How many operations one run performs.
    pub iterations: u64,
    /// Builds the input and returns the counted closure.
    pub prepare: fn(u64) -> Run,
}

/// Every case, in a stable order.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "decode/publish/v311/qos0/64B",
            iterations: 20_000,
            prepare: decode_v311_qos0,
        },
        Case { name: "decode/publish/v5/qos1/256B", iterations: 20_000, prepare: decode_v5_qos1 },
        Case {
            name: "encode/publish/v311/qos0/64B",
            iterations: 20_000,
            prepare: encode_v311_qos0,
        },
        Case { name: "encode/publish/v5/qos1/256B", iterations: 20_000, prepare: encode_v5_qos1 },
        Case { name: "trie/match/mixed/10k", iterations: 5_000, prepare: trie_match_mixed },
        Case { name: "fanout/qos0/100-subscribers", iterations: 2_000, prepare: fanout_qos0_100 },
        Case { name: "fanout/qos1/100-subscribers", iterations: 2_000, prepare: fanout_qos1_100 },
        Case { name: "session/queue/qos1/100", iterations: 20_000, prepare: session_queue_qos1 },
    ]
}

const MAX_PACKET: usize = 1 << 20;

/// A publish to a typical telemetry topic.
pub fn sample_publish(qos: QoS, payload_len: usize, with_properties: bool) -> Publish {
    let properties = if with_properties {
        PublishProperties {
            message_expiry_interval: Some(60),
            content_type: Some("application/json".to_owned()),
            user_properties: vec![("site".to_owned(), "berlin-3".to_owned())],
            ..PublishProperties::default()
        }
    } else {
        PublishProperties::default()
    };
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::from_static("site/17/device/4711/temperature")
            .unwrap_or_else(|_| TopicName::empty()),
        packet_id: if qos == QoS::AtMostOnce { None } else { PacketId::new(42) },
        properties,
        payload: Bytes::from(vec![0x5a; payload_len]),
    }
}

/// `count` copies of `publish` encoded back to back.
fn encoded_stream(publish: &Publish, version: ProtocolVersion, count: u64) -> BytesMut {
    let mut one = BytesMut::new();
    // A sample that does not encode is a bug in this file, seen at once as a zero count.
    if publish.encode(version, &mut one).is_err() {
        return BytesMut::new();
    }
    let mut all = BytesMut::with_capacity(one.len() * count as usize);
    for _ in 0..count {
        all.extend_from_slice(&one);
    }
    all
}

fn decode_stream(publish: Publish, version: ProtocolVersion, iterations: u64) -> Run {
    let mut stream = encoded_stream(&publish, version, iterations);
    Box::new(move || {
        while let Ok(Some(packet)) = codec::decode(&mut stream, version, MAX_PACKET) {
            black_box(packet);
        }
    })
}

fn decode_v311_qos0(iterations: u64) -> Run {
    decode_stream(sample_publish(QoS::AtMostOnce, 64, false), ProtocolVersion::V3_1_1, iterations)
}

fn decode_v5_qos1(iterations: u64) -> Run {
    decode_stream(sample_publish(QoS::AtLeastOnce, 256, true), ProtocolVersion::V5, iterations)
}

fn encode_many(publish: Publish, version: ProtocolVersion, iterations: u64) -> Run {
    let mut out = BytesMut::with_capacity(64 * 1024);
    Box::new(move || {
        for _ in 0..iterations {
            out.clear();
            let _ = black_box(publish.encode(version, &mut out));
        }
    })
}

fn encode_v311_qos0(iterations: u64) -> Run {
    encode_many(sample_publish(QoS::AtMostOnce, 64, false), ProtocolVersion::V3_1_1, iterations)
}

fn encode_v5_qos1(iterations: u64) -> Run {
    encode_many(sample_publish(QoS::AtLeastOnce, 256, true), ProtocolVersion::V5, iterations)
}

/// 10k subscriptions in the shape IoT fleets use: exact device topics, per-site `+`
/// wildcards and a few `#` monitors. Topics cycle over devices that exist.
fn trie_match_mixed(iterations: u64) -> Run {
    let mut trie: SubscriptionTrie<u32, QoS> = SubscriptionTrie::new();
    let mut key = 0u32;
    let mut add = |filter: String, trie: &mut SubscriptionTrie<u32, QoS>| {
        if let Ok(f) = TopicFilter::parse(&filter) {
            trie.insert(&f, key, QoS::AtLeastOnce);
            key += 1;
        }
    };
    for site in 0..100 {
        for device in 0..95 {
            add(format!("site/{site}/device/{device}/temperature"), &mut trie);
        }
        add(format!("site/{site}/device/+/temperature"), &mut trie);
        add(format!("site/{site}/#"), &mut trie);
        add(format!("site/{site}/+/+/status"), &mut trie);
    }
    for _ in 0..200 {
        add("site/+/device/+/humidity".to_owned(), &mut trie);
    }
    let topics: Vec<TopicName> = (0..1000)
        .filter_map(|i| {
            TopicName::try_from_str(&format!("site/{}/device/{}/temperature", i % 100, i % 97)).ok()
        })
        .collect();
    Box::new(move || {
        let mut hits = 0usize;
        for i in 0..iterations as usize {
            if let Some(topic) = topics.get(i % topics.len().max(1)) {
                trie.for_each_match(topic, |_, _| hits += 1);
            }
        }
        black_box(hits);
    })
}

/// One QoS 0 publish matched and encoded to 100 subscriber sessions on one worker, by
/// the broker's own code (`shoal_server::bench_support`); counted per publish.
fn fanout_qos0_100(iterations: u64) -> Run {
    fanout_100(QoS::AtMostOnce, iterations)
}

/// As `fanout/qos0/100-subscribers` at QoS 1, each subscriber's PUBACK handled too.
fn fanout_qos1_100(iterations: u64) -> Run {
    fanout_100(QoS::AtLeastOnce, iterations)
}

fn fanout_100(qos: QoS, iterations: u64) -> Run {
    match shoal_server::bench_support::Fanout::new(100, qos) {
        Ok(mut bench) => Box::new(move || {
            for _ in 0..iterations {
                black_box(bench.publish());
            }
        }),
        // Seen at once as a zero count.
        Err(_) => Box::new(|| {}),
    }
}

/// A slow subscriber's per-message path: a connected 3.1.1 session with a full in-flight
/// window (16) and 100 messages queued behind it takes one more QoS 1 delivery into its
/// queue, then a PUBACK moves the oldest queued message into the window, and it is
/// encoded. The queue's bookkeeping (count and byte bounds) is all in here.
fn session_queue_qos1(iterations: u64) -> Run {
    use std::sync::Arc;
    use std::time::Instant;

    use shoal_core::session::Message;

    use crate::slow::SlowSubscriber;

    let now = Instant::now();
    let p = sample_publish(QoS::AtLeastOnce, 64, false);
    let message = Arc::new(Message::from_publish(p, None, now));
    // A wrong set-up shows at once, as a near-zero count.
    let Some(mut slow) = SlowSubscriber::new(message, 16, 100, now) else {
        return Box::new(|| {});
    };
    Box::new(move || {
        for _ in 0..iterations {
            black_box(slow.step());
        }
    })
}
