//! `sitesyncctl import FILE [--dry-run]`: `Admin.ImportCatalog` (S12, `WSUSutil import`).
//!
//! The file is opened read-only and its header and manifest read before connecting, so a
//! file that is no export is refused here with its reason. Then it is streamed as the
//! node expects (the header, then chunks of at most `FILE_CHUNK_BYTES` from offset 0) with a
//! bar of the bytes sent, and a spinner while the node verifies and applies it; stdout gets
//! what the node did. A refusal from the node is its message, exit status 1.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use comfy_table::Table;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sitesync_proto::{FILE_CHUNK_BYTES, v1};

use super::export::inspect;
use super::export::view::archive_kind_name;
use crate::cli::{Cli, ImportArgs};
use crate::client::{Node, printable};
use crate::output::{self, OutputFormat};
use crate::units::anchor_text;
use crate::views::{CatalogVersionView, CountsView, StoreView};

/// How often a line says how far the upload is when stderr is not a terminal.
const LINE_INTERVAL: Duration = Duration::from_secs(10);

pub fn run(cli: &Cli, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let (file, archive) = inspect::open(&args.file)?;
    let total_bytes = archive.len();
    let header = archive.header().clone();
    drop(archive);
    let output = cli.output;
    super::on_node(cli, |node| async move {
        let response = send(node, file, total_bytes, args).await?;
        let view = ImportView::new(&args.file, args.dry_run, &header, &response);
        match output {
            OutputFormat::Json => output::print_json(&view)?,
            OutputFormat::Table | OutputFormat::Dot => output::print_table(&view.table())?,
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Streams `file` to the node and returns its answer.
async fn send(
    mut node: Node,
    mut file: File,
    total_bytes: u64,
    args: &ImportArgs,
) -> anyhow::Result<v1::ImportCatalogResponse> {
    let path = args.file.display().to_string();
    file.seek(SeekFrom::Start(0))
        .with_context(|| format!("cannot read {path}"))?;
    let progress = Progress::new(total_bytes);
    progress.line(&format!(
        "sending {path} ({}) to the node at {}{}",
        HumanBytes(total_bytes),
        node.address,
        if args.dry_run { " for a dry run" } else { "" }
    ));
    let read_failure = Arc::new(Mutex::new(None));
    let chunks = Chunks {
        header: Some(v1::ImportHeader {
            file_name: file_name(&args.file),
            total_bytes,
            dry_run: args.dry_run,
        }),
        file,
        offset: 0,
        total_bytes,
        progress: progress.clone(),
        read_failure: read_failure.clone(),
    };
    let result = node.admin.import_catalog(tokio_stream::iter(chunks)).await;
    progress.bar.finish_and_clear();
    // A file that could not be read ended the stream early; that, not the node's refusal of
    // a short file, is what went wrong.
    if let Some(error) = read_failure
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        return Err(error).with_context(|| format!("cannot read {path} while sending it"));
    }
    Ok(result
        .map_err(|status| node.failed("Admin.ImportCatalog", status))?
        .into_inner())
}

/// The file's name without its directory, for the node's messages.
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The import stream: the header, then the file in chunks from offset 0. Reads lazily, as
/// the transport asks for more, so a file of any size goes in bounded memory.
#[derive(Debug)]
struct Chunks {
    /// Sent first; `None` once sent.
    header: Option<v1::ImportHeader>,
    file: File,
    /// Bytes read so far: the next chunk's offset.
    offset: u64,
    total_bytes: u64,
    progress: Progress,
    /// Set when the file cannot be read: the stream ends there and [`send`] reports it.
    read_failure: Arc<Mutex<Option<std::io::Error>>>,
}

impl Iterator for Chunks {
    type Item = v1::ImportCatalogChunk;

    fn next(&mut self) -> Option<Self::Item> {
        use v1::import_catalog_chunk::Kind;
        if let Some(header) = self.header.take() {
            return Some(v1::ImportCatalogChunk {
                kind: Some(Kind::Header(header)),
            });
        }
        if self.offset >= self.total_bytes {
            self.progress.all_sent();
            return None;
        }
        let size = (self.total_bytes - self.offset).min(FILE_CHUNK_BYTES as u64) as usize;
        let mut data = vec![0; size];
        if let Err(error) = self.file.read_exact(&mut data) {
            *self
                .read_failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(error);
            self.total_bytes = self.offset;
            return None;
        }
        let chunk = v1::FileChunk {
            offset: self.offset,
            data,
        };
        self.offset += size as u64;
        self.progress.sent(self.offset);
        Some(v1::ImportCatalogChunk {
            kind: Some(Kind::Chunk(chunk)),
        })
    }
}

/// What stderr shows: a bar of the bytes sent, then a spinner until the node answers, at a
/// terminal; otherwise a line at the start, every [`LINE_INTERVAL`] and once all is sent.
#[derive(Debug, Clone)]
struct Progress {
    bar: ProgressBar,
    /// Whether stderr is a terminal the bar is drawn on.
    terminal: bool,
    /// When the last line was printed (without a terminal); shared by the clones.
    last_line: Arc<Mutex<Option<Instant>>>,
}

impl Progress {
    fn new(total_bytes: u64) -> Self {
        let bar = ProgressBar::hidden()
            .with_style(style(
                "{spinner} {prefix} [{bar:30}] {bytes}/{total_bytes} ({percent}%) · {binary_bytes_per_sec}",
            ))
            .with_prefix("sending");
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_length(total_bytes);
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            terminal: !bar.is_hidden(),
            bar,
            last_line: Arc::new(Mutex::new(None)),
        }
    }

    fn line(&self, text: &str) {
        if self.terminal {
            self.bar.println(text);
        } else {
            eprintln!("{text}");
        }
        *self
            .last_line
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    fn sent(&self, bytes: u64) {
        self.bar.set_position(bytes);
        if self.terminal {
            return;
        }
        let mut last = self
            .last_line
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= LINE_INTERVAL) {
            eprintln!(
                "sent {} of {}",
                HumanBytes(bytes),
                HumanBytes(self.bar.length().unwrap_or(bytes))
            );
            *last = Some(Instant::now());
        }
    }

    /// Every byte is handed to the transport: from now on the node is working.
    fn all_sent(&self) {
        if self.bar.prefix() == "verifying and applying" {
            return;
        }
        self.bar.set_style(style("{spinner} {prefix} · {elapsed}"));
        self.bar.set_prefix("verifying and applying");
        self.line("sent the whole file; the node is verifying and applying it");
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .progress_chars("=> ")
}

/// What `import` prints.
#[derive(Debug, Serialize)]
struct ImportView {
    /// The file as named on the command line.
    file: String,
    /// Whether it was a dry run: the file verified, nothing changed.
    dry_run: bool,
    /// The node already held the file's target: nothing changed.
    already_held: bool,
    /// The sync the import ran as; null for a dry run or a file already held.
    sync_id: Option<u64>,
    /// The file as the node verified it (the local header when the node sent none).
    source_site: String,
    /// `full` or `incremental`.
    kind: &'static str,
    base: Option<String>,
    target: Option<String>,
    /// What changed in the update-server store.
    counts: CountsView,
    /// The update-server store after the import.
    update_server: Option<StoreView>,
    /// The signed catalog version the node holds now.
    catalog_version: Option<CatalogVersionView>,
}

impl ImportView {
    fn new(
        file: &Path,
        dry_run: bool,
        local: &v1::ArchiveHeader,
        response: &v1::ImportCatalogResponse,
    ) -> Self {
        let header = response.header.as_ref().unwrap_or(local);
        Self {
            file: file.display().to_string(),
            dry_run,
            already_held: response.already_held,
            sync_id: (response.sync_id != 0).then_some(response.sync_id),
            source_site: printable(&header.source_site),
            kind: archive_kind_name(header.kind),
            base: header.base.as_ref().map(|a| printable(&anchor_text(a))),
            target: header.target.as_ref().map(|a| printable(&anchor_text(a))),
            counts: CountsView::new(response.counts.as_ref()),
            update_server: response.update_server.as_ref().map(StoreView::new),
            catalog_version: response
                .catalog_version
                .as_ref()
                .and_then(CatalogVersionView::new),
        }
    }

    fn table(&self) -> Table {
        let result = match (self.dry_run, self.already_held) {
            (true, false) => "dry run: the file verifies; nothing changed",
            (true, true) => "dry run: the node already holds the file's target; nothing changed",
            (false, true) => "already held: nothing changed",
            (false, false) => "imported",
        };
        let span = match (&self.base, &self.target) {
            (Some(base), Some(target)) => format!("{base} to {target}"),
            (None, Some(target)) => format!("up to {target}"),
            _ => "-".to_owned(),
        };
        let update_server = self.update_server.as_ref();
        output::name_value_table([
            ("file", self.file.clone()),
            (
                "export",
                format!("{} from {}, {span}", self.kind, self.source_site),
            ),
            ("result", result.to_owned()),
            (
                "sync",
                self.sync_id
                    .map_or_else(|| "-".to_owned(), |id| id.to_string()),
            ),
            ("new", self.counts.new.to_string()),
            ("changed", self.counts.changed.to_string()),
            ("expired", self.counts.expired.to_string()),
            ("deleted", self.counts.deleted.to_string()),
            (
                "update-server digest",
                update_server.map_or_else(|| "-".to_owned(), StoreView::short_digest),
            ),
            (
                "update-server sequence",
                update_server.map_or_else(|| "-".to_owned(), |s| s.sequence.to_string()),
            ),
            (
                "catalog version",
                self.catalog_version
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |v| v.version.to_string()),
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_says_what_the_node_did() {
        let local = v1::ArchiveHeader {
            source_site: "CEN".into(),
            kind: v1::ArchiveKind::Incremental.into(),
            base: Some(v1::Anchor {
                log_id: "log".into(),
                sequence: 10,
                snapshot_through: None,
            }),
            target: Some(v1::Anchor {
                log_id: "log".into(),
                sequence: 40,
                snapshot_through: None,
            }),
            ..Default::default()
        };
        let response = v1::ImportCatalogResponse {
            header: None,
            already_held: false,
            sync_id: 7,
            counts: Some(v1::SyncCounts {
                new: 3,
                deleted: 27,
                ..Default::default()
            }),
            update_server: Some(v1::StoreInfo {
                latest: local.target.clone(),
                digest: Some(v1::CatalogDigest {
                    value: vec![0xab; 32],
                }),
                ..Default::default()
            }),
            catalog_version: None,
        };
        let view = ImportView::new(Path::new("cen.ssx"), false, &local, &response);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["sync_id"], 7);
        assert_eq!(json["already_held"], false);
        assert_eq!(json["base"], "log:10");
        assert_eq!(json["counts"]["deleted"], 27);
        assert_eq!(json["update_server"]["digest"], "ab".repeat(32));
        assert_eq!(json["update_server"]["sequence"], 40);
        assert_eq!(json["catalog_version"], serde_json::Value::Null);
        let text = view.table().to_string();
        assert!(
            text.contains("incremental from CEN, log:10 to log:40"),
            "{text}"
        );
        assert!(text.contains("imported"), "{text}");
        assert!(text.contains(&"ab".repeat(8)), "{text}");

        let held = v1::ImportCatalogResponse {
            already_held: true,
            sync_id: 0,
            ..response
        };
        let view = ImportView::new(Path::new("cen.ssx"), false, &local, &held);
        assert_eq!(
            serde_json::to_value(&view).unwrap()["sync_id"],
            serde_json::Value::Null
        );
        assert!(view.table().to_string().contains("already held"));
    }
}
