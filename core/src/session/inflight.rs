//! The outgoing QoS 1/2 window: packet-id allocation, acknowledgement state and the
//! order in which unacknowledged messages are redelivered.
//!
//! Incoming QoS 2 state (packet ids received but not yet released) is the small
//! [`InboundQos2`] set next to it.

use std::collections::VecDeque;

use super::Delivery;
use crate::protocol::{PacketId, QoS};

/// The first packet id a session hands out.
// Evaluated at compile time: the panic arm can only fail the build, never a running broker.
#[allow(clippy::panic)]
const FIRST_PACKET_ID: PacketId = match PacketId::new(1) {
    Some(id) => id,
    None => panic!("1 is a valid packet id"),
};

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutState {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREC received and PUBREL sent; waiting for PUBCOMP. Redelivery resends PUBREL,
    /// not the PUBLISH [MQTT-4.4.0-1].
    Released,
}

/// One unacknowledged outgoing message.
#[derive(Debug, Clone)]
pub(crate) struct OutEntry {
    pub(crate) id: PacketId,
    pub(crate) state: OutState,
    pub(crate) delivery: Delivery,
}

/// Outgoing messages sent but not yet fully acknowledged, in send order.
///
/// # Invariants
/// Packet ids in `entries` are distinct. Acknowledgements mostly arrive in order, so
/// lookups scan from the front and usually stop at the first entry.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    entries: VecDeque<OutEntry>,
    /// The next id to try; `None` means 1.
    next_id: Option<PacketId>,
}

impl Inflight {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops the window's allocation when it is empty (the next id is kept).
    pub(crate) fn release_idle_memory(&mut self) {
        if self.entries.is_empty() && self.entries.capacity() > 0 {
            self.entries = VecDeque::new();
        }
    }

    /// Adds `delivery` under a fresh packet id and returns the id.
    ///
    /// The caller keeps the window at most 65,535 entries, so a free id exists.
    pub(crate) fn push(&mut self, delivery: Delivery) -> PacketId {
        let mut id = self.next_id.unwrap_or(FIRST_PACKET_ID);
        // Skip ids still in use; the window is small, wrap-around collisions are rare.
        for _ in 0..=u16::MAX {
            if !self.entries.iter().any(|e| e.id == id) {
                break;
            }
            id = id.next();
        }
        debug_assert!(self.entries.iter().all(|e| e.id != id), "packet id reused in window");
        self.next_id = Some(id.next());
        self.entries.push_back(OutEntry { id, state: OutState::Published, delivery });
        id
    }

    fn position(&self, id: PacketId) -> Option<usize> {
        self.entries.iter().position(|e| e.id == id)
    }

    /// Puts back an entry kept by a store (after a restart), in send order. The next
    /// fresh id follows it.
    pub(crate) fn restore(&mut self, id: PacketId, delivery: Delivery, released: bool) {
        if self.entries.iter().any(|e| e.id == id) {
            return;
        }
        let state = if released { OutState::Released } else { OutState::Published };
        self.entries.push_back(OutEntry { id, state, delivery });
        self.next_id = Some(id.next());
    }

    /// PUBACK: removes a QoS 1 entry. `false` if no such entry awaits a PUBACK.
    pub(crate) fn ack(&mut self, id: PacketId) -> bool {
        match self.position(id) {
            Some(i) if self.entries.get(i).is_some_and(|e| e.state == OutState::Published) => {
                self.entries.remove(i);
                true
            }
            _ => false,
        }
    }

    /// The position of the QoS 2 entry with `id`. A QoS 1 entry with that id is not
    /// one: PUBREC and PUBCOMP belong to QoS 2 exchanges only, and letting them touch a
    /// QoS 1 entry would leave it waiting for a PUBCOMP that never comes (or drop it
    /// unacknowledged).
    fn position_qos2(&self, id: PacketId) -> Option<usize> {
        self.entries.iter().position(|e| e.id == id && e.delivery.qos == QoS::ExactlyOnce)
    }

    /// PUBREC: moves a QoS 2 entry to `Released` (again, for a repeated PUBREC).
    /// `false` if no QoS 2 entry has that id.
    pub(crate) fn rec(&mut self, id: PacketId) -> bool {
        match self.position_qos2(id).and_then(|i| self.entries.get_mut(i)) {
            Some(e) => {
                e.state = OutState::Released;
                true
            }
            None => false,
        }
    }

    /// PUBCOMP (or a v5 PUBREC with an error code): removes a QoS 2 entry. `false` if
    /// no QoS 2 entry has that id.
    pub(crate) fn comp(&mut self, id: PacketId) -> bool {
        match self.position_qos2(id) {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    /// Removes the entries still waiting for PUBACK/PUBREC whose delivery `take`
    /// selects, and returns their deliveries in send order.
    pub(crate) fn take_published(&mut self, take: impl Fn(&Delivery) -> bool) -> Vec<Delivery> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.entries.len());
        for e in self.entries.drain(..) {
            if e.state == OutState::Published && take(&e.delivery) {
                taken.push(e.delivery);
            } else {
                kept.push_back(e);
            }
        }
        self.entries = kept;
        taken
    }

    /// Entries in send order, for redelivery after a reconnect.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &OutEntry> + '_ {
        self.entries.iter()
    }

    /// The deliveries of every entry, to swap their messages (see
    /// [`Session::replace_inflight_messages`](super::Session::replace_inflight_messages)).
    pub(crate) fn deliveries_mut(&mut self) -> impl Iterator<Item = &mut Delivery> + '_ {
        self.entries.iter_mut().map(|e| &mut e.delivery)
    }
}

/// Packet ids of incoming QoS 2 PUBLISHes that were routed but not yet released by
/// PUBREL: a resent PUBLISH with one of these ids is acknowledged but not routed again
/// [MQTT-4.3.3-10].
#[derive(Debug, Default)]
pub(crate) struct InboundQos2 {
    ids: Vec<PacketId>,
}

impl InboundQos2 {
    /// Drops the set's allocation when it is empty.
    pub(crate) fn release_idle_memory(&mut self) {
        if self.ids.is_empty() && self.ids.capacity() > 0 {
            self.ids = Vec::new();
        }
    }

    pub(crate) fn contains(&self, id: PacketId) -> bool {
        self.ids.contains(&id)
    }

    pub(crate) fn insert(&mut self, id: PacketId) {
        if !self.contains(id) {
            self.ids.push(id);
        }
    }

    /// Removes `id`; `false` if it was not there.
    pub(crate) fn remove(&mut self, id: PacketId) -> bool {
        match self.ids.iter().position(|&x| x == id) {
            Some(i) => {
                self.ids.swap_remove(i);
                true
            }
            None => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}
