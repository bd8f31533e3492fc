//! Property tests for the wire codec: every packet type round-trips in every version,
//! frames fed one byte at a time decode exactly once, and arbitrary or mutated bytes
//! never panic the decoder.
//!
//! Generators only build values valid for their version: 3.x packets have default
//! properties and reason codes their return codes can express, and each MQTT 5 reason
//! code comes from the list the spec allows in that packet.

// Generators run only under test: a failed expectation is a failed test.
#![allow(clippy::expect_used)]

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use shoal_core::codec::*;
use shoal_core::limits::PROTOCOL_MAX_PACKET_BYTES;
use shoal_core::{PacketId, ProtocolVersion, QoS, ReasonCode, TopicName};

const VERSIONS: [ProtocolVersion; 3] =
    [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5];

// --- primitives -------------------------------------------------------------------------

fn string() -> impl Strategy<Value = String> {
    // Any printable characters, including multi-byte ones; never U+0000.
    "\\PC{0,8}"
}

fn topic() -> impl Strategy<Value = TopicName> {
    "[a-z0-9/ $ü€]{1,12}"
        .prop_map(|s| TopicName::try_from_str(&s).expect("generated topic is valid"))
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|v| PacketId::new(v).expect("non-zero"))
}

fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn user_properties() -> impl Strategy<Value = Vec<UserProperty>> {
    vec((string(), string()), 0..3)
}

fn reason(codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    select(codes).prop_map(|v| ReasonCode::from_value(v).expect("listed code exists"))
}

fn varint_value() -> impl Strategy<Value = u32> {
    1..=268_435_455u32
}

/// `strategy` in MQTT 5, the default value before.
fn v5_only<T: Default + std::fmt::Debug + Clone + 'static>(
    version: ProtocolVersion,
    strategy: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    if version.is_v5() {
        strategy.boxed()
    } else {
        Just(T::default()).boxed()
    }
}

// Reason codes the MQTT 5 spec allows per packet.
const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
const V3_CONNACK_CODES: &[u8] = &[0x00, 0x84, 0x85, 0x88, 0x86, 0x87];
const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: &[u8] = &[0x00, 0x92];
const SUBACK_CODES: &[u8] =
    &[0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2];
const V3_SUBACK_CODES: &[u8] = &[0x00, 0x01, 0x02, 0x80];
const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

// --- properties -------------------------------------------------------------------------

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        option::of(any::<u32>()),
        option::of(1..=u16::MAX),
        option::of(1..=u32::MAX),
        option::of(any::<u16>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        user_properties(),
        option::of((string(), option::of(binary()))),
    )
        .prop_map(|(sei, rm, mps, tam, rri, rpi, user, auth)| ConnectProperties {
            session_expiry_interval: sei,
            receive_maximum: rm,
            maximum_packet_size: mps,
            topic_alias_maximum: tam,
            request_response_information: rri,
            request_problem_information: rpi,
            user_properties: user,
            // Authentication Data only comes with a method.
            authentication_method: auth.as_ref().map(|(m, _)| m.clone()),
            authentication_data: auth.and_then(|(_, d)| d),
        })
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        option::of(any::<u32>()),
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(string()),
        option::of(topic()),
        option::of(binary()),
        user_properties(),
    )
        .prop_map(|(wdi, pfi, mei, ct, rt, cd, user)| WillProperties {
            will_delay_interval: wdi,
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            content_type: ct,
            response_topic: rt,
            correlation_data: cd,
            user_properties: user,
        })
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    (
        (
            option::of(any::<u32>()),
            option::of(1..=u16::MAX),
            option::of(select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])),
            option::of(any::<bool>()),
            option::of(1..=u32::MAX),
            option::of(string()),
            option::of(any::<u16>()),
            option::of(string()),
        ),
        (
            user_properties(),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            option::of(any::<u16>()),
            option::of(string()),
            option::of(string()),
            option::of((string(), option::of(binary()))),
        ),
    )
        .prop_map(
            |((sei, rm, mq, ra, mps, aci, tam, rs), (user, wsa, sia, ssa, ska, ri, sr, auth))| {
                ConnAckProperties {
                    session_expiry_interval: sei,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    user_properties: user,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: auth.as_ref().map(|(m, _)| m.clone()),
                    authentication_data: auth.and_then(|(_, d)| d),
                }
            },
        )
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        option::of(any::<bool>()),
        option::of(any::<u32>()),
        option::of(1..=u16::MAX),
        option::of(topic()),
        option::of(binary()),
        user_properties(),
        vec(varint_value(), 0..3),
        option::of(string()),
    )
        .prop_map(|(pfi, mei, ta, rt, cd, user, sids, ct)| PublishProperties {
            payload_format_indicator: pfi,
            message_expiry_interval: mei,
            topic_alias: ta,
            response_topic: rt,
            correlation_data: cd,
            user_properties: user,
            subscription_identifiers: sids,
            content_type: ct,
        })
}

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (option::of(string()), user_properties())
        .prop_map(|(rs, user)| AckProperties { reason_string: rs, user_properties: user })
}

