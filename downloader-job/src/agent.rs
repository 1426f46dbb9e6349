//! The bundle's agent on the host: installed under a versioned name,
//! `/var/lib/baton/agent/<version>/baton-agent`, from the staged (verified) bundle, and made
//! active by pointing the `current` link at its folder (a temp link renamed over it, so the
//! switch is atomic). `previous` points at the version that was active before; older
//! versions' folders are kept.

use std::path::{Path, PathBuf};

use baton_protocol::manifest::Manifest;

use crate::error::JobError;
use crate::fs::{
    HostFs, ensure_dir, parent_of, remove_temp_entries, replace_symlink, write_atomic_with,
};
use crate::layout::{CURRENT_LINK, HostLayout, PREVIOUS_LINK};
use crate::verify::{check_size, copy_verified, file_matches};

/// Mode of an installed agent binary.
pub const AGENT_MODE: u32 = 0o755;

/// What installing the agent did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInstall {
    /// The bundle's agent version.
    pub version: String,
    /// The versioned binary was written (it was missing or different).
    pub binary_written: bool,
    /// The version `current` pointed at before, if any.
    pub before: Option<String>,
}

impl AgentInstall {
    /// `current` was moved to this version.
    pub fn switched(&self) -> bool {
        self.before.as_deref() != Some(self.version.as_str())
    }

    /// Whether anything the running agent depends on changed.
    pub fn changed(&self) -> bool {
        self.binary_written || self.switched()
    }
}

/// Installs the agent of `manifest` from the staged bundle folder `staged` and makes it the
/// current one.
pub fn install(
    fs: &dyn HostFs,
    layout: &HostLayout,
    manifest: &Manifest,
    staged: &Path,
) -> Result<AgentInstall, JobError> {
    let version = manifest.agent.version.clone();
    let entry = &manifest.agent.file;
    let field = "agent.file";
    let agent_dir = layout.agent_dir();
    ensure_dir(fs, &agent_dir)?;
    remove_temp_entries(fs, &agent_dir)?;

    let binary = layout.agent_binary(&version);
    let binary_written = if file_matches(fs, &binary, field, entry, AGENT_MODE)? {
        false
    } else {
        ensure_dir(fs, parent_of(&binary))?;
        let src_path = staged.join(&entry.path);
        let mut src = fs
            .open_read(&src_path)
            .map_err(|e| JobError::io(&src_path, "open", e))?;
        let len = src
            .metadata()
            .map_err(|e| JobError::io(&src_path, "stat", e))?
            .len();
        check_size(&src_path, field, entry, len)?;
        write_atomic_with(fs, &binary, AGENT_MODE, |sink, tmp| {
            copy_verified(&mut src, &src_path, field, entry, Some((sink, tmp))).map(|_| ())
        })?;
        tracing::info!(binary = %binary.display(), "agent binary installed");
        true
    };

    let before = current_version(fs, layout)?;
    let install = AgentInstall {
        version,
        binary_written,
        before,
    };
    if install.switched() {
        // `previous` first: a crash in between leaves previous == current, never a
        // `previous` that forgot the version that was running.
        if let Some(old) = &install.before {
            replace_symlink(fs, &agent_dir.join(PREVIOUS_LINK), Path::new(old))?;
        }
        replace_symlink(
            fs,
            &agent_dir.join(CURRENT_LINK),
            Path::new(&install.version),
        )?;
        tracing::info!(
            from = install.before.as_deref().unwrap_or("none"),
            to = %install.version,
            "current agent switched"
        );
    }
    Ok(install)
}

/// The version `current` points at; `None` when there is no `current` yet.
pub fn current_version(fs: &dyn HostFs, layout: &HostLayout) -> Result<Option<String>, JobError> {
    let link = layout.agent_dir().join(CURRENT_LINK);
    match fs
        .symlink_metadata(&link)
        .map_err(|e| JobError::io(&link, "stat", e))?
    {
        None => return Ok(None),
        Some(m) if m.file_type().is_symlink() => {}
        Some(_) => {
            return Err(JobError::refused(
                &link,
                "exists and is not a symbolic link; move it away",
            ));
        }
    }
    let target: PathBuf = fs
        .read_link(&link)
        .map_err(|e| JobError::io(&link, "read link", e))?
        .unwrap_or_default();
    Ok(Some(target.to_string_lossy().into_owned()))
}

