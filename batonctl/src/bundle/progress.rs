//! Progress lines for long work (hashing, sending the build context, building, pushing):
//! to stderr for the command line, nowhere ([`Quiet`]) for callers that want silence. The
//! [`Progress`] trait is the protocol's, which reports pulls the same way.

pub use baton_protocol::docker::{Progress, Quiet};

/// Progress on stderr.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Progress for Stderr {
    fn line(&self, line: &str) {
        eprintln!("{line}");
    }
}

/// `12.3 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
