//! Rate limits against abuse: a token bucket, the per-address connection rate limit
//! (a [`Hooks`] implementation on `on_accept`), and the per-client publish rate the
//! workers check on every PUBLISH when it is configured.
//!
//! The worker's side (which reason code, closing the connection) is in
//! `worker/authz.rs`; the config keys are `[limits] max_connection_rate_per_ip`,
//! `max_publish_rate` and `max_publish_bytes_rate`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use parking_lot::Mutex;

use super::Hooks;

/// A token bucket: `rate` tokens a second, holding at most one second's worth (at least
/// one token), so a burst of up to `rate` is allowed after a quiet second.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilled at `rate` per second.
    pub fn new(rate: u64, now: Instant) -> Self {
        let rate = rate as f64;
        Self { rate, tokens: rate.max(1.0), last: now }
    }

    /// Refills for the time since the last call, then takes `amount` tokens if there
    /// are that many. A request larger than the whole bucket is allowed when the bucket
    /// is full (one oversized message a second), so a limit never blocks a client
    /// outright.
    pub fn try_take(&mut self, amount: u64, now: Instant) -> bool {
        let capacity = self.rate.max(1.0);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(capacity);
        let amount = amount as f64;
        if self.tokens >= amount || (self.tokens >= capacity && amount > capacity) {
            self.tokens -= amount.min(self.tokens);
            true
        } else {
            false
        }
    }

    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.rate.max(1.0)
    }
}

/// Addresses tracked before idle (full) buckets are swept out.
const SWEEP_AT_ADDRESSES: usize = 4096;

/// Refuses a new connection from an address that opened more than `per_second`
/// connections a second (with a burst of as many). Shared by all workers behind one
/// short lock, taken once per accepted socket (never on the publish path).
#[derive(Debug)]
pub struct ConnectionRateLimit {
    per_second: u64,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl ConnectionRateLimit {
    /// A limit of `per_second` new connections per client address.
    pub fn new(per_second: u64) -> Self {
        Self { per_second, buckets: Mutex::new(HashMap::new()) }
    }

    /// Whether `ip` may open a connection now (takes a token if so).
    pub fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock();
        if buckets.len() >= SWEEP_AT_ADDRESSES && !buckets.contains_key(&ip) {
            // Addresses whose bucket refilled have not connected for a while: forget them,
            // so the map stays bounded by the addresses active within about a second.
            buckets.retain(|_, b| !b.is_full(now));
        }
        let per_second = self.per_second;
        buckets.entry(ip).or_insert_with(|| TokenBucket::new(per_second, now)).try_take(1, now)
    }
}

impl Hooks for ConnectionRateLimit {
    fn on_accept(&self, peer: SocketAddr) -> bool {
        let ok = self.admit(peer.ip(), Instant::now());
        if !ok {
            log::warn!("connection from {peer} refused: over max_connection_rate_per_ip");
        }
        ok
    }
}

/// The per-client publish limits, 0 meaning unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishRateSettings {
    /// PUBLISH packets a second.
    pub messages_per_second: u64,
    /// Topic and payload bytes a second.
    pub bytes_per_second: u64,
}

impl PublishRateSettings {
    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.messages_per_second > 0 || self.bytes_per_second > 0
    }
}

/// Which publish limit a client went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRateExceeded {
    /// Too many messages a second (MQTT 5: 0x96 Message rate too high).
    Messages,
    /// Too many bytes a second (MQTT 5: 0x97 Quota exceeded).
    Bytes,
}

/// One connection's publish buckets.
#[derive(Debug, Clone)]
pub struct PublishRate {
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

impl PublishRate {
    /// Full buckets for a new connection.
    pub fn new(settings: PublishRateSettings, now: Instant) -> Self {
        let bucket = |rate: u64| (rate > 0).then(|| TokenBucket::new(rate, now));
        Self {
            messages: bucket(settings.messages_per_second),
            bytes: bucket(settings.bytes_per_second),
        }
    }

    /// Accounts one PUBLISH of `bytes` bytes.
    ///
    /// # Errors
    /// The limit it went over.
    pub fn check(&mut self, bytes: usize, now: Instant) -> Result<(), PublishRateExceeded> {
        if let Some(b) = &mut self.messages {
            if !b.try_take(1, now) {
                return Err(PublishRateExceeded::Messages);
            }
        }
        if let Some(b) = &mut self.bytes {
            if !b.try_take(bytes as u64, now) {
                return Err(PublishRateExceeded::Bytes);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_a_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0);
        assert!((0..10).all(|_| b.try_take(1, t0)));
        assert!(!b.try_take(1, t0));
        assert!(b.try_take(1, t0 + Duration::from_millis(100)));
        assert!(!b.try_take(1, t0 + Duration::from_millis(100)));
        assert!((0..10).all(|_| b.try_take(1, t0 + Duration::from_secs(5))), "capped burst");
        assert!(!b.try_take(1, t0 + Duration::from_secs(5)));
    }

    #[test]
    fn oversized_request_passes_only_on_a_full_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, t0);
        assert!(b.try_take(1000, t0));
        assert!(!b.try_take(1000, t0 + Duration::from_millis(500)));
        assert!(b.try_take(1000, t0 + Duration::from_secs(2)));
    }

    #[test]
    fn connection_rate_is_per_address_and_sweeps_idle_ones() {
        let limit = ConnectionRateLimit::new(2);
        let t0 = Instant::now();
        let a = IpAddr::from([192, 0, 2, 1]);
        let b = IpAddr::from([192, 0, 2, 2]);
        assert!(limit.admit(a, t0) && limit.admit(a, t0));
        assert!(!limit.admit(a, t0));
        assert!(limit.admit(b, t0));
        for i in 0..(SWEEP_AT_ADDRESSES as u32 + 10) {
            limit.admit(IpAddr::from(i.to_be_bytes()), t0);
        }
        let later = t0 + Duration::from_secs(2);
        assert!(limit.admit(IpAddr::from([198, 51, 100, 1]), later));
        assert!(limit.buckets.lock().len() < SWEEP_AT_ADDRESSES, "idle addresses forgotten");
    }

    #[test]
    fn publish_rate_names_the_limit_exceeded() {
        let t0 = Instant::now();
        let settings = PublishRateSettings { messages_per_second: 2, bytes_per_second: 100 };
        let mut r = PublishRate::new(settings, t0);
        assert_eq!(r.check(10, t0), Ok(()));
        assert_eq!(r.check(10, t0), Ok(()));
        assert_eq!(r.check(10, t0), Err(PublishRateExceeded::Messages));
        let mut r = PublishRate::new(settings, t0);
        assert_eq!(r.check(90, t0), Ok(()));
        assert_eq!(r.check(20, t0), Err(PublishRateExceeded::Bytes));
    }
}
