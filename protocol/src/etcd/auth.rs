//! Applying [`super::identity`]'s roles to etcd: what the orchestrator's administrative
//! identity (a user with etcd's `root` role, the only one etcd lets manage users) does when
//! it starts, issues a host's credential (making its identity the first time) and removes a
//! host. Every
//! operation is idempotent, so a retried registration or a second replica changes nothing.

use etcd_client::{Client, Permission, RoleRevokePermissionOptions};

use super::EtcdError;
use super::identity::{
    Access, Credential, ETCD_ROOT_ROLE, Grant, ORCHESTRATOR_ROLE, READER_ROLE, host_grants,
    host_user, maintenance_user, orchestrator_grants, orchestrator_host_grants, reader_grants,
};
use crate::{HostId, Keyspace};

fn permission(grant: &Grant) -> Permission {
    let p = match grant.access {
        Access::Read => Permission::read(grant.key.as_bytes()),
        Access::Write => Permission::write(grant.key.as_bytes()),
        Access::ReadWrite => Permission::read_write(grant.key.as_bytes()),
    };
    if grant.prefix { p.with_prefix() } else { p }
}

/// etcd answered that what is being created exists, or what is being removed does not.
fn is_benign(error: &etcd_client::Error) -> bool {
    let text = error.to_string();
    text.contains("already exists") || text.contains("not found") || text.contains("not granted")
}

fn tolerate<T>(
    result: Result<T, etcd_client::Error>,
    op: &'static str,
    name: &str,
) -> Result<(), EtcdError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_benign(&e) => Ok(()),
        Err(source) => Err(EtcdError::Request {
            op,
            key: name.to_owned(),
            source,
        }),
    }
}

/// Creates role `name` (if absent) and grants it `grants`.
pub async fn ensure_role(client: &Client, name: &str, grants: &[Grant]) -> Result<(), EtcdError> {
    tolerate(client.auth_client().role_add(name).await, "role add", name)?;
    grant_all(client, name, grants).await
}

/// Grants role `name` (which exists) `grants`, all sent at once: etcd applies them together
/// (one raft batch, rather than a round trip each), so the auth revision moves for a
/// moment rather than for as many round trips — every request in flight while it moves is
/// refused for an old auth revision.
async fn grant_all(client: &Client, name: &str, grants: &[Grant]) -> Result<(), EtcdError> {
    let granted = grants.iter().map(|grant| async move {
        client
            .auth_client()
            .role_grant_permission(name, permission(grant))
            .await
            .map_err(EtcdError::request(
                "role grant",
                format!("{name} {}", grant.key),
            ))
    });
    futures::future::try_join_all(granted).await?;
    Ok(())
}

/// Creates user `credential.user` with `role`, or sets its password if it exists with
/// another one (which ends every session opened with the old one).
pub async fn ensure_user(
    client: &Client,
    credential: &Credential,
    role: &str,
) -> Result<(), EtcdError> {
    let mut auth = client.auth_client();
    let user = credential.user.as_str();
    let added = auth
        .user_add(user, credential.password.as_str(), None)
        .await;
    match added {
        Ok(_) => {}
        Err(e) if is_benign(&e) => {
            // Exists: leave it if it signs in with this password already (changing it would
            // end its sessions, other replicas' among them). Only a refused password is
            // changed; etcd not answering is an error for the caller to retry.
            match auth
                .authenticate(user.to_owned(), credential.password.clone())
                .await
            {
                Ok(_) => {}
                Err(e) if super::is_authentication_failure(&e) => {
                    auth.user_change_password(user, credential.password.as_str())
                        .await
                        .map_err(EtcdError::request("user passwd", user))?;
                }
                Err(source) => {
                    return Err(EtcdError::Request {
                        op: "authenticate",
                        key: user.to_owned(),
                        source,
                    });
                }
            }
        }
        Err(source) => {
            return Err(EtcdError::Request {
                op: "user add",
                key: user.to_owned(),
                source,
            });
        }
    }
    auth.user_grant_role(user, role)
        .await
        .map_err(EtcdError::request("user grant-role", user))?;
    Ok(())
}

