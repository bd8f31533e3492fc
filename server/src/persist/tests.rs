use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command as Process, Stdio};
use std::sync::Mutex;

use bytes::Bytes;
use crossbeam_channel::{bounded, unbounded, Receiver};
use shoal_core::codec::SubscriptionOptions;
use shoal_core::{ProtocolVersion, TopicFilter};

use super::*;

const DEADLINE: Duration = Duration::from_secs(20);

/// A link whose wake-ups arrive on a channel, so tests wait for completions without
/// sleeping.
fn open_link(handle: &PersisterHandle) -> (PersistLink, Receiver<()>) {
    let (tx, rx) = unbounded();
    let link = handle.link(Arc::new(move || {
        let _ = tx.send(());
    }));
    (link, rx)
}

/// Faults that hold every commit until the test lets it go: `reached` receives once a
/// commit is held, each send on `go` releases one.
fn held_commits() -> (Arc<FaultInjector>, Receiver<()>, crossbeam_channel::Sender<()>) {
    let (reached_tx, reached) = bounded::<()>(1);
    let (go, go_rx) = unbounded::<()>();
    let faults = Arc::new(FaultInjector {
        fail_next_commits: AtomicU32::new(0),
        before_commit: Some(Box::new(move || {
            let _ = reached_tx.try_send(());
            let _ = go_rx.recv();
        })),
    });
    (faults, reached, go)
}

fn next_completion(link: &PersistLink, woken: &Receiver<()>) -> Completion {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(c) = link.poll_completion() {
            return c;
        }
        let left = until.saturating_duration_since(Instant::now());
        assert!(woken.recv_timeout(left).is_ok(), "no completion within {DEADLINE:?}");
    }
}

