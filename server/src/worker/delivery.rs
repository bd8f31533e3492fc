//! Feeding sessions and acting on what they ask: routing publishes (locally through
//! this worker's trie, and in batches to the other workers), subscriptions, retained
//! messages, wills and the end of a connection.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Instant;

use shoal_core::codec::{LastWill, Packet, RetainHandling};
use shoal_core::session::{Delivery, Event, LinkLoss, Message, SubscriptionEntry};
use shoal_core::topic::MergeSubscription;
use shoal_core::{QoS, ReasonCode};

use super::authz::is_sys_topic;
use super::conn::Pressure;
use super::interest::TopicProbe;
use super::Worker;
use crate::metrics::{ClientEvent, DropCause};
use crate::route::OUTBOX_BATCH_MESSAGES;
use crate::store::{SessionKey, SessionStore};

/// The fewest entries of [`Detached::kept`] worth a pruning pass.
const KEPT_PRUNE_MIN: usize = 1024;

/// What the trie stores per (filter, session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubValue {
    qos: QoS,
    pub(super) no_local: bool,
    retain_as_published: bool,
    /// Subscription identifiers (v5); empty (no allocation) when unused.
    ids: Vec<u32>,
}

impl SubValue {
    /// A subscription at `qos` with no options and no identifier.
    #[cfg(test)]
    pub(crate) fn plain(qos: QoS) -> Self {
        Self { qos, no_local: false, retain_as_published: false, ids: Vec::new() }
    }

    /// Granted QoS.
    pub(crate) fn qos(&self) -> QoS {
        self.qos
    }

    /// Retain As Published (v5).
    pub(crate) fn retain_as_published(&self) -> bool {
        self.retain_as_published
    }

    /// Subscription identifiers (v5).
    pub(crate) fn ids(&self) -> &[u32] {
        &self.ids
    }
}

impl From<SubscriptionEntry> for SubValue {
    fn from(e: SubscriptionEntry) -> Self {
        Self {
            qos: e.options.qos,
            no_local: e.options.no_local,
            retain_as_published: e.options.retain_as_published,
            ids: e.identifier.into_iter().collect(),
        }
    }
}

/// Overlapping subscriptions of one session: one copy at the highest QoS, every
/// subscription identifier [MQTT-3.3.4-2, -3].
impl MergeSubscription for SubValue {
    fn merge(&mut self, other: &Self) {
        self.qos = self.qos.max(other.qos);
        self.retain_as_published |= other.retain_as_published;
        for id in &other.ids {
            if !self.ids.contains(id) {
                self.ids.push(*id);
            }
        }
    }
}

/// The detached copy ([`Message::detached`]) of the last message that a session on this
/// worker queued, so that every session queueing one publish shares one copy and the
/// publisher's read chunk is not kept alive by any of them. Deliveries that are sent
/// at once (online fan-out) keep sharing the decoder's view: no copy on that path.
///
/// When a persistent session's connection ends, the messages of its in-flight window
/// (sent at once, so still views into read chunks) are copied too ([`Self::kept`]);
/// sessions that go offline at different moments hold the same messages, so those
/// copies are found by the routed message's address.
#[derive(Debug, Default)]
pub(crate) struct Detached {
    /// The message as routed (weak: the cache must not pin its read chunk; holding
    /// the allocation keeps its address from being reused) and its copy.
    last: Option<(Weak<Message>, Arc<Message>)>,
    /// In-flight copies by the address of the message they were made from, and each
    /// copy by its own address (so that it is not copied again). Both weak: an entry
    /// keeps neither a read chunk nor a copy alive, and its weak reference to the
    /// original keeps that address from being reused while the entry exists.
    kept: HashMap<usize, (Weak<Message>, Weak<Message>)>,
    /// `kept`'s size at which entries whose messages are gone are dropped.
    prune_at: usize,
}

impl Detached {
    /// The copy of `msg` to queue, made on the first call for it.
    pub(crate) fn of(&mut self, msg: &Arc<Message>) -> Arc<Message> {
        if let Some((routed, copy)) = &self.last {
            if std::ptr::eq(routed.as_ptr(), Arc::as_ptr(msg)) || Arc::ptr_eq(copy, msg) {
                return copy.clone();
            }
        }
        let copy = Arc::new(msg.detached());
        self.last = Some((Arc::downgrade(msg), copy.clone()));
        copy
    }

