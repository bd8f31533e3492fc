//! Application hooks (`Broker::start_with_hooks`) called by the running broker: refusal
//! by peer address, authentication codes, QoS caps and refusals on subscribe, close on
//! publish, the lifecycle calls (`on_disconnect` with its reason, `on_stop`), and the
//! per-user topic example of `server/examples/user_topics` run as is.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use shoal_core::ProtocolVersion::{V3_1_1, V5};
use shoal_core::{QoS, ReasonCode, TopicFilter, TopicName};
use shoal_server::auth::{
    ClientInfo, ConnectInfo, DisconnectReason, Hooks, PublishDecision, SubscribeDecision,
};

use super::MODERN;
use crate::harness::{wait_until, TestBroker};
use crate::raw::wire::{self, ConnectOptions};
use crate::raw::{Incoming, RawClient, DEADLINE};

#[path = "../../../server/examples/user_topics/rules.rs"]
mod user_topics;

/// Blocks addresses on demand; caps QoS at 1 and refuses `forbidden/...`; closes the
/// connection of a client publishing to `kill`; refuses the username `banned`; records
/// every lifecycle call.
#[derive(Default)]
struct Recorder {
    block_loopback: AtomicBool,
    accepted: AtomicUsize,
    disconnects: Mutex<Vec<(String, DisconnectReason)>>,
    stopped: AtomicUsize,
}

impl Hooks for Recorder {
    fn on_accept(&self, peer: SocketAddr) -> bool {
        let blocked = self.block_loopback.load(Ordering::SeqCst) && peer.ip().is_loopback();
        if !blocked {
            self.accepted.fetch_add(1, Ordering::SeqCst);
        }
        !blocked
    }

    fn on_connect(&self, info: &ConnectInfo<'_>) -> ReasonCode {
        if info.username == Some("banned") {
            ReasonCode::Banned
        } else {
            ReasonCode::Success
        }
    }

    fn on_subscribe(&self, _: &ClientInfo, filter: &TopicFilter, qos: QoS) -> SubscribeDecision {
        if filter.as_str().starts_with("forbidden/") {
            SubscribeDecision::Refuse(ReasonCode::NotAuthorized)
        } else {
            SubscribeDecision::Grant(qos.min(QoS::AtLeastOnce))
        }
    }

    fn on_publish(&self, _: &ClientInfo, topic: &TopicName, _: QoS, _: bool) -> PublishDecision {
        if topic.as_str() == "kill" {
            PublishDecision::Close(ReasonCode::AdministrativeAction)
        } else {
            PublishDecision::Allow
        }
    }

    fn on_disconnect(&self, client: &ClientInfo, reason: DisconnectReason) {
        let id = client.identity.client_id.clone();
        self.disconnects.lock().unwrap().push((id, reason));
    }

    fn on_stop(&self) {
        self.stopped.fetch_add(1, Ordering::SeqCst);
    }
}

impl Recorder {
    fn disconnect_of(&self, client_id: &str) -> Option<DisconnectReason> {
        let all = self.disconnects.lock().unwrap();
        all.iter().find(|(id, _)| id == client_id).map(|(_, r)| *r)
    }
}

#[test]
fn hook_refuses_sockets_by_peer_address() {
    let hooks = Arc::new(Recorder::default());
    let broker = TestBroker::with_hooks("", hooks.clone());
    let mut before = RawClient::connect(broker.addr(), V5, "ip-before");
    hooks.block_loopback.store(true, Ordering::SeqCst);
    let mut refused = RawClient::tcp(broker.addr(), V3_1_1);
    let _ = refused.try_send(&wire::connect(&ConnectOptions::new(V3_1_1, "ip-refused")));
    let seen = refused.expect_closed(DEADLINE);
    assert!(seen.is_empty(), "a refused socket gets no CONNACK: {seen:?}");
    // Connections accepted earlier are not affected.
    before.ping();
    hooks.block_loopback.store(false, Ordering::SeqCst);
    RawClient::connect(broker.addr(), V3_1_1, "ip-after").ping();
}

#[test]
fn hook_answers_connect_with_its_code_mapped_per_version() {
    let broker = TestBroker::with_hooks("", Arc::new(Recorder::default()));
    for (version, code) in [(V3_1_1, 5), (V5, 0x8A)] {
        let mut opts = ConnectOptions::new(version, "who");
        opts.username = Some("banned".into());
        opts.password = Some(b"x".to_vec());
        let (mut c, reply) = RawClient::connect_raw(broker.addr(), &opts);
        assert!(
            matches!(reply, Ok(Incoming::ConnAck { code: c, .. }) if c == code),
            "{version}: {reply:?}"
        );
        c.expect_closed(DEADLINE);
    }
}

