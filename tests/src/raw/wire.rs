//! A deliberately small, independent MQTT encoder/decoder for the raw test client.
//!
//! It is *not* `shoal_core::codec`: a broker and its tests sharing one codec would agree
//! on every codec bug, so the test side spells the wire format out again, only as far as
//! the suites need. Encoders build well-formed packets; malformed ones are written as
//! literal bytes in `suites/malformed.rs`. The decoder understands everything a server
//! sends (CONNACK, PUBLISH, the acks, SUBACK, UNSUBACK, PINGRESP, DISCONNECT, AUTH).

use shoal_core::ProtocolVersion;

/// Fixed-header first bytes of the packets the tests send.
pub mod kind {
    /// CONNECT.
    pub const CONNECT: u8 = 0x10;
    /// PUBLISH without flags.
    pub const PUBLISH: u8 = 0x30;
    /// PUBACK.
    pub const PUBACK: u8 = 0x40;
    /// PUBREC.
    pub const PUBREC: u8 = 0x50;
    /// PUBREL (flags 0b0010 are mandatory).
    pub const PUBREL: u8 = 0x62;
    /// PUBCOMP.
    pub const PUBCOMP: u8 = 0x70;
    /// SUBSCRIBE (flags 0b0010 are mandatory).
    pub const SUBSCRIBE: u8 = 0x82;
    /// UNSUBSCRIBE (flags 0b0010 are mandatory).
    pub const UNSUBSCRIBE: u8 = 0xA2;
    /// PINGREQ.
    pub const PINGREQ: u8 = 0xC0;
    /// DISCONNECT.
    pub const DISCONNECT: u8 = 0xE0;
}

/// A will message carried in CONNECT.
#[derive(Debug, Clone)]
pub struct Will {
    /// Will topic.
    pub topic: String,
    /// Will payload.
    pub payload: Vec<u8>,
    /// Will QoS (0..=2).
    pub qos: u8,
    /// Will retain flag.
    pub retain: bool,
}

/// Everything that goes into a CONNECT the tests send.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Protocol revision; decides name, level and whether properties are written.
    pub version: ProtocolVersion,
    /// Client identifier (may be empty).
    pub client_id: String,
    /// Clean session (3.1/3.1.1) or clean start (5.0).
    pub clean: bool,
    /// Keep alive in seconds (0 = off).
    pub keep_alive: u16,
    /// Optional will.
    pub will: Option<Will>,
    /// v5 Session Expiry Interval property, when set.
    pub session_expiry: Option<u32>,
    /// v5 Receive Maximum property, when set.
    pub receive_maximum: Option<u16>,
    /// v5 Maximum Packet Size property, when set.
    pub max_packet_size: Option<u32>,
    /// v5 Topic Alias Maximum property, when set.
    pub topic_alias_maximum: Option<u16>,
    /// v5 Will Delay Interval of the will, when set.
    pub will_delay: Option<u32>,
    /// More v5 will properties, already encoded (see [`property`]).
    pub will_properties: Vec<u8>,
    /// Optional user name.
    pub username: Option<String>,
    /// Optional password (3.1.1 requires a user name with it).
    pub password: Option<Vec<u8>>,
    /// v5 Authentication Method and Authentication Data (enhanced authentication).
    pub authentication: Option<(String, Vec<u8>)>,
}

impl ConnectOptions {
    /// A clean connection with the given version and client id, keep alive 60 s.
    pub fn new(version: ProtocolVersion, client_id: &str) -> Self {
        Self {
            version,
            client_id: client_id.to_owned(),
            clean: true,
            keep_alive: 60,
            will: None,
            session_expiry: None,
            receive_maximum: None,
            max_packet_size: None,
            topic_alias_maximum: None,
            will_delay: None,
            will_properties: Vec::new(),
            username: None,
            password: None,
            authentication: None,
        }
    }

    /// A persistent session: clean = false and, for v5, a 300 s session expiry.
    pub fn persistent(version: ProtocolVersion, client_id: &str) -> Self {
        let mut opts = Self::new(version, client_id);
        opts.clean = false;
        if version.is_v5() {
            opts.session_expiry = Some(300);
        }
        opts
    }

    /// Sets the will.
    pub fn with_will(mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Self {
        self.will = Some(Will { topic: topic.to_owned(), payload: payload.to_vec(), qos, retain });
        self
    }

    /// Sets the keep alive.
    pub fn with_keep_alive(mut self, secs: u16) -> Self {
        self.keep_alive = secs;
        self
    }
}

/// Appends the variable byte integer encoding of `value` (at most 268,435,455).
pub fn put_varint(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            break;
        }
    }
}

/// Appends a two-byte-length-prefixed string or binary field.
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&u16::try_from(s.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(s);
}

