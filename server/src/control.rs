//! The broker's side of the admin API: [`BrokerAdmin`] implements
//! [`AdminBackend`] by asking the workers.
//!
//! Each worker has a small bounded control channel of its own (apart from the publish
//! channel, so admin queries are answered even while publish batches are held back by
//! back-pressure) and is woken through its `mio::Waker`. A query carries a bounded
//! reply channel; the admin thread waits for the answers at most [`REPLY_TIMEOUT`] and
//! answers 503 past it. A worker never blocks on an admin query: it `try_send`s its
//! answer, and a full control channel is refused on the admin side at once.
//!
//! Retained messages are read and deleted directly in the shared retained store (it is
//! built for concurrent readers); metrics come from the shared [`Metrics`] slots.
//!
//! Neighbours: the HTTP layer and JSON shapes are `admin/`; the worker side of each
//! query is `worker/ops.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use shoal_core::session::Message;
use shoal_core::{TopicFilter, TopicName};

use crate::admin::{
    AdminBackend, AdminError, AdminPublish, ClientDetail, ClientInfo, ClientPage, ClientQuery,
    RetainedInfo, SubscriptionInfo,
};
use crate::config::Config;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::route::home_worker;
use crate::store::RetainedStore;

/// Queries a worker's control channel holds; more are refused (503).
pub(crate) const CONTROL_CAPACITY: usize = 64;
/// Queries a worker answers per loop iteration.
pub(crate) const CONTROL_PER_ITERATION: usize = 8;
/// How long the admin listener waits for the workers' answers.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// A question to one worker. Each carries its reply channel (bounded, so a worker's
/// `try_send` never blocks).
pub(crate) enum AdminQuery {
    /// Clients matching `search`: how many, and the first `keep` by id.
    Clients { search: String, keep: usize, reply: Sender<(usize, Vec<ClientInfo>)> },
    /// One client, asked of its home worker.
    Client { id: String, reply: Sender<Option<ClientDetail>> },
    /// Disconnect one client; `true` if it was connected.
    Disconnect { id: String, reply: Sender<bool> },
    /// Subscriptions whose filter contains `filter`: the first `keep`.
    Subscriptions { filter: String, keep: usize, reply: Sender<Vec<SubscriptionInfo>> },
    /// Route a message as the broker itself.
    Publish { message: Box<Message>, reply: Sender<()> },
}

/// How the admin side reaches one worker.
#[derive(Clone)]
pub(crate) struct ControlLink {
    pub(crate) tx: Sender<AdminQuery>,
    pub(crate) waker: Arc<mio::Waker>,
}

/// A worker's control channel: the link for the admin side, the receiver for it.
pub(crate) fn control_channel(waker: Arc<mio::Waker>) -> (ControlLink, Receiver<AdminQuery>) {
    let (tx, rx) = crossbeam_channel::bounded(CONTROL_CAPACITY);
    (ControlLink { tx, waker }, rx)
}

/// The [`AdminBackend`] of a running broker.
pub(crate) struct BrokerAdmin {
    pub(crate) links: Vec<ControlLink>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) retained: Arc<dyn RetainedStore>,
    /// The effective config, as JSON (secrets already redacted).
    pub(crate) config: serde_json::Value,
}

fn unavailable() -> AdminError {
    AdminError::Unavailable("the broker did not answer in time".into())
}

impl BrokerAdmin {
    /// Hands `query` to worker `w` and wakes it.
    fn send(&self, w: usize, query: AdminQuery) -> Result<(), AdminError> {
        let link = self.links.get(w).ok_or_else(unavailable)?;
        match link.tx.try_send(query) {
            Ok(()) => {
                let _ = link.waker.wake();
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                Err(AdminError::Unavailable("the broker is busy; try again".into()))
            }
            Err(TrySendError::Disconnected(_)) => {
                Err(AdminError::Unavailable("the broker is shutting down".into()))
            }
        }
    }

    /// Asks every worker `make(reply)` and collects their answers.
    fn ask_all<T>(&self, make: impl Fn(Sender<T>) -> AdminQuery) -> Result<Vec<T>, AdminError> {
        let workers = self.links.len();
        let (tx, rx) = crossbeam_channel::bounded(workers.max(1));
        for w in 0..workers {
            self.send(w, make(tx.clone()))?;
        }
        drop(tx);
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut out = Vec::with_capacity(workers);
        while out.len() < workers {
            out.push(rx.recv_deadline(deadline).map_err(|_| unavailable())?);
        }
        Ok(out)
    }

    /// Asks worker `w` one query and waits for its answer.
    fn ask_one<T>(
        &self,
        w: usize,
        make: impl FnOnce(Sender<T>) -> AdminQuery,
    ) -> Result<T, AdminError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(w, make(tx))?;
        rx.recv_timeout(REPLY_TIMEOUT).map_err(|_| unavailable())
    }

    /// The home worker of client id `id`.
    fn home(&self, id: &str) -> usize {
        home_worker(id, self.links.len())
    }
}

impl AdminBackend for BrokerAdmin {
    fn stats(&self) -> MetricsSnapshot {
        self.metrics.snapshot(Instant::now())
    }

