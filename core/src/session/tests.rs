//! Session state machine driven by packets and injected instants; no sockets.

use super::*;
use crate::codec::PublishProperties;
use crate::codec::{
    ConnectProperties, DisconnectProperties, SubscribeFilter, SubscribeProperties,
    UnsubscribeProperties,
};
use crate::protocol::PacketId;
use crate::topic::TopicName;
use bytes::Bytes;

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn connect(version: ProtocolVersion, id: &str, clean: bool, keep_alive: u16) -> Connect {
    Connect {
        protocol: version,
        clean_start: clean,
        keep_alive,
        client_id: id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

fn limits() -> Limits {
    Limits { max_inflight: 2, max_queued_messages: 3, ..Limits::default() }
}

fn online(version: ProtocolVersion, clean: bool, now: Instant) -> Session {
    let mut s = Session::new(Arc::from("c"), limits());
    s.handle_connect(now, &connect(version, "c", clean, 10), answer());
    assert!(matches!(s.poll_transmit(), Some(Packet::ConnAck(_))));
    s
}

fn answer() -> ConnectAnswer {
    ConnectAnswer { max_keep_alive_secs: u16::MAX, ..ConnectAnswer::default() }
}

fn message(topic: &str, qos: QoS) -> Arc<Message> {
    Arc::new(Message {
        topic: TopicName::try_from_str(topic).unwrap(),
        payload: Bytes::from_static(b"hi"),
        qos,
        retain: false,
        properties: None,
        expires_at: None,
        publisher: None,
    })
}

fn delivery(qos: QoS) -> Delivery {
    Delivery {
        message: message("a/b", qos),
        qos,
        retain: false,
        subscription_ids: Vec::new(),
        share: None,
    }
}

fn publish(qos: QoS, id: Option<u16>) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::try_from_str("t").unwrap(),
        packet_id: id.map(pid),
        properties: PublishProperties::default(),
        payload: Bytes::from_static(b"x"),
    })
}

fn drain(s: &mut Session) -> Vec<Packet> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn sent_ids(packets: &[Packet]) -> Vec<(u16, bool)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => p.packet_id.map(|id| (id.get(), p.dup)),
            _ => None,
        })
        .collect()
}

#[test]
fn empty_client_id_needs_clean_session() {
    let mut c = connect(ProtocolVersion::V3_1_1, "", false, 0);
    assert_eq!(check_connect(&c), Err(ReasonCode::ClientIdentifierNotValid));
    c.clean_start = true;
    assert_eq!(check_connect(&c), Ok(()));
    let v5 = connect(ProtocolVersion::V5, "", false, 0);
    assert_eq!(check_connect(&v5), Err(ReasonCode::ClientIdentifierNotValid));
}

#[test]
fn v31_client_id_longer_than_23_bytes_is_refused() {
    let long = "x".repeat(24);
    assert!(check_connect(&connect(ProtocolVersion::V3_1, &long, true, 0)).is_err());
    assert!(check_connect(&connect(ProtocolVersion::V3_1_1, &long, true, 0)).is_ok());
    assert!(check_connect(&connect(ProtocolVersion::V3_1, &"x".repeat(23), true, 0)).is_ok());
}

#[test]
fn v5_connack_advertises_limits_and_assigned_id() {
    let now = Instant::now();
    let mut s = Session::new(Arc::from("auto-1"), limits());
    let a = ConnectAnswer { assigned_client_id: Some("auto-1".into()), ..answer() };
    s.handle_connect(now, &connect(ProtocolVersion::V5, "", true, 0), a);
    let Some(Packet::ConnAck(ack)) = s.poll_transmit() else { panic!("no CONNACK") };
    assert_eq!(ack.properties.receive_maximum, Some(2));
    assert_eq!(ack.properties.topic_alias_maximum, Some(10));
    assert_eq!(ack.properties.shared_subscription_available, Some(true));
    assert_eq!(ack.properties.assigned_client_identifier.as_deref(), Some("auto-1"));
    // [MQTT-4.12.0-6] no Authentication Method without enhanced authentication.
    assert_eq!(ack.properties.authentication_method, None);
}

#[test]
fn enhanced_authentication_shows_in_connack_and_later_auth_is_the_brokers() {
    let now = Instant::now();
    let mut s = Session::new(Arc::from("c"), limits());
    let a = ConnectAnswer {
        authentication_method: Some("M".into()),
        authentication_data: Some(Bytes::from_static(b"final")),
        ..answer()
    };
    s.handle_connect(now, &connect(ProtocolVersion::V5, "c", true, 0), a);
    let Some(Packet::ConnAck(ack)) = s.poll_transmit() else { panic!("no CONNACK") };
    // [MQTT-4.12.0-5] the method again, with the authenticator's final data.
    assert_eq!(ack.properties.authentication_method.as_deref(), Some("M"));
    assert_eq!(ack.properties.authentication_data.as_deref(), Some(&b"final"[..]));
    // A re-authentication step the broker decided goes out in order.
    s.handle_packet(now, Packet::PingReq);
    let auth = crate::codec::Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        properties: crate::codec::AuthProperties::default(),
    };
    s.send_auth(auth.clone());
    assert_eq!(drain(&mut s), [Packet::PingResp, Packet::Auth(auth)]);
}

#[test]
fn auth_reaching_the_session_is_a_protocol_error() {
    // The broker hands AUTH to its exchange when the CONNECT named a method; any
    // other AUTH breaks [MQTT-4.12.0-7].
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V5, true, now);
    let auth = crate::codec::Auth {
        reason_code: ReasonCode::ReAuthenticate,
        properties: crate::codec::AuthProperties::default(),
    };
    s.handle_packet(now, Packet::Auth(auth));
    assert!(
        matches!(drain(&mut s).as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError)
    );
}

#[test]
fn keep_alive_above_maximum_is_lowered_and_reported() {
    let now = Instant::now();
    let mut s = Session::new(Arc::from("c"), limits());
    let a = ConnectAnswer { max_keep_alive_secs: 30, ..answer() };
    s.handle_connect(now, &connect(ProtocolVersion::V5, "c", true, 100), a);
    let Some(Packet::ConnAck(ack)) = s.poll_transmit() else { panic!("no CONNACK") };
    assert_eq!(ack.properties.server_keep_alive, Some(30));
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(45)));
}

#[test]
fn qos1_publish_is_routed_and_acked() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V3_1_1, true, now);
    s.handle_packet(now, publish(QoS::AtLeastOnce, Some(7)));
    assert!(matches!(events(&mut s).as_slice(), [Event::Publish(_)]));
    assert!(matches!(drain(&mut s).as_slice(), [Packet::PubAck(a)] if a.packet_id.get() == 7));
}

