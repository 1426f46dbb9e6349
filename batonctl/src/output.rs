//! How commands print what the API answered (`-o`): lists as a table (the default) or a
//! wider one, single records as JSON (the default) or YAML, anything as JSON or YAML for
//! scripts — the choices kubectl and talosctl offer.

use clap::ValueEnum;
use serde::Serialize;

use crate::error::CtlError;

/// `-o`, `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Columns for people (lists; a record as a one-row table).
    Table,
    /// The table with more columns.
    Wide,
    /// JSON, pretty-printed.
    Json,
    /// YAML.
    Yaml,
}

/// What a list prints as: `table(items, wide)` for the tables, else the items themselves.
pub fn list<T: Serialize>(
    output: Option<Output>,
    items: &[T],
    table: impl Fn(&[T], bool) -> String,
) -> Result<String, CtlError> {
    match output.unwrap_or(Output::Table) {
        Output::Table => Ok(table(items, false)),
        Output::Wide => Ok(table(items, true)),
        Output::Json => Ok(serde_json::to_string_pretty(items)?),
        Output::Yaml => yaml(&items),
    }
}

/// A table of items; `true`: the wide one.
pub type Table<T> = dyn Fn(&[T], bool) -> String;

/// What one record prints as: JSON unless told otherwise; as a table (one row) when the
/// record has one.
pub fn record<T: Serialize>(
    output: Option<Output>,
    item: &T,
    table: Option<&Table<T>>,
) -> Result<String, CtlError> {
    match (output.unwrap_or(Output::Json), table) {
        (Output::Table, Some(table)) => Ok(table(std::slice::from_ref(item), false)),
        (Output::Wide, Some(table)) => Ok(table(std::slice::from_ref(item), true)),
        (Output::Yaml, _) => yaml(item),
        _ => Ok(serde_json::to_string_pretty(item)?),
    }
}

fn yaml<T: Serialize + ?Sized>(value: &T) -> Result<String, CtlError> {
    let text = serde_yaml_ng::to_string(value).map_err(|e| CtlError::Yaml(e.to_string()))?;
    Ok(text.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize)]
    struct Item {
        name: &'static str,
        n: u32,
    }

    fn table(items: &[Item], wide: bool) -> String {
        items
            .iter()
            .map(|i| {
                if wide {
                    format!("{} {}", i.name, i.n)
                } else {
                    i.name.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn lists_are_tables_unless_asked_and_records_json() {
        let items = [Item { name: "a", n: 1 }, Item { name: "b", n: 2 }];
        assert_eq!(list(None, &items, table).expect("table"), "a\nb");
        assert_eq!(
            list(Some(Output::Wide), &items, table).expect("wide"),
            "a 1\nb 2"
        );
        let json: serde_json::Value =
            serde_json::from_str(&list(Some(Output::Json), &items, table).expect("json"))
                .expect("parses");
        assert_eq!(json[1]["n"], 2);
        assert_eq!(
            list(Some(Output::Yaml), &items, table).expect("yaml"),
            "- name: a\n  n: 1\n- name: b\n  n: 2"
        );
        let one = &items[0];
        let json = record(None, one, Some(&table)).expect("json");
        assert!(json.starts_with('{') && json.contains("\"n\": 1"), "{json}");
        assert_eq!(
            record(Some(Output::Yaml), one, None).expect("yaml"),
            "name: a\nn: 1"
        );
        assert_eq!(
            record(Some(Output::Wide), one, Some(&table)).expect("row"),
            "a 1"
        );
        // A record without a table prints JSON when a table is asked for.
        assert!(
            record(Some(Output::Table), one, None)
                .expect("json")
                .starts_with('{')
        );
    }
}
