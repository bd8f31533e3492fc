//! One event loop thread: a `mio::Poll`, its share of the connections, the sessions of
//! the client ids it is home to, and its subscription trie.
//!
//! Per iteration: poll → drain a bounded number of batches from other workers →
//! accept / read at most a read budget per connection (decode every complete frame,
//! feed the session, encode its output into the connection's write buffer), including
//! the connections left on the ready list last iteration → timers (once a second) →
//! send this iteration's publish batches to the other workers (one wake-up each) →
//! write every connection that has bytes owed → close what ended.
//!
//! Neighbours: per-connection I/O is `conn.rs`; accepting and adopting handed-off
//! sockets `listener.rs`; CONNECT, client ids and takeover `connect.rs`; routing and
//! delivery `delivery.rs`.

mod authz;
mod bench;
mod conn;
mod connect;
mod delivery;
mod durable;
mod enhanced;
mod interest;

pub(crate) use interest::Interest;
mod link;
mod listener;
mod match_cache;
mod ops;
mod rebuild;
mod shared;
mod sys;
mod will;

pub(crate) use link::{Layer, ListenerSpec};

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::TcpListener;
use mio::{Events, Poll, Registry, Token, Waker};
use parking_lot::Mutex;
use shoal_core::session::{LinkLoss, Message, PublishCache, SentCounts};
use shoal_core::topic::MatchSet;
use shoal_core::{Limits, SubscriptionTrie};
use slab::Slab;

use crate::auth::Hooks;
use crate::config::BrokerLimits;
use crate::control::{control_channel, AdminQuery, ControlLink};
use crate::metrics::{Metrics, WorkerCounters};
use crate::route::{Handoff, Peer, WorkerMsg, CHANNEL_BATCHES};
use crate::store::{MemorySessionStore, RetainedStore, SessionKey, SessionStore};
use conn::{Conn, ConnState, Pressure, WriteOutcome};
use delivery::SubValue;
use match_cache::MatchCache;
pub(crate) use ops::OpsSettings;
use ops::SysPublisher;
pub(crate) use shared::ShareMsg;

pub(crate) use durable::{recovered_message, DurableShared};

use crate::idhash::IdHasher as KeyHasher;

/// Token of the worker's `Waker`.
const WAKER: Token = Token(0);
/// Listener `i` has token `LISTENER_BASE + i`.
const LISTENER_BASE: usize = 1;
/// Most listeners a broker may have.
const MAX_LISTENERS: usize = 1023;
/// Connection `k` of the slab has token `CONN_BASE + k`.
const CONN_BASE: usize = LISTENER_BASE + MAX_LISTENERS;
/// Timer resolution: CONNECT timeout, keep-alive, expiry and buffer release.
const TICK: Duration = Duration::from_secs(1);
/// Poll timeout while a peer's channel is full or reads are deferred.
const BACKOFF: Duration = Duration::from_millis(1);
/// How long a congested subscriber may hold publishers back before it is treated as a
/// slow consumer (and its messages are dropped or queued instead).
const STALL_LIMIT: Duration = Duration::from_millis(250);
/// How long shutdown keeps flushing what is owed to clients.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
/// How long shutdown waits for the other workers' wills before disconnecting clients.
const SHUTDOWN_WILLS: Duration = Duration::from_secs(1);
/// How long a closed connection may keep its socket to write what it still owes (a
/// DISCONNECT behind a full socket or behind output held for the durable store).
const CLOSE_LINGER: Duration = Duration::from_secs(3);
/// Socket traffic in one tick that makes a burst, after which freed memory is returned
/// to the OS once a tick passes with less than `QUIET_BYTES` (see `trim_after_burst`).
const BURST_BYTES: u64 = 8 << 20;
const QUIET_BYTES: u64 = 256 << 10;
/// Publish batches from other workers handled per iteration before this worker
/// reads and writes its own sockets again.
const DRAIN_BATCHES: usize = 16;
/// Largest publish batch a worker delivers itself for a waiting peer (see `serve_peer`):
/// a trickle, where the wake-up of the peer's thread is most of the latency. Bigger
/// batches go to the peer's own thread, which runs on the other core in parallel.
const SERVE_MESSAGES: usize = 8;
/// A peer's service that wrote more packets than this (a fan-out to many of its
/// subscribers) is not offered again for `SERVE_COOLDOWN` flushes: that much work is
/// better done on the peer's own core. Counted in packets, not time: a service that
/// was preempted on a busy machine did no more work, and taking the next ones off the
/// fast path for it doubled the latency tail.
const SERVE_PACKETS: u64 = 64;
/// Long enough that a steady fan-out is served by the peer's own thread nearly always
/// (with 64 flushes, serving one batch in 65 cost 1 → 100 fan-out 10-20% of its rate).
const SERVE_COOLDOWN: u16 = 4096;

