//! Broker metrics: per-worker counters, their periodic publication, the aggregated
//! snapshot, Mosquitto-style load averages, the Prometheus text exposition and the
//! `$SYS` topic values.
//!
//! # How counting works
//! Each worker owns a [`WorkerCounters`] of plain `u64`s and bumps it on the hot path
//! (an add, no atomics, no shared cache line). Once a second, on its timer tick, the
//! worker copies its counters and its [`WorkerGauges`] into its own slot of the shared
//! [`Metrics`] with [`Metrics::publish_worker`]. A slot is a `parking_lot::Mutex`:
//! the lock is taken once a second by its worker and briefly by a reader, so it is
//! never contended in practice, and unlike one atomic per counter it gives readers a
//! consistent copy (messages and bytes from the same instant) and costs one
//! uncontended lock plus a ~300-byte copy per second. Readers (the admin listener, the
//! `$SYS` publisher) call [`Metrics::snapshot`], which sums every slot into a
//! [`MetricsSnapshot`]. Values are therefore up to one tick old.
//!
//! Nothing here reads the clock: [`Metrics::snapshot`] and [`LoadTracker::update`]
//! take `now: Instant`, so the load averages are tested with an injected clock.
//!
//! Neighbours: the HTTP listener that serves [`render_prometheus`] and the JSON stats
//! is `admin/`; the workers that count live in `worker/`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use shoal_core::session::{DropReason, QueueDrops};
use shoal_core::{ProtocolVersion, QoS};

/// Metric names, in one place so the dashboard and alert rules can be checked
/// against the code. Counters end in `_total` as the exposition format expects.
pub mod name {
    /// Build information; value 1, version in a label.
    pub const BUILD_INFO: &str = "shoal_build_info";
    /// Seconds since the broker started.
    pub const UPTIME_SECONDS: &str = "shoal_uptime_seconds";
    /// PUBLISH packets received from clients, by QoS.
    pub const PUBLISH_RECEIVED: &str = "shoal_publish_received_total";
    /// PUBLISH packets sent to clients, by QoS.
    pub const PUBLISH_SENT: &str = "shoal_publish_sent_total";
    /// MQTT control packets of any type received.
    pub const PACKETS_RECEIVED: &str = "shoal_packets_received_total";
    /// MQTT control packets of any type sent.
    pub const PACKETS_SENT: &str = "shoal_packets_sent_total";
    /// Bytes read from client sockets.
    pub const BYTES_RECEIVED: &str = "shoal_bytes_received_total";
    /// Bytes written to client sockets.
    pub const BYTES_SENT: &str = "shoal_bytes_sent_total";
    /// Messages dropped, by cause.
    pub const DROPPED: &str = "shoal_messages_dropped_total";
    /// Sockets accepted.
    pub const SOCKETS_ACCEPTED: &str = "shoal_sockets_accepted_total";
    /// Successful CONNECTs (CONNACK with success).
    pub const CONNECTS: &str = "shoal_connects_total";
    /// Client connections ended, for any reason.
    pub const DISCONNECTS: &str = "shoal_disconnects_total";
    /// CONNECTs refused for bad credentials or not authorised.
    pub const AUTH_FAILURES: &str = "shoal_auth_failures_total";
    /// TLS handshakes that failed.
    pub const TLS_HANDSHAKE_FAILURES: &str = "shoal_tls_handshake_failures_total";
    /// Time each worker's event loop spent handling events (not waiting in poll).
    pub const WORKER_BUSY_SECONDS: &str = "shoal_worker_busy_seconds_total";
    /// Open client connections, by listener and protocol version.
    pub const CONNECTIONS: &str = "shoal_connections";
    /// Sessions, by state (online / offline).
    pub const SESSIONS: &str = "shoal_sessions";
    /// Subscriptions over all sessions.
    pub const SUBSCRIPTIONS: &str = "shoal_subscriptions";
    /// Messages waiting in session queues.
    pub const QUEUED_MESSAGES: &str = "shoal_queued_messages";
    /// What the messages in session queues weigh (`limits.max_queued_bytes`).
    pub const QUEUED_BYTES: &str = "shoal_queued_bytes";
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub const INFLIGHT_MESSAGES: &str = "shoal_inflight_messages";
    /// Retained messages held.
    pub const RETAINED_MESSAGES: &str = "shoal_retained_messages";
    /// Durable-store commit latency (summary: `_sum`, `_count`).
    pub const STORE_COMMIT_SECONDS: &str = "shoal_store_commit_seconds";
    /// Records per durable-store commit (summary: `_sum`, `_count`).
    pub const STORE_COMMIT_BATCH: &str = "shoal_store_commit_batch_records";
    /// Durable-store commits that failed.
    pub const STORE_FAILED_COMMITS: &str = "shoal_store_failed_commits_total";
    /// 1 while the durable store cannot write.
    pub const STORE_DEGRADED: &str = "shoal_store_degraded";
    /// Bytes of records submitted to the durable store and not yet committed.
    pub const STORE_QUEUED_BYTES: &str = "shoal_store_queued_bytes";
    /// The most [`STORE_QUEUED_BYTES`] has been since start.
    pub const STORE_QUEUED_BYTES_PEAK: &str = "shoal_store_queued_bytes_peak";
}

/// Why a message was dropped; one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// A session queue or a QoS 0 write buffer was full.
    QueueFull,
    /// The message expired (MQTT 5 Message Expiry Interval) before it was sent.
    Expired,
    /// Larger than the receiver's Maximum Packet Size.
    TooLarge,
    /// Refused by the ACL.
    Acl,
    /// A QoS 1/2 publish refused because it needed the durable store while the store
    /// could not write (full disk, I/O error).
    StoreUnavailable,
}

impl DropCause {
    /// Every cause, in exposition order.
    pub const ALL: [DropCause; 5] = [
        DropCause::QueueFull,
        DropCause::Expired,
        DropCause::TooLarge,
        DropCause::Acl,
        DropCause::StoreUnavailable,
    ];

    /// The `cause` label value.
    pub fn label(self) -> &'static str {
        match self {
            DropCause::QueueFull => "queue_full",
            DropCause::Expired => "expired",
            DropCause::TooLarge => "too_large",
            DropCause::Acl => "acl",
            DropCause::StoreUnavailable => "store_unavailable",
        }
    }
}

