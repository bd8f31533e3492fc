//! Will Delay Interval (MQTT 5 3.1.3.2.2): a will whose delay is above 0 waits in the
//! home worker's pending list and is published when the delay runs out or when the
//! session ends, whichever comes first [MQTT-3.1.3-9]; a new connection to the session
//! before then cancels it. Checked on the once-a-second tick, so a delay is kept to
//! within a second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_core::codec::LastWill;
use shoal_core::session::Message;

use super::Worker;
use crate::store::{SessionKey, SessionStore};

/// A will waiting for its delay.
pub(super) struct PendingWill {
    /// The session it belongs to; `None` for the will of a session that ended while
    /// the broker was down (published at start).
    key: Option<SessionKey>,
    client_id: Arc<str>,
    due: Instant,
    will: Box<LastWill>,
}

impl Worker {
    /// Publishes `will` of the session `key` now, or later if it has a delay and the
    /// session lives on (`session_ends` false).
    pub(super) fn will_or_delay(
        &mut self,
        key: SessionKey,
        client_id: Arc<str>,
        will: Box<LastWill>,
        session_ends: bool,
        now: Instant,
    ) {
        let delay = will.properties.will_delay_interval.unwrap_or(0);
        if delay > 0 && !session_ends {
            let due = now + Duration::from_secs(u64::from(delay));
            self.pending_wills.retain(|p| p.client_id != client_id);
            self.pending_wills.push(PendingWill { key: Some(key), client_id, due, will });
            return;
        }
        let msg = Message::from_will(*will, Some(client_id), now);
        self.route(Arc::new(msg), now);
    }

    /// The client reconnected to its session in time: its delayed will is not sent.
    pub(super) fn cancel_pending_will(&mut self, client_id: &str) {
        self.pending_wills.retain(|p| &*p.client_id != client_id);
    }

    /// The session `key` ended: its delayed will goes out now.
    pub(super) fn session_ended_will(&mut self, key: SessionKey, client_id: &str, now: Instant) {
        let Some(i) = self
            .pending_wills
            .iter()
            .position(|p| p.key == Some(key) && &*p.client_id == client_id)
        else {
            return;
        };
        let p = self.pending_wills.swap_remove(i);
        let msg = Message::from_will(*p.will, Some(p.client_id), now);
        self.route(Arc::new(msg), now);
    }

    /// Publishes the wills the store owed from before the start and already due (of
    /// sessions that ended while the broker was down), before any worker thread runs.
    /// A will without delay is not cancelled by its client coming back, and every
    /// client must find it: the retained store is set now, and the copies for other
    /// workers' sessions are in their channels, which each worker drains before its
    /// first socket read. Published from a worker's own loop instead, a client of
    /// another worker that is already running could subscribe first and get the stale
    /// retained message the will replaces.
    pub(crate) fn publish_wills_owed_at_start(&mut self, now: Instant) {
        self.publish_due_wills(now);
        self.flush_outbox();
    }

    /// Publishes the wills whose delay has run out (on the tick).
    pub(super) fn publish_due_wills(&mut self, now: Instant) {
        if self.pending_wills.iter().all(|p| p.due > now) {
            return;
        }
        let (due, waiting) = std::mem::take(&mut self.pending_wills)
            .into_iter()
            .partition::<Vec<_>, _>(|p| p.due <= now);
        self.pending_wills = waiting;
        for p in due {
            let msg = Message::from_will(*p.will, Some(p.client_id), now);
            self.route(Arc::new(msg), now);
            if let Some(key) = p.key {
                // The session lives on without a will owed: the store forgets it too.
                if let Some(d) = self.durable.as_mut() {
                    d.drop_will(key);
                }
                self.durable_put_session(key, true);
            }
        }
    }

    /// A will the store kept owing: of a session `key` recovered at start (due when its
    /// delay, counted from the end of its last connection, runs out), or, with `key`
    /// `None`, of a session that ended while the broker was down (due at once).
    pub(super) fn owe_will(
        &mut self,
        key: Option<SessionKey>,
        client_id: Arc<str>,
        will: Box<LastWill>,
        due: Instant,
    ) {
        self.pending_wills.push(PendingWill { key, client_id, due, will });
    }

    /// Shutdown, first step: publishes what the broker's end owes, while every
    /// subscriber is still connected. A connected client's will goes out unless its
    /// session outlives the broker in the durable store and the will has a delay (the
    /// store keeps it, and the next start publishes it when the delay runs out, unless
    /// the client is back by then). Without a durable store every session ends here,
    /// so the wills still waiting for their delay go out too.
    pub(super) fn publish_shutdown_wills(&mut self, now: Instant) {
        let durable = self.durable.is_some();
        let attached: Vec<SessionKey> =
            self.conns.iter().filter_map(|(_, c)| c.session()).collect();
        let mut wills = Vec::new();
        for key in attached {
            let Some(slot) = self.sessions.get_mut(key) else { continue };
            let Some(will) = slot.session.take_will() else { continue };
            let kept = durable
                && slot.session.is_persistent()
                && will.properties.will_delay_interval.unwrap_or(0) > 0;
            if kept {
                continue;
            }
            let client_id = slot.session.client_id().clone();
            if let Some(d) = self.durable.as_mut() {
                d.drop_will(key);
            }
            wills.push(Message::from_will(*will, Some(client_id), now));
        }
        if !durable {
            for p in std::mem::take(&mut self.pending_wills) {
                wills.push(Message::from_will(*p.will, Some(p.client_id), now));
            }
        }
        if !wills.is_empty() {
            log::info!("worker {}: publishing {} wills at shutdown", self.id, wills.len());
        }
        for msg in wills {
            self.route(Arc::new(msg), now);
        }
    }
}
