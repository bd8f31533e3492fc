//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 4.8.2, and for 3.1.1 clients
//! too): each message goes to exactly one member of a group, members may sit on any
//! worker, the configured strategy picks the member, unacknowledged messages of a
//! member that goes away go to another member, and a shared subscribe gets no retained
//! messages.
//!
//! Brokers here run 4 workers so that the members' sessions (placed by client id) and
//! each group's home worker are spread over several event loops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::ProtocolVersion::{self, V3_1_1, V5};
use shoal_core::TopicName;
use shoal_server::auth::{ClientInfo, Hooks};
use shoal_server::home_worker;

use crate::harness::{wait_until, TestBroker};
use crate::raw::wire::{self, find_property, ConnectOptions};
use crate::raw::{Incoming, RawClient, DEADLINE};

const FOUR_WORKERS: &str = "workers = 4\n";

fn broker_with(strategy: &str) -> TestBroker {
    TestBroker::with_config(&format!(
        "{FOUR_WORKERS}[mqtt]\nshared_subscription_strategy = \"{strategy}\"\n"
    ))
}

/// Members of `$share/{group}/{filter}` alternating 3.1.1 and 5.0.
fn members(broker: &TestBroker, prefix: &str, n: usize, share: &str, qos: u8) -> Vec<RawClient> {
    (0..n)
        .map(|i| {
            let version: ProtocolVersion = if i % 2 == 0 { V3_1_1 } else { V5 };
            let mut c = RawClient::connect(broker.addr(), version, &format!("{prefix}-{i}"));
            c.subscribe_one(share, qos);
            c
        })
        .collect()
}

/// Publishes `count` numbered QoS 1 messages to `topic` (payload = big-endian u16).
fn publish_numbered(publisher: &mut RawClient, topic: &str, range: std::ops::Range<u16>) {
    for i in range {
        publisher.publish(topic, &i.to_be_bytes(), 1, false);
    }
}

/// Reads every member until `total` messages arrived over all of them, acking each;
/// returns per member the message numbers it got.
fn collect(members: &mut [RawClient], total: usize) -> Vec<Vec<u16>> {
    let mut got: Vec<Vec<u16>> = vec![Vec::new(); members.len()];
    wait_until(DEADLINE, &format!("{total} shared deliveries"), || {
        for (m, seen) in members.iter_mut().zip(got.iter_mut()) {
            while let Ok(Incoming::Publish(p)) = m.recv(Duration::from_millis(5)) {
                m.ack(&p);
                seen.push(u16::from_be_bytes([p.payload[0], p.payload[1]]));
            }
        }
        got.iter().map(Vec::len).sum::<usize>() >= total
    });
    // Nothing beyond: every member's connection is drained up to a PINGRESP.
    for m in members.iter_mut() {
        let extra = m.ping_then_unread();
        assert!(extra.is_empty(), "extra shared deliveries: {extra:?}");
    }
    got
}

/// Every number in `0..n` exactly once over all members.
fn assert_each_once(got: &[Vec<u16>], n: u16) {
    assert_each_once_in(got, 0..n, "");
}

/// Every number in `range` exactly once over all members, and no other.
fn assert_each_once_in(got: &[Vec<u16>], range: std::ops::Range<u16>, context: &str) {
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for x in got.iter().flatten() {
        *counts.entry(*x).or_default() += 1;
    }
    let expected = range.map(|i| (i, 1)).collect();
    assert_eq!(counts, expected, "{context}: each message to exactly one member");
}

#[test]
fn v5_connack_says_shared_subscriptions_are_available() {
    let broker = TestBroker::start();
    let (_c, reply) = RawClient::connect_raw(broker.addr(), &ConnectOptions::new(V5, "ask"));
    let Ok(Incoming::ConnAck { code: 0, properties, .. }) = reply else {
        panic!("CONNECT refused: {reply:?}")
    };
    // Shared Subscription Available (0x2A): absent or 1 means available.
    let p = find_property(&properties, 0x2A);
    assert!(p.map_or(true, |p| p.value == [1]), "0x2A = {p:?}");
}

