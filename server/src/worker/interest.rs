//! Which other workers a publish has to reach.
//!
//! A worker's trie holds only its own sessions' subscriptions, so `route` used to hand
//! every publish to every other worker. Each hand-off costs the receiving worker a
//! wake-up and a trie lookup, and with many workers most of them match nothing. So
//! every worker keeps, in [`Interest`], a coarse summary of its trie that the others
//! read: for each filter, its *literal prefix* (the levels before its first wildcard,
//! `devices/17/cmd` or `devices` for `devices/+/telemetry`) is counted in a hashed
//! bucket, and filters starting with a wildcard are counted apart. A topic may match a
//! worker if that worker has a leading-wildcard filter (not for `$` topics), or if one
//! of the topic's own prefixes, at a depth some filter's prefix has, hits a counted
//! bucket. Hash collisions only cost a needless hand-off; they never skip a match.
//!
//! Counts change in the same step as the subscription they stand for, before the
//! SUBACK is encoded, so a publish that follows the SUBACK (on any worker) sees them:
//! a worker counts its own trie's filters under its own index, and a shared
//! subscription's filter (`$share/{group}/{filter}`) under the index of the group's
//! home worker, which is where that group is matched. The member's worker does the
//! counting for its sessions' memberships (`worker/shared.rs`), so the home's counts
//! hold before the member's `Join` even reaches it. Several workers may change one
//! worker's counts; every change is an atomic add or subtract, so they compose.
//!
//! With one worker there is nobody to skip: `route` builds no [`TopicProbe`] at all.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};

use shoal_core::TopicFilter;

/// Hashed prefix buckets per worker: 128 KiB each. A worker with 10,000 distinct
/// prefixes fills about 14% of them, so 86% of the publishes it cannot match skip it.
const BUCKETS: usize = 1 << 16;
/// Prefixes longer than this many levels are cut to it (a topic is probed as deep).
const MAX_DEPTH: usize = 32;

/// The subscription summaries of all workers, shared by them.
#[derive(Debug)]
pub(crate) struct Interest {
    workers: usize,
    /// `[worker * BUCKETS + bucket]`: filters of `worker` whose literal prefix hashes to
    /// `bucket`. A count that reaches `u16::MAX` stays there (a false positive at worst).
    prefixes: Box<[AtomicU16]>,
    /// `[worker * (MAX_DEPTH + 1) + depth]`: filters of `worker` whose literal prefix
    /// has `depth` levels, so a topic is probed only at depths in use.
    depths: Box<[AtomicU32]>,
    /// Filters of each worker whose first level is `+` or `#`.
    wild: Box<[AtomicU32]>,
    /// A shared subscription has been made. Publish routing does not use this (the
    /// group homes' counts cover the groups); the durable store's marks still do
    /// ([`Interest::any_shared`]).
    shared_seen: AtomicBool,
}

/// A topic's prefix hashes, computed once per publish for all workers.
pub(crate) struct TopicProbe {
    dollar: bool,
    /// `hashes[d - 1]`: the hash of the topic's first `d` levels.
    hashes: [u32; MAX_DEPTH],
    depth: usize,
}

impl TopicProbe {
    pub(crate) fn new(topic: &str) -> Self {
        let mut hashes = [0; MAX_DEPTH];
        let mut depth = 0;
        let mut h = FNV_OFFSET;
        for &b in topic.as_bytes() {
            if b == b'/' {
                if let Some(slot) = hashes.get_mut(depth) {
                    *slot = h;
                }
                depth += 1;
                if depth == MAX_DEPTH {
                    break;
                }
            }
            h = fnv(h, b);
        }
        if depth < MAX_DEPTH {
            if let Some(slot) = hashes.get_mut(depth) {
                *slot = h;
            }
            depth += 1;
        }
        Self { dollar: topic.starts_with('$'), hashes, depth }
    }
}

/// Where a filter counts.
enum Key {
    /// Its first level is a wildcard.
    Wild,
    /// Its literal prefix: hash and number of levels.
    Prefix(u32, usize),
}

