//! Docker Engine endpoints: the `docker` field of a host spec (`unix:///path` or
//! `tcp://host:port`) parsed once, and connections to it through bollard; and the one way
//! the engine starts a container it names ([`find_or_create`]), so a container a previous
//! leader started is found instead of being started twice. Pulling and reading images are
//! the protocol's ([`baton_protocol::docker`]).

use std::fmt;
use std::path::PathBuf;

use baton_protocol::docker::{DockerError, Quiet};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, RemoveContainerOptionsBuilder,
    StartContainerOptions, UploadToContainerOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, Docker};

/// Seconds a single Docker API request may take (a bundle pull streams within this).
const REQUEST_TIMEOUT_SECS: u64 = 300;

/// The orchestrator's client certificate for `tcp://` Docker Engines that require TLS
/// (dockerd `--tlsverify`), and the CA their server certificates are checked against.
/// One identity for every host's engine; with it, every `tcp://` endpoint is TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerTls {
    /// The CA certificate (PEM).
    pub ca_file: PathBuf,
    /// The client certificate (PEM).
    pub cert_file: PathBuf,
    /// The client key (PEM).
    pub key_file: PathBuf,
}

/// How the orchestrator reaches `tcp://` Docker Engines. A host's engine runs the downloader
/// job as root with host paths mounted: whoever can speak to it owns the host, so plain TCP
/// is never the default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TcpAccess {
    /// Not at all (no client certificate configured): `unix://` endpoints only.
    #[default]
    Refused,
    /// Over TLS with the orchestrator's client certificate (dockerd `--tlsverify`).
    Tls(DockerTls),
    /// Plain HTTP, because `--allow-plain-docker-tcp` asked for it.
    Plain,
}

impl TcpAccess {
    /// Whether `tcp://` endpoints may be registered and reached.
    pub fn allows_tcp(&self) -> bool {
        !matches!(self, TcpAccess::Refused)
    }
}

