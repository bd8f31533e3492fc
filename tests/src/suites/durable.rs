//! The durable store end to end (issue 7): what the broker acknowledged survives
//! `kill -9`. Each test runs the real `shoal` binary on a temporary data directory,
//! kills it with SIGKILL at a random moment while a publisher streams numbered
//! messages, restarts it on the same directory and checks what the clients get.
//!
//! The kill moment comes from a seed printed by every round; set `SHOAL_KILL_SEED` to
//! replay one. (Waiting a random time before the kill chooses *when* to crash; nothing
//! is asserted on timing.)

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use shoal_core::ProtocolVersion::{self, V3_1_1, V5};
use shoal_server::home_worker;
use shoal_server::persist::{PersistOptions, Persister};

use crate::harness::BrokerProcess;
use crate::raw::wire::{self, ConnectOptions, Incoming, Publish};
use crate::raw::{RawClient, RecvError, DEADLINE};

/// Kill rounds per test; each round is one crash and one restart.
const ROUNDS: u64 = 3;
/// Publishes a publisher keeps unacknowledged.
const WINDOW: usize = 16;
/// The queue must hold everything a round publishes.
const QUEUE_LIMIT: &str = "[limits]\nmax_queued_messages = 1000000\nmax_inflight = 100\n";
/// Most messages one round publishes (keeps the suite's run time modest).
const MAX_MESSAGES: u64 = 3000;

/// A small deterministic generator (xorshift64*), enough to pick kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The seed of this test run: `SHOAL_KILL_SEED`, or the clock; printed for replay.
fn seed(test: &str) -> Rng {
    let seed =
        std::env::var("SHOAL_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed {seed} (replay with SHOAL_KILL_SEED={seed})");
    Rng(seed.max(1))
}

/// The broker on `dir`, with a config file for the limits.
fn start(dir: &Path) -> BrokerProcess {
    let config = dir.join("test.toml");
    std::fs::write(&config, QUEUE_LIMIT).unwrap();
    let data = dir.join("data");
    BrokerProcess::start(&[
        "--workers",
        "2",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ])
}

fn persistent(version: ProtocolVersion, id: &str) -> ConnectOptions {
    let mut o = ConnectOptions::persistent(version, id);
    o.keep_alive = 0;
    o
}

/// What a publisher had acknowledged when the broker died.
#[derive(Debug, Default)]
struct Acked {
    /// Sequence numbers acknowledged (PUBACK, or PUBREC for QoS 2).
    numbers: HashSet<u64>,
    /// Per retained topic, every number sent to it in order, and the last acknowledged.
    retained: HashMap<String, (Vec<u64>, Option<u64>)>,
}

/// Publishes numbered messages (`{n}` as payload) to `topic` at `qos`, every fifth also
/// to one of three retained topics, keeping `WINDOW` unacknowledged, until the broker
/// goes away. Records every acknowledged number in `acked` as it arrives.
fn publish_until_killed(addr: SocketAddr, qos: u8, topic: &str, acked: &Arc<Mutex<Acked>>) {
    let mut client = RawClient::connect(addr, V3_1_1, "kill-publisher");
    let mut outstanding: HashMap<u16, (u64, Option<String>)> = HashMap::new();
    let mut n = 0u64;
    loop {
        while outstanding.len() < WINDOW && n < MAX_MESSAGES {
            n += 1;
            let retained = (n % 5 == 0).then(|| format!("kill/retained/{}", n % 3));
            let t = retained.as_deref().unwrap_or(topic);
            let id = client.next_packet_id();
            let bytes = wire::publish(
                V3_1_1,
                t,
                n.to_string().as_bytes(),
                qos,
                retained.is_some(),
                false,
                id,
            );
            if client.try_send(&bytes).is_err() {
                return;
            }
            if let Some(r) = &retained {
                let mut a = acked.lock().unwrap();
                a.retained.entry(r.clone()).or_default().0.push(n);
            }
            outstanding.insert(id, (n, retained));
        }
        match client.recv(DEADLINE) {
            Ok(Incoming::PubAck(id, _)) if qos == 1 => {
                if let Some((num, retained)) = outstanding.remove(&id) {
                    record(acked, num, retained);
                }
            }
            Ok(Incoming::PubRec(id, _)) if qos == 2 => {
                if let Some((num, retained)) = outstanding.get(&id).cloned() {
                    record(acked, num, retained);
                }
                if client.try_send(&wire::ack(wire::kind::PUBREL, id)).is_err() {
                    return;
                }
            }
            Ok(Incoming::PubComp(id, _)) => {
                outstanding.remove(&id);
            }
            Ok(other) => panic!("publisher got {other:?}"),
            Err(RecvError::Closed | RecvError::Io(_)) => return,
            Err(RecvError::Timeout) if outstanding.is_empty() => {}
            Err(e) => panic!("publisher: {e:?} (broker alive but silent)"),
        }
    }
}