fn topic(s: &str) -> TopicName {
    TopicName::try_from_str(s).unwrap()
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn message(id: u64, topic_name: &str, payload: &'static [u8]) -> StoredMessage {
    StoredMessage {
        id: MessageId(id),
        topic: topic(topic_name),
        payload: Bytes::from_static(payload),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Bytes::new(),
        expires_at: None,
    }
}

fn session(expiry_secs: u32, disconnected_at: Option<u64>) -> SessionRecord {
    SessionRecord {
        version: ProtocolVersion::V5,
        expiry_secs,
        disconnected_at,
        subscriptions: vec![StoredSubscription {
            filter: TopicFilter::parse("sensors/#").unwrap(),
            options: SubscriptionOptions { qos: QoS::AtLeastOnce, ..Default::default() },
            identifier: Some(7),
        }],
        will: Some(StoredWill {
            topic: topic("wills/a"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Bytes::from_static(&[0x01, 0x01]),
            delay_secs: 0,
        }),
    }
}

fn put_session(client: &str, record: SessionRecord) -> Intent {
    Intent::PutSession { client_id: client.into(), record }
}

fn enqueue(client: &str, id: u64, seq: u64) -> Intent {
    Intent::Enqueue { client_id: client.into(), message: MessageId(id), seq }
}

fn dequeue(client: &str, seq: u64) -> Intent {
    Intent::Dequeue { client_id: client.into(), seq }
}

fn start(dir: &Path) -> (PersisterHandle, Recovered) {
    Persister::start(dir, PersistOptions::default()).unwrap()
}

/// Submits one batch and waits until it is committed.
fn commit(link: &PersistLink, woken: &Receiver<()>, batch: Vec<Intent>, ticket: u64) {
    link.try_submit(batch, Ticket(ticket)).unwrap();
    match next_completion(link, woken) {
        Completion::Committed(t) => assert_eq!(t, vec![Ticket(ticket)]),
        Completion::Failed(_, e) => panic!("commit failed: {e}"),
    }
}

fn raw_bodies(dir: &Path) -> Vec<u64> {
    let db = redb::Database::open(dir.join(DB_FILE_NAME)).unwrap();
    table::stored_bodies(&db)
}

#[test]
fn an_idle_store_gives_the_space_of_a_drained_burst_back() {
    let dir = tempfile::tempdir().unwrap();
    let options = PersistOptions {
        compact_check: Some(Duration::from_millis(200)),
        compact_min_bytes: 1 << 20,
        ..PersistOptions::default()
    };
    let (handle, _) = Persister::start(dir.path(), options).unwrap();
    let (link, woken) = open_link(&handle);
    let file = dir.path().join(DB_FILE_NAME);
    let size = || std::fs::metadata(&file).unwrap().len();

    // A burst: 16 MiB of queued bodies, in batches, then all of them delivered.
    static BODY: [u8; 16 * 1024] = [7; 16 * 1024];
    let mut ticket = 0;
    commit(&link, &woken, vec![put_session("a", session(600, None))], ticket);
    for chunk in 0..16u64 {
        let mut batch = Vec::new();
        for i in chunk * 64..(chunk + 1) * 64 {
            batch.push(Intent::PutMessage(message(i + 1, "x", &BODY)));
            batch.push(enqueue("a", i + 1, i));
        }
        ticket += 1;
        commit(&link, &woken, batch, ticket);
    }
    let full = size();
    assert!(full >= 16 << 20, "the burst took {full} bytes");
    ticket += 1;
    commit(&link, &woken, (0..1024).map(|i| dequeue("a", i)).collect(), ticket);
    // The one body still queued survives the compaction.
    ticket += 1;
    let last = vec![Intent::PutMessage(message(5000, "x", b"kept")), enqueue("a", 5000, 2000)];
    commit(&link, &woken, last, ticket);

    let until = Instant::now() + DEADLINE;
    while size() * 4 > full {
        assert!(Instant::now() < until, "still {} of {full} bytes after {DEADLINE:?}", size());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(link);
    drop(handle);
    let (_handle, recovered) = start(dir.path());
    let queue: Vec<_> = recovered.sessions[0].queue.iter().map(|(s, m)| (*s, m.id.0)).collect();
    assert_eq!(queue, vec![(2000, 5000)]);
}

#[test]
fn an_idle_degraded_store_probes_until_a_write_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let faults =
        Arc::new(FaultInjector { fail_next_commits: AtomicU32::new(0), before_commit: None });
    let options = PersistOptions {
        faults: Some(faults.clone()),
        probe_interval: Duration::from_millis(20),
        ..PersistOptions::default()
    };
    let (handle, _) = Persister::start(dir.path(), options).unwrap();
    let (link, woken) = open_link(&handle);

    // The failed group, then three failed probes: still degraded.
    faults.fail_next_commits.store(4, Ordering::SeqCst);
    link.try_submit(vec![put_session("a", session(60, None))], Ticket(1)).unwrap();
    assert!(matches!(next_completion(&link, &woken), Completion::Failed(..)));
    assert!(link.is_degraded());
    let until = Instant::now() + DEADLINE;
    while faults.fail_next_commits.load(Ordering::SeqCst) > 0 {
        assert!(link.is_degraded(), "cleared while every write failed");
        assert!(Instant::now() < until, "no probe within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    // With no submission at all, a probe that succeeds clears the flag.
    while link.is_degraded() {
        assert!(Instant::now() < until, "still degraded after the disk took writes again");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(handle.stats().failed_commits, 1, "probes are not counted as commits");
    commit(&link, &woken, vec![put_session("a", session(60, None))], 2);
    drop(link);
    drop(handle);
    let (_handle, recovered) = start(dir.path());
    assert_eq!(recovered.sessions.len(), 1);
}

#[test]
fn no_completion_is_released_before_its_commit_returns_and_failures_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (reached_tx, reached) = bounded::<()>(0);
    let (go, go_rx) = bounded::<()>(0);
    let gate_on = Arc::new(AtomicBool::new(true));
    let gate = gate_on.clone();
    let faults = Arc::new(FaultInjector {
        fail_next_commits: AtomicU32::new(0),
        before_commit: Some(Box::new(move || {
            if gate.load(Ordering::SeqCst) {
                let _ = reached_tx.send(());
                let _ = go_rx.recv();
            }
        })),
    });
    let options = PersistOptions { faults: Some(faults.clone()), ..PersistOptions::default() };
    let (handle, _) = Persister::start(dir.path(), options).unwrap();
    let (link, woken) = open_link(&handle);

    // Held just before commit: the group is applied but not committed, so no completion.
    let batch =
        vec![put_session("a", session(60, None)), Intent::PutMessage(message(1, "x", b"1"))];
    link.try_submit(batch, Ticket(1)).unwrap();
    reached.recv_timeout(DEADLINE).unwrap();
    assert!(link.poll_completion().is_none());
    go.send(()).unwrap();
    assert!(matches!(next_completion(&link, &woken), Completion::Committed(t) if t == [Ticket(1)]));
    assert!(!link.is_degraded());
    gate_on.store(false, Ordering::SeqCst);

    // A failing commit is reported as a failure and degrades the store ...
    faults.fail_next_commits.store(1, Ordering::SeqCst);
    let batch = vec![Intent::PutMessage(message(2, "x", b"2")), enqueue("a", 2, 1)];
    link.try_submit(batch, Ticket(2)).unwrap();
    match next_completion(&link, &woken) {
        Completion::Failed(t, e) => {
            assert_eq!(t, vec![Ticket(2)]);
            assert!(matches!(*e, PersistError::Injected));
        }
        Completion::Committed(t) => panic!("{t:?} committed despite the failure"),
    }
    assert!(link.is_degraded() && handle.is_degraded());
    assert_eq!(handle.stats().failed_commits, 1);

    // ... until the next commit succeeds (on the reopened file, counts rebuilt from it).
    let batch = vec![
        Intent::PutMessage(message(3, "x", b"3")),
        enqueue("a", 3, 2),
        Intent::PutMessage(message(4, "x", b"4")),
        enqueue("a", 4, 3),
    ];
    commit(&link, &woken, batch, 3);
    assert!(!link.is_degraded());
    faults.fail_next_commits.store(1, Ordering::SeqCst);
    link.try_submit(vec![dequeue("a", 2)], Ticket(4)).unwrap();
    assert!(matches!(next_completion(&link, &woken), Completion::Failed(..)));
    commit(&link, &woken, vec![dequeue("a", 3)], 5);
    drop(link);
    drop(handle);
    assert_eq!(raw_bodies(dir.path()), vec![3], "body 4 deleted with its last reference");

    // Nothing of the failed batch reached the disk.
    let (_handle, recovered) = start(dir.path());
    let queue: Vec<u64> =
        recovered.sessions[0].queue.iter().map(|(s, m)| s * 100 + m.id.0).collect();
    assert_eq!(queue, vec![203]);
}

#[test]
fn a_full_channel_hands_the_batch_back() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, reached, go) = held_commits();
    let options =
        PersistOptions { channel_capacity: 1, faults: Some(faults), ..PersistOptions::default() };
    let (handle, _) = Persister::start(dir.path(), options).unwrap();
    let (link, woken) = open_link(&handle);
    link.try_submit(vec![], Ticket(1)).unwrap();
    reached.recv_timeout(DEADLINE).unwrap(); // the persister holds ticket 1
    link.try_submit(vec![], Ticket(2)).unwrap(); // fills the channel
    let batch = vec![Intent::DeleteSession { client_id: "z".into() }];
    let rejected = link.try_submit(batch.clone(), Ticket(3)).unwrap_err();
    assert_eq!((rejected.batch, rejected.ticket, rejected.closed), (batch, Ticket(3), false));
    go.send(()).unwrap();
    go.send(()).unwrap();
    let mut done = Vec::new();
    while done.len() < 2 {
        match next_completion(&link, &woken) {
            Completion::Committed(t) => done.extend(t),
            Completion::Failed(_, e) => panic!("{e}"),
        }
    }
    assert_eq!(done, vec![Ticket(1), Ticket(2)]);
}

#[test]
fn a_batch_past_the_byte_bound_waits_until_a_commit_makes_room() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, reached, go) = held_commits();
    let options =
        PersistOptions { queue_bytes: 10_000, faults: Some(faults), ..PersistOptions::default() };
    let (handle, _) = Persister::start(dir.path(), options).unwrap();
    let (link, woken) = open_link(&handle);
    // Alone, a batch heavier than the bound is taken (or it could never go).
    let mut heavy = message(1, "t/heavy", b"");
    heavy.payload = Bytes::from(vec![7_u8; 20_000]);
    let heavy = vec![Intent::PutMessage(heavy)];
    assert!(heavy[0].weight() > 20_000);
    link.try_submit(heavy, Ticket(1)).unwrap();
    reached.recv_timeout(DEADLINE).unwrap(); // the persister holds ticket 1
                                             // Until it is committed, nothing more fits, however light, though the channel
                                             // has room for 1023 more batches.
    let light = vec![Intent::DeleteSession { client_id: "z".into() }];
    let rejected = link.try_submit(light.clone(), Ticket(2)).unwrap_err();
    assert_eq!(
        (rejected.batch, rejected.ticket, rejected.closed),
        (light.clone(), Ticket(2), false)
    );
    go.send(()).unwrap();
    match next_completion(&link, &woken) {
        Completion::Committed(t) => assert_eq!(t, vec![Ticket(1)]),
        Completion::Failed(_, e) => panic!("{e}"),
    }
    link.try_submit(light, Ticket(2)).unwrap();
    go.send(()).unwrap();
    match next_completion(&link, &woken) {
        Completion::Committed(t) => assert_eq!(t, vec![Ticket(2)]),
        Completion::Failed(_, e) => panic!("{e}"),
    }
}

