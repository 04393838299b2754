//! Helpers shared by the benchmarks.

/// A numeric field of `/proc/self/status` (Linux), e.g. `VmRSS:` in KiB or `Threads:`; 0
/// when it cannot be read.
pub(crate) fn proc_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
