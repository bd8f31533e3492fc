//! Password files are interchangeable with Mosquitto's, both ways:
//! - a file written by Debian's `mosquitto_passwd` (both `$7$` and the old `$6$` form)
//!   verifies in Shoal;
//! - a file written by `shoal passwd` is accepted by a real Mosquitto broker
//!   (Mosquitto has no verify command, so `mosquitto_pub` connects with the right and the
//!   wrong password).
//!
//! Needs the `mosquitto` and `mosquitto-clients` packages. Without them each test prints
//! why it skipped, except under CI (`CI` set), where a missing tool is a failure.

// Test-only helpers outside #[test] functions: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_server::auth::PasswordFile;

/// The first candidate that exists: an absolute path, or a name found on `PATH`.
fn tool(candidates: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates.iter().find_map(|c| {
        let p = Path::new(c);
        if p.is_absolute() {
            return p.exists().then(|| p.to_owned());
        }
        std::env::split_paths(&path).map(|d| d.join(c)).find(|f| f.is_file())
    })
}

/// The tools, or `None` after printing why the test is skipped (panics under CI).
fn tools(names: &[&[&str]]) -> Option<Vec<PathBuf>> {
    let found: Vec<Option<PathBuf>> = names.iter().map(|n| tool(n)).collect();
    if found.iter().all(Option::is_some) {
        return Some(found.into_iter().flatten().collect());
    }
    let missing: Vec<&str> =
        names.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(n, _)| n[0]).collect();
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must install mosquitto and mosquitto-clients: missing {missing:?}"
    );
    eprintln!("skipping: {missing:?} not installed (apt-get install mosquitto mosquitto-clients)");
    None
}

#[test]
fn file_written_by_mosquitto_passwd_verifies_in_shoal() {
    let Some(t) = tools(&[&["mosquitto_passwd"]]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    let run = |args: &[&str]| {
        let st = Command::new(&t[0]).args(args).status().unwrap();
        assert!(st.success(), "mosquitto_passwd {args:?}");
    };
    let f = file.to_str().unwrap();
    run(&["-c", "-b", f, "alice", "correct horse"]);
    // The pre-2.0 default: salted SHA-512.
    run(&["-H", "sha512", "-b", f, "bob", "b0b:$pass"]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("alice:$7$101$") && text.contains("bob:$6$"), "{text}");

    let pw = PasswordFile::load(&file).unwrap();
    assert!(pw.verify("alice", b"correct horse"));
    assert!(!pw.verify("alice", b"correct horsE"));
    assert!(pw.verify("bob", b"b0b:$pass"));
    assert!(!pw.verify("bob", b"b0b"));
}

/// A Mosquitto broker on a free loopback port, killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
}

impl Mosquitto {
    fn start(bin: &Path, dir: &Path, password_file: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let conf = dir.join("mosquitto.conf");
        // Mosquitto started as root drops to the `mosquitto` user unless told otherwise,
        // and that user could not read our 0600 temp file: run as whoever we are.
        let me = Command::new("id").arg("-un").output().unwrap();
        let me = String::from_utf8_lossy(&me.stdout).trim().to_owned();
        std::fs::write(
            &conf,
            format!(
                "user {me}\nlistener {port} 127.0.0.1\nallow_anonymous false\n\
                 password_file {}\n",
                password_file.display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut m = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("mosquitto exited early: {status}");
            }
            assert!(Instant::now() < deadline, "mosquitto did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn file_written_by_shoal_passwd_is_accepted_by_mosquitto() {
    let Some(t) = tools(&[&["/usr/sbin/mosquitto", "mosquitto"], &["mosquitto_pub"]]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    let shoal = env!("CARGO_BIN_EXE_shoal");
    let st = Command::new(shoal)
        .args(["passwd", "-c", "-b"])
        .arg(&file)
        .args(["alice", "s3cret pass"])
        .status()
        .unwrap();
    assert!(st.success());
    // Without -b the password comes from standard input.
    let mut child = Command::new(shoal)
        .arg("passwd")
        .arg(&file)
        .arg("bob")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(b"hunter2\n").unwrap();
    }
    assert!(child.wait().unwrap().success());

    let broker = Mosquitto::start(&t[0], dir.path(), &file);
    let publish = |user: &str, password: &str| {
        Command::new(&t[1])
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-u", user, "-P", password, "-t", "shoal/test", "-m", "hi"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(publish("alice", "s3cret pass"), "right password accepted");
    assert!(publish("bob", "hunter2"), "password from stdin accepted");
    assert!(!publish("alice", "s3cret"), "wrong password refused");
    assert!(!publish("carol", "s3cret pass"), "unknown user refused");
}

#[test]
fn shoal_passwd_reports_errors_without_echoing_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("missing");
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["passwd", "-b"])
        .arg(&file)
        .args(["alice", "topsecret"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("missing"), "{err}");
    assert!(!err.contains("topsecret"), "{err}");
}
