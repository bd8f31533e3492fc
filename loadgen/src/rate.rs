//! Pacing: how many messages (or connection attempts) may go out by a given instant.
//!
//! The limiter keeps a schedule (`rate × elapsed`) rather than a fixed sleep between
//! sends, so a sender that wakes late catches up instead of drifting below the target.
//! Catch-up is capped at `burst` so a long stall (a full socket, a descheduled thread)
//! does not end in a flood that would distort latency; what is skipped is simply not
//! sent, and shows up as a delivered rate below the target. Time is passed in as
//! nanoseconds since the run's clock origin, which keeps this unit-testable.

/// A schedule of `rate` events per second starting at `start_ns`.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// Events per second; `None` means unlimited.
    per_sec: Option<f64>,
    start_ns: u64,
    /// Events granted so far, including those skipped by the burst cap.
    issued: u64,
    /// Most events granted at once after falling behind.
    burst: u64,
}

impl RateLimiter {
    /// A limiter that grants whatever is asked.
    pub fn unlimited() -> Self {
        Self { per_sec: None, start_ns: 0, issued: 0, burst: u64::MAX }
    }

    /// `per_sec` events per second from `start_ns`, catching up at most `burst` at a time
    /// (at least 1). A rate of zero or less is treated as unlimited.
    pub fn new(per_sec: f64, start_ns: u64, burst: u64) -> Self {
        if per_sec.is_nan() || per_sec <= 0.0 {
            return Self::unlimited();
        }
        Self { per_sec: Some(per_sec), start_ns, issued: 0, burst: burst.max(1) }
    }

    /// A limiter whose burst is the number of events due in `window_ns` (at least 1).
    pub fn with_burst_window(per_sec: f64, start_ns: u64, window_ns: u64) -> Self {
        let burst = (per_sec * window_ns as f64 / 1e9).ceil() as u64;
        Self::new(per_sec, start_ns, burst)
    }

    /// Whether this limiter never holds anything back.
    pub fn is_unlimited(&self) -> bool {
        self.per_sec.is_none()
    }

    fn due_by(&self, now_ns: u64) -> u64 {
        match self.per_sec {
            None => u64::MAX,
            Some(rate) => {
                let elapsed = now_ns.saturating_sub(self.start_ns) as f64;
                // +1: the first event is due at the start instant itself.
                (elapsed * rate / 1e9) as u64 + 1
            }
        }
    }

    /// Takes up to `want` events allowed at `now_ns` and returns how many were granted.
    pub fn take(&mut self, now_ns: u64, want: u64) -> u64 {
        if self.per_sec.is_none() {
            return want;
        }
        let due = self.due_by(now_ns);
        let mut owed = due.saturating_sub(self.issued);
        if owed > self.burst {
            // Fell behind: forget what cannot be sent without a flood.
            self.issued = due - self.burst;
            owed = self.burst;
        }
        let granted = owed.min(want);
        self.issued += granted;
        granted
    }

    /// Nanoseconds from `now_ns` until the next event is due; `Some(0)` if one is due now,
    /// `None` for an unlimited limiter.
    pub fn due_in(&self, now_ns: u64) -> Option<u64> {
        let rate = self.per_sec?;
        if self.due_by(now_ns) > self.issued {
            return Some(0);
        }
        // Event number `issued` (0-based) is due at start + issued / rate.
        let at = self.start_ns as f64 + self.issued as f64 * 1e9 / rate;
        Some((at.ceil() as u64).saturating_sub(now_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn unlimited_grants_everything() {
        let mut r = RateLimiter::unlimited();
        assert_eq!(r.take(0, 12345), 12345);
        assert!(r.due_in(0).is_none());
        assert!(RateLimiter::new(0.0, 0, 10).is_unlimited());
    }

    #[test]
    fn grants_follow_the_schedule() {
        let mut r = RateLimiter::new(1000.0, SEC, 1_000_000);
        assert_eq!(r.take(SEC, 100), 1, "one event is due at the start");
        assert_eq!(r.take(SEC, 100), 0);
        // 10 ms later, 10 more are due.
        assert_eq!(r.take(SEC + 10_000_000, 100), 10);
        // Over a whole second the total matches the rate (+1 for the start instant).
        let total: u64 = (1..=100).map(|i| r.take(SEC + i * 10_000_000, u64::MAX)).sum();
        assert_eq!(total + 11, 1001);
    }

    #[test]
    fn want_caps_the_grant_and_the_rest_stays_owed() {
        let mut r = RateLimiter::new(1000.0, 0, 1_000_000);
        assert_eq!(r.take(SEC / 10, 30), 30);
        assert_eq!(r.take(SEC / 10, 1000), 71);
    }

    #[test]
    fn falling_behind_catches_up_at_most_burst() {
        let mut r = RateLimiter::new(1000.0, 0, 5);
        assert_eq!(r.take(SEC, u64::MAX), 5);
        assert_eq!(r.take(SEC, u64::MAX), 0);
        // Back on schedule afterwards: 1 ms later one more is due.
        assert_eq!(r.take(SEC + 1_000_000, u64::MAX), 1);
    }

    #[test]
    fn due_in_points_at_the_next_event() {
        let mut r = RateLimiter::new(100.0, 0, 10);
        assert_eq!(r.due_in(0), Some(0));
        assert_eq!(r.take(0, 1), 1);
        // Next event at 10 ms.
        assert_eq!(r.due_in(0), Some(10_000_000));
        assert_eq!(r.due_in(4_000_000), Some(6_000_000));
        assert_eq!(r.due_in(10_000_000), Some(0));
    }

    #[test]
    fn burst_window_sizes_the_burst_from_the_rate() {
        let mut r = RateLimiter::with_burst_window(10_000.0, 0, 1_000_000);
        // 10 events per ms: after a 1 s stall only 10 go out at once.
        assert_eq!(r.take(SEC, u64::MAX), 10);
    }
}
