//! Shared subscriptions (`$share/{group}/{filter}`): each message goes to one member of
//! the group, whichever worker the members live on.
//!
//! Every group has a *group home worker*, `hash("{group}/{filter}") % workers`. Member
//! sessions live on their own client ids' home workers, which tell the group home when a
//! member joins, leaves, goes offline or comes back ([`ShareMsg`]). The group home keeps
//! the member list and a trie of its groups' filters; since every publish reaches every
//! worker exactly once, the group home alone matches a publish against a group, picks one
//! member by the configured [`ShareStrategy`] and hands it the message (directly when the
//! member is its own, else by a `Deliver` message to the member's worker). A member whose
//! connection ends hands its unacknowledged QoS 1/2 messages of the group back
//! (`Reassign`), and the group home picks another member. See docs/ARCHITECTURE.md,
//! "Shared subscriptions".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use shoal_core::session::{Delivery, Message};
use shoal_core::topic::{SharedFilter, Subscription};
use shoal_core::QoS;
use shoal_core::{SubscriptionTrie, TopicFilter};

use super::delivery::SubValue;
use super::durable::MarkKind;
use super::Worker;
use crate::config::ShareStrategy;
use crate::metrics::DropCause;
use crate::route::{home_worker, WorkerMsg};
use crate::store::{SessionKey, SessionStore};

/// One member session of a group, as the group home knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberId {
    /// The member session's home worker.
    worker: usize,
    /// Its key in that worker's session store.
    key: SessionKey,
    /// Its client id: a session key can be reused by a later session, a client id and
    /// key together cannot be confused.
    client_id: Arc<str>,
}

/// What workers tell each other about shared subscriptions.
#[derive(Debug)]
pub(crate) enum ShareMsg {
    /// To the group home: a member subscribed (or changed its options).
    Join { name: Arc<str>, filter: TopicFilter, member: MemberId, value: SubValue },
    /// To the group home: a member unsubscribed or its session ended.
    Leave { name: Arc<str>, member: MemberId },
    /// To the group home: a member's connection ended (`false`) or it reconnected.
    Presence { name: Arc<str>, member: MemberId, online: bool },
    /// From the group home to the member's worker: deliver this.
    Deliver { member: MemberId, delivery: Delivery, offer: Offer },
    /// To the group home: give this message of group `tag` to another member.
    Reassign { tag: u64, message: Arc<Message>, refused: Vec<MemberId> },
    /// Durable store: worker `from`, a group home, asks to be told (through
    /// `DurableShared`) once everything the receiver wrote for the `Deliver`s before
    /// this mark is committed (a share mark, see `worker/durable.rs`).
    Mark { from: usize, mark: u64 },
}

/// What travels with one shared message from the group home to a member and back, so
/// that a member that cannot take it hands it on without it going round in circles.
#[derive(Debug, Default)]
pub(crate) struct Offer {
    /// Members whose `on_deliver` hook refused the message: it is not offered to them
    /// again. Empty (no allocation) for nearly every message.
    refused: Vec<MemberId>,
    /// The group home chose this member knowing it is offline (nobody was online): its
    /// persistent session queues the message. Otherwise an offline member hands it back.
    to_offline: bool,
}

/// A group and its members, on its home worker.
#[derive(Debug)]
struct Group {
    filter: TopicFilter,
    members: Vec<(MemberId, SubValue, bool)>,
    /// Next member to try (round robin), or the chosen one (sticky).
    cursor: usize,
}

/// The groups this worker is home to.
pub(crate) struct ShareGroups {
    strategy: ShareStrategy,
    /// Group tag by its `$share/{group}/{filter}` name.
    by_name: HashMap<Arc<str>, u64>,
    groups: HashMap<u64, Group>,
    /// Group filters, keyed by group tag.
    trie: SubscriptionTrie<u64, ()>,
    /// Tags are `worker id << 48 | counter`, so a tag names its group's home worker.
    next_tag: u64,
    /// xorshift state for the random strategy.
    rng: u64,
    /// Reused for every match.
    matched: Vec<u64>,
}

