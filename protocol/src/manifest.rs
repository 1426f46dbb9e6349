//! The bundle manifest (`manifest.json` at the root of a bundle image) and its validation.
//!
//! A manifest names every file the bundle ships with its size and sha256, so the downloader
//! can verify while copying; validation refuses anything that could escape the bundle or the
//! host's managed paths, and every refusal names the field at fault
//! (e.g. `components[2].files[0].path`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::names::check_name;

/// Manifest schema this build writes and the newest it reads.
pub const MANIFEST_SCHEMA_VERSION: u32 = 1;

/// Largest manifest accepted, so a hostile image cannot make a reader allocate without bound.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// A manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest field {field}: {reason}")]
pub struct ManifestError {
    /// The offending field, as a path (`components[1].files[0].sha256`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ManifestError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A bundle's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest schema version.
    pub schema_version: u32,
    /// The bundle version, e.g. `2.0.0`.
    pub version: String,
    /// Whether hosts on this version interoperate with hosts on the previous one; `false`
    /// means only `all-at-once` may install it.
    pub backward_compatible: bool,
    /// The bundle's `baton-agent`.
    pub agent: AgentPackage,
    /// Orchestrator image carried by the bundle, if any (for self-update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orchestrator_image: Option<String>,
    /// The components, applied in ascending `order`.
    pub components: Vec<Component>,
}

/// The agent binary shipped in the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPackage {
    /// The agent's version, as it reports it in `alive`.
    pub version: String,
    /// The binary.
    pub file: FileEntry,
}

/// One file of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path inside the bundle, relative (e.g. `packages/hello/baton-hello`).
    pub path: String,
    /// Where it is installed on the host, absolute (e.g. `/usr/local/bin/baton-hello`).
    /// Not used for the agent or for a container image archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex sha256 of the content.
    pub sha256: String,
    /// Unix permission bits as an octal string, e.g. `"0755"`.
    #[serde(default = "default_mode")]
    pub mode: String,
}

fn default_mode() -> String {
    "0644".to_owned()
}

impl FileEntry {
    /// The permission bits (validated to parse).
    pub fn mode_bits(&self) -> u32 {
        u32::from_str_radix(&self.mode, 8).unwrap_or(0o644)
    }
}

/// What a component is, and so how the agent applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentKind {
    /// Files installed atomically (CLI utilities).
    File,
    /// A host daemon: binary plus systemd unit (`unit`; the unit file is one of the files,
    /// installed under `/etc/systemd/system`).
    Service,
    /// A platform service run as a container (`image`, `container`) from an image archive
    /// shipped in the bundle.
    Container,
    /// A kernel (`release`), installed beside the running one and booted once before it
    /// becomes the default.
    Kernel,
}

impl ComponentKind {
    /// The kind's name as written in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            ComponentKind::File => "file",
            ComponentKind::Service => "service",
            ComponentKind::Container => "container",
            ComponentKind::Kernel => "kernel",
        }
    }
}

/// A health check run after a component is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "check", rename_all = "kebab-case", deny_unknown_fields)]
pub enum HealthCheck {
    /// The service's unit is `active`.
    UnitActive,
    /// The container is running (and healthy, if its image defines a health check).
    ContainerRunning,
    /// A command on the host exits 0 within the timeout.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Seconds before it counts as failed.
        #[serde(default = "default_timeout")]
        timeout_secs: u32,
    },
    /// An HTTP GET answers 2xx within the timeout.
    Http {
        /// The URL (http only).
        url: String,
        /// Seconds before it counts as failed.
        #[serde(default = "default_timeout")]
        timeout_secs: u32,
    },
}

fn default_timeout() -> u32 {
    10
}

/// One component of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Unique name, e.g. `baton-echo`.
    pub name: String,
    /// The component's version.
    pub version: String,
    /// How it is applied.
    pub kind: ComponentKind,
    /// Application order, ascending; kernels must come last.
    pub order: u32,
    /// Whether applying it needs a reboot (always true for kernels).
    #[serde(default)]
    pub reboot: bool,
    /// The files.
    pub files: Vec<FileEntry>,
    /// Checks after applying.
    #[serde(default)]
    pub health: Vec<HealthCheck>,
    /// `service`: the unit name, e.g. `baton-echo.service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// `container`: the image reference the archive loads as, e.g. `baton/kv:2.0.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `container`: the service container's name on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// `container`: extra arguments for the container's command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// `kernel`: the kernel release, e.g. `6.1.0-baton2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

