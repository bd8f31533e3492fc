//! The console client: `shoal-loadgen pub` and `shoal-loadgen sub`, on the blocking
//! client of `crate::client`.
//!
//! `pub` sends one message (`-m`), a whole file (`-f`) or each line of stdin (`-l`);
//! `sub` prints what arrives, optionally with the topic and MQTT 5 properties (`-v`),
//! and stops after `-C` messages. Refusals are reported in words, e.g.
//! `connection refused: Not authorized (0x87)`.

use std::io::{self, BufRead, Write};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use shoal_core::codec::{LastWill, PubAck, Publish, PublishProperties, WillProperties};
use shoal_core::{Packet, QoS, TopicName};

use crate::client::{BlockingClient, ClientConfig};
use crate::{parse_qos, ConnArgs};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Session and will flags shared by `pub` and `sub`.
#[derive(Debug, Clone, Args)]
pub struct SessionArgs {
    /// Client identifier (default: generated).
    #[arg(short = 'i', long)]
    id: Option<String>,
    /// Keep the session (clean start off).
    #[arg(short = 'c', long = "persistent", alias = "disable-clean-session")]
    persistent: bool,
    /// MQTT 5 Session Expiry Interval, seconds (with --persistent).
    #[arg(long, default_value_t = 3600)]
    session_expiry: u32,
    /// Will topic.
    #[arg(long)]
    will_topic: Option<String>,
    /// Will payload.
    #[arg(long, default_value = "")]
    will_payload: String,
    /// Will QoS.
    #[arg(long, default_value = "0", value_parser = parse_qos)]
    will_qos: QoS,
    /// Will retain flag.
    #[arg(long)]
    will_retain: bool,
}

impl SessionArgs {
    fn config(&self, conn: &ConnArgs, role: &str) -> Result<ClientConfig> {
        let id = self.id.clone().unwrap_or_else(|| format!("shoal-{role}-{}", std::process::id()));
        let mut c = conn.client_config(id);
        if self.persistent {
            c.clean_start = false;
            c.session_expiry = Some(self.session_expiry);
        }
        if let Some(topic) = &self.will_topic {
            let topic = TopicName::try_from_str(topic)
                .map_err(|e| anyhow::anyhow!("invalid will topic {topic:?}: {e}"))?;
            c.will = Some(LastWill {
                topic,
                payload: Bytes::from(self.will_payload.clone().into_bytes()),
                qos: self.will_qos,
                retain: self.will_retain,
                properties: WillProperties::default(),
            });
        }
        Ok(c)
    }
}

/// Flags of `pub`.
#[derive(Debug, Clone, Args)]
pub struct PubArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    session: SessionArgs,
    /// Topic to publish to.
    #[arg(short = 't', long)]
    topic: String,
    /// Message to publish.
    #[arg(short = 'm', long, group = "source")]
    message: Option<String>,
    /// Publish each line of stdin as a message.
    #[arg(short = 'l', long, group = "source")]
    stdin_line: bool,
    /// Publish the contents of a file as one message.
    #[arg(short = 'f', long, group = "source")]
    file: Option<std::path::PathBuf>,
    /// Publish an empty message.
    #[arg(short = 'n', long, group = "source")]
    null_message: bool,
    /// QoS.
    #[arg(short = 'q', long, default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Retain the message.
    #[arg(short = 'r', long)]
    retain: bool,
}

/// Flags of `sub`.
#[derive(Debug, Clone, Args)]
pub struct SubArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(flatten)]
    session: SessionArgs,
    /// Topic filter(s) to subscribe to.
    #[arg(short = 't', long, required = true)]
    topic: Vec<String>,
    /// QoS of the subscription.
    #[arg(short = 'q', long, default_value = "0", value_parser = parse_qos)]
    qos: QoS,
    /// Exit after this many messages.
    #[arg(short = 'C', long)]
    count: Option<u64>,
    /// Print the topic (and MQTT 5 properties) before each payload.
    #[arg(short = 'v', long)]
    verbose: bool,
}

fn connect(conn: &ConnArgs, config: &ClientConfig) -> Result<BlockingClient> {
    let endpoint = conn.endpoint()?;
    let addr = endpoint.resolve()?;
    let transport = conn.transport(&endpoint)?;
    let (client, _ack) = BlockingClient::connect(addr, &transport, config, TIMEOUT)
        .with_context(|| format!("connecting to {}", endpoint.url()))?;
    Ok(client)
}

