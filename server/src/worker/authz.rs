//! Where the worker asks the [`Hooks`](crate::auth::Hooks) (password and ACL files, an
//! application's hooks, the connection rate limit) and enforces the per-client publish
//! rate: at accept, CONNECT, SUBSCRIBE, PUBLISH, delivery and the end of a connection.
//!
//! Without hooks and publish limits (`Shared::hooks` is `None`, no rate configured)
//! every check here is one `Option` test and nothing is stored per client: the publish
//! and delivery paths make no virtual call.
//!
//! The verdicts become packets in `shoal-core` (`Session::handle_publish_refused`,
//! `Session::handle_subscribe_checked`); the hook trait and its threading contract are
//! in `auth/hooks.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use shoal_core::codec::{Connect, Publish, Subscribe};
use shoal_core::session::LinkLoss;
use shoal_core::topic::Subscription;
use shoal_core::{QoS, ReasonCode, TopicName};

use super::enhanced::Authenticated;
use super::interest::TopicProbe;
use super::Worker;
use crate::auth::rate::{PublishRate, PublishRateExceeded};
use crate::auth::{
    ClientIdentity, ClientInfo, ConnectInfo, DisconnectReason, PublishDecision, SubscribeDecision,
};
use crate::metrics::DropCause;
use crate::store::{SessionKey, SessionStore};

/// What the worker keeps per session while hooks or publish limits are configured.
#[derive(Debug)]
pub(super) struct ClientState {
    /// Who the hooks see. Kept while a persistent session is offline, so that messages
    /// queued for it are checked against the identity that subscribed.
    pub(super) info: Arc<ClientInfo>,
    /// Publish buckets of the current connection, when limits are configured.
    rate: Option<PublishRate>,
}

impl Worker {
    /// Whether anything here is configured (else nothing is stored or called).
    fn policy_active(&self) -> bool {
        self.shared.hooks.is_some() || self.shared.broker_limits.publish_rate.is_limited()
    }

    /// `on_accept` for a new socket: `false` closes it.
    pub(super) fn admit_socket(&self, peer: SocketAddr) -> bool {
        match &self.shared.hooks {
            Some(h) => h.on_accept(peer),
            None => true,
        }
    }

    /// Authenticates a CONNECT on the home worker, before any session is touched (a
    /// refused client must not take over a session). A will is checked like a PUBLISH
    /// to its topic: a client may not leave a will where it may not publish.
    ///
    /// # Errors
    /// The CONNACK code to refuse with.
    pub(super) fn authenticate(
        &self,
        idx: usize,
        connect: &Connect,
        client_id: &str,
        enhanced: Option<&Authenticated>,
    ) -> Result<Option<Arc<ClientInfo>>, ReasonCode> {
        if !self.policy_active() {
            return Ok(None);
        }
        let Some(conn) = self.conns.get(idx) else { return Err(ReasonCode::UnspecifiedError) };
        // A verified client certificate names the client (listener `username_from`);
        // the CONNECT User Name is then ignored.
        let cert_username = conn.cert_username();
        let info = ConnectInfo {
            peer: conn.addr,
            protocol: connect.protocol,
            client_id,
            username: connect.username.as_deref(),
            password: connect.password.as_deref(),
            cert_username: cert_username.as_deref(),
            auth_method: enhanced.map(|a| a.method.as_str()),
            auth_username: enhanced.and_then(|a| a.username.as_deref()),
        };
        let client = Arc::new(ClientInfo {
            identity: ClientIdentity {
                username: info.effective_username().map(str::to_owned),
                client_id: client_id.to_owned(),
            },
            peer: conn.addr,
            protocol: connect.protocol,
        });
        if let Some(h) = &self.shared.hooks {
            let code = h.on_connect(&info);
            if code != ReasonCode::Success {
                return Err(code);
            }
            if let Some(will) = &connect.will {
                let decision = h.on_publish(&client, &will.topic, will.qos, will.retain);
                if decision != PublishDecision::Allow {
                    log::info!(
                        "client {client_id} from {}: will topic {} not authorised",
                        conn.addr,
                        will.topic.as_str()
                    );
                    return Err(ReasonCode::NotAuthorized);
                }
            }
        }
        Ok(Some(client))
    }

    /// Remembers an accepted client's identity and fresh publish buckets.
    pub(super) fn remember_client(
        &mut self,
        key: SessionKey,
        info: Option<Arc<ClientInfo>>,
        now: Instant,
    ) {
        let Some(info) = info else { return };
        let limits = self.shared.broker_limits.publish_rate;
        let rate = limits.is_limited().then(|| PublishRate::new(limits, now));
        self.clients.insert(key, ClientState { info, rate });
    }

