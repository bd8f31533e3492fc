//! Password and ACL files (`[auth]`): logins with files written by `shoal passwd` and by
//! Mosquitto's `mosquitto_passwd`, refusal codes per protocol version, anonymous access,
//! ACL decisions on publish, subscribe and (retained) delivery, and reloading the files
//! on SIGHUP while clients stay connected.

use std::path::{Path, PathBuf};
use std::process::Command;

use shoal_core::ProtocolVersion::{self, V3_1, V3_1_1, V5};

use super::MODERN;
use crate::harness::{
    run_with_timeout, shoal_binary, wait_until, BrokerProcess, ExternalTool, TestBroker,
};
use crate::raw::wire::{self, ConnectOptions};
use crate::raw::{Incoming, RawClient, DEADLINE};

/// Adds (or creates the file with) `user`'s password through `shoal passwd -b`.
fn shoal_passwd(file: &Path, user: &str, password: &str, create: bool) {
    let mut cmd = Command::new(shoal_binary());
    cmd.arg("passwd");
    if create {
        cmd.arg("-c");
    }
    cmd.arg("-b").arg(file).args([user, password]);
    let out = run_with_timeout(&mut cmd, DEADLINE);
    assert!(out.status.success(), "shoal passwd: {}", String::from_utf8_lossy(&out.stderr));
}

fn login(
    version: ProtocolVersion,
    id: &str,
    user: Option<&str>,
    pass: Option<&str>,
) -> ConnectOptions {
    let mut opts = ConnectOptions::new(version, id);
    opts.username = user.map(str::to_owned);
    opts.password = pass.map(|p| p.as_bytes().to_vec());
    opts
}

/// The CONNACK code a CONNECT gets (the connection is closed after a refusal).
fn connack_code(addr: std::net::SocketAddr, opts: &ConnectOptions) -> u8 {
    match RawClient::connect_raw(addr, opts).1 {
        Ok(Incoming::ConnAck { code, .. }) => code,
        other => panic!("CONNECT {:?}: expected CONNACK, got {other:?}", opts.client_id),
    }
}

fn auth_config(password_file: &Path, extra: &str) -> String {
    format!("[auth]\npassword_file = {:?}\n{extra}", password_file.display().to_string())
}

#[test]
fn shoal_passwd_file_admits_the_right_password_only() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    shoal_passwd(&pw, "alice", "wonder land", true);
    shoal_passwd(&pw, "bob", "builder", false);
    let broker = TestBroker::with_config(&auth_config(&pw, ""));
    for version in [V3_1, V3_1_1, V5] {
        let ok = login(version, "pw-ok", Some("alice"), Some("wonder land"));
        assert_eq!(connack_code(broker.addr(), &ok), 0, "{version}: right password");
        let ok = login(version, "pw-ok", Some("bob"), Some("builder"));
        assert_eq!(connack_code(broker.addr(), &ok), 0, "{version}: second user");
        // [MQTT-3.2.2] 3.x return code 4 / v5 0x86 Bad User Name or Password.
        let bad_code = if version.is_v5() { 0x86 } else { 4 };
        for (user, pass) in [("alice", "builder"), ("mallory", "wonder land")] {
            let bad = login(version, "pw-bad", Some(user), Some(pass));
            assert_eq!(connack_code(broker.addr(), &bad), bad_code, "{version}: {user}/{pass}");
        }
        // A username without a password field.
        let no_pass = login(version, "pw-none", Some("alice"), None);
        assert_eq!(connack_code(broker.addr(), &no_pass), bad_code, "{version}: no password");
        // Anonymous is off because a password file is set: 3.x 5 / v5 0x87 Not authorized.
        let anon = login(version, "pw-anon", None, None);
        let not_authorized = if version.is_v5() { 0x87 } else { 5 };
        assert_eq!(connack_code(broker.addr(), &anon), not_authorized, "{version}: anonymous");
    }
}

