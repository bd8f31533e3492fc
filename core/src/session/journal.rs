//! What a session reports about its durable state, for a broker that writes it down.
//!
//! A session with journaling on ([`super::Session::set_journaling`]) appends one
//! [`StoreChange`] for every change to the parts of its state that must survive a
//! restart: its queue of QoS 1/2 deliveries, its outgoing in-flight window and its
//! incoming QoS 2 packet ids. The broker drains them with
//! [`super::Session::take_journal`] and turns them into store writes; how and when those
//! reach the disk is the broker's business. Subscriptions and the session's own record
//! are not journaled: the broker sees them in [`super::Event`]s and at CONNECT.
//!
//! Putting a session back together after a restart is [`super::Session::restore`], fed
//! with [`RestoredState`].

use std::sync::Arc;

use super::{Delivery, Message, SubscriptionEntry};
use crate::protocol::{PacketId, QoS};
use crate::topic::TopicFilter;

/// One change to a session's durable state, in the order it happened.
#[derive(Debug, Clone)]
pub enum StoreChange {
    /// A QoS 1/2 delivery joined the back of the queue.
    Queued(Arc<Message>),
    /// The front of the queue left it: sent under a packet id at a QoS (`Some`), or
    /// dropped (expired, or too large for the client).
    Dequeued(Option<(PacketId, QoS)>),
    /// The queue entry at this position (counted after the withdrawals journaled
    /// before it) left the queue without being sent: a shared-subscription message
    /// handed to another member of its group.
    Withdrawn(usize),
    /// A delivery went straight into the in-flight window, never queued.
    Sent {
        /// Its packet id.
        packet_id: PacketId,
        /// The message.
        message: Arc<Message>,
        /// Delivered QoS.
        qos: QoS,
    },
    /// The outgoing exchange of this packet id is over (PUBACK, PUBCOMP, or a PUBREC
    /// with an error code).
    Completed(PacketId),
    /// PUBREC arrived and PUBREL was sent for this packet id: the message itself is no
    /// longer needed, only the PUBREL.
    Released(PacketId),
    /// An incoming QoS 2 PUBLISH was routed; a resend of this packet id must not be.
    Qos2Received(PacketId),
    /// PUBREL arrived for an incoming QoS 2 packet id.
    Qos2Released(PacketId),
}

/// A session's state as a store kept it, for [`super::Session::restore`].
#[derive(Debug, Default)]
pub struct RestoredState {
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry_secs: u32,
    /// Subscriptions.
    pub subscriptions: Vec<(TopicFilter, SubscriptionEntry)>,
    /// Queued deliveries, oldest first.
    pub queue: Vec<Delivery>,
    /// How many of the first `queue` entries may have reached the client already: the
    /// session was connected when the store last wrote it, and a message is sent before
    /// its sending is on disk. Their first transmission carries DUP, which says "this
    /// might be a re-delivery" (0 for a session that was offline).
    pub maybe_sent: usize,
    /// The outgoing window in send order: packet id, the delivery, and whether PUBREL
    /// was already sent (then only PUBREL is resent; the delivery is not used).
    pub inflight: Vec<(PacketId, Delivery, bool)>,
    /// Incoming QoS 2 packet ids received and not yet released.
    pub qos2_received: Vec<PacketId>,
}