#[test]
fn state_survives_a_restart_and_expired_state_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, recovered) = start(dir.path());
    assert!(recovered.sessions.is_empty() && recovered.retained.is_empty());
    let (link, woken) = open_link(&handle);
    let id = |_| link.next_message_id().0;
    let (m1, m2, m3, m4, m5) = (id(()), id(()), id(()), id(()), id(()));
    let mut expired = message(m3, "x/expired", b"old");
    expired.expires_at = Some(1);
    let mut later = message(m4, "x/later", b"new");
    later.expires_at = Some(now_unix() + 3600);
    let mut retained = message(m5, "r/1", b"kept");
    retained.retain = true;
    let batch = vec![
        put_session("alive", session(3600, Some(now_unix()))),
        put_session("online", session(60, None)),
        put_session("expired", session(10, Some(1))),
        put_session("never", session(u32::MAX, Some(1))),
        Intent::PutMessage(message(m1, "x/1", b"one")),
        Intent::PutMessage(message(m2, "x/2", b"two")),
        Intent::PutMessage(expired),
        Intent::PutMessage(later),
        Intent::PutMessage(retained),
        enqueue("alive", m1, 1),
        enqueue("alive", m2, 2),
        enqueue("alive", m3, 3),
        enqueue("alive", m4, 4),
        enqueue("expired", m1, 1),
        enqueue("online", m2, 1),
        Intent::PutRetained { topic: topic("r/1"), message: MessageId(m5) },
        Intent::PutRetained { topic: topic("x/expired"), message: MessageId(m3) },
        Intent::PutRetained { topic: topic("r/2"), message: MessageId(m1) },
        Intent::PutInflight {
            client_id: "online".into(),
            packet_id: pid(5),
            record: InflightRecord::Publish { message: MessageId(m1), qos: QoS::ExactlyOnce },
        },
        Intent::PutInflight {
            client_id: "online".into(),
            packet_id: pid(6),
            record: InflightRecord::Released,
        },
        Intent::MarkQos2Received { client_id: "online".into(), packet_id: pid(9) },
        Intent::MarkQos2Received { client_id: "online".into(), packet_id: pid(10) },
    ];
    commit(&link, &woken, batch, 1);
    let batch = vec![
        dequeue("alive", 2),
        Intent::ClearQos2Received { client_id: "online".into(), packet_id: pid(10) },
        Intent::DeleteRetained { topic: topic("r/2") },
        put_session("gone", session(60, None)),
        enqueue("gone", m2, 1),
        Intent::DeleteSession { client_id: "gone".into() },
        // Refers to a message the store never had: skipped, not stored.
        enqueue("alive", 999, 5),
    ];
    commit(&link, &woken, batch, 2);
    assert_eq!(handle.stats().dangling, 1);
    drop(link);
    drop(handle);

    let (handle, recovered) = start(dir.path());
    let mut sessions = recovered.sessions.clone();
    sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let ids: Vec<&str> = sessions.iter().map(|s| s.client_id.as_str()).collect();
    assert_eq!(ids, ["alive", "never", "online"]);
    let alive = &sessions[0];
    assert_eq!(alive.record, session(3600, alive.record.disconnected_at));
    let queue: Vec<(u64, u64)> = alive.queue.iter().map(|(s, m)| (*s, m.id.0)).collect();
    assert_eq!(queue, vec![(1, m1), (4, m4)]);
    assert_eq!(alive.queue[0].1.payload, Bytes::from_static(b"one"));
    let online = &sessions[2];
    assert!(online.record.disconnected_at.is_some(), "connected at the crash: offline from now");
    assert!(online.connected_at_crash && !alive.connected_at_crash);
    assert_eq!(online.queue.len(), 1);
    assert_eq!(online.qos2_received, vec![pid(9)]);
    assert_eq!(online.inflight.len(), 2);
    assert!(
        matches!(&online.inflight[0], (p, RecoveredInflight::Publish { message, qos: QoS::ExactlyOnce })
        if *p == pid(5) && message.id.0 == m1)
    );
    assert!(matches!(&online.inflight[1], (p, RecoveredInflight::Released) if *p == pid(6)));
    // One allocation per body, however many holders.
    assert!(Arc::ptr_eq(
        &alive.queue[0].1,
        match &online.inflight[0].1 {
            RecoveredInflight::Publish { message, .. } => message,
            RecoveredInflight::Released => unreachable!(),
        }
    ));
    let retained: Vec<(&str, u64)> =
        recovered.retained.iter().map(|(t, m)| (t.as_str(), m.id.0)).collect();
    assert_eq!(retained, vec![("r/1", m5)]);
    let report = &recovered.report;
    assert_eq!((report.expired_sessions, report.expired_messages), (1, 1));
    assert_eq!((report.sessions, report.queued, report.retained, report.messages), (3, 3, 1, 4));
    // Ids are never reused after a restart.
    assert!(handle.link(Arc::new(|| {})).next_message_id().0 > m5);
    drop(handle);

    // The drop was written down: a second recovery finds nothing more to drop.
    let (_handle, again) = start(dir.path());
    assert_eq!((again.report.expired_sessions, again.report.expired_messages), (0, 0));
    assert_eq!(again.report.queued, 3);
}

