//! Entry points for `shoal-benches` into the broker's real delivery and routing code.
//! Not a stable API: hidden from the docs, used only by the benches.
//!
//! - [`Fanout`]: one worker with N subscriber sessions on one topic; a publish is
//!   matched (trie or match cache) and encoded into each subscriber's write buffer, the
//!   work a worker does per publish apart from socket I/O.
//! - [`Handoff`]: two workers; publishes routed by the first travel in batches over the
//!   real bounded channel (with its `mio::Waker`) and are delivered by the second.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use shoal_core::codec::Publish;
use shoal_core::session::Message;
use shoal_core::{PacketId, QoS, TopicName};

use crate::config::Config;
use crate::store::MemoryRetainedStore;
use crate::worker::{Shared, Worker};

/// The topic every bench message is published to.
pub const TOPIC: &str = "site/17/device/4711/temperature";

/// What a worker shares, with the default config and nothing attached.
pub(crate) fn shared(workers: usize) -> Shared {
    let config = Config::default();
    Shared {
        retained: Arc::new(MemoryRetainedStore::default()),
        connections: Arc::new(AtomicUsize::new(0)),
        lingering: Arc::new(AtomicUsize::new(0)),
        shutdown: Arc::new(AtomicBool::new(false)),
        wills_routed: Arc::new(AtomicUsize::new(0)),
        limits: Arc::new(config.limits),
        broker_limits: config.broker_limits,
        workers,
        share_strategy: config.mqtt.share_strategy,
        interest: Arc::new(crate::worker::Interest::new(workers)),
        listeners: Arc::from(Vec::new()),
        metrics: Arc::new(crate::metrics::Metrics::new(
            std::time::Instant::now(),
            workers,
            Vec::new(),
        )),
        ops: crate::worker::OpsSettings {
            sys_interval: None,
            client_events: false,
            listener_names: Arc::from(Vec::new()),
        },
        hooks: None,
    }
}

/// `count` workers wired to each other, with no listener and no store.
pub(crate) fn workers(count: usize) -> io::Result<Vec<Worker>> {
    let shared = shared(count);
    let mut all = Vec::with_capacity(count);
    for id in 0..count {
        all.push(Worker::new(id, &[], shared.clone())?);
    }
    let peers: Vec<_> = all.iter().map(Worker::peer).collect();
    for w in &mut all {
        w.set_peers(peers.clone());
    }
    Ok(all)
}

/// A message as a publisher's PUBLISH becomes one: topic [`TOPIC`], `payload` bytes.
pub fn message(qos: QoS, payload: usize, now: Instant) -> io::Result<Arc<Message>> {
    let topic = TopicName::from_static(TOPIC).map_err(io::Error::other)?;
    let publish = Publish {
        dup: false,
        qos,
        retain: false,
        topic,
        packet_id: if qos == QoS::AtMostOnce { None } else { PacketId::new(7) },
        properties: Default::default(),
        payload: Bytes::from(vec![0x5a; payload]),
    };
    Ok(Arc::new(Message::from_publish(publish, Some(Arc::from("bench-publisher")), now)))
}

/// One worker with `subscribers` sessions subscribed to [`TOPIC`].
pub struct Fanout {
    worker: Worker,
    message: Arc<Message>,
    qos: QoS,
    next_id: PacketId,
    now: Instant,
    /// Keeps the loopback port the subscriber sockets came from.
    _listener: TcpListener,
}

impl Fanout {
    /// Sets up `subscribers` sessions (one loopback socket each) at `qos`, and a
    /// 64-byte message published at `qos`.
    ///
    /// # Errors
    /// Sockets or the event loop could not be set up (e.g. too few file descriptors).
    pub fn new(subscribers: usize, qos: QoS) -> io::Result<Self> {
        let now = Instant::now();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let mut worker = workers(1)?.pop().ok_or_else(|| io::Error::other("no worker"))?;
        worker.bench_add_subscribers(&listener, subscribers, TOPIC, qos, now)?;
        let message = message(qos, 64, now)?;
        let next_id = PacketId::new(1).ok_or_else(|| io::Error::other("packet id"))?;
        Ok(Self { worker, message, qos, next_id, now, _listener: listener })
    }

    /// Delivers the message to every subscriber: match, session, encode into each write
    /// buffer; at QoS 1 also each subscriber's PUBACK (so the window never fills). The
    /// buffers are then emptied as if written. Returns the bytes encoded.
    pub fn publish(&mut self) -> usize {
        self.worker.bench_deliver(&self.message, self.now);
        if self.qos != QoS::AtMostOnce {
            // Every session hands out packet ids in the same sequence.
            self.worker.bench_ack_all(self.next_id, self.now);
            self.next_id = self.next_id.next();
        }
        self.worker.bench_take_output()
    }
}

/// Two workers: the first routes, the second has one subscriber to [`TOPIC`].
pub struct Handoff {
    sender: Worker,
    receiver: Worker,
    message: Arc<Message>,
    now: Instant,
    _listener: TcpListener,
}

impl Handoff {
    /// Sets up both workers and a 64-byte QoS 0 message.
    ///
    /// # Errors
    /// Sockets or the event loops could not be set up.
    pub fn new() -> io::Result<Self> {
        let now = Instant::now();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let mut both = workers(2)?;
        let mut receiver = both.pop().ok_or_else(|| io::Error::other("no worker"))?;
        let sender = both.pop().ok_or_else(|| io::Error::other("no worker"))?;
        receiver.bench_add_subscribers(&listener, 1, TOPIC, QoS::AtMostOnce, now)?;
        let message = message(QoS::AtMostOnce, 64, now)?;
        Ok(Self { sender, receiver, message, now, _listener: listener })
    }

    /// Routes `batch` publishes on the sender (matched there too, with no local
    /// subscriber), sends them as the loop's end-of-iteration batch, and lets the
    /// receiver drain, match and encode them. Returns the bytes encoded.
    pub fn send_batch(&mut self, batch: usize) -> usize {
        let mut bytes = 0;
        for _ in 0..batch {
            self.sender.bench_route(&self.message, self.now);
        }
        self.sender.bench_flush_outbox();
        // The receiver drains a bounded number of batches per iteration.
        for _ in 0..batch.div_ceil(256).max(1) {
            self.receiver.bench_drain_channel(self.now);
            bytes += self.receiver.bench_take_output();
        }
        bytes
    }
}
