//! A bundle source folder and its manifest template (`manifest.template.json`): the bundle's
//! manifest with each file's `size` and `sha256` left out (or `null`). `prepare` checks the
//! template's structure with the protocol's rules, hashes every file, completes the manifest
//! and validates it again — all before anything is built, so bad input (a missing file, an
//! unsafe path, a bad version, a duplicate component) is refused with the file and field
//! named and no image is made.
//!
//! Files are found at `<dir>/<path>` for each `components[].files[].path`; the agent binary
//! comes from the build's `--agent` (it is stored at `agent.file.path` in the bundle). A size
//! or digest written in the template must match the file.

use std::io::Read;
use std::path::{Path, PathBuf};

use baton_protocol::manifest::{
    FileEntry, InstallPolicy, MAX_MANIFEST_BYTES, Manifest, check_relative_path,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::bundle::binaries::{check_agent_version, check_static};
use crate::bundle::error::BundleError;
use crate::bundle::progress::{Progress, human_bytes};

/// The template's file name in a bundle source folder.
pub const TEMPLATE_FILE: &str = "manifest.template.json";
/// A placeholder digest used to check the template's structure before hashing.
const PLACEHOLDER_SHA256: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One file going into the bundle.
#[derive(Debug, Clone)]
pub struct BundleFile {
    /// The manifest field naming it (`components[1].files[0]`, `agent.file`).
    pub field: String,
    /// Its completed manifest entry.
    pub entry: FileEntry,
    /// Where it is read from.
    pub source: PathBuf,
}

/// A bundle ready to be built: the final manifest and where each file comes from.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The validated manifest.
    pub manifest: Manifest,
    /// Its JSON, as stored at `/bundle/manifest.json`.
    pub manifest_bytes: Vec<u8>,
    /// Every file (agent first), with its verified size and digest.
    pub files: Vec<BundleFile>,
    /// The static downloader binary (the image's entrypoint).
    pub downloader: PathBuf,
    /// The downloader's size, checked again while it is sent.
    pub downloader_size: u64,
}

impl Prepared {
    /// Total size of the bundle's files.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.entry.size).sum()
    }

    /// The hex sha256 of the manifest (an image label).
    pub fn manifest_sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.manifest_bytes))
    }
}

/// What `prepare` reads.
#[derive(Debug, Clone)]
pub struct Sources<'a> {
    /// The bundle source folder (template and package files).
    pub dir: &'a Path,
    /// The bundle's agent binary.
    pub agent: &'a Path,
    /// The static downloader binary.
    pub downloader: &'a Path,
    /// Run `<agent> --version` and require the manifest's agent version.
    pub check_agent_version: bool,
    /// Where the bundle may install files.
    pub install: &'a InstallPolicy,
    /// Public keys added to the manifest's `trusted_keys`.
    pub trusted_keys: &'a [baton_protocol::signing::PublicKey],
}

/// Adds `keys` to the template's `trusted_keys` (a key listed twice is kept once).
fn add_trusted_keys(template: &mut Value, keys: &[baton_protocol::signing::PublicKey]) {
    if keys.is_empty() {
        return;
    }
    let Some(object) = template.as_object_mut() else {
        return; // reported by the parse
    };
    let list = object
        .entry("trusted_keys")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(list) = list.as_array_mut() {
        for key in keys {
            let doc = serde_json::to_value(key.to_document()).unwrap_or_default();
            if !list.contains(&doc) {
                list.push(doc);
            }
        }
    }
}

