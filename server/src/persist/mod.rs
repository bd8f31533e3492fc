//! The durable store: sessions, offline queues, in-flight state, QoS 2 received-marks
//! and retained messages in one redb file, written by one persister thread with group
//! commit, so that what the broker acknowledged survives `kill -9` and the event loops
//! never wait on the disk.
//!
//! # Data model
//! Workers describe changes as write [`Intent`]s. A message body is stored once
//! ([`Intent::PutMessage`], keyed by a [`MessageId`] from
//! [`PersistLink::next_message_id`]) and referred to by id from every queue entry
//! ([`Intent::Enqueue`] / [`Intent::Dequeue`]), in-flight entry
//! ([`Intent::PutInflight`] / [`Intent::DeleteInflight`]) and retained topic
//! ([`Intent::PutRetained`] / [`Intent::DeleteRetained`]) that holds it. The store
//! counts the references and deletes a body in the transaction that drops its last
//! one; recovery recounts them by reachability, so a wrong count can never lose or
//! leak a body for good. Sessions ([`Intent::PutSession`], [`SessionRecord`]: protocol
//! version, expiry interval, subscriptions with options, will) and QoS 2 marks
//! ([`Intent::MarkQos2Received`]) are keyed by client id; [`Intent::DeleteSession`]
//! removes a session with everything it holds. Table layout: `table.rs`; byte
//! layout: `record.rs`.
//!
//! # Threads and channels
//! [`Persister::start`] opens (or creates) `shoal.redb` in the data directory,
//! recovers everything ([`Recovered`]) and spawns one thread, the only one that ever
//! touches the database. Each worker gets a [`PersistLink`] ([`PersisterHandle::link`])
//! with its own completion channel and a wake-up closure (the worker's `mio::Waker`):
//!
//! 1. the worker collects a loop iteration's intents into one batch and calls
//!    [`PersistLink::try_submit`] with a [`Ticket`] of its choosing, and parks the acks
//!    (PUBACK, PUBREC, SUBACK, CONNACK) that depend on it;
//! 2. the persister blocks for the first submission, then drains **everything** queued
//!    (up to [`PersistOptions::max_group_intents`]), applies it in one write
//!    transaction and commits it with full durability (one fsync). Under load the
//!    queue grows while the previous fsync runs, so the next group is larger: group size
//!    follows load with no timer;
//! 3. only after `commit` returned `Ok` does it send [`Completion::Committed`] with the
//!    tickets to each worker that had one in the group and call its wake-up closure once;
//!    a failed commit sends [`Completion::Failed`] instead, and those acks are never sent.
//!
//! **Full policy.** The submission channel is bounded
//! ([`PersistOptions::channel_capacity`] batches), and so are the bytes submitted and
//! not yet committed ([`PersistOptions::queue_bytes`], weighed by [`Intent::weight`];
//! a group counts until its commit is done). `try_submit` never blocks: when either is
//! full it hands the batch and ticket back ([`Rejected`]); the worker keeps them,
//! stops decoding PUBLISHes that may need the disk (their acks are parked anyway) and
//! submits again on its next iteration. The completion channels are
//! unbounded: the persister must never wait on a worker, and each completion answers a
//! submission that the bounded channel already admitted.
//!
//! **Degraded state.** A failed commit (full disk, failing fsync, I/O error) sets
//! [`PersistLink::is_degraded`]; the database is reopened before the next group (redb
//! refuses all work after an I/O error until then) and the reference counts are
//! rebuilt from it (a failed commit may have reached the disk after all); the first
//! commit that succeeds clears the flag. While degraded, workers refuse QoS 1/2
//! publishes that would need the disk (v5 0x97, 3.x no PUBACK; `worker/authz.rs`) and
//! keep serving the rest, so few groups come; with none submitted the persister
//! commits a small probe record every [`PersistOptions::probe_interval`] to learn
//! that the disk takes writes again.
//!
//! **Shutdown.** Dropping the [`PersisterHandle`] (or [`PersisterHandle::shutdown`])
//! commits what was submitted before it and joins the thread; stop the workers first.
//!
//! **Compaction.** redb reuses freed pages but never shrinks the file, so after a burst
//! (a million messages queued for offline sessions, then delivered) the disk space
//! would stay taken where live pages sit behind the freed ones (redb trims only a
//! free tail). Every [`PersistOptions::compact_check`], if that period was quiet (at
//! most [`PersistOptions::compact_quiet_records`] records written: `$SYS` and a few
//! sessions, not a stream) and more than half of a file of at least
//! [`PersistOptions::compact_min_bytes`] is free, the persister compacts it. Only acks
//! submitted during that wait for it; the event loops never do.
//!
//! What is not here: deciding what must be written (the workers' and sessions' job),
//! encoding MQTT properties (callers pass them as bytes).

