//! The subscription trie. (Placeholder: being written.)

/// Maps topic filters to subscribers.
#[derive(Debug, Default)]
pub struct SubscriptionTrie<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> SubscriptionTrie<K, V> {
    /// An empty trie.
    pub fn new() -> Self {
        Self { entries: Vec::new() }
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
