//! Wills and the broker's own end: a graceful shutdown publishes the wills of the
//! clients it disconnects (they did not send DISCONNECT), and the durable store keeps
//! the wills it still owes, so a restart after `kill -9` or a shutdown publishes them.
//!
//! The device pattern this protects: a device retains `ONLINE` on its status topic and
//! leaves a retained `OFFLINE` will; if the broker goes away and the device does not
//! come back, the status must not stay `ONLINE` for ever.

use std::collections::BTreeMap;
use std::path::Path;
use std::thread;
use std::time::Duration;

use shoal_core::ProtocolVersion::{self, V3_1_1, V5};

use crate::harness::{BrokerProcess, TestBroker};
use crate::raw::wire::{self, find_property, ConnectOptions, Incoming, Publish};
use crate::raw::{RawClient, DEADLINE};

/// A device: a will `OFFLINE` (retained, QoS 1) on `dev/{id}/status`.
fn device(version: ProtocolVersion, id: &str) -> ConnectOptions {
    ConnectOptions::new(version, id).with_will(&format!("dev/{id}/status"), b"OFFLINE", 1, true)
}

/// A device with a persistent session (v5: Session Expiry 600 s).
fn persistent_device(version: ProtocolVersion, id: &str) -> ConnectOptions {
    let mut o = device(version, id);
    o.clean = false;
    if version.is_v5() {
        o.session_expiry = Some(600);
    }
    o
}

/// The broker process on `dir/data` with `workers` event loops.
fn start_durable(dir: &Path, workers: &str) -> BrokerProcess {
    let data = dir.join("data");
    BrokerProcess::start(&["--workers", workers, "--data-dir", data.to_str().unwrap()])
}

fn stop(broker: &mut BrokerProcess) {
    broker.signal("TERM");
    let status = broker.wait_exit(DEADLINE).expect("graceful exit after SIGTERM");
    assert!(status.success(), "exit status {status}, stderr:\n{}", broker.stderr());
}

/// The retained messages under `dev/#`, by topic: subscribing sends them all before the
/// SUBACK is followed by our PINGRESP.
fn retained_status(broker: &BrokerProcess, id: &str) -> BTreeMap<String, Publish> {
    let mut c = RawClient::connect(broker.addr(), V5, id);
    c.subscribe_one("dev/#", 1);
    let mut out = BTreeMap::new();
    for p in c.ping_then_unread() {
        if let Incoming::Publish(p) = p {
            out.insert(p.topic.clone(), p);
        }
    }
    c.disconnect();
    out
}

/// DISCONNECT, and wait until the broker has closed the connection (so it has handled
/// the DISCONNECT before whatever the test does next).
fn leave(mut c: RawClient, version: ProtocolVersion) {
    c.send(&wire::disconnect(version, 0));
    c.expect_closed(DEADLINE);
}

fn topics(m: &BTreeMap<String, Publish>) -> Vec<&str> {
    m.keys().map(String::as_str).collect()
}

#[test]
fn graceful_shutdown_publishes_wills_to_connected_subscribers_before_disconnect() {
    // In memory, two workers: wills of devices homed on either worker reach a watcher on
    // either worker before the watcher's DISCONNECT 0x8B.
    let broker = TestBroker::with_config("workers = 2\n");
    let mut watcher = RawClient::connect(broker.addr(), V5, "status-watcher");
    watcher.subscribe_one("dev/+/status", 1);
    let ids = ["dev-a", "dev-b", "dev-c", "dev-d", "dev-e", "dev-f"];
    let mut devices = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let version = if i % 2 == 0 { V3_1_1 } else { V5 };
        devices.push(RawClient::connect_with(broker.addr(), &device(version, id)).0);
    }
    // A device that says goodbye properly leaves no will.
    let polite = RawClient::connect_with(broker.addr(), &device(V5, "dev-polite")).0;
    leave(polite, V5);
    // A v5 device whose will waits 600 s: its session ends with an in-memory broker, so
    // the will goes now [MQTT-3.1.3-9].
    let mut delayed = persistent_device(V5, "dev-delayed");
    delayed.will_delay = Some(600);
    devices.push(RawClient::connect_with(broker.addr(), &delayed).0);
    watcher.ping();

    let stopper = thread::spawn(move || broker.shutdown());
    let seen = watcher.expect_closed(DEADLINE);
    stopper.join().expect("shutdown thread");
    let mut wills: Vec<&str> = seen
        .iter()
        .filter_map(|p| match p {
            Incoming::Publish(p) => {
                assert_eq!(p.payload, b"OFFLINE", "{p:?}");
                Some(p.topic.as_str())
            }
            _ => None,
        })
        .collect();
    wills.sort_unstable();
    let mut expected: Vec<String> = ids.iter().map(|id| format!("dev/{id}/status")).collect();
    expected.push("dev/dev-delayed/status".into());
    expected.sort_unstable();
    assert_eq!(wills, expected, "wills the watcher got before the shutdown: {seen:?}");
    assert!(
        matches!(seen.last(), Some(Incoming::Disconnect(0x8B))),
        "the wills come before DISCONNECT 0x8B, which ends the stream: {seen:?}"
    );
}

