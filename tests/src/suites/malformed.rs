//! Malformed and forbidden packets, each sent after a valid CONNECT on its own
//! connection: that connection must be closed (v5: after a DISCONNECT with a fitting
//! reason code), while a healthy publisher/subscriber pair keeps working throughout.
//!
//! Cases are byte strings with a comment per field. Where the spec leaves a choice
//! between reason codes (Malformed Packet vs Protocol Error), the table allows both.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use shoal_core::ProtocolVersion::{self, V3_1_1, V5};

use crate::harness::TestBroker;
use crate::raw::wire::{self, put_str, ConnectOptions};
use crate::raw::{Incoming, RawClient, DEADLINE};

const MALFORMED: u8 = 0x81;
const PROTOCOL_ERROR: u8 = 0x82;

struct Case {
    name: &'static str,
    version: ProtocolVersion,
    bytes: Vec<u8>,
    /// v5 reason codes the DISCONNECT may carry.
    reasons: &'static [u8],
}

fn case(name: &'static str, bytes: &[u8]) -> Case {
    Case { name, version: V3_1_1, bytes: bytes.to_vec(), reasons: &[] }
}

fn v5(name: &'static str, bytes: &[u8], reasons: &'static [u8]) -> Case {
    Case { name, version: V5, bytes: bytes.to_vec(), reasons }
}

