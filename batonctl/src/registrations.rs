//! `batonctl host add --from-file FILE`: the registrations of a file — a JSON array, or one
//! JSON object per line (blank lines and `#` comments skipped) — each named by where it is
//! (`hosts.json[3]`, `hosts.jsonl:7`), sent [`MAX_BULK_REGISTRATIONS`] per request.

use baton_protocol::api::{MAX_BULK_REGISTRATIONS, RegisterHost, RegisteredHost};

use crate::client::ApiClient;
use crate::error::CtlError;

/// One registration and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `FILE[i]` or `FILE:LINE`.
    pub place: String,
    /// The registration.
    pub request: RegisterHost,
}

/// The registrations in `text`, read from `file`.
pub fn parse(file: &str, text: &str) -> Result<Vec<Entry>, CtlError> {
    let bad = |what: String| CtlError::Registrations {
        file: file.to_owned(),
        what,
    };
    if text.trim_start().starts_with('[') {
        let items: Vec<RegisterHost> =
            serde_json::from_str(text).map_err(|e| bad(format!("JSON array: {e}")))?;
        return Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, request)| Entry {
                place: format!("{file}[{i}]"),
                request,
            })
            .collect());
    }
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let request: RegisterHost =
            serde_json::from_str(line).map_err(|e| bad(format!("line {}: {e}", n + 1)))?;
        entries.push(Entry {
            place: format!("{file}:{}", n + 1),
            request,
        });
    }
    if entries.is_empty() {
        return Err(bad("no registration in it".to_owned()));
    }
    Ok(entries)
}

/// Registers `entries`, [`MAX_BULK_REGISTRATIONS`] per request; each host's outcome, in
/// order. A refused request names the first and last registration it carried (the server's
/// `[i]` counts from its first).
pub async fn register(api: &ApiClient, entries: &[Entry]) -> Result<Vec<RegisteredHost>, CtlError> {
    let mut answers = Vec::with_capacity(entries.len());
    for chunk in entries.chunks(MAX_BULK_REGISTRATIONS) {
        let requests: Vec<RegisterHost> = chunk.iter().map(|e| e.request.clone()).collect();
        let placed = |source| CtlError::Bulk {
            first: chunk.first().map(|e| e.place.clone()).unwrap_or_default(),
            last: chunk.last().map(|e| e.place.clone()).unwrap_or_default(),
            source,
        };
        answers.extend(api.register_many(&requests).await.map_err(placed)?);
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_array_or_one_per_line() {
        let array = r#"[{"id": "h1", "docker": "unix:///d.sock"}, {"id": "h2", "docker": "unix:///d.sock", "labels": {"group": "g"}}]"#;
        let lines = "# fleet\n{\"id\": \"h1\", \"docker\": \"unix:///d.sock\"}\n\n{\"id\": \"h2\", \"docker\": \"unix:///d.sock\", \"labels\": {\"group\": \"g\"}}\n";
        let a = parse("a.json", array).expect("array");
        let l = parse("l.jsonl", lines).expect("lines");
        assert_eq!(
            a.iter().map(|e| e.place.as_str()).collect::<Vec<_>>(),
            ["a.json[0]", "a.json[1]"]
        );
        assert_eq!(
            l.iter().map(|e| e.place.as_str()).collect::<Vec<_>>(),
            ["l.jsonl:2", "l.jsonl:4"]
        );
        let requests = |v: &[Entry]| v.iter().map(|e| e.request.clone()).collect::<Vec<_>>();
        assert_eq!(requests(&a), requests(&l));
        assert_eq!(
            l[1].request.labels.get("group").map(String::as_str),
            Some("g")
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let err = parse(
            "l.jsonl",
            "{\"id\": \"h1\", \"docker\": \"unix:///d.sock\"}\n{\"id\": 3}\n",
        )
        .expect_err("line 2");
        assert!(err.to_string().starts_with("l.jsonl: line 2: "), "{err}");
        let err = parse(
            "l.jsonl",
            "{\"id\": \"h1\", \"docker\": \"x\", \"bogus\": 1}",
        )
        .expect_err("unknown");
        assert!(err.to_string().contains("unknown field `bogus`"), "{err}");
        let err = parse("a.json", "[{\"id\": \"h1\"}]").expect_err("array");
        assert!(
            err.to_string()
                .starts_with("a.json: JSON array: missing field `docker`"),
            "{err}"
        );
        let err = parse("e.jsonl", "# nothing\n\n").expect_err("empty");
        assert_eq!(err.to_string(), "e.jsonl: no registration in it");
    }
}
