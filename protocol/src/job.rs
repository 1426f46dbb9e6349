//! The downloader job's contract with whoever runs it: the settings it is given
//! ([`JobSettings`], one JSON value in the [`SETTINGS_ENV`] environment variable, or the
//! job's `--settings` flag) and the one JSON line it prints when it succeeds ([`Summary`]).
//! The orchestrator writes the first and reads the second; neither needs the job's crate.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::HostId;
use crate::agent_config::{
    DEFAULT_LEASE_TTL_SECS, default_boot_id_file, default_kernel_release_file, default_prefix,
    default_ttl as default_lease_ttl,
};
use crate::etcd::EtcdTls;

/// Where the orchestrator puts the host's etcd credential in the job's container.
pub const JOB_CREDENTIAL_FILE: &str = "/run/baton-job/etcd-credential";
/// Where the orchestrator puts the maintenance credential of a host running a member of the
/// cluster in the job's container.
pub const JOB_MAINTENANCE_CREDENTIAL_FILE: &str = "/run/baton-job/etcd-maintenance-credential";
/// The environment variable carrying the job's [`JobSettings`] as JSON.
pub const SETTINGS_ENV: &str = "BATON_JOB_SETTINGS";
/// Schema of [`JobSettings`].
pub const SETTINGS_SCHEMA_VERSION: u32 = 1;
/// Schema of the [`Summary`] line.
pub const SUMMARY_SCHEMA_VERSION: u32 = 1;

/// What the job writes into the host's agent configuration (`/etc/baton/agent.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// [`SETTINGS_SCHEMA_VERSION`].
    #[serde(default = "settings_schema")]
    pub schema_version: u32,
    /// The host's id.
    pub host_id: HostId,
    /// etcd endpoints as the host's agent reaches them.
    pub etcd_endpoints: Vec<String>,
    /// Baton's key prefix.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The agent's liveness lease TTL in seconds.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: i64,
    /// The file (on the host) holding the current boot's id.
    #[serde(default = "default_boot_id_file")]
    pub boot_id_file: PathBuf,
    /// The file (on the host) holding the running kernel's release.
    #[serde(default = "default_kernel_release_file")]
    pub kernel_release_file: PathBuf,
    /// Prefix of the names of the service containers the agent runs (empty on a real host;
    /// the simulated fleet, where hosts share one Docker Engine, uses `<host>-`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_prefix: String,
    /// TLS for the agent's `https://` etcd endpoints (files on the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EtcdTls>,
    /// A file in the job's own container holding the host's etcd credential
    /// (`user:password`), put there by the orchestrator before the job starts — never in the
    /// environment, which `docker inspect` shows. The job moves it to the host's
    /// `/etc/baton/etcd-credential` (mode 0600) and points the agent at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_file: Option<PathBuf>,
    /// Like `credential_file`, for a host registered as running a member of the cluster:
    /// its maintenance credential (a user with etcd's `root` role), moved to the host's
    /// `/etc/baton/etcd-maintenance-credential` (mode 0600). Without it, the job removes
    /// that file if a previous job left one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_credential_file: Option<PathBuf>,
    /// The host's etcd identity is managed, but this job carries no new credential for it
    /// (the orchestrator issues one only to a host without a live agent or an identity): the
    /// job leaves the host's `/etc/baton/etcd-credential` as it is, refuses to run if it is
    /// missing, and points the agent at it. Excludes `credential_file`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_credential: bool,
    /// Like `keep_credential`, for the maintenance credential of a host running a member of
    /// the cluster. Excludes `maintenance_credential_file`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_maintenance_credential: bool,
    /// The bundle image the job runs from, pinned by digest: the job records the digest
    /// beside the staged bundle, and the agent installs the bundle only for a `desired`
    /// naming that digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The agent's `install_allow` (default:
    /// [`DEFAULT_INSTALL_ALLOW`](crate::manifest::DEFAULT_INSTALL_ALLOW)): where bundles may
    /// install files; the job refuses a bundle installing elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_allow: Option<Vec<String>>,
    /// The agent's `install_setuid`: destinations that may carry setuid or setgid bits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub install_setuid: Vec<String>,
    /// The bundle's signature (from the upgrade): the job verifies it against the keys the
    /// host trusts (or, on a host that trusts none yet, the bundle's own `trusted_keys`)
    /// before anything is staged, and then installs the bundle's `trusted_keys`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::signing::BundleSignature>,
}

