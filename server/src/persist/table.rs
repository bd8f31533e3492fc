//! The redb tables, applying intents to them inside a write transaction, and recovery.
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `"format"` | [`STORE_FORMAT`] (marks the file as Shoal's) |
//! | `messages` | message id | encoded [`StoredMessage`] without its id |
//! | `retained` | topic | message id |
//! | `sessions` | client id | encoded [`SessionRecord`] |
//! | `queues` | (client id, seq) | message id |
//! | `inflight` | (client id, packet id) | encoded [`InflightRecord`] |
//! | `qos2_received` | (client id, packet id) | `()` |
//!
//! # Reference counts
//! The number of references to each body is not on disk: the persister keeps it in
//! memory (`Counts`, 12 bytes a live body), recovery rebuilds it by walking every
//! reference, and a group's changes to it are merged only once its commit returned Ok.
//! Keeping it on disk would cost three more B-tree operations a message.
//!
//! # Invariants
//! After every committed transaction: every id in `retained`, `queues` and `inflight`
//! is in `messages`, and every body in `messages` has at least one reference (a body
//! whose last reference went away is deleted in the same transaction). Recovery deletes
//! any body nobody refers to, so even a bug here cannot leak one for good.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use redb::{ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};
use shoal_core::{PacketId, TopicName};

use super::record::{
    decode_inflight, decode_message, decode_session, encode_inflight, encode_message,
    encode_session, inflight_message, CorruptRecord, InflightRecord, Intent, MessageId,
    StoredMessage, StoredWill,
};
use super::{RecoveredInflight, RecoveredSession};

/// Value of `meta["format"]`; bump when the table layout changes incompatibly.
pub(super) const STORE_FORMAT: u64 = 1;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const MESSAGES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("messages");

/// References to each stored body, by message id (see the module docs).
pub(super) type Counts = HashMap<u64, u32, crate::idhash::IdHasher>;
const RETAINED: TableDefinition<'_, &str, u64> = TableDefinition::new("retained");
const SESSIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sessions");
const QUEUES: TableDefinition<'_, (&str, u64), u64> = TableDefinition::new("queues");
const INFLIGHT: TableDefinition<'_, (&str, u16), &[u8]> = TableDefinition::new("inflight");
const QOS2: TableDefinition<'_, (&str, u16), ()> = TableDefinition::new("qos2_received");

/// Writes one small record (`meta["probe"]` = `now`) in `txn`: a commit of it shows
/// that the file takes writes again after a failure.
pub(super) fn write_probe(txn: &WriteTransaction, now: u64) -> Result<(), DbError> {
    let mut meta = txn.open_table(META)?;
    meta.insert("probe", now)?;
    Ok(())
}

/// Why opening the tables failed.
#[derive(Debug)]
pub(super) enum FormatCheck {
    /// Fine (created now or already Shoal's).
    Ok,
    /// A redb file with tables but no Shoal marker.
    Foreign,
    /// Shoal's, but another layout version.
    Unsupported(u64),
}

/// Marks a fresh file as Shoal's, or checks that an existing one is.
pub(super) fn check_format(txn: &WriteTransaction) -> Result<FormatCheck, DbError> {
    let has_tables = txn.list_tables()?.next().is_some();
    let mut meta = txn.open_table(META)?;
    let found = meta.get("format")?.map(|g| g.value());
    match found {
        Some(STORE_FORMAT) => Ok(FormatCheck::Ok),
        Some(other) => Ok(FormatCheck::Unsupported(other)),
        None if has_tables => Ok(FormatCheck::Foreign),
        None => {
            meta.insert("format", STORE_FORMAT)?;
            Ok(FormatCheck::Ok)
        }
    }
}

/// Every table, open for one write transaction.
pub(super) struct Tables<'txn, 'c> {
    messages: Table<'txn, u64, &'static [u8]>,
    /// Counts as of the last commit.
    counts: &'c Counts,
    /// Counts changed by this transaction; merged by [`merge_counts`] once it committed.
    delta: Counts,
    retained: Table<'txn, &'static str, u64>,
    sessions: Table<'txn, &'static str, &'static [u8]>,
    queues: Table<'txn, (&'static str, u64), u64>,
    inflight: Table<'txn, (&'static str, u16), &'static [u8]>,
    qos2: Table<'txn, (&'static str, u16), ()>,
    /// Messages whose count went down or that were stored in this transaction: checked
    /// for a zero count by [`Tables::sweep`].
    touched: HashSet<u64>,
    /// References to messages the store does not hold, skipped.
    pub(super) dangling: u64,
}

