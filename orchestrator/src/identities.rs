//! The etcd identities the orchestrator manages (docs/security.md, "etcd identities").
//!
//! With `--etcd-admin-credential-file` the orchestrator holds a second etcd identity, a user
//! with etcd's `root` role — etcd lets only `root` manage users and roles — and uses it for
//! nothing but this module: at start, the roles and the orchestrator's own everyday user
//! (`--etcd-credential-file`, created with a fresh password if the file is missing); at
//! registration, the host's `spec` written (the orchestrator's role may not write it yet),
//! and the removal of the maintenance user of a host registered again as no longer running
//! a member of the cluster; at a downloader job, whether the host needs a credential (its
//! agent is not alive, or it has no user yet) and then the host's user and role (made by its
//! first job) and a fresh password for the host (and, for a host registered as running a
//! member of the cluster, for its maintenance user, which has etcd's `root` role), delivered
//! in the job's container and never stored in etcd; at removal, the deletion of the host's
//! users and role.
//!
//! The changes this replica makes to etcd's users and roles go one operation at a time
//! (each operation here that makes any holds [`Identities`]' change lock): etcd 3.4 hashes a
//! new password in its apply loop, and refuses a lease renewal once that loop is more than a
//! second behind ("waiting for the applied index took too long"). Made side by side — a
//! fleet's first upgrade makes every host's identity, one per downloader job, up to the
//! download concurrency at once — dozens of hashes queued there, every lease renewal was
//! refused for seconds, and the leader's own lease lapsed: the new leadership ran again the
//! downloader jobs whose outcome was not recorded yet. One operation at a time, the loop
//! holds at most one hash from here. Within one, the grants to a role are sent together
//! ([`auth::issue_host_credential`]): it takes four round trips, not thirteen.
//!
//! Registration changes etcd's users and roles only for that rare removal: every such change
//! makes etcd rebuild its permission caches (work that grows with the users and permissions
//! it holds), so a registration that made one would cost more with every host registered.
//! The host's identity, with the orchestrator role's permissions on its keys, is made by its
//! first downloader job, which delivers the credential anyway. Everything else the
//! orchestrator does goes through
//! its everyday identity, whose role cannot write a host's `alive`, `status` or `installed`
//! nor manage users.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_protocol::HostId;
use baton_protocol::durable::{self, DurableError};
use baton_protocol::etcd::identity::{
    CredentialError, ORCHESTRATOR_ROLE, host_user, maintenance_user,
};
use baton_protocol::etcd::{self, Client, Credential, EtcdError, EtcdTls, auth};
use baton_protocol::keys::{HostKey, Keyspace};
use etcd_client::GetOptions;
use rand::RngCore;
use tokio::sync::Mutex;

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

/// Which new credentials a downloader job carries ([`Identities::needed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needed {
    /// A new password for the host's user.
    pub credential: bool,
    /// A new password for the host's maintenance user.
    pub maintenance: bool,
}

/// How long an administrative session is used before signing in again: well within etcd's
/// token lifetime (`--auth-token-ttl`, 300 s by default), so a session kept while unused
/// never meets an expired token; signing in costs etcd a bcrypt check, far more than a
/// registration's write, so registrations in a row share one.
const ADMIN_SESSION_REUSE: Duration = Duration::from_secs(60);

