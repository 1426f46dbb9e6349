//! Staging a bundle on the host under `/var/lib/baton/bundles/<version>/`: every package is
//! copied (verified while copying) into a temporary folder beside it, every file and folder
//! is fsynced, and only then is the folder renamed into place — or, when an incomplete or
//! different copy of that version is there, atomically exchanged with it
//! (`renameat2(RENAME_EXCHANGE)`). A crash at any point leaves the old state or the whole new
//! bundle; leftovers of an interrupted run are removed by the next one.
//!
//! The staged folder holds `manifest.json` (byte for byte as shipped) and each manifest file
//! at its bundle path; modes are the manifest's without setuid/setgid/sticky bits (the agent
//! applies the full modes when it installs).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use baton_protocol::manifest::{FileEntry, MAX_MANIFEST_BYTES};

use crate::bundle::Bundle;
use crate::error::JobError;
use crate::fs::{HostFs, ensure_dir, read_existing, remove_temp_entries, temp_path};
use crate::layout::{HostLayout, MANIFEST_FILE};
use crate::verify::{copy_verified, file_matches};
use crate::write_behind::write_behind;

pub use baton_protocol::job::StageAction;

/// The outcome of staging.
#[derive(Debug, Clone)]
pub struct Staged {
    /// What was done.
    pub action: StageAction,
    /// The staged folder.
    pub dir: PathBuf,
    /// Files in the bundle (agent included).
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
}

/// The mode a file is staged with.
pub fn staged_mode(entry: &FileEntry) -> u32 {
    entry.mode_bits() & 0o777
}

/// Stages `bundle` on the host; verifies every package in any case (a bundle that does not
/// match its manifest is refused even when the host already holds that version).
pub fn stage(fs: &dyn HostFs, bundle: &Bundle, layout: &HostLayout) -> Result<Staged, JobError> {
    let manifest = bundle.manifest();
    let files = manifest.files();
    let bundles = layout.bundles_dir();
    let dest = layout.bundle_dir(&manifest.version);
    let mut staged = Staged {
        action: StageAction::Unchanged,
        dir: dest.clone(),
        files: files.len(),
        bytes: files.iter().map(|(_, f)| f.size).sum(),
    };

    ensure_dir(fs, &bundles)?;
    let leftovers = remove_temp_entries(fs, &bundles)?;
    if leftovers > 0 {
        tracing::info!(dir = %bundles.display(), leftovers, "removed leftovers of an interrupted run");
    }

    let existing = fs
        .symlink_metadata(&dest)
        .map_err(|e| JobError::io(&dest, "stat", e))?;
    if existing.as_ref().is_some_and(|m| m.is_dir()) && holds(fs, &dest, bundle)? {
        bundle.verify_all()?;
        tracing::info!(dir = %dest.display(), "bundle already staged");
        return Ok(staged);
    }

    let tmp = temp_path(&bundles, &manifest.version);
    if let Err(e) = fill(fs, bundle, &tmp) {
        // Best effort; the next run removes what is left.
        let _ = fs.remove_dir_all(&tmp);
        return Err(e);
    }
    if existing.is_some() {
        fs.exchange(&tmp, &dest)
            .map_err(|e| JobError::io(&dest, "exchange with the staged copy", e))?;
        fs.sync_dir(&bundles)
            .map_err(|e| JobError::io(&bundles, "fsync", e))?;
        // `tmp` now holds the old copy.
        if let Err(e) = fs.remove_dir_all(&tmp) {
            tracing::warn!(dir = %tmp.display(), error = %e, "could not remove the replaced copy; the next run will");
        }
        staged.action = StageAction::Replaced;
    } else {
        fs.rename(&tmp, &dest)
            .map_err(|e| JobError::io(&dest, "rename into place", e))?;
        staged.action = StageAction::Staged;
    }
    fs.sync_dir(&bundles)
        .map_err(|e| JobError::io(&bundles, "fsync", e))?;
    tracing::info!(dir = %dest.display(), action = ?staged.action, files = staged.files, bytes = staged.bytes, "bundle staged");
    Ok(staged)
}

