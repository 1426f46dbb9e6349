//! Serving the API on a listener: over TLS (rustls), or as plain HTTP where the
//! configuration allows it (loopback, when asked). HTTP/1.1 only, with limits a slow or
//! idle client cannot hold open: the TLS handshake, and each request's header (which also
//! bounds an idle keep-alive connection: hyper starts the header timer as soon as it waits
//! for the next request), must arrive within their timeouts; a body within
//! [`BODY_READ_TIMEOUT`](crate::api::json::BODY_READ_TIMEOUT).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::ClientCertName;

/// Time a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's header, and longest a connection may sit idle.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request header accepted.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Time in-flight requests get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How the API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTransport {
    /// https with this certificate chain and key.
    Tls {
        /// The certificate chain.
        cert_file: PathBuf,
        /// The key.
        key_file: PathBuf,
        /// The CA of clients' certificates, when clients may present one (mutual TLS).
        client_ca_file: Option<PathBuf>,
    },
    /// Plain HTTP on loopback (`--insecure-http`).
    PlainLoopback,
}

impl ApiTransport {
    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        match self {
            ApiTransport::Tls { .. } => "https",
            ApiTransport::PlainLoopback => "http",
        }
    }
}

/// How the API is served on `listen`: TLS with `tls` (certificate, key); plain HTTP only on
/// loopback and only when `insecure_http` asks for it. `Err` says what to give.
pub fn transport(
    listen: SocketAddr,
    tls: Option<(&Path, &Path)>,
    client_ca: Option<&Path>,
    insecure_http: bool,
) -> Result<ApiTransport, String> {
    match tls {
        Some((cert, key)) => Ok(ApiTransport::Tls {
            cert_file: cert.to_owned(),
            key_file: key.to_owned(),
            client_ca_file: client_ca.map(Path::to_owned),
        }),
        None if !listen.ip().is_loopback() => Err(format!(
            "--listen {listen}: the API is served there only over TLS; give --api-tls-cert-file and --api-tls-key-file (plain HTTP is for loopback addresses, with --insecure-http)"
        )),
        None if !insecure_http => Err(format!(
            "--listen {listen}: give --api-tls-cert-file and --api-tls-key-file to serve https, or --insecure-http to serve plain HTTP on this loopback address"
        )),
        None => Ok(ApiTransport::PlainLoopback),
    }
}

/// The API's TLS files could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {path}: {reason}")]
pub struct TlsError {
    /// The flag naming the file.
    pub flag: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// The TLS acceptor of a certificate chain and key in PEM files; with `client_ca`, clients
/// may present a certificate signed by it (one that is not is refused in the handshake), and
/// clients without one still connect (they prove themselves with a token).
pub fn acceptor(
    cert_file: &Path,
    key_file: &Path,
    client_ca: Option<&Path>,
) -> Result<TlsAcceptor, TlsError> {
    let cert_error = |reason: String| TlsError {
        flag: "--api-tls-cert-file",
        path: cert_file.to_owned(),
        reason,
    };
    let key_error = |reason: String| TlsError {
        flag: "--api-tls-key-file",
        path: key_file.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_error("holds no PEM certificate".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| key_error(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_error(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider)?),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| key_error(format!("does not go with the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Checks clients' certificates against the CA certificates in `ca_file`; a client without
/// one may still connect.
fn client_verifier(
    ca_file: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let ca_error = |reason: String| TlsError {
        flag: "--api-client-ca-file",
        path: ca_file.to_owned(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| ca_error(e.to_string()))? {
        roots
            .add(cert.map_err(|e| ca_error(e.to_string()))?)
            .map_err(|e| ca_error(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ca_error("holds no PEM certificate".to_owned()));
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| ca_error(e.to_string()))
}

/// Serves `app` on `listener` (through `tls` if given) until `shutdown` resolves, then lets
/// in-flight requests finish for a while.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES.max(8192));
            let served =
                match tls {
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(error)) => {
                                    tracing::debug!(%peer, %error, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        // The caller a client certificate names rides along with each
                        // request of the connection, for the gate to check.
                        let app = match client_certificate_name(stream.get_ref().1) {
                            Some(name) => app.layer(Extension(name)),
                            None => app,
                        };
                        let service = TowerToHyperService::new(app);
                        watcher
                            .watch(http.serve_connection(TokioIo::new(stream), service))
                            .await
                    }
                    None => {
                        let service = TowerToHyperService::new(app);
                        watcher
                            .watch(http.serve_connection(TokioIo::new(stream), service))
                            .await
                    }
                };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "API connection ended");
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("API requests still running after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// The common name of the certificate the client presented (verified in the handshake).
fn client_certificate_name(tls: &rustls::ServerConnection) -> Option<ClientCertName> {
    let leaf = tls.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?;
    Some(ClientCertName(cn.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback_and_when_asked() {
        let loopback: SocketAddr = "127.0.0.1:7480".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:7480".parse().expect("addr");
        let err = transport(loopback, None, None, false).expect_err("not asked");
        assert!(err.contains("--insecure-http"), "{err}");
        assert_eq!(
            transport(loopback, None, None, true).expect("asked"),
            ApiTransport::PlainLoopback
        );
        let err = transport(any, None, None, true).expect_err("not loopback");
        assert!(err.contains("--api-tls-cert-file"), "{err}");
        let files = (Path::new("/c.pem"), Path::new("/k.pem"));
        assert_eq!(
            transport(any, Some(files), None, false)
                .expect("TLS")
                .scheme(),
            "https"
        );
    }
}
