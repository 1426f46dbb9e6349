//! What a VM is given at boot: files passed through QEMU's fw_cfg
//! (`-fw_cfg name=opt/baton/<file>,file=<path>`), which the guest's
//! `baton-vm-seed.service` installs before the Docker Engine starts (see
//! `images/vmhost/rootfs/usr/lib/baton-vm/seed`).

use std::path::{Path, PathBuf};

use super::{VmError, io_err};
use crate::pki::DockerServerTls;

/// The fw_cfg folder the guest reads the seed from
/// (`/sys/firmware/qemu_fw_cfg/by_name/opt/baton/<file>/raw`).
pub const FW_CFG_PREFIX: &str = "opt/baton";

/// The seed of a VM. Empty by default: the guest's Docker Engine then serves
/// its unix socket only.
#[derive(Debug, Clone, Default)]
pub struct VmSeed {
    /// The Docker Engine's CA, certificate and key: with them it also serves
    /// `tcp://0.0.0.0:2376`, requiring client certificates signed by the CA.
    pub docker_tls: Option<DockerServerTls>,
    /// TCP ports whose guest `127.0.0.1:<port>` is proxied to the test
    /// machine's `127.0.0.1:<port>`: a registry at `127.0.0.1:5000` is then
    /// the same for the test machine's Docker and the guest's.
    pub loopback_ports: Vec<u16>,
}

impl VmSeed {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the guest's Docker Engine serve TLS with `tls`.
    pub fn docker_tls(mut self, tls: DockerServerTls) -> Self {
        self.docker_tls = Some(tls);
        self
    }

    /// Proxies the guest's `127.0.0.1:<port>` to the test machine's.
    pub fn loopback(mut self, port: u16) -> Self {
        if !self.loopback_ports.contains(&port) {
            self.loopback_ports.push(port);
        }
        self
    }

    /// Copies the seed's files into `vm_dir/seed/` (QEMU's option syntax
    /// cannot carry every path: a comma ends the value) and returns QEMU's
    /// `-fw_cfg` arguments for them.
    pub(super) fn qemu_args(&self, vm_dir: &Path) -> Result<Vec<String>, VmError> {
        let dir = vm_dir.join("seed");
        let mut files: Vec<(&str, PathBuf)> = Vec::new();
        if let Some(tls) = &self.docker_tls {
            files.push(("ca.pem", tls.ca.clone()));
            files.push(("server-cert.pem", tls.cert.clone()));
            files.push(("server-key.pem", tls.key.clone()));
        }
        if files.is_empty() && self.loopback_ports.is_empty() {
            return Ok(Vec::new());
        }
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut args = Vec::new();
        for (name, source) in files {
            let copy = dir.join(name);
            std::fs::copy(&source, &copy).map_err(io_err(&source))?;
            args.push("-fw_cfg".to_owned());
            args.push(format!(
                "name={FW_CFG_PREFIX}/{name},file={}",
                copy.display()
            ));
        }
        if !self.loopback_ports.is_empty() {
            let path = dir.join("loopback-ports");
            let text: String = self
                .loopback_ports
                .iter()
                .map(|port| format!("{port}\n"))
                .collect();
            std::fs::write(&path, text).map_err(io_err(&path))?;
            args.push("-fw_cfg".to_owned());
            args.push(format!(
                "name={FW_CFG_PREFIX}/loopback-ports,file={}",
                path.display()
            ));
        }
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_seed_passes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(VmSeed::new().qemu_args(dir.path()).unwrap().is_empty());
        assert!(!dir.path().join("seed").exists());
    }

    #[test]
    fn loopback_ports_are_one_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let args = VmSeed::new()
            .loopback(5000)
            .loopback(2379)
            .loopback(5000)
            .qemu_args(dir.path())
            .unwrap();
        let file = dir.path().join("seed/loopback-ports");
        assert_eq!(
            args,
            [
                "-fw_cfg".to_owned(),
                format!("name=opt/baton/loopback-ports,file={}", file.display())
            ]
        );
        assert_eq!(std::fs::read_to_string(file).unwrap(), "5000\n2379\n");
    }
}
