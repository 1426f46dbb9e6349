//! Reading a VM's serial console: which kernels booted, what the guest's
//! report unit printed.

use super::{KERNEL_BANNER, REPORT_PREFIX};

/// The release of every kernel banner (`Linux version <release> …`) in a
/// console log, in order.
pub fn booted_kernels(serial: &str) -> Vec<String> {
    serial
        .lines()
        .filter_map(|line| {
            let at = line.find(KERNEL_BANNER)?;
            line[at + KERNEL_BANNER.len()..]
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// The lines starting with [`REPORT_PREFIX`], prefix removed.
pub fn report_lines(serial: &str) -> Vec<String> {
    serial
        .lines()
        .filter_map(|line| {
            let at = line.find(REPORT_PREFIX)?;
            Some(line[at + REPORT_PREFIX.len()..].to_owned())
        })
        .collect()
}

pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_kernel_per_banner() {
        let log = "BdsDxe: loading Boot0001\n\
                   [    0.000000] Linux version 6.1.0-50-cloud-amd64 (debian-kernel@lists.debian.org) (gcc)\n\
                   noise\n\
                   [    0.000000] Linux version 6.1.0-51-cloud-amd64 (debian-kernel@lists.debian.org)\n";
        assert_eq!(
            booted_kernels(log),
            ["6.1.0-50-cloud-amd64", "6.1.0-51-cloud-amd64"]
        );
        assert!(booted_kernels("no kernel here\n").is_empty());
    }

    #[test]
    fn report_lines_drop_the_prefix() {
        let log = "x baton-vmhost: ready kernel=6.1.0-50-cloud-amd64\nother\n";
        assert_eq!(report_lines(log), ["ready kernel=6.1.0-50-cloud-amd64"]);
    }
}
