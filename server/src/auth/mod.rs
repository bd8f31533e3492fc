//! Who may connect and what they may do: Mosquitto-compatible password and ACL files,
//! and the [`Hooks`] trait through which both they and an embedding application decide.
//!
//! - `passwd`: reading, checking and writing `mosquitto_passwd` files (`shoal passwd`).
//! - `acl`: compiling an ACL file into per-user rules and checking topics and filters.
//! - `hooks`: the [`Hooks`] trait and its threading contract, [`HookChain`] to compose
//!   several, and [`FileAuth`], the built-in checks as hooks.
//! - `enhanced`: [`AuthMethod`], MQTT 5 enhanced authentication (AUTH) as an extension
//!   point, registered through [`Hooks::auth_method`].
//! - `scram`: [`ScramSha256`], SCRAM-SHA-256 as such a method (the worked example).
//!
//! Nothing here touches sockets or knows about workers: the worker calls the hooks at
//! accept, CONNECT, SUBSCRIBE, PUBLISH and delivery. Identities from TLS client
//! certificates are derived in `tls.rs` and arrive as [`ConnectInfo::cert_username`].

pub mod acl;
pub mod enhanced;
pub mod hooks;
pub mod passwd;
pub mod rate;
pub mod scram;

pub use acl::{Access, Acl, AclError};
pub use enhanced::{AuthClient, AuthContinuation, AuthMethod, AuthStep};
pub use hooks::{
    AllowAll, ClientInfo, ConnectInfo, DisconnectReason, FileAuth, FileAuthError, FileAuthSettings,
    HookChain, Hooks, PublishDecision, SubscribeDecision,
};
pub use passwd::{PasswdError, PasswordFile, PasswordHash};
pub use scram::{ScramCredentials, ScramSha256, SCRAM_SHA_256};

/// The names an ACL is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    /// The authenticated username (from CONNECT or the client certificate); `None` for an
    /// anonymous client.
    pub username: Option<String>,
    /// The client identifier.
    pub client_id: String,
}
