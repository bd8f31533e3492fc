//! The hook interface for applications embedding Shoal, and the built-in password and
//! ACL checks implemented on it.
//!
//! # Threading contract
//! - A [`Hooks`] object is shared by every worker: it is `Send + Sync`, and its methods
//!   take `&self`. Use atomics or short locks for any state, and expect calls for
//!   different connections on different threads at the same time.
//! - Each call runs on the event loop thread that owns the connection concerned, in the
//!   middle of handling that connection's packet. **A hook must not block**: no network
//!   or disk I/O, no waiting on locks held across I/O, nothing slow. While it runs, every
//!   other connection of that worker waits. Anything slow belongs on a thread of your own
//!   that prepares data the hook then reads.
//! - Calls for one connection happen in the order of its packets: `on_accept`, then
//!   `on_connect`, then `on_subscribe`/`on_publish`/`on_deliver` in any mix, then
//!   `on_disconnect` exactly once if `on_connect` succeeded. `on_stop` is called once when
//!   the broker shuts down, after the workers stopped.
//! - A hook must not panic; a panic in a hook is a bug that takes its worker down.
//!
//! Every method has a default that allows everything, so an implementation overrides only
//! what it needs. [`HookChain`] runs several hook objects in order (for example an
//! application's hooks, then [`FileAuth`]).
//!
//! # Example
//! An application that refuses one network, lets each user publish under
//! `users/<username>/` only, lets everyone use `public/`, and still checks passwords with
//! a Mosquitto password file:
//!
//! ```no_run
//! use std::net::{IpAddr, SocketAddr};
//! use std::sync::Arc;
//! use shoal_core::{QoS, ReasonCode, TopicFilter, TopicName};
//! use shoal_server::auth::{
//!     ClientInfo, FileAuth, FileAuthSettings, HookChain, Hooks, PublishDecision,
//!     SubscribeDecision,
//! };
//!
//! struct MyRules;
//!
//! impl MyRules {
//!     fn may_use(client: &ClientInfo, topic: &str) -> bool {
//!         if topic.starts_with("public/") {
//!             return true;
//!         }
//!         let own = client.identity.username.as_deref().map(|u| format!("users/{u}/"));
//!         own.is_some_and(|prefix| topic.starts_with(&prefix))
//!     }
//! }
//!
//! impl Hooks for MyRules {
//!     fn on_accept(&self, peer: SocketAddr) -> bool {
//!         !matches!(peer.ip(), IpAddr::V4(ip) if ip.octets()[..3] == [198, 51, 100])
//!     }
//!     fn on_subscribe(&self, c: &ClientInfo, f: &TopicFilter, qos: QoS) -> SubscribeDecision {
//!         if Self::may_use(c, f.as_str()) {
//!             SubscribeDecision::Grant(qos)
//!         } else {
//!             SubscribeDecision::Refuse(ReasonCode::NotAuthorized)
//!         }
//!     }
//!     fn on_publish(&self, c: &ClientInfo, t: &TopicName, _: QoS, _: bool) -> PublishDecision {
//!         if Self::may_use(c, t.as_str()) {
//!             PublishDecision::Allow
//!         } else {
//!             PublishDecision::Drop(ReasonCode::NotAuthorized)
//!         }
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let files = FileAuth::new(FileAuthSettings {
//!     password_file: Some("/etc/shoal/passwd".into()),
//!     ..FileAuthSettings::default()
//! })?;
//! let hooks = HookChain::new().with(Arc::new(MyRules)).with(Arc::new(files));
//! # let _ = hooks;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use shoal_core::{ProtocolVersion, QoS, ReasonCode, TopicFilter, TopicName};

use super::acl::{Access, Acl, AclError};
use super::enhanced::AuthMethod;
use super::passwd::{PasswdError, PasswordFile};
use super::ClientIdentity;

/// What a client presented in CONNECT, for authentication.
#[derive(Debug, Clone, Copy)]
pub struct ConnectInfo<'a> {
    /// Address of the peer (or the address the PROXY protocol reported).
    pub peer: SocketAddr,
    /// The protocol version from CONNECT.
    pub protocol: ProtocolVersion,
    /// The client identifier (assigned by the broker if the client sent none).
    pub client_id: &'a str,
    /// The User Name field, if present.
    pub username: Option<&'a str>,
    /// The Password field, if present. Never log it.
    pub password: Option<&'a [u8]>,
    /// The username taken from a verified TLS client certificate, when the listener is
    /// configured to derive one. When set, it is the client's identity for the ACL and the
    /// User Name field is ignored.
    pub cert_username: Option<&'a str>,
    /// The enhanced authentication method (MQTT 5 AUTH, see [`Hooks::auth_method`]) that
    /// has already authenticated this client, if its CONNECT named one.
    pub auth_method: Option<&'a str>,
    /// The username that method established ([`AuthStep::Success`]); when set, it is
    /// the client's identity.
    ///
    /// [`AuthStep::Success`]: super::AuthStep::Success
    pub auth_username: Option<&'a str>,
}

impl ConnectInfo<'_> {
    /// The username the client will be known by: the one an enhanced authentication
    /// method established, else the certificate's, else the User Name field.
    pub fn effective_username(&self) -> Option<&str> {
        self.auth_username.or(self.cert_username).or(self.username)
    }
}

