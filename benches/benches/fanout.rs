//! Fan-out and routing benches on the broker's real code (`shoal_server::bench_support`).
//!
//! - `fanout/{qos0,qos1}/{1,100,10k}`: one publish matched (the worker's match cache in
//!   front of its trie) and encoded into the write buffer of each of 1, 100 or 10,000
//!   subscriber sessions on one worker; at QoS 1 each subscriber's PUBACK is handled
//!   too. This is a worker's whole per-publish cost apart from socket writes.
//!   Throughput is in deliveries.
//! - `handoff/batch/{1,16,256}`: publishes routed on one worker, sent to another in one
//!   batch over the real bounded channel (one `mio::Waker` wake-up per batch), drained,
//!   matched and encoded for its one subscriber. Throughput is in publishes, so the
//!   per-batch cost shows as the gap between batch sizes.
//!
//! Subscribers sit on real accepted loopback sockets (whose client ends are closed),
//! because a connection is a socket; nothing is written to them. 10k subscribers use
//! 10k file descriptors.

// Set-up failures (e.g. too few file descriptors) should stop the run with the cause.
#![allow(clippy::panic)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoal_core::QoS;
use shoal_server::bench_support::{Fanout, Handoff};

fn fanout(c: &mut Criterion) {
    for (qos, qos_name) in [(QoS::AtMostOnce, "qos0"), (QoS::AtLeastOnce, "qos1")] {
        let mut group = c.benchmark_group(format!("fanout/{qos_name}"));
        for (subscribers, name) in [(1usize, "1"), (100, "100"), (10_000, "10k")] {
            let mut bench = match Fanout::new(subscribers, qos) {
                Ok(b) => b,
                Err(e) => panic!("fan-out to {subscribers}: {e}"),
            };
            // Every subscriber must receive the message, or the bench measures nothing.
            assert!(bench.publish() > 0, "nothing was encoded");
            group.throughput(Throughput::Elements(subscribers as u64));
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| black_box(bench.publish()));
            });
        }
        group.finish();
    }
}

fn handoff(c: &mut Criterion) {
    let mut group = c.benchmark_group("handoff/batch");
    let mut bench = match Handoff::new() {
        Ok(b) => b,
        Err(e) => panic!("handoff: {e}"),
    };
    assert!(bench.send_batch(1) > 0, "nothing was delivered");
    for batch in [1usize, 16, 256] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::from_parameter(batch), |b| {
            b.iter(|| black_box(bench.send_batch(batch)));
        });
    }
    group.finish();
}

criterion_group!(benches, fanout, handoff);
criterion_main!(benches);
