//! `SubscriptionTrie`: topic filters to subscribers, matched against a topic name.
//!
//! One trie belongs to one shard (a worker, see `docs/ARCHITECTURE.md`) and holds no
//! locks. Retained messages use the inverse structure in `retained.rs`; the reference
//! matching rule is [`TopicFilter::matches`].
//!
//! # Layout
//! Nodes live in an arena (`arena.rs`: a `Vec` plus a free list) and refer to each other by index, so
//! the whole trie is a few large allocations plus one key and one subscriber vector per
//! node, and freeing a branch is pushing indices on the free list. A node stands for a
//! filter prefix; its edges are the exact next levels ([`LevelMap`]), a `+` child and a
//! `#` child. The `#` child never has children of its own: it only holds the subscribers
//! of `prefix/#`. Subscribers of the filter that ends at a node sit in that node.
//!
//! # Matching cost
//! A topic of `n` levels visits at most the nodes on the paths that spell it with some
//! levels replaced by `+`: at worst `2^n` for a trie full of `+`, in practice a few per
//! level. Matching recurses once per level, so its stack depth is bounded by the levels
//! of the deepest filter in the trie; the server caps those with
//! [`TopicFilter::parse_with_max_levels`].

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

use super::arena::{Arena, NodeId, ROOT};
use super::level_map::LevelMap;
use super::match_set::{MatchSet, MergeSubscription};
use super::{TopicFilter, TopicName};

/// A node's subscribers are indexed by key once there are more than this many, so that
/// `#` with 100k subscribers does not make each insert or remove a linear scan.
const INDEX_AT: usize = 16;

/// The subscribers of one filter: a vector for fast iteration while matching, plus a key
/// index once it is large.
///
/// # Invariants
/// Keys are distinct. When `index` is present, `index[k] == i` exactly when
/// `entries[i].0 == k`.
#[derive(Debug, Clone)]
struct Subscribers<K, V> {
    entries: Vec<(K, V)>,
    /// Boxed: most nodes never get an index, and an inline `HashMap` would add 40 bytes
    /// to every node.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<K, usize>>>,
}

impl<K, V> Default for Subscribers<K, V> {
    fn default() -> Self {
        Self { entries: Vec::new(), index: None }
    }
}

impl<K: Eq + Hash + Clone, V> Subscribers<K, V> {
    fn position(&self, key: &K) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(key).copied(),
            None => self.entries.iter().position(|(k, _)| k == key),
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        let at = self.position(key)?;
        self.entries.get(at).map(|(_, v)| v)
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let at = self.position(key)?;
        self.entries.get_mut(at).map(|(_, v)| v)
    }

    fn insert(&mut self, key: K, value: V) -> Option<V> {
        if let Some(old) = self.get_mut(&key) {
            return Some(std::mem::replace(old, value));
        }
        if let Some(index) = &mut self.index {
            index.insert(key.clone(), self.entries.len());
        } else if self.entries.len() >= INDEX_AT {
            let mut index: HashMap<K, usize> = HashMap::with_capacity(self.entries.len() + 1);
            for (at, (k, _)) in self.entries.iter().enumerate() {
                index.insert(k.clone(), at);
            }
            index.insert(key.clone(), self.entries.len());
            self.index = Some(Box::new(index));
        }
        self.entries.push((key, value));
        None
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let at = self.position(key)?;
        if at >= self.entries.len() {
            return None;
        }
        let (_, value) = self.entries.swap_remove(at);
        if let Some(index) = &mut self.index {
            index.remove(key);
            if let Some((moved, _)) = self.entries.get(at) {
                index.insert(moved.clone(), at);
            }
            if self.entries.len() < INDEX_AT / 2 {
                self.index = None;
            }
        }
        if self.entries.is_empty() {
            self.entries = Vec::new();
        }
        Some(value)
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[derive(Debug, Clone)]
struct Node<K, V> {
    /// Children by exact level.
    children: LevelMap<NodeId>,
    /// The `+` child.
    plus: Option<NodeId>,
    /// The `#` child: a leaf holding the subscribers of `this prefix/#`.
    hash: Option<NodeId>,
    /// Subscribers whose filter ends exactly here.
    subscribers: Subscribers<K, V>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Self {
            children: LevelMap::default(),
            plus: None,
            hash: None,
            subscribers: Subscribers::default(),
        }
    }
}

impl<K, V> Node<K, V> {
    fn edge_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some()) + usize::from(self.hash.is_some())
    }
}

