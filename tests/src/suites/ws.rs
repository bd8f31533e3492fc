//! WebSocket listeners: MQTT over `ws` and `wss` with the test's own RFC 6455 client
//! (packets split across frames, several packets in one frame, ping), answers to plain
//! HTTP requests, handshakes that never finish, and MQTT.js from Node over `ws://` and
//! `wss://`, and from a page in headless Chromium over `wss://`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use shoal_core::ProtocolVersion;

use crate::harness::{js_dir, run_with_timeout, ExternalTool, TestBroker};
use crate::pki::{tls_keys, Pki};
use crate::raw::stream::{self, ClientStream, WsStream};
use crate::raw::wire;
use crate::raw::{text, ConnectOptions, Incoming, RawClient, DEADLINE};

/// A broker with a `ws` listener, a `wss` one and a plain TCP one, in that order.
fn ws_broker(pki: &Pki) -> TestBroker {
    let server = pki.server("server");
    TestBroker::with_config(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"ws\"\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"wss\"\n{}\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         [limits]\nconnect_timeout_secs = 1\n",
        tls_keys(&server)
    ))
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, DEADLINE).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn ws(addr: SocketAddr) -> WsStream<TcpStream> {
    stream::websocket(tcp(addr), "/mqtt", "mqtt").unwrap_or_else(|e| panic!("upgrade: {e:?}"))
}

fn wss(addr: SocketAddr, pki: &Pki) -> WsStream<stream::TlsStream> {
    let tls = stream::tls(tcp(addr), pki.client_config(None)).unwrap();
    stream::websocket(tls, "/mqtt", "mqtt").unwrap_or_else(|e| panic!("upgrade: {e:?}"))
}

#[test]
fn ws_and_wss_clients_exchange_messages_with_tcp() {
    let pki = Pki::new("Shoal test CA");
    let broker = ws_broker(&pki);
    let &[ws_addr, wss_addr, tcp_addr] = broker.addrs() else { panic!("three listeners") };
    let v = ProtocolVersion::V3_1_1;
    let mut over_ws = RawClient::connect_over(Box::new(ws(ws_addr)), v, "over-ws");
    let mut over_wss = RawClient::connect_over(Box::new(wss(wss_addr, &pki)), v, "over-wss");
    let mut plain = RawClient::connect(tcp_addr, v, "plain");
    over_ws.subscribe_one("a/#", 1);
    over_wss.subscribe_one("a/#", 1);
    plain.subscribe_one("b/#", 0);

    plain.publish("a/1", b"from tcp", 1, false);
    for c in [&mut over_ws, &mut over_wss] {
        let p = c.expect_publish();
        assert_eq!(text(&p.payload), "from tcp");
        c.ack(&p);
    }
    // Bigger than one outgoing frame and than a TLS record, both ways.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    over_wss.publish("b/big", &big, 1, false);
    assert_eq!(plain.expect_publish().payload, big, "from wss");
    over_ws.publish("b/small", b"from ws", 0, false);
    assert_eq!(text(&plain.expect_publish().payload), "from ws");
    plain.publish("a/big", &big, 0, false);
    assert_eq!(over_ws.expect_publish().payload, big, "to ws");
    assert_eq!(over_wss.expect_publish().payload, big, "to wss");
    over_ws.disconnect();
    over_wss.disconnect();
}

/// One MQTT packet in several frames (also as a fragmented WebSocket message with a
/// ping between the fragments), and several packets in one frame.
#[test]
fn packets_split_across_frames_and_packed_into_one_frame() {
    let pki = Pki::new("Shoal test CA");
    let broker = ws_broker(&pki);
    let v = ProtocolVersion::V3_1_1;
    for (name, mut stream) in [
        ("ws", Box::new(ws(broker.addrs()[0])) as Box<dyn SplitSend>),
        ("wss", Box::new(wss(broker.addrs()[1], &pki))),
    ] {
        let connect = wire::connect(&ConnectOptions::new(v, &format!("split-{name}")));
        // A fragmented message: first fragment, a ping, a continuation, the final one.
        stream.frame(0x2, false, &connect[..2]);
        stream.frame(0x9, true, b"are you there");
        stream.frame(0x0, false, &connect[2..7]);
        stream.frame(0x0, true, &connect[7..]);
        let mut c = RawClient::over(stream.into_client_stream(), v);
        assert!(matches!(c.expect(), Incoming::ConnAck { code: 0, .. }), "{name}: CONNACK");
        // SUBSCRIBE, PUBLISH and PINGREQ in one frame, then a PUBLISH in three frames.
        let topic = format!("packed/{name}");
        let mut packed = wire::subscribe(v, 1, &[(&topic, 0)]);
        packed.extend(wire::publish(v, &topic, b"one frame", 0, false, false, 0));
        packed.extend(wire::pingreq());
        c.send(&packed);
        assert!(matches!(c.expect(), Incoming::SubAck(1, _)), "{name}: SUBACK");
        assert_eq!(text(&c.expect_publish().payload), "one frame", "{name}");
        assert!(matches!(c.expect(), Incoming::PingResp), "{name}: PINGRESP");
        let split = wire::publish(v, &topic, b"three frames", 0, false, false, 0);
        for part in [&split[..1], &split[1..4], &split[4..]] {
            c.send(part);
        }
        assert_eq!(text(&c.expect_publish().payload), "three frames", "{name}");
        c.disconnect();
    }
}

/// What the packing test needs of a WebSocket stream, over TCP or TLS alike.
trait SplitSend {
    fn frame(&mut self, opcode: u8, fin: bool, payload: &[u8]);
    fn into_client_stream(self: Box<Self>) -> Box<dyn ClientStream>;
}