#[test]
fn qos2_publish_resent_before_pubrel_is_routed_once() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V3_1_1, true, now);
    s.handle_packet(now, publish(QoS::ExactlyOnce, Some(3)));
    s.handle_packet(now, publish(QoS::ExactlyOnce, Some(3)));
    assert_eq!(events(&mut s).len(), 1);
    assert_eq!(drain(&mut s).len(), 2, "PUBREC each time");
    s.handle_packet(now, Packet::PubRel(PubAckLike::new(pid(3))));
    assert!(
        matches!(drain(&mut s).as_slice(), [Packet::PubComp(c)] if c.reason_code == ReasonCode::Success)
    );
    // After PUBREL the id is free again: a new message with it is routed.
    s.handle_packet(now, publish(QoS::ExactlyOnce, Some(3)));
    assert_eq!(events(&mut s).len(), 1);
}

fn unpack(p: Packet) -> Publish {
    match p {
        Packet::Publish(p) => p,
        other => panic!("not a PUBLISH: {other:?}"),
    }
}

#[test]
fn unstorable_publish_is_refused_on_v5_and_left_unacknowledged_on_3x() {
    let now = Instant::now();
    let mut v5 = online(ProtocolVersion::V5, false, now);
    for (qos, id) in [(QoS::AtLeastOnce, 1), (QoS::ExactlyOnce, 2)] {
        let p = unpack(publish(qos, Some(id)));
        assert!(v5.handle_publish_unstorable(now, &p, ReasonCode::QuotaExceeded));
    }
    assert!(events(&mut v5).is_empty(), "not routed");
    let acks = drain(&mut v5);
    assert!(
        matches!(acks.as_slice(),
        [Packet::PubAck(a), Packet::PubRec(r)]
            if a.reason_code == ReasonCode::QuotaExceeded
                && r.reason_code == ReasonCode::QuotaExceeded),
        "{acks:?}"
    );
    // The refused QoS 2 id was not taken: a PUBREL for it is not found.
    v5.handle_packet(now, Packet::PubRel(PubAckLike::new(pid(2))));
    assert!(matches!(drain(&mut v5).as_slice(),
        [Packet::PubComp(c)] if c.reason_code == ReasonCode::PacketIdentifierNotFound));

    let mut v3 = online(ProtocolVersion::V3_1_1, false, now);
    let later = now + Duration::from_secs(9);
    let p = unpack(publish(QoS::AtLeastOnce, Some(1)));
    assert!(v3.handle_publish_unstorable(later, &p, ReasonCode::QuotaExceeded));
    assert!(events(&mut v3).is_empty() && drain(&mut v3).is_empty(), "no PUBACK on 3.x");
    // It still counts as traffic for the keep-alive (10 s, so 15 s from the last packet).
    v3.handle_timeout(now + Duration::from_secs(16));
    assert!(events(&mut v3).is_empty(), "the link is alive");
}

#[test]
fn unstorable_qos2_resend_of_a_taken_id_is_handled_as_usual() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V3_1_1, false, now);
    s.handle_packet(now, publish(QoS::ExactlyOnce, Some(4)));
    assert_eq!(events(&mut s).len(), 1);
    assert_eq!(drain(&mut s).len(), 1);
    let resend = unpack(publish(QoS::ExactlyOnce, Some(4)));
    assert!(!s.handle_publish_unstorable(now, &resend, ReasonCode::QuotaExceeded));
    assert!(events(&mut s).is_empty() && drain(&mut s).is_empty());
}

#[test]
fn outgoing_window_holds_back_and_ack_releases() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V3_1_1, true, now);
    for _ in 0..4 {
        assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    }
    let sent = drain(&mut s);
    assert_eq!(sent_ids(&sent), vec![(1, false), (2, false)]);
    assert_eq!(s.queued(), 2);
    s.handle_packet(now, Packet::PubAck(PubAckLike::new(pid(1))));
    assert_eq!(sent_ids(&drain(&mut s)), vec![(3, false)]);
}

#[test]
fn queue_beyond_limit_drops_and_counts() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V3_1_1, true, now);
    for _ in 0..5 {
        assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    }
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Err(DropReason::QueueFull));
}

#[test]
fn write_blocked_drops_qos0_and_queues_qos1() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V3_1_1, true, now);
    s.set_write_blocked(now, true);
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtMostOnce)), Err(DropReason::QueueFull));
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    assert!(drain(&mut s).is_empty());
    s.set_write_blocked(now, false);
    assert_eq!(sent_ids(&drain(&mut s)), vec![(1, false)]);
}

#[test]
fn qos1_publish_is_redelivered_with_dup_after_reconnect() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V3_1_1, false, now);
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    drain(&mut s);
    s.handle_link_lost(now, LinkLoss::SocketClosed);
    assert!(!s.is_connected());
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    let a = ConnectAnswer { session_present: true, ..answer() };
    s.handle_connect(now, &connect(ProtocolVersion::V3_1_1, "c", false, 0), a);
    let out = drain(&mut s);
    assert!(matches!(&out[0], Packet::ConnAck(c) if c.session_present));
    assert_eq!(sent_ids(&out), vec![(1, true), (2, false)]);
}

#[test]
fn queued_messages_that_may_have_been_sent_before_a_crash_go_out_with_dup() {
    // A store restored the session as connected at the crash: the first of its two
    // queued messages may have reached the client already; the second had not.
    let now = Instant::now();
    let state = RestoredState {
        expiry_secs: u32::MAX,
        queue: vec![delivery(QoS::AtLeastOnce), delivery(QoS::AtLeastOnce)],
        maybe_sent: 1,
        ..RestoredState::default()
    };
    let mut s = Session::restore(Arc::from("c"), limits(), state, now);
    let a = ConnectAnswer { session_present: true, ..answer() };
    s.handle_connect(now, &connect(ProtocolVersion::V3_1_1, "c", false, 0), a);
    assert_eq!(sent_ids(&drain(&mut s)), vec![(1, true), (2, false)]);
}