mod net;
mod record;
mod table;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use redb::{Database, Durability};
use shoal_core::{PacketId, QoS, TopicName};

pub use record::{
    CorruptRecord, InflightRecord, Intent, MessageId, SessionRecord, StoredMessage,
    StoredSubscription, StoredWill,
};
use table::{Counts, DbError, FormatCheck, Tables};

/// Name of the database file inside the data directory.
pub const DB_FILE_NAME: &str = "shoal.redb";

/// Wakes the worker that owns a [`PersistLink`] (typically `mio::Waker::wake`).
pub type WakeFn = Arc<dyn Fn() + Send + Sync>;

/// Chosen by the submitter to recognise its batch in a [`Completion`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// The outcome of submitted batches, one per commit and worker.
#[derive(Debug, Clone)]
pub enum Completion {
    /// These batches are on disk: their acks may be sent.
    Committed(Vec<Ticket>),
    /// These batches are not on disk (the whole group was rolled back): never ack them.
    Failed(Vec<Ticket>, Arc<PersistError>),
}

/// Why a store could not be opened, or a commit failed.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The data directory could not be created.
    #[error("cannot create data directory {dir}")]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The database file could not be opened: not a redb file, damaged, or locked by
    /// another process.
    #[error("cannot open data file {path} (damaged, not a Shoal data file, or in use)")]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: redb::DatabaseError,
    },
    /// The file is a redb database, but not one Shoal wrote.
    #[error("{path} is a database that Shoal did not write; refusing to touch it")]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a Shoal with another store layout.
    #[error("{path} has store format {found}, this Shoal reads format {expected}")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// Format found.
        found: u64,
        /// Format this build reads.
        expected: u64,
    },
    /// A record in the file could not be decoded.
    #[error("{path} holds a corrupt record")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Which record and why.
        #[source]
        source: CorruptRecord,
    },
    /// Reading or writing failed (I/O error, full disk, failing fsync).
    #[error("database error")]
    Database(#[source] Box<redb::Error>),
    /// The storage engine panicked on the file's contents (damaged file) while opening,
    /// reading or committing.
    #[error("{path} could not be used (the storage engine failed on its contents)")]
    EnginePanicked {
        /// The file.
        path: PathBuf,
    },
    /// A commit failed on purpose ([`FaultInjector`]).
    #[error("injected commit failure")]
    Injected,
    /// The persister thread could not be started.
    #[error("cannot start the persister thread")]
    Spawn(#[source] std::io::Error),
    /// The persister stopped before this batch was committed.
    #[error("the persister has stopped")]
    Stopped,
}

impl From<DbError> for PersistError {
    fn from(e: DbError) -> Self {
        PersistError::Database(e.0)
    }
}

/// Default of [`PersistOptions::queue_bytes`] (config `limits.max_store_queue_bytes`).
pub const DEFAULT_QUEUE_BYTES: u64 = 64 * 1024 * 1024;

/// Tuning of the persister.
#[derive(Clone)]
pub struct PersistOptions {
    /// Submitted batches the channel holds before [`PersistLink::try_submit`] refuses.
    pub channel_capacity: usize,
    /// Bytes of submitted records ([`Intent::weight`]) not yet committed before
    /// [`PersistLink::try_submit`] refuses: the channel, and the group being
    /// written, hold at most this much (or one batch, when it alone is larger).
    pub queue_bytes: u64,
    /// Most intents in one transaction: bounds the memory and latency of one group.
    pub max_group_intents: usize,
    /// redb page cache size in bytes.
    pub cache_bytes: usize,
    /// Fault injection for tests; `None` in production.
    pub faults: Option<Arc<FaultInjector>>,
    /// Where the persister publishes its commit statistics after each commit.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// While degraded with nothing submitted, how often to try a small commit to learn
    /// that the disk takes writes again (workers refuse disk work meanwhile, so no
    /// group would come to find out).
    pub probe_interval: Duration,
    /// How often the file is considered for compaction; `None` never compacts.
    pub compact_check: Option<Duration>,
    /// Most records written since the last look for the period to count as quiet
    /// enough to compact in.
    pub compact_quiet_records: u64,
    /// Files smaller than this are never compacted.
    pub compact_min_bytes: u64,
}

impl Default for PersistOptions {
    fn default() -> Self {
        Self {
            channel_capacity: 1024,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_group_intents: 64 * 1024,
            cache_bytes: 64 * 1024 * 1024,
            faults: None,
            metrics: None,
            probe_interval: Duration::from_secs(1),
            compact_check: Some(Duration::from_secs(30)),
            compact_quiet_records: 10_000,
            compact_min_bytes: 64 << 20,
        }
    }
}

impl std::fmt::Debug for PersistOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistOptions")
            .field("channel_capacity", &self.channel_capacity)
            .field("queue_bytes", &self.queue_bytes)
            .field("max_group_intents", &self.max_group_intents)
            .field("cache_bytes", &self.cache_bytes)
            .field("faults", &self.faults.is_some())
            .field("metrics", &self.metrics.is_some())
            .field("probe_interval", &self.probe_interval)
            .field("compact_check", &self.compact_check)
            .field("compact_quiet_records", &self.compact_quiet_records)
            .field("compact_min_bytes", &self.compact_min_bytes)
            .finish()
    }
}

