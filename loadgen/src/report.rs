//! Results of a run: the latency histogram, the final summary (human and JSON) and the
//! once-a-second progress line.
//!
//! Latencies are recorded in nanoseconds in an `hdrhistogram` (3 significant digits) and
//! reported in microseconds. Collecting the numbers is the engine's job
//! (`crate::engine`); broker CPU and memory come from `crate::procstat`.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Highest latency the histogram can hold: one minute, in nanoseconds.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// A fresh latency histogram (nanoseconds).
///
/// # Errors
/// Only if `hdrhistogram` rejects these constant bounds, which it does not.
pub fn new_histogram() -> Result<Histogram<u64>, hdrhistogram::CreationError> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

impl Latency {
    /// Percentiles of a nanosecond histogram.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }

    fn to_json(self) -> Value {
        json!({
            "count": self.count,
            "mean": round2(self.mean_us),
            "p50": round2(self.p50_us),
            "p90": round2(self.p90_us),
            "p99": round2(self.p99_us),
            "p99_9": round2(self.p999_us),
            "max": round2(self.max_us),
        })
    }
}

/// Connection establishment over the run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Connections {
    /// Connections the scenario asked for.
    pub target: u64,
    /// Connections that got a successful CONNACK (and SUBACK, for subscribers).
    pub connected: u64,
    /// TCP failures, refusals, timeouts and connections the broker closed.
    pub errors: u64,
    /// Seconds from the first connection attempt to the last CONNACK.
    pub connect_secs: f64,
}

impl Connections {
    /// Connections established per second of the connect phase.
    pub fn per_sec(&self) -> f64 {
        rate(self.connected, self.connect_secs)
    }
}

/// What the subscribers' sequence trackers found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verification {
    /// Messages missing from a subscriber's stream although a later message from the
    /// same publisher arrived.
    pub lost: u64,
    /// Messages sent after the last one a subscriber saw: still queued in the broker
    /// when the drain limit ended the run (or lost at the very end).
    pub undelivered: u64,
    /// Messages a subscriber received more than once.
    pub duplicated: u64,
    /// Messages that arrived after a later one from the same publisher.
    pub reordered: u64,
    /// Messages too far out of order to tell a reorder from a duplicate.
    pub late: u64,
    /// Messages without a load-test stamp, or from a publisher the subscriber did not
    /// expect.
    pub foreign: u64,
    /// (publisher, subscriber) streams checked.
    pub streams: u64,
}

impl Verification {
    /// No loss, duplicate or reorder was seen.
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.reordered == 0 && self.late == 0
    }
}

/// The broker's resource use over the measured window (`--broker-pid`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BrokerUse {
    /// Process id read.
    pub pid: u32,
    /// utime + stime spent in the window, seconds.
    pub cpu_secs: f64,
    /// VmRSS at the start of the window, KiB.
    pub rss_start_kib: u64,
    /// VmRSS at the end of the window, KiB.
    pub rss_end_kib: u64,
}

/// Everything a run reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    /// Scenario name (`pairs`, `fanout` ...).
    pub scenario: String,
    /// The settings the run used, echoed for the record.
    pub settings: Value,
    /// Length of the measured window, seconds.
    pub measured_secs: f64,
    /// PUBLISH packets sent in the window.
    pub sent: u64,
    /// PUBLISH packets received by subscribers in the window.
    pub delivered: u64,
    /// Payload bytes sent in the window.
    pub sent_bytes: u64,
    /// Payload bytes delivered in the window.
    pub delivered_bytes: u64,
    /// End-to-end latency of messages delivered in the window.
    pub latency: Latency,
    /// Connection figures.
    pub connections: Connections,
    /// Loss / duplicate / order check over the whole run (warm-up and drain included).
    pub verification: Verification,
    /// Protocol and I/O errors after connecting.
    pub errors: u64,
    /// The first few error messages, for the record.
    pub error_samples: Vec<String>,
    /// Broker resource use, when `--broker-pid` was given.
    pub broker: Option<BrokerUse>,
}

fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Summary {
    /// Messages sent per second in the window.
    pub fn sent_per_sec(&self) -> f64 {
        rate(self.sent, self.measured_secs)
    }

    /// Messages delivered per second in the window.
    pub fn delivered_per_sec(&self) -> f64 {
        rate(self.delivered, self.measured_secs)
    }

    /// Delivered messages per broker CPU-second, when the broker was measured.
    pub fn delivered_per_broker_cpu_sec(&self) -> Option<f64> {
        let b = self.broker?;
        (b.cpu_secs > 0.0).then(|| self.delivered as f64 / b.cpu_secs)
    }

    /// Broker RSS growth per established connection, bytes (`conn` runs only: elsewhere
    /// the window is not the connect phase).
    pub fn broker_rss_bytes_per_conn(&self) -> Option<f64> {
        let b = self.broker?;
        if self.scenario != "conn" || self.connections.connected == 0 {
            return None;
        }
        let delta = b.rss_end_kib as f64 - b.rss_start_kib as f64;
        Some(delta * 1024.0 / self.connections.connected as f64)
    }

    /// The machine-readable result object printed by `--json`.
    pub fn to_json(&self) -> Value {
        let broker = match self.broker {
            None => Value::Null,
            Some(b) => json!({
                "pid": b.pid,
                "cpu_secs": round2(b.cpu_secs),
                "rss_start_kib": b.rss_start_kib,
                "rss_end_kib": b.rss_end_kib,
                "delivered_per_cpu_sec": self.delivered_per_broker_cpu_sec().map(f64::round),
                "rss_bytes_per_conn": self.broker_rss_bytes_per_conn().map(f64::round),
            }),
        };
        let v = self.verification;
        json!({
            "scenario": self.scenario,
            "settings": self.settings,
            "measured_secs": round2(self.measured_secs),
            "sent": { "msgs": self.sent, "msgs_per_sec": self.sent_per_sec().round(),
                      "bytes_per_sec": rate(self.sent_bytes, self.measured_secs).round() },
            "delivered": { "msgs": self.delivered, "msgs_per_sec": self.delivered_per_sec().round(),
                           "bytes_per_sec": rate(self.delivered_bytes, self.measured_secs).round() },
            "latency_us": self.latency.to_json(),
            "connections": {
                "target": self.connections.target,
                "connected": self.connections.connected,
                "errors": self.connections.errors,
                "connect_secs": round2(self.connections.connect_secs),
                "connects_per_sec": self.connections.per_sec().round(),
            },
            "verification": {
                "clean": v.is_clean(),
                "lost": v.lost, "duplicated": v.duplicated, "reordered": v.reordered,
                "late": v.late, "foreign": v.foreign, "streams": v.streams,
                "undelivered": v.undelivered,
            },
            "errors": self.errors,
            "error_samples": self.error_samples,
            "broker": broker,
        })
    }

    /// The human-readable summary printed at the end of a run.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let l = &self.latency;
        let c = &self.connections;
        let v = &self.verification;
        let _ = writeln!(s, "scenario   {}  ({:.1} s measured)", self.scenario, self.measured_secs);
        let _ = writeln!(
            s,
            "sent       {:>12} msgs/s {:>12}/s  ({} msgs)",
            human(self.sent_per_sec()),
            human_bytes(rate(self.sent_bytes, self.measured_secs)),
            self.sent
        );
        let _ = writeln!(
            s,
            "delivered  {:>12} msgs/s {:>12}/s  ({} msgs)",
            human(self.delivered_per_sec()),
            human_bytes(rate(self.delivered_bytes, self.measured_secs)),
            self.delivered
        );
        if l.count > 0 {
            let _ = writeln!(
                s,
                "latency µs p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (mean {:.1}, n={})",
                l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us, l.mean_us, l.count
            );
        }
        let _ = writeln!(
            s,
            "connect    {}/{} in {:.2} s ({}/s), {} connect errors",
            c.connected,
            c.target,
            c.connect_secs,
            human(c.per_sec()),
            c.errors
        );
        if v.streams > 0 {
            let _ = writeln!(
                s,
                "verify     {}: lost {}, duplicated {}, reordered {}, late {}, foreign {} ({} streams)",
                if v.is_clean() { "clean" } else { "NOT CLEAN" },
                v.lost,
                v.duplicated,
                v.reordered,
                v.late,
                v.foreign,
                v.streams
            );
            if v.undelivered > 0 {
                let _ = writeln!(
                    s,
                    "           {} messages still undelivered when the drain limit hit",
                    v.undelivered
                );
            }
        }
        let _ = writeln!(s, "errors     {}", self.errors);
        for e in &self.error_samples {
            let _ = writeln!(s, "  - {e}");
        }
        if let Some(b) = self.broker {
            let _ = write!(
                s,
                "broker     pid {}: {:.2} CPU-s, RSS {} -> {} KiB",
                b.pid, b.cpu_secs, b.rss_start_kib, b.rss_end_kib
            );
            if let Some(per) = self.delivered_per_broker_cpu_sec() {
                let _ = write!(s, ", {} delivered msgs per CPU-s", human(per));
            }
            if let Some(per) = self.broker_rss_bytes_per_conn() {
                let _ = write!(s, ", {per:.0} B RSS per connection");
            }
            s.push('\n');
        }
        s
    }
}

