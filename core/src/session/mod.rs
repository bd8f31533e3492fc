//! The MQTT session state machine, sans I/O.
//!
//! A [`Session`] holds what MQTT calls the session state of one client id (its
//! subscriptions, unacknowledged QoS 1/2 messages in both directions, messages queued
//! while the window or the socket is full or the client is offline) plus, while a network
//! connection is attached, the connection's protocol state (version, keep-alive, will).
//!
//! It is driven by `handle_*` and drained by `poll_*`:
//! - inputs: [`Session::handle_connect`], [`Session::handle_packet`],
//!   [`Session::handle_delivery`], [`Session::handle_timeout`],
//!   [`Session::handle_link_lost`], [`Session::set_write_blocked`];
//! - outputs: [`Session::poll_transmit`] (packets to write, in order),
//!   [`Session::poll_event`] (things the broker must act on: route a publish, add or
//!   remove a subscription, close the connection and maybe publish a will),
//!   [`Session::poll_timeout`] (when to call `handle_timeout`).
//!
//! After every `handle_*` call, drain `poll_transmit` and `poll_event` until `None`.
//!
//! What is deliberately not here: matching topics against subscriptions (the server's
//! trie), the first-packet and client-id checks that happen before a session exists
//! ([`check_connect`]), sockets and clocks (`now` is always an argument).
//! QoS window bookkeeping lives in `inflight`.

mod alias;
mod authz;
mod explain;
mod inflight;
mod journal;
mod message;
mod transmit;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::codec::{
    AckKind, AckProperties, ConnAck, ConnAckProperties, Connect, Disconnect, LastWill, Packet,
    PubAckLike, Publish, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use crate::limits::Limits;
use crate::protocol::{PacketId, ProtocolVersion, QoS, ReasonCode};
use crate::topic::TopicFilter;
use alias::{Aliases, OutboundAliases};
use inflight::{InboundQos2, Inflight, OutState};
pub use journal::{RestoredState, StoreChange};
pub use message::{Delivery, DropReason, Message, QueueDrops};
use transmit::Transmit;
pub use transmit::{PublishCache, SentCounts};

/// Longest client id MQTT 3.1 allows [MQTT 3.1, 3.1 CONNECT payload].
pub const MAX_V31_CLIENT_ID_BYTES: usize = 23;

/// What a session keeps about one of its subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionEntry {
    /// Options asked for (the granted QoS is `options.qos`).
    pub options: SubscriptionOptions,
    /// Subscription identifier (v5), if given.
    pub identifier: Option<u32>,
}

/// Something the broker must do for the session.
#[derive(Debug, Clone)]
pub enum Event {
    /// Route this message to matching subscribers (and update the retained store if
    /// `retain` is set).
    Publish(Arc<Message>),
    /// Add (or replace) a subscription of this session.
    Subscribe {
        /// The validated filter.
        filter: TopicFilter,
        /// Its entry.
        entry: SubscriptionEntry,
        /// Whether the session already had this filter (for Retain Handling 1).
        existed: bool,
    },
    /// Remove a subscription of this session.
    Unsubscribe(TopicFilter),
    /// QoS 1/2 deliveries made through a shared subscription (they carry
    /// [`Delivery::share`]) that were not acknowledged when the connection ended: they
    /// were taken out of this session, and the broker should give each to another
    /// member of its group [MQTT-4.8.2]. Emitted just before [`Event::Close`], and on
    /// [`Session::take_shared`].
    Orphaned(Vec<Delivery>),
    /// The network connection is over: write what is queued, then close the socket.
    /// `reason` is `Success` for a normal DISCONNECT from the client.
    Close {
        /// Why (for the log, and the DISCONNECT already queued for v5 clients).
        reason: ReasonCode,
        /// The will to publish, if the end was abnormal.
        will: Option<Box<LastWill>>,
    },
}

/// Why a connection was lost, as seen by the broker (not by a packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkLoss {
    /// Socket closed or failed without a DISCONNECT.
    SocketClosed,
    /// The bytes could not be decoded; carries the reason code to send (v5).
    Malformed(ReasonCode),
    /// Another connection took the client id over.
    TakenOver,
    /// The broker is shutting down.
    ServerShutdown,
    /// The client's write buffer or a limit could not be honoured; carries the reason.
    Limit(ReasonCode),
    /// Re-authentication (MQTT 5 AUTH) failed or broke the exchange's rules; carries
    /// the reason (see [`crate::auth::AuthReply::Refuse`]).
    Auth(ReasonCode),
}

/// What the broker decided at CONNECT, passed to [`Session::handle_connect`].
#[derive(Debug, Clone, Default)]
pub struct ConnectAnswer {
    /// Session Present flag.
    pub session_present: bool,
    /// Client id assigned by the server (empty id in CONNECT), sent to v5 clients.
    pub assigned_client_id: Option<String>,
    /// Largest keep-alive allowed; a larger request is lowered.
    pub max_keep_alive_secs: u16,
    /// The Authentication Method of a completed enhanced authentication (v5; see
    /// [`crate::auth::AuthExchange`]), repeated in CONNACK [MQTT-4.12.0-5]. `None`
    /// when the CONNECT named none: CONNACK then names none either [MQTT-4.12.0-6].
    pub authentication_method: Option<String>,
    /// The authenticator's final Authentication Data, for CONNACK.
    pub authentication_data: Option<Bytes>,
}

/// Connection-scoped protocol state; exists while a network connection is attached.
#[derive(Debug)]
struct Link {
    version: ProtocolVersion,
    /// The negotiated keep-alive in seconds, 0 when disabled; enforced at 1.5 × it
    /// [MQTT-3.1.2-24]. (Seconds, not a `Duration`, to keep idle connections small.)
    keep_alive: u16,
    last_packet: Instant,
    /// min(our max in-flight, the client's Receive Maximum).
    send_window: u16,
    will: Option<Box<LastWill>>,
    /// Session Expiry Interval at CONNECT (v5), to validate DISCONNECT's.
    connect_expiry: u32,
    /// The client's Maximum Packet Size (v5): larger messages are not sent to it.
    max_packet_bytes: usize,
    /// The client's Request Problem Information (v5): reason strings may be sent.
    problem_info: bool,
    /// Topic aliases in both directions (v5), allocated when the client's Topic Alias
    /// Maximum is above 0 or it first sets one up: most connections use none.
    aliases: Option<Box<Aliases>>,
}

