//! A durable store that is behind (issue 4: memory stays bounded under any client
//! behaviour; issue 7: acks wait for the disk). A 3.x client has no Receive Maximum to
//! respect: one that sends QoS 1 PUBLISHes without waiting for their PUBACKs, while
//! those PUBACKs wait for a commit, is read no further once `max_inflight` of its
//! answers are held, and read again when the commit releases them. Any client whose
//! held answers stand for `max_held_bytes` of publishes is paused the same way, and
//! the store's queue admits no more than `max_store_queue_bytes`. While the
//! persister's channel is full, no PUBLISH that may need the store is decoded, while
//! QoS 0 ones are. Other clients are served meanwhile.
//!
//! The slow disk is a commit that waits on a gate the test opens: the broker's own
//! persister, stopped just before it commits (`PersistOptions::faults`).

use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use std::time::Duration;

use shoal_core::ProtocolVersion::V3_1_1;
use shoal_server::home_worker;
use shoal_server::persist::{FaultInjector, PersistOptions};

use crate::harness::{wait_until, TestBroker};
use crate::http::request;
use crate::raw::wire::{self, ConnectOptions, Incoming};
use crate::raw::{RawClient, RecvError, DEADLINE};

/// Bearer token of the admin API (to read a client's `bytes_in`).
const TOKEN: &str = "backlog-token";

/// `max_inflight` of the tests' brokers: our Receive Maximum, and the bound on a 3.x
/// client's held answers.
const MAX: usize = 10;

/// Holds the persister's commits while closed.
#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
    turned: Condvar,
}

impl Gate {
    fn set(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.turned.notify_all();
    }

    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.turned.wait(closed).unwrap();
        }
    }
}

/// Opens the gate when dropped, so that a failing test still lets the broker (declared
/// before it, dropped after it) commit and shut down.
struct Opener(Arc<Gate>);

impl Drop for Opener {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// One worker (every client shares its loop), the store in `dir`, commits through
/// `gate`, the persister's channel `channel` batches deep, the admin API on.
fn broker(dir: &tempfile::TempDir, gate: &Arc<Gate>, channel: usize) -> TestBroker {
    broker_with(dir, gate, channel, &format!("max_inflight = {MAX}"))
}

/// As [`broker`], with `limits` as the `[limits]` table.
fn broker_with(
    dir: &tempfile::TempDir,
    gate: &Arc<Gate>,
    channel: usize,
    limits: &str,
) -> TestBroker {
    broker_on(1, dir, gate, channel, limits)
}

/// As [`broker_with`], with `workers` event loops.
fn broker_on(
    workers: usize,
    dir: &tempfile::TempDir,
    gate: &Arc<Gate>,
    channel: usize,
    limits: &str,
) -> TestBroker {
    let g = gate.clone();
    let faults = FaultInjector {
        before_commit: Some(Box::new(move || g.pass())),
        ..FaultInjector::default()
    };
    let options = PersistOptions {
        faults: Some(Arc::new(faults)),
        channel_capacity: channel,
        ..PersistOptions::default()
    };
    let snippet = format!(
        "workers = {workers}\npersistence = true\ndata_dir = {:?}\n[limits]\n{limits}\n\
         [admin]\nenabled = true\nbind = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
         sys_interval_secs = 0\n",
        dir.path().to_str().unwrap()
    );
    TestBroker::with_store_options(&snippet, options)
}

/// Bytes the broker has read from client `id`'s socket (admin API; the worker answers
/// the query in a loop iteration of its own).
fn bytes_in(broker: &TestBroker, id: &str) -> u64 {
    let r = request(broker.admin_addr(), "GET", &format!("/api/clients/{id}"), Some(TOKEN), None);
    r.json()["bytes_in"].as_u64().unwrap_or_else(|| panic!("no bytes_in for {id}: {}", r.text()))
}

#[test]
fn a_3x_publisher_ignoring_its_window_is_not_read_while_its_pubacks_wait_for_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let broker = broker(&dir, &gate, 1024);
    let _opener = Opener(gate.clone());
    // Every QoS 1 message to this persistent session is written, so each PUBACK to the
    // publisher waits for a commit.
    let (mut keeper, _) =
        RawClient::connect_with(broker.addr(), &ConnectOptions::persistent(V3_1_1, "keeper"));
    keeper.subscribe_one("held/#", 1);
    let mut watcher = RawClient::connect(broker.addr(), V3_1_1, "watcher");
    watcher.subscribe_one("other/t", 1);
    let mut bystander = RawClient::connect(broker.addr(), V3_1_1, "bystander");
    let (mut blaster, _) =
        RawClient::connect_with(broker.addr(), &ConnectOptions::persistent(V3_1_1, "blaster"));