impl From<DropReason> for DropCause {
    fn from(reason: DropReason) -> Self {
        match reason {
            DropReason::QueueFull => DropCause::QueueFull,
            DropReason::Expired => DropCause::Expired,
            DropReason::TooLarge => DropCause::TooLarge,
        }
    }
}

/// Protocol versions in the order of the per-version arrays.
pub const PROTOCOL_VERSIONS: [ProtocolVersion; 3] =
    [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5];

fn version_index(v: ProtocolVersion) -> usize {
    match v {
        ProtocolVersion::V3_1 => 0,
        ProtocolVersion::V3_1_1 => 1,
        ProtocolVersion::V5 => 2,
    }
}

fn version_label(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

fn qos_index(q: QoS) -> usize {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// One worker's monotonic counters: plain integers owned by the worker thread and
/// bumped on the hot path. They only grow (wrapping at `u64::MAX`, which at a billion
/// a second takes 584 years); readers take differences.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WorkerCounters {
    /// PUBLISH packets received, indexed by QoS.
    pub publish_received: [u64; 3],
    /// PUBLISH packets sent, indexed by QoS.
    pub publish_sent: [u64; 3],
    /// Control packets of any type received (Mosquitto's `messages/received`).
    pub packets_received: u64,
    /// Control packets of any type sent.
    pub packets_sent: u64,
    /// Bytes read from sockets.
    pub bytes_received: u64,
    /// Bytes written to sockets.
    pub bytes_sent: u64,
    /// Dropped: session queue or QoS 0 write buffer full.
    pub dropped_queue_full: u64,
    /// Dropped: message expired before it could be sent.
    pub dropped_expired: u64,
    /// Dropped: larger than the receiver's Maximum Packet Size.
    pub dropped_too_large: u64,
    /// Dropped: refused by the ACL.
    pub dropped_acl: u64,
    /// Refused: a QoS 1/2 publish that needed the durable store while it could not write.
    pub dropped_store_unavailable: u64,
    /// Sockets accepted.
    pub sockets_accepted: u64,
    /// Successful CONNECTs.
    pub connects: u64,
    /// Connections ended.
    pub disconnects: u64,
    /// CONNECTs refused by authentication or authorisation.
    pub auth_failures: u64,
    /// Failed TLS handshakes.
    pub tls_handshake_failures: u64,
    /// Nanoseconds the event loop spent handling events, not blocked in poll.
    pub busy_nanos: u64,
}

impl WorkerCounters {
    /// Counts one PUBLISH received (its bytes and packet are counted where it was read).
    #[inline]
    pub fn on_publish_received(&mut self, qos: QoS) {
        let i = qos_index(qos);
        self.publish_received[i] = self.publish_received[i].wrapping_add(1);
    }

    /// Counts one PUBLISH sent.
    #[inline]
    pub fn on_publish_sent(&mut self, qos: QoS) {
        let i = qos_index(qos);
        self.publish_sent[i] = self.publish_sent[i].wrapping_add(1);
    }

    /// Counts what a session dropped from its queue on its own.
    pub fn on_queue_drops(&mut self, drops: QueueDrops) {
        self.dropped_expired = self.dropped_expired.wrapping_add(u64::from(drops.expired));
        self.dropped_too_large = self.dropped_too_large.wrapping_add(u64::from(drops.too_large));
    }

    /// Counts one dropped message.
    #[inline]
    pub fn on_dropped(&mut self, cause: DropCause) {
        let c = match cause {
            DropCause::QueueFull => &mut self.dropped_queue_full,
            DropCause::Expired => &mut self.dropped_expired,
            DropCause::TooLarge => &mut self.dropped_too_large,
            DropCause::Acl => &mut self.dropped_acl,
            DropCause::StoreUnavailable => &mut self.dropped_store_unavailable,
        };
        *c = c.wrapping_add(1);
    }

    /// Messages dropped for `cause`.
    pub fn dropped(&self, cause: DropCause) -> u64 {
        match cause {
            DropCause::QueueFull => self.dropped_queue_full,
            DropCause::Expired => self.dropped_expired,
            DropCause::TooLarge => self.dropped_too_large,
            DropCause::Acl => self.dropped_acl,
            DropCause::StoreUnavailable => self.dropped_store_unavailable,
        }
    }

    /// Messages dropped for any cause.
    pub fn dropped_total(&self) -> u64 {
        DropCause::ALL.iter().fold(0u64, |a, c| a.wrapping_add(self.dropped(*c)))
    }

    /// PUBLISH packets received at any QoS.
    pub fn publish_received_total(&self) -> u64 {
        self.publish_received.iter().fold(0u64, |a, n| a.wrapping_add(*n))
    }

    /// PUBLISH packets sent at any QoS.
    pub fn publish_sent_total(&self) -> u64 {
        self.publish_sent.iter().fold(0u64, |a, n| a.wrapping_add(*n))
    }

    /// Adds `other` into `self` (aggregation over workers).
    pub fn add(&mut self, other: &WorkerCounters) {
        for i in 0..3 {
            self.publish_received[i] =
                self.publish_received[i].wrapping_add(other.publish_received[i]);
            self.publish_sent[i] = self.publish_sent[i].wrapping_add(other.publish_sent[i]);
        }
        let pairs: [(&mut u64, u64); 15] = [
            (&mut self.packets_received, other.packets_received),
            (&mut self.packets_sent, other.packets_sent),
            (&mut self.bytes_received, other.bytes_received),
            (&mut self.bytes_sent, other.bytes_sent),
            (&mut self.dropped_queue_full, other.dropped_queue_full),
            (&mut self.dropped_expired, other.dropped_expired),
            (&mut self.dropped_too_large, other.dropped_too_large),
            (&mut self.dropped_acl, other.dropped_acl),
            (&mut self.dropped_store_unavailable, other.dropped_store_unavailable),
            (&mut self.sockets_accepted, other.sockets_accepted),
            (&mut self.connects, other.connects),
            (&mut self.disconnects, other.disconnects),
            (&mut self.auth_failures, other.auth_failures),
            (&mut self.tls_handshake_failures, other.tls_handshake_failures),
            (&mut self.busy_nanos, other.busy_nanos),
        ];
        for (a, b) in pairs {
            *a = a.wrapping_add(b);
        }
    }
}

/// One worker's current levels, recomputed (or kept up to date) by the worker and
/// published with its counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkerGauges {
    /// Open connections: `connections[listener][version]`, listener in config order,
    /// version as in [`PROTOCOL_VERSIONS`]. Shorter than the listener list is fine
    /// (missing rows are zero).
    pub connections: Vec<[u64; 3]>,
    /// Sessions with a connection.
    pub sessions_online: u64,
    /// Persistent sessions without a connection.
    pub sessions_offline: u64,
    /// Subscriptions held by this worker's sessions.
    pub subscriptions: u64,
    /// Messages waiting in this worker's session queues.
    pub queued: u64,
    /// What they weigh, as `limits.max_queued_bytes` counts it (a message queued for
    /// several sessions counts for each).
    pub queued_bytes: u64,
    /// QoS 1/2 messages sent and awaiting acknowledgement.
    pub inflight: u64,
}

