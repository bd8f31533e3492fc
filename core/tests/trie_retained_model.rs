//! Property tests: `RetainedTree` lookups against the brute-force model "check every
//! retained topic with `TopicFilter::matches`", over random retain/drop sequences.

use std::collections::BTreeMap;

use proptest::prelude::*;
use shoal_core::topic::{RetainedTree, TopicFilter, TopicName};

fn filter() -> impl Strategy<Value = TopicFilter> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "", "$s", "+", "+", "#"]), 1..5)
        .prop_filter_map("`#` must be last", |levels| TopicFilter::parse(&levels.join("/")).ok())
}

fn topic() -> impl Strategy<Value = TopicName> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "", "$s"]), 1..6)
        .prop_filter_map("a lone empty level", |levels| {
            TopicName::try_from_str(&levels.join("/")).ok()
        })
}

#[derive(Debug, Clone)]
enum Op {
    Retain(TopicName, u32),
    Drop(TopicName),
    Lookup(TopicFilter),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (topic(), any::<u32>()).prop_map(|(t, v)| Op::Retain(t, v)),
        1 => topic().prop_map(Op::Drop),
        2 => filter().prop_map(Op::Lookup),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn retained_lookups_match_brute_force(ops in prop::collection::vec(op(), 0..120)) {
        let mut tree = RetainedTree::new();
        let mut model: BTreeMap<TopicName, u32> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Retain(t, v) => prop_assert_eq!(tree.insert(&t, v), model.insert(t, v)),
                Op::Drop(t) => prop_assert_eq!(tree.remove(&t), model.remove(&t)),
                Op::Lookup(f) => {
                    let mut got = Vec::new();
                    tree.for_each_matching(&f, |t, v| got.push((t.clone(), *v)));
                    got.sort();
                    let want: Vec<(TopicName, u32)> = model
                        .iter()
                        .filter(|(t, _)| f.matches(t))
                        .map(|(t, v)| (t.clone(), *v))
                        .collect();
                    prop_assert_eq!(got, want, "filter {}", f);
                }
            }
            prop_assert_eq!(tree.len(), model.len());
        }
        for (t, v) in &model {
            prop_assert_eq!(tree.get(t), Some(v));
        }
        for t in model.keys() {
            prop_assert!(tree.remove(t).is_some());
        }
        prop_assert_eq!(tree.node_count(), 1, "every branch freed");
    }
}