/// A whole packet: first byte, remaining length, body.
pub fn frame(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    put_varint(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// Appends a v5 property block (length prefix then the raw properties).
fn put_properties(out: &mut Vec<u8>, props: &[u8]) {
    put_varint(out, props.len());
    out.extend_from_slice(props);
}

/// CONNECT for `opts`.
pub fn connect(opts: &ConnectOptions) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, opts.version.protocol_name().as_bytes());
    body.push(opts.version.level());
    let mut flags = 0u8;
    if opts.clean {
        flags |= 0x02;
    }
    if opts.username.is_some() {
        flags |= 0x80;
    }
    if opts.password.is_some() {
        flags |= 0x40;
    }
    if let Some(will) = &opts.will {
        flags |= 0x04 | (will.qos << 3);
        if will.retain {
            flags |= 0x20;
        }
    }
    body.push(flags);
    body.extend_from_slice(&opts.keep_alive.to_be_bytes());
    if opts.version.is_v5() {
        let mut props = Vec::new();
        if let Some(expiry) = opts.session_expiry {
            props.push(0x11);
            props.extend_from_slice(&expiry.to_be_bytes());
        }
        if let Some(max) = opts.receive_maximum {
            props.push(0x21);
            props.extend_from_slice(&max.to_be_bytes());
        }
        if let Some(max) = opts.max_packet_size {
            props.push(0x27);
            props.extend_from_slice(&max.to_be_bytes());
        }
        if let Some(max) = opts.topic_alias_maximum {
            props.push(0x22);
            props.extend_from_slice(&max.to_be_bytes());
        }
        if let Some((method, data)) = &opts.authentication {
            props.extend(property(0x15, &string_value(method.as_bytes())));
            props.extend(property(0x16, &string_value(data)));
        }
        put_properties(&mut body, &props);
    }
    put_str(&mut body, opts.client_id.as_bytes());
    if let Some(will) = &opts.will {
        if opts.version.is_v5() {
            let mut props =
                opts.will_delay.map(|d| property(0x18, &d.to_be_bytes())).unwrap_or_default();
            props.extend_from_slice(&opts.will_properties);
            put_properties(&mut body, &props);
        }
        put_str(&mut body, will.topic.as_bytes());
        put_str(&mut body, &will.payload);
    }
    if let Some(user) = &opts.username {
        put_str(&mut body, user.as_bytes());
    }
    if let Some(password) = &opts.password {
        put_str(&mut body, password);
    }
    frame(kind::CONNECT, &body)
}

/// PUBLISH. `packet_id` is written only for QoS > 0.
pub fn publish(
    version: ProtocolVersion,
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    packet_id: u16,
) -> Vec<u8> {
    let mut first = kind::PUBLISH | (qos << 1);
    if retain {
        first |= 0x01;
    }
    if dup {
        first |= 0x08;
    }
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    if version.is_v5() {
        put_properties(&mut body, &[]);
    }
    body.extend_from_slice(payload);
    frame(first, &body)
}

/// A v5 PUBLISH carrying `properties` (raw, already encoded) before the payload.
pub fn publish_v5_with_properties(
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    packet_id: u16,
    properties: &[u8],
) -> Vec<u8> {
    let mut first = kind::PUBLISH | (qos << 1);
    if retain {
        first |= 0x01;
    }
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    put_properties(&mut body, properties);
    body.extend_from_slice(payload);
    frame(first, &body)
}

/// A v5 SUBSCRIBE carrying `properties` (raw, already encoded).
pub fn subscribe_v5_with_properties(
    packet_id: u16,
    properties: &[u8],
    filters: &[(&str, u8)],
) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    put_properties(&mut body, properties);
    for (filter, options) in filters {
        put_str(&mut body, filter.as_bytes());
        body.push(*options);
    }
    frame(kind::SUBSCRIBE, &body)
}

/// SUBSCRIBE with one `(filter, options byte)` per entry; for 3.1.1 the options byte
/// is the requested QoS.
pub fn subscribe(version: ProtocolVersion, packet_id: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if version.is_v5() {
        put_properties(&mut body, &[]);
    }
    for (filter, options) in filters {
        put_str(&mut body, filter.as_bytes());
        body.push(*options);
    }
    frame(kind::SUBSCRIBE, &body)
}

/// UNSUBSCRIBE.
pub fn unsubscribe(version: ProtocolVersion, packet_id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if version.is_v5() {
        put_properties(&mut body, &[]);
    }
    for filter in filters {
        put_str(&mut body, filter.as_bytes());
    }
    frame(kind::UNSUBSCRIBE, &body)
}

