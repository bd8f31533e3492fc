//! Reading another process's CPU time and resident memory from `/proc` (`--broker-pid`).
//!
//! CPU is `utime + stime` from `/proc/<pid>/stat` (fields 14 and 15, in clock ticks);
//! memory is `VmRSS` from `/proc/<pid>/status`. The window arithmetic lives in
//! `crate::engine`; the reporting in `crate::report`.

use std::fs;

use anyhow::{anyhow, Context, Result};

/// One reading of a process's resource use.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// User plus system CPU time, seconds.
    pub cpu_secs: f64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
}

/// Reads `pid`'s CPU time and RSS.
///
/// # Errors
/// When the process does not exist or its `/proc` files cannot be parsed.
pub fn sample(pid: u32) -> Result<Sample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat (is the broker pid right?)"))?;
    let ticks = parse_cpu_ticks(&stat).ok_or_else(|| anyhow!("cannot parse /proc/{pid}/stat"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rss_kib =
        parse_rss_kib(&status).ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(Sample { cpu_secs: ticks as f64 / crate::sys::clock_ticks_per_sec() as f64, rss_kib })
}

/// utime + stime from the text of `/proc/<pid>/stat`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or ')'; the
    // fields after the last ')' start at field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // Fields 3..=13 are skipped; utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_ticks_even_with_odd_command_names() {
        let stat = "1234 (my (weird) broker) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 50 0 0 20 0 4 0 100 1000000 500 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tmosquitto\nVmPeak:\t  9000 kB\nVmRSS:\t    6144 kB\nThreads:\t1\n";
        assert_eq!(parse_rss_kib(status), Some(6144));
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
    }
}
