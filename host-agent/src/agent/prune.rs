//! Pruning the agent's state folder once an upgrade is done, so staged bundles and backups
//! do not pile up: staged bundles of versions older than the last two installed (the one
//! just installed and the one before it, what a revert needs) are removed, and backups of
//! all but the two latest upgrades. Bundles newer than those are kept (they may be staged
//! for the next upgrade), as is anything that is not a bundle or backup folder (a
//! downloader job's temporary entries).
//!
//! Pruning never fails an upgrade: what cannot be removed is logged and left for the next.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use baton_protocol::UpgradeId;
use baton_protocol::manifest::check_version;
use baton_protocol::version;

/// Removes what is no longer needed after upgrade `done` installed `current` over
/// `previous`; returns what was removed.
pub fn prune(
    state_dir: &Path,
    current: &str,
    previous: Option<&str>,
    done: &UpgradeId,
) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    // The oldest version kept.
    let floor = match previous {
        Some(p) if version::is_downgrade(current, p) => p,
        _ => current,
    };
    for (path, name) in entries(&state_dir.join("bundles")) {
        if check_version("bundle", &name).is_ok() && version::is_downgrade(floor, &name) {
            remove(path, &mut removed);
        }
    }
    // Backups: this upgrade's and the latest one before it.
    let mut backups: Vec<(SystemTime, PathBuf, String)> = entries(&state_dir.join("backup"))
        .into_iter()
        .filter(|(_, name)| UpgradeId::new(name.as_str()).is_ok())
        .map(|(path, name)| {
            let modified = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            (modified, path, name)
        })
        .collect();
    backups.sort_by_key(|b| std::cmp::Reverse(b.0));
    let kept_other = backups
        .iter()
        .find(|(_, _, name)| name != done.as_str())
        .map(|(_, path, _)| path.clone());
    for (_, path, name) in backups {
        if name != done.as_str() && Some(&path) != kept_other.as_ref() {
            remove(path, &mut removed);
        }
    }
    removed
}

/// The folders directly in `dir` (none if it cannot be read), with their names.
fn entries(dir: &Path) -> Vec<(PathBuf, String)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    read.filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.path(), e.file_name().into_string().ok()?)))
        .collect()
}

fn remove(path: PathBuf, removed: &mut Vec<PathBuf>) {
    match std::fs::remove_dir_all(&path) {
        Ok(()) => removed.push(path),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "could not prune; the next upgrade tries again")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn folders(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = entries(dir).into_iter().map(|(_, n)| n).collect();
        names.sort();
        names
    }

    fn make(dir: &Path, names: &[&str]) {
        for name in names {
            std::fs::create_dir_all(dir.join(name).join("x")).expect("dir");
        }
    }

    /// Ages backup folder `name` by `secs`.
    fn age(dir: &Path, name: &str, secs: u64) {
        let when = SystemTime::now() - Duration::from_secs(secs);
        std::fs::File::open(dir.join(name))
            .and_then(|f| f.set_modified(when))
            .expect("set mtime");
    }

    #[test]
    fn keeps_the_last_two_versions_and_anything_newer() {
        let state = tempfile::tempdir().expect("tmp");
        let bundles = state.path().join("bundles");
        make(
            &bundles,
            &[
                "0.9.0",
                "1.0.0",
                "1.5.0-rc.1",
                "2.0.0",
                "3.0.0",
                ".baton-tmp-2.0.0-1",
                "notes",
            ],
        );
        let done = UpgradeId::new("u2").expect("id");
        let mut removed = prune(state.path(), "2.0.0", Some("1.5.0-rc.1"), &done);
        removed.sort();
        assert_eq!(removed, [bundles.join("0.9.0"), bundles.join("1.0.0")]);
        assert_eq!(
            folders(&bundles),
            [
                ".baton-tmp-2.0.0-1",
                "1.5.0-rc.1",
                "2.0.0",
                "3.0.0",
                "notes"
            ]
        );
        // After a downgrade the version left is one of the two kept.
        prune(state.path(), "1.5.0-rc.1", Some("3.0.0"), &done);
        assert_eq!(
            folders(&bundles),
            [
                ".baton-tmp-2.0.0-1",
                "1.5.0-rc.1",
                "2.0.0",
                "3.0.0",
                "notes"
            ]
        );
        // With nothing before it, older versions all go.
        prune(state.path(), "3.0.0", None, &done);
        assert_eq!(folders(&bundles), [".baton-tmp-2.0.0-1", "3.0.0", "notes"]);
    }

    #[test]
    fn keeps_the_backups_of_this_upgrade_and_the_latest_before_it() {
        let state = tempfile::tempdir().expect("tmp");
        let backup = state.path().join("backup");
        make(&backup, &["u1", "u2", "u3", "u4"]);
        age(&backup, "u1", 400);
        age(&backup, "u2", 300);
        age(&backup, "u3", 200);
        // The upgrade just done backed up first, long ago (a kernel and its reboot).
        age(&backup, "u4", 500);
        let removed = prune(
            state.path(),
            "2.0.0",
            None,
            &UpgradeId::new("u4").expect("id"),
        );
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert_eq!(folders(&backup), ["u3", "u4"]);
    }
}
