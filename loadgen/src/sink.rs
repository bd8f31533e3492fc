//! `shoal-loadgen sink` (hidden): a trivial MQTT endpoint that accepts every CONNECT,
//! grants every SUBSCRIBE, acknowledges every QoS 1/2 PUBLISH and throws the messages
//! away. It routes nothing. It exists to measure the load generator's own publishing
//! ceiling with no real broker in the way (`pairs` with `--subscribers`-less scenarios
//! would otherwise need one).
//!
//! One blocking thread per connection; QoS 0 PUBLISH frames are skipped by their fixed
//! header alone so the sink costs as little CPU as possible. Everything else goes
//! through the codec. Runs until killed, or for `--duration` seconds.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::BytesMut;
use clap::Args;
use shoal_core::codec::{self, ConnAck, ConnAckProperties, PubAck, SubAck};
use shoal_core::{Packet, ProtocolVersion, QoS, ReasonCode};

use crate::client::MAX_PACKET_BYTES;

/// Flags of `sink`.
#[derive(Debug, Clone, Args)]
pub struct SinkArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18899")]
    listen: String,
    /// Stop after this many seconds (default: run until killed).
    #[arg(long)]
    duration: Option<u64>,
}

/// Runs the sink.
///
/// # Errors
/// When the listen address cannot be bound.
pub fn run(a: SinkArgs) -> Result<()> {
    let listener = TcpListener::bind(&a.listen).with_context(|| format!("binding {}", a.listen))?;
    eprintln!("sink listening on {}", listener.local_addr()?);
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let stop_at = a.duration.map(|d| Instant::now() + Duration::from_secs(d));
    thread::spawn(move || {
        let mut last = 0;
        loop {
            thread::sleep(Duration::from_secs(1));
            let now = counter.load(Ordering::Relaxed);
            eprintln!("sink: {} publishes/s", now - last);
            last = now;
            if stop_at.is_some_and(|t| Instant::now() >= t) {
                std::process::exit(0);
            }
        }
    });
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let received = Arc::clone(&received);
        thread::spawn(move || {
            let _ = serve(stream, &received);
        });
    }
    Ok(())
}

/// The frame length of a QoS 0 PUBLISH at the front of `buf`, from its fixed header.
fn qos0_publish_len(buf: &[u8]) -> Option<usize> {
    let (&first, rest) = buf.split_first()?;
    if first >> 4 != 3 || (first >> 1) & 3 != 0 {
        return None;
    }
    let mut len = 0usize;
    for (i, &b) in rest.iter().take(4).enumerate() {
        len |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some(len + i + 2);
        }
    }
    None
}

fn serve(mut stream: TcpStream, received: &AtomicU64) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut version = ProtocolVersion::V3_1_1;
    let mut rbuf = BytesMut::with_capacity(512 * 1024);
    let mut wbuf = BytesMut::new();
    let mut scratch = vec![0u8; 256 * 1024];
    let mut count = 0u64;
    loop {
        let n = stream.read(&mut scratch)?;
        if n == 0 {
            return Ok(());
        }
        rbuf.extend_from_slice(scratch.get(..n).unwrap_or_default());
        loop {
            if let Some(len) = qos0_publish_len(&rbuf) {
                if rbuf.len() < len {
                    break;
                }
                let _ = rbuf.split_to(len);
                count += 1;
                continue;
            }
            let packet = match codec::decode(&mut rbuf, version, MAX_PACKET_BYTES) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            };
            let reply = match packet {
                Packet::Connect(c) => {
                    version = c.protocol;
                    Some(Packet::ConnAck(ConnAck {
                        session_present: false,
                        reason_code: ReasonCode::Success,
                        properties: ConnAckProperties::default(),
                    }))
                }
                Packet::Subscribe(s) => Some(Packet::SubAck(SubAck {
                    packet_id: s.packet_id,
                    reason_codes: s
                        .filters
                        .iter()
                        .map(|f| match f.options.qos {
                            QoS::AtMostOnce => ReasonCode::Success,
                            QoS::AtLeastOnce => ReasonCode::GrantedQoS1,
                            QoS::ExactlyOnce => ReasonCode::GrantedQoS2,
                        })
                        .collect(),
                    properties: Default::default(),
                })),
                Packet::Publish(p) => {
                    count += 1;
                    match (p.qos, p.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => Some(Packet::PubAck(PubAck::new(id))),
                        (QoS::ExactlyOnce, Some(id)) => Some(Packet::PubRec(PubAck::new(id))),
                        _ => None,
                    }
                }
                Packet::PubRel(r) => Some(Packet::PubComp(PubAck::new(r.packet_id))),
                Packet::PingReq => Some(Packet::PingResp),
                Packet::Disconnect(_) => return Ok(()),
                _ => None,
            };
            if let Some(reply) = reply {
                codec::encode(&reply, version, &mut wbuf)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
        }
        received.fetch_add(std::mem::take(&mut count), Ordering::Relaxed);
        if !wbuf.is_empty() {
            stream.write_all(&wbuf)?;
            wbuf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_qos0_publish_by_header() {
        assert_eq!(qos0_publish_len(&[0x30, 0x05, 0, 1, b't', 1, 2]), Some(7));
        assert_eq!(qos0_publish_len(&[0x32, 0x05]), None, "QoS 1 goes through the codec");
        assert_eq!(qos0_publish_len(&[0x30, 0x80, 0x01]), Some(131));
        assert_eq!(qos0_publish_len(&[0x30]), None);
    }
}