/// Topic filters mapped to subscribers, matched against topic names.
///
/// `K` identifies a subscriber (the server's session or connection id); `V` is what one
/// subscription carries (QoS, no-local, subscription identifier ...). Each (filter, key)
/// pair holds one `V`.
///
/// ```
/// use shoal_core::topic::{SubscriptionTrie, TopicFilter, TopicName};
/// use shoal_core::QoS;
///
/// let mut trie = SubscriptionTrie::new();
/// trie.insert(&TopicFilter::parse("site/+/temp")?, "alice", QoS::AtLeastOnce);
/// trie.insert(&TopicFilter::parse("site/#")?, "bob", QoS::AtMostOnce);
///
/// let mut hits = Vec::new();
/// trie.for_each_match(&TopicName::try_from_str("site/7/temp")?, |who, qos| hits.push((*who, *qos)));
/// hits.sort();
/// assert_eq!(hits, [("alice", QoS::AtLeastOnce), ("bob", QoS::AtMostOnce)]);
/// # Ok::<(), shoal_core::topic::TopicError>(())
/// ```
///
/// # Invariants
/// Node 0 is the root and is never freed. Every other live node is reachable from the
/// root by exactly one edge, and has subscribers or at least one edge (empty branches
/// are freed by `remove`). Ids on the free list are unreachable. `len` is the total
/// number of subscribers over all nodes.
#[derive(Debug, Clone)]
pub struct SubscriptionTrie<K, V> {
    nodes: Arena<Node<K, V>>,
    len: usize,
}

impl<K, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        Self { nodes: Arena::default(), len: 0 }
    }
}

impl<K: Eq + Hash + Clone, V> SubscriptionTrie<K, V> {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of (filter, subscriber) subscriptions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Live nodes, the root included (1 for an empty trie). For memory metrics and tests.
    pub fn node_count(&self) -> usize {
        self.nodes.live()
    }

    /// Removes every subscription and releases the arena.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Subscribes `key` to `filter` with `value`; returns the value it replaces if `key`
    /// already held this filter.
    pub fn insert(&mut self, filter: &TopicFilter, key: K, value: V) -> Option<V> {
        let mut node = ROOT;
        for level in filter.levels() {
            node = self.child_or_insert(node, level);
        }
        let previous = self.node_mut(node).subscribers.insert(key, value);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    /// Unsubscribes `key` from `filter`, returning its value; frees the branch if it
    /// becomes empty.
    pub fn remove(&mut self, filter: &TopicFilter, key: &K) -> Option<V> {
        let node = self.find(filter)?;
        let value = self.node_mut(node).subscribers.remove(key)?;
        self.len -= 1;
        let emptied = self.node(node);
        if node != ROOT && emptied.subscribers.is_empty() && emptied.edge_count() == 0 {
            self.prune(filter);
        }
        Some(value)
    }

    /// The value `key` subscribed to `filter` with.
    pub fn get(&self, filter: &TopicFilter, key: &K) -> Option<&V> {
        self.node(self.find(filter)?).subscribers.get(key)
    }

    /// The value `key` subscribed to `filter` with, for updating in place.
    pub fn get_mut(&mut self, filter: &TopicFilter, key: &K) -> Option<&mut V> {
        let node = self.find(filter)?;
        self.node_mut(node).subscribers.get_mut(key)
    }

    /// Calls `f` once per (filter, subscriber) whose filter matches `topic`, in no
    /// particular order. A subscriber with several matching filters is seen once per
    /// filter; [`collect_matches`](Self::collect_matches) merges them. Allocates nothing.
    pub fn for_each_match<'a>(&'a self, topic: &TopicName, mut f: impl FnMut(&'a K, &'a V)) {
        if topic.is_empty() {
            return;
        }
        self.walk(ROOT, Some(topic.as_bytes()), topic.is_dollar(), &mut f);
    }

    /// Adds every match for `topic` to `out`, one entry per subscriber, merging the
    /// values of overlapping subscriptions with [`MergeSubscription`]. `out` is not
    /// cleared first, so several tries can be collected into one set.
    pub fn collect_matches<S>(&self, topic: &TopicName, out: &mut MatchSet<K, V, S>)
    where
        V: Clone + MergeSubscription,
        S: BuildHasher,
    {
        self.for_each_match(topic, |key, value| out.add(key, value));
    }

