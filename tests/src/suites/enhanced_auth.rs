//! MQTT 5 enhanced authentication (AUTH, issue 5) through an application's hooks, with
//! the SCRAM-SHA-256 example method (`shoal_server::auth::ScramSha256`): the CONNECT →
//! AUTH ↔ AUTH → CONNACK exchange, the identity it establishes as the one ACLs see,
//! refusals (wrong proof, unknown method, AUTH where none may come), re-authentication,
//! and the CONNECT timeout over a client that never answers.
//!
//! The client side of SCRAM is written here from RFC 5802, apart from the broker's, over
//! the raw packet client (paho-mqtt's AUTH support is too thin to drive the exchange).

use std::sync::Arc;

use base64::Engine as _;
use ring::{digest, hmac, pbkdf2};
use shoal_core::ProtocolVersion::{V3_1_1, V5};
use shoal_server::auth::{AuthMethod, Hooks, ScramSha256, SCRAM_SHA_256};

use crate::harness::TestBroker;
use crate::raw::wire::{self, find_property, ConnectOptions, Property};
use crate::raw::{Incoming, RawClient, DEADLINE};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const CONTINUE: u8 = 0x18;
const REAUTHENTICATE: u8 = 0x19;

/// The application's hooks: SCRAM-SHA-256 with one user, alice.
struct ScramHooks(ScramSha256);

impl Hooks for ScramHooks {
    fn auth_method(&self, method: &str) -> Option<&dyn AuthMethod> {
        (method == SCRAM_SHA_256).then_some(&self.0 as &dyn AuthMethod)
    }
}

/// A broker with [`ScramHooks`] and an ACL file that lets alice use `alice/#` only.
fn broker(extra: &str) -> (TestBroker, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user alice\ntopic readwrite alice/#\n").unwrap();
    let scram = ScramSha256::new();
    scram.add_user("alice", b"wonder land").unwrap();
    let config = format!("{extra}\n[auth]\nacl_file = {:?}\n", acl.display().to_string());
    (TestBroker::with_hooks(&config, Arc::new(ScramHooks(scram))), dir)
}

/// The client side of one SCRAM-SHA-256 exchange (RFC 5802 section 3).
struct Scram {
    password: Vec<u8>,
    first_bare: String,
    /// server-final-message the broker must send to prove it knows the password.
    expected_final: Option<String>,
}

impl Scram {
    fn new(user: &str, password: &str, nonce: &str) -> Self {
        Self {
            password: password.as_bytes().to_vec(),
            first_bare: format!("n={user},r={nonce}"),
            expected_final: None,
        }
    }

    fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare).into_bytes()
    }

    /// client-final-message for the broker's server-first-message.
    fn client_final(&mut self, server_first: &[u8]) -> Vec<u8> {
        let server_first = std::str::from_utf8(server_first).unwrap();
        let field = |name: &str| {
            server_first.split(',').find_map(|f| f.strip_prefix(name)).unwrap().to_owned()
        };
        let (nonce, salt, iterations) = (field("r="), field("s="), field("i="));
        assert!(nonce.starts_with(self.first_bare.split("r=").nth(1).unwrap()), "{nonce}");
        let iterations = iterations.parse().unwrap();
        let mut salted = [0u8; 32];
        let salt = B64.decode(salt).unwrap();
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, &self.password, &mut salted);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> =
            client_key.as_ref().iter().zip(signature.as_ref()).map(|(k, s)| k ^ s).collect();
        let server_key =
            hmac::Key::new(hmac::HMAC_SHA256, hmac::sign(&key, b"Server Key").as_ref());
        let server_signature = hmac::sign(&server_key, auth_message.as_bytes());
        self.expected_final = Some(format!("v={}", B64.encode(server_signature.as_ref())));
        format!("{without_proof},p={}", B64.encode(proof)).into_bytes()
    }
}

