//! One run of the downloader job: check the bundle, stage it, install the agent, write its
//! configuration and unit, and (re)start it through the host's systemd — each step only
//! when something changed, so a second run with the same bundle changes nothing. The run
//! ends with a [`Summary`], printed as the job's last stdout line for the orchestrator.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use baton_protocol::etcd::Credential;
use baton_protocol::etcd::identity::{
    DEFAULT_CREDENTIAL_FILE, DEFAULT_MAINTENANCE_CREDENTIAL_FILE,
};
pub use baton_protocol::job::{
    AgentAction, AgentSummary, FileAction, SUMMARY_SCHEMA_VERSION, Summary,
};
use baton_protocol::signing::BundleSignature;
use baton_protocol::staged::{STAGED_RECORD_FILE, StagedBundle};
use baton_systemd_bus::{Systemd, UnitStatus, wait_active};

use crate::agent::{self, AgentInstall};
use crate::bundle::Bundle;
use crate::error::JobError;
use crate::fs::HostFs;
use crate::host_files::{
    AgentSettings, CredentialSource, agent_config_text, agent_unit_text, write_if_changed,
};
use crate::layout::{AGENT_UNIT, CURRENT_LINK, HostLayout};
use crate::stage::{StageAction, stage};
use crate::trust;

/// Default time the agent gets to become active.
pub const DEFAULT_ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the unit's state is polled while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// What the job is told.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// The bundle in the image (`/bundle`).
    pub bundle_dir: PathBuf,
    /// Where the host's root is mounted (`/host`).
    pub host_root: PathBuf,
    /// The host's system bus socket, as seen by the job.
    pub dbus_socket: PathBuf,
    /// What goes into the agent's configuration file.
    pub agent: AgentSettings,
    /// The bundle image the job runs from, pinned by digest (recorded beside the staged
    /// bundle).
    pub image: Option<String>,
    /// The bundle's signature (docs/bundle.md, "Signatures").
    pub signature: Option<BundleSignature>,
    /// How long the (re)started agent gets to become active.
    pub active_timeout: Duration,
    /// How often its state is polled meanwhile.
    pub poll_interval: Duration,
}