/// Makes commits fail or wait, to test what callers do about it.
#[derive(Default)]
pub struct FaultInjector {
    /// The next this-many commits fail like an I/O error would: the transaction is
    /// aborted, nothing is written, and the file is reopened before the next group.
    pub fail_next_commits: AtomicU32,
    /// Called on the persister thread after the group is applied, just before commit.
    pub before_commit: Option<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultInjector")
            .field("fail_next_commits", &self.fail_next_commits)
            .finish_non_exhaustive()
    }
}

impl FaultInjector {
    fn take_failure(&self) -> bool {
        self.fail_next_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// A session as recovered, with its queue, in-flight window and QoS 2 marks.
#[derive(Debug, Clone)]
pub struct RecoveredSession {
    /// Client id.
    pub client_id: String,
    /// The record (`disconnected_at` is set: a session connected at the crash counts as
    /// disconnected at recovery).
    pub record: SessionRecord,
    /// The session was connected at the crash: its queued messages may have been sent
    /// (a message goes out before its sending is on disk).
    pub connected_at_crash: bool,
    /// Queued messages in `seq` order; a body shared by several queues is one `Arc`.
    pub queue: Vec<(u64, Arc<StoredMessage>)>,
    /// Outgoing in-flight state by packet id, in packet id order.
    pub inflight: Vec<(PacketId, RecoveredInflight)>,
    /// Incoming QoS 2 packet ids received and not yet released.
    pub qos2_received: Vec<PacketId>,
}

/// In-flight state of one outgoing packet id, as recovered.
#[derive(Debug, Clone)]
pub enum RecoveredInflight {
    /// PUBLISH sent, not acknowledged: resend with DUP.
    Publish {
        /// The message.
        message: Arc<StoredMessage>,
        /// QoS it was delivered with.
        qos: QoS,
    },
    /// PUBREL sent, waiting for PUBCOMP: resend PUBREL.
    Released,
}

/// What recovery found and dropped.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Time from opening the file to the end of the cleanup commit.
    pub duration: Duration,
    /// Sessions recovered.
    pub sessions: usize,
    /// Queue entries recovered.
    pub queued: usize,
    /// Distinct message bodies recovered.
    pub messages: usize,
    /// Retained messages recovered.
    pub retained: usize,
    /// Expired message bodies dropped (with every reference to them).
    pub expired_messages: u64,
    /// Expired sessions dropped (with everything they held).
    pub expired_sessions: u64,
    /// Queue, in-flight and QoS 2 entries of clients without a session, dropped.
    pub orphans: u64,
}

/// Everything the store held at start, expired state already dropped.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// Persistent sessions.
    pub sessions: Vec<RecoveredSession>,
    /// Retained messages by topic.
    pub retained: Vec<(TopicName, Arc<StoredMessage>)>,
    /// Wills of sessions that expired while the broker was down, by client id: the
    /// end of the session owes them [MQTT-3.1.3-9], so the broker publishes them at
    /// start. (The sessions themselves are gone from the store.)
    pub ended_wills: Vec<(String, StoredWill)>,
    /// What recovery did and how long it took.
    pub report: RecoveryReport,
}

/// Counters of the persister, readable from any thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PersistStats {
    /// Transactions committed.
    pub commits: u64,
    /// Submitted batches committed.
    pub batches: u64,
    /// Intents committed.
    pub intents: u64,
    /// Time spent in committed transactions (applying the intents and the fsync),
    /// nanoseconds.
    pub commit_nanos: u64,
    /// Commits that failed.
    pub failed_commits: u64,
    /// References to messages the store did not hold, skipped.
    pub dangling: u64,
    /// Intents of committed groups not written because a later intent of the same
    /// group undid them (a body, its queue or in-flight entry, acknowledged before the
    /// commit).
    pub skipped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    batches: AtomicU64,
    intents: AtomicU64,
    commit_nanos: AtomicU64,
    failed_commits: AtomicU64,
    dangling: AtomicU64,
    skipped: AtomicU64,
}

