//! The worker's side of the durable store: turning session changes into store intents,
//! one submission per loop iteration, and holding back the acknowledgements that
//! depend on them until the persister has committed them.
//!
//! # Holding acks
//! Every loop iteration has a ticket. Whatever a connection's input or a delivery to
//! it made this worker write (a queue entry, an in-flight record, a session record, a
//! retained message, a QoS 2 mark) is in that iteration's batch, and the bytes encoded
//! for the connection from that moment on are *held*: the connection's write buffer
//! gets a boundary (offset, ticket) and `Conn::flush` writes only up to the first
//! boundary. When the ticket is committed, its boundaries go and the rest is written;
//! when the commit fails the held bytes are dropped and the connection is closed (the
//! client resends what it was not acknowledged for). So PUBACK, PUBREC, PUBCOMP,
//! SUBACK, CONNACK, PUBREL and QoS 2 PUBLISHes to persistent sessions leave only once
//! what they promise is on disk, in their original order; nothing that needs no write
//! waits. QoS 1 PUBLISHes to persistent sessions do not wait (see [`Durable::journal`]):
//! their subscriber's PUBACK then often comes before the commit, and the persister
//! skips the writes it undoes (`persist/net.rs`).
//!
//! # Other workers' subscribers
//! A publish is matched by every worker, each for its own sessions, so a QoS 1/2
//! message that reaches a persistent session on worker B is written by B. The
//! publisher's worker A therefore also waits for B: after an iteration that routed
//! such a publish, A sends every worker that may write for it ([`Durable::needs_mark`])
//! a *publish mark* (`WorkerMsg::Mark`) behind its publish batches (same FIFO channel).
//! B answers a mark once everything it wrote for the batches before it is committed,
//! by storing the mark's number in [`DurableShared`] and waking A; A releases its
//! ticket when its own commit and every such answer are in. When no other worker has
//! a persistent session (and no shared subscription exists), no mark is sent and
//! nothing waits (clean sessions cost nothing).
//!
//! # Shared groups: share marks
//! A group's message is matched on the group home B, which hands it to the chosen
//! member's worker C in a `ShareMsg::Deliver`; C writes it when it handles that, which
//! may be after B answered A's mark (B itself wrote nothing). So a group home that
//! forwarded QoS 1/2 `Deliver`s in an iteration to a worker C with persistent sessions
//! puts a *share mark* (`ShareMsg::Mark`) behind them in the same share batch, and
//! what waits for that iteration's ticket waits for C's answer too: B's own
//! publisher's ack (the forward counts as owed), and B's answers to publish marks
//! handled in that iteration or later. With shared subscriptions about, A marks every
//! worker that may match the topic (its `Interest` counts the groups it is home to)
//! whether or not that worker has persistent sessions, as long as some worker has.
//! C == A works the same way: A answers B's share mark at A's commit.
//!
//! The two kinds have their own numbers and answers ([`MarkKind`]). Answers are
//! handed out when the tickets up to the one carrying the mark are *committed*, not
//! released (see [`Durable::poll`]); a publish mark's answer also waits for the share
//! marks sent up to that ticket to be answered, a share mark's answer waits for
//! nothing but commits. So every wait ends in commits and none can go round in a
//! circle; with one number space, `fetch_max` would make a later share-mark answer
//! wait behind an earlier publish-mark answer, and two group homes forwarding to each
//! other could wait for each other for ever.
//!
//! Gap: a member's worker that cannot take a message (its session ended or went
//! offline since the group home chose it, or `on_deliver` refused it) hands it back
//! to the group home (`Reassign`), which forwards it to another member, with a share
//! mark of its own, possibly after it answered the publisher's mark. An ack can
//! then leave before the second member's write is committed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::TrySendError;
use shoal_core::codec::{LastWill, Packet, Publish, PublishProperties, WillProperties};
use shoal_core::session::{
    Delivery, LinkLoss, Message, RestoredState, Session, StoreChange, SubscriptionEntry,
};
use shoal_core::{ProtocolVersion, QoS, ReasonCode, TopicFilter, TopicName};

use super::delivery::SubValue;
use super::interest::{Interest, TopicProbe};
use super::Worker;
use crate::persist::{
    Completion, InflightRecord, Intent, MessageId, PersistLink, RecoveredInflight,
    RecoveredSession, SessionRecord, StoredMessage, StoredSubscription, StoredWill, Ticket,
};
use crate::route::WorkerMsg;
use crate::store::{SessionKey, SessionSlot, SessionStore};

/// The two kinds of mark ([module docs](self)). Each has its own numbers and its own
/// confirmations: a publish mark's confirmation waits for share marks' ones, never the
/// other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MarkKind {
    /// Behind publish batches (`WorkerMsg::Mark`).
    Publish,
    /// Behind a share batch holding QoS 1/2 `Deliver`s (`ShareMsg::Mark`).
    Share,
}

/// What workers share about durability.
#[derive(Debug)]
pub(crate) struct DurableShared {
    workers: usize,
    /// Persistent sessions per worker: a worker with none needs no mark.
    persistent: Vec<AtomicUsize>,
    /// `[from * workers + to]`: the last publish mark of worker `from` that worker `to`
    /// has made durable everything before, including what the group deliveries it
    /// forwarded for them made other workers write.
    confirmed: Vec<AtomicU64>,
    /// `[from * workers + to]`: the last share mark of worker `from` that worker `to`
    /// has made durable everything before (its own writes only).
    share_confirmed: Vec<AtomicU64>,
}

impl DurableShared {
    pub(crate) fn new(workers: usize) -> Self {
        let matrix = || (0..workers * workers).map(|_| AtomicU64::new(0)).collect();
        Self {
            workers,
            persistent: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            confirmed: matrix(),
            share_confirmed: matrix(),
        }
    }

    fn matrix(&self, kind: MarkKind) -> &[AtomicU64] {
        match kind {
            MarkKind::Publish => &self.confirmed,
            MarkKind::Share => &self.share_confirmed,
        }
    }

    fn confirmed(&self, kind: MarkKind, from: usize, to: usize) -> u64 {
        let m = self.matrix(kind);
        m.get(from * self.workers + to).map_or(0, |c| c.load(Ordering::Acquire))
    }

    fn confirm(&self, kind: MarkKind, from: usize, to: usize, mark: u64) {
        if let Some(c) = self.matrix(kind).get(from * self.workers + to) {
            c.fetch_max(mark, Ordering::AcqRel);
        }
    }