/// Runs `pub`.
///
/// # Errors
/// Connection, refusal, I/O and publish errors.
pub fn run_pub(a: PubArgs) -> Result<()> {
    let config = a.session.config(&a.conn, "pub")?;
    let payload = if let Some(m) = &a.message {
        Some(Bytes::from(m.clone().into_bytes()))
    } else if let Some(path) = &a.file {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Some(Bytes::from(data))
    } else if a.null_message {
        Some(Bytes::new())
    } else if a.stdin_line {
        None
    } else {
        bail!("nothing to publish: give -m MSG, -f FILE, -l or -n");
    };
    let mut client = connect(&a.conn, &config)?;
    match payload {
        Some(p) => client.publish(&a.topic, p, a.qos, a.retain, TIMEOUT)?,
        None => {
            for line in io::stdin().lock().lines() {
                let line = line.context("reading stdin")?;
                client.publish(
                    &a.topic,
                    Bytes::from(line.into_bytes()),
                    a.qos,
                    a.retain,
                    TIMEOUT,
                )?;
            }
        }
    }
    client.disconnect();
    Ok(())
}

/// Runs `sub`.
///
/// # Errors
/// Connection, refusal, I/O errors, or the broker disconnecting.
pub fn run_sub(a: SubArgs) -> Result<()> {
    let config = a.session.config(&a.conn, "sub")?;
    let mut client = connect(&a.conn, &config)?;
    client.subscribe(&a.topic, a.qos, TIMEOUT)?;
    let ping_every = match config.keep_alive {
        0 => None,
        k => Some(Duration::from_secs(u64::from(k).div_ceil(2))),
    };
    let mut received = 0u64;
    let stdout = io::stdout();
    loop {
        if a.count.is_some_and(|c| received >= c) {
            break;
        }
        let Some(packet) = client.recv(ping_every)? else {
            client.send(&Packet::PingReq)?;
            continue;
        };
        match packet {
            Packet::Publish(p) => {
                let mut out = stdout.lock();
                print_publish(&mut out, &p, a.verbose).context("writing to stdout")?;
                out.flush().context("writing to stdout")?;
                received += 1;
                match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => {
                        client.send(&Packet::PubAck(PubAck::new(id)))?
                    }
                    (QoS::ExactlyOnce, Some(id)) => {
                        client.send(&Packet::PubRec(PubAck::new(id)))?
                    }
                    _ => {}
                }
            }
            Packet::PubRel(r) => client.send(&Packet::PubComp(PubAck::new(r.packet_id)))?,
            _ => {}
        }
    }
    client.disconnect();
    Ok(())
}

fn print_publish(out: &mut impl Write, p: &Publish, verbose: bool) -> io::Result<()> {
    let payload = String::from_utf8_lossy(&p.payload);
    if !verbose {
        return writeln!(out, "{payload}");
    }
    write!(out, "{} ", p.topic)?;
    if !p.properties.is_empty() {
        write!(out, "[{}] ", describe_properties(&p.properties))?;
    }
    writeln!(out, "{payload}")
}

/// MQTT 5 publish properties as `name=value` pairs.
fn describe_properties(props: &PublishProperties) -> String {
    let mut parts = Vec::new();
    if let Some(v) = props.payload_format_indicator {
        parts.push(format!("payload-format={}", if v { "utf-8" } else { "bytes" }));
    }
    if let Some(v) = props.message_expiry_interval {
        parts.push(format!("message-expiry={v}s"));
    }
    if let Some(v) = &props.content_type {
        parts.push(format!("content-type={v}"));
    }
    if let Some(v) = &props.response_topic {
        parts.push(format!("response-topic={v}"));
    }
    if let Some(v) = &props.correlation_data {
        parts.push(format!("correlation-data={}", String::from_utf8_lossy(v)));
    }
    if let Some(v) = props.topic_alias {
        parts.push(format!("topic-alias={v}"));
    }
    for id in &props.subscription_identifiers {
        parts.push(format!("subscription-id={id}"));
    }
    for (k, v) in &props.user_properties {
        parts.push(format!("{k}={v}"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_output_names_topic_and_properties() {
        let p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: TopicName::try_from_str("a/b").unwrap(),
            packet_id: None,
            properties: PublishProperties {
                content_type: Some("text/plain".into()),
                user_properties: vec![("k".into(), "v".into())],
                ..Default::default()
            },
            payload: Bytes::from_static(b"hello"),
        };
        let mut out = Vec::new();
        print_publish(&mut out, &p, true).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a/b [content-type=text/plain k=v] hello\n");
        let mut out = Vec::new();
        print_publish(&mut out, &p, false).unwrap();
        assert_eq!(out, b"hello\n");
    }
}