/// Runs the job against the host's file system and systemd.
pub async fn run<S: Systemd>(
    config: &JobConfig,
    fs: &dyn HostFs,
    systemd: &S,
) -> Result<Summary, JobError> {
    let layout = HostLayout::new(&config.host_root);
    // Refuse bad settings before touching anything.
    let config_text = agent_config_text(&config.agent)?;
    let credential = given_credential(&layout, &config.agent.credential, DEFAULT_CREDENTIAL_FILE)?;
    let maintenance = given_credential(
        &layout,
        &config.agent.maintenance_credential,
        DEFAULT_MAINTENANCE_CREDENTIAL_FILE,
    )?;
    let bundle = Bundle::open(&config.bundle_dir)?;
    let manifest = bundle.manifest();
    tracing::info!(version = %manifest.version, agent = %manifest.agent.version, "bundle manifest accepted");
    // Where the bundle installs, checked against the policy the agent gets: a bundle the
    // agent would refuse is not staged.
    config
        .agent
        .install
        .check(manifest)
        .map_err(|source| JobError::Manifest {
            path: bundle.manifest_path(),
            source,
        })?;
    let record = config
        .image
        .as_deref()
        .map(|image| StagedBundle::new(&manifest.version, image))
        .transpose()
        .map_err(|source| JobError::Image { source })?;
    // Nothing is staged from a bundle the host does not trust.
    let verdict = trust::verify(
        &layout,
        &bundle,
        config.image.as_deref(),
        config.signature.as_ref(),
    )?;

    let staged = stage(fs, &bundle, &layout)?;
    if let trust::Verdict::Signed { .. } = verdict {
        trust::install_keys(fs, &layout, &bundle)?;
    }
    // Written once every package is verified and staged: the agent trusts the staged
    // files for this digest only.
    if let Some(record) = record {
        write_if_changed(
            fs,
            &staged.dir.join(STAGED_RECORD_FILE),
            &record.to_json(),
            0o644,
        )?;
    } else {
        tracing::warn!(dir = %staged.dir.display(), "no --image given: the staged bundle records no image digest, and the agent will not install it");
    }
    let installed = agent::install(fs, &layout, manifest, &staged.dir)?;
    // The credential first: the configuration naming it must never point at a missing file.
    let credential_written = match &credential {
        Some(c) => write_if_changed(
            fs,
            &layout.host(DEFAULT_CREDENTIAL_FILE),
            c.to_file_text().as_bytes(),
            0o600,
        )?,
        None => false,
    };
    deliver_maintenance_credential(
        fs,
        &layout,
        config.agent.credential.is_managed(),
        &config.agent.maintenance_credential,
        maintenance.as_ref(),
    )?;
    // A new credential (the orchestrator issues one to a host whose agent is not alive,
    // ending the sessions under the old one) restarts the agent like a new configuration
    // does.
    let config_written =
        write_if_changed(fs, &layout.agent_config(), config_text.as_bytes(), 0o644)?
            || credential_written;
    let unit_written = write_if_changed(
        fs,
        &layout.agent_unit(),
        agent_unit_text().as_bytes(),
        0o644,
    )?;
    let action = activate(
        config,
        &layout,
        fs,
        systemd,
        &installed,
        config_written,
        unit_written,
    )
    .await?;

    let summary = Summary {
        schema_version: SUMMARY_SCHEMA_VERSION,
        version: manifest.version.clone(),
        files: staged.files,
        bytes: staged.bytes,
        bundle: staged.action,
        agent: AgentSummary {
            version: installed.version.clone(),
            action,
            previous: installed.before.clone().filter(|b| *b != installed.version),
        },
        config: FileAction::from_written(config_written),
        unit: FileAction::from_written(unit_written),
        changed: staged.action != StageAction::Unchanged
            || installed.changed()
            || config_written
            || unit_written
            || action != AgentAction::Unchanged,
    };
    if summary.changed {
        tracing::info!(version = %summary.version, agent = ?summary.agent.action, "bundle installed on the host");
    } else {
        tracing::info!(version = %summary.version, "bundle already installed, agent active: nothing changed");
    }
    Ok(summary)
}

/// The new credential the job delivers from its container, if it delivers one. A credential
/// the job keeps must be on the host already (`host_file`): the configuration about to be
/// written names it, and an agent started without it could never sign in.
fn given_credential(
    layout: &HostLayout,
    source: &CredentialSource,
    host_file: &str,
) -> Result<Option<Credential>, JobError> {
    match source {
        CredentialSource::Unmanaged => Ok(None),
        CredentialSource::Delivered(file) => Ok(Some(Credential::load(file)?)),
        CredentialSource::Kept => {
            Credential::load(&layout.host(host_file))?;
            Ok(None)
        }
    }
}