    gate.set(true);
    const N: u16 = 2000;
    let mut burst = Vec::new();
    for _ in 0..N {
        let id = blaster.next_packet_id();
        burst.extend(wire::publish(V3_1_1, "held/t", &id.to_be_bytes(), 1, false, false, id));
    }
    blaster.send(&burst);

    // The first MAX are routed; their PUBACKs wait for the commit, and the rest of the
    // burst stays unread. The keeper's acks make room in its window (also MAX), so
    // anything else routed would come before the PINGRESP.
    for k in 0..MAX {
        let p = keeper.expect_publish_acked();
        assert_eq!(p.payload, (k as u16 + 1).to_be_bytes(), "in order");
    }
    let more: Vec<Incoming> = keeper.ping_then_unread();
    assert_eq!(more, [], "only {MAX} messages routed while their PUBACKs wait for the disk");

    // Clients that need no disk are served meanwhile, on the same loop.
    bystander.publish("other/t", b"meanwhile", 1, false);
    assert_eq!(watcher.expect_publish_acked().payload, b"meanwhile");

    // The commits go through: everything is read, routed and acknowledged, in order,
    // and the publisher was never disconnected for going past its window.
    gate.set(false);
    let consumer = thread::spawn(move || {
        for k in MAX as u16..N {
            let p = keeper.expect_publish_acked();
            assert_eq!(p.payload, (k + 1).to_be_bytes(), "in order");
        }
        keeper
    });
    for id in 1..=N {
        let got = blaster.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(_, _)));
        assert_eq!(got, Incoming::PubAck(id, 0), "PUBACKs in order");
    }
    let mut keeper = consumer.join().unwrap();
    assert_eq!(keeper.ping_then_unread(), []);
    assert_eq!(blaster.ping_then_unread(), []);
}

#[test]
fn no_publisher_is_read_while_the_persisters_channel_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    // Room for one batch: the persister takes one group and stops before its commit,
    // the channel takes the next, and the one after waits in the worker.
    let broker = broker(&dir, &gate, 1);
    let _opener = Opener(gate.clone());
    gate.set(true);

    // Retained QoS 0 messages are written to the store but hold nobody's answer, so
    // only the full channel can stop their publisher.
    const N: usize = 400;
    let payload = vec![0x42_u8; 4096];
    let mut burst = Vec::new();
    for k in 0..N {
        burst.extend(wire::publish(V3_1_1, &format!("ret/{k}"), &payload, 0, true, false, 0));
    }
    let total = burst.len() as u64;
    let mut retainer = RawClient::connect(broker.addr(), V3_1_1, "retainer");
    let sender = thread::spawn(move || {
        retainer.send(&burst);
        retainer
    });
    wait_until(DEADLINE, "the retainer to be read", || bytes_in(&broker, "retainer") > 100);
    // Every query is answered in an iteration of its own, and every iteration would read
    // the retainer's next 64 KiB (it is on the ready list): 64 of them would read
    // everything. A few read budgets are all the worker takes before the channel fills.
    for _ in 0..64 {
        bytes_in(&broker, "retainer");
    }
    let read = bytes_in(&broker, "retainer");
    assert!(read < total / 2, "read {read} of {total} bytes while the store's channel was full");

    // Clients that are not publishing are read and served meanwhile.
    let mut other = RawClient::connect(broker.addr(), V3_1_1, "other");
    other.subscribe_one("ret/0", 0);
    assert_eq!(other.expect_publish().payload, payload, "the retained message");

    // The commits go through and the rest is read.
    gate.set(false);
    let mut retainer = sender.join().unwrap();
    wait_until(DEADLINE, "the whole burst to be read", || bytes_in(&broker, "retainer") > total);
    assert_eq!(retainer.ping_then_unread(), []);
}

/// A gauge from `/metrics`.
fn gauge(broker: &TestBroker, name: &str) -> u64 {
    let text = request(broker.admin_addr(), "GET", "/metrics", None, None).text();
    let value = text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' '));
    value.and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// `n` QoS 1 PUBLISHes of `size`-byte payloads to `topic`, each payload starting with
/// `tag` and its sequence number, packet ids 1..=n.
fn large_burst(
    version: shoal_core::ProtocolVersion,
    topic: &str,
    tag: u8,
    n: u16,
    size: usize,
) -> Vec<u8> {
    let mut burst = Vec::new();
    for id in 1..=n {
        let mut payload = vec![tag; size];
        payload[1..3].copy_from_slice(&id.to_be_bytes());
        burst.extend(wire::publish(version, topic, &payload, 1, false, false, id));
    }
    burst
}

