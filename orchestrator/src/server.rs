//! One orchestrator replica: the REST API on its listener and the leader election (whose
//! winner runs the upgrade engine), until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use baton_protocol::Keyspace;
use baton_protocol::etcd::{self, Client, Credential, EtcdTls};
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::api::gate::WebPolicy;
use crate::api::{self, AppState, Policy};
use crate::auth;
use crate::config::{Config, ConfigError};
use crate::engine::{EngineConfig, Exit};
use crate::identities::{self, Identities, IdentityError};
use crate::leader::{self, Campaign, Role};
use crate::listen::{self, ApiTransport};
use crate::metrics::Counters;
use crate::resolve::{DockerResolver, Resolver};
use crate::trust::Bundles;
use crate::validate::HostPolicy;

/// Longest pause between attempts to connect to etcd at start.
const MAX_CONNECT_BACKOFF: Duration = Duration::from_secs(10);

/// The replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration (names the flag).
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The admin token file could not be used.
    #[error(transparent)]
    AdminToken(#[from] auth::token::BootstrapError),
    /// The etcd identities could not be set up.
    #[error("etcd identities: {0}")]
    Identity(#[from] IdentityError),
    /// The listen address could not be bound or served.
    #[error("REST API on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Binds `--listen` and runs until `shutdown` resolves (or it handed the leadership over to
/// a new version of itself).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let listener = bind(config.listen).map_err(|source| RunError::Listen {
        addr: config.listen.to_string(),
        source,
    })?;
    serve(config, listener, None, shutdown).await
}

/// Listens on `addr` with `SO_REUSEPORT`, so that during a self-update the new version
/// (started with the same `--listen`, on the host's network) serves the same address while
/// this process still does; the kernel shares connections between the two until this one
/// exits.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Runs on `listener` until `shutdown` resolves. `resolver` replaces the Docker-based bundle
/// resolver (embedding, tests).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    resolver: Option<Arc<dyn Resolver>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let keyspace = Keyspace::new(&config.prefix).map_err(ConfigError::from)?;
    let transport = config.api_transport(config.listen)?;
    let acceptor = match &transport {
        ApiTransport::Tls {
            cert_file,
            key_file,
            client_ca_file,
        } => Some(
            listen::acceptor(cert_file, key_file, client_ca_file.as_deref())
                .map_err(ConfigError::from)?,
        ),
        ApiTransport::PlainLoopback => None,
    };
    let docker = config.docker_endpoint()?;
    let tls = config.etcd_tls().map_err(ConfigError::from)?;
    config.agent_tls().map_err(ConfigError::from)?;
    config.agent_install()?;
    let trust = config.bundle_trust()?;
    if trust.keys().is_empty() {
        tracing::warn!("no --trusted-key: every bundle will be refused until one is trusted");
    }
    let docker_tcp = config.docker_tcp().map_err(ConfigError::from)?;
    let hosts = HostPolicy::new(&docker_tcp, config.path_map_roots()?);
    let addr = listener.local_addr().map_err(|source| RunError::Listen {
        addr: config.listen.to_string(),
        source,
    })?;
    let replica = config.replica_name();
    let resolver =
        resolver.unwrap_or_else(|| Arc::new(DockerResolver::new(docker, docker_tcp.clone())));
    tokio::pin!(shutdown);
    let admin_credential = config
        .etcd_admin_credential_file
        .as_deref()
        .map(Credential::load)
        .transpose()
        .map_err(IdentityError::from)?;
    let own = config
        .etcd_credential_file
        .as_deref()
        .map(|f| identities::own_credential(f, admin_credential.is_some()))
        .transpose()?;
    let identities = match (admin_credential, &own) {
        (Some(admin), Some(own)) => {
            let identities =
                Identities::new(config.etcd.clone(), tls.clone(), admin, keyspace.clone());
            // Like connecting: wait for etcd (and its users) rather than exit.
            let mut backoff = Duration::from_millis(500);
            while let Err(error) = identities.prepare(own).await {
                tracing::warn!(%error, retry_in = ?backoff, "cannot set up the etcd identities yet");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_CONNECT_BACKOFF);
            }
            Some(identities)
        }
        _ => None,
    };
    let Some(client) = connect(&config.etcd, tls.as_ref(), own.as_ref(), &mut shutdown).await
    else {
        return Ok(());
    };
    // Kept for as long as the replica serves: a member restarting (an etcd upgrade) is
    // taken out of the client's rotation until it answers again, and the client signs in
    // again when the restarted member refuses its token.
    let _endpoints = etcd::watch_endpoints(&client, &config.etcd, own.as_ref());
    if let Some(file) = &config.admin_token_file {
        let name = tokio::select! {
            named = auth::token::bootstrap_admin(&client, &keyspace, file) => named?,
            () = &mut shutdown => return Ok(()),
        };
        tracing::info!(token = %name, file = %file.display(), "admin token ready");
    }
    let web = WebPolicy::new(
        transport.scheme(),
        addr,
        config.advertise.as_deref(),
        &config.api_allowed_hosts,
        &config.api_allowed_origins,
    );
    let counters = Arc::new(Counters::default());
    let (role_tx, role_rx) = watch::channel(Role::Follower);
    let (stop_tx, stop_rx) = watch::channel(false);
    let state = AppState::new(
        client.clone(),
        keyspace.clone(),
        role_rx,
        Bundles { resolver, trust },
        counters.clone(),
        replica.clone(),
        Policy {
            web,
            hosts,
            prometheus: config.prometheus_url.is_some(),
        },
        stop_rx.clone(),
    )
    .with_identities(identities.clone());
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = listen::serve(
        listener,
        acceptor,
        api::router(state),
        stopped(stop_rx.clone()),
    );
    let api_url = config
        .advertise
        .clone()
        .unwrap_or_else(|| format!("{}://{addr}", transport.scheme()));
    tracing::info!(%replica, api = %api_url, "orchestrator up");
    let (client_for_keeper, keyspace_for_keeper) = (client.clone(), keyspace.clone());
    let campaign = Campaign {
        client,
        keyspace,
        candidate: leader::candidate(replica, Some(api_url)),
        ttl: config.leader_ttl,
        engine: EngineConfig {
            identities,
            ..config.engine()
        },
        counters,
    };
    let elections = async {
        let exit = leader::run(campaign, role_tx, stopped(stop_rx.clone())).await;
        if let Exit::HandedOver { container } = exit {
            tracing::info!(%container, "a new orchestrator version leads now; exiting");
            stop_tx.send_replace(true);
        }
    };
    let api = async {
        api.await;
        Ok(())
    };
    let signal = async {
        tokio::select! {
            () = shutdown => {
                tracing::info!("shutting down");
                stop_tx.send_replace(true);
            }
            () = stopped(stop_rx.clone()) => {}
        }
    };
    // etcd ends a password session's token after `--auth-token-ttl` (300 s) unused, and a
    // restarted member has forgotten every token: a cheap read now and then keeps the
    // everyday session's token in use, and signs in again when etcd refuses it.
    let keeper = own
        .clone()
        .map(|own| tokio::spawn(keep_session(client_for_keeper, keyspace_for_keeper, own)));
    let (served, (), ()) = tokio::join!(api, elections, signal);
    if let Some(keeper) = keeper {
        keeper.abort();
    }
    served
}