impl ShareGroups {
    pub(crate) fn new(worker: usize, strategy: ShareStrategy) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            strategy,
            by_name: HashMap::new(),
            groups: HashMap::new(),
            trie: SubscriptionTrie::new(),
            next_tag: (worker as u64) << 48,
            rng: (seed ^ (worker as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1,
            matched: Vec::new(),
        }
    }

    /// True when this worker is home to no group (the publish path checks this first).
    pub(crate) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    fn join(&mut self, name: Arc<str>, filter: TopicFilter, member: MemberId, value: SubValue) {
        let tag = match self.by_name.get(&name) {
            Some(&tag) => tag,
            None => {
                self.next_tag += 1;
                let tag = self.next_tag;
                self.trie.insert(&filter, tag, ());
                self.groups.insert(tag, Group { filter, members: Vec::new(), cursor: 0 });
                self.by_name.insert(name, tag);
                tag
            }
        };
        let Some(group) = self.groups.get_mut(&tag) else { return };
        match group.members.iter_mut().find(|(m, _, _)| *m == member) {
            Some(entry) => {
                entry.1 = value;
                entry.2 = true;
            }
            None => group.members.push((member, value, true)),
        }
    }

    fn leave(&mut self, name: &Arc<str>, member: &MemberId) {
        let Some(&tag) = self.by_name.get(name) else { return };
        let Some(group) = self.groups.get_mut(&tag) else { return };
        group.members.retain(|(m, _, _)| m != member);
        if group.members.is_empty() {
            self.trie.remove(&group.filter, &tag);
            self.groups.remove(&tag);
            self.by_name.remove(name);
        }
    }

    fn presence(&mut self, name: &Arc<str>, member: &MemberId, online: bool) {
        let Some(group) = self.by_name.get(name).and_then(|t| self.groups.get_mut(t)) else {
            return;
        };
        if let Some(entry) = group.members.iter_mut().find(|(m, _, _)| m == member) {
            entry.2 = online;
        }
    }

