//! A small MQTT client on `shoal-core`'s codec.
//!
//! Two layers: what every connection needs (the broker address, [`ClientConfig`] →
//! CONNECT, reading CONNACK/SUBACK results as [`ClientError`]s with the reason in words),
//! shared by the load engine (`crate::engine`, non-blocking, many connections per
//! thread), and [`BlockingClient`], one blocking socket used by the console `pub`/`sub`
//! commands (`crate::console`). Both speak plain TCP, TLS (`rustls`), WebSocket
//! (`crate::ws`) and WebSocket over TLS, as the [`Transport`] says.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shoal_core::codec::{
    self, ConnAck, Connect, ConnectProperties, DecodeError, Disconnect, DisconnectProperties,
    EncodeError, LastWill, PubAck, Publish, PublishProperties, SubAck, Subscribe, SubscribeFilter,
    SubscribeProperties, SubscriptionOptions,
};
use shoal_core::{Packet, PacketId, ProtocolVersion, QoS, ReasonCode, TopicName};

use crate::ws::{self, WsError, WsLink};

/// Largest packet we accept from a broker.
pub const MAX_PACKET_BYTES: usize = 16 * 1024 * 1024;

/// Why talking to the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker answered CONNECT with a failure reason.
    #[error("connection refused: {0}")]
    Refused(ReasonCode),
    /// The broker refused a subscription.
    #[error("subscription to {filter:?} refused: {code}")]
    SubscribeRefused {
        /// The filter refused.
        filter: String,
        /// The SUBACK reason.
        code: ReasonCode,
    },
    /// The broker refused a QoS 1/2 publish (MQTT 5 PUBACK/PUBREC reason).
    #[error("publish refused: {0}")]
    PublishRefused(ReasonCode),
    /// A socket error.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The broker sent bytes that are not a valid packet.
    #[error("invalid packet from the broker")]
    Decode(#[from] DecodeError),
    /// A packet we built could not be encoded (a field too long).
    #[error("cannot encode packet")]
    Encode(#[from] EncodeError),
    /// The broker closed the TCP connection.
    #[error("the broker closed the connection")]
    Closed,
    /// The broker sent DISCONNECT (MQTT 5) with this reason.
    #[error("disconnected by the broker: {0}")]
    Disconnected(ReasonCode),
    /// A packet that makes no sense at this point.
    #[error("unexpected {0} from the broker")]
    Unexpected(&'static str),
    /// Nothing arrived in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The TLS session failed (handshake, certificate, alert from the broker).
    #[error("TLS failed{}", crate::tls::hint(.0))]
    Tls(#[from] rustls::Error),
    /// The WebSocket layer failed.
    #[error(transparent)]
    Ws(#[from] WsError),
    /// A bad address or URL.
    #[error("invalid broker address {0:?}")]
    BadAddress(String),
    /// A topic name that MQTT does not allow.
    #[error("invalid topic name {0:?}")]
    BadTopic(String),
}

impl ClientError {
    fn io(context: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { context, source }
    }
}

/// Where the broker is and which transport reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS on top of TCP.
    pub tls: bool,
    /// MQTT over WebSocket, with this request path.
    pub ws_path: Option<String>,
}

impl Endpoint {
    /// Plain MQTT over TCP.
    pub fn tcp(host: impl Into<String>, port: u16) -> Self {
        Self { host: host.into(), port, tls: false, ws_path: None }
    }

    /// Parses `mqtt://` (or `tcp://`), `mqtts://` (or `ssl://`, `tls://`), `ws://` and
    /// `wss://` URLs. Ports default to 1883, 8883, 80 and 443; a WebSocket path to
    /// [`ws::DEFAULT_PATH`].
    ///
    /// # Errors
    /// [`ClientError::BadAddress`] for anything that is not such a URL.
    pub fn parse_url(url: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::BadAddress(url.to_string());
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let (tls, ws, default_port) = match scheme {
            "mqtt" | "tcp" => (false, false, 1883),
            "mqtts" | "ssl" | "tls" => (true, false, 8883),
            "ws" => (false, true, 80),
            "wss" => (true, true, 443),
            _ => return Err(bad()),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (rest.get(..i).unwrap_or_default(), rest.get(i..).unwrap_or_default()),
            None => (rest, ""),
        };
        let (host, port) = match authority.strip_prefix('[') {
            // [IPv6] or [IPv6]:port
            Some(v6) => match v6.split_once(']') {
                Some((h, "")) => (h, default_port),
                Some((h, p)) => match p.strip_prefix(':') {
                    Some(p) => (h, p.parse::<u16>().map_err(|_| bad())?),
                    None => return Err(bad()),
                },
                None => return Err(bad()),
            },
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
                None => (authority, default_port),
            },
        };
        if host.is_empty() {
            return Err(bad());
        }
        let ws_path = ws.then(|| match path {
            "" | "/" => ws::DEFAULT_PATH.to_string(),
            p => p.to_string(),
        });
        Ok(Self { host: host.to_string(), port, tls, ws_path })
    }

    /// The URL this endpoint stands for.
    pub fn url(&self) -> String {
        let scheme = match (self.tls, self.ws_path.is_some()) {
            (false, false) => "mqtt",
            (true, false) => "mqtts",
            (false, true) => "ws",
            (true, true) => "wss",
        };
        let host =
            if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{scheme}://{host}:{}{}", self.port, self.ws_path.as_deref().unwrap_or_default())
    }

    /// Resolves to the first socket address.
    ///
    /// # Errors
    /// [`ClientError::BadAddress`] when the name does not resolve.
    pub fn resolve(&self) -> Result<SocketAddr, ClientError> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ClientError::BadAddress(format!("{}:{}", self.host, self.port)))
    }
}

