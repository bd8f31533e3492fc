//! Runs a [`Plan`]: spreads its connections over worker threads, steps the run through
//! its phases, prints progress, and turns what the threads hand back into a
//! [`Summary`].
//!
//! Phases, set by the main thread and read by every worker each loop iteration:
//! `Connect` (open every connection; subscribers subscribe) → `Warmup` (publish, not
//! counted) → `Measure` (publish and count; broker CPU/RSS sampled at both ends) →
//! `Drain` (no new publishes; wait at most `--drain` for acks and deliveries to stop) →
//! `Stop` (DISCONNECT and close). For `conn` the measured window is the connect phase,
//! after which the connections are held for `--duration`. Every run therefore ends by
//! itself. The event loop is `worker`; one connection's state is `conn`.

mod conn;
mod worker;

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use shoal_core::QoS;

use crate::client::ClientConfig;
use crate::procstat;
use crate::report::{self, BrokerUse, Connections, Latency, Progress, Summary, Verification};
use crate::scenario::{Plan, Role, Scenario};
use worker::{Worker, WorkerResult};

/// Everything about a run except what connections it opens.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Broker address.
    pub addr: SocketAddr,
    /// TLS and WebSocket layers above TCP (none: plain MQTT).
    pub transport: crate::client::Transport,
    /// Local source addresses, used round-robin (`--bind`).
    pub bind: Vec<IpAddr>,
    /// Where this run's explicit source ports start within [`SOURCE_PORTS`] (varied per
    /// run, so a rerun does not meet its predecessor's TIME_WAIT sockets first).
    pub source_port_offset: u16,
    /// CONNECT template; the client id is set per connection.
    pub client: ClientConfig,
    /// Publish and subscribe QoS.
    pub qos: QoS,
    /// Payload bytes per message (at least the stamp).
    pub payload: usize,
    /// Total publish rate, msgs/s; `None` is unlimited.
    pub rate: Option<f64>,
    /// Unacknowledged QoS 1/2 publishes per publisher.
    pub inflight: u32,
    /// Measured window.
    pub duration: Duration,
    /// Publishing before the measured window.
    pub warmup: Duration,
    /// Longest wait for in-flight messages after publishing stops.
    pub drain: Duration,
    /// Connection attempts per second over all threads; `None` is unlimited.
    pub conn_rate: Option<f64>,
    /// Longest a single connection may take to be established.
    pub connect_timeout: Duration,
    /// Worker threads.
    pub threads: usize,
    /// Broker process to measure.
    pub broker_pid: Option<u32>,
    /// Print a progress line every second.
    pub progress: bool,
}

/// Source ports the load generator assigns itself under `--bind`: binding to port 0
/// makes the kernel search for a free port on every connect, which for tens of
/// thousands of loopback connections costs more than the broker's whole connect work.
pub const SOURCE_PORTS: std::ops::Range<u16> = 10_000..61_000;

/// The run phase, shared by all threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    Connect = 0,
    Warmup = 1,
    Measure = 2,
    Drain = 3,
    Stop = 4,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Warmup => "warmup",
            Self::Measure => "measure",
            Self::Drain => "drain",
            Self::Stop => "stop",
        }
    }
}

/// State every thread sees. Counters are totals over the whole run, published by each
/// worker every few milliseconds.
#[derive(Debug)]
pub(crate) struct Shared {
    epoch: Instant,
    phase: AtomicU8,
    pub(crate) ready: AtomicU64,
    pub(crate) connect_errors: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) delivered: AtomicU64,
    /// Per worker: publishes not yet acknowledged (or not yet written).
    pub(crate) inflight: Vec<AtomicU64>,
    /// Workers that have seen the drain phase and published their final `sent`.
    pub(crate) settled: AtomicUsize,
    pub(crate) first_attempt_ns: AtomicU64,
    pub(crate) last_ready_ns: AtomicU64,
    pub(crate) samples: Mutex<Vec<String>>,
    /// Latencies of the measured window, merged in by the workers.
    pub(crate) hist: Mutex<Histogram<u64>>,
}

impl Shared {
    fn new(threads: usize) -> Result<Self> {
        Ok(Self {
            epoch: Instant::now(),
            phase: AtomicU8::new(Phase::Connect as u8),
            ready: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            inflight: (0..threads).map(|_| AtomicU64::new(0)).collect(),
            settled: AtomicUsize::new(0),
            first_attempt_ns: AtomicU64::new(u64::MAX),
            last_ready_ns: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
            hist: Mutex::new(report::new_histogram()?),
        })
    }