/// State shared by the handle, the links and the persister thread.
#[derive(Debug)]
struct Shared {
    degraded: AtomicBool,
    next_message_id: AtomicU64,
    counters: Counters,
    /// Weight of the batches submitted and not yet committed: added by
    /// [`PersistLink::try_submit`] when it admits one, taken off once its group is
    /// done. The metrics' gauge, when there are metrics.
    queue: Arc<crate::metrics::StoreQueue>,
    /// Most weight admitted while something is queued ([`PersistOptions::queue_bytes`]).
    queue_limit: u64,
}

impl Shared {
    fn stats(&self) -> PersistStats {
        let c = &self.counters;
        PersistStats {
            commits: c.commits.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            intents: c.intents.load(Ordering::Relaxed),
            commit_nanos: c.commit_nanos.load(Ordering::Relaxed),
            failed_commits: c.failed_commits.load(Ordering::Relaxed),
            dangling: c.dangling.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
        }
    }
}

/// Where a link's completions go.
struct LinkSink {
    completions: Sender<Completion>,
    wake: WakeFn,
}

enum Command {
    /// `weight`: the batch's [`Intent::weight`] sum, counted in [`Shared::queue`].
    Submit {
        sink: Arc<LinkSink>,
        batch: Vec<Intent>,
        ticket: Ticket,
        weight: u64,
    },
    Stop,
}

/// Starts the durable store.
#[derive(Debug)]
pub struct Persister;

impl Persister {
    /// Opens or creates the store in `dir`, recovers it (dropping expired sessions and
    /// messages, and writing that down) and spawns the persister thread.
    ///
    /// # Errors
    /// [`PersistError::CreateDir`] when `dir` cannot be created; [`PersistError::Open`],
    /// [`PersistError::Foreign`], [`PersistError::UnsupportedFormat`],
    /// [`PersistError::Corrupt`] or [`PersistError::EnginePanicked`] when the file is
    /// not a sound Shoal store; [`PersistError::Database`] on I/O errors;
    /// [`PersistError::Spawn`] when the thread cannot start.
    pub fn start(
        dir: &Path,
        options: PersistOptions,
    ) -> Result<(PersisterHandle, Recovered), PersistError> {
        let started = Instant::now();
        std::fs::create_dir_all(dir)
            .map_err(|source| PersistError::CreateDir { dir: dir.to_owned(), source })?;
        let path = dir.join(DB_FILE_NAME);
        // redb validates what it reads, but the contents come from disk, and redb 2.6
        // asserts on some damaged files (a truncated one, for instance): that panic must
        // become an error, never take the broker down. (Needs `panic = "unwind"`, which
        // the workspace profiles set.)
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let db = open_db(&path, &options)?;
            let loaded = recover(&db, &path)?;
            Ok::<_, PersistError>((db, loaded))
        }));
        let (db, loaded) = match opened {
            Ok(r) => r?,
            Err(_) => return Err(PersistError::EnginePanicked { path }),
        };
        let queued = loaded.sessions.iter().map(|s| s.queue.len()).sum();
        let report = RecoveryReport {
            duration: started.elapsed(),
            sessions: loaded.sessions.len(),
            queued,
            messages: loaded.messages,
            retained: loaded.retained.len(),
            expired_messages: loaded.expired_messages,
            expired_sessions: loaded.expired_sessions,
            orphans: loaded.orphans,
        };
        log::info!(
            "store {}: recovered {} sessions, {} queued messages, {} retained in {:?} \
             (dropped {} expired messages, {} expired sessions)",
            path.display(),
            report.sessions,
            report.queued,
            report.retained,
            report.duration,
            report.expired_messages,
            report.expired_sessions,
        );
        let first_id = loaded.max_message_id.map_or(1, |m| m.saturating_add(1));
        let shared = Arc::new(Shared {
            degraded: AtomicBool::new(false),
            next_message_id: AtomicU64::new(first_id),
            counters: Counters::default(),
            queue: options.metrics.as_ref().map(|m| m.store_queue()).unwrap_or_default(),
            queue_limit: options.queue_bytes,
        });
        let (tx, rx) = crossbeam_channel::bounded(options.channel_capacity.max(1));
        let mut worker = Writer {
            db: Some(db),
            path,
            options,
            shared: shared.clone(),
            counts: loaded.counts,
            next_compact_check: None,
            records_since_check: 0,
        };
        let thread = std::thread::Builder::new()
            .name("shoal-persister".into())
            .spawn(move || worker.run(&rx))
            .map_err(PersistError::Spawn)?;
        let handle = PersisterHandle { tx, shared, thread: Some(thread) };
        let recovered = Recovered {
            sessions: loaded.sessions,
            retained: loaded.retained,
            ended_wills: loaded.ended_wills,
            report,
        };
        Ok((handle, recovered))
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn open_db(path: &Path, options: &PersistOptions) -> Result<Database, PersistError> {
    let db = Database::builder()
        .set_cache_size(options.cache_bytes)
        .create(path)
        .map_err(|source| PersistError::Open { path: path.to_owned(), source })?;
    let txn = db.begin_write().map_err(DbError::from)?;
    match table::check_format(&txn)? {
        FormatCheck::Ok => {}
        FormatCheck::Foreign => return Err(PersistError::Foreign { path: path.to_owned() }),
        FormatCheck::Unsupported(found) => {
            return Err(PersistError::UnsupportedFormat {
                path: path.to_owned(),
                found,
                expected: table::STORE_FORMAT,
            })
        }
    }
    // Create every table so that readers can open them.
    drop(Tables::open(&txn, &Counts::default())?);
    txn.commit().map_err(DbError::from)?;
    Ok(db)
}