/// Reads `n` PUBACKs, asserting they come in packet-id order with success.
fn expect_pubacks(client: &mut RawClient, n: u16) {
    for id in 1..=n {
        let got = client.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(_, _)));
        assert_eq!(got, Incoming::PubAck(id, 0), "PUBACKs in order");
    }
}

/// Receives and acknowledges `n` messages tagged `tags`, asserting each publisher's
/// come in order and whole.
fn consume_tagged(client: &mut RawClient, tags: &[u8], n: u16, size: usize) {
    let mut next = vec![1_u16; tags.len()];
    for _ in 0..n * tags.len() as u16 {
        let p = client.expect_publish_acked();
        assert_eq!(p.payload.len(), size, "whole payload");
        let k = tags.iter().position(|&t| t == p.payload[0]).expect("a known publisher");
        assert_eq!(p.payload[1..3], next[k].to_be_bytes(), "publisher {k}'s messages in order");
        next[k] += 1;
    }
}

/// The clients around the large-payload publishers: a persistent `keeper`
/// subscribed to `big/#` at QoS 1 (every message to it is written, so each PUBACK to
/// a publisher waits for a commit), and a `watcher` of `other/t` that a `bystander`
/// publishes to while the store is stopped.
struct Around {
    keeper: RawClient,
    watcher: RawClient,
    bystander: RawClient,
}

impl Around {
    fn connect(broker: &TestBroker, bystander: shoal_core::ProtocolVersion) -> Self {
        let (mut keeper, _) =
            RawClient::connect_with(broker.addr(), &ConnectOptions::persistent(V3_1_1, "keeper"));
        keeper.subscribe_one("big/#", 1);
        let mut watcher = RawClient::connect(broker.addr(), V3_1_1, "watcher");
        watcher.subscribe_one("other/t", 1);
        let bystander = RawClient::connect(broker.addr(), bystander, "bystander");
        Self { keeper, watcher, bystander }
    }

    /// Each publisher sends `n` tagged `size`-byte QoS 1 messages to `big/t` from a
    /// thread of its own, and the keeper takes them all on another.
    fn start(self, publishers: Vec<(RawClient, u8)>, n: u16, size: usize) -> Bursts {
        let tags: Vec<u8> = publishers.iter().map(|(_, t)| *t).collect();
        let senders = publishers
            .into_iter()
            .map(|(mut c, tag)| {
                thread::spawn(move || {
                    c.send(&large_burst(c.version(), "big/t", tag, n, size));
                    c
                })
            })
            .collect();
        let mut keeper = self.keeper;
        let consumer = thread::spawn(move || {
            consume_tagged(&mut keeper, &tags, n, size);
            keeper
        });
        Bursts { senders, consumer, n, watcher: self.watcher, bystander: self.bystander }
    }
}

/// Large bursts under way (see [`Around::start`]).
struct Bursts {
    senders: Vec<thread::JoinHandle<RawClient>>,
    consumer: thread::JoinHandle<RawClient>,
    n: u16,
    watcher: RawClient,
    bystander: RawClient,
}

impl Bursts {
    /// A client that needs no disk is served meanwhile, on the same loop.
    fn bystander_is_served(&mut self, qos: u8) {
        self.bystander.publish("other/t", b"meanwhile", qos, false);
        let got = if qos == 0 {
            self.watcher.expect_publish()
        } else {
            self.watcher.expect_publish_acked()
        };
        assert_eq!(got.payload, b"meanwhile");
    }

    /// Once the commits go through: every message was read, routed and acknowledged
    /// in order, and nobody was disconnected.
    fn finish(self) {
        for s in self.senders {
            let mut c = s.join().unwrap();
            expect_pubacks(&mut c, self.n);
            assert_eq!(c.ping_then_unread(), []);
        }
        let mut keeper = self.consumer.join().unwrap();
        assert_eq!(keeper.ping_then_unread(), []);
    }
}

