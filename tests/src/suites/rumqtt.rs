//! rumqttc's synchronous clients (3.1.1 and 5.0) driven with deadlines.
//!
//! rumqttc makes progress only while its `Connection` is iterated, so each wrapper
//! iterates it on a thread and forwards events over a channel; the test thread then
//! waits for the event it needs with a deadline. The thread ends when the client is
//! dropped (rumqttc reports "requests done") or on the first connection error, so a
//! broken connection is seen by the test instead of being silently re-dialled.

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use crate::raw::DEADLINE;

/// A rumqttc MQTT 3.1.1 client.
pub struct Rumqtt4 {
    pub client: rumqttc::Client,
    events: Receiver<Result<rumqttc::Event, String>>,
}

impl Rumqtt4 {
    /// Connects with a clean session and waits for CONNACK.
    pub fn connect(addr: SocketAddr, id: &str) -> Self {
        let mut opts = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(1 << 20, 1 << 20);
        Self::connect_with(opts)
    }

    /// Connects with the given options and waits for CONNACK.
    pub fn connect_with(opts: rumqttc::MqttOptions) -> Self {
        let (client, mut connection) = rumqttc::Client::new(opts, 1000);
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for event in connection.iter() {
                let failed = event.is_err();
                if tx.send(event.map_err(|e| e.to_string())).is_err() || failed {
                    break;
                }
            }
        });
        let me = Self { client, events };
        me.wait("CONNACK", |e| matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))));
        me
    }

    /// Waits for an event matching `pred`, dropping others.
    pub fn wait(&self, what: &str, pred: impl Fn(&rumqttc::Event) -> bool) -> rumqttc::Event {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(e)) if pred(&e) => return e,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("rumqttc v4 waiting for {what}: connection error {e}"),
                Err(e) => panic!("rumqttc v4 waiting for {what}: {e}"),
            }
        }
    }

    /// Subscribes and waits for SUBACK.
    pub fn subscribe(&self, filter: &str, qos: rumqttc::QoS) {
        self.client.subscribe(filter, qos).unwrap();
        self.wait("SUBACK", |e| matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))));
    }

    /// Publishes; for QoS 1/2 waits until the broker acknowledged (PUBACK / PUBCOMP).
    pub fn publish(&self, topic: &str, qos: rumqttc::QoS, retain: bool, payload: &[u8]) {
        self.client.publish(topic, qos, retain, payload.to_vec()).unwrap();
        match qos {
            rumqttc::QoS::AtMostOnce => {
                self.wait("PUBLISH written", |e| {
                    matches!(e, rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(_)))
                });
            }
            rumqttc::QoS::AtLeastOnce => {
                self.wait("PUBACK", |e| {
                    matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))
                });
            }
            rumqttc::QoS::ExactlyOnce => {
                self.wait("PUBCOMP", |e| {
                    matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::PubComp(_)))
                });
            }
        }
    }

    /// Waits for an incoming PUBLISH (rumqttc acks it itself).
    pub fn expect_publish(&self) -> rumqttc::Publish {
        match self
            .wait("PUBLISH", |e| matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::Publish(_))))
        {
            rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => p,
            _ => unreachable!("wait returned a non-matching event"),
        }
    }
}

/// A rumqttc MQTT 5 client.
pub struct Rumqtt5 {
    pub client: rumqttc::v5::Client,
    events: Receiver<Result<rumqttc::v5::Event, String>>,
}

type V5Packet = rumqttc::v5::mqttbytes::v5::Packet;
pub use rumqttc::v5::mqttbytes::QoS as V5QoS;

impl Rumqtt5 {
    /// Connects with clean start and waits for CONNACK.
    pub fn connect(addr: SocketAddr, id: &str) -> Self {
        let mut opts = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(Some(1 << 20));
        let (client, mut connection) = rumqttc::v5::Client::new(opts, 1000);
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for event in connection.iter() {
                let failed = event.is_err();
                if tx.send(event.map_err(|e| e.to_string())).is_err() || failed {
                    break;
                }
            }
        });
        let me = Self { client, events };
        me.wait("CONNACK", |e| matches!(e, rumqttc::v5::Event::Incoming(V5Packet::ConnAck(_))));
        me
    }

    /// Waits for an event matching `pred`, dropping others.
    pub fn wait(
        &self,
        what: &str,
        pred: impl Fn(&rumqttc::v5::Event) -> bool,
    ) -> rumqttc::v5::Event {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(e)) if pred(&e) => return e,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("rumqttc v5 waiting for {what}: connection error {e}"),
                Err(e) => panic!("rumqttc v5 waiting for {what}: {e}"),
            }
        }
    }

    /// Subscribes and waits for SUBACK.
    pub fn subscribe(&self, filter: &str, qos: V5QoS) {
        self.client.subscribe(filter, qos).unwrap();
        self.wait("SUBACK", |e| matches!(e, rumqttc::v5::Event::Incoming(V5Packet::SubAck(_))));
    }

    /// Publishes; for QoS 1/2 waits until the broker acknowledged (PUBACK / PUBCOMP).
    pub fn publish(&self, topic: &str, qos: V5QoS, retain: bool, payload: &[u8]) {
        self.client.publish(topic, qos, retain, payload.to_vec()).unwrap();
        let (what, done): (&str, fn(&rumqttc::v5::Event) -> bool) = match qos {
            V5QoS::AtMostOnce => ("PUBLISH written", |e| {
                matches!(e, rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Publish(_)))
            }),
            V5QoS::AtLeastOnce => {
                ("PUBACK", |e| matches!(e, rumqttc::v5::Event::Incoming(V5Packet::PubAck(_))))
            }
            V5QoS::ExactlyOnce => {
                ("PUBCOMP", |e| matches!(e, rumqttc::v5::Event::Incoming(V5Packet::PubComp(_))))
            }
        };
        self.wait(what, done);
    }

    /// Waits for an incoming PUBLISH (rumqttc acks it itself).
    pub fn expect_publish(&self) -> rumqttc::v5::mqttbytes::v5::Publish {
        match self
            .wait("PUBLISH", |e| matches!(e, rumqttc::v5::Event::Incoming(V5Packet::Publish(_))))
        {
            rumqttc::v5::Event::Incoming(V5Packet::Publish(p)) => p,
            _ => unreachable!("wait returned a non-matching event"),
        }
    }
}