/// A connected client, as hooks see it after CONNECT succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// Username (see [`ConnectInfo::effective_username`]) and client id.
    pub identity: ClientIdentity,
    /// Address of the peer.
    pub peer: SocketAddr,
    /// The protocol version in use.
    pub protocol: ProtocolVersion,
}

/// The answer to a SUBSCRIBE for one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeDecision {
    /// Subscribe with at most this QoS (the broker grants the lower of this and the
    /// requested QoS).
    Grant(QoS),
    /// Refuse this filter with the reason code (0x87 Not authorized for an ACL refusal;
    /// MQTT 3.1.1 clients see 0x80).
    Refuse(ReasonCode),
}

/// The answer to a PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishDecision {
    /// Route the message.
    Allow,
    /// Do not route it. MQTT 5 clients get the reason code in PUBACK/PUBREC (QoS 1/2);
    /// MQTT 3.1.1 clients get an ordinary acknowledgement, as the protocol has no way to
    /// say no.
    Drop(ReasonCode),
    /// Close the connection (MQTT 5: DISCONNECT with the reason code first).
    Close(ReasonCode),
}

/// Why a connection ended, for [`Hooks::on_disconnect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT with this reason code (0x00 for a normal disconnect and
    /// for every MQTT 3.1.1 DISCONNECT).
    Client(ReasonCode),
    /// The socket closed or failed without a DISCONNECT.
    ConnectionLost,
    /// The broker closed it with this reason code (keep-alive timeout, takeover, protocol
    /// error, shutdown, a hook's [`PublishDecision::Close`]).
    Server(ReasonCode),
}

/// Callbacks that let an application admit, authenticate and authorise clients.
///
/// See the module documentation for the threading contract: implementations are shared
/// by all workers and must never block.
pub trait Hooks: Send + Sync {
    /// A TCP connection was accepted from `peer`; return false to close it at once
    /// (blocklists, per-address rate limits). Runs before any TLS or MQTT byte.
    fn on_accept(&self, peer: SocketAddr) -> bool {
        let _ = peer;
        true
    }

    /// Authenticates a CONNECT; [`ReasonCode::Success`] accepts, anything else is sent in
    /// CONNACK (mapped to the nearest 3.1.1 return code for older clients). For a CONNECT
    /// with an Authentication Method this runs once the method's exchange succeeded
    /// ([`ConnectInfo::auth_method`]).
    fn on_connect(&self, info: &ConnectInfo<'_>) -> ReasonCode {
        let _ = info;
        ReasonCode::Success
    }

    /// The enhanced authentication method (MQTT 5 AUTH) a CONNECT names in its
    /// Authentication Method, if this application supports it. `None` (the default)
    /// refuses that CONNECT with 0x8C Bad authentication method. Asked at CONNECT and at
    /// each re-authentication; see [`AuthMethod`] for the contract.
    fn auth_method(&self, method: &str) -> Option<&dyn AuthMethod> {
        let _ = method;
        None
    }

