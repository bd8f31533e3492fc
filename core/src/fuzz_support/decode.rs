//! Fuzz entry point for the decoder, shared by `core/fuzz/fuzz_targets/decode.rs` and
//! the stable replay of its seed corpus (`core/tests/fuzz_corpus_decode.rs`).
//!
//! The oracle: decoding arbitrary bytes under any version never panics, and every
//! packet that decodes re-encodes to bytes that decode to the same packet.

use bytes::BytesMut;

use crate::codec::{decode, encode, Packet};
use crate::limits::PROTOCOL_MAX_PACKET_BYTES;
use crate::protocol::ProtocolVersion;

/// Decodes `data` as a stream of frames under each protocol version, until it runs out
/// or fails, checking each decoded packet round-trips.
///
/// # Panics
/// When the codec breaks its contract; that is the point of a fuzz oracle.
pub fn run(data: &[u8]) {
    for version in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decode(&mut buf, version, PROTOCOL_MAX_PACKET_BYTES) {
            check_round_trip(&packet, version);
        }
    }
}

#[allow(clippy::panic)] // Reporting a broken invariant is the oracle's only job.
fn check_round_trip(packet: &Packet, version: ProtocolVersion) {
    let mut out = BytesMut::new();
    if let Err(e) = encode(packet, version, &mut out) {
        panic!("decoded packet does not encode ({e}): {packet:?}");
    }
    // A CONNECT is written in its own protocol version, whatever the connection's.
    let reread_as = match packet {
        Packet::Connect(c) => c.protocol,
        _ => version,
    };
    let encoded_len = out.len();
    match decode(&mut out, reread_as, PROTOCOL_MAX_PACKET_BYTES) {
        Ok(Some(again)) if &again == packet && out.is_empty() => {}
        other => panic!(
            "round trip under {version} changed the packet:\n  first:  {packet:?}\n  \
             second: {other:?} ({} of {encoded_len} bytes left)",
            out.len()
        ),
    }
    if let Packet::Publish(p) = packet {
        if p.encoded_len(version) != encoded_len {
            panic!("Publish::encoded_len disagrees with encode: {packet:?}");
        }
    }
}