#[test]
fn hook_caps_qos_and_refuses_filters() {
    let broker = TestBroker::with_hooks("", Arc::new(Recorder::default()));
    for version in MODERN {
        let mut sub = RawClient::connect(broker.addr(), version, "cap-sub");
        let refused = if version.is_v5() { 0x87 } else { 0x80 };
        let codes = sub.subscribe(&[("q/#", 2), ("forbidden/#", 0), ("q0/#", 0)]);
        assert_eq!(codes, vec![1, refused, 0], "{version}: QoS 2 capped at 1, forbidden refused");
        let mut publisher = RawClient::connect(broker.addr(), V5, "cap-pub");
        publisher.publish("q/x", b"two", 2, false);
        let got = sub.expect_publish_acked();
        assert_eq!((got.topic.as_str(), got.qos), ("q/x", 1), "{version}: delivered at the cap");
        sub.disconnect();
        publisher.disconnect();
    }
}

#[test]
fn hook_closes_on_publish_and_sees_every_disconnect_and_the_stop() {
    let hooks = Arc::new(Recorder::default());
    let broker = TestBroker::with_hooks("", hooks.clone());
    let mut v5 = RawClient::connect(broker.addr(), V5, "kill-v5");
    v5.publish_no_wait("kill", b"", 0, false);
    assert_eq!(
        v5.expect_closed_with_reason(DEADLINE),
        Some(0x98),
        "DISCONNECT Administrative action"
    );
    let mut v3 = RawClient::connect(broker.addr(), V3_1_1, "kill-v3");
    v3.publish_no_wait("kill", b"", 1, false);
    let seen = v3.expect_closed(DEADLINE);
    assert!(seen.iter().all(|p| !matches!(p, Incoming::PubAck(..))), "not acknowledged: {seen:?}");

    RawClient::connect(broker.addr(), V3_1_1, "polite").disconnect();
    RawClient::connect(broker.addr(), V5, "crashed").drop_connection();
    let _stays = RawClient::connect(broker.addr(), V5, "stays");
    wait_until(DEADLINE, "four disconnects", || hooks.disconnects.lock().unwrap().len() == 4);
    let server = |rc| Some(DisconnectReason::Server(rc));
    assert_eq!(hooks.disconnect_of("kill-v5"), server(ReasonCode::AdministrativeAction));
    assert_eq!(hooks.disconnect_of("kill-v3"), server(ReasonCode::AdministrativeAction));
    assert_eq!(hooks.disconnect_of("polite"), Some(DisconnectReason::Client(ReasonCode::Success)));
    assert_eq!(hooks.disconnect_of("crashed"), Some(DisconnectReason::ConnectionLost));
    assert_eq!(hooks.stopped.load(Ordering::SeqCst), 0);
    broker.shutdown();
    assert_eq!(hooks.disconnect_of("stays"), server(ReasonCode::ServerShuttingDown));
    assert_eq!(hooks.stopped.load(Ordering::SeqCst), 1, "on_stop once");
    assert!(hooks.accepted.load(Ordering::SeqCst) >= 5);
}

#[test]
fn user_topics_example_lets_users_write_only_their_own_area() {
    let broker = TestBroker::with_hooks("", Arc::new(user_topics::UserTopics));
    let named = |version, id: &str, user: &str| {
        let mut opts = ConnectOptions::new(version, id);
        opts.username = Some(user.into());
        opts.password = Some(b"any".to_vec());
        RawClient::connect_with(broker.addr(), &opts).0
    };
    let mut watcher = RawClient::connect(broker.addr(), V5, "watcher");
    let refused = 0x87;
    assert_eq!(
        watcher.subscribe(&[("/users/#", 1), ("/public/#", 1), ("other/#", 1)]),
        vec![1, 1, refused]
    );
    for version in MODERN {
        let mut alice = named(version, "alice-1", "alice");
        let expect = if version.is_v5() { 0x87 } else { 0 };
        let id = alice.publish_no_wait("/users/bob/inbox", b"forged", 1, false);
        let ack = alice.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(i, _) if *i == id));
        assert_eq!(ack, Incoming::PubAck(id, expect), "{version}");
        alice.publish("/users/alice/status", b"mine", 1, false);
        let mut anonymous = RawClient::connect(broker.addr(), version, "anon-1");
        anonymous.publish("/users/alice/status", b"forged", 0, false);
        anonymous.publish("/public/chat", b"hello", 1, false);
        let first = watcher.expect_publish_acked();
        assert_eq!(
            (first.topic.as_str(), first.payload.as_slice()),
            ("/users/alice/status", &b"mine"[..])
        );
        let second = watcher.expect_publish_acked();
        assert_eq!(
            (second.topic.as_str(), second.payload.as_slice()),
            ("/public/chat", &b"hello"[..])
        );
        alice.disconnect();
        anonymous.disconnect();
    }
    // A will counts as a publish to its topic: one outside the client's area is refused.
    let mut opts =
        ConnectOptions::new(V5, "alice-will").with_will("/users/bob/will", b"x", 0, false);
    opts.username = Some("alice".into());
    let reply = RawClient::connect_raw(broker.addr(), &opts).1;
    assert!(matches!(reply, Ok(Incoming::ConnAck { code: 0x87, .. })), "{reply:?}");
}
