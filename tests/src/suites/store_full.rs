//! A full disk under the durable store (issue 7): the broker stops acknowledging QoS 1/2
//! work that needs the disk (v5: 0x97 Quota exceeded; 3.x: no acknowledgement), keeps
//! serving QoS 0 and clean sessions, takes disk work again once space returns, and
//! everything it did acknowledge survives `kill -9`.
//!
//! The data directory sits on a small tmpfs filled to the last byte by a filler file,
//! so the store meets a real `ENOSPC`. Mounting needs root; elsewhere the test says so
//! and does nothing.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use shoal_core::ProtocolVersion::{V3_1_1, V5};

use crate::harness::BrokerProcess;
use crate::raw::wire::{self, ConnectOptions, Incoming};
use crate::raw::{RawClient, RecvError, DEADLINE};

/// A tmpfs mounted for one test, unmounted on drop (after the broker using it stopped:
/// declare it first).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` when not running as root (mounting is not allowed).
    fn mount(size: &str) -> Option<Self> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "shoal-test"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed (running as root)");
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the tmpfs: {e}"),
        }
    }
    // Whatever sat in the page cache is out too.
    let _ = f.sync_all();
}

fn start(data: &Path) -> BrokerProcess {
    BrokerProcess::start(&["--workers", "1", "--data-dir", data.to_str().unwrap()])
}

/// A v5 publisher's answer to one QoS 1 PUBLISH.
#[derive(Debug, PartialEq)]
enum Answer {
    Acked,
    Refused(u8),
    /// The broker closed the connection (a commit that was already on its way failed).
    Closed(Option<u8>),
}

fn publish_v5(client: &mut RawClient, topic: &str, payload: &[u8]) -> Answer {
    let id = client.next_packet_id();
    if client.try_send(&wire::publish(V5, topic, payload, 1, false, false, id)).is_err() {
        return Answer::Closed(None);
    }
    match client.recv(DEADLINE) {
        Ok(Incoming::PubAck(i, 0)) if i == id => Answer::Acked,
        Ok(Incoming::PubAck(i, code)) if i == id => Answer::Refused(code),
        Ok(Incoming::Disconnect(reason)) => {
            let _ = client.wait_closed(DEADLINE);
            Answer::Closed(Some(reason))
        }
        Ok(other) => panic!("publisher got {other:?}"),
        Err(RecvError::Closed) => Answer::Closed(None),
        Err(e) => panic!("publisher waiting for PUBACK {id}: {e:?}"),
    }
}