#[test]
fn each_message_reaches_exactly_one_member_across_workers_and_versions() {
    let broker = broker_with("round_robin");
    let mut group = members(&broker, "rr", 6, "$share/g/sh/+", 1);
    // Two groups on one filter each get every message; an ordinary subscriber too.
    let mut other = members(&broker, "other", 2, "$share/h/sh/+", 1);
    let mut plain = RawClient::connect(broker.addr(), V5, "plain");
    plain.subscribe_one("sh/#", 1);
    let mut publisher = RawClient::connect(broker.addr(), V3_1_1, "pub");
    publish_numbered(&mut publisher, "sh/t", 0..60);
    for i in 0..60u16 {
        assert_eq!(plain.expect_publish_acked().payload, i.to_be_bytes());
    }
    let got = collect(&mut group, 60);
    assert_each_once(&got, 60);
    // Round robin over six online members: ten each.
    assert!(got.iter().all(|g| g.len() == 10), "round robin spread {got:?}");
    assert_each_once(&collect(&mut other, 60), 60);
}

#[test]
fn sticky_strategy_keeps_one_member() {
    let broker = broker_with("sticky");
    let mut group = members(&broker, "st", 3, "$share/g/st/t", 1);
    let mut publisher = RawClient::connect(broker.addr(), V5, "pub");
    publish_numbered(&mut publisher, "st/t", 0..30);
    let got = collect(&mut group, 30);
    assert_each_once(&got, 30);
    assert_eq!(got.iter().filter(|g| !g.is_empty()).count(), 1, "sticky spread {got:?}");
}

#[test]
fn random_strategy_reaches_every_member() {
    let broker = broker_with("random");
    let mut group = members(&broker, "rn", 3, "$share/g/rn/t", 1);
    let mut publisher = RawClient::connect(broker.addr(), V5, "pub");
    publish_numbered(&mut publisher, "rn/t", 0..150);
    let got = collect(&mut group, 150);
    assert_each_once(&got, 150);
    // Each member misses all 150 with probability (2/3)^150: never in practice.
    assert!(got.iter().all(|g| !g.is_empty()), "random spread {got:?}");
}

#[test]
fn member_lost_mid_stream_at_qos1_loses_nothing() {
    let broker = broker_with("round_robin");
    // The member that will crash: v5, acks only the first three messages it gets.
    let mut doomed = RawClient::connect(broker.addr(), V5, "doomed");
    doomed.subscribe_one("$share/g/ls/t", 1);
    let mut survivors = members(&broker, "survivor", 2, "$share/g/ls/t", 1);
    let mut publisher = RawClient::connect(broker.addr(), V5, "pub");
    publish_numbered(&mut publisher, "ls/t", 0..30);
    let mut acked = Vec::new();
    let mut held = 0;
    wait_until(DEADLINE, "the doomed member's share of 30", || {
        while let Ok(Incoming::Publish(p)) = doomed.recv(Duration::from_millis(5)) {
            if acked.len() < 3 {
                doomed.ack(&p);
                acked.push(u16::from_be_bytes([p.payload[0], p.payload[1]]));
            } else {
                held += 1;
            }
        }
        acked.len() + held >= 10
    });
    // Make sure the three PUBACKs were handled before the socket goes.
    doomed.ping();
    doomed.drop_connection();
    publish_numbered(&mut publisher, "ls/t", 30..60);
    // The survivors get everything the doomed member did not acknowledge: 57 messages.
    let mut got = collect(&mut survivors, 57);
    got.push(acked);
    assert_each_once(&got, 60);
}

