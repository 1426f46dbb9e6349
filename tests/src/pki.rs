//! A throwaway certificate authority for tests, made with the `openssl` command: a CA, a
//! server certificate for 127.0.0.1 and a client certificate (ECDSA P-256, valid 2 days).
//! [`TestPki`] serves etcd; [`DockerTlsPki`] a VM's Docker Engine, split into what the
//! engine holds and what its client (the orchestrator, the tests) holds.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::HarnessError;

/// The PEM files of a test PKI.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// CA certificate.
    pub ca: PathBuf,
    /// Server certificate (subjectAltName IP:127.0.0.1, or what [`TestPki::generate_for`] got).
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Client certificate (extendedKeyUsage clientAuth).
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), HarnessError> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| {
            HarnessError(format!(
                "run openssl (Debian package openssl; `make deps` installs it): {e}"
            ))
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(HarnessError(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl TestPki {
    /// The files generated in `dir` earlier.
    pub fn at(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }

    /// Generates the files in `dir`.
    pub fn generate(dir: &Path) -> Result<Self, HarnessError> {
        Self::generate_for(dir, "IP:127.0.0.1")
    }

    /// Generates the files in `dir`, the server certificate with `subject_alt_names`
    /// (openssl's syntax: `IP:127.0.0.1,DNS:localhost`).
    pub fn generate_for(dir: &Path, subject_alt_names: &str) -> Result<Self, HarnessError> {
        Self::generate_with(dir, subject_alt_names, "serverAuth")
    }

    /// Generates the files in `dir` for the members of an etcd cluster: the server
    /// certificate (with `subject_alt_names`) is also a client certificate, so each member
    /// presents it to the others on the peer port (`--peer-client-cert-auth`).
    pub fn generate_for_members(dir: &Path, subject_alt_names: &str) -> Result<Self, HarnessError> {
        Self::generate_with(dir, subject_alt_names, "serverAuth,clientAuth")
    }

    fn generate_with(
        dir: &Path,
        subject_alt_names: &str,
        server_usage: &str,
    ) -> Result<Self, HarnessError> {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=baton-test-ca"];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(dir, &ca)?;
        let server_ext =
            format!("subjectAltName={subject_alt_names}\nextendedKeyUsage={server_usage}\n");
        for (name, ext) in [
            ("server", server_ext.as_str()),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            let (key, csr, pem, extfile) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            std::fs::write(dir.join(&extfile), ext)
                .map_err(|e| HarnessError(format!("write {extfile}: {e}")))?;
            let subject = format!("/CN=baton-test-{name}");
            let mut req = vec!["req", "-subj", subject.as_str()];
            req.extend(ec);
            req.extend(["-keyout", key.as_str(), "-out", csr.as_str()]);
            openssl(dir, &req)?;
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-days",
                    "2",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-extfile",
                    &extfile,
                    "-out",
                    &pem,
                ],
            )?;
        }
        Ok(Self::at(dir))
    }
}

/// What a Docker Engine serving TLS holds (`dockerd --tlsverify`): the CA its clients'
/// certificates must be signed by, its certificate and key.
#[derive(Debug, Clone)]
pub struct DockerServerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a client of that engine holds (`docker --tlsverify --tlscacert … --tlscert …
/// --tlskey …`, or bollard's SSL connector): the CA that signed the engine's certificate,
/// the client's certificate and key.
#[derive(Debug, Clone)]
pub struct DockerClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A PKI for Docker Engines reached over TCP+TLS through a port forwarded to the test
/// machine's loopback: the server certificate names `127.0.0.1` and `localhost`.
#[derive(Debug, Clone)]
pub struct DockerTlsPki {
    pub server: DockerServerTls,
    pub client: DockerClientTls,
}

impl DockerTlsPki {
    /// Generates the CA, the engine's and the client's certificates and keys in `dir`.
    pub fn generate(dir: &Path) -> Result<Self, HarnessError> {
        let pki = TestPki::generate_for(dir, "IP:127.0.0.1,DNS:localhost")?;
        Ok(Self {
            server: DockerServerTls {
                ca: pki.ca.clone(),
                cert: pki.server_cert,
                key: pki.server_key,
            },
            client: DockerClientTls {
                ca: pki.ca,
                cert: pki.client_cert,
                key: pki.client_key,
            },
        })
    }
}
