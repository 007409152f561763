//! Tables for people and JSON for scripts.

use std::io::Write;

/// Prints a line to standard output through [`write_line`]: like `println!`, but a reader that went away
/// (`clouddp alerts list | head`) ends the command quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use out;

/// Writes one line to standard output. When the reader closed the pipe the command has nothing left to do: it
/// exits with 0, as the output it was asked for went as far as it was wanted. Any other write error exits 1.
pub fn write_line(line: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(line)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(error) => {
            eprintln!("clouddp: cannot write the output: {error}");
            std::process::exit(i32::from(crate::EXIT_FAILED));
        }
    }
}

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
        Ok(text) => out!("{text}"),
        Err(error) => eprintln!("clouddp: cannot print JSON: {error}"),
    }
}

/// RFC 3339 text of a protobuf timestamp, or an empty string.
pub fn time_text(timestamp: Option<&prost_types::Timestamp>) -> String {
    let Some(timestamp) = timestamp else {
        return String::new();
    };
    clouddp_core::time::rfc3339_seconds(timestamp.seconds)
}
