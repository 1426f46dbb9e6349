//! The registries Baton may pull from: one allow-list, checked before any image a bundle
//! upgrade involves is pulled or run (the bundle image, the orchestrator image it names).

/// The registry of an image reference, as Docker reads it: the first path component when it
/// looks like a host (has a `.` or a `:`, or is `localhost`), else Docker Hub (`docker.io`).
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// Registries allowed: `host:port` allows that registry, `host` allows the host on any port.
/// An empty list allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryAllowList {
    entries: Vec<String>,
}

impl RegistryAllowList {
    /// The list of `entries`; an entry that is not `host[:port]` is refused, naming it.
    pub fn new(entries: &[String]) -> Result<Self, String> {
        for entry in entries {
            let (host, port) = match entry.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (entry.as_str(), None),
            };
            let host_ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']'));
            let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
            if !host_ok || !port_ok {
                return Err(format!(
                    "{entry:?} is not a registry (host or host:port, e.g. registry.example:5000)"
                ));
            }
        }
        Ok(Self {
            entries: entries.iter().map(|e| e.to_ascii_lowercase()).collect(),
        })
    }

    /// Whether images of `registry` (`host[:port]`) may be pulled.
    pub fn allows_registry(&self, registry: &str) -> bool {
        let registry = registry.to_ascii_lowercase();
        let host = registry
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(registry.as_str(), |(h, _)| h);
        self.entries.iter().any(|e| *e == registry || *e == host)
    }

    /// `Ok` if `image`'s registry is allowed; else why, naming `field` and the registry.
    pub fn check(&self, field: &str, image: &str) -> Result<(), String> {
        let registry = registry_of(image);
        if self.allows_registry(registry) {
            Ok(())
        } else {
            Err(format!(
                "{field}: registry {registry} is not allowed (allowed: {}); \
                 the orchestrator pulls only from --allowed-registry",
                if self.entries.is_empty() {
                    "none".to_owned()
                } else {
                    self.entries.join(", ")
                }
            ))
        }
    }

    /// The entries.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> RegistryAllowList {
        RegistryAllowList::new(&entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>())
            .expect("valid")
    }

    #[test]
    fn the_registry_is_the_first_component_when_it_names_a_host() {
        assert_eq!(
            registry_of("127.0.0.1:5000/baton/bundle:2.0.0"),
            "127.0.0.1:5000"
        );
        assert_eq!(
            registry_of("registry.example/b@sha256:aa"),
            "registry.example"
        );
        assert_eq!(registry_of("localhost/b"), "localhost");
        assert_eq!(registry_of("baton/bundle:2.0.0"), "docker.io");
        assert_eq!(registry_of("bundle"), "docker.io");
    }

    #[test]
    fn entries_allow_a_registry_or_a_host_on_any_port() {
        let l = list(&["127.0.0.1", "registry.example:5000"]);
        assert!(l.check("image", "127.0.0.1:5000/baton/bundle:1").is_ok());
        assert!(l.check("image", "127.0.0.1:6000/baton/bundle:1").is_ok());
        assert!(l.check("image", "registry.example:5000/b:1").is_ok());
        let err = l
            .check("image", "registry.example:5001/b:1")
            .expect_err("port");
        assert!(
            err.contains("registry registry.example:5001 is not allowed"),
            "{err}"
        );
        assert!(l.check("image", "baton/bundle:1").is_err());
        assert!(l.check("image", "localhost:5000/b:1").is_err());
        let err = list(&[])
            .check("image", "127.0.0.1:5000/b:1")
            .expect_err("empty");
        assert!(err.contains("allowed: none"), "{err}");
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in ["", "a/b", "host:", "host:port", "host:0", "https://r"] {
            assert!(
                RegistryAllowList::new(&[bad.to_owned()]).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