#[test]
fn anonymous_access_can_be_allowed_beside_a_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    shoal_passwd(&pw, "alice", "secret", true);
    let broker = TestBroker::with_config(&auth_config(&pw, "allow_anonymous = true\n"));
    for version in MODERN {
        assert_eq!(connack_code(broker.addr(), &login(version, "anon", None, None)), 0);
        let bad = login(version, "anon-bad", Some("alice"), Some("nope"));
        assert_ne!(connack_code(broker.addr(), &bad), 0, "{version}: a wrong password still fails");
    }
    // Without any file, anonymous is allowed unless turned off.
    let broker = TestBroker::with_config("[auth]\nallow_anonymous = false\n");
    let code = connack_code(broker.addr(), &login(V3_1_1, "anon-off", None, None));
    assert_eq!(code, 5, "anonymous refused when allow_anonymous = false");
    let code = connack_code(broker.addr(), &login(V5, "named", Some("anyone"), Some("x")));
    assert_eq!(code, 0, "without a password file any username is accepted");
}

#[test]
fn mosquitto_passwd_file_works_for_mosquitto_pub_and_raw_clients() {
    if !ExternalTool::MosquittoPasswd.available() || !ExternalTool::MosquittoClients.available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    let out = run_with_timeout(
        Command::new("mosquitto_passwd").args(["-c", "-b"]).arg(&pw).args(["carol", "pa55 word"]),
        DEADLINE,
    );
    assert!(out.status.success(), "mosquitto_passwd: {}", String::from_utf8_lossy(&out.stderr));
    let broker = TestBroker::with_config(&auth_config(&pw, ""));
    let mut sub = RawClient::connect_with(
        broker.addr(),
        &login(V3_1_1, "mp-sub", Some("carol"), Some("pa55 word")),
    )
    .0;
    sub.subscribe_one("mp/#", 1);
    let port = broker.port().to_string();
    let publish = |password: &str, message: &str| {
        run_with_timeout(
            Command::new("mosquitto_pub").args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-V",
                "mqttv5",
                "-q",
                "1",
                "-t",
                "mp/x",
                "-u",
                "carol",
                "-P",
                password,
                "-m",
                message,
            ]),
            DEADLINE,
        )
    };
    let refused = publish("wrong", "refused");
    assert!(!refused.status.success(), "mosquitto_pub with a wrong password succeeded");
    let ok = publish("pa55 word", "hello");
    assert!(ok.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&ok.stderr));
    let got = sub.expect_publish_acked();
    assert_eq!((got.topic.as_str(), got.payload.as_slice()), ("mp/x", &b"hello"[..]));
}

const ACL: &str = "\
# anonymous clients
topic read public/#
pattern readwrite users/%u/#
pattern write clients/%c/status

user alice
topic read public/#
topic deny public/secret/#

user admin
topic readwrite #
";

fn acl_broker(dir: &Path) -> TestBroker {
    let pw = dir.join("passwd");
    shoal_passwd(&pw, "alice", "a", true);
    shoal_passwd(&pw, "admin", "root", false);
    let acl = dir.join("acl");
    std::fs::write(&acl, ACL).unwrap();
    TestBroker::with_config(&auth_config(
        &pw,
        &format!("acl_file = {:?}\nallow_anonymous = true\n", acl.display().to_string()),
    ))
}

fn user(addr: std::net::SocketAddr, version: ProtocolVersion, id: &str, name: &str) -> RawClient {
    let pass = if name == "admin" { "root" } else { "a" };
    RawClient::connect_with(addr, &login(version, id, Some(name), Some(pass))).0
}

#[test]
fn acl_refuses_subscriptions_per_version() {
    let dir = tempfile::tempdir().unwrap();
    let broker = acl_broker(dir.path());
    for version in MODERN {
        let mut alice = user(broker.addr(), version, "dev1", "alice");
        let refused = if version.is_v5() { 0x87 } else { 0x80 };
        let codes = alice.subscribe(&[
            ("users/alice/#", 2),
            ("users/bob/#", 1),
            ("public/#", 1),
            ("public/secret/#", 0),
            ("#", 0),
        ]);
        assert_eq!(codes, vec![2, refused, 1, refused, refused], "{version}");
        let mut anon = RawClient::connect(broker.addr(), version, "anon-1");
        assert_eq!(anon.subscribe(&[("public/#", 0), ("users/alice/#", 0)]), vec![0, refused]);
    }
}

