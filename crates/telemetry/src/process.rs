//! The standard Prometheus process metrics, without a dependency:
//! `process_start_time_seconds` (set once) and `process_resident_memory_bytes` (read
//! from `/proc/self/status` when asked, Linux only).

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::catalogue;

/// The process's start time, unix seconds: the first call's time (the server calls
/// [`record_start_time`] as it starts).
fn start_time() -> f64 {
    static START: OnceLock<f64> = OnceLock::new();
    *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    })
}

/// Sets `process_start_time_seconds`: the time of the first call in this process, so
/// calling it again (a second server in one test process) keeps the first value.
pub fn record_start_time() {
    metrics::gauge!(catalogue::PROCESS_START_TIME_SECONDS).set(start_time());
}

/// Sets `process_resident_memory_bytes` from `/proc/self/status` (`VmRSS`); does
/// nothing where that file is absent or unreadable (not Linux). Cheap: one small file
/// read, meant for each `/metrics` scrape.
pub fn record_resident_memory() {
    if let Some(bytes) = resident_memory_bytes() {
        // Exact below 2^53 bytes.
        metrics::gauge!(catalogue::PROCESS_RESIDENT_MEMORY_BYTES).set(bytes as f64);
    }
}

/// The resident memory of this process in bytes, when `/proc/self/status` says.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

/// The `VmRSS:   1234 kB` line of a `/proc/<pid>/status` text, in bytes.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut parts = line.split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_parsed_in_bytes_and_odd_lines_are_ignored() {
        let status = "Name:\tgenesis\nVmPeak:\t  9000 kB\nVmRSS:\t   48120 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss(status), Some(48_120 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: lots\n"), None);
        assert_eq!(parse_vm_rss("VmRSS: 12 MB\n"), None);
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_plausible_resident_size() {
        let bytes = resident_memory_bytes().unwrap();
        assert!((1 << 20..1 << 40).contains(&bytes), "{bytes}");
    }

    #[test]
    fn the_start_time_is_fixed_at_the_first_call() {
        let first = start_time();
        assert!(first > 1.6e9, "{first}");
        assert_eq!(start_time(), first);
    }
}