fn record(acked: &Arc<Mutex<Acked>>, n: u64, retained: Option<String>) {
    let mut a = acked.lock().unwrap();
    match retained {
        Some(r) => {
            let e = a.retained.entry(r).or_default();
            e.1 = Some(e.1.map_or(n, |m| m.max(n)));
        }
        None => {
            a.numbers.insert(n);
        }
    }
}

/// Runs a publisher against `broker`, kills the broker with SIGKILL after a random
/// delay, and returns what was acknowledged.
fn publish_and_kill(broker: &mut BrokerProcess, qos: u8, topic: &str, rng: &mut Rng) -> Acked {
    let acked = Arc::new(Mutex::new(Acked::default()));
    let addr = broker.addr();
    let publisher = {
        let acked = acked.clone();
        let topic = topic.to_owned();
        thread::spawn(move || publish_until_killed(addr, qos, &topic, &acked))
    };
    // The moment of the crash: wait until something was acknowledged, then a random
    // extra time (this chooses when to crash; nothing is asserted on it).
    crate::harness::wait_until(DEADLINE, "a first acknowledgement", || {
        !acked.lock().unwrap().numbers.is_empty()
    });
    thread::sleep(Duration::from_millis(rng.below(300)));
    broker.signal("KILL");
    broker.wait_exit(DEADLINE).expect("SIGKILL ends the broker");
    publisher.join().expect("publisher thread");
    Arc::try_unwrap(acked).map(|m| m.into_inner().unwrap()).unwrap_or_default()
}

/// Receives from `client` until the payload `end` arrives, acking everything.
/// Returns every (number, dup) received, in order.
fn receive_until(client: &mut RawClient, end: &str) -> Vec<(u64, bool)> {
    let mut got = Vec::new();
    loop {
        let p: Publish = match client.recv(DEADLINE) {
            Ok(Incoming::Publish(p)) => p,
            Ok(Incoming::PubRel(id, _)) => {
                client.send(&wire::ack(wire::kind::PUBCOMP, id));
                continue;
            }
            Ok(other) => panic!("subscriber got {other:?}"),
            Err(e) => panic!("subscriber: {e:?} after {} messages", got.len()),
        };
        if let Some(id) = p.packet_id {
            let kind = if p.qos == 1 { wire::kind::PUBACK } else { wire::kind::PUBREC };
            client.send(&wire::ack(kind, id));
        }
        let text = String::from_utf8_lossy(&p.payload).into_owned();
        if text == end {
            return got;
        }
        if let Ok(n) = text.parse() {
            got.push((n, p.dup));
        }
    }
}

/// After the restart: every retained topic holds its last acknowledged value, or a
/// later one that was sent to it (committed, but the ack was lost in the crash).
fn check_retained(addr: SocketAddr, acked: &Acked, round: u64) {
    let expected: Vec<_> = acked.retained.iter().filter(|(_, (_, last))| last.is_some()).collect();
    if expected.is_empty() {
        return;
    }
    let mut reader = RawClient::connect(addr, V3_1_1, &format!("retained-reader-{round}"));
    reader.subscribe_one("kill/retained/+", 1);
    let mut seen = HashMap::new();
    while seen.len() < expected.len() {
        let p = reader.expect_publish();
        reader.ack(&p);
        assert!(p.retain, "round {round}: not a retained message: {p:?}");
        seen.insert(p.topic.clone(), String::from_utf8_lossy(&p.payload).parse::<u64>().unwrap());
    }
    for (topic, (sent, last)) in expected {
        let last = last.unwrap();
        let value = seen.get(topic).copied();
        let ok = value.is_some_and(|v| v >= last && sent.contains(&v));
        assert!(ok, "round {round}: {topic} holds {value:?}, last acknowledged {last}");
    }
}