    /// Picks the member of group `tag` to get the next message, never one in `refused`:
    /// an online member by the strategy; with none online, an offline one (a persistent
    /// session, which queues it), reported by `false`; `None` when the group is gone or
    /// every member refused.
    fn pick(&mut self, tag: u64, refused: &[MemberId]) -> Option<(MemberId, SubValue, bool)> {
        let strategy = self.strategy;
        let random = match strategy {
            ShareStrategy::Random => Some(self.next_random()),
            _ => None,
        };
        let group = self.groups.get_mut(&tag)?;
        let n = group.members.len();
        if n == 0 {
            return None;
        }
        let eligible =
            |g: &Group, i: usize| g.members.get(i).is_some_and(|(m, _, _)| !refused.contains(m));
        let online = |g: &Group, i: usize| eligible(g, i) && is_online(g, i);
        let start = group.cursor % n;
        let mut ring = (0..n).map(|k| (start + k) % n);
        let index = match ring.clone().find(|&i| online(group, i)) {
            None => {
                // Nobody eligible connected: spread over the offline members in turn.
                let i = ring.find(|&i| eligible(group, i))?;
                group.cursor = (i + 1) % n;
                i
            }
            Some(first) => match strategy {
                ShareStrategy::RoundRobin => {
                    group.cursor = (first + 1) % n;
                    first
                }
                ShareStrategy::Sticky => {
                    group.cursor = first;
                    first
                }
                ShareStrategy::Random => {
                    let count = (0..n).filter(|&i| online(group, i)).count().max(1);
                    let r = usize::try_from(random.unwrap_or(0) % count as u64).unwrap_or(0);
                    (0..n).filter(|&i| online(group, i)).nth(r)?
                }
            },
        };
        group.members.get(index).map(|(m, v, on)| (m.clone(), v.clone(), *on))
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

fn is_online(group: &Group, i: usize) -> bool {
    group.members.get(i).is_some_and(|(_, _, on)| *on)
}

/// The name a group is known by (`$share/{group}/{filter}`) and its home worker.
fn group_home(name: &str, workers: usize) -> usize {
    home_worker(name, workers)
}

/// Splits a session's subscription filter into a shared one, if it is.
pub(super) fn as_shared(filter: &TopicFilter) -> Option<SharedFilter> {
    if !filter.as_str().starts_with("$share/") {
        return None;
    }
    match Subscription::parse(filter.as_str()) {
        Ok(Subscription::Shared(s)) => Some(s),
        _ => None,
    }
}

impl Worker {
    /// Sends `msg` to worker `to`'s share handling (this worker's own, at once).
    fn send_share(&mut self, to: usize, msg: ShareMsg, now: Instant) {
        if to == self.id {
            self.handle_share(msg, now);
        } else if let Some(out) = self.share_out.get_mut(to) {
            out.push(msg);
        }
    }

    fn member(&self, key: SessionKey) -> Option<MemberId> {
        let slot = self.sessions.get(key)?;
        Some(MemberId { worker: self.id, key, client_id: slot.session.client_id().clone() })
    }

    /// A session of this worker subscribed to a shared filter; `new` unless it only
    /// changed the options of a membership it had (`Event::Subscribe::existed`).
    ///
    /// A new membership counts the group's filter in the group home's `Interest` here,
    /// before the SUBACK is encoded, so a publish the SUBACK prompts on any worker is
    /// handed to the group home; the `Join` reaches the home before that publish (see
    /// `Worker::run`): the SUBACK is not written while the `Join` waits for room in the
    /// home's channel (`Worker::share_waiting`). The count is the membership's: one per session and group,
    /// whatever other members there are, taken back in [`Worker::share_leave`].
    pub(super) fn share_join(
        &mut self,
        key: SessionKey,
        full: &TopicFilter,
        shared: SharedFilter,
        value: SubValue,
        new: bool,
        now: Instant,
    ) {
        let Some(member) = self.member(key) else { return };
        let name: Arc<str> = Arc::from(full.as_str());
        let home = group_home(&name, self.shared.workers);
        if new {
            self.shared.interest.shared_subscription();
            self.shared.interest.added(home, &shared.filter);
        }
        let msg = ShareMsg::Join { name, filter: shared.filter, member, value };
        self.send_share(home, msg, now);
        if home != self.id {
            if let Some(idx) = self.sessions.get(key).and_then(|s| s.conn) {
                self.share_waiting.push(idx);
            }
        }
    }

    /// A session of this worker left a shared group: it unsubscribed, or its session
    /// ends (`discard_session`: clean disconnect, expiry, takeover with clean start).
    /// Takes back the membership's count at the group home. Called once per membership,
    /// as both callers act on the session's own subscription list: UNSUBSCRIBE only
    /// emits `Event::Unsubscribe` for a filter it removed from it, and a discarded
    /// session's list is read once, just before the session is dropped.
    pub(super) fn share_leave(&mut self, key: SessionKey, full: &TopicFilter, now: Instant) {
        let Some(member) = self.member(key) else { return };
        let Some(shared) = as_shared(full) else { return };
        let name: Arc<str> = Arc::from(full.as_str());
        let home = group_home(&name, self.shared.workers);
        self.shared.interest.removed(home, &shared.filter);
        self.send_share(home, ShareMsg::Leave { name, member }, now);
    }

    /// Tells the homes of every group `key` belongs to that its connection came or went.
    pub(super) fn share_presence(&mut self, key: SessionKey, online: bool, now: Instant) {
        let Some(member) = self.member(key) else { return };
        let names: Vec<Arc<str>> = match self.sessions.get(key) {
            Some(slot) => slot
                .session
                .subscriptions()
                .filter(|(f, _)| f.as_str().starts_with("$share/"))
                .map(|(f, _)| Arc::from(f.as_str()))
                .collect(),
            None => return,
        };
        for name in names {
            let home = group_home(&name, self.shared.workers);
            let msg = ShareMsg::Presence { name, member: member.clone(), online };
            self.send_share(home, msg, now);
        }
    }

    /// Deliveries a session gave back (`Event::Orphaned`): its groups learn it is
    /// offline, then each message goes back to its group home for another member.
    pub(super) fn share_orphans(&mut self, key: SessionKey, orphans: Vec<Delivery>, now: Instant) {
        self.share_presence(key, false, now);
        for d in orphans {
            if let Some(tag) = d.share {
                let home = usize::try_from(tag >> 48).unwrap_or(usize::MAX);
                let msg = ShareMsg::Reassign { tag, message: d.message, refused: Vec::new() };
                self.send_share(home, msg, now);
            }
        }
    }

    /// Offers a publish to the groups this worker is home to: one member of each
    /// matching group gets it.
    pub(super) fn deliver_shared(&mut self, msg: &Arc<Message>, now: Instant) {
        let mut matched = std::mem::take(&mut self.share.matched);
        matched.clear();
        self.share.trie.for_each_match(&msg.topic, |tag, ()| matched.push(*tag));
        for &tag in &matched {
            self.share_pick_and_send(tag, msg.clone(), Vec::new(), now);
        }
        self.share.matched = matched;
    }

    fn share_pick_and_send(
        &mut self,
        tag: u64,
        message: Arc<Message>,
        refused: Vec<MemberId>,
        now: Instant,
    ) {
        let Some((member, v, online)) = self.share.pick(tag, &refused) else {
            // No member can take it: every one refused it, or the group is gone
            // (counted with the full queues, the nearest cause).
            let cause = if refused.is_empty() { DropCause::QueueFull } else { DropCause::Acl };
            self.counters.on_dropped(cause);
            return;
        };
        let delivery = Delivery {
            qos: message.qos.min(v.qos()),
            retain: v.retain_as_published() && message.retain,
            subscription_ids: v.ids().to_vec(),
            share: Some(tag),
            message,
        };
        let to = member.worker;
        if to != self.id && delivery.message.qos != QoS::AtMostOnce {
            // The member's worker writes it if the member is persistent: whatever
            // waits for this iteration's writes waits for that worker's too.
            if let Some(d) = self.durable.as_mut() {
                if d.shared.has_persistent(to) {
                    d.forwarded_share(to);
                }
            }
        }
        let offer = Offer { refused, to_offline: !online };
        self.send_share(to, ShareMsg::Deliver { member, delivery, offer }, now);
    }

    /// Sends a shared message back to its group home for another member.
    fn share_hand_back(&mut self, delivery: Delivery, refused: Vec<MemberId>, now: Instant) {
        if let Some(tag) = delivery.share {
            let home = usize::try_from(tag >> 48).unwrap_or(usize::MAX);
            let msg = ShareMsg::Reassign { tag, message: delivery.message, refused };
            self.send_share(home, msg, now);
        }
    }

    /// Handles one share message addressed to this worker.
    pub(super) fn handle_share(&mut self, msg: ShareMsg, now: Instant) {
        match msg {
            ShareMsg::Join { name, filter, member, value } => {
                self.share.join(name, filter, member, value);
            }
            ShareMsg::Leave { name, member } => self.share.leave(&name, &member),
            ShareMsg::Presence { name, member, online } => {
                self.share.presence(&name, &member, online);
            }
            ShareMsg::Reassign { tag, message, refused } => {
                self.share_pick_and_send(tag, message, refused, now);
            }
            ShareMsg::Mark { from, mark } => {
                if let Some(d) = self.durable.as_mut() {
                    d.on_mark(MarkKind::Share, from, mark);
                }
            }
            ShareMsg::Deliver { member, delivery, mut offer } => {
                let Some(slot) = self.sessions.get(member.key) else {
                    // The member's session ended after the group home chose it (its
                    // `Leave` is already on the way there).
                    return self.share_hand_back(delivery, offer.refused, now);
                };
                if *slot.session.client_id() != member.client_id {
                    return self.share_hand_back(delivery, offer.refused, now);
                }
                if slot.conn.is_none() && !offer.to_offline {
                    // Its connection went after the group home chose it; the home has
                    // learnt that by now (same channel, earlier), so another member
                    // gets it, or this one again, knowingly offline, if nobody is on.
                    return self.share_hand_back(delivery, offer.refused, now);
                }
                // on_deliver (ACL read access): a member that may not read the topic
                // does not get it; the group offers it to the members that have not
                // refused it yet.
                if self.shared.hooks.is_some()
                    && !self.may_deliver(member.key, &delivery.message.topic)
                {
                    offer.refused.push(member);
                    return self.share_hand_back(delivery, offer.refused, now);
                }
                // Connected: sent; offline (persistent session): queued for it.
                self.deliver(member.key, delivery, now);
            }
        }
    }

    /// Sends each other worker's pending share messages; a full channel keeps them
    /// (and turns on back-pressure like a full publish batch).
    pub(super) fn flush_share_out(&mut self) -> bool {
        let mut full = false;
        for (i, peer) in self.peers.iter().enumerate() {
            let Some(out) = self.share_out.get_mut(i) else { continue };
            if i == self.id || out.is_empty() {
                continue;
            }
            let batch = std::mem::take(out);
            match peer.tx.try_send(WorkerMsg::Share(batch)) {
                Ok(()) => {
                    if let Err(e) = peer.waker.wake() {
                        log::warn!("worker {}: cannot wake worker {i}: {e}", self.id);
                    }
                }
                Err(crossbeam_channel::TrySendError::Full(WorkerMsg::Share(batch))) => {
                    *out = batch;
                    full = true;
                }
                Err(_) => {}
            }
        }
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: usize) -> MemberId {
        MemberId { worker: 0, key: SessionKey(n), client_id: Arc::from(format!("c{n}")) }
    }

    fn groups(strategy: ShareStrategy, members: usize) -> (ShareGroups, u64) {
        let mut g = ShareGroups::new(0, strategy);
        let name: Arc<str> = Arc::from("$share/g/a");
        for n in 0..members {
            let filter = TopicFilter::parse("a").unwrap();
            g.join(name.clone(), filter, member(n), SubValue::plain(QoS::AtLeastOnce));
        }
        let tag = g.by_name[&name];
        (g, tag)
    }

    fn picks(g: &mut ShareGroups, tag: u64, n: usize) -> Vec<usize> {
        (0..n).map(|_| g.pick(tag, &[]).unwrap().0.key.0).collect()
    }

    /// A SUBSCRIBE to a group homed on the other worker, read while that worker's
    /// channel is full: the `Join` stays in the share outbox, and the SUBACK must not
    /// leave before it, or a publish the SUBACK prompts could reach the group home
    /// first and miss the new member.
    #[test]
    fn a_suback_waits_while_its_join_is_held_by_a_full_channel() {
        use std::io::{ErrorKind, Read};

        use shoal_core::codec::{Connect, ConnectProperties, Packet, Subscribe};
        use shoal_core::codec::{SubscribeFilter, SubscriptionOptions};
        use shoal_core::{PacketId, ProtocolVersion};

        use crate::worker::conn::Conn;

        let now = Instant::now();
        let mut workers = crate::bench_support::workers(2).unwrap();
        let mut home = workers.pop().unwrap();
        let mut member = workers.pop().unwrap();
        let name = (0..).map(|n| format!("$share/g{n}/t")).find(|n| group_home(n, 2) == 1).unwrap();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let (server, peer) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let conn = Conn::new(mio::net::TcpStream::from_std(server), peer, None, 0, now);
        let idx = member.register(conn).unwrap();
        let connect = Connect {
            protocol: ProtocolVersion::V3_1_1,
            clean_start: true,
            keep_alive: 0,
            client_id: "joiner".to_owned(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        };
        member.accept_connect(idx, Box::new(connect), now);
        member.finish_iteration(now);
        let mut connack = [0_u8; 4];
        client.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);

        // The group home's channel is full.
        let to_home = member.peers[1].tx.clone();
        while to_home.try_send(WorkerMsg::Publish(Vec::new())).is_ok() {}
        let subscribe = Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            filters: vec![SubscribeFilter {
                filter: name.clone(),
                options: SubscriptionOptions { qos: QoS::AtLeastOnce, ..Default::default() },
            }],
            properties: Default::default(),
        };
        member.handle_packet(idx, Packet::Subscribe(subscribe), now);
        member.finish_iteration(now);
        client.set_nonblocking(true).unwrap();
        let mut buf = [0_u8; 16];
        match client.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("SUBACK written while its Join waits: {other:?}"),
        }

        // The group home drains its channel; the Join goes out, then the SUBACK.
        while !home.rx.is_empty() {
            home.drain_channel(now);
        }
        member.finish_iteration(now);
        client.set_nonblocking(false).unwrap();
        let mut suback = [0_u8; 5];
        client.read_exact(&mut suback).unwrap();
        assert_eq!(suback, [0x90, 3, 0, 1, 1]);
        home.drain_channel(now);
        assert!(home.share.by_name.contains_key(name.as_str()), "the group home has the member");
    }

