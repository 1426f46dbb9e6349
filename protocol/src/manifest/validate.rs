//! The rules a whole manifest must follow: supported schema, unique names, orders, bundle
//! paths and destinations, the fields each component kind needs (and only those), health
//! checks that fit the kind, the kernel applied last.

use std::collections::BTreeSet;

use super::checks::{
    check_absolute_path, check_image_ref, check_relative_path, check_sha256, check_version,
};
use super::{
    Component, ComponentKind, FileEntry, HealthCheck, MANIFEST_SCHEMA_VERSION, Manifest,
    ManifestError,
};
use crate::names::check_name;

impl Component {
    /// The kind-specific fields that are set, by name, so validation can refuse the ones that
    /// do not belong to the component's kind.
    fn kind_fields(&self) -> [(&'static str, bool); 6] {
        [
            ("unit", self.unit.is_some()),
            ("image", self.image.is_some()),
            ("container", self.container.is_some()),
            ("args", !self.args.is_empty()),
            ("release", self.release.is_some()),
            ("quorum", self.quorum.is_some()),
        ]
    }

    fn allowed_fields(&self) -> &'static [&'static str] {
        match self.kind {
            ComponentKind::File => &[],
            ComponentKind::Service => &["unit", "quorum"],
            ComponentKind::Container => &["image", "container", "args"],
            ComponentKind::Kernel => &["release"],
        }
    }
}

impl Manifest {
    /// Checks every rule; the first violation is returned, naming its field.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.schema_version == 0 || self.schema_version > MANIFEST_SCHEMA_VERSION {
            return Err(ManifestError::new(
                "schema_version",
                format!(
                    "{} is not supported (this build reads 1..={MANIFEST_SCHEMA_VERSION})",
                    self.schema_version
                ),
            ));
        }
        check_version("version", &self.version)?;
        check_version("agent.version", &self.agent.version)?;
        if let Some(image) = &self.orchestrator_image {
            check_image_ref("orchestrator_image", image)?;
            // The orchestrator runs with the fleet's credentials: it is started from exactly
            // the image the bundle was built with, never from whatever a tag names later.
            if !image.contains("@sha256:") {
                return Err(ManifestError::new(
                    "orchestrator_image",
                    format!(
                        "{image:?} must be pinned by digest (name@sha256:<64 hex>); `batonctl \
                         bundle build` prints the digest an image was pushed with"
                    ),
                ));
            }
        }
        for (i, key) in self.trusted_keys.iter().enumerate() {
            crate::signing::PublicKey::from_document(&format!("trusted_keys[{i}]"), key).map_err(
                |e| match e {
                    crate::signing::SignatureError::Malformed { field, reason } => {
                        ManifestError::new(field, reason)
                    }
                    other => ManifestError::new(format!("trusted_keys[{i}]"), other.to_string()),
                },
            )?;
        }
        if self.components.is_empty() {
            return Err(ManifestError::new(
                "components",
                "must list at least one component",
            ));
        }

        let mut bundle_paths = BTreeSet::new();
        let mut dests = BTreeSet::new();
        for (field, file) in self.files() {
            check_file(&field, file)?;
            if !bundle_paths.insert(file.path.as_str()) {
                return Err(ManifestError::new(
                    format!("{field}.path"),
                    format!("{:?} is listed twice", file.path),
                ));
            }
            if let Some(dest) = &file.dest
                && !dests.insert(dest.as_str())
            {
                return Err(ManifestError::new(
                    format!("{field}.dest"),
                    format!("{dest:?} is installed by two files"),
                ));
            }
        }

        let mut names = BTreeSet::new();
        let mut orders = BTreeSet::new();
        let max_order = self.components.iter().map(|c| c.order).max().unwrap_or(0);
        for (i, c) in self.components.iter().enumerate() {
            let at = |f: &str| format!("components[{i}].{f}");
            check_name("component name", &c.name)
                .map_err(|e| ManifestError::new(at("name"), e.reason))?;
            if !names.insert(c.name.as_str()) {
                return Err(ManifestError::new(
                    at("name"),
                    format!("duplicate component name {:?}", c.name),
                ));
            }
            if !orders.insert(c.order) {
                return Err(ManifestError::new(
                    at("order"),
                    format!("order {} is used by two components", c.order),
                ));
            }
            check_version(&at("version"), &c.version)?;
            if c.files.is_empty() {
                return Err(ManifestError::new(
                    at("files"),
                    "must list at least one file",
                ));
            }
            for (field, set) in c.kind_fields() {
                if set && !c.allowed_fields().contains(&field) {
                    return Err(ManifestError::new(
                        at(field),
                        format!("does not apply to a {} component", c.kind.name()),
                    ));
                }
            }
            let required = |value: &Option<String>, field: &str| {
                value.clone().ok_or_else(|| {
                    ManifestError::new(
                        at(field),
                        format!("is required for a {} component", c.kind.name()),
                    )
                })
            };
            match c.kind {
                ComponentKind::File => {
                    require_dests(&at("files"), &c.files)?;
                }
                ComponentKind::Service => {
                    let unit = required(&c.unit, "unit")?;
                    if !unit.ends_with(".service") || check_name("unit", &unit).is_err() {
                        return Err(ManifestError::new(
                            at("unit"),
                            format!("{unit:?} is not a unit name like `name.service`"),
                        ));
                    }
                    require_dests(&at("files"), &c.files)?;
                    let unit_dest = format!("/etc/systemd/system/{unit}");
                    if !c
                        .files
                        .iter()
                        .any(|f| f.dest.as_deref() == Some(&unit_dest))
                    {
                        return Err(ManifestError::new(
                            at("files"),
                            format!("a service must ship its unit file with dest {unit_dest:?}"),
                        ));
                    }
                    if let Some(quorum) = &c.quorum {
                        let dests = c.files.iter().enumerate().filter_map(|(j, f)| {
                            Some((at(&format!("files[{j}].dest")), f.dest.as_deref()?))
                        });
                        quorum.check(&at("quorum"), dests)?;
                    }
                }
                ComponentKind::Container => {
                    check_image_ref(&at("image"), &required(&c.image, "image")?)?;
                    check_name("container name", &required(&c.container, "container")?)
                        .map_err(|e| ManifestError::new(at("container"), e.reason))?;
                    if c.files.len() != 1 {
                        return Err(ManifestError::new(
                            at("files"),
                            "a container component ships exactly one image archive",
                        ));
                    }
                }
                ComponentKind::Kernel => {
                    check_name("kernel release", &required(&c.release, "release")?)
                        .map_err(|e| ManifestError::new(at("release"), e.reason))?;
                    // A file without `dest` is the kernel as its distribution ships it,
                    // installed by the package manager (what a real boot loader needs).
                    if let Some(j) = c
                        .files
                        .iter()
                        .position(|f| f.dest.is_none() && !f.path.ends_with(".deb"))
                    {
                        return Err(ManifestError::new(
                            at(&format!("files[{j}].path")),
                            "a kernel file without dest must be a Debian package (.deb)",
                        ));
                    }
                    if !c.reboot {
                        return Err(ManifestError::new(
                            at("reboot"),
                            "a kernel needs a reboot: set true",
                        ));
                    }
                    let last = self
                        .components
                        .iter()
                        .filter(|o| o.order == max_order)
                        .count()
                        == 1;
                    if c.order != max_order || !last {
                        return Err(ManifestError::new(
                            at("order"),
                            "the kernel must be applied last (highest order)",
                        ));
                    }
                }
            }
            for (j, check) in c.health.iter().enumerate() {
                check_health(&at(&format!("health[{j}]")), c.kind, check)?;
            }
        }
        Ok(())
    }
}