/// One kill round with an offline persistent subscriber at `qos`.
fn offline_subscriber_round(qos: u8, version: ProtocolVersion, rng: &mut Rng, round: u64) {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start(dir.path());
    let sub_id = format!("kill-sub-{round}-{}", rng.below(1000));
    let (mut sub, _) = RawClient::connect_with(broker.addr(), &persistent(version, &sub_id));
    sub.subscribe_one("kill/queue", qos);
    sub.disconnect();
    let acked = publish_and_kill(&mut broker, qos, "kill/queue", rng);
    eprintln!("round {round}: {} messages acknowledged before SIGKILL", acked.numbers.len());

    let broker = start(dir.path());
    let (mut sub, present) = RawClient::connect_with(broker.addr(), &persistent(version, &sub_id));
    assert!(present, "round {round}: the session did not survive the crash");
    // A sentinel published after the reconnect comes behind everything queued.
    let mut p = RawClient::connect(broker.addr(), V3_1_1, "sentinel");
    p.publish("kill/queue", b"end", 1, false);
    let got = receive_until(&mut sub, "end");
    let mut seen = HashSet::new();
    for &(n, dup) in &got {
        let first = seen.insert(n);
        if qos == 2 {
            assert!(first, "round {round}: QoS 2 message {n} delivered twice");
        } else if !first {
            assert!(dup, "round {round}: message {n} redelivered without DUP");
        }
    }
    let missing: Vec<_> = acked.numbers.iter().filter(|n| !seen.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "round {round}: {} of {} acknowledged messages lost, e.g. {:?}",
        missing.len(),
        acked.numbers.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    check_retained(broker.addr(), &acked, round);
}

#[test]
fn acknowledged_qos1_messages_and_retained_survive_kill_9() {
    let mut rng = seed("qos1 kill -9");
    for round in 0..ROUNDS {
        let version = if round % 2 == 0 { V3_1_1 } else { V5 };
        offline_subscriber_round(1, version, &mut rng, round);
    }
}

#[test]
fn acknowledged_qos2_messages_survive_kill_9_exactly_once() {
    let mut rng = seed("qos2 kill -9");
    for round in 0..ROUNDS {
        offline_subscriber_round(2, V3_1_1, &mut rng, round);
    }
}

/// An online persistent subscriber acking as it goes: after the crash it gets every
/// message the publisher was acknowledged for and it had not yet acknowledged itself;
/// repeats carry DUP.
#[test]
fn in_flight_messages_to_an_online_subscriber_survive_kill_9() {
    let mut rng = seed("in-flight kill -9");
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().unwrap();
        let mut broker = start(dir.path());
        let sub_id = format!("online-sub-{round}-{}", rng.below(1000));
        let (mut sub, _) = RawClient::connect_with(broker.addr(), &persistent(V3_1_1, &sub_id));
        sub.subscribe_one("kill/queue", 1);
        let before = thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                match sub.recv(DEADLINE) {
                    Ok(Incoming::Publish(p)) => {
                        // Acknowledge only every other one: some are in flight at the crash.
                        let n: u64 = String::from_utf8_lossy(&p.payload).parse().unwrap_or(0);
                        if n % 2 == 0 {
                            if let Some(id) = p.packet_id {
                                let _ = sub.try_send(&wire::ack(wire::kind::PUBACK, id));
                            }
                        }
                        got.push(n);
                    }
                    Ok(other) => panic!("subscriber got {other:?}"),
                    Err(RecvError::Closed | RecvError::Io(_)) => return got,
                    Err(e) => panic!("subscriber: {e:?}"),
                }
            }
        });
        let acked = publish_and_kill(&mut broker, 1, "kill/queue", &mut rng);
        let before: HashSet<u64> = before.join().unwrap().into_iter().collect();

        let broker = start(dir.path());
        let (mut sub, present) =
            RawClient::connect_with(broker.addr(), &persistent(V3_1_1, &sub_id));
        assert!(present, "round {round}: the session did not survive the crash");
        let mut p = RawClient::connect(broker.addr(), V3_1_1, "sentinel");
        p.publish("kill/queue", b"end", 1, false);
        let after = receive_until(&mut sub, "end");
        for &(n, dup) in &after {
            if before.contains(&n) && n % 2 == 1 {
                assert!(dup, "round {round}: unacknowledged {n} resent without DUP");
            }
        }
        let after: HashSet<u64> = after.into_iter().map(|(n, _)| n).collect();
        let missing: Vec<_> =
            acked.numbers.iter().filter(|n| !after.contains(n) && !before.contains(n)).collect();
        assert!(missing.is_empty(), "round {round}: acknowledged messages lost: {missing:?}");
        // A QoS 1 message goes out to an online subscriber before it is on disk (only
        // the publisher's PUBACK waits for the commit), so what must come again is
        // every message the publisher was acknowledged and the subscriber was not.
        let unacked_lost: Vec<_> = before
            .iter()
            .filter(|&&n| n % 2 == 1 && acked.numbers.contains(&n) && !after.contains(&n))
            .collect();
        assert!(
            unacked_lost.is_empty(),
            "round {round}: messages the subscriber never acknowledged were not resent: {unacked_lost:?}"
        );
    }
}