/// Writes a member host's new maintenance credential before the configuration naming it;
/// on a host whose identities the orchestrator manages (`managed`) but which is not
/// registered as running a member (`source` unmanaged), removes one a previous job left. A
/// kept one stays as it is. The agent reads the file at each step that uses it: a new
/// password needs no restart.
fn deliver_maintenance_credential(
    fs: &dyn HostFs,
    layout: &HostLayout,
    managed: bool,
    source: &CredentialSource,
    maintenance: Option<&Credential>,
) -> Result<(), JobError> {
    let path = layout.host(DEFAULT_MAINTENANCE_CREDENTIAL_FILE);
    match (maintenance, source) {
        (Some(c), _) => {
            write_if_changed(fs, &path, c.to_file_text().as_bytes(), 0o600)?;
        }
        (None, CredentialSource::Unmanaged) if managed => match fs.remove_file(&path) {
            Ok(()) => tracing::info!(
                file = DEFAULT_MAINTENANCE_CREDENTIAL_FILE,
                "maintenance credential removed: the host is not registered as running a member"
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(JobError::io(&path, "remove", e)),
        },
        (None, _) => {}
    }
    Ok(())
}

/// Reloads, enables and (re)starts the agent's unit as needed, then waits until it is
/// active. A new agent that does not become active is rolled back to the previous one.
async fn activate<S: Systemd>(
    config: &JobConfig,
    layout: &HostLayout,
    fs: &dyn HostFs,
    systemd: &S,
    installed: &AgentInstall,
    config_written: bool,
    unit_written: bool,
) -> Result<AgentAction, JobError> {
    if unit_written {
        systemd.reload().await?;
    }
    if systemd.unit_file_state(AGENT_UNIT).await? != "enabled" {
        systemd.enable(AGENT_UNIT).await?;
        systemd.reload().await?;
        tracing::info!(unit = AGENT_UNIT, "unit enabled");
    }
    let status = systemd.status(AGENT_UNIT).await?;
    // Also restart an agent that was started before its inputs last changed (a run that
    // was interrupted between switching `current` and restarting).
    let stale = inputs_changed_usec(fs, layout)? > status.active_enter_usec;
    let changed = installed.changed() || config_written || unit_written || stale;
    if status.is_active() && !changed {
        return Ok(AgentAction::Unchanged);
    }
    let running = matches!(
        status.active_state.as_str(),
        "active" | "activating" | "reloading"
    );
    let action = if installed.before.is_none() {
        AgentAction::Installed
    } else if running {
        AgentAction::Restarted
    } else {
        AgentAction::Started
    };
    let last = start_and_wait(config, systemd, &status).await?;
    let Err(last) = last else {
        tracing::info!(unit = AGENT_UNIT, ?action, "agent active");
        return Ok(action);
    };

    let mut rollback = String::new();
    if let Some(previous) = installed.before.as_ref().filter(|_| installed.switched()) {
        tracing::warn!(version = %installed.version, to = %previous, "new agent did not become active; rolling back");
        agent::switch_back(fs, layout, &installed.version, previous)?;
        let now = systemd.status(AGENT_UNIT).await?;
        rollback = match start_and_wait(config, systemd, &now).await? {
            Ok(_) => format!("; rolled back to agent {previous}, which is active"),
            Err(s) => format!(
                "; rolled back to agent {previous}, which is not active either ({}/{})",
                s.active_state, s.sub_state
            ),
        };
    }
    Err(JobError::NotActive {
        unit_path: layout.agent_unit(),
        unit: AGENT_UNIT.to_owned(),
        timeout: config.active_timeout,
        active: last.active_state,
        sub: last.sub_state,
        rollback,
    })
}

/// Restarts (or starts) the unit and waits for it; `Err(status)` if it did not become active.
async fn start_and_wait<S: Systemd>(
    config: &JobConfig,
    systemd: &S,
    status: &UnitStatus,
) -> Result<Result<UnitStatus, UnitStatus>, JobError> {
    if status.active_state == "failed" {
        systemd.reset_failed(AGENT_UNIT).await?;
    }
    let running = matches!(
        status.active_state.as_str(),
        "active" | "activating" | "reloading"
    );
    let job = if running {
        systemd.restart(AGENT_UNIT).await?
    } else {
        systemd.start(AGENT_UNIT).await?
    };
    wait_active(
        systemd,
        AGENT_UNIT,
        &job,
        config.active_timeout,
        config.poll_interval,
    )
    .await
    .map_err(JobError::from)
}

/// When the agent's inputs (the `current` link, the current binary, its configuration and
/// unit) last changed, in µs since the epoch.
fn inputs_changed_usec(fs: &dyn HostFs, layout: &HostLayout) -> Result<u64, JobError> {
    let current = layout.agent_dir().join(CURRENT_LINK);
    let mut newest = 0u64;
    for (path, follow) in [
        (current.clone(), false),
        (current.join(crate::layout::AGENT_BINARY), true),
        (layout.agent_config(), false),
        (layout.agent_unit(), false),
    ] {
        let meta = if follow {
            fs.metadata(&path)
        } else {
            fs.symlink_metadata(&path)
        }
        .map_err(|e| JobError::io(&path, "stat", e))?;
        if let Some(modified) = meta.and_then(|m| m.modified().ok()) {
            let usec = modified
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0);
            newest = newest.max(usec);
        }
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::bundle::testing::write_bundle;
    use crate::fs::RealFs;
    use crate::fs::testing::{FaultyFs, leak};
    use baton_systemd_bus::fake::FakeSystemd;

    const DIGEST: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
    const IMAGE: &str = "registry:5000/baton/bundle@sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn config(dir: &Path, version: &str) -> JobConfig {
        let bundle_dir = dir.join(format!("bundle-{version}"));
        if !bundle_dir.exists() {
            write_bundle(&bundle_dir, version, format!("agent {version}").as_bytes());
        }
        JobConfig {
            bundle_dir,
            host_root: dir.join("host"),
            dbus_socket: dir.join("host/run/dbus/system_bus_socket"),
            agent: AgentSettings {
                host_id: "host-1".into(),
                etcd_endpoints: vec!["http://10.0.0.1:2379".into()],
                prefix: "/baton".into(),
                lease_ttl_secs: 10,
                boot_id_file: "/run/baton/boot-id".into(),
                kernel_release_file: "/run/baton/booted-kernel".into(),
                container_prefix: String::new(),
                tls: None,
                credential: CredentialSource::Unmanaged,
                maintenance_credential: CredentialSource::Unmanaged,
                install: baton_protocol::manifest::InstallPolicy::default(),
            },
            image: Some(IMAGE.into()),
            signature: None,
            active_timeout: Duration::from_millis(300),
            poll_interval: Duration::from_millis(10),
        }
    }

    #[tokio::test]
    async fn first_run_installs_second_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "1.0.0");
        let systemd = FakeSystemd::new();
        let s = run(&cfg, &RealFs, &systemd).await.unwrap();
        assert_eq!(s.agent.action, AgentAction::Installed);
        assert_eq!(s.bundle, StageAction::Staged);
        assert!(s.changed);
        assert_eq!(
            systemd.calls(),
            [
                "Reload",
                "GetUnitFileState baton-agent.service",
                "EnableUnitFiles baton-agent.service",
                "Reload",
                "StartUnit baton-agent.service",
            ]
        );
        let host = HostLayout::new(&cfg.host_root);
        assert!(
            std::fs::read_to_string(host.agent_unit())
                .unwrap()
                .contains("Type=notify")
        );
        assert!(
            std::fs::read_to_string(host.agent_config())
                .unwrap()
                .contains("host_id = \"host-1\"")
        );
        // The image the bundle was staged from, by digest, beside it.
        let record = std::fs::read(host.bundle_dir("1.0.0").join(STAGED_RECORD_FILE)).unwrap();
        let record = StagedBundle::parse(&record).unwrap();
        assert_eq!(record.image_digest, DIGEST);
        assert_eq!(record.version, "1.0.0");

        systemd.clear();
        let fs = leak(FaultyFs::recording());
        let again = run(&cfg, &fs, &systemd).await.unwrap();
        assert!(!again.changed, "{again:?}");
        assert_eq!(again.agent.action, AgentAction::Unchanged);
        assert_eq!(fs.ops(), Vec::<String>::new());
        assert_eq!(systemd.calls(), ["GetUnitFileState baton-agent.service"]);
        // The summary line round-trips.
        assert_eq!(
            Summary::from_log(&format!("noise\n{}\n", again.to_line())),
            Some(again)
        );
    }

    #[tokio::test]
    async fn a_member_hosts_maintenance_credential_is_delivered_root_only_and_removed_when_withdrawn()
     {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let given = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let mut cfg = config(dir.path(), "1.0.0");
        cfg.agent.credential = CredentialSource::Delivered(given("own", "baton-host-host-1:p1\n"));
        cfg.agent.maintenance_credential =
            CredentialSource::Delivered(given("maintenance", "baton-maintenance-host-1:p2\n"));
        let systemd = FakeSystemd::new();
        run(&cfg, &RealFs, &systemd).await.unwrap();
        let host = HostLayout::new(&cfg.host_root);
        let file = host.host(DEFAULT_MAINTENANCE_CREDENTIAL_FILE);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "baton-maintenance-host-1:p2\n"
        );
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let config = std::fs::read_to_string(host.agent_config()).unwrap();
        assert!(
            config.contains(
                "maintenance_credential_file = \"/etc/baton/etcd-maintenance-credential\""
            ),
            "{config}"
        );

        // A job that carries no new credentials leaves both files and the agent as they are.
        let own = host.host(DEFAULT_CREDENTIAL_FILE);
        cfg.agent.credential = CredentialSource::Kept;
        cfg.agent.maintenance_credential = CredentialSource::Kept;
        systemd.clear();
        let fs = leak(FaultyFs::recording());
        let kept = run(&cfg, &fs, &systemd).await.unwrap();
        assert!(!kept.changed, "{kept:?}");
        assert_eq!(fs.ops(), Vec::<String>::new());
        assert_eq!(systemd.calls(), ["GetUnitFileState baton-agent.service"]);
        assert_eq!(
            std::fs::read_to_string(&own).unwrap(),
            "baton-host-host-1:p1\n"
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "baton-maintenance-host-1:p2\n"
        );

        // Registered again as not running a member: the next job takes the file away.
        cfg.agent.maintenance_credential = CredentialSource::Unmanaged;
        run(&cfg, &RealFs, &FakeSystemd::new()).await.unwrap();
        assert!(!file.exists());
        let config = std::fs::read_to_string(host.agent_config()).unwrap();
        assert!(!config.contains("maintenance_credential_file"), "{config}");
    }

    #[tokio::test]
    async fn keeping_a_credential_the_host_does_not_hold_is_refused_before_anything_is_staged() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), "1.0.0");
        cfg.agent.credential = CredentialSource::Kept;
        let systemd = FakeSystemd::new();
        let err = run(&cfg, &RealFs, &systemd).await.unwrap_err().to_string();
        assert!(err.contains(DEFAULT_CREDENTIAL_FILE), "{err}");
        let host = HostLayout::new(&cfg.host_root);
        assert!(!host.bundle_dir("1.0.0").exists());
        assert!(!host.agent_config().exists());
        assert!(systemd.calls().is_empty());
    }

    #[tokio::test]
    async fn an_inactive_unchanged_agent_is_started() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "1.0.0");
        let systemd = FakeSystemd::new();
        run(&cfg, &RealFs, &systemd).await.unwrap();
        systemd.state.lock().unwrap().active = "failed".into();
        systemd.clear();
        let s = run(&cfg, &RealFs, &systemd).await.unwrap();
        assert_eq!(s.agent.action, AgentAction::Started);
        assert_eq!(
            systemd.calls(),
            [
                "GetUnitFileState baton-agent.service",
                "ResetFailedUnit baton-agent.service",
                "StartUnit baton-agent.service"
            ]
        );
    }

    #[tokio::test]
    async fn upgrade_restarts_with_the_new_agent_and_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let systemd = FakeSystemd::new();
        run(&config(dir.path(), "1.0.0"), &RealFs, &systemd)
            .await
            .unwrap();
        systemd.clear();
        let s = run(&config(dir.path(), "2.0.0"), &RealFs, &systemd)
            .await
            .unwrap();
        assert_eq!(s.agent.action, AgentAction::Restarted);
        assert_eq!(s.agent.previous.as_deref(), Some("1.0.0"));
        assert_eq!(s.config, FileAction::Unchanged);
        assert_eq!(s.unit, FileAction::Unchanged);
        assert_eq!(
            systemd.calls(),
            [
                "GetUnitFileState baton-agent.service",
                "RestartUnit baton-agent.service"
            ]
        );
        let host = HostLayout::new(dir.path().join("host"));
        assert_eq!(
            std::fs::read(host.agent_binary("1.0.0")).unwrap(),
            b"agent 1.0.0"
        );
        assert!(host.bundle_dir("1.0.0").join("manifest.json").exists());
    }

    #[tokio::test]
    async fn a_new_agent_that_does_not_start_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut systemd = FakeSystemd::new();
        // Start 1 (v1) works, start 2 (v2) never becomes active, start 3 (v1 again) works.
        systemd.start_ok_at = Some(|n| n != 2);
        run(&config(dir.path(), "1.0.0"), &RealFs, &systemd)
            .await
            .unwrap();
        let err = run(&config(dir.path(), "2.0.0"), &RealFs, &systemd)
            .await
            .unwrap_err();
        let msg = err.one_line();
        assert!(
            msg.contains("baton-agent.service did not become active"),
            "{msg}"
        );
        assert!(
            msg.contains("rolled back to agent 1.0.0, which is active"),
            "{msg}"
        );
        let host = HostLayout::new(dir.path().join("host"));
        assert_eq!(
            std::fs::read_link(host.agent_dir().join("current")).unwrap(),
            Path::new("1.0.0")
        );
    }

    #[tokio::test]
    async fn changed_settings_rewrite_the_config_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let systemd = FakeSystemd::new();
        let mut cfg = config(dir.path(), "1.0.0");
        run(&cfg, &RealFs, &systemd).await.unwrap();
        cfg.agent.etcd_endpoints = vec!["http://10.0.0.2:2379".into()];
        let s = run(&cfg, &RealFs, &systemd).await.unwrap();
        assert_eq!(s.config, FileAction::Written);
        assert_eq!(s.agent.action, AgentAction::Restarted);
    }

    #[tokio::test]
    async fn an_agent_started_before_its_switch_is_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let systemd = FakeSystemd::new();
        let cfg = config(dir.path(), "1.0.0");
        run(&cfg, &RealFs, &systemd).await.unwrap();
        // As if the agent had been started long ago, before `current` was switched.
        systemd.lock().active_enter_usec = 1;
        let s = run(&cfg, &RealFs, &systemd).await.unwrap();
        assert_eq!(s.agent.action, AgentAction::Restarted);
    }

    #[tokio::test]
    async fn an_image_not_pinned_by_digest_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), "1.0.0");
        cfg.image = Some("registry:5000/baton/bundle:1.0.0".into());
        let systemd = FakeSystemd::new();
        let err = run(&cfg, &RealFs, &systemd).await.unwrap_err();
        assert!(err.to_string().starts_with("--image: "), "{err}");
        assert!(!cfg.host_root.exists());
        assert!(systemd.calls().is_empty());
    }

    #[tokio::test]
    async fn a_bundle_installing_outside_the_allow_list_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), "1.0.0");
        // The test bundle installs under /usr/local/bin and /boot.
        cfg.agent.install.allow = vec!["/opt/".into(), "/boot/".into()];
        let systemd = FakeSystemd::new();
        let err = run(&cfg, &RealFs, &systemd).await.unwrap_err();
        let err = err.to_string();
        assert!(err.contains("manifest.json"), "{err}");
        assert!(err.contains(".dest"), "{err}");
        assert!(err.contains("outside the install allow-list"), "{err}");
        assert!(!cfg.host_root.exists());
        assert!(systemd.calls().is_empty());
    }

    #[tokio::test]
    async fn bad_settings_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), "1.0.0");
        cfg.agent.prefix = "no-slash".into();
        let systemd = FakeSystemd::new();
        let err = run(&cfg, &RealFs, &systemd).await.unwrap_err();
        assert!(err.to_string().contains("prefix"), "{err}");
        assert!(!cfg.host_root.exists());
        assert!(systemd.calls().is_empty());
    }
}