    /// The copy of `msg` for an offline session's in-flight window: the one already
    /// made for it (for another session's window or queue), or a new one; `msg`
    /// itself when it is such a copy.
    pub(crate) fn kept(&mut self, msg: &Arc<Message>) -> Arc<Message> {
        if let Some((routed, copy)) = &self.last {
            if std::ptr::eq(routed.as_ptr(), Arc::as_ptr(msg)) || Arc::ptr_eq(copy, msg) {
                return copy.clone();
            }
        }
        let addr = Arc::as_ptr(msg) as usize;
        if let Some(copy) = self.kept.get(&addr).and_then(|(_, copy)| copy.upgrade()) {
            return copy;
        }
        let copy = Arc::new(msg.detached());
        let weak = Arc::downgrade(&copy);
        self.kept.insert(addr, (Arc::downgrade(msg), weak.clone()));
        self.kept.insert(Arc::as_ptr(&copy) as usize, (weak.clone(), weak));
        if self.kept.len() >= self.prune_at {
            self.kept.retain(|_, (from, copy)| from.strong_count() > 0 && copy.strong_count() > 0);
            self.kept.shrink_to_fit();
            self.prune_at = (self.kept.len() * 2).max(KEPT_PRUNE_MIN);
        }
        copy
    }

    /// `msg` is already detached: queue it as it is.
    fn note(&mut self, msg: &Arc<Message>) {
        self.last = Some((Arc::downgrade(msg), msg.clone()));
    }
}

impl Worker {
    /// A packet from an attached connection.
    pub(super) fn handle_packet(&mut self, idx: usize, packet: Packet, now: Instant) {
        let Some(conn) = self.conns.get(idx) else { return };
        let Some(key) = conn.session() else { return };
        // Receive Maximum [MQTT-3.3.4-9]: the session counts QoS 2 exchanges and
        // answers QoS 1 at once; only a PUBACK held for the durable store keeps a QoS 1
        // PUBLISH unacknowledged, so with no output held there is nothing to add here.
        if let (Packet::Publish(p), true) = (&packet, conn.is_holding()) {
            if self.receive_maximum_exceeded(idx, key, p, now) {
                return;
            }
        }
        let mark = self.hold_mark(idx);
        let puback =
            mark.is_some() && matches!(&packet, Packet::Publish(p) if p.qos == QoS::AtLeastOnce);
        let packet = match packet {
            // `$SYS` is the broker's own: a client may not publish there (as in
            // Mosquitto), whatever the ACL says, so nobody can fake broker statistics.
            Packet::Publish(p) if is_sys_topic(&p.topic) => {
                self.refuse_sys_publish(key, p, now);
                self.hold_apply(idx, mark, true);
                self.note_held_puback(idx, puback);
                return;
            }
            Packet::Publish(p) if !self.clients.is_empty() => {
                match self.check_publish(idx, key, p, now) {
                    Some(p) => Packet::Publish(p),
                    None => {
                        self.hold_apply(idx, mark, true);
                        self.note_held_puback(idx, puback);
                        return;
                    }
                }
            }
            Packet::Subscribe(s) if !self.clients.is_empty() => {
                self.check_subscribe(key, s, now);
                self.hold_apply(idx, mark, true);
                return;
            }
            Packet::Subscribe(s) => {
                self.log_subscription_quota(key, &s, &[]);
                Packet::Subscribe(s)
            }
            // Re-authentication, for connections that authenticated with a method; the
            // session refuses AUTH from the others [MQTT-4.12.0-7].
            Packet::Auth(a) if self.auth.contains_key(&idx) => {
                self.handle_reauth(idx, key, a, now);
                self.hold_apply(idx, mark, true);
                return;
            }
            other => other,
        };
        let packet = match packet {
            Packet::Publish(p)
                if p.qos != QoS::AtMostOnce
                    && self.durable.as_ref().is_some_and(|d| d.is_degraded()) =>
            {
                match self.check_storable(key, p, now) {
                    Some(p) => Packet::Publish(p),
                    None => {
                        // 3.x got no PUBACK at all.
                        let acked = self.sessions.get(key).and_then(|s| s.session.version());
                        self.hold_apply(idx, mark, true);
                        self.note_held_puback(idx, puback && acked.is_some_and(|v| v.is_v5()));
                        return;
                    }
                }
            }
            other => other,
        };
        let Some(slot) = self.sessions.get_mut(key) else { return };
        slot.session.handle_packet(now, packet);
        self.service_session(key, now);
        self.hold_apply(idx, mark, true);
        self.note_held_puback(idx, puback);
    }