/// TLS for one broker: the client configuration and the name to verify.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    /// rustls client configuration (roots, client certificate).
    pub config: Arc<rustls::ClientConfig>,
    /// Name the broker's certificate must carry.
    pub server_name: rustls::pki_types::ServerName<'static>,
}

impl TlsTarget {
    /// A new client session.
    ///
    /// # Errors
    /// rustls refusing to start one.
    pub fn session(&self) -> Result<rustls::ClientConnection, ClientError> {
        Ok(rustls::ClientConnection::new(self.config.clone(), self.server_name.clone())?)
    }
}

/// WebSocket for one broker: what goes into the Upgrade request.
#[derive(Debug, Clone)]
pub struct WsTarget {
    /// `Host` header (host and port).
    pub host: String,
    /// Request path.
    pub path: String,
}

impl WsTarget {
    /// A new link that starts with the Upgrade request.
    ///
    /// # Errors
    /// No random numbers for the key.
    pub fn link(&self) -> Result<WsLink, ClientError> {
        Ok(WsLink::new(&self.host, &self.path, MAX_PACKET_BYTES + 16)?)
    }
}

/// The layers above TCP: none (plain MQTT), TLS, WebSocket, or WebSocket over TLS.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// TLS, when set.
    pub tls: Option<TlsTarget>,
    /// WebSocket, when set (inside TLS if both are).
    pub ws: Option<WsTarget>,
}

/// What goes into CONNECT.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Protocol version.
    pub version: ProtocolVersion,
    /// Client identifier (may be empty with a clean start, the broker then assigns one).
    pub client_id: String,
    /// Clean Session / Clean Start.
    pub clean_start: bool,
    /// Keep Alive, seconds.
    pub keep_alive: u16,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
    /// Will message.
    pub will: Option<LastWill>,
    /// MQTT 5 Session Expiry Interval, seconds.
    pub session_expiry: Option<u32>,
}

impl ClientConfig {
    /// A clean-session config with a 60 s keep-alive and nothing else.
    pub fn new(version: ProtocolVersion, client_id: impl Into<String>) -> Self {
        Self {
            version,
            client_id: client_id.into(),
            clean_start: true,
            keep_alive: 60,
            username: None,
            password: None,
            will: None,
            session_expiry: None,
        }
    }

