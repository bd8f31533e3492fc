//! Listener options beside the transport: the PROXY protocol (v1 on plain TCP, v2 in
//! front of TLS) and per-listener connection limits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use shoal_core::ProtocolVersion;

use crate::harness::{wait_until, BrokerProcess, TestBroker};
use crate::pki::{tls_keys, Pki};
use crate::raw::stream;
use crate::raw::{text, RawClient, DEADLINE};

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, DEADLINE).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

/// A version 2 PROXY header for a TCP over IPv4 client `192.0.2.9:40001`.
fn proxy_v2_header() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 0x0C]); // v2 PROXY, TCP/IPv4, 12 bytes
    h.extend_from_slice(&[192, 0, 2, 9, 127, 0, 0, 1]); // source, destination
    h.extend_from_slice(&40001u16.to_be_bytes());
    h.extend_from_slice(&8883u16.to_be_bytes());
    h
}

/// Whether the broker closes `s` (after whatever it answers) within the deadline.
fn is_closed(mut s: &TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn proxy_protocol_headers_give_the_client_address_over_tcp_and_tls() {
    let pki = Pki::new("Shoal test CA");
    let server = pki.server("server");
    let config = pki.dir().join("shoal.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\nproxy_protocol = true\n\
             [[listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"tls\"\nproxy_protocol = true\n{}\
             [limits]\nconnect_timeout_secs = 2\n",
            tls_keys(&server)
        ),
    )
    .unwrap();
    let broker = BrokerProcess::start_with_config(&config, 2);
    let (tcp_addr, tls_addr) = (broker.listening()[0].1, broker.listening()[1].1);
    let v = ProtocolVersion::V3_1_1;

    // v1 on plain TCP, with the CONNECT in the same segment as the header.
    let mut s = tcp(tcp_addr);
    let mut first = b"PROXY TCP4 192.0.2.7 10.0.0.1 12345 1883\r\n".to_vec();
    first.extend(crate::raw::wire::connect(&crate::raw::ConnectOptions::new(v, "behind-lb")));
    s.write_all(&first).unwrap();
    let mut c = RawClient::over(Box::new(s), v);
    assert!(matches!(c.expect(), crate::raw::Incoming::ConnAck { code: 0, .. }));
    c.subscribe_one("p", 0);

    // v2 in front of TLS, the ClientHello in the same write as the header (as a
    // balancer that forwards the client's first segment at once sends them).
    let tls = stream::tls_after(tcp(tls_addr), pki.client_config(None), &proxy_v2_header());
    let tls = tls.unwrap_or_else(|e| panic!("TLS behind a PROXY v2 header: {e}"));
    let mut secure = RawClient::connect_over(Box::new(tls), v, "behind-lb-tls");
    secure.publish("p", b"via proxy", 0, false);
    assert_eq!(text(&c.expect_publish().payload), "via proxy");

    wait_until(DEADLINE, "the proxied addresses in the connect log lines", || {
        let log = broker.stderr();
        log.contains("client behind-lb connected from 192.0.2.7:12345")
            && log.contains("client behind-lb-tls connected from 192.0.2.9:40001")
    });

    // Without a header (plain MQTT straight to the port), or with a broken one, the
    // connection is closed at once.
    let mut bare = tcp(tcp_addr);
    bare.write_all(&crate::raw::wire::connect(&crate::raw::ConnectOptions::new(v, "bare")))
        .unwrap();
    assert!(is_closed(&bare), "connection without a PROXY header");
    let mut broken = tcp(tcp_addr);
    broken.write_all(b"PROXY TCP4 192.0.2.7 nonsense\r\n").unwrap();
    assert!(is_closed(&broken), "connection with a malformed PROXY header");
    // The clients behind the proxy were not disturbed.
    c.ping();
    secure.ping();
}

#[test]
fn a_listener_refuses_connections_beyond_its_own_limit() {
    let broker = TestBroker::with_config(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nmax_connections = 2\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n",
    );
    let (limited, other) = (broker.addrs()[0], broker.addrs()[1]);
    let v = ProtocolVersion::V3_1_1;
    let a = RawClient::connect(limited, v, "a");
    let mut b = RawClient::connect(limited, v, "b");
    let third = tcp(limited);
    assert!(is_closed(&third), "third connection on a listener limited to 2");
    // The other listener is not limited by it.
    let mut elsewhere = RawClient::connect(other, v, "elsewhere");
    elsewhere.ping();
    // A closed connection frees its place.
    a.disconnect();
    wait_until(DEADLINE, "a place on the limited listener to free up", || {
        let (mut c, reply) =
            RawClient::connect_raw(limited, &crate::raw::ConnectOptions::new(v, "d"));
        let ok = matches!(reply, Ok(crate::raw::Incoming::ConnAck { code: 0, .. }));
        if ok {
            c.ping();
        }
        ok
    });
    b.ping();
}
