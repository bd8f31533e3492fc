//! MQTT 5 enhanced authentication as an extension point: the [`AuthMethod`] trait an
//! application implements for one Authentication Method (SCRAM, Kerberos, a token
//! scheme ...) and registers through [`Hooks::auth_method`](super::Hooks::auth_method).
//!
//! The exchange's order and reason codes (CONNECT → AUTH challenge ↔ AUTH response →
//! CONNACK; AUTH Re-authenticate later) are `shoal_core::auth::AuthExchange`'s; the
//! worker drives it (`worker/enhanced.rs`). A method only turns Authentication Data into
//! the next [`AuthStep`]. [`ScramSha256`](super::ScramSha256) is a complete example.
//!
//! # Threading contract
//! The same as for every hook (`docs/HOOKS.md`): one method object serves every worker
//! (`Send + Sync`, `&self`), each call runs **on the event loop** that owns the
//! connection and **must not block** (no network or disk I/O; a slow credential store
//! belongs on a thread of your own that prepares what the method reads), and must not
//! panic. The per-connection state between two steps is the [`AuthContinuation`] the
//! method returns: the worker keeps it with the connection, hands it the client's next
//! AUTH, and drops it when the connection ends. A client that stops answering is closed
//! by the CONNECT timeout (`limits.connect_timeout_secs`) while connecting, and by
//! keep-alive while re-authenticating.

use std::net::SocketAddr;

use shoal_core::{ProtocolVersion, ReasonCode};

/// Who is authenticating, for [`AuthMethod::start`].
#[derive(Debug, Clone, Copy)]
pub struct AuthClient<'a> {
    /// Address of the peer (or the one the PROXY protocol reported).
    pub peer: SocketAddr,
    /// The protocol version (always 5.0: only MQTT 5 has AUTH).
    pub protocol: ProtocolVersion,
    /// The client identifier (assigned by the broker if the client sent none).
    pub client_id: &'a str,
    /// The CONNECT's User Name field, if any (methods usually carry their own).
    pub username: Option<&'a str>,
    /// The username the connection is authenticated as so far: `None` during CONNECT,
    /// the current identity on re-authentication.
    pub current_username: Option<&'a str>,
}

/// A method's answer to one step of an exchange.
pub enum AuthStep {
    /// Send `challenge` to the client (AUTH 0x18) and call `next` with its response.
    Continue {
        /// Authentication Data of the challenge.
        challenge: Vec<u8>,
        /// The method's state until the client answers.
        next: Box<dyn AuthContinuation>,
    },
    /// The client is authenticated.
    Success {
        /// Final Authentication Data for the client (in CONNACK, or the AUTH Success of
        /// a re-authentication), e.g. SCRAM's server signature.
        data: Option<Vec<u8>>,
        /// The username the client is known by from now on: what ACLs and other hooks
        /// see (`ClientInfo::identity`). `None` keeps the CONNECT's identity (the
        /// certificate's or User Name) during CONNECT, and the current one on
        /// re-authentication.
        username: Option<String>,
    },
    /// The client is not authenticated: CONNACK with this code during CONNECT (0x87 Not
    /// authorized, 0x86 Bad User Name or Password ...), DISCONNECT on re-authentication
    /// (0x87 stands in for codes DISCONNECT cannot carry). The connection is closed.
    Fail(ReasonCode),
}

impl std::fmt::Debug for AuthStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Continue { challenge, .. } => {
                write!(f, "Continue({} bytes of challenge)", challenge.len())
            }
            // Final data and usernames are left out: they may be secrets or personal.
            Self::Success { username, .. } => {
                write!(f, "Success(username {})", if username.is_some() { "set" } else { "kept" })
            }
            Self::Fail(code) => write!(f, "Fail({code})"),
        }
    }
}

/// A method's state between a challenge and the client's response.
pub trait AuthContinuation: Send {
    /// The client's response (the Authentication Data of its AUTH 0x18) to the last
    /// challenge. Runs on the event loop: must not block.
    fn step(self: Box<Self>, data: Option<&[u8]>) -> AuthStep;
}

/// One enhanced authentication method, registered with
/// [`Hooks::auth_method`](super::Hooks::auth_method).
///
/// See the module documentation for the threading contract.
pub trait AuthMethod: Send + Sync {
    /// The Authentication Method name this implements, as clients send it (e.g.
    /// `SCRAM-SHA-256`).
    fn method(&self) -> &str;

    /// The first step of an exchange: the Authentication Data of the CONNECT, or of an
    /// AUTH Re-authenticate (`client.current_username` is then set if known). Runs on
    /// the event loop: must not block.
    fn start(&self, client: &AuthClient<'_>, data: Option<&[u8]>) -> AuthStep;
}