    /// Decides one filter of a SUBSCRIBE. For a shared subscription
    /// (`$share/<group>/<filter>`) `filter` is the part after the group.
    fn on_subscribe(
        &self,
        client: &ClientInfo,
        filter: &TopicFilter,
        qos: QoS,
    ) -> SubscribeDecision {
        let _ = (client, filter);
        SubscribeDecision::Grant(qos)
    }

    /// Decides a PUBLISH from a client (retained or not).
    fn on_publish(
        &self,
        client: &ClientInfo,
        topic: &TopicName,
        qos: QoS,
        retain: bool,
    ) -> PublishDecision {
        let _ = (client, topic, qos, retain);
        PublishDecision::Allow
    }

    /// Whether a message on `topic` may be delivered to `client` (live and retained
    /// messages alike). Called per message and subscriber: keep it cheap.
    fn on_deliver(&self, client: &ClientInfo, topic: &TopicName) -> bool {
        let _ = (client, topic);
        true
    }

    /// A client whose CONNECT was accepted is gone.
    fn on_disconnect(&self, client: &ClientInfo, reason: DisconnectReason) {
        let _ = (client, reason);
    }

    /// The broker has stopped.
    fn on_stop(&self) {}
}

/// Hooks that allow everything (the default when nothing is configured).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Hooks for AllowAll {}

impl<H: Hooks + ?Sized> Hooks for Arc<H> {
    fn on_accept(&self, peer: SocketAddr) -> bool {
        (**self).on_accept(peer)
    }
    fn on_connect(&self, info: &ConnectInfo<'_>) -> ReasonCode {
        (**self).on_connect(info)
    }
    fn auth_method(&self, method: &str) -> Option<&dyn AuthMethod> {
        (**self).auth_method(method)
    }
    fn on_subscribe(
        &self,
        client: &ClientInfo,
        filter: &TopicFilter,
        qos: QoS,
    ) -> SubscribeDecision {
        (**self).on_subscribe(client, filter, qos)
    }
    fn on_publish(
        &self,
        client: &ClientInfo,
        topic: &TopicName,
        qos: QoS,
        retain: bool,
    ) -> PublishDecision {
        (**self).on_publish(client, topic, qos, retain)
    }
    fn on_deliver(&self, client: &ClientInfo, topic: &TopicName) -> bool {
        (**self).on_deliver(client, topic)
    }
    fn on_disconnect(&self, client: &ClientInfo, reason: DisconnectReason) {
        (**self).on_disconnect(client, reason);
    }
    fn on_stop(&self) {
        (**self).on_stop();
    }
}

/// Several hook objects run in order; the first that says no decides.
///
/// - `on_accept`, `on_deliver`: every hook must allow.
/// - `on_connect`: the first non-success code is the answer.
/// - `auth_method`: the first hook that supports the method provides it.
/// - `on_subscribe`: the first refusal is the answer; otherwise the lowest granted QoS.
/// - `on_publish`: the first `Drop` or `Close` is the answer.
/// - `on_disconnect`, `on_stop`: every hook is told.
#[derive(Default, Clone)]
pub struct HookChain {
    hooks: Vec<Arc<dyn Hooks>>,
}

impl std::fmt::Debug for HookChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HookChain({} hooks)", self.hooks.len())
    }
}

impl HookChain {
    /// An empty chain (allows everything).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `hooks`, consulted after those already in the chain.
    #[must_use]
    pub fn with(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks.push(hooks);
        self
    }

    /// Appends `hooks` in place.
    pub fn push(&mut self, hooks: Arc<dyn Hooks>) {
        self.hooks.push(hooks);
    }

    /// Whether the chain holds no hooks (and so allows everything).
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }
}

impl Hooks for HookChain {
    fn on_accept(&self, peer: SocketAddr) -> bool {
        self.hooks.iter().all(|h| h.on_accept(peer))
    }

