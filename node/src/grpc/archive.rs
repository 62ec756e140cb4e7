//! Export files (S12) at the wire edge: an export file is the contract's change batches
//! written to disk (`sitesync-archive`), so writing and reading one converts between the
//! domain's feed and the wire types here, with the other conversions.
//!
//! - [`export`] writes the update-server store's feed — a snapshot for a full file, the log
//!   after an earlier file's target for an incremental one — into a sink, signed with this
//!   site's key, with the header's counts taken from the log first.
//! - [`FileFeed`] is a verified file as a [`ParentFeed`]: the sync manager imports it
//!   exactly as it pulls from a parent.
//! - [`import`] is the whole import, shared by `Admin.ImportCatalog` and
//!   `sitesync-node import`: verify the file, decide where it applies, queue it as the
//!   node's sync and wait for it.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sitesync_archive::{Archive, ArchiveError, Verified, Writer, anchor_text};
use sitesync_metadata::CatalogDigest;
use sitesync_proto::convert::timestamp_to_wire;
use sitesync_proto::v1;
use sitesync_security::Transport;
use sitesync_security::signing::Signer;

use crate::config::UpstreamConfig;
use crate::feed::follow::stored_pull_anchor;
use crate::feed::produce::{BatchProducer, ChangesStart, RecordCounts};
use crate::feed::{
    Anchor, Batch, ChangeStream, ChangesMessage, ChangesPlan, FeedError, FeedFuture, ParentCatalog,
    ParentFeed, StorePosition, SubscribeRequest, Subscription,
};
use crate::node::NodeState;
use crate::store::StoreError;
use crate::sync::manager::{SyncManager, SyncResult, SyncRun};
use crate::telemetry::TraceContext;

/// Why an export or an import is refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveFailure {
    /// The file itself is wrong: it names what.
    #[error("{0}")]
    File(#[from] ArchiveError),
    /// The file is sound but does not apply here (its base, its version).
    #[error("{0}")]
    Precondition(String),
    /// The node cannot do it as configured.
    #[error("{0}")]
    Refused(String),
    /// The catalog changed meanwhile; doing it again helps.
    #[error("{0}")]
    Busy(String),
    /// The import ran as a sync, and the sync failed.
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an export stream says before its bytes.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub header: v1::ArchiveHeader,
    pub estimated_records: u64,
}

/// Plans the export of the update-server store: the whole catalog, or with `since` the
/// changes after it. Checks that the store holds its signed catalog version and that
/// `since` can be served as a log tail.
pub fn plan_export(
    node: &NodeState,
    since: Option<Anchor>,
) -> Result<(ExportPlan, ChangesStart), ArchiveFailure> {
    let Transport::Tls(_) = &node.transport else {
        return Err(ArchiveFailure::Refused(
            "export needs mutual TLS: the file is signed with this site's key".into(),
        ));
    };
    let held = node
        .catalog_versions
        .as_ref()
        .and_then(|versions| versions.held())
        .ok_or_else(|| {
            ArchiveFailure::Refused(
                "this node holds no signed catalog version yet: export after its first sync".into(),
            )
        })?;
    let store = node.database.update_server();
    let state = store.state();
    if held.update_server_digest() != Some(state.digest) {
        return Err(ArchiveFailure::Busy(format!(
            "the update server is not at its signed catalog version {} (a sync is running or did not finish): export once the sync has finished",
            held.number()
        )));
    }
    let start = ChangesStart::of(since, &state).map_err(|e| match e {
        crate::feed::produce::ProduceError::ReaderAhead { .. } => {
            ArchiveFailure::Precondition(e.to_string())
        }
        crate::feed::produce::ProduceError::Store(e) => e.into(),
    })?;
    if let Some(since) = since {
        if since.log_id != state.log_id {
            return Err(ArchiveFailure::Precondition(format!(
                "the earlier file ends on the change log {}, but this node's update server keeps the log {}: export a full file",
                since.log_id_text(),
                crate::feed::log_id_text(state.log_id)
            )));
        }
        if since.snapshot_through.is_some() || !start.is_tail() {
            return Err(ArchiveFailure::Precondition(format!(
                "this node's change log no longer reaches back to sequence {} (it keeps the records from {} on): export a full file",
                since.sequence, state.first_retained_sequence
            )));
        }
    }
    let counts = RecordCounts::of(&start, store)?;
    let target = start.target_anchor();
    let header = v1::ArchiveHeader {
        format_version: sitesync_archive::FORMAT_VERSION,
        source_site: node.config.site_code.to_string(),
        kind: if since.is_some() {
            v1::ArchiveKind::Incremental
        } else {
            v1::ArchiveKind::Full
        } as i32,
        catalog_version: Some(held.signed.clone()),
        update_server_digest: Some(state.digest.into()),
        site_database_digest: held.site_database_digest().map(Into::into),
        base: since.map(Into::into),
        target: Some(target.into()),
        counts: Some(v1::ArchiveCounts {
            snapshot: counts.snapshot,
            new: counts.new,
            changed: counts.changed,
            expired: counts.expired,
            deleted: counts.deleted,
        }),
        revision_count: state.revisions,
        created_at: Some(timestamp_to_wire(node.clock.now())),
    };
    let estimated_records =
        counts.snapshot + counts.new + counts.changed + counts.expired + counts.deleted;
    Ok((
        ExportPlan {
            header,
            estimated_records,
        },
        start,
    ))
}

