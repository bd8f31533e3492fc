//! A small MQTT client on `shoal-core`'s codec.
//!
//! Two layers: what every connection needs (the broker address, [`ClientConfig`] →
//! CONNECT, reading CONNACK/SUBACK results as [`ClientError`]s with the reason in words),
//! shared by the load engine (`crate::engine`, non-blocking, many connections per
//! thread), and [`BlockingClient`], one blocking socket used by the console `pub`/`sub`
//! commands (`crate::console`). TLS and WebSocket transports are not implemented; URLs
//! asking for them are refused with [`ClientError::Unsupported`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shoal_core::codec::{
    self, ConnAck, Connect, ConnectProperties, DecodeError, Disconnect, DisconnectProperties,
    EncodeError, LastWill, PubAck, Publish, PublishProperties, SubAck, Subscribe, SubscribeFilter,
    SubscribeProperties, SubscriptionOptions,
};
use shoal_core::{Packet, PacketId, ProtocolVersion, QoS, ReasonCode, TopicName};

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
    /// A transport or option this client does not implement yet.
    #[error("{0} is not supported yet")]
    Unsupported(&'static str),
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

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `mqtt://host:port` (or `tcp://`); the port defaults to 1883.
    ///
    /// # Errors
    /// [`ClientError::Unsupported`] for `mqtts://`, `ssl://`, `ws://` and `wss://`;
    /// [`ClientError::BadAddress`] for anything else that is not such a URL.
    pub fn parse_url(url: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::BadAddress(url.to_string());
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        match scheme {
            "mqtt" | "tcp" => {}
            "mqtts" | "ssl" | "tls" => return Err(ClientError::Unsupported("TLS (mqtts://)")),
            "ws" | "wss" => return Err(ClientError::Unsupported("MQTT over WebSocket (ws://)")),
            _ => return Err(bad()),
        }
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (authority, 1883),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self { host: host.to_string(), port })
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

/// One blocking connection, for the console commands.
#[derive(Debug)]
pub struct BlockingClient {
    stream: TcpStream,
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
        config: &ClientConfig,
        timeout: Duration,
    ) -> Result<(Self, ConnAck), ClientError> {
        let stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(ClientError::io("connecting to the broker"))?;
        let _ = stream.set_nodelay(true);
        let mut client = Self {
            stream,
            version: config.version,
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: BytesMut::with_capacity(1024),
            last_pid: 0,
        };
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
        self.stream.write_all(&self.wbuf).map_err(ClientError::io("writing to the broker"))
    }

    /// The next packet, waiting at most `timeout` (`None`: forever). `Ok(None)` on timeout.
    ///
    /// # Errors
    /// Socket errors, an undecodable packet, the broker closing the connection, or a v5
    /// DISCONNECT ([`ClientError::Disconnected`]).
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Packet>, ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut scratch = [0u8; 16 * 1024];
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
            self.stream.set_read_timeout(wait).map_err(ClientError::io("setting a timeout"))?;
            match self.stream.read(&mut scratch) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => self.rbuf.extend_from_slice(scratch.get(..n).unwrap_or_default()),
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ClientError::io("reading from the broker")(e)),
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
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
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
            Endpoint { host: "localhost".into(), port: 18830 }
        );
        assert_eq!(Endpoint::parse_url("tcp://10.0.0.1").unwrap().port, 1883);
        assert_eq!(Endpoint::parse_url("mqtt://[::1]:1884/").unwrap().host, "::1");
        assert!(matches!(Endpoint::parse_url("http://x"), Err(ClientError::BadAddress(_))));
    }

    #[test]
    fn refuses_tls_and_websocket_urls_clearly() {
        let e = Endpoint::parse_url("ws://localhost:8080").unwrap_err();
        assert_eq!(e.to_string(), "MQTT over WebSocket (ws://) is not supported yet");
        assert!(Endpoint::parse_url("mqtts://x:8883").unwrap_err().to_string().contains("TLS"));
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
