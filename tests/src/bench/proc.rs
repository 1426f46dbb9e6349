//! What `/proc` says of a process: resident memory and context switches (a voluntary one
//! is a wake-up: the process slept and was woken; a nonvoluntary one a preemption).

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    number_field(&status, field)
}

/// A number field of a `/proc/<pid>/status` text (`VmRSS:  9000 kB`,
/// `voluntary_ctxt_switches:  12`), without its unit.
fn number_field(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Context switches of every thread of the process so far; threads that already exited are
/// not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Switches {
    /// The process slept (waited on a timer, a socket, a lock) and was woken: its
    /// wake-ups.
    pub voluntary: u64,
    /// The process was running and the scheduler switched it out (typically for a process
    /// it had just woken, such as etcd answering its request): preemptions, not wake-ups.
    pub nonvoluntary: u64,
}

impl Switches {
    /// What happened between `before` and this.
    pub fn since(self, before: Switches) -> Switches {
        Switches {
            voluntary: self.voluntary.saturating_sub(before.voluntary),
            nonvoluntary: self.nonvoluntary.saturating_sub(before.nonvoluntary),
        }
    }
}

/// The process's context switches so far.
pub fn context_switches(pid: u32) -> Option<Switches> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = Switches::default();
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let field = |name| number_field(&status, name).unwrap_or(0);
        total.voluntary += field("voluntary_ctxt_switches");
        total.nonvoluntary += field("nonvoluntary_ctxt_switches");
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
    fn reads_status_fields_and_our_own_switches() {
        let status = "Name:\tx\nVmHWM:\t   17920 kB\nVmRSS:\t    9000 kB\n";
        assert_eq!(number_field(status, "VmHWM"), Some(17920));
        assert_eq!(number_field(status, "VmRSS"), Some(9000));
        assert_eq!(number_field(status, "VmSwap"), None);
        // Wake-ups and preemptions apart: one field name ends the other.
        let switches = "nonvoluntary_ctxt_switches:\t7\nvoluntary_ctxt_switches:\t12\n";
        assert_eq!(number_field(switches, "voluntary_ctxt_switches"), Some(12));
        assert_eq!(
            number_field(switches, "nonvoluntary_ctxt_switches"),
            Some(7)
        );
        assert!(context_switches(std::process::id()).is_some());
        assert!(status_kib(std::process::id(), "VmRSS").is_some_and(|k| k > 0));
    }
}