#[test]
fn redelivery_discards_what_the_new_maximum_packet_size_forbids() {
    // [MQTT-3.1.2-25]: too large for the new connection → discarded as if sent.
    let now = Instant::now();
    let mut s = Session::new(Arc::from("c"), limits());
    s.set_journaling(true);
    let mut first = connect(ProtocolVersion::V5, "c", false, 0);
    first.properties.session_expiry_interval = Some(60);
    s.handle_connect(now, &first, answer());
    drain(&mut s);
    let big = Delivery {
        message: Arc::new(Message {
            payload: Bytes::from(vec![b'x'; 100]),
            ..(*message("a/b", QoS::AtLeastOnce)).clone()
        }),
        ..delivery(QoS::AtLeastOnce)
    };
    assert_eq!(s.handle_delivery(now, big), Ok(()));
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    assert_eq!(sent_ids(&drain(&mut s)), vec![(1, false), (2, false)]);
    s.handle_link_lost(now, LinkLoss::SocketClosed);
    s.take_journal();

    let mut c = first.clone();
    c.properties.maximum_packet_size = Some(40);
    s.handle_connect(now, &c, ConnectAnswer { session_present: true, ..answer() });
    assert_eq!(sent_ids(&drain(&mut s)), vec![(2, true)], "only the small one is resent");
    assert_eq!(s.inflight(), 1, "the large one left the window");
    assert_eq!(s.take_queue_drops().too_large, 1);
    assert!(s
        .take_journal()
        .iter()
        .any(|c| matches!(c, StoreChange::Completed(id) if id.get() == 1)));
}

#[test]
fn pubrel_not_publish_is_resent_for_pubrec_state() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V3_1_1, false, now);
    assert_eq!(s.handle_delivery(now, delivery(QoS::ExactlyOnce)), Ok(()));
    drain(&mut s);
    s.handle_packet(now, Packet::PubRec(PubAckLike::new(pid(1))));
    assert!(matches!(drain(&mut s).as_slice(), [Packet::PubRel(_)]));
    s.handle_link_lost(now, LinkLoss::SocketClosed);
    s.handle_connect(now, &connect(ProtocolVersion::V3_1_1, "c", false, 0), answer());
    let out = drain(&mut s);
    assert!(
        matches!(out.as_slice(), [Packet::ConnAck(_), Packet::PubRel(r)] if r.packet_id.get() == 1)
    );
    s.handle_packet(now, Packet::PubComp(PubAckLike::new(pid(1))));
    assert_eq!(s.inflight(), 0);
}

#[test]
fn keep_alive_timeout_at_one_and_a_half_intervals_publishes_will() {
    let now = Instant::now();
    let mut s = Session::new(Arc::from("c"), limits());
    let mut c = connect(ProtocolVersion::V5, "c", true, 10);
    c.will = Some(LastWill {
        topic: TopicName::try_from_str("w").unwrap(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    });
    s.handle_connect(now, &c, answer());
    drain(&mut s);
    s.handle_timeout(now + Duration::from_secs(14));
    assert!(s.is_connected());
    s.handle_packet(now + Duration::from_secs(14), Packet::PingReq);
    assert!(matches!(drain(&mut s).as_slice(), [Packet::PingResp]));
    s.handle_timeout(now + Duration::from_secs(29));
    assert!(!s.is_connected());
    assert!(
        matches!(drain(&mut s).as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::KeepAliveTimeout)
    );
    assert!(matches!(events(&mut s).as_slice(), [Event::Close { will: Some(_), .. }]));
}

#[test]
fn normal_disconnect_discards_will() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V3_1_1, true, now);
    s.handle_packet(
        now,
        Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::Success,
            properties: DisconnectProperties::default(),
        }),
    );
    assert!(matches!(
        events(&mut s).as_slice(),
        [Event::Close { reason: ReasonCode::Success, will: None }]
    ));
}

#[test]
fn second_connect_is_a_protocol_error() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V5, true, now);
    s.handle_packet(now, Packet::Connect(Box::new(connect(ProtocolVersion::V5, "c", true, 0))));
    assert!(
        matches!(drain(&mut s).as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError)
    );
    assert!(!s.is_connected());
}

#[test]
fn subscribe_limits_and_shared_subscriptions() {
    let now = Instant::now();
    let mut s = Session::new(Arc::from("c"), Limits { max_subscriptions: 2, ..limits() });
    s.handle_connect(now, &connect(ProtocolVersion::V5, "c", true, 0), answer());
    drain(&mut s);
    let filter = |f: &str, qos| SubscribeFilter {
        filter: f.to_owned(),
        options: SubscriptionOptions { qos, ..Default::default() },
    };
    s.handle_packet(
        now,
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            filters: vec![
                filter("a/#", QoS::AtLeastOnce),
                filter("$share/g/a/#", QoS::AtMostOnce),
                filter("b", QoS::AtMostOnce),
            ],
            properties: SubscribeProperties::default(),
        }),
    );
    let Some(Packet::SubAck(ack)) = s.poll_transmit() else { panic!("no SUBACK") };
    assert_eq!(
        ack.reason_codes,
        vec![ReasonCode::GrantedQoS1, ReasonCode::Success, ReasonCode::QuotaExceeded]
    );
    // The shared subscription sits beside the plain one, under its whole name.
    let subscribed: Vec<String> = events(&mut s)
        .into_iter()
        .filter_map(|e| match e {
            Event::Subscribe { filter, .. } => Some(filter.as_str().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(subscribed, vec!["a/#".to_owned(), "$share/g/a/#".to_owned()]);
    s.handle_packet(
        now,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(2),
            filters: vec!["$share/g/a/#".into(), "zzz".into()],
            properties: UnsubscribeProperties::default(),
        }),
    );
    let Some(Packet::UnsubAck(ack)) = s.poll_transmit() else { panic!("no UNSUBACK") };
    assert_eq!(ack.reason_codes, vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]);
    assert!(
        matches!(events(&mut s).as_slice(), [Event::Unsubscribe(f)] if f.as_str() == "$share/g/a/#")
    );
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V5, true, now);
    let options =
        SubscriptionOptions { qos: QoS::AtLeastOnce, no_local: true, ..Default::default() };
    s.handle_packet(
        now,
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            filters: vec![SubscribeFilter { filter: "$share/g/x".into(), options }],
            properties: SubscribeProperties::default(),
        }),
    );
    assert!(
        matches!(drain(&mut s).as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError)
    );
}

#[test]
fn unacknowledged_shared_deliveries_are_handed_back_when_the_link_ends() {
    let now = Instant::now();
    // Persistent, window 2, queue 3: two shared in flight, one plain and one shared queued.
    let mut s = online(ProtocolVersion::V3_1_1, false, now);
    let shared = |n: u64| Delivery { share: Some(n), ..delivery(QoS::AtLeastOnce) };
    assert_eq!(s.handle_delivery(now, shared(1)), Ok(()));
    assert_eq!(s.handle_delivery(now, shared(2)), Ok(()));
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    assert_eq!(s.handle_delivery(now, shared(3)), Ok(()));
    let sent = drain(&mut s);
    assert_eq!(sent_ids(&sent), vec![(1, false), (2, false)]);
    // The first is acknowledged: the client has it, it is not handed back.
    s.handle_packet(now, Packet::PubAck(PubAckLike::new(pid(1))));
    events(&mut s);
    s.handle_link_lost(now, LinkLoss::SocketClosed);
    let evs = events(&mut s);
    let Some(Event::Orphaned(orphans)) = evs.first() else { panic!("no Orphaned: {evs:?}") };
    let tags: Vec<_> = orphans.iter().map(|d| d.share).collect();
    assert_eq!(tags, vec![Some(2), Some(3)]);
    assert!(matches!(evs.get(1), Some(Event::Close { .. })));
    // The plain delivery stays with the persistent session (it moved into the window).
    assert_eq!(s.inflight() + s.queued(), 1);
}