/// What every worker shares, set up once by `Broker::start`.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) retained: Arc<dyn RetainedStore>,
    /// Sockets over all workers, lingering ones included: they bound the descriptors
    /// at accept (`max_connections + REFUSAL_SLOTS`).
    pub(crate) connections: Arc<AtomicUsize>,
    /// Of `connections`, those closed but lingering to write what they owe
    /// (`CLOSE_LINGER`). `max_connections` counts the others only: a closed
    /// connection is no client's any more, and one reconnecting at once after it was
    /// kicked or taken over must not be refused because of its own old socket.
    pub(crate) lingering: Arc<AtomicUsize>,
    pub(crate) shutdown: Arc<AtomicBool>,
    /// Workers that have routed their shutdown wills (see `shutdown_connections`).
    pub(crate) wills_routed: Arc<AtomicUsize>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) broker_limits: BrokerLimits,
    pub(crate) workers: usize,
    /// How a shared subscription group picks the member for a message.
    pub(crate) share_strategy: crate::config::ShareStrategy,
    /// Password/ACL files, an application's hooks and the connection rate limit, in
    /// one chain; `None` when nothing is configured (no call on any path then).
    pub(crate) hooks: Option<Arc<dyn Hooks>>,
    /// Transport, TLS config and connection count of each listener, in config order.
    pub(crate) listeners: Arc<[ListenerSpec]>,
    /// Every worker's metrics slot; each worker writes its own once a second.
    pub(crate) metrics: Arc<Metrics>,
    /// `$SYS`, client events, listener names.
    pub(crate) ops: OpsSettings,
    /// Which workers' subscriptions may match a topic (`route` skips the others).
    pub(crate) interest: Arc<Interest>,
}

impl Shared {
    /// Forgets a dropped connection in the broker-wide and per-listener counts
    /// (`lingered`: it was counted as lingering too).
    pub(crate) fn forget_connection(&self, listener: u16, lingered: bool) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        if lingered {
            self.lingering.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(spec) = self.listeners.get(usize::from(listener)) {
            spec.close(lingered);
        }
    }

    /// Counts a closed connection of `listener` as lingering: from now on it holds a
    /// descriptor but no place under `max_connections`.
    fn start_lingering(&self, listener: u16) {
        self.lingering.fetch_add(1, Ordering::Relaxed);
        if let Some(spec) = self.listeners.get(usize::from(listener)) {
            spec.start_lingering();
        }
    }

    /// Open connections over all workers that count against `max_connections`: `open`
    /// sockets (a `connections` reading) less the lingering ones.
    pub(crate) fn live_connections(&self, open: usize) -> usize {
        open.saturating_sub(self.lingering.load(Ordering::Relaxed))
    }
}