/// Writes the planned export into `sink` (blocking): every batch of the feed, then the
/// manifest signed with this site's key. Fails when the store changed meanwhile.
pub fn export<W: Write>(
    node: &NodeState,
    plan: &ExportPlan,
    start: &ChangesStart,
    sink: W,
) -> Result<W, ArchiveFailure> {
    let Transport::Tls(tls) = &node.transport else {
        return Err(ArchiveFailure::Refused("export needs mutual TLS".into()));
    };
    let signer = Signer::load(tls.files()).map_err(|e| {
        ArchiveFailure::Refused(format!("cannot load this site's key to sign the file: {e}"))
    })?;
    let store = node.database.update_server();
    let target = start.target.last_sequence;
    let mut writer = Writer::start(sink, &plan.header)?;
    let mut producer = BatchProducer::new(start, sitesync_proto::TARGET_BATCH_BYTES, true);
    while let Some(batch) = producer.next_batch(store, None, target)? {
        writer.chunk(&v1::ChangeBatch::from(batch))?;
    }
    let now = store.state();
    if now.last_sequence != target || now.log_id != start.target.log_id {
        return Err(ArchiveFailure::Busy(
            "the update server changed during the export (a sync ran): run the export again".into(),
        ));
    }
    writer.finish(&signer).map_err(|e| match e {
        ArchiveError::Write(reason) => ArchiveFailure::Busy(reason),
        other => other.into(),
    })
}

/// A verified export file as a feed.
#[derive(Debug)]
pub struct FileFeed {
    /// The file's name, for messages.
    name: String,
    header: v1::ArchiveHeader,
    verified: Verified,
    base: Option<Anchor>,
    target: Anchor,
    /// Where each chunk leaves the importer.
    resumes: Vec<Anchor>,
    digest: CatalogDigest,
    archive: Arc<Mutex<Archive<File>>>,
}

/// Where an import applies, given where the store stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStart {
    /// The store stands at the file's target already.
    Held,
    /// From chunk `first`; with `from`, the first batch (a full file's snapshot start, which
    /// applies at any position) is applied from there.
    Chunk {
        first: usize,
        from: Option<Option<Anchor>>,
    },
}