#[test]
fn clean_session_end_forgets_inflight_but_persistent_keeps_it() {
    let now = Instant::now();
    let mut clean = online(ProtocolVersion::V3_1_1, true, now);
    assert_eq!(clean.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    clean.handle_link_lost(now, LinkLoss::SocketClosed);
    assert_eq!(clean.inflight(), 0);
    assert!(!clean.is_persistent());
    let mut kept = online(ProtocolVersion::V3_1_1, false, now);
    assert_eq!(kept.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    kept.handle_link_lost(now, LinkLoss::SocketClosed);
    assert_eq!(kept.inflight(), 1);
    let offline = kept.handle_delivery(now, delivery(QoS::AtMostOnce));
    assert_eq!(offline, Err(DropReason::QueueFull), "QoS 0 not queued offline");
}

#[test]
fn inbound_topic_alias_is_resolved_and_one_above_our_maximum_refused() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V5, true, now);
    let Packet::Publish(mut p) = publish(QoS::AtMostOnce, None) else { unreachable!() };
    p.properties.topic_alias = Some(3);
    s.handle_packet(now, Packet::Publish(p.clone()));
    p.topic = TopicName::empty();
    s.handle_packet(now, Packet::Publish(p.clone()));
    let routed: Vec<String> = events(&mut s)
        .into_iter()
        .filter_map(|e| match e {
            Event::Publish(m) => Some(m.topic.as_str().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(routed, vec!["t".to_owned(), "t".to_owned()]);
    p.properties.topic_alias = Some(limits().topic_alias_maximum + 1);
    s.handle_packet(now, Packet::Publish(p));
    assert!(
        matches!(drain(&mut s).as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::TopicAliasInvalid)
    );
}

#[test]
fn outbound_topic_aliases_follow_the_clients_maximum() {
    let now = Instant::now();
    let mut s = Session::new(Arc::from("c"), limits());
    let mut c = connect(ProtocolVersion::V5, "c", true, 0);
    c.properties.topic_alias_maximum = Some(1);
    s.handle_connect(now, &c, answer());
    drain(&mut s);
    for topic in ["a", "a", "b", "b"] {
        let d = Delivery { message: message(topic, QoS::AtMostOnce), ..delivery(QoS::AtMostOnce) };
        assert_eq!(s.handle_delivery(now, d), Ok(()));
    }
    let sent: Vec<(String, Option<u16>)> = drain(&mut s)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.topic.as_str().to_owned(), p.properties.topic_alias)),
            _ => None,
        })
        .collect();
    let expected = [("a", 1), ("", 1), ("b", 1), ("", 1)];
    assert_eq!(sent, expected.map(|(t, a)| (t.to_owned(), Some(a))));
}

#[test]
fn v5_session_expires_after_its_interval() {
    let now = Instant::now();
    let mut s = Session::new(Arc::from("c"), limits());
    let mut c = connect(ProtocolVersion::V5, "c", false, 0);
    c.properties.session_expiry_interval = Some(5);
    s.handle_connect(now, &c, answer());
    s.handle_link_lost(now, LinkLoss::SocketClosed);
    assert!(s.is_persistent());
    assert!(!s.is_expired(now + Duration::from_secs(4)));
    assert!(s.is_expired(now + Duration::from_secs(5)));
}

#[test]
fn message_larger_than_client_maximum_packet_size_is_not_sent() {
    let now = Instant::now();
    let mut s = Session::new(Arc::from("c"), limits());
    let mut c = connect(ProtocolVersion::V5, "c", true, 0);
    c.properties.maximum_packet_size = Some(8);
    s.handle_connect(now, &c, answer());
    drain(&mut s);
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtMostOnce)), Err(DropReason::TooLarge));
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Err(DropReason::TooLarge));
    assert!(drain(&mut s).is_empty());
    assert!(s.take_queue_drops().is_empty(), "dropped on arrival, reported then");
}

/// A QoS 1 message to "a/b" with a `len`-byte payload.
fn sized(len: usize) -> Delivery {
    let m = Message {
        payload: Bytes::from(vec![0; len]),
        ..(*message("a/b", QoS::AtLeastOnce)).clone()
    };
    Delivery { message: Arc::new(m), ..delivery(QoS::AtLeastOnce) }
}

#[test]
fn queued_messages_dropped_at_their_turn_are_reported_once_by_cause() {
    // Queued while offline, the messages' fate is decided by the connection they go
    // out on: one expired meanwhile, one is too large for the new Maximum Packet Size.
    let now = Instant::now();
    let mut s = Session::new(Arc::from("c"), limits());
    let mut c = connect(ProtocolVersion::V5, "c", false, 0);
    c.properties.session_expiry_interval = Some(60);
    s.handle_connect(now, &c, answer());
    drain(&mut s);
    s.handle_link_lost(now, LinkLoss::SocketClosed);
    let expiring = Message {
        expires_at: Some(now + Duration::from_secs(1)),
        ..(*message("a/b", QoS::AtLeastOnce)).clone()
    };
    let expiring = Delivery { message: Arc::new(expiring), ..delivery(QoS::AtLeastOnce) };
    for d in [sized(100), expiring, delivery(QoS::AtLeastOnce)] {
        assert_eq!(s.handle_delivery(now, d), Ok(()), "offline: every size waits");
    }
    assert!(s.take_queue_drops().is_empty());
    let later = now + Duration::from_secs(2);
    c.properties.maximum_packet_size = Some(64);
    s.handle_connect(later, &c, ConnectAnswer { session_present: true, ..answer() });
    assert_eq!(sent_ids(&drain(&mut s)), vec![(1, false)], "only the small, live one goes");
    assert_eq!(s.take_queue_drops(), QueueDrops { expired: 1, too_large: 1 });
    assert!(s.take_queue_drops().is_empty(), "taken once");
}

