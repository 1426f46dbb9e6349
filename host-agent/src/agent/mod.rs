//! The agent: keep an etcd session (liveness lease + `alive`), watch this host's `desired`
//! key, and on start and on every change compare desired with what the host has and act on
//! the difference. One module per job:
//!
//! - `session.rs`: the etcd session (lease, `alive`, the watch) and its retry loop;
//! - `reconcile.rs`: desired vs journal, and the journaled upgrade (`install`, `replace`)
//!   driven with `plan::next`;
//! - `reboot.rs`: `reboot` (journaled: asked in one boot, checked and `Done` in the next);
//! - `restart.rs`: `restart` of the managed services, and their check after a reboot;
//! - `chain.rs`: a daisy chain's host waits for the host it follows;
//! - `quorum.rs`: a quorum cluster's member: the cluster checked before it goes down and
//!   after it is back, its snapshot;
//! - `soak.rs`: re-running the health checks while the upgrade soaks;
//! - `prune.rs`: removing staged bundles and backups no longer needed once an upgrade is done;
//! - `bundle.rs`: the staged bundles, used only for the version and image digest they were
//!   staged with.
//!
//! This file holds what they share: the agent, its errors, the local records it reads
//! (boot id, kernel, `installed.json`), and outcome reporting.
//!
//! Errors never end the daemon: the session is re-established with backoff.

mod bundle;
mod chain;
mod prune;
mod quorum;
mod reboot;
mod reconcile;
mod restart;
mod session;
mod soak;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use baton_protocol::agent_config::AgentConfig;
use baton_protocol::documents::{self, DocumentError, Installed};
use baton_protocol::durable::{self, DurableError};
use baton_protocol::etcd::{self, EtcdError};
use baton_protocol::keys::KeyError;
use baton_protocol::{HostState, Keyspace};

pub use self::bundle::BundleError;
use crate::apply::Context;
use crate::journal::{self, Journal, Outcome};
use crate::ops::{HostOps, OpError};
use crate::plan::Observed;
use crate::report::Reporter;

/// The `status.step` of a `reboot` until the host goes down.
const REBOOT_STEP: &str = "reboot host";

/// Something the agent could not do; the session is retried.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// etcd failed.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    /// The host's etcd credential could not be read.
    #[error(transparent)]
    Credential(#[from] baton_protocol::etcd::identity::CredentialError),
    /// The configured key prefix is invalid.
    #[error("agent config prefix: {0}")]
    Prefix(#[from] KeyError),
    /// A local file could not be read.
    #[error("read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The local record of what is installed is not valid.
    #[error(transparent)]
    Installed(#[from] DocumentError),
    /// The local record of what is installed could not be written.
    #[error("write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The step that failed.
        source: DurableError,
    },
    /// A journal step names a component the staged manifest does not have.
    #[error("component {component} is not in the bundle manifest")]
    NotInManifest {
        /// The component.
        component: String,
    },
}

/// Why the managed services could not be restarted or are not healthy.
#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    /// The installed bundle could not be read.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A service or check failed.
    #[error(transparent)]
    Op(#[from] OpError),
    /// Nothing is installed.
    #[error("no bundle is installed: nothing to restart")]
    NothingInstalled,
}

/// The agent.
pub struct Agent {
    config: AgentConfig,
    keyspace: Keyspace,
    ops: Arc<dyn HostOps>,
    /// A client shared with other agents ([`Agent::with_client`]); `None`: the agent
    /// connects as its host's identity for each session.
    shared_client: Option<etcd::Client>,
    /// The journal as the upgrade left it when the disk refused to record it: used instead
    /// of the file (which is behind it) until a write succeeds, so the upgrade that failed
    /// for it is not resumed from the older file.
    unwritten: Mutex<Option<Journal>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("host", &self.config.host_id)
            .finish_non_exhaustive()
    }
}

/// What `drive` ended with.
enum Driven {
    /// Nothing more to do until `desired` changes.
    Settled,
    /// A reboot was requested: do nothing more in this boot.
    Rebooting,
    /// A daisy chain's host waits for the host it follows: reconcile again when one of
    /// these keys (or `desired`) changes.
    Waiting(Vec<String>),
}