    /// Whether every worker in `to` confirmed `mark` of worker `from`.
    fn all_confirmed(&self, kind: MarkKind, from: usize, (mark, to): &(u64, Vec<usize>)) -> bool {
        to.iter().all(|&w| self.confirmed(kind, from, w) >= *mark)
    }

    pub(super) fn has_persistent(&self, worker: usize) -> bool {
        self.persistent.get(worker).is_some_and(|n| n.load(Ordering::Acquire) > 0)
    }

    fn any_persistent(&self) -> bool {
        (0..self.workers).any(|w| self.has_persistent(w))
    }
}

/// What the store holds of one persistent session beyond the session itself.
#[derive(Debug, Default)]
pub(super) struct Mirror {
    /// Store positions of the session's queue entries, front first (the session's
    /// queue is FIFO, so the two stay aligned).
    queue: VecDeque<(u64, MessageId)>,
    next_seq: u64,
    /// Protocol version of the last connection.
    version: Option<ProtocolVersion>,
    /// The will still owed by the last connection, as stored: set at CONNECT, kept
    /// while it waits for its Will Delay, dropped once published or discarded (a
    /// stored will is published at the next start).
    will: Option<StoredWill>,
    /// When the last connection ended (Unix seconds); the session's expiry and a
    /// delayed will count from it, so rewriting the record must not move it.
    disconnected_at: Option<u64>,
}

/// Where a connection's output and the iteration's intents stood before an input
/// ([`Worker::hold_mark`]). Two counts, because what must wait differs: the packet's
/// own acknowledgement (PUBACK, PUBREC of a publish) waits for everything routing it
/// wrote, the body and every queue and in-flight entry, on any session; a delivery
/// waits only for what its own session wrote that the delivery promises (a QoS 2
/// in-flight record, a PUBREL's state, a session record).
#[derive(Debug, Clone, Copy)]
pub(super) struct HoldMark {
    offset: usize,
    strict: u64,
    owed: u64,
}

/// A ticket whose acks are not released yet.
#[derive(Debug)]
struct Pending {
    ticket: u64,
    /// Committed (or had nothing to write).
    done: bool,
    failed: bool,
    /// Publish mark sent with this ticket, and the workers that must confirm it.
    mark: Option<(u64, Vec<usize>)>,
    /// Share mark sent with this ticket, and the workers that must confirm it.
    share_mark: Option<(u64, Vec<usize>)>,
    /// Publish marks of other workers to confirm once this ticket and every one before
    /// it is committed and their share marks are confirmed.
    confirms: Vec<(usize, u64)>,
    /// Share marks of other workers to confirm once this ticket and every one before
    /// it is committed.
    share_confirms: Vec<(usize, u64)>,
}

/// The marks one iteration owes other workers ([`Durable::end_iteration`]).
#[derive(Debug, Default)]
pub(super) struct Marks {
    /// Publish mark and its workers: sent once their publish batches are out.
    pub(super) publish: Option<(u64, Vec<usize>)>,
    /// Share mark and its workers: appended to their share batches.
    pub(super) share: Option<(u64, Vec<usize>)>,
}

/// What the worker must do with connections after completions arrived.
#[derive(Debug, Default)]
pub(super) struct Released {
    /// Tickets up to this one are released (their boundaries go).
    pub(super) through: Option<u64>,
    /// These tickets failed: close the connections holding them.
    pub(super) failed: Vec<u64>,
    /// Confirmations handed to other workers: (worker, mark), of either kind; the
    /// worker is to be woken.
    pub(super) confirms: Vec<(usize, u64)>,
}

/// How often at most a worker logs publishes refused while the store cannot write.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Publishes refused while the store could not write, for the log.
#[derive(Debug, Default)]
struct Refusals {
    logged: Option<Instant>,
    count: u64,
}

/// One worker's durable-store state.
pub(super) struct Durable {
    me: usize,
    link: PersistLink,
    pub(super) shared: Arc<DurableShared>,
    /// This iteration's intents.
    batch: Vec<Intent>,
    /// Intents so far that the output encoded after them, for the connection whose
    /// input or delivery wrote them, must wait for (see [`HoldMark`]).
    strict: u64,
    /// Intents so far that an acknowledgement to a publisher routed in the same input
    /// must wait for: the body and the queue or in-flight entry of a QoS 1/2 message.
    owed: u64,
    /// This iteration's ticket.
    pub(super) ticket: u64,
    /// Batches a full channel handed back, oldest first.
    unsent: VecDeque<(Vec<Intent>, Ticket)>,
    pending: VecDeque<Pending>,
    /// This iteration routed a QoS 1/2 publish whose ack waits for other workers.
    mark_needed: bool,
    /// The workers that ack waits for ([`Durable::needs_mark`]). Indexed by worker.
    mark_to: Vec<bool>,
    /// A connection's ack waits for other workers (cleared by `take_remote_hold`).
    remote_hold: bool,
    marks_sent: u64,
    /// Publish marks from other workers to attach to this iteration's ticket.
    confirms: Vec<(usize, u64)>,
    /// This iteration forwarded a QoS 1/2 group message to another worker with
    /// persistent sessions; `share_mark_to` says which (indexed by worker).
    share_mark_needed: bool,
    share_mark_to: Vec<bool>,
    share_marks_sent: u64,
    /// Share marks from other workers to attach to this iteration's ticket.
    share_confirms: Vec<(usize, u64)>,
    pub(super) mirrors: HashMap<SessionKey, Mirror>,
    /// The last body stored in this batch, so a fan-out stores it once.
    last_body: Option<(Arc<Message>, MessageId)>,
    /// `Instant` ↔ Unix time, for message expiry on disk.
    epoch: (Instant, u64),
    /// Connections with held bytes.
    pub(super) held: Vec<usize>,
    /// A hold was placed this iteration.
    pub(super) holds_placed: bool,
    refusals: Refusals,
}

impl Durable {
    pub(super) fn new(me: usize, link: PersistLink, shared: Arc<DurableShared>) -> Self {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self {
            me,
            link,
            shared,
            batch: Vec::new(),
            strict: 0,
            owed: 0,
            ticket: 1,
            unsent: VecDeque::new(),
            pending: VecDeque::new(),
            mark_needed: false,
            mark_to: Vec::new(),
            remote_hold: false,
            marks_sent: 0,
            confirms: Vec::new(),
            share_mark_needed: false,
            share_mark_to: Vec::new(),
            share_marks_sent: 0,
            share_confirms: Vec::new(),
            mirrors: HashMap::new(),
            last_body: None,
            epoch: (Instant::now(), unix),
            held: Vec::new(),
            holds_placed: false,
            refusals: Refusals::default(),
        }
    }

