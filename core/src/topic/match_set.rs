//! `MatchSet`: the matches of one publish, one entry per subscriber.
//!
//! A client whose subscriptions overlap (`a/+` and `a/#`) receives a matching message
//! once, with the greatest QoS of the matching subscriptions and, in MQTT 5, every
//! matching subscription identifier [MQTT-3.3.4-2, -3]. [`MergeSubscription`] is how the
//! per-subscription value says what "combine" means; the trie's
//! [`collect_matches`](super::SubscriptionTrie::collect_matches) fills the set.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use crate::protocol::QoS;

/// Combines two subscriptions of one subscriber that both match a topic.
pub trait MergeSubscription {
    /// Folds `other` into `self` (the server: greatest QoS, union of subscription
    /// identifiers). Must be commutative and associative: the trie visits matching
    /// filters in no particular order.
    fn merge(&mut self, other: &Self);
}

/// The greatest QoS wins.
impl MergeSubscription for QoS {
    fn merge(&mut self, other: &Self) {
        *self = (*self).max(*other);
    }
}

/// A reusable buffer of merged matches: one `V` per subscriber key `K`.
///
/// Keep one per shard and [`clear`](MatchSet::clear) it before each publish: clearing
/// keeps the capacity, so once it has grown to the largest fan-out seen, collecting
/// allocates nothing (beyond whatever cloning `K` and `V` costs).
///
/// `S` hashes the keys. The default is std's DoS-resistant SipHash; keys are the
/// server's own ids, not peer data, so a faster hasher is a safe choice there
/// ([`MatchSet::with_hasher`]).
///
/// # Invariants
/// `index[k] == i` exactly when `entries[i].0 == k`.
#[derive(Debug, Clone)]
pub struct MatchSet<K, V, S = RandomState> {
    /// Where each key's entry is, so that merging is O(1) per match.
    index: HashMap<K, usize, S>,
    /// Entries in first-match order; iteration is a slice walk.
    entries: Vec<(K, V)>,
}

impl<K, V, S: Default> Default for MatchSet<K, V, S> {
    fn default() -> Self {
        Self { index: HashMap::default(), entries: Vec::new() }
    }
}

impl<K: Eq + Hash + Clone, V> MatchSet<K, V> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<K: Eq + Hash + Clone, V, S: BuildHasher> MatchSet<K, V, S> {
    /// An empty set hashing keys with `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        Self { index: HashMap::with_hasher(hasher), entries: Vec::new() }
    }

    /// Forgets every entry, keeping the capacity.
    pub fn clear(&mut self) {
        self.index.clear();
        self.entries.clear();
    }

    /// Number of distinct subscribers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing matched.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The merged value for `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        let &at = self.index.get(key)?;
        self.entries.get(at).map(|(_, v)| v)
    }

    /// Every (subscriber, merged value), in the order subscribers were first seen.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&K, &V)> + '_ {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The entries as a slice.
    pub fn as_slice(&self) -> &[(K, V)] {
        &self.entries
    }

    /// Adds one matching subscription: the first for `key` is cloned in, later ones are
    /// merged into it.
    pub fn add(&mut self, key: &K, value: &V)
    where
        V: Clone + MergeSubscription,
    {
        if let Some(&at) = self.index.get(key) {
            if let Some((_, merged)) = self.entries.get_mut(at) {
                merged.merge(value);
            }
            return;
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key.clone(), value.clone()));
    }
}

impl<'a, K, V, S> IntoIterator for &'a MatchSet<K, V, S> {
    type Item = &'a (K, V);
    type IntoIter = std::slice::Iter<'a, (K, V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_per_key_and_clears_without_shrinking() {
        let mut set = MatchSet::new();
        set.add(&1u32, &QoS::AtMostOnce);
        set.add(&2u32, &QoS::AtLeastOnce);
        set.add(&1u32, &QoS::ExactlyOnce);
        set.add(&1u32, &QoS::AtLeastOnce);
        assert_eq!(set.len(), 2);
        assert_eq!(set.get(&1), Some(&QoS::ExactlyOnce));
        assert_eq!(set.get(&2), Some(&QoS::AtLeastOnce));
        assert_eq!(set.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [1, 2]);
        let capacity = set.entries.capacity();
        set.clear();
        assert!(set.is_empty());
        assert_eq!(set.get(&1), None);
        assert_eq!(set.entries.capacity(), capacity);
    }
}