impl Interest {
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            workers,
            prefixes: (0..workers * BUCKETS).map(|_| AtomicU16::new(0)).collect(),
            depths: (0..workers * (MAX_DEPTH + 1)).map(|_| AtomicU32::new(0)).collect(),
            wild: (0..workers).map(|_| AtomicU32::new(0)).collect(),
            shared_seen: AtomicBool::new(false),
        }
    }

    /// `filter` now counts for `worker`: a new entry in its trie (not a replaced one), or
    /// a new member of a group it is home to.
    pub(crate) fn added(&self, worker: usize, filter: &TopicFilter) {
        match key(filter.as_str()) {
            Key::Wild => bump(self.wild.get(worker)),
            Key::Prefix(h, depth) => {
                bump(self.depths.get(worker * (MAX_DEPTH + 1) + depth));
                if let Some(c) = self.prefixes.get(worker * BUCKETS + bucket(h)) {
                    let _ =
                        c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_add(1));
                }
            }
        }
    }

    /// `filter` no longer counts for `worker`: out of its trie, or a membership of a
    /// group it is home to ended. Pairs with one [`Interest::added`].
    pub(crate) fn removed(&self, worker: usize, filter: &TopicFilter) {
        match key(filter.as_str()) {
            Key::Wild => drop_one(self.wild.get(worker)),
            Key::Prefix(h, depth) => {
                drop_one(self.depths.get(worker * (MAX_DEPTH + 1) + depth));
                if let Some(c) = self.prefixes.get(worker * BUCKETS + bucket(h)) {
                    // A saturated count is never lowered: it no longer knows its size.
                    let _ = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n != u16::MAX).then(|| n.saturating_sub(1))
                    });
                }
            }
        }
    }

    /// A session joined a shared subscription group (its filter is counted apart,
    /// under the group home: see the module doc).
    pub(crate) fn shared_subscription(&self) {
        self.shared_seen.store(true, Ordering::Release);
    }

    /// Whether any shared subscription was ever made. A group's message may be written
    /// to the durable store by a member's worker that no count names (the group home
    /// hands it over), so the store's marks go to every worker with persistent
    /// sessions once groups exist, as they did before groups were counted.
    pub(crate) fn any_shared(&self) -> bool {
        self.shared_seen.load(Ordering::Acquire)
    }

    /// Whether `worker` may have a subscription matching the probed topic: one in its
    /// trie, or a shared subscription of a group it is home to.
    pub(crate) fn may_match(&self, worker: usize, topic: &TopicProbe) -> bool {
        if worker >= self.workers {
            return true;
        }
        // [MQTT-4.7.2-1] filters starting with a wildcard do not match `$` topics.
        if !topic.dollar && self.wild.get(worker).is_some_and(|w| w.load(Ordering::Acquire) > 0) {
            return true;
        }
        let depths = worker * (MAX_DEPTH + 1);
        for (d, &h) in topic.hashes.iter().enumerate().take(topic.depth) {
            let in_use =
                self.depths.get(depths + d + 1).is_some_and(|c| c.load(Ordering::Acquire) > 0);
            if in_use
                && self
                    .prefixes
                    .get(worker * BUCKETS + bucket(h))
                    .is_some_and(|c| c.load(Ordering::Acquire) > 0)
            {
                return true;
            }
        }
        false
    }
}

fn bump(c: Option<&AtomicU32>) {
    if let Some(c) = c {
        c.fetch_add(1, Ordering::AcqRel);
    }
}