fn recover_error(e: table::RecoverError, path: &Path) -> PersistError {
    match e {
        table::RecoverError::Db(e) => PersistError::from(e),
        table::RecoverError::Corrupt(source) => {
            PersistError::Corrupt { path: path.to_owned(), source: *source }
        }
    }
}

fn recover(db: &Database, path: &Path) -> Result<table::Loaded, PersistError> {
    let read = db.begin_read().map_err(DbError::from)?;
    let loaded = table::load(&read, now_unix()).map_err(|e| recover_error(e, path))?;
    drop(read);
    if !loaded.cleanup.is_empty() {
        let mut txn = db.begin_write().map_err(DbError::from)?;
        txn.set_durability(Durability::Immediate);
        loaded.cleanup.apply(&txn)?;
        txn.commit().map_err(DbError::from)?;
    }
    Ok(loaded)
}

/// Owns the persister thread. Dropping it commits what was submitted, then joins.
#[derive(Debug)]
pub struct PersisterHandle {
    tx: Sender<Command>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl PersisterHandle {
    /// A submission link for one worker: its completions arrive on the link, and
    /// `wake` is called (on the persister thread) after each one.
    pub fn link(&self, wake: WakeFn) -> PersistLink {
        let (completions_tx, completions) = crossbeam_channel::unbounded();
        PersistLink {
            tx: self.tx.clone(),
            sink: Arc::new(LinkSink { completions: completions_tx, wake }),
            completions,
            shared: self.shared.clone(),
        }
    }

    /// True while the last commit failed.
    pub fn is_degraded(&self) -> bool {
        self.shared.degraded.load(Ordering::Acquire)
    }

    /// The persister's counters.
    pub fn stats(&self) -> PersistStats {
        self.shared.stats()
    }

    /// Commits what was submitted so far, stops the thread and joins it.
    ///
    /// # Errors
    /// [`PersistError::Stopped`] when the thread had panicked (a bug).
    pub fn shutdown(mut self) -> Result<(), PersistError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), PersistError> {
        let Some(thread) = self.thread.take() else { return Ok(()) };
        // Blocking is fine here: shutdown, and the thread drains the channel.
        let _ = self.tx.send(Command::Stop);
        thread.join().map_err(|_| PersistError::Stopped)
    }
}

impl Drop for PersisterHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::error!("persister: {e}");
        }
    }
}

/// One worker's way to the persister: submit batches, receive completions.
pub struct PersistLink {
    tx: Sender<Command>,
    sink: Arc<LinkSink>,
    completions: Receiver<Completion>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PersistLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistLink").finish_non_exhaustive()
    }
}

/// Why [`PersistLink::try_submit`] handed a batch back.
#[derive(Debug)]
pub struct Rejected {
    /// The batch, to submit again.
    pub batch: Vec<Intent>,
    /// Its ticket.
    pub ticket: Ticket,
    /// True when the persister has stopped for good; false when the channel was full.
    pub closed: bool,
}

