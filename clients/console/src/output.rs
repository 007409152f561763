//! Tables for people and JSON for scripts.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns.
    Table,
    /// One JSON document.
    Json,
}

/// A table with `headers`, ready for rows.
pub fn table(headers: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(headers.to_vec());
    table
}

/// A PROPERTY/VALUE table of a JSON object's fields (but those named in `skip`): text as is, nothing for null,
/// anything else as JSON.
pub fn properties(value: &serde_json::Value, skip: &[&str]) -> Table {
    let mut rows = table(&["PROPERTY", "VALUE"]);
    for (key, field) in value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| !skip.contains(&key.as_str()))
    {
        let text = match field {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        rows.add_row(vec![key.clone(), text]);
    }
    rows
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &serde_json::Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("clouddp: cannot print JSON: {error}"),
    }
}

/// RFC 3339 text of a protobuf timestamp, or an empty string.
pub fn time_text(timestamp: Option<&prost_types::Timestamp>) -> String {
    let Some(timestamp) = timestamp else {
        return String::new();
    };
    let Ok(seconds) = u64::try_from(timestamp.seconds) else {
        return String::new();
    };
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    humantime::format_rfc3339_seconds(time).to_string()
}
