//! `sitesyncctl catalog build-legacy | legacy-status | download | verify`: the legacy scan
//! catalog (S13) — built at the catalog host (`Admin.BuildLegacyCatalog`), held at every
//! site (`Admin.GetLegacyCatalogStatus`), downloaded as a client does
//! (`ClientPolicy.GetLegacyScanCatalog`, `sitesync_legacy::fetch`) and checked offline.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use indicatif::{ProgressBar, ProgressDrawTarget};
use serde::Serialize;
use sitesync_legacy::fetch::{FetchError, Progress};
use sitesync_legacy::verify::{check_index, verify_dir};
use sitesync_proto::v1;
use tonic::Request;

use crate::cli::{ClientTlsArgs, LegacyDownloadArgs, LegacyVerifyArgs};
use crate::client::{Node, unary};
use crate::commands::sync::bar_style;
use crate::output::{self, OutputFormat, hex};
use crate::trust::Trust;
use crate::units::{format_duration, now, rfc3339_opt};

/// How long `build-legacy` waits for the build (it goes on at the node if this passes).
const BUILD_TIMEOUT: Duration = Duration::from_secs(110);

pub async fn build(mut node: Node, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let mut request = Request::new(v1::BuildLegacyCatalogRequest {});
    request.set_timeout(BUILD_TIMEOUT);
    let status = node
        .admin
        .build_legacy_catalog(request)
        .await
        .map_err(|status| node.failed("Admin.BuildLegacyCatalog", status))?
        .into_inner();
    print_status(&status, output)
}

pub async fn status(mut node: Node, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let status = node
        .admin
        .get_legacy_catalog_status(unary(v1::GetLegacyCatalogStatusRequest {}))
        .await
        .map_err(|status| node.failed("Admin.GetLegacyCatalogStatus", status))?
        .into_inner();
    print_status(&status, output)
}

