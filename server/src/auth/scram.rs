//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as an MQTT 5 enhanced authentication method: the
//! worked example of [`AuthMethod`], usable as it is or as a template for your own.
//!
//! The exchange, with the MQTT packet carrying each message as Authentication Data:
//!
//! | packet | SCRAM message |
//! |---|---|
//! | CONNECT (method `SCRAM-SHA-256`) | client-first: `n,,n=<user>,r=<client nonce>` |
//! | AUTH 0x18 from the broker | server-first: `r=<client nonce><server nonce>,s=<salt>,i=<iterations>` |
//! | AUTH 0x18 from the client | client-final: `c=biws,r=<nonce>,p=<proof>` |
//! | CONNACK 0x00 | server-final: `v=<server signature>` |
//!
//! A wrong proof gets CONNACK 0x87 Not authorized; so does an unknown user, after the
//! same exchange with a salt derived from the name (the broker does not tell which
//! names exist). Re-authentication (AUTH 0x19 with a new client-first) runs the same
//! steps and ends in AUTH Success carrying the server-final message.
//!
//! # Cost on the event loop
//! The expensive part of SCRAM, PBKDF2 over the password, runs in
//! [`ScramSha256::add_user`] (on the caller's thread), which keeps only the derived
//! StoredKey and ServerKey. An exchange costs the event loop two HMACs and a SHA-256,
//! like any other hook call: it never blocks.
//!
//! # Limits
//! No channel binding (`SCRAM-SHA-256-PLUS`), no authorisation identity (`a=`), and
//! names and passwords are used as given (no SASLprep): plain ASCII credentials behave
//! exactly as the RFC says.

use std::collections::HashMap;
use std::num::NonZeroU32;

use base64::Engine as _;
use parking_lot::RwLock;
use ring::rand::SecureRandom as _;
use ring::{digest, hmac, pbkdf2};
use shoal_core::ReasonCode;

use super::enhanced::{AuthClient, AuthContinuation, AuthMethod, AuthStep};

/// The Authentication Method name clients send.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// PBKDF2 iterations for [`ScramSha256::add_user`]: RFC 7677's minimum.
pub const DEFAULT_ITERATIONS: u32 = 4096;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What the broker keeps of one user's password (RFC 5802 section 3): enough to check
/// a proof and sign the answer, not enough to log in as the user.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    salt: Vec<u8>,
    iterations: u32,
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScramCredentials({} iterations)", self.iterations)
    }
}

impl ScramCredentials {
    /// Derives the keys from a password (PBKDF2-HMAC-SHA-256: slow on purpose, so not
    /// on the event loop).
    pub fn derive(password: &[u8], salt: &[u8], iterations: NonZeroU32) -> Self {
        let mut salted = [0u8; 32];
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, password, &mut salted);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let server_key = hmac::sign(&key, b"Server Key");
        Self {
            salt: salt.to_vec(),
            iterations: iterations.get(),
            stored_key: sha256(client_key.as_ref()),
            server_key: to_array(server_key.as_ref()),
        }
    }
}

/// The SCRAM-SHA-256 method with an in-memory user table.
///
/// Register it through your hooks:
///
/// ```
/// use shoal_server::auth::{AuthMethod, Hooks, ScramSha256};
///
/// struct MyHooks {
///     scram: ScramSha256,
/// }
///
/// impl Hooks for MyHooks {
///     fn auth_method(&self, method: &str) -> Option<&dyn AuthMethod> {
///         (method == self.scram.method()).then_some(&self.scram as &dyn AuthMethod)
///     }
/// }
///
/// let scram = ScramSha256::new();
/// scram.add_user("alice", b"correct horse").expect("random salt");
/// let hooks = MyHooks { scram };
/// # let _ = hooks;
/// ```
#[derive(Debug)]
pub struct ScramSha256 {
    users: RwLock<HashMap<String, ScramCredentials>>,
    /// Salts unknown users' fake exchanges, so they look like a real user's.
    secret: [u8; 32],
    rng: ring::rand::SystemRandom,
}

impl Default for ScramSha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl ScramSha256 {
    /// No users yet.
    pub fn new() -> Self {
        let rng = ring::rand::SystemRandom::new();
        let mut secret = [0u8; 32];
        // Without randomness the fake salts are merely predictable, not wrong.
        let _ = rng.fill(&mut secret);
        Self { users: RwLock::new(HashMap::new()), secret, rng }
    }

    /// Adds (or replaces) a user with a random salt and [`DEFAULT_ITERATIONS`]. Runs
    /// PBKDF2: call it from your own thread, not from a hook.
    ///
    /// # Errors
    /// The system's random source failed.
    pub fn add_user(&self, name: &str, password: &[u8]) -> Result<(), ring::error::Unspecified> {
        let mut salt = [0u8; 16];
        self.rng.fill(&mut salt)?;
        let iterations = NonZeroU32::new(DEFAULT_ITERATIONS).ok_or(ring::error::Unspecified)?;
        self.insert_user(name, ScramCredentials::derive(password, &salt, iterations));
        Ok(())
    }