    fn clients(&self, query: &ClientQuery) -> ClientPage {
        let keep = query.offset.saturating_add(query.limit);
        let answers = self
            .ask_all(|reply| AdminQuery::Clients { search: query.search.clone(), keep, reply })
            .unwrap_or_default();
        let total = answers.iter().map(|(n, _)| n).sum();
        let mut clients: Vec<ClientInfo> = answers.into_iter().flat_map(|(_, c)| c).collect();
        clients.sort_by(|a, b| a.id.cmp(&b.id));
        let clients = clients.into_iter().skip(query.offset).take(query.limit).collect();
        ClientPage { total, clients }
    }

    fn client(&self, id: &str) -> Option<ClientDetail> {
        let owned = id.to_owned();
        self.ask_one(self.home(id), |reply| AdminQuery::Client { id: owned, reply }).ok().flatten()
    }

    fn disconnect(&self, id: &str) -> Result<(), AdminError> {
        let owned = id.to_owned();
        if self.ask_one(self.home(id), |reply| AdminQuery::Disconnect { id: owned, reply })? {
            Ok(())
        } else {
            Err(AdminError::NotFound(format!("client `{id}` is not connected")))
        }
    }

    fn subscriptions(&self, filter: &str, limit: usize, offset: usize) -> Vec<SubscriptionInfo> {
        let keep = offset.saturating_add(limit);
        let answers = self
            .ask_all(|reply| AdminQuery::Subscriptions { filter: filter.to_owned(), keep, reply })
            .unwrap_or_default();
        let mut rows: Vec<SubscriptionInfo> = answers.into_iter().flatten().collect();
        rows.sort_by(|a, b| (&a.client_id, &a.filter).cmp(&(&b.client_id, &b.filter)));
        rows.into_iter().skip(offset).take(limit).collect()
    }

    fn retained(&self, filter: &TopicFilter, limit: usize) -> Vec<RetainedInfo> {
        let mut rows = Vec::new();
        self.retained.for_each_matching(filter, &mut |m| {
            if rows.len() < limit {
                rows.push(RetainedInfo {
                    topic: m.topic.as_str().to_owned(),
                    qos: m.qos,
                    payload: m.payload.clone(),
                });
            }
        });
        rows.sort_by(|a, b| a.topic.cmp(&b.topic));
        rows
    }

    fn delete_retained(&self, topic: &TopicName) -> Result<(), AdminError> {
        let filter = TopicFilter::parse(topic.as_str())
            .map_err(|e| AdminError::BadRequest(format!("not a topic: {e}")))?;
        let mut found = false;
        self.retained.for_each_matching(&filter, &mut |_| found = true);
        if !found {
            return Err(AdminError::NotFound(format!(
                "no retained message on `{}`",
                topic.as_str()
            )));
        }
        self.retained.remove(topic);
        Ok(())
    }

    fn publish(&self, msg: AdminPublish) -> Result<(), AdminError> {
        let message = Message {
            topic: msg.topic,
            payload: msg.payload,
            qos: msg.qos,
            retain: msg.retain,
            properties: None,
            expires_at: None,
            publisher: None,
        };
        // Any worker routes a message to all of them; worker 0 is as good as another.
        self.ask_one(0, |reply| AdminQuery::Publish { message: Box::new(message), reply })
    }

    fn config_json(&self) -> serde_json::Value {
        self.config.clone()
    }
}

/// The effective config as the admin API shows it (`GET /api/config`): every resolved
/// value, the admin token left out. Whoever adds a config section adds it here.
pub(crate) fn config_json(config: &Config) -> serde_json::Value {
    let l = &config.limits;
    let b = &config.broker_limits;
    let a = &config.admin;
    serde_json::json!({
        "workers": config.workers,
        "listener": config.listeners.iter().map(|x| serde_json::json!({
            "bind": x.bind.to_string(),
            "transport": x.transport.to_string(),
        })).collect::<Vec<_>>(),
        "limits": {
            "max_connections": b.max_connections,
            "max_packet_size": l.max_packet_bytes,
            "max_inflight": l.max_inflight,
            "max_queued_messages": l.max_queued_messages,
            "max_queued_bytes": l.max_queued_bytes,
            "max_topic_levels": l.max_topic_levels,
            "max_subscriptions_per_client": l.max_subscriptions,
            "max_outgoing_bytes": b.max_outgoing_bytes,
            "connect_timeout_secs": b.connect_timeout.as_secs(),
            "max_keep_alive_secs": b.max_keep_alive_secs,
        },
        "persistence": config.persistence.enabled,
        "data_dir": config.persistence.data_dir.display().to_string(),
        "admin": {
            "enabled": a.enabled,
            "bind": a.settings.bind.to_string(),
            "token": if a.settings.token.is_empty() { None } else { Some("<redacted>") },
            "metrics_require_token": a.settings.metrics_require_token,
            "ws_url": a.settings.ws_url,
            "sys_interval_secs": a.sys_interval_secs,
            "client_events": a.client_events,
        },
    })
}