fn require_dests(field: &str, files: &[FileEntry]) -> Result<(), ManifestError> {
    match files.iter().position(|f| f.dest.is_none()) {
        Some(j) => Err(ManifestError::new(
            format!("{field}[{j}].dest"),
            "is required for this kind",
        )),
        None => Ok(()),
    }
}

fn check_health(
    field: &str,
    kind: ComponentKind,
    check: &HealthCheck,
) -> Result<(), ManifestError> {
    match check {
        HealthCheck::UnitActive if kind != ComponentKind::Service => Err(ManifestError::new(
            field,
            "unit-active only applies to service components",
        )),
        HealthCheck::ContainerRunning if kind != ComponentKind::Container => {
            Err(ManifestError::new(
                field,
                "container-running only applies to container components",
            ))
        }
        HealthCheck::Command { argv, timeout_secs } => {
            if argv.is_empty() || argv[0].is_empty() {
                return Err(ManifestError::new(
                    format!("{field}.argv"),
                    "must name a program",
                ));
            }
            check_timeout(field, *timeout_secs)
        }
        HealthCheck::Http { url, timeout_secs } => {
            if !url.starts_with("http://") || url.len() <= "http://".len() {
                return Err(ManifestError::new(
                    format!("{field}.url"),
                    format!("{url:?} must be an http:// URL"),
                ));
            }
            check_timeout(field, *timeout_secs)
        }
        _ => Ok(()),
    }
}

fn check_timeout(field: &str, secs: u32) -> Result<(), ManifestError> {
    if (1..=3600).contains(&secs) {
        Ok(())
    } else {
        Err(ManifestError::new(
            format!("{field}.timeout_secs"),
            format!("{secs} must be between 1 and 3600"),
        ))
    }
}

fn check_file(field: &str, file: &FileEntry) -> Result<(), ManifestError> {
    check_relative_path(&format!("{field}.path"), &file.path)?;
    if let Some(dest) = &file.dest {
        check_absolute_path(&format!("{field}.dest"), dest)?;
    }
    check_sha256(&format!("{field}.sha256"), &file.sha256)?;
    let mode_ok = (3..=4).contains(&file.mode.len())
        && u32::from_str_radix(&file.mode, 8).is_ok_and(|m| m <= 0o7777);
    if !mode_ok {
        return Err(ManifestError::new(
            format!("{field}.mode"),
            format!("{:?} is not an octal mode like \"0755\"", file.mode),
        ));
    }
    Ok(())
}