    /// Closes the connection with DISCONNECT 0x93 if `p` takes the client over our
    /// Receive Maximum, counting the PUBACKs held for the durable store. Returns whether
    /// it did.
    fn receive_maximum_exceeded(
        &mut self,
        idx: usize,
        key: SessionKey,
        p: &shoal_core::codec::Publish,
        now: Instant,
    ) -> bool {
        let held = self.conns.get(idx).map_or(0, |c| c.held_pubacks());
        let over =
            self.sessions.get(key).is_some_and(|s| s.session.exceeds_receive_maximum(p, held));
        if over {
            if let Some(c) = self.conns.get(idx) {
                log::info!(
                    "client at {} disconnected: over our Receive Maximum ({held} PUBACKs held)",
                    c.addr
                );
            }
            self.link_lost(idx, LinkLoss::Limit(ReasonCode::ReceiveMaximumExceeded), now);
        }
        over
    }

    /// After a QoS 1 PUBLISH (`puback`) was handled: if its PUBACK is held, count it.
    fn note_held_puback(&mut self, idx: usize, puback: bool) {
        if puback {
            if let Some(c) = self.conns.get_mut(idx) {
                c.count_held_puback();
            }
        }
    }

    /// The connection failed or must go for a reason outside the packets.
    pub(super) fn link_lost(&mut self, idx: usize, loss: LinkLoss, now: Instant) {
        if let Some(c) = self.conns.get_mut(idx) {
            c.drop_all_held();
        }
        match self.conns.get(idx).map(|c| c.session()) {
            Some(Some(key)) => {
                if let Some(slot) = self.sessions.get_mut(key) {
                    slot.session.handle_link_lost(now, loss);
                }
                self.service_session(key, now);
            }
            Some(None) => self.close_later(idx),
            None => {}
        }
    }

    /// Drains a session's output: packets to its connection, then its events.
    pub(super) fn service_session(&mut self, key: SessionKey, now: Instant) {
        self.pump_transmit(key, now);
        while let Some(ev) = self.sessions.get_mut(key).and_then(|s| s.session.poll_event()) {
            match ev {
                Event::Close { reason, will } => {
                    let persistent =
                        self.sessions.get(key).is_some_and(|s| s.session.is_persistent());
                    self.finish_link(key, reason, will, !persistent, now);
                }
                other => self.handle_event(key, other, now),
            }
            self.pump_transmit(key, now);
        }
    }

    /// Encodes the session's pending packets into its connection's write buffer and
    /// tells the session whether that buffer is now full.
    pub(super) fn pump_transmit(&mut self, key: SessionKey, now: Instant) {
        let max_out = self.shared.broker_limits.max_outgoing_bytes;
        if self.durable.is_none() {
            // Nothing to journal and nothing held: the fan-out hot path.
            self.encode_session(key, now, max_out);
            return;
        }
        let mark = self.sessions.get(key).and_then(|s| s.conn).and_then(|ci| self.hold_mark(ci));
        self.encode_session(key, now, max_out);
        self.durable_journal(key);
        if let Some(ci) = self.sessions.get(key).and_then(|s| s.conn) {
            self.hold_apply(ci, mark, false);
        }
    }

    fn encode_session(&mut self, key: SessionKey, now: Instant, max_out: usize) {
        let Some(slot) = self.sessions.get_mut(key) else { return };
        let conn = slot.conn.and_then(|ci| self.conns.get_mut(ci).map(|c| (ci, c)));
        let Some((ci, conn)) = conn else {
            while slot.session.poll_transmit().is_some() {}
            return;
        };
        let Some(version) = slot.session.version().or(match conn.state {
            super::conn::ConnState::Active { version, .. } => Some(version),
            _ => None,
        }) else {
            return;
        };
        let before = conn.wbuf.len();
        let max_queued = self.shared.limits.max_queued_messages;
        for _ in 0..2 {
            let failed = slot.session.encode_transmit(
                version,
                &mut conn.wbuf,
                &mut self.publish_cache,
                &mut self.sent,
            );
            if failed > 0 {
                log::debug!(
                    "{failed} packets for {} could not be encoded",
                    slot.session.client_id()
                );
            }
            // Unblocking may move queued messages into the window: drain once more.
            slot.session.set_write_blocked(now, conn.wbuf.len() >= max_out);
            if !slot.session.has_transmit() {
                break;
            }
        }
        if conn.wbuf.len() != before && !conn.dirty {
            conn.dirty = true;
            self.dirty.push(ci);
        }
        // Watermarks: congested at half of any bound, calm again at a quarter of each
        // (a byte bound of 0 is none). An empty queue weighs nothing: the usual case
        // (nothing queued) does not look at the bytes.
        let (wlen, queued) = (conn.wbuf.len(), slot.session.queued());
        let max_qbytes = self.shared.limits.max_queued_bytes;
        let qbytes =
            || if queued == 0 || max_qbytes == 0 { 0 } else { slot.session.queued_bytes() };
        match conn.pressure {
            Pressure::Calm
                if wlen >= max_out / 2
                    || queued >= (max_queued / 2).max(1)
                    || (max_qbytes > 0 && qbytes() >= (max_qbytes / 2).max(1)) =>
            {
                conn.pressure = Pressure::Congested;
                self.congested.push((ci, now));
            }
            Pressure::Congested | Pressure::Slow
                if wlen <= max_out / 4
                    && queued <= max_queued / 4
                    && (max_qbytes == 0 || qbytes() <= max_qbytes / 4) =>
            {
                if conn.pressure == Pressure::Congested {
                    self.congested.retain(|&(i, _)| i != ci);
                }
                conn.pressure = Pressure::Calm;
            }
            _ => {}
        }
    }

