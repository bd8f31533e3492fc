//! What a worker does for operators, off the per-message path: publishing its
//! counters and gauges into the shared [`Metrics`] on the 1 s tick, the `$SYS` topics
//! (worker 0 only, every `sys_interval`), client lifecycle events, and answering the
//! admin listener's queries ([`AdminQuery`], on a channel of their own).
//!
//! `$SYS` values and lifecycle events go through [`Worker::route`], the route every
//! client publish takes: the retained store keeps the `$SYS` values, and whatever
//! checks deliveries (ACLs) checks these too.
//!
//! Neighbours: the counters and their rendering are `crate::metrics`; the admin side
//! of the queries (fan-out, timeouts, paging) is `crate::control`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use shoal_core::codec::Connect;
use shoal_core::session::{LinkLoss, Message};
use shoal_core::{ProtocolVersion, QoS, ReasonCode, TopicName};

use super::conn::ConnState;
use super::Worker;
use crate::admin::{ClientDetail, ClientInfo, ClientSubscription, SubscriptionInfo};
use crate::control::{AdminQuery, CONTROL_PER_ITERATION};
use crate::metrics::{self, ClientEvent, LoadTracker, Metrics, WorkerGauges};
use crate::store::{SessionKey, SessionStore};

/// What the operations side of a worker is told at start (from `[admin]`).
#[derive(Debug, Clone)]
pub(crate) struct OpsSettings {
    /// How often worker 0 publishes `$SYS`; `None`: never.
    pub(crate) sys_interval: Option<Duration>,
    /// Whether client lifecycle events are published.
    pub(crate) client_events: bool,
    /// Listener names (`tcp://127.0.0.1:1883`), in config order.
    pub(crate) listener_names: Arc<[String]>,
}

/// Worker 0's `$SYS` publisher state.
#[derive(Debug)]
pub(super) struct SysPublisher {
    interval: Duration,
    next: Instant,
    load: LoadTracker,
    /// Most clients seen connected at once (`$SYS/broker/clients/maximum`).
    clients_maximum: u64,
}

impl SysPublisher {
    pub(super) fn new(interval: Duration, now: Instant) -> Self {
        Self { interval, next: now, load: LoadTracker::default(), clients_maximum: 0 }
    }
}

