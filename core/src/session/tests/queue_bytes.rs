//! `max_queued_bytes`: what a session's queue weighs, and the bound on it.

use proptest::prelude::*;

use super::*;

/// Count bound out of the way (100), byte bound `max_bytes`, window 2.
fn byte_limits(max_bytes: usize) -> Limits {
    Limits { max_inflight: 2, max_queued_messages: 100, max_queued_bytes: max_bytes, ..limits() }
}

/// A persistent 3.1.1 session that has gone offline.
fn offline(limits: Limits, now: Instant) -> Session {
    let mut s = Session::new(Arc::from("c"), limits);
    s.handle_connect(now, &connect(ProtocolVersion::V3_1_1, "c", false, 0), answer());
    drain(&mut s);
    s.handle_link_lost(now, LinkLoss::SocketClosed);
    s
}

fn reconnect(s: &mut Session, now: Instant) -> Vec<Packet> {
    let a = ConnectAnswer { session_present: true, ..answer() };
    s.handle_connect(now, &connect(ProtocolVersion::V3_1_1, "c", false, 0), a);
    drain(s)
}

fn sum(s: &Session) -> usize {
    s.queued_deliveries().map(|d| d.message.queued_bytes()).sum()
}

#[test]
fn queued_bytes_are_topic_payload_and_properties() {
    // "a/b" is 3 bytes.
    assert_eq!(sized(47).message.queued_bytes(), 50);
    let properties = PublishProperties {
        // Identifier 1 + length 2 + "json" 4.
        content_type: Some("json".to_owned()),
        ..PublishProperties::default()
    };
    let m = Message {
        properties: Message::pack_properties(properties),
        ..(*sized(47).message).clone()
    };
    assert_eq!(m.queued_bytes(), 57);
    assert_eq!(m.detached().queued_bytes(), 57, "a detached copy weighs the same");
}

#[test]
fn a_message_past_the_byte_bound_is_dropped_like_a_count_overflow() {
    let now = Instant::now();
    let mut s = offline(byte_limits(100), now);
    assert_eq!(s.handle_delivery(now, sized(47)), Ok(()));
    assert_eq!(s.handle_delivery(now, sized(47)), Ok(()));
    assert_eq!(s.queued_bytes(), 100, "exactly the bound");
    assert_eq!(s.handle_delivery(now, sized(0)), Err(DropReason::QueueFull));
    assert_eq!((s.queued(), s.queued_bytes()), (2, 100), "the drop left the queue alone");
    // Moving into the window frees the bytes; the next message fits again.
    assert_eq!(sent_ids(&reconnect(&mut s, now)), vec![(1, false), (2, false)]);
    assert_eq!((s.queued(), s.queued_bytes()), (0, 0));
    s.set_write_blocked(now, true);
    assert_eq!(s.handle_delivery(now, sized(97)), Ok(()));
    assert_eq!(s.queued_bytes(), 100);
    assert!(s.take_queue_drops().is_empty(), "dropped on arrival, reported then");
}

#[test]
fn a_message_larger_than_the_whole_bound_is_dropped_even_into_an_empty_queue() {
    let now = Instant::now();
    let mut s = offline(byte_limits(100), now);
    assert_eq!(s.handle_delivery(now, sized(98)), Err(DropReason::QueueFull));
    assert_eq!(s.queued(), 0);
    // Online with room in the window it is not queued, so the bound does not apply.
    reconnect(&mut s, now);
    assert_eq!(s.handle_delivery(now, sized(98)), Ok(()));
    assert_eq!(sent_ids(&drain(&mut s)), vec![(1, false)]);
}

#[test]
fn zero_max_queued_bytes_is_no_byte_bound() {
    let now = Instant::now();
    let mut s = offline(byte_limits(0), now);
    for _ in 0..3 {
        assert_eq!(s.handle_delivery(now, sized(100_000)), Ok(()));
    }
    assert_eq!(s.queued_bytes(), 3 * 100_003);
}

#[test]
fn restored_queue_past_the_bound_is_kept_and_counted() {
    // The store held more than the bound (acknowledged before a crash, or the bound was
    // lowered since): nothing of it is dropped, new messages wait until it drains.
    let now = Instant::now();
    let state = RestoredState {
        expiry_secs: u32::MAX,
        queue: vec![sized(57), sized(57), sized(57)],
        ..RestoredState::default()
    };
    let mut s = Session::restore(Arc::from("c"), byte_limits(100), state, now);
    assert_eq!((s.queued(), s.queued_bytes()), (3, 180));
    assert_eq!(s.handle_delivery(now, sized(0)), Err(DropReason::QueueFull));
    let sent = reconnect(&mut s, now);
    assert_eq!(sent_ids(&sent), vec![(1, false), (2, false)]);
    assert_eq!((s.queued(), s.queued_bytes()), (1, 60));
    s.handle_packet(now, Packet::PubAck(PubAckLike::new(pid(1))));
    assert_eq!(sent_ids(&drain(&mut s)), vec![(3, false)], "all three restored ones go");
    assert_eq!(s.queued_bytes(), 0);
}