    /// Acts on one session event other than `Close`.
    pub(super) fn handle_event(&mut self, key: SessionKey, ev: Event, now: Instant) {
        match ev {
            Event::Publish(msg) => self.route(msg, now),
            Event::Subscribe { filter, entry, existed } => {
                if let Some(shared) = super::shared::as_shared(&filter) {
                    // [MQTT-4.8.2] no retained messages on a shared subscribe.
                    self.share_join(key, &filter, shared, SubValue::from(entry), !existed, now);
                    self.durable_put_session(key, false);
                    return;
                }
                if self.trie.insert(&filter, key, SubValue::from(entry)).is_none() {
                    self.shared.interest.added(self.id, &filter);
                }
                self.match_cache.clear();
                if self.shared.ops.client_events {
                    if let Some(id) = self.sessions.get(key).map(|s| s.session.client_id().clone())
                    {
                        let ev = ClientEvent::Subscribed {
                            filter: filter.as_str(),
                            qos: entry.options.qos,
                        };
                        self.client_event(&id, &ev, now);
                    }
                }
                self.durable_put_session(key, false);
                let send_retained = match entry.options.retain_handling {
                    RetainHandling::OnSubscribe => true,
                    RetainHandling::OnNewSubscription => !existed,
                    RetainHandling::Never => false,
                };
                if send_retained {
                    let mut found = Vec::new();
                    self.shared.retained.for_each_matching(&filter, &mut |m| found.push(m.clone()));
                    for message in found {
                        // A subscription may overlap a topic the client may not read.
                        if !self.may_deliver(key, &message.topic) {
                            continue;
                        }
                        let qos = message.qos.min(entry.options.qos);
                        let subscription_ids = entry.identifier.into_iter().collect();
                        // [MQTT-3.3.1-8] retained on subscribe: RETAIN set.
                        let d =
                            Delivery { message, qos, retain: true, subscription_ids, share: None };
                        self.deliver(key, d, now);
                    }
                }
            }
            Event::Unsubscribe(filter) => {
                if super::shared::as_shared(&filter).is_some() {
                    // [MQTT-3.10.4-3] what was already sent for the group is still
                    // completed by this session; the group just stops choosing it.
                    self.share_leave(key, &filter, now);
                    self.durable_put_session(key, false);
                    return;
                }
                if self.trie.remove(&filter, &key).is_some() {
                    self.shared.interest.removed(self.id, &filter);
                }
                self.match_cache.clear();
                if self.shared.ops.client_events {
                    if let Some(id) = self.sessions.get(key).map(|s| s.session.client_id().clone())
                    {
                        self.client_event(
                            &id,
                            &ClientEvent::Unsubscribed { filter: filter.as_str() },
                            now,
                        );
                    }
                }
                self.durable_put_session(key, false);
            }
            Event::Orphaned(orphans) => self.share_orphans(key, orphans, now),
            Event::Close { reason, will } => self.finish_link(key, reason, will, false, now),
        }
    }

