//! Rendering results: tables for people, JSON for scripts, always on stdout.

use std::io::{self, Write as _};

use clap::ValueEnum;
use comfy_table::{ContentArrangement, Table, presets};
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
}

/// A table in the house style.
pub fn table() -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Disabled);
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