/// PUBACK / PUBREC / PUBREL / PUBCOMP (pass the first byte from [`kind`]) with a
/// success reason (omitted, which v5 allows when the reason is 0 and there are no
/// properties).
pub fn ack(first_byte: u8, packet_id: u16) -> Vec<u8> {
    frame(first_byte, &packet_id.to_be_bytes())
}

/// PINGREQ.
pub fn pingreq() -> Vec<u8> {
    vec![kind::PINGREQ, 0]
}

/// v5 AUTH with a reason code (0x18 Continue, 0x19 Re-authenticate), Authentication
/// Method and Authentication Data.
pub fn auth(reason: u8, method: &str, data: &[u8]) -> Vec<u8> {
    let mut props = property(0x15, &string_value(method.as_bytes()));
    props.extend(property(0x16, &string_value(data)));
    let mut body = vec![reason];
    put_properties(&mut body, &props);
    frame(0xF0, &body)
}

/// DISCONNECT; v5 carries `reason`, 3.1.x has no body.
pub fn disconnect(version: ProtocolVersion, reason: u8) -> Vec<u8> {
    if version.is_v5() {
        frame(kind::DISCONNECT, &[reason, 0])
    } else {
        vec![kind::DISCONNECT, 0]
    }
}

/// A v5 property as received, value kept as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// Property identifier.
    pub id: u8,
    /// Raw value (for strings: the UTF-8 bytes without the length prefix).
    pub value: Vec<u8>,
}

/// The first property with identifier `id`.
pub fn find_property(properties: &[Property], id: u8) -> Option<&Property> {
    properties.iter().find(|p| p.id == id)
}

/// Encodes one v5 property for the `*_with_properties` encoders: identifier, value.
pub fn property(id: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![id];
    out.extend_from_slice(value);
    out
}

/// The encoded value of a string (or binary) property: length-prefixed bytes.
pub fn string_value(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, s);
    out
}

/// A PUBLISH received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag.
    pub dup: bool,
    /// Delivered QoS.
    pub qos: u8,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (empty only when a v5 topic alias is used).
    pub topic: String,
    /// Packet id for QoS > 0.
    pub packet_id: Option<u16>,
    /// Payload.
    pub payload: Vec<u8>,
    /// v5 properties.
    pub properties: Vec<Property>,
}

/// A packet received from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// CONNACK: session present, return/reason code, v5 properties.
    ConnAck {
        /// Session Present flag.
        session_present: bool,
        /// 3.1.1 return code or v5 reason code.
        code: u8,
        /// v5 properties.
        properties: Vec<Property>,
    },
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK(packet id, reason).
    PubAck(u16, u8),
    /// PUBREC(packet id, reason).
    PubRec(u16, u8),
    /// PUBREL(packet id, reason).
    PubRel(u16, u8),
    /// PUBCOMP(packet id, reason).
    PubComp(u16, u8),
    /// SUBACK(packet id, one code per filter).
    SubAck(u16, Vec<u8>),
    /// UNSUBACK(packet id, v5 reason codes; empty for 3.1.1).
    UnsubAck(u16, Vec<u8>),
    /// PINGRESP.
    PingResp,
    /// DISCONNECT(reason; 0 when absent).
    Disconnect(u8),
    /// AUTH (v5): reason code and properties (Authentication Method 0x15, Data 0x16).
    Auth(u8, Vec<Property>),
    /// Anything else the broker should not send: first byte and body.
    Unexpected(u8, Vec<u8>),
}

/// Cursor over a packet body that never panics.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, String> {
        let (&b, rest) = self.buf.split_first().ok_or("body ends early")?;
        self.buf = rest;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!("wanted {n} bytes, {} left", self.buf.len()));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn varint(&mut self) -> Result<usize, String> {
        let mut value = 0usize;
        for shift in 0..4 {
            let b = self.u8()?;
            value |= usize::from(b & 0x7F) << (7 * shift);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("variable byte integer longer than 4 bytes".into())
    }

    fn string(&mut self) -> Result<String, String> {
        let len = usize::from(self.u16()?);
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| format!("string is not UTF-8: {e}"))
    }

    fn properties(&mut self) -> Result<Vec<Property>, String> {
        let len = self.varint()?;
        let mut inner = Reader { buf: self.take(len)? };
        let mut props = Vec::new();
        while !inner.buf.is_empty() {
            let id = inner.u8()?;
            let value = match id {
                0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => inner.take(1)?.to_vec(),
                0x13 | 0x21 | 0x22 | 0x23 => inner.take(2)?.to_vec(),
                0x02 | 0x11 | 0x18 | 0x27 => inner.take(4)?.to_vec(),
                0x0B => {
                    let v = inner.varint()?;
                    u32::try_from(v).unwrap_or(u32::MAX).to_be_bytes().to_vec()
                }
                0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                    let n = usize::from(inner.u16()?);
                    inner.take(n)?.to_vec()
                }
                0x26 => {
                    let k = usize::from(inner.u16()?);
                    let mut v = inner.take(k)?.to_vec();
                    let n = usize::from(inner.u16()?);
                    v.extend_from_slice(inner.take(n)?);
                    v
                }
                other => return Err(format!("unknown property id 0x{other:02X}")),
            };
            props.push(Property { id, value });
        }
        Ok(props)
    }

    /// Reason code of a v5 ack/disconnect: absent means success.
    fn optional_reason(&mut self) -> Result<u8, String> {
        if self.buf.is_empty() {
            Ok(0)
        } else {
            self.u8()
        }
    }
}

