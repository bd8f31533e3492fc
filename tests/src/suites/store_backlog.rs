//! A durable store that is behind (issue 4: memory stays bounded under any client
//! behaviour; issue 7: acks wait for the disk). A 3.x client has no Receive Maximum to
//! respect: one that sends QoS 1 PUBLISHes without waiting for their PUBACKs, while
//! those PUBACKs wait for a commit, is read no further once `max_inflight` of its
//! answers are held, and read again when the commit releases them. Other clients are
//! served meanwhile.
//!
//! The slow disk is a commit that waits on a gate the test opens: the broker's own
//! persister, stopped just before it commits (`PersistOptions::faults`).

use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use shoal_core::ProtocolVersion::V3_1_1;
use shoal_server::persist::{FaultInjector, PersistOptions};

use crate::harness::TestBroker;
use crate::raw::wire::{self, ConnectOptions, Incoming};
use crate::raw::RawClient;

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

/// One worker (every client shares its loop), the store in `dir`, commits through `gate`.
fn broker(dir: &tempfile::TempDir, gate: &Arc<Gate>) -> TestBroker {
    let g = gate.clone();
    let faults = FaultInjector {
        before_commit: Some(Box::new(move || g.pass())),
        ..FaultInjector::default()
    };
    let options = PersistOptions { faults: Some(Arc::new(faults)), ..PersistOptions::default() };
    let snippet = format!(
        "workers = 1\npersistence = true\ndata_dir = {:?}\n[limits]\nmax_inflight = {MAX}\n",
        dir.path().to_str().unwrap()
    );
    TestBroker::with_store_options(&snippet, options)
}

#[test]
fn a_3x_publisher_ignoring_its_window_is_not_read_while_its_pubacks_wait_for_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let broker = broker(&dir, &gate);
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
