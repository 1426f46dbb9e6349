//! The simulated-host image (recipe in `images/simhost/`): its tag, built
//! on demand, and the files its simulated bootloader reads and writes.
//!
//! The recipe's `build.sh` computes the tag and builds ([`crate::recipe`]);
//! parallel test binaries build at most once. This module calls it and
//! remembers the answer for the rest of the process.

use tokio::sync::OnceCell;

use crate::docker::{self, DockerError};
use crate::recipe::{self, RecipeError};

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
    #[error(transparent)]
    Recipe(#[from] RecipeError),
}

/// The recipe's folder name under `images/`.
const RECIPE: &str = "simhost";

async fn call_script(action: &'static str) -> Result<String, ImageError> {
    Ok(recipe::run(RECIPE, action, "an image tag", |line| {
        line.starts_with("baton-simhost:")
    })
    .await?)
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
