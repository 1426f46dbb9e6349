//! Checks of fields several requests share: label keys, and labels or selectors.

use std::collections::BTreeMap;

use baton_protocol::names::check_name;

use super::FieldError;

/// Longest label key or value.
pub(super) const MAX_LABEL_LEN: usize = 63;

/// A label key: 1..=63 of `[A-Za-z0-9._/-]`, starting with a letter or digit.
pub fn check_label_key(field: &str, key: &str) -> Result<(), FieldError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_LABEL_LEN
        && key.as_bytes()[0].is_ascii_alphanumeric()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "label key {key:?} must be 1..=63 of letters, digits, '.', '_', '/', '-', starting with a letter or digit"
            ),
        ))
    }
}

/// Labels (or a selector): valid keys, values that are valid names (a `group` value becomes
/// a key segment).
pub fn check_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), FieldError> {
    for (key, value) in labels {
        check_label_key(field, key)?;
        check_name("label value", value)
            .map_err(|e| FieldError::new(format!("{field}.{key}"), e.to_string()))?;
    }
    Ok(())
}