impl PersistLink {
    /// Queues `batch` for the next group commit without blocking; its outcome arrives
    /// later as a [`Completion`] carrying `ticket`.
    ///
    /// The channel is full when it holds [`PersistOptions::channel_capacity`] batches,
    /// or when this batch's weight would take what was submitted and is not committed
    /// yet past [`PersistOptions::queue_bytes`]. A batch is always admitted when
    /// nothing is queued, however heavy, so that one larger than the bound still goes.
    ///
    /// # Errors
    /// [`Rejected`] with the batch when the channel is full (keep it, stop
    /// acknowledging, retry next iteration) or the persister has stopped.
    pub fn try_submit(&self, batch: Vec<Intent>, ticket: Ticket) -> Result<(), Rejected> {
        let weight = batch.iter().map(Intent::weight).fold(0, u64::saturating_add);
        let limit = self.shared.queue_limit;
        let queue = &self.shared.queue;
        let admitted = queue.bytes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
            let total = q.saturating_add(weight);
            (q == 0 || total <= limit).then_some(total)
        });
        let Ok(before) = admitted else {
            return Err(Rejected { batch, ticket, closed: false });
        };
        queue.peak.fetch_max(before.saturating_add(weight), Ordering::Relaxed);
        let cmd = Command::Submit { sink: self.sink.clone(), batch, ticket, weight };
        let refused = match self.tx.try_send(cmd) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(cmd)) => rejected(cmd, false),
            Err(TrySendError::Disconnected(cmd)) => rejected(cmd, true),
        };
        queue.bytes.fetch_sub(weight, Ordering::AcqRel);
        Err(refused)
    }

    /// The next completion, if one arrived.
    pub fn poll_completion(&self) -> Option<Completion> {
        self.completions.try_recv().ok()
    }

    /// A fresh message id, unique for the life of the data directory.
    pub fn next_message_id(&self) -> MessageId {
        MessageId(self.shared.next_message_id.fetch_add(1, Ordering::Relaxed))
    }

    /// True while the last commit failed: stop acknowledging work that needs the disk.
    pub fn is_degraded(&self) -> bool {
        self.shared.degraded.load(Ordering::Acquire)
    }
}

fn rejected(cmd: Command, closed: bool) -> Rejected {
    match cmd {
        Command::Submit { batch, ticket, .. } => Rejected { batch, ticket, closed },
        Command::Stop => Rejected { batch: Vec::new(), ticket: Ticket(0), closed },
    }
}

/// The persister thread's state.
struct Writer {
    /// `None` after an I/O error, until it is reopened.
    db: Option<Database>,
    path: PathBuf,
    options: PersistOptions,
    shared: Arc<Shared>,
    /// References to each stored body, as committed (see `table.rs`).
    counts: Counts,
    /// When to look at compaction next.
    next_compact_check: Option<Instant>,
    /// Records written since the last look.
    records_since_check: u64,
}

struct Group {
    items: Vec<(Arc<LinkSink>, Vec<Intent>, Ticket)>,
    intents: usize,
    /// Sum of the batches' weights, taken off [`Shared::queue`] once the group is done.
    weight: u64,
}

impl Writer {
    fn run(&mut self, rx: &Receiver<Command>) {
        let mut stopping = false;
        while !stopping {
            let degraded = self.shared.degraded.load(Ordering::Acquire);
            let check = self.compact_check_at();
            if !degraded && check.is_some_and(|t| t <= Instant::now()) {
                self.compact_check_done();
                continue;
            }
            let wait = match (degraded, check) {
                (true, _) => Some(self.options.probe_interval),
                (false, Some(t)) => Some(t.saturating_duration_since(Instant::now())),
                (false, None) => None,
            };
            let first = match wait {
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(cmd) => cmd,
                    Err(RecvTimeoutError::Timeout) => {
                        if degraded {
                            self.probe();
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => {
                    let Ok(cmd) = rx.recv() else { break };
                    cmd
                }
            };
            let mut group = Group { items: Vec::new(), intents: 0, weight: 0 };
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Stop => {
                        stopping = true;
                        break;
                    }
                    Command::Submit { sink, batch, ticket, weight } => {
                        group.intents += batch.len();
                        group.weight = group.weight.saturating_add(weight);
                        group.items.push((sink, batch, ticket));
                    }
                }
                if group.intents < self.options.max_group_intents {
                    next = rx.try_recv().ok();
                }
            }
            if !group.items.is_empty() {
                let outcome = self.commit(&group);
                self.report(group, outcome);
            }
        }
        // Whatever slipped in after Stop is answered, so that no ticket waits for ever.
        let mut late = Group { items: Vec::new(), intents: 0, weight: 0 };
        while let Ok(cmd) = rx.try_recv() {
            if let Command::Submit { sink, batch, ticket, weight } = cmd {
                late.weight = late.weight.saturating_add(weight);
                late.items.push((sink, batch, ticket));
            }
        }
        if !late.items.is_empty() {
            self.report(late, Err(PersistError::Stopped));
        }
        let s = self.shared.stats();
        log::info!(
            "store {}: {} commits, {} records submitted, {} of them undone within their \
             group and not written",
            self.path.display(),
            s.commits,
            s.intents,
            s.skipped
        );
    }