/// A graceful restart keeps a persistent session's subscriptions; a clean session
/// leaves nothing in the store.
#[test]
fn restart_keeps_persistent_subscriptions_and_clean_sessions_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start(dir.path());
    let (mut keep, _) = RawClient::connect_with(broker.addr(), &persistent(V5, "keeper"));
    keep.subscribe_one("restart/+", 1);
    keep.disconnect();
    let mut clean = RawClient::connect(broker.addr(), V3_1_1, "passer-by");
    clean.subscribe_one("restart/+", 1);
    clean.disconnect();
    broker.signal("TERM");
    broker.wait_exit(DEADLINE).expect("graceful exit");

    let (store, recovered) =
        Persister::start(&dir.path().join("data"), PersistOptions::default()).unwrap();
    let ids: Vec<&str> = recovered.sessions.iter().map(|s| s.client_id.as_str()).collect();
    assert_eq!(ids, ["keeper"], "sessions on disk");
    store.shutdown().unwrap();

    let broker = start(dir.path());
    let mut p = RawClient::connect(broker.addr(), V3_1_1, "restart-pub");
    p.publish("restart/a", b"after restart", 1, false);
    let (mut keep, present) = RawClient::connect_with(broker.addr(), &persistent(V5, "keeper"));
    assert!(present);
    let m = keep.expect_publish_acked();
    assert_eq!((m.topic.as_str(), m.payload.as_slice()), ("restart/a", &b"after restart"[..]));
}