/// The parts of a session that idle clients do not use (see `Session::stored`).
#[derive(Debug, Default)]
struct Stored {
    subscriptions: HashMap<TopicFilter, SubscriptionEntry>,
    inflight: Inflight,
    /// QoS 1/2 deliveries waiting for window, socket or reconnect, oldest first.
    /// Changed only through `enqueue`, `dequeue`, `clear_queue` and `take_shared`,
    /// which keep `queue_bytes` in step.
    queue: VecDeque<Delivery>,
    /// The sum of [`Message::queued_bytes`] over `queue`, counted per session: a
    /// message queued for many sessions shares one allocation but weighs on each.
    queue_bytes: usize,
    /// How many at the front of `queue` may have been sent before a crash (restored
    /// from a store that had not yet recorded their sending): each goes out with DUP.
    maybe_sent: usize,
    inbound_qos2: InboundQos2,
    /// Changes to the above for the broker's store (see `journal`); empty unless the
    /// session journals.
    journal: Vec<StoreChange>,
}

impl Stored {
    /// `bytes` is `d.message.queued_bytes()`, which the caller has just worked out.
    fn enqueue(&mut self, d: Delivery, bytes: usize) {
        debug_assert_eq!(bytes, d.message.queued_bytes());
        self.queue_bytes = self.queue_bytes.saturating_add(bytes);
        self.queue.push_back(d);
    }

    fn dequeue(&mut self) -> Option<Delivery> {
        let d = self.queue.pop_front()?;
        self.queue_bytes = self.queue_bytes.saturating_sub(d.message.queued_bytes());
        Some(d)
    }

    fn clear_queue(&mut self) {
        self.queue.clear();
        self.queue_bytes = 0;
        self.maybe_sent = 0;
    }

    /// Checks the cheap half of the byte invariant in debug builds: the count is
    /// recomputed from the queue.
    fn debug_check_queue_bytes(&self) {
        debug_assert_eq!(
            self.queue_bytes,
            self.queue.iter().fold(0usize, |n, d| n.saturating_add(d.message.queued_bytes())),
            "queue_bytes out of step with the queue"
        );
    }
}

/// The session state of one client id, and its connection while attached.
///
/// # Invariants
/// - `inflight.len() <= send window` whenever a message is moved out of `queue`.
/// - `queue.len() <= limits.max_queued_messages`.
/// - `queue_bytes` is the sum of [`Message::queued_bytes`] over `queue`, and
///   `queue_bytes <= limits.max_queued_bytes` unless that is 0 (no bound). Both bounds
///   hold for what `handle_delivery` admits; a session rebuilt by [`Session::restore`]
///   keeps everything the store had (acknowledged to publishers before a crash) even
///   past them, and admits nothing more until it is back under them.
/// - `link.is_none()` means no packet goes to `transmit`.
#[derive(Debug)]
pub struct Session {
    client_id: Arc<str>,
    /// Shared by every session of a broker (one pointer each, not a copy).
    limits: Arc<Limits>,
    /// Whether the session outlives its connection (3.x: clean session 0; v5: session
    /// expiry > 0).
    persistent: bool,
    /// v5 Session Expiry Interval in seconds; `u32::MAX` never expires.
    expiry_secs: u32,
    /// When the last connection ended; `None` while connected.
    offline_since: Option<Instant>,
    /// Subscriptions and QoS 1/2 state, allocated on first use: an idle client that
    /// never subscribes nor exchanges QoS 1/2 messages pays one pointer for them.
    stored: Option<Box<Stored>>,
    link: Option<Link>,
    /// Set by the broker while the connection's write buffer is full.
    write_blocked: bool,
    /// Whether changes to the queue, window and QoS 2 ids are journaled.
    journaling: bool,
    transmit: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Messages dropped from the queue and not yet taken by the broker
    /// ([`Session::take_queue_drops`]). The broker counts every drop by cause; the
    /// session keeps no total of its own.
    queue_drops: QueueDrops,
}

/// The encoded size of a delivery's PUBLISH, fixed header included. For QoS 1/2 it
/// counts the packet id's two bytes, though none is set yet: `Publish::encoded_len`
/// goes by the QoS.
fn encoded_len(d: &Delivery, version: ProtocolVersion, now: Instant) -> usize {
    d.message.to_publish(version, d.qos, d.retain, &d.subscription_ids, now).encoded_len(version)
}

/// Checks a CONNECT before a session is looked up.
///
/// # Errors
/// The CONNACK reason code to refuse it with (the codec maps it to the 3.x return code).
pub fn check_connect(connect: &Connect) -> Result<(), ReasonCode> {
    let id = connect.client_id.as_str();
    if id.is_empty() && !connect.clean_start && !connect.protocol.is_v5() {
        // [MQTT-3.1.3-8] 3.1.1: empty id needs clean session; return code 2.
        return Err(ReasonCode::ClientIdentifierNotValid);
    }
    if id.is_empty() && connect.protocol.is_v5() && !connect.clean_start {
        // The rule for v5: an assigned id cannot resume a session.
        return Err(ReasonCode::ClientIdentifierNotValid);
    }
    if connect.protocol == ProtocolVersion::V3_1 && id.len() > MAX_V31_CLIENT_ID_BYTES {
        return Err(ReasonCode::ClientIdentifierNotValid);
    }
    if let Some(will) = &connect.will {
        // 3.1.3.2.3: a will payload marked as UTF-8 text must be; CONNACK 0x99 if not.
        if will.properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(&will.payload).is_err()
        {
            return Err(ReasonCode::PayloadFormatInvalid);
        }
    }
    Ok(())
}

