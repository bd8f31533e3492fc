//! End-to-end over TLS, mutual TLS, WebSocket and WebSocket over TLS, against a Mosquitto
//! of our own with one listener per transport. A throwaway CA, server certificate
//! (for `localhost` and `127.0.0.1`) and client certificate are made with the `openssl`
//! CLI in the test's temporary directory. Skipped with a message when Mosquitto or
//! `openssl` is missing, failed instead when `CI` is set.

// Harness helpers outside `#[test]` functions: a failure here is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{free_port, loadgen, publish_until_subscriber_exits, require, Mosquitto};

/// Mosquitto with a TLS, a mutual-TLS, a WebSocket and a wss listener.
struct Broker {
    _mosquitto: Mosquitto,
    tls: u16,
    mtls: u16,
    ws: u16,
    wss: u16,
    /// Where `ca.crt`, `client.crt` and `client.key` are.
    pki: PathBuf,
}

impl Broker {
    fn file(&self, name: &str) -> String {
        self.pki.join(name).to_string_lossy().into_owned()
    }

    fn ca(&self) -> String {
        self.file("ca.crt")
    }
}

fn openssl(dir: &Path, bin: &Path, args: &[&str]) {
    let out = Command::new(bin).current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, in `dir`.
fn make_pki(dir: &Path, bin: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let ca = [&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.crt"]].concat();
    openssl(dir, bin, &[&ca[..], &["-days", "2", "-subj", "/CN=shoal-loadgen test CA"]].concat());
    for (name, ext) in [
        (
            "server",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        ),
        ("client", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, crt, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        std::fs::write(dir.join(&extfile), ext).unwrap();
        let subj = format!("/CN={name}");
        let req = [&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &subj]].concat();
        openssl(dir, bin, &req);
        openssl(
            dir,
            bin,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ],
        );
    }
}

fn start() -> Option<Broker> {
    common::mosquitto_binary()?;
    let openssl_bin = require("openssl", &["/usr/bin/openssl", "/usr/local/bin/openssl"])?;
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().to_path_buf();
    make_pki(&pki, &openssl_bin);
    let certs = |require_cert: bool| {
        let p = |f: &str| pki.join(f).to_string_lossy().into_owned();
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {require_cert}\n",
            p("ca.crt"),
            p("server.crt"),
            p("server.key")
        )
    };
    let (tls, mtls, ws, wss) = (free_port(), free_port(), free_port(), free_port());
    let config = format!(
        "per_listener_settings false\nallow_anonymous true\npersistence false\n\
         set_tcp_nodelay true\nlog_dest stderr\nlog_type error\n\
         listener {tls} 127.0.0.1\n{}\
         listener {mtls} 127.0.0.1\n{}\
         listener {ws} 127.0.0.1\nprotocol websockets\n\
         listener {wss} 127.0.0.1\nprotocol websockets\n{}",
        certs(false),
        certs(true),
        certs(false),
    );
    let mosquitto = Mosquitto::start_config(dir, &config, &[tls, mtls, ws, wss])?;
    Some(Broker { _mosquitto: mosquitto, tls, mtls, ws, wss, pki })
}

#[test]
fn pairs_at_qos1_over_every_transport_are_verified_clean() {
    let Some(b) = start() else { return };
    let (ca, cert, key) = (b.ca(), b.file("client.crt"), b.file("client.key"));
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        ("tls", format!("mqtts://localhost:{}", b.tls), vec!["--cafile", &ca]),
        (
            "mtls",
            format!("mqtts://127.0.0.1:{}", b.mtls),
            vec!["--cafile", &ca, "--cert", &cert, "--key", &key],
        ),
        ("ws", format!("ws://127.0.0.1:{}", b.ws), vec![]),
        ("wss", format!("wss://localhost:{}/mqtt", b.wss), vec!["--cafile", &ca]),
        ("ws v5", format!("ws://127.0.0.1:{}", b.ws), vec!["-V", "5"]),
    ];
    for (name, url, extra) in &cases {
        let mut args = vec![
            "pairs", "--url", url, "--pairs", "2", "-q", "1", "--rate", "2000", "-d", "1",
            "--warmup", "0.2", "--json", "--quiet",
        ];
        args.extend(extra);
        let out = loadgen(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: loadgen failed: {stderr}");
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["connections"]["connected"], 4, "{name}: {j}");
        assert!(j["delivered"]["msgs"].as_u64().unwrap() > 500, "{name}: {j}");
        assert_eq!(j["verification"]["clean"], true, "{name}: {j}");
        assert_eq!(j["verification"]["lost"], 0, "{name}: {j}");
        assert_eq!(j["verification"]["undelivered"], 0, "{name}: {j}");
        assert_eq!(j["errors"], 0, "{name}: {j}");
    }
}

#[test]
fn console_pub_to_sub_over_wss() {
    let Some(b) = start() else { return };
    let url = format!("wss://localhost:{}", b.wss);
    let ca = b.ca();
    let out = publish_until_subscriber_exits(
        &["--url", &url, "--cafile", &ca, "-t", "lg/wss/#", "-C", "2", "-v", "-q", "1"],
        &["--url", &url, "--cafile", &ca, "-t", "lg/wss/a", "-m", "over wss", "-q", "1"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().next(), Some("lg/wss/a over wss"));
}

#[test]
fn tls_failures_are_reported_clearly() {
    let Some(b) = start() else { return };
    let ca = b.ca();
    let mtls = format!("mqtts://localhost:{}", b.mtls);
    // No client certificate on the mutual-TLS listener: console and load engine.
    let out = loadgen(&["pub", "--url", &mtls, "--cafile", &ca, "-t", "x", "-m", "y"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("give --cert and --key"), "{stderr}");
    let out = loadgen(&["pairs", "--url", &mtls, "--cafile", &ca, "--pairs", "1", "-d", "0.5"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connections failed"), "{stderr}");
    assert!(stderr.contains("give --cert and --key"), "{stderr}");
    // A CA that did not sign the broker's certificate.
    let tls = format!("mqtts://localhost:{}", b.tls);
    let wrong_ca = b.file("client.crt");
    let out = loadgen(&["pub", "--url", &tls, "--cafile", &wrong_ca, "-t", "x", "-m", "y"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    // --insecure connects to the same listener without any CA.
    let out = loadgen(&["pub", "--url", &tls, "--insecure", "-t", "x", "-m", "y"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
