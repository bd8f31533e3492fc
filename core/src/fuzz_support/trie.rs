//! Fuzz entry point for the subscription trie and the retained tree.
//!
//! The input is read as a sequence of operations over a small alphabet of levels (so
//! that filters and topics actually meet), applied both to the real structures and to a
//! brute-force model built on [`TopicFilter::matches`]. Any disagreement is an assertion
//! failure, which is the fuzzer's oracle. The seed corpus in
//! `core/fuzz/corpus/trie_ops/` is replayed by `core/tests/fuzz_corpus_trie.rs`.
//!
//! # Input format
//! Each operation starts with an opcode byte (`op % 8`), followed by its operands; the
//! run stops when the input does:
//! - `0`, `1` insert: filter, key byte (`% 4`), QoS byte (`% 3`)
//! - `2` remove: filter, key byte
//! - `3`, `4` match: topic; compares `for_each_match` and `collect_matches`
//! - `5` retain: topic, value byte; `6` drop retained: topic; `7` retained lookup: filter
//!
//! A filter is a count byte (`1 + n % 4` levels) then one byte per level indexing
//! `FILTER_LEVELS`; an invalid combination (`#` not last) skips the operation. A topic
//! is a count byte (`1 + n % 5`) then bytes indexing `TOPIC_LEVELS`; the one invalid
//! topic (a single empty level) skips the operation too.

use std::collections::BTreeMap;

use crate::protocol::QoS;
use crate::topic::{MatchSet, RetainedTree, SubscriptionTrie, TopicFilter, TopicName};

/// Levels a fuzzed filter is built from.
const FILTER_LEVELS: [&str; 7] = ["a", "b", "", "$s", "+", "#", "c"];
/// Levels a fuzzed topic is built from.
const TOPIC_LEVELS: [&str; 5] = ["a", "b", "", "$s", "c"];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn levels(&mut self, max: u8, alphabet: &[&str]) -> Option<String> {
        let count = 1 + self.byte()? % max;
        let mut levels = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let pick = usize::from(self.byte()?) % alphabet.len();
            levels.push(alphabet.get(pick).copied().unwrap_or_default());
        }
        Some(levels.join("/"))
    }

    /// `Some(None)`: bytes were consumed but spell no valid filter.
    fn filter(&mut self) -> Option<Option<TopicFilter>> {
        self.levels(4, &FILTER_LEVELS).map(|s| TopicFilter::parse(&s).ok())
    }

    /// `Some(None)`: bytes were consumed but spell no valid topic (a lone empty level).
    fn topic(&mut self) -> Option<Option<TopicName>> {
        self.levels(5, &TOPIC_LEVELS).map(|s| TopicName::try_from_str(&s).ok())
    }
}

fn qos(byte: u8) -> QoS {
    QoS::from_bits(byte % 3).unwrap_or_default()
}

/// Interprets `data` as trie and retained-tree operations, checking each against the
/// brute-force model.
///
/// # Panics
/// When the trie or the retained tree disagrees with the model: that is a bug.
pub fn run(data: &[u8]) {
    let mut input = Input(data);
    let mut state = State::default();
    while state.step(&mut input).is_some() {
        assert_eq!(state.trie.len(), state.subscriptions.len(), "trie len");
        assert_eq!(state.retained.len(), state.retained_model.len(), "retained len");
    }
    state.finish();
}

/// The structures under test and their models.
#[derive(Default)]
struct State {
    trie: SubscriptionTrie<u8, QoS>,
    subscriptions: BTreeMap<(TopicFilter, u8), QoS>,
    retained: RetainedTree<u8>,
    retained_model: BTreeMap<TopicName, u8>,
    merged: MatchSet<u8, QoS>,
}

