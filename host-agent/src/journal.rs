//! The upgrade journal: one durable file per host (`<state_dir>/journal.json`) recording
//! each step before and after it is done, so a killed agent or a rebooted host resumes the
//! upgrade where it was and never applies a step twice with a different outcome.
//!
//! It also holds what the host ran before the upgrade, which is what a rollback restores.
//! A `reboot` asked by `desired` is journaled the same way (no steps, [`HostReboot`]): the
//! boot it was asked in is recorded before the reboot is requested, so the agent that starts
//! in the next boot knows the reboot happened and only checks the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use baton_protocol::UpgradeId;
use baton_protocol::durable::{self, DurableError};
use baton_protocol::manifest::ComponentKind;
use serde::{Deserialize, Serialize};

/// Where a step stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// Previous files were backed up and applying began; re-applying is safe.
    Applying,
    /// Applied; health checks (or the reboot, for a kernel) are next.
    Applied,
    /// A reboot into the new kernel was requested during boot `boot_id`.
    Rebooting {
        /// The boot the reboot was requested from.
        boot_id: String,
    },
    /// Applied and healthy.
    Verified,
    /// Restored to the previous version.
    RolledBack,
}

/// One component's step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The component's name in the manifest.
    pub component: String,
    /// Its kind.
    pub kind: ComponentKind,
    /// Where it stands.
    pub state: StepState,
    /// Whether each destination existed before (dest → existed), recorded at backup.
    #[serde(default)]
    pub existed: BTreeMap<String, bool>,
    /// For containers: the ID of the image the service container ran before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_image: Option<String>,
}

/// How the upgrade ended on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Every component is on the new version and healthy.
    Done,
    /// Something failed and every component was restored.
    RolledBack {
        /// What failed.
        reason: String,
    },
    /// Something failed and could not be undone.
    Failed {
        /// What failed.
        reason: String,
    },
}

/// A reboot of the host asked by `desired` (action `reboot`); nothing is installed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReboot {
    /// The boot during which the reboot was requested; `None` until it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_in: Option<String>,
    /// The boot the host came back in, once the agent saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_in: Option<String>,
}

/// What the host ran before the upgrade.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previous {
    /// The bundle version, if any.
    pub bundle_version: Option<String>,
    /// Component → version.
    pub components: BTreeMap<String, String>,
    /// The running kernel release.
    pub kernel: Option<String>,
}

/// The journal of one upgrade on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The upgrade.
    pub upgrade_id: UpgradeId,
    /// Target bundle version.
    pub version: String,
    /// The image digest the bundle must have been staged from (`desired.bundle`'s); absent
    /// for a `reboot` and in journals of agents before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_digest: Option<String>,
    /// When the agent started on it.
    pub started_at: String,
    /// What ran before.
    pub previous: Previous,
    /// One step per component, in apply order.
    pub steps: Vec<Step>,
    /// Set when a step failed: every applied step is rolled back, newest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_reason: Option<String>,
    /// Set when the upgrade ended on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Set for a `reboot` (then `steps` is empty and `version` is the installed bundle's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot: Option<HostReboot>,
}

impl Journal {
    /// A write of this journal failed (`error`, naming the file: a full disk, a read-only
    /// one). The failure is the upgrade's on this host, never the agent's to retry: a step
    /// that cannot be recorded must not be the start of more steps. Before an outcome,
    /// every applied step rolls back (`plan::next` follows `rollback_reason`) and a reboot
    /// is not asked (its boot could not be recorded); an end that cannot be written is
    /// `Failed`, naming the write, since the file on disk no longer says where the host
    /// stands. `Done` stays: the host runs the new version, its `installed.json` says so,
    /// and finishing again from an older journal only confirms it.
    pub fn write_failed(&mut self, error: &str) {
        match &self.outcome {
            None if self.reboot.is_some() => {
                self.outcome = Some(Outcome::Failed {
                    reason: error.to_owned(),
                });
            }
            None => {
                self.rollback_reason.get_or_insert_with(|| error.to_owned());
            }
            Some(Outcome::Done) => {}
            Some(Outcome::RolledBack { reason } | Outcome::Failed { reason }) => {
                let reason = if reason.contains(error) {
                    reason.clone()
                } else if reason.is_empty() {
                    error.to_owned()
                } else {
                    format!("{reason}; {error}")
                };
                self.outcome = Some(Outcome::Failed { reason });
            }
        }
    }
}

/// The journal file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be read.
    #[error("journal {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a journal (or one could not be encoded).
    #[error("journal {}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The file could not be written durably.
    #[error("journal {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The step that failed.
        source: DurableError,
    },
}

/// The journal's file.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("journal.json")
}