#[test]
fn a_body_in_two_queues_is_stored_once_and_deleted_with_its_last_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, _) = start(dir.path());
    let (link, woken) = open_link(&handle);
    let batch = vec![
        put_session("a", session(60, Some(now_unix()))),
        put_session("b", session(60, Some(now_unix()))),
        Intent::PutMessage(message(1, "t", b"shared")),
        enqueue("a", 1, 1),
        enqueue("b", 1, 1),
    ];
    commit(&link, &woken, batch, 1);
    commit(&link, &woken, vec![dequeue("a", 1)], 2);
    drop(link);
    drop(handle);
    assert_eq!(raw_bodies(dir.path()), vec![1]);

    // Counts rebuilt by recovery.
    let (handle, recovered) = start(dir.path());
    assert_eq!(recovered.report.messages, 1);
    let (link, woken) = open_link(&handle);
    commit(&link, &woken, vec![dequeue("b", 1)], 3);
    // Counts kept across commits of one run, through retained and in-flight too.
    let batch = vec![
        Intent::PutMessage(message(2, "t", b"again")),
        enqueue("a", 2, 2),
        Intent::PutRetained { topic: topic("t"), message: MessageId(2) },
        Intent::PutInflight {
            client_id: "b".into(),
            packet_id: pid(1),
            record: InflightRecord::Publish { message: MessageId(2), qos: QoS::AtLeastOnce },
        },
    ];
    commit(&link, &woken, batch, 4);
    commit(&link, &woken, vec![dequeue("a", 2)], 5);
    commit(&link, &woken, vec![Intent::DeleteRetained { topic: topic("t") }], 6);
    drop(link);
    drop(handle);
    assert_eq!(raw_bodies(dir.path()), vec![2]);
    let (handle, _) = start(dir.path());
    let (link, woken) = open_link(&handle);
    let done = Intent::DeleteInflight { client_id: "b".into(), packet_id: pid(1) };
    commit(&link, &woken, vec![done], 7);
    drop(link);
    drop(handle);
    assert_eq!(raw_bodies(dir.path()), Vec::<u64>::new());
}