#[test]
fn acl_drops_unauthorised_publishes_with_the_version_s_answer() {
    let dir = tempfile::tempdir().unwrap();
    let broker = acl_broker(dir.path());
    let mut admin = user(broker.addr(), V5, "admin-sub", "admin");
    admin.subscribe_one("#", 1);
    for version in MODERN {
        let mut alice = user(broker.addr(), version, "dev1", "alice");
        // Not hers: v5 PUBACK/PUBREC 0x87; 3.1.1 has no way to say no, so a plain ack.
        let expect = if version.is_v5() { 0x87 } else { 0 };
        let id = alice.publish_no_wait("users/bob/x", b"forged", 1, false);
        let ack = alice.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(i, _) if *i == id));
        assert_eq!(ack, Incoming::PubAck(id, expect), "{version}");
        let id = alice.publish_no_wait("clients/dev2/status", b"forged", 2, false);
        let rec = alice.wait_for("PUBREC", |p| matches!(p, Incoming::PubRec(i, _) if *i == id));
        assert_eq!(rec, Incoming::PubRec(id, expect), "{version}");
        if !version.is_v5() {
            // The 3.x exchange completes as usual.
            alice.send(&crate::raw::wire::ack(crate::raw::wire::kind::PUBREL, id));
            alice.wait_for("PUBCOMP", |p| matches!(p, Incoming::PubComp(i, _) if *i == id));
        }
        // QoS 0 is dropped silently; the allowed ones (%u and %c patterns) go through, in
        // order, so the first the admin sees proves the forged ones were not routed.
        alice.publish("public/x", b"not-writable", 0, false);
        alice.publish("users/alice/x", b"own", 1, false);
        alice.publish("clients/dev1/status", b"up", 2, false);
        let first = admin.expect_publish_acked();
        assert_eq!(
            (first.topic.as_str(), first.payload.as_slice()),
            ("users/alice/x", &b"own"[..])
        );
        let second = admin.expect_publish_acked();
        assert_eq!(second.topic, "clients/dev1/status", "{version}");
        alice.disconnect();
    }
}

#[test]
fn acl_checks_every_delivery_including_retained_ones() {
    let dir = tempfile::tempdir().unwrap();
    let broker = acl_broker(dir.path());
    let mut admin = user(broker.addr(), V5, "admin-pub", "admin");
    admin.publish("public/news", b"n1", 1, true);
    admin.publish("public/secret/plan", b"s1", 1, true);
    admin.publish("users/bob/diary", b"b1", 1, true);
    for version in MODERN {
        let mut alice = user(broker.addr(), version, "dev1", "alice");
        // public/# only partly overlaps the deny rule, so the subscription is granted and
        // each message is checked: the secret retained message is not sent.
        alice.subscribe_one("public/#", 1);
        let retained: Vec<String> = alice
            .ping_then_unread()
            .into_iter()
            .filter_map(|p| match p {
                Incoming::Publish(p) => Some(p.topic),
                _ => None,
            })
            .collect();
        assert_eq!(retained, vec!["public/news".to_owned()], "{version}");
        // Live messages too: the secret one is skipped, the one behind it arrives first.
        admin.publish("public/secret/plan", b"s2", 1, false);
        admin.publish("public/news", b"n2", 1, false);
        let got = alice.expect_publish_acked();
        assert_eq!((got.topic.as_str(), got.payload.as_slice()), ("public/news", &b"n2"[..]));
        alice.disconnect();
    }
}

/// Polls until `opts` is answered with CONNACK `code`.
fn wait_for_connack(addr: std::net::SocketAddr, opts: &ConnectOptions, code: u8, what: &str) {
    wait_until(
        DEADLINE,
        what,
        || matches!(RawClient::connect_raw(addr, opts).1, Ok(Incoming::ConnAck { code: c, .. }) if c == code),
    );
}