/// Persistent publishers and subscribers spread over both workers, all streaming QoS 1
/// at once: every publish is acknowledged and delivered. Each worker's acks then wait
/// for the other worker's confirmation while it owes one in return; the broker used
/// to stop for good here (no PUBACK, no CONNACK to anybody) once both waited at once.
#[test]
fn persistent_qos1_streams_across_both_workers_keep_flowing() {
    const PAIRS: usize = 8;
    const MESSAGES: u64 = 1500;
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let addr = broker.addr();
    let mut subscribers = Vec::new();
    for i in 0..PAIRS {
        let (mut sub, _) = RawClient::connect_with(addr, &persistent(V5, &format!("flow-sub-{i}")));
        sub.subscribe_one(&format!("flow/{i}"), 1);
        subscribers.push(thread::spawn(move || {
            let mut next = 1u64;
            while next <= MESSAGES {
                let p = sub.expect_publish_acked();
                let n: u64 = String::from_utf8_lossy(&p.payload).parse().unwrap_or(0);
                // Redelivery is allowed; going backwards past it or skipping is not.
                assert!(n <= next, "pair {i}: got {n}, expected {next}");
                if n == next {
                    next += 1;
                }
            }
        }));
    }
    let publishers: Vec<_> = (0..PAIRS)
        .map(|i| {
            thread::spawn(move || {
                let mut client =
                    RawClient::connect_with(addr, &persistent(V5, &format!("flow-pub-{i}"))).0;
                stream_qos1(&mut client, &[format!("flow/{i}")], MESSAGES, "");
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    for s in subscribers {
        s.join().unwrap();
    }
}

/// Publishes `{tag}{n}` for n in 1..=`messages` at QoS 1, to `topics` in turn, keeping
/// `WINDOW` unacknowledged; panics if a PUBACK does not come within `DEADLINE`.
fn stream_qos1(client: &mut RawClient, topics: &[String], messages: u64, tag: &str) {
    let mut outstanding = HashSet::new();
    let mut n = 0u64;
    while n < messages || !outstanding.is_empty() {
        while outstanding.len() < WINDOW && n < messages {
            n += 1;
            let id = client.next_packet_id();
            let topic = &topics[n as usize % topics.len()];
            let version = client.version();
            let payload = format!("{tag}{n}");
            client.send(&wire::publish(version, topic, payload.as_bytes(), 1, false, false, id));
            outstanding.insert(id);
        }
        match client.recv(DEADLINE) {
            Ok(Incoming::PubAck(id, _)) => {
                outstanding.remove(&id);
            }
            Ok(other) => panic!("publisher {tag:?} got {other:?}"),
            Err(e) => {
                panic!(
                    "publisher {tag:?}: {e:?} with {} publishes unacknowledged",
                    outstanding.len()
                )
            }
        }
    }
}

/// A client id `{prefix}-{k}` whose session lives on `worker` (of the two).
fn id_on(prefix: &str, worker: usize) -> String {
    (0..).map(|k| format!("{prefix}-{k}")).find(|id| home_worker(id, 2) == worker).unwrap()
}

/// Shared groups homed on both workers, each with its persistent member on the other
/// worker, and a publisher on each worker streaming QoS 1 to both groups: every
/// publish is acknowledged and reaches its group. Each group home's answer to the
/// other worker's publish marks waits for that worker's answer to its share marks
/// (the member's write), while that worker's own publisher waits for the group home:
/// the share marks' answers wait for commits only, so this keeps flowing.
#[test]
fn shared_groups_forwarding_between_both_workers_keep_flowing() {
    const MESSAGES: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path());
    let addr = broker.addr();
    let mut topics = Vec::new();
    let mut members = Vec::new();
    for home in 0..2 {
        let group = (0..)
            .map(|g| format!("$share/cross{g}/cross/{home}"))
            .find(|name| home_worker(name, 2) == home)
            .unwrap();
        topics.push(format!("cross/{home}"));
        let id = id_on(&format!("cross-member{home}"), 1 - home);
        let (mut m, _) = RawClient::connect_with(addr, &persistent(V5, &id));
        m.subscribe_one(&group, 1);
        members.push(thread::spawn(move || {
            // Both publishers' messages, at least once each.
            let mut seen = HashSet::new();
            while seen.len() < MESSAGES as usize {
                let p = m.expect_publish_acked();
                seen.insert(p.payload);
            }
        }));
    }
    let publishers: Vec<_> = (0..2)
        .map(|w| {
            let topics = topics.clone();
            thread::spawn(move || {
                let mut client = RawClient::connect(addr, V5, &id_on("cross-pub", w));
                stream_qos1(&mut client, &topics, MESSAGES, &format!("w{w}-"));
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    for m in members {
        m.join().unwrap();
    }
}

/// A persistent session's shared subscription survives a restart as a group membership:
/// messages published to the group afterwards reach the member.
#[test]
fn restart_keeps_shared_subscription_members_in_their_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start(dir.path());
    for id in ["share-a", "share-b"] {
        let (mut m, _) = RawClient::connect_with(broker.addr(), &persistent(V5, id));
        m.subscribe_one("$share/workers/jobs/+", 1);
        m.disconnect();
    }
    broker.signal("TERM");
    broker.wait_exit(DEADLINE).expect("graceful exit");

    let broker = start(dir.path());
    let (mut a, present) = RawClient::connect_with(broker.addr(), &persistent(V5, "share-a"));
    assert!(present);
    a.ping();
    let mut p = RawClient::connect(broker.addr(), V3_1_1, "share-pub");
    for n in 0..6 {
        p.publish(&format!("jobs/{n}"), format!("{n}").as_bytes(), 1, false);
    }
    // "share-a" is the only member online: it gets every message.
    let mut got: Vec<String> =
        (0..6).map(|_| String::from_utf8_lossy(&a.expect_publish_acked().payload).into()).collect();
    got.sort();
    assert_eq!(got, ["0", "1", "2", "3", "4", "5"]);
}