/// The administrative identity and what it does, through a session signed in at most
/// [`ADMIN_SESSION_REUSE`] ago. Clones share the session and the change lock.
#[derive(Clone)]
pub struct Identities {
    endpoints: Vec<String>,
    tls: Option<EtcdTls>,
    admin: Credential,
    keyspace: Keyspace,
    session: Arc<Mutex<Option<(Client, Instant)>>>,
    /// Held through every operation that changes etcd's users or roles: one at a time (the
    /// module's header says why).
    changes: Arc<Mutex<()>>,
    /// The users this replica made or found, so a downloader job for a host with an alive
    /// agent asks etcd for nothing but its `alive` key ([`Self::needed`]).
    known_users: Arc<std::sync::Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl Identities {
    /// Manages identities as `admin` on etcd at `endpoints`.
    pub fn new(
        endpoints: Vec<String>,
        tls: Option<EtcdTls>,
        admin: Credential,
        keyspace: Keyspace,
    ) -> Self {
        Self {
            endpoints,
            tls,
            admin,
            keyspace,
            session: Arc::default(),
            changes: Arc::default(),
            known_users: Arc::default(),
        }
    }

    /// A session as the administrative user, with the first member that answers (a client
    /// of every member would send some of the operation's requests to one that is down),
    /// signed in again once the last is [`ADMIN_SESSION_REUSE`] old.
    pub async fn admin(&self) -> Result<Client, EtcdError> {
        let mut session = self.session.lock().await;
        if let Some((client, since)) = session.as_ref()
            && since.elapsed() < ADMIN_SESSION_REUSE
        {
            return Ok(client.clone());
        }
        let client =
            etcd::connect_first_answering(&self.endpoints, self.tls.as_ref(), Some(&self.admin))
                .await?;
        *session = Some((client.clone(), Instant::now()));
        Ok(client)
    }

    /// `result` of work done through [`Self::admin`]'s session, which is forgotten when it
    /// failed (etcd may have lost its token, a member restarted): the next signs in afresh.
    pub async fn checked<T>(&self, result: Result<T, EtcdError>) -> Result<T, EtcdError> {
        if result.is_err() {
            self.forget().await;
        }
        result
    }

    /// Forgets the session: the next operation signs in afresh.
    pub async fn forget(&self) {
        *self.session.lock().await = None;
    }

    /// The roles, and the orchestrator's own user with `own`'s password (idempotent: a
    /// user that already authenticates with it is left alone, so other replicas' sessions
    /// go on).
    pub async fn prepare(&self, own: &Credential) -> Result<(), EtcdError> {
        let _changing = self.changes.lock().await;
        let admin = self.admin().await?;
        let done = async {
            auth::ensure_roles(&admin, &self.keyspace).await?;
            auth::ensure_user(&admin, own, ORCHESTRATOR_ROLE).await
        };
        self.checked(done.await).await
    }

    /// The orchestrator role's permission to write the host's `spec`, `desired` and
    /// `maintenance`, ahead of the host's first downloader job (a maintenance mode set on a
    /// host registered but never upgraded).
    pub async fn grant_host_keys(&self, host: &HostId) -> Result<(), EtcdError> {
        let _changing = self.changes.lock().await;
        let admin = self.admin().await?;
        let done = auth::grant_orchestrator_host_keys(&admin, &self.keyspace, host).await;
        self.checked(done).await
    }

    /// Removes the maintenance user of `host` (registered again as no longer running a
    /// member of the cluster), if it has one.
    pub async fn remove_maintenance(&self, host: &HostId) -> Result<(), EtcdError> {
        let _changing = self.changes.lock().await;
        let admin = self.admin().await?;
        // Forgotten first: if the removal fails half-way, the next job asks etcd.
        self.learn(&maintenance_user(host), false);
        let done = auth::remove_maintenance_user(&admin, host).await;
        self.checked(done).await
    }

    /// Which new credentials a downloader job for `host` must carry: a credential is issued
    /// only to a host whose agent is not alive (a host being installed, replaced or
    /// reinstalled, or one that lost its credential) or whose user does not exist yet. An
    /// alive agent signed in with the credential its host holds, so that one still works and
    /// is kept: issuing a password costs etcd a bcrypt hash in its apply loop and a new auth
    /// revision, which fails every request in flight. The maintenance credential (for a
    /// `member` host) follows the same rule.
    pub async fn needed(&self, host: &HostId, member: bool) -> Result<Needed, EtcdError> {
        let admin = self.admin().await?;
        let done = async {
            let alive_key = self.keyspace.host(host, HostKey::Alive);
            // Sent again when refused for an identity change in flight (another job's, or
            // another replica's): nothing was read.
            let alive = etcd::retry_auth_race(|| async {
                admin
                    .kv_client()
                    .get(
                        alive_key.as_str(),
                        Some(GetOptions::new().with_count_only()),
                    )
                    .await
            })
            .await
            .map_err(|source| EtcdError::Request {
                op: "get",
                key: alive_key.clone(),
                source,
            })?
            .count()
                > 0;
            let credential = !alive || !self.user_exists(&admin, &host_user(host)).await?;
            let maintenance =
                member && (!alive || !self.user_exists(&admin, &maintenance_user(host)).await?);
            Ok(Needed {
                credential,
                maintenance,
            })
        };
        self.checked(done.await).await
    }

    /// Whether etcd has `user`: known if this replica made or found it before. A user
    /// removed since by another replica (its host removed) is still taken to be there; its
    /// agent's sessions ended with it, so that host's `alive` lapses within its lease's TTL,
    /// and a job after that issues a credential anyway.
    async fn user_exists(&self, admin: &Client, user: &str) -> Result<bool, EtcdError> {
        if self.known(user) {
            return Ok(true);
        }
        let exists = auth::user_exists(admin, user).await?;
        if exists {
            self.learn(user, true);
        }
        Ok(exists)
    }

    fn known(&self, user: &str) -> bool {
        self.known_users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(user)
    }

    /// Records that `user` exists (or no longer does).
    fn learn(&self, user: &str, exists: bool) {
        let mut known = self
            .known_users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if exists {
            known.insert(user.to_owned());
        } else {
            known.remove(user);
        }
    }

    /// A fresh password for `host` (ending the sessions opened with the previous one), for
    /// its downloader job to deliver, with the host's user and role and the orchestrator
    /// role's permissions on its keys (made by the host's first job, confirmed by the next).
    pub async fn issue(&self, host: &HostId) -> Result<Credential, EtcdError> {
        let _changing = self.changes.lock().await;
        let admin = self.admin().await?;
        let done =
            auth::issue_host_credential(&admin, &self.keyspace, host, fresh_password()).await;
        let credential = self.checked(done).await?;
        self.learn(&credential.user, true);
        Ok(credential)
    }

    /// A fresh password for the maintenance user of `host` (a host running a member of the
    /// cluster), for its downloader job to deliver.
    pub async fn issue_maintenance(&self, host: &HostId) -> Result<Credential, EtcdError> {
        let _changing = self.changes.lock().await;
        let admin = self.admin().await?;
        let done = auth::issue_maintenance_credential(&admin, host, fresh_password()).await;
        let credential = self.checked(done).await?;
        self.learn(&credential.user, true);
        Ok(credential)
    }

    /// Deletes the host's user and role (its agent's sessions end at once) and the
    /// orchestrator role's permissions on its keys.
    pub async fn remove(&self, host: &HostId) -> Result<(), EtcdError> {
        let _changing = self.changes.lock().await;
        let admin = self.admin().await?;
        self.learn(&host_user(host), false);
        self.learn(&maintenance_user(host), false);
        let done = auth::remove_host_identity(&admin, &self.keyspace, host).await;
        self.checked(done).await
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_missing_own_credential_is_made_root_only_only_when_the_orchestrator_manages_users() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("etcd-credential");
        let err = own_credential(&path, false).expect_err("not made without the admin identity");
        assert!(err.to_string().contains("etcd-credential"), "{err}");
        assert!(!path.exists());

        let made = own_credential(&path, true).expect("made");
        assert_eq!(made.user, ORCHESTRATOR_ROLE);
        assert_eq!(made.password.len(), PASSWORD_BYTES * 2);
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Read back as it is, every start.
        assert_eq!(own_credential(&path, true).expect("read"), made);
        assert_ne!(fresh_password(), fresh_password());
    }
}
