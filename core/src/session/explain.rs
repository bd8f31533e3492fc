//! Reason Strings (MQTT 5) in the packets the session answers with: PUBACK, PUBREC,
//! PUBREL, PUBCOMP, SUBACK, UNSUBACK and DISCONNECT.
//!
//! A Reason String goes out only when the client did not turn them off with Request
//! Problem Information 0 [MQTT-3.1.2-29], and never where it would make the packet
//! larger than the client's Maximum Packet Size [MQTT-3.1.2-25]: the packet is encoded
//! as it will be sent and measured, and what does not fit is left out, the Reason
//! String first, then the User Properties (PUBACK [MQTT-3.4.2-2], [MQTT-3.4.2-3]; the
//! same rule for PUBREC 3.5.2.2, PUBREL 3.6.2.2, PUBCOMP 3.7.2.2, SUBACK 3.9.2.1,
//! UNSUBACK 3.11.2.1 and DISCONNECT 3.14.2.2). The broker sets no User Properties on
//! these packets today; the rule is there for when it does.
//!
//! Measuring costs one encoding into a scratch buffer, and only packets that carry a
//! Reason String (failures) pay it. Which text explains what is decided by the callers
//! in `super`.

use bytes::BytesMut;

use crate::codec::{
    AckKind, AckProperties, Disconnect, EncodeError, Packet, PubAckLike, UserProperty,
};
use crate::protocol::ProtocolVersion;

use super::Session;

/// The properties a server may leave out of a packet to make it fit.
struct Optional<'a> {
    reason_string: &'a mut Option<String>,
    user_properties: &'a mut Vec<UserProperty>,
}

impl<'a> Optional<'a> {
    fn of_ack(p: &'a mut AckProperties) -> Self {
        Self { reason_string: &mut p.reason_string, user_properties: &mut p.user_properties }
    }
}

impl Session {
    /// Sets `text` as `packet`'s Reason String, where the client allows Reason Strings
    /// (MQTT 5, and it did not ask for none [MQTT-3.1.2-29]); then leaves out the Reason
    /// String, and after it the User Properties, while the packet's encoding (`encode`)
    /// is longer than the client's Maximum Packet Size or impossible (a string over
    /// 65,535 bytes).
    fn explain<P>(
        &self,
        packet: &mut P,
        text: String,
        encode: impl Fn(&P, ProtocolVersion, &mut BytesMut) -> Result<(), EncodeError>,
        optional: fn(&mut P) -> Optional<'_>,
    ) {
        let Some(link) = self.link.as_ref().filter(|l| l.problem_info && l.version.is_v5()) else {
            return;
        };
        *optional(packet).reason_string = Some(text);
        let fits = |p: &P| {
            let mut scratch = BytesMut::new();
            encode(p, link.version, &mut scratch).is_ok() && scratch.len() <= link.max_packet_bytes
        };
        if fits(packet) {
            return;
        }
        *optional(packet).reason_string = None;
        if !fits(packet) {
            optional(packet).user_properties.clear();
        }
    }

    /// Gives a PUBACK, PUBREC, PUBREL or PUBCOMP (`kind`) `text` as its Reason String,
    /// where the client allows it and the ack still fits its Maximum Packet Size.
    pub(super) fn explain_ack(&self, kind: AckKind, ack: &mut PubAckLike, text: &str) {
        self.explain(
            ack,
            text.to_owned(),
            |a, version, out| a.encode(kind, version, out),
            |a| Optional::of_ack(&mut a.properties),
        );
    }

    /// Gives a DISCONNECT `text` as its Reason String, where the client allows it and
    /// the packet still fits its Maximum Packet Size.
    pub(super) fn explain_disconnect(&self, disconnect: &mut Disconnect, text: &str) {
        self.explain(
            disconnect,
            text.to_owned(),
            |d, version, out| d.encode(version, out),
            |d| Optional {
                reason_string: &mut d.properties.reason_string,
                user_properties: &mut d.properties.user_properties,
            },
        );
    }

    /// Gives a SUBACK or UNSUBACK with failure codes a Reason String naming each refused
    /// filter and why, where the client allows it and the ack still fits.
    pub(super) fn explain_failures(&self, ack: &mut Packet, failures: &[String]) {
        if failures.is_empty() {
            return;
        }
        let text = failures.join("; ");
        match ack {
            Packet::SubAck(a) => self.explain(
                a,
                text,
                |a, version, out| a.encode(version, out),
                |a| Optional::of_ack(&mut a.properties),
            ),
            Packet::UnsubAck(a) => self.explain(
                a,
                text,
                |a, version, out| a.encode(version, out),
                |a| Optional::of_ack(&mut a.properties),
            ),
            _ => {}
        }
    }
}
