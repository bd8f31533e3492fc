//! DISCONNECT and AUTH (PINGREQ and PINGRESP have no body).

use super::properties::{AuthProperties, DisconnectProperties};
use crate::protocol::ReasonCode;

/// DISCONNECT, in either direction (server to client only in v5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Reason code (v5); `Success` means Normal disconnection. Always `Success` for 3.x.
    pub reason_code: ReasonCode,
    /// MQTT 5 properties.
    pub properties: DisconnectProperties,
}

/// AUTH (v5 only): enhanced authentication exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Properties (the method and data live here).
    pub properties: AuthProperties,
}
