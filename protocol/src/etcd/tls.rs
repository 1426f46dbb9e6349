//! TLS for etcd connections: PEM files named in configuration (CA, optional client
//! certificate and key for client-certificate authentication).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The TLS files for talking to etcd over `https://`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTls {
    /// CA certificate(s) the server's certificate must chain to (PEM).
    pub ca_file: PathBuf,
    /// Client certificate (PEM), when etcd requires client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Name to verify the server's certificate against, when it differs from the endpoint's
    /// host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl EtcdTls {
    /// Checks the combination of fields; `Err((field, reason))`.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err((
                "tls",
                "cert_file and key_file go together: give both or neither".to_owned(),
            ));
        }
        let files = [
            ("tls.ca_file", Some(&self.ca_file)),
            ("tls.cert_file", self.cert_file.as_ref()),
            ("tls.key_file", self.key_file.as_ref()),
        ];
        for (field, path) in files {
            if let Some(p) = path.filter(|p| !p.is_absolute()) {
                return Err((field, format!("{} must be absolute", p.display())));
            }
        }
        Ok(())
    }

    /// Reads the files into the client's TLS options.
    #[cfg(feature = "etcd")]
    pub fn options(&self) -> Result<etcd_client::TlsOptions, super::EtcdError> {
        use etcd_client::{Certificate, Identity, TlsOptions};
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|source| super::EtcdError::Tls {
                path: path.to_owned(),
                source,
            })
        };
        let mut options =
            TlsOptions::new().ca_certificate(Certificate::from_pem(read(&self.ca_file)?));
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            options = options.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(domain) = &self.domain {
            options = options.domain_name(domain.clone());
        }
        Ok(options)
    }
}