#[test]
fn a_full_disk_refuses_disk_work_serves_the_rest_and_recovers() {
    let Some(fs) = Tmpfs::mount("24m") else {
        eprintln!("store_full: not root, cannot mount a tmpfs; skipped");
        return;
    };
    let data = fs.path().join("data");
    let filler: PathBuf = fs.path().join("filler");
    let mut broker = start(&data);
    let addr = broker.addr();

    // An offline persistent session that takes fleet/#, and an online clean one on live/#.
    let (mut keeper, _) = RawClient::connect_with(addr, &ConnectOptions::persistent(V5, "keeper"));
    keeper.subscribe_one("fleet/#", 1);
    keeper.disconnect();
    let mut watcher = RawClient::connect(addr, V3_1_1, "watcher");
    watcher.subscribe_one("live/#", 1);

    // Acknowledged before the disk filled up.
    let mut acked = BTreeSet::new();
    let mut p5 = RawClient::connect(addr, V5, "p5");
    for i in 0..3 {
        let topic = format!("fleet/before-{i}");
        assert_eq!(publish_v5(&mut p5, &topic, b"before"), Answer::Acked);
        acked.insert(topic);
    }

    fill(&filler);

    // Publish large messages for the keeper until the broker says no. The first failed
    // commit may close the publisher (its PUBACK was already waiting for that commit).
    let body = vec![b'x'; 60 * 1024];
    let mut closes = 0;
    let mut n = 0u32;
    loop {
        n += 1;
        assert!(n < 2000, "never refused: is the disk full? ({} acked)", acked.len());
        let topic = format!("fleet/{n}");
        match publish_v5(&mut p5, &topic, &body) {
            Answer::Acked => {
                acked.insert(topic);
            }
            Answer::Refused(code) => {
                assert_eq!(code, 0x97, "refused with 0x97 Quota exceeded");
                break;
            }
            Answer::Closed(reason) => {
                assert!(matches!(reason, None | Some(0x97)), "closed with {reason:?}");
                closes += 1;
                assert!(closes < 10, "closed again and again instead of refusing");
                p5 = RawClient::connect(addr, V5, "p5");
            }
        }
    }

    // While the store cannot write: QoS 2 for the keeper is refused too ...
    let id = p5.next_packet_id();
    p5.send(&wire::publish(V5, "fleet/q2", b"q2", 2, false, false, id));
    let rec = p5.wait_for("PUBREC", |p| matches!(p, Incoming::PubRec(i, _) if *i == id));
    assert_eq!(rec, Incoming::PubRec(id, 0x97));
    // ... a 3.x publisher gets no PUBACK (checked after recovery) ...
    let mut p3 = RawClient::connect(addr, V3_1_1, "p3");
    let unanswered = p3.next_packet_id();
    p3.send(&wire::publish(V3_1_1, "fleet/v3-refused", b"v3", 1, false, false, unanswered));
    assert!(
        !p3.ping_then_unread().iter().any(|p| matches!(p, Incoming::PubAck(..))),
        "3.x PUBACK for a message the store could not take"
    );
    // ... a retained QoS 1 message is refused (it would be stored) ...
    let id = p5.next_packet_id();
    p5.send(&wire::publish(V5, "live/retained", b"r", 1, true, false, id));
    let ack = p5.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(i, _) if *i == id));
    assert_eq!(ack, Incoming::PubAck(id, 0x97));
    // ... and QoS 0, and QoS 1 that reaches only clean sessions, flow as ever.
    p5.send(&wire::publish(V5, "live/q0", b"q0", 0, false, false, 0));
    assert_eq!(publish_v5(&mut p5, "live/q1", b"q1"), Answer::Acked);
    for want in ["q0", "q1"] {
        let p = watcher.expect_publish_acked();
        assert_eq!(p.payload, want.as_bytes(), "clean subscriber, in order");
    }

    // Space returns: the store takes disk work again without a restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut k = 0;
    loop {
        k += 1;
        let topic = format!("fleet/after-{k}");
        match publish_v5(&mut p5, &topic, b"after") {
            Answer::Acked => {
                acked.insert(topic);
                break;
            }
            Answer::Refused(0x97) => {}
            other => panic!("after space returned: {other:?}"),
        }
        assert!(Instant::now() < deadline, "still refusing {DEADLINE:?} after space returned");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The 3.x publisher's next message is acknowledged, and the refused one never is
    // (an ack for it would have come first: acks go out in order).
    let id = p3.next_packet_id();
    p3.send(&wire::publish(V3_1_1, "fleet/v3-after", b"v3", 1, false, false, id));
    let got = p3.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(i, _) if *i == id));
    assert_eq!(got, Incoming::PubAck(id, 0));
    assert!(
        !p3.ping_then_unread().contains(&Incoming::PubAck(unanswered, 0)),
        "the refused 3.x message was acknowledged later"
    );
    acked.insert("fleet/v3-after".to_owned());

    // Everything acknowledged survives a crash; nothing refused was kept.
    broker.signal("KILL");
    assert!(broker.wait_exit(DEADLINE).is_some(), "kill -9 did not end the broker");
    let broker = start(&data);
    let addr = broker.addr();
    let mut end = RawClient::connect(addr, V3_1_1, "end");
    end.publish("fleet/end", b"end", 1, false);
    let (mut keeper, present) =
        RawClient::connect_with(addr, &ConnectOptions::persistent(V5, "keeper"));
    assert!(present, "the persistent session survived");
    let mut received = BTreeSet::new();
    loop {
        let p = keeper.expect_publish_acked();
        if p.topic == "fleet/end" {
            break;
        }
        received.insert(p.topic);
    }
    let missing: Vec<_> = acked.difference(&received).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    for refused in ["fleet/q2", "fleet/v3-refused"] {
        assert!(!received.contains(refused), "{refused} was refused but delivered");
    }
    drop(keeper);
    drop(broker);
}