    fn on_connect(&self, info: &ConnectInfo<'_>) -> ReasonCode {
        self.hooks
            .iter()
            .map(|h| h.on_connect(info))
            .find(|&code| code != ReasonCode::Success)
            .unwrap_or(ReasonCode::Success)
    }

    fn auth_method(&self, method: &str) -> Option<&dyn AuthMethod> {
        self.hooks.iter().find_map(|h| h.auth_method(method))
    }

    fn on_subscribe(
        &self,
        client: &ClientInfo,
        filter: &TopicFilter,
        qos: QoS,
    ) -> SubscribeDecision {
        let mut granted = qos;
        for h in &self.hooks {
            match h.on_subscribe(client, filter, granted) {
                SubscribeDecision::Grant(q) => granted = granted.min(q),
                refuse @ SubscribeDecision::Refuse(_) => return refuse,
            }
        }
        SubscribeDecision::Grant(granted)
    }

    fn on_publish(
        &self,
        client: &ClientInfo,
        topic: &TopicName,
        qos: QoS,
        retain: bool,
    ) -> PublishDecision {
        self.hooks
            .iter()
            .map(|h| h.on_publish(client, topic, qos, retain))
            .find(|d| *d != PublishDecision::Allow)
            .unwrap_or(PublishDecision::Allow)
    }

    fn on_deliver(&self, client: &ClientInfo, topic: &TopicName) -> bool {
        self.hooks.iter().all(|h| h.on_deliver(client, topic))
    }

    fn on_disconnect(&self, client: &ClientInfo, reason: DisconnectReason) {
        for h in &self.hooks {
            h.on_disconnect(client, reason);
        }
    }

    fn on_stop(&self) {
        for h in &self.hooks {
            h.on_stop();
        }
    }
}

/// Which files [`FileAuth`] reads and whether anonymous clients may connect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileAuthSettings {
    /// Mosquitto-format password file.
    pub password_file: Option<PathBuf>,
    /// Mosquitto-format ACL file.
    pub acl_file: Option<PathBuf>,
    /// Whether clients without a username may connect. `None` means: only when no
    /// password file is configured (a password file turns anonymous access off unless it
    /// is explicitly allowed).
    pub allow_anonymous: Option<bool>,
}