    /// Routes a publish: retained store, this worker's subscribers, the other workers.
    pub(super) fn route(&mut self, msg: Arc<Message>, now: Instant) {
        // A retained message is kept for long: detach it from the read chunk once,
        // and route the copy so queues share it too.
        let msg = if msg.retain && !msg.payload.is_empty() {
            let copy = Arc::new(msg.detached());
            self.detached.note(&copy);
            copy
        } else {
            msg
        };
        // The topic's prefix hashes, to ask other workers' `Interest`; with one worker
        // there is nobody to ask.
        let probe = (self.shared.workers > 1).then(|| TopicProbe::new(msg.topic.as_str()));
        if let Some(d) = self.durable.as_mut() {
            if msg.retain {
                d.retained(&msg);
            }
            if let Some(probe) = probe.as_ref() {
                if msg.qos != QoS::AtMostOnce && msg.publisher.is_some() {
                    d.routed_qos12(&self.shared.interest, probe);
                }
            }
        }
        if msg.retain {
            // [MQTT-3.3.1-6, -7] an empty retained payload deletes; otherwise replace.
            if msg.payload.is_empty() {
                self.shared.retained.remove(&msg.topic);
            } else {
                self.shared.retained.set(msg.clone());
            }
        }
        self.deliver_local(&msg, now);
        let Some(probe) = probe else { return };
        let interest = &self.shared.interest;
        for (i, out) in self.outbox.iter_mut().enumerate() {
            if i != self.id && interest.may_match(i, &probe) {
                out.push(msg.clone());
                if out.len() >= OUTBOX_BATCH_MESSAGES {
                    self.outbox_full = true;
                }
            }
        }
    }

    /// Delivers a message to this worker's matching sessions: the cached matches of
    /// its topic when there are (the usual case), else one trie walk.
    pub(super) fn deliver_local(&mut self, msg: &Arc<Message>, now: Instant) {
        if !self.share.is_empty() {
            self.deliver_shared(msg, now);
        }
        let cached = match self.match_cache.get(&msg.topic) {
            Some(c) => c,
            None => {
                self.walk_trie(msg, false);
                self.match_cache.insert(&msg.topic, self.matches.as_slice())
            }
        };
        if cached.any_no_local && msg.publisher.is_some() {
            self.walk_trie(msg, true);
            let matches = std::mem::take(&mut self.matches);
            self.deliver_matches(msg, matches.as_slice(), now);
            self.matches = matches;
        } else {
            self.deliver_matches(msg, &cached.subscribers, now);
        }
    }

    /// Collects the merged matches of `msg`'s topic into `self.matches`, leaving out
    /// the publisher's own No Local subscriptions when `no_local` is set.
    fn walk_trie(&mut self, msg: &Arc<Message>, no_local: bool) {
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        let sessions = &self.sessions;
        self.trie.for_each_match(&msg.topic, |k, v| {
            // [MQTT-3.8.3-3] No Local: not back to the publisher's own client id.
            if no_local && v.no_local {
                let own = msg.publisher.as_deref().is_some_and(|p| {
                    sessions.get(*k).is_some_and(|s| s.session.client_id().as_ref() == p)
                });
                if own {
                    return;
                }
            }
            matches.add(k, v);
        });
        self.matches = matches;
    }

    fn deliver_matches(
        &mut self,
        msg: &Arc<Message>,
        matches: &[(SessionKey, SubValue)],
        now: Instant,
    ) {
        for (k, v) in matches {
            if self.shared.hooks.is_some() && !self.may_deliver(*k, &msg.topic) {
                self.counters.on_dropped(DropCause::Acl);
                continue;
            }
            let d = Delivery {
                message: msg.clone(),
                qos: msg.qos.min(v.qos),
                // [MQTT-3.3.1-9] RETAIN is cleared on ordinary delivery unless v5
                // Retain As Published asks to keep it.
                retain: v.retain_as_published && msg.retain,
                subscription_ids: v.ids.clone(),
                share: None,
            };
            self.deliver(*k, d, now);
        }
    }

    pub(super) fn deliver(&mut self, key: SessionKey, mut d: Delivery, now: Instant) {
        let Some(slot) = self.sessions.get_mut(key) else { return };
        // The session would drop an expired message too; here it is not detached first.
        if d.message.is_expired(now) {
            self.counters.on_dropped(DropCause::Expired);
            return;
        }
        if d.qos != QoS::AtMostOnce && slot.session.is_queueing() {
            d.message = self.detached.of(&d.message);
        }
        if let Err(reason) = slot.session.handle_delivery(now, d) {
            self.counters.on_dropped(DropCause::from(reason));
        }
        if slot.conn.is_some() {
            self.pump_transmit(key, now);
        } else {
            self.durable_journal(key);
        }
    }