    #[test]
    fn round_robin_takes_members_in_turn_and_skips_offline_ones() {
        let (mut g, tag) = groups(ShareStrategy::RoundRobin, 3);
        assert_eq!(picks(&mut g, tag, 6), vec![0, 1, 2, 0, 1, 2]);
        g.presence(&Arc::from("$share/g/a"), &member(1), false);
        assert_eq!(picks(&mut g, tag, 4), vec![0, 2, 0, 2]);
    }

    #[test]
    fn sticky_keeps_one_member_until_it_goes_offline() {
        let (mut g, tag) = groups(ShareStrategy::Sticky, 3);
        assert_eq!(picks(&mut g, tag, 3), vec![0, 0, 0]);
        g.presence(&Arc::from("$share/g/a"), &member(0), false);
        assert_eq!(picks(&mut g, tag, 3), vec![1, 1, 1]);
    }

    #[test]
    fn random_only_picks_online_members_and_reaches_all() {
        let (mut g, tag) = groups(ShareStrategy::Random, 4);
        g.presence(&Arc::from("$share/g/a"), &member(3), false);
        let got = picks(&mut g, tag, 400);
        assert!(got.iter().all(|&k| k < 3));
        for k in 0..3 {
            assert!(got.contains(&k), "member {k} never picked");
        }
    }

