//! `RetainedTree`: retained messages by topic, looked up with a filter.
//!
//! The inverse of the subscription trie (`trie.rs`): here the stored keys are topic
//! names and the query is a filter. A SUBSCRIBE to `site/+/temp` walks only the `site`
//! branch and, below each of its children, the `temp` child; `#` walks a whole subtree.
//! Nothing here knows what a retained message is: `V` is whatever the server stores
//! (payload, QoS, properties, expiry).
//!
//! Lookups use an explicit stack rather than recursion, so a very deep topic cannot
//! exhaust the thread's stack; they allocate that stack once per call, which is fine on
//! the subscribe path.

use super::arena::{Arena, NodeId, ROOT};
use super::level_map::LevelMap;
use super::{TopicFilter, TopicName};

#[derive(Debug, Clone)]
struct Node<V> {
    children: LevelMap<NodeId>,
    /// The message retained on the topic this node spells, with that topic so a lookup
    /// can hand it out without rebuilding it from the path.
    value: Option<(TopicName, V)>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self { children: LevelMap::default(), value: None }
    }
}

/// What is left to do at a node during a lookup.
#[derive(Clone, Copy)]
enum Visit<'f> {
    /// Match the remaining filter levels (`None`: all consumed) against this node.
    Match(NodeId, Option<&'f str>),
    /// Everything at and below this node matches (under a `#`).
    Subtree(NodeId),
}

/// Retained messages keyed by topic name, queried by topic filter.
///
/// # Invariants
/// Node 0 is the root, never freed and never holding a value (a topic has at least one
/// level). Every other live node is reachable by exactly one edge and holds a value or
/// has children. `len` counts the values.
#[derive(Debug, Clone)]
pub struct RetainedTree<V> {
    nodes: Arena<Node<V>>,
    len: usize,
}

impl<V> Default for RetainedTree<V> {
    fn default() -> Self {
        Self { nodes: Arena::default(), len: 0 }
    }
}

impl<V> RetainedTree<V> {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of retained topics.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Live nodes, the root included (1 for an empty tree).
    pub fn node_count(&self) -> usize {
        self.nodes.live()
    }

    /// Retains `value` on `topic`, returning the value it replaces. The empty topic of an
    /// alias-only PUBLISH is never stored (returns `None` and drops `value`).
    pub fn insert(&mut self, topic: &TopicName, value: V) -> Option<V> {
        if topic.is_empty() {
            return None;
        }
        let mut node = ROOT;
        for level in topic.levels() {
            node = match self.node(node).children.get(level) {
                Some(child) => child,
                None => {
                    let child = self.nodes.alloc();
                    self.node_mut(node).children.insert(level, child);
                    child
                }
            };
        }
        let previous = self.node_mut(node).value.replace((topic.clone(), value));
        if previous.is_none() {
            self.len += 1;
        }
        previous.map(|(_, v)| v)
    }

    /// Removes the message retained on `topic`, freeing the branch if it becomes empty.
    pub fn remove(&mut self, topic: &TopicName) -> Option<V> {
        let node = self.find(topic)?;
        let (_, value) = self.node_mut(node).value.take()?;
        self.len -= 1;
        if self.node(node).children.is_empty() {
            self.prune(topic);
        }
        Some(value)
    }

    /// The message retained on `topic`.
    pub fn get(&self, topic: &TopicName) -> Option<&V> {
        self.node(self.find(topic)?).value.as_ref().map(|(_, v)| v)
    }

    /// Calls `f` for every retained topic `filter` matches, in no particular order,
    /// visiting only branches the filter can reach. Follows [`TopicFilter::matches`]:
    /// `+` is one level, `#` its parent level and everything below, and a leading
    /// wildcard skips `$` topics [MQTT-4.7.2-1].
    pub fn for_each_matching(&self, filter: &TopicFilter, mut f: impl FnMut(&TopicName, &V)) {
        let mut emit = |node: &Node<V>| {
            if let Some((topic, value)) = &node.value {
                f(topic, value);
            }
        };
        let mut stack = vec![Visit::Match(ROOT, Some(filter.as_str()))];
        while let Some(visit) = stack.pop() {
            let (id, rest) = match visit {
                Visit::Subtree(id) => {
                    let node = self.node(id);
                    emit(node);
                    node.children.for_each(|_, child| stack.push(Visit::Subtree(child)));
                    continue;
                }
                Visit::Match(id, None) => {
                    emit(self.node(id));
                    continue;
                }
                Visit::Match(id, Some(rest)) => (id, rest),
            };
            let node = self.node(id);
            let (level, next) = match rest.split_once('/') {
                Some((level, next)) => (level, Some(next)),
                None => (rest, None),
            };
            // [MQTT-4.7.2-1] a first-level wildcard does not match `$` topics.
            let wildcard_ok = |key: &[u8]| id != ROOT || key.first() != Some(&b'$');
            match level {
                "#" => {
                    // `#` matches the parent level too; the root spells no topic.
                    emit(node);
                    node.children.for_each(|key, child| {
                        if wildcard_ok(key) {
                            stack.push(Visit::Subtree(child));
                        }
                    });
                }
                "+" => node.children.for_each(|key, child| {
                    if wildcard_ok(key) {
                        stack.push(Visit::Match(child, next));
                    }
                }),
                exact => {
                    if let Some(child) = node.children.get(exact.as_bytes()) {
                        stack.push(Visit::Match(child, next));
                    }
                }
            }
        }
    }

