//! The host-operations fake of the benchmark's simulated hosts: every component it is
//! asked to apply does no work (no file is copied, no unit or container touched) and every
//! check passes, so what is measured is Baton's coordination, not the host's work.

use std::path::Path;

use baton_agent::ops::{HostOps, OpResult};
use baton_protocol::manifest::FileEntry;

/// A host whose operations all succeed at once and change nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoWorkHost;

impl HostOps for NoWorkHost {
    fn install_file(&self, _source: &Path, _dest: &Path, _file: &FileEntry) -> OpResult<()> {
        Ok(())
    }
    fn verify_staged(&self, _source: &Path, _file: &FileEntry) -> OpResult<()> {
        Ok(())
    }
    fn backup_file(&self, _path: &Path, _backup: &Path) -> OpResult<bool> {
        Ok(false)
    }
    fn restore_file(&self, _backup: &Path, _path: &Path) -> OpResult<()> {
        Ok(())
    }
    fn remove_file(&self, _path: &Path) -> OpResult<()> {
        Ok(())
    }
    fn daemon_reload(&self) -> OpResult<()> {
        Ok(())
    }
    fn enable_unit(&self, _unit: &str) -> OpResult<()> {
        Ok(())
    }
    fn disable_unit(&self, _unit: &str) -> OpResult<()> {
        Ok(())
    }
    fn restart_unit(&self, _unit: &str) -> OpResult<()> {
        Ok(())
    }
    fn reset_failed_unit(&self, _unit: &str) -> OpResult<()> {
        Ok(())
    }
    fn stop_unit(&self, _unit: &str) -> OpResult<()> {
        Ok(())
    }
    fn unit_state(&self, _unit: &str) -> OpResult<String> {
        Ok("active".to_owned())
    }
    fn load_image(&self, _archive: &Path) -> OpResult<()> {
        Ok(())
    }
    fn recreate_container(&self, _name: &str, _image: &str, _args: &[String]) -> OpResult<()> {
        Ok(())
    }
    fn remove_container(&self, _name: &str) -> OpResult<()> {
        Ok(())
    }
    fn container_image(&self, _name: &str) -> OpResult<Option<String>> {
        Ok(None)
    }
    fn container_healthy(&self, _name: &str) -> OpResult<bool> {
        Ok(true)
    }
    fn run_check(&self, _argv: &[String], _timeout_secs: u32) -> OpResult<bool> {
        Ok(true)
    }
    fn http_check(&self, _url: &str, _timeout_secs: u32) -> OpResult<bool> {
        Ok(true)
    }
    fn read_text(&self, _path: &Path) -> OpResult<Option<String>> {
        Ok(None)
    }
    fn write_text(&self, _path: &Path, _text: &str) -> OpResult<()> {
        Ok(())
    }
    fn reboot(&self) -> OpResult<()> {
        Ok(())
    }
    fn run(&self, _argv: &[&str]) -> OpResult<String> {
        Ok(String::new())
    }
    fn exists(&self, _path: &Path) -> bool {
        true
    }
}