#[test]
fn graceful_restart_keeps_shutdown_wills_retained_and_queued_for_persistent_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start_durable(dir.path(), "2");
    // A backend with a persistent session, offline while the broker stops.
    let (mut backend, _) =
        RawClient::connect_with(broker.addr(), &ConnectOptions::persistent(V5, "backend"));
    backend.subscribe_one("dev/+/status", 1);
    backend.disconnect();
    let ids = ["dev-1", "dev-2", "dev-3", "dev-4"];
    let mut devices = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let version = if i % 2 == 0 { V3_1_1 } else { V5 };
        let (mut d, _) = RawClient::connect_with(broker.addr(), &device(version, id));
        d.publish(&format!("dev/{id}/status"), b"ONLINE", 1, true);
        devices.push(d);
    }
    let (mut polite, _) = RawClient::connect_with(broker.addr(), &device(V5, "dev-polite"));
    polite.publish("dev/dev-polite/status", b"ONLINE", 1, true);
    leave(polite, V5);
    stop(&mut broker);
    drop(devices);

    let broker = start_durable(dir.path(), "2");
    let retained = retained_status(&broker, "status-reader");
    for id in ids {
        let p = &retained[&format!("dev/{id}/status")];
        assert_eq!(p.payload, b"OFFLINE", "{id}: retained status after the restart");
    }
    assert_eq!(retained["dev/dev-polite/status"].payload, b"ONLINE", "no will after DISCONNECT");

    let (mut backend, present) =
        RawClient::connect_with(broker.addr(), &ConnectOptions::persistent(V5, "backend"));
    assert!(present, "the backend's session survived the restart");
    let mut offline = Vec::new();
    while offline.len() < ids.len() {
        let p = backend.expect_publish_acked();
        if p.payload == b"OFFLINE" {
            offline.push(p.topic);
        }
    }
    offline.sort_unstable();
    let expected: Vec<String> = ids.iter().map(|id| format!("dev/{id}/status")).collect();
    assert_eq!(offline, expected, "wills queued for the offline persistent session");
    let rest: Vec<_> = backend
        .ping_then_unread()
        .into_iter()
        .filter(|p| matches!(p, Incoming::Publish(p) if p.payload == b"OFFLINE"))
        .collect();
    assert!(rest.is_empty(), "each will queued once: {rest:?}");
}

