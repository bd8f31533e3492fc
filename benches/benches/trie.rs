//! Subscription trie and retained tree benches.
//!
//! Every PUBLISH is matched against the trie of each worker, so `trie/match/*` is on the
//! hot path of every message; the target is under 2 µs per match with 1M mixed
//! subscriptions. `trie/insert` and `trie/remove` are the SUBSCRIBE / UNSUBSCRIBE and
//! disconnect cost, and `trie/retained/*` what a wildcard SUBSCRIBE pays to find the
//! retained messages it must receive.
//!
//! Inputs model IoT fleets: topics `site/{s}/device/{d}/{metric}` with 125 devices per
//! site and 8 metrics. Each set has about as many distinct filters as subscriptions and
//! the number of sites grows with the set, so a probe topic matches about one filter:
//! - `exact`: `site/{s}/device/{d}/{metric}`;
//! - `plus`: `site/{s}/device/+/{metric}` (a per-site dashboard);
//! - `hash`: `site/{s}/device/{d}/#` (a per-device collector);
//! - `mixed`: 80% exact, 15% plus, 5% hash over the exact set's sites, so wildcard
//!   filters are shared by several subscribers, plus three `#` monitors; a probe matches
//!   a few dozen subscribers.
//!
//! Probe topics are drawn uniformly from the same universe, so some miss. Tries are built
//! once per set, outside the timed closures (a 1M set takes a few seconds to build).

// Inputs are built from constants; a bad one is a bug in this file and should stop the run.
#![allow(clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shoal_core::topic::{MatchSet, RetainedTree, SubscriptionTrie, TopicFilter, TopicName};
use shoal_core::QoS;

const DEVICES_PER_SITE: u64 = 125;
const METRICS: [&str; 8] =
    ["temp", "humidity", "battery", "status", "rssi", "pressure", "co2", "firmware"];
const PROBES: usize = 4096;
const SIZES: [(usize, &str); 3] = [(1_000, "1k"), (100_000, "100k"), (1_000_000, "1M")];

/// Deterministic xorshift, so every run benches the same sets.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    fn metric(&mut self) -> &'static str {
        METRICS[self.below(METRICS.len() as u64) as usize]
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Exact,
    Plus,
    Hash,
    Mixed,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Exact, Kind::Plus, Kind::Hash, Kind::Mixed];

    fn name(self) -> &'static str {
        match self {
            Kind::Exact => "exact",
            Kind::Plus => "plus",
            Kind::Hash => "hash",
            Kind::Mixed => "mixed",
        }
    }

    /// Sites in the universe, chosen so the set has about `n` distinct filters.
    fn sites(self, n: usize) -> u64 {
        let n = n as u64;
        match self {
            Kind::Exact | Kind::Mixed => n / (DEVICES_PER_SITE * METRICS.len() as u64),
            Kind::Plus => n / METRICS.len() as u64,
            Kind::Hash => n / DEVICES_PER_SITE,
        }
        .max(1)
    }

    fn filter(self, rng: &mut Rng, sites: u64) -> String {
        let (s, d) = (rng.below(sites), rng.below(DEVICES_PER_SITE));
        let kind = match self {
            Kind::Mixed => match rng.below(100) {
                0..=79 => Kind::Exact,
                80..=94 => Kind::Plus,
                _ => Kind::Hash,
            },
            other => other,
        };
        match kind {
            Kind::Plus => format!("site/{s}/device/+/{}", rng.metric()),
            Kind::Hash => format!("site/{s}/device/{d}/#"),
            _ => format!("site/{s}/device/{d}/{}", rng.metric()),
        }
    }
}