    #[test]
    fn offline_members_are_used_only_when_nobody_is_online_and_empty_groups_go() {
        let (mut g, tag) = groups(ShareStrategy::RoundRobin, 2);
        let name: Arc<str> = Arc::from("$share/g/a");
        g.presence(&name, &member(0), false);
        g.presence(&name, &member(1), false);
        assert_eq!(picks(&mut g, tag, 2).len(), 2);
        g.leave(&name, &member(0));
        g.leave(&name, &member(1));
        assert!(g.is_empty());
        assert!(g.pick(tag, &[]).is_none());
    }

    #[test]
    fn members_that_refused_a_message_are_not_offered_it_again() {
        for strategy in [ShareStrategy::RoundRobin, ShareStrategy::Sticky, ShareStrategy::Random] {
            let (mut g, tag) = groups(strategy, 3);
            let refused = [member(0), member(1)];
            for _ in 0..5 {
                assert_eq!(g.pick(tag, &refused).map(|p| p.0), Some(member(2)), "{strategy:?}");
            }
            assert!(g.pick(tag, &[member(0), member(1), member(2)]).is_none());
        }
    }

    #[test]
    fn an_offline_pick_says_so() {
        let (mut g, tag) = groups(ShareStrategy::RoundRobin, 2);
        let name: Arc<str> = Arc::from("$share/g/a");
        assert!(g.pick(tag, &[]).is_some_and(|p| p.2), "online member picked as online");
        g.presence(&name, &member(0), false);
        g.presence(&name, &member(1), false);
        assert!(g.pick(tag, &[]).is_some_and(|p| !p.2), "offline member picked as online");
        // Offline and refused: nobody.
        assert!(g.pick(tag, &[member(0), member(1)]).is_none());
    }