impl WorkerGauges {
    /// Adds one connection of `version` on listener `listener`.
    pub fn add_connection(&mut self, listener: usize, version: ProtocolVersion) {
        if self.connections.len() <= listener {
            self.connections.resize(listener.saturating_add(1), [0; 3]);
        }
        if let Some(row) = self.connections.get_mut(listener) {
            let i = version_index(version);
            row[i] = row[i].saturating_add(1);
        }
    }

    /// Removes one connection of `version` on listener `listener` (never below zero).
    pub fn remove_connection(&mut self, listener: usize, version: ProtocolVersion) {
        if let Some(row) = self.connections.get_mut(listener) {
            let i = version_index(version);
            row[i] = row[i].saturating_sub(1);
        }
    }

    /// Open connections over every listener and version.
    pub fn connections_total(&self) -> u64 {
        self.connections.iter().flatten().fold(0u64, |a, n| a.saturating_add(*n))
    }

    fn add(&mut self, other: &WorkerGauges) {
        if self.connections.len() < other.connections.len() {
            self.connections.resize(other.connections.len(), [0; 3]);
        }
        for (mine, theirs) in self.connections.iter_mut().zip(&other.connections) {
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a = a.saturating_add(*b);
            }
        }
        self.sessions_online = self.sessions_online.saturating_add(other.sessions_online);
        self.sessions_offline = self.sessions_offline.saturating_add(other.sessions_offline);
        self.subscriptions = self.subscriptions.saturating_add(other.subscriptions);
        self.queued = self.queued.saturating_add(other.queued);
        self.queued_bytes = self.queued_bytes.saturating_add(other.queued_bytes);
        self.inflight = self.inflight.saturating_add(other.inflight);
    }
}

/// Durable-store commit statistics, published by the persister thread after each
/// group commit (cumulative, so they read as Prometheus summaries).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Commits done.
    pub commits: u64,
    /// Sum of commit latencies, nanoseconds.
    pub commit_nanos: u64,
    /// Sum of records written over all commits.
    pub records: u64,
    /// Commits that failed (full disk, I/O error).
    pub failed_commits: u64,
    /// The last commit failed: QoS 1/2 work that needs the disk is refused.
    pub degraded: bool,
    /// Bytes of records submitted and not yet committed (read live from
    /// [`StoreQueue`] by [`Metrics::snapshot`]).
    pub queued_bytes: u64,
    /// The most `queued_bytes` has been since start.
    pub queued_bytes_peak: u64,
}

/// Bytes of records submitted to the durable store and not yet committed, kept by the
/// store itself (it admits a batch only while this is under its bound) and read live
/// by [`Metrics::snapshot`].
#[derive(Debug, Default)]
pub struct StoreQueue {
    /// Bytes now.
    pub bytes: AtomicU64,
    /// The most `bytes` has been.
    pub peak: AtomicU64,
}

impl StoreStats {
    /// Records one commit of `records` records that took `latency`.
    pub fn on_commit(&mut self, latency: Duration, records: u64) {
        self.commits = self.commits.wrapping_add(1);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.commit_nanos = self.commit_nanos.wrapping_add(nanos);
        self.records = self.records.wrapping_add(records);
    }
}

/// What a worker publishes into its slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkerSample {
    /// Its counters.
    pub counters: WorkerCounters,
    /// Its gauges.
    pub gauges: WorkerGauges,
}

/// The shared side of metrics: one slot per worker plus broker-wide values, created
/// once by `Broker::start` and held (in an `Arc`) by every worker, the persister, the
/// `$SYS` publisher and the admin listener.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    version: &'static str,
    /// Listener names (e.g. `tcp://127.0.0.1:1883`) for the `listener` label, in config
    /// order; gauges index into it.
    listeners: Vec<String>,
    workers: Box<[Mutex<WorkerSample>]>,
    store: Mutex<StoreStats>,
    store_queue: Arc<StoreQueue>,
    retained: Mutex<u64>,
}

impl Metrics {
    /// Metrics for `workers` workers and the named listeners, started at `now`.
    pub fn new(now: Instant, workers: usize, listeners: Vec<String>) -> Metrics {
        Metrics {
            started: now,
            version: env!("CARGO_PKG_VERSION"),
            listeners,
            workers: (0..workers).map(|_| Mutex::new(WorkerSample::default())).collect(),
            store: Mutex::new(StoreStats::default()),
            store_queue: Arc::default(),
            retained: Mutex::new(0),
        }
    }

    /// Worker `id` publishes its current counters and gauges (once a second). An
    /// unknown id is ignored.
    pub fn publish_worker(&self, id: usize, counters: &WorkerCounters, gauges: &WorkerGauges) {
        if let Some(slot) = self.workers.get(id) {
            let mut s = slot.lock();
            s.counters = *counters;
            s.gauges.clone_from(gauges);
        }
    }

    /// The persister publishes its cumulative commit statistics.
    pub fn publish_store(&self, stats: &StoreStats) {
        *self.store.lock() = *stats;
    }

    /// The counter the durable store keeps its queued bytes in.
    pub fn store_queue(&self) -> Arc<StoreQueue> {
        self.store_queue.clone()
    }

    /// The retained store reports how many messages it holds.
    pub fn set_retained(&self, count: u64) {
        *self.retained.lock() = count;
    }

    /// Sums every slot as of the last publication.
    pub fn snapshot(&self, now: Instant) -> MetricsSnapshot {
        let mut counters = WorkerCounters::default();
        let mut gauges = WorkerGauges::default();
        let mut per_worker = Vec::with_capacity(self.workers.len());
        for slot in self.workers.iter() {
            let s = slot.lock().clone();
            counters.add(&s.counters);
            gauges.add(&s.gauges);
            per_worker.push(s);
        }
        MetricsSnapshot {
            version: self.version.to_owned(),
            uptime_secs: now.saturating_duration_since(self.started).as_secs(),
            listeners: self.listeners.clone(),
            counters,
            gauges,
            per_worker,
            store: StoreStats {
                queued_bytes: self.store_queue.bytes.load(Ordering::Relaxed),
                queued_bytes_peak: self.store_queue.peak.load(Ordering::Relaxed),
                ..*self.store.lock()
            },
            retained: *self.retained.lock(),
        }
    }
}