impl<'txn, 'c> Tables<'txn, 'c> {
    pub(super) fn open(txn: &'txn WriteTransaction, counts: &'c Counts) -> Result<Self, DbError> {
        Ok(Self {
            messages: txn.open_table(MESSAGES)?,
            counts,
            delta: Counts::default(),
            retained: txn.open_table(RETAINED)?,
            sessions: txn.open_table(SESSIONS)?,
            queues: txn.open_table(QUEUES)?,
            inflight: txn.open_table(INFLIGHT)?,
            qos2: txn.open_table(QOS2)?,
            touched: HashSet::new(),
            dangling: 0,
        })
    }

    /// References to `id`; `None` when the store does not hold it.
    fn count(&self, id: u64) -> Option<u32> {
        self.delta.get(&id).or_else(|| self.counts.get(&id)).copied()
    }

    /// Counts one more reference to `id`; false (and nothing written) when the store
    /// does not hold that message.
    fn add_ref(&mut self, id: MessageId) -> Result<bool, DbError> {
        match self.count(id.0) {
            Some(c) => {
                self.delta.insert(id.0, c.saturating_add(1));
                Ok(true)
            }
            None => {
                self.dangling += 1;
                Ok(false)
            }
        }
    }

    fn drop_ref(&mut self, id: u64) -> Result<(), DbError> {
        if let Some(c) = self.count(id) {
            self.delta.insert(id, c.saturating_sub(1));
            self.touched.insert(id);
        }
        Ok(())
    }

    /// Applies one intent.
    pub(super) fn apply(&mut self, intent: &Intent) -> Result<(), DbError> {
        match intent {
            Intent::PutMessage(m) => {
                self.messages.insert(m.id.0, encode_message(m).as_slice())?;
                if self.count(m.id.0).is_none() {
                    self.delta.insert(m.id.0, 0);
                }
                self.touched.insert(m.id.0);
            }
            Intent::PutRetained { topic, message } => {
                if self.add_ref(*message)? {
                    let old = self.retained.insert(topic.as_str(), message.0)?.map(|g| g.value());
                    if let Some(old) = old {
                        self.drop_ref(old)?;
                    }
                }
            }
            Intent::DeleteRetained { topic } => {
                let old = self.retained.remove(topic.as_str())?.map(|g| g.value());
                if let Some(old) = old {
                    self.drop_ref(old)?;
                }
            }
            Intent::Enqueue { client_id, message, seq } => {
                if self.add_ref(*message)? {
                    let key = (client_id.as_str(), *seq);
                    let old = self.queues.insert(key, message.0)?.map(|g| g.value());
                    if let Some(old) = old {
                        self.drop_ref(old)?;
                    }
                }
            }
            Intent::Dequeue { client_id, seq } => {
                let old = self.queues.remove((client_id.as_str(), *seq))?.map(|g| g.value());
                if let Some(old) = old {
                    self.drop_ref(old)?;
                }
            }
            Intent::PutSession { client_id, record } => {
                self.sessions.insert(client_id.as_str(), encode_session(record).as_slice())?;
            }
            Intent::DeleteSession { client_id } => self.delete_session(client_id)?,
            Intent::MarkQos2Received { client_id, packet_id } => {
                self.qos2.insert((client_id.as_str(), packet_id.get()), ())?;
            }
            Intent::ClearQos2Received { client_id, packet_id } => {
                self.qos2.remove((client_id.as_str(), packet_id.get()))?;
            }
            Intent::PutInflight { client_id, packet_id, record } => {
                if let Some(id) = inflight_message(record) {
                    if !self.add_ref(id)? {
                        return Ok(());
                    }
                }
                let key = (client_id.as_str(), packet_id.get());
                let old = self.inflight.insert(key, encode_inflight(record).as_slice())?;
                let old = old.map(|g| decode_inflight(g.value()));
                if let Some(Ok(old)) = old {
                    if let Some(id) = inflight_message(&old) {
                        self.drop_ref(id.0)?;
                    }
                }
            }
            Intent::DeleteInflight { client_id, packet_id } => {
                self.delete_inflight(client_id, packet_id.get())?;
            }
        }
        Ok(())
    }

