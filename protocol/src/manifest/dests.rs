//! Where a bundle may install files on a host. Baton's own paths never — its state folder
//! (bundles, journal, agent binaries), its configuration, the agent's unit — whatever a
//! list says; anything else only beneath an entry of the install allow-list; and a mode
//! with setuid or setgid bits only where the setuid allow-list says so. One check, used by
//! `batonctl bundle build`, by the downloader job and by the agent.
//!
//! An entry ending in `/` covers everything beneath that folder; any other entry covers
//! that one file. Destinations are normalised before they get here (no `..`), so covering
//! is a plain prefix test.

use super::{Manifest, ManifestError, check_absolute_path};

/// Baton's own paths: no bundle writes them, whatever the allow-list says.
pub const BATON_OWN_PATHS: &[&str] = &[
    "/var/lib/baton/",
    "/etc/baton/",
    "/etc/systemd/system/baton-agent.service",
    "/etc/systemd/system/baton-agent.service.d/",
    "/run/baton/",
];

/// The install allow-list when none is configured: local software, add-on packages, unit
/// files, kernels.
pub const DEFAULT_INSTALL_ALLOW: &[&str] =
    &["/usr/local/", "/opt/", "/etc/systemd/system/", "/boot/"];

/// Mode bits a destination must be allowed to carry.
const SETID_BITS: u32 = 0o6000;

/// What a bundle may install where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPolicy {
    /// Destinations files may be installed to.
    pub allow: Vec<String>,
    /// Destinations that may carry setuid or setgid bits.
    pub setuid: Vec<String>,
}

impl Default for InstallPolicy {
    fn default() -> Self {
        Self {
            allow: default_install_allow(),
            setuid: Vec::new(),
        }
    }
}

/// [`DEFAULT_INSTALL_ALLOW`] as owned entries.
pub fn default_install_allow() -> Vec<String> {
    DEFAULT_INSTALL_ALLOW
        .iter()
        .map(|e| (*e).to_owned())
        .collect()
}

fn covers(entry: &str, dest: &str) -> bool {
    match entry.strip_suffix('/') {
        Some(folder) => dest.starts_with(entry) || dest == folder,
        None => dest == entry,
    }
}

/// An allow-list entry: an absolute, normalised path below `/`, optionally ending in `/`.
pub fn check_install_entry(field: &str, entry: &str) -> Result<(), ManifestError> {
    check_absolute_path(field, entry.strip_suffix('/').unwrap_or(entry))
}

impl InstallPolicy {
    /// A policy from configured lists; each entry is checked, naming `field[i]`.
    pub fn new(
        (allow_field, allow): (&str, Vec<String>),
        (setuid_field, setuid): (&str, Vec<String>),
    ) -> Result<Self, ManifestError> {
        for (field, list) in [(allow_field, &allow), (setuid_field, &setuid)] {
            for (i, entry) in list.iter().enumerate() {
                check_install_entry(&format!("{field}[{i}]"), entry)?;
            }
        }
        Ok(Self { allow, setuid })
    }

    /// Checks one destination and its mode; the refusal names `field`.
    pub fn check_dest(&self, field: &str, dest: &str, mode: u32) -> Result<(), ManifestError> {
        if let Some(own) = BATON_OWN_PATHS.iter().find(|own| covers(own, dest)) {
            return Err(ManifestError::new(
                field,
                format!("{dest:?} is Baton's own ({own}): no bundle installs there"),
            ));
        }
        if !self.allow.iter().any(|e| covers(e, dest)) {
            return Err(ManifestError::new(
                field,
                format!(
                    "{dest:?} is outside the install allow-list ({})",
                    self.allow.join(", ")
                ),
            ));
        }
        if mode & SETID_BITS != 0 && !self.setuid.iter().any(|e| covers(e, dest)) {
            return Err(ManifestError::new(
                field,
                format!(
                    "mode {mode:04o} sets setuid or setgid, and {dest:?} is not in the setuid allow-list"
                ),
            ));
        }
        Ok(())
    }

    /// Checks every destination of `manifest`; the refusal names the file's `dest` field.
    pub fn check(&self, manifest: &Manifest) -> Result<(), ManifestError> {
        for (field, file) in manifest.files() {
            if let Some(dest) = &file.dest {
                self.check_dest(&format!("{field}.dest"), dest, file.mode_bits())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baton_own_paths_are_refused_whatever_the_allow_list_says() {
        let everything = InstallPolicy {
            allow: vec!["/var/".into(), "/etc/".into(), "/run/".into()],
            setuid: Vec::new(),
        };
        for dest in [
            "/var/lib/baton/journal.json",
            "/var/lib/baton/bundles/2.0.0/manifest.json",
            "/var/lib/baton/agent/current",
            "/etc/baton/agent.toml",
            "/etc/systemd/system/baton-agent.service",
            "/etc/systemd/system/baton-agent.service.d/override.conf",
            "/var/lib/baton",
        ] {
            let err = everything
                .check_dest("f.dest", dest, 0o644)
                .expect_err(dest);
            assert_eq!(err.field, "f.dest");
            assert!(err.reason.contains("Baton's own"), "{dest}: {err}");
        }
        assert!(everything.check_dest("f", "/var/lib/batonx", 0o644).is_ok());
    }

    #[test]
    fn destinations_outside_the_allow_list_are_refused() {
        let policy = InstallPolicy::default();
        for ok in [
            "/usr/local/bin/baton-hello",
            "/opt/x/y",
            "/etc/systemd/system/baton-echo.service",
            "/boot/vmlinuz-6.1.0-baton2",
        ] {
            assert!(policy.check_dest("f", ok, 0o755).is_ok(), "{ok}");
        }
        for bad in [
            "/etc/shadow",
            "/usr/bin/sudo",
            "/root/.ssh/authorized_keys",
            "/usr/localx",
        ] {
            let err = policy.check_dest("f", bad, 0o644).expect_err(bad);
            assert!(
                err.reason.contains("outside the install allow-list"),
                "{err}"
            );
        }
    }

    #[test]
    fn setuid_and_setgid_only_where_allowed() {
        let mut policy = InstallPolicy::default();
        for mode in [0o4755, 0o2755] {
            let err = policy
                .check_dest("f", "/usr/local/bin/tool", mode)
                .expect_err("setid");
            assert!(err.reason.contains("setuid allow-list"), "{err}");
        }
        policy.setuid = vec!["/usr/local/bin/tool".into()];
        assert!(
            policy
                .check_dest("f", "/usr/local/bin/tool", 0o4755)
                .is_ok()
        );
        assert!(
            policy
                .check_dest("f", "/usr/local/bin/other", 0o4755)
                .is_err()
        );
        // Sticky alone is not a privilege.
        assert!(
            policy
                .check_dest("f", "/usr/local/bin/other", 0o1755)
                .is_ok()
        );
    }

    #[test]
    fn configured_entries_are_checked() {
        let err = InstallPolicy::new(
            ("install_allow", vec!["/usr/local/".into(), "opt/".into()]),
            ("install_setuid", Vec::new()),
        )
        .expect_err("relative");
        assert_eq!(err.field, "install_allow[1]");
        for bad in ["/", "/usr/../etc/", ""] {
            assert!(check_install_entry("e", bad).is_err(), "{bad}");
        }
    }
}