    /// Calls `f` for every retained topic, in no particular order.
    pub fn for_each(&self, mut f: impl FnMut(&TopicName, &V)) {
        // Every live node is either free-listed (empty) or reachable, so a scan of the
        // arena sees each value once.
        for node in self.nodes.slots() {
            if let Some((topic, value)) = &node.value {
                f(topic, value);
            }
        }
    }

    fn find(&self, topic: &TopicName) -> Option<NodeId> {
        if topic.is_empty() {
            return None;
        }
        let mut node = ROOT;
        for level in topic.levels() {
            node = self.node(node).children.get(level)?;
        }
        Some(node)
    }

    /// Frees the chain of nodes that only led to `topic`'s (now empty) node.
    fn prune(&mut self, topic: &TopicName) {
        let mut cut = None;
        let mut node = ROOT;
        for (depth, level) in topic.levels().enumerate() {
            let Some(child) = self.node(node).children.get(level) else { return };
            let here = self.node(node);
            if node == ROOT || here.value.is_some() || here.children.len() > 1 {
                cut = Some((node, level, depth));
            }
            node = child;
        }
        let Some((parent, level, depth)) = cut else { return };
        let mut next = self.node_mut(parent).children.remove(level);
        for level in topic.levels().skip(depth + 1).map(Some).chain([None]) {
            let Some(id) = next else { break };
            next = level.and_then(|level| self.node(id).children.get(level));
            debug_assert!(self.node(id).value.is_none());
            self.nodes.release(id);
        }
    }

    // Ids come only from this tree's edges, which point at live nodes (see Invariants).
    fn node(&self, id: NodeId) -> &Node<V> {
        self.nodes.get(id)
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node<V> {
        self.nodes.get_mut(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap()
    }

    fn topic(s: &str) -> TopicName {
        TopicName::try_from_str(s).unwrap()
    }

    fn lookup(tree: &RetainedTree<u32>, f: &str) -> Vec<String> {
        let mut out = Vec::new();
        tree.for_each_matching(&filter(f), |t, _| out.push(t.to_string()));
        out.sort();
        out
    }

    fn sample() -> RetainedTree<u32> {
        let mut tree = RetainedTree::new();
        let topics = [
            "sport",
            "sport/",
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player2",
            "/finance",
            "finance",
            "$SYS/broker/load",
            "$SYS",
        ];
        for (i, t) in topics.iter().enumerate() {
            tree.insert(&topic(t), i as u32);
        }
        tree
    }

    #[test]
    fn wildcard_lookups_follow_the_spec() {
        let tree = sample();
        assert_eq!(
            lookup(&tree, "sport/tennis/player1/#"),
            ["sport/tennis/player1", "sport/tennis/player1/ranking"]
        );
        assert_eq!(lookup(&tree, "sport/#").len(), 5);
        assert_eq!(lookup(&tree, "sport/+"), ["sport/"]);
        assert_eq!(lookup(&tree, "+/+"), ["/finance", "sport/"]);
        assert_eq!(lookup(&tree, "/+"), ["/finance"]);
        assert_eq!(lookup(&tree, "+"), ["finance", "sport"]);
        assert_eq!(lookup(&tree, "#").len(), 7, "no $ topics");
        assert_eq!(lookup(&tree, "$SYS/#"), ["$SYS", "$SYS/broker/load"]);
        assert_eq!(lookup(&tree, "$SYS/+/load"), ["$SYS/broker/load"]);
        assert_eq!(
            lookup(&tree, "sport/tennis/+"),
            ["sport/tennis/player1", "sport/tennis/player2"]
        );
        assert_eq!(lookup(&tree, "sport/tennis"), Vec::<String>::new());
    }

    #[test]
    fn insert_replaces_get_and_remove() {
        let mut tree = sample();
        assert_eq!(tree.len(), 9);
        assert_eq!(tree.insert(&topic("sport"), 100), Some(0));
        assert_eq!(tree.get(&topic("sport")), Some(&100));
        assert_eq!(tree.get(&topic("sport/tennis")), None);
        assert_eq!(tree.remove(&topic("sport/tennis")), None);
        assert_eq!(tree.remove(&topic("sport")), Some(100));
        assert_eq!(tree.len(), 8);
        assert_eq!(lookup(&tree, "sport/#").len(), 4);
        assert_eq!(tree.insert(&TopicName::empty(), 1), None);
        assert_eq!(tree.len(), 8);
    }

    #[test]
    fn removing_everything_frees_every_node_but_the_root() {
        let mut tree = sample();
        let mut all = Vec::new();
        tree.for_each(|t, _| all.push(t.clone()));
        assert_eq!(all.len(), 9);
        for t in &all {
            assert!(tree.remove(t).is_some(), "{t}");
        }
        assert!(tree.is_empty());
        assert_eq!(tree.node_count(), 1);
        assert_eq!(lookup(&tree, "#"), Vec::<String>::new());
    }
}