/// Unix time in milliseconds (0 if the clock is before 1970).
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn version_label(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

/// A QoS 0 message from the broker itself (no publisher, so No Local never applies).
fn broker_message(topic: &str, payload: String, retain: bool) -> Option<Message> {
    let topic = match TopicName::try_from(topic) {
        Ok(t) => t,
        Err(e) => {
            log::debug!("cannot publish on {topic:?}: {e}");
            return None;
        }
    };
    Some(Message {
        topic,
        payload: Bytes::from(payload),
        qos: QoS::AtMostOnce,
        retain,
        properties: None,
        expires_at: None,
        publisher: None,
    })
}

impl Worker {
    /// Once a second: copies this worker's counters and gauges into its metrics slot;
    /// worker 0 also reports the retained count and publishes `$SYS` when due.
    pub(super) fn publish_metrics(&mut self, now: Instant) {
        let mut counters = self.counters;
        counters.packets_sent = self.sent.packets;
        counters.publish_sent = self.sent.publish;
        let gauges = self.gauges();
        let metrics: &Metrics = &self.shared.metrics;
        metrics.publish_worker(self.id, &counters, &gauges);
        if self.id != 0 {
            return;
        }
        metrics.set_retained(u64::try_from(self.shared.retained.len()).unwrap_or(u64::MAX));
        let Some(sys) = self.sys.as_mut() else { return };
        if now < sys.next {
            return;
        }
        sys.next = now + sys.interval;
        let snap = metrics.snapshot(now);
        sys.load.update(now, &snap.counters);
        sys.clients_maximum = sys.clients_maximum.max(snap.gauges.connections_total());
        let values = metrics::sys_values(&snap, sys.load.loads(), sys.clients_maximum);
        for v in values {
            if let Some(m) = broker_message(&v.topic, v.payload, true) {
                self.route(Arc::new(m), now);
            }
        }
    }

    /// This worker's levels, counted afresh (once a second, off the message path).
    fn gauges(&self) -> WorkerGauges {
        let mut g = WorkerGauges::default();
        for (_, conn) in &self.conns {
            if let ConnState::Active { version, .. } = conn.state {
                g.add_connection(usize::from(conn.listener), version);
            }
        }
        for key in self.sessions.keys() {
            let Some(slot) = self.sessions.get(key) else { continue };
            if slot.conn.is_some() {
                g.sessions_online += 1;
            } else {
                g.sessions_offline += 1;
            }
            let s = &slot.session;
            g.subscriptions += u64::try_from(s.subscriptions().count()).unwrap_or(0);
            g.queued += u64::try_from(s.queued()).unwrap_or(0);
            g.queued_bytes += u64::try_from(s.queued_bytes()).unwrap_or(0);
            g.inflight += u64::try_from(s.inflight()).unwrap_or(0);
        }
        g
    }

    /// Publishes a lifecycle event for `client_id`, when they are switched on.
    pub(super) fn client_event(&mut self, client_id: &str, event: &ClientEvent<'_>, now: Instant) {
        if !self.shared.ops.client_events {
            return;
        }
        let v = metrics::client_event(client_id, event, unix_millis());
        if let Some(m) = broker_message(&v.topic, v.payload, false) {
            self.route(Arc::new(m), now);
        }
    }

    /// The `connected` event of an accepted CONNECT.
    pub(super) fn client_connected(
        &mut self,
        idx: usize,
        client_id: &str,
        connect: &Connect,
        now: Instant,
    ) {
        if !self.shared.ops.client_events {
            return;
        }
        let Some(conn) = self.conns.get(idx) else { return };
        let address = conn.addr.to_string();
        let max = self.shared.broker_limits.max_keep_alive_secs;
        let event = ClientEvent::Connected {
            address: &address,
            protocol: connect.protocol,
            keep_alive_secs: connect.keep_alive.min(max),
            clean_start: connect.clean_start,
            username: connect.username.as_deref(),
        };
        self.client_event(client_id, &event, now);
    }

    /// Answers queued admin queries (a few per iteration; the rest wait).
    pub(super) fn drain_control(&mut self, now: Instant) {
        for _ in 0..CONTROL_PER_ITERATION {
            let Ok(q) = self.control_rx.try_recv() else { return };
            self.answer(q, now);
        }
    }

    fn answer(&mut self, q: AdminQuery, now: Instant) {
        // A requester that gave up has dropped its receiver: nothing to do about it.
        match q {
            AdminQuery::Clients { search, keep, reply } => {
                let _ = reply.try_send(self.list_clients(&search, keep));
            }
            AdminQuery::Client { id, reply } => {
                let _ = reply.try_send(self.client_detail(&id));
            }
            AdminQuery::Disconnect { id, reply } => {
                let _ = reply.try_send(self.admin_disconnect(&id, now));
            }
            AdminQuery::Subscriptions { filter, keep, reply } => {
                let _ = reply.try_send(self.list_subscriptions(&filter, keep));
            }
            AdminQuery::Publish { message, reply } => {
                self.route(Arc::new(*message), now);
                let _ = reply.try_send(());
            }
        }
    }

    fn client_info(&self, key: SessionKey) -> Option<ClientInfo> {
        let slot = self.sessions.get(key)?;
        let s = &slot.session;
        let conn = slot.conn.and_then(|ci| self.conns.get(ci));
        let version = s.version().or(match conn.map(|c| c.state) {
            Some(ConnState::Active { version, .. }) => Some(version),
            _ => None,
        });
        Some(ClientInfo {
            id: s.client_id().to_string(),
            // Known when hooks (password file, ACL, an application's) run: the
            // authenticated name, not a claim.
            username: self.clients.get(&key).and_then(|c| c.info.identity.username.clone()),
            address: conn.map(|c| c.addr.to_string()),
            listener: conn
                .and_then(|c| self.shared.ops.listener_names.get(usize::from(c.listener)))
                .cloned(),
            protocol: version.map(version_label).unwrap_or_default().to_owned(),
            connected: conn.is_some(),
            connected_since: conn.map(|c| u64::from(c.connected_unix)),
            keep_alive_secs: conn.map_or(0, |c| c.keep_alive_secs),
            inflight: u64::try_from(s.inflight()).unwrap_or(0),
            queued: u64::try_from(s.queued()).unwrap_or(0),
            queued_bytes: u64::try_from(s.queued_bytes()).unwrap_or(0),
            bytes_in: conn.map_or(0, |c| c.bytes_in),
            bytes_out: conn.map_or(0, |c| c.bytes_out),
        })
    }

    /// Clients whose id or address contains `search` (case-insensitive), sorted by id:
    /// the total and the first `keep`.
    fn list_clients(&self, search: &str, keep: usize) -> (usize, Vec<ClientInfo>) {
        let needle = search.to_lowercase();
        let mut rows: Vec<ClientInfo> = self
            .sessions
            .keys()
            .into_iter()
            .filter_map(|k| self.client_info(k))
            .filter(|c| {
                needle.is_empty()
                    || c.id.to_lowercase().contains(&needle)
                    || c.address.as_deref().is_some_and(|a| a.contains(&needle))
                    || c.username.as_deref().is_some_and(|u| u.to_lowercase().contains(&needle))
            })
            .collect();
        let total = rows.len();
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        rows.truncate(keep);
        (total, rows)
    }

    fn client_detail(&self, id: &str) -> Option<ClientDetail> {
        let key = self.sessions.find(id)?;
        let info = self.client_info(key)?;
        let slot = self.sessions.get(key)?;
        let subscriptions = slot
            .session
            .subscriptions()
            .map(|(f, e)| ClientSubscription {
                filter: f.as_str().to_owned(),
                qos: e.options.qos.bits(),
                no_local: e.options.no_local,
                retain_as_published: e.options.retain_as_published,
                identifier: e.identifier,
            })
            .collect();
        let conn = slot.conn.and_then(|ci| self.conns.get(ci));
        Some(ClientDetail {
            info,
            clean_start: conn.is_some_and(|c| c.clean_start),
            session_expiry_secs: slot.session.expiry_interval_secs(),
            subscriptions,
        })
    }

    /// Ends `id`'s connection as an administrative action (v5: DISCONNECT 0x98). The
    /// session stays if it is persistent; the will is published as on any abnormal end.
    fn admin_disconnect(&mut self, id: &str, now: Instant) -> bool {
        let Some(key) = self.sessions.find(id) else { return false };
        let Some(slot) = self.sessions.get_mut(key) else { return false };
        if slot.conn.is_none() {
            return false;
        }
        log::info!("client {id} disconnected by an administrator");
        slot.session.handle_link_lost(now, LinkLoss::Limit(ReasonCode::AdministrativeAction));
        self.service_session(key, now);
        true
    }

    /// Subscriptions whose filter contains `filter`, sorted by client id then filter:
    /// the first `keep`.
    fn list_subscriptions(&self, filter: &str, keep: usize) -> Vec<SubscriptionInfo> {
        let mut rows = Vec::new();
        for key in self.sessions.keys() {
            let Some(slot) = self.sessions.get(key) else { continue };
            for (f, e) in slot.session.subscriptions() {
                if f.as_str().contains(filter) {
                    rows.push(SubscriptionInfo {
                        client_id: slot.session.client_id().to_string(),
                        filter: f.as_str().to_owned(),
                        qos: e.options.qos.bits(),
                    });
                }
            }
        }
        rows.sort_by(|a, b| (&a.client_id, &a.filter).cmp(&(&b.client_id, &b.filter)));
        rows.truncate(keep);
        rows
    }
}