/// Reads the template of `sources.dir`, completes and validates the manifest, and checks the
/// binaries. Nothing is written.
pub fn prepare(sources: &Sources<'_>, progress: &dyn Progress) -> Result<Prepared, BundleError> {
    let template_path = sources.dir.join(TEMPLATE_FILE);
    let mut template = read_template(&template_path)?;
    add_trusted_keys(&mut template, sources.trusted_keys);

    // Structure, versions, names, paths first, before hashing anything.
    let mut probe = template.clone();
    for (_, entry) in file_entries(&mut probe) {
        for (key, placeholder) in [
            ("size", Value::from(0)),
            ("sha256", Value::from(PLACEHOLDER_SHA256)),
        ] {
            if entry.get(key).is_none_or(Value::is_null) {
                entry.insert(key.to_owned(), placeholder);
            }
        }
    }
    let structure = parse(&template_path, &probe)?;
    // A bundle the hosts' agents would refuse is not built.
    sources
        .install
        .check(&structure)
        .map_err(|source| BundleError::Manifest {
            path: template_path.clone(),
            source,
        })?;

    let mut completed = template;
    let mut sources_by_field = Vec::new();
    for (field, entry) in file_entries(&mut completed) {
        let Some(path) = entry.get("path").and_then(Value::as_str).map(str::to_owned) else {
            continue; // reported by the parse above
        };
        check_relative_path(&format!("{field}.path"), &path).map_err(|source| {
            BundleError::Manifest {
                path: template_path.clone(),
                source,
            }
        })?;
        let source = if field == "agent.file" {
            sources.agent.to_owned()
        } else {
            sources.dir.join(&path)
        };
        let (size, sha256) = hash_file(&source, &field)?;
        progress.line(&format!(
            "  {path}: {} sha256:{}",
            human_bytes(size),
            &sha256[..12]
        ));
        for (key, actual) in [("size", Value::from(size)), ("sha256", Value::from(sha256))] {
            match entry.get(key) {
                None | Some(Value::Null) => {
                    entry.insert(key.to_owned(), actual);
                }
                Some(given) if *given == actual => {}
                Some(given) => {
                    return Err(BundleError::Mismatch {
                        path: source,
                        field: format!("{field}.{key}"),
                        expected: given.to_string(),
                        actual: actual.to_string(),
                    });
                }
            }
        }
        sources_by_field.push((field, source));
    }
    let manifest = parse(&template_path, &completed)?;
    let manifest_bytes = manifest.to_json();

    let files = manifest
        .files()
        .into_iter()
        .map(|(field, entry)| {
            let source = sources_by_field
                .iter()
                .find(|(f, _)| *f == field)
                .map(|(_, s)| s.clone())
                .unwrap_or_else(|| sources.dir.join(&entry.path));
            BundleFile {
                field,
                entry: entry.clone(),
                source,
            }
        })
        .collect();

    check_static(sources.downloader)?;
    let downloader_size = std::fs::metadata(sources.downloader)
        .map_err(|e| BundleError::io(sources.downloader, "stat", e))?
        .len();
    if sources.check_agent_version {
        check_agent_version(sources.agent, &manifest.agent.version)?;
    }
    Ok(Prepared {
        manifest,
        manifest_bytes,
        files,
        downloader: sources.downloader.to_owned(),
        downloader_size,
    })
}

fn read_template(path: &Path) -> Result<Value, BundleError> {
    let file = std::fs::File::open(path).map_err(|e| BundleError::io(path, "open", e))?;
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| BundleError::io(path, "read", e))?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(BundleError::io(
            path,
            "read",
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("larger than {MAX_MANIFEST_BYTES} bytes"),
            ),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|source| BundleError::TemplateJson {
        path: path.to_owned(),
        source,
    })
}

fn parse(path: &Path, value: &Value) -> Result<Manifest, BundleError> {
    let bytes = serde_json::to_vec(value).map_err(|source| BundleError::TemplateJson {
        path: path.to_owned(),
        source,
    })?;
    Manifest::parse(&bytes).map_err(|source| BundleError::Manifest {
        path: path.to_owned(),
        source,
    })
}

/// The file entry objects of a template, with their manifest field names (the same names
/// `Manifest::files` gives).
fn file_entries(template: &mut Value) -> Vec<(String, &mut serde_json::Map<String, Value>)> {
    let mut out = Vec::new();
    let Some(root) = template.as_object_mut() else {
        return out;
    };
    let (agent, components) = {
        let mut agent = None;
        let mut components = None;
        for (k, v) in root.iter_mut() {
            match k.as_str() {
                "agent" => agent = Some(v),
                "components" => components = Some(v),
                _ => {}
            }
        }
        (agent, components)
    };
    if let Some(file) = agent
        .and_then(|a| a.get_mut("file"))
        .and_then(Value::as_object_mut)
    {
        out.push(("agent.file".to_owned(), file));
    }
    if let Some(components) = components.and_then(Value::as_array_mut) {
        for (i, c) in components.iter_mut().enumerate() {
            if let Some(files) = c.get_mut("files").and_then(Value::as_array_mut) {
                for (j, f) in files.iter_mut().enumerate() {
                    if let Some(f) = f.as_object_mut() {
                        out.push((format!("components[{i}].files[{j}]"), f));
                    }
                }
            }
        }
    }
    out
}

