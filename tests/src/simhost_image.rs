//! The simulated-host image (recipe in `images/simhost/`): its tag, built
//! on demand, and the files its simulated bootloader reads and writes.
//!
//! The recipe's `build.sh` is the only place computing the tag (a content
//! hash of the recipe folder) and deciding whether to build; it serialises
//! concurrent builds with a lock file, so parallel test binaries build at
//! most once. This module only calls it (`build.sh ensure`) and remembers the
//! answer for the rest of the process.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::sync::OnceCell;

use crate::docker::{self, DockerError};

/// Release of the kernel the image ships and boots by default. Mirrors
/// `base_kernel` in `images/simhost/build.sh` (the fleet test checks that a
/// fresh host boots it).
pub const BASE_KERNEL_RELEASE: &str = "6.1.0-baton-sim";

/// A fresh random UUID written by the simulated bootloader on every boot.
/// The kernel's boot_id does not change when a container restarts, so the
/// agent of a simulated host is configured to read this file.
pub const BOOT_ID_PATH: &str = "/run/baton/boot-id";
/// The kernel release that booted.
pub const BOOTED_KERNEL_PATH: &str = "/run/baton/booted-kernel";
/// Which entry booted: `oneshot` or `default`.
pub const BOOTED_ENTRY_PATH: &str = "/run/baton/booted-entry";
/// One line: the release of the default boot entry.
pub const DEFAULT_ENTRY_PATH: &str = "/boot/baton/default";
/// One line: a release to boot once; deleted at boot before it is tried.
pub const ONESHOT_ENTRY_PATH: &str = "/boot/baton/oneshot";
/// One line appended per boot by the bootloader.
pub const BOOT_LOG_PATH: &str = "/boot/baton/boot.log";
/// A kernel file containing this line "panics" at boot and is never booted.
pub const KERNEL_PANIC_MARK: &str = "BATON_SIMULATED_PANIC";

/// Where the kernel "package" of `release` lives on a simulated host.
pub fn kernel_path(release: &str) -> String {
    format!("/boot/vmlinuz-{release}")
}

/// Failure to find or build the image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("could not run {script}: {source}")]
    Spawn {
        script: PathBuf,
        source: std::io::Error,
    },
    #[error("{script} {action} failed ({status}); last output:\n{log_tail}")]
    Failed {
        script: PathBuf,
        action: &'static str,
        status: std::process::ExitStatus,
        log_tail: String,
    },
    #[error("{script} {action} printed no image tag (stdout: {stdout:?})")]
    NoTag {
        script: PathBuf,
        action: &'static str,
        stdout: String,
    },
}

/// The recipe folder, `images/simhost/` of this workspace.
pub fn recipe_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new(env!("CARGO_MANIFEST_DIR")))
        .join("images")
        .join("simhost")
}

fn build_script() -> PathBuf {
    recipe_dir().join("build.sh")
}

async fn call_script(action: &'static str) -> Result<String, ImageError> {
    let script = build_script();
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(action)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| ImageError::Spawn {
            script: script.clone(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let log_tail = lines[lines.len().saturating_sub(40)..].join("\n");
        return Err(ImageError::Failed {
            script,
            action,
            status: out.status,
            log_tail,
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    match stdout.lines().last().map(str::trim) {
        Some(tag) if tag.starts_with("baton-simhost:") => Ok(tag.to_owned()),
        _ => Err(ImageError::NoTag {
            script,
            action,
            stdout,
        }),
    }
}

/// The tag of the image for the current recipe (built or not).
pub async fn image_tag() -> Result<String, ImageError> {
    call_script("tag").await
}

/// Returns the tag of the simulated-host image, building it first if the
/// local Docker Engine does not have it (a cold build takes a minute or two;
/// later calls return at once).
pub async fn ensure_image() -> Result<String, ImageError> {
    static TAG: OnceCell<String> = OnceCell::const_new();
    TAG.get_or_try_init(|| async {
        docker::ensure_available().await?;
        let tag = image_tag().await?;
        if docker::image_exists(&tag).await? {
            return Ok(tag);
        }
        eprintln!("baton-tests: building simulated-host image {tag} (a minute or two, once)");
        call_script("ensure").await
    })
    .await
    .cloned()
}