/// One event loop and everything it owns.
pub(crate) struct Worker {
    id: usize,
    /// Taken by `run` for the worker's life: the thread waits in it without holding the
    /// worker's lock.
    poll: Option<Poll>,
    /// Registers sockets with `poll`, also while a peer serves this worker.
    registry: Registry,
    waker: Arc<Waker>,
    rx: Receiver<WorkerMsg>,
    tx: Sender<WorkerMsg>,
    peers: Vec<Peer>,
    listeners: Vec<TcpListener>,
    conns: Slab<Conn>,
    sessions: MemorySessionStore,
    trie: SubscriptionTrie<SessionKey, SubValue>,
    /// Reused for every trie walk's matches.
    matches: MatchSet<SessionKey, SubValue, KeyHasher>,
    /// Matches by topic, cleared on every change to `trie`.
    match_cache: MatchCache,
    /// The last QoS 0 PUBLISH encoded, reused for every subscriber of the same message
    /// and wire form.
    publish_cache: PublishCache,
    /// The copy of the message being delivered that queues keep (see `Detached`).
    detached: delivery::Detached,
    /// Publishes for each other worker, sent at the end of the iteration.
    outbox: Vec<Vec<Arc<Message>>>,
    /// Some outbox reached `OUTBOX_BATCH_MESSAGES`: send it before reading more.
    outbox_full: bool,
    /// Where every `read` lands; allocated and zeroed once, reused for every read.
    scratch: Box<[u8]>,
    /// Decode buffer shared by all connections: the bytes just read (behind a small
    /// partial frame left by the previous read). Frames are split off it, so routed
    /// payloads share its allocation; a partial frame is copied out to the
    /// connection's own `rbuf`.
    inbuf: BytesMut,
    /// Connections with bytes to write this iteration.
    dirty: Vec<usize>,
    /// Connections whose CONNECT this iteration admitted (`release_admitted`).
    admitted: Vec<usize>,
    /// Connections that joined a shared group homed on another worker: their output
    /// (the SUBACK) waits while a share message is still held back by a full channel,
    /// so the `Join` reaches the group home before any publish the SUBACK prompts.
    share_waiting: Vec<usize>,
    /// Connections to close at the end of the iteration.
    closing: Vec<usize>,
    /// Closed connections that still owe bytes, and when they go regardless
    /// (`CLOSE_LINGER`). Nothing is read from them.
    lingering: Vec<(usize, Instant)>,
    /// Connections to read again next iteration without waiting for an event: their
    /// read budget ran out or reads were deferred (peer channel full), and mio is
    /// edge-triggered, so no new event comes for bytes already in the kernel.
    ready: Vec<usize>,
    /// Connections over a high watermark (`Pressure::Congested`) and since when. While
    /// it is non-empty, publishers on this worker are not read and publish batches from
    /// other workers are not drained (their channels fill, so they stop reading theirs).
    congested: Vec<(usize, Instant)>,
    /// The channel still held publish batches after `DRAIN_BATCHES`.
    channel_pending: bool,
    peers_full: bool,
    shared: Shared,
    /// Counter behind broker-assigned client ids.
    next_assigned: u64,
    /// Shared subscription groups this worker is home to.
    share: shared::ShareGroups,
    /// Share messages for each other worker, sent at the end of the iteration.
    share_out: Vec<Vec<shared::ShareMsg>>,
    /// Wills waiting for their Will Delay Interval (v5).
    pending_wills: Vec<will::PendingWill>,
    /// Hot-path counters: plain integers, copied into `shared.metrics` on the tick.
    counters: WorkerCounters,
    /// Packets encoded for clients (counted by the session encoder).
    sent: SentCounts,
    /// Worker 0 publishes `$SYS`; `None` on the others or when it is off.
    sys: Option<SysPublisher>,
    /// Admin queries (see `crate::control`), apart from the publish channel.
    control_rx: Receiver<AdminQuery>,
    control: ControlLink,
    /// The durable store's link and bookkeeping; `None` with persistence off.
    durable: Option<Box<durable::Durable>>,
    /// Per peer: the last publish mark owed to it, sent once its publish batches are
    /// out (share marks go straight into `share_out`).
    owed_marks: Vec<u64>,
    /// Identity and publish buckets per session; empty unless hooks or publish limits
    /// are configured (see `authz.rs`).
    clients: HashMap<SessionKey, authz::ClientState, KeyHasher>,
    /// Enhanced authentication (MQTT 5 AUTH) per connection index, for connections whose
    /// CONNECT named an Authentication Method (see `enhanced.rs`); removed with the
    /// connection. Empty unless a hook provides a method.
    auth: HashMap<usize, Box<enhanced::ConnAuth>, KeyHasher>,
    /// Connections accepted over `max_connections` (at most `REFUSAL_SLOTS` over all
    /// workers) whose CONNECT gets a refusal in CONNACK; forgotten when they close.
    refusing: Vec<usize>,
    /// Accepted sockets get `TCP_NODELAY` from their listener (set once in `new`), so
    /// accept need not set it on each.
    nodelay_inherited: bool,
    /// Per peer: connections handed to it this iteration (`hand_off`), sent as one
    /// message with one wake-up in `flush_outbox`. A full channel keeps them here for
    /// the next iteration (their clients wait for CONNACK a little longer); they are
    /// never dropped for a burst of connects.
    handoff_out: Vec<Vec<Handoff>>,
    /// Some `handoff_out` found its peer's channel full: poll again after `BACKOFF`.
    handoffs_waiting: bool,
    /// Bytes read and written up to the last tick (`trim_after_burst`).
    traffic_at_tick: u64,
    /// A burst went through: return free memory at the next quiet tick.
    trim_owed: bool,
    /// When `tick` runs next.
    next_tick: Instant,
    /// A peer's thread runs this worker now (`serve_peer`): it serves no one in turn.
    serving: bool,
    /// Per peer: flushes left before serving it may be tried again (`SERVE_PACKETS`).
    serve_cooldown: Vec<u16>,
}