    fn commit(&mut self, group: &Group) -> Result<(), PersistError> {
        // A panic in the storage engine (it can assert on damaged pages) fails this
        // group like an I/O error would, instead of killing the thread and leaving every
        // later ticket unanswered.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if self.db.is_none() {
                self.reopen()?;
            }
            self.try_commit(group)
        }))
        .unwrap_or_else(|_| Err(PersistError::EnginePanicked { path: self.path.clone() }));
        if let Err(e) = &result {
            self.close_if_broken(e);
        }
        result
    }

    /// When the next look at compaction is due (`None`: never).
    fn compact_check_at(&mut self) -> Option<Instant> {
        let every = self.options.compact_check?;
        Some(*self.next_compact_check.get_or_insert_with(|| Instant::now() + every))
    }

    /// The look at compaction: compacts if the period since the last one was quiet.
    fn compact_check_done(&mut self) {
        if self.records_since_check <= self.options.compact_quiet_records {
            self.maybe_compact();
        }
        self.records_since_check = 0;
        self.next_compact_check = self.options.compact_check.map(|every| Instant::now() + every);
    }

    /// If more than half of a file of at least [`PersistOptions::compact_min_bytes`] is
    /// free pages (a burst of queued messages came and went), compacts it so the disk
    /// space goes back. The event loops do not wait for this; acks submitted meanwhile
    /// wait until it ends.
    fn maybe_compact(&mut self) {
        let Some(db) = self.db.as_mut() else { return };
        let file_bytes = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if file_bytes < self.options.compact_min_bytes {
            return;
        }
        let used = db.begin_write().map_err(DbError::from).and_then(|txn| {
            let stats = txn.stats().map_err(DbError::from);
            txn.abort().map_err(DbError::from)?;
            stats
        });
        let used = match used {
            Ok(stats) => stats.allocated_pages().saturating_mul(stats.page_size() as u64),
            Err(e) => {
                log::warn!("store {}: cannot read its statistics: {e:?}", self.path.display());
                return;
            }
        };
        if used.saturating_mul(2) > file_bytes {
            log::debug!(
                "store {}: {} MiB, {} MiB in use: not compacting",
                self.path.display(),
                file_bytes >> 20,
                used >> 20
            );
            return;
        }
        let started = std::time::Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| db.compact()));
        let after = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        match result {
            Ok(Ok(_)) => log::info!(
                "store {}: compacted from {} to {} MiB in {} ms ({} MiB in use)",
                self.path.display(),
                file_bytes >> 20,
                after >> 20,
                started.elapsed().as_millis(),
                used >> 20
            ),
            Ok(Err(e)) => {
                log::warn!("store {}: compaction failed: {e}", self.path.display());
                self.db = None;
            }
            Err(_) => {
                log::warn!("store {}: compaction panicked; reopening", self.path.display());
                self.db = None;
            }
        }
    }

    /// While degraded and idle: commits one small record. Success clears the degraded
    /// flag, so workers take work that needs the disk again; failure leaves it set.
    fn probe(&mut self) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if self.db.is_none() {
                self.reopen()?;
            }
            let db = self.db.as_ref().ok_or(PersistError::Stopped)?;
            let mut txn = db.begin_write().map_err(DbError::from)?;
            txn.set_durability(Durability::Immediate);
            table::write_probe(&txn, now_unix())?;
            if self.options.faults.as_ref().is_some_and(|f| f.take_failure()) {
                txn.abort().map_err(DbError::from)?;
                return Err(PersistError::Injected);
            }
            txn.commit().map_err(DbError::from)?;
            Ok(())
        }))
        .unwrap_or_else(|_| Err(PersistError::EnginePanicked { path: self.path.clone() }));
        match result {
            Ok(()) => {
                self.shared.degraded.store(false, Ordering::Release);
                log::warn!(
                    "store {}: writable again; taking QoS 1/2 work that needs the disk",
                    self.path.display()
                );
                self.publish_metrics();
            }
            Err(e) => {
                self.close_if_broken(&e);
                log::debug!("store {}: still not writable: {e}", self.path.display());
            }
        }
    }

    /// Hands the commit statistics and the degraded state to the metrics.
    fn publish_metrics(&self) {
        if let Some(m) = &self.options.metrics {
            let s = self.shared.stats();
            m.publish_store(&crate::metrics::StoreStats {
                commits: s.commits,
                commit_nanos: s.commit_nanos,
                records: s.intents.saturating_sub(s.skipped),
                failed_commits: s.failed_commits,
                degraded: self.shared.degraded.load(Ordering::Acquire),
                ..crate::metrics::StoreStats::default()
            });
        }
    }

    /// After a failed write: redb refuses all work after an I/O error (or a panic)
    /// until the file is reopened, so the handle goes and the next use reopens it.
    fn close_if_broken(&mut self, e: &PersistError) {
        if matches!(
            e,
            PersistError::Database(_)
                | PersistError::EnginePanicked { .. }
                | PersistError::Injected
        ) {
            self.db = None;
        }
    }

    /// Reopens the file after an error and recounts references from it: the failed
    /// commit may have reached the disk after all.
    fn reopen(&mut self) -> Result<(), PersistError> {
        let db = open_db(&self.path, &self.options)?;
        let read = db.begin_read().map_err(DbError::from)?;
        self.counts = table::recount(&read).map_err(|e| recover_error(e, &self.path))?;
        drop(read);
        self.db = Some(db);
        Ok(())
    }

    fn try_commit(&mut self, group: &Group) -> Result<(), PersistError> {
        let started = std::time::Instant::now();
        let db = self.db.as_ref().ok_or(PersistError::Stopped)?;
        let mut txn = db.begin_write().map_err(DbError::from)?;
        txn.set_durability(Durability::Immediate);
        let skips = net::cancelled(group.items.iter().map(|(_, b, _)| b.as_slice()), group.intents);
        let (delta, dangling) = {
            let mut tables = Tables::open(&txn, &self.counts)?;
            let mut pos = 0;
            for (_, batch, _) in &group.items {
                for intent in batch {
                    if !skips.is_skipped(pos) {
                        tables.apply(intent)?;
                    }
                    pos += 1;
                }
            }
            tables.finish()?
        };
        if let Some(faults) = &self.options.faults {
            if let Some(hook) = &faults.before_commit {
                hook();
            }
            if faults.take_failure() {
                txn.abort().map_err(DbError::from)?;
                return Err(PersistError::Injected);
            }
        }
        txn.commit().map_err(DbError::from)?;
        table::merge_counts(&mut self.counts, delta);
        let c = &self.shared.counters;
        c.dangling.fetch_add(dangling, Ordering::Relaxed);
        c.commits.fetch_add(1, Ordering::Relaxed);
        c.batches.fetch_add(group.items.len() as u64, Ordering::Relaxed);
        c.intents.fetch_add(group.intents as u64, Ordering::Relaxed);
        c.skipped.fetch_add(skips.count as u64, Ordering::Relaxed);
        self.records_since_check = self
            .records_since_check
            .saturating_add(group.intents.saturating_sub(skips.count) as u64);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        c.commit_nanos.fetch_add(nanos, Ordering::Relaxed);
        Ok(())
    }

    /// Sends each link its tickets (one completion and one wake-up per link).
    fn report(&mut self, group: Group, outcome: Result<(), PersistError>) {
        let error = match outcome {
            Ok(()) => {
                if self.shared.degraded.swap(false, Ordering::AcqRel) {
                    log::warn!(
                        "store {}: writable again; taking QoS 1/2 work that needs the disk",
                        self.path.display()
                    );
                }
                self.publish_metrics();
                None
            }
            Err(e) => {
                if self.shared.degraded.swap(true, Ordering::AcqRel) {
                    log::debug!("store {}: commit failed again: {e}", self.path.display());
                } else {
                    log::error!(
                        "store {}: commit failed: {e}; refusing QoS 1/2 work that needs \
                         the disk until a write succeeds",
                        self.path.display()
                    );
                }
                self.shared.counters.failed_commits.fetch_add(1, Ordering::Relaxed);
                self.publish_metrics();
                Some(Arc::new(e))
            }
        };
        // The group's records leave memory here: room for the next submissions before
        // the completions wake the workers that wait for it.
        let weight = group.weight;
        let mut per_link: Vec<(Arc<LinkSink>, Vec<Ticket>)> = Vec::new();
        for (sink, _, ticket) in group.items {
            match per_link.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &sink)) {
                Some((_, tickets)) => tickets.push(ticket),
                None => per_link.push((sink, vec![ticket])),
            }
        }
        self.shared.queue.bytes.fetch_sub(weight, Ordering::AcqRel);
        for (sink, tickets) in per_link {
            let completion = match &error {
                None => Completion::Committed(tickets),
                Some(e) => Completion::Failed(tickets, e.clone()),
            };
            // A dropped link (its worker is gone) has nobody to tell.
            if sink.completions.send(completion).is_ok() {
                (sink.wake)();
            }
        }
    }
}