impl FileFeed {
    /// Opens the file at `path` and verifies all of it: the signature against `cas` (DER),
    /// then every chunk (see [`Archive::verify`]). `progress` is told of each chunk.
    pub fn open(
        path: &Path,
        name: &str,
        cas: &[rustls::pki_types::CertificateDer<'_>],
        is_revoked: impl Fn(&[u8]) -> bool,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self, ArchiveFailure> {
        let file = File::open(path).map_err(ArchiveError::from)?;
        let mut archive = Archive::open(file)?;
        archive.verify_signature(cas, is_revoked, SystemTime::now())?;
        let verified = archive.verify(progress)?;
        let header = archive.header().clone();
        let anchor = |wire: v1::Anchor, what: &str| {
            Anchor::try_from(wire).map_err(|e| {
                ArchiveFailure::File(ArchiveError::Inconsistent(format!(
                    "the {what} anchor: {e}"
                )))
            })
        };
        let base = header.base.clone().map(|b| anchor(b, "base")).transpose()?;
        let target = anchor(header.target.clone().unwrap_or_default(), "target")?;
        let resumes = verified
            .resumes
            .iter()
            .map(|r| anchor(r.clone(), "chunk's resume"))
            .collect::<Result<_, _>>()?;
        let digest = header
            .update_server_digest
            .clone()
            .map(CatalogDigest::try_from)
            .transpose()
            .map_err(|e| ArchiveError::Inconsistent(format!("the update-server digest: {e}")))?
            .ok_or(ArchiveError::Missing {
                what: "header",
                field: "update_server_digest",
            })?;
        Ok(Self {
            name: name.to_owned(),
            header,
            verified,
            base,
            target,
            resumes,
            digest,
            archive: Arc::new(Mutex::new(archive)),
        })
    }

    pub fn header(&self) -> &v1::ArchiveHeader {
        &self.header
    }

    pub fn verified(&self) -> &Verified {
        &self.verified
    }

    /// Where the file applies for a store standing at `position`, or why it does not.
    pub fn start_for(&self, position: Option<Anchor>) -> Result<FileStart, String> {
        if position == Some(self.target) {
            return Ok(FileStart::Held);
        }
        if let Some(at) = position
            && let Some(index) = self.resumes.iter().position(|r| *r == at)
        {
            // An import of this file was cut off after chunk `index`.
            return Ok(FileStart::Chunk {
                first: index + 1,
                from: None,
            });
        }
        let full = self.header.kind == v1::ArchiveKind::Full as i32;
        if full {
            return Ok(FileStart::Chunk {
                first: 0,
                from: Some(position),
            });
        }
        if position == self.base {
            return Ok(FileStart::Chunk {
                first: 0,
                from: None,
            });
        }
        let base = anchor_text(self.header.base.as_ref());
        Err(match position {
            None => format!(
                "this incremental file starts at {base}, and this node has imported nothing yet: import a full file first"
            ),
            Some(at) => format!(
                "this incremental file starts at {base}, but this node's update server stands at {}: import the files that lead there first, in order, or a full file",
                anchor_text(Some(&at.into()))
            ),
        })
    }
}

impl ParentFeed for FileFeed {
    fn address(&self) -> &str {
        &self.name
    }

    fn catalog(&self) -> FeedFuture<'_, ParentCatalog> {
        Box::pin(async move {
            Ok(ParentCatalog {
                digest: self.digest,
                catalog_version: self.header.catalog_version.clone(),
            })
        })
    }

    fn changes(&self, since: Option<Anchor>) -> FeedFuture<'_, Box<dyn ChangeStream>> {
        Box::pin(async move {
            let (first, from) = match self.start_for(since).map_err(FeedError::File)? {
                FileStart::Held => (self.resumes.len(), None),
                FileStart::Chunk { first, from } => (first, from),
            };
            let stream: Box<dyn ChangeStream> = Box::new(FileStream {
                archive: self.archive.clone(),
                next: first,
                end: self.resumes.len(),
                from,
                plan: Some(ChangesPlan {
                    target: Some(self.target),
                    snapshot: self.header.kind == v1::ArchiveKind::Full as i32 && first == 0,
                    estimated_changes: (self.resumes.len() - first) as u64,
                }),
                digest: Some(self.digest),
            });
            Ok(stream)
        })
    }

    fn subscribe(&self, _request: SubscribeRequest) -> FeedFuture<'_, Box<dyn Subscription>> {
        Box::pin(async move {
            Err(FeedError::File(
                "an export file carries an update server only; there is no site database to follow"
                    .into(),
            ))
        })
    }

    fn site_database(&self) -> FeedFuture<'_, StorePosition> {
        Box::pin(async move {
            Err(FeedError::File(
                "an export file carries an update server only; there is no site database".into(),
            ))
        })
    }
}

