//! The etcd identities the orchestrator manages (docs/security.md, "etcd identities").
//!
//! With `--etcd-admin-credential-file` the orchestrator holds a second etcd identity, a user
//! with etcd's `root` role — etcd lets only `root` manage users and roles — and uses it for
//! nothing but this module: at start, the roles and the orchestrator's own everyday user
//! (`--etcd-credential-file`, created with a fresh password if the file is missing); at
//! registration, the host's user and role; at every downloader job, a fresh password for
//! the host, delivered in the job's container and never stored in etcd; at removal, the
//! deletion of the host's user and role. Everything else the orchestrator does goes through
//! its everyday identity, whose role cannot write a host's `alive`, `status` or `installed`
//! nor manage users.

use std::path::Path;

use baton_protocol::HostId;
use baton_protocol::durable::{self, DurableError};
use baton_protocol::etcd::identity::{CredentialError, ORCHESTRATOR_ROLE};
use baton_protocol::etcd::{Client, Credential, EtcdError, auth};
use baton_protocol::keys::Keyspace;
use rand::RngCore;

/// Random bytes in a password (hex-encoded).
const PASSWORD_BYTES: usize = 24;

/// A fresh random password: 192 bits from the operating system, hex.
pub fn fresh_password() -> String {
    let mut bytes = [0u8; PASSWORD_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The orchestrator's everyday credential from `path`; with `create`, a missing file is
/// made (mode 0600) holding user `baton-orchestrator` and a fresh password.
pub fn own_credential(path: &Path, create: bool) -> Result<Credential, IdentityError> {
    if create && !path.exists() {
        let credential = Credential {
            user: ORCHESTRATOR_ROLE.to_owned(),
            password: fresh_password(),
        };
        durable::write(path, credential.to_file_text().as_bytes(), 0o600)?;
        tracing::info!(file = %path.display(), "created the orchestrator's etcd credential file");
        return Ok(credential);
    }
    Ok(Credential::load(path)?)
}

/// An identity could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A credential file could not be read.
    #[error(transparent)]
    File(#[from] CredentialError),
    /// The credential file could not be written.
    #[error(transparent)]
    Write(#[from] DurableError),
    /// etcd refused or failed.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

/// The administrative connection and what it does.
#[derive(Clone)]
pub struct Identities {
    admin: Client,
    keyspace: Keyspace,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities").finish_non_exhaustive()
    }
}

impl Identities {
    /// Manages identities through `admin`, a client connected as the administrative user.
    pub fn new(admin: Client, keyspace: Keyspace) -> Self {
        Self { admin, keyspace }
    }

    /// The roles, and the orchestrator's own user with `own`'s password (idempotent: a
    /// user that already authenticates with it is left alone, so other replicas' sessions
    /// go on).
    pub async fn prepare(&self, own: &Credential) -> Result<(), EtcdError> {
        auth::ensure_roles(&self.admin, &self.keyspace).await?;
        auth::ensure_user(&self.admin, own, ORCHESTRATOR_ROLE).await
    }

    /// At registration: the host's user and role (with a password nobody keeps: the host
    /// gets its own from its next downloader job), and the orchestrator role's permission
    /// to write the host's `spec`, `desired` and `maintenance`.
    pub async fn register(&self, host: &HostId) -> Result<(), EtcdError> {
        auth::issue_host_credential(&self.admin, &self.keyspace, host, fresh_password())
            .await
            .map(drop)
    }

    /// A fresh password for `host` (ending the sessions opened with the previous one), for
    /// its downloader job to deliver.
    pub async fn issue(&self, host: &HostId) -> Result<Credential, EtcdError> {
        auth::issue_host_credential(&self.admin, &self.keyspace, host, fresh_password()).await
    }

    /// Deletes the host's user and role (its agent's sessions end at once) and the
    /// orchestrator role's permissions on its keys.
    pub async fn remove(&self, host: &HostId) -> Result<(), EtcdError> {
        auth::remove_host_identity(&self.admin, &self.keyspace, host).await
    }

    /// The administrative client, for deleting a removed host's own reports (which the
    /// everyday role may not touch).
    pub fn admin(&self) -> &Client {
        &self.admin
    }
}
