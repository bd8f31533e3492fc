//! One load thread: a `mio::Poll` over its share of the plan's connections.
//!
//! Each loop iteration: read the run phase, start connections the connect-rate limiter
//! allows, let every publisher append and write one batch, then poll (without waiting
//! while a publisher still has work) and handle readiness: read until `WouldBlock`,
//! decode every whole frame, answer acks, write. Counters stay in plain fields and are
//! published to [`Shared`] every few milliseconds; the latency histogram is merged into
//! the shared one once a second and at the end.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use shoal_core::codec::{self, PubAck};
use shoal_core::{Packet, QoS};

use super::conn::{
    Conn, Flush, Layers, Publisher, ReadStatus, RoleState, State, Subscriber, Template, BATCH_BYTES,
};
use super::{Phase, Settings, Shared};
use crate::client::{self, ClientError, MAX_PACKET_BYTES};
use crate::payload::{SeqTracker, Stamp};
use crate::rate::RateLimiter;
use crate::report;
use crate::scenario::{Plan, Role};

/// Most connection handshakes one thread keeps in progress at once.
const MAX_HANDSHAKES: usize = 512;
/// Longest a thread sleeps in `poll` before looking at the phase again.
const MAX_POLL: Duration = Duration::from_millis(10);
/// Longest wait at the end of a run for the broker to close connections after DISCONNECT.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How often handshakes are checked against `--connect-timeout`.
const TIMEOUT_SCAN_NS: u64 = 100 * MS;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

/// Counts over the measured window.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tally {
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) sent_bytes: u64,
    pub(crate) delivered_bytes: u64,
}

/// What a thread hands back when the run stops.
#[derive(Debug, Default)]
pub(crate) struct WorkerResult {
    pub(crate) measured: Tally,
    /// (publisher id, messages written to the socket over the whole run).
    pub(crate) pub_sent: Vec<(u32, u64)>,
    /// (first expected publisher id, trackers, foreign messages) per subscriber.
    pub(crate) subs: Vec<(u32, Vec<SeqTracker>, u64)>,
}

/// What a readiness event reported for one connection.
#[derive(Debug, Clone, Copy)]
struct Readiness {
    readable: bool,
    writable: bool,
    /// Neither a close nor an error was reported (see [`Worker::read`]).
    edge: bool,
}

pub(crate) struct Worker {
    poll: Poll,
    conns: Vec<Conn>,
    plan: Arc<Plan>,
    settings: Arc<Settings>,
    shared: Arc<Shared>,
    /// Slot of this thread in `Shared::inflight`.
    slot: usize,
    next_start: usize,
    connect_limiter: RateLimiter,
    handshakes: usize,
    pubs: Vec<usize>,
    has_subs: bool,
    scratch: Vec<u8>,
    hist: Histogram<u64>,
    tally: Tally,
    sent_all: u64,
    delivered_all: u64,
    errors: u64,
    published: (u64, u64, u64),
    last_house_ns: u64,
    last_hist_ns: u64,
    last_ping_scan_ns: u64,
    last_timeout_scan_ns: u64,
}

impl Worker {
    /// A thread's worker for the plan's connections `specs`.
    pub(crate) fn new(
        slot: usize,
        specs: &[usize],
        plan: Arc<Plan>,
        settings: Arc<Settings>,
        shared: Arc<Shared>,
        conn_rate: Option<f64>,
    ) -> Result<Self, ClientError> {
        let poll =
            Poll::new().map_err(|source| ClientError::Io { context: "creating a poll", source })?;
        let n_pubs = f64::from(plan.publishers.max(1));
        let mut conns = Vec::with_capacity(specs.len());
        let mut pubs = Vec::new();
        let mut has_subs = false;
        for &spec in specs {
            let Some(s) = plan.conns.get(spec) else { continue };
            let role = match &s.role {
                Role::Publisher { id, topic } => {
                    let template = Template::new(
                        topic,
                        settings.qos,
                        settings.payload,
                        settings.client.version,
                    )?;
                    let limiter = match settings.rate {
                        Some(total) => RateLimiter::with_burst_window(total / n_pubs, 0, 2 * MS),
                        None => RateLimiter::unlimited(),
                    };
                    pubs.push(conns.len());
                    RoleState::Pub(Box::new(Publisher::new(
                        *id,
                        template,
                        limiter,
                        settings.inflight,
                    )))
                }
                Role::Subscriber { filter, expect } => {
                    has_subs = true;
                    RoleState::Sub(Subscriber {
                        filter: filter.clone(),
                        first: expect.start,
                        trackers: vec![SeqTracker::default(); expect.len()],
                        foreign: 0,
                    })
                }
                Role::Idle => RoleState::Idle,
            };
            conns.push(Conn::new(spec, role));
        }
        let connect_limiter = match conn_rate {
            Some(r) => RateLimiter::with_burst_window(r, shared.now_ns(), 10 * MS),
            None => RateLimiter::unlimited(),
        };
        Ok(Self {
            poll,
            conns,
            plan,
            settings,
            shared,
            slot,
            next_start: 0,
            connect_limiter,
            handshakes: 0,
            pubs,
            has_subs,
            scratch: vec![0; 256 * 1024],
            hist: report::new_histogram().map_err(|_| ClientError::Unexpected("histogram"))?,
            tally: Tally::default(),
            sent_all: 0,
            delivered_all: 0,
            errors: 0,
            published: (0, 0, 0),
            last_house_ns: 0,
            last_hist_ns: 0,
            last_ping_scan_ns: 0,
            last_timeout_scan_ns: 0,
        })
    }

