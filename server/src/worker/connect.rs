//! CONNECT: the first-packet rule, the client id's home worker, refusals, assigned
//! client ids, session lookup and takeover.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use shoal_core::codec::{ConnAck, Connect, Packet};
use shoal_core::session::{check_connect, ConnectAnswer, Event, LinkLoss, Session};
use shoal_core::ReasonCode;

use super::conn::ConnState;
use super::enhanced::Authenticated;
use super::Worker;
use crate::route::{home_worker, Handoff};
use crate::store::{SessionKey, SessionSlot, SessionStore};

impl Worker {
    /// The first packet of a connection. Returns `false` when the connection left this
    /// worker or is closing.
    pub(super) fn handle_first_packet(
        &mut self,
        idx: usize,
        packet: Packet,
        buf: &mut BytesMut,
        now: Instant,
    ) -> bool {
        if self.conns.get(idx).is_some_and(|c| matches!(c.state, ConnState::Authenticating { .. }))
        {
            self.handle_connect_auth_packet(idx, packet, now);
            return self.conns.get(idx).is_some_and(|c| !c.state.is_closing());
        }
        let Packet::Connect(mut connect) = packet else {
            // [MQTT-3.1.0-1] the first packet must be CONNECT.
            if let Some(c) = self.conns.get(idx) {
                log::info!("connection from {} closed: first packet was {}", c.addr, packet.name());
            }
            self.close_later(idx);
            return false;
        };
        // The will is kept for the whole connection (and in the store): copied out of
        // the decode buffer, so it does not keep that buffer (up to a 64 KiB read) alive.
        if let Some(will) = connect.will.as_mut() {
            *will = will.detached();
        }
        if !self.refusing.is_empty() && self.refusing.contains(&idx) {
            self.refuse(idx, &connect, ReasonCode::QuotaExceeded);
            return false;
        }
        if !connect.client_id.is_empty() {
            let home = home_worker(&connect.client_id, self.shared.workers);
            if home != self.id {
                self.hand_off(idx, home, connect, buf.split());
                return false;
            }
        }
        self.accept_connect(idx, connect, now);
        self.conns.get(idx).is_some_and(|c| !c.state.is_closing())
    }

    /// Moves the socket to the home worker of its client id.
    fn hand_off(&mut self, idx: usize, home: usize, connect: Box<Connect>, rest: BytesMut) {
        let Some(mut conn) = self.conns.try_remove(idx) else { return };
        if conn.registered {
            let _ = self.registry.deregister(&mut conn.stream);
        }
        let accepted_at = match conn.state {
            ConnState::Pending { since } => since,
            _ => Instant::now(),
        };
        let handoff = Handoff {
            stream: conn.stream,
            addr: conn.addr,
            layer: conn.layer,
            listener: conn.listener,
            connect,
            rest,
            accepted_at,
            bytes_in: conn.bytes_in,
        };
        match self.handoff_out.get_mut(home) {
            // Sent with one wake-up at the end of the iteration (`flush_outbox`).
            Some(out) => out.push(handoff),
            None => {
                self.shared.forget_connection(handoff.listener, false);
                log::warn!("connection from {} closed: no worker {home}", handoff.addr);
            }
        }
    }

    /// CONNECT on the client id's home worker: refuse, or attach a (new or resumed)
    /// session, taking over any connection that holds it.
    /// A CONNECT with an Authentication Method (v5) is authenticated by its method first
    /// (`enhanced.rs`), which then calls [`Worker::admit`].
    pub(super) fn accept_connect(&mut self, idx: usize, connect: Box<Connect>, now: Instant) {
        if let Err(rc) = check_connect(&connect) {
            self.refuse(idx, &connect, rc);
            return;
        }
        let (client_id, assigned): (Arc<str>, Option<String>) = if connect.client_id.is_empty() {
            let id = self.assign_client_id();
            (Arc::from(id.as_str()), Some(id))
        } else {
            (Arc::from(connect.client_id.as_str()), None)
        };
        if connect.protocol.is_v5() && connect.properties.authentication_method.is_some() {
            self.start_connect_auth(idx, connect, client_id, assigned, now);
            return;
        }
        self.admit(idx, connect, client_id, assigned, None, now);
    }