fn data(props: &[Property]) -> Vec<u8> {
    find_property(props, 0x16).map(|p| p.value.clone()).unwrap_or_default()
}

fn method(props: &[Property]) -> String {
    find_property(props, 0x15)
        .map(|p| String::from_utf8(p.value.clone()).unwrap())
        .unwrap_or_default()
}

/// Sends a SCRAM CONNECT and returns the client with the broker's challenge.
fn scram_connect(broker: &TestBroker, id: &str, scram: &Scram) -> (RawClient, Vec<u8>) {
    let mut opts = ConnectOptions::new(V5, id);
    opts.authentication = Some((SCRAM_SHA_256.into(), scram.client_first()));
    let (client, reply) = RawClient::connect_raw(broker.addr(), &opts);
    match reply {
        Ok(Incoming::Auth(CONTINUE, props)) => {
            assert_eq!(method(&props), SCRAM_SHA_256, "[MQTT-4.12.0-5] same method");
            (client, data(&props))
        }
        other => panic!("expected AUTH Continue, got {other:?}"),
    }
}

/// A whole successful SCRAM login as alice.
fn login(broker: &TestBroker, id: &str) -> RawClient {
    let mut scram = Scram::new("alice", "wonder land", "fyko+d2lbbFgONRv9qkxdawL");
    let (mut client, server_first) = scram_connect(broker, id, &scram);
    client.send(&wire::auth(CONTINUE, SCRAM_SHA_256, &scram.client_final(&server_first)));
    match client.expect() {
        Incoming::ConnAck { code: 0, properties, .. } => {
            assert_eq!(method(&properties), SCRAM_SHA_256, "[MQTT-4.12.0-5] in CONNACK");
            let expected = scram.expected_final.as_deref().unwrap().as_bytes();
            assert_eq!(data(&properties), expected, "the broker proves it knows the key");
        }
        other => panic!("expected CONNACK success, got {other:?}"),
    }
    client
}

#[test]
fn scram_exchange_connects_and_acls_see_the_methods_username() {
    let (broker, _dir) = broker("");
    let mut client = login(&broker, "scram-1");
    // The ACL file grants alice/# to alice only: the identity is SCRAM's user.
    assert_eq!(client.subscribe(&[("alice/#", 1)]), [1]);
    assert_eq!(client.subscribe(&[("bob/#", 1)]), [0x87]);
    client.publish("alice/x", b"hi", 1, false);
    assert_eq!(client.expect_publish_acked().payload, b"hi");
}

#[test]
fn wrong_password_is_not_authorized() {
    let (broker, _dir) = broker("");
    for (user, password) in [("alice", "wonderland"), ("mallory", "wonder land")] {
        let mut scram = Scram::new(user, password, "abcdef");
        let (mut client, server_first) = scram_connect(&broker, "scram-bad", &scram);
        client.send(&wire::auth(CONTINUE, SCRAM_SHA_256, &scram.client_final(&server_first)));
        let seen = client.expect_closed(DEADLINE);
        assert!(
            matches!(seen.as_slice(), [Incoming::ConnAck { code: 0x87, .. }]),
            "{user}: expected CONNACK 0x87, got {seen:?}"
        );
    }
}

#[test]
fn unknown_method_is_a_bad_authentication_method() {
    let (broker, _dir) = broker("");
    let mut opts = ConnectOptions::new(V5, "kerberos");
    opts.authentication = Some(("GSSAPI".into(), b"ticket".to_vec()));
    let (mut client, reply) = RawClient::connect_raw(broker.addr(), &opts);
    assert!(matches!(reply, Ok(Incoming::ConnAck { code: 0x8C, .. })), "{reply:?}");
    client.expect_closed(DEADLINE);
    // Without any hook providing methods, the same.
    let plain = TestBroker::start();
    let (_, reply) = RawClient::connect_raw(plain.addr(), &opts);
    assert!(matches!(reply, Ok(Incoming::ConnAck { code: 0x8C, .. })), "{reply:?}");
}

