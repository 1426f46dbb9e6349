//! What `/proc` says of a process: resident memory and context switches (each one a
//! wake-up: the process slept and was scheduled again, or was preempted).

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, field)
}

fn kib_field(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Context switches (voluntary and not) of every thread of the process so far; threads
/// that already exited are not counted.
pub fn context_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for field in ["voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"] {
            total += status
                .lines()
                .find_map(|l| {
                    l.strip_prefix(field)?
                        .strip_prefix(':')?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .unwrap_or(0);
        }
    }
    Some(total)
}

/// Threads of the process.
pub fn threads(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields_and_our_own_switches() {
        let status = "Name:\tx\nVmHWM:\t   17920 kB\nVmRSS:\t    9000 kB\n";
        assert_eq!(kib_field(status, "VmHWM"), Some(17920));
        assert_eq!(kib_field(status, "VmRSS"), Some(9000));
        assert_eq!(kib_field(status, "VmSwap"), None);
        assert!(context_switches(std::process::id()).is_some());
        assert!(status_kib(std::process::id(), "VmRSS").is_some_and(|k| k > 0));
    }
}