    /// Where the intents stand now (to tell what an input wrote).
    fn hold_mark(&self) -> (u64, u64) {
        (self.strict, self.owed)
    }

    /// Queues an intent the emitting connection's later output must wait for.
    fn push_strict(&mut self, intent: Intent) {
        self.strict += 1;
        self.batch.push(intent);
    }

    /// Queues an intent a publisher's acknowledgement must wait for.
    fn push_owed(&mut self, intent: Intent) {
        self.owed += 1;
        self.batch.push(intent);
    }

    /// Counts persistent sessions for other workers' mark decisions.
    pub(super) fn publish_count(&self) {
        if let Some(n) = self.shared.persistent.get(self.me) {
            n.store(self.mirrors.len(), Ordering::Release);
        }
    }

    /// Whether routing a publish to `topic` may make another worker write to the
    /// store, or hand a group message back to be written here: a worker with
    /// persistent sessions may match the topic, or shared subscriptions exist and any
    /// worker has persistent sessions (a group's message reaches a member's worker
    /// through the group home, which no count of the member's worker names).
    pub(super) fn others_may_write(&self, interest: &Interest, topic: &TopicProbe) -> bool {
        (interest.any_shared() && self.shared.any_persistent())
            || (0..self.shared.workers).any(|w| {
                w != self.me && self.shared.has_persistent(w) && interest.may_match(w, topic)
            })
    }

    /// Whether a QoS 1/2 publish to `topic` routed here must mark worker `w` (not this
    /// one): `w` may match the topic (its `Interest` counts its own subscriptions and
    /// the groups it is home to) and either has persistent sessions itself or, with
    /// shared subscriptions about, may be a group home that forwards the message to a
    /// persistent member on any worker. A member's worker is not marked for being one:
    /// the group home's confirmation covers it (share marks).
    fn needs_mark(&self, w: usize, interest: &Interest, topic: &TopicProbe) -> bool {
        w != self.me
            && interest.may_match(w, topic)
            && (self.shared.has_persistent(w)
                || (interest.any_shared() && self.shared.any_persistent()))
    }

    /// True while the store cannot write (the last commit failed).
    pub(super) fn is_degraded(&self) -> bool {
        self.link.is_degraded()
    }

    /// Logs a publish refused because the store cannot write: the first one, then at
    /// most one line every [`REFUSAL_LOG_EVERY`] with the number refused since.
    pub(super) fn note_refusal(&mut self, now: Instant, client: &str, topic: &TopicName, v5: bool) {
        self.refusals.count += 1;
        if self
            .refusals
            .logged
            .is_some_and(|t| now.saturating_duration_since(t) < REFUSAL_LOG_EVERY)
        {
            return;
        }
        let how = if v5 { "answered 0x97 Quota exceeded" } else { "not acknowledged (MQTT 3.x)" };
        log::warn!(
            "worker {}: the durable store cannot write; QoS 1/2 publish by {client} to {} {how} \
             ({} refused since the last such line)",
            self.me,
            topic.as_str(),
            self.refusals.count
        );
        self.refusals = Refusals { logged: Some(now), count: 0 };
    }

    /// A QoS 1/2 publish from a client was routed: if another worker may write for
    /// it, or forward it to a member that writes ([`Durable::needs_mark`]), its ack
    /// must wait for that worker too.
    pub(super) fn routed_qos12(&mut self, interest: &Interest, topic: &TopicProbe) {
        for w in 0..self.shared.workers {
            if self.needs_mark(w, interest, topic) {
                if self.mark_to.len() <= w {
                    self.mark_to.resize(self.shared.workers, false);
                }
                if let Some(m) = self.mark_to.get_mut(w) {
                    *m = true;
                }
                self.mark_needed = true;
                self.remote_hold = true;
            }
        }
    }

    /// Whether the input just handled waits for other workers (and forgets it).
    pub(super) fn take_remote_hold(&mut self) -> bool {
        std::mem::take(&mut self.remote_hold)
    }

    /// Another worker's mark: everything it sent before it has been handled here.
    pub(super) fn on_mark(&mut self, kind: MarkKind, from: usize, mark: u64) {
        match kind {
            MarkKind::Publish => self.confirms.push((from, mark)),
            MarkKind::Share => self.share_confirms.push((from, mark)),
        }
    }

    /// This worker, as a group home, handed a QoS 1/2 message to a member on worker
    /// `to` (which has persistent sessions): this iteration sends `to` a share mark,
    /// and what waits for this ticket (an ack to the publisher, if the message was
    /// routed from a client's input here; other workers' publish marks) waits for its
    /// confirmation. Counted as owed, so the publisher's output is held.
    pub(super) fn forwarded_share(&mut self, to: usize) {
        if self.share_mark_to.len() <= to {
            self.share_mark_to.resize(self.shared.workers.max(to + 1), false);
        }
        if let Some(m) = self.share_mark_to.get_mut(to) {
            *m = true;
        }
        self.share_mark_needed = true;
        self.owed += 1;
    }