fn v311_cases() -> Vec<Case> {
    vec![
        // [MQTT-3.3.1-4] QoS 3: PUBLISH|QoS 3, len, topic "t", packet id 1.
        case("publish_qos3", &[0x36, 5, 0, 1, b't', 0, 1]),
        // [MQTT-3.8.1-1] SUBSCRIBE flags must be 0b0010.
        case("subscribe_reserved_flags", &[0x80, 6, 0, 1, 0, 1, b't', 0]),
        // [MQTT-3.6.1-1] PUBREL flags must be 0b0010.
        case("pubrel_reserved_flags", &[0x60, 2, 0, 1]),
        // [MQTT-2.2.2-2] PINGREQ flags must be 0.
        case("pingreq_reserved_flags", &[0xC1, 0]),
        // 2.2.3: remaining length of at most four bytes; five here.
        case("remaining_length_five_bytes", &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
        // [MQTT-1.5.3-1] topic bytes C3 28 are not UTF-8.
        case("topic_invalid_utf8", &[0x30, 4, 0, 2, 0xC3, 0x28]),
        // [MQTT-1.5.3-1] ED A0 80 encodes the surrogate U+D800.
        case("topic_utf16_surrogate", &[0x30, 5, 0, 3, 0xED, 0xA0, 0x80]),
        // [MQTT-1.5.3-2] U+0000 in a topic.
        case("topic_contains_nul", &[0x30, 5, 0, 3, b'a', 0, b'b']),
        // [MQTT-3.3.2-2] wildcards in a topic name.
        case("topic_name_with_plus", &[0x30, 5, 0, 3, b'a', b'/', b'+']),
        case("topic_name_with_hash", &[0x30, 3, 0, 1, b'#']),
        // [MQTT-4.7.3-1] topic names are at least one character.
        case("topic_name_empty", &[0x30, 2, 0, 0]),
        // [MQTT-2.3.1-1] QoS 1 PUBLISH with packet id 0.
        case("publish_packet_id_zero", &[0x32, 5, 0, 1, b't', 0, 0]),
        // QoS 1 PUBLISH whose body ends before the packet id.
        case("publish_missing_packet_id", &[0x32, 3, 0, 1, b't']),
        // Topic length 10, one byte of body left.
        case("topic_length_beyond_body", &[0x30, 3, 0, 10, b't']),
        // [MQTT-3.8.3-3] SUBSCRIBE without a topic filter.
        case("subscribe_empty", &[0x82, 2, 0, 1]),
        // [MQTT-2.3.1-1] SUBSCRIBE with packet id 0.
        case("subscribe_packet_id_zero", &[0x82, 6, 0, 0, 0, 1, b't', 0]),
        // [MQTT-3.8.3-4] requested QoS 3.
        case("subscribe_qos3", &[0x82, 6, 0, 1, 0, 1, b't', 3]),
        // [MQTT-3-8.3-4] reserved upper bits of the requested-QoS byte.
        case("subscribe_reserved_option_bits", &[0x82, 6, 0, 1, 0, 1, b't', 0x04]),
        // [MQTT-3.10.3-2] UNSUBSCRIBE without a topic filter.
        case("unsubscribe_empty", &[0xA2, 2, 0, 1]),
        // PUBREL whose body is too short for a packet id.
        case("pubrel_without_packet_id", &[0x62, 0]),
        // CONNACK is server-to-client only.
        case("connack_from_client", &[0x20, 2, 0, 0]),
        // Packet type 0 is reserved; 15 (AUTH) does not exist in 3.1.1.
        case("packet_type_zero", &[0x00, 0]),
        case("auth_in_v311", &[0xF0, 0]),
    ]
}

fn v5_cases() -> Vec<Case> {
    const BAD: &[u8] = &[MALFORMED, PROTOCOL_ERROR];
    vec![
        // PUBLISH|QoS 3, topic "t", packet id 1, no properties.
        v5("v5_publish_qos3", &[0x36, 6, 0, 1, b't', 0, 1, 0], &[MALFORMED]),
        v5("v5_remaining_length_five_bytes", &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F], &[MALFORMED]),
        // Payload Format Indicator (0x01) twice: Protocol Error (3.3.2.3.2).
        v5("v5_duplicate_property", &[0x30, 8, 0, 1, b't', 4, 0x01, 0, 0x01, 0], BAD),
        // Topic Alias 0 is not permitted (3.3.2.3.4).
        v5("v5_topic_alias_zero", &[0x30, 7, 0, 1, b't', 3, 0x23, 0, 0], &[0x94, PROTOCOL_ERROR]),
        // Property identifier 0x7F does not exist.
        v5("v5_unknown_property", &[0x30, 6, 0, 1, b't', 2, 0x7F, 0], BAD),
        // Property length 10 with one byte left.
        v5("v5_property_length_beyond_body", &[0x30, 5, 0, 1, b't', 10, 0], &[MALFORMED]),
        // [MQTT-3.3.4-6] a client's PUBLISH must not carry a Subscription Identifier.
        v5("v5_publish_with_subscription_id", &[0x30, 6, 0, 1, b't', 2, 0x0B, 1], BAD),
        // Empty topic without a Topic Alias (3.3.2.1).
        v5("v5_empty_topic_without_alias", &[0x30, 3, 0, 0, 0], &[PROTOCOL_ERROR, MALFORMED, 0x90]),
        // [MQTT-3.3.2-2] wildcard in the topic name.
        v5(
            "v5_topic_name_with_plus",
            &[0x30, 6, 0, 3, b'a', b'/', b'+', 0],
            &[MALFORMED, PROTOCOL_ERROR, 0x90],
        ),
        // [MQTT-1.5.4-1] ill-formed UTF-8 is a Malformed Packet.
        v5("v5_topic_invalid_utf8", &[0x30, 5, 0, 2, 0xC3, 0x28, 0], &[MALFORMED, 0x90]),
        // [MQTT-1.5.4-2] U+0000.
        v5("v5_topic_contains_nul", &[0x30, 4, 0, 1, 0, 0], &[MALFORMED, 0x90]),
        // QoS 1 PUBLISH with packet id 0.
        v5("v5_publish_packet_id_zero", &[0x32, 6, 0, 1, b't', 0, 0, 0], BAD),
        // SUBSCRIBE with flags 0: reserved bits [MQTT-3.8.1-1].
        v5("v5_subscribe_reserved_flags", &[0x80, 7, 0, 1, 0, 0, 1, b't', 0], &[MALFORMED]),
        // Retain Handling 3 is a Protocol Error (3.8.3.1).
        v5("v5_subscribe_retain_handling_3", &[0x82, 7, 0, 1, 0, 0, 1, b't', 0x30], BAD),
        // [MQTT-3.8.3-5] reserved bits 6–7 of the subscription options.
        v5(
            "v5_subscribe_reserved_option_bits",
            &[0x82, 7, 0, 1, 0, 0, 1, b't', 0xC0],
            &[MALFORMED],
        ),
        // [MQTT-3.8.3-2] SUBSCRIBE without a topic filter.
        v5("v5_subscribe_empty", &[0x82, 3, 0, 1, 0], BAD),
        // Subscription Identifier (0x0B) twice.
        v5(
            "v5_subscribe_duplicate_subscription_id",
            &[0x82, 11, 0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b't', 0],
            &[MALFORMED, PROTOCOL_ERROR, 0xA1],
        ),
        // Subscription Identifier 0 is a Protocol Error (3.8.2.1.2).
        v5(
            "v5_subscription_id_zero",
            &[0x82, 9, 0, 1, 2, 0x0B, 0, 0, 1, b't', 0],
            &[MALFORMED, PROTOCOL_ERROR, 0xA1],
        ),
        // PUBREL with flags 0.
        v5("v5_pubrel_reserved_flags", &[0x60, 2, 0, 1], &[MALFORMED]),
        // AUTH without an Authentication Method in CONNECT [MQTT-4.12.0-?].
        v5("v5_auth_without_method", &[0xF0, 0], &[PROTOCOL_ERROR, MALFORMED]),
        // CONNACK from a client.
        v5("v5_connack_from_client", &[0x20, 3, 0, 0, 0], BAD),
        // Variable byte integer property of five bytes (Subscription Identifier).
        v5(
            "v5_varint_property_five_bytes",
            &[0x82, 13, 0, 1, 6, 0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0, 1, b't', 0],
            &[MALFORMED],
        ),
    ]
}

