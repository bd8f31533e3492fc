//! Property tests: `SubscriptionTrie` against the brute-force model "check every filter
//! with `TopicFilter::matches`", over random interleavings of insert, remove and match.
//!
//! Filters and topics are drawn from a few levels (`a`, `b`, the empty level, `$s`) so
//! that random filters and topics actually meet, including the `$` and empty-level rules.

use std::collections::BTreeMap;

use proptest::prelude::*;
use shoal_core::topic::{MatchSet, SubscriptionTrie, TopicFilter, TopicName};
use shoal_core::QoS;

fn topic_level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "", "$s"])
}

fn filter_level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "", "$s", "+", "+", "#"])
}

fn filter() -> impl Strategy<Value = TopicFilter> {
    prop::collection::vec(filter_level(), 1..5)
        .prop_filter_map("`#` must be last", |levels| TopicFilter::parse(&levels.join("/")).ok())
}

fn topic() -> impl Strategy<Value = TopicName> {
    prop::collection::vec(topic_level(), 1..6).prop_filter_map("a lone empty level", |levels| {
        TopicName::try_from_str(&levels.join("/")).ok()
    })
}

fn qos() -> impl Strategy<Value = QoS> {
    prop::sample::select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

#[derive(Debug, Clone)]
enum Op {
    Insert(TopicFilter, u8, QoS),
    Remove(TopicFilter, u8),
    Match(TopicName),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (filter(), 0..4u8, qos()).prop_map(|(f, k, q)| Op::Insert(f, k, q)),
        2 => (filter(), 0..4u8).prop_map(|(f, k)| Op::Remove(f, k)),
        2 => topic().prop_map(Op::Match),
    ]
}

type Model = BTreeMap<(TopicFilter, u8), QoS>;

fn brute_force(model: &Model, topic: &TopicName) -> Vec<(u8, QoS)> {
    let mut hits: Vec<(u8, QoS)> =
        model.iter().filter(|((f, _), _)| f.matches(topic)).map(|((_, k), q)| (*k, *q)).collect();
    hits.sort();
    hits
}

fn trie_matches(trie: &SubscriptionTrie<u8, QoS>, topic: &TopicName) -> Vec<(u8, QoS)> {
    let mut hits = Vec::new();
    trie.for_each_match(topic, |k, q| hits.push((*k, *q)));
    hits.sort();
    hits
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn trie_matches_like_brute_force(
        subs in prop::collection::vec((filter(), 0..4u8, qos()), 0..40),
        topics in prop::collection::vec(topic(), 1..20),
    ) {
        let mut trie = SubscriptionTrie::new();
        let mut model = Model::new();
        for (f, k, q) in subs {
            prop_assert_eq!(trie.insert(&f, k, q), model.insert((f, k), q));
        }
        prop_assert_eq!(trie.len(), model.len());
        for t in &topics {
            prop_assert_eq!(trie_matches(&trie, t), brute_force(&model, t), "topic {}", t);
        }
    }

    #[test]
    fn interleaved_inserts_and_removes_stay_in_step(ops in prop::collection::vec(op(), 0..120)) {
        let mut trie = SubscriptionTrie::new();
        let mut model = Model::new();
        for op in ops {
            match op {
                Op::Insert(f, k, q) => {
                    prop_assert_eq!(trie.insert(&f, k, q), model.insert((f, k), q));
                }
                Op::Remove(f, k) => {
                    prop_assert_eq!(trie.remove(&f, &k), model.remove(&(f, k)));
                }
                Op::Match(t) => {
                    prop_assert_eq!(trie_matches(&trie, &t), brute_force(&model, &t), "topic {}", t);
                }
            }
            prop_assert_eq!(trie.len(), model.len());
        }
        for ((f, k), q) in &model {
            prop_assert_eq!(trie.get(f, k), Some(q));
        }
        let mut listed: Vec<_> = trie.iter().map(|(f, k, q)| ((f, *k), *q)).collect();
        listed.sort();
        prop_assert_eq!(listed, model.clone().into_iter().collect::<Vec<_>>());
        for (f, k) in model.keys() {
            prop_assert!(trie.remove(f, k).is_some());
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.node_count(), 1, "every branch freed");
    }

    #[test]
    fn collected_matches_hold_one_entry_per_subscriber_with_the_highest_qos(
        subs in prop::collection::vec((filter(), 0..4u8, qos()), 0..40),
        topics in prop::collection::vec(topic(), 1..10),
    ) {
        let mut trie = SubscriptionTrie::new();
        let mut model = Model::new();
        for (f, k, q) in subs {
            trie.insert(&f, k, q);
            model.insert((f, k), q);
        }
        let mut set = MatchSet::new();
        for t in &topics {
            let mut want: BTreeMap<u8, QoS> = BTreeMap::new();
            for (k, q) in brute_force(&model, t) {
                let best = want.entry(k).or_insert(q);
                *best = (*best).max(q);
            }
            set.clear();
            trie.collect_matches(t, &mut set);
            let mut got: Vec<(u8, QoS)> = set.iter().map(|(k, q)| (*k, *q)).collect();
            got.sort();
            prop_assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "topic {}", t);
        }
    }
}

#[test]
fn one_subscriber_with_overlapping_filters_gets_one_entry_at_the_highest_qos() {
    let mut trie = SubscriptionTrie::new();
    for (f, q) in [("a/b", QoS::AtMostOnce), ("a/+", QoS::ExactlyOnce), ("#", QoS::AtLeastOnce)] {
        trie.insert(&TopicFilter::parse(f).unwrap(), "client-1", q);
    }
    trie.insert(&TopicFilter::parse("a/#").unwrap(), "client-2", QoS::AtMostOnce);
    let mut set = MatchSet::new();
    trie.collect_matches(&TopicName::try_from_str("a/b").unwrap(), &mut set);
    assert_eq!(set.len(), 2);
    assert_eq!(set.get(&"client-1"), Some(&QoS::ExactlyOnce));
    assert_eq!(set.get(&"client-2"), Some(&QoS::AtMostOnce));
}