impl Component {
    /// The kind-specific fields that are set, by name, so validation can refuse the ones that
    /// do not belong to the component's kind.
    fn kind_fields(&self) -> [(&'static str, bool); 5] {
        [
            ("unit", self.unit.is_some()),
            ("image", self.image.is_some()),
            ("container", self.container.is_some()),
            ("args", !self.args.is_empty()),
            ("release", self.release.is_some()),
        ]
    }

    fn allowed_fields(&self) -> &'static [&'static str] {
        match self.kind {
            ComponentKind::File => &[],
            ComponentKind::Service => &["unit"],
            ComponentKind::Container => &["image", "container", "args"],
            ComponentKind::Kernel => &["release"],
        }
    }
}

impl Manifest {
    /// Parses and validates `manifest.json`; errors name the field at fault.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::new(
                "(manifest)",
                format!("larger than {MAX_MANIFEST_BYTES} bytes"),
            ));
        }
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let manifest: Manifest = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            ManifestError::new(
                if field == "." {
                    "(manifest)".to_owned()
                } else {
                    field
                },
                e.into_inner().to_string(),
            )
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Serialises the manifest (pretty, as stored in the bundle).
    #[allow(clippy::expect_used)]
    pub fn to_json(&self) -> Vec<u8> {
        // Cannot fail: plain structs with string map keys.
        serde_json::to_vec_pretty(self).expect("manifests always serialise")
    }

    /// Components in the order the agent applies them.
    pub fn apply_order(&self) -> Vec<&Component> {
        let mut sorted: Vec<&Component> = self.components.iter().collect();
        sorted.sort_by_key(|c| c.order);
        sorted
    }

    /// Every file the bundle ships: the agent's, then each component's, with its field path.
    pub fn files(&self) -> Vec<(String, &FileEntry)> {
        let mut files = vec![("agent.file".to_owned(), &self.agent.file)];
        for (i, c) in self.components.iter().enumerate() {
            for (j, f) in c.files.iter().enumerate() {
                files.push((format!("components[{i}].files[{j}]"), f));
            }
        }
        files
    }

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

/// A bundle-relative path: non-empty, not absolute, no `.`/`..`/empty segments, no NUL or
/// backslash. Such a path cannot leave the bundle root when joined to it.
pub fn check_relative_path(field: &str, path: &str) -> Result<(), ManifestError> {
    let refuse = |reason: &str| Err(ManifestError::new(field, format!("{path:?} {reason}")));
    if path.is_empty() {
        return refuse("is empty");
    }
    if path.starts_with('/') {
        return refuse("is absolute; paths in a bundle are relative to its root");
    }
    if path.contains('\0') || path.contains('\\') {
        return refuse("contains a NUL or backslash");
    }
    for segment in path.split('/') {
        match segment {
            "" => return refuse("has an empty segment"),
            "." | ".." => return refuse("has a '.' or '..' segment"),
            _ => {}
        }
    }
    Ok(())
}

/// An install destination on the host: absolute, normalised (no `.`/`..`/empty segments).
pub fn check_absolute_path(field: &str, path: &str) -> Result<(), ManifestError> {
    match path.strip_prefix('/') {
        Some(rest) if !rest.is_empty() => check_relative_path(field, rest),
        _ => Err(ManifestError::new(
            field,
            format!("{path:?} must be an absolute path below /"),
        )),
    }
}

/// A lowercase hex sha256.
pub fn check_sha256(field: &str, digest: &str) -> Result<(), ManifestError> {
    if digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(ManifestError::new(
            field,
            format!("{digest:?} is not 64 lowercase hex characters"),
        ))
    }
}

/// A version: dot-separated numbers with an optional `-suffix` of `[A-Za-z0-9.]`, e.g.
/// `2.0.0` or `2.0.0-rc.1`.
pub fn check_version(field: &str, version: &str) -> Result<(), ManifestError> {
    let (core, suffix) = match version.split_once('-') {
        Some((c, s)) => (c, Some(s)),
        None => (version, None),
    };
    let core_ok = !core.is_empty()
        && core
            .split('.')
            .all(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()));
    let suffix_ok = suffix.is_none_or(|s| {
        !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
    });
    if core_ok && suffix_ok && version.len() <= 48 {
        Ok(())
    } else {
        Err(ManifestError::new(
            field,
            format!("{version:?} is not a version like 2.0.0 or 2.0.0-rc.1"),
        ))
    }
}