fn print_status(
    status: &v1::LegacyCatalogStatus,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let view = StatusView::new(status);
    match output {
        OutputFormat::Json => output::print_json(&view)?,
        OutputFormat::Table | OutputFormat::Dot => {
            let mut rows = vec![("host", view.host.to_string())];
            match &view.index {
                Some(index) => rows.extend(index.rows()),
                None => rows.push(("build", "none held yet".to_owned())),
            }
            rows.push(("total bytes", view.total_bytes.to_string()));
            if let Some(next) = &view.next_build_at {
                rows.push(("next build", next.clone()));
            }
            if let Some(refresh) = &view.refresh {
                rows.push(("refresh", refresh.clone()));
            }
            rows.push((
                "last build/fetch wrote",
                format!(
                    "{} shards, {} bytes ({} shards unchanged)",
                    view.shards_written, view.bytes_written, view.shards_reused
                ),
            ));
            if let Some(error) = &view.last_error {
                rows.push(("last error", error.clone()));
            }
            output::print_table(&output::name_value_table(rows))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn download(
    mut node: Node,
    tls: &ClientTlsArgs,
    args: &LegacyDownloadArgs,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let trust = Trust::load(tls, &args.trust, "catalog download")?;
    let now = now();
    let bar = ProgressBar::hidden()
        .with_style(bar_style(true))
        .with_prefix(format!("downloading into {}", args.out.display()))
        .with_message("bytes");
    bar.set_draw_target(ProgressDrawTarget::stderr());
    let check = |signed: &v1::SignedLegacyCatalogIndex, held: Option<u64>| {
        check_index(signed, &trust.cas, |der| trust.is_revoked(der), now, held)
    };
    let result = sitesync_legacy::fetch::fetch(
        &mut node.client_policy,
        &args.out,
        sitesync_legacy::fetch::HeldShards::Hashed,
        check,
        |p| match p {
            Progress::Plan { bytes, .. } => bar.set_length(bytes),
            Progress::Received { bytes } => bar.inc(bytes),
        },
    )
    .await;
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(FetchError::Call(status)) => {
            return Err(node.failed("ClientPolicy.GetLegacyScanCatalog", status)).with_context(
                || {
                    format!(
                        "{} keeps the catalog it held; run the download again to resume",
                        args.out.display()
                    )
                },
            );
        }
        Err(e) => {
            return Err(anyhow!(e)).with_context(|| {
                format!(
                    "the download from {} is refused; {} keeps the catalog it held",
                    node.address,
                    args.out.display()
                )
            });
        }
    };
    let view = DownloadView {
        dir: args.out.display().to_string(),
        index: IndexView::new(&report.index, &report.index_sha256),
        previous_build: report.previous_build,
        shards_fetched: report.shards_fetched,
        bytes_fetched: report.bytes_fetched,
        shards_resumed: report.shards_resumed,
        bytes_resumed: report.bytes_resumed,
        shards_held: report.shards_held,
        total_bytes: report.total_bytes,
    };
    match output {
        OutputFormat::Json => output::print_json(&view)?,
        OutputFormat::Table | OutputFormat::Dot => {
            let mut rows = vec![("directory", view.dir.clone())];
            rows.extend(view.index.rows());
            rows.push((
                "previous build",
                view.previous_build
                    .map_or_else(|| "none".to_owned(), |b| b.to_string()),
            ));
            rows.push((
                "fetched",
                format!(
                    "{} shards, {} bytes ({} resumed from {} bytes held)",
                    view.shards_fetched,
                    view.bytes_fetched,
                    view.shards_resumed,
                    view.bytes_resumed
                ),
            ));
            rows.push(("already held", format!("{} shards", view.shards_held)));
            rows.push(("total bytes", view.total_bytes.to_string()));
            output::print_table(&output::name_value_table(rows))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn verify(
    tls: &ClientTlsArgs,
    args: &LegacyVerifyArgs,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let trust = Trust::load(tls, &args.trust, "catalog verify")?;
    let held = sitesync_legacy::fetch::held_build(&args.dir);
    let verified = verify_dir(
        &args.dir,
        &trust.cas,
        |der| trust.is_revoked(der),
        now(),
        held,
    )
    .map_err(|e| anyhow!(e))
    .with_context(|| format!("{} does not verify", args.dir.display()))?;
    let index_file = std::fs::read(args.dir.join(sitesync_legacy::INDEX_FILE))
        .with_context(|| format!("cannot read {}", args.dir.display()))?;
    let sha256 = {
        use sha2::Digest as _;
        sha2::Sha256::digest(&index_file).to_vec()
    };
    let view = VerifyView {
        dir: args.dir.display().to_string(),
        verified: true,
        index: IndexView::new(&verified.index, &sha256),
    };
    match output {
        OutputFormat::Json => output::print_json(&view)?,
        OutputFormat::Table | OutputFormat::Dot => {
            let mut rows = vec![
                ("directory", view.dir.clone()),
                (
                    "verified",
                    "yes: signature, expiry, build and every shard".to_owned(),
                ),
            ];
            rows.extend(view.index.rows());
            output::print_table(&output::name_value_table(rows))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What an index says, as printed.
#[derive(Debug, Serialize)]
pub struct IndexView {
    pub build: u64,
    pub top_site: String,
    pub catalog_version: u64,
    pub built_at: Option<String>,
    pub expires_at: Option<String>,
    pub revisions: u64,
    pub updates: u64,
    pub shards: usize,
    /// SHA-256 of the signed index file: equal wherever the same build is held.
    pub index_sha256: String,
}

impl IndexView {
    fn new(index: &v1::LegacyCatalogIndex, sha256: &[u8]) -> Self {
        Self {
            build: index.build,
            top_site: index.top_site_code.clone(),
            catalog_version: index.catalog_version,
            built_at: rfc3339_opt(index.built_at.as_ref()),
            expires_at: rfc3339_opt(index.expires_at.as_ref()),
            revisions: index.revision_count,
            updates: index.update_count,
            shards: index.shards.len(),
            index_sha256: hex(sha256),
        }
    }

    fn rows(&self) -> Vec<(&'static str, String)> {
        vec![
            ("build", self.build.to_string()),
            ("signed by", self.top_site.clone()),
            ("catalog version", self.catalog_version.to_string()),
            ("built", self.built_at.clone().unwrap_or_default()),
            ("expires", self.expires_at.clone().unwrap_or_default()),
            (
                "holds",
                format!(
                    "{} revisions of {} updates in {} shards",
                    self.revisions, self.updates, self.shards
                ),
            ),
            ("index sha256", self.index_sha256.clone()),
        ]
    }
}

/// What `catalog build-legacy` and `catalog legacy-status --output json` print.
#[derive(Debug, Serialize)]
pub struct StatusView {
    pub host: bool,
    /// Absent when the node holds no catalog yet.
    pub index: Option<IndexView>,
    pub total_bytes: u64,
    pub next_build_at: Option<String>,
    pub refresh: Option<String>,
    pub refresh_seconds: Option<u64>,
    pub shards_written: u32,
    pub bytes_written: u64,
    pub shards_reused: u32,
    pub last_error: Option<String>,
}

impl StatusView {
    fn new(status: &v1::LegacyCatalogStatus) -> Self {
        let refresh = status
            .refresh
            .as_ref()
            .and_then(crate::units::duration_from_wire);
        Self {
            host: status.host,
            index: status
                .index
                .as_ref()
                .map(|index| IndexView::new(index, &status.index_sha256)),
            total_bytes: status.total_bytes,
            next_build_at: rfc3339_opt(status.next_build_at.as_ref()),
            refresh: refresh.map(format_duration),
            refresh_seconds: refresh.map(|d| d.as_secs()),
            shards_written: status.shards_written,
            bytes_written: status.bytes_written,
            shards_reused: status.shards_reused,
            last_error: (!status.last_error.is_empty()).then(|| status.last_error.clone()),
        }
    }
}

/// What `catalog download --output json` prints.
#[derive(Debug, Serialize)]
pub struct DownloadView {
    pub dir: String,
    pub index: IndexView,
    pub previous_build: Option<u64>,
    pub shards_fetched: usize,
    pub bytes_fetched: u64,
    pub shards_resumed: usize,
    pub bytes_resumed: u64,
    pub shards_held: usize,
    pub total_bytes: u64,
}

/// What `catalog verify --output json` prints.
#[derive(Debug, Serialize)]
pub struct VerifyView {
    pub dir: String,
    pub verified: bool,
    pub index: IndexView,
}
