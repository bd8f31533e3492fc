//! The Shoal MQTT broker runtime.
//!
//! [`Broker::start`] turns a [`Config`] into listening sockets and one mio event loop
//! thread per worker; [`Broker::shutdown`] (or dropping the `Broker`) stops them
//! gracefully. The protocol itself (codec, topics, session state) is `shoal-core`; this
//! crate owns sockets, threads, routing between workers and the stores.
//!
//! # Layout
//! - `config`: the only reader of config files; validated [`Config`].
//! - `worker`: one event loop (`mod.rs`), its connections (`conn.rs`), accepting
//!   (`listener.rs`), CONNECT and takeover (`connect.rs`), routing and delivery
//!   (`delivery.rs`).
//! - `route`: messages between workers and the client-id home-worker rule.
//! - `store`: the session and retained-message store traits and in-memory stores.
//! - `log_output`: the binary's log writer; workers write their lines once per iteration.
//!
//! See `docs/ARCHITECTURE.md` for who owns what.

pub mod admin;
pub mod auth;
#[doc(hidden)]
pub mod bench_support;
pub mod config;
mod control;
mod idhash;
pub mod log_output;
pub mod metrics;
pub mod persist;
pub mod proxy;
mod route;
pub mod store;
pub mod tls;
mod worker;
pub mod ws;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

pub use config::{Config, ConfigError};

use admin::AdminServer;
use auth::{FileAuth, HookChain, Hooks};
use route::Peer;
use store::{MemoryRetainedStore, RetainedStore};