    /// Converts a session's journaled changes into intents.
    ///
    /// Which of them hold the session's own output back ([`HoldMark`]): what a QoS 2
    /// PUBLISH, a PUBREL, a PUBREC or a PUBCOMP promises must be on disk before it
    /// leaves (a QoS 2 message resent under a new packet id after a crash would be a
    /// duplicate). A QoS 1 PUBLISH is sent at once: if the broker crashes before its
    /// in-flight record is committed, the publisher was not acknowledged either and
    /// sends it again, and a duplicate is what QoS 1 allows. Removals (an acknowledged
    /// in-flight entry, a queue entry moved into the window) never hold anything.
    pub(super) fn journal(&mut self, key: SessionKey, client_id: &str, changes: Vec<StoreChange>) {
        for change in changes {
            match change {
                StoreChange::Queued(msg) => {
                    let id = self.body(&msg);
                    let Some(m) = self.mirrors.get_mut(&key) else { continue };
                    let seq = m.next_seq;
                    m.next_seq += 1;
                    m.queue.push_back((seq, id));
                    self.push_owed(Intent::Enqueue {
                        client_id: client_id.into(),
                        message: id,
                        seq,
                    });
                }
                StoreChange::Dequeued(sent) => {
                    let Some(m) = self.mirrors.get_mut(&key) else { continue };
                    let Some((seq, id)) = m.queue.pop_front() else { continue };
                    if let Some((packet_id, qos)) = sent {
                        let intent = Intent::PutInflight {
                            client_id: client_id.into(),
                            packet_id,
                            record: InflightRecord::Publish { message: id, qos },
                        };
                        // The body and its queue entry were made durable when queued.
                        self.push_delivery(intent, qos, false);
                    }
                    self.batch.push(Intent::Dequeue { client_id: client_id.into(), seq });
                }
                StoreChange::Withdrawn(index) => {
                    let Some(m) = self.mirrors.get_mut(&key) else { continue };
                    if let Some((seq, _)) = m.queue.remove(index) {
                        self.batch.push(Intent::Dequeue { client_id: client_id.into(), seq });
                    }
                }
                StoreChange::Sent { packet_id, message, qos } => {
                    let id = self.body(&message);
                    let intent = Intent::PutInflight {
                        client_id: client_id.into(),
                        packet_id,
                        record: InflightRecord::Publish { message: id, qos },
                    };
                    self.push_delivery(intent, qos, true);
                }
                StoreChange::Completed(packet_id) => self
                    .batch
                    .push(Intent::DeleteInflight { client_id: client_id.into(), packet_id }),
                StoreChange::Released(packet_id) => self.push_strict(Intent::PutInflight {
                    client_id: client_id.into(),
                    packet_id,
                    record: InflightRecord::Released,
                }),
                StoreChange::Qos2Received(packet_id) => {
                    self.push_strict(Intent::MarkQos2Received {
                        client_id: client_id.into(),
                        packet_id,
                    })
                }
                StoreChange::Qos2Released(packet_id) => {
                    self.push_strict(Intent::ClearQos2Received {
                        client_id: client_id.into(),
                        packet_id,
                    })
                }
            }
        }
    }

    /// Queues the in-flight record of a delivery: QoS 2 holds the subscriber's output,
    /// QoS 1 does not; `owed` when the publisher's ack waits for it (a routed message,
    /// not one leaving the queue).
    fn push_delivery(&mut self, intent: Intent, qos: QoS, owed: bool) {
        if qos == QoS::ExactlyOnce {
            self.strict += 1;
        }
        if owed {
            self.owed += 1;
        }
        self.batch.push(intent);
    }

    /// The id of `msg`'s body in this batch, storing it first if it is not there yet.
    pub(super) fn body(&mut self, msg: &Arc<Message>) -> MessageId {
        if let Some((m, id)) = &self.last_body {
            if Arc::ptr_eq(m, msg) {
                return *id;
            }
        }
        let id = self.link.next_message_id();
        let stored = self.stored_message(msg, id);
        self.push_owed(Intent::PutMessage(stored));
        self.last_body = Some((msg.clone(), id));
        id
    }

    fn unix_at(&self, t: Instant) -> u64 {
        let (base, unix) = self.epoch;
        match t.checked_duration_since(base) {
            Some(d) => unix.saturating_add(d.as_secs()),
            None => unix.saturating_sub(base.saturating_duration_since(t).as_secs()),
        }
    }

    fn stored_message(&self, msg: &Message, id: MessageId) -> StoredMessage {
        StoredMessage {
            id,
            topic: msg.topic.clone(),
            payload: msg.payload.clone(),
            qos: msg.qos,
            retain: msg.retain,
            properties: encode_properties(msg),
            expires_at: msg.expires_at.map(|t| self.unix_at(t)),
        }
    }

    /// A retained message was set or deleted. At QoS 0 nothing was promised, so the
    /// publisher's output does not wait for it (and a failed commit closes nobody).
    pub(super) fn retained(&mut self, msg: &Arc<Message>) {
        let counted = (self.strict, self.owed);
        if msg.payload.is_empty() {
            self.push_strict(Intent::DeleteRetained { topic: msg.topic.clone() });
        } else {
            let id = self.body(msg);
            self.push_strict(Intent::PutRetained { topic: msg.topic.clone(), message: id });
        }
        if msg.qos == QoS::AtMostOnce {
            (self.strict, self.owed) = counted;
        }
    }

    /// Remembers the connection's version and will for the session record.
    pub(super) fn set_link(
        &mut self,
        key: SessionKey,
        version: ProtocolVersion,
        will: Option<&LastWill>,
    ) {
        let m = self.mirrors.entry(key).or_default();
        m.version = Some(version);
        m.disconnected_at = None;
        m.will = will.map(|w| StoredWill {
            topic: w.topic.clone(),
            payload: w.payload.clone(),
            qos: w.qos,
            retain: w.retain,
            properties: encode_will_properties(w),
            delay_secs: w.properties.will_delay_interval.unwrap_or(0),
        });
        self.publish_count();
    }

    /// The session's will is no longer owed (published, or ended by a normal
    /// DISCONNECT): the next session record leaves it out.
    pub(super) fn drop_will(&mut self, key: SessionKey) {
        if let Some(m) = self.mirrors.get_mut(&key) {
            m.will = None;
        }
    }