    /// `on_disconnect` for a session's connection that ended with `reason`.
    pub(super) fn client_disconnected(&mut self, key: SessionKey, reason: ReasonCode) {
        let Some(h) = &self.shared.hooks else { return };
        let Some(state) = self.clients.get(&key) else { return };
        let why = match reason {
            ReasonCode::Success => DisconnectReason::Client(ReasonCode::Success),
            // What the session reports for a socket that closed without DISCONNECT.
            ReasonCode::UnspecifiedError => DisconnectReason::ConnectionLost,
            other => DisconnectReason::Server(other),
        };
        h.on_disconnect(&state.info, why);
    }

    /// Forgets a discarded session's client.
    pub(super) fn client_discarded(&mut self, key: SessionKey) {
        if !self.clients.is_empty() {
            self.clients.remove(&key);
        }
    }

    /// `on_deliver`: whether `key`'s client may receive a message on `topic`.
    pub(super) fn may_deliver(&self, key: SessionKey, topic: &TopicName) -> bool {
        match (&self.shared.hooks, self.clients.get(&key)) {
            (Some(h), Some(state)) => h.on_deliver(&state.info, topic),
            _ => true,
        }
    }

    /// A client's PUBLISH to `$SYS`: acknowledged (v5 with 0x87 Not authorized) and
    /// dropped, like an ACL refusal.
    pub(super) fn refuse_sys_publish(&mut self, key: SessionKey, publish: Publish, now: Instant) {
        let Some(slot) = self.sessions.get_mut(key) else { return };
        log::debug!(
            "publish by {} to {} dropped: $SYS is the broker's",
            slot.session.client_id(),
            publish.topic.as_str()
        );
        self.counters.on_dropped(DropCause::Acl);
        slot.session.handle_publish_refused(now, &publish, ReasonCode::NotAuthorized);
        self.service_session(key, now);
    }

    /// While the durable store cannot write: a QoS 1/2 PUBLISH that would need it is
    /// refused without routing (v5: PUBACK/PUBREC 0x97 Quota exceeded; 3.x: no
    /// acknowledgement, and a log line), so nothing is acknowledged that a crash could
    /// lose. Returns the packet when it is to be handled as usual: it needs no disk
    /// (QoS 0, or only clean sessions match), or it is a QoS 2 resend already taken.
    pub(super) fn check_storable(
        &mut self,
        key: SessionKey,
        mut publish: Publish,
        now: Instant,
    ) -> Option<Publish> {
        let Some(slot) = self.sessions.get_mut(key) else { return Some(publish) };
        // The real topic decides; a bad alias is the session's to refuse.
        if slot.session.resolve_topic_alias(&mut publish).is_err() || !self.needs_disk(&publish) {
            return Some(publish);
        }
        let Some(slot) = self.sessions.get_mut(key) else { return Some(publish) };
        if !slot.session.handle_publish_unstorable(now, &publish, ReasonCode::QuotaExceeded) {
            return Some(publish);
        }
        self.counters.on_dropped(DropCause::StoreUnavailable);
        let client = slot.session.client_id().clone();
        let v5 = slot.session.version().is_some_and(|v| v.is_v5());
        if let Some(d) = self.durable.as_mut() {
            d.note_refusal(now, &client, &publish.topic, v5);
        }
        self.service_session(key, now);
        None
    }

    /// Whether routing `p` (QoS 1/2) would write to the durable store: it is retained,
    /// or a persistent session may receive it at QoS 1/2. This worker's sessions are
    /// matched exactly; another worker's count when it has any persistent session and
    /// its `Interest` may match the topic, as its trie is its own; with shared
    /// subscriptions about, any persistent session may get a group's message
    /// (`Durable::others_may_write`).
    fn needs_disk(&self, p: &Publish) -> bool {
        let Some(d) = self.durable.as_ref() else { return false };
        if p.qos == QoS::AtMostOnce {
            return false;
        }
        if p.retain {
            return true;
        }
        if self.shared.workers > 1
            && d.others_may_write(&self.shared.interest, &TopicProbe::new(p.topic.as_str()))
        {
            return true;
        }
        if d.mirrors.is_empty() {
            return false;
        }
        // Shared groups homed here may hand it to a persistent member.
        if !self.share.is_empty() {
            return true;
        }
        let mut hit = false;
        self.trie.for_each_match(&p.topic, |k, v| {
            hit |= v.qos() != QoS::AtMostOnce && d.mirrors.contains_key(k);
        });
        hit
    }