    /// Nanoseconds since the run's clock origin; payload stamps use the same origin.
    pub(crate) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub(crate) fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Connect,
            1 => Phase::Warmup,
            2 => Phase::Measure,
            3 => Phase::Drain,
            _ => Phase::Stop,
        }
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    fn latency(&self) -> Latency {
        self.hist.lock().map(|h| Latency::from_histogram(&h)).unwrap_or_default()
    }

    fn inflight(&self) -> u64 {
        self.inflight.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }
}

/// Spreads connections over threads: with two or more threads, publishers and
/// subscribers get threads of their own (so pacing sleeps never delay reads), idle
/// connections go round-robin over all.
fn assign(plan: &Plan, threads: usize) -> Vec<Vec<usize>> {
    let threads = threads.max(1);
    let mut out = vec![Vec::new(); threads];
    let split = threads >= 2 && plan.publishers > 0 && plan.subscribers > 0;
    let pub_threads = if split { (threads / 2).max(1) } else { threads };
    let (mut p, mut s, mut i) = (0usize, 0usize, 0usize);
    for (idx, spec) in plan.conns.iter().enumerate() {
        let t = match spec.role {
            Role::Publisher { .. } => {
                p += 1;
                (p - 1) % pub_threads
            }
            Role::Subscriber { .. } if split => {
                s += 1;
                pub_threads + (s - 1) % (threads - pub_threads)
            }
            Role::Subscriber { .. } | Role::Idle => {
                i += 1;
                (i - 1) % threads
            }
        };
        if let Some(v) = out.get_mut(t) {
            v.push(idx);
        }
    }
    out.retain(|v| !v.is_empty());
    out
}

/// A progress printer: one line a second on stderr.
struct Ticker {
    enabled: bool,
    start: Instant,
    last: Instant,
    last_sent: u64,
    last_delivered: u64,
    target: u64,
}

impl Ticker {
    fn tick(&mut self, shared: &Shared, force: bool) {
        if !self.enabled || (!force && self.last.elapsed() < Duration::from_secs(1)) {
            return;
        }
        let dt = self.last.elapsed().as_secs_f64().max(1e-3);
        let sent = shared.sent.load(Ordering::Relaxed);
        let delivered = shared.delivered.load(Ordering::Relaxed);
        let p = Progress {
            elapsed_secs: self.start.elapsed().as_secs_f64(),
            phase: shared.phase().name(),
            sent_per_sec: (sent - self.last_sent.min(sent)) as f64 / dt,
            delivered_per_sec: (delivered - self.last_delivered.min(delivered)) as f64 / dt,
            latency: shared.latency(),
            connected: shared.ready.load(Ordering::Relaxed),
            target: self.target,
            errors: shared.connect_errors.load(Ordering::Relaxed)
                + shared.errors.load(Ordering::Relaxed),
        };
        eprintln!("{p}");
        self.last = Instant::now();
        self.last_sent = sent;
        self.last_delivered = delivered;
    }

    /// Sleeps until `deadline` (or `until` holds), ticking along the way.
    fn wait(&mut self, shared: &Shared, deadline: Instant, mut until: impl FnMut() -> bool) {
        while Instant::now() < deadline && !until() {
            self.tick(shared, false);
            let left = deadline.saturating_duration_since(Instant::now());
            thread::sleep(left.min(Duration::from_millis(10)));
        }
    }
}

fn sample_broker(pid: Option<u32>) -> Result<Option<procstat::Sample>> {
    pid.map(procstat::sample).transpose()
}

fn broker_use(
    pid: Option<u32>,
    start: Option<procstat::Sample>,
    end: Option<procstat::Sample>,
) -> Option<BrokerUse> {
    let (pid, start, end) = (pid?, start?, end?);
    Some(BrokerUse {
        pid,
        cpu_secs: (end.cpu_secs - start.cpu_secs).max(0.0),
        rss_start_kib: start.rss_kib,
        rss_end_kib: end.rss_kib,
    })
}

