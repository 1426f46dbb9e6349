//! Checks of single manifest fields — bundle paths, install destinations, digests,
//! versions, image references — also used by other parts on their own input. Each refusal
//! names the field it was given.

use super::ManifestError;

/// A bundle-relative path: non-empty, not absolute, no `.`/`..`/empty segments, no NUL or
/// backslash. Such a path cannot leave the bundle root when joined to it.
pub fn check_relative_path(field: &str, path: &str) -> Result<(), ManifestError> {
    let refuse = |reason: &str| Err(ManifestError::new(field, format!("{path:?} {reason}")));
    if path.is_empty() {
        return refuse("is empty");
    }
    if path.starts_with('/') {
        return refuse("is absolute; paths in a bundle are relative to its root");
    }
    if path.contains('\0') || path.contains('\\') {
        return refuse("contains a NUL or backslash");
    }
    for segment in path.split('/') {
        match segment {
            "" => return refuse("has an empty segment"),
            "." | ".." => return refuse("has a '.' or '..' segment"),
            _ => {}
        }
    }
    Ok(())
}

/// An install destination on the host: absolute, normalised (no `.`/`..`/empty segments).
pub fn check_absolute_path(field: &str, path: &str) -> Result<(), ManifestError> {
    match path.strip_prefix('/') {
        Some(rest) if !rest.is_empty() => check_relative_path(field, rest),
        _ => Err(ManifestError::new(
            field,
            format!("{path:?} must be an absolute path below /"),
        )),
    }
}

/// A lowercase hex sha256.
pub fn check_sha256(field: &str, digest: &str) -> Result<(), ManifestError> {
    if digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(ManifestError::new(
            field,
            format!("{digest:?} is not 64 lowercase hex characters"),
        ))
    }
}

/// A version: dot-separated numbers with an optional `-suffix` of `[A-Za-z0-9.]`, e.g.
/// `2.0.0` or `2.0.0-rc.1`.
pub fn check_version(field: &str, version: &str) -> Result<(), ManifestError> {
    let (core, suffix) = match version.split_once('-') {
        Some((c, s)) => (c, Some(s)),
        None => (version, None),
    };
    let core_ok = !core.is_empty()
        && core
            .split('.')
            .all(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()));
    let suffix_ok = suffix.is_none_or(|s| {
        !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
    });
    if core_ok && suffix_ok && version.len() <= 48 {
        Ok(())
    } else {
        Err(ManifestError::new(
            field,
            format!("{version:?} is not a version like 2.0.0 or 2.0.0-rc.1"),
        ))
    }
}

/// The image digest a bundle is known by: `sha256:<64 lowercase hex>`, given alone or as
/// the digest of a pinned reference (`registry/name@sha256:…`). Returns the digest. A tag
/// alone names no particular image, so it is refused.
pub fn image_digest<'a>(field: &str, value: &'a str) -> Result<&'a str, ManifestError> {
    let digest = match value.rsplit_once('@') {
        Some((_, digest)) => {
            check_image_ref(field, value)?;
            digest
        }
        None => value,
    };
    match digest.strip_prefix("sha256:") {
        Some(hex) if check_sha256(field, hex).is_ok() => Ok(digest),
        _ => Err(ManifestError::new(
            field,
            format!(
                "{value:?} is not an image digest (sha256:<64 hex>, or a reference pinned by one)"
            ),
        )),
    }
}

/// An image reference: `[registry/]name[:tag][@sha256:…]`, lowercase name, no spaces.
pub fn check_image_ref(field: &str, image: &str) -> Result<(), ManifestError> {
    let refuse = |reason: &str| Err(ManifestError::new(field, format!("{image:?} {reason}")));
    if image.is_empty() || image.len() > 255 {
        return refuse("must be 1..=255 characters");
    }
    let (name_tag, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest {
        match d.strip_prefix("sha256:") {
            Some(hex) if check_sha256(field, hex).is_ok() => {}
            _ => return refuse("has a digest that is not sha256:<64 hex>"),
        }
    }
    // A tag is after the last ':' that follows the last '/' (a registry may have a port).
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return refuse("has an empty name component");
    }
    let mut components = name.split('/').peekable();
    let first = components.peek().copied().unwrap_or_default();
    // The first component is a registry host if it has a '.' or ':' or is localhost.
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    for (i, c) in name.split('/').enumerate() {
        let ok = if i == 0 && has_registry {
            c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
        } else {
            c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        };
        if !ok {
            return refuse(
                "has an invalid name component (lowercase letters, digits, '-', '.', '_')",
            );
        }
    }
    if let Some(tag) = tag {
        let ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !ok {
            return refuse("has an invalid tag");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        for ok in [
            "baton/kv:2.0.0",
            "127.0.0.1:5000/baton/bundle:2.0.0",
            "localhost/x@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "registry.example.com:443/a/b",
        ] {
            assert!(check_image_ref("image", ok).is_ok(), "{ok}");
        }
        for bad in ["", "Baton/KV", "a b", "x:", "x@sha256:12", "/x", "a//b"] {
            assert!(check_image_ref("image", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_digests() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let digest = format!("sha256:{hex}");
        let pinned = format!("127.0.0.1:5000/baton/bundle@{digest}");
        assert_eq!(image_digest("bundle", &digest).ok(), Some(digest.as_str()));
        assert_eq!(image_digest("bundle", &pinned).ok(), Some(digest.as_str()));
        for bad in [
            "127.0.0.1:5000/baton/bundle:2.0.0",
            "sha256:12",
            hex,
            &format!("sha256:{}", hex.to_uppercase()),
            &format!("BAD NAME@{digest}"),
            "",
        ] {
            let err = image_digest("desired.bundle", bad).expect_err(bad);
            assert_eq!(err.field, "desired.bundle", "{bad}");
        }
    }

    #[test]
    fn path_cleaning_cases() {
        for ok in ["a", "a/b.c", "a/.hidden", "a/b..c"] {
            assert!(check_relative_path("p", ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "./a", "a/./b", "..", "a/..", "a\\b", "a\0b"] {
            assert!(check_relative_path("p", bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn accepted_relative_paths_never_escape(segments in proptest::collection::vec("[a-z.]{0,4}", 1..5)) {
            let path = segments.join("/");
            if check_relative_path("p", &path).is_ok() {
                // Lexically normalise: an accepted path never climbs above its root.
                let mut depth = 0i32;
                for s in path.split('/') {
                    match s { ".." => depth -= 1, "." | "" => {}, _ => depth += 1 }
                    proptest::prop_assert!(depth >= 0, "{path}");
                }
                proptest::prop_assert!(!path.starts_with('/'));
            }
        }
    }
}
