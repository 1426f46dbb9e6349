//! systemd-boot (UEFI). The kernel package's hooks call `kernel-install`, which writes a
//! Boot Loader Specification entry on the ESP — with a boot counter in its file name when
//! `/etc/kernel/tries` exists, so systemd-boot itself counts failed boots and
//! `systemd-bless-boot` marks a good one. The agent:
//! - pins the running kernel's entry as the default (`bootctl set-default`), since
//!   otherwise systemd-boot boots the newest version it finds;
//! - boots the new entry once (`bootctl set-oneshot`: the firmware variable
//!   `LoaderEntryOneShot`, which systemd-boot deletes as it reads it, so a kernel that
//!   does not come up falls back to the default on the next boot);
//! - makes it the default after it was verified running.
//!
//! Entries are found in `bootctl list` by their `version`, so the agent never guesses an
//! entry's file name, token or counter. The one-shot names the entry's file as it is on
//! the ESP, boot counter included: systemd-boot 252 (Debian bookworm) matches
//! `LoaderEntryOneShot` against file names with their counter, where `bootctl list`
//! shows ids without it. The default names the id without the counter, which is the file
//! name once `systemd-bless-boot` has marked the entry good.

use baton_protocol::manifest::Component;

use super::package::{EntryNames, EntryTools};
use crate::ops::{HostOps, OpError, OpResult};

pub(super) struct SystemdBoot;

/// One entry of `bootctl list`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Entry {
    id: String,
    /// The entry file's path.
    source: Option<String>,
    version: Option<String>,
    linux: Option<String>,
}

impl Entry {
    /// The name systemd-boot knows the entry by at the next boot: its file's name.
    fn file_name(&self) -> &str {
        self.source
            .as_deref()
            .and_then(|s| s.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.id)
    }
}

/// Parses `bootctl list`: blocks of `key: value` lines separated by blank lines.
fn parse_list(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut current = Entry::default();
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.trim();
        if line.is_empty() {
            if !current.id.is_empty() {
                entries.push(std::mem::take(&mut current));
            }
            current = Entry::default();
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_owned();
        match key.trim() {
            "id" => current.id = value,
            "source" => current.source = Some(value),
            "version" => current.version = Some(value),
            "linux" => current.linux = Some(value),
            _ => {}
        }
    }
    entries
}

/// The entry that boots `release`: its `version`, or else its kernel path, names it.
fn entry_for<'a>(entries: &'a [Entry], release: &str) -> Option<&'a Entry> {
    entries
        .iter()
        .find(|e| e.version.as_deref() == Some(release))
        .or_else(|| {
            entries.iter().find(|e| {
                e.linux
                    .as_deref()
                    .is_some_and(|l| l.split('/').any(|part| part == release))
            })
        })
}

fn entry(ops: &dyn HostOps, component: &Component, release: &str) -> OpResult<Entry> {
    let list = ops.run(&["bootctl", "list", "--no-pager"])?;
    entry_for(&parse_list(&list), release)
        .cloned()
        .ok_or_else(|| OpError::Bootloader {
            component: component.name.clone(),
            reason: format!(
                "`bootctl list` has no entry for kernel {release}; is the kernel package's \
                 kernel-install hook (systemd-boot's) in place?"
            ),
        })
}

impl EntryTools for SystemdBoot {
    fn entry(
        &self,
        ops: &dyn HostOps,
        component: &Component,
        release: &str,
    ) -> OpResult<EntryNames> {
        let entry = entry(ops, component, release)?;
        Ok(EntryNames {
            once: entry.file_name().to_owned(),
            default: entry.id,
        })
    }

    fn set_default(&self, ops: &dyn HostOps, name: &str) -> OpResult<()> {
        ops.run(&["bootctl", "set-default", name]).map(drop)
    }

    fn boot_once(&self, ops: &dyn HostOps, name: &str) -> OpResult<()> {
        ops.run(&["bootctl", "set-oneshot", name]).map(drop)
    }

    fn clear_once(&self, ops: &dyn HostOps) -> OpResult<()> {
        // An empty id removes the variable.
        ops.run(&["bootctl", "set-oneshot", ""]).map(drop)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `bootctl list` of systemd 252 (Debian bookworm) with a counted entry.
    pub(crate) const LIST: &str = "Boot Loader Entries:
         type: Boot Loader Specification Type #1 (.conf)
        title: Debian GNU/Linux 12 (bookworm) (default) (selected)
           id: debian-6.1.0-50-cloud-amd64.conf
       source: /boot/efi/loader/entries/debian-6.1.0-50-cloud-amd64.conf
     sort-key: debian
      version: 6.1.0-50-cloud-amd64
        linux: /debian/6.1.0-50-cloud-amd64/linux
       initrd: /debian/6.1.0-50-cloud-amd64/initrd.img-6.1.0-50-cloud-amd64
      options: root=PARTUUID=6b1c2a6e ro console=ttyS0,115200 panic=10

         type: Boot Loader Specification Type #1 (.conf)
        title: Debian GNU/Linux 12 (bookworm)
           id: debian-6.1.0-51-cloud-amd64.conf
       source: /boot/efi/loader/entries/debian-6.1.0-51-cloud-amd64+3.conf
   tries left: 3
     sort-key: debian
      version: 6.1.0-51-cloud-amd64
        linux: /debian/6.1.0-51-cloud-amd64/linux

         type: Automatic
        title: Reboot Into Firmware Interface
           id: auto-reboot-to-firmware-setup
";

    #[test]
    fn finds_entries_by_version_counter_or_not() {
        let entries = parse_list(LIST);
        assert_eq!(entries.len(), 3);
        let counted = entry_for(&entries, "6.1.0-51-cloud-amd64").expect("51");
        assert_eq!(counted.file_name(), "debian-6.1.0-51-cloud-amd64+3.conf");
        assert_eq!(
            entry_for(&entries, "6.1.0-51-cloud-amd64").map(|e| e.id.as_str()),
            Some("debian-6.1.0-51-cloud-amd64.conf")
        );
        assert_eq!(
            entry_for(&entries, "6.1.0-50-cloud-amd64").map(|e| e.id.as_str()),
            Some("debian-6.1.0-50-cloud-amd64.conf")
        );
        assert_eq!(entry_for(&entries, "6.1.0-5"), None);
    }

    #[test]
    fn finds_an_entry_without_version_by_its_kernel_path() {
        let entries = parse_list("   id: a.conf\n linux: /t/6.1.0-9/linux\n");
        assert_eq!(
            entry_for(&entries, "6.1.0-9").map(|e| e.id.as_str()),
            Some("a.conf")
        );
    }
}
