//! MQTT 5 enhanced authentication on the event loop: for a connection whose CONNECT
//! named an Authentication Method, drives its `shoal_core::auth::AuthExchange` with the
//! application's [`AuthMethod`](crate::auth::AuthMethod) (found through
//! `Hooks::auth_method`), during CONNECT and on re-authentication.
//!
//! While the CONNECT is being authenticated the connection is
//! `ConnState::Authenticating` (no session yet, so a failing client takes nothing over)
//! and the CONNECT timeout still runs. Once it succeeds, `Worker::admit` goes on as for
//! any CONNECT, with the method's username as the client's identity.
//!
//! Per-connection state (the exchange and the method's continuation) lives in
//! `Worker::auth`, keyed by connection, created only for connections that use a
//! method and dropped with the connection (`close_pending`): connections without one
//! cost nothing, and the packet path pays nothing but a match arm for AUTH.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use shoal_core::auth::{AuthAnswer, AuthExchange, AuthReply, AuthRequest};
use shoal_core::codec::{Auth, Connect, Packet};
use shoal_core::session::LinkLoss;
use shoal_core::{ProtocolVersion, ReasonCode};

use super::conn::ConnState;
use super::Worker;
use crate::auth::{AuthClient, AuthContinuation, AuthStep, ClientIdentity, ClientInfo};
use crate::store::{SessionKey, SessionStore};

/// One connection's enhanced authentication.
pub(super) struct ConnAuth {
    exchange: AuthExchange,
    /// The method's state while a challenge waits for the client's response.
    next: Option<Box<dyn AuthContinuation>>,
    /// The CONNECT being authenticated; `None` once it is accepted.
    pending: Option<PendingConnect>,
}

/// A CONNECT waiting for its exchange to end.
struct PendingConnect {
    connect: Box<Connect>,
    client_id: Arc<str>,
    /// The client id the broker assigned (empty id in CONNECT), for CONNACK.
    assigned: Option<String>,
}

/// What a successful CONNECT exchange hands to the rest of CONNECT (`Worker::admit`).
#[derive(Debug)]
pub(super) struct Authenticated {
    /// The Authentication Method, repeated in CONNACK.
    pub(super) method: String,
    /// Final Authentication Data for CONNACK.
    pub(super) data: Option<Bytes>,
    /// The username the method established, if it named one.
    pub(super) username: Option<String>,
}

impl Worker {
    /// A CONNECT with an Authentication Method: starts the exchange with the method's
    /// first step, or refuses with 0x8C when no hook provides that method.
    pub(super) fn start_connect_auth(
        &mut self,
        idx: usize,
        connect: Box<Connect>,
        client_id: Arc<str>,
        assigned: Option<String>,
        now: Instant,
    ) {
        let Some((exchange, data)) = AuthExchange::from_connect(&connect) else {
            // The caller checked for a method; without one there is nothing to run.
            self.refuse(idx, &connect, ReasonCode::ProtocolError);
            return;
        };
        let hooks = self.shared.hooks.clone();
        let method = hooks.as_deref().and_then(|h| h.auth_method(exchange.method()));
        let (Some(method), Some(conn)) = (method, self.conns.get(idx)) else {
            log::info!(
                "client {client_id:?}: authentication method {:?} not supported",
                exchange.method()
            );
            self.refuse(idx, &connect, ReasonCode::BadAuthenticationMethod);
            return;
        };
        let client = AuthClient {
            peer: conn.addr,
            protocol: connect.protocol,
            client_id: &client_id,
            username: connect.username.as_deref(),
            current_username: None,
        };
        let step = method.start(&client, data.as_deref());
        let pending = Some(PendingConnect { connect, client_id, assigned });
        let state = Box::new(ConnAuth { exchange, next: None, pending });
        self.auth_step(idx, state, step, now);
    }

    /// A packet on a connection whose CONNECT is being authenticated: only AUTH (the
    /// response to our challenge) and DISCONNECT may come [MQTT-3.1.2-30].
    pub(super) fn handle_connect_auth_packet(&mut self, idx: usize, packet: Packet, now: Instant) {
        let Some(mut state) = self.auth.remove(&idx) else {
            self.close_later(idx);
            return;
        };
        let auth = match packet {
            Packet::Auth(auth) => auth,
            Packet::Disconnect(_) => {
                self.close_later(idx);
                return;
            }
            other => {
                if let Some(c) = self.conns.get(idx) {
                    log::info!("client at {} sent {} while authenticating", c.addr, other.name());
                }
                self.refuse_pending(idx, &state, ReasonCode::ProtocolError);
                return;
            }
        };
        match state.exchange.handle_auth(&auth) {
            Ok(AuthRequest::Step(data)) => match state.next.take() {
                Some(next) => {
                    let step = next.step(data.as_deref());
                    self.auth_step(idx, state, step, now);
                }
                None => self.refuse_pending(idx, &state, ReasonCode::ImplementationSpecificError),
            },
            // The exchange never asks for a fresh start during CONNECT.
            Ok(AuthRequest::Start(_)) => {
                self.refuse_pending(idx, &state, ReasonCode::ProtocolError);
            }
            Err(code) => self.refuse_pending(idx, &state, code),
        }
    }