    /// The session's connection ended: detach and close it, drop the session unless it
    /// persists (`discard`), publish the will.
    pub(super) fn finish_link(
        &mut self,
        key: SessionKey,
        reason: ReasonCode,
        will: Option<Box<LastWill>>,
        discard: bool,
        now: Instant,
    ) {
        let Some(slot) = self.sessions.get_mut(key) else { return };
        let client_id = slot.session.client_id().clone();
        if let Some(ci) = slot.conn.take() {
            if let Some(c) = self.conns.get(ci) {
                if reason == ReasonCode::Success {
                    log::info!("client {client_id} disconnected from {}", c.addr);
                } else if reason == ReasonCode::UnspecifiedError {
                    log::info!(
                        "client {client_id} connection from {} lost (closed without DISCONNECT)",
                        c.addr
                    );
                } else {
                    log::info!("client {client_id} connection from {} closed: {reason}", c.addr);
                }
            }
            self.close_later(ci);
            self.counters.disconnects = self.counters.disconnects.wrapping_add(1);
            if self.shared.ops.client_events {
                let words = disconnect_words(reason);
                self.client_event(&client_id, &ClientEvent::Disconnected { reason: &words }, now);
            }
            self.client_disconnected(key, reason);
        }
        if discard {
            self.discard_session(key, now);
        } else {
            // The window waits for a reconnect now: its messages stop pinning read chunks.
            if let Some(slot) = self.sessions.get_mut(key) {
                let detached = &mut self.detached;
                slot.session.replace_inflight_messages(|m| detached.kept(m));
            }
            self.share_presence(key, false, now);
            // The store keeps the will only while it waits for its delay (published at
            // the next start if the broker stops first).
            let delayed =
                will.as_ref().is_some_and(|w| w.properties.will_delay_interval.unwrap_or(0) > 0);
            if !delayed {
                if let Some(d) = self.durable.as_mut() {
                    d.drop_will(key);
                }
            }
            self.durable_put_session(key, true);
        }
        if let Some(will) = will {
            self.will_or_delay(key, client_id, will, discard, now);
        }
    }

    /// Removes a session and its subscriptions; its shared groups lose the member and
    /// get back the messages it still held for them.
    pub(super) fn discard_session(&mut self, key: SessionKey, now: Instant) {
        self.client_discarded(key);
        let Some(slot) = self.sessions.get_mut(key) else { return };
        let client_id = slot.session.client_id().clone();
        if !self.pending_wills.is_empty() {
            self.session_ended_will(key, &client_id, now);
        }
        let Some(slot) = self.sessions.get_mut(key) else { return };
        slot.session.take_shared();
        let mut orphans = Vec::new();
        while let Some(ev) = slot.session.poll_event() {
            if let Event::Orphaned(mut o) = ev {
                orphans.append(&mut o);
            }
        }
        let shared: Vec<_> = slot
            .session
            .subscriptions()
            .filter(|(f, _)| super::shared::as_shared(f).is_some())
            .map(|(f, _)| f.clone())
            .collect();
        if !orphans.is_empty() {
            self.share_orphans(key, orphans, now);
        }
        for filter in &shared {
            self.share_leave(key, filter, now);
        }
        if let Some(mut slot) = self.sessions.remove(key) {
            self.counters.on_queue_drops(slot.session.take_queue_drops());
            if let Some(d) = self.durable.as_mut() {
                d.forget(key, slot.session.client_id());
            }
            for (filter, _) in slot.session.subscriptions() {
                if self.trie.remove(filter, &key).is_some() {
                    self.shared.interest.removed(self.id, filter);
                }
                self.match_cache.clear();
            }
        }
    }
}

/// The `reason` of a `disconnected` event.
fn disconnect_words(reason: ReasonCode) -> String {
    match reason {
        ReasonCode::Success => "client disconnected".to_owned(),
        ReasonCode::UnspecifiedError => "connection lost".to_owned(),
        other => other.to_string(),
    }
}