    /// A worker of four holding member sessions; the counts it makes for group homes.
    mod counts {
        use std::net::TcpListener;
        use std::time::Instant;

        use shoal_core::codec::{
            Connect, Disconnect, Packet, Subscribe, SubscribeFilter, SubscriptionOptions,
            Unsubscribe,
        };
        use shoal_core::{PacketId, ProtocolVersion, QoS, ReasonCode};

        use super::super::super::conn::Conn;
        use super::super::super::interest::{Interest, TopicProbe};
        use super::super::{group_home, Worker};
        use crate::store::SessionStore;

        const WORKERS: usize = 4;

        struct Rig {
            worker: Worker,
            interest: std::sync::Arc<Interest>,
            listener: TcpListener,
            now: Instant,
        }

        impl Rig {
            fn new() -> Self {
                let shared = crate::bench_support::shared(WORKERS);
                let interest = shared.interest.clone();
                let worker = Worker::new(0, &[], shared).unwrap();
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                Self { worker, interest, listener, now: Instant::now() }
            }

            /// A new connection sending CONNECT for `id` (3.1.1); its connection index.
            fn connect(&mut self, id: &str, clean: bool) -> usize {
                let client = std::net::TcpStream::connect(self.listener.local_addr().unwrap());
                let (server, peer) = self.listener.accept().unwrap();
                drop(client);
                server.set_nonblocking(true).unwrap();
                let stream = mio::net::TcpStream::from_std(server);
                let idx = self.worker.register(Conn::new(stream, peer, None, 0, self.now));
                let idx = idx.unwrap();
                let connect = Connect {
                    protocol: ProtocolVersion::V3_1_1,
                    clean_start: clean,
                    keep_alive: 0,
                    client_id: id.to_owned(),
                    will: None,
                    username: None,
                    password: None,
                    properties: Default::default(),
                };
                self.worker.accept_connect(idx, Box::new(connect), self.now);
                idx
            }