    /// Adds (or replaces) a user from stored credentials.
    pub fn insert_user(&self, name: &str, credentials: ScramCredentials) {
        self.users.write().insert(name.to_owned(), credentials);
    }

    /// Removes a user; exchanges already past their first step finish with the old
    /// credentials.
    pub fn remove_user(&self, name: &str) {
        self.users.write().remove(name);
    }

    /// The first step with a given server nonce (tests use the RFC's).
    fn start_with_nonce(&self, data: Option<&[u8]>, server_nonce: &str) -> AuthStep {
        let Some(first) = data.and_then(|d| std::str::from_utf8(d).ok()) else {
            return AuthStep::Fail(ReasonCode::NotAuthorized);
        };
        let Some(first) = ClientFirst::parse(first) else {
            return AuthStep::Fail(ReasonCode::NotAuthorized);
        };
        let known = self.users.read().get(&first.username).cloned();
        let (credentials, salt, iterations) = match known {
            Some(c) => (Some(c.clone()), c.salt, c.iterations),
            None => {
                let key = hmac::Key::new(hmac::HMAC_SHA256, &self.secret);
                let fake = hmac::sign(&key, first.username.as_bytes());
                (None, fake.as_ref().get(..16).unwrap_or_default().to_vec(), DEFAULT_ITERATIONS)
            }
        };
        let nonce = format!("{}{server_nonce}", first.nonce);
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        let next = ScramPending {
            credentials,
            username: first.username,
            gs2_header: first.gs2_header,
            client_first_bare: first.bare,
            server_first: server_first.clone(),
            nonce,
        };
        AuthStep::Continue { challenge: server_first.into_bytes(), next: Box::new(next) }
    }
}

impl AuthMethod for ScramSha256 {
    fn method(&self) -> &str {
        SCRAM_SHA_256
    }

    fn start(&self, _client: &AuthClient<'_>, data: Option<&[u8]>) -> AuthStep {
        let mut raw = [0u8; 18];
        if self.rng.fill(&mut raw).is_err() {
            return AuthStep::Fail(ReasonCode::ServerUnavailable);
        }
        // Base64 of random bytes: printable and free of commas, as a nonce must be.
        self.start_with_nonce(data, &B64.encode(raw))
    }
}

/// client-first-message, parsed.
struct ClientFirst {
    /// `n,,` or `y,,` (no channel binding, no authorisation identity).
    gs2_header: String,
    /// client-first-message-bare: `n=<user>,r=<nonce>[,extensions]`.
    bare: String,
    username: String,
    nonce: String,
}

impl ClientFirst {
    fn parse(message: &str) -> Option<Self> {
        let (gs2_header, bare) = match message.split_at_checked(3)? {
            (h @ ("n,," | "y,,"), bare) => (h, bare),
            _ => return None,
        };
        let mut attributes = bare.split(',');
        let username = unescape_name(attributes.next()?.strip_prefix("n=")?)?;
        let nonce = attributes.next()?.strip_prefix("r=")?;
        if nonce.is_empty() {
            return None;
        }
        Some(Self {
            gs2_header: gs2_header.to_owned(),
            bare: bare.to_owned(),
            username,
            nonce: nonce.to_owned(),
        })
    }
}

/// A saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is invalid (RFC 5802 5.1).
fn unescape_name(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('=') {
        out.push_str(rest.get(..i)?);
        let escape = rest.get(i..i + 3)?;
        out.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return None,
        });
        rest = rest.get(i + 3..)?;
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