impl Worker {
    /// Creates the poll, waker and channel and registers the listeners.
    pub(crate) fn new(
        id: usize,
        listeners: &[std::net::TcpListener],
        shared: Shared,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL_BATCHES);
        let (control, control_rx) = control_channel(waker.clone());
        let sys = match shared.ops.sys_interval {
            Some(interval) if id == 0 => Some(SysPublisher::new(interval, Instant::now())),
            _ => None,
        };
        let mut mine = Vec::with_capacity(listeners.len());
        let mut nodelay_inherited = true;
        for (i, l) in listeners.iter().enumerate().take(MAX_LISTENERS) {
            // Every worker polls a clone of the same listening socket; whichever wakes
            // first accepts (see docs/ARCHITECTURE.md, "Listeners").
            let mut l = TcpListener::from_std(l.try_clone()?);
            sys::register_listener(poll.registry(), &mut l, Token(LISTENER_BASE + i))?;
            nodelay_inherited &= sys::set_listener_nodelay(&l);
            mine.push(l);
        }
        Ok(Self {
            id,
            registry: poll.registry().try_clone()?,
            poll: Some(poll),
            waker,
            rx,
            tx,
            peers: Vec::new(),
            listeners: mine,
            conns: Slab::new(),
            sessions: MemorySessionStore::default(),
            trie: SubscriptionTrie::new(),
            matches: MatchSet::with_hasher(KeyHasher),
            match_cache: MatchCache::default(),
            detached: delivery::Detached::default(),
            publish_cache: PublishCache::default(),
            outbox: Vec::new(),
            outbox_full: false,
            scratch: vec![0; conn::READ_CHUNK_BYTES].into_boxed_slice(),
            inbuf: BytesMut::new(),
            dirty: Vec::new(),
            admitted: Vec::new(),
            share_waiting: Vec::new(),
            closing: Vec::new(),
            lingering: Vec::new(),
            ready: Vec::new(),
            congested: Vec::new(),
            channel_pending: false,
            peers_full: false,
            next_assigned: 0,
            counters: WorkerCounters::default(),
            sent: SentCounts::default(),
            sys,
            control_rx,
            control,
            share: shared::ShareGroups::new(id, shared.share_strategy),
            share_out: (0..shared.workers).map(|_| Vec::new()).collect(),
            pending_wills: Vec::new(),
            shared,
            durable: None,
            owed_marks: Vec::new(),
            clients: HashMap::with_hasher(KeyHasher),
            auth: HashMap::with_hasher(KeyHasher),
            refusing: Vec::new(),
            nodelay_inherited,
            handoff_out: Vec::new(),
            handoffs_waiting: false,
            traffic_at_tick: 0,
            trim_owed: false,
            next_tick: Instant::now() + TICK,
            serving: false,
            serve_cooldown: Vec::new(),
        })
    }

    pub(crate) fn id(&self) -> usize {
        self.id
    }

    /// How other workers reach this one.
    pub(crate) fn peer(&self) -> Peer {
        Peer { tx: self.tx.clone(), waker: self.waker.clone(), cell: Weak::new() }
    }

    /// How the admin listener reaches this worker.
    pub(crate) fn control(&self) -> ControlLink {
        self.control.clone()
    }

    /// Every worker's peer handle, indexed by worker id (this one included).
    pub(crate) fn set_peers(&mut self, peers: Vec<Peer>) {
        // Resized, not replaced: recovery may have queued messages for peers already
        // (a restored session joining a shared group homed on another worker).
        self.outbox.resize_with(peers.len(), Vec::new);
        self.share_out.resize_with(peers.len(), Vec::new);
        self.owed_marks.resize(peers.len(), 0);
        self.handoff_out.resize_with(peers.len(), Vec::new);
        self.serve_cooldown.resize(peers.len(), 0);
        self.peers = peers;
    }

    /// Runs the event loop of the worker in `cell` until shutdown.
    ///
    /// The thread holds the worker's lock while it handles events, not while it waits
    /// for them: a waiting worker can be run by a peer's thread for a moment
    /// (`serve_peer`), which delivers what that peer just sent it.
    ///
    /// # Errors
    /// A failing `poll` (the OS event queue itself broke), or a worker run twice.
    pub(crate) fn run(cell: &Mutex<Worker>) -> io::Result<()> {
        let mut poll = cell
            .lock()
            .poll
            .take()
            .ok_or_else(|| io::Error::other("worker event loop started twice"))?;
        let mut events = Events::with_capacity(1024);
        // Log lines are written once per iteration (and whatever is left when this
        // returns or unwinds), not once per line.
        let _held = crate::log_output::hold();
        loop {
            let timeout = {
                let w = cell.lock();
                if w.shared.shutdown.load(Ordering::Relaxed) {
                    break;
                }
                w.poll_timeout()
            };
            match poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            cell.lock().iterate(&events);
            crate::log_output::flush();
        }
        cell.lock().shutdown_connections(&mut poll);
        Ok(())
    }

    /// How long the next `poll` may wait.
    fn poll_timeout(&self) -> Duration {
        if self.waits_on_others() || !self.congested.is_empty() {
            BACKOFF
        } else if !self.ready.is_empty() || self.channel_pending {
            Duration::ZERO
        } else {
            self.next_tick.saturating_duration_since(Instant::now())
        }
    }

    /// Some work waits for room elsewhere: a peer's channel, or the durable store.
    fn waits_on_others(&self) -> bool {
        self.peers_full
            || self.handoffs_waiting
            || self.durable.as_ref().is_some_and(|d| d.backlogged())
    }

    /// One pass of the event loop over what `poll` reported.
    fn iterate(&mut self, events: &Events) {
        let now = Instant::now();
        self.durable_poll(now);
        self.refresh_pressure(now);
        // Other workers' messages first: whatever they sent before this iteration's
        // socket reads happened earlier (a shared-subscription join sent before its
        // SUBACK must reach the group home before a publish the SUBACK prompted).
        self.drain_channel(now);
        for ev in events.iter() {
            match ev.token() {
                WAKER => {}
                Token(t) if t < CONN_BASE => self.accept(t - LISTENER_BASE, now),
                Token(t) => {
                    let idx = t - CONN_BASE;
                    // Readiness is a hint: spurious events and stale tokens are normal;
                    // `read`/`write` give the real answer.
                    // A connection on the ready list is read below, once.
                    let listed = self.conns.get(idx).is_some_and(|c| c.ready);
                    if !listed && (ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                        let edge = !ev.is_read_closed() && !ev.is_error();
                        self.on_readable(idx, now, edge);
                    }
                    if ev.is_writable() {
                        self.mark_dirty(idx);
                    }
                }
            }
        }
        if !self.peers_full {
            self.read_ready(now);
        }
        self.drain_control(now);
        if now >= self.next_tick {
            self.tick(now);
            self.publish_metrics(now);
            self.next_tick = now + TICK;
        }
        self.finish_iteration(now);
    }

    /// The end of every pass: what was routed goes to the store and the peers, what
    /// is owed to clients is written, ended connections close.
    fn finish_iteration(&mut self, start: Instant) {
        self.durable_end();
        self.flush_outbox();
        self.send_marks();
        self.flush_dirty(start);
        self.release_admitted();
        self.close_pending(start);
        let busy = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.counters.busy_nanos = self.counters.busy_nanos.wrapping_add(busy);
    }

    /// Run by a peer's thread while this worker's own thread waits in `poll`: handles
    /// what the channel holds and writes it out, like the start and end of an
    /// iteration (no socket is read). True if nothing is left that needs this worker's
    /// own thread before its next timer, so it need not be woken.
    fn serve(&mut self) -> bool {
        let now = Instant::now();
        self.serving = true;
        self.refresh_pressure(now);
        self.drain_channel(now);
        self.finish_iteration(now);
        self.serving = false;
        !self.waits_on_others()
            && !self.channel_pending
            && self.ready.is_empty()
            && self.dirty.is_empty()
            && self.congested.is_empty()
    }

    /// Reads again the connections left on the ready list by the previous iteration.
    fn read_ready(&mut self, now: Instant) {
        let ready = std::mem::take(&mut self.ready);
        for &idx in &ready {
            if let Some(c) = self.conns.get_mut(idx) {
                c.ready = false;
            }
        }
        for idx in ready {
            self.on_readable(idx, now, false);
        }
    }

    /// Forgets congested connections that calmed down or closed, and turns those
    /// congested for longer than `STALL_LIMIT` into slow consumers.
    fn refresh_pressure(&mut self, now: Instant) {
        if self.congested.is_empty() {
            return;
        }
        let conns = &mut self.conns;
        self.congested.retain(|&(idx, since)| match conns.get_mut(idx) {
            Some(c) if c.pressure == Pressure::Congested => {
                if now.saturating_duration_since(since) < STALL_LIMIT {
                    return true;
                }
                c.pressure = Pressure::Slow;
                log::debug!("client at {} is a slow consumer", c.addr);
                false
            }
            _ => false,
        });
    }

    /// Puts a connection on the ready list (once).
    fn mark_ready(&mut self, idx: usize) {
        if let Some(c) = self.conns.get_mut(idx) {
            if !c.ready {
                c.ready = true;
                self.ready.push(idx);
            }
        }
    }

    /// Handles what other workers sent: at most `DRAIN_BATCHES` publish batches, so
    /// a flood from peers cannot starve this worker's own sockets; the rest waits for
    /// the next iteration (polled with a zero timeout).
    fn drain_channel(&mut self, now: Instant) {
        let mut batches = 0;
        while batches < DRAIN_BATCHES {
            if !self.congested.is_empty() {
                // Back-pressure: leave the batches to fill the channel, so their senders
                // stop reading their publishers.
                break;
            }
            let Ok(msg) = self.rx.try_recv() else { break };
            if self.handle_worker_msg(msg, now) {
                batches += 1;
            }
        }
        self.channel_pending = !self.rx.is_empty();
    }

    /// Handles one message from another worker; true for a batch of messages.
    fn handle_worker_msg(&mut self, msg: WorkerMsg, now: Instant) -> bool {
        match msg {
            WorkerMsg::Publish(batch) => {
                for m in &batch {
                    self.deliver_local(m, now);
                }
                true
            }
            WorkerMsg::Handoff(batch) => {
                for h in batch {
                    self.adopt(h, now);
                }
                false
            }
            WorkerMsg::Share(batch) => {
                for m in batch {
                    self.handle_share(m, now);
                }
                true
            }
            WorkerMsg::Mark { from, mark } => {
                if let Some(d) = self.durable.as_mut() {
                    d.on_mark(durable::MarkKind::Publish, from, mark);
                }
                false
            }
        }
    }

    /// Shutdown: routes this worker's wills, then handles the other workers' until
    /// every worker has sent its own (at most `SHUTDOWN_WILLS`), so that subscribers
    /// still connected get them before DISCONNECT and persistent sessions queue them.
    fn exchange_shutdown_wills(&mut self, poll: &mut Poll, now: Instant) {
        self.publish_shutdown_wills(now);
        let deadline = now + SHUTDOWN_WILLS;
        let mut events = Events::with_capacity(64);
        let mut counted = false;
        loop {
            while let Ok(msg) = self.rx.try_recv() {
                self.handle_worker_msg(msg, now);
            }
            self.flush_outbox();
            self.flush_dirty(now);
            // `peers_full`: some batch found its peer's channel full and is kept.
            let sent = !self.peers_full;
            if sent && !counted {
                // Everything this worker routed is in the peers' channels now.
                counted = true;
                self.shared.wills_routed.fetch_add(1, Ordering::AcqRel);
                for p in &self.peers {
                    let _ = p.waker.wake();
                }
            }
            let all = self.shared.wills_routed.load(Ordering::Acquire) >= self.shared.workers;
            if counted && all && self.rx.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("worker {}: shutdown went on without every worker's wills", self.id);
                break;
            }
            crate::log_output::flush();
            let _ = poll.poll(&mut events, Some(left.min(Duration::from_millis(10))));
        }
    }

    /// Sends each non-empty outbox as one batch, waking the peer once. A full channel
    /// keeps the batch and turns on back-pressure (reads are deferred).
    /// Connections handed to a peer this iteration (`hand_off`) go first, as one
    /// message, with the same wake-up.
    ///
    /// A small publish batch for a peer whose thread is waiting is delivered by this
    /// thread instead (`serve_peer`): no wake-up hop between the publisher's socket and
    /// the subscriber's. Not while this worker is itself being served, nor at shutdown.
    fn flush_outbox(&mut self) {
        let mut full = false;
        let mut handoffs_waiting = false;
        let may_serve = !self.serving && !self.shared.shutdown.load(Ordering::Relaxed);
        for (i, peer) in self.peers.iter().enumerate() {
            let mut wake = false;
            let mut serve = false;
            if let Some(out) = self.handoff_out.get_mut(i).filter(|o| !o.is_empty()) {
                match peer.tx.try_send(WorkerMsg::Handoff(std::mem::take(out))) {
                    Ok(()) => wake = true,
                    Err(TrySendError::Full(WorkerMsg::Handoff(batch))) => {
                        *out = batch;
                        handoffs_waiting = true;
                    }
                    Err(e) => {
                        // The peer has exited (shutdown): the sockets close.
                        if let WorkerMsg::Handoff(batch) = e.into_inner() {
                            for h in batch {
                                self.shared.forget_connection(h.listener, false);
                            }
                        }
                    }
                }
            }
            let Some(out) = self.outbox.get_mut(i) else { continue };
            if i != self.id && !out.is_empty() {
                let batch = std::mem::take(out);
                let small = batch.len() <= SERVE_MESSAGES;
                match peer.tx.try_send(WorkerMsg::Publish(batch)) {
                    Ok(()) => {
                        wake = true;
                        serve = may_serve && small;
                    }
                    Err(TrySendError::Full(WorkerMsg::Publish(batch))) => {
                        *out = batch;
                        full = true;
                    }
                    // A peer that has exited (shutdown) takes nothing more.
                    Err(_) => {}
                }
            }
            if wake && serve {
                if let Some(cooldown) = self.serve_cooldown.get_mut(i) {
                    wake = !serve_peer(peer, cooldown);
                }
            }
            if wake {
                if let Err(e) = peer.waker.wake() {
                    log::warn!("worker {}: cannot wake worker {i}: {e}", self.id);
                }
            }
        }
        let share_full = self.flush_share_out();
        self.peers_full = full || share_full;
        self.handoffs_waiting = handoffs_waiting;
        self.outbox_full = false;
    }

    fn mark_dirty(&mut self, idx: usize) {
        if let Some(c) = self.conns.get_mut(idx) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(idx);
            }
        }
    }

    /// Writes every connection with bytes owed; frees room lets sessions send queued
    /// messages, which may dirty the connection again (handled in the same pass). A
    /// connection whose reads were paused for a full write buffer is read again once
    /// the buffer is below `max_outgoing_bytes`.
    fn flush_dirty(&mut self, now: Instant) {
        let max_out = self.shared.broker_limits.max_outgoing_bytes;
        // `flush_outbox` ran first: a share message still here found its channel full.
        let share_held =
            !self.share_waiting.is_empty() && self.share_out.iter().any(|out| !out.is_empty());
        if !share_held {
            self.share_waiting.clear();
        }
        let mut deferred = Vec::new();
        let mut rounds = 0;
        while !self.dirty.is_empty() && rounds < 4 {
            rounds += 1;
            let dirty = std::mem::take(&mut self.dirty);
            for idx in dirty {
                if share_held && self.share_waiting.contains(&idx) {
                    // Still dirty: written once the share messages have gone.
                    deferred.push(idx);
                    continue;
                }
                let Some(conn) = self.conns.get_mut(idx) else { continue };
                conn.dirty = false;
                match conn.flush(&mut self.counters.bytes_sent) {
                    WriteOutcome::Failed => self.link_lost(idx, LinkLoss::SocketClosed, now),
                    _ => {
                        if conn.wbuf.len() < max_out {
                            let resume = std::mem::take(&mut conn.read_paused);
                            if let Some(key) = conn.session() {
                                self.pump_transmit(key, now);
                            }
                            if resume {
                                self.mark_ready(idx);
                            }
                        }
                    }
                }
            }
        }
        self.dirty.extend(deferred);
    }

    /// Frees what connections admitted this iteration used only to connect: the
    /// session's transmit and event queues (CONNACK went through them) and the write
    /// buffer, once the CONNACK is out. Most clients then sit idle, and the tick's
    /// sweep would free these a second later all at once, leaving holes between the
    /// small allocations that stay (client ids) that keep their pages resident; freed
    /// now, the next connection's identical allocations take their place (19,000
    /// idle connections: see PERFORMANCE.md).
    fn release_admitted(&mut self) {
        for idx in std::mem::take(&mut self.admitted) {
            let Some(conn) = self.conns.get_mut(idx) else { continue };
            conn.release_idle_buffers();
            if let Some(key) = conn.session() {
                if let Some(slot) = self.sessions.get_mut(key) {
                    slot.session.release_idle_memory();
                }
            }
        }
    }

    /// Drops connections that ended, once they have written what they owe: the last
    /// packets (a server DISCONNECT above all) may wait behind a full socket or behind
    /// output held until the durable store commits. Such a connection lingers, read no
    /// more, until its buffer is written (its writable events and hold releases flush
    /// it) or `CLOSE_LINGER` has passed, and is dropped then either way.
    fn close_pending(&mut self, now: Instant) {
        for idx in std::mem::take(&mut self.closing) {
            self.lingering.push((idx, now + CLOSE_LINGER));
        }
        if self.lingering.is_empty() {
            return;
        }
        let mut lingering = std::mem::take(&mut self.lingering);
        let mut gone = Vec::new();
        lingering.retain(|&(idx, until)| {
            let Some(conn) = self.conns.get_mut(idx) else { return false };
            let outcome = conn.flush(&mut self.counters.bytes_sent);
            let owed = outcome == WriteOutcome::Pending || !conn.wbuf.is_empty();
            let keep = outcome != WriteOutcome::Failed && owed && now < until;
            if !keep {
                gone.push(idx);
            } else if let ConnState::Closing { lingering: l @ false } = &mut conn.state {
                *l = true;
                self.shared.start_lingering(conn.listener);
            }
            keep
        });
        self.lingering = lingering;
        for idx in gone {
            self.drop_closed(idx);
        }
    }

    /// Ends the layers, writes their last bytes and drops the connection.
    fn drop_closed(&mut self, idx: usize) {
        let Some(mut conn) = self.conns.try_remove(idx) else { return };
        if !self.refusing.is_empty() {
            self.refusing.retain(|&i| i != idx);
        }
        if !self.auth.is_empty() {
            self.auth.remove(&idx);
        }
        conn.close_notify();
        let _ = conn.flush(&mut self.counters.bytes_sent);
        // No `deregister`: dropping the socket closes its only descriptor, which takes
        // it out of the `Poll` (one `epoll_ctl` less per connection).
        self.shared.forget_connection(conn.listener, conn.state.is_lingering());
    }

    /// Marks a connection to be closed at the end of the iteration.
    fn close_later(&mut self, idx: usize) {
        if let Some(c) = self.conns.get_mut(idx) {
            if !c.state.is_closing() {
                c.state = ConnState::Closing { lingering: false };
                self.closing.push(idx);
            }
        }
    }

    /// Once a second: CONNECT timeouts, keep-alive, session expiry, idle buffers, and
    /// the sessions' queue drops into the counters.
    fn tick(&mut self, now: Instant) {
        // Releases the last published message (and the read buffer its payload shares).
        self.publish_cache.clear();
        self.trim_after_burst();
        self.publish_due_wills(now);
        let connect_timeout = self.shared.broker_limits.connect_timeout;
        let mut timed_out = Vec::new();
        let mut active = Vec::new();
        for (idx, conn) in self.conns.iter_mut() {
            conn.release_idle_buffers();
            match conn.state {
                ConnState::Pending { since } | ConnState::Authenticating { since }
                    if now.saturating_duration_since(since) >= connect_timeout =>
                {
                    timed_out.push(idx);
                }
                ConnState::Active { session, .. } => active.push(session),
                _ => {}
            }
        }
        for idx in timed_out {
            if let Some(c) = self.conns.get(idx) {
                log::info!(
                    "connection from {} closed: no handshake and CONNECT within {:?}",
                    c.addr,
                    connect_timeout
                );
            }
            self.close_later(idx);
        }
        for key in active {
            if let Some(slot) = self.sessions.get_mut(key) {
                slot.session.release_idle_memory();
                if slot.session.poll_timeout().is_some_and(|t| now >= t) {
                    slot.session.handle_timeout(now);
                    self.service_session(key, now);
                }
            }
        }
        for key in self.sessions.keys() {
            let Some(slot) = self.sessions.get_mut(key) else { continue };
            // What sessions dropped from their queues (not seen by `deliver`), counted
            // before the counters are published after this tick.
            self.counters.on_queue_drops(slot.session.take_queue_drops());
            if slot.conn.is_none() && slot.session.is_expired(now) {
                self.discard_session(key, now);
            }
        }
    }

    /// After a burst of traffic (`BURST_BYTES` in a tick), at the first quiet tick,
    /// returns the memory the burst freed to the OS: at most once per burst, never
    /// while traffic flows, so it costs nothing on the hot path.
    fn trim_after_burst(&mut self) {
        let traffic = self.counters.bytes_received.wrapping_add(self.counters.bytes_sent);
        let bytes = traffic.wrapping_sub(std::mem::replace(&mut self.traffic_at_tick, traffic));
        if bytes >= BURST_BYTES {
            self.trim_owed = true;
        } else if bytes < QUIET_BYTES && std::mem::take(&mut self.trim_owed) {
            sys::release_free_memory();
        }
    }

    /// Stops accepting, tells v5 clients the server is shutting down, flushes what is
    /// owed for at most `SHUTDOWN_FLUSH`, and closes everything.
    fn shutdown_connections(&mut self, poll: &mut Poll) {
        for l in &mut self.listeners {
            sys::deregister_listener(&self.registry, l);
        }
        self.listeners.clear();
        let now = Instant::now();
        self.exchange_shutdown_wills(poll, now);
        let attached: Vec<SessionKey> =
            self.conns.iter().filter_map(|(_, c)| c.session()).collect();
        for key in attached {
            if let Some(slot) = self.sessions.get_mut(key) {
                slot.session.handle_link_lost(now, LinkLoss::ServerShutdown);
            }
            self.client_disconnected(key, shoal_core::ReasonCode::ServerShuttingDown);
            // Writes the DISCONNECT; the will went out before (exchange_shutdown_wills).
            self.pump_transmit(key, now);
            if let Some(slot) = self.sessions.get_mut(key) {
                while slot.session.poll_event().is_some() {}
            }
            // A persistent session's record says when its connection ended (and keeps
            // a will still waiting for its delay).
            self.durable_put_session(key, true);
        }
        self.durable_end();
        self.durable_drain(now + SHUTDOWN_FLUSH);
        let deadline = now + SHUTDOWN_FLUSH;
        let mut events = Events::with_capacity(256);
        let mut close_notified = false;
        loop {
            // Output held for the store is released once its commit is in.
            self.durable_poll(Instant::now());
            let mut owed = false;
            for (_, conn) in self.conns.iter_mut() {
                if !close_notified {
                    conn.close_notify();
                }
                if conn.flush(&mut self.counters.bytes_sent) == WriteOutcome::Pending {
                    owed = true;
                }
            }
            close_notified = true;
            let left = deadline.saturating_duration_since(Instant::now());
            if !owed || left.is_zero() {
                break;
            }
            crate::log_output::flush();
            let _ = poll.poll(&mut events, Some(left.min(Duration::from_millis(10))));
        }
        for (_, conn) in self.conns.iter() {
            self.shared.forget_connection(conn.listener, conn.state.is_lingering());
        }
        self.conns.clear();
        log::debug!(
            "worker {} stopped: {} deliveries dropped",
            self.id,
            self.counters.dropped_total()
        );
    }
}

/// Runs `peer`'s worker on this thread if its own thread is waiting (its lock is
/// free; never blocks for it), to deliver the batch just sent to it. True if the peer
/// was served and need not be woken.
fn serve_peer(peer: &Peer, cooldown: &mut u16) -> bool {
    if *cooldown > 0 {
        *cooldown -= 1;
        return false;
    }
    let Some(cell) = peer.cell.upgrade() else { return false };
    let Some(mut worker) = cell.try_lock() else { return false };
    let before = worker.sent.packets;
    let quiet = worker.serve();
    if worker.sent.packets.wrapping_sub(before) > SERVE_PACKETS {
        *cooldown = SERVE_COOLDOWN;
    }
    quiet
}