/// Reads the journal, if there is one.
pub fn load(state_dir: &Path) -> Result<Option<Journal>, JournalError> {
    let path = path(state_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| JournalError::Json { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(JournalError::Read { path, source }),
    }
}

/// Writes the journal durably (`baton_protocol::durable`: temp file, fsync, rename, fsync
/// the folder). An fsync error is fatal for the step that wanted the write.
pub fn save(state_dir: &Path, journal: &Journal) -> Result<(), JournalError> {
    let path = path(state_dir);
    let bytes = match serde_json::to_vec_pretty(journal) {
        Ok(bytes) => bytes,
        Err(source) => return Err(JournalError::Json { path, source }),
    };
    durable::write(&path, &bytes, FILE_MODE).map_err(|source| JournalError::Write { path, source })
}

/// Mode of the agent's own state files (journal, installed record).
pub const FILE_MODE: u32 = 0o644;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().expect("tmp");
        assert_eq!(load(dir.path()).expect("load"), None);
        let j = Journal {
            upgrade_id: UpgradeId::new("u1").expect("id"),
            version: "2.0.0".into(),
            bundle_digest: None,
            started_at: "t".into(),
            previous: Previous::default(),
            steps: vec![Step {
                component: "k".into(),
                kind: ComponentKind::Kernel,
                state: StepState::Rebooting {
                    boot_id: "b1".into(),
                },
                existed: BTreeMap::new(),
                previous_image: None,
            }],
            rollback_reason: None,
            outcome: None,
            reboot: None,
        };
        save(dir.path(), &j).expect("save");
        assert_eq!(load(dir.path()).expect("load"), Some(j));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, ["journal.json"]);
    }

    #[test]
    fn a_reboot_is_journaled_with_the_boot_it_was_asked_in() {
        let dir = tempfile::tempdir().expect("tmp");
        let j = Journal {
            upgrade_id: UpgradeId::new("restart-h1-1").expect("id"),
            version: "1.0.0".into(),
            bundle_digest: None,
            started_at: "t".into(),
            previous: Previous::default(),
            steps: Vec::new(),
            rollback_reason: None,
            outcome: None,
            reboot: Some(HostReboot {
                requested_in: Some("b1".into()),
                resumed_in: None,
            }),
        };
        save(dir.path(), &j).expect("save");
        let text = std::fs::read_to_string(path(dir.path())).expect("read");
        assert!(text.contains(r#""requested_in": "b1""#), "{text}");
        assert!(!text.contains("resumed_in"), "{text}");
        assert_eq!(load(dir.path()).expect("load"), Some(j));
        // Journals written before reboots existed still read.
        std::fs::write(
            path(dir.path()),
            r#"{"upgrade_id":"u1","version":"2.0.0","started_at":"t","previous":{"bundle_version":null,"components":{},"kernel":null},"steps":[]}"#,
        )
        .expect("write");
        assert_eq!(load(dir.path()).expect("load").and_then(|j| j.reboot), None);
    }

    fn journal(steps: &[StepState]) -> Journal {
        Journal {
            upgrade_id: UpgradeId::new("u1").expect("id"),
            version: "2.0.0".into(),
            bundle_digest: None,
            started_at: "t".into(),
            previous: Previous::default(),
            steps: steps
                .iter()
                .enumerate()
                .map(|(i, state)| Step {
                    component: format!("c{i}"),
                    kind: ComponentKind::File,
                    state: state.clone(),
                    existed: BTreeMap::new(),
                    previous_image: None,
                })
                .collect(),
            rollback_reason: None,
            outcome: None,
            reboot: None,
        }
    }

    const FULL: &str = "journal /var/lib/baton/journal.json: write /var/lib/baton/.baton-tmp-journal.json-1: No space left on device (os error 28)";

    #[test]
    fn a_journal_that_cannot_be_written_rolls_back_and_ends_failed_naming_the_file() {
        use crate::plan::{self, Action, Observed};
        let observed = Observed {
            boot_id: "b1".into(),
            booted_kernel: None,
        };
        // Nothing applied yet: nothing to undo, the upgrade ends at once.
        let mut fresh = journal(&[StepState::Pending, StepState::Pending]);
        fresh.write_failed(FULL);
        assert_eq!(fresh.rollback_reason.as_deref(), Some(FULL));
        assert_eq!(
            plan::next(&fresh, &observed, |_| None),
            Action::FinishRolledBack
        );
        // Mid-upgrade: the applied steps are undone, newest first.
        let mut mid = journal(&[StepState::Verified, StepState::Applying]);
        mid.write_failed(FULL);
        assert_eq!(plan::next(&mid, &observed, |_| None), Action::RollBack(1));
        // A failure already rolling back keeps its reason.
        let mut failing = journal(&[StepState::Applied]);
        failing.rollback_reason = Some("check c0: unhealthy".into());
        failing.write_failed(FULL);
        assert_eq!(
            failing.rollback_reason.as_deref(),
            Some("check c0: unhealthy")
        );
        // An end that cannot be written is Failed, naming the write once.
        let mut ended = journal(&[StepState::RolledBack]);
        ended.outcome = Some(Outcome::RolledBack {
            reason: "check c0: unhealthy".into(),
        });
        ended.write_failed(FULL);
        ended.write_failed(FULL);
        assert_eq!(
            ended.outcome,
            Some(Outcome::Failed {
                reason: format!("check c0: unhealthy; {FULL}")
            })
        );
        let mut refused = journal(&[StepState::RolledBack]);
        refused.outcome = Some(Outcome::RolledBack {
            reason: FULL.into(),
        });
        refused.write_failed(FULL);
        assert_eq!(
            refused.outcome,
            Some(Outcome::Failed {
                reason: FULL.into()
            })
        );
        // Done stays Done: the host runs the new version and its record says so.
        let mut done = journal(&[StepState::Verified]);
        done.outcome = Some(Outcome::Done);
        done.write_failed(FULL);
        assert_eq!(done.outcome, Some(Outcome::Done));
        // A reboot whose boot cannot be recorded is not asked.
        let mut reboot = journal(&[]);
        reboot.reboot = Some(HostReboot::default());
        reboot.write_failed(FULL);
        assert_eq!(
            reboot.outcome,
            Some(Outcome::Failed {
                reason: FULL.into()
            })
        );
        assert!(matches!(
            plan::next(&reboot, &observed, |_| None),
            Action::Report(_)
        ));
    }

    #[test]
    fn corrupt_journal_names_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(path(dir.path()), "{").expect("write");
        let err = load(dir.path()).expect_err("corrupt");
        assert!(err.to_string().contains("journal.json"), "{err}");
    }
}
