//! Docker Engine endpoints: the `docker` field of a host spec (`unix:///path` or
//! `tcp://host:port`) parsed once, and connections to it through bollard. Pulling and the
//! rest are the protocol's ([`baton_protocol::docker`]).

use std::fmt;

use baton_protocol::docker::Quiet;
pub use baton_protocol::docker::is_not_found;
use bollard::{API_DEFAULT_VERSION, Docker};

/// Seconds a single Docker API request may take (a bundle pull streams within this).
const REQUEST_TIMEOUT_SECS: u64 = 300;

/// A Docker Engine endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A local socket, e.g. `unix:///var/run/docker.sock`.
    Unix(String),
    /// A TCP address (plain HTTP), e.g. `tcp://10.0.0.7:2375`.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
}

/// An endpoint was refused or could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DockerEndpointError {
    /// Not a `unix://` or `tcp://` endpoint.
    #[error("{endpoint:?} {reason}")]
    Invalid {
        /// The endpoint given.
        endpoint: String,
        /// Why.
        reason: &'static str,
    },
    /// bollard could not set up the connection.
    #[error("docker endpoint {endpoint}: {source}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// The error.
        source: bollard::errors::Error,
    },
}

impl Endpoint {
    /// Parses `unix:///abs/path` or `tcp://host:port`.
    pub fn parse(endpoint: &str) -> Result<Self, DockerEndpointError> {
        let invalid = |reason| DockerEndpointError::Invalid {
            endpoint: endpoint.to_owned(),
            reason,
        };
        if let Some(path) = endpoint.strip_prefix("unix://") {
            let ok = path.starts_with('/')
                && path.len() > 1
                && !path.contains('\0')
                && path
                    .split('/')
                    .skip(1)
                    .all(|s| !s.is_empty() && s != "." && s != "..");
            return if ok {
                Ok(Endpoint::Unix(path.to_owned()))
            } else {
                Err(invalid(
                    "must name an absolute, normalised socket path: unix:///var/run/docker.sock",
                ))
            };
        }
        if let Some(addr) = endpoint.strip_prefix("tcp://") {
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| invalid("must be tcp://host:port"))?;
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| invalid("has a port that is not 1..=65535"))?;
            let host_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b));
            return if host_ok {
                Ok(Endpoint::Tcp {
                    host: host.to_owned(),
                    port,
                })
            } else {
                Err(invalid("has an invalid host name"))
            };
        }
        Err(invalid(
            "must be unix:///path/to/docker.sock or tcp://host:port",
        ))
    }

    /// Connects (lazily: nothing is sent) and agrees on an API version the engine speaks.
    pub async fn connect(&self) -> Result<Docker, DockerEndpointError> {
        let connect_err = |source| DockerEndpointError::Connect {
            endpoint: self.to_string(),
            source,
        };
        let docker = match self {
            Endpoint::Unix(path) => {
                Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
            }
            Endpoint::Tcp { host, port } => Docker::connect_with_http(
                &format!("{host}:{port}"),
                REQUEST_TIMEOUT_SECS,
                API_DEFAULT_VERSION,
            ),
        }
        .map_err(connect_err)?;
        docker.negotiate_version().await.map_err(connect_err)
    }
}

/// Pulls `image` unless the engine has it already (quietly); the error as the engine's
/// callers report it.
pub async fn ensure_image(docker: &Docker, image: &str) -> Result<(), String> {
    baton_protocol::docker::ensure_image(docker, image, &Quiet)
        .await
        .map_err(|e| e.to_string())
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{path}"),
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_unix_and_tcp() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock").expect("unix"),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://10.0.0.7:2375").expect("tcp"),
            Endpoint::Tcp {
                host: "10.0.0.7".into(),
                port: 2375
            }
        );
        for e in ["unix:///var/run/docker.sock", "tcp://docker-1:2375"] {
            assert_eq!(Endpoint::parse(e).expect(e).to_string(), e);
        }
    }

    #[test]
    fn refuses_other_endpoints_saying_why() {
        for (bad, why) in [
            ("", "must be unix://"),
            ("http://10.0.0.7:2375", "must be unix://"),
            ("unix://var/run/docker.sock", "absolute"),
            ("unix:///var/../run/docker.sock", "normalised"),
            ("unix:///", "absolute"),
            ("tcp://10.0.0.7", "tcp://host:port"),
            ("tcp://10.0.0.7:0", "port"),
            ("tcp://10.0.0.7:99999", "port"),
            ("tcp://:2375", "host"),
            ("tcp://a b:2375", "host"),
        ] {
            let err = Endpoint::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