impl Agent {
    /// An agent for the host described by `config`, acting through `ops`.
    pub fn new(config: AgentConfig, ops: Arc<dyn HostOps>) -> Result<Self, AgentError> {
        let keyspace = Keyspace::new(&config.prefix)?;
        Ok(Self {
            config,
            keyspace,
            ops,
            shared_client: None,
            unwritten: Mutex::new(None),
        })
    }

    /// An agent like [`Agent::new`] that talks to etcd through `client`, which other agents
    /// may share (many simulated hosts in one process: `make bench`), instead of its own
    /// connection; `config`'s endpoints, TLS and credential are then not used.
    pub fn with_client(
        config: AgentConfig,
        ops: Arc<dyn HostOps>,
        client: etcd::Client,
    ) -> Result<Self, AgentError> {
        Ok(Self {
            shared_client: Some(client),
            ..Self::new(config, ops)?
        })
    }

    /// Where the components of bundle `version` are applied from, for upgrade `id`.
    fn context(&self, version: &str, id: &baton_protocol::UpgradeId) -> Context {
        Context {
            bundle_dir: self.bundle_dir(version),
            backup_dir: self.config.state_dir.join("backup").join(id.as_str()),
            container_prefix: self.config.container_prefix.clone(),
            settle: self.config.health_settle(),
            bootloader: self.config.bootloader,
            kernel_release_file: self.config.kernel_release_file.clone(),
        }
    }

    fn boot_id(&self) -> Result<String, AgentError> {
        read_trimmed(&self.config.boot_id_file)
    }

    fn observed(&self) -> Result<Observed, AgentError> {
        Ok(Observed {
            boot_id: self.boot_id()?,
            booted_kernel: read_trimmed(&self.config.kernel_release_file).ok(),
        })
    }

    fn installed_path(&self) -> PathBuf {
        self.config.state_dir.join("installed.json")
    }

    /// What the host runs, from the agent's local record, with the live agent version and
    /// kernel.
    fn installed_now(&self) -> Result<Installed, AgentError> {
        let mut installed = match std::fs::read(self.installed_path()) {
            Ok(bytes) => documents::decode::<Installed>(
                &self.installed_path().display().to_string(),
                &bytes,
            )?,
            Err(_) => Installed {
                schema_version: documents::SCHEMA_VERSION,
                bundle_version: None,
                agent_version: String::new(),
                kernel: None,
                components: Default::default(),
                updated_at: documents::now(),
            },
        };
        installed.agent_version = crate::VERSION.to_owned();
        installed.kernel = read_trimmed(&self.config.kernel_release_file).ok();
        Ok(installed)
    }

    /// The journal to go on from: the one the disk refused last (written now if it can
    /// be), else the file's.
    fn load_journal(&self) -> Result<Option<Journal>, AgentError> {
        let unwritten = self
            .unwritten
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match unwritten {
            Some(mut journal) => {
                self.keep(&mut journal);
                Ok(Some(journal))
            }
            None => Ok(journal::load(&self.config.state_dir)?),
        }
    }

    /// Writes the journal after a step. A write that fails fails the upgrade on this host
    /// ([`Journal::write_failed`]: roll back, end `Failed` naming the file) instead of the
    /// session, which would retry the same write forever; the journal is kept in memory
    /// until a later write succeeds.
    fn keep(&self, journal: &mut Journal) {
        let result = journal::save(&self.config.state_dir, journal);
        let mut unwritten = self
            .unwritten
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(()) => *unwritten = None,
            Err(e) => {
                let error = e.to_string();
                tracing::error!(upgrade = %journal.upgrade_id, %error, "journal not written: the upgrade fails on this host");
                journal.write_failed(&error);
                *unwritten = Some(journal.clone());
            }
        }
    }

    fn save_installed(&self, installed: &Installed) -> Result<(), AgentError> {
        let path = self.installed_path();
        durable::write(&path, &documents::encode(installed), journal::FILE_MODE)
            .map_err(|source| AgentError::Write { path, source })
    }

    async fn report_outcome(
        &self,
        journal: &Journal,
        reporter: &Reporter,
    ) -> Result<(), AgentError> {
        let id = Some(&journal.upgrade_id);
        let started = Some(journal.started_at.as_str());
        match &journal.outcome {
            Some(Outcome::Done) => {
                let message = done_message(journal);
                reporter
                    .installed_and_status(
                        &self.installed_now()?,
                        id,
                        HostState::Done,
                        &message,
                        started,
                    )
                    .await?;
            }
            Some(Outcome::RolledBack { reason }) => {
                reporter
                    .status(id, HostState::RolledBack, None, reason, started)
                    .await?;
            }
            Some(Outcome::Failed { reason }) => {
                reporter
                    .status(id, HostState::Failed, None, reason, started)
                    .await?;
            }
            None => {}
        }
        Ok(())
    }
}

