//! MQTT 5 Will Delay Interval (3.1.3.2.2): the will goes out when the delay runs out
//! or when the session ends, whichever is first [MQTT-3.1.3-9], and not at all when the
//! client reconnects to its session in time.
//!
//! One worker, so that wills and sentinels reach the watcher in the order they are
//! published; delays are whole seconds, kept by the broker's one-second tick.

use shoal_core::ProtocolVersion::V5;

use crate::harness::TestBroker;
use crate::raw::wire::ConnectOptions;
use crate::raw::RawClient;

fn one_worker() -> TestBroker {
    TestBroker::with_config("workers = 1\n")
}

fn watcher(broker: &TestBroker) -> RawClient {
    let mut sub = RawClient::connect(broker.addr(), V5, "watcher");
    sub.subscribe_one("wd/#", 1);
    sub
}

/// A v5 client with a will on `wd/{id}` (payload = id), a Will Delay and a Session
/// Expiry Interval.
fn delayed(broker: &TestBroker, id: &str, delay: u32, expiry: u32, clean: bool) -> RawClient {
    let mut opts =
        ConnectOptions::new(V5, id).with_will(&format!("wd/{id}"), id.as_bytes(), 1, false);
    opts.will_delay = Some(delay);
    opts.session_expiry = Some(expiry);
    opts.clean = clean;
    RawClient::connect_with(broker.addr(), &opts).0
}

#[test]
fn session_ending_first_sends_the_will_before_its_delay() {
    // Session Expiry 0: the session ends with the connection; a 600 s delay is cut short.
    let broker = one_worker();
    let mut w = watcher(&broker);
    delayed(&broker, "short-session", 600, 0, true).drop_connection();
    assert_eq!(w.expect_publish_acked().payload, b"short-session");
    // Session Expiry 1 s: the will goes when the session expires.
    delayed(&broker, "expiring", 600, 1, true).drop_connection();
    assert_eq!(w.expect_publish_acked().payload, b"expiring");
}

#[test]
fn will_goes_out_after_its_delay() {
    let broker = one_worker();
    let mut w = watcher(&broker);
    delayed(&broker, "late", 1, 600, true).drop_connection();
    assert_eq!(w.expect_publish_acked().payload, b"late");
}

#[test]
fn reconnecting_within_the_delay_cancels_the_will() {
    let broker = one_worker();
    let mut w = watcher(&broker);
    delayed(&broker, "comeback", 2, 600, true).drop_connection();
    // Back to the same session before the delay ran out, then a normal DISCONNECT.
    let mut back = delayed(&broker, "comeback", 2, 600, false);
    back.ping();
    back.disconnect();
    // Sentinel: a will due after the cancelled one would have been. Had the first not
    // been cancelled, it would have reached the watcher first.
    delayed(&broker, "sentinel", 3, 600, true).drop_connection();
    assert_eq!(w.expect_publish_acked().payload, b"sentinel");
}