    /// The CONNECT packet for this config.
    pub fn connect_packet(&self) -> Packet {
        let mut properties = ConnectProperties::default();
        if self.version.is_v5() {
            properties.session_expiry_interval = self.session_expiry;
        }
        Packet::Connect(Box::new(Connect {
            protocol: self.version,
            clean_start: self.clean_start,
            keep_alive: self.keep_alive,
            client_id: self.client_id.clone(),
            will: self.will.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            properties,
        }))
    }
}

/// Turns a CONNACK into `Ok` or the refusal in words.
///
/// # Errors
/// [`ClientError::Refused`] with the reason (3.1.1 return codes arrive mapped to their
/// MQTT 5 equivalents by the codec).
pub fn check_connack(ack: &ConnAck) -> Result<(), ClientError> {
    if ack.reason_code.is_error() {
        return Err(ClientError::Refused(ack.reason_code));
    }
    Ok(())
}

/// Checks every SUBACK result against the filters asked for.
///
/// # Errors
/// [`ClientError::SubscribeRefused`] for the first refused filter.
pub fn check_suback(ack: &SubAck, filters: &[String]) -> Result<(), ClientError> {
    for (i, code) in ack.reason_codes.iter().enumerate() {
        if code.is_error() {
            let filter = filters.get(i).cloned().unwrap_or_default();
            return Err(ClientError::SubscribeRefused { filter, code: *code });
        }
    }
    Ok(())
}

/// A SUBSCRIBE for `filters`, all at `qos`.
pub fn subscribe_packet(packet_id: PacketId, filters: &[String], qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id,
        filters: filters
            .iter()
            .map(|f| SubscribeFilter {
                filter: f.clone(),
                options: SubscriptionOptions { qos, ..Default::default() },
            })
            .collect(),
        properties: SubscribeProperties::default(),
    })
}

/// A normal DISCONNECT.
pub fn disconnect_packet() -> Packet {
    Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::Success,
        properties: DisconnectProperties::default(),
    })
}

/// The blocking byte stream under the MQTT (or WebSocket) bytes.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Tcp(s) => s,
            Self::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

/// An I/O error, or the rustls error inside it when there is one.
fn io_or_tls(context: &'static str) -> impl FnOnce(io::Error) -> ClientError {
    move |e| {
        let is_tls = e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
        if is_tls {
            if let Some(Ok(tls)) = e.into_inner().map(|inner| inner.downcast::<rustls::Error>()) {
                return ClientError::Tls(*tls);
            }
            return ClientError::Unexpected("TLS error");
        }
        ClientError::Io { context, source: e }
    }
}

/// One blocking connection, for the console commands.
#[derive(Debug)]
pub struct BlockingClient {
    stream: Stream,
    ws: Option<WsLink>,
    version: ProtocolVersion,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Last packet id handed out; ids start at 1 and skip 0 when wrapping.
    last_pid: u16,
}

impl BlockingClient {
    /// Connects, sends CONNECT and waits for CONNACK.
    ///
    /// # Errors
    /// Socket errors, a refusal ([`ClientError::Refused`]) or no CONNACK in `timeout`.
    pub fn connect(
        addr: SocketAddr,
        transport: &Transport,
        config: &ClientConfig,
        timeout: Duration,
    ) -> Result<(Self, ConnAck), ClientError> {
        let tcp = TcpStream::connect_timeout(&addr, timeout)
            .map_err(ClientError::io("connecting to the broker"))?;
        let _ = tcp.set_nodelay(true);
        let stream = match &transport.tls {
            None => Stream::Tcp(tcp),
            Some(t) => Stream::Tls(Box::new(rustls::StreamOwned::new(t.session()?, tcp))),
        };
        let mut client = Self {
            stream,
            ws: None,
            version: config.version,
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: BytesMut::with_capacity(1024),
            last_pid: 0,
        };
        if let Some(w) = &transport.ws {
            client.ws = Some(w.link()?);
            client.write_ws_out()?;
            // The Upgrade answer and CONNACK are read by `recv` below: frames are only
            // sent once the broker has accepted the Upgrade.
            let deadline = Instant::now() + timeout;
            while client.ws.as_ref().is_some_and(|w| !w.is_upgraded()) {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || !client.fill(Some(left))? {
                    return Err(ClientError::Timeout("the WebSocket upgrade"));
                }
            }
        }
        client.send(&config.connect_packet())?;
        match client.recv(Some(timeout))? {
            Some(Packet::ConnAck(ack)) => {
                check_connack(&ack)?;
                Ok((client, ack))
            }
            Some(other) => Err(ClientError::Unexpected(other.name())),
            None => Err(ClientError::Timeout("CONNACK")),
        }
    }