impl Session {
    /// A fresh, empty, offline session. A broker passes one `Arc<Limits>` to all its
    /// sessions; a `Limits` by value gets an `Arc` of its own.
    pub fn new(client_id: Arc<str>, limits: impl Into<Arc<Limits>>) -> Self {
        Self {
            client_id,
            limits: limits.into(),
            persistent: false,
            expiry_secs: 0,
            offline_since: None,
            stored: None,
            link: None,
            write_blocked: false,
            journaling: false,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            queue_drops: QueueDrops::default(),
        }
    }

    /// The client id.
    pub fn client_id(&self) -> &Arc<str> {
        &self.client_id
    }

    /// Whether a connection is attached.
    pub fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    /// The attached connection's protocol version.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.link.as_ref().map(|l| l.version)
    }

    /// Removes the attached connection's will and returns it, for a broker that
    /// publishes (or keeps) it itself, e.g. at shutdown: the end of this link then
    /// carries no will.
    pub fn take_will(&mut self) -> Option<Box<LastWill>> {
        self.link.as_mut()?.will.take()
    }

    /// Whether the session outlives its connection.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// Session Expiry Interval in seconds; `None` when the session never expires.
    pub fn expiry_interval_secs(&self) -> Option<u32> {
        (self.expiry_secs != u32::MAX).then_some(self.expiry_secs)
    }

    /// Session Expiry Interval in seconds (`u32::MAX`: never; 0: ends with the
    /// connection).
    pub fn expiry_secs(&self) -> u32 {
        self.expiry_secs
    }

    /// Turns the journal of durable changes on or off ([`StoreChange`]); turning it off
    /// drops what was not taken.
    pub fn set_journaling(&mut self, on: bool) {
        self.journaling = on;
        if !on {
            if let Some(s) = self.stored.as_mut() {
                s.journal = Vec::new();
            }
        }
    }

    /// Whether changes are journaled.
    pub fn is_journaling(&self) -> bool {
        self.journaling
    }

    /// Takes the changes journaled since the last call, oldest first.
    pub fn take_journal(&mut self) -> Vec<StoreChange> {
        match self.stored.as_mut() {
            Some(s) if self.journaling => std::mem::take(&mut s.journal),
            _ => Vec::new(),
        }
    }

    fn journal(&mut self, change: StoreChange) {
        if self.journaling {
            self.stored_mut().journal.push(change);
        }
    }

    /// A persistent, offline session (since `now`) rebuilt from what a store kept.
    /// Journaling is on.
    pub fn restore(
        client_id: Arc<str>,
        limits: impl Into<Arc<Limits>>,
        state: RestoredState,
        now: Instant,
    ) -> Self {
        let mut s = Self::new(client_id, limits);
        s.persistent = true;
        s.journaling = true;
        s.expiry_secs = state.expiry_secs;
        s.offline_since = Some(now);
        let stored = s.stored_mut();
        stored.subscriptions.extend(state.subscriptions);
        // The stored queue is new and empty: take the vector over (no copy, so a
        // million recovered entries are not held twice).
        stored.queue = VecDeque::from(state.queue);
        // Counted, never trimmed: each of these was acknowledged to its publisher.
        stored.queue_bytes =
            stored.queue.iter().fold(0, |n: usize, d| n.saturating_add(d.message.queued_bytes()));
        stored.maybe_sent = state.maybe_sent.min(stored.queue.len());
        for (id, delivery, released) in state.inflight {
            stored.inflight.restore(id, delivery, released);
        }
        for id in state.qos2_received {
            stored.inbound_qos2.insert(id);
        }
        s
    }

    /// Messages dropped from the queue since the last call: the broker counts these
    /// itself, as [`Session::handle_delivery`] had accepted them.
    pub fn take_queue_drops(&mut self) -> QueueDrops {
        std::mem::take(&mut self.queue_drops)
    }

    /// The session's subscriptions.
    pub fn subscriptions(&self) -> impl Iterator<Item = (&TopicFilter, &SubscriptionEntry)> + '_ {
        self.stored.iter().flat_map(|s| s.subscriptions.iter())
    }

    /// Messages waiting in the queue.
    pub fn queued(&self) -> usize {
        self.stored.as_ref().map_or(0, |s| s.queue.len())
    }

    /// What the messages waiting in the queue weigh ([`Message::queued_bytes`]), the
    /// figure `limits.max_queued_bytes` bounds.
    pub fn queued_bytes(&self) -> usize {
        self.stored.as_ref().map_or(0, |s| s.queue_bytes)
    }

    /// The deliveries waiting in the queue, oldest first.
    pub fn queued_deliveries(&self) -> impl Iterator<Item = &Delivery> + '_ {
        self.stored.iter().flat_map(|s| s.queue.iter())
    }

    /// Outgoing messages awaiting acknowledgement.
    pub fn inflight(&self) -> usize {
        self.stored.as_ref().map_or(0, |s| s.inflight.len())
    }

    /// The deliveries of the outgoing window (sent, not yet fully acknowledged), in
    /// send order.
    pub fn inflight_deliveries(&self) -> impl Iterator<Item = &Delivery> + '_ {
        self.stored.iter().flat_map(|s| s.inflight.iter().map(|e| &e.delivery))
    }

    /// True when an offline session has outlived its expiry interval.
    pub fn is_expired(&self, now: Instant) -> bool {
        match self.offline_since {
            Some(since) if self.expiry_secs != u32::MAX => {
                now.saturating_duration_since(since)
                    >= Duration::from_secs(u64::from(self.expiry_secs))
            }
            _ => false,
        }
    }

    /// Attaches a connection whose CONNECT passed [`check_connect`]: queues CONNACK,
    /// then redelivers unacknowledged messages (PUBLISH with DUP, or PUBREL) and sends
    /// what was queued while offline, within the window.
    pub fn handle_connect(&mut self, now: Instant, connect: &Connect, answer: ConnectAnswer) {
        let version = connect.protocol;
        let v5 = version.is_v5();
        let mut keep_alive = connect.keep_alive;
        let mut server_keep_alive = None;
        // [MQTT-3.2.2-21] a finite maximum also replaces "no keep-alive" (0) for v5, which
        // can be told so; a 3.x client that asked for none would never ping.
        let finite_max = answer.max_keep_alive_secs < u16::MAX;
        if keep_alive > answer.max_keep_alive_secs || (keep_alive == 0 && finite_max && v5) {
            keep_alive = answer.max_keep_alive_secs;
            server_keep_alive = Some(keep_alive);
        }
        let receive_max = connect.properties.receive_maximum.unwrap_or(u16::MAX);
        let connect_expiry = if v5 {
            connect.properties.session_expiry_interval.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            u32::MAX
        };
        self.expiry_secs = connect_expiry;
        self.persistent = connect_expiry > 0;
        self.offline_since = None;
        self.write_blocked = false;
        self.transmit.clear();
        self.link = Some(Link {
            version,
            keep_alive,
            last_packet: now,
            send_window: self.limits.max_inflight.min(receive_max).max(1),
            will: connect.will.clone().map(Box::new),
            connect_expiry,
            max_packet_bytes: connect
                .properties
                .maximum_packet_size
                .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX)),
            problem_info: connect.properties.request_problem_information.unwrap_or(true),
            aliases: match connect.properties.topic_alias_maximum {
                Some(max) if max > 0 && v5 => Some(Box::new(Aliases {
                    outbound: Some(OutboundAliases::new(max)),
                    ..Aliases::default()
                })),
                _ => None,
            },
        });
        let properties = if v5 {
            ConnAckProperties {
                receive_maximum: Some(self.limits.max_inflight),
                maximum_packet_size: u32::try_from(self.limits.max_packet_bytes).ok(),
                assigned_client_identifier: answer.assigned_client_id,
                topic_alias_maximum: Some(self.limits.topic_alias_maximum),
                server_keep_alive,
                shared_subscription_available: Some(true),
                subscription_identifiers_available: Some(true),
                wildcard_subscription_available: Some(true),
                retain_available: Some(true),
                authentication_method: answer.authentication_method,
                authentication_data: answer.authentication_data,
                ..ConnAckProperties::default()
            }
        } else {
            ConnAckProperties::default()
        };
        self.transmit.push_back(Transmit::Other(Box::new(Packet::ConnAck(ConnAck {
            session_present: answer.session_present,
            reason_code: ReasonCode::Success,
            properties,
        }))));
        self.redeliver(now);
        self.pump(now);
    }

    /// Resends every unacknowledged message after a reconnect [MQTT-4.4.0-1]. A message
    /// over the new connection's Maximum Packet Size (it may be smaller than the last
    /// one's) is discarded as if its sending had completed [MQTT-3.1.2-25], and counted.
    fn redeliver(&mut self, now: Instant) {
        let Some(link) = &self.link else { return };
        let (version, max) = (link.version, link.max_packet_bytes);
        let Some(stored) = &self.stored else { return };
        let mut packets = Vec::with_capacity(stored.inflight.len());
        let mut too_large = Vec::new();
        for e in stored.inflight.iter() {
            packets.push(match e.state {
                OutState::Published => {
                    let len = encoded_len(&e.delivery, version, now);
                    if max < usize::MAX && len > max {
                        too_large.push(e.id);
                        continue;
                    }
                    Transmit::Publish {
                        delivery: e.delivery.clone(),
                        version,
                        packet_id: Some(e.id),
                        dup: true,
                        expiry_secs: e.delivery.message.expiry_left(now),
                        alias: None,
                    }
                }
                OutState::Released => Transmit::Ack(AckKind::PubRel, PubAckLike::new(e.id)),
            });
        }
        for id in too_large {
            if self.stored.as_mut().is_some_and(|s| s.inflight.ack(id)) {
                self.queue_drops.too_large = self.queue_drops.too_large.saturating_add(1);
                self.journal(StoreChange::Completed(id));
            }
        }
        for packet in packets {
            self.push_transmit(packet);
        }
    }

    /// Queues a packet, giving a PUBLISH its topic alias when the client takes them.
    fn push_transmit(&mut self, mut t: Transmit) {
        let link = self.link.as_mut();
        if let Some(aliases) = link.and_then(|l| l.aliases.as_mut()?.outbound.as_mut()) {
            if let Some(topic) = t.topic() {
                let alias = aliases.assign(topic);
                t.set_alias(alias);
            }
        }
        self.transmit.push_back(t);
    }

    /// Moves queued messages into the window while there is room and the socket takes
    /// more.
    fn pump(&mut self, now: Instant) {
        let Some(link) = &self.link else { return };
        let (version, max) = (link.version, link.max_packet_bytes);
        let window = usize::from(link.send_window);
        while !self.write_blocked && self.inflight() < window {
            let Some(stored) = self.stored.as_mut() else { break };
            let Some(d) = stored.dequeue() else { break };
            let dup = stored.maybe_sent > 0;
            stored.maybe_sent = stored.maybe_sent.saturating_sub(1);
            if d.message.is_expired(now) {
                self.queue_drops.expired = self.queue_drops.expired.saturating_add(1);
                self.journal(StoreChange::Dequeued(None));
                continue;
            }
            let qos = d.qos;
            let sent = self.send_qos12(version, max, d, dup, now);
            if sent.is_none() {
                self.queue_drops.too_large = self.queue_drops.too_large.saturating_add(1);
            }
            self.journal(StoreChange::Dequeued(sent.map(|id| (id, qos))));
        }
    }

    /// Sends a QoS 1/2 delivery under a new packet id; drops it if it is
    /// larger than the client's Maximum Packet Size [MQTT-3.1.2-25].
    /// Returns the packet id it was sent under, `None` when it was dropped.
    fn send_qos12(
        &mut self,
        version: ProtocolVersion,
        max: usize,
        d: Delivery,
        dup: bool,
        now: Instant,
    ) -> Option<PacketId> {
        if max < usize::MAX && encoded_len(&d, version, now) > max {
            return None;
        }
        let mut t = Transmit::publish(d.clone(), version, now);
        let id = self.stored_mut().inflight.push(d);
        if let Transmit::Publish { packet_id, dup: d, .. } = &mut t {
            *packet_id = Some(id);
            *d = dup;
        }
        self.push_transmit(t);
        Some(id)
    }

    /// Tells the session whether the connection's write buffer is full. While it is,
    /// QoS 0 deliveries are dropped and QoS 1/2 ones queue; clearing it sends queued
    /// messages again.
    pub fn set_write_blocked(&mut self, now: Instant, blocked: bool) {
        let was = self.write_blocked;
        self.write_blocked = blocked;
        if was && !blocked {
            self.pump(now);
        }
    }

    /// Whether a QoS 1/2 delivery handed in now would wait in the queue rather than be
    /// sent: the session is offline or write-blocked, its window is full, or others
    /// already wait. The broker detaches such a message from its read buffer first
    /// ([`Message::detached`]).
    pub fn is_queueing(&self) -> bool {
        match &self.link {
            Some(l) => {
                self.write_blocked
                    || self.queued() > 0
                    || self.inflight() >= usize::from(l.send_window)
            }
            None => true,
        }
    }

    /// Replaces the message of every delivery in the outgoing QoS 1/2 window (sent,
    /// not yet fully acknowledged) with what `keep` returns for it.
    ///
    /// For the broker when the connection ends and the window may wait long for a
    /// reconnect: a message that was sent at once still shares the publisher's read
    /// chunk, and `keep` copies it out ([`Message::detached`]), sharing one copy among
    /// every session that holds the same message. `keep` must return the same
    /// message (equal topic, payload, QoS, properties); nothing else changes.
    pub fn replace_inflight_messages(
        &mut self,
        mut keep: impl FnMut(&Arc<Message>) -> Arc<Message>,
    ) {
        let Some(stored) = self.stored.as_mut() else { return };
        for d in stored.inflight.deliveries_mut() {
            d.message = keep(&d.message);
        }
    }

    /// A message matched one of this session's subscriptions.
    ///
    /// # Errors
    /// Why the message was dropped rather than sent or queued. A queued message may
    /// still be dropped when its turn comes (it expired, or it was queued offline and is
    /// too large for the connection it is to go out on): see
    /// [`Session::take_queue_drops`].
    pub fn handle_delivery(&mut self, now: Instant, delivery: Delivery) -> Result<(), DropReason> {
        if delivery.message.is_expired(now) {
            return Err(DropReason::Expired);
        }
        let online =
            self.link.as_ref().map(|l| (l.version, usize::from(l.send_window), l.max_packet_bytes));
        if delivery.qos == QoS::AtMostOnce {
            return match online {
                Some((version, _, max)) if !self.write_blocked => {
                    if max < usize::MAX && encoded_len(&delivery, version, now) > max {
                        return Err(DropReason::TooLarge);
                    }
                    self.push_transmit(Transmit::publish(delivery, version, now));
                    Ok(())
                }
                _ => Err(DropReason::QueueFull),
            };
        }
        if let Some((version, window, max)) = online {
            if !self.write_blocked && self.queued() == 0 && self.inflight() < window {
                debug_assert!(!self.is_queueing());
                let (message, qos) = (delivery.message.clone(), delivery.qos);
                let Some(packet_id) = self.send_qos12(version, max, delivery, false, now) else {
                    return Err(DropReason::TooLarge);
                };
                self.journal(StoreChange::Sent { packet_id, message, qos });
                return Ok(());
            }
            // [MQTT-3.1.2-25] a message too large for this connection is discarded as if
            // sent: now, rather than after it has held a queue slot until its turn. (An
            // offline session does not know the next connection's maximum; `pump` and
            // `redeliver` check then.)
            if max < usize::MAX && encoded_len(&delivery, version, now) > max {
                return Err(DropReason::TooLarge);
            }
        }
        if self.queued() >= self.limits.max_queued_messages {
            return Err(DropReason::QueueFull);
        }
        // A message larger than the whole byte bound never fits, even in an empty
        // queue: the bound is a hard cap on what one session holds (Mosquitto's
        // `max_queued_bytes` drops it too).
        let (bytes, max_bytes) = (delivery.message.queued_bytes(), self.limits.max_queued_bytes);
        if max_bytes > 0 && self.queued_bytes().saturating_add(bytes) > max_bytes {
            return Err(DropReason::QueueFull);
        }
        if self.journaling {
            self.journal(StoreChange::Queued(delivery.message.clone()));
        }
        self.stored_mut().enqueue(delivery, bytes);
        Ok(())
    }

    /// A packet arrived from the client.
    pub fn handle_packet(&mut self, now: Instant, packet: Packet) {
        let Some(link) = &mut self.link else { return };
        link.last_packet = now;
        let version = link.version;
        let result = match packet {
            Packet::Publish(p) => self.handle_publish(now, p),
            Packet::PubAck(a) => {
                if self.stored.as_mut().is_some_and(|s| s.inflight.ack(a.packet_id)) {
                    self.journal(StoreChange::Completed(a.packet_id));
                    self.pump(now);
                }
                // An unknown id is ignored: it may be a duplicate ack after redelivery.
                Ok(())
            }
            Packet::PubRec(a) => {
                if a.reason_code.is_error() {
                    // v5: the receiver refused the message; the exchange ends here.
                    if self.stored.as_mut().is_some_and(|s| s.inflight.comp(a.packet_id)) {
                        self.journal(StoreChange::Completed(a.packet_id));
                        self.pump(now);
                    }
                    Ok(())
                } else {
                    let mut rel = PubAckLike::new(a.packet_id);
                    if self.stored.as_mut().is_some_and(|s| s.inflight.rec(a.packet_id)) {
                        self.journal(StoreChange::Released(a.packet_id));
                    } else {
                        // 3.x has no code for it; the PUBREL still goes so a client that
                        // lost its state can finish the exchange.
                        rel.reason_code = ReasonCode::PacketIdentifierNotFound;
                        self.explain_ack(AckKind::PubRel, &mut rel, NO_QOS2_SENT);
                    }
                    self.transmit.push_back(Transmit::Ack(AckKind::PubRel, rel));
                    Ok(())
                }
            }
            Packet::PubComp(a) => {
                if self.stored.as_mut().is_some_and(|s| s.inflight.comp(a.packet_id)) {
                    self.journal(StoreChange::Completed(a.packet_id));
                    self.pump(now);
                }
                Ok(())
            }
            Packet::PubRel(a) => {
                let mut comp = PubAckLike::new(a.packet_id);
                if self.stored.as_mut().is_some_and(|s| s.inbound_qos2.remove(a.packet_id)) {
                    self.journal(StoreChange::Qos2Released(a.packet_id));
                } else {
                    // Not an error during recovery: the PUBCOMP for it may have been lost.
                    comp.reason_code = ReasonCode::PacketIdentifierNotFound;
                    self.explain_ack(AckKind::PubComp, &mut comp, NO_QOS2_RECEIVED);
                }
                self.transmit.push_back(Transmit::Ack(AckKind::PubComp, comp));
                Ok(())
            }
            Packet::Subscribe(s) => self.handle_subscribe(version, s, &[]),
            Packet::Unsubscribe(u) => {
                self.handle_unsubscribe(u);
                Ok(())
            }
            Packet::PingReq => {
                self.transmit.push_back(Transmit::PingResp);
                Ok(())
            }
            Packet::Disconnect(d) => self.handle_disconnect(now, d),
            // [MQTT-3.1.0-2] a second CONNECT is a protocol violation; so is any packet
            // only a server sends, and AUTH from a client whose CONNECT named no
            // Authentication Method [MQTT-4.12.0-7] (the broker hands the others' AUTH
            // to their `crate::auth::AuthExchange` instead).
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Auth(_) => Err(ReasonCode::ProtocolError),
        };
        if let Err(reason) = result {
            self.end_link(now, reason, true, true);
        }
    }

    fn handle_publish(&mut self, now: Instant, mut p: Publish) -> Result<(), ReasonCode> {
        self.resolve_topic_alias(&mut p)?;
        // [MQTT-3.3.4-6] a client must not send Subscription Identifiers.
        if !p.properties.subscription_identifiers.is_empty() {
            return Err(ReasonCode::ProtocolError);
        }
        if p.topic.levels().count() > self.limits.max_topic_levels {
            return Err(ReasonCode::TopicNameInvalid);
        }
        // 3.3.2.3.2: a payload marked as UTF-8 that is not is refused with 0x99 (by
        // PUBACK/PUBREC, or DISCONNECT for QoS 0), and not routed.
        if p.properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(&p.payload).is_err()
        {
            let mut ack = match p.packet_id {
                Some(id) => PubAckLike::new(id),
                None => return Err(ReasonCode::PayloadFormatInvalid),
            };
            ack.reason_code = ReasonCode::PayloadFormatInvalid;
            let kind = if p.qos == QoS::ExactlyOnce { AckKind::PubRec } else { AckKind::PubAck };
            self.explain_ack(kind, &mut ack, "payload is not UTF-8");
            self.transmit.push_back(Transmit::Ack(kind, ack));
            return Ok(());
        }
        match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) => {
                self.route(now, p);
            }
            (QoS::AtLeastOnce, Some(id)) => {
                if self.exceeds_receive_maximum(&p, 0) {
                    return Err(ReasonCode::ReceiveMaximumExceeded);
                }
                self.route(now, p);
                self.transmit.push_back(Transmit::Ack(AckKind::PubAck, PubAckLike::new(id)));
            }
            (QoS::ExactlyOnce, Some(id)) => {
                if !self.stored.as_ref().is_some_and(|s| s.inbound_qos2.contains(id)) {
                    if self.exceeds_receive_maximum(&p, 0) {
                        return Err(ReasonCode::ReceiveMaximumExceeded);
                    }
                    self.stored_mut().inbound_qos2.insert(id);
                    self.journal(StoreChange::Qos2Received(id));
                    self.route(now, p);
                }
                self.transmit.push_back(Transmit::Ack(AckKind::PubRec, PubAckLike::new(id)));
            }
            // The codec guarantees a packet id for QoS > 0; be safe anyway.
            (_, None) => return Err(ReasonCode::MalformedPacket),
        }
        Ok(())
    }

    /// Whether accepting `p` would leave the client with more unacknowledged QoS 1 and
    /// QoS 2 PUBLISHes than the Receive Maximum we advertised (`limits.max_inflight`),
    /// which it must not do [MQTT-3.3.4-9]; the answer is DISCONNECT 0x93.
    ///
    /// The session counts QoS 2 exchanges awaiting PUBREL (a resent PUBLISH of one of
    /// them is not new). It answers every QoS 1 PUBLISH at once, so only the broker
    /// knows of QoS 1 PUBLISHes still unacknowledged from the client's view (a PUBACK
    /// held until the durable store commits): it passes their number as
    /// `unsent_pubacks`. QoS 1 counts for v5 clients only: 3.x has no Receive Maximum,
    /// and its QoS 2 bound is this session's resource limit.
    pub fn exceeds_receive_maximum(&self, p: &Publish, unsent_pubacks: usize) -> bool {
        let Some(link) = &self.link else { return false };
        let v5 = link.version.is_v5();
        let qos2 = self.stored.as_ref().map(|s| &s.inbound_qos2);
        let outstanding = match (p.qos, p.packet_id) {
            (QoS::AtLeastOnce, _) if v5 => unsent_pubacks,
            (QoS::ExactlyOnce, Some(id)) if !qos2.is_some_and(|q| q.contains(id)) => {
                if v5 {
                    unsent_pubacks
                } else {
                    0
                }
            }
            _ => return false,
        };
        let outstanding = outstanding.saturating_add(qos2.map_or(0, |q| q.len()));
        outstanding >= usize::from(self.limits.max_inflight)
    }

    fn route(&mut self, now: Instant, p: Publish) {
        let msg = Message::from_publish(p, Some(self.client_id.clone()), now);
        self.events.push_back(Event::Publish(Arc::new(msg)));
    }

    /// `refused[i]`, when set, is the SUBACK code of filter `i`, which is then not
    /// subscribed (the broker's authorisation said no; see `authz`).
    fn handle_subscribe(
        &mut self,
        version: ProtocolVersion,
        s: Subscribe,
        refused: &[Option<ReasonCode>],
    ) -> Result<(), ReasonCode> {
        let identifier = s.properties.subscription_identifier;
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut failures = Vec::new();
        for (i, f) in s.filters.into_iter().enumerate() {
            let code = match refused.get(i).copied().flatten() {
                Some(code) => code,
                None => self.subscribe_one(version, &f.filter, f.options, identifier),
            };
            if code == ReasonCode::ProtocolError {
                return Err(code);
            }
            if code.is_error() {
                failures.push(failure_clause(&f.filter, code));
            }
            codes.push(code);
        }
        let mut ack = Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            reason_codes: codes,
            properties: AckProperties::default(),
        });
        self.explain_failures(&mut ack, &failures);
        self.transmit.push_back(Transmit::Other(Box::new(ack)));
        Ok(())
    }

    fn subscribe_one(
        &mut self,
        version: ProtocolVersion,
        filter: &str,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) -> ReasonCode {
        let max_levels = self.limits.max_topic_levels;
        let parsed = match crate::topic::Subscription::parse_with_max_levels(filter, max_levels) {
            Ok(crate::topic::Subscription::Plain(f)) => f,
            // A shared subscription is kept under its whole `$share/{group}/{filter}`
            // string (itself a valid filter), so it sits beside a plain subscription to
            // the same filter and UNSUBSCRIBE finds it by the same string. The broker
            // tells the two apart in `Event::Subscribe` by the `$share/` prefix.
            Ok(crate::topic::Subscription::Shared(_)) => {
                // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error.
                if options.no_local && version.is_v5() {
                    return ReasonCode::ProtocolError;
                }
                match TopicFilter::try_from(filter.to_owned()) {
                    Ok(f) => f,
                    Err(_) => return ReasonCode::TopicFilterInvalid,
                }
            }
            Err(_) => return ReasonCode::TopicFilterInvalid,
        };
        let max_subscriptions = self.limits.max_subscriptions;
        let subscriptions = &mut self.stored_mut().subscriptions;
        let existed = subscriptions.contains_key(&parsed);
        if !existed && subscriptions.len() >= max_subscriptions {
            return ReasonCode::QuotaExceeded;
        }
        let entry = SubscriptionEntry { options, identifier };
        subscriptions.insert(parsed.clone(), entry);
        self.events.push_back(Event::Subscribe { filter: parsed, entry, existed });
        match options.qos {
            QoS::AtMostOnce => ReasonCode::Success,
            QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
            QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
        }
    }

    fn handle_unsubscribe(&mut self, u: Unsubscribe) {
        let mut codes = Vec::with_capacity(u.filters.len());
        let mut failures = Vec::new();
        for f in &u.filters {
            let Ok(filter) = TopicFilter::parse(f) else {
                // Not a filter at all: nobody can be subscribed to it.
                failures.push(failure_clause(f, ReasonCode::TopicFilterInvalid));
                codes.push(ReasonCode::TopicFilterInvalid);
                continue;
            };
            let removed = self.stored.as_mut().and_then(|s| s.subscriptions.remove(&filter));
            codes.push(match removed {
                Some(_) => {
                    self.events.push_back(Event::Unsubscribe(filter));
                    ReasonCode::Success
                }
                None => ReasonCode::NoSubscriptionExisted,
            });
        }
        let mut ack = Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            reason_codes: codes,
            properties: AckProperties::default(),
        });
        self.explain_failures(&mut ack, &failures);
        self.transmit.push_back(Transmit::Other(Box::new(ack)));
    }

    fn handle_disconnect(&mut self, now: Instant, d: Disconnect) -> Result<(), ReasonCode> {
        if let (Some(link), Some(expiry)) = (&self.link, d.properties.session_expiry_interval) {
            // [MQTT-3.14.2-2] cannot turn a non-persistent session into a persistent one.
            if link.connect_expiry == 0 && expiry != 0 {
                return Err(ReasonCode::ProtocolError);
            }
            self.expiry_secs = expiry;
            self.persistent = expiry > 0;
        }
        // [MQTT-3.1.2-10] a normal DISCONNECT deletes the will; v5 0x04 asks to keep it.
        let keep_will = d.reason_code == ReasonCode::DisconnectWithWill;
        self.end_link(now, ReasonCode::Success, false, keep_will);
        Ok(())
    }

    /// Queues the broker's AUTH packet (an enhanced re-authentication step decided by
    /// `crate::auth::AuthExchange`) behind what is already queued. Ignored when no v5
    /// connection is attached.
    pub fn send_auth(&mut self, auth: crate::codec::Auth) {
        if self.link.as_ref().is_some_and(|l| l.version.is_v5()) {
            self.transmit.push_back(Transmit::Other(Box::new(Packet::Auth(auth))));
        }
    }

    /// The broker lost or is dropping the connection for a reason outside the packets:
    /// queues a v5 DISCONNECT where one is due and emits [`Event::Close`] with the will.
    pub fn handle_link_lost(&mut self, now: Instant, loss: LinkLoss) {
        let (reason, send) = match loss {
            LinkLoss::SocketClosed => (ReasonCode::UnspecifiedError, false),
            LinkLoss::Malformed(rc) | LinkLoss::Limit(rc) | LinkLoss::Auth(rc) => (rc, true),
            LinkLoss::TakenOver => (ReasonCode::SessionTakenOver, true),
            LinkLoss::ServerShutdown => (ReasonCode::ServerShuttingDown, true),
        };
        // A shutdown is not the client's fault, but its connection did end abnormally;
        // the will is published like for any other server-side close.
        self.end_link(now, reason, send, true);
    }

    /// Ends the attached connection.
    fn end_link(&mut self, now: Instant, reason: ReasonCode, send_disconnect: bool, will: bool) {
        let disconnect = (send_disconnect && self.link.as_ref().is_some_and(|l| l.version.is_v5()))
            .then(|| {
                let mut d = Disconnect { reason_code: reason, properties: Default::default() };
                self.explain_disconnect(&mut d, &reason.to_string());
                d
            });
        let Some(link) = self.link.take() else { return };
        if let Some(d) = disconnect {
            self.transmit.push_back(Transmit::Other(Box::new(Packet::Disconnect(d))));
        }
        self.offline_since = Some(now);
        self.write_blocked = false;
        self.take_shared();
        if !self.persistent {
            if let Some(stored) = self.stored.as_mut() {
                stored.inflight = Inflight::default();
                stored.clear_queue();
                stored.inbound_qos2 = InboundQos2::default();
            }
        }
        let will = if will { link.will } else { None };
        self.events.push_back(Event::Close { reason, will });
    }

    /// Takes every shared-subscription delivery (one with [`Delivery::share`]) that is
    /// queued or waiting for PUBACK/PUBREC out of the session and emits them as one
    /// [`Event::Orphaned`], so that other members of their groups get them. Called when
    /// the connection ends, and by the broker before it discards an offline session.
    /// A QoS 2 message whose PUBREC arrived stays: the client has it.
    pub fn take_shared(&mut self) {
        let Some(stored) = self.stored.as_mut() else { return };
        if self.journaling {
            // The store forgets them too: they now belong to another member.
            for e in stored.inflight.iter() {
                if e.state == OutState::Published && e.delivery.share.is_some() {
                    stored.journal.push(StoreChange::Completed(e.id));
                }
            }
            let mut removed = 0;
            for (i, d) in stored.queue.iter().enumerate() {
                if d.share.is_some() {
                    stored.journal.push(StoreChange::Withdrawn(i - removed));
                    removed += 1;
                }
            }
        }
        let mut orphans = stored.inflight.take_published(|d| d.share.is_some());
        if stored.queue.iter().any(|d| d.share.is_some()) {
            let (shared, kept): (VecDeque<_>, VecDeque<_>) =
                std::mem::take(&mut stored.queue).into_iter().partition(|d| d.share.is_some());
            stored.queue = kept;
            let shared_bytes =
                shared.iter().fold(0, |n: usize, d| n.saturating_add(d.message.queued_bytes()));
            stored.queue_bytes = stored.queue_bytes.saturating_sub(shared_bytes);
            stored.debug_check_queue_bytes();
            orphans.extend(shared);
        }
        if !orphans.is_empty() {
            self.events.push_back(Event::Orphaned(orphans));
        }
    }

    /// Keep-alive check; call at or after [`Session::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|t| now >= t) {
            self.end_link(now, ReasonCode::KeepAliveTimeout, true, true);
        }
    }

    /// When [`Session::handle_timeout`] should next be called, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let link = self.link.as_ref()?;
        let timeout = Duration::from_millis(u64::from(link.keep_alive) * 1500);
        (link.keep_alive > 0).then(|| link.last_packet.checked_add(timeout)).flatten()
    }

    /// The next packet to write to the client.
    pub fn poll_transmit(&mut self) -> Option<Packet> {
        self.transmit.pop_front().map(Transmit::into_packet)
    }

    /// Drains every pending packet into `out`, encoded for `version` (the link's, or
    /// the one the connection had if it just ended): the same bytes, in the same order,
    /// as encoding each [`Session::poll_transmit`] result, without building a `Packet`
    /// per delivery; QoS 0 PUBLISHes of one message go through `cache`, so a fan-out
    /// encodes each wire form once.
    ///
    /// Every packet encoded is counted in `sent`. Returns how many packets could not
    /// be encoded (and were skipped).
    pub fn encode_transmit(
        &mut self,
        version: ProtocolVersion,
        out: &mut BytesMut,
        cache: &mut PublishCache,
        sent: &mut SentCounts,
    ) -> usize {
        let mut failed = 0;
        while let Some(t) = self.transmit.pop_front() {
            let qos = t.publish_qos();
            if t.encode(version, out, cache).is_err() {
                failed += 1;
                continue;
            }
            sent.packets = sent.packets.wrapping_add(1);
            if let Some(qos) = qos {
                let n = &mut sent.publish[usize::from(qos.bits())];
                *n = n.wrapping_add(1);
            }
        }
        failed
    }

    /// Whether packets wait for [`Session::encode_transmit`].
    pub fn has_transmit(&self) -> bool {
        !self.transmit.is_empty()
    }

    /// The next thing the broker must do.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Releases the memory of empty queues (the transmit and event queues keep the
    /// capacity of their busiest moment otherwise). For the broker's periodic sweep of
    /// idle connections; changes no state.
    pub fn release_idle_memory(&mut self) {
        fn release<T>(q: &mut VecDeque<T>) {
            if q.is_empty() && q.capacity() > 0 {
                *q = VecDeque::new();
            }
        }
        release(&mut self.transmit);
        release(&mut self.events);
        if let Some(stored) = self.stored.as_mut() {
            release(&mut stored.queue);
            stored.inflight.release_idle_memory();
            stored.inbound_qos2.release_idle_memory();
        }
    }

    /// The subscription and QoS 1/2 state, allocated on first use.
    fn stored_mut(&mut self) -> &mut Stored {
        self.stored.get_or_insert_with(Box::default)
    }
}

/// Reason String of a PUBREL 0x92: the client's PUBREC names no QoS 2 message the
/// broker sent and has not seen completed.
const NO_QOS2_SENT: &str = "no outgoing QoS 2 message has this packet identifier";

/// Reason String of a PUBCOMP 0x92: the client's PUBREL names no QoS 2 message the
/// broker received and has not yet released.
const NO_QOS2_RECEIVED: &str =
    "no incoming QoS 2 message awaits release with this packet identifier";

/// One clause of an ack's reason string: the filter and why it failed. A long filter
/// is cut (at a character boundary) so the clause stays readable.
fn failure_clause(filter: &str, code: ReasonCode) -> String {
    const SHOWN_BYTES: usize = 64;
    let mut end = filter.len().min(SHOWN_BYTES);
    while !filter.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < filter.len() { "..." } else { "" };
    format!("{}{cut}: {}", filter.get(..end).unwrap_or_default(), code.description())
}

#[cfg(test)]
mod tests;
