//! Helpers the benchmarks share: process CPU time and memory, percentiles, the fd limit.

/// User + system CPU time of a process (`self` for this one), in seconds.
pub(crate) fn process_cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0 // USER_HZ is 100 on Linux
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS:`, `VmHWM:`), 0 if absent.
// The loopback benchmark reads no process memory; each benchmark compiles its own copy.
#[allow(dead_code)]
pub(crate) fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The `p` quantile (0 to 1) of sorted values; NaN for none.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Raises this process's open-file limit towards `wanted`, as far as the hard limit allows.
pub(crate) fn raise_fd_limit(wanted: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let max = limit.maximum.unwrap_or(wanted);
    limit.current = Some(wanted.min(max));
    let _ = setrlimit(Resource::Nofile, limit);
}