#[test]
fn a_message_too_large_for_the_connection_is_discarded_before_it_queues() {
    // [MQTT-3.1.2-25]: online, the size is known when the message arrives; one too
    // large is dropped then (reported by handle_delivery, not again as a queue drop),
    // takes no queue slot, is not journaled and does not hold up the others.
    let now = Instant::now();
    let mut s = online_v5_with(None, Some(64), now);
    s.set_journaling(true);
    for _ in 0..2 {
        assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    }
    assert_eq!(sent_ids(&drain(&mut s)), vec![(1, false), (2, false)]);
    s.take_journal();
    // The window (2) is full: what fits queues, up to max_queued_messages (3).
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    assert_eq!(s.handle_delivery(now, sized(100)), Err(DropReason::TooLarge));
    // 64 bytes is the limit: fixed header 2, topic 2 + 3, packet id 2, property
    // length 1, so a 54-byte payload fits and a 55-byte one does not.
    assert_eq!(s.handle_delivery(now, sized(55)), Err(DropReason::TooLarge));
    assert_eq!(s.handle_delivery(now, sized(54)), Ok(()));
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    assert_eq!(s.queued(), 3);
    assert_eq!(s.take_journal().len(), 3, "one Queued change per queued message");
    s.handle_packet(now, Packet::PubAck(PubAckLike::new(pid(1))));
    s.handle_packet(now, Packet::PubAck(PubAckLike::new(pid(2))));
    let sent = drain(&mut s);
    assert_eq!(sent_ids(&sent), vec![(3, false), (4, false)], "in arrival order");
    assert_eq!(unpack(sent[1].clone()).payload.len(), 54);
    assert_eq!(v5_wire_len(&sent[1]), 64, "exactly the maximum");
    assert!(s.take_queue_drops().is_empty(), "nothing left to drop at its turn");
}

#[test]
fn keep_alive_zero_is_replaced_by_a_finite_maximum() {
    let now = Instant::now();
    let mut s = Session::new(Arc::from("c"), limits());
    let a = ConnectAnswer { max_keep_alive_secs: 30, ..answer() };
    s.handle_connect(now, &connect(ProtocolVersion::V5, "c", true, 0), a);
    let Some(Packet::ConnAck(ack)) = s.poll_transmit() else { panic!("no CONNACK") };
    assert_eq!(ack.properties.server_keep_alive, Some(30));
}

#[test]
fn client_sent_subscription_identifier_is_a_protocol_error() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V5, true, now);
    let Packet::Publish(mut p) = publish(QoS::AtMostOnce, None) else { unreachable!() };
    p.properties.subscription_identifiers.push(1);
    s.handle_packet(now, Packet::Publish(p));
    assert!(
        matches!(drain(&mut s).as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ProtocolError)
    );
}

/// `encode_transmit` writes exactly what encoding each `poll_transmit` packet writes,
/// for QoS 0 (through the shared-frame cache, twice for the same message, then for a
/// second session of another version), QoS 1, subscription ids and acks.
#[test]
fn encode_transmit_matches_poll_transmit_encoding() {
    let now = Instant::now();
    let shared = message("a/b", QoS::AtLeastOnce);
    let feed = |s: &mut Session| {
        for (qos, ids) in [
            (QoS::AtMostOnce, vec![]),
            (QoS::AtMostOnce, vec![]),
            (QoS::AtLeastOnce, vec![]),
            (QoS::AtMostOnce, vec![7]),
        ] {
            let d = Delivery {
                message: shared.clone(),
                qos,
                retain: false,
                subscription_ids: ids,
                share: None,
            };
            assert_eq!(s.handle_delivery(now, d), Ok(()));
        }
        s.handle_packet(now, Packet::PingReq);
    };
    let mut cache = PublishCache::default();
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5, ProtocolVersion::V3_1_1] {
        let (mut a, mut b) = (online(version, true, now), online(version, true, now));
        feed(&mut a);
        feed(&mut b);
        let mut expected = BytesMut::new();
        let packets = drain(&mut a);
        let count = u64::try_from(packets.len()).unwrap();
        for p in packets {
            p.encode(version, &mut expected).unwrap();
        }
        let mut got = BytesMut::new();
        let mut sent = SentCounts::default();
        assert_eq!(b.encode_transmit(version, &mut got, &mut cache, &mut sent), 0);
        assert_eq!(got, expected, "{version}");
        // Three QoS 0 and one QoS 1 PUBLISH among them.
        assert_eq!(sent, SentCounts { packets: count, publish: [3, 1, 0] }, "{version}");
        assert!(b.poll_transmit().is_none());
    }
}

#[test]
fn idle_session_holds_no_queue_memory_and_keeps_its_state() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V3_1_1, true, now);
    // Connected, nothing exchanged beyond CONNACK: no subscription or QoS state.
    assert!(s.stored.is_none());
    s.release_idle_memory();
    assert_eq!(s.transmit.capacity(), 0);
    assert_eq!(s.events.capacity(), 0);
    // A QoS 1 window in use survives the sweep; once acknowledged it is released
    // but packet ids carry on.
    for _ in 0..3 {
        assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    }
    assert_eq!(sent_ids(&drain(&mut s)), vec![(1, false), (2, false)]);
    s.release_idle_memory();
    assert_eq!((s.inflight(), s.queued()), (2, 1));
    for id in 1..=3 {
        s.handle_packet(now, Packet::PubAck(PubAckLike::new(pid(id))));
    }
    assert_eq!(sent_ids(&drain(&mut s)), vec![(3, false)]);
    s.release_idle_memory();
    assert_eq!((s.inflight(), s.queued()), (0, 0));
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    assert_eq!(sent_ids(&drain(&mut s)), vec![(4, false)]);
}

#[test]
fn payload_marked_utf8_that_is_not_is_refused_with_0x99() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V5, true, now);
    let bad = |qos, id| {
        let Packet::Publish(mut p) = publish(qos, id) else { unreachable!() };
        p.properties.payload_format_indicator = Some(true);
        p.payload = Bytes::from_static(&[0xff, 0xfe]);
        Packet::Publish(p)
    };
    s.handle_packet(now, bad(QoS::AtLeastOnce, Some(1)));
    s.handle_packet(now, bad(QoS::ExactlyOnce, Some(2)));
    assert!(events(&mut s).is_empty(), "an invalid payload was routed");
    let acks = drain(&mut s);
    assert!(matches!(&acks[..], [Packet::PubAck(a), Packet::PubRec(b)]
        if a.reason_code == ReasonCode::PayloadFormatInvalid
            && b.reason_code == ReasonCode::PayloadFormatInvalid
            && a.properties.reason_string.is_some()));
    // QoS 0 has no ack to carry it: DISCONNECT 0x99.
    s.handle_packet(now, bad(QoS::AtMostOnce, None));
    assert!(
        matches!(drain(&mut s).as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::PayloadFormatInvalid)
    );
}

