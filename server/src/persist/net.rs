//! What a group of intents changes, once writes that a later intent of the same group
//! undoes are left out.
//!
//! Under load most QoS 1 messages to an online persistent subscriber are acknowledged
//! by it before the group that stores them commits: the body, its in-flight (or queue)
//! entry and that entry's removal all sit in the same group. Writing them and deleting
//! them again in one transaction costs four B-tree updates a message for no lasting
//! effect, and those updates are most of the persister's time. This pass finds them
//! before the transaction starts:
//!
//! - a `PutInflight` of a PUBLISH record followed in the group by a `DeleteInflight` of
//!   the same client and packet id, with no other write of that key in between;
//! - an `Enqueue` followed by a `Dequeue` of the same client and `seq`;
//! - a `PutMessage` whose every reference in the group was left out by the two rules
//!   above (a body is always put in the group that first refers to it, and message ids
//!   are never reused, so nothing outside the group can refer to it).
//!
//! The put is skipped and the removal is kept: the removal then finds no entry (a
//! B-tree lookup that writes nothing), and if the key held something before the put (it
//! should not: packet ids and `seq`s are only reused once their entry was removed),
//! that old entry is still removed, exactly as without the pass. Skipping a body leaves
//! it out of the reference counts, so a later intent naming it is a reference to a
//! message the store does not hold and writes nothing.

use std::collections::HashMap;

use super::record::{InflightRecord, Intent};

/// Which intents of a group to skip, by their position in group order.
#[derive(Debug, Default)]
pub(super) struct Skips {
    skip: Vec<bool>,
    /// How many are skipped.
    pub(super) count: usize,
}

impl Skips {
    /// True when the intent at `pos` (group order) is to be skipped.
    pub(super) fn is_skipped(&self, pos: usize) -> bool {
        self.skip.get(pos).copied().unwrap_or(false)
    }

    fn set(&mut self, pos: usize) {
        if let Some(s) = self.skip.get_mut(pos) {
            if !*s {
                *s = true;
                self.count += 1;
            }
        }
    }
}

/// A body put in this group: where, and how many references in the group still hold it.
struct Body {
    pos: usize,
    refs: u32,
}

/// Finds the intents of `batches` (in group order) that a later one undoes.
pub(super) fn cancelled<'a>(batches: impl Iterator<Item = &'a [Intent]>, total: usize) -> Skips {
    let mut skips = Skips { skip: vec![false; total], count: 0 };
    let mut bodies: HashMap<u64, Body, crate::idhash::IdHasher> = HashMap::default();
    // Latest put of each key not yet overwritten or removed: (position, body id).
    let mut inflight: HashMap<(&str, u16), (usize, u64)> = HashMap::new();
    let mut queued: HashMap<(&str, u64), (usize, u64)> = HashMap::new();
    let mut pos = 0;
    for batch in batches {
        for intent in batch {
            match intent {
                Intent::PutMessage(m) => {
                    bodies.insert(m.id.0, Body { pos, refs: 0 });
                }
                Intent::PutRetained { message, .. } => refer(&mut bodies, message.0, 1),
                Intent::Enqueue { client_id, message, seq } => {
                    refer(&mut bodies, message.0, 1);
                    queued.insert((client_id.as_str(), *seq), (pos, message.0));
                }
                Intent::Dequeue { client_id, seq } => {
                    if let Some((put, id)) = queued.remove(&(client_id.as_str(), *seq)) {
                        skips.set(put);
                        refer(&mut bodies, id, -1);
                    }
                }
                Intent::PutInflight { client_id, packet_id, record } => {
                    let key = (client_id.as_str(), packet_id.get());
                    match record {
                        InflightRecord::Publish { message, .. } => {
                            refer(&mut bodies, message.0, 1);
                            inflight.insert(key, (pos, message.0));
                        }
                        InflightRecord::Released => {
                            // Overwrites the PUBLISH record: that put is no longer
                            // undone by the final removal alone.
                            inflight.remove(&key);
                        }
                    }
                }
                Intent::DeleteInflight { client_id, packet_id } => {
                    let key = (client_id.as_str(), packet_id.get());
                    if let Some((put, id)) = inflight.remove(&key) {
                        skips.set(put);
                        refer(&mut bodies, id, -1);
                    }
                }
                Intent::DeleteRetained { .. }
                | Intent::PutSession { .. }
                | Intent::DeleteSession { .. }
                | Intent::MarkQos2Received { .. }
                | Intent::ClearQos2Received { .. } => {}
            }
            pos += 1;
        }
    }
    for body in bodies.values() {
        if body.refs == 0 {
            skips.set(body.pos);
        }
    }
    skips
}

fn refer(bodies: &mut HashMap<u64, Body, crate::idhash::IdHasher>, id: u64, by: i32) {
    if let Some(b) = bodies.get_mut(&id) {
        b.refs = b.refs.saturating_add_signed(by);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use shoal_core::{PacketId, QoS, TopicName};

    use super::*;
    use crate::persist::record::{MessageId, StoredMessage};

    fn body(id: u64) -> Intent {
        Intent::PutMessage(StoredMessage {
            id: MessageId(id),
            topic: TopicName::try_from_str("t").unwrap(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: Bytes::new(),
            expires_at: None,
        })
    }

    fn put(record: InflightRecord) -> Intent {
        Intent::PutInflight { client_id: "a".into(), packet_id: PacketId::new(1).unwrap(), record }
    }

    fn skipped(batches: &[Vec<Intent>]) -> Vec<usize> {
        let total = batches.iter().map(Vec::len).sum();
        let skips = cancelled(batches.iter().map(Vec::as_slice), total);
        (0..total).filter(|&p| skips.is_skipped(p)).collect()
    }

    #[test]
    fn a_qos2_exchange_is_written_in_full_even_within_one_group() {
        let publish = InflightRecord::Publish { message: MessageId(1), qos: QoS::ExactlyOnce };
        let done =
            Intent::DeleteInflight { client_id: "a".into(), packet_id: PacketId::new(1).unwrap() };
        // PUBLISH record, overwritten by PUBREL's, then removed: the removal undoes
        // only the PUBREL state, so the PUBLISH record and its body stay in.
        let batches = vec![vec![body(1), put(publish)], vec![put(InflightRecord::Released), done]];
        assert_eq!(skipped(&batches), Vec::<usize>::new());
    }

    #[test]
    fn puts_and_removals_cancel_across_batches_of_a_group_but_not_other_clients() {
        let publish = InflightRecord::Publish { message: MessageId(1), qos: QoS::AtLeastOnce };
        let other =
            Intent::DeleteInflight { client_id: "b".into(), packet_id: PacketId::new(1).unwrap() };
        let done =
            Intent::DeleteInflight { client_id: "a".into(), packet_id: PacketId::new(1).unwrap() };
        let batches = vec![vec![body(1), put(publish)], vec![other], vec![done]];
        assert_eq!(skipped(&batches), vec![0, 1]);
    }
}