#[test]
fn auth_where_none_may_come_closes_the_connection() {
    let (broker, _dir) = broker("");
    // 3.1.1 has no AUTH packet: malformed, closed without a word.
    let mut old = RawClient::connect(broker.addr(), V3_1_1, "old");
    old.send(&[0xF0, 0x00]);
    assert_eq!(old.expect_closed(DEADLINE), []);
    // A v5 client whose CONNECT named no method may not send AUTH [MQTT-4.12.0-7].
    let mut plain = RawClient::connect(broker.addr(), V5, "plain");
    plain.send(&wire::auth(REAUTHENTICATE, SCRAM_SHA_256, b"n,,n=alice,r=x"));
    assert_eq!(plain.expect_closed_with_reason(DEADLINE), Some(0x82));
    // Nothing but AUTH or DISCONNECT before CONNACK [MQTT-3.1.2-30].
    let scram = Scram::new("alice", "wonder land", "early");
    let (mut eager, _) = scram_connect(&broker, "eager", &scram);
    eager.send(&wire::pingreq());
    let seen = eager.expect_closed(DEADLINE);
    assert!(matches!(seen.as_slice(), [Incoming::ConnAck { code: 0x82, .. }]), "{seen:?}");
}

#[test]
fn reauthentication_succeeds_with_the_password_and_fails_without_it() {
    let (broker, _dir) = broker("");
    let mut client = login(&broker, "scram-re");
    for round in 0..2 {
        let mut scram = Scram::new("alice", "wonder land", &format!("again{round}"));
        client.send(&wire::auth(REAUTHENTICATE, SCRAM_SHA_256, &scram.client_first()));
        let server_first = match client.expect() {
            Incoming::Auth(CONTINUE, props) => data(&props),
            other => panic!("expected AUTH Continue, got {other:?}"),
        };
        client.send(&wire::auth(CONTINUE, SCRAM_SHA_256, &scram.client_final(&server_first)));
        match client.expect() {
            Incoming::Auth(0x00, props) => {
                assert_eq!(method(&props), SCRAM_SHA_256);
                assert_eq!(data(&props), scram.expected_final.as_deref().unwrap().as_bytes());
            }
            other => panic!("expected AUTH Success, got {other:?}"),
        }
        assert_eq!(client.subscribe(&[("alice/#", 1)]), [1], "still connected as alice");
    }
    let mut wrong = Scram::new("alice", "guess", "third");
    client.send(&wire::auth(REAUTHENTICATE, SCRAM_SHA_256, &wrong.client_first()));
    let server_first = match client.expect() {
        Incoming::Auth(CONTINUE, props) => data(&props),
        other => panic!("expected AUTH Continue, got {other:?}"),
    };
    client.send(&wire::auth(CONTINUE, SCRAM_SHA_256, &wrong.client_final(&server_first)));
    assert_eq!(client.expect_closed_with_reason(DEADLINE), Some(0x87));
}

#[test]
fn reauthentication_must_keep_the_method() {
    // [MQTT-4.12.1-1]; 0x8C is not a DISCONNECT code, so Protocol Error.
    let (broker, _dir) = broker("");
    let mut client = login(&broker, "scram-switch");
    client.send(&wire::auth(REAUTHENTICATE, "SCRAM-SHA-1", b"n,,n=alice,r=x"));
    assert_eq!(client.expect_closed_with_reason(DEADLINE), Some(0x82));
}

#[test]
fn a_client_that_never_answers_the_challenge_is_closed_by_the_connect_timeout() {
    let (broker, _dir) = broker("[limits]\nconnect_timeout_secs = 1");
    let scram = Scram::new("alice", "wonder land", "silent");
    let (mut client, _) = scram_connect(&broker, "silent", &scram);
    assert_eq!(client.expect_closed(DEADLINE), [], "closed without CONNACK");
}