#[test]
fn request_problem_information_0_turns_reason_strings_off() {
    let now = Instant::now();
    for (asked, expect_string) in [(None, true), (Some(false), false)] {
        let mut s = Session::new(Arc::from("c"), limits());
        let mut c = connect(ProtocolVersion::V5, "c", true, 10);
        c.properties.request_problem_information = asked;
        s.handle_connect(now, &c, answer());
        drain(&mut s);
        s.handle_link_lost(now, LinkLoss::TakenOver);
        let Some(Packet::Disconnect(d)) = s.poll_transmit() else { panic!("no DISCONNECT") };
        assert_eq!(d.reason_code, ReasonCode::SessionTakenOver);
        assert_eq!(d.properties.reason_string.is_some(), expect_string, "asked {asked:?}");
    }
}

#[test]
fn will_payload_marked_utf8_that_is_not_refuses_the_connect() {
    let mut c = connect(ProtocolVersion::V5, "c", true, 0);
    let mut will = LastWill {
        topic: TopicName::try_from_str("w").unwrap(),
        payload: Bytes::from_static(&[0xc3]),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    };
    will.properties.payload_format_indicator = Some(true);
    c.will = Some(will);
    assert_eq!(check_connect(&c), Err(ReasonCode::PayloadFormatInvalid));
}

#[test]
fn qos1_and_qos2_count_together_against_our_receive_maximum() {
    // [MQTT-3.3.4-9] with Receive Maximum 2: two QoS 2 exchanges awaiting PUBREL leave
    // no room for a QoS 1 PUBLISH from a v5 client.
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V5, true, now);
    s.handle_packet(now, publish(QoS::ExactlyOnce, Some(1)));
    s.handle_packet(now, publish(QoS::ExactlyOnce, Some(2)));
    assert_eq!(drain(&mut s).len(), 2, "two PUBRECs");
    let resent = match publish(QoS::ExactlyOnce, Some(2)) {
        Packet::Publish(p) => p,
        _ => unreachable!(),
    };
    assert!(!s.exceeds_receive_maximum(&resent, 0), "a resend is not a new exchange");
    s.handle_packet(now, publish(QoS::AtLeastOnce, Some(3)));
    assert!(
        matches!(drain(&mut s).as_slice(), [Packet::Disconnect(d)] if d.reason_code == ReasonCode::ReceiveMaximumExceeded)
    );
    assert!(!s.is_connected());
}

#[test]
fn pubacks_the_broker_holds_count_against_our_receive_maximum() {
    let now = Instant::now();
    let qos1 = match publish(QoS::AtLeastOnce, Some(7)) {
        Packet::Publish(p) => p,
        _ => unreachable!(),
    };
    let qos2 = Publish { qos: QoS::ExactlyOnce, ..qos1.clone() };
    let mut v5 = online(ProtocolVersion::V5, true, now);
    v5.handle_packet(now, publish(QoS::ExactlyOnce, Some(1)));
    assert!(!v5.exceeds_receive_maximum(&qos1, 0));
    assert!(v5.exceeds_receive_maximum(&qos1, 1), "1 awaiting PUBREL + 1 held PUBACK");
    assert!(v5.exceeds_receive_maximum(&qos2, 1));
    // 3.x has no Receive Maximum: only its QoS 2 exchanges are bounded.
    let mut v3 = online(ProtocolVersion::V3_1_1, true, now);
    v3.handle_packet(now, publish(QoS::ExactlyOnce, Some(1)));
    assert!(!v3.exceeds_receive_maximum(&qos1, 5));
    assert!(!v3.exceeds_receive_maximum(&qos2, 5));
    v3.handle_packet(now, publish(QoS::ExactlyOnce, Some(2)));
    assert!(v3.exceeds_receive_maximum(&qos2, 0));
}

/// A v5 session whose CONNECT set Request Problem Information and Maximum Packet Size.
fn online_v5_with(problem_info: Option<bool>, max_packet: Option<u32>, now: Instant) -> Session {
    let mut s = Session::new(Arc::from("c"), limits());
    let mut c = connect(ProtocolVersion::V5, "c", true, 10);
    c.properties.request_problem_information = problem_info;
    c.properties.maximum_packet_size = max_packet;
    s.handle_connect(now, &c, answer());
    drain(&mut s);
    s
}

fn subscribe_bad_and_good(s: &mut Session, now: Instant) -> SubAck {
    let filter = |f: &str| SubscribeFilter { filter: f.into(), options: Default::default() };
    s.handle_packet(
        now,
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            filters: vec![filter("a/#/b"), filter("ok")],
            properties: SubscribeProperties::default(),
        }),
    );
    match drain(s).into_iter().next() {
        Some(Packet::SubAck(ack)) => ack,
        other => panic!("no SUBACK: {other:?}"),
    }
}

#[test]
fn suback_and_unsuback_failures_carry_a_reason_string_naming_the_filter() {
    let now = Instant::now();
    let mut s = online_v5_with(None, None, now);
    let ack = subscribe_bad_and_good(&mut s, now);
    assert_eq!(ack.reason_codes, vec![ReasonCode::TopicFilterInvalid, ReasonCode::Success]);
    let text = ack.properties.reason_string.expect("SUBACK failure without reason string");
    assert!(text.contains("a/#/b") && text.contains("Topic Filter invalid"), "{text}");
    s.handle_packet(
        now,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(2),
            filters: vec!["ok".into(), "x/#/y".into(), "never".into()],
            properties: UnsubscribeProperties::default(),
        }),
    );
    let Some(Packet::UnsubAck(ack)) = s.poll_transmit() else { panic!("no UNSUBACK") };
    assert_eq!(
        ack.reason_codes,
        vec![
            ReasonCode::Success,
            ReasonCode::TopicFilterInvalid,
            ReasonCode::NoSubscriptionExisted
        ]
    );
    // Only the failure is explained; "no subscription existed" is not one.
    let text = ack.properties.reason_string.expect("UNSUBACK failure without reason string");
    assert!(text.contains("x/#/y") && !text.contains("never"), "{text}");
}

#[test]
fn ack_reason_strings_respect_problem_information_and_maximum_packet_size() {
    let now = Instant::now();
    // [MQTT-3.1.2-29] Request Problem Information 0: no reason string.
    let mut s = online_v5_with(Some(false), None, now);
    assert_eq!(subscribe_bad_and_good(&mut s, now).properties.reason_string, None);
    // [MQTT-3.1.2-25] a SUBACK that would not fit the client's maximum goes without it.
    let mut s = online_v5_with(None, Some(16), now);
    let ack = subscribe_bad_and_good(&mut s, now);
    assert_eq!(ack.reason_codes.len(), 2);
    assert_eq!(ack.properties.reason_string, None);
    // A long filter is cut, so the string stays short.
    let mut s = online_v5_with(None, None, now);
    let long = format!("{}/#/b", "x".repeat(1000));
    s.handle_packet(
        now,
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            filters: vec![SubscribeFilter { filter: long, options: Default::default() }],
            properties: SubscribeProperties::default(),
        }),
    );
    let Some(Packet::SubAck(ack)) = s.poll_transmit() else { panic!("no SUBACK") };
    let text = ack.properties.reason_string.expect("no reason string");
    assert!(text.len() < 200, "{} bytes", text.len());
}