/// Every metric at one instant, summed over workers. Serialised as-is by
/// `GET /api/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Broker version.
    pub version: String,
    /// Whole seconds since start.
    pub uptime_secs: u64,
    /// Listener names, in config order (index of `gauges.connections`).
    pub listeners: Vec<String>,
    /// Counters summed over workers.
    pub counters: WorkerCounters,
    /// Gauges summed over workers.
    pub gauges: WorkerGauges,
    /// Each worker's own sample (for per-worker busy time).
    pub per_worker: Vec<WorkerSample>,
    /// Durable store statistics.
    pub store: StoreStats,
    /// Retained messages held.
    pub retained: u64,
}

/// One moving average per window, in events per minute (Mosquitto's unit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Load {
    /// 1-minute average.
    pub one: f64,
    /// 5-minute average.
    pub five: f64,
    /// 15-minute average.
    pub fifteen: f64,
}

impl Load {
    /// Folds in a rate of `per_min` events per minute observed over `dt` seconds:
    /// an exponentially decayed average `v += (1 - e^(-dt/window)) · (rate - v)`, which
    /// gives the same result whatever the sampling interval.
    fn update(&mut self, per_min: f64, dt: f64) {
        for (v, window) in
            [(&mut self.one, 60.0), (&mut self.five, 300.0), (&mut self.fifteen, 900.0)]
        {
            let keep = (-dt / window).exp();
            *v = per_min + keep * (*v - per_min);
        }
    }
}

/// Mosquitto's `$SYS/broker/load/...` series: moving averages of counter rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LoadAverages {
    /// Control packets received.
    pub messages_received: Load,
    /// Control packets sent.
    pub messages_sent: Load,
    /// PUBLISH received.
    pub publish_received: Load,
    /// PUBLISH sent.
    pub publish_sent: Load,
    /// Messages dropped.
    pub publish_dropped: Load,
    /// Bytes received.
    pub bytes_received: Load,
    /// Bytes sent.
    pub bytes_sent: Load,
    /// Successful CONNECTs.
    pub connections: Load,
    /// Sockets accepted.
    pub sockets: Load,
}

/// Feeds snapshots into [`LoadAverages`]; owned by whoever publishes `$SYS`.
#[derive(Debug, Clone, Default)]
pub struct LoadTracker {
    last: Option<(Instant, WorkerCounters)>,
    loads: LoadAverages,
}

impl LoadTracker {
    /// Folds in the counters observed at `now`. The first call only sets the baseline;
    /// a call with no time elapsed is ignored. A counter that went backwards counts as
    /// zero for that interval.
    pub fn update(&mut self, now: Instant, counters: &WorkerCounters) {
        let Some((then, prev)) = self.last else {
            self.last = Some((now, *counters));
            return;
        };
        let dt = now.saturating_duration_since(then).as_secs_f64();
        if dt <= 0.0 {
            return;
        }
        let per_min = |new: u64, old: u64| new.saturating_sub(old) as f64 * 60.0 / dt;
        let c = counters;
        let l = &mut self.loads;
        l.messages_received.update(per_min(c.packets_received, prev.packets_received), dt);
        l.messages_sent.update(per_min(c.packets_sent, prev.packets_sent), dt);
        l.publish_received
            .update(per_min(c.publish_received_total(), prev.publish_received_total()), dt);
        l.publish_sent.update(per_min(c.publish_sent_total(), prev.publish_sent_total()), dt);
        l.publish_dropped.update(per_min(c.dropped_total(), prev.dropped_total()), dt);
        l.bytes_received.update(per_min(c.bytes_received, prev.bytes_received), dt);
        l.bytes_sent.update(per_min(c.bytes_sent, prev.bytes_sent), dt);
        l.connections.update(per_min(c.connects, prev.connects), dt);
        l.sockets.update(per_min(c.sockets_accepted, prev.sockets_accepted), dt);
        self.last = Some((now, *counters));
    }

    /// The current averages.
    pub fn loads(&self) -> &LoadAverages {
        &self.loads
    }
}

/// One `$SYS` topic and its payload (published retained).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysValue {
    /// Full topic name, e.g. `$SYS/broker/clients/connected`.
    pub topic: String,
    /// UTF-8 payload, e.g. `42`.
    pub payload: String,
}

/// The `$SYS` topics, with Mosquitto's names and payload formats where Mosquitto has
/// them (`retained messages/count` really has a space). `clients_maximum` is the most
/// clients seen connected at once, kept by the publisher.
pub fn sys_values(
    snap: &MetricsSnapshot,
    load: &LoadAverages,
    clients_maximum: u64,
) -> Vec<SysValue> {
    let g = &snap.gauges;
    let c = &snap.counters;
    let connected = g.connections_total();
    let mut out = Vec::with_capacity(64);
    let mut put = |topic: &str, payload: String| {
        out.push(SysValue { topic: format!("$SYS/broker/{topic}"), payload });
    };
    put("version", format!("shoal version {}", snap.version));
    put("uptime", format!("{} seconds", snap.uptime_secs));
    put("clients/connected", connected.to_string());
    put("clients/disconnected", g.sessions_offline.to_string());
    put("clients/total", connected.saturating_add(g.sessions_offline).to_string());
    put("clients/maximum", clients_maximum.max(connected).to_string());
    put("messages/received", c.packets_received.to_string());
    put("messages/sent", c.packets_sent.to_string());
    put("messages/inflight", g.inflight.to_string());
    put("messages/stored", snap.retained.saturating_add(g.queued).to_string());
    put("publish/messages/received", c.publish_received_total().to_string());
    put("publish/messages/sent", c.publish_sent_total().to_string());
    put("publish/messages/dropped", c.dropped_total().to_string());
    put("bytes/received", c.bytes_received.to_string());
    put("bytes/sent", c.bytes_sent.to_string());
    put("subscriptions/count", g.subscriptions.to_string());
    put("retained messages/count", snap.retained.to_string());
    let series: [(&str, &Load); 9] = [
        ("load/messages/received", &load.messages_received),
        ("load/messages/sent", &load.messages_sent),
        ("load/publish/received", &load.publish_received),
        ("load/publish/sent", &load.publish_sent),
        ("load/publish/dropped", &load.publish_dropped),
        ("load/bytes/received", &load.bytes_received),
        ("load/bytes/sent", &load.bytes_sent),
        ("load/connections", &load.connections),
        ("load/sockets", &load.sockets),
    ];
    for (base, l) in series {
        for (suffix, v) in [("1min", l.one), ("5min", l.five), ("15min", l.fifteen)] {
            put(&format!("{base}/{suffix}"), format!("{v:.2}"));
        }
    }
    out
}

