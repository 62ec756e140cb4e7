//! Rendering results: tables for people, JSON for scripts, always on stdout.

use std::io::{self, BufWriter, IsTerminal as _, Write as _};

use clap::ValueEnum;
use comfy_table::{ContentArrangement, Row, Table, presets};
use serde::Serialize;

/// The global `--output` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable tables.
    #[default]
    Table,
    /// JSON, one document per command (or one object per line inside an array for
    /// listings, so large outputs stream).
    Json,
    /// Graphviz DOT: only `tree` draws in it.
    Dot,
}

/// A table in the house style.
pub fn table() -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
    table
}

/// Whether what goes to stdout may be coloured: stdout is a terminal and `NO_COLOR` is not
/// set (<https://no-color.org>).
pub fn colour_on_stdout() -> bool {
    io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Colours the text of `table`'s styled cells, or prints them plain, whatever stdout is.
pub fn set_colour(table: &mut Table, colour: bool) {
    if colour {
        table.enforce_styling();
        table.style_text_only();
    } else {
        table.force_no_tty();
    }
}

/// A two-column table of one thing's fields: a name, then its value, a row each.
pub fn name_value_table<'a>(fields: impl IntoIterator<Item = (&'a str, String)>) -> Table {
    let mut table = table();
    for (name, value) in fields {
        table.add_row([name.to_owned(), value]);
    }
    table
}

/// Prints a table to stdout.
pub fn print_table(table: &Table) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "{table}")?;
    stdout.flush()
}

/// Prints one value as pretty JSON to stdout.
pub fn print_json<T: Serialize>(value: &T) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    stdout.flush()
}

/// Streams a JSON array to a writer, one compact element per line, so a listing of
/// 100,000 documents never has to be held in memory and is easy to `grep`.
#[derive(Debug)]
pub struct JsonArrayWriter<W: io::Write> {
    out: W,
    elements: usize,
}

impl<W: io::Write> JsonArrayWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(b"[")?;
        Ok(Self { out, elements: 0 })
    }

    pub fn push<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        let separator: &[u8] = if self.elements == 0 { b"\n" } else { b",\n" };
        self.out.write_all(separator)?;
        serde_json::to_writer(&mut self.out, value)?;
        self.elements += 1;
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.out
            .write_all(if self.elements == 0 { b"]\n" } else { b"\n]\n" })?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Where a listing's items go: rows of a table printed once all are in, or a JSON array
/// streamed to stdout as they arrive. Each item is pushed with the function that makes
/// its table row, so JSON gets the whole item and the table only what fits a row.
#[derive(Debug)]
pub struct RowSink(Rows);

#[derive(Debug)]
enum Rows {
    Table {
        table: Table,
        /// Said on stderr instead of an empty table; stdout stays empty.
        empty_message: Option<&'static str>,
    },
    Json(JsonArrayWriter<BufWriter<io::StdoutLock<'static>>>),
}

impl RowSink {
    /// A sink for `output`. `header` names the table's columns; `empty_message`, if any,
    /// goes to stderr when nothing was pushed to a table (an empty JSON array needs none).
    pub fn new(
        output: OutputFormat,
        header: impl Into<Row>,
        empty_message: Option<&'static str>,
    ) -> io::Result<Self> {
        Ok(Self(match output {
            OutputFormat::Table | OutputFormat::Dot => {
                let mut table = table();
                table.set_header(header);
                Rows::Table {
                    table,
                    empty_message,
                }
            }
            OutputFormat::Json => {
                Rows::Json(JsonArrayWriter::new(BufWriter::new(io::stdout().lock()))?)
            }
        }))
    }

    /// Adds `item`: serialized whole for JSON, or as `row(item)` for a table.
    pub fn push<T, R>(&mut self, item: &T, row: impl FnOnce(&T) -> R) -> io::Result<()>
    where
        T: Serialize,
        R: Into<Row>,
    {
        match &mut self.0 {
            Rows::Table { table, .. } => {
                table.add_row(row(item));
                Ok(())
            }
            Rows::Json(writer) => writer.push(item),
        }
    }

    /// Prints the table, or closes the JSON array.
    pub fn finish(self) -> io::Result<()> {
        match self.0 {
            Rows::Table { table, .. } if table.row_count() > 0 => print_table(&table),
            Rows::Table { empty_message, .. } => {
                if let Some(message) = empty_message {
                    eprintln!("{message}");
                }
                Ok(())
            }
            Rows::Json(writer) => writer.finish().map(drop),
        }
    }
}

/// Shortens `text` to at most `max` characters, marking the cut with `…`.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_arrays_stream_valid_json() {
        for count in [0, 1, 3] {
            let mut writer = JsonArrayWriter::new(Vec::new()).unwrap();
            for i in 0..count {
                writer.push(&serde_json::json!({ "i": i })).unwrap();
            }
            let bytes = writer.finish().unwrap();
            let parsed: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(parsed.len(), count);
        }
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("セキュリティ更新", 4), "セキュ…");
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}