    /// Every subscription as (filter, subscriber, value), for listing and persistence.
    /// Allocates a filter per item; not for the publish path.
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter { trie: self, stack: vec![(ROOT, None)], current: None }
    }

    /// `rest` is the unmatched tail of the topic, `None` once every level is consumed.
    /// `dollar` is true at the root for a `$` topic, where wildcards do not match
    /// [MQTT-4.7.2-1].
    fn walk<'a, F: FnMut(&'a K, &'a V)>(
        &'a self,
        id: NodeId,
        rest: Option<&[u8]>,
        dollar: bool,
        f: &mut F,
    ) {
        let node = self.node(id);
        let Some(rest) = rest else {
            // The topic ends here: filters ending here match, and so does `prefix/#`,
            // as `#` also matches its parent level [MQTT-4.7.1-1].
            node.subscribers.entries.iter().for_each(|(k, v)| f(k, v));
            if let Some(hash) = node.hash {
                self.node(hash).subscribers.entries.iter().for_each(|(k, v)| f(k, v));
            }
            return;
        };
        let (level, next) = match memchr::memchr(b'/', rest) {
            Some(at) => {
                let (level, tail) = rest.split_at(at);
                (level, tail.get(1..))
            }
            None => (rest, None),
        };
        if !dollar {
            if let Some(hash) = node.hash {
                self.node(hash).subscribers.entries.iter().for_each(|(k, v)| f(k, v));
            }
            if let Some(plus) = node.plus {
                self.walk(plus, next, false, f);
            }
        }
        if let Some(child) = node.children.get(level) {
            self.walk(child, next, false, f);
        }
    }

    fn find(&self, filter: &TopicFilter) -> Option<NodeId> {
        let mut node = ROOT;
        for level in filter.levels() {
            node = self.edge(node, level)?;
        }
        Some(node)
    }

    fn edge(&self, id: NodeId, level: &str) -> Option<NodeId> {
        let node = self.node(id);
        match level {
            "+" => node.plus,
            "#" => node.hash,
            _ => node.children.get(level.as_bytes()),
        }
    }

    fn child_or_insert(&mut self, id: NodeId, level: &str) -> NodeId {
        if let Some(child) = self.edge(id, level) {
            return child;
        }
        let child = self.nodes.alloc();
        let node = self.node_mut(id);
        match level {
            "+" => node.plus = Some(child),
            "#" => node.hash = Some(child),
            _ => node.children.insert(level.as_bytes(), child),
        }
        child
    }

    /// Frees the branch ending in the (now empty) node `filter` leads to: cuts the edge
    /// below the deepest ancestor that stays (the root, or a node with subscribers or
    /// another edge) and frees the single-edge chain under it.
    fn prune(&mut self, filter: &TopicFilter) {
        let mut cut: Option<(NodeId, &str, usize)> = None;
        let mut node = ROOT;
        for (depth, level) in filter.levels().enumerate() {
            let Some(child) = self.edge(node, level) else { return };
            let here = self.node(node);
            if node == ROOT || !here.subscribers.is_empty() || here.edge_count() > 1 {
                cut = Some((node, level, depth));
            }
            node = child;
        }
        let Some((parent, level, depth)) = cut else { return };
        let parent = self.node_mut(parent);
        let detached = match level {
            "+" => parent.plus.take(),
            "#" => parent.hash.take(),
            _ => parent.children.remove(level.as_bytes()),
        };
        let mut next = detached;
        for level in filter.levels().skip(depth + 1).map(Some).chain([None]) {
            let Some(id) = next else { break };
            next = level.and_then(|level| self.edge(id, level));
            debug_assert!(self.node(id).subscribers.is_empty());
            debug_assert!(self.node(id).edge_count() <= 1);
            self.nodes.release(id);
        }
    }

    // Ids come only from this tree's edges, which point at live nodes (see Invariants).
    fn node(&self, id: NodeId) -> &Node<K, V> {
        self.nodes.get(id)
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node<K, V> {
        self.nodes.get_mut(id)
    }
}

/// Iterator over every subscription of a [`SubscriptionTrie`]; see
/// [`SubscriptionTrie::iter`].
#[derive(Debug)]
pub struct Iter<'a, K, V> {
    trie: &'a SubscriptionTrie<K, V>,
    /// Nodes still to visit, with the filter text leading to them (`None` for the root,
    /// which has no text: its child `""` spells the filter `""`, the first empty level).
    stack: Vec<(NodeId, Option<String>)>,
    /// The node whose subscribers are being yielded, and its filter.
    current: Option<(TopicFilter, std::slice::Iter<'a, (K, V)>)>,
}