impl Worker {
    /// Writes a persistent session's record (`disconnected`: its connection just ended).
    pub(super) fn durable_put_session(&mut self, key: SessionKey, disconnected: bool) {
        let Some(d) = self.durable.as_mut() else { return };
        let Some(slot) = self.sessions.get(key) else { return };
        if slot.session.is_journaling() && slot.session.is_persistent() {
            d.put_session(key, &slot.session, disconnected);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use shoal_core::codec::Publish;
    use shoal_core::{PacketId, TopicName};

    /// Whether `b` lies inside `chunk`'s memory.
    fn inside(b: &[u8], chunk: &[u8]) -> bool {
        let r = chunk.as_ptr_range();
        r.contains(&b.as_ptr())
    }

    /// A QoS 1 message as the decoder makes one: topic and payload are views into the
    /// read chunk.
    fn from_chunk(chunk: &Bytes, i: usize, now: Instant) -> Arc<Message> {
        let topic = TopicName::parse(chunk.slice(0..3)).unwrap();
        let payload = chunk.slice(8 + i * 64..8 + (i + 1) * 64);
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic,
            packet_id: PacketId::new(1),
            properties: Default::default(),
            payload,
        };
        Arc::new(Message::from_publish(publish, None, now))
    }

    #[test]
    fn queued_messages_do_not_hold_the_read_chunk_and_sent_ones_are_not_copied() {
        let now = Instant::now();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let shared = crate::bench_support::shared(1);
        let window = usize::from(shared.limits.max_inflight);
        let mut worker = Worker::new(0, &[], shared).unwrap();
        worker.bench_add_subscribers(&listener, 2, "a/b", QoS::AtLeastOnce, now).unwrap();
        let mut chunk = b"a/b".to_vec();
        chunk.resize(64 * 1024, 0x5a);
        let chunk = Bytes::from(chunk);
        // The window fills first (sent at once); the three after it wait in the queue.
        for i in 0..window + 3 {
            let msg = from_chunk(&chunk, i, now);
            worker.bench_deliver(&msg, now);
            if i == 0 {
                // An online delivery shares the routed message: nothing was copied.
                let key = worker.sessions.keys()[0];
                let sent = worker.sessions.get(key).unwrap().session.queued();
                assert_eq!(sent, 0);
                assert_eq!(Arc::strong_count(&msg), 1 + 2, "each in-flight entry shares it");
            }
        }
        let keys = worker.sessions.keys();
        assert_eq!(keys.len(), 2);
        let queues: Vec<Vec<Arc<Message>>> = keys
            .iter()
            .map(|k| {
                let s = &worker.sessions.get(*k).unwrap().session;
                s.queued_deliveries().map(|d| d.message.clone()).collect()
            })
            .collect();
        for q in &queues {
            assert_eq!(q.len(), 3);
            for m in q {
                assert!(!inside(&m.payload, &chunk), "a queued payload pins the read chunk");
                assert!(!inside(m.topic.as_bytes(), &chunk), "a queued topic pins the read chunk");
                assert_eq!(m.topic.as_str(), "a/b");
                assert_eq!(m.payload.len(), 64);
            }
        }
        // One copy per publish, shared by both sessions' queues.
        for (a, b) in queues[0].iter().zip(&queues[1]) {
            assert!(Arc::ptr_eq(a, b));
        }
    }

    /// Attaches `count` persistent (3.1.1, clean session 0) subscribers of `a/b` at
    /// QoS 1, each on its own accepted loopback socket; returns their connections.
    fn persistent_subscribers(
        worker: &mut Worker,
        listener: &std::net::TcpListener,
        count: usize,
        now: Instant,
    ) -> Vec<usize> {
        use shoal_core::codec::{Connect, Subscribe, SubscribeFilter, SubscriptionOptions};
        let mut idxs = Vec::new();
        for i in 0..count {
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (server, peer) = listener.accept().unwrap();
            drop(client);
            server.set_nonblocking(true).unwrap();
            let stream = mio::net::TcpStream::from_std(server);
            let idx = worker.register(super::super::conn::Conn::new(stream, peer, None, 0, now));
            let idx = idx.unwrap();
            let connect = Connect {
                protocol: shoal_core::ProtocolVersion::V3_1_1,
                clean_start: false,
                keep_alive: 0,
                client_id: format!("kept-{i}"),
                will: None,
                username: None,
                password: None,
                properties: Default::default(),
            };
            worker.accept_connect(idx, Box::new(connect), now);
            let subscribe = Subscribe {
                packet_id: PacketId::new(1).unwrap(),
                filters: vec![SubscribeFilter {
                    filter: "a/b".to_owned(),
                    options: SubscriptionOptions { qos: QoS::AtLeastOnce, ..Default::default() },
                }],
                properties: Default::default(),
            };
            worker.handle_packet(idx, Packet::Subscribe(subscribe), now);
            idxs.push(idx);
        }
        worker.bench_take_output();
        idxs
    }

    /// The messages of a session's in-flight window.
    fn window(worker: &Worker, key: SessionKey) -> Vec<Arc<Message>> {
        let s = &worker.sessions.get(key).unwrap().session;
        s.inflight_deliveries().map(|d| d.message.clone()).collect()
    }

    #[test]
    fn an_offline_sessions_window_stops_pinning_the_read_chunk_one_copy_per_message() {
        let now = Instant::now();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let shared = crate::bench_support::shared(1);
        let size = usize::from(shared.limits.max_inflight);
        let mut worker = Worker::new(0, &[], shared).unwrap();
        let conns = persistent_subscribers(&mut worker, &listener, 2, now);
        let keys: Vec<SessionKey> =
            conns.iter().map(|&i| worker.conns.get(i).unwrap().session().unwrap()).collect();
        let mut chunk = b"a/b".to_vec();
        chunk.resize(64 * 1024, 0x5a);
        let chunk = Bytes::from(chunk);
        let routed: Vec<_> = (0..size).map(|i| from_chunk(&chunk, i, now)).collect();
        for msg in &routed {
            worker.bench_deliver(msg, now);
        }
        for &key in &keys {
            let online = window(&worker, key);
            assert_eq!(online.len(), size, "the window is full and nothing waits");
            assert!(online.iter().zip(&routed).all(|(a, b)| Arc::ptr_eq(a, b)), "sent uncopied");
        }

        worker.link_lost(conns[0], LinkLoss::SocketClosed, now);
        let first = window(&worker, keys[0]);
        assert_eq!(first.len(), size, "a persistent session keeps its window offline");
        for (m, r) in first.iter().zip(&routed) {
            assert!(!inside(&m.payload, &chunk), "an offline window's payload pins the chunk");
            assert!(!inside(m.topic.as_bytes(), &chunk), "an offline window's topic pins it");
            assert_eq!(**m, **r);
        }
        // The session still online keeps the routed messages: no copy for it.
        assert!(window(&worker, keys[1]).iter().zip(&routed).all(|(a, b)| Arc::ptr_eq(a, b)));

        // The second session goes offline later and shares the first one's copies.
        worker.link_lost(conns[1], LinkLoss::SocketClosed, now);
        let second = window(&worker, keys[1]);
        assert!(second.iter().zip(&first).all(|(a, b)| Arc::ptr_eq(a, b)), "one copy each");
        drop(second);
        // Nothing but the test holds the routed messages (and so the chunk) any more.
        assert!(routed.iter().all(|m| Arc::strong_count(m) == 1));
    }

    #[test]
    fn copies_for_offline_windows_are_forgotten_once_their_messages_are_gone() {
        let now = Instant::now();
        let chunk = Bytes::from(vec![b'a'; 8 + 64 * 4]);
        let mut detached = Detached::default();
        let held = from_chunk(&chunk, 0, now);
        let held_copy = detached.kept(&held);
        for i in 0..10 * KEPT_PRUNE_MIN {
            let msg = from_chunk(&chunk, i % 4, now);
            let copy = detached.kept(&msg);
            assert!(Arc::ptr_eq(&detached.kept(&copy), &copy), "a copy is not copied again");
        }
        assert!(detached.kept.len() <= 2 * KEPT_PRUNE_MIN, "{} entries", detached.kept.len());
        // What is still held is still found.
        assert!(Arc::ptr_eq(&detached.kept(&held), &held_copy));
    }

    #[test]
    fn a_retained_message_is_kept_apart_from_the_read_chunk() {
        let now = Instant::now();
        let mut worker = Worker::new(0, &[], crate::bench_support::shared(1)).unwrap();
        let mut chunk = b"a/b".to_vec();
        chunk.resize(4096, 0x5a);
        let chunk = Bytes::from(chunk);
        let mut msg = (*from_chunk(&chunk, 0, now)).clone();
        msg.retain = true;
        worker.route(Arc::new(msg), now);
        let mut kept = Vec::new();
        let filter = shoal_core::TopicFilter::try_from("a/b").unwrap();
        worker.shared.retained.for_each_matching(&filter, &mut |m| kept.push(m.clone()));
        assert_eq!(kept.len(), 1);
        assert!(!inside(&kept[0].payload, &chunk));
        assert!(!inside(kept[0].topic.as_bytes(), &chunk));
    }

    #[test]
    fn overlapping_subscriptions_merge_to_highest_qos_and_all_ids() {
        let mut a = SubValue {
            qos: QoS::AtMostOnce,
            no_local: false,
            retain_as_published: false,
            ids: vec![1],
        };
        let b = SubValue {
            qos: QoS::ExactlyOnce,
            no_local: false,
            retain_as_published: true,
            ids: vec![2, 1],
        };
        a.merge(&b);
        assert_eq!(a.qos, QoS::ExactlyOnce);
        assert!(a.retain_as_published);
        assert_eq!(a.ids, vec![1, 2]);
    }
}