fn put_inflight(client: &str, packet_id: u16, id: u64) -> Intent {
    Intent::PutInflight {
        client_id: client.into(),
        packet_id: pid(packet_id),
        record: InflightRecord::Publish { message: MessageId(id), qos: QoS::AtLeastOnce },
    }
}

fn delete_inflight(client: &str, packet_id: u16) -> Intent {
    Intent::DeleteInflight { client_id: client.into(), packet_id: pid(packet_id) }
}

#[test]
fn a_message_acknowledged_within_its_group_is_not_written_and_what_stays_is() {
    let dir = tempfile::tempdir().unwrap();
    let (handle, _) = start(dir.path());
    let (link, woken) = open_link(&handle);
    // An entry committed before, then overwritten and removed in one later group: the
    // removal must still take the old entry (and its body) away.
    let batch = vec![
        put_session("a", session(60, Some(now_unix()))),
        Intent::PutMessage(message(1, "t", b"old")),
        put_inflight("a", 5, 1),
    ];
    commit(&link, &woken, batch, 1);
    let batch = vec![
        // Delivered and acknowledged in the same group: nothing of it is written.
        Intent::PutMessage(message(2, "t", b"acked")),
        put_inflight("a", 6, 2),
        delete_inflight("a", 6),
        // Queued and moved into the window: only the in-flight entry stays.
        Intent::PutMessage(message(3, "t", b"moved")),
        enqueue("a", 3, 0),
        put_inflight("a", 7, 3),
        dequeue("a", 0),
        // Written over without a removal first, then removed.
        Intent::PutMessage(message(4, "t", b"over")),
        put_inflight("a", 5, 4),
        delete_inflight("a", 5),
    ];
    commit(&link, &woken, batch, 2);
    let stats = handle.stats();
    drop(link);
    drop(handle);
    assert_eq!(raw_bodies(dir.path()), vec![3]);
    // Skipped: body 2 and its entry, the queue entry of 3, body 4 and its entry.
    assert_eq!(stats.skipped, 5);
    let (_handle, recovered) = start(dir.path());
    let a = &recovered.sessions[0];
    assert!(a.queue.is_empty());
    let inflight: Vec<u16> = a.inflight.iter().map(|(p, _)| p.get()).collect();
    assert_eq!(inflight, vec![7]);
}