/// The size of `packet` on the wire to a v5 client.
fn v5_wire_len(packet: &Packet) -> usize {
    let mut out = BytesMut::new();
    packet.encode(ProtocolVersion::V5, &mut out).unwrap();
    out.len()
}

#[test]
fn puback_reason_string_goes_only_when_the_whole_ack_fits_the_maximum_packet_size() {
    // [MQTT-3.4.2-2] PUBACK 0x99 with Reason String "payload is not UTF-8" (20 bytes):
    // fixed header 2, packet id 2, reason code 1, property length 1, Reason String
    // (identifier 1, length 2, text 20) = 29 bytes. Without the string: 5 bytes.
    let now = Instant::now();
    let bad = || {
        let Packet::Publish(mut p) = publish(QoS::AtLeastOnce, Some(1)) else { unreachable!() };
        p.properties.payload_format_indicator = Some(true);
        p.payload = Bytes::from_static(&[0xff]);
        Packet::Publish(p)
    };
    for (max, with_string, len) in [(29, true, 29), (28, false, 5)] {
        let mut s = online_v5_with(None, Some(max), now);
        s.handle_packet(now, bad());
        let Some(ack) = s.poll_transmit() else { panic!("no PUBACK") };
        let Packet::PubAck(a) = &ack else { panic!("not a PUBACK: {ack:?}") };
        assert_eq!(a.reason_code, ReasonCode::PayloadFormatInvalid);
        assert_eq!(a.properties.reason_string.is_some(), with_string, "maximum {max}");
        assert_eq!(v5_wire_len(&ack), len, "maximum {max}");
    }
}

#[test]
fn disconnect_reason_string_goes_only_when_the_whole_packet_fits_the_maximum_packet_size() {
    // [MQTT-3.14.2-3] DISCONNECT 0x8E with the reason's text as Reason String: fixed
    // header 2, reason code 1, property length 1, Reason String (identifier 1, length
    // 2, text) bytes. Without the string: 3 bytes.
    let now = Instant::now();
    let full = 2 + 1 + 1 + 3 + ReasonCode::SessionTakenOver.to_string().len();
    for (max, with_string, len) in [(full, true, full), (full - 1, false, 3)] {
        let mut s = online_v5_with(None, Some(u32::try_from(max).unwrap()), now);
        s.handle_link_lost(now, LinkLoss::TakenOver);
        let Some(packet) = s.poll_transmit() else { panic!("no DISCONNECT") };
        let Packet::Disconnect(d) = &packet else { panic!("not a DISCONNECT: {packet:?}") };
        assert_eq!(d.reason_code, ReasonCode::SessionTakenOver);
        assert_eq!(d.properties.reason_string.is_some(), with_string, "maximum {max}");
        assert_eq!(v5_wire_len(&packet), len, "maximum {max}");
    }
}

#[test]
fn an_ack_that_does_not_fit_sheds_its_reason_string_before_its_user_properties() {
    // [MQTT-3.4.2-2], [MQTT-3.4.2-3]: fixed header 2, packet id 2, reason code 1,
    // property length 1, Reason String "no" (1 + 2 + 2), User Property k=v
    // (1 + 2 + 1 + 2 + 1): 18 bytes; 13 without the string; 5 with neither.
    let now = Instant::now();
    let ack_within = |max| {
        let s = online_v5_with(None, Some(max), now);
        let mut a = PubAckLike::new(pid(1));
        a.reason_code = ReasonCode::NotAuthorized;
        a.properties.user_properties.push(("k".to_owned(), "v".to_owned()));
        s.explain_ack(AckKind::PubAck, &mut a, "no");
        let kept = (a.properties.reason_string.is_some(), !a.properties.user_properties.is_empty());
        (kept, v5_wire_len(&Packet::PubAck(a)))
    };
    assert_eq!(ack_within(18), ((true, true), 18));
    assert_eq!(ack_within(17), ((false, true), 13));
    assert_eq!(ack_within(12), ((false, false), 5));
}

#[test]
fn a_detached_message_keeps_nothing_of_the_read_chunk() {
    // A read chunk: the topic, the payload and the MQTT 5 properties' byte fields are
    // all views into it, as the decoder makes them.
    let chunk = Bytes::from(b"a/b hello reply/to corr".to_vec());
    let in_chunk = |b: &[u8]| chunk.as_ptr_range().contains(&b.as_ptr());
    let properties = PublishProperties {
        response_topic: Some(TopicName::parse(chunk.slice(10..18)).unwrap()),
        correlation_data: Some(chunk.slice(19..23)),
        content_type: Some("text/plain".to_owned()),
        ..PublishProperties::default()
    };
    let msg = Message {
        topic: TopicName::parse(chunk.slice(0..3)).unwrap(),
        payload: chunk.slice(4..9),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Message::pack_properties(properties),
        expires_at: None,
        publisher: Some(Arc::from("p")),
    };
    let copy = msg.detached();
    assert_eq!(copy, msg);
    assert!(!in_chunk(copy.topic.as_bytes()));
    assert!(!in_chunk(&copy.payload));
    let p = copy.properties.as_deref().unwrap();
    assert!(!in_chunk(p.response_topic.as_ref().unwrap().as_bytes()));
    assert!(!in_chunk(p.correlation_data.as_ref().unwrap()));
}

#[test]
fn messages_without_properties_hold_no_room_for_them() {
    assert_eq!(Message::pack_properties(PublishProperties::default()), None);
    let p = PublishProperties { message_expiry_interval: Some(5), ..Default::default() };
    assert!(Message::pack_properties(p).is_some());
    // Growth of the routed message is a decision: a million may wait in queues.
    assert_eq!(std::mem::size_of::<Message>(), 112);
}