/// How often an authenticated session reads: well within etcd's default token TTL (300 s),
/// and often enough that a token a restarted member forgot is replaced within seconds.
const SESSION_KEEPALIVE: Duration = Duration::from_secs(1);

/// Reads `active` (its count only) every [`SESSION_KEEPALIVE`], forever; signs in again as
/// `own` when etcd says the session's token is unknown.
async fn keep_session(client: Client, keyspace: Keyspace, own: Credential) {
    loop {
        tokio::time::sleep(SESSION_KEEPALIVE).await;
        let read = client
            .kv_client()
            .get(
                keyspace.active(),
                Some(etcd_client::GetOptions::new().with_count_only()),
            )
            .await;
        match read {
            Ok(_) => {}
            Err(error) if etcd::is_invalid_auth_token(&error) => {
                match etcd::sign_in_again(&client, &own).await {
                    Ok(()) => tracing::info!("etcd forgot the session's token; signed in again"),
                    Err(error) => tracing::warn!(%error, "signing in to etcd again failed"),
                }
            }
            Err(error) => tracing::warn!(%error, "etcd session keep-alive read failed"),
        }
    }
}

/// Connects to etcd, retrying with backoff (the daemon waits for etcd rather than exit);
/// `None` if shutdown came first.
async fn connect(
    endpoints: &[String],
    tls: Option<&EtcdTls>,
    credential: Option<&Credential>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<Client> {
    let mut backoff = Duration::from_millis(500);
    loop {
        match etcd::connect_as(endpoints, tls, credential).await {
            Ok(client) => return Some(client),
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "cannot connect to etcd yet");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.as_mut() => return None,
        }
        backoff = (backoff * 2).min(MAX_CONNECT_BACKOFF);
    }
}
