//! GRUB with `GRUB_DEFAULT=saved`. The kernel package's hooks run `update-grub`, which
//! writes a menu entry per installed kernel into `/boot/grub/grub.cfg`. The agent:
//! - pins the running kernel's entry as the saved default (`grub-set-default`), since the
//!   first menu entry boots the newest kernel;
//! - boots the new entry once (`grub-reboot`: `next_entry` in the GRUB environment, which
//!   GRUB clears as it boots it, so a kernel that does not come up falls back to the saved
//!   default on the next boot);
//! - makes it the saved default after it was verified running.
//!
//! Entries are named by their ids (`$menuentry_id_option`), the path through submenus
//! joined with `>`, e.g. `gnulinux-advanced-<uuid>>gnulinux-<release>-advanced-<uuid>`:
//! ids, unlike titles, do not change with translations or the distributor's name.

use std::path::Path;

use baton_protocol::manifest::Component;

use super::package::{EntryNames, EntryTools};
use crate::ops::{HostOps, OpError, OpResult};

/// GRUB's generated configuration, where the entries are read from.
pub const CONFIG: &str = "/boot/grub/grub.cfg";
/// The settings `update-grub` reads; `GRUB_DEFAULT` must be `saved`.
const DEFAULTS: &str = "/etc/default/grub";
/// GRUB's environment block, where `grub-reboot` writes `next_entry`.
const ENVIRONMENT: &str = "/boot/grub/grubenv";

pub(super) struct Grub;

/// One menu entry: its id path (`submenu>entry`) and its kernel's path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MenuEntry {
    path: String,
    linux: Option<String>,
}

/// The value in single quotes after `$menuentry_id_option` on a `menuentry` or `submenu`
/// line.
fn id_of(line: &str) -> Option<&str> {
    let rest = line.split("$menuentry_id_option").nth(1)?.trim_start();
    let rest = rest.strip_prefix('\'')?;
    rest.split('\'').next()
}

/// Parses grub.cfg's menu entries, nested in submenus, by brace depth.
fn parse_config(text: &str) -> Vec<MenuEntry> {
    // One element per open brace: the id when it opened a submenu or an entry.
    let mut open: Vec<Option<(bool, String)>> = Vec::new();
    let mut entries: Vec<MenuEntry> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line == "}" {
            open.pop();
            continue;
        }
        if !line.ends_with('{') {
            if line.starts_with("linux")
                && let Some(Some((false, _))) = open.last()
                && let Some(entry) = entries.last_mut()
            {
                entry.linux = line.split_whitespace().nth(1).map(str::to_owned);
            }
            continue;
        }
        let submenu = line.starts_with("submenu ");
        let named = (submenu || line.starts_with("menuentry "))
            .then(|| id_of(line))
            .flatten()
            .map(|id| (submenu, id.to_owned()));
        if let Some((false, id)) = &named {
            let mut path: Vec<&str> = open
                .iter()
                .filter_map(|o| o.as_ref().map(|(_, id)| id.as_str()))
                .collect();
            path.push(id);
            entries.push(MenuEntry {
                path: path.join(">"),
                linux: None,
            });
        }
        open.push(named);
    }
    entries
}

/// The (non-recovery) entry that boots `release`, in the submenu where Debian lists each
/// kernel: its id names the release, or else its `linux` line does.
fn entry_for<'a>(entries: &'a [MenuEntry], release: &str) -> Option<&'a MenuEntry> {
    let normal = |e: &&MenuEntry| !e.path.contains("-recovery-");
    entries
        .iter()
        .filter(normal)
        .find(|e| e.path.contains(&format!("-{release}-")))
        .or_else(|| {
            entries.iter().filter(normal).find(|e| {
                e.path.contains('>')
                    && e.linux
                        .as_deref()
                        .is_some_and(|l| l.ends_with(&format!("vmlinuz-{release}")))
            })
        })
}

/// Whether `GRUB_DEFAULT=saved` is set (the last assignment wins, as in the shell).
fn default_is_saved(defaults: &str) -> bool {
    defaults
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("GRUB_DEFAULT="))
        .is_some_and(|v| v.trim_matches(|c| c == '"' || c == '\'') == "saved")
}