#[test]
fn publishers_of_large_payloads_stop_being_read_at_the_held_bytes_bound() {
    use shoal_core::ProtocolVersion::V5;
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    // The count bound is far away: only the bytes can stop the publishers.
    const HELD: u64 = 256 * 1024;
    let limits = format!("max_inflight = 1000\nmax_held_bytes = {HELD}");
    let broker = broker_with(&dir, &gate, 1024, &limits);
    let _opener = Opener(gate.clone());
    let around = Around::connect(&broker, V5);
    // One 3.x and one MQTT 5 publisher: the byte bound pauses both (the count bound
    // only the 3.x one), each well within its window.
    let old = RawClient::connect(broker.addr(), V3_1_1, "old");
    let new = RawClient::connect(broker.addr(), V5, "new");

    gate.set(true);
    const N: u16 = 40;
    const SIZE: usize = 64 * 1024;
    let total = large_burst(V3_1_1, "big/t", 1, N, SIZE).len() as u64;
    let mut bursts = around.start(vec![(old, 1), (new, 2)], N, SIZE);
    for id in ["old", "new"] {
        wait_until(DEADLINE, "the publisher to reach the bound", || bytes_in(&broker, id) > HELD);
    }
    // Every query is answered in an iteration of its own, and without the bound every
    // iteration would read 64 KiB more of each publisher: 64 of them, everything.
    for _ in 0..64 {
        bytes_in(&broker, "old");
    }
    for id in ["old", "new"] {
        let read = bytes_in(&broker, id);
        assert!(read < total / 2, "{id}: read {read} of {total} bytes while its PUBACKs wait");
    }
    // What waits for the disk is what the two publishers had read: the bound and the
    // frame that crossed it, each, and small records (the keeper's in-flight entries).
    let queued = gauge(&broker, "shoal_store_queued_bytes");
    let peak = gauge(&broker, "shoal_store_queued_bytes_peak");
    assert!(queued >= 2 * HELD, "{queued} bytes queued for the store");
    assert!(peak <= 2 * (HELD + SIZE as u64) + 64 * 1024, "peak {peak} bytes queued");

    bursts.bystander_is_served(1);
    gate.set(false);
    bursts.finish();
    wait_until(DEADLINE, "the store's queue to drain", || {
        gauge(&broker, "shoal_store_queued_bytes") == 0
    });
}

#[test]
fn the_stores_queue_stays_within_its_byte_bound() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    // Held answers are not what stops the publisher here (4 MiB each by default, and a
    // window of 1000); the store's queue is, at 256 KiB.
    const QUEUE: u64 = 256 * 1024;
    let limits = format!("max_inflight = 1000\nmax_store_queue_bytes = {QUEUE}");
    let broker = broker_with(&dir, &gate, 1024, &limits);
    let _opener = Opener(gate.clone());
    let around = Around::connect(&broker, V3_1_1);
    let pubs: Vec<(RawClient, u8)> = ["p1", "p2"]
        .iter()
        .zip([1_u8, 2])
        .map(|(id, tag)| (RawClient::connect(broker.addr(), V3_1_1, id), tag))
        .collect();

    gate.set(true);
    const N: u16 = 60;
    const SIZE: usize = 32 * 1024;
    let total = large_burst(V3_1_1, "big/t", 1, N, SIZE).len() as u64;
    let mut bursts = around.start(pubs, N, SIZE);
    // Not "past half the bound": a batch is refused whole when it would take the queue
    // past the bound, so a small first batch behind a large second one leaves the queue
    // at the first one's weight, and the worker then waits for a commit (2 of 13 full
    // runs timed out waiting for half). That the publishers stop being read is what
    // the reads below show.
    wait_until(DEADLINE, "something queued for the store", || {
        gauge(&broker, "shoal_store_queued_bytes") > 0
    });
    for _ in 0..64 {
        bytes_in(&broker, "p1");
    }
    let read = bytes_in(&broker, "p1") + bytes_in(&broker, "p2");
    assert!(read < total, "read {read} of {} bytes while the store's queue was full", 2 * total);
    // Nothing is admitted past the bound once something is queued (and the first
    // group, a read budget or so, is smaller than it).
    let peak = gauge(&broker, "shoal_store_queued_bytes_peak");
    assert!(peak <= QUEUE, "peak {peak} bytes queued for the store, bound {QUEUE}");

    // Clients that are not publishing to the store are served meanwhile.
    bursts.bystander_is_served(0);
    gate.set(false);
    bursts.finish();
}

