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

/// A PROPERTY/VALUE table of a JSON object's fields (but those named in `skip`), with no JSON in any cell:
/// text as is, nothing for null, nested objects as `parent.child` rows, lists of values joined with `, `, lists
/// of objects as `list[0].field` rows.
pub fn properties(value: &serde_json::Value, skip: &[&str]) -> Table {
    let mut rows = table(&["PROPERTY", "VALUE"]);
    for (key, field) in value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| !skip.contains(&key.as_str()))
    {
        add_rows(&mut rows, key, field);
    }
    rows
}

fn add_rows(rows: &mut Table, key: &str, field: &serde_json::Value) {
    use serde_json::Value;
    match field {
        Value::Object(object) => {
            for (child, value) in object {
                add_rows(rows, &format!("{key}.{child}"), value);
            }
        }
        Value::Array(items) if items.iter().any(|item| item.is_object() || item.is_array()) => {
            for (index, item) in items.iter().enumerate() {
                add_rows(rows, &format!("{key}[{index}]"), item);
            }
        }
        Value::Array(items) => {
            let texts: Vec<String> = items.iter().map(scalar_text).collect();
            rows.add_row(vec![key.to_owned(), texts.join(", ")]);
        }
        scalar => {
            rows.add_row(vec![key.to_owned(), scalar_text(scalar)]);
        }
    }
}

fn scalar_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_tables_hold_no_json() {
        let value = serde_json::json!({
            "name": "cdp1",
            "gone": null,
            "thresholds": {"storage_alert_gb": 2000, "stop_service_on_transfer_critical": false},
            "boundary_groups": ["hq", "branch"],
            "certificates": [{"kind": "service", "subject": "CN=cdp1"}],
        });
        let text = properties(&value, &[]).to_string();
        for expected in [
            "thresholds.storage_alert_gb",
            "thresholds.stop_service_on_transfer_critical",
            "hq, branch",
            "certificates[0].subject",
            "CN=cdp1",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
        assert!(!text.contains('{') && !text.contains('"'), "{text}");
    }
}

/// Which way a duration on the command line points from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromNow {
    /// `2h` means two hours from now (`--until`).
    Ahead,
    /// `1h` means an hour ago (`--since`).
    Back,
}

/// The time `text` names for `flag`: a duration (`2h`, counted `direction` from now) or an RFC 3339 time.
pub fn time_arg(
    flag: &str,
    text: &str,
    direction: FromNow,
) -> crate::connect::CliResult<prost_types::Timestamp> {
    let now = std::time::SystemTime::now();
    let time = match humantime::parse_duration(text) {
        Ok(duration) => match direction {
            FromNow::Ahead => now + duration,
            FromNow::Back => now.checked_sub(duration).unwrap_or(std::time::UNIX_EPOCH),
        },
        Err(_) => humantime::parse_rfc3339_weak(text).map_err(|_| {
            crate::connect::CliError::Local(format!(
                "{flag} {text:?}: give a duration like 2h or a time like 2026-12-01T08:00:00Z"
            ))
        })?,
    };
    let since_epoch = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(prost_types::Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: 0,
    })
}