/// `1.23M`-style rendering of a rate.
pub fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn human_bytes(x: f64) -> String {
    if x >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", x / 1024.0 / 1024.0)
    } else if x >= 1024.0 {
        format!("{:.1} KiB", x / 1024.0)
    } else {
        format!("{x:.0} B")
    }
}

/// One progress line: the last second's rates and the latency so far.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Progress {
    /// Seconds since the start of the run.
    pub elapsed_secs: f64,
    /// Phase name.
    pub phase: &'static str,
    /// Sent per second over the last interval.
    pub sent_per_sec: f64,
    /// Delivered per second over the last interval.
    pub delivered_per_sec: f64,
    /// Latency over the measured window so far.
    pub latency: Latency,
    /// Established connections.
    pub connected: u64,
    /// Connections asked for.
    pub target: u64,
    /// Errors so far (connect and later).
    pub errors: u64,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{:>5.1}s {:<8}] sent {:>8}/s  delivered {:>8}/s  p50 {:.0}µs p99 {:.0}µs  conns {}/{}  errors {}",
            self.elapsed_secs,
            self.phase,
            human(self.sent_per_sec),
            human(self.delivered_per_sec),
            self.latency.p50_us,
            self.latency.p99_us,
            self.connected,
            self.target,
            self.errors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        let mut h = new_histogram().unwrap();
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        Summary {
            scenario: "pairs".into(),
            settings: json!({"qos": 1}),
            measured_secs: 2.0,
            sent: 2000,
            delivered: 1000,
            sent_bytes: 128_000,
            delivered_bytes: 64_000,
            latency: Latency::from_histogram(&h),
            connections: Connections { target: 4, connected: 4, errors: 0, connect_secs: 0.5 },
            verification: Verification { lost: 3, streams: 2, ..Default::default() },
            errors: 0,
            error_samples: vec![],
            broker: Some(BrokerUse {
                pid: 42,
                cpu_secs: 0.5,
                rss_start_kib: 1000,
                rss_end_kib: 1004,
            }),
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let j = sample().to_json();
        assert_eq!(j["scenario"], "pairs");
        assert_eq!(j["sent"]["msgs"], 2000);
        assert_eq!(j["sent"]["msgs_per_sec"], 1000.0);
        assert_eq!(j["delivered"]["msgs_per_sec"], 500.0);
        assert_eq!(j["delivered"]["bytes_per_sec"], 32000.0);
        for key in ["p50", "p90", "p99", "p99_9", "max", "mean", "count"] {
            assert!(j["latency_us"][key].is_number(), "latency_us.{key}");
        }
        assert!((j["latency_us"]["p50"].as_f64().unwrap() - 500.0).abs() < 1.0);
        assert_eq!(j["latency_us"]["max"].as_f64().unwrap().round(), 1000.0);
        assert_eq!(j["connections"]["connects_per_sec"], 8.0);
        assert_eq!(j["verification"]["clean"], false);
        assert_eq!(j["verification"]["lost"], 3);
        assert_eq!(j["broker"]["delivered_per_cpu_sec"], 2000.0);
        assert!(j["broker"]["rss_bytes_per_conn"].is_null(), "only for conn runs");
        let mut c = sample();
        c.scenario = "conn".into();
        assert_eq!(c.to_json()["broker"]["rss_bytes_per_conn"], 1024.0);
        assert!(j["error_samples"].is_array());
        assert_eq!(j["settings"]["qos"], 1);
    }

    #[test]
    fn json_without_broker_or_samples_has_nulls_not_missing_keys() {
        let mut s = sample();
        s.broker = None;
        s.latency = Latency::default();
        let j = s.to_json();
        assert!(j["broker"].is_null());
        assert_eq!(j["latency_us"]["count"], 0);
        assert!(j.as_object().unwrap().contains_key("broker"));
    }

    #[test]
    fn text_summary_names_the_key_figures() {
        let text = sample().to_text();
        assert!(text.contains("NOT CLEAN"));
        assert!(text.contains("p99.9"));
        assert!(text.contains("per CPU-s"));
    }

    #[test]
    fn human_rates() {
        assert_eq!(human(1_234_567.0), "1.23M");
        assert_eq!(human(12_345.0), "12.3k");
        assert_eq!(human(12.0), "12");
    }
}