    /// Writes the session record.
    pub(super) fn put_session(
        &mut self,
        key: SessionKey,
        session: &shoal_core::session::Session,
        disconnected: bool,
    ) {
        let Some(m) = self.mirrors.get_mut(&key) else { return };
        let subscriptions = session
            .subscriptions()
            .map(|(filter, e)| StoredSubscription {
                filter: filter.clone(),
                options: e.options,
                identifier: e.identifier,
            })
            .collect();
        m.disconnected_at = if disconnected {
            m.disconnected_at.or_else(|| {
                Some(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
            })
        } else {
            None
        };
        let disconnected_at = m.disconnected_at;
        let record = SessionRecord {
            version: m.version.unwrap_or(ProtocolVersion::V3_1_1),
            expiry_secs: session.expiry_secs(),
            disconnected_at,
            subscriptions,
            will: m.will.clone(),
        };
        self.push_strict(Intent::PutSession { client_id: session.client_id().to_string(), record });
    }

    /// The session is gone: delete it (and all it holds) from the store, if it was there.
    pub(super) fn forget(&mut self, key: SessionKey, client_id: &str) {
        if self.mirrors.remove(&key).is_some() {
            self.push_strict(Intent::DeleteSession { client_id: client_id.into() });
            self.publish_count();
        }
    }

    /// Adds a mirror for a recovered session.
    pub(super) fn adopt(
        &mut self,
        key: SessionKey,
        queue: Vec<(u64, MessageId)>,
        record: &SessionRecord,
    ) {
        let next_seq = queue.last().map_or(0, |(s, _)| s + 1);
        self.mirrors.insert(
            key,
            Mirror {
                queue: queue.into(),
                next_seq,
                version: Some(record.version),
                will: record.will.clone(),
                disconnected_at: record.disconnected_at,
            },
        );
        self.publish_count();
    }

    /// End of an iteration: submits the batch (and any handed back before). Returns
    /// the marks this iteration owes and to whom.
    pub(super) fn end_iteration(&mut self, holds_placed: bool) -> Marks {
        self.last_body = None;
        let mark = take_mark(&mut self.mark_needed, &mut self.mark_to, &mut self.marks_sent);
        let share_mark = take_mark(
            &mut self.share_mark_needed,
            &mut self.share_mark_to,
            &mut self.share_marks_sent,
        );
        let has_batch = !self.batch.is_empty();
        let confirms = std::mem::take(&mut self.confirms);
        let share_confirms = std::mem::take(&mut self.share_confirms);
        if !has_batch
            && !holds_placed
            && mark.is_none()
            && share_mark.is_none()
            && confirms.is_empty()
            && share_confirms.is_empty()
        {
            return Marks::default();
        }
        let ticket = self.ticket;
        self.ticket += 1;
        if has_batch {
            self.unsent.push_back((std::mem::take(&mut self.batch), Ticket(ticket)));
        }
        self.pending.push_back(Pending {
            ticket,
            done: !has_batch,
            failed: false,
            mark: mark.clone(),
            share_mark: share_mark.clone(),
            confirms,
            share_confirms,
        });
        self.submit();
        Marks { publish: mark, share: share_mark }
    }

    /// Submits batches handed back earlier, in order, until the channel is full.
    fn submit(&mut self) {
        while let Some((batch, ticket)) = self.unsent.pop_front() {
            if let Err(r) = self.link.try_submit(batch, ticket) {
                if r.closed {
                    // The persister is gone (shutdown): these acks are never sent.
                    for p in &mut self.pending {
                        if p.ticket == r.ticket.0 {
                            p.done = true;
                            p.failed = true;
                        }
                    }
                    continue;
                }
                self.unsent.push_front((r.batch, r.ticket));
                break;
            }
        }
    }

    /// True while batches wait for room in the persister's channel.
    pub(super) fn backlogged(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Collects completions and answers from other workers; says which tickets are
    /// released or failed.
    pub(super) fn poll(&mut self) -> Released {
        self.submit();
        while let Some(c) = self.link.poll_completion() {
            let (tickets, failed) = match c {
                Completion::Committed(t) => (t, false),
                Completion::Failed(t, e) => {
                    log::error!(
                        "worker {}: {} batches not written ({e}); their acks are not sent",
                        self.me,
                        t.len()
                    );
                    (t, true)
                }
            };
            for t in tickets {
                if let Some(p) = self.pending.iter_mut().find(|p| p.ticket == t.0) {
                    p.done = true;
                    p.failed = failed;
                }
            }
        }
        let mut out = Released::default();
        let (me, shared) = (self.me, &self.shared);
        // What this worker owes other workers' marks never waits for its own publish
        // marks: hand it out once every ticket up to the one carrying it is committed,
        // even while an earlier ticket still waits for another worker's publish-mark
        // confirmation. Releasing it in ticket order behind those waits deadlocks two
        // workers that each wait for the other's confirmation behind a mark of their
        // own. A share mark's confirmation needs only that; a publish mark's also
        // needs every share mark sent up to that ticket confirmed (the group messages
        // forwarded for the publishes before it are written on their members'
        // workers). Share-mark confirmations wait for nobody's confirmation, so the
        // waits cannot go round in a circle.
        let mut forwarded = Vec::new();
        let mut shares_confirmed = true;
        for p in &mut self.pending {
            if !p.done {
                break;
            }
            shares_confirmed &= p.failed
                || p.share_mark
                    .as_ref()
                    .map_or(true, |m| shared.all_confirmed(MarkKind::Share, me, m));
            if !p.failed {
                forwarded.append(&mut p.share_confirms);
                if shares_confirmed {
                    out.confirms.append(&mut p.confirms);
                }
            }
        }
        while let Some(front) = self.pending.front() {
            if !front.done {
                break;
            }
            let waits = |kind, mark: &Option<(u64, Vec<usize>)>| {
                mark.as_ref().is_some_and(|m| !shared.all_confirmed(kind, me, m))
            };
            if !front.failed
                && (waits(MarkKind::Publish, &front.mark)
                    || waits(MarkKind::Share, &front.share_mark))
            {
                break;
            }
            let Some(p) = self.pending.pop_front() else { break };
            if p.failed {
                out.failed.push(p.ticket);
            }
            out.through = Some(p.ticket);
        }
        // A mark that arrived while nothing was pending or being written is answered
        // at once: this worker wrote (and forwarded) nothing for what came before it.
        if self.pending.is_empty()
            && self.batch.is_empty()
            && self.unsent.is_empty()
            && !self.share_mark_needed
        {
            out.confirms.append(&mut self.confirms);
            forwarded.append(&mut self.share_confirms);
        }
        for &(from, mark) in &out.confirms {
            shared.confirm(MarkKind::Publish, from, me, mark);
        }
        for &(from, mark) in &forwarded {
            shared.confirm(MarkKind::Share, from, me, mark);
        }
        out.confirms.append(&mut forwarded);
        out
    }
}

/// The mark an iteration owes, if `needed`: the next number of `sent`, to the workers
/// set in `to` (cleared).
fn take_mark(needed: &mut bool, to: &mut [bool], sent: &mut u64) -> Option<(u64, Vec<usize>)> {
    if !std::mem::take(needed) {
        return None;
    }
    *sent += 1;
    let to: Vec<usize> =
        to.iter_mut().enumerate().filter_map(|(w, m)| std::mem::take(m).then_some(w)).collect();
    (!to.is_empty()).then_some((*sent, to))
}

/// The MQTT 5 properties of a message, as the store keeps them: a v5 PUBLISH with the
/// message's properties and no payload, or nothing when there are none.
fn encode_properties(msg: &Message) -> Bytes {
    match msg.properties.as_deref() {
        Some(properties) => encode_publish_properties(&msg.topic, properties),
        None => Bytes::new(),
    }
}

/// The will's properties as the store keeps them: those it publishes with, in the
/// form of [`encode_properties`] (the Will Delay is a field of its own).
fn encode_will_properties(will: &LastWill) -> Bytes {
    let p = &will.properties;
    let properties = PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        content_type: p.content_type.clone(),
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        ..PublishProperties::default()
    };
    encode_publish_properties(&will.topic, &properties)
}

/// A stored will back in the form a CONNECT carries it.
pub(super) fn stored_will(w: &StoredWill) -> LastWill {
    let p = decode_properties(&w.properties);
    LastWill {
        topic: w.topic.clone(),
        payload: w.payload.clone(),
        qos: w.qos,
        retain: w.retain,
        properties: WillProperties {
            will_delay_interval: (w.delay_secs > 0).then_some(w.delay_secs),
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type,
            response_topic: p.response_topic,
            correlation_data: p.correlation_data,
            user_properties: p.user_properties,
        },
    }
}

fn encode_publish_properties(topic: &TopicName, properties: &PublishProperties) -> Bytes {
    if *properties == PublishProperties::default() {
        return Bytes::new();
    }
    let p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic.clone(),
        packet_id: None,
        properties: properties.clone(),
        payload: Bytes::new(),
    };
    let mut out = BytesMut::new();
    match p.encode(ProtocolVersion::V5, &mut out) {
        Ok(()) => out.freeze(),
        Err(_) => Bytes::new(),
    }
}