fn write_config(dir: &Path, password_file: &Path, acl_file: &Path) -> PathBuf {
    let config = dir.join("shoal.toml");
    let text = format!(
        "workers = 2\n[auth]\npassword_file = {:?}\nacl_file = {:?}\n",
        password_file.display().to_string(),
        acl_file.display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn sighup_reloads_password_and_acl_files_and_keeps_clients_connected() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    let acl = dir.path().join("acl");
    shoal_passwd(&pw, "alice", "old", true);
    std::fs::write(&acl, "user alice\ntopic readwrite a/#\n").unwrap();
    let config = write_config(dir.path(), &pw, &acl);
    let broker = BrokerProcess::start(&["--config", config.to_str().unwrap()]);
    let addr = broker.addr();
    let mut alice = RawClient::connect_with(addr, &login(V5, "stay", Some("alice"), Some("old"))).0;
    alice.subscribe_one("a/#", 1);

    // New password for alice, a new user, and alice may now read b/# too.
    shoal_passwd(&pw, "alice", "new", false);
    shoal_passwd(&pw, "bob", "bob", false);
    std::fs::write(
        &acl,
        "user alice\ntopic readwrite a/#\ntopic read b/#\nuser bob\ntopic write b/#\n",
    )
    .unwrap();
    broker.signal("HUP");
    wait_for_connack(
        addr,
        &login(V5, "bob", Some("bob"), Some("bob")),
        0,
        "bob admitted after SIGHUP",
    );
    assert_eq!(connack_code(addr, &login(V3_1_1, "x", Some("alice"), Some("old"))), 4);
    assert_eq!(connack_code(addr, &login(V3_1_1, "x", Some("alice"), Some("new"))), 0);
    // The connected client was not dropped, and the new ACL applies to it.
    assert_eq!(alice.subscribe(&[("b/#", 1)]), vec![1]);
    let mut bob = RawClient::connect_with(addr, &login(V5, "bob", Some("bob"), Some("bob"))).0;
    bob.publish("b/1", b"hi", 1, false);
    assert_eq!(alice.expect_publish_acked().topic, "b/1");

    // A broken file is refused with a log line; the files in force stay.
    std::fs::write(&pw, "this line has no colon\n").unwrap();
    broker.signal("HUP");
    wait_until(DEADLINE, "the failed reload to be logged", || {
        broker.stderr().contains("previous ones stay in force")
    });
    let stderr = broker.stderr();
    assert!(stderr.contains(&pw.display().to_string()), "the log names the file:\n{stderr}");
    assert_eq!(connack_code(addr, &login(V5, "bob2", Some("bob"), Some("bob"))), 0);
    alice.ping();
}

#[test]
fn acl_checks_the_topic_behind_a_topic_alias() {
    let dir = tempfile::tempdir().unwrap();
    let broker = acl_broker(dir.path());
    let mut admin = user(broker.addr(), V5, "admin-alias", "admin");
    admin.subscribe_one("users/#", 1);
    let mut alice = user(broker.addr(), V5, "dev1", "alice");
    // Property 0x23 Topic Alias (two bytes). Set alias 1 on her own topic and alias 2 on
    // someone else's, then publish through each alias with an empty topic.
    let alias = |n: u8| [0x23, 0x00, n];
    let mut send = |topic: &str, n: u8| {
        let id = alice.next_packet_id();
        alice.send(&wire::publish_v5_with_properties(topic, b"m", 1, false, id, &alias(n)));
        alice.wait_for("PUBACK", |p| matches!(p, Incoming::PubAck(i, _) if *i == id))
    };
    assert!(matches!(send("users/alice/a", 1), Incoming::PubAck(_, 0)));
    assert!(matches!(send("users/bob/b", 2), Incoming::PubAck(_, 0x87)));
    assert!(matches!(send("", 2), Incoming::PubAck(_, 0x87)), "alias 2 is still bob's topic");
    assert!(matches!(send("", 1), Incoming::PubAck(_, 0)));
    for _ in 0..2 {
        assert_eq!(admin.expect_publish_acked().topic, "users/alice/a");
    }
    admin.ping();
    assert!(admin.ping_then_unread().is_empty(), "nothing of bob's topic was routed");
}

#[test]
fn admin_api_shows_the_authenticated_username() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    shoal_passwd(&pw, "alice", "wonder land", true);
    let admin = "[admin]\nenabled = true\nbind = \"127.0.0.1:0\"\ntoken = \"t0ken\"\n";
    let broker = TestBroker::with_config(&format!("{}{admin}", auth_config(&pw, "")));
    let opts = login(V5, "phone-1", Some("alice"), Some("wonder land"));
    let (_alice, _) = RawClient::connect_with(broker.addr(), &opts);
    let r = crate::http::request(broker.admin_addr(), "GET", "/api/clients", Some("t0ken"), None);
    let page = r.json();
    assert_eq!(page["clients"][0]["id"], "phone-1", "{page}");
    assert_eq!(page["clients"][0]["username"], "alice", "{page}");
    let found = crate::http::request(
        broker.admin_addr(),
        "GET",
        "/api/clients?search=ALICE",
        Some("t0ken"),
        None,
    );
    assert_eq!(found.json()["total"], 1);
}