#[test]
fn wills_of_persistent_sessions_connected_at_a_crash_are_published_at_restart() {
    // One worker: the store takes its changes in order, so an acknowledged publish
    // after the polite client's DISCONNECT proves that DISCONNECT's record is on disk.
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start_durable(dir.path(), "1");
    // v5 will properties must survive the store: Content Type and a User Property.
    let mut v5 = persistent_device(V5, "crash-v5");
    v5.will_properties = wire::property(0x03, &wire::string_value(b"text/plain"));
    let mut user = wire::string_value(b"site");
    user.extend(wire::string_value(b"north"));
    v5.will_properties.extend(wire::property(0x26, &user));
    let mut clients = vec![RawClient::connect_with(broker.addr(), &v5).0];
    clients.push(RawClient::connect_with(broker.addr(), &persistent_device(V3_1_1, "crash-311")).0);
    // Persistent too, but it said goodbye before the crash: its will is gone.
    let (mut polite, _) =
        RawClient::connect_with(broker.addr(), &persistent_device(V5, "crash-polite"));
    polite.publish("dev/crash-polite/status", b"ONLINE", 1, true);
    leave(polite, V5);
    let mut sync = RawClient::connect(broker.addr(), V5, "sync");
    sync.publish("sync/after-polite", b"x", 1, true);
    for c in &mut clients {
        c.ping();
    }
    broker.signal("KILL");
    broker.wait_exit(DEADLINE).expect("killed");
    drop(clients);

    let broker = start_durable(dir.path(), "1");
    let retained = retained_status(&broker, "crash-reader");
    assert_eq!(
        topics(&retained),
        ["dev/crash-311/status", "dev/crash-polite/status", "dev/crash-v5/status"],
        "{retained:?}"
    );
    assert_eq!(retained["dev/crash-311/status"].payload, b"OFFLINE");
    assert_eq!(retained["dev/crash-polite/status"].payload, b"ONLINE");
    let will = &retained["dev/crash-v5/status"];
    assert_eq!(will.payload, b"OFFLINE");
    let content_type = find_property(&will.properties, 0x03).map(|p| p.value.clone());
    assert_eq!(content_type.as_deref(), Some(&b"text/plain"[..]), "{will:?}");
    // The decoder gives a User Property as name and value run together.
    let user_property = find_property(&will.properties, 0x26).map(|p| p.value.clone());
    assert_eq!(user_property.as_deref(), Some(&b"sitenorth"[..]), "{will:?}");

    // Published once: a second restart does not publish it again.
    let mut broker = broker;
    let (mut c, _) = RawClient::connect_with(broker.addr(), &ConnectOptions::new(V5, "overwriter"));
    c.publish("dev/crash-311/status", b"REPLACED", 1, true);
    c.disconnect();
    stop(&mut broker);
    let broker = start_durable(dir.path(), "1");
    let retained = retained_status(&broker, "crash-reader-2");
    assert_eq!(retained["dev/crash-311/status"].payload, b"REPLACED", "will published twice");
}

#[test]
fn delayed_will_waits_across_a_restart_and_reconnecting_cancels_it() {
    // One worker: both delayed wills would be published in the same pass, in order.
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start_durable(dir.path(), "1");
    let mut late = persistent_device(V5, "late");
    late.will_delay = Some(3);
    let mut back = persistent_device(V5, "back");
    back.will_delay = Some(3);
    let mut first = RawClient::connect_with(broker.addr(), &late).0;
    let mut second = RawClient::connect_with(broker.addr(), &back).0;
    first.ping();
    second.ping();
    stop(&mut broker);
    drop((first, second));

    let broker = start_durable(dir.path(), "1");
    let mut watcher = RawClient::connect(broker.addr(), V5, "delay-watcher");
    watcher.subscribe_one("dev/+/status", 1);
    // "back" returns to its session before its delay ran out: no will.
    let (back_again, present) = RawClient::connect_with(broker.addr(), &back);
    assert!(present);
    // "late" does not: its will arrives once the delay (counted from the shutdown) ends.
    let got = watcher.expect_publish_acked();
    assert_eq!((got.topic.as_str(), got.payload.as_slice()), ("dev/late/status", &b"OFFLINE"[..]));
    let rest = watcher.ping_then_unread();
    assert!(rest.is_empty(), "only the will of the client that stayed away: {rest:?}");
    back_again.disconnect();
}

#[test]
fn will_of_a_session_that_expired_while_the_broker_was_down_is_published_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = start_durable(dir.path(), "2");
    let mut opts = persistent_device(V5, "expired");
    opts.session_expiry = Some(1);
    opts.will_delay = Some(600);
    let (mut d, _) = RawClient::connect_with(broker.addr(), &opts);
    d.publish("dev/expired/status", b"ONLINE", 1, true);
    // The broker stops while the will waits for its 600 s delay: a session that
    // outlives the broker keeps it in the store.
    stop(&mut broker);
    drop(d);
    // The session (expiry 1 s) ends while the broker is down.
    thread::sleep(Duration::from_secs(2));

    let broker = start_durable(dir.path(), "2");
    let retained = retained_status(&broker, "expired-reader");
    assert_eq!(retained["dev/expired/status"].payload, b"OFFLINE", "{retained:?}");
    let (_, present) = RawClient::connect_with(broker.addr(), &persistent_device(V5, "expired"));
    assert!(!present, "the expired session is gone");
}