#[test]
fn orphaned_and_discarded_messages_leave_the_byte_count() {
    let now = Instant::now();
    let mut s = offline(byte_limits(1000), now);
    let shared = Delivery { share: Some(7), ..sized(97) };
    for d in [sized(7), shared, sized(17)] {
        assert_eq!(s.handle_delivery(now, d), Ok(()));
    }
    assert_eq!(s.queued_bytes(), 10 + 100 + 20);
    s.take_shared();
    assert_eq!((s.queued(), s.queued_bytes()), (2, 30));
    // A clean session's queue goes with its connection, bytes and all.
    let mut clean = online(ProtocolVersion::V3_1_1, true, now);
    clean.set_write_blocked(now, true);
    assert_eq!(clean.handle_delivery(now, sized(7)), Ok(()));
    assert_eq!(clean.queued_bytes(), 10);
    clean.handle_link_lost(now, LinkLoss::SocketClosed);
    assert_eq!((clean.queued(), clean.queued_bytes()), (0, 0));
}

#[test]
fn expired_messages_leave_the_byte_count_at_their_turn() {
    let now = Instant::now();
    let mut s = offline(byte_limits(1000), now);
    let expiring =
        Message { expires_at: Some(now + Duration::from_secs(1)), ..(*sized(47).message).clone() };
    let expiring = Delivery { message: Arc::new(expiring), ..sized(0) };
    assert_eq!(s.handle_delivery(now, expiring), Ok(()));
    assert_eq!(s.queued_bytes(), 50);
    reconnect(&mut s, now + Duration::from_secs(2));
    assert_eq!(s.take_queue_drops(), QueueDrops { expired: 1, too_large: 0 });
    assert_eq!(s.queued_bytes(), 0);
}

/// One step of the model run below.
#[derive(Debug, Clone)]
enum Op {
    /// A QoS 1 delivery with this payload size, maybe shared, maybe expiring in 1 s.
    Deliver {
        payload: usize,
        shared: bool,
        expiring: bool,
    },
    Connect {
        clean: bool,
    },
    LinkLost,
    PubAck(u16),
    WriteBlocked(bool),
    TakeShared,
    /// The clock moves on by this many seconds.
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..120, any::<bool>(), any::<bool>())
            .prop_map(|(payload, shared, expiring)| Op::Deliver { payload, shared, expiring }),
        1 => any::<bool>().prop_map(|clean| Op::Connect { clean }),
        1 => Just(Op::LinkLost),
        2 => (1u16..6).prop_map(Op::PubAck),
        1 => any::<bool>().prop_map(Op::WriteBlocked),
        1 => Just(Op::TakeShared),
        1 => (0u64..3).prop_map(Op::Tick),
    ]
}

proptest! {
    /// After any sequence of deliveries, (re)connects, link losses, acks, write
    /// blocking, shared-message hand-backs and clock ticks, starting from an empty or
    /// a restored (maybe over-bound) queue, the byte count is the sum over the queue,
    /// and whatever a delivery added keeps it within both bounds.
    #[test]
    fn queued_bytes_is_always_the_sum_over_the_queue(
        restored in proptest::collection::vec(0usize..120, 0..6),
        max_bytes in prop_oneof![Just(0usize), 1usize..400],
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        let start = Instant::now();
        let mut now = start;
        let limits = Limits { max_queued_messages: 5, ..byte_limits(max_bytes) };
        let state = RestoredState {
            expiry_secs: u32::MAX,
            queue: restored.into_iter().map(sized).collect(),
            ..RestoredState::default()
        };
        let mut s = Session::restore(Arc::from("c"), limits, state, now);
        prop_assert_eq!(s.queued_bytes(), sum(&s));
        for op in ops {
            let before = s.queued_bytes();
            match op {
                Op::Deliver { payload, shared, expiring } => {
                    let mut d = sized(payload);
                    if expiring {
                        let m = Message {
                            expires_at: Some(now + Duration::from_secs(1)),
                            ..(*d.message).clone()
                        };
                        d.message = Arc::new(m);
                    }
                    d.share = shared.then_some(1);
                    let admitted = s.handle_delivery(now, d).is_ok();
                    if admitted && s.queued_bytes() > before {
                        prop_assert!(max_bytes == 0 || s.queued_bytes() <= max_bytes);
                        prop_assert!(s.queued() <= 5);
                    }
                }
                Op::Connect { clean } => {
                    let c = connect(ProtocolVersion::V3_1_1, "c", clean, 0);
                    s.handle_connect(now, &c, answer());
                }
                Op::LinkLost => s.handle_link_lost(now, LinkLoss::SocketClosed),
                Op::PubAck(id) => s.handle_packet(now, Packet::PubAck(PubAckLike::new(pid(id)))),
                Op::WriteBlocked(on) => s.set_write_blocked(now, on),
                Op::TakeShared => s.take_shared(),
                Op::Tick(secs) => now += Duration::from_secs(secs),
            }
            drain(&mut s);
            events(&mut s);
            prop_assert_eq!(s.queued_bytes(), sum(&s));
        }
    }
}