/// Points `current` back at `to` (after the new agent failed to start); `previous` then
/// names the version that failed.
pub fn switch_back(
    fs: &dyn HostFs,
    layout: &HostLayout,
    failed: &str,
    to: &str,
) -> Result<(), JobError> {
    let agent_dir = layout.agent_dir();
    replace_symlink(fs, &agent_dir.join(PREVIOUS_LINK), Path::new(failed))?;
    replace_symlink(fs, &agent_dir.join(CURRENT_LINK), Path::new(to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Bundle;
    use crate::bundle::testing::write_bundle;
    use crate::fs::RealFs;
    use crate::fs::testing::{FaultyFs, leak};
    use crate::stage::stage;

    fn staged(host: &HostLayout, dir: &Path, version: &str) -> Manifest {
        let root = dir.join(format!("bundle-{version}"));
        write_bundle(&root, version, format!("agent {version}").as_bytes());
        let bundle = Bundle::open(&root).unwrap();
        stage(&RealFs, &bundle, host).unwrap();
        bundle.manifest().clone()
    }

    #[test]
    fn installs_switches_and_keeps_the_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostLayout::new(dir.path().join("host"));
        let v1 = staged(&host, dir.path(), "1.0.0");
        let first = install(&RealFs, &host, &v1, &host.bundle_dir("1.0.0")).unwrap();
        assert_eq!(first.before, None);
        assert!(first.binary_written && first.switched());
        let agent_dir = host.agent_dir();
        assert_eq!(
            std::fs::read_link(agent_dir.join("current")).unwrap(),
            Path::new("1.0.0")
        );
        assert_eq!(
            std::fs::read(agent_dir.join("current/baton-agent")).unwrap(),
            b"agent 1.0.0"
        );

        let again = install(&RealFs, &host, &v1, &host.bundle_dir("1.0.0")).unwrap();
        assert!(!again.changed(), "{again:?}");

        let v2 = staged(&host, dir.path(), "2.0.0");
        let up = install(&RealFs, &host, &v2, &host.bundle_dir("2.0.0")).unwrap();
        assert_eq!(up.before.as_deref(), Some("1.0.0"));
        assert_eq!(
            std::fs::read(agent_dir.join("current/baton-agent")).unwrap(),
            b"agent 2.0.0"
        );
        assert_eq!(
            std::fs::read_link(agent_dir.join("previous")).unwrap(),
            Path::new("1.0.0")
        );
        assert_eq!(
            std::fs::read(agent_dir.join("1.0.0/baton-agent")).unwrap(),
            b"agent 1.0.0"
        );
    }

    #[test]
    fn a_damaged_binary_is_rewritten_without_switching() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostLayout::new(dir.path().join("host"));
        let v1 = staged(&host, dir.path(), "1.0.0");
        install(&RealFs, &host, &v1, &host.bundle_dir("1.0.0")).unwrap();
        std::fs::write(host.agent_binary("1.0.0"), b"agent 1.0.X").unwrap();
        let again = install(&RealFs, &host, &v1, &host.bundle_dir("1.0.0")).unwrap();
        assert!(again.binary_written && !again.switched());
        assert_eq!(
            std::fs::read(host.agent_binary("1.0.0")).unwrap(),
            b"agent 1.0.0"
        );
    }

    #[test]
    fn a_crash_at_any_step_leaves_a_runnable_current() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostLayout::new(dir.path().join("host"));
        let v1 = staged(&host, dir.path(), "1.0.0");
        let v2 = staged(&host, dir.path(), "2.0.0");
        install(&RealFs, &host, &v1, &host.bundle_dir("1.0.0")).unwrap();
        let fs = leak(FaultyFs::recording());
        install(&fs, &host, &v2, &host.bundle_dir("2.0.0")).unwrap();
        let steps = fs.count();
        for n in 0..steps {
            let dir = tempfile::tempdir().unwrap();
            let host = HostLayout::new(dir.path().join("host"));
            let v1 = staged(&host, dir.path(), "1.0.0");
            let v2 = staged(&host, dir.path(), "2.0.0");
            install(&RealFs, &host, &v1, &host.bundle_dir("1.0.0")).unwrap();
            let fs = leak(FaultyFs::failing_from(n));
            let _ = install(&fs, &host, &v2, &host.bundle_dir("2.0.0"));
            let current = std::fs::read(host.agent_dir().join("current/baton-agent")).unwrap();
            assert!(
                current == b"agent 1.0.0" || current == b"agent 2.0.0",
                "crash at step {n}: {current:?}"
            );
            let done = install(&RealFs, &host, &v2, &host.bundle_dir("2.0.0")).unwrap();
            assert_eq!(
                std::fs::read(host.agent_dir().join("current/baton-agent")).unwrap(),
                b"agent 2.0.0"
            );
            assert_eq!(
                std::fs::read_link(host.agent_dir().join("previous")).unwrap(),
                Path::new("1.0.0"),
                "step {n}: {done:?}"
            );
        }
    }

    #[test]
    fn a_current_that_is_not_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostLayout::new(dir.path().join("host"));
        let v1 = staged(&host, dir.path(), "1.0.0");
        std::fs::create_dir_all(host.agent_dir().join("current")).unwrap();
        let err = install(&RealFs, &host, &v1, &host.bundle_dir("1.0.0")).unwrap_err();
        assert!(err.to_string().contains("agent/current: refused"), "{err}");
    }
}