/// An image reference: `[registry/]name[:tag][@sha256:…]`, lowercase name, no spaces.
pub fn check_image_ref(field: &str, image: &str) -> Result<(), ManifestError> {
    let refuse = |reason: &str| Err(ManifestError::new(field, format!("{image:?} {reason}")));
    if image.is_empty() || image.len() > 255 {
        return refuse("must be 1..=255 characters");
    }
    let (name_tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        match d.strip_prefix("sha256:") {
            Some(hex) if check_sha256(field, hex).is_ok() => {}
            _ => return refuse("has a digest that is not sha256:<64 hex>"),
        }
    }
    // A tag is after the last ':' that follows the last '/' (a registry may have a port).
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return refuse("has an empty name component");
    }
    let mut components = name.split('/').peekable();
    let first = components.peek().copied().unwrap_or_default();
    // The first component is a registry host if it has a '.' or ':' or is localhost.
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    for (i, c) in name.split('/').enumerate() {
        let ok = if i == 0 && has_registry {
            c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
        } else {
            c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        };
        if !ok {
            return refuse(
                "has an invalid name component (lowercase letters, digits, '-', '.', '_')",
            );
        }
    }
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !ok {
            return refuse("has an invalid tag");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn sample() -> serde_json::Value {
        serde_json::json!({
            "schema_version": 1,
            "version": "2.0.0",
            "backward_compatible": true,
            "agent": {"version": "2.0.0", "file": {"path": "agent/baton-agent", "size": 0, "sha256": SHA, "mode": "0755"}},
            "components": [
                {"name": "baton-hello", "version": "2.0.0", "kind": "file", "order": 10,
                 "files": [{"path": "packages/hello/baton-hello", "dest": "/usr/local/bin/baton-hello", "size": 0, "sha256": SHA, "mode": "0755"}]},
                {"name": "baton-echo", "version": "2.0.0", "kind": "service", "unit": "baton-echo.service", "order": 20,
                 "files": [
                    {"path": "packages/echo/baton-echo", "dest": "/usr/local/sbin/baton-echo", "size": 0, "sha256": SHA, "mode": "0755"},
                    {"path": "packages/echo/baton-echo.service", "dest": "/etc/systemd/system/baton-echo.service", "size": 0, "sha256": SHA}],
                 "health": [{"check": "unit-active"}]},
                {"name": "baton-kv", "version": "2.0.0", "kind": "container", "image": "baton/kv:2.0.0", "container": "baton-kv", "order": 30,
                 "files": [{"path": "packages/kv/image.tar", "size": 0, "sha256": SHA}],
                 "health": [{"check": "container-running"}, {"check": "http", "url": "http://127.0.0.1:7070/health"}]},
                {"name": "kernel", "version": "2.0.0", "kind": "kernel", "release": "6.1.0-baton2", "order": 40, "reboot": true,
                 "files": [{"path": "packages/kernel/vmlinuz-6.1.0-baton2", "dest": "/boot/vmlinuz-6.1.0-baton2", "size": 0, "sha256": SHA}]}
            ]
        })
    }

    fn parse(v: &serde_json::Value) -> Result<Manifest, ManifestError> {
        Manifest::parse(&serde_json::to_vec(v).expect("json"))
    }

    fn refused(edit: impl FnOnce(&mut serde_json::Value)) -> ManifestError {
        let mut v = sample();
        edit(&mut v);
        parse(&v).expect_err("should be refused")
    }

    #[test]
    fn sample_is_valid_and_ordered() {
        let m = parse(&sample()).expect("valid");
        let order: Vec<&str> = m.apply_order().iter().map(|c| c.kind.name()).collect();
        assert_eq!(order, ["file", "service", "container", "kernel"]);
        assert_eq!(Manifest::parse(&m.to_json()).expect("round trip"), m);
    }

    #[test]
    fn refuses_parent_segments() {
        let e = refused(|v| {
            v["components"][0]["files"][0]["path"] = "packages/../../etc/passwd".into()
        });
        assert_eq!(e.field, "components[0].files[0].path");
        assert!(e.reason.contains(".."), "{e}");
    }

    #[test]
    fn refuses_absolute_bundle_paths() {
        let e = refused(|v| v["agent"]["file"]["path"] = "/bin/sh".into());
        assert_eq!(e.field, "agent.file.path");
        assert!(e.reason.contains("absolute"), "{e}");
    }

    #[test]
    fn refuses_empty_paths_and_segments() {
        let e = refused(|v| v["components"][1]["files"][0]["path"] = "".into());
        assert_eq!(e.field, "components[1].files[0].path");
        let e = refused(|v| v["components"][1]["files"][0]["path"] = "a//b".into());
        assert!(e.reason.contains("empty segment"), "{e}");
    }

    #[test]
    fn refuses_relative_or_escaping_destinations() {
        let e = refused(|v| v["components"][0]["files"][0]["dest"] = "usr/bin/x".into());
        assert_eq!(e.field, "components[0].files[0].dest");
        let e = refused(|v| v["components"][0]["files"][0]["dest"] = "/usr/../etc/shadow".into());
        assert_eq!(e.field, "components[0].files[0].dest");
    }

    #[test]
    fn refuses_bad_digests() {
        for bad in ["", "abc", &SHA.to_uppercase(), &format!("{}g", &SHA[..63])] {
            let e = refused(|v| v["components"][2]["files"][0]["sha256"] = bad.into());
            assert_eq!(e.field, "components[2].files[0].sha256", "{bad}");
        }
    }

    #[test]
    fn refuses_duplicate_component_names() {
        let e = refused(|v| v["components"][1]["name"] = "baton-hello".into());
        assert_eq!(e.field, "components[1].name");
        assert!(e.reason.contains("duplicate"), "{e}");
    }

    #[test]
    fn refuses_unknown_kinds_naming_the_component() {
        let e = refused(|v| v["components"][0]["kind"] = "firmware".into());
        assert!(e.field.starts_with("components[0]"), "{e}");
        assert!(e.reason.contains("firmware"), "{e}");
    }

    #[test]
    fn refuses_fields_of_another_kind_and_missing_kind_fields() {
        let e = refused(|v| v["components"][0]["release"] = "x".into());
        assert_eq!(e.field, "components[0].release");
        let e = refused(|v| {
            v["components"][1]
                .as_object_mut()
                .expect("obj")
                .remove("unit")
                .map(|_| ())
                .unwrap_or(())
        });
        assert_eq!(e.field, "components[1].unit");
    }

    #[test]
    fn refuses_unknown_fields() {
        let e = refused(|v| v["components"][0]["colour"] = "red".into());
        assert!(e.field.starts_with("components[0]"), "{e}");
        assert!(e.reason.contains("colour"), "{e}");
    }

    #[test]
    fn refuses_bad_versions() {
        for bad in ["", "v2", "2..0", "2.0.0-", "2.0.0 beta", "2.0.0-rc/1"] {
            let e = refused(|v| v["version"] = bad.into());
            assert_eq!(e.field, "version", "{bad}");
        }
        let e = refused(|v| v["components"][3]["version"] = "x".into());
        assert_eq!(e.field, "components[3].version");
    }

    #[test]
    fn refuses_kernel_not_last_or_without_reboot() {
        let e = refused(|v| v["components"][3]["order"] = 5.into());
        assert_eq!(e.field, "components[3].order");
        let e = refused(|v| v["components"][3]["reboot"] = false.into());
        assert_eq!(e.field, "components[3].reboot");
    }

    #[test]
    fn refuses_service_without_its_unit_file() {
        let e = refused(|v| {
            v["components"][1]["files"][1]["dest"] = "/etc/systemd/system/other.service".into()
        });
        assert_eq!(e.field, "components[1].files");
    }

    #[test]
    fn refuses_duplicate_bundle_paths_and_destinations() {
        let e = refused(|v| {
            v["components"][1]["files"][0]["path"] = "packages/hello/baton-hello".into()
        });
        assert_eq!(e.field, "components[1].files[0].path");
        let e = refused(|v| {
            v["components"][1]["files"][0]["dest"] = "/usr/local/bin/baton-hello".into()
        });
        assert_eq!(e.field, "components[1].files[0].dest");
    }

    #[test]
    fn refuses_bad_modes_and_health_checks() {
        let e = refused(|v| v["components"][0]["files"][0]["mode"] = "rwx".into());
        assert_eq!(e.field, "components[0].files[0].mode");
        let e = refused(|v| {
            v["components"][0]["health"] = serde_json::json!([{"check": "unit-active"}])
        });
        assert_eq!(e.field, "components[0].health[0]");
        let e = refused(|v| v["components"][2]["health"][1]["url"] = "ftp://x".into());
        assert_eq!(e.field, "components[2].health[1].url");
    }

    #[test]
    fn image_references() {
        for ok in [
            "baton/kv:2.0.0",
            "127.0.0.1:5000/baton/bundle:2.0.0",
            "localhost/x@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "registry.example.com:443/a/b",
        ] {
            assert!(check_image_ref("image", ok).is_ok(), "{ok}");
        }
        for bad in ["", "Baton/KV", "a b", "x:", "x@sha256:12", "/x", "a//b"] {
            assert!(check_image_ref("image", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_cleaning_cases() {
        for ok in ["a", "a/b.c", "a/.hidden", "a/b..c"] {
            assert!(check_relative_path("p", ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "./a", "a/./b", "..", "a/..", "a\\b", "a\0b"] {
            assert!(check_relative_path("p", bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn accepted_relative_paths_never_escape(segments in proptest::collection::vec("[a-z.]{0,4}", 1..5)) {
            let path = segments.join("/");
            if check_relative_path("p", &path).is_ok() {
                // Lexically normalise: an accepted path never climbs above its root.
                let mut depth = 0i32;
                for s in path.split('/') {
                    match s { ".." => depth -= 1, "." | "" => {}, _ => depth += 1 }
                    proptest::prop_assert!(depth >= 0, "{path}");
                }
                proptest::prop_assert!(!path.starts_with('/'));
            }
        }
    }
}