impl State {
    /// Applies one operation; `None` when the input ran out.
    fn step(&mut self, input: &mut Input<'_>) -> Option<()> {
        match input.byte()? % 8 {
            0 | 1 => {
                let filter = input.filter()?;
                let (key, value) = (input.byte()? % 4, qos(input.byte()?));
                if let Some(filter) = filter {
                    let got = self.trie.insert(&filter, key, value);
                    assert_eq!(got, self.subscriptions.insert((filter, key), value), "insert");
                }
            }
            2 => {
                let filter = input.filter()?;
                let key = input.byte()? % 4;
                if let Some(filter) = filter {
                    let got = self.trie.remove(&filter, &key);
                    assert_eq!(got, self.subscriptions.remove(&(filter, key)), "remove");
                }
            }
            3 | 4 => {
                if let Some(topic) = input.topic()? {
                    check_match(&self.trie, &self.subscriptions, &topic, &mut self.merged);
                }
            }
            5 => {
                let topic = input.topic()?;
                let value = input.byte()?;
                if let Some(topic) = topic {
                    let got = self.retained.insert(&topic, value);
                    assert_eq!(got, self.retained_model.insert(topic, value), "retain");
                }
            }
            6 => {
                if let Some(topic) = input.topic()? {
                    let got = self.retained.remove(&topic);
                    assert_eq!(got, self.retained_model.remove(&topic), "unretain");
                }
            }
            _ => {
                if let Some(filter) = input.filter()? {
                    check_lookup(&self.retained, &self.retained_model, &filter);
                }
            }
        }
        Some(())
    }

    /// Lists everything, then removes everything and checks no node is left behind.
    fn finish(mut self) {
        let mut listed: Vec<(TopicFilter, u8, QoS)> =
            self.trie.iter().map(|(f, k, v)| (f, *k, *v)).collect();
        listed.sort();
        let model: Vec<(TopicFilter, u8, QoS)> =
            self.subscriptions.iter().map(|((f, k), v)| (f.clone(), *k, *v)).collect();
        assert_eq!(listed, model, "iter");

        for (filter, key) in self.subscriptions.keys() {
            assert!(self.trie.remove(filter, key).is_some(), "remove listed");
        }
        assert_eq!(self.trie.node_count(), 1, "trie frees every branch");
        for topic in self.retained_model.keys() {
            assert!(self.retained.remove(topic).is_some(), "remove retained");
        }
        assert_eq!(self.retained.node_count(), 1, "retained tree frees every branch");
    }
}

fn check_match(
    trie: &SubscriptionTrie<u8, QoS>,
    model: &BTreeMap<(TopicFilter, u8), QoS>,
    topic: &TopicName,
    merged: &mut MatchSet<u8, QoS>,
) {
    let mut got = Vec::new();
    trie.for_each_match(topic, |k, v| got.push((*k, *v)));
    got.sort();
    let mut want: Vec<(u8, QoS)> =
        model.iter().filter(|((f, _), _)| f.matches(topic)).map(|((_, k), v)| (*k, *v)).collect();
    want.sort();
    assert_eq!(got, want, "matches of {topic}");

    let mut best: BTreeMap<u8, QoS> = BTreeMap::new();
    for (k, v) in want {
        let entry = best.entry(k).or_insert(v);
        *entry = (*entry).max(v);
    }
    merged.clear();
    trie.collect_matches(topic, merged);
    let mut got: Vec<(u8, QoS)> = merged.iter().map(|(k, v)| (*k, *v)).collect();
    got.sort();
    assert_eq!(got, best.into_iter().collect::<Vec<_>>(), "merged matches of {topic}");
}

fn check_lookup(tree: &RetainedTree<u8>, model: &BTreeMap<TopicName, u8>, filter: &TopicFilter) {
    let mut got = Vec::new();
    tree.for_each_matching(filter, |t, v| got.push((t.clone(), *v)));
    got.sort();
    let want: Vec<(TopicName, u8)> =
        model.iter().filter(|(t, _)| filter.matches(t)).map(|(t, v)| (t.clone(), *v)).collect();
    assert_eq!(got, want, "retained lookup {filter}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_truncated_inputs_run() {
        run(&[]);
        run(&[0]);
        run(&[0, 1, 0]);
        // insert "a/#" for key 1 at QoS 2, then match "a/b".
        run(&[0, 1, 0, 5, 1, 2, 3, 1, 0, 1]);
    }

    /// A poor man's fuzz run on stable: pseudo-random inputs from a fixed seed.
    #[test]
    fn pseudo_random_inputs_agree_with_the_model() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let len = (next() % 600) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            run(&data);
        }
    }
}