/// Why [`FileAuth`] could not load its files.
#[derive(Debug, thiserror::Error)]
pub enum FileAuthError {
    /// The password file is unreadable or has a bad line.
    #[error(transparent)]
    Passwd(#[from] PasswdError),
    /// The ACL file is unreadable or has a bad line.
    #[error(transparent)]
    Acl(#[from] AclError),
}

/// The loaded files; replaced whole on reload.
#[derive(Debug)]
struct AuthFiles {
    passwords: Option<PasswordFile>,
    acl: Option<Acl>,
    allow_anonymous: bool,
}

impl AuthFiles {
    fn load(settings: &FileAuthSettings) -> Result<Self, FileAuthError> {
        let passwords = settings.password_file.as_deref().map(PasswordFile::load).transpose()?;
        let acl = settings.acl_file.as_deref().map(Acl::load).transpose()?;
        let allow_anonymous = settings.allow_anonymous.unwrap_or(passwords.is_none());
        Ok(Self { passwords, acl, allow_anonymous })
    }
}

/// The built-in password-file and ACL-file checks, as [`Hooks`].
///
/// - CONNECT with a verified certificate username, or authenticated by an enhanced
///   authentication method: accepted (TLS or the method has authenticated it).
/// - CONNECT without a username: accepted only if anonymous access is allowed, else
///   0x87 Not authorized.
/// - CONNECT with a username, when a password file is loaded: the password must match,
///   else 0x86 Bad User Name or Password. Without a password file any username is accepted.
/// - SUBSCRIBE, PUBLISH and delivery follow the ACL file when one is loaded (refused with
///   0x87), and are all allowed otherwise.
///
/// [`FileAuth::reload`] re-reads the files; checks running meanwhile see either the old or
/// the new files, never a mix, and a failed reload keeps the old ones. Reading the
/// current files costs no lock (an `ArcSwap` load), as `on_deliver` runs per message.
#[derive(Debug)]
pub struct FileAuth {
    settings: FileAuthSettings,
    files: ArcSwap<AuthFiles>,
}

impl FileAuth {
    /// Loads the configured files.
    ///
    /// # Errors
    /// [`FileAuthError`] naming the file (and line) at fault.
    pub fn new(settings: FileAuthSettings) -> Result<Self, FileAuthError> {
        let files = AuthFiles::load(&settings)?;
        Ok(Self { settings, files: ArcSwap::from_pointee(files) })
    }

    /// Re-reads the files.
    ///
    /// # Errors
    /// If a file is bad; the files loaded before stay in force.
    pub fn reload(&self) -> Result<(), FileAuthError> {
        let files = AuthFiles::load(&self.settings)?;
        self.files.store(Arc::new(files));
        Ok(())
    }

    /// Whether anonymous clients are let in with the files now loaded.
    pub fn allows_anonymous(&self) -> bool {
        self.files.load().allow_anonymous
    }
}

impl Hooks for FileAuth {
    fn on_connect(&self, info: &ConnectInfo<'_>) -> ReasonCode {
        if info.cert_username.is_some() || info.auth_method.is_some() {
            return ReasonCode::Success;
        }
        let files = self.files.load();
        let Some(user) = info.username else {
            return if files.allow_anonymous {
                ReasonCode::Success
            } else {
                ReasonCode::NotAuthorized
            };
        };
        match &files.passwords {
            None => ReasonCode::Success,
            Some(pw) => {
                if pw.verify(user, info.password.unwrap_or_default()) && info.password.is_some() {
                    ReasonCode::Success
                } else {
                    ReasonCode::BadUserNameOrPassword
                }
            }
        }
    }

    fn on_subscribe(
        &self,
        client: &ClientInfo,
        filter: &TopicFilter,
        qos: QoS,
    ) -> SubscribeDecision {
        match &self.files.load().acl {
            Some(acl) if !acl.check_subscribe(&client.identity, filter) => {
                SubscribeDecision::Refuse(ReasonCode::NotAuthorized)
            }
            _ => SubscribeDecision::Grant(qos),
        }
    }

    fn on_publish(
        &self,
        client: &ClientInfo,
        topic: &TopicName,
        _qos: QoS,
        _retain: bool,
    ) -> PublishDecision {
        match &self.files.load().acl {
            Some(acl) if !acl.check(&client.identity, topic, Access::Write) => {
                PublishDecision::Drop(ReasonCode::NotAuthorized)
            }
            _ => PublishDecision::Allow,
        }
    }

    fn on_deliver(&self, client: &ClientInfo, topic: &TopicName) -> bool {
        match &self.files.load().acl {
            Some(acl) => acl.check(&client.identity, topic, Access::Read),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::passwd::PasswordHash;
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn peer() -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 7], 40000))
    }

    fn connect<'a>(user: Option<&'a str>, pass: Option<&'a [u8]>) -> ConnectInfo<'a> {
        ConnectInfo {
            peer: peer(),
            protocol: ProtocolVersion::V5,
            client_id: "c1",
            username: user,
            password: pass,
            cert_username: None,
            auth_method: None,
            auth_username: None,
        }
    }

    fn client(user: Option<&str>) -> ClientInfo {
        ClientInfo {
            identity: ClientIdentity { username: user.map(str::to_owned), client_id: "c1".into() },
            peer: peer(),
            protocol: ProtocolVersion::V5,
        }
    }

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new(acl: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let hash = PasswordHash::new_pbkdf2(b"s3cret").unwrap();
            std::fs::write(dir.path().join("pw"), format!("alice:{hash}\n")).unwrap();
            std::fs::write(dir.path().join("acl"), acl).unwrap();
            Self { dir }
        }