/// A Docker Engine endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A local socket, e.g. `unix:///var/run/docker.sock`.
    Unix(String),
    /// A TCP address, e.g. `tcp://10.0.0.7:2376`: reached as [`TcpAccess`] says.
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
    /// A `tcp://` endpoint while the orchestrator has no client certificate for engines.
    #[error(
        "{endpoint} is a tcp:// Docker Engine, and this orchestrator reaches those only over TLS: \
         give it --docker-tls-ca-file, --docker-tls-cert-file and --docker-tls-key-file \
         (or --allow-plain-docker-tcp, which lets anyone on the network path run containers as \
         root on the host), or register the host with a unix:// endpoint"
    )]
    TcpRefused {
        /// The endpoint.
        endpoint: String,
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
            // Digits only and no leading zero: one spelling per port (`u16::from_str` would
            // also take `+80` and `080`).
            let port: u16 = Some(port)
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()) && !p.starts_with('0'))
                .and_then(|p| p.parse().ok())
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

    /// Whether `tcp` lets the orchestrator reach this endpoint; `Err` says what to configure.
    pub fn check_reachable(&self, tcp: &TcpAccess) -> Result<(), DockerEndpointError> {
        match self {
            Endpoint::Tcp { .. } if !tcp.allows_tcp() => Err(DockerEndpointError::TcpRefused {
                endpoint: self.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Connects (lazily: nothing is sent) and agrees on an API version the engine speaks;
    /// a `tcp://` endpoint as `tcp` allows.
    pub async fn connect(&self, tcp: &TcpAccess) -> Result<Docker, DockerEndpointError> {
        let connect_err = |source| DockerEndpointError::Connect {
            endpoint: self.to_string(),
            source,
        };
        self.check_reachable(tcp)?;
        let docker = match (self, tcp) {
            (Endpoint::Unix(path), _) => {
                Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
            }
            (Endpoint::Tcp { host, port }, TcpAccess::Tls(tls)) => Docker::connect_with_ssl(
                &format!("{host}:{port}"),
                &tls.key_file,
                &tls.cert_file,
                &tls.ca_file,
                REQUEST_TIMEOUT_SECS,
                API_DEFAULT_VERSION,
            ),
            (Endpoint::Tcp { host, port }, _) => Docker::connect_with_http(
                &format!("{host}:{port}"),
                REQUEST_TIMEOUT_SECS,
                API_DEFAULT_VERSION,
            ),
        }
        .map_err(connect_err)?;
        docker.negotiate_version().await.map_err(connect_err)
    }
}

/// Whether the engine answered 404: no such container or image.
pub use baton_protocol::docker::is_not_found;

/// Label on every container the engine starts, saying what for (`downloader`,
/// `orchestrator`).
pub const LABEL_PURPOSE: &str = "io.baton.purpose";

/// A Docker Engine request about a container or an image failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The request itself failed.
    #[error("docker {op} {name}: {source}")]
    Request {
        /// What was asked (`inspect`, `create`, …).
        op: &'static str,
        /// The container or image.
        name: String,
        /// The engine's answer.
        source: bollard::errors::Error,
    },
    /// A file for the container could not be packed.
    #[error("packing {path} for {name}: {source}")]
    Pack {
        /// The container.
        name: String,
        /// The file's path in it.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The image could not be found or pulled.
    #[error(transparent)]
    Image(#[from] DockerError),
}

impl ContainerError {
    /// A mapper for `map_err`: request `op` about `name` failed.
    pub fn request(
        op: &'static str,
        name: &str,
    ) -> impl FnOnce(bollard::errors::Error) -> ContainerError {
        let name = name.to_owned();
        move |source| ContainerError::Request { op, name, source }
    }
}

/// Pulls `image` unless the engine has it already (quietly).
pub async fn ensure_image(docker: &Docker, image: &str) -> Result<(), ContainerError> {
    Ok(baton_protocol::docker::ensure_image(docker, image, &Quiet).await?)
}

/// What to do with a stopped container of the name [`find_or_create`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfStopped {
    /// Keep it: it ended while nobody watched, and its log holds the outcome.
    Keep,
    /// Remove it and start afresh (an earlier attempt failed).
    Replace,
}

/// What [`find_or_create`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The container runs already (an earlier attempt or leader started it).
    Running,
    /// It exists and has stopped (kept, see [`IfStopped::Keep`]).
    Stopped,
    /// It was created from `body` (its image pulled if missing) and started.
    Started,
}

/// A file put into a container before it starts (absolute path, contents, mode).
#[derive(Debug, Clone)]
pub struct ContainerFile {
    /// Where, e.g. `/etc/baton/orchestrator.toml`.
    pub path: String,
    /// What.
    pub contents: Vec<u8>,
    /// Its permissions, e.g. `0o600`.
    pub mode: u32,
}

/// Finds the container `name`, or creates it from `body`, puts `files` into it and starts
/// it.
pub async fn find_or_create(
    docker: &Docker,
    name: &str,
    body: ContainerCreateBody,
    files: &[ContainerFile],
    if_stopped: IfStopped,
) -> Result<Found, ContainerError> {
    match docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
    {
        Ok(info) if info.state.as_ref().and_then(|s| s.running) == Some(true) => {
            return Ok(Found::Running);
        }
        Ok(_) if if_stopped == IfStopped::Keep => return Ok(Found::Stopped),
        Ok(_) => docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await
            .map_err(ContainerError::request("remove", name))?,
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(ContainerError::request("inspect", name)(e)),
    }
    if let Some(image) = &body.image {
        ensure_image(docker, image).await?;
    }
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(name).build()),
            body,
        )
        .await
        .map_err(ContainerError::request("create", name))?;
    if !files.is_empty() {
        let archive = pack(name, files)?;
        docker
            .upload_to_container(
                name,
                Some(UploadToContainerOptionsBuilder::new().path("/").build()),
                bollard::body_full(archive.into()),
            )
            .await
            .map_err(ContainerError::request("upload files to", name))?;
    }
    docker
        .start_container(name, None::<StartContainerOptions>)
        .await
        .map_err(ContainerError::request("start", name))?;
    Ok(Found::Started)
}

/// A tar archive of `files`, paths relative to the root.
fn pack(name: &str, files: &[ContainerFile]) -> Result<Vec<u8>, ContainerError> {
    let mut archive = tar::Builder::new(Vec::new());
    for f in files {
        let pack_err = |source| ContainerError::Pack {
            name: name.to_owned(),
            path: f.path.clone(),
            source,
        };
        let mut header = tar::Header::new_gnu();
        header.set_size(f.contents.len() as u64);
        header.set_mode(f.mode);
        header.set_entry_type(tar::EntryType::Regular);
        archive
            .append_data(
                &mut header,
                f.path.trim_start_matches('/'),
                f.contents.as_slice(),
            )
            .map_err(pack_err)?;
    }
    archive.into_inner().map_err(|source| ContainerError::Pack {
        name: name.to_owned(),
        path: String::new(),
        source,
    })
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
