//! What an export file looks like to operators: the view `export inspect` prints and
//! `export` prints of the file it wrote, as a table or as JSON with the same fields.

use std::io::{Read, Seek};
use std::path::Path;

use comfy_table::Table;
use indicatif::HumanBytes;
use serde::Serialize;
use sitesync_archive::{Archive, Verified, v1};
use sitesync_security::Identity;

use crate::client::printable;
use crate::output::{self, hex};
use crate::units::{anchor_text, rfc3339_opt, to_the_second};
use crate::views::{CatalogVersionView, short_digest};

/// An export file: its header, its size, and what checking it found.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveView {
    /// The file as named on the command line.
    pub file: String,
    pub format_version: u32,
    /// The site whose node exported the file.
    pub source_site: String,
    /// `full` or `incremental`.
    pub kind: &'static str,
    /// The signed catalog version the file reaches, decoded (its signature is checked by
    /// the importing node); null when it does not decode.
    pub catalog_version: Option<CatalogVersionView>,
    /// Where an importer must stand (`log-id:sequence`); null for a full file.
    pub base: Option<String>,
    /// Where an importer stands once the file is imported.
    pub target: Option<String>,
    pub revisions: RevisionsView,
    /// The update-server digest at the target, 64 hex characters.
    pub update_server_digest: Option<String>,
    /// The site-database digest of the catalog version; null when it has none.
    pub site_database_digest: Option<String>,
    /// The file's length.
    pub bytes: u64,
    /// When the export started.
    pub created_at: Option<String>,
    /// Chunks the manifest lists.
    pub chunks: usize,
    /// The site whose key signed the manifest; null until the signature is verified.
    pub signer: Option<String>,
    /// Whether the file verified: null when not asked (`--verify`).
    pub verified: Option<bool>,
    /// Why the file did not verify; null otherwise.
    pub error: Option<String>,
}

/// The records a file carries, by kind, and the revisions the store holds at its target.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RevisionsView {
    /// Revisions of a full file's snapshot.
    pub snapshot: u64,
    pub new: u64,
    pub changed: u64,
    pub expired: u64,
    pub deleted: u64,
    /// Revisions the exporting store held at the target.
    pub revision_count: u64,
}

impl ArchiveView {
    /// The view of an opened file, nothing verified yet.
    pub fn new<R: Read + Seek>(file: &Path, archive: &Archive<R>) -> Self {
        let mut view = Self::of_header(file, archive.header());
        view.bytes = archive.len();
        view.chunks = archive.chunk_count();
        view
    }

    /// The view of a header alone (as a node returns it after an import).
    pub fn of_header(file: &Path, header: &v1::ArchiveHeader) -> Self {
        let counts = header.counts.unwrap_or_default();
        Self {
            file: file.display().to_string(),
            format_version: header.format_version,
            source_site: printable(&header.source_site),
            kind: archive_kind_name(header.kind),
            catalog_version: header
                .catalog_version
                .as_ref()
                .and_then(CatalogVersionView::new),
            base: header.base.as_ref().map(|a| printable(&anchor_text(a))),
            target: header.target.as_ref().map(|a| printable(&anchor_text(a))),
            revisions: RevisionsView {
                snapshot: counts.snapshot,
                new: counts.new,
                changed: counts.changed,
                expired: counts.expired,
                deleted: counts.deleted,
                revision_count: header.revision_count,
            },
            update_server_digest: header.update_server_digest.as_ref().map(|d| hex(&d.value)),
            site_database_digest: header.site_database_digest.as_ref().map(|d| hex(&d.value)),
            bytes: 0,
            created_at: rfc3339_opt(header.created_at.as_ref()),
            chunks: 0,
            signer: None,
            verified: None,
            error: None,
        }
    }

    /// Records what `--verify` found.
    pub fn set_verified(&mut self, result: Result<&Verified, String>) {
        match result {
            Ok(verified) => {
                self.signer = Some(signer_name(&verified.signer));
                self.verified = Some(true);
                self.error = None;
            }
            Err(error) => {
                self.verified = Some(false);
                self.error = Some(error);
            }
        }
    }

    /// The file for people: one row per field.
    pub fn table(&self) -> Table {
        let or_dash = |value: Option<&str>| value.map_or_else(|| "-".to_owned(), str::to_owned);
        let RevisionsView {
            snapshot,
            new,
            changed,
            expired,
            deleted,
            revision_count,
        } = self.revisions;
        let rows: Vec<(&str, String)> = vec![
            ("file", self.file.clone()),
            ("format version", self.format_version.to_string()),
            ("source site", self.source_site.clone()),
            ("kind", self.kind.to_owned()),
            (
                "catalog version",
                match &self.catalog_version {
                    Some(version) => format!(
                        "{} (top site {}, issued {}, expires {})",
                        version.version,
                        version.top_site_code,
                        to_the_second(version.issued_at.as_deref().unwrap_or("-")),
                        to_the_second(version.expires_at.as_deref().unwrap_or("-")),
                    ),
                    None => "- (does not decode)".to_owned(),
                },
            ),
            (
                "base",
                self.base
                    .clone()
                    .unwrap_or_else(|| "- (a full file imports anywhere)".to_owned()),
            ),
            ("target", or_dash(self.target.as_deref())),
            (
                "records",
                format!(
                    "snapshot {snapshot}, new {new}, changed {changed}, expired {expired}, \
                     deleted {deleted}"
                ),
            ),
            ("revisions at target", revision_count.to_string()),
            (
                "update-server digest",
                short_digest(self.update_server_digest.as_deref()),
            ),
            (
                "site-database digest",
                short_digest(self.site_database_digest.as_deref()),
            ),
            (
                "size",
                format!("{} bytes ({})", self.bytes, HumanBytes(self.bytes)),
            ),
            (
                "created",
                or_dash(self.created_at.as_deref().map(to_the_second).as_deref()),
            ),
            ("chunks", self.chunks.to_string()),
            ("signer", or_dash(self.signer.as_deref())),
            (
                "verified",
                match self.verified {
                    None => "not checked (--verify checks it)".to_owned(),
                    Some(true) => "yes: signature and every chunk".to_owned(),
                    // The reason is the command's error, on stderr.
                    Some(false) => "NO: see the error".to_owned(),
                },
            ),
        ];
        output::name_value_table(rows)
    }
}

/// `full`, `incremental`, or `unknown` for a kind this build does not know.
pub fn archive_kind_name(raw: i32) -> &'static str {
    match v1::ArchiveKind::try_from(raw) {
        Ok(v1::ArchiveKind::Full) => "full",
        Ok(v1::ArchiveKind::Incremental) => "incremental",
        _ => "unknown",
    }
}

/// A signer as the other fields name sites: its site code.
fn signer_name(signer: &Identity) -> String {
    signer
        .site_code()
        .map_or_else(|| signer.to_string(), str::to_owned)
}
