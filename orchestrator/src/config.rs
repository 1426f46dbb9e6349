//! The orchestrator's configuration, from flags or environment variables.

use std::net::SocketAddr;

use clap::Parser;

/// Default REST listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";
/// Default etcd endpoint.
pub const DEFAULT_ETCD: &str = "http://127.0.0.1:2379";
/// Default leadership lease TTL in seconds: how long a dead leader blocks a successor.
pub const DEFAULT_LEADER_TTL_SECS: i64 = 10;

/// Baton orchestrator (system-updater): upgrades the fleet from update bundles, host by host
/// or batch by batch, coordinated through etcd.
#[derive(Debug, Clone, Parser)]
#[command(name = "baton-orchestrator", version = baton_protocol::VERSION)]
pub struct Config {
    /// etcd endpoints, comma-separated.
    #[arg(long, env = "BATON_ETCD", value_delimiter = ',', default_value = DEFAULT_ETCD)]
    pub etcd: Vec<String>,
    /// Key prefix of Baton's keyspace in etcd.
    #[arg(long, env = "BATON_PREFIX", default_value = baton_protocol::keys::DEFAULT_PREFIX)]
    pub prefix: String,
    /// Address the REST API listens on.
    #[arg(long, env = "BATON_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Name this replica announces in the leader election (default: hostname and pid).
    #[arg(long, env = "BATON_REPLICA")]
    pub replica: Option<String>,
    /// Leadership lease TTL in seconds.
    #[arg(long, env = "BATON_LEADER_TTL", default_value_t = DEFAULT_LEADER_TTL_SECS)]
    pub leader_ttl: i64,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "BATON_LOG_JSON")]
    pub log_json: bool,
}