fn entry_path(ops: &dyn HostOps, component: &Component, release: &str) -> OpResult<String> {
    let config = ops.read_text(Path::new(CONFIG))?.unwrap_or_default();
    entry_for(&parse_config(&config), release)
        .map(|e| e.path.clone())
        .ok_or_else(|| OpError::Bootloader {
            component: component.name.clone(),
            reason: format!(
                "{CONFIG} has no menu entry for kernel {release}; did update-grub run?"
            ),
        })
}

impl EntryTools for Grub {
    fn check(&self, ops: &dyn HostOps, component: &Component) -> OpResult<()> {
        let defaults = ops.read_text(Path::new(DEFAULTS))?.unwrap_or_default();
        if default_is_saved(&defaults) {
            return Ok(());
        }
        Err(OpError::Bootloader {
            component: component.name.clone(),
            reason: format!(
                "{DEFAULTS} must set GRUB_DEFAULT=saved (then run update-grub): \
                 without it GRUB ignores grub-reboot and grub-set-default"
            ),
        })
    }

    fn entry(
        &self,
        ops: &dyn HostOps,
        component: &Component,
        release: &str,
    ) -> OpResult<EntryNames> {
        let path = entry_path(ops, component, release)?;
        Ok(EntryNames {
            default: path.clone(),
            once: path,
        })
    }

    fn set_default(&self, ops: &dyn HostOps, name: &str) -> OpResult<()> {
        ops.run(&["grub-set-default", name]).map(drop)
    }

    fn boot_once(&self, ops: &dyn HostOps, name: &str) -> OpResult<()> {
        ops.run(&["grub-reboot", name]).map(drop)
    }

    fn clear_once(&self, ops: &dyn HostOps) -> OpResult<()> {
        ops.run(&["grub-editenv", ENVIRONMENT, "unset", "next_entry"])
            .map(drop)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The menu part of a grub.cfg that Debian bookworm's update-grub writes.
    pub(crate) const CONFIG_TEXT: &str = "
function load_video {
  if [ x$feature_all_video_module = xy ]; then
    insmod all_video
  fi
}
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os $menuentry_id_option 'gnulinux-simple-0f00' {
	load_video
	linux	/boot/vmlinuz-6.1.0-51-cloud-amd64 root=UUID=0f00 ro console=ttyS0,115200 panic=10
	initrd	/boot/initrd.img-6.1.0-51-cloud-amd64
}
submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-0f00' {
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-51-cloud-amd64' --class debian $menuentry_id_option 'gnulinux-6.1.0-51-cloud-amd64-advanced-0f00' {
		linux	/boot/vmlinuz-6.1.0-51-cloud-amd64 root=UUID=0f00 ro
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-51-cloud-amd64 (recovery mode)' --class debian $menuentry_id_option 'gnulinux-6.1.0-51-cloud-amd64-recovery-0f00' {
		linux	/boot/vmlinuz-6.1.0-51-cloud-amd64 root=UUID=0f00 ro single
	}
	menuentry 'Debian GNU/Linux, with Linux 6.1.0-50-cloud-amd64' --class debian $menuentry_id_option 'gnulinux-6.1.0-50-cloud-amd64-advanced-0f00' {
		linux	/boot/vmlinuz-6.1.0-50-cloud-amd64 root=UUID=0f00 ro
	}
}
";

    #[test]
    fn finds_the_advanced_entry_of_a_release() {
        let entries = parse_config(CONFIG_TEXT);
        assert_eq!(entries.len(), 4, "{entries:?}");
        assert_eq!(
            entry_for(&entries, "6.1.0-50-cloud-amd64").map(|e| e.path.as_str()),
            Some("gnulinux-advanced-0f00>gnulinux-6.1.0-50-cloud-amd64-advanced-0f00")
        );
        assert_eq!(
            entry_for(&entries, "6.1.0-51-cloud-amd64").map(|e| e.path.as_str()),
            Some("gnulinux-advanced-0f00>gnulinux-6.1.0-51-cloud-amd64-advanced-0f00")
        );
        assert_eq!(entry_for(&entries, "6.1.0-5"), None);
    }

    #[test]
    fn reads_grub_default() {
        assert!(default_is_saved("GRUB_DEFAULT=0\nGRUB_DEFAULT=saved\n"));
        assert!(default_is_saved("GRUB_DEFAULT=\"saved\"\n"));
        assert!(!default_is_saved("GRUB_DEFAULT=saved\nGRUB_DEFAULT=0\n"));
        assert!(!default_is_saved("GRUB_TIMEOUT=5\n"));
    }
}