/// Size and hex sha256 of a regular file (links are followed: the content is what counts).
fn hash_file(path: &Path, field: &str) -> Result<(u64, String), BundleError> {
    let meta = std::fs::metadata(path).map_err(|e| BundleError::Source {
        path: path.to_owned(),
        field: field.to_owned(),
        reason: e.to_string(),
    })?;
    if !meta.is_file() {
        return Err(BundleError::Source {
            path: path.to_owned(),
            field: field.to_owned(),
            reason: "not a regular file".to_owned(),
        });
    }
    let mut file = std::fs::File::open(path).map_err(|e| BundleError::io(path, "open", e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| BundleError::io(path, "read", e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::bundle::progress::Quiet;

    /// A bundle source folder with a file and a kernel component, an agent script
    /// reporting `version`, and a "downloader" (the static check is skipped by using the
    /// caller's choice of binary).
    pub(crate) struct Source {
        pub dir: tempfile::TempDir,
        pub agent: PathBuf,
    }

    pub(crate) fn template(version: &str) -> Value {
        serde_json::json!({
            "schema_version": 1,
            "version": version,
            "backward_compatible": true,
            "agent": {"version": version, "file": {"path": "agent/baton-agent", "mode": "0755"}},
            "components": [
                {"name": "baton-hello", "version": version, "kind": "file", "order": 10,
                 "files": [{"path": "packages/hello/baton-hello", "dest": "/usr/local/bin/baton-hello", "mode": "0755"}]},
                {"name": "kernel", "version": version, "kind": "kernel", "order": 90, "reboot": true,
                 "release": "6.1.0-baton2",
                 "files": [{"path": "packages/kernel/vmlinuz-6.1.0-baton2", "dest": "/boot/vmlinuz-6.1.0-baton2"}]}
            ]
        })
    }

    pub(crate) fn source(version: &str) -> Source {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, content: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        };
        write("packages/hello/baton-hello", "#!/bin/sh\necho hello\n");
        write("packages/kernel/vmlinuz-6.1.0-baton2", "kernel\n");
        write(
            TEMPLATE_FILE,
            &serde_json::to_string_pretty(&template(version)).unwrap(),
        );
        let agent = dir.path().join("agent-bin");
        std::fs::write(&agent, format!("#!/bin/sh\necho baton-agent {version}\n")).unwrap();
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
        Source { dir, agent }
    }

    /// A static executable to stand in as the downloader: none is at hand in unit tests,
    /// so a minimal ELF64 header without an interpreter.
    pub(crate) fn fake_static_downloader(dir: &Path) -> PathBuf {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        // e_phoff = 64, e_phentsize = 56, e_phnum = 0.
        elf[0x20] = 64;
        elf[0x36] = 56;
        let p = dir.join("baton-downloader");
        std::fs::write(&p, elf).unwrap();
        p
    }

    fn prepare_source(s: &Source) -> Result<Prepared, BundleError> {
        let downloader = fake_static_downloader(s.dir.path());
        prepare(
            &Sources {
                dir: s.dir.path(),
                agent: &s.agent,
                downloader: &downloader,
                check_agent_version: true,
                install: &InstallPolicy::default(),
                trusted_keys: &[],
            },
            &Quiet,
        )
    }

    fn rewrite(s: &Source, edit: impl FnOnce(&mut Value)) {
        let mut t = template("2.0.0");
        edit(&mut t);
        std::fs::write(
            s.dir.path().join(TEMPLATE_FILE),
            serde_json::to_vec(&t).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn completes_sizes_and_digests() {
        let s = source("2.0.0");
        let p = prepare_source(&s).unwrap();
        assert_eq!(p.files.len(), 3);
        assert_eq!(p.files[0].field, "agent.file");
        assert_eq!(p.files[0].source, s.agent);
        let hello = &p.files[1];
        assert_eq!(hello.entry.size, 21);
        assert_eq!(
            hello.entry.sha256,
            hex::encode(Sha256::digest(b"#!/bin/sh\necho hello\n"))
        );
        // The stored manifest is what the downloader will parse.
        assert_eq!(Manifest::parse(&p.manifest_bytes).unwrap(), p.manifest);
    }

    #[test]
    fn a_missing_file_is_named_with_its_field() {
        let s = source("2.0.0");
        std::fs::remove_file(s.dir.path().join("packages/kernel/vmlinuz-6.1.0-baton2")).unwrap();
        let err = prepare_source(&s).unwrap_err().to_string();
        assert!(err.contains("vmlinuz-6.1.0-baton2"), "{err}");
        assert!(err.contains("components[1].files[0]"), "{err}");
    }

    #[test]
    fn unsafe_paths_are_refused_before_any_file_is_read() {
        for bad in ["../etc/passwd", "/etc/passwd", "packages/../../x"] {
            let s = source("2.0.0");
            rewrite(&s, |t| t["components"][0]["files"][0]["path"] = bad.into());
            let err = prepare_source(&s).unwrap_err().to_string();
            assert!(err.contains(TEMPLATE_FILE), "{bad}: {err}");
            assert!(err.contains("components[0].files[0].path"), "{bad}: {err}");
        }
    }

    #[test]
    fn destinations_outside_the_allow_list_or_of_baton_itself_are_refused() {
        for (dest, mode, want) in [
            ("/etc/baton/agent.toml", "0644", "Baton's own"),
            ("/var/lib/baton/journal.json", "0644", "Baton's own"),
            (
                "/usr/bin/baton-hello",
                "0755",
                "outside the install allow-list",
            ),
            ("/usr/local/bin/baton-hello", "4755", "setuid allow-list"),
        ] {
            let s = source("2.0.0");
            rewrite(&s, |t| {
                t["components"][0]["files"][0]["dest"] = dest.into();
                t["components"][0]["files"][0]["mode"] = mode.into();
            });
            let err = prepare_source(&s).unwrap_err().to_string();
            assert!(err.contains(TEMPLATE_FILE), "{dest}: {err}");
            assert!(err.contains("components[0].files[0].dest"), "{dest}: {err}");
            assert!(err.contains(want), "{dest}: {err}");
        }
    }

    #[test]
    fn bad_versions_and_duplicate_components_are_refused() {
        let s = source("2.0.0");
        rewrite(&s, |t| t["version"] = "two".into());
        let err = prepare_source(&s).unwrap_err().to_string();
        assert!(err.contains("field version"), "{err}");

        let s = source("2.0.0");
        rewrite(&s, |t| t["components"][1]["name"] = "baton-hello".into());
        let err = prepare_source(&s).unwrap_err().to_string();
        assert!(
            err.contains("components[1].name") && err.contains("duplicate"),
            "{err}"
        );
    }

    #[test]
    fn a_stated_digest_must_match() {
        let s = source("2.0.0");
        rewrite(&s, |t| {
            t["components"][0]["files"][0]["sha256"] = PLACEHOLDER_SHA256.into();
        });
        let err = prepare_source(&s).unwrap_err().to_string();
        assert!(err.contains("components[0].files[0].sha256"), "{err}");
    }

    #[test]
    fn the_agent_must_report_the_manifest_version() {
        let s = source("2.0.0");
        std::fs::write(&s.agent, "#!/bin/sh\necho baton-agent 0.1.0\n").unwrap();
        let err = prepare_source(&s).unwrap_err().to_string();
        assert!(err.contains("agent.version is \"2.0.0\""), "{err}");
    }

    #[test]
    fn a_dynamic_downloader_is_refused() {
        let s = source("2.0.0");
        let me = std::env::current_exe().unwrap();
        let err = prepare(
            &Sources {
                dir: s.dir.path(),
                agent: &s.agent,
                downloader: &me,
                check_agent_version: false,
                install: &InstallPolicy::default(),
                trusted_keys: &[],
            },
            &Quiet,
        )
        .unwrap_err();
        assert!(matches!(err, BundleError::NotStatic { .. }), "{err}");
    }
}