/// Prefix of the client lifecycle event topics. Mosquitto has no such events; they sit
/// in a subtree of their own so that `$SYS/broker/clients/+` keeps Mosquitto's meaning.
pub const CLIENT_EVENTS_PREFIX: &str = "$SYS/broker/events/clients";

/// A client lifecycle event, published (not retained, QoS 0) when switched on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent<'a> {
    /// CONNACK success was sent.
    Connected {
        /// Peer address.
        address: &'a str,
        /// Protocol version of the CONNECT.
        protocol: ProtocolVersion,
        /// Negotiated keep-alive.
        keep_alive_secs: u16,
        /// Clean Start / Clean Session.
        clean_start: bool,
        /// Username, if any.
        username: Option<&'a str>,
    },
    /// The connection ended.
    Disconnected {
        /// Why, in words (`client disconnected`, `keep-alive timeout`, a reason code name).
        reason: &'a str,
    },
    /// A subscription was granted.
    Subscribed {
        /// The filter.
        filter: &'a str,
        /// Granted QoS.
        qos: QoS,
    },
    /// A subscription was removed.
    Unsubscribed {
        /// The filter.
        filter: &'a str,
    },
}

/// Makes a client id usable as one topic level: `%`, `/`, `+`, `#` and NUL are
/// percent-encoded (a client id may contain any of them; a topic level may not).
pub fn escape_topic_level(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for ch in id.chars() {
        match ch {
            '%' | '/' | '+' | '#' | '\0' => {
                let _ = write!(out, "%{:02X}", u32::from(ch));
            }
            c => out.push(c),
        }
    }
    out
}

