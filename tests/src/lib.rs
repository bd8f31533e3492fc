//! Shoal's integration tests: a real broker on a free loopback port, real clients.
//!
//! - [`harness`]: starting the broker in-process or as the `shoal` binary, deadlines,
//!   external clients (paho-mqtt, mosquitto).
//! - [`raw`]: a byte-level blocking client for protocol edges no library client produces,
//!   over TCP, TLS or WebSocket.
//! - [`pki`]: a throwaway CA and certificates for the TLS suites.
//! - [`http`]: a minimal HTTP/1.1 client for the admin listener.
//! - [`cdp`]: headless Chromium driven over the DevTools protocol (dashboard test).
//! - `suites` (test-only): one module per area; all compile into this crate's single
//!   test binary, so `cargo test -p shoal-tests` runs them all.
//!
//! Mocks of the broker do not belong here: unit tests of the protocol live in
//! `shoal-core`.

// A test crate: a failed unwrap is a failed test with a backtrace, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cdp;
pub mod harness;
pub mod http;
pub mod pki;
pub mod raw;

#[cfg(test)]
mod suites;