#[test]
fn a_garbage_data_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut junk = b"definitely not a database".to_vec();
    junk.resize(64 * 1024, 0xA5);
    std::fs::write(dir.path().join(DB_FILE_NAME), &junk).unwrap();
    let err = Persister::start(dir.path(), PersistOptions::default()).unwrap_err();
    assert!(
        matches!(err, PersistError::Open { .. } | PersistError::EnginePanicked { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(DB_FILE_NAME), "{err}");
    // The file is left as it was.
    assert_eq!(std::fs::read(dir.path().join(DB_FILE_NAME)).unwrap(), junk);
}

#[test]
fn a_redb_file_shoal_did_not_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = redb::Database::create(dir.path().join(DB_FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        let def: redb::TableDefinition<'_, &str, &str> = redb::TableDefinition::new("other");
        txn.open_table(def).unwrap().insert("k", "v").unwrap();
        txn.commit().unwrap();
    }
    let err = Persister::start(dir.path(), PersistOptions::default()).unwrap_err();
    assert!(matches!(err, PersistError::Foreign { .. }), "{err:?}");
}

#[test]
fn a_truncated_data_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (handle, _) = start(dir.path());
        let (link, woken) = open_link(&handle);
        let batch = vec![
            put_session("a", session(60, None)),
            Intent::PutMessage(message(1, "t", b"x")),
            enqueue("a", 1, 1),
        ];
        commit(&link, &woken, batch, 1);
    }
    let path = dir.path().join(DB_FILE_NAME);
    let bytes = std::fs::read(&path).unwrap();
    for keep in [0, 100, 512, 4096, bytes.len() / 2] {
        std::fs::write(&path, &bytes[..keep.min(bytes.len())]).unwrap();
        // Whatever redb makes of it (fresh file, repair, error), it is not a panic.
        let _ = Persister::start(dir.path(), PersistOptions::default());
    }
}

/// Env var that turns the crash test's binary into the writer child.
const CRASH_CHILD: &str = "SHOAL_PERSIST_CRASH_CHILD";
const CRASH_CLIENT: &str = "crash";

