//! The admin listener: Prometheus `/metrics`, the JSON admin API (`/api/...`, see
//! `docs/ADMIN-API.md`) and the web dashboard (`/`), on one HTTP/1.1 socket.
//!
//! It runs on threads of its own, off the hot path, with no async runtime: one thread
//! accepts, and each connection is served by a short-lived thread (at most
//! [`MAX_CONCURRENT`] at once; beyond that a connection gets 503 at once) with read
//! and write timeouts, so a slow or hostile client holds one thread for a bounded time
//! and never a worker. Every request is answered from an [`AdminBackend`], the broker's
//! side of the conversation.
//!
//! The HTTP layer is hand-written on `std::net` with `httparse` for the request head:
//! the listener needs one request per connection, fixed limits and no TLS (it binds to
//! loopback by default), which is less code than adapting a server crate's thread pool
//! and keep-alive handling, and every byte of input handling stays in code we test.
//!
//! Neighbours: request reading and response writing are `http.rs`, routing and the
//! JSON shapes `api.rs`, the embedded page `dashboard.rs`; the numbers come from
//! `crate::metrics`. Config parsing of `[admin]` belongs in `config/`.

mod api;
mod dashboard;
mod http;

use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use api::{
    redact, AdminBackend, AdminError, AdminPublish, ClientDetail, ClientInfo, ClientPage,
    ClientQuery, ClientSubscription, RetainedInfo, SubscriptionInfo, DEFAULT_LIMIT, MAX_LIMIT,
};

/// Default admin bind address: loopback only.
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:8080";
/// Connections served at once; more get 503.
pub const MAX_CONCURRENT: usize = 16;
/// How long a client may take to send its request, and to read the response.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin listener needs from the config (`[admin]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// Address to bind; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Bearer token for `/api/...`. Empty: every API request is refused (401).
    pub token: String,
    /// Whether `/metrics` needs the token too (default: no, for scrapers on loopback).
    pub metrics_require_token: bool,
    /// WebSocket URL of the broker for the dashboard's "try it" panel (e.g.
    /// `ws://127.0.0.1:8083/mqtt`); `None` when no ws listener is configured.
    pub ws_url: Option<String>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            token: String::new(),
            metrics_require_token: false,
            ws_url: None,
        }
    }
}

/// A running admin listener. Dropping it stops it.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl AdminServer {
    /// Binds `settings.bind` and starts serving `backend`.
    ///
    /// # Errors
    /// The bind error, or a failure to spawn the accept thread.
    pub fn start(
        settings: AdminSettings,
        backend: Arc<dyn AdminBackend>,
    ) -> io::Result<AdminServer> {
        let listener = TcpListener::bind(settings.bind)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Context { settings, backend, active: AtomicUsize::new(0) });
        let thread = std::thread::Builder::new().name("shoal-admin".into()).spawn({
            let stop = stop.clone();
            move || accept_loop(&listener, &stop, &ctx)
        })?;
        Ok(AdminServer { addr, stop, thread: Some(thread) })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and joins the accept thread. Connections being served finish
    /// on their own threads (bounded by [`IO_TIMEOUT`]).
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() {
                Ipv4Addr::LOCALHOST.into()
            } else {
                Ipv6Addr::LOCALHOST.into()
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("admin accept thread panicked");
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_now();
        }
    }
}

/// Shared by the accept thread and the connection threads.
struct Context {
    settings: AdminSettings,
    backend: Arc<dyn AdminBackend>,
    /// Connection threads running now, for [`MAX_CONCURRENT`].
    active: AtomicUsize,
}

/// Decrements `active` when a connection thread ends, however it ends.
struct ActiveGuard(Arc<Context>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(listener: &TcpListener, stop: &AtomicBool, ctx: &Arc<Context>) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let mut stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and the like: back off briefly instead of spinning.
                log::warn!("admin listener: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        if ctx.active.fetch_add(1, Ordering::SeqCst) >= MAX_CONCURRENT {
            ctx.active.fetch_sub(1, Ordering::SeqCst);
            let _ = stream
                .write_all(&http::Response::error(503, "too many admin connections").to_bytes());
            continue;
        }
        let guard = ActiveGuard(ctx.clone());
        let spawned = std::thread::Builder::new()
            .name("shoal-admin-conn".into())
            .spawn(move || serve(stream, &guard.0));
        if let Err(e) = spawned {
            // The closure (and its guard) was dropped, so `active` is already restored.
            log::warn!("admin listener: cannot spawn a connection thread: {e}");
        }
    }
}

fn serve(mut stream: TcpStream, ctx: &Context) {
    let response = match http::read_request(&mut stream) {
        Ok(req) => api::route(&req, &ctx.settings, ctx.backend.as_ref()),
        Err(http::ReadError::Io(e))
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
        {
            http::Response::error(408, "request not received in time")
        }
        Err(http::ReadError::Io(_)) => return,
        Err(http::ReadError::Incomplete) => http::Response::error(400, "incomplete HTTP request"),
        Err(http::ReadError::Malformed) => http::Response::error(400, "malformed HTTP request"),
        Err(http::ReadError::HeadTooLarge) => http::Response::error(431, "request head too large"),
        Err(http::ReadError::BodyTooLarge) => http::Response::error(413, "request body too large"),
        Err(http::ReadError::LengthRequired) => {
            http::Response::error(411, "send the body with Content-Length, not chunked")
        }
    };
    let _ = stream.write_all(&response.to_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // Drain what the client still sends (briefly), so closing does not turn into a
    // reset that discards the response before the client reads it.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 1024];
    for _ in 0..64 {
        match io::Read::read(&mut stream, &mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests;