/// Never below zero, even if a caller got the pairing wrong: a stuck count only costs
/// hand-offs, a wrapped one would cost deliveries.
fn drop_one(c: Option<&AtomicU32>) {
    if let Some(c) = c {
        let _ = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

/// The filter's literal prefix, hashed the way [`TopicProbe`] hashes topic prefixes.
fn key(filter: &str) -> Key {
    let mut h = FNV_OFFSET;
    let mut depth = 0;
    for level in filter.split('/') {
        if level == "+" || level == "#" || depth == MAX_DEPTH {
            break;
        }
        if depth > 0 {
            h = fnv(h, b'/');
        }
        for &b in level.as_bytes() {
            h = fnv(h, b);
        }
        depth += 1;
    }
    if depth == 0 {
        Key::Wild
    } else {
        Key::Prefix(h, depth)
    }
}

const FNV_OFFSET: u32 = 0x811c_9dc5;

/// FNV-1a, one byte.
fn fnv(h: u32, b: u8) -> u32 {
    (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
}

/// FNV's low bits mix poorly: fold the high half in.
fn bucket(h: u32) -> usize {
    ((h ^ (h >> 16)) as usize) % BUCKETS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap()
    }

    fn hit(i: &Interest, worker: usize, topic: &str) -> bool {
        i.may_match(worker, &TopicProbe::new(topic))
    }

    #[test]
    fn a_worker_without_subscriptions_is_skipped() {
        let i = Interest::new(2);
        assert!(!hit(&i, 1, "site/1/temp"));
        i.added(1, &f("site/+/temp"));
        assert!(hit(&i, 1, "site/1/temp"));
        assert!(!hit(&i, 0, "site/1/temp"));
        i.removed(1, &f("site/+/temp"));
        assert!(!hit(&i, 1, "site/1/temp"));
    }

    #[test]
    fn literal_prefixes_tell_topics_under_one_root_apart() {
        let i = Interest::new(1);
        i.added(0, &f("devices/17/cmd"));
        i.added(0, &f("devices/18/cmd/#"));
        assert!(hit(&i, 0, "devices/17/cmd"));
        assert!(hit(&i, 0, "devices/18/cmd"));
        assert!(hit(&i, 0, "devices/18/cmd/reboot"));
        // Other devices' telemetry, the common case, skips this worker.
        let misses = (0..1000).filter(|n| !hit(&i, 0, &format!("devices/{n}/telemetry"))).count();
        assert!(misses >= 990, "only {misses} of 1000 skipped");
        i.added(0, &f("devices/+/telemetry"));
        assert!(hit(&i, 0, "devices/5/telemetry"));
    }

    #[test]
    fn counts_pair_up_over_filters_with_the_same_prefix() {
        let i = Interest::new(1);
        i.added(0, &f("a/b"));
        i.added(0, &f("a/b/#"));
        i.removed(0, &f("a/b"));
        assert!(hit(&i, 0, "a/b/c"));
        i.removed(0, &f("a/b/#"));
        assert!(!hit(&i, 0, "a/b/c"));
        // An unpaired removal does not wrap the count.
        i.removed(0, &f("a/b/#"));
        i.added(0, &f("a/b"));
        assert!(hit(&i, 0, "a/b"));
    }

    #[test]
    fn leading_wildcards_match_everything_but_dollar_topics() {
        let i = Interest::new(1);
        i.added(0, &f("#"));
        assert!(hit(&i, 0, "anything/at/all"));
        assert!(!hit(&i, 0, "$SYS/broker/uptime"));
        i.removed(0, &f("#"));
        i.added(0, &f("+/status"));
        assert!(hit(&i, 0, "dev/status"));
        assert!(!hit(&i, 0, "$SYS/status"));
        i.added(0, &f("$SYS/#"));
        assert!(hit(&i, 0, "$SYS/broker/uptime"));
        assert!(hit(&i, 0, "$SYS"));
    }

    #[test]
    fn empty_levels_are_levels() {
        let i = Interest::new(1);
        i.added(0, &f("/+"));
        assert!(hit(&i, 0, "/b"));
        i.added(0, &f("a//c"));
        assert!(hit(&i, 0, "a//c"));
    }

    #[test]
    fn deep_filters_are_cut_to_the_probe_depth() {
        let i = Interest::new(1);
        let deep: Vec<String> = (0..40).map(|n| n.to_string()).collect();
        let topic = deep.join("/");
        i.added(0, &f(&topic));
        assert!(hit(&i, 0, &topic));
        assert!(!hit(&i, 0, "0/1/2"));
    }

    #[test]
    fn a_shared_subscription_leaves_filtering_on() {
        let i = Interest::new(2);
        i.shared_subscription();
        assert!(i.any_shared());
        assert!(!hit(&i, 1, "t"));
        assert!(!hit(&i, 0, "$SYS/x"));
    }
}