#[test]
fn offline_persistent_member_is_skipped_while_another_is_online() {
    // A 3.1.1 persistent member that goes offline keeps its subscription; the group
    // sends new messages to the online member, and nothing is lost or queued for the
    // offline one.
    let broker = broker_with("round_robin");
    let mut opts = ConnectOptions::new(V3_1_1, "persistent-member");
    opts.clean = false;
    let (mut away, _) = RawClient::connect_with(broker.addr(), &opts);
    away.subscribe_one("$share/g/ps/t", 1);
    let mut online = members(&broker, "online", 1, "$share/g/ps/t", 1);
    away.drop_connection();
    let mut publisher = RawClient::connect(broker.addr(), V5, "pub");
    publish_numbered(&mut publisher, "ps/t", 0..20);
    // The member's worker has seen the loss, but the group home (maybe another worker)
    // hears of it by message: until then it may still pick the offline member, whose
    // worker hands the message back, so those arrive late and out of order.
    let mut got = collect(&mut online, 20);
    got[0].sort_unstable();
    assert_eq!(got[0], (0..20).collect::<Vec<_>>());
    let (mut back, present) = RawClient::connect_with(broker.addr(), &opts);
    assert!(present, "the persistent member's session is gone");
    let queued = back.ping_then_unread();
    assert!(queued.is_empty(), "queued for the offline member as well: {queued:?}");
}

#[test]
fn shared_subscribe_gets_no_retained_messages() {
    // [MQTT-4.8.2] retained messages are not sent on a shared subscribe.
    let broker = TestBroker::start();
    let mut publisher = RawClient::connect(broker.addr(), V5, "pub");
    publisher.publish("ret/t", b"kept", 1, true);
    for version in [V3_1_1, V5] {
        let mut m = RawClient::connect(broker.addr(), version, &format!("m-{version}"));
        m.subscribe_one("$share/g/ret/t", 1);
        let unread = m.ping_then_unread();
        assert!(unread.is_empty(), "retained message on a shared subscribe: {unread:?}");
    }
}

#[test]
fn unsubscribed_member_gets_no_more_messages() {
    let broker = broker_with("round_robin");
    let mut group = members(&broker, "un", 2, "$share/g/un/t", 1);
    assert!(group[1].unsubscribe(&["$share/g/un/t"]).iter().all(|&c| c == 0));
    let mut publisher = RawClient::connect(broker.addr(), V5, "pub");
    publish_numbered(&mut publisher, "un/t", 0..10);
    let got = collect(&mut group, 10);
    assert_eq!(got[0].len(), 10, "all to the remaining member: {got:?}");
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    // [MQTT-3.8.3-4]
    let broker = TestBroker::start();
    let mut c = RawClient::connect(broker.addr(), V5, "nl");
    c.send(&wire::subscribe(V5, 1, &[("$share/g/x", 0x04 | 1)]));
    assert_eq!(c.expect_closed_with_reason(DEADLINE), Some(0x82));
}

/// Reconnects `opts` (a persistent session) and returns what the broker sends it before
/// a PINGRESP, with every PUBLISH acknowledged.
fn resume_and_drain(broker: &TestBroker, opts: &ConnectOptions) -> Vec<u16> {
    let (mut back, present) = RawClient::connect_with(broker.addr(), opts);
    assert!(present, "the persistent member's session is gone");
    let mut got = Vec::new();
    for p in back.ping_then_unread() {
        if let Incoming::Publish(p) = p {
            back.ack(&p);
            got.push(u16::from_be_bytes([p.payload[0], p.payload[1]]));
        }
    }
    got
}

#[test]
fn message_handed_to_another_member_is_not_resent_to_the_reconnecting_one() {
    // A persistent member loses its connection with a QoS 1 message unacknowledged; the
    // message goes to the other member. When the first comes back to its session it
    // must not get that message again: one message, one member.
    for version in [V3_1_1, V5] {
        let broker = broker_with("round_robin");
        let opts = ConnectOptions::persistent(version, "keeper");
        let (mut keeper, _) = RawClient::connect_with(broker.addr(), &opts);
        keeper.subscribe_one("$share/g/hk/t", 1);
        let mut other = members(&broker, "other", 1, "$share/g/hk/t", 1);
        let mut publisher = RawClient::connect(broker.addr(), V5, "pub");
        // Round robin over two online members: one each.
        publish_numbered(&mut publisher, "hk/t", 0..2);
        let held = keeper.expect_publish();
        keeper.drop_connection();
        let got = collect(&mut other, 2);
        assert_each_once(&got, 2);
        let again = resume_and_drain(&broker, &opts);
        assert!(
            again.is_empty(),
            "{version}: message {:?} reached two members (resent {again:?})",
            held.payload
        );
    }
}