fn settings_schema() -> u32 {
    SETTINGS_SCHEMA_VERSION
}

fn is_false(value: &bool) -> bool {
    !value
}
/// The job's settings could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{SETTINGS_ENV}: {field}: {reason}")]
pub struct JobSettingsError {
    /// The field at fault (`.` for the document itself).
    pub field: String,
    /// Why.
    pub reason: String,
}

impl JobSettings {
    /// Settings for `host` with every default.
    pub fn new(host_id: HostId, etcd_endpoints: Vec<String>) -> Self {
        Self {
            schema_version: SETTINGS_SCHEMA_VERSION,
            host_id,
            etcd_endpoints,
            prefix: default_prefix(),
            lease_ttl_secs: DEFAULT_LEASE_TTL_SECS,
            boot_id_file: default_boot_id_file(),
            kernel_release_file: default_kernel_release_file(),
            container_prefix: String::new(),
            tls: None,
            credential_file: None,
            maintenance_credential_file: None,
            keep_credential: false,
            keep_maintenance_credential: false,
            image: None,
            install_allow: None,
            install_setuid: Vec::new(),
            signature: None,
        }
    }

    /// The JSON value passed to the job.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the JSON value; errors name the field.
    pub fn parse(text: &str) -> Result<Self, JobSettingsError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let settings: JobSettings =
            serde_path_to_error::deserialize(de).map_err(|e| JobSettingsError {
                field: e.path().to_string(),
                reason: e.inner().to_string(),
            })?;
        if settings.schema_version != SETTINGS_SCHEMA_VERSION {
            return Err(JobSettingsError {
                field: "schema_version".to_owned(),
                reason: format!(
                    "{} is not the supported {SETTINGS_SCHEMA_VERSION}",
                    settings.schema_version
                ),
            });
        }
        for (field, keep, file) in [
            (
                "keep_credential",
                settings.keep_credential,
                &settings.credential_file,
            ),
            (
                "keep_maintenance_credential",
                settings.keep_maintenance_credential,
                &settings.maintenance_credential_file,
            ),
        ] {
            if keep && file.is_some() {
                return Err(JobSettingsError {
                    field: field.to_owned(),
                    reason: "a job either keeps the host's credential or delivers a new one, \
                             not both"
                        .to_owned(),
                });
            }
        }
        if settings.etcd_endpoints.is_empty() {
            return Err(JobSettingsError {
                field: "etcd_endpoints".to_owned(),
                reason: "at least one endpoint is needed".to_owned(),
            });
        }
        Ok(settings)
    }
}

/// What staging did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageAction {
    /// The version was not on the host; it is now.
    Staged,
    /// A different or incomplete copy of the version was replaced.
    Replaced,
    /// The host already held exactly this bundle.
    Unchanged,
}

/// What happened to the agent's service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentAction {
    /// First agent on this host: installed, enabled and started.
    Installed,
    /// Its binary, configuration or unit changed: restarted.
    Restarted,
    /// Nothing changed but it was not running: started.
    Started,
    /// Nothing changed and it is active: left alone.
    Unchanged,
}

/// Whether a host file was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileAction {
    /// Written (it was missing or different).
    Written,
    /// Already as wanted.
    Unchanged,
}

impl FileAction {
    /// [`FileAction::Written`] if `written`.
    pub fn from_written(written: bool) -> Self {
        if written {
            FileAction::Written
        } else {
            FileAction::Unchanged
        }
    }
}