fn topic(rng: &mut Rng, sites: u64) -> TopicName {
    let (s, d) = (rng.below(sites), rng.below(DEVICES_PER_SITE));
    let name = format!("site/{s}/device/{d}/{}", rng.metric());
    TopicName::try_from_str(&name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn parse(s: &str) -> TopicFilter {
    TopicFilter::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// `n` subscriptions of `kind`, keyed by subscriber number, and probe topics.
fn build(kind: Kind, n: usize) -> (SubscriptionTrie<u32, QoS>, Vec<TopicName>) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ n as u64);
    let sites = kind.sites(n);
    let mut trie = SubscriptionTrie::new();
    let monitors = if matches!(kind, Kind::Mixed) { 3 } else { 0 };
    for key in 0..n - monitors {
        trie.insert(&parse(&kind.filter(&mut rng, sites)), key as u32, QoS::AtLeastOnce);
    }
    for key in n - monitors..n {
        trie.insert(&parse("#"), key as u32, QoS::AtMostOnce);
    }
    let probes = (0..PROBES).map(|_| topic(&mut rng, sites)).collect();
    (trie, probes)
}

fn bench_trie(c: &mut Criterion) {
    for (n, label) in SIZES {
        for kind in Kind::ALL {
            let (mut trie, probes) = build(kind, n);
            let mut hits = 0usize;
            for probe in &probes {
                trie.for_each_match(probe, |_, _| hits += 1);
            }
            eprintln!(
                "trie/{}/{label}: {} subscriptions, {} nodes, {:.1} matches per probe",
                kind.name(),
                trie.len(),
                trie.node_count(),
                hits as f64 / PROBES as f64
            );

            let mut group = c.benchmark_group(format!("trie/match/{}", kind.name()));
            group.throughput(Throughput::Elements(1));
            let mut at = 0;
            group.bench_function(BenchmarkId::from_parameter(label), |b| {
                b.iter(|| {
                    at = (at + 1) % PROBES;
                    let mut count = 0u32;
                    trie.for_each_match(black_box(&probes[at]), |key, _| count ^= *key);
                    black_box(count)
                })
            });
            group.finish();

            if matches!(kind, Kind::Mixed) {
                bench_collect(c, &trie, &probes, label);
                bench_insert_remove(c, &mut trie, n, label);
            }
        }
    }
}

/// Matching with per-subscriber dedup into a reused [`MatchSet`], as the server does.
fn bench_collect(
    c: &mut Criterion,
    trie: &SubscriptionTrie<u32, QoS>,
    probes: &[TopicName],
    label: &str,
) {
    let mut group = c.benchmark_group("trie/collect/mixed");
    group.throughput(Throughput::Elements(1));
    let mut set = MatchSet::new();
    let mut at = 0;
    group.bench_function(BenchmarkId::from_parameter(label), |b| {
        b.iter(|| {
            at = (at + 1) % PROBES;
            set.clear();
            trie.collect_matches(black_box(&probes[at]), &mut set);
            black_box(set.len())
        })
    });
    group.finish();
}

/// SUBSCRIBE and UNSUBSCRIBE of fresh subscribers against a trie of `n`; each timed
/// insert is undone untimed (and the reverse), so the trie keeps its size.
fn bench_insert_remove(
    c: &mut Criterion,
    trie: &mut SubscriptionTrie<u32, QoS>,
    n: usize,
    label: &str,
) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let sites = Kind::Mixed.sites(n);
    let fresh: Vec<(TopicFilter, u32)> = (0..PROBES)
        .map(|i| (parse(&Kind::Mixed.filter(&mut rng, sites)), (n + i) as u32))
        .collect();

    let mut group = c.benchmark_group("trie/insert/mixed");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter(label), |b| {
        b.iter_custom(|iters| timed_chunks(iters, &fresh, trie, true))
    });
    group.finish();

    let mut group = c.benchmark_group("trie/remove/mixed");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter(label), |b| {
        b.iter_custom(|iters| timed_chunks(iters, &fresh, trie, false))
    });
    group.finish();
}

/// Runs `iters` inserts (or removes) of `fresh` subscriptions in chunks, timing only the
/// operation being measured.
fn timed_chunks(
    iters: u64,
    fresh: &[(TopicFilter, u32)],
    trie: &mut SubscriptionTrie<u32, QoS>,
    time_insert: bool,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let chunk = &fresh[..left.min(fresh.len())];
        left -= chunk.len();
        let start = Instant::now();
        for (filter, key) in chunk {
            black_box(trie.insert(filter, *key, QoS::AtLeastOnce));
        }
        if time_insert {
            total += start.elapsed();
        }
        let start = Instant::now();
        for (filter, key) in chunk {
            black_box(trie.remove(filter, key));
        }
        if !time_insert {
            total += start.elapsed();
        }
    }
    total
}

/// Wildcard SUBSCRIBE against 100k retained topics (100 sites × 125 devices × 8 metrics).
fn bench_retained(c: &mut Criterion) {
    let mut tree = RetainedTree::new();
    for s in 0..100 {
        for d in 0..DEVICES_PER_SITE {
            for metric in METRICS {
                let name = format!("site/{s}/device/{d}/{metric}");
                let topic = TopicName::try_from_str(&name).unwrap_or_else(|e| panic!("{e}"));
                tree.insert(&topic, 0u64);
            }
        }
    }
    let cases = [
        ("exact", "site/42/device/7/temp"),
        ("device-plus", "site/42/device/+/temp"),
        ("site-plus", "site/+/device/7/status"),
        ("site-hash", "site/42/#"),
        ("all-hash", "#"),
    ];
    let mut group = c.benchmark_group("trie/retained");
    for (name, filter) in cases {
        let filter = parse(filter);
        let mut matched = 0u64;
        tree.for_each_matching(&filter, |_, _| matched += 1);
        group.throughput(Throughput::Elements(matched));
        group.bench_function(BenchmarkId::new(name, "100k"), |b| {
            b.iter(|| {
                let mut count = 0u64;
                tree.for_each_matching(black_box(&filter), |_, v| count += v + 1);
                black_box(count)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_trie, bench_retained);
criterion_main!(benches);
