//! A worker's cache of trie matches by topic name.
//!
//! Most deployments publish to a bounded set of topics, each many times, while
//! subscriptions change rarely. Caching "topic → merged matches" turns a trie walk per
//! publish per worker into one hash lookup; the trie (`shoal_core`) stays the source of
//! truth and the cache is dropped whole on every subscription change. It is bounded:
//! past `MAX_CACHED_TOPICS` distinct topics it starts over, so a stream of unique topics
//! costs a walk plus an insert each and never grows memory.

use std::collections::HashMap;
use std::sync::Arc;

use shoal_core::TopicName;

use super::delivery::SubValue;
use crate::store::SessionKey;

/// Distinct topics remembered before the cache is cleared.
const MAX_CACHED_TOPICS: usize = 4096;

/// The merged matches of one topic on one worker.
#[derive(Debug)]
pub(super) struct CachedMatches {
    /// One entry per matching session, subscriptions already merged.
    pub(super) subscribers: Box<[(SessionKey, SubValue)]>,
    /// Some matching subscription has No Local: merging before the publisher is known
    /// could be wrong, so such topics are matched afresh when a client published them.
    pub(super) any_no_local: bool,
}

/// Topic name → merged matches, valid until the next subscription change.
///
/// Keys are peer-chosen topic names, so they are hashed with std's keyed SipHash.
#[derive(Debug, Default)]
pub(super) struct MatchCache {
    topics: HashMap<TopicName, Arc<CachedMatches>>,
}

impl MatchCache {
    /// The cached matches of `topic`.
    pub(super) fn get(&self, topic: &TopicName) -> Option<Arc<CachedMatches>> {
        self.topics.get(topic).cloned()
    }

    /// Remembers the matches of `topic` and returns them.
    pub(super) fn insert(
        &mut self,
        topic: &TopicName,
        subscribers: &[(SessionKey, SubValue)],
    ) -> Arc<CachedMatches> {
        if self.topics.len() >= MAX_CACHED_TOPICS {
            self.topics.clear();
        }
        let any_no_local = subscribers.iter().any(|(_, v)| v.no_local);
        let entry = Arc::new(CachedMatches { subscribers: subscribers.into(), any_no_local });
        // A copy, not the decoder's view: a kept view would pin its whole read chunk
        // (up to MAX_CACHED_TOPICS of them).
        self.topics.insert(topic.detached(), entry.clone());
        entry
    }

    /// Forgets everything (a subscription was added or removed).
    pub(super) fn clear(&mut self) {
        if !self.topics.is_empty() {
            self.topics.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn a_cached_topic_does_not_hold_the_read_chunk() {
        let chunk = Bytes::from(b"a/b and the rest of a read chunk".to_vec());
        let topic = TopicName::parse(chunk.slice(0..3)).unwrap();
        let mut cache = MatchCache::default();
        cache.insert(&topic, &[]);
        assert!(cache.get(&topic).is_some());
        let key = cache.topics.keys().next().unwrap();
        assert!(!chunk.as_ptr_range().contains(&key.as_bytes().as_ptr()));
    }
}
