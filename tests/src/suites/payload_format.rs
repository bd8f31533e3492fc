//! MQTT 5 Payload Format Indicator (3.3.2.3.2): a payload marked as UTF-8 that is not
//! is refused with 0x99 and not delivered; a valid one passes with the indicator.

use shoal_core::ProtocolVersion::V5;

use crate::harness::TestBroker;
use crate::raw::wire::{self, find_property, property};
use crate::raw::{Incoming, RawClient, DEADLINE};

#[test]
fn invalid_utf8_marked_payload_is_refused_and_not_delivered() {
    let broker = TestBroker::start();
    let mut sub = RawClient::connect(broker.addr(), V5, "pf-sub");
    sub.subscribe_one("pf/t", 1);
    let mut publisher = RawClient::connect(broker.addr(), V5, "pf-pub");
    let utf8 = property(0x01, &[1]);
    publisher.send(&wire::publish_v5_with_properties("pf/t", &[0xff, 0x00], 1, false, 7, &utf8));
    let ack = publisher.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(7, _)));
    assert_eq!(ack, Incoming::PubAck(7, 0x99), "PUBACK Payload format invalid");
    // A valid one behind it is delivered with the indicator, and nothing before it.
    publisher.send(&wire::publish_v5_with_properties(
        "pf/t",
        "ok ✓".as_bytes(),
        1,
        false,
        8,
        &utf8,
    ));
    let got = sub.expect_publish_acked();
    assert_eq!(got.payload, "ok ✓".as_bytes());
    assert_eq!(find_property(&got.properties, 0x01).map(|p| p.value.clone()), Some(vec![1]));
    // QoS 0 has no ack: the connection is closed with DISCONNECT 0x99.
    publisher.send(&wire::publish_v5_with_properties("pf/t", &[0xc3], 0, false, 0, &utf8));
    assert_eq!(publisher.expect_closed_with_reason(DEADLINE), Some(0x99));
}