/// The batches of a file from one chunk on, as a change stream.
#[derive(Debug)]
struct FileStream {
    archive: Arc<Mutex<Archive<File>>>,
    next: usize,
    end: usize,
    /// The first batch's `from`, when it is a snapshot start applied where the store is.
    from: Option<Option<Anchor>>,
    plan: Option<ChangesPlan>,
    digest: Option<CatalogDigest>,
}

impl ChangeStream for FileStream {
    fn next(&mut self) -> FeedFuture<'_, Option<ChangesMessage>> {
        Box::pin(async move {
            if let Some(plan) = self.plan.take() {
                return Ok(Some(ChangesMessage::Plan(plan)));
            }
            if self.next < self.end {
                let index = self.next;
                self.next += 1;
                let wire = {
                    let mut archive = self.archive.lock().unwrap_or_else(|p| p.into_inner());
                    archive.batches(index).next()
                };
                let wire = wire
                    .ok_or_else(|| FeedError::File(format!("chunk {index} is missing")))?
                    .map_err(|e| FeedError::File(e.to_string()))?;
                let mut batch = Batch::try_from(wire)?;
                if let Some(from) = self.from.take() {
                    batch.from = from;
                }
                return Ok(Some(ChangesMessage::Batch(batch)));
            }
            Ok(self
                .digest
                .take()
                .map(|digest| ChangesMessage::Complete { digest }))
        })
    }
}

/// Where files being imported over `Admin.ImportCatalog` are received.
pub fn spool_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("import")
}

/// Removes files left in the spool by imports cut off by a stop: their imports are over.
pub fn remove_stale_spools(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(spool_dir(data_dir)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("incoming-")
            && let Err(e) = std::fs::remove_file(entry.path())
        {
            tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a stale import spool");
        }
    }
}

/// Whether this node takes imports: only when its upstream is export files.
pub fn accepts_imports(node: &NodeState) -> Result<(), ArchiveFailure> {
    if node.config.upstream == UpstreamConfig::Import {
        return Ok(());
    }
    Err(ArchiveFailure::Refused(format!(
        "this node's upstream is {}, not export files: imports are for a node started with --upstream import (or [upstream] kind = \"import\")",
        upstream_text(&node.config.upstream)
    )))
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub header: v1::ArchiveHeader,
    pub verified: Verified,
    /// The node stood at the file's target already: nothing changed.
    pub already_held: bool,
    /// The sync the import ran as; `None` for a dry run or a file already held.
    pub run: Option<SyncRun>,
}

/// An import's outcome as `sitesync-node import` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportSummary {
    pub source_site: String,
    pub kind: &'static str,
    pub catalog_version: u64,
    pub top_site: String,
    pub target: String,
    pub chunks: usize,
    pub already_held: bool,
    pub sync_id: Option<u64>,
    pub new: u64,
    pub changed: u64,
    pub expired: u64,
    pub deleted: u64,
    pub update_server_digest: String,
    pub update_server_sequence: u64,
    pub revisions: u64,
}

impl ImportReport {
    /// What people and scripts are told, with the node's update server as it is now.
    pub fn summary(&self, node: &NodeState) -> ImportSummary {
        let version = self
            .header
            .catalog_version
            .as_ref()
            .and_then(|v| v.decode_catalog_version().ok())
            .unwrap_or_default();
        let counts = self
            .run
            .as_ref()
            .map(|r| r.counts.update_server)
            .unwrap_or_default();
        let state = node.database.update_server().state();
        ImportSummary {
            source_site: self.header.source_site.clone(),
            kind: if self.header.kind == v1::ArchiveKind::Full as i32 {
                "full"
            } else {
                "incremental"
            },
            catalog_version: version.version,
            top_site: version.top_site_code,
            target: anchor_text(self.header.target.as_ref()),
            chunks: self.verified.chunks,
            already_held: self.already_held,
            sync_id: self.run.as_ref().map(|r| r.id),
            new: counts.new,
            changed: counts.changed,
            expired: counts.expired,
            deleted: counts.deleted,
            update_server_digest: state.digest.to_string(),
            update_server_sequence: state.last_sequence,
            revisions: state.revisions,
        }
    }
}