    fn take_pid(&mut self) -> PacketId {
        loop {
            self.last_pid = self.last_pid.wrapping_add(1);
            if let Some(id) = PacketId::new(self.last_pid) {
                return id;
            }
        }
    }

    /// Encodes and writes one packet.
    ///
    /// # Errors
    /// Encoding or socket errors.
    pub fn send(&mut self, packet: &Packet) -> Result<(), ClientError> {
        self.wbuf.clear();
        codec::encode(packet, self.version, &mut self.wbuf)?;
        if let Some(ws) = &mut self.ws {
            ws.send_binary(&self.wbuf);
            return self.write_ws_out();
        }
        self.stream.write_all(&self.wbuf).map_err(io_or_tls("writing to the broker"))?;
        self.stream.flush().map_err(io_or_tls("writing to the broker"))
    }

    /// Writes what the WebSocket layer has queued (request, frames, pongs).
    fn write_ws_out(&mut self) -> Result<(), ClientError> {
        let Some(ws) = &mut self.ws else { return Ok(()) };
        if ws.out.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&ws.out).map_err(io_or_tls("writing to the broker"))?;
        ws.out.clear();
        self.stream.flush().map_err(io_or_tls("writing to the broker"))
    }

    /// Reads once (waiting at most `wait`, `None`: forever) and appends the MQTT bytes
    /// to the read buffer; false on timeout.
    fn fill(&mut self, wait: Option<Duration>) -> Result<bool, ClientError> {
        let mut scratch = [0u8; 16 * 1024];
        self.stream.tcp().set_read_timeout(wait).map_err(ClientError::io("setting a timeout"))?;
        loop {
            match self.stream.read(&mut scratch) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => {
                    let data = scratch.get(..n).unwrap_or_default();
                    match &mut self.ws {
                        None => self.rbuf.extend_from_slice(data),
                        Some(ws) => {
                            let received = ws.receive(data, &mut self.rbuf);
                            // Pongs and the close reply go out even when closing.
                            let written = self.write_ws_out();
                            received?;
                            written?;
                        }
                    }
                    return Ok(true);
                }
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    return Ok(false)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_or_tls("reading from the broker")(e)),
            }
        }
    }

    /// The next packet, waiting at most `timeout` (`None`: forever). `Ok(None)` on timeout.
    ///
    /// # Errors
    /// Socket errors, an undecodable packet, the broker closing the connection, or a v5
    /// DISCONNECT ([`ClientError::Disconnected`]).
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Packet>, ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(packet) = codec::decode(&mut self.rbuf, self.version, MAX_PACKET_BYTES)? {
                if let Packet::Disconnect(d) = &packet {
                    return Err(ClientError::Disconnected(d.reason_code));
                }
                return Ok(Some(packet));
            }
            let wait = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(None),
                },
            };
            if !self.fill(wait)? {
                return Ok(None);
            }
        }
    }

    /// Publishes and, for QoS 1/2, waits for the acknowledgement flow to finish.
    /// Packets that arrive meanwhile (other than the acks) are dropped.
    ///
    /// # Errors
    /// A bad topic, socket errors, a refusal (v5 reason code) or no ack in `timeout`.
    pub fn publish(
        &mut self,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        let topic =
            TopicName::try_from_str(topic).map_err(|_| ClientError::BadTopic(topic.to_string()))?;
        let packet_id = (qos != QoS::AtMostOnce).then(|| self.take_pid());
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic,
            packet_id,
            properties: PublishProperties::default(),
            payload,
        }))?;
        let Some(id) = packet_id else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(Some(left))? {
                None => return Err(ClientError::Timeout("publish acknowledgement")),
                Some(Packet::PubAck(a)) if a.packet_id == id && qos == QoS::AtLeastOnce => {
                    return check_reason(a.reason_code);
                }
                Some(Packet::PubRec(a)) if a.packet_id == id && qos == QoS::ExactlyOnce => {
                    check_reason(a.reason_code)?;
                    self.send(&Packet::PubRel(PubAck::new(id)))?;
                }
                Some(Packet::PubComp(a)) if a.packet_id == id && qos == QoS::ExactlyOnce => {
                    return Ok(());
                }
                Some(_) => {}
            }
        }
    }

    /// Subscribes and waits for SUBACK.
    ///
    /// # Errors
    /// Socket errors, a refused filter, or no SUBACK in `timeout`.
    pub fn subscribe(
        &mut self,
        filters: &[String],
        qos: QoS,
        timeout: Duration,
    ) -> Result<SubAck, ClientError> {
        let id = self.take_pid();
        self.send(&subscribe_packet(id, filters, qos))?;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(Some(left))? {
                None => return Err(ClientError::Timeout("SUBACK")),
                Some(Packet::SubAck(ack)) if ack.packet_id == id => {
                    check_suback(&ack, filters)?;
                    return Ok(ack);
                }
                Some(_) => {}
            }
        }
    }

    /// Sends DISCONNECT and closes the socket.
    pub fn disconnect(mut self) {
        let _ = self.send(&disconnect_packet());
        if let Stream::Tls(s) = &mut self.stream {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        let _ = self.stream.tcp().shutdown(std::net::Shutdown::Both);
    }
}

