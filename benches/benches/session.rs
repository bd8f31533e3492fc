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

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoal_benches::slow::SlowSubscriber;
use shoal_core::session::Message;
use shoal_core::{QoS, TopicName};

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
        let Some(mut slow) = SlowSubscriber::new(message, 16, waiting, now) else {
            panic!("the slow subscriber's set-up did not come out as asked");
        };
        group.bench_function(BenchmarkId::from_parameter(waiting), |b| {
            b.iter(|| black_box(slow.step()));
        });
        assert_eq!(slow.queued(), waiting, "the queue stayed at its depth");
    }
    group.finish();
}

criterion_group!(benches, queue);
criterion_main!(benches);