/// The worker, of `workers`, that the session of client id `name` lives on; for a
/// shared subscription's `$share/{group}/{filter}`, the worker that matches the group.
/// For tests that must place clients and groups on chosen workers; not a stable API.
#[doc(hidden)]
pub fn home_worker(name: &str, workers: usize) -> usize {
    route::home_worker(name, workers)
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The durable store could not be opened (bad or foreign file, unwritable
    /// directory, I/O error).
    #[error("cannot open the durable store (use --in-memory to run without one)")]
    Persist(#[source] persist::PersistError),
    /// A listener's certificate, key or CA file could not be used.
    #[error("cannot set up TLS for the listener on {addr}")]
    Tls {
        /// The configured address.
        addr: SocketAddr,
        /// What is wrong with which file (boxed: rare, and large).
        #[source]
        source: Box<tls::TlsError>,
    },
    /// The admin listener could not be started.
    #[error("cannot start the admin listener on {addr}")]
    Admin {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The password or ACL file named in `[auth]` could not be loaded.
    #[error("cannot load the [auth] files")]
    Auth(#[from] auth::FileAuthError),
    /// An event loop could not be created or a thread spawned.
    #[error("cannot start worker {worker}")]
    Worker {
        /// Which worker.
        worker: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a graceful shutdown did not complete cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// A worker thread panicked (a bug; the other workers were still stopped).
    #[error("worker {0} panicked")]
    WorkerPanicked(usize),
    /// A worker stopped on an event-loop error.
    #[error("worker {worker} failed")]
    Worker {
        /// Which worker.
        worker: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why part of a [`Broker::reload`] failed. The part that failed keeps what it had.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A TLS listener's certificate, key or CA file could not be used; the listener keeps
    /// its previous certificates.
    #[error("TLS files of the listener on {addr} not reloaded")]
    Tls {
        /// The listener's address.
        addr: SocketAddr,
        /// What is wrong with which file.
        #[source]
        source: Box<tls::TlsError>,
    },
    /// The password or ACL file could not be read or has a bad line; the files in force
    /// before stay.
    #[error("cannot reload the [auth] files (the previous ones stay in force)")]
    Auth(#[source] auth::FileAuthError),
}

/// A running broker. Dropping it shuts it down.
pub struct Broker {
    addrs: Vec<SocketAddr>,
    /// The same listener table the workers hold: reload swaps TLS configs in it.
    listeners: Arc<[worker::ListenerSpec]>,
    peers: Vec<Peer>,
    shutdown: Arc<AtomicBool>,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
    /// The durable store's thread; stopped after the workers (it commits what they
    /// submitted last).
    persister: Option<persist::PersisterHandle>,
    admin: Option<AdminServer>,
    /// Every hook the workers call, told `on_stop` once they have stopped.
    hooks: Option<Arc<dyn Hooks>>,
    /// The `[auth]` files, for [`Broker::reload`].
    file_auth: Option<Arc<FileAuth>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("addrs", &self.addrs).finish_non_exhaustive()
    }
}

impl Broker {
    /// Binds every listener, starts the workers and returns once they are listening.
    ///
    /// # Errors
    /// [`StartError::Bind`] when an address cannot be bound, [`StartError::Worker`] when
    /// an event loop cannot be set up.
    pub fn start(config: Config) -> Result<Broker, StartError> {
        Self::start_inner(config, None, None)
    }

    /// As [`Broker::start`], with an application's [`Hooks`] consulted at accept,
    /// CONNECT, SUBSCRIBE, PUBLISH, delivery, disconnect and stop (see
    /// `docs/HOOKS.md` for the threading contract: hooks run on the event loops and must
    /// not block).
    ///
    /// The hooks run after the per-address connection rate limit and before the
    /// password and ACL files of `[auth]`; the first that refuses decides.
    ///
    /// # Errors
    /// As [`Broker::start`].
    pub fn start_with_hooks(config: Config, hooks: Arc<dyn Hooks>) -> Result<Broker, StartError> {
        Self::start_inner(config, Some(hooks), None)
    }

    /// As [`Broker::start`], with the durable store's options (its channel size, a
    /// fault injector that makes commits fail or wait) instead of the defaults: for
    /// tests that need a slow or failing disk. Ignored without `persistence`.
    ///
    /// # Errors
    /// As [`Broker::start`].
    #[doc(hidden)]
    pub fn start_with_store_options(
        config: Config,
        options: persist::PersistOptions,
    ) -> Result<Broker, StartError> {
        Self::start_inner(config, None, Some(options))
    }

    fn start_inner(
        config: Config,
        app: Option<Arc<dyn Hooks>>,
        store_options: Option<persist::PersistOptions>,
    ) -> Result<Broker, StartError> {
        let auth_configured = config.auth != auth::FileAuthSettings::default();
        let file_auth = if auth_configured {
            Some(Arc::new(FileAuth::new(config.auth.clone())?))
        } else {
            None
        };
        let mut chain = HookChain::new();
        let rate = config.broker_limits.max_connection_rate_per_ip;
        if rate > 0 {
            chain.push(Arc::new(auth::rate::ConnectionRateLimit::new(rate)));
        }
        if let Some(app) = app {
            chain.push(app);
        }
        if let Some(f) = &file_auth {
            chain.push(f.clone());
        }
        let hooks: Option<Arc<dyn Hooks>> =
            if chain.is_empty() { None } else { Some(Arc::new(chain)) };
        let mut listeners = Vec::with_capacity(config.listeners.len());
        let mut addrs = Vec::with_capacity(config.listeners.len());
        let mut specs = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let spec = worker::ListenerSpec::new(l, config.limits.max_packet_bytes)
                .map_err(|e| StartError::Tls { addr: l.bind, source: Box::new(e) })?;
            specs.push(spec);
            let bind_err = |source| StartError::Bind { addr: l.bind, source };
            let listener = std::net::TcpListener::bind(l.bind).map_err(bind_err)?;
            listener.set_nonblocking(true).map_err(bind_err)?;
            addrs.push(listener.local_addr().map_err(bind_err)?);
            listeners.push(listener);
        }
        let workers = config.workers.max(1);
        let listener_names: Vec<String> = config
            .listeners
            .iter()
            .zip(&addrs)
            .map(|(l, addr)| format!("{}://{addr}", l.transport))
            .collect();
        let metrics = Arc::new(metrics::Metrics::new(
            std::time::Instant::now(),
            workers,
            listener_names.clone(),
        ));
        let store = if config.persistence.enabled {
            let dir = &config.persistence.data_dir;
            let options = persist::PersistOptions {
                metrics: Some(metrics.clone()),
                queue_bytes: config.persistence.queue_bytes,
                ..store_options.unwrap_or_default()
            };
            let (handle, recovered) =
                persist::Persister::start(dir, options).map_err(StartError::Persist)?;
            Some((handle, recovered))
        } else {
            None
        };
        let (persister, recovered) = match store {
            Some((h, r)) => (Some(h), Some(r)),
            None => (None, None),
        };
        let retained: Arc<dyn RetainedStore> = Arc::new(MemoryRetainedStore::default());
        if let Some(r) = &recovered {
            let now = std::time::Instant::now();
            let now_unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            for (_, m) in &r.retained {
                retained.set(Arc::new(worker::recovered_message(m, now, now_unix)));
            }
        }
        let shutdown = Arc::new(AtomicBool::new(false));
        let sys_secs = config.admin.sys_interval_secs;
        let shared = worker::Shared {
            retained: retained.clone(),
            connections: Arc::new(AtomicUsize::new(0)),
            lingering: Arc::new(AtomicUsize::new(0)),
            shutdown: shutdown.clone(),
            wills_routed: Arc::new(AtomicUsize::new(0)),
            limits: Arc::new(config.limits),
            broker_limits: config.broker_limits,
            workers,
            share_strategy: config.mqtt.share_strategy,
            interest: Arc::new(worker::Interest::new(workers)),
            listeners: specs.into(),
            metrics: metrics.clone(),
            ops: worker::OpsSettings {
                sys_interval: (sys_secs > 0).then(|| std::time::Duration::from_secs(sys_secs)),
                client_events: config.admin.client_events,
                listener_names: listener_names.into(),
            },
            hooks: hooks.clone(),
        };
        let listener_specs = shared.listeners.clone();
        let mut prepared = Vec::with_capacity(workers);
        for id in 0..workers {
            let w = worker::Worker::new(id, &listeners, shared.clone())
                .map_err(|source| StartError::Worker { worker: id, source })?;
            prepared.push(w);
        }
        let peers: Vec<Peer> = prepared.iter().map(worker::Worker::peer).collect();
        if let (Some(handle), Some(recovered)) = (&persister, recovered) {
            // Recovery before any listener is served: each session goes to its client
            // id's home worker, with its subscriptions in that worker's trie.
            let durable = Arc::new(worker::DurableShared::new(workers));
            let mut by_worker: Vec<Vec<persist::RecoveredSession>> =
                (0..workers).map(|_| Vec::new()).collect();
            for s in recovered.sessions {
                if let Some(list) = by_worker.get_mut(route::home_worker(&s.client_id, workers)) {
                    list.push(s);
                }
            }
            let mut wills_by_worker: Vec<Vec<(String, persist::StoredWill)>> =
                (0..workers).map(|_| Vec::new()).collect();
            for (id, will) in recovered.ended_wills {
                if let Some(list) = wills_by_worker.get_mut(route::home_worker(&id, workers)) {
                    list.push((id, will));
                }
            }
            for ((w, sessions), wills) in prepared.iter_mut().zip(by_worker).zip(wills_by_worker) {
                let waker = w.peer().waker;
                let link = handle.link(Arc::new(move || {
                    let _ = waker.wake();
                }));
                w.set_durable(link, durable.clone());
                w.restore_sessions(sessions);
                w.restore_ended_wills(wills);
            }
            log::info!(
                "durable store {}: {} sessions, {} queued and {} retained messages restored in {:?}",
                config.persistence.data_dir.display(),
                recovered.report.sessions,
                recovered.report.queued,
                recovered.report.retained,
                recovered.report.duration
            );
        }
        let links = prepared.iter().map(worker::Worker::control).collect();
        let mut broker = Broker {
            addrs,
            listeners: listener_specs,
            peers: peers.clone(),
            shutdown,
            threads: Vec::new(),
            persister,
            admin: None,
            hooks,
            file_auth,
        };
        // Each worker behind a lock its own thread holds while it handles events; a
        // peer may take it while the thread waits (see `Worker::run`).
        let cells: Vec<Arc<parking_lot::Mutex<worker::Worker>>> =
            prepared.into_iter().map(|w| Arc::new(parking_lot::Mutex::new(w))).collect();
        let mut peers = peers;
        for (peer, cell) in peers.iter_mut().zip(&cells) {
            peer.cell = Arc::downgrade(cell);
        }
        let now = std::time::Instant::now();
        for cell in &cells {
            cell.lock().set_peers(peers.clone());
        }
        for cell in &cells {
            cell.lock().publish_wills_owed_at_start(now);
        }
        for cell in cells {
            let id = cell.lock().id();
            let handle = std::thread::Builder::new()
                .name(format!("shoal-worker-{id}"))
                .spawn(move || worker::Worker::run(&cell))
                .map_err(|source| StartError::Worker { worker: id, source })?;
            broker.threads.push(handle);
        }
        let limits = &config.limits;
        if limits.max_queued_bytes != 0 && limits.max_queued_bytes < limits.max_packet_bytes {
            log::warn!(
                "limits.max_queued_bytes ({}) is below limits.max_packet_size ({}): a message \
                 larger than it is never queued for a slow or offline session (dropped and \
                 counted as queue_full)",
                limits.max_queued_bytes,
                limits.max_packet_bytes
            );
        }
        if config.admin.enabled {
            let settings = config.admin.settings.clone();
            if settings.token.is_empty() {
                log::warn!("[admin] has no token: every /api request is refused (401)");
            }
            let backend = control::BrokerAdmin {
                links,
                metrics,
                retained,
                config: control::config_json(&config),
            };
            let addr = settings.bind;
            // On failure the workers started above are stopped by `Broker`'s drop.
            let server = AdminServer::start(settings, Arc::new(backend))
                .map_err(|source| StartError::Admin { addr, source })?;
            log::info!("admin listener on http://{}", server.local_addr());
            broker.admin = Some(server);
        }
        Ok(broker)
    }

    /// The first listener's bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs.first().copied().unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The admin listener's bound address, when `[admin] enabled`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    /// Every listener's bound address, in config order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// Re-reads the files the broker was started with (what SIGHUP does in the binary):
    /// every TLS listener's certificate, key and CA, and the `[auth]` password and ACL
    /// files. Connected clients are not touched;
    /// new connections get the new files. Returns what failed, each failed part keeping
    /// its previous state (empty: everything reloaded).
    pub fn reload(&self) -> Vec<ReloadError> {
        let mut failed = Vec::new();
        for (spec, &addr) in self.listeners.iter().zip(&self.addrs) {
            if let Some(tls) = &spec.tls {
                match tls.reload() {
                    Ok(()) => log::info!("TLS files of the listener on {addr} reloaded"),
                    Err(e) => failed.push(ReloadError::Tls { addr, source: Box::new(e) }),
                }
            }
        }
        if let Some(f) = &self.file_auth {
            match f.reload() {
                Ok(()) => log::info!("[auth] password and ACL files reloaded"),
                Err(e) => failed.push(ReloadError::Auth(e)),
            }
        }
        failed
    }

    /// Stops accepting, sends MQTT 5 clients DISCONNECT 0x8B, flushes what is owed
    /// within a bounded time and joins every worker.
    ///
    /// # Errors
    /// The first worker that failed or panicked (all are joined regardless).
    pub fn shutdown(mut self) -> Result<(), ShutdownError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), ShutdownError> {
        if let Some(admin) = self.admin.take() {
            admin.shutdown();
        }
        self.shutdown.store(true, Ordering::SeqCst);
        for p in &self.peers {
            // A failed wake only matters if the worker is blocked in poll, and then its
            // tick still sees the flag within a second.
            let _ = p.waker.wake();
        }
        let mut result = Ok(());
        for (worker, handle) in self.threads.drain(..).enumerate() {
            let outcome = match handle.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(source)) => Err(ShutdownError::Worker { worker, source }),
                Err(_) => Err(ShutdownError::WorkerPanicked(worker)),
            };
            if result.is_ok() {
                result = outcome;
            }
        }
        // Workers first, then the store: it commits what they submitted last.
        if let Some(persister) = self.persister.take() {
            if let Err(e) = persister.shutdown() {
                log::error!("durable store: {e}");
            }
        }
        if let Some(h) = self.hooks.take() {
            h.on_stop();
        }
        result
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            if let Err(e) = self.stop() {
                log::error!("shutdown: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
