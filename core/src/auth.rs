//! MQTT 5 enhanced authentication (MQTT 5 section 4.12), sans I/O: the order of the
//! CONNECT → (AUTH ↔ AUTH)* → CONNACK exchange, of re-authentication on an established
//! connection, and which reason code each misstep earns.
//!
//! An [`AuthExchange`] exists for a connection whose CONNECT carried an Authentication
//! Method. The broker drives it: a client's AUTH goes to [`AuthExchange::handle_auth`],
//! which checks it and says what to ask the authenticator (the method's own logic, which
//! lives in the server); the authenticator's [`AuthAnswer`] goes to
//! [`AuthExchange::handle_answer`], which says what to send. Nothing here knows any
//! method's data format.
//!
//! Connections without an Authentication Method have no exchange: an AUTH from them is
//! a protocol error, which the session reports ([`crate::session::Session`]). A 3.x
//! client cannot send AUTH at all (the codec refuses packet type 15 before 5.0).

use bytes::Bytes;

use crate::codec::{Auth, AuthProperties, Connect};
use crate::protocol::ReasonCode;

/// Where an exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// CONNECT, or a client AUTH during CONNECT, is with the authenticator.
    ConnectAsked,
    /// A challenge was sent during CONNECT; the client's AUTH is due.
    ConnectChallenged,
    /// Authenticated (CONNACK sent); the client may ask to re-authenticate.
    Established,
    /// A re-authentication step is with the authenticator.
    ReauthAsked,
    /// A re-authentication challenge was sent; the client's AUTH is due.
    ReauthChallenged,
}

/// What the authenticator is asked after a client's AUTH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    /// Start the method afresh with this Authentication Data: the client asked to
    /// re-authenticate (AUTH 0x19).
    Start(Option<Bytes>),
    /// Continue the method's exchange with the client's answer to the last challenge.
    Step(Option<Bytes>),
}

/// The authenticator's answer to a CONNECT or an [`AuthRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthAnswer {
    /// Send this challenge (AUTH 0x18) and wait for the client's response.
    Continue(Option<Bytes>),
    /// The client is authenticated; send this final data with the success.
    Success(Option<Bytes>),
    /// The client is not authenticated, for this reason (0x87 Not authorized, 0x86 Bad
    /// User Name or Password, ...).
    Fail(ReasonCode),
}

/// What the broker must send after an [`AuthAnswer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthReply {
    /// Send this AUTH (Continue authentication) and wait for the client.
    Challenge(Auth),
    /// CONNECT is authenticated: go on accepting it; its successful CONNACK carries
    /// [`AuthExchange::method`] and this Authentication Data [MQTT-4.12.0-5].
    Connected(Option<Bytes>),
    /// Re-authentication succeeded: send this AUTH (Success).
    Reauthenticated(Auth),
    /// Refuse: CONNACK with this code during CONNECT, DISCONNECT with it afterwards;
    /// then close the connection [MQTT-4.12.0-4], [MQTT-4.12.1-2].
    Refuse(ReasonCode),
}

/// One connection's enhanced-authentication state.
///
/// # Invariants
/// `method` is the CONNECT's Authentication Method and never changes: every AUTH either
/// side sends names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthExchange {
    method: String,
    phase: Phase,
}

impl AuthExchange {
    /// The exchange a CONNECT asks for, with its Authentication Data for the
    /// authenticator's first step; `None` when it carries no Authentication Method (or
    /// is not 5.0), so no AUTH may follow [MQTT-4.12.0-6], [MQTT-4.12.0-7].
    pub fn from_connect(connect: &Connect) -> Option<(Self, Option<Bytes>)> {
        if !connect.protocol.is_v5() {
            return None;
        }
        let method = connect.properties.authentication_method.clone()?;
        let data = connect.properties.authentication_data.clone();
        Some((Self { method, phase: Phase::ConnectAsked }, data))
    }

    /// The Authentication Method in use.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// Whether the connection is still authenticating its CONNECT (no CONNACK yet).
    pub fn is_connecting(&self) -> bool {
        matches!(self.phase, Phase::ConnectAsked | Phase::ConnectChallenged)
    }