/// The child: commits numbered batches as fast as it can, several in flight, and prints
/// `committed N` for every ticket the persister reported committed. Never returns.
fn crash_writer(dir: &Path) -> ! {
    let (handle, recovered) = start(dir);
    let mut next = recovered
        .sessions
        .iter()
        .flat_map(|s| s.queue.iter().map(|(seq, _)| seq + 1))
        .max()
        .unwrap_or(1);
    let (link, woken) = open_link(&handle);
    commit(&link, &woken, vec![put_session(CRASH_CLIENT, session(u32::MAX, None))], 0);
    let mut out = std::io::stdout().lock();
    let mut in_flight = 0;
    loop {
        while in_flight < 8 {
            let id = link.next_message_id();
            let mut m = message(id.0, "crash/last", b"0123456789abcdef0123456789abcdef");
            m.retain = true;
            let batch = vec![
                Intent::PutMessage(m),
                enqueue(CRASH_CLIENT, id.0, next),
                Intent::PutRetained { topic: topic("crash/last"), message: id },
            ];
            link.try_submit(batch, Ticket(next)).unwrap();
            next += 1;
            in_flight += 1;
        }
        match next_completion(&link, &woken) {
            Completion::Committed(tickets) => {
                in_flight -= tickets.len();
                for t in tickets {
                    writeln!(out, "committed {}", t.0).unwrap();
                }
                out.flush().unwrap();
            }
            Completion::Failed(_, e) => panic!("commit failed: {e}"),
        }
    }
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn kill_9_loses_no_committed_ticket() {
    if let Some(dir) = std::env::var_os(CRASH_CHILD) {
        crash_writer(Path::new(&dir));
    }
    let seed = std::env::var("SHOAL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| (now_unix() ^ (u64::from(std::process::id()) << 20)) | 1);
    println!("crash test seed {seed} (replay with SHOAL_CRASH_SEED={seed})");
    let mut rng = seed;
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut total = 0;
    for round in 0..4 {
        let mut child = Process::new(&exe)
            .args(["persist::tests::kill_9_loses_no_committed_ticket", "--exact", "--nocapture"])
            .env(CRASH_CHILD, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
        let (first_tx, first) = bounded::<()>(1);
        let reader = {
            let seen = seen.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(n) = line.strip_prefix("committed ").and_then(|n| n.parse().ok()) {
                        seen.lock().unwrap().push(n);
                        let _ = first_tx.try_send(());
                    }
                }
            })
        };
        // Kill at a random moment once it is committing.
        let _ = first.recv_timeout(DEADLINE);
        std::thread::sleep(Duration::from_millis(xorshift(&mut rng) % 300));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();

        let committed = std::mem::take(&mut *seen.lock().unwrap());
        let (handle, recovered) = start(dir.path());
        let session = recovered.sessions.iter().find(|s| s.client_id == CRASH_CLIENT);
        let on_disk: HashSet<u64> =
            session.map(|s| s.queue.iter().map(|(seq, _)| *seq).collect()).unwrap_or_default();
        let missing: Vec<u64> =
            committed.iter().copied().filter(|t| !on_disk.contains(t)).collect();
        assert!(missing.is_empty(), "seed {seed} round {round}: lost committed {missing:?}");
        if let Some(&last) = committed.iter().max() {
            // The retained topic holds the last committed message or a later one.
            let (_, m) =
                recovered.retained.iter().find(|(t, _)| t.as_str() == "crash/last").unwrap();
            let queued = session.and_then(|s| s.queue.iter().find(|(seq, _)| *seq == last));
            assert!(m.id >= queued.map(|(_, m)| m.id).unwrap(), "seed {seed}: stale retained");
        }
        println!("round {round}: {} committed tickets survived kill -9", committed.len());
        total += committed.len();
        drop(handle);
    }
    assert!(total > 0, "seed {seed}: the child never committed anything");
}

