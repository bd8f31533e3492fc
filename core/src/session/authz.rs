//! Packets the broker's authorisation has already decided on: a PUBLISH it refused
//! (acknowledged, never routed) and a SUBSCRIBE some of whose filters it refused.
//!
//! The decisions themselves (password and ACL files, an application's hooks) are made
//! by the server before it hands the packet over; the session only turns them into the
//! right acknowledgements for the protocol version, so the QoS exchange stays correct.

use std::time::Instant;

use crate::codec::{AckKind, PubAckLike, Publish, Subscribe};
use crate::protocol::{QoS, ReasonCode};

use super::transmit::Transmit;
use super::Session;

impl Session {
    /// Replaces an incoming PUBLISH's Topic Alias (v5) by the topic it stands for, and
    /// records a new alias, so the broker can authorise the real topic before it hands
    /// the packet to [`Session::handle_packet`] (which does this itself otherwise). A
    /// PUBLISH without an alias is left alone.
    ///
    /// # Errors
    /// The reason code to disconnect with: 0x94 Topic Alias invalid for an unknown
    /// alias, an alias over our maximum, or an empty topic without one.
    pub fn resolve_topic_alias(&mut self, publish: &mut Publish) -> Result<(), ReasonCode> {
        if publish.properties.topic_alias.is_none() && !publish.topic.is_empty() {
            return Ok(());
        }
        let max_alias = self.limits.topic_alias_maximum;
        if let Some(link) = self.link.as_mut() {
            let aliases = link.aliases.get_or_insert_with(Box::default);
            let topic = std::mem::replace(&mut publish.topic, crate::topic::TopicName::empty());
            publish.topic =
                aliases.inbound.resolve(max_alias, publish.properties.topic_alias, topic)?;
        }
        Ok(())
    }

    /// A PUBLISH the broker will not route. MQTT 5 clients get `reason` in PUBACK
    /// (QoS 1) or PUBREC (QoS 2, which ends that exchange: no PUBREL follows an error
    /// PUBREC); MQTT 3.x clients get an ordinary acknowledgement, as 3.x cannot say no
    /// [MQTT-3.3.5-2: the server may discard a message it does not authorise]. QoS 0 is
    /// dropped silently in every version.
    pub fn handle_publish_refused(&mut self, now: Instant, publish: &Publish, reason: ReasonCode) {
        let Some(link) = &mut self.link else { return };
        link.last_packet = now;
        let v5 = link.version.is_v5();
        let mut ack = match publish.packet_id {
            Some(id) => PubAckLike::new(id),
            None if publish.qos == QoS::AtMostOnce => return,
            // The codec guarantees a packet id for QoS > 0.
            None => {
                self.end_link(now, ReasonCode::MalformedPacket, true, true);
                return;
            }
        };
        let kind = match publish.qos {
            QoS::AtMostOnce => return,
            QoS::AtLeastOnce => AckKind::PubAck,
            QoS::ExactlyOnce => AckKind::PubRec,
        };
        if v5 {
            ack.reason_code = reason;
            if reason.is_error() {
                let text = super::failure_clause(publish.topic.as_str(), reason);
                self.explain_ack(kind, &mut ack, &text);
            }
        }
        // 3.x QoS 2: the PUBREL that follows finds no stored id and gets a PUBCOMP all
        // the same (its "not found" code exists only in v5), so nothing is stored here.
        self.transmit.push_back(Transmit::Ack(kind, ack));
    }

    /// A QoS 1/2 PUBLISH the broker cannot take now because it would have to be written
    /// to a durable store that cannot write (full disk, I/O error). It is not routed.
    /// MQTT 5 clients get `reason` in PUBACK or PUBREC, as for a refusal. MQTT 3.x
    /// clients get no acknowledgement at all: 3.x has no way to say no, and an ordinary
    /// one would promise what the broker cannot keep; the client sends the message again
    /// (DUP) when it reconnects.
    ///
    /// Returns `false`, and does nothing, for a QoS 2 PUBLISH whose packet id was
    /// already taken (a resend before PUBREL): that message is in, and the caller
    /// handles the packet as usual, which only answers PUBREC again.
    pub fn handle_publish_unstorable(
        &mut self,
        now: Instant,
        publish: &Publish,
        reason: ReasonCode,
    ) -> bool {
        if let (QoS::ExactlyOnce, Some(id)) = (publish.qos, publish.packet_id) {
            if self.stored.as_ref().is_some_and(|s| s.inbound_qos2.contains(id)) {
                return false;
            }
        }
        let Some(link) = &mut self.link else { return true };
        if link.version.is_v5() {
            self.handle_publish_refused(now, publish, reason);
        } else {
            link.last_packet = now;
        }
        true
    }

    /// A SUBSCRIBE whose filters the broker has checked: `refused[i]`, when set, is the
    /// SUBACK code for filter `i`, which is not subscribed (3.x clients see 0x80). The
    /// other filters are handled as by [`Session::handle_packet`]; a QoS cap is applied
    /// by lowering the filter's requested QoS before the call.
    pub fn handle_subscribe_checked(
        &mut self,
        now: Instant,
        subscribe: Subscribe,
        refused: &[Option<ReasonCode>],
    ) {
        let Some(link) = &mut self.link else { return };
        link.last_packet = now;
        let version = link.version;
        if let Err(reason) = self.handle_subscribe(version, subscribe, refused) {
            self.end_link(now, reason, true, true);
        }
    }
}
