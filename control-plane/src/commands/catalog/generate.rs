//! `sitesyncctl catalog generate`: writes a generated catalog into a directory, with a
//! progress bar on a terminal and a summary at the end.

use std::fs;
use std::io;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sitesync_metadata::UpdateId;
use sitesync_metadata::generate::{CatalogSpec, CatalogSummary, write_catalog};

use crate::cli::GenerateArgs;
use crate::output::{self, OutputFormat};

/// What `catalog generate` reports on stdout.
#[derive(Debug, Serialize)]
struct GenerateReport {
    directory: String,
    seed: u64,
    documents: usize,
    bytes: u64,
    categories: usize,
    software: usize,
    drivers: usize,
    detectoids: usize,
    expired: usize,
    largest_document_bytes: u64,
    /// Catalog documents of an earlier catalog removed because of `--force`.
    removed_documents: usize,
    elapsed_seconds: f64,
}

pub fn run(args: &GenerateArgs, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let removed = prepare_directory(&args.out, args.force)?;
    if removed > 0 {
        eprintln!(
            "removed {removed} catalog documents of an earlier catalog from `{}`",
            args.out.display()
        );
    }

    let spec = CatalogSpec::new(args.updates, args.seed);
    // Drawn on stderr only when it is a terminal, so scripts see no progress noise.
    let bar = ProgressBar::with_draw_target(Some(args.updates as u64), ProgressDrawTarget::stderr())
        .with_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} documents ({percent}%), {msg}, {eta} left",
            )?
            .progress_chars("=> "),
        );
    bar.set_message(HumanBytes(0).to_string());
    let started = Instant::now();
    let summary = write_catalog(&args.out, &spec, |progress| {
        bar.set_position(progress.written as u64);
        if progress.written % 256 == 0 {
            bar.set_message(HumanBytes(progress.bytes).to_string());
        }
    })
    .with_context(|| format!("cannot write the catalog into `{}`", args.out.display()))?;
    let elapsed = started.elapsed();
    bar.finish_and_clear();

    let report = GenerateReport::new(&args.out, &spec, &summary, removed, elapsed);
    match output {
        OutputFormat::Json => output::print_json(&report)?,
        OutputFormat::Table | OutputFormat::Dot => output::print_table(&report.table(elapsed))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes sure `dir` may receive a catalog: missing or empty is fine; otherwise `--force` is
/// required, and then the catalog documents already there are removed so the directory
/// holds exactly the new catalog. Returns how many were removed.
fn prepare_directory(dir: &Path, force: bool) -> anyhow::Result<usize> {
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot examine `{}`", dir.display())),
        Ok(meta) if !meta.is_dir() => {
            bail!("`{}` exists and is not a directory", dir.display())
        }
        Ok(_) => {}
    }
    let entries = fs::read_dir(dir)
        .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
        .with_context(|| format!("cannot list `{}`", dir.display()))?;
    if entries.is_empty() {
        return Ok(0);
    }
    if !force {
        bail!(
            "`{}` is not empty ({} entries); choose an empty directory, or pass --force to \
             replace the catalog documents in it",
            dir.display(),
            entries.len()
        );
    }
    let mut removed = 0;
    for entry in entries {
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && is_catalog_document(&entry.file_name().to_string_lossy()) {
            fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove `{}`", entry.path().display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// `<update id>-r<revision>.xml`, the names a directory catalog uses.
fn is_catalog_document(name: &str) -> bool {
    let Some((id, revision)) = name
        .strip_suffix(".xml")
        .and_then(|stem| stem.rsplit_once("-r"))
    else {
        return false;
    };
    !revision.is_empty()
        && revision.bytes().all(|b| b.is_ascii_digit())
        && id.parse::<UpdateId>().is_ok()
}

impl GenerateReport {
    fn new(
        dir: &Path,
        spec: &CatalogSpec,
        summary: &CatalogSummary,
        removed: usize,
        elapsed: Duration,
    ) -> Self {
        Self {
            directory: dir.display().to_string(),
            seed: spec.seed,
            documents: summary.documents,
            bytes: summary.bytes,
            categories: summary.categories,
            software: summary.software,
            drivers: summary.drivers,
            detectoids: summary.detectoids,
            expired: summary.expired,
            largest_document_bytes: summary.largest_document,
            removed_documents: removed,
            elapsed_seconds: elapsed.as_secs_f64(),
        }
    }

    fn table(&self, elapsed: Duration) -> comfy_table::Table {
        let rate = self.documents as f64 / elapsed.as_secs_f64().max(1e-9);
        let rows: [(&str, String); 11] = [
            ("directory", self.directory.clone()),
            ("seed", self.seed.to_string()),
            ("documents", self.documents.to_string()),
            (
                "bytes",
                format!("{} ({})", self.bytes, HumanBytes(self.bytes)),
            ),
            ("categories", self.categories.to_string()),
            ("software updates", self.software.to_string()),
            ("drivers", self.drivers.to_string()),
            ("detectoids", self.detectoids.to_string()),
            ("expired revisions", self.expired.to_string()),
            (
                "largest document",
                HumanBytes(self.largest_document_bytes).to_string(),
            ),
            (
                "time",
                format!("{:.2} s ({rate:.0} documents/s)", elapsed.as_secs_f64()),
            ),
        ];
        output::name_value_table(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_document_names() {
        assert!(is_catalog_document(
            "56309036-4c77-4dd9-951a-99ee9c246a94-r101.xml"
        ));
        assert!(!is_catalog_document(
            "56309036-4c77-4dd9-951a-99ee9c246a94-r.xml"
        ));
        assert!(!is_catalog_document(
            "56309036-4c77-4dd9-951a-99ee9c246a94-r101.txt"
        ));
        assert!(!is_catalog_document("notes-r1.xml"));
        assert!(!is_catalog_document("README.md"));
    }
}