fn check_reason(code: ReasonCode) -> Result<(), ClientError> {
    if code.is_error() {
        return Err(ClientError::PublishRefused(code));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mqtt_urls() {
        assert_eq!(
            Endpoint::parse_url("mqtt://localhost:18830").unwrap(),
            Endpoint::tcp("localhost", 18830)
        );
        assert_eq!(Endpoint::parse_url("tcp://10.0.0.1").unwrap().port, 1883);
        assert_eq!(Endpoint::parse_url("mqtt://[::1]:1884/").unwrap().host, "::1");
        assert!(matches!(Endpoint::parse_url("http://x"), Err(ClientError::BadAddress(_))));
    }

    #[test]
    fn parses_tls_and_websocket_urls() {
        let e = Endpoint::parse_url("ws://localhost:8080").unwrap();
        assert_eq!((e.tls, e.ws_path.as_deref(), e.port), (false, Some("/mqtt"), 8080));
        let e = Endpoint::parse_url("wss://[::1]/ws/x").unwrap();
        assert_eq!((e.tls, e.ws_path.as_deref(), e.port), (true, Some("/ws/x"), 443));
        assert_eq!(e.url(), "wss://[::1]:443/ws/x");
        let e = Endpoint::parse_url("mqtts://x").unwrap();
        assert_eq!((e.tls, e.ws_path.as_deref(), e.port), (true, None, 8883));
        assert_eq!(e.url(), "mqtts://x:8883");
    }

    #[test]
    fn refusal_is_reported_in_words() {
        let ack = ConnAck {
            session_present: false,
            reason_code: ReasonCode::NotAuthorized,
            properties: Default::default(),
        };
        let e = check_connack(&ack).unwrap_err();
        assert_eq!(e.to_string(), "connection refused: Not authorized (0x87)");
    }
}