            fn subscribe(&mut self, idx: usize, filter: &str, qos: QoS) {
                let options = SubscriptionOptions { qos, ..Default::default() };
                let subscribe = Subscribe {
                    packet_id: PacketId::new(1).unwrap(),
                    filters: vec![SubscribeFilter { filter: filter.to_owned(), options }],
                    properties: Default::default(),
                };
                self.worker.handle_packet(idx, Packet::Subscribe(subscribe), self.now);
            }

            fn unsubscribe(&mut self, idx: usize, filter: &str) {
                let unsubscribe = Unsubscribe {
                    packet_id: PacketId::new(2).unwrap(),
                    filters: vec![filter.to_owned()],
                    properties: Default::default(),
                };
                self.worker.handle_packet(idx, Packet::Unsubscribe(unsubscribe), self.now);
            }

            fn disconnect(&mut self, idx: usize) {
                let d =
                    Disconnect { reason_code: ReasonCode::Success, properties: Default::default() };
                self.worker.handle_packet(idx, Packet::Disconnect(d), self.now);
            }

            /// Whether a publish to `topic` on another worker would be handed to `to`.
            fn reaches(&self, to: usize, topic: &str) -> bool {
                self.interest.may_match(to, &TopicProbe::new(topic))
            }
        }

        /// A group name whose home is not worker 0 (the members' worker).
        fn remote_group(filter: &str) -> (String, usize) {
            (0..)
                .map(|n| format!("$share/g{n}/{filter}"))
                .map(|name| {
                    let home = group_home(&name, WORKERS);
                    (name, home)
                })
                .find(|(_, home)| *home != 0)
                .unwrap()
        }