/// Lets no client whose id starts with `picky` read anything.
struct PickyReaders;

impl Hooks for PickyReaders {
    fn on_deliver(&self, client: &ClientInfo, _: &TopicName) -> bool {
        !client.identity.client_id.starts_with("picky")
    }
}

#[test]
fn delivery_refused_by_on_deliver_goes_to_another_member() {
    // A member the `on_deliver` hook refuses does not get the message; another member
    // of the group does, so the group still gets every message once.
    let broker = TestBroker::with_hooks(FOUR_WORKERS, Arc::new(PickyReaders));
    let mut group = members(&broker, "picky", 2, "$share/g/pk/t", 1);
    group.extend(members(&broker, "reader", 1, "$share/g/pk/t", 1));
    let mut publisher = RawClient::connect(broker.addr(), V5, "pub");
    publish_numbered(&mut publisher, "pk/t", 0..20);
    let mut got = collect(&mut group, 20);
    // A message refused on its way has taken a detour: order is not kept.
    got[2].sort_unstable();
    assert_eq!(got[2], (0..20).collect::<Vec<_>>(), "not all to the reader: {got:?}");
}

#[test]
fn delivery_refused_by_every_member_is_dropped() {
    // Nobody in the group may read it: dropped (counted as an ACL drop) once every
    // member refused it, not passed around for ever.
    let admin = "[admin]\nenabled = true\nbind = \"127.0.0.1:0\"\ntoken = \"t\"\n";
    let broker = TestBroker::with_hooks(&format!("{FOUR_WORKERS}{admin}"), Arc::new(PickyReaders));
    let mut group = members(&broker, "picky", 3, "$share/g/pa/t", 1);
    let mut publisher = RawClient::connect(broker.addr(), V5, "pub");
    publish_numbered(&mut publisher, "pa/t", 0..5);
    let metrics = || {
        let r = crate::http::request(broker.admin_addr(), "GET", "/metrics", Some("t"), None);
        r.text()
    };
    wait_until(DEADLINE, "five ACL drops", || {
        metrics().contains("shoal_messages_dropped_total{cause=\"acl\"} 5\n")
    });
    for m in &mut group {
        assert!(m.ping_then_unread().is_empty(), "a refused member got the message");
    }
}

#[test]
fn member_that_unsubscribes_completes_what_it_was_sent() {
    // [MQTT-3.10.4-3] the server completes the delivery of QoS 1/2 messages it started
    // to send: a member that leaves its group keeps its unacknowledged message (and
    // may acknowledge it), which no other member gets; new messages go to the others.
    for version in [V3_1_1, V5] {
        let broker = broker_with("round_robin");
        let mut leaver = RawClient::connect(broker.addr(), version, "leaver");
        leaver.subscribe_one("$share/g/lv/t", 1);
        let mut stayer = members(&broker, "stayer", 1, "$share/g/lv/t", 1);
        let mut publisher = RawClient::connect(broker.addr(), V5, "pub");
        publish_numbered(&mut publisher, "lv/t", 0..2);
        let held = leaver.expect_publish();
        let held_no = u16::from_be_bytes([held.payload[0], held.payload[1]]);
        assert!(leaver.unsubscribe(&["$share/g/lv/t"]).iter().all(|&c| c == 0));
        publish_numbered(&mut publisher, "lv/t", 2..8);
        leaver.ack(&held);
        let got = collect(&mut stayer, 7);
        let mut all = got.clone();
        all.push(vec![held_no]);
        assert_each_once(&all, 8);
        assert!(leaver.ping_then_unread().is_empty(), "{version}: the leaver got more");
    }
}