    fn delete_inflight(&mut self, client_id: &str, packet_id: u16) -> Result<(), DbError> {
        let old = self.inflight.remove((client_id, packet_id))?.map(|g| decode_inflight(g.value()));
        if let Some(Ok(old)) = old {
            if let Some(id) = inflight_message(&old) {
                self.drop_ref(id.0)?;
            }
        }
        Ok(())
    }

    fn delete_session(&mut self, client_id: &str) -> Result<(), DbError> {
        self.sessions.remove(client_id)?;
        let mut queued = Vec::new();
        for entry in self.queues.range((client_id, 0)..=(client_id, u64::MAX))? {
            let (k, v) = entry?;
            queued.push((k.value().1, v.value()));
        }
        for (seq, id) in queued {
            self.queues.remove((client_id, seq))?;
            self.drop_ref(id)?;
        }
        let mut pids = Vec::new();
        for entry in self.inflight.range((client_id, 0)..=(client_id, u16::MAX))? {
            pids.push(entry?.0.value().1);
        }
        for pid in pids {
            self.delete_inflight(client_id, pid)?;
        }
        let mut marks = Vec::new();
        for entry in self.qos2.range((client_id, 0)..=(client_id, u16::MAX))? {
            marks.push(entry?.0.value().1);
        }
        for pid in marks {
            self.qos2.remove((client_id, pid))?;
        }
        Ok(())
    }

    /// Deletes every touched body nobody refers to any more, and returns the count
    /// changes to merge once the transaction committed. Call once, before commit.
    pub(super) fn finish(mut self) -> Result<(Counts, u64), DbError> {
        for id in std::mem::take(&mut self.touched) {
            if self.count(id) == Some(0) {
                self.messages.remove(id)?;
            }
        }
        Ok((self.delta, self.dangling))
    }
}

/// Applies a committed transaction's count changes (a zero count: the body is gone).
pub(super) fn merge_counts(counts: &mut Counts, delta: Counts) {
    for (id, c) in delta {
        if c == 0 {
            counts.remove(&id);
        } else {
            counts.insert(id, c);
        }
    }
}

/// A redb error, boxed: redb's error type is large and these results are returned on
/// every intent.
#[derive(Debug)]
pub(super) struct DbError(pub(super) Box<redb::Error>);

impl<E: Into<redb::Error>> From<E> for DbError {
    fn from(e: E) -> Self {
        DbError(Box::new(e.into()))
    }
}

/// Why recovery failed.
#[derive(Debug)]
pub(super) enum RecoverError {
    Db(DbError),
    Corrupt(Box<CorruptRecord>),
}

impl<E: Into<redb::Error>> From<E> for RecoverError {
    fn from(e: E) -> Self {
        RecoverError::Db(DbError::from(e))
    }
}

impl From<DbError> for RecoverError {
    fn from(e: DbError) -> Self {
        RecoverError::Db(e)
    }
}

fn corrupt(what: &'static str, why: &'static str) -> RecoverError {
    RecoverError::Corrupt(Box::new(CorruptRecord { what, why }))
}

fn corrupt_record(e: CorruptRecord) -> RecoverError {
    RecoverError::Corrupt(Box::new(e))
}

/// Everything read back at start, and what must be written to drop expired and
/// orphaned state.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub(super) sessions: Vec<RecoveredSession>,
    pub(super) retained: Vec<(TopicName, Arc<StoredMessage>)>,
    pub(super) messages: usize,
    pub(super) max_message_id: Option<u64>,
    pub(super) expired_messages: u64,
    pub(super) expired_sessions: u64,
    /// Wills of the expired sessions.
    pub(super) ended_wills: Vec<(String, StoredWill)>,
    pub(super) orphans: u64,
    /// References to every body kept.
    pub(super) counts: Counts,
    /// Deletions, applied by [`Cleanup::apply`].
    pub(super) cleanup: Cleanup,
}

/// Writes recovery decided on.
#[derive(Debug, Default)]
pub(super) struct Cleanup {
    sessions: Vec<(String, Option<Vec<u8>>)>,
    queue_entries: Vec<(String, u64)>,
    inflight: Vec<(String, u16)>,
    qos2: Vec<(String, u16)>,
    retained: Vec<String>,
    /// Bodies to delete: expired, or nobody refers to them.
    bodies: Vec<u64>,
}

