//! The manifest's types, as written in `manifest.json`, and reading and writing it.

use serde::{Deserialize, Serialize};

use super::{MAX_MANIFEST_BYTES, ManifestError};

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
    /// The public keys hosts trust for bundles once this bundle is installed (written to
    /// `/etc/baton/trusted-keys/` by the downloader job after the bundle's signature
    /// verified): how the first install brings keys and how a signed bundle rotates them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<crate::signing::keys::PublicKeyFile>,
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
    /// Not used for the agent, a container image archive, or a kernel's distribution
    /// package (a `.deb`, installed with `dpkg -i`).
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
    /// `service`: the daemon is a member of a quorum cluster (etcd); hosts then take it one
    /// at a time, and the agent keeps the cluster's quorum around the restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<super::QuorumMember>,
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

    /// The keys of `trusted_keys` (validated by [`Manifest::parse`]).
    pub fn trusted_keys(&self) -> crate::signing::TrustedKeys {
        crate::signing::TrustedKeys::new(self.trusted_keys.iter().enumerate().filter_map(
            |(i, doc)| {
                crate::signing::PublicKey::from_document(&format!("trusted_keys[{i}]"), doc).ok()
            },
        ))
    }

    /// Whether a component is a member of a quorum cluster: the bundle then goes to one host
    /// at a time, whatever the strategy's batch.
    pub fn has_quorum_member(&self) -> bool {
        self.components.iter().any(|c| c.quorum.is_some())
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
}