/// A SCRAM exchange waiting for the client-final message.
struct ScramPending {
    /// `None` for an unknown user: the proof is never accepted.
    credentials: Option<ScramCredentials>,
    username: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl AuthContinuation for ScramPending {
    fn step(self: Box<Self>, data: Option<&[u8]>) -> AuthStep {
        match self.verify(data) {
            Some(server_final) => AuthStep::Success {
                data: Some(server_final.into_bytes()),
                username: Some(self.username),
            },
            None => AuthStep::Fail(ReasonCode::NotAuthorized),
        }
    }
}

impl ScramPending {
    /// Checks client-final-message; returns server-final-message when the proof holds.
    fn verify(&self, data: Option<&[u8]>) -> Option<String> {
        let message = std::str::from_utf8(data?).ok()?;
        let (without_proof, proof) = message.rsplit_once(",p=")?;
        let mut attributes = without_proof.split(',');
        let binding = attributes.next()?.strip_prefix("c=")?;
        let nonce = attributes.next()?.strip_prefix("r=")?;
        if B64.decode(binding).ok()? != self.gs2_header.as_bytes() || nonce != self.nonce {
            return None;
        }
        let proof = B64.decode(proof).ok()?;
        let credentials = self.credentials.as_ref()?;
        let auth_message =
            format!("{},{},{without_proof}", self.client_first_bare, self.server_first);
        let stored_key = hmac::Key::new(hmac::HMAC_SHA256, &credentials.stored_key);
        let signature = hmac::sign(&stored_key, auth_message.as_bytes());
        if proof.len() != signature.as_ref().len() {
            return None;
        }
        let client_key: Vec<u8> =
            proof.iter().zip(signature.as_ref()).map(|(p, s)| p ^ s).collect();
        if !equal_in_constant_time(&sha256(&client_key), &credentials.stored_key) {
            return None;
        }
        let server_key = hmac::Key::new(hmac::HMAC_SHA256, &credentials.server_key);
        let server_signature = hmac::sign(&server_key, auth_message.as_bytes());
        Some(format!("v={}", B64.encode(server_signature.as_ref())))
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    to_array(digest::digest(&digest::SHA256, data).as_ref())
}

fn to_array(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b;
    }
    out
}

/// Compares without stopping at the first difference (no timing hint about the key).
fn equal_in_constant_time(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil".
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                                p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_method() -> ScramSha256 {
        let method = ScramSha256::new();
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let iterations = NonZeroU32::new(4096).unwrap();
        method.insert_user("user", ScramCredentials::derive(b"pencil", &salt, iterations));
        method
    }

    fn challenge(step: AuthStep) -> (String, Box<dyn AuthContinuation>) {
        match step {
            AuthStep::Continue { challenge, next } => (String::from_utf8(challenge).unwrap(), next),
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    #[test]
    fn rfc_7677_exchange() {
        let method = rfc_method();
        let (server_first, next) =
            challenge(method.start_with_nonce(Some(CLIENT_FIRST.as_bytes()), SERVER_NONCE));
        assert_eq!(server_first, SERVER_FIRST);
        match next.step(Some(CLIENT_FINAL.as_bytes())) {
            AuthStep::Success { data, username } => {
                assert_eq!(data.as_deref(), Some(SERVER_FINAL.as_bytes()));
                assert_eq!(username.as_deref(), Some("user"));
            }
            other => panic!("expected success, got {other:?}"),
        }
    }

    #[test]
    fn wrong_proof_nonce_or_binding_is_not_authorized() {
        let method = rfc_method();
        let bad = [
            CLIENT_FINAL.replace("p=dHzb", "p=dHzc"),
            CLIENT_FINAL.replace("$k0,", "$k1,"),
            CLIENT_FINAL.replace("c=biws", "c=eSws"),
            CLIENT_FINAL.replace(",p=", ",x="),
            String::new(),
        ];
        for final_message in bad {
            let (_, next) =
                challenge(method.start_with_nonce(Some(CLIENT_FIRST.as_bytes()), SERVER_NONCE));
            let step = next.step(Some(final_message.as_bytes()));
            assert!(
                matches!(step, AuthStep::Fail(ReasonCode::NotAuthorized)),
                "{final_message:?}: {step:?}"
            );
        }
    }

    #[test]
    fn unknown_users_get_a_stable_challenge_and_fail() {
        let method = rfc_method();
        let first = "n,,n=mallory,r=abc";
        let (a, next) = challenge(method.start_with_nonce(Some(first.as_bytes()), "X"));
        let (b, _) = challenge(method.start_with_nonce(Some(first.as_bytes()), "X"));
        assert_eq!(a, b, "same salt each time, like a real user");
        let forged = "c=biws,r=abcX,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert!(matches!(next.step(Some(forged.as_bytes())), AuthStep::Fail(_)));
    }

    #[test]
    fn malformed_client_first_is_not_authorized() {
        let method = rfc_method();
        for first in [
            "",
            "n,,",
            "p=tls-unique,,n=user,r=x",
            "n,a=admin,n=user,r=x",
            "n,,n=us=er,r=x",
            "n,,n=user",
            "n,,n=user,r=",
        ] {
            let step = method.start_with_nonce(Some(first.as_bytes()), SERVER_NONCE);
            assert!(
                matches!(step, AuthStep::Fail(ReasonCode::NotAuthorized)),
                "{first:?}: {step:?}"
            );
        }
        assert!(matches!(method.start_with_nonce(None, "X"), AuthStep::Fail(_)));
    }

    #[test]
    fn escaped_names() {
        assert_eq!(unescape_name("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(unescape_name("a=2"), None);
        assert_eq!(unescape_name("a=41"), None);
    }
}