/// The agent part of the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSummary {
    /// The bundle's agent version, now current.
    pub version: String,
    /// What was done to the service.
    pub action: AgentAction,
    /// The version that was current before, if another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

/// The job's result: its last stdout line, one JSON object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// [`SUMMARY_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The bundle version.
    pub version: String,
    /// Files in the bundle (agent included), all verified.
    pub files: usize,
    /// Their total size in bytes.
    pub bytes: u64,
    /// What staging did.
    pub bundle: StageAction,
    /// The agent.
    pub agent: AgentSummary,
    /// `/etc/baton/agent.toml`.
    pub config: FileAction,
    /// `/etc/systemd/system/baton-agent.service`.
    pub unit: FileAction,
    /// Whether anything on the host changed.
    pub changed: bool,
}

impl Summary {
    /// The summary in a job's log: its last line that parses as one.
    pub fn from_log(log: &str) -> Option<Summary> {
        log.lines()
            .rev()
            .find_map(|line| serde_json::from_str::<Summary>(line.trim()).ok())
    }

    /// The JSON line.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// One line for people (and the upgrade record): what the job changed, e.g.
    /// `bundle 2.0.0 staged, agent 2.0.0 restarted (was 1.0.0)`.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "bundle {} {}, agent {} {}",
            self.version,
            kebab(&self.bundle),
            self.agent.version,
            kebab(&self.agent.action)
        );
        if let Some(previous) = &self.agent.previous {
            line.push_str(&format!(" (was {previous})"));
        }
        line
    }
}

/// The kebab-case name an enum above serialises to.
fn kebab<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_config::DEFAULT_BOOT_ID_FILE;

    #[test]
    fn settings_round_trip_with_defaults_and_name_the_bad_field() {
        let mut s = JobSettings::new(
            HostId::new("host-1").expect("id"),
            vec!["http://10.0.0.1:2379".into()],
        );
        s.container_prefix = "host-1-".into();
        assert_eq!(JobSettings::parse(&s.to_json()).expect("parse"), s);
        let minimal = r#"{"host_id":"host-1","etcd_endpoints":["http://10.0.0.1:2379"]}"#;
        let parsed = JobSettings::parse(minimal).expect("minimal");
        assert_eq!(parsed.prefix, "/baton");
        assert_eq!(parsed.boot_id_file, PathBuf::from(DEFAULT_BOOT_ID_FILE));
        let err = JobSettings::parse(r#"{"host_id":"a/b","etcd_endpoints":["x"]}"#)
            .expect_err("bad host");
        assert!(err.to_string().contains("host_id"), "{err}");
        let err = JobSettings::parse(r#"{"host_id":"h","etcd_endpoints":[]}"#).expect_err("none");
        assert!(err.to_string().contains("etcd_endpoints"), "{err}");
        let err = JobSettings::parse(r#"{"host_id":"h","etcd_endpoints":["x"],"extra":1}"#)
            .expect_err("unknown");
        assert!(err.to_string().contains("extra"), "{err}");
        s.keep_credential = true;
        assert_eq!(JobSettings::parse(&s.to_json()).expect("keep"), s);
        s.credential_file = Some(JOB_CREDENTIAL_FILE.into());
        let err = JobSettings::parse(&s.to_json()).expect_err("keep and deliver");
        assert!(err.to_string().contains("keep_credential"), "{err}");
    }

    #[test]
    fn the_summary_reads_from_a_log_and_describes_itself() {
        let line = r#"{"schema_version":1,"version":"9.0.0","files":2,"bytes":6,"bundle":"staged","agent":{"version":"9.0.0","action":"restarted","previous":"1.0.0"},"config":"written","unit":"unchanged","changed":true}"#;
        let s = Summary::from_log(&format!("noise\n{line}\n")).expect("summary");
        assert_eq!(s.to_line(), line);
        assert_eq!(
            s.describe(),
            "bundle 9.0.0 staged, agent 9.0.0 restarted (was 1.0.0)"
        );
    }
}