impl<'a, K: Eq + Hash + Clone, V> Iterator for Iter<'a, K, V> {
    type Item = (TopicFilter, &'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((filter, entries)) = &mut self.current {
                if let Some((k, v)) = entries.next() {
                    return Some((filter.clone(), k, v));
                }
                self.current = None;
            }
            let (id, path) = self.stack.pop()?;
            let trie = self.trie;
            let node = trie.node(id);
            let child_path = |level: &[u8]| {
                let level = String::from_utf8_lossy(level);
                match &path {
                    None => level.into_owned(),
                    Some(path) => format!("{path}/{level}"),
                }
            };
            node.children
                .for_each(|level, child| self.stack.push((child, Some(child_path(level)))));
            if let Some(plus) = node.plus {
                self.stack.push((plus, Some(child_path(b"+"))));
            }
            if let Some(hash) = node.hash {
                self.stack.push((hash, Some(child_path(b"#"))));
            }
            if let (Some(path), false) = (path, node.subscribers.is_empty()) {
                let filter = TopicFilter::from_valid(path);
                self.current = Some((filter, node.subscribers.entries.iter()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::QoS;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap()
    }

    fn topic(s: &str) -> TopicName {
        TopicName::try_from_str(s).unwrap()
    }

    fn matches(trie: &SubscriptionTrie<u32, QoS>, t: &str) -> Vec<(u32, QoS)> {
        let mut out = Vec::new();
        trie.for_each_match(&topic(t), |k, v| out.push((*k, *v)));
        out.sort();
        out
    }

    #[test]
    fn node_size_is_a_decision() {
        // Child map (a vector's size, the large case boxed) 24, `+` and `#` edges 2 x 16,
        // subscriber vector 24, boxed optional index 8.
        assert_eq!(std::mem::size_of::<Node<u64, QoS>>(), 88);
    }

    #[test]
    fn insert_replaces_and_counts_per_filter_and_key() {
        let mut trie = SubscriptionTrie::new();
        assert!(trie.is_empty());
        assert_eq!(trie.insert(&filter("a/b"), 1u32, QoS::AtMostOnce), None);
        assert_eq!(trie.insert(&filter("a/b"), 2, QoS::AtMostOnce), None);
        assert_eq!(trie.insert(&filter("a/+"), 1, QoS::AtMostOnce), None);
        assert_eq!(trie.insert(&filter("a/b"), 1, QoS::ExactlyOnce), Some(QoS::AtMostOnce));
        assert_eq!(trie.len(), 3);
        assert_eq!(trie.get(&filter("a/b"), &1), Some(&QoS::ExactlyOnce));
        assert_eq!(trie.get(&filter("a/#"), &1), None);
        assert_eq!(trie.get(&filter("a/b"), &3), None);
        *trie.get_mut(&filter("a/+"), &1).unwrap() = QoS::AtLeastOnce;
        assert_eq!(trie.get(&filter("a/+"), &1), Some(&QoS::AtLeastOnce));
    }

    #[test]
    fn matches_spec_examples() {
        let mut trie = SubscriptionTrie::new();
        let filters =
            ["sport/tennis/player1/#", "sport/+", "+/+", "/+", "+", "#", "$SYS/#", "sport/#"];
        for (i, f) in filters.iter().enumerate() {
            trie.insert(&filter(f), i as u32, QoS::AtMostOnce);
        }
        let keys = |t: &str| matches(&trie, t).into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys("sport/tennis/player1"), [0, 5, 7]);
        assert_eq!(keys("sport/tennis/player1/score/wimbledon"), [0, 5, 7]);
        assert_eq!(keys("sport"), [4, 5, 7]);
        assert_eq!(keys("sport/"), [1, 2, 5, 7]);
        assert_eq!(keys("/finance"), [2, 3, 5]);
        assert_eq!(keys("finance"), [4, 5]);
        assert_eq!(keys("$SYS/broker/load"), [6]);
        assert_eq!(keys("$SYS"), [6]);
        assert_eq!(keys("$other/x"), Vec::<u32>::new());
    }

    #[test]
    fn removing_everything_frees_every_node_but_the_root() {
        let mut trie = SubscriptionTrie::new();
        let filters = ["a/b/c", "a/b", "a/+/c", "a/#", "#", "+", "/", "//", "a/b/c/d/e", "$SYS/+"];
        for f in filters {
            for key in 0..3u32 {
                trie.insert(&filter(f), key, QoS::AtMostOnce);
            }
        }
        assert_eq!(trie.len(), filters.len() * 3);
        assert!(trie.node_count() > 10);
        // Remove in an order that empties inner nodes before their descendants.
        for f in filters.iter().rev().chain(filters.iter()) {
            for key in 0..3u32 {
                trie.remove(&filter(f), &key);
            }
        }
        assert!(trie.is_empty());
        assert_eq!(trie.node_count(), 1);
        assert_eq!(matches(&trie, "a/b/c"), []);
    }

    #[test]
    fn remove_keeps_shared_prefixes_and_reuses_freed_nodes() {
        let mut trie = SubscriptionTrie::new();
        trie.insert(&filter("a/b/c/d"), 1u32, QoS::AtMostOnce);
        trie.insert(&filter("a/b"), 1, QoS::AtMostOnce);
        trie.insert(&filter("a/x"), 1, QoS::AtMostOnce);
        assert_eq!(trie.node_count(), 6);
        assert_eq!(trie.remove(&filter("a/b/c/d"), &1), Some(QoS::AtMostOnce));
        assert_eq!(trie.remove(&filter("a/b/c/d"), &1), None);
        assert_eq!(trie.remove(&filter("a/b/c"), &1), None);
        assert_eq!(trie.node_count(), 4);
        assert_eq!(matches(&trie, "a/b"), [(1, QoS::AtMostOnce)]);
        assert_eq!(matches(&trie, "a/x"), [(1, QoS::AtMostOnce)]);
        let arena = trie.nodes.slot_count();
        trie.insert(&filter("q/r"), 2, QoS::AtMostOnce);
        assert_eq!(trie.nodes.slot_count(), arena, "freed nodes are reused");
    }

    #[test]
    fn overlapping_subscriptions_merge_to_the_highest_qos() {
        let mut trie = SubscriptionTrie::new();
        trie.insert(&filter("site/+/temp"), 7u32, QoS::AtLeastOnce);
        trie.insert(&filter("site/#"), 7, QoS::AtMostOnce);
        trie.insert(&filter("site/3/temp"), 7, QoS::ExactlyOnce);
        trie.insert(&filter("#"), 8, QoS::AtMostOnce);
        trie.insert(&filter("site/3/+"), 8, QoS::AtLeastOnce);
        let mut out = MatchSet::new();
        trie.collect_matches(&topic("site/3/temp"), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out.get(&7), Some(&QoS::ExactlyOnce));
        assert_eq!(out.get(&8), Some(&QoS::AtLeastOnce));
        out.clear();
        trie.collect_matches(&topic("site/4/temp"), &mut out);
        assert_eq!(out.get(&7), Some(&QoS::AtLeastOnce));
    }

    #[test]
    fn many_subscribers_on_one_filter_use_the_index() {
        let mut trie = SubscriptionTrie::new();
        for key in 0..1000u32 {
            trie.insert(&filter("#"), key, QoS::AtMostOnce);
        }
        assert_eq!(trie.insert(&filter("#"), 500, QoS::AtLeastOnce), Some(QoS::AtMostOnce));
        for key in (0..1000u32).filter(|k| k % 3 != 0) {
            assert!(trie.remove(&filter("#"), &key).is_some(), "{key}");
        }
        assert_eq!(trie.len(), 334);
        for key in 0..1000u32 {
            assert_eq!(trie.get(&filter("#"), &key).is_some(), key % 3 == 0, "{key}");
        }
        assert_eq!(matches(&trie, "x").len(), 334);
        for key in (0..1000u32).filter(|k| k % 3 == 0) {
            assert!(trie.remove(&filter("#"), &key).is_some());
        }
        assert_eq!(trie.node_count(), 1);
    }

    #[test]
    fn iter_lists_every_subscription_with_its_filter() {
        let mut trie = SubscriptionTrie::new();
        let subs = [("a/b", 1u32), ("a/b", 2), ("/", 1), ("+/#", 3), ("#", 4), ("a//+", 5)];
        for (f, k) in subs {
            trie.insert(&filter(f), k, QoS::AtLeastOnce);
        }
        let mut listed: Vec<(String, u32)> =
            trie.iter().map(|(f, k, _)| (f.as_str().to_owned(), *k)).collect();
        listed.sort();
        let mut want: Vec<(String, u32)> = subs.iter().map(|(f, k)| (f.to_string(), *k)).collect();
        want.sort();
        assert_eq!(listed, want);
    }

    #[test]
    fn empty_topic_matches_nothing() {
        let mut trie = SubscriptionTrie::new();
        trie.insert(&filter("#"), 1u32, QoS::AtMostOnce);
        let mut hits = 0;
        trie.for_each_match(&TopicName::empty(), |_, _| hits += 1);
        assert_eq!(hits, 0);
    }
}