/// What `Done` says: the version reached, that the managed services were restarted, or that
/// the host resumed after the reboot (in which boot).
fn done_message(journal: &Journal) -> String {
    match &journal.reboot {
        Some(reboot) => {
            let boots = format!(
                "boot {} (asked in boot {})",
                reboot.resumed_in.as_deref().unwrap_or("?"),
                reboot.requested_in.as_deref().unwrap_or("?")
            );
            if journal.version.is_empty() {
                format!("resumed after the reboot in {boots}; no bundle installed")
            } else {
                format!(
                    "resumed after the reboot in {boots}; managed services of {} healthy",
                    journal.version
                )
            }
        }
        None if journal.steps.is_empty() => {
            format!("managed services of {} restarted", journal.version)
        }
        None => format!("on {}", journal.version),
    }
}

/// Runs blocking host work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn read_trimmed(path: &Path) -> Result<String, AgentError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| AgentError::Read {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use baton_protocol::UpgradeId;

    use super::*;
    use crate::journal::{Previous, Step, StepState};
    use crate::ops::RecordingHost;

    fn agent(state_dir: &Path) -> Agent {
        let text = format!(
            "host_id = \"h1\"\netcd_endpoints = [\"http://127.0.0.1:2379\"]\nstate_dir = {:?}\n",
            state_dir.display().to_string()
        );
        let config = AgentConfig::parse(Path::new("agent.toml"), &text).expect("config");
        Agent::new(config, Arc::new(RecordingHost::default())).expect("agent")
    }

    fn applying() -> Journal {
        Journal {
            upgrade_id: UpgradeId::new("u1").expect("id"),
            version: "2.0.0".into(),
            bundle_digest: None,
            started_at: "t".into(),
            previous: Previous::default(),
            steps: vec![Step {
                component: "hello".into(),
                kind: baton_protocol::manifest::ComponentKind::File,
                state: StepState::Applying,
                existed: Default::default(),
                previous_image: None,
            }],
            rollback_reason: None,
            outcome: None,
            reboot: None,
        }
    }

    #[test]
    fn a_journal_the_disk_refuses_fails_the_upgrade_and_is_written_once_the_disk_allows() {
        let dir = tempfile::tempdir().expect("tmp");
        // The state folder's path is taken by a file: every write of the journal fails.
        let state_dir = dir.path().join("baton");
        std::fs::write(&state_dir, "").expect("block the state folder");
        let agent = agent(&state_dir);

        let mut journal = applying();
        agent.keep(&mut journal);
        let reason = journal.rollback_reason.clone().expect("rolls back");
        assert!(
            reason.contains(&journal::path(&state_dir).display().to_string()),
            "{reason}"
        );
        // Not the file's (it cannot even be read): the journal as the failure left it.
        assert_eq!(agent.load_journal().expect("load"), Some(journal.clone()));

        // The disk allows again: the next reconcile writes it, and the file is the truth.
        std::fs::remove_file(&state_dir).expect("unblock");
        std::fs::create_dir(&state_dir).expect("state folder");
        assert_eq!(agent.load_journal().expect("load"), Some(journal.clone()));
        assert_eq!(
            journal::load(&state_dir).expect("read"),
            Some(journal.clone())
        );
        assert!(agent.unwritten.lock().expect("lock").is_none());
        assert_eq!(agent.load_journal().expect("load"), Some(journal));
    }
}
