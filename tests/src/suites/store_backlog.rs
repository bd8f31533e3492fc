//! A durable store that is behind (issue 4: memory stays bounded under any client
//! behaviour; issue 7: acks wait for the disk). A 3.x client has no Receive Maximum to
//! respect: one that sends QoS 1 PUBLISHes without waiting for their PUBACKs, while
//! those PUBACKs wait for a commit, is read no further once `max_inflight` of its
//! answers are held, and read again when the commit releases them. And while the
//! persister's channel is full, no publisher is read. Other clients are served
//! meanwhile.
//!
//! The slow disk is a commit that waits on a gate the test opens: the broker's own
//! persister, stopped just before it commits (`PersistOptions::faults`).

use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use shoal_core::ProtocolVersion::V3_1_1;
use shoal_server::persist::{FaultInjector, PersistOptions};

use crate::harness::{wait_until, TestBroker};
use crate::http::request;
use crate::raw::wire::{self, ConnectOptions, Incoming};
use crate::raw::{RawClient, DEADLINE};

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
        "workers = 1\npersistence = true\ndata_dir = {:?}\n[limits]\nmax_inflight = {MAX}\n\
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