/// The properties stored by `encode_properties`.
pub(super) fn decode_properties(bytes: &Bytes) -> shoal_core::codec::PublishProperties {
    if bytes.is_empty() {
        return Default::default();
    }
    let mut buf = BytesMut::from(bytes.as_ref());
    match shoal_core::codec::decode(&mut buf, ProtocolVersion::V5, usize::MAX) {
        Ok(Some(Packet::Publish(p))) => p.properties,
        _ => Default::default(),
    }
}

/// A message the store gave back, as the broker routes it (`now`/`now_unix`: the same
/// moment on both clocks, for the expiry).
pub(crate) fn recovered_message(m: &StoredMessage, now: Instant, now_unix: u64) -> Message {
    let expires_at = m.expires_at.map(|t| {
        now.checked_add(std::time::Duration::from_secs(t.saturating_sub(now_unix))).unwrap_or(now)
    });
    Message {
        topic: m.topic.clone(),
        payload: m.payload.clone(),
        qos: m.qos,
        retain: m.retain,
        properties: Message::pack_properties(decode_properties(&m.properties)),
        expires_at,
        publisher: None,
    }
}

impl Worker {
    /// Turns the durable store on for this worker.
    pub(crate) fn set_durable(&mut self, link: PersistLink, shared: Arc<DurableShared>) {
        self.durable = Some(Box::new(Durable::new(self.id, link, shared)));
    }

    /// Puts recovered sessions (of client ids this worker is home to) back: sessions,
    /// subscriptions in the trie, queues, in-flight windows, QoS 2 marks.
    pub(crate) fn restore_sessions(&mut self, sessions: Vec<RecoveredSession>) {
        let mut rebuild = super::rebuild::Rebuild::new();
        let now = rebuild.now();
        let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for mut s in sessions {
            let subscriptions: Vec<(TopicFilter, SubscriptionEntry)> = s
                .record
                .subscriptions
                .iter()
                .map(|sub| {
                    let entry =
                        SubscriptionEntry { options: sub.options, identifier: sub.identifier };
                    (sub.filter.clone(), entry)
                })
                .collect();
            let mut queue = Vec::with_capacity(s.queue.len());
            let mut positions = Vec::with_capacity(s.queue.len());
            for (seq, m) in std::mem::take(&mut s.queue) {
                let id = m.id;
                let msg = rebuild.message(m);
                if let Some(d) = delivery_for(&msg, &subscriptions, None) {
                    queue.push(d);
                    positions.push((seq, id));
                }
            }
            let mut inflight = Vec::with_capacity(s.inflight.len());
            for (packet_id, state) in &s.inflight {
                match state {
                    RecoveredInflight::Publish { message: m, qos } => {
                        let msg = rebuild.message(m.clone());
                        let d =
                            delivery_for(&msg, &subscriptions, Some(*qos)).unwrap_or(Delivery {
                                message: msg,
                                qos: *qos,
                                retain: false,
                                subscription_ids: Vec::new(),
                                share: None,
                            });
                        inflight.push((*packet_id, d, false));
                    }
                    RecoveredInflight::Released => {
                        if let Some(d) = released_placeholder() {
                            inflight.push((*packet_id, d, true));
                        }
                    }
                }
            }
            let state = RestoredState {
                expiry_secs: s.record.expiry_secs,
                subscriptions: subscriptions.clone(),
                maybe_sent: if s.connected_at_crash { queue.len() } else { 0 },
                queue,
                inflight,
                qos2_received: s.qos2_received.clone(),
            };
            let client_id: Arc<str> = Arc::from(s.client_id.as_str());
            let session =
                Session::restore(client_id.clone(), self.shared.limits.clone(), state, now);
            let key = self.sessions.insert(SessionSlot { session, conn: None });
            if let Some(w) = &s.record.will {
                // Owed since the last connection ended (at the crash, for a session
                // that was connected: recovery dated that end to now).
                let ended = s.record.disconnected_at.unwrap_or(now_unix);
                let due_unix = ended.saturating_add(u64::from(w.delay_secs));
                let wait = Duration::from_secs(due_unix.saturating_sub(now_unix));
                let due = now.checked_add(wait).unwrap_or(now);
                self.owe_will(Some(key), client_id, Box::new(stored_will(w)), due);
            }
            let mut member = false;
            for (filter, entry) in subscriptions {
                // A shared subscription is a group membership, kept by the group's
                // home worker (as on SUBSCRIBE), not a trie entry of this worker.
                if let Some(shared) = super::shared::as_shared(&filter) {
                    self.share_join(key, &filter, shared, SubValue::from(entry), true, now);
                    member = true;
                } else if self.trie.insert(&filter, key, SubValue::from(entry)).is_none() {
                    self.shared.interest.added(self.id, &filter);
                }
            }
            if member {
                // Not connected yet: the groups use it only when nobody else is online.
                self.share_presence(key, false, now);
            }
            if let Some(d) = self.durable.as_mut() {
                d.adopt(key, positions, &s.record);
            }
        }
        self.match_cache.clear();
    }