#[test]
fn a_qos0_publisher_is_read_while_the_persisters_channel_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let broker = broker(&dir, &gate, 1);
    let _opener = Opener(gate.clone());
    let mut listener = RawClient::connect(broker.addr(), V3_1_1, "listener");
    listener.subscribe_one("live/#", 0);
    gate.set(true);

    // Fill the channel: retained messages need the store.
    let payload = vec![0x42_u8; 4096];
    let mut burst = Vec::new();
    for k in 0..400 {
        burst.extend(wire::publish(V3_1_1, &format!("ret/{k}"), &payload, 0, true, false, 0));
    }
    let mut retainer = RawClient::connect(broker.addr(), V3_1_1, "retainer");
    let sender = thread::spawn(move || {
        retainer.send(&burst);
        retainer
    });
    wait_until(DEADLINE, "the retainer to be read", || bytes_in(&broker, "retainer") > 100);
    for _ in 0..64 {
        bytes_in(&broker, "retainer");
    }

    // A QoS 0 publisher is read and delivered meanwhile (under the subscriber's
    // write-buffer bound, so nothing is dropped)...
    let mut chatter = RawClient::connect(broker.addr(), V3_1_1, "chatter");
    const N: u16 = 100;
    let mut chat = Vec::new();
    for k in 0..N {
        let mut p = vec![0_u8; 4096];
        p[..2].copy_from_slice(&k.to_be_bytes());
        chat.extend(wire::publish(V3_1_1, "live/t", &p, 0, false, false, 0));
    }
    // ...up to a retained message, which waits for room in the channel, and what
    // follows it on the same connection waits behind it.
    chat.extend(wire::publish(V3_1_1, "live/kept", b"retained", 0, true, false, 0));
    chat.extend(wire::publish(V3_1_1, "live/t", b"after", 0, false, false, 0));
    let sent = chat.len() as u64;
    chatter.send(&chat);
    for k in 0..N {
        assert_eq!(listener.expect_publish().payload[..2], k.to_be_bytes(), "in order");
    }
    wait_until(DEADLINE, "all of it to be read", || bytes_in(&broker, "chatter") >= sent);
    assert_eq!(listener.ping_then_unread(), [], "the retained message waits for the store");

    // Room in the channel: the rest goes, in order.
    gate.set(false);
    let kept = listener.expect_publish();
    assert_eq!((kept.topic.as_str(), kept.payload.as_slice()), ("live/kept", &b"retained"[..]));
    assert_eq!(listener.expect_publish().payload, b"after");
    let mut retainer = sender.join().unwrap();
    assert_eq!(retainer.ping_then_unread(), []);
}

/// A client id `{prefix}-{k}` whose session lives on `worker` (of `workers`).
fn id_on(prefix: &str, worker: usize, workers: usize) -> String {
    (0..)
        .map(|k| format!("{prefix}-{k}"))
        .find(|id| home_worker(id, workers) == worker)
        .unwrap_or_default()
}

/// A shared group's message is matched on the group's home worker and written by the
/// member's worker when the home hands it over: the publisher's PUBACK waits for that
/// commit too. With two workers the member shares the publisher's worker and the
/// group home has no persistent session (it writes nothing and once was not even
/// asked); with three, all three differ. Regression: the PUBACK left before the
/// member's worker had written the message, so a crash then lost an acknowledged
/// message.
#[test]
fn a_puback_waits_for_the_commit_of_a_shared_member_behind_its_group_home() {
    for (workers, member_on) in [(2, 0), (3, 2)] {
        let context = format!("{workers} workers, member on worker {member_on}");
        let dir = tempfile::tempdir().unwrap();
        let gate = Arc::new(Gate::default());
        let broker = broker_on(workers, &dir, &gate, 1024, &format!("max_inflight = {MAX}"));
        let _opener = Opener(gate.clone());
        let group = (0..)
            .map(|n| format!("$share/g{n}/sh/t"))
            .find(|name| home_worker(name, workers) == 1)
            .unwrap();
        let member_id = id_on("member", member_on, workers);
        let (mut member, _) =
            RawClient::connect_with(broker.addr(), &ConnectOptions::persistent(V3_1_1, &member_id));
        member.subscribe_one(&group, 1);
        let mut publisher = RawClient::connect(broker.addr(), V3_1_1, &id_on("pub", 0, workers));

        gate.set(true);
        let id = publisher.publish_no_wait("sh/t", b"kept", 1, false);
        // The member has it (a QoS 1 PUBLISH does not wait for its in-flight record):
        // it went through the group home and its in-flight record is in the member's
        // worker's batch, held at the commit. Had the PUBACK not waited for that
        // commit, it would have been written before the member's worker even got the
        // message, and be in the publisher's socket by now.
        let got = member.expect_publish();
        assert_eq!(got.payload, b"kept", "{context}");
        match publisher.recv(Duration::from_millis(100)) {
            Err(RecvError::Timeout) => {}
            other => panic!("{context}: {other:?} while the member's commit is held"),
        }

        gate.set(false);
        let ack = publisher.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(_, _)));
        assert_eq!(ack, Incoming::PubAck(id, 0), "{context}");
        member.ack(&got);
        assert_eq!(member.ping_then_unread(), [], "{context}");
        assert_eq!(publisher.ping_then_unread(), [], "{context}");
    }
}