        fn settings(&self, acl: bool, allow_anonymous: Option<bool>) -> FileAuthSettings {
            FileAuthSettings {
                password_file: Some(self.dir.path().join("pw")),
                acl_file: acl.then(|| self.dir.path().join("acl")),
                allow_anonymous,
            }
        }
    }

    const ACL: &str = "topic read public/#\nuser alice\ntopic readwrite users/alice/#\n";

    #[test]
    fn password_file_turns_anonymous_off_unless_allowed() {
        let f = Files::new(ACL);
        let auth = FileAuth::new(f.settings(false, None)).unwrap();
        assert!(!auth.allows_anonymous());
        assert_eq!(auth.on_connect(&connect(None, None)), ReasonCode::NotAuthorized);
        let auth = FileAuth::new(f.settings(false, Some(true))).unwrap();
        assert_eq!(auth.on_connect(&connect(None, None)), ReasonCode::Success);
        let no_files = FileAuth::new(FileAuthSettings::default()).unwrap();
        assert!(no_files.allows_anonymous());
        assert_eq!(no_files.on_connect(&connect(None, None)), ReasonCode::Success);
    }

    #[test]
    fn passwords_are_checked() {
        let f = Files::new(ACL);
        let auth = FileAuth::new(f.settings(false, None)).unwrap();
        let ok = connect(Some("alice"), Some(b"s3cret"));
        assert_eq!(auth.on_connect(&ok), ReasonCode::Success);
        for bad in [
            connect(Some("alice"), Some(b"wrong")),
            connect(Some("alice"), None),
            connect(Some("mallory"), Some(b"s3cret")),
        ] {
            assert_eq!(auth.on_connect(&bad), ReasonCode::BadUserNameOrPassword, "{bad:?}");
        }
    }

    #[test]
    fn certificate_username_needs_no_password() {
        let f = Files::new(ACL);
        let auth = FileAuth::new(f.settings(false, None)).unwrap();
        let info = ConnectInfo { cert_username: Some("device-1"), ..connect(None, None) };
        assert_eq!(info.effective_username(), Some("device-1"));
        assert_eq!(auth.on_connect(&info), ReasonCode::Success);
    }

    #[test]
    fn acl_decides_subscribe_publish_and_delivery() {
        let f = Files::new(ACL);
        let auth = FileAuth::new(f.settings(true, Some(true))).unwrap();
        let alice = client(Some("alice"));
        let anon = client(None);
        let own = TopicName::try_from_str("users/alice/x").unwrap();
        let public = TopicName::try_from_str("public/x").unwrap();
        assert_eq!(auth.on_publish(&alice, &own, QoS::AtLeastOnce, false), PublishDecision::Allow);
        assert_eq!(
            auth.on_publish(&anon, &public, QoS::AtMostOnce, true),
            PublishDecision::Drop(ReasonCode::NotAuthorized)
        );
        let filter = TopicFilter::parse("users/alice/#").unwrap();
        assert_eq!(
            auth.on_subscribe(&alice, &filter, QoS::ExactlyOnce),
            SubscribeDecision::Grant(QoS::ExactlyOnce)
        );
        assert_eq!(
            auth.on_subscribe(&anon, &filter, QoS::AtMostOnce),
            SubscribeDecision::Refuse(ReasonCode::NotAuthorized)
        );
        assert!(auth.on_deliver(&anon, &public));
        assert!(!auth.on_deliver(&anon, &own));
    }

    #[test]
    fn failed_reload_keeps_the_old_files() {
        let f = Files::new(ACL);
        let auth = FileAuth::new(f.settings(true, None)).unwrap();
        let anon = client(None);
        let public = TopicName::try_from_str("public/x").unwrap();
        assert!(auth.on_deliver(&anon, &public));

        std::fs::write(f.dir.path().join("acl"), "topic read other/#\n").unwrap();
        auth.reload().unwrap();
        assert!(!auth.on_deliver(&anon, &public));

        std::fs::write(f.dir.path().join("acl"), "bogus line\n").unwrap();
        let err = auth.reload().unwrap_err();
        assert!(err.to_string().contains("acl:1"), "{err}");
        let other = TopicName::try_from_str("other/x").unwrap();
        assert!(auth.on_deliver(&anon, &other), "old ACL still in force");
    }

    #[test]
    fn load_errors_name_the_file() {
        let settings = FileAuthSettings {
            password_file: Some(PathBuf::from("/nonexistent/pw")),
            ..FileAuthSettings::default()
        };
        let err = FileAuth::new(settings).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/pw"), "{err}");
    }

    /// Blocks one address and caps QoS at 1; counts disconnects.
    #[derive(Default)]
    struct AppHooks {
        disconnects: AtomicUsize,
        stopped: AtomicUsize,
    }

    impl Hooks for AppHooks {
        fn on_accept(&self, peer: SocketAddr) -> bool {
            peer.ip() != std::net::IpAddr::from([203, 0, 113, 9])
        }
        fn on_subscribe(&self, _: &ClientInfo, _: &TopicFilter, qos: QoS) -> SubscribeDecision {
            SubscribeDecision::Grant(qos.min(QoS::AtLeastOnce))
        }
        fn on_publish(&self, _: &ClientInfo, t: &TopicName, _: QoS, _: bool) -> PublishDecision {
            if t.as_str() == "kill" {
                PublishDecision::Close(ReasonCode::AdministrativeAction)
            } else {
                PublishDecision::Allow
            }
        }
        fn on_disconnect(&self, _: &ClientInfo, _: DisconnectReason) {
            self.disconnects.fetch_add(1, Ordering::Relaxed);
        }
        fn on_stop(&self) {
            self.stopped.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn chain_composes_application_hooks_with_file_auth() {
        let f = Files::new(ACL);
        let app = Arc::new(AppHooks::default());
        let chain = HookChain::new()
            .with(app.clone())
            .with(Arc::new(FileAuth::new(f.settings(true, None)).unwrap()));
        assert!(chain.on_accept(peer()));
        assert!(!chain.on_accept(SocketAddr::from(([203, 0, 113, 9], 1))));
        assert_eq!(chain.on_connect(&connect(None, None)), ReasonCode::NotAuthorized);
        assert_eq!(chain.on_connect(&connect(Some("alice"), Some(b"s3cret"))), ReasonCode::Success);
        let alice = client(Some("alice"));
        let own = TopicFilter::parse("users/alice/#").unwrap();
        assert_eq!(
            chain.on_subscribe(&alice, &own, QoS::ExactlyOnce),
            SubscribeDecision::Grant(QoS::AtLeastOnce),
            "the app's cap applies"
        );
        let other = TopicFilter::parse("users/bob/#").unwrap();
        assert_eq!(
            chain.on_subscribe(&alice, &other, QoS::AtMostOnce),
            SubscribeDecision::Refuse(ReasonCode::NotAuthorized)
        );
        let kill = TopicName::try_from_str("kill").unwrap();
        assert_eq!(
            chain.on_publish(&alice, &kill, QoS::AtMostOnce, false),
            PublishDecision::Close(ReasonCode::AdministrativeAction),
            "the first hook's verdict wins"
        );
        chain.on_disconnect(&alice, DisconnectReason::ConnectionLost);
        chain.on_stop();
        assert_eq!(app.disconnects.load(Ordering::Relaxed), 1);
        assert_eq!(app.stopped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn defaults_allow_everything() {
        let hooks = AllowAll;
        let c = client(None);
        let t = TopicName::try_from_str("a").unwrap();
        assert!(hooks.on_accept(peer()));
        assert_eq!(hooks.on_connect(&connect(None, None)), ReasonCode::Success);
        assert_eq!(hooks.on_publish(&c, &t, QoS::AtMostOnce, false), PublishDecision::Allow);
        assert!(hooks.on_deliver(&c, &t));
        assert!(HookChain::new().on_deliver(&c, &t));
    }

    #[test]
    fn hooks_are_usable_as_shared_trait_objects() {
        fn assert_send_sync<T: Send + Sync + ?Sized>() {}
        assert_send_sync::<dyn Hooks>();
        assert_send_sync::<FileAuth>();
        assert_send_sync::<HookChain>();
    }
}