    /// AUTH on an established connection (`self.auth` has its exchange): a
    /// re-authentication starts or goes on. A broken rule or a failed exchange closes
    /// the connection with DISCONNECT.
    pub(super) fn handle_reauth(&mut self, idx: usize, key: SessionKey, auth: Auth, now: Instant) {
        let Some(mut state) = self.auth.remove(&idx) else { return };
        let step = match state.exchange.handle_auth(&auth) {
            Ok(AuthRequest::Start(data)) => {
                let hooks = self.shared.hooks.clone();
                let method = hooks.as_deref().and_then(|h| h.auth_method(state.exchange.method()));
                let (Some(method), Some(conn)) = (method, self.conns.get(idx)) else {
                    self.link_lost(idx, LinkLoss::Auth(ReasonCode::NotAuthorized), now);
                    return;
                };
                let info = self.clients.get(&key).map(|c| c.info.clone());
                let client_id = self.sessions.get(key).map(|s| s.session.client_id().clone());
                let client = AuthClient {
                    peer: conn.addr,
                    protocol: ProtocolVersion::V5,
                    client_id: client_id.as_deref().unwrap_or_default(),
                    username: None,
                    current_username: info.as_ref().and_then(|i| i.identity.username.as_deref()),
                };
                method.start(&client, data.as_deref())
            }
            Ok(AuthRequest::Step(data)) => match state.next.take() {
                Some(next) => next.step(data.as_deref()),
                None => AuthStep::Fail(ReasonCode::ImplementationSpecificError),
            },
            Err(code) => {
                if let Some(c) = self.conns.get(idx) {
                    log::info!("client at {} broke re-authentication: {code}", c.addr);
                }
                self.link_lost(idx, LinkLoss::Auth(code), now);
                return;
            }
        };
        self.auth_step(idx, state, step, now);
    }

    /// Feeds a method's step to the exchange and does what it says.
    fn auth_step(&mut self, idx: usize, mut state: Box<ConnAuth>, step: AuthStep, now: Instant) {
        let (answer, username) = match step {
            AuthStep::Continue { challenge, next } => {
                state.next = Some(next);
                (AuthAnswer::Continue(Some(Bytes::from(challenge))), None)
            }
            AuthStep::Success { data, username } => {
                (AuthAnswer::Success(data.map(Bytes::from)), username)
            }
            AuthStep::Fail(code) => (AuthAnswer::Fail(code), None),
        };
        match state.exchange.handle_answer(answer) {
            AuthReply::Challenge(auth) => {
                if state.pending.is_some() {
                    self.send_connecting_auth(idx, &auth);
                } else {
                    self.send_session_auth(idx, auth, now);
                }
                self.auth.insert(idx, state);
            }
            AuthReply::Connected(data) => {
                let Some(pending) = state.pending.take() else { return };
                let method = state.exchange.method().to_owned();
                self.auth.insert(idx, state);
                if let Some(c) = self.conns.get_mut(idx) {
                    if let ConnState::Authenticating { since } = c.state {
                        c.state = ConnState::Pending { since };
                    }
                }
                let done = Authenticated { method, data, username };
                let PendingConnect { connect, client_id, assigned } = pending;
                self.admit(idx, connect, client_id, assigned, Some(done), now);
            }
            AuthReply::Reauthenticated(auth) => {
                if let Some(name) = username {
                    self.rename_client(idx, name);
                }
                self.send_session_auth(idx, auth, now);
                self.auth.insert(idx, state);
            }
            AuthReply::Refuse(code) => {
                if state.pending.is_some() {
                    self.refuse_pending(idx, &state, code);
                } else {
                    if let Some(c) = self.conns.get(idx) {
                        log::info!("client at {} failed re-authentication: {code}", c.addr);
                    }
                    self.link_lost(idx, LinkLoss::Auth(code), now);
                }
            }
        }
    }

    /// Writes an AUTH to a connection that has no session yet.
    fn send_connecting_auth(&mut self, idx: usize, auth: &Auth) {
        let Some(c) = self.conns.get_mut(idx) else { return };
        if let Err(e) = auth.encode(ProtocolVersion::V5, &mut c.wbuf) {
            log::debug!("cannot encode AUTH for {}: {e}", c.addr);
        }
        if let ConnState::Pending { since } = c.state {
            c.state = ConnState::Authenticating { since };
        }
        self.mark_dirty(idx);
    }

    /// Queues an AUTH behind the session's other output.
    fn send_session_auth(&mut self, idx: usize, auth: Auth, now: Instant) {
        let Some(key) = self.conns.get(idx).and_then(|c| c.session()) else { return };
        if let Some(slot) = self.sessions.get_mut(key) {
            slot.session.send_auth(auth);
        }
        self.service_session(key, now);
    }

    /// Refuses the CONNECT being authenticated (CONNACK `code`, then close).
    fn refuse_pending(&mut self, idx: usize, state: &ConnAuth, code: ReasonCode) {
        match &state.pending {
            Some(p) => self.refuse(idx, &p.connect, code),
            None => self.close_later(idx),
        }
    }

    /// Re-authentication named a new username: hooks see it from now on.
    fn rename_client(&mut self, idx: usize, username: String) {
        let Some(key) = self.conns.get(idx).and_then(|c| c.session()) else { return };
        let Some(state) = self.clients.get_mut(&key) else { return };
        if state.info.identity.username.as_deref() == Some(username.as_str()) {
            return;
        }
        let info = ClientInfo {
            identity: ClientIdentity {
                username: Some(username),
                client_id: state.info.identity.client_id.clone(),
            },
            ..(*state.info).clone()
        };
        state.info = Arc::new(info);
    }
}