#[test]
fn a_session_queues_when_offline_blocked_or_its_window_is_full() {
    let now = Instant::now();
    let mut s = online(ProtocolVersion::V3_1_1, false, now);
    assert!(!s.is_queueing());
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    assert!(!s.is_queueing(), "one of a window of two in flight");
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    assert!(s.is_queueing(), "window full");
    assert_eq!(s.queued(), 0);
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    assert_eq!(s.queued(), 1);
    assert_eq!(s.queued_deliveries().count(), 1);

    let mut s = online(ProtocolVersion::V3_1_1, false, now);
    s.set_write_blocked(now, true);
    assert!(s.is_queueing());
    s.set_write_blocked(now, false);
    s.handle_link_lost(now, LinkLoss::SocketClosed);
    assert!(s.is_queueing(), "offline");
}

/// The one packet the session sent, which must be a PUBREL or PUBCOMP.
fn only_release_ack(s: &mut Session) -> (Packet, PubAckLike) {
    let out = drain(s);
    match out.as_slice() {
        [p @ (Packet::PubRel(a) | Packet::PubComp(a))] => (p.clone(), a.clone()),
        other => panic!("expected one PUBREL or PUBCOMP: {other:?}"),
    }
}

#[test]
fn packet_identifier_not_found_acks_carry_a_reason_string_where_allowed() {
    // PUBREL for an id never received → PUBCOMP 0x92; PUBREC for an id never sent →
    // PUBREL 0x92. Each explains itself like the other reason-coded acks: not when the
    // client asked for no problem information [MQTT-3.1.2-29], not when the string would
    // break its Maximum Packet Size [MQTT-3.1.2-25].
    let now = Instant::now();
    let unknown =
        [Packet::PubRel(PubAckLike::new(pid(7))), Packet::PubRec(PubAckLike::new(pid(7)))];
    for packet in &unknown {
        let mut s = online_v5_with(None, None, now);
        s.handle_packet(now, packet.clone());
        let (_, ack) = only_release_ack(&mut s);
        assert_eq!(ack.reason_code, ReasonCode::PacketIdentifierNotFound, "{packet:?}");
        let text = ack.properties.reason_string.expect("0x92 without reason string");
        assert!(text.contains("packet identifier"), "{text}");

        let mut quiet = online_v5_with(Some(false), None, now);
        quiet.handle_packet(now, packet.clone());
        let (_, ack) = only_release_ack(&mut quiet);
        assert_eq!(ack.reason_code, ReasonCode::PacketIdentifierNotFound);
        assert_eq!(ack.properties.reason_string, None, "problem information off");

        // Fixed header 2, packet id 2, reason code 1: the ack without its string.
        let mut small = online_v5_with(None, Some(20), now);
        small.handle_packet(now, packet.clone());
        let (wire, ack) = only_release_ack(&mut small);
        assert_eq!(ack.reason_code, ReasonCode::PacketIdentifierNotFound);
        assert_eq!(ack.properties.reason_string, None, "maximum packet size 20");
        assert_eq!(v5_wire_len(&wire), 5);
    }
    // 3.x: the ack still goes, with neither code nor string on the wire.
    for packet in unknown {
        let mut s = online(ProtocolVersion::V3_1_1, false, now);
        s.handle_packet(now, packet);
        let (wire, _) = only_release_ack(&mut s);
        let mut out = BytesMut::new();
        wire.encode(ProtocolVersion::V3_1_1, &mut out).unwrap();
        assert_eq!(out.len(), 4, "{wire:?}");
    }
}

#[test]
fn pubrec_and_pubcomp_do_not_touch_a_qos1_delivery_with_the_same_id() {
    // A QoS 1 delivery waits for PUBACK only. A stray PUBREC for its id is answered
    // PUBREL 0x92 (no QoS 2 exchange has it) and neither it, a PUBCOMP nor an error
    // PUBREC ends the delivery: the PUBACK still does.
    let now = Instant::now();
    let mut s = online_v5_with(None, None, now);
    assert_eq!(s.handle_delivery(now, delivery(QoS::AtLeastOnce)), Ok(()));
    assert_eq!(sent_ids(&drain(&mut s)), vec![(1, false)]);
    s.handle_packet(now, Packet::PubRec(PubAckLike::new(pid(1))));
    let (_, rel) = only_release_ack(&mut s);
    assert_eq!(rel.reason_code, ReasonCode::PacketIdentifierNotFound);
    s.handle_packet(now, Packet::PubComp(PubAckLike::new(pid(1))));
    let refused = PubAckLike { reason_code: ReasonCode::QuotaExceeded, ..PubAckLike::new(pid(1)) };
    s.handle_packet(now, Packet::PubRec(refused));
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.inflight(), 1, "still waiting for its PUBACK");
    s.handle_packet(now, Packet::PubAck(PubAckLike::new(pid(1))));
    assert_eq!(s.inflight(), 0);
}

#[test]
fn a_repeated_pubrec_is_answered_with_pubrel_success_until_pubcomp() {
    let now = Instant::now();
    let mut s = online_v5_with(None, None, now);
    assert_eq!(s.handle_delivery(now, delivery(QoS::ExactlyOnce)), Ok(()));
    assert_eq!(sent_ids(&drain(&mut s)), vec![(1, false)]);
    for _ in 0..2 {
        s.handle_packet(now, Packet::PubRec(PubAckLike::new(pid(1))));
        let (_, rel) = only_release_ack(&mut s);
        assert_eq!(rel.reason_code, ReasonCode::Success);
        assert_eq!(rel.properties.reason_string, None);
    }
    s.handle_packet(now, Packet::PubComp(PubAckLike::new(pid(1))));
    assert_eq!(s.inflight(), 0);
    // After PUBCOMP the id is gone: another PUBREC for it is not found.
    s.handle_packet(now, Packet::PubRec(PubAckLike::new(pid(1))));
    let (_, rel) = only_release_ack(&mut s);
    assert_eq!(rel.reason_code, ReasonCode::PacketIdentifierNotFound);
}

#[test]
fn a_refused_publish_says_why_in_its_ack_where_allowed() {
    let now = Instant::now();
    for (problem_info, with_string) in [(None, true), (Some(false), false)] {
        let mut s = online_v5_with(problem_info, None, now);
        for (qos, id) in [(QoS::AtLeastOnce, 1), (QoS::ExactlyOnce, 2)] {
            let p = unpack(publish(qos, Some(id)));
            s.handle_publish_refused(now, &p, ReasonCode::NotAuthorized);
        }
        let acks = drain(&mut s);
        let [Packet::PubAck(a), Packet::PubRec(r)] = acks.as_slice() else { panic!("{acks:?}") };
        for ack in [a, r] {
            assert_eq!(ack.reason_code, ReasonCode::NotAuthorized);
            let text = ack.properties.reason_string.as_deref();
            assert_eq!(text.is_some(), with_string, "problem information {problem_info:?}");
            if let Some(text) = text {
                assert!(text.starts_with("t: "), "{text}");
            }
        }
    }
}

mod queue_bytes;