        #[test]
        fn a_membership_counts_at_the_group_home_once_until_it_ends() {
            let mut rig = Rig::new();
            let (group, home) = remote_group("t/+");
            assert!(!rig.reaches(home, "t/x"));
            // Subscribe, change the options (no second count), unsubscribe.
            let a = rig.connect("a", true);
            rig.subscribe(a, &group, QoS::AtLeastOnce);
            assert!(rig.reaches(home, "t/x"), "counted before the SUBACK leaves");
            assert!(!rig.reaches(0, "t/x"), "the member's own worker does not match it");
            assert!(!rig.reaches(home, "u/x"));
            rig.subscribe(a, &group, QoS::AtMostOnce);
            rig.unsubscribe(a, &group);
            assert!(!rig.reaches(home, "t/x"), "a re-subscribe counted twice");
            // A second UNSUBSCRIBE of a's, for what a no longer has, takes nothing
            // back from b's membership.
            let b = rig.connect("b", false);
            rig.subscribe(b, &group, QoS::AtLeastOnce);
            rig.unsubscribe(a, &group);
            assert!(rig.reaches(home, "t/x"), "b's membership was taken back by a");
            // A persistent member's connection ends: still a member, still counted.
            rig.disconnect(b);
            assert!(rig.reaches(home, "t/x"), "an offline persistent member is a member");
            // It comes back (session present), then a clean start takes its id over:
            // the old session and its membership end.
            let b2 = rig.connect("b", false);
            assert!(rig.reaches(home, "t/x"));
            let _b3 = rig.connect("b", true);
            assert!(!rig.reaches(home, "t/x"), "takeover with clean start left the count");
            rig.disconnect(b2);
            assert!(!rig.reaches(home, "t/x"));
            // A clean session's end.
            let c = rig.connect("c", true);
            rig.subscribe(c, &group, QoS::AtLeastOnce);
            rig.disconnect(c);
            assert!(!rig.reaches(home, "t/x"), "a clean session's end left the count");
            // A persistent session's expiry (discarded while offline).
            let d = rig.connect("d", false);
            rig.subscribe(d, &group, QoS::AtLeastOnce);
            rig.disconnect(d);
            assert!(rig.reaches(home, "t/x"));
            let key = rig.worker.sessions.find("d").unwrap();
            rig.worker.discard_session(key, rig.now);
            assert!(!rig.reaches(home, "t/x"), "an expired session left the count");
        }

        #[test]
        fn members_of_one_group_count_apart_and_plain_subscriptions_stay_local() {
            let mut rig = Rig::new();
            let (group, home) = remote_group("#");
            let conns: Vec<usize> = (0..3).map(|i| rig.connect(&format!("m{i}"), true)).collect();
            for &c in &conns {
                rig.subscribe(c, &group, QoS::AtLeastOnce);
            }
            // A plain subscription to the same filter counts for this worker only.
            rig.subscribe(conns[0], "#", QoS::AtLeastOnce);
            assert!(rig.reaches(0, "any/topic"));
            assert!(!rig.reaches(0, "$SYS/x"), "leading wildcards skip $ topics");
            for &c in &conns {
                assert!(rig.reaches(home, "any/topic"));
                rig.unsubscribe(c, &group);
            }
            assert!(!rig.reaches(home, "any/topic"), "three joins, three leaves");
            assert!(rig.reaches(0, "any/topic"), "the plain subscription kept its count");
        }
    }
}