/// A client id `{prefix}-{k}` whose session lives on `worker` (of four).
fn id_on(prefix: &str, worker: usize) -> String {
    (0..)
        .map(|k| format!("{prefix}-{k}"))
        .find(|id| home_worker(id, 4) == worker)
        .unwrap_or_default()
}

/// Publishes one numbered QoS 1 message to `topic` from each publisher, numbering on
/// from `next`; returns the next number.
fn publish_from_each(publishers: &mut [RawClient], topic: &str, mut next: u16) -> u16 {
    for p in publishers {
        p.publish(topic, &next.to_be_bytes(), 1, false);
        next += 1;
    }
    next
}

/// Publishers skip workers whose `Interest` cannot match the topic (see the server's
/// `worker::interest`), and a group is matched only on its home worker, which here
/// holds none of the group's members. Each member's worker counts the group's filter
/// at the group home before the member's SUBACK, so a publish right after the SUBACK,
/// from a publisher on any worker, reaches the group; a membership that ends (by
/// UNSUBSCRIBE, or with its session) takes its count back, and joining again counts
/// again.
#[test]
fn a_fresh_shared_subscription_gets_publishes_from_every_worker() {
    let broker = broker_with("round_robin");
    let version = |i: usize| if i % 2 == 0 { V3_1_1 } else { V5 };
    // One publisher on each of the four workers.
    let mut publishers: Vec<RawClient> = (0..4)
        .map(|w| RawClient::connect(broker.addr(), version(w), &id_on(&format!("fpub{w}"), w)))
        .collect();
    for round in 0..8usize {
        let home = round % 4;
        let group = (0..)
            .map(|g| format!("$share/fresh{g}/fr/{round}/+"))
            .find(|name| home_worker(name, 4) == home)
            .unwrap_or_default();
        let topic = format!("fr/{round}/t");
        // Two members, on the two workers after the group home; the first persistent.
        let ids: Vec<String> =
            (1..=2).map(|k| id_on(&format!("fm{round}-{k}"), (home + k) % 4)).collect();
        let join = |i: usize, persistent: bool| {
            let v = version(round + i);
            let opts = if persistent {
                ConnectOptions::persistent(v, &ids[i])
            } else {
                ConnectOptions::new(v, &ids[i])
            };
            let (mut m, _) = RawClient::connect_with(broker.addr(), &opts);
            m.subscribe_one(&group, 1);
            m
        };
        let mut members = vec![join(0, true), join(1, false)];
        let mut next = 0u16;
        let first = next;
        next = publish_from_each(&mut publishers, &topic, next);
        let context = format!("round {round}, right after SUBACK");
        assert_each_once_in(&collect(&mut members, 4), first..next, &context);

        // Both leave by UNSUBSCRIBE; what is published meanwhile reaches nobody. Then
        // both join again and are counted again.
        for m in &mut members {
            m.unsubscribe(&[group.as_str()]);
        }
        next = publish_from_each(&mut publishers, &topic, next);
        for m in &mut members {
            m.subscribe_one(&group, 1);
        }
        let first = next;
        next = publish_from_each(&mut publishers, &topic, next);
        let context = format!("round {round}, after leaving and joining again");
        assert_each_once_in(&collect(&mut members, 4), first..next, &context);

        // Both memberships end with their sessions: the persistent one by a takeover
        // with clean start, the clean one by DISCONNECT. Then new sessions join.
        let mut ended = members.into_iter();
        let persistent = ended.next();
        if let Some(m) = ended.next() {
            m.disconnect();
        }
        let (taken_over, _) =
            RawClient::connect_with(broker.addr(), &ConnectOptions::new(version(round), &ids[0]));
        if let Some(mut old) = persistent {
            old.expect_closed(DEADLINE);
        }
        taken_over.disconnect();
        next = publish_from_each(&mut publishers, &topic, next);
        let mut members = vec![join(0, false), join(1, false)];
        let first = next;
        next = publish_from_each(&mut publishers, &topic, next);
        let context = format!("round {round}, new sessions after the old ones ended");
        assert_each_once_in(&collect(&mut members, 4), first..next, &context);
        for m in members {
            m.disconnect();
        }
    }
}