    /// Wills of sessions that ended while the broker was down (`Recovered::ended_wills`
    /// of client ids this worker is home to): published as soon as the worker runs.
    pub(crate) fn restore_ended_wills(&mut self, wills: Vec<(String, StoredWill)>) {
        let now = Instant::now();
        for (client_id, w) in wills {
            self.owe_will(None, Arc::from(client_id.as_str()), Box::new(stored_will(&w)), now);
        }
    }

    /// Where an input to connection `idx` starts: its write buffer's length and the
    /// intents written so far.
    pub(super) fn hold_mark(&self, idx: usize) -> Option<HoldMark> {
        let d = self.durable.as_ref()?;
        let c = self.conns.get(idx)?;
        let (strict, owed) = d.hold_mark();
        Some(HoldMark { offset: c.wbuf.len(), strict, owed })
    }

    /// After an input to connection `idx`: if it wrote anything its output must wait
    /// for (or, with `packet` set, anything an ack to it waits for, including other
    /// workers), hold what was encoded for it since `mark`. Only the wrapper around a
    /// whole packet (`packet`) may take the "waits for other workers" flag: an inner
    /// encode pass starts after the ack was encoded, and taking it there would leave
    /// the ack unheld.
    pub(super) fn hold_apply(&mut self, idx: usize, mark: Option<HoldMark>, packet: bool) {
        let Some(mark) = mark else { return };
        let Some(d) = self.durable.as_mut() else { return };
        let (strict, owed) = d.hold_mark();
        let remote = packet && d.take_remote_hold();
        let wrote = strict != mark.strict || (packet && owed != mark.owed);
        if !wrote && !remote {
            return;
        }
        let ticket = d.ticket;
        let Some(c) = self.conns.get_mut(idx) else { return };
        if !c.is_holding() {
            d.held.push(idx);
        }
        c.hold(mark.offset, ticket);
        d.holds_placed = true;
    }

    /// Moves a session's journaled changes into this iteration's batch.
    pub(super) fn durable_journal(&mut self, key: SessionKey) {
        let Some(d) = self.durable.as_mut() else { return };
        let Some(slot) = self.sessions.get_mut(key) else { return };
        if !slot.session.is_journaling() {
            return;
        }
        let changes = slot.session.take_journal();
        if !changes.is_empty() {
            let id = slot.session.client_id().clone();
            d.journal(key, &id, changes);
        }
    }

    /// Completions from the persister and answers from other workers: releases held
    /// output, closes connections whose acks failed, passes confirmations on.
    pub(super) fn durable_poll(&mut self, now: Instant) {
        let Some(d) = self.durable.as_mut() else { return };
        let released = d.poll();
        let held = std::mem::take(&mut d.held);
        for &(from, _) in &released.confirms {
            if let Some(p) = self.peers.get(from) {
                let _ = p.waker.wake();
            }
        }
        let mut still = Vec::with_capacity(held.len());
        let mut failed = Vec::new();
        for idx in held {
            let Some(c) = self.conns.get_mut(idx) else { continue };
            if released.failed.iter().any(|&t| c.drop_held(t)) {
                log::warn!(
                    "client at {}: the durable store failed; acknowledgements withheld, closing",
                    c.addr
                );
                failed.push(idx);
                continue;
            }
            if let Some(t) = released.through {
                if c.release(t) && !c.dirty {
                    c.dirty = true;
                    self.dirty.push(idx);
                }
            }
            if c.is_holding() {
                still.push(idx);
            }
        }
        if let Some(d) = self.durable.as_mut() {
            d.held = still;
        }
        for idx in failed {
            self.link_lost(idx, LinkLoss::Limit(ReasonCode::QuotaExceeded), now);
        }
    }

    /// Shutdown: hands the persister every batch still waiting for room in its channel
    /// (it commits all it was given before it stops), until `deadline`.
    pub(super) fn durable_drain(&mut self, deadline: Instant) {
        let Some(d) = self.durable.as_mut() else { return };
        while d.backlogged() && Instant::now() < deadline {
            d.submit();
            if d.backlogged() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if d.backlogged() {
            log::warn!(
                "worker {}: the durable store did not take the last changes in time",
                self.id
            );
        }
    }

    /// End of the iteration: submit the batch; note the publish mark owed to other
    /// workers, and put the share mark behind the share messages of this iteration
    /// (`flush_outbox` sends them in the same batch, so the mark cannot overtake them).
    pub(super) fn durable_end(&mut self) {
        let Some(d) = self.durable.as_mut() else { return };
        let placed = std::mem::take(&mut d.holds_placed);
        d.take_remote_hold();
        let marks = d.end_iteration(placed);
        if let Some((mark, to)) = marks.publish {
            for w in to {
                if let Some(m) = self.owed_marks.get_mut(w) {
                    *m = mark;
                }
            }
        }
        if let Some((mark, to)) = marks.share {
            for w in to {
                if let Some(out) = self.share_out.get_mut(w) {
                    out.push(super::shared::ShareMsg::Mark { from: self.id, mark });
                }
            }
        }
    }

    /// Sends owed publish marks to peers whose publish batches have all gone out (a
    /// mark must not overtake the batches it covers; share marks travel inside the
    /// share batches, see [`Worker::durable_end`]).
    pub(super) fn send_marks(&mut self) {
        if self.durable.is_none() {
            return;
        }
        for (w, owed) in self.owed_marks.iter_mut().enumerate() {
            if *owed == 0 || self.outbox.get(w).is_some_and(|o| !o.is_empty()) {
                continue;
            }
            let Some(peer) = self.peers.get(w) else { continue };
            match peer.tx.try_send(WorkerMsg::Mark { from: self.id, mark: *owed }) {
                Ok(()) => {
                    *owed = 0;
                    let _ = peer.waker.wake();
                }
                Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => *owed = 0,
            }
        }
    }
}

/// The delivery of a recovered message to a session with these subscriptions, as
/// routing would have made it: the highest granted QoS among the matching ones (capped
/// by `qos` when given), their identifiers. `None` when no subscription matches.
fn delivery_for(
    msg: &Arc<Message>,
    subscriptions: &[(TopicFilter, SubscriptionEntry)],
    qos: Option<QoS>,
) -> Option<Delivery> {
    let mut best: Option<Delivery> = None;
    for (filter, e) in subscriptions {
        if !filter.matches(&msg.topic) {
            continue;
        }
        let d = best.get_or_insert_with(|| Delivery {
            message: msg.clone(),
            qos: QoS::AtMostOnce,
            retain: false,
            subscription_ids: Vec::new(),
            share: None,
        });
        d.qos = d.qos.max(msg.qos.min(e.options.qos));
        d.retain |= e.options.retain_as_published && msg.retain;
        d.subscription_ids.extend(e.identifier);
    }
    if let (Some(d), Some(q)) = (best.as_mut(), qos) {
        d.qos = q;
    }
    best.filter(|d| d.qos != QoS::AtMostOnce)
}

/// Stands in for the message of a recovered "PUBREL sent" entry: only PUBREL is resent.
fn released_placeholder() -> Option<Delivery> {
    let topic = TopicName::try_from("$shoal/released").ok()?;
    let message = Message {
        topic,
        payload: Bytes::new(),
        qos: QoS::ExactlyOnce,
        retain: false,
        properties: None,
        expires_at: None,
        publisher: None,
    };
    Some(Delivery {
        message: Arc::new(message),
        qos: QoS::ExactlyOnce,
        retain: false,
        subscription_ids: Vec::new(),
        share: None,
    })
}

#[cfg(test)]
mod tests {
    use crossbeam_channel::{unbounded, Receiver};