/// Where the benches put their store: `SHOAL_BENCH_DIR`, else the system temp dir (a
/// tmpfs there makes fsync free and the figures meaningless).
fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("SHOAL_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

const PAYLOAD_64: &[u8; 64] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Group commit under a stream of 64-byte QoS 1 messages to persistent sessions:
/// `producers` threads, each a worker with its own link submitting batches of
/// `per_batch` messages (body + queue entry, plus the subscriber's ack of an entry 1000
/// back), with at most `window` batches awaiting their commit each, for `run`.
fn group_commit_figures(producers: u64, per_batch: u64, window: usize, run: Duration) {
    let dir = bench_dir();
    let (handle, _) = start(dir.path());
    let handle = Arc::new(handle);
    let started = Instant::now();
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                let (link, woken) = open_link(&handle);
                let client = format!("sub-{p}");
                commit(&link, &woken, vec![put_session(&client, session(u32::MAX, None))], 0);
                let (mut seq, mut outstanding, mut acked, mut ticket) = (1u64, 0, 0u64, 1u64);
                let mut latency = Duration::ZERO;
                let mut submitted_at = std::collections::HashMap::new();
                while started.elapsed() < run || outstanding > 0 {
                    while outstanding < window && started.elapsed() < run {
                        let mut batch = Vec::with_capacity(3 * per_batch as usize);
                        for _ in 0..per_batch {
                            let id = link.next_message_id();
                            let mut m = message(id.0, "bench/qos1", b"");
                            m.payload = Bytes::from_static(PAYLOAD_64);
                            batch.push(Intent::PutMessage(m));
                            batch.push(enqueue(&client, id.0, seq));
                            if seq > 1000 {
                                batch.push(dequeue(&client, seq - 1000));
                            }
                            seq += 1;
                        }
                        link.try_submit(batch, Ticket(ticket)).unwrap();
                        submitted_at.insert(ticket, Instant::now());
                        ticket += 1;
                        outstanding += 1;
                    }
                    match next_completion(&link, &woken) {
                        Completion::Committed(t) => {
                            outstanding -= t.len();
                            for t in &t {
                                latency += submitted_at.remove(&t.0).unwrap().elapsed();
                            }
                            acked += t.len() as u64;
                        }
                        Completion::Failed(_, e) => panic!("{e}"),
                    }
                }
                (acked * per_batch, acked, latency)
            })
        })
        .collect();
    let mut messages = 0;
    let mut batches = 0;
    let mut latency = Duration::ZERO;
    for t in threads {
        let (m, b, l) = t.join().unwrap();
        messages += m;
        batches += b;
        latency += l;
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = handle.stats();
    let commits = stats.commits - producers; // minus the session records
    println!(
        "group commit, {producers} producers x {per_batch} msg/batch, window {window}: \
         {:.0} commits/s, \
         {:.0} msg/s, {:.1} msg/commit, {:.1} batches/commit, mean ack latency {:?}",
        commits as f64 / secs,
        messages as f64 / secs,
        messages as f64 / commits as f64,
        batches as f64 / commits as f64,
        latency / u32::try_from(batches.max(1)).unwrap(),
    );
}

#[test]
#[ignore = "benchmark: cargo test --release -p shoal-server persist_bench -- --ignored --nocapture"]
fn persist_bench_group_commit_qos1_64_bytes() {
    for (per_batch, window) in [(1, 4), (16, 4), (16, 64)] {
        group_commit_figures(4, per_batch, window, Duration::from_secs(3));
    }
}

#[test]
#[ignore = "benchmark: cargo test --release -p shoal-server persist_bench -- --ignored --nocapture"]
fn persist_bench_recovery_100k_queued() {
    let dir = bench_dir();
    let (sessions, per_session) = (100u64, 1000u64);
    {
        let (handle, _) = start(dir.path());
        let (link, woken) = open_link(&handle);
        for s in 0..sessions {
            let client = format!("client-{s}");
            let mut batch = vec![put_session(&client, session(u32::MAX, Some(now_unix())))];
            for seq in 1..=per_session {
                let id = link.next_message_id();
                let mut m = message(id.0, "bench/recovery", b"");
                m.payload = Bytes::from_static(PAYLOAD_64);
                batch.push(Intent::PutMessage(m));
                batch.push(enqueue(&client, id.0, seq));
            }
            commit(&link, &woken, batch, s);
        }
    }
    let size = std::fs::metadata(dir.path().join(DB_FILE_NAME)).unwrap().len();
    let (_handle, recovered) = start(dir.path());
    assert_eq!(recovered.report.queued as u64, sessions * per_session);
    println!(
        "recovery: {} queued messages in {} sessions, file {} MiB, recovered in {:?}",
        recovered.report.queued,
        recovered.report.sessions,
        size / (1024 * 1024),
        recovered.report.duration
    );
}