// --- packets ----------------------------------------------------------------------------

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (topic(), binary(), qos(), any::<bool>(), v5_only(version, will_properties()))
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        string(),
        option::of(will),
        option::of(string()),
        option::of(binary()),
        v5_only(version, connect_properties()),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive,
                client_id,
                will,
                mut username,
                password,
                properties,
            )| {
                // [MQTT-3.1.2-22] Before 5, a password needs a user name.
                if !version.is_v5() && password.is_some() && username.is_none() {
                    username = Some("u".into());
                }
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if version.is_v5() { CONNACK_CODES } else { V3_CONNACK_CODES };
    (any::<bool>(), reason(codes), v5_only(version, connack_properties())).prop_map(
        move |(session_present, reason_code, properties)| {
            // 3.1 has no Session Present flag.
            let session_present = session_present && version != ProtocolVersion::V3_1;
            Packet::ConnAck(ConnAck { session_present, reason_code, properties })
        },
    )
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic(),
        any::<bool>(),
        packet_id(),
        v5_only(version, publish_properties()),
        vec(any::<u8>(), 0..64),
    )
        .prop_map(move |(qos, dup, retain, topic, alias_only, id, properties, payload)| {
            let at_least_once = qos != QoS::AtMostOnce;
            let topic = if alias_only && properties.topic_alias.is_some() {
                TopicName::empty()
            } else {
                topic
            };
            Packet::Publish(Publish {
                dup: dup && at_least_once,
                qos,
                retain,
                topic,
                packet_id: at_least_once.then_some(id),
                properties,
                payload: Bytes::from(payload),
            })
        })
}

fn ack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (0..4u8, packet_id(), any::<prop::sample::Index>(), v5_only(version, ack_properties()))
        .prop_map(move |(kind, packet_id, pick, properties)| {
            let codes = if kind < 2 { PUBACK_CODES } else { PUBREL_CODES };
            let mut ack = PubAckLike::new(packet_id);
            if version.is_v5() {
                ack.reason_code = ReasonCode::from_value(*pick.get(codes)).expect("listed");
                ack.properties = properties;
            }
            match kind {
                0 => Packet::PubAck(ack),
                1 => Packet::PubRec(ack),
                2 => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }
        })
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let retain_handling = select(vec![
        RetainHandling::OnSubscribe,
        RetainHandling::OnNewSubscription,
        RetainHandling::Never,
    ]);
    let options = (qos(), any::<bool>(), any::<bool>(), retain_handling).prop_map(
        move |(qos, no_local, retain_as_published, retain_handling)| {
            if version.is_v5() {
                SubscriptionOptions { qos, no_local, retain_as_published, retain_handling }
            } else {
                SubscriptionOptions { qos, ..Default::default() }
            }
        },
    );
    let properties = (option::of(varint_value()), user_properties()).prop_map(|(id, user)| {
        SubscribeProperties { subscription_identifier: id, user_properties: user }
    });
    (
        packet_id(),
        vec(
            (string(), options).prop_map(|(filter, options)| SubscribeFilter { filter, options }),
            1..4,
        ),
        v5_only(version, properties),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe { packet_id, filters, properties })
        })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if version.is_v5() { SUBACK_CODES } else { V3_SUBACK_CODES };
    (packet_id(), vec(reason(codes), 1..5), v5_only(version, ack_properties())).prop_map(
        |(packet_id, reason_codes, properties)| {
            Packet::SubAck(SubAck { packet_id, reason_codes, properties })
        },
    )
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let properties =
        user_properties().prop_map(|user| UnsubscribeProperties { user_properties: user });
    (packet_id(), vec(string(), 1..4), v5_only(version, properties)).prop_map(
        |(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe { packet_id, filters, properties })
        },
    )
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = v5_only(version, vec(reason(UNSUBACK_CODES), 1..4));
    (packet_id(), codes, v5_only(version, ack_properties())).prop_map(
        |(packet_id, reason_codes, properties)| {
            Packet::UnsubAck(UnsubAck { packet_id, reason_codes, properties })
        },
    )
}