impl<S: ClientStream + 'static> SplitSend for WsStream<S> {
    fn frame(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        self.send_frame(opcode, fin, payload).unwrap();
    }
    fn into_client_stream(self: Box<Self>) -> Box<dyn ClientStream> {
        self
    }
}

/// Sends `request` and reads the whole answer (the broker closes after it).
fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = tcp(addr);
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap_or_else(|e| panic!("no answer to {request:?}: {e}"));
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn plain_http_requests_get_a_short_answer_and_the_port_keeps_working() {
    let pki = Pki::new("Shoal test CA");
    let broker = ws_broker(&pki);
    let addr = broker.addrs()[0];
    let answer = http(addr, "GET /mqtt HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 426 "), "{answer}");
    assert!(answer.contains("MQTT over WebSocket"), "{answer}");
    let answer = http(addr, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
    let answer = http(addr, "POST /mqtt HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
    // Raw MQTT on a WebSocket port is refused at once, not left hanging.
    let connect = wire::connect(&ConnectOptions::new(ProtocolVersion::V3_1_1, "raw"));
    let answer = http(addr, &String::from_utf8_lossy(&connect));
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    // Another path is a 404 from the upgrade itself.
    match stream::websocket(tcp(addr), "/other", "mqtt") {
        Err(Ok(refused)) => assert!(refused.response.starts_with("HTTP/1.1 404 "), "{refused:?}"),
        other => panic!("upgrade on /other: {:?}", other.map(|_| ())),
    }
    RawClient::connect_over(Box::new(ws(addr)), ProtocolVersion::V5, "after-http").disconnect();
}

/// Connections that never finish the upgrade (silent, or half a request, over `ws` and
/// `wss`) are closed at the CONNECT timeout (1 s here) while a healthy client is served.
#[test]
fn silent_and_half_upgrades_time_out_without_harm() {
    let pki = Pki::new("Shoal test CA");
    let broker = ws_broker(&pki);
    let &[ws_addr, wss_addr, _] = broker.addrs() else { panic!("three listeners") };
    let v = ProtocolVersion::V3_1_1;
    let mut healthy = RawClient::connect_over(Box::new(ws(ws_addr)), v, "healthy");
    healthy.subscribe_one("h", 0);

    let silent = tcp(ws_addr);
    let mut half = tcp(ws_addr);
    half.write_all(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n").unwrap();
    let mut half_tls = stream::tls(tcp(wss_addr), pki.client_config(None)).unwrap();
    half_tls.write_all(b"GET /mqtt HTTP/1.1\r\n").unwrap();
    half_tls.flush().unwrap();
    let mut upgraded_silent = ws(ws_addr);

    let closed = |name: &str, s: &mut dyn Read| {
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
                Err(e) => panic!("{name} was not closed within {DEADLINE:?}: {e}"),
            }
        }
    };
    for s in [&silent, &half] {
        s.set_read_timeout(Some(DEADLINE)).unwrap();
    }
    ClientStream::set_read_timeout(&half_tls, Some(DEADLINE)).unwrap();
    ClientStream::set_read_timeout(&upgraded_silent, Some(DEADLINE)).unwrap();
    closed("silent", &mut &silent);
    closed("half request", &mut &half);
    closed("half request over TLS", &mut half_tls);
    closed("upgraded but no CONNECT", &mut upgraded_silent);

    let mut publisher = RawClient::connect_over(Box::new(wss(wss_addr, &pki)), v, "publisher");
    publisher.publish("h", b"healthy", 0, false);
    assert_eq!(text(&healthy.expect_publish().payload), "healthy");
}

fn mqtt_js(url: &str, ca: Option<&std::path::Path>, version: &str) {
    let mut cmd = Command::new("node");
    cmd.current_dir(js_dir()).arg("roundtrip.js").arg(url);
    cmd.arg(ca.map_or_else(String::new, |p| p.display().to_string())).arg(version);
    let out = run_with_timeout(&mut cmd, DEADLINE + DEADLINE);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "MQTT.js on {url} (v{version}): {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scheme = url.split(':').next().unwrap_or_default();
    assert_eq!(stdout.trim(), format!("received js hello over {scheme}"), "{url}");
}

#[test]
fn mqtt_js_connects_over_ws_and_wss() {
    if !ExternalTool::MqttJs.available() {
        return;
    }
    let pki = Pki::new("Shoal test CA");
    let broker = ws_broker(&pki);
    let ws_url = format!("ws://127.0.0.1:{}/mqtt", broker.addrs()[0].port());
    let wss_url = format!("wss://localhost:{}/mqtt", broker.addrs()[1].port());
    for version in ["4", "5"] {
        mqtt_js(&ws_url, None, version);
        mqtt_js(&wss_url, Some(&pki.ca_file()), version);
    }
}

/// MQTT.js's browser bundle in a page served on localhost, in headless Chromium
/// (driven by playwright-core), over `wss://` and `ws://`.
#[test]
fn mqtt_js_in_headless_chromium_connects_over_wss() {
    if !ExternalTool::Chromium.available() {
        return;
    }
    let pki = Pki::new("Shoal test CA");
    let broker = ws_broker(&pki);
    for url in [
        format!("wss://localhost:{}/mqtt", broker.addrs()[1].port()),
        format!("ws://127.0.0.1:{}/mqtt", broker.addrs()[0].port()),
    ] {
        let mut cmd = Command::new("node");
        cmd.current_dir(js_dir()).arg("browser.js").arg(&url);
        let out = run_with_timeout(&mut cmd, std::time::Duration::from_secs(60));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "Chromium on {url}: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.trim(), "received hello from the browser", "{url}");
    }
}