    /// Runs until the phase is `Stop`, then closes every connection.
    pub(crate) fn run(mut self) -> WorkerResult {
        let mut events = Events::with_capacity(1024);
        // Publishers start their rate schedules when sending starts.
        let mut schedules_started = false;
        let mut settled = false;
        loop {
            let phase = self.shared.phase();
            if phase == Phase::Stop {
                break;
            }
            let mut now = self.shared.now_ns();
            if phase == Phase::Drain && !settled {
                // Nothing more is appended from here on: publish the final counts.
                settled = true;
                self.last_house_ns = 0;
                self.housekeeping(now);
                self.shared.settled.fetch_add(1, Ordering::Release);
            }
            self.start_connects(now);
            let sending = matches!(phase, Phase::Warmup | Phase::Measure);
            if sending && !schedules_started {
                schedules_started = true;
                for &i in &self.pubs {
                    if let Some(RoleState::Pub(p)) = self.conns.get_mut(i).map(|c| &mut c.role) {
                        if let Some(rate) = self.settings.rate {
                            let per = rate / f64::from(self.plan.publishers.max(1));
                            p.limiter = RateLimiter::with_burst_window(per, now, 2 * MS);
                        }
                    }
                }
            }
            let mut wait_ns = MAX_POLL.as_nanos() as u64;
            if sending || phase == Phase::Drain {
                let measuring = phase == Phase::Measure;
                for k in 0..self.pubs.len() {
                    let Some(&i) = self.pubs.get(k) else { continue };
                    if let Some(w) = self.pump(i, now, sending, measuring) {
                        wait_ns = wait_ns.min(w);
                    }
                }
            }
            let timeout = if wait_ns == 0 || wait_ns < MS && !self.has_subs {
                Duration::ZERO
            } else {
                Duration::from_nanos(wait_ns)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.note_error(format!("poll failed: {e}"));
                    break;
                }
            }
            now = self.shared.now_ns();
            let measuring = self.shared.phase() == Phase::Measure;
            for event in events.iter() {
                let idx = event.token().0;
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_error();
                // A short read empties the socket unless a close or error came with the
                // event (then reads go on to the end of the stream).
                let edge = !event.is_read_closed() && !event.is_error();
                self.on_event(idx, Readiness { readable, writable, edge }, now, measuring);
            }
            if timeout.is_zero() && wait_ns > 0 && events.is_empty() {
                // A publisher-only thread paces below the poll's millisecond resolution.
                std::thread::sleep(Duration::from_nanos(wait_ns));
            }
            self.housekeeping(now);
        }
        self.finish()
    }

    fn start_connects(&mut self, now: u64) {
        while self.next_start < self.conns.len() && self.handshakes < MAX_HANDSHAKES {
            if self.connect_limiter.take(now, 1) == 0 {
                break;
            }
            let idx = self.next_start;
            self.next_start += 1;
            self.shared.first_attempt_ns.fetch_min(now, Ordering::Relaxed);
            match self.open_socket(idx) {
                Ok(mut stream) => {
                    let registered = self.poll.registry().register(
                        &mut stream,
                        Token(idx),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    let Some(conn) = self.conns.get_mut(idx) else { continue };
                    conn.stream = Some(stream);
                    conn.state = State::Connecting;
                    conn.started_ns = now;
                    self.handshakes += 1;
                    if let Err(e) = registered {
                        self.fail(idx, format!("cannot register socket: {e}"));
                    } else {
                        self.send_connect_early(idx, now);
                    }
                }
                Err(e) => {
                    if let Some(conn) = self.conns.get_mut(idx) {
                        conn.state = State::Connecting;
                    }
                    self.handshakes += 1;
                    self.fail(idx, format!("connect failed: {e}"));
                }
            }
        }
    }

    /// Writes CONNECT straight after `connect` on a plain connection, as a blocking
    /// client does: over loopback the TCP handshake is usually complete by then, so the
    /// broker finds CONNECT with the new socket, and the writable event, the connect
    /// check and a poll round per connection are saved. A socket still connecting
    /// refuses the write (`WouldBlock`) and takes the ordinary path (its writable event).
    fn send_connect_early(&mut self, idx: usize, now: u64) {
        if self.settings.transport.tls.is_some() || self.settings.transport.ws.is_some() {
            return;
        }
        let mut config = self.settings.client.clone();
        config.client_id = self.client_id(idx);
        let Some(conn) = self.conns.get_mut(idx) else { return };
        if let Err(e) = conn.queue(&config.connect_packet(), config.version) {
            return self.fail(idx, e.to_string());
        }
        let queued = conn.wbuf.len();
        match conn.flush(now) {
            Ok(Flush::Done) => {
                conn.state = State::AwaitConnAck;
                conn.writable = true;
            }
            Ok(Flush::Blocked | Flush::Waiting) if conn.wbuf.len() == queued => {
                // Nothing went out: CONNECT is queued again once connected.
                conn.wbuf.clear();
            }
            Ok(Flush::Blocked | Flush::Waiting) => {
                // Part of it went out (a full socket buffer, not a connecting socket).
                conn.state = State::AwaitConnAck;
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => conn.wbuf.clear(),
            Err(e) => self.fail(idx, format!("connect failed: {e}")),
        }
    }

    fn open_socket(&self, idx: usize) -> io::Result<TcpStream> {
        let addr = self.settings.addr;
        let spec = self.conns.get(idx).map_or(0, |c| c.spec);
        let Some(ip) = pick(&self.settings.bind, spec) else {
            let stream = TcpStream::connect(addr)?;
            stream.set_nodelay(true)?;
            return Ok(stream);
        };
        // Non-blocking from the start on Linux (no `fcntl` pair per connection).
        #[cfg(target_os = "linux")]
        let ty = socket2::Type::STREAM.nonblocking();
        #[cfg(not(target_os = "linux"))]
        let ty = socket2::Type::STREAM;
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            ty,
            Some(socket2::Protocol::TCP),
        )?;
        #[cfg(not(target_os = "linux"))]
        socket.set_nonblocking(true)?;
        // Set before connecting, so CONNECT can be written straight after `connect`.
        socket.set_tcp_nodelay(true)?;
        // An explicit port spares the kernel its free-port search; a port still taken
        // (TIME_WAIT from an earlier run, another program) falls back to that search.
        let port = source_port(spec, self.settings.bind.len(), self.settings.source_port_offset);
        socket.set_reuse_address(true)?;
        if socket.bind(&SocketAddr::new(ip, port).into()).is_err() {
            socket.bind(&SocketAddr::new(ip, 0).into())?;
        }
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        Ok(TcpStream::from_std(socket.into()))
    }

    fn client_id(&self, idx: usize) -> String {
        let spec = self.conns.get(idx).map_or(usize::MAX, |c| c.spec);
        self.plan.conns.get(spec).map(|s| s.client_id.clone()).unwrap_or_default()
    }

    fn note_error(&mut self, msg: String) {
        if let Ok(mut samples) = self.shared.samples.lock() {
            if samples.len() < 10 {
                samples.push(msg);
            }
        }
    }

    /// Closes connection `idx` because of `msg`, counting a connect error if it was still
    /// handshaking.
    fn fail(&mut self, idx: usize, msg: String) {
        let id = self.client_id(idx);
        let stopping = self.shared.phase() == Phase::Stop;
        let Some(conn) = self.conns.get_mut(idx) else { return };
        let was = conn.state;
        // Dropping the socket closes its only descriptor, which takes it out of the
        // poll: no `deregister` call.
        conn.stream = None;
        conn.state = State::Closed;
        conn.layers = None;
        conn.wbuf = bytes::BytesMut::new();
        conn.rbuf = bytes::BytesMut::new();
        match was {
            State::Connecting | State::AwaitConnAck | State::AwaitSubAck => {
                self.handshakes = self.handshakes.saturating_sub(1);
                self.shared.connect_errors.fetch_add(1, Ordering::Relaxed);
            }
            State::Ready if !stopping => self.errors += 1,
            _ => return,
        }
        self.note_error(format!("{id}: {msg}"));
    }

    fn mark_ready(&mut self, now: u64) {
        self.handshakes = self.handshakes.saturating_sub(1);
        self.shared.ready.fetch_add(1, Ordering::Relaxed);
        self.shared.last_ready_ns.fetch_max(now, Ordering::Relaxed);
    }

    /// One publisher's turn: write what is pending, append a batch, write it.
    /// Returns nanoseconds until it wants another turn (`None`: when the socket or the
    /// broker's acks let it).
    fn pump(&mut self, idx: usize, now: u64, sending: bool, measuring: bool) -> Option<u64> {
        let qos = self.settings.qos;
        let conn = self.conns.get_mut(idx)?;
        if conn.state != State::Ready || !conn.writable {
            return None;
        }
        let mut result = None;
        if conn.wants_flush() {
            match conn.flush(now) {
                Ok(Flush::Done) => {}
                Ok(Flush::Blocked | Flush::Waiting) => return None,
                Err(e) => {
                    self.fail(idx, format!("write failed: {e}"));
                    return None;
                }
            }
        }
        if sending {
            let RoleState::Pub(p) = &mut conn.role else { return None };
            let frame = p.frame_len().max(1);
            let mut room = (BATCH_BYTES / frame).max(1) as u64;
            if qos != QoS::AtMostOnce {
                room = room.min(u64::from(p.max_inflight.saturating_sub(p.inflight)));
            }
            if room == 0 {
                return None;
            }
            let n = p.limiter.take(now, room);
            if n == 0 {
                return p.limiter.due_in(now);
            }
            let bytes = p.append(&mut conn.wbuf, n, now);
            self.sent_all += n;
            if measuring {
                self.tally.sent += n;
                self.tally.sent_bytes += bytes;
            }
            result = if p.limiter.is_unlimited() {
                let more = qos == QoS::AtMostOnce || p.inflight < p.max_inflight;
                more.then_some(0)
            } else {
                p.limiter.due_in(now)
            };
            match conn.flush(now) {
                Ok(Flush::Done) => {}
                Ok(Flush::Blocked | Flush::Waiting) => return None,
                Err(e) => {
                    self.fail(idx, format!("write failed: {e}"));
                    return None;
                }
            }
        }
        result
    }

    fn on_event(&mut self, idx: usize, ready: Readiness, now: u64, measuring: bool) {
        let Readiness { readable, writable, edge } = ready;
        let Some(conn) = self.conns.get_mut(idx) else { return };
        match conn.state {
            State::NotStarted | State::Closed => return,
            State::Connecting => {
                if !writable && !readable {
                    return;
                }
                let Some(stream) = conn.stream.as_mut() else { return };
                match (stream.take_error(), stream.peer_addr()) {
                    (Ok(Some(e)) | Err(e), _) => {
                        return self.fail(idx, format!("connect failed: {e}"))
                    }
                    (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => return,
                    (Ok(None), Err(e)) => return self.fail(idx, format!("connect failed: {e}")),
                    (Ok(None), Ok(_)) => {}
                }
                conn.state = State::AwaitConnAck;
                conn.writable = true;
                // TLS and WebSocket handshakes run inside `AwaitConnAck`: CONNECT waits in
                // the write buffer until they let it through.
                match Layers::for_transport(&self.settings.transport) {
                    Ok(layers) => conn.layers = layers,
                    Err(e) => return self.fail(idx, e.to_string()),
                }
                let mut config = self.settings.client.clone();
                config.client_id = self.client_id(idx);
                let Some(conn) = self.conns.get_mut(idx) else { return };
                if let Err(e) = conn.queue(&config.connect_packet(), config.version) {
                    return self.fail(idx, e.to_string());
                }
            }
            _ => {}
        }
        if readable {
            self.read(idx, now, measuring, edge);
        }
        let Some(conn) = self.conns.get_mut(idx) else { return };
        if writable && conn.stream.is_some() {
            conn.writable = true;
        }
        if conn.writable && conn.wants_flush() {
            if let Err(e) = conn.flush(now) {
                self.fail(idx, format!("write failed: {e}"));
            }
        }
    }

    /// Reads until `WouldBlock` or the end of the stream; with `edge`, a plain read
    /// shorter than asked for ends the pass (it emptied the socket, and bytes arriving
    /// later raise a new edge), which spares the `read` that could only say
    /// `WouldBlock`.
    fn read(&mut self, idx: usize, now: u64, measuring: bool, edge: bool) {
        loop {
            let Some(conn) = self.conns.get_mut(idx) else { return };
            if conn.layers.is_some() {
                match conn.read_layered(&mut self.scratch) {
                    Ok(ReadStatus::Data) => {
                        if !self.process(idx, now, measuring) {
                            return;
                        }
                    }
                    Ok(ReadStatus::Blocked) => return,
                    Ok(ReadStatus::Eof) => {
                        self.process(idx, now, measuring);
                        return self.fail(idx, "the broker closed the connection".into());
                    }
                    Err(msg) => {
                        // Best effort: a WebSocket close reply may be waiting.
                        let _ = conn.flush(now);
                        return self.fail(idx, msg);
                    }
                }
                continue;
            }
            let Some(stream) = conn.stream.as_mut() else { return };
            match stream.read(&mut self.scratch) {
                Ok(0) => {
                    self.process(idx, now, measuring);
                    return self.fail(idx, "the broker closed the connection".into());
                }
                Ok(n) => {
                    conn.rbuf.extend_from_slice(self.scratch.get(..n).unwrap_or_default());
                    if !self.process(idx, now, measuring) || edge && n < self.scratch.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(idx, format!("read failed: {e}")),
            }
        }
    }

    /// Decodes and handles every whole frame read; false if the connection was closed.
    fn process(&mut self, idx: usize, now: u64, measuring: bool) -> bool {
        let version = self.settings.client.version;
        loop {
            let Some(conn) = self.conns.get_mut(idx) else { return false };
            let packet = match codec::decode(&mut conn.rbuf, version, MAX_PACKET_BYTES) {
                Ok(Some(p)) => p,
                Ok(None) => return true,
                Err(e) => {
                    self.fail(idx, format!("invalid packet from the broker: {e}"));
                    return false;
                }
            };
            if let Err(msg) = self.handle(idx, packet, now, measuring) {
                self.fail(idx, msg);
                return false;
            }
        }
    }

    fn handle(
        &mut self,
        idx: usize,
        packet: Packet,
        now: u64,
        measuring: bool,
    ) -> Result<(), String> {
        let version = self.settings.client.version;
        let qos = self.settings.qos;
        let Some(conn) = self.conns.get_mut(idx) else { return Ok(()) };
        match packet {
            Packet::Publish(p) => {
                let RoleState::Sub(sub) = &mut conn.role else {
                    return Err("unexpected PUBLISH on a connection that did not subscribe".into());
                };
                match Stamp::read(&p.payload) {
                    Some(stamp) => {
                        let k = stamp.publisher.wrapping_sub(sub.first) as usize;
                        match sub.trackers.get_mut(k) {
                            Some(t) => {
                                t.record(stamp.seq);
                            }
                            None => sub.foreign += 1,
                        }
                        self.delivered_all += 1;
                        if measuring {
                            self.tally.delivered += 1;
                            self.tally.delivered_bytes += p.payload.len() as u64;
                            let _ = self.hist.record(now.saturating_sub(stamp.sent_ns).max(1));
                        }
                    }
                    None => sub.foreign += 1,
                }
                conn.ack_publish(p.qos, p.packet_id, version).map_err(|e| e.to_string())?;
            }
            Packet::PubAck(a) => {
                if let RoleState::Pub(p) = &mut conn.role {
                    p.complete(a.packet_id);
                }
                if a.reason_code.is_error() {
                    return Err(format!("publish refused: {}", a.reason_code));
                }
            }
            Packet::PubRec(a) => {
                if a.reason_code.is_error() {
                    return Err(format!("publish refused: {}", a.reason_code));
                }
                let known =
                    matches!(&conn.role, RoleState::Pub(p) if p.is_outstanding(a.packet_id));
                if known {
                    conn.queue(&Packet::PubRel(PubAck::new(a.packet_id)), version)
                        .map_err(|e| e.to_string())?;
                }
            }
            Packet::PubComp(a) => {
                if let RoleState::Pub(p) = &mut conn.role {
                    p.complete(a.packet_id);
                }
            }
            Packet::PubRel(a) => {
                conn.queue(&Packet::PubComp(PubAck::new(a.packet_id)), version)
                    .map_err(|e| e.to_string())?;
            }
            Packet::ConnAck(ack) if conn.state == State::AwaitConnAck => {
                client::check_connack(&ack).map_err(|e| e.to_string())?;
                if let (RoleState::Pub(p), Some(max)) =
                    (&mut conn.role, ack.properties.receive_maximum)
                {
                    p.max_inflight = p.max_inflight.min(u32::from(max));
                }
                if matches!(conn.role, RoleState::Sub(_)) {
                    conn.queue_subscribe(qos, version).map_err(|e| e.to_string())?;
                    conn.state = State::AwaitSubAck;
                } else {
                    conn.state = State::Ready;
                    self.mark_ready(now);
                }
            }
            Packet::SubAck(ack) if conn.state == State::AwaitSubAck => {
                let filter = match &conn.role {
                    RoleState::Sub(s) => s.filter.clone(),
                    _ => String::new(),
                };
                client::check_suback(&ack, &[filter]).map_err(|e| e.to_string())?;
                conn.state = State::Ready;
                self.mark_ready(now);
            }
            Packet::PingResp => {}
            Packet::Disconnect(d) => {
                return Err(format!("disconnected by the broker: {}", d.reason_code));
            }
            other => return Err(format!("unexpected {} from the broker", other.name())),
        }
        Ok(())
    }

    fn housekeeping(&mut self, now: u64) {
        if now.saturating_sub(self.last_house_ns) < 5 * MS {
            return;
        }
        self.last_house_ns = now;
        let (s, d, e) = self.published;
        self.shared.sent.fetch_add(self.sent_all - s, Ordering::Relaxed);
        self.shared.delivered.fetch_add(self.delivered_all - d, Ordering::Relaxed);
        self.shared.errors.fetch_add(self.errors - e, Ordering::Relaxed);
        self.published = (self.sent_all, self.delivered_all, self.errors);
        let inflight: u64 = self
            .pubs
            .iter()
            .filter_map(|&i| match self.conns.get(i) {
                Some(c @ Conn { role: RoleState::Pub(p), state: State::Ready, .. }) => {
                    Some(u64::from(p.inflight) + u64::from(c.wants_flush()))
                }
                _ => None,
            })
            .sum();
        if let Some(slot) = self.shared.inflight.get(self.slot) {
            slot.store(inflight, Ordering::Relaxed);
        }
        if now.saturating_sub(self.last_hist_ns) >= SEC {
            self.last_hist_ns = now;
            self.flush_histogram();
        }
        if self.handshakes > 0 && now.saturating_sub(self.last_timeout_scan_ns) >= TIMEOUT_SCAN_NS {
            self.last_timeout_scan_ns = now;
            let timeout = self.settings.connect_timeout.as_nanos() as u64;
            let late: Vec<usize> = (0..self.conns.len())
                .filter(|&i| {
                    self.conns.get(i).is_some_and(|c| {
                        matches!(
                            c.state,
                            State::Connecting | State::AwaitConnAck | State::AwaitSubAck
                        ) && now.saturating_sub(c.started_ns) > timeout
                    })
                })
                .collect();
            for i in late {
                self.fail(i, "timed out connecting".into());
            }
        }
        let keep_alive = u64::from(self.settings.client.keep_alive) * SEC;
        if keep_alive > 0 && now.saturating_sub(self.last_ping_scan_ns) >= SEC {
            self.last_ping_scan_ns = now;
            let version = self.settings.client.version;
            let mut failed = Vec::new();
            for (i, c) in self.conns.iter_mut().enumerate() {
                if c.state == State::Ready && now.saturating_sub(c.last_write_ns) > keep_alive / 2 {
                    let _ = c.queue(&Packet::PingReq, version);
                    if c.writable && c.flush(now).is_err() {
                        failed.push(i);
                    }
                }
            }
            for i in failed {
                self.fail(i, "write failed".into());
            }
        }
    }

    fn flush_histogram(&mut self) {
        if self.hist.is_empty() {
            return;
        }
        if let Ok(mut shared) = self.shared.hist.lock() {
            let _ = shared.add(&self.hist);
        }
        self.hist.reset();
    }

    /// Sends DISCONNECT on every connection, closes them and returns the results.
    fn finish(mut self) -> WorkerResult {
        self.last_house_ns = 0;
        self.housekeeping(self.shared.now_ns());
        self.flush_histogram();
        let version = self.settings.client.version;
        let mut result = WorkerResult { measured: self.tally, ..Default::default() };
        let mut unsent_total = 0;
        for conn in &mut self.conns {
            let mut unsent = 0;
            match &conn.role {
                RoleState::Pub(p) => {
                    unsent = (conn.unsent_bytes() / p.frame_len().max(1)) as u64;
                    result.pub_sent.push((p.id, p.seq.saturating_sub(unsent)));
                }
                RoleState::Sub(s) => result.subs.push((s.first, s.trackers.clone(), s.foreign)),
                RoleState::Idle => {}
            }
            unsent_total += unsent;
            conn.rbuf = bytes::BytesMut::new();
            let ready = conn.state == State::Ready;
            conn.state = State::Closed;
            if ready {
                conn.wbuf.clear();
                let _ = conn.queue(&client::disconnect_packet(), version);
                if conn.flush(0).is_ok_and(|f| f == Flush::Done) {
                    // Keep the socket until the broker closes it (below).
                    continue;
                }
            }
            conn.stream = None;
        }
        self.await_broker_close();
        if unsent_total > 0 {
            self.note_error(format!(
                "{unsent_total} publishes still unwritten when the run stopped"
            ));
        }
        result
    }
}

impl Worker {
    /// After DISCONNECT, waits (at most [`CLOSE_WAIT`]) for the broker to close each
    /// connection first, as MQTT has it do: TIME_WAIT then lands on the broker's side and
    /// this host's ephemeral ports are free for the next run. Then drops what is left.
    fn await_broker_close(&mut self) {
        let mut open = self.conns.iter().filter(|c| c.stream.is_some()).count();
        let mut events = Events::with_capacity(1024);
        let deadline = std::time::Instant::now() + CLOSE_WAIT;
        while open > 0 && std::time::Instant::now() < deadline {
            if self.poll.poll(&mut events, Some(Duration::from_millis(20))).is_err() {
                break;
            }
            for event in events.iter() {
                let Some(conn) = self.conns.get_mut(event.token().0) else { continue };
                let Some(stream) = conn.stream.as_mut() else { continue };
                let closed = loop {
                    match stream.read(&mut self.scratch) {
                        Ok(0) => break true,
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break true,
                    }
                };
                if closed {
                    conn.stream = None;
                    open -= 1;
                }
            }
        }
        for conn in &mut self.conns {
            conn.stream = None;
        }
    }
}

/// The source port for connection `spec` under `--bind`: connections sharing a source
/// address get consecutive ports from `offset`, wrapping within `SOURCE_PORTS`.
fn source_port(spec: usize, addrs: usize, offset: u16) -> u16 {
    let range = super::SOURCE_PORTS;
    let span = usize::from(range.end - range.start);
    let slot = (spec / addrs.max(1) + usize::from(offset)) % span;
    range.start + u16::try_from(slot).unwrap_or(0)
}

/// The local address for connection `spec` under `--bind`, round-robin.
fn pick(bind: &[IpAddr], spec: usize) -> Option<IpAddr> {
    if bind.is_empty() {
        return None;
    }
    bind.get(spec % bind.len()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ports_are_distinct_per_address_and_stay_in_range() {
        let addrs = 4;
        let offset = super::super::SOURCE_PORTS.end - super::super::SOURCE_PORTS.start - 3;
        let mut seen = std::collections::HashSet::new();
        for spec in 0..40_000 {
            let port = source_port(spec, addrs, offset);
            assert!(super::super::SOURCE_PORTS.contains(&port), "port {port}");
            // (address, port) pairs never repeat within one run of this size.
            assert!(seen.insert((spec % addrs, port)), "spec {spec} reused port {port}");
        }
    }
}