fn disconnect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let properties =
        (option::of(any::<u32>()), option::of(string()), user_properties(), option::of(string()))
            .prop_map(|(sei, rs, user, sr)| DisconnectProperties {
                session_expiry_interval: sei,
                reason_string: rs,
                user_properties: user,
                server_reference: sr,
            });
    (v5_only(version, reason(DISCONNECT_CODES).prop_map(Some)), v5_only(version, properties))
        .prop_map(|(reason_code, properties)| {
            Packet::Disconnect(Disconnect {
                reason_code: reason_code.unwrap_or(ReasonCode::Success),
                properties,
            })
        })
}

fn auth() -> impl Strategy<Value = Packet> {
    let properties =
        (option::of((string(), option::of(binary()))), option::of(string()), user_properties())
            .prop_map(|(auth, rs, user)| AuthProperties {
                authentication_method: auth.as_ref().map(|(m, _)| m.clone()),
                authentication_data: auth.and_then(|(_, d)| d),
                reason_string: rs,
                user_properties: user,
            });
    (reason(AUTH_CODES), properties)
        .prop_map(|(reason_code, properties)| Packet::Auth(Auth { reason_code, properties }))
}

/// Any packet valid in `version`.
fn packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut options = vec![
        connect(version).boxed(),
        connack(version).boxed(),
        publish(version).boxed(),
        ack(version).boxed(),
        subscribe(version).boxed(),
        suback(version).boxed(),
        unsubscribe(version).boxed(),
        unsuback(version).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(version).boxed(),
    ];
    if version.is_v5() {
        options.push(auth().boxed());
    }
    proptest::strategy::Union::new(options).boxed()
}

fn version_and_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    select(VERSIONS.to_vec()).prop_flat_map(|v| (Just(v), packet(v)))
}

fn encoded(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out).expect("generated packets are encodable");
    out
}

// --- properties -------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_packet_round_trips_in_its_version((version, packet) in version_and_packet()) {
        let mut buf = encoded(&packet, version);
        let len = buf.len();
        let decoded = decode(&mut buf, version, PROTOCOL_MAX_PACKET_BYTES);
        prop_assert_eq!(decoded, Ok(Some(packet.clone())));
        prop_assert!(buf.is_empty());
        if let Packet::Publish(p) = &packet {
            prop_assert_eq!(p.encoded_len(version), len);
        }
    }

    #[test]
    fn byte_at_a_time_needs_more_until_the_last_byte((version, packet) in version_and_packet()) {
        let bytes = encoded(&packet, version);
        let mut buf = BytesMut::new();
        for (i, &b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[b]);
            let got = decode(&mut buf, version, PROTOCOL_MAX_PACKET_BYTES);
            if i + 1 < bytes.len() {
                prop_assert_eq!(got, Ok(None), "byte {} of {}", i + 1, bytes.len());
                prop_assert_eq!(buf.len(), i + 1);
            } else {
                prop_assert_eq!(got, Ok(Some(packet.clone())));
                prop_assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn max_packet_bytes_is_enforced_at_exactly_the_packet_size((version, packet) in version_and_packet()) {
        let bytes = encoded(&packet, version);
        let mut buf = bytes.clone();
        prop_assert_eq!(decode(&mut buf, version, bytes.len()), Ok(Some(packet)));
        let mut buf = bytes.clone();
        prop_assert_eq!(decode(&mut buf, version, bytes.len() - 1), Err(DecodeError::PacketTooLarge));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..256), max in 0usize..512) {
        for version in VERSIONS {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = decode(&mut buf, version, max) {}
        }
        shoal_core::fuzz_support::decode::run(&data);
    }

    #[test]
    fn mutated_valid_packets_never_break_the_oracle(
        (version, packet) in version_and_packet(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encoded(&packet, version).to_vec();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        shoal_core::fuzz_support::decode::run(&bytes);
    }
}