/// Splits one whole packet off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((packet, consumed)))` for a
/// whole packet, and `Err` for bytes the broker should never have sent.
pub fn decode(version: ProtocolVersion, buf: &[u8]) -> Result<Option<(Incoming, usize)>, String> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    let mut header_len = 1usize;
    for shift in 0..4 {
        let Some(&b) = buf.get(1 + shift) else {
            return Ok(None);
        };
        header_len += 1;
        len |= usize::from(b & 0x7F) << (7 * shift);
        if b & 0x80 == 0 {
            break;
        }
        if shift == 3 {
            return Err("remaining length longer than 4 bytes".into());
        }
    }
    let total = header_len + len;
    let Some(body) = buf.get(header_len..total) else {
        return Ok(None);
    };
    let mut r = Reader { buf: body };
    let v5 = version.is_v5();
    let packet = match first >> 4 {
        2 => {
            let flags = r.u8()?;
            let code = r.u8()?;
            let properties = if v5 { r.properties()? } else { Vec::new() };
            Incoming::ConnAck { session_present: flags & 1 == 1, code, properties }
        }
        3 => {
            let qos = (first >> 1) & 0x03;
            let topic = r.string()?;
            let packet_id = if qos > 0 { Some(r.u16()?) } else { None };
            let properties = if v5 { r.properties()? } else { Vec::new() };
            Incoming::Publish(Publish {
                dup: first & 0x08 != 0,
                qos,
                retain: first & 0x01 != 0,
                topic,
                packet_id,
                payload: r.buf.to_vec(),
                properties,
            })
        }
        4 => Incoming::PubAck(r.u16()?, r.optional_reason()?),
        5 => Incoming::PubRec(r.u16()?, r.optional_reason()?),
        6 => Incoming::PubRel(r.u16()?, r.optional_reason()?),
        7 => Incoming::PubComp(r.u16()?, r.optional_reason()?),
        9 => {
            let id = r.u16()?;
            if v5 {
                r.properties()?;
            }
            Incoming::SubAck(id, r.buf.to_vec())
        }
        11 => {
            let id = r.u16()?;
            if v5 {
                r.properties()?;
            }
            Incoming::UnsubAck(id, r.buf.to_vec())
        }
        13 => Incoming::PingResp,
        14 => Incoming::Disconnect(r.optional_reason()?),
        15 if v5 => {
            let reason = r.optional_reason()?;
            let properties = if r.buf.is_empty() { Vec::new() } else { r.properties()? };
            Incoming::Auth(reason, properties)
        }
        _ => Incoming::Unexpected(first, body.to_vec()),
    };
    Ok(Some((packet, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_uses_the_minimum_number_of_bytes() {
        for (value, expected) in [
            (0usize, vec![0x00]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, expected, "{value}");
        }
    }

    #[test]
    fn connect_v311_matches_the_spec_example_layout() {
        let bytes = connect(&ConnectOptions::new(ProtocolVersion::V3_1_1, "ab"));
        assert_eq!(
            bytes,
            [
                0x10, 14, // CONNECT, remaining length
                0, 4, b'M', b'Q', b'T', b'T', // protocol name
                4,    // level
                0x02, // clean session
                0, 60, // keep alive
                0, 2, b'a', b'b', // client id
            ]
        );
    }

    #[test]
    fn decodes_a_v5_publish_split_across_reads() {
        let bytes = publish(ProtocolVersion::V5, "t", b"hi", 1, true, false, 9);
        assert_eq!(decode(ProtocolVersion::V5, &bytes[..3]), Ok(None));
        let (packet, used) = decode(ProtocolVersion::V5, &bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        let Incoming::Publish(p) = packet else { panic!("not a publish: {packet:?}") };
        assert_eq!((p.qos, p.retain, p.packet_id), (1, true, Some(9)));
        assert_eq!((p.topic.as_str(), p.payload.as_slice()), ("t", &b"hi"[..]));
    }
}