impl Cleanup {
    pub(super) fn is_empty(&self) -> bool {
        self.sessions.is_empty()
            && self.queue_entries.is_empty()
            && self.inflight.is_empty()
            && self.qos2.is_empty()
            && self.retained.is_empty()
            && self.bodies.is_empty()
    }

    pub(super) fn apply(&self, txn: &WriteTransaction) -> Result<(), DbError> {
        let counts = Counts::default();
        let mut t = Tables::open(txn, &counts)?;
        for (client, record) in &self.sessions {
            match record {
                Some(bytes) => t.sessions.insert(client.as_str(), bytes.as_slice())?,
                None => t.sessions.remove(client.as_str())?,
            };
        }
        for (client, seq) in &self.queue_entries {
            t.queues.remove((client.as_str(), *seq))?;
        }
        for (client, pid) in &self.inflight {
            t.inflight.remove((client.as_str(), *pid))?;
        }
        for (client, pid) in &self.qos2 {
            t.qos2.remove((client.as_str(), *pid))?;
        }
        for topic in &self.retained {
            t.retained.remove(topic.as_str())?;
        }
        for id in &self.bodies {
            t.messages.remove(*id)?;
        }
        Ok(())
    }
}

fn packet_id(raw: u16, what: &'static str) -> Result<PacketId, RecoverError> {
    PacketId::new(raw).ok_or_else(|| corrupt(what, "packet id 0"))
}