/// The orchestrator's and the reader's roles (the orchestrator's per-host permissions come
/// with each host, [`issue_host_credential`]).
pub async fn ensure_roles(client: &Client, keyspace: &Keyspace) -> Result<(), EtcdError> {
    ensure_role(client, ORCHESTRATOR_ROLE, &orchestrator_grants(keyspace)).await?;
    ensure_role(client, READER_ROLE, &reader_grants(keyspace)).await
}

/// Gives `host` its role and a user with `password` (replacing any previous password, so
/// this is also how a host's credential is rotated), and lets the orchestrator's role write
/// the host's `spec`, `desired` and `maintenance`.
pub async fn issue_host_credential(
    client: &Client,
    keyspace: &Keyspace,
    host: &HostId,
    password: String,
) -> Result<Credential, EtcdError> {
    let user = host_user(host);
    // The host's role and the orchestrator's permissions side by side; the user last, so a
    // host whose user exists has the rest ([`user_exists`]).
    futures::future::try_join(
        ensure_role(client, &user, &host_grants(keyspace, host)),
        grant_orchestrator_host_keys(client, keyspace, host),
    )
    .await?;
    let credential = Credential { user, password };
    ensure_user(client, &credential, &credential.user).await?;
    Ok(credential)
}

/// Lets the orchestrator's role (made when the orchestrator starts, [`ensure_roles`]) write
/// `host`'s `spec`, `desired` and `maintenance`.
pub async fn grant_orchestrator_host_keys(
    client: &Client,
    keyspace: &Keyspace,
    host: &HostId,
) -> Result<(), EtcdError> {
    grant_all(
        client,
        ORCHESTRATOR_ROLE,
        &orchestrator_host_grants(keyspace, host),
    )
    .await
}

/// Gives `host` (registered as running a member of the cluster) its maintenance user, with
/// etcd's `root` role and `password` (replacing any previous one).
pub async fn issue_maintenance_credential(
    client: &Client,
    host: &HostId,
    password: String,
) -> Result<Credential, EtcdError> {
    let credential = Credential {
        user: maintenance_user(host),
        password,
    };
    ensure_user(client, &credential, ETCD_ROOT_ROLE).await?;
    Ok(credential)
}

/// Whether etcd has user `user` (a host's user exists once its first credential was
/// issued: [`issue_host_credential`] makes it last, after its role and permissions).
pub async fn user_exists(client: &Client, user: &str) -> Result<bool, EtcdError> {
    let got = super::retry_auth_race(|| async { client.auth_client().user_get(user).await }).await;
    match got {
        Ok(_) => Ok(true),
        Err(e) if e.to_string().contains("not found") => Ok(false),
        Err(source) => Err(EtcdError::Request {
            op: "user get",
            key: user.to_owned(),
            source,
        }),
    }
}

/// Deletes `host`'s maintenance user, if it has one (its sessions end at once).
pub async fn remove_maintenance_user(client: &Client, host: &HostId) -> Result<(), EtcdError> {
    let user = maintenance_user(host);
    let deleted = client.auth_client().user_delete(user.as_str()).await;
    tolerate(deleted, "user delete", &user)
}

/// Deletes `host`'s user and role and its maintenance user (their sessions end at once),
/// and the orchestrator role's permissions on its keys.
pub async fn remove_host_identity(
    client: &Client,
    keyspace: &Keyspace,
    host: &HostId,
) -> Result<(), EtcdError> {
    remove_maintenance_user(client, host).await?;
    let mut auth = client.auth_client();
    let user = host_user(host);
    tolerate(auth.user_delete(user.as_str()).await, "user delete", &user)?;
    tolerate(auth.role_delete(user.as_str()).await, "role delete", &user)?;
    for grant in orchestrator_host_grants(keyspace, host) {
        let revoked = auth
            .role_revoke_permission(
                ORCHESTRATOR_ROLE,
                grant.key.as_bytes(),
                None::<RoleRevokePermissionOptions>,
            )
            .await;
        tolerate(revoked, "role revoke", &grant.key)?;
    }
    Ok(())
}