    use super::*;
    use crate::persist::{PersistOptions, Persister, PersisterHandle};

    const DEADLINE: Duration = Duration::from_secs(20);

    /// Worker `me`'s durable state on `handle`'s store, and its wake-ups.
    fn durable(
        me: usize,
        handle: &PersisterHandle,
        shared: &Arc<DurableShared>,
    ) -> (Durable, Receiver<()>) {
        let (tx, rx) = unbounded();
        let link = handle.link(Arc::new(move || {
            let _ = tx.send(());
        }));
        (Durable::new(me, link, shared.clone()), rx)
    }

    /// Polls `d` until `done` says so, waiting for the persister's wake-ups.
    fn poll_until(d: &mut Durable, woken: &Receiver<()>, done: impl Fn(&Released) -> bool) {
        let until = Instant::now() + DEADLINE;
        loop {
            if done(&d.poll()) {
                return;
            }
            let left = until.saturating_duration_since(Instant::now());
            assert!(woken.recv_timeout(left).is_ok(), "nothing came within {DEADLINE:?}");
        }
    }

    fn message() -> Arc<Message> {
        Arc::new(Message {
            topic: TopicName::try_from("sh/t").unwrap(),
            payload: Bytes::from_static(b"kept"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            expires_at: None,
            publisher: None,
        })
    }

    /// The member on the publisher's own worker: A (worker 0) routes a publish whose
    /// group home is B (worker 1) and waits for B's answer; B forwards the message back
    /// to A and answers A only once A answered its share mark; A answers that at its
    /// commit, although its earlier ticket still waits for B. Were A's answer held
    /// behind its own wait, neither would ever move.
    #[test]
    fn a_share_mark_is_answered_at_commit_while_the_publish_it_serves_waits() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, _) = Persister::start(dir.path(), PersistOptions::default()).unwrap();
        let shared = Arc::new(DurableShared::new(2));
        let (mut a, a_woken) = durable(0, &handle, &shared);
        let (mut b, _) = durable(1, &handle, &shared);

        // A: the publish is routed to the group home and its ack held for B.
        a.mark_needed = true;
        a.mark_to = vec![false, true];
        let marks = a.end_iteration(true);
        assert_eq!(marks.publish, Some((1, vec![1])));
        assert_eq!(a.poll().through, None, "the publisher's ack waits for B");

        // B: A's publish mark, then the group message forwarded to A's member.
        b.on_mark(MarkKind::Publish, 0, 1);
        b.forwarded_share(0);
        let marks = b.end_iteration(false);
        assert_eq!(marks.share, Some((1, vec![0])));
        assert_eq!(b.poll().confirms, [], "B wrote nothing, but its forward is not written yet");
        assert_eq!(shared.confirmed(MarkKind::Publish, 0, 1), 0);

        // A: the member's write, then B's share mark (same batch from B, in order).
        a.body(&message());
        a.on_mark(MarkKind::Share, 1, 1);
        a.end_iteration(false);
        poll_until(&mut a, &a_woken, |r| {
            assert_eq!(r.through, None, "A's first ticket waits for B");
            !r.confirms.is_empty()
        });
        assert_eq!(shared.confirmed(MarkKind::Share, 1, 0), 1, "answered at A's commit");

        // B answers A now, and A releases both tickets.
        assert_eq!(b.poll().confirms, [(0, 1)]);
        assert_eq!(shared.confirmed(MarkKind::Publish, 0, 1), 1);
        assert_eq!(a.poll().through, Some(2));
        drop((a, b));
        handle.shutdown().unwrap();
    }

    /// A share mark's answer never waits for a publish mark's: a group home whose own
    /// publish waits for the member's worker still answers that worker's share mark
    /// once its commit is in.
    #[test]
    fn share_marks_are_answered_while_publish_marks_wait_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, _) = Persister::start(dir.path(), PersistOptions::default()).unwrap();
        let shared = Arc::new(DurableShared::new(2));
        let (mut a, a_woken) = durable(0, &handle, &shared);
        let (mut b, b_woken) = durable(1, &handle, &shared);
        // Each is the group home of a group whose member lives on the other, and each
        // forwarded a message to it with a share mark, in an iteration that also
        // handled the other's publish mark.
        for (d, other) in [(&mut a, 1), (&mut b, 0)] {
            d.on_mark(MarkKind::Publish, other, 1);
            d.forwarded_share(other);
            assert_eq!(d.end_iteration(true).share, Some((1, vec![other])));
        }
        // Each writes the other's message and gets its share mark.
        for (d, other) in [(&mut a, 1), (&mut b, 0)] {
            d.body(&message());
            d.on_mark(MarkKind::Share, other, 1);
            d.end_iteration(false);
        }
        // A's commit answers B's share mark while A's own forward is unanswered.
        poll_until(&mut a, &a_woken, |r| {
            assert_eq!(r.through, None, "A's forward is not answered yet");
            shared.confirmed(MarkKind::Share, 1, 0) == 1
        });
        // B's commit answers A's; B, its own share mark answered, answers A's publish
        // mark and releases everything; then A does.
        poll_until(&mut b, &b_woken, |r| r.through == Some(2));
        assert_eq!(shared.confirmed(MarkKind::Share, 0, 1), 1);
        assert_eq!(a.poll().through, Some(2));
        assert_eq!(shared.confirmed(MarkKind::Publish, 0, 1), 1);
        assert_eq!(shared.confirmed(MarkKind::Publish, 1, 0), 1);
        drop((a, b));
        handle.shutdown().unwrap();
    }
}
