//! The disks `images/vmhost/build.sh` builds (one per [`Firmware`]) and the
//! kernel packages kept beside them, in the recipe's cache folder.

use std::fmt;
use std::path::{Path, PathBuf};

use tokio::sync::OnceCell;

use super::{NEXT_KERNEL_RELEASE, REBUILD_HINT, VmError, io_err};
use crate::recipe;

/// The firmware a VM boots with, and so its disk and boot loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Firmware {
    /// OVMF; `disk-uefi.raw`: GPT, an ESP with systemd-boot and Boot Loader
    /// Specification entries (boot counting for kernels installed later).
    #[default]
    Uefi,
    /// SeaBIOS, QEMU's default; `disk-bios.raw`: MBR, GRUB (`grub-pc`) with
    /// `GRUB_DEFAULT=saved` (`grub-reboot`, `grub-set-default`).
    Bios,
}

impl Firmware {
    /// The disk's file name in the image folder.
    pub fn disk_file(self) -> &'static str {
        match self {
            Firmware::Uefi => "disk-uefi.raw",
            Firmware::Bios => "disk-bios.raw",
        }
    }

    /// What `baton-vm-ready.service` reports as `boot-loader: <this>`.
    pub fn boot_loader_report(self) -> &'static str {
        match self {
            Firmware::Uefi => "firmware=uefi loader=systemd-boot",
            Firmware::Bios => "firmware=bios loader=grub",
        }
    }
}

impl fmt::Display for Firmware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Firmware::Uefi => "uefi",
            Firmware::Bios => "bios",
        })
    }
}

/// The built disks and the kernel packages kept beside them.
#[derive(Debug, Clone)]
pub struct VmImage {
    dir: PathBuf,
}

impl VmImage {
    /// The cache folder of this recipe (`/var/cache/baton-vmhost/<hash>`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The raw disk for `firmware`; never booted itself, every VM boots a copy.
    pub fn disk(&self, firmware: Firmware) -> PathBuf {
        self.dir.join(firmware.disk_file())
    }

    /// The kernel releases the recipe fetched, the installed one first.
    pub fn kernel_releases(&self) -> Result<Vec<String>, VmError> {
        let path = self.dir.join("kernel-releases");
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// The Debian package of kernel `release` (`linux-image-<release>_*.deb`).
    pub fn kernel_package(&self, release: &str) -> Result<PathBuf, VmError> {
        find_package(&self.dir.join("kernels"), release)
    }

    /// A package of [`NEXT_KERNEL_RELEASE`] that cannot boot: Debian's, same
    /// name and version, with `virtio_blk` removed, so its initramfs never
    /// finds the root disk and reboots the VM (`panic=10`) about 40 s in.
    pub fn broken_kernel_package(&self) -> Result<PathBuf, VmError> {
        find_package(
            &self.dir.join("kernels").join("broken"),
            NEXT_KERNEL_RELEASE,
        )
    }
}

fn find_package(dir: &Path, release: &str) -> Result<PathBuf, VmError> {
    let prefix = format!("linux-image-{release}_");
    let entries = std::fs::read_dir(dir).map_err(io_err(dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(entry.path());
        }
    }
    Err(VmError::Missing {
        what: format!("{}/{prefix}*.deb", dir.display()),
        hint: REBUILD_HINT,
    })
}

async fn call_script(action: &'static str) -> Result<PathBuf, VmError> {
    let dir = recipe::run("vmhost", action, "the disk's folder", |line| {
        line.starts_with('/')
    })
    .await?;
    Ok(PathBuf::from(dir))
}

/// Returns the disk for the current recipe, building it first if it is not
/// cached (a cold build takes a few minutes; later calls return at once).
pub async fn ensure_image() -> Result<VmImage, VmError> {
    static IMAGE: OnceCell<VmImage> = OnceCell::const_new();
    IMAGE
        .get_or_try_init(|| async {
            let dir = call_script("path").await?;
            if !dir.join(Firmware::Uefi.disk_file()).is_file() {
                eprintln!(
                    "baton-tests: building the VM host disk in {} (a few minutes, once)",
                    dir.display()
                );
            }
            Ok(VmImage {
                dir: call_script("ensure").await?,
            })
        })
        .await
        .cloned()
}
