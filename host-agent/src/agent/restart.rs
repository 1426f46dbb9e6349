//! `restart` asked by `desired`, and the check of the managed services after a reboot:
//! the daemons and platform containers of the installed bundle, each restarted (for
//! `restart`) and checked. Nothing is reinstalled.

use baton_protocol::documents::{self, Desired};
use baton_protocol::{HostState, UpgradeId};

use super::{Agent, AgentError, ServicesError, blocking};
use crate::apply;
use crate::journal::{Journal, Outcome, Previous};
use crate::report::Reporter;

impl Agent {
    /// The managed components of the installed bundle `version`, in apply order: each is
    /// restarted first when `restart`, then checked (its unit active, its container running,
    /// its health checks).
    pub(super) async fn managed_services(
        &self,
        version: &str,
        id: &UpgradeId,
        restart: bool,
    ) -> Result<(), ServicesError> {
        let manifest = self.manifest(version)?;
        let ops = self.ops.clone();
        let ctx = self.context(version, id);
        blocking(move || {
            for c in manifest.apply_order() {
                if restart {
                    apply::restart(ops.as_ref(), &ctx, c)?;
                }
                apply::check(ops.as_ref(), &ctx, c)?;
            }
            Ok(())
        })
        .await
    }

    /// `restart`: restarts the host's Baton-managed services (daemons and platform
    /// containers of the installed bundle) and checks them; nothing is reinstalled.
    pub(super) async fn restart_services(
        &self,
        desired: &Desired,
        reporter: &Reporter,
    ) -> Result<(), AgentError> {
        let id = &desired.upgrade_id;
        let started = documents::now();
        reporter
            .status(
                Some(id),
                HostState::Updating,
                Some("restart managed services"),
                "",
                Some(&started),
            )
            .await?;
        let installed = self.installed_now()?;
        let outcome = match installed.bundle_version.as_deref() {
            None => Err(ServicesError::NothingInstalled),
            Some(version) => self.managed_services(version, id, true).await,
        };
        // Recorded like an upgrade so a repeated `desired` is recognised as done.
        let mut done = Journal {
            upgrade_id: id.clone(),
            version: installed.bundle_version.clone().unwrap_or_default(),
            bundle_digest: None,
            started_at: started.clone(),
            previous: Previous::default(),
            steps: Vec::new(),
            rollback_reason: None,
            outcome: Some(match outcome {
                Ok(()) => Outcome::Done,
                Err(e) => Outcome::Failed {
                    reason: e.to_string(),
                },
            }),
            reboot: None,
        };
        self.keep(&mut done);
        self.report_outcome(&done, reporter).await
    }
}