/// Runs `plan` with `settings` and returns its summary.
///
/// # Errors
/// When the threads cannot start, the broker pid cannot be read, or (for every scenario
/// but `conn`) a connection cannot be established: the first refusal is in the error.
pub fn run(plan: Plan, settings: Settings, settings_json: serde_json::Value) -> Result<Summary> {
    let groups = assign(&plan, settings.threads);
    let shared = Arc::new(Shared::new(groups.len())?);
    let plan = Arc::new(plan);
    let settings = Arc::new(settings);
    let total = plan.conns.len() as u64;
    let pid = settings.broker_pid;
    let conn_rate_per_thread = settings.conn_rate.map(|r| r / groups.len() as f64);
    let mut ticker = Ticker {
        enabled: settings.progress,
        start: Instant::now(),
        last: Instant::now(),
        last_sent: 0,
        last_delivered: 0,
        target: total,
    };
    let before_connect = sample_broker(pid)?;

    let mut handles = Vec::new();
    for (slot, specs) in groups.iter().enumerate() {
        let worker = Worker::new(
            slot,
            specs,
            Arc::clone(&plan),
            Arc::clone(&settings),
            Arc::clone(&shared),
            conn_rate_per_thread,
        )
        .context("setting up a load thread")?;
        let handle = thread::Builder::new()
            .name(format!("loadgen-{slot}"))
            .spawn(move || worker.run())
            .context("spawning a load thread")?;
        handles.push(handle);
    }
    let join = |handles: Vec<thread::JoinHandle<WorkerResult>>| -> Result<Vec<WorkerResult>> {
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a load thread panicked")))
            .collect()
    };

    // Connect. Every connection times out on its own after --connect-timeout, so the
    // phase ends when all are settled; it is cut short only if nothing at all settles
    // for longer than that (a broker that stopped answering).
    let settled =
        || shared.ready.load(Ordering::Relaxed) + shared.connect_errors.load(Ordering::Relaxed);
    let stall_limit = settings.connect_timeout + Duration::from_secs(1);
    let mut progress = (settled(), Instant::now());
    loop {
        let now_settled = settled();
        if now_settled >= total {
            break;
        }
        if now_settled != progress.0 {
            progress = (now_settled, Instant::now());
        } else if progress.1.elapsed() > stall_limit {
            break;
        }
        ticker.wait(&shared, Instant::now() + Duration::from_millis(10), || false);
    }
    let connected_at = Instant::now();
    let after_connect = sample_broker(pid)?;
    let connect_errors = shared.connect_errors.load(Ordering::Relaxed);
    let ready = shared.ready.load(Ordering::Relaxed);
    if plan.scenario != Scenario::Conn && ready < total {
        shared.set_phase(Phase::Stop);
        let _ = join(handles);
        let first = shared.samples.lock().ok().and_then(|s| s.first().cloned());
        match first {
            Some(msg) => bail!("{connect_errors} of {total} connections failed; first: {msg}"),
            None => bail!("only {ready} of {total} connections were established in time"),
        }
    }
    let connect_secs = {
        let first = shared.first_attempt_ns.load(Ordering::Relaxed);
        let last = shared.last_ready_ns.load(Ordering::Relaxed);
        if first == u64::MAX || last < first {
            0.0
        } else {
            (last - first) as f64 / 1e9
        }
    };

    let (measured_secs, broker, results);
    if plan.scenario == Scenario::Conn {
        broker = broker_use(pid, before_connect, after_connect);
        measured_secs = connect_secs;
        ticker.wait(&shared, connected_at + settings.duration, || false);
        shared.set_phase(Phase::Stop);
        results = join(handles)?;
    } else {
        shared.set_phase(Phase::Warmup);
        ticker.wait(&shared, Instant::now() + settings.warmup, || false);
        let start_sample = sample_broker(pid)?;
        let started = Instant::now();
        shared.set_phase(Phase::Measure);
        ticker.wait(&shared, started + settings.duration, || false);
        shared.set_phase(Phase::Drain);
        measured_secs = started.elapsed().as_secs_f64();
        let end_sample = sample_broker(pid)?;
        broker = broker_use(pid, start_sample, end_sample);
        drain(&shared, &plan, &settings, &mut ticker);
        shared.set_phase(Phase::Stop);
        results = join(handles)?;
    }
    ticker.tick(&shared, true);

    let mut summary = Summary {
        scenario: plan.scenario.name().to_string(),
        settings: settings_json,
        measured_secs,
        connections: Connections {
            target: total,
            connected: ready,
            errors: connect_errors,
            connect_secs,
        },
        errors: shared.errors.load(Ordering::Relaxed),
        broker,
        ..Default::default()
    };
    for r in &results {
        summary.sent += r.measured.sent;
        summary.delivered += r.measured.delivered;
        summary.sent_bytes += r.measured.sent_bytes;
        summary.delivered_bytes += r.measured.delivered_bytes;
    }
    summary.latency = shared.latency();
    summary.verification = verify(&plan, &results);
    summary.error_samples = shared.samples.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(summary)
}