/// Whether the staged folder `dir` holds exactly this bundle.
fn holds(fs: &dyn HostFs, dir: &Path, bundle: &Bundle) -> Result<bool, JobError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if read_existing(fs, &manifest_path, MAX_MANIFEST_BYTES as u64)?.as_deref()
        != Some(bundle.manifest_bytes())
    {
        return Ok(false);
    }
    for (field, entry) in bundle.manifest().files() {
        if !file_matches(
            fs,
            &dir.join(&entry.path),
            &field,
            entry,
            staged_mode(entry),
        )? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Copies the bundle into the new folder `tmp`, verifying each package while copying, and
/// fsyncs every file and folder.
fn fill(fs: &dyn HostFs, bundle: &Bundle, tmp: &Path) -> Result<(), JobError> {
    fs.create_dir(tmp, 0o755)
        .map_err(|e| JobError::io(tmp, "create folder", e))?;
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::from([tmp.to_owned()]);
    for (field, entry) in bundle.manifest().files() {
        let dest = tmp.join(&entry.path);
        // Manifest paths are relative and `..`-free: every parent is inside `tmp`.
        let mut parent = tmp.to_owned();
        let segments: Vec<&str> = entry.path.split('/').collect();
        for segment in &segments[..segments.len().saturating_sub(1)] {
            parent.push(segment);
            if dirs.insert(parent.clone()) {
                fs.create_dir(&parent, 0o755)
                    .map_err(|e| JobError::io(&parent, "create folder", e))?;
            }
        }
        let (mut src, src_path) = bundle.open_package(&field, entry)?;
        let mut sink = fs
            .create_file(&dest, staged_mode(entry))
            .map_err(|e| JobError::io(&dest, "create", e))?;
        // Written on a thread of its own, so the disk works while the package is hashed.
        write_behind(
            &mut *sink,
            |w| copy_verified(&mut src, &src_path, &field, entry, Some((w, &dest))),
            |e| JobError::io(&dest, "write", e),
        )?;
        sink.sync().map_err(|e| JobError::io(&dest, "fsync", e))?;
    }
    let manifest_path = tmp.join(MANIFEST_FILE);
    let mut sink = fs
        .create_file(&manifest_path, 0o644)
        .map_err(|e| JobError::io(&manifest_path, "create", e))?;
    sink.write_all(bundle.manifest_bytes())
        .map_err(|e| JobError::io(&manifest_path, "write", e))?;
    sink.sync()
        .map_err(|e| JobError::io(&manifest_path, "fsync", e))?;
    // Deepest folders first, so each folder's entries are durable before its parent's.
    let mut ordered: Vec<&PathBuf> = dirs.iter().collect();
    ordered.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in ordered {
        fs.sync_dir(dir)
            .map_err(|e| JobError::io(dir, "fsync", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::bundle::testing::write_bundle;
    use crate::fs::RealFs;
    use crate::fs::testing::{FaultyFs, leak};

    struct Setup {
        _dir: tempfile::TempDir,
        bundle_root: PathBuf,
        layout: HostLayout,
    }

    fn setup(version: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let bundle_root = dir.path().join("bundle");
        write_bundle(&bundle_root, version, format!("agent {version}").as_bytes());
        let layout = HostLayout::new(dir.path().join("host"));
        std::fs::create_dir(layout.root()).unwrap();
        Setup {
            _dir: dir,
            bundle_root,
            layout,
        }
    }

    /// Every file under `root`: path, mode, content.
    fn snapshot(root: &Path) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u32, Vec<u8>)>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries {
                let p = e.unwrap().path();
                let m = std::fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                if m.is_dir() {
                    out.push((rel + "/", m.permissions().mode(), Vec::new()));
                    walk(root, &p, out);
                } else {
                    out.push((rel, m.permissions().mode(), std::fs::read(&p).unwrap()));
                }
            }
        }
        walk(root, root, &mut out);
        out.sort();
        out
    }

    #[test]
    fn stages_then_reports_unchanged() {
        let s = setup("2.0.0");
        let bundle = Bundle::open(&s.bundle_root).unwrap();
        let first = stage(&RealFs, &bundle, &s.layout).unwrap();
        assert_eq!(first.action, StageAction::Staged);
        assert_eq!(first.files, 3);
        let dir = s.layout.bundle_dir("2.0.0");
        assert_eq!(
            std::fs::read(dir.join("agent/baton-agent")).unwrap(),
            b"agent 2.0.0"
        );
        assert_eq!(
            std::fs::read(dir.join("manifest.json")).unwrap(),
            bundle.manifest_bytes()
        );
        let mode = std::fs::metadata(dir.join("packages/hello/baton-hello"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);

        let before = snapshot(s.layout.root());
        let fs = leak(FaultyFs::recording());
        let second = stage(&fs, &bundle, &s.layout).unwrap();
        assert_eq!(second.action, StageAction::Unchanged);
        assert_eq!(
            fs.ops(),
            Vec::<String>::new(),
            "a second run writes nothing"
        );
        assert_eq!(snapshot(s.layout.root()), before);
    }

    #[test]
    fn a_damaged_staged_copy_is_replaced_whole() {
        let s = setup("2.0.0");
        let bundle = Bundle::open(&s.bundle_root).unwrap();
        stage(&RealFs, &bundle, &s.layout).unwrap();
        let dir = s.layout.bundle_dir("2.0.0");
        std::fs::write(dir.join("packages/hello/baton-hello"), b"damaged").unwrap();
        let again = stage(&RealFs, &bundle, &s.layout).unwrap();
        assert_eq!(again.action, StageAction::Replaced);
        assert_eq!(
            std::fs::read(dir.join("packages/hello/baton-hello")).unwrap(),
            b"#!/bin/sh\necho hello\n"
        );
        // Nothing but the version folder is left in bundles/.
        let names: Vec<_> = std::fs::read_dir(s.layout.bundles_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["2.0.0"]);
    }

    #[test]
    fn a_tampered_bundle_leaves_the_host_unchanged() {
        let s = setup("2.0.0");
        std::fs::write(
            s.bundle_root.join("packages/kernel/vmlinuz-6.1.0-baton2"),
            b"kernel IMAGE\n",
        )
        .unwrap();
        let bundle = Bundle::open(&s.bundle_root).unwrap();
        ensure_dir(&RealFs, &s.layout.bundles_dir()).unwrap();
        let before = snapshot(s.layout.root());
        let err = stage(&RealFs, &bundle, &s.layout).unwrap_err();
        assert!(matches!(err, JobError::DigestMismatch { .. }), "{err}");
        assert_eq!(snapshot(s.layout.root()), before);
    }

    #[test]
    fn a_tampered_bundle_of_an_already_staged_version_is_refused() {
        let s = setup("2.0.0");
        stage(&RealFs, &Bundle::open(&s.bundle_root).unwrap(), &s.layout).unwrap();
        std::fs::write(s.bundle_root.join("agent/baton-agent"), b"agent 6.6.6").unwrap();
        let bundle = Bundle::open(&s.bundle_root).unwrap();
        let err = stage(&RealFs, &bundle, &s.layout).unwrap_err();
        assert!(err.to_string().contains("agent.file.sha256"), "{err}");
    }

    /// A crash at every mutating step leaves either nothing or the complete bundle visible,
    /// and the next run completes it and cleans up.
    #[test]
    fn a_crash_at_any_step_leaves_old_state_or_the_whole_bundle() {
        // Count the steps of a full run first.
        let s = setup("2.0.0");
        let bundle = Bundle::open(&s.bundle_root).unwrap();
        let fs = leak(FaultyFs::recording());
        stage(&fs, &bundle, &s.layout).unwrap();
        let steps = fs.count();
        assert!(steps > 10, "{:?}", fs.ops());

        for n in 0..steps {
            let s = setup("2.0.0");
            let bundle = Bundle::open(&s.bundle_root).unwrap();
            let fs = leak(FaultyFs::failing_from(n));
            let result = stage(&fs, &bundle, &s.layout);
            let dir = s.layout.bundle_dir("2.0.0");
            if dir.exists() {
                // Visible means complete.
                assert!(holds(&RealFs, &dir, &bundle).unwrap(), "crash at step {n}");
            } else {
                assert!(result.is_err(), "step {n}");
            }
            let again = stage(&RealFs, &bundle, &s.layout).unwrap();
            assert!(holds(&RealFs, &dir, &bundle).unwrap());
            let names: Vec<_> = std::fs::read_dir(s.layout.bundles_dir())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                names,
                ["2.0.0"],
                "after recovering from step {n} ({:?})",
                again.action
            );
        }
    }

    /// The same when a damaged copy is being replaced: the old copy or the new one, whole.
    #[test]
    fn a_crash_while_replacing_leaves_old_or_new() {
        let s = setup("2.0.0");
        let bundle = Bundle::open(&s.bundle_root).unwrap();
        let fs = leak(FaultyFs::recording());
        stage(&fs, &bundle, &s.layout).unwrap();
        let steps = fs.count();
        for n in 0..steps + 2 {
            let s = setup("2.0.0");
            let bundle = Bundle::open(&s.bundle_root).unwrap();
            stage(&RealFs, &bundle, &s.layout).unwrap();
            let dir = s.layout.bundle_dir("2.0.0");
            std::fs::write(dir.join("packages/hello/baton-hello"), b"old").unwrap();
            let old = snapshot(&dir);
            let fs = leak(FaultyFs::failing_from(n));
            let _ = stage(&fs, &bundle, &s.layout);
            assert!(
                snapshot(&dir) == old || holds(&RealFs, &dir, &bundle).unwrap(),
                "crash at step {n} left a mix"
            );
        }
    }
}