/// Reads the whole store, dropping (in the returned cleanup) sessions expired at
/// `now_unix`, expired messages and whatever refers to them, state of clients with no
/// session record, and bodies nobody refers to.
pub(super) fn load(txn: &ReadTransaction, now_unix: u64) -> Result<Loaded, RecoverError> {
    let mut out = Loaded::default();
    let mut messages: HashMap<u64, Arc<StoredMessage>> = HashMap::new();
    let mut expired: HashSet<u64> = HashSet::new();
    for entry in txn.open_table(MESSAGES)?.iter()? {
        let (k, v) = entry?;
        let id = k.value();
        out.max_message_id = out.max_message_id.max(Some(id));
        let m = decode_message(MessageId(id), v.value()).map_err(corrupt_record)?;
        if m.is_expired(now_unix) {
            expired.insert(id);
        } else {
            messages.insert(id, Arc::new(m));
        }
    }
    let mut live_refs = Counts::default();
    // Looks a referenced body up: Ok(None) when it expired, an error when it is missing.
    let mut resolve = |id: u64, what: &'static str| -> Result<Option<Arc<StoredMessage>>, _> {
        if let Some(m) = messages.get(&id) {
            *live_refs.entry(id).or_insert(0) += 1;
            Ok(Some(m.clone()))
        } else if expired.contains(&id) {
            Ok(None)
        } else {
            Err(corrupt(what, "refers to a missing message"))
        }
    };

    let mut sessions: Vec<RecoveredSession> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for entry in txn.open_table(SESSIONS)?.iter()? {
        let (k, v) = entry?;
        let client_id = k.value().to_owned();
        let mut record = decode_session(v.value()).map_err(corrupt_record)?;
        if record.is_expired(now_unix) {
            out.expired_sessions += 1;
            if let Some(will) = record.will.take() {
                out.ended_wills.push((client_id.clone(), will));
            }
            out.cleanup.sessions.push((client_id, None));
            continue;
        }
        let connected_at_crash = record.disconnected_at.is_none();
        if connected_at_crash {
            // Connected at the crash: its expiry runs from now, and is written so that
            // repeated restarts do not keep it alive for ever.
            record.disconnected_at = Some(now_unix);
            out.cleanup.sessions.push((client_id.clone(), Some(encode_session(&record))));
        }
        index.insert(client_id.clone(), sessions.len());
        sessions.push(RecoveredSession {
            client_id,
            record,
            connected_at_crash,
            queue: Vec::new(),
            inflight: Vec::new(),
            qos2_received: Vec::new(),
        });
    }

    for entry in txn.open_table(QUEUES)?.iter()? {
        let (k, v) = entry?;
        let (client, seq) = k.value();
        let Some(&i) = index.get(client) else {
            out.orphans += 1;
            out.cleanup.queue_entries.push((client.to_owned(), seq));
            continue;
        };
        match resolve(v.value(), "queue entry")? {
            Some(m) => {
                if let Some(s) = sessions.get_mut(i) {
                    s.queue.push((seq, m));
                }
            }
            None => {
                out.cleanup.queue_entries.push((client.to_owned(), seq));
            }
        }
    }

    for entry in txn.open_table(INFLIGHT)?.iter()? {
        let (k, v) = entry?;
        let (client, raw_pid) = k.value();
        let Some(&i) = index.get(client) else {
            out.orphans += 1;
            out.cleanup.inflight.push((client.to_owned(), raw_pid));
            continue;
        };
        let pid = packet_id(raw_pid, "in-flight")?;
        let state = match decode_inflight(v.value()).map_err(corrupt_record)? {
            InflightRecord::Released => Some(RecoveredInflight::Released),
            InflightRecord::Publish { message, qos } => resolve(message.0, "in-flight")?
                .map(|m| RecoveredInflight::Publish { message: m, qos }),
        };
        match state {
            Some(state) => {
                if let Some(s) = sessions.get_mut(i) {
                    s.inflight.push((pid, state));
                }
            }
            None => out.cleanup.inflight.push((client.to_owned(), raw_pid)),
        }
    }

    for entry in txn.open_table(QOS2)?.iter()? {
        let (k, _) = entry?;
        let (client, raw_pid) = k.value();
        match index.get(client) {
            Some(&i) => {
                let pid = packet_id(raw_pid, "QoS 2 mark")?;
                if let Some(s) = sessions.get_mut(i) {
                    s.qos2_received.push(pid);
                }
            }
            None => {
                out.orphans += 1;
                out.cleanup.qos2.push((client.to_owned(), raw_pid));
            }
        }
    }

    for entry in txn.open_table(RETAINED)?.iter()? {
        let (k, v) = entry?;
        let topic_str = k.value();
        let topic = TopicName::try_from_str(topic_str)
            .map_err(|_| corrupt("retained", "bad topic name"))?;
        match resolve(v.value(), "retained")? {
            Some(m) => out.retained.push((topic, m)),
            None => out.cleanup.retained.push(topic_str.to_owned()),
        }
    }

    // Reachability: bodies nobody refers to are deleted.
    for &id in messages.keys() {
        if !live_refs.contains_key(&id) {
            out.cleanup.bodies.push(id);
        }
    }
    out.cleanup.bodies.extend(expired.iter().copied());
    out.expired_messages += expired.len() as u64;
    out.messages = live_refs.len();
    out.counts = live_refs;
    out.sessions = sessions;
    Ok(out)
}

/// Counts the references to every body, as on disk now. Used after the file was
/// reopened on an error: a failed commit may still have reached the disk, so the
/// counts in memory are not trusted any more.
pub(super) fn recount(txn: &ReadTransaction) -> Result<Counts, RecoverError> {
    let mut counts = Counts::default();
    for entry in txn.open_table(MESSAGES)?.iter()? {
        counts.insert(entry?.0.value(), 0);
    }
    let mut add = |id: u64| {
        if let Some(c) = counts.get_mut(&id) {
            *c = c.saturating_add(1);
        }
    };
    for entry in txn.open_table(QUEUES)?.iter()? {
        add(entry?.1.value());
    }
    for entry in txn.open_table(RETAINED)?.iter()? {
        add(entry?.1.value());
    }
    for entry in txn.open_table(INFLIGHT)?.iter()? {
        let rec = decode_inflight(entry?.1.value()).map_err(corrupt_record)?;
        if let Some(id) = inflight_message(&rec) {
            add(id.0);
        }
    }
    // A body nobody refers to keeps count 0: the next group that touches it, or the
    // next recovery, deletes it.
    Ok(counts)
}

/// Every stored body's id, for tests that look at the file.
#[cfg(test)]
pub(super) fn stored_bodies(db: &redb::Database) -> Vec<u64> {
    let txn = db.begin_read().unwrap();
    let mut out = Vec::new();
    for entry in txn.open_table(MESSAGES).unwrap().iter().unwrap() {
        out.push(entry.unwrap().0.value());
    }
    out
}