/// Waits for in-flight messages: until nothing is unacknowledged and deliveries have
/// reached what was sent (or stopped moving for a while), at most `--drain`.
fn drain(shared: &Shared, plan: &Plan, settings: &Settings, ticker: &mut Ticker) {
    let deadline = Instant::now() + settings.drain;
    let mut last = (shared.delivered.load(Ordering::Relaxed), Instant::now());
    ticker.wait(shared, deadline, || {
        let delivered = shared.delivered.load(Ordering::Relaxed);
        if delivered != last.0 {
            last = (delivered, Instant::now());
        }
        // `sent` is final only once every worker has seen the drain phase; before that
        // a stale total could make the last publishes look delivered.
        let settled = shared.settled.load(Ordering::Acquire) >= shared.inflight.len();
        let expected = shared.sent.load(Ordering::Relaxed) * u64::from(plan.copies);
        let quiet = last.1.elapsed() > Duration::from_millis(300);
        shared.inflight() == 0 && (settled && delivered >= expected || quiet)
    });
}

/// Loss / duplicate / order figures from the subscribers' trackers and the publishers'
/// sent counts. In a shared group a message is owed to the group, not to each member:
/// gaps are judged against the highest number any member saw.
fn verify(plan: &Plan, results: &[WorkerResult]) -> Verification {
    let mut sent = vec![0u64; plan.publishers as usize];
    for r in results {
        for &(id, n) in &r.pub_sent {
            if let Some(s) = sent.get_mut(id as usize) {
                *s = n;
            }
        }
    }
    let mut v = Verification::default();
    // Per publisher, over a shared group: (distinct seen, highest next).
    let mut group = vec![(0u64, 0u64); sent.len()];
    for r in results {
        for (first, trackers, foreign) in &r.subs {
            v.foreign += foreign;
            for (k, t) in trackers.iter().enumerate() {
                let id = *first as usize + k;
                let published = sent.get(id).copied().unwrap_or(0);
                v.streams += 1;
                v.duplicated += t.duplicates;
                v.reordered += t.reordered;
                v.late += t.late;
                if plan.shared_group {
                    if let Some(g) = group.get_mut(id) {
                        g.0 += t.distinct();
                        g.1 = g.1.max(t.next());
                    }
                } else {
                    v.lost += t.gaps();
                    v.undelivered += t.undelivered(published);
                }
            }
        }
    }
    if plan.shared_group {
        for (published, (distinct, next)) in sent.iter().zip(&group) {
            v.lost += next.saturating_sub(*distinct);
            v.undelivered += published.saturating_sub(*next);
            v.duplicated += distinct.saturating_sub(*published);
        }
    }
    v
}

/// Whether stderr is a terminal (progress lines are only printed there by default).
pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Sizes;

    #[test]
    fn publishers_and_subscribers_get_their_own_threads() {
        let plan = Plan::build(
            Scenario::Pairs,
            Sizes { pairs: Some(4), ..Default::default() },
            "t",
            "c",
            "g",
        )
        .unwrap();
        let groups = assign(&plan, 2);
        assert_eq!(groups.len(), 2);
        assert!(groups[0].iter().all(|&i| matches!(plan.conns[i].role, Role::Publisher { .. })));
        assert!(groups[1].iter().all(|&i| matches!(plan.conns[i].role, Role::Subscriber { .. })));
        let single = assign(&plan, 1);
        assert_eq!(single[0].len(), 8);
    }

    fn tracker(seqs: impl IntoIterator<Item = u64>) -> crate::payload::SeqTracker {
        let mut t = crate::payload::SeqTracker::default();
        for s in seqs {
            t.record(s);
        }
        t
    }

    #[test]
    fn verify_separates_gaps_from_the_undelivered_tail() {
        let plan = Plan::build(
            Scenario::Pairs,
            Sizes { pairs: Some(1), ..Default::default() },
            "t",
            "c",
            "g",
        )
        .unwrap();
        // Sent 10; 3 never arrived although 7 did; 8 and 9 were still queued.
        let r = WorkerResult {
            pub_sent: vec![(0, 10)],
            subs: vec![(0, vec![tracker([0, 1, 2, 4, 5, 6, 7, 7])], 1)],
            ..Default::default()
        };
        let v = verify(&plan, &[r]);
        assert_eq!((v.lost, v.undelivered, v.duplicated, v.foreign, v.streams), (1, 2, 1, 1, 1));
    }

    #[test]
    fn verify_judges_a_shared_group_as_a_whole() {
        let sizes = Sizes { publishers: Some(1), subscribers: Some(2), ..Default::default() };
        let plan = Plan::build(Scenario::Shared, sizes, "t", "c", "g").unwrap();
        let r = WorkerResult {
            pub_sent: vec![(0, 6)],
            subs: vec![(0, vec![tracker([0, 2, 4])], 0), (0, vec![tracker([1, 3])], 0)],
            ..Default::default()
        };
        let v = verify(&plan, &[r]);
        // 5 was never seen by either member: the tail, not a gap.
        assert_eq!((v.lost, v.undelivered, v.duplicated), (0, 1, 0));
    }
}