/// The topic and JSON payload of a lifecycle event: topic
/// `$SYS/broker/events/clients/<escaped id>/<event>`, payload with the client id as
/// given, `ts` in Unix milliseconds and the event's fields.
pub fn client_event(client_id: &str, event: &ClientEvent<'_>, unix_ms: u64) -> SysValue {
    let (name, payload) = match *event {
        ClientEvent::Connected { address, protocol, keep_alive_secs, clean_start, username } => (
            "connected",
            serde_json::json!({
                "client_id": client_id, "ts": unix_ms, "address": address,
                "protocol": version_label(protocol), "keep_alive_secs": keep_alive_secs,
                "clean_start": clean_start, "username": username,
            }),
        ),
        ClientEvent::Disconnected { reason } => (
            "disconnected",
            serde_json::json!({ "client_id": client_id, "ts": unix_ms, "reason": reason }),
        ),
        ClientEvent::Subscribed { filter, qos } => (
            "subscribed",
            serde_json::json!({
                "client_id": client_id, "ts": unix_ms, "filter": filter, "qos": qos.bits(),
            }),
        ),
        ClientEvent::Unsubscribed { filter } => (
            "unsubscribed",
            serde_json::json!({ "client_id": client_id, "ts": unix_ms, "filter": filter }),
        ),
    };
    SysValue {
        topic: format!("{CLIENT_EVENTS_PREFIX}/{}/{name}", escape_topic_level(client_id)),
        payload: payload.to_string(),
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Writes exposition-format text; `fmt::Write` to a `String` cannot fail, so results
/// are ignored in one place.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // HELP text escapes backslash and line feed only.
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

fn nanos_to_secs(n: u64) -> f64 {
    n as f64 / 1e9
}

/// Renders `snap` in the Prometheus text exposition format (version 0.0.4): a HELP
/// and TYPE line per family, label values escaped.
pub fn render_prometheus(snap: &MetricsSnapshot) -> String {
    use name::*;
    let mut e = Exposition { out: String::with_capacity(4096) };
    let c = &snap.counters;
    let g = &snap.gauges;

    e.family(BUILD_INFO, "gauge", "Build information; the version is a label.");
    e.sample(BUILD_INFO, &[("version", &snap.version)], 1);
    e.single(UPTIME_SECONDS, "gauge", "Seconds since the broker started.", snap.uptime_secs);

    for (metric, help, by_qos) in [
        (PUBLISH_RECEIVED, "PUBLISH packets received from clients, by QoS.", &c.publish_received),
        (PUBLISH_SENT, "PUBLISH packets sent to clients, by QoS.", &c.publish_sent),
    ] {
        e.family(metric, "counter", help);
        for (qos, n) in ["0", "1", "2"].iter().zip(by_qos) {
            e.sample(metric, &[("qos", qos)], n);
        }
    }
    e.single(PACKETS_RECEIVED, "counter", "MQTT packets of any type received.", c.packets_received);
    e.single(PACKETS_SENT, "counter", "MQTT packets of any type sent.", c.packets_sent);
    e.single(BYTES_RECEIVED, "counter", "Bytes read from client sockets.", c.bytes_received);
    e.single(BYTES_SENT, "counter", "Bytes written to client sockets.", c.bytes_sent);

    e.family(DROPPED, "counter", "Messages dropped, by cause.");
    for cause in DropCause::ALL {
        e.sample(DROPPED, &[("cause", cause.label())], c.dropped(cause));
    }
    e.single(SOCKETS_ACCEPTED, "counter", "Sockets accepted.", c.sockets_accepted);
    e.single(CONNECTS, "counter", "Successful CONNECTs.", c.connects);
    e.single(DISCONNECTS, "counter", "Client connections ended.", c.disconnects);
    e.single(AUTH_FAILURES, "counter", "CONNECTs refused by authentication.", c.auth_failures);
    e.single(TLS_HANDSHAKE_FAILURES, "counter", "Failed TLS handshakes.", c.tls_handshake_failures);

    e.family(WORKER_BUSY_SECONDS, "counter", "Event-loop time spent handling events, by worker.");
    for (i, w) in snap.per_worker.iter().enumerate() {
        e.sample(
            WORKER_BUSY_SECONDS,
            &[("worker", &i.to_string())],
            nanos_to_secs(w.counters.busy_nanos),
        );
    }

    e.family(CONNECTIONS, "gauge", "Open client connections, by listener and protocol version.");
    for (i, listener) in snap.listeners.iter().enumerate() {
        let row = g.connections.get(i).copied().unwrap_or([0; 3]);
        for v in PROTOCOL_VERSIONS {
            e.sample(
                CONNECTIONS,
                &[("listener", listener), ("protocol", version_label(v))],
                row[version_index(v)],
            );
        }
    }
    e.family(SESSIONS, "gauge", "Sessions, by state.");
    e.sample(SESSIONS, &[("state", "online")], g.sessions_online);
    e.sample(SESSIONS, &[("state", "offline")], g.sessions_offline);
    e.single(SUBSCRIPTIONS, "gauge", "Subscriptions over all sessions.", g.subscriptions);
    e.single(QUEUED_MESSAGES, "gauge", "Messages waiting in session queues.", g.queued);
    e.single(
        QUEUED_BYTES,
        "gauge",
        "Topic, payload and properties bytes of the messages in session queues.",
        g.queued_bytes,
    );
    e.single(INFLIGHT_MESSAGES, "gauge", "QoS 1/2 messages awaiting acknowledgement.", g.inflight);
    e.single(RETAINED_MESSAGES, "gauge", "Retained messages held.", snap.retained);

    e.family(STORE_COMMIT_SECONDS, "summary", "Durable-store group commit latency.");
    e.sample(&format!("{STORE_COMMIT_SECONDS}_sum"), &[], nanos_to_secs(snap.store.commit_nanos));
    e.sample(&format!("{STORE_COMMIT_SECONDS}_count"), &[], snap.store.commits);
    e.family(STORE_COMMIT_BATCH, "summary", "Records written per durable-store commit.");
    e.sample(&format!("{STORE_COMMIT_BATCH}_sum"), &[], snap.store.records);
    e.sample(&format!("{STORE_COMMIT_BATCH}_count"), &[], snap.store.commits);
    e.single(
        STORE_FAILED_COMMITS,
        "counter",
        "Durable-store commits that failed (full disk, I/O error).",
        snap.store.failed_commits,
    );
    e.single(
        STORE_DEGRADED,
        "gauge",
        "1 while the durable store cannot write: QoS 1/2 work that needs it is refused.",
        u64::from(snap.store.degraded),
    );
    e.single(
        STORE_QUEUED_BYTES,
        "gauge",
        "Bytes of records submitted to the durable store and not yet committed.",
        snap.store.queued_bytes,
    );
    e.single(
        STORE_QUEUED_BYTES_PEAK,
        "gauge",
        "The most shoal_store_queued_bytes has been since start.",
        snap.store.queued_bytes_peak,
    );
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_snapshot() -> MetricsSnapshot {
        let t0 = Instant::now();
        let m = Metrics::new(t0, 2, vec!["tcp://127.0.0.1:1883".into(), "ws \"lab\"\\\n1".into()]);
        let mut c0 = WorkerCounters::default();
        c0.on_publish_received(QoS::AtMostOnce);
        c0.on_publish_received(QoS::AtLeastOnce);
        c0.on_publish_sent(QoS::ExactlyOnce);
        c0.on_dropped(DropCause::QueueFull);
        c0.on_dropped(DropCause::Acl);
        c0.packets_received = 10;
        c0.bytes_received = 1000;
        c0.busy_nanos = 1_500_000_000;
        c0.connects = 2;
        let mut c1 = WorkerCounters::default();
        c1.on_publish_received(QoS::AtLeastOnce);
        c1.on_dropped(DropCause::Expired);
        c1.packets_received = 5;
        c1.bytes_sent = 7;
        c1.connects = 1;
        let mut g0 = WorkerGauges::default();
        g0.add_connection(0, ProtocolVersion::V5);
        g0.add_connection(0, ProtocolVersion::V3_1_1);
        g0.sessions_online = 2;
        g0.subscriptions = 3;
        let mut g1 = WorkerGauges::default();
        g1.add_connection(1, ProtocolVersion::V5);
        g1.sessions_online = 1;
        g1.sessions_offline = 4;
        g1.queued = 9;
        g1.inflight = 2;
        m.publish_worker(0, &c0, &g0);
        m.publish_worker(1, &c1, &g1);
        m.publish_worker(7, &c1, &g1); // unknown worker: ignored
        let mut store = StoreStats::default();
        store.on_commit(Duration::from_millis(2), 10);
        store.on_commit(Duration::from_millis(4), 30);
        m.publish_store(&store);
        m.set_retained(5);
        m.snapshot(t0 + Duration::from_secs(90))
    }

    #[test]
    fn snapshot_sums_every_worker_slot() {
        let s = sample_snapshot();
        assert_eq!(s.uptime_secs, 90);
        assert_eq!(s.counters.publish_received, [1, 2, 0]);
        assert_eq!(s.counters.publish_received_total(), 3);
        assert_eq!(s.counters.publish_sent_total(), 1);
        assert_eq!(s.counters.dropped_total(), 3);
        assert_eq!(s.counters.packets_received, 15);
        assert_eq!(s.counters.connects, 3);
        assert_eq!(s.gauges.connections, vec![[0, 1, 1], [0, 0, 1]]);
        assert_eq!(s.gauges.connections_total(), 3);
        assert_eq!(s.gauges.sessions_offline, 4);
        assert_eq!(s.per_worker.len(), 2);
        assert_eq!(s.store.commits, 2);
        assert_eq!(s.store.records, 40);
        assert_eq!(s.retained, 5);
    }

    #[test]
    fn connection_gauge_never_goes_below_zero() {
        let mut g = WorkerGauges::default();
        g.remove_connection(3, ProtocolVersion::V5);
        g.add_connection(1, ProtocolVersion::V3_1);
        g.remove_connection(1, ProtocolVersion::V3_1);
        g.remove_connection(1, ProtocolVersion::V3_1);
        assert_eq!(g.connections, vec![[0; 3], [0; 3]]);
    }

    #[test]
    fn counters_wrap_instead_of_panicking() {
        let mut a = WorkerCounters { bytes_sent: u64::MAX, ..Default::default() };
        a.add(&WorkerCounters { bytes_sent: 2, ..Default::default() });
        assert_eq!(a.bytes_sent, 1);
    }

    #[test]
    fn hot_path_counters_stay_small() {
        // Copied once a second per worker; growth should be a decision (the 21st:
        // publishes refused while the durable store cannot write).
        assert_eq!(std::mem::size_of::<WorkerCounters>(), 21 * 8);
    }

    fn counters_with(publish: u64, bytes: u64) -> WorkerCounters {
        WorkerCounters {
            publish_received: [publish, 0, 0],
            bytes_received: bytes,
            ..Default::default()
        }
    }

    #[test]
    fn load_first_update_only_sets_the_baseline() {
        let t0 = Instant::now();
        let mut t = LoadTracker::default();
        t.update(t0, &counters_with(1_000_000, 0));
        assert_eq!(*t.loads(), LoadAverages::default());
        // No time passed: ignored, no division by zero.
        t.update(t0, &counters_with(2_000_000, 0));
        assert_eq!(*t.loads(), LoadAverages::default());
    }

    #[test]
    fn load_converges_to_a_steady_rate_per_minute() {
        let t0 = Instant::now();
        let mut t = LoadTracker::default();
        // 10 publishes a second = 600 a minute, sampled every 10 s for three hours.
        for i in 0..=1080u64 {
            t.update(t0 + Duration::from_secs(i * 10), &counters_with(i * 100, i * 1000));
        }
        let l = t.loads().publish_received;
        for v in [l.one, l.five, l.fifteen] {
            assert!((v - 600.0).abs() < 0.5, "{v}");
        }
        assert!((t.loads().bytes_received.one - 6000.0).abs() < 1.0);
        assert_eq!(t.loads().messages_received.one, 0.0);
    }

    #[test]
    fn load_after_one_minute_of_traffic_matches_the_exponential() {
        let t0 = Instant::now();
        let mut t = LoadTracker::default();
        t.update(t0, &counters_with(0, 0));
        for i in 1..=60u64 {
            t.update(t0 + Duration::from_secs(i), &counters_with(i * 10, 0));
        }
        let l = t.loads().publish_received;
        let e = |window: f64| 600.0 * (1.0 - (-60.0 / window).exp());
        assert!((l.one - e(60.0)).abs() < 1e-6, "{}", l.one);
        assert!((l.five - e(300.0)).abs() < 1e-6);
        assert!((l.fifteen - e(900.0)).abs() < 1e-6);
        assert!(l.one > l.five && l.five > l.fifteen);
    }

    #[test]
    fn load_does_not_depend_on_the_sampling_interval() {
        let t0 = Instant::now();
        let mut fine = LoadTracker::default();
        let mut coarse = LoadTracker::default();
        for i in 0..=120u64 {
            fine.update(t0 + Duration::from_secs(i), &counters_with(i * 5, 0));
            if i % 30 == 0 {
                coarse.update(t0 + Duration::from_secs(i), &counters_with(i * 5, 0));
            }
        }
        let (a, b) = (fine.loads().publish_received, coarse.loads().publish_received);
        assert!((a.one - b.one).abs() < 1e-6 && (a.fifteen - b.fifteen).abs() < 1e-6);
    }

    #[test]
    fn load_decays_when_traffic_stops_and_ignores_counter_resets() {
        let t0 = Instant::now();
        let mut t = LoadTracker::default();
        t.update(t0, &counters_with(0, 0));
        t.update(t0 + Duration::from_secs(60), &counters_with(600, 0));
        let before = t.loads().publish_received.one;
        t.update(t0 + Duration::from_secs(120), &counters_with(600, 0));
        let after = t.loads().publish_received.one;
        assert!((after - before / std::f64::consts::E).abs() < 1e-9);
        // A counter going backwards (restarted worker) counts as no traffic.
        t.update(t0 + Duration::from_secs(180), &counters_with(0, 0));
        assert!(t.loads().publish_received.one < after);
    }

    #[test]
    fn sys_values_use_mosquitto_names_and_formats() {
        let s = sample_snapshot();
        let mut load = LoadAverages::default();
        load.messages_received.one = 12.345;
        let v = sys_values(&s, &load, 2);
        let get = |t: &str| {
            v.iter()
                .find(|x| x.topic == t)
                .map(|x| x.payload.clone())
                .unwrap_or_else(|| panic!("missing {t}"))
        };
        assert_eq!(
            get("$SYS/broker/version"),
            format!("shoal version {}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(get("$SYS/broker/uptime"), "90 seconds");
        assert_eq!(get("$SYS/broker/clients/connected"), "3");
        assert_eq!(get("$SYS/broker/clients/disconnected"), "4");
        assert_eq!(get("$SYS/broker/clients/total"), "7");
        assert_eq!(get("$SYS/broker/clients/maximum"), "3");
        assert_eq!(get("$SYS/broker/messages/received"), "15");
        assert_eq!(get("$SYS/broker/messages/sent"), "0");
        assert_eq!(get("$SYS/broker/messages/inflight"), "2");
        assert_eq!(get("$SYS/broker/messages/stored"), "14");
        assert_eq!(get("$SYS/broker/publish/messages/received"), "3");
        assert_eq!(get("$SYS/broker/publish/messages/sent"), "1");
        assert_eq!(get("$SYS/broker/publish/messages/dropped"), "3");
        assert_eq!(get("$SYS/broker/bytes/received"), "1000");
        assert_eq!(get("$SYS/broker/bytes/sent"), "7");
        assert_eq!(get("$SYS/broker/subscriptions/count"), "3");
        assert_eq!(get("$SYS/broker/retained messages/count"), "5");
        assert_eq!(get("$SYS/broker/load/messages/received/1min"), "12.35");
        assert_eq!(get("$SYS/broker/load/messages/received/15min"), "0.00");
        for base in [
            "messages/sent",
            "publish/received",
            "publish/sent",
            "publish/dropped",
            "bytes/received",
            "bytes/sent",
            "connections",
            "sockets",
        ] {
            for w in ["1min", "5min", "15min"] {
                get(&format!("$SYS/broker/load/{base}/{w}"));
            }
        }
        let mut topics: Vec<_> = v.iter().map(|x| &x.topic).collect();
        topics.sort();
        topics.dedup();
        assert_eq!(topics.len(), v.len(), "duplicate topics");
        for t in &topics {
            shoal_core::TopicName::try_from(t.as_str()).unwrap_or_else(|e| panic!("{t}: {e:?}"));
        }
    }

    #[test]
    fn client_events_escape_the_id_into_one_valid_topic_level() {
        assert_eq!(escape_topic_level("plain-id"), "plain-id");
        assert_eq!(escape_topic_level("a/b+c#d%e\0"), "a%2Fb%2Bc%23d%25e%00");
        assert_eq!(escape_topic_level("é"), "é");
        let ev = ClientEvent::Connected {
            address: "127.0.0.1:5000",
            protocol: ProtocolVersion::V5,
            keep_alive_secs: 30,
            clean_start: true,
            username: None,
        };
        for id in ["a/b", "+", "#", "", "x%2F"] {
            let v = client_event(id, &ev, 1);
            shoal_core::TopicName::try_from(v.topic.as_str())
                .unwrap_or_else(|e| panic!("{id}: {} {e:?}", v.topic));
            let p: serde_json::Value = serde_json::from_str(&v.payload).unwrap();
            assert_eq!(p["client_id"], id);
        }
        // Distinct ids never share a topic.
        assert_ne!(client_event("a/b", &ev, 1).topic, client_event("a%2Fb", &ev, 1).topic);
    }

    #[test]
    fn client_event_payloads_carry_the_event_fields() {
        let v = client_event(
            "dev/1",
            &ClientEvent::Connected {
                address: "10.0.0.1:40000",
                protocol: ProtocolVersion::V3_1_1,
                keep_alive_secs: 60,
                clean_start: false,
                username: Some("alice"),
            },
            1_700_000_000_123,
        );
        assert_eq!(v.topic, "$SYS/broker/events/clients/dev%2F1/connected");
        let p: serde_json::Value = serde_json::from_str(&v.payload).unwrap();
        assert_eq!(p["ts"], 1_700_000_000_123u64);
        assert_eq!(p["protocol"], "3.1.1");
        assert_eq!(p["keep_alive_secs"], 60);
        assert_eq!(p["clean_start"], false);
        assert_eq!(p["username"], "alice");
        assert_eq!(p["address"], "10.0.0.1:40000");
        let v = client_event("c", &ClientEvent::Disconnected { reason: "keep-alive timeout" }, 5);
        assert_eq!(v.topic, "$SYS/broker/events/clients/c/disconnected");
        assert!(v.payload.contains("\"reason\":\"keep-alive timeout\""));
        let v =
            client_event("c", &ClientEvent::Subscribed { filter: "a/#", qos: QoS::ExactlyOnce }, 5);
        assert_eq!(v.topic, "$SYS/broker/events/clients/c/subscribed");
        let p: serde_json::Value = serde_json::from_str(&v.payload).unwrap();
        assert_eq!((p["filter"].as_str(), p["qos"].as_u64()), (Some("a/#"), Some(2)));
        let v = client_event("c", &ClientEvent::Unsubscribed { filter: "a/#" }, 5);
        assert!(v.topic.ends_with("/unsubscribed") && v.payload.contains("\"filter\":\"a/#\""));
    }

    #[test]
    fn exposition_has_help_and_type_for_every_family_and_escapes_labels() {
        let text = render_prometheus(&sample_snapshot());
        assert!(text.contains("# TYPE shoal_publish_received_total counter\n"));
        assert!(text.contains("shoal_publish_received_total{qos=\"1\"} 2\n"));
        assert!(text.contains("shoal_messages_dropped_total{cause=\"queue_full\"} 1\n"));
        assert!(text.contains("shoal_worker_busy_seconds_total{worker=\"0\"} 1.5\n"));
        assert!(text.contains(
            "shoal_connections{listener=\"ws \\\"lab\\\"\\\\\\n1\",protocol=\"5.0\"} 1\n"
        ));
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap_or_default().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                let base = name.trim_end_matches("_sum").trim_end_matches("_count");
                assert!(typed.contains(name) || typed.contains(base), "no TYPE before {line}");
            }
        }
    }

    /// Parses the exposition with the reference Python parser
    /// (`prometheus_client.parser`); CI installs it (`pip install prometheus-client`).
    #[test]
    fn exposition_parses_with_the_prometheus_client_parser() {
        const SCRIPT: &str = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append([fam.name, fam.type, s.name, s.labels, s.value])
print(json.dumps(out))
"#;
        let text = render_prometheus(&sample_snapshot());
        let child =
            std::process::Command::new("python3").args(["-c", "import prometheus_client"]).output();
        let available = matches!(&child, Ok(o) if o.status.success());
        if !available {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install python3 and prometheus-client (pip install prometheus-client)"
            );
            eprintln!(
                "skipped: python3 with prometheus_client not found (pip install prometheus-client)"
            );
            return;
        }
        use std::io::Write as _;
        let mut child = std::process::Command::new("python3")
            .args(["-c", SCRIPT])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn python3");
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
        let out = child.wait_with_output().expect("python3");
        assert!(
            out.status.success(),
            "parser rejected:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        /// family, type, sample name, labels, value
        type Sample = (String, String, String, std::collections::BTreeMap<String, String>, f64);
        let parsed: Vec<Sample> = serde_json::from_slice(&out.stdout).expect("json");
        let find = |sample: &str, labels: &[(&str, &str)]| {
            parsed
                .iter()
                .find(|(_, _, n, l, _)| {
                    n == sample
                        && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
                })
                .unwrap_or_else(|| panic!("no sample {sample} {labels:?}"))
                .clone()
        };
        let (fam, kind, _, _, v) = find("shoal_publish_received_total", &[("qos", "1")]);
        assert_eq!((fam.as_str(), kind.as_str(), v), ("shoal_publish_received", "counter", 2.0));
        let (_, kind, _, _, v) =
            find("shoal_connections", &[("listener", "ws \"lab\"\\\n1"), ("protocol", "5.0")]);
        assert_eq!((kind.as_str(), v), ("gauge", 1.0));
        let (_, kind, _, _, v) = find("shoal_store_commit_seconds_sum", &[]);
        assert_eq!(kind, "summary");
        assert!((v - 0.006).abs() < 1e-9);
        assert_eq!(find("shoal_store_commit_batch_records_count", &[]).4, 2.0);
        assert_eq!(find("shoal_build_info", &[("version", env!("CARGO_PKG_VERSION"))]).4, 1.0);
        assert_eq!(find("shoal_messages_dropped_total", &[("cause", "acl")]).4, 1.0);
        assert_eq!(find("shoal_uptime_seconds", &[]).4, 90.0);
    }
}