    /// A client's AUTH.
    ///
    /// # Errors
    /// The reason code to refuse with (CONNACK while connecting, else DISCONNECT):
    /// 0x8C Bad authentication method for another method during CONNECT; 0x82 Protocol
    /// Error for another method on re-authentication [MQTT-4.12.1-1] (0x8C is not a
    /// DISCONNECT code), for an AUTH out of turn, and for a client's AUTH Success.
    pub fn handle_auth(&mut self, auth: &Auth) -> Result<AuthRequest, ReasonCode> {
        let connecting = self.is_connecting();
        if auth.properties.authentication_method.as_deref() != Some(self.method.as_str()) {
            return Err(if connecting {
                ReasonCode::BadAuthenticationMethod
            } else {
                ReasonCode::ProtocolError
            });
        }
        let data = auth.properties.authentication_data.clone();
        match (self.phase, auth.reason_code) {
            (Phase::ConnectChallenged, ReasonCode::ContinueAuthentication) => {
                self.phase = Phase::ConnectAsked;
                Ok(AuthRequest::Step(data))
            }
            (Phase::ReauthChallenged, ReasonCode::ContinueAuthentication) => {
                self.phase = Phase::ReauthAsked;
                Ok(AuthRequest::Step(data))
            }
            // [MQTT-4.12.1-1] re-authentication only once authenticated, one at a time.
            (Phase::Established, ReasonCode::ReAuthenticate) => {
                self.phase = Phase::ReauthAsked;
                Ok(AuthRequest::Start(data))
            }
            _ => Err(ReasonCode::ProtocolError),
        }
    }

    /// The authenticator's answer to the last CONNECT or [`AuthRequest`].
    pub fn handle_answer(&mut self, answer: AuthAnswer) -> AuthReply {
        let reauth = match self.phase {
            Phase::ConnectAsked => false,
            Phase::ReauthAsked => true,
            // An answer nobody asked for: the broker's bug, not the client's; refuse
            // rather than authenticate on it.
            _ => return AuthReply::Refuse(ReasonCode::ImplementationSpecificError),
        };
        match answer {
            AuthAnswer::Continue(data) => {
                self.phase =
                    if reauth { Phase::ReauthChallenged } else { Phase::ConnectChallenged };
                AuthReply::Challenge(self.auth(ReasonCode::ContinueAuthentication, data))
            }
            AuthAnswer::Success(data) => {
                self.phase = Phase::Established;
                if reauth {
                    AuthReply::Reauthenticated(self.auth(ReasonCode::Success, data))
                } else {
                    AuthReply::Connected(data)
                }
            }
            AuthAnswer::Fail(code) => {
                self.phase = Phase::Established;
                AuthReply::Refuse(refusal(code, reauth))
            }
        }
    }

    fn auth(&self, reason_code: ReasonCode, data: Option<Bytes>) -> Auth {
        let properties = AuthProperties {
            authentication_method: Some(self.method.clone()),
            authentication_data: data,
            ..AuthProperties::default()
        };
        Auth { reason_code, properties }
    }
}

