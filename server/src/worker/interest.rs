//! Which other workers a publish has to reach.
//!
//! A worker's trie holds only its own sessions' subscriptions, so `route` used to hand
//! every publish to every other worker. Each hand-off costs the receiving worker a
//! wake-up and a trie lookup, and with many workers most of them match nothing. So
//! every worker keeps, in [`Interest`], a coarse summary of its trie that the others
//! read: per hashed first topic level, how many of its subscriptions start with that
//! level, and how many start with a wildcard. A publish skips a worker whose summary
//! rules the topic out. A hash collision only costs a needless hand-off.
//!
//! The owning worker changes its counts in the same step as its trie, before the SUBACK
//! is encoded, so a publish that follows the SUBACK (on any worker) sees the new count.
//!
//! Shared subscriptions are matched by the group's home worker, which learns about a
//! member from a message that may still be in flight when the member's SUBACK goes out.
//! Rather than track that, filtering stops for good once any shared subscription has
//! been made: every publish then reaches every worker, as before.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use shoal_core::TopicFilter;

/// Buckets per worker for hashed first levels: 4 KiB per worker.
const BUCKETS: usize = 1024;

/// The subscription summaries of all workers, shared by them.
#[derive(Debug)]
pub(crate) struct Interest {
    workers: usize,
    /// `[worker * BUCKETS + bucket]`: subscriptions of `worker` whose first level
    /// hashes to `bucket`.
    levels: Box<[AtomicU32]>,
    /// Subscriptions of each worker whose first level is `+` or `#`.
    wild: Box<[AtomicU32]>,
    /// A shared subscription has been made: no filtering any more.
    shared_seen: AtomicBool,
}

/// Where a filter or topic counts: a hashed first level, or any topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Level(usize),
    Wild,
}

impl Interest {
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            workers,
            levels: (0..workers * BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            wild: (0..workers).map(|_| AtomicU32::new(0)).collect(),
            shared_seen: AtomicBool::new(false),
        }
    }

    /// `worker` put `filter` into its trie (a new entry, not a replaced one).
    pub(crate) fn added(&self, worker: usize, filter: &TopicFilter) {
        if let Some(c) = self.counter(worker, filter) {
            c.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// `worker` took `filter` out of its trie.
    pub(crate) fn removed(&self, worker: usize, filter: &TopicFilter) {
        if let Some(c) = self.counter(worker, filter) {
            // Never below zero, even if a caller got the pairing wrong: a stuck
            // count only costs hand-offs, a wrapped one would cost deliveries.
            let _ = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// A session joined a shared subscription group.
    pub(crate) fn shared_subscription(&self) {
        self.shared_seen.store(true, Ordering::Release);
    }

    /// Whether `worker` may have a subscription matching `topic`.
    pub(crate) fn may_match(&self, worker: usize, topic: &str) -> bool {
        if worker >= self.workers || self.shared_seen.load(Ordering::Acquire) {
            return true;
        }
        let first = first_level(topic);
        // [MQTT-4.7.2-1] filters starting with a wildcard do not match `$` topics.
        if !first.starts_with('$')
            && self.wild.get(worker).is_some_and(|w| w.load(Ordering::Acquire) > 0)
        {
            return true;
        }
        self.levels
            .get(worker * BUCKETS + bucket(first))
            .map_or(true, |c| c.load(Ordering::Acquire) > 0)
    }

    fn counter(&self, worker: usize, filter: &TopicFilter) -> Option<&AtomicU32> {
        match slot(filter.as_str()) {
            Slot::Wild => self.wild.get(worker),
            Slot::Level(b) => self.levels.get(worker * BUCKETS + b),
        }
    }
}

fn slot(filter: &str) -> Slot {
    match first_level(filter) {
        "+" | "#" => Slot::Wild,
        first => Slot::Level(bucket(first)),
    }
}

fn first_level(s: &str) -> &str {
    s.split('/').next().unwrap_or(s)
}

/// FNV-1a: first levels are short, and this runs once per publish per worker.
fn bucket(level: &str) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for &b in level.as_bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as usize % BUCKETS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap()
    }

    #[test]
    fn a_worker_without_subscriptions_is_skipped() {
        let i = Interest::new(2);
        assert!(!i.may_match(1, "site/1/temp"));
        i.added(1, &f("site/+/temp"));
        assert!(i.may_match(1, "site/1/temp"));
        assert!(i.may_match(1, "site"));
        assert!(!i.may_match(0, "site/1/temp"));
        i.removed(1, &f("site/+/temp"));
        assert!(!i.may_match(1, "site/1/temp"));
    }

    #[test]
    fn counts_pair_up_over_filters_with_the_same_first_level() {
        let i = Interest::new(1);
        i.added(0, &f("a/b"));
        i.added(0, &f("a/c/#"));
        i.removed(0, &f("a/b"));
        assert!(i.may_match(0, "a/c/d"));
        i.removed(0, &f("a/c/#"));
        assert!(!i.may_match(0, "a/c/d"));
        // An unpaired removal does not wrap the count.
        i.removed(0, &f("a/c/#"));
        i.added(0, &f("a/x"));
        assert!(i.may_match(0, "a/x"));
    }

    #[test]
    fn leading_wildcards_match_everything_but_dollar_topics() {
        let i = Interest::new(1);
        i.added(0, &f("#"));
        assert!(i.may_match(0, "anything/at/all"));
        assert!(!i.may_match(0, "$SYS/broker/uptime"));
        i.removed(0, &f("#"));
        i.added(0, &f("+/status"));
        assert!(i.may_match(0, "dev/status"));
        assert!(!i.may_match(0, "$SYS/status"));
        i.added(0, &f("$SYS/#"));
        assert!(i.may_match(0, "$SYS/broker/uptime"));
    }

    #[test]
    fn empty_first_levels_are_their_own_level() {
        let i = Interest::new(1);
        i.added(0, &f("/a"));
        assert!(i.may_match(0, "/b"));
        assert!(!i.may_match(0, "a/b") || bucket("a") == bucket(""));
    }

    #[test]
    fn a_shared_subscription_turns_filtering_off() {
        let i = Interest::new(2);
        assert!(!i.may_match(1, "t"));
        i.shared_subscription();
        assert!(i.may_match(1, "t"));
        assert!(i.may_match(0, "$SYS/x"));
    }
}
