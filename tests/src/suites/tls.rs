//! TLS listeners: MQTT over rustls and over Mosquitto's OpenSSL clients, mutual TLS
//! accepted and refused, handshakes that never finish, and certificate reload on
//! SIGHUP while a client stays connected. Every test makes its own CA (`crate::pki`).

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use shoal_core::ProtocolVersion;

use crate::harness::{run_with_timeout, wait_until, BrokerProcess, ExternalTool, TestBroker};
use crate::pki::{tls_keys, Pki};
use crate::raw::stream;
use crate::raw::{text, RawClient, RecvError, DEADLINE};

/// A broker with a TLS listener first and a plain TCP one second; `extra` goes into the
/// TLS listener's table.
fn tls_broker(pki: &Pki, extra: &str) -> TestBroker {
    let server = pki.server("server");
    TestBroker::with_config(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"tls\"\n{}{extra}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         [limits]\nconnect_timeout_secs = 1\n",
        tls_keys(&server)
    ))
}

fn tls_stream(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<stream::TlsStream> {
    let tcp = TcpStream::connect_timeout(&addr, DEADLINE)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(DEADLINE))?;
    stream::tls(tcp, config)
}

fn tls_client(addr: SocketAddr, config: Arc<ClientConfig>, id: &str) -> RawClient {
    let s = tls_stream(addr, config).unwrap_or_else(|e| panic!("TLS handshake: {e}"));
    RawClient::connect_over(Box::new(s), ProtocolVersion::V3_1_1, id)
}

/// Whether a TLS client with `config` gets an accepted CONNACK. A refused certificate
/// shows as a failed handshake, or (TLS 1.3: the server checks it after the client is
/// done) as an alert or a closed socket on the first read.
fn mqtt_over_tls_accepted(addr: SocketAddr, config: Arc<ClientConfig>) -> bool {
    let Ok(s) = tls_stream(addr, config) else { return false };
    let mut c = RawClient::over(Box::new(s), ProtocolVersion::V3_1_1);
    if c.try_send(&crate::raw::wire::connect(&crate::raw::ConnectOptions::new(
        ProtocolVersion::V3_1_1,
        "mtls",
    )))
    .is_err()
    {
        return false;
    }
    matches!(c.recv(DEADLINE), Ok(crate::raw::Incoming::ConnAck { code: 0, .. }))
}

#[test]
fn tls_client_exchanges_messages_with_a_plain_tcp_client() {
    let pki = Pki::new("Shoal test CA");
    let broker = tls_broker(&pki, "");
    let (tls_addr, tcp_addr) = (broker.addrs()[0], broker.addrs()[1]);
    let mut secure = tls_client(tls_addr, pki.client_config(None), "secure");
    secure.subscribe_one("x/#", 1);
    let mut plain = RawClient::connect(tcp_addr, ProtocolVersion::V3_1_1, "plain");
    plain.subscribe_one("y/#", 0);

    plain.publish("x/1", b"to the TLS client", 1, false);
    let p = secure.expect_publish();
    assert_eq!((p.topic.as_str(), text(&p.payload).as_str()), ("x/1", "to the TLS client"));
    secure.ack(&p);

    // Larger than a TLS record and than rustls' plaintext buffer, both ways.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    secure.publish("y/big", &big, 1, false);
    let p = plain.expect_publish();
    assert_eq!(p.payload, big, "300 KB payload from the TLS client");
    plain.publish("x/big", &big, 0, false);
    let p = secure.expect_publish();
    assert_eq!(p.payload, big, "300 KB payload to the TLS client");
    secure.disconnect();
}

#[test]
fn mutual_tls_accepts_the_ca_s_clients_and_refuses_others() {
    let pki = Pki::new("Shoal test CA");
    let ca = format!(
        "ca_file = {:?}\nclient_certs = \"require\"\n",
        pki.ca_file().display().to_string()
    );
    let broker = tls_broker(&pki, &ca);
    let addr = broker.addrs()[0];

    let good = pki.client("alice", "alice", false);
    assert!(mqtt_over_tls_accepted(addr, pki.client_config(Some(&good))), "valid client cert");

    assert!(!mqtt_over_tls_accepted(addr, pki.client_config(None)), "no client certificate");
    let expired = pki.client("old", "old", true);
    assert!(!mqtt_over_tls_accepted(addr, pki.client_config(Some(&expired))), "expired cert");
    let other = Pki::new("Some other CA");
    let foreign = other.client("mallory", "mallory", false);
    // Trusts our server (our CA) but presents a certificate from the other CA.
    let config = pki.client_config(Some(&foreign));
    assert!(!mqtt_over_tls_accepted(addr, config), "certificate from another CA");

    // The refusals did not disturb the listener.
    assert!(mqtt_over_tls_accepted(addr, pki.client_config(Some(&good))), "valid cert again");
}

