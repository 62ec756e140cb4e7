//! `sitesyncctl catalog inspect`: parses update documents and prints their model. A bad
//! document is reported on stderr with its file name; the others are still printed, and
//! the command then exits non-zero.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::{Serialize, Serializer};
use sitesync_metadata::{ParseLimits, Relationship, UpdateRevision, parse_update};

use super::view::{self, UpdateView};
use crate::cli::InspectArgs;
use crate::output::{self, OutputFormat, RowSink};

/// Longest title shown in the table, in characters.
const TITLE_WIDTH: usize = 48;

pub fn run(args: &InspectArgs, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let mut failures = 0usize;
    let files = expand(&args.paths, &mut failures);
    let total = files.len() + failures;
    // No message for an empty table: every document not shown was reported as a failure.
    let mut sink = RowSink::new(
        output,
        [
            "update id",
            "rev",
            "type",
            "state",
            "title",
            "kb",
            "severity",
            "category type",
            "categories",
            "prereqs",
            "bundled",
            "superseded",
            "files",
        ],
        None,
    )?;
    let limits = ParseLimits::default();
    for path in &files {
        let parsed = fs::read(path)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|bytes| parse_update(&bytes, &limits).map_err(|e| e.to_string()));
        match parsed {
            Ok(revision) => sink.push(
                &Inspected {
                    file: path,
                    revision: &revision,
                },
                |inspected| table_row(inspected.revision),
            )?,
            Err(message) => {
                eprintln!("{}: {message}", path.display());
                failures += 1;
            }
        }
    }
    sink.finish()?;
    if failures > 0 {
        eprintln!("{failures} of {total} documents could not be inspected");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The files named on the command line, each directory replaced by its `*.xml` files in
/// name order. Unreadable or empty directories are reported and counted as failures.
fn expand(paths: &[PathBuf], failures: &mut usize) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        match xml_files_in(path) {
            Ok(found) if found.is_empty() => {
                eprintln!(
                    "{}: no *.xml update documents in this directory",
                    path.display()
                );
                *failures += 1;
            }
            Ok(found) => files.extend(found),
            Err(e) => {
                eprintln!("{}: cannot list the directory: {e}", path.display());
                *failures += 1;
            }
        }
    }
    files
}

fn xml_files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let is_xml = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("xml"));
        if is_xml && path.is_file() {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// A parsed document and its file. It serializes as its [`UpdateView`], built only when
/// JSON is written, so a table does not pay for views (and document hashes) it never shows.
struct Inspected<'a> {
    file: &'a Path,
    revision: &'a UpdateRevision,
}

impl Serialize for Inspected<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        UpdateView::new(Some(self.file), self.revision).serialize(serializer)
    }
}

fn table_row(revision: &UpdateRevision) -> [String; 13] {
    let prerequisites = revision
        .prerequisites
        .iter()
        .filter(|r| {
            !matches!(
                r,
                Relationship::AtLeastOne {
                    is_category: true,
                    ..
                }
            )
        })
        .count();
    let bundled: usize = revision.bundled.iter().map(|r| r.members().len()).sum();
    let or_dash = |value: Option<&str>| value.unwrap_or("-").to_owned();
    [
        revision.id.update_id.to_string(),
        revision.id.revision.to_string(),
        view::update_type_name(revision.update_type).to_owned(),
        view::publication_state_name(revision.publication_state).to_owned(),
        output::truncate(revision.title(), TITLE_WIDTH),
        or_dash(revision.kb_article.as_deref()),
        or_dash(revision.msrc_severity.map(view::severity_name)),
        or_dash(revision.category_type.map(view::category_type_name)),
        revision.categories().count().to_string(),
        prerequisites.to_string(),
        bundled.to_string(),
        revision.superseded.len().to_string(),
        revision.files.len().to_string(),
    ]
}