/// A publisher and a subscriber that round-trip QoS 1 messages until told to stop.
struct HealthyPair {
    stop: Arc<AtomicBool>,
    round_trips: Arc<AtomicUsize>,
    thread: thread::JoinHandle<()>,
}

impl HealthyPair {
    fn start(broker: &TestBroker) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let round_trips = Arc::new(AtomicUsize::new(0));
        let addr = broker.addr();
        let thread = thread::spawn({
            let (stop, round_trips) = (Arc::clone(&stop), Arc::clone(&round_trips));
            move || {
                let mut sub = RawClient::connect(addr, V5, "healthy-sub");
                sub.subscribe_one("healthy/t", 1);
                let mut publisher = RawClient::connect(addr, V3_1_1, "healthy-pub");
                let mut n = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    publisher.publish("healthy/t", &n.to_be_bytes(), 1, false);
                    let got = sub.expect_publish_acked();
                    assert_eq!(got.payload, n.to_be_bytes(), "healthy pair lost a message");
                    round_trips.fetch_add(1, Ordering::SeqCst);
                    n += 1;
                }
            }
        });
        Self { stop, round_trips, thread }
    }

    fn count(&self) -> usize {
        self.round_trips.load(Ordering::SeqCst)
    }

    /// Stops the pair and asserts it never failed.
    fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        assert!(self.thread.join().is_ok(), "the healthy client pair failed");
    }
}

/// Runs every case; returns a description of each one the broker got wrong.
fn run_cases(broker: &TestBroker, cases: Vec<Case>, healthy: &HealthyPair) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let before = healthy.count();
        let mut client = RawClient::connect(broker.addr(), case.version, case.name);
        client.ping();
        // The broker may close while we are still writing; what matters is the close.
        let _ = client.try_send(&case.bytes);
        let seen = match client.wait_closed(DEADLINE) {
            Ok(seen) => seen,
            Err(e) => {
                failures.push(format!("{}: {e}", case.name));
                continue;
            }
        };
        if case.version.is_v5() {
            match seen.as_slice() {
                [Incoming::Disconnect(r)] if case.reasons.contains(r) => {}
                other => failures.push(format!(
                    "{}: expected DISCONNECT with one of {:02X?} then close, got {other:?}",
                    case.name, case.reasons
                )),
            }
        } else if !seen.is_empty() {
            failures.push(format!("{}: answered {seen:?} before closing", case.name));
        }
        crate::harness::wait_until(DEADLINE, "healthy pair to make progress", || {
            healthy.count() > before
        });
    }
    failures
}