#[test]
fn optional_client_certificates_let_clients_without_one_in() {
    let pki = Pki::new("Shoal test CA");
    let ca = format!(
        "ca_file = {:?}\nclient_certs = \"optional\"\nusername_from = \"cn\"\n",
        pki.ca_file().display().to_string()
    );
    let broker = tls_broker(&pki, &ca);
    let addr = broker.addrs()[0];
    assert!(mqtt_over_tls_accepted(addr, pki.client_config(None)), "no certificate");
    let good = pki.client("bob", "bob", false);
    assert!(mqtt_over_tls_accepted(addr, pki.client_config(Some(&good))), "valid certificate");
    let other = Pki::new("Some other CA");
    let foreign = other.client("eve", "eve", false);
    assert!(!mqtt_over_tls_accepted(addr, pki.client_config(Some(&foreign))), "foreign cert");
}

/// A peer that never finishes its handshake is closed at the CONNECT timeout (1 s
/// here); bytes that are not TLS are refused at once; neither disturbs a healthy client.
#[test]
fn silent_half_open_and_garbage_handshakes_time_out_without_harm() {
    let pki = Pki::new("Shoal test CA");
    let broker = tls_broker(&pki, "");
    let addr = broker.addrs()[0];
    let mut healthy = tls_client(addr, pki.client_config(None), "healthy");
    healthy.subscribe_one("t", 0);

    let silent = TcpStream::connect(addr).unwrap();
    // The first bytes of a TLS record header (handshake, TLS 1.0), then nothing.
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage
        .write_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00 plain MQTT to a TLS port")
        .unwrap();

    for (name, s) in [("garbage", &garbage), ("silent", &silent), ("half-open", &half)] {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut buf = [0u8; 256];
        let mut r = s;
        // The broker may answer with an alert first; then it closes.
        let closed = loop {
            match std::io::Read::read(&mut r, &mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        assert!(closed, "{name} connection was not closed within {DEADLINE:?}");
    }
    // The healthy client was served all along.
    let mut publisher = tls_client(addr, pki.client_config(None), "publisher");
    publisher.publish("t", b"still here", 0, false);
    assert_eq!(text(&healthy.expect_publish().payload), "still here");
    healthy.ping();
}

#[test]
fn mosquitto_clients_connect_with_cafile_cert_and_key() {
    if !ExternalTool::MosquittoClients.available() {
        return;
    }
    let pki = Pki::new("Shoal test CA");
    let ca = format!(
        "ca_file = {:?}\nclient_certs = \"require\"\n",
        pki.ca_file().display().to_string()
    );
    let broker = tls_broker(&pki, &ca);
    let port = broker.addrs()[0].port().to_string();
    let client = pki.client("mosq", "mosq", false);
    let tls_args = |cmd: &mut Command| {
        cmd.args(["-h", "localhost", "-p", &port, "--cafile"])
            .arg(pki.ca_file())
            .arg("--cert")
            .arg(&client.cert_file)
            .arg("--key")
            .arg(&client.key_file);
    };
    // A retained message: the subscriber gets it however late it subscribes.
    let mut publish = Command::new("mosquitto_pub");
    tls_args(&mut publish);
    publish.args(["-t", "tls/kept", "-q", "1", "-r", "-m", "over TLS"]);
    let out = run_with_timeout(&mut publish, DEADLINE);
    assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
    let mut subscribe = Command::new("mosquitto_sub");
    tls_args(&mut subscribe);
    subscribe.args(["-t", "tls/#", "-C", "1", "-W", "10", "-F", "%t %p"]);
    let out = run_with_timeout(&mut subscribe, DEADLINE + Duration::from_secs(2));
    assert!(out.status.success(), "mosquitto_sub: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "tls/kept over TLS");

    // Without a client certificate the same tool is refused.
    let mut refused = Command::new("mosquitto_pub");
    refused.args(["-h", "localhost", "-p", &port, "--cafile"]).arg(pki.ca_file());
    refused.args(["-t", "tls/x", "-m", "no cert"]);
    let out = run_with_timeout(&mut refused, DEADLINE);
    assert!(!out.status.success(), "mosquitto_pub without a client certificate was let in");
}

/// The DER of the certificate the server presents to a new connection.
fn presented_cert(addr: SocketAddr, config: Arc<ClientConfig>) -> Option<Vec<u8>> {
    let s = tls_stream(addr, config).ok()?;
    s.conn.peer_certificates()?.first().map(|c| c.as_ref().to_vec())
}

#[test]
fn sighup_reloads_a_changed_certificate_and_keeps_clients_connected() {
    let pki = Pki::new("Shoal test CA");
    let first = pki.server("server");
    let first_der = std::fs::read_to_string(&first.cert_file).unwrap();
    let config_file = pki.dir().join("shoal.toml");
    std::fs::write(
        &config_file,
        format!(
            "workers = 2\n[[listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"tls\"\n{}\n\
             [[listener]]\nbind = \"127.0.0.1:0\"\n",
            tls_keys(&first)
        ),
    )
    .unwrap();
    let broker = BrokerProcess::start_with_config(&config_file, 2);
    let tls_addr = broker.listening()[0].1;
    assert_eq!(broker.listening()[0].0, "tls");
    let config = pki.client_config(None);
    let before = presented_cert(tls_addr, config.clone()).expect("TLS handshake before reload");

    let mut stays = tls_client(tls_addr, config.clone(), "stays");
    stays.subscribe_one("r", 0);

    // New certificate and key under the same file names.
    let second = pki.server("server");
    assert_ne!(std::fs::read_to_string(&second.cert_file).unwrap(), first_der);
    broker.signal("HUP");
    wait_until(DEADLINE, "new connections to get the new certificate", || {
        presented_cert(tls_addr, config.clone()).is_some_and(|c| c != before)
    });
    let after = presented_cert(tls_addr, config.clone()).unwrap();

    // A broken certificate file: the reload fails, is logged, the last good one stays.
    std::fs::write(&second.cert_file, "not a certificate").unwrap();
    broker.signal("HUP");
    wait_until(DEADLINE, "the failed reload to be logged", || {
        broker.stderr().contains("not reloaded")
    });
    assert_eq!(presented_cert(tls_addr, config.clone()), Some(after), "kept the last good one");

    // The client connected before both reloads is still served.
    let mut publisher = tls_client(tls_addr, config, "publisher");
    publisher.publish("r", b"after reload", 0, false);
    match stays.recv(DEADLINE) {
        Ok(crate::raw::Incoming::Publish(p)) => assert_eq!(text(&p.payload), "after reload"),
        Err(RecvError::Closed) => panic!("the connected client was dropped by the reload"),
        other => panic!("expected the publish, got {other:?}"),
    }
}

/// With `username_from = "cn"`, the client certificate's Common Name is the user the
/// ACL file sees, whatever User Name the CONNECT carries: alice's certificate may
/// write under `users/alice/` and not under `users/bob/`, even claiming to be bob.
#[test]
fn certificate_username_is_the_user_the_acl_sees() {
    let pki = Pki::new("Shoal test CA");
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    // Anonymous clients (the plain listener) may read everything under users/.
    std::fs::write(&acl, "topic read users/#\n\nuser alice\ntopic write users/alice/#\n").unwrap();
    let server = pki.server("server");
    let broker = TestBroker::with_config(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"tls\"\n{}ca_file = {:?}\n\
         client_certs = \"require\"\nusername_from = \"cn\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         [auth]\nacl_file = {:?}\nallow_anonymous = true\n",
        tls_keys(&server),
        pki.ca_file().display().to_string(),
        acl.display().to_string()
    ));
    let (tls, plain) = (broker.addrs()[0], broker.addrs()[1]);
    let mut watcher = RawClient::connect(plain, ProtocolVersion::V3_1_1, "watcher");
    watcher.subscribe_one("users/#", 1);

    let alice = pki.client("alice", "alice", false);
    let s = tls_stream(tls, pki.client_config(Some(&alice))).expect("TLS handshake");
    let mut device = RawClient::over(Box::new(s), ProtocolVersion::V3_1_1);
    let mut opts = crate::raw::ConnectOptions::new(ProtocolVersion::V3_1_1, "alice-device");
    opts.username = Some("bob".to_owned());
    device.send(&crate::raw::wire::connect(&opts));
    assert!(
        matches!(device.recv(DEADLINE), Ok(crate::raw::Incoming::ConnAck { code: 0, .. })),
        "alice's certificate was not accepted"
    );
    // 3.1.1: a publish the ACL refuses is acknowledged and dropped.
    device.publish("users/bob/door", b"open", 1, false);
    device.publish("users/alice/door", b"closed", 1, false);
    let p = watcher.expect_publish();
    assert_eq!(
        (p.topic.as_str(), text(&p.payload).as_str()),
        ("users/alice/door", "closed"),
        "the first message through must be alice's own: users/bob/door is not hers"
    );
}

/// Failed TLS handshakes are counted in `/metrics`; a good handshake is not.
#[test]
fn failed_handshakes_are_counted_in_the_metrics() {
    let pki = Pki::new("Shoal test CA");
    let server = pki.server("server");
    let broker = TestBroker::with_config(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"tls\"\n{}\n\
         [admin]\nenabled = true\nbind = \"127.0.0.1:0\"\n",
        tls_keys(&server)
    ));
    let addr = broker.addrs()[0];
    let failures = || {
        let body = crate::http::request(broker.admin_addr(), "GET", "/metrics", None, None).text();
        body.lines()
            .find_map(|l| l.strip_prefix("shoal_tls_handshake_failures_total ")?.parse().ok())
            .unwrap_or(-1.0)
    };
    // Plain MQTT where a ClientHello belongs: the handshake fails.
    let mut plain = TcpStream::connect(addr).unwrap();
    let connect = crate::raw::wire::connect(&crate::raw::ConnectOptions::new(
        ProtocolVersion::V3_1_1,
        "not-tls",
    ));
    plain.write_all(&connect).unwrap();
    wait_until(Duration::from_secs(15), "one failed handshake counted", || failures() == 1.0);
    // A good client does not move the count.
    let mut good = tls_client(addr, pki.client_config(None), "good");
    good.ping();
    let mut bad = TcpStream::connect(addr).unwrap();
    bad.write_all(b"\x16\x03\x01\x00\x05hello").unwrap();
    wait_until(Duration::from_secs(15), "the second failure counted", || failures() == 2.0);
}