/// Imports the export file at `path` (named `name` in messages) at a node whose upstream
/// is imports: verifies all of it, checks where it applies, and unless `dry_run` runs it
/// as the node's sync and waits for the sync to end. Never writes to the file.
pub async fn import(
    node: &Arc<NodeState>,
    sync: &SyncManager,
    path: &Path,
    name: &str,
    dry_run: bool,
    trace: Option<TraceContext>,
) -> Result<ImportReport, ArchiveFailure> {
    accepts_imports(node)?;
    let Some(versions) = &node.catalog_versions else {
        return Err(ArchiveFailure::Refused(
            "imports verify signatures, which needs mutual TLS".into(),
        ));
    };
    let cas = versions.import_cas();
    let owned = (node.clone(), path.to_owned(), name.to_owned());
    let feed = tokio::task::spawn_blocking(move || {
        let (node, path, name) = owned;
        let versions = node.catalog_versions.as_ref().expect("checked above");
        // Counts in the log for a long verification: every few seconds, and at the end.
        let mut last = std::time::Instant::now();
        let progress = |done: usize, total: usize| {
            if done == total || last.elapsed() >= std::time::Duration::from_secs(5) {
                last = std::time::Instant::now();
                tracing::info!(file = %name, chunks_verified = done, chunks = total, "verifying the export file");
            }
        };
        FileFeed::open(&path, &name, &cas, |der| versions.is_revoked(der), progress)
    })
    .await
    .map_err(|e| ArchiveFailure::Failed(format!("the verification stopped: {e}")))??;
    // The version is checked again by the sync; here it refuses before anything runs.
    versions
        .verify_import(feed.header().catalog_version.as_ref(), node.clock.now())
        .map_err(|e| ArchiveFailure::Precondition(e.to_string()))?;
    let store = node.database.update_server();
    let position = stored_pull_anchor(store)?;
    let start = feed
        .start_for(position)
        .map_err(ArchiveFailure::Precondition)?;
    let report = |already_held, run| ImportReport {
        header: feed.header().clone(),
        verified: feed.verified().clone(),
        already_held,
        run,
    };
    if start == FileStart::Held {
        if store.digest() == feed.digest {
            return Ok(report(true, None));
        }
        return Err(ArchiveFailure::Precondition(format!(
            "this node's update server stands at the file's target but its digest is {}, not the file's {}: import a full file",
            store.digest(),
            feed.digest
        )));
    }
    if dry_run {
        return Ok(report(false, None));
    }
    let header = feed.header().clone();
    let verified = feed.verified().clone();
    let mut watch = sync.watch();
    let id = sync
        .request_import(Arc::new(feed), trace)
        .map_err(|e| ArchiveFailure::Refused(e.to_string()))?;
    let run = loop {
        if let Some(run) = watch.borrow_and_update().recent.iter().find(|r| r.id == id) {
            break run.clone();
        }
        if watch.changed().await.is_err() {
            return Err(ArchiveFailure::Failed(
                "the node stopped during the import; import the file again to complete it".into(),
            ));
        }
    };
    if run.result != Some(SyncResult::Succeeded) {
        return Err(ArchiveFailure::Failed(
            run.failure_reason
                .clone()
                .unwrap_or_else(|| "the import failed".into()),
        ));
    }
    Ok(ImportReport {
        header,
        verified,
        already_held: false,
        run: Some(run),
    })
}

/// The upstream as messages name it.
fn upstream_text(upstream: &UpstreamConfig) -> String {
    match upstream {
        UpstreamConfig::Sample => "the bundled sample catalog".into(),
        UpstreamConfig::Directory(dir) => format!("the catalog directory {}", dir.display()),
        UpstreamConfig::Parent(address) => format!("the parent site at {address}"),
        UpstreamConfig::Import => "export files".into(),
        UpstreamConfig::Wsus(settings) => format!("the upstream server {}", settings.server),
    }
}