    /// The rest of CONNECT, once any enhanced authentication succeeded (`enhanced`):
    /// the hooks' `on_connect`, then the session.
    pub(super) fn admit(
        &mut self,
        idx: usize,
        connect: Box<Connect>,
        client_id: Arc<str>,
        assigned: Option<String>,
        enhanced: Option<Authenticated>,
        now: Instant,
    ) {
        let version = connect.protocol;
        self.read_previous_link(idx, &client_id, now);
        let mark = self.hold_mark(idx);
        let client = match self.authenticate(idx, &connect, &client_id, enhanced.as_ref()) {
            Ok(client) => client,
            Err(rc) => {
                self.refuse(idx, &connect, rc);
                return;
            }
        };
        let existing = self.sessions.find(&client_id);
        if let Some(key) = existing {
            self.take_over(key, now);
        }
        // Compare the decision, not keys: a discarded session's slab key may be reused.
        let (key, session_present) = match existing {
            Some(key) if !connect.clean_start => (key, true),
            other => {
                if let Some(old) = other {
                    self.discard_session(old, now);
                }
                let session = Session::new(client_id.clone(), self.shared.limits.clone());
                (self.sessions.insert(SessionSlot { session, conn: None }), false)
            }
        };
        let Some(conn) = self.conns.get_mut(idx) else { return };
        conn.state = ConnState::Active { session: key, version };
        conn.keep_alive_secs =
            connect.keep_alive.min(self.shared.broker_limits.max_keep_alive_secs);
        conn.clean_start = connect.clean_start;
        conn.connected_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
        let addr = conn.addr;
        let Some(slot) = self.sessions.get_mut(key) else { return };
        slot.conn = Some(idx);
        let answer = ConnectAnswer {
            session_present,
            assigned_client_id: if version.is_v5() { assigned } else { None },
            max_keep_alive_secs: self.shared.broker_limits.max_keep_alive_secs,
            authentication_method: enhanced.as_ref().map(|a| a.method.clone()),
            authentication_data: enhanced.and_then(|a| a.data),
        };
        slot.session.handle_connect(now, &connect, answer);
        if let Some(d) = self.durable.as_mut() {
            // Persistent: the session record is written before CONNACK leaves. A clean
            // session leaves nothing on disk (an old persistent one is deleted).
            if slot.session.is_persistent() {
                slot.session.set_journaling(true);
                d.set_link(key, version, connect.will.as_ref());
                d.put_session(key, &slot.session, false);
            } else {
                slot.session.set_journaling(false);
                d.forget(key, &client_id);
            }
        }
        self.remember_client(key, client, now);
        log::info!(
            "client {client_id} connected from {addr} (MQTT {version}, clean start {}, session present {session_present})",
            connect.clean_start
        );
        self.counters.connects = self.counters.connects.wrapping_add(1);
        self.client_connected(idx, &client_id, &connect, now);
        self.service_session(key, now);
        if session_present {
            self.share_presence(key, true, now);
            // [MQTT-3.1.3-9] back before the Will Delay ran out: no will.
            self.cancel_pending_will(&client_id);
        }
        self.hold_apply(idx, mark, true);
        self.admitted.push(idx);
    }

    /// Refuses a CONNECT with `rc` and closes the connection.
    pub(super) fn refuse(&mut self, idx: usize, connect: &Connect, rc: ReasonCode) {
        let Some(conn) = self.conns.get_mut(idx) else { return };
        let ack =
            ConnAck { session_present: false, reason_code: rc, properties: Default::default() };
        if let Err(e) = ack.encode(connect.protocol, &mut conn.wbuf) {
            log::debug!("cannot encode CONNACK: {e}");
        }
        log::info!("client {:?} from {} refused: {rc}", connect.client_id, conn.addr);
        if matches!(
            rc,
            ReasonCode::BadUserNameOrPassword
                | ReasonCode::NotAuthorized
                | ReasonCode::BadAuthenticationMethod
        ) {
            self.counters.auth_failures = self.counters.auth_failures.wrapping_add(1);
        }
        self.close_later(idx);
    }

    /// Before a CONNECT takes over the session of `client_id`: handles what the
    /// connection holding it has already sent. A client that ends a connection with
    /// DISCONNECT and connects again at once has its DISCONNECT waiting in the old
    /// socket when the new CONNECT is handled (a CONNECT handed over by another worker
    /// is handled before this worker reads its sockets); taking that for a takeover
    /// would publish the will a normal DISCONNECT discards and keep a session that
    /// should end with it.
    fn read_previous_link(&mut self, idx: usize, client_id: &str, now: Instant) {
        let old = self.sessions.find(client_id).and_then(|k| self.sessions.get(k)?.conn);
        if let Some(old) = old.filter(|&old| old != idx) {
            self.on_readable(old, now, false);
        }
    }

    /// Closes the connection currently attached to `key` (if any) because another
    /// connection claims its client id. The session stays, for the new connection.
    fn take_over(&mut self, key: SessionKey, now: Instant) {
        let Some(slot) = self.sessions.get_mut(key) else { return };
        if slot.conn.is_none() {
            return;
        }
        slot.session.handle_link_lost(now, LinkLoss::TakenOver);
        self.pump_transmit(key, now);
        while let Some(ev) = self.sessions.get_mut(key).and_then(|s| s.session.poll_event()) {
            match ev {
                Event::Close { reason, will } => self.finish_link(key, reason, will, false, now),
                other => self.handle_event(key, other, now),
            }
        }
    }

    /// A client id that hashes to this worker, so its session never has to move.
    fn assign_client_id(&mut self) -> String {
        loop {
            self.next_assigned = self.next_assigned.wrapping_add(1);
            let id = format!("shoal-{}-{:x}", self.id, self.next_assigned);
            if home_worker(&id, self.shared.workers) == self.id && self.sessions.find(&id).is_none()
            {
                return id;
            }
        }
    }
}
