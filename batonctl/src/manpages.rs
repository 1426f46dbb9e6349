//! `batonctl manpages DIR`: man pages generated from the command-line definition itself
//! (clap_mangen), so they never drift from `--help`: `batonctl.1`, and one page per
//! subcommand named as git names its own (`batonctl-upgrade-start.1`).

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::CtlError;

/// Writes every page into `dir` (created if missing); returns the files written.
pub fn write(dir: &Path) -> Result<Vec<PathBuf>, CtlError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| CtlError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(failed(dir))?;
    let mut written = Vec::new();
    let mut pending = vec![(String::from("batonctl"), Cli::command().name("batonctl"))];
    while let Some((name, command)) = pending.pop() {
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            let sub_name = format!("{name}-{}", sub.get_name());
            pending.push((sub_name.clone(), sub.clone().name(sub_name)));
        }
        let mut page = Vec::new();
        clap_mangen::Man::new(command.clone())
            .render(&mut page)
            .map_err(failed(dir))?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, page).map_err(failed(&path))?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_gets_a_page() {
        let dir = tempfile::tempdir().expect("dir");
        let pages = write(dir.path()).expect("pages");
        let names: Vec<String> = pages
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        for name in [
            "batonctl.1",
            "batonctl-upgrade-start.1",
            "batonctl-group-maintenance.1",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        let start =
            std::fs::read_to_string(dir.path().join("batonctl-upgrade-start.1")).expect("page");
        assert!(start.starts_with(".ie") || start.contains(".TH"), "{start}");
        assert!(start.contains("strategy"), "the flags are documented");
    }
}