#[test]
fn malformed_packets_close_only_the_offending_connection() {
    let broker = TestBroker::start();
    let healthy = HealthyPair::start(&broker);
    let mut failures = run_cases(&broker, v311_cases(), &healthy);
    failures.extend(run_cases(&broker, v5_cases(), &healthy));
    healthy.finish();
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// CONNECT bytes with the given flags byte and payload after the client id.
fn connect_with_flags(flags: u8, after_client_id: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, b"MQTT");
    body.extend_from_slice(&[4, flags, 0, 60]);
    put_str(&mut body, b"bad-connect");
    body.extend_from_slice(after_client_id);
    wire::frame(0x10, &body)
}

#[test]
fn malformed_connect_is_closed_without_acceptance() {
    let broker = TestBroker::start();
    let mut will = Vec::new();
    put_str(&mut will, b"w");
    put_str(&mut will, b"x");
    let mut user = Vec::new();
    put_str(&mut user, b"user");
    let cases: [(&str, Vec<u8>); 6] = [
        // [MQTT-3.1.2-3] reserved flag bit 0 set.
        ("reserved_flag", connect_with_flags(0x03, &[])),
        // [MQTT-3.1.2-14] will QoS 3.
        ("will_qos3", connect_with_flags(0x02 | 0x04 | 0x18, &will)),
        // [MQTT-3.1.2-13] will QoS without the will flag.
        ("will_qos_without_will", connect_with_flags(0x02 | 0x08, &[])),
        // [MQTT-3.1.2-15] will retain without the will flag.
        ("will_retain_without_will", connect_with_flags(0x02 | 0x20, &[])),
        // [MQTT-3.1.2-22] password flag without user name flag (3.1.1).
        ("password_without_user", connect_with_flags(0x02 | 0x40, &user)),
        // Will flag set but the payload ends after the client id.
        ("will_missing_payload", connect_with_flags(0x02 | 0x04, &[])),
    ];
    for (name, bytes) in cases {
        let mut client = RawClient::tcp(broker.addr(), V3_1_1);
        let _ = client.try_send(&bytes);
        for packet in client.expect_closed(DEADLINE) {
            assert!(
                matches!(packet, Incoming::ConnAck { code, .. } if code != 0),
                "{name}: accepted or answered with {packet:?}"
            );
        }
    }
    // The broker still accepts well-formed clients.
    RawClient::connect_with(broker.addr(), &ConnectOptions::new(V5, "fine")).0.ping();
}

#[test]
fn invalid_topic_filter_is_refused() {
    // [MQTT-4.7.1-2] `#` must be last; [MQTT-4.7.1-3] `+` must occupy a whole level.
    // The server may answer SUBACK failure (0x80 / v5 0x8F) or close the connection.
    let broker = TestBroker::start();
    for version in [V3_1_1, V5] {
        for filter in ["a/#/b", "a/b#", "a+/b", "", "#/"] {
            let mut client = RawClient::connect(broker.addr(), version, "bad-filter");
            let id = client.next_packet_id();
            client.send(&wire::subscribe(version, id, &[(filter, 0)]));
            match client.recv(DEADLINE) {
                Ok(Incoming::SubAck(_, codes)) => assert!(
                    codes.iter().all(|c| *c >= 0x80),
                    "{version}: filter {filter:?} granted {codes:?}"
                ),
                Ok(Incoming::Disconnect(r)) => assert!(
                    version.is_v5() && [MALFORMED, PROTOCOL_ERROR, 0x8F].contains(&r),
                    "{version}: filter {filter:?} DISCONNECT {r:#04x}"
                ),
                Ok(other) => panic!("{version}: filter {filter:?}: {other:?}"),
                Err(_) => {} // closed: allowed
            }
        }
    }
}