    /// Checks a PUBLISH against the publish rate and `on_publish`. Returns the packet
    /// when it is to be handled as usual; otherwise it has been refused (acknowledged
    /// without routing) or the connection is closing.
    pub(super) fn check_publish(
        &mut self,
        idx: usize,
        key: SessionKey,
        publish: Publish,
        now: Instant,
    ) -> Option<Publish> {
        let Some(state) = self.clients.get_mut(&key) else { return Some(publish) };
        if let Some(rate) = &mut state.rate {
            let bytes = publish.topic.len().saturating_add(publish.payload.len());
            if let Err(over) = rate.check(bytes, now) {
                let (code, what) = match over {
                    PublishRateExceeded::Messages => {
                        (ReasonCode::MessageRateTooHigh, "max_publish_rate")
                    }
                    PublishRateExceeded::Bytes => {
                        (ReasonCode::QuotaExceeded, "max_publish_bytes_rate")
                    }
                };
                log::warn!(
                    "client {} from {} disconnected: over {what}",
                    state.info.identity.client_id,
                    state.info.peer
                );
                self.link_lost(idx, LinkLoss::Limit(code), now);
                return None;
            }
        }
        let Some(h) = &self.shared.hooks else { return Some(publish) };
        // A v5 Topic Alias is resolved first, so the real topic is what gets checked.
        let mut publish = publish;
        if publish.properties.topic_alias.is_some() || publish.topic.is_empty() {
            let resolved = match self.sessions.get_mut(key) {
                Some(slot) => slot.session.resolve_topic_alias(&mut publish),
                None => Ok(()),
            };
            if let Err(code) = resolved {
                self.link_lost(idx, LinkLoss::Malformed(code), now);
                return None;
            }
        }
        let Some(state) = self.clients.get(&key) else { return Some(publish) };
        match h.on_publish(&state.info, &publish.topic, publish.qos, publish.retain) {
            PublishDecision::Allow => Some(publish),
            PublishDecision::Drop(code) => {
                log::debug!(
                    "publish by {} to {} dropped: {code}",
                    state.info.identity.client_id,
                    publish.topic.as_str()
                );
                self.counters.on_dropped(DropCause::Acl);
                if let Some(slot) = self.sessions.get_mut(key) {
                    slot.session.handle_publish_refused(now, &publish, code);
                }
                self.service_session(key, now);
                None
            }
            PublishDecision::Close(code) => {
                log::info!(
                    "client {} from {} disconnected by a hook on publish to {}: {code}",
                    state.info.identity.client_id,
                    state.info.peer,
                    publish.topic.as_str()
                );
                self.link_lost(idx, LinkLoss::Limit(code), now);
                None
            }
        }
    }

    /// Runs `on_subscribe` for every filter of a SUBSCRIBE and hands it to the session
    /// with the refusals and QoS caps applied. A shared subscription is checked by the
    /// filter after its group; a filter that does not parse is left to the session.
    pub(super) fn check_subscribe(&mut self, key: SessionKey, mut s: Subscribe, now: Instant) {
        let max_levels = self.shared.limits.max_topic_levels;
        let mut refused = Vec::with_capacity(s.filters.len());
        if let (Some(h), Some(state)) = (&self.shared.hooks, self.clients.get(&key)) {
            for f in &mut s.filters {
                let Ok(sub) = Subscription::parse_with_max_levels(&f.filter, max_levels) else {
                    refused.push(None);
                    continue;
                };
                match h.on_subscribe(&state.info, sub.filter(), f.options.qos) {
                    SubscribeDecision::Grant(qos) => {
                        f.options.qos = f.options.qos.min(qos);
                        refused.push(None);
                    }
                    SubscribeDecision::Refuse(code) => {
                        log::debug!(
                            "subscription of {} to {} refused: {code}",
                            state.info.identity.client_id,
                            f.filter
                        );
                        refused.push(Some(code));
                    }
                }
            }
        }
        self.log_subscription_quota(key, &s, &refused);
        if let Some(slot) = self.sessions.get_mut(key) {
            slot.session.handle_subscribe_checked(now, s, &refused);
        }
        self.service_session(key, now);
    }

    /// One log line when a SUBSCRIBE takes a session over its subscription limit (those
    /// filters get SUBACK 0x97 / 0x80 from the session).
    pub(super) fn log_subscription_quota(
        &self,
        key: SessionKey,
        s: &Subscribe,
        refused: &[Option<ReasonCode>],
    ) {
        let Some(slot) = self.sessions.get(key) else { return };
        let max = self.shared.limits.max_subscriptions;
        let held = slot.session.subscriptions().count();
        if held.saturating_add(s.filters.len()) <= max {
            return;
        }
        let mut new: Vec<&str> = Vec::new();
        for (i, f) in s.filters.iter().enumerate() {
            let skip = refused.get(i).copied().flatten().is_some()
                || new.contains(&f.filter.as_str())
                || slot.session.subscriptions().any(|(held, _)| held.as_str() == f.filter);
            if !skip {
                new.push(&f.filter);
            }
        }
        if held.saturating_add(new.len()) > max {
            let over = held.saturating_add(new.len()) - max;
            log::warn!(
                "client {}: subscription limit reached (max_subscriptions_per_client {max}): \
                 {over} filter(s) refused",
                slot.session.client_id()
            );
        }
    }
}

/// Whether `topic` is in the broker's `$SYS` tree (`$SYS` or `$SYS/...`).
pub(super) fn is_sys_topic(topic: &TopicName) -> bool {
    let t = topic.as_str().as_bytes();
    t.first() == Some(&b'$') && t.starts_with(b"$SYS") && matches!(t.get(4), None | Some(&b'/'))
}