/// An authenticator's failure code as the packet that carries it allows: an error code
/// valid in CONNACK (during CONNECT) or DISCONNECT (re-authentication; 0x86 and 0x8C are
/// CONNACK-only), else 0x87 Not authorized.
fn refusal(code: ReasonCode, disconnect: bool) -> ReasonCode {
    let allowed = if disconnect {
        crate::codec::DISCONNECT_REASON_CODES
    } else {
        crate::codec::CONNACK_REASON_CODES
    };
    if code.is_error() && allowed.contains(&code.value()) {
        code
    } else {
        ReasonCode::NotAuthorized
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ConnectProperties;
    use crate::protocol::ProtocolVersion;

    fn connect(version: ProtocolVersion, method: Option<&str>) -> Connect {
        Connect {
            protocol: version,
            clean_start: true,
            keep_alive: 0,
            client_id: "c".into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties {
                authentication_method: method.map(str::to_owned),
                authentication_data: method.map(|_| Bytes::from_static(b"first")),
                ..ConnectProperties::default()
            },
        }
    }

    fn auth(code: ReasonCode, method: &str, data: &'static [u8]) -> Auth {
        Auth {
            reason_code: code,
            properties: AuthProperties {
                authentication_method: Some(method.into()),
                authentication_data: Some(Bytes::from_static(data)),
                ..AuthProperties::default()
            },
        }
    }

    fn data(d: &'static [u8]) -> Option<Bytes> {
        Some(Bytes::from_static(d))
    }

    fn started() -> AuthExchange {
        let (ex, first) =
            AuthExchange::from_connect(&connect(ProtocolVersion::V5, Some("M"))).expect("a method");
        assert_eq!(first, data(b"first"));
        ex
    }

    #[test]
    fn no_exchange_without_a_method_or_before_mqtt_5() {
        assert!(AuthExchange::from_connect(&connect(ProtocolVersion::V5, None)).is_none());
        assert!(AuthExchange::from_connect(&connect(ProtocolVersion::V3_1_1, Some("M"))).is_none());
    }

    #[test]
    fn connect_challenge_response_then_connack() {
        let mut ex = started();
        assert!(ex.is_connecting());
        let reply = ex.handle_answer(AuthAnswer::Continue(data(b"challenge")));
        assert_eq!(
            reply,
            AuthReply::Challenge(auth(ReasonCode::ContinueAuthentication, "M", b"challenge"))
        );
        let request = ex.handle_auth(&auth(ReasonCode::ContinueAuthentication, "M", b"proof"));
        assert_eq!(request, Ok(AuthRequest::Step(data(b"proof"))));
        assert_eq!(
            ex.handle_answer(AuthAnswer::Success(data(b"final"))),
            AuthReply::Connected(data(b"final"))
        );
        assert!(!ex.is_connecting());
        assert_eq!(ex.method(), "M");
    }

    #[test]
    fn connect_missteps_are_refused() {
        let mut ex = started();
        let response = auth(ReasonCode::ContinueAuthentication, "M", b"x");
        // The client may not speak before the broker's challenge.
        assert_eq!(ex.clone().handle_auth(&response), Err(ReasonCode::ProtocolError));
        assert_eq!(
            ex.clone().handle_answer(AuthAnswer::Fail(ReasonCode::Success)),
            AuthReply::Refuse(ReasonCode::NotAuthorized),
            "a failure is an error code"
        );
        ex.handle_answer(AuthAnswer::Continue(None));
        assert_eq!(
            ex.clone().handle_auth(&auth(ReasonCode::ContinueAuthentication, "Other", b"x")),
            Err(ReasonCode::BadAuthenticationMethod)
        );
        for code in [ReasonCode::Success, ReasonCode::ReAuthenticate] {
            assert_eq!(
                ex.clone().handle_auth(&auth(code, "M", b"x")),
                Err(ReasonCode::ProtocolError)
            );
        }
        assert_eq!(ex.handle_auth(&response), Ok(AuthRequest::Step(data(b"x"))));
        assert_eq!(
            ex.clone().handle_auth(&response),
            Err(ReasonCode::ProtocolError),
            "out of turn"
        );
        assert_eq!(
            ex.handle_answer(AuthAnswer::Fail(ReasonCode::BadUserNameOrPassword)),
            AuthReply::Refuse(ReasonCode::BadUserNameOrPassword)
        );
    }

    #[test]
    fn reauthentication_with_the_same_method_only() {
        let mut ex = started();
        ex.handle_answer(AuthAnswer::Success(None));
        assert_eq!(
            ex.clone().handle_auth(&auth(ReasonCode::ReAuthenticate, "Other", b"x")),
            Err(ReasonCode::ProtocolError)
        );
        assert_eq!(
            ex.clone().handle_auth(&auth(ReasonCode::ContinueAuthentication, "M", b"x")),
            Err(ReasonCode::ProtocolError),
            "nothing to continue"
        );
        let request = ex.handle_auth(&auth(ReasonCode::ReAuthenticate, "M", b"again"));
        assert_eq!(request, Ok(AuthRequest::Start(data(b"again"))));
        assert_eq!(
            ex.clone().handle_auth(&auth(ReasonCode::ReAuthenticate, "M", b"again")),
            Err(ReasonCode::ProtocolError),
            "one re-authentication at a time"
        );
        assert!(matches!(ex.handle_answer(AuthAnswer::Continue(None)), AuthReply::Challenge(_)));
        assert!(!ex.is_connecting(), "re-authentication is not CONNECT");
        ex.handle_auth(&auth(ReasonCode::ContinueAuthentication, "M", b"r")).unwrap();
        assert_eq!(
            ex.handle_answer(AuthAnswer::Success(data(b"ok"))),
            AuthReply::Reauthenticated(auth(ReasonCode::Success, "M", b"ok"))
        );
        // And again, failing this time: DISCONNECT codes only.
        ex.handle_auth(&auth(ReasonCode::ReAuthenticate, "M", b"x")).unwrap();
        assert_eq!(
            ex.handle_answer(AuthAnswer::Fail(ReasonCode::BadUserNameOrPassword)),
            AuthReply::Refuse(ReasonCode::NotAuthorized)
        );
    }

    #[test]
    fn an_answer_nobody_asked_for_refuses() {
        let mut ex = started();
        ex.handle_answer(AuthAnswer::Success(None));
        assert!(matches!(ex.handle_answer(AuthAnswer::Success(None)), AuthReply::Refuse(_)));
    }
}
